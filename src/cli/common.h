/* What several subcommands share: opening a model's tokenizer from whatever
 * the user points at, and reading input text from an option or a file. */
#ifndef WHET_CLI_COMMON_H
#define WHET_CLI_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "tok/chat_template.h"
#include "tok/tokenizer.h"

/* The tokenizer of a model: an HF model directory, a tokenizer.json file, a
 * directory holding only tokenizer.json (+ tokenizer_config.json), or a GGUF
 * file. Prints the error and returns NULL on failure. */
whet_tokenizer *cli_open_tokenizer(const char *path);

/* Input text: `text` when given, else the contents of `file` ("-" is standard
 * input). Exactly one of the two must be set; prints the error and returns -1. */
int cli_read_input(const char *command, const char *text, const char *file, char **out, size_t *len);

/* Option values. Each prints "whet: COMMAND: --OPTION: expected ..., got '...'"
 * and returns -1 when `arg` is not a whole number (or a finite number) in
 * [min, max]. */
int cli_parse_size(const char *command, const char *option, const char *arg, size_t min, size_t max, size_t *out);
int cli_parse_u64(const char *command, const char *option, const char *arg, uint64_t *out);
int cli_parse_double(const char *command, const char *option, const char *arg, double min, double max, double *out);

/* A model opened for running: the compute context (WHET_ISA's kernels,
 * `threads` threads, 0 for WHET_THREADS or every core), the weights of an HF
 * model directory or a GGUF file, and its tokenizer. */
typedef struct cli_model {
    whet_compute *compute;
    whet_model *model;
    whet_tokenizer *tok;
    struct whet_lora *lora; /* the --adapter attached to model, or NULL */
} cli_model;

/* Prints the error and returns -1 on failure (nothing is left open). */
int cli_open_model(cli_model *m, const char *path, int threads);
/* --adapter DIR: the PEFT adapter in dir (whet's or HF PEFT's) read and
 * attached to m->model, before any activations are made; NULL dir does
 * nothing. Prints the error and returns -1 on failure (m stays open;
 * cli_close_model frees the adapter too). */
int cli_attach_adapter(cli_model *m, const char *dir);
void cli_close_model(cli_model *m);

/* The chat template of a model: an HF directory's (whet_chat_template_load),
 * or a GGUF file's tokenizer.chat_template with the BOS/EOS texts of the
 * tokens its metadata names; override_name (--chat-template) wins. */
int cli_chat_template(const char *path, const char *override_name, whet_chat_template *out, whet_err *e);

/* The token text that ends an assistant turn in the template's family
 * (<|im_end|>, <|eot_id|>, <end_of_turn>; else the template's EOS text):
 * generation stops there (whet generate, whet eval). */
const char *cli_end_of_turn_text(const whet_chat_template *t);

/* Scores ids[0..n) as whet score does (Hugging Face's strided perplexity):
 * windows [begin, begin + ctx) for begin = 0, stride, 2·stride, ... until
 * one reaches the end, each scoring the tokens earlier windows did not, so
 * every token after the first is scored once with as much left context as
 * its window gives (stride < ctx). logprob[n] (NULL: not kept) gets
 * log p(ids[t] | its window before it) at t ≥ 1; *total_nll (nats), *scored
 * and *windows the totals. progress: a window counter on stderr. */
int cli_score_windows(whet_model *m, const int32_t *ids, size_t n, size_t ctx, size_t stride, float *logprob,
                      double *total_nll, size_t *scored, size_t *windows, int progress, whet_err *e);

/* Tokens of `text` as a prompt: without the tokenizer's special tokens, then
 * with its BOS in front when the tokenizer adds one on its own (encoding ""
 * with special tokens shows whether it does) and `bos` is set. Templates that
 * write the BOS text themselves ask for no BOS; an EOS the tokenizer would
 * append is never added to a prompt. */
int cli_encode_prompt(const whet_tokenizer *t, const char *text, size_t len, int bos, int32_t **ids, size_t *n);

/* Streaming text that arrives in pieces that may split a UTF-8 character:
 * cli_utf8_feed appends the bytes that form complete characters to out (at
 * most 3·(len + 3) bytes: each invalid byte becomes U+FFFD, as
 * whet_tokenizer_decode does) and keeps an unfinished character's bytes for
 * the next piece; cli_utf8_flush ends the stream (an unfinished character
 * becomes U+FFFD). Both return the bytes written. */
typedef struct cli_utf8_stream {
    unsigned char pending[4];
    size_t n;
} cli_utf8_stream;

size_t cli_utf8_feed(cli_utf8_stream *s, const char *in, size_t len, char *out);
size_t cli_utf8_flush(cli_utf8_stream *s, char *out);

/* Stop strings in streamed text: `held` is text not printed yet. Returns the
 * bytes of it that are safe to print now; *stop_at is set to the offset of
 * the first (leftmost) stop string found in it, or to -1. Bytes that might be
 * the beginning of a stop string are held back until the next call. */
size_t cli_stop_scan(const char *held, size_t len, char *const *stops, size_t n_stops, long *stop_at);

#endif
