/* Datasets: an indexed file (data_file), or a view of some of its examples
 * (a --valid-split share), each example parsed, rendered and tokenized when
 * asked for. */
#include "data/data_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct whet_dataset {
    data_file *file;
    whet_data_options opt;
    uint64_t *subset; /* example numbers in the file, or NULL for all of them */
    size_t n;
};

static int make_dataset(whet_dataset **out, data_file *f, const whet_data_options *opt, whet_err *e)
{
    whet_dataset *ds = calloc(1, sizeof *ds);
    if (!ds)
        return whet_fail(e, "%s: out of memory", f->path);
    ds->file = f;
    ds->opt = *opt;
    ds->n = f->n;
    *out = ds;
    return 0;
}

int whet_dataset_open(whet_dataset **out, const char *path, const whet_data_options *opt, whet_err *e)
{
    *out = NULL;
    if (!opt || !opt->tok)
        return whet_fail(e, "%s: opening a dataset needs the model's tokenizer", path);
    data_file *f;
    if (data_file_open(&f, path, e) != 0)
        return -1;
    if (f->format == WHET_DATA_CHAT && !opt->tmpl) {
        whet_fail(e, "%s:%u:1: no-chat-template: chat examples need a chat template and the model has none (give "
                  "one with --chat-template NAME)", path, (unsigned)f->format_line);
        data_file_release(f);
        return -1;
    }
    if (make_dataset(out, f, opt, e) != 0) {
        data_file_release(f);
        return -1;
    }
    return 0;
}

int whet_dataset_split(whet_dataset **out, whet_dataset *ds, double fraction, int split, whet_err *e)
{
    *out = NULL;
    if (!(fraction >= 0 && fraction <= 1))
        return whet_fail(e, "--valid-split: expected a fraction from 0 to 1, got %g", fraction);
    /* an example is in the validation share when its content hash, as a
     * fraction of 2^64, is below `fraction`: the same for the same content
     * whatever else the file holds, and duplicates stay together */
    long double threshold = (long double)fraction * 18446744073709551616.0L;
    uint64_t *subset = malloc((ds->n ? ds->n : 1) * sizeof *subset);
    if (!subset)
        return whet_fail(e, "%s: out of memory splitting %zu examples", ds->file->path, ds->n);
    size_t n = 0;
    for (size_t i = 0; i < ds->n; i++) {
        uint64_t k = ds->subset ? ds->subset[i] : i;
        uint64_t h = data_example_hash(ds->file, (size_t)k);
        int in_valid = (long double)h < threshold;
        if (in_valid == (split != 0))
            subset[n++] = k;
    }
    whet_dataset *view = NULL;
    if (make_dataset(&view, ds->file, &ds->opt, e) != 0) {
        free(subset);
        return -1;
    }
    ds->file->refs++;
    view->subset = subset;
    view->n = n;
    *out = view;
    return 0;
}

size_t whet_dataset_count(const whet_dataset *ds)
{
    return ds->n;
}

whet_data_format whet_dataset_format(const whet_dataset *ds)
{
    return ds->file->format;
}

const char *whet_dataset_path(const whet_dataset *ds)
{
    return ds->file->path;
}

size_t whet_dataset_line(const whet_dataset *ds, size_t i)
{
    if (i >= ds->n)
        return 0;
    return ds->file->lines[ds->subset ? ds->subset[i] : i].line;
}

int data_dataset_get(whet_dataset *ds, size_t i, whet_example *ex, char **text, size_t *text_len, whet_err *e)
{
    memset(ex, 0, sizeof *ex);
    if (i >= ds->n)
        return whet_fail(e, "%s: example %zu asked for, the dataset has %zu", ds->file->path, i, ds->n);
    size_t k = ds->subset ? (size_t)ds->subset[i] : i;
    data_parsed d;
    data_problem p;
    if (data_parse(ds->file, k, ds->file->format, &d, &p) != 0)
        return data_problem_fail(e, ds->file->path, &p);
    int rc = data_tokenize(&ds->opt, &d, ex, text, text_len, &p);
    if (rc != 0) {
        p.line = ds->file->lines[k].line;
        data_problem_fail(e, ds->file->path, &p);
    }
    data_parsed_free(&d);
    return rc;
}

int whet_dataset_get(whet_dataset *ds, size_t i, whet_example *ex, whet_err *e)
{
    return data_dataset_get(ds, i, ex, NULL, NULL, e);
}

void whet_dataset_close(whet_dataset *ds)
{
    if (!ds)
        return;
    data_file_release(ds->file);
    free(ds->subset);
    free(ds);
}

/* ---- --data: a file or a directory --------------------------------------------- */

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int whet_data_open_splits(whet_data_splits *out, const char *data, double valid_split, const whet_data_options *opt,
                          whet_err *e)
{
    memset(out, 0, sizeof *out);
    struct stat st;
    if (stat(data, &st) != 0)
        return whet_fail(e, "%s: cannot open: %s", data, strerror(errno));
    if (!(valid_split >= 0 && valid_split < 1))
        return whet_fail(e, "--valid-split: expected a fraction from 0 to below 1, got %g", valid_split);
    whet_dataset *all = NULL;
    if (S_ISDIR(st.st_mode)) {
        char path[4096];
        snprintf(path, sizeof path, "%s/train.jsonl", data);
        if (!exists(path))
            return whet_fail(e, "%s: a --data directory must hold train.jsonl (and may hold valid.jsonl and "
                             "test.jsonl); found no train.jsonl", data);
        if (whet_dataset_open(&all, path, opt, e) != 0)
            return -1;
        snprintf(path, sizeof path, "%s/valid.jsonl", data);
        if (exists(path)) {
            if (valid_split > 0) {
                whet_dataset_close(all);
                return whet_fail(e, "%s: holds valid.jsonl and --valid-split %g was given: use one or the other",
                                 data, valid_split);
            }
            if (whet_dataset_open(&out->valid, path, opt, e) != 0)
                goto fail;
        }
        snprintf(path, sizeof path, "%s/test.jsonl", data);
        if (exists(path) && whet_dataset_open(&out->test, path, opt, e) != 0)
            goto fail;
    } else if (whet_dataset_open(&all, data, opt, e) != 0) {
        return -1;
    }
    if (valid_split > 0) {
        if (whet_dataset_split(&out->train, all, valid_split, 0, e) != 0 ||
            whet_dataset_split(&out->valid, all, valid_split, 1, e) != 0)
            goto fail;
        whet_dataset_close(all);
        all = NULL;
        if (whet_dataset_count(out->train) == 0 || whet_dataset_count(out->valid) == 0) {
            whet_fail(e, "%s: --valid-split %g leaves %zu training and %zu validation examples: both need some",
                      data, valid_split, whet_dataset_count(out->train), whet_dataset_count(out->valid));
            goto fail;
        }
    } else {
        out->train = all;
    }
    return 0;
fail:
    whet_dataset_close(all);
    whet_data_splits_close(out);
    return -1;
}

void whet_data_splits_close(whet_data_splits *s)
{
    whet_dataset_close(s->train);
    whet_dataset_close(s->valid);
    whet_dataset_close(s->test);
    memset(s, 0, sizeof *s);
}
