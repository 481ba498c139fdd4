/* The blocking and packing half of every ISA's GEMM (the BLIS anatomy): each
 * gemm_<isa>.c supplies a register-blocked micro-kernel and includes this file,
 * so the loops and packing below compile once per ISA with that file's flags.
 * Everything here is `static` for that reason: no code built with ISA flags may
 * become a symbol another object could pick up.
 *
 * Loops, outermost first (n0..n1 and m0..m1 are the caller's sub-block of C):
 *   jc over columns in steps of nc   B block  kc×nc packed once per (jc, pc)
 *   pc over k in steps of kc         fixed from k = 0: never depends on the sub-block
 *   ic over rows in steps of mc      A block  mc×kc packed once per (jc, pc, ic)
 *   jr over columns in steps of NR   one B micro-panel, kept hot in L1
 *   ir over rows in steps of MR      micro-kernel: C[MR×NR] (+)= A[MR×kc]·B[kc×NR]
 *
 * Determinism: every element of C is produced by the same micro-kernel with the
 * same k blocks, its accumulator starting from zero in each block and added to
 * C after it (C = acc for the first block unless accumulating). Edge tiles are
 * computed on zero-padded panels, so an element's FMA sequence is the same in a
 * full tile, an edge tile and any sub-block: any thread split gives equal bits.
 *
 * Packed layouts (the kernel reads them linearly):
 *   fp32:      A panel [k][MR] floats, B panel [k][NR] floats.
 *   bf16 pair: A panel [k/2][MR] and B panel [k/2][NR] of 32-bit words, each
 *              word the bf16 values of k (low half) and k+1 (high half), the
 *              operand layout of vdpbf16ps and BFDOT.
 *
 * gemm_bf16 computes bf16(A)·bf16(B) with fp32 sums on every path: A (fp32)
 * and B when g->b_f32 says it is fp32 are rounded to bf16 (nearest even) as
 * they are packed; the convert paths then widen both back to fp32 panels. So
 * every ISA multiplies the same values and differs only in summation order. */
#ifndef WHET_GEMM_FRAMEWORK_H
#define WHET_GEMM_FRAMEWORK_H

#include "isa_kernels.h"

#include <string.h>

/* C[mr×nr] (+)= A panel · B panel over kc steps of k; add selects C += acc over
 * C = acc. mr ≤ MR and nr ≤ NR are how much of the tile C really holds. */
typedef void (*gf_kernel_fn)(size_t kc, const void *a, const void *b, float *c, size_t ldc, size_t mr,
                             size_t nr, int add);
/* Packs count rows of op(A) (or columns of op(B)) starting at x0, over k in
 * [k0, k0+kc), into panels of MR (or NR), zero-padding the last panel and, for
 * pair packing, an odd kc. */
typedef void (*gf_pack_fn)(void *dst, const whet_gemm *g, size_t x0, size_t count, size_t k0, size_t kc);

typedef struct gf_plan {
    gf_kernel_fn kernel;
    gf_pack_fn pack_a, pack_b;
    size_t mr, nr;       /* micro-tile */
    size_t mc, kc, nc;   /* cache blocks: mc a multiple of mr, nc of nr, kc even */
    size_t k_unit;       /* 1 for fp32 panels, 2 for bf16 pairs */
    size_t bytes_per_k;  /* bytes one row (column) of a panel takes per step of k */
} gf_plan;

/* Workspace one call needs: the B block, then the A block, each 64-byte aligned. */
#define GF_ROUND64(x) (((x) + 63) & ~(size_t)63)
#define GF_WORKSPACE_BYTES(mc, kc, nc, bytes_per_k)                                                \
    (GF_ROUND64((size_t)(kc) * (nc) * (bytes_per_k)) + GF_ROUND64((size_t)(kc) * (mc) * (bytes_per_k)) + 64)

/* One table, two files: the avx512 table's workspace (gemm_avx512.c) serves
 * gemm_avx512bf16.c as well, so both take their blocks from here. The fp32
 * blocks: B micro-panel KC×32 floats (32 KB) in L1, A block MC×KC (384 KB) in L2. */
enum { GF_AVX512_MC = 384, GF_AVX512_KC = 256, GF_AVX512_NC = 3072 };
/* The same bytes hold bf16 pairs for twice the k. */
enum { GF_AVX512BF16_MC = GF_AVX512_MC, GF_AVX512BF16_KC = 2 * GF_AVX512_KC, GF_AVX512BF16_NC = GF_AVX512_NC };
#define GF_AVX512_WORKSPACE_BYTES GF_WORKSPACE_BYTES(GF_AVX512_MC, GF_AVX512_KC, GF_AVX512_NC, sizeof(float))

static inline size_t gf_min(size_t a, size_t b)
{
    return a < b ? a : b;
}

static inline uint32_t gf_float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float gf_bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* f32 → bf16, round to nearest even, NaN kept a quiet NaN (as f32_to_bf16). */
static inline uint32_t gf_to_bf16(float f)
{
    uint32_t u = gf_float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (u >> 16) | 0x40;
    return (u + 0x7fffu + ((u >> 16) & 1)) >> 16;
}

/* The fp32 value of f rounded to bf16: what the convert paths multiply. */
static inline float gf_round_bf16(float f)
{
    return gf_bits_float(gf_to_bf16(f) << 16);
}

/* bf16 bits of gemm_bf16's B at element index i: stored as whet_bf16, or an
 * fp32 value rounded here when g->b_f32. */
static inline uint32_t gf_b_bf16_at(const whet_gemm *g, size_t i)
{
    return g->b_f32 ? gf_to_bf16(((const float *)g->B)[i]) : ((const whet_bf16 *)g->B)[i];
}

/* ---- fp32 panels ---------------------------------------------------------- */

/* A (fp32) into [k][MR] panels, each value rounded to bf16 when round_bf16
 * (gemm_bf16's convert path). For NN/NT rows run along k, so each row is
 * written with a stride of MR; for TN a k-row of A holds MR consecutive rows. */
static inline void gf_pack_a_f32(float *dst, const whet_gemm *g, size_t i0, size_t rows, size_t k0, size_t kc,
                          size_t MR, int round_bf16)
{
    for (size_t p = 0; p < rows; p += MR, dst += kc * MR) {
        size_t mr = gf_min(MR, rows - p);
        if (g->layout == WHET_GEMM_TN) {
            const float *src = g->A + k0 * g->lda + i0 + p;
            for (size_t k = 0; k < kc; k++, src += g->lda) {
                float *d = dst + k * MR;
                size_t r = 0;
                /* each k is a row of its own: fetch the next panel's part of it, a panel ahead */
                __builtin_prefetch(src + MR);
                __builtin_prefetch(src + 2 * MR - 1);
                if (round_bf16)
                    for (; r < mr; r++)
                        d[r] = gf_round_bf16(src[r]);
                else
                    for (; r < mr; r++)
                        d[r] = src[r];
                for (; r < MR; r++)
                    d[r] = 0;
            }
        } else {
            for (size_t r = 0; r < MR; r++) {
                if (r < mr) {
                    const float *src = g->A + (i0 + p + r) * g->lda + k0;
                    if (round_bf16)
                        for (size_t k = 0; k < kc; k++)
                            dst[k * MR + r] = gf_round_bf16(src[k]);
                    else
                        for (size_t k = 0; k < kc; k++)
                            dst[k * MR + r] = src[k];
                } else {
                    for (size_t k = 0; k < kc; k++)
                        dst[k * MR + r] = 0;
                }
            }
        }
    }
}

/* B columns [j0, j0+cols) into [k][NR] panels; bf16 says the call is
 * gemm_bf16, whose B (whet_bf16, or fp32 rounded to bf16 when g->b_f32) is
 * widened to fp32 here (the convert path). */
static inline void gf_pack_b_f32(float *dst, const whet_gemm *g, size_t j0, size_t cols, size_t k0, size_t kc,
                          size_t NR, int bf16)
{
    const float *bf = g->B;
    for (size_t p = 0; p < cols; p += NR, dst += kc * NR) {
        size_t nr = gf_min(NR, cols - p);
        if (g->layout == WHET_GEMM_NT) { /* B is N×K: column j of op(B) is row j of B */
            for (size_t c = 0; c < NR; c++) {
                size_t off = (j0 + p + c) * g->ldb + k0;
                if (c >= nr)
                    for (size_t k = 0; k < kc; k++)
                        dst[k * NR + c] = 0;
                else if (bf16)
                    for (size_t k = 0; k < kc; k++)
                        dst[k * NR + c] = gf_bits_float(gf_b_bf16_at(g, off + k) << 16);
                else
                    for (size_t k = 0; k < kc; k++)
                        dst[k * NR + c] = bf[off + k];
            }
        } else { /* B is K×N */
            for (size_t k = 0; k < kc; k++) {
                size_t off = (k0 + k) * g->ldb + j0 + p;
                float *d = dst + k * NR;
                size_t c = 0;
                /* each k is a row of its own: fetch the next panel's part of it, a panel ahead */
                if (bf16 && !g->b_f32) {
                    __builtin_prefetch((const whet_bf16 *)g->B + off + NR);
                } else {
                    __builtin_prefetch(bf + off + NR);
                    __builtin_prefetch(bf + off + 2 * NR - 1);
                }
                if (bf16)
                    for (; c < nr; c++)
                        d[c] = gf_bits_float(gf_b_bf16_at(g, off + c) << 16);
                else
                    for (; c < nr; c++)
                        d[c] = bf[off + c];
                for (; c < NR; c++)
                    d[c] = 0;
            }
        }
    }
}

/* ---- bf16 pair panels ----------------------------------------------------- */

/* A rounded to bf16, k-pairs into [k/2][MR] words. In NN/NT a pair is adjacent
 * in a row of A; in TN it is two rows of A, read row by row. */
static inline void gf_pack_a_pairs(uint32_t *dst, const whet_gemm *g, size_t i0, size_t rows, size_t k0, size_t kc,
                            size_t MR)
{
    size_t kp = (kc + 1) / 2;
    for (size_t p = 0; p < rows; p += MR, dst += kp * MR) {
        size_t mr = gf_min(MR, rows - p);
        if (g->layout == WHET_GEMM_TN) {
            for (size_t q = 0; q < kp; q++) {
                const float *lo = g->A + (k0 + 2 * q) * g->lda + i0 + p;
                uint32_t *d = dst + q * MR;
                size_t r = 0;
                if (2 * q + 1 < kc)
                    for (; r < mr; r++)
                        d[r] = gf_to_bf16(lo[r]) | gf_to_bf16(lo[g->lda + r]) << 16;
                else
                    for (; r < mr; r++)
                        d[r] = gf_to_bf16(lo[r]);
                for (; r < MR; r++)
                    d[r] = 0;
            }
            continue;
        }
        for (size_t r = 0; r < MR; r++) {
            if (r >= mr) {
                for (size_t q = 0; q < kp; q++)
                    dst[q * MR + r] = 0;
                continue;
            }
            const float *src = g->A + (i0 + p + r) * g->lda + k0;
            for (size_t q = 0; q < kc / 2; q++)
                dst[q * MR + r] = gf_to_bf16(src[2 * q]) | gf_to_bf16(src[2 * q + 1]) << 16;
            if (kc & 1)
                dst[(kp - 1) * MR + r] = gf_to_bf16(src[kc - 1]);
        }
    }
}

/* B k-pairs into [k/2][NR] words: whet_bf16, or fp32 rounded to bf16 when
 * g->b_f32. In NT a pair is adjacent in memory. */
static inline void gf_pack_b_pairs(uint32_t *dst, const whet_gemm *g, size_t j0, size_t cols, size_t k0, size_t kc,
                            size_t NR)
{
    const whet_bf16 *B = g->B;
    size_t kp = (kc + 1) / 2;
    for (size_t p = 0; p < cols; p += NR, dst += kp * NR) {
        size_t nr = gf_min(NR, cols - p);
        if (g->layout == WHET_GEMM_NT) {
            for (size_t c = 0; c < NR; c++) {
                if (c >= nr) {
                    for (size_t q = 0; q < kp; q++)
                        dst[q * NR + c] = 0;
                    continue;
                }
                size_t off = (j0 + p + c) * g->ldb + k0;
                if (g->b_f32)
                    for (size_t q = 0; q < kc / 2; q++)
                        dst[q * NR + c] = gf_b_bf16_at(g, off + 2 * q) | gf_b_bf16_at(g, off + 2 * q + 1) << 16;
                else
                    for (size_t q = 0; q < kc / 2; q++) {
                        uint32_t w;
                        memcpy(&w, B + off + 2 * q, sizeof w); /* little-endian: k in the low half */
                        dst[q * NR + c] = w;
                    }
                if (kc & 1)
                    dst[(kp - 1) * NR + c] = gf_b_bf16_at(g, off + kc - 1);
            }
        } else {
            for (size_t q = 0; q < kp; q++) {
                size_t lo = (k0 + 2 * q) * g->ldb + j0 + p, hi = lo + g->ldb;
                int has_hi = 2 * q + 1 < kc;
                uint32_t *d = dst + q * NR;
                size_t c = 0;
                if (has_hi)
                    for (; c < nr; c++)
                        d[c] = gf_b_bf16_at(g, lo + c) | gf_b_bf16_at(g, hi + c) << 16;
                else
                    for (; c < nr; c++)
                        d[c] = gf_b_bf16_at(g, lo + c);
                for (; c < NR; c++)
                    d[c] = 0;
            }
        }
    }
}

#if defined(__AVX512F__)
#include <immintrin.h>

/* In-register transpose of a 16×16 block of 32-bit lanes: row i of the input
 * becomes lane i of every output vector (r[j] = column j). Used to pack
 * operands stored along k into panels stored across k. */
static inline void gf_transpose16_avx512(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) { /* each 128-bit lane now a 4×4 transposed block */
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    for (int i = 0; i < 4; i++) { /* then the 4×4 grid of 128-bit lanes, in two steps */
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

/* 16 floats rounded to bf16 (nearest even, NaN kept quiet, as gf_to_bf16) and
 * widened back: the values gemm_bf16's convert path multiplies. */
static inline __m512 gf_round_bf16_avx512(__m512 x)
{
    __m512i u = _mm512_castps_si512(x);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    rounded = _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x400000)));
    return _mm512_castsi512_ps(_mm512_and_si512(rounded, _mm512_set1_epi32((int)0xffff0000u)));
}

/* Packs `rows` (≤ 16) rows of 32-bit values, row i at src + i·row_bytes (any
 * alignment), over [0, kc) into dst[k·stride + i]: a transpose, 16 k at a time.
 * Lanes [rows, width) are zero-filled, lanes from width (≤ 16) on untouched.
 * round_bf16: the values are floats, rounded to bf16 on the way. */
static inline void gf_pack_rows_avx512(void *dst, size_t stride, const void *src, size_t row_bytes, size_t rows,
                                       size_t width, size_t kc, int round_bf16)
{
    __mmask16 store = (__mmask16)((1u << width) - 1);
    for (size_t k = 0; k < kc; k += 16) {
        size_t n = gf_min(16, kc - k);
        __mmask16 load = (__mmask16)((1u << n) - 1);
        __m512 r[16];
        /* 16 rows far apart in memory are 16 streams, more than the hardware
         * prefetcher follows: fetch each row's line a few blocks ahead */
        if (k + 64 < kc)
            for (size_t i = 0; i < rows; i++)
                _mm_prefetch((const char *)src + i * row_bytes + (k + 64) * 4, _MM_HINT_T0);
        /* the callers pack panel after panel, each `width` rows on: fetch the
         * next panel's lines at this k now, a whole panel ahead of their use,
         * which covers a memory latency where a few blocks ahead did not */
        for (size_t i = width; i < 2 * width; i++)
            _mm_prefetch((const char *)src + i * row_bytes + k * 4, _MM_HINT_T0);
        for (size_t i = 0; i < 16; i++)
            r[i] = i < rows ? _mm512_maskz_loadu_ps(load, (const char *)src + i * row_bytes + k * 4)
                            : _mm512_setzero_ps();
        if (round_bf16)
            for (size_t i = 0; i < rows; i++)
                r[i] = gf_round_bf16_avx512(r[i]);
        gf_transpose16_avx512(r);
        for (size_t j = 0; j < n; j++)
            _mm512_mask_storeu_ps((char *)dst + (k + j) * stride * 4, store, r[j]);
    }
}
#endif

/* ---- the driver ----------------------------------------------------------- */

static inline void gf_gemm(const gf_plan *p, const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1,
                    void *workspace)
{
    if (m0 >= m1 || n0 >= n1)
        return;
    if (g->K == 0) { /* an empty sum: C = 0, or C unchanged when accumulating */
        if (!g->accumulate)
            for (size_t i = m0; i < m1; i++)
                memset(g->C + i * g->ldc + n0, 0, (n1 - n0) * sizeof(float));
        return;
    }
    char *base = (char *)GF_ROUND64((uintptr_t)workspace);
    void *bpack = base;
    void *apack = base + GF_ROUND64(p->kc * p->nc * p->bytes_per_k);
    for (size_t jc = n0; jc < n1; jc += p->nc) {
        size_t nb = gf_min(p->nc, n1 - jc);
        for (size_t pc = 0; pc < g->K; pc += p->kc) {
            size_t kb = gf_min(p->kc, g->K - pc);
            size_t kpad = (kb + p->k_unit - 1) / p->k_unit * p->k_unit;
            int add = g->accumulate || pc > 0;
            p->pack_b(bpack, g, jc, nb, pc, kb);
            for (size_t ic = m0; ic < m1; ic += p->mc) {
                size_t mb = gf_min(p->mc, m1 - ic);
                p->pack_a(apack, g, ic, mb, pc, kb);
                for (size_t jr = 0; jr < nb; jr += p->nr) {
                    const char *bpanel = (const char *)bpack + jr * kpad * p->bytes_per_k;
                    for (size_t ir = 0; ir < mb; ir += p->mr) {
                        const char *apanel = (const char *)apack + ir * kpad * p->bytes_per_k;
                        p->kernel(kb, apanel, bpanel, g->C + (ic + ir) * g->ldc + jc + jr, g->ldc,
                                  gf_min(p->mr, mb - ir), gf_min(p->nr, nb - jr), add);
                    }
                }
            }
        }
    }
}

/* Stores an MR×NR tile of accumulators held in `tile` (row-major, NR wide) into
 * the mr×nr corner of C: the edge-tile path, where speed matters little. */
static inline void gf_store_edge(const float *tile, size_t NR, float *c, size_t ldc, size_t mr, size_t nr, int add)
{
    for (size_t r = 0; r < mr; r++)
        for (size_t j = 0; j < nr; j++)
            c[r * ldc + j] = add ? c[r * ldc + j] + tile[r * NR + j] : tile[r * NR + j];
}

#endif
