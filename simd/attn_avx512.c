/* AVX-512: causal flash attention forward (see attn_scalar.c for the
 * algorithm), blocked so that the two products run as register-tiled FMAs.
 *
 * Sixteen query rows of one head go in the sixteen lanes of a vector: Q is
 * transposed into qt[d][lanes], so S = Q·Kᵀ for a block of 16 keys is one
 * accumulator per key, each the FMA chain over d of qt[d] with k[j][d]
 * broadcast. Every lane is one query row, so the online softmax (block
 * maximum, exp through SLEEF, ≤ 1 ULP, running sum) is lane-wise with no
 * horizontal reduction, and O += P·V runs on the transposed accumulator
 * ot[d][lanes], P's key vectors times v[j][d] broadcast. Rows go in tiles of
 * TILE_ROWS = 32, two halves of 16 lanes: where both halves see all 16 keys
 * of a block, each broadcast feeds one FMA per half (full_block_pair), which
 * halves the loads per FMA; a half's other blocks run alone. Keys past a
 * row's diagonal get probability exactly 0, so adding them changes no bit:
 * each row's result is its own keys' sum, in key order, whatever the rows it
 * is blocked with. Tiles of fewer than ROWS_MIN rows (decoding) and heads
 * wider than QT_MAX_DIM take the row path below, dot products over head_dim. */
#include "isa_kernels.h"

#include <immintrin.h>
#include <math.h>
#include <sleef.h>
#include <stdint.h>
#include <string.h>

static __mmask16 tail_mask(size_t remaining)
{
    return (__mmask16)(remaining >= 16 ? 0xffffu : (1u << remaining) - 1);
}

#define LANES 16      /* query rows per block: one per lane */
#define TILE_ROWS 32  /* query rows per tile: two blocks (halves) of LANES */
#define KEYS 16       /* keys per block: one score accumulator each */
#define ROWS_MIN 4    /* fewer rows than this take the row path */
#define QT_MAX_DIM 256 /* qt and ot on the stack: 2·256·32 floats */

/* Rows [i0, i1) of head h one at a time, with the very operations of one lane
 * of attend_tile (the same key blocks, FMA chains, maxima, SLEEF calls and
 * summation orders), so a row gets the same bits either way: scores for 16
 * keys at once with k gathered per dimension, P·V over head_dim. */
static void attend_rows(float *out, float *lse, const float *q, const float *kh, const float *vh, size_t i0,
                        size_t i1, size_t n_q, size_t q_offset, size_t h, size_t D, size_t q_stride,
                        size_t kv_stride, size_t out_stride, float scale)
{
    const __m512 vscale = _mm512_set1_ps(scale), neg_inf = _mm512_set1_ps(-INFINITY);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const int gather = kv_stride <= (size_t)INT32_MAX / KEYS;
    const __m512i offsets = _mm512_mullo_epi32(lane, _mm512_set1_epi32(gather ? (int)kv_stride : 0));
    float p[KEYS];
    for (size_t i = i0; i < i1; i++) {
        const float *qi = q + i * q_stride;
        float *o = out + i * out_stride;
        const size_t end = q_offset + i + 1; /* keys [0, end) */
        float m = -INFINITY, l = 0.0f;
        for (size_t d = 0; d < D; d += 16)
            _mm512_mask_storeu_ps(o + d, tail_mask(D - d), _mm512_setzero_ps());
        for (size_t j0 = 0; j0 < end; j0 += KEYS) {
            const size_t nb = end - j0 < KEYS ? end - j0 : KEYS;
            const __mmask16 live = tail_mask(nb);
            const float *kb = kh + j0 * kv_stride;
            __m512 s = _mm512_setzero_ps();
            for (size_t d = 0; d < D; d++) {
                __m512 kd;
                if (gather)
                    kd = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, offsets, kb + d, 4);
                else {
                    float t[KEYS] = {0};
                    for (size_t j = 0; j < nb; j++)
                        t[j] = kb[j * kv_stride + d];
                    kd = _mm512_loadu_ps(t);
                }
                s = _mm512_fmadd_ps(_mm512_set1_ps(qi[d]), kd, s);
            }
            s = _mm512_mask_mov_ps(neg_inf, live, _mm512_mul_ps(s, vscale));
            float bmax = _mm512_reduce_max_ps(s);
            bmax = bmax > m ? bmax : m;
            float alpha = _mm512_cvtss_f32(Sleef_expf16_u10avx512f(_mm512_set1_ps(m - bmax)));
            m = bmax;
            __m512 e = Sleef_expf16_u10avx512f(_mm512_sub_ps(s, _mm512_set1_ps(m)));
            _mm512_storeu_ps(p, _mm512_maskz_mov_ps(live, e));
            float bsum = 0.0f;
            for (size_t j = 0; j < KEYS; j++)
                bsum += p[j];
            l = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(l), _mm_set_ss(alpha), _mm_set_ss(bsum)));
            const __m512 va = _mm512_set1_ps(alpha);
            const float *vb = vh + j0 * kv_stride;
            for (size_t d = 0; d < D; d += 16) {
                __mmask16 mk = tail_mask(D - d);
                __m512 acc = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, o + d), va);
                for (size_t j = 0; j < nb; j++)
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), _mm512_maskz_loadu_ps(mk, vb + j * kv_stride + d),
                                          acc);
                _mm512_mask_storeu_ps(o + d, mk, acc);
            }
        }
        const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_set1_ps(l));
        for (size_t d = 0; d < D; d += 16) {
            __mmask16 mk = tail_mask(D - d);
            _mm512_mask_storeu_ps(o + d, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, o + d), inv));
        }
        if (lse)
            lse[h * n_q + i] = m + logf(l);
    }
}

/* Lane r of the score vector x for key j0 + j: −inf past row r's diagonal
 * (key first + r). */
static __m512 causal(__m512 x, size_t j0, size_t j, size_t first)
{
    if (j0 + j <= first)
        return x;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __mmask16 keep = _mm512_cmpge_epi32_mask(lane, _mm512_set1_epi32((int)(j0 + j - first)));
    return _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), keep, x);
}

/* The online-softmax step for one block of scores s[KEYS] (scaled, masked):
 * new maximum, alpha = exp(m_old − m_new), s = exp(s − m_new) (0 where −inf),
 * l = l·alpha + Σ_j s_j in key order. Returns alpha. */
static __m512 softmax_step(__m512 *s, __m512 *m, __m512 *l)
{
    const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
    __m512 bmax = *m;
    for (size_t j = 0; j < KEYS; j++)
        bmax = _mm512_max_ps(bmax, s[j]);
    const __m512 alpha = Sleef_expf16_u10avx512f(_mm512_sub_ps(*m, bmax)); /* 0 on the first block */
    *m = bmax;
    __m512 bsum = _mm512_setzero_ps();
    for (size_t j = 0; j < KEYS; j++) {
        __mmask16 live = _mm512_cmp_ps_mask(s[j], neg_inf, _CMP_NEQ_OQ);
        s[j] = _mm512_maskz_mov_ps(live, Sleef_expf16_u10avx512f(_mm512_sub_ps(s[j], bmax)));
        bsum = _mm512_add_ps(bsum, s[j]);
    }
    *l = _mm512_fmadd_ps(*l, alpha, bsum);
    return alpha;
}

#define REP8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define REP16(X) REP8(X) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)

/* 16 keys from kb/vb (all before n_kv) for one block of LANES rows, its
 * lanes ls floats apart in qt and ot (LANES, or TILE_ROWS for a tile's half):
 * S in 16 named accumulators, the softmax step, then ot += P·V eight
 * dimensions at a time. */
static void full_block(float *ot, const float *qt, size_t ls, const float *kb, const float *vb, size_t D, size_t ks,
                       size_t j0, size_t first, float scale, __m512 *m, __m512 *l)
{
#define DECL(j) __m512 s##j = _mm512_setzero_ps(); const float *k##j = kb + (j) * ks;
    REP16(DECL)
#undef DECL
    for (size_t d = 0; d < D; d++) {
        const __m512 qd = _mm512_loadu_ps(qt + d * ls);
#define FMA(j) s##j = _mm512_fmadd_ps(qd, _mm512_set1_ps(k##j[d]), s##j);
        REP16(FMA)
#undef FMA
    }
    const __m512 vscale = _mm512_set1_ps(scale);
    __m512 s[KEYS];
#define STORE(j) s[j] = causal(_mm512_mul_ps(s##j, vscale), j0, j, first);
    REP16(STORE)
#undef STORE
    const __m512 alpha = softmax_step(s, m, l);
#define LOAD(j) const __m512 p##j = s[j]; const float *v##j = vb + (j) * ks;
    REP16(LOAD)
#undef LOAD
    size_t d = 0;
    for (; d + 8 <= D; d += 8) {
        float *od = ot + d * ls;
#define INIT(e) __m512 o##e = _mm512_mul_ps(_mm512_loadu_ps(od + (e) * ls), alpha);
        REP8(INIT)
#undef INIT
#define KEY(j)                                                                                                         \
    {                                                                                                                  \
        const float *vd = v##j + d;                                                                                    \
        o0 = _mm512_fmadd_ps(p##j, _mm512_set1_ps(vd[0]), o0);                                                         \
        o1 = _mm512_fmadd_ps(p##j, _mm512_set1_ps(vd[1]), o1);                                                         \
        o2 = _mm512_fmadd_ps(p##j, _mm512_set1_ps(vd[2]), o2);                                                         \
        o3 = _mm512_fmadd_ps(p##j, _mm512_set1_ps(vd[3]), o3);                                                         \
        o4 = _mm512_fmadd_ps(p##j, _mm512_set1_ps(vd[4]), o4);                                                         \
        o5 = _mm512_fmadd_ps(p##j, _mm512_set1_ps(vd[5]), o5);                                                         \
        o6 = _mm512_fmadd_ps(p##j, _mm512_set1_ps(vd[6]), o6);                                                         \
        o7 = _mm512_fmadd_ps(p##j, _mm512_set1_ps(vd[7]), o7);                                                         \
    }
        REP16(KEY)
#undef KEY
#define PUT(e) _mm512_storeu_ps(od + (e) * ls, o##e);
        REP8(PUT)
#undef PUT
    }
    for (; d < D; d++) {
        __m512 o = _mm512_mul_ps(_mm512_loadu_ps(ot + d * ls), alpha);
#define KEY(j) o = _mm512_fmadd_ps(p##j, _mm512_set1_ps(v##j[d]), o);
        REP16(KEY)
#undef KEY
        _mm512_storeu_ps(ot + d * ls, o);
    }
}

/* The last, partial block of nb < 16 keys: the same operations on the keys
 * that exist (missing keys are −inf scores, never read). */
static void partial_block(float *ot, const float *qt, size_t ls, const float *kb, const float *vb, size_t D,
                          size_t ks, size_t j0, size_t nb, size_t first, float scale, __m512 *m, __m512 *l)
{
    __m512 s[KEYS];
    for (size_t j = 0; j < KEYS; j++)
        s[j] = _mm512_setzero_ps();
    for (size_t d = 0; d < D; d++) {
        const __m512 qd = _mm512_loadu_ps(qt + d * ls);
        for (size_t j = 0; j < nb; j++)
            s[j] = _mm512_fmadd_ps(qd, _mm512_set1_ps(kb[j * ks + d]), s[j]);
    }
    const __m512 vscale = _mm512_set1_ps(scale);
    for (size_t j = 0; j < KEYS; j++)
        s[j] = j < nb ? causal(_mm512_mul_ps(s[j], vscale), j0, j, first) : _mm512_set1_ps(-INFINITY);
    const __m512 alpha = softmax_step(s, m, l);
    for (size_t d = 0; d < D; d++) {
        __m512 o = _mm512_mul_ps(_mm512_loadu_ps(ot + d * ls), alpha);
        for (size_t j = 0; j < nb; j++)
            o = _mm512_fmadd_ps(s[j], _mm512_set1_ps(vb[j * ks + d]), o);
        _mm512_storeu_ps(ot + d * ls, o);
    }
}

/* ---- both halves of a tile at once ----------------------------------------
 * A tile's two halves of LANES rows over the same 16 keys: every k[j][d] or
 * v[j][d] broadcast feeds two FMAs, one per half, which halves the loads per
 * FMA against a block of LANES rows. Each lane still gets the very FMA chains
 * of the one-half functions, in the same order, so the bits do not change. */

/* lo[j], hi[j] = Σ_d xt[d][lane]·b_j[d] for the two halves of xt[d][TILE_ROWS],
 * b_j = b + j·ks: eight keys at a time, 16 accumulators. */
static void pair_dots(__m512 lo[KEYS], __m512 hi[KEYS], const float *xt, const float *b, size_t D, size_t ks)
{
    for (size_t j8 = 0; j8 < KEYS; j8 += 8) {
#define DECL(j) __m512 a##j = _mm512_setzero_ps(), c##j = _mm512_setzero_ps(); const float *b##j = b + (j8 + (j)) * ks;
        REP8(DECL)
#undef DECL
        for (size_t d = 0; d < D; d++) {
            const __m512 x0 = _mm512_loadu_ps(xt + d * TILE_ROWS), x1 = _mm512_loadu_ps(xt + d * TILE_ROWS + LANES);
#define FMA(j)                                                                                                         \
    {                                                                                                                  \
        const __m512 bd = _mm512_set1_ps(b##j[d]);                                                                     \
        a##j = _mm512_fmadd_ps(x0, bd, a##j);                                                                          \
        c##j = _mm512_fmadd_ps(x1, bd, c##j);                                                                          \
    }
            REP8(FMA)
#undef FMA
        }
#define PUT(j) lo[j8 + (j)] = a##j, hi[j8 + (j)] = c##j;
        REP8(PUT)
#undef PUT
    }
}

/* acc[d][TILE_ROWS] = acc[d]·alpha[half] (when alpha) + Σ_j w_j·src_j[d] over
 * the KEYS keys in order (w = lo for the low half's lanes, hi for the high
 * half's), src_j = src + j·ks: O += P·V, dQ += dS·K. Eight dimensions at a
 * time, 16 accumulators. */
static void pair_update(float *acc, const __m512 *alpha, const __m512 lo[KEYS], const __m512 hi[KEYS],
                        const float *src, size_t ks, size_t D)
{
    size_t d = 0;
    for (; d + 8 <= D; d += 8) {
        float *ad = acc + d * TILE_ROWS;
#define INIT(e) __m512 x##e = _mm512_loadu_ps(ad + (e) * TILE_ROWS), y##e = _mm512_loadu_ps(ad + (e) * TILE_ROWS + LANES);
        REP8(INIT)
#undef INIT
        if (alpha) {
#define SCALE(e) x##e = _mm512_mul_ps(x##e, alpha[0]), y##e = _mm512_mul_ps(y##e, alpha[1]);
            REP8(SCALE)
#undef SCALE
        }
        for (size_t j = 0; j < KEYS; j++) {
            const __m512 w0 = lo[j], w1 = hi[j];
            const float *sd = src + j * ks + d;
#define KEY(e)                                                                                                         \
    {                                                                                                                  \
        const __m512 se = _mm512_set1_ps(sd[e]);                                                                       \
        x##e = _mm512_fmadd_ps(w0, se, x##e);                                                                          \
        y##e = _mm512_fmadd_ps(w1, se, y##e);                                                                          \
    }
            REP8(KEY)
#undef KEY
        }
#define PUT(e) _mm512_storeu_ps(ad + (e) * TILE_ROWS, x##e), _mm512_storeu_ps(ad + (e) * TILE_ROWS + LANES, y##e);
        REP8(PUT)
#undef PUT
    }
    for (; d < D; d++) {
        __m512 x = _mm512_loadu_ps(acc + d * TILE_ROWS), y = _mm512_loadu_ps(acc + d * TILE_ROWS + LANES);
        if (alpha)
            x = _mm512_mul_ps(x, alpha[0]), y = _mm512_mul_ps(y, alpha[1]);
        for (size_t j = 0; j < KEYS; j++) {
            const __m512 se = _mm512_set1_ps(src[j * ks + d]);
            x = _mm512_fmadd_ps(lo[j], se, x);
            y = _mm512_fmadd_ps(hi[j], se, y);
        }
        _mm512_storeu_ps(acc + d * TILE_ROWS, x);
        _mm512_storeu_ps(acc + d * TILE_ROWS + LANES, y);
    }
}

/* full_block on both halves (first: the low half's first row's diagonal key) */
static void full_block_pair(float *ot, const float *qt, const float *kb, const float *vb, size_t D, size_t ks,
                            size_t j0, size_t first, float scale, __m512 m[2], __m512 l[2])
{
    __m512 lo[KEYS], hi[KEYS];
    pair_dots(lo, hi, qt, kb, D, ks);
    const __m512 vscale = _mm512_set1_ps(scale);
    for (size_t j = 0; j < KEYS; j++) {
        lo[j] = causal(_mm512_mul_ps(lo[j], vscale), j0, j, first);
        hi[j] = causal(_mm512_mul_ps(hi[j], vscale), j0, j, first + LANES);
    }
    const __m512 alpha[2] = {softmax_step(lo, &m[0], &l[0]), softmax_step(hi, &m[1], &l[1])};
    pair_update(ot, alpha, lo, hi, vb, ks, D);
}

/* The rows of a tile of nr (≤ TILE_ROWS) in each half */
static void tile_halves(size_t half_rows[2], size_t nr)
{
    half_rows[0] = nr < LANES ? nr : LANES;
    half_rows[1] = nr > LANES ? nr - LANES : 0;
}

/* nb[x]: how many keys of the block at j0 half x of a tile reads (0: none);
 * its rows, the first at diagonal key first + x·LANES, read keys up to their
 * last row's diagonal. */
static void tile_block_keys(size_t nb[2], const size_t half_rows[2], size_t first, size_t j0)
{
    for (size_t x = 0; x < 2; x++) {
        const size_t end = first + x * LANES + half_rows[x]; /* keys [0, end) */
        nb[x] = half_rows[x] && j0 < end ? (end - j0 < KEYS ? end - j0 : KEYS) : 0;
    }
}

/* Rows [i0, i0 + nr) of head h (nr ≤ TILE_ROWS) as one tile: two halves of
 * LANES rows, lanes of qt[d][TILE_ROWS] and ot[d][TILE_ROWS]. A half visits
 * the key blocks of its own rows only, so each row gets the bits it would get
 * in a tile of LANES rows: the blocks both halves see go through
 * full_block_pair, the others (the high half's last ones, partial blocks)
 * through full_block / partial_block on that half alone. */
static void attend_tile(float *out, float *lse, const float *q, const float *kh, const float *vh, size_t i0,
                        size_t nr, size_t n_q, size_t q_offset, size_t h, size_t D, size_t q_stride,
                        size_t kv_stride, size_t out_stride, float scale)
{
    float qt[QT_MAX_DIM * TILE_ROWS], ot[QT_MAX_DIM * TILE_ROWS];
    for (size_t d = 0; d < D; d++)
        for (size_t r = 0; r < TILE_ROWS; r++)
            qt[d * TILE_ROWS + r] = r < nr ? q[(i0 + r) * q_stride + d] : 0.0f;
    memset(ot, 0, D * TILE_ROWS * sizeof(float));
    __m512 m[2] = {_mm512_set1_ps(-INFINITY), _mm512_set1_ps(-INFINITY)}, l[2] = {_mm512_setzero_ps(),
                                                                                 _mm512_setzero_ps()};
    size_t half_rows[2];
    tile_halves(half_rows, nr);
    for (size_t j0 = 0; j0 < q_offset + i0 + nr; j0 += KEYS) {
        size_t nb[2];
        tile_block_keys(nb, half_rows, q_offset + i0, j0);
        const float *kb = kh + j0 * kv_stride, *vb = vh + j0 * kv_stride;
        if (nb[0] == KEYS && nb[1] == KEYS) {
            full_block_pair(ot, qt, kb, vb, D, kv_stride, j0, q_offset + i0, scale, m, l);
            continue;
        }
        for (size_t x = 0; x < 2; x++) {
            if (!nb[x])
                continue;
            const size_t first = q_offset + i0 + x * LANES;
            if (nb[x] == KEYS)
                full_block(ot + x * LANES, qt + x * LANES, TILE_ROWS, kb, vb, D, kv_stride, j0, first, scale, &m[x],
                           &l[x]);
            else
                partial_block(ot + x * LANES, qt + x * LANES, TILE_ROWS, kb, vb, D, kv_stride, j0, nb[x], first,
                              scale, &m[x], &l[x]);
        }
    }
    /* out = ot / l, transposed back into the rows */
    for (size_t x = 0; x < 2 && half_rows[x]; x++) {
        const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), l[x]);
        for (size_t d = 0; d < D; d++) {
            float *o = ot + d * TILE_ROWS + x * LANES;
            _mm512_storeu_ps(o, _mm512_mul_ps(_mm512_loadu_ps(o), inv));
        }
    }
    for (size_t r = 0; r < nr; r++) {
        float *o = out + (i0 + r) * out_stride;
        for (size_t d = 0; d < D; d++)
            o[d] = ot[d * TILE_ROWS + r];
    }
    if (lse) {
        float mv[TILE_ROWS], lv[TILE_ROWS];
        for (size_t x = 0; x < 2; x++) {
            _mm512_storeu_ps(mv + x * LANES, m[x]);
            _mm512_storeu_ps(lv + x * LANES, l[x]);
        }
        for (size_t r = 0; r < nr; r++)
            lse[h * n_q + i0 + r] = mv[r] + logf(lv[r]);
    }
}

void whet_attention_forward_avx512(float *out, float *lse, const float *q, const float *k, const float *v,
                                   size_t n_q, size_t n_kv, size_t q_offset, size_t heads, size_t kv_heads,
                                   size_t head_dim, size_t q_stride, size_t kv_stride, size_t out_stride,
                                   float scale, size_t h0, size_t h1)
{
    (void)n_kv; /* keys past q_offset + n_q (≤ n_kv) are never read */
    const size_t group = heads / kv_heads;
    for (size_t h = h0; h < h1; h++) {
        const size_t g = h / group;
        const float *kh = k + g * head_dim, *vh = v + g * head_dim, *qh = q + h * head_dim;
        float *oh = out + h * head_dim;
        size_t i = 0;
        if (head_dim <= QT_MAX_DIM)
            for (; n_q - i >= ROWS_MIN; i += TILE_ROWS) {
                size_t nr = n_q - i < TILE_ROWS ? n_q - i : TILE_ROWS;
                attend_tile(oh, lse, qh, kh, vh, i, nr, n_q, q_offset, h, head_dim, q_stride, kv_stride,
                            out_stride, scale);
                if (nr < TILE_ROWS) {
                    i += nr;
                    break;
                }
            }
        if (i < n_q)
            attend_rows(oh, lse, qh, kh, vh, i, n_q, n_q, q_offset, h, head_dim, q_stride, kv_stride, out_stride,
                        scale);
    }
}

/* Backward (see attn_scalar.c for the algorithm), tiled as the forward:
 * 32 query rows of one head in two halves of 16 lanes, their q and dout
 * transposed once into qt[d][32] and dot[d][32], and for each block of 16
 * keys at or before the tile's last diagonal:
 *   S and dP as one accumulator per key and half (FMA chains over d with
 *   k[j][d] or v[j][d] broadcast), P = exp(scale·S − lse) lane-wise (0 past
 *   a row's diagonal and in padding lanes), dS = P·(dP − D);
 *   dqt[d][32] += Σ_j dS_j·k[j][d] eight dimensions at a time, as O += P·V;
 *   dv_j += Σ_r P[j][r]·dout_r and dk_j += Σ_r dS[j][r]·q_r on the rows in
 *   memory, eight keys × 32 dimensions of accumulators, P and dS broadcast
 *   from the 16×32 block kept on the stack.
 * Both halves go through one pass where both see all 16 keys, as in the
 * forward. Per KV head the order is fixed (query heads, query tiles, rows
 * within a tile, each in order; a tile's rows in order are a block of 16 and
 * then the next), so the bits never depend on [g0,g1). Heads wider than
 * QT_MAX_DIM (the stack tiles) take the scalar code. */

/* acc_j[0,D) += Σ_{r<nr} coef[j·cs + r]·src_r[0,D) for keys j < nb, r in order */
static void rows_update(float *acc, size_t acc_stride, const float *coef, size_t cs, size_t nb, const float *src,
                        size_t src_stride, size_t nr, size_t D)
{
    size_t j = 0;
    /* eight keys × 32 dimensions: 16 accumulators, each src row's two vectors
     * feeding eight keys */
    for (; j + 8 <= nb; j += 8) {
        const float *c = coef + j * cs;
        size_t d = 0;
        for (; d + 32 <= D; d += 32) {
            float *row = acc + j * acc_stride + d;
#define INIT(e) __m512 x##e = _mm512_loadu_ps(row + (e) * acc_stride), y##e = _mm512_loadu_ps(row + (e) * acc_stride + 16);
            REP8(INIT)
#undef INIT
            for (size_t r = 0; r < nr; r++) {
                const float *sr = src + r * src_stride + d;
                const __m512 lo = _mm512_loadu_ps(sr), hi = _mm512_loadu_ps(sr + 16);
#define FMA(e)                                                                                                         \
    {                                                                                                                  \
        const __m512 b = _mm512_set1_ps(c[(e) * cs + r]);                                                              \
        x##e = _mm512_fmadd_ps(b, lo, x##e);                                                                           \
        y##e = _mm512_fmadd_ps(b, hi, y##e);                                                                           \
    }
                REP8(FMA)
#undef FMA
            }
#define PUT(e) _mm512_storeu_ps(row + (e) * acc_stride, x##e), _mm512_storeu_ps(row + (e) * acc_stride + 16, y##e);
            REP8(PUT)
#undef PUT
        }
        for (; d < D; d += 16) {
            const __mmask16 mk = tail_mask(D - d);
            float *row = acc + j * acc_stride + d;
#define INIT(e) __m512 x##e = _mm512_maskz_loadu_ps(mk, row + (e) * acc_stride);
            REP8(INIT)
#undef INIT
            for (size_t r = 0; r < nr; r++) {
                const __m512 xr = _mm512_maskz_loadu_ps(mk, src + r * src_stride + d);
#define FMA(e) x##e = _mm512_fmadd_ps(_mm512_set1_ps(c[(e) * cs + r]), xr, x##e);
                REP8(FMA)
#undef FMA
            }
#define PUT(e) _mm512_mask_storeu_ps(row + (e) * acc_stride, mk, x##e);
            REP8(PUT)
#undef PUT
        }
    }
    for (; j + 4 <= nb; j += 4) {
        float *a0 = acc + j * acc_stride, *a1 = a0 + acc_stride, *a2 = a1 + acc_stride, *a3 = a2 + acc_stride;
        const float *c = coef + j * cs;
        size_t d = 0;
        for (; d + 32 <= D; d += 32) {
            __m512 x0 = _mm512_loadu_ps(a0 + d), y0 = _mm512_loadu_ps(a0 + d + 16);
            __m512 x1 = _mm512_loadu_ps(a1 + d), y1 = _mm512_loadu_ps(a1 + d + 16);
            __m512 x2 = _mm512_loadu_ps(a2 + d), y2 = _mm512_loadu_ps(a2 + d + 16);
            __m512 x3 = _mm512_loadu_ps(a3 + d), y3 = _mm512_loadu_ps(a3 + d + 16);
            for (size_t r = 0; r < nr; r++) {
                const float *sr = src + r * src_stride + d;
                const __m512 lo = _mm512_loadu_ps(sr), hi = _mm512_loadu_ps(sr + 16);
                __m512 b = _mm512_set1_ps(c[r]);
                x0 = _mm512_fmadd_ps(b, lo, x0), y0 = _mm512_fmadd_ps(b, hi, y0);
                b = _mm512_set1_ps(c[cs + r]);
                x1 = _mm512_fmadd_ps(b, lo, x1), y1 = _mm512_fmadd_ps(b, hi, y1);
                b = _mm512_set1_ps(c[2 * cs + r]);
                x2 = _mm512_fmadd_ps(b, lo, x2), y2 = _mm512_fmadd_ps(b, hi, y2);
                b = _mm512_set1_ps(c[3 * cs + r]);
                x3 = _mm512_fmadd_ps(b, lo, x3), y3 = _mm512_fmadd_ps(b, hi, y3);
            }
            _mm512_storeu_ps(a0 + d, x0), _mm512_storeu_ps(a0 + d + 16, y0);
            _mm512_storeu_ps(a1 + d, x1), _mm512_storeu_ps(a1 + d + 16, y1);
            _mm512_storeu_ps(a2 + d, x2), _mm512_storeu_ps(a2 + d + 16, y2);
            _mm512_storeu_ps(a3 + d, x3), _mm512_storeu_ps(a3 + d + 16, y3);
        }
        for (; d < D; d += 16) {
            const __mmask16 mk = tail_mask(D - d);
            __m512 x0 = _mm512_maskz_loadu_ps(mk, a0 + d), x1 = _mm512_maskz_loadu_ps(mk, a1 + d);
            __m512 x2 = _mm512_maskz_loadu_ps(mk, a2 + d), x3 = _mm512_maskz_loadu_ps(mk, a3 + d);
            for (size_t r = 0; r < nr; r++) {
                const __m512 xr = _mm512_maskz_loadu_ps(mk, src + r * src_stride + d);
                x0 = _mm512_fmadd_ps(_mm512_set1_ps(c[r]), xr, x0);
                x1 = _mm512_fmadd_ps(_mm512_set1_ps(c[cs + r]), xr, x1);
                x2 = _mm512_fmadd_ps(_mm512_set1_ps(c[2 * cs + r]), xr, x2);
                x3 = _mm512_fmadd_ps(_mm512_set1_ps(c[3 * cs + r]), xr, x3);
            }
            _mm512_mask_storeu_ps(a0 + d, mk, x0), _mm512_mask_storeu_ps(a1 + d, mk, x1);
            _mm512_mask_storeu_ps(a2 + d, mk, x2), _mm512_mask_storeu_ps(a3 + d, mk, x3);
        }
    }
    for (; j < nb; j++) {
        float *a = acc + j * acc_stride;
        for (size_t d = 0; d < D; d += 16) {
            const __mmask16 mk = tail_mask(D - d);
            __m512 x = _mm512_maskz_loadu_ps(mk, a + d);
            for (size_t r = 0; r < nr; r++)
                x = _mm512_fmadd_ps(_mm512_set1_ps(coef[j * cs + r]),
                                    _mm512_maskz_loadu_ps(mk, src + r * src_stride + d), x);
            _mm512_mask_storeu_ps(a + d, mk, x);
        }
    }
}

/* Lanes that see key j0 + j: rows r < nr with first + r ≥ j0 + j. */
static __mmask16 sees(size_t j0, size_t j, size_t first, __mmask16 rows)
{
    if (j0 + j <= first)
        return rows;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    return rows & _mm512_cmpge_epi32_mask(lane, _mm512_set1_epi32((int)(j0 + j - first)));
}

/* The lane-wise part of one key block: P (into pbuf) and dS (into dsbuf and
 * s[]) from the scores s[j] and dP dp[j], for keys j < nb. */
static void probabilities(__m512 *s, const __m512 *dp, float *pbuf, float *dsbuf, size_t ls, size_t nb, size_t j0,
                          size_t first, __mmask16 rows, float scale, __m512 lse_v, __m512 delta)
{
    const __m512 vscale = _mm512_set1_ps(scale);
    for (size_t j = 0; j < nb; j++) {
        const __mmask16 live = sees(j0, j, first, rows);
        const __m512 p = _mm512_maskz_mov_ps(
            live, Sleef_expf16_u10avx512f(_mm512_sub_ps(_mm512_mul_ps(s[j], vscale), lse_v)));
        _mm512_storeu_ps(pbuf + j * ls, p);
        s[j] = _mm512_mul_ps(p, _mm512_sub_ps(dp[j], delta));
        _mm512_storeu_ps(dsbuf + j * ls, s[j]);
    }
}

/* 16 keys from kb/vb for one block of LANES rows, lanes ls floats apart in
 * dqt, pbuf, dsbuf, qt and dot: S and dP in named accumulators, P and dS,
 * then dqt += dS·K eight dimensions at a time. */
static void full_block_backward(float *dqt, float *pbuf, float *dsbuf, size_t ls, const float *qt, const float *dot,
                                const float *kb, const float *vb, size_t D, size_t ks, size_t j0, size_t first,
                                __mmask16 rows, float scale, __m512 lse_v, __m512 delta)
{
    __m512 s[KEYS], dp[KEYS];
    {
#define DECL(j) __m512 s##j = _mm512_setzero_ps(); const float *k##j = kb + (j) * ks;
        REP16(DECL)
#undef DECL
        for (size_t d = 0; d < D; d++) {
            const __m512 qd = _mm512_loadu_ps(qt + d * ls);
#define FMA(j) s##j = _mm512_fmadd_ps(qd, _mm512_set1_ps(k##j[d]), s##j);
            REP16(FMA)
#undef FMA
        }
#define PUT(j) s[j] = s##j;
        REP16(PUT)
#undef PUT
    }
    {
#define DECL(j) __m512 t##j = _mm512_setzero_ps(); const float *v##j = vb + (j) * ks;
        REP16(DECL)
#undef DECL
        for (size_t d = 0; d < D; d++) {
            const __m512 gd = _mm512_loadu_ps(dot + d * ls);
#define FMA(j) t##j = _mm512_fmadd_ps(gd, _mm512_set1_ps(v##j[d]), t##j);
            REP16(FMA)
#undef FMA
        }
#define PUT(j) dp[j] = t##j;
        REP16(PUT)
#undef PUT
    }
    probabilities(s, dp, pbuf, dsbuf, ls, KEYS, j0, first, rows, scale, lse_v, delta);
#define LOAD(j) const __m512 ds##j = s[j]; const float *k##j = kb + (j) * ks;
    REP16(LOAD)
#undef LOAD
    size_t d = 0;
    for (; d + 8 <= D; d += 8) {
        float *gd = dqt + d * ls;
#define INIT(e) __m512 o##e = _mm512_loadu_ps(gd + (e) * ls);
        REP8(INIT)
#undef INIT
#define KEY(j)                                                                                                         \
    {                                                                                                                  \
        const float *kd = k##j + d;                                                                                    \
        o0 = _mm512_fmadd_ps(ds##j, _mm512_set1_ps(kd[0]), o0);                                                        \
        o1 = _mm512_fmadd_ps(ds##j, _mm512_set1_ps(kd[1]), o1);                                                        \
        o2 = _mm512_fmadd_ps(ds##j, _mm512_set1_ps(kd[2]), o2);                                                        \
        o3 = _mm512_fmadd_ps(ds##j, _mm512_set1_ps(kd[3]), o3);                                                        \
        o4 = _mm512_fmadd_ps(ds##j, _mm512_set1_ps(kd[4]), o4);                                                        \
        o5 = _mm512_fmadd_ps(ds##j, _mm512_set1_ps(kd[5]), o5);                                                        \
        o6 = _mm512_fmadd_ps(ds##j, _mm512_set1_ps(kd[6]), o6);                                                        \
        o7 = _mm512_fmadd_ps(ds##j, _mm512_set1_ps(kd[7]), o7);                                                        \
    }
        REP16(KEY)
#undef KEY
#define PUT(e) _mm512_storeu_ps(gd + (e) * ls, o##e);
        REP8(PUT)
#undef PUT
    }
    for (; d < D; d++) {
        __m512 o = _mm512_loadu_ps(dqt + d * ls);
#define KEY(j) o = _mm512_fmadd_ps(ds##j, _mm512_set1_ps(k##j[d]), o);
        REP16(KEY)
#undef KEY
        _mm512_storeu_ps(dqt + d * ls, o);
    }
}

/* The last, partial block of nb < 16 keys: the same, over the keys that exist. */
static void partial_block_backward(float *dqt, float *pbuf, float *dsbuf, size_t ls, const float *qt, const float *dot,
                                   const float *kb, const float *vb, size_t D, size_t ks, size_t nb, size_t j0,
                                   size_t first, __mmask16 rows, float scale, __m512 lse_v, __m512 delta)
{
    __m512 s[KEYS], dp[KEYS];
    for (size_t j = 0; j < nb; j++)
        s[j] = dp[j] = _mm512_setzero_ps();
    for (size_t d = 0; d < D; d++) {
        const __m512 qd = _mm512_loadu_ps(qt + d * ls), gd = _mm512_loadu_ps(dot + d * ls);
        for (size_t j = 0; j < nb; j++) {
            s[j] = _mm512_fmadd_ps(qd, _mm512_set1_ps(kb[j * ks + d]), s[j]);
            dp[j] = _mm512_fmadd_ps(gd, _mm512_set1_ps(vb[j * ks + d]), dp[j]);
        }
    }
    probabilities(s, dp, pbuf, dsbuf, ls, nb, j0, first, rows, scale, lse_v, delta);
    for (size_t d = 0; d < D; d++) {
        __m512 o = _mm512_loadu_ps(dqt + d * ls);
        for (size_t j = 0; j < nb; j++)
            o = _mm512_fmadd_ps(s[j], _mm512_set1_ps(kb[j * ks + d]), o);
        _mm512_storeu_ps(dqt + d * ls, o);
    }
}

/* full_block_backward on both halves of a tile (pair_dots, pair_update) */
static void full_block_backward_pair(float *dqt, float *pbuf, float *dsbuf, const float *qt, const float *dot,
                                     const float *kb, const float *vb, size_t D, size_t ks, size_t j0, size_t first,
                                     const __mmask16 rows[2], float scale, const __m512 lse_v[2],
                                     const __m512 delta[2])
{
    __m512 s[2][KEYS], dp[2][KEYS];
    pair_dots(s[0], s[1], qt, kb, D, ks);
    pair_dots(dp[0], dp[1], dot, vb, D, ks);
    for (size_t x = 0; x < 2; x++)
        probabilities(s[x], dp[x], pbuf + x * LANES, dsbuf + x * LANES, TILE_ROWS, KEYS, j0, first + x * LANES,
                      rows[x], scale, lse_v[x], delta[x]);
    pair_update(dqt, NULL, s[0], s[1], kb, ks, D);
}

/* Rows [i0, i0 + nr) of query head h (nr ≤ TILE_ROWS) as one tile of two
 * halves, as attend_tile: dq rows written, dk and dv rows of its KV head
 * accumulated (unscaled dk), rows in order for each key, as two blocks of
 * LANES rows one after the other would. Pointers are at the head. */
static void backward_tile(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                          const float *q, const float *kh, const float *vh, size_t i0, size_t nr, size_t q_offset,
                          size_t D, size_t q_stride, size_t kv_stride, size_t out_stride, float scale)
{
    float qt[QT_MAX_DIM * TILE_ROWS], dot[QT_MAX_DIM * TILE_ROWS], dqt[QT_MAX_DIM * TILE_ROWS];
    float pbuf[KEYS * TILE_ROWS], dsbuf[KEYS * TILE_ROWS], lse_r[TILE_ROWS] = {0}, delta_r[TILE_ROWS] = {0};
    for (size_t d = 0; d < D; d++)
        for (size_t r = 0; r < TILE_ROWS; r++) {
            qt[d * TILE_ROWS + r] = r < nr ? q[(i0 + r) * q_stride + d] : 0.0f;
            dot[d * TILE_ROWS + r] = r < nr ? dout[(i0 + r) * out_stride + d] : 0.0f;
        }
    memset(dqt, 0, D * TILE_ROWS * sizeof(float));
    for (size_t r = 0; r < nr; r++) {
        const float *gr = dout + (i0 + r) * out_stride, *orow = out + (i0 + r) * out_stride;
        __m512 acc = _mm512_setzero_ps();
        for (size_t d = 0; d < D; d += 16) {
            const __mmask16 mk = tail_mask(D - d);
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, gr + d), _mm512_maskz_loadu_ps(mk, orow + d), acc);
        }
        delta_r[r] = _mm512_reduce_add_ps(acc);
        lse_r[r] = lse[i0 + r];
    }
    size_t half_rows[2];
    tile_halves(half_rows, nr);
    const __m512 lse_v[2] = {_mm512_loadu_ps(lse_r), _mm512_loadu_ps(lse_r + LANES)};
    const __m512 delta[2] = {_mm512_loadu_ps(delta_r), _mm512_loadu_ps(delta_r + LANES)};
    const __mmask16 rows[2] = {tail_mask(half_rows[0]), tail_mask(half_rows[1])};
    for (size_t j0 = 0; j0 < q_offset + i0 + nr; j0 += KEYS) {
        size_t nb[2];
        tile_block_keys(nb, half_rows, q_offset + i0, j0);
        const float *kb = kh + j0 * kv_stride, *vb = vh + j0 * kv_stride;
        float *dvb = dv + j0 * kv_stride, *dkb = dk + j0 * kv_stride;
        if (nb[0] == KEYS && nb[1] == KEYS) {
            full_block_backward_pair(dqt, pbuf, dsbuf, qt, dot, kb, vb, D, kv_stride, j0, q_offset + i0, rows, scale,
                                     lse_v, delta);
            rows_update(dvb, kv_stride, pbuf, TILE_ROWS, KEYS, dout + i0 * out_stride, out_stride, nr, D);
            rows_update(dkb, kv_stride, dsbuf, TILE_ROWS, KEYS, q + i0 * q_stride, q_stride, nr, D);
            continue;
        }
        for (size_t x = 0; x < 2; x++) {
            if (!nb[x])
                continue;
            const size_t first = q_offset + i0 + x * LANES, r0 = i0 + x * LANES, off = x * LANES;
            if (nb[x] == KEYS)
                full_block_backward(dqt + off, pbuf + off, dsbuf + off, TILE_ROWS, qt + off, dot + off, kb, vb, D,
                                    kv_stride, j0, first, rows[x], scale, lse_v[x], delta[x]);
            else
                partial_block_backward(dqt + off, pbuf + off, dsbuf + off, TILE_ROWS, qt + off, dot + off, kb, vb,
                                       D, kv_stride, nb[x], j0, first, rows[x], scale, lse_v[x], delta[x]);
            rows_update(dvb, kv_stride, pbuf + off, TILE_ROWS, nb[x], dout + r0 * out_stride, out_stride,
                        half_rows[x], D);
            rows_update(dkb, kv_stride, dsbuf + off, TILE_ROWS, nb[x], q + r0 * q_stride, q_stride, half_rows[x],
                        D);
        }
    }
    const __m512 vscale = _mm512_set1_ps(scale);
    for (size_t d = 0; d < D; d++)
        for (size_t x = 0; x < 2; x++) {
            float *g = dqt + d * TILE_ROWS + x * LANES;
            _mm512_storeu_ps(g, _mm512_mul_ps(_mm512_loadu_ps(g), vscale));
        }
    for (size_t r = 0; r < nr; r++) {
        float *g = dq + (i0 + r) * q_stride;
        for (size_t d = 0; d < D; d++)
            g[d] = dqt[d * TILE_ROWS + r];
    }
}

void whet_attention_backward_avx512(float *dq, float *dk, float *dv, const float *dout, const float *out,
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
            for (size_t d = 0; d < D; d += 16) {
                const __mmask16 mk = tail_mask(D - d);
                _mm512_mask_storeu_ps(dkg + j * kv_stride + d, mk, _mm512_setzero_ps());
                _mm512_mask_storeu_ps(dvg + j * kv_stride + d, mk, _mm512_setzero_ps());
            }
        for (size_t h = g * group; h < (g + 1) * group; h++)
            for (size_t i0 = 0; i0 < n_q; i0 += TILE_ROWS) {
                const size_t nr = n_q - i0 < TILE_ROWS ? n_q - i0 : TILE_ROWS;
                backward_tile(dq + h * D, dkg, dvg, dout + h * D, out + h * D, lse + h * n_q, q + h * D, kg, vg, i0,
                               nr, q_offset, D, q_stride, kv_stride, out_stride, scale);
            }
        const __m512 vscale = _mm512_set1_ps(scale);
        for (size_t j = 0; j < kv_end; j++)
            for (size_t d = 0; d < D; d += 16) {
                const __mmask16 mk = tail_mask(D - d);
                float *row = dkg + j * kv_stride + d;
                _mm512_mask_storeu_ps(row, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, row), vscale));
            }
    }
}
