/* NEON row normalisation, softmax and cross-entropy.
 *
 * Same scheme as norm_avx2.c at 4 lanes: row reductions widen to float64x2
 * lanes in an order that depends on n alone; element-wise steps use separate
 * mul/add in the scalar reference's order (-ffp-contract=off keeps the compiler
 * from fusing them), so the column-sum weight kernels give the reference's
 * bits. A row's last partial vector goes through a 4-float stack copy, so no
 * load or store reaches past the row. */
#include "isa_kernels.h"

#include <arm_neon.h>
#include <math.h>
#include <sleef.h>
#include <string.h>

#define W 4 /* floats per vector */

static float32x4_t load_part(const float *p, size_t k, float fill)
{
    float b[W] = {fill, fill, fill, fill};
    memcpy(b, p, k * sizeof *p);
    return vld1q_f32(b);
}

static void store_part(float *p, size_t k, float32x4_t v)
{
    float b[W];
    vst1q_f32(b, v);
    memcpy(p, b, k * sizeof *p);
}

/* the whole vector at p, or its first n − i floats padded with fill */
static float32x4_t load_at(const float *p, size_t i, size_t n, float fill)
{
    return i + W <= n ? vld1q_f32(p + i) : load_part(p + i, n - i, fill);
}

static void store_at(float *p, size_t i, size_t n, float32x4_t v)
{
    if (i + W <= n)
        vst1q_f32(p + i, v);
    else
        store_part(p + i, n - i, v);
}

static float64x2_t widen_lo(float32x4_t v)
{
    return vcvt_f64_f32(vget_low_f32(v));
}

static float64x2_t widen_hi(float32x4_t v)
{
    return vcvt_high_f64_f32(v);
}

static double hsum2(float64x2_t lo, float64x2_t hi)
{
    return vaddvq_f64(vaddq_f64(lo, hi));
}

static float row_max(const float *x, size_t n, float start)
{
    float32x4_t vmax = vdupq_n_f32(start);
    for (size_t i = 0; i < n; i += W)
        vmax = vmaxq_f32(vmax, load_at(x, i, n, -INFINITY));
    return vmaxvq_f32(vmax);
}

/* Σ exp(x − max) in double; with y, also stores each exp (y may alias x). */
static double exp_sum(float *y, const float *x, size_t n, float max)
{
    const float32x4_t vmax = vdupq_n_f32(max);
    float64x2_t lo = vdupq_n_f64(0), hi = vdupq_n_f64(0);
    size_t i = 0;
    for (; i + W <= n; i += W) {
        float32x4_t e = Sleef_expf4_u10advsimd(vsubq_f32(vld1q_f32(x + i), vmax));
        if (y)
            vst1q_f32(y + i, e);
        lo = vaddq_f64(lo, widen_lo(e));
        hi = vaddq_f64(hi, widen_hi(e));
    }
    if (i < n) {
        /* padding −inf gives exp(−inf) = 0 in the unused lanes */
        float32x4_t e = Sleef_expf4_u10advsimd(vsubq_f32(load_part(x + i, n - i, -INFINITY), vmax));
        if (y)
            store_part(y + i, n - i, e);
        lo = vaddq_f64(lo, widen_lo(e));
        hi = vaddq_f64(hi, widen_hi(e));
    }
    return hsum2(lo, hi);
}

void whet_rmsnorm_forward_neon(float *y, float *rstd, const float *x, const float *weight, size_t rows, size_t n,
                               float eps)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        /* a float square is exact in double, so only the additions round;
         * two vectors a step keep four add chains in flight */
        float64x2_t lo = vdupq_n_f64(0), hi = vdupq_n_f64(0), lo2 = vdupq_n_f64(0), hi2 = vdupq_n_f64(0);
        size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            float32x4_t v = vld1q_f32(xr + i), u = vld1q_f32(xr + i + W);
            float64x2_t a = widen_lo(v), b = widen_hi(v), c = widen_lo(u), d = widen_hi(u);
            lo = vfmaq_f64(lo, a, a);
            hi = vfmaq_f64(hi, b, b);
            lo2 = vfmaq_f64(lo2, c, c);
            hi2 = vfmaq_f64(hi2, d, d);
        }
        for (; i < n; i += W) {
            float32x4_t v = load_at(xr, i, n, 0);
            float64x2_t a = widen_lo(v), b = widen_hi(v);
            lo = vfmaq_f64(lo, a, a);
            hi = vfmaq_f64(hi, b, b);
        }
        float s = (float)(1.0 / sqrt(hsum2(vaddq_f64(lo, lo2), vaddq_f64(hi, hi2)) / (double)n + (double)eps));
        if (rstd)
            rstd[r] = s;
        const float32x4_t vs = vdupq_n_f32(s);
        for (i = 0; i < n; i += W)
            store_at(yr, i, n, vmulq_f32(vmulq_f32(load_at(xr, i, n, 0), vs), load_at(weight, i, n, 0)));
    }
}

/* dx_i += s·w_i·dy_i − x_i·s³/n·Σ_j dy_j·w_j·x_j */
void whet_rmsnorm_backward_input_neon(float *dx, const float *dy, const float *x, const float *weight,
                                      const float *rstd, size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n, *dyr = dy + r * n;
        float *dxr = dx + r * n;
        float64x2_t lo = vdupq_n_f64(0), hi = vdupq_n_f64(0), lo2 = vdupq_n_f64(0), hi2 = vdupq_n_f64(0);
        size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            float32x4_t d = vld1q_f32(dyr + i), w = vld1q_f32(weight + i), v = vld1q_f32(xr + i);
            float32x4_t d2 = vld1q_f32(dyr + i + W), w2 = vld1q_f32(weight + i + W), v2 = vld1q_f32(xr + i + W);
            /* dy·w is exact in double */
            lo = vfmaq_f64(lo, vmulq_f64(widen_lo(d), widen_lo(w)), widen_lo(v));
            hi = vfmaq_f64(hi, vmulq_f64(widen_hi(d), widen_hi(w)), widen_hi(v));
            lo2 = vfmaq_f64(lo2, vmulq_f64(widen_lo(d2), widen_lo(w2)), widen_lo(v2));
            hi2 = vfmaq_f64(hi2, vmulq_f64(widen_hi(d2), widen_hi(w2)), widen_hi(v2));
        }
        for (; i < n; i += W) {
            float32x4_t d = load_at(dyr, i, n, 0), w = load_at(weight, i, n, 0), v = load_at(xr, i, n, 0);
            /* padded lanes are 0 and add nothing */
            lo = vfmaq_f64(lo, vmulq_f64(widen_lo(d), widen_lo(w)), widen_lo(v));
            hi = vfmaq_f64(hi, vmulq_f64(widen_hi(d), widen_hi(w)), widen_hi(v));
        }
        float s = rstd[r];
        float coef = (float)(hsum2(vaddq_f64(lo, lo2), vaddq_f64(hi, hi2)) * s * s * s / (double)n);
        const float32x4_t vs = vdupq_n_f32(s), vc = vdupq_n_f32(coef);
        for (i = 0; i < n; i += W) {
            float32x4_t g = vmulq_f32(vmulq_f32(vs, load_at(weight, i, n, 0)), load_at(dyr, i, n, 0));
            g = vsubq_f32(g, vmulq_f32(load_at(xr, i, n, 0), vc));
            store_at(dxr, i, n, vaddq_f32(load_at(dxr, i, n, 0), g));
        }
    }
}

/* Lanes are columns; each sums its column down the rows in row order with the
 * reference's rounding steps, so any column split gives the reference's bits. */
void whet_rmsnorm_backward_weight_neon(float *dweight, const float *dy, const float *x, const float *rstd,
                                       size_t rows, size_t n, size_t c0, size_t c1)
{
    size_t c = c0;
    for (; c + 4 * W <= c1; c += 4 * W) {
        float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0), a2 = vdupq_n_f32(0), a3 = vdupq_n_f32(0);
        for (size_t r = 0; r < rows; r++) {
            const float *d = dy + r * n + c, *v = x + r * n + c;
            const float32x4_t s = vdupq_n_f32(rstd[r]);
            a0 = vaddq_f32(a0, vmulq_f32(vld1q_f32(d), vmulq_f32(vld1q_f32(v), s)));
            a1 = vaddq_f32(a1, vmulq_f32(vld1q_f32(d + W), vmulq_f32(vld1q_f32(v + W), s)));
            a2 = vaddq_f32(a2, vmulq_f32(vld1q_f32(d + 2 * W), vmulq_f32(vld1q_f32(v + 2 * W), s)));
            a3 = vaddq_f32(a3, vmulq_f32(vld1q_f32(d + 3 * W), vmulq_f32(vld1q_f32(v + 3 * W), s)));
        }
        vst1q_f32(dweight + c, vaddq_f32(vld1q_f32(dweight + c), a0));
        vst1q_f32(dweight + c + W, vaddq_f32(vld1q_f32(dweight + c + W), a1));
        vst1q_f32(dweight + c + 2 * W, vaddq_f32(vld1q_f32(dweight + c + 2 * W), a2));
        vst1q_f32(dweight + c + 3 * W, vaddq_f32(vld1q_f32(dweight + c + 3 * W), a3));
    }
    for (; c < c1; c += W) {
        /* the partial vector ends at column c1, not at the row's end */
        float32x4_t a = vdupq_n_f32(0);
        for (size_t r = 0; r < rows; r++) {
            const float32x4_t s = vdupq_n_f32(rstd[r]);
            float32x4_t v = vmulq_f32(load_at(x + r * n, c, c1, 0), s);
            a = vaddq_f32(a, vmulq_f32(load_at(dy + r * n, c, c1, 0), v));
        }
        store_at(dweight, c, c1, vaddq_f32(load_at(dweight, c, c1, 0), a));
    }
}

void whet_layernorm_forward_neon(float *y, float *mean, float *rstd, const float *x, const float *weight,
                                 const float *bias, size_t rows, size_t n, float eps)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float64x2_t lo = vdupq_n_f64(0), hi = vdupq_n_f64(0), lo2 = vdupq_n_f64(0), hi2 = vdupq_n_f64(0);
        size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            float32x4_t v = vld1q_f32(xr + i), u = vld1q_f32(xr + i + W);
            lo = vaddq_f64(lo, widen_lo(v));
            hi = vaddq_f64(hi, widen_hi(v));
            lo2 = vaddq_f64(lo2, widen_lo(u));
            hi2 = vaddq_f64(hi2, widen_hi(u));
        }
        for (; i < n; i += W) {
            float32x4_t v = load_at(xr, i, n, 0);
            lo = vaddq_f64(lo, widen_lo(v));
            hi = vaddq_f64(hi, widen_hi(v));
        }
        double mu = hsum2(vaddq_f64(lo, lo2), vaddq_f64(hi, hi2)) / (double)n;
        /* two passes: the variance about the double mean, free of the
         * cancellation that E[x²] − E[x]² suffers for rows far from zero */
        const float64x2_t vmu = vdupq_n_f64(mu);
        lo = vdupq_n_f64(0), hi = vdupq_n_f64(0), lo2 = vdupq_n_f64(0), hi2 = vdupq_n_f64(0);
        for (i = 0; i + 2 * W <= n; i += 2 * W) {
            float32x4_t v = vld1q_f32(xr + i), u = vld1q_f32(xr + i + W);
            float64x2_t a = vsubq_f64(widen_lo(v), vmu), b = vsubq_f64(widen_hi(v), vmu);
            float64x2_t c = vsubq_f64(widen_lo(u), vmu), d = vsubq_f64(widen_hi(u), vmu);
            lo = vfmaq_f64(lo, a, a);
            hi = vfmaq_f64(hi, b, b);
            lo2 = vfmaq_f64(lo2, c, c);
            hi2 = vfmaq_f64(hi2, d, d);
        }
        if (i + W <= n) {
            float32x4_t v = vld1q_f32(xr + i);
            float64x2_t a = vsubq_f64(widen_lo(v), vmu), b = vsubq_f64(widen_hi(v), vmu);
            lo = vfmaq_f64(lo, a, a);
            hi = vfmaq_f64(hi, b, b);
            i += W;
        }
        if (i < n) {
            /* padded lanes would contribute mu² each */
            static const uint64_t keep[2 * W] = {~0ull, ~0ull, ~0ull, ~0ull, 0, 0, 0, 0};
            const uint64_t *k = keep + W - (n - i);
            float32x4_t v = load_part(xr + i, n - i, 0);
            float64x2_t a = vsubq_f64(widen_lo(v), vmu), b = vsubq_f64(widen_hi(v), vmu);
            a = vreinterpretq_f64_u64(vandq_u64(vreinterpretq_u64_f64(a), vld1q_u64(k)));
            b = vreinterpretq_f64_u64(vandq_u64(vreinterpretq_u64_f64(b), vld1q_u64(k + 2)));
            lo = vfmaq_f64(lo, a, a);
            hi = vfmaq_f64(hi, b, b);
        }
        float mf = (float)mu;
        float s = (float)(1.0 / sqrt(hsum2(vaddq_f64(lo, lo2), vaddq_f64(hi, hi2)) / (double)n + (double)eps));
        if (mean)
            mean[r] = mf;
        if (rstd)
            rstd[r] = s;
        const float32x4_t vm = vdupq_n_f32(mf), vs = vdupq_n_f32(s);
        for (i = 0; i < n; i += W) {
            float32x4_t v = vmulq_f32(vmulq_f32(vsubq_f32(load_at(xr, i, n, 0), vm), vs), load_at(weight, i, n, 0));
            store_at(yr, i, n, vaddq_f32(v, load_at(bias, i, n, 0)));
        }
    }
}

/* x̂ = (x−μ)·s, g = dy·w:  dx_i += s·(g_i − mean(g) − x̂_i·mean(g·x̂)) */
void whet_layernorm_backward_input_neon(float *dx, const float *dy, const float *x, const float *weight,
                                        const float *mean, const float *rstd, size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n, *dyr = dy + r * n;
        float *dxr = dx + r * n;
        const float32x4_t vm = vdupq_n_f32(mean[r]), vs = vdupq_n_f32(rstd[r]);
        float64x2_t g_lo = vdupq_n_f64(0), g_hi = vdupq_n_f64(0), gx_lo = vdupq_n_f64(0), gx_hi = vdupq_n_f64(0);
        for (size_t i = 0; i < n; i += W) {
            float32x4_t d = load_at(dyr, i, n, 0), w = load_at(weight, i, n, 0), v = load_at(xr, i, n, 0);
            /* x̂ in float as the reference rounds it; padded lanes have g = 0 */
            float32x4_t xhat = vmulq_f32(vsubq_f32(v, vm), vs);
            float64x2_t ga = vmulq_f64(widen_lo(d), widen_lo(w)), gb = vmulq_f64(widen_hi(d), widen_hi(w));
            g_lo = vaddq_f64(g_lo, ga);
            g_hi = vaddq_f64(g_hi, gb);
            gx_lo = vfmaq_f64(gx_lo, ga, widen_lo(xhat));
            gx_hi = vfmaq_f64(gx_hi, gb, widen_hi(xhat));
        }
        const float32x4_t mg = vdupq_n_f32((float)(hsum2(g_lo, g_hi) / (double)n));
        const float32x4_t mgx = vdupq_n_f32((float)(hsum2(gx_lo, gx_hi) / (double)n));
        for (size_t i = 0; i < n; i += W) {
            float32x4_t xhat = vmulq_f32(vsubq_f32(load_at(xr, i, n, 0), vm), vs);
            float32x4_t t = vsubq_f32(vmulq_f32(load_at(dyr, i, n, 0), load_at(weight, i, n, 0)), mg);
            t = vmulq_f32(vs, vsubq_f32(t, vmulq_f32(xhat, mgx)));
            store_at(dxr, i, n, vaddq_f32(load_at(dxr, i, n, 0), t));
        }
    }
}

/* Column lanes, rows in order, the reference's rounding steps: bit-identical. */
void whet_layernorm_backward_params_neon(float *dweight, float *dbias, const float *dy, const float *x,
                                         const float *mean, const float *rstd, size_t rows, size_t n, size_t c0,
                                         size_t c1)
{
    size_t c = c0;
    for (; c + 2 * W <= c1; c += 2 * W) {
        float32x4_t w0 = vdupq_n_f32(0), w1 = vdupq_n_f32(0), b0 = vdupq_n_f32(0), b1 = vdupq_n_f32(0);
        for (size_t r = 0; r < rows; r++) {
            const float *d = dy + r * n + c, *v = x + r * n + c;
            const float32x4_t m = vdupq_n_f32(mean[r]), s = vdupq_n_f32(rstd[r]);
            float32x4_t g0 = vld1q_f32(d), g1 = vld1q_f32(d + W);
            w0 = vaddq_f32(w0, vmulq_f32(g0, vmulq_f32(vsubq_f32(vld1q_f32(v), m), s)));
            w1 = vaddq_f32(w1, vmulq_f32(g1, vmulq_f32(vsubq_f32(vld1q_f32(v + W), m), s)));
            b0 = vaddq_f32(b0, g0);
            b1 = vaddq_f32(b1, g1);
        }
        vst1q_f32(dweight + c, vaddq_f32(vld1q_f32(dweight + c), w0));
        vst1q_f32(dweight + c + W, vaddq_f32(vld1q_f32(dweight + c + W), w1));
        vst1q_f32(dbias + c, vaddq_f32(vld1q_f32(dbias + c), b0));
        vst1q_f32(dbias + c + W, vaddq_f32(vld1q_f32(dbias + c + W), b1));
    }
    for (; c < c1; c += W) {
        float32x4_t sw = vdupq_n_f32(0), sb = vdupq_n_f32(0);
        for (size_t r = 0; r < rows; r++) {
            const float32x4_t m = vdupq_n_f32(mean[r]), s = vdupq_n_f32(rstd[r]);
            float32x4_t g = load_at(dy + r * n, c, c1, 0);
            float32x4_t xhat = vmulq_f32(vsubq_f32(load_at(x + r * n, c, c1, 0), m), s);
            sw = vaddq_f32(sw, vmulq_f32(g, xhat));
            sb = vaddq_f32(sb, g);
        }
        store_at(dweight, c, c1, vaddq_f32(load_at(dweight, c, c1, 0), sw));
        store_at(dbias, c, c1, vaddq_f32(load_at(dbias, c, c1, 0), sb));
    }
}

void whet_softmax_forward_neon(float *y, const float *x, size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float max = row_max(xr, n, -INFINITY);
        const float32x4_t inv = vdupq_n_f32((float)(1.0 / exp_sum(yr, xr, n, max)));
        for (size_t i = 0; i < n; i += W)
            store_at(yr, i, n, vmulq_f32(load_at(yr, i, n, 0), inv));
    }
}

/* dx = y·(dy − Σ dy·y) */
void whet_softmax_backward_neon(float *dx, const float *dy, const float *y, size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        const float *dyr = dy + r * n, *yr = y + r * n;
        float *dxr = dx + r * n;
        float64x2_t lo = vdupq_n_f64(0), hi = vdupq_n_f64(0), lo2 = vdupq_n_f64(0), hi2 = vdupq_n_f64(0);
        size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            float32x4_t d = vld1q_f32(dyr + i), v = vld1q_f32(yr + i);
            float32x4_t d2 = vld1q_f32(dyr + i + W), v2 = vld1q_f32(yr + i + W);
            lo = vfmaq_f64(lo, widen_lo(d), widen_lo(v));
            hi = vfmaq_f64(hi, widen_hi(d), widen_hi(v));
            lo2 = vfmaq_f64(lo2, widen_lo(d2), widen_lo(v2));
            hi2 = vfmaq_f64(hi2, widen_hi(d2), widen_hi(v2));
        }
        for (; i < n; i += W) {
            float32x4_t d = load_at(dyr, i, n, 0), v = load_at(yr, i, n, 0);
            lo = vfmaq_f64(lo, widen_lo(d), widen_lo(v));
            hi = vfmaq_f64(hi, widen_hi(d), widen_hi(v));
        }
        const float32x4_t dot = vdupq_n_f32((float)hsum2(vaddq_f64(lo, lo2), vaddq_f64(hi, hi2)));
        for (i = 0; i < n; i += W)
            store_at(dxr, i, n, vmulq_f32(load_at(yr, i, n, 0), vsubq_f32(load_at(dyr, i, n, 0), dot)));
    }
}

void whet_cross_entropy_lse_update_neon(float *running_max, float *running_sum, const float *logits, size_t ld,
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
void whet_cross_entropy_backward_neon(float *dlogits, const float *logits, size_t ld, size_t rows, size_t n,
                                      size_t vocab_offset, const int32_t *targets, const float *lse,
                                      const float *row_scale)
{
    /* one 1.0 with W − 1 zeros either side: the 4 floats from W − 1 − lane on
     * are the one-hot vector for that lane, without a per-lane branch */
    static const float hot_bits[2 * W - 1] = {0, 0, 0, 1, 0, 0, 0};
    for (size_t r = 0; r < rows; r++) {
        const float *lr = logits + r * ld;
        float *dr = dlogits + r * ld;
        const float32x4_t vl = vdupq_n_f32(lse[r]), vscale = vdupq_n_f32(row_scale[r]);
        /* the target's column in this chunk, or SIZE_MAX when it lies elsewhere */
        size_t t = SIZE_MAX;
        if (targets[r] >= 0 && (size_t)targets[r] >= vocab_offset && (size_t)targets[r] - vocab_offset < n)
            t = (size_t)targets[r] - vocab_offset;
        for (size_t j = 0; j < n; j += W) {
            float32x4_t p = Sleef_expf4_u10advsimd(vsubq_f32(load_at(lr, j, n, 0), vl));
            if (t - j < W)
                p = vsubq_f32(p, vld1q_f32(hot_bits + (W - 1) - (t - j)));
            store_at(dr, j, n, vmulq_f32(vscale, p));
        }
    }
}
