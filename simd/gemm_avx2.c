/* AVX2 GEMM: the 6×16 micro-kernel of BLIS's haswell configuration (12 ymm
 * accumulators, 2 ymm of B and one broadcast of A per k step: 15 of the 16
 * registers) on the shared blocking of gemm_framework.h. gemm_bf16 rounds A (and
 * an fp32 B) to bf16 and widens both to fp32 while packing, then reuses the
 * fp32 kernel. */
#include "gemm_framework.h"

#include <immintrin.h>

enum { MR = 6, NR = 16, MC = 144, KC = 256, NC = 3072 };

const whet_gemm_params whet_gemm_params_avx2 = {
    .workspace_bytes = GF_WORKSPACE_BYTES(MC, KC, NC, sizeof(float)), .tile_m = MR, .tile_n = NR};

static void kernel_f32(size_t kc, const void *ap, const void *bp, float *c, size_t ldc, size_t mr, size_t nr,
                       int add)
{
    const float *a = ap, *b = bp;
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++)
        acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (size_t k = 0; k < kc; k++, a += MR, b += NR) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            __m256 ar = _mm256_broadcast_ss(a + r);
            acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
        }
    }
    if (mr == MR && nr == NR) {
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            float *cr = c + r * ldc;
            if (add) {
                acc[r][0] = _mm256_add_ps(_mm256_loadu_ps(cr), acc[r][0]);
                acc[r][1] = _mm256_add_ps(_mm256_loadu_ps(cr + 8), acc[r][1]);
            }
            _mm256_storeu_ps(cr, acc[r][0]);
            _mm256_storeu_ps(cr + 8, acc[r][1]);
        }
        return;
    }
    float tile[MR * NR] __attribute__((aligned(32)));
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
        _mm256_store_ps(tile + r * NR, acc[r][0]);
        _mm256_store_ps(tile + r * NR + 8, acc[r][1]);
    }
    gf_store_edge(tile, NR, c, ldc, mr, nr, add);
}

static void pack_a(void *dst, const whet_gemm *g, size_t i0, size_t rows, size_t k0, size_t kc)
{
    gf_pack_a_f32(dst, g, i0, rows, k0, kc, MR, 0);
}

static void pack_a_rounded(void *dst, const whet_gemm *g, size_t i0, size_t rows, size_t k0, size_t kc)
{
    gf_pack_a_f32(dst, g, i0, rows, k0, kc, MR, 1);
}

static void pack_b(void *dst, const whet_gemm *g, size_t j0, size_t cols, size_t k0, size_t kc)
{
    gf_pack_b_f32(dst, g, j0, cols, k0, kc, NR, 0);
}

static void pack_b_from_bf16(void *dst, const whet_gemm *g, size_t j0, size_t cols, size_t k0, size_t kc)
{
    gf_pack_b_f32(dst, g, j0, cols, k0, kc, NR, 1);
}

void whet_sgemm_avx2(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    static const gf_plan plan = {kernel_f32, pack_a, pack_b, MR, NR, MC, KC, NC, 1, sizeof(float)};
    gf_gemm(&plan, g, m0, m1, n0, n1, workspace);
}

void whet_gemm_bf16_avx2(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    static const gf_plan plan = {kernel_f32, pack_a_rounded, pack_b_from_bf16, MR, NR, MC, KC, NC, 1, sizeof(float)};
    gf_gemm(&plan, g, m0, m1, n0, n1, workspace);
}
