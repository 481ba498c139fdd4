/* The backward pass, llm.c style: the forward's steps in reverse, each beside
 * the forward's shape comment, gradients of the activations in one set of
 * buffers (whet_acts.d) reused by every layer, parameter gradients
 * accumulated into whet_model_grads. Work is split as in the forward — rows,
 * columns, (example, part of its rows, head) — never along a reduction (the
 * keys' gradients add the parts' shares in a fixed order), so the gradients
 * are bit-identical for any thread count. Every projection goes through
 * whet_linear_backward, which also takes a LoRA adapter's gradients. */
#include "model/model.h"

#include "model/forward_internal.h"
#include "model/lora.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define grain_for whet_grain_for

/* ---- gradients: layout, selection ------------------------------------------- */

/* Every tensor of the layout: where its view sits in whet_model_params and
 * whether it is stacked over layers. */
typedef struct tensor_desc {
    const char *name;
    size_t offset; /* offsetof(whet_model_params, view) */
    int layered;
} tensor_desc;

#define DESC(view, layered) {#view, offsetof(whet_model_params, view), layered}
static const tensor_desc TENSORS[] = {
    DESC(wte, 0),    DESC(wpe, 0),    DESC(ln1_w, 1),  DESC(ln1_b, 1),  DESC(wq, 1),     DESC(bq, 1),
    DESC(wk, 1),     DESC(bk, 1),     DESC(wv, 1),     DESC(bv, 1),     DESC(q_norm, 1), DESC(k_norm, 1),
    DESC(wo, 1),     DESC(bo, 1),     DESC(ln2_w, 1),  DESC(ln2_b, 1),  DESC(w_gate, 1), DESC(b_gate, 1),
    DESC(w_up, 1),   DESC(b_up, 1),   DESC(w_down, 1), DESC(b_down, 1), DESC(lnf_w, 0),  DESC(lnf_b, 0),
    DESC(lm_head, 0),
};
#undef DESC
#define N_TENSORS (sizeof TENSORS / sizeof *TENSORS)

static float *view_of(const whet_model_params *p, const tensor_desc *d)
{
    return *(float *const *)((const char *)p + d->offset);
}

/* floats of tensor d (per layer when layered) */
static size_t tensor_floats(const whet_model_config *c, const tensor_desc *d)
{
    size_t C = c->hidden, F = c->ffn, HD = c->head_dim, QD = c->heads * HD, KVD = c->kv_heads * HD;
    size_t off = d->offset;
    if (off == offsetof(whet_model_params, wte) || off == offsetof(whet_model_params, lm_head))
        return c->vocab * C;
    if (off == offsetof(whet_model_params, wpe))
        return c->max_positions * C;
    if (off == offsetof(whet_model_params, wq))
        return QD * C;
    if (off == offsetof(whet_model_params, wk) || off == offsetof(whet_model_params, wv))
        return KVD * C;
    if (off == offsetof(whet_model_params, bq))
        return QD;
    if (off == offsetof(whet_model_params, bk) || off == offsetof(whet_model_params, bv))
        return KVD;
    if (off == offsetof(whet_model_params, q_norm) || off == offsetof(whet_model_params, k_norm))
        return HD;
    if (off == offsetof(whet_model_params, wo))
        return C * QD;
    if (off == offsetof(whet_model_params, w_gate) || off == offsetof(whet_model_params, w_up) ||
        off == offsetof(whet_model_params, w_down))
        return F * C;
    if (off == offsetof(whet_model_params, b_gate) || off == offsetof(whet_model_params, b_up))
        return F;
    return C; /* norms, bo, b_down */
}

whet_model_grads *whet_model_grads_create(const whet_model *m, const whet_train_selection *sel, whet_err *e)
{
    const whet_model_config *c = &m->cfg;
    if (sel->full && sel->train_layers > c->layers) {
        whet_fail(e, "%s: cannot train the last %zu layers of a model with %zu", m->path, sel->train_layers,
                  c->layers);
        return NULL;
    }
    whet_model_grads *g = calloc(1, sizeof *g);
    if (!g)
        goto oom;
    g->cfg = *c;
    g->first_layer = c->layers;
    if (!sel->full)
        return g;
    g->first_layer = sel->train_layers ? c->layers - sel->train_layers : 0;
    g->floats = whet_model_layout_params(c, &g->p, NULL);
    /* calloc: zero pages the OS hands out lazily, so frozen layers cost nothing */
    g->memory = calloc(g->floats, sizeof(float));
    if (!g->memory)
        goto oom;
    whet_model_layout_params(c, &g->p, g->memory);
    if (sel->freeze_embeddings) {
        if (c->tied)
            g->p.lm_head = NULL;
        g->p.wte = g->p.wpe = NULL;
    }
    return g;
oom:
    whet_fail(e, "%s: out of memory for gradients (%zu floats)", m->path, g ? g->floats : 0);
    whet_model_grads_free(g);
    return NULL;
}

/* The trained ranges of g; params (may be NULL) gives the matching parameters. */
static size_t trained_ranges(const whet_model_grads *g, const whet_model_params *params, whet_grad_range *out,
                             size_t max)
{
    const whet_model_config *c = &g->cfg;
    size_t n = 0;
    for (size_t i = 0; i < N_TENSORS; i++) {
        const tensor_desc *d = &TENSORS[i];
        float *grad = view_of(&g->p, d), *param = params ? view_of(params, d) : NULL;
        if (!grad || (d->offset == offsetof(whet_model_params, lm_head) && c->tied))
            continue;
        size_t floats = tensor_floats(c, d);
        if (d->layered) {
            if (g->first_layer >= c->layers)
                continue;
            grad += g->first_layer * floats;
            if (param)
                param += g->first_layer * floats;
            floats *= c->layers - g->first_layer;
        }
        if (n < max)
            out[n] = (whet_grad_range){d->name, param, grad, floats};
        n++;
    }
    return n;
}

size_t whet_model_grads_ranges(const whet_model *m, const whet_model_grads *g, whet_grad_range *out, size_t max)
{
    return g ? trained_ranges(g, &m->params, out, max) : 0;
}

void whet_model_grads_zero(whet_model_grads *g)
{
    if (!g)
        return;
    whet_grad_range r[N_TENSORS];
    size_t n = trained_ranges(g, NULL, r, N_TENSORS);
    for (size_t i = 0; i < n; i++)
        memset(r[i].grad, 0, r[i].n * sizeof(float));
}

void whet_model_grads_free(whet_model_grads *g)
{
    if (!g)
        return;
    free(g->memory);
    free(g);
}

/* ---- parallel helpers --------------------------------------------------------- */

typedef struct norm_bw_job {
    const whet_kernels *k;
    whet_norm_kind kind;
    float *dx, *dw, *db;
    const float *dy, *x, *w, *mean, *rstd;
    size_t rows, n;
} norm_bw_job;

/* dx[r0:r1] += ∂L/∂x */
static void norm_bw_input_rows(void *p, size_t r0, size_t r1)
{
    norm_bw_job *j = p;
    size_t n = j->n;
    if (j->kind == WHET_NORM_RMS)
        j->k->rmsnorm_backward_input(j->dx + r0 * n, j->dy + r0 * n, j->x + r0 * n, j->w, j->rstd + r0, r1 - r0, n);
    else
        j->k->layernorm_backward_input(j->dx + r0 * n, j->dy + r0 * n, j->x + r0 * n, j->w, j->mean + r0,
                                       j->rstd + r0, r1 - r0, n);
}

/* dw[c0:c1] (and db) += Σ_rows, each column summing its rows in order */
static void norm_bw_param_cols(void *p, size_t c0, size_t c1)
{
    norm_bw_job *j = p;
    if (j->kind == WHET_NORM_RMS)
        j->k->rmsnorm_backward_weight(j->dw, j->dy, j->x, j->rstd, j->rows, j->n, c0, c1);
    else
        j->k->layernorm_backward_params(j->dw, j->db, j->dy, j->x, j->mean, j->rstd, j->rows, j->n, c0, c1);
}

/* The backward of y = norm(x)·w (+ b) over rows × n: dw, db += (when not
 * NULL) and dx += (when not NULL). */
static void norm_backward(whet_compute *c, whet_norm_kind kind, float *dx, float *dw, float *db, const float *dy,
                          const float *x, const float *w, const float *mean, const float *rstd, size_t rows, size_t n)
{
    norm_bw_job j = {c->kernels, kind, dx, dw, db, dy, x, w, mean, rstd, rows, n};
    whet_jobs jobs; /* the weight's gradient (by columns) and the input's (by rows) are independent: one job */
    whet_jobs_init(&jobs, c);
    if (dw)
        whet_jobs_for(&jobs, n, grain_for(rows), norm_bw_param_cols, &j);
    if (dx)
        whet_jobs_for(&jobs, rows, grain_for(n), norm_bw_input_rows, &j);
    whet_jobs_run(&jobs);
}

typedef struct act_bw_job {
    const whet_kernels *k;
    whet_act_kind kind;
    float *dgate, *dup;
    const float *dh, *gate, *up;
    size_t n;
} act_bw_job;

static void act_bw_rows(void *p, size_t r0, size_t r1)
{
    act_bw_job *j = p;
    size_t off = r0 * j->n, n = (r1 - r0) * j->n;
    if (j->kind == WHET_ACT_SWIGLU)
        j->k->swiglu_backward(j->dgate + off, j->dup + off, j->dh + off, j->gate + off, j->up + off, n);
    else
        j->k->gelu_backward(j->dup + off, j->dh + off, j->up + off, n);
}

typedef struct attn_bw_job {
    const whet_kernels *k;
    const whet_model_config *cfg;
    const whet_acts *a;
    const whet_layer_acts *la;
} attn_bw_job;

/* Attention's backward writes dk and dv straight into place when a KV head
 * has one query head and every segment one part: items are (segment s,
 * head g) pairs, s·NKV + g, each writing the dq, dk and dv of its head, for
 * its rows only.
 *
 * Otherwise a KV head's dk and dv sum over its group's query heads and over
 * the parts of its segment's query rows, and items are the forward's
 * whet_attn_task's (segment, part, query head h) (one sequence of a
 * 3-KV-head model would be 3 (segment, KV head) items, and two threads idled
 * a third of the time): each writes its dq rows and its share of dk, dv, for
 * the keys [0, r0 + n) its queries see, into slot p·group + h % group of
 * k_parts, v_parts; kv_parts_sum then adds, for each key, the slots of the
 * parts that see it, in slot order: a fixed order, whatever the split of the
 * items. */
static int attn_bw_slotted(const whet_model_config *c, const whet_acts *a)
{
    return c->heads > c->kv_heads || a->attn_parts > 1;
}

static void attn_bw_items(void *p, size_t i0, size_t i1)
{
    attn_bw_job *j = p;
    const whet_model_config *c = j->cfg;
    const whet_acts *a = j->a;
    const whet_layer_acts *la = j->la;
    const whet_grad_acts *d = &a->d;
    size_t NH = c->heads, NKV = c->kv_heads, HD = c->head_dim, QD = NH * HD, KVD = NKV * HD, T = a->cur_T;
    size_t slot_floats = a->cur_B * T * KVD;
    float scale = 1.0f / sqrtf((float)HD);
    if (attn_bw_slotted(c, a)) {
        size_t group = NH / NKV;
        for (size_t i = i0; i < i1; i++) {
            whet_attn_task t = whet_attn_task_of(a, NH, i);
            size_t g = t.h / group, slot = t.p * group + t.h % group, b = t.row / T, row0 = t.row % T;
            size_t qo = (t.row + t.r0) * QD + t.h * HD, ko = t.row * KVD + g * HD, part = slot * slot_floats + ko;
            j->k->attention_backward(d->q + qo, d->k_parts + part, d->v_parts + part, d->att + qo, la->att + qo,
                                     la->att_lse + b * NH * T + NH * (row0 + t.r0) + t.h * t.n, la->q + qo,
                                     la->k + ko, la->v + ko, t.n, t.r0 + t.n, t.r0, 1, 1, HD, QD, KVD, QD, scale, 0,
                                     1);
        }
        return;
    }
    for (size_t i = i0; i < i1;) {
        size_t s = i / NKV, g0 = i % NKV;
        size_t g1 = (s + 1) * NKV < i1 ? NKV : i1 - s * NKV;
        size_t row = (size_t)a->seg_row[s], len = (size_t)a->seg_len[s], b = row / T, row0 = row % T;
        j->k->attention_backward(d->q + row * QD, d->k + row * KVD, d->v + row * KVD, d->att + row * QD,
                                 la->att + row * QD, la->att_lse + b * NH * T + NH * row0, la->q + row * QD,
                                 la->k + row * KVD, la->v + row * KVD, len, len, 0, NH, NKV, HD, QD, KVD, QD, scale,
                                 g0, g1);
        i = s * NKV + g1;
    }
}

typedef struct kv_parts_job {
    const whet_kernels *k;
    const whet_acts *a;
    size_t group, slot_floats, KVD; /* slot_floats: BT·KVD */
} kv_parts_job;

/* dk, dv for rows [r0, r1) = Σ of the slots that hold a share of them: for a
 * key t rows into its segment, the parts p ≥ t / attn_part_rows (the ones
 * whose queries see it), each part's group slots in order. Run by run of
 * rows that the same parts see. */
static void kv_parts_sum(void *p, size_t r0, size_t r1)
{
    kv_parts_job *j = p;
    const whet_acts *a = j->a;
    const whet_grad_acts *d = &a->d;
    size_t PR = a->attn_part_rows;
    for (size_t s = whet_last_at_most(a->seg_row, a->n_segs, r0), r = r0; r < r1;) {
        size_t start = (size_t)a->seg_row[s], end = start + (size_t)a->seg_len[s];
        size_t parts = (size_t)(a->seg_part0[s + 1] - a->seg_part0[s]), p0 = (r - start) / PR;
        size_t run_end = start + (p0 + 1) * PR;
        run_end = run_end < end ? run_end : end;
        run_end = run_end < r1 ? run_end : r1;
        size_t off = r * j->KVD, n = (run_end - r) * j->KVD;
        size_t first = p0 * j->group, slots = parts * j->group;
        const float *k0 = d->k_parts + first * j->slot_floats + off, *v0 = d->v_parts + first * j->slot_floats + off;
        if (slots - first == 1) {
            memcpy(d->k + off, k0, n * sizeof(float));
            memcpy(d->v + off, v0, n * sizeof(float));
        } else {
            j->k->add(d->k + off, k0, k0 + j->slot_floats, n);
            j->k->add(d->v + off, v0, v0 + j->slot_floats, n);
        }
        for (size_t sl = first + 2; sl < slots; sl++) {
            j->k->add(d->k + off, d->k + off, d->k_parts + sl * j->slot_floats + off, n);
            j->k->add(d->v + off, d->v + off, d->v_parts + sl * j->slot_floats + off, n);
        }
        r = run_end;
        if (r == end)
            s++;
    }
}

/* After attention's backward, rows [r0, r1): dk, dv summed over the slots
 * (when sum_parts), then RoPE undone on dk (when rope_k.x) */
typedef struct kv_rows_job {
    kv_parts_job parts;
    int sum_parts;
    whet_rope_job rope_k;
} kv_rows_job;

static void kv_rows(void *p, size_t r0, size_t r1)
{
    kv_rows_job *j = p;
    if (j->sum_parts)
        kv_parts_sum(&j->parts, r0, r1);
    if (j->rope_k.x)
        whet_rope_rows(&j->rope_k, r0, r1);
}

typedef struct embed_bw_job {
    const whet_kernels *k;
    const float *dx;
    float *dwte, *dwpe;
    const int32_t *tokens, *positions;
    size_t rows, C;
} embed_bw_job;

/* Scatter-add of the rows into their token's (and position's) gradient row,
 * a range of columns per thread: rows are added in order, so a token seen
 * twice sums the same way for any split. */
static void embed_bw_cols(void *p, size_t c0, size_t c1)
{
    embed_bw_job *j = p;
    size_t C = j->C;
    for (size_t r = 0; r < j->rows; r++) {
        const float *src = j->dx + r * C + c0;
        if (j->dwte) {
            float *dst = j->dwte + (size_t)j->tokens[r] * C + c0;
            j->k->add(dst, dst, src, c1 - c0);
        }
        if (j->dwpe) {
            float *dst = j->dwpe + (size_t)j->positions[r] * C + c0;
            j->k->add(dst, dst, src, c1 - c0);
        }
    }
}

/* ---- the LM head + cross-entropy ------------------------------------------ */

/* loss = Σ_rows row_scale·nll:  dlogits = row_scale·(softmax − onehot);
 * dlnf = Σ_chunks dlogits·lm_head[v0:v0+vc],  dlm_head[v0:v0+vc] += dlogitsᵀ·lnf
 * (whet_lm_head_backward, when g has the head's gradient).
 *
 * Both paths below work a block of rows at a time, vocabulary chunk by chunk,
 * and give the same bits. dlnf's sum over chunks is cut into
 * WHET_HEAD_GROUPS groups of consecutive chunks (head_group): each group's
 * chunks summed in order into its own partial, then the partials in group
 * order; the groups do not depend on the thread count, so neither do the
 * bits. */

static size_t head_chunks(const whet_model *m)
{
    return (m->cfg.vocab + WHET_CE_VOCAB - 1) / WHET_CE_VOCAB;
}

/* Vocabulary columns of chunk `chunk`: WHET_CE_VOCAB, but for the last */
static size_t chunk_width(const whet_model *m, size_t chunk)
{
    size_t v0 = chunk * WHET_CE_VOCAB;
    return m->cfg.vocab - v0 < WHET_CE_VOCAB ? m->cfg.vocab - v0 : WHET_CE_VOCAB;
}

/* Group g's chunks [*c0, *c1), of `groups` near-equal groups of `chunks`. */
static void head_group(size_t chunks, size_t groups, size_t g, size_t *c0, size_t *c1)
{
    *c0 = g * chunks / groups;
    *c1 = (g + 1) * chunks / groups;
}

static size_t head_groups(size_t chunks)
{
    return chunks < WHET_HEAD_GROUPS ? chunks : WHET_HEAD_GROUPS;
}

/* One chunk of a row block, logits in → dlogits out (rows ld apart); rows that
 * do not count (row_scale 0) get zeros, which is what the kernel gives them
 * too unless their logits are not finite. */
static void chunk_dlogits(const whet_kernels *k, float *chunk, size_t ld, size_t rows, size_t v0, size_t vc,
                          const int32_t *targets, const float *lse, const float *row_scale)
{
    k->cross_entropy_backward(chunk, chunk, ld, rows, vc, v0, targets, lse, row_scale);
    for (size_t i = 0; i < rows; i++)
        if (row_scale[i] == 0.0f)
            memset(chunk + i * ld, 0, vc * sizeof(float));
}

typedef struct ce_bw_job {
    const whet_kernels *k;
    float *chunk;           /* [rows, vc] logits in, dlogits out, rows ld apart */
    size_t ld, vc, v0;
    const int32_t *targets;
    const float *lse, *row_scale;
} ce_bw_job;

static void ce_bw_rows(void *p, size_t i0, size_t i1)
{
    ce_bw_job *j = p;
    chunk_dlogits(j->k, j->chunk + i0 * j->ld, j->ld, i1 - i0, j->v0, j->vc, j->targets + i0, j->lse + i0,
                  j->row_scale + i0);
}

typedef struct sum_parts_job {
    const whet_kernels *k;
    float *y;             /* [rows, C] = part 0 (+ part 1 …) */
    const float *parts;   /* [n, rows·C] */
    size_t n, rows, C;
    int first;            /* y = part 0; else y += part 0 (the next group of the two-pass head) */
} sum_parts_job;

static void sum_parts_rows(void *p, size_t r0, size_t r1)
{
    sum_parts_job *j = p;
    size_t off = r0 * j->C, n = (r1 - r0) * j->C;
    for (size_t g = 0; g < j->n; g++) {
        const float *part = j->parts + g * j->rows * j->C + off;
        if (g == 0 && j->first)
            memcpy(j->y + off, part, n * sizeof(float));
        else
            j->k->add(j->y + off, j->y + off, part, n);
    }
}

/* The two-pass head (after whet_model_nll): each chunk's logits recomputed,
 * never all held; a group's dlnf into the first partial, added to dlnf as the
 * group ends. Row blocks of a->head_rows, as whet_model_nll_head_backward's. */
static void lm_head_backward(whet_model *m, whet_acts *a, const int32_t *targets, float *dlnf, whet_model_grads *g)
{
    whet_compute *c = m->compute;
    size_t BT = a->cur_B * a->cur_T, C = m->cfg.hidden, R = a->head_rows;
    size_t chunks = head_chunks(m), groups = head_groups(chunks);
    float *part = a->head_dln_parts;
    for (size_t r0 = 0; r0 < BT; r0 += R) {
        size_t rows = BT - r0 < R ? BT - r0 : R;
        for (size_t grp = 0; grp < groups; grp++) {
            size_t c0, c1;
            head_group(chunks, groups, grp, &c0, &c1);
            for (size_t ch = c0; ch < c1; ch++) {
                size_t v0 = ch * WHET_CE_VOCAB, vc = chunk_width(m, ch);
                whet_lm_head_forward(m, WHET_ALL_WORKERS, a->ce_chunk, WHET_CE_VOCAB, a->lnf + r0 * C, rows, v0, vc);
                ce_bw_job j = {c->kernels, a->ce_chunk, WHET_CE_VOCAB, vc, v0, targets + r0, a->lse + r0,
                               a->d.row_scale + r0};
                whet_compute_for(c, rows, grain_for(vc), ce_bw_rows, &j);
                whet_lm_head_backward(m, WHET_ALL_WORKERS, part, ch > c0, a->ce_chunk, WHET_CE_VOCAB,
                                      a->lnf + r0 * C, rows, v0, vc, g);
            }
            sum_parts_job sj = {c->kernels, dlnf + r0 * C, part, 1, rows, C, grp == 0};
            whet_compute_for(c, rows, grain_for(C), sum_parts_rows, &sj);
        }
    }
}

/* ---- the training LM head: the logits once ---------------------------------- */

/* One row block of whet_model_nll_head_backward. Its chunks (then groups) are
 * pool tasks, taken by whichever thread frees up first, each GEMM on one
 * thread over the whole chunk: the faster thread does more of them, no thread
 * waits on another between chunks, and no operand is packed twice. */
typedef struct head_block_job {
    whet_model *m;
    whet_acts *a;
    const int32_t *targets; /* [BT] */
    whet_model_grads *g;
    size_t r0, rows, chunks, groups;
} head_block_job;

/* Chunk ch's logits, kept in the block's buffer, and their log-sum-exp partial
 * (whet_model_nll's per-chunk update, folded in chunk order afterwards) and
 * targets, while they are in cache. */
static void head_logits_task(void *p, size_t ch, int worker)
{
    head_block_job *j = p;
    whet_model *m = j->m;
    whet_acts *a = j->a;
    size_t C = m->cfg.hidden, rows = j->rows, r0 = j->r0, v0 = ch * WHET_CE_VOCAB, vc = chunk_width(m, ch);
    float *chunk = a->head_logits + v0 * rows;
    whet_lm_head_forward(m, worker, chunk, WHET_CE_VOCAB, a->lnf + r0 * C, rows, v0, vc);
    float *part_max = a->head_lse_parts + ch * rows, *part_sum = part_max + j->chunks * rows;
    for (size_t i = 0; i < rows; i++)
        part_max[i] = -INFINITY, part_sum[i] = 0.0f;
    m->compute->kernels->cross_entropy_lse_update(part_max, part_sum, chunk, WHET_CE_VOCAB, rows, vc);
    for (size_t i = 0; i < rows; i++) {
        int32_t t = j->targets[r0 + i];
        if (t >= 0 && (size_t)t >= v0 && (size_t)t < v0 + vc)
            a->ce_target[r0 + i] = chunk[i * WHET_CE_VOCAB + ((size_t)t - v0)];
    }
}

static void head_fold_rows(void *p, size_t i0, size_t i1)
{
    head_block_job *j = p;
    whet_acts *a = j->a;
    for (size_t i = i0; i < i1; i++) {
        float *max = &a->ce_max[j->r0 + i], *sum = &a->ce_sum[j->r0 + i];
        *max = -INFINITY, *sum = 0.0f;
        for (size_t ch = 0; ch < j->chunks; ch++) {
            const float *part_max = a->head_lse_parts + ch * j->rows;
            whet_lse_fold(max, sum, part_max[i], part_max[j->chunks * j->rows + i]);
        }
    }
}

/* Group grp's chunks: dlogits in place, their dlm_head rows, and their sum of
 * dlnf into the group's partial. */
static void head_group_task(void *p, size_t grp, int worker)
{
    head_block_job *j = p;
    whet_model *m = j->m;
    whet_acts *a = j->a;
    size_t C = m->cfg.hidden, rows = j->rows, r0 = j->r0, c0, c1;
    head_group(j->chunks, j->groups, grp, &c0, &c1);
    float *part = a->head_dln_parts + grp * rows * C;
    for (size_t ch = c0; ch < c1; ch++) {
        size_t v0 = ch * WHET_CE_VOCAB, vc = chunk_width(m, ch);
        float *chunk = a->head_logits + v0 * rows;
        chunk_dlogits(m->compute->kernels, chunk, WHET_CE_VOCAB, rows, v0, vc, j->targets + r0, a->lse + r0,
                      a->d.row_scale + r0);
        whet_lm_head_backward(m, worker, part, ch > c0, chunk, WHET_CE_VOCAB, a->lnf + r0 * C, rows, v0, vc, j->g);
    }
}

/* Per block of rows: each vocabulary chunk's logits into the block's buffer
 * and their log-sum-exp partials; once every row's NLL is known (and
 * finite), each chunk's dlogits and its share of dlnf and dlm_head — what
 * whet_model_nll and lm_head_backward do, on the kept logits instead of
 * recomputed ones. */
int whet_model_nll_head_backward(whet_model *m, whet_acts *a, const int32_t *targets, float loss_scale,
                                 whet_model_grads *g, double *mean_nll, whet_err *e)
{
    const whet_model_config *cfg = &m->cfg;
    whet_compute *c = m->compute;
    size_t BT = a->cur_B * a->cur_T, C = cfg->hidden, V = cfg->vocab, R = a->head_rows;
    if (a->keep_layers != WHET_ACTS_KEEP && a->keep_layers != WHET_ACTS_CHECKPOINT)
        return whet_fail(e, "%s: whet_model_nll_head_backward needs activations made for training (WHET_ACTS_KEEP or "
                            "WHET_ACTS_CHECKPOINT), not mode %d", m->path, a->keep_layers);
    if (BT == 0)
        return whet_fail(e, "%s: whet_model_nll_head_backward needs a forward pass first", m->path);
    size_t counted = 0;
    for (size_t r = 0; r < BT; r++) {
        if (targets[r] >= 0 && (size_t)targets[r] >= V)
            return whet_fail(e, "%s: target id %d (row %zu) is outside the vocabulary of %zu", m->path, targets[r], r,
                             V);
        a->d.row_scale[r] = targets[r] >= 0 ? loss_scale : 0.0f;
        counted += targets[r] >= 0;
    }
    a->head_grad_ready = 0;
    /* no row counts: the NLL only (the caller runs no backward then) */
    int backward = counted > 0, finite = 1;
    double total = 0;
    size_t chunks = head_chunks(m);
    for (size_t r0 = 0; r0 < BT; r0 += R) {
        size_t rows = BT - r0 < R ? BT - r0 : R;
        head_block_job j = {m, a, targets, g, r0, rows, chunks, head_groups(chunks)};
        for (size_t r = r0; r < r0 + rows; r++)
            a->ce_target[r] = NAN;
        whet_pool_run(c->pool, chunks, head_logits_task, &j);
        whet_compute_for(c, rows, grain_for(chunks * 8), head_fold_rows, &j);
        for (size_t r = r0; r < r0 + rows; r++) {
            a->lse[r] = a->ce_max[r] + logf(a->ce_sum[r]);
            if (targets[r] >= 0) {
                float lp = a->ce_target[r] - a->lse[r];
                total -= lp;
                finite &= isfinite(lp) != 0;
            }
        }
        /* dlogits only from finite NLLs; after a non-finite one the NLL alone */
        if (!backward || !finite)
            continue;
        whet_pool_run(c->pool, j.groups, head_group_task, &j);
        sum_parts_job sj = {c->kernels, a->d.ln + r0 * C, a->head_dln_parts, j.groups, rows, C, 1};
        whet_compute_for(c, rows, grain_for(C), sum_parts_rows, &sj);
    }
    *mean_nll = counted ? total / (double)counted : 0.0;
    a->lse_ready = 1;
    a->head_grad_ready = backward && finite;
    return 0;
}

/* ---- one block, in reverse ---------------------------------------------------- */

/* a->d.res holds ∂L/∂x_out on entry and ∂L/∂x_in on return (when need_dx).
 * Weight gradients go to g for layers ≥ g->first_layer (and to the adapter). */
static void block_backward(whet_model *m, whet_acts *a, size_t l, whet_model_grads *g, int need_dx)
{
    whet_compute *c = m->compute;
    const whet_model_config *cfg = &m->cfg;
    const whet_model_params *p = &m->params;
    const whet_layer_acts *la = &a->layers[l];
    whet_grad_acts *d = &a->d;
    const size_t BT = a->cur_B * a->cur_T, C = cfg->hidden, F = cfg->ffn, HD = cfg->head_dim;
    const size_t NH = cfg->heads, NKV = cfg->kv_heads, QD = NH * HD, KVD = NKV * HD;
    const whet_norm_kind nk = cfg->info->norm;
    const whet_model_params *gp = g && l >= g->first_layer ? &g->p : NULL;
#define LAYER(ptr, n) ((ptr) ? (ptr) + l * (n) : NULL)
#define GRAD(view, n) (gp ? LAYER(gp->view, n) : NULL)

    /* MLP: x_out = x_mid + down(h);  h = act(gate, up);  gate, up = ln2·W;  ln2 = norm(x_mid)
     * (h, ln2 and ln1 are recomputed just before the projection that takes them as input) */
    whet_block_recompute_h(m, a, l);
    whet_linear_backward(m, a, l, WHET_LIN_DOWN, d->h, 0, d->res, la->h, BT, g);
    /* the activation's backward, and ln2 again for gate and up's weight gradients: one job */
    act_bw_job xj = {c->kernels, cfg->info->act, d->gate, d->up, d->h, la->gate, la->up, F};
    whet_norm_job ln2 = whet_block_ln_job(m, a, l, 2);
    whet_jobs jobs;
    whet_jobs_init(&jobs, c);
    whet_jobs_for(&jobs, BT, grain_for(F), act_bw_rows, &xj);
    whet_jobs_for(&jobs, BT, grain_for(C), whet_norm_rows, &ln2);
    whet_jobs_run(&jobs);
    if (cfg->info->act == WHET_ACT_SWIGLU) {
        const whet_linear_id ids[2] = {WHET_LIN_GATE, WHET_LIN_UP};
        const float *douts[2] = {d->gate, d->up};
        whet_linear_backward_set(m, a, l, ids, douts, 2, d->ln, 0, la->ln2, BT, g);
    } else {
        whet_linear_backward(m, a, l, WHET_LIN_UP, d->ln, 0, d->up, la->ln2, BT, g);
    }
    /* ∂L/∂x_mid = ∂L/∂x_out (the residual) + the norm's */
    norm_backward(c, nk, d->res, GRAD(ln2_w, C), GRAD(ln2_b, C), d->ln, la->x_mid, LAYER(p->ln2_w, C), la->ln2_mean,
                  la->ln2_rstd, BT, C);

    /* attention: x_mid = x_in + o(att);  att = attention(q, k, v);  q, k = RoPE(norm(ln1·W));  v = ln1·W */
    whet_linear_backward(m, a, l, WHET_LIN_O, d->att, 0, d->res, la->att, BT, g);
    attn_bw_job aj = {c->kernels, cfg, a, la};
    int slotted = attn_bw_slotted(cfg, a);
    whet_compute_for_items(c, slotted ? whet_attn_task_count(a, NH) : a->n_segs * NKV, 1, attn_bw_items, &aj);
    /* then, in one job: dk and dv summed over each KV head's query heads (GQA)
     * and its queries' parts, with RoPE undone on dk on the same rows, RoPE
     * undone on dq, and ln1 again for the q, k, v weight gradients */
    int rope = cfg->info->positions == WHET_POS_ROPE;
    kv_rows_job kj = {{c->kernels, a, NH / NKV, BT * KVD, KVD}, slotted,
                      rope ? whet_rope_job_for(m, d->k, NKV, a->positions, 1) : (whet_rope_job){0}};
    whet_rope_job rq = rope ? whet_rope_job_for(m, d->q, NH, a->positions, 1) : (whet_rope_job){0};
    int need_dln = need_dx || (gp && gp->ln1_w); /* ∂L/∂ln1 is needed below this layer, and for the norm's weights */
    whet_norm_job ln1 = whet_block_ln_job(m, a, l, 1);
    whet_jobs_init(&jobs, c);
    if (kj.sum_parts || rope)
        whet_jobs_for(&jobs, BT, grain_for(2 * KVD), kv_rows, &kj);
    if (rope)
        whet_jobs_for(&jobs, BT, grain_for(QD), whet_rope_rows, &rq);
    whet_jobs_for(&jobs, BT, grain_for(C), whet_norm_rows, &ln1);
    whet_jobs_run(&jobs);
    const float *dq = d->q, *dk = d->k;
    if (cfg->info->qk_norm) {
        /* per head over HD: q = rmsnorm(q_raw)·q_norm */
        memset(d->q_raw, 0, BT * QD * sizeof(float));
        memset(d->k_raw, 0, BT * KVD * sizeof(float));
        norm_backward(c, WHET_NORM_RMS, d->q_raw, GRAD(q_norm, HD), NULL, d->q, la->q_raw, LAYER(p->q_norm, HD), NULL,
                      la->q_rstd, BT * NH, HD);
        norm_backward(c, WHET_NORM_RMS, d->k_raw, GRAD(k_norm, HD), NULL, d->k, la->k_raw, LAYER(p->k_norm, HD), NULL,
                      la->k_rstd, BT * NKV, HD);
        dq = d->q_raw, dk = d->k_raw;
    }
    float *dln = need_dln ? d->ln : NULL;
    const whet_linear_id qkv[3] = {WHET_LIN_Q, WHET_LIN_K, WHET_LIN_V};
    const float *dqkv[3] = {dq, dk, d->v};
    whet_linear_backward_set(m, a, l, qkv, dqkv, 3, dln, 0, la->ln1, BT, g);
    if (need_dln)
        norm_backward(c, nk, need_dx ? d->res : NULL, GRAD(ln1_w, C), GRAD(ln1_b, C), d->ln, la->x_in,
                      LAYER(p->ln1_w, C), la->ln1_mean, la->ln1_rstd, BT, C);
#undef GRAD
#undef LAYER
}

/* ---- the whole model ---------------------------------------------------------- */

int whet_model_backward(whet_model *m, whet_acts *a, const int32_t *targets, float loss_scale, whet_model_grads *g,
                        whet_err *e)
{
    const whet_model_config *cfg = &m->cfg;
    whet_compute *c = m->compute;
    size_t BT = a->cur_B * a->cur_T, C = cfg->hidden, L = cfg->layers;
    if (a->keep_layers != WHET_ACTS_KEEP && a->keep_layers != WHET_ACTS_CHECKPOINT)
        return whet_fail(e, "%s: the backward pass needs activations made for training (WHET_ACTS_KEEP or "
                            "WHET_ACTS_CHECKPOINT), not mode %d", m->path, a->keep_layers);
    if (BT == 0 || !a->lse_ready)
        return whet_fail(e, "%s: whet_model_backward needs a forward pass and whet_model_nll first", m->path);
    int head_done = a->head_grad_ready;
    a->head_grad_ready = 0; /* used once: a second backward recomputes the head */
    for (size_t r = 0; r < BT; r++) {
        if (targets[r] >= 0 && (size_t)targets[r] >= cfg->vocab)
            return whet_fail(e, "%s: target id %d (row %zu) is outside the vocabulary of %zu", m->path, targets[r], r,
                             cfg->vocab);
        float scale = targets[r] >= 0 ? loss_scale : 0.0f;
        if (head_done && a->d.row_scale[r] != scale)
            return whet_fail(e, "%s: whet_model_backward: row %zu's loss scale %g differs from the %g "
                                "whet_model_nll_head_backward used (other targets or loss_scale)",
                             m->path, r, (double)scale, (double)a->d.row_scale[r]);
        a->d.row_scale[r] = scale;
    }
    /* the lowest layer that trains anything: the adapter's are in every layer */
    int lora_trains = m->lora && m->lora->grad_memory;
    int embed_trains = g && (g->p.wte || g->p.wpe);
    size_t lowest = g ? g->first_layer : L;
    if (lora_trains || embed_trains)
        lowest = 0;

    /* logits = lnf·lm_headᵀ (done already after whet_model_nll_head_backward);  lnf = norm(x_final) */
    if (!head_done)
        lm_head_backward(m, a, targets, a->d.ln, g);
    int need_dx = lowest < L || embed_trains;
    if (need_dx)
        memset(a->d.res, 0, BT * C * sizeof(float));
    norm_backward(c, cfg->info->norm, need_dx ? a->d.res : NULL, g ? g->p.lnf_w : NULL, g ? g->p.lnf_b : NULL,
                  a->d.ln, a->x_final, m->params.lnf_w, a->lnf_mean, a->lnf_rstd, BT, C);
    if (!need_dx)
        return 0;

    for (size_t l = L; l-- > lowest;) {
        if (a->keep_layers == WHET_ACTS_CHECKPOINT)
            whet_block_recompute(m, a, l);
        block_backward(m, a, l, g, l > lowest || embed_trains);
    }

    /* x = wte[tokens] (+ wpe[positions]) */
    if (embed_trains) {
        embed_bw_job j = {c->kernels, a->d.res, g->p.wte, g->p.wpe, a->tokens, a->positions, BT, C};
        whet_compute_for(c, C, grain_for(BT), embed_bw_cols, &j);
    }
    return 0;
}
