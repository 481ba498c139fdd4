/* whet bench train: whole optimizer steps — forward, the fused LM head +
 * cross-entropy, backward, global-norm clipping and AdamW — on a randomly
 * initialised Llama-shaped model and random tokens, timed end to end, next to
 * the PyTorch baseline on the same shape and thread count.
 *
 * Each measurement runs in a child process (fork) so that its peak resident
 * memory (getrusage ru_maxrss) is its own; the child sends its memory plan
 * (the bytes it allocated before the first step) and then its figures back
 * through a pipe. The PyTorch script runs as another child, its one JSON line
 * read from its output.
 *
 * Model FLOPs per step (what MFU counts; tokens = B·T):
 *   N      = the matmul parameters: every layer's q, k, v, o, gate, up, down
 *            plus the LM head V·C (tied: the embedding counted once, as the head)
 *   attn   = 6·L·QD·T·(T+1)·B: the forward's QKᵀ and P·V over the T(T+1)/2
 *            causal (query, key) pairs, 2·QD FLOPs each, = 2·QD·T(T+1) per layer
 *            and sequence, and a backward of twice that
 *   full   = 6·N·tokens + attn
 *   LoRA   = 4·N·tokens (forward and input gradient of the frozen base, no
 *            weight gradient) + 6·N_adapter·tokens (A and B of every adapted
 *            projection: L·r·(in + out) each) + attn
 * Norms and element-wise work are not counted: MFU is model FLOPs, not
 * hardware FLOPs.
 * MFU = model FLOPs per second / the fp32 FMA peak of the threads running at
 * once, measured in the run's process between its timed steps (or --peak ×
 * threads). */
#include "cli/bench_train.h"

#include "cli/commands.h"
#include "cli/fma_peak.h"
#include "io/json.h"
#include "model/config.h"
#include "model/lora.h"
#include "model/model.h"
#include "train/optim.h"
#include "util/compute.h"
#include "util/log.h"
#include "util/timer.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define LEARNING_RATE 1e-4 /* torch_llama.py's; whet train's default */
#define MAX_GRAD_NORM 1.0  /* whet train's default --grad-clip */
#define LORA_ALPHA_PER_RANK 2.0f /* whet's default alpha 16 at r = 8, and torch_llama.py's scale */

void bench_train_defaults(bench_train_options *o)
{
    memset(o, 0, sizeof *o);
    o->methods = BENCH_TRAIN_LORA;
    o->seq_len = 256, o->batch = 4, o->steps = 3, o->rank = 8;
    o->hidden = 576, o->layers = 30, o->heads = 9, o->kv_heads = 3, o->ffn = 1536, o->vocab = 49152;
    o->torch = BENCH_TRAIN_DEFAULT_TORCH;
}

/* ---- profile: a kernel table whose entries time the real kernels --------------
 *
 * With --profile the compute context runs this table: each entry calls the
 * real kernel and adds its time to the calling thread's slot, under the
 * current phase (set by the step between library calls) and a category. The
 * LM head + cross-entropy runs forward and backward in one call
 * (whet_model_nll_head_backward, as whet train does), timed as the head's
 * forward phase; its backward phase is what the backward pass does before
 * its first norm backward (the final norm's), which marks where the layers
 * start. GEMMs with a
 * dimension equal to the LoRA rank are the adapter's.
 *
 * Kernels are timed by their thread's CPU clock, so that time the thread spent
 * descheduled (other programs on the cores) is not charged to them; each
 * phase also gets its wall time, the process's CPU time and the stepping
 * thread's: the CPU time outside kernels (serial code between them, and
 * threads spinning while they wait for work) and the time the threads were
 * not running at all (asleep waiting, or preempted) follow. */

typedef enum { PH_FORWARD, PH_HEAD_FORWARD, PH_HEAD_BACKWARD, PH_BACKWARD, PH_OPTIMIZER, NPHASES } step_phase;
static const char *const phase_names[NPHASES] = {"forward", "head_ce_forward", "head_ce_backward", "backward",
                                                 "optimizer"};
static const char *const phase_labels[NPHASES] = {"layers forward", "LM head+CE fwd", "LM head+CE bwd",
                                                  "layers backward", "clip+AdamW+zero"};

typedef enum {
    CAT_GEMM,      /* the projections' GEMMs (fp32 or bf16 weights) */
    CAT_GEMM_LORA, /* the adapter's rank-r products: GEMMs and the lowrank kernels */
    CAT_GEMM_HEAD, /* the LM head's GEMMs */
    CAT_ATTENTION, /* attention_forward / attention_backward */
    CAT_CE,        /* cross_entropy_lse_update / cross_entropy_backward */
    CAT_NORM,      /* RMSNorm / LayerNorm forward and backward */
    CAT_ELEMENTWISE, /* SwiGLU, GELU, RoPE, add, axpy, scale, softmax, conversions */
    CAT_OPTIMIZER, /* adamw, sum_squares */
    NCATS
} kernel_category;
static const char *const category_names[NCATS] = {"gemm", "lora_gemm", "head_gemm", "attention",
                                                  "cross_entropy", "norm", "elementwise", "adamw"};

enum { PROFILE_SLOTS = 64 };

typedef struct profile_slot {
    double busy[NPHASES][NCATS];  /* CPU seconds inside kernels */
    double flops[NPHASES][NCATS]; /* GEMM FLOPs */
    char pad[64];                 /* no false sharing between threads' slots */
} profile_slot;

static profile_slot profile_slots[PROFILE_SLOTS];
static atomic_int profile_slots_used;
static _Thread_local int profile_slot_index = -1;
static atomic_int profile_phase;
/* Clocks read at a phase boundary. */
typedef struct phase_clocks {
    double wall, process_cpu, main_cpu, job_idle;
} phase_clocks;

static pthread_t profile_main_thread; /* the stepping thread */
static whet_pool *profile_pool;       /* its pool, measuring idle thread time inside jobs */
static phase_clocks profile_layers_backward_start; /* when the first norm backward ran (wall 0: not yet) */

static double clock_seconds(clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return 0;
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double thread_cpu_now(void)
{
    return clock_seconds(CLOCK_THREAD_CPUTIME_ID);
}

static phase_clocks clocks_now(void)
{
    phase_clocks c = {whet_now(), clock_seconds(CLOCK_PROCESS_CPUTIME_ID), 0,
                      profile_pool ? whet_pool_idle_seconds(profile_pool) : 0};
    clockid_t main_clock;
    if (pthread_getcpuclockid(profile_main_thread, &main_clock) == 0)
        c.main_cpu = clock_seconds(main_clock);
    return c;
}
static const whet_kernels *profile_real;
static whet_kernels profile_table;
static size_t profile_rank;

static profile_slot *profile_my_slot(void)
{
    if (profile_slot_index < 0) {
        int i = atomic_fetch_add(&profile_slots_used, 1);
        profile_slot_index = i < PROFILE_SLOTS ? i : PROFILE_SLOTS - 1; /* --profile allows at most 64 threads */
    }
    return &profile_slots[profile_slot_index];
}

static void profile_add(kernel_category cat, double seconds, double flops)
{
    profile_slot *s = profile_my_slot();
    int ph = atomic_load_explicit(&profile_phase, memory_order_relaxed);
    s->busy[ph][cat] += seconds;
    s->flops[ph][cat] += flops;
}

static void profile_enter_layers_backward(void)
{
    int expected = PH_HEAD_BACKWARD;
    if (atomic_load_explicit(&profile_phase, memory_order_relaxed) == PH_HEAD_BACKWARD &&
        atomic_compare_exchange_strong(&profile_phase, &expected, PH_BACKWARD))
        profile_layers_backward_start = clocks_now();
}

static kernel_category gemm_category(const whet_gemm *g)
{
    if (profile_rank && (g->M == profile_rank || g->N == profile_rank || g->K == profile_rank))
        return CAT_GEMM_LORA;
    int ph = atomic_load_explicit(&profile_phase, memory_order_relaxed);
    return ph == PH_HEAD_FORWARD || ph == PH_HEAD_BACKWARD ? CAT_GEMM_HEAD : CAT_GEMM;
}

static double gemm_flops(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1)
{
    return 2.0 * (double)(m1 - m0) * (double)(n1 - n0) * (double)g->K;
}

static void timed_sgemm(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    double t0 = thread_cpu_now();
    profile_real->sgemm(g, m0, m1, n0, n1, workspace);
    profile_add(gemm_category(g), thread_cpu_now() - t0, gemm_flops(g, m0, m1, n0, n1));
}

static void timed_gemm_bf16(const whet_gemm *g, size_t m0, size_t m1, size_t n0, size_t n1, void *workspace)
{
    double t0 = thread_cpu_now();
    profile_real->gemm_bf16(g, m0, m1, n0, n1, workspace);
    profile_add(gemm_category(g), thread_cpu_now() - t0, gemm_flops(g, m0, m1, n0, n1));
}

#define TIMED(cat, call)                                                                                       \
    do {                                                                                                       \
        double t0_ = thread_cpu_now();                                                                         \
        call;                                                                                                  \
        profile_add(cat, thread_cpu_now() - t0_, 0);                                                           \
    } while (0)

static void timed_f32_to_bf16(whet_bf16 *dst, const float *src, size_t n)
{
    TIMED(CAT_ELEMENTWISE, profile_real->f32_to_bf16(dst, src, n));
}
static void timed_bf16_to_f32(float *dst, const whet_bf16 *src, size_t n)
{
    TIMED(CAT_ELEMENTWISE, profile_real->bf16_to_f32(dst, src, n));
}
static void timed_axpy(float *y, float a, const float *x, size_t n)
{
    TIMED(CAT_ELEMENTWISE, profile_real->axpy(y, a, x, n));
}
static void timed_scale(float *x, float a, size_t n)
{
    TIMED(CAT_ELEMENTWISE, profile_real->scale(x, a, n));
}
static void timed_add(float *y, const float *a, const float *b, size_t n)
{
    TIMED(CAT_ELEMENTWISE, profile_real->add(y, a, b, n));
}
static double timed_sum_squares(const float *x, size_t n)
{
    double t0 = thread_cpu_now();
    double s = profile_real->sum_squares(x, n);
    profile_add(CAT_OPTIMIZER, thread_cpu_now() - t0, 0);
    return s;
}
static void timed_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, size_t rows, size_t n,
                                  float eps)
{
    TIMED(CAT_NORM, profile_real->rmsnorm_forward(y, rstd, x, w, rows, n, eps));
}
static void timed_rmsnorm_backward_input(float *dx, const float *dy, const float *x, const float *w, const float *rstd,
                                         size_t rows, size_t n)
{
    profile_enter_layers_backward();
    TIMED(CAT_NORM, profile_real->rmsnorm_backward_input(dx, dy, x, w, rstd, rows, n));
}
static void timed_rmsnorm_backward_weight(float *dw, const float *dy, const float *x, const float *rstd, size_t rows,
                                          size_t n, size_t c0, size_t c1)
{
    profile_enter_layers_backward();
    TIMED(CAT_NORM, profile_real->rmsnorm_backward_weight(dw, dy, x, rstd, rows, n, c0, c1));
}
static void timed_layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *w, const float *b,
                                    size_t rows, size_t n, float eps)
{
    TIMED(CAT_NORM, profile_real->layernorm_forward(y, mean, rstd, x, w, b, rows, n, eps));
}
static void timed_layernorm_backward_input(float *dx, const float *dy, const float *x, const float *w,
                                           const float *mean, const float *rstd, size_t rows, size_t n)
{
    profile_enter_layers_backward();
    TIMED(CAT_NORM, profile_real->layernorm_backward_input(dx, dy, x, w, mean, rstd, rows, n));
}
static void timed_layernorm_backward_params(float *dw, float *db, const float *dy, const float *x, const float *mean,
                                            const float *rstd, size_t rows, size_t n, size_t c0, size_t c1)
{
    profile_enter_layers_backward();
    TIMED(CAT_NORM, profile_real->layernorm_backward_params(dw, db, dy, x, mean, rstd, rows, n, c0, c1));
}
static void timed_softmax_forward(float *y, const float *x, size_t rows, size_t n)
{
    TIMED(CAT_ELEMENTWISE, profile_real->softmax_forward(y, x, rows, n));
}
static void timed_softmax_backward(float *dx, const float *dy, const float *y, size_t rows, size_t n)
{
    TIMED(CAT_ELEMENTWISE, profile_real->softmax_backward(dx, dy, y, rows, n));
}
static void timed_cross_entropy_lse_update(float *running_max, float *running_sum, const float *logits, size_t ld,
                                           size_t rows, size_t n)
{
    TIMED(CAT_CE, profile_real->cross_entropy_lse_update(running_max, running_sum, logits, ld, rows, n));
}
static void timed_cross_entropy_backward(float *dlogits, const float *logits, size_t ld, size_t rows, size_t n,
                                         size_t vocab_offset, const int32_t *targets, const float *lse,
                                         const float *row_scale)
{
    TIMED(CAT_CE,
          profile_real->cross_entropy_backward(dlogits, logits, ld, rows, n, vocab_offset, targets, lse, row_scale));
}
static void timed_swiglu_forward(float *h, const float *gate, const float *up, size_t n)
{
    TIMED(CAT_ELEMENTWISE, profile_real->swiglu_forward(h, gate, up, n));
}
static void timed_swiglu_backward(float *dgate, float *dup, const float *dh, const float *gate, const float *up,
                                  size_t n)
{
    TIMED(CAT_ELEMENTWISE, profile_real->swiglu_backward(dgate, dup, dh, gate, up, n));
}
static void timed_gelu_forward(float *y, const float *x, size_t n)
{
    TIMED(CAT_ELEMENTWISE, profile_real->gelu_forward(y, x, n));
}
static void timed_gelu_backward(float *dx, const float *dy, const float *x, size_t n)
{
    TIMED(CAT_ELEMENTWISE, profile_real->gelu_backward(dx, dy, x, n));
}
static void timed_rope(float *x, size_t tokens, size_t heads, size_t head_dim, size_t token_stride,
                       const int32_t *positions, const float *cos_table, const float *sin_table,
                       whet_rope_pairing pairing, int inverse)
{
    TIMED(CAT_ELEMENTWISE, profile_real->rope(x, tokens, heads, head_dim, token_stride, positions, cos_table,
                                              sin_table, pairing, inverse));
}
static void timed_adamw(float *param, float *m, float *v, const float *grad, size_t n, const whet_adamw_params *h)
{
    TIMED(CAT_OPTIMIZER, profile_real->adamw(param, m, v, grad, n, h));
}
static void timed_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, size_t n_q,
                                    size_t n_kv, size_t q_offset, size_t heads, size_t kv_heads, size_t head_dim,
                                    size_t q_stride, size_t kv_stride, size_t out_stride, float scale, size_t h0,
                                    size_t h1)
{
    TIMED(CAT_ATTENTION, profile_real->attention_forward(out, lse, q, k, v, n_q, n_kv, q_offset, heads, kv_heads,
                                                         head_dim, q_stride, kv_stride, out_stride, scale, h0, h1));
}
static void timed_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                     const float *lse, const float *q, const float *k, const float *v, size_t n_q,
                                     size_t n_kv, size_t q_offset, size_t heads, size_t kv_heads, size_t head_dim,
                                     size_t q_stride, size_t kv_stride, size_t out_stride, float scale, size_t g0,
                                     size_t g1)
{
    TIMED(CAT_ATTENTION,
          profile_real->attention_backward(dq, dk, dv, dout, out, lse, q, k, v, n_q, n_kv, q_offset, heads, kv_heads,
                                           head_dim, q_stride, kv_stride, out_stride, scale, g0, g1));
}
static void timed_lowrank_project(float *y, size_t ldy, const float *x, size_t ldx, const float *w, size_t ldw,
                                  size_t rows, size_t r, size_t K, float scale)
{
    double t0 = thread_cpu_now();
    profile_real->lowrank_project(y, ldy, x, ldx, w, ldw, rows, r, K, scale);
    profile_add(CAT_GEMM_LORA, thread_cpu_now() - t0, 2.0 * (double)rows * (double)r * (double)K);
}
static void timed_lowrank_weight_grad(float *dw, size_t ldw, const float *g, size_t ldg, const float *x, size_t ldx,
                                      size_t rows, size_t r, size_t c0, size_t c1, int accumulate)
{
    double t0 = thread_cpu_now();
    profile_real->lowrank_weight_grad(dw, ldw, g, ldg, x, ldx, rows, r, c0, c1, accumulate);
    profile_add(CAT_GEMM_LORA, thread_cpu_now() - t0, 2.0 * (double)rows * (double)r * (double)(c1 - c0));
}
#undef TIMED

/* The timed table over `real`; rank: the adapter's (0: none). */
static const whet_kernels *profile_install(const whet_kernels *real, size_t rank)
{
    profile_real = real;
    profile_rank = rank;
    profile_table = *real;
    profile_table.sgemm = timed_sgemm;
    profile_table.gemm_bf16 = timed_gemm_bf16;
    profile_table.f32_to_bf16 = timed_f32_to_bf16;
    profile_table.bf16_to_f32 = timed_bf16_to_f32;
    profile_table.axpy = timed_axpy;
    profile_table.scale = timed_scale;
    profile_table.add = timed_add;
    profile_table.sum_squares = timed_sum_squares;
    profile_table.rmsnorm_forward = timed_rmsnorm_forward;
    profile_table.rmsnorm_backward_input = timed_rmsnorm_backward_input;
    profile_table.rmsnorm_backward_weight = timed_rmsnorm_backward_weight;
    profile_table.layernorm_forward = timed_layernorm_forward;
    profile_table.layernorm_backward_input = timed_layernorm_backward_input;
    profile_table.layernorm_backward_params = timed_layernorm_backward_params;
    profile_table.softmax_forward = timed_softmax_forward;
    profile_table.softmax_backward = timed_softmax_backward;
    profile_table.cross_entropy_lse_update = timed_cross_entropy_lse_update;
    profile_table.cross_entropy_backward = timed_cross_entropy_backward;
    profile_table.swiglu_forward = timed_swiglu_forward;
    profile_table.swiglu_backward = timed_swiglu_backward;
    profile_table.gelu_forward = timed_gelu_forward;
    profile_table.gelu_backward = timed_gelu_backward;
    profile_table.rope = timed_rope;
    profile_table.adamw = timed_adamw;
    profile_table.attention_forward = timed_attention_forward;
    profile_table.attention_backward = timed_attention_backward;
    profile_table.lowrank_project = timed_lowrank_project;
    profile_table.lowrank_weight_grad = timed_lowrank_weight_grad;
    return &profile_table;
}

/* Called by the stepping thread only, while the pool is idle. */
static void profile_reset(void)
{
    for (int i = 0; i < PROFILE_SLOTS; i++)
        memset(profile_slots[i].busy, 0, sizeof profile_slots[i].busy),
            memset(profile_slots[i].flops, 0, sizeof profile_slots[i].flops);
}

static void profile_set_phase(step_phase ph)
{
    atomic_store(&profile_phase, (int)ph);
}

/* ---- one measurement, in a child process ------------------------------------- */

typedef struct train_case {
    int full;      /* full fine-tuning, else LoRA */
    int bf16_base; /* LoRA with the base in bf16 */
    int bf16_compute; /* full: --compute bf16 (bf16 shadows of the weights) */
    size_t B, T;
} train_case;

/* The child's memory plan, sent before its first step: bytes of what it
 * allocated for training (its estimate of the resident memory). */
typedef struct train_plan {
    int ok;
    char error[1024];
    double init_s;
    size_t weights;     /* fp32 parameters (after a bf16 base released its fp32 copies) */
    size_t base_bf16;   /* the frozen linear weights as bf16, or (full, --compute bf16) the shadows */
    size_t adapter;     /* LoRA A and B */
    size_t grads;       /* base gradients (full) or the adapter's */
    size_t optimizer;   /* AdamW m and v */
    size_t activations; /* whet_acts: kept activations, backward buffers, adapter scratch */
    size_t other;       /* tokens, targets, GEMM workspaces, RoPE tables, LoRA work rows */
    size_t total;
    size_t trainable;   /* trainable parameters */
    size_t rss_setup;   /* peak RSS (bytes) after setup, before the first step */
} train_plan;

typedef struct train_result {
    int ok;
    char error[1024];
    double step_median, step_best; /* seconds per optimizer step */
    double loss_first, loss_last;  /* mean NLL of the warm-up step and of the last */
    size_t peak_rss;               /* bytes */
    double cpu_share;              /* the process's CPU time over threads × wall time, timed steps: below 1
                                    * when other programs took the cores (or threads waited) */
    double peak_together;          /* GFLOP/s: the FMA peak of all threads at once, the median of the
                                    * measurements before the first timed step and after each; 0 with --peak */
    /* --profile: per timed step */
    double phase_wall[NPHASES];
    double phase_cpu[NPHASES];      /* the process's CPU time */
    double phase_main_cpu[NPHASES]; /* the stepping thread's CPU time */
    double phase_job_idle[NPHASES]; /* thread time inside pool jobs on no task (whet_pool_idle_seconds) */
    double busy[NPHASES][NCATS];    /* CPU seconds inside kernels, all threads */
    double flops[NPHASES][NCATS];   /* GEMM FLOPs */
    double main_busy[NPHASES];      /* the stepping thread's share of busy */
    int threads_seen;             /* threads that ran a kernel */
} train_result;

static size_t peak_rss_bytes(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (size_t)ru.ru_maxrss * 1024; /* Linux and the BSDs: KiB */
}

static double cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec * 1e-6;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w, n -= (size_t)w;
    }
    return 0;
}

/* 0: all n bytes; 1: end of file first; -1: error */
static int read_all(int fd, void *p, size_t n)
{
    char *c = p;
    while (n) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            return 1;
        c += r, n -= (size_t)r;
    }
    return 0;
}

static int config_for(const bench_train_options *o, size_t T, whet_model_config *cfg, whet_err *e)
{
    char json[512];
    snprintf(json, sizeof json,
             "{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":%zu,\"hidden_size\":%zu,"
             "\"num_hidden_layers\":%zu,\"num_attention_heads\":%zu,\"num_key_value_heads\":%zu,"
             "\"intermediate_size\":%zu,\"tie_word_embeddings\":true,\"rope_theta\":10000.0,\"rms_norm_eps\":1e-05,"
             "\"max_position_embeddings\":%zu}",
             o->vocab, o->hidden, o->layers, o->heads, o->kv_heads, o->ffn, T > 2048 ? T : (size_t)2048);
    return whet_config_parse(cfg, json, strlen(json), "the benchmark's model shape", e);
}

typedef struct trainer {
    const bench_train_options *o;
    train_case tc;
    whet_compute *compute;
    whet_model *m;
    whet_lora *lora;
    whet_acts *acts;
    whet_model_grads *grads;
    whet_optim *optim;
    int32_t *tokens, *targets;
    int profile;
} trainer;

static void trainer_free(trainer *t)
{
    whet_optim_free(t->optim);
    whet_model_grads_free(t->grads);
    whet_acts_free(t->acts);
    if (t->lora)
        whet_lora_free(t->m, t->lora);
    whet_model_free(t->m);
    whet_compute_destroy(t->compute);
    free(t->tokens), free(t->targets);
}

/* The trainable tensors as the optimizer's parameter groups (weight decay
 * off for norms, as whet train groups them; the default decay is 0 anyway). */
static int trainer_optimizer(trainer *t, whet_err *e)
{
    enum { MAX_TENSORS = 2 * WHET_LIN_COUNT + WHET_MAX_GRAD_RANGES };
    whet_param_tensor tensors[MAX_TENSORS];
    size_t n = 0;
    memset(tensors, 0, sizeof tensors);
    if (t->tc.full) {
        whet_grad_range ranges[WHET_MAX_GRAD_RANGES];
        size_t count = whet_model_grads_ranges(t->m, t->grads, ranges, WHET_MAX_GRAD_RANGES);
        if (count > WHET_MAX_GRAD_RANGES)
            return whet_fail(e, "bench train: %zu gradient ranges, more than %d", count, WHET_MAX_GRAD_RANGES);
        for (size_t i = 0; i < count; i++, n++) {
            whet_param_tensor *p = &tensors[n];
            snprintf(p->name, sizeof p->name, "%s", ranges[i].name);
            p->param = ranges[i].param, p->grad = ranges[i].grad, p->n = ranges[i].n;
            p->decay = strstr(ranges[i].name, "ln") == NULL && strstr(ranges[i].name, "norm") == NULL;
            p->rank = 1, p->shape[0] = (int64_t)ranges[i].n;
            p->shadow = whet_model_bf16_shadow(t->m, p->param, p->n);
        }
    } else {
        const whet_lora *l = t->lora;
        for (int id = 0; id < WHET_LIN_COUNT; id++) {
            if (!l->A[id])
                continue;
            size_t r = l->opt.rank, L = l->layers;
            whet_param_tensor *a = &tensors[n++], *b = &tensors[n++];
            snprintf(a->name, sizeof a->name, "lora_A.%s", whet_linear_name((whet_linear_id)id));
            snprintf(b->name, sizeof b->name, "lora_B.%s", whet_linear_name((whet_linear_id)id));
            a->param = l->A[id], a->grad = l->dA[id], a->n = L * r * l->in[id], a->decay = 1;
            b->param = l->B[id], b->grad = l->dB[id], b->n = L * l->out[id] * r, b->decay = 1;
            a->rank = b->rank = 3;
            a->shape[0] = b->shape[0] = (int64_t)L;
            a->shape[1] = (int64_t)r, a->shape[2] = (int64_t)l->in[id];
            b->shape[1] = (int64_t)l->out[id], b->shape[2] = (int64_t)r;
        }
    }
    whet_adamw_config cfg = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0,
                             .max_grad_norm = MAX_GRAD_NORM};
    return whet_optim_create(&t->optim, tensors, n, &cfg, e);
}

static int trainer_setup(trainer *t, train_plan *plan, whet_err *e)
{
    const bench_train_options *o = t->o;
    size_t B = t->tc.B, T = t->tc.T, BT = B * T;
    whet_model_config cfg;
    if (config_for(o, T, &cfg, e))
        return -1;
    const whet_kernels *k = o->kernels;
    if (t->profile)
        k = profile_install(k, t->tc.full ? 0 : o->rank);
    t->compute = whet_compute_create(k, o->threads);
    if (!t->compute)
        return whet_fail(e, "bench train: cannot start %d threads", o->threads);
    double t0 = whet_now();
    if (whet_model_init(&t->m, &cfg, t->compute, 1, e))
        return -1;
    if (!t->tc.full) {
        whet_lora_options lo = {.rank = o->rank, .alpha = LORA_ALPHA_PER_RANK * (float)o->rank, .dropout = 0,
                                .targets = WHET_LORA_ALL_TARGETS, .seed = 1};
        if (!(t->lora = whet_lora_create(t->m, &lo, e)) || whet_lora_alloc_grads(t->lora, e) ||
            whet_lora_reserve(t->lora, BT, e))
            return -1;
        t->lora->training = 1;
        if (t->tc.bf16_base && whet_model_base_to_bf16(t->m, e))
            return -1;
    } else {
        whet_train_selection sel = {.full = 1};
        if (!(t->grads = whet_model_grads_create(t->m, &sel, e)))
            return -1;
        if (t->tc.bf16_compute && whet_model_compute_bf16(t->m, e))
            return -1;
    }
    int mode = o->checkpoint ? WHET_ACTS_CHECKPOINT : WHET_ACTS_KEEP;
    if (!(t->acts = whet_acts_create(t->m, B, T, mode, e)) || trainer_optimizer(t, e))
        return -1;
    t->tokens = malloc(BT * sizeof *t->tokens);
    t->targets = malloc(BT * sizeof *t->targets);
    if (!t->tokens || !t->targets)
        return whet_fail(e, "bench train: out of memory for %zu tokens", BT);
    uint64_t state = 20240229;
    for (size_t i = 0; i < 2 * BT; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        int32_t id = (int32_t)((state >> 33) % cfg.vocab);
        if (i < BT)
            t->tokens[i] = id;
        else
            t->targets[i - BT] = id; /* random targets, as torch_llama.py draws them */
    }
    plan->init_s = whet_now() - t0;
    plan->weights = t->m->num_params * sizeof(float);
    plan->base_bf16 = whet_model_base_bf16_bytes(t->m);
    plan->adapter = t->lora ? t->lora->floats * sizeof(float) : 0;
    plan->grads = t->grads ? t->grads->floats * sizeof(float) : plan->adapter;
    plan->optimizer = t->optim->state_floats * sizeof(float);
    plan->activations = t->acts->floats * sizeof(float);
    plan->other = 2 * BT * sizeof(int32_t) + (size_t)o->threads * k->gemm_workspace_bytes +
                  t->m->rope_len * cfg.head_dim * sizeof(float) +
                  (t->lora ? whet_lora_work_bytes(t->lora) : 0);
    plan->total = plan->weights + plan->base_bf16 + plan->adapter + plan->grads + plan->optimizer +
                  plan->activations + plan->other;
    plan->trainable = whet_optim_param_floats(t->optim);
    plan->rss_setup = peak_rss_bytes();
    return 0;
}

/* One optimizer step; r->loss_last: the mean NLL of its forward. */
static int trainer_step(trainer *t, train_result *r, whet_err *e)
{
    size_t BT = t->tc.B * t->tc.T;
    phase_clocks at[NPHASES + 1]; /* at[ph]: the start of phase ph; at[NPHASES]: the end */
    int profile = t->profile;
    if (t->lora)
        t->lora->step++;
    profile_set_phase(PH_FORWARD);
    if (profile)
        at[PH_FORWARD] = clocks_now();
    if (whet_model_forward(t->m, t->acts, t->tokens, t->tc.B, t->tc.T, e))
        return -1;
    profile_set_phase(PH_HEAD_FORWARD);
    if (profile)
        at[PH_HEAD_FORWARD] = clocks_now();
    double loss;
    if (whet_model_nll_head_backward(t->m, t->acts, t->targets, 1.0f / (float)BT, t->grads, &loss, e))
        return -1;
    profile_set_phase(PH_HEAD_BACKWARD);
    if (profile)
        at[PH_HEAD_BACKWARD] = clocks_now();
    profile_layers_backward_start.wall = 0;
    if (whet_model_backward(t->m, t->acts, t->targets, 1.0f / (float)BT, t->grads, e))
        return -1;
    profile_set_phase(PH_OPTIMIZER);
    if (profile) {
        at[PH_OPTIMIZER] = clocks_now();
        at[PH_BACKWARD] = profile_layers_backward_start.wall > 0 ? profile_layers_backward_start : at[PH_OPTIMIZER];
    }
    double norm = whet_optim_grad_norm(t->optim, t->compute);
    whet_optim_step(t->optim, t->compute, LEARNING_RATE, whet_optim_clip_scale(t->optim, norm));
    whet_optim_zero_grads(t->optim, t->compute);
    r->loss_last = loss;
    if (!profile)
        return 0;
    at[NPHASES] = clocks_now();
    for (int ph = 0; ph < NPHASES; ph++) {
        int next = ph == PH_HEAD_BACKWARD ? PH_BACKWARD : ph == PH_BACKWARD ? PH_OPTIMIZER : ph + 1;
        r->phase_wall[ph] += at[next].wall - at[ph].wall;
        r->phase_cpu[ph] += at[next].process_cpu - at[ph].process_cpu;
        r->phase_main_cpu[ph] += at[next].main_cpu - at[ph].main_cpu;
        r->phase_job_idle[ph] += at[next].job_idle - at[ph].job_idle;
    }
    return 0;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v[0..n) (n ≥ 1) and returns its median. */
static double sort_median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, compare_doubles);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void run_case_child(const bench_train_options *o, const train_case *tc, int fd)
{
    trainer t = {.o = o, .tc = *tc, .profile = o->profile};
    profile_main_thread = pthread_self();
    train_plan plan;
    train_result res;
    memset(&plan, 0, sizeof plan);
    memset(&res, 0, sizeof res);
    whet_err e = {{0}};
    int setup = trainer_setup(&t, &plan, &e);
    plan.ok = setup == 0;
    if (!plan.ok)
        snprintf(plan.error, sizeof plan.error, "%s", e.msg);
    if (write_all(fd, &plan, sizeof plan) || !plan.ok)
        goto done;
    double *times = calloc(o->steps, sizeof *times), *peaks = calloc(o->steps + 1, sizeof *peaks);
    if (!times || !peaks) {
        snprintf(res.error, sizeof res.error, "bench train: out of memory");
        goto send;
    }
    if (trainer_step(&t, &res, &e)) /* warm-up: pages touched, caches and branch predictors filled */
        goto failed;
    res.loss_first = res.loss_last;
    memset(res.phase_wall, 0, sizeof res.phase_wall);
    memset(res.phase_cpu, 0, sizeof res.phase_cpu);
    memset(res.phase_main_cpu, 0, sizeof res.phase_main_cpu);
    memset(res.phase_job_idle, 0, sizeof res.phase_job_idle);
    profile_reset();
    if (o->profile) {
        profile_pool = t.compute->pool;
        whet_pool_measure_idle(profile_pool, 1);
    }
    /* MFU's denominator is measured here, between the timed steps, so that it
     * sees the machine as the steps do: on a shared host the FMA rate the
     * cores give moves by 10-20 % from minute to minute. */
    int measure_peak = !(o->peak_gflops > 0);
    if (measure_peak)
        peaks[0] = cli_measure_fma_peak_together(o->kernels, t.compute->pool);
    double cpu_steps = 0, wall_steps = 0;
    for (size_t s = 0; s < o->steps; s++) {
        double cpu0 = cpu_seconds(), t0 = whet_now();
        if (trainer_step(&t, &res, &e))
            goto failed;
        times[s] = whet_now() - t0;
        cpu_steps += cpu_seconds() - cpu0, wall_steps += times[s];
        if (measure_peak)
            peaks[s + 1] = cli_measure_fma_peak_together(o->kernels, t.compute->pool);
    }
    res.cpu_share = cpu_steps / (wall_steps * o->threads);
    if (measure_peak) {
        res.peak_together = sort_median(peaks, o->steps + 1);
    }
    res.step_median = sort_median(times, o->steps);
    res.step_best = times[0];
    res.peak_rss = peak_rss_bytes();
    for (int ph = 0; ph < NPHASES; ph++) {
        res.phase_wall[ph] /= (double)o->steps;
        res.phase_cpu[ph] /= (double)o->steps;
        res.phase_main_cpu[ph] /= (double)o->steps;
        res.phase_job_idle[ph] /= (double)o->steps;
        for (int cat = 0; cat < NCATS; cat++)
            for (int i = 0; i < PROFILE_SLOTS; i++) {
                res.busy[ph][cat] += profile_slots[i].busy[ph][cat] / (double)o->steps;
                res.flops[ph][cat] += profile_slots[i].flops[ph][cat] / (double)o->steps;
                if (i == profile_slot_index)
                    res.main_busy[ph] += profile_slots[i].busy[ph][cat] / (double)o->steps;
            }
    }
    res.threads_seen = atomic_load(&profile_slots_used);
    res.ok = 1;
    goto send;
failed:
    snprintf(res.error, sizeof res.error, "%s", e.msg);
send:
    free(times);
    free(peaks);
    write_all(fd, &res, sizeof res);
done:
    trainer_free(&t);
}

/* Runs one case in a child process. Returns 0 with *plan and *res filled
 * (res->ok or res->error telling how it went), -1 when no child ran.
 * show_plan: print the plan as soon as it arrives (before the steps run). */
static int run_case(const bench_train_options *o, const train_case *tc, train_plan *plan, train_result *res,
                    void (*show_plan)(const bench_train_options *, const train_case *, const train_plan *))
{
    memset(plan, 0, sizeof *plan);
    memset(res, 0, sizeof *res);
    int fds[2];
    if (pipe(fds) != 0) {
        whet_error("bench train: pipe: %s", strerror(errno));
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        whet_error("bench train: fork: %s", strerror(errno));
        close(fds[0]), close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        run_case_child(o, tc, fds[1]);
        close(fds[1]);
        _exit(0);
    }
    close(fds[1]);
    int got = read_all(fds[0], plan, sizeof *plan);
    if (got == 0 && plan->ok) {
        if (show_plan)
            show_plan(o, tc, plan);
        got = read_all(fds[0], res, sizeof *res);
    } else if (got == 0)
        snprintf(res->error, sizeof res->error, "%s", plan->error);
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (got != 0 && !res->error[0]) {
        if (WIFSIGNALED(status))
            snprintf(res->error, sizeof res->error, "the benchmark's process died of signal %d%s",
                     WTERMSIG(status), WTERMSIG(status) == 9 ? " (out of memory?)" : "");
        else
            snprintf(res->error, sizeof res->error, "the benchmark's process ended without its figures (status %d)",
                     WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        res->ok = 0;
    }
    return 0;
}

/* ---- the PyTorch baseline ------------------------------------------------------ */

typedef struct torch_result {
    int ok;
    char note[320];  /* why it did not run, when !ok */
    char peer[64];   /* "pytorch-1.13.0" */
    double tokens_per_s, step_s, peak_rss_mib, final_loss;
    double cpu_share; /* its CPU time over threads × its wall time, over the whole run (start-up included) */
} torch_result;

static double json_number(const whet_json *v, const char *key)
{
    const whet_json *x = whet_json_get(v, key);
    if (!x || x->type != WHET_JSON_NUMBER)
        return NAN;
    return x->u.number.value;
}

/* The last line of text[0..len) that starts with '{', or of any kind (for a note). */
static void last_line(const char *text, size_t len, int json_only, const char **line, size_t *line_len)
{
    *line = NULL, *line_len = 0;
    size_t end = len;
    while (end > 0) {
        while (end > 0 && (text[end - 1] == '\n' || text[end - 1] == '\r'))
            end--;
        size_t start = end;
        while (start > 0 && text[start - 1] != '\n')
            start--;
        if (end > start && (!json_only || text[start] == '{')) {
            *line = text + start, *line_len = end - start;
            return;
        }
        end = start;
    }
}

/* 1 when needle occurs in text[0..len) */
static int contains(const char *text, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(text + i, needle, n) == 0)
            return 1;
    return 0;
}

static double children_cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_CHILDREN, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec * 1e-6;
}

static void run_torch(const bench_train_options *o, size_t B, size_t T, int lora, torch_result *r)
{
    static const char python[] = "/usr/bin/python3";
    memset(r, 0, sizeof *r);
    if (access(o->torch, R_OK) != 0) {
        snprintf(r->note, sizeof r->note, "skipped: no baseline script at %s (--torch PATH names one)", o->torch);
        return;
    }
    if (access(python, X_OK) != 0) {
        snprintf(r->note, sizeof r->note, "skipped: %s is not installed", python);
        return;
    }
    char args[11][24];
    size_t values[11] = {o->hidden, o->layers, o->heads, o->kv_heads, o->ffn, o->vocab, T, B, o->steps,
                         lora ? o->rank : 0, (size_t)o->threads};
    static const char *const flags[11] = {"--hidden", "--layers", "--heads", "--kv-heads", "--ffn", "--vocab",
                                          "--seq", "--batch", "--steps", "--lora", "--threads"};
    char *argv[2 + 2 * 11 + 1];
    int argc = 0;
    argv[argc++] = (char *)python;
    argv[argc++] = (char *)o->torch;
    for (int i = 0; i < 11; i++) {
        snprintf(args[i], sizeof args[i], "%zu", values[i]);
        argv[argc++] = (char *)flags[i];
        argv[argc++] = args[i];
    }
    argv[argc] = NULL;
    int fds[2];
    if (pipe(fds) != 0) {
        snprintf(r->note, sizeof r->note, "skipped: pipe: %s", strerror(errno));
        return;
    }
    fflush(stdout);
    fflush(stderr);
    double cpu0 = children_cpu_seconds(), wall0 = whet_now();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(r->note, sizeof r->note, "skipped: fork: %s", strerror(errno));
        close(fds[0]), close(fds[1]);
        return;
    }
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]), close(fds[1]);
        execv(python, argv);
        _exit(127);
    }
    close(fds[1]);
    enum { KEEP = 1 << 16 }; /* the output's last 64 KiB: the JSON line and any traceback's end */
    char *out = malloc(2 * KEEP);
    size_t len = 0;
    char chunk[4096];
    for (;;) {
        ssize_t n = read(fds[0], chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (!out)
            continue;
        if (len + (size_t)n > 2 * KEEP) {
            memmove(out, out + len - KEEP, KEEP);
            len = KEEP;
        }
        memcpy(out + len, chunk, (size_t)n);
        len += (size_t)n;
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    r->cpu_share = (children_cpu_seconds() - cpu0) / ((whet_now() - wall0) * o->threads);
    const char *line = NULL;
    size_t line_len = 0;
    if (out)
        last_line(out, len, 1, &line, &line_len);
    whet_json_doc *doc = NULL;
    whet_err e;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && line &&
        whet_json_parse(&doc, line, line_len, "torch_llama.py's output", NULL, &e) == 0) {
        const whet_json *root = whet_json_root(doc);
        r->tokens_per_s = json_number(root, "tokens_per_s");
        r->step_s = json_number(root, "step_s");
        r->peak_rss_mib = json_number(root, "peak_rss_mib");
        r->final_loss = json_number(root, "final_loss");
        const char *peer = whet_json_string(whet_json_get(root, "peer"));
        snprintf(r->peer, sizeof r->peer, "%s", peer ? peer : "pytorch");
        r->ok = r->tokens_per_s > 0;
        if (!r->ok)
            snprintf(r->note, sizeof r->note, "skipped: its JSON line has no tokens_per_s");
        whet_json_free(doc);
    } else {
        if (out)
            last_line(out, len, 0, &line, &line_len);
        int no_torch = line && contains(line, line_len, "torch") &&
                       (contains(line, line_len, "No module") || contains(line, line_len, "ImportError"));
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (no_torch)
            snprintf(r->note, sizeof r->note, "skipped: `import torch` failed (%.*s)", (int)(line_len > 200 ? 200 : line_len), line);
        else if (WIFSIGNALED(status))
            snprintf(r->note, sizeof r->note, "failed: python3 died of signal %d", WTERMSIG(status));
        else
            snprintf(r->note, sizeof r->note, "failed: python3 exited with %d%s%.*s", code, line ? ": " : "",
                     line ? (int)(line_len > 200 ? 200 : line_len) : 0, line ? line : "");
    }
    free(out);
}

/* ---- the report ------------------------------------------------------------------ */

typedef struct case_report {
    train_case tc;
    train_plan plan;
    train_result res;
    torch_result torch;
    int torch_run;     /* the baseline was attempted */
    double flops;      /* model FLOPs per step */
} case_report;

static double model_flops(const bench_train_options *o, const train_case *tc)
{
    double C = (double)o->hidden, F = (double)o->ffn, L = (double)o->layers, V = (double)o->vocab;
    double HD = (double)(o->hidden / o->heads), QD = (double)o->heads * HD, KVD = (double)o->kv_heads * HD;
    double T = (double)tc->T, tokens = (double)tc->B * T;
    double n_matmul = L * (C * QD + 2 * C * KVD + QD * C + 3 * C * F) + V * C;
    double attention = 6 * L * QD * T * (T + 1) * (double)tc->B;
    if (tc->full)
        return 6 * n_matmul * tokens + attention;
    double r = (double)o->rank;
    double n_adapter = L * r * ((C + QD) + 2 * (C + KVD) + (QD + C) + 2 * (C + F) + (F + C));
    return 4 * n_matmul * tokens + 6 * n_adapter * tokens + attention;
}

static double mib(size_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

static const char *case_name(const bench_train_options *o, const train_case *tc, char *buf, size_t size)
{
    if (tc->full)
        snprintf(buf, size, "full%s", tc->bf16_compute ? " bf16" : "");
    else
        snprintf(buf, size, "lora r=%zu %s", o->rank, tc->bf16_base ? "bf16" : "f32");
    return buf;
}

static void print_plan(const bench_train_options *o, const train_case *tc, const train_plan *p)
{
    if (o->json)
        return;
    char name[48];
    printf("%s, B = %zu × T = %zu: memory plan %.1f MiB = weights %.1f%s + adapter %.1f + gradients %.1f + "
           "AdamW %.1f + activations %.1f + other %.1f (set up in %.1f s, %.3f M trainable); timing %zu steps...\n",
           case_name(o, tc, name, sizeof name), tc->B, tc->T, mib(p->total), mib(p->weights),
           p->base_bf16 ? "" : "", mib(p->adapter), mib(p->grads), mib(p->optimizer), mib(p->activations),
           mib(p->other), p->init_s, (double)p->trainable * 1e-6, o->steps + 1);
    if (p->base_bf16 && tc->full)
        printf("  (weights: %.1f MiB fp32 + %.1f MiB bf16 shadows of the projections and the head)\n",
               mib(p->weights), mib(p->base_bf16));
    else if (p->base_bf16)
        printf("  (weights: %.1f MiB fp32 (embeddings, norms) + %.1f MiB bf16 base)\n", mib(p->weights),
               mib(p->base_bf16));
    fflush(stdout);
}

/* A phase's time outside kernels: the stepping thread's CPU time (serial code,
 * and spinning while it waits for the others), the other threads' CPU time
 * (spinning while they wait for work), and thread time not running at all. */
typedef struct outside_kernels {
    double kernels, main, workers, not_running;
} outside_kernels;

static outside_kernels outside_of(const bench_train_options *o, const train_result *r, int ph)
{
    outside_kernels x = {0, 0, 0, 0};
    for (int cat = 0; cat < NCATS; cat++)
        x.kernels += r->busy[ph][cat];
    x.main = r->phase_main_cpu[ph] - r->main_busy[ph];
    x.workers = (r->phase_cpu[ph] - r->phase_main_cpu[ph]) - (x.kernels - r->main_busy[ph]);
    x.not_running = o->threads * r->phase_wall[ph] - r->phase_cpu[ph];
    return x;
}

static void print_profile_text(const bench_train_options *o, const case_report *c)
{
    const train_result *r = &c->res;
    int threads = o->threads;
    double step = 0;
    for (int ph = 0; ph < NPHASES; ph++)
        step += r->phase_wall[ph];
    printf("  profile per timed step, ms: the wall time of each phase, its CPU time over %d × wall, then CPU time\n"
           "  inside each kind of kernel (all threads), outside kernels on the stepping thread (serial code and\n"
           "  waiting) and on the others (waiting for work), thread time not running (asleep or preempted), and\n"
           "  thread time inside the pool's jobs on no task (threads done with their share waiting for the last):\n",
           threads);
    printf("  %-16s %8s %6s %5s", "phase", "wall", "%", "cpu");
    for (int cat = 0; cat < NCATS; cat++)
        printf(" %9s", category_names[cat]);
    printf(" %8s %8s %8s %8s\n", "serial", "waiting", "not run", "job idle");
    double col[NCATS + 4] = {0}, wall_total = 0, cpu_total = 0;
    for (int ph = 0; ph < NPHASES; ph++) {
        double wall = r->phase_wall[ph];
        outside_kernels x = outside_of(o, r, ph);
        printf("  %-16s %8.1f %5.1f%% %4.0f%%", phase_labels[ph], wall * 1e3, step > 0 ? 100 * wall / step : 0,
               wall > 0 ? 100 * r->phase_cpu[ph] / (threads * wall) : 0);
        for (int cat = 0; cat < NCATS; cat++) {
            printf(" %9.1f", r->busy[ph][cat] * 1e3);
            col[cat] += r->busy[ph][cat];
        }
        col[NCATS] += x.main, col[NCATS + 1] += x.workers, col[NCATS + 2] += x.not_running;
        col[NCATS + 3] += r->phase_job_idle[ph];
        wall_total += wall, cpu_total += r->phase_cpu[ph];
        printf(" %8.1f %8.1f %8.1f %8.1f\n", x.main * 1e3, x.workers * 1e3, x.not_running * 1e3,
               r->phase_job_idle[ph] * 1e3);
    }
    printf("  %-16s %8.1f %5.1f%% %4.0f%%", "total", wall_total * 1e3, 100.0,
           wall_total > 0 ? 100 * cpu_total / (threads * wall_total) : 0);
    for (int cat = 0; cat < NCATS + 4; cat++)
        printf(cat < NCATS ? " %9.1f" : " %8.1f", col[cat] * 1e3);
    printf("\n  share of thread time (%.1f ms × %d):", wall_total * 1e3, threads);
    static const char *const extra[4] = {"serial", "waiting", "not-running", "job-idle"};
    for (int cat = 0; cat < NCATS + 4; cat++)
        if (wall_total > 0)
            printf(" %s %.1f%%", cat < NCATS ? category_names[cat] : extra[cat - NCATS],
                   100 * col[cat] / (wall_total * threads));
    printf("\n  GEMM GFLOP/s per CPU-second inside the kernels:");
    for (int cat = CAT_GEMM; cat <= CAT_GEMM_HEAD; cat++)
        for (int ph = 0; ph < NPHASES; ph++)
            if (r->busy[ph][cat] > 0 && r->flops[ph][cat] > 0)
                printf(" %s/%s %.1f", category_names[cat], phase_names[ph],
                       r->flops[ph][cat] / r->busy[ph][cat] * 1e-9);
    printf("\n");
}

static void json_profile(whet_json_writer *w, const bench_train_options *o, const train_result *r)
{
    whet_json_begin_object(w);
    whet_json_key(w, "unit");
    whet_json_write_string(w, "seconds per timed step: wall, else CPU time summed over threads");
    whet_json_key(w, "threads_seen");
    whet_json_write_int(w, r->threads_seen);
    whet_json_key(w, "phases");
    whet_json_begin_array(w);
    for (int ph = 0; ph < NPHASES; ph++) {
        outside_kernels x = outside_of(o, r, ph);
        whet_json_begin_object(w);
        whet_json_key(w, "phase");
        whet_json_write_string(w, phase_names[ph]);
        whet_json_key(w, "wall");
        whet_json_write_double(w, r->phase_wall[ph]);
        whet_json_key(w, "cpu");
        whet_json_write_double(w, r->phase_cpu[ph]);
        whet_json_key(w, "kernels");
        whet_json_begin_object(w);
        for (int cat = 0; cat < NCATS; cat++) {
            whet_json_key(w, category_names[cat]);
            whet_json_write_double(w, r->busy[ph][cat]);
        }
        whet_json_end_object(w);
        whet_json_key(w, "gemm_gflop");
        whet_json_write_double(w, (r->flops[ph][CAT_GEMM] + r->flops[ph][CAT_GEMM_LORA] + r->flops[ph][CAT_GEMM_HEAD]) *
                                      1e-9);
        whet_json_key(w, "serial");
        whet_json_write_double(w, x.main);
        whet_json_key(w, "waiting");
        whet_json_write_double(w, x.workers);
        whet_json_key(w, "not_running");
        whet_json_write_double(w, x.not_running);
        whet_json_key(w, "job_idle");
        whet_json_write_double(w, r->phase_job_idle[ph]);
        whet_json_end_object(w);
    }
    whet_json_end_array(w);
    whet_json_end_object(w);
}

/* MFU's denominator for one case: the FMA peak of its threads at once, measured
 * between its timed steps; with --peak, or when it was not measured, the
 * run's one-core figure × threads. */
static double case_peak(const case_report *c, double peak_cores)
{
    return c->res.peak_together > 0 ? c->res.peak_together : peak_cores;
}

static void json_case(whet_json_writer *w, const bench_train_options *o, const case_report *c, double peak_cores)
{
    const train_result *r = &c->res;
    const train_plan *p = &c->plan;
    whet_json_begin_object(w);
    whet_json_key(w, "method");
    whet_json_write_string(w, c->tc.full ? "full" : "lora");
    if (!c->tc.full) {
        whet_json_key(w, "lora_rank");
        whet_json_write_int(w, (int64_t)o->rank);
    }
    whet_json_key(w, "base_dtype");
    whet_json_write_string(w, c->tc.bf16_base ? "bf16" : "f32");
    whet_json_key(w, "compute");
    whet_json_write_string(w, c->tc.bf16_base || c->tc.bf16_compute ? "bf16" : "f32");
    whet_json_key(w, "seq_len");
    whet_json_write_int(w, (int64_t)c->tc.T);
    whet_json_key(w, "batch_size");
    whet_json_write_int(w, (int64_t)c->tc.B);
    whet_json_key(w, "gflop_per_step");
    whet_json_write_double(w, c->flops * 1e-9);
    if (!r->ok) {
        whet_json_key(w, "error");
        whet_json_write_string(w, r->error);
        whet_json_end_object(w);
        return;
    }
    whet_json_key(w, "trainable_params");
    whet_json_write_int(w, (int64_t)p->trainable);
    whet_json_key(w, "tokens_per_s");
    whet_json_write_double(w, (double)(c->tc.B * c->tc.T) / r->step_median);
    whet_json_key(w, "step_s_median");
    whet_json_write_double(w, r->step_median);
    whet_json_key(w, "step_s_best");
    whet_json_write_double(w, r->step_best);
    whet_json_key(w, "gflops");
    whet_json_write_double(w, c->flops / r->step_median * 1e-9);
    whet_json_key(w, "mfu");
    whet_json_write_double(w, c->flops / r->step_median * 1e-9 / case_peak(c, peak_cores));
    whet_json_key(w, "mfu_peak_gflops");
    whet_json_write_double(w, case_peak(c, peak_cores));
    whet_json_key(w, "mfu_peak_source");
    whet_json_write_string(w, r->peak_together > 0 ? "threads_together" : o->peak_gflops > 0 ? "option" : "core_times_threads");
    whet_json_key(w, "mfu_vs_core_peak_times_threads");
    whet_json_write_double(w, c->flops / r->step_median * 1e-9 / peak_cores);
    whet_json_key(w, "peak_rss_mib");
    whet_json_write_double(w, mib(r->peak_rss));
    whet_json_key(w, "cpu_share");
    whet_json_write_double(w, r->cpu_share);
    whet_json_key(w, "rss_after_setup_mib");
    whet_json_write_double(w, mib(p->rss_setup));
    whet_json_key(w, "memory_plan_mib");
    whet_json_begin_object(w);
    const char *names[] = {"weights", "base_bf16", "adapter", "gradients", "optimizer", "activations", "other", "total"};
    size_t values[] = {p->weights, p->base_bf16, p->adapter, p->grads, p->optimizer, p->activations, p->other, p->total};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        whet_json_key(w, names[i]);
        whet_json_write_double(w, mib(values[i]));
    }
    whet_json_end_object(w);
    whet_json_key(w, "rss_over_plan");
    whet_json_write_double(w, (double)r->peak_rss / (double)p->total);
    whet_json_key(w, "loss_first");
    whet_json_write_double(w, r->loss_first);
    whet_json_key(w, "loss_last");
    whet_json_write_double(w, r->loss_last);
    if (c->torch_run) {
        whet_json_key(w, "torch");
        if (c->torch.ok) {
            whet_json_begin_object(w);
            whet_json_key(w, "peer");
            whet_json_write_string(w, c->torch.peer);
            whet_json_key(w, "tokens_per_s");
            whet_json_write_double(w, c->torch.tokens_per_s);
            whet_json_key(w, "step_s");
            whet_json_write_double(w, c->torch.step_s);
            whet_json_key(w, "peak_rss_mib");
            whet_json_write_double(w, c->torch.peak_rss_mib);
            whet_json_key(w, "final_loss");
            whet_json_write_double(w, c->torch.final_loss);
            whet_json_key(w, "cpu_share");
            whet_json_write_double(w, c->torch.cpu_share);
            whet_json_end_object(w);
            whet_json_key(w, "speed_vs_torch");
            whet_json_write_double(w, (double)(c->tc.B * c->tc.T) / r->step_median / c->torch.tokens_per_s);
            whet_json_key(w, "memory_vs_torch");
            whet_json_write_double(w, mib(r->peak_rss) / c->torch.peak_rss_mib);
        } else {
            whet_json_write_null(w);
            whet_json_key(w, "torch_note");
            whet_json_write_string(w, c->torch.note);
        }
    }
    if (o->profile) {
        whet_json_key(w, "profile");
        json_profile(w, o, r);
    }
    whet_json_end_object(w);
}

/* whet's figures (and its profile), as soon as its run ends */
static void print_case_text(const bench_train_options *o, const case_report *c, double peak_cores)
{
    double peak_gflops = case_peak(c, peak_cores);
    const train_result *r = &c->res;
    char name[48];
    case_name(o, &c->tc, name, sizeof name);
    if (!r->ok) {
        printf("%s: failed: %s\n", name, r->error);
        return;
    }
    double tps = (double)(c->tc.B * c->tc.T) / r->step_median, gflops = c->flops / r->step_median * 1e-9;
    printf("  whet:  %.1f tokens/s (step %.3f s median, %.3f s best), %.1f GFLOP/s = %.1f%% MFU, peak RSS %.1f MiB\n"
           "         = %.2f× the plan (%.1f MiB after setup), loss %.3f → %.3f\n"
           "         CPU time %.0f%% of threads × wall; scaled to the whole CPU time: %.1f tokens/s, %.1f%% MFU\n",
           tps, r->step_median, r->step_best, gflops, 100 * gflops / peak_gflops, mib(r->peak_rss),
           (double)r->peak_rss / (double)c->plan.total, mib(c->plan.rss_setup), r->loss_first, r->loss_last,
           100 * r->cpu_share, tps / r->cpu_share, 100 * gflops / peak_gflops / r->cpu_share);
    if (r->peak_together > 0)
        printf("         MFU against the FMA peak of %d thread%s at once, measured between the steps: %.1f GFLOP/s\n"
               "         (median of %zu; against one core's peak at the start × %d: %.1f GFLOP/s, %.1f%% MFU)\n",
               o->threads, o->threads == 1 ? "" : "s", peak_gflops, o->steps + 1, o->threads, peak_cores,
               100 * gflops / peak_cores);
    if (o->profile)
        print_profile_text(o, c);
    fflush(stdout);
}

static void print_torch_text(const case_report *c)
{
    const train_result *r = &c->res;
    if (!c->torch.ok) {
        printf("  torch: %s\n", c->torch.note);
    } else {
        printf("  torch: %.1f tokens/s (step %.3f s median), peak RSS %.1f MiB, loss %.3f (%s, fp32);\n"
               "         CPU time %.0f%% of threads × wall over its whole run\n",
               c->torch.tokens_per_s, c->torch.step_s, c->torch.peak_rss_mib, c->torch.final_loss, c->torch.peer,
               100 * c->torch.cpu_share);
        if (r->ok) {
            double ratio = (double)(c->tc.B * c->tc.T) / r->step_median / c->torch.tokens_per_s;
            printf("  whet/torch: %.2f× tokens/s (%.2f× each scaled by its CPU share), %.2f× peak memory\n", ratio,
                   ratio * c->torch.cpu_share / r->cpu_share, mib(r->peak_rss) / c->torch.peak_rss_mib);
        }
    }
    fflush(stdout);
}

static void print_summary_text(const bench_train_options *o, const case_report *cases, size_t n, double peak_cores)
{
    printf("\n%-16s %5s %5s %9s %8s %6s %5s %9s %8s %9s %7s %9s\n", "method", "T", "B", "tokens/s", "GFLOP/s", "MFU",
           "cpu", "RSS MiB", "RSS/plan", "torch t/s", "×torch", "torch MiB");
    for (size_t i = 0; i < n; i++) {
        const case_report *c = &cases[i];
        char name[48];
        case_name(o, &c->tc, name, sizeof name);
        if (!c->res.ok) {
            printf("%-16s %5zu %5zu failed\n", name, c->tc.T, c->tc.B);
            continue;
        }
        double tps = (double)(c->tc.B * c->tc.T) / c->res.step_median, gflops = c->flops / c->res.step_median * 1e-9;
        printf("%-16s %5zu %5zu %9.1f %8.1f %5.1f%% %4.0f%% %9.1f %8.2f", name, c->tc.T, c->tc.B, tps, gflops,
               100 * gflops / case_peak(c, peak_cores), 100 * c->res.cpu_share, mib(c->res.peak_rss),
               (double)c->res.peak_rss / (double)c->plan.total);
        if (c->torch_run && c->torch.ok)
            printf(" %9.1f %6.2f× %9.1f\n", c->torch.tokens_per_s, tps / c->torch.tokens_per_s, c->torch.peak_rss_mib);
        else
            printf(" %9s %7s %9s\n", "-", "-", "-");
    }
}

int bench_train(const bench_train_options *o)
{
    if (o->hidden % o->heads || o->heads % o->kv_heads || (o->hidden / o->heads) % 2) {
        whet_error("bench train: --hidden %zu over --heads %zu (over --kv-heads %zu) must divide into an even "
                   "head size and whole groups", o->hidden, o->heads, o->kv_heads);
        return WHET_EXIT_ERROR;
    }
    if (o->profile && o->threads > PROFILE_SLOTS) {
        whet_error("bench train: --profile times at most %d threads", PROFILE_SLOTS);
        return WHET_EXIT_ERROR;
    }
    whet_model_config cfg;
    whet_err e;
    if (config_for(o, o->seq_len, &cfg, &e)) {
        whet_error("bench train: %s", e.msg);
        return WHET_EXIT_ERROR;
    }
    /* the cases: each method (LoRA with the chosen base), at one shape or over the sweep */
    enum { MAX_CASES = 16 };
    static const size_t sweep_lengths[] = {128, 256, 512, 1024, 2048};
    case_report cases[MAX_CASES];
    size_t n = 0, tokens_per_step = o->batch * o->seq_len;
    memset(cases, 0, sizeof cases);
    for (int full = 0; full <= 1; full++) {
        if (!(o->methods & (full ? BENCH_TRAIN_FULL : BENCH_TRAIN_LORA)))
            continue;
        size_t points = o->sweep ? sizeof sweep_lengths / sizeof sweep_lengths[0] : 1;
        for (size_t i = 0; i < points; i++) {
            train_case *tc = &cases[n++].tc;
            tc->full = full, tc->bf16_base = !full && (o->bf16_base || o->compute_bf16);
            tc->bf16_compute = full && o->compute_bf16;
            tc->T = o->sweep ? sweep_lengths[i] : o->seq_len;
            tc->B = o->sweep ? (tokens_per_step / tc->T ? tokens_per_step / tc->T : 1) : o->batch;
        }
    }
    double peak_core = o->peak_gflops > 0 ? o->peak_gflops : cli_measure_fma_peak(o->kernels);
    double peak = peak_core * o->threads;
    const whet_cpu_features *f = whet_cpu_detect();
    if (!o->json) {
        size_t HD = o->hidden / o->heads;
        printf("whet bench train: a Llama of hidden %zu, %zu layers, %zu/%zu heads of %zu, FFN %zu, vocabulary %zu, "
               "tied embeddings (%.1f M parameters%s), random init and random tokens; %d thread%s, %s kernels\n",
               o->hidden, o->layers, o->heads, o->kv_heads, HD, o->ffn, o->vocab,
               (double)whet_model_param_count(&cfg) * 1e-6,
               o->hidden == 576 && o->layers == 30 && o->vocab == 49152 && o->ffn == 1536 ? ", SmolLM-135M's shape" : "",
               o->threads, o->threads == 1 ? "" : "s", o->kernels->name);
        printf("a step: forward, LM head + cross-entropy, backward, clipping at norm %.1f, AdamW (lr %g); 1 warm-up "
               "step, then %zu timed (median)%s%s\n", MAX_GRAD_NORM, LEARNING_RATE, o->steps,
               o->checkpoint ? "; gradient checkpointing" : "",
               o->compute_bf16 ? "; --compute bf16: the projections' and LM head's GEMMs on bf16 operands with fp32 "
                                 "accumulation (MFU still against the fp32 peak)" : "");
        if (o->peak_gflops > 0)
            printf("cpu: %s; fp32 FMA peak %.1f GFLOP/s per core (--peak), %.1f on %d thread%s (MFU's denominator)\n",
                   f->brand[0] ? f->brand : f->arch, peak_core, peak, o->threads, o->threads == 1 ? "" : "s");
        else
            printf("cpu: %s; fp32 FMA peak %.1f GFLOP/s per core (measured now), × %d thread%s = %.1f; MFU's "
                   "denominator: the peak of the %d thread%s running at once, measured between each run's steps\n",
                   f->brand[0] ? f->brand : f->arch, peak_core, o->threads, o->threads == 1 ? "" : "s", peak,
                   o->threads, o->threads == 1 ? "" : "s");
        printf("model FLOPs: full 6·N·tokens + attention, LoRA 4·N·tokens + 6·N_adapter·tokens + attention; N = the "
               "layers' projections + the LM head, attention = 6·L·QD·T·(T+1)·B (causal pairs)\n");
        if (o->sweep)
            printf("sweep: T = 128 … 2048 at B·T = %zu tokens per step (B at least 1); no torch baseline\n",
                   tokens_per_step);
        printf("\n");
        fflush(stdout);
    }
    int status = WHET_EXIT_OK;
    for (size_t i = 0; i < n; i++) {
        case_report *c = &cases[i];
        c->flops = model_flops(o, &c->tc);
        if (run_case(o, &c->tc, &c->plan, &c->res, print_plan) != 0)
            return WHET_EXIT_ERROR;
        if (!c->res.ok)
            status = WHET_EXIT_ERROR;
        if (!o->json)
            print_case_text(o, c, peak);
        if (o->torch && !o->sweep) {
            c->torch_run = 1;
            if (!o->json) {
                printf("  running the PyTorch baseline (%s)...\n", o->torch);
                fflush(stdout);
            }
            run_torch(o, c->tc.B, c->tc.T, !c->tc.full, &c->torch);
            if (!o->json)
                print_torch_text(c);
        }
    }
    if (o->json) {
        whet_json_writer w;
        whet_json_writer_init(&w, 0);
        whet_json_begin_object(&w);
        whet_json_key(&w, "benchmark");
        whet_json_write_string(&w, "train");
        whet_json_key(&w, "model");
        whet_json_begin_object(&w);
        const char *keys[] = {"hidden", "layers", "heads", "kv_heads", "ffn", "vocab"};
        size_t vals[] = {o->hidden, o->layers, o->heads, o->kv_heads, o->ffn, o->vocab};
        for (size_t i = 0; i < 6; i++) {
            whet_json_key(&w, keys[i]);
            whet_json_write_int(&w, (int64_t)vals[i]);
        }
        whet_json_key(&w, "params");
        whet_json_write_int(&w, (int64_t)whet_model_param_count(&cfg));
        whet_json_end_object(&w);
        whet_json_key(&w, "cpu");
        whet_json_write_string(&w, f->brand[0] ? f->brand : f->arch);
        whet_json_key(&w, "isa");
        whet_json_write_string(&w, o->kernels->name);
        whet_json_key(&w, "threads");
        whet_json_write_int(&w, o->threads);
        whet_json_key(&w, "steps");
        whet_json_write_int(&w, (int64_t)o->steps);
        whet_json_key(&w, "grad_checkpoint");
        whet_json_write_bool(&w, o->checkpoint);
        whet_json_key(&w, "fma_peak_gflops_per_core");
        whet_json_write_double(&w, peak_core);
        whet_json_key(&w, "fma_peak_source");
        whet_json_write_string(&w, o->peak_gflops > 0 ? "option" : "measured");
        whet_json_key(&w, "flops");
        whet_json_write_string(&w, "full: 6*N*tokens + attn; lora: 4*N*tokens + 6*N_adapter*tokens + attn; "
                                   "N = projections + LM head; attn = 6*L*QD*T*(T+1)*B");
        whet_json_key(&w, "runs");
        whet_json_begin_array(&w);
        for (size_t i = 0; i < n; i++)
            json_case(&w, o, &cases[i], peak);
        whet_json_end_array(&w);
        whet_json_end_object(&w);
        const char *text;
        size_t len;
        if (whet_json_writer_finish(&w, "bench train's report", &text, &len, &e)) {
            whet_error("bench train: %s", e.msg);
            status = WHET_EXIT_ERROR;
        } else
            printf("%s\n", text);
        whet_json_writer_free(&w);
    } else if (n > 1)
        print_summary_text(o, cases, n, peak);
    return status;
}
