/* Training data: JSONL files (chat `messages`, `prompt`/`completion`,
 * `text`) and plain .txt, read through an offset index (never loaded
 * whole), each example rendered with the model's chat template, tokenized,
 * and given a loss mask; then batches of fixed shape for the trainer.
 *
 * The trainer's view:
 *   whet_dataset *ds;  whet_dataset_open(&ds, "data/train.jsonl", &opts, &e);
 *   whet_batcher *bt = whet_batcher_create(ds, &bopts, &e);
 *   whet_batch b;  whet_batcher_next(bt, &b, &e);   // B×T tokens, targets, positions, seg_start
 *   whet_batcher_state s = whet_batcher_save(bt);   // into a checkpoint
 *   whet_batcher_restore(bt, &s, &e);               // exact resume
 */
#ifndef WHET_DATASET_H
#define WHET_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "tok/chat_template.h"
#include "tok/tokenizer.h"
#include "util/file.h"

typedef enum whet_data_format {
    WHET_DATA_UNKNOWN = 0, WHET_DATA_TEXT, WHET_DATA_PROMPT_COMPLETION, WHET_DATA_CHAT
} whet_data_format;

typedef struct whet_data_options {
    const whet_tokenizer *tok;          /* not owned */
    const whet_chat_template *tmpl;     /* not owned; NULL: prompt+completion concatenated, chat refused */
    int train_on_prompt;                /* 1: every token carries loss (--train-on-prompt) */
    int add_eos;                        /* text / prompt-completion: append EOS (carrying loss) */
} whet_data_options;

/* One tokenized example: ids [n] and loss [n] (1: the model learns to
 * predict this token from the ones before it). */
typedef struct whet_example {
    int32_t *ids;
    uint8_t *loss;
    size_t n;
} whet_example;

typedef struct whet_dataset whet_dataset;

/* Opens one JSONL or .txt file and indexes its lines (offsets only). Errors
 * name file:line:column. */
int whet_dataset_open(whet_dataset **out, const char *path, const whet_data_options *opt, whet_err *e);
/* The examples whose content hash puts them in (split == 1) or out of
 * (split == 0) a validation share `fraction` (--valid-split): stable when
 * examples are added. Returns a view sharing the file's index. */
int whet_dataset_split(whet_dataset **out, whet_dataset *ds, double fraction, int split, whet_err *e);
size_t whet_dataset_count(const whet_dataset *ds);
whet_data_format whet_dataset_format(const whet_dataset *ds);
const char *whet_dataset_path(const whet_dataset *ds);
/* Reads, renders and tokenizes example i (0-based, in index order). The
 * example owns its arrays: free with whet_example_free. */
int whet_dataset_get(whet_dataset *ds, size_t i, whet_example *ex, whet_err *e);
void whet_example_free(whet_example *ex);
void whet_dataset_close(whet_dataset *ds);

/* ---- batches ---------------------------------------------------------------- */

typedef struct whet_batch_options {
    size_t batch_size, seq_len;  /* B, T */
    int shuffle;                 /* a seeded permutation of the examples each epoch */
    int pack;                    /* several examples per row, attention kept inside each */
    uint64_t seed;
} whet_batch_options;

/* B rows of T: tokens (pad: 0), targets (the next token where it carries
 * loss, else -1), positions (restart at 0 per example), seg_start (the row's
 * column where each token's example begins). Examples longer than T are
 * truncated (T tokens kept). Owned by the batcher, valid until the next call. */
typedef struct whet_batch {
    size_t B, T;
    int32_t *tokens, *targets, *positions, *seg_start;
    size_t loss_tokens;          /* targets ≥ 0 */
    size_t examples;             /* examples (or pieces of them) in this batch */
    size_t epoch;                /* the epoch the batch's first example came from */
} whet_batch;

/* Where the batcher stands: enough to continue bit-identically. */
typedef struct whet_batcher_state {
    uint64_t epoch, cursor;      /* position in the epoch's permutation */
    uint64_t seed;
} whet_batcher_state;

typedef struct whet_batcher whet_batcher;

whet_batcher *whet_batcher_create(whet_dataset *ds, const whet_batch_options *opt, whet_err *e);
/* The next batch; wraps into the next epoch (reshuffled) at the end. */
int whet_batcher_next(whet_batcher *bt, whet_batch *out, whet_err *e);
/* Batches per epoch (an estimate with packing: exact without). */
size_t whet_batcher_steps_per_epoch(whet_batcher *bt);
whet_batcher_state whet_batcher_save(const whet_batcher *bt);
int whet_batcher_restore(whet_batcher *bt, const whet_batcher_state *s, whet_err *e);
void whet_batcher_free(whet_batcher *bt);

#endif
