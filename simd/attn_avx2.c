/* AVX2 + FMA: causal flash attention forward (see attn_scalar.c for the
 * algorithm), blocked as attn_avx512.c is, at half the width.
 *
 * Eight query rows of one head go in the eight lanes of a vector: Q is
 * transposed once per block into qt[d][8], so S = Q·Kᵀ for a block of 8 keys
 * is 8 accumulators (one per key), each the FMA chain over d of qt[d] with
 * k[j][d] broadcast. Every lane is one query row, so the online softmax
 * (block maximum, exp through SLEEF, ≤ 1 ULP, running sum) is lane-wise with
 * no horizontal reduction, and O += P·V runs on the transposed accumulator
 * ot[d][8]: for 4 dimensions at a time, 8 FMAs of P's key vectors with
 * v[j][d] broadcast. Keys past a row's diagonal get probability exactly 0, so
 * adding them changes no bit: each row's result is its own keys' sum, in key
 * order, whatever the rows it is blocked with. Blocks of fewer than ROWS_MIN
 * rows (decoding) and heads wider than QT_MAX_DIM take the row path, which
 * repeats one lane's operations (the same bits). */
#include "isa_kernels.h"

#include <immintrin.h>
#include <math.h>
#include <sleef.h>
#include <stdint.h>
#include <string.h>

#define LANES 8       /* query rows per block: one per lane */
#define KEYS 8        /* keys per block: one score accumulator each */
#define ROWS_MIN 3    /* fewer rows than this take the row path */
#define QT_MAX_DIM 256 /* qt and ot on the stack: 2·256·8 floats */

static __m256i tail_mask8(size_t remaining)
{
    int r = remaining >= 8 ? 8 : (int)remaining;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* x where mask, else 0 */
static __m256 keep_or_zero(__m256 x, __m256 mask)
{
    return _mm256_and_ps(x, mask);
}

/* Lane r of the score vector x for key j0 + j: −inf past row r's diagonal
 * (key first + r). */
static __m256 causal(__m256 x, size_t j0, size_t j, size_t first)
{
    if (j0 + j <= first)
        return x;
    __m256i keep = _mm256_cmpgt_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                      _mm256_set1_epi32((int)(j0 + j - first) - 1));
    return _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), x, _mm256_castsi256_ps(keep));
}

/* The online-softmax step for one block of scores s[KEYS] (scaled, masked):
 * new maximum, alpha = exp(m_old − m_new), s = exp(s − m_new) (0 where −inf),
 * l = l·alpha + Σ_j s_j in key order. Returns alpha. */
static __m256 softmax_step(__m256 *s, __m256 *m, __m256 *l)
{
    const __m256 neg_inf = _mm256_set1_ps(-INFINITY);
    __m256 bmax = *m;
    for (size_t j = 0; j < KEYS; j++)
        bmax = _mm256_max_ps(bmax, s[j]);
    const __m256 alpha = Sleef_expf8_u10avx2(_mm256_sub_ps(*m, bmax)); /* 0 on the first block */
    *m = bmax;
    __m256 bsum = _mm256_setzero_ps();
    for (size_t j = 0; j < KEYS; j++) {
        __m256 live = _mm256_cmp_ps(s[j], neg_inf, _CMP_NEQ_OQ);
        s[j] = keep_or_zero(Sleef_expf8_u10avx2(_mm256_sub_ps(s[j], bmax)), live);
        bsum = _mm256_add_ps(bsum, s[j]);
    }
    *l = _mm256_fmadd_ps(*l, alpha, bsum);
    return alpha;
}

#define REP4(X) X(0) X(1) X(2) X(3)
#define REP8(X) REP4(X) X(4) X(5) X(6) X(7)

/* 8 keys from kb/vb (all before n_kv): S in 8 named accumulators, the
 * softmax step, then ot += P·V four dimensions at a time. */
static void full_block(float *ot, const float *qt, const float *kb, const float *vb, size_t D, size_t ks, size_t j0,
                       size_t first, float scale, __m256 *m, __m256 *l)
{
#define DECL(j) __m256 s##j = _mm256_setzero_ps(); const float *k##j = kb + (j) * ks;
    REP8(DECL)
#undef DECL
    for (size_t d = 0; d < D; d++) {
        const __m256 qd = _mm256_loadu_ps(qt + d * LANES);
#define FMA(j) s##j = _mm256_fmadd_ps(qd, _mm256_broadcast_ss(k##j + d), s##j);
        REP8(FMA)
#undef FMA
    }
    const __m256 vscale = _mm256_set1_ps(scale);
    __m256 s[KEYS];
#define STORE(j) s[j] = causal(_mm256_mul_ps(s##j, vscale), j0, j, first);
    REP8(STORE)
#undef STORE
    const __m256 alpha = softmax_step(s, m, l);
#define LOAD(j) const __m256 p##j = s[j]; const float *v##j = vb + (j) * ks;
    REP8(LOAD)
#undef LOAD
    size_t d = 0;
    for (; d + 4 <= D; d += 4) {
        float *od = ot + d * LANES;
#define INIT(e) __m256 o##e = _mm256_mul_ps(_mm256_loadu_ps(od + (e) * LANES), alpha);
        REP4(INIT)
#undef INIT
#define KEY(j)                                                                                                         \
    {                                                                                                                  \
        const float *vd = v##j + d;                                                                                    \
        o0 = _mm256_fmadd_ps(p##j, _mm256_broadcast_ss(vd + 0), o0);                                                   \
        o1 = _mm256_fmadd_ps(p##j, _mm256_broadcast_ss(vd + 1), o1);                                                   \
        o2 = _mm256_fmadd_ps(p##j, _mm256_broadcast_ss(vd + 2), o2);                                                   \
        o3 = _mm256_fmadd_ps(p##j, _mm256_broadcast_ss(vd + 3), o3);                                                   \
    }
        REP8(KEY)
#undef KEY
#define PUT(e) _mm256_storeu_ps(od + (e) * LANES, o##e);
        REP4(PUT)
#undef PUT
    }
    for (; d < D; d++) {
        __m256 o = _mm256_mul_ps(_mm256_loadu_ps(ot + d * LANES), alpha);
#define KEY(j) o = _mm256_fmadd_ps(p##j, _mm256_broadcast_ss(v##j + d), o);
        REP8(KEY)
#undef KEY
        _mm256_storeu_ps(ot + d * LANES, o);
    }
}

/* The last, partial block of nb < 8 keys: the same operations on the keys
 * that exist (missing keys are −inf scores, never read). */
static void partial_block(float *ot, const float *qt, const float *kb, const float *vb, size_t D, size_t ks,
                          size_t j0, size_t nb, size_t first, float scale, __m256 *m, __m256 *l)
{
    __m256 s[KEYS];
    for (size_t j = 0; j < KEYS; j++)
        s[j] = _mm256_setzero_ps();
    for (size_t d = 0; d < D; d++) {
        const __m256 qd = _mm256_loadu_ps(qt + d * LANES);
        for (size_t j = 0; j < nb; j++)
            s[j] = _mm256_fmadd_ps(qd, _mm256_broadcast_ss(kb + j * ks + d), s[j]);
    }
    const __m256 vscale = _mm256_set1_ps(scale);
    for (size_t j = 0; j < KEYS; j++)
        s[j] = j < nb ? causal(_mm256_mul_ps(s[j], vscale), j0, j, first) : _mm256_set1_ps(-INFINITY);
    const __m256 alpha = softmax_step(s, m, l);
    for (size_t d = 0; d < D; d++) {
        __m256 o = _mm256_mul_ps(_mm256_loadu_ps(ot + d * LANES), alpha);
        for (size_t j = 0; j < nb; j++)
            o = _mm256_fmadd_ps(s[j], _mm256_broadcast_ss(vb + j * ks + d), o);
        _mm256_storeu_ps(ot + d * LANES, o);
    }
}

/* Rows [i0, i1) of head h one at a time, with the very operations of one lane
 * of a block (the same key blocks, FMA chains, maxima, SLEEF calls and
 * summation orders), so a row gets the same bits either way: scores for 8
 * keys at once with k gathered per dimension, P·V over head_dim. */
static void attend_rows(float *out, float *lse, const float *q, const float *kh, const float *vh, size_t i0,
                        size_t i1, size_t n_q, size_t q_offset, size_t h, size_t D, size_t q_stride,
                        size_t kv_stride, size_t out_stride, float scale)
{
    const __m256 vscale = _mm256_set1_ps(scale), neg_inf = _mm256_set1_ps(-INFINITY);
    const int gather = kv_stride <= (size_t)INT32_MAX / KEYS;
    const __m256i offsets = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                               _mm256_set1_epi32(gather ? (int)kv_stride : 0));
    float p[KEYS], t[KEYS];
    for (size_t i = i0; i < i1; i++) {
        const float *qi = q + i * q_stride;
        float *o = out + i * out_stride;
        const size_t end = q_offset + i + 1; /* keys [0, end) */
        float m = -INFINITY, l = 0.0f;
        for (size_t d = 0; d < D; d += 8)
            _mm256_maskstore_ps(o + d, tail_mask8(D - d), _mm256_setzero_ps());
        for (size_t j0 = 0; j0 < end; j0 += KEYS) {
            const size_t nb = end - j0 < KEYS ? end - j0 : KEYS;
            const __m256 live = _mm256_castsi256_ps(tail_mask8(nb));
            const float *kb = kh + j0 * kv_stride;
            __m256 s = _mm256_setzero_ps();
            for (size_t d = 0; d < D; d++) {
                __m256 kd;
                if (gather)
                    kd = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), kb + d, offsets, live, 4);
                else {
                    for (size_t j = 0; j < KEYS; j++)
                        t[j] = j < nb ? kb[j * kv_stride + d] : 0.0f;
                    kd = _mm256_loadu_ps(t);
                }
                s = _mm256_fmadd_ps(_mm256_set1_ps(qi[d]), kd, s);
            }
            s = _mm256_blendv_ps(neg_inf, _mm256_mul_ps(s, vscale), live);
            _mm256_storeu_ps(t, s);
            float bmax = m;
            for (size_t j = 0; j < KEYS; j++)
                bmax = t[j] > bmax ? t[j] : bmax;
            float alpha = _mm256_cvtss_f32(Sleef_expf8_u10avx2(_mm256_set1_ps(m - bmax)));
            m = bmax;
            __m256 e = Sleef_expf8_u10avx2(_mm256_sub_ps(s, _mm256_set1_ps(m)));
            _mm256_storeu_ps(p, keep_or_zero(e, live));
            float bsum = 0.0f;
            for (size_t j = 0; j < KEYS; j++)
                bsum += p[j];
            l = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(l), _mm_set_ss(alpha), _mm_set_ss(bsum)));
            const __m256 va = _mm256_set1_ps(alpha);
            const float *vb = vh + j0 * kv_stride;
            for (size_t d = 0; d < D; d += 8) {
                __m256i mk = tail_mask8(D - d);
                __m256 acc = _mm256_mul_ps(_mm256_maskload_ps(o + d, mk), va);
                for (size_t j = 0; j < nb; j++)
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_maskload_ps(vb + j * kv_stride + d, mk), acc);
                _mm256_maskstore_ps(o + d, mk, acc);
            }
        }
        const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_set1_ps(l));
        for (size_t d = 0; d < D; d += 8) {
            __m256i mk = tail_mask8(D - d);
            _mm256_maskstore_ps(o + d, mk, _mm256_mul_ps(_mm256_maskload_ps(o + d, mk), inv));
        }
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
    __m256 m = _mm256_set1_ps(-INFINITY), l = _mm256_setzero_ps();
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
    const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), l);
    for (size_t d = 0; d < D; d++)
        _mm256_storeu_ps(ot + d * LANES, _mm256_mul_ps(_mm256_loadu_ps(ot + d * LANES), inv));
    for (size_t r = 0; r < nr; r++) {
        float *o = out + (i0 + r) * out_stride;
        for (size_t d = 0; d < D; d++)
            o[d] = ot[d * LANES + r];
    }
    if (lse) {
        float mv[LANES], lv[LANES];
        _mm256_storeu_ps(mv, m);
        _mm256_storeu_ps(lv, l);
        for (size_t r = 0; r < nr; r++)
            lse[h * n_q + i0 + r] = mv[r] + logf(lv[r]);
    }
}

void whet_attention_forward_avx2(float *out, float *lse, const float *q, const float *k, const float *v, size_t n_q,
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
 * blocking, here at half the width): eight query rows of one head in the
 * lanes, q and dout transposed once into qt[d][8] and dot[d][8]; for each
 * block of 8 keys at or before the block's last diagonal, S and dP as 8
 * accumulators each, P = exp(scale·S − lse) lane-wise (0 past a row's
 * diagonal and in padding lanes), dS = P·(dP − D), dqt[d][8] += Σ_j dS_j·
 * k[j][d] four dimensions at a time, then dv_j += Σ_r P[j][r]·dout_r and
 * dk_j += Σ_r dS[j][r]·q_r on the rows in memory (four keys × 16
 * dimensions of accumulators). Per KV head the order is fixed (query heads,
 * query blocks, rows within a block, each in order), so the bits never
 * depend on [g0,g1). Heads wider than QT_MAX_DIM take the scalar code. */

/* acc_j[0,D) += Σ_{r<nr} coef[j][r]·src_r[0,D) for keys j < nb, r in order */
static void rows_update(float *acc, size_t acc_stride, const float *coef, size_t nb, const float *src,
                        size_t src_stride, size_t nr, size_t D)
{
    size_t j = 0;
    for (; j + 4 <= nb; j += 4) {
        float *a0 = acc + j * acc_stride, *a1 = a0 + acc_stride, *a2 = a1 + acc_stride, *a3 = a2 + acc_stride;
        const float *c = coef + j * LANES;
        size_t d = 0;
        for (; d + 16 <= D; d += 16) {
            __m256 x0 = _mm256_loadu_ps(a0 + d), y0 = _mm256_loadu_ps(a0 + d + 8);
            __m256 x1 = _mm256_loadu_ps(a1 + d), y1 = _mm256_loadu_ps(a1 + d + 8);
            __m256 x2 = _mm256_loadu_ps(a2 + d), y2 = _mm256_loadu_ps(a2 + d + 8);
            __m256 x3 = _mm256_loadu_ps(a3 + d), y3 = _mm256_loadu_ps(a3 + d + 8);
            for (size_t r = 0; r < nr; r++) {
                const float *sr = src + r * src_stride + d;
                const __m256 lo = _mm256_loadu_ps(sr), hi = _mm256_loadu_ps(sr + 8);
                __m256 b = _mm256_broadcast_ss(c + r);
                x0 = _mm256_fmadd_ps(b, lo, x0), y0 = _mm256_fmadd_ps(b, hi, y0);
                b = _mm256_broadcast_ss(c + LANES + r);
                x1 = _mm256_fmadd_ps(b, lo, x1), y1 = _mm256_fmadd_ps(b, hi, y1);
                b = _mm256_broadcast_ss(c + 2 * LANES + r);
                x2 = _mm256_fmadd_ps(b, lo, x2), y2 = _mm256_fmadd_ps(b, hi, y2);
                b = _mm256_broadcast_ss(c + 3 * LANES + r);
                x3 = _mm256_fmadd_ps(b, lo, x3), y3 = _mm256_fmadd_ps(b, hi, y3);
            }
            _mm256_storeu_ps(a0 + d, x0), _mm256_storeu_ps(a0 + d + 8, y0);
            _mm256_storeu_ps(a1 + d, x1), _mm256_storeu_ps(a1 + d + 8, y1);
            _mm256_storeu_ps(a2 + d, x2), _mm256_storeu_ps(a2 + d + 8, y2);
            _mm256_storeu_ps(a3 + d, x3), _mm256_storeu_ps(a3 + d + 8, y3);
        }
        for (; d < D; d += 8) {
            const __m256i mk = tail_mask8(D - d);
            __m256 x0 = _mm256_maskload_ps(a0 + d, mk), x1 = _mm256_maskload_ps(a1 + d, mk);
            __m256 x2 = _mm256_maskload_ps(a2 + d, mk), x3 = _mm256_maskload_ps(a3 + d, mk);
            for (size_t r = 0; r < nr; r++) {
                const __m256 xr = _mm256_maskload_ps(src + r * src_stride + d, mk);
                x0 = _mm256_fmadd_ps(_mm256_broadcast_ss(c + r), xr, x0);
                x1 = _mm256_fmadd_ps(_mm256_broadcast_ss(c + LANES + r), xr, x1);
                x2 = _mm256_fmadd_ps(_mm256_broadcast_ss(c + 2 * LANES + r), xr, x2);
                x3 = _mm256_fmadd_ps(_mm256_broadcast_ss(c + 3 * LANES + r), xr, x3);
            }
            _mm256_maskstore_ps(a0 + d, mk, x0), _mm256_maskstore_ps(a1 + d, mk, x1);
            _mm256_maskstore_ps(a2 + d, mk, x2), _mm256_maskstore_ps(a3 + d, mk, x3);
        }
    }
    for (; j < nb; j++) {
        float *a = acc + j * acc_stride;
        for (size_t d = 0; d < D; d += 8) {
            const __m256i mk = tail_mask8(D - d);
            __m256 x = _mm256_maskload_ps(a + d, mk);
            for (size_t r = 0; r < nr; r++)
                x = _mm256_fmadd_ps(_mm256_broadcast_ss(coef + j * LANES + r),
                                    _mm256_maskload_ps(src + r * src_stride + d, mk), x);
            _mm256_maskstore_ps(a + d, mk, x);
        }
    }
}

/* Lanes that see key j0 + j: rows r < nr with first + r ≥ j0 + j (all ones
 * there, zero elsewhere). */
static __m256 sees(size_t j0, size_t j, size_t first, size_t nr)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nr), lane);
    if (j0 + j > first)
        keep = _mm256_and_si256(keep, _mm256_cmpgt_epi32(lane, _mm256_set1_epi32((int)(j0 + j - first) - 1)));
    return _mm256_castsi256_ps(keep);
}

/* The lane-wise part of one key block: P (into pbuf) and dS (into dsbuf and
 * s[]) from the scores s[j] and dP dp[j], for keys j < nb. */
static void probabilities(__m256 *s, const __m256 *dp, float *pbuf, float *dsbuf, size_t nb, size_t j0,
                          size_t first, size_t nr, float scale, __m256 lse_v, __m256 delta)
{
    const __m256 vscale = _mm256_set1_ps(scale);
    for (size_t j = 0; j < nb; j++) {
        const __m256 p = keep_or_zero(Sleef_expf8_u10avx2(_mm256_sub_ps(_mm256_mul_ps(s[j], vscale), lse_v)),
                                      sees(j0, j, first, nr));
        _mm256_storeu_ps(pbuf + j * LANES, p);
        s[j] = _mm256_mul_ps(p, _mm256_sub_ps(dp[j], delta));
        _mm256_storeu_ps(dsbuf + j * LANES, s[j]);
    }
}

/* 8 keys from kb/vb: S and dP in named accumulators, P and dS, then
 * dqt += dS·K four dimensions at a time. */
static void full_block_backward(float *dqt, float *pbuf, float *dsbuf, const float *qt, const float *dot,
                                const float *kb, const float *vb, size_t D, size_t ks, size_t j0, size_t first,
                                size_t nr, float scale, __m256 lse_v, __m256 delta)
{
    __m256 s[KEYS], dp[KEYS];
    {
#define DECL(j) __m256 s##j = _mm256_setzero_ps(); const float *k##j = kb + (j) * ks;
        REP8(DECL)
#undef DECL
        for (size_t d = 0; d < D; d++) {
            const __m256 qd = _mm256_loadu_ps(qt + d * LANES);
#define FMA(j) s##j = _mm256_fmadd_ps(qd, _mm256_broadcast_ss(k##j + d), s##j);
            REP8(FMA)
#undef FMA
        }
#define PUT(j) s[j] = s##j;
        REP8(PUT)
#undef PUT
    }
    {
#define DECL(j) __m256 t##j = _mm256_setzero_ps(); const float *v##j = vb + (j) * ks;
        REP8(DECL)
#undef DECL
        for (size_t d = 0; d < D; d++) {
            const __m256 gd = _mm256_loadu_ps(dot + d * LANES);
#define FMA(j) t##j = _mm256_fmadd_ps(gd, _mm256_broadcast_ss(v##j + d), t##j);
            REP8(FMA)
#undef FMA
        }
#define PUT(j) dp[j] = t##j;
        REP8(PUT)
#undef PUT
    }
    probabilities(s, dp, pbuf, dsbuf, KEYS, j0, first, nr, scale, lse_v, delta);
#define LOAD(j) const __m256 ds##j = s[j]; const float *k##j = kb + (j) * ks;
    REP8(LOAD)
#undef LOAD
    size_t d = 0;
    for (; d + 4 <= D; d += 4) {
        float *gd = dqt + d * LANES;
#define INIT(e) __m256 o##e = _mm256_loadu_ps(gd + (e) * LANES);
        REP4(INIT)
#undef INIT
#define KEY(j)                                                                                                         \
    {                                                                                                                  \
        const float *kd = k##j + d;                                                                                    \
        o0 = _mm256_fmadd_ps(ds##j, _mm256_broadcast_ss(kd + 0), o0);                                                  \
        o1 = _mm256_fmadd_ps(ds##j, _mm256_broadcast_ss(kd + 1), o1);                                                  \
        o2 = _mm256_fmadd_ps(ds##j, _mm256_broadcast_ss(kd + 2), o2);                                                  \
        o3 = _mm256_fmadd_ps(ds##j, _mm256_broadcast_ss(kd + 3), o3);                                                  \
    }
        REP8(KEY)
#undef KEY
#define PUT(e) _mm256_storeu_ps(gd + (e) * LANES, o##e);
        REP4(PUT)
#undef PUT
    }
    for (; d < D; d++) {
        __m256 o = _mm256_loadu_ps(dqt + d * LANES);
#define KEY(j) o = _mm256_fmadd_ps(ds##j, _mm256_broadcast_ss(k##j + d), o);
        REP8(KEY)
#undef KEY
        _mm256_storeu_ps(dqt + d * LANES, o);
    }
}

/* The last, partial block of nb < 8 keys: the same, over the keys that exist. */
static void partial_block_backward(float *dqt, float *pbuf, float *dsbuf, const float *qt, const float *dot,
                                   const float *kb, const float *vb, size_t D, size_t ks, size_t nb, size_t j0,
                                   size_t first, size_t nr, float scale, __m256 lse_v, __m256 delta)
{
    __m256 s[KEYS], dp[KEYS];
    for (size_t j = 0; j < nb; j++)
        s[j] = dp[j] = _mm256_setzero_ps();
    for (size_t d = 0; d < D; d++) {
        const __m256 qd = _mm256_loadu_ps(qt + d * LANES), gd = _mm256_loadu_ps(dot + d * LANES);
        for (size_t j = 0; j < nb; j++) {
            s[j] = _mm256_fmadd_ps(qd, _mm256_broadcast_ss(kb + j * ks + d), s[j]);
            dp[j] = _mm256_fmadd_ps(gd, _mm256_broadcast_ss(vb + j * ks + d), dp[j]);
        }
    }
    probabilities(s, dp, pbuf, dsbuf, nb, j0, first, nr, scale, lse_v, delta);
    for (size_t d = 0; d < D; d++) {
        __m256 o = _mm256_loadu_ps(dqt + d * LANES);
        for (size_t j = 0; j < nb; j++)
            o = _mm256_fmadd_ps(s[j], _mm256_broadcast_ss(kb + j * ks + d), o);
        _mm256_storeu_ps(dqt + d * LANES, o);
    }
}

static float hsum8(__m256 x)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Rows [i0, i0 + nr) of query head h (nr ≤ LANES): dq rows written, dk and dv
 * rows of its KV head accumulated (unscaled dk). Pointers are at the head. */
static void backward_block(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                           const float *q, const float *kh, const float *vh, size_t i0, size_t nr, size_t q_offset,
                           size_t D, size_t q_stride, size_t kv_stride, size_t out_stride, float scale)
{
    float qt[QT_MAX_DIM * LANES], dot[QT_MAX_DIM * LANES], dqt[QT_MAX_DIM * LANES];
    float pbuf[KEYS * LANES], dsbuf[KEYS * LANES], lse_r[LANES] = {0}, delta_r[LANES] = {0};
    for (size_t d = 0; d < D; d++)
        for (size_t r = 0; r < LANES; r++) {
            qt[d * LANES + r] = r < nr ? q[(i0 + r) * q_stride + d] : 0.0f;
            dot[d * LANES + r] = r < nr ? dout[(i0 + r) * out_stride + d] : 0.0f;
        }
    memset(dqt, 0, D * LANES * sizeof(float));
    for (size_t r = 0; r < nr; r++) {
        const float *gr = dout + (i0 + r) * out_stride, *orow = out + (i0 + r) * out_stride;
        __m256 acc = _mm256_setzero_ps();
        for (size_t d = 0; d < D; d += 8) {
            const __m256i mk = tail_mask8(D - d);
            acc = _mm256_fmadd_ps(_mm256_maskload_ps(gr + d, mk), _mm256_maskload_ps(orow + d, mk), acc);
        }
        delta_r[r] = hsum8(acc);
        lse_r[r] = lse[i0 + r];
    }
    const __m256 lse_v = _mm256_loadu_ps(lse_r), delta = _mm256_loadu_ps(delta_r);
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
        rows_update(dv + j0 * kv_stride, kv_stride, pbuf, nb, dout + i0 * out_stride, out_stride, nr, D);
        rows_update(dk + j0 * kv_stride, kv_stride, dsbuf, nb, q + i0 * q_stride, q_stride, nr, D);
    }
    const __m256 vscale = _mm256_set1_ps(scale);
    for (size_t d = 0; d < D; d++)
        _mm256_storeu_ps(dqt + d * LANES, _mm256_mul_ps(_mm256_loadu_ps(dqt + d * LANES), vscale));
    for (size_t r = 0; r < nr; r++) {
        float *g = dq + (i0 + r) * q_stride;
        for (size_t d = 0; d < D; d++)
            g[d] = dqt[d * LANES + r];
    }
}

void whet_attention_backward_avx2(float *dq, float *dk, float *dv, const float *dout, const float *out,
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
    const size_t group = heads / kv_heads, D = head_dim;
    const size_t kv_end = q_offset + n_q < n_kv ? q_offset + n_q : n_kv; /* keys [0, kv_end) are seen */
    for (size_t g = g0; g < g1; g++) {
        float *dkg = dk + g * D, *dvg = dv + g * D;
        const float *kg = k + g * D, *vg = v + g * D;
        for (size_t j = 0; j < n_kv; j++)
            for (size_t d = 0; d < D; d += 8) {
                const __m256i mk = tail_mask8(D - d);
                _mm256_maskstore_ps(dkg + j * kv_stride + d, mk, _mm256_setzero_ps());
                _mm256_maskstore_ps(dvg + j * kv_stride + d, mk, _mm256_setzero_ps());
            }
        for (size_t h = g * group; h < (g + 1) * group; h++)
            for (size_t i0 = 0; i0 < n_q; i0 += LANES) {
                const size_t nr = n_q - i0 < LANES ? n_q - i0 : LANES;
                backward_block(dq + h * D, dkg, dvg, dout + h * D, out + h * D, lse + h * n_q, q + h * D, kg, vg, i0,
                               nr, q_offset, D, q_stride, kv_stride, out_stride, scale);
            }
        const __m256 vscale = _mm256_set1_ps(scale);
        for (size_t j = 0; j < kv_end; j++)
            for (size_t d = 0; d < D; d += 8) {
                const __m256i mk = tail_mask8(D - d);
                float *row = dkg + j * kv_stride + d;
                _mm256_maskstore_ps(row, mk, _mm256_mul_ps(_mm256_maskload_ps(row, mk), vscale));
            }
    }
}
