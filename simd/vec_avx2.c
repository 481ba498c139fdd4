/* PENDING: forwards to the scalar reference until the avx2 kernels land. */
#include "isa_kernels.h"

double whet_fma_peak_loop_avx2(size_t iterations)
{
    return whet_fma_peak_loop_scalar(iterations);
}

void whet_f32_to_bf16_avx2(whet_bf16 *dst, const float *src, size_t n)
{
    whet_f32_to_bf16_scalar(dst, src, n);
}

void whet_bf16_to_f32_avx2(float *dst, const whet_bf16 *src, size_t n)
{
    whet_bf16_to_f32_scalar(dst, src, n);
}

void whet_f32_to_f16_avx2(whet_f16 *dst, const float *src, size_t n)
{
    whet_f32_to_f16_scalar(dst, src, n);
}

void whet_f16_to_f32_avx2(float *dst, const whet_f16 *src, size_t n)
{
    whet_f16_to_f32_scalar(dst, src, n);
}

void whet_axpy_avx2(float *y, float a, const float *x, size_t n)
{
    whet_axpy_scalar(y, a, x, n);
}

void whet_scale_avx2(float *x, float a, size_t n)
{
    whet_scale_scalar(x, a, n);
}

void whet_add_avx2(float *y, const float *a, const float *b, size_t n)
{
    whet_add_scalar(y, a, b, n);
}

double whet_sum_squares_avx2(const float *x, size_t n)
{
    return whet_sum_squares_scalar(x, n);
}
