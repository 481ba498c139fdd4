/* Writing a loaded model back out: as an HF model directory (config.json,
 * model.safetensors, the tokenizer files) and as a GGUF file in llama.cpp's
 * layout (formats.md §2), plus the GGUF names both this and the GGUF LoRA
 * adapter writer (model/adapter.c) use.
 *
 *   whet (HF)            GGUF name              ne (ggml order)
 *   wte [V, C]           token_embd.weight      {C, V}
 *   wpe [P, C]           position_embd.weight   {C, P}        gpt2
 *   wq [L, QD, C]        blk.N.attn_q.weight    {C, QD}       llama: rows permuted to adjacent RoPE pairs
 *   wq|wk|wv             blk.N.attn_qkv.weight  {C, QD+2KVD}  gpt2 (and .bias)
 *   wo, w_gate/up/down   blk.N.attn_output / ffn_gate / ffn_up / ffn_down
 *   ln1, ln2, lnf        blk.N.attn_norm, blk.N.ffn_norm, output_norm (+ .bias for LayerNorm)
 *   q_norm, k_norm       blk.N.attn_q_norm, blk.N.attn_k_norm (qwen3)
 *   lm_head              output.weight          absent when tied
 *   Llama 3 rope scaling rope_freqs.weight      {HD/2} divisors
 * This is the inverse of model/gguf_model.c's reading: a model written here
 * and read back with whet_model_load_gguf has the same parameters (exactly
 * for F32). */
#ifndef WHET_MODEL_EXPORT_H
#define WHET_MODEL_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "model/lora.h"
#include "model/model.h"

/* general.architecture for c: llama (Mistral too), qwen2, qwen3, gpt2. */
const char *whet_gguf_arch_name(const whet_model_config *c);
/* Whether convert_hf_to_gguf.py permutes Q/K rows for this architecture (llama). */
int whet_gguf_arch_permutes_qk(const whet_model_config *c);
/* convert_hf_to_gguf.py's LlamaModel.permute on the rows of a Q or K weight
 * (or a LoRA B, whose rows follow them): n_head heads of d rows, cols columns;
 * GGUF row h·d + 2j + k is HF row h·d + k·d/2 + j (model/gguf_model.c undoes it). */
void whet_gguf_permute_qk_rows(const float *src, float *dst, size_t n_head, size_t d, size_t cols);
/* "blk.{l}.attn_q.weight" ... for projection id of layer l (GPT-2's q, k, v:
 * "blk.{l}.attn_qkv.weight"), into buf. */
const char *whet_gguf_linear_name(const whet_model_config *c, size_t l, whet_linear_id id, char *buf, size_t cap);

/* Writes m as a GGUF file at path, atomically. type (WHET_GGML_F32, F16 or
 * Q8_0) is the type of 2-D weights; 1-D tensors and norms stay F32, and a
 * Q8_0 tensor whose rows are not whole 32-element blocks is F16, as
 * convert_hf_to_gguf.py does. The tokenizer metadata comes from source, the
 * model's HF directory (tokenizer.json, tokenizer_config.json, and
 * chat_template.jinja when present) or GGUF file (its tokenizer.* keys are
 * copied); without a tokenizer there the file has none (*no_tokenizer set to 1). */
int whet_model_save_gguf(const whet_model *m, const char *source, const char *path, uint32_t type,
                         int *no_tokenizer, whet_err *e);

/* The tokenizer.ggml.* keys (and tokenizer.chat_template) for the
 * tokenizer.json in dir, as convert_hf_to_gguf.py writes them (its gpt2 /
 * llama vocab paths), into an open GGUF writer; 1 when dir has no
 * tokenizer.json. */
struct whet_gguf_writer;
int whet_gguf_add_hf_tokenizer(struct whet_gguf_writer *w, const char *dir, const whet_model_config *c,
                               whet_err *e);

/* Writes m's weights as DIR/model.safetensors (F32, HF's names; DIR created
 * when missing), atomically, and nothing else: for a caller that writes
 * config.json and the tokenizer files itself (whet train). */
int whet_model_save_hf(const whet_model *m, const char *dir, whet_err *e);

/* Writes m as an HF model directory (created when missing): config.json
 * (source's own when source is an HF directory, else made from m->cfg),
 * model.safetensors in dtype (WHET_ST_F32, F16 or BF16) with HF's names
 * (GPT-2: Conv1D weights transposed back, q|k|v fused into c_attn), and the
 * tokenizer files source has (tokenizer.json, tokenizer_config.json,
 * special_tokens_map.json, generation_config.json, chat_template.jinja),
 * copied. From a GGUF source, config.json is made from the metadata; the
 * tokenizer is not converted (*no_tokenizer set to 1). Every file atomically. */
int whet_model_export_hf(const whet_model *m, const char *source, const char *dir, int dtype, int *no_tokenizer,
                         whet_err *e);

/* config.json text for c, as transformers writes it for the architecture
 * (malloc'd, NUL-terminated). */
int whet_config_to_json(const whet_model_config *c, char **text, size_t *len, whet_err *e);

#endif
