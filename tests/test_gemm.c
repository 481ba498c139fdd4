/* GEMM kernels of every ISA table against a double-precision reference: all
 * layouts, odd shapes, padded strides, accumulate, arbitrary sub-blocks; then
 * bit-equal results for any split of C (1, 2, 3 threads, or sub-blocks at odd
 * offsets).
 *
 * gemm_bf16 is bf16(A)·bf16(B) with fp32 sums on every path, B given as
 * whet_bf16 or as fp32 (b_f32): its reference rounds both operands to bf16
 * (nearest even) and sums in double. Rounding is checked bit-exactly too: B in
 * fp32 must give the bits B pre-rounded to whet_bf16 gives, and A the bits A
 * pre-rounded to bf16 values gives (a tenth of the inputs sit exactly halfway
 * between two bf16 values, where nearest-even differs from rounding half up).
 *
 * Error bound per element (Higham's dot-product bound with some slack for the
 * blocked sums and the final C += acc):
 *   |C − Cref| ≤ 2.5·(K·ε·(|A|·|B|) + ε·|C0|)
 * with ε = 2^-24, A and B the operands the reference multiplies and C0 the
 * accumulated-into C. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "kernel_check.h"
#include "simd/isa_kernels.h"
#include "simd/simd.h"
#include "util/compute.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const size_t shape_sizes[] = {1, 3, 7, 17, 33, 127, 257};
enum { NSHAPE_SIZES = sizeof shape_sizes / sizeof shape_sizes[0] };

/* K beyond every ISA's k block, so blocked sums and the C += acc step are hit. */
static const size_t long_k[] = {700, 1100};

#if defined(__aarch64__) /* under qemu: the same code paths (k > KC, many tiles) on smaller shapes */
enum { LARGE_M = 100, LARGE_N = 76, LARGE_K = 300, SPLIT_M = 129, SPLIT_N = 67, SPLIT_K = 600,
       SPLIT2_M = 29, SPLIT2_N = 76 };
static const size_t max_odd_volume = (size_t)127 * 127 * 257;
#else
enum { LARGE_M = 1024, LARGE_N = 576, LARGE_K = 576, SPLIT_M = 257, SPLIT_N = 131, SPLIT_K = 700,
       SPLIT2_M = 61, SPLIT2_N = 300 };
static const size_t max_odd_volume = (size_t)257 * 257 * 257;
#endif

/* What a run computes: sgemm, or gemm_bf16 with B in whet_bf16 or in fp32. */
typedef enum { KIND_SGEMM, KIND_BF16_B, KIND_F32_B, NKINDS } kind;
static const char *const kind_names[NKINDS] = {"", " bf16", " bf16 b_f32"};

typedef struct {
    whet_gemm g;
    float *A, *Ar, *Bf, *C, *C0; /* Ar: A rounded to bf16 values */
    whet_bf16 *Bh;               /* Bf rounded */
    size_t a_count, b_count, c_count;
} problem;

static float bf16_value(whet_bf16 b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static whet_bf16 round_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (whet_bf16)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

/* Random values in [-1, 1], one in ten moved to exactly halfway between two
 * bf16 values (the low 16 bits 0x8000): a tie, for round-to-nearest-even. */
static void fill_with_ties(kc_rng *r, float *x, size_t n)
{
    kc_fill(r, x, n, -1, 1);
    for (size_t i = 0; i < n; i++)
        if (kc_next(r) % 10 == 0) {
            uint32_t u;
            memcpy(&u, &x[i], sizeof u);
            u = (u & 0xffff0000u) | 0x8000u;
            memcpy(&x[i], &u, sizeof u);
        }
}

/* A problem with strides padded by `pad` extra elements and random data in
 * [-1, 1], the padding included (a kernel reading it would show). */
static problem make_problem(kc_rng *r, whet_gemm_layout layout, size_t M, size_t N, size_t K, size_t pad,
                            int accumulate)
{
    problem p;
    memset(&p, 0, sizeof p);
    whet_gemm *g = &p.g;
    g->layout = layout;
    g->M = M, g->N = N, g->K = K;
    g->accumulate = accumulate;
    size_t a_rows = layout == WHET_GEMM_TN ? K : M, a_cols = layout == WHET_GEMM_TN ? M : K;
    size_t b_rows = layout == WHET_GEMM_NT ? N : K, b_cols = layout == WHET_GEMM_NT ? K : N;
    g->lda = a_cols + pad;
    g->ldb = b_cols + pad;
    g->ldc = N + pad;
    p.a_count = a_rows * g->lda;
    p.b_count = b_rows * g->ldb;
    p.c_count = M * g->ldc;
    p.A = kc_floats(p.a_count);
    p.Ar = kc_floats(p.a_count);
    p.Bf = kc_floats(p.b_count);
    p.Bh = (whet_bf16 *)kc_floats(p.b_count / 2 + 1);
    p.C = kc_floats(p.c_count);
    p.C0 = kc_floats(p.c_count);
    fill_with_ties(r, p.A, p.a_count);
    fill_with_ties(r, p.Bf, p.b_count);
    for (size_t i = 0; i < p.a_count; i++)
        p.Ar[i] = bf16_value(round_bf16(p.A[i]));
    for (size_t i = 0; i < p.b_count; i++)
        p.Bh[i] = round_bf16(p.Bf[i]);
    kc_fill(r, p.C0, p.c_count, -1, 1);
    g->A = p.A;
    g->C = p.C;
    return p;
}

static void free_problem(problem *p)
{
    kc_free(p->A);
    kc_free(p->Ar);
    kc_free(p->Bf);
    kc_free(p->Bh);
    kc_free(p->C);
    kc_free(p->C0);
}

static size_t a_index(const whet_gemm *g, size_t i, size_t k)
{
    return g->layout == WHET_GEMM_TN ? k * g->lda + i : i * g->lda + k;
}

static size_t b_index(const whet_gemm *g, size_t k, size_t j)
{
    return g->layout == WHET_GEMM_NT ? j * g->ldb + k : k * g->ldb + j;
}

/* Points the problem's B at the operand `kind` takes. */
static void select_b(problem *p, kind which)
{
    p->g.B = which == KIND_BF16_B ? (const void *)p->Bh : (const void *)p->Bf;
    p->g.b_f32 = which == KIND_F32_B;
}

/* Runs one kernel on the sub-block with a fresh copy of C0. */
static void run(const whet_kernels *k, problem *p, kind which, size_t m0, size_t m1, size_t n0, size_t n1, void *ws)
{
    memcpy(p->C, p->C0, p->c_count * sizeof(float));
    select_b(p, which);
    if (which == KIND_SGEMM)
        k->sgemm(&p->g, m0, m1, n0, n1, ws);
    else
        k->gemm_bf16(&p->g, m0, m1, n0, n1, ws);
}

/* The reference on rows [m0, m1): C0 (when accumulating) + Σ_k a·b in double,
 * a and b rounded to bf16 for gemm_bf16, and Σ_k |a·b| for the bound. */
typedef struct {
    double *c, *abs_ab;
} reference;

static reference make_reference(const problem *p, kind which, size_t m0, size_t m1)
{
    const whet_gemm *g = &p->g;
    reference ref = {calloc(p->c_count, sizeof(double)), calloc(p->c_count, sizeof(double))};
    assert_true(ref.c && ref.abs_ab);
    const float *A = which == KIND_SGEMM ? p->A : p->Ar;
    for (size_t i = m0; i < m1; i++)
        for (size_t j = 0; j < g->N; j++) {
            double sum = 0, abs_sum = 0;
            for (size_t k = 0; k < g->K; k++) {
                size_t bi = b_index(g, k, j);
                double ab = (double)A[a_index(g, i, k)] * (which == KIND_SGEMM ? p->Bf[bi] : bf16_value(p->Bh[bi]));
                sum += ab;
                abs_sum += fabs(ab);
            }
            size_t at = i * g->ldc + j;
            ref.c[at] = (g->accumulate ? p->C0[at] : 0) + sum;
            ref.abs_ab[at] = abs_sum;
        }
    return ref;
}

static void free_reference(reference *ref)
{
    free(ref->c);
    free(ref->abs_ab);
}

static void *workspace_for(const whet_kernels *k)
{
    void *ws = aligned_alloc(64, (k->gemm_workspace_bytes + 63) / 64 * 64 + 64);
    assert_non_null(ws);
    return ws;
}

/* Checks p->C (from kernel `name`) against ref on [m0,m1)×[n0,n1) within the
 * bound, and equal to C0 everywhere else (padding included). */
static void check_against(const problem *p, const reference *ref, kind which, size_t m0, size_t m1, size_t n0,
                          size_t n1, const char *name)
{
    const whet_gemm *g = &p->g;
    const double eps = ldexp(1.0, -24);
    for (size_t i = 0; i < g->M; i++)
        for (size_t j = 0; j < g->ldc; j++) {
            size_t at = i * g->ldc + j;
            int inside = i >= m0 && i < m1 && j >= n0 && j < n1;
            if (!inside) {
                if (memcmp(&p->C[at], &p->C0[at], sizeof(float)) != 0) {
                    print_error("%s%s layout %d M=%zu N=%zu K=%zu: C[%zu,%zu] outside [%zu,%zu)x[%zu,%zu) "
                                "changed\n", name, kind_names[which], g->layout, g->M, g->N, g->K, i, j,
                                m0, m1, n0, n1);
                    fail();
                }
                continue;
            }
            double c0 = g->accumulate ? fabs(p->C0[at]) : 0;
            double bound = 2.5 * ((double)g->K * eps * ref->abs_ab[at] + eps * c0);
            double diff = fabs((double)p->C[at] - ref->c[at]);
            if (!(diff <= bound)) {
                print_error("%s%s layout %d M=%zu N=%zu K=%zu acc=%d: C[%zu,%zu] = %.9g, reference %.9g, "
                            "|diff| %.3g > bound %.3g\n", name, kind_names[which], g->layout, g->M, g->N,
                            g->K, g->accumulate, i, j, p->C[at], ref->c[at], diff, bound);
                fail();
            }
        }
}

/* C must be bit-identical to `expected` (a run of another form of the same
 * product); `what` names the difference. */
static void check_same_bits(const problem *p, const float *expected, const char *name, const char *what)
{
    if (memcmp(p->C, expected, p->c_count * sizeof(float)) != 0) {
        const whet_gemm *g = &p->g;
        for (size_t at = 0; at < p->c_count; at++)
            if (memcmp(&p->C[at], &expected[at], sizeof(float)) != 0) {
                print_error("%s bf16 layout %d M=%zu N=%zu K=%zu: %s changed C[%zu,%zu]: %.9g vs %.9g\n", name,
                            g->layout, g->M, g->N, g->K, what, at / g->ldc, at % g->ldc, p->C[at], expected[at]);
                break;
            }
        fail();
    }
}

/* Every table on one problem, each on a random sub-block (and the whole of C
 * for the first), against the reference; gemm_bf16 also with B in fp32 and
 * with A pre-rounded, which must not change a bit. */
static void check_problem(kc_rng *r, const whet_kernels **tables, int ntables, void **ws, whet_gemm_layout layout,
                          size_t M, size_t N, size_t K)
{
    size_t pad = kc_next(r) % 2 ? kc_next(r) % 5 + 1 : 0;
    int accumulate = (int)(kc_next(r) % 2);
    problem p = make_problem(r, layout, M, N, K, pad, accumulate);
    reference ref_f32 = make_reference(&p, KIND_SGEMM, 0, M), ref_bf16 = make_reference(&p, KIND_BF16_B, 0, M);
    float *bf16_c = kc_floats(p.c_count);
    for (int t = 0; t < ntables; t++) {
        size_t m0 = 0, m1 = M, n0 = 0, n1 = N;
        if (t > 0 && kc_next(r) % 3) {
            m0 = kc_next(r) % M, m1 = m0 + 1 + kc_next(r) % (M - m0);
            n0 = kc_next(r) % N, n1 = n0 + 1 + kc_next(r) % (N - n0);
        }
        const char *name = tables[t]->name;
        run(tables[t], &p, KIND_SGEMM, m0, m1, n0, n1, ws[t]);
        check_against(&p, &ref_f32, KIND_SGEMM, m0, m1, n0, n1, name);
        run(tables[t], &p, KIND_BF16_B, m0, m1, n0, n1, ws[t]);
        check_against(&p, &ref_bf16, KIND_BF16_B, m0, m1, n0, n1, name);
        memcpy(bf16_c, p.C, p.c_count * sizeof(float));
        run(tables[t], &p, KIND_F32_B, m0, m1, n0, n1, ws[t]);
        check_same_bits(&p, bf16_c, name, "B in fp32 (b_f32) instead of whet_bf16");
        p.g.A = p.Ar;
        run(tables[t], &p, KIND_BF16_B, m0, m1, n0, n1, ws[t]);
        p.g.A = p.A;
        check_same_bits(&p, bf16_c, name, "A pre-rounded to bf16");
    }
    kc_free(bf16_c);
    free_reference(&ref_f32);
    free_reference(&ref_bf16);
    free_problem(&p);
}

enum { MAX_TABLES = WHET_ISA_COUNT + 1 };

typedef struct {
    const whet_kernels *tables[MAX_TABLES];
    void *ws[MAX_TABLES];
    int n;
} fixture;

/* When a table's gemm_bf16 is the native bf16 kernel, the ISA's convert path
 * (what CPUs without the bf16 extension run) is tested through a copy of the
 * table that points at it. */
static whet_kernels convert_variant;

static void add_convert_variant(fixture *f)
{
    const whet_kernels *best = whet_kernels_best();
    void (*convert)(const whet_gemm *, size_t, size_t, size_t, size_t, void *) = NULL;
#if defined(__x86_64__)
    if (best->isa == WHET_ISA_AVX512)
        convert = whet_gemm_bf16_avx512;
#elif defined(__aarch64__)
    if (best->isa == WHET_ISA_NEON)
        convert = whet_gemm_bf16_neon;
#endif
    if (!convert || best->gemm_bf16 == convert)
        return;
    convert_variant = *best;
    convert_variant.gemm_bf16 = convert;
    convert_variant.gemm_bf16_kind = "convert";
    convert_variant.name = best->isa == WHET_ISA_AVX512 ? "avx512 (convert)" : "neon (convert)";
    f->tables[f->n++] = &convert_variant;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    const whet_kernels *available[WHET_ISA_COUNT];
    f->n = kc_tables(available);
    memcpy(f->tables, available, (size_t)f->n * sizeof available[0]);
    add_convert_variant(f);
    for (int t = 0; t < f->n; t++)
        f->ws[t] = workspace_for(f->tables[t]);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    for (int t = 0; t < f->n; t++)
        free(f->ws[t]);
    free(f);
    return 0;
}

/* Every (M, N, K) from the small sizes, every layout. */
static void small_shapes_match_reference(void **state)
{
    fixture *f = *state;
    kc_rng r = kc_seed(1);
    for (int layout = 0; layout < 3; layout++)
        for (size_t a = 0; a < 5; a++)
            for (size_t b = 0; b < 5; b++)
                for (size_t c = 0; c < 5; c++)
                    check_problem(&r, f->tables, f->n, f->ws, (whet_gemm_layout)layout, shape_sizes[a],
                                  shape_sizes[b], shape_sizes[c]);
}

/* Random draws that include 127, 257 and k beyond the cache blocks. */
static void odd_shapes_match_reference(void **state)
{
    fixture *f = *state;
    kc_rng r = kc_seed(2);
    for (int layout = 0; layout < 3; layout++)
        for (int draw = 0; draw < 8; draw++) {
            size_t M = shape_sizes[kc_next(&r) % NSHAPE_SIZES];
            size_t N = shape_sizes[kc_next(&r) % NSHAPE_SIZES];
            size_t K = draw % 2 ? long_k[kc_next(&r) % 2] : shape_sizes[kc_next(&r) % NSHAPE_SIZES];
            if (M * N * K > max_odd_volume) /* keep the references quick */
                K = 33;
            check_problem(&r, f->tables, f->n, f->ws, (whet_gemm_layout)layout, M, N, K);
        }
}

/* A training-sized shape; the reference computes a few rows only. */
static void large_shape_matches_reference(void **state)
{
    fixture *f = *state;
    kc_rng r = kc_seed(3);
    for (int layout = 0; layout < 3; layout++)
        for (int which = 0; which < NKINDS; which++) {
            problem p = make_problem(&r, (whet_gemm_layout)layout, LARGE_M, LARGE_N, LARGE_K, 3, which == 1);
            size_t m0 = kc_next(&r) % (LARGE_M - 8), m1 = m0 + 8;
            reference ref = make_reference(&p, (kind)which, m0, m1);
            for (int t = 0; t < f->n; t++) {
                if (f->tables[t]->isa == WHET_ISA_SCALAR) /* slow, and no different from the others here */
                    continue;
                /* whole of C computed, then the reference rows checked */
                run(f->tables[t], &p, (kind)which, 0, LARGE_M, 0, LARGE_N, f->ws[t]);
                for (size_t i = 0; i < LARGE_M; i++)
                    if (i < m0 || i >= m1) /* only rows the reference has */
                        memcpy(p.C + i * p.g.ldc, p.C0 + i * p.g.ldc, p.g.ldc * sizeof(float));
                check_against(&p, &ref, (kind)which, m0, m1, 0, LARGE_N, f->tables[t]->name);
            }
            free_reference(&ref);
            free_problem(&p);
        }
}

/* C computed whole, then again as a grid of sub-blocks cut at odd offsets,
 * must be bit-identical. */
static void sub_blocks_give_identical_bits(void **state)
{
    fixture *f = *state;
    kc_rng r = kc_seed(4);
    static const size_t shapes[][3] = {{SPLIT_M, SPLIT_N, SPLIT_K}, {SPLIT2_M, SPLIT2_N, 1100}, {33, 17, 7}};
    for (int t = 0; t < f->n; t++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int layout = 0; layout < 3; layout++)
                for (int which = 0; which < NKINDS; which++) {
                    /* the scalar kernel sums each element in a loop of its own: spare
                     * it the large shapes, as slow as they are pointless for it */
                    if (f->tables[t]->isa == WHET_ISA_SCALAR && s < 2)
                        continue;
                    size_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                    problem p = make_problem(&r, (whet_gemm_layout)layout, M, N, K, 1, (int)(kc_next(&r) % 2));
                    float *whole = kc_floats(p.c_count);
                    run(f->tables[t], &p, (kind)which, 0, M, 0, N, f->ws[t]);
                    memcpy(whole, p.C, p.c_count * sizeof(float));
                    size_t mcut = 1 + kc_next(&r) % (M - 0), ncut = 1 + kc_next(&r) % N;
                    if (mcut >= M)
                        mcut = M / 2;
                    if (ncut >= N)
                        ncut = N / 2;
                    memcpy(p.C, p.C0, p.c_count * sizeof(float));
                    size_t rows[3] = {0, mcut, M}, cols[3] = {0, ncut, N};
                    for (int a = 0; a < 2; a++)
                        for (int b = 0; b < 2; b++) {
                            if (rows[a] == rows[a + 1] || cols[b] == cols[b + 1])
                                continue;
                            if (which == KIND_SGEMM)
                                f->tables[t]->sgemm(&p.g, rows[a], rows[a + 1], cols[b], cols[b + 1], f->ws[t]);
                            else
                                f->tables[t]->gemm_bf16(&p.g, rows[a], rows[a + 1], cols[b], cols[b + 1], f->ws[t]);
                        }
                    if (memcmp(whole, p.C, p.c_count * sizeof(float)) != 0) {
                        print_error("%s%s layout %d %zux%zux%zu: split at row %zu, column %zu changed bits\n",
                                    f->tables[t]->name, kind_names[which], layout, M, N, K, mcut, ncut);
                        fail();
                    }
                    kc_free(whole);
                    free_problem(&p);
                }
}

/* whet_compute_sgemm / gemm_bf16 on 1, 2 and 3 threads: memcmp-identical C. */
static void thread_counts_give_identical_bits(void **state)
{
    fixture *f = *state;
    kc_rng r = kc_seed(5);
    static const size_t shapes[][3] = {{LARGE_M, LARGE_N, LARGE_K}, {LARGE_N, LARGE_M + 5, 300}, {37, 129, 333}};
    for (int t = 0; t < f->n; t++) {
        whet_compute *pools[3];
        for (int n = 0; n < 3; n++) {
            pools[n] = whet_compute_create(f->tables[t], n + 1);
            assert_non_null(pools[n]);
        }
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            /* the scalar reference is slow: spare it the large shapes */
            if (f->tables[t]->isa == WHET_ISA_SCALAR && s < 2)
                continue;
            for (int layout = 0; layout < 3; layout++)
                for (int which = 0; which < NKINDS; which++) {
                    problem p = make_problem(&r, (whet_gemm_layout)layout, shapes[s][0], shapes[s][1],
                                             shapes[s][2], 0, (int)(kc_next(&r) % 2));
                    select_b(&p, (kind)which);
                    float *first = kc_floats(p.c_count);
                    for (int n = 0; n < 3; n++) {
                        memcpy(p.C, p.C0, p.c_count * sizeof(float));
                        if (which == KIND_SGEMM)
                            whet_compute_sgemm(pools[n], &p.g);
                        else
                            whet_compute_gemm_bf16(pools[n], &p.g);
                        if (n == 0)
                            memcpy(first, p.C, p.c_count * sizeof(float));
                        else if (memcmp(first, p.C, p.c_count * sizeof(float)) != 0) {
                            print_error("%s%s layout %d %zux%zux%zu: %d threads differ from 1\n",
                                        f->tables[t]->name, kind_names[which], layout, p.g.M, p.g.N,
                                        p.g.K, n + 1);
                            fail();
                        }
                    }
                    kc_free(first);
                    free_problem(&p);
                }
        }
        for (int n = 0; n < 3; n++)
            whet_compute_destroy(pools[n]);
    }
}

/* K = 0 is an empty sum: C = 0, or left alone when accumulating. */
static void empty_k_gives_zero_or_keeps_c(void **state)
{
    fixture *f = *state;
    kc_rng r = kc_seed(6);
    for (int t = 0; t < f->n; t++)
        for (int which = 0; which < NKINDS; which++)
            for (int accumulate = 0; accumulate <= 1; accumulate++) {
                problem p = make_problem(&r, WHET_GEMM_NN, 5, 9, 0, 2, accumulate);
                run(f->tables[t], &p, (kind)which, 0, 5, 0, 9, f->ws[t]);
                for (size_t i = 0; i < 5; i++)
                    for (size_t j = 0; j < 9; j++)
                        assert_true(p.C[i * p.g.ldc + j] == (accumulate ? p.C0[i * p.g.ldc + j] : 0.0f));
                free_problem(&p);
            }
}

/* A NaN in A or B makes its row or column of C NaN and nothing else: with a
 * payload only in the low bits (0x7f800001), rounding to bf16 without the NaN
 * case would carry it into the exponent and give an infinity instead. Every
 * table (and the convert path), every layout, every kind. */
static void nan_operands_stay_nan(void **state)
{
    fixture *f = *state;
    kc_rng r = kc_seed(8);
    const uint32_t low_nan = 0x7f800001u;
    float nan;
    memcpy(&nan, &low_nan, sizeof nan);
    size_t M = 29, N = 45, K = 300, i_nan = 14, k_a = 131, k_b = 277, j_nan = 33;
    for (int t = 0; t < f->n; t++)
        for (int layout = 0; layout < 3; layout++)
            for (int which = 0; which < NKINDS; which++) {
                problem p = make_problem(&r, (whet_gemm_layout)layout, M, N, K, 3, 0);
                p.A[a_index(&p.g, i_nan, k_a)] = nan;
                p.Bf[b_index(&p.g, k_b, j_nan)] = nan;
                p.Bh[b_index(&p.g, k_b, j_nan)] = 0x7fc1; /* a quiet NaN in bf16 */
                run(f->tables[t], &p, (kind)which, 0, M, 0, N, f->ws[t]);
                for (size_t i = 0; i < M; i++)
                    for (size_t j = 0; j < N; j++) {
                        float c = p.C[i * p.g.ldc + j];
                        int want_nan = i == i_nan || j == j_nan;
                        if (want_nan ? !isnan(c) : !isfinite(c))
                            fail_msg("%s%s, layout %d: C[%zu][%zu] = %g, expected %s", f->tables[t]->name,
                                     kind_names[which], layout, i, j, (double)c, want_nan ? "NaN" : "a finite value");
                    }
                free_problem(&p);
            }
}

/* An argument picks the tests to run by name pattern (cmocka's filter). */
int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(small_shapes_match_reference),
        cmocka_unit_test(odd_shapes_match_reference),
        cmocka_unit_test(large_shape_matches_reference),
        cmocka_unit_test(sub_blocks_give_identical_bits),
        cmocka_unit_test(thread_counts_give_identical_bits),
        cmocka_unit_test(empty_k_gives_zero_or_keeps_c),
        cmocka_unit_test(nan_operands_stay_nan),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
