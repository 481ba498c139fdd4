/* Models from GGUF files (llama.cpp's format), as convert_hf_to_gguf.py
 * writes them (formats.md §2): the hyper-parameters from "<arch>.*" metadata
 * into the same whet_model_config config.json gives, and the tensors
 * dequantized into the same fp32 parameter layout (whet_model_layout_params).
 *
 *   GGUF                              whet (HF)
 *   token_embd.weight    ne {C, V}    wte [V, C]
 *   position_embd.weight ne {C, P}    wpe [P, C] (gpt2)
 *   blk.N.attn_q.weight  ne {C, QD}   wq [QD, C]   (llama: rows un-permuted)
 *   blk.N.attn_qkv.*     ne {C, QD+2KVD} split into q | k | v rows (gpt2)
 *   output.weight        ne {C, V}    lm_head; absent: tied to token_embd
 *   rope_freqs.weight    ne {HD/2}    divisors of the RoPE frequencies
 *
 * RoPE pairing: convert_hf_to_gguf.py permutes llama's Q and K rows so that
 * ggml's adjacent-pair RoPE applies (row h·d + 2j + k holds HF's row
 * h·d + k·d/2 + j). The loader undoes it, so the parameters are HF's own and
 * the forward keeps half-split pairing for every architecture; qwen2, qwen3
 * (NEOX RoPE) and gpt2 are not permuted by the converter and are read as is.
 *
 * Every tensor is checked (presence, ne, type) before the parameters are
 * allocated, so an inconsistent file is refused without reading a weight;
 * tensors the model does not use are refused too. */
#include "model/model.h"

#include "io/gguf.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int whet_is_gguf_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    return got == 4 && memcmp(magic, WHET_GGUF_MAGIC, 4) == 0;
}

/* ---- metadata ----------------------------------------------------------------- */

#define MAX_SIZE_KEY ((uint64_t)1 << 31) /* sizes beyond this are refused (products stay in 64 bits) */

static const char *const gguf_arch_names = "llama (also Mistral), qwen2, qwen3, gpt2";

/* "<arch>.<suffix>" as an integer of any unsigned or non-negative type in
 * [min, 2^31]; absent: dflt when !required. */
static int get_size(const whet_gguf *g, const char *arch, const char *suffix, int required, size_t dflt, size_t min,
                    size_t *out, whet_err *e)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    const whet_gguf_kv *kv = whet_gguf_find(g, key);
    if (!kv) {
        if (required)
            return whet_fail(e, "%s: key '%s' not found, expected for a %s model", g->name, key, arch);
        *out = dflt;
        return 0;
    }
    const whet_gguf_value *v = &kv->value;
    int64_t x = -1;
    switch (v->type) {
    case WHET_GGUF_UINT8: x = v->as.u8; break;
    case WHET_GGUF_UINT16: x = v->as.u16; break;
    case WHET_GGUF_UINT32: x = v->as.u32; break;
    case WHET_GGUF_UINT64:
        if (v->as.u64 > MAX_SIZE_KEY)
            return whet_fail(e, "%s: byte %" PRIu64 ": key '%s': expected an integer in [%zu, 2^31], found %" PRIu64,
                             g->name, kv->type_offset, key, min, v->as.u64);
        x = (int64_t)v->as.u64;
        break;
    case WHET_GGUF_INT8: x = v->as.i8; break;
    case WHET_GGUF_INT16: x = v->as.i16; break;
    case WHET_GGUF_INT32: x = v->as.i32; break;
    case WHET_GGUF_INT64: x = v->as.i64; break;
    default:
        return whet_fail(e, "%s: byte %" PRIu64 ": key '%s': expected an integer, found %s%s", g->name,
                         kv->type_offset, key, whet_gguf_type_name(v->type),
                         v->type == WHET_GGUF_ARRAY ? " (per-layer values are not supported)" : "");
    }
    if (x < (int64_t)min || (uint64_t)x > MAX_SIZE_KEY)
        return whet_fail(e, "%s: byte %" PRIu64 ": key '%s': expected an integer in [%zu, 2^31], found %" PRId64,
                         g->name, kv->type_offset, key, min, x);
    *out = (size_t)x;
    return 0;
}

/* "<arch>.<suffix>", float32 or float64, positive and finite. */
static int get_positive(const whet_gguf *g, const char *arch, const char *suffix, int required, double dflt,
                        double *out, whet_err *e)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    const whet_gguf_kv *kv = whet_gguf_find(g, key);
    if (!kv) {
        if (required)
            return whet_fail(e, "%s: key '%s' not found, expected for a %s model", g->name, key, arch);
        *out = dflt;
        return 0;
    }
    double x;
    if (kv->value.type == WHET_GGUF_FLOAT32)
        x = kv->value.as.f32;
    else if (kv->value.type == WHET_GGUF_FLOAT64)
        x = kv->value.as.f64;
    else
        return whet_fail(e, "%s: byte %" PRIu64 ": key '%s': expected float32, found %s", g->name, kv->type_offset,
                         key, whet_gguf_type_name(kv->value.type));
    if (!(x > 0) || !isfinite(x))
        return whet_fail(e, "%s: byte %" PRIu64 ": key '%s': expected a positive number, found %g", g->name,
                         kv->type_offset, key, x);
    *out = x;
    return 0;
}

static int optional_token_id(const whet_gguf *g, const char *key, int64_t *out, whet_err *e)
{
    const whet_gguf_kv *kv = whet_gguf_find(g, key);
    if (!kv)
        return 0;
    uint32_t v;
    if (whet_gguf_get_u32(g, key, &v, e))
        return -1;
    if (v > INT32_MAX)
        return whet_fail(e, "%s: byte %" PRIu64 ": key '%s': expected a token id up to %d, found %" PRIu32, g->name,
                         kv->type_offset, key, INT32_MAX, v);
    *out = v;
    return 0;
}

static int read_rope(whet_model_config *cfg, const whet_gguf *g, const char *arch, whet_err *e)
{
    if (get_positive(g, arch, "rope.freq_base", 0, cfg->info->default_rope_theta, &cfg->rope_theta, e))
        return -1;
    size_t dims;
    if (get_size(g, arch, "rope.dimension_count", 0, cfg->head_dim, 1, &dims, e))
        return -1;
    if (dims != cfg->head_dim)
        return whet_fail(e, "%s: key '%s.rope.dimension_count': expected the head size %zu (whet rotates whole heads), "
                         "found %zu", g->name, arch, cfg->head_dim, dims);
    cfg->rope_scaling = WHET_ROPE_SCALING_NONE;
    char key[160];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    const whet_gguf_kv *type = whet_gguf_find(g, key);
    if (type) {
        const whet_gguf_str *s;
        if (whet_gguf_get_string(g, key, &s, e))
            return -1;
        if (strcmp(s->data, "linear") == 0) {
            cfg->rope_scaling = WHET_ROPE_SCALING_LINEAR;
            if (get_positive(g, arch, "rope.scaling.factor", 1, 0, &cfg->rope_factor, e))
                return -1;
        } else if (strcmp(s->data, "none") != 0) {
            return whet_fail(e, "%s: byte %" PRIu64 ": key '%s': expected \"none\" or \"linear\" (the RoPE scalings "
                             "whet supports), found \"%s\"", g->name, type->type_offset, key, s->data);
        }
    } else {
        /* older files: <arch>.rope.scale_linear */
        double factor;
        if (get_positive(g, arch, "rope.scale_linear", 0, 1.0, &factor, e))
            return -1;
        if (factor != 1.0) {
            cfg->rope_scaling = WHET_ROPE_SCALING_LINEAR;
            cfg->rope_factor = factor;
        }
    }
    const whet_gguf_tensor *freqs = whet_gguf_find_tensor(g, "rope_freqs.weight");
    if (!freqs)
        return 0;
    size_t half = cfg->head_dim / 2;
    if (cfg->rope_scaling != WHET_ROPE_SCALING_NONE)
        return whet_fail(e, "%s: tensor 'rope_freqs.weight' together with key '%s': expected one RoPE scaling, not both",
                         g->name, key);
    if (freqs->n_elements != half || freqs->ne[0] != half)
        return whet_fail(e, "%s: tensor 'rope_freqs.weight': expected ne [%zu] (head size / 2), found %" PRIu64
                         " elements", g->name, half, freqs->n_elements);
    if (whet_gguf_tensor_to_f32(g, freqs, cfg->rope_freq_divisors, e))
        return -1;
    for (size_t i = 0; i < half; i++)
        if (!(cfg->rope_freq_divisors[i] > 0) || !isfinite(cfg->rope_freq_divisors[i]))
            return whet_fail(e, "%s: tensor 'rope_freqs.weight': element %zu: expected a positive divisor, found %g",
                             g->name, i, (double)cfg->rope_freq_divisors[i]);
    cfg->rope_scaling = WHET_ROPE_SCALING_FREQS;
    cfg->rope_factor = 1; /* for display: the largest divisor (Llama 3's "factor") */
    for (size_t i = 0; i < half; i++)
        cfg->rope_factor = cfg->rope_freq_divisors[i] > cfg->rope_factor ? cfg->rope_freq_divisors[i] : cfg->rope_factor;
    return 0;
}

int whet_config_from_gguf(whet_model_config *cfg, const whet_gguf *g, whet_err *e)
{
    memset(cfg, 0, sizeof *cfg);
    const whet_gguf_kv *type = whet_gguf_find(g, "general.type");
    if (type && type->value.type == WHET_GGUF_STRING && strcmp(type->value.as.str.data, "adapter") == 0)
        return whet_fail(e, "%s: key 'general.type' is \"adapter\": a LoRA adapter for llama.cpp, not a model (whet "
                         "applies PEFT adapter directories with --adapter)", g->name);
    const whet_gguf_str *arch_str;
    if (whet_gguf_get_string(g, "general.architecture", &arch_str, e))
        return -1;
    const char *arch = arch_str->data;
    size_t n_arch;
    const whet_arch_info *table = whet_arch_table(&n_arch);
    for (size_t i = 0; i < n_arch; i++)
        if (table[i].arch != WHET_ARCH_MISTRAL && strcmp(table[i].name, arch) == 0)
            cfg->info = &table[i];
    if (!cfg->info)
        return whet_fail(e, "%s: key 'general.architecture': expected an architecture whet supports (%s), found \"%s\"",
                         g->name, gguf_arch_names, arch);
    const whet_arch_info *info = cfg->info;
    int gpt2 = info->arch == WHET_ARCH_GPT2;
    double eps;
    if (get_size(g, arch, "context_length", 1, 0, 1, &cfg->max_positions, e) ||
        get_size(g, arch, "embedding_length", 1, 0, 1, &cfg->hidden, e) ||
        get_size(g, arch, "block_count", 1, 0, 1, &cfg->layers, e) ||
        get_size(g, arch, "feed_forward_length", 1, 0, 1, &cfg->ffn, e) ||
        get_size(g, arch, "attention.head_count", 1, 0, 1, &cfg->heads, e) ||
        get_size(g, arch, "attention.head_count_kv", 0, cfg->heads, 1, &cfg->kv_heads, e) ||
        get_size(g, arch, "attention.key_length", 0, cfg->hidden / cfg->heads, 2, &cfg->head_dim, e) ||
        get_positive(g, arch, gpt2 ? "attention.layer_norm_epsilon" : "attention.layer_norm_rms_epsilon", 1, 0, &eps,
                     e))
        return -1;
    cfg->norm_eps = (float)eps;
    size_t value_length;
    if (get_size(g, arch, "attention.value_length", 0, cfg->head_dim, 1, &value_length, e))
        return -1;
    if (value_length != cfg->head_dim)
        return whet_fail(e, "%s: key '%s.attention.value_length': expected the key length %zu, found %zu", g->name,
                         arch, cfg->head_dim, value_length);
    /* vocabulary: the key, else the embedding's rows, else the token list */
    const whet_gguf_tensor *embd = whet_gguf_find_tensor(g, "token_embd.weight");
    const whet_gguf_kv *tokens = whet_gguf_find(g, "tokenizer.ggml.tokens");
    size_t vocab_dflt = 0;
    if (embd && embd->n_dims == 2 && embd->ne[1] <= MAX_SIZE_KEY)
        vocab_dflt = (size_t)embd->ne[1];
    else if (tokens && tokens->value.type == WHET_GGUF_ARRAY && tokens->value.as.arr.count <= MAX_SIZE_KEY)
        vocab_dflt = (size_t)tokens->value.as.arr.count;
    if (get_size(g, arch, "vocab_size", vocab_dflt == 0, vocab_dflt, 1, &cfg->vocab, e))
        return -1;
    if (gpt2 && cfg->head_dim * cfg->heads != cfg->hidden)
        return whet_fail(e, "%s: keys '%s.embedding_length' (%zu) and '%s.attention.head_count' (%zu): expected the "
                         "embedding length to be a multiple of the head count", g->name, arch, cfg->hidden, arch,
                         cfg->heads);
    if (cfg->heads % cfg->kv_heads != 0)
        return whet_fail(e, "%s: key '%s.attention.head_count_kv': expected a divisor of the head count %zu, found %zu",
                         g->name, arch, cfg->heads, cfg->kv_heads);
    if (cfg->head_dim == 0 || cfg->head_dim % 2 != 0 || cfg->head_dim > WHET_MAX_HEAD_DIM)
        return whet_fail(e, "%s: key '%s.attention.key_length' (or embedding_length / head_count): expected a head size "
                         "that is even, non-zero and at most %d, found %zu", g->name, arch, WHET_MAX_HEAD_DIM,
                         cfg->head_dim);
    if (info->positions == WHET_POS_ROPE && read_rope(cfg, g, arch, e))
        return -1;
    /* what only the tensors tell */
    cfg->tied = whet_gguf_find_tensor(g, "output.weight") == NULL;
    int has_qkv_bias = whet_gguf_find_tensor(g, gpt2 ? "blk.0.attn_qkv.bias" : "blk.0.attn_q.bias") != NULL;
    int has_o_bias = whet_gguf_find_tensor(g, "blk.0.attn_output.bias") != NULL;
    int has_mlp_bias = whet_gguf_find_tensor(g, "blk.0.ffn_up.bias") != NULL;
    cfg->qkv_bias = info->qkv_bias == WHET_FLAG_FROM_KEY ? has_qkv_bias : info->qkv_bias == WHET_FLAG_YES;
    cfg->o_bias = info->o_bias == WHET_FLAG_FROM_KEY ? has_o_bias : info->o_bias == WHET_FLAG_YES;
    cfg->mlp_bias = info->mlp_bias == WHET_FLAG_FROM_KEY ? has_mlp_bias : info->mlp_bias == WHET_FLAG_YES;
    if (info->tied == WHET_FLAG_YES)
        cfg->tied = 1;
    cfg->bos_token_id = -1;
    int64_t eos = -1;
    if (optional_token_id(g, "tokenizer.ggml.bos_token_id", &cfg->bos_token_id, e) ||
        optional_token_id(g, "tokenizer.ggml.eos_token_id", &eos, e))
        return -1;
    if (eos >= 0)
        cfg->eos_token_ids[cfg->n_eos++] = eos;
    int64_t eot = -1;
    if (optional_token_id(g, "tokenizer.ggml.eot_token_id", &eot, e))
        return -1;
    if (eot >= 0 && eot != eos)
        cfg->eos_token_ids[cfg->n_eos++] = eot;
    return 0;
}

/* ---- tensors ------------------------------------------------------------------ */

typedef struct gloader {
    whet_model *m;
    whet_gguf *g;
    unsigned char *used; /* [n_tensors] */
    int load;            /* 0: check presence, shapes and types only */
    float *scratch;      /* a fused or permuted tensor, before it is split or un-permuted */
    whet_err *e;
} gloader;

static const char *what_model(const whet_model_config *c, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s with %zu layers%s%s%s", c->info->name, c->layers, c->qkv_bias ? ", q/k/v biases" : "",
             c->info->qk_norm ? ", q/k norms" : "", c->tied ? "" : ", untied output.weight");
    return buf;
}

/* Finds `name` with ne {ne0, ne1} (ne1 = 0: a 1-D tensor) and, when loading,
 * dequantizes it into dst. */
static int get_tensor(gloader *ld, const char *name, uint64_t ne0, uint64_t ne1, float *dst)
{
    const whet_gguf *g = ld->g;
    const whet_gguf_tensor *t = whet_gguf_find_tensor(g, name);
    char buf[160];
    if (!t)
        return whet_fail(ld->e, "%s: tensor '%s' not found, expected for %s", g->name, name,
                         what_model(&ld->m->cfg, buf, sizeof buf));
    uint64_t want[WHET_GGUF_MAX_DIMS] = {ne0, ne1 ? ne1 : 1, 1, 1};
    if (memcmp(t->ne, want, sizeof want) != 0) {
        char got_s[128];
        size_t len = 0;
        for (uint32_t i = 0; i < t->n_dims && len < sizeof got_s; i++)
            len += (size_t)snprintf(got_s + len, sizeof got_s - len, "%s%" PRIu64, i ? ", " : "", t->ne[i]);
        if (ne1)
            snprintf(buf, sizeof buf, "%" PRIu64 ", %" PRIu64, ne0, ne1);
        else
            snprintf(buf, sizeof buf, "%" PRIu64, ne0);
        return whet_fail(ld->e, "%s: tensor '%s' has ne [%s], expected [%s] (ggml order) from the metadata", g->name,
                         name, got_s, buf);
    }
    if (!whet_ggml_can_dequantize(t->type)) {
        const char *type = whet_ggml_type_name(t->type);
        return whet_fail(ld->e, "%s: tensor '%s' has type %s, expected one whet can convert to fp32 (F32, F16, BF16, "
                         "Q8_0, Q4_0, Q4_K, Q6_K)", g->name, name, type ? type : "(unknown)");
    }
    ld->used[t - g->tensors] = 1;
    return ld->load ? whet_gguf_tensor_to_f32(g, t, dst, ld->e) : 0;
}

/* Undoes convert_hf_to_gguf.py's LlamaModel.permute on rows [n_head·d] of
 * `cols` columns: GGUF row h·d + 2j + k is HF row h·d + k·d/2 + j. */
static void unpermute_rows(const float *src, float *dst, size_t n_head, size_t d, size_t cols)
{
    size_t half = d / 2;
    for (size_t h = 0; h < n_head; h++)
        for (size_t j = 0; j < half; j++)
            for (size_t k = 0; k < 2; k++)
                memcpy(dst + (h * d + k * half + j) * cols, src + (h * d + 2 * j + k) * cols, cols * sizeof *dst);
}

/* Q or K (weight [rows, C] and bias [rows]), un-permuted for llama. */
static int get_qk(gloader *ld, const char *lp, const char *stem, size_t n_head, float *w, float *b)
{
    const whet_model_config *c = &ld->m->cfg;
    size_t C = c->hidden, HD = c->head_dim, rows = n_head * HD;
    int permuted = c->info->arch == WHET_ARCH_LLAMA;
    char name[96];
    snprintf(name, sizeof name, "%s%s.weight", lp, stem);
    if (get_tensor(ld, name, C, rows, permuted && ld->load ? ld->scratch : w))
        return -1;
    if (permuted && ld->load)
        unpermute_rows(ld->scratch, w, n_head, HD, C);
    if (!c->qkv_bias)
        return 0;
    snprintf(name, sizeof name, "%s%s.bias", lp, stem);
    if (get_tensor(ld, name, rows, 0, permuted && ld->load ? ld->scratch : b))
        return -1;
    if (permuted && ld->load)
        unpermute_rows(ld->scratch, b, n_head, HD, 1);
    return 0;
}

static int get_linear(gloader *ld, const char *lp, const char *stem, float *w, float *b, int bias, size_t out,
                      size_t in)
{
    char name[96];
    snprintf(name, sizeof name, "%s%s.weight", lp, stem);
    if (get_tensor(ld, name, in, out, w))
        return -1;
    if (!bias)
        return 0;
    snprintf(name, sizeof name, "%s%s.bias", lp, stem);
    return get_tensor(ld, name, out, 0, b);
}

/* A 1-D "<lp><stem>.<suffix>" of n elements. */
static int get_vec(gloader *ld, const char *lp, const char *stem, const char *suffix, float *dst, size_t n)
{
    char name[96];
    snprintf(name, sizeof name, "%s%s.%s", lp, stem, suffix);
    return get_tensor(ld, name, n, 0, dst);
}

/* A norm's weight, and its bias for LayerNorm. */
static int get_norm(gloader *ld, const char *lp, const char *stem, float *w, float *b, size_t n)
{
    if (get_vec(ld, lp, stem, "weight", w, n))
        return -1;
    return ld->m->cfg.info->norm == WHET_NORM_LAYER ? get_vec(ld, lp, stem, "bias", b, n) : 0;
}

static float *at(float *base, size_t l, size_t n)
{
    return base ? base + l * n : NULL;
}

static int get_layer(gloader *ld, size_t l)
{
    const whet_model_config *c = &ld->m->cfg;
    const whet_model_params *p = &ld->m->params;
    size_t C = c->hidden, F = c->ffn, HD = c->head_dim, QD = c->heads * HD, KVD = c->kv_heads * HD;
    char lp[48];
    snprintf(lp, sizeof lp, "blk.%zu.", l);
    if (get_norm(ld, lp, "attn_norm", at(p->ln1_w, l, C), at(p->ln1_b, l, C), C))
        return -1;
    if (c->info->arch == WHET_ARCH_GPT2) {
        /* attn_qkv: rows q | k | v, converted from c_attn's [C, 3C] by transposition */
        size_t N = QD + 2 * KVD;
        char name[96];
        snprintf(name, sizeof name, "%sattn_qkv.weight", lp);
        if (get_tensor(ld, name, C, N, ld->scratch))
            return -1;
        if (ld->load) {
            memcpy(p->wq + l * QD * C, ld->scratch, QD * C * sizeof(float));
            memcpy(p->wk + l * KVD * C, ld->scratch + QD * C, KVD * C * sizeof(float));
            memcpy(p->wv + l * KVD * C, ld->scratch + (QD + KVD) * C, KVD * C * sizeof(float));
        }
        snprintf(name, sizeof name, "%sattn_qkv.bias", lp);
        if (get_tensor(ld, name, N, 0, ld->scratch))
            return -1;
        if (ld->load) {
            memcpy(p->bq + l * QD, ld->scratch, QD * sizeof(float));
            memcpy(p->bk + l * KVD, ld->scratch + QD, KVD * sizeof(float));
            memcpy(p->bv + l * KVD, ld->scratch + QD + KVD, KVD * sizeof(float));
        }
    } else if (get_qk(ld, lp, "attn_q", c->heads, at(p->wq, l, QD * C), at(p->bq, l, QD)) ||
               get_qk(ld, lp, "attn_k", c->kv_heads, at(p->wk, l, KVD * C), at(p->bk, l, KVD)) ||
               get_linear(ld, lp, "attn_v", at(p->wv, l, KVD * C), at(p->bv, l, KVD), c->qkv_bias, KVD, C)) {
        return -1;
    }
    if (c->info->qk_norm && (get_vec(ld, lp, "attn_q_norm", "weight", at(p->q_norm, l, HD), HD) ||
                             get_vec(ld, lp, "attn_k_norm", "weight", at(p->k_norm, l, HD), HD)))
        return -1;
    if (get_linear(ld, lp, "attn_output", at(p->wo, l, C * QD), at(p->bo, l, C), c->o_bias, C, QD) ||
        get_norm(ld, lp, "ffn_norm", at(p->ln2_w, l, C), at(p->ln2_b, l, C), C))
        return -1;
    if (c->info->act == WHET_ACT_SWIGLU &&
        get_linear(ld, lp, "ffn_gate", at(p->w_gate, l, F * C), at(p->b_gate, l, F), c->mlp_bias, F, C))
        return -1;
    return get_linear(ld, lp, "ffn_up", at(p->w_up, l, F * C), at(p->b_up, l, F), c->mlp_bias, F, C) ||
                   get_linear(ld, lp, "ffn_down", at(p->w_down, l, C * F), at(p->b_down, l, C), c->mlp_bias, C, F)
               ? -1
               : 0;
}

static int get_all(gloader *ld)
{
    const whet_model_config *c = &ld->m->cfg;
    const whet_model_params *p = &ld->m->params;
    size_t C = c->hidden, V = c->vocab;
    memset(ld->used, 0, ld->g->n_tensors);
    if (get_tensor(ld, "token_embd.weight", C, V, p->wte))
        return -1;
    if (c->info->positions == WHET_POS_LEARNED && get_tensor(ld, "position_embd.weight", C, c->max_positions, p->wpe))
        return -1;
    for (size_t l = 0; l < c->layers; l++)
        if (get_layer(ld, l))
            return -1;
    if (get_norm(ld, "", "output_norm", p->lnf_w, p->lnf_b, C))
        return -1;
    if (!c->tied && get_tensor(ld, "output.weight", C, V, p->lm_head))
        return -1;
    /* every tensor read, but for rope_freqs (read into the config) */
    for (uint64_t i = 0; i < ld->g->n_tensors; i++) {
        const whet_gguf_tensor *t = &ld->g->tensors[i];
        if (ld->used[i] || strcmp(t->name.data, "rope_freqs.weight") == 0)
            continue;
        char buf[160];
        return whet_fail(ld->e, "%s: unexpected tensor '%s' for %s as the metadata describes it", ld->g->name,
                         t->name.data, what_model(c, buf, sizeof buf));
    }
    return 0;
}

int whet_model_load_gguf(whet_model **out, const char *path, whet_compute *compute, whet_err *e)
{
    *out = NULL;
    whet_model *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return whet_fail(e, "%s: out of memory", path);
    }
    m->compute = compute;
    gloader ld = {.m = m, .e = e};
    int rc = -1;
    ld.g = whet_gguf_open(path, e);
    if (!ld.g || whet_config_from_gguf(&m->cfg, ld.g, e))
        goto out;
    const whet_model_config *c = &m->cfg;
    ld.used = calloc(ld.g->n_tensors ? ld.g->n_tensors : 1, 1);
    if (!ld.used) {
        whet_fail(e, "%s: out of memory", path);
        goto out;
    }
    /* pass 1: every tensor present with its shape and a convertible type */
    whet_model_layout_params(c, &m->params, NULL);
    if (get_all(&ld))
        goto out;
    /* the shapes are the file's, so these sizes exist in it */
    size_t floats = whet_model_layout_params(c, &m->params, NULL);
    m->num_params = whet_model_param_count(c);
    size_t QKV = (c->heads + 2 * c->kv_heads) * c->head_dim;
    m->params_memory = aligned_alloc(64, floats * sizeof(float));
    ld.scratch = malloc(QKV * c->hidden * sizeof(float));
    if (!m->params_memory || !ld.scratch) {
        whet_fail(e, "%s: out of memory for %zu parameters (%.1f MiB)", path, m->num_params,
                  (double)floats * 4 / (1 << 20));
        goto out;
    }
    whet_model_layout_params(c, &m->params, m->params_memory);
    ld.load = 1;
    rc = get_all(&ld);
out:
    free(ld.scratch);
    free(ld.used);
    whet_gguf_close(ld.g);
    if (rc) {
        whet_model_free(m);
        return -1;
    }
    *out = m;
    return 0;
}
