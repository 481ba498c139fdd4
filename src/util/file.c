#include "util/file.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int whet_fail(whet_err *e, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int whet_map_file(whet_map *m, const char *path, whet_err *e)
{
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return whet_fail(e, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return whet_fail(e, "%s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return whet_fail(e, "%s: not a regular file", path);
    }
    m->path = strdup(path);
    m->size = (size_t)st.st_size;
    if (m->size > 0) {
        void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int err = errno;
            close(fd);
            free(m->path);
            memset(m, 0, sizeof *m);
            return whet_fail(e, "%s: cannot map: %s", path, strerror(err));
        }
        m->data = p;
    }
    close(fd);
    return 0;
}

void whet_unmap(whet_map *m)
{
    if (m->data)
        munmap((void *)m->data, m->size);
    free(m->path);
    memset(m, 0, sizeof *m);
}

int whet_read_file(const char *path, char **data, size_t *size, whet_err *e)
{
    *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return whet_fail(e, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        len += fread(buf + len, 1, cap - len - 1, f);
        if (len < cap - 1)
            break;
        cap *= 2;
        char *bigger = realloc(buf, cap);
        if (!bigger) {
            free(buf);
            buf = NULL;
        }
        buf = bigger;
    }
    int failed = ferror(f);
    fclose(f);
    if (!buf)
        return whet_fail(e, "%s: out of memory reading it", path);
    if (failed) {
        free(buf);
        return whet_fail(e, "%s: read error", path);
    }
    buf[len] = 0;
    *data = buf;
    if (size)
        *size = len;
    return 0;
}

int whet_atomic_open(whet_atomic_file *a, const char *path, whet_err *e)
{
    memset(a, 0, sizeof *a);
    size_t len = strlen(path) + 32;
    a->path = strdup(path);
    a->tmp_path = malloc(len);
    if (!a->path || !a->tmp_path) {
        whet_atomic_abort(a);
        return whet_fail(e, "%s: out of memory", path);
    }
    snprintf(a->tmp_path, len, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(a->tmp_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        int err = errno;
        free(a->tmp_path);
        a->tmp_path = NULL;
        whet_atomic_abort(a);
        return whet_fail(e, "%s: cannot create a temporary file beside it: %s", path, strerror(err));
    }
    a->f = fdopen(fd, "wb");
    if (!a->f) {
        close(fd);
        whet_atomic_abort(a);
        return whet_fail(e, "%s: cannot open for writing", path);
    }
    return 0;
}

static void fsync_directory_of(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return;
    int fd = open(dirname(copy), O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

int whet_atomic_commit(whet_atomic_file *a, whet_err *e)
{
    int err = 0;
    if (fflush(a->f) != 0 || ferror(a->f))
        err = errno ? errno : EIO;
    else if (fsync(fileno(a->f)) != 0)
        err = errno;
    if (fclose(a->f) != 0 && !err)
        err = errno ? errno : EIO;
    a->f = NULL;
    if (!err && rename(a->tmp_path, a->path) != 0)
        err = errno;
    if (err) {
        whet_fail(e, "%s: write failed (%s); the previous file, if any, is untouched", a->path, strerror(err));
        whet_atomic_abort(a);
        return -1;
    }
    fsync_directory_of(a->path);
    free(a->path);
    free(a->tmp_path);
    memset(a, 0, sizeof *a);
    return 0;
}

void whet_atomic_abort(whet_atomic_file *a)
{
    if (a->f)
        fclose(a->f);
    if (a->tmp_path)
        unlink(a->tmp_path);
    free(a->path);
    free(a->tmp_path);
    memset(a, 0, sizeof *a);
}

int whet_write_file_atomic(const char *path, const void *data, size_t size, whet_err *e)
{
    whet_atomic_file a;
    if (whet_atomic_open(&a, path, e) != 0)
        return -1;
    if (size && fwrite(data, 1, size, a.f) != size) {
        int err = errno;
        whet_atomic_abort(&a);
        return whet_fail(e, "%s: write failed: %s; the previous file, if any, is untouched", path,
                         strerror(err ? err : EIO));
    }
    return whet_atomic_commit(&a, e);
}
