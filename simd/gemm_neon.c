/* NEON GEMM: an 8×12 micro-kernel (24 accumulators of 4 floats, 3 vectors of
 * B and 2 of A per k step: 29 of the 32 registers) on the shared blocking of
 * gemm_framework.h. A's 8 values per k are loaded as two vectors and used by
 * lane (FMLA by element), so no broadcasts are spent. gemm_bf16 without
 * FEAT_BF16 rounds A (and an fp32 B) to bf16 and widens both to fp32 while
 * packing, then reuses the fp32 kernel. */
#include "gemm_framework.h"

#include <arm_neon.h>

enum { MR = 8, NR = 12, MC = 128, KC = 256, NC = 3072 };

const whet_gemm_params whet_gemm_params_neon = {
    .workspace_bytes = GF_WORKSPACE_BYTES(MC, KC, NC, sizeof(float)), .tile_m = MR, .tile_n = NR};

/* acc[r][v] += a[r] · b[v], r in 0..3 of one A vector (lanes need constants) */
#define NEON_FMA_ROWS(base, av)                                                                    \
    for (int v = 0; v < 3; v++) {                                                                  \
        acc[(base) + 0][v] = vfmaq_laneq_f32(acc[(base) + 0][v], bv[v], av, 0);                   \
        acc[(base) + 1][v] = vfmaq_laneq_f32(acc[(base) + 1][v], bv[v], av, 1);                   \
        acc[(base) + 2][v] = vfmaq_laneq_f32(acc[(base) + 2][v], bv[v], av, 2);                   \
        acc[(base) + 3][v] = vfmaq_laneq_f32(acc[(base) + 3][v], bv[v], av, 3);                   \
    }

static void kernel_f32(size_t kc, const void *ap, const void *bp, float *c, size_t ldc, size_t mr, size_t nr,
                       int add)
{
    const float *a = ap, *b = bp;
    float32x4_t acc[MR][3];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
        acc[r][0] = acc[r][1] = acc[r][2] = vdupq_n_f32(0);
    for (size_t k = 0; k < kc; k++, a += MR, b += NR) {
        float32x4_t bv[3] = {vld1q_f32(b), vld1q_f32(b + 4), vld1q_f32(b + 8)};
        float32x4_t a0 = vld1q_f32(a), a1 = vld1q_f32(a + 4);
#pragma GCC unroll 3
        NEON_FMA_ROWS(0, a0)
#pragma GCC unroll 3
        NEON_FMA_ROWS(4, a1)
    }
    if (mr == MR && nr == NR) {
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            float *cr = c + r * ldc;
#pragma GCC unroll 3
            for (int v = 0; v < 3; v++)
                vst1q_f32(cr + 4 * v, add ? vaddq_f32(vld1q_f32(cr + 4 * v), acc[r][v]) : acc[r][v]);
        }
        return;
    }
    float tile[MR * NR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
        for (int v = 0; v < 3; v++)
            vst1q_f32(tile + r * NR + 4 * v, acc[r][v]);
    gf_store_edge(tile, NR, c, ldc, mr, nr, add);
}

static void pack_a(void *dst, const whet_gemm *g, size_t i0, size_t rows, size_t k0, size_t kc)
{
    gf_pack_a_f32(dst, g, i0, rows, k0, kc, MR, 0);
}

static void pack_a_rounded(void *dst, const whet_gemm *g, size_t i0, size_t rows, size_t k0, size_t kc)
{
    gf_pack_a_f32(dst, g, i0, rows, k0, kc, MR, 1);
}

static void pack_b(void *dst, const whet_gemm *g, size_t j0, size_t cols, size_t k0, size_t kc)
{
    gf_pack_b_f32(dst, g, j0, cols, k0, kc, NR, 0);
}

static void pack_b_from_bf16(void *dst, const whet_gemm *g, size_t j0, size_t cols, size_t k0, size_t kc)
{
    gf_pack_b_f32(dst, g, j0, cols, k0, kc, NR, 1);
}

void whet_sgemm_neon(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    static const gf_plan plan = {kernel_f32, pack_a, pack_b, MR, NR, MC, KC, NC, 1, sizeof(float)};
    gf_gemm(&plan, g, m0, m1, n0, n1, workspace);
}

void whet_gemm_bf16_neon(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    static const gf_plan plan = {kernel_f32, pack_a_rounded, pack_b_from_bf16, MR, NR, MC, KC, NC, 1, sizeof(float)};
    gf_gemm(&plan, g, m0, m1, n0, n1, workspace);
}
