/* attention_backward on every ISA table this build and CPU run.
 *
 *  - against a naive double-precision backward written here from the
 *    materialised softmax: P = softmax(scale·QKᵀ + causal mask) per head,
 *    dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P∘(dP − rowsum(dO∘O)), dQ = scale·dS·K,
 *    dK = scale·dSᵀ·Q (summed over the query heads of a KV head). out and lse
 *    fed to the kernel are that reference's forward, rounded to float.
 *    Shapes: n_q ∈ {1, 7, 33, 50, 70} (AVX-512 takes rows in tiles of 32:
 *    50 ends in a tile of 18, its second half 2 rows), head_dim ∈ {8, 64, 80, 128}, q_offset 0
 *    and > 0 (n_kv = q_offset + n_q, for half the cases plus 3 keys no query
 *    sees, holding NaN: never read, their dk/dv rows come out 0), heads/kv_heads ∈ {1/1, 4/2,
 *    9/3} taken in turn, padded strides, misaligned buffers; also head_dim
 *    256 (the largest SIMD tile), 300 (wider: the scalar fallback) and 13
 *    (tails everywhere), and scores up to ~50 (q in [−12, 12]).
 *    Tolerance: max |got − ref| ≤ 2e-5·(max|ref| + 0.1) per tensor, measured
 *    ≤ 1.1e-6·max|ref| (fp32 sums of ≤ 73 keys × ≤ 300 dimensions on inputs
 *    in [−1, 1]); the + 0.1 because n_q = 1 has dq = dk = 0 up to rounding.
 *  - every SIMD table against the scalar one: max error ≤ 1e-5·(max|scalar|
 *    + 0.1).
 *  - the scalar backward against central finite differences of the scalar
 *    forward (loss = Σ w∘out, random w), in double on the loss: max error
 *    ≤ 5e-4·max|grad| (measured ≤ 5e-5; a 0.1% error in a scale fails).
 *  - split invariance: [0,G) in one call equals G calls [g,g+1), bit for
 *    bit; the outputs are overwritten (garbage before the call changes
 *    nothing) and padding columns are never written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "simd/simd.h"
#include "support/kernel_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SENTINEL 12345.0f

typedef struct {
    size_t n_q, q_offset, heads, kv_heads, head_dim;
    size_t q_pad, kv_pad, out_pad; /* extra floats per row */
    size_t unseen; /* keys past every query's diagonal: n_kv = q_offset + n_q + unseen */
} attn_case;

/* One problem: inputs, the forward the kernel is given, the double reference. */
typedef struct {
    attn_case c;
    size_t D, n_kv, qs, ks, os;
    float scale;
    float *q, *k, *v, *dout, *out, *lse;
    double *ref_dq, *ref_dk, *ref_dv; /* dense: [row][head][D] */
} problem;

static size_t seen_keys(const attn_case *c)
{
    return c->q_offset + c->n_q;
}

/* The reference, in double: forward (out, lse) and backward, one KV head at a
 * time, with P of each query head materialised (n_q × seen keys). */
static void reference(problem *p)
{
    const attn_case *c = &p->c;
    size_t D = p->D, n = seen_keys(c), group = c->heads / c->kv_heads;
    double *P = calloc(c->n_q * n, sizeof *P), *dS = calloc(c->n_q * n, sizeof *dS);
    double *o = calloc(D, sizeof *o);
    for (size_t h = 0; h < c->heads; h++) {
        size_t g = h / group;
        const float *qh = p->q + h * D, *kg = p->k + g * D, *vg = p->v + g * D, *doh = p->dout + h * D;
        for (size_t i = 0; i < c->n_q; i++) {
            size_t end = c->q_offset + i + 1;
            double max = -INFINITY, sum = 0;
            for (size_t j = 0; j < n; j++) {
                double s = 0;
                if (j < end)
                    for (size_t d = 0; d < D; d++)
                        s += (double)qh[i * p->qs + d] * kg[j * p->ks + d];
                P[i * n + j] = j < end ? s * p->scale : -INFINITY;
                max = P[i * n + j] > max ? P[i * n + j] : max;
            }
            for (size_t j = 0; j < n; j++)
                sum += P[i * n + j] = exp(P[i * n + j] - max);
            for (size_t j = 0; j < n; j++)
                P[i * n + j] /= sum;
            double delta = 0; /* D_i = dout_i·out_i */
            for (size_t d = 0; d < D; d++) {
                o[d] = 0;
                for (size_t j = 0; j < end; j++)
                    o[d] += P[i * n + j] * vg[j * p->ks + d];
                p->out[i * p->os + h * D + d] = (float)o[d];
                delta += (double)doh[i * p->os + d] * o[d];
            }
            p->lse[h * c->n_q + i] = (float)(max + log(sum));
            for (size_t j = 0; j < end; j++) {
                double dp = 0;
                for (size_t d = 0; d < D; d++)
                    dp += (double)doh[i * p->os + d] * vg[j * p->ks + d];
                dS[i * n + j] = P[i * n + j] * (dp - delta);
            }
            for (size_t j = end; j < n; j++)
                dS[i * n + j] = 0;
        }
        for (size_t i = 0; i < c->n_q; i++)
            for (size_t d = 0; d < D; d++) {
                double acc = 0;
                for (size_t j = 0; j < n; j++)
                    acc += dS[i * n + j] * kg[j * p->ks + d];
                p->ref_dq[(i * c->heads + h) * D + d] = p->scale * acc;
            }
        for (size_t j = 0; j < n; j++)
            for (size_t d = 0; d < D; d++) {
                double acc_k = 0, acc_v = 0;
                for (size_t i = 0; i < c->n_q; i++) {
                    acc_k += dS[i * n + j] * qh[i * p->qs + d];
                    acc_v += P[i * n + j] * doh[i * p->os + d];
                }
                p->ref_dk[(j * c->kv_heads + g) * D + d] += p->scale * acc_k;
                p->ref_dv[(j * c->kv_heads + g) * D + d] += acc_v;
            }
    }
    free(P), free(dS), free(o);
}

static problem make_problem(const attn_case *c, kc_rng *rng, float q_range)
{
    problem p = {.c = *c, .D = c->head_dim, .n_kv = seen_keys(c) + c->unseen};
    size_t D = p.D;
    p.qs = c->heads * D + c->q_pad;
    p.ks = c->kv_heads * D + c->kv_pad;
    p.os = c->heads * D + c->out_pad;
    p.scale = 1.0f / sqrtf((float)D);
    p.q = kc_floats(c->n_q * p.qs), p.k = kc_floats(p.n_kv * p.ks), p.v = kc_floats(p.n_kv * p.ks);
    p.dout = kc_floats(c->n_q * p.os), p.out = kc_floats(c->n_q * p.os), p.lse = kc_floats(c->heads * c->n_q);
    kc_fill(rng, p.q, c->n_q * p.qs, -q_range, q_range);
    kc_fill(rng, p.k, p.n_kv * p.ks, -1.0f, 1.0f);
    kc_fill(rng, p.v, p.n_kv * p.ks, -1.0f, 1.0f);
    kc_fill(rng, p.dout, c->n_q * p.os, -1.0f, 1.0f);
    for (size_t j = seen_keys(c); j < p.n_kv; j++)
        for (size_t d = 0; d < p.ks; d++)
            p.k[j * p.ks + d] = p.v[j * p.ks + d] = NAN;
    p.ref_dq = calloc(c->n_q * c->heads * D, sizeof(double));
    p.ref_dk = calloc(p.n_kv * c->kv_heads * D, sizeof(double));
    p.ref_dv = calloc(p.n_kv * c->kv_heads * D, sizeof(double));
    reference(&p);
    return p;
}

static void free_problem(problem *p)
{
    kc_free(p->q), kc_free(p->k), kc_free(p->v), kc_free(p->dout), kc_free(p->out), kc_free(p->lse);
    free(p->ref_dq), free(p->ref_dk), free(p->ref_dv);
}

typedef struct {
    float *dq, *dk, *dv;
} grads;

static grads alloc_grads(const problem *p, float fill)
{
    grads gr = {kc_floats(p->c.n_q * p->qs), kc_floats(p->n_kv * p->ks), kc_floats(p->n_kv * p->ks)};
    for (size_t x = 0; x < p->c.n_q * p->qs; x++)
        gr.dq[x] = fill;
    for (size_t x = 0; x < p->n_kv * p->ks; x++)
        gr.dk[x] = gr.dv[x] = fill;
    return gr;
}

static void free_grads(grads *gr)
{
    kc_free(gr->dq), kc_free(gr->dk), kc_free(gr->dv);
}

static void run(const whet_kernels *kt, const problem *p, grads *gr, size_t g0, size_t g1)
{
    const attn_case *c = &p->c;
    kt->attention_backward(gr->dq, gr->dk, gr->dv, p->dout, p->out, p->lse, p->q, p->k, p->v, c->n_q, p->n_kv,
                           c->q_offset, c->heads, c->kv_heads, p->D, p->qs, p->ks, p->os, p->scale, g0, g1);
}

/* max |got − want| over rows × heads × D (got strided, want dense), and max |want| */
static void compare(const float *got, size_t stride, const double *want, size_t rows, size_t heads, size_t D,
                    double *err, double *mag)
{
    *err = 0, *mag = 0;
    for (size_t r = 0; r < rows; r++)
        for (size_t x = 0; x < heads * D; x++) {
            double e = fabs((double)got[r * stride + x] - want[r * heads * D + x]);
            if (!(e <= *err))
                *err = e; /* NaN sticks */
            if (fabs(want[r * heads * D + x]) > *mag)
                *mag = fabs(want[r * heads * D + x]);
        }
}

static void check_against(const char *what, const whet_kernels *kt, const problem *p, const grads *gr,
                          const double *dq, const double *dk, const double *dv, double tol)
{
    const attn_case *c = &p->c;
    double e[3], m[3];
    compare(gr->dq, p->qs, dq, c->n_q, c->heads, p->D, &e[0], &m[0]);
    compare(gr->dk, p->ks, dk, p->n_kv, c->kv_heads, p->D, &e[1], &m[1]);
    compare(gr->dv, p->ks, dv, p->n_kv, c->kv_heads, p->D, &e[2], &m[2]);
    for (int t = 0; t < 3; t++)
        if (!(e[t] <= tol * (m[t] + 0.1))) /* + 0.1: n_q = 1 has dq = dk = 0 up to rounding */
            fail_msg("%s vs %s: n_q=%zu q_offset=%zu heads=%zu/%zu head_dim=%zu: d%c error %.3g, max |ref| %.3g",
                     kt->name, what, c->n_q, c->q_offset, c->heads, c->kv_heads, p->D, "qkv"[t], e[t], m[t]);
}

static double *to_dense(const float *x, size_t stride, size_t rows, size_t width)
{
    double *y = malloc(rows * width * sizeof *y);
    for (size_t r = 0; r < rows; r++)
        for (size_t w = 0; w < width; w++)
            y[r * width + w] = x[r * stride + w];
    return y;
}

/* Padding columns keep their sentinel; dk/dv rows of unseen keys are 0. */
static void check_untouched(const problem *p, const grads *gr)
{
    const attn_case *c = &p->c;
    for (size_t i = 0; i < c->n_q; i++)
        for (size_t x = c->heads * p->D; x < p->qs; x++)
            assert_true(gr->dq[i * p->qs + x] == SENTINEL);
    for (size_t j = 0; j < p->n_kv; j++)
        for (size_t x = 0; x < p->ks; x++) {
            float want_k = x < c->kv_heads * p->D ? 0.0f : SENTINEL;
            if (j >= seen_keys(c) || x >= c->kv_heads * p->D) {
                assert_true(gr->dk[j * p->ks + x] == want_k);
                assert_true(gr->dv[j * p->ks + x] == want_k);
            }
        }
}

/* Every table, one problem: against the reference and the scalar table, the
 * untouched regions, and the split into single KV heads. */
static void check_problem(const whet_kernels *const *tables, int nt, const problem *p)
{
    grads scalar = alloc_grads(p, SENTINEL);
    run(tables[0], p, &scalar, 0, p->c.kv_heads);
    double *sdq = to_dense(scalar.dq, p->qs, p->c.n_q, p->c.heads * p->D);
    double *sdk = to_dense(scalar.dk, p->ks, p->n_kv, p->c.kv_heads * p->D);
    double *sdv = to_dense(scalar.dv, p->ks, p->n_kv, p->c.kv_heads * p->D);
    for (int t = 0; t < nt; t++) {
        grads whole = alloc_grads(p, SENTINEL), split = alloc_grads(p, SENTINEL);
        run(tables[t], p, &whole, 0, p->c.kv_heads);
        check_against("reference", tables[t], p, &whole, p->ref_dq, p->ref_dk, p->ref_dv, 2e-5);
        if (t > 0)
            check_against("scalar", tables[t], p, &whole, sdq, sdk, sdv, 1e-5);
        check_untouched(p, &whole);
        /* garbage where the outputs go: the kernel overwrites, never accumulates */
        for (size_t x = 0; x < p->c.n_q * p->qs; x++)
            if (x % p->qs < p->c.heads * p->D)
                split.dq[x] = 7.0f;
        for (size_t x = 0; x < p->n_kv * p->ks; x++)
            if (x % p->ks < p->c.kv_heads * p->D)
                split.dk[x] = split.dv[x] = -3.0f;
        for (size_t g = 0; g < p->c.kv_heads; g++)
            run(tables[t], p, &split, g, g + 1);
        assert_memory_equal(whole.dq, split.dq, p->c.n_q * p->qs * sizeof(float));
        assert_memory_equal(whole.dk, split.dk, p->n_kv * p->ks * sizeof(float));
        assert_memory_equal(whole.dv, split.dv, p->n_kv * p->ks * sizeof(float));
        free_grads(&whole), free_grads(&split);
    }
    free(sdq), free(sdk), free(sdv);
    free_grads(&scalar);
}

static void matches_reference_and_splits(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    const size_t n_qs[] = {1, 7, 33, 50, 70};
    const size_t dims[] = {8, 64, 80, 128};
    const size_t gqa[][2] = {{1, 1}, {4, 2}, {9, 3}};
    kc_rng rng = kc_seed(31);
    for (size_t a = 0; a < 5; a++)
        for (size_t b = 0; b < 4; b++)
            for (size_t off = 0; off < 2; off++) {
                size_t g = (a + b + off) % 3;
                size_t offsets[] = {0, (a + b) % 2 ? 37 : 1};
                attn_case c = {.n_q = n_qs[a], .q_offset = offsets[off], .heads = gqa[g][0],
                               .kv_heads = gqa[g][1], .head_dim = dims[b], .q_pad = off ? 3 : 0,
                               .kv_pad = off ? 0 : 5, .out_pad = 1 + off, .unseen = b % 2 ? 3 : 0};
                problem p = make_problem(&c, &rng, 1.0f);
                check_problem(tables, nt, &p);
                free_problem(&p);
            }
}

/* head_dim 256, the widest SIMD tile, and 300, past it (the scalar fallback);
 * odd head_dim 13 (tails in every vector width). */
static void wide_and_odd_heads(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    kc_rng rng = kc_seed(8);
    const attn_case cases[] = {
        {.n_q = 20, .q_offset = 0, .heads = 2, .kv_heads = 1, .head_dim = 256, .q_pad = 1, .unseen = 2},
        {.n_q = 9, .q_offset = 4, .heads = 2, .kv_heads = 2, .head_dim = 300, .kv_pad = 2, .unseen = 5},
        {.n_q = 21, .q_offset = 2, .heads = 3, .kv_heads = 1, .head_dim = 13, .out_pad = 3, .unseen = 1},
    };
    for (size_t x = 0; x < sizeof cases / sizeof cases[0]; x++) {
        problem p = make_problem(&cases[x], &rng, 1.0f);
        check_problem(tables, nt, &p);
        free_problem(&p);
    }
}

/* Scores up to ~50: P comes from exp(s − lse) with no overflow. */
static void large_scores(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    kc_rng rng = kc_seed(12);
    attn_case c = {.n_q = 40, .q_offset = 0, .heads = 4, .kv_heads = 2, .head_dim = 16};
    problem p = make_problem(&c, &rng, 12.0f);
    check_problem(tables, nt, &p);
    free_problem(&p);
}

/* Σ w∘out in double, out from the scalar forward */
static double loss(const problem *p, const float *w, float *out)
{
    const attn_case *c = &p->c;
    whet_kernels_for(WHET_ISA_SCALAR)->attention_forward(out, NULL, p->q, p->k, p->v, c->n_q, p->n_kv, c->q_offset,
                                                         c->heads, c->kv_heads, p->D, p->qs, p->ks, p->os,
                                                         p->scale, 0, c->heads);
    double sum = 0;
    for (size_t i = 0; i < c->n_q; i++)
        for (size_t x = 0; x < c->heads * p->D; x++)
            sum += (double)w[i * p->os + x] * out[i * p->os + x];
    return sum;
}

/* ∂loss/∂x[idx] by central differences, x one of q, k, v */
static double numeric(const problem *p, const float *w, float *out, float *x, size_t idx)
{
    const float eps = 1e-2f, x0 = x[idx];
    x[idx] = x0 + eps;
    double up = loss(p, w, out);
    float step_up = x[idx] - x0;
    x[idx] = x0 - eps;
    double down = loss(p, w, out);
    float step_down = x0 - x[idx];
    x[idx] = x0;
    return (up - down) / ((double)step_up + step_down);
}

static void fd_tensor(const problem *p, const float *w, float *out, float *x, const float *grad, size_t rows,
                      size_t stride, size_t width, char name)
{
    double worst = 0, mag = 0;
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < width; c++) {
            double fd = numeric(p, w, out, x, r * stride + c), an = grad[r * stride + c];
            if (!(fabs(fd - an) <= worst))
                worst = fabs(fd - an);
            mag = fabs(an) > mag ? fabs(an) : mag;
        }
    if (!(worst <= 5e-4 * mag) || !(mag > 0)) /* measured: ≤ 5e-5 */
        fail_msg("d%c: finite differences differ by %.3g (max |grad| %.3g), n_q=%zu q_offset=%zu heads=%zu/%zu",
                 name, worst, mag, p->c.n_q, p->c.q_offset, p->c.heads, p->c.kv_heads);
}

/* The gradient of Σ w∘attention_forward(q, k, v) is what the backward says,
 * given dout = w. */
static void scalar_matches_finite_differences(void **state)
{
    (void)state;
    const whet_kernels *scalar = whet_kernels_for(WHET_ISA_SCALAR);
    kc_rng rng = kc_seed(3);
    const attn_case cases[] = {
        {.n_q = 7, .q_offset = 0, .heads = 4, .kv_heads = 2, .head_dim = 8, .q_pad = 1},
        {.n_q = 5, .q_offset = 3, .heads = 3, .kv_heads = 1, .head_dim = 6, .out_pad = 2},
    };
    for (size_t x = 0; x < sizeof cases / sizeof cases[0]; x++) {
        const attn_case *c = &cases[x];
        problem p = make_problem(c, &rng, 1.5f);
        float *out = kc_floats(c->n_q * p.os);
        /* the forward the backward is given is the scalar kernel's own */
        scalar->attention_forward(p.out, p.lse, p.q, p.k, p.v, c->n_q, p.n_kv, c->q_offset, c->heads, c->kv_heads,
                                  p.D, p.qs, p.ks, p.os, p.scale, 0, c->heads);
        grads gr = alloc_grads(&p, SENTINEL);
        run(scalar, &p, &gr, 0, c->kv_heads);
        size_t n = seen_keys(c);
        fd_tensor(&p, p.dout, out, p.q, gr.dq, c->n_q, p.qs, c->heads * p.D, 'q');
        fd_tensor(&p, p.dout, out, p.k, gr.dk, n, p.ks, c->kv_heads * p.D, 'k');
        fd_tensor(&p, p.dout, out, p.v, gr.dv, n, p.ks, c->kv_heads * p.D, 'v');
        free_grads(&gr);
        kc_free(out);
        free_problem(&p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matches_reference_and_splits),
        cmocka_unit_test(wide_and_odd_heads),
        cmocka_unit_test(large_scores),
        cmocka_unit_test(scalar_matches_finite_differences),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
