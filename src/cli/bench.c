/* whet bench: GEMM throughput in the shapes training runs, per ISA and layout,
 * next to the measured FMA peak and, when it is installed, OpenBLAS on the
 * same shapes in the same run. OpenBLAS is loaded with dlopen at run time, so
 * it is never a build or run dependency. `forward`: prompt processing of a
 * randomly initialised SmolLM-135M-shaped model against sgemm on its shapes;
 * `tokenize`: encoding speed; `train`: whole optimizer steps next to the
 * PyTorch baseline (cli/bench_train.c). */
#include "cli/bench_train.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/fma_peak.h"
#include "model/config.h"
#include "model/model.h"
#include "simd/simd.h"
#include "tok/tokenizer.h"
#include "util/compute.h"
#include "util/log.h"
#include "util/timer.h"

#include <dlfcn.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
    /* After each call OpenBLAS's threads busy-wait for about 2^28 cycles by
     * default; on a machine with as many cores as threads they would then steal
     * cores from whet's next measurement. 2^4 cycles makes them sleep at once
     * (read when the library loads; a user's own setting is kept). */
    setenv("OPENBLAS_THREAD_TIMEOUT", "4", 0);
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
    size_t m, n, k; /* M tokens */
    float *x, *w, *y, *dy, *dx, *dw;
    whet_bf16 *w_bf16, *x_bf16;
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
    free(l->x), free(l->w), free(l->y), free(l->dy), free(l->dx), free(l->dw), free(l->w_bf16), free(l->x_bf16);
}

static int layer_init(layer *l, size_t m, size_t n, size_t k, const whet_kernels *kernels)
{
    memset(l, 0, sizeof *l);
    l->m = m, l->n = n, l->k = k;
    uint64_t state = n * 31 + k;
    l->x = random_floats(m * k, &state);
    l->w = random_floats(n * k, &state);
    l->dy = random_floats(m * n, &state);
    l->y = calloc(m * n, sizeof(float));
    l->dx = calloc(m * k, sizeof(float));
    l->dw = calloc(n * k, sizeof(float));
    l->w_bf16 = malloc(n * k * sizeof(whet_bf16));
    l->x_bf16 = malloc(m * k * sizeof(whet_bf16));
    if (!l->x || !l->w || !l->dy || !l->y || !l->dx || !l->dw || !l->w_bf16 || !l->x_bf16) {
        layer_free(l);
        whet_error("bench: out of memory for N=%zu K=%zu", n, k);
        return -1;
    }
    kernels->f32_to_bf16(l->w_bf16, l->w, n * k);
    kernels->f32_to_bf16(l->x_bf16, l->x, m * k);
    return 0;
}

/* bf16: 0 for sgemm; for gemm_bf16, 1 with B the bf16 weights (NT, NN) or X
 * (TN, rounded to bf16 first), 2 with B fp32 (b_f32, rounded in the kernel). */
static whet_gemm layer_gemm(const layer *l, bench_op op, int bf16)
{
    const void *w = bf16 == 1 ? (const void *)l->w_bf16 : (const void *)l->w;
    int b_f32 = bf16 == 2;
    switch (op) {
    case OP_FORWARD: /* Y[T,N] = X[T,K]·W[N,K]ᵀ */
        return (whet_gemm){WHET_GEMM_NT, l->m, l->n, l->k, l->x, l->k, w, l->k, l->y, l->n, 0, b_f32};
    case OP_INPUT_GRAD: /* dX[T,K] = dY[T,N]·W[N,K] */
        return (whet_gemm){WHET_GEMM_NN, l->m, l->k, l->n, l->dy, l->n, w, l->k, l->dx, l->k, 0, b_f32};
    default: /* dW[N,K] = dY[T,N]ᵀ·X[T,K] */
        return (whet_gemm){WHET_GEMM_TN, l->n, l->k, l->m, l->dy, l->n,
                           bf16 == 1 ? (const void *)l->x_bf16 : (const void *)l->x, l->k, l->dw, l->k, 0, b_f32};
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

/* The kinds of GEMM measured per shape: sgemm in the three layouts; gemm_bf16
 * with bf16 B (the weights) in NT and NN; gemm_bf16 with fp32 B (b_f32) in TN,
 * the weight gradient of --compute bf16, then in NT and NN. */
static const struct {
    bench_op op;
    int bf16; /* as layer_gemm takes it */
} kinds[] = {{OP_FORWARD, 0},     {OP_INPUT_GRAD, 0}, {OP_WEIGHT_GRAD, 0}, {OP_FORWARD, 1},
             {OP_INPUT_GRAD, 1},  {OP_WEIGHT_GRAD, 2}, {OP_FORWARD, 2},    {OP_INPUT_GRAD, 2}};
enum { NKINDS = sizeof kinds / sizeof kinds[0] };

typedef struct {
    const whet_kernels *isas[WHET_ISA_COUNT];
    whet_compute *compute[WHET_ISA_COUNT];
    double peak[WHET_ISA_COUNT]; /* GFLOP/s per core */
    int nisas;
    int threads;
    int json;
    timing timing;
    openblas ob;
    size_t seq_len;        /* forward: T */
    const char *tokenizer; /* tokenize: --tokenizer, or NULL for the default */
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
        if (layer_init(&l, TOKENS, bench_shapes[s][0], bench_shapes[s][1], b->isas[0]) != 0)
            return WHET_EXIT_ERROR;
        double flops = 2.0 * TOKENS * (double)l.n * (double)l.k;
        rate ob_rate[NOPS] = {{0, 0}};
        if (b->ob.handle)
            for (int op = 0; op < NOPS; op++) {
                openblas_run r = {&b->ob, layer_gemm(&l, (bench_op)op, 0)};
                ob_rate[op] = time_runs(run_openblas, &r, flops, &b->timing);
            }
        for (int kind = 0; kind < NKINDS; kind++) {
            bench_op op = kinds[kind].op;
            int bf16 = kinds[kind].bf16;
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
                            printf(",\"b_dtype\":\"%s\",\"gemm_bf16_kind\":\"%s\"", bf16 == 2 ? "fp32" : "bf16",
                                   b->isas[i]->gemm_bf16_kind);
                        if (b->ob.handle)
                            printf(",\"vs_openblas\":%.3f", r.best / ob_rate[op].best);
                    }
                    printf("}");
                    first_result = 0;
                }
            } else {
                char shape[32], what[40];
                snprintf(shape, sizeof shape, "%zux%zu", l.n, l.k);
                snprintf(what, sizeof what, "%s %s %s%s", bf16 ? "bf16" : "fp32", layout, op_formulas[op],
                         bf16 == 2 ? " fp32 B" : "");
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

/* ---- forward: a SmolLM-135M-shaped model, prompt processing --------------- */

/* SmolLM-135M's config.json, with room for longer sequences */
static const char smollm_config[] =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":49152,\"hidden_size\":576,\"num_hidden_layers\":30,"
    "\"num_attention_heads\":9,\"num_key_value_heads\":3,\"intermediate_size\":1536,\"tie_word_embeddings\":true,"
    "\"rope_theta\":10000.0,\"rms_norm_eps\":1e-05,\"max_position_embeddings\":%zu}";

typedef struct {
    whet_model *m;
    whet_acts *acts;
    const int32_t *tokens, *targets;
    size_t T;
    double nll;
    int failed;
    whet_err e;
} forward_run;

/* forward + the fused LM head's NLL over every position, as `whet score` runs a prompt */
static void run_forward(void *p)
{
    forward_run *r = p;
    if (whet_model_forward(r->m, r->acts, r->tokens, 1, r->T, &r->e) ||
        whet_model_nll(r->m, r->acts, r->targets, NULL, &r->nll, &r->e))
        r->failed = 1;
}

typedef struct {
    whet_compute *compute;
    float *out, *lse;
    const float *q, *k, *v;
    size_t T, heads, kv_heads, head_dim;
} attention_run;

static void attention_heads(void *p, size_t h0, size_t h1)
{
    attention_run *r = p;
    size_t QD = r->heads * r->head_dim, KVD = r->kv_heads * r->head_dim;
    r->compute->kernels->attention_forward(r->out, r->lse, r->q, r->k, r->v, r->T, r->T, 0, r->heads, r->kv_heads,
                                           r->head_dim, QD, KVD, QD, 1.0f / sqrtf((float)r->head_dim), h0, h1);
}

/* one layer's causal attention over the heads, split across threads as the forward does */
static void run_attention(void *p)
{
    attention_run *r = p;
    whet_compute_for(r->compute, r->heads, 1, attention_heads, r);
}

/* The forward's GEMMs, Y[T,N] = X[T,K]·W[N,K]ᵀ on the model's own weights:
 * (N, K, how many per forward pass). */
typedef struct {
    const char *name;
    size_t n, k, count;
    const float *w;
} forward_gemm;

typedef struct {
    double forward_s, gemm_s, attention_s; /* best seconds: one pass; Σ GEMMs of one pass; all layers' attention */
    double gemm_flops, attention_flops;
} forward_result;

static int bench_forward_isa(bench *b, int i, whet_model *m, forward_run *fr, const forward_gemm *gemms, size_t ngemms,
                             float *x, float *y, attention_run *ar, double flops, forward_result *res)
{
    const whet_model_config *c = &m->cfg;
    size_t T = fr->T;
    m->compute = b->compute[i];
    fr->failed = 0;
    rate fwd = time_runs(run_forward, fr, flops, &b->timing);
    if (fr->failed) {
        whet_error("bench forward: %s", fr->e.msg);
        return -1;
    }
    res->forward_s = flops / (fwd.best * 1e9);
    res->gemm_s = 0, res->gemm_flops = 0;
    for (size_t g = 0; g < ngemms; g++) {
        double gf = 2.0 * (double)T * (double)gemms[g].n * (double)gemms[g].k;
        whet_run r = {b->compute[i],
                      {WHET_GEMM_NT, T, gemms[g].n, gemms[g].k, x, gemms[g].k, gemms[g].w, gemms[g].k, y, gemms[g].n, 0, 0},
                      0};
        rate gr = time_runs(run_whet, &r, gf, &b->timing);
        res->gemm_s += (double)gemms[g].count * gf / (gr.best * 1e9);
        res->gemm_flops += (double)gemms[g].count * gf;
    }
    ar->compute = b->compute[i];
    double af = 4.0 * ((double)T * (double)(T + 1) / 2) * (double)c->head_dim * (double)c->heads;
    rate at = time_runs(run_attention, ar, af, &b->timing);
    res->attention_s = (double)c->layers * af / (at.best * 1e9);
    res->attention_flops = (double)c->layers * af;
    return 0;
}

static int bench_forward(bench *b)
{
    size_t T = b->seq_len;
    char json[sizeof smollm_config + 32];
    snprintf(json, sizeof json, smollm_config, T > 2048 ? T : (size_t)2048);
    whet_model_config cfg;
    whet_err e;
    if (whet_config_parse(&cfg, json, strlen(json), "SmolLM-135M config", &e)) {
        whet_error("bench forward: %s", e.msg);
        return WHET_EXIT_ERROR;
    }
    size_t C = cfg.hidden, V = cfg.vocab, F = cfg.ffn, L = cfg.layers, HD = cfg.head_dim;
    size_t QD = cfg.heads * HD, KVD = cfg.kv_heads * HD;
    whet_model *m = NULL;
    whet_acts *acts = NULL;
    int32_t *tokens = malloc(T * sizeof *tokens), *targets = malloc(T * sizeof *targets);
    float *x = NULL, *y = NULL, *q = NULL, *k = NULL, *v = NULL, *att = NULL, *lse = NULL;
    int status = WHET_EXIT_ERROR;
    double t0 = whet_now();
    if (whet_model_init(&m, &cfg, b->compute[0], 1, &e) || !(acts = whet_acts_create(m, 1, T, 0, &e))) {
        whet_error("bench forward: %s", e.msg);
        goto done;
    }
    double init_s = whet_now() - t0;
    uint64_t state = 12345;
    x = random_floats(T * F, &state), y = calloc(T * V, sizeof *y);
    q = random_floats(T * QD, &state), k = random_floats(T * KVD, &state), v = random_floats(T * KVD, &state);
    att = calloc(T * QD, sizeof *att), lse = calloc(cfg.heads * T, sizeof *lse);
    if (!tokens || !targets || !x || !y || !q || !k || !v || !att || !lse) {
        whet_error("bench forward: out of memory for T = %zu", T);
        goto done;
    }
    for (size_t t = 0; t < T; t++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        tokens[t] = (int32_t)((state >> 33) % V);
    }
    for (size_t t = 0; t < T; t++)
        targets[t] = tokens[(t + 1) % T]; /* every position scored */
    const whet_model_params *p = &m->params;
    const forward_gemm gemms[] = {
        {"q", QD, C, L, p->wq},       {"k, v", KVD, C, 2 * L, p->wk}, {"o", C, QD, L, p->wo},
        {"gate, up", F, C, 2 * L, p->w_gate}, {"down", C, F, L, p->w_down}, {"lm_head", V, C, 1, p->lm_head},
    };
    const size_t ngemms = sizeof gemms / sizeof gemms[0];
    double linear = (double)L * (double)(2 * QD * C + 2 * KVD * C + 3 * F * C); /* non-embedding linear weights */
    double f_linear = 2 * linear * (double)T, f_head = 2.0 * (double)V * (double)C * (double)T;
    double f_attn = 4.0 * ((double)T * (double)(T + 1) / 2) * (double)HD * (double)cfg.heads * (double)L;
    double flops = f_linear + f_head + f_attn;
    forward_run fr = {.m = m, .acts = acts, .tokens = tokens, .targets = targets, .T = T};
    attention_run ar = {NULL, att, lse, q, k, v, T, cfg.heads, cfg.kv_heads, HD};
    if (b->json)
        printf("{\"benchmark\":\"forward\",\"model\":\"SmolLM-135M-shaped llama, random init\",\"seq_len\":%zu,"
               "\"threads\":%d,\"repeat\":%d,\"seconds\":%g,\"clock\":\"%s\",\"gflop\":{\"linear\":%.3f,"
               "\"lm_head\":%.3f,\"attention\":%.3f,\"total\":%.3f},\"results\":[",
               T, b->threads, b->timing.repeat, b->timing.seconds, b->timing.clock == whet_now ? "wall" : "process_cpu",
               f_linear * 1e-9, f_head * 1e-9, f_attn * 1e-9, flops * 1e-9);
    else {
        printf("whet bench forward: a SmolLM-135M-shaped Llama (L = %zu, C = %zu, %zu/%zu heads of %zu, F = %zu, "
               "V = %zu, tied;\nrandom init in %.1f s), one sequence of T = %zu random tokens: forward + LM-head NLL "
               "at every position;\n%d thread%s, best of up to %d runs within %g s (after a warm-up), timed by %s\n",
               L, C, cfg.heads, cfg.kv_heads, HD, F, V, init_s, T, b->threads, b->threads == 1 ? "" : "s",
               b->timing.repeat, b->timing.seconds, b->timing.clock == whet_now ? "the wall clock" : "the process's CPU time");
        printf("GFLOP per pass: %.1f = linear %.1f + LM head %.1f + causal attention %.1f\n", flops * 1e-9,
               f_linear * 1e-9, f_head * 1e-9, f_attn * 1e-9);
        printf("GEMM: sgemm NT at M = %zu on the model's shapes, weighted by their FLOPs in one pass\n", T);
        printf("attention: attention_forward alone, one layer's %zu heads at T = %zu\n\n", cfg.heads, T);
        printf("%-8s %10s %9s %9s %9s %10s %8s %8s\n", "isa", "tokens/s", "GFLOP/s", "GEMM", "fwd/GEMM",
               "attention", "%GEMM", "%attn");
    }
    for (int i = 0; i < b->nisas; i++) {
        forward_result r;
        if (bench_forward_isa(b, i, m, &fr, gemms, ngemms, x, y, &ar, flops, &r))
            goto done;
        double gflops = flops / r.forward_s * 1e-9, gemm = r.gemm_flops / r.gemm_s * 1e-9;
        double attn = r.attention_flops / r.attention_s * 1e-9;
        if (b->json)
            printf("%s{\"isa\":\"%s\",\"tokens_per_s\":%.1f,\"gflops\":%.2f,\"gemm_gflops\":%.2f,"
                   "\"forward_vs_gemm\":%.3f,\"attention_gflops\":%.2f,\"gemm_time_share\":%.3f,"
                   "\"attention_time_share\":%.3f,\"mean_nll\":%.4f}",
                   i ? "," : "", b->isas[i]->name, (double)T / r.forward_s, gflops, gemm, gflops / gemm, attn,
                   r.gemm_s / r.forward_s, r.attention_s / r.forward_s, fr.nll);
        else {
            printf("%-8s %10.1f %9.1f %9.1f %9.2f %10.1f %7.0f%% %7.0f%%\n", b->isas[i]->name, (double)T / r.forward_s,
                   gflops, gemm, gflops / gemm, attn, 100 * r.gemm_s / r.forward_s, 100 * r.attention_s / r.forward_s);
            fflush(stdout);
        }
    }
    if (b->json)
        printf("]}\n");
    status = WHET_EXIT_OK;
done:
    whet_acts_free(acts);
    whet_model_free(m);
    free(tokens), free(targets), free(x), free(y), free(q), free(k), free(v), free(att), free(lse);
    return status;
}

/* ---- tokenize: encoding speed ----------------------------------------------- */

#define DEFAULT_TOKENIZER "tests/data/tokenizers/gpt2"
enum { TOKENIZE_TEXT_BYTES = 256 * 1024 };

/* Deterministic text of about n bytes: sentences of common English words with
 * numbers, punctuation, contractions, code-like and non-ASCII words and
 * newlines (what a byte-level pre-tokenizer meets in training data). */
static char *bench_text(size_t n, size_t *len)
{
    static const char *const words[] = {
        "the",     "of",       "and",      "to",     "in",       "a",        "is",     "that",   "for",
        "it",      "as",       "was",      "with",   "be",       "by",       "on",     "not",    "he",
        "this",    "are",      "or",       "his",    "from",     "at",       "which",  "but",    "have",
        "model",   "training", "gradient", "tokens", "learning", "network",  "layer",  "weights", "memory",
        "don't",   "it's",     "we'll",    "they're", "café",    "naïve",    "Straße", "über",   "東京",
        "привет",  "λόγος",    "日本語",   "x_1",    "f(x)",     "a+b=c",    "0.001",  "2024",   "#include",
        "    ",    "--",       "e.g.",     "(see",   "below)",   "\"quoted\"", "URL:",  "https://example.org/a?b=1",
    };
    const size_t nw = sizeof words / sizeof words[0];
    char *text = malloc(n + 64);
    if (!text)
        return NULL;
    uint64_t state = 2024;
    size_t o = 0, in_sentence = 0;
    while (o < n) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        unsigned r = (unsigned)(state >> 33);
        const char *w = words[r % nw];
        size_t wl = strlen(w);
        if (in_sentence == 0 && w[0] >= 'a' && w[0] <= 'z') {
            text[o++] = (char)(w[0] - 'a' + 'A');
            memcpy(text + o, w + 1, wl - 1), o += wl - 1;
        } else
            memcpy(text + o, w, wl), o += wl;
        if (r % 97 == 0)
            o += (size_t)snprintf(text + o, 16, " %u", r % 100000);
        in_sentence++;
        if (in_sentence > 6 + r % 14) {
            text[o++] = (r >> 8) % 5 ? '.' : ',';
            text[o++] = (r >> 12) % 7 ? ' ' : '\n';
            in_sentence = (r >> 8) % 5 ? 0 : 1;
        } else
            text[o++] = ' ';
    }
    text[o] = '\0';
    *len = o;
    return text;
}

static int bench_tokenize(bench *b)
{
    const char *path = b->tokenizer ? b->tokenizer : DEFAULT_TOKENIZER;
    if (!b->tokenizer && access(DEFAULT_TOKENIZER "/tokenizer.json", R_OK) != 0) {
        whet_error("bench tokenize: no tokenizer at %s (the default, found when whet runs from its source tree); "
                   "name one with --tokenizer PATH", DEFAULT_TOKENIZER);
        return WHET_EXIT_ERROR;
    }
    whet_err e;
    whet_tokenizer *t = whet_tokenizer_load(path, &e);
    if (!t) {
        whet_error("bench tokenize: %s", e.msg);
        return WHET_EXIT_ERROR;
    }
    size_t len = 0, n_tokens = 0;
    char *text = bench_text(TOKENIZE_TEXT_BYTES, &len);
    if (!text) {
        whet_tokenizer_free(t);
        whet_error("bench tokenize: out of memory");
        return WHET_EXIT_ERROR;
    }
    double mbs = whet_tokenizer_bench(t, text, len, b->timing.seconds, &n_tokens, &e);
    int status = WHET_EXIT_OK;
    if (mbs < 0) {
        whet_error("bench tokenize: %s", e.msg);
        status = WHET_EXIT_ERROR;
    } else if (b->json) {
        printf("{\"benchmark\":\"tokenize\",\"tokenizer\":");
        print_json_string(path);
        printf(",\"text_bytes\":%zu,\"tokens\":%zu,\"seconds\":%g,\"mb_per_s\":%.2f}\n", len, n_tokens,
               b->timing.seconds, mbs);
    } else
        printf("whet bench tokenize: %s on %zu bytes of generated text (%zu tokens, %.2f bytes/token), "
               "one thread, at least %g s:\n%.2f MB/s\n",
               path, len, n_tokens, n_tokens ? (double)len / (double)n_tokens : 0.0, b->timing.seconds, mbs);
    free(text);
    whet_tokenizer_free(t);
    return status;
}

static void usage(FILE *out)
{
    fputs("usage: whet bench [gemm] [forward] [tokenize] [train] [--isa NAME] [--threads N]\n"
          "                  [--repeat N] [--seconds S] [--cpu-time] [--seq-len T]\n"
          "                  [--tokenizer PATH] [--json] [--help]\n"
          "       whet bench train [--method lora|full|both] [--base-dtype f32|bf16]\n"
          "                  [--compute f32|bf16]\n"
          "                  [--seq-len T] [--batch-size B] [--steps N] [--lora-rank R]\n"
          "                  [--shape smollm-135m] [--hidden C] [--layers L] [--heads H]\n"
          "                  [--kv-heads G] [--ffn F] [--vocab V] [--torch PATH | --no-torch]\n"
          "                  [--sweep] [--profile] [--grad-checkpoint] [--peak G]\n"
          "                  [--isa NAME] [--threads N] [--json]\n"
          "Measure throughput; with no benchmark named, run gemm, forward and tokenize\n"
          "(train takes minutes: name it).\n"
          "gemm: GFLOP/s of sgemm (NT, NN, TN) and gemm_bf16 (NT, NN with bf16 B; TN, NT, NN\n"
          "with fp32 B rounded in the kernel) at M = 1024 tokens for\n"
          "the (N, K) of six weight shapes, as a layer's forward pass, input gradient and\n"
          "weight gradient; next to the measured FMA peak and OpenBLAS's cblas_sgemm when\n"
          "libopenblas.so.0 can be loaded.\n"
          "forward: tokens/s and GFLOP/s of the forward pass + LM-head NLL of a randomly\n"
          "initialised SmolLM-135M-shaped Llama over one sequence, next to sgemm's GFLOP/s\n"
          "on the model's shapes at M = T and attention_forward's alone.\n"
          "tokenize: encoding speed in MB/s on 256 KiB of generated text.\n"
          "train: tokens/s, GFLOP/s, MFU and peak resident memory of whole optimizer steps\n"
          "(forward, LM head + cross-entropy, backward, clipping, AdamW) on a randomly\n"
          "initialised Llama (SmolLM-135M's shape by default) and random tokens, each run\n"
          "in a process of its own, next to the PyTorch baseline on the same shape.\n"
          "  --isa NAME       one kernel level (scalar, avx2, avx512, neon); default: every\n"
          "                   level this CPU runs except scalar\n"
          "  --threads N      threads for whet and OpenBLAS alike; default: WHET_THREADS,\n"
          "                   else the physical cores\n"
          "  --repeat N       timed runs per measurement at most (default 5), after a warm-up\n"
          "  --seconds S      time budget per measurement (default 1); at least one timed run\n"
          "  --cpu-time       time by the process's CPU time instead of the wall clock:\n"
          "                   steadier when other programs share the cores (one thread only)\n"
          "  --seq-len T      forward: tokens in the sequence (default 512); train: tokens\n"
          "                   per sequence (default 256)\n"
          "  --tokenizer PATH tokenize: tokenizer.json or its directory (default\n"
          "                   tests/data/tokenizers/gpt2, from the source tree)\n"
          "  --json           print one JSON object per benchmark, one per line\n"
          "  --help           this text\n"
          "  --version        print whet's version\n"
          "train (the ISA: --isa, else the best this CPU runs):\n"
          "  --method M       lora (default), full, or both\n"
          "  --base-dtype D   LoRA's frozen base weights: f32 (default) or bf16\n"
          "  --compute D      the projections' and LM head's GEMMs: f32 (default) or bf16\n"
          "                   (fp32 accumulation; full: bf16 shadows of the fp32 weights,\n"
          "                   which AdamW updates; lora: implies --base-dtype bf16)\n"
          "  --batch-size B   sequences per step (default 4)\n"
          "  --steps N        timed steps after one warm-up step (default 3)\n"
          "  --lora-rank R    LoRA rank on every projection, alpha = 2R (default 8)\n"
          "  --shape NAME     smollm-135m (the default): hidden 576, 30 layers, 9 heads,\n"
          "                   3 KV heads, FFN 1536, vocabulary 49152, tied embeddings;\n"
          "                   --hidden, --layers, --heads, --kv-heads, --ffn and --vocab\n"
          "                   change one dimension of it\n"
          "  --hidden C  --layers L  --heads H  --kv-heads G  --ffn F  --vocab V\n"
          "  --torch PATH     the PyTorch baseline script, run with /usr/bin/python3 (default\n"
          "                   " BENCH_TRAIN_DEFAULT_TORCH ")\n"
          "  --no-torch       do not run the baseline\n"
          "  --sweep          T = 128, 256, 512, 1024, 2048 at the same tokens per step\n"
          "                   (B = B·T / T', at least 1); no baseline\n"
          "  --profile        time every kernel: per step, the wall time of each phase and\n"
          "                   the thread time of each kind of kernel, serial and idle time,\n"
          "                   and the thread time inside jobs on no task (load balance)\n"
          "  --grad-checkpoint  recompute each layer's activations in the backward pass\n"
          "  --peak G         MFU against an fp32 FMA peak of G GFLOP/s per core × threads\n"
          "                   (say, whet cpu's on a quiet machine) instead of the peak of the\n"
          "                   threads at once, measured between the timed steps\n",
          out);
}

int cmd_bench(int argc, char **argv)
{
    bench b;
    memset(&b, 0, sizeof b);
    b.timing = (timing){5, 1.0, whet_now};
    const char *isa_name = NULL;
    int threads = 0;
    bench_train_options tr;
    bench_train_defaults(&tr);
    enum {
        OPT_METHOD = 256, OPT_BASE_DTYPE, OPT_COMPUTE, OPT_BATCH, OPT_STEPS, OPT_RANK, OPT_SHAPE, OPT_HIDDEN, OPT_LAYERS,
        OPT_HEADS, OPT_KV_HEADS, OPT_FFN, OPT_VOCAB, OPT_TORCH, OPT_NO_TORCH, OPT_SWEEP, OPT_PROFILE, OPT_CHECKPOINT, OPT_PEAK
    };
    static const struct option options[] = {{"isa", required_argument, NULL, 'i'},
                                            {"threads", required_argument, NULL, 't'},
                                            {"repeat", required_argument, NULL, 'r'},
                                            {"seconds", required_argument, NULL, 's'},
                                            {"cpu-time", no_argument, NULL, 'c'},
                                            {"seq-len", required_argument, NULL, 'T'},
                                            {"tokenizer", required_argument, NULL, 'k'},
                                            {"json", no_argument, NULL, 'j'},
                                            {"method", required_argument, NULL, OPT_METHOD},
                                            {"base-dtype", required_argument, NULL, OPT_BASE_DTYPE},
                                            {"compute", required_argument, NULL, OPT_COMPUTE},
                                            {"batch-size", required_argument, NULL, OPT_BATCH},
                                            {"steps", required_argument, NULL, OPT_STEPS},
                                            {"lora-rank", required_argument, NULL, OPT_RANK},
                                            {"shape", required_argument, NULL, OPT_SHAPE},
                                            {"hidden", required_argument, NULL, OPT_HIDDEN},
                                            {"layers", required_argument, NULL, OPT_LAYERS},
                                            {"heads", required_argument, NULL, OPT_HEADS},
                                            {"kv-heads", required_argument, NULL, OPT_KV_HEADS},
                                            {"ffn", required_argument, NULL, OPT_FFN},
                                            {"vocab", required_argument, NULL, OPT_VOCAB},
                                            {"torch", required_argument, NULL, OPT_TORCH},
                                            {"no-torch", no_argument, NULL, OPT_NO_TORCH},
                                            {"sweep", no_argument, NULL, OPT_SWEEP},
                                            {"profile", no_argument, NULL, OPT_PROFILE},
                                            {"grad-checkpoint", no_argument, NULL, OPT_CHECKPOINT},
                                            {"peak", required_argument, NULL, OPT_PEAK},
                                            CLI_COMMON_OPTIONS};
    int opt;
    cli_parser parser = {.command = "bench", .usage = usage};
    while ((opt = cli_next_option(&parser, argc, argv, "", options)) != -1) {
        char *end = NULL;
        switch (opt) {
        case OPT_METHOD:
            if (strcmp(optarg, "lora") == 0)
                tr.methods = BENCH_TRAIN_LORA;
            else if (strcmp(optarg, "full") == 0)
                tr.methods = BENCH_TRAIN_FULL;
            else if (strcmp(optarg, "both") == 0)
                tr.methods = BENCH_TRAIN_LORA | BENCH_TRAIN_FULL;
            else {
                whet_error("bench: --method wants lora, full or both, not '%s'", optarg);
                return WHET_EXIT_ERROR;
            }
            break;
        case OPT_BASE_DTYPE:
            if (strcmp(optarg, "f32") != 0 && strcmp(optarg, "bf16") != 0) {
                whet_error("bench: --base-dtype wants f32 or bf16, not '%s'", optarg);
                return WHET_EXIT_ERROR;
            }
            tr.bf16_base = strcmp(optarg, "bf16") == 0;
            break;
        case OPT_COMPUTE:
            if (strcmp(optarg, "f32") != 0 && strcmp(optarg, "bf16") != 0) {
                whet_error("bench: --compute wants f32 or bf16, not '%s'", optarg);
                return WHET_EXIT_ERROR;
            }
            tr.compute_bf16 = strcmp(optarg, "bf16") == 0;
            break;
        case OPT_BATCH:
            if (cli_parse_size("bench", "--batch-size", optarg, 1, 65536, &tr.batch))
                return WHET_EXIT_ERROR;
            break;
        case OPT_STEPS:
            if (cli_parse_size("bench", "--steps", optarg, 1, 100000, &tr.steps))
                return WHET_EXIT_ERROR;
            break;
        case OPT_RANK:
            if (cli_parse_size("bench", "--lora-rank", optarg, 1, 4096, &tr.rank))
                return WHET_EXIT_ERROR;
            break;
        case OPT_SHAPE:
            if (strcmp(optarg, "smollm-135m") != 0) {
                whet_error("bench: --shape wants smollm-135m (other shapes: --hidden, --layers, ...), not '%s'",
                           optarg);
                return WHET_EXIT_ERROR;
            }
            break;
        case OPT_HIDDEN:
        case OPT_LAYERS:
        case OPT_HEADS:
        case OPT_KV_HEADS:
        case OPT_FFN:
        case OPT_VOCAB: {
            size_t *dims[] = {&tr.hidden, &tr.layers, &tr.heads, &tr.kv_heads, &tr.ffn, &tr.vocab};
            const char *names[] = {"--hidden", "--layers", "--heads", "--kv-heads", "--ffn", "--vocab"};
            int i = opt - OPT_HIDDEN;
            if (cli_parse_size("bench", names[i], optarg, 1, (size_t)1 << 24, dims[i]))
                return WHET_EXIT_ERROR;
            break;
        }
        case OPT_TORCH: tr.torch = optarg; break;
        case OPT_NO_TORCH: tr.torch = NULL; break;
        case OPT_SWEEP: tr.sweep = 1; break;
        case OPT_PROFILE: tr.profile = 1; break;
        case OPT_CHECKPOINT: tr.checkpoint = 1; break;
        case OPT_PEAK:
            if (cli_parse_double("bench", "--peak", optarg, 0.001, 1e6, &tr.peak_gflops))
                return WHET_EXIT_ERROR;
            break;
        case 'i': isa_name = optarg; break;
        case 't':
            threads = (int)strtol(optarg, &end, 10);
            if (*end || threads < 1 || threads > 4096) {
                whet_error("bench: --threads wants a positive integer, not '%s'", optarg);
                return WHET_EXIT_ERROR;
            }
            break;
        case 'r':
            b.timing.repeat = (int)strtol(optarg, &end, 10);
            if (*end || b.timing.repeat < 1 || b.timing.repeat > 1000) {
                whet_error("bench: --repeat wants an integer from 1 to 1000, not '%s'", optarg);
                return WHET_EXIT_ERROR;
            }
            break;
        case 's':
            b.timing.seconds = strtod(optarg, &end);
            if (*end || !(b.timing.seconds >= 0 && b.timing.seconds <= 3600)) {
                whet_error("bench: --seconds wants a number from 0 to 3600, not '%s'", optarg);
                return WHET_EXIT_ERROR;
            }
            break;
        case 'c': b.timing.clock = process_cpu_seconds; break;
        case 'T': {
            long long n = strtoll(optarg, &end, 10);
            if (*end || n < 1 || n > 1000000) {
                whet_error("bench: --seq-len wants an integer from 1 to 1000000, not '%s'", optarg);
                return WHET_EXIT_ERROR;
            }
            b.seq_len = (size_t)n;
            break;
        }
        case 'k': b.tokenizer = optarg; break;
        case 'j': b.json = 1; break;
        default: break;
        }
    }
    if (parser.exit >= 0)
        return parser.exit;
    enum { RUN_GEMM = 1, RUN_FORWARD = 2, RUN_TOKENIZE = 4, RUN_TRAIN = 8 };
    int run = 0;
    for (; optind < argc; optind++) {
        if (strcmp(argv[optind], "gemm") == 0)
            run |= RUN_GEMM;
        else if (strcmp(argv[optind], "forward") == 0)
            run |= RUN_FORWARD;
        else if (strcmp(argv[optind], "tokenize") == 0)
            run |= RUN_TOKENIZE;
        else if (strcmp(argv[optind], "train") == 0)
            run |= RUN_TRAIN;
        else {
            whet_error("bench: no benchmark '%s' (there are: gemm, forward, tokenize, train)", argv[optind]);
            return WHET_EXIT_ERROR;
        }
    }
    if (!run)
        run = RUN_GEMM | RUN_FORWARD | RUN_TOKENIZE;
    if (b.seq_len)
        tr.seq_len = b.seq_len;
    else
        b.seq_len = 512;

    if (isa_name) {
        int isa = whet_isa_from_name(isa_name);
        if (isa < 0) {
            whet_error("bench: unknown --isa '%s' (expected scalar, avx2, avx512 or neon)", isa_name);
            return WHET_EXIT_ERROR;
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
        return WHET_EXIT_ERROR;
    }
    int status = WHET_EXIT_ERROR;
    for (int i = 0; i < b.nisas && run != RUN_TRAIN; i++) {
        b.compute[i] = whet_compute_create(b.isas[i], b.threads);
        if (!b.compute[i])
            goto done;
        if (run & RUN_GEMM)
            b.peak[i] = cli_measure_fma_peak_by(b.isas[i], b.timing.clock);
    }
    status = WHET_EXIT_OK;
    if (run == RUN_TRAIN)
        goto train; /* no other benchmark's threads while the training runs fork */
    if (run & RUN_GEMM) {
        openblas_open(&b.ob, b.threads);
        status = bench_gemm(&b);
    }
    if (status == WHET_EXIT_OK && (run & RUN_FORWARD)) {
        if (!b.json && (run & RUN_GEMM))
            printf("\n");
        status = bench_forward(&b);
    }
    if (status == WHET_EXIT_OK && (run & RUN_TOKENIZE)) {
        if (!b.json && (run & (RUN_GEMM | RUN_FORWARD)))
            printf("\n");
        status = bench_tokenize(&b);
    }
train:
    for (int i = 0; i < b.nisas; i++)
        whet_compute_destroy(b.compute[i]), b.compute[i] = NULL;
    if (status == WHET_EXIT_OK && (run & RUN_TRAIN)) {
        if (!b.json && (run & (RUN_GEMM | RUN_FORWARD | RUN_TOKENIZE)))
            printf("\n");
        tr.kernels = b.isas[b.nisas - 1]; /* --isa's, else the highest level this CPU runs */
        tr.threads = b.threads;
        tr.json = b.json;
        status = bench_train(&tr);
    }
done:
    for (int i = 0; i < b.nisas; i++)
        whet_compute_destroy(b.compute[i]);
    if (b.ob.handle)
        dlclose(b.ob.handle);
    return status;
}
