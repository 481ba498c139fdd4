/* A loaded model as an HF model directory (see export.h): the inverse of
 * model/weights.c's loading, names from the architecture table. */
#include "model/export.h"

#include "io/json.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "simd/simd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- config.json --------------------------------------------------------------- */

static void write_token_ids(whet_json_writer *w, const whet_model_config *c)
{
    whet_json_key(w, "bos_token_id");
    if (c->bos_token_id >= 0)
        whet_json_write_int(w, c->bos_token_id);
    else
        whet_json_write_null(w);
    whet_json_key(w, "eos_token_id");
    if (c->n_eos == 0) {
        whet_json_write_null(w);
    } else if (c->n_eos == 1) {
        whet_json_write_int(w, c->eos_token_ids[0]);
    } else {
        whet_json_begin_array(w);
        for (size_t i = 0; i < c->n_eos; i++)
            whet_json_write_int(w, c->eos_token_ids[i]);
        whet_json_end_array(w);
    }
}

static void write_size(whet_json_writer *w, const char *key, size_t v)
{
    whet_json_key(w, key);
    whet_json_write_int(w, (int64_t)v);
}

int whet_config_to_json(const whet_model_config *c, char **text, size_t *len, whet_err *e)
{
    const whet_arch_info *info = c->info;
    if (c->rope_scaling == WHET_ROPE_SCALING_FREQS)
        return whet_fail(e, "config.json: the model's RoPE frequencies come from a GGUF rope_freqs.weight tensor, "
                         "which has no config.json form (export this model as GGUF instead)");
    if (info->o_bias == WHET_FLAG_FROM_KEY && c->qkv_bias != c->o_bias)
        return whet_fail(e, "config.json: %s has q/k/v biases %s an o_proj bias; transformers' attention_bias "
                         "sets both alike", info->hf_class, c->qkv_bias ? "without" : "with");
    whet_json_writer w;
    whet_json_writer_init(&w, 2);
    whet_json_begin_object(&w);
    whet_json_key(&w, "architectures");
    whet_json_begin_array(&w);
    whet_json_write_string(&w, info->hf_class);
    whet_json_end_array(&w);
    whet_json_key(&w, "model_type");
    whet_json_write_string(&w, info->name);
    if (info->arch == WHET_ARCH_GPT2) {
        whet_json_key(&w, "activation_function");
        whet_json_write_string(&w, "gelu_new");
        write_token_ids(&w, c);
        whet_json_key(&w, "layer_norm_epsilon");
        whet_json_write_float(&w, c->norm_eps);
        write_size(&w, "n_ctx", c->max_positions);
        write_size(&w, "n_embd", c->hidden);
        write_size(&w, "n_head", c->heads);
        write_size(&w, "n_inner", c->ffn);
        write_size(&w, "n_layer", c->layers);
        write_size(&w, "n_positions", c->max_positions);
        whet_json_key(&w, "tie_word_embeddings");
        whet_json_write_bool(&w, 1);
    } else {
        if (info->qkv_bias == WHET_FLAG_FROM_KEY) {
            whet_json_key(&w, "attention_bias");
            whet_json_write_bool(&w, c->qkv_bias);
        }
        write_token_ids(&w, c);
        write_size(&w, "head_dim", c->head_dim);
        whet_json_key(&w, "hidden_act");
        whet_json_write_string(&w, "silu");
        write_size(&w, "hidden_size", c->hidden);
        write_size(&w, "intermediate_size", c->ffn);
        write_size(&w, "max_position_embeddings", c->max_positions);
        if (info->mlp_bias == WHET_FLAG_FROM_KEY) {
            whet_json_key(&w, "mlp_bias");
            whet_json_write_bool(&w, c->mlp_bias);
        }
        write_size(&w, "num_attention_heads", c->heads);
        write_size(&w, "num_hidden_layers", c->layers);
        write_size(&w, "num_key_value_heads", c->kv_heads);
        whet_json_key(&w, "rms_norm_eps");
        whet_json_write_float(&w, c->norm_eps);
        whet_json_key(&w, "rope_scaling");
        if (c->rope_scaling == WHET_ROPE_SCALING_NONE) {
            whet_json_write_null(&w);
        } else {
            whet_json_begin_object(&w);
            whet_json_key(&w, "factor");
            whet_json_write_double(&w, c->rope_factor);
            if (c->rope_scaling == WHET_ROPE_SCALING_LLAMA3) {
                whet_json_key(&w, "high_freq_factor");
                whet_json_write_double(&w, c->rope_high_freq_factor);
                whet_json_key(&w, "low_freq_factor");
                whet_json_write_double(&w, c->rope_low_freq_factor);
                write_size(&w, "original_max_position_embeddings", c->rope_original_max_positions);
            }
            whet_json_key(&w, "rope_type");
            whet_json_write_string(&w, c->rope_scaling == WHET_ROPE_SCALING_LINEAR ? "linear" : "llama3");
            whet_json_end_object(&w);
        }
        whet_json_key(&w, "rope_theta");
        whet_json_write_double(&w, c->rope_theta);
        if (info->arch == WHET_ARCH_MISTRAL) {
            whet_json_key(&w, "sliding_window");
            if (c->sliding_window)
                whet_json_write_int(&w, (int64_t)c->sliding_window);
            else
                whet_json_write_null(&w);
        }
        whet_json_key(&w, "tie_word_embeddings");
        whet_json_write_bool(&w, c->tied);
        if (info->arch == WHET_ARCH_QWEN2) {
            whet_json_key(&w, "use_sliding_window");
            whet_json_write_bool(&w, 0);
        }
    }
    whet_json_key(&w, "torch_dtype");
    whet_json_write_string(&w, "float32");
    write_size(&w, "vocab_size", c->vocab);
    whet_json_end_object(&w);
    const char *out;
    int rc = whet_json_writer_finish(&w, "config.json", &out, len, e);
    if (rc == 0) {
        *text = malloc(*len + 2);
        if (!*text) {
            rc = whet_fail(e, "config.json: out of memory");
        } else {
            memcpy(*text, out, *len);
            (*text)[(*len)++] = '\n';
            (*text)[*len] = 0;
        }
    }
    whet_json_writer_free(&w);
    return rc;
}

/* ---- tensors --------------------------------------------------------------------- */

typedef struct hf_tensors {
    whet_st_entry *entries;
    int64_t (*shapes)[2];
    char **names;
    void **bufs; /* converted or rearranged data, owned */
    size_t n, cap;
    int dtype;
    const whet_kernels *k;
} hf_tensors;

static void hf_tensors_free(hf_tensors *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->names[i]);
        free(t->bufs[i]);
    }
    free(t->entries);
    free(t->shapes);
    free(t->names);
    free(t->bufs);
}

/* data [d0, d1] (d1 = 0: 1-D); owned: data is malloc'd and becomes t's. */
static int add(hf_tensors *t, const char *name, const float *data, size_t d0, size_t d1, int owned)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        whet_st_entry *en = realloc(t->entries, cap * sizeof *en);
        if (en)
            t->entries = en;
        int64_t(*sh)[2] = realloc(t->shapes, cap * sizeof *sh);
        if (sh)
            t->shapes = sh;
        char **nm = realloc(t->names, cap * sizeof *nm);
        if (nm)
            t->names = nm;
        void **b = realloc(t->bufs, cap * sizeof *b);
        if (b)
            t->bufs = b;
        if (!en || !sh || !nm || !b)
            return -1;
        t->cap = cap;
    }
    size_t n = d0 * (d1 ? d1 : 1);
    void *buf = owned ? (void *)data : NULL;
    if (t->dtype != WHET_ST_F32) {
        uint16_t *h = malloc((n ? n : 1) * sizeof *h);
        if (!h)
            return -1;
        if (t->dtype == WHET_ST_F16)
            t->k->f32_to_f16(h, data, n);
        else
            t->k->f32_to_bf16((whet_bf16 *)h, data, n);
        if (owned)
            free(buf);
        buf = h;
        data = NULL;
    }
    size_t i = t->n++;
    t->names[i] = strdup(name);
    t->bufs[i] = buf;
    t->shapes[i][0] = (int64_t)d0, t->shapes[i][1] = (int64_t)d1;
    t->entries[i] = (whet_st_entry){.name = t->names[i], .dtype = (whet_st_dtype)t->dtype, .rank = d1 ? 2 : 1,
                                    .shape = t->shapes[i], .data = buf ? buf : data};
    return t->names[i] ? 0 : -1;
}

static const float *at(const float *base, size_t l, size_t n)
{
    return base ? base + l * n : NULL;
}

static int add_named(hf_tensors *t, const char *prefix, const char *stem, const char *suffix, const float *data,
                     size_t d0, size_t d1)
{
    char name[256];
    snprintf(name, sizeof name, "%s%s.%s", prefix, stem, suffix);
    return add(t, name, data, d0, d1, 0);
}

/* A [out, in] weight (Conv1D: written [in, out]) and its bias. */
static int add_linear(hf_tensors *t, int conv1d, const char *lp, const char *stem, const float *w, const float *b,
                      size_t out, size_t in)
{
    if (conv1d) {
        float *tr = malloc(out * in * sizeof *tr);
        if (!tr)
            return -1;
        for (size_t o = 0; o < out; o++)
            for (size_t i = 0; i < in; i++)
                tr[i * out + o] = w[o * in + i];
        char name[256];
        snprintf(name, sizeof name, "%s%s.weight", lp, stem);
        if (add(t, name, tr, in, out, 1))
            return -1;
    } else if (add_named(t, lp, stem, "weight", w, out, in)) {
        return -1;
    }
    return b ? add_named(t, lp, stem, "bias", b, out, 0) : 0;
}

static int add_norm(hf_tensors *t, const char *lp, const char *stem, const float *w, const float *b, size_t n)
{
    if (add_named(t, lp, stem, "weight", w, n, 0))
        return -1;
    return b ? add_named(t, lp, stem, "bias", b, n, 0) : 0;
}

static int add_layer(hf_tensors *t, const whet_model *m, size_t l)
{
    const whet_model_config *c = &m->cfg;
    const whet_arch_names *nm = &c->info->names;
    const whet_model_params *p = &m->params;
    int conv = c->info->conv1d;
    size_t C = c->hidden, F = c->ffn, HD = c->head_dim, QD = c->heads * HD, KVD = c->kv_heads * HD;
    char lp[96];
    snprintf(lp, sizeof lp, nm->layer, l);
    if (add_norm(t, lp, nm->attn_norm, at(p->ln1_w, l, C), at(p->ln1_b, l, C), C))
        return -1;
    if (nm->qkv) {
        size_t N = QD + 2 * KVD;
        float *w = malloc(N * C * sizeof *w), *b = p->bq ? malloc(N * sizeof *b) : NULL;
        int rc = -1;
        if (w && (b || !p->bq)) {
            memcpy(w, p->wq + l * QD * C, QD * C * sizeof *w);
            memcpy(w + QD * C, p->wk + l * KVD * C, KVD * C * sizeof *w);
            memcpy(w + (QD + KVD) * C, p->wv + l * KVD * C, KVD * C * sizeof *w);
            if (b) {
                memcpy(b, p->bq + l * QD, QD * sizeof *b);
                memcpy(b + QD, p->bk + l * KVD, KVD * sizeof *b);
                memcpy(b + QD + KVD, p->bv + l * KVD, KVD * sizeof *b);
            }
            rc = add_linear(t, conv, lp, nm->qkv, w, NULL, N, C);
            if (rc == 0 && b) {
                char name[256];
                snprintf(name, sizeof name, "%s%s.bias", lp, nm->qkv);
                rc = add(t, name, b, N, 0, 1);
                b = NULL;
            }
        }
        free(w);
        free(b);
        if (rc)
            return -1;
    } else if (add_linear(t, conv, lp, nm->q, p->wq + l * QD * C, at(p->bq, l, QD), QD, C) ||
               add_linear(t, conv, lp, nm->k, p->wk + l * KVD * C, at(p->bk, l, KVD), KVD, C) ||
               add_linear(t, conv, lp, nm->v, p->wv + l * KVD * C, at(p->bv, l, KVD), KVD, C)) {
        return -1;
    }
    if (p->q_norm && (add_named(t, lp, nm->q_norm, "weight", p->q_norm + l * HD, HD, 0) ||
                      add_named(t, lp, nm->k_norm, "weight", p->k_norm + l * HD, HD, 0)))
        return -1;
    if (add_linear(t, conv, lp, nm->o, p->wo + l * C * QD, at(p->bo, l, C), C, QD) ||
        add_norm(t, lp, nm->mlp_norm, at(p->ln2_w, l, C), at(p->ln2_b, l, C), C))
        return -1;
    if (p->w_gate && add_linear(t, conv, lp, nm->gate, p->w_gate + l * F * C, at(p->b_gate, l, F), F, C))
        return -1;
    return add_linear(t, conv, lp, nm->up, p->w_up + l * F * C, at(p->b_up, l, F), F, C) ||
                   add_linear(t, conv, lp, nm->down, p->w_down + l * C * F, at(p->b_down, l, C), C, F)
               ? -1
               : 0;
}

static int collect(hf_tensors *t, const whet_model *m)
{
    const whet_model_config *c = &m->cfg;
    const whet_arch_names *nm = &c->info->names;
    const whet_model_params *p = &m->params;
    size_t C = c->hidden, V = c->vocab;
    if (add_named(t, "", nm->embed, "weight", p->wte, V, C))
        return -1;
    if (p->wpe && add_named(t, "", nm->pos_embed, "weight", p->wpe, c->max_positions, C))
        return -1;
    for (size_t l = 0; l < c->layers; l++)
        if (add_layer(t, m, l))
            return -1;
    if (add_norm(t, "", nm->final_norm, p->lnf_w, p->lnf_b, C))
        return -1;
    return !c->tied ? add_named(t, "", nm->lm_head, "weight", p->lm_head, V, C) : 0;
}

/* ---- the directory ------------------------------------------------------------------ */

static int copy_file(const char *from, const char *to, whet_err *e)
{
    char *data;
    size_t size;
    if (whet_read_file(from, &data, &size, e))
        return -1;
    int rc = whet_write_file_atomic(to, data, size, e);
    free(data);
    return rc;
}

/* model.safetensors of m in dtype, into an existing or new directory. */
static int write_weights(const whet_model *m, const char *dir, int dtype, whet_err *e)
{
    hf_tensors t = {.dtype = dtype, .k = m->compute ? m->compute->kernels : whet_kernels_best()};
    int rc = -1;
    if (collect(&t, m))
        whet_fail(e, "%s: out of memory", dir);
    else if (whet_make_dir(dir, e) == 0)
        rc = whet_st_write_model_dir(dir, t.entries, t.n, &(whet_st_kv){"format", "pt"}, 1, 0, e);
    hf_tensors_free(&t);
    return rc;
}

int whet_model_save_hf(const whet_model *m, const char *dir, whet_err *e)
{
    if (!m->params.wq || !m->params.wte)
        return whet_fail(e, "%s: the model's linear weights are held as bf16; saving needs the fp32 model", dir);
    return write_weights(m, dir, WHET_ST_F32, e);
}

int whet_model_export_hf(const whet_model *m, const char *source, const char *dir, int dtype, int *no_tokenizer,
                         whet_err *e)
{
    const whet_model_config *c = &m->cfg;
    *no_tokenizer = 1;
    if (dtype != WHET_ST_F32 && dtype != WHET_ST_F16 && dtype != WHET_ST_BF16)
        return whet_fail(e, "%s: dtype %s: expected F32, F16 or BF16", dir, whet_st_dtype_name((whet_st_dtype)dtype));
    if (!m->params.wq || !m->params.wte)
        return whet_fail(e, "%s: the model's linear weights are held as bf16; export needs the fp32 model", dir);
    int from_gguf = source && whet_is_gguf_file(source);
    char *config = NULL;
    size_t config_len = 0;
    char path[4096], from[4096];
    struct stat st;
    if (source && !from_gguf) {
        snprintf(from, sizeof from, "%s/config.json", source);
        if (whet_read_file(from, &config, &config_len, e))
            return -1;
        /* the source's own, unless the model no longer matches it */
        whet_model_config check;
        if (whet_config_parse(&check, config, config_len, from, e) || check.vocab != c->vocab ||
            check.layers != c->layers || check.hidden != c->hidden) {
            free(config);
            config = NULL;
        }
    }
    if (!config && whet_config_to_json(c, &config, &config_len, e))
        return -1;
    int rc = -1;
    if (write_weights(m, dir, dtype, e))
        goto out;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (whet_write_file_atomic(path, config, config_len, e))
        goto out;
    static const char *const copied[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                         "generation_config.json", "chat_template.jinja"};
    for (size_t i = 0; source && !from_gguf && i < sizeof copied / sizeof *copied; i++) {
        snprintf(from, sizeof from, "%s/%s", source, copied[i]);
        if (stat(from, &st) != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, copied[i]);
        if (copy_file(from, path, e))
            goto out;
        if (i == 0)
            *no_tokenizer = 0;
    }
    rc = 0;
out:
    free(config);
    return rc;
}
