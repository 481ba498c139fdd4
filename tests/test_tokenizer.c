/* Tokenizers: id-for-id agreement with the reference (goldens made by
 * tests/ref/make_tokenizer_goldens.mjs from a port of HF tokenizers) on real
 * vocabularies (GPT-2, Qwen3) and hand-made ones (SentencePiece-style BPE with
 * byte fallback, legacy and Metaspace; byte-level BPE with Llama 3's regex and
 * ignore_merges); decoding; invalid UTF-8; special tokens; GGUF loading;
 * errors with file and position. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/gguf.h"
#include "io/json.h"
#include "tok/tokenizer.h"
#include "util/file.h"

#define DATA_DIR "tests/data/tokenizers"

static whet_tokenizer *load_named(const char *name)
{
    char path[512];
    whet_err e;
    snprintf(path, sizeof path, DATA_DIR "/%s", name);
    whet_tokenizer *t = whet_tokenizer_load(path, &e);
    if (!t)
        print_error("%s\n", e.msg);
    assert_non_null(t);
    return t;
}

static void encode_or_fail(const whet_tokenizer *t, const char *text, size_t len, int add_special, int32_t **ids,
                           size_t *n)
{
    whet_err e;
    int rc = whet_tokenizer_encode(t, text, len, add_special, ids, n, &e);
    if (rc != 0)
        print_error("%s\n", e.msg);
    assert_int_equal(rc, 0);
}

static char *decode_or_fail(const whet_tokenizer *t, const int32_t *ids, size_t n, int skip_special, size_t *len)
{
    whet_err e;
    char *text;
    int rc = whet_tokenizer_decode(t, ids, n, skip_special, &text, len, &e);
    if (rc != 0)
        print_error("%s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(strlen(text), *len); /* no NUL in these texts */
    return text;
}

/* Equal id arrays (either may be NULL when empty). */
static int ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

static void print_ids(const char *label, const int32_t *ids, size_t n)
{
    print_message("%s (%zu):", label, n);
    for (size_t i = 0; i < n; i++)
        print_message(" %d", (int)ids[i]);
    print_message("\n");
}

/* Compares ids with a JSON array of expected ids; prints both on a mismatch. */
static int ids_match(const int32_t *ids, size_t n, const whet_json *expected)
{
    int same = whet_json_count(expected) == n;
    for (size_t i = 0; same && i < n; i++)
        same = whet_json_at(expected, i)->u.number.integer == ids[i];
    if (!same) {
        print_ids("got     ", ids, n);
        print_message("expected (%zu):", whet_json_count(expected));
        for (size_t i = 0; i < whet_json_count(expected); i++)
            print_message(" %lld", (long long)whet_json_at(expected, i)->u.number.integer);
        print_message("\n");
    }
    return same;
}

/* Every golden case: ids without and with special tokens, and the decoded
 * text (with and without special tokens). Returns the number of cases. */
static size_t check_goldens(const char *golden_path, const char *tokenizer_path)
{
    whet_err e;
    whet_tokenizer *t = whet_tokenizer_load(tokenizer_path, &e);
    if (!t)
        print_error("%s\n", e.msg);
    assert_non_null(t);
    whet_json_doc *doc = NULL;
    if (whet_json_parse_file(&doc, golden_path, NULL, &e) != 0)
        print_error("%s\n", e.msg);
    assert_non_null(doc);
    const whet_json *cases = whet_json_get(whet_json_root(doc), "cases");
    assert_non_null(cases);
    size_t failures = 0;
    for (size_t i = 0; i < whet_json_count(cases); i++) {
        const whet_json *c = whet_json_at(cases, i);
        const whet_json *text = whet_json_get(c, "text");
        int32_t *ids;
        size_t n;
        for (int add_special = 0; add_special <= 1; add_special++) {
            encode_or_fail(t, text->u.string.chars, text->u.string.len, add_special, &ids, &n);
            if (!ids_match(ids, n, whet_json_get(c, add_special ? "ids_with_special" : "ids"))) {
                print_message("%s: case %zu (add_special %d) differs: \"%s\"\n", golden_path, i, add_special,
                              text->u.string.chars);
                failures++;
            }
            if (!add_special) {
                static const char *const keys[2] = {"decoded", "decoded_skip_special"};
                for (int skip = 0; skip <= 1; skip++) {
                    size_t len;
                    char *decoded = decode_or_fail(t, ids, n, skip, &len);
                    const whet_json *want = whet_json_get(c, keys[skip]);
                    if (len != want->u.string.len || memcmp(decoded, want->u.string.chars, len) != 0) {
                        print_message("%s: case %zu decodes (skip_special %d) to \"%s\", expected \"%s\"\n",
                                      golden_path, i, skip, decoded, want->u.string.chars);
                        failures++;
                    }
                    free(decoded);
                }
            }
            free(ids);
        }
    }
    size_t count = whet_json_count(cases);
    whet_json_free(doc);
    whet_tokenizer_free(t);
    assert_int_equal(failures, 0);
    return count;
}

static void golden(const char *name)
{
    char golden_path[512], tokenizer_path[512];
    snprintf(golden_path, sizeof golden_path, DATA_DIR "/%s.golden.json", name);
    snprintf(tokenizer_path, sizeof tokenizer_path, DATA_DIR "/%s", name);
    size_t n = check_goldens(golden_path, tokenizer_path);
    assert_true(n >= 30);
}

static void golden_gpt2(void **state)
{
    (void)state;
    golden("gpt2");
}

static void golden_qwen3(void **state)
{
    (void)state;
    golden("qwen3");
}

static void golden_spm_legacy(void **state)
{
    (void)state;
    golden("spm_legacy");
}

static void golden_spm_metaspace(void **state)
{
    (void)state;
    golden("spm_metaspace");
}

static void golden_bytelevel_llama3(void **state)
{
    (void)state;
    golden("bytelevel_llama3");
}

/* Vocabularies whose licences keep them out of the repository (Llama 2,
 * Llama 3): checked when WHET_TOKENIZER_EXTRA names a directory the golden
 * script filled (see tests/data/tokenizers/README.md). */
static void golden_extra(void **state)
{
    (void)state;
    const char *dir = getenv("WHET_TOKENIZER_EXTRA");
    if (!dir || !*dir)
        skip();
    static const char *const names[] = {"llama2", "llama3"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char golden_path[512], tokenizer_path[512];
        snprintf(golden_path, sizeof golden_path, "%s/%s.golden.json", dir, names[i]);
        snprintf(tokenizer_path, sizeof tokenizer_path, "%s/%s", dir, names[i]);
        if (access(golden_path, R_OK) != 0)
            continue;
        print_message("%s: %zu cases agree\n", names[i], check_goldens(golden_path, tokenizer_path));
    }
}

/* ---- round trips on random text ---- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t next_random(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

static size_t put_utf8(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Random valid UTF-8 mixing ASCII words, whitespace runs, digits, accents,
 * CJK, emoji and combining marks; never '<' (so no special token appears). */
static size_t random_text(char *buf, size_t max_chars)
{
    static const uint32_t ranges[][2] = {{'a', 'z'}, {'A', 'Z'}, {'0', '9'}, {' ', ' '}, {'\t', '\n'},
                                         {'!', '/'}, {0xC0, 0x17F}, {0x300, 0x36F}, {0x4E00, 0x4FFF},
                                         {0x1F300, 0x1F64F}, {0x0400, 0x04FF}, {0xAC00, 0xAD00}};
    size_t len = 0, n = next_random() % max_chars;
    for (size_t i = 0; i < n; i++) {
        const uint32_t *r = ranges[next_random() % (sizeof ranges / sizeof ranges[0])];
        len += put_utf8(r[0] + next_random() % (r[1] - r[0] + 1), buf + len);
    }
    return len;
}

static void round_trip(const char *name, int rounds)
{
    whet_tokenizer *t = load_named(name);
    char buf[4 * 200];
    for (int r = 0; r < rounds; r++) {
        size_t len = random_text(buf, 200);
        int32_t *ids;
        size_t n, out_len;
        encode_or_fail(t, buf, len, 0, &ids, &n);
        char *out = decode_or_fail(t, ids, n, 0, &out_len);
        if (out_len != len || memcmp(out, buf, len) != 0)
            print_message("%s: round trip changed \"%.*s\" into \"%s\"\n", name, (int)len, buf, out);
        assert_int_equal(out_len, len);
        assert_memory_equal(out, buf, len);
        free(out);
        free(ids);
    }
    whet_tokenizer_free(t);
}

static void round_trip_byte_level(void **state)
{
    (void)state;
    round_trip("gpt2", 300);
    round_trip("bytelevel_llama3", 300);
}

static void round_trip_spm_legacy(void **state)
{
    (void)state;
    /* Prepend("▁") and Strip(" ", 1) cancel out: lossless for any text
     * without special tokens */
    round_trip("spm_legacy", 300);
}

/* ---- invalid UTF-8 ---- */

static void assert_same_ids(const whet_tokenizer *t, const char *a, size_t a_len, const char *b, size_t b_len)
{
    int32_t *x, *y;
    size_t nx, ny;
    encode_or_fail(t, a, a_len, 0, &x, &nx);
    encode_or_fail(t, b, b_len, 0, &y, &ny);
    if (!ids_equal(x, nx, y, ny)) {
        print_ids("invalid ", x, nx);
        print_ids("repaired", y, ny);
    }
    assert_true(ids_equal(x, nx, y, ny));
    free(x);
    free(y);
}

#define FFFD "\xEF\xBF\xBD"

static void invalid_utf8_becomes_replacement_characters(void **state)
{
    (void)state;
    static const char *const names[] = {"gpt2", "qwen3", "spm_legacy"};
    for (size_t k = 0; k < 3; k++) {
        whet_tokenizer *t = load_named(names[k]);
        /* each maximal invalid subsequence is one U+FFFD (from_utf8_lossy) */
        static const struct {
            const char *bad, *good;
        } cases[] = {
            {"a\xFF" "b", "a" FFFD "b"},
            {"caf\xC3", "caf" FFFD},                               /* truncated 2-byte */
            {"x\xE2\x82y", "x" FFFD "y"},                          /* truncated 3-byte: one U+FFFD */
            {"\xF0\x9F\x98 smile", FFFD " smile"},                 /* truncated emoji */
            {"\xED\xA0\x80", FFFD FFFD FFFD},                      /* a surrogate: three */
            {"\xC0\xAF overlong", FFFD FFFD " overlong"},          /* overlong '/' */
            {"\xF4\x90\x80\x80 big", FFFD FFFD FFFD FFFD " big"},  /* above U+10FFFF */
            {"\x80\x80 lone", FFFD FFFD " lone"},                  /* lone continuations */
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            assert_same_ids(t, cases[i].bad, strlen(cases[i].bad), cases[i].good, strlen(cases[i].good));
        whet_tokenizer_free(t);
    }
}

static void nul_bytes_are_text(void **state)
{
    (void)state;
    whet_tokenizer *t = load_named("gpt2");
    int32_t *ids;
    size_t n, len;
    encode_or_fail(t, "a\0b", 3, 0, &ids, &n);
    assert_true(n >= 2);
    char *text;
    whet_err e;
    assert_int_equal(whet_tokenizer_decode(t, ids, n, 0, &text, &len, &e), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(text, "a\0b", 3);
    free(text);
    free(ids);
    whet_tokenizer_free(t);
}

static void decoding_a_split_character(void **state)
{
    (void)state;
    whet_tokenizer *t = load_named("gpt2");
    /* "你" is E4 BD A0: GPT-2 has no token for it, so it spans byte tokens */
    int32_t *ids;
    size_t n, len;
    encode_or_fail(t, "\xE4\xBD\xA0", 3, 0, &ids, &n);
    assert_true(n >= 2);
    char *text = decode_or_fail(t, ids, 1, 0, &len); /* first part only */
    assert_string_equal(text, FFFD);
    free(text);
    /* token_bytes gives the raw bytes, which concatenate back */
    char joined[16];
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t blen;
        const char *b = whet_tokenizer_token_bytes(t, ids[i], &blen);
        assert_non_null(b);
        assert_true(total + blen <= sizeof joined);
        memcpy(joined + total, b, blen);
        total += blen;
    }
    assert_int_equal(total, 3);
    assert_memory_equal(joined, "\xE4\xBD\xA0", 3);
    free(ids);

    whet_err e;
    char *out;
    int32_t bad = (int32_t)whet_tokenizer_vocab_size(t);
    assert_int_equal(whet_tokenizer_decode(t, &bad, 1, 0, &out, &len, &e), -1);
    assert_non_null(strstr(e.msg, "tokenizer.json"));
    assert_non_null(strstr(e.msg, "50257"));
    whet_tokenizer_free(t);
}

/* ---- special tokens, lookups, add_special ---- */

static void special_tokens_and_lookups(void **state)
{
    (void)state;
    whet_tokenizer *q = load_named("qwen3");
    assert_int_equal(whet_tokenizer_vocab_size(q), 151669);
    int32_t im_start = whet_tokenizer_token_to_id(q, "<|im_start|>", 12);
    int32_t im_end = whet_tokenizer_token_to_id(q, "<|im_end|>", 10);
    assert_int_equal(im_start, 151644);
    assert_int_equal(im_end, 151645);
    assert_true(whet_tokenizer_is_special(q, im_end));
    assert_false(whet_tokenizer_is_special(q, 9707));
    assert_int_equal(whet_tokenizer_bos_id(q), -1); /* Qwen: bos_token null */
    assert_int_equal(whet_tokenizer_eos_id(q), im_end);
    size_t len;
    const char *s = whet_tokenizer_id_to_token(q, im_start, &len);
    assert_int_equal(len, 12);
    assert_memory_equal(s, "<|im_start|>", 12);
    assert_null(whet_tokenizer_id_to_token(q, -1, &len));
    assert_null(whet_tokenizer_id_to_token(q, 151669, &len));
    assert_int_equal(whet_tokenizer_token_to_id(q, "no such token", 13), -1);

    /* a special token written in the text is one id even with add_special 0 */
    int32_t *ids;
    size_t n;
    const char *chat = "<|im_start|>user\nhi<|im_end|>";
    encode_or_fail(q, chat, strlen(chat), 0, &ids, &n);
    assert_true(n >= 4);
    assert_int_equal(ids[0], im_start);
    assert_int_equal(ids[n - 1], im_end);
    char *text = decode_or_fail(q, ids, n, 1, &len);
    assert_string_equal(text, "user\nhi");
    free(text);
    text = decode_or_fail(q, ids, n, 0, &len);
    assert_string_equal(text, chat);
    free(text);
    free(ids);
    whet_tokenizer_free(q);

    whet_tokenizer *g = load_named("gpt2");
    assert_int_equal(whet_tokenizer_bos_id(g), 50256);
    assert_int_equal(whet_tokenizer_eos_id(g), 50256);
    assert_int_equal(whet_tokenizer_token_to_id(g, "\xC4\xA0the", 5), 262); /* "Ġthe" */
    whet_tokenizer_free(g);
}

static void add_special_adds_bos(void **state)
{
    (void)state;
    whet_tokenizer *t = load_named("spm_legacy");
    assert_int_equal(whet_tokenizer_bos_id(t), 1);
    assert_int_equal(whet_tokenizer_eos_id(t), 2);
    int32_t *with, *without;
    size_t n_with, n_without;
    encode_or_fail(t, "Hello world", 11, 1, &with, &n_with);
    encode_or_fail(t, "Hello world", 11, 0, &without, &n_without);
    assert_int_equal(n_with, n_without + 1);
    assert_int_equal(with[0], 1);
    assert_memory_equal(with + 1, without, n_without * sizeof *without);
    free(with);
    free(without);
    /* the empty text still gets its BOS */
    encode_or_fail(t, "", 0, 1, &with, &n_with);
    assert_int_equal(n_with, 1);
    assert_int_equal(with[0], 1);
    free(with);
    whet_tokenizer_free(t);
}

/* ---- files in a temporary directory ---- */

static char tmp_dir[64];

static int make_tmp_dir(void **state)
{
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/whet_tok_XXXXXX");
    return mkdtemp(tmp_dir) ? 0 : -1;
}

static int remove_tmp_dir(void **state)
{
    (void)state;
    char path[128];
    static const char *const files[] = {"tokenizer.json", "tokenizer_config.json"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", tmp_dir, files[i]);
        unlink(path);
    }
    return rmdir(tmp_dir);
}

static void write_tmp(const char *file, const char *text)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", tmp_dir, file);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

static void remove_tmp(const char *file)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", tmp_dir, file);
    unlink(path);
}

/* Loads tmp_dir expecting failure; checks the message holds each fragment. */
static void expect_load_error(const char *json, const char *const *fragments)
{
    write_tmp("tokenizer.json", json);
    whet_err e;
    whet_tokenizer *t = whet_tokenizer_load(tmp_dir, &e);
    if (t)
        print_error("loaded what should fail: %s\n", json);
    assert_null(t);
    for (const char *const *f = fragments; *f; f++) {
        if (!strstr(e.msg, *f))
            print_error("message \"%s\" lacks \"%s\"\n", e.msg, *f);
        assert_non_null(strstr(e.msg, *f));
    }
}

#define TINY_MODEL                                                                                                \
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\" \":3},\"merges\":[\"a b\"]}"

static void malformed_files_name_file_and_position(void **state)
{
    (void)state;
    expect_load_error("{\"model\": {\"type\": \"BPE\",}", (const char *const[]){"tokenizer.json: line 1, column", NULL});
    expect_load_error("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}",
                      (const char *const[]){"tokenizer.json: line 1, column", "BPE", "WordPiece", NULL});
    expect_load_error("{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}",
                      (const char *const[]){"tokenizer.json", "BPE", "Unigram", "not supported", NULL});
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\n\"merges\":[\"a c\"]}}",
                      (const char *const[]){"tokenizer.json: line 2, column 11", "in the vocab", "\"a c\"", NULL});
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"abc\"]}}",
                      (const char *const[]){"tokenizer.json: line 1", "exactly one space", NULL});
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1}}}",
                      (const char *const[]){"tokenizer.json: line 1", "integer", NULL});
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0}}}",
                      (const char *const[]){"tokenizer.json: line 1", "an id no other token has", NULL});
    expect_load_error("{\"model\":{\"type\":\"BPE\"}}", (const char *const[]){"tokenizer.json", "\"vocab\"", NULL});
    expect_load_error("{" TINY_MODEL ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(a\"},"
                      "\"behavior\":\"Isolated\",\"invert\":false}}",
                      (const char *const[]){"tokenizer.json: line 1", "PCRE2", NULL});
    expect_load_error("{" TINY_MODEL ",\"pre_tokenizer\":{\"type\":\"Whitespace\"}}",
                      (const char *const[]){"tokenizer.json: line 1", "ByteLevel, Split, Metaspace", "Whitespace", NULL});
    expect_load_error("{" TINY_MODEL ",\"normalizer\":{\"type\":\"NFKC\"}}",
                      (const char *const[]){"tokenizer.json: line 1", "NFC, Prepend", NULL});
    expect_load_error("{" TINY_MODEL ",\"model\":1}", (const char *const[]){"tokenizer.json: line 1, column 77", "unique keys", NULL});
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"dropout\":0.1,\"vocab\":{}}}",
                      (const char *const[]){"tokenizer.json: line 1", "dropout", NULL});
    expect_load_error("{\"added_tokens\":[{\"id\":5}]," TINY_MODEL "}",
                      (const char *const[]){"tokenizer.json: line 1", "\"content\"", NULL});
    expect_load_error("[1, 2]", (const char *const[]){"tokenizer.json: line 1, column 1", NULL});
    remove_tmp("tokenizer.json");

    whet_err e;
    assert_null(whet_tokenizer_load("/nonexistent/dir/tokenizer.json", &e));
    assert_non_null(strstr(e.msg, "/nonexistent/dir/tokenizer.json"));
}

static void minimal_tokenizer_and_llama_config(void **state)
{
    (void)state;
    /* no pre-tokenizer, no decoder: HF joins decoded tokens with spaces */
    write_tmp("tokenizer.json", "{\"added_tokens\":[{\"id\":4,\"content\":\"<s>\",\"special\":true},"
                                "{\"id\":5,\"content\":\"</s>\",\"special\":true}]," TINY_MODEL "}");
    whet_err e;
    whet_tokenizer *t = whet_tokenizer_load(tmp_dir, &e);
    if (!t)
        print_error("%s\n", e.msg);
    assert_non_null(t);
    int32_t *ids;
    size_t n, len;
    encode_or_fail(t, "abab a</s>", 10, 1, &ids, &n);
    static const int32_t expect[] = {2, 2, 3, 0, 5};
    assert_int_equal(n, 5);
    assert_memory_equal(ids, expect, sizeof expect);
    char *text = decode_or_fail(t, ids, n, 0, &len);
    assert_string_equal(text, "ab ab   a </s>");
    free(text);
    free(ids);
    /* characters outside the vocab without unk or byte fallback are dropped */
    encode_or_fail(t, "xa", 2, 0, &ids, &n);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 0);
    free(ids);
    whet_tokenizer_free(t);

    /* LlamaTokenizer's config adds BOS and EOS around the text */
    write_tmp("tokenizer_config.json", "{\"tokenizer_class\":\"LlamaTokenizer\",\"bos_token\":\"<s>\","
                                       "\"eos_token\":{\"content\":\"</s>\"},\"add_eos_token\":true}");
    t = whet_tokenizer_load(tmp_dir, &e);
    assert_non_null(t);
    assert_int_equal(whet_tokenizer_bos_id(t), 4);
    assert_int_equal(whet_tokenizer_eos_id(t), 5);
    encode_or_fail(t, "ab", 2, 1, &ids, &n);
    static const int32_t expect_bos_eos[] = {4, 2, 5};
    assert_int_equal(n, 3);
    assert_memory_equal(ids, expect_bos_eos, sizeof expect_bos_eos);
    free(ids);
    whet_tokenizer_free(t);

    write_tmp("tokenizer_config.json", "{\"bos_token\":\"<nope>\"}");
    assert_null(whet_tokenizer_load(tmp_dir, &e));
    assert_non_null(strstr(e.msg, "tokenizer_config.json: line 1, column 14"));
    remove_tmp("tokenizer_config.json");

    /* lstrip / rstrip absorb whitespace; single_word needs word boundaries */
    write_tmp("tokenizer.json",
              "{\"added_tokens\":[{\"id\":4,\"content\":\"<m>\",\"lstrip\":true,\"rstrip\":true,\"special\":true},"
              "{\"id\":5,\"content\":\"ab\",\"single_word\":true,\"special\":false,\"normalized\":false}]," TINY_MODEL
              "}");
    t = whet_tokenizer_load(tmp_dir, &e);
    assert_non_null(t);
    encode_or_fail(t, "a  <m>  b ab aab", 16, 0, &ids, &n);
    static const int32_t expect_strip[] = {0, 4, 1, 3, 5, 3, 0, 2};
    if (n != 8)
        print_ids("strip", ids, n);
    assert_int_equal(n, 8);
    assert_memory_equal(ids, expect_strip, sizeof expect_strip);
    free(ids);
    /* a letter outside ASCII is a word character, a dash is not (é and —
     * are outside the vocab and dropped) */
    encode_or_fail(t, "\xC3\xA9" "ab \xE2\x80\x94" "ab", 10, 0, &ids, &n);
    static const int32_t expect_word[] = {2, 3, 5};
    if (n != 3)
        print_ids("single_word", ids, n);
    assert_int_equal(n, 3);
    assert_memory_equal(ids, expect_word, sizeof expect_word);
    free(ids);
    whet_tokenizer_free(t);
    remove_tmp("tokenizer.json");
}

/* Split behaviours (HF normalizer.rs's documented example) and the Metaspace
 * decoder: with ignore_merges, every piece that is a whole vocab entry comes
 * out as one id, so the ids show the pieces. */
static void split_behaviours_and_metaspace_decoding(void **state)
{
    (void)state;
    static const char *const words[] = {"the", "final", "countdown", "-", "the-", "final-", "-final", "-countdown",
                                        "\342\226\201a\342\226\201b", "\342\226\201c"}; /* ▁a▁b, ▁c */
    static const struct {
        const char *behavior;
        int32_t ids[6];
        size_t n;
    } cases[] = {
        {"Removed", {0, 1, 2}, 3},
        {"Isolated", {0, 3, 1, 3, 3, 2}, 6},
        {"MergedWithPrevious", {4, 5, 3, 2}, 4},
        {"MergedWithNext", {0, 6, 3, 7}, 4},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char json[1024];
        int len = snprintf(json, sizeof json,
                           "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"%s\","
                           "\"invert\":false},\"decoder\":{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\","
                           "\"prepend_scheme\":\"always\",\"split\":true},"
                           "\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{",
                           cases[k].behavior);
        for (size_t w = 0; w < sizeof words / sizeof words[0]; w++)
            len += snprintf(json + len, sizeof json - (size_t)len, "%s\"%s\":%zu", w ? "," : "", words[w], w);
        snprintf(json + len, sizeof json - (size_t)len, "},\"merges\":[]}}");
        whet_err e;
        whet_tokenizer *t = whet_tokenizer_parse(json, strlen(json), "split.json", &e);
        if (!t)
            print_error("%s\n", e.msg);
        assert_non_null(t);
        int32_t *ids;
        size_t n;
        encode_or_fail(t, "the-final--countdown", 20, 0, &ids, &n);
        if (!ids_equal(ids, n, cases[k].ids, cases[k].n))
            print_ids(cases[k].behavior, ids, n);
        assert_true(ids_equal(ids, n, cases[k].ids, cases[k].n));
        free(ids);
        /* every ▁ of the first token is dropped, later ones become spaces */
        static const int32_t meta[] = {8, 9};
        size_t out_len;
        char *text = decode_or_fail(t, meta, 2, 0, &out_len);
        assert_string_equal(text, "ab c");
        free(text);
        whet_tokenizer_free(t);
    }
}

/* Long text made of every golden string of a tokenizer, repeated. */
static char *golden_text(const char *name, int repeats, size_t *len)
{
    char path[512];
    whet_err e;
    whet_json_doc *doc = NULL;
    snprintf(path, sizeof path, DATA_DIR "/%s.golden.json", name);
    assert_int_equal(whet_json_parse_file(&doc, path, NULL, &e), 0);
    const whet_json *cases = whet_json_get(whet_json_root(doc), "cases");
    size_t total = 0;
    for (size_t i = 0; i < whet_json_count(cases); i++)
        total += whet_json_get(whet_json_at(cases, i), "text")->u.string.len + 1;
    char *text = malloc(total * (size_t)repeats + 1);
    assert_non_null(text);
    *len = 0;
    for (int r = 0; r < repeats; r++)
        for (size_t i = 0; i < whet_json_count(cases); i++) {
            const whet_json *s = whet_json_get(whet_json_at(cases, i), "text");
            memcpy(text + *len, s->u.string.chars, s->u.string.len);
            *len += s->u.string.len;
            text[(*len)++] = r & 1 ? '\n' : ' ';
        }
    whet_json_free(doc);
    return text;
}

/* SentencePiece-style words are cut before ▁ runs only when no token could
 * merge across the cut. A vocabulary with one more token holding "x▁" (which
 * no merge builds, so ids cannot change) turns the cutting off: both must
 * give the same ids on a long text. */
static void cutting_before_metaspace_keeps_ids(void **state)
{
    (void)state;
    char *json;
    size_t json_len;
    whet_err e;
    assert_int_equal(whet_read_file(DATA_DIR "/spm_legacy/tokenizer.json", &json, &json_len, &e), 0);
    const char *vocab = strstr(json, "\"vocab\":{");
    assert_non_null(vocab);
    static const char extra[] = "\"x\xE2\x96\x81y\":100000,";
    size_t at = (size_t)(vocab - json) + strlen("\"vocab\":{");
    char *uncut = malloc(json_len + sizeof extra);
    assert_non_null(uncut);
    memcpy(uncut, json, at);
    memcpy(uncut + at, extra, sizeof extra - 1);
    memcpy(uncut + at + sizeof extra - 1, json + at, json_len - at);
    whet_tokenizer *cut = whet_tokenizer_parse(json, json_len, "cut", &e);
    whet_tokenizer *whole = whet_tokenizer_parse(uncut, json_len + sizeof extra - 1, "uncut", &e);
    assert_non_null(cut);
    assert_non_null(whole);
    size_t len;
    char *text = golden_text("spm_legacy", 4, &len);
    int32_t *a, *b;
    size_t na, nb;
    encode_or_fail(cut, text, len, 1, &a, &na);
    encode_or_fail(whole, text, len, 1, &b, &nb);
    assert_true(na > 1000);
    assert_true(ids_equal(a, na, b, nb));
    free(a);
    free(b);
    free(text);
    free(uncut);
    free(json);
    whet_tokenizer_free(cut);
    whet_tokenizer_free(whole);
}

/* A tokenizer is shared by threads: each encodes the same text and must get
 * what one thread alone gets. */
typedef struct encode_job {
    const whet_tokenizer *t;
    const char *text;
    size_t len;
    int32_t *ids;
    size_t n;
    int rc;
} encode_job;

static void *encode_in_thread(void *arg)
{
    encode_job *job = arg;
    whet_err e;
    for (int r = 0; r < 3 && job->rc == 0; r++) {
        free(job->ids);
        job->rc = whet_tokenizer_encode(job->t, job->text, job->len, 1, &job->ids, &job->n, &e);
    }
    return NULL;
}

static void encoding_from_many_threads(void **state)
{
    (void)state;
    whet_tokenizer *t = load_named("qwen3");
    size_t len;
    char *text = golden_text("qwen3", 3, &len);
    int32_t *expected;
    size_t n_expected;
    encode_or_fail(t, text, len, 1, &expected, &n_expected);
    enum { THREADS = 4 };
    pthread_t threads[THREADS];
    encode_job jobs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (encode_job){t, text, len, NULL, 0, 0};
        assert_int_equal(pthread_create(&threads[i], NULL, encode_in_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        assert_int_equal(jobs[i].rc, 0);
        assert_true(ids_equal(jobs[i].ids, jobs[i].n, expected, n_expected));
        free(jobs[i].ids);
    }
    free(expected);
    free(text);
    whet_tokenizer_free(t);
}

/* ---- GGUF ---- */

/* Writes the tokenizer's vocabulary into GGUF metadata as llama.cpp's
 * converter does, and checks the GGUF tokenizer encodes the goldens alike. */
static void gguf_matches_json(const char *name, const char *model, const char *pre, int spm)
{
    char path[512];
    whet_err e;
    snprintf(path, sizeof path, DATA_DIR "/%s/tokenizer.json", name);
    whet_json_doc *doc = NULL;
    assert_int_equal(whet_json_parse_file(&doc, path, NULL, &e), 0);
    const whet_json *root = whet_json_root(doc);
    const whet_json *vocab = whet_json_get(whet_json_get(root, "model"), "vocab");
    const whet_json *merges = whet_json_get(whet_json_get(root, "model"), "merges");
    const whet_json *added = whet_json_get(root, "added_tokens");
    size_t n = whet_json_count(vocab);
    for (size_t i = 0; i < whet_json_count(added); i++) {
        size_t id = (size_t)whet_json_get(whet_json_at(added, i), "id")->u.number.integer;
        if (id >= n)
            n = id + 1;
    }
    const char **tokens = calloc(n, sizeof *tokens);
    int32_t *types = calloc(n, sizeof *types);
    float *scores = calloc(n, sizeof *scores);
    assert_true(tokens && types && scores);
    for (size_t i = 0; i < vocab->u.object.count; i++) {
        size_t id = (size_t)vocab->u.object.members[i].value.u.number.integer;
        tokens[id] = vocab->u.object.members[i].key;
        types[id] = strncmp(tokens[id], "<0x", 3) == 0 && strlen(tokens[id]) == 6 ? 6 : 1;
        scores[id] = -1e6f; /* single characters: never the result of a merge */
    }
    for (size_t i = 0; i < whet_json_count(added); i++) {
        const whet_json *a = whet_json_at(added, i);
        size_t id = (size_t)whet_json_get(a, "id")->u.number.integer;
        tokens[id] = whet_json_get(a, "content")->u.string.chars;
        types[id] = 3;
    }
    const char **merge_strings = calloc(whet_json_count(merges) + 1, sizeof *merge_strings);
    for (size_t i = 0; i < whet_json_count(merges); i++) {
        const char *m = whet_json_at(merges, i)->u.string.chars;
        merge_strings[i] = m;
        if (spm) {
            /* the merged token's score: earlier merges score higher */
            char joined[256];
            const char *space = strchr(m, ' ');
            snprintf(joined, sizeof joined, "%.*s%s", (int)(space - m), m, space + 1);
            for (size_t id = 0; id < n; id++)
                if (tokens[id] && strcmp(tokens[id], joined) == 0 && scores[id] < -(float)i)
                    scores[id] = -(float)i;
        }
    }
    whet_gguf_writer *w = whet_gguf_writer_new();
    assert_non_null(w);
    assert_int_equal(whet_gguf_set_string(w, "tokenizer.ggml.model", model, &e), 0);
    if (pre)
        assert_int_equal(whet_gguf_set_string(w, "tokenizer.ggml.pre", pre, &e), 0);
    assert_int_equal(whet_gguf_set_array(w, "tokenizer.ggml.tokens", WHET_GGUF_STRING, tokens, n, &e), 0);
    assert_int_equal(whet_gguf_set_array(w, "tokenizer.ggml.token_type", WHET_GGUF_INT32, types, n, &e), 0);
    if (spm)
        assert_int_equal(whet_gguf_set_array(w, "tokenizer.ggml.scores", WHET_GGUF_FLOAT32, scores, n, &e), 0);
    else
        assert_int_equal(whet_gguf_set_array(w, "tokenizer.ggml.merges", WHET_GGUF_STRING, merge_strings,
                                             whet_json_count(merges), &e),
                         0);
    unsigned char *bytes;
    size_t size;
    assert_int_equal(whet_gguf_write_memory(w, &bytes, &size, &e), 0);
    whet_gguf_writer_free(w);
    free(tokens);
    free(types);
    free(scores);
    free(merge_strings);
    whet_json_free(doc);

    whet_gguf *g = whet_gguf_parse(bytes, size, "tok.gguf", &e);
    assert_non_null(g);
    whet_tokenizer *from_gguf = whet_tokenizer_from_gguf(g, &e);
    if (!from_gguf)
        print_error("%s\n", e.msg);
    assert_non_null(from_gguf);
    whet_tokenizer *from_json = load_named(name);
    assert_int_equal(whet_tokenizer_vocab_size(from_gguf), whet_tokenizer_vocab_size(from_json));

    snprintf(path, sizeof path, DATA_DIR "/%s.golden.json", name);
    assert_int_equal(whet_json_parse_file(&doc, path, NULL, &e), 0);
    const whet_json *cases = whet_json_get(whet_json_root(doc), "cases");
    for (size_t i = 0; i < whet_json_count(cases); i++) {
        const whet_json *text = whet_json_get(whet_json_at(cases, i), "text");
        int32_t *a, *b;
        size_t na, nb;
        encode_or_fail(from_gguf, text->u.string.chars, text->u.string.len, 0, &a, &na);
        encode_or_fail(from_json, text->u.string.chars, text->u.string.len, 0, &b, &nb);
        if (!ids_equal(a, na, b, nb)) {
            print_message("%s via GGUF differs on \"%s\"\n", name, text->u.string.chars);
            print_ids("gguf", a, na);
            print_ids("json", b, nb);
        }
        assert_true(ids_equal(a, na, b, nb));
        size_t la, lb;
        char *da = decode_or_fail(from_gguf, a, na, 0, &la), *db = decode_or_fail(from_json, b, nb, 0, &lb);
        assert_string_equal(da, db);
        free(da);
        free(db);
        free(a);
        free(b);
    }
    whet_json_free(doc);
    whet_tokenizer_free(from_json);
    whet_tokenizer_free(from_gguf);
    whet_gguf_close(g);
    free(bytes);
}

static void gguf_byte_level(void **state)
{
    (void)state;
    gguf_matches_json("gpt2", "gpt2", "gpt-2", 0);
}

static void gguf_sentencepiece(void **state)
{
    (void)state;
    gguf_matches_json("spm_legacy", "llama", NULL, 1);
}

static void gguf_errors_name_the_key(void **state)
{
    (void)state;
    whet_err e;
    static const char *const tokens[] = {"a", "b"};
    for (int variant = 0; variant < 3; variant++) {
        whet_gguf_writer *w = whet_gguf_writer_new();
        assert_int_equal(whet_gguf_set_string(w, "tokenizer.ggml.model", variant == 0 ? "bert" : "gpt2", &e), 0);
        assert_int_equal(whet_gguf_set_array(w, "tokenizer.ggml.tokens", WHET_GGUF_STRING, tokens, 2, &e), 0);
        if (variant == 2)
            assert_int_equal(whet_gguf_set_string(w, "tokenizer.ggml.pre", "deepseek-coder", &e), 0);
        unsigned char *bytes;
        size_t size;
        assert_int_equal(whet_gguf_write_memory(w, &bytes, &size, &e), 0);
        whet_gguf_writer_free(w);
        whet_gguf *g = whet_gguf_parse(bytes, size, "bad.gguf", &e);
        assert_non_null(g);
        assert_null(whet_tokenizer_from_gguf(g, &e));
        static const char *const expected[] = {"'tokenizer.ggml.model'", "'tokenizer.ggml.merges'",
                                               "'tokenizer.ggml.pre'"};
        if (!strstr(e.msg, expected[variant]))
            print_error("%s\n", e.msg);
        assert_non_null(strstr(e.msg, "bad.gguf"));
        assert_non_null(strstr(e.msg, expected[variant]));
        whet_gguf_close(g);
        free(bytes);
    }
}

/* ---- speed ---- */

static void bench_reports_speed(void **state)
{
    (void)state;
    /* a mixed text, ~64 KiB: prose, dates, numbers, code, accents, CJK, emoji */
    static const char chunk[] = "The quick brown fox jumps over the lazy dog; it's 2024-11-28 and 3.14159 "
                                "is pi.\n\tdef f(x):\n        return x * 2  # comment\nCaf\xC3\xA9 na\xC3\xAFve "
                                "\xE4\xBD\xA0\xE5\xA5\xBD\xE4\xB8\x96\xE7\x95\x8C \xF0\x9F\xA6\x80!\n";
    size_t reps = 65536 / (sizeof chunk - 1), len = reps * (sizeof chunk - 1);
    char *text = malloc(len);
    assert_non_null(text);
    for (size_t i = 0; i < reps; i++)
        memcpy(text + i * (sizeof chunk - 1), chunk, sizeof chunk - 1);
    static const char *const names[] = {"gpt2", "qwen3", "spm_legacy"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        whet_tokenizer *t = load_named(names[k]);
        size_t n_tokens = 0;
        whet_err e;
        double mbps = whet_tokenizer_bench(t, text, len, 0.2, &n_tokens, &e);
        print_message("%s encode: %.2f MB/s (%zu bytes -> %zu tokens)\n", names[k], mbps, len, n_tokens);
        assert_true(mbps > 0);
        assert_true(n_tokens > len / 8 && n_tokens < len);
        whet_tokenizer_free(t);
    }
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(golden_gpt2),
        cmocka_unit_test(golden_qwen3),
        cmocka_unit_test(golden_spm_legacy),
        cmocka_unit_test(golden_spm_metaspace),
        cmocka_unit_test(golden_bytelevel_llama3),
        cmocka_unit_test(golden_extra),
        cmocka_unit_test(round_trip_byte_level),
        cmocka_unit_test(round_trip_spm_legacy),
        cmocka_unit_test(invalid_utf8_becomes_replacement_characters),
        cmocka_unit_test(nul_bytes_are_text),
        cmocka_unit_test(decoding_a_split_character),
        cmocka_unit_test(special_tokens_and_lookups),
        cmocka_unit_test(add_special_adds_bos),
        cmocka_unit_test_setup_teardown(malformed_files_name_file_and_position, make_tmp_dir, remove_tmp_dir),
        cmocka_unit_test_setup_teardown(minimal_tokenizer_and_llama_config, make_tmp_dir, remove_tmp_dir),
        cmocka_unit_test(split_behaviours_and_metaspace_decoding),
        cmocka_unit_test(cutting_before_metaspace_keeps_ids),
        cmocka_unit_test(encoding_from_many_threads),
        cmocka_unit_test(gguf_byte_level),
        cmocka_unit_test(gguf_sentencepiece),
        cmocka_unit_test(gguf_errors_name_the_key),
        cmocka_unit_test(bench_reports_speed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
