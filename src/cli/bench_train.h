/* whet bench train: optimizer steps of a randomly initialised model (by
 * default SmolLM-135M-shaped) timed end to end, with the PyTorch baseline
 * (/work/shared/bench/torch_llama.py) on the same shape in the same run. */
#ifndef WHET_CLI_BENCH_TRAIN_H
#define WHET_CLI_BENCH_TRAIN_H

#include <stddef.h>

#include "simd/simd.h"

enum { BENCH_TRAIN_LORA = 1, BENCH_TRAIN_FULL = 2 };

typedef struct bench_train_options {
    const whet_kernels *kernels;
    int threads;
    int methods;   /* BENCH_TRAIN_LORA | BENCH_TRAIN_FULL */
    int bf16_base; /* LoRA: frozen base weights held as bf16 */
    int compute_bf16; /* --compute bf16: the projections' and head's GEMMs on bf16 (LoRA: a bf16 base too) */
    size_t seq_len, batch, steps, rank;
    size_t hidden, layers, heads, kv_heads, ffn, vocab; /* a Llama shape with tied embeddings */
    const char *torch; /* the baseline script; NULL: not run */
    int sweep;         /* sequence lengths 128 … 2048 at the same tokens per step */
    int profile;       /* time every kernel by phase and category */
    int checkpoint;    /* gradient checkpointing (WHET_ACTS_CHECKPOINT) */
    int json;
    double peak_gflops; /* fp32 FMA peak per core for MFU; 0: measured at the start */
} bench_train_options;

#define BENCH_TRAIN_DEFAULT_TORCH "/work/shared/bench/torch_llama.py"

/* SmolLM-135M's shape, sequence 256, batch 4, 3 timed steps, LoRA r = 8,
 * the default torch script; kernels and threads left for the caller. */
void bench_train_defaults(bench_train_options *o);

/* Runs the benchmark and prints its report (one JSON object with json);
 * returns a WHET_EXIT_* status. Each measurement runs in a child process of
 * its own, so that each has its own peak resident memory. */
int bench_train(const bench_train_options *o);

#endif
