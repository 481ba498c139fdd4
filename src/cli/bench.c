/* whet bench: GEMM throughput in the shapes training runs, per ISA and layout,
 * next to the measured FMA peak and, when it is installed, OpenBLAS on the
 * same shapes in the same run. OpenBLAS is loaded with dlopen at run time, so
 * it is never a build or run dependency. */
#include "cli/commands.h"
#include "cli/fma_peak.h"
#include "simd/simd.h"
#include "util/compute.h"
#include "util/log.h"
#include "util/timer.h"

#include <dlfcn.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { TOKENS = 1024 }; /* M: the tokens of one training micro-batch */

/* (N, K) = (out, in) features of the weight W[N,K]: attention and MLP
 * projections of small models, a 2048-wide model's, and a vocabulary head. */
static const size_t bench_shapes[][2] = {{576, 576},   {1536, 576},  {576, 1536},
                                         {2048, 2048}, {5632, 2048}, {49152, 576}};
enum { NSHAPES = sizeof bench_shapes / sizeof bench_shapes[0] };

/* The GEMMs of one linear layer, all 2·M·N·K FLOPs. */
typedef enum { OP_FORWARD, OP_INPUT_GRAD, OP_WEIGHT_GRAD, NOPS } bench_op;
static const char *const op_names[NOPS] = {"forward", "input_grad", "weight_grad"};
static const char *const op_formulas[NOPS] = {"Y=X*W^T", "dX=dY*W", "dW=dY^T*X"};
static const char *const layout_names[3] = {"NT", "NN", "TN"};

/* cblas_sgemm as OpenBLAS exports it (32-bit integers in libopenblas.so.0) */
typedef void (*cblas_sgemm_fn)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                               const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };

typedef struct {
    void *handle;
    cblas_sgemm_fn sgemm;
    const char *config;
} openblas;

static void openblas_open(openblas *ob, int threads)
{
    memset(ob, 0, sizeof *ob);
    ob->handle = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!ob->handle)
        return;
    /* POSIX: a function pointer goes through void * when it comes from dlsym */
    void *sym = dlsym(ob->handle, "cblas_sgemm");
    void *set_threads = dlsym(ob->handle, "openblas_set_num_threads");
    void *get_config = dlsym(ob->handle, "openblas_get_config");
    if (!sym || !set_threads) {
        dlclose(ob->handle);
        ob->handle = NULL;
        return;
    }
    memcpy(&ob->sgemm, &sym, sizeof sym);
    void (*set)(int);
    memcpy(&set, &set_threads, sizeof set);
    set(threads);
    if (get_config) {
        char *(*config)(void);
        memcpy(&config, &get_config, sizeof config);
        ob->config = config();
    }
}

/* One layer's operands, in the training roles of bench_op. */
typedef struct {
    size_t n, k;
    float *x, *w, *y, *dy, *dx, *dw;
    whet_bf16 *w_bf16;
} layer;

static float *random_floats(size_t n, uint64_t *state)
{
    float *p = malloc(n * sizeof *p);
    if (!p)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        *state = *state * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (float)((double)(*state >> 40) / (double)(1 << 24) * 2.0 - 1.0);
    }
    return p;
}

static void layer_free(layer *l)
{
    free(l->x), free(l->w), free(l->y), free(l->dy), free(l->dx), free(l->dw), free(l->w_bf16);
}

static int layer_init(layer *l, size_t n, size_t k, const whet_kernels *kernels)
{
    memset(l, 0, sizeof *l);
    l->n = n, l->k = k;
    uint64_t state = n * 31 + k;
    l->x = random_floats(TOKENS * k, &state);
    l->w = random_floats(n * k, &state);
    l->dy = random_floats(TOKENS * n, &state);
    l->y = calloc(TOKENS * n, sizeof(float));
    l->dx = calloc(TOKENS * k, sizeof(float));
    l->dw = calloc(n * k, sizeof(float));
    l->w_bf16 = malloc(n * k * sizeof(whet_bf16));
    if (!l->x || !l->w || !l->dy || !l->y || !l->dx || !l->dw || !l->w_bf16) {
        layer_free(l);
        whet_error("bench: out of memory for N=%zu K=%zu", n, k);
        return -1;
    }
    kernels->f32_to_bf16(l->w_bf16, l->w, n * k);
    return 0;
}

static whet_gemm layer_gemm(const layer *l, bench_op op, int bf16)
{
    const void *w = bf16 ? (const void *)l->w_bf16 : (const void *)l->w;
    switch (op) {
    case OP_FORWARD: /* Y[T,N] = X[T,K]·W[N,K]ᵀ */
        return (whet_gemm){WHET_GEMM_NT, TOKENS, l->n, l->k, l->x, l->k, w, l->k, l->y, l->n, 0};
    case OP_INPUT_GRAD: /* dX[T,K] = dY[T,N]·W[N,K] */
        return (whet_gemm){WHET_GEMM_NN, TOKENS, l->k, l->n, l->dy, l->n, w, l->k, l->dx, l->k, 0};
    default: /* dW[N,K] = dY[T,N]ᵀ·X[T,K] */
        return (whet_gemm){WHET_GEMM_TN, l->n, l->k, TOKENS, l->dy, l->n, l->x, l->k, l->dw, l->k, 0};
    }
}

typedef struct {
    int repeat;
    double seconds;
    double (*clock)(void); /* wall time, or the process's CPU time with --cpu-time */
} timing;

static double process_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct {
    double best, median; /* GFLOP/s */
} rate;

typedef void (*run_fn)(void *ctx);

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One warm-up run, then up to t->repeat timed runs within t->seconds (at least
 * one): the best and the median time, as GFLOP/s. */
static rate time_runs(run_fn fn, void *ctx, double flops, const timing *t)
{
    enum { MAX_RUNS = 1000 };
    double times[MAX_RUNS];
    int runs = 0;
    fn(ctx);
    double start = whet_now();
    while (runs < t->repeat && runs < MAX_RUNS && (runs == 0 || whet_now() - start < t->seconds)) {
        double t0 = t->clock();
        fn(ctx);
        times[runs++] = t->clock() - t0;
    }
    qsort(times, (size_t)runs, sizeof times[0], compare_doubles);
    double median = runs % 2 ? times[runs / 2] : (times[runs / 2 - 1] + times[runs / 2]) / 2;
    return (rate){flops / times[0] * 1e-9, flops / median * 1e-9};
}

typedef struct {
    whet_compute *compute;
    whet_gemm g;
    int bf16;
} whet_run;

static void run_whet(void *p)
{
    whet_run *r = p;
    if (r->bf16)
        whet_compute_gemm_bf16(r->compute, &r->g);
    else
        whet_compute_sgemm(r->compute, &r->g);
}

typedef struct {
    const openblas *ob;
    whet_gemm g;
} openblas_run;

static void run_openblas(void *p)
{
    openblas_run *r = p;
    const whet_gemm *g = &r->g;
    int ta = g->layout == WHET_GEMM_TN ? CBLAS_TRANS : CBLAS_NO_TRANS;
    int tb = g->layout == WHET_GEMM_NT ? CBLAS_TRANS : CBLAS_NO_TRANS;
    r->ob->sgemm(CBLAS_ROW_MAJOR, ta, tb, (int)g->M, (int)g->N, (int)g->K, 1.0f, g->A, (int)g->lda, g->B,
                 (int)g->ldb, 0.0f, g->C, (int)g->ldc);
}

/* The kinds of GEMM measured per shape: three fp32 layouts, then bf16 NT, NN. */
enum { NKINDS = 5 };
static bench_op kind_op(int kind)
{
    return kind < 3 ? (bench_op)kind : (bench_op)(kind - 3);
}
static int kind_bf16(int kind)
{
    return kind >= 3;
}

typedef struct {
    const whet_kernels *isas[WHET_ISA_COUNT];
    whet_compute *compute[WHET_ISA_COUNT];
    double peak[WHET_ISA_COUNT]; /* GFLOP/s per core */
    int nisas;
    int threads;
    int json;
    timing timing;
    openblas ob;
} bench;

static void print_json_string(const char *s)
{
    putchar('"');
    for (; s && *s; s++)
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s >= 0x20)
            putchar(*s);
    putchar('"');
}

static int bench_gemm(bench *b)
{
    const whet_cpu_features *f = whet_cpu_detect();
    if (b->json) {
        printf("{\"benchmark\":\"gemm\",\"cpu\":");
        print_json_string(f->brand);
        printf(",\"m\":%d,\"threads\":%d,\"repeat\":%d,\"seconds\":%g,\"fma_peak_gflops_per_core\":{", TOKENS,
               b->threads, b->timing.repeat, b->timing.seconds);
        for (int i = 0; i < b->nisas; i++)
            printf("%s\"%s\":%.1f", i ? "," : "", b->isas[i]->name, b->peak[i]);
        printf("},\"clock\":\"%s\",\"openblas\":", b->timing.clock == whet_now ? "wall" : "process_cpu");
        if (b->ob.handle)
            print_json_string(b->ob.config ? b->ob.config : "libopenblas.so.0");
        else
            printf("null");
        printf(",\"results\":[");
    } else {
        printf("whet bench gemm: M = %d tokens, %d thread%s, best of up to %d runs within %g s (after a "
               "warm-up), timed by %s\n", TOKENS, b->threads, b->threads == 1 ? "" : "s", b->timing.repeat,
               b->timing.seconds, b->timing.clock == whet_now ? "the wall clock" : "the process's CPU time");
        printf("cpu: %s\n", f->brand[0] ? f->brand : f->arch);
        for (int i = 0; i < b->nisas; i++)
            printf("fma peak (%s): %.1f GFLOP/s per core, %.1f on %d thread%s; gemm_bf16 is %s\n",
                   b->isas[i]->name, b->peak[i], b->peak[i] * b->threads, b->threads,
                   b->threads == 1 ? "" : "s", b->isas[i]->gemm_bf16_kind);
        if (b->ob.handle)
            printf("OpenBLAS: %s, %d thread%s (x OB = throughput / OpenBLAS cblas_sgemm, same layout)\n",
                   b->ob.config ? b->ob.config : "libopenblas.so.0", b->threads, b->threads == 1 ? "" : "s");
        else
            printf("OpenBLAS: not found (libopenblas.so.0 did not load); no comparison\n");
        printf("GFLOP/s (%% of peak on %d thread%s)%s\n\n", b->threads, b->threads == 1 ? "" : "s",
               b->ob.handle ? " and x OB" : "");
        printf("%-12s %-24s", "N x K", "GEMM");
        for (int i = 0; i < b->nisas; i++)
            printf(" %21s", b->isas[i]->name);
        if (b->ob.handle)
            printf(" %9s", "OpenBLAS");
        printf("\n");
    }
    int first_result = 1;
    for (int s = 0; s < NSHAPES; s++) {
        layer l;
        if (layer_init(&l, bench_shapes[s][0], bench_shapes[s][1], b->isas[0]) != 0)
            return WHET_EXIT_ERROR;
        double flops = 2.0 * TOKENS * (double)l.n * (double)l.k;
        rate ob_rate[NOPS] = {{0, 0}};
        if (b->ob.handle)
            for (int op = 0; op < NOPS; op++) {
                openblas_run r = {&b->ob, layer_gemm(&l, (bench_op)op, 0)};
                ob_rate[op] = time_runs(run_openblas, &r, flops, &b->timing);
            }
        for (int kind = 0; kind < NKINDS; kind++) {
            bench_op op = kind_op(kind);
            int bf16 = kind_bf16(kind);
            rate rates[WHET_ISA_COUNT];
            for (int i = 0; i < b->nisas; i++) {
                whet_run r = {b->compute[i], layer_gemm(&l, op, bf16), bf16};
                rates[i] = time_runs(run_whet, &r, flops, &b->timing);
            }
            const char *layout = layout_names[layer_gemm(&l, op, bf16).layout];
            if (b->json) {
                for (int i = 0; i <= b->nisas; i++) {
                    int is_ob = i == b->nisas;
                    if (is_ob && (bf16 || !b->ob.handle))
                        continue;
                    rate r = is_ob ? ob_rate[op] : rates[i];
                    printf("%s{\"isa\":\"%s\",\"op\":\"%s\",\"layout\":\"%s\",\"dtype\":\"%s\",\"n\":%zu,\"k\":%zu,"
                           "\"gflops_best\":%.2f,\"gflops_median\":%.2f",
                           first_result ? "" : ",", is_ob ? "openblas" : b->isas[i]->name, op_names[op], layout,
                           bf16 ? "bf16" : "fp32", l.n, l.k, r.best, r.median);
                    if (!is_ob) {
                        printf(",\"fraction_of_peak\":%.3f", r.best / (b->peak[i] * b->threads));
                        if (bf16)
                            printf(",\"gemm_bf16_kind\":\"%s\"", b->isas[i]->gemm_bf16_kind);
                        if (b->ob.handle)
                            printf(",\"vs_openblas\":%.3f", r.best / ob_rate[op].best);
                    }
                    printf("}");
                    first_result = 0;
                }
            } else {
                char shape[32], what[40];
                snprintf(shape, sizeof shape, "%zux%zu", l.n, l.k);
                snprintf(what, sizeof what, "%s %s %s", bf16 ? "bf16" : "fp32", layout, op_formulas[op]);
                printf("%-12s %-24s", kind == 0 ? shape : "", what);
                for (int i = 0; i < b->nisas; i++) {
                    char cell[40];
                    int n = snprintf(cell, sizeof cell, "%.1f (%2.0f%%)", rates[i].best,
                                     100 * rates[i].best / (b->peak[i] * b->threads));
                    if (b->ob.handle && n > 0)
                        snprintf(cell + n, sizeof cell - (size_t)n, " %4.2fx", rates[i].best / ob_rate[op].best);
                    printf(" %21s", cell);
                }
                if (b->ob.handle && !bf16)
                    printf(" %9.1f", ob_rate[op].best);
                printf("\n");
                fflush(stdout);
            }
        }
        layer_free(&l);
    }
    if (b->json)
        printf("]}\n");
    return WHET_EXIT_OK;
}

static void usage(FILE *out)
{
    fputs("usage: whet bench [gemm] [--isa NAME] [--threads N] [--repeat N] [--seconds S] [--cpu-time]\n"
          "                  [--json] [--help]\n"
          "Measure kernel throughput; with no benchmark named, run them all (for now: gemm).\n"
          "gemm: GFLOP/s of sgemm (NT, NN, TN) and gemm_bf16 (NT, NN) at M = 1024 tokens for\n"
          "the (N, K) of six weight shapes, as a layer's forward pass, input gradient and\n"
          "weight gradient; next to the measured FMA peak and OpenBLAS's cblas_sgemm when\n"
          "libopenblas.so.0 can be loaded.\n"
          "  --isa NAME     one kernel level (scalar, avx2, avx512, neon); default: every\n"
          "                 level this CPU runs except scalar\n"
          "  --threads N    threads for whet and OpenBLAS alike; default: WHET_THREADS, else\n"
          "                 the physical cores\n"
          "  --repeat N     timed runs per measurement at most (default 5), after a warm-up\n"
          "  --seconds S    time budget per measurement (default 1); at least one timed run\n"
          "  --cpu-time     time by the process's CPU time instead of the wall clock: steadier\n"
          "                 when other programs share the cores (one thread only)\n"
          "  --json         print one JSON object\n"
          "  --help         this text\n",
          out);
}

int cmd_bench(int argc, char **argv)
{
    bench b;
    memset(&b, 0, sizeof b);
    b.timing = (timing){5, 1.0, whet_now};
    const char *isa_name = NULL;
    int threads = 0;
    static const struct option options[] = {{"isa", required_argument, NULL, 'i'},
                                            {"threads", required_argument, NULL, 't'},
                                            {"repeat", required_argument, NULL, 'r'},
                                            {"seconds", required_argument, NULL, 's'},
                                            {"cpu-time", no_argument, NULL, 'c'},
                                            {"json", no_argument, NULL, 'j'},
                                            {"help", no_argument, NULL, 'h'},
                                            {0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        char *end = NULL;
        switch (opt) {
        case 'i': isa_name = optarg; break;
        case 't':
            threads = (int)strtol(optarg, &end, 10);
            if (*end || threads < 1 || threads > 4096) {
                whet_error("bench: --threads wants a positive integer, not '%s'", optarg);
                return WHET_EXIT_USAGE;
            }
            break;
        case 'r':
            b.timing.repeat = (int)strtol(optarg, &end, 10);
            if (*end || b.timing.repeat < 1 || b.timing.repeat > 1000) {
                whet_error("bench: --repeat wants an integer from 1 to 1000, not '%s'", optarg);
                return WHET_EXIT_USAGE;
            }
            break;
        case 's':
            b.timing.seconds = strtod(optarg, &end);
            if (*end || !(b.timing.seconds >= 0 && b.timing.seconds <= 3600)) {
                whet_error("bench: --seconds wants a number from 0 to 3600, not '%s'", optarg);
                return WHET_EXIT_USAGE;
            }
            break;
        case 'c': b.timing.clock = process_cpu_seconds; break;
        case 'j': b.json = 1; break;
        case 'h': usage(stdout); return WHET_EXIT_OK;
        default: usage(stderr); return WHET_EXIT_USAGE;
        }
    }
    for (; optind < argc; optind++)
        if (strcmp(argv[optind], "gemm") != 0) {
            whet_error("bench: no benchmark '%s' (there is: gemm)", argv[optind]);
            return WHET_EXIT_USAGE;
        }

    if (isa_name) {
        int isa = whet_isa_from_name(isa_name);
        if (isa < 0) {
            whet_error("bench: unknown --isa '%s' (expected scalar, avx2, avx512 or neon)", isa_name);
            return WHET_EXIT_USAGE;
        }
        b.isas[0] = whet_kernels_for((whet_isa)isa);
        if (!b.isas[0]) {
            whet_error("bench: this CPU (or build) cannot run %s; 'whet cpu' lists what it has", isa_name);
            return WHET_EXIT_ERROR;
        }
        b.nisas = 1;
    } else {
        for (int isa = WHET_ISA_SCALAR + 1; isa < WHET_ISA_COUNT; isa++)
            if (whet_kernels_for((whet_isa)isa))
                b.isas[b.nisas++] = whet_kernels_for((whet_isa)isa);
        if (b.nisas == 0) /* a scalar-only build or CPU */
            b.isas[b.nisas++] = whet_kernels_for(WHET_ISA_SCALAR);
    }
    b.threads = whet_thread_count(threads);
    if (b.threads < 1)
        return WHET_EXIT_ERROR;
    if (b.timing.clock != whet_now && b.threads != 1) {
        /* CPU time summed over threads says nothing about how well they scale */
        whet_error("bench: --cpu-time measures one thread; add --threads 1");
        return WHET_EXIT_USAGE;
    }
    int status = WHET_EXIT_ERROR;
    for (int i = 0; i < b.nisas; i++) {
        b.compute[i] = whet_compute_create(b.isas[i], b.threads);
        if (!b.compute[i])
            goto done;
        b.peak[i] = cli_measure_fma_peak_by(b.isas[i], b.timing.clock);
    }
    openblas_open(&b.ob, b.threads);
    status = bench_gemm(&b);
done:
    for (int i = 0; i < b.nisas; i++)
        whet_compute_destroy(b.compute[i]);
    if (b.ob.handle)
        dlclose(b.ob.handle);
    return status;
}
