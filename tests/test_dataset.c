/* Datasets: each format read through the index, loss masks checked by
 * decoding the trained tokens (they must decode to exactly each assistant
 * message's content and end-of-turn marker, written out here by hand from
 * the templates' definitions), every error class at its exact
 * file:line:column, the --valid-split's stability, the batcher (layout,
 * determinism, save/restore, packing), and reading a file larger than a
 * memory budget. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data/check.h"
#include "data/dataset.h"
#include "tok/chat_template.h"
#include "tok/tokenizer.h"

#define DATA "tests/data/datasets"
#define TOK "tests/data/tokenizers"

/* ---- fixtures ---- */

static whet_tokenizer *load_tok(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, TOK "/%s", name);
    whet_err e;
    whet_tokenizer *t = whet_tokenizer_load(path, &e);
    if (!t)
        fail_msg("%s", e.msg);
    return t;
}

static char tmp_dir[64]; /* made on first use, removed at the end */

static whet_tokenizer *qwen3_tok, *gpt2_tok, *llama3_tok, *spm_legacy_tok, *spm_metaspace_tok;

static int setup(void **state)
{
    (void)state;
    qwen3_tok = load_tok("qwen3");
    gpt2_tok = load_tok("gpt2");
    llama3_tok = load_tok("bytelevel_llama3");
    spm_legacy_tok = load_tok("spm_legacy");
    spm_metaspace_tok = load_tok("spm_metaspace");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    whet_tokenizer_free(qwen3_tok);
    whet_tokenizer_free(gpt2_tok);
    whet_tokenizer_free(llama3_tok);
    whet_tokenizer_free(spm_legacy_tok);
    whet_tokenizer_free(spm_metaspace_tok);
    if (tmp_dir[0])
        rmdir(tmp_dir);
    return 0;
}

static whet_chat_template template_named(const char *name)
{
    whet_chat_template t;
    whet_err e;
    if (whet_chat_template_by_name(&t, name, &e) != 0)
        fail_msg("%s", e.msg);
    return t;
}

static whet_dataset *open_ds(const char *path, const whet_data_options *opt)
{
    whet_dataset *ds;
    whet_err e;
    if (whet_dataset_open(&ds, path, opt, &e) != 0)
        fail_msg("%s", e.msg);
    return ds;
}

static void get(whet_dataset *ds, size_t i, whet_example *ex)
{
    whet_err e;
    if (whet_dataset_get(ds, i, ex, &e) != 0)
        fail_msg("%s", e.msg);
}

static char *decode(const whet_tokenizer *t, const int32_t *ids, size_t n)
{
    char *text;
    size_t len;
    whet_err e;
    if (whet_tokenizer_decode(t, ids, n, 0, &text, &len, &e) != 0)
        fail_msg("%s", e.msg);
    return text;
}

/* The trained tokens, run by run, as the bytes they stand for (special
 * tokens as their text; no decoder step such as SentencePiece's leading-space
 * strip), joined with "|". */
static char *trained_runs(const whet_tokenizer *t, const whet_example *ex)
{
    size_t cap = 64, len = 0;
    for (size_t i = 0; i < ex->n; i++) {
        size_t l = 0;
        whet_tokenizer_token_bytes(t, ex->ids[i], &l);
        cap += l + 1;
    }
    char *out = calloc(1, cap);
    for (size_t i = 0; i < ex->n; i++) {
        if (!ex->loss[i])
            continue;
        if (len && i > 0 && !ex->loss[i - 1])
            out[len++] = '|';
        size_t l = 0;
        const char *b = whet_tokenizer_token_bytes(t, ex->ids[i], &l);
        assert_non_null(b);
        memcpy(out + len, b, l);
        len += l;
    }
    out[len] = 0;
    return out;
}

static void expect_runs(const whet_tokenizer *t, const whet_example *ex, const char *expected)
{
    char *runs = trained_runs(t, ex);
    if (strcmp(runs, expected) != 0)
        fail_msg("trained tokens decode to\n  \"%s\"\nexpected\n  \"%s\"", runs, expected);
    free(runs);
}

/* ---- formats ---- */

static void chat_masks_assistant_turns(void **state)
{
    (void)state;
    whet_chat_template t = template_named("chatml");
    whet_data_options opt = {.tok = qwen3_tok, .tmpl = &t, .add_eos = 1};
    whet_dataset *ds = open_ds(DATA "/chat.jsonl", &opt);
    assert_int_equal(whet_dataset_count(ds), 3);
    assert_int_equal(whet_dataset_format(ds), WHET_DATA_CHAT);
    assert_string_equal(whet_dataset_path(ds), DATA "/chat.jsonl");
    assert_int_equal(whet_dataset_line(ds, 2), 4); /* line 3 is blank */
    whet_example ex;
    get(ds, 0, &ex);
    char *all = decode(qwen3_tok, ex.ids, ex.n);
    assert_string_equal(all, "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n");
    free(all);
    expect_runs(qwen3_tok, &ex, "4<|im_end|>");
    whet_example_free(&ex);
    /* "weight": 0 leaves the first assistant turn untrained */
    get(ds, 1, &ex);
    expect_runs(qwen3_tok, &ex, "De rien.<|im_end|>");
    whet_example_free(&ex);
    get(ds, 2, &ex);
    expect_runs(qwen3_tok, &ex, "Blue, like the sea.<|im_end|>");
    whet_example_free(&ex);
    whet_dataset_close(ds);

    /* --train-on-prompt: everything */
    opt.train_on_prompt = 1;
    ds = open_ds(DATA "/chat.jsonl", &opt);
    get(ds, 1, &ex);
    for (size_t i = 0; i < ex.n; i++)
        assert_int_equal(ex.loss[i], 1);
    whet_example_free(&ex);
    whet_dataset_close(ds);
}

static void prompt_completion_with_and_without_template(void **state)
{
    (void)state;
    whet_chat_template t = template_named("qwen3");
    whet_data_options opt = {.tok = qwen3_tok, .tmpl = &t, .add_eos = 1};
    whet_dataset *ds = open_ds(DATA "/prompt_completion.jsonl", &opt);
    assert_int_equal(whet_dataset_count(ds), 2);
    assert_int_equal(whet_dataset_format(ds), WHET_DATA_PROMPT_COMPLETION);
    whet_example ex;
    get(ds, 0, &ex);
    char *all = decode(qwen3_tok, ex.ids, ex.n);
    /* a user/assistant chat; Qwen3 writes an empty think block for the last turn */
    assert_string_equal(all, "<|im_start|>user\nThe capital of France is<|im_end|>\n<|im_start|>assistant\n"
                             "<think>\n\n</think>\n\n Paris.<|im_end|>\n");
    free(all);
    expect_runs(qwen3_tok, &ex, "<think>\n\n</think>\n\n Paris.<|im_end|>");
    whet_example_free(&ex);
    whet_dataset_close(ds);

    /* no template: prompt then completion, loss on the completion and EOS */
    whet_data_options plain = {.tok = gpt2_tok, .add_eos = 1};
    ds = open_ds(DATA "/prompt_completion.jsonl", &plain);
    get(ds, 1, &ex);
    all = decode(gpt2_tok, ex.ids, ex.n);
    assert_string_equal(all, "2 + 3 = 5<|endoftext|>");
    free(all);
    expect_runs(gpt2_tok, &ex, " 5<|endoftext|>");
    whet_example_free(&ex);
    whet_dataset_close(ds);
}

static void text_formats_train_everything(void **state)
{
    (void)state;
    whet_data_options opt = {.tok = gpt2_tok, .add_eos = 1};
    whet_dataset *ds = open_ds(DATA "/text.jsonl", &opt);
    assert_int_equal(whet_dataset_count(ds), 3);
    assert_int_equal(whet_dataset_format(ds), WHET_DATA_TEXT);
    whet_example ex;
    get(ds, 1, &ex);
    expect_runs(gpt2_tok, &ex, "Second document,\nwith two lines.<|endoftext|>");
    whet_example_free(&ex);
    whet_dataset_close(ds);

    /* .txt: paragraphs; CRLF and whitespace-only lines end them too */
    opt.add_eos = 0;
    ds = open_ds(DATA "/plain.txt", &opt);
    assert_int_equal(whet_dataset_count(ds), 3);
    assert_int_equal(whet_dataset_format(ds), WHET_DATA_TEXT);
    const char *expected[] = {"First paragraph\nstill the first.", "Second paragraph.",
                              "Third, without a final newline"};
    const size_t lines[] = {1, 5, 7};
    for (size_t i = 0; i < 3; i++) {
        get(ds, i, &ex);
        expect_runs(gpt2_tok, &ex, expected[i]);
        assert_int_equal(whet_dataset_line(ds, i), lines[i]);
        whet_example_free(&ex);
    }
    whet_dataset_close(ds);

    /* a tokenizer that adds a BOS of its own gets it in front (untrained
     * as a target: nothing predicts the first token) */
    whet_data_options spm = {.tok = spm_legacy_tok};
    ds = open_ds(DATA "/text.jsonl", &spm);
    get(ds, 2, &ex);
    assert_true(ex.n >= 2);
    assert_int_equal(ex.ids[0], whet_tokenizer_bos_id(spm_legacy_tok));
    whet_example_free(&ex);
    whet_dataset_close(ds);
}

/* Every chat template family with a tokenizer that knows its markers as
 * special tokens (and Gemma's with one that does not): the trained tokens of
 * each example of chat.jsonl are each assistant span, as chat_template.h
 * defines it, and nothing else. */
static void masks_on_every_template(void **state)
{
    (void)state;
    static const struct {
        const char *tmpl;
        whet_tokenizer **tok;
        const char *expected[3]; /* per example; NULL: the template refuses it */
    } cases[] = {
        {"chatml", &qwen3_tok, {"4<|im_end|>", "De rien.<|im_end|>", "Blue, like the sea.<|im_end|>"}},
        {"qwen2.5", &qwen3_tok, {"4<|im_end|>", "De rien.<|im_end|>", "Blue, like the sea.<|im_end|>"}},
        /* the last assistant turn gets the (empty) think block; the earlier, untrained one has none */
        {"qwen3", &qwen3_tok,
         {"<think>\n\n</think>\n\n4<|im_end|>", "<think>\n\n</think>\n\nDe rien.<|im_end|>",
          "<think>\n\n</think>\n\nBlue, like the sea.<|im_end|>"}},
        {"llama3", &llama3_tok, {"4<|eot_id|>", "De rien.<|eot_id|>", "Blue, like the sea.<|eot_id|>"}},
        /* the space after [/INST] is the model's */
        {"llama2", &spm_legacy_tok, {" 4 </s>", " De rien. </s>", " Blue, like the sea. </s>"}},
        {"mistral", &spm_legacy_tok, {"4</s>", NULL, "Blue, like the sea.</s>"}},
        /* (spm_metaspace's decoder has no ByteFallback step: "B", not in its
         * vocabulary, is the byte token <0x42> and shows as such) */
        {"mistral", &spm_metaspace_tok, {"4</s>", NULL, "<0x42>lue, like the sea.</s>"}},
        {"zephyr", &spm_legacy_tok, {"4</s>", "De rien.</s>", "Blue, like the sea.</s>"}},
        /* Qwen3's vocabulary has no <end_of_turn> token: the token ">\n"
         * crosses the span's end, and holding trained bytes it is trained */
        {"gemma", &qwen3_tok, {"4<end_of_turn>\n", "De rien.<end_of_turn>\n", "Blue, like the sea.<end_of_turn>\n"}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        whet_chat_template t = template_named(cases[c].tmpl);
        whet_data_options opt = {.tok = *cases[c].tok, .tmpl = &t, .add_eos = 1};
        whet_dataset *ds = open_ds(DATA "/chat.jsonl", &opt);
        for (size_t i = 0; i < 3; i++) {
            whet_example ex;
            whet_err e;
            int rc = whet_dataset_get(ds, i, &ex, &e);
            if (!cases[c].expected[i]) {
                assert_int_equal(rc, -1);
                if (!strstr(e.msg, DATA "/chat.jsonl:2:1: template-error: ") || !strstr(e.msg, "alternate"))
                    fail_msg("%s: %s", cases[c].tmpl, e.msg);
                continue;
            }
            if (rc != 0)
                fail_msg("%s: %s", cases[c].tmpl, e.msg);
            char *runs = trained_runs(*cases[c].tok, &ex);
            if (strcmp(runs, cases[c].expected[i]) != 0)
                fail_msg("%s, example %zu: trained \"%s\", expected \"%s\"", cases[c].tmpl, i, runs,
                         cases[c].expected[i]);
            free(runs);
            whet_example_free(&ex);
        }
        whet_dataset_close(ds);
    }
}

/* ---- --valid-split and --data ---- */

static void tmp_path(char *out, size_t cap, const char *name)
{
    if (!tmp_dir[0]) {
        snprintf(tmp_dir, sizeof tmp_dir, "/tmp/whet_data_XXXXXX");
        assert_non_null(mkdtemp(tmp_dir));
    }
    snprintf(out, cap, "%s/%s", tmp_dir, name);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Writes examples "example K." for K in ks[0..n), one text example a line. */
static void write_numbered(const char *path, const int *ks, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "{\"text\": \"example %d.\"}\n", ks[i]);
    fclose(f);
}

/* Which numbers a dataset's examples hold (in[k] = 1). */
static void numbers_in(whet_dataset *ds, unsigned char *in, size_t max)
{
    memset(in, 0, max);
    for (size_t i = 0; i < whet_dataset_count(ds); i++) {
        whet_example ex;
        get(ds, i, &ex);
        char *text = decode(gpt2_tok, ex.ids, ex.n);
        int k = -1;
        assert_int_equal(sscanf(text, "example %d.", &k), 1);
        assert_true(k >= 0 && (size_t)k < max);
        in[k] = 1;
        free(text);
        whet_example_free(&ex);
    }
}

static void valid_split_is_stable(void **state)
{
    (void)state;
    enum { OLD = 300, ALL = 500 };
    int ks[ALL];
    for (int i = 0; i < ALL; i++)
        ks[i] = i;
    char path[128];
    tmp_path(path, sizeof path, "split.jsonl");
    write_numbered(path, ks, OLD);
    whet_data_options opt = {.tok = gpt2_tok};
    whet_dataset *all = open_ds(path, &opt), *train, *valid;
    whet_err e;
    assert_int_equal(whet_dataset_split(&train, all, 0.2, 0, &e), 0);
    assert_int_equal(whet_dataset_split(&valid, all, 0.2, 1, &e), 0);
    whet_dataset_close(all); /* the views keep the file */
    size_t n_valid = whet_dataset_count(valid);
    assert_int_equal(whet_dataset_count(train) + n_valid, OLD);
    assert_true(n_valid > OLD / 10 && n_valid < OLD * 3 / 10);
    unsigned char in_valid[ALL], in_train[ALL], again[ALL];
    numbers_in(valid, in_valid, ALL);
    numbers_in(train, in_train, ALL);
    for (int k = 0; k < OLD; k++)
        assert_int_equal(in_valid[k] + in_train[k], 1);
    whet_dataset_close(train);
    whet_dataset_close(valid);

    /* more examples, and the old ones in another order: none of the old
     * ones changes sides */
    for (int i = 0; i < ALL; i++)
        ks[i] = (i * 7 + 3) % ALL;
    write_numbered(path, ks, ALL);
    all = open_ds(path, &opt);
    assert_int_equal(whet_dataset_split(&valid, all, 0.2, 1, &e), 0);
    numbers_in(valid, again, ALL);
    for (int k = 0; k < OLD; k++)
        assert_int_equal(again[k], in_valid[k]);
    whet_dataset_close(valid);
    /* the share is by content, whitespace-normalised: "example  5. " is example 5's twin */
    whet_dataset_close(all);
    unlink(path);
}

static void data_directories(void **state)
{
    (void)state;
    char dir[128], path[160];
    tmp_path(dir, sizeof dir, "dir");
    assert_int_equal(mkdir(dir, 0700), 0);
    whet_data_options opt = {.tok = gpt2_tok};
    whet_data_splits sp;
    whet_err e;
    assert_int_equal(whet_data_open_splits(&sp, dir, 0, &opt, &e), -1);
    assert_non_null(strstr(e.msg, "train.jsonl"));
    snprintf(path, sizeof path, "%s/train.jsonl", dir);
    write_text(path, "{\"text\": \"a\"}\n{\"text\": \"b\"}\n");
    assert_int_equal(whet_data_open_splits(&sp, dir, 0, &opt, &e), 0);
    assert_int_equal(whet_dataset_count(sp.train), 2);
    assert_null(sp.valid);
    assert_null(sp.test);
    whet_data_splits_close(&sp);
    char valid[160], test[160];
    snprintf(valid, sizeof valid, "%s/valid.jsonl", dir);
    snprintf(test, sizeof test, "%s/test.jsonl", dir);
    write_text(valid, "{\"text\": \"c\"}\n");
    write_text(test, "{\"text\": \"d\"}\n{\"text\": \"e\"}\n{\"text\": \"f\"}\n");
    assert_int_equal(whet_data_open_splits(&sp, dir, 0, &opt, &e), 0);
    assert_int_equal(whet_dataset_count(sp.train), 2);
    assert_int_equal(whet_dataset_count(sp.valid), 1);
    assert_int_equal(whet_dataset_count(sp.test), 3);
    whet_data_splits_close(&sp);
    /* valid.jsonl and --valid-split: one or the other */
    assert_int_equal(whet_data_open_splits(&sp, dir, 0.1, &opt, &e), -1);
    assert_non_null(strstr(e.msg, "--valid-split"));
    unlink(valid);
    unlink(test);
    unlink(path);
    rmdir(dir);
    /* a file with --valid-split */
    int ks[20];
    for (int i = 0; i < 20; i++)
        ks[i] = i;
    tmp_path(path, sizeof path, "twenty.jsonl");
    write_numbered(path, ks, 20);
    assert_int_equal(whet_data_open_splits(&sp, path, 0.5, &opt, &e), 0);
    assert_int_equal(whet_dataset_count(sp.train) + whet_dataset_count(sp.valid), 20);
    assert_null(sp.test);
    whet_data_splits_close(&sp);
    /* one example cannot be split */
    write_numbered(path, ks, 1);
    assert_int_equal(whet_data_open_splits(&sp, path, 0.5, &opt, &e), -1);
    assert_non_null(strstr(e.msg, "both need some"));
    unlink(path);
}

/* A token of the whole text that straddles a span's start: with Qwen3's
 * pre-tokenizer "\n\n" is one token, the template's "\n" then the content's
 * "\n". It holds trained bytes, so it is trained (the piece encoding does not
 * add up to the whole text's tokens here: the boundary is placed by the
 * shared-prefix rule). */
static void straddling_token_is_trained(void **state)
{
    (void)state;
    char path[128];
    tmp_path(path, sizeof path, "straddle.jsonl");
    write_text(path, "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, "
                     "{\"role\": \"assistant\", \"content\": \"\\nfoo\"}]}\n");
    whet_chat_template t = template_named("chatml");
    whet_data_options opt = {.tok = qwen3_tok, .tmpl = &t};
    whet_dataset *ds = open_ds(path, &opt);
    whet_example ex;
    get(ds, 0, &ex);
    expect_runs(qwen3_tok, &ex, "\n\nfoo<|im_end|>");
    whet_example_free(&ex);
    whet_dataset_close(ds);
    unlink(path);
}

/* ---- streaming under a memory budget ---- */

static size_t vm_data_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 0;
    char line[256];
    size_t kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmData: %zu kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* A 48 MiB file read with the heap capped (RLIMIT_DATA: heap and private
 * writable maps, not the read-only map of the file) at 16 MiB above what the
 * process uses: opening, splitting, reading examples from anywhere and
 * batching must work, and a single allocation of the file's size must fail
 * (so the budget is real). Runs in a child process. */
static void streams_under_a_memory_budget(void **state)
{
    (void)state;
#if defined(__SANITIZE_ADDRESS__)
    skip();
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
    skip();
#endif
#endif
    if (vm_data_kib() == 0)
        skip(); /* no /proc: not Linux */
    char path[128];
    tmp_path(path, sizeof path, "big.jsonl");
    enum { LINES = 1024, WORDS = 8192 }; /* 6 bytes a word: 48 KiB a line */
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    static char words[WORDS * 6 + 1];
    for (int w = 0; w < WORDS; w++)
        memcpy(words + 6 * w, " word.", 6);
    for (int i = 0; i < LINES; i++)
        fprintf(f, "{\"text\": \"%04d%s\"}\n", i, words);
    fclose(f);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    size_t file_size = (size_t)st.st_size;
    assert_true(file_size > 48u << 20);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        size_t budget = ((size_t)vm_data_kib() << 10) + (16u << 20);
        struct rlimit rl = {budget, budget};
        if (setrlimit(RLIMIT_DATA, &rl) != 0)
            _exit(10);
        char *volatile whole = malloc(file_size);
        if (whole) {
            whole[file_size - 1] = 1;
            free(whole);
            _exit(11); /* the budget does not hold here (valgrind): nothing to test */
        }
        whet_data_options opt = {.tok = gpt2_tok, .add_eos = 1};
        whet_dataset *ds, *valid;
        whet_err e;
        if (whet_dataset_open(&ds, path, &opt, &e) != 0)
            _exit(12);
        if (whet_dataset_count(ds) != LINES)
            _exit(13);
        if (whet_dataset_split(&valid, ds, 0.1, 1, &e) != 0)
            _exit(14);
        const size_t some[] = {0, 511, LINES - 1};
        for (size_t k = 0; k < 3; k++) {
            whet_example ex;
            if (whet_dataset_get(ds, some[k], &ex, &e) != 0 || ex.n < WORDS)
                _exit(15);
            whet_example_free(&ex);
        }
        whet_batch_options bo = {.batch_size = 2, .seq_len = 256, .shuffle = 1, .pack = 1, .seed = 3};
        whet_batcher *bt = whet_batcher_create(ds, &bo, &e);
        whet_batch b;
        for (int step = 0; step < 3; step++)
            if (!bt || whet_batcher_next(bt, &b, &e) != 0 || b.truncated != 2)
                _exit(16);
        whet_batcher_free(bt);
        whet_dataset_close(valid);
        whet_dataset_close(ds);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    unlink(path);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 11)
        skip();
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- checks ---- */

static void expect_report(const whet_data_report *r, const char *const *expected, size_t n)
{
    char line[1400];
    for (size_t i = 0; i < r->n_problems && i < n; i++) {
        whet_data_problem_format(&r->problems[i], line, sizeof line);
        if (strcmp(line, expected[i]) != 0)
            fail_msg("problem %zu:\n  %s\nexpected\n  %s", i, line, expected[i]);
    }
    if (r->n_problems != n) {
        for (size_t i = 0; i < r->n_problems; i++) {
            whet_data_problem_format(&r->problems[i], line, sizeof line);
            print_message("%s\n", line);
        }
        fail_msg("%zu problems, expected %zu", r->n_problems, n);
    }
}

/* Every class, at the column of the value at fault (in characters: line 13
 * has two 2-byte characters before it); columns were counted independently
 * with Python. */
static void check_reports_every_class(void **state)
{
    (void)state;
    whet_chat_template t = template_named("chatml");
    whet_data_check_options co = {.data = {.tok = qwen3_tok, .tmpl = &t, .add_eos = 1}, .seq_len = 40};
    const char *paths[] = {DATA "/errors.jsonl"};
    whet_data_report r;
    whet_err e;
    assert_int_equal(whet_data_check(paths, 1, &co, &r, &e), 0);
    static const char *const expected[] = {
        DATA "/errors.jsonl:2:88: invalid-json: expected ',' or ']', found end of input",
        DATA "/errors.jsonl:3:47: invalid-utf8: byte 0xE9 is not valid UTF-8",
        DATA "/errors.jsonl:4:1: unknown-format: expected key \"messages\" (chat), \"prompt\" and \"completion\", "
             "or \"text\"; found \"foo\", \"bar\"",
        DATA "/errors.jsonl:5:1: missing-key: expected key \"messages\": this file holds chat examples (from line 1)",
        DATA "/errors.jsonl:6:50: missing-key: expected key \"role\" in message 2",
        DATA "/errors.jsonl:7:24: unrecognised-role: role \"bot\" of message 1: expected \"system\", \"user\" or "
             "\"assistant\"",
        DATA "/errors.jsonl:8:43: empty-content: message 1 (user) has empty content",
        DATA "/errors.jsonl:9:14: no-assistant-message: no message has role \"assistant\": nothing to learn from this "
             "example",
        DATA "/errors.jsonl:10:99: invalid-value: \"weight\" of message 2: expected 0 or 1, found 2",
        /* whitespace runs do not make content different */
        DATA "/errors.jsonl:11:1: warning: duplicate: the same content as line 1",
        DATA "/errors.jsonl:12:1: warning: too-long: 69 tokens: --seq-len 40 cuts the last 29 (28 of them trained)",
        DATA "/errors.jsonl:13:84: invalid-value: expected \"content\" to be a string, found number",
        DATA "/errors.jsonl:14:1: unknown-format: expected an object with \"messages\", \"prompt\" and "
             "\"completion\", or \"text\", found array",
    };
    expect_report(&r, expected, sizeof expected / sizeof expected[0]);
    assert_int_equal(r.errors, 11);
    assert_int_equal(r.warnings, 2);
    assert_int_equal(r.examples, 14);
    assert_int_equal(r.examples_ok, 3);
    whet_data_report_free(&r);
    /* a cap on the problems kept: all are still counted */
    co.max_problems = 2;
    assert_int_equal(whet_data_check(paths, 1, &co, &r, &e), 0);
    assert_int_equal(r.n_problems, 2);
    assert_int_equal(r.errors, 11);
    assert_int_equal(r.warnings, 2);
    whet_data_report_free(&r);
    co.max_problems = 0;

    /* a template that refuses a conversation; a duplicate across files */
    whet_chat_template mistral = template_named("mistral");
    co.data.tmpl = &mistral;
    co.data.tok = spm_legacy_tok;
    co.seq_len = 0;
    const char *two[] = {DATA "/chat.jsonl", DATA "/errors.jsonl"};
    assert_int_equal(whet_data_check(two, 2, &co, &r, &e), 0);
    char line[1400];
    whet_data_problem_format(&r.problems[0], line, sizeof line);
    assert_non_null(strstr(line, DATA "/chat.jsonl:2:1: template-error: "));
    assert_non_null(strstr(line, "alternate"));
    whet_data_problem_format(&r.problems[1], line, sizeof line);
    assert_string_equal(line, DATA "/errors.jsonl:1:1: warning: duplicate: the same content as " DATA "/chat.jsonl:1");
    whet_data_report_free(&r);

    /* chat without a template: said once; an empty file */
    co.data.tmpl = NULL;
    co.data.tok = gpt2_tok;
    char empty[128];
    tmp_path(empty, sizeof empty, "empty.jsonl");
    write_text(empty, "\n  \n");
    const char *more[] = {DATA "/chat.jsonl", empty};
    assert_int_equal(whet_data_check(more, 2, &co, &r, &e), 0);
    static const char *const expected_more[2] = {
        DATA "/chat.jsonl:1:1: no-chat-template: chat examples need a chat template and the model has none (give one "
             "with --chat-template NAME); examples were not tokenized",
        NULL};
    char empty_line[300];
    snprintf(empty_line, sizeof empty_line, "%s:1:1: empty-file: no examples (the file is empty or blank)", empty);
    const char *const both[2] = {expected_more[0], empty_line};
    expect_report(&r, both, 2);
    whet_data_report_free(&r);

    /* .txt: the line and column inside a paragraph */
    char txt[128];
    tmp_path(txt, sizeof txt, "bad.txt");
    write_text(txt, "First.\n\nSecond paragraph,\nline tw\xC3o.\n");
    const char *text_paths[] = {txt};
    assert_int_equal(whet_data_check(text_paths, 1, &co, &r, &e), 0);
    char bad_line[300];
    snprintf(bad_line, sizeof bad_line, "%s:4:8: invalid-utf8: byte 0xC3 is not valid UTF-8", txt);
    const char *const text_expected[1] = {bad_line};
    expect_report(&r, text_expected, 1);
    whet_data_report_free(&r);

    /* a file that cannot be read is the only failure */
    const char *missing[] = {DATA "/no-such-file.jsonl"};
    assert_int_equal(whet_data_check(missing, 1, &co, &r, &e), -1);
    assert_non_null(strstr(e.msg, "no-such-file.jsonl: cannot open"));
    unlink(empty);
    unlink(txt);
}

/* dataset_get reports the same problems, and opening finds the format past bad lines */
static void get_reports_positioned_errors(void **state)
{
    (void)state;
    whet_chat_template t = template_named("chatml");
    whet_data_options opt = {.tok = qwen3_tok, .tmpl = &t};
    whet_dataset *ds = open_ds(DATA "/errors.jsonl", &opt);
    assert_int_equal(whet_dataset_count(ds), 14);
    whet_example ex;
    whet_err e;
    assert_int_equal(whet_dataset_get(ds, 6, &ex, &e), -1);
    assert_string_equal(e.msg, DATA "/errors.jsonl:7:24: unrecognised-role: role \"bot\" of message 1: expected "
                               "\"system\", \"user\" or \"assistant\"");
    assert_int_equal(whet_dataset_get(ds, 14, &ex, &e), -1);
    whet_dataset_close(ds);
    /* nothing recognisable at all */
    char path[128];
    tmp_path(path, sizeof path, "nothing.jsonl");
    write_text(path, "{\"a\": 1}\n[]\n");
    assert_int_equal(whet_dataset_open(&ds, path, &opt, &e), -1);
    assert_non_null(strstr(e.msg, "nothing.jsonl:1:1: unknown-format: "));
    write_text(path, "");
    assert_int_equal(whet_dataset_open(&ds, path, &opt, &e), -1);
    assert_non_null(strstr(e.msg, "nothing.jsonl: no examples"));
    /* chat data and no template: refused at open, not at the first batch */
    whet_data_options no_template = {.tok = gpt2_tok};
    assert_int_equal(whet_dataset_open(&ds, DATA "/chat.jsonl", &no_template, &e), -1);
    assert_string_equal(e.msg, DATA "/chat.jsonl:1:1: no-chat-template: chat examples need a chat template and the "
                               "model has none (give one with --chat-template NAME)");
    unlink(path);
}

/* ---- stats, dedup, overlap ---- */

static void stats_count_tokens_and_rows(void **state)
{
    (void)state;
    whet_data_options opt = {.tok = gpt2_tok, .add_eos = 1};
    whet_dataset *ds = open_ds(DATA "/text.jsonl", &opt); /* 11, 9 and 3 tokens */
    whet_data_stats st;
    whet_err e;
    assert_int_equal(whet_data_stats_compute(ds, 10, 2, 0, &st, &e), 0);
    assert_int_equal(st.examples, 3);
    assert_int_equal(st.tokens, 23);
    assert_int_equal(st.min, 3);
    assert_int_equal(st.median, 9);
    assert_int_equal(st.p95, 11);
    assert_int_equal(st.max, 11);
    assert_int_equal(st.truncated, 1);
    assert_int_equal(st.cut_tokens, 1);
    assert_int_equal(st.kept_tokens, 22);
    assert_int_equal(st.loss_tokens, 9 + 8 + 2); /* every token but each example's first */
    assert_int_equal(st.rows, 3);
    assert_int_equal(st.steps_per_epoch, 2);
    /* packed in T = 12: [10] [9 + 3] */
    assert_int_equal(whet_data_stats_compute(ds, 12, 2, 1, &st, &e), 0);
    assert_int_equal(st.rows, 2);
    assert_int_equal(st.steps_per_epoch, 1);
    whet_dataset_close(ds);
}

static void dedup_removes_normalised_duplicates(void **state)
{
    (void)state;
    char in[128], out[128];
    tmp_path(in, sizeof in, "dups.jsonl");
    tmp_path(out, sizeof out, "dedup.jsonl");
    write_text(in, "{\"text\": \"one  two\"}\n"
                   "{\"text\": \"three\"}\n"
                   "{\"text\": \" one two \", \"id\": 5}\n" /* the same words: a duplicate */
                   "not json\n"                                 /* kept as it is */
                   "{\"text\": \"One two\"}\n"              /* case differs: kept */
                   "not json\n");
    size_t kept, removed;
    whet_err e;
    assert_int_equal(whet_data_dedup(in, out, &kept, &removed, &e), 0);
    assert_int_equal(kept, 4);
    assert_int_equal(removed, 2);
    char *text;
    size_t len;
    assert_int_equal(whet_read_file(out, &text, &len, &e), 0);
    assert_string_equal(text, "{\"text\": \"one  two\"}\n{\"text\": \"three\"}\nnot json\n{\"text\": \"One two\"}\n");
    free(text);
    /* in place */
    assert_int_equal(whet_data_dedup(out, out, &kept, &removed, &e), 0);
    assert_int_equal(removed, 0);
    assert_int_equal(whet_data_dedup("/no/such/file.jsonl", out, &kept, &removed, &e), -1);
    unlink(in);
    unlink(out);
}

static void overlap_finds_shared_ngrams(void **state)
{
    (void)state;
    char train[128], suite[128];
    tmp_path(train, sizeof train, "train.jsonl");
    tmp_path(suite, sizeof suite, "suite.evalspec.jsonl");
    write_text(train, "{\"messages\": [{\"role\": \"user\", \"content\": \"Summarise.\"}, {\"role\": \"assistant\", "
                      "\"content\": \"The committee met on Tuesday to discuss the new budget for the public "
                      "library and its branches.\"}]}\n"
                      "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", "
                      "\"content\": \"Hello there.\"}]}\n");
    write_text(suite,
               "{\"suite\": \"s\", \"version\": 1}\n"
               "# a comment\n"
               "\n"
               /* 13 words of the training answer, another case and punctuation */
               "{\"id\": \"q1\", \"prompt\": \"Recall: THE committee met on Tuesday, to discuss the new budget for "
               "the public library!\"}\n"
               "{\"id\": \"q2\", \"prompt\": \"An entirely different question about rivers and mountains and "
               "valleys and the weather today\"}\n"
               "{\"id\": \"short\", \"prompt\": \"Hello there.\"}\n"
               "{\"id\": 17, \"kind\": \"choice\", \"prompt\": \"Which?\", \"choices\": [\"x\", \"met on Tuesday to discuss "
               "the new budget for the public library and its\"]}\n");
    const char *trains[] = {train}, *evals[] = {suite};
    whet_overlap_report r;
    whet_err e;
    assert_int_equal(whet_data_overlap(trains, 1, evals, 1, 13, &r, &e), 0);
    assert_int_equal(r.eval_cases, 4);
    assert_int_equal(r.short_cases, 1);
    assert_int_equal(r.n_cases, 2);
    assert_string_equal(r.cases[0].id, "q1");
    assert_int_equal(r.cases[0].line, 4);
    assert_int_equal(r.cases[0].ngrams, 3); /* 15 words; the first 13-gram starts with "recall" */
    assert_int_equal(r.cases[0].overlapping, 2);
    assert_string_equal(r.cases[0].train_file, train);
    assert_int_equal(r.cases[0].train_line, 1);
    assert_string_equal(r.cases[1].id, "17");
    assert_int_equal(r.cases[1].ngrams, 2); /* the second choice: 14 words */
    assert_int_equal(r.cases[1].overlapping, 2);
    whet_overlap_report_free(&r);
    /* with n = 2, "Hello there" overlaps too */
    assert_int_equal(whet_data_overlap(trains, 1, evals, 1, 2, &r, &e), 0);
    assert_int_equal(r.short_cases, 0);
    assert_int_equal(r.n_cases, 3);
    assert_string_equal(r.cases[1].id, "short");
    assert_int_equal(r.cases[1].overlapping, 1);
    whet_overlap_report_free(&r);
    /* a bad eval line is named */
    write_text(suite, "{\"suite\": 1}\n{\"id\": \"a\", \"prompt\": tru}\n");
    assert_int_equal(whet_data_overlap(trains, 1, evals, 1, 13, &r, &e), -1);
    if (!strstr(e.msg, "suite.evalspec.jsonl:2:23: invalid-json: "))
        fail_msg("%s", e.msg);
    unlink(train);
    unlink(suite);
}

/* Training examples that all start with the same 16-word instruction (a
 * template), each followed by a ticket and a reply of their own words. */
#define TEMPLATE "Read the support ticket and answer with a JSON object with the keys category and priority."

static void ticket_words(char *out, size_t cap, const char *stem, unsigned k)
{
    size_t used = 0;
    out[0] = '\0';
    for (unsigned j = 0; j < 14 && used < cap; j++)
        used += (size_t)snprintf(out + used, cap - used, "%s%s%ux%u", j ? " " : "", stem, k, j);
}

static void write_ticket_train(const char *path, unsigned examples)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (unsigned k = 0; k < examples; k++) {
        char ticket[512], reply[512];
        ticket_words(ticket, sizeof ticket, "t", k);
        ticket_words(reply, sizeof reply, "r", k);
        fprintf(f, "{\"prompt\": \"" TEMPLATE "\\n\\nTicket: %s\", \"completion\": \" %s\"}\n", ticket, reply);
    }
    fclose(f);
}

static void overlap_leaves_out_templates_and_meta(void **state)
{
    (void)state;
    char train[128], text_train[128], suite[128];
    tmp_path(train, sizeof train, "tickets.jsonl");
    tmp_path(text_train, sizeof text_train, "text.jsonl");
    tmp_path(suite, sizeof suite, "tickets.evalspec.jsonl");
    write_ticket_train(train, 20);
    write_text(text_train, "{\"text\": \"Which of the planets in our solar system has the most moons of all? Saturn.\"}\n");
    char ticket7[512], fresh[512], reply3[512], ticket4[512];
    ticket_words(ticket7, sizeof ticket7, "t", 7);
    ticket_words(fresh, sizeof fresh, "new", 1);
    ticket_words(reply3, sizeof reply3, "r", 3);
    ticket_words(ticket4, sizeof ticket4, "t", 4);
    FILE *f = fopen(suite, "wb");
    assert_non_null(f);
    /* training example 7 verbatim: 31 words, 19 13-grams, of which the 5
     * inside "<template> Ticket" are in every training example */
    fprintf(f, "{\"id\": \"copy\", \"messages\": [{\"role\": \"user\", \"content\": \"" TEMPLATE "\\n\\nTicket: %s\"}], "
               "\"assert\": [{\"type\": \"contains\", \"value\": \"x\"}]}\n", ticket7);
    /* the template with a ticket of its own: not a leak */
    fprintf(f, "{\"id\": \"templated\", \"prompt\": \"" TEMPLATE "\\n\\nTicket: %s\"}\n", fresh);
    /* training text only where the model is not given it */
    fprintf(f, "{\"id\": \"meta\", \"prompt\": \"%s\", \"tags\": [\"%s\"], \"meta\": {\"expected\": \"%s\"}, "
               "\"assert\": [{\"type\": \"equals\", \"value\": \"%s\"}]}\n", fresh, ticket4, reply3, reply3);
    /* 10 + 4 words: 13-grams only across the prompt and its gold choice */
    fputs("{\"id\": \"joined\", \"kind\": \"choice\", \"prompt\": \"Which of the planets in our solar system has the\", "
          "\"choices\": [\" fewest\", \" most moons of all\"], \"gold\": 1}\n", f);
    fclose(f);

    const char *trains[] = {train, text_train}, *evals[] = {suite};
    whet_overlap_report r;
    whet_err e;
    assert_int_equal(whet_data_overlap(trains, 2, evals, 1, 13, &r, &e), 0);
    assert_int_equal(r.eval_cases, 4);
    assert_int_equal(r.short_cases, 0);
    assert_int_equal(r.train_examples, 21);
    assert_int_equal(r.common_ngrams, 5);
    assert_int_equal(r.template_cases, 1);
    assert_int_equal(r.n_cases, 2);
    assert_string_equal(r.cases[0].id, "copy");
    assert_int_equal(r.cases[0].ngrams, 19);
    assert_int_equal(r.cases[0].overlapping, 14);
    assert_int_equal(r.cases[0].common, 5);
    assert_string_equal(r.cases[0].train_file, train);
    assert_int_equal(r.cases[0].train_line, 8);
    assert_string_equal(r.cases[1].id, "joined");
    assert_int_equal(r.cases[1].ngrams, 2);
    assert_int_equal(r.cases[1].overlapping, 2);
    assert_string_equal(r.cases[1].train_file, text_train);
    assert_int_equal(r.cases[1].train_line, 1);
    whet_overlap_report_free(&r);

    /* max_common 1: nothing is common, the template counts */
    whet_overlap_options all = {.n = 13, .max_common = 1};
    assert_int_equal(whet_data_overlap_with(trains, 2, evals, 1, &all, &r, &e), 0);
    assert_int_equal(r.common_ngrams, 0);
    assert_int_equal(r.template_cases, 0);
    assert_int_equal(r.n_cases, 3);
    assert_string_equal(r.cases[0].id, "copy");
    assert_int_equal(r.cases[0].overlapping, 19);
    assert_int_equal(r.cases[0].train_line, 1); /* the template is in the first example */
    assert_string_equal(r.cases[1].id, "templated");
    assert_int_equal(r.cases[1].overlapping, 5);
    whet_overlap_report_free(&r);
    /* a share below 1 / 21: common once in more than 10 examples */
    whet_overlap_options low = {.n = 13, .max_common = 0.01};
    assert_int_equal(whet_data_overlap_with(trains, 2, evals, 1, &low, &r, &e), 0);
    assert_int_equal(r.common_ngrams, 5);
    assert_int_equal(r.n_cases, 2);
    whet_overlap_report_free(&r);

    /* in 10 of 11 examples: too few to be a template whatever the share */
    write_ticket_train(train, 10);
    assert_int_equal(whet_data_overlap(trains, 2, evals, 1, 13, &r, &e), 0);
    assert_int_equal(r.train_examples, 11);
    assert_int_equal(r.common_ngrams, 0);
    assert_int_equal(r.n_cases, 3);
    assert_string_equal(r.cases[1].id, "templated");
    whet_overlap_report_free(&r);
    /* in 11 of 12 examples: a template */
    write_ticket_train(train, 11);
    assert_int_equal(whet_data_overlap(trains, 2, evals, 1, 13, &r, &e), 0);
    assert_int_equal(r.common_ngrams, 5);
    assert_int_equal(r.n_cases, 2);
    whet_overlap_report_free(&r);

    whet_overlap_options bad = {.n = 13, .max_common = 0};
    assert_int_equal(whet_data_overlap_with(trains, 2, evals, 1, &bad, &r, &e), -1);
    assert_non_null(strstr(e.msg, "expected more than 0 and at most 1"));
    bad.max_common = 1.5;
    assert_int_equal(whet_data_overlap_with(trains, 2, evals, 1, &bad, &r, &e), -1);
    unlink(train);
    unlink(text_train);
    unlink(suite);
}

/* ---- batches ---- */

static whet_batcher *batcher(whet_dataset *ds, size_t B, size_t T, int shuffle, int pack, uint64_t seed)
{
    whet_batch_options bo = {.batch_size = B, .seq_len = T, .shuffle = shuffle, .pack = pack, .seed = seed};
    whet_err e;
    whet_batcher *bt = whet_batcher_create(ds, &bo, &e);
    if (!bt)
        fail_msg("%s", e.msg);
    return bt;
}

static void next(whet_batcher *bt, whet_batch *b)
{
    whet_err e;
    if (whet_batcher_next(bt, b, &e) != 0)
        fail_msg("%s", e.msg);
}

/* Checks a batch against the layout of dataset.h: every example placed is
 * one of the dataset's, tokens and targets match its ids and loss, and no
 * position refers outside its own example. */
static void check_layout(const whet_batch *b)
{
    size_t T = b->T;
    for (size_t r = 0; r < b->B; r++) {
        for (size_t c = 0; c < T; c++) {
            size_t i = r * T + c;
            int32_t s = b->seg_start[i];
            assert_true(s >= 0 && (size_t)s <= c);
            assert_int_equal(b->positions[i], (int32_t)(c - (size_t)s));
            if (c > 0 && b->seg_start[i] != b->seg_start[i - 1])
                assert_int_equal(s, (int32_t)c); /* a new segment starts at its own column */
            if (b->targets[i] >= 0) {
                /* the target is the next token of the same segment */
                assert_true(c + 1 < T);
                assert_int_equal(b->seg_start[i + 1], s);
                assert_int_equal(b->targets[i], b->tokens[i + 1]);
            }
        }
    }
}

static void batches_follow_the_layout(void **state)
{
    (void)state;
    whet_chat_template t = template_named("chatml");
    whet_data_options opt = {.tok = qwen3_tok, .tmpl = &t, .add_eos = 1};
    whet_dataset *ds = open_ds(DATA "/chat.jsonl", &opt);
    whet_batcher *bt = batcher(ds, 2, 64, 0, 0, 1);
    assert_int_equal(whet_batcher_steps_per_epoch(bt), 2);
    whet_batch b;
    next(bt, &b);
    assert_int_equal(b.B, 2);
    assert_int_equal(b.T, 64);
    assert_int_equal(b.examples, 2);
    check_layout(&b);
    /* row 0 is example 0, padded */
    whet_example ex;
    get(ds, 0, &ex);
    size_t loss = 0;
    for (size_t k = 0; k < ex.n; k++) {
        assert_int_equal(b.tokens[k], ex.ids[k]);
        assert_int_equal(b.targets[k], k + 1 < ex.n && ex.loss[k + 1] ? ex.ids[k + 1] : -1);
        loss += k + 1 < ex.n && ex.loss[k + 1];
    }
    for (size_t k = ex.n; k < 64; k++) {
        assert_int_equal(b.tokens[k], 0);
        assert_int_equal(b.targets[k], -1);
        assert_int_equal(b.seg_start[k], (int32_t)k);
    }
    whet_example_free(&ex);
    get(ds, 1, &ex);
    for (size_t k = 0; k + 1 < ex.n && k + 1 < 64; k++)
        loss += ex.loss[k + 1];
    whet_example_free(&ex);
    assert_int_equal(b.loss_tokens, loss);
    assert_int_equal(b.epoch, 0);
    /* the third example, then the epoch wraps to the first */
    next(bt, &b);
    assert_int_equal(b.examples, 2);
    assert_int_equal(b.epoch, 0);
    whet_batcher_state s = whet_batcher_save(bt);
    assert_int_equal(s.epoch, 1);
    assert_int_equal(s.cursor, 1);
    whet_batcher_free(bt);

    /* truncation: T = 8 keeps 8 tokens of each and counts them */
    bt = batcher(ds, 3, 8, 0, 0, 1);
    next(bt, &b);
    assert_int_equal(b.truncated, 3);
    check_layout(&b);
    whet_batcher_free(bt);
    whet_dataset_close(ds);
}

static void batches_are_deterministic_and_resume_exactly(void **state)
{
    (void)state;
    whet_data_options opt = {.tok = gpt2_tok, .add_eos = 1};
    whet_dataset *ds = open_ds(DATA "/text.jsonl", &opt);
    for (int pack = 0; pack <= 1; pack++) {
        whet_batcher *a = batcher(ds, 2, 16, 1, pack, 42), *b = batcher(ds, 2, 16, 1, pack, 42);
        whet_batch x, y;
        size_t size = 2 * 16 * sizeof(int32_t);
        int32_t *saved = malloc(6 * size);
        whet_batcher_state mid = {0};
        for (int step = 0; step < 8; step++) {
            next(a, &x);
            next(b, &y);
            check_layout(&x);
            assert_memory_equal(x.tokens, y.tokens, size);
            assert_memory_equal(x.targets, y.targets, size);
            if (step == 2)
                mid = whet_batcher_save(a);
            if (step >= 3 && step < 6) {
                memcpy(saved + (step - 3) * 2 * 16, x.tokens, size);
            }
        }
        /* a fresh batcher restored at step 3's state gives steps 3..5 again */
        whet_batcher *c = batcher(ds, 2, 16, 1, pack, 7);
        whet_err e;
        assert_int_equal(whet_batcher_restore(c, &mid, &e), 0);
        for (int step = 3; step < 6; step++) {
            next(c, &x);
            assert_memory_equal(x.tokens, saved + (step - 3) * 2 * 16, size);
        }
        /* another seed: another order (3 examples: 6 orders; these differ) */
        whet_batcher *d = batcher(ds, 1, 16, 1, 0, 43);
        whet_batcher *d2 = batcher(ds, 1, 16, 1, 0, 42);
        int differs = 0;
        for (int step = 0; step < 6; step++) {
            next(d, &x);
            int32_t first = x.tokens[0];
            next(d2, &y);
            differs |= first != y.tokens[0];
        }
        assert_true(differs);
        free(saved);
        whet_batcher_free(a);
        whet_batcher_free(b);
        whet_batcher_free(c);
        whet_batcher_free(d);
        whet_batcher_free(d2);
    }
    whet_dataset_close(ds);
}

static void each_epoch_is_a_permutation(void **state)
{
    (void)state;
    /* 3 examples whose first tokens differ; B = 1 without packing: each
     * epoch shows each example exactly once */
    whet_data_options opt = {.tok = gpt2_tok};
    whet_dataset *ds = open_ds(DATA "/text.jsonl", &opt);
    int32_t firsts[3];
    for (size_t i = 0; i < 3; i++) {
        whet_example ex;
        get(ds, i, &ex);
        firsts[i] = ex.ids[0];
        whet_example_free(&ex);
    }
    whet_batcher *bt = batcher(ds, 1, 32, 1, 0, 5);
    for (int epoch = 0; epoch < 4; epoch++) {
        int seen[3] = {0};
        for (int k = 0; k < 3; k++) {
            whet_batch b;
            next(bt, &b);
            assert_int_equal(b.epoch, (size_t)epoch);
            for (int i = 0; i < 3; i++)
                seen[i] += b.tokens[0] == firsts[i];
        }
        assert_int_equal(seen[0], 1);
        assert_int_equal(seen[1], 1);
        assert_int_equal(seen[2], 1);
    }
    whet_batcher_free(bt);
    whet_dataset_close(ds);
}

static void packing_keeps_examples_apart(void **state)
{
    (void)state;
    whet_data_options opt = {.tok = gpt2_tok, .add_eos = 1};
    whet_dataset *ds = open_ds(DATA "/text.jsonl", &opt);
    size_t lengths[3];
    for (size_t i = 0; i < 3; i++) {
        whet_example ex;
        get(ds, i, &ex);
        lengths[i] = ex.n;
        whet_example_free(&ex);
    }
    /* lengths 11, 9, 3 (GPT-2, with EOS): T = 24 packs 0+1+3 in row 0 (23 tokens), then the next epoch */
    assert_int_equal(lengths[0], 11);
    assert_int_equal(lengths[1], 9);
    assert_int_equal(lengths[2], 3);
    whet_batcher *bt = batcher(ds, 2, 24, 0, 1, 0);
    whet_batch b;
    next(bt, &b);
    check_layout(&b);
    assert_int_equal(b.examples, 6);
    assert_int_equal(b.seg_start[0], 0);
    assert_int_equal(b.seg_start[11], 11);
    assert_int_equal(b.positions[11], 0);
    assert_int_equal(b.seg_start[20], 20);
    assert_int_equal(b.seg_start[23], 23); /* padding */
    assert_int_equal(b.targets[10], -1);   /* the EOS of example 0 predicts nothing across */
    /* row 1 begins with example 0 again (epoch 1) */
    assert_int_equal(b.seg_start[24], 0);
    assert_int_equal(b.tokens[24], b.tokens[0]);
    /* greedy: example 1 (9) does not fit after 11 + 9 + 3 in T = 22 */
    whet_batcher_free(bt);
    bt = batcher(ds, 2, 22, 0, 1, 0);
    next(bt, &b);
    check_layout(&b);
    assert_int_equal(b.examples, 4); /* row 0: 11 + 9; row 1: 3 + 11 (the next 9 waits) */
    assert_int_equal(b.seg_start[22 + 3], 3);
    whet_batcher_state s = whet_batcher_save(bt);
    assert_int_equal(s.epoch, 1);
    assert_int_equal(s.cursor, 1);
    whet_batcher_free(bt);
    whet_dataset_close(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(chat_masks_assistant_turns),
        cmocka_unit_test(prompt_completion_with_and_without_template),
        cmocka_unit_test(text_formats_train_everything),
        cmocka_unit_test(masks_on_every_template),
        cmocka_unit_test(check_reports_every_class),
        cmocka_unit_test(get_reports_positioned_errors),
        cmocka_unit_test(stats_count_tokens_and_rows),
        cmocka_unit_test(dedup_removes_normalised_duplicates),
        cmocka_unit_test(overlap_finds_shared_ngrams),
        cmocka_unit_test(overlap_leaves_out_templates_and_meta),
        cmocka_unit_test(straddling_token_is_trained),
        cmocka_unit_test(valid_split_is_stable),
        cmocka_unit_test(data_directories),
        cmocka_unit_test(streams_under_a_memory_budget),
        cmocka_unit_test(batches_follow_the_layout),
        cmocka_unit_test(batches_are_deterministic_and_resume_exactly),
        cmocka_unit_test(each_epoch_is_a_permutation),
        cmocka_unit_test(packing_keeps_examples_apart),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
