/* Scalar reference: activations, RoPE and the AdamW update. */
#include "isa_kernels.h"

#include <math.h>

static float sigmoid(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

void whet_swiglu_forward_scalar(float *h, const float *gate, const float *up, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

/* silu'(g) = σ(g)·(1 + g·(1 − σ(g))) */
void whet_swiglu_backward_scalar(float *dgate, float *dup, const float *dh, const float *gate, const float *up,
                                 size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], s = sigmoid(g);
        float d = dh[i];
        dgate[i] = d * up[i] * (s * (1.0f + g * (1.0f - s)));
        dup[i] = d * (g * s);
    }
}

#define GELU_C 0.7978845608028654f /* √(2/π) */
#define GELU_A 0.044715f

void whet_gelu_forward_scalar(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + tanhf(GELU_C * (v + GELU_A * v * v * v)));
    }
}

void whet_gelu_backward_scalar(float *dx, const float *dy, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float t = tanhf(GELU_C * (v + GELU_A * v * v * v));
        float du = GELU_C * (1.0f + 3.0f * GELU_A * v * v);
        dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
    }
}

void whet_rope_scalar(float *x, size_t tokens, size_t heads, size_t head_dim, size_t token_stride,
                      const int32_t *positions, const float *cos_table, const float *sin_table,
                      whet_rope_pairing pairing, int inverse)
{
    size_t half = head_dim / 2;
    for (size_t t = 0; t < tokens; t++) {
        const float *c = cos_table + (size_t)positions[t] * half;
        const float *s = sin_table + (size_t)positions[t] * half;
        for (size_t h = 0; h < heads; h++) {
            float *v = x + t * token_stride + h * head_dim;
            for (size_t i = 0; i < half; i++) {
                size_t ia = pairing == WHET_ROPE_HALF_SPLIT ? i : 2 * i;
                size_t ib = pairing == WHET_ROPE_HALF_SPLIT ? i + half : 2 * i + 1;
                float sn = inverse ? -s[i] : s[i];
                float a = v[ia], b = v[ib];
                v[ia] = a * c[i] - b * sn;
                v[ib] = a * sn + b * c[i];
            }
        }
    }
}

void whet_adamw_scalar(float *param, float *m, float *v, const float *grad, size_t n, const whet_adamw_params *h)
{
    const float decay = 1.0f - h->lr * h->weight_decay;
    const float step = h->lr / h->bias_correction1;
    const float bc2_sqrt = sqrtf(h->bias_correction2);
    const float one_minus_b1 = 1.0f - h->beta1, one_minus_b2 = 1.0f - h->beta2;
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] * h->grad_scale;
        float p = param[i] * decay;
        float mi = m[i] * h->beta1 + one_minus_b1 * g;
        float vi = v[i] * h->beta2 + one_minus_b2 * g * g;
        float denom = sqrtf(vi) / bc2_sqrt + h->eps;
        param[i] = p + (-step * mi) / denom;
        m[i] = mi;
        v[i] = vi;
    }
}
