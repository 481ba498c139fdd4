/* Shared between the src/tok/ sources; not part of the API. */
#ifndef WHET_TOK_INTERNAL_H
#define WHET_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* ---- growable byte buffer ---- */
typedef struct tok_buf {
    char *data;
    size_t len, cap;
    int oom; /* set once an allocation failed; later appends do nothing */
} tok_buf;

void tok_buf_reserve(tok_buf *b, size_t extra);
void tok_buf_append(tok_buf *b, const void *data, size_t len);
void tok_buf_free(tok_buf *b);

/* ---- UTF-8 (unicode.c) ---- */

/* Decodes one well-formed character at s[0..len) (len >= 1); returns its
 * length, or 0 if the bytes there are not a well-formed character. */
size_t tok_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp);
/* Writes cp as UTF-8 into out (4 bytes room); returns its length. */
size_t tok_utf8_encode(uint32_t cp, char *out);
/* Whether s[0..len) is well-formed UTF-8. */
int tok_utf8_valid(const char *s, size_t len);
/* Appends s with every maximal invalid subsequence replaced by U+FFFD
 * (the rule of Rust's String::from_utf8_lossy and WHATWG's decoder). */
void tok_utf8_append_lossy(tok_buf *out, const char *s, size_t len);

/* Appends the NFC form of valid UTF-8 s[0..len). */
void tok_nfc_append(tok_buf *out, const char *s, size_t len);

/* GPT-2's bytes_to_unicode: the code point each byte stands for, and back
 * (-1 for a code point that stands for no byte). */
uint32_t tok_byte_to_cp(unsigned char b);
int tok_cp_to_byte(uint32_t cp);

/* Unicode White_Space (Rust's char::is_whitespace), for lstrip/rstrip. */
int tok_is_whitespace(uint32_t cp);

/* ---- the BPE model (bpe.c) ---- */

/* token string → id: open addressing over ids, keyed by xxHash of the bytes */
typedef struct tok_vocab {
    const char **text; /* by id; NULL for an id no token has */
    uint32_t *len;
    uint8_t *special; /* by id: a special added token */
    size_t n;         /* ids 0..n-1 */
    uint32_t *slots;  /* id + 1, 0 when empty */
    size_t mask;
    tok_buf strings; /* owns the token bytes (text[] points into it once frozen) */
    size_t *offsets; /* while building: where each id's bytes start in strings */
} tok_vocab;

/* (left id, right id) → (rank, merged id) */
typedef struct tok_merge_slot {
    uint64_t key; /* left << 32 | right; UINT64_MAX when empty */
    uint32_t rank, merged;
} tok_merge_slot;

typedef struct tok_merges {
    tok_merge_slot *slots;
    size_t mask, count;
} tok_merges;

typedef struct tok_bpe {
    tok_vocab vocab;
    tok_merges merges;
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id;            /* -1: none */
    int32_t byte_ids[256];     /* ids of <0xXX>, -1 when missing */
    /* No token holds a character other than ▁ followed by ▁ (true of
     * SentencePiece vocabularies), ▁ itself is a token and ignore_merges is
     * off: then no merge can cross the start of a ▁ run, and a long word
     * (SentencePiece-style tokenizers have no pre-tokenizer, so the whole text
     * is one word) can be cut there into words that merge alike, turning an
     * O(n log n) merge over the whole text into many small ones. */
    int cut_before_metaspace;
} tok_bpe;

/* Scratch space one encode call reuses for every word. */
typedef struct tok_bpe_scratch {
    struct tok_symbol *symbols;
    size_t symbols_cap;
    struct tok_merge_entry *heap;
    size_t heap_cap;
    int oom;
} tok_bpe_scratch;

int tok_vocab_init(tok_vocab *v, size_t n_ids);
/* Sets id's string (copied); -1 if the id already has one. */
int tok_vocab_set(tok_vocab *v, uint32_t id, const char *text, size_t len);
/* Builds the lookup table once every id is set; -1 on out of memory. */
int tok_vocab_freeze(tok_vocab *v);
int32_t tok_vocab_find(const tok_vocab *v, const char *text, size_t len);
void tok_vocab_free(tok_vocab *v);

int tok_merges_init(tok_merges *m, size_t expected);
/* Adds or replaces (a later duplicate wins, as in HF's HashMap collect). */
int tok_merges_put(tok_merges *m, uint32_t left, uint32_t right, uint32_t rank, uint32_t merged);
const tok_merge_slot *tok_merges_find(const tok_merges *m, uint32_t left, uint32_t right);
void tok_merges_free(tok_merges *m);

/* Appends the ids of one pre-tokenized word (valid UTF-8) to out. */
void tok_bpe_word(const tok_bpe *bpe, const char *word, size_t len, tok_bpe_scratch *scratch, int32_t **out,
                  size_t *n_out, size_t *cap_out);
void tok_bpe_scratch_free(tok_bpe_scratch *scratch);
/* Sets cut_before_metaspace once the vocabulary is complete. */
void tok_bpe_prepare(tok_bpe *bpe);

#endif
