/* Eval suites: JSONL, the suite header on the first line, one case per later
 * line (blank lines and lines starting with '#' are skipped). Each line is
 * parsed on its own, so every message names the line of the file; keys are
 * checked strictly so that a typo is an error, not an assertion that never
 * runs. The format is whet-evalspec(5). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "eval/eval.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define DEFAULT_MAX_TOKENS 128
#define DEFAULT_EXEC_TIMEOUT 60.0

typedef struct line_ctx {
    const whet_json_doc *doc;
    const char *name;
    size_t line;
} line_ctx;

/* The JSON parser counts lines within the text it is given (one line here);
 * messages must count them in the file. */
static int relined(whet_err *e, const line_ctx *c)
{
    if (!e)
        return -1;
    char prefix[600];
    int n = snprintf(prefix, sizeof prefix, "%s: line 1, ", c->name);
    if (n > 0 && (size_t)n < sizeof prefix && strncmp(e->msg, prefix, (size_t)n) == 0) {
        char buf[sizeof e->msg];
        int head = snprintf(buf, sizeof buf, "%s: line %zu, ", c->name, c->line);
        if (head > 0 && (size_t)head < sizeof buf) {
            size_t rest = strlen(e->msg + n), room = sizeof buf - 1 - (size_t)head;
            size_t take = rest < room ? rest : room;
            memcpy(buf + head, e->msg + n, take);
            buf[(size_t)head + take] = 0;
            memcpy(e->msg, buf, (size_t)head + take + 1);
        }
    }
    return -1;
}

static int fail_at(whet_err *e, const line_ctx *c, const whet_json *v, const char *expected)
{
    whet_json_fail_at(e, c->doc, v, "%s", expected);
    return relined(e, c);
}

static int fail_key(whet_err *e, const line_ctx *c, const whet_json_member *m, const char *what, const char *allowed)
{
    whet_fail(e, "%s: line %zu, column %u (byte %zu): unknown key \"%s\" in %s (expected one of: %s)", c->name,
              c->line, (unsigned)m->column, m->offset, m->key, what, allowed);
    return -1;
}

static int check_keys(whet_err *e, const line_ctx *c, const whet_json *obj, const char *what, const char *const *keys)
{
    char allowed[512] = "";
    for (size_t i = 0; i < obj->u.object.count; i++) {
        const whet_json_member *m = &obj->u.object.members[i];
        int known = 0;
        for (size_t k = 0; keys[k]; k++)
            known |= strcmp(m->key, keys[k]) == 0 && strlen(keys[k]) == m->key_len;
        if (!known) {
            for (size_t k = 0; keys[k]; k++) {
                if (k)
                    strncat(allowed, ", ", sizeof allowed - strlen(allowed) - 1);
                strncat(allowed, keys[k], sizeof allowed - strlen(allowed) - 1);
            }
            return fail_key(e, c, m, what, allowed);
        }
    }
    return 0;
}

static int get_string(whet_err *e, const line_ctx *c, const whet_json *v, int nonempty, const char **s, size_t *len)
{
    if (v->type != WHET_JSON_STRING || (nonempty && v->u.string.len == 0))
        return fail_at(e, c, v, nonempty ? "a non-empty string" : "a string");
    *s = v->u.string.chars;
    if (len)
        *len = v->u.string.len;
    return 0;
}

static int get_number(whet_err *e, const line_ctx *c, const whet_json *v, double min, double max, double *out)
{
    if (v->type != WHET_JSON_NUMBER || !(v->u.number.value >= min && v->u.number.value <= max)) {
        char what[96];
        snprintf(what, sizeof what, "a number from %g to %g", min, max);
        return fail_at(e, c, v, what);
    }
    *out = v->u.number.value;
    return 0;
}

static int get_size(whet_err *e, const line_ctx *c, const whet_json *v, int64_t min, int64_t max, size_t *out)
{
    int64_t x;
    if (whet_json_int64(c->doc, v, min, max, &x, e) != 0)
        return relined(e, c);
    *out = (size_t)x;
    return 0;
}

/* An array of strings (each non-empty when asked), at least `min` of them. */
static int get_strings(whet_err *e, const line_ctx *c, const whet_json *v, size_t min, int nonempty,
                       const char ***out, size_t **lens, size_t *n)
{
    if (v->type != WHET_JSON_ARRAY || v->u.array.count < min) {
        char what[80];
        snprintf(what, sizeof what, "an array of at least %zu string%s", min, min == 1 ? "" : "s");
        return fail_at(e, c, v, what);
    }
    size_t count = v->u.array.count;
    *out = calloc(count + 1, sizeof **out);
    if (lens)
        *lens = calloc(count + 1, sizeof **lens);
    if (!*out || (lens && !*lens))
        return whet_fail(e, "%s: out of memory", c->name);
    for (size_t i = 0; i < count; i++)
        if (get_string(e, c, &v->u.array.items[i], nonempty, &(*out)[i], lens ? &(*lens)[i] : NULL) != 0)
            return -1;
    *n = count;
    return 0;
}

/* ---- assertions ----------------------------------------------------------------- */

static const char *const assert_names[WHET_ASSERT_TYPE_COUNT] = {
    "equals", "prefix", "contains", "icontains", "contains_any", "contains_all", "regex",
    "levenshtein", "f1", "json_valid", "json_match", "json_subset", "length", "exec"};

static int parse_norm(whet_err *e, const line_ctx *c, const whet_json *v, unsigned *flags)
{
    static const char *const names[] = {"trim", "lower", "ws", "punct"};
    const char **items = NULL;
    size_t n = 0;
    int rc = get_strings(e, c, v, 0, 1, &items, NULL, &n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        size_t k = 0;
        while (k < 4 && strcmp(items[i], names[k]) != 0)
            k++;
        if (k == 4)
            rc = fail_at(e, c, &v->u.array.items[i], "a normalisation: \"trim\", \"lower\", \"ws\" or \"punct\"");
        else
            *flags |= 1u << k;
    }
    free(items);
    return rc;
}

static int compile_regex(whet_err *e, const line_ctx *c, const whet_json *v, whet_eval_assert *a)
{
    int code;
    PCRE2_SIZE at;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)a->value, a->value_len, PCRE2_UTF | PCRE2_UCP, &code, &at, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        return whet_fail(e, "%s: line %zu, column %u (byte %zu): expected a PCRE2 regular expression: %s at offset %zu "
                         "of the pattern", c->name, c->line, (unsigned)v->column, v->offset, (const char *)msg,
                         (size_t)at);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional: interpreted when it fails */
    a->regex = re;
    return 0;
}

static int parse_assert(whet_err *e, const line_ctx *c, const whet_json *v, whet_eval_assert *a)
{
    static const char *const keys[] = {"type", "value", "weight", "norm", "target", "group", "max_distance",
                                       "min", "max", "min_score", "timeout", NULL};
    if (v->type != WHET_JSON_OBJECT)
        return fail_at(e, c, v, "an assertion object {\"type\": ..., \"value\": ...}");
    if (check_keys(e, c, v, "an assertion", keys) != 0)
        return -1;
    const whet_json *type = whet_json_get(v, "type"), *value = whet_json_get(v, "value"), *x;
    if (!type) {
        whet_json_fail_missing(e, c->doc, v, "type");
        return relined(e, c);
    }
    const char *name;
    if (get_string(e, c, type, 1, &name, NULL) != 0)
        return -1;
    a->negate = strncmp(name, "not_", 4) == 0;
    const char *base = name + (a->negate ? 4 : 0);
    size_t t = 0;
    while (t < WHET_ASSERT_TYPE_COUNT && strcmp(base, assert_names[t]) != 0)
        t++;
    if (t == WHET_ASSERT_TYPE_COUNT || strlen(name) >= sizeof a->name)
        return fail_at(e, c, type, "an assertion type: equals, prefix, contains, icontains, contains_any, "
                                   "contains_all, regex, levenshtein, f1, json_valid, json_match, json_subset, "
                                   "length or exec, optionally with the prefix not_");
    a->type = (whet_eval_assert_type)t;
    snprintf(a->name, sizeof a->name, "%s", name);
    a->weight = 1;
    a->min_score = -1;
    a->timeout = DEFAULT_EXEC_TIMEOUT;
    a->max_len = SIZE_MAX;
    if ((x = whet_json_get(v, "weight")) && get_number(e, c, x, 0, 1e9, &a->weight) != 0)
        return -1;

    /* which keys each type takes, beyond type and weight */
    int wants_string = 0, wants_strings = 0, wants_json = 0, takes_norm = 0;
    switch (a->type) {
    case WHET_ASSERT_EQUALS:
    case WHET_ASSERT_PREFIX:
    case WHET_ASSERT_CONTAINS:
    case WHET_ASSERT_ICONTAINS:
    case WHET_ASSERT_LEVENSHTEIN: wants_string = 1, takes_norm = 1; break;
    case WHET_ASSERT_REGEX: wants_string = 1, takes_norm = 1; break;
    case WHET_ASSERT_F1:
    case WHET_ASSERT_EXEC: wants_string = 1; break;
    case WHET_ASSERT_CONTAINS_ANY:
    case WHET_ASSERT_CONTAINS_ALL: wants_strings = 1, takes_norm = 1; break;
    case WHET_ASSERT_JSON_MATCH:
    case WHET_ASSERT_JSON_SUBSET: wants_json = 1; break;
    default: break;
    }
    static const struct { const char *key; unsigned types; } only[] = {
        {"target", 1u << WHET_ASSERT_REGEX},
        {"group", 1u << WHET_ASSERT_REGEX},
        {"max_distance", 1u << WHET_ASSERT_LEVENSHTEIN},
        {"min", 1u << WHET_ASSERT_LENGTH},
        {"max", 1u << WHET_ASSERT_LENGTH},
        {"min_score", 1u << WHET_ASSERT_F1 | 1u << WHET_ASSERT_EXEC},
        {"timeout", 1u << WHET_ASSERT_EXEC},
    };
    for (size_t i = 0; i < sizeof only / sizeof *only; i++)
        if ((x = whet_json_get(v, only[i].key)) && !(only[i].types & (1u << a->type))) {
            char what[96];
            snprintf(what, sizeof what, "no \"%s\" key in a %s assertion", only[i].key, base);
            return fail_at(e, c, x, what);
        }
    if ((x = whet_json_get(v, "norm"))) {
        if (!takes_norm)
            return fail_at(e, c, x, "no \"norm\" key in this assertion (only string comparisons take it)");
        if (parse_norm(e, c, x, &a->norm) != 0)
            return -1;
    }
    if (!wants_string && !wants_strings && !wants_json && value)
        return fail_at(e, c, value, "no \"value\" key in this assertion");
    if ((wants_string || wants_strings || wants_json) && !value) {
        whet_json_fail_missing(e, c->doc, v, "value");
        return relined(e, c);
    }
    if (wants_string &&
        get_string(e, c, value, a->type != WHET_ASSERT_EQUALS && a->type != WHET_ASSERT_LEVENSHTEIN &&
                                    a->type != WHET_ASSERT_F1, &a->value, &a->value_len) != 0)
        return -1;
    if (wants_strings && get_strings(e, c, value, 1, 1, &a->values, &a->values_len, &a->n_values) != 0)
        return -1;
    if (wants_json)
        a->json = value;

    switch (a->type) {
    case WHET_ASSERT_REGEX: {
        if (compile_regex(e, c, value, a) != 0)
            return -1;
        uint32_t captures = 0;
        pcre2_pattern_info(a->regex, PCRE2_INFO_CAPTURECOUNT, &captures);
        if ((x = whet_json_get(v, "target"))) {
            if (get_string(e, c, x, 0, &a->target, &a->target_len) != 0)
                return -1;
            a->has_target = 1;
            a->group = captures > 0;
        }
        if ((x = whet_json_get(v, "group"))) {
            size_t g;
            if (get_size(e, c, x, 0, captures, &g) != 0)
                return -1;
            a->group = (int)g;
        }
        break;
    }
    case WHET_ASSERT_LEVENSHTEIN:
        if ((x = whet_json_get(v, "max_distance")) && get_size(e, c, x, 0, INT32_MAX, &a->max_distance) != 0)
            return -1;
        break;
    case WHET_ASSERT_LENGTH: {
        const whet_json *mn = whet_json_get(v, "min"), *mx = whet_json_get(v, "max");
        if (!mn && !mx)
            return fail_at(e, c, v, "a length assertion with \"min\" or \"max\" (characters)");
        if ((mn && get_size(e, c, mn, 0, INT64_MAX, &a->min_len) != 0) ||
            (mx && get_size(e, c, mx, 0, INT64_MAX, &a->max_len) != 0))
            return -1;
        if (a->min_len > a->max_len)
            return fail_at(e, c, mx, "\"max\" at least \"min\"");
        break;
    }
    case WHET_ASSERT_F1:
    case WHET_ASSERT_EXEC:
        if ((x = whet_json_get(v, "min_score")) && get_number(e, c, x, 0, 1, &a->min_score) != 0)
            return -1;
        if ((x = whet_json_get(v, "timeout")) && get_number(e, c, x, 0.001, 86400, &a->timeout) != 0)
            return -1;
        break;
    default: break;
    }
    return 0;
}

/* ---- the prompt hash ----------------------------------------------------------------- */

static void hash_field(XXH3_state_t *st, const char *s, size_t len)
{
    uint64_t n = len;
    XXH3_128bits_update(st, &n, sizeof n);
    XXH3_128bits_update(st, s, len);
}

static void hex128(XXH128_hash_t h, char out[33])
{
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h.high64, (unsigned long long)h.low64);
}

/* What the model is given, not how it is judged: editing assertions keeps
 * the case comparable with a baseline, editing its input does not. */
static int hash_case_input(whet_eval_case *k)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return -1;
    XXH3_128bits_reset(st);
    const char *kind = whet_eval_kind_name(k->kind);
    hash_field(st, kind, strlen(kind));
    if (k->prompt)
        hash_field(st, k->prompt, k->prompt_len);
    for (size_t i = 0; i < k->n_messages; i++) {
        hash_field(st, k->messages[i].role, strlen(k->messages[i].role));
        hash_field(st, k->messages[i].content, k->messages[i].content_len);
    }
    for (size_t i = 0; i < k->n_choices; i++)
        hash_field(st, k->choices[i], k->choices_len[i]);
    if (k->text)
        hash_field(st, k->text, k->text_len);
    hex128(XXH3_128bits_digest(st), k->prompt_hash);
    XXH3_freeState(st);
    return 0;
}

/* ---- header and cases ---------------------------------------------------------------- */

static int parse_gate(whet_err *e, const line_ctx *c, const whet_json *v, whet_eval_gate *g)
{
    static const char *const keys[] = {"min_pass_rate", "max_drop", "alpha", "must_pass_tag", "max_ppl_increase",
                                       NULL};
    if (v->type != WHET_JSON_OBJECT)
        return fail_at(e, c, v, "an object of gate thresholds");
    if (check_keys(e, c, v, "the gate", keys) != 0)
        return -1;
    const whet_json *x;
    if ((x = whet_json_get(v, "min_pass_rate")) && get_number(e, c, x, 0, 1, &g->min_pass_rate) != 0)
        return -1;
    if ((x = whet_json_get(v, "max_drop")) && get_number(e, c, x, 0, 1, &g->max_drop) != 0)
        return -1;
    if ((x = whet_json_get(v, "alpha")) && get_number(e, c, x, 0, 1, &g->alpha) != 0)
        return -1;
    if ((x = whet_json_get(v, "max_ppl_increase")) && get_number(e, c, x, 0, 1e9, &g->max_ppl_increase) != 0)
        return -1;
    if ((x = whet_json_get(v, "must_pass_tag")) && get_string(e, c, x, 1, &g->must_pass_tag, NULL) != 0)
        return -1;
    return 0;
}

static int parse_header(whet_err *e, const line_ctx *c, const whet_json *v, whet_eval_suite *s)
{
    static const char *const keys[] = {"suite", "version", "description", "seed", "temperature", "top_k", "top_p",
                                       "max_tokens", "stop", "repeats", "reduce", "threshold", "gate", NULL};
    if (v->type != WHET_JSON_OBJECT || !whet_json_get(v, "suite"))
        return fail_at(e, c, v, "the suite header {\"suite\": NAME, ...} on the first line");
    if (check_keys(e, c, v, "the suite header", keys) != 0)
        return -1;
    const whet_json *x;
    const char *name;
    if (get_string(e, c, whet_json_get(v, "suite"), 1, &name, NULL) != 0)
        return -1;
    if (!(s->name = strdup(name)))
        return whet_fail(e, "out of memory");
    size_t version = 1;
    if ((x = whet_json_get(v, "version")) && get_size(e, c, x, 1, 1, &version) != 0)
        return -1;
    if ((x = whet_json_get(v, "description")) && get_string(e, c, x, 0, &name, NULL) != 0)
        return -1;
    if ((x = whet_json_get(v, "seed"))) {
        int64_t seed;
        if (whet_json_int64(c->doc, x, 0, INT64_MAX, &seed, e) != 0)
            return relined(e, c);
        s->seed = (uint64_t)seed;
    }
    if ((x = whet_json_get(v, "temperature")) && get_number(e, c, x, 0, 1e6, &s->temperature) != 0)
        return -1;
    if ((x = whet_json_get(v, "top_k")) && get_size(e, c, x, 0, INT32_MAX, &s->top_k) != 0)
        return -1;
    if ((x = whet_json_get(v, "top_p")) && get_number(e, c, x, 1e-12, 1, &s->top_p) != 0)
        return -1;
    if ((x = whet_json_get(v, "max_tokens")) && get_size(e, c, x, 1, 1 << 24, &s->max_tokens) != 0)
        return -1;
    if ((x = whet_json_get(v, "repeats")) && get_size(e, c, x, 1, 1000, &s->repeats) != 0)
        return -1;
    if ((x = whet_json_get(v, "threshold")) && get_number(e, c, x, 0, 1, &s->threshold) != 0)
        return -1;
    if ((x = whet_json_get(v, "stop"))) {
        const char **stops = NULL;
        size_t n = 0;
        int rc = get_strings(e, c, x, 0, 1, &stops, NULL, &n);
        if (rc == 0 && n > WHET_EVAL_MAX_STOPS)
            rc = fail_at(e, c, x, "at most 16 stop strings");
        for (size_t i = 0; rc == 0 && i < n; i++)
            s->stops[i] = stops[i];
        if (rc == 0)
            s->n_stops = n;
        free(stops);
        if (rc)
            return -1;
    }
    if ((x = whet_json_get(v, "reduce"))) {
        static const char *const names[] = {"mean", "all", "any", "majority"};
        size_t k = 0;
        while (k < 4 && !(x->type == WHET_JSON_STRING && strcmp(x->u.string.chars, names[k]) == 0))
            k++;
        if (k == 4)
            return fail_at(e, c, x, "a reducer: \"mean\", \"all\", \"any\" or \"majority\"");
        s->reduce = (whet_eval_reduce)k;
    }
    if ((x = whet_json_get(v, "gate")) && parse_gate(e, c, x, &s->gate) != 0)
        return -1;
    return 0;
}

static int parse_case(whet_err *e, const line_ctx *c, const whet_json *v, const whet_eval_suite *s,
                      whet_eval_case *k)
{
    static const char *const keys[] = {"id", "kind", "tags", "prompt", "messages", "choices", "gold", "text",
                                       "assert", "threshold", "max_tokens", "meta", NULL};
    if (v->type != WHET_JSON_OBJECT)
        return fail_at(e, c, v, "a case object {\"id\": ..., \"kind\": ...}");
    if (check_keys(e, c, v, "a case", keys) != 0)
        return -1;
    const whet_json *x;
    if (!(x = whet_json_get(v, "id"))) {
        whet_json_fail_missing(e, c->doc, v, "id");
        return relined(e, c);
    }
    const char *id;
    size_t id_len;
    if (get_string(e, c, x, 1, &id, &id_len) != 0)
        return -1;
    if (memchr(id, 0, id_len) || !(k->id = strdup(id)))
        return id_len != strlen(id) ? fail_at(e, c, x, "an id without U+0000") : whet_fail(e, "out of memory");
    k->kind = WHET_EVAL_GEN;
    if ((x = whet_json_get(v, "kind"))) {
        if (x->type == WHET_JSON_STRING && strcmp(x->u.string.chars, "gen") == 0)
            k->kind = WHET_EVAL_GEN;
        else if (x->type == WHET_JSON_STRING && strcmp(x->u.string.chars, "choice") == 0)
            k->kind = WHET_EVAL_CHOICE;
        else if (x->type == WHET_JSON_STRING && strcmp(x->u.string.chars, "ppl") == 0)
            k->kind = WHET_EVAL_PPL;
        else
            return fail_at(e, c, x, "a kind: \"gen\", \"choice\" or \"ppl\"");
    }
    if ((x = whet_json_get(v, "tags")) && get_strings(e, c, x, 0, 1, &k->tags, NULL, &k->n_tags) != 0)
        return -1;
    k->threshold = s->threshold;
    k->max_tokens = s->max_tokens;
    if ((x = whet_json_get(v, "threshold")) && get_number(e, c, x, 0, 1, &k->threshold) != 0)
        return -1;
    if ((x = whet_json_get(v, "max_tokens")) && get_size(e, c, x, 1, 1 << 24, &k->max_tokens) != 0)
        return -1;

    /* the keys each kind takes */
    static const struct { const char *key; unsigned kinds; } only[] = {
        {"prompt", 1u << WHET_EVAL_GEN | 1u << WHET_EVAL_CHOICE},
        {"messages", 1u << WHET_EVAL_GEN},
        {"assert", 1u << WHET_EVAL_GEN},
        {"threshold", 1u << WHET_EVAL_GEN},
        {"max_tokens", 1u << WHET_EVAL_GEN},
        {"choices", 1u << WHET_EVAL_CHOICE},
        {"gold", 1u << WHET_EVAL_CHOICE},
        {"text", 1u << WHET_EVAL_PPL},
    };
    for (size_t i = 0; i < sizeof only / sizeof *only; i++)
        if ((x = whet_json_get(v, only[i].key)) && !(only[i].kinds & (1u << k->kind))) {
            char what[96];
            snprintf(what, sizeof what, "no \"%s\" key in a %s case", only[i].key, whet_eval_kind_name(k->kind));
            return fail_at(e, c, x, what);
        }
    const whet_json *prompt = whet_json_get(v, "prompt"), *messages = whet_json_get(v, "messages");
    switch (k->kind) {
    case WHET_EVAL_GEN: {
        if ((prompt != NULL) == (messages != NULL))
            return fail_at(e, c, v, "a gen case with exactly one of \"prompt\" and \"messages\"");
        if (prompt && get_string(e, c, prompt, 0, &k->prompt, &k->prompt_len) != 0)
            return -1;
        if (messages) {
            if (messages->type != WHET_JSON_ARRAY || messages->u.array.count == 0)
                return fail_at(e, c, messages, "a non-empty array of {\"role\", \"content\"} messages");
            if (whet_chat_messages_from_json(c->doc, messages, &k->messages, &k->n_messages, e) != 0)
                return relined(e, c);
        }
        if (!(x = whet_json_get(v, "assert"))) {
            whet_json_fail_missing(e, c->doc, v, "assert");
            return relined(e, c);
        }
        if (x->type != WHET_JSON_ARRAY || x->u.array.count == 0)
            return fail_at(e, c, x, "a non-empty array of assertions");
        k->n_asserts = x->u.array.count;
        if (!(k->asserts = calloc(k->n_asserts, sizeof *k->asserts)))
            return whet_fail(e, "out of memory");
        double total = 0;
        for (size_t i = 0; i < k->n_asserts; i++) {
            if (parse_assert(e, c, &x->u.array.items[i], &k->asserts[i]) != 0)
                return -1;
            total += k->asserts[i].weight;
        }
        if (!(total > 0))
            return fail_at(e, c, x, "assertions whose weights do not all equal 0");
        break;
    }
    case WHET_EVAL_CHOICE:
        if (!prompt) {
            whet_json_fail_missing(e, c->doc, v, "prompt");
            return relined(e, c);
        }
        if (get_string(e, c, prompt, 0, &k->prompt, &k->prompt_len) != 0)
            return -1;
        if (!(x = whet_json_get(v, "choices"))) {
            whet_json_fail_missing(e, c->doc, v, "choices");
            return relined(e, c);
        }
        if (get_strings(e, c, x, 2, 1, &k->choices, &k->choices_len, &k->n_choices) != 0)
            return -1;
        if (!(x = whet_json_get(v, "gold"))) {
            whet_json_fail_missing(e, c->doc, v, "gold");
            return relined(e, c);
        }
        if (get_size(e, c, x, 0, (int64_t)k->n_choices - 1, &k->gold) != 0)
            return -1;
        break;
    case WHET_EVAL_PPL:
        if (!(x = whet_json_get(v, "text"))) {
            whet_json_fail_missing(e, c->doc, v, "text");
            return relined(e, c);
        }
        if (get_string(e, c, x, 1, &k->text, &k->text_len) != 0)
            return -1;
        break;
    }
    if (hash_case_input(k) != 0)
        return whet_fail(e, "out of memory");
    return 0;
}

const char *whet_eval_kind_name(whet_eval_kind k)
{
    return k == WHET_EVAL_CHOICE ? "choice" : k == WHET_EVAL_PPL ? "ppl" : "gen";
}

const char *whet_eval_reduce_name(whet_eval_reduce r)
{
    static const char *const names[] = {"mean", "all", "any", "majority"};
    return (unsigned)r < 4 ? names[r] : "?";
}

static void free_case(whet_eval_case *k)
{
    free(k->id);
    free(k->tags);
    free(k->messages);
    free(k->choices);
    free(k->choices_len);
    for (size_t i = 0; i < k->n_asserts; i++) {
        free(k->asserts[i].values);
        free(k->asserts[i].values_len);
        if (k->asserts[i].regex)
            pcre2_code_free(k->asserts[i].regex);
    }
    free(k->asserts);
}

void whet_eval_suite_free(whet_eval_suite *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_cases; i++)
        free_case(&s->cases[i]);
    free(s->cases);
    for (size_t i = 0; i < s->n_docs; i++)
        whet_json_free(s->docs[i]);
    free(s->docs);
    free(s->text);
    free(s->name);
    free(s->path);
    free(s->dir);
    free(s);
}

static int is_blank_or_comment(const char *p, size_t len)
{
    size_t i = 0;
    while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r'))
        i++;
    return i == len || p[i] == '#';
}

int whet_eval_suite_parse(whet_eval_suite **out, const char *text, size_t len, const char *name, whet_err *e)
{
    *out = NULL;
    whet_eval_suite *s = calloc(1, sizeof *s);
    if (!s)
        return whet_fail(e, "%s: out of memory", name);
    s->temperature = 0;
    s->top_p = 1;
    s->max_tokens = DEFAULT_MAX_TOKENS;
    s->repeats = 1;
    s->threshold = 1;
    s->gate = (whet_eval_gate){NAN, NAN, 0.05, "critical", NAN};
    s->path = strdup(name);
    const char *slash = strrchr(name, '/');
    s->dir = slash ? strndup(name, (size_t)(slash - name) + (slash == name)) : strdup(".");
    s->text = malloc(len + 1);
    size_t max_lines = 1;
    for (size_t i = 0; i < len; i++)
        max_lines += text[i] == '\n';
    s->docs = calloc(max_lines, sizeof *s->docs);
    s->cases = calloc(max_lines, sizeof *s->cases);
    if (!s->path || !s->dir || !s->text || !s->docs || !s->cases) {
        whet_eval_suite_free(s);
        return whet_fail(e, "%s: out of memory", name);
    }
    if (len)
        memcpy(s->text, text, len);
    s->text[len] = 0;
    int have_header = 0;
    size_t line = 0;
    for (size_t begin = 0; begin < len;) {
        const char *nl = memchr(s->text + begin, '\n', len - begin);
        size_t end = nl ? (size_t)(nl - s->text) : len;
        line++;
        const char *p = s->text + begin;
        size_t n = end - begin;
        size_t at = begin;
        begin = end + 1;
        if (is_blank_or_comment(p, n))
            continue;
        whet_json_options opt = {.base_offset = at};
        whet_json_doc *doc = NULL;
        line_ctx c = {NULL, name, line};
        if (whet_json_parse(&doc, p, n, name, &opt, e) != 0) {
            relined(e, &c);
            goto fail;
        }
        s->docs[s->n_docs++] = doc;
        c.doc = doc;
        const whet_json *root = whet_json_root(doc);
        if (!have_header) {
            if (parse_header(e, &c, root, s) != 0)
                goto fail;
            have_header = 1;
            continue;
        }
        whet_eval_case *k = &s->cases[s->n_cases++];
        k->line = line;
        k->line_text = p;
        k->line_len = n;
        if (parse_case(e, &c, root, s, k) != 0)
            goto fail;
        for (size_t i = 0; i + 1 < s->n_cases; i++)
            if (strcmp(s->cases[i].id, k->id) == 0) {
                whet_fail(e, "%s: line %zu: the id \"%s\" is already the id of the case on line %zu", name, line,
                          k->id, s->cases[i].line);
                goto fail;
            }
    }
    if (!have_header) {
        whet_fail(e, "%s: expected the suite header {\"suite\": NAME, ...} on the first line, found no JSON line",
                  name);
        goto fail;
    }
    if (s->n_cases == 0) {
        whet_fail(e, "%s: expected cases after the suite header (one JSON object per line), found none", name);
        goto fail;
    }
    *out = s;
    return 0;
fail:
    whet_eval_suite_free(s);
    return -1;
}

int whet_eval_suite_load(whet_eval_suite **out, const char *path, whet_err *e)
{
    char *text = NULL;
    size_t len = 0;
    *out = NULL;
    if (whet_read_file(path, &text, &len, e) != 0)
        return -1;
    int rc = whet_eval_suite_parse(out, text, len, path, e);
    free(text);
    return rc;
}
