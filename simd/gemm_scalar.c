/* Scalar reference GEMM: each C element is a sum over k in order, started from
 * zero and then added to C when accumulating; the ISA kernels keep that contract
 * (same k order for every element whatever the sub-block) though they sum in
 * other association. No workspace. */
#include "isa_kernels.h"

#include <string.h>

const whet_gemm_params whet_gemm_params_scalar = {.workspace_bytes = 0, .tile_m = 4, .tile_n = 4};

static float bf16_value(whet_bf16 b)
{
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline float a_at(const whet_gemm *g, size_t i, size_t k)
{
    return g->layout == WHET_GEMM_TN ? g->A[k * g->lda + i] : g->A[i * g->lda + k];
}

static inline size_t b_index(const whet_gemm *g, size_t k, size_t j)
{
    return g->layout == WHET_GEMM_NT ? j * g->ldb + k : k * g->ldb + j;
}

void whet_sgemm_scalar(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    (void)workspace;
    const float *B = g->B;
    for (size_t i = m0; i < m1; i++)
        for (size_t j = n0; j < n1; j++) {
            float sum = 0;
            for (size_t k = 0; k < g->K; k++)
                sum += a_at(g, i, k) * B[b_index(g, k, j)];
            float *c = &g->C[i * g->ldc + j];
            *c = g->accumulate ? *c + sum : sum;
        }
}

void whet_gemm_bf16_scalar(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    (void)workspace;
    const whet_bf16 *B = g->B;
    for (size_t i = m0; i < m1; i++)
        for (size_t j = n0; j < n1; j++) {
            float sum = 0;
            for (size_t k = 0; k < g->K; k++)
                sum += a_at(g, i, k) * bf16_value(B[b_index(g, k, j)]);
            float *c = &g->C[i * g->ldc + j];
            *c = g->accumulate ? *c + sum : sum;
        }
}
