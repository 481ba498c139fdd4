/* gemm_bf16 on FEAT_BF16: BFDOT by element does two multiply-adds per fp32
 * lane with one k-pair of A picked by lane, so both operands are packed in
 * k-pairs (gemm_framework.h) and A is rounded to bf16 as it is packed. The
 * 8×12 tile is the fp32 kernel's: per k pair, 3 vectors of B (4 columns × 2 k
 * each), 2 of A (4 rows × 2 k each), 24 BFDOT into 24 accumulators. Any layout
 * works: only the packing reads A and B differently. */
#include "gemm_framework.h"

#include <arm_neon.h>

enum { MR = 8, NR = 12, MC = 128, KC = 512, NC = 3072 };

/* The neon table's workspace (fp32 blocks 128×256 and 256×3072) must hold these. */
_Static_assert(GF_WORKSPACE_BYTES(MC, KC, NC, sizeof(whet_bf16)) <=
                   GF_WORKSPACE_BYTES(128, 256, 3072, sizeof(float)),
               "gemm_bf16_neonbf16 blocks exceed the neon GEMM workspace");

#define BFDOT_ROWS(base, av)                                                                       \
    for (int v = 0; v < 3; v++) {                                                                  \
        acc[(base) + 0][v] = vbfdotq_laneq_f32(acc[(base) + 0][v], bv[v], av, 0);                 \
        acc[(base) + 1][v] = vbfdotq_laneq_f32(acc[(base) + 1][v], bv[v], av, 1);                 \
        acc[(base) + 2][v] = vbfdotq_laneq_f32(acc[(base) + 2][v], bv[v], av, 2);                 \
        acc[(base) + 3][v] = vbfdotq_laneq_f32(acc[(base) + 3][v], bv[v], av, 3);                 \
    }

static void kernel_pairs(size_t kc, const void *ap, const void *bp, float *c, size_t ldc, size_t mr, size_t nr,
                         int add)
{
    const uint32_t *a = ap, *b = bp;
    float32x4_t acc[MR][3];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
        acc[r][0] = acc[r][1] = acc[r][2] = vdupq_n_f32(0);
    for (size_t q = 0; q < (kc + 1) / 2; q++, a += MR, b += NR) {
        bfloat16x8_t bv[3] = {vreinterpretq_bf16_u32(vld1q_u32(b)), vreinterpretq_bf16_u32(vld1q_u32(b + 4)),
                              vreinterpretq_bf16_u32(vld1q_u32(b + 8))};
        bfloat16x8_t a0 = vreinterpretq_bf16_u32(vld1q_u32(a)), a1 = vreinterpretq_bf16_u32(vld1q_u32(a + 4));
#pragma GCC unroll 3
        BFDOT_ROWS(0, a0)
#pragma GCC unroll 3
        BFDOT_ROWS(4, a1)
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
    gf_pack_a_pairs(dst, g, i0, rows, k0, kc, MR);
}

static void pack_b(void *dst, const whet_gemm *g, size_t j0, size_t cols, size_t k0, size_t kc)
{
    gf_pack_b_pairs(dst, g, j0, cols, k0, kc, NR);
}

void whet_gemm_bf16_neonbf16(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    static const gf_plan plan = {kernel_pairs, pack_a, pack_b, MR, NR, MC, KC, NC, 2, sizeof(whet_bf16)};
    gf_gemm(&plan, g, m0, m1, n0, n1, workspace);
}
