/* The sampler (src/model/sample.c): greedy ties, top-k and top-p sets and
 * masses against a plain sort-everything reference, seeded determinism,
 * sampling frequencies on small distributions (chi-square with a fixed seed),
 * and greedy decoding with the KV cache against argmaxes of full forwards of
 * the growing sequence on a committed model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "model/model.h"
#include "model/sample.h"
#include "util/compute.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void init(whet_sampler *s, size_t V, double temperature, size_t top_k, double top_p, uint64_t seed)
{
    whet_sampling p = {temperature, top_k, top_p};
    whet_err e = {{0}};
    if (whet_sampler_init(s, V, &p, seed, &e))
        fail_msg("%s", e.msg);
}

static void argmax_ties_to_lowest_id(void **state)
{
    (void)state;
    const float a[] = {1, 3, 2, 3, 3};
    assert_int_equal(whet_argmax(a, 5), 1);
    const float b[] = {NAN, -INFINITY, -5, NAN};
    assert_int_equal(whet_argmax(b, 4), 2);
    const float c[] = {-INFINITY, -INFINITY};
    assert_int_equal(whet_argmax(c, 2), 0);
    /* temperature 0 is the argmax and draws nothing from the generator */
    whet_sampler s;
    init(&s, 5, 0, 0, 1, 7);
    whet_rng before = s.rng;
    for (int i = 0; i < 10; i++)
        assert_int_equal(whet_sampler_sample(&s, a), 1);
    assert_memory_equal(&before, &s.rng, sizeof before);
    whet_sampler_free(&s);
}

static void parameters_are_checked(void **state)
{
    (void)state;
    whet_sampler s;
    whet_err e = {{0}};
    whet_sampling bad_p = {0.7, 0, 0};
    assert_int_equal(whet_sampler_init(&s, 10, &bad_p, 1, &e), -1);
    assert_string_equal(e.msg, "--top-p: expected a number in (0, 1], got 0");
    whet_sampling bad_p2 = {0.7, 0, 1.5};
    assert_int_equal(whet_sampler_init(&s, 10, &bad_p2, 1, &e), -1);
    whet_sampling bad_t = {-1, 0, 1};
    assert_int_equal(whet_sampler_init(&s, 10, &bad_t, 1, &e), -1);
    assert_string_equal(e.msg, "--temperature: expected a finite number >= 0, got -1");
    whet_sampling nan_t = {NAN, 0, 1};
    assert_int_equal(whet_sampler_init(&s, 10, &nan_t, 1, &e), -1);
}

/* PCG32's published first outputs for pcg32_srandom_r(42, 54). */
static void pcg32_matches_reference(void **state)
{
    (void)state;
    whet_rng r;
    whet_rng_seed(&r, 42);
    const uint32_t expect[] = {0xa15c02b7, 0x7b47f409, 0xba1d3330, 0x83d2f293, 0xbfa4784b, 0xcbed606e};
    for (size_t i = 0; i < sizeof expect / sizeof *expect; i++)
        assert_int_equal(whet_rng_u32(&r), expect[i]);
    for (int i = 0; i < 1000; i++) {
        double u = whet_rng_uniform(&r);
        assert_true(u >= 0 && u < 1);
    }
}

/* The reference: softmax(logits / T) in double, everything sorted. */
typedef struct ref_item {
    double p;
    int32_t id;
} ref_item;

static int ref_cmp(const void *pa, const void *pb)
{
    const ref_item *a = pa, *b = pb;
    if (a->p != b->p)
        return a->p > b->p ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static size_t reference(const float *logits, size_t V, double T, size_t k, double top_p, ref_item *out)
{
    double zmax = -INFINITY;
    for (size_t i = 0; i < V; i++)
        zmax = fmax(zmax, logits[i] / T);
    for (size_t i = 0; i < V; i++) {
        out[i].p = exp(logits[i] / T - zmax);
        out[i].id = (int32_t)i;
    }
    qsort(out, V, sizeof *out, ref_cmp);
    size_t n = k && k < V ? k : V;
    double total = 0;
    for (size_t i = 0; i < n; i++)
        total += out[i].p;
    if (top_p < 1) {
        double cum = 0;
        size_t keep = 0;
        while (keep < n) {
            cum += out[keep++].p / total;
            if (cum >= top_p)
                break;
        }
        n = keep;
    }
    double kept = 0;
    for (size_t i = 0; i < n; i++)
        kept += out[i].p;
    for (size_t i = 0; i < n; i++)
        out[i].p /= kept;
    return n;
}

static void check_against_reference(const float *logits, size_t V, double T, size_t k, double top_p)
{
    whet_sampler s;
    init(&s, V, T, k, top_p, 1);
    ref_item *ref = malloc(V * sizeof *ref);
    size_t n = whet_sampler_candidates(&s, logits), rn = reference(logits, V, T, k, top_p, ref);
    if (n != rn)
        fail_msg("V=%zu T=%g k=%zu p=%g: %zu candidates, reference %zu", V, T, k, top_p, n, rn);
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(s.ids[i], ref[i].id);
        assert_true(fabs(s.probs[i] - ref[i].p) <= 1e-12);
        sum += s.probs[i];
    }
    assert_true(fabs(sum - 1) <= 1e-12);
    free(ref);
    whet_sampler_free(&s);
}

static void top_k_and_top_p_sets(void **state)
{
    (void)state;
    /* probabilities 0.5, 0.3, 0.15, 0.05 (ids shuffled) */
    const float lg[] = {logf(0.15f), logf(0.5f), logf(0.05f), logf(0.3f)};
    whet_sampler s;
    init(&s, 4, 1, 0, 0.75, 1);
    assert_int_equal(whet_sampler_candidates(&s, lg), 2);
    assert_int_equal(s.ids[0], 1);
    assert_int_equal(s.ids[1], 3);
    assert_true(fabs(s.probs[0] - 0.625) < 1e-6 && fabs(s.probs[1] - 0.375) < 1e-6);
    whet_sampler_free(&s);
    init(&s, 4, 1, 0, 0.85, 1);
    assert_int_equal(whet_sampler_candidates(&s, lg), 3);
    whet_sampler_free(&s);
    init(&s, 4, 1, 0, 0.3, 1); /* at least one token, even when it alone passes p */
    assert_int_equal(whet_sampler_candidates(&s, lg), 1);
    assert_int_equal(s.ids[0], 1);
    assert_true(s.probs[0] == 1.0);
    whet_sampler_free(&s);
    init(&s, 4, 1, 3, 1, 1); /* top-k 3: the least likely one goes */
    assert_int_equal(whet_sampler_candidates(&s, lg), 3);
    assert_int_equal(s.ids[2], 0);
    assert_true(fabs(s.probs[2] - 0.15 / 0.95) < 1e-6);
    whet_sampler_free(&s);
    /* top-k ties go to the lower ids */
    const float tie[] = {1, 2, 2, 0, 2, 2};
    init(&s, 6, 1, 3, 1, 1);
    assert_int_equal(whet_sampler_candidates(&s, tie), 3);
    assert_int_equal(s.ids[0], 1);
    assert_int_equal(s.ids[1], 2);
    assert_int_equal(s.ids[2], 4);
    whet_sampler_free(&s);

    /* random rows of several widths and spreads against the reference, with
     * top-p both inside and outside the prefiltered set */
    whet_rng r;
    whet_rng_seed(&r, 5);
    size_t widths[] = {1, 2, 7, 300, 5000};
    for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++) {
        size_t V = widths[wi];
        float *logits = malloc(V * sizeof *logits);
        for (double spread = 0.1; spread < 40; spread *= 4) {
            for (size_t i = 0; i < V; i++)
                logits[i] = (float)((whet_rng_uniform(&r) - 0.5) * spread);
            if (V > 3)
                logits[V / 2] = logits[V / 3]; /* a tie */
            check_against_reference(logits, V, 1.0, 0, 0.9);
            check_against_reference(logits, V, 0.7, 0, 0.5);
            check_against_reference(logits, V, 0.7, 0, 0.999999);
            check_against_reference(logits, V, 1.3, 40, 1);
            check_against_reference(logits, V, 0.5, 20, 0.8);
            check_against_reference(logits, V, 1.0, V + 3, 0.95);
            check_against_reference(logits, V, 2.0, 0, 1);
        }
        free(logits);
    }
}

static void same_seed_same_tokens(void **state)
{
    (void)state;
    size_t V = 50;
    float logits[50];
    for (size_t i = 0; i < V; i++)
        logits[i] = (float)sin((double)i) * 2;
    int32_t a[200], b[200], c[200];
    const whet_sampling modes[] = {{1, 0, 1}, {0.8, 10, 1}, {0.8, 0, 0.9}, {1.2, 20, 0.95}};
    for (size_t m = 0; m < sizeof modes / sizeof *modes; m++) {
        whet_sampler s1, s2, s3;
        init(&s1, V, modes[m].temperature, modes[m].top_k, modes[m].top_p, 1234);
        init(&s2, V, modes[m].temperature, modes[m].top_k, modes[m].top_p, 1234);
        init(&s3, V, modes[m].temperature, modes[m].top_k, modes[m].top_p, 1235);
        for (int i = 0; i < 200; i++) {
            a[i] = whet_sampler_sample(&s1, logits);
            b[i] = whet_sampler_sample(&s2, logits);
            c[i] = whet_sampler_sample(&s3, logits);
            assert_true(a[i] >= 0 && (size_t)a[i] < V);
        }
        assert_memory_equal(a, b, sizeof a);
        assert_memory_not_equal(a, c, sizeof a);
        whet_sampler_free(&s1);
        whet_sampler_free(&s2);
        whet_sampler_free(&s3);
    }
}

/* Pearson's chi-square of counts against probabilities. */
static double chi_square(const long *count, const double *p, size_t n, long draws)
{
    double x = 0;
    for (size_t i = 0; i < n; i++) {
        double expect = p[i] * (double)draws;
        x += (count[i] - expect) * (count[i] - expect) / expect;
    }
    return x;
}

static void frequencies_follow_the_distribution(void **state)
{
    (void)state;
    const long draws = 60000;
    /* 99.9th percentiles of chi-square with 2 and 3 degrees of freedom */
    const double crit2 = 13.82, crit3 = 16.27;
    /* plain sampling: 0.5 0.3 0.15 0.05 */
    const double p[] = {0.5, 0.3, 0.15, 0.05};
    float lg[4];
    for (int i = 0; i < 4; i++)
        lg[i] = (float)log(p[i]);
    whet_sampler s;
    init(&s, 4, 1, 0, 1, 99);
    long count[4] = {0};
    for (long i = 0; i < draws; i++)
        count[whet_sampler_sample(&s, lg)]++;
    double x = chi_square(count, p, 4, draws);
    if (!(x < crit3))
        fail_msg("plain: chi-square %.2f (counts %ld %ld %ld %ld)", x, count[0], count[1], count[2], count[3]);
    whet_sampler_free(&s);

    /* temperature 2 flattens: p^(1/2), renormalised */
    double pt[4], sum = 0;
    for (int i = 0; i < 4; i++)
        sum += pt[i] = sqrt(p[i]);
    for (int i = 0; i < 4; i++)
        pt[i] /= sum;
    init(&s, 4, 2, 0, 1, 100);
    memset(count, 0, sizeof count);
    for (long i = 0; i < draws; i++)
        count[whet_sampler_sample(&s, lg)]++;
    x = chi_square(count, pt, 4, draws);
    if (!(x < crit3))
        fail_msg("temperature 2: chi-square %.2f", x);
    whet_sampler_free(&s);

    /* top-k 3: the 0.05 token never comes, the rest renormalised over 0.95 */
    init(&s, 4, 1, 3, 1, 101);
    memset(count, 0, sizeof count);
    for (long i = 0; i < draws; i++)
        count[whet_sampler_sample(&s, lg)]++;
    assert_int_equal(count[3], 0);
    const double pk[] = {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95};
    x = chi_square(count, pk, 3, draws);
    if (!(x < crit2))
        fail_msg("top-k 3: chi-square %.2f", x);
    whet_sampler_free(&s);

    /* top-p 0.75: only the first two, 0.625 / 0.375 */
    init(&s, 4, 1, 0, 0.75, 102);
    memset(count, 0, sizeof count);
    for (long i = 0; i < draws; i++)
        count[whet_sampler_sample(&s, lg)]++;
    assert_int_equal(count[2] + count[3], 0);
    double pp[] = {0.625, 0.375}, x1 = chi_square(count, pp, 2, draws);
    if (!(x1 < 10.83)) /* 1 degree of freedom */
        fail_msg("top-p 0.75: chi-square %.2f", x1);
    whet_sampler_free(&s);
}

/* Greedy decoding through whet_model_decode (prefill, then one token at a
 * time with the KV cache) gives, at every step, the argmax of the logits of a
 * fresh full forward over the whole sequence so far. */
static void greedy_decode_matches_full_forward_argmax(void **state)
{
    (void)state;
    const char *const models[] = {"tests/data/models/llama", "tests/data/models/qwen3", "tests/data/models/gpt2"};
    /* one thread: test_model_forward covers thread counts, and under qemu a
     * spinning pool crawls */
    whet_compute *c = whet_compute_create(whet_kernels_from_env(), 1);
    assert_non_null(c);
    for (size_t mi = 0; mi < sizeof models / sizeof *models; mi++) {
        whet_model *m;
        whet_err e = {{0}};
        if (whet_model_load(&m, models[mi], c, &e))
            fail_msg("%s", e.msg);
        size_t V = m->cfg.vocab, prompt = 5, steps = 12, total = prompt + steps;
        int32_t seq[32];
        for (size_t i = 0; i < prompt; i++)
            seq[i] = (int32_t)((i * 37 + 11) % V);
        whet_kv_cache *kv = whet_kv_cache_create(m, 1, total, &e);
        whet_acts *a = whet_acts_create(m, 1, total, 0, &e);
        whet_acts *full = whet_acts_create(m, 1, total, 0, &e);
        float *logits = malloc(V * sizeof *logits), *ref = malloc(total * V * sizeof *ref);
        assert_non_null(kv);
        assert_non_null(a);
        assert_non_null(full);
        size_t len = prompt;
        if (whet_model_decode(m, kv, a, seq, 1, prompt, logits, &e))
            fail_msg("%s", e.msg);
        for (size_t step = 0; step < steps; step++) {
            int32_t next = whet_argmax(logits, V);
            if (whet_model_forward(m, full, seq, 1, len, &e) || whet_model_logits(m, full, NULL, len, ref, &e))
                fail_msg("%s", e.msg);
            const float *last = ref + (len - 1) * V;
            int32_t want = whet_argmax(last, V);
            /* the two paths may differ in the last bits: a near tie may go
             * either way, anything else must agree */
            float gap = fabsf(last[want] - last[next]);
            if (next != want && !(gap <= 1e-5f * (1 + fabsf(last[want]))))
                fail_msg("%s step %zu: decode chose %d, full forward %d (gap %g)", models[mi], step, next, want,
                         (double)gap);
            seq[len++] = next;
            if (step + 1 < steps && whet_model_decode(m, kv, a, &next, 1, 1, logits, &e))
                fail_msg("%s", e.msg);
        }
        free(logits);
        free(ref);
        whet_acts_free(a);
        whet_acts_free(full);
        whet_kv_cache_free(kv);
        whet_model_free(m);
    }
    whet_compute_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(argmax_ties_to_lowest_id),
        cmocka_unit_test(parameters_are_checked),
        cmocka_unit_test(pcg32_matches_reference),
        cmocka_unit_test(top_k_and_top_p_sets),
        cmocka_unit_test(same_seed_same_tokens),
        cmocka_unit_test(frequencies_follow_the_distribution),
        cmocka_unit_test(greedy_decode_matches_full_forward_argmax),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
