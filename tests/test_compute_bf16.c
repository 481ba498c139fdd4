/* --compute bf16 for full fine-tuning: bf16 shadows of the projections and
 * the LM head beside fp32 masters (model/linear.c), refreshed by the
 * optimizer (train/optim.c) and on resume (train/trainer.c). On random
 * models wide enough that rows and columns split across 2 and 3 threads
 * (400 rows, C = 64, F = 128, V = 1100: two vocabulary chunks), every ISA
 * table this CPU runs (under an emulator: 96 rows, one thread, the first
 * config, no scalar table):
 *  - where the GEMMs go: a counting kernel table sees every projection and
 *    head GEMM — forward (NT), input gradient (NN) and weight gradient (TN,
 *    B given as fp32) — on gemm_bf16, none on sgemm; with fp32 compute the
 *    reverse;
 *  - the gradients against fp32's: each trained tensor within 1e-2 norm-wise
 *    (below), the loss within 1e-3, and the projections' and the head's
 *    gradients not bit-identical to fp32's (bf16 operands on every path: the
 *    convert and scalar kernels round B too);
 *  - the same bits for 1, 2 and 3 threads: gradients and weights after two
 *    trainer steps (every table but the scalar one, whose sums never split);
 *  - (on the best table) the shadows after a step are the rounding of the
 *    updated masters, and a second step gives the same bits as one after a
 *    rebuild of every shadow from scratch, but not as one on the stale
 *    shadows (so the check can fail); training the last layer only, every
 *    shadow, trained or frozen, is its master's rounding;
 *  - a trainer loading a checkpoint refreshes the shadows: its next step is
 *    the uninterrupted run's;
 *  - the plan counts the shadows, LoRA with --compute bf16 holds a bf16 base,
 *    and a frozen bf16 base and shadows refuse each other.
 *
 * The tolerance, 1e-2 ≈ 5u: bf16 keeps 8 significant bits (unit roundoff
 * u = 2^-9 ≈ 0.002). A product of two rounded operands is off by up to 2u,
 * in random directions from term to term, so a GEMM's result is off by about
 * u norm-wise, more where its sum cancels; the forward's errors then reach
 * the backward's inputs through two layers and the head. Measured: at most
 * 0.005 on every table (w_gate, w_down), the loss within 5e-6 relative. A
 * stale or wrong weight, or a GEMM reading fp32 as bf16, is off by O(1).
 * Tensors whose true gradient is zero but for rounding (the key bias) are
 * measured against 1% of the whole gradient instead of their own norm. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "model/lora.h"
#include "model/model.h"
#include "support/kernel_check.h"
#include "train/trainer.h"
#include "util/compute.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOLERANCE 1e-2
#define LOSS_TOLERANCE 1e-3

/* each config in parentheses: one string made of several literals */
static const char *const CONFIGS[] = {
    ("{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":1100,\"hidden_size\":64,\"num_hidden_layers\":2,"
     "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"intermediate_size\":128,"
     "\"tie_word_embeddings\":true,\"max_position_embeddings\":512}"),
    ("{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":1100,\"hidden_size\":64,\"num_hidden_layers\":2,"
     "\"num_attention_heads\":4,\"num_key_value_heads\":1,\"intermediate_size\":128,\"attention_bias\":true,"
     "\"mlp_bias\":true,\"tie_word_embeddings\":false,\"max_position_embeddings\":512}"),
};
#define N_CONFIGS (sizeof CONFIGS / sizeof *CONFIGS)

enum { B = 2, T_MAX = 200, VOCAB = 1100 };

static int emulated(void)
{
    const char *emulator = getenv("EMULATOR");
    return emulator && *emulator;
}

/* Under an emulator (check-aarch64 sets EMULATOR) one thread only. */
static int max_threads(void)
{
    return emulated() ? 1 : 3;
}

/* The kernel tables to run: every one, but under an emulator not the scalar
 * table when there is another (the host's run checks it; emulated, it takes
 * minutes). Returns the first index to use; *count the end. */
static int first_table(const whet_kernels *tables[WHET_ISA_COUNT], int *count)
{
    *count = kc_tables(tables);
    return emulated() && *count > 1 ? 1 : 0;
}

/* Tokens per sequence: 200 (400 rows, split across threads), or 48 under an
 * emulator, which runs one thread. */
static size_t seq_len(void)
{
    return emulated() ? 48 : T_MAX;
}

/* Configs to run: under an emulator the first only. */
static size_t config_count(void)
{
    return emulated() ? 1 : N_CONFIGS;
}

static whet_model_config config(size_t i)
{
    whet_model_config cfg;
    whet_err e;
    if (whet_config_parse(&cfg, CONFIGS[i], strlen(CONFIGS[i]), "test config", &e))
        fail_msg("%s", e.msg);
    return cfg;
}

/* Two sequences, the first packing two examples; one target in five skipped. */
typedef struct batch_data {
    int32_t tokens[B * T_MAX], targets[B * T_MAX], positions[B * T_MAX], seg_start[B * T_MAX];
    whet_batch b;
} batch_data;

static void make_batch(batch_data *d, uint64_t seed)
{
    kc_rng rng = kc_seed(seed);
    size_t T = seq_len();
    d->b = (whet_batch){.B = B, .T = T, .tokens = d->tokens, .targets = d->targets, .positions = d->positions,
                        .seg_start = d->seg_start};
    for (size_t r = 0; r < B * T; r++) {
        size_t t = r % T;
        d->seg_start[r] = r < T && t >= 2 * T / 5 ? (int32_t)(2 * T / 5) : 0;
        d->positions[r] = (int32_t)t - d->seg_start[r];
        d->tokens[r] = (int32_t)(kc_next(&rng) % VOCAB);
        d->targets[r] = kc_next(&rng) % 5 == 0 ? -1 : (int32_t)(kc_next(&rng) % VOCAB);
        d->b.loss_tokens += d->targets[r] >= 0;
    }
}

/* ---- a kernel table that counts the GEMMs ------------------------------------ */

static const whet_kernels *counted_real;
static atomic_size_t sgemm_calls, bf16_calls[3][2]; /* [layout][b_f32] */

static void counting_sgemm(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *ws)
{
    atomic_fetch_add(&sgemm_calls, 1);
    counted_real->sgemm(g, m0, m1, n0, n1, ws);
}

static void counting_gemm_bf16(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *ws)
{
    atomic_fetch_add(&bf16_calls[g->layout][g->b_f32 ? 1 : 0], 1);
    counted_real->gemm_bf16(g, m0, m1, n0, n1, ws);
}

static whet_kernels counting_table(const whet_kernels *real)
{
    counted_real = real;
    whet_kernels k = *real;
    k.sgemm = counting_sgemm;
    k.gemm_bf16 = counting_gemm_bf16;
    atomic_store(&sgemm_calls, 0);
    for (int l = 0; l < 3; l++)
        atomic_store(&bf16_calls[l][0], 0), atomic_store(&bf16_calls[l][1], 0);
    return k;
}

/* ---- gradients of one batch ---------------------------------------------------- */

typedef struct grads_run {
    whet_model *m;
    whet_model_grads *g;
    double loss;
} grads_run;

static grads_run run_gradients(const whet_kernels *k, int threads, size_t cfg_i, int bf16, const batch_data *d,
                               whet_compute **c)
{
    whet_err e;
    whet_model_config cfg = config(cfg_i);
    grads_run r = {0};
    *c = whet_compute_create(k, threads);
    assert_non_null(*c);
    if (whet_model_init(&r.m, &cfg, *c, 5, &e) || (bf16 && whet_model_compute_bf16(r.m, &e)))
        fail_msg("%s", e.msg);
    whet_train_selection sel = {.full = 1};
    r.g = whet_model_grads_create(r.m, &sel, &e);
    assert_non_null(r.g);
    whet_model_grads_zero(r.g);
    whet_acts *a = whet_acts_create(r.m, B, seq_len(), WHET_ACTS_KEEP, &e);
    assert_non_null(a);
    if (whet_model_forward_packed(r.m, a, d->tokens, d->positions, d->seg_start, B, seq_len(), &e) ||
        whet_model_nll(r.m, a, d->targets, NULL, &r.loss, &e) ||
        whet_model_backward(r.m, a, d->targets, 1.0f / (float)d->b.loss_tokens, r.g, &e))
        fail_msg("%s", e.msg);
    whet_acts_free(a);
    return r;
}

static void free_run(grads_run *r, whet_compute *c)
{
    whet_model_grads_free(r->g);
    whet_model_free(r->m);
    whet_compute_destroy(c);
}

static int is_matmul(const char *name)
{
    static const char *const names[] = {"wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down", "lm_head", "wte"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(name, names[i]) == 0)
            return 1;
    return 0;
}

static double sum_sq(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return s;
}

static void gemms_go_to_bf16(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt, t0 = first_table(tables, &nt);
    batch_data d;
    make_batch(&d, 11);
    for (int t = t0; t < nt; t++)
        for (int bf16 = 0; bf16 <= 1; bf16++) {
            whet_kernels k = counting_table(tables[t]);
            whet_compute *c;
            grads_run r = run_gradients(&k, 1, 0, bf16, &d, &c);
            size_t sg = atomic_load(&sgemm_calls), nt_calls = atomic_load(&bf16_calls[WHET_GEMM_NT][0]),
                   nn_calls = atomic_load(&bf16_calls[WHET_GEMM_NN][0]),
                   tn_calls = atomic_load(&bf16_calls[WHET_GEMM_TN][1]);
            size_t other = atomic_load(&bf16_calls[WHET_GEMM_NT][1]) + atomic_load(&bf16_calls[WHET_GEMM_NN][1]) +
                           atomic_load(&bf16_calls[WHET_GEMM_TN][0]);
            if (bf16) {
                /* 2 layers × 7 projections, forward and recomputed nothing else; the head in 2 vocabulary chunks */
                if (sg != 0 || nt_calls < 14 + 2 || nn_calls < 14 + 2 || tn_calls < 14 + 2 || other != 0)
                    fail_msg("%s, --compute bf16: %zu sgemm calls, gemm_bf16 NT %zu, NN %zu, TN (B fp32) %zu, other "
                             "%zu", tables[t]->name, sg, nt_calls, nn_calls, tn_calls, other);
            } else if (sg < 3 * (14 + 2) || nt_calls + nn_calls + tn_calls + other != 0) {
                fail_msg("%s, fp32: %zu sgemm calls, %zu gemm_bf16", tables[t]->name, sg,
                         nt_calls + nn_calls + tn_calls + other);
            }
            free_run(&r, c);
        }
}

static void gradients_close_to_fp32(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt, t0 = first_table(tables, &nt);
    batch_data d;
    make_batch(&d, 12);
    for (size_t ci = 0; ci < config_count(); ci++)
        for (int t = t0; t < nt; t++) {
            whet_compute *c32, *c16;
            grads_run f = run_gradients(tables[t], 1, ci, 0, &d, &c32);
            grads_run h = run_gradients(tables[t], 1, ci, 1, &d, &c16);
            if (fabs(h.loss - f.loss) > LOSS_TOLERANCE * f.loss)
                fail_msg("config %zu on %s: loss %.6f with bf16, %.6f with fp32", ci, tables[t]->name, h.loss,
                         f.loss);
            whet_grad_range rf[WHET_MAX_GRAD_RANGES], rh[WHET_MAX_GRAD_RANGES];
            size_t n = whet_model_grads_ranges(f.m, f.g, rf, WHET_MAX_GRAD_RANGES);
            assert_int_equal(whet_model_grads_ranges(h.m, h.g, rh, WHET_MAX_GRAD_RANGES), n);
            double total = 0, worst = 0;
            for (size_t i = 0; i < n; i++)
                total += sum_sq(rf[i].grad, rf[i].n);
            total = sqrt(total);
            const char *worst_name = "";
            for (size_t i = 0; i < n; i++) {
                double diff = 0, norm = sqrt(sum_sq(rf[i].grad, rf[i].n));
                for (size_t j = 0; j < rf[i].n; j++) {
                    double dd = (double)rh[i].grad[j] - rf[i].grad[j];
                    diff += dd * dd;
                }
                double rel = sqrt(diff) / (norm > 0.01 * total ? norm : 0.01 * total);
                if (rel > worst)
                    worst = rel, worst_name = rf[i].name;
                if (rel > TOLERANCE)
                    fail_msg("config %zu on %s: %s's gradient is %.4f off fp32's norm-wise (tolerance %g)", ci,
                             tables[t]->name, rf[i].name, rel, TOLERANCE);
                if (is_matmul(rf[i].name) && memcmp(rh[i].grad, rf[i].grad, rf[i].n * sizeof(float)) == 0)
                    fail_msg("config %zu on %s: %s's gradient is fp32's bit for bit: the bf16 GEMM did not run", ci,
                             tables[t]->name, rf[i].name);
            }
            print_message("config %zu, %s (gemm_bf16: %s): loss %.6f vs %.6f, worst gradient %s %.4f\n", ci,
                          tables[t]->name, tables[t]->gemm_bf16_kind, h.loss, f.loss, worst_name, worst);
            free_run(&f, c32);
            free_run(&h, c16);
        }
}

/* ---- trainer steps ------------------------------------------------------------- */

static whet_trainer_options trainer_options(void)
{
    whet_trainer_options o = {
        .sel = {.full = 1},
        .compute_bf16 = 1,
        .batch_size = B, .seq_len = seq_len(), .grad_accum = 1,
        .adamw = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01, .max_grad_norm = 1},
        .schedule = {.kind = WHET_LR_CONSTANT, .lr = 3e-3, .total_steps = 10},
    };
    return o;
}

typedef struct trained {
    whet_compute *c;
    whet_model *m;
    whet_trainer *t;
} trained;

static trained make_trainer_selecting(const whet_kernels *k, int threads, size_t cfg_i, const whet_train_selection *sel)
{
    whet_err e;
    whet_model_config cfg = config(cfg_i);
    trained r;
    r.c = whet_compute_create(k, threads);
    assert_non_null(r.c);
    whet_trainer_options o = trainer_options();
    if (sel)
        o.sel = *sel;
    if (whet_model_init(&r.m, &cfg, r.c, 7, &e) || whet_trainer_create(&r.t, r.m, &o, &e))
        fail_msg("%s", e.msg);
    return r;
}

static trained make_trainer(const whet_kernels *k, int threads, size_t cfg_i)
{
    return make_trainer_selecting(k, threads, cfg_i, NULL);
}

/* Every shadow of the model, trained or frozen, against the rounding of its
 * whole master (each projection over all layers, and the head). */
static void assert_shadows_current(whet_model *m, const char *when)
{
    const whet_model_params *p = &m->params;
    const whet_model_config *c = &m->cfg;
    size_t L = c->layers, C = c->hidden, F = c->ffn, QD = c->heads * c->head_dim, KVD = c->kv_heads * c->head_dim;
    const struct {
        const char *name;
        const float *w;
        size_t n;
    } masters[] = {{"wq", p->wq, L * QD * C},     {"wk", p->wk, L * KVD * C},       {"wv", p->wv, L * KVD * C},
                   {"wo", p->wo, L * C * QD},     {"w_gate", p->w_gate, L * F * C}, {"w_up", p->w_up, L * F * C},
                   {"w_down", p->w_down, L * C * F}, {"lm_head", p->lm_head, c->vocab * C}};
    for (size_t i = 0; i < sizeof masters / sizeof *masters; i++) {
        const whet_bf16 *shadow = whet_model_bf16_shadow(m, masters[i].w, masters[i].n);
        if (!shadow)
            fail_msg("%s: %s has no shadow", when, masters[i].name);
        whet_bf16 *want = malloc(masters[i].n * sizeof *want);
        m->compute->kernels->f32_to_bf16(want, masters[i].w, masters[i].n);
        if (memcmp(want, shadow, masters[i].n * sizeof *want) != 0)
            fail_msg("%s: %s's shadow is not its master", when, masters[i].name);
        free(want);
    }
}

static void step(trained *r, const batch_data *d)
{
    whet_step_stats s;
    whet_err e;
    if (whet_trainer_step(r->t, &d->b, 1, &s, &e))
        fail_msg("%s", e.msg);
    assert_false(s.skipped);
}

static void free_trained(trained *r)
{
    whet_trainer_free(r->t);
    whet_model_free(r->m);
    whet_compute_destroy(r->c);
}

/* The shadows of the trained tensors, in order, as one copy. */
static whet_bf16 *copy_shadows(const whet_trainer *t, size_t *count)
{
    size_t n = 0;
    for (size_t i = 0; i < t->n_tensors; i++)
        n += t->tensors[i].shadow ? t->tensors[i].n : 0;
    whet_bf16 *copy = malloc((n ? n : 1) * sizeof *copy), *at = copy;
    for (size_t i = 0; i < t->n_tensors; i++)
        if (t->tensors[i].shadow) {
            memcpy(at, t->tensors[i].shadow, t->tensors[i].n * sizeof *at);
            at += t->tensors[i].n;
        }
    *count = n;
    return copy;
}

static void restore_shadows(whet_trainer *t, const whet_bf16 *copy)
{
    for (size_t i = 0; i < t->n_tensors; i++)
        if (t->tensors[i].shadow) {
            memcpy(t->tensors[i].shadow, copy, t->tensors[i].n * sizeof *copy);
            copy += t->tensors[i].n;
        }
}

static void assert_same_floats(const float *a, const float *b, size_t n, const char *what)
{
    if (memcmp(a, b, n * sizeof *a) != 0)
        fail_msg("%s differ", what);
}

static void steps_thread_invariant(void **state)
{
    (void)state;
    if (max_threads() == 1)
        skip();
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    batch_data d1, d2;
    make_batch(&d1, 21), make_batch(&d2, 22);
    for (size_t ci = 0; ci < N_CONFIGS; ci++)
        for (int t = 1; t < nt; t++) { /* not the scalar table: slow, and its sums never split */
            trained ref = make_trainer(tables[t], 1, ci);
            step(&ref, &d1), step(&ref, &d2);
            for (int threads = 2; threads <= 3; threads++) {
                trained r = make_trainer(tables[t], threads, ci);
                step(&r, &d1), step(&r, &d2);
                char what[96];
                snprintf(what, sizeof what, "config %zu on %s, %d threads: the gradients", ci, tables[t]->name,
                         threads);
                assert_int_equal(r.t->grads->floats, ref.t->grads->floats);
                assert_same_floats(r.t->grads->memory, ref.t->grads->memory, ref.t->grads->floats, what);
                snprintf(what, sizeof what, "config %zu on %s, %d threads: the weights", ci, tables[t]->name,
                         threads);
                assert_same_floats(r.m->params_memory, ref.m->params_memory, ref.m->num_params, what);
                free_trained(&r);
            }
            free_trained(&ref);
        }
}

static void shadows_follow_steps(void **state)
{
    (void)state;
    batch_data d1, d2;
    make_batch(&d1, 31), make_batch(&d2, 32);
    const whet_kernels *k = whet_kernels_best();
    for (size_t ci = 0; ci < config_count(); ci++) {
        /* a: two steps, the optimizer refreshing the shadows */
        trained a = make_trainer(k, 2, ci);
        size_t shadowed = 0, before_n, after_n;
        for (size_t i = 0; i < a.t->n_tensors; i++)
            shadowed += a.t->tensors[i].shadow != NULL;
        /* every projection and the head (tied: wte) */
        assert_int_equal(shadowed, 7 + 1);
        whet_bf16 *before = copy_shadows(a.t, &before_n);
        step(&a, &d1);
        whet_bf16 *after = copy_shadows(a.t, &after_n);
        assert_int_equal(before_n, after_n);
        assert_true(memcmp(before, after, before_n * sizeof *before) != 0);
        /* each shadow is the rounding of its updated master */
        for (size_t i = 0; i < a.t->n_tensors; i++) {
            const whet_param_tensor *p = &a.t->tensors[i];
            if (!p->shadow)
                continue;
            whet_bf16 *want = malloc(p->n * sizeof *want);
            k->f32_to_bf16(want, p->param, p->n);
            if (memcmp(want, p->shadow, p->n * sizeof *want) != 0)
                fail_msg("config %zu on %s: %s's shadow is not its master after the step", ci, k->name, p->name);
            free(want);
        }
        step(&a, &d2);

        /* b: the same, every shadow rebuilt from scratch before the second step */
        trained b = make_trainer(k, 2, ci);
        step(&b, &d1);
        whet_model_bf16_refresh(b.m);
        step(&b, &d2);
        assert_same_floats(b.t->grads->memory, a.t->grads->memory, a.t->grads->floats,
                           "the second step's gradients after a rebuild of the shadows");
        assert_same_floats(b.m->params_memory, a.m->params_memory, a.m->num_params,
                           "the weights after a rebuild of the shadows");

        /* c: the second step on the stale shadows (what a missing refresh gives) is not a's */
        trained c = make_trainer(k, 2, ci);
        step(&c, &d1);
        restore_shadows(c.t, before);
        step(&c, &d2);
        if (memcmp(c.t->grads->memory, a.t->grads->memory, a.t->grads->floats * sizeof(float)) == 0)
            fail_msg("config %zu on %s: stale shadows gave the same gradients: the check cannot fail", ci,
                     k->name);
        free(before), free(after);
        free_trained(&a), free_trained(&b), free_trained(&c);
    }

    /* the last layer and the head train (tied: frozen with the embeddings, untied: trained); the rest
     * keeps its shadows from the start */
    for (size_t ci = emulated() ? 1 : 0; ci < N_CONFIGS; ci++) { /* emulated: the untied head, which trains */
        whet_train_selection sel = {.full = 1, .train_layers = 1, .freeze_embeddings = 1};
        trained r = make_trainer_selecting(k, 2, ci, &sel);
        size_t shadowed = 0;
        for (size_t i = 0; i < r.t->n_tensors; i++)
            shadowed += r.t->tensors[i].shadow != NULL;
        assert_int_equal(shadowed, ci == 0 ? 7 : 7 + 1);
        assert_shadows_current(r.m, "--train-layers 1, at the start");
        step(&r, &d1), step(&r, &d2);
        assert_shadows_current(r.m, "--train-layers 1, after two steps");
        free_trained(&r);
    }
}

static void resume_refreshes(void **state)
{
    (void)state;
    char dir[] = "/tmp/whet_compute_bf16.XXXXXX";
    assert_non_null(mkdtemp(dir));
    batch_data d1, d2;
    make_batch(&d1, 41), make_batch(&d2, 42);
    const whet_kernels *k = whet_kernels_best();
    whet_err e;
    trained a = make_trainer(k, 2, 0);
    step(&a, &d1);
    whet_run_state st = {.step = 1, .adam_t = 1, .best_valid_loss = INFINITY};
    char saved[1300];
    if (whet_trainer_save(a.t, &st, dir, 2, saved, sizeof saved, &e))
        fail_msg("%s", e.msg);
    step(&a, &d2);

    trained b = make_trainer(k, 2, 0);
    whet_run_state loaded;
    if (whet_trainer_load(b.t, saved, &loaded, &e))
        fail_msg("%s", e.msg);
    step(&b, &d2);
    assert_same_floats(b.t->grads->memory, a.t->grads->memory, a.t->grads->floats,
                       "the step after loading a checkpoint: the gradients");
    assert_same_floats(b.m->params_memory, a.m->params_memory, a.m->num_params,
                       "the step after loading a checkpoint: the weights");
    free_trained(&a), free_trained(&b);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ---- the plan, LoRA, refusals -------------------------------------------------- */

static void plan_and_lora(void **state)
{
    (void)state;
    whet_err e;
    whet_model_config cfg = config(1);
    whet_compute *c = whet_compute_create(whet_kernels_best(), 1);
    whet_model *m;
    if (whet_model_init(&m, &cfg, c, 3, &e))
        fail_msg("%s", e.msg);
    size_t C = cfg.hidden, F = cfg.ffn, L = cfg.layers, QD = cfg.heads * cfg.head_dim,
           KVD = cfg.kv_heads * cfg.head_dim, V = cfg.vocab;
    size_t matmul = L * (2 * C * QD + 2 * C * KVD + 3 * C * F) + V * C; /* untied: the head once */
    whet_trainer_options o = trainer_options();
    whet_train_plan p32, p16;
    o.compute_bf16 = 0;
    assert_int_equal(whet_trainer_plan(m, &o, &p32, &e), 0);
    o.compute_bf16 = 1;
    assert_int_equal(whet_trainer_plan(m, &o, &p16, &e), 0);
    assert_int_equal(p16.weights - p32.weights, 2 * matmul);
    whet_trainer *t;
    if (whet_trainer_create(&t, m, &o, &e))
        fail_msg("%s", e.msg);
    size_t held = whet_model_base_bf16_bytes(m);
    assert_true(held >= 2 * matmul && held < 2 * matmul + 4096);
    /* a frozen bf16 base cannot come on top of trained shadows */
    assert_int_equal(whet_model_base_to_bf16(m, &e), -1);
    assert_non_null(strstr(e.msg, "shadows"));
    whet_trainer_free(t);
    whet_model_free(m);

    /* LoRA: --compute bf16 holds the base in bf16 (fp32 copies released) */
    if (whet_model_init(&m, &cfg, c, 3, &e))
        fail_msg("%s", e.msg);
    size_t fp32_before = m->num_params;
    o.sel.full = 0;
    o.lora = (whet_lora_options){.rank = 4, .alpha = 8, .targets = WHET_LORA_ALL_TARGETS, .seed = 1};
    if (whet_trainer_create(&t, m, &o, &e))
        fail_msg("%s", e.msg);
    assert_true(m->num_params + matmul == fp32_before);
    assert_non_null(m->base_bf16);
    assert_null(whet_model_bf16_shadow(m, m->params.wte, 1));
    /* and shadows cannot come on top of a frozen base */
    assert_int_equal(whet_model_compute_bf16(m, &e), -1);
    whet_trainer_free(t);
    whet_model_free(m);
    whet_compute_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gemms_go_to_bf16),       cmocka_unit_test(gradients_close_to_fp32),
        cmocka_unit_test(steps_thread_invariant), cmocka_unit_test(shadows_follow_steps),
        cmocka_unit_test(resume_refreshes),       cmocka_unit_test(plan_and_lora),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
