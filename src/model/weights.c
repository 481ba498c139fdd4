/* Parameters: the layout of the one fp32 allocation, loading it from HF
 * safetensors (one file or shards), and the memory estimate. */
#include "model/model.h"
#include "model/lora.h"

#include "io/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN_FLOATS 16 /* every view starts 64-byte aligned */

/* Assigns *view = base + offset (when base is not NULL) and returns the next offset. */
static size_t take(float **view, float *base, size_t offset, size_t n)
{
    if (view)
        *view = base ? base + offset : NULL;
    return offset + (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
}

/* The parameter layout: sizes (and views, with base) in one place. */
size_t whet_model_layout_params(const whet_model_config *c, whet_model_params *p, float *base)
{
    const whet_arch_info *info = c->info;
    size_t L = c->layers, C = c->hidden, V = c->vocab, F = c->ffn;
    size_t QD = c->heads * c->head_dim, KVD = c->kv_heads * c->head_dim, HD = c->head_dim;
    int layer_norm = info->norm == WHET_NORM_LAYER;
    size_t o = 0;
    memset(p, 0, sizeof *p);
    o = take(&p->wte, base, o, V * C);
    if (info->positions == WHET_POS_LEARNED)
        o = take(&p->wpe, base, o, c->max_positions * C);
    o = take(&p->ln1_w, base, o, L * C);
    if (layer_norm)
        o = take(&p->ln1_b, base, o, L * C);
    o = take(&p->wq, base, o, L * QD * C);
    o = take(&p->wk, base, o, L * KVD * C);
    o = take(&p->wv, base, o, L * KVD * C);
    if (c->qkv_bias) {
        o = take(&p->bq, base, o, L * QD);
        o = take(&p->bk, base, o, L * KVD);
        o = take(&p->bv, base, o, L * KVD);
    }
    if (info->qk_norm) {
        o = take(&p->q_norm, base, o, L * HD);
        o = take(&p->k_norm, base, o, L * HD);
    }
    o = take(&p->wo, base, o, L * C * QD);
    if (c->o_bias)
        o = take(&p->bo, base, o, L * C);
    o = take(&p->ln2_w, base, o, L * C);
    if (layer_norm)
        o = take(&p->ln2_b, base, o, L * C);
    if (info->act == WHET_ACT_SWIGLU) {
        o = take(&p->w_gate, base, o, L * F * C);
        if (c->mlp_bias)
            o = take(&p->b_gate, base, o, L * F);
    }
    o = take(&p->w_up, base, o, L * F * C);
    if (c->mlp_bias)
        o = take(&p->b_up, base, o, L * F);
    o = take(&p->w_down, base, o, L * C * F);
    if (c->mlp_bias)
        o = take(&p->b_down, base, o, L * C);
    o = take(&p->lnf_w, base, o, C);
    if (layer_norm)
        o = take(&p->lnf_b, base, o, C);
    if (c->tied)
        p->lm_head = p->wte;
    else
        o = take(&p->lm_head, base, o, V * C);
    return o;
}

size_t whet_model_param_count(const whet_model_config *cfg)
{
    const whet_arch_info *info = cfg->info;
    size_t L = cfg->layers, C = cfg->hidden, V = cfg->vocab, F = cfg->ffn;
    size_t QD = cfg->heads * cfg->head_dim, KVD = cfg->kv_heads * cfg->head_dim;
    size_t norms = info->norm == WHET_NORM_LAYER ? 2 : 1;
    size_t n = V * C + (info->positions == WHET_POS_LEARNED ? cfg->max_positions * C : 0);
    n += L * (2 * norms * C + QD * C + 2 * KVD * C + C * QD);
    n += L * (cfg->qkv_bias ? QD + 2 * KVD : 0) + L * (cfg->o_bias ? C : 0);
    n += L * (info->qk_norm ? 2 * cfg->head_dim : 0);
    n += L * ((info->act == WHET_ACT_SWIGLU ? 3 : 2) * F * C);
    n += L * (cfg->mlp_bias ? (info->act == WHET_ACT_SWIGLU ? 2 * F : F) + C : 0);
    n += norms * C + (cfg->tied ? 0 : V * C);
    return n;
}

/* ---- loading ---- */

typedef struct loader {
    whet_model *m;
    whet_safetensors *st;
    const whet_kernels *kernels;
    const char *prefix; /* "" or "transformer." (GPT-2 saved from GPT2LMHeadModel) */
    char **used;        /* names of the tensors read, to find unexpected ones */
    size_t n_used, cap_used;
    whet_err *e;
} loader;

static int note_used(loader *ld, const char *name)
{
    if (ld->n_used == ld->cap_used) {
        size_t cap = ld->cap_used ? 2 * ld->cap_used : 64;
        char **u = realloc(ld->used, cap * sizeof *u);
        if (!u)
            return whet_fail(ld->e, "%s: out of memory", ld->m->path);
        ld->used = u, ld->cap_used = cap;
    }
    ld->used[ld->n_used] = strdup(name);
    if (!ld->used[ld->n_used])
        return whet_fail(ld->e, "%s: out of memory", ld->m->path);
    ld->n_used++;
    return 0;
}

static void shape_text(char *buf, size_t cap, const int64_t *shape, size_t rank)
{
    size_t len = (size_t)snprintf(buf, cap, "[");
    for (size_t i = 0; i < rank && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (len < cap)
        snprintf(buf + len, cap - len, "]");
}

/* Finds "<prefix><stem>.<suffix>" with the expected HF shape and converts it into dst
 * ([rows, cols] as stored, or [cols, rows] when transpose: dst gets the transpose). */
static int load_tensor(loader *ld, const char *layer_prefix, const char *stem, const char *suffix, float *dst,
                       size_t rank, size_t d0, size_t d1, int transpose)
{
    char name[512];
    snprintf(name, sizeof name, "%s%s%s.%s", ld->prefix, layer_prefix ? layer_prefix : "", stem, suffix);
    const whet_st_tensor *t = whet_st_find(ld->st, name);
    const whet_model_config *c = &ld->m->cfg;
    if (!t)
        return whet_fail(ld->e, "%s: tensor \"%s\" not found, expected for %s (%zu layers%s%s%s)",
                         whet_st_name(ld->st), name, c->info->hf_class, c->layers, c->qkv_bias ? ", q/k/v biases" : "",
                         c->info->qk_norm ? ", q/k norms" : "", c->tied ? "" : ", untied lm_head");
    int64_t want[2] = {(int64_t)d0, (int64_t)d1};
    int ok = t->rank == rank && t->shape[0] == want[0] && (rank == 1 || t->shape[1] == want[1]);
    if (!ok) {
        char got_s[128], want_s[128];
        shape_text(got_s, sizeof got_s, t->shape, t->rank);
        shape_text(want_s, sizeof want_s, want, rank);
        return whet_fail(ld->e, "%s: tensor \"%s\" has shape %s, expected %s from config.json", t->file, name, got_s,
                         want_s);
    }
    if (note_used(ld, name))
        return -1;
    if (!transpose)
        return whet_st_load_f32(t, dst, ld->kernels, ld->e);
    float *tmp = malloc(d0 * d1 * sizeof *tmp);
    if (!tmp)
        return whet_fail(ld->e, "%s: out of memory loading \"%s\"", t->file, name);
    int rc = whet_st_load_f32(t, tmp, ld->kernels, ld->e);
    if (rc == 0)
        for (size_t i = 0; i < d0; i++)
            for (size_t j = 0; j < d1; j++)
                dst[j * d0 + i] = tmp[i * d1 + j];
    free(tmp);
    return rc;
}

/* A [out, in] weight: HF Linear stores it so, Conv1D as [in, out] (transposed here). */
static int load_linear(loader *ld, const char *lp, const char *stem, float *w, float *b, size_t out, size_t in)
{
    int conv = ld->m->cfg.info->conv1d;
    if (load_tensor(ld, lp, stem, "weight", w, 2, conv ? in : out, conv ? out : in, conv))
        return -1;
    return b ? load_tensor(ld, lp, stem, "bias", b, 1, out, 0, 0) : 0;
}

/* GPT-2's c_attn: one Conv1D [C, QD + 2·KVD] whose output columns are q | k | v. */
static int load_fused_qkv(loader *ld, const char *lp, const char *stem, size_t l)
{
    const whet_model_config *c = &ld->m->cfg;
    const whet_model_params *p = &ld->m->params;
    size_t C = c->hidden, QD = c->heads * c->head_dim, KVD = c->kv_heads * c->head_dim, N = QD + 2 * KVD;
    float *w = malloc(N * C * sizeof *w), *b = malloc(N * sizeof *b);
    int rc = -1;
    if (!w || !b) {
        whet_fail(ld->e, "%s: out of memory", ld->m->path);
        goto out;
    }
    if (load_linear(ld, lp, stem, w, c->qkv_bias ? b : NULL, N, C))
        goto out;
    memcpy(p->wq + l * QD * C, w, QD * C * sizeof *w);
    memcpy(p->wk + l * KVD * C, w + QD * C, KVD * C * sizeof *w);
    memcpy(p->wv + l * KVD * C, w + (QD + KVD) * C, KVD * C * sizeof *w);
    if (c->qkv_bias) {
        memcpy(p->bq + l * QD, b, QD * sizeof *b);
        memcpy(p->bk + l * KVD, b + QD, KVD * sizeof *b);
        memcpy(p->bv + l * KVD, b + QD + KVD, KVD * sizeof *b);
    }
    rc = 0;
out:
    free(w);
    free(b);
    return rc;
}

static float *at(float *base, size_t l, size_t n)
{
    return base ? base + l * n : NULL;
}

static int load_layer(loader *ld, size_t l)
{
    const whet_model_config *c = &ld->m->cfg;
    const whet_arch_names *nm = &c->info->names;
    const whet_model_params *p = &ld->m->params;
    size_t C = c->hidden, F = c->ffn, HD = c->head_dim, QD = c->heads * HD, KVD = c->kv_heads * HD;
    char lp[64];
    snprintf(lp, sizeof lp, nm->layer, l);
    if (load_tensor(ld, lp, nm->attn_norm, "weight", at(p->ln1_w, l, C), 1, C, 0, 0) ||
        (p->ln1_b && load_tensor(ld, lp, nm->attn_norm, "bias", at(p->ln1_b, l, C), 1, C, 0, 0)))
        return -1;
    if (nm->qkv) {
        if (load_fused_qkv(ld, lp, nm->qkv, l))
            return -1;
    } else if (load_linear(ld, lp, nm->q, at(p->wq, l, QD * C), at(p->bq, l, QD), QD, C) ||
               load_linear(ld, lp, nm->k, at(p->wk, l, KVD * C), at(p->bk, l, KVD), KVD, C) ||
               load_linear(ld, lp, nm->v, at(p->wv, l, KVD * C), at(p->bv, l, KVD), KVD, C)) {
        return -1;
    }
    if (p->q_norm && (load_tensor(ld, lp, nm->q_norm, "weight", at(p->q_norm, l, HD), 1, HD, 0, 0) ||
                      load_tensor(ld, lp, nm->k_norm, "weight", at(p->k_norm, l, HD), 1, HD, 0, 0)))
        return -1;
    if (load_linear(ld, lp, nm->o, at(p->wo, l, C * QD), at(p->bo, l, C), C, QD))
        return -1;
    if (load_tensor(ld, lp, nm->mlp_norm, "weight", at(p->ln2_w, l, C), 1, C, 0, 0) ||
        (p->ln2_b && load_tensor(ld, lp, nm->mlp_norm, "bias", at(p->ln2_b, l, C), 1, C, 0, 0)))
        return -1;
    if (p->w_gate && load_linear(ld, lp, nm->gate, at(p->w_gate, l, F * C), at(p->b_gate, l, F), F, C))
        return -1;
    return load_linear(ld, lp, nm->up, at(p->w_up, l, F * C), at(p->b_up, l, F), F, C) ||
                   load_linear(ld, lp, nm->down, at(p->w_down, l, C * F), at(p->b_down, l, C), C, F)
               ? -1
               : 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Every tensor of the checkpoint must have been read, except buffers HF
 * checkpoints are known to carry and a tied model's duplicate lm_head. */
static int check_unused(loader *ld)
{
    const whet_model_config *c = &ld->m->cfg;
    qsort(ld->used, ld->n_used, sizeof *ld->used, cmp_str);
    char lm_head[256];
    snprintf(lm_head, sizeof lm_head, "%s.weight", c->info->names.lm_head ? c->info->names.lm_head : "lm_head");
    for (size_t i = 0; i < whet_st_count(ld->st); i++) {
        const whet_st_tensor *t = whet_st_tensor_at(ld->st, i);
        const char *name = t->name;
        if (bsearch(&name, ld->used, ld->n_used, sizeof *ld->used, cmp_str))
            continue;
        if (ends_with(name, ".rotary_emb.inv_freq") ||
            (c->info->arch == WHET_ARCH_GPT2 && (ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias"))) ||
            (c->tied && strcmp(name, lm_head) == 0))
            continue;
        return whet_fail(ld->e, "%s: unexpected tensor \"%s\" for %s as config.json describes it (%zu layers%s)",
                         t->file, name, c->info->hf_class, c->layers,
                         c->tied ? ", tied embeddings" : "");
    }
    return 0;
}

static int load_all(loader *ld)
{
    whet_model *m = ld->m;
    const whet_model_config *c = &m->cfg;
    const whet_arch_names *nm = &c->info->names;
    const whet_model_params *p = &m->params;
    size_t C = c->hidden, V = c->vocab;
    /* GPT-2 checkpoints saved from GPT2LMHeadModel prefix every name with "transformer." */
    char probe[256];
    snprintf(probe, sizeof probe, "%s.weight", nm->embed);
    ld->prefix = "";
    if (!whet_st_find(ld->st, probe)) {
        char prefixed[300];
        snprintf(prefixed, sizeof prefixed, "transformer.%s", probe);
        if (c->info->arch == WHET_ARCH_GPT2 && whet_st_find(ld->st, prefixed))
            ld->prefix = "transformer.";
    }
    if (load_tensor(ld, NULL, nm->embed, "weight", p->wte, 2, V, C, 0))
        return -1;
    if (p->wpe && load_tensor(ld, NULL, nm->pos_embed, "weight", p->wpe, 2, c->max_positions, C, 0))
        return -1;
    for (size_t l = 0; l < c->layers; l++)
        if (load_layer(ld, l))
            return -1;
    if (load_tensor(ld, NULL, nm->final_norm, "weight", p->lnf_w, 1, C, 0, 0) ||
        (p->lnf_b && load_tensor(ld, NULL, nm->final_norm, "bias", p->lnf_b, 1, C, 0, 0)))
        return -1;
    if (!c->tied) {
        const char *saved = ld->prefix;
        ld->prefix = ""; /* lm_head sits beside "transformer." */
        int rc = load_tensor(ld, NULL, nm->lm_head, "weight", p->lm_head, 2, V, C, 0);
        ld->prefix = saved;
        if (rc)
            return -1;
    }
    return check_unused(ld);
}

int whet_model_load(whet_model **out, const char *dir, whet_compute *compute, whet_err *e)
{
    *out = NULL;
    if (whet_is_gguf_file(dir))
        return whet_model_load_gguf(out, dir, compute, e);
    whet_model *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(dir))) {
        free(m);
        return whet_fail(e, "%s: out of memory", dir);
    }
    m->compute = compute;
    if (whet_config_load(&m->cfg, dir, e)) {
        whet_model_free(m);
        return -1;
    }
    size_t floats = whet_model_layout_params(&m->cfg, &m->params, NULL);
    m->num_params = whet_model_param_count(&m->cfg);
    m->params_memory = aligned_alloc(64, floats * sizeof(float));
    if (!m->params_memory) {
        whet_fail(e, "%s: out of memory for %zu parameters (%.1f MiB)", dir, m->num_params,
                  (double)floats * 4 / (1 << 20));
        whet_model_free(m);
        return -1;
    }
    whet_model_layout_params(&m->cfg, &m->params, m->params_memory);
    loader ld = {.m = m, .kernels = compute ? compute->kernels : NULL, .e = e};
    int rc = whet_st_open_dir(&ld.st, dir, e);
    if (rc == 0) {
        rc = load_all(&ld);
        whet_st_close(ld.st);
    }
    for (size_t i = 0; i < ld.n_used; i++)
        free(ld.used[i]);
    free(ld.used);
    if (rc) {
        whet_model_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

void whet_model_free(whet_model *m)
{
    if (!m)
        return;
    whet_model_base_bf16_free(m);
    free(m->params_memory);
    free(m->rope_cos);
    free(m->rope_sin);
    free(m->path);
    free(m);
}
