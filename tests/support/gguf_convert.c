/* HF model directory → GGUF, as convert_hf_to_gguf.py writes it (see gguf_convert.h). */
#include "support/gguf_convert.h"

#include "io/json.h"
#include "io/safetensors.h"
#include "model/config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void gguf_convert_keep_free(gguf_convert_keep *keep)
{
    for (size_t i = 0; i < keep->n; i++)
        free(keep->bufs[i]);
    free(keep->bufs);
    memset(keep, 0, sizeof *keep);
}

static float *keep_alloc(gguf_convert_keep *keep, size_t n)
{
    if (keep->n == keep->cap) {
        size_t cap = keep->cap ? 2 * keep->cap : 64;
        float **b = realloc(keep->bufs, cap * sizeof *b);
        if (!b)
            return NULL;
        keep->bufs = b, keep->cap = cap;
    }
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (p)
        keep->bufs[keep->n++] = p;
    return p;
}

/* HF name → GGUF name (CONST TENSOR_NAMES via tensor_mapping); NULL: dropped
 * (buffers); "" : unknown. */
static const char *map_name(const char *hf, int gpt2, char *out, size_t cap)
{
    static const char *const llama_map[][2] = {
        {"input_layernorm", "attn_norm"},       {"self_attn.q_proj", "attn_q"},     {"self_attn.k_proj", "attn_k"},
        {"self_attn.v_proj", "attn_v"},         {"self_attn.o_proj", "attn_output"}, {"self_attn.q_norm", "attn_q_norm"},
        {"self_attn.k_norm", "attn_k_norm"},    {"post_attention_layernorm", "ffn_norm"},
        {"mlp.gate_proj", "ffn_gate"},          {"mlp.up_proj", "ffn_up"},          {"mlp.down_proj", "ffn_down"},
    };
    static const char *const gpt2_map[][2] = {
        {"ln_1", "attn_norm"}, {"attn.c_attn", "attn_qkv"}, {"attn.c_proj", "attn_output"},
        {"ln_2", "ffn_norm"},  {"mlp.c_fc", "ffn_up"},      {"mlp.c_proj", "ffn_down"},
    };
    static const char *const top_map[][2] = {
        {"model.embed_tokens", "token_embd"}, {"model.norm", "output_norm"}, {"lm_head", "output"},
        {"wte", "token_embd"},                {"wpe", "position_embd"},      {"ln_f", "output_norm"},
    };
    if (gpt2 && strncmp(hf, "transformer.", 12) == 0)
        hf += 12;
    size_t len = strlen(hf);
    const char *dot = strrchr(hf, '.');
    if (!dot)
        return "";
    const char *suffix = dot + 1;
    size_t stem_len = (size_t)(dot - hf);
    if (strstr(hf, "rotary_emb.inv_freq") || (gpt2 && (strstr(hf, ".attn.bias") || strstr(hf, ".attn.masked_bias"))))
        return NULL;
    for (size_t i = 0; i < sizeof top_map / sizeof *top_map; i++)
        if (strlen(top_map[i][0]) == stem_len && strncmp(hf, top_map[i][0], stem_len) == 0) {
            snprintf(out, cap, "%s.%s", top_map[i][1], suffix);
            return out;
        }
    const char *layers = gpt2 ? "h." : "model.layers.";
    size_t pl = strlen(layers);
    if (strncmp(hf, layers, pl) != 0 || len <= pl)
        return "";
    char *end;
    unsigned long l = strtoul(hf + pl, &end, 10);
    if (*end != '.')
        return "";
    const char *rest = end + 1;
    size_t rest_len = (size_t)(dot - rest);
    size_t n = gpt2 ? sizeof gpt2_map / sizeof *gpt2_map : sizeof llama_map / sizeof *llama_map;
    for (size_t i = 0; i < n; i++) {
        const char *from = gpt2 ? gpt2_map[i][0] : llama_map[i][0], *to = gpt2 ? gpt2_map[i][1] : llama_map[i][1];
        if (strlen(from) == rest_len && strncmp(rest, from, rest_len) == 0) {
            snprintf(out, cap, "blk.%lu.%s.%s", l, to, suffix);
            return out;
        }
    }
    return "";
}

/* LlamaModel.permute: new row h·d + 2j + k = old row h·d + k·d/2 + j */
static void permute_rows(const float *src, float *dst, size_t n_head, size_t rows, size_t cols)
{
    size_t d = rows / n_head, half = d / 2;
    for (size_t h = 0; h < n_head; h++)
        for (size_t j = 0; j < half; j++)
            for (size_t k = 0; k < 2; k++)
                memcpy(dst + (h * d + 2 * j + k) * cols, src + (h * d + k * half + j) * cols, cols * sizeof *dst);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

#define TRY(x)                                                                                                         \
    do {                                                                                                               \
        if ((x) != 0)                                                                                                  \
            goto fail;                                                                                                 \
    } while (0)

static int set_arch_u32(whet_gguf_writer *w, const char *arch, const char *suffix, size_t v, whet_err *e)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return whet_gguf_set_u32(w, key, (uint32_t)v, e);
}

static int set_arch_f32(whet_gguf_writer *w, const char *arch, const char *suffix, double v, whet_err *e)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return whet_gguf_set_f32(w, key, (float)v, e);
}

/* tokenizer.json → tokenizer.ggml.* (LlamaModel/GPT2 _set_vocab_gpt2 with its
 * token types), when the directory has one. */
static int add_tokenizer(whet_gguf_writer *w, const char *dir, const whet_model_config *cfg, whet_err *e)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    whet_json_doc *doc;
    if (whet_json_parse_file(&doc, path, NULL, e))
        return -1;
    int rc = -1;
    size_t V = cfg->vocab;
    const char **tokens = calloc(V, sizeof *tokens);
    int32_t *types = calloc(V, sizeof *types);
    char **pads = calloc(V, sizeof *pads);
    const char **merges = NULL;
    char **joined = NULL;
    size_t n_merges = 0;
    const whet_json *root = whet_json_root(doc), *model = whet_json_get(root, "model");
    const whet_json *vocab = model ? whet_json_get(model, "vocab") : NULL;
    const whet_json *added = whet_json_get(root, "added_tokens");
    if (!tokens || !types || !pads || !vocab || vocab->type != WHET_JSON_OBJECT) {
        whet_fail(e, "%s: expected a BPE model with a vocab", path);
        goto out;
    }
    for (size_t i = 0; i < vocab->u.object.count; i++) {
        const whet_json_member *mb = &vocab->u.object.members[i];
        int64_t id;
        if (whet_json_int64(doc, &mb->value, 0, (int64_t)V - 1, &id, e))
            goto out;
        tokens[id] = mb->key;
        types[id] = 1; /* NORMAL */
    }
    for (size_t i = 0; added && i < whet_json_count(added); i++) {
        const whet_json *a = whet_json_at(added, i), *sp = whet_json_get(a, "special");
        const char *content = whet_json_string(whet_json_get(a, "content"));
        int64_t id;
        if (!content || whet_json_int64(doc, whet_json_get(a, "id"), 0, (int64_t)V - 1, &id, e))
            goto out;
        size_t cl = strlen(content);
        int control = (sp && sp->type == WHET_JSON_TRUE) ||
                      (cl >= 4 && strncmp(content, "<|", 2) == 0 && strcmp(content + cl - 2, "|>") == 0);
        tokens[id] = content;
        types[id] = control ? 3 : 4; /* CONTROL, USER_DEFINED */
    }
    for (size_t i = 0; i < V; i++)
        if (!tokens[i]) {
            pads[i] = malloc(32);
            if (!pads[i])
                goto out;
            snprintf(pads[i], 32, "[PAD%zu]", i);
            tokens[i] = pads[i];
            types[i] = 5; /* UNUSED */
        }
    const whet_json *mj = whet_json_get(model, "merges");
    n_merges = mj ? whet_json_count(mj) : 0;
    merges = calloc(n_merges ? n_merges : 1, sizeof *merges);
    joined = calloc(n_merges ? n_merges : 1, sizeof *joined);
    if (!merges || !joined)
        goto out;
    for (size_t i = 0; i < n_merges; i++) {
        const whet_json *m = whet_json_at(mj, i);
        if (m->type == WHET_JSON_STRING) {
            merges[i] = m->u.string.chars;
        } else {
            const char *a = whet_json_string(whet_json_at(m, 0)), *b = whet_json_string(whet_json_at(m, 1));
            if (!a || !b)
                goto out;
            joined[i] = malloc(strlen(a) + strlen(b) + 2);
            if (!joined[i])
                goto out;
            sprintf(joined[i], "%s %s", a, b);
            merges[i] = joined[i];
        }
    }
    TRY(whet_gguf_set_string(w, "tokenizer.ggml.model", "gpt2", e));
    TRY(whet_gguf_set_string(w, "tokenizer.ggml.pre", "default", e));
    TRY(whet_gguf_set_array(w, "tokenizer.ggml.tokens", WHET_GGUF_STRING, tokens, V, e));
    TRY(whet_gguf_set_array(w, "tokenizer.ggml.token_type", WHET_GGUF_INT32, types, V, e));
    TRY(whet_gguf_set_array(w, "tokenizer.ggml.merges", WHET_GGUF_STRING, merges, n_merges, e));
    if (cfg->bos_token_id >= 0)
        TRY(whet_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)cfg->bos_token_id, e));
    if (cfg->n_eos == 1)
        TRY(whet_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)cfg->eos_token_ids[0], e));
    rc = 0;
    goto out;
fail:
    rc = -1;
out:
    for (size_t i = 0; pads && i < V; i++)
        free(pads[i]);
    for (size_t i = 0; joined && i < n_merges; i++)
        free(joined[i]);
    free(pads);
    free(joined);
    free(merges);
    free(tokens);
    free(types);
    whet_json_free(doc);
    return rc;
}

whet_gguf_writer *gguf_convert_hf(const char *dir, uint32_t type, gguf_convert_keep *keep, whet_err *e)
{
    memset(keep, 0, sizeof *keep);
    whet_model_config cfg;
    if (whet_config_load(&cfg, dir, e))
        return NULL;
    whet_safetensors *st = NULL;
    if (whet_st_open_dir(&st, dir, e))
        return NULL;
    whet_gguf_writer *w = whet_gguf_writer_new();
    if (!w) {
        whet_fail(e, "%s: out of memory", dir);
        whet_st_close(st);
        return NULL;
    }
    const whet_arch_info *info = cfg.info;
    int gpt2 = info->arch == WHET_ARCH_GPT2;
    int llama = info->arch == WHET_ARCH_LLAMA || info->arch == WHET_ARCH_MISTRAL;
    const char *arch = llama ? "llama" : info->name;
    uint32_t file_type = type == WHET_GGML_F32 ? 0 : type == WHET_GGML_F16 ? 1 : 7;
    /* TextModel.set_gguf_parameters (+ LlamaModel's vocab_size and rope.dimension_count; GPT2Model's own) */
    TRY(whet_gguf_set_string(w, "general.architecture", arch, e));
    TRY(whet_gguf_set_string(w, "general.type", "model", e));
    TRY(whet_gguf_set_string(w, "general.name", info->name, e));
    TRY(set_arch_u32(w, arch, "block_count", cfg.layers, e));
    TRY(set_arch_u32(w, arch, "context_length", cfg.max_positions, e));
    TRY(set_arch_u32(w, arch, "embedding_length", cfg.hidden, e));
    TRY(set_arch_u32(w, arch, "feed_forward_length", cfg.ffn, e));
    TRY(set_arch_u32(w, arch, "attention.head_count", cfg.heads, e));
    if (gpt2) {
        TRY(set_arch_f32(w, arch, "attention.layer_norm_epsilon", cfg.norm_eps, e));
    } else {
        TRY(set_arch_u32(w, arch, "attention.head_count_kv", cfg.kv_heads, e));
        TRY(set_arch_f32(w, arch, "rope.freq_base", cfg.rope_theta, e));
        TRY(set_arch_f32(w, arch, "attention.layer_norm_rms_epsilon", cfg.norm_eps, e));
        if (cfg.head_dim != cfg.hidden / cfg.heads) { /* head_dim in config.json (written when given) */
            TRY(set_arch_u32(w, arch, "attention.key_length", cfg.head_dim, e));
            TRY(set_arch_u32(w, arch, "attention.value_length", cfg.head_dim, e));
        }
        if (cfg.rope_scaling == WHET_ROPE_SCALING_LINEAR) {
            char key[128];
            snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
            TRY(whet_gguf_set_string(w, key, "linear", e));
            TRY(set_arch_f32(w, arch, "rope.scaling.factor", cfg.rope_factor, e));
        }
    }
    if (llama) {
        TRY(set_arch_u32(w, arch, "vocab_size", cfg.vocab, e));
        TRY(set_arch_u32(w, arch, "rope.dimension_count", cfg.head_dim, e));
    }
    TRY(whet_gguf_set_u32(w, "general.file_type", file_type, e));
    TRY(add_tokenizer(w, dir, &cfg, e));

    /* tensors, in the checkpoint's order */
    for (size_t i = 0; i < whet_st_count(st); i++) {
        const whet_st_tensor *t = whet_st_tensor_at(st, i);
        char gname[128];
        const char *name = map_name(t->name, gpt2, gname, sizeof gname);
        if (!name)
            continue;
        if (!*name) {
            whet_fail(e, "%s: tensor \"%s\" has no GGUF name", whet_st_name(st), t->name);
            goto fail;
        }
        if (cfg.tied && strcmp(name, "output.weight") == 0)
            continue;
        float *data = keep_alloc(keep, t->numel);
        if (!data) {
            whet_fail(e, "%s: out of memory", dir);
            goto fail;
        }
        TRY(whet_st_load_f32(t, data, NULL, e));
        uint64_t ne[2];
        uint32_t n_dims = (uint32_t)t->rank;
        if (n_dims == 2) {
            size_t rows = (size_t)t->shape[0], cols = (size_t)t->shape[1];
            int conv1d = gpt2 && !strstr(name, "token_embd") && !strstr(name, "position_embd");
            if (conv1d) { /* Conv1D [in, out] → [out, in] */
                float *tr = keep_alloc(keep, t->numel);
                if (!tr)
                    goto fail;
                for (size_t r = 0; r < rows; r++)
                    for (size_t c = 0; c < cols; c++)
                        tr[c * rows + r] = data[r * cols + c];
                data = tr;
                size_t tmp = rows;
                rows = cols, cols = tmp;
            }
            ne[0] = cols, ne[1] = rows;
        } else {
            ne[0] = (uint64_t)t->shape[0], ne[1] = 1;
        }
        if (llama && (strstr(name, ".attn_q.") || strstr(name, ".attn_k."))) {
            size_t n_head = strstr(name, ".attn_q.") ? cfg.heads : cfg.kv_heads;
            float *p = keep_alloc(keep, t->numel);
            if (!p)
                goto fail;
            permute_rows(data, p, n_head, (size_t)(n_dims == 2 ? ne[1] : ne[0]), n_dims == 2 ? (size_t)ne[0] : 1);
            data = p;
        }
        uint32_t tt = type;
        if (n_dims == 1 || ends_with(name, "_norm.weight"))
            tt = WHET_GGML_F32;
        else if (tt == WHET_GGML_Q8_0 && ne[0] % 32 != 0)
            tt = WHET_GGML_F16;
        TRY(whet_gguf_add_tensor_f32(w, name, tt, n_dims, ne, data, e));
    }
    /* LlamaModel.generate_extra_tensors: Llama 3 rope scaling as divisors,
     * computed in float32 as the converter's torch code does. One deliberate
     * difference: the converter reads original_max_position_embeddings from
     * the top level of config.json (default 8192), HF from rope_scaling; the
     * two agree on released Llama 3.x (8192) but not on the llama3_rope test
     * model (64 in rope_scaling only), so this takes HF's, as llama.cpp would
     * need to reproduce HF's logits. */
    if (llama && cfg.rope_scaling == WHET_ROPE_SCALING_LLAMA3) {
        size_t half = cfg.head_dim / 2;
        float *f = keep_alloc(keep, half), freqs[WHET_MAX_HEAD_DIM / 2];
        if (!f)
            goto fail;
        whet_model_config plain = cfg;
        plain.rope_scaling = WHET_ROPE_SCALING_NONE;
        whet_rope_inv_freq(&plain, freqs);
        const float factor = (float)cfg.rope_factor, low = (float)cfg.rope_low_freq_factor,
                    high = (float)cfg.rope_high_freq_factor, old = (float)cfg.rope_original_max_positions;
        double low_wavelen = (double)cfg.rope_original_max_positions / cfg.rope_low_freq_factor;
        double high_wavelen = (double)cfg.rope_original_max_positions / cfg.rope_high_freq_factor;
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
        uint64_t ne = half;
        TRY(whet_gguf_add_tensor_f32(w, "rope_freqs.weight", WHET_GGML_F32, 1, &ne, f, e));
    }
    whet_st_close(st);
    return w;
fail:
    whet_st_close(st);
    whet_gguf_writer_free(w);
    gguf_convert_keep_free(keep);
    return NULL;
}

int gguf_convert_hf_file(const char *dir, uint32_t type, const char *path, whet_err *e)
{
    gguf_convert_keep keep;
    whet_gguf_writer *w = gguf_convert_hf(dir, type, &keep, e);
    if (!w)
        return -1;
    int rc = whet_gguf_write_file(w, path, e);
    whet_gguf_writer_free(w);
    gguf_convert_keep_free(&keep);
    return rc;
}
