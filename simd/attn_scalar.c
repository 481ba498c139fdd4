/* Scalar reference: causal flash attention forward.
 *
 * Per (head, query) row: scores of one block of keys at a time, the running
 * maximum m and sum l of the online softmax (FlashAttention-2), the output
 * row itself as the accumulator, rescaled by exp(m_old − m_new) when the
 * maximum grows, divided by l once at the end. Keys past the causal diagonal
 * are never visited. */
#include "isa_kernels.h"

#include <math.h>

#define ATTN_KV_BLOCK 64

void whet_attention_forward_scalar(float *out, float *lse, const float *q, const float *k, const float *v,
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
            for (size_t d = 0; d < head_dim; d++)
                o[d] = 0.0f;
            for (size_t j0 = 0; j0 < end; j0 += ATTN_KV_BLOCK) {
                size_t nb = end - j0 < ATTN_KV_BLOCK ? end - j0 : ATTN_KV_BLOCK;
                float block_max = -INFINITY;
                for (size_t j = 0; j < nb; j++) {
                    const float *kj = kh + (j0 + j) * kv_stride;
                    float dot = 0.0f;
                    for (size_t d = 0; d < head_dim; d++)
                        dot += qi[d] * kj[d];
                    s[j] = dot * scale;
                    block_max = s[j] > block_max ? s[j] : block_max;
                }
                float m_new = block_max > m ? block_max : m;
                float alpha = expf(m - m_new); /* 0 on the first block (m = −inf) */
                float block_sum = 0.0f;
                for (size_t j = 0; j < nb; j++) {
                    s[j] = expf(s[j] - m_new);
                    block_sum += s[j];
                }
                l = l * alpha + block_sum;
                for (size_t d = 0; d < head_dim; d++)
                    o[d] *= alpha;
                for (size_t j = 0; j < nb; j++) {
                    const float *vj = vh + (j0 + j) * kv_stride;
                    for (size_t d = 0; d < head_dim; d++)
                        o[d] += s[j] * vj[d];
                }
                m = m_new;
            }
            if (l > 0.0f) {
                float inv = 1.0f / l;
                for (size_t d = 0; d < head_dim; d++)
                    o[d] *= inv;
            }
            if (lse)
                lse[h * n_q + i] = l > 0.0f ? m + logf(l) : -INFINITY;
        }
    }
}
