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

/* The trained tokens, run by run, decoded and joined with "|". */
static char *trained_runs(const whet_tokenizer *t, const whet_example *ex)
{
    size_t cap = 4096, len = 0;
    char *out = calloc(1, cap);
    for (size_t i = 0; i < ex->n;) {
        if (!ex->loss[i]) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < ex->n && ex->loss[j])
            j++;
        char *run = decode(t, ex->ids + i, j - i);
        size_t need = len + strlen(run) + 2;
        if (need > cap)
            out = realloc(out, cap = need * 2);
        len += (size_t)sprintf(out + len, "%s%s", len ? "|" : "", run);
        free(run);
        i = j;
    }
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
        cmocka_unit_test(batches_follow_the_layout),
        cmocka_unit_test(batches_are_deterministic_and_resume_exactly),
        cmocka_unit_test(each_epoch_is_a_permutation),
        cmocka_unit_test(packing_keeps_examples_apart),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
