/* What several subcommands share: their common options (--help, --version,
 * the model options), opening a model with its tokenizer, adapter and chat
 * template, reading input text from an option or a file, and streaming text. */
#ifndef WHET_CLI_COMMON_H
#define WHET_CLI_COMMON_H

#include <getopt.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "io/json.h"
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

/* ---- options every command shares ------------------------------------------
 *
 * Each command's getopt_long table ends with CLI_COMMON_OPTIONS and may list
 * the model options below with their CLI_OPT_* values; its loop is
 *
 *     cli_parser p = {.command = "score", .usage = usage};
 *     while ((opt = cli_next_option(&p, argc, argv, "", options)) != -1)
 *         switch (opt) { ... its own options ... }
 *     if (p.exit >= 0)
 *         return p.exit;
 *
 * cli_next_option handles --help (usage on standard output, exit 0),
 * --version (exit 0), the model options when p.model is set, and bad
 * options and missing values: "whet: COMMAND: ..." on standard error, exit 1
 * (WHET_EXIT_ERROR, as a command returns for a bad value of its own options).
 * shortopts are the command's short options besides -h. */
enum {
    CLI_OPT_HELP = 'h',
    CLI_OPT_VERSION = 0x1000,
    CLI_OPT_MODEL, /* --model M */
    CLI_OPT_ADAPTER, /* --adapter DIR */
    CLI_OPT_CHAT_TEMPLATE, /* --chat-template NAME */
    CLI_OPT_THREADS, /* --threads N */
};
#define CLI_COMMON_OPTIONS                                                                                          \
    {"help", no_argument, NULL, CLI_OPT_HELP}, {"version", no_argument, NULL, CLI_OPT_VERSION}, { NULL, 0, NULL, 0 }

/* What a command needs of a model, from its options. */
typedef struct cli_model_options {
    const char *model;         /* --model: an HF model directory or a GGUF file */
    const char *adapter;       /* --adapter: a PEFT adapter directory, or NULL */
    const char *chat_template; /* --chat-template: a template name that wins over the model's, or NULL */
    size_t threads;            /* --threads; 0: WHET_THREADS, else every core */
} cli_model_options;

typedef struct cli_parser {
    const char *command;        /* "score", "data check": the prefix of messages */
    void (*usage)(FILE *out);   /* the command's --help text */
    cli_model_options *model;   /* where CLI_OPT_MODEL... go; NULL when the table has none */
    int exit;                   /* -1 while parsing; else the command returns it */
    int started;
} cli_parser;

/* The next option the command handles itself, or -1 at the end of the
 * options or when p->exit is set. optind and optarg as getopt_long leaves them. */
int cli_next_option(cli_parser *p, int argc, char **argv, const char *shortopts, const struct option *options);

/* "whet VERSION" on standard output (whet --version, whet CMD --version). */
void cli_print_version(void);

/* Ends the writer's document and prints it on standard output with a final
 * newline, then frees the writer. Prints the error and returns -1 on failure. */
int cli_print_json(whet_json_writer *w, const char *what);

/* ---- models --------------------------------------------------------------------- */

/* What cli_open_model loads. */
enum {
    CLI_LOAD_WEIGHTS = 1,   /* the compute context and the weights, then --adapter attached */
    CLI_LOAD_TOKENIZER = 2, /* the tokenizer */
    CLI_LOAD_TEMPLATE = 4,  /* the chat template: --chat-template, else the model's */
};

/* A model opened for running: the compute context (WHET_ISA's kernels,
 * --threads threads), the weights of an HF model directory or a GGUF file
 * with the --adapter attached, its tokenizer, and its chat template. */
typedef struct cli_model {
    whet_compute *compute;
    whet_model *model;
    whet_tokenizer *tok;
    struct whet_lora *lora; /* the --adapter attached to model, or NULL */
    whet_chat_template tmpl;
    int have_template;      /* tmpl holds the template; else template_err says why not */
    whet_err template_err;
} cli_model;

/* Loads what `what` asks for, in this order: weights, tokenizer, adapter,
 * template. A model without a usable template is not an error (have_template
 * is 0; the command reports template_err when it needs one) unless
 * --chat-template named one. Prints the error and returns -1 on failure
 * (nothing is left open). */
int cli_open_model(cli_model *m, const cli_model_options *o, int what);
/* Frees what cli_open_model opened; a zeroed m does nothing. */
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
