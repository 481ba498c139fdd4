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

/* Scalar reference: causal flash attention backward (FlashAttention-2).
 *
 * For each KV head: its dk and dv rows and its query heads' dq rows start at
 * zero; then for each block of ATTN_KV_BLOCK keys, each query head of the
 * group in order and each query that sees the block in order, P and dS of the
 * (query, key block) pair are recomputed from the saved lse and accumulated:
 * dv_j += P·dout_i, dk_j += dS·q_i, dq_i += dS·k_j. The scale of dq and dk is
 * applied once at the end. Only scratch: two ATTN_KV_BLOCK-float rows, so any
 * head_dim works. */
void whet_attention_backward_scalar(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                    const float *lse, const float *q, const float *k, const float *v, size_t n_q,
                                    size_t n_kv, size_t q_offset, size_t heads, size_t kv_heads, size_t head_dim,
                                    size_t q_stride, size_t kv_stride, size_t out_stride, float scale, size_t g0,
                                    size_t g1)
{
    const size_t group = heads / kv_heads, D = head_dim;
    const size_t kv_end = q_offset + n_q < n_kv ? q_offset + n_q : n_kv; /* keys [0, kv_end) are seen */
    float p[ATTN_KV_BLOCK], ds[ATTN_KV_BLOCK];
    for (size_t g = g0; g < g1; g++) {
        const float *kg = k + g * D, *vg = v + g * D;
        float *dkg = dk + g * D, *dvg = dv + g * D;
        for (size_t j = 0; j < n_kv; j++)
            for (size_t d = 0; d < D; d++)
                dkg[j * kv_stride + d] = dvg[j * kv_stride + d] = 0.0f;
        for (size_t h = g * group; h < (g + 1) * group; h++)
            for (size_t i = 0; i < n_q; i++)
                for (size_t d = 0; d < D; d++)
                    dq[i * q_stride + h * D + d] = 0.0f;
        for (size_t j0 = 0; j0 < kv_end; j0 += ATTN_KV_BLOCK) {
            const size_t nb = kv_end - j0 < ATTN_KV_BLOCK ? kv_end - j0 : ATTN_KV_BLOCK;
            const size_t i_first = j0 > q_offset ? j0 - q_offset : 0; /* the first query that sees key j0 */
            for (size_t h = g * group; h < (g + 1) * group; h++)
                for (size_t i = i_first; i < n_q; i++) {
                    const float *qi = q + i * q_stride + h * D, *doi = dout + i * out_stride + h * D;
                    const float *oi = out + i * out_stride + h * D;
                    float *dqi = dq + i * q_stride + h * D;
                    const float lse_i = lse[h * n_q + i];
                    /* keys [j0, j0 + n) of the block are at or before query i's diagonal */
                    const size_t n = q_offset + i + 1 - j0 < nb ? q_offset + i + 1 - j0 : nb;
                    float d_i = 0.0f;
                    for (size_t d = 0; d < D; d++)
                        d_i += doi[d] * oi[d];
                    for (size_t j = 0; j < n; j++) {
                        const float *kj = kg + (j0 + j) * kv_stride, *vj = vg + (j0 + j) * kv_stride;
                        float s = 0.0f, dp = 0.0f;
                        for (size_t d = 0; d < D; d++) {
                            s += qi[d] * kj[d];
                            dp += doi[d] * vj[d];
                        }
                        p[j] = expf(s * scale - lse_i);
                        ds[j] = p[j] * (dp - d_i);
                    }
                    for (size_t j = 0; j < n; j++) {
                        float *dkj = dkg + (j0 + j) * kv_stride, *dvj = dvg + (j0 + j) * kv_stride;
                        const float *kj = kg + (j0 + j) * kv_stride;
                        for (size_t d = 0; d < D; d++) {
                            dvj[d] += p[j] * doi[d];
                            dkj[d] += ds[j] * qi[d];
                            dqi[d] += ds[j] * kj[d];
                        }
                    }
                }
        }
        for (size_t j = 0; j < kv_end; j++)
            for (size_t d = 0; d < D; d++)
                dkg[j * kv_stride + d] *= scale;
        for (size_t h = g * group; h < (g + 1) * group; h++)
            for (size_t i = 0; i < n_q; i++)
                for (size_t d = 0; d < D; d++)
                    dq[i * q_stride + h * D + d] *= scale;
    }
}
