/* Scalar reference: conversions, vector arithmetic, the FMA peak loop. */
#include "isa_kernels.h"

#include <string.h>

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

void whet_f32_to_bf16_scalar(whet_bf16 *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = float_bits(src[i]);
        if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it quiet and a NaN */
            dst[i] = (whet_bf16)((u >> 16) | 0x40);
        else /* round to nearest, ties to even */
            dst[i] = (whet_bf16)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
    }
}

void whet_bf16_to_f32_scalar(float *dst, const whet_bf16 *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = bits_float((uint32_t)src[i] << 16);
}

void whet_f32_to_f16_scalar(whet_f16 *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = float_bits(src[i]);
        uint32_t sign = (u >> 16) & 0x8000u;
        uint32_t abs = u & 0x7fffffffu;
        uint16_t h;
        if (abs > 0x7f800000u) { /* NaN: quiet, keep the top mantissa bits */
            h = (uint16_t)(0x7e00u | ((abs >> 13) & 0x3ffu));
        } else if (abs >= 0x477ff000u) { /* rounds to ≥ 65520: infinity */
            h = 0x7c00u;
        } else if (abs >= 0x38800000u) { /* normal half: rebias, round to nearest even */
            uint32_t mant_odd = (abs >> 13) & 1;
            abs += 0xc8000fffu + mant_odd; /* −(127−15)<<23, plus the rounding bias */
            h = (uint16_t)(abs >> 13);
        } else if (abs > 0x33000000u) { /* subnormal half */
            uint32_t exponent = abs >> 23;
            uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
            uint32_t shift = 126 - exponent; /* 14..24 */
            uint32_t value = mantissa >> shift;
            uint32_t rest = mantissa & ((1u << shift) - 1);
            uint32_t halfway = 1u << (shift - 1);
            if (rest > halfway || (rest == halfway && (value & 1)))
                value++;
            h = (uint16_t)value;
        } else if (abs == 0x33000000u) { /* exactly half the smallest subnormal: ties to even, 0 */
            h = 0;
        } else {
            h = 0;
        }
        dst[i] = (whet_f16)(sign | h);
    }
}

void whet_f16_to_f32_scalar(float *dst, const whet_f16 *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t h = src[i];
        uint32_t sign = (h & 0x8000u) << 16;
        uint32_t exponent = (h >> 10) & 0x1f;
        uint32_t mantissa = h & 0x3ffu;
        uint32_t u;
        if (exponent == 0x1f) {
            /* a signalling NaN comes out quiet (payload kept), as F16C and
             * FCVTL convert it: NaN stays NaN and never signals later */
            u = sign | 0x7f800000u | (mantissa << 13) | (mantissa ? 0x400000u : 0);
        } else if (exponent != 0) {
            u = sign | ((exponent + 112) << 23) | (mantissa << 13);
        } else if (mantissa == 0) {
            u = sign;
        } else { /* subnormal half: normalise */
            int e = -1;
            do {
                e++;
                mantissa <<= 1;
            } while (!(mantissa & 0x400u));
            u = sign | ((uint32_t)(112 - e) << 23) | ((mantissa & 0x3ffu) << 13);
        }
        dst[i] = bits_float(u);
    }
}

void whet_axpy_scalar(float *y, float a, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

void whet_scale_scalar(float *x, float a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] *= a;
}

void whet_add_scalar(float *y, const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}

double whet_sum_squares_scalar(const float *x, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)x[i] * x[i];
    return sum;
}

double whet_fma_peak_loop_scalar(size_t iterations)
{
    /* eight independent multiply-add chains, enough to hide the latency */
    volatile float seed = 1.0f;
    float a0 = seed, a1 = seed, a2 = seed, a3 = seed, a4 = seed, a5 = seed, a6 = seed, a7 = seed;
    const float m = 0.999999f, c = 1e-7f;
    for (size_t i = 0; i < iterations; i++) {
        a0 = a0 * m + c, a1 = a1 * m + c, a2 = a2 * m + c, a3 = a3 * m + c;
        a4 = a4 * m + c, a5 = a5 * m + c, a6 = a6 * m + c, a7 = a7 * m + c;
    }
    seed = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
    return 16.0 * (double)iterations;
}
