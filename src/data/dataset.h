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
    const whet_chat_template *tmpl;     /* not owned; NULL: prompt+completion concatenated, chat
                                         * files refused by whet_dataset_open (no-chat-template) */
    int train_on_prompt;                /* 1: every token carries loss (--train-on-prompt) */
    int add_eos;                        /* text / template-less prompt-completion: append EOS (carrying
                                         * loss); `whet data` and `whet train` set it */
} whet_data_options;

/* One tokenized example: ids [n] and loss [n] (1: the model learns to
 * predict this token from the ones before it; loss[0] is never used).
 *
 * ids: the rendered text tokenized whole as generation does (see
 * src/data/example.c): a BOS in front when the tokenizer adds one on its own
 * and the chat template did not write it, then the text's tokens, then (text
 * and template-less prompt/completion with add_eos) the EOS token.
 * loss: chat: the tokens of each assistant message's span (its content and
 * end-of-turn marker, as chat_template.h defines them) unless the message has
 * "weight": 0; prompt/completion: the completion's tokens (rendered as a
 * user/assistant chat when the model has a template) and the EOS; text: all.
 * A token that straddles a span boundary carries loss. train_on_prompt sets
 * every loss to 1. */
typedef struct whet_example {
    int32_t *ids;
    uint8_t *loss;
    size_t n;
} whet_example;

typedef struct whet_dataset whet_dataset;

/* Opens one JSONL or .txt file and indexes its lines (offsets only: 16 bytes
 * per example, the file itself is mapped, never read into memory). The format
 * comes from the first line with a known key ("messages", "prompt" /
 * "completion", "text"); a .txt file holds text examples, one per paragraph
 * (lines up to a blank line). Errors name file:line:column. */
int whet_dataset_open(whet_dataset **out, const char *path, const whet_data_options *opt, whet_err *e);
/* The examples whose content hash puts them in (split == 1) or out of
 * (split == 0) a validation share `fraction` (--valid-split): stable when
 * examples are added. Returns a view sharing the file's index. */
int whet_dataset_split(whet_dataset **out, whet_dataset *ds, double fraction, int split, whet_err *e);
size_t whet_dataset_count(const whet_dataset *ds);
whet_data_format whet_dataset_format(const whet_dataset *ds);
const char *whet_dataset_path(const whet_dataset *ds);
/* Reads, renders and tokenizes example i (0-based, in index order). The
 * example owns its arrays: free with whet_example_free. Errors read
 * "file:line:column: class: message" (classes in whet-dataset(5)). */
int whet_dataset_get(whet_dataset *ds, size_t i, whet_example *ex, whet_err *e);
void whet_example_free(whet_example *ex);
/* The line of the file example i starts on (for messages). */
size_t whet_dataset_line(const whet_dataset *ds, size_t i);
/* Closing a dataset that split views share keeps the file open for them. */
void whet_dataset_close(whet_dataset *ds);

/* --data: a file, or a directory holding train.jsonl and optionally
 * valid.jsonl and test.jsonl. valid_split > 0 (--valid-split) carves the
 * validation set out of the training file with whet_dataset_split (refused
 * when the directory has a valid.jsonl). valid and test may be NULL. */
typedef struct whet_data_splits {
    whet_dataset *train, *valid, *test;
} whet_data_splits;

int whet_data_open_splits(whet_data_splits *out, const char *data, double valid_split, const whet_data_options *opt,
                          whet_err *e);
void whet_data_splits_close(whet_data_splits *s);

/* ---- batches ---------------------------------------------------------------- */

typedef struct whet_batch_options {
    size_t batch_size, seq_len;  /* B, T */
    int shuffle;                 /* a seeded permutation of the examples each epoch */
    int pack;                    /* several examples per row, attention kept inside each */
    uint64_t seed;
} whet_batch_options;

/* B rows of T, row-major ([b*T + t]). For an example placed at columns
 * [c, c+L) of row b (L = min(n, T) of its tokens):
 *   tokens[b*T + c+k]    = ids[k]
 *   targets[b*T + c+k]   = ids[k+1] when k+1 < L and loss[k+1], else -1
 *                          (the position's output is trained to predict the
 *                          next token of the same example, never across)
 *   positions[b*T + c+k] = k              (restart at 0 per example)
 *   seg_start[b*T + c+k] = c              (attention stays in [c, c+k])
 * Padding (the rest of a row): token 0, target -1, position 0, seg_start its
 * own column. Without packing each row holds one example at c = 0; with
 * packing examples are placed greedily in (permuted) order, a new row begun
 * when the next one does not fit in what is left of the current row.
 * Examples longer than T are truncated (their first T tokens kept) and
 * counted. Owned by the batcher, valid until the next call. */
typedef struct whet_batch {
    size_t B, T;
    int32_t *tokens, *targets, *positions, *seg_start;
    size_t loss_tokens;          /* targets ≥ 0 */
    size_t examples;             /* examples (or pieces of them) in this batch */
    size_t epoch;                /* the epoch the batch's first example came from */
    size_t truncated;            /* examples of this batch cut to T tokens */
} whet_batch;

/* Where the batcher stands: enough to continue bit-identically. */
typedef struct whet_batcher_state {
    uint64_t epoch, cursor;      /* position in the epoch's permutation */
    uint64_t seed;
} whet_batcher_state;

typedef struct whet_batcher whet_batcher;

whet_batcher *whet_batcher_create(whet_dataset *ds, const whet_batch_options *opt, whet_err *e);
/* The next batch; wraps into the next epoch (reshuffled) at the end, so a
 * batch may hold the end of one epoch and the start of the next. The
 * permutation of epoch k is a Fisher-Yates shuffle drawn from whet_rng seeded
 * with seed and k: the same on every machine. */
int whet_batcher_next(whet_batcher *bt, whet_batch *out, whet_err *e);
/* Batches per epoch (an estimate with packing: exact without). */
size_t whet_batcher_steps_per_epoch(whet_batcher *bt);
whet_batcher_state whet_batcher_save(const whet_batcher *bt);
int whet_batcher_restore(whet_batcher *bt, const whet_batcher_state *s, whet_err *e);
void whet_batcher_free(whet_batcher *bt);

#endif
