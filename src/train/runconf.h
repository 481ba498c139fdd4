/* The run file: everything `whet train` was told, as `key = value` lines
 * whose keys are the long option names (whet-run(5)).
 *
 *   # a comment
 *   model = ./models/SmolLM-135M
 *   lr = 2e-4
 *   shuffle = false        # booleans: true/false, yes/no, on/off, 1/0
 *
 * One table (whet_run_options) defines every option once: its key, type,
 * range, default and help line. The CLI builds its getopt table and --help
 * from it, --config files are read through it, and the resolved
 * configuration is written back through it as DIR/run.conf, so that
 * `whet train --config DIR/run.conf` repeats a run exactly. Boolean options
 * marked negatable also take --no-KEY on the command line (and `no-KEY =
 * true` in a file). A LIST option (eval) is repeatable: each occurrence
 * adds a value, the run file writes one line per value, and an empty value
 * clears the list; the command line's occurrences replace the file's. */
#ifndef WHET_TRAIN_RUNCONF_H
#define WHET_TRAIN_RUNCONF_H

#include <stddef.h>
#include <stdint.h>

#include "util/file.h"

#define WHET_RUN_PATH_MAX 1024
#define WHET_RUN_LIST_MAX 8192 /* a LIST option's values, '\n'-separated */

typedef struct whet_run_config {
    /* what to train, on what, where */
    char model[WHET_RUN_PATH_MAX], init[WHET_RUN_PATH_MAX], tokenizer[WHET_RUN_PATH_MAX];
    char data[WHET_RUN_PATH_MAX], out[WHET_RUN_PATH_MAX], chat_template[WHET_RUN_PATH_MAX];
    /* method */
    int method;              /* 0 lora, 1 full */
    size_t lora_rank;
    double lora_alpha, lora_dropout;
    char lora_targets[256];
    int rslora;
    size_t train_layers;
    int freeze_embeddings;
    int base_dtype;          /* 0 f32, 1 bf16 */
    int compute;             /* 0 f32, 1 bf16: the GEMMs' operands */
    /* length and batches */
    size_t steps, epochs, batch_size, grad_accum, seq_len;
    /* optimizer and schedule */
    double lr;
    int lr_schedule;         /* whet_lr_schedule */
    size_t warmup_steps;
    double min_lr, weight_decay, adam_beta1, adam_beta2, adam_eps, grad_clip;
    uint64_t seed;
    /* data handling */
    int shuffle, pack, train_on_prompt;
    double valid_split;
    /* running */
    int grad_checkpoint;
    size_t eval_every, save_every, keep_checkpoints, early_stop, threads;
    /* eval suites (whet-evalspec(5)) run at the start and at every
     * checkpoint: the paths one per line ('\n'-separated); the gate picks
     * the output */
    char eval[WHET_RUN_LIST_MAX];
    int gate;
} whet_run_config;

typedef enum whet_run_kind {
    WHET_RUN_STRING = 0, WHET_RUN_SIZE, WHET_RUN_U64, WHET_RUN_DOUBLE, WHET_RUN_BOOL, WHET_RUN_CHOICE,
    WHET_RUN_LIST            /* repeatable: each value is added; "" empties it */
} whet_run_kind;

typedef struct whet_run_option {
    const char *key;         /* the long option name: "lora-rank" */
    whet_run_kind kind;
    size_t offset;           /* of the field in whet_run_config */
    size_t size;             /* STRING: the buffer's size */
    double min, max;         /* SIZE/U64/DOUBLE */
    const char *const *choices; /* CHOICE: NULL-terminated names, stored as their index */
    int negatable;           /* BOOL: --no-KEY too */
    const char *arg;         /* the argument's name in --help ("N", "PATH") */
    const char *def;         /* the default, as a value string */
    const char *help;
} whet_run_option;

/* The table, in --help order. */
const whet_run_option *whet_run_options(size_t *count);
/* The option called key (without "no-"), or NULL. */
const whet_run_option *whet_run_option_find(const char *key);

/* Every field at its default. */
void whet_run_config_defaults(whet_run_config *c);

/* Sets one option from its text form. origin names the source in messages
 * ("--lr", "run.conf:12"). A BOOL takes true/false/yes/no/on/off/1/0, or
 * NULL for "true" (a command-line flag); key "no-X" sets X's negation. */
int whet_run_config_set(whet_run_config *c, const char *key, const char *value, const char *origin, whet_err *e);

/* Reads a run file over c: `key = value` lines, # comments (at the start of
 * a line or after whitespace), blank lines. Unknown keys and bad values are
 * errors naming file:line. */
int whet_run_config_load(whet_run_config *c, const char *path, whet_err *e);
/* The same for run-file text already in memory (size bytes); path names it
 * in messages. */
int whet_run_config_parse(whet_run_config *c, const char *text, size_t size, const char *path, whet_err *e);

/* The value of option o in c, as the run file writes it. */
void whet_run_config_format(const whet_run_config *c, const whet_run_option *o, char *buf, size_t size);

/* The whole configuration as run-file text (malloc'd): a header comment,
 * then every option in table order. */
char *whet_run_config_text(const whet_run_config *c);

/* Writes whet_run_config_text atomically to path. */
int whet_run_config_write(const whet_run_config *c, const char *path, whet_err *e);

#endif
