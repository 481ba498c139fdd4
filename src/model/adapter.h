/* LoRA adapters on disk: PEFT adapter directories (read and written) and
 * llama.cpp's GGUF LoRA adapters (written), for a whet_lora of a loaded model.
 *
 * PEFT names (io/peft.h), per layer l and projection:
 *   Llama, Mistral, Qwen2, Qwen3:
 *     base_model.model.model.layers.{l}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight
 *     base_model.model.model.layers.{l}.mlp.{gate,up,down}_proj.lora_{A,B}.weight
 *   GPT-2 (GPT2LMHeadModel; the modules are Conv1D, so fan_in_fan_out is true):
 *     base_model.model.transformer.h.{l}.attn.c_attn   q, k and v fused
 *     base_model.model.transformer.h.{l}.attn.c_proj   o
 *     base_model.model.transformer.h.{l}.mlp.c_fc      up
 *     base_model.model.transformer.h.{l}.mlp.c_proj    down
 * lora_A.weight is [r, in] and lora_B.weight [out, r] for every module,
 * Conv1D included: PEFT's lora_A/lora_B are nn.Linear whatever the base
 * layer, fan_in_fan_out only transposes the merged delta (B·A)ᵀ.
 *
 * GPT-2's c_attn: whet adapts q, k and v separately (A_q, A_k, A_v, each
 * [r, C]); PEFT adapts c_attn as one module with one A. Written, the n of q,
 * k, v that are adapted become one c_attn adapter of rank n·r, exactly:
 *   A = [A_q; A_k; A_v]  [n·r, C]      B = blockdiag(B_q, B_k, B_v)  [QD+2·KVD, n·r]
 * (rows of an unadapted projection zero), with rank_pattern {"c_attn": n·r}
 * and alpha_pattern {"c_attn": n·alpha} (√n·alpha with rsLoRA) so that the
 * scale stays alpha/r. When A_q, A_k and A_v are the same (an adapter read
 * from PEFT), the single A is written at rank r instead. Read, a c_attn
 * adapter of rank 3r (r the config's) whose B is block-diagonal as above
 * is split back into q, k, v at rank r, bit for bit; any other c_attn
 * adapter of rank R gives q, k and v the same A (all R rows) and B's rows
 * for each, which is exact too (HF PEFT's own GPT-2 adapters are of this kind).
 *
 * Modules of different ranks or alphas (rank_pattern, alpha_pattern, the
 * c_attn case): the whet adapter gets the largest rank, smaller ones padded
 * with zero rows of A and zero columns of B, and the config's scale; a module
 * whose own scale differs has its B multiplied by the ratio. Layers outside
 * layers_to_transform get A = B = 0. */
#ifndef WHET_MODEL_ADAPTER_H
#define WHET_MODEL_ADAPTER_H

#include <stdint.h>

#include "model/export.h" /* the model writers (whet_model_save_hf ...) */
#include "model/lora.h"
#include "model/model.h"

/* Reads the PEFT adapter in dir (whet's or HF PEFT's) and attaches it to m
 * (m->lora); *out is the caller's (whet_lora_free). Every tensor of the file
 * must be a lora_A/lora_B of a module of m that target_modules names, with
 * the shape m gives it; every targeted module must be there. */
int whet_adapter_load_peft(whet_model *m, const char *dir, whet_lora **out, whet_err *e);

/* Writes lora (for m) as a PEFT adapter directory (created when missing):
 * adapter_model.safetensors (F32) and adapter_config.json, each atomically.
 * base_model goes into base_model_name_or_path (NULL: null). */
int whet_adapter_save_peft(const whet_model *m, const whet_lora *lora, const char *dir, const char *base_model,
                           whet_err *e);

/* Writes lora as a GGUF LoRA adapter as convert_lora_to_gguf.py lays it out
 * (formats.md §2.6): general.type "adapter", general.architecture of m
 * (Mistral as llama), adapter.type "lora", adapter.lora.alpha; tensors
 * "<GGUF base name>.lora_a" ne {in, r} and ".lora_b" ne {r, out}, llama's
 * q/k lora_b rows permuted as the base's rows are. llama.cpp scales each
 * pair by alpha / its rank; a pair whose rank differs from whet's (GPT-2's
 * fused attn_qkv) has the ratio folded into lora_b. type: WHET_GGML_F32,
 * F16 or Q8_0 (Q8_0 tensors whose rows are not whole 32-blocks are F16). */
int whet_adapter_save_gguf(const whet_model *m, const whet_lora *lora, const char *path, uint32_t type,
                           whet_err *e);

/* The HF module name of projection id in layer l as PEFT sees it
 * ("model.layers.3.self_attn.q_proj", GPT-2 "transformer.h.3.attn.c_attn"
 * for q, k and v), into buf. */
const char *whet_adapter_module_name(const whet_model_config *c, size_t l, whet_linear_id id, char *buf, size_t cap);

#endif
