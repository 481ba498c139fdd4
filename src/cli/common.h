/* What several subcommands share: opening a model's tokenizer from whatever
 * the user points at, and reading input text from an option or a file. */
#ifndef WHET_CLI_COMMON_H
#define WHET_CLI_COMMON_H

#include <stddef.h>

#include "tok/tokenizer.h"

/* Whether `path` is a GGUF file (by its magic bytes, not its name). */
int cli_is_gguf(const char *path);

/* The tokenizer of a model: an HF model directory, a tokenizer.json file, a
 * directory holding only tokenizer.json (+ tokenizer_config.json), or a GGUF
 * file. Prints the error and returns NULL on failure. */
whet_tokenizer *cli_open_tokenizer(const char *path);

/* Input text: `text` when given, else the contents of `file` ("-" is standard
 * input). Exactly one of the two must be set; prints the error and returns -1. */
int cli_read_input(const char *command, const char *text, const char *file, char **out, size_t *len);

#endif
