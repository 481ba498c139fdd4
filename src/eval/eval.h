/* Regression evals: suites of cases in JSONL (whet-evalspec(5)), run on a
 * loaded model, scored by assertions, compared with a baseline run by paired
 * statistics, and gated (whet-eval(1)).
 *
 * The pieces, in the order a run uses them:
 *   spec.c    whet_eval_suite_load: the header line and one case per line,
 *             every error naming the file, line and column;
 *   run.c     whet_eval_run: gen cases generate (greedy by default) and are
 *             scored by assert.c; choice cases compare the log-likelihoods of
 *             their choices (acc, acc_norm by bytes); ppl cases score a text;
 *   cache.c   outputs kept under an xxHash key of (model and adapter content,
 *             prompt tokens, decoding parameters, seed), so a re-run computes
 *             only what changed;
 *   stats.c   Wilson intervals, exact McNemar, seeded paired bootstrap;
 *   gate.c    whet_eval_compare (join with a baseline by suite and id) and the
 *             gate verdict;
 *   report.c  results.json, samples.jsonl, report.md, report.html, JUnit XML;
 *             whet_eval_results_load reads a results directory back as a
 *             baseline.
 *
 * For a trainer (whet train --eval SPEC --gate), session.c wraps these;
 * by hand, per checkpoint:
 *   whet_eval_suite_load(&suites[i], path, &e);              once, at start
 *   whet_eval_env env = {model, tok, tmpl_or_NULL, cache_dir_or_NULL, ...};
 *   whet_eval_run(&env, suites, n, &base, &e);               before step 1
 *   whet_eval_run(&env, suites, n, &cur, &e);                each checkpoint
 *   whet_eval_compare(cur, base, &e);  cur->gate_failed, cur->suites[i].*
 *   whet_eval_write_reports(cur, dir, &e);                   optional
 * Everything is deterministic: the same model, suites and seeds give the
 * same results for any thread count. */
#ifndef WHET_EVAL_H
#define WHET_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "io/json.h"
#include "model/model.h"
#include "tok/chat_template.h"
#include "tok/tokenizer.h"
#include "util/file.h"

/* ---- suites (spec.c) -------------------------------------------------------- */

typedef enum whet_eval_kind { WHET_EVAL_GEN, WHET_EVAL_CHOICE, WHET_EVAL_PPL } whet_eval_kind;

typedef enum whet_eval_reduce {
    WHET_EVAL_REDUCE_MEAN,     /* score = mean over repeats; pass when ≥ threshold */
    WHET_EVAL_REDUCE_ALL,      /* pass when every repeat passes */
    WHET_EVAL_REDUCE_ANY,      /* pass when one repeat passes */
    WHET_EVAL_REDUCE_MAJORITY, /* pass when more than half pass */
} whet_eval_reduce;

typedef enum whet_eval_assert_type {
    WHET_ASSERT_EQUALS,
    WHET_ASSERT_PREFIX,
    WHET_ASSERT_CONTAINS,
    WHET_ASSERT_ICONTAINS,
    WHET_ASSERT_CONTAINS_ANY,
    WHET_ASSERT_CONTAINS_ALL,
    WHET_ASSERT_REGEX,
    WHET_ASSERT_LEVENSHTEIN,
    WHET_ASSERT_F1,
    WHET_ASSERT_JSON_VALID,
    WHET_ASSERT_JSON_MATCH,
    WHET_ASSERT_JSON_SUBSET,
    WHET_ASSERT_LENGTH,
    WHET_ASSERT_EXEC,
    WHET_ASSERT_TYPE_COUNT
} whet_eval_assert_type;

/* Normalisation flags of string comparisons ("norm": ["trim", ...]). */
enum {
    WHET_NORM_TRIM = 1,  /* strip leading and trailing whitespace */
    WHET_NORM_LOWER = 2, /* ASCII lowercase */
    WHET_NORM_WS = 4,    /* runs of whitespace become one space (and trim) */
    WHET_NORM_PUNCT = 8, /* ASCII punctuation removed */
};

typedef struct whet_eval_assert {
    whet_eval_assert_type type;
    int negate;               /* "not_" prefix: score becomes 1 - score */
    char name[32];            /* as written, e.g. "not_contains" */
    double weight;            /* ≥ 0, default 1 */
    unsigned norm;            /* WHET_NORM_* */
    const char *value;        /* string value (NUL-terminated, value_len bytes) */
    size_t value_len;
    const char **values;      /* contains_any / contains_all */
    size_t *values_len;
    size_t n_values;
    const whet_json *json;    /* json_match / json_subset: the expected value */
    const char *target;       /* regex: compared with the capture */
    size_t target_len;
    int has_target;
    int group;                /* regex: capture group compared with target */
    void *regex;              /* pcre2_code * */
    size_t max_distance;      /* levenshtein */
    size_t min_len, max_len;  /* length, in characters (code points) */
    double min_score;         /* f1, exec: binarise at this score; < 0 off */
    double timeout;           /* exec: seconds */
} whet_eval_assert;

typedef struct whet_eval_case {
    char *id;
    const char **tags;
    size_t n_tags;
    whet_eval_kind kind;
    size_t line;              /* in the spec file, from 1 */
    const char *line_text;    /* the case as written: WHET_CASE for exec */
    size_t line_len;
    const char *prompt;       /* gen, choice: prompt text (NULL with messages) */
    size_t prompt_len;
    whet_chat_message *messages; /* gen: chat messages */
    size_t n_messages;
    const char **choices;     /* choice */
    size_t *choices_len;
    size_t n_choices;
    size_t gold;
    const char *text;         /* ppl */
    size_t text_len;
    whet_eval_assert *asserts;
    size_t n_asserts;
    double threshold;         /* pass when the weighted score ≥ this */
    size_t max_tokens;        /* gen: the suite's unless given */
    char prompt_hash[33];     /* xxHash128 of the case's input (not its assertions), hex */
} whet_eval_case;

typedef struct whet_eval_gate {
    double min_pass_rate;     /* NaN: not checked */
    double max_drop;          /* NaN: not checked */
    double alpha;             /* significance for max_drop, default 0.05 */
    const char *must_pass_tag; /* default "critical" */
    double max_ppl_increase;  /* relative (0.05 = 5 %); NaN: not checked */
} whet_eval_gate;

#define WHET_EVAL_MAX_STOPS 16

typedef struct whet_eval_suite {
    char *name;
    char *path;               /* the spec file */
    char *dir;                /* its directory: exec commands run there */
    uint64_t seed;
    double temperature;       /* 0: greedy */
    size_t top_k;
    double top_p;
    size_t max_tokens;
    const char *stops[WHET_EVAL_MAX_STOPS];
    size_t n_stops;
    size_t repeats;
    whet_eval_reduce reduce;
    double threshold;         /* default case threshold, 1 */
    whet_eval_gate gate;
    whet_eval_case *cases;
    size_t n_cases;
    /* owned storage */
    whet_json_doc **docs;
    size_t n_docs;
    char *text;
} whet_eval_suite;

/* Reads a spec file. Errors: "<file>: line L, column C (byte B): expected ...". */
int whet_eval_suite_load(whet_eval_suite **out, const char *path, whet_err *e);
/* The same from text in memory; name stands for the file (exec commands run
 * in its directory). */
int whet_eval_suite_parse(whet_eval_suite **out, const char *text, size_t len, const char *name, whet_err *e);
void whet_eval_suite_free(whet_eval_suite *s);

const char *whet_eval_kind_name(whet_eval_kind k);
const char *whet_eval_reduce_name(whet_eval_reduce r);

/* ---- assertions (assert.c) ---------------------------------------------------- */

/* The score in [0, 1] of output[0..len) under a (negation applied); *detail
 * gets a short malloc'd explanation or NULL. -1 only for a system failure
 * (fork, out of memory); a validator that fails scores 0. */
int whet_eval_assert_score(const whet_eval_assert *a, const whet_eval_case *c, const char *dir, const char *output,
                           size_t len, double *score, char **detail, whet_err *e);

/* Helpers the scorers use, exposed for tests. */
size_t whet_eval_levenshtein(const char *a, size_t na, const char *b, size_t nb); /* in code points */
double whet_eval_token_f1(const char *pred, size_t np, const char *ref, size_t nr);
/* Normalises s by WHET_NORM_* flags into a malloc'd string. */
char *whet_eval_normalize(const char *s, size_t len, unsigned flags, size_t *out_len);
/* json_match (subset 0) and json_subset (1): expected against actual. */
int whet_eval_json_equal(const whet_json *expected, const whet_json *actual, int subset);

/* ---- statistics (stats.c) -------------------------------------------------------- */

/* Wilson score interval for k successes in n at confidence z (1.96 → 95 %). */
void whet_eval_wilson(size_t k, size_t n, double z, double *lo, double *hi);
/* Exact two-sided McNemar p-value for b and c discordant pairs:
 * min(1, 2·P[X ≤ min(b, c)]), X ~ Binomial(b + c, 1/2); 1 when b + c = 0. */
double whet_eval_mcnemar_p(size_t b, size_t c);
/* Paired bootstrap of the mean of d[0..n): `iters` resamples of n indices
 * drawn with PCG32 seeded with `seed` (index = (u32 · n) >> 32); the mean of
 * d and the percentile interval at (1-level)/2 and (1+level)/2 with linear
 * interpolation between order statistics (numpy's default). */
int whet_eval_bootstrap(const double *d, size_t n, size_t iters, uint64_t seed, double level, double *mean,
                        double *lo, double *hi, whet_err *e);

/* ---- results ---------------------------------------------------------------------- */

typedef struct whet_eval_assert_result {
    char name[32];
    double weight;
    double score;
    char *detail;
} whet_eval_assert_result;

/* One repeat of a gen case. */
typedef struct whet_eval_sample {
    char *output;
    size_t output_len;
    size_t tokens;
    const char *stop_reason;  /* "eos", "stop", "max_tokens", "context" */
    whet_eval_assert_result *asserts;
    size_t n_asserts;
    double score;
    int pass;
    int cached;
} whet_eval_sample;

typedef struct whet_eval_case_result {
    char *suite, *id;
    whet_eval_kind kind;
    char **tags;
    size_t n_tags;
    char prompt_hash[33];
    char *prompt;             /* what the model saw (rendered chat), for reports */
    whet_eval_sample *samples; /* gen: one per repeat */
    size_t n_samples;
    double score;             /* gen: reduced; choice: acc */
    int pass;                 /* gen, choice */
    /* choice */
    double *ll;
    size_t *choice_bytes;
    size_t n_choices, gold, pred, pred_norm;
    int acc_norm;
    /* ppl */
    double nll;               /* total, nats */
    size_t tokens, bytes;     /* scored tokens; bytes of the text */
} whet_eval_case_result;

typedef struct whet_eval_rate {
    size_t n, passed;
    double rate, lo, hi;      /* Wilson 95 %; rate NaN when n = 0 */
} whet_eval_rate;

typedef struct whet_eval_tag_rate {
    char *tag;
    whet_eval_rate r;
    /* after a comparison: the tag's joined cases in the baseline and now */
    whet_eval_rate base, joined;
} whet_eval_tag_rate;

/* A case whose pass changed against the baseline. */
typedef struct whet_eval_flip {
    size_t case_index;        /* into the results' cases */
    double base_score;
} whet_eval_flip;

typedef struct whet_eval_comparison {
    int present;
    size_t joined, only_current, only_baseline;
    size_t pass_to_fail, fail_to_pass;
    whet_eval_flip *flips;    /* pass→fail first, then fail→pass, each in case order */
    size_t n_flips;
    double base_rate, cur_rate, drop; /* over joined gen/choice cases; drop = base - cur */
    double mcnemar_p;
    double diff_mean, diff_lo, diff_hi; /* paired bootstrap of score differences (cur - base) */
    double base_ppl, cur_ppl, ppl_increase; /* NaN without ppl cases on both sides */
} whet_eval_comparison;

typedef struct whet_eval_suite_result {
    char *name, *path;
    whet_eval_gate gate;
    char *must_pass_tag;
    uint64_t seed;
    double temperature, top_p;
    size_t top_k, max_tokens, repeats;
    whet_eval_reduce reduce;
    size_t first_case, n_cases; /* range in the results' cases */
    whet_eval_rate pass;      /* gen and choice cases */
    whet_eval_tag_rate *tags;
    size_t n_tags;
    size_t n_choice;
    double acc, acc_norm;     /* NaN without choice cases */
    size_t ppl_cases, ppl_tokens, ppl_bytes;
    double ppl_nll;
    double ppl, bits_per_byte; /* NaN without ppl cases */
    whet_eval_comparison cmp;
    char **gate_reasons;      /* why the gate failed, NULL/0 when it passed */
    size_t n_gate_reasons;
} whet_eval_suite_result;

typedef struct whet_eval_results {
    char *model, *adapter;    /* labels (paths) */
    char model_hash[33], adapter_hash[33];
    whet_eval_case_result *cases;
    size_t n_cases;
    whet_eval_suite_result *suites;
    size_t n_suites;
    whet_eval_rate pass;      /* every suite's gen and choice cases */
    size_t cache_hits, cache_misses;
    char *baseline;           /* the baseline's label, after whet_eval_compare */
    int gate_failed;
} whet_eval_results;

typedef struct whet_eval_env {
    whet_model *model;
    const whet_tokenizer *tok;
    const whet_chat_template *tmpl; /* NULL: chat cases are refused */
    const char *model_label;  /* for reports (a path) */
    const char *adapter_label; /* NULL without an adapter */
    const char *cache_dir;    /* NULL: no cache */
    size_t repeats;           /* > 0: overrides every suite's repeats */
    int progress;             /* a progress line on stderr */
} whet_eval_env;

/* Runs every case of every suite. The model and adapter content hashes are
 * computed from the weights in memory (whet_eval_model_hash). */
int whet_eval_run(const whet_eval_env *env, whet_eval_suite *const *suites, size_t n_suites,
                  whet_eval_results **out, whet_err *e);
void whet_eval_results_free(whet_eval_results *r);

/* xxHash128 (hex) of the fp32 weights and the config; of the attached
 * adapter's weights and scale ("" without one). */
void whet_eval_model_hash(const whet_model *m, char model_hex[33], char adapter_hex[33]);

/* ---- comparison and gate (gate.c) ------------------------------------------------- */

/* Joins cur with base by (suite, id) and fills every suite's cmp; a case
 * whose prompt hash differs is an error. Then evaluates the gate of every
 * suite (with or without base: NULL) and sets cur->gate_failed. */
int whet_eval_compare(whet_eval_results *cur, const whet_eval_results *base, whet_err *e);

/* ---- during training (session.c) ------------------------------------------------------
 * whet train --eval SPEC... [--gate]: the suites run on the base model before
 * the first step (the baseline) and at every checkpoint, each checkpoint's
 * results compared with the baseline and gated; the best checkpoint whose
 * gate passed is remembered (the highest pass rate; on a tie the earlier).
 *   whet_eval_session s;
 *   whet_eval_session_init(&s, suites, n, tok, tmpl, cache_dir);
 *   whet_eval_session_baseline(&s, model, out_dir, &e);      before step 1
 *   whet_eval_session_checkpoint(&s, model, step, ckpt_dir, &passed, &e);
 *   ... s.last (its summary: whet_eval_write_summary), s.have_best, s.best_dir
 *   whet_eval_session_free(&s);
 * The suites, tokenizer and template must outlive the session. */
typedef struct whet_eval_session {
    whet_eval_suite *const *suites;
    size_t n_suites;
    const whet_tokenizer *tok;
    const whet_chat_template *tmpl;
    const char *cache_dir;
    whet_eval_results *baseline; /* the base model's run */
    whet_eval_results *last;     /* the last checkpoint's run (compared, gated) */
    int have_best;
    uint64_t best_step;
    double best_rate;
    char best_dir[1200];
} whet_eval_session;

void whet_eval_session_init(whet_eval_session *s, whet_eval_suite *const *suites, size_t n_suites,
                            const whet_tokenizer *tok, const whet_chat_template *tmpl, const char *cache_dir);
/* Runs the suites on m as it is now (the base model) and keeps the results
 * as the baseline; with out_dir, writes its reports to out_dir/eval-base. */
int whet_eval_session_baseline(whet_eval_session *s, whet_model *m, const char *out_dir, whet_err *e);
/* Runs the suites on m (adapter attached: evaluated without dropout),
 * compares with the baseline, gates, writes the reports to
 * checkpoint_dir/eval (when not NULL) and updates the best checkpoint.
 * *passed: the gate's verdict. -1 only on errors. */
int whet_eval_session_checkpoint(whet_eval_session *s, whet_model *m, uint64_t step, const char *checkpoint_dir,
                                 int *passed, whet_err *e);
void whet_eval_session_free(whet_eval_session *s);

/* ---- files (report.c, cache.c) ------------------------------------------------------ */

/* Writes dir/results.json, dir/samples.jsonl, dir/report.md and
 * dir/report.html (each atomically); creates dir. */
int whet_eval_write_reports(const whet_eval_results *r, const char *dir, whet_err *e);
int whet_eval_write_junit(const whet_eval_results *r, const char *path, whet_err *e);
/* A compact summary as one JSON object, for a trainer's metrics.jsonl:
 *   {"pass_rate": r, "passed": k, "cases": n, "gate_passed": bool,
 *    "gate_failures": ["suite: reason", ...],
 *    "suites": {NAME: {"pass_rate": r, "acc": a|null, "acc_norm": a|null,
 *                      "perplexity": p|null, "bits_per_byte": b|null,
 *                      "pass_to_fail": k, "fail_to_pass": k, "mcnemar_p": p}}}
 * (the last three only after a comparison with a baseline). Writes one value
 * where the writer expects one (after a key, in an array, or at the top). */
void whet_eval_write_summary(whet_json_writer *w, const whet_eval_results *r);
/* results.json as text (malloc'd), for --json. */
int whet_eval_results_json(const whet_eval_results *r, char **text, size_t *len, whet_err *e);
/* Reads dir/samples.jsonl (as written by whet_eval_write_reports) back. */
int whet_eval_results_load(whet_eval_results **out, const char *dir, whet_err *e);

#endif
