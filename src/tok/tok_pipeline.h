/* The tokenizer object, shared by the pipeline (tokenizer.c) and the loaders
 * (tokenizer_json.c, tokenizer_gguf.c). Not part of the API. */
#ifndef WHET_TOK_PIPELINE_H
#define WHET_TOK_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "tok/tok_internal.h"
#include "tok/tokenizer.h"
#include "util/file.h"

struct pcre2_real_code_8;

typedef struct tok_regex {
    struct pcre2_real_code_8 *code;
    int jit; /* JIT-compiled: pcre2_jit_match, else pcre2_match */
} tok_regex;

/* "Why" gets PCRE2's message and the offset in the pattern on failure. */
int tok_regex_compile(tok_regex *r, const char *pattern, size_t len, int literal, char *why, size_t why_size);
void tok_regex_free(tok_regex *r);

typedef enum tok_norm_kind { TOK_NORM_NFC, TOK_NORM_PREPEND, TOK_NORM_REPLACE } tok_norm_kind;

typedef struct tok_norm_step {
    tok_norm_kind kind;
    char *a, *b; /* Prepend: a; Replace: a → b */
    size_t a_len, b_len;
} tok_norm_step;

typedef enum tok_pre_kind { TOK_PRE_SPLIT, TOK_PRE_BYTE_LEVEL, TOK_PRE_METASPACE } tok_pre_kind;

typedef enum tok_split_behavior {
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_MERGED_WITH_PREVIOUS,
    TOK_SPLIT_MERGED_WITH_NEXT,
} tok_split_behavior;

typedef enum tok_prepend_scheme { TOK_PREPEND_NEVER, TOK_PREPEND_FIRST, TOK_PREPEND_ALWAYS } tok_prepend_scheme;

typedef struct tok_pre_step {
    tok_pre_kind kind;
    tok_regex regex; /* Split */
    tok_split_behavior behavior;
    int add_prefix_space, use_regex; /* ByteLevel */
    char *repl;                      /* Metaspace replacement (UTF-8) */
    size_t repl_len;
    tok_prepend_scheme prepend_scheme;
    int split;
} tok_pre_step;

typedef enum tok_dec_kind {
    TOK_DEC_BYTE_LEVEL,
    TOK_DEC_REPLACE,
    TOK_DEC_BYTE_FALLBACK,
    TOK_DEC_FUSE,
    TOK_DEC_STRIP,
    TOK_DEC_METASPACE,
} tok_dec_kind;

typedef struct tok_dec_step {
    tok_dec_kind kind;
    char *a, *b; /* Replace: a → b; Strip: a is the content; Metaspace: a is the replacement */
    size_t a_len, b_len;
    int start, stop; /* Strip */
    tok_prepend_scheme prepend_scheme;
} tok_dec_step;

typedef struct tok_added_token {
    char *content; /* normalized already when `normalized` (see tok_finish) */
    size_t len;
    int32_t id;
    int special, lstrip, rstrip, single_word, normalized;
} tok_added_token;

/* Indices of added tokens sorted by first byte, longest first; the tokens
 * starting with byte b are order[first[b] .. first[b + 1]). */
typedef struct tok_added_set {
    size_t *order;
    size_t n;
    size_t first[257];
} tok_added_set;

/* One element of TemplateProcessing's `single`: special ids, or $A. */
typedef struct tok_template_item {
    int is_sequence;
    int32_t *ids;
    size_t n_ids;
} tok_template_item;

struct whet_tokenizer {
    char *name; /* the file it came from, for messages */
    tok_bpe bpe;
    tok_norm_step *norm;
    size_t n_norm;
    tok_pre_step *pre;
    size_t n_pre;
    tok_dec_step *dec;
    size_t n_dec;
    tok_added_token *added;
    size_t n_added;
    tok_added_set raw_set, normalized_set;
    tok_template_item *template_items;
    size_t n_template;
    int32_t bos_id, eos_id;
    uint32_t byte_cp[256]; /* bytes_to_unicode */
    tok_regex gpt2_regex;  /* ByteLevel's built-in regex, when a step uses it */
    tok_regex word_char_regex; /* one word character, when a token is single_word */
    tok_buf token_bytes;   /* whet_tokenizer_token_bytes, by id */
    size_t *token_bytes_off;
    uint32_t *token_bytes_len;
};

extern const char tok_gpt2_regex[];

whet_tokenizer *tok_new(const char *name);
/* Compiles ByteLevel's built-in regex once, for the steps that use it. */
int tok_need_gpt2_regex(whet_tokenizer *t, whet_err *e);
/* After the loader set everything: match sets, token bytes. */
int tok_finish(whet_tokenizer *t, whet_err *e);
tok_norm_step *tok_add_norm(whet_tokenizer *t);
tok_pre_step *tok_add_pre(whet_tokenizer *t);
tok_dec_step *tok_add_dec(whet_tokenizer *t);
tok_added_token *tok_add_added(whet_tokenizer *t);
tok_template_item *tok_add_template_item(whet_tokenizer *t);
char *tok_strdup(const char *s, size_t len);
int tok_path_is_dir(const char *path);
int tok_path_exists(const char *path);
void tok_byte_level_unmap(tok_buf *out, const char *s, size_t len);
int tok_byte_token_value(const char *s, size_t len);

#endif
