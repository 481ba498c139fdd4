/* Before/after: a run joined with a baseline run case by case (suite name and
 * id), the paired statistics of the joined cases, and the gate verdict. Only
 * joined cases enter the comparison, so adding or removing cases changes no
 * flip count; a case whose input changed under the same id is an error
 * rather than a silent comparison of different questions. */
#include "eval/eval_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BOOTSTRAP_ITERS 10000
#define BOOTSTRAP_LEVEL 0.95

static const whet_eval_case_result *find_case(const whet_eval_results *r, const char *suite, const char *id)
{
    for (size_t i = 0; i < r->n_cases; i++)
        if (strcmp(r->cases[i].suite, suite) == 0 && strcmp(r->cases[i].id, id) == 0)
            return &r->cases[i];
    return NULL;
}

static int compare_suite(whet_eval_results *cur, whet_eval_suite_result *sr, const whet_eval_results *base,
                         whet_err *e)
{
    whet_eval_comparison *cmp = &sr->cmp;
    free(cmp->flips);
    memset(cmp, 0, sizeof *cmp);
    cmp->present = 1;
    double *diff = malloc((sr->n_cases + 1) * sizeof *diff);
    cmp->flips = malloc((sr->n_cases + 1) * sizeof *cmp->flips);
    if (!diff || !cmp->flips) {
        free(diff);
        return whet_fail(e, "out of memory");
    }
    size_t n_diff = 0, base_pass = 0, cur_pass = 0, ppl_tokens_b = 0, ppl_tokens_c = 0, ppl_joined = 0;
    double ppl_nll_b = 0, ppl_nll_c = 0;
    /* pass→fail flips first, then fail→pass, each in case order */
    for (int pass_to_fail = 1; pass_to_fail >= 0; pass_to_fail--)
        for (size_t i = sr->first_case; i < sr->first_case + sr->n_cases; i++) {
            const whet_eval_case_result *c = &cur->cases[i], *b = find_case(base, sr->name, c->id);
            if (!b)
                continue;
            if (strcmp(b->prompt_hash, c->prompt_hash) != 0) {
                free(diff);
                return whet_fail(e, "suite \"%s\", case \"%s\": its input (%s %s) differs from the baseline's "
                                 "(%s %s); a changed case needs a new id", sr->name, c->id, whet_eval_kind_name(c->kind),
                                 c->prompt_hash, whet_eval_kind_name(b->kind), b->prompt_hash);
            }
            if (pass_to_fail && c->kind != WHET_EVAL_PPL) {
                diff[n_diff++] = c->score - b->score;
                base_pass += (size_t)b->pass;
                cur_pass += (size_t)c->pass;
            }
            if (pass_to_fail && c->kind == WHET_EVAL_PPL) {
                ppl_joined++;
                ppl_nll_b += b->nll, ppl_tokens_b += b->tokens;
                ppl_nll_c += c->nll, ppl_tokens_c += c->tokens;
            }
            if (pass_to_fail)
                cmp->joined++;
            if (c->kind == WHET_EVAL_PPL || b->pass == c->pass || b->pass != pass_to_fail)
                continue;
            cmp->flips[cmp->n_flips++] = (whet_eval_flip){i, b->score};
            if (pass_to_fail)
                cmp->pass_to_fail++;
            else
                cmp->fail_to_pass++;
        }
    for (size_t t = 0; t < sr->n_tags; t++) {
        whet_eval_tag_rate *tr = &sr->tags[t];
        memset(&tr->base, 0, sizeof tr->base);
        memset(&tr->joined, 0, sizeof tr->joined);
        for (size_t i = sr->first_case; i < sr->first_case + sr->n_cases; i++) {
            const whet_eval_case_result *c = &cur->cases[i], *b;
            int tagged = 0;
            for (size_t k = 0; k < c->n_tags; k++)
                tagged |= strcmp(c->tags[k], tr->tag) == 0;
            if (!tagged || c->kind == WHET_EVAL_PPL || !(b = find_case(base, sr->name, c->id)))
                continue;
            tr->base.n++, tr->joined.n++;
            tr->base.passed += (size_t)b->pass;
            tr->joined.passed += (size_t)c->pass;
        }
        whet_eval_rate_finish(&tr->base);
        whet_eval_rate_finish(&tr->joined);
    }
    cmp->only_current = sr->n_cases - cmp->joined;
    for (size_t i = 0; i < base->n_cases; i++)
        if (strcmp(base->cases[i].suite, sr->name) == 0 && !find_case(cur, sr->name, base->cases[i].id))
            cmp->only_baseline++;
    cmp->base_rate = n_diff ? (double)base_pass / (double)n_diff : NAN;
    cmp->cur_rate = n_diff ? (double)cur_pass / (double)n_diff : NAN;
    cmp->drop = n_diff ? cmp->base_rate - cmp->cur_rate : NAN;
    cmp->mcnemar_p = whet_eval_mcnemar_p(cmp->pass_to_fail, cmp->fail_to_pass);
    int rc = whet_eval_bootstrap(diff, n_diff, BOOTSTRAP_ITERS, sr->seed, BOOTSTRAP_LEVEL, &cmp->diff_mean,
                                 &cmp->diff_lo, &cmp->diff_hi, e);
    free(diff);
    cmp->base_ppl = cmp->cur_ppl = cmp->ppl_increase = NAN;
    if (ppl_joined && ppl_tokens_b && ppl_tokens_c) {
        cmp->base_ppl = exp(ppl_nll_b / (double)ppl_tokens_b);
        cmp->cur_ppl = exp(ppl_nll_c / (double)ppl_tokens_c);
        cmp->ppl_increase = cmp->cur_ppl / cmp->base_ppl - 1;
    }
    return rc;
}

static int add_reason(whet_eval_suite_result *sr, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static int add_reason(whet_eval_suite_result *sr, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **r = realloc(sr->gate_reasons, (sr->n_gate_reasons + 1) * sizeof *r);
    if (!r)
        return -1;
    sr->gate_reasons = r;
    if (!(r[sr->n_gate_reasons] = strdup(buf)))
        return -1;
    sr->n_gate_reasons++;
    return 0;
}

static int gate_suite(const whet_eval_results *r, whet_eval_suite_result *sr)
{
    for (size_t g = 0; g < sr->n_gate_reasons; g++)
        free(sr->gate_reasons[g]);
    free(sr->gate_reasons);
    sr->gate_reasons = NULL;
    sr->n_gate_reasons = 0;
    const whet_eval_gate *g = &sr->gate;
    int rc = 0;
    for (size_t i = sr->first_case; i < sr->first_case + sr->n_cases; i++) {
        const whet_eval_case_result *c = &r->cases[i];
        if (c->kind == WHET_EVAL_PPL || c->pass)
            continue;
        for (size_t t = 0; t < c->n_tags; t++)
            if (strcmp(c->tags[t], g->must_pass_tag) == 0) {
                rc |= add_reason(sr, "case \"%s\" (tagged %s) failed", c->id, g->must_pass_tag);
                break;
            }
    }
    if (!isnan(g->min_pass_rate) && sr->pass.n && sr->pass.rate < g->min_pass_rate)
        rc |= add_reason(sr, "pass rate %.4f (%zu of %zu) is below min_pass_rate %g", sr->pass.rate, sr->pass.passed,
                         sr->pass.n, g->min_pass_rate);
    const whet_eval_comparison *cmp = &sr->cmp;
    if (cmp->present && !isnan(g->max_drop) && !isnan(cmp->drop) && cmp->drop > g->max_drop &&
        cmp->mcnemar_p < g->alpha)
        rc |= add_reason(sr, "pass rate dropped by %.4f (%.4f -> %.4f over %zu joined cases), more than max_drop %g, "
                         "McNemar p = %.4g < alpha %g", cmp->drop, cmp->base_rate, cmp->cur_rate, cmp->joined,
                         g->max_drop, cmp->mcnemar_p, g->alpha);
    if (cmp->present && !isnan(g->max_ppl_increase) && !isnan(cmp->ppl_increase) &&
        cmp->ppl_increase > g->max_ppl_increase)
        rc |= add_reason(sr, "perplexity rose by %.2f%% (%.4f -> %.4f), more than max_ppl_increase %g",
                         100 * cmp->ppl_increase, cmp->base_ppl, cmp->cur_ppl, g->max_ppl_increase);
    return rc;
}

int whet_eval_compare(whet_eval_results *cur, const whet_eval_results *base, whet_err *e)
{
    cur->gate_failed = 0;
    if (base) {
        free(cur->baseline);
        if (!(cur->baseline = strdup(base->model ? base->model : "baseline")))
            return whet_fail(e, "out of memory");
    }
    for (size_t i = 0; i < cur->n_suites; i++) {
        whet_eval_suite_result *sr = &cur->suites[i];
        if (base && compare_suite(cur, sr, base, e) != 0)
            return -1;
        if (gate_suite(cur, sr) != 0)
            return whet_fail(e, "out of memory");
        cur->gate_failed |= sr->n_gate_reasons > 0;
    }
    return 0;
}
