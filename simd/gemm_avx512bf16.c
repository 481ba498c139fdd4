/* gemm_bf16 on AVX512_BF16: vdpbf16ps does two multiply-adds per fp32 lane, so
 * both operands are packed in k-pairs (the VNNI layout of gemm_framework.h)
 * and A is rounded to bf16 (nearest even) as it is packed. The 12×32 tile is
 * the fp32 kernel's: per k pair, 2 zmm of B, 12 32-bit broadcasts of A, 24
 * vdpbf16ps into 24 zmm accumulators. Every layout works: the layout only
 * changes how the packing reads A and B. */
#include "gemm_framework.h"

#include <immintrin.h>

enum { MR = 12, NR = 32, MC = GF_AVX512BF16_MC, KC = GF_AVX512BF16_KC, NC = GF_AVX512BF16_NC };

/* The avx512 table's workspace must hold this path's blocks too. */
_Static_assert(GF_WORKSPACE_BYTES(MC, KC, NC, sizeof(whet_bf16)) <= GF_AVX512_WORKSPACE_BYTES,
               "gemm_bf16_avx512bf16 blocks exceed the avx512 GEMM workspace");

static void kernel_pairs(size_t kc, const void *ap, const void *bp, float *c, size_t ldc, size_t mr, size_t nr,
                         int add)
{
    const uint32_t *a = ap;
    const __m512i *b = bp;
    __m512 acc[MR][2];
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++)
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (size_t q = 0; q < (kc + 1) / 2; q++, a += MR, b += 2) {
        __m512bh b0 = (__m512bh)_mm512_load_si512(b), b1 = (__m512bh)_mm512_load_si512(b + 1);
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            __m512bh ar = (__m512bh)_mm512_set1_epi32((int)a[r]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], ar, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], ar, b1);
        }
    }
    if (mr == MR && nr == NR) {
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            float *cr = c + r * ldc;
            if (add) {
                acc[r][0] = _mm512_add_ps(_mm512_loadu_ps(cr), acc[r][0]);
                acc[r][1] = _mm512_add_ps(_mm512_loadu_ps(cr + 16), acc[r][1]);
            }
            _mm512_storeu_ps(cr, acc[r][0]);
            _mm512_storeu_ps(cr + 16, acc[r][1]);
        }
        return;
    }
    float tile[MR * NR] __attribute__((aligned(64)));
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
        _mm512_store_ps(tile + r * NR, acc[r][0]);
        _mm512_store_ps(tile + r * NR + 16, acc[r][1]);
    }
    gf_store_edge(tile, NR, c, ldc, mr, nr, add);
}

/* 32 floats of k → 16 words of (k, k+1) bf16 pairs, rounded to nearest even. */
static inline __m512i round_pairs(const float *src)
{
    __m512 lo = _mm512_loadu_ps(src), hi = _mm512_loadu_ps(src + 16);
    /* cvtne2ps puts its second operand in the low 16 bf16, as the k order needs */
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* A (fp32) rounded to bf16 pairs in [k/2][MR] panels. For NN/NT a row of A
 * runs along k: 32 k of each of the panel's rows are rounded into 16 words,
 * then transposed into 16 panel rows. TN and the k tail take the generic path
 * (its rounding is the same, nearest even). */
static void pack_a(void *dst, const whet_gemm *g, size_t i0, size_t rows, size_t k0, size_t kc)
{
    if (g->layout == WHET_GEMM_TN || kc < 32) {
        gf_pack_a_pairs(dst, g, i0, rows, k0, kc, MR);
        return;
    }
    size_t kp = (kc + 1) / 2;
    uint32_t *panel = dst;
    for (size_t p = 0; p < rows; p += MR, panel += kp * MR) {
        size_t mr = gf_min(MR, rows - p);
        const float *src = g->A + (i0 + p) * g->lda + k0;
        size_t k = 0;
        for (; k + 32 <= kc; k += 32) {
            __m512 words[16];
            for (size_t r = 0; r < 16; r++)
                words[r] = r < mr ? _mm512_castsi512_ps(round_pairs(src + r * g->lda + k)) : _mm512_setzero_ps();
            gf_transpose16_avx512(words);
            for (size_t q = 0; q < 16; q++)
                _mm512_mask_storeu_ps(panel + (k / 2 + q) * MR, (1u << MR) - 1, words[q]);
        }
        for (size_t r = 0; r < MR; r++)
            for (size_t kk = k; kk < kc; kk += 2) {
                uint32_t word = 0;
                if (r < mr)
                    word = gf_to_bf16(src[r * g->lda + kk]) |
                           (kk + 1 < kc ? gf_to_bf16(src[r * g->lda + kk + 1]) << 16 : 0);
                panel[kk / 2 * MR + r] = word;
            }
    }
}

/* B (bf16) k-pairs into [k/2][32] panels. In NT each row of B is one panel
 * column with its pairs adjacent: a 16×16 transpose of 32-bit words; an odd k
 * tail is a half word, filled in alone. */
static void pack_b(void *dst, const whet_gemm *g, size_t j0, size_t cols, size_t k0, size_t kc)
{
    if (g->layout != WHET_GEMM_NT || g->b_f32) {
        gf_pack_b_pairs(dst, g, j0, cols, k0, kc, NR);
        return;
    }
    const whet_bf16 *B = g->B;
    size_t kp = (kc + 1) / 2;
    uint32_t *panel = dst;
    for (size_t p = 0; p < cols; p += NR, panel += kp * NR) {
        size_t nr = gf_min(NR, cols - p);
        for (size_t half = 0; half < NR; half += 16) {
            size_t n = nr > half ? gf_min(16, nr - half) : 0;
            const whet_bf16 *src = n ? B + (j0 + p + half) * g->ldb + k0 : B;
            gf_pack_rows_avx512(panel + half, NR, src, g->ldb * sizeof(whet_bf16), n, 16, kc / 2, 0);
            if (kc & 1)
                for (size_t c = 0; c < 16; c++)
                    panel[(kp - 1) * NR + half + c] = c < n ? src[c * g->ldb + kc - 1] : 0;
        }
    }
}

void whet_gemm_bf16_avx512bf16(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    static const gf_plan plan = {kernel_pairs, pack_a, pack_b, MR, NR, MC, KC, NC, 2, sizeof(whet_bf16)};
    gf_gemm(&plan, g, m0, m1, n0, n1, workspace);
}
