/* The backward pass (model/backward.c) against independent references:
 *  - PyTorch float64 autograd gradients of every parameter
 *    (tests/ref/make_grad_goldens.py → tests/data/grads/<case>.safetensors):
 *    Llama (untied), Llama with llama3 RoPE (tied, F16 weights), Mistral
 *    (BF16 weights), Qwen2 (q/k/v biases), Qwen3 (q/k norm) and GPT-2
 *    (LayerNorm, learned positions, GELU) — the last two packed, several
 *    examples per sequence — and llama_bias (o_proj and MLP biases, tied head,
 *    two vocabulary chunks and two row blocks of the fused LM head). Each
 *    tensor within 1e-4 norm-wise, ‖whet − ref‖ / ‖ref‖, the loss within 1e-5;
 *  - central finite differences of whet_model_nll's mean loss, per tensor
 *    kind, along a random ±1 direction over the whole tensor and on its
 *    largest-gradient element;
 *  - attention's query rows split into parts of 5 (whet_acts_create_parts):
 *    the same loss bits and gradients within the same 1e-4;
 *  - bit-identical gradients for 1, 2 and 3 threads on every ISA table, with
 *    and without gradient checkpointing and attention's parts, on the golden
 *    models and on wider random ones whose rows and columns really split
 *    across threads;
 *  - the training selection: frozen views NULL, the last N layers' gradients
 *    equal to the full ones, LoRA-only without base gradients. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "io/safetensors.h"
#include "model/model.h"
#include "support/kernel_check.h"
#include "util/compute.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct grad_case {
    const char *name, *model_dir;
} grad_case;

static const grad_case CASES[] = {
    {"llama", "tests/data/models/llama"},     {"llama3_rope", "tests/data/models/llama3_rope"},
    {"mistral", "tests/data/models/mistral"}, {"qwen2", "tests/data/models/qwen2"},
    {"qwen3", "tests/data/models/qwen3"},     {"gpt2", "tests/data/models/gpt2"},
    {"llama_bias", "tests/data/grads/llama_bias"},
};
#define N_CASES (sizeof CASES / sizeof *CASES)

/* whet_model_params' views by name */
typedef struct view_desc {
    const char *name;
    size_t offset;
} view_desc;

#define VIEW(v) {#v, offsetof(whet_model_params, v)}
static const view_desc VIEWS[] = {
    VIEW(wte),   VIEW(wpe),    VIEW(ln1_w),  VIEW(ln1_b),  VIEW(wq),     VIEW(bq),   VIEW(wk),
    VIEW(bk),    VIEW(wv),     VIEW(bv),     VIEW(q_norm), VIEW(k_norm), VIEW(wo),   VIEW(bo),
    VIEW(ln2_w), VIEW(ln2_b),  VIEW(w_gate), VIEW(b_gate), VIEW(w_up),   VIEW(b_up), VIEW(w_down),
    VIEW(b_down), VIEW(lnf_w), VIEW(lnf_b),  VIEW(lm_head),
};
#undef VIEW
#define N_VIEWS (sizeof VIEWS / sizeof *VIEWS)

static float *view_get(const whet_model_params *p, size_t i)
{
    return *(float *const *)((const char *)p + VIEWS[i].offset);
}

typedef struct golden {
    size_t B, T;
    int32_t *tokens, *targets, *positions, *seg_start;
    int packed;
    double loss;
    size_t n_targets;
    whet_safetensors *st;
} golden;

static int32_t *load_ints(whet_safetensors *st, const char *name, size_t *B, size_t *T)
{
    const whet_st_tensor *t = whet_st_find(st, name);
    assert_non_null(t);
    assert_int_equal(t->dtype, WHET_ST_I32);
    assert_int_equal(t->rank, 2);
    *B = (size_t)t->shape[0], *T = (size_t)t->shape[1];
    int32_t *x = malloc(t->nbytes);
    memcpy(x, t->data, t->nbytes);
    return x;
}

static void load_golden(const grad_case *gc, golden *g)
{
    char path[256];
    whet_err e;
    snprintf(path, sizeof path, "tests/data/grads/%s.safetensors", gc->name);
    if (whet_st_open(&g->st, path, &e))
        fail_msg("%s", e.msg);
    g->tokens = load_ints(g->st, "tokens", &g->B, &g->T);
    g->targets = load_ints(g->st, "targets", &g->B, &g->T);
    g->positions = load_ints(g->st, "positions", &g->B, &g->T);
    g->seg_start = load_ints(g->st, "seg_start", &g->B, &g->T);
    g->packed = 0, g->n_targets = 0;
    for (size_t r = 0; r < g->B * g->T; r++) {
        g->packed |= g->seg_start[r] != 0;
        g->n_targets += g->targets[r] >= 0;
    }
    const whet_st_tensor *loss = whet_st_find(g->st, "loss");
    assert_non_null(loss);
    assert_int_equal(loss->dtype, WHET_ST_F64);
    memcpy(&g->loss, loss->data, sizeof g->loss);
}

static void free_golden(golden *g)
{
    free(g->tokens), free(g->targets), free(g->positions), free(g->seg_start);
    whet_st_close(g->st);
}

static whet_model *load_model(const grad_case *gc, whet_compute *c)
{
    whet_model *m;
    whet_err e;
    if (whet_model_load(&m, gc->model_dir, c, &e))
        fail_msg("%s", e.msg);
    return m;
}

/* forward (packed when the golden is), NLL; returns the mean NLL */
static double forward_nll(whet_model *m, whet_acts *a, const golden *g)
{
    whet_err e;
    int rc = g->packed ? whet_model_forward_packed(m, a, g->tokens, g->positions, g->seg_start, g->B, g->T, &e)
                       : whet_model_forward(m, a, g->tokens, g->B, g->T, &e);
    if (rc)
        fail_msg("%s", e.msg);
    double nll;
    if (whet_model_nll(m, a, g->targets, NULL, &nll, &e))
        fail_msg("%s", e.msg);
    return nll;
}

/* Attention's query rows in parts of this many (whet_acts_create_parts):
 * every golden's sequences, 13 to 140 rows, split into several parts, which
 * starts them off the kernels' tiles and blocks and makes the keys' gradients
 * sum over parts. */
#define SMALL_PARTS 5

/* Full fine-tuning gradients of the golden's mean loss, in mode (KEEP or
 * CHECKPOINT), attention in parts of part_rows query rows; the caller frees
 * them. */
static whet_model_grads *gradients_parts(whet_model *m, const golden *g, int mode, const whet_train_selection *sel,
                                         size_t part_rows, double *loss)
{
    whet_err e;
    whet_train_selection full = {.full = 1};
    whet_model_grads *gr = whet_model_grads_create(m, sel ? sel : &full, &e);
    assert_non_null(gr);
    whet_model_grads_zero(gr);
    whet_acts *a = whet_acts_create_parts(m, g->B, g->T, mode, part_rows, &e);
    assert_non_null(a);
    double nll = forward_nll(m, a, g);
    if (loss)
        *loss = nll;
    if (whet_model_backward(m, a, g->targets, 1.0f / (float)g->n_targets, gr, &e))
        fail_msg("%s", e.msg);
    whet_acts_free(a);
    return gr;
}

static whet_model_grads *gradients(whet_model *m, const golden *g, int mode, const whet_train_selection *sel,
                                   double *loss)
{
    return gradients_parts(m, g, mode, sel, whet_attn_part_rows(g->T), loss);
}

/* Under an emulator (check-aarch64 sets EMULATOR) one thread only, and fewer
 * finite-difference cases. */
static int max_threads(void)
{
    const char *emulator = getenv("EMULATOR");
    return emulator && *emulator ? 1 : 3;
}

/* ‖got − ref‖ / max(‖ref‖, floor) in double */
static double norm_rel_error(const float *got, const float *ref, size_t n, double floor)
{
    double diff = 0, norm = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - ref[i];
        diff += d * d;
        norm += (double)ref[i] * ref[i];
    }
    norm = sqrt(norm);
    return sqrt(diff) / (norm > floor ? norm : floor);
}

static double norm_sq(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return s;
}

/* Every gradient view against the golden; returns the largest error. A
 * tensor whose true gradient is zero but for rounding (the key bias: softmax
 * ignores a constant added to a query's every score) is measured against 1%
 * of the whole gradient's norm instead of its own. */
static double compare_with_golden(const grad_case *gc, const whet_model *m, const whet_model_grads *gr,
                                  const golden *g, const char *table)
{
    double worst = 0, total = 0;
    size_t compared = 0;
    for (size_t i = 0; i < whet_st_count(g->st); i++) {
        const whet_st_tensor *t = whet_st_tensor_at(g->st, i);
        if (strncmp(t->name, "grad.", 5) == 0) {
            float *ref = malloc((size_t)t->numel * sizeof *ref);
            whet_err e;
            if (whet_st_load_f32(t, ref, NULL, &e))
                fail_msg("%s", e.msg);
            total += norm_sq(ref, (size_t)t->numel);
            free(ref);
        }
    }
    double floor = 0.01 * sqrt(total);
    for (size_t i = 0; i < N_VIEWS; i++) {
        float *view = view_get(&gr->p, i);
        if (i == N_VIEWS - 1 && m->cfg.tied) /* lm_head is wte: its golden is grad.wte */
            continue;
        char name[64];
        snprintf(name, sizeof name, "grad.%s", VIEWS[i].name);
        const whet_st_tensor *t = whet_st_find(g->st, name);
        if (!view != !t)
            fail_msg("%s: view %s is %s in whet but %s in the golden", gc->name, VIEWS[i].name,
                     view ? "present" : "absent", t ? "present" : "absent");
        if (!view)
            continue;
        float *ref = malloc((size_t)t->numel * sizeof *ref);
        whet_err e;
        if (whet_st_load_f32(t, ref, NULL, &e))
            fail_msg("%s", e.msg);
        double err = norm_rel_error(view, ref, (size_t)t->numel, floor);
        if (!(err <= 1e-4))
            fail_msg("%s on %s: gradient of %s off by %.3g (norm-wise, limit 1e-4)", gc->name, table,
                     VIEWS[i].name, err);
        worst = err > worst ? err : worst;
        free(ref);
        compared++;
    }
    assert_true(compared >= 10);
    return worst;
}

static void matches_pytorch_gradients(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    for (size_t ci = 0; ci < N_CASES; ci++) {
        golden g;
        load_golden(&CASES[ci], &g);
        double worst = 0, worst_loss = 0;
        for (int t = 0; t < nt; t++) {
            whet_compute *c = whet_compute_create(tables[t], 1);
            whet_model *m = load_model(&CASES[ci], c);
            double loss;
            whet_model_grads *gr = gradients(m, &g, WHET_ACTS_KEEP, NULL, &loss);
            double le = fabs(loss - g.loss) / g.loss;
            if (!(le <= 1e-5))
                fail_msg("%s on %s: loss %.9g, PyTorch %.9g", CASES[ci].name, tables[t]->name, loss, g.loss);
            double err = compare_with_golden(&CASES[ci], m, gr, &g, tables[t]->name);
            worst = err > worst ? err : worst;
            worst_loss = le > worst_loss ? le : worst_loss;
            whet_model_grads_free(gr);
            /* attention in small parts: the forward's bits, the same gradients up to the order of the keys' sums */
            double parts_loss;
            gr = gradients_parts(m, &g, WHET_ACTS_KEEP, NULL, SMALL_PARTS, &parts_loss);
            if (parts_loss != loss)
                fail_msg("%s on %s: attention in parts of %d rows: loss %.9g, one part %.9g", CASES[ci].name,
                         tables[t]->name, SMALL_PARTS, parts_loss, loss);
            err = compare_with_golden(&CASES[ci], m, gr, &g, tables[t]->name);
            worst = err > worst ? err : worst;
            whet_model_grads_free(gr);
            whet_model_free(m);
            whet_compute_destroy(c);
        }
        print_message("%-12s B=%zu T=%-3zu%s max gradient error %.2e (norm-wise, worst tensor), loss %.2e, over %d "
                      "tables\n", CASES[ci].name, g.B, g.T, g.packed ? " packed" : "       ", worst, worst_loss, nt);
        free_golden(&g);
    }
}

/* 1, 2, 3 threads and KEEP/CHECKPOINT: the same bits, on every table, with
 * attention in one part per sequence and in small parts */
static void thread_and_checkpoint_invariance(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    int top = max_threads();
    for (size_t ci = 0; ci < N_CASES; ci++) {
        golden g;
        load_golden(&CASES[ci], &g);
        for (int t = 0; t < 2 * nt; t++) {
            size_t part_rows = t < nt ? whet_attn_part_rows(g.T) : SMALL_PARTS;
            whet_model_grads *ref = NULL;
            for (int threads = 1; threads <= top; threads++) {
                for (int mode = WHET_ACTS_KEEP; mode <= WHET_ACTS_CHECKPOINT; mode++) {
                    whet_compute *c = whet_compute_create(tables[t % nt], threads);
                    whet_model *m = load_model(&CASES[ci], c);
                    whet_model_grads *gr = gradients_parts(m, &g, mode, NULL, part_rows, NULL);
                    if (!ref) {
                        ref = gr;
                    } else {
                        assert_int_equal(gr->floats, ref->floats);
                        if (memcmp(gr->memory, ref->memory, gr->floats * sizeof(float)) != 0)
                            fail_msg("%s on %s, attention in parts of %zu rows: %d threads, %s: gradients differ "
                                     "from 1 thread, all layers kept",
                                     CASES[ci].name, tables[t % nt]->name, part_rows, threads,
                                     mode == WHET_ACTS_CHECKPOINT ? "checkpointed" : "all layers kept");
                        whet_model_grads_free(gr);
                    }
                    whet_model_free(m);
                    whet_compute_destroy(c);
                }
            }
            whet_model_grads_free(ref);
        }
        free_golden(&g);
    }
}

/* Random models wide enough that every row, column and head split of the
 * backward really spreads over 2 and 3 threads (the golden models are so
 * small that most row-wise work stays on one thread): 400 rows, C = 64,
 * F = 128, V = 1100 (two vocabulary chunks, two row blocks). */
/* each config in parentheses: one string made of several literals */
static const char *const WIDE_CONFIGS[] = {
    ("{\"architectures\":[\"Qwen3ForCausalLM\"],\"vocab_size\":1100,\"hidden_size\":64,\"num_hidden_layers\":2,"
    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":16,\"intermediate_size\":128,"
    "\"tie_word_embeddings\":true,\"max_position_embeddings\":512}"),
    ("{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":1100,\"hidden_size\":64,\"num_hidden_layers\":2,"
    "\"num_attention_heads\":4,\"num_key_value_heads\":1,\"intermediate_size\":128,\"attention_bias\":true,"
    "\"mlp_bias\":true,\"tie_word_embeddings\":false,\"max_position_embeddings\":512}"),
    ("{\"architectures\":[\"GPT2LMHeadModel\"],\"vocab_size\":1100,\"n_embd\":64,\"n_layer\":2,\"n_head\":4,"
    "\"n_positions\":512}"),
};

static void wide_models_thread_invariance(void **state)
{
    (void)state;
    if (max_threads() == 1)
        skip();
    enum { B = 2, T = 200, BT = B * T };
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    golden g = {.B = B, .T = T, .packed = 1};
    g.tokens = malloc(BT * sizeof(int32_t)), g.targets = malloc(BT * sizeof(int32_t));
    g.seg_start = malloc(BT * sizeof(int32_t)), g.positions = malloc(BT * sizeof(int32_t));
    kc_rng rng = kc_seed(11);
    for (size_t r = 0; r < BT; r++) {
        size_t t = r % T;
        g.seg_start[r] = r < T && t >= 80 ? 80 : 0;
        g.positions[r] = (int32_t)t - g.seg_start[r];
        g.tokens[r] = (int32_t)(kc_next(&rng) % 1100);
        g.targets[r] = kc_next(&rng) % 5 == 0 ? -1 : (int32_t)(kc_next(&rng) % 1100);
        g.n_targets += g.targets[r] >= 0;
    }
    whet_err e;
    for (size_t ci = 0; ci < sizeof WIDE_CONFIGS / sizeof *WIDE_CONFIGS; ci++) {
        whet_model_config cfg;
        if (whet_config_parse(&cfg, WIDE_CONFIGS[ci], strlen(WIDE_CONFIGS[ci]), "wide config", &e))
            fail_msg("%s", e.msg);
        for (int t = 0; t < 2 * nt; t++) {
            /* then attention in parts of 64 rows: 2, 2 and 4 parts of (80 + 120) and 200 */
            size_t part_rows = t < nt ? whet_attn_part_rows(T) : 64;
            whet_model_grads *ref = NULL;
            for (int threads = 1; threads <= 3; threads++) {
                int mode = threads == 2 ? WHET_ACTS_CHECKPOINT : WHET_ACTS_KEEP;
                whet_compute *c = whet_compute_create(tables[t % nt], threads);
                whet_model *m;
                if (whet_model_init(&m, &cfg, c, 5, &e))
                    fail_msg("%s", e.msg);
                whet_model_grads *gr = gradients_parts(m, &g, mode, NULL, part_rows, NULL);
                if (!ref) {
                    ref = gr;
                } else {
                    if (memcmp(gr->memory, ref->memory, gr->floats * sizeof(float)) != 0)
                        fail_msg("%s on %s, attention in parts of %zu rows: %d threads (%s) changed the gradients",
                                 cfg.info->name, tables[t % nt]->name, part_rows, threads,
                                 mode == WHET_ACTS_CHECKPOINT ? "checkpointed" : "all layers kept");
                    whet_model_grads_free(gr);
                }
                whet_model_free(m);
                whet_compute_destroy(c);
            }
            whet_model_grads_free(ref);
        }
    }
    free(g.tokens), free(g.targets), free(g.seg_start), free(g.positions);
}

/* The loss's change along a perturbation of one tensor against the
 * gradient's prediction. The perturbed floats are rounded: the prediction
 * uses the steps actually taken, Σ g·(w₊ − w₋), so rounding costs nothing. */
typedef struct fd_result {
    double fd, predicted;
} fd_result;

static fd_result central_difference(whet_model *m, whet_acts *a, const golden *g, float *w, const float *grad,
                                    const float *dir, size_t n, double eps)
{
    float *saved = malloc(n * sizeof *saved), *plus = malloc(n * sizeof *plus), *minus = malloc(n * sizeof *minus);
    memcpy(saved, w, n * sizeof *w);
    fd_result r = {0, 0};
    for (size_t j = 0; j < n; j++) {
        plus[j] = (float)(saved[j] + eps * dir[j]);
        minus[j] = (float)(saved[j] - eps * dir[j]);
        r.predicted += (double)grad[j] * ((double)plus[j] - (double)minus[j]);
    }
    memcpy(w, plus, n * sizeof *w);
    double f_plus = forward_nll(m, a, g);
    memcpy(w, minus, n * sizeof *w);
    double f_minus = forward_nll(m, a, g);
    memcpy(w, saved, n * sizeof *w);
    r.fd = f_plus - f_minus;
    free(saved), free(plus), free(minus);
    return r;
}

static void finite_differences(void **state)
{
    (void)state;
    whet_compute *c = whet_compute_create(whet_kernels_best(), 1);
    kc_rng rng = kc_seed(7);
    /* the math does not depend on the ISA, and every table meets the goldens:
     * under an emulator, the two packed cases only */
    int emulated = max_threads() == 1;
    for (size_t ci = 0; ci < N_CASES; ci++) {
        if (emulated && strcmp(CASES[ci].name, "qwen3") != 0 && strcmp(CASES[ci].name, "gpt2") != 0)
            continue;
        golden g;
        load_golden(&CASES[ci], &g);
        whet_model *m = load_model(&CASES[ci], c);
        whet_model_grads *gr = gradients(m, &g, WHET_ACTS_KEEP, NULL, NULL);
        whet_err e;
        whet_acts *a = whet_acts_create(m, g.B, g.T, WHET_ACTS_REUSE, &e);
        double worst = 0;
        size_t checked = 0;
        for (size_t i = 0; i < N_VIEWS; i++) {
            float *grad = view_get(&gr->p, i), *w = view_get(&m->params, i);
            if (!grad || (i == N_VIEWS - 1 && m->cfg.tied))
                continue;
            char name[64];
            snprintf(name, sizeof name, "grad.%s", VIEWS[i].name);
            const whet_st_tensor *t = whet_st_find(g.st, name);
            assert_non_null(t);
            size_t n = (size_t)t->numel;
            double ms = 0;
            for (size_t j = 0; j < n; j++)
                ms += (double)w[j] * w[j];
            double scale = sqrt(ms / (double)n);
            float *dir = malloc(n * sizeof *dir);
            for (size_t j = 0; j < n; j++)
                dir[j] = kc_next(&rng) & 1 ? 1.0f : -1.0f;
            fd_result all = central_difference(m, a, &g, w, grad, dir, n, 1e-3 * scale);
            size_t top = 0;
            for (size_t j = 0; j < n; j++) {
                dir[j] = 0;
                if (fabsf(grad[j]) > fabsf(grad[top]))
                    top = j;
            }
            dir[top] = 1;
            fd_result one = central_difference(m, a, &g, w, grad, dir, n, 1e-2 * fmax(fabs(w[top]), 0.1));
            /* the loss is a float computation: its rounding moves fd by up to ~6e-7 (measured: GPT-2's key
             * bias, whose true gradient is 0, gives 5.8e-7), hence the absolute term */
            fd_result r[2] = {all, one};
            for (int k = 0; k < 2; k++) {
                double diff = fabs(r[k].fd - r[k].predicted);
                if (!(diff <= 1e-3 * fabs(r[k].predicted) + 1.5e-6))
                    fail_msg("%s: %s along %s: finite difference %.6e, the gradient predicts %.6e", CASES[ci].name,
                             VIEWS[i].name, k ? "its largest-gradient element" : "a random ±1 direction", r[k].fd,
                             r[k].predicted);
                if (fabs(r[k].predicted) > 1e-4 && diff / fabs(r[k].predicted) > worst)
                    worst = diff / fabs(r[k].predicted);
            }
            checked++;
            free(dir);
        }
        print_message("%-12s %zu tensors: finite differences within %.1e of the gradient's prediction\n",
                      CASES[ci].name, checked, worst);
        whet_acts_free(a);
        whet_model_grads_free(gr);
        whet_model_free(m);
        free_golden(&g);
    }
    whet_compute_destroy(c);
}

/* Last-N layers and frozen embeddings: the views are NULL or start at
 * first_layer, the trained ranges hold exactly the full gradients' bits and
 * nothing else is written; LoRA-only has no base gradients at all. */
static void training_selection(void **state)
{
    (void)state;
    whet_compute *c = whet_compute_create(whet_kernels_best(), 2);
    static const size_t picks[] = {0, 4, 5}; /* llama (untied), qwen3 (tied), gpt2 (tied, wpe) */
    for (size_t pi = 0; pi < sizeof picks / sizeof *picks; pi++) {
        const grad_case *gc = &CASES[picks[pi]];
        golden g;
        load_golden(gc, &g);
        whet_model *m = load_model(gc, c);
        size_t L = m->cfg.layers;
        whet_model_grads *full = gradients(m, &g, WHET_ACTS_KEEP, NULL, NULL);
        whet_grad_range r[WHET_MAX_GRAD_RANGES];
        for (int freeze = 0; freeze <= 1; freeze++) {
            whet_train_selection sel = {.full = 1, .train_layers = 1, .freeze_embeddings = freeze};
            whet_model_grads *part = gradients(m, &g, WHET_ACTS_CHECKPOINT, &sel, NULL);
            assert_int_equal(part->first_layer, L - 1);
            assert_true((part->p.wte == NULL) == freeze);
            assert_true((part->p.wpe == NULL) == (freeze || !m->params.wpe));
            assert_true((part->p.lm_head == NULL) == (freeze && m->cfg.tied));
            size_t n = whet_model_grads_ranges(m, part, r, WHET_MAX_GRAD_RANGES);
            assert_true(n <= WHET_MAX_GRAD_RANGES);
            float *written = calloc(part->floats, sizeof(float)); /* 1 where a range lies */
            for (size_t i = 0; i < n; i++) {
                size_t off = (size_t)(r[i].grad - part->memory);
                assert_true(r[i].param == m->params_memory + off || (m->cfg.tied && r[i].param == m->params.wte));
                if (memcmp(r[i].grad, full->memory + off, r[i].n * sizeof(float)) != 0)
                    fail_msg("%s: the trained range %s differs from full fine-tuning's gradient", gc->name,
                             r[i].name);
                for (size_t j = 0; j < r[i].n; j++)
                    written[off + j] = 1;
            }
            for (size_t j = 0; j < part->floats; j++)
                if (!written[j] && part->memory[j] != 0.0f)
                    fail_msg("%s: gradient float %zu outside the trained ranges was written", gc->name, j);
            /* zero clears what trains */
            whet_model_grads_zero(part);
            for (size_t j = 0; j < part->floats; j++)
                assert_true(part->memory[j] == 0.0f);
            free(written);
            whet_model_grads_free(part);
        }
        /* the backward visits no layer below the lowest that trains: with
         * checkpointing, the last layer recomputed tells which it reached */
        for (int freeze = 0; freeze <= 1; freeze++) {
            whet_train_selection sel = {.full = 1, .train_layers = 1, .freeze_embeddings = freeze};
            whet_err e1;
            whet_model_grads *part = whet_model_grads_create(m, &sel, &e1);
            whet_acts *ck = whet_acts_create(m, g.B, g.T, WHET_ACTS_CHECKPOINT, &e1);
            forward_nll(m, ck, &g);
            assert_int_equal(whet_model_backward(m, ck, g.targets, 1.0f, part, &e1), 0);
            assert_int_equal(ck->slot_layer, freeze ? L - 1 : 0);
            whet_acts_free(ck);
            whet_model_grads_free(part);
        }
        /* LoRA only: no base gradients; the backward runs with them and with NULL */
        whet_err e;
        whet_train_selection lora_only = {.full = 0};
        whet_model_grads *none = whet_model_grads_create(m, &lora_only, &e);
        assert_non_null(none);
        for (size_t i = 0; i < N_VIEWS; i++)
            assert_null(view_get(&none->p, i));
        assert_int_equal(whet_model_grads_ranges(m, none, r, WHET_MAX_GRAD_RANGES), 0);
        whet_acts *a = whet_acts_create(m, g.B, g.T, WHET_ACTS_KEEP, &e);
        forward_nll(m, a, &g);
        assert_int_equal(whet_model_backward(m, a, g.targets, 1.0f, none, &e), 0);
        assert_int_equal(whet_model_backward(m, a, g.targets, 1.0f, NULL, &e), 0);
        whet_acts_free(a);
        whet_model_grads_free(none);
        whet_train_selection too_many = {.full = 1, .train_layers = L + 1};
        assert_null(whet_model_grads_create(m, &too_many, &e));
        char expected[256];
        snprintf(expected, sizeof expected, "%s: cannot train the last %zu layers of a model with %zu", gc->model_dir,
                 L + 1, L);
        assert_string_equal(e.msg, expected);
        whet_model_grads_free(full);
        whet_model_free(m);
        free_golden(&g);
    }
    whet_compute_destroy(c);
}

/* A row packing two examples gives each the logits it gets alone, bit for
 * bit (rows are computed alone, attention per example); with explicit
 * positions equal to the restarted ones, too. Bad example starts are refused. */
static void packed_rows_equal_separate_sequences(void **state)
{
    (void)state;
    whet_compute *c = whet_compute_create(whet_kernels_best(), 2);
    static const size_t picks[] = {0, 5}; /* llama (RoPE, GQA), gpt2 (learned positions) */
    enum { LEN_A = 7, LEN_B = 10, T = LEN_A + LEN_B };
    whet_err e;
    for (size_t pi = 0; pi < 2; pi++) {
        whet_model *m = load_model(&CASES[picks[pi]], c);
        size_t V = m->cfg.vocab;
        int32_t tokens[T], seg_start[T], positions[T];
        for (int t = 0; t < T; t++) {
            tokens[t] = (int32_t)((t * 131 + 17) % (int)V);
            seg_start[t] = t < LEN_A ? 0 : LEN_A;
            positions[t] = t - seg_start[t];
        }
        whet_acts *a = whet_acts_create(m, 1, T, WHET_ACTS_REUSE, &e);
        float *packed = malloc(T * V * sizeof *packed), *alone = malloc(T * V * sizeof *alone);
        for (int explicit_positions = 0; explicit_positions <= 1; explicit_positions++) {
            if (whet_model_forward_packed(m, a, tokens, explicit_positions ? positions : NULL, seg_start, 1, T, &e))
                fail_msg("%s", e.msg);
            assert_int_equal(a->n_segs, 2);
            assert_int_equal(whet_model_logits(m, a, NULL, T, packed, &e), 0);
            assert_int_equal(whet_model_forward(m, a, tokens, 1, LEN_A, &e), 0);
            assert_int_equal(whet_model_logits(m, a, NULL, LEN_A, alone, &e), 0);
            assert_int_equal(whet_model_forward(m, a, tokens + LEN_A, 1, LEN_B, &e), 0);
            assert_int_equal(whet_model_logits(m, a, NULL, LEN_B, alone + LEN_A * V, &e), 0);
            if (memcmp(packed, alone, T * V * sizeof *packed) != 0)
                fail_msg("%s: packed logits differ from the examples' own", CASES[picks[pi]].name);
        }
        seg_start[9] = 8;
        assert_int_equal(whet_model_forward_packed(m, a, tokens, NULL, seg_start, 1, T, &e), -1);
        char expected[512];
        snprintf(expected, sizeof expected,
                 "%s: seg_start 8 at sequence 0, row 9 is not an example start (expected 9, a new example, or 7, the "
                 "previous row's)", CASES[picks[pi]].model_dir);
        assert_string_equal(e.msg, expected);
        seg_start[9] = LEN_A;
        positions[3] = -1;
        assert_int_equal(whet_model_forward_packed(m, a, tokens, positions, seg_start, 1, T, &e), -1);
        snprintf(expected, sizeof expected,
                 "%s: position -1 (sequence 0, row 3) is past the model's %zu positions (max_position_embeddings / "
                 "n_positions in config.json)", CASES[picks[pi]].model_dir, m->cfg.max_positions);
        assert_string_equal(e.msg, expected);
        free(packed), free(alone);
        whet_acts_free(a);
        whet_model_free(m);
    }
    whet_compute_destroy(c);
}

/* Two backward passes accumulate (2× one, up to the order of the sums); the
 * backward refuses inference activations and a missing NLL; the memory
 * estimate is what each mode allocates, checkpointing taking less. */
static void accumulation_errors_and_memory(void **state)
{
    (void)state;
    whet_compute *c = whet_compute_create(whet_kernels_best(), 1);
    golden g;
    load_golden(&CASES[4], &g);
    whet_model *m = load_model(&CASES[4], c);
    whet_err e;
    whet_train_selection full = {.full = 1};
    whet_model_grads *once = gradients(m, &g, WHET_ACTS_KEEP, NULL, NULL);
    whet_model_grads *twice = whet_model_grads_create(m, &full, &e);
    whet_acts *a = whet_acts_create(m, g.B, g.T, WHET_ACTS_KEEP, &e);
    for (int i = 0; i < 2; i++) {
        forward_nll(m, a, &g);
        assert_int_equal(whet_model_backward(m, a, g.targets, 1.0f / (float)g.n_targets, twice, &e), 0);
    }
    double diff = 0, norm = 0;
    for (size_t j = 0; j < once->floats; j++) {
        diff += ((double)twice->memory[j] - 2.0 * once->memory[j]) * ((double)twice->memory[j] - 2.0 * once->memory[j]);
        norm += 4.0 * once->memory[j] * once->memory[j];
    }
    assert_true(sqrt(diff / norm) <= 1e-6);
    /* a forward without the NLL after it */
    assert_int_equal(whet_model_forward(m, a, g.tokens, g.B, g.T, &e), 0);
    assert_int_equal(whet_model_backward(m, a, g.targets, 1.0f, twice, &e), -1);
    assert_string_equal(e.msg, "tests/data/models/qwen3: whet_model_backward needs a forward pass and whet_model_nll "
                               "first");
    whet_acts *inference = whet_acts_create(m, g.B, g.T, WHET_ACTS_REUSE, &e);
    forward_nll(m, inference, &g);
    assert_int_equal(whet_model_backward(m, inference, g.targets, 1.0f, twice, &e), -1);
    assert_string_equal(e.msg, "tests/data/models/qwen3: the backward pass needs activations made for training "
                               "(WHET_ACTS_KEEP or WHET_ACTS_CHECKPOINT), not mode 0");
    for (int mode = WHET_ACTS_REUSE; mode <= WHET_ACTS_CHECKPOINT; mode++) {
        whet_acts *x = whet_acts_create(m, 3, 7, mode, &e);
        whet_memory_estimate est = whet_model_memory(&m->cfg, 3, 7, mode);
        assert_int_equal(est.activations, x->floats * sizeof(float));
        whet_acts_free(x);
    }
    whet_memory_estimate est = whet_model_memory(&m->cfg, 4, 64, WHET_ACTS_KEEP);
    assert_int_equal(est.activations, est.activations_kept);
    assert_true(est.activations_checkpointed < est.activations_kept);
    print_message("qwen3 tiny, 4 x 64 tokens: activations %zu bytes kept, %zu checkpointed\n", est.activations_kept,
                  est.activations_checkpointed);
    whet_acts_free(inference);
    whet_acts_free(a);
    whet_model_grads_free(once);
    whet_model_grads_free(twice);
    whet_model_free(m);
    free_golden(&g);
    whet_compute_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matches_pytorch_gradients),
        cmocka_unit_test(thread_and_checkpoint_invariance),
        cmocka_unit_test(wide_models_thread_invariance),
        cmocka_unit_test(finite_differences),
        cmocka_unit_test(training_selection),
        cmocka_unit_test(packed_rows_equal_separate_sequences),
        cmocka_unit_test(accumulation_errors_and_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
