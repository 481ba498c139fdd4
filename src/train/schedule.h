/* Learning-rate schedules, as Hugging Face's get_*_schedule_with_warmup give
 * them (transformers/optimization.py), evaluated at the optimizer step about
 * to be taken (0 for the first):
 *
 *   warmup (step < W):  lr · step / max(1, W)        (the first step runs at 0)
 *   constant:           lr
 *   linear:             min + (lr − min) · max(0, (S − step) / max(1, S − W))
 *   cosine:             min + (lr − min) · max(0, ½(1 + cos(π · progress)))
 *                       progress = (step − W) / max(1, S − W)
 *
 * S is the total step count, min the floor (--min-lr; HF's
 * cosine_with_min_lr: factor · (1 − min/lr) + min/lr, the same thing).
 * Everything is double arithmetic, so every run gets the same values. */
#ifndef WHET_TRAIN_SCHEDULE_H
#define WHET_TRAIN_SCHEDULE_H

#include <stddef.h>

typedef enum whet_lr_schedule { WHET_LR_CONSTANT = 0, WHET_LR_LINEAR, WHET_LR_COSINE } whet_lr_schedule;

typedef struct whet_schedule {
    whet_lr_schedule kind;
    double lr, min_lr;
    size_t warmup_steps, total_steps;
} whet_schedule;

/* The learning rate of optimizer step `step` (0-based). */
double whet_schedule_lr(const whet_schedule *s, size_t step);

/* "constant" / "linear" / "cosine" and back; -1 for an unknown name. */
const char *whet_lr_schedule_name(whet_lr_schedule kind);
int whet_lr_schedule_from_name(const char *name);

#endif
