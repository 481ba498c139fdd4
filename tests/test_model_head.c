/* The training LM head (whet_model_nll_head_backward, model/backward.c)
 * against the two-pass path it replaces in training (whet_model_nll, then
 * whet_model_backward recomputing the logits chunk by chunk):
 *  - the same bits: NLL, log-sum-exps, cross-entropy state and every
 *    gradient (full fine-tuning in fp32 and with --compute bf16, LoRA) — both make the same GEMM and kernel
 *    calls per vocabulary chunk, one on kept logits, the other on recomputed
 *    ones — for a tied and an untied head, Llama and GPT-2, two micro-batches
 *    accumulated, the first packed, ignored targets, two vocabulary chunks
 *    (the last one partial) and two row blocks; with gradient checkpointing;
 *    for 1 and 3 threads, on every ISA table;
 *  - a vocabulary large enough that the row block shrinks (fewer than
 *    WHET_CE_ROWS rows);
 *  - a non-finite loss: reported, no dlogits formed, the gradients untouched;
 *  - no row with a target: the NLL alone; a backward with other targets or
 *    another loss scale than the head's: refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "model/lora.h"
#include "model/model.h"
#include "support/kernel_check.h"
#include "util/compute.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* each config in parentheses: one string made of several literals */
static const char *const CONFIGS[] = {
    ("{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":1100,\"hidden_size\":32,\"num_hidden_layers\":2,"
     "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"intermediate_size\":64,\"attention_bias\":true,"
     "\"tie_word_embeddings\":false,\"max_position_embeddings\":512}"),
    ("{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":1100,\"hidden_size\":32,\"num_hidden_layers\":2,"
     "\"num_attention_heads\":4,\"num_key_value_heads\":1,\"intermediate_size\":64,"
     "\"tie_word_embeddings\":true,\"max_position_embeddings\":512}"),
    ("{\"architectures\":[\"GPT2LMHeadModel\"],\"vocab_size\":1100,\"n_embd\":32,\"n_layer\":2,\"n_head\":4,"
     "\"n_positions\":512}"),
};
#define N_CONFIGS (sizeof CONFIGS / sizeof *CONFIGS)

/* a vocabulary over WHET_HEAD_LOGITS_FLOATS / WHET_CE_ROWS: the row block halves */
static const char BIG_VOCAB[] =
    ("{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":66000,\"hidden_size\":16,\"num_hidden_layers\":1,"
     "\"num_attention_heads\":2,\"num_key_value_heads\":1,\"intermediate_size\":32,"
     "\"tie_word_embeddings\":true,\"max_position_embeddings\":512}");

#define MICRO 2

/* Two micro-batches of B × T: the first packed (an example starts at row 80
 * of sequence 0), about one target in five ignored. */
typedef struct batches {
    size_t B, T;
    int32_t *tokens[MICRO], *targets[MICRO], *positions, *seg_start;
    size_t counted;
} batches;

static void make_batches(batches *b, size_t B, size_t T, size_t V, uint64_t seed)
{
    size_t BT = B * T;
    b->B = B, b->T = T, b->counted = 0;
    b->positions = malloc(BT * sizeof(int32_t)), b->seg_start = malloc(BT * sizeof(int32_t));
    kc_rng rng = kc_seed(seed);
    for (size_t r = 0; r < BT; r++) {
        size_t t = r % T;
        b->seg_start[r] = r < T && t >= 80 ? 80 : 0;
        b->positions[r] = (int32_t)t - b->seg_start[r];
    }
    for (int i = 0; i < MICRO; i++) {
        b->tokens[i] = malloc(BT * sizeof(int32_t)), b->targets[i] = malloc(BT * sizeof(int32_t));
        for (size_t r = 0; r < BT; r++) {
            b->tokens[i][r] = (int32_t)(kc_next(&rng) % V);
            b->targets[i][r] = kc_next(&rng) % 5 == 0 ? -1 : (int32_t)(kc_next(&rng) % V);
            b->counted += b->targets[i][r] >= 0;
        }
    }
}

static void free_batches(batches *b)
{
    for (int i = 0; i < MICRO; i++)
        free(b->tokens[i]), free(b->targets[i]);
    free(b->positions), free(b->seg_start);
}

/* What one run leaves: the gradients (full, or the adapter's), each micro-batch's
 * NLL and the last one's per-row LM head state. */
typedef struct outcome {
    float *grads;
    size_t n;
    double nll[MICRO];
    float *lse, *ce_max, *ce_target;
} outcome;

static void free_outcome(outcome *o)
{
    free(o->grads), free(o->lse), free(o->ce_max), free(o->ce_target);
}

static float *copy_floats(const float *x, size_t n)
{
    float *y = malloc(n * sizeof *y);
    memcpy(y, x, n * sizeof *y);
    return y;
}

/* One optimizer step's gradients as the trainer accumulates them, through
 * the fused head (fused) or the two-pass one. */
enum { FULL, LORA, FULL_BF16 }; /* what trains: FULL_BF16 is full fine-tuning with --compute bf16's shadows */

static void run(const whet_model_config *cfg, const whet_kernels *k, int threads, int what, int mode, int fused,
                const batches *b, outcome *out)
{
    int lora = what == LORA;
    whet_err e;
    whet_compute *c = whet_compute_create(k, threads);
    assert_non_null(c);
    whet_model *m;
    if (whet_model_init(&m, cfg, c, 7, &e))
        fail_msg("%s", e.msg);
    size_t BT = b->B * b->T;
    whet_model_grads *g = NULL;
    whet_lora *ad = NULL;
    if (lora) {
        whet_lora_options lo = {.rank = 4, .alpha = 8.0f, .dropout = 0.1f, .targets = WHET_LORA_ALL_TARGETS,
                                .seed = 3};
        ad = whet_lora_create(m, &lo, &e);
        assert_non_null(ad);
        /* B nonzero, so that every adapter gradient is */
        for (int id = 0; id < WHET_LIN_COUNT; id++)
            if (ad->B[id])
                for (size_t i = 0; i < ad->layers * ad->out[id] * ad->opt.rank; i++)
                    ad->B[id][i] = 0.01f * (float)((int)(i % 7) - 3);
        if (whet_lora_alloc_grads(ad, &e) || whet_lora_reserve(ad, BT, &e))
            fail_msg("%s", e.msg);
        whet_lora_zero_grads(ad);
        ad->training = 1;
    } else {
        whet_train_selection sel = {.full = 1};
        g = whet_model_grads_create(m, &sel, &e);
        assert_non_null(g);
        whet_model_grads_zero(g);
        if (what == FULL_BF16 && whet_model_compute_bf16(m, &e))
            fail_msg("%s", e.msg);
    }
    whet_acts *a = whet_acts_create(m, b->B, b->T, mode, &e);
    assert_non_null(a);
    float scale = (float)(1.0 / (double)b->counted);
    for (int i = 0; i < MICRO; i++) {
        if (ad)
            ad->step = (uint64_t)i;
        const int32_t *pos = i == 0 ? b->positions : NULL, *seg = i == 0 ? b->seg_start : NULL;
        if (whet_model_forward_packed(m, a, b->tokens[i], pos, seg, b->B, b->T, &e))
            fail_msg("%s", e.msg);
        int rc = fused ? whet_model_nll_head_backward(m, a, b->targets[i], scale, g, &out->nll[i], &e)
                       : whet_model_nll(m, a, b->targets[i], NULL, &out->nll[i], &e);
        if (rc || whet_model_backward(m, a, b->targets[i], scale, g, &e))
            fail_msg("%s", e.msg);
    }
    out->n = ad ? ad->floats : g->floats;
    out->grads = copy_floats(ad ? ad->grad_memory : g->memory, out->n);
    out->lse = copy_floats(a->lse, BT);
    out->ce_max = copy_floats(a->ce_max, BT);
    out->ce_target = copy_floats(a->ce_target, BT);
    whet_acts_free(a);
    whet_model_grads_free(g);
    whet_lora_free(m, ad);
    whet_model_free(m);
    whet_compute_destroy(c);
}

/* equal floats (NaN = NaN: the ignored rows' target logit) */
static int same_floats(const float *x, const float *y, size_t n, size_t *at)
{
    for (size_t i = 0; i < n; i++)
        if (!(x[i] == y[i] || (isnan(x[i]) && isnan(y[i]))) || signbit(x[i]) != signbit(y[i])) {
            *at = i;
            return 0;
        }
    return 1;
}

static void expect_same(const outcome *got, const outcome *want, size_t BT, const char *what)
{
    size_t at = 0;
    for (int i = 0; i < MICRO; i++)
        if (got->nll[i] != want->nll[i])
            fail_msg("%s: micro-batch %d's NLL %.17g, expected %.17g", what, i, got->nll[i], want->nll[i]);
    if (!same_floats(got->lse, want->lse, BT, &at))
        fail_msg("%s: lse of row %zu is %.9g, expected %.9g", what, at, got->lse[at], want->lse[at]);
    if (!same_floats(got->ce_max, want->ce_max, BT, &at) || !same_floats(got->ce_target, want->ce_target, BT, &at))
        fail_msg("%s: the cross-entropy state of row %zu differs", what, at);
    assert_int_equal(got->n, want->n);
    if (!same_floats(got->grads, want->grads, got->n, &at))
        fail_msg("%s: gradient float %zu of %zu is %.9g, expected %.9g", what, at, got->n, got->grads[at],
                 want->grads[at]);
}

static int max_threads(void)
{
    return getenv("EMULATOR") ? 1 : 3;
}

/* B = 2, T = 150: 300 rows, two row blocks (WHET_CE_ROWS, then 44); V = 1100: two chunks */
static void fused_equals_two_pass(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    whet_err e;
    for (size_t ci = 0; ci < N_CONFIGS; ci++) {
        whet_model_config cfg;
        if (whet_config_parse(&cfg, CONFIGS[ci], strlen(CONFIGS[ci]), "test config", &e))
            fail_msg("%s", e.msg);
        batches b;
        make_batches(&b, 2, 150, cfg.vocab, 100 + ci);
        for (int t = 0; t < nt; t++)
            for (int trains = FULL; trains <= FULL_BF16; trains++) {
                if (trains == FULL_BF16 && tables[t] != whet_kernels_best())
                    continue; /* the bf16 GEMMs' own bits are test_gemm's */
                static const char *const names[] = {"", " LoRA", " --compute bf16"};
                char what[160];
                outcome two, one;
                run(&cfg, tables[t], 1, trains, WHET_ACTS_KEEP, 0, &b, &two);
                run(&cfg, tables[t], 1, trains, WHET_ACTS_KEEP, 1, &b, &one);
                snprintf(what, sizeof what, "%s%s (%s head) on %s, 1 thread", cfg.info->name, names[trains],
                         cfg.tied ? "tied" : "untied", tables[t]->name);
                expect_same(&one, &two, b.B * b.T, what);
                free_outcome(&one);
                for (int threads = 2; threads <= max_threads(); threads++) {
                    int mode = threads == 2 ? WHET_ACTS_CHECKPOINT : WHET_ACTS_KEEP;
                    run(&cfg, tables[t], threads, trains, mode, 1, &b, &one);
                    snprintf(what, sizeof what, "%s%s (%s head) on %s, %d threads%s", cfg.info->name,
                             names[trains], cfg.tied ? "tied" : "untied", tables[t]->name, threads,
                             mode == WHET_ACTS_CHECKPOINT ? ", checkpointed" : "");
                    expect_same(&one, &two, b.B * b.T, what);
                    free_outcome(&one);
                }
                free_outcome(&two);
            }
        free_batches(&b);
    }
}

static void large_vocabulary_smaller_row_block(void **state)
{
    (void)state;
    whet_err e;
    whet_model_config cfg;
    if (whet_config_parse(&cfg, BIG_VOCAB, strlen(BIG_VOCAB), "test config", &e))
        fail_msg("%s", e.msg);
    batches b;
    make_batches(&b, 1, 300, cfg.vocab, 9);
    /* the row block the layout picks: halved once, so 300 rows make three blocks */
    whet_compute *c = whet_compute_create(whet_kernels_best(), 1);
    whet_model *m;
    if (whet_model_init(&m, &cfg, c, 1, &e))
        fail_msg("%s", e.msg);
    whet_acts *a = whet_acts_create(m, b.B, b.T, WHET_ACTS_KEEP, &e);
    assert_non_null(a);
    assert_int_equal(a->head_rows, WHET_CE_ROWS / 2);
    whet_memory_estimate me = whet_model_memory(&cfg, b.B, b.T, WHET_ACTS_KEEP);
    assert_true(me.activations_kept >= (WHET_CE_ROWS / 2) * cfg.vocab * sizeof(float));
    assert_int_equal(me.activations_kept, a->floats * sizeof(float));
    whet_acts_free(a);
    whet_model_free(m);
    whet_compute_destroy(c);
    outcome two, one;
    run(&cfg, whet_kernels_best(), 1, FULL, WHET_ACTS_KEEP, 0, &b, &two);
    run(&cfg, whet_kernels_best(), max_threads(), FULL, WHET_ACTS_KEEP, 1, &b, &one);
    expect_same(&one, &two, b.B * b.T, "vocabulary 33000");
    free_outcome(&one), free_outcome(&two);
    free_batches(&b);
}

typedef struct small_setup {
    whet_compute *c;
    whet_model *m;
    whet_model_grads *g;
    whet_acts *a;
    batches b;
} small_setup;

static void small_open(small_setup *s)
{
    whet_err e;
    whet_model_config cfg;
    if (whet_config_parse(&cfg, CONFIGS[0], strlen(CONFIGS[0]), "test config", &e))
        fail_msg("%s", e.msg);
    s->c = whet_compute_create(whet_kernels_best(), 1);
    if (whet_model_init(&s->m, &cfg, s->c, 2, &e))
        fail_msg("%s", e.msg);
    whet_train_selection sel = {.full = 1};
    s->g = whet_model_grads_create(s->m, &sel, &e);
    assert_non_null(s->g);
    whet_model_grads_zero(s->g);
    make_batches(&s->b, 2, 150, cfg.vocab, 5);
    s->a = whet_acts_create(s->m, 2, 150, WHET_ACTS_KEEP, &e);
    assert_non_null(s->a);
    if (whet_model_forward(s->m, s->a, s->b.tokens[0], 2, 150, &e))
        fail_msg("%s", e.msg);
}

static void small_close(small_setup *s)
{
    free_batches(&s->b);
    whet_acts_free(s->a);
    whet_model_grads_free(s->g);
    whet_model_free(s->m);
    whet_compute_destroy(s->c);
}

static int all_zero(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (x[i] != 0.0f)
            return 0;
    return 1;
}

/* A NaN in the head's weights: every row's NLL is NaN, so no dlogits are
 * formed and the gradients stay as they were (zero); the mean NLL says so. */
static void non_finite_loss_leaves_gradients(void **state)
{
    (void)state;
    small_setup s;
    small_open(&s);
    whet_err e;
    s.m->params.lm_head[5 * s.m->cfg.hidden + 3] = NAN;
    double nll = 0;
    assert_int_equal(whet_model_nll_head_backward(s.m, s.a, s.b.targets[0], 0.01f, s.g, &nll, &e), 0);
    assert_false(isfinite(nll));
    assert_int_equal(s.a->head_grad_ready, 0);
    assert_true(all_zero(s.g->memory, s.g->floats));
    small_close(&s);
}

/* Every target ignored: the NLL is 0 and no gradient is formed. */
static void no_targets_nll_only(void **state)
{
    (void)state;
    small_setup s;
    small_open(&s);
    whet_err e;
    for (size_t r = 0; r < 300; r++)
        s.b.targets[0][r] = -1;
    double nll = 1;
    assert_int_equal(whet_model_nll_head_backward(s.m, s.a, s.b.targets[0], 0.01f, s.g, &nll, &e), 0);
    assert_true(nll == 0.0);
    assert_int_equal(s.a->head_grad_ready, 0);
    assert_true(all_zero(s.g->memory, s.g->floats));
    small_close(&s);
}

/* The backward must take the head's targets and scale: it cannot redo the
 * head's gradient, already added to g. */
static void backward_refuses_other_scale(void **state)
{
    (void)state;
    small_setup s;
    small_open(&s);
    whet_err e;
    double nll;
    assert_int_equal(whet_model_nll_head_backward(s.m, s.a, s.b.targets[0], 0.01f, s.g, &nll, &e), 0);
    assert_int_equal(s.a->head_grad_ready, 1);
    assert_int_equal(whet_model_backward(s.m, s.a, s.b.targets[0], 0.02f, s.g, &e), -1);
    assert_non_null(strstr(e.msg, "differs from the 0.01 whet_model_nll_head_backward used"));
    small_close(&s);
}

/* Inference activations have no room for the block's logits. */
static void refuses_inference_acts(void **state)
{
    (void)state;
    small_setup s;
    small_open(&s);
    whet_err e;
    whet_acts *inference = whet_acts_create(s.m, 2, 150, WHET_ACTS_REUSE, &e);
    assert_non_null(inference);
    assert_int_equal(whet_model_forward(s.m, inference, s.b.tokens[0], 2, 150, &e), 0);
    double nll;
    assert_int_equal(whet_model_nll_head_backward(s.m, inference, s.b.targets[0], 0.01f, s.g, &nll, &e), -1);
    assert_non_null(strstr(e.msg, "needs activations made for training"));
    whet_acts_free(inference);
    small_close(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fused_equals_two_pass),
        cmocka_unit_test(large_vocabulary_smaller_row_block),
        cmocka_unit_test(non_finite_loss_leaves_gradients),
        cmocka_unit_test(no_targets_nll_only),
        cmocka_unit_test(backward_refuses_other_scale),
        cmocka_unit_test(refuses_inference_acts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
