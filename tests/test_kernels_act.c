/* The "act" kernels of every ISA table (scalar included): SwiGLU, GELU (tanh
 * form), RoPE and AdamW.
 *
 * Bit-exact against the scalar reference: rope (both pairings, forward and
 * inverse) and adamw (three steps), whose SIMD versions keep the reference's
 * operation order without FMA.
 * Error-bounded against a double-precision reference computed here (u = 2^-24,
 * exp/tanh taken as ≤ 1 ULP = 2u relative, every float operation u; bounds are
 * first-order sums of those, derived next to each check):
 *   swiglu_forward h, swiglu_backward dup   ≤ 6 ULP (+ underflow of σ)
 *   swiglu_backward dgate                    ≤ 12u·σ·(1 + |g|)·|dh·up|
 *   gelu_forward                             ≤ 6u·½|x|·(1 + |t|)
 *   gelu_backward                            ≤ 14u·|dy|·(½(1 + |t|) + ½|x|·du·(1 + t²))
 * The last three are |Δ| ≤ c·u·(sum of the magnitudes of the terms): 1 + g(1−σ),
 * 1 + t and 1 − t² cancel, so a relative bound would be meaningless there.
 * Measured over 2^20 inputs in [−8, 8] and [−100, 100] (scalar, avx2, avx512, neon):
 * 2.9 ULP, 3.0 ULP, c = 4.4, 2.7 and 2.7, so each bound has a 2-5× margin and
 * still fails on any real mistake (a wrong constant or term is off by ≥ 1e-3).
 * RoPE is also checked against the exact rotation with the table's values
 * (≤ 2u(|a·c| + |b·s|)), and forward-then-inverse returns the input within
 * 8u(|a| + |b|). Every kernel gives identical bits through whet_compute_for on
 * 1, 2 and 3 threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "simd/simd.h"
#include "support/kernel_check.h"
#include "util/compute.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define U 0x1p-24           /* unit roundoff of float */
#define FLT_MIN_D 0x1p-126  /* smallest normal float */
#define SUBNORMAL 0x1p-149  /* smallest subnormal float: one rounding of a subnormal result */

/* ulp of a float with the magnitude of ref (subnormal spacing below 2^-126) */
static double ulp_of(double ref)
{
    int e;
    frexp(ref, &e);
    return ldexp(1.0, e - 24 < -149 ? -149 : e - 24);
}

/* Values an activation must handle: saturation (±30, ±100, where e^100
 * overflows float), σ underflow near −88, the zero of silu' near −1.2785,
 * zeros and tiny values. */
static const float edge_values[] = {0.0f,   -0.0f,   30.0f,  -30.0f,  100.0f, -100.0f, 88.0f,   -88.0f,
                                    -87.0f, 89.0f,   -89.0f, 1e-3f,   -1e-3f, 1e-20f,  -1e-20f, 5.0f,
                                    -5.0f,  10.0f,   -10.0f, -1.2785f, 20.0f, -20.0f,  3.0f,    -3.0f};
enum { NEDGE = sizeof edge_values / sizeof edge_values[0] };

/* uniform in [lo, hi] with the edge values spread through (tails included) */
static void fill_activation(kc_rng *r, float *x, size_t n, float lo, float hi)
{
    kc_fill(r, x, n, lo, hi);
    for (size_t i = 0; i < n && i < 4 * NEDGE; i++)
        x[(i * 37 + i / NEDGE) % n] = edge_values[i % NEDGE];
}

static double sigmoid_d(double g)
{
    return 1.0 / (1.0 + exp(-g));
}

#define GELU_C_D 0.79788456080286535588 /* √(2/π) */
#define GELU_A_D 0.044715

static void swiglu_matches_double(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    kc_rng r = kc_seed(21);
    for (size_t s = 0; s < kc_nsizes; s++) {
        size_t n = kc_sizes[s];
        float *g = kc_floats(n), *up = kc_floats(n), *dh = kc_floats(n);
        float *h = kc_floats(n), *dgate = kc_floats(n), *dup = kc_floats(n);
        fill_activation(&r, g, n, -8, 8);
        kc_fill(&r, up, n, -4, 4);
        kc_fill(&r, dh, n, -4, 4);
        if (n > 2)
            up[n - 2] = 0.0f, dh[1] = 0.0f;
        for (int t = 0; t < nt; t++) {
            tables[t]->swiglu_forward(h, g, up, n);
            tables[t]->swiglu_backward(dgate, dup, dh, g, up, n);
            for (size_t i = 0; i < n; i++) {
                double gi = g[i], s_ = sigmoid_d(gi);
                /* h = (g·σ)·up: σ = 1/(1 + e) carries 2u (exp) + u (add) + u
                 * (divide) = 4u relative, then two products: 6u, i.e. ≤ 6 ULP.
                 * When e^−g overflows (g < −88.7) σ flushes to 0 while the true
                 * σ < 2^-126, hence the |g·up|·2^-126 term. */
                double ref = gi * s_ * up[i];
                double bound = 6 * ulp_of(ref) + fabs(gi * up[i]) * FLT_MIN_D;
                if (!(fabs(h[i] - ref) <= bound))
                    fail_msg("%s swiglu g=%a up=%a: %a vs %a", tables[t]->name, gi, (double)up[i], (double)h[i], ref);
                ref = dh[i] * (gi * s_);
                bound = 6 * ulp_of(ref) + fabs(dh[i] * gi) * FLT_MIN_D;
                if (!(fabs(dup[i] - ref) <= bound))
                    fail_msg("%s dup g=%a: %a vs %a", tables[t]->name, gi, (double)dup[i], ref);
                /* silu' = σ(1 + g(1 − σ)): the 4u·σ error of σ enters 1 − σ
                 * absolutely and is multiplied by g; with the roundings of
                 * 1 − σ, g·(…), 1 + (…), σ·(…), dh·up and the product the sum
                 * is ≤ u·σ·(12|g| + 8)·|dh·up| ≤ 12u·σ·(1 + |g|)·|dh·up|. */
                ref = (double)dh[i] * up[i] * (s_ * (1 + gi * (1 - s_)));
                bound = 12 * U * s_ * (1 + fabs(gi)) * fabs((double)dh[i] * up[i]) +
                        fabs((double)dh[i] * up[i]) * (1 + fabs(gi)) * FLT_MIN_D + SUBNORMAL;
                if (!(fabs(dgate[i] - ref) <= bound))
                    fail_msg("%s dgate g=%a: %a vs %a (bound %g)", tables[t]->name, gi, (double)dgate[i], ref, bound);
            }
        }
        kc_free(g), kc_free(up), kc_free(dh), kc_free(h), kc_free(dgate), kc_free(dup);
    }
}

static void gelu_matches_double(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    kc_rng r = kc_seed(23);
    for (size_t s = 0; s < kc_nsizes; s++) {
        size_t n = kc_sizes[s];
        float *x = kc_floats(n), *dy = kc_floats(n), *y = kc_floats(n), *dx = kc_floats(n);
        fill_activation(&r, x, n, -6, 6);
        kc_fill(&r, dy, n, -4, 4);
        for (int t = 0; t < nt; t++) {
            tables[t]->gelu_forward(y, x, n);
            tables[t]->gelu_backward(dx, dy, x, n);
            for (size_t i = 0; i < n; i++) {
                double v = x[i];
                double th = tanh(GELU_C_D * (v + GELU_A_D * v * v * v));
                /* z = C(x + A·x³): three products, one same-sign add, one
                 * product and the two constants' roundings give 7u relative;
                 * through tanh' = 1 − t² with max |z|(1 − t²) < 0.45 that is
                 * 3.2u absolute in t, plus tanh's own 2u|t|. Then
                 * ½x·(1 + t) adds u|1 + t| twice: |Δ| ≤ ½|x|·u·(4|t| + 5.2). */
                double ref = 0.5 * v * (1 + th);
                double bound = 6 * U * 0.5 * fabs(v) * (1 + fabs(th)) + SUBNORMAL;
                if (!(fabs(y[i] - ref) <= bound))
                    fail_msg("%s gelu x=%a: %a vs %a", tables[t]->name, v, (double)y[i], ref);
                /* ½(1 + t) + ½x(1 − t²)·du, du = C(1 + 3A·x²): the error of t
                 * enters 1 − t² as 2|t|·Δt, du carries 7u relative; summing
                 * the roundings of each term and of the final products gives
                 * ≤ 14u·(½(1 + |t|) + ½|x|·du·(1 + t²)) times |dy|. */
                double du = GELU_C_D * (1 + 3 * GELU_A_D * v * v);
                ref = dy[i] * (0.5 * (1 + th) + 0.5 * v * (1 - th * th) * du);
                bound = 14 * U * fabs(dy[i]) * (0.5 * (1 + fabs(th)) + 0.5 * fabs(v) * du * (1 + th * th)) + SUBNORMAL;
                if (!(fabs(dx[i] - ref) <= bound))
                    fail_msg("%s gelu' x=%a: %a vs %a (bound %g)", tables[t]->name, v, (double)dx[i], ref, bound);
            }
        }
        kc_free(x), kc_free(dy), kc_free(y), kc_free(dx);
    }
}

/* ---- RoPE ---- */

enum { MAX_POS = 61 };

typedef struct {
    size_t tokens, heads, head_dim, stride;
    int32_t *positions;
    float *cos_t, *sin_t;
} rope_shape;

static rope_shape rope_make(kc_rng *r, size_t tokens, size_t heads, size_t head_dim)
{
    rope_shape s = {tokens, heads, head_dim, heads * head_dim + 5, NULL, NULL, NULL};
    size_t half = head_dim / 2;
    s.positions = malloc(tokens * sizeof *s.positions);
    s.cos_t = kc_floats(MAX_POS * half + 1);
    s.sin_t = kc_floats(MAX_POS * half + 1);
    assert_non_null(s.positions);
    for (size_t t = 0; t < tokens; t++) /* arbitrary order, repeats: packed sequences */
        s.positions[t] = (int32_t)(kc_next(r) % MAX_POS);
    for (size_t p = 0; p < MAX_POS; p++)
        for (size_t i = 0; i < half; i++) {
            double theta = (double)p * pow(10000.0, -2.0 * (double)i / (double)head_dim);
            s.cos_t[p * half + i] = (float)cos(theta);
            s.sin_t[p * half + i] = (float)sin(theta);
        }
    return s;
}

static void rope_free(rope_shape *s)
{
    free(s->positions);
    kc_free(s->cos_t);
    kc_free(s->sin_t);
}

/* index of the pair partner of element i of a head */
static void pair_index(const rope_shape *s, whet_rope_pairing pairing, size_t i, size_t *ia, size_t *ib)
{
    size_t half = s->head_dim / 2;
    *ia = pairing == WHET_ROPE_HALF_SPLIT ? i : 2 * i;
    *ib = pairing == WHET_ROPE_HALF_SPLIT ? i + half : 2 * i + 1;
}

static void check_rope_shape(const whet_kernels *const *tables, int nt, kc_rng *r, size_t tokens, size_t heads,
                             size_t head_dim)
{
    rope_shape s = rope_make(r, tokens, heads, head_dim);
    size_t count = tokens * s.stride, half = head_dim / 2;
    float *x = kc_floats(count), *ref = kc_floats(count), *out = kc_floats(count), *back = kc_floats(count);
    kc_fill(r, x, count, -3, 3);
    for (int p = 0; p < 2; p++) {
        whet_rope_pairing pairing = p ? WHET_ROPE_INTERLEAVED : WHET_ROPE_HALF_SPLIT;
        for (int inverse = 0; inverse < 2; inverse++) {
            memcpy(ref, x, count * sizeof *x);
            tables[0]->rope(ref, tokens, heads, head_dim, s.stride, s.positions, s.cos_t, s.sin_t, pairing, inverse);
            /* the reference against the exact rotation by the tables' values:
             * two rounded products and a rounded sum, ≤ 2u(|a·c| + |b·s|) for a',
             * ≤ 2u(|a·s| + |b·c|) for b' */
            for (size_t t = 0; t < tokens; t++)
                for (size_t h = 0; h < heads; h++)
                    for (size_t i = 0; i < half; i++) {
                        size_t ia, ib, base = t * s.stride + h * head_dim;
                        pair_index(&s, pairing, i, &ia, &ib);
                        double c = s.cos_t[(size_t)s.positions[t] * half + i];
                        double sn = s.sin_t[(size_t)s.positions[t] * half + i] * (inverse ? -1.0 : 1.0);
                        double a = x[base + ia], b = x[base + ib];
                        double bound_a = 2 * U * (fabs(a * c) + fabs(b * sn)) + SUBNORMAL;
                        double bound_b = 2 * U * (fabs(a * sn) + fabs(b * c)) + SUBNORMAL;
                        if (!(fabs(ref[base + ia] - (a * c - b * sn)) <= bound_a) ||
                            !(fabs(ref[base + ib] - (a * sn + b * c)) <= bound_b))
                            fail_msg("scalar rope pairing %d inverse %d token %zu head %zu pair %zu: %a %a, want %a %a",
                                     p, inverse, t, h, i, (double)ref[base + ia], (double)ref[base + ib],
                                     a * c - b * sn, a * sn + b * c);
                    }
            for (int k = 0; k < nt; k++) {
                memcpy(out, x, count * sizeof *x);
                tables[k]->rope(out, tokens, heads, head_dim, s.stride, s.positions, s.cos_t, s.sin_t, pairing,
                                inverse);
                /* bit-exact, and the 5 padding floats after each token untouched
                 * (they are part of ref, copied from x) */
                if (memcmp(out, ref, count * sizeof *out))
                    fail_msg("%s rope %s%s tokens=%zu heads=%zu head_dim=%zu differs from scalar", tables[k]->name,
                             p ? "interleaved" : "half-split", inverse ? " inverse" : "", tokens, heads, head_dim);
                if (inverse)
                    continue;
                /* forward then inverse: c² + s² = 1 ± 2u, and both passes'
                 * errors (≤ 2√2·u(|a| + |b|) each) give ≤ 8u(|a| + |b|) */
                memcpy(back, out, count * sizeof *x);
                tables[k]->rope(back, tokens, heads, head_dim, s.stride, s.positions, s.cos_t, s.sin_t, pairing, 1);
                for (size_t t = 0; t < tokens; t++)
                    for (size_t h = 0; h < heads; h++)
                        for (size_t i = 0; i < half; i++) {
                            size_t ia, ib, base = t * s.stride + h * head_dim;
                            pair_index(&s, pairing, i, &ia, &ib);
                            double mag = fabs(x[base + ia]) + fabs(x[base + ib]);
                            if (!(fabs(back[base + ia] - x[base + ia]) <= 8 * U * mag + SUBNORMAL) ||
                                !(fabs(back[base + ib] - x[base + ib]) <= 8 * U * mag + SUBNORMAL))
                                fail_msg("%s rope round trip, pair %zu", tables[k]->name, i);
                        }
            }
        }
    }
    kc_free(x), kc_free(ref), kc_free(out), kc_free(back);
    rope_free(&s);
}

static void rope_matches_scalar_and_inverts(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    kc_rng r = kc_seed(29);
    /* every token count; head_dim with half below, at and between vector
     * widths (1, 3, 7, 12, 17, 29, 32, 40, 64 pairs: 12 and 29 leave a tail
     * whose interleaved floats span a full and a partial AVX-512 register) */
    for (size_t s = 0; s < kc_nsizes; s++)
        check_rope_shape(tables, nt, &r, kc_sizes[s], 2, 64);
    static const size_t head_dims[] = {2, 6, 14, 24, 34, 58, 80, 128};
    for (size_t d = 0; d < sizeof head_dims / sizeof head_dims[0]; d++)
        for (size_t heads = 1; heads <= 3; heads += 2)
            check_rope_shape(tables, nt, &r, 7, heads, head_dims[d]);
}

/* ---- AdamW ---- */

static whet_adamw_params adamw_step_params(int step)
{
    whet_adamw_params p = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.01f,
                           .grad_scale = 0.5f};
    p.bias_correction1 = 1.0f - powf(p.beta1, (float)step);
    p.bias_correction2 = 1.0f - powf(p.beta2, (float)step);
    return p;
}

static void adamw_three_steps_match_scalar(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    kc_rng r = kc_seed(31);
    for (size_t s = 0; s < kc_nsizes; s++) {
        size_t n = kc_sizes[s];
        float *p0 = kc_floats(n), *g[3], *p[2], *m[2], *v[2];
        kc_fill(&r, p0, n, -1, 1);
        for (int k = 0; k < 3; k++) {
            g[k] = kc_floats(n);
            kc_fill(&r, g[k], n, -3, 3);
            g[k][(n * (size_t)k) / 3] = 0.0f; /* zero gradient: v may stay 0, denominator eps */
        }
        for (int k = 0; k < 2; k++)
            p[k] = kc_floats(n), m[k] = kc_floats(n), v[k] = kc_floats(n);

        /* the reference's first step against the formula in double, from
         * m = v = 0: m = (1−β1)g, v = (1−β2)g², a handful of roundings each */
        whet_adamw_params h1 = adamw_step_params(1);
        memcpy(p[0], p0, n * sizeof *p0);
        memset(m[0], 0, n * sizeof *p0);
        memset(v[0], 0, n * sizeof *p0);
        tables[0]->adamw(p[0], m[0], v[0], g[0], n, &h1);
        for (size_t i = 0; i < n; i++) {
            double gi = (double)g[0][i] * h1.grad_scale;
            double mi = (1 - (double)h1.beta1) * gi, vi = (1 - (double)h1.beta2) * gi * gi;
            double decayed = p0[i] * (1 - (double)h1.lr * h1.weight_decay);
            double update = (double)h1.lr / h1.bias_correction1 * mi /
                            (sqrt(vi) / sqrt((double)h1.bias_correction2) + h1.eps);
            assert_true(fabs(m[0][i] - mi) <= 4 * U * fabs(mi));
            assert_true(fabs(v[0][i] - vi) <= 6 * U * vi);
            assert_true(fabs(p[0][i] - (decayed - update)) <= 12 * U * (fabs(decayed) + fabs(update)));
        }

        for (int t = 0; t < nt; t++) {
            int k = t == 0 ? 0 : 1;
            memcpy(p[k], p0, n * sizeof *p0);
            memset(m[k], 0, n * sizeof *p0);
            memset(v[k], 0, n * sizeof *p0);
            for (int step = 1; step <= 3; step++) {
                whet_adamw_params hp = adamw_step_params(step);
                tables[t]->adamw(p[k], m[k], v[k], g[step - 1], n, &hp);
            }
            if (k == 1) {
                assert_memory_equal(p[1], p[0], n * sizeof *p0);
                assert_memory_equal(m[1], m[0], n * sizeof *p0);
                assert_memory_equal(v[1], v[0], n * sizeof *p0);
            }
        }
        kc_free(p0);
        for (int k = 0; k < 3; k++)
            kc_free(g[k]);
        for (int k = 0; k < 2; k++)
            kc_free(p[k]), kc_free(m[k]), kc_free(v[k]);
    }
}

/* ---- determinism across thread counts ---- */

enum { OP_SWIGLU, OP_SWIGLU_BACK, OP_GELU, OP_GELU_BACK, OP_ROPE, OP_ADAMW, NOPS };
static const char *const op_names[NOPS] = {"swiglu_forward", "swiglu_backward", "gelu_forward",
                                           "gelu_backward",  "rope",            "adamw"};

typedef struct {
    const whet_kernels *k;
    int op;
    const float *a, *b, *c;
    float *out0, *out1, *out2;
    const rope_shape *rope;
    const whet_adamw_params *adamw;
} range_ctx;

static void run_range(void *p, size_t begin, size_t end)
{
    range_ctx *x = p;
    size_t n = end - begin;
    switch (x->op) {
    case OP_SWIGLU: x->k->swiglu_forward(x->out0 + begin, x->a + begin, x->b + begin, n); break;
    case OP_SWIGLU_BACK:
        x->k->swiglu_backward(x->out0 + begin, x->out1 + begin, x->c + begin, x->a + begin, x->b + begin, n);
        break;
    case OP_GELU: x->k->gelu_forward(x->out0 + begin, x->a + begin, n); break;
    case OP_GELU_BACK: x->k->gelu_backward(x->out0 + begin, x->c + begin, x->a + begin, n); break;
    case OP_ROPE: { /* split by tokens */
        const rope_shape *s = x->rope;
        x->k->rope(x->out0 + begin * s->stride, n, s->heads, s->head_dim, s->stride, s->positions + begin, s->cos_t,
                   s->sin_t, WHET_ROPE_INTERLEAVED, 0);
        break;
    }
    case OP_ADAMW: x->k->adamw(x->out0 + begin, x->out1 + begin, x->out2 + begin, x->a + begin, n, x->adamw); break;
    }
}

static void same_bits_on_any_thread_count(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    const size_t n = kc_sizes[kc_nsizes - 1];
    kc_rng r = kc_seed(37);
    rope_shape rope = rope_make(&r, 47, 2, 40); /* 47 tokens · (80 + 5) floats fit in n */
    float *a = kc_floats(n), *b = kc_floats(n), *c = kc_floats(n);
    float *out[3], *first[3];
    for (int k = 0; k < 3; k++)
        out[k] = kc_floats(n), first[k] = kc_floats(n);
    fill_activation(&r, a, n, -8, 8);
    kc_fill(&r, b, n, -2, 2);
    kc_fill(&r, c, n, -2, 2);
    whet_adamw_params hp = adamw_step_params(2);
    for (int t = 0; t < nt; t++) {
        for (int op = 0; op < NOPS; op++) {
            size_t items = op == OP_ROPE ? rope.tokens : n;
            for (int threads = 1; threads <= 3; threads++) {
                whet_compute *cc = whet_compute_create(tables[t], threads);
                assert_non_null(cc);
                /* in-place kernels start from the same data every time */
                memcpy(out[0], b, n * sizeof *b);
                memcpy(out[1], c, n * sizeof *c);
                for (size_t i = 0; i < n; i++)
                    out[2][i] = c[i] * c[i];
                range_ctx ctx = {.k = tables[t], .op = op, .a = a, .b = b, .c = c, .out0 = out[0], .out1 = out[1],
                                 .out2 = out[2], .rope = &rope, .adamw = &hp};
                whet_compute_for(cc, items, 1, run_range, &ctx);
                whet_compute_destroy(cc);
                for (int k = 0; k < 3; k++) {
                    if (threads == 1)
                        memcpy(first[k], out[k], n * sizeof *out[k]);
                    else if (memcmp(first[k], out[k], n * sizeof *out[k]))
                        fail_msg("%s %s: %d threads differ from 1", tables[t]->name, op_names[op], threads);
                }
            }
        }
    }
    kc_free(a), kc_free(b), kc_free(c);
    for (int k = 0; k < 3; k++)
        kc_free(out[k]), kc_free(first[k]);
    rope_free(&rope);
}

int main(void)
{
    kc_print_tables();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(swiglu_matches_double),
        cmocka_unit_test(gelu_matches_double),
        cmocka_unit_test(rope_matches_scalar_and_inverts),
        cmocka_unit_test(adamw_three_steps_match_scalar),
        cmocka_unit_test(same_bits_on_any_thread_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
