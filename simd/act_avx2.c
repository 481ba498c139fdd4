/* AVX2 + FMA: activations, RoPE and the AdamW update.
 *
 * Each kernel evaluates the scalar reference's expression in the same order
 * with separate multiplies and adds, so RoPE and AdamW give the scalar bits
 * exactly; SwiGLU and GELU differ from it only through SLEEF's exp/tanh
 * (≤ 1 ULP) instead of libm's. Tails of the SLEEF kernels run the same vector
 * code on a stack copy, so an element's result never depends on where a
 * caller's range split put it. */
#include "isa_kernels.h"

#include <immintrin.h>
#include <math.h>
#include <sleef.h>
#include <string.h>

static __m256 negate8(__m256 x)
{
    return _mm256_xor_ps(x, _mm256_set1_ps(-0.0f));
}

/* σ(g) = 1/(1 + e^−g), as the reference writes it */
static __m256 sigmoid8(__m256 g)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, Sleef_expf8_u10avx2(negate8(g))));
}

static __m256 swiglu8(__m256 g, __m256 up)
{
    return _mm256_mul_ps(_mm256_mul_ps(g, sigmoid8(g)), up);
}

void whet_swiglu_forward_avx2(float *h, const float *gate, const float *up, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(h + i, swiglu8(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
    if (i < n) {
        float g[8] = {0}, u[8] = {0}, out[8];
        memcpy(g, gate + i, (n - i) * sizeof *g);
        memcpy(u, up + i, (n - i) * sizeof *u);
        _mm256_storeu_ps(out, swiglu8(_mm256_loadu_ps(g), _mm256_loadu_ps(u)));
        memcpy(h + i, out, (n - i) * sizeof *out);
    }
}

/* dgate = dh·up·silu'(g) with silu'(g) = σ·(1 + g·(1 − σ)); dup = dh·g·σ */
static void swiglu_backward8(float *dgate, float *dup, const float *dh, const float *gate, const float *up)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 g = _mm256_loadu_ps(gate), d = _mm256_loadu_ps(dh);
    __m256 s = sigmoid8(g);
    __m256 dsilu = _mm256_mul_ps(s, _mm256_add_ps(one, _mm256_mul_ps(g, _mm256_sub_ps(one, s))));
    _mm256_storeu_ps(dgate, _mm256_mul_ps(_mm256_mul_ps(d, _mm256_loadu_ps(up)), dsilu));
    _mm256_storeu_ps(dup, _mm256_mul_ps(d, _mm256_mul_ps(g, s)));
}

void whet_swiglu_backward_avx2(float *dgate, float *dup, const float *dh, const float *gate, const float *up,
                               size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        swiglu_backward8(dgate + i, dup + i, dh + i, gate + i, up + i);
    if (i < n) {
        float d[8] = {0}, g[8] = {0}, u[8] = {0}, dg[8], du[8];
        size_t len = (n - i) * sizeof(float);
        memcpy(d, dh + i, len);
        memcpy(g, gate + i, len);
        memcpy(u, up + i, len);
        swiglu_backward8(dg, du, d, g, u);
        memcpy(dgate + i, dg, len);
        memcpy(dup + i, du, len);
    }
}

#define GELU_C 0.7978845608028654f /* √(2/π) */
#define GELU_A 0.044715f

/* tanh(√(2/π)·(x + 0.044715·x³)), with x³ multiplied left to right as in the reference */
static __m256 gelu_tanh8(__m256 x)
{
    __m256 cube = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(GELU_A), x), x), x);
    return Sleef_tanhf8_u10avx2(_mm256_mul_ps(_mm256_set1_ps(GELU_C), _mm256_add_ps(x, cube)));
}

static __m256 gelu8(__m256 x)
{
    __m256 t = gelu_tanh8(x);
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(_mm256_set1_ps(1.0f), t));
}

void whet_gelu_forward_avx2(float *y, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, gelu8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        float in[8] = {0}, out[8];
        memcpy(in, x + i, (n - i) * sizeof *in);
        _mm256_storeu_ps(out, gelu8(_mm256_loadu_ps(in)));
        memcpy(y + i, out, (n - i) * sizeof *out);
    }
}

/* gelu'(x) = ½(1 + t) + ½x·(1 − t²)·√(2/π)(1 + 3·0.044715·x²) */
static __m256 gelu_backward8(__m256 dy, __m256 x)
{
    const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
    __m256 t = gelu_tanh8(x);
    __m256 du = _mm256_mul_ps(_mm256_set1_ps(GELU_C),
                              _mm256_add_ps(one, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(3.0f * GELU_A), x), x)));
    __m256 left = _mm256_mul_ps(half, _mm256_add_ps(one, t));
    __m256 right = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_sub_ps(one, _mm256_mul_ps(t, t))), du);
    return _mm256_mul_ps(dy, _mm256_add_ps(left, right));
}

void whet_gelu_backward_avx2(float *dx, const float *dy, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dx + i, gelu_backward8(_mm256_loadu_ps(dy + i), _mm256_loadu_ps(x + i)));
    if (i < n) {
        float d[8] = {0}, in[8] = {0}, out[8];
        memcpy(d, dy + i, (n - i) * sizeof *d);
        memcpy(in, x + i, (n - i) * sizeof *in);
        _mm256_storeu_ps(out, gelu_backward8(_mm256_loadu_ps(d), _mm256_loadu_ps(in)));
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

void whet_rope_avx2(float *x, size_t tokens, size_t heads, size_t head_dim, size_t token_stride,
                    const int32_t *positions, const float *cos_table, const float *sin_table,
                    whet_rope_pairing pairing, int inverse)
{
    const size_t half = head_dim / 2;
    /* −θ flips the sign of sin; a sign flip is exact, so forward and inverse
     * round the same way as the reference */
    const __m256 flip = _mm256_set1_ps(inverse ? -0.0f : 0.0f);
    for (size_t t = 0; t < tokens; t++) {
        const float *ct = cos_table + (size_t)positions[t] * half;
        const float *st = sin_table + (size_t)positions[t] * half;
        for (size_t h = 0; h < heads; h++) {
            float *v = x + t * token_stride + h * head_dim;
            size_t i = 0;
            if (pairing == WHET_ROPE_HALF_SPLIT) {
                for (; i + 8 <= half; i += 8) {
                    __m256 c = _mm256_loadu_ps(ct + i), s = _mm256_xor_ps(_mm256_loadu_ps(st + i), flip);
                    __m256 a = _mm256_loadu_ps(v + i), b = _mm256_loadu_ps(v + half + i);
                    _mm256_storeu_ps(v + i, _mm256_sub_ps(_mm256_mul_ps(a, c), _mm256_mul_ps(b, s)));
                    _mm256_storeu_ps(v + half + i, _mm256_add_ps(_mm256_mul_ps(a, s), _mm256_mul_ps(b, c)));
                }
                for (; i < half; i++)
                    rotate_pair(v + i, v + half + i, ct[i], inverse ? -st[i] : st[i]);
            } else {
                for (; i + 8 <= half; i += 8) {
                    /* Pairs 0-7 sit in lo = x[0..8), hi = x[8..16). shuffle_ps works
                     * within 128-bit lanes, giving evens/odds in pair order
                     * 0 1 4 5 | 2 3 6 7; cos/sin are permuted to match, and the
                     * in-lane unpacks then restore memory order without
                     * another cross-lane step. */
                    __m256 lo = _mm256_loadu_ps(v + 2 * i), hi = _mm256_loadu_ps(v + 2 * i + 8);
                    __m256 a = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
                    __m256 b = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
                    __m256 c = _mm256_castpd_ps(
                        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_loadu_ps(ct + i)), _MM_SHUFFLE(3, 1, 2, 0)));
                    __m256 s = _mm256_castpd_ps(
                        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_loadu_ps(st + i)), _MM_SHUFFLE(3, 1, 2, 0)));
                    s = _mm256_xor_ps(s, flip);
                    __m256 ra = _mm256_sub_ps(_mm256_mul_ps(a, c), _mm256_mul_ps(b, s));
                    __m256 rb = _mm256_add_ps(_mm256_mul_ps(a, s), _mm256_mul_ps(b, c));
                    _mm256_storeu_ps(v + 2 * i, _mm256_unpacklo_ps(ra, rb));
                    _mm256_storeu_ps(v + 2 * i + 8, _mm256_unpackhi_ps(ra, rb));
                }
                for (; i < half; i++)
                    rotate_pair(v + 2 * i, v + 2 * i + 1, ct[i], inverse ? -st[i] : st[i]);
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
 * (sqrt and division are correctly rounded on both sides), so the update is
 * bit-identical to it. */
void whet_adamw_avx2(float *param, float *m, float *v, const float *grad, size_t n, const whet_adamw_params *h)
{
    const float decay = 1.0f - h->lr * h->weight_decay;
    const float step = h->lr / h->bias_correction1;
    const float bc2_sqrt = sqrtf(h->bias_correction2);
    const float one_minus_b1 = 1.0f - h->beta1, one_minus_b2 = 1.0f - h->beta2;
    const float neg_step = -step;
    const __m256 vscale = _mm256_set1_ps(h->grad_scale), vdecay = _mm256_set1_ps(decay);
    const __m256 vb1 = _mm256_set1_ps(h->beta1), vb2 = _mm256_set1_ps(h->beta2);
    const __m256 vomb1 = _mm256_set1_ps(one_minus_b1), vomb2 = _mm256_set1_ps(one_minus_b2);
    const __m256 vbc2 = _mm256_set1_ps(bc2_sqrt), veps = _mm256_set1_ps(h->eps);
    const __m256 vneg_step = _mm256_set1_ps(neg_step);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_mul_ps(_mm256_loadu_ps(grad + i), vscale);
        __m256 p = _mm256_mul_ps(_mm256_loadu_ps(param + i), vdecay);
        __m256 mi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(m + i), vb1), _mm256_mul_ps(vomb1, g));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i), vb2), _mm256_mul_ps(_mm256_mul_ps(vomb2, g), g));
        __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), vbc2), veps);
        _mm256_storeu_ps(param + i, _mm256_add_ps(p, _mm256_div_ps(_mm256_mul_ps(vneg_step, mi), denom)));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
    }
    for (; i < n; i++)
        adamw_one(param + i, m + i, v + i, grad[i], h->grad_scale, decay, h->beta1, h->beta2, one_minus_b1,
                  one_minus_b2, neg_step, bc2_sqrt, h->eps);
}
