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

/* ---- packing: every operand rounded and paired in registers ----------------
 * An operand stored along k (A in NN/NT, B in NT) has each pair adjacent: 32
 * floats of a row round into 16 words, and 16 rows of words are transposed
 * into 16 panel rows. An operand stored across k (A in TN, B in NN/TN) has a
 * pair in two consecutive rows: 16 floats of row k and 16 of row k+1 round
 * into one vector of 32 bf16 that a permute interleaves into 16 words.
 * vcvtne2ps2bf16 rounds to nearest even as gf_to_bf16 does; it flushes
 * denormals to zero, which vdpbf16ps would do with them anyway. */

/* The vpermw order that turns [lo0..lo15, hi0..hi15] into words (lo_i, hi_i). */
static inline __m512i pair_order(void)
{
    return _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
                            19, 3, 18, 2, 17, 1, 16, 0);
}

/* 16 floats of k (lo) and 16 of k+1 (hi) → 16 words (bf16 lo_i | bf16 hi_i << 16). */
static inline __m512i round_interleave(__m512 lo, __m512 hi, __m512i order)
{
    /* cvtne2ps puts its second operand in the low 16 bf16 */
    return _mm512_permutexvar_epi16(order, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

/* `rows` (≤ 16) fp32 rows along k, row r at src + r·ld, over [0, kc) into
 * words dst[q·stride + r]: 32 k of each row rounded into 16 words, transposed.
 * Lanes [rows, width) are zero-filled, lanes from width (≤ 16) on untouched;
 * an odd kc leaves the last word's high half zero. */
static void pack_rows_f32_pairs(uint32_t *dst, size_t stride, const float *src, size_t ld, size_t rows,
                                size_t width, size_t kc)
{
    __mmask16 store = (__mmask16)((1u << width) - 1);
    for (size_t k = 0; k < kc; k += 32) {
        size_t n = gf_min(32, kc - k);
        __mmask16 lo = (__mmask16)(n >= 16 ? 0xffffu : (1u << n) - 1);
        __mmask16 hi = (__mmask16)(n >= 32 ? 0xffffu : n > 16 ? (1u << (n - 16)) - 1 : 0);
        if (k + 64 < kc) /* 16 rows far apart are more streams than the prefetcher follows */
            for (size_t r = 0; r < rows; r++)
                _mm_prefetch((const char *)(src + r * ld + k + 64), _MM_HINT_T0);
        /* and the next panel's rows at this k, a panel ahead (as gf_pack_rows_avx512) */
        for (size_t r = width; r < 2 * width; r++) {
            _mm_prefetch((const char *)(src + r * ld + k), _MM_HINT_T0);
            _mm_prefetch((const char *)(src + r * ld + k + 16), _MM_HINT_T0);
        }
        __m512 words[16];
        for (size_t r = 0; r < 16; r++)
            words[r] = r < rows ? _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(
                                      _mm512_maskz_loadu_ps(hi, src + r * ld + k + 16),
                                      _mm512_maskz_loadu_ps(lo, src + r * ld + k)))
                                : _mm512_setzero_ps();
        gf_transpose16_avx512(words);
        for (size_t q = 0; q < (n + 1) / 2; q++)
            _mm512_mask_storeu_ps(dst + (k / 2 + q) * stride, store, words[q]);
    }
}

/* fp32 stored across k: row k at src + k·ld holds `cols` (≤ 16) consecutive
 * columns; rows (k, k+1) into words dst[q·stride + c] for c < 16, zero from
 * cols on; an odd kc pairs the last row with zero. */
static void pack_cols_f32_pairs(uint32_t *dst, size_t stride, const float *src, size_t ld, size_t cols, size_t kc,
                                __m512i order)
{
    __mmask16 load = (__mmask16)((1u << cols) - 1);
    size_t q = 0;
    for (; 2 * q + 1 < kc; q++, src += 2 * ld) {
        /* each k is a row of its own: fetch the next 16 columns' part of it now */
        _mm_prefetch((const char *)(src + 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(src + ld + 16), _MM_HINT_T0);
        _mm512_storeu_si512(dst + q * stride, round_interleave(_mm512_maskz_loadu_ps(load, src),
                                                               _mm512_maskz_loadu_ps(load, src + ld), order));
    }
    if (kc & 1)
        _mm512_storeu_si512(dst + q * stride,
                            round_interleave(_mm512_maskz_loadu_ps(load, src), _mm512_setzero_ps(), order));
}

/* bf16 stored across k, as pack_cols_f32_pairs: the pair is widened to 32 bits. */
static void pack_cols_bf16_pairs(uint32_t *dst, size_t stride, const whet_bf16 *src, size_t ld, size_t cols,
                                 size_t kc)
{
    __mmask16 load = (__mmask16)((1u << cols) - 1);
    size_t q = 0;
    for (; 2 * q + 1 < kc; q++, src += 2 * ld) {
        _mm_prefetch((const char *)(src + 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(src + ld + 16), _MM_HINT_T0);
        __m512i lo = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(load, src));
        __m512i hi = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(load, src + ld));
        _mm512_storeu_si512(dst + q * stride, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
    if (kc & 1)
        _mm512_storeu_si512(dst + q * stride, _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(load, src)));
}

/* A (fp32) rounded to bf16 pairs in [k/2][MR] panels: along k in NN/NT, across
 * k in TN (the weight gradient's dYᵀ). */
static void pack_a(void *dst, const whet_gemm *g, size_t i0, size_t rows, size_t k0, size_t kc)
{
    size_t kp = (kc + 1) / 2;
    uint32_t *panel = dst;
    __m512i order = pair_order();
    for (size_t p = 0; p < rows; p += MR, panel += kp * MR) {
        size_t mr = gf_min(MR, rows - p);
        if (g->layout == WHET_GEMM_TN) {
            const float *src = g->A + k0 * g->lda + i0 + p;
            __mmask16 load = (__mmask16)((1u << mr) - 1), store = (__mmask16)((1u << MR) - 1);
            size_t q = 0;
            for (; 2 * q + 1 < kc; q++, src += 2 * g->lda) {
                _mm_prefetch((const char *)(src + MR), _MM_HINT_T0); /* the next panel's part of these rows */
                _mm_prefetch((const char *)(src + g->lda + MR), _MM_HINT_T0);
                _mm512_mask_storeu_epi32(panel + q * MR, store,
                                         round_interleave(_mm512_maskz_loadu_ps(load, src),
                                                          _mm512_maskz_loadu_ps(load, src + g->lda), order));
            }
            if (kc & 1)
                _mm512_mask_storeu_epi32(panel + q * MR, store,
                                         round_interleave(_mm512_maskz_loadu_ps(load, src), _mm512_setzero_ps(),
                                                          order));
        } else {
            pack_rows_f32_pairs(panel, MR, g->A + (i0 + p) * g->lda + k0, g->lda, mr, MR, kc);
        }
    }
}

/* B k-pairs into [k/2][32] panels, each panel two halves of 16 columns. In NT
 * each row of B is one panel column with its pairs adjacent: bf16 words are
 * transposed 16×16 as they are (an odd k tail is a half word, filled in
 * alone), fp32 rows rounded first. In NN/TN a pair is two rows of B. */
static void pack_b(void *dst, const whet_gemm *g, size_t j0, size_t cols, size_t k0, size_t kc)
{
    const whet_bf16 *Bh = g->B;
    const float *Bf = g->B;
    size_t kp = (kc + 1) / 2;
    uint32_t *panel = dst;
    __m512i order = pair_order();
    for (size_t p = 0; p < cols; p += NR, panel += kp * NR) {
        size_t nr = gf_min(NR, cols - p);
        for (size_t half = 0; half < NR; half += 16) {
            size_t n = nr > half ? gf_min(16, nr - half) : 0;
            size_t j = n ? j0 + p + half : 0; /* n = 0: nothing is read */
            if (g->layout != WHET_GEMM_NT) {
                if (g->b_f32)
                    pack_cols_f32_pairs(panel + half, NR, Bf + k0 * g->ldb + j, g->ldb, n, kc, order);
                else
                    pack_cols_bf16_pairs(panel + half, NR, Bh + k0 * g->ldb + j, g->ldb, n, kc);
            } else if (g->b_f32) {
                pack_rows_f32_pairs(panel + half, NR, Bf + j * g->ldb + k0, g->ldb, n, 16, kc);
            } else {
                const whet_bf16 *src = Bh + j * g->ldb + k0;
                gf_pack_rows_avx512(panel + half, NR, src, g->ldb * sizeof(whet_bf16), n, 16, kc / 2, 0);
                if (kc & 1)
                    for (size_t c = 0; c < 16; c++)
                        panel[(kp - 1) * NR + half + c] = c < n ? src[c * g->ldb + kc - 1] : 0;
            }
        }
    }
}

void whet_gemm_bf16_avx512bf16(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    static const gf_plan plan = {kernel_pairs, pack_a, pack_b, MR, NR, MC, KC, NC, 2, sizeof(whet_bf16)};
    gf_gemm(&plan, g, m0, m1, n0, n1, workspace);
}
