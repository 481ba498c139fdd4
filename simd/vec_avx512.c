/* AVX-512 F/BW/VL/DQ: conversions, vector arithmetic, the FMA peak loop.
 *
 * Must run on AVX-512 CPUs without AVX512_BF16, so f32 → bf16 is done on
 * integers. Every kernel gives the same bits as simd/vec_scalar.c except
 * sum_squares (a double sum in a different order). Tails use masked loads and
 * stores through the same vector code. */
#include "isa_kernels.h"

#include <immintrin.h>

static __mmask16 tail_mask(size_t remaining)
{
    return (__mmask16)((1u << remaining) - 1);
}

/* Round to nearest even by adding 0x7fff plus the lowest kept bit; NaNs would
 * carry into the exponent, so they take the truncated bits with the quiet bit
 * forced. */
static __m256i bf16_from_f32x16(__m512 x)
{
    const __m512i u = _mm512_castps_si512(x);
    const __m512i abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
    const __mmask16 is_nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f800000));
    const __m512i high = _mm512_srli_epi32(u, 16);
    const __m512i odd = _mm512_and_si512(high, _mm512_set1_epi32(1));
    const __m512i rounded =
        _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), odd), 16);
    const __m512i r = _mm512_mask_or_epi32(rounded, is_nan, high, _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);
}

void whet_f32_to_bf16_avx512(whet_bf16 *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), bf16_from_f32x16(_mm512_loadu_ps(src + i)));
    if (i < n) {
        __mmask16 k = tail_mask(n - i);
        _mm256_mask_storeu_epi16(dst + i, k, bf16_from_f32x16(_mm512_maskz_loadu_ps(k, src + i)));
    }
}

static __m512 f32_from_bf16x16(__m256i b)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
}

void whet_bf16_to_f32_avx512(float *dst, const whet_bf16 *src, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, f32_from_bf16x16(_mm256_loadu_si256((const __m256i *)(src + i))));
    if (i < n) {
        __mmask16 k = tail_mask(n - i);
        _mm512_mask_storeu_ps(dst + i, k, f32_from_bf16x16(_mm256_maskz_loadu_epi16(k, src + i)));
    }
}

/* vcvtps2ph with an explicit round-to-nearest-even immediate (not MXCSR):
 * handles subnormal halves and overflow, and quiets NaNs keeping the top
 * payload bits, exactly as the scalar reference does. */
void whet_f32_to_f16_avx512(whet_f16 *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    if (i < n) {
        __mmask16 k = tail_mask(n - i);
        _mm256_mask_storeu_epi16(
            dst + i, k, _mm512_cvtps_ph(_mm512_maskz_loadu_ps(k, src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
}

void whet_f16_to_f32_avx512(float *dst, const whet_f16 *src, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
    if (i < n) {
        __mmask16 k = tail_mask(n - i);
        _mm512_mask_storeu_ps(dst + i, k, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, src + i)));
    }
}

/* Separate multiply and add (no FMA): the scalar reference rounds a·x before
 * adding, and matching it bit for bit keeps every ISA's training identical. */
void whet_axpy_avx512(float *y, float a, const float *x, size_t n)
{
    const __m512 va = _mm512_set1_ps(a);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 y0 = _mm512_add_ps(_mm512_loadu_ps(y + i), _mm512_mul_ps(va, _mm512_loadu_ps(x + i)));
        __m512 y1 = _mm512_add_ps(_mm512_loadu_ps(y + i + 16), _mm512_mul_ps(va, _mm512_loadu_ps(x + i + 16)));
        _mm512_storeu_ps(y + i, y0);
        _mm512_storeu_ps(y + i + 16, y1);
    }
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_loadu_ps(y + i), _mm512_mul_ps(va, _mm512_loadu_ps(x + i))));
    if (i < n) {
        __mmask16 k = tail_mask(n - i);
        __m512 yv = _mm512_maskz_loadu_ps(k, y + i), xv = _mm512_maskz_loadu_ps(k, x + i);
        _mm512_mask_storeu_ps(y + i, k, _mm512_add_ps(yv, _mm512_mul_ps(va, xv)));
    }
}

void whet_scale_avx512(float *x, float a, size_t n)
{
    const __m512 va = _mm512_set1_ps(a);
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), va));
    if (i < n) {
        __mmask16 k = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), va));
    }
}

void whet_add_avx512(float *y, const float *a, const float *b, size_t n)
{
    size_t i = 0;
    /* both operands are loaded before the store, so y may alias a or b */
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
    if (i < n) {
        __mmask16 k = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_maskz_loadu_ps(k, b + i)));
    }
}

/* x² of a float is exact in double (24+24 bits < 53), so only the sums round;
 * four accumulators hide the add latency. Masked-off tail lanes load zeros. */
double whet_sum_squares_avx512(const float *x, size_t n)
{
    __m512d acc0 = _mm512_setzero_pd(), acc1 = _mm512_setzero_pd();
    __m512d acc2 = _mm512_setzero_pd(), acc3 = _mm512_setzero_pd();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512d d0 = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
        __m512d d1 = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8));
        __m512d d2 = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 16));
        __m512d d3 = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 24));
        acc0 = _mm512_fmadd_pd(d0, d0, acc0);
        acc1 = _mm512_fmadd_pd(d1, d1, acc1);
        acc2 = _mm512_fmadd_pd(d2, d2, acc2);
        acc3 = _mm512_fmadd_pd(d3, d3, acc3);
    }
    for (; i < n; i += 8) {
        __mmask8 k = (__mmask8)(n - i >= 8 ? 0xff : (1u << (n - i)) - 1);
        __m512d d = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, x + i));
        acc0 = _mm512_fmadd_pd(d, d, acc0);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(acc0, acc1), _mm512_add_pd(acc2, acc3)));
}

/* 16 independent chains: two 512-bit FMA pipes × 4 cycles latency needs 8 in
 * flight; 16 leaves headroom for CPUs with longer latency and still uses only
 * half of the 32 zmm registers. */
#define PEAK_CHAINS 16
double whet_fma_peak_loop_avx512(size_t iterations)
{
    volatile float seed = 1.0f;
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    /* distinct starting values: identical chains would be merged into one */
    const __m512 d = _mm512_set1_ps(1e-3f);
    __m512 a0 = _mm512_set1_ps(seed);
    __m512 a1 = _mm512_add_ps(a0, d);
    __m512 a2 = _mm512_add_ps(a1, d);
    __m512 a3 = _mm512_add_ps(a2, d);
    __m512 a4 = _mm512_add_ps(a3, d);
    __m512 a5 = _mm512_add_ps(a4, d);
    __m512 a6 = _mm512_add_ps(a5, d);
    __m512 a7 = _mm512_add_ps(a6, d);
    __m512 a8 = _mm512_add_ps(a7, d);
    __m512 a9 = _mm512_add_ps(a8, d);
    __m512 a10 = _mm512_add_ps(a9, d);
    __m512 a11 = _mm512_add_ps(a10, d);
    __m512 a12 = _mm512_add_ps(a11, d);
    __m512 a13 = _mm512_add_ps(a12, d);
    __m512 a14 = _mm512_add_ps(a13, d);
    __m512 a15 = _mm512_add_ps(a14, d);
    for (size_t i = 0; i < iterations; i++) {
        a0 = _mm512_fmadd_ps(a0, m, c), a1 = _mm512_fmadd_ps(a1, m, c), a2 = _mm512_fmadd_ps(a2, m, c);
        a3 = _mm512_fmadd_ps(a3, m, c), a4 = _mm512_fmadd_ps(a4, m, c), a5 = _mm512_fmadd_ps(a5, m, c);
        a6 = _mm512_fmadd_ps(a6, m, c), a7 = _mm512_fmadd_ps(a7, m, c), a8 = _mm512_fmadd_ps(a8, m, c);
        a9 = _mm512_fmadd_ps(a9, m, c), a10 = _mm512_fmadd_ps(a10, m, c), a11 = _mm512_fmadd_ps(a11, m, c);
        a12 = _mm512_fmadd_ps(a12, m, c), a13 = _mm512_fmadd_ps(a13, m, c);
        a14 = _mm512_fmadd_ps(a14, m, c), a15 = _mm512_fmadd_ps(a15, m, c);
    }
    /* consume every chain so the compiler cannot drop any of them */
    __m512 s0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                              _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    __m512 s1 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)),
                              _mm512_add_ps(_mm512_add_ps(a12, a13), _mm512_add_ps(a14, a15)));
    seed = _mm512_cvtss_f32(_mm512_add_ps(s0, s1));
    return 2.0 * 16 * PEAK_CHAINS * (double)iterations;
}
