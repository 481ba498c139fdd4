/* AVX2 + FMA: causal flash attention forward (see attn_scalar.c for the
 * algorithm). Dot products and the P·V accumulation run over head_dim in
 * 8-lane FMAs with a masked tail; the block's exponentials go through SLEEF
 * (≤ 1 ULP), 8 scores at a time. */
#include "isa_kernels.h"

#include <immintrin.h>
#include <math.h>
#include <sleef.h>

#define ATTN_KV_BLOCK 64

static __m256i tail_mask8(size_t remaining)
{
    int r = remaining >= 8 ? 8 : (int)remaining;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static float hsum8(__m256 x)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static float dot8(const float *a, const float *b, size_t n)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    size_t d = 0;
    for (; d + 16 <= n; d += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 8), _mm256_loadu_ps(b + d + 8), acc1);
    }
    for (; d < n; d += 8) {
        __m256i m = tail_mask8(n - d);
        acc0 = _mm256_fmadd_ps(_mm256_maskload_ps(a + d, m), _mm256_maskload_ps(b + d, m), acc0);
    }
    return hsum8(_mm256_add_ps(acc0, acc1));
}

/* o = o·alpha + Σ_j p[j]·v_j over head_dim */
static void rescale_accumulate(float *o, float alpha, const float *p, const float *v, size_t nb, size_t kv_stride,
                               size_t n)
{
    const __m256 va = _mm256_set1_ps(alpha);
    for (size_t d = 0; d < n; d += 8) {
        __m256i m = tail_mask8(n - d);
        __m256 acc = _mm256_mul_ps(_mm256_maskload_ps(o + d, m), va);
        for (size_t j = 0; j < nb; j++)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_maskload_ps(v + j * kv_stride + d, m), acc);
        _mm256_maskstore_ps(o + d, m, acc);
    }
}

void whet_attention_forward_avx2(float *out, float *lse, const float *q, const float *k, const float *v,
                                 size_t n_q, size_t n_kv, size_t q_offset, size_t heads, size_t kv_heads,
                                 size_t head_dim, size_t q_stride, size_t kv_stride, size_t out_stride, float scale,
                                 size_t h0, size_t h1)
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
            for (size_t d = 0; d < head_dim; d += 8)
                _mm256_maskstore_ps(o + d, tail_mask8(head_dim - d), _mm256_setzero_ps());
            for (size_t j0 = 0; j0 < end; j0 += ATTN_KV_BLOCK) {
                size_t nb = end - j0 < ATTN_KV_BLOCK ? end - j0 : ATTN_KV_BLOCK;
                float block_max = -INFINITY;
                for (size_t j = 0; j < nb; j++) {
                    s[j] = dot8(qi, kh + (j0 + j) * kv_stride, head_dim) * scale;
                    block_max = s[j] > block_max ? s[j] : block_max;
                }
                float m_new = block_max > m ? block_max : m;
                float alpha = expf(m - m_new); /* 0 on the first block (m = −inf) */
                const __m256 vmax = _mm256_set1_ps(m_new);
                __m256 vsum = _mm256_setzero_ps();
                for (size_t j = 0; j < nb; j += 8) {
                    __m256i mk = tail_mask8(nb - j);
                    __m256 e = Sleef_expf8_u10avx2(_mm256_sub_ps(_mm256_maskload_ps(s + j, mk), vmax));
                    e = _mm256_and_ps(e, _mm256_castsi256_ps(mk));
                    _mm256_maskstore_ps(s + j, mk, e);
                    vsum = _mm256_add_ps(vsum, e);
                }
                l = l * alpha + hsum8(vsum);
                rescale_accumulate(o, alpha, s, vh + j0 * kv_stride, nb, kv_stride, head_dim);
                m = m_new;
            }
            if (l > 0.0f) {
                const __m256 inv = _mm256_set1_ps(1.0f / l);
                for (size_t d = 0; d < head_dim; d += 8) {
                    __m256i mk = tail_mask8(head_dim - d);
                    _mm256_maskstore_ps(o + d, mk, _mm256_mul_ps(_mm256_maskload_ps(o + d, mk), inv));
                }
            }
            if (lse)
                lse[h * n_q + i] = l > 0.0f ? m + logf(l) : -INFINITY;
        }
    }
}
