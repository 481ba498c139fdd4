/* attention_forward on every ISA table this build and CPU run, against a naive
 * double-precision softmax(scale·QKᵀ + causal mask)·V.
 *
 * Shapes: n_q ∈ {1, 3, 17, 33, 45, 130} (130 crosses two 64-key blocks; AVX-512
 * takes rows in tiles of 32 in two halves: 17 and 45 end in a tile with one
 * half, or part of one, empty),
 * head_dim ∈ {8, 64, 80} (80: a tail for every vector width), heads/kv_heads
 * ∈ {4/4, 4/2, 6/2, 4/1} (GQA, taken in turn), full causal (q_offset 0) and KV-cache style
 * (q_offset > 0, n_kv = q_offset + n_q), padded row strides, misaligned
 * buffers. Tolerances: |out − ref| ≤ 2e-5·(1 + max|v|) and
 * |lse − ref| ≤ 2e-5·(1 + |ref|): fp32 dot products of length ≤ 80 on
 * inputs in [−1, 1] with a ≤ 1-ULP exp.
 * Also: keys past the causal diagonal are never read (NaN there changes
 * nothing); lse = NULL gives the same output; computing heads one at a time
 * gives the bits of one call over all heads, and so do queries split into
 * parts of rows (as the model splits long sequences); out beyond the written
 * heads and rows is untouched. */
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

typedef struct {
    size_t n_q, q_offset, heads, kv_heads, head_dim;
    size_t q_pad, kv_pad, out_pad; /* extra floats per row */
} attn_case;

/* the naive reference, one (head, query) at a time, in double */
static void reference(double *out, double *lse, const float *q, const float *k, const float *v, const attn_case *c,
                      size_t n_kv, float scale)
{
    size_t D = c->head_dim, group = c->heads / c->kv_heads;
    size_t qs = c->heads * D + c->q_pad, ks = c->kv_heads * D + c->kv_pad;
    double *s = malloc(n_kv * sizeof *s);
    for (size_t h = 0; h < c->heads; h++)
        for (size_t i = 0; i < c->n_q; i++) {
            size_t end = c->q_offset + i + 1;
            double max = -INFINITY;
            for (size_t j = 0; j < end; j++) {
                double dot = 0;
                for (size_t d = 0; d < D; d++)
                    dot += (double)q[i * qs + h * D + d] * k[j * ks + (h / group) * D + d];
                s[j] = dot * scale;
                max = s[j] > max ? s[j] : max;
            }
            double sum = 0;
            for (size_t j = 0; j < end; j++) {
                s[j] = exp(s[j] - max);
                sum += s[j];
            }
            for (size_t d = 0; d < D; d++)
                out[(i * c->heads + h) * D + d] = 0;
            for (size_t j = 0; j < end; j++)
                for (size_t d = 0; d < D; d++)
                    out[(i * c->heads + h) * D + d] += s[j] / sum * v[j * ks + (h / group) * D + d];
            lse[h * c->n_q + i] = max + log(sum);
        }
    free(s);
}

static void check_case(const whet_kernels *kt, const attn_case *c, kc_rng *rng)
{
    size_t D = c->head_dim, n_kv = c->q_offset + c->n_q;
    size_t n_kv_alloc = n_kv + 5; /* rows past n_kv... and past the diagonal hold NaN */
    size_t qs = c->heads * D + c->q_pad, ks = c->kv_heads * D + c->kv_pad, os = c->heads * D + c->out_pad;
    float scale = 1.0f / sqrtf((float)D);
    float *q = kc_floats(c->n_q * qs), *k = kc_floats(n_kv_alloc * ks), *v = kc_floats(n_kv_alloc * ks);
    kc_fill(rng, q, c->n_q * qs, -1.0f, 1.0f);
    kc_fill(rng, k, n_kv_alloc * ks, -1.0f, 1.0f);
    kc_fill(rng, v, n_kv_alloc * ks, -1.0f, 1.0f);
    for (size_t j = n_kv; j < n_kv_alloc; j++)
        for (size_t d = 0; d < ks; d++)
            k[j * ks + d] = v[j * ks + d] = NAN;
    double *ref = malloc(c->n_q * c->heads * D * sizeof *ref), *ref_lse = malloc(c->heads * c->n_q * sizeof *ref_lse);
    reference(ref, ref_lse, q, k, v, c, n_kv, scale);

    float *out = kc_floats(c->n_q * os), *lse = kc_floats(c->heads * c->n_q);
    for (size_t i = 0; i < c->n_q * os; i++)
        out[i] = 12345.0f; /* sentinel: padding must stay */
    /* n_kv_alloc: keys j ≥ q_offset + n_q are past every query's diagonal (NaN) */
    kt->attention_forward(out, lse, q, k, v, c->n_q, n_kv_alloc, c->q_offset, c->heads, c->kv_heads, D, qs, ks, os,
                          scale, 0, c->heads);
    double worst = 0, worst_lse = 0;
    for (size_t i = 0; i < c->n_q; i++) {
        for (size_t h = 0; h < c->heads; h++)
            for (size_t d = 0; d < D; d++) {
                double err = fabs((double)out[i * os + h * D + d] - ref[(i * c->heads + h) * D + d]) / 2.0;
                if (!(err <= worst))
                    worst = err;
            }
        for (size_t p = c->heads * D; p < os; p++)
            assert_true(out[i * os + p] == 12345.0f);
    }
    for (size_t x = 0; x < c->heads * c->n_q; x++) {
        double err = fabs((double)lse[x] - ref_lse[x]) / (1.0 + fabs(ref_lse[x]));
        if (!(err <= worst_lse))
            worst_lse = err;
    }
    if (!(worst <= 2e-5) || !(worst_lse <= 2e-5))
        fail_msg("%s: n_q=%zu q_offset=%zu heads=%zu/%zu head_dim=%zu: max error %.3g (out), %.3g (lse)", kt->name,
                 c->n_q, c->q_offset, c->heads, c->kv_heads, D, worst, worst_lse);

    /* head by head, and without lse: the same bits */
    float *out2 = kc_floats(c->n_q * os), *lse2 = kc_floats(c->heads * c->n_q);
    for (size_t i = 0; i < c->n_q * os; i++)
        out2[i] = 12345.0f;
    for (size_t h = 0; h < c->heads; h++)
        kt->attention_forward(out2, lse2, q, k, v, c->n_q, n_kv, c->q_offset, c->heads, c->kv_heads, D, qs, ks, os,
                              scale, h, h + 1);
    assert_memory_equal(out, out2, c->n_q * os * sizeof *out);
    assert_memory_equal(lse, lse2, c->heads * c->n_q * sizeof *lse);
    kt->attention_forward(out2, NULL, q, k, v, c->n_q, n_kv, c->q_offset, c->heads, c->kv_heads, D, qs, ks, os, scale,
                          0, c->heads);
    assert_memory_equal(out, out2, c->n_q * os * sizeof *out);

    kc_free(q), kc_free(k), kc_free(v), kc_free(out), kc_free(lse), kc_free(out2), kc_free(lse2);
    free(ref), free(ref_lse);
}

static void matches_naive_reference(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    const size_t n_qs[] = {1, 3, 17, 33, 45, 130};
    const size_t dims[] = {8, 64, 80};
    const size_t gqa[][2] = {{4, 4}, {4, 2}, {6, 2}, {4, 1}};
    for (int t = 0; t < nt; t++) {
        kc_rng rng = kc_seed(77);
        /* every n_q × head_dim × offset; the GQA layouts in turn (each met 8 to 10 times) */
        for (size_t a = 0; a < 6; a++)
            for (size_t b = 0; b < 3; b++)
                for (size_t off = 0; off < 2; off++) {
                    size_t g = (a + b + off) % 4;
                    /* with an offset: a cache of 1 or 70 tokens before the queries */
                    size_t offsets[] = {0, (a + b) % 2 ? 70 : 1};
                    attn_case c = {.n_q = n_qs[a], .q_offset = offsets[off], .heads = gqa[g][0],
                                   .kv_heads = gqa[g][1], .head_dim = dims[b], .q_pad = off ? 3 : 0,
                                   .kv_pad = off ? 0 : 5, .out_pad = 1 + off};
                    check_case(tables[t], &c, &rng);
                }
    }
}

/* A query's result depends only on its own row: one call over 40 queries
 * equals 40 calls of one query each (the KV-cache decode pattern). */
static void one_query_at_a_time_matches(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    const size_t T = 40, H = 4, KVH = 2, D = 64, qs = H * D, ks = KVH * D;
    for (int t = 0; t < nt; t++) {
        const whet_kernels *kt = tables[t];
        kc_rng rng = kc_seed(5);
        float *q = kc_floats(T * qs), *k = kc_floats(T * ks), *v = kc_floats(T * ks);
        float *out = kc_floats(T * qs), *step = kc_floats(T * qs), *lse = kc_floats(H * T), *lse1 = kc_floats(H);
        kc_fill(&rng, q, T * qs, -2.0f, 2.0f);
        kc_fill(&rng, k, T * ks, -2.0f, 2.0f);
        kc_fill(&rng, v, T * ks, -1.0f, 1.0f);
        kt->attention_forward(out, lse, q, k, v, T, T, 0, H, KVH, D, qs, ks, qs, 0.125f, 0, H);
        for (size_t i = 0; i < T; i++) {
            kt->attention_forward(step + i * qs, lse1, q + i * qs, k, v, 1, i + 1, i, H, KVH, D, qs, ks, qs, 0.125f, 0,
                                  H);
            for (size_t h = 0; h < H; h++)
                assert_true(lse1[h] == lse[h * T + i]);
        }
        assert_memory_equal(out, step, T * qs * sizeof *out);
        kc_free(q), kc_free(k), kc_free(v), kc_free(out), kc_free(step), kc_free(lse), kc_free(lse1);
    }
}

/* The model splits a long sequence's queries into parts, one head per call
 * (model/forward.c): rows [r0, r1) as n_q = r1 − r0 queries at q_offset r0
 * over keys [0, r1), each part's lse as [heads, r1 − r0]. Any such split
 * gives the bits of one call over all rows and heads: parts that start
 * inside a tile of rows or a block of keys, and ones that start on them. */
static void query_row_parts_match(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    const size_t T = 150, H = 3, KVH = 1, D = 64, qs = H * D, ks = KVH * D;
    const size_t splits[][6] = {{0, 37, 69, 128, 150}, {0, 64, 150}, {0, 1, 149, 150}};
    for (int t = 0; t < nt; t++) {
        const whet_kernels *kt = tables[t];
        kc_rng rng = kc_seed(6);
        float *q = kc_floats(T * qs), *k = kc_floats(T * ks), *v = kc_floats(T * ks);
        float *out = kc_floats(T * qs), *parts = kc_floats(T * qs), *lse = kc_floats(H * T), *lse_p = kc_floats(H * T);
        kc_fill(&rng, q, T * qs, -2.0f, 2.0f);
        kc_fill(&rng, k, T * ks, -2.0f, 2.0f);
        kc_fill(&rng, v, T * ks, -1.0f, 1.0f);
        kt->attention_forward(out, lse, q, k, v, T, T, 0, H, KVH, D, qs, ks, qs, 0.125f, 0, H);
        for (size_t sp = 0; sp < sizeof splits / sizeof splits[0]; sp++) {
            memset(parts, 0, T * qs * sizeof *parts);
            for (size_t p = 0; splits[sp][p] < T; p++) {
                size_t r0 = splits[sp][p], n = splits[sp][p + 1] - r0;
                for (size_t h = 0; h < H; h++)
                    kt->attention_forward(parts + r0 * qs, lse_p + H * r0, q + r0 * qs, k, v, n, r0 + n, r0, H, KVH, D,
                                          qs, ks, qs, 0.125f, h, h + 1);
                for (size_t h = 0; h < H; h++)
                    for (size_t i = 0; i < n; i++)
                        if (lse_p[H * r0 + h * n + i] != lse[h * T + r0 + i])
                            fail_msg("%s: split %zu, row %zu, head %zu: lse %.9g vs %.9g", kt->name, sp, r0 + i, h,
                                     lse_p[H * r0 + h * n + i], lse[h * T + r0 + i]);
            }
            if (memcmp(out, parts, T * qs * sizeof *out) != 0)
                fail_msg("%s: split %zu: the output differs from one call's", kt->name, sp);
        }
        kc_free(q), kc_free(k), kc_free(v), kc_free(out), kc_free(parts), kc_free(lse), kc_free(lse_p);
    }
}

/* Large scores (|s| up to ~100): the online rescaling must not overflow. */
static void large_scores_stay_finite(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    for (int t = 0; t < nt; t++) {
        attn_case c = {.n_q = 130, .q_offset = 0, .heads = 2, .kv_heads = 1, .head_dim = 8};
        size_t D = 8, n = 130, qs = 16, ks = 8;
        kc_rng rng = kc_seed(9);
        float *q = kc_floats(n * qs), *k = kc_floats(n * ks), *v = kc_floats(n * ks), *out = kc_floats(n * qs);
        float *lse = kc_floats(2 * n);
        kc_fill(&rng, q, n * qs, -10.0f, 10.0f);
        kc_fill(&rng, k, n * ks, -10.0f, 10.0f);
        kc_fill(&rng, v, n * ks, -1.0f, 1.0f);
        double *ref = malloc(n * qs * sizeof *ref), *ref_lse = malloc(2 * n * sizeof *ref_lse);
        reference(ref, ref_lse, q, k, v, &c, n, 0.35f);
        tables[t]->attention_forward(out, lse, q, k, v, n, n, 0, 2, 1, D, qs, ks, qs, 0.35f, 0, 2);
        for (size_t i = 0; i < n * qs; i++) {
            assert_true(isfinite(out[i]));
            if (fabs(out[i] - ref[i]) > 1e-4)
                fail_msg("%s: element %zu: %g vs %g", tables[t]->name, i, out[i], ref[i]);
        }
        for (size_t i = 0; i < 2 * n; i++)
            assert_true(fabs(lse[i] - ref_lse[i]) <= 1e-5 * (1 + fabs(ref_lse[i])));
        kc_free(q), kc_free(k), kc_free(v), kc_free(out), kc_free(lse);
        free(ref), free(ref_lse);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matches_naive_reference),
        cmocka_unit_test(one_query_at_a_time_matches),
        cmocka_unit_test(query_row_parts_match),
        cmocka_unit_test(large_scores_stay_finite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
