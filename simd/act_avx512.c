/* AVX-512 F/BW/VL/DQ: activations, RoPE and the AdamW update.
 *
 * Each kernel evaluates the scalar reference's expression in the same order
 * with separate multiplies and adds, so RoPE and AdamW give the scalar bits
 * exactly; SwiGLU and GELU differ from it only through SLEEF's exp/tanh
 * (≤ 1 ULP) instead of libm's. Tails use masked loads and stores through the
 * same vector code, so an element's result never depends on where a caller's
 * range split put it. */
#include "isa_kernels.h"

#include <immintrin.h>
#include <math.h>
#include <sleef.h>

static __mmask16 tail_mask(size_t remaining)
{
    return (__mmask16)(remaining >= 16 ? 0xffffu : (1u << remaining) - 1);
}

static __m512 negate16(__m512 x)
{
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN)));
}

/* σ(g) = 1/(1 + e^−g), as the reference writes it */
static __m512 sigmoid16(__m512 g)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, Sleef_expf16_u10avx512f(negate16(g))));
}

void whet_swiglu_forward_avx512(float *h, const float *gate, const float *up, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 g = _mm512_maskz_loadu_ps(k, gate + i), u = _mm512_maskz_loadu_ps(k, up + i);
        _mm512_mask_storeu_ps(h + i, k, _mm512_mul_ps(_mm512_mul_ps(g, sigmoid16(g)), u));
    }
}

/* dgate = dh·up·silu'(g) with silu'(g) = σ·(1 + g·(1 − σ)); dup = dh·g·σ */
void whet_swiglu_backward_avx512(float *dgate, float *dup, const float *dh, const float *gate, const float *up,
                                 size_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 g = _mm512_maskz_loadu_ps(k, gate + i), d = _mm512_maskz_loadu_ps(k, dh + i);
        __m512 u = _mm512_maskz_loadu_ps(k, up + i);
        __m512 s = sigmoid16(g);
        __m512 dsilu = _mm512_mul_ps(s, _mm512_add_ps(one, _mm512_mul_ps(g, _mm512_sub_ps(one, s))));
        _mm512_mask_storeu_ps(dgate + i, k, _mm512_mul_ps(_mm512_mul_ps(d, u), dsilu));
        _mm512_mask_storeu_ps(dup + i, k, _mm512_mul_ps(d, _mm512_mul_ps(g, s)));
    }
}

#define GELU_C 0.7978845608028654f /* √(2/π) */
#define GELU_A 0.044715f

/* tanh(√(2/π)·(x + 0.044715·x³)), with x³ multiplied left to right as in the reference */
static __m512 gelu_tanh16(__m512 x)
{
    __m512 cube = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(GELU_A), x), x), x);
    return Sleef_tanhf16_u10avx512f(_mm512_mul_ps(_mm512_set1_ps(GELU_C), _mm512_add_ps(x, cube)));
}

void whet_gelu_forward_avx512(float *y, const float *x, size_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __m512 t = gelu_tanh16(v);
        _mm512_mask_storeu_ps(y + i, k, _mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_add_ps(one, t)));
    }
}

/* gelu'(x) = ½(1 + t) + ½x·(1 − t²)·√(2/π)(1 + 3·0.044715·x²) */
void whet_gelu_backward_avx512(float *dx, const float *dy, const float *x, size_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f);
    const __m512 c = _mm512_set1_ps(GELU_C), a3 = _mm512_set1_ps(3.0f * GELU_A);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i), d = _mm512_maskz_loadu_ps(k, dy + i);
        __m512 t = gelu_tanh16(v);
        __m512 du = _mm512_mul_ps(c, _mm512_add_ps(one, _mm512_mul_ps(_mm512_mul_ps(a3, v), v)));
        __m512 left = _mm512_mul_ps(half, _mm512_add_ps(one, t));
        __m512 right = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_sub_ps(one, _mm512_mul_ps(t, t))), du);
        _mm512_mask_storeu_ps(dx + i, k, _mm512_mul_ps(d, _mm512_add_ps(left, right)));
    }
}

/* a' = a·c − b·s, b' = a·s + b·c, in the reference's order */
static void rotate16(__m512 a, __m512 b, __m512 c, __m512 s, __m512 *ra, __m512 *rb)
{
    *ra = _mm512_sub_ps(_mm512_mul_ps(a, c), _mm512_mul_ps(b, s));
    *rb = _mm512_add_ps(_mm512_mul_ps(a, s), _mm512_mul_ps(b, c));
}

void whet_rope_avx512(float *x, size_t tokens, size_t heads, size_t head_dim, size_t token_stride,
                      const int32_t *positions, const float *cos_table, const float *sin_table,
                      whet_rope_pairing pairing, int inverse)
{
    const size_t half = head_dim / 2;
    /* −θ flips the sign of sin; a sign flip is exact, so forward and inverse
     * round the same way as the reference */
    const __m512i flip = _mm512_set1_epi32(inverse ? INT32_MIN : 0);
    /* evens/odds of the 32 floats in two registers, and the way back */
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (size_t t = 0; t < tokens; t++) {
        const float *ct = cos_table + (size_t)positions[t] * half;
        const float *st = sin_table + (size_t)positions[t] * half;
        for (size_t h = 0; h < heads; h++) {
            float *v = x + t * token_stride + h * head_dim;
            for (size_t i = 0; i < half; i += 16) {
                size_t pairs = half - i < 16 ? half - i : 16;
                __mmask16 k = tail_mask(pairs);
                __m512 c = _mm512_maskz_loadu_ps(k, ct + i);
                __m512 s = _mm512_castsi512_ps(
                    _mm512_xor_si512(_mm512_castps_si512(_mm512_maskz_loadu_ps(k, st + i)), flip));
                __m512 ra, rb;
                if (pairing == WHET_ROPE_HALF_SPLIT) {
                    rotate16(_mm512_maskz_loadu_ps(k, v + i), _mm512_maskz_loadu_ps(k, v + half + i), c, s, &ra, &rb);
                    _mm512_mask_storeu_ps(v + i, k, ra);
                    _mm512_mask_storeu_ps(v + half + i, k, rb);
                } else {
                    /* 2·pairs floats span one or two registers */
                    __mmask16 k0 = tail_mask(2 * pairs), k1 = tail_mask(2 * pairs > 16 ? 2 * pairs - 16 : 0);
                    __m512 v0 = _mm512_maskz_loadu_ps(k0, v + 2 * i), v1 = _mm512_maskz_loadu_ps(k1, v + 2 * i + 16);
                    rotate16(_mm512_permutex2var_ps(v0, even, v1), _mm512_permutex2var_ps(v0, odd, v1), c, s, &ra,
                             &rb);
                    _mm512_mask_storeu_ps(v + 2 * i, k0, _mm512_permutex2var_ps(ra, lo, rb));
                    _mm512_mask_storeu_ps(v + 2 * i + 16, k1, _mm512_permutex2var_ps(ra, hi, rb));
                }
            }
        }
    }
}

/* Same per-element operation order as the reference with no fused multiply-add
 * (sqrt and division are correctly rounded on both sides), so the update is
 * bit-identical to it. Masked-off tail lanes compute on zeros and are not
 * stored. */
void whet_adamw_avx512(float *param, float *m, float *v, const float *grad, size_t n, const whet_adamw_params *h)
{
    const float decay = 1.0f - h->lr * h->weight_decay;
    const float step = h->lr / h->bias_correction1;
    const float bc2_sqrt = sqrtf(h->bias_correction2);
    const __m512 vscale = _mm512_set1_ps(h->grad_scale), vdecay = _mm512_set1_ps(decay);
    const __m512 vb1 = _mm512_set1_ps(h->beta1), vb2 = _mm512_set1_ps(h->beta2);
    const __m512 vomb1 = _mm512_set1_ps(1.0f - h->beta1), vomb2 = _mm512_set1_ps(1.0f - h->beta2);
    const __m512 vbc2 = _mm512_set1_ps(bc2_sqrt), veps = _mm512_set1_ps(h->eps);
    const __m512 vneg_step = _mm512_set1_ps(-step);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, grad + i), vscale);
        __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, param + i), vdecay);
        __m512 mi = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, m + i), vb1), _mm512_mul_ps(vomb1, g));
        __m512 vi = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, v + i), vb2),
                                  _mm512_mul_ps(_mm512_mul_ps(vomb2, g), g));
        __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), vbc2), veps);
        _mm512_mask_storeu_ps(param + i, k, _mm512_add_ps(p, _mm512_div_ps(_mm512_mul_ps(vneg_step, mi), denom)));
        _mm512_mask_storeu_ps(m + i, k, mi);
        _mm512_mask_storeu_ps(v + i, k, vi);
    }
}
