/* The "vec" kernels of every ISA table (scalar included): conversions,
 * axpy/scale/add, sum_squares and the FMA peak loop.
 *
 * Bit-exact against the scalar reference, on every table:
 *   f32_to_bf16, bf16_to_f32, f32_to_f16, f16_to_f32 (NaNs included), axpy,
 *   scale, add.
 * The reference itself is checked independently: widening conversions over all
 * 65536 inputs against a decoder written from the format definitions, narrowing
 * ones against round-to-nearest-even computed in double with rint(); axpy/add
 * against double with the two-rounding bound 2ε(|a·x| + |y|).
 * ULP/error-bounded: sum_squares, a double sum whose order differs per ISA:
 *   |Σ − ref| ≤ (n + 1)·2^-53·Σx² (recursive summation of non-negative terms).
 * Every element-wise kernel also gives identical bits when run through
 * whet_compute_for on 1, 2 and 3 threads, whose odd split points move
 * elements between vector bodies and tails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "simd/simd.h"
#include "support/kernel_check.h"
#include "util/compute.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EPS 0x1p-24 /* unit roundoff of float */

/* Output slack past n: a kernel's tail must not write there. */
enum { CANARY = 40 };
#define CANARY_F32 0x7fa5a5a5u /* a signalling NaN pattern no kernel produces */
#define CANARY_U16 0xa5a5u

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

/* 16-bit buffers misaligned for every vector width (2 bytes past kc_floats'
 * already misaligned start); `base` is what kc_free takes. */
typedef struct {
    float *base;
    uint16_t *p;
} u16_buffer;

static u16_buffer u16_alloc(size_t n)
{
    u16_buffer b;
    b.base = kc_floats(n / 2 + 2);
    b.p = (uint16_t *)b.base + 1;
    return b;
}

static void fill_canary_f32(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = bits_float(CANARY_F32);
}

static void check_canary_f32(const float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(float_bits(p[i]), CANARY_F32);
}

static void fill_canary_u16(uint16_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = CANARY_U16;
}

static void check_canary_u16(const uint16_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(p[i], CANARY_U16);
}

/* ---- independent definitions of the formats ---- */

/* binary16 value from its fields (NaN handled by the caller) */
static double f16_value(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double mag = e == 0 ? ldexp(m, -24) : e == 31 ? INFINITY : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -mag : mag;
}

static int f16_is_nan(uint16_t h)
{
    return (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
}

static int bf16_is_nan(uint16_t b)
{
    return (b & 0x7f80) == 0x7f80 && (b & 0x7f);
}

/* x rounded to nearest even in a binary format with `p` significant bits,
 * minimum normal exponent `emin` and overflow threshold 2^(emax+1); exact in
 * double because every such format is a subset of double. */
static double round_to_format(float x, int p, int emin, int emax)
{
    if (x == 0 || isinf(x))
        return x;
    int e;
    frexp(x, &e);
    e -= 1; /* x = 1.f·2^e */
    if (e < emin)
        e = emin;
    double quantum = ldexp(1.0, e - (p - 1));
    double r = rint((double)x / quantum) * quantum;
    if (fabs(r) >= ldexp(1.0, emax + 1))
        return copysign(INFINITY, x);
    return copysign(r, x); /* rint keeps the sign of zero; copysign states it */
}

/* Narrowing results of one float, checked against the definition: NaN stays a
 * quiet NaN with its sign; anything else is the nearest-even value, sign
 * included for zeros. */
static void check_bf16_of(float x, uint16_t b)
{
    if (isnan(x)) {
        assert_true(bf16_is_nan(b));
        assert_true(b & 0x40);
        assert_int_equal(b >> 15, float_bits(x) >> 31);
        return;
    }
    double want = round_to_format(x, 8, -126, 127);
    double got = bits_float((uint32_t)b << 16);
    if (got != want || !signbit(got) != !signbit(want))
        fail_msg("f32 %08x (%a) -> bf16 %04x (%a), want %a", float_bits(x), (double)x, b, got, want);
}

static void check_f16_of(float x, uint16_t h)
{
    if (isnan(x)) {
        assert_true(f16_is_nan(h));
        assert_true(h & 0x200);
        assert_int_equal(h >> 15, float_bits(x) >> 31);
        return;
    }
    double want = round_to_format(x, 11, -14, 15);
    double got = f16_value(h);
    if (got != want || !signbit(got) != !signbit(want))
        fail_msg("f32 %08x (%a) -> f16 %04x (%a), want %a", float_bits(x), (double)x, h, got, want);
}

/* ---- widening conversions: all 65536 inputs ---- */

static void bf16_to_f32_all_inputs(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    u16_buffer src = u16_alloc(65536);
    float *dst = kc_floats(65536 + CANARY);
    for (uint32_t i = 0; i < 65536; i++)
        src.p[i] = (uint16_t)i;
    for (int t = 0; t < nt; t++) {
        fill_canary_f32(dst, 65536 + CANARY);
        tables[t]->bf16_to_f32(dst, src.p, 65536);
        /* bf16 is by definition the top half of a float: exact, NaN bits kept */
        for (uint32_t i = 0; i < 65536; i++)
            if (float_bits(dst[i]) != i << 16)
                fail_msg("%s: bf16 %04x -> %08x", tables[t]->name, i, float_bits(dst[i]));
        check_canary_f32(dst + 65536, CANARY);
        /* odd lengths from odd starts: tails, and nothing written past n */
        for (size_t s = 0; s < kc_nsizes; s++) {
            size_t n = kc_sizes[s], start = (n * 2654435761u) % (65536 - n);
            fill_canary_f32(dst, n + CANARY);
            tables[t]->bf16_to_f32(dst, src.p + start, n);
            for (size_t i = 0; i < n; i++)
                assert_int_equal(float_bits(dst[i]), (uint32_t)(start + i) << 16);
            check_canary_f32(dst + n, CANARY);
        }
    }
    kc_free(src.base);
    kc_free(dst);
}

static void f16_to_f32_all_inputs(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    u16_buffer src = u16_alloc(65536);
    float *dst = kc_floats(65536 + CANARY), *ref = kc_floats(65536);
    for (uint32_t i = 0; i < 65536; i++)
        src.p[i] = (uint16_t)i;
    whet_kernels_for(WHET_ISA_SCALAR)->f16_to_f32(ref, src.p, 65536);
    for (int t = 0; t < nt; t++) {
        fill_canary_f32(dst, 65536 + CANARY);
        tables[t]->f16_to_f32(dst, src.p, 65536);
        for (uint32_t i = 0; i < 65536; i++) {
            uint16_t h = (uint16_t)i;
            uint32_t u = float_bits(dst[i]);
            if (f16_is_nan(h)) {
                /* a quiet NaN with the sign and the payload on top; the
                 * quiet bit is the payload's top bit, so it is forced on */
                if ((u & 0x7fc00000u) != 0x7fc00000u || (u >> 31) != (h >> 15u) || (u & 0x1fffu) ||
                    ((u >> 13) & 0x3ff) != ((h & 0x3ffu) | 0x200u))
                    fail_msg("%s: f16 NaN %04x -> %08x", tables[t]->name, h, u);
            } else if ((double)dst[i] != f16_value(h) || !signbit(dst[i]) != !signbit(f16_value(h))) {
                fail_msg("%s: f16 %04x -> %a, want %a", tables[t]->name, h, (double)dst[i], f16_value(h));
            }
            if (u != float_bits(ref[i]))
                fail_msg("%s: f16 %04x -> %08x, scalar %08x", tables[t]->name, h, u, float_bits(ref[i]));
        }
        check_canary_f32(dst + 65536, CANARY);
        for (size_t s = 0; s < kc_nsizes; s++) {
            size_t n = kc_sizes[s], start = (n * 2654435761u) % (65536 - n);
            fill_canary_f32(dst, n + CANARY);
            tables[t]->f16_to_f32(dst, src.p + start, n);
            assert_memory_equal(dst, ref + start, n * sizeof *dst);
            check_canary_f32(dst + n, CANARY);
        }
    }
    kc_free(src.base);
    kc_free(dst);
    kc_free(ref);
}

/* ---- narrowing conversions: special values and many bit patterns ---- */

static const uint32_t special_bits[] = {
    0x00000000, 0x80000000, 0x7f800000, 0xff800000,             /* ±0, ±inf */
    0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fbfffff, /* NaNs: quiet, signalling, */
    0x7f802000, 0x7f8001ff, 0x7fffffff, 0xffffffff, 0x7f810000, /* payload only in low bits */
    0x00000001, 0x807fffff, 0x00400000, 0x00800000,             /* f32 subnormals, min normal */
    0x7f7fffff, 0xff7fffff, 0x7f7f8000, 0x7f7f7fff, 0x7f7f0000, /* FLT_MAX and bf16 overflow edge */
    0x3f808000, 0x3f818000, 0x3f807fff, 0x3f808001,             /* bf16 ties to even: 1 + 2^-8 ... */
    0x3f801000, 0x3f803000, 0x3f800fff, 0x3f801001,             /* f16 ties: 1 + 2^-11, 1 + 3·2^-11 */
    0x477fe000, 0x477fefff, 0x477ff000, 0x477ff001, 0x47800000, /* 65504, < 65520, 65520, > 65520, 65536 */
    0xc77fe000, 0xc77ff000, 0x4f000000,                         /* −65504, −65520, 2^31 */
    0x33800000, 0x33000000, 0x33000001, 0x32ffffff,             /* 2^-24 (min f16 subnormal), 2^-25 tie */
    0x33c00000, 0x34200000, 0x34000000, 0x34400000,             /* 1.5·2^-24 tie → 2, 2.5·2^-24 tie → 2 */
    0x387fc000, 0x387fe000, 0x387ff000, 0x387fffff, 0x38800000, /* around the f16 subnormal/normal edge */
    0xb3000000, 0xb3000001, 0xb87fe000, 0x38000000, 0x37800000, /* negatives, 2^-15, 2^-16 */
    0x3f800000, 0xbf800000, 0x40490fdb, 0x3eaaaaab,             /* 1, −1, π, 1/3 */
};

/* specials, then 2^17 random bit patterns (most far outside the f16 range),
 * then 2^17 with exponents near the f16 and bf16 rounding regions */
static size_t narrowing_inputs(float *x)
{
    size_t n = 0;
    for (size_t i = 0; i < sizeof special_bits / sizeof special_bits[0]; i++)
        x[n++] = bits_float(special_bits[i]);
    kc_rng r = kc_seed(7);
    for (int i = 0; i < 1 << 17; i++)
        x[n++] = bits_float((uint32_t)kc_next(&r));
    for (int i = 0; i < 1 << 17; i++) {
        uint64_t v = kc_next(&r);
        uint32_t exponent = 95 + (uint32_t)(v >> 40) % 50; /* 2^-32 … 2^17 */
        /* low mantissa bits often exactly at a tie, to exercise ties-to-even */
        uint32_t mantissa = (uint32_t)v & 0x7fffff;
        if ((v >> 32) % 3 == 0)
            mantissa = (mantissa & ~0x1fffu) | 0x1000u;
        x[n++] = bits_float((uint32_t)(v >> 63) << 31 | exponent << 23 | mantissa);
    }
    return n;
}

#define NARROW_MAX (sizeof special_bits / sizeof special_bits[0] + (1u << 18))

static void check_narrowing(int to_f16)
{
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    float *x = kc_floats(NARROW_MAX);
    size_t n = narrowing_inputs(x);
    u16_buffer ref = u16_alloc(n), out = u16_alloc(n + CANARY);
    const whet_kernels *scalar = whet_kernels_for(WHET_ISA_SCALAR);
    (to_f16 ? scalar->f32_to_f16 : scalar->f32_to_bf16)(ref.p, x, n);
    for (size_t i = 0; i < n; i++)
        (to_f16 ? check_f16_of : check_bf16_of)(x[i], ref.p[i]);
    for (int t = 0; t < nt; t++) {
        void (*conv)(uint16_t *, const float *, size_t) = to_f16 ? tables[t]->f32_to_f16 : tables[t]->f32_to_bf16;
        fill_canary_u16(out.p, n + CANARY);
        conv(out.p, x, n);
        for (size_t i = 0; i < n; i++)
            if (out.p[i] != ref.p[i])
                fail_msg("%s: f32 %08x -> %04x, scalar %04x", tables[t]->name, float_bits(x[i]), out.p[i], ref.p[i]);
        check_canary_u16(out.p + n, CANARY);
        for (size_t s = 0; s < kc_nsizes; s++) {
            size_t len = kc_sizes[s], start = (len * 40503u) % (n - len);
            fill_canary_u16(out.p, len + CANARY);
            conv(out.p, x + start, len);
            assert_memory_equal(out.p, ref.p + start, len * sizeof *out.p);
            check_canary_u16(out.p + len, CANARY);
        }
    }
    kc_free(x);
    kc_free(ref.base);
    kc_free(out.base);
}

static void f32_to_bf16_matches_rounding(void **state)
{
    (void)state;
    check_narrowing(0);
}

static void f32_to_f16_matches_rounding(void **state)
{
    (void)state;
    check_narrowing(1);
}

/* ---- axpy, scale, add ---- */

static void axpy_scale_add_match_scalar(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    const whet_kernels *scalar = tables[0];
    kc_rng r = kc_seed(11);
    for (size_t s = 0; s < kc_nsizes; s++) {
        size_t n = kc_sizes[s];
        float *x = kc_floats(n), *y0 = kc_floats(n), *ref = kc_floats(n), *out = kc_floats(n + CANARY);
        kc_fill(&r, x, n, -4, 4);
        kc_fill(&r, y0, n, -4, 4);
        x[n / 2] = 0.0f, y0[n - 1] = -0.0f;
        const float a = -0.3712f;

        memcpy(ref, y0, n * sizeof *ref);
        scalar->axpy(ref, a, x, n);
        for (size_t i = 0; i < n; i++) { /* two roundings: fl(fl(a·x) + y) */
            double exact = (double)a * x[i] + y0[i];
            assert_true(fabs(ref[i] - exact) <= 2 * EPS * (fabs((double)a * x[i]) + fabs(y0[i])));
        }
        for (int t = 0; t < nt; t++) {
            fill_canary_f32(out, n + CANARY);
            memcpy(out, y0, n * sizeof *out);
            tables[t]->axpy(out, a, x, n);
            assert_memory_equal(out, ref, n * sizeof *out);
            check_canary_f32(out + n, CANARY);
        }

        for (size_t i = 0; i < n; i++)
            ref[i] = x[i] * a;
        for (int t = 0; t < nt; t++) {
            fill_canary_f32(out, n + CANARY);
            memcpy(out, x, n * sizeof *out);
            tables[t]->scale(out, a, n);
            assert_memory_equal(out, ref, n * sizeof *out);
            check_canary_f32(out + n, CANARY);
        }

        for (size_t i = 0; i < n; i++)
            ref[i] = x[i] + y0[i];
        for (int t = 0; t < nt; t++) {
            fill_canary_f32(out, n + CANARY);
            tables[t]->add(out, x, y0, n);
            assert_memory_equal(out, ref, n * sizeof *out);
            check_canary_f32(out + n, CANARY);
            /* y aliasing a, then b */
            memcpy(out, x, n * sizeof *out);
            tables[t]->add(out, out, y0, n);
            assert_memory_equal(out, ref, n * sizeof *out);
            memcpy(out, y0, n * sizeof *out);
            tables[t]->add(out, x, out, n);
            assert_memory_equal(out, ref, n * sizeof *out);
        }
        kc_free(x), kc_free(y0), kc_free(ref), kc_free(out);
    }
}

/* ---- sum_squares ---- */

static void sum_squares_accumulates_in_double(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    kc_rng r = kc_seed(13);
    for (int t = 0; t < nt; t++)
        assert_true(tables[t]->sum_squares(NULL, 0) == 0.0);
    for (size_t s = 0; s < kc_nsizes; s++) {
        size_t n = kc_sizes[s];
        float *x = kc_floats(n);
        for (int range = 0; range < 3; range++) {
            kc_fill(&r, x, n, -3, 3);
            if (range == 1) /* x² beyond FLT_MAX: a float accumulator overflows */
                for (size_t i = 0; i < n; i += 2)
                    x[i] *= 1e20f;
            if (range == 2) /* x² below FLT_MIN next to ordinary values */
                for (size_t i = 0; i < n; i += 3)
                    x[i] *= 1e-25f;
            long double exact = 0;
            for (size_t i = 0; i < n; i++)
                exact += (long double)x[i] * x[i];
            for (int t = 0; t < nt; t++) {
                double got = tables[t]->sum_squares(x, n);
                double bound = (double)(n + 1) * 0x1p-53 * (double)exact;
                if (!(fabs(got - (double)exact) <= bound))
                    fail_msg("%s n=%zu range %d: %.17g vs %.17Lg", tables[t]->name, n, range, got, exact);
            }
        }
        kc_free(x);
    }
}

/* ---- FMA peak loop ---- */

static void fma_peak_loop_counts_enough_chains(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    for (int t = 0; t < nt; t++) {
        /* lanes per register of the level; the loop must keep at least 8
         * vectors of independent chains to cover FMA latency × pipes */
        int lanes = tables[t]->isa == WHET_ISA_AVX2 ? 8 : tables[t]->isa == WHET_ISA_AVX512 ? 16
                  : tables[t]->isa == WHET_ISA_NEON ? 4 : 1;
        double per_iteration = tables[t]->fma_peak_loop(1000) / 1000.0;
        assert_true(tables[t]->fma_peak_loop(0) == 0.0);
        assert_true(tables[t]->fma_peak_loop(3000) == 3 * tables[t]->fma_peak_loop(1000));
        assert_true(per_iteration == floor(per_iteration));
        if (per_iteration < 2.0 * lanes * 8)
            fail_msg("%s: %g FLOPs per iteration, want ≥ %d", tables[t]->name, per_iteration, 16 * lanes);
    }
}

/* ---- determinism across thread counts ---- */

enum { OP_BF16_DOWN, OP_BF16_UP, OP_F16_DOWN, OP_F16_UP, OP_AXPY, OP_SCALE, OP_ADD, NOPS };
static const char *const op_names[NOPS] = {"f32_to_bf16", "bf16_to_f32", "f32_to_f16", "f16_to_f32",
                                           "axpy",        "scale",       "add"};

typedef struct {
    const whet_kernels *k;
    int op;
    const float *x, *y;
    const uint16_t *h;
    float *out;
    uint16_t *out16;
} range_ctx;

static void run_range(void *p, size_t begin, size_t end)
{
    range_ctx *c = p;
    size_t n = end - begin;
    switch (c->op) {
    case OP_BF16_DOWN: c->k->f32_to_bf16(c->out16 + begin, c->x + begin, n); break;
    case OP_BF16_UP: c->k->bf16_to_f32(c->out + begin, c->h + begin, n); break;
    case OP_F16_DOWN: c->k->f32_to_f16(c->out16 + begin, c->x + begin, n); break;
    case OP_F16_UP: c->k->f16_to_f32(c->out + begin, c->h + begin, n); break;
    case OP_AXPY: c->k->axpy(c->out + begin, 0.625f, c->x + begin, n); break;
    case OP_SCALE: c->k->scale(c->out + begin, -1.375f, n); break;
    case OP_ADD: c->k->add(c->out + begin, c->x + begin, c->y + begin, n); break;
    }
}

static void same_bits_on_any_thread_count(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    const size_t n = kc_sizes[kc_nsizes - 1];
    kc_rng r = kc_seed(17);
    float *x = kc_floats(n), *y = kc_floats(n), *out = kc_floats(n), *first = kc_floats(n);
    u16_buffer h = u16_alloc(n), out16 = u16_alloc(n), first16 = u16_alloc(n);
    kc_fill(&r, x, n, -70000, 70000); /* f16 overflow and rounding both happen */
    kc_fill(&r, y, n, -1, 1);
    for (size_t i = 0; i < n; i++)
        h.p[i] = (uint16_t)kc_next(&r);
    for (int t = 0; t < nt; t++) {
        for (int op = 0; op < NOPS; op++) {
            for (int threads = 1; threads <= 3; threads++) {
                whet_compute *c = whet_compute_create(tables[t], threads);
                assert_non_null(c);
                memcpy(out, y, n * sizeof *out);
                memset(out16.p, 0, n * sizeof *out16.p);
                range_ctx ctx = {.k = tables[t], .op = op, .x = x, .y = y, .h = h.p, .out = out, .out16 = out16.p};
                whet_compute_for(c, n, 1, run_range, &ctx);
                whet_compute_destroy(c);
                if (threads == 1) {
                    memcpy(first, out, n * sizeof *out);
                    memcpy(first16.p, out16.p, n * sizeof *out16.p);
                } else if (memcmp(first, out, n * sizeof *out) || memcmp(first16.p, out16.p, n * sizeof *out16.p)) {
                    fail_msg("%s %s: %d threads differ from 1", tables[t]->name, op_names[op], threads);
                }
            }
        }
    }
    kc_free(x), kc_free(y), kc_free(out), kc_free(first);
    kc_free(h.base), kc_free(out16.base), kc_free(first16.base);
}

int main(void)
{
    kc_print_tables();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bf16_to_f32_all_inputs),
        cmocka_unit_test(f16_to_f32_all_inputs),
        cmocka_unit_test(f32_to_bf16_matches_rounding),
        cmocka_unit_test(f32_to_f16_matches_rounding),
        cmocka_unit_test(axpy_scale_add_match_scalar),
        cmocka_unit_test(sum_squares_accumulates_in_double),
        cmocka_unit_test(fma_peak_loop_counts_enough_chains),
        cmocka_unit_test(same_bits_on_any_thread_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
