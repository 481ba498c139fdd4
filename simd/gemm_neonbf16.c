/* gemm_bf16 on FEAT_BF16: BFDOT by element does two multiply-adds per fp32
 * lane with one k-pair of A picked by lane, so both operands are packed in
 * k-pairs (gemm_framework.h) and A is rounded to bf16 as it is packed. The
 * 8×12 tile is the fp32 kernel's: per k pair, 3 vectors of B (4 columns × 2 k
 * each), 2 of A (4 rows × 2 k each), 24 BFDOT into 24 accumulators. Any layout
 * and either B (whet_bf16, or fp32 rounded as packed) works: only the packing
 * reads A and B differently. */
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

/* ---- packing in registers ------------------------------------------------
 * Full panels are packed with vector loads; a ragged last panel takes the
 * generic path. fp32 values round with BFCVT(N) (nearest even under the
 * default FPCR, as gf_to_bf16). An operand stored across k (A in TN, B in
 * NN/TN) has a pair in two rows: 4 values of row k and 4 of row k+1 zip into
 * 4 words. One stored along k (A in NN/NT, B in NT) has a pair adjacent: 8 k
 * of a row make 4 words, and 4 rows of them are transposed 4×4. */

static inline uint16x4_t round4(const float *src)
{
    return vreinterpret_u16_bf16(vcvt_bf16_f32(vld1q_f32(src)));
}

static inline uint32x4_t zip_pairs(uint16x4_t lo, uint16x4_t hi)
{
    return vreinterpretq_u32_u16(vcombine_u16(vzip1_u16(lo, hi), vzip2_u16(lo, hi)));
}

/* One full panel stored across k: row k at src + k·ld (floats when f32, else
 * whet_bf16) holds the panel's `width` values (a multiple of 4). */
static void pack_across(uint32_t *dst, size_t width, const void *src, size_t ld, int f32, size_t kc)
{
    const float *f = src;
    const uint16_t *h = src;
    for (size_t q = 0; q < (kc + 1) / 2; q++) {
        size_t lo = 2 * q * ld, hi = lo + ld;
        int has_hi = 2 * q + 1 < kc;
        for (size_t c = 0; c < width; c += 4) {
            uint16x4_t l = f32 ? round4(f + lo + c) : vld1_u16(h + lo + c);
            uint16x4_t u = !has_hi ? vdup_n_u16(0) : f32 ? round4(f + hi + c) : vld1_u16(h + hi + c);
            vst1q_u32(dst + q * width + c, zip_pairs(l, u));
        }
    }
}

/* One full panel stored along k: `width` rows (a multiple of 4), row r at
 * src + r·ld, floats when f32, else whet_bf16. */
static void pack_along(uint32_t *dst, size_t width, const void *src, size_t ld, int f32, size_t kc)
{
    const float *f = src;
    const uint16_t *h = src;
    size_t k = 0;
    for (; k + 8 <= kc; k += 8)
        for (size_t r = 0; r < width; r += 4) {
            uint32x4_t w[4]; /* w[t]: words k/2 .. k/2+3 of row r+t */
            for (size_t t = 0; t < 4; t++) {
                size_t at = (r + t) * ld + k;
                w[t] = f32 ? vreinterpretq_u32_bf16(
                                 vcvtq_high_bf16_f32(vcvtq_low_bf16_f32(vld1q_f32(f + at)), vld1q_f32(f + at + 4)))
                           : vreinterpretq_u32_u16(vld1q_u16(h + at));
            }
            uint32x4_t t0 = vtrn1q_u32(w[0], w[1]), t1 = vtrn2q_u32(w[0], w[1]);
            uint32x4_t t2 = vtrn1q_u32(w[2], w[3]), t3 = vtrn2q_u32(w[2], w[3]);
            uint32_t *d = dst + k / 2 * width + r;
            vst1q_u32(d, vreinterpretq_u32_u64(vtrn1q_u64(vreinterpretq_u64_u32(t0), vreinterpretq_u64_u32(t2))));
            vst1q_u32(d + width,
                      vreinterpretq_u32_u64(vtrn1q_u64(vreinterpretq_u64_u32(t1), vreinterpretq_u64_u32(t3))));
            vst1q_u32(d + 2 * width,
                      vreinterpretq_u32_u64(vtrn2q_u64(vreinterpretq_u64_u32(t0), vreinterpretq_u64_u32(t2))));
            vst1q_u32(d + 3 * width,
                      vreinterpretq_u32_u64(vtrn2q_u64(vreinterpretq_u64_u32(t1), vreinterpretq_u64_u32(t3))));
        }
    for (size_t r = 0; r < width; r++)
        for (size_t kk = k; kk < kc; kk += 2) {
            size_t at = r * ld + kk;
            uint32_t lo = f32 ? gf_to_bf16(f[at]) : h[at];
            uint32_t hi = kk + 1 >= kc ? 0 : f32 ? gf_to_bf16(f[at + 1]) : h[at + 1];
            dst[kk / 2 * width + r] = lo | hi << 16;
        }
}

static void pack_a(void *dst, const whet_gemm *g, size_t i0, size_t rows, size_t k0, size_t kc)
{
    uint32_t *panel = dst;
    for (size_t p = 0; p < rows; p += MR, panel += (kc + 1) / 2 * MR) {
        if (rows - p < MR)
            gf_pack_a_pairs(panel, g, i0 + p, rows - p, k0, kc, MR);
        else if (g->layout == WHET_GEMM_TN)
            pack_across(panel, MR, g->A + k0 * g->lda + i0 + p, g->lda, 1, kc);
        else
            pack_along(panel, MR, g->A + (i0 + p) * g->lda + k0, g->lda, 1, kc);
    }
}

static void pack_b(void *dst, const whet_gemm *g, size_t j0, size_t cols, size_t k0, size_t kc)
{
    uint32_t *panel = dst;
    size_t size = g->b_f32 ? sizeof(float) : sizeof(whet_bf16);
    const char *B = g->B;
    for (size_t p = 0; p < cols; p += NR, panel += (kc + 1) / 2 * NR) {
        if (cols - p < NR)
            gf_pack_b_pairs(panel, g, j0 + p, cols - p, k0, kc, NR);
        else if (g->layout == WHET_GEMM_NT)
            pack_along(panel, NR, B + ((j0 + p) * g->ldb + k0) * size, g->ldb, g->b_f32, kc);
        else
            pack_across(panel, NR, B + (k0 * g->ldb + j0 + p) * size, g->ldb, g->b_f32, kc);
    }
}

void whet_gemm_bf16_neonbf16(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    static const gf_plan plan = {kernel_pairs, pack_a, pack_b, MR, NR, MC, KC, NC, 2, sizeof(whet_bf16)};
    gf_gemm(&plan, g, m0, m1, n0, n1, workspace);
}
