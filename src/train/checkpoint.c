#include "train/checkpoint.h"

#include "io/json.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

int whet_remove_flat_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    struct dirent *ent;
    char path[2200];
    while ((ent = readdir(d)) != NULL) {
        if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
        unlink(path);
    }
    closedir(d);
    return rmdir(dir);
}

/* xxHash64 (seed 0) and size of a file, read through a map. */
static int hash_file(const char *path, uint64_t *bytes, uint64_t *hash, whet_err *e)
{
    whet_map m;
    if (whet_map_file(&m, path, e) != 0)
        return -1;
    *bytes = m.size;
    *hash = XXH64(m.data, m.size, 0);
    whet_unmap(&m);
    return 0;
}

int whet_ckpt_begin(whet_ckpt_writer *w, const char *run_dir, uint64_t step, whet_err *e)
{
    memset(w, 0, sizeof *w);
    if (strlen(run_dir) >= sizeof w->run_dir)
        return whet_fail(e, "%s: path too long", run_dir);
    snprintf(w->run_dir, sizeof w->run_dir, "%s", run_dir);
    snprintf(w->tmp_dir, sizeof w->tmp_dir, "%s/.checkpoint-%" PRIu64 ".tmp", run_dir, step);
    snprintf(w->final_dir, sizeof w->final_dir, "%s/checkpoint-%" PRIu64, run_dir, step);
    w->step = step;
    whet_remove_flat_dir(w->tmp_dir);
    if (mkdir(w->tmp_dir, 0777) != 0)
        return whet_fail(e, "%s: cannot create the checkpoint directory: %s", w->tmp_dir, strerror(errno));
    return 0;
}

static int add_entry(whet_ckpt_writer *w, const char *name, const char *path, whet_err *e)
{
    if (w->n_files == WHET_CKPT_MAX_FILES)
        return whet_fail(e, "%s: more than %d files in a checkpoint", w->tmp_dir, WHET_CKPT_MAX_FILES);
    whet_ckpt_file *f = &w->files[w->n_files];
    snprintf(f->name, sizeof f->name, "%s", name);
    if (hash_file(path, &f->bytes, &f->xxh64, e) != 0)
        return -1;
    w->n_files++;
    return 0;
}

int whet_ckpt_add_safetensors(whet_ckpt_writer *w, const char *name, const whet_st_entry *tensors, size_t count,
                              whet_err *e)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", w->tmp_dir, name);
    static const whet_st_kv meta[] = {{"format", "pt"}};
    if (whet_st_write(path, tensors, count, meta, 1, e) != 0)
        return -1;
    return add_entry(w, name, path, e);
}

int whet_ckpt_add_file(whet_ckpt_writer *w, const char *name, const void *data, size_t size, whet_err *e)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", w->tmp_dir, name);
    if (whet_write_file_atomic(path, data, size, e) != 0)
        return -1;
    return add_entry(w, name, path, e);
}

int whet_ckpt_add_existing(whet_ckpt_writer *w, const char *name, whet_err *e)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", w->tmp_dir, name);
    return add_entry(w, name, path, e);
}

void whet_ckpt_abort(whet_ckpt_writer *w)
{
    if (w->tmp_dir[0])
        whet_remove_flat_dir(w->tmp_dir);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* "checkpoint-N" with N all digits */
static int parse_ckpt_name(const char *name, uint64_t *step)
{
    static const char prefix[] = "checkpoint-";
    if (strncmp(name, prefix, sizeof prefix - 1) != 0)
        return 0;
    const char *d = name + sizeof prefix - 1;
    if (!*d || strlen(d) > 19)
        return 0;
    uint64_t v = 0;
    for (; *d; d++) {
        if (*d < '0' || *d > '9')
            return 0;
        v = v * 10 + (uint64_t)(*d - '0');
    }
    *step = v;
    return 1;
}

int whet_ckpt_list(const char *run_dir, uint64_t **steps, size_t *count, whet_err *e)
{
    *steps = NULL;
    *count = 0;
    DIR *d = opendir(run_dir);
    if (!d)
        return whet_fail(e, "%s: cannot read the directory: %s", run_dir, strerror(errno));
    size_t n = 0, cap = 0;
    uint64_t *list = NULL;
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        uint64_t step;
        if (!parse_ckpt_name(ent->d_name, &step))
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            uint64_t *bigger = realloc(list, cap * sizeof *list);
            if (!bigger) {
                free(list);
                closedir(d);
                return whet_fail(e, "%s: out of memory", run_dir);
            }
            list = bigger;
        }
        list[n++] = step;
    }
    closedir(d);
    qsort(list, n, sizeof *list, cmp_u64);
    *steps = list;
    *count = n;
    return 0;
}

static int write_manifest(whet_ckpt_writer *w, whet_err *e)
{
    whet_json_writer j;
    whet_json_writer_init(&j, 2);
    whet_json_begin_object(&j);
    whet_json_key(&j, "format");
    whet_json_write_string(&j, "whet-checkpoint");
    whet_json_key(&j, "version");
    whet_json_write_int(&j, 1);
    whet_json_key(&j, "step");
    whet_json_write_int(&j, (int64_t)w->step);
    whet_json_key(&j, "files");
    whet_json_begin_array(&j);
    for (size_t i = 0; i < w->n_files; i++) {
        char hex[17];
        snprintf(hex, sizeof hex, "%016" PRIx64, w->files[i].xxh64);
        whet_json_begin_object(&j);
        whet_json_key(&j, "name");
        whet_json_write_string(&j, w->files[i].name);
        whet_json_key(&j, "bytes");
        whet_json_write_int(&j, (int64_t)w->files[i].bytes);
        whet_json_key(&j, "xxh64");
        whet_json_write_string(&j, hex);
        whet_json_end_object(&j);
    }
    whet_json_end_array(&j);
    whet_json_end_object(&j);
    const char *text;
    size_t len;
    char path[1200];
    snprintf(path, sizeof path, "%s/manifest.json", w->tmp_dir);
    int rc = whet_json_writer_finish(&j, path, &text, &len, e);
    if (rc == 0)
        rc = whet_write_file_atomic(path, text, len, e);
    whet_json_writer_free(&j);
    return rc;
}

int whet_ckpt_commit(whet_ckpt_writer *w, size_t keep, whet_err *e)
{
    if (write_manifest(w, e) != 0)
        return -1;
    fsync_dir(w->tmp_dir);
    /* a checkpoint of the same step already there (a run that stopped right
     * after saving it) is replaced, never merged */
    char old[1200];
    snprintf(old, sizeof old, "%s/.checkpoint-%" PRIu64 ".old", w->run_dir, w->step);
    struct stat st;
    int had_old = stat(w->final_dir, &st) == 0;
    if (had_old) {
        whet_remove_flat_dir(old);
        if (rename(w->final_dir, old) != 0)
            return whet_fail(e, "%s: cannot move aside: %s", w->final_dir, strerror(errno));
    }
    if (rename(w->tmp_dir, w->final_dir) != 0) {
        int err = errno;
        if (had_old)
            rename(old, w->final_dir);
        return whet_fail(e, "%s: cannot rename into place: %s", w->final_dir, strerror(err));
    }
    fsync_dir(w->run_dir);
    if (had_old)
        whet_remove_flat_dir(old);
    w->tmp_dir[0] = 0;
    return whet_ckpt_rotate(w->run_dir, keep, UINT64_MAX, e);
}

int whet_ckpt_rotate(const char *run_dir, size_t keep, uint64_t also_keep, whet_err *e)
{
    if (keep == 0)
        return 0;
    uint64_t *steps;
    size_t n;
    if (whet_ckpt_list(run_dir, &steps, &n, e) != 0)
        return -1;
    for (size_t i = 0; i + keep < n; i++) {
        if (steps[i] == also_keep)
            continue;
        char path[1200];
        snprintf(path, sizeof path, "%s/checkpoint-%" PRIu64, run_dir, steps[i]);
        whet_remove_flat_dir(path);
    }
    free(steps);
    return 0;
}

int whet_ckpt_verify(const char *dir, uint64_t *step, whet_err *e)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    whet_json_doc *doc;
    if (whet_json_parse_file(&doc, path, NULL, e) != 0)
        return -1;
    const whet_json *root = whet_json_root(doc), *files = whet_json_get(root, "files");
    const whet_json *fmt = whet_json_get(root, "format"), *st = whet_json_get(root, "step");
    int64_t v;
    int rc = 0;
    if (!fmt || !whet_json_string(fmt) || strcmp(whet_json_string(fmt), "whet-checkpoint") != 0)
        rc = whet_json_fail_at(e, doc, fmt ? fmt : root, "\"format\": \"whet-checkpoint\"");
    else if (!st || whet_json_int64(doc, st, 0, INT64_MAX, &v, e) != 0)
        rc = st ? -1 : whet_json_fail_missing(e, doc, root, "step");
    else if (!files || files->type != WHET_JSON_ARRAY)
        rc = whet_json_fail_at(e, doc, files ? files : root, "a \"files\" array");
    if (rc == 0)
        *step = (uint64_t)v;
    for (size_t i = 0; rc == 0 && i < whet_json_count(files); i++) {
        const whet_json *f = whet_json_at(files, i);
        const char *name = whet_json_string(whet_json_get(f, "name"));
        const char *hex = whet_json_string(whet_json_get(f, "xxh64"));
        const whet_json *bytes = whet_json_get(f, "bytes");
        int64_t want_bytes;
        if (!name || !hex || !bytes || strchr(name, '/') || strlen(hex) != 16) {
            rc = whet_json_fail_at(e, doc, f, "{\"name\": file, \"bytes\": size, \"xxh64\": 16 hex digits}");
            break;
        }
        if (whet_json_int64(doc, bytes, 0, INT64_MAX, &want_bytes, e) != 0) {
            rc = -1;
            break;
        }
        char fpath[1300];
        snprintf(fpath, sizeof fpath, "%s/%s", dir, name);
        uint64_t got_bytes, got_hash;
        if (hash_file(fpath, &got_bytes, &got_hash, e) != 0) {
            rc = -1;
            break;
        }
        char got_hex[17];
        snprintf(got_hex, sizeof got_hex, "%016" PRIx64, got_hash);
        if (got_bytes != (uint64_t)want_bytes)
            rc = whet_fail(e, "%s: %" PRIu64 " bytes, but %s lists %" PRId64 ": the checkpoint is damaged", fpath,
                           got_bytes, path, want_bytes);
        else if (strcmp(got_hex, hex) != 0)
            rc = whet_fail(e, "%s: xxh64 %s, but %s lists %s: the checkpoint is damaged", fpath, got_hex, path, hex);
    }
    whet_json_free(doc);
    return rc;
}

int whet_ckpt_latest(const char *run_dir, char *path, size_t size, uint64_t *step, void (*warn)(const char *msg),
                     whet_err *e)
{
    uint64_t *steps;
    size_t n;
    if (whet_ckpt_list(run_dir, &steps, &n, e) != 0)
        return -1;
    int rc = -1;
    for (size_t i = n; i-- > 0;) {
        snprintf(path, size, "%s/checkpoint-%" PRIu64, run_dir, steps[i]);
        whet_err why = {{0}};
        uint64_t s;
        if (whet_ckpt_verify(path, &s, &why) == 0) {
            *step = s;
            rc = 0;
            break;
        }
        if (warn) {
            char msg[1400];
            snprintf(msg, sizeof msg, "skipping %s: %s", path, why.msg);
            warn(msg);
        }
    }
    free(steps);
    if (rc != 0)
        whet_fail(e, "%s: no checkpoint that verifies (checkpoint-STEP directories with a manifest.json)", run_dir);
    return rc;
}
