/* Content hashes (for --valid-split, duplicates and dedup), and n-gram
 * overlap between training data and eval suites. */
#include "data/check.h"
#include "data/data_internal.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Appends s with whitespace runs collapsed to one space and the ends trimmed. */
static void hash_normalised(XXH3_state_t *st, const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && is_space((unsigned char)s[i]))
        i++;
    int pending_space = 0;
    while (i < len) {
        size_t run = i;
        while (run < len && !is_space((unsigned char)s[run]))
            run++;
        if (run > i) {
            if (pending_space)
                XXH3_64bits_update(st, " ", 1);
            XXH3_64bits_update(st, s + i, run - i);
            pending_space = 0;
        }
        i = run;
        while (i < len && is_space((unsigned char)s[i])) {
            pending_space = 1;
            i++;
        }
    }
}

/* Field separators that text cannot hold (ASCII RS and US). */
static void hash_field(XXH3_state_t *st, const char *name, const char *s, size_t len)
{
    XXH3_64bits_update(st, name, strlen(name));
    XXH3_64bits_update(st, "\x1e", 1);
    hash_normalised(st, s, len);
    XXH3_64bits_update(st, "\x1f", 1);
}

uint64_t data_content_hash(const data_parsed *d)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return 0;
    XXH3_64bits_reset(st);
    switch (d->format) {
    case WHET_DATA_CHAT:
        for (size_t i = 0; i < d->n_messages; i++)
            hash_field(st, d->messages[i].role, d->messages[i].content, d->messages[i].content_len);
        break;
    case WHET_DATA_PROMPT_COMPLETION:
        hash_field(st, "prompt", d->prompt, d->prompt_len);
        hash_field(st, "completion", d->completion, d->completion_len);
        break;
    default:
        hash_field(st, "text", d->text, d->text_len);
        break;
    }
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

uint64_t data_example_hash(const data_file *f, size_t i)
{
    data_parsed d;
    data_problem p;
    if (data_parse(f, i, f->format, &d, &p) != 0)
        return XXH3_64bits(f->map.data + f->lines[i].offset, f->lines[i].len);
    uint64_t h = data_content_hash(&d);
    data_parsed_free(&d);
    return h;
}

/* ---- dedup ---- */

/* A set of 64-bit hashes (open addressing; 0 stands for itself via a flag). */
typedef struct hash_set {
    uint64_t *slots;
    uint8_t *used;
    size_t mask, count;
} hash_set;

static int hash_set_grow(hash_set *s)
{
    size_t cap = s->slots ? (s->mask + 1) * 2 : 1024;
    uint64_t *slots = malloc(cap * sizeof *slots);
    uint8_t *used = calloc(cap, 1);
    if (!slots || !used) {
        free(slots);
        free(used);
        return -1;
    }
    for (size_t i = 0; s->slots && i <= s->mask; i++) {
        if (!s->used[i])
            continue;
        size_t k = (size_t)s->slots[i] & (cap - 1);
        while (used[k])
            k = (k + 1) & (cap - 1);
        slots[k] = s->slots[i];
        used[k] = 1;
    }
    free(s->slots);
    free(s->used);
    s->slots = slots;
    s->used = used;
    s->mask = cap - 1;
    return 0;
}

/* 1 if h was already there, 0 if added, -1 out of memory. */
static int hash_set_add(hash_set *s, uint64_t h)
{
    if ((!s->slots || (s->count + 1) * 2 > s->mask + 1) && hash_set_grow(s) != 0)
        return -1;
    size_t k = (size_t)h & s->mask;
    while (s->used[k]) {
        if (s->slots[k] == h)
            return 1;
        k = (k + 1) & s->mask;
    }
    s->slots[k] = h;
    s->used[k] = 1;
    s->count++;
    return 0;
}

static void hash_set_free(hash_set *s)
{
    free(s->slots);
    free(s->used);
    memset(s, 0, sizeof *s);
}

int whet_data_dedup(const char *in, const char *out, size_t *kept, size_t *removed, whet_err *e)
{
    *kept = *removed = 0;
    data_file *f;
    if (data_file_index(&f, in, e) != 0)
        return -1;
    data_problem ignored;
    data_file_detect(f, &ignored); /* lines that do not parse are kept as they are */
    whet_atomic_file a;
    if (whet_atomic_open(&a, out, e) != 0) {
        data_file_release(f);
        return -1;
    }
    hash_set seen = {0};
    int rc = 0;
    for (size_t i = 0; i < f->n && rc == 0; i++) {
        int dup = hash_set_add(&seen, data_example_hash(f, i));
        if (dup < 0) {
            rc = whet_fail(e, "%s: out of memory after %zu examples", in, i);
            break;
        }
        if (dup) {
            (*removed)++;
            continue;
        }
        const data_line *l = &f->lines[i];
        /* .txt paragraphs stay apart with a blank line */
        if ((*kept && f->is_text && fputc('\n', a.f) == EOF) ||
            fwrite(f->map.data + l->offset, 1, l->len, a.f) != l->len || fputc('\n', a.f) == EOF)
            rc = whet_fail(e, "%s: write error", out);
        (*kept)++;
    }
    hash_set_free(&seen);
    data_file_release(f);
    if (rc != 0) {
        whet_atomic_abort(&a);
        return -1;
    }
    return whet_atomic_commit(&a, e);
}

/* ---- n-gram overlap ----
 * Two tables keyed by an n-gram's hash. `grams` holds every distinct eval
 * n-gram once, with the number of training examples that hold it (its
 * document frequency) and the first of them; the training data streams
 * through it. `pairs` holds every (n-gram, case) once, so that a case counts
 * its distinct n-grams. An n-gram that many training examples share is their
 * template (an instruction, a system prompt), not a leaked case: it is left
 * out once the whole training data has been counted. */

/* Calls fn with the hash of every word n-gram of s[0..len). */
typedef void (*ngram_fn)(void *ctx, uint64_t hash);

enum { MAX_N = 64, WORD_BYTES = 256 };

static int is_word_byte(unsigned char c)
{
    return c >= 0x80 || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

static void for_each_ngram(const char *s, size_t len, size_t n, ngram_fn fn, void *ctx)
{
    uint64_t ring[MAX_N], ordered[MAX_N];
    size_t words = 0, i = 0;
    while (i < len) {
        if (!is_word_byte((unsigned char)s[i])) {
            i++;
            continue;
        }
        char lower[WORD_BYTES];
        size_t w = 0, start = i;
        for (; i < len && is_word_byte((unsigned char)s[i]); i++) {
            unsigned char c = (unsigned char)s[i];
            if (w < WORD_BYTES)
                lower[w++] = (char)(c >= 'A' && c <= 'Z' ? c | 0x20 : c);
        }
        uint64_t h = XXH3_64bits_withSeed(lower, w, i - start);
        ring[words % n] = h;
        words++;
        if (words >= n) {
            for (size_t k = 0; k < n; k++)
                ordered[k] = ring[(words - n + k) % n];
            fn(ctx, XXH3_64bits(ordered, n * sizeof *ordered));
        }
    }
}

typedef struct gram_entry {
    uint64_t hash;
    size_t examples;      /* training examples that hold it */
    size_t last_example;  /* the last one counted, + 1 (one count per example) */
    size_t first_example; /* the first one, + 1; 0: in no training example */
    size_t first_file;    /* index into the training files */
    size_t first_line;
    int used;
} gram_entry;

typedef struct gram_table {
    gram_entry *slots;
    size_t mask, count;
} gram_table;

typedef struct pair_entry {
    uint64_t hash;
    uint32_t case_index; /* + 1; 0: empty */
} pair_entry;

typedef struct pair_table {
    pair_entry *slots;
    size_t mask, count;
} pair_table;

typedef struct eval_case {
    char *file, *id;
    size_t line, ngrams, overlapping, common;
    size_t first_example, first_file, first_line; /* of its first overlapping n-gram; example + 1 */
} eval_case;

typedef struct overlap_state {
    gram_table grams;
    pair_table pairs;
    eval_case *cases;
    size_t n_cases, cap_cases;
    uint32_t current; /* the case being added, + 1 */
    /* the training example being read */
    size_t train_example; /* + 1, counted over all training files */
    size_t train_file, train_line;
    int oom;
} overlap_state;

static int gram_table_grow(gram_table *t)
{
    size_t cap = t->slots ? (t->mask + 1) * 2 : 4096;
    gram_entry *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; t->slots && i <= t->mask; i++) {
        if (!t->slots[i].used)
            continue;
        size_t k = (size_t)t->slots[i].hash & (cap - 1);
        while (slots[k].used)
            k = (k + 1) & (cap - 1);
        slots[k] = t->slots[i];
    }
    free(t->slots);
    t->slots = slots;
    t->mask = cap - 1;
    return 0;
}

static gram_entry *gram_find(const gram_table *t, uint64_t hash)
{
    if (!t->slots)
        return NULL;
    for (size_t k = (size_t)hash & t->mask; t->slots[k].used; k = (k + 1) & t->mask)
        if (t->slots[k].hash == hash)
            return &t->slots[k];
    return NULL;
}

/* 0, or -1 out of memory. */
static int gram_add(gram_table *t, uint64_t hash)
{
    if (gram_find(t, hash))
        return 0;
    if ((!t->slots || (t->count + 1) * 2 > t->mask + 1) && gram_table_grow(t) != 0)
        return -1;
    size_t k = (size_t)hash & t->mask;
    while (t->slots[k].used)
        k = (k + 1) & t->mask;
    t->slots[k] = (gram_entry){.hash = hash, .used = 1};
    t->count++;
    return 0;
}

static int pair_table_grow(pair_table *t)
{
    size_t cap = t->slots ? (t->mask + 1) * 2 : 4096;
    pair_entry *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; t->slots && i <= t->mask; i++) {
        if (!t->slots[i].case_index)
            continue;
        size_t k = (size_t)(t->slots[i].hash ^ t->slots[i].case_index) & (cap - 1);
        while (slots[k].case_index)
            k = (k + 1) & (cap - 1);
        slots[k] = t->slots[i];
    }
    free(t->slots);
    t->slots = slots;
    t->mask = cap - 1;
    return 0;
}

/* 1 if the pair was new, 0 if it was there, -1 out of memory. */
static int pair_add(pair_table *t, uint64_t hash, uint32_t case_index)
{
    if ((!t->slots || (t->count + 1) * 2 > t->mask + 1) && pair_table_grow(t) != 0)
        return -1;
    size_t k = (size_t)(hash ^ case_index) & t->mask;
    for (; t->slots[k].case_index; k = (k + 1) & t->mask)
        if (t->slots[k].hash == hash && t->slots[k].case_index == case_index)
            return 0;
    t->slots[k] = (pair_entry){hash, case_index};
    t->count++;
    return 1;
}

static void add_eval_ngram(void *ctx, uint64_t hash)
{
    overlap_state *st = ctx;
    if (st->oom)
        return;
    int added = pair_add(&st->pairs, hash, st->current);
    if (added < 0 || (added && gram_add(&st->grams, hash) != 0)) {
        st->oom = 1;
        return;
    }
    st->cases[st->current - 1].ngrams += (size_t)added;
}

static void count_train_ngram(void *ctx, uint64_t hash)
{
    overlap_state *st = ctx;
    gram_entry *g = gram_find(&st->grams, hash);
    if (!g || g->last_example == st->train_example)
        return;
    g->last_example = st->train_example;
    if (g->examples++ == 0) {
        g->first_example = st->train_example;
        g->first_file = st->train_file;
        g->first_line = st->train_line;
    }
}

static void eval_string(overlap_state *st, const whet_json *v, size_t n)
{
    if (v && v->type == WHET_JSON_STRING)
        for_each_ngram(v->u.string.chars, v->u.string.len, n, add_eval_ngram, st);
}

/* What the model is given: the prompt, the messages' contents, the text and
 * the choices, and the prompt followed by the gold choice (the text a choice
 * case scores, whose n-grams may span both). Not "meta", assertion values,
 * ids or tags: they are not the model's input, and expected answers sharing
 * words with training answers is what training is for. */
static void eval_case_text(overlap_state *st, const whet_json *root, size_t n)
{
    const whet_json *prompt = whet_json_get(root, "prompt"), *messages = whet_json_get(root, "messages");
    const whet_json *choices = whet_json_get(root, "choices"), *gold = whet_json_get(root, "gold");
    eval_string(st, prompt, n);
    eval_string(st, whet_json_get(root, "text"), n);
    if (messages && messages->type == WHET_JSON_ARRAY)
        for (size_t i = 0; i < messages->u.array.count; i++) {
            const whet_json *m = &messages->u.array.items[i];
            if (m->type == WHET_JSON_OBJECT)
                eval_string(st, whet_json_get(m, "content"), n);
        }
    if (!choices || choices->type != WHET_JSON_ARRAY)
        return;
    for (size_t i = 0; i < choices->u.array.count; i++)
        eval_string(st, &choices->u.array.items[i], n);
    if (!prompt || prompt->type != WHET_JSON_STRING || !gold || gold->type != WHET_JSON_NUMBER ||
        gold->u.number.int_status != WHET_JSON_INT_EXACT || gold->u.number.integer < 0 ||
        (uint64_t)gold->u.number.integer >= choices->u.array.count)
        return;
    const whet_json *answer = &choices->u.array.items[gold->u.number.integer];
    if (answer->type != WHET_JSON_STRING)
        return;
    size_t len = prompt->u.string.len + answer->u.string.len;
    char *joined = malloc(len ? len : 1);
    if (!joined) {
        st->oom = 1;
        return;
    }
    memcpy(joined, prompt->u.string.chars, prompt->u.string.len);
    memcpy(joined + prompt->u.string.len, answer->u.string.chars, answer->u.string.len);
    for_each_ngram(joined, len, n, add_eval_ngram, st);
    free(joined);
}

static int is_case(const whet_json *root)
{
    return whet_json_get(root, "prompt") || whet_json_get(root, "messages") || whet_json_get(root, "text") ||
           whet_json_get(root, "choices");
}

static int read_eval_file(overlap_state *st, const char *path, size_t n, whet_err *e)
{
    data_file *f;
    if (data_file_index(&f, path, e) != 0)
        return -1;
    int rc = 0, first = 1;
    for (size_t i = 0; i < f->n && rc == 0; i++) {
        const data_line *l = &f->lines[i];
        const char *s = (const char *)f->map.data + l->offset;
        size_t skip = 0;
        while (skip < l->len && (s[skip] == ' ' || s[skip] == '\t'))
            skip++;
        if (skip < l->len && s[skip] == '#')
            continue;
        whet_json_doc *doc;
        whet_err je;
        if (whet_json_parse(&doc, s, l->len, "", NULL, &je) != 0) {
            unsigned line, column;
            int used = 0;
            if (sscanf(je.msg, ": line %u, column %u (byte %*u): %n", &line, &column, &used) == 2 && used > 0)
                rc = whet_fail(e, "%s:%u:%u: invalid-json: %s", path, (unsigned)l->line, column, je.msg + used);
            else
                rc = whet_fail(e, "%s:%u:1: invalid-json: %s", path, (unsigned)l->line, je.msg);
            break;
        }
        const whet_json *root = whet_json_root(doc);
        int settings = first && !(root->type == WHET_JSON_OBJECT && is_case(root));
        first = 0;
        if (!settings) {
            if (st->n_cases == st->cap_cases) {
                size_t cap = st->cap_cases ? st->cap_cases * 2 : 64;
                eval_case *bigger = realloc(st->cases, cap * sizeof *bigger);
                if (!bigger) {
                    whet_json_free(doc);
                    rc = whet_fail(e, "out of memory reading %s", path);
                    break;
                }
                st->cases = bigger;
                st->cap_cases = cap;
            }
            eval_case *c = &st->cases[st->n_cases++];
            memset(c, 0, sizeof *c);
            c->file = strdup(path);
            c->line = l->line;
            const whet_json *id = whet_json_get(root, "id");
            char buf[64];
            if (id && id->type == WHET_JSON_STRING)
                c->id = strdup(id->u.string.chars);
            else if (id && id->type == WHET_JSON_NUMBER)
                c->id = strdup(id->u.number.text);
            else {
                snprintf(buf, sizeof buf, "line %u", (unsigned)l->line);
                c->id = strdup(buf);
            }
            if (!c->file || !c->id)
                st->oom = 1;
            st->current = (uint32_t)st->n_cases;
            eval_case_text(st, root, n);
        }
        whet_json_free(doc);
        if (st->oom)
            rc = whet_fail(e, "out of memory reading %s", path);
    }
    data_file_release(f);
    return rc;
}

static int read_train_file(overlap_state *st, const char *path, size_t file_index, size_t n, whet_err *e)
{
    data_file *f;
    if (data_file_index(&f, path, e) != 0)
        return -1;
    data_problem ignored;
    data_file_detect(f, &ignored);
    st->train_file = file_index;
    for (size_t i = 0; i < f->n; i++) {
        data_parsed d;
        data_problem p;
        if (data_parse(f, i, f->format, &d, &p) != 0)
            continue; /* `whet data check` reports it */
        st->train_example++;
        st->train_line = f->lines[i].line;
        if (d.format == WHET_DATA_CHAT)
            for (size_t m = 0; m < d.n_messages; m++)
                for_each_ngram(d.messages[m].content, d.messages[m].content_len, n, count_train_ngram, st);
        else if (d.format == WHET_DATA_PROMPT_COMPLETION) {
            for_each_ngram(d.prompt, d.prompt_len, n, count_train_ngram, st);
            for_each_ngram(d.completion, d.completion_len, n, count_train_ngram, st);
        } else
            for_each_ngram(d.text, d.text_len, n, count_train_ngram, st);
        data_parsed_free(&d);
    }
    data_file_release(f);
    return 0;
}

/* In more than WHET_OVERLAP_MIN_COMMON training examples and in more than
 * max_common of them. */
static int is_common(const gram_entry *g, size_t train_examples, double max_common)
{
    return g->examples > WHET_OVERLAP_MIN_COMMON && (double)g->examples > max_common * (double)train_examples;
}

/* Each case's overlapping and common n-grams, and where its first overlapping
 * one is; the number of distinct common n-grams. */
static size_t classify_ngrams(overlap_state *st, double max_common)
{
    const pair_table *pt = &st->pairs;
    for (size_t i = 0; pt->slots && i <= pt->mask; i++) {
        const pair_entry *p = &pt->slots[i];
        if (!p->case_index)
            continue;
        const gram_entry *g = gram_find(&st->grams, p->hash);
        if (!g || !g->examples)
            continue;
        eval_case *c = &st->cases[p->case_index - 1];
        if (is_common(g, st->train_example, max_common)) {
            c->common++;
            continue;
        }
        c->overlapping++;
        if (!c->first_example || g->first_example < c->first_example) {
            c->first_example = g->first_example;
            c->first_file = g->first_file;
            c->first_line = g->first_line;
        }
    }
    size_t common = 0;
    const gram_table *gt = &st->grams;
    for (size_t i = 0; gt->slots && i <= gt->mask; i++)
        common += gt->slots[i].used && gt->slots[i].examples && is_common(&gt->slots[i], st->train_example, max_common);
    return common;
}

static void free_cases(eval_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(cases[i].file);
        free(cases[i].id);
    }
    free(cases);
}

static int fill_report(overlap_state *st, char **files, whet_overlap_report *out, whet_err *e)
{
    size_t hits = 0;
    for (size_t i = 0; i < st->n_cases; i++) {
        out->short_cases += st->cases[i].ngrams == 0;
        out->template_cases += !st->cases[i].overlapping && st->cases[i].common;
        hits += st->cases[i].overlapping > 0;
    }
    out->cases = calloc(hits ? hits : 1, sizeof *out->cases);
    if (!out->cases)
        return whet_fail(e, "out of memory");
    for (size_t i = 0; i < st->n_cases; i++) {
        eval_case *c = &st->cases[i];
        if (!c->overlapping)
            continue;
        whet_overlap_case *oc = &out->cases[out->n_cases++];
        *oc = (whet_overlap_case){.file = c->file, .line = c->line, .id = c->id, .ngrams = c->ngrams,
                                  .overlapping = c->overlapping, .common = c->common,
                                  .train_file = strdup(files[c->first_file]), .train_line = c->first_line};
        c->file = c->id = NULL; /* the report owns them now */
        if (!oc->train_file)
            return whet_fail(e, "out of memory");
    }
    return 0;
}

int whet_data_overlap_with(const char *const *train, size_t n_train, const char *const *evals, size_t n_evals,
                           const whet_overlap_options *opt, whet_overlap_report *out, whet_err *e)
{
    memset(out, 0, sizeof *out);
    size_t n = opt->n;
    if (n < 1 || n > MAX_N)
        return whet_fail(e, "n-grams of %zu words: expected 1 to %d", n, MAX_N);
    if (!(opt->max_common > 0 && opt->max_common <= 1))
        return whet_fail(e, "a common n-gram's share of the training examples is %g: expected more than 0 and at "
                            "most 1", opt->max_common);
    overlap_state st = {0};
    int rc = 0;
    for (size_t i = 0; i < n_evals && rc == 0; i++)
        rc = read_eval_file(&st, evals[i], n, e);
    char **files = NULL;
    size_t n_files = 0;
    if (rc == 0)
        rc = data_expand_paths(train, n_train, &files, &n_files, e);
    for (size_t i = 0; i < n_files && rc == 0; i++)
        rc = read_train_file(&st, files[i], i, n, e);
    if (rc == 0) {
        out->n = n;
        out->max_common = opt->max_common;
        out->eval_cases = st.n_cases;
        out->train_examples = st.train_example;
        out->common_ngrams = classify_ngrams(&st, opt->max_common);
        rc = fill_report(&st, files, out, e);
    }
    data_free_paths(files, n_files);
    free_cases(st.cases, st.n_cases);
    free(st.grams.slots);
    free(st.pairs.slots);
    if (rc != 0)
        whet_overlap_report_free(out);
    return rc;
}

int whet_data_overlap(const char *const *train, size_t n_train, const char *const *evals, size_t n_evals, size_t n,
                      whet_overlap_report *out, whet_err *e)
{
    whet_overlap_options opt = {.n = n, .max_common = WHET_OVERLAP_MAX_COMMON};
    return whet_data_overlap_with(train, n_train, evals, n_evals, &opt, out, e);
}

void whet_overlap_report_free(whet_overlap_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_cases; i++) {
        free(r->cases[i].file);
        free(r->cases[i].id);
        free(r->cases[i].train_file);
    }
    free(r->cases);
    memset(r, 0, sizeof *r);
}
