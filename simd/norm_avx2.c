/* PENDING: forwards to the scalar reference until the avx2 kernels land. */
#include "isa_kernels.h"

void whet_rmsnorm_forward_avx2(float *y, float *rstd, const float *x, const float *weight, size_t rows, size_t n, float eps)
{
    whet_rmsnorm_forward_scalar(y, rstd, x, weight, rows, n, eps);
}

void whet_rmsnorm_backward_input_avx2(float *dx, const float *dy, const float *x, const float *weight, const float *rstd, size_t rows, size_t n)
{
    whet_rmsnorm_backward_input_scalar(dx, dy, x, weight, rstd, rows, n);
}

void whet_rmsnorm_backward_weight_avx2(float *dweight, const float *dy, const float *x, const float *rstd, size_t rows, size_t n, size_t c0, size_t c1)
{
    whet_rmsnorm_backward_weight_scalar(dweight, dy, x, rstd, rows, n, c0, c1);
}

void whet_layernorm_forward_avx2(float *y, float *mean, float *rstd, const float *x, const float *weight, const float *bias, size_t rows, size_t n, float eps)
{
    whet_layernorm_forward_scalar(y, mean, rstd, x, weight, bias, rows, n, eps);
}

void whet_layernorm_backward_input_avx2(float *dx, const float *dy, const float *x, const float *weight, const float *mean, const float *rstd, size_t rows, size_t n)
{
    whet_layernorm_backward_input_scalar(dx, dy, x, weight, mean, rstd, rows, n);
}

void whet_layernorm_backward_params_avx2(float *dweight, float *dbias, const float *dy, const float *x, const float *mean, const float *rstd, size_t rows, size_t n, size_t c0, size_t c1)
{
    whet_layernorm_backward_params_scalar(dweight, dbias, dy, x, mean, rstd, rows, n, c0, c1);
}

void whet_softmax_forward_avx2(float *y, const float *x, size_t rows, size_t n)
{
    whet_softmax_forward_scalar(y, x, rows, n);
}

void whet_softmax_backward_avx2(float *dx, const float *dy, const float *y, size_t rows, size_t n)
{
    whet_softmax_backward_scalar(dx, dy, y, rows, n);
}

void whet_cross_entropy_lse_update_avx2(float *running_max, float *running_sum, const float *logits, size_t ld, size_t rows, size_t n)
{
    whet_cross_entropy_lse_update_scalar(running_max, running_sum, logits, ld, rows, n);
}

void whet_cross_entropy_backward_avx2(float *dlogits, const float *logits, size_t ld, size_t rows, size_t n, size_t vocab_offset, const int32_t *targets, const float *lse, const float *row_scale)
{
    whet_cross_entropy_backward_scalar(dlogits, logits, ld, rows, n, vocab_offset, targets, lse, row_scale);
}
