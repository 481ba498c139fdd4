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

/* TEMPORARY: the scalar reference until the avx2 backward lands. */
void whet_attention_backward_avx2(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                    const float *lse, const float *q, const float *k, const float *v, size_t n_q,
                                    size_t n_kv, size_t q_offset, size_t heads, size_t kv_heads, size_t head_dim,
                                    size_t q_stride, size_t kv_stride, size_t out_stride, float scale, size_t g0,
                                    size_t g1)
{
    whet_attention_backward_scalar(dq, dk, dv, dout, out, lse, q, k, v, n_q, n_kv, q_offset, heads, kv_heads,
                                   head_dim, q_stride, kv_stride, out_stride, scale, g0, g1);
}
