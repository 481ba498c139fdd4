/* AArch64 Advanced SIMD: causal flash attention forward (see attn_scalar.c
 * for the algorithm), blocked as attn_avx512.c is, four lanes wide.
 *
 * Four query rows of one head go in the four lanes of a vector: Q is
 * transposed once per block into qt[d][4], so S = Q·Kᵀ for a block of 8 keys
 * is 8 accumulators (one per key), each the FMA chain over d of qt[d] times
 * k[j][d] (four dimensions of a key loaded at once and used lane by lane).
 * Every lane is one query row, so the online softmax (block maximum, exp
 * through SLEEF, ≤ 1 ULP, running sum) is lane-wise with no horizontal
 * reduction, and O += P·V runs on the transposed accumulator ot[d][4]: four
 * dimensions at a time, 8 FMAs of P's key vectors with lanes of v[j][d..d+3].
 * Keys past a row's diagonal get probability exactly 0, so adding them
 * changes no bit: each row's result is its own keys' sum, in key order,
 * whatever the rows it is blocked with. Blocks of fewer than ROWS_MIN rows
 * (decoding) and heads wider than QT_MAX_DIM take the row path, which repeats
 * one lane's operations (the same bits). */
#include "isa_kernels.h"

#include <arm_neon.h>
#include <math.h>
#include <sleef.h>
#include <string.h>

#define LANES 4        /* query rows per block: one per lane */
#define KEYS 8         /* keys per block: one score accumulator each */
#define ROWS_MIN 2     /* fewer rows than this take the row path */
#define QT_MAX_DIM 256 /* qt and ot on the stack: 2·256·4 floats */

/* Lane r of the score vector x for key j0 + j: −inf past row r's diagonal
 * (key first + r). */
static float32x4_t causal(float32x4_t x, size_t j0, size_t j, size_t first)
{
    if (j0 + j <= first)
        return x;
    static const uint32_t lanes[4] = {0, 1, 2, 3};
    uint32x4_t keep = vcgeq_u32(vld1q_u32(lanes), vdupq_n_u32((uint32_t)(j0 + j - first)));
    return vbslq_f32(keep, x, vdupq_n_f32(-INFINITY));
}

/* The online-softmax step for one block of scores s[KEYS] (scaled, masked):
 * new maximum, alpha = exp(m_old − m_new), s = exp(s − m_new) (0 where −inf),
 * l = l·alpha + Σ_j s_j in key order. Returns alpha. */
static float32x4_t softmax_step(float32x4_t *s, float32x4_t *m, float32x4_t *l)
{
    const float32x4_t neg_inf = vdupq_n_f32(-INFINITY), zero = vdupq_n_f32(0.0f);
    float32x4_t bmax = *m;
    for (size_t j = 0; j < KEYS; j++)
        bmax = vmaxq_f32(bmax, s[j]);
    const float32x4_t alpha = Sleef_expf4_u10advsimd(vsubq_f32(*m, bmax)); /* 0 on the first block */
    *m = bmax;
    float32x4_t bsum = zero;
    for (size_t j = 0; j < KEYS; j++) {
        uint32x4_t dead = vceqq_f32(s[j], neg_inf);
        s[j] = vbslq_f32(dead, zero, Sleef_expf4_u10advsimd(vsubq_f32(s[j], bmax)));
        bsum = vaddq_f32(bsum, s[j]);
    }
    *l = vfmaq_f32(bsum, *l, alpha);
    return alpha;
}

#define REP8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

/* 8 keys from kb/vb (all before n_kv): S in 8 named accumulators, the
 * softmax step, then ot += P·V four dimensions at a time. */
static void full_block(float *ot, const float *qt, const float *kb, const float *vb, size_t D, size_t ks, size_t j0,
                       size_t first, float scale, float32x4_t *m, float32x4_t *l)
{
#define DECL(j) float32x4_t s##j = vdupq_n_f32(0.0f); const float *k##j = kb + (j) * ks;
    REP8(DECL)
#undef DECL
    size_t d = 0;
    for (; d + 4 <= D; d += 4) {
        const float32x4_t q0 = vld1q_f32(qt + d * LANES), q1 = vld1q_f32(qt + (d + 1) * LANES);
        const float32x4_t q2 = vld1q_f32(qt + (d + 2) * LANES), q3 = vld1q_f32(qt + (d + 3) * LANES);
#define FMA(j)                                                                                                         \
    {                                                                                                                  \
        const float32x4_t kv = vld1q_f32(k##j + d);                                                                    \
        s##j = vfmaq_laneq_f32(s##j, q0, kv, 0);                                                                       \
        s##j = vfmaq_laneq_f32(s##j, q1, kv, 1);                                                                       \
        s##j = vfmaq_laneq_f32(s##j, q2, kv, 2);                                                                       \
        s##j = vfmaq_laneq_f32(s##j, q3, kv, 3);                                                                       \
    }
        REP8(FMA)
#undef FMA
    }
    for (; d < D; d++) {
        const float32x4_t qd = vld1q_f32(qt + d * LANES);
#define FMA(j) s##j = vfmaq_n_f32(s##j, qd, k##j[d]);
        REP8(FMA)
#undef FMA
    }
    float32x4_t s[KEYS];
#define STORE(j) s[j] = causal(vmulq_n_f32(s##j, scale), j0, j, first);
    REP8(STORE)
#undef STORE
    const float32x4_t alpha = softmax_step(s, m, l);
#define LOAD(j) const float32x4_t p##j = s[j]; const float *v##j = vb + (j) * ks;
    REP8(LOAD)
#undef LOAD
    for (d = 0; d + 4 <= D; d += 4) {
        float *od = ot + d * LANES;
        float32x4_t o0 = vmulq_f32(vld1q_f32(od), alpha), o1 = vmulq_f32(vld1q_f32(od + LANES), alpha);
        float32x4_t o2 = vmulq_f32(vld1q_f32(od + 2 * LANES), alpha), o3 = vmulq_f32(vld1q_f32(od + 3 * LANES), alpha);
#define KEY(j)                                                                                                         \
    {                                                                                                                  \
        const float32x4_t vv = vld1q_f32(v##j + d);                                                                    \
        o0 = vfmaq_laneq_f32(o0, p##j, vv, 0);                                                                         \
        o1 = vfmaq_laneq_f32(o1, p##j, vv, 1);                                                                         \
        o2 = vfmaq_laneq_f32(o2, p##j, vv, 2);                                                                         \
        o3 = vfmaq_laneq_f32(o3, p##j, vv, 3);                                                                         \
    }
        REP8(KEY)
#undef KEY
        vst1q_f32(od, o0), vst1q_f32(od + LANES, o1), vst1q_f32(od + 2 * LANES, o2), vst1q_f32(od + 3 * LANES, o3);
    }
    for (; d < D; d++) {
        float32x4_t o = vmulq_f32(vld1q_f32(ot + d * LANES), alpha);
#define KEY(j) o = vfmaq_n_f32(o, p##j, v##j[d]);
        REP8(KEY)
#undef KEY
        vst1q_f32(ot + d * LANES, o);
    }
}

/* The last, partial block of nb < 8 keys: the same operations on the keys
 * that exist (missing keys are −inf scores, never read). */
static void partial_block(float *ot, const float *qt, const float *kb, const float *vb, size_t D, size_t ks,
                          size_t j0, size_t nb, size_t first, float scale, float32x4_t *m, float32x4_t *l)
{
    float32x4_t s[KEYS];
    for (size_t j = 0; j < KEYS; j++)
        s[j] = vdupq_n_f32(0.0f);
    for (size_t d = 0; d < D; d++) {
        const float32x4_t qd = vld1q_f32(qt + d * LANES);
        for (size_t j = 0; j < nb; j++)
            s[j] = vfmaq_n_f32(s[j], qd, kb[j * ks + d]);
    }
    for (size_t j = 0; j < KEYS; j++)
        s[j] = j < nb ? causal(vmulq_n_f32(s[j], scale), j0, j, first) : vdupq_n_f32(-INFINITY);
    const float32x4_t alpha = softmax_step(s, m, l);
    for (size_t d = 0; d < D; d++) {
        float32x4_t o = vmulq_f32(vld1q_f32(ot + d * LANES), alpha);
        for (size_t j = 0; j < nb; j++)
            o = vfmaq_n_f32(o, s[j], vb[j * ks + d]);
        vst1q_f32(ot + d * LANES, o);
    }
}

/* Rows [i0, i1) of head h one at a time, with the very operations of one lane
 * of a block (the same key blocks, FMA chains, maxima, SLEEF calls and
 * summation orders), so a row gets the same bits either way: scores for 8
 * keys (two vectors) at once, P·V over head_dim. */
static void attend_rows(float *out, float *lse, const float *q, const float *kh, const float *vh, size_t i0,
                        size_t i1, size_t n_q, size_t q_offset, size_t h, size_t D, size_t q_stride,
                        size_t kv_stride, size_t out_stride, float scale)
{
    float p[KEYS], t[KEYS];
    for (size_t i = i0; i < i1; i++) {
        const float *qi = q + i * q_stride;
        float *o = out + i * out_stride;
        const size_t end = q_offset + i + 1; /* keys [0, end) */
        float m = -INFINITY, l = 0.0f;
        memset(o, 0, D * sizeof(float));
        for (size_t j0 = 0; j0 < end; j0 += KEYS) {
            const size_t nb = end - j0 < KEYS ? end - j0 : KEYS;
            const float *kb = kh + j0 * kv_stride;
            float32x4_t s[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
            for (size_t d = 0; d < D; d++) {
                for (size_t j = 0; j < KEYS; j++)
                    t[j] = j < nb ? kb[j * kv_stride + d] : 0.0f;
                s[0] = vfmaq_n_f32(s[0], vld1q_f32(t), qi[d]);
                s[1] = vfmaq_n_f32(s[1], vld1q_f32(t + 4), qi[d]);
            }
            vst1q_f32(t, vmulq_n_f32(s[0], scale));
            vst1q_f32(t + 4, vmulq_n_f32(s[1], scale));
            float bmax = m;
            for (size_t j = 0; j < KEYS; j++) {
                if (j >= nb)
                    t[j] = -INFINITY;
                bmax = t[j] > bmax ? t[j] : bmax;
            }
            float alpha = vgetq_lane_f32(Sleef_expf4_u10advsimd(vdupq_n_f32(m - bmax)), 0);
            m = bmax;
            for (size_t half = 0; half < 2; half++)
                vst1q_f32(p + 4 * half, Sleef_expf4_u10advsimd(vsubq_f32(vld1q_f32(t + 4 * half), vdupq_n_f32(m))));
            float bsum = 0.0f;
            for (size_t j = 0; j < KEYS; j++) {
                if (j >= nb)
                    p[j] = 0.0f;
                bsum += p[j];
            }
            l = fmaf(l, alpha, bsum);
            const float *vb = vh + j0 * kv_stride;
            size_t d = 0;
            for (; d + 4 <= D; d += 4) {
                float32x4_t acc = vmulq_n_f32(vld1q_f32(o + d), alpha);
                for (size_t j = 0; j < nb; j++)
                    acc = vfmaq_n_f32(acc, vld1q_f32(vb + j * kv_stride + d), p[j]);
                vst1q_f32(o + d, acc);
            }
            for (; d < D; d++) {
                float acc = o[d] * alpha;
                for (size_t j = 0; j < nb; j++)
                    acc = fmaf(p[j], vb[j * kv_stride + d], acc);
                o[d] = acc;
            }
        }
        const float inv = 1.0f / l;
        for (size_t d = 0; d < D; d++)
            o[d] *= inv;
        if (lse)
            lse[h * n_q + i] = m + logf(l);
    }
}

/* Rows [i0, i0 + nr) of head h (nr ≤ LANES) as one block. */
static void attend_block(float *out, float *lse, const float *q, const float *kh, const float *vh, size_t i0,
                         size_t nr, size_t n_q, size_t q_offset, size_t h, size_t D, size_t q_stride,
                         size_t kv_stride, size_t out_stride, float scale)
{
    float qt[QT_MAX_DIM * LANES], ot[QT_MAX_DIM * LANES];
    for (size_t d = 0; d < D; d++)
        for (size_t r = 0; r < LANES; r++)
            qt[d * LANES + r] = r < nr ? q[(i0 + r) * q_stride + d] : 0.0f;
    memset(ot, 0, D * LANES * sizeof(float));
    float32x4_t m = vdupq_n_f32(-INFINITY), l = vdupq_n_f32(0.0f);
    const size_t first = q_offset + i0;    /* the first row's diagonal key */
    const size_t end = q_offset + i0 + nr; /* keys [0, end) are read */
    for (size_t j0 = 0; j0 < end; j0 += KEYS) {
        const size_t nb = end - j0 < KEYS ? end - j0 : KEYS;
        if (nb == KEYS)
            full_block(ot, qt, kh + j0 * kv_stride, vh + j0 * kv_stride, D, kv_stride, j0, first, scale, &m, &l);
        else
            partial_block(ot, qt, kh + j0 * kv_stride, vh + j0 * kv_stride, D, kv_stride, j0, nb, first, scale, &m,
                          &l);
    }
    /* out = ot / l, transposed back into the rows */
    const float32x4_t inv = vdivq_f32(vdupq_n_f32(1.0f), l);
    for (size_t d = 0; d < D; d++)
        vst1q_f32(ot + d * LANES, vmulq_f32(vld1q_f32(ot + d * LANES), inv));
    for (size_t r = 0; r < nr; r++) {
        float *o = out + (i0 + r) * out_stride;
        for (size_t d = 0; d < D; d++)
            o[d] = ot[d * LANES + r];
    }
    if (lse) {
        float mv[LANES], lv[LANES];
        vst1q_f32(mv, m);
        vst1q_f32(lv, l);
        for (size_t r = 0; r < nr; r++)
            lse[h * n_q + i0 + r] = mv[r] + logf(lv[r]);
    }
}

void whet_attention_forward_neon(float *out, float *lse, const float *q, const float *k, const float *v, size_t n_q,
                                 size_t n_kv, size_t q_offset, size_t heads, size_t kv_heads, size_t head_dim,
                                 size_t q_stride, size_t kv_stride, size_t out_stride, float scale, size_t h0,
                                 size_t h1)
{
    (void)n_kv; /* keys past q_offset + n_q (≤ n_kv) are never read */
    const size_t group = heads / kv_heads;
    for (size_t h = h0; h < h1; h++) {
        const size_t g = h / group;
        const float *kh = k + g * head_dim, *vh = v + g * head_dim, *qh = q + h * head_dim;
        float *oh = out + h * head_dim;
        size_t i = 0;
        if (head_dim <= QT_MAX_DIM)
            for (; n_q - i >= ROWS_MIN; i += LANES) {
                size_t nr = n_q - i < LANES ? n_q - i : LANES;
                attend_block(oh, lse, qh, kh, vh, i, nr, n_q, q_offset, h, head_dim, q_stride, kv_stride,
                             out_stride, scale);
                if (nr < LANES) {
                    i += nr;
                    break;
                }
            }
        if (i < n_q)
            attend_rows(oh, lse, qh, kh, vh, i, n_q, n_q, q_offset, h, head_dim, q_stride, kv_stride, out_stride,
                        scale);
    }
}

/* TEMPORARY: the scalar reference until the neon backward lands. */
void whet_attention_backward_neon(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                    const float *lse, const float *q, const float *k, const float *v, size_t n_q,
                                    size_t n_kv, size_t q_offset, size_t heads, size_t kv_heads, size_t head_dim,
                                    size_t q_stride, size_t kv_stride, size_t out_stride, float scale, size_t g0,
                                    size_t g1)
{
    whet_attention_backward_scalar(dq, dk, dv, dout, out, lse, q, k, v, n_q, n_kv, q_offset, heads, kv_heads,
                                   head_dim, q_stride, kv_stride, out_stride, scale, g0, g1);
}
