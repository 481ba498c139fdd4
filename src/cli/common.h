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
#include "tok/text_stream.h"
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


#endif
