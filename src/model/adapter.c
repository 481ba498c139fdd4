/* LoRA adapters on disk: PEFT directories and GGUF LoRA adapters (see adapter.h). */
#include "model/adapter.h"

#include "io/gguf.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "model/export.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* GPT-2's q, k and v live in one module (c_attn). */
static int fused_qkv(const whet_model_config *c, whet_linear_id id)
{
    return c->info->names.qkv && id <= WHET_LIN_V;
}

static const char *hf_stem(const whet_model_config *c, whet_linear_id id)
{
    const whet_arch_names *nm = &c->info->names;
    switch (id) {
    case WHET_LIN_Q: return nm->qkv ? nm->qkv : nm->q;
    case WHET_LIN_K: return nm->qkv ? nm->qkv : nm->k;
    case WHET_LIN_V: return nm->qkv ? nm->qkv : nm->v;
    case WHET_LIN_O: return nm->o;
    case WHET_LIN_GATE: return nm->gate;
    case WHET_LIN_UP: return nm->up;
    case WHET_LIN_DOWN: return nm->down;
    default: return NULL;
    }
}

const char *whet_adapter_module_name(const whet_model_config *c, size_t l, whet_linear_id id, char *buf, size_t cap)
{
    char layer[64];
    snprintf(layer, sizeof layer, c->info->names.layer, l);
    /* PEFT wraps GPT2LMHeadModel, whose body is "transformer." */
    snprintf(buf, cap, "%s%s%s", c->info->arch == WHET_ARCH_GPT2 ? "transformer." : "", layer, hf_stem(c, id));
    return buf;
}

static float scale_of(double alpha, size_t r, int rslora)
{
    return rslora ? (float)(alpha / sqrt((double)r)) : (float)(alpha / (double)r);
}

/* ---- reading a PEFT directory -------------------------------------------------- */

/* One module's tensors as found in the file. */
typedef struct peft_module {
    const whet_st_tensor *A, *B;
    size_t r;      /* the module's rank in the file */
    double alpha;
    size_t block;  /* GPT-2 c_attn written stacked (see adapter.h): this projection's
                    * rank-(r/3) block of A's rows and B's columns; SIZE_MAX: all of them */
} peft_module;

/* Whether a GPT-2 c_attn adapter of rank 3·r0 is block-diagonal as whet
 * writes q, k, v: B's q rows use only columns [0, r0), k's [r0, 2r0), v's
 * [2r0, 3r0), every other entry exactly zero. */
static int stacked_qkv(const whet_model_config *c, const whet_st_tensor *B, size_t r0, whet_err *e)
{
    size_t QD = c->heads * c->head_dim, KVD = c->kv_heads * c->head_dim, N = QD + 2 * KVD, R = 3 * r0;
    float *b = malloc(N * R * sizeof *b);
    if (!b)
        return whet_fail(e, "%s: out of memory", B->file);
    if (whet_st_load_f32(B, b, NULL, e)) {
        free(b);
        return -1;
    }
    int stacked = 1;
    for (size_t o = 0; o < N && stacked; o++) {
        size_t blk = o < QD ? 0 : o < QD + KVD ? 1 : 2;
        for (size_t k = 0; k < R; k++)
            if (k / r0 != blk && b[o * R + k] != 0.0f) {
                stacked = 0;
                break;
            }
    }
    free(b);
    return stacked;
}

static int find_pair(const whet_safetensors *st, const char *module, const whet_st_tensor **A,
                     const whet_st_tensor **B)
{
    char name[512];
    snprintf(name, sizeof name, WHET_PEFT_PREFIX "%s.lora_A.weight", module);
    *A = whet_st_find(st, name);
    snprintf(name, sizeof name, WHET_PEFT_PREFIX "%s.lora_B.weight", module);
    *B = whet_st_find(st, name);
    return *A || *B;
}

static int check_shape(const whet_st_tensor *t, int64_t d0, int64_t d1, const char *what, whet_err *e)
{
    if (t->rank == 2 && t->shape[0] == d0 && t->shape[1] == d1)
        return 0;
    char got[96] = "[";
    for (size_t i = 0; i < t->rank && i < 4; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    strcat(got, "]");
    char want[64];
    snprintf(want, sizeof want, "[%lld, %lld]", (long long)d0, (long long)d1);
    return whet_fail(e, "%s: tensor \"%s\" has shape %s, expected %s (%s)", t->file, t->name, got, want, what);
}

int whet_adapter_load_peft(whet_model *m, const char *dir, whet_lora **out, whet_err *e)
{
    *out = NULL;
    const whet_model_config *c = &m->cfg;
    size_t L = c->layers;
    whet_peft_config pc;
    if (whet_peft_config_load(&pc, dir, e))
        return -1;
    whet_safetensors *st = NULL;
    peft_module *mods = calloc(L * WHET_LIN_COUNT, sizeof *mods);
    unsigned char *used = NULL;
    whet_lora *lora = NULL;
    int rc = -1;
    if (!mods) {
        whet_fail(e, "%s: out of memory", dir);
        goto out;
    }
    if (whet_peft_open_weights(&st, dir, e))
        goto out;
    used = calloc(whet_st_count(st) + 1, 1);
    if (!used) {
        whet_fail(e, "%s: out of memory", dir);
        goto out;
    }
    /* which modules are adapted, their tensors, ranks and alphas */
    unsigned targets = 0;
    size_t r_max = 0;
    for (size_t l = 0; l < L; l++)
        for (int id = 0; id < WHET_LIN_COUNT; id++) {
            if (!whet_linear_exists(c, (whet_linear_id)id))
                continue;
            char module[256];
            whet_adapter_module_name(c, l, (whet_linear_id)id, module, sizeof module);
            int targeted = whet_peft_targets_module(&pc, module, 1, e);
            if (targeted < 0)
                goto out;
            targeted = targeted && whet_peft_layer_included(&pc, l);
            peft_module *pm = &mods[l * WHET_LIN_COUNT + id];
            int found = find_pair(st, module, &pm->A, &pm->B);
            if (!targeted) {
                if (found) {
                    whet_fail(e, "%s: tensor \"%s" "%s.lora_%s.weight\" for a module that target_modules (and "
                              "layers_to_transform) of %s/%s do not adapt", whet_st_name(st), WHET_PEFT_PREFIX,
                              module, pm->A ? "A" : "B", dir, WHET_PEFT_CONFIG);
                    goto out;
                }
                pm->A = pm->B = NULL;
                continue;
            }
            if (!pm->A || !pm->B) {
                whet_fail(e, "%s: tensor \"%s%s.lora_%s.weight\" not found; %s/%s adapts that module of this %s "
                          "model", whet_st_name(st), WHET_PEFT_PREFIX, module, pm->A ? "B" : "A", dir,
                          WHET_PEFT_CONFIG, c->info->name);
                goto out;
            }
            size_t in, n_out;
            whet_linear_shape(c, (whet_linear_id)id, &in, &n_out);
            if (fused_qkv(c, (whet_linear_id)id))
                n_out = (c->heads + 2 * c->kv_heads) * c->head_dim;
            if (whet_peft_module_rank_alpha(&pc, module, &pm->r, &pm->alpha, e) ||
                check_shape(pm->A, (int64_t)pm->r, (int64_t)in, "lora_A is [r, in], r from the config", e) ||
                check_shape(pm->B, (int64_t)n_out, (int64_t)pm->r, "lora_B is [out, r], r from the config", e))
                goto out;
            used[pm->A - whet_st_tensor_at(st, 0)] = 1;
            used[pm->B - whet_st_tensor_at(st, 0)] = 1;
            targets |= 1u << id;
            pm->block = SIZE_MAX;
            if (fused_qkv(c, (whet_linear_id)id) && pm->r == 3 * pc.r) {
                int stacked = id == WHET_LIN_Q ? stacked_qkv(c, pm->B, pc.r, e)
                                               : mods[l * WHET_LIN_COUNT + WHET_LIN_Q].block != SIZE_MAX;
                if (stacked < 0)
                    goto out;
                if (stacked)
                    pm->block = (size_t)id; /* q, k, v: blocks 0, 1, 2 */
            }
            size_t r_eff = pm->block == SIZE_MAX ? pm->r : pm->r / 3;
            r_max = r_eff > r_max ? r_eff : r_max;
        }
    for (size_t i = 0; i < whet_st_count(st); i++)
        if (!used[i]) {
            whet_fail(e, "%s: unexpected tensor \"%s\": not the lora_A/lora_B of a module of this %s model (%zu "
                      "layers) that %s/%s adapts", whet_st_name(st), whet_st_tensor_at(st, i)->name, c->info->name,
                      L, dir, WHET_PEFT_CONFIG);
            goto out;
        }
    if (!targets) {
        whet_fail(e, "%s/%s: target_modules adapts no projection of this %s model", dir, WHET_PEFT_CONFIG,
                  c->info->name);
        goto out;
    }
    /* the adapter: the config's r and alpha when every module has that rank;
     * otherwise the largest rank, scaled as the config says */
    int uniform = r_max == pc.r;
    whet_lora_options opt = {.rank = r_max, .alpha = (float)pc.lora_alpha, .dropout = (float)pc.lora_dropout,
                             .rslora = pc.use_rslora, .targets = targets, .seed = 0};
    float scale = scale_of(pc.lora_alpha, pc.r, pc.use_rslora);
    if (!uniform) {
        opt.rslora = 0;
        opt.alpha = scale * (float)r_max;
    }
    lora = whet_lora_create(m, &opt, e);
    if (!lora)
        goto out;
    lora->scale = scale;
    size_t QD = c->heads * c->head_dim, KVD = c->kv_heads * c->head_dim;
    for (int id = 0; id < WHET_LIN_COUNT; id++) {
        if (!lora->A[id])
            continue;
        size_t in = lora->in[id], n_out = lora->out[id], R = r_max;
        /* the rows of a fused c_attn's B that belong to this projection */
        size_t row0 = !fused_qkv(c, (whet_linear_id)id) ? 0 : id == WHET_LIN_Q ? 0 : id == WHET_LIN_K ? QD : QD + KVD;
        for (size_t l = 0; l < L; l++) {
            float *A = lora->A[id] + l * R * in, *B = lora->B[id] + l * n_out * R;
            memset(A, 0, R * in * sizeof *A);
            memset(B, 0, n_out * R * sizeof *B);
            const peft_module *pm = &mods[l * WHET_LIN_COUNT + id];
            if (!pm->A)
                continue;
            size_t r = pm->r, rows_total = (size_t)pm->B->shape[0];
            /* a stacked c_attn: this projection's rows of A and columns of B */
            size_t r_use = pm->block == SIZE_MAX ? r : r / 3, col0 = pm->block == SIZE_MAX ? 0 : pm->block * r_use;
            float *a = malloc(r * in * sizeof *a), *b = malloc(rows_total * r * sizeof *b);
            if (!a || !b || whet_st_load_f32(pm->A, a, NULL, e) || whet_st_load_f32(pm->B, b, NULL, e)) {
                if (!a || !b)
                    whet_fail(e, "%s: out of memory", dir);
                free(a);
                free(b);
                goto out;
            }
            memcpy(A, a + col0 * in, r_use * in * sizeof *a);
            /* the module's scale (its alpha / its rank in the file) against the adapter's */
            float ratio = scale_of(pm->alpha, r, pc.use_rslora) / scale;
            for (size_t o = 0; o < n_out; o++)
                for (size_t k = 0; k < r_use; k++) {
                    float v = b[(row0 + o) * r + col0 + k];
                    B[o * R + k] = ratio == 1.0f ? v : v * ratio;
                }
            free(a);
            free(b);
        }
    }
    rc = 0;
out:
    if (rc && lora)
        whet_lora_free(m, lora);
    else if (!rc)
        *out = lora;
    free(used);
    free(mods);
    whet_st_close(st);
    whet_peft_config_free(&pc);
    return rc;
}

/* ---- the GPT-2 c_attn ------------------------------------------------------------ */

/* c_attn's adapter for layer l from q, k, v's: A [R, C], B [QD+2KVD, R] (malloc'd),
 * shared when the adapted ones have bit-identical A (R = r), stacked otherwise
 * (R = n·r). *n is the count of adapted q, k, v. */
static int fused_qkv_adapter(const whet_model *m, const whet_lora *lora, size_t l, float **A_out, float **B_out,
                             size_t *R_out, size_t *n_out)
{
    const whet_model_config *c = &m->cfg;
    size_t C = c->hidden, r = lora->opt.rank, QD = c->heads * c->head_dim, KVD = c->kv_heads * c->head_dim;
    size_t N = QD + 2 * KVD, row0[3] = {0, QD, QD + KVD}, rows[3] = {QD, KVD, KVD};
    size_t n = 0;
    const float *As[3] = {0};
    for (int id = 0; id < 3; id++)
        if (lora->A[id])
            As[id] = lora->A[id] + l * r * C, n++;
    int shared = n == 3;
    for (int id = 1; id < 3 && shared; id++)
        shared = memcmp(As[0], As[id], r * C * sizeof(float)) == 0;
    size_t R = shared ? r : n * r;
    float *A = calloc(R * C, sizeof *A), *B = calloc(N * R, sizeof *B);
    if (!A || !B) {
        free(A);
        free(B);
        return -1;
    }
    size_t block = 0;
    for (int id = 0; id < 3; id++) {
        if (!As[id])
            continue;
        size_t col0 = shared ? 0 : block * r;
        if (!shared || block == 0)
            memcpy(A + col0 * C, As[id], r * C * sizeof *A);
        const float *Bt = lora->B[id] + l * rows[id] * r;
        for (size_t o = 0; o < rows[id]; o++)
            memcpy(B + (row0[id] + o) * R + col0, Bt + o * r, r * sizeof *B);
        block++;
    }
    *A_out = A, *B_out = B, *R_out = R, *n_out = n;
    return 0;
}

/* ---- writing a PEFT directory ------------------------------------------------------ */

typedef struct tensor_list {
    whet_st_entry *e;
    int64_t (*shape)[2];
    char **names;
    float **bufs;
    size_t n, cap;
} tensor_list;

static void tensor_list_free(tensor_list *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->names[i]);
        free(t->bufs[i]);
    }
    free(t->e);
    free(t->shape);
    free(t->names);
    free(t->bufs);
}

/* Takes ownership of data (malloc'd). */
static int tensor_list_add(tensor_list *t, const char *name, float *data, int64_t d0, int64_t d1)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        whet_st_entry *e = realloc(t->e, cap * sizeof *e);
        if (e)
            t->e = e;
        int64_t(*s)[2] = realloc(t->shape, cap * sizeof *s);
        if (s)
            t->shape = s;
        char **nm = realloc(t->names, cap * sizeof *nm);
        if (nm)
            t->names = nm;
        float **b = realloc(t->bufs, cap * sizeof *b);
        if (b)
            t->bufs = b;
        if (!e || !s || !nm || !b) {
            free(data);
            return -1;
        }
        t->cap = cap;
    }
    t->names[t->n] = strdup(name);
    t->bufs[t->n] = data;
    t->shape[t->n][0] = d0, t->shape[t->n][1] = d1;
    t->n++;
    return t->names[t->n - 1] ? 0 : -1;
}

static float *copy_floats(const float *src, size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (p)
        memcpy(p, src, n * sizeof *p);
    return p;
}

static int add_pair(tensor_list *t, const char *module, float *A, float *B, size_t r, size_t in, size_t out)
{
    char name[512];
    snprintf(name, sizeof name, WHET_PEFT_PREFIX "%s.lora_A.weight", module);
    if (tensor_list_add(t, name, A, (int64_t)r, (int64_t)in)) {
        free(B);
        return -1;
    }
    snprintf(name, sizeof name, WHET_PEFT_PREFIX "%s.lora_B.weight", module);
    return tensor_list_add(t, name, B, (int64_t)out, (int64_t)r);
}

/* PEFT's target_modules entries for the adapted projections: the module
 * names' last components, with GPT-2's two c_proj told apart by their parent. */
static const char *peft_target_name(const whet_model_config *c, whet_linear_id id)
{
    if (c->info->arch != WHET_ARCH_GPT2) {
        const char *stem = hf_stem(c, id), *dot = strrchr(stem, '.');
        return dot ? dot + 1 : stem;
    }
    return id <= WHET_LIN_V ? "c_attn" : hf_stem(c, id); /* attn.c_proj, mlp.c_fc, mlp.c_proj */
}

int whet_adapter_save_peft(const whet_model *m, const whet_lora *lora, const char *dir, const char *base_model,
                           whet_err *e)
{
    const whet_model_config *c = &m->cfg;
    size_t L = c->layers, r = lora->opt.rank;
    tensor_list t = {0};
    whet_peft_config pc = {0};
    char *json = NULL, *names[WHET_LIN_COUNT];
    size_t n_names = 0;
    int rc = -1, gpt2_fused = 0;
    size_t fused_R = 0, fused_n = 0;
    for (size_t l = 0; l < L; l++)
        for (int id = 0; id < WHET_LIN_COUNT; id++) {
            if (!lora->A[id])
                continue;
            size_t in = lora->in[id], out = lora->out[id];
            char module[256];
            whet_adapter_module_name(c, l, (whet_linear_id)id, module, sizeof module);
            if (fused_qkv(c, (whet_linear_id)id)) {
                if (gpt2_fused == (int)l + 1)
                    continue; /* written with the first of q, k, v */
                gpt2_fused = (int)l + 1;
                float *A, *B;
                size_t R, n;
                if (fused_qkv_adapter(m, lora, l, &A, &B, &R, &n)) {
                    whet_fail(e, "%s: out of memory", dir);
                    goto out;
                }
                if (fused_R && R != fused_R) {
                    free(A);
                    free(B);
                    whet_fail(e, "%s: GPT-2's q, k and v adapters share one A in some layers and not in others; "
                              "PEFT's c_attn needs one rank for all layers", dir);
                    goto out;
                }
                fused_R = R, fused_n = n;
                if (add_pair(&t, module, A, B, R, c->hidden, (c->heads + 2 * c->kv_heads) * c->head_dim))
                    goto oom;
                continue;
            }
            float *A = copy_floats(lora->A[id] + l * r * in, r * in);
            float *B = copy_floats(lora->B[id] + l * out * r, out * r);
            if (!A || !B) {
                free(A);
                free(B);
                goto oom;
            }
            if (add_pair(&t, module, A, B, r, in, out))
                goto oom;
        }
    /* adapter_config.json */
    pc.r = r;
    pc.lora_alpha = lora->opt.alpha;
    pc.lora_dropout = lora->opt.dropout;
    pc.use_rslora = lora->opt.rslora;
    pc.fan_in_fan_out = c->info->conv1d;
    pc.base_model_name_or_path = (char *)base_model;
    for (int id = 0; id < WHET_LIN_COUNT; id++) {
        if (!lora->A[id])
            continue;
        const char *name = peft_target_name(c, (whet_linear_id)id);
        int dup = 0;
        for (size_t i = 0; i < n_names; i++)
            dup |= strcmp(names[i], name) == 0;
        if (!dup)
            names[n_names++] = (char *)name;
    }
    pc.target_modules = names;
    pc.n_target_modules = n_names;
    whet_peft_pattern rank_p = {"c_attn", (double)fused_R}, alpha_p = {"c_attn", 0};
    if (fused_R && fused_R != r) {
        alpha_p.value = lora->opt.rslora ? lora->opt.alpha * sqrt((double)fused_n) : lora->opt.alpha * (double)fused_n;
        pc.rank_pattern = &rank_p, pc.n_rank_pattern = 1;
        pc.alpha_pattern = &alpha_p, pc.n_alpha_pattern = 1;
    }
    if (whet_make_dir(dir, e))
        goto out;
    for (size_t i = 0; i < t.n; i++)
        t.e[i] = (whet_st_entry){.name = t.names[i], .dtype = WHET_ST_F32, .rank = 2, .shape = t.shape[i],
                                 .data = t.bufs[i]};
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, WHET_PEFT_WEIGHTS);
    size_t len;
    if (whet_st_write(path, t.e, t.n, NULL, 0, e) || whet_peft_config_to_json(&pc, &json, &len, e))
        goto out;
    snprintf(path, sizeof path, "%s/%s", dir, WHET_PEFT_CONFIG);
    rc = whet_write_file_atomic(path, json, len, e);
    goto out;
oom:
    whet_fail(e, "%s: out of memory", dir);
out:
    free(json);
    tensor_list_free(&t);
    return rc;
}

/* ---- writing a GGUF LoRA adapter ----------------------------------------------------- */

static uint32_t row_type(uint32_t type, uint64_t ne0)
{
    return type == WHET_GGML_Q8_0 && ne0 % 32 != 0 ? WHET_GGML_F16 : type;
}

int whet_adapter_save_gguf(const whet_model *m, const whet_lora *lora, const char *path, uint32_t type,
                           whet_err *e)
{
    const whet_model_config *c = &m->cfg;
    size_t L = c->layers, r = lora->opt.rank;
    if (type != WHET_GGML_F32 && type != WHET_GGML_F16 && type != WHET_GGML_Q8_0)
        return whet_fail(e, "%s: adapter tensor type %s: expected F32, F16 or Q8_0", path,
                         whet_ggml_type_name(type) ? whet_ggml_type_name(type) : "?");
    whet_gguf_writer *w = whet_gguf_writer_new();
    tensor_list t = {0};
    int rc = -1;
    if (!w)
        goto oom;
    /* llama.cpp scales by alpha / rank with rank = lora_b's ne[0]: alpha = scale·r
     * gives whet's scale (rsLoRA included) for pairs of rank r */
    float alpha = lora->scale * (float)r;
    if (whet_gguf_set_string(w, "general.architecture", whet_gguf_arch_name(c), e) ||
        whet_gguf_set_string(w, "general.type", "adapter", e) ||
        whet_gguf_set_string(w, "general.name", "whet LoRA adapter", e) ||
        whet_gguf_set_string(w, "adapter.type", "lora", e) || whet_gguf_set_f32(w, "adapter.lora.alpha", alpha, e))
        goto out;
    int llama = whet_gguf_arch_permutes_qk(c);
    for (size_t l = 0; l < L; l++)
        for (int id = 0; id < WHET_LIN_COUNT; id++) {
            if (!lora->A[id])
                continue;
            size_t in = lora->in[id], out = lora->out[id], R = r;
            float *A, *B;
            if (fused_qkv(c, (whet_linear_id)id)) {
                if (id != WHET_LIN_Q && ((lora->A[WHET_LIN_Q]) || (id == WHET_LIN_V && lora->A[WHET_LIN_K])))
                    continue; /* written with the first of q, k, v */
                size_t n;
                if (fused_qkv_adapter(m, lora, l, &A, &B, &R, &n))
                    goto oom;
                out = (c->heads + 2 * c->kv_heads) * c->head_dim;
                float fold = (float)R / (float)r; /* llama.cpp divides by R, whet by r */
                if (fold != 1.0f)
                    for (size_t i = 0; i < out * R; i++)
                        B[i] *= fold;
            } else {
                A = copy_floats(lora->A[id] + l * r * in, r * in);
                B = malloc(out * r * sizeof *B);
                if (A && B) {
                    const float *src = lora->B[id] + l * out * r;
                    /* lora_b's rows follow the base weight's (LoraTorchTensor permutes B only) */
                    if (llama && (id == WHET_LIN_Q || id == WHET_LIN_K))
                        whet_gguf_permute_qk_rows(src, B, id == WHET_LIN_Q ? c->heads : c->kv_heads, c->head_dim, r);
                    else
                        memcpy(B, src, out * r * sizeof *B);
                }
            }
            if (!A || !B) {
                free(A);
                free(B);
                goto oom;
            }
            char base[96], name[128];
            whet_gguf_linear_name(c, l, (whet_linear_id)id, base, sizeof base);
            if (tensor_list_add(&t, base, A, 0, 0) || tensor_list_add(&t, base, B, 0, 0))
                goto oom;
            uint64_t ne_a[2] = {in, R}, ne_b[2] = {R, out};
            snprintf(name, sizeof name, "%s.lora_a", base);
            if (whet_gguf_add_tensor_f32(w, name, row_type(type, ne_a[0]), 2, ne_a, A, e))
                goto out;
            snprintf(name, sizeof name, "%s.lora_b", base);
            if (whet_gguf_add_tensor_f32(w, name, row_type(type, ne_b[0]), 2, ne_b, B, e))
                goto out;
        }
    rc = whet_gguf_write_file(w, path, e);
    goto out;
oom:
    whet_fail(e, "%s: out of memory", path);
out:
    whet_gguf_writer_free(w);
    tensor_list_free(&t);
    return rc;
}
