/* Scalar reference: row-wise normalisation, softmax and cross-entropy. Row
 * reductions accumulate in double so that the reference is the accurate one. */
#include "isa_kernels.h"

#include <math.h>

void whet_rmsnorm_forward_scalar(float *y, float *rstd, const float *x, const float *weight, size_t rows,
                                 size_t n, float eps)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        double sum = 0;
        for (size_t i = 0; i < n; i++)
            sum += (double)xr[i] * xr[i];
        float s = (float)(1.0 / sqrt(sum / (double)n + (double)eps));
        if (rstd)
            rstd[r] = s;
        for (size_t i = 0; i < n; i++)
            y[r * n + i] = xr[i] * s * weight[i];
    }
}

/* y = x·s·w with s = (mean(x²)+eps)^−½:  dx_i = s·w_i·dy_i − x_i·s³/n·Σ_j dy_j·w_j·x_j */
void whet_rmsnorm_backward_input_scalar(float *dx, const float *dy, const float *x, const float *weight,
                                        const float *rstd, size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n, *dyr = dy + r * n;
        double dot = 0;
        for (size_t i = 0; i < n; i++)
            dot += (double)dyr[i] * weight[i] * xr[i];
        float s = rstd[r];
        float coef = (float)(dot * s * s * s / (double)n);
        for (size_t i = 0; i < n; i++)
            dx[r * n + i] += s * weight[i] * dyr[i] - xr[i] * coef;
    }
}

void whet_rmsnorm_backward_weight_scalar(float *dweight, const float *dy, const float *x, const float *rstd,
                                         size_t rows, size_t n, size_t c0, size_t c1)
{
    for (size_t c = c0; c < c1; c++) {
        float sum = 0;
        for (size_t r = 0; r < rows; r++)
            sum += dy[r * n + c] * (x[r * n + c] * rstd[r]);
        dweight[c] += sum;
    }
}

void whet_layernorm_forward_scalar(float *y, float *mean, float *rstd, const float *x, const float *weight,
                                   const float *bias, size_t rows, size_t n, float eps)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        double sum = 0;
        for (size_t i = 0; i < n; i++)
            sum += xr[i];
        double mu = sum / (double)n, var = 0;
        for (size_t i = 0; i < n; i++)
            var += ((double)xr[i] - mu) * ((double)xr[i] - mu);
        float m = (float)mu;
        float s = (float)(1.0 / sqrt(var / (double)n + (double)eps));
        if (mean)
            mean[r] = m;
        if (rstd)
            rstd[r] = s;
        for (size_t i = 0; i < n; i++)
            y[r * n + i] = (xr[i] - m) * s * weight[i] + bias[i];
    }
}

/* x̂ = (x−μ)·s, g = dy·w:  dx_i = s·(g_i − mean(g) − x̂_i·mean(g·x̂)) */
void whet_layernorm_backward_input_scalar(float *dx, const float *dy, const float *x, const float *weight,
                                          const float *mean, const float *rstd, size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n, *dyr = dy + r * n;
        float m = mean[r], s = rstd[r];
        double sum_g = 0, sum_gx = 0;
        for (size_t i = 0; i < n; i++) {
            double g = (double)dyr[i] * weight[i];
            sum_g += g;
            sum_gx += g * ((xr[i] - m) * s);
        }
        float mean_g = (float)(sum_g / (double)n), mean_gx = (float)(sum_gx / (double)n);
        for (size_t i = 0; i < n; i++) {
            float xhat = (xr[i] - m) * s;
            dx[r * n + i] += s * (dyr[i] * weight[i] - mean_g - xhat * mean_gx);
        }
    }
}

void whet_layernorm_backward_params_scalar(float *dweight, float *dbias, const float *dy, const float *x,
                                           const float *mean, const float *rstd, size_t rows, size_t n,
                                           size_t c0, size_t c1)
{
    for (size_t c = c0; c < c1; c++) {
        float sw = 0, sb = 0;
        for (size_t r = 0; r < rows; r++) {
            float g = dy[r * n + c];
            sw += g * ((x[r * n + c] - mean[r]) * rstd[r]);
            sb += g;
        }
        dweight[c] += sw;
        dbias[c] += sb;
    }
}

void whet_softmax_forward_scalar(float *y, const float *x, size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float max = -INFINITY;
        for (size_t i = 0; i < n; i++)
            max = xr[i] > max ? xr[i] : max;
        double sum = 0;
        for (size_t i = 0; i < n; i++) {
            yr[i] = expf(xr[i] - max);
            sum += yr[i];
        }
        float inv = (float)(1.0 / sum);
        for (size_t i = 0; i < n; i++)
            yr[i] *= inv;
    }
}

void whet_softmax_backward_scalar(float *dx, const float *dy, const float *y, size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * n, *yr = y + r * n;
        double dot = 0;
        for (size_t i = 0; i < n; i++)
            dot += (double)dyr[i] * yr[i];
        float d = (float)dot;
        for (size_t i = 0; i < n; i++)
            dx[r * n + i] = yr[i] * (dyr[i] - d);
    }
}

void whet_cross_entropy_lse_update_scalar(float *running_max, float *running_sum, const float *logits, size_t ld,
                                          size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        const float *lr = logits + r * ld;
        float max = running_max[r];
        for (size_t j = 0; j < n; j++)
            max = lr[j] > max ? lr[j] : max;
        double sum = running_sum[r] == 0 ? 0 : (double)running_sum[r] * exp((double)running_max[r] - max);
        for (size_t j = 0; j < n; j++)
            sum += expf(lr[j] - max);
        running_max[r] = max;
        running_sum[r] = (float)sum;
    }
}

void whet_cross_entropy_backward_scalar(float *dlogits, const float *logits, size_t ld, size_t rows, size_t n,
                                        size_t vocab_offset, const int32_t *targets, const float *lse,
                                        const float *row_scale)
{
    for (size_t r = 0; r < rows; r++) {
        float scale = row_scale[r];
        for (size_t j = 0; j < n; j++) {
            float p = expf(logits[r * ld + j] - lse[r]);
            if (targets[r] >= 0 && (size_t)targets[r] == vocab_offset + j)
                p -= 1.0f;
            dlogits[r * ld + j] = scale * p;
        }
    }
}
