/* AArch64 Advanced SIMD (armv8-a baseline): conversions, vector arithmetic,
 * the FMA peak loop.
 *
 * Every kernel here gives the same bits as simd/vec_scalar.c except
 * sum_squares (a double sum in a different order). Tails go through the same
 * vector code on a stack copy, so an element's result never depends on where
 * a caller's range split put it. */
#include "isa_kernels.h"

#include <arm_neon.h>
#include <string.h>

/* f32 → bf16 on integers (BFCVTN needs FEAT_BF16, which the baseline lacks):
 * round to nearest even by adding 0x7fff plus the lowest kept bit; NaNs would
 * carry into the exponent, so they take the truncated bits with the quiet bit
 * forced. */
static uint16x4_t bf16_from_f32x4(float32x4_t x)
{
    const uint32x4_t u = vreinterpretq_u32_f32(x);
    const uint32x4_t is_nan = vcgtq_u32(vandq_u32(u, vdupq_n_u32(0x7fffffffu)), vdupq_n_u32(0x7f800000u));
    const uint32x4_t high = vshrq_n_u32(u, 16);
    const uint32x4_t odd = vandq_u32(high, vdupq_n_u32(1));
    const uint32x4_t rounded = vshrq_n_u32(vaddq_u32(vaddq_u32(u, vdupq_n_u32(0x7fff)), odd), 16);
    const uint32x4_t quiet = vorrq_u32(high, vdupq_n_u32(0x40));
    return vmovn_u32(vbslq_u32(is_nan, quiet, rounded));
}

void whet_f32_to_bf16_neon(whet_bf16 *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x4_t lo = bf16_from_f32x4(vld1q_f32(src + i));
        uint16x4_t hi = bf16_from_f32x4(vld1q_f32(src + i + 4));
        vst1q_u16(dst + i, vcombine_u16(lo, hi));
    }
    for (; i < n; i += 4) {
        float in[4] = {0};
        whet_bf16 out[4];
        size_t len = n - i < 4 ? n - i : 4;
        memcpy(in, src + i, len * sizeof *src);
        vst1_u16(out, bf16_from_f32x4(vld1q_f32(in)));
        memcpy(dst + i, out, len * sizeof *dst);
    }
}

static float32x4_t f32_from_bf16x4(uint16x4_t b)
{
    return vreinterpretq_f32_u32(vshll_n_u16(b, 16));
}

void whet_bf16_to_f32_neon(float *dst, const whet_bf16 *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t b = vld1q_u16(src + i);
        vst1q_f32(dst + i, f32_from_bf16x4(vget_low_u16(b)));
        vst1q_f32(dst + i + 4, f32_from_bf16x4(vget_high_u16(b)));
    }
    for (; i < n; i += 4) {
        whet_bf16 in[4] = {0};
        float out[4];
        size_t len = n - i < 4 ? n - i : 4;
        memcpy(in, src + i, len * sizeof *src);
        vst1q_f32(out, f32_from_bf16x4(vld1_u16(in)));
        memcpy(dst + i, out, len * sizeof *dst);
    }
}

/* FCVTN/FCVTL round by FPCR (nearest even unless a caller changed it), keep
 * subnormal halves (FZ16 does not apply to conversions) and quiet NaNs keeping
 * the top payload bits, as the scalar reference does. */
static uint16x4_t f16_from_f32x4(float32x4_t x)
{
    return vreinterpret_u16_f16(vcvt_f16_f32(x));
}

void whet_f32_to_f16_neon(whet_f16 *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x4_t lo = f16_from_f32x4(vld1q_f32(src + i));
        uint16x4_t hi = f16_from_f32x4(vld1q_f32(src + i + 4));
        vst1q_u16(dst + i, vcombine_u16(lo, hi));
    }
    for (; i < n; i += 4) {
        float in[4] = {0};
        whet_f16 out[4];
        size_t len = n - i < 4 ? n - i : 4;
        memcpy(in, src + i, len * sizeof *src);
        vst1_u16(out, f16_from_f32x4(vld1q_f32(in)));
        memcpy(dst + i, out, len * sizeof *dst);
    }
}

static float32x4_t f32_from_f16x4(uint16x4_t h)
{
    return vcvt_f32_f16(vreinterpret_f16_u16(h));
}

void whet_f16_to_f32_neon(float *dst, const whet_f16 *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t h = vld1q_u16(src + i);
        vst1q_f32(dst + i, f32_from_f16x4(vget_low_u16(h)));
        vst1q_f32(dst + i + 4, f32_from_f16x4(vget_high_u16(h)));
    }
    for (; i < n; i += 4) {
        whet_f16 in[4] = {0};
        float out[4];
        size_t len = n - i < 4 ? n - i : 4;
        memcpy(in, src + i, len * sizeof *src);
        vst1q_f32(out, f32_from_f16x4(vld1_u16(in)));
        memcpy(dst + i, out, len * sizeof *dst);
    }
}

/* Separate multiply and add (vmulq + vaddq, never vfmaq): the scalar reference
 * rounds a·x before adding, and matching it bit for bit keeps every ISA's
 * training identical. */
void whet_axpy_neon(float *y, float a, const float *x, size_t n)
{
    const float32x4_t va = vdupq_n_f32(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float32x4_t y0 = vaddq_f32(vld1q_f32(y + i), vmulq_f32(va, vld1q_f32(x + i)));
        float32x4_t y1 = vaddq_f32(vld1q_f32(y + i + 4), vmulq_f32(va, vld1q_f32(x + i + 4)));
        vst1q_f32(y + i, y0);
        vst1q_f32(y + i + 4, y1);
    }
    for (; i + 4 <= n; i += 4)
        vst1q_f32(y + i, vaddq_f32(vld1q_f32(y + i), vmulq_f32(va, vld1q_f32(x + i))));
    for (; i < n; i++) /* same two roundings as the vector lanes */
        y[i] += a * x[i];
}

void whet_scale_neon(float *x, float a, size_t n)
{
    const float32x4_t va = vdupq_n_f32(a);
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(x + i, vmulq_f32(vld1q_f32(x + i), va));
    for (; i < n; i++)
        x[i] *= a;
}

void whet_add_neon(float *y, const float *a, const float *b, size_t n)
{
    size_t i = 0;
    /* both operands are loaded before the store, so y may alias a or b */
    for (; i + 4 <= n; i += 4)
        vst1q_f32(y + i, vaddq_f32(vld1q_f32(a + i), vld1q_f32(b + i)));
    for (; i < n; i++)
        y[i] = a[i] + b[i];
}

/* x² of a float is exact in double (24+24 bits < 53), so only the sums round;
 * four accumulators hide the add latency. */
double whet_sum_squares_neon(const float *x, size_t n)
{
    float64x2_t acc0 = vdupq_n_f64(0), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float32x4_t v0 = vld1q_f32(x + i), v1 = vld1q_f32(x + i + 4);
        float64x2_t d0 = vcvt_f64_f32(vget_low_f32(v0)), d1 = vcvt_high_f64_f32(v0);
        float64x2_t d2 = vcvt_f64_f32(vget_low_f32(v1)), d3 = vcvt_high_f64_f32(v1);
        acc0 = vfmaq_f64(acc0, d0, d0);
        acc1 = vfmaq_f64(acc1, d1, d1);
        acc2 = vfmaq_f64(acc2, d2, d2);
        acc3 = vfmaq_f64(acc3, d3, d3);
    }
    double sum = vaddvq_f64(vaddq_f64(vaddq_f64(acc0, acc1), vaddq_f64(acc2, acc3)));
    for (; i < n; i++)
        sum += (double)x[i] * x[i];
    return sum;
}

/* 16 independent chains: two 128-bit FMA pipes × 4 cycles latency (Cortex-A76,
 * Neoverse N1) need 8 in flight; wider cores (4 pipes on Neoverse V1/V2, Apple)
 * need 16. That uses half of the 32 vector registers. */
#define PEAK_CHAINS 16
double whet_fma_peak_loop_neon(size_t iterations)
{
    volatile float seed = 1.0f;
    const float32x4_t m = vdupq_n_f32(0.999999f), c = vdupq_n_f32(1e-7f);
    /* distinct starting values: identical chains would be merged into one */
    const float32x4_t d = vdupq_n_f32(1e-3f);
    float32x4_t a0 = vdupq_n_f32(seed);
    float32x4_t a1 = vaddq_f32(a0, d);
    float32x4_t a2 = vaddq_f32(a1, d);
    float32x4_t a3 = vaddq_f32(a2, d);
    float32x4_t a4 = vaddq_f32(a3, d);
    float32x4_t a5 = vaddq_f32(a4, d);
    float32x4_t a6 = vaddq_f32(a5, d);
    float32x4_t a7 = vaddq_f32(a6, d);
    float32x4_t a8 = vaddq_f32(a7, d);
    float32x4_t a9 = vaddq_f32(a8, d);
    float32x4_t a10 = vaddq_f32(a9, d);
    float32x4_t a11 = vaddq_f32(a10, d);
    float32x4_t a12 = vaddq_f32(a11, d);
    float32x4_t a13 = vaddq_f32(a12, d);
    float32x4_t a14 = vaddq_f32(a13, d);
    float32x4_t a15 = vaddq_f32(a14, d);
    for (size_t i = 0; i < iterations; i++) {
        a0 = vfmaq_f32(c, a0, m), a1 = vfmaq_f32(c, a1, m), a2 = vfmaq_f32(c, a2, m), a3 = vfmaq_f32(c, a3, m);
        a4 = vfmaq_f32(c, a4, m), a5 = vfmaq_f32(c, a5, m), a6 = vfmaq_f32(c, a6, m), a7 = vfmaq_f32(c, a7, m);
        a8 = vfmaq_f32(c, a8, m), a9 = vfmaq_f32(c, a9, m), a10 = vfmaq_f32(c, a10, m);
        a11 = vfmaq_f32(c, a11, m), a12 = vfmaq_f32(c, a12, m), a13 = vfmaq_f32(c, a13, m);
        a14 = vfmaq_f32(c, a14, m), a15 = vfmaq_f32(c, a15, m);
    }
    /* consume every chain so the compiler cannot drop any of them */
    float32x4_t s0 = vaddq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)),
                               vaddq_f32(vaddq_f32(a4, a5), vaddq_f32(a6, a7)));
    float32x4_t s1 = vaddq_f32(vaddq_f32(vaddq_f32(a8, a9), vaddq_f32(a10, a11)),
                               vaddq_f32(vaddq_f32(a12, a13), vaddq_f32(a14, a15)));
    seed = vgetq_lane_f32(vaddq_f32(s0, s1), 0);
    return 2.0 * 4 * PEAK_CHAINS * (double)iterations;
}
