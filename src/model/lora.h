/* LoRA adapters and the linear layer they attach to.
 *
 * Every projection of a block goes through whet_linear_forward/backward, so
 * the frozen base weight (fp32, or bf16 after whet_model_base_to_bf16), its
 * bias and an optional low-rank adapter are handled in one place:
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
 * the base weights; the adapter's gradients use the same layout.
 *
 * Activations (whet_acts.lora), laid out by forward.c: one slot of
 * whet_lora_acts_floats(m, a->B·a->T) floats per layer (slot l under
 * WHET_ACTS_KEEP and WHET_ACTS_CHECKPOINT, slot 0 under WHET_ACTS_REUSE). Inside
 * a slot, each adapted target in whet_linear_id order holds xs [a->B·a->T, r]
 * = scale·dropout(x)·Aᵀ (the scale folded in once, so the forward adds xs·Bᵀ
 * and the backward's dB is doutᵀ·xs), 16-float aligned. When a->lora is NULL
 * (acts made before the adapter was attached) the forward works in the
 * adapter's own scratch and the backward recomputes xs from its input. Acts
 * made with one adapter must not serve another of other targets or rank
 * (their slots are sized for the first): make new acts. */
#ifndef WHET_LORA_H
#define WHET_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

typedef enum whet_linear_id {
    WHET_LIN_Q = 0, WHET_LIN_K, WHET_LIN_V, WHET_LIN_O, WHET_LIN_GATE, WHET_LIN_UP, WHET_LIN_DOWN,
    WHET_LIN_COUNT
} whet_linear_id;

#define WHET_LORA_ALL_TARGETS ((1u << WHET_LIN_COUNT) - 1u)

/* "q_proj", "k_proj", ... (HF Llama names; GPT-2 maps c_attn→q,k,v, c_proj→o,
 * c_fc→up, mlp.c_proj→down when reading --lora-targets and PEFT configs). */
const char *whet_linear_name(whet_linear_id id);

/* Layer-independent input (K) and output (N) widths of projection id. */
void whet_linear_shape(const whet_model_config *c, whet_linear_id id, size_t *in, size_t *out);
/* 1 when the architecture has projection id (GPT-2 has no gate). */
int whet_linear_exists(const whet_model_config *c, whet_linear_id id);
/* Layer l's fp32 weight [N, K] of projection id, NULL when it is held as
 * bf16 (or the architecture has none). */
float *whet_linear_weight(whet_model *m, size_t l, whet_linear_id id);

typedef struct whet_lora_options {
    size_t rank;          /* r */
    float alpha;          /* lora_alpha */
    float dropout;        /* lora_dropout in [0, 1), applied to the adapter's input in training only */
    int rslora;           /* scale alpha/√r instead of alpha/r */
    unsigned targets;     /* bit (1u << whet_linear_id) per adapted projection; WHET_LORA_ALL_TARGETS
                           * means every projection the model has (GPT-2: no gate) */
    uint64_t seed;        /* initialisation and dropout */
} whet_lora_options;

typedef struct whet_lora {
    whet_lora_options opt;
    float scale;
    size_t layers;
    size_t in[WHET_LIN_COUNT], out[WHET_LIN_COUNT]; /* the projections' widths (all targets) */
    float *A[WHET_LIN_COUNT], *B[WHET_LIN_COUNT];   /* NULL for targets not adapted */
    float *dA[WHET_LIN_COUNT], *dB[WHET_LIN_COUNT]; /* gradients, same layout (NULL until training) */
    float *memory, *grad_memory;
    size_t floats;        /* trainable floats (A and B of every target) */
    uint64_t step;        /* the dropout stream's step; the trainer sets it */
    int training;         /* dropout on (training) or off (eval, generation) */
    /* Scratch for one block of work_rows rows: xs, d(xs) and a transposed
     * copy [work_rows, r] each, Bᵀ and dBᵀ [r, max out], and, with dropout,
     * dropout(x) [work_rows, max in]. Calls with more rows run in blocks of
     * work_rows (whet_lora_reserve avoids that). */
    float *work;
    size_t work_rows;
} whet_lora;

/* Parses "q,k,v,o,gate,up,down" (also q_proj..., "all", GPT-2 names) into a
 * target mask; names the bad item on error. */
int whet_lora_parse_targets(const char *list, unsigned *targets, whet_err *e);

/* A fresh adapter for m (A Kaiming-uniform from opt.seed, B zero), attached
 * to m (m->lora) and used by every later forward and backward. A's values
 * for (layer, target) depend only on (seed, layer, target). The caller owns
 * the adapter (whet_lora_free), the model never frees it. */
whet_lora *whet_lora_create(whet_model *m, const whet_lora_options *opt, whet_err *e);
/* Sizes the scratch for calls of up to `rows` rows (B·T of the training
 * batch): call once before training, never inside a step. Without it, calls
 * of more than 256 rows run in blocks of 256 (correct, and deterministic,
 * but the gradients' sums are then split per block: other bits, and slower
 * with dropout). */
int whet_lora_reserve(whet_lora *lora, size_t rows, whet_err *e);
/* Bytes of that scratch now. */
size_t whet_lora_work_bytes(const whet_lora *lora);
int whet_lora_alloc_grads(whet_lora *lora, whet_err *e);
void whet_lora_zero_grads(whet_lora *lora);
/* Detaches from m (when attached to it; m may be NULL) and frees. */
void whet_lora_free(whet_model *m, whet_lora *lora);

/* W += scale · B·A for every adapted projection (merging for export); the
 * adapter is detached afterwards (still the caller's to free). Needs the
 * fp32 base (refused after whet_model_base_to_bf16). */
int whet_lora_merge(whet_model *m, whet_lora *lora, whet_err *e);

/* Holds the frozen linear weights (q,k,v,o,gate,up,down and the LM head) as
 * bf16 and releases their fp32 copies (m->params_memory is rebuilt without
 * them and m->num_params drops; their views become NULL): forward and input
 * gradients then run on the bf16 GEMM kernels. A tied head keeps wte in fp32
 * for the embedding lookup (m->params.lm_head still points at it) and gets a
 * bf16 copy for the LM head GEMM. Only for weights that do not train: base
 * weight gradients (full fine-tuning) need the fp32 model. */
int whet_model_base_to_bf16(whet_model *m, whet_err *e);
/* --compute bf16 for weights that train: bf16 shadows of the linear weights
 * (q,k,v,o,gate,up,down) and of the LM head (tied: wte's values) next to
 * their fp32 masters, which stay in m->params and are what the optimizer
 * updates. Forward, input gradients and weight gradients (dW = dYᵀ·X, X
 * rounded to bf16 as the GEMM packs it: b_f32) then run on the bf16 GEMM
 * with fp32 accumulation; gradients stay fp32. After the masters change (an
 * optimizer step, a checkpoint loaded) the shadows must be refreshed: the
 * optimizer does it chunk by chunk (whet_param_tensor.shadow, train/optim.h),
 * or whet_model_bf16_refresh does all. Refused after whet_model_base_to_bf16
 * (and the reverse); a second call does nothing. */
int whet_model_compute_bf16(whet_model *m, whet_err *e);
/* Rounds every shadow from its fp32 master again (multithreaded; each value
 * on its own, so the same bits for any thread count). No-op without shadows. */
void whet_model_bf16_refresh(whet_model *m);
/* The shadow of the n fp32 values at master (inside one linear weight or the
 * head's master), or NULL when they have none. */
whet_bf16 *whet_model_bf16_shadow(const whet_model *m, const float *master, size_t n);
/* Bytes held as bf16: the frozen base or the shadows (0 without either). */
size_t whet_model_base_bf16_bytes(const whet_model *m);
/* Frees m->base_bf16 (whet_model_free calls it). */
void whet_model_base_bf16_free(whet_model *m);

/* Per-layer-slot scratch the adapter needs in the activations (the rank-r
 * products xs per target, layout above), in floats, for BT rows; 0 without
 * an adapter. */
size_t whet_lora_acts_floats(const whet_model *m, size_t BT);

/* out[rows, N] = in[rows, K]·Wᵀ + b (+ the adapter) for projection id of
 * layer l. a (may be NULL) and its keep_layers tell where the adapter keeps
 * its xs for the backward. */
void whet_linear_forward(whet_model *m, whet_acts *a, size_t l, whet_linear_id id, float *out, const float *in,
                         size_t rows);

/* The backward of whet_linear_forward: din[rows, K] = dout·W (+ the adapter's
 * path; += when accumulate_din), and when g has the weight's gradient view,
 * dW += doutᵀ·in, db += Σ_rows dout; the adapter's dA, dB accumulate when it
 * is attached and has gradients. din may be NULL (no input gradient needed).
 * in is the same input the forward had (the adapter regenerates its dropout
 * mask from lora->step, which must not change in between). */
void whet_linear_backward(whet_model *m, whet_acts *a, size_t l, whet_linear_id id, float *din, int accumulate_din,
                          const float *dout, const float *in, size_t rows, whet_model_grads *g);

/* Projections ids[0..n) of layer l that read the same input (q, k, v; gate,
 * up), in as few pool jobs as whet_linear_forward takes for one: out[i] as
 * whet_linear_forward gives it; din (+)= Σ_i (in order) what
 * whet_linear_backward gives for dout[i], din = on the first when
 * !accumulate_din, and each one's gradients. The bits of the calls one by
 * one. */
void whet_linear_forward_set(whet_model *m, whet_acts *a, size_t l, const whet_linear_id *ids, float *const *outs,
                             size_t n, const float *in, size_t rows);
void whet_linear_backward_set(whet_model *m, whet_acts *a, size_t l, const whet_linear_id *ids,
                              const float *const *douts, size_t n, float *din, int accumulate_din, const float *in,
                              size_t rows, whet_model_grads *g);

/* The adapter's share of whet_linear_forward/backward (model/lora.c; no-ops
 * when no adapter is attached or id is not a target): out += scale·
 * dropout(in)·Aᵀ·Bᵀ, and its backward adding into din (when not NULL) after
 * the base path wrote it. */
void whet_lora_forward(whet_model *m, whet_acts *a, size_t l, whet_linear_id id, float *out, const float *in,
                       size_t rows);
void whet_lora_backward(whet_model *m, whet_acts *a, size_t l, whet_linear_id id, float *din, const float *dout,
                        const float *in, size_t rows);

/* The same, for model/linear.c to run the adapter's wide products in the
 * base path's pool jobs (util/compute.h: whet_jobs), when all rows fit one
 * block of the adapter's scratch. Forward: computes xs now and fills *up,
 * out += xs·Bᵀ, for the caller to run on each slab of out right after the
 * base GEMM's, and returns 1; 0 (nothing done) when the rows do not fit one
 * block, -1 when id has no adapter. Backward, without dropout: the rank-r products of dout (dB,
 * d(xs)) now; then *p holds din += d(xs)·A (p->din.M > 0: for the caller to
 * run after the base GEMM on each slab of din) and dA's product, which
 * whet_lora_backward_add_jobs adds to the caller's job. Returns 1 when begun,
 * 0 when whet_lora_backward must run after the base path instead, -1 when id
 * has nothing to do. The bits are whet_lora_forward's and _backward's. */
/* The adapter's rank-r products as range jobs (model/lora.c): y[n, r] =
 * scale·x[n, K]·w[r, K]ᵀ by rows, and dw[r, cols] (+)= g[n, r]ᵀ·x[n, cols]
 * by columns (into scratch dw, added transposed to dw_transposed when set). */
typedef struct whet_lora_project {
    const whet_kernels *k;
    float *y;                /* [n, r] */
    const float *x, *w;      /* [n, K] rows ldx apart, [r, K] rows ldw apart */
    size_t ldx, ldw, r, K;
    float scale;
} whet_lora_project;
typedef struct whet_lora_weight_grad {
    const whet_kernels *k;
    float *dw, *dw_transposed; /* [r, cols]; [cols, r] or NULL */
    const float *g, *x;        /* [n, r], [n, cols] */
    size_t n, r, cols;
    int accumulate;
} whet_lora_weight_grad;
typedef struct whet_lora_pending {
    whet_gemm din;          /* din += d(xs)·A; M = 0: none */
    const whet_kernels *k;  /* dA [r, K] += d(xs)[n, r]ᵀ·x[n, K] (dA NULL: none) */
    float *dA;
    const float *dxa, *x;
    size_t n, r, K;
    whet_lora_weight_grad dB_job; /* the begin call's products of dout */
    whet_lora_project dxa_job;
} whet_lora_pending;
/* With pre (not NULL), the begin calls add their first rank-r products (the
 * forward's xs without dropout; the backward's dB and d(xs)) to that job and
 * keep what it reads in *xs_job or *p: the caller runs pre before the job
 * that uses them, so the products of a set's projections share one job. */
int whet_lora_forward_begin(whet_model *m, whet_acts *a, size_t l, whet_linear_id id, float *out, const float *in,
                            size_t rows, whet_gemm *up, whet_jobs *pre, whet_lora_project *xs_job);
/* Which of those whet_lora_backward_begin would take, with no side effect. */
int whet_lora_backward_path(const whet_model *m, const whet_acts *a, size_t l, whet_linear_id id, const float *din,
                            size_t rows);
int whet_lora_backward_begin(whet_model *m, whet_acts *a, size_t l, whet_linear_id id, float *din, const float *dout,
                             const float *in, size_t rows, whet_lora_pending *p, whet_jobs *pre);
void whet_lora_backward_add_jobs(whet_lora_pending *p, whet_jobs *jobs);

/* The LM head over vocabulary columns [v0, v0 + vc):
 * logits[rows, vc] (leading dimension ld) = in[rows, C]·lm_head[v0:v0+vc]ᵀ,
 * from the bf16 head when the base is bf16, else from m->params.lm_head.
 * forward.c's fused cross-entropy and whet_model_logits call this instead of
 * reading m->params.lm_head (an untied head has no fp32 copy in bf16).
 * worker: WHET_ALL_WORKERS splits the GEMMs across the pool; a worker index
 * runs them on that worker alone, from within one of its pool tasks. */
void whet_lm_head_forward(whet_model *m, int worker, float *logits, size_t ld, const float *in, size_t rows,
                          size_t v0, size_t vc);
/* Its backward for one chunk: din[rows, C] (+)= dlogits[rows, vc]·lm_head[v0:v0+vc]
 * (ld: dlogits' leading dimension; = when !accumulate_din), and when g has a
 * head gradient, g->p.lm_head[v0:v0+vc] += dlogitsᵀ·in. */
void whet_lm_head_backward(whet_model *m, int worker, float *din, int accumulate_din, const float *dlogits, size_t ld,
                           const float *in, size_t rows, size_t v0, size_t vc, whet_model_grads *g);

#endif
