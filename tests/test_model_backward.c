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
 *  - bit-identical gradients for 1, 2 and 3 threads on every ISA table, with
 *    and without gradient checkpointing;
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

/* Full fine-tuning gradients of the golden's mean loss, in mode (KEEP or
 * CHECKPOINT); the caller frees them. */
static whet_model_grads *gradients(whet_model *m, const golden *g, int mode, const whet_train_selection *sel,
                                   double *loss)
{
    whet_err e;
    whet_train_selection full = {.full = 1};
    whet_model_grads *gr = whet_model_grads_create(m, sel ? sel : &full, &e);
    assert_non_null(gr);
    whet_model_grads_zero(gr);
    whet_acts *a = whet_acts_create(m, g->B, g->T, mode, &e);
    assert_non_null(a);
    double nll = forward_nll(m, a, g);
    if (loss)
        *loss = nll;
    if (whet_model_backward(m, a, g->targets, 1.0f / (float)g->n_targets, gr, &e))
        fail_msg("%s", e.msg);
    whet_acts_free(a);
    return gr;
}

/* Under an emulator (check-aarch64 sets EMULATOR) one thread only. */
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
            whet_model_free(m);
            whet_compute_destroy(c);
        }
        print_message("%-12s B=%zu T=%-3zu%s max gradient error %.2e (norm-wise, worst tensor), loss %.2e, over %d "
                      "tables\n", CASES[ci].name, g.B, g.T, g.packed ? " packed" : "       ", worst, worst_loss, nt);
        free_golden(&g);
    }
}

/* 1, 2, 3 threads and KEEP/CHECKPOINT: the same bits, on every table */
static void thread_and_checkpoint_invariance(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    int top = max_threads();
    for (size_t ci = 0; ci < N_CASES; ci++) {
        golden g;
        load_golden(&CASES[ci], &g);
        for (int t = 0; t < nt; t++) {
            whet_model_grads *ref = NULL;
            for (int threads = 1; threads <= top; threads++) {
                for (int mode = WHET_ACTS_KEEP; mode <= WHET_ACTS_CHECKPOINT; mode++) {
                    whet_compute *c = whet_compute_create(tables[t], threads);
                    whet_model *m = load_model(&CASES[ci], c);
                    whet_model_grads *gr = gradients(m, &g, mode, NULL, NULL);
                    if (!ref) {
                        ref = gr;
                    } else {
                        assert_int_equal(gr->floats, ref->floats);
                        if (memcmp(gr->memory, ref->memory, gr->floats * sizeof(float)) != 0)
                            fail_msg("%s on %s: %d threads, %s: gradients differ from 1 thread, all layers kept",
                                     CASES[ci].name, tables[t]->name, threads,
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matches_pytorch_gradients),
        cmocka_unit_test(thread_and_checkpoint_invariance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
