/* What whet generate streams (src/tok/text_stream.c): UTF-8 characters split over
 * pieces are written whole, invalid bytes become U+FFFD exactly as a
 * from_utf8_lossy decode of the whole text would have them, whatever the
 * piece boundaries; stop strings are found across pieces and text that may
 * start one is held back. And how it tokenizes prompts: the BOS a tokenizer's
 * post-processor adds, and nothing else. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "tok/text_stream.h"
#include "tok/tokenizer.h"

#include <stdlib.h>
#include <string.h>

/* Feeds `in` cut at every `step` bytes; returns the output (static buffer). */
static const char *stream(const char *in, size_t len, size_t step, size_t *out_len)
{
    static char out[4096];
    whet_utf8_stream s = {{0}, 0};
    size_t o = 0;
    for (size_t i = 0; i < len; i += step) {
        size_t n = len - i < step ? len - i : step;
        o += whet_utf8_feed(&s, in + i, n, out + o);
    }
    o += whet_utf8_flush(&s, out + o);
    out[o] = 0;
    *out_len = o;
    return out;
}

static void check_all_cuts(const char *in, size_t len, const char *want)
{
    for (size_t step = 1; step <= len + 1; step++) {
        size_t n;
        const char *got = stream(in, len, step, &n);
        if (n != strlen(want) || memcmp(got, want, n) != 0)
            fail_msg("input of %zu bytes cut every %zu: got \"%s\", want \"%s\"", len, step, got, want);
    }
}

#define FFFD "\xEF\xBF\xBD"

static void utf8_pieces(void **state)
{
    (void)state;
    /* valid text passes through whatever the cuts */
    const char *ok = "a\xC3\xA9z \xE2\x82\xAC \xF0\x9F\x98\x80!";
    check_all_cuts(ok, strlen(ok), ok);
    /* maximal invalid subparts, one U+FFFD each (the WHATWG / Rust rule) */
    check_all_cuts("\x80", 1, FFFD);
    check_all_cuts("a\xC3", 2, "a" FFFD);                  /* cut short at the end */
    check_all_cuts("\xE2\x82z", 3, FFFD "z");              /* one U+FFFD for E2 82 */
    check_all_cuts("\xF0\x9F\x98", 3, FFFD);
    check_all_cuts("\xC0\xAF", 2, FFFD FFFD);              /* overlong lead: both bytes */
    check_all_cuts("\xED\xA0\x80", 3, FFFD FFFD FFFD);     /* surrogate */
    check_all_cuts("\xF4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD); /* past U+10FFFF */
    check_all_cuts("\xE0\x80", 2, FFFD FFFD);
    check_all_cuts("\xFF\xC3\xA9\xFE", 4, FFFD "\xC3\xA9" FFFD);
    check_all_cuts("\xE2\x82\xE2\x82\xAC", 5, FFFD "\xE2\x82\xAC");
    /* nothing is written while a character is unfinished */
    whet_utf8_stream s = {{0}, 0};
    char out[64];
    assert_int_equal(whet_utf8_feed(&s, "\xF0\x9F", 2, out), 0);
    assert_int_equal(whet_utf8_feed(&s, "\x98", 1, out), 0);
    assert_int_equal(whet_utf8_feed(&s, "\x80x", 2, out), 5);
    assert_memory_equal(out, "\xF0\x9F\x98\x80x", 5);
    assert_int_equal(whet_utf8_flush(&s, out), 0);
}

static void stop_strings(void **state)
{
    (void)state;
    char *stops[] = {"<end>", "\n\n"};
    long at;
    /* nothing that could start a stop string: everything is safe */
    assert_int_equal(whet_stop_scan("hello", 5, stops, 2, &at), 5);
    assert_int_equal(at, -1);
    /* a possible beginning is held back */
    assert_int_equal(whet_stop_scan("hello <en", 9, stops, 2, &at), 6);
    assert_int_equal(at, -1);
    assert_int_equal(whet_stop_scan("line\n", 5, stops, 2, &at), 4);
    /* found: everything before it is printed, the leftmost stop wins */
    assert_int_equal(whet_stop_scan("a\n\nb<end>", 9, stops, 2, &at), 1);
    assert_int_equal(at, 1);
    assert_int_equal(whet_stop_scan("ab<end>\n\n", 9, stops, 2, &at), 2);
    assert_int_equal(at, 2);
    /* no stop strings: all safe */
    assert_int_equal(whet_stop_scan("x<", 2, NULL, 0, &at), 2);
    /* held text that turns out not to be a stop is released on the next scan */
    assert_int_equal(whet_stop_scan("<enx", 4, stops, 2, &at), 4);
    /* a stop longer than the held text, matching all of it */
    assert_int_equal(whet_stop_scan("<e", 2, stops, 2, &at), 0);
}

/* whet_tokenizer_encode_prompt: the text without special tokens, after the BOS when
 * the tokenizer adds one and it is wanted (compared with whet tokenize's own
 * encoding with and without special tokens). */
static void prompt_bos(void **state)
{
    (void)state;
    const struct {
        const char *dir;
        int adds_bos;
    } cases[] = {{"tests/data/tokenizers/spm_legacy", 1},
                 {"tests/data/tokenizers/bytelevel_llama3", 1},
                 {"tests/data/tokenizers/qwen3", 0},
                 {"tests/data/tokenizers/gpt2", 0}};
    const char *text = "Hello world";
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        whet_err e = {{0}};
        whet_tokenizer *t = whet_tokenizer_load(cases[i].dir, &e);
        if (!t)
            fail_msg("%s", e.msg);
        int32_t *plain, *special, *ids;
        size_t n_plain, n_special, n;
        assert_int_equal(whet_tokenizer_encode(t, text, strlen(text), 0, &plain, &n_plain, &e), 0);
        assert_int_equal(whet_tokenizer_encode(t, text, strlen(text), 1, &special, &n_special, &e), 0);
        assert_int_equal(n_special, n_plain + (size_t)cases[i].adds_bos);
        for (int bos = 0; bos <= 1; bos++) {
            assert_int_equal(whet_tokenizer_encode_prompt(t, text, strlen(text), bos, &ids, &n), 0);
            if (bos && cases[i].adds_bos) {
                assert_int_equal(n, n_special);
                assert_memory_equal(ids, special, n * sizeof *ids);
                assert_int_equal(ids[0], whet_tokenizer_bos_id(t));
            } else {
                assert_int_equal(n, n_plain);
                assert_memory_equal(ids, plain, n * sizeof *ids);
            }
            free(ids);
        }
        free(plain);
        free(special);
        whet_tokenizer_free(t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(utf8_pieces),
        cmocka_unit_test(stop_strings),
        cmocka_unit_test(prompt_bos),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
