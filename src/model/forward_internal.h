/* What model/backward.c shares with model/forward.c (not for other callers). */
#ifndef WHET_MODEL_FORWARD_INTERNAL_H
#define WHET_MODEL_FORWARD_INTERNAL_H

#include "model/model.h"

/* Rows per thread for row-wise kernels over rows of n floats. */
size_t whet_grain_for(size_t n_per_row);

/* RoPE in place on x [rows, heads·HD] at the given positions; inverse
 * rotates back (the backward pass, on gradients). */
void whet_rope_apply(whet_model *m, float *x, size_t rows, size_t heads, const int32_t *positions, int inverse);

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
