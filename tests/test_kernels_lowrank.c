/* LoRA's rank-r kernels (lowrank_project, lowrank_weight_grad) on every kernel
 * table this build and CPU run, scalar included.
 *
 * The scalar reference is held to a double-precision sum with a bound that
 * counts its roundings (u = 2⁻²⁴): project's 16 partials take ⌈K/16⌉ fused
 * multiply-adds each, then 4 adds and the scale; weight_grad takes one fused
 * multiply-add per row, then the accumulating add. Every other table must
 * give the scalar reference's bits: the order of operations is part of the
 * contract, which is what makes a LoRA run the same on every ISA and thread
 * count. Shapes are odd (rows, r, K and column ranges off the vector widths,
 * leading dimensions wider than the rows), and nothing outside the output's
 * rows × columns may be written. */
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

#define U 0x1p-24
#define CANARY_VALUE 12345.0f

static const size_t row_counts[] = {1, 2, 3, 4, 7, 37};
static const size_t ranks[] = {1, 3, 4, 5, 8, 9, 16, 17};
static const size_t widths[] = {1, 15, 16, 17, 33, 47, 48, 49, 100, 577};

#define COUNT(a) (sizeof a / sizeof a[0])

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static void fill_canary(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = CANARY_VALUE;
}

/* y[rows, r] in a buffer of leading dimension ldy = r + 3: the 3 extra
 * columns and the rows' ends must stay canaries */
static void project_matches_reference(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    kc_rng rng = kc_seed(11);
    double worst = 0;
    for (size_t a = 0; a < COUNT(row_counts); a++)
        for (size_t b = 0; b < COUNT(ranks); b++)
            for (size_t c = 0; c < COUNT(widths); c++) {
                size_t rows = row_counts[a], r = ranks[b], K = widths[c];
                size_t ldx = K + 5, ldw = K + 2, ldy = r + 3;
                float *x = kc_floats(rows * ldx), *w = kc_floats(r * ldw);
                float *want = kc_floats(rows * ldy), *got = kc_floats(rows * ldy);
                kc_fill(&rng, x, rows * ldx, -2.0f, 2.0f);
                kc_fill(&rng, w, r * ldw, -1.0f, 1.0f);
                float scale = 1.75f;
                fill_canary(want, rows * ldy);
                tables[0]->lowrank_project(want, ldy, x, ldx, w, ldw, rows, r, K, scale);
                for (size_t i = 0; i < rows; i++)
                    for (size_t j = 0; j < ldy; j++) {
                        float v = want[i * ldy + j];
                        if (j >= r) {
                            if (bits(v) != bits(CANARY_VALUE))
                                fail_msg("scalar wrote y[%zu][%zu] past r = %zu", i, j, r);
                            continue;
                        }
                        double ref = 0, mag = 0;
                        for (size_t k = 0; k < K; k++) {
                            ref += (double)x[i * ldx + k] * w[j * ldw + k];
                            mag += fabs((double)x[i * ldx + k] * w[j * ldw + k]);
                        }
                        ref *= scale, mag *= scale;
                        double bound = ((double)(K + 15) / 16 + 5) * U * mag * 1.001 + 0x1p-149;
                        double q = fabs(v - ref) / bound;
                        if (q > worst)
                            worst = q;
                        if (!(q <= 1))
                            fail_msg("scalar rows=%zu r=%zu K=%zu y[%zu][%zu] = %.9g, double %.9g, bound %.3g", rows,
                                     r, K, i, j, v, ref, bound);
                    }
                for (int t = 1; t < nt; t++) {
                    fill_canary(got, rows * ldy);
                    tables[t]->lowrank_project(got, ldy, x, ldx, w, ldw, rows, r, K, scale);
                    for (size_t e = 0; e < rows * ldy; e++)
                        if (bits(got[e]) != bits(want[e]))
                            fail_msg("%s rows=%zu r=%zu K=%zu: y[%zu][%zu] = %.9g, scalar %.9g", tables[t]->name,
                                     rows, r, K, e / ldy, e % ldy, got[e], want[e]);
                }
                kc_free(x), kc_free(w), kc_free(want), kc_free(got);
            }
    print_message("lowrank_project: scalar's worst error/bound %.3f; %d tables give its bits\n", worst, nt - 1);
}

/* dw[r, cols] with ldw = cols + 4, over columns [c0, c1) of it: the columns
 * outside, the extra ones and the rows past r (one spare row) stay canaries;
 * with accumulate the kernel adds to what is there */
static void weight_grad_matches_reference(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    kc_rng rng = kc_seed(12);
    double worst = 0;
    for (size_t a = 0; a < COUNT(row_counts); a++)
        for (size_t b = 0; b < COUNT(ranks); b++)
            for (size_t c = 0; c < COUNT(widths); c++)
                for (int accumulate = 0; accumulate < 2; accumulate++) {
                    size_t rows = row_counts[a], r = ranks[b], cols = widths[c];
                    size_t c0 = cols > 3 ? 3 : 0, c1 = cols > 3 ? cols - 1 : cols;
                    size_t ldg = r + 2, ldx = cols + 7, ldw = cols + 4, out = (r + 1) * ldw;
                    float *g = kc_floats(rows * ldg), *x = kc_floats(rows * ldx);
                    float *start = kc_floats(out), *want = kc_floats(out), *got = kc_floats(out);
                    kc_fill(&rng, g, rows * ldg, -1.0f, 1.0f);
                    kc_fill(&rng, x, rows * ldx, -2.0f, 2.0f);
                    fill_canary(start, out);
                    if (accumulate)
                        for (size_t j = 0; j < r; j++)
                            kc_fill(&rng, start + j * ldw + c0, c1 - c0, -4.0f, 4.0f);
                    memcpy(want, start, out * sizeof(float));
                    tables[0]->lowrank_weight_grad(want, ldw, g, ldg, x, ldx, rows, r, c0, c1, accumulate);
                    for (size_t j = 0; j <= r; j++)
                        for (size_t col = 0; col < ldw; col++) {
                            size_t e = j * ldw + col;
                            if (j == r || col < c0 || col >= c1) {
                                if (bits(want[e]) != bits(CANARY_VALUE))
                                    fail_msg("scalar wrote dw[%zu][%zu] outside rows < %zu, columns [%zu,%zu)", j,
                                             col, r, c0, c1);
                                continue;
                            }
                            double ref = accumulate ? start[e] : 0, mag = fabs(ref);
                            for (size_t i = 0; i < rows; i++) {
                                double term = (double)g[i * ldg + j] * x[i * ldx + col];
                                ref += term, mag += fabs(term);
                            }
                            double bound = (double)(rows + 1) * U * mag * 1.001 + 0x1p-149;
                            double q = fabs(want[e] - ref) / bound;
                            if (q > worst)
                                worst = q;
                            if (!(q <= 1))
                                fail_msg("scalar rows=%zu r=%zu dw[%zu][%zu] = %.9g, double %.9g, bound %.3g", rows,
                                         r, j, col, want[e], ref, bound);
                        }
                    for (int t = 1; t < nt; t++) {
                        memcpy(got, start, out * sizeof(float));
                        tables[t]->lowrank_weight_grad(got, ldw, g, ldg, x, ldx, rows, r, c0, c1, accumulate);
                        for (size_t e = 0; e < out; e++)
                            if (bits(got[e]) != bits(want[e]))
                                fail_msg("%s rows=%zu r=%zu columns [%zu,%zu) accumulate=%d: dw[%zu][%zu] = %.9g, "
                                         "scalar %.9g",
                                         tables[t]->name, rows, r, c0, c1, accumulate, e / ldw, e % ldw, got[e],
                                         want[e]);
                    }
                    kc_free(g), kc_free(x), kc_free(start), kc_free(want), kc_free(got);
                }
    print_message("lowrank_weight_grad: scalar's worst error/bound %.3f; %d tables give its bits\n", worst, nt - 1);
}

/* The callers split project by rows and weight_grad by columns across
 * threads: any split must give the whole call's bits. */
static void splits_give_the_same_bits(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    kc_rng rng = kc_seed(13);
    size_t rows = 41, r = 8, K = 203;
    float *x = kc_floats(rows * K), *w = kc_floats(r * K), *g = kc_floats(rows * r);
    float *whole = kc_floats(rows * r), *parts = kc_floats(rows * r);
    float *dw_whole = kc_floats(r * K), *dw_parts = kc_floats(r * K);
    kc_fill(&rng, x, rows * K, -1.0f, 1.0f);
    kc_fill(&rng, w, r * K, -1.0f, 1.0f);
    kc_fill(&rng, g, rows * r, -1.0f, 1.0f);
    static const size_t cuts[][3] = {{1, 2, 40}, {3, 17, 29}, {7, 16, 33}};
    for (int t = 0; t < nt; t++) {
        const whet_kernels *k = tables[t];
        k->lowrank_project(whole, r, x, K, w, K, rows, r, K, 0.5f);
        k->lowrank_weight_grad(dw_whole, K, g, r, x, K, rows, r, 0, K, 0);
        for (size_t s = 0; s < COUNT(cuts); s++) {
            size_t at[5] = {0, cuts[s][0], cuts[s][1], cuts[s][2], rows};
            for (int p = 0; p < 4; p++)
                k->lowrank_project(parts + at[p] * r, r, x + at[p] * K, K, w, K, at[p + 1] - at[p], r, K, 0.5f);
            size_t col[5] = {0, cuts[s][0] * 5, cuts[s][1] * 5, cuts[s][2] * 5, K};
            for (int p = 0; p < 4; p++)
                k->lowrank_weight_grad(dw_parts, K, g, r, x, K, rows, r, col[p], col[p + 1], 0);
            if (memcmp(whole, parts, rows * r * sizeof(float)))
                fail_msg("%s: lowrank_project split at rows %zu, %zu, %zu differs", k->name, at[1], at[2], at[3]);
            if (memcmp(dw_whole, dw_parts, r * K * sizeof(float)))
                fail_msg("%s: lowrank_weight_grad split at columns %zu, %zu, %zu differs", k->name, col[1], col[2],
                         col[3]);
        }
    }
    kc_free(x), kc_free(w), kc_free(g), kc_free(whole), kc_free(parts), kc_free(dw_whole), kc_free(dw_parts);
}

int main(void)
{
    kc_print_tables();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(project_matches_reference),
        cmocka_unit_test(weight_grad_matches_reference),
        cmocka_unit_test(splits_give_the_same_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
