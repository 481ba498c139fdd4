/* The norm kernel family (RMSNorm, LayerNorm, softmax, cross-entropy; forward
 * and backward) on every kernel table this build and CPU run, scalar included.
 *
 * Each accuracy test compares against a double-precision reference computed
 * here, with a bound derived by counting the float roundings the kernel
 * contract allows (u = 2⁻²⁴, the float unit roundoff):
 *  - well-conditioned results (forward norms, softmax, the running sum of the
 *    log-sum-exp) are held to a relative error in ULPs;
 *  - results formed by cancellation (backward inputs, LayerNorm outputs near
 *    the mean, the one-hot logit) are held to |Δ| ≤ c·u·Σ|terms|, c counting
 *    the roundings on the way;
 *  - the column-sum weight kernels must give the scalar reference's bits.
 * Row reductions accumulate in double in every table, so their own error,
 * n·2⁻⁵³ relative to Σ|terms|, appears in the bounds as a small extra term.
 * The finite-difference tests check each backward against its own forward; the
 * determinism test runs each kernel split across 1, 2 and 3 threads. */
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

#define U 0x1p-24  /* float unit roundoff: a correctly rounded op errs by ≤ u relative */
#define UD 0x1p-53 /* the same for double */
/* Second-order terms (products of two roundings, u² ≈ 4e-15 relative) are
 * covered by scaling each first-order bound by this. */
#define SECOND_ORDER 1.001
/* glibc's expf and SLEEF's u10 functions err by at most 1 ULP of the result,
 * i.e. 2u relative (an ULP is up to 2u·|result| at the bottom of a binade). */
#define EXP_U 2.0

static const size_t row_counts[] = {1, 2, 5};
#define NROW_COUNTS (sizeof row_counts / sizeof row_counts[0])

/* The worst error/bound ratio seen, and where; a test passes when it is ≤ 1. */
typedef struct {
    double worst;
    char where[200];
} tally;

static void note(tally *t, double err, double bound, const char *isa, const char *what, size_t n, size_t r,
                 size_t i)
{
    double q = bound > 0 ? err / bound : (err > 0 ? INFINITY : 0);
    if (isnan(q))
        q = INFINITY;
    if (q > t->worst) {
        t->worst = q;
        snprintf(t->where, sizeof t->where, "%s %s n=%zu row %zu col %zu: error %.6g, bound %.6g", isa, what, n, r,
                 i, err, bound);
    }
}

static void expect_within(const tally *t, const char *test)
{
    print_message("%-28s worst error/bound %.3f%s%s\n", test, t->worst, t->worst > 0 ? " at " : "",
                  t->worst > 0 ? t->where : "");
    if (!(t->worst <= 1.0))
        fail_msg("%s: %s", test, t->where);
}

static void note_ulps(tally *t, float got, double ref, double ulps, const char *isa, const char *what, size_t n,
                      size_t r, size_t i)
{
    note(t, kc_ulp_error(got, ref), ulps, isa, what, n, r, i);
}

static void note_abs(tally *t, float got, double ref, double bound, const char *isa, const char *what, size_t n,
                     size_t r, size_t i)
{
    note(t, fabs((double)got - ref), bound, isa, what, n, r, i);
}

static void note_bits(tally *t, float got, float want, const char *isa, const char *what, size_t n, size_t r,
                      size_t i)
{
    note(t, memcmp(&got, &want, sizeof got) != 0 ? 1.0 : 0.0, 0.0, isa, what, n, r, i);
}

/* Floats past the end of an output: a row tail stored with a whole vector
 * would overwrite them (kc_floats' slack would hide it from ASan). */
#define GUARD 16
static const float guard_value = 7777.0f;

static void guard_set(float *p, size_t n)
{
    for (size_t i = 0; i < GUARD; i++)
        p[n + i] = guard_value;
}

static void guard_check(tally *t, const float *p, size_t n, const char *isa, const char *what)
{
    for (size_t i = 0; i < GUARD; i++)
        note_bits(t, p[n + i], guard_value, isa, what, n, 0, i);
}

/* The rounding error of the float subtraction x − m, exactly (both are floats,
 * so the difference is exact in double). */
static double sub_error(float x, float m)
{
    if (isinf(x) || isinf(m))
        return 0;
    return fabs((double)(x - m) - ((double)x - (double)m));
}

/* ---- RMSNorm -------------------------------------------------------------- */

static double ref_rstd(const float *x, size_t n, float eps)
{
    double ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    return 1.0 / sqrt(ss / (double)n + (double)eps);
}

/* rstd: one rounding of an accurate double (≤ ½ ULP); y = (x·s)·w: the rounding
 * of s and two products, three roundings of ≤ u relative each. */
#define RMS_RSTD_ULPS (0.5 * SECOND_ORDER)
#define RMS_Y_ULPS (3.0 * SECOND_ORDER)

static void rmsnorm_forward_matches_double(void **state)
{
    (void)state;
    const whet_kernels *tab[WHET_ISA_COUNT];
    int ntab = kc_tables(tab);
    tally t = {0};
    kc_rng rng = kc_seed(1);
    const float eps = 1e-5f;
    for (size_t si = 0; si < kc_nsizes; si++)
        for (size_t ri = 0; ri < NROW_COUNTS; ri++) {
            size_t n = kc_sizes[si], rows = row_counts[ri];
            float *x = kc_floats(rows * n), *w = kc_floats(n), *y = kc_floats(rows * n + GUARD), *y2 = kc_floats(rows * n + GUARD);
            float *rstd = kc_floats(rows);
            kc_fill(&rng, x, rows * n, -2, 2);
            kc_fill(&rng, w, n, -1.5f, 1.5f);
            /* a row far from unit scale */
            for (size_t i = 0; i < n; i++)
                x[(rows - 1) * n + i] *= 300.0f;
            for (int k = 0; k < ntab; k++) {
                guard_set(y, rows * n);
                tab[k]->rmsnorm_forward(y, rstd, x, w, rows, n, eps);
                guard_check(&t, y, rows * n, tab[k]->name, "past y");
                guard_set(y2, rows * n);
                tab[k]->rmsnorm_forward(y2, NULL, x, w, rows, n, eps);
                guard_check(&t, y2, rows * n, tab[k]->name, "past y without rstd");
                for (size_t r = 0; r < rows; r++) {
                    double s = ref_rstd(x + r * n, n, eps);
                    note_ulps(&t, rstd[r], s, RMS_RSTD_ULPS, tab[k]->name, "rstd", n, r, 0);
                    for (size_t i = 0; i < n; i++) {
                        note_ulps(&t, y[r * n + i], (double)x[r * n + i] * s * w[i], RMS_Y_ULPS, tab[k]->name, "y", n,
                                  r, i);
                        note_bits(&t, y2[r * n + i], y[r * n + i], tab[k]->name, "y without rstd", n, r, i);
                    }
                }
            }
            kc_free(x), kc_free(w), kc_free(y), kc_free(y2), kc_free(rstd);
        }
    expect_within(&t, "rmsnorm_forward");
}

/* A = s·w·dy, B = x·s³/n·Σ dy·w·x, dx = dx0 + A − B. The kernel rounds s·w and
 * ·dy (2 on A), the float coefficient and x·coef (2 on B), A − B and the
 * final += (1 each on |A| + |B|, and 1 on |dx0|): u·(4|A| + 4|B| + |dx0|), plus
 * the double dot's n·2⁻⁵³·Σ|dy·w·x| carried through x·s³/n. */
static double rms_dx_bound(double a, double b, double dx0, double x, double s, double sum_abs, size_t n)
{
    return SECOND_ORDER * (U * (4 * fabs(a) + 4 * fabs(b) + fabs(dx0)) +
                           fabs(x) * s * s * s * (double)(n + 8) * UD * sum_abs / (double)n);
}

static void rmsnorm_backward_input_matches_double(void **state)
{
    (void)state;
    const whet_kernels *tab[WHET_ISA_COUNT];
    int ntab = kc_tables(tab);
    tally t = {0};
    kc_rng rng = kc_seed(2);
    for (size_t si = 0; si < kc_nsizes; si++)
        for (size_t ri = 0; ri < NROW_COUNTS; ri++) {
            size_t n = kc_sizes[si], rows = row_counts[ri];
            float *x = kc_floats(rows * n), *w = kc_floats(n), *dy = kc_floats(rows * n), *dx0 = kc_floats(rows * n);
            float *dx = kc_floats(rows * n + GUARD), *rstd = kc_floats(rows);
            kc_fill(&rng, x, rows * n, -2, 2);
            kc_fill(&rng, w, n, -1.5f, 1.5f);
            kc_fill(&rng, dy, rows * n, -1, 1);
            kc_fill(&rng, dx0, rows * n, -0.5f, 0.5f);
            for (size_t r = 0; r < rows; r++)
                rstd[r] = (float)ref_rstd(x + r * n, n, 1e-5f);
            for (int k = 0; k < ntab; k++) {
                memcpy(dx, dx0, rows * n * sizeof *dx);
                guard_set(dx, rows * n);
                tab[k]->rmsnorm_backward_input(dx, dy, x, w, rstd, rows, n);
                guard_check(&t, dx, rows * n, tab[k]->name, "past dx");
                for (size_t r = 0; r < rows; r++) {
                    const float *xr = x + r * n, *dyr = dy + r * n;
                    double s = rstd[r], dot = 0, sum_abs = 0;
                    for (size_t i = 0; i < n; i++) {
                        dot += (double)dyr[i] * w[i] * xr[i];
                        sum_abs += fabs((double)dyr[i] * w[i] * xr[i]);
                    }
                    double coef = dot * s * s * s / (double)n;
                    for (size_t i = 0; i < n; i++) {
                        double a = s * w[i] * dyr[i], b = xr[i] * coef, d0 = dx0[r * n + i];
                        note_abs(&t, dx[r * n + i], d0 + a - b, rms_dx_bound(a, b, d0, xr[i], s, sum_abs, n),
                                 tab[k]->name, "dx", n, r, i);
                    }
                }
            }
            kc_free(x), kc_free(w), kc_free(dy), kc_free(dx0), kc_free(dx), kc_free(rstd);
        }
    expect_within(&t, "rmsnorm_backward_input");
}

/* Float column sums over `rows` terms of two roundings each: γ_(rows+1)·Σ|terms|
 * for the sum, u·|result| for the final +=. */
static double column_sum_bound(size_t rows, double sum_abs, double result)
{
    return SECOND_ORDER * (U * (double)(rows + 1) * sum_abs + U * fabs(result));
}

static void rmsnorm_backward_weight_matches_reference(void **state)
{
    (void)state;
    const whet_kernels *tab[WHET_ISA_COUNT];
    int ntab = kc_tables(tab);
    tally t = {0};
    kc_rng rng = kc_seed(3);
    for (size_t si = 0; si < kc_nsizes; si++)
        for (size_t ri = 0; ri < NROW_COUNTS; ri++) {
            size_t n = kc_sizes[si], rows = row_counts[ri] * 7; /* enough rows for rounding to build up */
            float *x = kc_floats(rows * n), *dy = kc_floats(rows * n), *rstd = kc_floats(rows);
            float *dw0 = kc_floats(n), *dw = kc_floats(n), *want = kc_floats(n);
            kc_fill(&rng, x, rows * n, -2, 2);
            kc_fill(&rng, dy, rows * n, -1, 1);
            kc_fill(&rng, rstd, rows, 0.5f, 2);
            kc_fill(&rng, dw0, n, -1, 1);
            /* a column range that leaves the first and last column alone */
            size_t c0 = n > 2 ? 1 : 0, c1 = n > 2 ? n - 1 : n;
            memcpy(want, dw0, n * sizeof *want);
            whet_kernels_for(WHET_ISA_SCALAR)->rmsnorm_backward_weight(want, dy, x, rstd, rows, n, c0, c1);
            for (int k = 0; k < ntab; k++) {
                memcpy(dw, dw0, n * sizeof *dw);
                tab[k]->rmsnorm_backward_weight(dw, dy, x, rstd, rows, n, c0, c1);
                for (size_t c = 0; c < n; c++) {
                    note_bits(&t, dw[c], c >= c0 && c < c1 ? want[c] : dw0[c], tab[k]->name, "dweight bits", n, 0, c);
                    if (c < c0 || c >= c1)
                        continue;
                    double sum = 0, sum_abs = 0;
                    for (size_t r = 0; r < rows; r++) {
                        double term = (double)dy[r * n + c] * x[r * n + c] * rstd[r];
                        sum += term, sum_abs += fabs(term);
                    }
                    note_abs(&t, dw[c], dw0[c] + sum, column_sum_bound(rows, sum_abs, dw0[c] + sum), tab[k]->name,
                             "dweight", n, 0, c);
                }
            }
            kc_free(x), kc_free(dy), kc_free(rstd), kc_free(dw0), kc_free(dw), kc_free(want);
        }
    expect_within(&t, "rmsnorm_backward_weight");
}

/* ---- LayerNorm ------------------------------------------------------------ */

static void ref_moments(const float *x, size_t n, float eps, double *mu, double *s, double *sum_abs)
{
    double sum = 0, abs_sum = 0, var = 0;
    for (size_t i = 0; i < n; i++)
        sum += x[i], abs_sum += fabs((double)x[i]);
    *mu = sum / (double)n;
    for (size_t i = 0; i < n; i++)
        var += ((double)x[i] - *mu) * ((double)x[i] - *mu);
    *s = 1.0 / sqrt(var / (double)n + (double)eps);
    *sum_abs = abs_sum;
}

/* y = ((x − m)·s)·w + b with m = fl(μ): P = (x−μ)·s·w takes the subtraction,
 * the rounding of s and two products (4u·|P|) and the mean's rounding
 * (u·|μ|·s·|w|, large next to P when x ≈ μ); the final add u·(|P| + |b|). */
static double ln_y_bound(double p, double mu, double s, double w, double b)
{
    return SECOND_ORDER * U * (5 * fabs(p) + fabs(mu) * s * fabs(w) + fabs(b));
}

static void layernorm_forward_matches_double(void **state)
{
    (void)state;
    const whet_kernels *tab[WHET_ISA_COUNT];
    int ntab = kc_tables(tab);
    tally t = {0};
    kc_rng rng = kc_seed(4);
    const float eps = 1e-5f;
    for (size_t si = 0; si < kc_nsizes; si++)
        for (size_t ri = 0; ri < NROW_COUNTS; ri++) {
            size_t n = kc_sizes[si], rows = row_counts[ri];
            float *x = kc_floats(rows * n), *w = kc_floats(n), *b = kc_floats(n), *y = kc_floats(rows * n + GUARD);
            float *y2 = kc_floats(rows * n + GUARD), *mean = kc_floats(rows), *rstd = kc_floats(rows);
            /* rows off zero, so x − mean cancels */
            kc_fill(&rng, x, rows * n, -1, 3);
            for (size_t i = 0; i < n; i++)
                x[(rows - 1) * n + i] = 50.0f + x[(rows - 1) * n + i] * 0.25f;
            kc_fill(&rng, w, n, -1.5f, 1.5f);
            kc_fill(&rng, b, n, -0.5f, 0.5f);
            for (int k = 0; k < ntab; k++) {
                guard_set(y, rows * n);
                tab[k]->layernorm_forward(y, mean, rstd, x, w, b, rows, n, eps);
                guard_check(&t, y, rows * n, tab[k]->name, "past y");
                guard_set(y2, rows * n);
                tab[k]->layernorm_forward(y2, NULL, NULL, x, w, b, rows, n, eps);
                guard_check(&t, y2, rows * n, tab[k]->name, "past y without stats");
                for (size_t r = 0; r < rows; r++) {
                    double mu, s, sum_abs;
                    ref_moments(x + r * n, n, eps, &mu, &s, &sum_abs);
                    /* mean: one rounding, plus the double sum's n·2⁻⁵³·Σ|x|/n
                     * (relative to a mean that may be near zero) */
                    note_abs(&t, mean[r], mu, SECOND_ORDER * (U * fabs(mu) + (double)(n + 2) * UD * sum_abs / (double)n),
                             tab[k]->name, "mean", n, r, 0);
                    note_ulps(&t, rstd[r], s, RMS_RSTD_ULPS, tab[k]->name, "rstd", n, r, 0);
                    for (size_t i = 0; i < n; i++) {
                        double p = ((double)x[r * n + i] - mu) * s * w[i];
                        note_abs(&t, y[r * n + i], p + b[i], ln_y_bound(p, mu, s, w[i], b[i]), tab[k]->name, "y", n,
                                 r, i);
                        note_bits(&t, y2[r * n + i], y[r * n + i], tab[k]->name, "y without stats", n, r, i);
                    }
                }
            }
            kc_free(x), kc_free(w), kc_free(b), kc_free(y), kc_free(y2), kc_free(mean), kc_free(rstd);
        }
    expect_within(&t, "layernorm_forward");
}

/* x̂ = (x−m)·s, g = dy·w, dx = dx0 + s·(g − mean(g) − x̂·mean(g·x̂)). Counting the
 * kernel's roundings (g; mean(g); g − mean(g); x̂ twice; mean(g·x̂) from the
 * rounded x̂ and its cast; the product with x̂; the difference; ·s; the final
 * +=) gives s·u·(5|g| + 5|mean g| + 7|x̂·mean gx| + 2|x̂|·Σ|g·x̂|/n) + u·|dx0|, plus
 * the double sums' (n+2)·2⁻⁵³ relative to their Σ|terms|. */
static double ln_dx_bound(double s, double g, double mg, double xhat, double mgx, double mean_abs_g,
                          double mean_abs_gx, double dx0, size_t n)
{
    return SECOND_ORDER *
           (s * U * (5 * fabs(g) + 5 * fabs(mg) + 7 * fabs(xhat * mgx) + 2 * fabs(xhat) * mean_abs_gx) +
            U * fabs(dx0) + s * (double)(n + 2) * UD * (mean_abs_g + fabs(xhat) * mean_abs_gx));
}

static void layernorm_backward_input_matches_double(void **state)
{
    (void)state;
    const whet_kernels *tab[WHET_ISA_COUNT];
    int ntab = kc_tables(tab);
    tally t = {0};
    kc_rng rng = kc_seed(5);
    for (size_t si = 0; si < kc_nsizes; si++)
        for (size_t ri = 0; ri < NROW_COUNTS; ri++) {
            size_t n = kc_sizes[si], rows = row_counts[ri];
            float *x = kc_floats(rows * n), *w = kc_floats(n), *dy = kc_floats(rows * n), *dx0 = kc_floats(rows * n);
            float *dx = kc_floats(rows * n + GUARD), *mean = kc_floats(rows), *rstd = kc_floats(rows);
            kc_fill(&rng, x, rows * n, -1, 3);
            kc_fill(&rng, w, n, -1.5f, 1.5f);
            kc_fill(&rng, dy, rows * n, -1, 1);
            kc_fill(&rng, dx0, rows * n, -0.5f, 0.5f);
            for (size_t r = 0; r < rows; r++) {
                double mu, s, sum_abs;
                ref_moments(x + r * n, n, 1e-5f, &mu, &s, &sum_abs);
                mean[r] = (float)mu, rstd[r] = (float)s;
            }
            for (int k = 0; k < ntab; k++) {
                memcpy(dx, dx0, rows * n * sizeof *dx);
                guard_set(dx, rows * n);
                tab[k]->layernorm_backward_input(dx, dy, x, w, mean, rstd, rows, n);
                guard_check(&t, dx, rows * n, tab[k]->name, "past dx");
                for (size_t r = 0; r < rows; r++) {
                    const float *xr = x + r * n, *dyr = dy + r * n;
                    double m = mean[r], s = rstd[r], sg = 0, sgx = 0, ag = 0, agx = 0;
                    for (size_t i = 0; i < n; i++) {
                        double g = (double)dyr[i] * w[i], xhat = ((double)xr[i] - m) * s;
                        sg += g, sgx += g * xhat, ag += fabs(g), agx += fabs(g * xhat);
                    }
                    double mg = sg / (double)n, mgx = sgx / (double)n;
                    for (size_t i = 0; i < n; i++) {
                        double g = (double)dyr[i] * w[i], xhat = ((double)xr[i] - m) * s, d0 = dx0[r * n + i];
                        double want = d0 + s * (g - mg - xhat * mgx);
                        note_abs(&t, dx[r * n + i], want,
                                 ln_dx_bound(s, g, mg, xhat, mgx, ag / (double)n, agx / (double)n, d0, n),
                                 tab[k]->name, "dx", n, r, i);
                    }
                }
            }
            kc_free(x), kc_free(w), kc_free(dy), kc_free(dx0), kc_free(dx), kc_free(mean), kc_free(rstd);
        }
    expect_within(&t, "layernorm_backward_input");
}

static void layernorm_backward_params_matches_reference(void **state)
{
    (void)state;
    const whet_kernels *tab[WHET_ISA_COUNT];
    int ntab = kc_tables(tab);
    tally t = {0};
    kc_rng rng = kc_seed(6);
    for (size_t si = 0; si < kc_nsizes; si++)
        for (size_t ri = 0; ri < NROW_COUNTS; ri++) {
            size_t n = kc_sizes[si], rows = row_counts[ri] * 7;
            float *x = kc_floats(rows * n), *dy = kc_floats(rows * n), *mean = kc_floats(rows), *rstd = kc_floats(rows);
            float *dw0 = kc_floats(n), *db0 = kc_floats(n), *dw = kc_floats(n), *db = kc_floats(n);
            float *want_w = kc_floats(n), *want_b = kc_floats(n);
            kc_fill(&rng, x, rows * n, -1, 3);
            kc_fill(&rng, dy, rows * n, -1, 1);
            kc_fill(&rng, mean, rows, 0.5f, 1.5f);
            kc_fill(&rng, rstd, rows, 0.5f, 2);
            kc_fill(&rng, dw0, n, -1, 1);
            kc_fill(&rng, db0, n, -1, 1);
            size_t c0 = n > 2 ? 1 : 0, c1 = n > 2 ? n - 1 : n;
            memcpy(want_w, dw0, n * sizeof *dw0);
            memcpy(want_b, db0, n * sizeof *db0);
            whet_kernels_for(WHET_ISA_SCALAR)->layernorm_backward_params(want_w, want_b, dy, x, mean, rstd, rows, n, c0, c1);
            for (int k = 0; k < ntab; k++) {
                memcpy(dw, dw0, n * sizeof *dw);
                memcpy(db, db0, n * sizeof *db);
                tab[k]->layernorm_backward_params(dw, db, dy, x, mean, rstd, rows, n, c0, c1);
                for (size_t c = 0; c < n; c++) {
                    int in = c >= c0 && c < c1;
                    note_bits(&t, dw[c], in ? want_w[c] : dw0[c], tab[k]->name, "dweight bits", n, 0, c);
                    note_bits(&t, db[c], in ? want_b[c] : db0[c], tab[k]->name, "dbias bits", n, 0, c);
                    if (!in)
                        continue;
                    double sw = 0, aw = 0, sb = 0, ab = 0;
                    for (size_t r = 0; r < rows; r++) {
                        double g = dy[r * n + c], term = g * ((double)x[r * n + c] - mean[r]) * rstd[r];
                        sw += term, aw += fabs(term), sb += g, ab += fabs(g);
                    }
                    /* x̂ takes one more rounding than the RMSNorm term */
                    note_abs(&t, dw[c], dw0[c] + sw, column_sum_bound(rows + 1, aw, dw0[c] + sw), tab[k]->name,
                             "dweight", n, 0, c);
                    note_abs(&t, db[c], db0[c] + sb, column_sum_bound(rows, ab, db0[c] + sb), tab[k]->name, "dbias",
                             n, 0, c);
                }
            }
            kc_free(x), kc_free(dy), kc_free(mean), kc_free(rstd), kc_free(dw0), kc_free(db0);
            kc_free(dw), kc_free(db), kc_free(want_w), kc_free(want_b);
        }
    expect_within(&t, "layernorm_backward_params");
}

/* ---- softmax -------------------------------------------------------------- */

static float row_max(const float *x, size_t n)
{
    float m = -INFINITY;
    for (size_t i = 0; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

/* y_i = fl(fl(exp(fl(x_i − max)))·fl(1/Σ)). The subtraction errs by δ_i (exact,
 * from sub_error), which exp turns into a relative δ_i; exp adds 2u; the sum of
 * the positive exps inherits the worst term's error; then 1/Σ and the product
 * round once each. In ULPs: (δ_i + max δ)/u + 2 + 2 + 1 + 1. */
static double softmax_ulps(double delta_i, double delta_max, size_t n)
{
    return SECOND_ORDER * ((delta_i + delta_max) / U + 2 * EXP_U + 2) + (double)(n + 2) * UD / U;
}

static void softmax_forward_matches_double(void **state)
{
    (void)state;
    const whet_kernels *tab[WHET_ISA_COUNT];
    int ntab = kc_tables(tab);
    tally t = {0};
    kc_rng rng = kc_seed(7);
    for (size_t si = 0; si < kc_nsizes; si++)
        for (size_t ri = 0; ri < NROW_COUNTS; ri++) {
            size_t n = kc_sizes[si], rows = row_counts[ri];
            float *x = kc_floats(rows * n), *y = kc_floats(rows * n + GUARD), *inplace = kc_floats(rows * n + GUARD);
            kc_fill(&rng, x, rows * n, -8, 8);
            /* masked positions, as causal attention writes them */
            if (n >= 3)
                x[n / 2] = x[n - 1] = -INFINITY;
            for (int k = 0; k < ntab; k++) {
                guard_set(y, rows * n);
                tab[k]->softmax_forward(y, x, rows, n);
                guard_check(&t, y, rows * n, tab[k]->name, "past y");
                memcpy(inplace, x, rows * n * sizeof *x);
                guard_set(inplace, rows * n);
                tab[k]->softmax_forward(inplace, inplace, rows, n);
                guard_check(&t, inplace, rows * n, tab[k]->name, "past in-place y");
                for (size_t r = 0; r < rows; r++) {
                    const float *xr = x + r * n;
                    float m = row_max(xr, n);
                    double sum = 0, dmax = 0;
                    for (size_t i = 0; i < n; i++) {
                        sum += exp((double)xr[i] - m);
                        dmax = fmax(dmax, sub_error(xr[i], m));
                    }
                    for (size_t i = 0; i < n; i++) {
                        note_ulps(&t, y[r * n + i], exp((double)xr[i] - m) / sum,
                                  softmax_ulps(sub_error(xr[i], m), dmax, n), tab[k]->name, "y", n, r, i);
                        note_bits(&t, inplace[r * n + i], y[r * n + i], tab[k]->name, "in place", n, r, i);
                    }
                }
            }
            kc_free(x), kc_free(y), kc_free(inplace);
        }
    expect_within(&t, "softmax_forward");
}

/* dx = y·(dy − d), d = Σ dy·y: the float d (u·|d| plus the double dot's
 * (n+2)·2⁻⁵³·Σ|dy·y|), the difference and the product (u each on |dy| + |d|). */
static double softmax_dx_bound(double y, double dy, double d, double sum_abs, size_t n)
{
    return SECOND_ORDER * fabs(y) * (U * (2 * fabs(dy) + 3 * fabs(d)) + (double)(n + 2) * UD * sum_abs);
}

static void softmax_backward_matches_double(void **state)
{
    (void)state;
    const whet_kernels *tab[WHET_ISA_COUNT];
    int ntab = kc_tables(tab);
    tally t = {0};
    kc_rng rng = kc_seed(8);
    for (size_t si = 0; si < kc_nsizes; si++)
        for (size_t ri = 0; ri < NROW_COUNTS; ri++) {
            size_t n = kc_sizes[si], rows = row_counts[ri];
            float *x = kc_floats(rows * n), *y = kc_floats(rows * n), *dy = kc_floats(rows * n), *dx = kc_floats(rows * n + GUARD);
            kc_fill(&rng, x, rows * n, -3, 3);
            kc_fill(&rng, dy, rows * n, -1, 1);
            whet_kernels_for(WHET_ISA_SCALAR)->softmax_forward(y, x, rows, n);
            for (int k = 0; k < ntab; k++) {
                /* "=" semantics: whatever dx held before must not leak in */
                kc_fill(&rng, dx, rows * n, -1e6f, 1e6f);
                guard_set(dx, rows * n);
                tab[k]->softmax_backward(dx, dy, y, rows, n);
                guard_check(&t, dx, rows * n, tab[k]->name, "past dx");
                for (size_t r = 0; r < rows; r++) {
                    const float *yr = y + r * n, *dyr = dy + r * n;
                    double d = 0, a = 0;
                    for (size_t i = 0; i < n; i++)
                        d += (double)dyr[i] * yr[i], a += fabs((double)dyr[i] * yr[i]);
                    for (size_t i = 0; i < n; i++)
                        note_abs(&t, dx[r * n + i], yr[i] * (dyr[i] - d), softmax_dx_bound(yr[i], dyr[i], d, a, n),
                                 tab[k]->name, "dx", n, r, i);
                }
            }
            kc_free(x), kc_free(y), kc_free(dy), kc_free(dx);
        }
    expect_within(&t, "softmax_backward");
}

/* ---- cross-entropy -------------------------------------------------------- */

/* Runs lse_update over a row block in chunks of the given widths (cycling), as
 * the training loop does over vocabulary slices. */
static void lse_chunked(const whet_kernels *k, float *rmax, float *rsum, const float *logits, size_t ld,
                        size_t rows, size_t n, const size_t *widths, size_t nwidths)
{
    for (size_t r = 0; r < rows; r++)
        rmax[r] = -INFINITY, rsum[r] = 0;
    for (size_t j = 0, c = 0; j < n; c++) {
        size_t w = widths[c % nwidths];
        if (w > n - j)
            w = n - j;
        k->cross_entropy_lse_update(rmax, rsum, logits + j, ld, rows, w);
        j += w;
    }
}

/* The running sum after the last chunk, in ULPs of Σ exp(x − max): each chunk's
 * exps err by their subtraction's δ (taken against the running max of that
 * chunk) plus 2u; rescaling by exp(old max − new max) is done in double; every
 * chunk rounds the running sum to float once. */
static double lse_sum_ulps(const float *xr, size_t n, const size_t *widths, size_t nwidths)
{
    float m = -INFINITY;
    double dmax = 0;
    size_t chunks = 0;
    for (size_t j = 0, c = 0; j < n; c++, chunks++) {
        size_t w = widths[c % nwidths];
        if (w > n - j)
            w = n - j;
        for (size_t i = j; i < j + w; i++)
            m = xr[i] > m ? xr[i] : m;
        for (size_t i = j; i < j + w; i++)
            dmax = fmax(dmax, sub_error(xr[i], m));
        j += w;
    }
    return SECOND_ORDER * (dmax / U + EXP_U + (double)chunks) + (double)(n + 4 * chunks) * UD / U;
}

static void cross_entropy_lse_matches_double_and_chunking(void **state)
{
    (void)state;
    const whet_kernels *tab[WHET_ISA_COUNT];
    int ntab = kc_tables(tab);
    tally t = {0};
    kc_rng rng = kc_seed(9);
    const size_t whole[] = {SIZE_MAX}, chunks[] = {5, 1, 33, 16, 127};
    for (size_t si = 0; si < kc_nsizes; si++) {
        size_t n = kc_sizes[si], rows = 4, ld = n + 5;
        float *logits = kc_floats(rows * ld), *m1 = kc_floats(rows), *s1 = kc_floats(rows);
        float *mc = kc_floats(rows), *sc = kc_floats(rows);
        kc_fill(&rng, logits, rows * ld, -6, 6);
        /* a row far from zero, and one whose maximum comes last (the running
         * sum must be rescaled chunk after chunk) */
        for (size_t j = 0; j < n; j++) {
            logits[1 * ld + j] += 40.0f;
            logits[2 * ld + j] = -5.0f + 10.0f * (float)j / (float)n + logits[2 * ld + j] * 0.01f;
        }
        for (int k = 0; k < ntab; k++) {
            lse_chunked(tab[k], m1, s1, logits, ld, rows, n, whole, 1);
            lse_chunked(tab[k], mc, sc, logits, ld, rows, n, chunks, sizeof chunks / sizeof chunks[0]);
            for (size_t r = 0; r < rows; r++) {
                const float *xr = logits + r * ld;
                float m = row_max(xr, n);
                double sum = 0;
                for (size_t j = 0; j < n; j++)
                    sum += exp((double)xr[j] - m);
                /* the maximum is exact whatever the chunking */
                note_bits(&t, m1[r], m, tab[k]->name, "running max", n, r, 0);
                note_bits(&t, mc[r], m, tab[k]->name, "chunked running max", n, r, 0);
                double b1 = lse_sum_ulps(xr, n, whole, 1);
                double bc = lse_sum_ulps(xr, n, chunks, sizeof chunks / sizeof chunks[0]);
                note_ulps(&t, s1[r], sum, b1, tab[k]->name, "running sum", n, r, 0);
                note_ulps(&t, sc[r], sum, bc, tab[k]->name, "chunked running sum", n, r, 0);
                /* lse = max + log(sum): a relative error e in the sum is an
                 * absolute error e in lse, so chunked and whole agree to within
                 * the sum of their bounds (in u) */
                double lse1 = m1[r] + log((double)s1[r]), lsec = mc[r] + log((double)sc[r]);
                note(&t, fabs(lse1 - lsec), (b1 + bc) * U, tab[k]->name, "lse chunked vs whole", n, r, 0);
            }
        }
        kc_free(logits), kc_free(m1), kc_free(s1), kc_free(mc), kc_free(sc);
    }
    expect_within(&t, "cross_entropy_lse_update");
}

/* p = exp(fl(l − lse)) with the subtraction's δ and exp's 2u, then ·scale:
 * non-target entries are well-conditioned (ULPs); the target's p − 1 cancels,
 * so there |Δ| ≤ |scale|·(p·(δ + 2u) + u·|p − 1|) + u·|result|. */
static void cross_entropy_backward_checks(void **state)
{
    (void)state;
    const whet_kernels *tab[WHET_ISA_COUNT];
    int ntab = kc_tables(tab);
    tally t = {0};
    kc_rng rng = kc_seed(10);
    const size_t offsets[] = {0, 1000};
    for (size_t si = 0; si < kc_nsizes; si++)
        for (size_t oi = 0; oi < 2; oi++) {
            size_t n = kc_sizes[si], rows = 5, ld = n + 3, off = offsets[oi];
            float *logits = kc_floats(rows * ld), *d = kc_floats(rows * ld), *inplace = kc_floats(rows * ld);
            float *lse = kc_floats(rows), *scale = kc_floats(rows);
            int32_t targets[5];
            kc_fill(&rng, logits, rows * ld, -6, 6);
            kc_fill(&rng, scale, rows, 0.1f, 2);
            scale[3] = -0.5f; /* a negative weight is still just a scale */
            /* mid-chunk, the chunk's last column, past the chunk, ignored, and
             * the chunk's first column (offset 0) or the one just before it */
            targets[0] = (int32_t)(off + n / 2);
            targets[1] = (int32_t)(off + n - 1);
            targets[2] = (int32_t)(off + n + 7);
            targets[3] = -100;
            targets[4] = oi ? (int32_t)(off - 1) : (int32_t)off;
            for (size_t r = 0; r < rows; r++) {
                float m = row_max(logits + r * ld, n);
                double s = 0;
                for (size_t j = 0; j < n; j++)
                    s += exp((double)logits[r * ld + j] - m);
                lse[r] = (float)(m + log(s));
            }
            for (int k = 0; k < ntab; k++) {
                const float sentinel = 12345.0f;
                for (size_t i = 0; i < rows * ld; i++)
                    d[i] = sentinel;
                tab[k]->cross_entropy_backward(d, logits, ld, rows, n, off, targets, lse, scale);
                memcpy(inplace, logits, rows * ld * sizeof *logits);
                tab[k]->cross_entropy_backward(inplace, inplace, ld, rows, n, off, targets, lse, scale);
                for (size_t r = 0; r < rows; r++) {
                    for (size_t j = 0; j < ld; j++) {
                        size_t i = r * ld + j;
                        if (j >= n) { /* the padding between rows stays as it was */
                            note_bits(&t, d[i], sentinel, tab[k]->name, "padding", n, r, j);
                            note_bits(&t, inplace[i], logits[i], tab[k]->name, "in-place padding", n, r, j);
                            continue;
                        }
                        note_bits(&t, inplace[i], d[i], tab[k]->name, "in place", n, r, j);
                        double delta = sub_error(logits[i], lse[r]);
                        double p = exp((double)logits[i] - lse[r]);
                        int hot = targets[r] >= 0 && (size_t)targets[r] == off + j;
                        double want = scale[r] * (p - hot);
                        if (hot)
                            note_abs(&t, d[i], want,
                                     SECOND_ORDER * (fabs(scale[r]) * (p * (delta + EXP_U * U) + U * fabs(p - 1)) +
                                                     U * fabs(want)),
                                     tab[k]->name, "target", n, r, j);
                        else
                            note_ulps(&t, d[i], want, SECOND_ORDER * (delta / U + EXP_U + 1), tab[k]->name,
                                      "non-target", n, r, j);
                    }
                }
            }
            kc_free(logits), kc_free(d), kc_free(inplace), kc_free(lse), kc_free(scale);
        }
    expect_within(&t, "cross_entropy_backward");
}

/* ---- finite differences --------------------------------------------------- */

/* The loss a test differentiates, evaluated through the kernel's forward with
 * the current inputs: its value and a bound on its rounding error. */
typedef struct {
    double value, err;
} loss_value;
typedef loss_value (*loss_fn)(void *ctx);

/* Central differences at steps h and 2h, divided by the step the floats
 * actually took. The truncation error is c·h² + O(h⁴), so the two quotients
 * differ by 3c·h² up to their rounding noise (2·err/step each): that measures
 * the truncation, and the tolerance is twice that measurement (room for the h⁴
 * term) plus the noise at h plus the analytic gradient's own error. A tolerance
 * above 1% of the gradient scale would make the check toothless, so that fails
 * too. */
static void fd_check(tally *t, loss_fn f, void *ctx, float *p, double analytic, double analytic_err,
                     double grad_scale, const char *isa, const char *what, size_t n, size_t i)
{
    const double h = 0x1p-7;
    float p0 = *p;
    double fd[2], noise[2];
    for (int s = 0; s < 2; s++) {
        float up = (float)(p0 + h * (s + 1)), down = (float)(p0 - h * (s + 1));
        *p = up;
        loss_value a = f(ctx);
        *p = down;
        loss_value b = f(ctx);
        *p = p0;
        double step = (double)up - (double)down;
        fd[s] = (a.value - b.value) / step;
        noise[s] = (a.err + b.err) / step;
    }
    double trunc = (fabs(fd[1] - fd[0]) + noise[0] + noise[1]) / 3;
    double tol = 2 * trunc + noise[0] + analytic_err;
    note(t, fabs(fd[0] - analytic), tol, isa, what, n, 0, i);
    note(t, tol, 0.01 * grad_scale, isa, "tolerance vs gradient scale", n, 0, i);
}

static double max_abs(const float *x, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)x[i]));
    return m;
}

typedef struct {
    const whet_kernels *k;
    size_t rows, n;
    float *x, *w, *b, *c, *y, *mean, *rstd; /* c: the loss weights, L = Σ c·y */
} fd_ctx;

static loss_value rms_loss(void *p)
{
    fd_ctx *f = p;
    f->k->rmsnorm_forward(f->y, f->rstd, f->x, f->w, f->rows, f->n, 1e-5f);
    loss_value l = {0, 0};
    for (size_t i = 0; i < f->rows * f->n; i++) {
        l.value += (double)f->c[i] * f->y[i];
        l.err += fabs((double)f->c[i] * f->y[i]) * (RMS_Y_ULPS * U + 2 * UD);
    }
    return l;
}

static loss_value ln_loss(void *p)
{
    fd_ctx *f = p;
    f->k->layernorm_forward(f->y, f->mean, f->rstd, f->x, f->w, f->b, f->rows, f->n, 1e-5f);
    loss_value l = {0, 0};
    for (size_t r = 0; r < f->rows; r++)
        for (size_t i = 0; i < f->n; i++) {
            size_t j = r * f->n + i;
            double pp = ((double)f->x[j] - f->mean[r]) * f->rstd[r] * f->w[i];
            l.value += (double)f->c[j] * f->y[j];
            l.err += fabs((double)f->c[j]) * (1.01 * ln_y_bound(pp, f->mean[r], f->rstd[r], f->w[i], f->b[i]) +
                                              2 * UD * fabs((double)f->y[j]));
        }
    return l;
}

static loss_value softmax_loss(void *p)
{
    fd_ctx *f = p;
    f->k->softmax_forward(f->y, f->x, f->rows, f->n);
    loss_value l = {0, 0};
    for (size_t r = 0; r < f->rows; r++) {
        const float *xr = f->x + r * f->n;
        float m = row_max(xr, f->n);
        double dmax = 0;
        for (size_t i = 0; i < f->n; i++)
            dmax = fmax(dmax, sub_error(xr[i], m));
        for (size_t i = 0; i < f->n; i++) {
            size_t j = r * f->n + i;
            l.value += (double)f->c[j] * f->y[j];
            l.err += fabs((double)f->c[j] * f->y[j]) * U * softmax_ulps(sub_error(xr[i], m), dmax, f->n);
        }
    }
    return l;
}

static const whet_kernels *fd_tables[WHET_ISA_COUNT];

static void rmsnorm_backward_matches_finite_differences(void **state)
{
    (void)state;
    int ntab = kc_tables(fd_tables);
    tally t = {0};
    kc_rng rng = kc_seed(11);
    const size_t sizes[] = {7, 17};
    for (size_t si = 0; si < 2; si++) {
        size_t rows = 2, n = sizes[si], total = rows * n;
        fd_ctx f = {.rows = rows, .n = n, .x = kc_floats(total), .w = kc_floats(n), .c = kc_floats(total),
                    .y = kc_floats(total), .rstd = kc_floats(rows)};
        float *dx = kc_floats(total), *dw = kc_floats(n);
        kc_fill(&rng, f.x, total, -1, 1);
        kc_fill(&rng, f.w, n, 0.5f, 1.5f);
        kc_fill(&rng, f.c, total, -1, 1);
        for (int k = 0; k < ntab; k++) {
            f.k = fd_tables[k];
            rms_loss(&f); /* saves rstd */
            memset(dx, 0, total * sizeof *dx);
            memset(dw, 0, n * sizeof *dw);
            f.k->rmsnorm_backward_input(dx, f.c, f.x, f.w, f.rstd, rows, n);
            f.k->rmsnorm_backward_weight(dw, f.c, f.x, f.rstd, rows, n, 0, n);
            /* the analytic side: its own rounding (the accuracy tests' bounds)
             * and the float rstd it was given, well under 16u of the terms */
            for (size_t i = 0; i < total; i++) {
                size_t r = i / n;
                double s = f.rstd[r], terms = s * f.w[i % n] * fabs((double)f.c[i]) + fabs((double)f.x[i]) * s * s;
                fd_check(&t, rms_loss, &f, &f.x[i], dx[i], 16 * U * terms, max_abs(dx, total), f.k->name, "dx", n, i);
            }
            for (size_t i = 0; i < n; i++) {
                double terms = 0;
                for (size_t r = 0; r < rows; r++)
                    terms += fabs((double)f.c[r * n + i] * f.x[r * n + i] * f.rstd[r]);
                fd_check(&t, rms_loss, &f, &f.w[i], dw[i], 16 * U * terms, max_abs(dw, n), f.k->name, "dweight", n, i);
            }
        }
        kc_free(f.x), kc_free(f.w), kc_free(f.c), kc_free(f.y), kc_free(f.rstd), kc_free(dx), kc_free(dw);
    }
    expect_within(&t, "rmsnorm finite differences");
}

static void layernorm_backward_matches_finite_differences(void **state)
{
    (void)state;
    int ntab = kc_tables(fd_tables);
    tally t = {0};
    kc_rng rng = kc_seed(12);
    const size_t sizes[] = {7, 17};
    for (size_t si = 0; si < 2; si++) {
        size_t rows = 2, n = sizes[si], total = rows * n;
        fd_ctx f = {.rows = rows, .n = n, .x = kc_floats(total), .w = kc_floats(n), .b = kc_floats(n),
                    .c = kc_floats(total), .y = kc_floats(total), .mean = kc_floats(rows), .rstd = kc_floats(rows)};
        float *dx = kc_floats(total), *dw = kc_floats(n), *db = kc_floats(n);
        kc_fill(&rng, f.x, total, -1, 2);
        kc_fill(&rng, f.w, n, 0.5f, 1.5f);
        kc_fill(&rng, f.b, n, -0.5f, 0.5f);
        kc_fill(&rng, f.c, total, -1, 1);
        for (int k = 0; k < ntab; k++) {
            f.k = fd_tables[k];
            ln_loss(&f);
            memset(dx, 0, total * sizeof *dx);
            memset(dw, 0, n * sizeof *dw);
            memset(db, 0, n * sizeof *db);
            f.k->layernorm_backward_input(dx, f.c, f.x, f.w, f.mean, f.rstd, rows, n);
            f.k->layernorm_backward_params(dw, db, f.c, f.x, f.mean, f.rstd, rows, n, 0, n);
            for (size_t i = 0; i < total; i++) {
                size_t r = i / n;
                double s = f.rstd[r], xhat = ((double)f.x[i] - f.mean[r]) * s;
                /* |g|, |mean g| ≤ G = max|c|·max|w|, |x̂·mean(g·x̂)| ≤ G·|x̂|·max|x̂|; the
                 * float mean shifts x̂ by up to u·|mean|·s */
                double xmax = 0;
                for (size_t j = 0; j < n; j++)
                    xmax = fmax(xmax, fabs(((double)f.x[r * n + j] - f.mean[r]) * s));
                double g = max_abs(f.c + r * n, n) * max_abs(f.w, n);
                double terms = s * g * (2 + 2 * fabs(xhat) * xmax) * (1 + fabs((double)f.mean[r]) * s);
                fd_check(&t, ln_loss, &f, &f.x[i], dx[i], 16 * U * terms, max_abs(dx, total), f.k->name, "dx", n, i);
            }
            for (size_t i = 0; i < n; i++) {
                double tw = 0, tb = 0;
                for (size_t r = 0; r < rows; r++) {
                    tw += fabs((double)f.c[r * n + i] * ((double)f.x[r * n + i] - f.mean[r]) * f.rstd[r]);
                    tb += fabs((double)f.c[r * n + i]);
                }
                fd_check(&t, ln_loss, &f, &f.w[i], dw[i], 16 * U * tw, max_abs(dw, n), f.k->name, "dweight", n, i);
                fd_check(&t, ln_loss, &f, &f.b[i], db[i], 16 * U * tb, max_abs(db, n), f.k->name, "dbias", n, i);
            }
        }
        kc_free(f.x), kc_free(f.w), kc_free(f.b), kc_free(f.c), kc_free(f.y), kc_free(f.mean), kc_free(f.rstd);
        kc_free(dx), kc_free(dw), kc_free(db);
    }
    expect_within(&t, "layernorm finite differences");
}

static void softmax_backward_matches_finite_differences(void **state)
{
    (void)state;
    int ntab = kc_tables(fd_tables);
    tally t = {0};
    kc_rng rng = kc_seed(13);
    const size_t sizes[] = {7, 17};
    for (size_t si = 0; si < 2; si++) {
        size_t rows = 2, n = sizes[si], total = rows * n;
        fd_ctx f = {.rows = rows, .n = n, .x = kc_floats(total), .c = kc_floats(total), .y = kc_floats(total)};
        float *dx = kc_floats(total);
        kc_fill(&rng, f.x, total, -2, 2);
        kc_fill(&rng, f.c, total, -1, 1);
        for (int k = 0; k < ntab; k++) {
            f.k = fd_tables[k];
            softmax_loss(&f);
            f.k->softmax_backward(dx, f.c, f.y, rows, n);
            for (size_t i = 0; i < total; i++) {
                /* y carries ~20u from the forward, dy − d is bounded by 2 max|c| */
                double terms = fabs((double)f.y[i]) * 3 * max_abs(f.c + i / n * n, n);
                fd_check(&t, softmax_loss, &f, &f.x[i], dx[i], 32 * U * terms, max_abs(dx, total), f.k->name, "dx", n,
                         i);
            }
        }
        kc_free(f.x), kc_free(f.c), kc_free(f.y), kc_free(dx);
    }
    expect_within(&t, "softmax finite differences");
}

typedef struct {
    const whet_kernels *k;
    size_t rows, n, ld;
    float *logits, *scale, *rmax, *rsum;
    const int32_t *targets;
} ce_ctx;

/* L = Σ_r scale_r·(lse_r − logit[r, target_r]) through lse_update in one chunk */
static loss_value ce_loss(void *p)
{
    ce_ctx *c = p;
    const size_t whole[] = {SIZE_MAX};
    lse_chunked(c->k, c->rmax, c->rsum, c->logits, c->ld, c->rows, c->n, whole, 1);
    loss_value l = {0, 0};
    for (size_t r = 0; r < c->rows; r++) {
        double lse = c->rmax[r] + log((double)c->rsum[r]);
        double hot = c->targets[r] >= 0 ? c->logits[r * c->ld + (size_t)c->targets[r]] : 0;
        l.value += c->scale[r] * (lse - hot);
        l.err += fabs((double)c->scale[r]) *
                 (lse_sum_ulps(c->logits + r * c->ld, c->n, whole, 1) * U + 4 * UD * (fabs(lse) + fabs(hot)));
    }
    return l;
}

static void cross_entropy_backward_matches_finite_differences(void **state)
{
    (void)state;
    int ntab = kc_tables(fd_tables);
    tally t = {0};
    kc_rng rng = kc_seed(14);
    const size_t sizes[] = {7, 17};
    for (size_t si = 0; si < 2; si++) {
        size_t rows = 3, n = sizes[si], ld = n + 2;
        const int32_t targets[3] = {2, -1, (int32_t)n - 1};
        ce_ctx c = {.rows = rows, .n = n, .ld = ld, .logits = kc_floats(rows * ld), .scale = kc_floats(rows),
                    .rmax = kc_floats(rows), .rsum = kc_floats(rows), .targets = targets};
        float *d = kc_floats(rows * ld), *lse = kc_floats(rows);
        kc_fill(&rng, c.logits, rows * ld, -2, 2);
        kc_fill(&rng, c.scale, rows, 0.25f, 1);
        for (int k = 0; k < ntab; k++) {
            c.k = fd_tables[k];
            ce_loss(&c);
            for (size_t r = 0; r < rows; r++)
                lse[r] = (float)(c.rmax[r] + log((double)c.rsum[r]));
            c.k->cross_entropy_backward(d, c.logits, ld, rows, n, 0, targets, lse, c.scale);
            double scale_d = 0;
            for (size_t r = 0; r < rows; r++)
                scale_d = fmax(scale_d, max_abs(d + r * ld, n));
            for (size_t r = 0; r < rows; r++)
                for (size_t j = 0; j < n; j++) {
                    size_t i = r * ld + j;
                    /* p = exp(l − lse) errs by the float lse (u·|lse|), the
                     * subtraction (≤ 4u here) and exp (2u) */
                    double p = exp((double)c.logits[i] - lse[r]);
                    double err = fabs((double)c.scale[r]) * (p * U * (fabs((double)lse[r]) + 8) + 2 * U);
                    fd_check(&t, ce_loss, &c, &c.logits[i], d[i], err, scale_d, c.k->name, "dlogits", n, i);
                }
        }
        kc_free(c.logits), kc_free(c.scale), kc_free(c.rmax), kc_free(c.rsum), kc_free(d), kc_free(lse);
    }
    expect_within(&t, "cross-entropy finite differences");
}

/* ---- determinism across thread counts ------------------------------------- */

enum {
    K_RMS_FWD, K_RMS_DX, K_RMS_DW, K_LN_FWD, K_LN_DX, K_LN_DP, K_SM_FWD, K_SM_DX, K_CE_LSE, K_CE_DX, K_KINDS
};
static const char *const kind_names[K_KINDS] = {
    "rmsnorm_forward",  "rmsnorm_backward_input",    "rmsnorm_backward_weight", "layernorm_forward",
    "layernorm_backward_input", "layernorm_backward_params", "softmax_forward", "softmax_backward",
    "cross_entropy_lse_update", "cross_entropy_backward"};

typedef struct {
    const whet_kernels *k;
    int kind;
    size_t rows, n, ld;
    const float *x, *dy, *w, *b, *mean, *rstd, *lse, *scale;
    const int32_t *targets;
    float *out, *out2, *out3; /* out3: rstd for the forwards */
} par_ctx;

/* One thread's share: rows [begin, end), or columns for the weight kernels. */
static void par_range(void *p, size_t begin, size_t end)
{
    const par_ctx *c = p;
    const whet_kernels *k = c->k;
    size_t n = c->n, rows = end - begin, o = begin * n;
    switch (c->kind) {
    case K_RMS_FWD:
        k->rmsnorm_forward(c->out + o, c->out3 + begin, c->x + o, c->w, rows, n, 1e-5f);
        break;
    case K_RMS_DX:
        k->rmsnorm_backward_input(c->out + o, c->dy + o, c->x + o, c->w, c->rstd + begin, rows, n);
        break;
    case K_RMS_DW:
        k->rmsnorm_backward_weight(c->out, c->dy, c->x, c->rstd, c->rows, n, begin, end);
        break;
    case K_LN_FWD:
        k->layernorm_forward(c->out + o, c->out2 + begin, c->out3 + begin, c->x + o, c->w, c->b, rows, n, 1e-5f);
        break;
    case K_LN_DX:
        k->layernorm_backward_input(c->out + o, c->dy + o, c->x + o, c->w, c->mean + begin, c->rstd + begin, rows, n);
        break;
    case K_LN_DP:
        k->layernorm_backward_params(c->out, c->out2, c->dy, c->x, c->mean, c->rstd, c->rows, n, begin, end);
        break;
    case K_SM_FWD:
        k->softmax_forward(c->out + o, c->x + o, rows, n);
        break;
    case K_SM_DX:
        k->softmax_backward(c->out + o, c->dy + o, c->x + o, rows, n);
        break;
    case K_CE_LSE:
        k->cross_entropy_lse_update(c->out + begin, c->out2 + begin, c->x + begin * c->ld, c->ld, rows, n);
        break;
    case K_CE_DX:
        k->cross_entropy_backward(c->out + begin * c->ld, c->x + begin * c->ld, c->ld, rows, n, 3, c->targets + begin,
                                  c->lse + begin, c->scale + begin);
        break;
    }
}

static void every_kernel_is_deterministic_across_threads(void **state)
{
    (void)state;
    const whet_kernels *tab[WHET_ISA_COUNT];
    int ntab = kc_tables(tab);
    kc_rng rng = kc_seed(15);
    const size_t sizes[] = {33, 257, 4099};
    for (size_t si = 0; si < 3; si++) {
        size_t rows = 7, n = sizes[si], ld = n + 1, total = rows * ld;
        float *x = kc_floats(total), *dy = kc_floats(total), *w = kc_floats(n), *b = kc_floats(n);
        float *mean = kc_floats(rows), *rstd = kc_floats(rows), *lse = kc_floats(rows), *scale = kc_floats(rows);
        float *init = kc_floats(3 * total), *out = kc_floats(3 * total), *first = kc_floats(3 * total);
        int32_t targets[7];
        kc_fill(&rng, x, total, -2, 2);
        kc_fill(&rng, dy, total, -1, 1);
        kc_fill(&rng, w, n, -1.5f, 1.5f);
        kc_fill(&rng, b, n, -0.5f, 0.5f);
        kc_fill(&rng, mean, rows, -0.1f, 0.1f);
        kc_fill(&rng, rstd, rows, 0.5f, 2);
        kc_fill(&rng, lse, rows, 2, 4);
        kc_fill(&rng, scale, rows, 0.1f, 1);
        kc_fill(&rng, init, 3 * total, -1, 1);
        for (size_t r = 0; r < rows; r++)
            targets[r] = (int32_t)((r * 37) % (n + 6)) - 2; /* some negative, some outside the chunk */
        for (size_t r = 0; r < rows; r++)
            init[2 * total + r] = -INFINITY, init[total + r] = 0; /* fresh running max and sum */
        for (int k = 0; k < ntab; k++)
            for (int kind = 0; kind < K_KINDS; kind++) {
                int by_columns = kind == K_RMS_DW || kind == K_LN_DP;
                for (int threads = 1; threads <= 3; threads++) {
                    whet_compute *comp = whet_compute_create(tab[k], threads);
                    assert_non_null(comp);
                    memcpy(out, init, 3 * total * sizeof *out);
                    par_ctx c = {.k = tab[k], .kind = kind, .rows = rows, .n = n, .ld = ld, .x = x, .dy = dy, .w = w,
                                 .b = b, .mean = mean, .rstd = rstd, .lse = lse, .scale = scale, .targets = targets,
                                 .out = out, .out2 = out + total, .out3 = out + 2 * total};
                    if (kind == K_CE_LSE) /* running max in out, running sum in out2 */
                        c.out = out + 2 * total;
                    whet_compute_for(comp, by_columns ? n : rows, 1, par_range, &c);
                    whet_compute_destroy(comp);
                    if (threads == 1)
                        memcpy(first, out, 3 * total * sizeof *out);
                    else if (memcmp(first, out, 3 * total * sizeof *out) != 0)
                        fail_msg("%s %s n=%zu: %d threads differ from 1", tab[k]->name, kind_names[kind], n, threads);
                }
                /* the run changed something: the comparison saw real output */
                if (memcmp(first, init, 3 * total * sizeof *out) == 0)
                    fail_msg("%s %s n=%zu wrote nothing", tab[k]->name, kind_names[kind], n);
            }
        kc_free(x), kc_free(dy), kc_free(w), kc_free(b), kc_free(mean), kc_free(rstd), kc_free(lse), kc_free(scale);
        kc_free(init), kc_free(out), kc_free(first);
    }
}

int main(void)
{
    kc_print_tables();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rmsnorm_forward_matches_double),
        cmocka_unit_test(rmsnorm_backward_input_matches_double),
        cmocka_unit_test(rmsnorm_backward_weight_matches_reference),
        cmocka_unit_test(layernorm_forward_matches_double),
        cmocka_unit_test(layernorm_backward_input_matches_double),
        cmocka_unit_test(layernorm_backward_params_matches_reference),
        cmocka_unit_test(softmax_forward_matches_double),
        cmocka_unit_test(softmax_backward_matches_double),
        cmocka_unit_test(cross_entropy_lse_matches_double_and_chunking),
        cmocka_unit_test(cross_entropy_backward_checks),
        cmocka_unit_test(rmsnorm_backward_matches_finite_differences),
        cmocka_unit_test(layernorm_backward_matches_finite_differences),
        cmocka_unit_test(softmax_backward_matches_finite_differences),
        cmocka_unit_test(cross_entropy_backward_matches_finite_differences),
        cmocka_unit_test(every_kernel_is_deterministic_across_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
