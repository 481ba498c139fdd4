#include "cli/common.h"

#include "io/gguf.h"
#include "util/file.h"
#include "util/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_is_gguf(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    return got == 4 && memcmp(magic, "GGUF", 4) == 0;
}

whet_tokenizer *cli_open_tokenizer(const char *path)
{
    whet_err e = {{0}};
    whet_tokenizer *t = NULL;
    if (cli_is_gguf(path)) {
        whet_gguf *g = whet_gguf_open(path, &e);
        if (g) {
            t = whet_tokenizer_from_gguf(g, &e);
            whet_gguf_close(g);
        }
    } else {
        t = whet_tokenizer_load(path, &e);
    }
    if (!t)
        whet_error("%s", e.msg);
    return t;
}

static int read_stream(FILE *f, const char *name, char **out, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1)
            break;
        char *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    if (!buf) {
        whet_error("%s: out of memory reading it", name);
        return -1;
    }
    if (ferror(f)) {
        whet_error("%s: read error: %s", name, strerror(errno));
        free(buf);
        return -1;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

int cli_read_input(const char *command, const char *text, const char *file, char **out, size_t *len)
{
    if ((text != NULL) == (file != NULL)) {
        whet_error("%s: give exactly one of --text and --file", command);
        return -1;
    }
    if (text) {
        *len = strlen(text);
        *out = malloc(*len + 1);
        if (!*out) {
            whet_error("out of memory");
            return -1;
        }
        memcpy(*out, text, *len + 1);
        return 0;
    }
    if (strcmp(file, "-") == 0)
        return read_stream(stdin, "standard input", out, len);
    whet_err e = {{0}};
    if (whet_read_file(file, out, len, &e) != 0) {
        whet_error("%s", e.msg);
        return -1;
    }
    return 0;
}
