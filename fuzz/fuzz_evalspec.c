/* libFuzzer target for the eval spec reader (src/eval/spec.c). Beyond "no
 * crash", for every input:
 *  - a refusal names the file ("fuzz.jsonl: ...") and leaves no suite;
 *  - an accepted suite has a name, at least one case, ids that are non-empty
 *    and unique, 32-hex-digit prompt hashes, and gold choices in range;
 *  - every assertion but exec (which would run the fuzzer's commands) scores
 *    a few outputs within [0, 1], and its negation scores 1 - score. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "eval/eval.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

static const char *const outputs[] = {"", "Paris", " {\"a\": [1, 2.5, \"x\"], \"b\": null}\n", "caf\xC3\xA9 <t12>\n\n END",
                                      "\xFF\xFE broken UTF-8 \xC3"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    whet_eval_suite *s = (whet_eval_suite *)1;
    whet_err e;
    if (whet_eval_suite_parse(&s, (const char *)data, size, "fuzz.jsonl", &e) != 0) {
        check(s == NULL);
        check(strncmp(e.msg, "fuzz.jsonl: ", 12) == 0);
        return 0;
    }
    check(s->name && s->name[0] && s->n_cases > 0);
    for (size_t i = 0; i < s->n_cases; i++) {
        const whet_eval_case *c = &s->cases[i];
        check(c->id[0] != 0);
        for (size_t j = 0; j < i; j++)
            check(strcmp(c->id, s->cases[j].id) != 0);
        check(strlen(c->prompt_hash) == 32 && strspn(c->prompt_hash, "0123456789abcdef") == 32);
        if (c->kind == WHET_EVAL_CHOICE)
            check(c->n_choices >= 2 && c->gold < c->n_choices);
        for (size_t a = 0; a < c->n_asserts; a++) {
            whet_eval_assert as = c->asserts[a];
            if (as.type == WHET_ASSERT_EXEC)
                continue;
            for (size_t o = 0; o < sizeof outputs / sizeof *outputs; o++) {
                double score, negated;
                char *detail = NULL;
                check(whet_eval_assert_score(&as, c, s->dir, outputs[o], strlen(outputs[o]), &score, &detail, &e) == 0);
                free(detail);
                as.negate = !as.negate;
                check(whet_eval_assert_score(&as, c, s->dir, outputs[o], strlen(outputs[o]), &negated, &detail, &e) == 0);
                free(detail);
                as.negate = !as.negate;
                check(score >= 0 && score <= 1 && fabs(score + negated - 1) < 1e-12);
            }
        }
    }
    whet_eval_suite_free(s);
    return 0;
}
