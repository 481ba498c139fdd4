/* Eval statistics against tests/data/eval/stats_goldens.json, which
 * tests/ref/make_eval_stats_goldens.py computes independently: Wilson by the
 * formula, exact McNemar as exact rationals, the paired bootstrap with its own
 * PCG32 (bit-for-bit the same resamples, so the same doubles). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "eval/eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* cmocka before 1.1.6 has no assert_near */
#define assert_near(a, b, tol)                                                                               \
    do {                                                                                                     \
        double a_ = (a), b_ = (b);                                                                           \
        if (!(fabs(a_ - b_) <= (tol)))                                                                       \
            fail_msg("%s = %.17g, expected %.17g within %g", #a, a_, b_, (double)(tol));                     \
    } while (0)

static whet_json_doc *goldens(void)
{
    whet_json_doc *doc = NULL;
    whet_err e = {{0}};
    if (whet_json_parse_file(&doc, "tests/data/eval/stats_goldens.json", NULL, &e) != 0)
        fail_msg("%s", e.msg);
    return doc;
}

static double num(const whet_json *v, const char *key)
{
    const whet_json *x = whet_json_get(v, key);
    assert_non_null(x);
    assert_int_equal(x->type, WHET_JSON_NUMBER);
    return x->u.number.value;
}

static void wilson_matches_formula(void **state)
{
    (void)state;
    whet_json_doc *doc = goldens();
    const whet_json *list = whet_json_get(whet_json_root(doc), "wilson");
    assert_true(whet_json_count(list) >= 9);
    for (size_t i = 0; i < whet_json_count(list); i++) {
        const whet_json *g = whet_json_at(list, i);
        double lo, hi;
        whet_eval_wilson((size_t)num(g, "k"), (size_t)num(g, "n"), 1.959963984540054, &lo, &hi);
        assert_near(lo, num(g, "lo"), 1e-14);
        assert_near(hi, num(g, "hi"), 1e-14);
    }
    whet_json_free(doc);
}

static void mcnemar_matches_exact_binomial(void **state)
{
    (void)state;
    whet_json_doc *doc = goldens();
    const whet_json *list = whet_json_get(whet_json_root(doc), "mcnemar");
    assert_true(whet_json_count(list) >= 10);
    for (size_t i = 0; i < whet_json_count(list); i++) {
        const whet_json *g = whet_json_at(list, i);
        double want = num(g, "p"), got = whet_eval_mcnemar_p((size_t)num(g, "b"), (size_t)num(g, "c"));
        if (fabs(got - want) > 1e-12 * want)
            fail_msg("McNemar b=%g c=%g: %.17g, exact %.17g", num(g, "b"), num(g, "c"), got, want);
    }
    /* the textbook example: 3 vs 7 discordant pairs, 2·176/1024 */
    assert_near(whet_eval_mcnemar_p(3, 7), 0.34375, 1e-15);
    whet_json_free(doc);
}

static void bootstrap_matches_reference(void **state)
{
    (void)state;
    whet_json_doc *doc = goldens();
    const whet_json *list = whet_json_get(whet_json_root(doc), "bootstrap");
    assert_true(whet_json_count(list) >= 4);
    for (size_t i = 0; i < whet_json_count(list); i++) {
        const whet_json *g = whet_json_at(list, i), *d = whet_json_get(g, "d");
        size_t n = whet_json_count(d);
        double *x = malloc(n * sizeof *x);
        for (size_t j = 0; j < n; j++)
            x[j] = whet_json_at(d, j)->u.number.value;
        double mean, lo, hi;
        whet_err e = {{0}};
        assert_int_equal(whet_eval_bootstrap(x, n, (size_t)num(g, "iters"), (uint64_t)num(g, "seed"), 0.95, &mean,
                                             &lo, &hi, &e), 0);
        assert_true(mean == num(g, "mean"));
        if (lo != num(g, "lo") || hi != num(g, "hi"))
            fail_msg("bootstrap %zu: [%.17g, %.17g], reference [%.17g, %.17g]", i, lo, hi, num(g, "lo"),
                     num(g, "hi"));
        assert_true(lo <= mean && mean <= hi);
        /* another seed moves the interval, not the mean */
        double mean2, lo2, hi2;
        assert_int_equal(whet_eval_bootstrap(x, n, (size_t)num(g, "iters"), (uint64_t)num(g, "seed") + 1, 0.95,
                                             &mean2, &lo2, &hi2, &e), 0);
        assert_true(mean2 == mean);
        free(x);
    }
    whet_json_free(doc);
}

/* For a large sample the percentile interval of the mean is close to the
 * normal one, mean ± 1.96·sd/√n: a check that does not share the code path. */
static void bootstrap_close_to_normal_interval(void **state)
{
    (void)state;
    enum { N = 400 };
    double d[N], sum = 0, sq = 0;
    for (size_t i = 0; i < N; i++) {
        d[i] = (double)((i * 7919) % 13) / 12.0 - 0.4;
        sum += d[i];
    }
    double mean = sum / N;
    for (size_t i = 0; i < N; i++)
        sq += (d[i] - mean) * (d[i] - mean);
    double se = sqrt(sq / (N - 1) / N);
    double m, lo, hi;
    whet_err e = {{0}};
    assert_int_equal(whet_eval_bootstrap(d, N, 4000, 5, 0.95, &m, &lo, &hi, &e), 0);
    assert_near(lo, mean - 1.96 * se, 0.15 * 1.96 * se);
    assert_near(hi, mean + 1.96 * se, 0.15 * 1.96 * se);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wilson_matches_formula),
        cmocka_unit_test(mcnemar_matches_exact_binomial),
        cmocka_unit_test(bootstrap_matches_reference),
        cmocka_unit_test(bootstrap_close_to_normal_interval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
