/* JSON (RFC 8259): a strict parser into a read-only tree, and a small writer.
 *
 * The parser accepts exactly the RFC grammar (a leading UTF-8 byte order mark,
 * which the RFC lets parsers ignore, is skipped) and refuses: invalid UTF-8
 * anywhere, unescaped control characters, lone surrogates, numbers a double
 * cannot hold (1e999), duplicate keys in an object, nesting deeper than
 * max_depth and documents larger than max_size. Every error reads
 *   "<name>: line L, column C (byte B): expected ..., found ..."
 * where lines and columns count from 1 (columns in characters, not bytes) and
 * bytes from 0 (plus options.base_offset, for JSON embedded in a larger file).
 *
 * The tree lives in one arena per document: whet_json_free releases it all.
 * Objects keep their keys in document order and answer lookups by key in
 * O(log n). Strings are unescaped to UTF-8, NUL-terminated, with an explicit
 * length (a string may contain U+0000). Numbers keep their double value, their
 * literal text and, when the literal is an integer that fits, its exact int64.
 * The parser never recurses: an explicit stack, bounded by max_depth.
 */
#ifndef WHET_JSON_H
#define WHET_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "util/file.h"

#define WHET_JSON_DEFAULT_MAX_DEPTH 512
#define WHET_JSON_DEFAULT_MAX_SIZE ((size_t)512 << 20)

typedef enum whet_json_type {
    WHET_JSON_NULL,
    WHET_JSON_FALSE,
    WHET_JSON_TRUE,
    WHET_JSON_NUMBER,
    WHET_JSON_STRING,
    WHET_JSON_ARRAY,
    WHET_JSON_OBJECT,
} whet_json_type;

/* Whether a number's value is an integer that int64_t holds exactly. */
typedef enum whet_json_int_status {
    WHET_JSON_INT_EXACT,        /* integer holds the value: "42", also "1.0" and "2e3" */
    WHET_JSON_INT_NOT_INTEGER,  /* a fraction remains: 1.5, 25e-1 */
    WHET_JSON_INT_OUT_OF_RANGE, /* an integer outside [INT64_MIN, INT64_MAX] */
} whet_json_int_status;

typedef struct whet_json whet_json;
typedef struct whet_json_member whet_json_member;

struct whet_json {
    whet_json_type type;
    uint32_t line, column; /* where the value starts, from 1 */
    size_t offset;         /* its byte offset, including options.base_offset */
    union {
        struct {
            double value;
            int64_t integer; /* valid when int_status == WHET_JSON_INT_EXACT */
            whet_json_int_status int_status;
            const char *text; /* the literal as written, NUL-terminated */
            size_t text_len;
        } number;
        struct {
            const char *chars; /* UTF-8, NUL-terminated */
            size_t len;        /* in bytes, not counting the terminator */
        } string;
        struct {
            const whet_json *items;
            size_t count;
        } array;
        struct {
            const whet_json_member *members;        /* document order */
            size_t count;
            const whet_json_member *const *by_key; /* sorted by key bytes, for lookups */
        } object;
    } u;
};

struct whet_json_member {
    const char *key; /* unescaped, NUL-terminated */
    size_t key_len;
    uint32_t line, column; /* where the key starts */
    size_t offset;
    whet_json value;
};

typedef struct whet_json_options {
    size_t max_depth;   /* 0: WHET_JSON_DEFAULT_MAX_DEPTH */
    size_t max_size;    /* bytes; 0: WHET_JSON_DEFAULT_MAX_SIZE (never more than 4 GiB - 1) */
    size_t base_offset; /* added to every byte offset reported */
} whet_json_options;

typedef struct whet_json_doc whet_json_doc;

/* Parses text[0..size) (no terminator needed). name (a file name or a label)
 * starts every error message and is copied. options may be NULL. On success
 * *out owns the tree; the text may be freed at once. */
int whet_json_parse(whet_json_doc **out, const char *text, size_t size, const char *name,
                    const whet_json_options *options, whet_err *e);

/* Reads and parses a file; the path is the name in messages. */
int whet_json_parse_file(whet_json_doc **out, const char *path, const whet_json_options *options, whet_err *e);

void whet_json_free(whet_json_doc *doc);

const whet_json *whet_json_root(const whet_json_doc *doc);
const char *whet_json_doc_name(const whet_json_doc *doc);

/* "null", "false", "true", "number", "string", "array", "object" */
const char *whet_json_type_name(whet_json_type type);

/* The value of `key` in an object; NULL if v is not an object or lacks the key.
 * whet_json_get_len takes a key of explicit length (it may contain NUL). */
const whet_json *whet_json_get(const whet_json *v, const char *key);
const whet_json *whet_json_get_len(const whet_json *v, const char *key, size_t key_len);

/* Items of an array, members of an object, 0 for anything else. */
size_t whet_json_count(const whet_json *v);
/* Item i of an array; NULL out of range or if v is not an array. */
const whet_json *whet_json_at(const whet_json *v, size_t i);

/* The string's characters, or NULL if v is not a string. */
const char *whet_json_string(const whet_json *v);

/* 0 and the exact value if v is an integer in [min, max]; otherwise -1 and,
 * with e, "<name>: line L, column C (byte B): expected an integer in [min, max], found ...". */
int whet_json_int64(const whet_json_doc *doc, const whet_json *v, int64_t min, int64_t max, int64_t *out,
                    whet_err *e);

/* Formats "<name>: line L, column C (byte B): expected <what>, found <v described>"
 * into e, pointing at v, and returns -1: for callers checking a document's
 * shape (config.json, a safetensors header). */
int whet_json_fail_at(whet_err *e, const whet_json_doc *doc, const whet_json *v, const char *expected_fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* "...: expected key \"<key>\" in this object, found none", pointing at the object. */
int whet_json_fail_missing(whet_err *e, const whet_json_doc *doc, const whet_json *object, const char *key);

/* ---- writer -----------------------------------------------------------------
 * Builds a document in memory, inserting commas, colons and (with indent > 0)
 * newlines and indentation; indent 0 gives one line, as JSONL wants. Misuse
 * (a value where a key belongs, unbalanced ends, invalid UTF-8 in a string) or
 * running out of memory is remembered and reported by whet_json_writer_finish,
 * so a caller can write a whole document and check once. */
#define WHET_JSON_WRITER_MAX_DEPTH 64

typedef struct whet_json_writer {
    char *text;
    size_t len, cap;
    int indent;
    int depth;
    int expecting_value_after_key;
    unsigned char level_is_object[WHET_JSON_WRITER_MAX_DEPTH];
    unsigned char level_has_items[WHET_JSON_WRITER_MAX_DEPTH];
    int done;        /* a complete top-level value has been written */
    char error[160]; /* the first misuse, empty if none */
} whet_json_writer;

void whet_json_writer_init(whet_json_writer *w, int indent);
void whet_json_writer_free(whet_json_writer *w);

void whet_json_begin_object(whet_json_writer *w);
void whet_json_end_object(whet_json_writer *w);
void whet_json_begin_array(whet_json_writer *w);
void whet_json_end_array(whet_json_writer *w);
/* The next member's key (inside an object, before each value). */
void whet_json_key(whet_json_writer *w, const char *key);
void whet_json_key_len(whet_json_writer *w, const char *key, size_t len);
void whet_json_write_string(whet_json_writer *w, const char *s);
void whet_json_write_string_len(whet_json_writer *w, const char *s, size_t len);
/* The shortest decimal that reads back as the same double; NaN and ±inf, which
 * JSON cannot hold, are written as null. */
void whet_json_write_double(whet_json_writer *w, double v);
/* The shortest decimal that reads back as the same float (0.1f → 0.1). */
void whet_json_write_float(whet_json_writer *w, float v);
void whet_json_write_int(whet_json_writer *w, int64_t v);
void whet_json_write_bool(whet_json_writer *w, int v);
void whet_json_write_null(whet_json_writer *w);

/* Checks the document is complete and error-free; *text (NUL-terminated, owned
 * by the writer) and *len are the result, with a final newline when indent > 0.
 * "what" names the document in the error message. */
int whet_json_writer_finish(whet_json_writer *w, const char *what, const char **text, size_t *len, whet_err *e);

#endif
