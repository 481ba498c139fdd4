/* LoRA's rank-r products on AVX-512, in the order simd/lowrank_scalar.c fixes
 * (so with its bits). Neither packs anything: the wide operand (x or dout,
 * rows × K) is read once, straight from where it lies, which is what these
 * products need: a GEMM packs that operand for only 2·r FLOPs per element.
 *
 * project: 3 rows × 8 of the r outputs at a time, 24 zmm accumulators each
 * holding one output's 16 partial sums, fed by 3 loads of x and 8 of w per
 * 16 k; the partials are then summed by one shuffle tree for 8 outputs.
 * weight_grad: 8 of the r rows of dw × 48 columns, 24 accumulators, fed by 3
 * loads of x and 8 broadcasts of g per row of x. */
#include "isa_kernels.h"

#include <immintrin.h>

enum { W = 16, PROJECT_ROWS = 3, OUTS = 8, GRAD_VECTORS = 3, PREFETCH_ROWS = 16 };

static inline __mmask16 first_lanes(size_t n)
{
    return n >= W ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

/* The sums of 8 vectors of 16 partials, in the contract's order: lanes l and
 * l+8 first, then l+4, l+2, l+1 (each add pairs the same two lanes of every
 * vector, whatever slot it sits in). Output j is lane j of the result. */
static inline __m256 sum_partials8(const __m512 a[OUTS])
{
    __m512 u[4], v[2];
#pragma GCC unroll 8
    for (int p = 0; p < 4; p++) /* [a(l)+a(l+8) | b(l)+b(l+8)], l < 8 */
        u[p] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], 0x44),
                             _mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], 0xee));
#pragma GCC unroll 8
    for (int p = 0; p < 2; p++) /* quarters [a, b, c, d], each lanes l + l+4, l < 4 */
        v[p] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * p], u[2 * p + 1], 0x88),
                             _mm512_shuffle_f32x4(u[2 * p], u[2 * p + 1], 0xdd));
    /* quarter q: [a_q(0)+a_q(2), a_q(1)+a_q(3), a_{4+q}(0)+a_{4+q}(2), a_{4+q}(1)+a_{4+q}(3)] */
    __m512 w = _mm512_add_ps(_mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(3, 2, 3, 2)));
    /* quarter q: [a_q, a_{4+q}, a_q, a_{4+q}] */
    __m512 z = _mm512_add_ps(_mm512_shuffle_ps(w, w, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(w, w, _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_castps512_ps256(_mm512_permutexvar_ps(order, z));
}

/* acc[i][j] += x row i's 16 values from x[i·ldx] times w row j's from k */
static inline __attribute__((always_inline)) void project_step(__m512 acc[PROJECT_ROWS][OUTS], const float *x,
                                                              size_t ldx, const float *const w_rows[OUTS], size_t k,
                                                              __mmask16 m, const int nrows)
{
    __m512 xv[PROJECT_ROWS];
#pragma GCC unroll 8
    for (int i = 0; i < nrows; i++)
        xv[i] = _mm512_maskz_loadu_ps(m, x + i * ldx);
#pragma GCC unroll 8
    for (int j = 0; j < OUTS; j++) {
        __m512 wv = _mm512_maskz_loadu_ps(m, w_rows[j] + k);
#pragma GCC unroll 8
        for (int i = 0; i < nrows; i++)
            acc[i][j] = _mm512_fmadd_ps(xv[i], wv, acc[i][j]);
    }
}

/* y rows [0, nrows) × outputs [0, nouts) of this block; w_rows[j] is output
 * j's row of w (the callers repeat the last one past r, never stored). */
static inline __attribute__((always_inline)) void project_block(float *y, size_t ldy, const float *x, size_t ldx,
                                                               const float *const w_rows[OUTS], size_t K,
                                                               float scale, const int nrows, size_t nouts)
{
    __m512 acc[PROJECT_ROWS][OUTS];
#pragma GCC unroll 8
    for (int i = 0; i < nrows; i++)
#pragma GCC unroll 8
        for (int j = 0; j < OUTS; j++)
            acc[i][j] = _mm512_setzero_ps();
    size_t k = 0;
    for (; k + W <= K; k += W)
        project_step(acc, x + k, ldx, w_rows, k, 0xffff, nrows);
    if (k < K) /* the zero-padded tail: the masked lanes add 0·0 */
        project_step(acc, x + k, ldx, w_rows, k, first_lanes(K - k), nrows);
    __mmask8 store = (__mmask8)((1u << nouts) - 1);
#pragma GCC unroll 8
    for (int i = 0; i < nrows; i++)
        _mm256_mask_storeu_ps(y + i * ldy, store, _mm256_mul_ps(_mm256_set1_ps(scale), sum_partials8(acc[i])));
}

void whet_lowrank_project_avx512(float *y, size_t ldy, const float *x, size_t ldx, const float *w, size_t ldw,
                                 size_t rows, size_t r, size_t K, float scale)
{
    for (size_t j0 = 0; j0 < r; j0 += OUTS) {
        size_t nouts = r - j0 < OUTS ? r - j0 : OUTS;
        const float *w_rows[OUTS];
        for (size_t j = 0; j < OUTS; j++)
            w_rows[j] = w + (j0 + (j < nouts ? j : nouts - 1)) * ldw;
        size_t i = 0;
        for (; i + PROJECT_ROWS <= rows; i += PROJECT_ROWS)
            project_block(y + i * ldy + j0, ldy, x + i * ldx, ldx, w_rows, K, scale, PROJECT_ROWS, nouts);
        for (; i < rows; i++)
            project_block(y + i * ldy + j0, ldy, x + i * ldx, ldx, w_rows, K, scale, 1, nouts);
    }
}

/* dw rows j0 + [0, nouts) × columns [c, c + 16·nvec), the last vector masked
 * by `last`; g_cols[j] is the column of g feeding output row j. */
static inline __attribute__((always_inline)) void grad_block(float *dw, size_t ldw, const float *g, size_t ldg,
                                                            const size_t g_cols[OUTS], const float *x, size_t ldx,
                                                            size_t rows, size_t nouts, const int nvec,
                                                            __mmask16 last, int accumulate)
{
    __m512 acc[OUTS][GRAD_VECTORS];
#pragma GCC unroll 8
    for (int j = 0; j < OUTS; j++)
#pragma GCC unroll 8
        for (int v = 0; v < nvec; v++)
            acc[j][v] = _mm512_setzero_ps();
    for (size_t i = 0; i < rows; i++) {
        const float *xi = x + i * ldx, *gi = g + i * ldg;
        /* rows far apart: the hardware follows the stride too late, so fetch the lines rows ahead */
#pragma GCC unroll 8
        for (int v = 0; v < nvec; v++)
            _mm_prefetch((const char *)(xi + PREFETCH_ROWS * ldx + v * W), _MM_HINT_T0);
        __m512 xv[GRAD_VECTORS];
#pragma GCC unroll 8
        for (int v = 0; v < nvec; v++)
            xv[v] = _mm512_maskz_loadu_ps(v == nvec - 1 ? last : (__mmask16)0xffff, xi + v * W);
#pragma GCC unroll 8
        for (int j = 0; j < OUTS; j++) {
            __m512 gb = _mm512_set1_ps(gi[g_cols[j]]);
#pragma GCC unroll 8
            for (int v = 0; v < nvec; v++)
                acc[j][v] = _mm512_fmadd_ps(gb, xv[v], acc[j][v]);
        }
    }
    /* j runs to the constant OUTS, so that acc stays in registers: a loop to nouts kept it in memory */
#pragma GCC unroll 8
    for (int j = 0; j < OUTS; j++)
#pragma GCC unroll 8
        for (int v = 0; v < nvec; v++) {
            if ((size_t)j >= nouts)
                continue;
            __mmask16 m = v == nvec - 1 ? last : (__mmask16)0xffff;
            float *d = dw + j * ldw + v * W;
            __m512 s = accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(m, d), acc[j][v]) : acc[j][v];
            _mm512_mask_storeu_ps(d, m, s);
        }
}

void whet_lowrank_weight_grad_avx512(float *dw, size_t ldw, const float *g, size_t ldg, const float *x, size_t ldx,
                                     size_t rows, size_t r, size_t c0, size_t c1, int accumulate)
{
    for (size_t j0 = 0; j0 < r; j0 += OUTS) {
        size_t nouts = r - j0 < OUTS ? r - j0 : OUTS;
        size_t g_cols[OUTS];
        for (size_t j = 0; j < OUTS; j++)
            g_cols[j] = j0 + (j < nouts ? j : nouts - 1);
        size_t c = c0;
        for (; c + GRAD_VECTORS * W <= c1; c += GRAD_VECTORS * W)
            grad_block(dw + j0 * ldw + c, ldw, g, ldg, g_cols, x + c, ldx, rows, nouts, GRAD_VECTORS, 0xffff,
                       accumulate);
        if (c < c1) {
            size_t left = c1 - c, nvec = (left + W - 1) / W;
            __mmask16 last = first_lanes(left - (nvec - 1) * W);
            float *d = dw + j0 * ldw + c;
            if (nvec == 1)
                grad_block(d, ldw, g, ldg, g_cols, x + c, ldx, rows, nouts, 1, last, accumulate);
            else if (nvec == 2)
                grad_block(d, ldw, g, ldg, g_cols, x + c, ldx, rows, nouts, 2, last, accumulate);
            else
                grad_block(d, ldw, g, ldg, g_cols, x + c, ldx, rows, nouts, 3, last, accumulate);
        }
    }
}
