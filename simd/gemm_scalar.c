/* Scalar reference GEMM: each C element is a sum over k in order, started from
 * zero and then added to C when accumulating; the ISA kernels keep that contract
 * (same k order for every element whatever the sub-block) though they sum in
 * other association. No workspace. */
#include "isa_kernels.h"

#include <string.h>

const whet_gemm_params whet_gemm_params_scalar = {.workspace_bytes = 0, .tile_m = 4, .tile_n = 4};

static float bf16_value(uint32_t bits)
{
    bits <<= 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* f32 → bf16 bits, round to nearest even, NaN kept a quiet NaN */
static uint32_t bf16_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (u >> 16) | 0x40;
    return (u + 0x7fffu + ((u >> 16) & 1)) >> 16;
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

/* bf16(A)·bf16(B): A, and B when g->b_f32, rounded to bf16 (nearest even) as
 * every ISA's gemm_bf16 rounds them; products and sums in fp32. */
void whet_gemm_bf16_scalar(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    (void)workspace;
    const float *Bf = g->B;
    const whet_bf16 *Bh = g->B;
    for (size_t i = m0; i < m1; i++)
        for (size_t j = n0; j < n1; j++) {
            float sum = 0;
            for (size_t k = 0; k < g->K; k++) {
                size_t b = b_index(g, k, j);
                sum += bf16_value(bf16_bits(a_at(g, i, k))) * bf16_value(g->b_f32 ? bf16_bits(Bf[b]) : Bh[b]);
            }
            float *c = &g->C[i * g->ldc + j];
            *c = g->accumulate ? *c + sum : sum;
        }
}
