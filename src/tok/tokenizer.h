/* Tokenizers: Hugging Face tokenizer.json BPE models (and the same models from
 * GGUF metadata), encoding id for id as the HF `tokenizers` library does.
 *
 * Supported (formats.md §4):
 *  - model "BPE": vocab, merges as "a b" strings or ["a", "b"] pairs (the list
 *    order is the rank), byte_fallback (<0xXX> tokens), unk_token + fuse_unk,
 *    ignore_merges. Dropout, continuing_subword_prefix and end_of_word_suffix
 *    must be absent, null, 0 or "" (they are refused otherwise). Other models
 *    (WordPiece, Unigram, WordLevel) are refused with a message naming BPE.
 *  - normalizer: null, NFC, Prepend, Replace (String pattern), Sequence.
 *  - pre_tokenizer: null, ByteLevel (add_prefix_space, use_regex with GPT-2's
 *    regex), Split (Regex or String pattern; Isolated, Removed,
 *    MergedWithPrevious, MergedWithNext; invert false), Metaspace
 *    (replacement, prepend_scheme first/always/never, split), Sequence.
 *    Regexes run in PCRE2 (UTF + UCP, JIT when the platform has it).
 *  - post_processor: null, ByteLevel, TemplateProcessing (single), Sequence.
 *  - decoder: null (tokens joined with spaces, as HF does), ByteLevel,
 *    Replace (String), ByteFallback, Fuse, Strip, Metaspace, Sequence.
 *  - added_tokens: split out before normalization (normalized:false) or
 *    after it (normalized:true), leftmost-longest, honouring lstrip, rstrip
 *    and single_word (word characters as Rust's regex \w: Alphabetic, marks,
 *    connector punctuation, decimal digits, ZWNJ, ZWJ). Special tokens
 *    written in the text are recognised even
 *    when add_special is 0, as HF does; add_special only controls the
 *    post-processor's BOS/EOS.
 *
 * NFC: canonical decomposition, reordering and composition with the tables of
 * src/tok/nfc_tables.h (Unicode WHET_NFC_UNICODE_VERSION, from
 * tests/ref/make_nfc_tables.py) plus Hangul by formula: complete for that
 * Unicode version. Characters assigned by later Unicode versions pass through
 * unchanged (HF's Rust crate may know newer compositions).
 *
 * Invalid UTF-8 in the text to encode: every maximal invalid subsequence
 * (the WHATWG / Rust String::from_utf8_lossy rule) is replaced with U+FFFD
 * before anything else, which is what HF sees when a caller converts bytes to a
 * Rust or Python string with errors="replace". Encoding never fails on text.
 *
 * Decoding: ids → the decoder chain → bytes; a byte sequence that is not valid
 * UTF-8 (ids that split a character) is replaced with U+FFFD as HF's
 * from_utf8_lossy does, so the result is always valid UTF-8. For streaming
 * use whet_tokenizer_token_bytes, which gives a token's raw bytes.
 *
 * A loaded tokenizer is immutable: encode and decode may run concurrently
 * from any number of threads.
 *
 * Speed: one thread of this project's 2-core x86-64 machine (shared with
 * other builds, load ~10), -O2, 226 kB of mixed English, Markdown and C:
 * GPT-2 7.2 MB/s, Llama 3 8.6 MB/s, Qwen3 4.6 MB/s (NFC, single-digit
 * pieces), Llama 2 4.9 MB/s. tests/test_tokenizer.c's bench_reports_speed
 * prints a figure per tokenizer on every run (whet_tokenizer_bench).
 */
#ifndef WHET_TOKENIZER_H
#define WHET_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "util/file.h"

typedef struct whet_tokenizer whet_tokenizer;

struct whet_gguf;

/* Loads tokenizer.json at `path` (a file, or a directory holding
 * tokenizer.json). A tokenizer_config.json beside it, when present, gives
 * bos_token / eos_token and, for tokenizer_class Llama*, add_bos_token /
 * add_eos_token, which then replace the post-processor's template as
 * transformers' LlamaTokenizerFast does. NULL (with e set to
 * "<file>: line L, column C (byte B): ...") on any error. */
whet_tokenizer *whet_tokenizer_load(const char *path, whet_err *e);

/* The same from tokenizer.json text in memory (no tokenizer_config.json);
 * `name` stands for the file in messages. */
whet_tokenizer *whet_tokenizer_parse(const char *json, size_t len, const char *name, whet_err *e);

/* Builds a tokenizer from GGUF metadata (tokenizer.ggml.*): model "gpt2"
 * (byte-level BPE; tokenizer.ggml.pre chooses the regex: default, gpt-2,
 * llama-bpe, qwen2, smollm) or "llama" (SentencePiece-style BPE by scores with
 * byte fallback). Errors name the GGUF file and the key. */
whet_tokenizer *whet_tokenizer_from_gguf(const struct whet_gguf *g, whet_err *e);

void whet_tokenizer_free(whet_tokenizer *t);

/* Encodes `len` bytes of `text` into a malloc'd array (*ids, *n_ids; free()
 * it; *ids may be NULL when *n_ids is 0). add_special adds the
 * post-processor's tokens (BOS/EOS). -1 only when memory runs out. */
int whet_tokenizer_encode(const whet_tokenizer *t, const char *text, size_t len, int add_special, int32_t **ids,
                          size_t *n_ids, whet_err *e);

/* Decodes ids into malloc'd, NUL-terminated UTF-8 (*text, *len). skip_special
 * leaves out special added tokens. -1 (naming the id) for an id outside
 * [0, vocab size). */
int whet_tokenizer_decode(const whet_tokenizer *t, const int32_t *ids, size_t n_ids, int skip_special, char **text,
                          size_t *len, whet_err *e);

/* The id of a token string as written in the vocabulary (e.g. "Ġthe",
 * "<|im_end|>"), or -1. */
int32_t whet_tokenizer_token_to_id(const whet_tokenizer *t, const char *token, size_t len);
/* The vocabulary string of an id (not NUL-terminated: *len bytes), or NULL
 * for an id no token has. */
const char *whet_tokenizer_id_to_token(const whet_tokenizer *t, int32_t id, size_t *len);
/* The bytes an id stands for in decoded text (byte-level and <0xXX> tokens
 * mapped back, ▁ as a space), or NULL for an id no token has. */
const char *whet_tokenizer_token_bytes(const whet_tokenizer *t, int32_t id, size_t *len);

/* One more than the largest id (model vocab and added tokens). */
size_t whet_tokenizer_vocab_size(const whet_tokenizer *t);
/* -1 when the tokenizer has none. */
int32_t whet_tokenizer_bos_id(const whet_tokenizer *t);
int32_t whet_tokenizer_eos_id(const whet_tokenizer *t);
/* Whether the id is a special added token (or a GGUF control token). */
int whet_tokenizer_is_special(const whet_tokenizer *t, int32_t id);

/* Encodes `len` bytes of `text` (add_special 0) repeatedly for at least
 * min_seconds (and at least once) and returns the speed in MB/s (10^6 bytes
 * per second), or -1 on error; *n_tokens, when not NULL, gets the token
 * count of one pass. For `whet bench`. */
double whet_tokenizer_bench(const whet_tokenizer *t, const char *text, size_t len, double min_seconds,
                            size_t *n_tokens, whet_err *e);

/* Tokens of `text` as a prompt: without the tokenizer's special tokens, then
 * with its BOS in front when the tokenizer adds one on its own (encoding ""
 * with special tokens shows whether it does) and `bos` is set. Templates that
 * write the BOS text themselves ask for no BOS; an EOS the tokenizer would
 * append is never added to a prompt. */
int whet_tokenizer_encode_prompt(const whet_tokenizer *t, const char *text, size_t len, int bos, int32_t **ids, size_t *n);

#endif
