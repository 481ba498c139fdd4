/* AVX-512 GEMM: a 12×32 micro-kernel (24 zmm accumulators, 2 zmm of B and one
 * broadcast of A per k step, 31 of the 32 registers in use at most) on the
 * shared blocking of gemm_framework.h. The tile puts vectors along the columns
 * of row-major C, so a tile row is two full-width stores. gemm_bf16 without
 * AVX512_BF16 rounds A (and an fp32 B) to bf16 and widens both to fp32 while
 * packing, then reuses the same kernel. */
#include "gemm_framework.h"

#include <immintrin.h>

enum { MR = 12, NR = 32, MC = GF_AVX512_MC, KC = GF_AVX512_KC, NC = GF_AVX512_NC };

const whet_gemm_params whet_gemm_params_avx512 = {
    .workspace_bytes = GF_AVX512_WORKSPACE_BYTES, .tile_m = MR, .tile_n = NR};

static void kernel_f32(size_t kc, const void *ap, const void *bp, float *c, size_t ldc, size_t mr, size_t nr,
                       int add)
{
    const float *a = ap, *b = bp;
    __m512 acc[MR][2];
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++)
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (size_t k = 0; k < kc; k++, a += MR, b += NR) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            __m512 ar = _mm512_set1_ps(a[r]);
            acc[r][0] = _mm512_fmadd_ps(ar, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(ar, b1, acc[r][1]);
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

/* A (fp32) into [k][12] panels, rounded to bf16 when round_bf16 (gemm_bf16):
 * NN/NT rows run along k and are transposed 16 k at a time; TN rows of A
 * already hold the panel's 12 values per k. */
static inline void pack_a_panels(float *panel, const whet_gemm *g, size_t i0, size_t rows, size_t k0, size_t kc,
                                 int round_bf16)
{
    for (size_t p = 0; p < rows; p += MR, panel += kc * MR) {
        size_t mr = gf_min(MR, rows - p);
        if (g->layout == WHET_GEMM_TN) {
            __mmask16 load = (__mmask16)((1u << mr) - 1);
            const float *src = g->A + k0 * g->lda + i0 + p;
            for (size_t k = 0; k < kc; k++, src += g->lda) {
                /* every k is a row of its own: fetch the next panel's part of it now (gf_pack_rows_avx512) */
                _mm_prefetch((const char *)(src + MR), _MM_HINT_T0);
                _mm_prefetch((const char *)(src + 2 * MR - 1), _MM_HINT_T0);
                __m512 v = _mm512_maskz_loadu_ps(load, src);
                _mm512_mask_storeu_ps(panel + k * MR, (1u << MR) - 1, round_bf16 ? gf_round_bf16_avx512(v) : v);
            }
        } else {
            gf_pack_rows_avx512(panel, MR, g->A + (i0 + p) * g->lda + k0, g->lda * sizeof(float), mr, MR, kc,
                                round_bf16);
        }
    }
}

static void pack_a(void *dst, const whet_gemm *g, size_t i0, size_t rows, size_t k0, size_t kc)
{
    pack_a_panels(dst, g, i0, rows, k0, kc, 0);
}

static void pack_a_rounded(void *dst, const whet_gemm *g, size_t i0, size_t rows, size_t k0, size_t kc)
{
    pack_a_panels(dst, g, i0, rows, k0, kc, 1);
}

/* B into [k][32] panels of floats: sgemm's fp32 B as it is; gemm_bf16's B
 * (bf16 is set) widened from whet_bf16, or rounded to bf16 when g->b_f32. NT
 * rows of B are the panel's columns, transposed 16×16 at a time (bf16 NT B
 * takes the generic path); NN/TN rows of B give 32 columns at a time. */
static inline void pack_b_panels(float *panel, const whet_gemm *g, size_t j0, size_t cols, size_t k0, size_t kc,
                                 int bf16)
{
    if (bf16 && !g->b_f32 && g->layout == WHET_GEMM_NT) {
        gf_pack_b_f32(panel, g, j0, cols, k0, kc, NR, 1);
        return;
    }
    int round_bf16 = bf16; /* past the return above, a bf16 call's B is fp32 but in NN/TN whet_bf16 */
    for (size_t p = 0; p < cols; p += NR, panel += kc * NR) {
        size_t nr = gf_min(NR, cols - p);
        if (g->layout == WHET_GEMM_NT) {
            const float *B = g->B;
            for (size_t half = 0; half < NR; half += 16) {
                size_t n = nr > half ? gf_min(16, nr - half) : 0;
                const float *src = n ? B + (j0 + p + half) * g->ldb + k0 : B;
                gf_pack_rows_avx512(panel + half, NR, src, g->ldb * sizeof(float), n, 16, kc, round_bf16);
            }
            continue;
        }
        __mmask16 lo = (__mmask16)((1u << gf_min(16, nr)) - 1);
        __mmask16 hi = (__mmask16)((1u << (nr > 16 ? nr - 16 : 0)) - 1);
        if (bf16 && !g->b_f32) {
            const whet_bf16 *src = (const whet_bf16 *)g->B + k0 * g->ldb + j0 + p;
            for (size_t k = 0; k < kc; k++, src += g->ldb) {
                _mm_prefetch((const char *)(src + NR), _MM_HINT_T0);
                for (size_t half = 0; half < 2; half++) {
                    __m256i h = _mm256_maskz_loadu_epi16(half ? hi : lo, src + 16 * half);
                    _mm512_store_si512(panel + k * NR + 16 * half, _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
                }
            }
        } else {
            const float *src = (const float *)g->B + k0 * g->ldb + j0 + p;
            for (size_t k = 0; k < kc; k++, src += g->ldb) {
                /* every k is a row of its own: fetch the next panel's part of it now (gf_pack_rows_avx512) */
                _mm_prefetch((const char *)(src + NR), _MM_HINT_T0);
                _mm_prefetch((const char *)(src + NR + 16), _MM_HINT_T0);
                __m512 v0 = _mm512_maskz_loadu_ps(lo, src), v1 = _mm512_maskz_loadu_ps(hi, src + 16);
                if (round_bf16)
                    v0 = gf_round_bf16_avx512(v0), v1 = gf_round_bf16_avx512(v1);
                _mm512_store_ps(panel + k * NR, v0);
                _mm512_store_ps(panel + k * NR + 16, v1);
            }
        }
    }
}

static void pack_b(void *dst, const whet_gemm *g, size_t j0, size_t cols, size_t k0, size_t kc)
{
    pack_b_panels(dst, g, j0, cols, k0, kc, 0);
}

static void pack_b_from_bf16(void *dst, const whet_gemm *g, size_t j0, size_t cols, size_t k0, size_t kc)
{
    pack_b_panels(dst, g, j0, cols, k0, kc, 1);
}

void whet_sgemm_avx512(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    static const gf_plan plan = {kernel_f32, pack_a, pack_b, MR, NR, MC, KC, NC, 1, sizeof(float)};
    gf_gemm(&plan, g, m0, m1, n0, n1, workspace);
}

void whet_gemm_bf16_avx512(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    static const gf_plan plan = {kernel_f32, pack_a_rounded, pack_b_from_bf16, MR, NR, MC, KC, NC, 1, sizeof(float)};
    gf_gemm(&plan, g, m0, m1, n0, n1, workspace);
}
