/* LoRA's rank-r products on AArch64 Advanced SIMD, in the order
 * simd/lowrank_scalar.c fixes (so with its bits); no packing, as in
 * simd/lowrank_avx512.c.
 *
 * project: one row × 4 outputs at a time, each output's 16 partial sums in
 * four q registers: 16 accumulators fed by 4 loads of x and 16 of w per 16 k.
 * weight_grad: 4 rows of dw × 16 columns, 16 accumulators fed by 4 loads of
 * x and one load of g (multiplied by lane) per row of x. */
#include "isa_kernels.h"

#include <arm_neon.h>
#include <math.h>
#include <string.h>

enum { OUTS = 4, GRAD_COLUMNS = 16 };

/* One output's 16 partials (q[0]: lanes 0–3 … q[3]: lanes 12–15) summed in the
 * contract's order: l + l+8, then l+4, l+2, l+1. */
static inline float sum_partials(const float32x4_t q[4])
{
    float32x4_t a = vaddq_f32(q[0], q[2]), b = vaddq_f32(q[1], q[3]);
    float32x4_t c = vaddq_f32(a, b);
    float32x2_t d = vadd_f32(vget_low_f32(c), vget_high_f32(c));
    return vget_lane_f32(vpadd_f32(d, d), 0);
}

static inline __attribute__((always_inline)) void project_step(float32x4_t acc[OUTS][4], const float *x,
                                                              const float *const w[OUTS])
{
    float32x4_t xv[4] = {vld1q_f32(x), vld1q_f32(x + 4), vld1q_f32(x + 8), vld1q_f32(x + 12)};
#pragma GCC unroll 8
    for (int j = 0; j < OUTS; j++)
#pragma GCC unroll 8
        for (int q = 0; q < 4; q++)
            acc[j][q] = vfmaq_f32(acc[j][q], xv[q], vld1q_f32(w[j] + 4 * q));
}

void whet_lowrank_project_neon(float *y, size_t ldy, const float *x, size_t ldx, const float *w, size_t ldw,
                               size_t rows, size_t r, size_t K, float scale)
{
    size_t tail = K % 16, body = K - tail;
    for (size_t j0 = 0; j0 < r; j0 += OUTS) {
        size_t nouts = r - j0 < OUTS ? r - j0 : OUTS;
        const float *w_rows[OUTS];
        float w_tail[OUTS][16] = {{0}};
        for (size_t j = 0; j < OUTS; j++) { /* past r, repeat the last row: computed, never stored */
            w_rows[j] = w + (j0 + (j < nouts ? j : nouts - 1)) * ldw;
            memcpy(w_tail[j], w_rows[j] + body, tail * sizeof(float));
        }
        const float *const w_tails[OUTS] = {w_tail[0], w_tail[1], w_tail[2], w_tail[3]};
        for (size_t i = 0; i < rows; i++) {
            const float *xi = x + i * ldx;
            float32x4_t acc[OUTS][4];
#pragma GCC unroll 8
            for (int j = 0; j < OUTS; j++)
#pragma GCC unroll 8
                for (int q = 0; q < 4; q++)
                    acc[j][q] = vdupq_n_f32(0);
            for (size_t k = 0; k < body; k += 16) {
                const float *const wk[OUTS] = {w_rows[0] + k, w_rows[1] + k, w_rows[2] + k, w_rows[3] + k};
                project_step(acc, xi + k, wk);
            }
            if (tail) { /* the zero-padded tail: the padding adds 0·0 */
                float x_tail[16] = {0};
                memcpy(x_tail, xi + body, tail * sizeof(float));
                project_step(acc, x_tail, w_tails);
            }
            /* j runs to the constant OUTS, so that acc stays in registers: a loop to nouts kept it in memory */
#pragma GCC unroll 8
            for (int j = 0; j < OUTS; j++)
                if ((size_t)j < nouts)
                    y[i * ldy + j0 + j] = scale * sum_partials(acc[j]);
        }
    }
}

/* dw rows [0, nouts) × columns [0, 16); g_cols[j] is the column of g feeding
 * output row j (the callers repeat the last one past r, never stored). */
static void grad_block(float *dw, size_t ldw, const float *g, size_t ldg, const size_t g_cols[OUTS], const float *x,
                       size_t ldx, size_t rows, size_t nouts, int accumulate)
{
    float32x4_t acc[OUTS][4];
#pragma GCC unroll 8
    for (int j = 0; j < OUTS; j++)
#pragma GCC unroll 8
        for (int q = 0; q < 4; q++)
            acc[j][q] = vdupq_n_f32(0);
    for (size_t i = 0; i < rows; i++) {
        const float *xi = x + i * ldx, *gi = g + i * ldg;
        float32x4_t xv[4] = {vld1q_f32(xi), vld1q_f32(xi + 4), vld1q_f32(xi + 8), vld1q_f32(xi + 12)};
        float gv[OUTS] = {gi[g_cols[0]], gi[g_cols[1]], gi[g_cols[2]], gi[g_cols[3]]};
        float32x4_t gq = vld1q_f32(gv);
#pragma GCC unroll 8
        for (int q = 0; q < 4; q++) {
            acc[0][q] = vfmaq_laneq_f32(acc[0][q], xv[q], gq, 0);
            acc[1][q] = vfmaq_laneq_f32(acc[1][q], xv[q], gq, 1);
            acc[2][q] = vfmaq_laneq_f32(acc[2][q], xv[q], gq, 2);
            acc[3][q] = vfmaq_laneq_f32(acc[3][q], xv[q], gq, 3);
        }
    }
    /* j runs to the constant OUTS, so that acc stays in registers: a loop to nouts kept it in memory */
#pragma GCC unroll 8
    for (int j = 0; j < OUTS; j++)
#pragma GCC unroll 8
        for (int q = 0; q < 4; q++) {
            if ((size_t)j >= nouts)
                continue;
            float *d = dw + j * ldw + 4 * q;
            vst1q_f32(d, accumulate ? vaddq_f32(vld1q_f32(d), acc[j][q]) : acc[j][q]);
        }
}

void whet_lowrank_weight_grad_neon(float *dw, size_t ldw, const float *g, size_t ldg, const float *x, size_t ldx,
                                   size_t rows, size_t r, size_t c0, size_t c1, int accumulate)
{
    for (size_t j0 = 0; j0 < r; j0 += OUTS) {
        size_t nouts = r - j0 < OUTS ? r - j0 : OUTS;
        size_t g_cols[OUTS];
        for (size_t j = 0; j < OUTS; j++)
            g_cols[j] = j0 + (j < nouts ? j : nouts - 1);
        size_t c = c0;
        for (; c + GRAD_COLUMNS <= c1; c += GRAD_COLUMNS)
            grad_block(dw + j0 * ldw + c, ldw, g, ldg, g_cols, x + c, ldx, rows, nouts, accumulate);
        /* the last columns one at a time, with the same fused multiply-adds in the same order */
        for (; c < c1; c++)
            for (size_t j = 0; j < nouts; j++) {
                float sum = 0;
                for (size_t i = 0; i < rows; i++)
                    sum = fmaf(g[i * ldg + j0 + j], x[i * ldx + c], sum);
                float *d = dw + (j0 + j) * ldw + c;
                *d = accumulate ? *d + sum : sum;
            }
    }
}
