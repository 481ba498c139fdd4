/* Test support: an HF model directory converted to GGUF as llama.cpp's
 * convert_hf_to_gguf.py lays it out (formats.md §2): "<arch>.*" metadata
 * (Mistral written as llama), blk.N.* tensor names, ne in ggml order, llama's
 * Q/K rows permuted to interleaved RoPE pairs, GPT-2's Conv1D weights
 * transposed, tied models without output.weight, Llama 3 rope scaling as a
 * rope_freqs.weight tensor, and, when the directory has a tokenizer.json, its
 * vocabulary as tokenizer.ggml.* keys ("gpt2" model, added tokens CONTROL or
 * USER_DEFINED). `type` (WHET_GGML_F32, F16 or Q8_0) is the type of 2-D
 * weights; 1-D tensors and norms stay F32, and a row length that is not a
 * whole number of Q8_0 blocks falls back to F16, as the converter does.
 * One deviation, for Llama 3 scaling: original_max_position_embeddings comes
 * from rope_scaling (HF's reading), not the top level (see gguf_convert.c). */
#ifndef WHET_TEST_GGUF_CONVERT_H
#define WHET_TEST_GGUF_CONVERT_H

#include <stddef.h>
#include <stdint.h>

#include "io/gguf.h"
#include "util/file.h"

/* A writer holding the converted model (free with whet_gguf_writer_free);
 * the tensor data it references is owned by *keep (free with
 * gguf_convert_keep_free after writing). */
typedef struct gguf_convert_keep {
    float **bufs;
    size_t n, cap;
} gguf_convert_keep;

whet_gguf_writer *gguf_convert_hf(const char *dir, uint32_t type, gguf_convert_keep *keep, whet_err *e);
void gguf_convert_keep_free(gguf_convert_keep *keep);

/* Converts and writes to path in one go. */
int gguf_convert_hf_file(const char *dir, uint32_t type, const char *path, whet_err *e);

#endif
