/* AArch64 Advanced SIMD: causal flash attention forward (see attn_scalar.c for
 * the algorithm). Dot products and the P·V accumulation run over head_dim in
 * 4-lane FMAs (a scalar tail, in the same order for every row); the block's
 * exponentials go through SLEEF (≤ 1 ULP), 4 scores at a time. */
#include "isa_kernels.h"

#include <arm_neon.h>
#include <math.h>
#include <sleef.h>

#define ATTN_KV_BLOCK 64

static float dot4(const float *a, const float *b, size_t n)
{
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
    size_t d = 0;
    for (; d + 8 <= n; d += 8) {
        acc0 = vfmaq_f32(acc0, vld1q_f32(a + d), vld1q_f32(b + d));
        acc1 = vfmaq_f32(acc1, vld1q_f32(a + d + 4), vld1q_f32(b + d + 4));
    }
    for (; d + 4 <= n; d += 4)
        acc0 = vfmaq_f32(acc0, vld1q_f32(a + d), vld1q_f32(b + d));
    float sum = vaddvq_f32(vaddq_f32(acc0, acc1));
    for (; d < n; d++)
        sum += a[d] * b[d];
    return sum;
}

/* o = o·alpha + Σ_j p[j]·v_j over head_dim */
static void rescale_accumulate(float *o, float alpha, const float *p, const float *v, size_t nb, size_t kv_stride,
                               size_t n)
{
    size_t d = 0;
    for (; d + 4 <= n; d += 4) {
        float32x4_t acc = vmulq_n_f32(vld1q_f32(o + d), alpha);
        for (size_t j = 0; j < nb; j++)
            acc = vfmaq_n_f32(acc, vld1q_f32(v + j * kv_stride + d), p[j]);
        vst1q_f32(o + d, acc);
    }
    for (; d < n; d++) {
        float acc = o[d] * alpha;
        for (size_t j = 0; j < nb; j++)
            acc += p[j] * v[j * kv_stride + d];
        o[d] = acc;
    }
}

void whet_attention_forward_neon(float *out, float *lse, const float *q, const float *k, const float *v,
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
            for (size_t d = 0; d < head_dim; d++)
                o[d] = 0.0f;
            for (size_t j0 = 0; j0 < end; j0 += ATTN_KV_BLOCK) {
                size_t nb = end - j0 < ATTN_KV_BLOCK ? end - j0 : ATTN_KV_BLOCK;
                float block_max = -INFINITY;
                for (size_t j = 0; j < nb; j++) {
                    s[j] = dot4(qi, kh + (j0 + j) * kv_stride, head_dim) * scale;
                    block_max = s[j] > block_max ? s[j] : block_max;
                }
                float m_new = block_max > m ? block_max : m;
                float alpha = expf(m - m_new); /* 0 on the first block (m = −inf) */
                const float32x4_t vmax = vdupq_n_f32(m_new);
                float32x4_t vsum = vdupq_n_f32(0.0f);
                size_t j = 0;
                for (; j + 4 <= nb; j += 4) {
                    float32x4_t e = Sleef_expf4_u10advsimd(vsubq_f32(vld1q_f32(s + j), vmax));
                    vst1q_f32(s + j, e);
                    vsum = vaddq_f32(vsum, e);
                }
                if (j < nb) { /* the tail through the same vector exp, padded with −inf (exp → 0) */
                    float tail[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
                    for (size_t t = 0; j + t < nb; t++)
                        tail[t] = s[j + t];
                    float32x4_t e = Sleef_expf4_u10advsimd(vsubq_f32(vld1q_f32(tail), vmax));
                    vst1q_f32(tail, e);
                    for (size_t t = 0; j + t < nb; t++)
                        s[j + t] = tail[t];
                    vsum = vaddq_f32(vsum, e);
                }
                l = l * alpha + vaddvq_f32(vsum);
                rescale_accumulate(o, alpha, s, vh + j0 * kv_stride, nb, kv_stride, head_dim);
                m = m_new;
            }
            if (l > 0.0f) {
                float inv = 1.0f / l;
                size_t d = 0;
                for (; d + 4 <= head_dim; d += 4)
                    vst1q_f32(o + d, vmulq_n_f32(vld1q_f32(o + d), inv));
                for (; d < head_dim; d++)
                    o[d] *= inv;
            }
            if (lse)
                lse[h * n_q + i] = l > 0.0f ? m + logf(l) : -INFINITY;
        }
    }
}
