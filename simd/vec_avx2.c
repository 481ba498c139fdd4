/* AVX2 + FMA + F16C: conversions, vector arithmetic, the FMA peak loop.
 *
 * Every kernel here gives the same bits as simd/vec_scalar.c except
 * sum_squares (a double sum in a different order). Tails go through the same
 * vector code on a stack copy, so an element's result never depends on where
 * a caller's range split put it. */
#include "isa_kernels.h"

#include <immintrin.h>
#include <string.h>

/* f32 → bf16 on integers (AVX2 has no bf16 instruction): round to nearest even
 * by adding 0x7fff plus the lowest kept bit; NaNs would carry into the
 * exponent, so they take the truncated bits with the quiet bit forced. */
static __m128i bf16_from_f32x8(__m256 x)
{
    const __m256i u = _mm256_castps_si256(x);
    const __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
    const __m256i is_nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i rounded =
        _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), odd), 16);
    const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    const __m256i r = _mm256_blendv_epi8(rounded, quiet, is_nan);
    /* every lane is ≤ 0xffff, so the unsigned-saturating pack only narrows */
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

void whet_f32_to_bf16_avx2(whet_bf16 *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), bf16_from_f32x8(_mm256_loadu_ps(src + i)));
    if (i < n) {
        float in[8] = {0};
        whet_bf16 out[8];
        memcpy(in, src + i, (n - i) * sizeof *src);
        _mm_storeu_si128((__m128i *)out, bf16_from_f32x8(_mm256_loadu_ps(in)));
        memcpy(dst + i, out, (n - i) * sizeof *dst);
    }
}

static __m256 f32_from_bf16x8(__m128i b)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16));
}

void whet_bf16_to_f32_avx2(float *dst, const whet_bf16 *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, f32_from_bf16x8(_mm_loadu_si128((const __m128i *)(src + i))));
    if (i < n) {
        whet_bf16 in[8] = {0};
        float out[8];
        memcpy(in, src + i, (n - i) * sizeof *src);
        _mm256_storeu_ps(out, f32_from_bf16x8(_mm_loadu_si128((const __m128i *)in)));
        memcpy(dst + i, out, (n - i) * sizeof *dst);
    }
}

/* vcvtps2ph with an explicit round-to-nearest-even immediate (not MXCSR):
 * handles subnormal halves and overflow, and quiets NaNs keeping the top
 * payload bits, exactly as the scalar reference does. */
void whet_f32_to_f16_avx2(whet_f16 *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    if (i < n) {
        float in[8] = {0};
        whet_f16 out[8];
        memcpy(in, src + i, (n - i) * sizeof *src);
        _mm_storeu_si128((__m128i *)out,
                         _mm256_cvtps_ph(_mm256_loadu_ps(in), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        memcpy(dst + i, out, (n - i) * sizeof *dst);
    }
}

void whet_f16_to_f32_avx2(float *dst, const whet_f16 *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    if (i < n) {
        whet_f16 in[8] = {0};
        float out[8];
        memcpy(in, src + i, (n - i) * sizeof *src);
        _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)in)));
        memcpy(dst + i, out, (n - i) * sizeof *dst);
    }
}

/* Separate multiply and add (no FMA): the scalar reference rounds a·x before
 * adding, and matching it bit for bit keeps every ISA's training identical. */
void whet_axpy_avx2(float *y, float a, const float *x, size_t n)
{
    const __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 y0 = _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(va, _mm256_loadu_ps(x + i)));
        __m256 y1 = _mm256_add_ps(_mm256_loadu_ps(y + i + 8), _mm256_mul_ps(va, _mm256_loadu_ps(x + i + 8)));
        _mm256_storeu_ps(y + i, y0);
        _mm256_storeu_ps(y + i + 8, y1);
    }
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(va, _mm256_loadu_ps(x + i))));
    for (; i < n; i++) /* same two roundings as the vector lanes */
        y[i] += a * x[i];
}

void whet_scale_avx2(float *x, float a, size_t n)
{
    const __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), va));
    for (; i < n; i++)
        x[i] *= a;
}

void whet_add_avx2(float *y, const float *a, const float *b, size_t n)
{
    size_t i = 0;
    /* both operands are loaded before the store, so y may alias a or b */
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    for (; i < n; i++)
        y[i] = a[i] + b[i];
}

/* x² of a float is exact in double (24+24 bits < 53), so only the sums round;
 * four accumulators hide the add latency. */
double whet_sum_squares_avx2(const float *x, size_t n)
{
    __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
    __m256d acc2 = _mm256_setzero_pd(), acc3 = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256d d0 = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
        __m256d d1 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
        __m256d d2 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 8));
        __m256d d3 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 12));
        acc0 = _mm256_fmadd_pd(d0, d0, acc0);
        acc1 = _mm256_fmadd_pd(d1, d1, acc1);
        acc2 = _mm256_fmadd_pd(d2, d2, acc2);
        acc3 = _mm256_fmadd_pd(d3, d3, acc3);
    }
    for (; i + 4 <= n; i += 4) {
        __m256d d = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
        acc0 = _mm256_fmadd_pd(d, d, acc0);
    }
    __m256d acc = _mm256_add_pd(_mm256_add_pd(acc0, acc1), _mm256_add_pd(acc2, acc3));
    __m128d pair = _mm_add_pd(_mm256_castpd256_pd128(acc), _mm256_extractf128_pd(acc, 1));
    double sum = _mm_cvtsd_f64(_mm_add_sd(pair, _mm_unpackhi_pd(pair, pair)));
    for (; i < n; i++)
        sum += (double)x[i] * x[i];
    return sum;
}

/* 12 independent chains: two FMA pipes × 4-5 cycles latency needs 8-10 in
 * flight; 12 accumulators plus the two operands fill 14 of the 16 ymm
 * registers without spilling. */
#define PEAK_CHAINS 12
double whet_fma_peak_loop_avx2(size_t iterations)
{
    volatile float seed = 1.0f;
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    /* distinct starting values: identical chains would be merged into one */
    const __m256 d = _mm256_set1_ps(1e-3f);
    __m256 a0 = _mm256_set1_ps(seed);
    __m256 a1 = _mm256_add_ps(a0, d);
    __m256 a2 = _mm256_add_ps(a1, d);
    __m256 a3 = _mm256_add_ps(a2, d);
    __m256 a4 = _mm256_add_ps(a3, d);
    __m256 a5 = _mm256_add_ps(a4, d);
    __m256 a6 = _mm256_add_ps(a5, d);
    __m256 a7 = _mm256_add_ps(a6, d);
    __m256 a8 = _mm256_add_ps(a7, d);
    __m256 a9 = _mm256_add_ps(a8, d);
    __m256 a10 = _mm256_add_ps(a9, d);
    __m256 a11 = _mm256_add_ps(a10, d);
    for (size_t i = 0; i < iterations; i++) {
        a0 = _mm256_fmadd_ps(a0, m, c), a1 = _mm256_fmadd_ps(a1, m, c), a2 = _mm256_fmadd_ps(a2, m, c);
        a3 = _mm256_fmadd_ps(a3, m, c), a4 = _mm256_fmadd_ps(a4, m, c), a5 = _mm256_fmadd_ps(a5, m, c);
        a6 = _mm256_fmadd_ps(a6, m, c), a7 = _mm256_fmadd_ps(a7, m, c), a8 = _mm256_fmadd_ps(a8, m, c);
        a9 = _mm256_fmadd_ps(a9, m, c), a10 = _mm256_fmadd_ps(a10, m, c), a11 = _mm256_fmadd_ps(a11, m, c);
    }
    /* consume every chain so the compiler cannot drop any of them */
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    seed = _mm256_cvtss_f32(s);
    return 2.0 * 8 * PEAK_CHAINS * (double)iterations;
}
