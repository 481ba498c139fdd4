/* What model/backward.c shares with model/forward.c (not for other callers). */
#ifndef WHET_MODEL_FORWARD_INTERNAL_H
#define WHET_MODEL_FORWARD_INTERNAL_H

#include "model/model.h"

#include <math.h>

/* Rows per thread for row-wise kernels over rows of n floats. */
size_t whet_grain_for(size_t n_per_row);

/* Folds one vocabulary chunk's log-sum-exp partial (its maximum and
 * Σ exp(logit − maximum)) into a row's running pair. Both LM-head paths
 * (whet_model_nll, which folds each chunk as it is done, and the training
 * head, whose threads take chunks as they free up and fold them afterwards)
 * fold in chunk order through this, so a row's log-sum-exp has the same bits
 * on either and on any thread count. */
static inline void whet_lse_fold(float *run_max, float *run_sum, float part_max, float part_sum)
{
    float m = *run_max > part_max ? *run_max : part_max;
    double sum = 0;
    if (*run_sum != 0)
        sum += (double)*run_sum * exp((double)*run_max - m);
    if (part_sum != 0)
        sum += (double)part_sum * exp((double)part_max - m);
    *run_max = m;
    *run_sum = (float)sum;
}

/* RoPE in place on q [rows, heads·HD] and k [rows, kv_heads·HD] at the
 * given positions, in one pool job; inverse rotates back (the backward pass,
 * on gradients). */
void whet_rope_apply_qk(whet_model *m, float *q, float *k, size_t rows, const int32_t *positions, int inverse);

/* Gradient checkpointing: runs layer l's forward again from its kept x_in
 * into the one layer slot (nothing when the slot holds layer l already). The
 * same kernels on the same inputs: the same bits as the first forward. */
void whet_block_recompute(whet_model *m, whet_acts *a, size_t l);

/* What no training layout keeps per layer (model/forward.c: layout_layer):
 * layer l's ln1, ln2 or h, recomputed into its shared buffer — the one ln
 * buffer holds ln1 or ln2, whichever was recomputed last — from the kept
 * x_in, x_mid or gate and up, with the same bits as the forward's. */
void whet_block_recompute_ln1(whet_model *m, whet_acts *a, size_t l);
void whet_block_recompute_ln2(whet_model *m, whet_acts *a, size_t l);
void whet_block_recompute_h(whet_model *m, whet_acts *a, size_t l);

#endif
