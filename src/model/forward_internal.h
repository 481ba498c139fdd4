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

#endif
