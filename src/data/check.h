/* Checking training data before a run, and data hygiene: what `whet data`
 * does, as library calls `whet train` makes at its start.
 *
 *   whet_data_check_options co = {.data = opts, .seq_len = T};
 *   whet_data_report rep;
 *   whet_data_check(paths, n_paths, &co, &rep, &e);   // -1 only if a file cannot be read
 *   for each rep.problems[i]: whet_data_problem_format(&rep.problems[i], line, sizeof line) -> print
 *   if (rep.errors) stop;                               // warnings do not stop a run
 *   whet_data_report_free(&rep);
 *
 *   whet_overlap_report ov;
 *   whet_data_overlap(train_paths, 1, eval_paths, n_evals, 13, &ov, &e);
 *   for each ov.cases[i]: warn "eval case <id> (<file>:<line>) shares k of its m 13-grams with <train_file>:<line>"
 *   whet_overlap_report_free(&ov);
 */
#ifndef WHET_DATA_CHECK_H
#define WHET_DATA_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "data/dataset.h"

/* ---- checks ---------------------------------------------------------------
 * Error classes (whet-dataset(5)): invalid-json, invalid-utf8, unknown-format,
 * missing-key, invalid-value, unrecognised-role, empty-content,
 * no-assistant-message, no-chat-template, template-error, empty-file;
 * warnings: too-long (the tokens --seq-len would cut), duplicate (the same
 * normalised content as an earlier example, in any of the files). */
typedef struct whet_data_problem {
    const char *file;     /* one of the report's files */
    size_t line, column;  /* from 1; column in characters */
    int warning;          /* 0: an error */
    const char *cls;      /* the class, e.g. "missing-key" */
    char *message;
} whet_data_problem;

typedef struct whet_data_report {
    whet_data_problem *problems; /* in file and line order, at most max_problems */
    size_t n_problems;
    size_t errors, warnings;     /* all of them, also those beyond max_problems */
    size_t examples;             /* examples read in all files */
    size_t examples_ok;          /* without an error */
    char **files;                /* the files read (problem.file points here) */
    size_t n_files;
} whet_data_report;

typedef struct whet_data_check_options {
    whet_data_options data; /* tok NULL: no tokenizing (no template-error or too-long checks) */
    size_t seq_len;         /* 0: no too-long check */
    size_t max_problems;    /* problems kept in the report; 0: 1000 */
} whet_data_check_options;

/* Checks every example of every file (a directory: its train.jsonl,
 * valid.jsonl and test.jsonl). Returns -1 only when a file cannot be read
 * (e set); everything wrong inside the files is in the report. */
int whet_data_check(const char *const *paths, size_t n_paths, const whet_data_check_options *opt,
                    whet_data_report *out, whet_err *e);
void whet_data_report_free(whet_data_report *r);
/* "file:line:column: class: message" (warnings: "warning: class: ..."). */
void whet_data_problem_format(const whet_data_problem *p, char *buf, size_t cap);

/* ---- stats ------------------------------------------------------------------- */

typedef struct whet_data_stats {
    size_t examples;
    size_t tokens;                   /* before truncation */
    size_t min, median, p95, max;    /* tokens per example */
    size_t kept_tokens;              /* after truncation to seq_len */
    size_t loss_tokens;              /* kept tokens that are trained targets */
    size_t truncated, cut_tokens;    /* examples longer than seq_len, tokens cut */
    size_t rows;                     /* rows of seq_len the epoch fills (packed or not) */
    size_t steps_per_epoch;          /* ceil(rows / batch_size) */
} whet_data_stats;

/* Tokenizes every example once (in index order, which is also how packing
 * is simulated for rows). An example that fails stops it (e names it). */
int whet_data_stats_compute(whet_dataset *ds, size_t seq_len, size_t batch_size, int pack, whet_data_stats *out,
                            whet_err *e);

/* ---- hygiene ------------------------------------------------------------------ */

/* Copies `in` to `out` (written atomically; may be the same path) without
 * examples whose normalised content (whitespace runs collapsed, trimmed;
 * roles and fields kept apart) hashes (XXH3-64) like an earlier one's. Lines
 * that do not parse are kept. */
int whet_data_dedup(const char *in, const char *out, size_t *kept, size_t *removed, whet_err *e);

/* One eval case whose text shares n-grams with the training data. */
typedef struct whet_overlap_case {
    char *file;           /* the eval file */
    size_t line;
    char *id;             /* the case's "id", or "line N" */
    size_t ngrams;        /* its distinct n-grams */
    size_t overlapping;   /* of them, found in the training data and not common there */
    size_t common;        /* of them, common in the training data (a template): not counted */
    char *train_file;     /* the first training example holding an overlapping one */
    size_t train_line;
} whet_overlap_case;

typedef struct whet_overlap_report {
    whet_overlap_case *cases; /* only cases with overlap, in file and line order */
    size_t n_cases;
    size_t eval_cases;        /* cases read */
    size_t short_cases;       /* cases with fewer than n words: not checked */
    size_t template_cases;    /* cases whose only n-grams in the training data are common ones */
    size_t common_ngrams;     /* distinct eval n-grams left out as common */
    size_t train_examples;    /* training examples read */
    size_t n;                 /* the n-gram length */
    double max_common;
} whet_overlap_report;

/* An n-gram held by more than max_common of the training examples (and by
 * more than WHET_OVERLAP_MIN_COMMON of them, as GPT-3's decontamination
 * ignored 13-grams in more than 10 training documents) is the training data's
 * template (an instruction every prompt starts with, a system prompt), not a
 * leaked case: it is left out. */
#define WHET_OVERLAP_MAX_COMMON 0.1
#define WHET_OVERLAP_MIN_COMMON 10

typedef struct whet_overlap_options {
    size_t n;          /* words per n-gram, 1 to 64 */
    double max_common; /* more than 0, at most 1 (1: nothing is common) */
} whet_overlap_options;

/* Word n-grams (words: runs of letters and digits, ASCII lowercased, bytes
 * of non-ASCII characters kept as letters), hashed with XXH3-64, of what each
 * eval case gives the model (its prompt, messages' contents, text, choices,
 * and prompt followed by the gold choice; not "meta", assertions, "id" or
 * "tags"; an eval file's first line is its settings when it has no "prompt",
 * "messages", "text" or "choices"; blank lines and lines starting with '#'
 * are skipped) against those of every training example's content (message
 * contents, prompt, completion, text), field by field, less the common ones.
 * Memory: the distinct eval n-grams (with their training document
 * frequencies) and (n-gram, case) pairs; training files are streamed once. */
int whet_data_overlap_with(const char *const *train, size_t n_train, const char *const *evals, size_t n_evals,
                           const whet_overlap_options *opt, whet_overlap_report *out, whet_err *e);
/* The same with max_common WHET_OVERLAP_MAX_COMMON. */
int whet_data_overlap(const char *const *train, size_t n_train, const char *const *evals, size_t n_evals, size_t n,
                      whet_overlap_report *out, whet_err *e);
void whet_overlap_report_free(whet_overlap_report *r);

#endif
