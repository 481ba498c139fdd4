/* Evals during training: the baseline on the base model, then every
 * checkpoint compared with it and gated, and the best checkpoint that passed
 * remembered for the run's final answer. */
#include "eval/eval_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void whet_eval_session_init(whet_eval_session *s, whet_eval_suite *const *suites, size_t n_suites,
                            const whet_tokenizer *tok, const whet_chat_template *tmpl, const char *cache_dir)
{
    memset(s, 0, sizeof *s);
    s->suites = suites;
    s->n_suites = n_suites;
    s->tok = tok;
    s->tmpl = tmpl;
    s->cache_dir = cache_dir;
}

static int run_on(const whet_eval_session *s, whet_model *m, const char *label, whet_eval_results **out, whet_err *e)
{
    whet_eval_env env = {.model = m, .tok = s->tok, .tmpl = s->tmpl, .model_label = label,
                         .cache_dir = s->cache_dir};
    return whet_eval_run(&env, s->suites, s->n_suites, out, e);
}

int whet_eval_session_baseline(whet_eval_session *s, whet_model *m, const char *out_dir, whet_err *e)
{
    whet_eval_results_free(s->baseline);
    s->baseline = NULL;
    if (run_on(s, m, "base model", &s->baseline, e) != 0 || whet_eval_compare(s->baseline, NULL, e) != 0)
        return -1;
    if (out_dir) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/eval-base", out_dir);
        return whet_eval_write_reports(s->baseline, dir, e);
    }
    return 0;
}

int whet_eval_session_checkpoint(whet_eval_session *s, whet_model *m, uint64_t step, const char *checkpoint_dir,
                                 int *passed, whet_err *e)
{
    char label[64];
    snprintf(label, sizeof label, "checkpoint %llu", (unsigned long long)step);
    whet_eval_results *r = NULL;
    if (run_on(s, m, label, &r, e) != 0)
        return -1;
    if (whet_eval_compare(r, s->baseline, e) != 0) {
        whet_eval_results_free(r);
        return -1;
    }
    if (checkpoint_dir) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/eval", checkpoint_dir);
        if (whet_eval_write_reports(r, dir, e) != 0) {
            whet_eval_results_free(r);
            return -1;
        }
    }
    *passed = !r->gate_failed;
    double rate = isnan(r->pass.rate) ? 0 : r->pass.rate;
    if (*passed && (!s->have_best || rate > s->best_rate)) {
        s->have_best = 1;
        s->best_step = step;
        s->best_rate = rate;
        snprintf(s->best_dir, sizeof s->best_dir, "%s", checkpoint_dir ? checkpoint_dir : "");
    }
    whet_eval_results_free(s->last);
    s->last = r;
    return 0;
}

void whet_eval_session_free(whet_eval_session *s)
{
    whet_eval_results_free(s->baseline);
    whet_eval_results_free(s->last);
    memset(s, 0, sizeof *s);
}
