/* AVX-512 GEMM: a 12×32 micro-kernel (24 zmm accumulators, 2 zmm of B and one
 * broadcast of A per k step, 31 of the 32 registers in use at most) on the
 * shared blocking of gemm_framework.h. The tile puts vectors along the columns
 * of row-major C, so a tile row is two full-width stores. gemm_bf16 without
 * AVX512_BF16 widens B to fp32 while packing and reuses the same kernel. */
#include "gemm_framework.h"

#include <immintrin.h>

enum { MR = 12, NR = 32, MC = 192, KC = 320, NC = 3072 };

const whet_gemm_params whet_gemm_params_avx512 = {
    .workspace_bytes = GF_WORKSPACE_BYTES(MC, KC, NC, sizeof(float)), .tile_m = MR, .tile_n = NR};

static void kernel_f32(size_t kc, const void *ap, const void *bp, float *c, size_t ldc, size_t mr, size_t nr,
                       int add)
{
    const float *a = ap, *b = bp;
    __m512 acc[MR][2];
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++)
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (size_t k = 0; k < kc; k++, a += MR, b += NR) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            __m512 ar = _mm512_set1_ps(a[r]);
            acc[r][0] = _mm512_fmadd_ps(ar, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(ar, b1, acc[r][1]);
        }
    }
    if (mr == MR && nr == NR) {
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            float *cr = c + r * ldc;
            if (add) {
                acc[r][0] = _mm512_add_ps(_mm512_loadu_ps(cr), acc[r][0]);
                acc[r][1] = _mm512_add_ps(_mm512_loadu_ps(cr + 16), acc[r][1]);
            }
            _mm512_storeu_ps(cr, acc[r][0]);
            _mm512_storeu_ps(cr + 16, acc[r][1]);
        }
        return;
    }
    float tile[MR * NR] __attribute__((aligned(64)));
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
        _mm512_store_ps(tile + r * NR, acc[r][0]);
        _mm512_store_ps(tile + r * NR + 16, acc[r][1]);
    }
    gf_store_edge(tile, NR, c, ldc, mr, nr, add);
}

static void pack_a(void *dst, const whet_gemm *g, size_t i0, size_t rows, size_t k0, size_t kc)
{
    gf_pack_a_f32(dst, g, i0, rows, k0, kc, MR);
}

static void pack_b(void *dst, const whet_gemm *g, size_t j0, size_t cols, size_t k0, size_t kc)
{
    gf_pack_b_f32(dst, g, j0, cols, k0, kc, NR, 0);
}

static void pack_b_from_bf16(void *dst, const whet_gemm *g, size_t j0, size_t cols, size_t k0, size_t kc)
{
    gf_pack_b_f32(dst, g, j0, cols, k0, kc, NR, 1);
}

void whet_sgemm_avx512(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    static const gf_plan plan = {kernel_f32, pack_a, pack_b, MR, NR, MC, KC, NC, 1, sizeof(float)};
    gf_gemm(&plan, g, m0, m1, n0, n1, workspace);
}

void whet_gemm_bf16_avx512(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    static const gf_plan plan = {kernel_f32, pack_a, pack_b_from_bf16, MR, NR, MC, KC, NC, 1, sizeof(float)};
    gf_gemm(&plan, g, m0, m1, n0, n1, workspace);
}
