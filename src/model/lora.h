/* LoRA adapters and the linear layer they attach to.
 *
 * Every projection of a block goes through whet_linear_forward/backward, so
 * the frozen base weight (fp32, or bf16 under --base-dtype bf16), its bias
 * and an optional low-rank adapter are handled in one place:
 *
 *   y = x·Wᵀ + b + scale · (dropout(x)·Aᵀ)·Bᵀ      A [r, in], B [out, r]
 *
 * as PEFT's LoraLayer computes it (lora_B(lora_A(dropout(x))) · scaling),
 * with scale = alpha / r, or alpha / √r with rsLoRA. A starts Kaiming-
 * uniform (PEFT: kaiming_uniform_(a=√5), i.e. U(−1/√in, 1/√in)), B at zero.
 *
 * Dropout masks are not stored: each element's keep/drop decision is a hash
 * of (seed, step, layer, target, row, column), so the backward pass
 * regenerates them and the run is bit-identical for any thread count.
 *
 * Shapes: L layers; for target t, in_t and out_t are the projection's input
 * and output widths (q: C→QD, k,v: C→KVD, o: QD→C, gate,up: C→F, down: F→C).
 * A[t] is [L, r, in_t] and B[t] is [L, out_t, r], stacked over layers like
 * the base weights; the adapter's gradients use the same layout. */
#ifndef WHET_LORA_H
#define WHET_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

typedef enum whet_linear_id {
    WHET_LIN_Q = 0, WHET_LIN_K, WHET_LIN_V, WHET_LIN_O, WHET_LIN_GATE, WHET_LIN_UP, WHET_LIN_DOWN,
    WHET_LIN_COUNT
} whet_linear_id;

/* "q_proj", "k_proj", ... (HF Llama names; GPT-2 maps c_attn→q,k,v, c_proj→o,
 * c_fc→up, mlp.c_proj→down when reading --lora-targets and PEFT configs). */
const char *whet_linear_name(whet_linear_id id);

typedef struct whet_lora_options {
    size_t rank;          /* r */
    float alpha;          /* lora_alpha */
    float dropout;        /* lora_dropout, applied to the adapter's input in training only */
    int rslora;           /* scale alpha/√r instead of alpha/r */
    unsigned targets;     /* bit (1u << whet_linear_id) per adapted projection */
    uint64_t seed;        /* initialisation and dropout */
} whet_lora_options;

typedef struct whet_lora {
    whet_lora_options opt;
    float scale;
    size_t layers;
    float *A[WHET_LIN_COUNT], *B[WHET_LIN_COUNT];   /* NULL for targets not adapted */
    float *dA[WHET_LIN_COUNT], *dB[WHET_LIN_COUNT]; /* gradients, same layout (NULL until training) */
    float *memory, *grad_memory;
    size_t floats;        /* trainable floats (A and B of every target) */
    uint64_t step;        /* the dropout stream's step; the trainer sets it */
    int training;         /* dropout on (training) or off (eval, generation) */
} whet_lora;

/* Parses "q,k,v,o,gate,up,down" (also q_proj..., "all", GPT-2 names) into a
 * target mask; names the bad item on error. */
int whet_lora_parse_targets(const char *list, unsigned *targets, whet_err *e);

/* A fresh adapter for m (A Kaiming-uniform from opt.seed, B zero), attached
 * to m (m->lora) and used by every later forward and backward. */
whet_lora *whet_lora_create(whet_model *m, const whet_lora_options *opt, whet_err *e);
int whet_lora_alloc_grads(whet_lora *lora, whet_err *e);
void whet_lora_zero_grads(whet_lora *lora);
/* Detaches from m and frees. */
void whet_lora_free(whet_model *m, whet_lora *lora);

/* W += scale · B·A for every adapted projection (merging for export); the
 * adapter is detached afterwards. */
int whet_lora_merge(whet_model *m, whet_lora *lora, whet_err *e);

/* Holds the frozen linear weights (q,k,v,o,gate,up,down and an untied or
 * frozen lm_head) as bf16 and releases their fp32 copies: forward and input
 * gradients then run on the bf16 GEMM kernels. Only for weights that do not
 * train. */
int whet_model_base_to_bf16(whet_model *m, whet_err *e);

/* Per-layer scratch the adapter needs in the activations (the rank-r
 * products x·Aᵀ per target), in floats, for B·T rows; forward.c lays it out. */
size_t whet_lora_acts_floats(const whet_model *m, size_t BT);

/* out[rows, N] = in[rows, K]·Wᵀ + b (+ the adapter) for projection id of
 * layer l. a and the row count tell where the adapter keeps its x·Aᵀ. */
void whet_linear_forward(whet_model *m, whet_acts *a, size_t l, whet_linear_id id, float *out, const float *in,
                         size_t rows);

/* The backward of whet_linear_forward: din[rows, K] = dout·W (+ the adapter's
 * path; += when accumulate_din), and when g has the weight's gradient view,
 * dW += doutᵀ·in, db += Σ_rows dout; the adapter's dA, dB accumulate when it
 * is attached and has gradients. din may be NULL (no input gradient needed). */
void whet_linear_backward(whet_model *m, whet_acts *a, size_t l, whet_linear_id id, float *din, int accumulate_din,
                          const float *dout, const float *in, size_t rows, whet_model_grads *g);

#endif
