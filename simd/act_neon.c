/* AArch64 Advanced SIMD: activations, RoPE and the AdamW update.
 *
 * Each kernel evaluates the scalar reference's expression in the same order
 * with separate multiplies and adds (vmulq/vaddq, never vfmaq), so RoPE and
 * AdamW give the scalar bits exactly; SwiGLU and GELU differ from it only
 * through SLEEF's exp/tanh (≤ 1 ULP) instead of libm's. Tails of the SLEEF
 * kernels run the same vector code on a stack copy, so an element's result
 * never depends on where a caller's range split put it. */
#include "isa_kernels.h"

#include <arm_neon.h>
#include <math.h>
#include <sleef.h>
#include <string.h>

/* σ(g) = 1/(1 + e^−g), as the reference writes it */
static float32x4_t sigmoid4(float32x4_t g)
{
    const float32x4_t one = vdupq_n_f32(1.0f);
    return vdivq_f32(one, vaddq_f32(one, Sleef_expf4_u10advsimd(vnegq_f32(g))));
}

static float32x4_t swiglu4(float32x4_t g, float32x4_t up)
{
    return vmulq_f32(vmulq_f32(g, sigmoid4(g)), up);
}

void whet_swiglu_forward_neon(float *h, const float *gate, const float *up, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(h + i, swiglu4(vld1q_f32(gate + i), vld1q_f32(up + i)));
    if (i < n) {
        float g[4] = {0}, u[4] = {0}, out[4];
        memcpy(g, gate + i, (n - i) * sizeof *g);
        memcpy(u, up + i, (n - i) * sizeof *u);
        vst1q_f32(out, swiglu4(vld1q_f32(g), vld1q_f32(u)));
        memcpy(h + i, out, (n - i) * sizeof *out);
    }
}

/* dgate = dh·up·silu'(g) with silu'(g) = σ·(1 + g·(1 − σ)); dup = dh·g·σ */
static void swiglu_backward4(float *dgate, float *dup, const float *dh, const float *gate, const float *up)
{
    const float32x4_t one = vdupq_n_f32(1.0f);
    float32x4_t g = vld1q_f32(gate), d = vld1q_f32(dh);
    float32x4_t s = sigmoid4(g);
    float32x4_t dsilu = vmulq_f32(s, vaddq_f32(one, vmulq_f32(g, vsubq_f32(one, s))));
    vst1q_f32(dgate, vmulq_f32(vmulq_f32(d, vld1q_f32(up)), dsilu));
    vst1q_f32(dup, vmulq_f32(d, vmulq_f32(g, s)));
}

void whet_swiglu_backward_neon(float *dgate, float *dup, const float *dh, const float *gate, const float *up,
                               size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        swiglu_backward4(dgate + i, dup + i, dh + i, gate + i, up + i);
    if (i < n) {
        float d[4] = {0}, g[4] = {0}, u[4] = {0}, dg[4], du[4];
        size_t len = (n - i) * sizeof(float);
        memcpy(d, dh + i, len);
        memcpy(g, gate + i, len);
        memcpy(u, up + i, len);
        swiglu_backward4(dg, du, d, g, u);
        memcpy(dgate + i, dg, len);
        memcpy(dup + i, du, len);
    }
}

#define GELU_C 0.7978845608028654f /* √(2/π) */
#define GELU_A 0.044715f

/* tanh(√(2/π)·(x + 0.044715·x³)), with x³ multiplied left to right as in the reference */
static float32x4_t gelu_tanh4(float32x4_t x)
{
    float32x4_t cube = vmulq_f32(vmulq_f32(vmulq_f32(vdupq_n_f32(GELU_A), x), x), x);
    return Sleef_tanhf4_u10advsimd(vmulq_f32(vdupq_n_f32(GELU_C), vaddq_f32(x, cube)));
}

static float32x4_t gelu4(float32x4_t x)
{
    float32x4_t t = gelu_tanh4(x);
    return vmulq_f32(vmulq_f32(vdupq_n_f32(0.5f), x), vaddq_f32(vdupq_n_f32(1.0f), t));
}

void whet_gelu_forward_neon(float *y, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(y + i, gelu4(vld1q_f32(x + i)));
    if (i < n) {
        float in[4] = {0}, out[4];
        memcpy(in, x + i, (n - i) * sizeof *in);
        vst1q_f32(out, gelu4(vld1q_f32(in)));
        memcpy(y + i, out, (n - i) * sizeof *out);
    }
}

/* gelu'(x) = ½(1 + t) + ½x·(1 − t²)·√(2/π)(1 + 3·0.044715·x²) */
static float32x4_t gelu_backward4(float32x4_t dy, float32x4_t x)
{
    const float32x4_t one = vdupq_n_f32(1.0f), half = vdupq_n_f32(0.5f);
    float32x4_t t = gelu_tanh4(x);
    float32x4_t du = vmulq_f32(vdupq_n_f32(GELU_C), vaddq_f32(one, vmulq_f32(vmulq_f32(vdupq_n_f32(3.0f * GELU_A), x), x)));
    float32x4_t left = vmulq_f32(half, vaddq_f32(one, t));
    float32x4_t right = vmulq_f32(vmulq_f32(vmulq_f32(half, x), vsubq_f32(one, vmulq_f32(t, t))), du);
    return vmulq_f32(dy, vaddq_f32(left, right));
}

void whet_gelu_backward_neon(float *dx, const float *dy, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(dx + i, gelu_backward4(vld1q_f32(dy + i), vld1q_f32(x + i)));
    if (i < n) {
        float d[4] = {0}, in[4] = {0}, out[4];
        memcpy(d, dy + i, (n - i) * sizeof *d);
        memcpy(in, x + i, (n - i) * sizeof *in);
        vst1q_f32(out, gelu_backward4(vld1q_f32(d), vld1q_f32(in)));
        memcpy(dx + i, out, (n - i) * sizeof *out);
    }
}

/* One pair, in the reference's order: a' = a·c − b·s, b' = a·s + b·c. */
static void rotate_pair(float *pa, float *pb, float c, float s)
{
    float a = *pa, b = *pb;
    *pa = a * c - b * s;
    *pb = a * s + b * c;
}

void whet_rope_neon(float *x, size_t tokens, size_t heads, size_t head_dim, size_t token_stride,
                    const int32_t *positions, const float *cos_table, const float *sin_table,
                    whet_rope_pairing pairing, int inverse)
{
    const size_t half = head_dim / 2;
    for (size_t t = 0; t < tokens; t++) {
        const float *ct = cos_table + (size_t)positions[t] * half;
        const float *st = sin_table + (size_t)positions[t] * half;
        for (size_t h = 0; h < heads; h++) {
            float *v = x + t * token_stride + h * head_dim;
            size_t i = 0;
            for (; i + 4 <= half; i += 4) {
                float32x4_t c = vld1q_f32(ct + i), s = vld1q_f32(st + i);
                /* −θ flips the sign of sin; a sign flip is exact, so inverse
                 * rounds the same way as the reference */
                if (inverse)
                    s = vnegq_f32(s);
                if (pairing == WHET_ROPE_HALF_SPLIT) {
                    float32x4_t a = vld1q_f32(v + i), b = vld1q_f32(v + half + i);
                    vst1q_f32(v + i, vsubq_f32(vmulq_f32(a, c), vmulq_f32(b, s)));
                    vst1q_f32(v + half + i, vaddq_f32(vmulq_f32(a, s), vmulq_f32(b, c)));
                } else {
                    /* LD2/ST2 split the pairs into evens and odds and back */
                    float32x4x2_t ab = vld2q_f32(v + 2 * i), r;
                    r.val[0] = vsubq_f32(vmulq_f32(ab.val[0], c), vmulq_f32(ab.val[1], s));
                    r.val[1] = vaddq_f32(vmulq_f32(ab.val[0], s), vmulq_f32(ab.val[1], c));
                    vst2q_f32(v + 2 * i, r);
                }
            }
            for (; i < half; i++) {
                float sn = inverse ? -st[i] : st[i];
                if (pairing == WHET_ROPE_HALF_SPLIT)
                    rotate_pair(v + i, v + half + i, ct[i], sn);
                else
                    rotate_pair(v + 2 * i, v + 2 * i + 1, ct[i], sn);
            }
        }
    }
}

/* The reference's AdamW expression for one element, for the tail. */
static void adamw_one(float *param, float *m, float *v, float grad, float grad_scale, float decay, float beta1,
                      float beta2, float one_minus_b1, float one_minus_b2, float neg_step, float bc2_sqrt, float eps)
{
    float g = grad * grad_scale;
    float p = *param * decay;
    float mi = *m * beta1 + one_minus_b1 * g;
    float vi = *v * beta2 + one_minus_b2 * g * g;
    float denom = sqrtf(vi) / bc2_sqrt + eps;
    *param = p + (neg_step * mi) / denom;
    *m = mi;
    *v = vi;
}

/* Same per-element operation order as the reference with no fused multiply-add
 * (FSQRT and FDIV are correctly rounded, like sqrtf and /), so the update is
 * bit-identical to it. */
void whet_adamw_neon(float *param, float *m, float *v, const float *grad, size_t n, const whet_adamw_params *h)
{
    const float decay = 1.0f - h->lr * h->weight_decay;
    const float step = h->lr / h->bias_correction1;
    const float bc2_sqrt = sqrtf(h->bias_correction2);
    const float one_minus_b1 = 1.0f - h->beta1, one_minus_b2 = 1.0f - h->beta2;
    const float neg_step = -step;
    const float32x4_t vscale = vdupq_n_f32(h->grad_scale), vdecay = vdupq_n_f32(decay);
    const float32x4_t vb1 = vdupq_n_f32(h->beta1), vb2 = vdupq_n_f32(h->beta2);
    const float32x4_t vomb1 = vdupq_n_f32(one_minus_b1), vomb2 = vdupq_n_f32(one_minus_b2);
    const float32x4_t vbc2 = vdupq_n_f32(bc2_sqrt), veps = vdupq_n_f32(h->eps);
    const float32x4_t vneg_step = vdupq_n_f32(neg_step);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t g = vmulq_f32(vld1q_f32(grad + i), vscale);
        float32x4_t p = vmulq_f32(vld1q_f32(param + i), vdecay);
        float32x4_t mi = vaddq_f32(vmulq_f32(vld1q_f32(m + i), vb1), vmulq_f32(vomb1, g));
        float32x4_t vi = vaddq_f32(vmulq_f32(vld1q_f32(v + i), vb2), vmulq_f32(vmulq_f32(vomb2, g), g));
        float32x4_t denom = vaddq_f32(vdivq_f32(vsqrtq_f32(vi), vbc2), veps);
        vst1q_f32(param + i, vaddq_f32(p, vdivq_f32(vmulq_f32(vneg_step, mi), denom)));
        vst1q_f32(m + i, mi);
        vst1q_f32(v + i, vi);
    }
    for (; i < n; i++)
        adamw_one(param + i, m + i, v + i, grad[i], h->grad_scale, decay, h->beta1, h->beta2, one_minus_b1,
                  one_minus_b2, neg_step, bc2_sqrt, h->eps);
}
