/* The low-rank products of a LoRA adapter, scalar reference. Both kernels
 * fix their order of operations in the contract (simd.h), so every ISA gives
 * these bits exactly:
 *  - lowrank_project: 16 partial sums, partial l taking k ≡ l (mod 16) in
 *    increasing k by fused multiply-add, k padded with zeros to a multiple of
 *    16; then partials l and l+8 added, then l and l+4, l+2, l+1; times scale.
 *    That is one 16-lane vector's sum, or two 8-lane ones, or four 4-lane ones.
 *  - lowrank_weight_grad: one fused multiply-add per row, rows in order. */
#include "isa_kernels.h"

#include <math.h>

void whet_lowrank_project_scalar(float *y, size_t ldy, const float *x, size_t ldx, const float *w, size_t ldw,
                                 size_t rows, size_t r, size_t K, float scale)
{
    size_t padded = (K + 15) / 16 * 16;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < r; j++) {
            const float *xi = x + i * ldx, *wj = w + j * ldw;
            float part[16] = {0};
            for (size_t k = 0; k < padded; k++) {
                /* the padding adds 0·0, as a masked vector lane does */
                float a = k < K ? xi[k] : 0.0f, b = k < K ? wj[k] : 0.0f;
                part[k % 16] = fmaf(a, b, part[k % 16]);
            }
            for (size_t half = 8; half >= 1; half /= 2)
                for (size_t l = 0; l < half; l++)
                    part[l] += part[l + half];
            y[i * ldy + j] = scale * part[0];
        }
}

void whet_lowrank_weight_grad_scalar(float *dw, size_t ldw, const float *g, size_t ldg, const float *x, size_t ldx,
                                     size_t rows, size_t r, size_t c0, size_t c1, int accumulate)
{
    for (size_t j = 0; j < r; j++)
        for (size_t c = c0; c < c1; c++) {
            float sum = 0;
            for (size_t i = 0; i < rows; i++)
                sum = fmaf(g[i * ldg + j], x[i * ldx + c], sum);
            dw[j * ldw + c] = accumulate ? dw[j * ldw + c] + sum : sum;
        }
}
