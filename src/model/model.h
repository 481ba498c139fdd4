/* The transformer: weights from an HF model directory, the fp32 forward and
 * backward passes, the fused LM head + cross-entropy, and a KV cache for
 * incremental decoding.
 *
 * Shapes (llm.c's letters): B sequences of T tokens, BT = B·T rows; C hidden,
 * L layers, NH query heads, NKV key/value heads, HD head_dim, QD = NH·HD,
 * KVD = NKV·HD, F ffn width, V vocabulary.
 *
 * Parameters live in one fp32 allocation with named views (whet_model_params),
 * activations in another (whet_acts), laid out so that the backward pass can
 * find everything it needs: each layer's input, its norms' rstd (and mean,
 * for LayerNorm), q/k before the per-head norm, the attention output with
 * its per-row log-sum-exp, the MLP's pre-activations, and the LM head's
 * log-sum-exp per row. The normalised inputs and the MLP's activation output
 * are cheap to recompute, so the backward pass does (the same kernels on the
 * same inputs: the same bits) and one buffer of each serves every layer.
 *
 * Typical use:
 *   whet_model *m;  whet_model_load(&m, dir, compute, &e);
 *   whet_acts *a = whet_acts_create(m, B, T, 0, &e);
 *   whet_model_forward(m, a, tokens, B, T, &e);            // hidden states
 *   whet_model_nll(m, a, targets, logprobs, &mean_nll, &e); // scoring / loss
 *   whet_model_logits(m, a, rows, n_rows, logits, &e);      // selected positions
 * for training (model/backward.c):
 *   whet_acts *a = whet_acts_create(m, B, T, WHET_ACTS_KEEP, &e);  // or _CHECKPOINT
 *   whet_model_grads *g = whet_model_grads_create(m, &selection, &e);
 *   whet_model_forward_packed(m, a, tokens, positions, seg_start, B, T, &e);
 *   whet_model_nll_head_backward(m, a, targets, 1.0f / step_tokens, g, &mean_nll, &e); // loss, LM head's gradient
 *   whet_model_backward(m, a, targets, 1.0f / step_tokens, g, &e); // g += ∂loss/∂θ
 * and for generation:
 *   whet_kv_cache *kv = whet_kv_cache_create(m, B, max_T, &e);
 *   whet_model_decode(m, kv, a, prompt, B, T, logits, &e);  // prefill
 *   whet_model_decode(m, kv, a, next, B, 1, logits, &e);    // one step
 *
 * A model is used by one thread at a time; its work is spread over the
 * compute context's pool, split by rows or heads, never along a reduction, so
 * results are bit-identical for any thread count. */
#ifndef WHET_MODEL_H
#define WHET_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "model/config.h"
#include "util/compute.h"
#include "util/file.h"

/* Named views into the one parameter allocation; NULL when the architecture
 * or config has no such tensor. Linear weights are [out, in] (GPT-2's Conv1D
 * weights are transposed on load); per-layer tensors are stacked over L. */
typedef struct whet_model_params {
    float *wte;            /* [V, C] token embeddings */
    float *wpe;            /* [max_positions, C] learned positions (GPT-2) */
    float *ln1_w, *ln1_b;  /* [L, C] attention norm (bias: LayerNorm) */
    float *wq, *bq;        /* [L, QD, C], [L, QD] */
    float *wk, *bk;        /* [L, KVD, C], [L, KVD] */
    float *wv, *bv;        /* [L, KVD, C], [L, KVD] */
    float *q_norm, *k_norm; /* [L, HD] per-head RMSNorm weights (Qwen3) */
    float *wo, *bo;        /* [L, C, QD], [L, C] */
    float *ln2_w, *ln2_b;  /* [L, C] MLP norm */
    float *w_gate, *b_gate; /* [L, F, C], [L, F] (SwiGLU) */
    float *w_up, *b_up;    /* [L, F, C], [L, F] (GPT-2: c_fc) */
    float *w_down, *b_down; /* [L, C, F], [L, C] */
    float *lnf_w, *lnf_b;  /* [C] final norm */
    float *lm_head;        /* [V, C]; the same memory as wte when tied */
} whet_model_params;

typedef struct whet_model {
    whet_model_config cfg;
    whet_model_params params;
    float *params_memory;
    size_t num_params;      /* floats in params_memory (a tied head counted once) */
    whet_compute *compute;  /* not owned; callers may switch it between calls */
    float *rope_cos, *rope_sin; /* [rope_len, HD/2] */
    size_t rope_len;
    char *path;             /* the model directory, for messages */
    struct whet_lora *lora; /* the attached adapter, or NULL (model/lora.c) */
    struct whet_base_bf16 *base_bf16; /* linear weights as bf16 (a frozen base, or shadows of trained fp32
                                       * masters under --compute bf16), or NULL (model/linear.c) */
} whet_model;

/* One layer's activations for BT rows (capacity rows apart per layer).
 * ln1, ln2 and h are shared by every layer (ln1 and ln2 are one buffer): each
 * holds the last layer's that the forward or a recompute wrote. */
typedef struct whet_layer_acts {
    float *x_in;                  /* [BT, C] residual stream entering the layer */
    float *ln1, *ln1_mean, *ln1_rstd; /* [BT, C] (shared), [BT] (mean: LayerNorm only) */
    float *q_raw, *k_raw;         /* [BT, QD], [BT, KVD] projections before the q/k norm (Qwen3) */
    float *q_rstd, *k_rstd;       /* [BT·NH], [BT·NKV] their per-head rstd (Qwen3) */
    float *q, *k, *v;             /* [BT, QD], [BT, KVD], [BT, KVD] after bias, norm and RoPE */
    float *att;                   /* [BT, QD] attention output, heads side by side */
    float *att_lse;               /* [B, NH, T] attention log-sum-exp per query */
    float *x_mid;                 /* [BT, C] residual stream after attention */
    float *ln2, *ln2_mean, *ln2_rstd; /* [BT, C] (shared, the same buffer as ln1), [BT] */
    float *gate;                  /* [BT, F] gate projection (SwiGLU) */
    float *up;                    /* [BT, F] up projection (GPT-2: c_fc, before GELU) */
    float *h;                     /* [BT, F] activation output, the input of down (shared) */
} whet_layer_acts;

/* The backward pass's buffers, one set reused by every layer (each the
 * gradient of the loss with respect to the activation of the same name). */
typedef struct whet_grad_acts {
    float *res;               /* [BT, C] the residual stream's gradient, carried down through the layers */
    float *ln;                /* [BT, C] gradient of a norm's output (lnf, ln2, ln1 in turn) */
    float *att;               /* [BT, QD] of the attention output */
    float *q, *k, *v;         /* [BT, QD], [BT, KVD], [BT, KVD] of q, k, v (after RoPE, then un-rotated in place) */
    float *q_raw, *k_raw;     /* [BT, QD], [BT, KVD] before the q/k norm (Qwen3) */
    float *k_parts, *v_parts; /* [parts·group, BT, KVD] each: query head h's share of its KV head's dk, dv over
                               * the query rows of attention part p, in slot p·group + h % group (NULL when
                               * neither GQA nor more than one part per example; model/backward.c) */
    float *h;                 /* [BT, F] of the activation output */
    float *gate, *up;         /* [BT, F] of the gate (SwiGLU) and up projections */
    float *row_scale;         /* [BT] loss_scale for rows with a target, 0 otherwise */
} whet_grad_acts;

/* whet_acts_create's modes (its keep_layers argument). */
#define WHET_ACTS_REUSE 0      /* inference: one layer slot reused, the stream updated in place */
#define WHET_ACTS_KEEP 1       /* training: every layer's activations kept for the backward pass (but ln1, ln2, h) */
#define WHET_ACTS_CHECKPOINT 2 /* training with gradient checkpointing: each layer's input x_in kept, the rest
                                * recomputed layer by layer into one slot during the backward pass (one more
                                * forward's work; the gradients are bit-identical to WHET_ACTS_KEEP's) */

typedef struct whet_acts {
    size_t B, T;             /* capacity */
    size_t cur_B, cur_T;     /* the last forward's shape */
    int keep_layers;         /* WHET_ACTS_REUSE, WHET_ACTS_KEEP or WHET_ACTS_CHECKPOINT */
    float *memory;
    size_t floats;
    whet_layer_acts *layers; /* [L] (REUSE: all one slot; CHECKPOINT: one slot but each layer's own x_in) */
    size_t slot_layer;       /* CHECKPOINT: the layer whose activations the slot holds (SIZE_MAX: none) */
    float *x_final;          /* [BT, C] residual stream after the last layer */
    float *lnf, *lnf_mean, *lnf_rstd; /* [BT, C], [BT] final norm */
    float *proj;             /* [BT, C] scratch: o_proj / down outputs before the residual add */
    float *lse;              /* [BT] LM head log-sum-exp per row (after whet_model_nll) */
    int lse_ready;           /* whet_model_nll ran after the last forward (the backward needs lse) */
    float *ce_max, *ce_sum, *ce_target; /* [BT] cross-entropy running state */
    float *ce_chunk;         /* [WHET_CE_ROWS, WHET_CE_VOCAB] logits of one vocabulary chunk */
    float *ce_part_max, *ce_part_sum; /* [WHET_CE_ROWS] one chunk's log-sum-exp partial (whet_model_nll) */
    float *head_logits;      /* [⌈V/WHET_CE_VOCAB⌉, head_rows, WHET_CE_VOCAB] training (KEEP, CHECKPOINT): a row
                              * block's logits chunk by chunk, then dlogits
                              * (whet_model_nll_head_backward); shares memory with d's layer scratch, as do: */
    float *head_lse_parts;   /* [2, ⌈V/WHET_CE_VOCAB⌉, head_rows] each chunk's log-sum-exp partial (max, then sum) */
    float *head_dln_parts;   /* [WHET_HEAD_GROUPS, head_rows, C] each group of chunks' share of ∂loss/∂lnf */
    size_t head_rows;        /* rows per block of the training LM head, both paths (≤ WHET_CE_ROWS) */
    int head_grad_ready;     /* d.ln holds ∂loss/∂lnf from whet_model_nll_head_backward (after the last forward) */
    int32_t *tokens;         /* [BT] the last forward's input, for the embeddings' gradient */
    int32_t *positions;      /* [BT] */
    int32_t *seg_start;      /* [BT] packed example start row within its sequence (whet_model_forward_packed) */
    int32_t *seg_row, *seg_len; /* [n_segs] each packed example's first row (b·T + t) and length, in row order */
    size_t n_segs;
    size_t attn_part_rows;   /* attention's query rows per task, fixed at creation (whet_attn_part_rows) */
    int32_t *seg_part0;      /* [n_segs + 1] segment s's attention parts are [seg_part0[s], seg_part0[s + 1]) */
    size_t attn_parts;       /* the last forward's most parts in one segment */
    float *lora;             /* adapter scratch: whet_lora_acts_floats(m, B·T) floats per layer (one slot for REUSE;
                              * see model/lora.h), NULL when no adapter was attached at whet_acts_create */
    whet_grad_acts d;        /* backward buffers (KEEP and CHECKPOINT only; all NULL for REUSE) */
} whet_acts;

/* The fused LM head + cross-entropy never holds more logits than this. */
#define WHET_CE_ROWS 256
#define WHET_CE_VOCAB 1024
/* ... except in training, where whet_model_nll_head_backward holds a block of
 * rows over the whole vocabulary: WHET_CE_ROWS rows halved (down to
 * WHET_HEAD_MIN_ROWS) while they take more than this many floats. Each
 * block packs every vocabulary chunk of the head's weight once and adds into
 * the whole dlm_head once, so bigger blocks amortise both: 256 rows instead of
 * 128 took the head's GEMMs from 132 to 151 GFLOP/s per CPU-second
 * (SmolLM-135M, 1 thread), for 24 MiB more of the plan (64 MiB at most). */
#define WHET_HEAD_LOGITS_FLOATS ((size_t)1 << 24)
#define WHET_HEAD_MIN_ROWS 16
/* The training head shares a row block's vocabulary chunks among the threads
 * as they free up (model/backward.c). ∂loss/∂lnf sums over chunks, so that
 * sum is cut into this many groups of consecutive chunks, fixed whatever the
 * thread count: each group one task, summing its chunks in order, and the
 * groups summed in order after. More groups: shorter tails, more memory
 * (head_rows·C floats each). */
#define WHET_HEAD_GROUPS 16

/* Attention splits each example's query rows into parts of this many rows,
 * and each (part, head) is one task: a long sequence alone (B = 1, T = 2048:
 * 9 heads) then still has enough tasks to keep every thread busy. A
 * row's output does not depend on its part; the keys' gradients are summed
 * over the parts in part order (model/backward.c), so the part size, not the
 * thread count, fixes their bits. A multiple of every kernel's block of
 * query rows. */
#define WHET_ATTN_PART_ROWS 512
/* ... in at most this many parts: activations for longer sequences take
 * longer parts (whet_attn_part_rows), so that the parts' shares of the keys'
 * gradients, parts × [B·T, QD] floats for each of dk and dv, grow as T
 * rather than T². */
#define WHET_ATTN_MAX_PARTS 4
/* The rows per part for activations of T tokens per sequence. */
size_t whet_attn_part_rows(size_t T);

typedef struct whet_kv_cache {
    size_t B, max_T, len;  /* len tokens of each sequence are cached */
    size_t layer_stride;   /* floats per layer: B·max_T·KVD */
    float *k, *v;          /* [L, B, max_T, KVD] */
} whet_kv_cache;

typedef struct whet_memory_estimate {
    size_t weights;     /* bytes of fp32 parameters */
    size_t activations; /* bytes of whet_acts for B×T in the mode asked for */
    size_t activations_kept;         /* ... in WHET_ACTS_KEEP (training, backward buffers included) */
    size_t activations_checkpointed; /* ... in WHET_ACTS_CHECKPOINT (the same, with gradient checkpointing) */
    size_t kv_cache;    /* bytes of a KV cache for B×T */
} whet_memory_estimate;

/* Bytes for a model of this config at batch B, sequence T; keep_layers is a
 * whet_acts_create mode. An adapter's scratch (whet_lora_acts_floats per
 * layer slot) comes on top of the activations. */
whet_memory_estimate whet_model_memory(const whet_model_config *cfg, size_t B, size_t T, int keep_layers);
/* Parameter count (tied head counted once). */
size_t whet_model_param_count(const whet_model_config *cfg);

/* Reads dir/config.json and the weights (model.safetensors or the sharded
 * model.safetensors.index.json), F32/F16/BF16, into fp32. Refuses missing
 * tensors, wrong shapes and unexpected tensors, naming the file. A path to a
 * GGUF file (told by its magic bytes) goes to whet_model_load_gguf. */
int whet_model_load(whet_model **out, const char *dir, whet_compute *compute, whet_err *e);
/* A GGUF file (llama, qwen2, qwen3, gpt2 as convert_hf_to_gguf.py writes
 * them; every tensor type whet_gguf_tensor_to_f32 reads) into the same fp32
 * layout as the HF directory: llama's Q/K rows are un-permuted back to HF's
 * order, so the forward keeps half-split RoPE for every architecture and the
 * parameters are HF's (model/gguf_model.c). */
int whet_model_load_gguf(whet_model **out, const char *path, whet_compute *compute, whet_err *e);
/* 1 when path is a file starting with the bytes "GGUF". */
int whet_is_gguf_file(const char *path);
/* The parameter layout (model/weights.c): views into base (NULL: sizes only);
 * returns the floats needed. */
size_t whet_model_layout_params(const whet_model_config *c, whet_model_params *p, float *base);
/* A model of this config with random weights as HF's _init_weights gives
 * them: linear and embedding weights normal(0, 0.02), biases 0, norm weights
 * 1; the same seed gives the same bits (model/init.c). */
int whet_model_init(whet_model **out, const whet_model_config *cfg, whet_compute *compute, uint64_t seed,
                    whet_err *e);
void whet_model_free(whet_model *m);

/* Gradients in the parameter layout (whet_model_layout_params over their own
 * allocation). A NULL view is a frozen tensor: backward computes no gradient
 * for it. Layers below first_layer are frozen whole (full fine-tuning of the
 * last N layers), and backward stops propagating below the lowest layer that
 * still needs an input gradient. With a tied head, lm_head and wte share
 * memory here too, so both uses accumulate into one gradient. */
typedef struct whet_model_grads {
    whet_model_params p;
    whet_model_config cfg;  /* the model's (the views' sizes) */
    size_t first_layer;
    float *memory;
    size_t floats;
} whet_model_grads;

/* What a training step trains; whet_model_grads_create sets the views. */
typedef struct whet_train_selection {
    int full;               /* 1: base weights train (full fine-tuning); 0: only a LoRA adapter */
    size_t train_layers;    /* full: the last N layers train (0 = all) */
    int freeze_embeddings;  /* full: wte/wpe (and a tied head) stay frozen */
} whet_train_selection;

/* Full fine-tuning: every parameter's gradient in the parameter layout,
 * the frozen ones' views NULL (embeddings) or below first_layer (layers:
 * their memory is calloc'd and never touched, so it takes no pages). LoRA
 * only (sel->full == 0): no base gradients, every view NULL. */
whet_model_grads *whet_model_grads_create(const whet_model *m, const whet_train_selection *sel, whet_err *e);
/* Zeroes the trained ranges (those whet_model_grads_ranges lists). */
void whet_model_grads_zero(whet_model_grads *g);
void whet_model_grads_free(whet_model_grads *g);

/* One trained tensor (or its trained layers): param and grad are n floats
 * at the same place in the model's and the gradients' layouts. */
typedef struct whet_grad_range {
    const char *name;  /* the view's name in whet_model_params: "wte", "wq", "lnf_w" ... */
    float *param, *grad;
    size_t n;
} whet_grad_range;

/* The trained ranges of g in layout order (a tied head once, as "wte"):
 * writes up to max of them into out and returns how many there are. */
size_t whet_model_grads_ranges(const whet_model *m, const whet_model_grads *g, whet_grad_range *out, size_t max);
#define WHET_MAX_GRAD_RANGES 32

/* The backward pass after a forward (whet_model_forward or _packed, into
 * acts made WHET_ACTS_KEEP or WHET_ACTS_CHECKPOINT) and whet_model_nll on it
 * (the backward reads its log-sum-exps; targets may differ only in which rows
 * count). Accumulates (+=) into g (NULL: no base gradients, LoRA only) and
 * into the model's LoRA gradients when an adapter with gradients is
 * attached, the gradient of  loss_scale · Σ_rows nll(row)  over rows with
 * targets ≥ 0 — the caller passes loss_scale = 1 / (loss tokens in the whole
 * optimizer step), so gradient accumulation over micro-batches sums to the
 * mean. The LM head's logits are recomputed chunk by chunk (never all held)
 * unless whet_model_nll_head_backward ran after the forward (then its
 * gradient is used, once);
 * with CHECKPOINT each layer's activations are recomputed from its x_in just
 * before its backward, giving the same bits as KEEP. Layers below the lowest
 * one that trains (g->first_layer, or 0 with an adapter or trained
 * embeddings) are not visited. Refuses inference activations and a forward
 * without whet_model_nll after it. */
int whet_model_backward(whet_model *m, whet_acts *a, const int32_t *targets, float loss_scale, whet_model_grads *g,
                        whet_err *e);

/* Activations for up to B sequences of T tokens; keep_layers is a mode
 * (WHET_ACTS_REUSE, _KEEP or _CHECKPOINT). An adapter must be attached to m
 * before, so that its scratch is laid out per layer slot. */
whet_acts *whet_acts_create(const whet_model *m, size_t B, size_t T, int keep_layers, whet_err *e);
/* The same with attention's query rows in parts of attn_part_rows (≥ 1)
 * instead of whet_attn_part_rows(T): tests split short sequences with it. */
whet_acts *whet_acts_create_parts(const whet_model *m, size_t B, size_t T, int keep_layers, size_t attn_part_rows,
                                  whet_err *e);
void whet_acts_free(whet_acts *a);

/* tokens [B, T] → a->x_final and a->lnf (no logits). */
int whet_model_forward(whet_model *m, whet_acts *a, const int32_t *tokens, size_t B, size_t T, whet_err *e);

/* The training forward with packing: positions [B·T] restart at 0 for each
 * packed example, and seg_start [B·T] gives the row within its sequence
 * (0..T-1) where each token's example starts, so attention never crosses
 * from one example into another (and RoPE/learned positions restart).
 * Examples are contiguous: seg_start[t] is t or seg_start[t − 1]. positions
 * NULL: t − seg_start[t]; seg_start NULL: one example per sequence; both
 * NULL: the same as whet_model_forward. A packed example's rows get the same
 * bits as the example alone. Mistral's sliding window bounds the longest
 * example. The backward pass reads all of it from the activations. */
int whet_model_forward_packed(whet_model *m, whet_acts *a, const int32_t *tokens, const int32_t *positions,
                              const int32_t *seg_start, size_t B, size_t T, whet_err *e);

/* After a forward: the fused LM head + cross-entropy over vocabulary chunks.
 * targets [B·T]: the token each row predicts, or < 0 to skip the row. Writes
 * log p(target) per row into logprobs (may be NULL; skipped rows get 0),
 * the mean NLL over rows with a target into *mean_nll (0 when none), and
 * each row's log-sum-exp into a->lse. */
int whet_model_nll(whet_model *m, whet_acts *a, const int32_t *targets, float *logprobs, double *mean_nll,
                   whet_err *e);

/* Training: whet_model_nll and the LM head's share of whet_model_backward in
 * one pass, each block of a->head_rows rows' logits computed once over the
 * whole vocabulary (not again in the backward). Gives what whet_model_nll
 * gives (*mean_nll, a->lse and the cross-entropy state, no log-probs), then,
 * with loss_scale and targets as whet_model_backward takes them:
 * ∂loss/∂lnf into a->d.ln and the head's gradient added (+=) into g (when
 * g->p.lm_head; tied: wte's). The whet_model_backward that follows (same
 * targets and loss_scale, checked) starts from there; the same bits as
 * whet_model_nll + whet_model_backward. A row's dlogits are formed only once
 * its NLL is known finite: when a row's is not, *mean_nll is not finite, the
 * head's gradient is left partial (earlier row blocks only) and the caller is
 * expected to skip the step (whet_model_backward would recompute the head).
 * No row with a target: the NLL only. Needs WHET_ACTS_KEEP or _CHECKPOINT. */
int whet_model_nll_head_backward(whet_model *m, whet_acts *a, const int32_t *targets, float loss_scale,
                                 whet_model_grads *g, double *mean_nll, whet_err *e);

/* After a forward: logits [n_rows, V] for rows (indices b·T + t); rows NULL
 * means every row in order (n_rows must be B·T). */
int whet_model_logits(whet_model *m, whet_acts *a, const size_t *rows, size_t n_rows, float *logits, whet_err *e);

whet_kv_cache *whet_kv_cache_create(const whet_model *m, size_t B, size_t max_T, whet_err *e);
void whet_kv_cache_free(whet_kv_cache *kv);
void whet_kv_cache_reset(whet_kv_cache *kv);

/* Appends tokens [B, T] (T ≤ a->T) at position kv->len of every sequence,
 * runs them through the model attending to the cache, and writes the logits
 * of each sequence's last new token into logits [B, V]. */
int whet_model_decode(whet_model *m, whet_kv_cache *kv, whet_acts *a, const int32_t *tokens, size_t B, size_t T,
                      float *logits, whet_err *e);

/* Scores ids[0..n) as whet score does (Hugging Face's strided perplexity):
 * windows [begin, begin + ctx) for begin = 0, stride, 2·stride, ... until
 * one reaches the end, each scoring the tokens earlier windows did not, so
 * every token after the first is scored once with as much left context as
 * its window gives (stride < ctx). logprob[n] (NULL: not kept) gets
 * log p(ids[t] | its window before it) at t ≥ 1; *total_nll (nats), *scored
 * and *windows the totals. progress: a window counter on stderr. */
int whet_model_score_windows(whet_model *m, const int32_t *ids, size_t n, size_t ctx, size_t stride, float *logprob,
                      double *total_nll, size_t *scored, size_t *windows, int progress, whet_err *e);

#endif
