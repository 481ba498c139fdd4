/* PENDING: forwards to the scalar reference until the neon kernels land. */
#include "isa_kernels.h"

void whet_swiglu_forward_neon(float *h, const float *gate, const float *up, size_t n)
{
    whet_swiglu_forward_scalar(h, gate, up, n);
}

void whet_swiglu_backward_neon(float *dgate, float *dup, const float *dh, const float *gate, const float *up, size_t n)
{
    whet_swiglu_backward_scalar(dgate, dup, dh, gate, up, n);
}

void whet_gelu_forward_neon(float *y, const float *x, size_t n)
{
    whet_gelu_forward_scalar(y, x, n);
}

void whet_gelu_backward_neon(float *dx, const float *dy, const float *x, size_t n)
{
    whet_gelu_backward_scalar(dx, dy, x, n);
}

void whet_rope_neon(float *x, size_t tokens, size_t heads, size_t head_dim, size_t token_stride, const int32_t *positions, const float *cos_table, const float *sin_table, whet_rope_pairing pairing, int inverse)
{
    whet_rope_scalar(x, tokens, heads, head_dim, token_stride, positions, cos_table, sin_table, pairing, inverse);
}

void whet_adamw_neon(float *param, float *m, float *v, const float *grad, size_t n, const whet_adamw_params *h)
{
    whet_adamw_scalar(param, m, v, grad, n, h);
}
