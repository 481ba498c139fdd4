/* A loaded model as a GGUF file, laid out as llama.cpp's convert_hf_to_gguf.py
 * writes it (see export.h for the names; formats.md §2 for the rules). */
#include "model/export.h"

#include "io/gguf.h"
#include "io/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- names ----------------------------------------------------------------------- */

const char *whet_gguf_arch_name(const whet_model_config *c)
{
    return c->info->arch == WHET_ARCH_MISTRAL ? "llama" : c->info->name;
}

int whet_gguf_arch_permutes_qk(const whet_model_config *c)
{
    return c->info->arch == WHET_ARCH_LLAMA || c->info->arch == WHET_ARCH_MISTRAL;
}

/* GGUF stems of the projections, in whet_linear_id order (CONST TENSOR_NAMES). */
static const char *const linear_stems[WHET_LIN_COUNT] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                                         "ffn_gate", "ffn_up", "ffn_down"};

const char *whet_gguf_linear_name(const whet_model_config *c, size_t l, whet_linear_id id, char *buf, size_t cap)
{
    const char *stem = c->info->names.qkv && id <= WHET_LIN_V ? "attn_qkv" : linear_stems[id];
    snprintf(buf, cap, "blk.%zu.%s.weight", l, stem);
    return buf;
}

/* ---- tensors ------------------------------------------------------------------------- */

/* Buffers made for the file (permuted, fused), freed after the write. */
typedef struct export_ctx {
    whet_gguf_writer *w;
    uint32_t type;
    float **bufs;
    size_t n, cap;
    whet_err *e;
} export_ctx;

static float *scratch(export_ctx *x, size_t n)
{
    if (x->n == x->cap) {
        size_t cap = x->cap ? 2 * x->cap : 32;
        float **b = realloc(x->bufs, cap * sizeof *b);
        if (!b)
            return NULL;
        x->bufs = b, x->cap = cap;
    }
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (p)
        x->bufs[x->n++] = p;
    else
        whet_fail(x->e, "out of memory");
    return p;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* A tensor of [rows, cols] floats (rows 0: 1-D of cols). */
static int put(export_ctx *x, const char *name, const float *data, size_t rows, size_t cols)
{
    uint64_t ne[2] = {cols, rows};
    uint32_t n_dims = rows ? 2 : 1, type = x->type;
    if (n_dims == 1 || ends_with(name, "_norm.weight"))
        type = WHET_GGML_F32;
    else if (type == WHET_GGML_Q8_0 && cols % 32 != 0)
        type = WHET_GGML_F16;
    return whet_gguf_add_tensor_f32(x->w, name, type, n_dims, ne, data, x->e);
}

void whet_gguf_permute_qk_rows(const float *src, float *dst, size_t n_head, size_t d, size_t cols)
{
    size_t half = d / 2;
    for (size_t h = 0; h < n_head; h++)
        for (size_t j = 0; j < half; j++)
            for (size_t k = 0; k < 2; k++)
                memcpy(dst + (h * d + 2 * j + k) * cols, src + (h * d + k * half + j) * cols, cols * sizeof *dst);
}

static int put_layer_tensor(export_ctx *x, size_t l, const char *stem, const char *suffix, const float *data,
                            size_t rows, size_t cols)
{
    char name[96];
    snprintf(name, sizeof name, "blk.%zu.%s.%s", l, stem, suffix);
    return put(x, name, data, rows, cols);
}

/* Q or K of layer l (weight [rows, C], bias [rows]), permuted for llama. */
static int put_qk(export_ctx *x, const whet_model *m, size_t l, const char *stem, size_t n_head, const float *w,
                  const float *b)
{
    const whet_model_config *c = &m->cfg;
    size_t C = c->hidden, HD = c->head_dim, rows = n_head * HD;
    if (whet_gguf_arch_permutes_qk(c)) {
        float *pw = scratch(x, rows * C), *pb = b ? scratch(x, rows) : NULL;
        if (!pw || (b && !pb))
            return -1;
        whet_gguf_permute_qk_rows(w, pw, n_head, HD, C);
        if (b)
            whet_gguf_permute_qk_rows(b, pb, n_head, HD, 1);
        w = pw, b = pb;
    }
    if (put_layer_tensor(x, l, stem, "weight", w, rows, C))
        return -1;
    return b ? put_layer_tensor(x, l, stem, "bias", b, 0, rows) : 0;
}

static const float *at(const float *base, size_t l, size_t n)
{
    return base ? base + l * n : NULL;
}

static int put_linear(export_ctx *x, size_t l, const char *stem, const float *w, const float *b, size_t out,
                      size_t in)
{
    if (put_layer_tensor(x, l, stem, "weight", w, out, in))
        return -1;
    return b ? put_layer_tensor(x, l, stem, "bias", b, 0, out) : 0;
}

static int put_norm(export_ctx *x, const char *prefix, const char *stem, const float *w, const float *b, size_t n)
{
    char name[96];
    snprintf(name, sizeof name, "%s%s.weight", prefix, stem);
    if (put(x, name, w, 0, n))
        return -1;
    if (!b)
        return 0;
    snprintf(name, sizeof name, "%s%s.bias", prefix, stem);
    return put(x, name, b, 0, n);
}

static int put_layer(export_ctx *x, const whet_model *m, size_t l)
{
    const whet_model_config *c = &m->cfg;
    const whet_model_params *p = &m->params;
    size_t C = c->hidden, F = c->ffn, HD = c->head_dim, QD = c->heads * HD, KVD = c->kv_heads * HD;
    char lp[48];
    snprintf(lp, sizeof lp, "blk.%zu.", l);
    if (put_norm(x, lp, "attn_norm", at(p->ln1_w, l, C), at(p->ln1_b, l, C), C))
        return -1;
    if (c->info->names.qkv) {
        /* attn_qkv: rows q | k | v */
        size_t N = QD + 2 * KVD;
        float *w = scratch(x, N * C), *b = p->bq ? scratch(x, N) : NULL;
        if (!w || (p->bq && !b))
            return -1;
        memcpy(w, p->wq + l * QD * C, QD * C * sizeof *w);
        memcpy(w + QD * C, p->wk + l * KVD * C, KVD * C * sizeof *w);
        memcpy(w + (QD + KVD) * C, p->wv + l * KVD * C, KVD * C * sizeof *w);
        if (b) {
            memcpy(b, p->bq + l * QD, QD * sizeof *b);
            memcpy(b + QD, p->bk + l * KVD, KVD * sizeof *b);
            memcpy(b + QD + KVD, p->bv + l * KVD, KVD * sizeof *b);
        }
        if (put_linear(x, l, "attn_qkv", w, b, N, C))
            return -1;
    } else if (put_qk(x, m, l, "attn_q", c->heads, p->wq + l * QD * C, at(p->bq, l, QD)) ||
               put_qk(x, m, l, "attn_k", c->kv_heads, p->wk + l * KVD * C, at(p->bk, l, KVD)) ||
               put_linear(x, l, "attn_v", p->wv + l * KVD * C, at(p->bv, l, KVD), KVD, C)) {
        return -1;
    }
    if (p->q_norm && (put_norm(x, lp, "attn_q_norm", p->q_norm + l * HD, NULL, HD) ||
                      put_norm(x, lp, "attn_k_norm", p->k_norm + l * HD, NULL, HD)))
        return -1;
    if (put_linear(x, l, "attn_output", p->wo + l * C * QD, at(p->bo, l, C), C, QD) ||
        put_norm(x, lp, "ffn_norm", at(p->ln2_w, l, C), at(p->ln2_b, l, C), C))
        return -1;
    if (p->w_gate && put_linear(x, l, "ffn_gate", p->w_gate + l * F * C, at(p->b_gate, l, F), F, C))
        return -1;
    return put_linear(x, l, "ffn_up", p->w_up + l * F * C, at(p->b_up, l, F), F, C) ||
                   put_linear(x, l, "ffn_down", p->w_down + l * C * F, at(p->b_down, l, C), C, F)
               ? -1
               : 0;
}

/* LlamaModel.generate_extra_tensors: Llama 3 scaling as frequency divisors. */
static int put_rope_freqs(export_ctx *x, const whet_model_config *c)
{
    size_t half = c->head_dim / 2;
    float *f = scratch(x, half);
    if (!f)
        return -1;
    if (c->rope_scaling == WHET_ROPE_SCALING_FREQS) {
        memcpy(f, c->rope_freq_divisors, half * sizeof *f);
    } else {
        float freqs[WHET_MAX_HEAD_DIM / 2];
        whet_model_config plain = *c;
        plain.rope_scaling = WHET_ROPE_SCALING_NONE;
        whet_rope_inv_freq(&plain, freqs);
        const float factor = (float)c->rope_factor, low = (float)c->rope_low_freq_factor,
                    high = (float)c->rope_high_freq_factor, old = (float)c->rope_original_max_positions;
        double low_wavelen = (double)c->rope_original_max_positions / c->rope_low_freq_factor;
        double high_wavelen = (double)c->rope_original_max_positions / c->rope_high_freq_factor;
        for (size_t i = 0; i < half; i++) {
            float wavelen = (float)(2 * M_PI) / freqs[i];
            if (wavelen < high_wavelen) {
                f[i] = 1;
            } else if (wavelen > low_wavelen) {
                f[i] = factor;
            } else {
                float smooth = (old / wavelen - low) / (high - low);
                f[i] = 1.0f / ((1.0f - smooth) / factor + smooth);
            }
        }
    }
    return put(x, "rope_freqs.weight", f, 0, half);
}

/* ---- metadata -------------------------------------------------------------------------- */

static int set_u32(whet_gguf_writer *w, const char *arch, const char *suffix, size_t v, whet_err *e)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (v > UINT32_MAX)
        return whet_fail(e, "GGUF key %s: %zu does not fit in uint32", key, v);
    return whet_gguf_set_u32(w, key, (uint32_t)v, e);
}

static int set_f32(whet_gguf_writer *w, const char *arch, const char *suffix, double v, whet_err *e)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return whet_gguf_set_f32(w, key, (float)v, e);
}

/* TextModel.set_gguf_parameters with LlamaModel's / GPT2Model's own keys. */
static int set_hparams(whet_gguf_writer *w, const whet_model_config *c, uint32_t type, whet_err *e)
{
    const char *arch = whet_gguf_arch_name(c);
    uint32_t file_type = type == WHET_GGML_F32 ? 0 : type == WHET_GGML_F16 ? 1 : 7;
    if (whet_gguf_set_string(w, "general.architecture", arch, e) ||
        whet_gguf_set_string(w, "general.type", "model", e) ||
        whet_gguf_set_string(w, "general.name", c->info->name, e) ||
        set_u32(w, arch, "block_count", c->layers, e) || set_u32(w, arch, "context_length", c->max_positions, e) ||
        set_u32(w, arch, "embedding_length", c->hidden, e) || set_u32(w, arch, "feed_forward_length", c->ffn, e) ||
        set_u32(w, arch, "attention.head_count", c->heads, e))
        return -1;
    if (c->info->norm == WHET_NORM_LAYER) {
        if (set_f32(w, arch, "attention.layer_norm_epsilon", c->norm_eps, e))
            return -1;
    } else if (set_f32(w, arch, "attention.layer_norm_rms_epsilon", c->norm_eps, e)) {
        return -1;
    }
    if (c->info->positions == WHET_POS_ROPE) {
        if (set_u32(w, arch, "attention.head_count_kv", c->kv_heads, e) ||
            set_f32(w, arch, "rope.freq_base", c->rope_theta, e))
            return -1;
        if (c->head_dim != c->hidden / c->heads &&
            (set_u32(w, arch, "attention.key_length", c->head_dim, e) ||
             set_u32(w, arch, "attention.value_length", c->head_dim, e)))
            return -1;
        if (c->rope_scaling == WHET_ROPE_SCALING_LINEAR) {
            char key[128];
            snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
            if (whet_gguf_set_string(w, key, "linear", e) || set_f32(w, arch, "rope.scaling.factor", c->rope_factor, e))
                return -1;
        }
    }
    if (whet_gguf_arch_permutes_qk(c) &&
        (set_u32(w, arch, "vocab_size", c->vocab, e) || set_u32(w, arch, "rope.dimension_count", c->head_dim, e)))
        return -1;
    return whet_gguf_set_u32(w, "general.file_type", file_type, e);
}

/* ---- tokenizer ---------------------------------------------------------------------------- */

enum { TOKEN_NORMAL = 1, TOKEN_UNKNOWN = 2, TOKEN_CONTROL = 3, TOKEN_USER_DEFINED = 4, TOKEN_UNUSED = 5,
       TOKEN_BYTE = 6 };

static const char llama3_regex[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                   "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char qwen2_regex[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                                  "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const char *json_type_of(const whet_json *v)
{
    return whet_json_string(whet_json_get(v, "type"));
}

/* The steps of a pre-tokenizer or normalizer: a Sequence's list, or the one step. */
static size_t steps_of(const whet_json *v, const char *list_key, const whet_json **out, size_t cap)
{
    if (!v || v->type != WHET_JSON_OBJECT)
        return 0;
    const char *t = json_type_of(v);
    if (t && strcmp(t, "Sequence") == 0) {
        const whet_json *items = whet_json_get(v, list_key);
        size_t n = whet_json_count(items);
        for (size_t i = 0; i < n && i < cap; i++)
            out[i] = whet_json_at(items, i);
        return n < cap ? n : cap;
    }
    out[0] = v;
    return 1;
}

/* tokenizer.ggml.pre for a byte-level BPE tokenizer.json (VOC's names that
 * whet's GGUF reader and llama.cpp both know); NULL when none matches. */
static const char *bpe_pre_name(const whet_json *root)
{
    const whet_json *steps[8], *norms[8];
    size_t n = steps_of(whet_json_get(root, "pre_tokenizer"), "pretokenizers", steps, 8);
    size_t n_norm = steps_of(whet_json_get(root, "normalizer"), "normalizers", norms, 8);
    int nfc = n_norm == 1 && json_type_of(norms[0]) && strcmp(json_type_of(norms[0]), "NFC") == 0;
    if (n_norm > 0 && !nfc)
        return NULL;
    if (n == 0)
        return nfc ? NULL : "gpt-2"; /* no pre-tokenizer: only added tokens and whole-text merges */
    const char *last = json_type_of(steps[n - 1]);
    if (!last || strcmp(last, "ByteLevel") != 0)
        return NULL;
    const whet_json *use_regex = whet_json_get(steps[n - 1], "use_regex");
    int regex = !use_regex || use_regex->type == WHET_JSON_TRUE;
    if (n == 1)
        return regex && !nfc ? "gpt-2" : NULL;
    if (n != 2 || regex)
        return NULL;
    const char *first = json_type_of(steps[0]);
    const whet_json *pattern = whet_json_get(steps[0], "pattern");
    const char *re = whet_json_string(whet_json_get(pattern, "Regex"));
    if (!first || strcmp(first, "Split") != 0 || !re)
        return NULL;
    if (strcmp(re, llama3_regex) == 0 && !nfc)
        return "llama-bpe";
    if (strcmp(re, qwen2_regex) == 0 && nfc)
        return "qwen2";
    return NULL;
}

/* SentencePiece-style BPE (Llama 2, Mistral v0.1, TinyLlama): byte_fallback
 * with a ▁ normalizer or Metaspace pre-tokenizer. *space_prefix: whether "▁"
 * goes before the text. */
static int is_spm_style(const whet_json *root, int *space_prefix)
{
    const whet_json *model = whet_json_get(root, "model"), *bf = whet_json_get(model, "byte_fallback");
    if (!bf || bf->type != WHET_JSON_TRUE)
        return 0;
    const whet_json *steps[8];
    size_t n = steps_of(whet_json_get(root, "normalizer"), "normalizers", steps, 8);
    *space_prefix = 0;
    int spm = 0;
    for (size_t i = 0; i < n; i++) {
        const char *t = json_type_of(steps[i]);
        if (t && strcmp(t, "Prepend") == 0)
            *space_prefix = 1;
        if (t && strcmp(t, "Replace") == 0)
            spm = 1;
    }
    n = steps_of(whet_json_get(root, "pre_tokenizer"), "pretokenizers", steps, 8);
    for (size_t i = 0; i < n; i++) {
        const char *t = json_type_of(steps[i]);
        if (t && strcmp(t, "Metaspace") == 0) {
            const char *scheme = whet_json_string(whet_json_get(steps[i], "prepend_scheme"));
            const whet_json *add = whet_json_get(steps[i], "add_prefix_space");
            *space_prefix = scheme ? strcmp(scheme, "never") != 0 : !add || add->type == WHET_JSON_TRUE;
            spm = 1;
        }
    }
    return spm;
}

static char *join_merge(const whet_json *m)
{
    if (m->type == WHET_JSON_STRING)
        return strdup(m->u.string.chars);
    const char *a = whet_json_string(whet_json_at(m, 0)), *b = whet_json_string(whet_json_at(m, 1));
    if (!a || !b)
        return NULL;
    /* a space inside a pair element becomes U+0120 (gguf-py vocab.py) */
    size_t len = 0;
    for (const char *s = a; *s; s++)
        len += *s == ' ' ? 2 : 1;
    for (const char *s = b; *s; s++)
        len += *s == ' ' ? 2 : 1;
    char *out = malloc(len + 2), *o = out;
    if (!out)
        return NULL;
    for (int part = 0; part < 2; part++) {
        for (const char *s = part ? b : a; *s; s++)
            if (*s == ' ')
                *o++ = '\xC4', *o++ = '\xA0';
            else
                *o++ = *s;
        if (!part)
            *o++ = ' ';
    }
    *o = 0;
    return out;
}

/* The id of a token string in tokens[0..V), or -1 (a linear scan: only for
 * the few special tokens tokenizer_config.json names). */
static int64_t find_token(const char *const *tokens, size_t V, const char *s)
{
    for (size_t i = 0; s && i < V; i++)
        if (tokens[i] && strcmp(tokens[i], s) == 0)
            return (int64_t)i;
    return -1;
}

/* tokenizer_config.json's value for key: a string or an AddedToken {"content"}. */
static const char *token_text(const whet_json *cfg, const char *key)
{
    const whet_json *v = whet_json_get(cfg, key);
    if (v && v->type == WHET_JSON_OBJECT)
        v = whet_json_get(v, "content");
    return whet_json_string(v);
}

static int set_token_id(whet_gguf_writer *w, const char *key, int64_t id, whet_err *e)
{
    return id >= 0 ? whet_gguf_set_u32(w, key, (uint32_t)id, e) : 0;
}

/* The chat template: tokenizer_config.json's chat_template (a string, or the
 * "default" entry of a list), else chat_template.jinja. NULL when none. */
static char *chat_template_text(const char *dir, const whet_json *cfg)
{
    const whet_json *ct = whet_json_get(cfg, "chat_template");
    if (ct && ct->type == WHET_JSON_STRING)
        return strdup(ct->u.string.chars);
    for (size_t i = 0; ct && i < whet_json_count(ct); i++) {
        const whet_json *item = whet_json_at(ct, i);
        const char *name = whet_json_string(whet_json_get(item, "name"));
        if (name && strcmp(name, "default") == 0 && whet_json_string(whet_json_get(item, "template")))
            return strdup(whet_json_string(whet_json_get(item, "template")));
    }
    char path[4096], *text = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    struct stat st;
    if (stat(path, &st) == 0 && whet_read_file(path, &text, &len, NULL) == 0)
        return text;
    return NULL;
}

int whet_gguf_add_hf_tokenizer(whet_gguf_writer *w, const char *dir, const whet_model_config *c, whet_err *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    struct stat st;
    if (stat(path, &st) != 0)
        return 1;
    whet_json_doc *doc = NULL, *cfg_doc = NULL;
    if (whet_json_parse_file(&doc, path, NULL, e))
        return -1;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (stat(path, &st) == 0 && whet_json_parse_file(&cfg_doc, path, NULL, e)) {
        whet_json_free(doc);
        return -1;
    }
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    const whet_json *cfg = cfg_doc ? whet_json_root(cfg_doc) : NULL;
    const whet_json *root = whet_json_root(doc), *model = whet_json_get(root, "model");
    const whet_json *vocab = whet_json_get(model, "vocab"), *added = whet_json_get(root, "added_tokens");
    const whet_json *merges = whet_json_get(model, "merges");
    const char *model_type = whet_json_string(whet_json_get(model, "type"));
    int rc = -1, space_prefix = 0, spm = is_spm_style(root, &space_prefix);
    const char *pre = spm ? NULL : bpe_pre_name(root);
    /* the token list is as long as the model's vocabulary (CONV pads with [PAD{i}]) */
    size_t V = c->vocab, n_merges = whet_json_count(merges);
    const char **tokens = calloc(V, sizeof *tokens);
    int32_t *types = calloc(V, sizeof *types);
    float *scores = spm ? calloc(V, sizeof *scores) : NULL;
    char **owned = calloc(V + n_merges + 1, sizeof *owned);
    const char **merge_list = calloc(n_merges + 1, sizeof *merge_list);
    char *chat = NULL;
    size_t n_owned = 0;
    if (!tokens || !types || (spm && !scores) || !owned || !merge_list) {
        whet_fail(e, "%s: out of memory", path);
        goto out;
    }
    if (!model_type || strcmp(model_type, "BPE") != 0 || !vocab || vocab->type != WHET_JSON_OBJECT) {
        whet_fail(e, "%s: expected a BPE model with a vocab (the tokenizers GGUF's gpt2 and llama models hold)", path);
        goto out;
    }
    if (!spm && !pre) {
        whet_fail(e, "%s: the normalizer and pre-tokenizer match none of the tokenizer.ggml.pre kinds whet and "
                  "llama.cpp share (gpt-2, llama-bpe, qwen2, SentencePiece-style); a GGUF would tokenize differently",
                  path);
        goto out;
    }
    for (size_t i = 0; i < vocab->u.object.count; i++) {
        const whet_json_member *mb = &vocab->u.object.members[i];
        int64_t id;
        if (whet_json_int64(doc, &mb->value, 0, (int64_t)V - 1, &id, e))
            goto out;
        tokens[id] = mb->key;
        types[id] = TOKEN_NORMAL;
        if (spm && mb->key_len == 6 && strncmp(mb->key, "<0x", 3) == 0 && mb->key[5] == '>')
            types[id] = TOKEN_BYTE;
    }
    if (spm) {
        /* llama.cpp's SPM tokenizer merges the adjacent pair whose result scores
         * highest: score a token by its merge's rank (earlier = higher) */
        for (size_t i = 0; i < V; i++)
            scores[i] = -(float)(n_merges + 1);
        for (size_t i = n_merges; i-- > 0;) {
            char *joined = join_merge(whet_json_at(merges, i));
            if (!joined) {
                whet_fail(e, "%s: model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", path, i);
                goto out;
            }
            char *sp = strchr(joined, ' ');
            if (sp)
                memmove(sp, sp + 1, strlen(sp));
            const whet_json *idv = whet_json_get(vocab, joined);
            int64_t id;
            if (idv && whet_json_int64(doc, idv, 0, (int64_t)V - 1, &id, NULL) == 0)
                scores[id] = -(float)i;
            free(joined);
        }
        const char *unk = whet_json_string(whet_json_get(model, "unk_token"));
        const whet_json *uid = unk ? whet_json_get(vocab, unk) : NULL;
        int64_t id;
        if (uid && whet_json_int64(doc, uid, 0, (int64_t)V - 1, &id, NULL) == 0)
            types[id] = TOKEN_UNKNOWN;
    }
    for (size_t i = 0; i < whet_json_count(added); i++) {
        const whet_json *a = whet_json_at(added, i), *sp = whet_json_get(a, "special");
        const char *content = whet_json_string(whet_json_get(a, "content"));
        int64_t id;
        if (!content) {
            whet_fail(e, "%s: added_tokens[%zu]: expected a \"content\" string", path, i);
            goto out;
        }
        if (whet_json_int64(doc, whet_json_get(a, "id"), 0, (int64_t)V - 1, &id, e))
            goto out;
        size_t cl = strlen(content);
        int control = (sp && sp->type == WHET_JSON_TRUE) ||
                      (cl >= 4 && strncmp(content, "<|", 2) == 0 && strcmp(content + cl - 2, "|>") == 0);
        if (types[id] == TOKEN_UNKNOWN || types[id] == TOKEN_BYTE)
            continue;
        tokens[id] = content;
        types[id] = control ? TOKEN_CONTROL : TOKEN_USER_DEFINED;
    }
    for (size_t i = 0; i < V; i++)
        if (!tokens[i]) {
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%zu]", i);
            if (!(owned[n_owned] = strdup(pad))) {
                whet_fail(e, "%s: out of memory", path);
                goto out;
            }
            tokens[i] = owned[n_owned++];
            types[i] = TOKEN_UNUSED;
        }
    if (whet_gguf_set_string(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2", e) ||
        whet_gguf_set_string(w, "tokenizer.ggml.pre", spm ? "default" : pre, e) ||
        whet_gguf_set_array(w, "tokenizer.ggml.tokens", WHET_GGUF_STRING, tokens, V, e) ||
        (spm && whet_gguf_set_array(w, "tokenizer.ggml.scores", WHET_GGUF_FLOAT32, scores, V, e)) ||
        whet_gguf_set_array(w, "tokenizer.ggml.token_type", WHET_GGUF_INT32, types, V, e))
        goto out;
    if (!spm) {
        for (size_t i = 0; i < n_merges; i++) {
            char *joined = join_merge(whet_json_at(merges, i));
            if (!joined) {
                whet_fail(e, "%s: model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", path, i);
                goto out;
            }
            owned[n_owned++] = joined;
            merge_list[i] = joined;
        }
        /* written even when empty (gguf-py would skip it): llama.cpp's and
         * whet's BPE loaders refuse a vocabulary without the key */
        if (whet_gguf_set_array(w, "tokenizer.ggml.merges", WHET_GGUF_STRING, merge_list, n_merges, e))
            goto out;
    } else if (whet_gguf_set_bool(w, "tokenizer.ggml.add_space_prefix", space_prefix, e)) {
        goto out;
    }
    /* special tokens: tokenizer_config.json's texts, else config.json's ids */
    int64_t bos = find_token(tokens, V, token_text(cfg, "bos_token"));
    int64_t eos = find_token(tokens, V, token_text(cfg, "eos_token"));
    int64_t unk = find_token(tokens, V, token_text(cfg, "unk_token"));
    int64_t pad = find_token(tokens, V, token_text(cfg, "pad_token"));
    if (bos < 0 && !token_text(cfg, "bos_token"))
        bos = c->bos_token_id;
    if (eos < 0 && c->n_eos > 0)
        eos = c->eos_token_ids[0];
    if (set_token_id(w, "tokenizer.ggml.bos_token_id", bos, e) ||
        set_token_id(w, "tokenizer.ggml.eos_token_id", eos, e) ||
        set_token_id(w, "tokenizer.ggml.unknown_token_id", unk, e) ||
        set_token_id(w, "tokenizer.ggml.padding_token_id", pad, e))
        goto out;
    const whet_json *add_bos = whet_json_get(cfg, "add_bos_token"), *add_eos = whet_json_get(cfg, "add_eos_token");
    if (add_bos && (add_bos->type == WHET_JSON_TRUE || add_bos->type == WHET_JSON_FALSE) &&
        whet_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", add_bos->type == WHET_JSON_TRUE, e))
        goto out;
    if (add_eos && (add_eos->type == WHET_JSON_TRUE || add_eos->type == WHET_JSON_FALSE) &&
        whet_gguf_set_bool(w, "tokenizer.ggml.add_eos_token", add_eos->type == WHET_JSON_TRUE, e))
        goto out;
    chat = chat_template_text(dir, cfg);
    if (chat && *chat && whet_gguf_set_string(w, "tokenizer.chat_template", chat, e))
        goto out;
    rc = 0;
out:
    for (size_t i = 0; i < n_owned; i++)
        free(owned[i]);
    free(owned);
    free(merge_list);
    free(tokens);
    free(types);
    free(scores);
    free(chat);
    whet_json_free(doc);
    whet_json_free(cfg_doc);
    return rc;
}

/* A GGUF source's tokenizer.* keys, copied as they are. */
static int copy_gguf_tokenizer(whet_gguf_writer *w, const char *source, int *none, whet_err *e)
{
    whet_gguf *g = whet_gguf_open(source, e);
    if (!g)
        return -1;
    int rc = 0;
    *none = 1;
    for (uint64_t i = 0; i < g->n_kv && rc == 0; i++)
        if (strncmp(g->kv[i].key.data, "tokenizer.", 10) == 0) {
            rc = whet_gguf_set_value(w, g->kv[i].key.data, &g->kv[i].value, e);
            *none = 0;
        }
    whet_gguf_close(g);
    return rc;
}

int whet_model_save_gguf(const whet_model *m, const char *source, const char *path, uint32_t type,
                         int *no_tokenizer, whet_err *e)
{
    const whet_model_config *c = &m->cfg;
    const whet_model_params *p = &m->params;
    if (type != WHET_GGML_F32 && type != WHET_GGML_F16 && type != WHET_GGML_Q8_0)
        return whet_fail(e, "%s: tensor type %s: expected F32, F16 or Q8_0", path,
                         whet_ggml_type_name(type) ? whet_ggml_type_name(type) : "?");
    if (!p->wq || !p->wte)
        return whet_fail(e, "%s: the model's linear weights are held as bf16; export needs the fp32 model", path);
    export_ctx x = {.w = whet_gguf_writer_new(), .type = type, .e = e};
    int rc = -1;
    *no_tokenizer = 0;
    if (!x.w) {
        whet_fail(e, "%s: out of memory", path);
        goto out;
    }
    if (set_hparams(x.w, c, type, e))
        goto out;
    if (source && whet_is_gguf_file(source)) {
        if (copy_gguf_tokenizer(x.w, source, no_tokenizer, e))
            goto out;
    } else if (source) {
        int t = whet_gguf_add_hf_tokenizer(x.w, source, c, e);
        if (t < 0)
            goto out;
        *no_tokenizer = t;
    } else {
        *no_tokenizer = 1;
    }
    size_t C = c->hidden, V = c->vocab;
    if (put(&x, "token_embd.weight", p->wte, V, C))
        goto out;
    if (p->wpe && put(&x, "position_embd.weight", p->wpe, c->max_positions, C))
        goto out;
    for (size_t l = 0; l < c->layers; l++)
        if (put_layer(&x, m, l))
            goto out;
    if (put_norm(&x, "", "output_norm", p->lnf_w, p->lnf_b, C))
        goto out;
    if (!c->tied && put(&x, "output.weight", p->lm_head, V, C))
        goto out;
    if (c->info->positions == WHET_POS_ROPE &&
        (c->rope_scaling == WHET_ROPE_SCALING_LLAMA3 || c->rope_scaling == WHET_ROPE_SCALING_FREQS) &&
        put_rope_freqs(&x, c))
        goto out;
    rc = whet_gguf_write_file(x.w, path, e);
out:
    whet_gguf_writer_free(x.w);
    for (size_t i = 0; i < x.n; i++)
        free(x.bufs[i]);
    free(x.bufs);
    return rc;
}
