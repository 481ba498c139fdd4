/* `whet data check` and `whet data stats` as library calls. */
#include "data/check.h"
#include "data/data_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- a set of content hashes remembering where each was first seen ---- */

typedef struct seen_entry {
    uint64_t hash;
    uint32_t file, line; /* file index + 1; 0 marks an empty slot */
} seen_entry;

typedef struct seen_set {
    seen_entry *slots;
    size_t mask, count;
} seen_set;

static int seen_grow(seen_set *s)
{
    size_t cap = s->slots ? (s->mask + 1) * 2 : 1024;
    seen_entry *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; s->slots && i <= s->mask; i++) {
        if (!s->slots[i].file)
            continue;
        size_t k = (size_t)s->slots[i].hash & (cap - 1);
        while (slots[k].file)
            k = (k + 1) & (cap - 1);
        slots[k] = s->slots[i];
    }
    free(s->slots);
    s->slots = slots;
    s->mask = cap - 1;
    return 0;
}

/* The entry for hash: the earlier one if there is one (*found = 1), else a
 * new one holding (file, line). NULL when memory runs out. */
static seen_entry *seen_add(seen_set *s, uint64_t hash, uint32_t file, uint32_t line, int *found)
{
    if ((!s->slots || (s->count + 1) * 2 > s->mask + 1) && seen_grow(s) != 0)
        return NULL;
    size_t k = (size_t)hash & s->mask;
    while (s->slots[k].file) {
        if (s->slots[k].hash == hash) {
            *found = 1;
            return &s->slots[k];
        }
        k = (k + 1) & s->mask;
    }
    s->slots[k] = (seen_entry){hash, file + 1, line};
    s->count++;
    *found = 0;
    return &s->slots[k];
}

/* ---- paths ---- */

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Files to read: the paths, with a directory standing for the train.jsonl,
 * valid.jsonl and test.jsonl in it. */
int data_expand_paths(const char *const *paths, size_t n, char ***out, size_t *n_out, whet_err *e)
{
    char **files = calloc(3 * n + 1, sizeof *files);
    size_t k = 0;
    if (!files)
        return whet_fail(e, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (!is_dir(paths[i])) {
            files[k++] = strdup(paths[i]);
            continue;
        }
        static const char *const names[] = {"train.jsonl", "valid.jsonl", "test.jsonl"};
        size_t before = k;
        for (size_t j = 0; j < 3; j++) {
            size_t len = strlen(paths[i]) + strlen(names[j]) + 2;
            char *p = malloc(len);
            if (!p)
                break;
            snprintf(p, len, "%s/%s", paths[i], names[j]);
            struct stat st;
            if (stat(p, &st) == 0 && S_ISREG(st.st_mode))
                files[k++] = p;
            else
                free(p);
        }
        if (k == before) {
            for (size_t j = 0; j < k; j++)
                free(files[j]);
            free(files);
            return whet_fail(e, "%s: a data directory must hold train.jsonl (and may hold valid.jsonl and "
                             "test.jsonl); found none of them", paths[i]);
        }
    }
    for (size_t j = 0; j < k; j++)
        if (!files[j]) {
            for (size_t m = 0; m < k; m++)
                free(files[m]);
            free(files);
            return whet_fail(e, "out of memory");
        }
    *out = files;
    *n_out = k;
    return 0;
}

void data_free_paths(char **files, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(files[i]);
    free(files);
}

/* ---- the report ---- */

typedef struct checker {
    whet_data_report *rep;
    size_t max_problems;
    int oom;
} checker;

static void add_problem(checker *c, const char *file, const data_problem *p)
{
    whet_data_report *r = c->rep;
    if (p->warning)
        r->warnings++;
    else
        r->errors++;
    if (r->n_problems >= c->max_problems)
        return;
    if ((r->n_problems & (r->n_problems - 1)) == 0) { /* 0 or a power of two: the array is full */
        size_t cap = r->n_problems ? r->n_problems * 2 : 1;
        whet_data_problem *bigger = realloc(r->problems, cap * sizeof *bigger);
        if (!bigger) {
            c->oom = 1;
            return;
        }
        r->problems = bigger;
    }
    char *msg = strdup(p->msg);
    if (!msg) {
        c->oom = 1;
        return;
    }
    r->problems[r->n_problems++] =
        (whet_data_problem){file, p->line, p->column ? p->column : 1, p->warning, p->cls, msg};
}

void whet_data_report_free(whet_data_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_problems; i++)
        free(r->problems[i].message);
    free(r->problems);
    data_free_paths(r->files, r->n_files);
    memset(r, 0, sizeof *r);
}

void whet_data_problem_format(const whet_data_problem *p, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s:%zu:%zu: %s%s: %s", p->file, p->line, p->column, p->warning ? "warning: " : "", p->cls,
             p->message);
}

/* ---- the checks ---- */

static void check_file(checker *c, const char *path, uint32_t file_index, const whet_data_check_options *opt,
                       seen_set *seen, char *const *files, whet_err *e, int *failed)
{
    data_file *f;
    if (data_file_index(&f, path, e) != 0) {
        *failed = 1;
        return;
    }
    if (f->n == 0) {
        data_problem p = {.cls = "empty-file", .line = 1, .column = 1};
        snprintf(p.msg, sizeof p.msg, "no examples (the file is empty or blank)");
        add_problem(c, path, &p);
        data_file_release(f);
        return;
    }
    /* the file's format: from its first line with a known key */
    data_problem ignored;
    data_file_detect(f, &ignored); /* the lines' own problems are reported below */
    int tokenize = opt->data.tok != NULL;
    int needs_template = f->format == WHET_DATA_CHAT;
    if (tokenize && needs_template && !opt->data.tmpl) {
        data_problem p = {.cls = "no-chat-template", .line = f->format_line, .column = 1};
        snprintf(p.msg, sizeof p.msg, "chat examples need a chat template and the model has none (give one with "
                                      "--chat-template NAME); examples were not tokenized");
        add_problem(c, path, &p);
        tokenize = 0;
    }
    for (size_t i = 0; i < f->n; i++) {
        c->rep->examples++;
        data_parsed d;
        data_problem p;
        if (data_parse(f, i, f->format, &d, &p) != 0) {
            add_problem(c, path, &p);
            continue;
        }
        int ok = 1;
        uint32_t line = f->lines[i].line;
        if (tokenize) {
            whet_example ex;
            if (data_tokenize(&opt->data, &d, &ex, NULL, NULL, &p) != 0) {
                p.line = line;
                add_problem(c, path, &p);
                ok = 0;
            } else {
                if (opt->seq_len && ex.n > opt->seq_len) {
                    size_t cut_trained = 0;
                    for (size_t k = opt->seq_len; k < ex.n; k++)
                        cut_trained += ex.loss[k];
                    data_problem w = {.cls = "too-long", .warning = 1, .line = line, .column = 1};
                    snprintf(w.msg, sizeof w.msg, "%zu tokens: --seq-len %zu cuts the last %zu (%zu of them trained)",
                             ex.n, opt->seq_len, ex.n - opt->seq_len, cut_trained);
                    add_problem(c, path, &w);
                }
                whet_example_free(&ex);
            }
        }
        uint64_t h = data_content_hash(&d);
        int found = 0;
        seen_entry *s = seen_add(seen, h, file_index, line, &found);
        if (!s)
            c->oom = 1;
        else if (found) {
            data_problem w = {.cls = "duplicate", .warning = 1, .line = line, .column = 1};
            if (s->file - 1 == file_index)
                snprintf(w.msg, sizeof w.msg, "the same content as line %u", (unsigned)s->line);
            else
                snprintf(w.msg, sizeof w.msg, "the same content as %.400s:%u", files[s->file - 1], (unsigned)s->line);
            add_problem(c, path, &w);
        }
        c->rep->examples_ok += ok;
        data_parsed_free(&d);
    }
    data_file_release(f);
}

int whet_data_check(const char *const *paths, size_t n_paths, const whet_data_check_options *opt,
                    whet_data_report *out, whet_err *e)
{
    memset(out, 0, sizeof *out);
    char **files;
    size_t n_files;
    if (data_expand_paths(paths, n_paths, &files, &n_files, e) != 0)
        return -1;
    out->files = files;
    out->n_files = n_files;
    checker c = {out, opt->max_problems ? opt->max_problems : 1000, 0};
    seen_set seen = {0};
    int failed = 0;
    for (size_t i = 0; i < n_files && !failed; i++)
        check_file(&c, files[i], (uint32_t)i, opt, &seen, files, e, &failed);
    free(seen.slots);
    if (failed || c.oom) {
        whet_data_report_free(out);
        return failed ? -1 : whet_fail(e, "out of memory checking the data");
    }
    return 0;
}

/* ---- stats ---- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int whet_data_stats_compute(whet_dataset *ds, size_t seq_len, size_t batch_size, int pack, whet_data_stats *out,
                            whet_err *e)
{
    memset(out, 0, sizeof *out);
    size_t n = whet_dataset_count(ds);
    if (n == 0)
        return whet_fail(e, "%s: no examples", whet_dataset_path(ds));
    if (seq_len == 0 || batch_size == 0)
        return whet_fail(e, "stats need a sequence length and a batch size of at least 1");
    uint32_t *lengths = malloc(n * sizeof *lengths);
    if (!lengths)
        return whet_fail(e, "%s: out of memory for %zu lengths", whet_dataset_path(ds), n);
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        whet_example ex;
        if (whet_dataset_get(ds, i, &ex, e) != 0) {
            free(lengths);
            return -1;
        }
        lengths[i] = ex.n > UINT32_MAX ? UINT32_MAX : (uint32_t)ex.n;
        size_t kept = ex.n < seq_len ? ex.n : seq_len;
        out->tokens += ex.n;
        out->kept_tokens += kept;
        for (size_t k = 1; k < kept; k++)
            out->loss_tokens += ex.loss[k];
        if (ex.n > seq_len) {
            out->truncated++;
            out->cut_tokens += ex.n - seq_len;
        }
        /* rows as the batcher fills them, in index order */
        if (kept > 0) {
            if (!pack || col == 0 || col + kept > seq_len) {
                out->rows++;
                col = 0;
            }
            col += kept;
        }
        whet_example_free(&ex);
    }
    out->examples = n;
    qsort(lengths, n, sizeof *lengths, cmp_u32);
    out->min = lengths[0];
    out->max = lengths[n - 1];
    out->median = n % 2 ? lengths[n / 2] : (lengths[n / 2 - 1] + (size_t)lengths[n / 2]) / 2;
    /* nearest rank: the smallest length at least 95 % of examples do not exceed */
    size_t rank = (95 * n + 99) / 100;
    out->p95 = lengths[(rank ? rank : 1) - 1];
    out->steps_per_epoch = (out->rows + batch_size - 1) / batch_size;
    free(lengths);
    return 0;
}
