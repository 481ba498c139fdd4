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

/* One attention task: head h over query rows [r0, r0 + n) (part p) of the
 * segment starting at row `row` (b·T + t) of length len, which attends to
 * its keys [0, r0 + n). Tasks are numbered part by part, heads within a
 * part, and a segment's parts from its last (the most keys) to its first:
 * each segment's longest tasks go first and its shorter ones fill in behind
 * them. There are seg_part0[n_segs]·heads (whet_attn_task_count). */
typedef struct whet_attn_task {
    size_t p, h, row, len, r0, n;
} whet_attn_task;

static inline size_t whet_attn_task_count(const whet_acts *a, size_t heads)
{
    return (size_t)a->seg_part0[a->n_segs] * heads;
}

/* The last i < n with sorted[i] ≤ x (sorted ascending, sorted[0] ≤ x):
 * the segment whose first row, or first part, x is or follows. */
static inline size_t whet_last_at_most(const int32_t *sorted, size_t n, size_t x)
{
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = (lo + hi + 1) / 2;
        if ((size_t)sorted[mid] <= x)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

static inline whet_attn_task whet_attn_task_of(const whet_acts *a, size_t heads, size_t i)
{
    size_t part = i / heads, lo = whet_last_at_most(a->seg_part0, a->n_segs, part);
    whet_attn_task t = {.h = i % heads};
    size_t parts = (size_t)(a->seg_part0[lo + 1] - a->seg_part0[lo]);
    t.p = parts - 1 - (part - (size_t)a->seg_part0[lo]);
    t.row = (size_t)a->seg_row[lo], t.len = (size_t)a->seg_len[lo];
    t.r0 = t.p * a->attn_part_rows;
    t.n = t.len - t.r0 < a->attn_part_rows ? t.len - t.r0 : a->attn_part_rows;
    return t;
}

/* RoPE in place on x [rows, heads·HD] at the given positions, as a range
 * job over rows (whet_rope_rows); inverse rotates back (the backward pass,
 * on gradients). */
typedef struct whet_rope_job {
    const whet_kernels *k;
    float *x;
    size_t heads, head_dim;
    const int32_t *positions;
    const float *cos, *sin;
    whet_rope_pairing pairing;
    int inverse;
} whet_rope_job;
whet_rope_job whet_rope_job_for(const whet_model *m, float *x, size_t heads, const int32_t *positions, int inverse);
void whet_rope_rows(void *job, size_t t0, size_t t1);

/* y[rows, n] = norm(x) with weight w (and bias b, LayerNorm), storing each
 * row's mean and rstd where given, as a range job over rows (whet_norm_rows). */
typedef struct whet_norm_job {
    const whet_kernels *k;
    whet_norm_kind kind;
    float *y, *mean, *rstd;
    const float *x, *w, *b;
    size_t n;
    float eps;
} whet_norm_job;
void whet_norm_rows(void *job, size_t r0, size_t r1);

/* Gradient checkpointing: runs layer l's forward again from its kept x_in
 * into the one layer slot (nothing when the slot holds layer l already). The
 * same kernels on the same inputs: the same bits as the first forward. */
void whet_block_recompute(whet_model *m, whet_acts *a, size_t l);

/* What no training layout keeps per layer (model/forward.c: layout_layer):
 * layer l's ln1 (which = 1) or ln2 (2), to recompute into the one shared ln
 * buffer from the kept x_in or x_mid (a norm job over its B·T rows), and h
 * into its buffer from the kept gate and up — the same bits as the forward's. */
whet_norm_job whet_block_ln_job(whet_model *m, whet_acts *a, size_t l, int which);
void whet_block_recompute_h(whet_model *m, whet_acts *a, size_t l);

#endif
