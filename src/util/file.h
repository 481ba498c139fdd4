/* Files: read-only memory maps, and atomic writes (temporary file, fsync,
 * rename) so that nothing a user has is ever left half-written. */
#ifndef WHET_FILE_H
#define WHET_FILE_H

#include <stddef.h>
#include <stdio.h>

/* An error message for the user, naming the file and what was expected. */
typedef struct whet_err {
    char msg[1024];
} whet_err;

/* Formats into e (when e is not NULL) and returns -1, for `return whet_fail(...)`. */
int whet_fail(whet_err *e, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

typedef struct whet_map {
    const unsigned char *data;
    size_t size;
    char *path; /* owned copy, for messages */
} whet_map;

/* Maps the whole file read-only (an empty file maps to size 0, data NULL). */
int whet_map_file(whet_map *m, const char *path, whet_err *e);
void whet_unmap(whet_map *m);

/* Reads a whole (small) file into a NUL-terminated malloc'd buffer. */
int whet_read_file(const char *path, char **data, size_t *size, whet_err *e);

/* Atomic write: whet_atomic_open creates "<path>.tmp.<pid>" beside the target;
 * whet_atomic_commit flushes, fsyncs, renames over the target and fsyncs the
 * directory; whet_atomic_abort removes the temporary. On any error the old file,
 * if any, is untouched. */
typedef struct whet_atomic_file {
    FILE *f;
    char *path, *tmp_path;
} whet_atomic_file;

int whet_atomic_open(whet_atomic_file *a, const char *path, whet_err *e);
int whet_atomic_commit(whet_atomic_file *a, whet_err *e);
void whet_atomic_abort(whet_atomic_file *a);

/* Writes `size` bytes to `path` atomically. */
int whet_write_file_atomic(const char *path, const void *data, size_t size, whet_err *e);

#endif
