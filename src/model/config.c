#include "model/config.h"

#include "io/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LLAMA_NAMES                                                                                             \
    {.embed = "model.embed_tokens", .final_norm = "model.norm", .lm_head = "lm_head",                          \
     .layer = "model.layers.%zu.", .attn_norm = "input_layernorm", .q = "self_attn.q_proj",                     \
     .k = "self_attn.k_proj", .v = "self_attn.v_proj", .o = "self_attn.o_proj", .q_norm = "self_attn.q_norm",   \
     .k_norm = "self_attn.k_norm", .mlp_norm = "post_attention_layernorm", .gate = "mlp.gate_proj",             \
     .up = "mlp.up_proj", .down = "mlp.down_proj"}

static const whet_arch_info arch_table[WHET_ARCH_COUNT] = {
    {.arch = WHET_ARCH_LLAMA, .hf_class = "LlamaForCausalLM", .name = "llama", .norm = WHET_NORM_RMS,
     .qkv_bias = WHET_FLAG_FROM_KEY, .o_bias = WHET_FLAG_FROM_KEY, .mlp_bias = WHET_FLAG_FROM_KEY,
     .positions = WHET_POS_ROPE, .rope_pairing = WHET_ROPE_HALF_SPLIT, .act = WHET_ACT_SWIGLU,
     .tied = WHET_FLAG_FROM_KEY, .names = LLAMA_NAMES, .default_rms_eps = 1e-6, .default_rope_theta = 10000.0,
     .default_max_positions = 2048},
    {.arch = WHET_ARCH_MISTRAL, .hf_class = "MistralForCausalLM", .name = "mistral", .norm = WHET_NORM_RMS,
     .positions = WHET_POS_ROPE, .rope_pairing = WHET_ROPE_HALF_SPLIT, .act = WHET_ACT_SWIGLU,
     .tied = WHET_FLAG_FROM_KEY, .names = LLAMA_NAMES, .default_rms_eps = 1e-6, .default_rope_theta = 10000.0,
     .default_max_positions = 4096 * 32},
    {.arch = WHET_ARCH_QWEN2, .hf_class = "Qwen2ForCausalLM", .name = "qwen2", .norm = WHET_NORM_RMS,
     .qkv_bias = WHET_FLAG_YES, .positions = WHET_POS_ROPE, .rope_pairing = WHET_ROPE_HALF_SPLIT,
     .act = WHET_ACT_SWIGLU, .tied = WHET_FLAG_FROM_KEY, .names = LLAMA_NAMES, .default_rms_eps = 1e-6,
     .default_rope_theta = 10000.0, .default_max_positions = 32768},
    {.arch = WHET_ARCH_QWEN3, .hf_class = "Qwen3ForCausalLM", .name = "qwen3", .norm = WHET_NORM_RMS,
     .qkv_bias = WHET_FLAG_FROM_KEY, .o_bias = WHET_FLAG_FROM_KEY, .qk_norm = 1, .positions = WHET_POS_ROPE,
     .rope_pairing = WHET_ROPE_HALF_SPLIT, .act = WHET_ACT_SWIGLU, .tied = WHET_FLAG_FROM_KEY,
     .names = LLAMA_NAMES, .default_rms_eps = 1e-6, .default_rope_theta = 10000.0,
     .default_max_positions = 32768},
    {.arch = WHET_ARCH_GPT2, .hf_class = "GPT2LMHeadModel", .name = "gpt2", .norm = WHET_NORM_LAYER,
     .qkv_bias = WHET_FLAG_YES, .o_bias = WHET_FLAG_YES, .mlp_bias = WHET_FLAG_YES, .positions = WHET_POS_LEARNED,
     .act = WHET_ACT_GELU_TANH, .tied = WHET_FLAG_YES, .conv1d = 1,
     .names = {.embed = "wte", .pos_embed = "wpe", .final_norm = "ln_f", .layer = "h.%zu.", .attn_norm = "ln_1",
               .qkv = "attn.c_attn", .o = "attn.c_proj", .mlp_norm = "ln_2", .up = "mlp.c_fc",
               .down = "mlp.c_proj"},
     .default_max_positions = 1024},
};

const whet_arch_info *whet_arch_table(size_t *count)
{
    if (count)
        *count = WHET_ARCH_COUNT;
    return arch_table;
}

const char *whet_arch_supported_list(void)
{
    return "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, GPT2LMHeadModel";
}

/* ---- typed getters: each error points at the key's value in the file ---- */

typedef struct reader {
    const whet_json_doc *doc;
    const whet_json *root;
    whet_err *e;
} reader;

/* A key whose value is null counts as absent (HF writes "head_dim": null). */
static const whet_json *lookup(const whet_json *obj, const char *key)
{
    const whet_json *v = whet_json_get(obj, key);
    return v && v->type != WHET_JSON_NULL ? v : NULL;
}

static int get_size(const reader *r, const whet_json *obj, const char *key, int required, size_t dflt, size_t min,
                    size_t *out)
{
    const whet_json *v = lookup(obj, key);
    if (!v) {
        if (required)
            return whet_json_fail_missing(r->e, r->doc, obj, key);
        *out = dflt;
        return 0;
    }
    int64_t x;
    if (v->type != WHET_JSON_NUMBER || v->u.number.int_status != WHET_JSON_INT_EXACT || v->u.number.integer < (int64_t)min ||
        v->u.number.integer > (int64_t)1 << 40)
        return whet_json_fail_at(r->e, r->doc, v, "\"%s\" to be an integer in [%zu, 2^40]", key, min);
    x = v->u.number.integer;
    *out = (size_t)x;
    return 0;
}

static int get_double(const reader *r, const whet_json *obj, const char *key, int required, double dflt, double *out)
{
    const whet_json *v = lookup(obj, key);
    if (!v) {
        if (required)
            return whet_json_fail_missing(r->e, r->doc, obj, key);
        *out = dflt;
        return 0;
    }
    if (v->type != WHET_JSON_NUMBER || !(v->u.number.value > 0) || !isfinite(v->u.number.value))
        return whet_json_fail_at(r->e, r->doc, v, "\"%s\" to be a positive number", key);
    *out = v->u.number.value;
    return 0;
}

static int get_bool(const reader *r, const whet_json *obj, const char *key, int dflt, int *out)
{
    const whet_json *v = lookup(obj, key);
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (v->type != WHET_JSON_TRUE && v->type != WHET_JSON_FALSE)
        return whet_json_fail_at(r->e, r->doc, v, "\"%s\" to be true or false", key);
    *out = v->type == WHET_JSON_TRUE;
    return 0;
}

/* A string key: absent gives dflt; otherwise it must be one of `allowed`
 * (a NULL-terminated list), whose index is returned in *out. */
static int get_choice(const reader *r, const whet_json *obj, const char *key, const char *const *allowed, int dflt,
                      const char *what, int *out)
{
    const whet_json *v = lookup(obj, key);
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (v->type == WHET_JSON_STRING)
        for (int i = 0; allowed[i]; i++)
            if (strcmp(v->u.string.chars, allowed[i]) == 0) {
                *out = i;
                return 0;
            }
    return whet_json_fail_at(r->e, r->doc, v, "\"%s\" to be %s", key, what);
}

static int resolve_flag(const reader *r, whet_flag f, const char *key, int *out)
{
    if (f != WHET_FLAG_FROM_KEY) {
        *out = f == WHET_FLAG_YES;
        return 0;
    }
    return get_bool(r, r->root, key, 0, out);
}

static int read_token_ids(const reader *r, whet_model_config *cfg)
{
    cfg->bos_token_id = -1;
    cfg->n_eos = 0;
    const whet_json *bos = lookup(r->root, "bos_token_id");
    if (bos && whet_json_int64(r->doc, bos, 0, INT32_MAX, &cfg->bos_token_id, r->e))
        return -1;
    const whet_json *eos = lookup(r->root, "eos_token_id");
    if (!eos)
        return 0;
    if (eos->type == WHET_JSON_ARRAY) {
        if (eos->u.array.count > WHET_MAX_EOS_IDS)
            return whet_json_fail_at(r->e, r->doc, eos, "\"eos_token_id\" to hold at most %d ids", WHET_MAX_EOS_IDS);
        for (size_t i = 0; i < eos->u.array.count; i++)
            if (whet_json_int64(r->doc, &eos->u.array.items[i], 0, INT32_MAX, &cfg->eos_token_ids[i], r->e))
                return -1;
        cfg->n_eos = eos->u.array.count;
        return 0;
    }
    if (whet_json_int64(r->doc, eos, 0, INT32_MAX, &cfg->eos_token_ids[0], r->e))
        return -1;
    cfg->n_eos = 1;
    return 0;
}

/* rope_scaling (or transformers v5's rope_parameters): none, "linear" or "llama3" */
static int read_rope(const reader *r, whet_model_config *cfg)
{
    const whet_arch_info *info = cfg->info;
    if (get_double(r, r->root, "rope_theta", 0, info->default_rope_theta, &cfg->rope_theta))
        return -1;
    const char *key = "rope_scaling";
    const whet_json *rs = lookup(r->root, key);
    const whet_json *params = lookup(r->root, "rope_parameters");
    if (!rs && params) {
        key = "rope_parameters";
        rs = params;
        if (rs->type == WHET_JSON_OBJECT && get_double(r, rs, "rope_theta", 0, cfg->rope_theta, &cfg->rope_theta))
            return -1;
    }
    cfg->rope_scaling = WHET_ROPE_SCALING_NONE;
    if (!rs)
        return 0;
    if (rs->type != WHET_JSON_OBJECT)
        return whet_json_fail_at(r->e, r->doc, rs, "\"%s\" to be an object or null", key);
    const whet_json *type = lookup(rs, "rope_type");
    const char *type_key = "rope_type";
    if (!type) {
        type = lookup(rs, "type");
        type_key = "type";
    }
    if (!type)
        return whet_json_fail_missing(r->e, r->doc, rs, "rope_type");
    static const char *const kinds[] = {"default", "linear", "llama3", NULL};
    int kind;
    if (get_choice(r, rs, type_key, kinds, 0,
                   "a RoPE scaling whet supports: \"default\", \"linear\" or \"llama3\"", &kind))
        return -1;
    cfg->rope_scaling = (whet_rope_scaling)kind;
    if (kind == WHET_ROPE_SCALING_NONE)
        return 0;
    if (get_double(r, rs, "factor", 1, 0, &cfg->rope_factor))
        return -1;
    if (kind == WHET_ROPE_SCALING_LLAMA3) {
        if (get_double(r, rs, "low_freq_factor", 1, 0, &cfg->rope_low_freq_factor) ||
            get_double(r, rs, "high_freq_factor", 1, 0, &cfg->rope_high_freq_factor) ||
            get_size(r, rs, "original_max_position_embeddings", 1, 0, 1, &cfg->rope_original_max_positions))
            return -1;
        if (!(cfg->rope_high_freq_factor > cfg->rope_low_freq_factor))
            return whet_json_fail_at(r->e, r->doc, lookup(rs, "high_freq_factor"),
                                     "\"high_freq_factor\" to be greater than \"low_freq_factor\"");
    }
    return 0;
}

static int parse_llama_like(const reader *r, whet_model_config *cfg)
{
    const whet_json *root = r->root;
    const whet_arch_info *info = cfg->info;
    double eps;
    if (get_size(r, root, "vocab_size", 1, 0, 1, &cfg->vocab) ||
        get_size(r, root, "hidden_size", 1, 0, 1, &cfg->hidden) ||
        get_size(r, root, "num_hidden_layers", 1, 0, 1, &cfg->layers) ||
        get_size(r, root, "num_attention_heads", 1, 0, 1, &cfg->heads) ||
        get_size(r, root, "num_key_value_heads", 0, cfg->heads, 1, &cfg->kv_heads) ||
        get_size(r, root, "intermediate_size", 1, 0, 1, &cfg->ffn) ||
        get_size(r, root, "max_position_embeddings", 0, info->default_max_positions, 1, &cfg->max_positions) ||
        get_double(r, root, "rms_norm_eps", 0, info->default_rms_eps, &eps))
        return -1;
    cfg->norm_eps = (float)eps;
    if (get_size(r, root, "head_dim", 0, cfg->hidden / cfg->heads, 2, &cfg->head_dim))
        return -1;
    static const char *const acts[] = {"silu", NULL};
    int act;
    if (get_choice(r, root, "hidden_act", acts, 0, "\"silu\" (the only activation whet supports for this class)",
                   &act))
        return -1;
    if (read_rope(r, cfg))
        return -1;
    if (info->arch == WHET_ARCH_MISTRAL) {
        if (get_size(r, root, "sliding_window", 0, 0, 1, &cfg->sliding_window))
            return -1;
    }
    if (info->arch == WHET_ARCH_QWEN2) {
        int use_sw;
        if (get_bool(r, root, "use_sliding_window", 0, &use_sw))
            return -1;
        if (use_sw)
            return whet_json_fail_at(r->e, r->doc, whet_json_get(root, "use_sliding_window"),
                                     "\"use_sliding_window\" to be false (whet supports full causal attention only)");
    }
    return 0;
}

static int parse_gpt2(const reader *r, whet_model_config *cfg)
{
    const whet_json *root = r->root;
    double eps;
    if (get_size(r, root, "vocab_size", 1, 0, 1, &cfg->vocab) || get_size(r, root, "n_embd", 1, 0, 1, &cfg->hidden) ||
        get_size(r, root, "n_layer", 1, 0, 1, &cfg->layers) || get_size(r, root, "n_head", 1, 0, 1, &cfg->heads) ||
        get_size(r, root, "n_positions", 0, cfg->info->default_max_positions, 1, &cfg->max_positions) ||
        get_double(r, root, "layer_norm_epsilon", 0, 1e-5, &eps))
        return -1;
    cfg->norm_eps = (float)eps;
    cfg->kv_heads = cfg->heads;
    cfg->head_dim = cfg->hidden / cfg->heads;
    if (get_size(r, root, "n_inner", 0, 4 * cfg->hidden, 1, &cfg->ffn))
        return -1;
    static const char *const acts[] = {"gelu_new", "gelu_pytorch_tanh", NULL};
    int act, flag;
    if (get_choice(r, root, "activation_function", acts, 0,
                   "\"gelu_new\" or \"gelu_pytorch_tanh\" (the activations whet supports for GPT-2)", &act))
        return -1;
    if (get_bool(r, root, "scale_attn_weights", 1, &flag))
        return -1;
    if (!flag)
        return whet_json_fail_at(r->e, r->doc, whet_json_get(root, "scale_attn_weights"),
                                 "\"scale_attn_weights\" to be true (whet scales attention by head_dim^-1/2)");
    if (get_bool(r, root, "scale_attn_by_inverse_layer_idx", 0, &flag))
        return -1;
    if (flag)
        return whet_json_fail_at(r->e, r->doc, whet_json_get(root, "scale_attn_by_inverse_layer_idx"),
                                 "\"scale_attn_by_inverse_layer_idx\" to be false (not supported)");
    return 0;
}

int whet_config_parse(whet_model_config *cfg, const char *text, size_t size, const char *name, whet_err *e)
{
    memset(cfg, 0, sizeof *cfg);
    whet_json_doc *doc;
    if (whet_json_parse(&doc, text, size, name, NULL, e))
        return -1;
    reader r = {.doc = doc, .root = whet_json_root(doc), .e = e};
    int rc = -1;
    if (r.root->type != WHET_JSON_OBJECT) {
        whet_json_fail_at(e, doc, r.root, "a JSON object (a model's config.json)");
        goto out;
    }
    const whet_json *archs = whet_json_get(r.root, "architectures");
    if (!archs) {
        whet_json_fail_missing(e, doc, r.root, "architectures");
        goto out;
    }
    const whet_json *cls = archs->type == WHET_JSON_ARRAY && archs->u.array.count == 1 ? &archs->u.array.items[0] : archs;
    if (cls->type == WHET_JSON_STRING)
        for (size_t i = 0; i < WHET_ARCH_COUNT; i++)
            if (strcmp(cls->u.string.chars, arch_table[i].hf_class) == 0)
                cfg->info = &arch_table[i];
    if (!cfg->info) {
        whet_json_fail_at(e, doc, cls, "\"architectures\" to name one model class whet supports (%s)",
                          whet_arch_supported_list());
        goto out;
    }
    const whet_arch_info *info = cfg->info;
    if ((info->arch == WHET_ARCH_GPT2 ? parse_gpt2(&r, cfg) : parse_llama_like(&r, cfg)) ||
        resolve_flag(&r, info->qkv_bias, "attention_bias", &cfg->qkv_bias) ||
        resolve_flag(&r, info->o_bias, "attention_bias", &cfg->o_bias) ||
        resolve_flag(&r, info->mlp_bias, "mlp_bias", &cfg->mlp_bias) ||
        resolve_flag(&r, info->tied, "tie_word_embeddings", &cfg->tied) || read_token_ids(&r, cfg))
        goto out;
    /* shapes the forward relies on */
    const char *heads_key = info->arch == WHET_ARCH_GPT2 ? "n_head" : "num_attention_heads";
    if (cfg->heads % cfg->kv_heads != 0) {
        whet_json_fail_at(e, doc, whet_json_get(r.root, "num_key_value_heads"),
                          "\"num_key_value_heads\" to divide \"%s\" (%zu)", heads_key, cfg->heads);
        goto out;
    }
    if (cfg->head_dim == 0 || cfg->head_dim % 2 != 0 || cfg->head_dim > WHET_MAX_HEAD_DIM ||
        (info->arch == WHET_ARCH_GPT2 && cfg->head_dim * cfg->heads != cfg->hidden)) {
        const char *dim_key = info->arch == WHET_ARCH_GPT2 ? "n_embd" : "hidden_size";
        const whet_json *at = whet_json_get(r.root, "head_dim");
        whet_json_fail_at(e, doc, at ? at : whet_json_get(r.root, dim_key),
                          "a head size (head_dim, or %s / %s) that is even, non-zero and at most %d%s", dim_key, heads_key,
                          WHET_MAX_HEAD_DIM, info->arch == WHET_ARCH_GPT2 ? ", with n_embd a multiple of n_head" : "");
        goto out;
    }
    rc = 0;
out:
    whet_json_free(doc);
    return rc;
}

int whet_config_load(whet_model_config *cfg, const char *path, whet_err *e)
{
    size_t len = strlen(path);
    int is_file = len >= 5 && strcmp(path + len - 5, ".json") == 0;
    char *file = malloc(len + 16);
    if (!file)
        return whet_fail(e, "%s: out of memory", path);
    snprintf(file, len + 16, is_file ? "%s" : "%s/config.json", path);
    char *text;
    size_t size;
    int rc = whet_read_file(file, &text, &size, e);
    if (rc == 0) {
        rc = whet_config_parse(cfg, text, size, file, e);
        free(text);
    }
    free(file);
    return rc;
}

/* ---- RoPE ---- */

/* transformers' modeling_rope_utils in float32, step by step:
 *   default: inv_freq = 1 / base^(arange(0, dim, 2).float() / dim)
 *   linear:  inv_freq / factor
 *   llama3:  wavelen = 2π / inv_freq; low frequencies (wavelen > old/low) / factor,
 *            high ones (wavelen < old/high) kept, the band between blended. */
void whet_rope_inv_freq(const whet_model_config *cfg, float *inv_freq)
{
    size_t half = cfg->head_dim / 2;
    const float base = (float)cfg->rope_theta, dim = (float)cfg->head_dim;
    for (size_t i = 0; i < half; i++) {
        float exponent = (float)(2 * i) / dim;
        float inv = 1.0f / powf(base, exponent);
        if (cfg->rope_scaling == WHET_ROPE_SCALING_LINEAR) {
            inv = inv / (float)cfg->rope_factor;
        } else if (cfg->rope_scaling == WHET_ROPE_SCALING_LLAMA3) {
            const double old_ctx = (double)cfg->rope_original_max_positions;
            const float factor = (float)cfg->rope_factor;
            const float low = (float)cfg->rope_low_freq_factor;
            const float low_freq_wavelen = (float)(old_ctx / cfg->rope_low_freq_factor);
            const float high_freq_wavelen = (float)(old_ctx / cfg->rope_high_freq_factor);
            float wavelen = (float)(2 * M_PI) / inv;
            float inv_llama = wavelen > low_freq_wavelen ? inv / factor : inv;
            float smooth = ((float)old_ctx / wavelen - low) / (float)(cfg->rope_high_freq_factor - cfg->rope_low_freq_factor);
            float smoothed = (1.0f - smooth) * inv_llama / factor + smooth * inv_llama;
            int medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
            inv = medium ? smoothed : inv_llama;
        } else if (cfg->rope_scaling == WHET_ROPE_SCALING_FREQS) {
            inv = inv / cfg->rope_freq_divisors[i];
        }
        inv_freq[i] = inv;
    }
}

void whet_rope_tables(const whet_model_config *cfg, size_t n, float *cos_table, float *sin_table)
{
    size_t half = cfg->head_dim / 2;
    float inv[WHET_MAX_HEAD_DIM / 2];
    whet_rope_inv_freq(cfg, inv);
    for (size_t p = 0; p < n; p++)
        for (size_t i = 0; i < half; i++) {
            float angle = inv[i] * (float)p; /* HF: inv_freq @ position_ids, one product each */
            cos_table[p * half + i] = (float)cos((double)angle);
            sin_table[p * half + i] = (float)sin((double)angle);
        }
}
