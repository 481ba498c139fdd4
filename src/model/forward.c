/* The fp32 forward pass, llm.c style: activations in one allocation with
 * named views, each layer's forward read top-down, every heavy operation
 * through the kernel table (GEMMs via whet_compute_sgemm, row-wise kernels
 * split over rows with whet_compute_for, attention over (example, part of
 * its rows, head)). */
#include "model/model.h"

#include "model/forward_internal.h"
#include "model/lora.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN_FLOATS 16

static size_t take(float **view, float *base, size_t offset, size_t n)
{
    if (view)
        *view = base ? base + offset : NULL;
    return offset + (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
}

/* ---- activation layout ------------------------------------------------------ */

/* One layer slot's views at base + offset; returns the floats one slot takes.
 * Without x_in (checkpointing) the slot's x_in is left NULL: each layer's
 * input lives in its own buffer outside the slot. ln1, ln2 and h are not in
 * the slot either: they are cheap to recompute (a norm, an activation) and
 * take 2·C + F floats a row, so every layer's views point at shared buffers
 * (layout_acts) and the backward pass recomputes them (whet_block_recompute_ln1
 * and the like). */
static size_t layout_layer(const whet_model_config *c, size_t B, size_t T, int with_x_in, whet_layer_acts *la,
                           float *base)
{
    const whet_arch_info *info = c->info;
    size_t BT = B * T, F = c->ffn;
    size_t QD = c->heads * c->head_dim, KVD = c->kv_heads * c->head_dim;
    int layer_norm = info->norm == WHET_NORM_LAYER;
    whet_layer_acts dummy;
    if (!la)
        la = &dummy;
    memset(la, 0, sizeof *la);
    size_t o = 0;
    if (with_x_in)
        o = take(&la->x_in, base, o, BT * c->hidden);
    if (layer_norm)
        o = take(&la->ln1_mean, base, o, BT);
    o = take(&la->ln1_rstd, base, o, BT);
    if (info->qk_norm) {
        o = take(&la->q_raw, base, o, BT * QD);
        o = take(&la->k_raw, base, o, BT * KVD);
        o = take(&la->q_rstd, base, o, BT * c->heads);
        o = take(&la->k_rstd, base, o, BT * c->kv_heads);
    }
    o = take(&la->q, base, o, BT * QD);
    o = take(&la->k, base, o, BT * KVD);
    o = take(&la->v, base, o, BT * KVD);
    o = take(&la->att, base, o, BT * QD);
    o = take(&la->att_lse, base, o, BT * c->heads);
    o = take(&la->x_mid, base, o, BT * c->hidden);
    if (layer_norm)
        o = take(&la->ln2_mean, base, o, BT);
    o = take(&la->ln2_rstd, base, o, BT);
    if (info->act == WHET_ACT_SWIGLU)
        o = take(&la->gate, base, o, BT * F);
    o = take(&la->up, base, o, BT * F);
    return o;
}

/* Rows per block of the training LM head (model/backward.c): a block's logits
 * over the whole vocabulary are held at once, so the block shrinks for large
 * vocabularies to keep them within WHET_HEAD_LOGITS_FLOATS. */
static size_t head_block_rows(size_t BT, size_t V)
{
    size_t rows = WHET_CE_ROWS;
    V = (V + WHET_CE_VOCAB - 1) / WHET_CE_VOCAB * WHET_CE_VOCAB;
    while (rows > WHET_HEAD_MIN_ROWS && rows * V > WHET_HEAD_LOGITS_FLOATS)
        rows /= 2;
    return rows < BT ? rows : BT;
}

/* The backward pass's buffers (one set, reused by every layer). ln and
 * row_scale come first; the rest are scratch of the layers' backward, dead
 * while the training LM head runs (before the layers' backward), so the
 * head's logits [head_rows, V] share their memory: the scratch is as large as
 * the larger of the two. */
static size_t layout_grad_acts(const whet_model_config *c, size_t BT, size_t head_rows, size_t attn_parts,
                               whet_acts *a, float *base)
{
    size_t C = c->hidden, F = c->ffn, QD = c->heads * c->head_dim, KVD = c->kv_heads * c->head_dim;
    whet_grad_acts dummy, *d = a ? &a->d : &dummy;
    memset(d, 0, sizeof *d);
    size_t o = 0;
    o = take(&d->ln, base, o, BT * C);
    o = take(&d->row_scale, base, o, BT);
    size_t scratch = o;
    o = take(&d->res, base, o, BT * C);
    o = take(&d->att, base, o, BT * QD);
    o = take(&d->q, base, o, BT * QD);
    o = take(&d->k, base, o, BT * KVD);
    o = take(&d->v, base, o, BT * KVD);
    if (c->info->qk_norm) {
        o = take(&d->q_raw, base, o, BT * QD);
        o = take(&d->k_raw, base, o, BT * KVD);
    }
    if (c->heads > c->kv_heads || attn_parts > 1) { /* parts·group slots of [BT, KVD]: parts·[BT, QD] */
        o = take(&d->k_parts, base, o, attn_parts * BT * QD);
        o = take(&d->v_parts, base, o, attn_parts * BT * QD);
    }
    o = take(&d->h, base, o, BT * F);
    if (c->info->act == WHET_ACT_SWIGLU)
        o = take(&d->gate, base, o, BT * F);
    o = take(&d->up, base, o, BT * F);
    size_t chunks = (c->vocab + WHET_CE_VOCAB - 1) / WHET_CE_VOCAB;
    float *head[3];
    size_t head_end = take(&head[0], base, scratch, chunks * head_rows * WHET_CE_VOCAB);
    head_end = take(&head[1], base, head_end, 2 * chunks * head_rows);
    head_end = take(&head[2], base, head_end, WHET_HEAD_GROUPS * head_rows * C);
    if (a)
        a->head_logits = head[0], a->head_lse_parts = head[1], a->head_dln_parts = head[2];
    return o > head_end ? o : head_end;
}

static int32_t *take_ints(float *base, size_t *o, size_t n)
{
    float *view;
    *o = take(&view, base, *o, n); /* int32 shares the float slot size */
    return (int32_t *)view;
}

/* The whole activation layout; with a, fills its views from base.
 *   REUSE:      one layer slot, the stream updated in place (inference);
 *   KEEP:       L slots (training: the backward reads every layer's);
 *   CHECKPOINT: L inputs x_in, one slot the backward recomputes layers into;
 * in every mode one ln [BT, C] (ln1, then ln2) and one h [BT, F] shared by
 * all layers. An adapter's scratch is lora_floats per layer (model/lora.h:
 * slot l unless REUSE; under CHECKPOINT too, being small, so each layer keeps
 * its own). */
static size_t layout_acts(const whet_model_config *c, size_t B, size_t T, int mode, size_t lora_floats,
                          size_t attn_part_rows, whet_acts *a, float *base)
{
    size_t BT = B * T, C = c->hidden, L = c->layers;
    int keep = mode == WHET_ACTS_KEEP, checkpoint = mode == WHET_ACTS_CHECKPOINT;
    size_t per_layer = layout_layer(c, B, T, !checkpoint, NULL, NULL);
    size_t slots = keep ? L : 1;
    size_t o = slots * per_layer;
    if (a)
        for (size_t l = 0; l < L; l++)
            layout_layer(c, B, T, !checkpoint, &a->layers[l], base ? base + (keep ? l : 0) * per_layer : NULL);
    float *dummy, *ln, *h;
    o = take(&ln, base, o, BT * C);
    o = take(&h, base, o, BT * c->ffn);
    if (a)
        for (size_t l = 0; l < L; l++)
            a->layers[l].ln1 = a->layers[l].ln2 = ln, a->layers[l].h = h;
    if (checkpoint)
        for (size_t l = 0; l < L; l++)
            o = take(a ? &a->layers[l].x_in : &dummy, base, o, BT * C);
    /* inference updates the stream in place in the one layer slot */
    if (keep || checkpoint)
        o = take(a ? &a->x_final : &dummy, base, o, BT * C);
    else if (a)
        a->x_final = a->layers[0].x_in;
    o = take(a ? &a->lnf : &dummy, base, o, BT * C);
    if (c->info->norm == WHET_NORM_LAYER)
        o = take(a ? &a->lnf_mean : &dummy, base, o, BT);
    o = take(a ? &a->lnf_rstd : &dummy, base, o, BT);
    o = take(a ? &a->proj : &dummy, base, o, BT * C);
    o = take(a ? &a->lse : &dummy, base, o, BT);
    o = take(a ? &a->ce_max : &dummy, base, o, BT);
    o = take(a ? &a->ce_sum : &dummy, base, o, BT);
    o = take(a ? &a->ce_target : &dummy, base, o, BT);
    o = take(a ? &a->ce_chunk : &dummy, base, o, (size_t)WHET_CE_ROWS * WHET_CE_VOCAB);
    o = take(a ? &a->ce_part_max : &dummy, base, o, WHET_CE_ROWS);
    o = take(a ? &a->ce_part_sum : &dummy, base, o, WHET_CE_ROWS);
    int32_t *ints[6];
    for (int i = 0; i < 6; i++)
        ints[i] = take_ints(base, &o, i == 5 ? BT + 1 : BT);
    if (a) {
        a->positions = ints[0], a->seg_start = ints[1], a->tokens = ints[2];
        a->seg_row = ints[3], a->seg_len = ints[4], a->seg_part0 = ints[5];
    }
    if (lora_floats)
        o = take(a ? &a->lora : &dummy, base, o, (mode == WHET_ACTS_REUSE ? 1 : L) * lora_floats);
    if (keep || checkpoint) {
        size_t head_rows = head_block_rows(BT, c->vocab);
        if (a)
            a->head_rows = head_rows;
        size_t attn_parts = (T + attn_part_rows - 1) / attn_part_rows;
        o += layout_grad_acts(c, BT, head_rows, attn_parts, a, base ? base + o : NULL);
    }
    return o;
}

whet_memory_estimate whet_model_memory(const whet_model_config *cfg, size_t B, size_t T, int keep_layers)
{
    whet_memory_estimate m;
    m.weights = whet_model_param_count(cfg) * sizeof(float);
    size_t part_rows = whet_attn_part_rows(T);
    m.activations = layout_acts(cfg, B, T, keep_layers, 0, part_rows, NULL, NULL) * sizeof(float);
    m.activations_kept = layout_acts(cfg, B, T, WHET_ACTS_KEEP, 0, part_rows, NULL, NULL) * sizeof(float);
    m.activations_checkpointed = layout_acts(cfg, B, T, WHET_ACTS_CHECKPOINT, 0, part_rows, NULL, NULL) * sizeof(float);
    m.kv_cache = 2 * cfg->layers * B * T * cfg->kv_heads * cfg->head_dim * sizeof(float);
    return m;
}

size_t whet_attn_part_rows(size_t T)
{
    size_t rows = (T + WHET_ATTN_MAX_PARTS - 1) / WHET_ATTN_MAX_PARTS;
    rows = (rows + WHET_ATTN_PART_ROWS - 1) / WHET_ATTN_PART_ROWS * WHET_ATTN_PART_ROWS;
    return rows > WHET_ATTN_PART_ROWS ? rows : WHET_ATTN_PART_ROWS;
}

whet_acts *whet_acts_create(const whet_model *m, size_t B, size_t T, int keep_layers, whet_err *e)
{
    return whet_acts_create_parts(m, B, T, keep_layers, whet_attn_part_rows(T), e);
}

whet_acts *whet_acts_create_parts(const whet_model *m, size_t B, size_t T, int keep_layers, size_t attn_part_rows,
                                  whet_err *e)
{
    if (B == 0 || T == 0) {
        whet_fail(e, "%s: activations need at least one sequence of one token (asked for %zu × %zu)", m->path, B, T);
        return NULL;
    }
    if (attn_part_rows == 0) {
        whet_fail(e, "%s: attention's query rows cannot go in parts of 0 rows", m->path);
        return NULL;
    }
    if (keep_layers < WHET_ACTS_REUSE || keep_layers > WHET_ACTS_CHECKPOINT) {
        whet_fail(e, "%s: activation mode %d is not one of 0 (reuse), 1 (keep) or 2 (checkpoint)", m->path,
                  keep_layers);
        return NULL;
    }
    whet_acts *a = calloc(1, sizeof *a);
    if (!a)
        goto oom;
    a->B = B, a->T = T, a->keep_layers = keep_layers, a->attn_part_rows = attn_part_rows;
    a->slot_layer = SIZE_MAX;
    a->layers = calloc(m->cfg.layers, sizeof *a->layers);
    if (!a->layers)
        goto oom;
    size_t lora_floats = m->lora ? whet_lora_acts_floats(m, B * T) : 0;
    a->floats = layout_acts(&m->cfg, B, T, keep_layers, lora_floats, attn_part_rows, NULL, NULL);
    a->memory = aligned_alloc(64, a->floats * sizeof(float));
    if (!a->memory)
        goto oom;
    layout_acts(&m->cfg, B, T, keep_layers, lora_floats, attn_part_rows, a, a->memory);
    return a;
oom:
    whet_fail(e, "%s: out of memory for activations of %zu × %zu tokens", m->path, B, T);
    whet_acts_free(a);
    return NULL;
}

void whet_acts_free(whet_acts *a)
{
    if (!a)
        return;
    free(a->memory);
    free(a->layers);
    free(a);
}

/* ---- parallel helpers: each splits rows (or heads) across the pool ---------- */

size_t whet_grain_for(size_t n_per_row)
{
    size_t g = 8192 / (n_per_row ? n_per_row : 1);
    return g ? g : 1;
}

#define grain_for whet_grain_for

typedef whet_norm_job norm_job;

void whet_norm_rows(void *p, size_t r0, size_t r1)
{
    norm_job *j = p;
    size_t n = j->n;
    if (j->kind == WHET_NORM_RMS)
        j->k->rmsnorm_forward(j->y + r0 * n, j->rstd ? j->rstd + r0 : NULL, j->x + r0 * n, j->w, r1 - r0, n, j->eps);
    else
        j->k->layernorm_forward(j->y + r0 * n, j->mean ? j->mean + r0 : NULL, j->rstd ? j->rstd + r0 : NULL,
                                j->x + r0 * n, j->w, j->b, r1 - r0, n, j->eps);
}

/* y[rows, n] = norm(x) with weight w (and bias b, LayerNorm) */
static void norm_forward(whet_compute *c, whet_norm_kind kind, float *y, float *mean, float *rstd, const float *x,
                         const float *w, const float *b, size_t rows, size_t n, float eps)
{
    norm_job j = {c->kernels, kind, y, mean, rstd, x, w, b, n, eps};
    whet_compute_for(c, rows, grain_for(n), whet_norm_rows, &j);
}

typedef struct add_job {
    const whet_kernels *k;
    float *y;
    const float *a, *b;
    size_t n;
    int broadcast_b; /* b is one row added to every row */
} add_job;

static void add_rows(void *p, size_t r0, size_t r1)
{
    add_job *j = p;
    for (size_t r = r0; r < r1; r++)
        j->k->add(j->y + r * j->n, j->a + r * j->n, j->broadcast_b ? j->b : j->b + r * j->n, j->n);
}

/* y[rows, n] = a + b (b: [rows, n], or [n] broadcast) */
static void add_forward(whet_compute *c, float *y, const float *a, const float *b, size_t rows, size_t n, int broadcast)
{
    add_job j = {c->kernels, y, a, b, n, broadcast};
    whet_compute_for(c, rows, grain_for(n), add_rows, &j);
}

/* y = a + b, then norm(y), on the same rows while they are in cache */
typedef struct add_norm_job {
    add_job add;
    norm_job norm;
} add_norm_job;

static void add_norm_rows(void *p, size_t r0, size_t r1)
{
    add_norm_job *j = p;
    add_rows(&j->add, r0, r1);
    whet_norm_rows(&j->norm, r0, r1);
}

typedef struct act_job {
    const whet_kernels *k;
    whet_act_kind kind;
    float *h;
    const float *gate, *up;
    size_t n;
} act_job;

static void act_rows(void *p, size_t r0, size_t r1)
{
    act_job *j = p;
    size_t off = r0 * j->n, n = (r1 - r0) * j->n;
    if (j->kind == WHET_ACT_SWIGLU)
        j->k->swiglu_forward(j->h + off, j->gate + off, j->up + off, n);
    else
        j->k->gelu_forward(j->h + off, j->up + off, n);
}

void whet_rope_rows(void *p, size_t t0, size_t t1)
{
    whet_rope_job *j = p;
    size_t stride = j->heads * j->head_dim;
    j->k->rope(j->x + t0 * stride, t1 - t0, j->heads, j->head_dim, stride, j->positions + t0, j->cos, j->sin,
               j->pairing, j->inverse);
}

whet_rope_job whet_rope_job_for(const whet_model *m, float *x, size_t heads, const int32_t *positions, int inverse)
{
    return (whet_rope_job){m->compute->kernels, x, heads, m->cfg.head_dim, positions, m->rope_cos, m->rope_sin,
                           m->cfg.info->rope_pairing, inverse};
}

static void rope_apply_qk(whet_model *m, float *q, float *k, size_t rows, const int32_t *positions)
{
    size_t HD = m->cfg.head_dim, NH = m->cfg.heads, NKV = m->cfg.kv_heads;
    whet_rope_job jq = whet_rope_job_for(m, q, NH, positions, 0), jk = whet_rope_job_for(m, k, NKV, positions, 0);
    whet_jobs jobs;
    whet_jobs_init(&jobs, m->compute);
    whet_jobs_for(&jobs, rows, grain_for(NH * HD), whet_rope_rows, &jq);
    whet_jobs_for(&jobs, rows, grain_for(NKV * HD), whet_rope_rows, &jk);
    whet_jobs_run(&jobs);
}

typedef struct attn_job {
    const whet_kernels *k;
    const whet_model_config *cfg;
    const whet_acts *a;
    float *out, *lse;
    const float *q, *k_base, *v_base;
    size_t T, q_offset;
    whet_kv_cache *kv;    /* decoding: keys and values from the cache, up to q_offset + T */
} attn_job;

/* items are whet_attn_task's (segment, part, head) tasks: a segment is one
 * packed example (a whole sequence without packing), whose queries attend to
 * its own keys only. A part's log-sum-exps sit at att_lse + b·NH·T +
 * NH·(row0 + r0) as [NH, n], the kernel's per-call layout, so the parts tile
 * each sequence's [NH·T] block and the backward finds them the same way. */
static void attn_items(void *p, size_t i0, size_t i1)
{
    attn_job *j = p;
    const whet_model_config *c = j->cfg;
    size_t NH = c->heads, HD = c->head_dim, QD = NH * HD, KVD = c->kv_heads * HD;
    float scale = 1.0f / sqrtf((float)HD);
    for (size_t i = i0; i < i1; i++) {
        whet_attn_task t = whet_attn_task_of(j->a, NH, i);
        size_t b = t.row / j->T, row0 = t.row % j->T, q_row = t.row + t.r0;
        const float *k, *v;
        size_t n_kv, q_offset;
        if (j->kv) {
            k = j->k_base + b * j->kv->max_T * KVD, v = j->v_base + b * j->kv->max_T * KVD;
            q_offset = j->q_offset + t.r0;
        } else {
            k = j->k_base + t.row * KVD, v = j->v_base + t.row * KVD;
            q_offset = t.r0;
        }
        n_kv = q_offset + t.n;
        j->k->attention_forward(j->out + q_row * QD, j->lse + b * NH * j->T + NH * (row0 + t.r0), j->q + q_row * QD,
                                k, v, t.n, n_kv, q_offset, NH, c->kv_heads, HD, QD, KVD, QD, scale, t.h, t.h + 1);
    }
}

typedef struct embed_job {
    const whet_model *m;
    float *x;
    const int32_t *tokens, *positions;
} embed_job;

static void embed_rows(void *p, size_t r0, size_t r1)
{
    embed_job *j = p;
    const whet_model_params *w = &j->m->params;
    size_t C = j->m->cfg.hidden;
    for (size_t r = r0; r < r1; r++) {
        const float *e = w->wte + (size_t)j->tokens[r] * C;
        if (w->wpe)
            j->m->compute->kernels->add(j->x + r * C, e, w->wpe + (size_t)j->positions[r] * C, C);
        else
            memcpy(j->x + r * C, e, C * sizeof(float));
    }
}

/* ---- RoPE tables, grown on demand ----------------------------------------- */

static int ensure_rope(whet_model *m, size_t n, whet_err *e)
{
    if (m->cfg.info->positions != WHET_POS_ROPE || n <= m->rope_len)
        return 0;
    size_t len = m->rope_len ? m->rope_len : 256;
    while (len < n)
        len *= 2;
    if (len > m->cfg.max_positions && n <= m->cfg.max_positions)
        len = m->cfg.max_positions;
    size_t half = m->cfg.head_dim / 2;
    float *cs = malloc(len * half * sizeof *cs), *sn = malloc(len * half * sizeof *sn);
    if (!cs || !sn) {
        free(cs), free(sn);
        return whet_fail(e, "%s: out of memory for RoPE tables of %zu positions", m->path, len);
    }
    whet_rope_tables(&m->cfg, len, cs, sn);
    free(m->rope_cos), free(m->rope_sin);
    m->rope_cos = cs, m->rope_sin = sn, m->rope_len = len;
    return 0;
}

/* ---- the transformer -------------------------------------------------------- */

/* One block, llm.c style. x_in → ln1 → q,k,v (+bias, q/k norm, RoPE) → causal
 * attention → o_proj → x_mid = x_in + o → ln2 → MLP → x_out = x_mid + down.
 * Every projection goes through whet_linear_forward (base weight, bias and
 * the adapter, when one is attached). With kv, the new k/v rows are appended
 * to the cache at pos0 and attention reads the cache (keys [0, pos0 + T)). */
static void block_forward(whet_model *m, whet_acts *a, size_t l, size_t B, size_t T, size_t pos0, whet_kv_cache *kv,
                          float *x_out, int ln1_ready, const norm_job *next_norm)
{
    whet_compute *c = m->compute;
    const whet_model_config *cfg = &m->cfg;
    const whet_model_params *p = &m->params;
    whet_layer_acts *la = &a->layers[l];
    const size_t BT = B * T, C = cfg->hidden, F = cfg->ffn, HD = cfg->head_dim;
    const size_t NH = cfg->heads, NKV = cfg->kv_heads, KVD = NKV * HD;
    const whet_norm_kind nk = cfg->info->norm;
#define LAYER(ptr, n) ((ptr) ? (ptr) + l * (n) : NULL)

    /* attention */
    if (!ln1_ready)
        norm_forward(c, nk, la->ln1, la->ln1_mean, la->ln1_rstd, la->x_in, LAYER(p->ln1_w, C), LAYER(p->ln1_b, C), BT,
                     C, cfg->norm_eps);
    /* q, k and v of ln1 in one go (whet_linear_forward_set) */
    const whet_linear_id qkv[3] = {WHET_LIN_Q, WHET_LIN_K, WHET_LIN_V};
    float *qkv_out[3] = {la->q, la->k, la->v};
    if (cfg->info->qk_norm) /* Qwen3: project, then RMSNorm each head's q and k (over HD), then RoPE */
        qkv_out[0] = la->q_raw, qkv_out[1] = la->k_raw;
    whet_linear_forward_set(m, a, l, qkv, qkv_out, 3, la->ln1, BT);
    if (cfg->info->qk_norm) {
        norm_forward(c, WHET_NORM_RMS, la->q, NULL, la->q_rstd, la->q_raw, LAYER(p->q_norm, HD), NULL, BT * NH, HD,
                     cfg->norm_eps);
        norm_forward(c, WHET_NORM_RMS, la->k, NULL, la->k_rstd, la->k_raw, LAYER(p->k_norm, HD), NULL, BT * NKV, HD,
                     cfg->norm_eps);
    }
    if (cfg->info->positions == WHET_POS_ROPE) {
        rope_apply_qk(m, la->q, la->k, BT, a->positions);
    }
    attn_job aj = {.k = c->kernels, .cfg = cfg, .a = a, .out = la->att, .lse = la->att_lse, .q = la->q, .T = T};
    if (kv) {
        float *kc = kv->k + l * kv->layer_stride, *vc = kv->v + l * kv->layer_stride;
        for (size_t b = 0; b < B; b++) {
            memcpy(kc + (b * kv->max_T + pos0) * KVD, la->k + b * T * KVD, T * KVD * sizeof(float));
            memcpy(vc + (b * kv->max_T + pos0) * KVD, la->v + b * T * KVD, T * KVD * sizeof(float));
        }
        aj.k_base = kc, aj.v_base = vc, aj.q_offset = pos0, aj.kv = kv;
    } else {
        aj.k_base = la->k, aj.v_base = la->v, aj.q_offset = 0;
    }
    whet_compute_for_items(c, whet_attn_task_count(a, NH), 1, attn_items, &aj);
    whet_linear_forward(m, a, l, WHET_LIN_O, a->proj, la->att, BT);

    /* MLP: x_mid = x_in + o and its norm, row by row in one job */
    add_norm_job an = {{c->kernels, la->x_mid, la->x_in, a->proj, C, 0},
                       {c->kernels, nk, la->ln2, la->ln2_mean, la->ln2_rstd, la->x_mid, LAYER(p->ln2_w, C),
                        LAYER(p->ln2_b, C), C, cfg->norm_eps}};
    whet_compute_for(c, BT, grain_for(C), add_norm_rows, &an);
    if (cfg->info->act == WHET_ACT_SWIGLU) {
        const whet_linear_id ids[2] = {WHET_LIN_GATE, WHET_LIN_UP};
        float *outs[2] = {la->gate, la->up};
        whet_linear_forward_set(m, a, l, ids, outs, 2, la->ln2, BT);
    } else {
        whet_linear_forward(m, a, l, WHET_LIN_UP, la->up, la->ln2, BT);
    }
    act_job xj = {c->kernels, cfg->info->act, la->h, la->gate, la->up, F};
    whet_compute_for(c, BT, grain_for(F), act_rows, &xj);
    whet_linear_forward(m, a, l, WHET_LIN_DOWN, a->proj, la->h, BT);
    if (next_norm) { /* x_out = x_mid + down and the next norm of x_out, row by row in one job */
        add_norm_job out = {{c->kernels, x_out, la->x_mid, a->proj, C, 0}, *next_norm};
        out.norm.x = x_out;
        whet_compute_for(c, BT, grain_for(C), add_norm_rows, &out);
    } else {
        add_forward(c, x_out, la->x_mid, a->proj, BT, C, 0);
    }
#undef LAYER
}

void whet_block_recompute(whet_model *m, whet_acts *a, size_t l)
{
    if (a->slot_layer == l)
        return;
    /* x_out is discarded: the next layer's input is kept already (the add may
     * write over proj, its own operand) */
    block_forward(m, a, l, a->cur_B, a->cur_T, 0, NULL, a->proj, 0, NULL);
    a->slot_layer = l;
}

/* The norms again from the kept x_in / x_mid, the activation from the kept
 * gate and up: the forward's calls on the forward's inputs, so the same bits
 * (the kept mean and rstd are not written: the kernels' y does not depend on
 * whether they store them). */
whet_norm_job whet_block_ln_job(whet_model *m, whet_acts *a, size_t l, int which)
{
    const whet_model_config *cfg = &m->cfg;
    const whet_model_params *p = &m->params;
    whet_layer_acts *la = &a->layers[l];
    size_t C = cfg->hidden;
    const float *w = which == 1 ? p->ln1_w : p->ln2_w, *b = which == 1 ? p->ln1_b : p->ln2_b;
    return (whet_norm_job){m->compute->kernels, cfg->info->norm, which == 1 ? la->ln1 : la->ln2, NULL, NULL,
                           which == 1 ? la->x_in : la->x_mid, w + l * C, b ? b + l * C : NULL, C, cfg->norm_eps};
}

void whet_block_recompute_h(whet_model *m, whet_acts *a, size_t l)
{
    whet_compute *c = m->compute;
    whet_layer_acts *la = &a->layers[l];
    act_job xj = {c->kernels, m->cfg.info->act, la->h, la->gate, la->up, m->cfg.ffn};
    whet_compute_for(c, a->cur_B * a->cur_T, grain_for(m->cfg.ffn), act_rows, &xj);
}

/* Checks a packed batch's positions and example starts and fills the
 * activations' positions, seg_start and segment list; *span is the longest
 * segment, *max_pos the largest position. */
static int set_positions(whet_model *m, whet_acts *a, const int32_t *positions, const int32_t *seg_start, size_t B,
                         size_t T, size_t pos0, size_t *span, size_t *max_pos, whet_err *e)
{
    size_t BT = B * T;
    *span = 0, *max_pos = 0, a->n_segs = 0;
    for (size_t r = 0; r < BT; r++) {
        size_t b = r / T, t = r % T;
        int32_t start = seg_start ? seg_start[r] : 0;
        if (seg_start && !(start == (int32_t)t || (t > 0 && start == seg_start[r - 1])))
            return whet_fail(e, "%s: seg_start %d at sequence %zu, row %zu is not an example start (expected %zu, a "
                                "new example, or %d, the previous row's)",
                             m->path, start, b, t, t, t > 0 ? seg_start[r - 1] : 0);
        int32_t pos = positions ? positions[r] : (int32_t)(pos0 + t - (size_t)start);
        if (pos < 0 || (size_t)pos >= m->cfg.max_positions)
            return whet_fail(e, "%s: position %d (sequence %zu, row %zu) is past the model's %zu positions "
                                "(max_position_embeddings / n_positions in config.json)",
                             m->path, pos, b, t, m->cfg.max_positions);
        if ((size_t)pos > *max_pos)
            *max_pos = (size_t)pos;
        a->positions[r] = pos;
        a->seg_start[r] = start;
        if ((size_t)start == t) {
            a->seg_row[a->n_segs] = (int32_t)r;
            a->seg_len[a->n_segs++] = 0;
        }
        a->seg_len[a->n_segs - 1]++;
        if ((size_t)a->seg_len[a->n_segs - 1] > *span)
            *span = (size_t)a->seg_len[a->n_segs - 1];
    }
    size_t PR = a->attn_part_rows;
    a->seg_part0[0] = 0;
    for (size_t s = 0; s < a->n_segs; s++)
        a->seg_part0[s + 1] = a->seg_part0[s] + (int32_t)(((size_t)a->seg_len[s] + PR - 1) / PR);
    a->attn_parts = (*span + PR - 1) / PR;
    return 0;
}

static int forward_impl(whet_model *m, whet_acts *a, const int32_t *tokens, const int32_t *positions,
                        const int32_t *seg_start, size_t B, size_t T, size_t pos0, whet_kv_cache *kv, whet_err *e)
{
    const whet_model_config *cfg = &m->cfg;
    if (B == 0 || T == 0 || B > a->B || T > a->T)
        return whet_fail(e, "%s: a batch of %zu × %zu tokens does not fit activations made for %zu × %zu", m->path, B,
                         T, a->B, a->T);
    a->lse_ready = 0, a->head_grad_ready = 0;
    if (!positions && !seg_start && pos0 + T > cfg->max_positions)
        return whet_fail(e, "%s: position %zu is past the model's %zu positions (max_position_embeddings / n_positions "
                            "in config.json)", m->path, pos0 + T - 1, cfg->max_positions);
    size_t BT = B * T;
    for (size_t r = 0; r < BT; r++)
        if (tokens[r] < 0 || (size_t)tokens[r] >= cfg->vocab)
            return whet_fail(e, "%s: token id %d (sequence %zu, position %zu) is outside the vocabulary of %zu",
                             m->path, tokens[r], r / T, pos0 + r % T, cfg->vocab);
    size_t span, max_pos;
    if (set_positions(m, a, positions, seg_start, B, T, pos0, &span, &max_pos, e))
        return -1;
    if (kv)
        span = pos0 + T;
    if (cfg->sliding_window && span > cfg->sliding_window)
        return whet_fail(e, "%s: %zu tokens exceed the sliding_window of %zu in config.json; whet computes full "
                            "causal attention only, which equals sliding-window attention within the window",
                         m->path, span, cfg->sliding_window);
    if (ensure_rope(m, max_pos + 1, e))
        return -1;
    /* the layer views were laid out for a->B × a->T rows; the first B·T are used */
    a->cur_B = B, a->cur_T = T, a->lse_ready = 0, a->head_grad_ready = 0;
    memcpy(a->tokens, tokens, BT * sizeof *tokens);

    whet_compute *c = m->compute;
    embed_job ej = {m, a->layers[0].x_in, tokens, a->positions};
    whet_compute_for(c, BT, grain_for(cfg->hidden), embed_rows, &ej);
    /* each layer's residual add also norms its output: the next layer's ln1, and after the last the final norm */
    const whet_model_params *p = &m->params;
    size_t C = cfg->hidden;
    for (size_t l = 0; l < cfg->layers; l++) {
        norm_job next = {c->kernels, cfg->info->norm, a->lnf, a->lnf_mean, a->lnf_rstd, NULL, p->lnf_w, p->lnf_b,
                         C, cfg->norm_eps};
        float *x_out = a->x_final;
        if (l + 1 < cfg->layers) {
            whet_layer_acts *nl = &a->layers[l + 1];
            next.y = nl->ln1, next.mean = nl->ln1_mean, next.rstd = nl->ln1_rstd;
            next.w = p->ln1_w + (l + 1) * C, next.b = p->ln1_b ? p->ln1_b + (l + 1) * C : NULL;
            x_out = nl->x_in;
        }
        block_forward(m, a, l, B, T, pos0, kv, x_out, l > 0, &next);
    }
    a->slot_layer = a->keep_layers == WHET_ACTS_CHECKPOINT ? cfg->layers - 1 : SIZE_MAX;
    return 0;
}

int whet_model_forward_packed(whet_model *m, whet_acts *a, const int32_t *tokens, const int32_t *positions,
                              const int32_t *seg_start, size_t B, size_t T, whet_err *e)
{
    return forward_impl(m, a, tokens, positions, seg_start, B, T, 0, NULL, e);
}

int whet_model_forward(whet_model *m, whet_acts *a, const int32_t *tokens, size_t B, size_t T, whet_err *e)
{
    return whet_model_forward_packed(m, a, tokens, NULL, NULL, B, T, e);
}

/* ---- LM head ---------------------------------------------------------------- */

typedef struct ce_job {
    const whet_kernels *k;
    whet_acts *a;
    size_t r0, vc, v0;  /* first row of the block, chunk width, chunk start */
    const int32_t *targets;
} ce_job;

static void ce_rows(void *p, size_t i0, size_t i1)
{
    ce_job *j = p;
    whet_acts *a = j->a;
    size_t r0 = j->r0;
    for (size_t i = i0; i < i1; i++)
        a->ce_part_max[i] = -INFINITY, a->ce_part_sum[i] = 0.0f;
    j->k->cross_entropy_lse_update(a->ce_part_max + i0, a->ce_part_sum + i0, a->ce_chunk + i0 * WHET_CE_VOCAB,
                                   WHET_CE_VOCAB, i1 - i0, j->vc);
    for (size_t i = i0; i < i1; i++) {
        whet_lse_fold(&a->ce_max[r0 + i], &a->ce_sum[r0 + i], a->ce_part_max[i], a->ce_part_sum[i]);
        int32_t t = j->targets[r0 + i];
        if (t >= 0 && (size_t)t >= j->v0 && (size_t)t < j->v0 + j->vc)
            a->ce_target[r0 + i] = a->ce_chunk[i * WHET_CE_VOCAB + ((size_t)t - j->v0)];
    }
}

int whet_model_nll(whet_model *m, whet_acts *a, const int32_t *targets, float *logprobs, double *mean_nll,
                   whet_err *e)
{
    const whet_model_config *cfg = &m->cfg;
    size_t BT = a->cur_B * a->cur_T, C = cfg->hidden, V = cfg->vocab;
    if (BT == 0)
        return whet_fail(e, "%s: whet_model_nll needs a forward pass first", m->path);
    for (size_t r = 0; r < BT; r++)
        if (targets[r] >= 0 && (size_t)targets[r] >= V)
            return whet_fail(e, "%s: target id %d (row %zu) is outside the vocabulary of %zu", m->path, targets[r], r,
                             V);
    whet_compute *c = m->compute;
    for (size_t r0 = 0; r0 < BT; r0 += WHET_CE_ROWS) {
        size_t rows = BT - r0 < WHET_CE_ROWS ? BT - r0 : WHET_CE_ROWS;
        for (size_t i = 0; i < rows; i++) {
            a->ce_max[r0 + i] = -INFINITY;
            a->ce_sum[r0 + i] = 0.0f;
            a->ce_target[r0 + i] = NAN;
        }
        for (size_t v0 = 0; v0 < V; v0 += WHET_CE_VOCAB) {
            size_t vc = V - v0 < WHET_CE_VOCAB ? V - v0 : WHET_CE_VOCAB;
            whet_lm_head_forward(m, WHET_ALL_WORKERS, a->ce_chunk, WHET_CE_VOCAB, a->lnf + r0 * C, rows, v0, vc);
            ce_job j = {c->kernels, a, r0, vc, v0, targets};
            whet_compute_for(c, rows, grain_for(vc), ce_rows, &j);
        }
    }
    double total = 0;
    size_t counted = 0;
    for (size_t r = 0; r < BT; r++) {
        a->lse[r] = a->ce_max[r] + logf(a->ce_sum[r]);
        float lp = targets[r] >= 0 ? a->ce_target[r] - a->lse[r] : 0.0f;
        if (logprobs)
            logprobs[r] = lp;
        if (targets[r] >= 0) {
            total -= lp;
            counted++;
        }
    }
    *mean_nll = counted ? total / (double)counted : 0.0;
    a->lse_ready = 1;
    return 0;
}

int whet_model_logits(whet_model *m, whet_acts *a, const size_t *rows, size_t n_rows, float *logits, whet_err *e)
{
    size_t BT = a->cur_B * a->cur_T, C = m->cfg.hidden;
    if (BT == 0)
        return whet_fail(e, "%s: whet_model_logits needs a forward pass first", m->path);
    if (!rows && n_rows != BT)
        return whet_fail(e, "%s: all-rows logits need n_rows = %zu, not %zu", m->path, BT, n_rows);
    const float *in = a->lnf;
    float *gathered = NULL;
    if (rows) {
        gathered = malloc(n_rows * C * sizeof *gathered);
        if (!gathered)
            return whet_fail(e, "%s: out of memory gathering %zu rows", m->path, n_rows);
        for (size_t i = 0; i < n_rows; i++) {
            if (rows[i] >= BT) {
                free(gathered);
                return whet_fail(e, "%s: row %zu is past the last forward's %zu rows", m->path, rows[i], BT);
            }
            memcpy(gathered + i * C, a->lnf + rows[i] * C, C * sizeof *gathered);
        }
        in = gathered;
    }
    whet_lm_head_forward(m, WHET_ALL_WORKERS, logits, m->cfg.vocab, in, n_rows, 0, m->cfg.vocab);
    free(gathered);
    return 0;
}

/* ---- KV cache ---------------------------------------------------------------- */

whet_kv_cache *whet_kv_cache_create(const whet_model *m, size_t B, size_t max_T, whet_err *e)
{
    const whet_model_config *c = &m->cfg;
    whet_kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv)
        goto oom;
    kv->B = B, kv->max_T = max_T;
    kv->layer_stride = B * max_T * c->kv_heads * c->head_dim;
    size_t bytes = c->layers * kv->layer_stride * sizeof(float);
    kv->k = malloc(bytes ? bytes : 1);
    kv->v = malloc(bytes ? bytes : 1);
    if (!kv->k || !kv->v)
        goto oom;
    return kv;
oom:
    whet_fail(e, "%s: out of memory for a KV cache of %zu × %zu tokens", m->path, B, max_T);
    whet_kv_cache_free(kv);
    return NULL;
}

void whet_kv_cache_free(whet_kv_cache *kv)
{
    if (!kv)
        return;
    free(kv->k);
    free(kv->v);
    free(kv);
}

void whet_kv_cache_reset(whet_kv_cache *kv)
{
    kv->len = 0;
}

int whet_model_decode(whet_model *m, whet_kv_cache *kv, whet_acts *a, const int32_t *tokens, size_t B, size_t T,
                      float *logits, whet_err *e)
{
    if (B != kv->B)
        return whet_fail(e, "%s: decoding %zu sequences with a KV cache made for %zu", m->path, B, kv->B);
    if (kv->len + T > kv->max_T)
        return whet_fail(e, "%s: %zu more tokens overflow the KV cache (%zu of %zu used)", m->path, T, kv->len,
                         kv->max_T);
    if (forward_impl(m, a, tokens, NULL, NULL, B, T, kv->len, kv, e))
        return -1;
    kv->len += T;
    size_t rows[64], *heap = NULL, *r = rows;
    if (B > 64 && !(r = heap = malloc(B * sizeof *heap)))
        return whet_fail(e, "%s: out of memory", m->path);
    for (size_t b = 0; b < B; b++)
        r[b] = b * T + T - 1;
    int rc = whet_model_logits(m, a, r, B, logits, e);
    free(heap);
    return rc;
}
