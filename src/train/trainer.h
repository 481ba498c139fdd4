/* The trainer: one optimizer step over micro-batches, validation, and the
 * training loop with checkpoints, metrics and exact resume.
 *
 * Two levels, so that tests and other commands can drive either:
 *
 *   whet_trainer_create(&t, model, &opts, &e);      // LoRA or full, grads, acts, AdamW
 *   whet_trainer_step(t, batches, grad_accum, &stats, &e);  // forward, backward, clip, AdamW
 *   whet_trainer_eval_batch(t, &batch, &acc, &e);   // validation loss and accuracy
 *
 *   whet_train_run(&run, &result, &e);              // the whole loop (whet train)
 *
 * One step, for micro-batches b_1..b_k (grad_accum = k, each B×T):
 *   N = Σ_i loss_tokens(b_i)                  the loss is the mean over the whole step's
 *   for each b_i: forward, NLL, backward with loss_scale 1/N   (gradients accumulate)
 *   norm = ‖g‖₂ (deterministic, train/optim.h); a NaN/inf loss or norm skips the update
 *   AdamW at lr = schedule(step) with g · min(1, clip / (norm + 1e-6))
 * LoRA dropout masks are a hash of (seed, step·k + i, ...), so a resumed run
 * draws the same ones.
 *
 * Trainable tensors (whet_param_tensor, one AdamW group each) are named as
 * the parameter views are ("wq" [L', QD, C] for the trained layers L' of a
 * full fine-tune, "lora_A.q_proj" [L, r, C] ...); weight decay applies to
 * matrices and embeddings, never to norms and biases. */
#ifndef WHET_TRAIN_TRAINER_H
#define WHET_TRAIN_TRAINER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "data/dataset.h"
#include "model/lora.h"
#include "model/model.h"
#include "train/optim.h"
#include "train/schedule.h"

typedef struct whet_trainer_options {
    whet_train_selection sel;     /* sel.full: the model's weights train; else a LoRA adapter */
    whet_lora_options lora;       /* when !sel.full */
    int base_bf16;                /* LoRA: frozen base weights held as bf16 */
    int compute_bf16;             /* --compute bf16: the projections' and the head's GEMMs on bf16 (full: bf16
                                   * shadows of the fp32 masters, model/lora.h; LoRA: implies base_bf16) */
    int grad_checkpoint;          /* recompute each layer in the backward pass */
    size_t batch_size, seq_len;   /* the largest micro-batch */
    size_t grad_accum;            /* micro-batches per step (for the dropout stream) */
    whet_adamw_config adamw;
    whet_schedule schedule;
} whet_trainer_options;

typedef struct whet_step_stats {
    double loss;             /* mean NLL over the step's loss tokens */
    double accuracy;         /* share of loss tokens whose target has the largest logit */
    size_t loss_tokens;
    size_t tokens;           /* positions computed: Σ B·T over the micro-batches */
    double grad_norm;        /* before clipping */
    double lr;
    int skipped;             /* non-finite loss or gradient norm: no update made */
} whet_step_stats;

typedef struct whet_trainer {
    whet_model *m;
    whet_trainer_options opt;
    whet_lora *lora;             /* LoRA: the adapter (owned) */
    whet_model_grads *grads;     /* full: the base gradients */
    whet_acts *acts;
    whet_param_tensor *tensors;  /* the trainable tensors, in optimizer order */
    size_t n_tensors;
    whet_optim *optim;
    uint64_t step;               /* optimizer steps taken, skipped ones included */
} whet_trainer;

/* Sets up training m: the adapter (attached to m) or base gradients, the
 * activations, the optimizer. m stays the caller's. */
int whet_trainer_create(whet_trainer **out, whet_model *m, const whet_trainer_options *o, whet_err *e);
/* Detaches and frees the adapter too. */
void whet_trainer_free(whet_trainer *t);

/* What a run will hold, before anything is allocated: for the plan whet
 * train prints and its memory check. Bytes, except trainable (floats). */
typedef struct whet_train_plan {
    size_t trainable;
    size_t weights, gradients, optimizer, activations; /* weights: with a bf16 base or the bf16 shadows */
    size_t tokens_per_micro_batch;
} whet_train_plan;

int whet_trainer_plan(const whet_model *m, const whet_trainer_options *o, whet_train_plan *p, whet_err *e);

/* Trainable floats (Σ over the tensors). */
size_t whet_trainer_trainable(const whet_trainer *t);

/* One optimizer step over n micro-batches (see above); t->step advances
 * even when the update is skipped. */
int whet_trainer_step(whet_trainer *t, const whet_batch *micro, size_t n, whet_step_stats *s, whet_err *e);

/* Validation totals: Σ NLL, loss tokens, correct argmax predictions. */
typedef struct whet_eval_acc {
    double nll;
    size_t tokens, correct;
} whet_eval_acc;

/* Adds one batch's totals (no dropout, no gradients). */
int whet_trainer_eval_batch(whet_trainer *t, const whet_batch *b, whet_eval_acc *acc, whet_err *e);

/* ---- checkpoints ------------------------------------------------------------ */

/* The loop's state beside the weights: enough to continue bit-identically. */
typedef struct whet_run_state {
    uint64_t step;                  /* optimizer steps done */
    uint64_t adam_t;                /* AdamW updates made (skipped steps make none) */
    whet_batcher_state batcher;
    double best_valid_loss;         /* +inf until a validation */
    uint64_t evals_since_best;      /* validations without a better loss (--early-stop) */
    uint64_t nonfinite_in_row;
    uint64_t tokens_seen;           /* loss tokens trained on */
    double elapsed_s;               /* training time before this session */
} whet_run_state;

/* Writes RUN/checkpoint-STEP (train/checkpoint.h): weights.safetensors (the
 * trainable tensors), optimizer.safetensors ("<name>.exp_avg",
 * "<name>.exp_avg_sq"), state.json, and for LoRA the PEFT adapter files; then
 * keeps the last `keep`. */
int whet_trainer_save(whet_trainer *t, const whet_run_state *st, const char *run_dir, size_t keep, char *saved_dir,
                      size_t saved_size, whet_err *e);
/* Verifies and reads a checkpoint directory back into t and *st. */
int whet_trainer_load(whet_trainer *t, const char *ckpt_dir, whet_run_state *st, whet_err *e);

/* ---- the loop --------------------------------------------------------------- */

typedef struct whet_valid_stats {
    double loss, accuracy, perplexity;
    size_t tokens;
} whet_valid_stats;

typedef struct whet_progress {
    uint64_t step, total_steps;
    const whet_step_stats *stats;
    double tokens_per_s;     /* input tokens per second over this session */
    double elapsed_s;        /* this session */
    double eta_s;
} whet_progress;

struct whet_metrics; /* train/metrics.h: hooks may add records (whet_metrics_line) */

/* What the caller (whet train) sees and may add. Every hook may be NULL. */
typedef struct whet_train_hooks {
    void *ctx;
    void (*on_step)(void *ctx, const whet_progress *p);
    void (*on_valid)(void *ctx, uint64_t step, const whet_valid_stats *v);
    void (*on_checkpoint_saved)(void *ctx, uint64_t step, const char *dir);
    /* The evaluation hook point (whet train --eval SPEC --gate): called after
     * each checkpoint is written, after that step's validation, with the
     * model as trained so far (adapter attached, dropout off). Returning
     * > 0 stops the run (result WHET_TRAIN_STOPPED_BY_HOOK; the checkpoint
     * stays), < 0 is an error (e set). */
    int (*after_checkpoint)(void *ctx, whet_model *m, uint64_t step, const char *checkpoint_dir,
                            const whet_valid_stats *last_valid, struct whet_metrics *metrics, whet_err *e);
    /* Called once before the first step of this session: after the step-0
     * validation of a new run, or after a resumed run's checkpoint is
     * loaded (step is then the checkpoint's). The eval baseline goes here.
     * Nonzero is an error (e set). */
    int (*on_start)(void *ctx, whet_model *m, uint64_t step, struct whet_metrics *metrics, whet_err *e);
} whet_train_hooks;

typedef struct whet_train_run {
    whet_trainer *trainer;
    whet_batcher *train;            /* batches for training (its state goes into checkpoints) */
    whet_dataset *valid;            /* NULL: no validation */
    size_t grad_accum;
    uint64_t total_steps;
    size_t eval_every, save_every, keep_checkpoints, early_stop;
    size_t max_nonfinite;           /* consecutive skipped steps before stopping (5) */
    const char *out_dir;            /* metrics.jsonl and checkpoint-STEP/ go here */
    const char *resume_from;        /* a checkpoint directory, or NULL */
    volatile sig_atomic_t *stop;    /* set from a signal handler: save and stop at the step boundary */
    whet_train_hooks hooks;
    /* a checkpoint kept beyond the last keep_checkpoints (the gate's best
     * so far), read at every rotation; NULL or UINT64_MAX: none */
    const uint64_t *also_keep;
} whet_train_run;

typedef enum whet_train_outcome {
    WHET_TRAIN_COMPLETED = 0,
    WHET_TRAIN_INTERRUPTED,         /* *stop was set: checkpoint saved */
    WHET_TRAIN_EARLY_STOPPED,       /* --early-stop patience ran out */
    WHET_TRAIN_NONFINITE,           /* max_nonfinite skipped steps in a row: last good checkpoint kept */
    WHET_TRAIN_STOPPED_BY_HOOK,
} whet_train_outcome;

typedef struct whet_train_result {
    whet_train_outcome outcome;
    whet_run_state state;
    whet_step_stats last;           /* the last step's */
    whet_valid_stats first_valid, last_valid;
    int has_valid;
    char last_checkpoint[1200];     /* "" when none was written */
    double session_s;
} whet_train_result;

/* Runs (or, with resume_from, continues) the loop: validation before the
 * first step, steps, validation every eval_every, checkpoints every
 * save_every and at the end, metrics.jsonl records. Returns -1 only on
 * errors (I/O, model); the ways a run can stop are in result->outcome. */
int whet_train_run_loop(const whet_train_run *run, whet_train_result *result, whet_err *e);

/* Validation over the whole of ds in order (no shuffle, no packing). */
int whet_trainer_validate(whet_trainer *t, whet_dataset *ds, whet_valid_stats *v, whet_err *e);

#endif
