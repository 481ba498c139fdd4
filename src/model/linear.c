/* The projections of a block: base weight (fp32, or bf16 after
 * whet_model_base_to_bf16 or whet_model_compute_bf16), bias, and — through
 * model/lora.c — an optional adapter. Forward and backward side by side; then
 * the LM head, which reads the same bf16 weights; then the conversion to bf16:
 * a frozen base (fp32 released) or shadows of trained fp32 masters. */
#include "model/lora.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const LINEAR_NAMES[WHET_LIN_COUNT] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                         "gate_proj", "up_proj", "down_proj"};

const char *whet_linear_name(whet_linear_id id)
{
    return id < WHET_LIN_COUNT ? LINEAR_NAMES[id] : "?";
}

/* The linear weights as bf16, in whet_model_params's shapes: one
 * allocation, w[id] [L, N, K] per projection and the LM head [V, C]. Either
 * a frozen base (the fp32 copies released) or, with shadow set, bf16 copies
 * of fp32 masters that train (--compute bf16): then src[] are the masters
 * they are rounded from and n[] their sizes, and the weight gradients run on
 * the bf16 GEMM too. */
struct whet_base_bf16 {
    whet_bf16 *memory;
    size_t count;                    /* bf16 values in memory (with alignment padding) */
    whet_bf16 *w[WHET_LIN_COUNT];    /* NULL: the architecture has no such projection */
    whet_bf16 *lm_head;
    int shadow;                      /* the fp32 masters stay (whet_model_compute_bf16) */
    const float *src[WHET_LIN_COUNT + 1]; /* shadow: the masters of w[] and (last) of lm_head */
    size_t n[WHET_LIN_COUNT + 1];
};

/* dW (+)= dYᵀ·X in TN layout: in fp32, or under --compute bf16 on the bf16
 * GEMM with X (B) rounded to bf16 as the GEMM packs it (b_f32). Rounding X
 * once into a bf16 scratch first was measured no faster for the layers and
 * slower for the head, whose every vocabulary chunk reads the same rows. */
static int weight_gradient_bf16(const whet_model *m, whet_gemm *w)
{
    w->b_f32 = m->base_bf16 && m->base_bf16->shadow;
    return w->b_f32;
}

static void weight_gradient(whet_model *m, whet_gemm *w, int worker)
{
    if (weight_gradient_bf16(m, w))
        whet_compute_gemm_bf16_on(m->compute, w, worker);
    else
        whet_compute_sgemm_on(m->compute, w, worker);
}

typedef struct linear_view {
    float *w, *b;    /* this layer's weight [N, K] and bias [N] (NULL: none) */
    size_t K, N;     /* in, out */
} linear_view;

/* Layer l's weight and bias views in p for projection id. */
static linear_view linear_of(const whet_model_config *c, const whet_model_params *p, size_t l, whet_linear_id id)
{
    size_t C = c->hidden, F = c->ffn, QD = c->heads * c->head_dim, KVD = c->kv_heads * c->head_dim;
    linear_view v = {0};
    float *w = NULL, *b = NULL;
    switch (id) {
    case WHET_LIN_Q: w = p->wq, b = p->bq, v.K = C, v.N = QD; break;
    case WHET_LIN_K: w = p->wk, b = p->bk, v.K = C, v.N = KVD; break;
    case WHET_LIN_V: w = p->wv, b = p->bv, v.K = C, v.N = KVD; break;
    case WHET_LIN_O: w = p->wo, b = p->bo, v.K = QD, v.N = C; break;
    case WHET_LIN_GATE: w = p->w_gate, b = p->b_gate, v.K = C, v.N = F; break;
    case WHET_LIN_UP: w = p->w_up, b = p->b_up, v.K = C, v.N = F; break;
    case WHET_LIN_DOWN: w = p->w_down, b = p->b_down, v.K = F, v.N = C; break;
    default: break;
    }
    v.w = w ? w + l * v.N * v.K : NULL;
    v.b = b ? b + l * v.N : NULL;
    return v;
}

void whet_linear_shape(const whet_model_config *c, whet_linear_id id, size_t *in, size_t *out)
{
    whet_model_params none = {0};
    linear_view v = linear_of(c, &none, 0, id);
    *in = v.K, *out = v.N;
}

int whet_linear_exists(const whet_model_config *c, whet_linear_id id)
{
    return id < WHET_LIN_COUNT && (id != WHET_LIN_GATE || c->info->act == WHET_ACT_SWIGLU);
}

float *whet_linear_weight(whet_model *m, size_t l, whet_linear_id id)
{
    return linear_of(&m->cfg, &m->params, l, id).w;
}

/* Layer l's bf16 weight of projection id, or NULL when the base is fp32. */
static const whet_bf16 *bf16_weight(const whet_model *m, size_t l, whet_linear_id id, const linear_view *v)
{
    if (!m->base_bf16 || !m->base_bf16->w[id])
        return NULL;
    return m->base_bf16->w[id] + l * v->N * v->K;
}

typedef struct bias_job {
    const whet_kernels *k;
    float *y;
    const float *bias;
    size_t n;
} bias_job;

static void bias_rows(void *p, size_t r0, size_t r1)
{
    bias_job *j = p;
    for (size_t r = r0; r < r1; r++)
        j->k->add(j->y + r * j->n, j->y + r * j->n, j->bias, j->n);
}

/* out = in·Wᵀ for layer l's projection id, from the bf16 copy when there is one */
static whet_gemm forward_gemm(const whet_model *m, size_t l, whet_linear_id id, float *out, const float *in,
                              size_t rows, int *bf16)
{
    linear_view v = linear_of(&m->cfg, &m->params, l, id);
    const whet_bf16 *w16 = bf16_weight(m, l, id, &v);
    *bf16 = w16 != NULL;
    return (whet_gemm){.layout = WHET_GEMM_NT, .M = rows, .N = v.N, .K = v.K, .A = in, .lda = v.K,
                       .B = w16 ? (const void *)w16 : (const void *)v.w, .ldb = v.K, .C = out, .ldc = v.N};
}

/* One projection on its own: base GEMM, bias, then the adapter's general path. */
static void forward_alone(whet_model *m, whet_acts *a, size_t l, whet_linear_id id, float *out, const float *in,
                          size_t rows)
{
    whet_compute *c = m->compute;
    int bf16;
    whet_gemm g = forward_gemm(m, l, id, out, in, rows, &bf16);
    if (bf16)
        whet_compute_gemm_bf16(c, &g);
    else
        whet_compute_sgemm(c, &g);
    float *bias = linear_of(&m->cfg, &m->params, l, id).b;
    if (bias) {
        size_t grain = 8192 / g.N ? 8192 / g.N : 1;
        bias_job j = {c->kernels, out, bias, g.N};
        whet_compute_for(c, rows, grain, bias_rows, &j);
    }
    whet_lora_forward(m, a, l, id, out, in, rows);
}

void whet_linear_forward_set(whet_model *m, whet_acts *a, size_t l, const whet_linear_id *ids, float *const *outs,
                             size_t n, const float *in, size_t rows)
{
    whet_gemm base[WHET_LIN_COUNT], up[WHET_LIN_COUNT];
    whet_lora_project xs[WHET_LIN_COUNT];
    whet_jobs pre, jobs; /* the adapters' xs = in·Aᵀ, then the base GEMMs with out += xs·Bᵀ */
    whet_jobs_init(&pre, m->compute);
    whet_jobs_init(&jobs, m->compute);
    assert(n <= WHET_LIN_COUNT);
    for (size_t i = 0; i < n; i++) {
        int lora = linear_of(&m->cfg, &m->params, l, ids[i]).b
                       ? 0
                       : whet_lora_forward_begin(m, a, l, ids[i], outs[i], in, rows, &up[i], &pre, &xs[i]);
        if (lora == 0) {
            forward_alone(m, a, l, ids[i], outs[i], in, rows);
            continue;
        }
        int bf16;
        base[i] = forward_gemm(m, l, ids[i], outs[i], in, rows, &bf16);
        int piece = whet_jobs_gemm(&jobs, &base[i], bf16);
        if (lora == 1) /* the adapter's out += xs·Bᵀ on each slab right after the base GEMM's */
            whet_jobs_then(&jobs, piece, &up[i], 0);
    }
    whet_jobs_run(&pre);
    whet_jobs_run(&jobs);
}

void whet_linear_forward(whet_model *m, whet_acts *a, size_t l, whet_linear_id id, float *out, const float *in,
                         size_t rows)
{
    whet_linear_forward_set(m, a, l, &id, &out, 1, in, rows);
}

typedef struct colsum_job {
    float *db;
    const float *dy;
    size_t rows, n;
} colsum_job;

/* db[c] += Σ_r dy[r, c] for a range of columns: each column sums its rows in
 * order, so any split of columns gives the same bits. */
static void colsum_cols(void *p, size_t c0, size_t c1)
{
    colsum_job *j = p;
    for (size_t r = 0; r < j->rows; r++) {
        const float *row = j->dy + r * j->n;
        for (size_t c = c0; c < c1; c++)
            j->db[c] += row[c];
    }
}

void whet_linear_backward_set(whet_model *m, whet_acts *a, size_t l, const whet_linear_id *ids,
                              const float *const *douts, size_t n, float *din, int accumulate_din, const float *in,
                              size_t rows, whet_model_grads *g)
{
    assert(n <= WHET_LIN_COUNT);
    /* an adapter on its general path adds into din after its base GEMM, before the next projection's: one at a time */
    int alone = 0;
    for (size_t i = 0; i < n; i++)
        alone |= whet_lora_backward_path(m, a, l, ids[i], din, rows) == 0;
    if (alone && n > 1) {
        for (size_t i = 0; i < n; i++)
            whet_linear_backward_set(m, a, l, &ids[i], &douts[i], 1, din, accumulate_din || i > 0, in, rows, g);
        return;
    }
    whet_compute *c = m->compute;
    whet_lora_pending lp[WHET_LIN_COUNT];
    int lora[WHET_LIN_COUNT];
    whet_jobs pre, jobs; /* the adapters' products of dout (dB, d(xs)), then the base path with the rest */
    whet_jobs_init(&pre, c);
    for (size_t i = 0; i < n; i++)
        lora[i] = whet_lora_backward_begin(m, a, l, ids[i], din, douts[i], in, rows, &lp[i], &pre);
    whet_jobs_run(&pre);
    whet_jobs_init(&jobs, c);
    whet_gemm d[WHET_LIN_COUNT], w[WHET_LIN_COUNT];
    colsum_job cj[WHET_LIN_COUNT];
    int din_piece = -1;
    for (size_t i = 0; din && i < n; i++) {
        linear_view v = linear_of(&m->cfg, &m->params, l, ids[i]);
        const whet_bf16 *w16 = bf16_weight(m, l, ids[i], &v);
        d[i] = (whet_gemm){.layout = WHET_GEMM_NN, .M = rows, .N = v.K, .K = v.N, .A = douts[i], .lda = v.N,
                           .B = w16 ? (const void *)w16 : (const void *)v.w, .ldb = v.K, .C = din, .ldc = v.K,
                           .accumulate = accumulate_din || i > 0};
        if (i == 0)
            din_piece = whet_jobs_gemm(&jobs, &d[i], w16 != NULL);
        else
            whet_jobs_then(&jobs, din_piece, &d[i], w16 != NULL);
        if (lora[i] == 1 && lp[i].din.M)
            whet_jobs_then(&jobs, din_piece, &lp[i].din, 0);
    }
    for (size_t i = 0; g && l >= g->first_layer && i < n; i++) {
        linear_view v = linear_of(&m->cfg, &m->params, l, ids[i]), gv = linear_of(&m->cfg, &g->p, l, ids[i]);
        if (gv.w) {
            w[i] = (whet_gemm){.layout = WHET_GEMM_TN, .M = v.N, .N = v.K, .K = rows, .A = douts[i], .lda = v.N,
                               .B = in, .ldb = v.K, .C = gv.w, .ldc = v.K, .accumulate = 1};
            whet_jobs_gemm(&jobs, &w[i], weight_gradient_bf16(m, &w[i]));
        }
        if (gv.b) {
            cj[i] = (colsum_job){gv.b, douts[i], rows, v.N};
            whet_jobs_for(&jobs, v.N, 64, colsum_cols, &cj[i]);
        }
    }
    for (size_t i = 0; i < n; i++)
        if (lora[i] == 1)
            whet_lora_backward_add_jobs(&lp[i], &jobs);
    whet_jobs_run(&jobs);
    if (n == 1 && lora[0] == 0)
        whet_lora_backward(m, a, l, ids[0], din, douts[0], in, rows);
}

void whet_linear_backward(whet_model *m, whet_acts *a, size_t l, whet_linear_id id, float *din, int accumulate_din,
                          const float *dout, const float *in, size_t rows, whet_model_grads *g)
{
    whet_linear_backward_set(m, a, l, &id, &dout, 1, din, accumulate_din, in, rows, g);
}

/* ---- LM head ------------------------------------------------------------------ */

void whet_lm_head_forward(whet_model *m, int worker, float *logits, size_t ld, const float *in, size_t rows,
                          size_t v0, size_t vc)
{
    size_t C = m->cfg.hidden;
    whet_gemm g = {.layout = WHET_GEMM_NT, .M = rows, .N = vc, .K = C, .A = in, .lda = C, .ldb = C, .C = logits,
                   .ldc = ld};
    if (m->base_bf16) {
        g.B = m->base_bf16->lm_head + v0 * C;
        whet_compute_gemm_bf16_on(m->compute, &g, worker);
    } else {
        g.B = m->params.lm_head + v0 * C;
        whet_compute_sgemm_on(m->compute, &g, worker);
    }
}

void whet_lm_head_backward(whet_model *m, int worker, float *din, int accumulate_din, const float *dlogits, size_t ld,
                           const float *in, size_t rows, size_t v0, size_t vc, whet_model_grads *g)
{
    size_t C = m->cfg.hidden;
    if (din) {
        whet_gemm d = {.layout = WHET_GEMM_NN, .M = rows, .N = C, .K = vc, .A = dlogits, .lda = ld, .ldb = C,
                       .C = din, .ldc = C, .accumulate = accumulate_din};
        if (m->base_bf16) {
            d.B = m->base_bf16->lm_head + v0 * C;
            whet_compute_gemm_bf16_on(m->compute, &d, worker);
        } else {
            d.B = m->params.lm_head + v0 * C;
            whet_compute_sgemm_on(m->compute, &d, worker);
        }
    }
    if (g && g->p.lm_head) {
        whet_gemm w = {.layout = WHET_GEMM_TN, .M = vc, .N = C, .K = rows, .A = dlogits, .lda = ld, .B = in,
                       .ldb = C, .C = g->p.lm_head + v0 * C, .ldc = C, .accumulate = 1};
        weight_gradient(m, &w, worker);
    }
}

/* ---- the bf16 base ------------------------------------------------------------- */

#define ALIGN_VALUES 32 /* 64 bytes of bf16, 128 of fp32 */

static size_t align_values(size_t n)
{
    return (n + ALIGN_VALUES - 1) / ALIGN_VALUES * ALIGN_VALUES;
}

/* Every fp32 tensor of the model with its size; linear is the projection it
 * holds (WHET_LIN_COUNT: the untied LM head; -1: anything kept in fp32). */
typedef struct param_field {
    float **view;
    size_t n;
    int linear;
} param_field;

#define MAX_FIELDS 32

static size_t param_fields(const whet_model_config *c, whet_model_params *p, param_field *f)
{
    size_t L = c->layers, C = c->hidden, V = c->vocab, F = c->ffn, HD = c->head_dim;
    size_t QD = c->heads * HD, KVD = c->kv_heads * HD;
    const param_field all[] = {
        {&p->wte, V * C, -1},          {&p->wpe, c->max_positions * C, -1},
        {&p->ln1_w, L * C, -1},        {&p->ln1_b, L * C, -1},
        {&p->wq, L * QD * C, WHET_LIN_Q}, {&p->bq, L * QD, -1},
        {&p->wk, L * KVD * C, WHET_LIN_K}, {&p->bk, L * KVD, -1},
        {&p->wv, L * KVD * C, WHET_LIN_V}, {&p->bv, L * KVD, -1},
        {&p->q_norm, L * HD, -1},      {&p->k_norm, L * HD, -1},
        {&p->wo, L * C * QD, WHET_LIN_O}, {&p->bo, L * C, -1},
        {&p->ln2_w, L * C, -1},        {&p->ln2_b, L * C, -1},
        {&p->w_gate, L * F * C, WHET_LIN_GATE}, {&p->b_gate, L * F, -1},
        {&p->w_up, L * F * C, WHET_LIN_UP}, {&p->b_up, L * F, -1},
        {&p->w_down, L * C * F, WHET_LIN_DOWN}, {&p->b_down, L * C, -1},
        {&p->lnf_w, C, -1},            {&p->lnf_b, C, -1},
        {&p->lm_head, V * C, WHET_LIN_COUNT},
    };
    size_t n = 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (!*all[i].view)
            continue;
        if (all[i].linear == WHET_LIN_COUNT && c->tied)
            continue; /* the same memory as wte, which stays */
        f[n++] = all[i];
    }
    return n;
}

typedef struct convert_job {
    const whet_kernels *k;
    whet_bf16 *dst;
    const float *src;
    size_t n;
} convert_job;

#define CONVERT_BLOCK 65536

static void convert_blocks(void *p, size_t b0, size_t b1)
{
    convert_job *j = p;
    for (size_t b = b0; b < b1; b++) {
        size_t i = b * CONVERT_BLOCK, n = j->n - i < CONVERT_BLOCK ? j->n - i : CONVERT_BLOCK;
        j->k->f32_to_bf16(j->dst + i, j->src + i, n);
    }
}

static void to_bf16(whet_compute *c, whet_bf16 *dst, const float *src, size_t n)
{
    convert_job j = {c->kernels, dst, src, n};
    whet_compute_for(c, (n + CONVERT_BLOCK - 1) / CONVERT_BLOCK, 1, convert_blocks, &j);
}

int whet_model_base_to_bf16(whet_model *m, whet_err *e)
{
    if (m->base_bf16 && m->base_bf16->shadow)
        return whet_fail(e, "%s: the linear weights train with bf16 shadows (--compute bf16); they cannot also be "
                            "a frozen bf16 base", m->path);
    if (m->base_bf16)
        return 0;
    const whet_model_config *c = &m->cfg;
    whet_model_params *p = &m->params;
    param_field f[MAX_FIELDS];
    size_t nf = param_fields(c, p, f);
    size_t values = align_values(c->vocab * c->hidden), kept = 0, kept_exact = 0;
    for (size_t i = 0; i < nf; i++) {
        if (f[i].linear == WHET_LIN_COUNT)
            continue; /* the head, counted above */
        if (f[i].linear >= 0)
            values += align_values(f[i].n);
        else
            kept += align_values(f[i].n), kept_exact += f[i].n;
    }
    struct whet_base_bf16 *bf = calloc(1, sizeof *bf);
    float *fp32 = aligned_alloc(64, (kept ? kept : ALIGN_VALUES) * sizeof(float));
    if (bf)
        bf->memory = aligned_alloc(64, values * sizeof(whet_bf16));
    if (!bf || !bf->memory || !fp32) {
        if (bf)
            free(bf->memory);
        free(bf);
        free(fp32);
        return whet_fail(e, "%s: out of memory for the bf16 base (%.1f MiB)", m->path,
                         (double)values * 2 / (1 << 20));
    }
    bf->count = values;
    /* the head first: tied, it is wte's values, converted before wte moves */
    size_t o = 0;
    bf->lm_head = bf->memory;
    to_bf16(m->compute, bf->lm_head, p->lm_head, c->vocab * c->hidden);
    o += align_values(c->vocab * c->hidden);
    size_t k = 0;
    for (size_t i = 0; i < nf; i++) {
        if (f[i].linear == WHET_LIN_COUNT) {
            *f[i].view = NULL; /* converted above */
        } else if (f[i].linear >= 0) {
            bf->w[f[i].linear] = bf->memory + o;
            to_bf16(m->compute, bf->memory + o, *f[i].view, f[i].n);
            o += align_values(f[i].n);
            *f[i].view = NULL;
        } else {
            memcpy(fp32 + k, *f[i].view, f[i].n * sizeof(float));
            *f[i].view = fp32 + k;
            k += align_values(f[i].n);
        }
    }
    if (c->tied)
        p->lm_head = p->wte;
    free(m->params_memory);
    m->params_memory = fp32;
    m->num_params = kept_exact;
    m->base_bf16 = bf;
    return 0;
}

int whet_model_compute_bf16(whet_model *m, whet_err *e)
{
    if (m->base_bf16)
        return m->base_bf16->shadow ? 0
                                    : whet_fail(e, "%s: the base is held in bf16 already (frozen, fp32 released): "
                                                   "its weights cannot train", m->path);
    const whet_model_config *c = &m->cfg;
    whet_model_params *p = &m->params;
    param_field f[MAX_FIELDS];
    size_t nf = param_fields(c, p, f);
    size_t values = align_values(c->vocab * c->hidden);
    for (size_t i = 0; i < nf; i++)
        if (f[i].linear >= 0 && f[i].linear < WHET_LIN_COUNT)
            values += align_values(f[i].n);
    struct whet_base_bf16 *bf = calloc(1, sizeof *bf);
    if (bf)
        bf->memory = aligned_alloc(64, values * sizeof(whet_bf16));
    if (!bf || !bf->memory) {
        free(bf);
        return whet_fail(e, "%s: out of memory for the bf16 shadows of the weights (%.1f MiB)", m->path,
                         (double)values * 2 / (1 << 20));
    }
    bf->count = values;
    bf->shadow = 1;
    bf->lm_head = bf->memory;
    bf->src[WHET_LIN_COUNT] = p->lm_head; /* tied: wte */
    bf->n[WHET_LIN_COUNT] = c->vocab * c->hidden;
    size_t o = align_values(c->vocab * c->hidden);
    for (size_t i = 0; i < nf; i++)
        if (f[i].linear >= 0 && f[i].linear < WHET_LIN_COUNT) {
            bf->w[f[i].linear] = bf->memory + o;
            bf->src[f[i].linear] = *f[i].view;
            bf->n[f[i].linear] = f[i].n;
            o += align_values(f[i].n);
        }
    m->base_bf16 = bf;
    whet_model_bf16_refresh(m);
    return 0;
}

/* The shadow of tensor i (w[i], or the head for WHET_LIN_COUNT). */
static whet_bf16 *shadow_of(struct whet_base_bf16 *bf, int i)
{
    return i == WHET_LIN_COUNT ? bf->lm_head : bf->w[i];
}

void whet_model_bf16_refresh(whet_model *m)
{
    struct whet_base_bf16 *bf = m->base_bf16;
    if (!bf || !bf->shadow)
        return;
    for (int i = 0; i <= WHET_LIN_COUNT; i++)
        if (bf->src[i])
            to_bf16(m->compute, shadow_of(bf, i), bf->src[i], bf->n[i]);
}

whet_bf16 *whet_model_bf16_shadow(const whet_model *m, const float *master, size_t n)
{
    struct whet_base_bf16 *bf = m->base_bf16;
    if (!bf || !bf->shadow || !master)
        return NULL;
    for (int i = 0; i <= WHET_LIN_COUNT; i++) {
        /* compared as addresses: master may point into any tensor */
        uintptr_t lo = (uintptr_t)bf->src[i], at = (uintptr_t)master;
        if (bf->src[i] && at >= lo && at < lo + bf->n[i] * sizeof(float)) {
            size_t offset = (size_t)(master - bf->src[i]);
            return offset + n <= bf->n[i] ? shadow_of(bf, i) + offset : NULL;
        }
    }
    return NULL;
}

size_t whet_model_base_bf16_bytes(const whet_model *m)
{
    return m->base_bf16 ? m->base_bf16->count * sizeof(whet_bf16) : 0;
}

void whet_model_base_bf16_free(whet_model *m)
{
    if (!m || !m->base_bf16)
        return;
    free(m->base_bf16->memory);
    free(m->base_bf16);
    m->base_bf16 = NULL;
}
