/* Statistics for pass rates and paired before/after comparisons on the same
 * cases: Wilson intervals (a rate alone), the exact McNemar test (pass/fail
 * flips), and a seeded paired bootstrap (continuous scores). Checked against
 * tests/ref/make_eval_stats_goldens.py, which computes them independently
 * (exact binomial sums with Python integers). */
#include "eval/eval.h"
#include "model/sample.h"

#include <math.h>
#include <stdlib.h>

void whet_eval_wilson(size_t k, size_t n, double z, double *lo, double *hi)
{
    if (n == 0) {
        *lo = 0, *hi = 1;
        return;
    }
    double nn = (double)n, p = (double)k / nn, z2 = z * z;
    double denom = 1 + z2 / nn;
    double center = (p + z2 / (2 * nn)) / denom;
    double half = z / denom * sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn));
    *lo = center - half < 0 ? 0 : center - half;
    *hi = center + half > 1 ? 1 : center + half;
    if (k == 0)
        *lo = 0;
    if (k == n)
        *hi = 1;
}

double whet_eval_mcnemar_p(size_t b, size_t c)
{
    size_t n = b + c, m = b < c ? b : c;
    if (n == 0)
        return 1;
    /* C(n, m) as mantissa · 2^exponent (no overflow for any n, no lgamma
     * cancellation), then the smaller terms relative to it: C(n, k-1) =
     * C(n, k) · k / (n-k+1); finally the exact 2^-n. */
    double mant = 1;
    int exponent = 0;
    for (size_t k = 1; k <= m; k++) {
        int e;
        mant = frexp(mant * (double)(n - k + 1) / (double)k, &e);
        exponent += e;
    }
    double sum = 1, rel = 1;
    for (size_t k = m; k >= 1 && rel > 0; k--) {
        rel = rel * (double)k / (double)(n - k + 1);
        sum += rel;
    }
    double p = 2 * ldexp(mant * sum, exponent - (int)n);
    return p > 1 ? 1 : p;
}

static int cmp_double(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

static double percentile(const double *sorted, size_t n, double q)
{
    double pos = q * (double)(n - 1);
    size_t i = (size_t)floor(pos);
    if (i + 1 >= n)
        return sorted[n - 1];
    double t = pos - (double)i;
    return sorted[i] + (sorted[i + 1] - sorted[i]) * t;
}

int whet_eval_bootstrap(const double *d, size_t n, size_t iters, uint64_t seed, double level, double *mean,
                        double *lo, double *hi, whet_err *e)
{
    if (n == 0 || iters == 0) {
        *mean = *lo = *hi = NAN;
        return 0;
    }
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += d[i];
    *mean = sum / (double)n;
    double *means = malloc(iters * sizeof *means);
    if (!means)
        return whet_fail(e, "bootstrap: out of memory for %zu resamples", iters);
    whet_rng rng;
    whet_rng_seed(&rng, seed);
    for (size_t it = 0; it < iters; it++) {
        double s = 0;
        for (size_t j = 0; j < n; j++)
            s += d[(size_t)(((uint64_t)whet_rng_u32(&rng) * (uint64_t)n) >> 32)];
        means[it] = s / (double)n;
    }
    qsort(means, iters, sizeof *means, cmp_double);
    *lo = percentile(means, iters, (1 - level) / 2);
    *hi = percentile(means, iters, (1 + level) / 2);
    free(means);
    return 0;
}
