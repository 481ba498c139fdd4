/* A Hugging Face model's config.json, read into a model description.
 *
 * Architectures are data: whet_arch_info holds, per HF class, what differs
 * between them (norm kind, biases, q/k norm, positions, RoPE pairing,
 * activation, tying, HF tensor names, Conv1D transposition); the forward pass
 * reads this table and never asks "is this GPT-2?".
 *
 *                 norm            biases              q/k norm  positions  act      tied
 *   Llama         RMSNorm         attention_bias,     -         RoPE       SwiGLU   tie_word_embeddings
 *                                 mlp_bias keys
 *   Mistral       RMSNorm         none                -         RoPE       SwiGLU   tie_word_embeddings
 *   Qwen2         RMSNorm         q/k/v (always)      -         RoPE       SwiGLU   tie_word_embeddings
 *   Qwen3         RMSNorm         attention_bias key  per head  RoPE       SwiGLU   tie_word_embeddings
 *   GPT-2         LayerNorm+bias  all                 -         learned    GELU     always
 *                                                                          (tanh)
 * Every error names the file, the line and column of the offending key or
 * value, and what whet supports instead. */
#ifndef WHET_MODEL_CONFIG_H
#define WHET_MODEL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "simd/simd.h"
#include "util/file.h"

typedef enum whet_arch {
    WHET_ARCH_LLAMA = 0,
    WHET_ARCH_MISTRAL,
    WHET_ARCH_QWEN2,
    WHET_ARCH_QWEN3,
    WHET_ARCH_GPT2,
    WHET_ARCH_COUNT
} whet_arch;

typedef enum whet_norm_kind { WHET_NORM_RMS = 0, WHET_NORM_LAYER } whet_norm_kind;
typedef enum whet_pos_kind { WHET_POS_ROPE = 0, WHET_POS_LEARNED } whet_pos_kind;
/* SwiGLU: down(silu(gate(x))·up(x)); GELU: down(gelu_tanh(up(x))) */
typedef enum whet_act_kind { WHET_ACT_SWIGLU = 0, WHET_ACT_GELU_TANH } whet_act_kind;
/* FREQS: a GGUF's rope_freqs.weight, one divisor per frequency (how
 * convert_hf_to_gguf.py stores Llama 3 scaling; ggml divides by it). */
typedef enum whet_rope_scaling {
    WHET_ROPE_SCALING_NONE = 0,
    WHET_ROPE_SCALING_LINEAR,
    WHET_ROPE_SCALING_LLAMA3,
    WHET_ROPE_SCALING_FREQS
} whet_rope_scaling;

/* A flag an architecture fixes, or takes from a config.json key. */
typedef enum whet_flag { WHET_FLAG_NO = 0, WHET_FLAG_YES, WHET_FLAG_FROM_KEY } whet_flag;

/* HF tensor names, without the ".weight"/".bias" suffix. Layer names follow
 * `layer` (a printf format taking the layer index as size_t). NULL: the
 * architecture has no such tensor. `qkv` is a fused projection (GPT-2 c_attn),
 * split into q, k, v rows on load. */
typedef struct whet_arch_names {
    const char *embed, *pos_embed, *final_norm, *lm_head;
    const char *layer;
    const char *attn_norm, *q, *k, *v, *qkv, *o, *q_norm, *k_norm;
    const char *mlp_norm, *gate, *up, *down;
} whet_arch_names;

typedef struct whet_arch_info {
    whet_arch arch;
    const char *hf_class;   /* config.json "architectures"[0] */
    const char *name;       /* "llama", "mistral", "qwen2", "qwen3", "gpt2" */
    whet_norm_kind norm;
    whet_flag qkv_bias;     /* FROM_KEY: "attention_bias" */
    whet_flag o_bias;       /* FROM_KEY: "attention_bias" */
    whet_flag mlp_bias;     /* FROM_KEY: "mlp_bias" */
    int qk_norm;            /* per-head RMSNorm of q and k before RoPE (Qwen3) */
    whet_pos_kind positions;
    whet_rope_pairing rope_pairing;
    whet_act_kind act;
    whet_flag tied;         /* FROM_KEY: "tie_word_embeddings" */
    int conv1d;             /* projection weights stored [in,out]: transposed on load */
    whet_arch_names names;
    /* HF's class defaults for keys config.json may leave out */
    double default_rms_eps, default_rope_theta;
    size_t default_max_positions;
} whet_arch_info;

/* The table, one row per supported HF class, in whet_arch order. */
const whet_arch_info *whet_arch_table(size_t *count);
/* "LlamaForCausalLM, MistralForCausalLM, ...", for messages. */
const char *whet_arch_supported_list(void);

#define WHET_MAX_EOS_IDS 8
#define WHET_MAX_HEAD_DIM 1024

typedef struct whet_model_config {
    const whet_arch_info *info;
    size_t vocab, hidden, layers, heads, kv_heads, head_dim, ffn;
    size_t max_positions;   /* max_position_embeddings / n_positions */
    float norm_eps;
    int qkv_bias, o_bias, mlp_bias, tied; /* resolved from info and the keys */
    /* RoPE (positions == WHET_POS_ROPE) */
    double rope_theta;
    whet_rope_scaling rope_scaling;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    size_t rope_original_max_positions;
    float rope_freq_divisors[WHET_MAX_HEAD_DIM / 2]; /* FREQS: [head_dim/2] */
    /* Mistral's sliding_window (0: none). Within the window attention is plain
     * causal attention; the forward refuses longer sequences. */
    size_t sliding_window;
    /* token ids, -1 when absent */
    int64_t bos_token_id;
    int64_t eos_token_ids[WHET_MAX_EOS_IDS];
    size_t n_eos;
} whet_model_config;

/* Parses config.json text; name (the file) starts every message. */
int whet_config_parse(whet_model_config *cfg, const char *text, size_t size, const char *name, whet_err *e);
/* Reads path, a config.json or a model directory holding one. */
int whet_config_load(whet_model_config *cfg, const char *path, whet_err *e);

/* From a GGUF file's metadata (and, for what only its tensors tell, tensor
 * presence: tied output, biases, rope_freqs.weight), with the same struct and
 * validation rules as config.json. general.architecture llama (Mistral is
 * stored as llama), qwen2, qwen3 or gpt2; every error names the file and key.
 * Implemented in model/gguf_model.c. */
struct whet_gguf;
int whet_config_from_gguf(whet_model_config *cfg, const struct whet_gguf *g, whet_err *e);

/* The RoPE tables for positions [0, n): cos/sin [n][head_dim/2], angle
 * pos·inv_freq[i] with inv_freq as HF computes it in float32 (default, linear
 * and llama3 rules, same operation order), cos/sin taken in double and rounded. */
void whet_rope_tables(const whet_model_config *cfg, size_t n, float *cos_table, float *sin_table);
/* inv_freq[head_dim/2], as above */
void whet_rope_inv_freq(const whet_model_config *cfg, float *inv_freq);

#endif
