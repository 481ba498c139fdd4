/* AVX-512: causal flash attention forward (see attn_scalar.c for the
 * algorithm). Dot products and the P·V accumulation run over head_dim in
 * 16-lane FMAs with a masked tail; the block's exponentials go through SLEEF
 * (≤ 1 ULP), 16 scores at a time. */
#include "isa_kernels.h"

#include <immintrin.h>
#include <math.h>
#include <sleef.h>

#define ATTN_KV_BLOCK 64

static __mmask16 tail_mask(size_t remaining)
{
    return (__mmask16)(remaining >= 16 ? 0xffffu : (1u << remaining) - 1);
}

static float dot16(const float *a, const float *b, size_t n)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    size_t d = 0;
    for (; d + 32 <= n; d += 32) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(b + d), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + d + 16), _mm512_loadu_ps(b + d + 16), acc1);
    }
    for (; d < n; d += 16) {
        __mmask16 m = tail_mask(n - d);
        acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + d), _mm512_maskz_loadu_ps(m, b + d), acc0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* o = o·alpha + Σ_j p[j]·v_j over head_dim */
static void rescale_accumulate(float *o, float alpha, const float *p, const float *v, size_t nb, size_t kv_stride,
                               size_t n)
{
    const __m512 va = _mm512_set1_ps(alpha);
    for (size_t d = 0; d < n; d += 16) {
        __mmask16 m = tail_mask(n - d);
        __m512 acc = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, o + d), va);
        for (size_t j = 0; j < nb; j++)
            acc = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), _mm512_maskz_loadu_ps(m, v + j * kv_stride + d), acc);
        _mm512_mask_storeu_ps(o + d, m, acc);
    }
}

void whet_attention_forward_avx512(float *out, float *lse, const float *q, const float *k, const float *v,
                                   size_t n_q, size_t n_kv, size_t q_offset, size_t heads, size_t kv_heads,
                                   size_t head_dim, size_t q_stride, size_t kv_stride, size_t out_stride,
                                   float scale, size_t h0, size_t h1)
{
    const size_t group = heads / kv_heads;
    float s[ATTN_KV_BLOCK];
    for (size_t h = h0; h < h1; h++) {
        const size_t g = h / group;
        const float *kh = k + g * head_dim, *vh = v + g * head_dim;
        for (size_t i = 0; i < n_q; i++) {
            const float *qi = q + i * q_stride + h * head_dim;
            float *o = out + i * out_stride + h * head_dim;
            size_t end = q_offset + i + 1 < n_kv ? q_offset + i + 1 : n_kv; /* keys [0, end) */
            float m = -INFINITY, l = 0.0f;
            for (size_t d = 0; d < head_dim; d += 16)
                _mm512_mask_storeu_ps(o + d, tail_mask(head_dim - d), _mm512_setzero_ps());
            for (size_t j0 = 0; j0 < end; j0 += ATTN_KV_BLOCK) {
                size_t nb = end - j0 < ATTN_KV_BLOCK ? end - j0 : ATTN_KV_BLOCK;
                float block_max = -INFINITY;
                for (size_t j = 0; j < nb; j++) {
                    s[j] = dot16(qi, kh + (j0 + j) * kv_stride, head_dim) * scale;
                    block_max = s[j] > block_max ? s[j] : block_max;
                }
                float m_new = block_max > m ? block_max : m;
                float alpha = expf(m - m_new); /* 0 on the first block (m = −inf) */
                const __m512 vmax = _mm512_set1_ps(m_new);
                __m512 vsum = _mm512_setzero_ps();
                for (size_t j = 0; j < nb; j += 16) {
                    __mmask16 mk = tail_mask(nb - j);
                    __m512 e = Sleef_expf16_u10avx512f(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, s + j), vmax));
                    e = _mm512_maskz_mov_ps(mk, e);
                    _mm512_mask_storeu_ps(s + j, mk, e);
                    vsum = _mm512_add_ps(vsum, e);
                }
                l = l * alpha + _mm512_reduce_add_ps(vsum);
                rescale_accumulate(o, alpha, s, vh + j0 * kv_stride, nb, kv_stride, head_dim);
                m = m_new;
            }
            if (l > 0.0f) {
                const __m512 inv = _mm512_set1_ps(1.0f / l);
                for (size_t d = 0; d < head_dim; d += 16) {
                    __mmask16 mk = tail_mask(head_dim - d);
                    _mm512_mask_storeu_ps(o + d, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, o + d), inv));
                }
            }
            if (lse)
                lse[h * n_q + i] = l > 0.0f ? m + logf(l) : -INFINITY;
        }
    }
}
