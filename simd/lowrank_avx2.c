/* LoRA's rank-r products on AVX2 + FMA, in the order simd/lowrank_scalar.c
 * fixes (so with its bits); no packing, as in simd/lowrank_avx512.c.
 *
 * project: one row × 4 outputs at a time, each output's 16 partial sums in two
 * ymm (lanes 0–7 and 8–15): 8 accumulators fed by 2 loads of x and 8 of w per
 * 16 k. weight_grad: 4 rows of dw × 24 columns, 12 accumulators fed by 3
 * loads of x and 4 broadcasts of g per row of x. */
#include "isa_kernels.h"

#include <immintrin.h>

enum { W = 8, OUTS = 4, GRAD_VECTORS = 3 };

/* all-ones in the first n (≤ 8) lanes: the mask of _mm256_maskload_ps */
static inline __m256i first_lanes(size_t n)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < W ? n : W)), lane);
}

/* The sums of 4 outputs' 16 partials (lo: lanes 0–7, hi: lanes 8–15) in the
 * contract's order: l + l+8, then l+4, l+2, l+1. Output j is lane j. */
static inline __m128 sum_partials4(const __m256 lo[OUTS], const __m256 hi[OUTS])
{
    __m256 s[OUTS];
#pragma GCC unroll 8
    for (int j = 0; j < OUTS; j++)
        s[j] = _mm256_add_ps(lo[j], hi[j]);
    /* [s0(l)+s0(l+4) | s1(l)+s1(l+4)], l < 4, and the same for s2, s3 */
    __m256 u01 = _mm256_add_ps(_mm256_permute2f128_ps(s[0], s[1], 0x20), _mm256_permute2f128_ps(s[0], s[1], 0x31));
    __m256 u23 = _mm256_add_ps(_mm256_permute2f128_ps(s[2], s[3], 0x20), _mm256_permute2f128_ps(s[2], s[3], 0x31));
    /* half 0: [s0(0)+s0(2), s0(1)+s0(3), s2(0)+s2(2), s2(1)+s2(3)]; half 1 the same for s1, s3 */
    __m256 w = _mm256_add_ps(_mm256_shuffle_ps(u01, u23, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm256_shuffle_ps(u01, u23, _MM_SHUFFLE(3, 2, 3, 2)));
    /* half 0: [s0, s2, s0, s2]; half 1: [s1, s3, s1, s3] */
    __m256 z = _mm256_add_ps(_mm256_shuffle_ps(w, w, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm256_shuffle_ps(w, w, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm256_castps256_ps128(_mm256_permutevar8x32_ps(z, _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0)));
}

/* 16 k of one row: lo/hi[j] += x·w_j for lanes 0–7 / 8–15 (lanes past the
 * masks load 0) */
static inline __attribute__((always_inline)) void project_step(__m256 lo[OUTS], __m256 hi[OUTS], const float *x,
                                                              const float *const w_rows[OUTS], size_t k,
                                                              __m256i m_lo, __m256i m_hi, int masked)
{
    __m256 x_lo = masked ? _mm256_maskload_ps(x + k, m_lo) : _mm256_loadu_ps(x + k);
    __m256 x_hi = masked ? _mm256_maskload_ps(x + k + W, m_hi) : _mm256_loadu_ps(x + k + W);
#pragma GCC unroll 8
    for (int j = 0; j < OUTS; j++) {
        __m256 w_lo = masked ? _mm256_maskload_ps(w_rows[j] + k, m_lo) : _mm256_loadu_ps(w_rows[j] + k);
        __m256 w_hi = masked ? _mm256_maskload_ps(w_rows[j] + k + W, m_hi) : _mm256_loadu_ps(w_rows[j] + k + W);
        lo[j] = _mm256_fmadd_ps(x_lo, w_lo, lo[j]);
        hi[j] = _mm256_fmadd_ps(x_hi, w_hi, hi[j]);
    }
}

void whet_lowrank_project_avx2(float *y, size_t ldy, const float *x, size_t ldx, const float *w, size_t ldw,
                               size_t rows, size_t r, size_t K, float scale)
{
    for (size_t j0 = 0; j0 < r; j0 += OUTS) {
        size_t nouts = r - j0 < OUTS ? r - j0 : OUTS;
        const float *w_rows[OUTS];
        for (size_t j = 0; j < OUTS; j++) /* past r, repeat the last row: computed, never stored */
            w_rows[j] = w + (j0 + (j < nouts ? j : nouts - 1)) * ldw;
        for (size_t i = 0; i < rows; i++) {
            const float *xi = x + i * ldx;
            __m256 lo[OUTS], hi[OUTS];
#pragma GCC unroll 8
            for (int j = 0; j < OUTS; j++)
                lo[j] = hi[j] = _mm256_setzero_ps();
            size_t k = 0;
            for (; k + 2 * W <= K; k += 2 * W)
                project_step(lo, hi, xi, w_rows, k, _mm256_setzero_si256(), _mm256_setzero_si256(), 0);
            if (k < K) /* the zero-padded tail: the masked lanes add 0·0 */
                project_step(lo, hi, xi, w_rows, k, first_lanes(K - k), first_lanes(K - k > W ? K - k - W : 0), 1);
            float out[4];
            _mm_storeu_ps(out, _mm_mul_ps(_mm_set1_ps(scale), sum_partials4(lo, hi)));
            for (size_t j = 0; j < nouts; j++)
                y[i * ldy + j0 + j] = out[j];
        }
    }
}

/* dw rows [0, nouts) × columns [0, 8·nvec), the last vector masked by `last`;
 * g_cols[j] is the column of g feeding output row j. */
static inline __attribute__((always_inline)) void grad_block(float *dw, size_t ldw, const float *g, size_t ldg,
                                                            const size_t g_cols[OUTS], const float *x, size_t ldx,
                                                            size_t rows, size_t nouts, const int nvec,
                                                            __m256i last, int masked, int accumulate)
{
    __m256 acc[OUTS][GRAD_VECTORS];
#pragma GCC unroll 8
    for (int j = 0; j < OUTS; j++)
#pragma GCC unroll 8
        for (int v = 0; v < nvec; v++)
            acc[j][v] = _mm256_setzero_ps();
    for (size_t i = 0; i < rows; i++) {
        const float *xi = x + i * ldx, *gi = g + i * ldg;
        __m256 xv[GRAD_VECTORS];
#pragma GCC unroll 8
        for (int v = 0; v < nvec; v++)
            xv[v] = masked && v == nvec - 1 ? _mm256_maskload_ps(xi + v * W, last) : _mm256_loadu_ps(xi + v * W);
#pragma GCC unroll 8
        for (int j = 0; j < OUTS; j++) {
            __m256 gb = _mm256_broadcast_ss(gi + g_cols[j]);
#pragma GCC unroll 8
            for (int v = 0; v < nvec; v++)
                acc[j][v] = _mm256_fmadd_ps(gb, xv[v], acc[j][v]);
        }
    }
    /* j runs to the constant OUTS, so that acc stays in registers: a loop to nouts kept it in memory */
#pragma GCC unroll 8
    for (int j = 0; j < OUTS; j++)
#pragma GCC unroll 8
        for (int v = 0; v < nvec; v++) {
            if ((size_t)j >= nouts)
                continue;
            float *d = dw + j * ldw + v * W;
            if (masked && v == nvec - 1) {
                __m256 s = accumulate ? _mm256_add_ps(_mm256_maskload_ps(d, last), acc[j][v]) : acc[j][v];
                _mm256_maskstore_ps(d, last, s);
            } else {
                _mm256_storeu_ps(d, accumulate ? _mm256_add_ps(_mm256_loadu_ps(d), acc[j][v]) : acc[j][v]);
            }
        }
}

void whet_lowrank_weight_grad_avx2(float *dw, size_t ldw, const float *g, size_t ldg, const float *x, size_t ldx,
                                   size_t rows, size_t r, size_t c0, size_t c1, int accumulate)
{
    for (size_t j0 = 0; j0 < r; j0 += OUTS) {
        size_t nouts = r - j0 < OUTS ? r - j0 : OUTS;
        size_t g_cols[OUTS];
        for (size_t j = 0; j < OUTS; j++)
            g_cols[j] = j0 + (j < nouts ? j : nouts - 1);
        float *d = dw + j0 * ldw;
        size_t c = c0;
        for (; c + GRAD_VECTORS * W <= c1; c += GRAD_VECTORS * W)
            grad_block(d + c, ldw, g, ldg, g_cols, x + c, ldx, rows, nouts, GRAD_VECTORS, _mm256_setzero_si256(), 0,
                       accumulate);
        if (c < c1) {
            size_t left = c1 - c, nvec = (left + W - 1) / W;
            __m256i last = first_lanes(left - (nvec - 1) * W);
            if (nvec == 1)
                grad_block(d + c, ldw, g, ldg, g_cols, x + c, ldx, rows, nouts, 1, last, 1, accumulate);
            else if (nvec == 2)
                grad_block(d + c, ldw, g, ldg, g_cols, x + c, ldx, rows, nouts, 2, last, 1, accumulate);
            else
                grad_block(d + c, ldw, g, ldg, g_cols, x + c, ldx, rows, nouts, 3, last, 1, accumulate);
        }
    }
}
