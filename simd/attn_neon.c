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

/* Backward (see attn_scalar.c for the algorithm; attn_avx512.c for the
 * blocking, here four lanes wide): four query rows of one head in the lanes,
 * q and dout transposed once into qt[d][4] and dot[d][4]; for each block of
 * 8 keys at or before the block's last diagonal, S and dP as 8 accumulators
 * each, P = exp(scale·S − lse) lane-wise (0 past a row's diagonal and in
 * padding lanes), dS = P·(dP − D), dqt[d][4] += Σ_j dS_j·k[j][d] four
 * dimensions at a time, then dv_j += Σ_r P[j][r]·dout_r and dk_j += Σ_r
 * dS[j][r]·q_r on the rows in memory: the four rows' coefficients of key j
 * are one vector, used lane by lane (four keys × 16 dimensions of
 * accumulators). Per KV head the order is fixed (query heads, query blocks,
 * rows within a block, each in order), so the bits never depend on [g0,g1).
 * Heads wider than QT_MAX_DIM take the scalar code. */

/* acc_j[0,D) += Σ_r coef[j][r]·src_r[0,D) for keys j < nb, r = 0..3 in order;
 * src[r] of a padding row points at zeros (its coefficients are 0). */
static void rows_update(float *acc, size_t acc_stride, const float *coef, size_t nb, const float *const src[LANES],
                        size_t D)
{
    const float *s0 = src[0], *s1 = src[1], *s2 = src[2], *s3 = src[3];
    size_t j = 0;
    for (; j + 4 <= nb; j += 4) {
        float *a0 = acc + j * acc_stride, *a1 = a0 + acc_stride, *a2 = a1 + acc_stride, *a3 = a2 + acc_stride;
        const float32x4_t c0 = vld1q_f32(coef + j * LANES), c1 = vld1q_f32(coef + (j + 1) * LANES);
        const float32x4_t c2 = vld1q_f32(coef + (j + 2) * LANES), c3 = vld1q_f32(coef + (j + 3) * LANES);
        size_t d = 0;
        for (; d + 8 <= D; d += 8) {
            float32x4_t x0 = vld1q_f32(a0 + d), y0 = vld1q_f32(a0 + d + 4);
            float32x4_t x1 = vld1q_f32(a1 + d), y1 = vld1q_f32(a1 + d + 4);
            float32x4_t x2 = vld1q_f32(a2 + d), y2 = vld1q_f32(a2 + d + 4);
            float32x4_t x3 = vld1q_f32(a3 + d), y3 = vld1q_f32(a3 + d + 4);
#define ROW(r)                                                                                                         \
    {                                                                                                                  \
        const float32x4_t lo = vld1q_f32(s##r + d), hi = vld1q_f32(s##r + d + 4);                                      \
        x0 = vfmaq_laneq_f32(x0, lo, c0, r), y0 = vfmaq_laneq_f32(y0, hi, c0, r);                                      \
        x1 = vfmaq_laneq_f32(x1, lo, c1, r), y1 = vfmaq_laneq_f32(y1, hi, c1, r);                                      \
        x2 = vfmaq_laneq_f32(x2, lo, c2, r), y2 = vfmaq_laneq_f32(y2, hi, c2, r);                                      \
        x3 = vfmaq_laneq_f32(x3, lo, c3, r), y3 = vfmaq_laneq_f32(y3, hi, c3, r);                                      \
    }
            ROW(0) ROW(1) ROW(2) ROW(3)
#undef ROW
            vst1q_f32(a0 + d, x0), vst1q_f32(a0 + d + 4, y0);
            vst1q_f32(a1 + d, x1), vst1q_f32(a1 + d + 4, y1);
            vst1q_f32(a2 + d, x2), vst1q_f32(a2 + d + 4, y2);
            vst1q_f32(a3 + d, x3), vst1q_f32(a3 + d + 4, y3);
        }
        for (; d < D; d++) {
            float *a[4] = {a0, a1, a2, a3};
            const float x[4] = {s0[d], s1[d], s2[d], s3[d]};
            for (size_t u = 0; u < 4; u++)
                for (size_t r = 0; r < LANES; r++)
                    a[u][d] += coef[(j + u) * LANES + r] * x[r];
        }
    }
    for (; j < nb; j++) {
        float *a = acc + j * acc_stride;
        const float32x4_t c = vld1q_f32(coef + j * LANES);
        size_t d = 0;
        for (; d + 4 <= D; d += 4) {
            float32x4_t x = vld1q_f32(a + d);
            x = vfmaq_laneq_f32(x, vld1q_f32(s0 + d), c, 0);
            x = vfmaq_laneq_f32(x, vld1q_f32(s1 + d), c, 1);
            x = vfmaq_laneq_f32(x, vld1q_f32(s2 + d), c, 2);
            x = vfmaq_laneq_f32(x, vld1q_f32(s3 + d), c, 3);
            vst1q_f32(a + d, x);
        }
        for (; d < D; d++) {
            const float x[4] = {s0[d], s1[d], s2[d], s3[d]};
            for (size_t r = 0; r < LANES; r++)
                a[d] += coef[j * LANES + r] * x[r];
        }
    }
}

/* Lanes that see key j0 + j: rows r < nr with first + r ≥ j0 + j. */
static uint32x4_t sees(size_t j0, size_t j, size_t first, size_t nr)
{
    static const uint32_t lanes[4] = {0, 1, 2, 3};
    const uint32x4_t lane = vld1q_u32(lanes);
    uint32x4_t keep = vcltq_u32(lane, vdupq_n_u32((uint32_t)nr));
    if (j0 + j > first)
        keep = vandq_u32(keep, vcgeq_u32(lane, vdupq_n_u32((uint32_t)(j0 + j - first))));
    return keep;
}

/* The lane-wise part of one key block: P (into pbuf) and dS (into dsbuf and
 * s[]) from the scores s[j] and dP dp[j], for keys j < nb. */
static void probabilities(float32x4_t *s, const float32x4_t *dp, float *pbuf, float *dsbuf, size_t nb, size_t j0,
                          size_t first, size_t nr, float scale, float32x4_t lse_v, float32x4_t delta)
{
    const float32x4_t zero = vdupq_n_f32(0.0f);
    for (size_t j = 0; j < nb; j++) {
        const float32x4_t p = vbslq_f32(sees(j0, j, first, nr),
                                        Sleef_expf4_u10advsimd(vsubq_f32(vmulq_n_f32(s[j], scale), lse_v)), zero);
        vst1q_f32(pbuf + j * LANES, p);
        s[j] = vmulq_f32(p, vsubq_f32(dp[j], delta));
        vst1q_f32(dsbuf + j * LANES, s[j]);
    }
}

/* res[j] = Σ_d xt[d]·row_j[d] (lane-wise) for the 8 rows row_j = base + j·ks,
 * in 8 named accumulators, four dimensions of a row loaded at once. */
static void eight_dots(float32x4_t res[KEYS], const float *xt, const float *base, size_t D, size_t ks)
{
#define DECL(j) float32x4_t a##j = vdupq_n_f32(0.0f); const float *r##j = base + (j) * ks;
    REP8(DECL)
#undef DECL
    size_t d = 0;
    for (; d + 4 <= D; d += 4) {
        const float32x4_t x0 = vld1q_f32(xt + d * LANES), x1 = vld1q_f32(xt + (d + 1) * LANES);
        const float32x4_t x2 = vld1q_f32(xt + (d + 2) * LANES), x3 = vld1q_f32(xt + (d + 3) * LANES);
#define FMA(j)                                                                                                         \
    {                                                                                                                  \
        const float32x4_t rv = vld1q_f32(r##j + d);                                                                    \
        a##j = vfmaq_laneq_f32(a##j, x0, rv, 0);                                                                       \
        a##j = vfmaq_laneq_f32(a##j, x1, rv, 1);                                                                       \
        a##j = vfmaq_laneq_f32(a##j, x2, rv, 2);                                                                       \
        a##j = vfmaq_laneq_f32(a##j, x3, rv, 3);                                                                       \
    }
        REP8(FMA)
#undef FMA
    }
    for (; d < D; d++) {
        const float32x4_t xd = vld1q_f32(xt + d * LANES);
#define FMA(j) a##j = vfmaq_n_f32(a##j, xd, r##j[d]);
        REP8(FMA)
#undef FMA
    }
#define PUT(j) res[j] = a##j;
    REP8(PUT)
#undef PUT
}

/* 8 keys from kb/vb: S and dP in named accumulators (four dimensions of a key
 * loaded at once, used lane by lane), P and dS, then dqt += dS·K. */
static void full_block_backward(float *dqt, float *pbuf, float *dsbuf, const float *qt, const float *dot,
                                const float *kb, const float *vb, size_t D, size_t ks, size_t j0, size_t first,
                                size_t nr, float scale, float32x4_t lse_v, float32x4_t delta)
{
    float32x4_t s[KEYS], dp[KEYS];
    eight_dots(s, qt, kb, D, ks);
    eight_dots(dp, dot, vb, D, ks);
    probabilities(s, dp, pbuf, dsbuf, KEYS, j0, first, nr, scale, lse_v, delta);
#define LOAD(j) const float32x4_t ds##j = s[j]; const float *k##j = kb + (j) * ks;
    REP8(LOAD)
#undef LOAD
    size_t d = 0;
    for (; d + 4 <= D; d += 4) {
        float *gd = dqt + d * LANES;
        float32x4_t o0 = vld1q_f32(gd), o1 = vld1q_f32(gd + LANES);
        float32x4_t o2 = vld1q_f32(gd + 2 * LANES), o3 = vld1q_f32(gd + 3 * LANES);
#define KEY(j)                                                                                                         \
    {                                                                                                                  \
        const float32x4_t kk = vld1q_f32(k##j + d);                                                                    \
        o0 = vfmaq_laneq_f32(o0, ds##j, kk, 0);                                                                        \
        o1 = vfmaq_laneq_f32(o1, ds##j, kk, 1);                                                                        \
        o2 = vfmaq_laneq_f32(o2, ds##j, kk, 2);                                                                        \
        o3 = vfmaq_laneq_f32(o3, ds##j, kk, 3);                                                                        \
    }
        REP8(KEY)
#undef KEY
        vst1q_f32(gd, o0), vst1q_f32(gd + LANES, o1), vst1q_f32(gd + 2 * LANES, o2), vst1q_f32(gd + 3 * LANES, o3);
    }
    for (; d < D; d++) {
        float32x4_t o = vld1q_f32(dqt + d * LANES);
#define KEY(j) o = vfmaq_n_f32(o, ds##j, k##j[d]);
        REP8(KEY)
#undef KEY
        vst1q_f32(dqt + d * LANES, o);
    }
}

/* The last, partial block of nb < 8 keys: the same, over the keys that exist. */
static void partial_block_backward(float *dqt, float *pbuf, float *dsbuf, const float *qt, const float *dot,
                                   const float *kb, const float *vb, size_t D, size_t ks, size_t nb, size_t j0,
                                   size_t first, size_t nr, float scale, float32x4_t lse_v, float32x4_t delta)
{
    float32x4_t s[KEYS], dp[KEYS];
    for (size_t j = 0; j < nb; j++)
        s[j] = dp[j] = vdupq_n_f32(0.0f);
    for (size_t d = 0; d < D; d++) {
        const float32x4_t qd = vld1q_f32(qt + d * LANES), gd = vld1q_f32(dot + d * LANES);
        for (size_t j = 0; j < nb; j++) {
            s[j] = vfmaq_n_f32(s[j], qd, kb[j * ks + d]);
            dp[j] = vfmaq_n_f32(dp[j], gd, vb[j * ks + d]);
        }
    }
    probabilities(s, dp, pbuf, dsbuf, nb, j0, first, nr, scale, lse_v, delta);
    for (size_t d = 0; d < D; d++) {
        float32x4_t o = vld1q_f32(dqt + d * LANES);
        for (size_t j = 0; j < nb; j++)
            o = vfmaq_n_f32(o, s[j], kb[j * ks + d]);
        vst1q_f32(dqt + d * LANES, o);
    }
}

/* Rows [i0, i0 + nr) of query head h (nr ≤ LANES): dq rows written, dk and dv
 * rows of its KV head accumulated (unscaled dk). Pointers are at the head. */
static void backward_block(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                           const float *q, const float *kh, const float *vh, size_t i0, size_t nr, size_t q_offset,
                           size_t D, size_t q_stride, size_t kv_stride, size_t out_stride, float scale,
                           const float *zeros)
{
    float qt[QT_MAX_DIM * LANES], dot[QT_MAX_DIM * LANES], dqt[QT_MAX_DIM * LANES];
    float pbuf[KEYS * LANES], dsbuf[KEYS * LANES], lse_r[LANES] = {0}, delta_r[LANES] = {0};
    const float *q_rows[LANES], *dout_rows[LANES];
    for (size_t r = 0; r < LANES; r++) {
        q_rows[r] = r < nr ? q + (i0 + r) * q_stride : zeros;
        dout_rows[r] = r < nr ? dout + (i0 + r) * out_stride : zeros;
    }
    for (size_t d = 0; d < D; d++)
        for (size_t r = 0; r < LANES; r++) {
            qt[d * LANES + r] = q_rows[r][d];
            dot[d * LANES + r] = dout_rows[r][d];
        }
    memset(dqt, 0, D * LANES * sizeof(float));
    for (size_t r = 0; r < nr; r++) {
        const float *gr = dout_rows[r], *orow = out + (i0 + r) * out_stride;
        float32x4_t acc = vdupq_n_f32(0.0f);
        size_t d = 0;
        for (; d + 4 <= D; d += 4)
            acc = vfmaq_f32(acc, vld1q_f32(gr + d), vld1q_f32(orow + d));
        float sum = vaddvq_f32(acc);
        for (; d < D; d++)
            sum += gr[d] * orow[d];
        delta_r[r] = sum;
        lse_r[r] = lse[i0 + r];
    }
    const float32x4_t lse_v = vld1q_f32(lse_r), delta = vld1q_f32(delta_r);
    const size_t first = q_offset + i0;    /* the first row's diagonal key */
    const size_t end = q_offset + i0 + nr; /* keys [0, end) are read */
    for (size_t j0 = 0; j0 < end; j0 += KEYS) {
        const size_t nb = end - j0 < KEYS ? end - j0 : KEYS;
        const float *kb = kh + j0 * kv_stride, *vb = vh + j0 * kv_stride;
        if (nb == KEYS)
            full_block_backward(dqt, pbuf, dsbuf, qt, dot, kb, vb, D, kv_stride, j0, first, nr, scale, lse_v, delta);
        else
            partial_block_backward(dqt, pbuf, dsbuf, qt, dot, kb, vb, D, kv_stride, nb, j0, first, nr, scale, lse_v,
                                   delta);
        rows_update(dv + j0 * kv_stride, kv_stride, pbuf, nb, dout_rows, D);
        rows_update(dk + j0 * kv_stride, kv_stride, dsbuf, nb, q_rows, D);
    }
    for (size_t r = 0; r < nr; r++) {
        float *g = dq + (i0 + r) * q_stride;
        for (size_t d = 0; d < D; d++)
            g[d] = dqt[d * LANES + r] * scale;
    }
}

void whet_attention_backward_neon(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                  const float *lse, const float *q, const float *k, const float *v, size_t n_q,
                                  size_t n_kv, size_t q_offset, size_t heads, size_t kv_heads, size_t head_dim,
                                  size_t q_stride, size_t kv_stride, size_t out_stride, float scale, size_t g0,
                                  size_t g1)
{
    if (head_dim > QT_MAX_DIM) {
        whet_attention_backward_scalar(dq, dk, dv, dout, out, lse, q, k, v, n_q, n_kv, q_offset, heads, kv_heads,
                                       head_dim, q_stride, kv_stride, out_stride, scale, g0, g1);
        return;
    }
    static const float zeros[QT_MAX_DIM]; /* the rows of padding lanes */
    const size_t group = heads / kv_heads, D = head_dim;
    const size_t kv_end = q_offset + n_q < n_kv ? q_offset + n_q : n_kv; /* keys [0, kv_end) are seen */
    for (size_t g = g0; g < g1; g++) {
        float *dkg = dk + g * D, *dvg = dv + g * D;
        const float *kg = k + g * D, *vg = v + g * D;
        for (size_t j = 0; j < n_kv; j++) {
            memset(dkg + j * kv_stride, 0, D * sizeof(float));
            memset(dvg + j * kv_stride, 0, D * sizeof(float));
        }
        for (size_t h = g * group; h < (g + 1) * group; h++)
            for (size_t i0 = 0; i0 < n_q; i0 += LANES) {
                const size_t nr = n_q - i0 < LANES ? n_q - i0 : LANES;
                backward_block(dq + h * D, dkg, dvg, dout + h * D, out + h * D, lse + h * n_q, q + h * D, kg, vg, i0,
                               nr, q_offset, D, q_stride, kv_stride, out_stride, scale, zeros);
            }
        for (size_t j = 0; j < kv_end; j++) {
            float *row = dkg + j * kv_stride;
            size_t d = 0;
            for (; d + 4 <= D; d += 4)
                vst1q_f32(row + d, vmulq_n_f32(vld1q_f32(row + d), scale));
            for (; d < D; d++)
                row[d] *= scale;
        }
    }
}
