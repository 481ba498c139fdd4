/* The eval cache: one small JSON file per key, DIR/ab/abcd....json, written
 * atomically. A key is an xxHash128 (hex) of everything that decides the
 * model's answer (run.c builds it), so an entry is never stale: a changed
 * model, prompt, decoding parameter or seed is a different key. An unreadable
 * or corrupt entry counts as a miss and is rewritten. */
#include "eval/eval_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int mkdir_p(const char *path, whet_err *e)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n >= sizeof buf)
        return whet_fail(e, "%s: path too long", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++)
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return whet_fail(e, "%s: cannot create the directory: %s", buf, strerror(errno));
            buf[i] = c;
        }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return whet_fail(e, "%s: not a directory", path);
    return 0;
}

int whet_eval_mkdir_p(const char *path, whet_err *e)
{
    return mkdir_p(path, e);
}

static void entry_path(char *out, size_t size, const char *dir, const char key[33], int file)
{
    if (file)
        snprintf(out, size, "%s/%.2s/%s.json", dir, key, key);
    else
        snprintf(out, size, "%s/%.2s", dir, key);
}

whet_json_doc *whet_eval_cache_get(const char *dir, const char key[33])
{
    if (!dir)
        return NULL;
    char path[4200];
    entry_path(path, sizeof path, dir, key, 1);
    whet_json_doc *doc = NULL;
    whet_err ignored;
    struct stat st;
    if (stat(path, &st) != 0 || whet_json_parse_file(&doc, path, NULL, &ignored) != 0)
        return NULL;
    const whet_json *root = whet_json_root(doc);
    const whet_json *k = whet_json_get(root, "key");
    if (!k || k->type != WHET_JSON_STRING || strcmp(k->u.string.chars, key) != 0) {
        whet_json_free(doc);
        return NULL;
    }
    return doc;
}

int whet_eval_cache_put(const char *dir, const char key[33], const char *json, size_t len, whet_err *e)
{
    if (!dir)
        return 0;
    char path[4200];
    entry_path(path, sizeof path, dir, key, 0);
    if (mkdir_p(path, e) != 0)
        return -1;
    entry_path(path, sizeof path, dir, key, 1);
    return whet_write_file_atomic(path, json, len, e);
}
