/* LoRA adapters: targets, creation (PEFT's initialisation), gradients,
 * merging, and the adapter's share of the linear layer's forward and
 * backward (model/linear.c calls whet_lora_forward/backward after the base
 * weight's GEMMs).
 *
 * Per adapted projection of layer l, rows of x [rows, K], A_l [r, K],
 * B_l [N, r], scale s:
 *   forward   xs  = s·drop(x)·A_lᵀ          [rows, r]  (kept in the acts)
 *             out += xs·B_lᵀ
 *   backward  dB_l += doutᵀ·xs               (= s·doutᵀ·xa)
 *             dxa  = s·dout·B_l              [rows, r]
 *             dA_l += dxaᵀ·drop(x)
 *             din  += drop'(dxa·A_l)         (the same mask, scaled alike)
 * The products with the wide output (out, din) are whet_compute_sgemm; the
 * rank-r ones (xs, dxa, dA, dB) are the lowrank kernels, split across threads
 * by rows or columns. Dropout is a pure function of (seed, step, layer,
 * target, row, column), recomputed in the backward. */
#include "model/lora.h"

#include "model/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define ALIGN_FLOATS 16
#define DEFAULT_WORK_ROWS 256

static size_t align_floats(size_t n)
{
    return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
}

/* ---- targets ------------------------------------------------------------------ */

static const struct {
    const char *name;
    unsigned mask;
} TARGET_NAMES[] = {
    {"q", 1u << WHET_LIN_Q},          {"k", 1u << WHET_LIN_K},
    {"v", 1u << WHET_LIN_V},          {"o", 1u << WHET_LIN_O},
    {"gate", 1u << WHET_LIN_GATE},    {"up", 1u << WHET_LIN_UP},
    {"down", 1u << WHET_LIN_DOWN},    {"q_proj", 1u << WHET_LIN_Q},
    {"k_proj", 1u << WHET_LIN_K},     {"v_proj", 1u << WHET_LIN_V},
    {"o_proj", 1u << WHET_LIN_O},     {"gate_proj", 1u << WHET_LIN_GATE},
    {"up_proj", 1u << WHET_LIN_UP},   {"down_proj", 1u << WHET_LIN_DOWN},
    {"all", WHET_LORA_ALL_TARGETS},   {"all-linear", WHET_LORA_ALL_TARGETS},
    /* GPT-2: the fused c_attn is q, k and v; PEFT matches a bare "c_proj"
     * against both attn.c_proj and mlp.c_proj */
    {"c_attn", (1u << WHET_LIN_Q) | (1u << WHET_LIN_K) | (1u << WHET_LIN_V)},
    {"attn.c_proj", 1u << WHET_LIN_O},
    {"c_fc", 1u << WHET_LIN_UP},
    {"mlp.c_proj", 1u << WHET_LIN_DOWN},
    {"c_proj", (1u << WHET_LIN_O) | (1u << WHET_LIN_DOWN)},
};

#define VALID_TARGETS                                                                                                 \
    "q, k, v, o, gate, up, down, q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, all, all-linear, "   \
    "and GPT-2's c_attn (q,k,v), attn.c_proj (o), c_fc (up), mlp.c_proj (down), c_proj (o and down)"

int whet_lora_parse_targets(const char *list, unsigned *targets, whet_err *e)
{
    *targets = 0;
    const char *p = list;
    for (size_t item = 1;; item++) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *s = p;
        while (len && (*s == ' ' || *s == '\t'))
            s++, len--;
        while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
            len--;
        if (len == 0)
            return whet_fail(e, "LoRA targets \"%s\": item %zu is empty (valid: %s)", list, item, VALID_TARGETS);
        size_t i = 0, n = sizeof TARGET_NAMES / sizeof TARGET_NAMES[0];
        while (i < n && !(strlen(TARGET_NAMES[i].name) == len && memcmp(TARGET_NAMES[i].name, s, len) == 0))
            i++;
        if (i == n)
            return whet_fail(e, "LoRA targets \"%s\": unknown projection '%.*s' (item %zu; valid: %s)", list,
                             (int)len, s, item, VALID_TARGETS);
        *targets |= TARGET_NAMES[i].mask;
        if (!end)
            return 0;
        p = end + 1;
    }
}

/* ---- creation ----------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* A_l for one target: U(−1/√in, 1/√in) as PEFT's kaiming_uniform_(a=√5)
 * gives it, from a PCG32 stream keyed by (seed, layer, target) alone. */
static void init_A(float *A, size_t r, size_t in, uint64_t seed, size_t layer, whet_linear_id id)
{
    whet_rng rng;
    whet_rng_seed(&rng, splitmix64(seed ^ splitmix64(((uint64_t)layer << 8 | (uint64_t)id) + 1)));
    double bound = 1.0 / sqrt((double)in);
    for (size_t i = 0; i < r * in; i++)
        A[i] = (float)((2.0 * whet_rng_uniform(&rng) - 1.0) * bound);
}

/* Floats of A and B for target id, each aligned. */
static size_t target_floats(const whet_lora *lora, whet_linear_id id, size_t *a_floats)
{
    size_t r = lora->opt.rank, L = lora->layers;
    size_t na = align_floats(L * r * lora->in[id]), nb = align_floats(L * lora->out[id] * r);
    if (a_floats)
        *a_floats = na;
    return na + nb;
}

whet_lora *whet_lora_create(whet_model *m, const whet_lora_options *opt, whet_err *e)
{
    const whet_model_config *c = &m->cfg;
    if (m->lora) {
        whet_fail(e, "%s: the model already has a LoRA adapter attached", m->path);
        return NULL;
    }
    if (opt->rank == 0 || opt->rank > 65536) {
        whet_fail(e, "LoRA rank %zu: expected 1 to 65536", opt->rank);
        return NULL;
    }
    if (!isfinite(opt->alpha)) {
        whet_fail(e, "LoRA alpha %g: expected a finite number", (double)opt->alpha);
        return NULL;
    }
    if (!(opt->dropout >= 0.0f && opt->dropout < 1.0f)) {
        whet_fail(e, "LoRA dropout %g: expected a probability in [0, 1)", (double)opt->dropout);
        return NULL;
    }
    if (opt->targets == 0 || (opt->targets & ~WHET_LORA_ALL_TARGETS)) {
        whet_fail(e, "LoRA targets mask 0x%x: expected a non-empty set of q,k,v,o,gate,up,down", opt->targets);
        return NULL;
    }
    unsigned targets = opt->targets;
    if (targets == WHET_LORA_ALL_TARGETS) /* "all": every projection this architecture has */
        for (int id = 0; id < WHET_LIN_COUNT; id++)
            if (!whet_linear_exists(c, (whet_linear_id)id))
                targets &= ~(1u << id);
    for (int id = 0; id < WHET_LIN_COUNT; id++)
        if ((targets >> id & 1u) && !whet_linear_exists(c, (whet_linear_id)id)) {
            whet_fail(e, "%s: LoRA target %s: this %s model has no such projection", m->path,
                      whet_linear_name((whet_linear_id)id), c->info->name);
            return NULL;
        }
    whet_lora *lora = calloc(1, sizeof *lora);
    if (!lora)
        goto oom;
    lora->opt = *opt;
    lora->opt.targets = targets;
    lora->layers = c->layers;
    lora->scale = opt->rslora ? opt->alpha / sqrtf((float)opt->rank) : opt->alpha / (float)opt->rank;
    size_t floats = 0;
    for (int id = 0; id < WHET_LIN_COUNT; id++) {
        whet_linear_shape(c, (whet_linear_id)id, &lora->in[id], &lora->out[id]);
        if (targets >> id & 1u)
            floats += target_floats(lora, (whet_linear_id)id, NULL);
    }
    lora->memory = aligned_alloc(64, floats * sizeof(float));
    if (!lora->memory)
        goto oom;
    memset(lora->memory, 0, floats * sizeof(float));
    size_t o = 0, r = opt->rank;
    for (int id = 0; id < WHET_LIN_COUNT; id++) {
        if (!(targets >> id & 1u))
            continue;
        size_t na, n = target_floats(lora, (whet_linear_id)id, &na);
        lora->A[id] = lora->memory + o;
        lora->B[id] = lora->memory + o + na;
        o += n;
        for (size_t l = 0; l < lora->layers; l++)
            init_A(lora->A[id] + l * r * lora->in[id], r, lora->in[id], opt->seed, l, (whet_linear_id)id);
        lora->floats += lora->layers * r * (lora->in[id] + lora->out[id]);
    }
    if (whet_lora_reserve(lora, DEFAULT_WORK_ROWS, e)) {
        whet_lora_free(NULL, lora);
        return NULL;
    }
    m->lora = lora;
    return lora;
oom:
    whet_fail(e, "%s: out of memory for a LoRA adapter of rank %zu", m->path, opt->rank);
    whet_lora_free(NULL, lora);
    return NULL;
}

static int dropping(const whet_lora *lora)
{
    return lora->training && lora->opt.dropout > 0.0f;
}

/* The widest input of an adapted projection: the dropout scratch's row. */
static size_t max_in(const whet_lora *lora)
{
    size_t k = 0;
    for (int id = 0; id < WHET_LIN_COUNT; id++)
        if (lora->A[id] && lora->in[id] > k)
            k = lora->in[id];
    return k;
}

/* The widest output of an adapted projection: B's transposed copies. */
static size_t max_out(const whet_lora *lora)
{
    size_t n = 0;
    for (int id = 0; id < WHET_LIN_COUNT; id++)
        if (lora->B[id] && lora->out[id] > n)
            n = lora->out[id];
    return n;
}

/* lora->work, for blocks of work_rows rows (see work_of): per row and
 * projection xs and d(xs) — each projection its own, since a set of them
 * (model/linear.c: whet_linear_backward_set) keeps them until one job runs
 * all their products — and dropout(x) with dropout; then per projection Bᵀ
 * [r, max out], and one dBᵀ [r, max out]. */
static size_t work_row_floats(const whet_lora *lora)
{
    return 2 * WHET_LIN_COUNT * lora->opt.rank + (lora->opt.dropout > 0.0f ? max_in(lora) : 0);
}

static size_t work_fixed_floats(const whet_lora *lora)
{
    return 2 * WHET_LIN_COUNT * lora->opt.rank * max_out(lora);
}

typedef struct lora_work {
    float *xs, *dxa; /* [work_rows, r] */
    float *Bt, *dBt; /* [r, max out] */
    float *x;        /* dropout(x) [work_rows, max in] */
} lora_work;

/* Projection id's views of the scratch */
static lora_work work_of(const whet_lora *lora, whet_linear_id id)
{
    size_t r = lora->opt.rank, wr = lora->work_rows, fixed = r * max_out(lora);
    float *w = lora->work;
    lora_work k = {.xs = w + (size_t)id * r * wr, .dxa = w + (WHET_LIN_COUNT + (size_t)id) * r * wr};
    float *f = w + 2 * WHET_LIN_COUNT * r * wr;
    k.Bt = f + (size_t)id * fixed;
    k.dBt = f + (WHET_LIN_COUNT + (size_t)id) * fixed; /* a set's dB products share a job: one each */
    k.x = f + 2 * WHET_LIN_COUNT * fixed;
    return k;
}

size_t whet_lora_work_bytes(const whet_lora *lora)
{
    return align_floats(lora->work_rows * work_row_floats(lora) + work_fixed_floats(lora)) * sizeof(float);
}

int whet_lora_reserve(whet_lora *lora, size_t rows, whet_err *e)
{
    if (rows <= lora->work_rows)
        return 0;
    size_t floats = align_floats(rows * work_row_floats(lora) + work_fixed_floats(lora));
    float *w = aligned_alloc(64, floats * sizeof(float));
    if (!w)
        return whet_fail(e, "out of memory for LoRA scratch of %zu rows", rows);
    free(lora->work);
    lora->work = w;
    lora->work_rows = rows;
    return 0;
}

int whet_lora_alloc_grads(whet_lora *lora, whet_err *e)
{
    if (lora->grad_memory)
        return 0;
    size_t floats = 0;
    for (int id = 0; id < WHET_LIN_COUNT; id++)
        if (lora->A[id])
            floats += target_floats(lora, (whet_linear_id)id, NULL);
    lora->grad_memory = aligned_alloc(64, floats * sizeof(float));
    if (!lora->grad_memory)
        return whet_fail(e, "out of memory for LoRA gradients (%zu floats)", floats);
    memset(lora->grad_memory, 0, floats * sizeof(float));
    for (int id = 0; id < WHET_LIN_COUNT; id++)
        if (lora->A[id]) {
            /* the same offsets as A and B in lora->memory */
            lora->dA[id] = lora->grad_memory + (lora->A[id] - lora->memory);
            lora->dB[id] = lora->grad_memory + (lora->B[id] - lora->memory);
        }
    return 0;
}

void whet_lora_zero_grads(whet_lora *lora)
{
    for (int id = 0; id < WHET_LIN_COUNT; id++)
        if (lora->dA[id]) {
            size_t r = lora->opt.rank, L = lora->layers;
            memset(lora->dA[id], 0, L * r * lora->in[id] * sizeof(float));
            memset(lora->dB[id], 0, L * lora->out[id] * r * sizeof(float));
        }
}

void whet_lora_free(whet_model *m, whet_lora *lora)
{
    if (!lora)
        return;
    if (m && m->lora == lora)
        m->lora = NULL;
    free(lora->memory);
    free(lora->grad_memory);
    free(lora->work);
    free(lora);
}

int whet_lora_merge(whet_model *m, whet_lora *lora, whet_err *e)
{
    if (m->base_bf16)
        return whet_fail(e, "%s: cannot merge a LoRA adapter into a bf16 base; load the model in fp32 to merge",
                         m->path);
    if (lora->layers != m->cfg.layers)
        return whet_fail(e, "%s: the LoRA adapter has %zu layers, the model %zu", m->path, lora->layers,
                         m->cfg.layers);
    size_t r = lora->opt.rank, most = 0;
    for (int id = 0; id < WHET_LIN_COUNT; id++)
        if (lora->B[id] && lora->out[id] > most)
            most = lora->out[id];
    float *scaled_B = malloc(most * r * sizeof *scaled_B);
    if (!scaled_B)
        return whet_fail(e, "%s: out of memory merging the LoRA adapter", m->path);
    const whet_kernels *k = m->compute->kernels;
    for (int id = 0; id < WHET_LIN_COUNT; id++) {
        if (!lora->A[id])
            continue;
        size_t K = lora->in[id], N = lora->out[id];
        for (size_t l = 0; l < lora->layers; l++) {
            float *W = whet_linear_weight(m, l, (whet_linear_id)id);
            memcpy(scaled_B, lora->B[id] + l * N * r, N * r * sizeof *scaled_B);
            k->scale(scaled_B, lora->scale, N * r);
            whet_gemm g = {.layout = WHET_GEMM_NN, .M = N, .N = K, .K = r, .A = scaled_B, .lda = r,
                           .B = lora->A[id] + l * r * K, .ldb = K, .C = W, .ldc = K, .accumulate = 1};
            whet_compute_sgemm(m->compute, &g);
        }
    }
    free(scaled_B);
    if (m->lora == lora)
        m->lora = NULL;
    return 0;
}

size_t whet_lora_acts_floats(const whet_model *m, size_t BT)
{
    const whet_lora *lora = m->lora;
    size_t n = 0;
    if (lora)
        for (int id = 0; id < WHET_LIN_COUNT; id++)
            if (lora->A[id])
                n += align_floats(BT * lora->opt.rank);
    return n;
}

/* Where layer l's xs for target id lives in a->lora, or NULL when the acts
 * have no adapter scratch (or too few rows for this call). */
static float *saved_xs(const whet_model *m, const whet_acts *a, size_t l, whet_linear_id id, size_t rows)
{
    const whet_lora *lora = m->lora;
    if (!a || !a->lora)
        return NULL;
    size_t cap = a->B * a->T;
    if (rows > cap)
        return NULL;
    float *slot = a->lora + (a->keep_layers ? l : 0) * whet_lora_acts_floats(m, cap);
    for (int t = 0; t < (int)id; t++)
        if (lora->A[t])
            slot += align_floats(cap * lora->opt.rank);
    return slot;
}

/* ---- dropout ------------------------------------------------------------------ */

typedef struct drop_job {
    const whet_lora *lora;
    size_t layer, row0, K;
    whet_linear_id id;
    float *dst;
    const float *src;
    int add;            /* 0: dst = drop(src); 1: dst += drop(src) */
    uint32_t threshold; /* drop when the 32 random bits are below */
    float keep_scale;   /* 1/(1−p) */
} drop_job;

/* Row key: every argument of the mask but the column, hashed once per row. */
static uint64_t drop_row_key(const drop_job *j, size_t row)
{
    const uint64_t key[6] = {j->lora->opt.seed, j->lora->step, (uint64_t)j->layer, (uint64_t)j->id,
                             (uint64_t)row, 0x4c6f5241ull /* "LoRA" */};
    return XXH3_64bits(key, sizeof key);
}

/* Rows [i0, i1) of the block (global rows row0 + i): columns 2c and 2c+1
 * take the low and high halves of splitmix64(row key + c). */
static void drop_rows(void *p, size_t i0, size_t i1)
{
    const drop_job *j = p;
    size_t K = j->K;
    for (size_t i = i0; i < i1; i++) {
        uint64_t key = drop_row_key(j, j->row0 + i);
        const float *s = j->src + i * K;
        float *d = j->dst + i * K;
        for (size_t c = 0; c < K; c += 2) {
            uint64_t bits = splitmix64(key + c / 2);
            for (size_t h = 0; h < 2 && c + h < K; h++) {
                uint32_t u = (uint32_t)(bits >> (32 * h));
                float v = u >= j->threshold ? s[c + h] * j->keep_scale : 0.0f;
                if (j->add)
                    d[c + h] += v;
                else
                    d[c + h] = v;
            }
        }
    }
}

static void dropout_apply(whet_compute *c, const whet_lora *lora, size_t layer, whet_linear_id id, size_t row0,
                          float *dst, const float *src, size_t n, int add)
{
    double p = lora->opt.dropout;
    double t = floor(p * 4294967296.0);
    drop_job j = {.lora = lora, .layer = layer, .row0 = row0, .K = lora->in[id], .id = id, .dst = dst, .src = src,
                  .add = add, .threshold = t >= 4294967295.0 ? 4294967295u : (uint32_t)t,
                  .keep_scale = (float)(1.0 / (1.0 - p))};
    size_t grain = 8192 / j.K ? 8192 / j.K : 1;
    whet_compute_for(c, n, grain, drop_rows, &j);
}

/* ---- forward and backward ---------------------------------------------------- */

/* The products with the wide output: out += xs·Bᵀ and din += dxa·A. */
static void gemm(whet_compute *c, whet_gemm_layout layout, size_t M, size_t N, size_t K, const float *A, size_t lda,
                 const float *B, size_t ldb, float *C, size_t ldc, int accumulate)
{
    whet_gemm g = {.layout = layout, .M = M, .N = N, .K = K, .A = A, .lda = lda, .B = B, .ldb = ldb, .C = C,
                   .ldc = ldc, .accumulate = accumulate};
    whet_compute_sgemm(c, &g);
}

/* The rank-r products, on the lowrank kernels: a GEMM would put r (8 of a
 * 12-row tile) along its short side and pack the wide operand, rows × K,
 * for 2·r FLOPs per element; the kernels read it once where it lies. */
typedef whet_lora_project project_job;

static void project_rows(void *p, size_t i0, size_t i1)
{
    const project_job *j = p;
    j->k->lowrank_project(j->y + i0 * j->r, j->r, j->x + i0 * j->ldx, j->ldx, j->w, j->ldw, i1 - i0, j->r, j->K,
                          j->scale);
}

/* y[n, r] = s · x[n, K]·w[r, K]ᵀ, split by rows */
static void project(whet_compute *c, float *y, const float *x, size_t ldx, const float *w, size_t ldw, size_t n,
                    size_t r, size_t K, float s)
{
    project_job j = {.k = c->kernels, .y = y, .x = x, .w = w, .ldx = ldx, .ldw = ldw, .r = r, .K = K, .scale = s};
    whet_compute_for(c, n, 16, project_rows, &j);
}

typedef whet_lora_weight_grad weight_grad_job;

static void weight_grad_columns(void *p, size_t c0, size_t c1)
{
    const weight_grad_job *j = p;
    j->k->lowrank_weight_grad(j->dw, j->cols, j->g, j->r, j->x, j->cols, j->n, j->r, c0, c1, j->accumulate);
    if (j->dw_transposed) /* dwᵀ [cols, r] += these columns of dw [r, cols] */
        for (size_t col = c0; col < c1; col++)
            for (size_t i = 0; i < j->r; i++)
                j->dw_transposed[col * j->r + i] += j->dw[i * j->cols + col];
}

/* dw[r, cols] (+)= g[n, r]ᵀ·x[n, cols], split by columns; with dw_transposed,
 * dw is scratch and its transpose [cols, r] is what gets added to */
static void weight_grad(whet_compute *c, float *dw, float *dw_transposed, const float *g, const float *x,
                        size_t n, size_t r, size_t cols, int accumulate)
{
    weight_grad_job j = {.k = c->kernels, .dw = dw, .dw_transposed = dw_transposed, .g = g, .x = x, .n = n, .r = r,
                         .cols = cols, .accumulate = accumulate};
    whet_compute_for(c, cols, 64, weight_grad_columns, &j);
}

/* xs[n, r] = s·dropout(in rows [r0, r0+n))·Aᵀ into the acts' saved copy when
 * there is one, else the scratch; returns it. Computed now, or, with pre and
 * no dropout, staged as a piece of the caller's job pre with *staged as its
 * context (dropout's scratch is one for all projections, so with dropout it
 * runs now). */
static float *forward_xs(whet_model *m, size_t l, whet_linear_id id, const float *in, size_t r0, size_t n,
                         float *saved, whet_jobs *pre, project_job *staged)
{
    whet_lora *lora = m->lora;
    whet_compute *c = m->compute;
    size_t r = lora->opt.rank, K = lora->in[id];
    lora_work w = work_of(lora, id);
    const float *x = in + r0 * K;
    if (dropping(lora)) {
        dropout_apply(c, lora, l, id, r0, w.x, x, n, 0);
        x = w.x;
        pre = NULL;
    }
    float *xs = saved ? saved + r0 * r : w.xs;
    project_job j = {.k = c->kernels, .y = xs, .x = x, .w = lora->A[id] + l * r * K, .ldx = K, .ldw = K, .r = r,
                     .K = K, .scale = lora->scale};
    if (pre) {
        *staged = j;
        whet_jobs_for(pre, n, 16, project_rows, staged);
    } else {
        whet_compute_for(c, n, 16, project_rows, &j);
    }
    return xs;
}

static int adapted(const whet_lora *lora, size_t l, whet_linear_id id)
{
    return lora && id < WHET_LIN_COUNT && lora->A[id] && l < lora->layers;
}

void whet_lora_forward(whet_model *m, whet_acts *a, size_t l, whet_linear_id id, float *out, const float *in,
                       size_t rows)
{
    whet_lora *lora = m->lora;
    if (!adapted(lora, l, id))
        return;
    size_t r = lora->opt.rank, N = lora->out[id];
    const float *B = lora->B[id] + l * N * r;
    float *saved = saved_xs(m, a, l, id, rows);
    /* rows are independent here: blocks of work_rows change no bit */
    size_t block = lora->work_rows;
    for (size_t r0 = 0; r0 < rows; r0 += block) {
        size_t n = rows - r0 < block ? rows - r0 : block;
        float *xs = forward_xs(m, l, id, in, r0, n, saved, NULL, NULL);
        gemm(m->compute, WHET_GEMM_NT, n, N, r, xs, r, B, r, out + r0 * N, N, 1);
    }
}

int whet_lora_forward_begin(whet_model *m, whet_acts *a, size_t l, whet_linear_id id, float *out, const float *in,
                            size_t rows, whet_gemm *up, whet_jobs *pre, whet_lora_project *xs_job)
{
    whet_lora *lora = m->lora;
    if (!adapted(lora, l, id))
        return -1;
    if (rows > lora->work_rows)
        return 0;
    size_t r = lora->opt.rank, N = lora->out[id];
    float *xs = forward_xs(m, l, id, in, 0, rows, saved_xs(m, a, l, id, rows), pre, xs_job);
    *up = (whet_gemm){.layout = WHET_GEMM_NT, .M = rows, .N = N, .K = r, .A = xs, .lda = r,
                      .B = lora->B[id] + l * N * r, .ldb = r, .C = out, .ldc = N, .accumulate = 1};
    return 1;
}

/* Layer l's dA [r, in] and dB [out, r] of target id (NULL: not trained) */
static void layer_grads(const whet_lora *lora, size_t l, whet_linear_id id, float **dA, float **dB)
{
    *dA = lora->dA[id] ? lora->dA[id] + l * lora->opt.rank * lora->in[id] : NULL;
    *dB = lora->dB[id] ? lora->dB[id] + l * lora->out[id] * lora->opt.rank : NULL;
}

/* Bt [r, N] = Bᵀ of B [N, r] */
static void transpose_B(float *Bt, const float *B, size_t N, size_t r)
{
    for (size_t o = 0; o < N; o++)
        for (size_t j = 0; j < r; j++)
            Bt[j * N + o] = B[o * r + j];
}

void whet_lora_backward(whet_model *m, whet_acts *a, size_t l, whet_linear_id id, float *din, const float *dout,
                        const float *in, size_t rows)
{
    whet_lora *lora = m->lora;
    if (!adapted(lora, l, id))
        return;
    float *dA, *dB;
    layer_grads(lora, l, id, &dA, &dB);
    if (!dA && !dB && !din)
        return;
    whet_compute *c = m->compute;
    size_t r = lora->opt.rank, K = lora->in[id], N = lora->out[id];
    const float *A = lora->A[id] + l * r * K, *B = lora->B[id] + l * N * r;
    int drop = dropping(lora);
    float *saved = saved_xs(m, a, l, id, rows);
    size_t block = lora->work_rows;
    lora_work w = work_of(lora, id);
    if (dA || din) /* Bᵀ [r, N]: d(xs) = s·dout·B projects dout on Bᵀ's rows */
        transpose_B(w.Bt, B, N, r);
    for (size_t r0 = 0; r0 < rows; r0 += block) {
        size_t n = rows - r0 < block ? rows - r0 : block;
        const float *x = in + r0 * K, *dy = dout + r0 * N;
        if (drop && (dA || (dB && !saved))) {
            dropout_apply(c, lora, l, id, r0, w.x, x, n, 0);
            x = w.x;
        }
        const float *xs = saved ? saved + r0 * r : w.xs;
        if (!saved && dB)
            project(c, w.xs, x, K, A, K, n, r, K, lora->scale);
        if (dB) /* dBᵀ [r, N] = xsᵀ·dy, added to dB [N, r] */
            weight_grad(c, w.dBt, dB, xs, dy, n, r, N, 0);
        if (!dA && !din)
            continue;
        /* dxa [n, r] = s·dy·B */
        project(c, w.dxa, dy, N, w.Bt, N, n, r, N, lora->scale);
        if (dA)
            weight_grad(c, dA, NULL, w.dxa, x, n, r, K, 1);
        if (!din)
            continue;
        if (drop) {
            /* dropout(x)'s scratch is free again: d(dropout(x)) goes there */
            gemm(c, WHET_GEMM_NN, n, K, r, w.dxa, r, A, K, w.x, K, 0);
            dropout_apply(c, lora, l, id, r0, din + r0 * K, w.x, n, 1);
        } else {
            gemm(c, WHET_GEMM_NN, n, K, r, w.dxa, r, A, K, din + r0 * K, K, 1);
        }
    }
}

int whet_lora_backward_path(const whet_model *m, const whet_acts *a, size_t l, whet_linear_id id, const float *din,
                            size_t rows)
{
    const whet_lora *lora = m->lora;
    if (!adapted(lora, l, id))
        return -1;
    int dA = lora->dA[id] != NULL, dB = lora->dB[id] != NULL;
    if (!dA && !dB && !din)
        return -1;
    /* dropout, xs to recompute, or more rows than one block: the general path */
    if (dropping(lora) || (dB && !saved_xs(m, a, l, id, rows)) || rows > lora->work_rows)
        return 0;
    return 1;
}

int whet_lora_backward_begin(whet_model *m, whet_acts *a, size_t l, whet_linear_id id, float *din, const float *dout,
                             const float *in, size_t rows, whet_lora_pending *p, whet_jobs *pre)
{
    int path = whet_lora_backward_path(m, a, l, id, din, rows);
    if (path != 1)
        return path;
    whet_lora *lora = m->lora;
    float *dA, *dB;
    layer_grads(lora, l, id, &dA, &dB);
    float *saved = saved_xs(m, a, l, id, rows);
    whet_compute *c = m->compute;
    size_t r = lora->opt.rank, K = lora->in[id], N = lora->out[id];
    const float *A = lora->A[id] + l * r * K, *B = lora->B[id] + l * N * r;
    lora_work w = work_of(lora, id);
    if (dA || din) /* Bᵀ [r, N]: d(xs) = s·dout·B projects dout on Bᵀ's rows */
        transpose_B(w.Bt, B, N, r);
    /* dBᵀ [r, N] = xsᵀ·dy, added to dB [N, r], and dxa [n, r] = s·dy·B: both read dout, pieces of one job (the
     * caller's, when it gives one: the other projections' join them) */
    *p = (whet_lora_pending){.k = c->kernels, .dA = dA, .dxa = w.dxa, .x = in, .n = rows, .r = r, .K = K};
    p->dB_job = (whet_lora_weight_grad){.k = c->kernels, .dw = w.dBt, .dw_transposed = dB, .g = saved, .x = dout,
                                        .n = rows, .r = r, .cols = N, .accumulate = 0};
    p->dxa_job = (whet_lora_project){.k = c->kernels, .y = w.dxa, .x = dout, .w = w.Bt, .ldx = N, .ldw = N, .r = r,
                                     .K = N, .scale = lora->scale};
    whet_jobs own;
    if (!pre)
        whet_jobs_init(pre = &own, c);
    if (dB)
        whet_jobs_for(pre, N, 64, weight_grad_columns, &p->dB_job);
    if (dA || din)
        whet_jobs_for(pre, rows, 16, project_rows, &p->dxa_job);
    if (pre == &own)
        whet_jobs_run(&own);
    if (din)
        p->din = (whet_gemm){.layout = WHET_GEMM_NN, .M = rows, .N = K, .K = r, .A = w.dxa, .lda = r, .B = A,
                             .ldb = K, .C = din, .ldc = K, .accumulate = 1};
    return 1;
}

/* dA [r, K] += dxa[n, r]ᵀ·x[n, K] over a range of columns (weight_grad's) */
static void pending_dA_columns(void *ctx, size_t c0, size_t c1)
{
    const whet_lora_pending *p = ctx;
    p->k->lowrank_weight_grad(p->dA, p->K, p->dxa, p->r, p->x, p->K, p->n, p->r, c0, c1, 1);
}

void whet_lora_backward_add_jobs(whet_lora_pending *p, whet_jobs *jobs)
{
    if (p->dA)
        whet_jobs_for(jobs, p->K, 64, pending_dA_columns, p);
}
