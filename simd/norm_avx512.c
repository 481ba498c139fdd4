/* AVX-512 row normalisation, softmax and cross-entropy.
 *
 * Same scheme as norm_avx2.c at 16 lanes: row reductions widen to double lanes
 * in an order that depends on n alone; element-wise steps use separate mul/add
 * in the scalar reference's order (-ffp-contract=off), so the column-sum weight
 * kernels give the reference's bits. Row tails use masked loads and stores,
 * which neither read nor write past the row. */
#include "isa_kernels.h"

#include <immintrin.h>
#include <math.h>
#include <sleef.h>

#define W 16 /* floats per vector */

static __mmask16 tail_mask(size_t k)
{
    return (__mmask16)((1u << k) - 1);
}

static __m512d widen_lo(__m512 v)
{
    return _mm512_cvtps_pd(_mm512_castps512_ps256(v));
}

static __m512d widen_hi(__m512 v)
{
    return _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
}

/* (lo + hi), then halves folded in a fixed order */
static double hsum2(__m512d lo, __m512d hi)
{
    __m512d a = _mm512_add_pd(lo, hi);
    __m256d b = _mm256_add_pd(_mm512_castpd512_pd256(a), _mm512_extractf64x4_pd(a, 1));
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(b), _mm256_extractf128_pd(b, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

static float row_max(const float *x, size_t n, float start)
{
    __m512 vmax = _mm512_set1_ps(start);
    size_t i = 0;
    for (; i + W <= n; i += W)
        vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(x + i));
    if (i < n)
        vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail_mask(n - i), x + i));
    return _mm512_reduce_max_ps(vmax);
}

/* Σ exp(x − max) in double; with y, also stores each exp (y may alias x). */
static double exp_sum(float *y, const float *x, size_t n, float max)
{
    const __m512 vmax = _mm512_set1_ps(max);
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
    size_t i = 0;
    for (; i + W <= n; i += W) {
        __m512 e = Sleef_expf16_u10avx512f(_mm512_sub_ps(_mm512_loadu_ps(x + i), vmax));
        if (y)
            _mm512_storeu_ps(y + i, e);
        lo = _mm512_add_pd(lo, widen_lo(e));
        hi = _mm512_add_pd(hi, widen_hi(e));
    }
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        __m512 e = Sleef_expf16_u10avx512f(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vmax));
        e = _mm512_maskz_mov_ps(m, e);
        if (y)
            _mm512_mask_storeu_ps(y + i, m, e);
        lo = _mm512_add_pd(lo, widen_lo(e));
        hi = _mm512_add_pd(hi, widen_hi(e));
    }
    return hsum2(lo, hi);
}

void whet_rmsnorm_forward_avx512(float *y, float *rstd, const float *x, const float *weight, size_t rows,
                                 size_t n, float eps)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        /* a float square is exact in double, so only the additions round;
         * two vectors a step keep four add chains in flight */
        __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd(), lo2 = _mm512_setzero_pd(), hi2 = _mm512_setzero_pd();
        size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            __m512 v = _mm512_loadu_ps(xr + i), u = _mm512_loadu_ps(xr + i + W);
            __m512d a = widen_lo(v), b = widen_hi(v), c = widen_lo(u), d = widen_hi(u);
            lo = _mm512_fmadd_pd(a, a, lo);
            hi = _mm512_fmadd_pd(b, b, hi);
            lo2 = _mm512_fmadd_pd(c, c, lo2);
            hi2 = _mm512_fmadd_pd(d, d, hi2);
        }
        for (; i < n; i += W) {
            __m512 v = i + W <= n ? _mm512_loadu_ps(xr + i) : _mm512_maskz_loadu_ps(tail_mask(n - i), xr + i);
            __m512d a = widen_lo(v), b = widen_hi(v);
            lo = _mm512_fmadd_pd(a, a, lo);
            hi = _mm512_fmadd_pd(b, b, hi);
        }
        float s = (float)(1.0 / sqrt(hsum2(_mm512_add_pd(lo, lo2), _mm512_add_pd(hi, hi2)) / (double)n + (double)eps));
        if (rstd)
            rstd[r] = s;
        const __m512 vs = _mm512_set1_ps(s);
        for (i = 0; i + W <= n; i += W)
            _mm512_storeu_ps(yr + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(xr + i), vs), _mm512_loadu_ps(weight + i)));
        if (i < n) {
            __mmask16 m = tail_mask(n - i);
            __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, xr + i), vs), _mm512_maskz_loadu_ps(m, weight + i));
            _mm512_mask_storeu_ps(yr + i, m, v);
        }
    }
}

/* dx_i += s·w_i·dy_i − x_i·s³/n·Σ_j dy_j·w_j·x_j */
void whet_rmsnorm_backward_input_avx512(float *dx, const float *dy, const float *x, const float *weight,
                                        const float *rstd, size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n, *dyr = dy + r * n;
        float *dxr = dx + r * n;
        __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd(), lo2 = _mm512_setzero_pd(), hi2 = _mm512_setzero_pd();
        size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            __m512 d = _mm512_loadu_ps(dyr + i), w = _mm512_loadu_ps(weight + i), v = _mm512_loadu_ps(xr + i);
            __m512 d2 = _mm512_loadu_ps(dyr + i + W), w2 = _mm512_loadu_ps(weight + i + W), v2 = _mm512_loadu_ps(xr + i + W);
            /* dy·w is exact in double */
            lo = _mm512_fmadd_pd(_mm512_mul_pd(widen_lo(d), widen_lo(w)), widen_lo(v), lo);
            hi = _mm512_fmadd_pd(_mm512_mul_pd(widen_hi(d), widen_hi(w)), widen_hi(v), hi);
            lo2 = _mm512_fmadd_pd(_mm512_mul_pd(widen_lo(d2), widen_lo(w2)), widen_lo(v2), lo2);
            hi2 = _mm512_fmadd_pd(_mm512_mul_pd(widen_hi(d2), widen_hi(w2)), widen_hi(v2), hi2);
        }
        for (; i < n; i += W) {
            __mmask16 m = i + W <= n ? (__mmask16)0xffff : tail_mask(n - i);
            __m512 d = _mm512_maskz_loadu_ps(m, dyr + i), w = _mm512_maskz_loadu_ps(m, weight + i);
            __m512 v = _mm512_maskz_loadu_ps(m, xr + i);
            /* masked lanes are 0 and add nothing */
            lo = _mm512_fmadd_pd(_mm512_mul_pd(widen_lo(d), widen_lo(w)), widen_lo(v), lo);
            hi = _mm512_fmadd_pd(_mm512_mul_pd(widen_hi(d), widen_hi(w)), widen_hi(v), hi);
        }
        float s = rstd[r];
        float coef = (float)(hsum2(_mm512_add_pd(lo, lo2), _mm512_add_pd(hi, hi2)) * s * s * s / (double)n);
        const __m512 vs = _mm512_set1_ps(s), vc = _mm512_set1_ps(coef);
        for (i = 0; i < n; i += W) {
            __mmask16 m = i + W <= n ? (__mmask16)0xffff : tail_mask(n - i);
            __m512 g = _mm512_mul_ps(_mm512_mul_ps(vs, _mm512_maskz_loadu_ps(m, weight + i)), _mm512_maskz_loadu_ps(m, dyr + i));
            g = _mm512_sub_ps(g, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xr + i), vc));
            _mm512_mask_storeu_ps(dxr + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, dxr + i), g));
        }
    }
}

/* Lanes are columns; each sums its column down the rows in row order with the
 * reference's rounding steps, so any column split gives the reference's bits. */
void whet_rmsnorm_backward_weight_avx512(float *dweight, const float *dy, const float *x, const float *rstd,
                                         size_t rows, size_t n, size_t c0, size_t c1)
{
    size_t c = c0;
    for (; c + 4 * W <= c1; c += 4 * W) {
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        for (size_t r = 0; r < rows; r++) {
            const float *d = dy + r * n + c, *v = x + r * n + c;
            const __m512 s = _mm512_set1_ps(rstd[r]);
            a0 = _mm512_add_ps(a0, _mm512_mul_ps(_mm512_loadu_ps(d), _mm512_mul_ps(_mm512_loadu_ps(v), s)));
            a1 = _mm512_add_ps(a1, _mm512_mul_ps(_mm512_loadu_ps(d + W), _mm512_mul_ps(_mm512_loadu_ps(v + W), s)));
            a2 = _mm512_add_ps(a2, _mm512_mul_ps(_mm512_loadu_ps(d + 2 * W), _mm512_mul_ps(_mm512_loadu_ps(v + 2 * W), s)));
            a3 = _mm512_add_ps(a3, _mm512_mul_ps(_mm512_loadu_ps(d + 3 * W), _mm512_mul_ps(_mm512_loadu_ps(v + 3 * W), s)));
        }
        _mm512_storeu_ps(dweight + c, _mm512_add_ps(_mm512_loadu_ps(dweight + c), a0));
        _mm512_storeu_ps(dweight + c + W, _mm512_add_ps(_mm512_loadu_ps(dweight + c + W), a1));
        _mm512_storeu_ps(dweight + c + 2 * W, _mm512_add_ps(_mm512_loadu_ps(dweight + c + 2 * W), a2));
        _mm512_storeu_ps(dweight + c + 3 * W, _mm512_add_ps(_mm512_loadu_ps(dweight + c + 3 * W), a3));
    }
    for (; c < c1; c += W) {
        __mmask16 m = c + W <= c1 ? (__mmask16)0xffff : tail_mask(c1 - c);
        __m512 a = _mm512_setzero_ps();
        for (size_t r = 0; r < rows; r++) {
            const __m512 s = _mm512_set1_ps(rstd[r]);
            __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + r * n + c), s);
            a = _mm512_add_ps(a, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dy + r * n + c), v));
        }
        _mm512_mask_storeu_ps(dweight + c, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, dweight + c), a));
    }
}

void whet_layernorm_forward_avx512(float *y, float *mean, float *rstd, const float *x, const float *weight,
                                   const float *bias, size_t rows, size_t n, float eps)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd(), lo2 = _mm512_setzero_pd(), hi2 = _mm512_setzero_pd();
        size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            __m512 v = _mm512_loadu_ps(xr + i), u = _mm512_loadu_ps(xr + i + W);
            lo = _mm512_add_pd(lo, widen_lo(v));
            hi = _mm512_add_pd(hi, widen_hi(v));
            lo2 = _mm512_add_pd(lo2, widen_lo(u));
            hi2 = _mm512_add_pd(hi2, widen_hi(u));
        }
        for (; i < n; i += W) {
            __m512 v = i + W <= n ? _mm512_loadu_ps(xr + i) : _mm512_maskz_loadu_ps(tail_mask(n - i), xr + i);
            lo = _mm512_add_pd(lo, widen_lo(v));
            hi = _mm512_add_pd(hi, widen_hi(v));
        }
        double mu = hsum2(_mm512_add_pd(lo, lo2), _mm512_add_pd(hi, hi2)) / (double)n;
        /* two passes: the variance about the double mean, free of the
         * cancellation that E[x²] − E[x]² suffers for rows far from zero */
        const __m512d vmu = _mm512_set1_pd(mu);
        lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd(), lo2 = _mm512_setzero_pd(), hi2 = _mm512_setzero_pd();
        for (i = 0; i + 2 * W <= n; i += 2 * W) {
            __m512 v = _mm512_loadu_ps(xr + i), u = _mm512_loadu_ps(xr + i + W);
            __m512d a = _mm512_sub_pd(widen_lo(v), vmu), b = _mm512_sub_pd(widen_hi(v), vmu);
            __m512d c = _mm512_sub_pd(widen_lo(u), vmu), d = _mm512_sub_pd(widen_hi(u), vmu);
            lo = _mm512_fmadd_pd(a, a, lo);
            hi = _mm512_fmadd_pd(b, b, hi);
            lo2 = _mm512_fmadd_pd(c, c, lo2);
            hi2 = _mm512_fmadd_pd(d, d, hi2);
        }
        for (; i < n; i += W) {
            __mmask16 m = i + W <= n ? (__mmask16)0xffff : tail_mask(n - i);
            __m512 v = _mm512_maskz_loadu_ps(m, xr + i);
            /* masked lanes would contribute mu² each */
            __m512d a = _mm512_maskz_sub_pd((__mmask8)m, widen_lo(v), vmu);
            __m512d b = _mm512_maskz_sub_pd((__mmask8)(m >> 8), widen_hi(v), vmu);
            lo = _mm512_fmadd_pd(a, a, lo);
            hi = _mm512_fmadd_pd(b, b, hi);
        }
        float mf = (float)mu;
        float s = (float)(1.0 / sqrt(hsum2(_mm512_add_pd(lo, lo2), _mm512_add_pd(hi, hi2)) / (double)n + (double)eps));
        if (mean)
            mean[r] = mf;
        if (rstd)
            rstd[r] = s;
        const __m512 vm = _mm512_set1_ps(mf), vs = _mm512_set1_ps(s);
        for (i = 0; i + W <= n; i += W) {
            __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xr + i), vm), vs), _mm512_loadu_ps(weight + i));
            _mm512_storeu_ps(yr + i, _mm512_add_ps(v, _mm512_loadu_ps(bias + i)));
        }
        if (i < n) {
            __mmask16 m = tail_mask(n - i);
            __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + i), vm), vs),
                                     _mm512_maskz_loadu_ps(m, weight + i));
            _mm512_mask_storeu_ps(yr + i, m, _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + i)));
        }
    }
}

/* x̂ = (x−μ)·s, g = dy·w:  dx_i += s·(g_i − mean(g) − x̂_i·mean(g·x̂)) */
void whet_layernorm_backward_input_avx512(float *dx, const float *dy, const float *x, const float *weight,
                                          const float *mean, const float *rstd, size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n, *dyr = dy + r * n;
        float *dxr = dx + r * n;
        const __m512 vm = _mm512_set1_ps(mean[r]), vs = _mm512_set1_ps(rstd[r]);
        __m512d g_lo = _mm512_setzero_pd(), g_hi = _mm512_setzero_pd();
        __m512d gx_lo = _mm512_setzero_pd(), gx_hi = _mm512_setzero_pd();
        for (size_t i = 0; i < n; i += W) {
            __mmask16 m = i + W <= n ? (__mmask16)0xffff : tail_mask(n - i);
            __m512 d = _mm512_maskz_loadu_ps(m, dyr + i), w = _mm512_maskz_loadu_ps(m, weight + i);
            __m512 v = _mm512_maskz_loadu_ps(m, xr + i);
            /* x̂ in float as the reference rounds it; masked lanes have g = 0 */
            __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(v, vm), vs);
            __m512d ga = _mm512_mul_pd(widen_lo(d), widen_lo(w)), gb = _mm512_mul_pd(widen_hi(d), widen_hi(w));
            g_lo = _mm512_add_pd(g_lo, ga);
            g_hi = _mm512_add_pd(g_hi, gb);
            gx_lo = _mm512_fmadd_pd(ga, widen_lo(xhat), gx_lo);
            gx_hi = _mm512_fmadd_pd(gb, widen_hi(xhat), gx_hi);
        }
        const __m512 mg = _mm512_set1_ps((float)(hsum2(g_lo, g_hi) / (double)n));
        const __m512 mgx = _mm512_set1_ps((float)(hsum2(gx_lo, gx_hi) / (double)n));
        for (size_t i = 0; i < n; i += W) {
            __mmask16 m = i + W <= n ? (__mmask16)0xffff : tail_mask(n - i);
            __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + i), vm), vs);
            __m512 t = _mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, dyr + i), _mm512_maskz_loadu_ps(m, weight + i)), mg);
            t = _mm512_mul_ps(vs, _mm512_sub_ps(t, _mm512_mul_ps(xhat, mgx)));
            _mm512_mask_storeu_ps(dxr + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, dxr + i), t));
        }
    }
}

/* Column lanes, rows in order, the reference's rounding steps: bit-identical. */
void whet_layernorm_backward_params_avx512(float *dweight, float *dbias, const float *dy, const float *x,
                                           const float *mean, const float *rstd, size_t rows, size_t n, size_t c0,
                                           size_t c1)
{
    size_t c = c0;
    for (; c + 2 * W <= c1; c += 2 * W) {
        __m512 w0 = _mm512_setzero_ps(), w1 = _mm512_setzero_ps(), b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
        for (size_t r = 0; r < rows; r++) {
            const float *d = dy + r * n + c, *v = x + r * n + c;
            const __m512 m = _mm512_set1_ps(mean[r]), s = _mm512_set1_ps(rstd[r]);
            __m512 g0 = _mm512_loadu_ps(d), g1 = _mm512_loadu_ps(d + W);
            w0 = _mm512_add_ps(w0, _mm512_mul_ps(g0, _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(v), m), s)));
            w1 = _mm512_add_ps(w1, _mm512_mul_ps(g1, _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(v + W), m), s)));
            b0 = _mm512_add_ps(b0, g0);
            b1 = _mm512_add_ps(b1, g1);
        }
        _mm512_storeu_ps(dweight + c, _mm512_add_ps(_mm512_loadu_ps(dweight + c), w0));
        _mm512_storeu_ps(dweight + c + W, _mm512_add_ps(_mm512_loadu_ps(dweight + c + W), w1));
        _mm512_storeu_ps(dbias + c, _mm512_add_ps(_mm512_loadu_ps(dbias + c), b0));
        _mm512_storeu_ps(dbias + c + W, _mm512_add_ps(_mm512_loadu_ps(dbias + c + W), b1));
    }
    for (; c < c1; c += W) {
        __mmask16 mk = c + W <= c1 ? (__mmask16)0xffff : tail_mask(c1 - c);
        __m512 sw = _mm512_setzero_ps(), sb = _mm512_setzero_ps();
        for (size_t r = 0; r < rows; r++) {
            const __m512 m = _mm512_set1_ps(mean[r]), s = _mm512_set1_ps(rstd[r]);
            __m512 g = _mm512_maskz_loadu_ps(mk, dy + r * n + c);
            __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, x + r * n + c), m), s);
            sw = _mm512_add_ps(sw, _mm512_mul_ps(g, xhat));
            sb = _mm512_add_ps(sb, g);
        }
        _mm512_mask_storeu_ps(dweight + c, mk, _mm512_add_ps(_mm512_maskz_loadu_ps(mk, dweight + c), sw));
        _mm512_mask_storeu_ps(dbias + c, mk, _mm512_add_ps(_mm512_maskz_loadu_ps(mk, dbias + c), sb));
    }
}

void whet_softmax_forward_avx512(float *y, const float *x, size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float max = row_max(xr, n, -INFINITY);
        const __m512 inv = _mm512_set1_ps((float)(1.0 / exp_sum(yr, xr, n, max)));
        size_t i = 0;
        for (; i + W <= n; i += W)
            _mm512_storeu_ps(yr + i, _mm512_mul_ps(_mm512_loadu_ps(yr + i), inv));
        if (i < n) {
            __mmask16 m = tail_mask(n - i);
            _mm512_mask_storeu_ps(yr + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, yr + i), inv));
        }
    }
}

/* dx = y·(dy − Σ dy·y) */
void whet_softmax_backward_avx512(float *dx, const float *dy, const float *y, size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * n, *yr = y + r * n;
        float *dxr = dx + r * n;
        __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd(), lo2 = _mm512_setzero_pd(), hi2 = _mm512_setzero_pd();
        size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            __m512 d = _mm512_loadu_ps(dyr + i), v = _mm512_loadu_ps(yr + i);
            __m512 d2 = _mm512_loadu_ps(dyr + i + W), v2 = _mm512_loadu_ps(yr + i + W);
            lo = _mm512_fmadd_pd(widen_lo(d), widen_lo(v), lo);
            hi = _mm512_fmadd_pd(widen_hi(d), widen_hi(v), hi);
            lo2 = _mm512_fmadd_pd(widen_lo(d2), widen_lo(v2), lo2);
            hi2 = _mm512_fmadd_pd(widen_hi(d2), widen_hi(v2), hi2);
        }
        for (; i < n; i += W) {
            __mmask16 m = i + W <= n ? (__mmask16)0xffff : tail_mask(n - i);
            __m512 d = _mm512_maskz_loadu_ps(m, dyr + i), v = _mm512_maskz_loadu_ps(m, yr + i);
            lo = _mm512_fmadd_pd(widen_lo(d), widen_lo(v), lo);
            hi = _mm512_fmadd_pd(widen_hi(d), widen_hi(v), hi);
        }
        const __m512 dot = _mm512_set1_ps((float)hsum2(_mm512_add_pd(lo, lo2), _mm512_add_pd(hi, hi2)));
        for (i = 0; i < n; i += W) {
            __mmask16 m = i + W <= n ? (__mmask16)0xffff : tail_mask(n - i);
            __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, yr + i), _mm512_sub_ps(_mm512_maskz_loadu_ps(m, dyr + i), dot));
            _mm512_mask_storeu_ps(dxr + i, m, v);
        }
    }
}

void whet_cross_entropy_lse_update_avx512(float *running_max, float *running_sum, const float *logits, size_t ld,
                                          size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        const float *lr = logits + r * ld;
        float max = row_max(lr, n, running_max[r]);
        /* the zero test keeps the first chunk off exp(−inf − −inf) = NaN */
        double sum = running_sum[r] == 0 ? 0 : (double)running_sum[r] * exp((double)running_max[r] - max);
        sum += exp_sum(NULL, lr, n, max);
        running_max[r] = max;
        running_sum[r] = (float)sum;
    }
}

/* dlogits = row_scale·(exp(logits − lse) − one_hot(target)) */
void whet_cross_entropy_backward_avx512(float *dlogits, const float *logits, size_t ld, size_t rows, size_t n,
                                        size_t vocab_offset, const int32_t *targets, const float *lse,
                                        const float *row_scale)
{
    for (size_t r = 0; r < rows; r++) {
        const float *lr = logits + r * ld;
        float *dr = dlogits + r * ld;
        const __m512 vl = _mm512_set1_ps(lse[r]), vscale = _mm512_set1_ps(row_scale[r]);
        /* the target's column in this chunk, or SIZE_MAX when it lies elsewhere */
        size_t t = SIZE_MAX;
        if (targets[r] >= 0 && (size_t)targets[r] >= vocab_offset && (size_t)targets[r] - vocab_offset < n)
            t = (size_t)targets[r] - vocab_offset;
        for (size_t j = 0; j < n; j += W) {
            __mmask16 m = j + W <= n ? (__mmask16)0xffff : tail_mask(n - j);
            __m512 p = Sleef_expf16_u10avx512f(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, lr + j), vl));
            if (t - j < W)
                p = _mm512_mask_sub_ps(p, (__mmask16)(1u << (t - j)), p, _mm512_set1_ps(1.0f));
            _mm512_mask_storeu_ps(dr + j, m, _mm512_mul_ps(vscale, p));
        }
    }
}
