/* Shared between the src/data/ sources; not part of the API.
 *
 * A data file is mapped read-only and indexed once: one data_line per example
 * (a non-blank JSONL line, or a paragraph of a .txt file), 16 bytes each,
 * holding where its bytes are. Nothing else about the file stays in memory:
 * an example is parsed from its line when asked for, and freed after. */
#ifndef WHET_DATA_INTERNAL_H
#define WHET_DATA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "data/dataset.h"
#include "io/json.h"
#include "tok/chat_template.h"

typedef struct data_line {
    uint64_t offset; /* of the example's first byte in the file */
    uint32_t len;    /* bytes, without the line end */
    uint32_t line;   /* its (first) line number, from 1 */
} data_line;

/* One indexed file, shared (refcounted) by a dataset and its split views. */
typedef struct data_file {
    int refs;
    char *path;
    whet_map map;
    data_line *lines;
    size_t n;
    int is_text;             /* a .txt file: paragraphs of plain text */
    whet_data_format format; /* of the file: from the first line with a known key */
    uint32_t format_line;    /* that line (0 for .txt) */
    int borrowed;            /* map.data is the caller's memory, not a map */
} data_file;

/* Indexes `path` (maps it, one pass over its bytes) and detects its format.
 * An empty file, or a JSONL file in which no line names a known format, is an
 * error (the problem of its first line). */
int data_file_open(data_file **out, const char *path, whet_err *e);
/* Only the index (no format detection): for the checks, which report every
 * line's problems themselves. */
int data_file_index(data_file **out, const char *path, whet_err *e);
void data_file_release(data_file *f);
/* The same over bytes in memory (which must outlive f), for the fuzzer. */
int data_file_index_memory(data_file **out, const char *name, const void *data, size_t size, int is_text,
                           whet_err *e);

typedef struct data_problem data_problem;
/* Sets f->format from the first line whose keys name a format (.txt files
 * have theirs); -1 with the first line's problem when none does. */
int data_file_detect(data_file *f, data_problem *first);

/* Files to read for paths given by the user: a directory stands for the
 * train.jsonl, valid.jsonl and test.jsonl in it (at least one). Free with
 * data_free_paths. */
int data_expand_paths(const char *const *paths, size_t n, char ***out, size_t *n_out, whet_err *e);
void data_free_paths(char **files, size_t n);

/* A problem with one example: the error classes of whet-dataset(5). */
struct data_problem {
    const char *cls;     /* "invalid-json", "missing-key", ... */
    int warning;         /* 0: an error */
    uint32_t line, column; /* column in characters, from 1 */
    char msg[640];
};

/* "file:line:column: class: message" into e; returns -1. */
int data_problem_fail(whet_err *e, const char *path, const data_problem *p);

/* One example parsed from its line: the JSON tree and what the format needs
 * (pointers into the tree). */
typedef struct data_parsed {
    whet_data_format format;
    whet_json_doc *doc;
    whet_chat_message *messages; /* chat: n_messages of them */
    uint8_t *trained;            /* chat: per message, 1 unless "weight": 0 (or not assistant) */
    size_t n_messages;
    const char *prompt, *completion, *text; /* the other formats */
    size_t prompt_len, completion_len, text_len;
} data_parsed;

/* Parses example i of f. `format` is what the file holds (WHET_DATA_UNKNOWN:
 * whatever the line's keys say, for detection). On a problem returns -1 with
 * *p filled; never fails otherwise except when memory runs out (p->cls
 * "out-of-memory"). */
int data_parse(const data_file *f, size_t i, whet_data_format format, data_parsed *out, data_problem *p);
void data_parsed_free(data_parsed *d);

const char *data_format_name(whet_data_format f);

/* Offset of the first byte of s[0..len) that is not part of well-formed UTF-8,
 * or len when all of it is. */
size_t data_utf8_invalid_at(const char *s, size_t len);
/* The column (characters from 1) of byte `at` in s. */
uint32_t data_column_of(const char *s, size_t at);

/* Renders and tokenizes a parsed example. With spans (may be NULL), also the
 * rendered text (malloc'd, *text_len bytes) for display. */
int data_tokenize(const whet_data_options *opt, const data_parsed *d, whet_example *ex, char **text,
                  size_t *text_len, data_problem *p);

/* The content hash of example i (hygiene.c): XXH3-64 of its normalised
 * content (data_content_hash), or of its raw bytes when it does not parse. */
uint64_t data_example_hash(const data_file *f, size_t i);
/* XXH3-64 of what an example says, whitespace runs collapsed to one space and
 * trimmed, fields and messages (with their roles) kept apart; 0 when memory
 * runs out. */
uint64_t data_content_hash(const data_parsed *d);

/* whet_dataset_get, also giving the rendered text (for `whet data show`). */
int data_dataset_get(whet_dataset *ds, size_t i, whet_example *ex, char **text, size_t *text_len, whet_err *e);

#endif
