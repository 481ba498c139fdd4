/* AVX2 row normalisation, softmax and cross-entropy.
 *
 * Row reductions widen to double lanes (one cvtps_pd per 4 floats is cheap next
 * to the loads), so sums are as accurate as the scalar reference's; the lane
 * layout and the tail handling depend on n alone, so a row gives the same bits
 * whichever thread or row split computes it. Element-wise steps use separate
 * mul/add in the scalar reference's order (the build passes -ffp-contract=off),
 * which makes the column-sum weight kernels bit-identical to the reference and
 * the rest differ from it only through exp and the summation order. */
#include "isa_kernels.h"

#include <immintrin.h>
#include <math.h>
#include <sleef.h>

#define W 8 /* floats per vector */

/* Lane masks for a partial vector of k < 8 floats: loads through them read no
 * byte past the row, which may end at the last mapped page. */
static const int32_t tail_bits[2 * W] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

static __m256i tail_mask(size_t k)
{
    return _mm256_loadu_si256((const __m256i *)(tail_bits + W - k));
}

static __m256d widen_lo(__m256 v)
{
    return _mm256_cvtps_pd(_mm256_castps256_ps128(v));
}

static __m256d widen_hi(__m256 v)
{
    return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
}

/* The two 4-lane double masks matching the 8-lane float mask m. */
static __m256d mask_lo_pd(__m256i m)
{
    return _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(m)));
}

static __m256d mask_hi_pd(__m256i m)
{
    return _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(m, 1)));
}

/* (lo + hi) then a fixed pairwise order over the four lanes */
static double hsum2(__m256d lo, __m256d hi)
{
    __m256d a = _mm256_add_pd(lo, hi);
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

static float hmax(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static float row_max(const float *x, size_t n, float start)
{
    __m256 vmax = _mm256_set1_ps(start);
    size_t i = 0;
    for (; i + W <= n; i += W)
        vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    if (i < n) {
        __m256i m = tail_mask(n - i);
        __m256 v = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_maskload_ps(x + i, m), _mm256_castsi256_ps(m));
        vmax = _mm256_max_ps(vmax, v);
    }
    return hmax(vmax);
}

/* Σ exp(x − max) in double; with y, also stores each exp (y may alias x). */
static double exp_sum(float *y, const float *x, size_t n, float max)
{
    const __m256 vmax = _mm256_set1_ps(max);
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + W <= n; i += W) {
        __m256 e = Sleef_expf8_u10avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax));
        if (y)
            _mm256_storeu_ps(y + i, e);
        lo = _mm256_add_pd(lo, widen_lo(e));
        hi = _mm256_add_pd(hi, widen_hi(e));
    }
    if (i < n) {
        __m256i m = tail_mask(n - i);
        __m256 e = Sleef_expf8_u10avx2(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), vmax));
        e = _mm256_and_ps(e, _mm256_castsi256_ps(m));
        if (y)
            _mm256_maskstore_ps(y + i, m, e);
        lo = _mm256_add_pd(lo, widen_lo(e));
        hi = _mm256_add_pd(hi, widen_hi(e));
    }
    return hsum2(lo, hi);
}

void whet_rmsnorm_forward_avx2(float *y, float *rstd, const float *x, const float *weight, size_t rows, size_t n,
                               float eps)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        /* a float square is exact in double, so only the additions round;
         * two vectors a step keep four add chains in flight */
        __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd(), lo2 = _mm256_setzero_pd(), hi2 = _mm256_setzero_pd();
        size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            __m256 v = _mm256_loadu_ps(xr + i), u = _mm256_loadu_ps(xr + i + W);
            __m256d a = widen_lo(v), b = widen_hi(v), c = widen_lo(u), d = widen_hi(u);
            lo = _mm256_fmadd_pd(a, a, lo);
            hi = _mm256_fmadd_pd(b, b, hi);
            lo2 = _mm256_fmadd_pd(c, c, lo2);
            hi2 = _mm256_fmadd_pd(d, d, hi2);
        }
        for (; i < n; i += W) {
            __m256 v = i + W <= n ? _mm256_loadu_ps(xr + i) : _mm256_maskload_ps(xr + i, tail_mask(n - i));
            __m256d a = widen_lo(v), b = widen_hi(v);
            lo = _mm256_fmadd_pd(a, a, lo);
            hi = _mm256_fmadd_pd(b, b, hi);
        }
        float s = (float)(1.0 / sqrt(hsum2(_mm256_add_pd(lo, lo2), _mm256_add_pd(hi, hi2)) / (double)n + (double)eps));
        if (rstd)
            rstd[r] = s;
        const __m256 vs = _mm256_set1_ps(s);
        for (i = 0; i + W <= n; i += W) {
            __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + i), vs), _mm256_loadu_ps(weight + i));
            _mm256_storeu_ps(yr + i, v);
        }
        if (i < n) {
            __m256i m = tail_mask(n - i);
            __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_maskload_ps(xr + i, m), vs), _mm256_maskload_ps(weight + i, m));
            _mm256_maskstore_ps(yr + i, m, v);
        }
    }
}

/* dx_i += s·w_i·dy_i − x_i·s³/n·Σ_j dy_j·w_j·x_j */
void whet_rmsnorm_backward_input_avx2(float *dx, const float *dy, const float *x, const float *weight,
                                      const float *rstd, size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n, *dyr = dy + r * n;
        float *dxr = dx + r * n;
        __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd(), lo2 = _mm256_setzero_pd(), hi2 = _mm256_setzero_pd();
        size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            __m256 d = _mm256_loadu_ps(dyr + i), w = _mm256_loadu_ps(weight + i), v = _mm256_loadu_ps(xr + i);
            __m256 d2 = _mm256_loadu_ps(dyr + i + W), w2 = _mm256_loadu_ps(weight + i + W), v2 = _mm256_loadu_ps(xr + i + W);
            /* dy·w is exact in double */
            lo = _mm256_fmadd_pd(_mm256_mul_pd(widen_lo(d), widen_lo(w)), widen_lo(v), lo);
            hi = _mm256_fmadd_pd(_mm256_mul_pd(widen_hi(d), widen_hi(w)), widen_hi(v), hi);
            lo2 = _mm256_fmadd_pd(_mm256_mul_pd(widen_lo(d2), widen_lo(w2)), widen_lo(v2), lo2);
            hi2 = _mm256_fmadd_pd(_mm256_mul_pd(widen_hi(d2), widen_hi(w2)), widen_hi(v2), hi2);
        }
        for (; i < n; i += W) {
            __m256 d, w, v;
            if (i + W <= n) {
                d = _mm256_loadu_ps(dyr + i), w = _mm256_loadu_ps(weight + i), v = _mm256_loadu_ps(xr + i);
            } else {
                __m256i m = tail_mask(n - i);
                d = _mm256_maskload_ps(dyr + i, m), w = _mm256_maskload_ps(weight + i, m);
                v = _mm256_maskload_ps(xr + i, m);
            }
            /* masked lanes are 0 and add nothing */
            lo = _mm256_fmadd_pd(_mm256_mul_pd(widen_lo(d), widen_lo(w)), widen_lo(v), lo);
            hi = _mm256_fmadd_pd(_mm256_mul_pd(widen_hi(d), widen_hi(w)), widen_hi(v), hi);
        }
        float s = rstd[r];
        float coef = (float)(hsum2(_mm256_add_pd(lo, lo2), _mm256_add_pd(hi, hi2)) * s * s * s / (double)n);
        const __m256 vs = _mm256_set1_ps(s), vc = _mm256_set1_ps(coef);
        for (i = 0; i + W <= n; i += W) {
            __m256 g = _mm256_mul_ps(_mm256_mul_ps(vs, _mm256_loadu_ps(weight + i)), _mm256_loadu_ps(dyr + i));
            g = _mm256_sub_ps(g, _mm256_mul_ps(_mm256_loadu_ps(xr + i), vc));
            _mm256_storeu_ps(dxr + i, _mm256_add_ps(_mm256_loadu_ps(dxr + i), g));
        }
        if (i < n) {
            __m256i m = tail_mask(n - i);
            __m256 g = _mm256_mul_ps(_mm256_mul_ps(vs, _mm256_maskload_ps(weight + i, m)), _mm256_maskload_ps(dyr + i, m));
            g = _mm256_sub_ps(g, _mm256_mul_ps(_mm256_maskload_ps(xr + i, m), vc));
            _mm256_maskstore_ps(dxr + i, m, _mm256_add_ps(_mm256_maskload_ps(dxr + i, m), g));
        }
    }
}

/* Lanes are columns; each sums its column down the rows in row order with the
 * reference's rounding steps, so any column split gives the reference's bits. */
void whet_rmsnorm_backward_weight_avx2(float *dweight, const float *dy, const float *x, const float *rstd,
                                       size_t rows, size_t n, size_t c0, size_t c1)
{
    size_t c = c0;
    for (; c + 4 * W <= c1; c += 4 * W) {
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (size_t r = 0; r < rows; r++) {
            const float *d = dy + r * n + c, *v = x + r * n + c;
            const __m256 s = _mm256_set1_ps(rstd[r]);
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(d), _mm256_mul_ps(_mm256_loadu_ps(v), s)));
            a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_loadu_ps(d + W), _mm256_mul_ps(_mm256_loadu_ps(v + W), s)));
            a2 = _mm256_add_ps(a2, _mm256_mul_ps(_mm256_loadu_ps(d + 2 * W), _mm256_mul_ps(_mm256_loadu_ps(v + 2 * W), s)));
            a3 = _mm256_add_ps(a3, _mm256_mul_ps(_mm256_loadu_ps(d + 3 * W), _mm256_mul_ps(_mm256_loadu_ps(v + 3 * W), s)));
        }
        _mm256_storeu_ps(dweight + c, _mm256_add_ps(_mm256_loadu_ps(dweight + c), a0));
        _mm256_storeu_ps(dweight + c + W, _mm256_add_ps(_mm256_loadu_ps(dweight + c + W), a1));
        _mm256_storeu_ps(dweight + c + 2 * W, _mm256_add_ps(_mm256_loadu_ps(dweight + c + 2 * W), a2));
        _mm256_storeu_ps(dweight + c + 3 * W, _mm256_add_ps(_mm256_loadu_ps(dweight + c + 3 * W), a3));
    }
    for (; c < c1; c += W) {
        __m256i m = c + W <= c1 ? _mm256_set1_epi32(-1) : tail_mask(c1 - c);
        __m256 a = _mm256_setzero_ps();
        for (size_t r = 0; r < rows; r++) {
            const __m256 s = _mm256_set1_ps(rstd[r]);
            __m256 v = _mm256_mul_ps(_mm256_maskload_ps(x + r * n + c, m), s);
            a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_maskload_ps(dy + r * n + c, m), v));
        }
        _mm256_maskstore_ps(dweight + c, m, _mm256_add_ps(_mm256_maskload_ps(dweight + c, m), a));
    }
}

void whet_layernorm_forward_avx2(float *y, float *mean, float *rstd, const float *x, const float *weight,
                                 const float *bias, size_t rows, size_t n, float eps)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd(), lo2 = _mm256_setzero_pd(), hi2 = _mm256_setzero_pd();
        size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            __m256 v = _mm256_loadu_ps(xr + i), u = _mm256_loadu_ps(xr + i + W);
            lo = _mm256_add_pd(lo, widen_lo(v));
            hi = _mm256_add_pd(hi, widen_hi(v));
            lo2 = _mm256_add_pd(lo2, widen_lo(u));
            hi2 = _mm256_add_pd(hi2, widen_hi(u));
        }
        for (; i < n; i += W) {
            __m256 v = i + W <= n ? _mm256_loadu_ps(xr + i) : _mm256_maskload_ps(xr + i, tail_mask(n - i));
            lo = _mm256_add_pd(lo, widen_lo(v));
            hi = _mm256_add_pd(hi, widen_hi(v));
        }
        double mu = hsum2(_mm256_add_pd(lo, lo2), _mm256_add_pd(hi, hi2)) / (double)n;
        /* two passes: the variance about the double mean, free of the
         * cancellation that E[x²] − E[x]² suffers for rows far from zero */
        const __m256d vmu = _mm256_set1_pd(mu);
        lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd(), lo2 = _mm256_setzero_pd(), hi2 = _mm256_setzero_pd();
        for (i = 0; i + 2 * W <= n; i += 2 * W) {
            __m256 v = _mm256_loadu_ps(xr + i), u = _mm256_loadu_ps(xr + i + W);
            __m256d a = _mm256_sub_pd(widen_lo(v), vmu), b = _mm256_sub_pd(widen_hi(v), vmu);
            __m256d c = _mm256_sub_pd(widen_lo(u), vmu), d = _mm256_sub_pd(widen_hi(u), vmu);
            lo = _mm256_fmadd_pd(a, a, lo);
            hi = _mm256_fmadd_pd(b, b, hi);
            lo2 = _mm256_fmadd_pd(c, c, lo2);
            hi2 = _mm256_fmadd_pd(d, d, hi2);
        }
        if (i + W <= n) {
            __m256 v = _mm256_loadu_ps(xr + i);
            __m256d a = _mm256_sub_pd(widen_lo(v), vmu), b = _mm256_sub_pd(widen_hi(v), vmu);
            lo = _mm256_fmadd_pd(a, a, lo);
            hi = _mm256_fmadd_pd(b, b, hi);
            i += W;
        }
        if (i < n) {
            __m256i m = tail_mask(n - i);
            __m256 v = _mm256_maskload_ps(xr + i, m);
            /* masked lanes would contribute mu² each */
            __m256d a = _mm256_and_pd(_mm256_sub_pd(widen_lo(v), vmu), mask_lo_pd(m));
            __m256d b = _mm256_and_pd(_mm256_sub_pd(widen_hi(v), vmu), mask_hi_pd(m));
            lo = _mm256_fmadd_pd(a, a, lo);
            hi = _mm256_fmadd_pd(b, b, hi);
        }
        float mf = (float)mu;
        float s = (float)(1.0 / sqrt(hsum2(_mm256_add_pd(lo, lo2), _mm256_add_pd(hi, hi2)) / (double)n + (double)eps));
        if (mean)
            mean[r] = mf;
        if (rstd)
            rstd[r] = s;
        const __m256 vm = _mm256_set1_ps(mf), vs = _mm256_set1_ps(s);
        for (i = 0; i + W <= n; i += W) {
            __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + i), vm), vs), _mm256_loadu_ps(weight + i));
            _mm256_storeu_ps(yr + i, _mm256_add_ps(v, _mm256_loadu_ps(bias + i)));
        }
        if (i < n) {
            __m256i m = tail_mask(n - i);
            __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_maskload_ps(xr + i, m), vm), vs),
                                     _mm256_maskload_ps(weight + i, m));
            _mm256_maskstore_ps(yr + i, m, _mm256_add_ps(v, _mm256_maskload_ps(bias + i, m)));
        }
    }
}

/* x̂ = (x−μ)·s, g = dy·w:  dx_i += s·(g_i − mean(g) − x̂_i·mean(g·x̂)) */
void whet_layernorm_backward_input_avx2(float *dx, const float *dy, const float *x, const float *weight,
                                        const float *mean, const float *rstd, size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n, *dyr = dy + r * n;
        float *dxr = dx + r * n;
        const __m256 vm = _mm256_set1_ps(mean[r]), vs = _mm256_set1_ps(rstd[r]);
        __m256d g_lo = _mm256_setzero_pd(), g_hi = _mm256_setzero_pd();
        __m256d gx_lo = _mm256_setzero_pd(), gx_hi = _mm256_setzero_pd();
        for (size_t i = 0; i < n; i += W) {
            __m256 d, w, v;
            if (i + W <= n) {
                d = _mm256_loadu_ps(dyr + i), w = _mm256_loadu_ps(weight + i), v = _mm256_loadu_ps(xr + i);
            } else {
                __m256i m = tail_mask(n - i);
                d = _mm256_maskload_ps(dyr + i, m), w = _mm256_maskload_ps(weight + i, m);
                v = _mm256_maskload_ps(xr + i, m);
            }
            /* x̂ in float as the reference rounds it; masked lanes have g = 0 */
            __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(v, vm), vs);
            __m256d ga = _mm256_mul_pd(widen_lo(d), widen_lo(w)), gb = _mm256_mul_pd(widen_hi(d), widen_hi(w));
            g_lo = _mm256_add_pd(g_lo, ga);
            g_hi = _mm256_add_pd(g_hi, gb);
            gx_lo = _mm256_fmadd_pd(ga, widen_lo(xhat), gx_lo);
            gx_hi = _mm256_fmadd_pd(gb, widen_hi(xhat), gx_hi);
        }
        const __m256 mg = _mm256_set1_ps((float)(hsum2(g_lo, g_hi) / (double)n));
        const __m256 mgx = _mm256_set1_ps((float)(hsum2(gx_lo, gx_hi) / (double)n));
        size_t i = 0;
        for (; i + W <= n; i += W) {
            __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + i), vm), vs);
            __m256 t = _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(dyr + i), _mm256_loadu_ps(weight + i)), mg);
            t = _mm256_mul_ps(vs, _mm256_sub_ps(t, _mm256_mul_ps(xhat, mgx)));
            _mm256_storeu_ps(dxr + i, _mm256_add_ps(_mm256_loadu_ps(dxr + i), t));
        }
        if (i < n) {
            __m256i m = tail_mask(n - i);
            __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(_mm256_maskload_ps(xr + i, m), vm), vs);
            __m256 t = _mm256_sub_ps(_mm256_mul_ps(_mm256_maskload_ps(dyr + i, m), _mm256_maskload_ps(weight + i, m)), mg);
            t = _mm256_mul_ps(vs, _mm256_sub_ps(t, _mm256_mul_ps(xhat, mgx)));
            _mm256_maskstore_ps(dxr + i, m, _mm256_add_ps(_mm256_maskload_ps(dxr + i, m), t));
        }
    }
}

/* Column lanes, rows in order, the reference's rounding steps: bit-identical. */
void whet_layernorm_backward_params_avx2(float *dweight, float *dbias, const float *dy, const float *x,
                                         const float *mean, const float *rstd, size_t rows, size_t n, size_t c0,
                                         size_t c1)
{
    size_t c = c0;
    for (; c + 2 * W <= c1; c += 2 * W) {
        __m256 w0 = _mm256_setzero_ps(), w1 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
        for (size_t r = 0; r < rows; r++) {
            const float *d = dy + r * n + c, *v = x + r * n + c;
            const __m256 m = _mm256_set1_ps(mean[r]), s = _mm256_set1_ps(rstd[r]);
            __m256 g0 = _mm256_loadu_ps(d), g1 = _mm256_loadu_ps(d + W);
            w0 = _mm256_add_ps(w0, _mm256_mul_ps(g0, _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(v), m), s)));
            w1 = _mm256_add_ps(w1, _mm256_mul_ps(g1, _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(v + W), m), s)));
            b0 = _mm256_add_ps(b0, g0);
            b1 = _mm256_add_ps(b1, g1);
        }
        _mm256_storeu_ps(dweight + c, _mm256_add_ps(_mm256_loadu_ps(dweight + c), w0));
        _mm256_storeu_ps(dweight + c + W, _mm256_add_ps(_mm256_loadu_ps(dweight + c + W), w1));
        _mm256_storeu_ps(dbias + c, _mm256_add_ps(_mm256_loadu_ps(dbias + c), b0));
        _mm256_storeu_ps(dbias + c + W, _mm256_add_ps(_mm256_loadu_ps(dbias + c + W), b1));
    }
    for (; c < c1; c += W) {
        __m256i mk = c + W <= c1 ? _mm256_set1_epi32(-1) : tail_mask(c1 - c);
        __m256 sw = _mm256_setzero_ps(), sb = _mm256_setzero_ps();
        for (size_t r = 0; r < rows; r++) {
            const __m256 m = _mm256_set1_ps(mean[r]), s = _mm256_set1_ps(rstd[r]);
            __m256 g = _mm256_maskload_ps(dy + r * n + c, mk);
            __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(_mm256_maskload_ps(x + r * n + c, mk), m), s);
            sw = _mm256_add_ps(sw, _mm256_mul_ps(g, xhat));
            sb = _mm256_add_ps(sb, g);
        }
        _mm256_maskstore_ps(dweight + c, mk, _mm256_add_ps(_mm256_maskload_ps(dweight + c, mk), sw));
        _mm256_maskstore_ps(dbias + c, mk, _mm256_add_ps(_mm256_maskload_ps(dbias + c, mk), sb));
    }
}

void whet_softmax_forward_avx2(float *y, const float *x, size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float max = row_max(xr, n, -INFINITY);
        const __m256 inv = _mm256_set1_ps((float)(1.0 / exp_sum(yr, xr, n, max)));
        size_t i = 0;
        for (; i + W <= n; i += W)
            _mm256_storeu_ps(yr + i, _mm256_mul_ps(_mm256_loadu_ps(yr + i), inv));
        if (i < n) {
            __m256i m = tail_mask(n - i);
            _mm256_maskstore_ps(yr + i, m, _mm256_mul_ps(_mm256_maskload_ps(yr + i, m), inv));
        }
    }
}

/* dx = y·(dy − Σ dy·y) */
void whet_softmax_backward_avx2(float *dx, const float *dy, const float *y, size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * n, *yr = y + r * n;
        float *dxr = dx + r * n;
        __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd(), lo2 = _mm256_setzero_pd(), hi2 = _mm256_setzero_pd();
        size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            __m256 d = _mm256_loadu_ps(dyr + i), v = _mm256_loadu_ps(yr + i);
            __m256 d2 = _mm256_loadu_ps(dyr + i + W), v2 = _mm256_loadu_ps(yr + i + W);
            lo = _mm256_fmadd_pd(widen_lo(d), widen_lo(v), lo);
            hi = _mm256_fmadd_pd(widen_hi(d), widen_hi(v), hi);
            lo2 = _mm256_fmadd_pd(widen_lo(d2), widen_lo(v2), lo2);
            hi2 = _mm256_fmadd_pd(widen_hi(d2), widen_hi(v2), hi2);
        }
        for (; i < n; i += W) {
            __m256 d, v;
            if (i + W <= n) {
                d = _mm256_loadu_ps(dyr + i), v = _mm256_loadu_ps(yr + i);
            } else {
                __m256i m = tail_mask(n - i);
                d = _mm256_maskload_ps(dyr + i, m), v = _mm256_maskload_ps(yr + i, m);
            }
            lo = _mm256_fmadd_pd(widen_lo(d), widen_lo(v), lo);
            hi = _mm256_fmadd_pd(widen_hi(d), widen_hi(v), hi);
        }
        const __m256 dot = _mm256_set1_ps((float)hsum2(_mm256_add_pd(lo, lo2), _mm256_add_pd(hi, hi2)));
        for (i = 0; i + W <= n; i += W) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(yr + i), _mm256_sub_ps(_mm256_loadu_ps(dyr + i), dot));
            _mm256_storeu_ps(dxr + i, v);
        }
        if (i < n) {
            __m256i m = tail_mask(n - i);
            __m256 v = _mm256_mul_ps(_mm256_maskload_ps(yr + i, m), _mm256_sub_ps(_mm256_maskload_ps(dyr + i, m), dot));
            _mm256_maskstore_ps(dxr + i, m, v);
        }
    }
}

void whet_cross_entropy_lse_update_avx2(float *running_max, float *running_sum, const float *logits, size_t ld,
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
void whet_cross_entropy_backward_avx2(float *dlogits, const float *logits, size_t ld, size_t rows, size_t n,
                                      size_t vocab_offset, const int32_t *targets, const float *lse,
                                      const float *row_scale)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (size_t r = 0; r < rows; r++) {
        const float *lr = logits + r * ld;
        float *dr = dlogits + r * ld;
        const __m256 vl = _mm256_set1_ps(lse[r]), vscale = _mm256_set1_ps(row_scale[r]);
        /* the target's column in this chunk, or SIZE_MAX when it lies elsewhere */
        size_t t = SIZE_MAX;
        if (targets[r] >= 0 && (size_t)targets[r] >= vocab_offset && (size_t)targets[r] - vocab_offset < n)
            t = (size_t)targets[r] - vocab_offset;
        for (size_t j = 0; j < n; j += W) {
            int full = j + W <= n;
            __m256i m = full ? _mm256_set1_epi32(-1) : tail_mask(n - j);
            __m256 p = Sleef_expf8_u10avx2(_mm256_sub_ps(full ? _mm256_loadu_ps(lr + j) : _mm256_maskload_ps(lr + j, m), vl));
            if (t - j < W) {
                __m256 hot = _mm256_castsi256_ps(_mm256_cmpeq_epi32(lane, _mm256_set1_epi32((int)(t - j))));
                p = _mm256_sub_ps(p, _mm256_and_ps(hot, _mm256_set1_ps(1.0f)));
            }
            if (full)
                _mm256_storeu_ps(dr + j, _mm256_mul_ps(vscale, p));
            else
                _mm256_maskstore_ps(dr + j, m, _mm256_mul_ps(vscale, p));
        }
    }
}
