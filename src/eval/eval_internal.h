/* Shared between the files of src/eval (not part of the eval API). */
#ifndef WHET_EVAL_INTERNAL_H
#define WHET_EVAL_INTERNAL_H

#include "eval/eval.h"

/* The entry of key (a JSON object whose "key" member is the key), or NULL
 * when absent, unreadable or corrupt; dir NULL: always NULL. */
whet_json_doc *whet_eval_cache_get(const char *dir, const char key[33]);
/* json must be an object holding "key": key. */
int whet_eval_cache_put(const char *dir, const char key[33], const char *json, size_t len, whet_err *e);

/* rate and Wilson 95 % interval from n and passed */
void whet_eval_rate_finish(whet_eval_rate *r);

int whet_eval_mkdir_p(const char *path, whet_err *e);

/* Suite aggregates (pass rates, tags, choice accuracy, perplexity) from the
 * case results in [first_case, first_case + n_cases); results.pass too. */
int whet_eval_aggregate(whet_eval_results *r, whet_err *e);

#endif
