/* AVX2 GEMM: the 6×16 micro-kernel of BLIS's haswell configuration (12 ymm
 * accumulators, 2 ymm of B and one broadcast of A per k step: 15 of the 16
 * registers) on the shared blocking of gemm_framework.h. gemm_bf16 rounds A (and
 * an fp32 B) to bf16 and widens both to fp32 while packing, then reuses the
 * fp32 kernel. Operands stored along k are transposed 8×8 in registers as they
 * are packed; the rest takes the generic packing. */
#include "gemm_framework.h"

#include <immintrin.h>

enum { MR = 6, NR = 16, MC = 144, KC = 256, NC = 3072 };

const whet_gemm_params whet_gemm_params_avx2 = {
    .workspace_bytes = GF_WORKSPACE_BYTES(MC, KC, NC, sizeof(float)), .tile_m = MR, .tile_n = NR};

static void kernel_f32(size_t kc, const void *ap, const void *bp, float *c, size_t ldc, size_t mr, size_t nr,
                       int add)
{
    const float *a = ap, *b = bp;
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++)
        acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (size_t k = 0; k < kc; k++, a += MR, b += NR) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            __m256 ar = _mm256_broadcast_ss(a + r);
            acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
        }
    }
    if (mr == MR && nr == NR) {
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            float *cr = c + r * ldc;
            if (add) {
                acc[r][0] = _mm256_add_ps(_mm256_loadu_ps(cr), acc[r][0]);
                acc[r][1] = _mm256_add_ps(_mm256_loadu_ps(cr + 8), acc[r][1]);
            }
            _mm256_storeu_ps(cr, acc[r][0]);
            _mm256_storeu_ps(cr + 8, acc[r][1]);
        }
        return;
    }
    float tile[MR * NR] __attribute__((aligned(32)));
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
        _mm256_store_ps(tile + r * NR, acc[r][0]);
        _mm256_store_ps(tile + r * NR + 8, acc[r][1]);
    }
    gf_store_edge(tile, NR, c, ldc, mr, nr, add);
}

/* 8 floats rounded to bf16 (nearest even, NaN kept quiet, as gf_to_bf16) and
 * widened back: what gemm_bf16's convert path multiplies. */
static inline __m256 round_bf16_avx2(__m256 x)
{
    __m256i u = _mm256_castps_si256(x);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i rounded = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb));
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    rounded = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(rounded),
                                                   _mm256_castsi256_ps(_mm256_or_si256(u, _mm256_set1_epi32(0x400000))),
                                                   nan));
    return _mm256_castsi256_ps(_mm256_and_si256(rounded, _mm256_set1_epi32((int)0xffff0000u)));
}

/* lanes [0, n) set */
static inline __m256i lane_mask(size_t n)
{
    static const int32_t ramp[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_loadu_si256((const __m256i *)ramp));
}

/* Packs `rows` (≤ 8) rows of floats, row i at src + i·ld, over [0, kc) into
 * dst[k·stride + i], lanes [0, width) (width ≤ 8; lanes from rows on zero): a
 * transpose, 8 k at a time, in registers. Prefetches the next panel (the
 * `width` rows after these) at the same k, a panel ahead of its use. */
static void pack_rows_avx2(float *dst, size_t stride, const float *src, size_t ld, size_t rows, size_t width,
                           size_t kc, int round_bf16)
{
    __m256i store = lane_mask(width);
    for (size_t k = 0; k < kc; k += 8) {
        size_t n = gf_min(8, kc - k);
        __m256i load = lane_mask(n);
        for (size_t i = width; i < 2 * width; i++)
            _mm_prefetch((const char *)(src + i * ld + k), _MM_HINT_T0);
        __m256 r[8];
        for (size_t i = 0; i < 8; i++) {
            r[i] = i < rows ? _mm256_maskload_ps(src + i * ld + k, load) : _mm256_setzero_ps();
            if (round_bf16)
                r[i] = round_bf16_avx2(r[i]);
        }
        __m256 t[8];
        for (size_t i = 0; i < 8; i += 2) {
            t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
        }
        for (size_t i = 0; i < 8; i += 4) { /* each 128-bit lane a 4×4 transposed block */
            r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
            r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
            r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
            r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
        }
        for (size_t j = 0; j < 4; j++) { /* column j (k + j) from the low lanes, k + 4 + j from the high */
            t[j] = _mm256_permute2f128_ps(r[j], r[j + 4], 0x20);
            t[j + 4] = _mm256_permute2f128_ps(r[j], r[j + 4], 0x31);
        }
        for (size_t j = 0; j < n; j++)
            _mm256_maskstore_ps(dst + (k + j) * stride, store, t[j]);
    }
}

/* A (fp32) into [k][6] panels: along k (NN/NT) transposed in registers; across
 * k (TN) a masked copy of each k row's 6 values, the next panel's fetched. */
static void pack_a_panels(float *dst, const whet_gemm *g, size_t i0, size_t rows, size_t k0, size_t kc, int round_bf16)
{
    for (size_t p = 0; p < rows; p += MR, dst += kc * MR) {
        size_t mr = gf_min(MR, rows - p);
        if (g->layout != WHET_GEMM_TN) {
            pack_rows_avx2(dst, MR, g->A + (i0 + p) * g->lda + k0, g->lda, mr, MR, kc, round_bf16);
            continue;
        }
        __m256i load = lane_mask(mr), store = lane_mask(MR);
        const float *src = g->A + k0 * g->lda + i0 + p;
        for (size_t k = 0; k < kc; k++, src += g->lda) {
            _mm_prefetch((const char *)(src + MR), _MM_HINT_T0);
            _mm_prefetch((const char *)(src + 2 * MR - 1), _MM_HINT_T0);
            __m256 v = _mm256_maskload_ps(src, load);
            _mm256_maskstore_ps(dst + k * MR, store, round_bf16 ? round_bf16_avx2(v) : v);
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

/* B into [k][16] panels, fp32 B (sgemm's, and gemm_bf16's b_f32 rounded):
 * NT rows transposed in registers, two halves of 8; NN/TN k rows copied 16 at
 * a time, the next panel's part fetched. bf16 B by the generic code. */
static void pack_b_panels(float *dst, const whet_gemm *g, size_t j0, size_t cols, size_t k0, size_t kc, int bf16)
{
    if (bf16 && !g->b_f32) {
        gf_pack_b_f32(dst, g, j0, cols, k0, kc, NR, bf16);
        return;
    }
    const float *B = g->B;
    for (size_t p = 0; p < cols; p += NR, dst += kc * NR) {
        size_t nr = gf_min(NR, cols - p);
        if (g->layout != WHET_GEMM_NT) {
            __m256i lo = lane_mask(gf_min(8, nr)), hi = lane_mask(nr > 8 ? nr - 8 : 0);
            const float *src = B + k0 * g->ldb + j0 + p;
            for (size_t k = 0; k < kc; k++, src += g->ldb) {
                _mm_prefetch((const char *)(src + NR), _MM_HINT_T0);
                _mm_prefetch((const char *)(src + 2 * NR - 1), _MM_HINT_T0);
                __m256 v0 = _mm256_maskload_ps(src, lo), v1 = _mm256_maskload_ps(src + 8, hi);
                if (bf16)
                    v0 = round_bf16_avx2(v0), v1 = round_bf16_avx2(v1);
                _mm256_store_ps(dst + k * NR, v0);
                _mm256_store_ps(dst + k * NR + 8, v1);
            }
            continue;
        }
        for (size_t half = 0; half < NR; half += 8) {
            size_t n = nr > half ? gf_min(8, nr - half) : 0;
            const float *src = n ? B + (j0 + p + half) * g->ldb + k0 : B;
            pack_rows_avx2(dst + half, NR, src, g->ldb, n, 8, kc, bf16);
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

void whet_sgemm_avx2(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    static const gf_plan plan = {kernel_f32, pack_a, pack_b, MR, NR, MC, KC, NC, 1, sizeof(float)};
    gf_gemm(&plan, g, m0, m1, n0, n1, workspace);
}

void whet_gemm_bf16_avx2(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    static const gf_plan plan = {kernel_f32, pack_a_rounded, pack_b_from_bf16, MR, NR, MC, KC, NC, 1, sizeof(float)};
    gf_gemm(&plan, g, m0, m1, n0, n1, workspace);
}
