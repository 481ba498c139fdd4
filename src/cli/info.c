/* whet info: what a model is and how much memory it needs, from config.json,
 * the safetensors headers and tokenizer_config.json (or a GGUF file's
 * metadata and tensor list), without reading the weights. */
#include "cli/commands.h"
#include "cli/common.h"
#include "io/gguf.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/model.h"
#include "tok/chat_template.h"
#include "util/log.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DEFAULT_SEQ_LEN 2048
#define LORA_RANK 8
#define MAX_DTYPES 32

static void usage(FILE *out)
{
    fputs("usage: whet info MODEL [--seq-len T] [--batch-size B] [--json]\n"
          "Describe a model (HF directory or GGUF file) and the memory it needs.\n"
          "  --seq-len T     sequence length for the memory figures\n"
          "                  (default: the model's positions, at most 2048)\n"
          "  --batch-size B  sequences per training step for the training figures (default 1)\n"
          "  --json          print one JSON object\n"
          "  --version       print whet's version\n"
          "  --help          this text\n",
          out);
}

typedef struct dtype_stat {
    const char *name;
    size_t tensors;
    uint64_t elements, bytes;
} dtype_stat;

typedef struct model_info {
    const char *format; /* "safetensors" or "gguf" */
    char arch_source[128]; /* the HF class or GGUF general.architecture */
    whet_model_config cfg;
    dtype_stat dtypes[MAX_DTYPES];
    size_t n_dtypes;
    uint64_t stored_elements, stored_bytes;
    char chat[160];     /* template name, "none" or "unrecognised" */
} model_info;

static void add_dtype(model_info *mi, const char *name, uint64_t elements, uint64_t bytes)
{
    size_t i = 0;
    while (i < mi->n_dtypes && strcmp(mi->dtypes[i].name, name) != 0)
        i++;
    if (i == mi->n_dtypes) {
        if (mi->n_dtypes == MAX_DTYPES)
            return;
        mi->dtypes[mi->n_dtypes++] = (dtype_stat){name, 0, 0, 0};
    }
    mi->dtypes[i].tensors++;
    mi->dtypes[i].elements += elements;
    mi->dtypes[i].bytes += bytes;
    mi->stored_elements += elements;
    mi->stored_bytes += bytes;
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The chat template a model directory declares: its family's name, "none"
 * when it has none, "unrecognised" when whet cannot render it. */
static void chat_of_dir(const char *dir, char *out, size_t size)
{
    char config[4096], jinja[4096];
    snprintf(config, sizeof config, "%s/tokenizer_config.json", dir);
    snprintf(jinja, sizeof jinja, "%s/chat_template.jinja", dir);
    int declared = is_file(jinja);
    if (!declared && is_file(config)) {
        whet_json_doc *doc = NULL;
        whet_err e = {{0}};
        if (whet_json_parse_file(&doc, config, NULL, &e) == 0) {
            const whet_json *ct = whet_json_get(whet_json_root(doc), "chat_template");
            declared = ct && ct->type != WHET_JSON_NULL;
        }
        whet_json_free(doc);
    }
    if (!declared) {
        snprintf(out, size, "none");
        return;
    }
    whet_chat_template t;
    whet_err e = {{0}};
    if (whet_chat_template_load(&t, dir, NULL, &e) == 0)
        snprintf(out, size, "%s", t.name);
    else
        snprintf(out, size, "unrecognised");
}

static int info_from_dir(const char *path, model_info *mi)
{
    whet_err e = {{0}};
    if (whet_config_load(&mi->cfg, path, &e) != 0) {
        whet_error("%s", e.msg);
        return -1;
    }
    mi->format = "safetensors";
    snprintf(mi->arch_source, sizeof mi->arch_source, "%s", mi->cfg.info->hf_class);
    whet_safetensors *st = NULL;
    if (whet_st_open_dir(&st, path, &e) != 0) {
        whet_error("%s", e.msg);
        return -1;
    }
    for (size_t i = 0; i < whet_st_count(st); i++) {
        const whet_st_tensor *t = whet_st_tensor_at(st, i);
        add_dtype(mi, whet_st_dtype_name(t->dtype), t->numel, t->nbytes);
    }
    whet_st_close(st);
    chat_of_dir(path, mi->chat, sizeof mi->chat);
    return 0;
}

/* ---- GGUF metadata ---------------------------------------------------------- */

static int info_from_gguf(const char *path, model_info *mi)
{
    whet_err e = {{0}};
    whet_gguf *g = whet_gguf_open(path, &e);
    if (!g) {
        whet_error("%s", e.msg);
        return -1;
    }
    int rc = -1;
    if (whet_config_from_gguf(&mi->cfg, g, &e) != 0) {
        whet_error("%s", e.msg);
        goto done;
    }
    const whet_gguf_str *arch_str;
    if (whet_gguf_get_string(g, "general.architecture", &arch_str, &e) != 0) {
        whet_error("%s", e.msg);
        goto done;
    }
    snprintf(mi->arch_source, sizeof mi->arch_source, "%s", arch_str->data);
    mi->format = "gguf";
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const whet_gguf_tensor *t = &g->tensors[i];
        const char *name = whet_ggml_type_name(t->type);
        add_dtype(mi, name ? name : "?", t->n_elements, t->n_bytes);
    }
    const whet_gguf_kv *ct = whet_gguf_find(g, "tokenizer.chat_template");
    if (!ct) {
        snprintf(mi->chat, sizeof mi->chat, "none");
    } else {
        whet_chat_template t;
        if (ct->value.type == WHET_GGUF_STRING &&
            whet_chat_template_recognize(&t, ct->value.as.str.data, (size_t)ct->value.as.str.len, path, &e) == 0)
            snprintf(mi->chat, sizeof mi->chat, "%s", t.name);
        else
            snprintf(mi->chat, sizeof mi->chat, "unrecognised");
    }
    rc = 0;
done:
    whet_gguf_close(g);
    return rc;
}

/* ---- memory ----------------------------------------------------------------------- */

typedef struct memory_plan {
    size_t seq_len, batch;
    whet_memory_estimate run;   /* B = 1, T = seq_len: one layer's activations reused, and a KV cache */
    double run_total;
    /* training at B × T: every layer's activations kept for the backward pass
     * (its gradient buffers included), or with gradient checkpointing */
    double acts_kept, acts_checkpointed;
    size_t lora_params;         /* adapter parameters at LORA_RANK */
    double lora_weights, lora_state, lora_products; /* frozen weights; adapter state; its rank-r products */
    double lora_kept, lora_checkpointed;
    double full_state, full_kept, full_checkpointed;
} memory_plan;

/* r·(in + out) summed over every linear layer of every block (not the LM head). */
static size_t lora_param_count(const whet_model_config *c, size_t r)
{
    size_t C = c->hidden, F = c->ffn, QD = c->heads * c->head_dim, KVD = c->kv_heads * c->head_dim;
    size_t per_layer = (C + QD) + 2 * (C + KVD) + (QD + C); /* q, k, v, o */
    per_layer += (c->info->act == WHET_ACT_SWIGLU ? 2 : 1) * (C + F) + (F + C); /* gate, up, down */
    return r * per_layer * c->layers;
}

static size_t linears_per_layer(const whet_model_config *c)
{
    return c->info->act == WHET_ACT_SWIGLU ? 7 : 6;
}

/* The figures whet train's plan gives (src/train/trainer.c) for a LoRA run
 * on every linear layer and for a full fine-tune. */
static memory_plan plan_memory(const whet_model_config *c, size_t T, size_t B)
{
    memory_plan p = {.seq_len = T, .batch = B};
    p.run = whet_model_memory(c, 1, T, WHET_ACTS_REUSE);
    p.run_total = (double)p.run.weights + (double)p.run.activations + (double)p.run.kv_cache;
    whet_memory_estimate train = whet_model_memory(c, B, T, WHET_ACTS_KEEP);
    p.acts_kept = (double)train.activations_kept;
    p.acts_checkpointed = (double)train.activations_checkpointed;
    p.lora_params = lora_param_count(c, LORA_RANK);
    p.lora_weights = (double)train.weights;
    p.lora_state = 4.0 * 4.0 * (double)p.lora_params; /* parameters, gradients, 2 AdamW moments */
    p.lora_products = 4.0 * (double)(B * T * LORA_RANK * linears_per_layer(c) * c->layers);
    p.lora_kept = p.lora_weights + p.lora_state + p.lora_products + p.acts_kept;
    p.lora_checkpointed = p.lora_weights + p.lora_state + p.lora_products + p.acts_checkpointed;
    p.full_state = 4.0 * (double)train.weights; /* weights, gradients, 2 moments */
    p.full_kept = p.full_state + p.acts_kept;
    p.full_checkpointed = p.full_state + p.acts_checkpointed;
    return p;
}

/* "12.3 MiB", "1.50 GiB" */
static const char *human(double bytes, char *buf, size_t size)
{
    double mib = bytes / (1024.0 * 1024.0);
    if (mib >= 1024)
        snprintf(buf, size, "%.2f GiB", mib / 1024);
    else if (mib >= 10)
        snprintf(buf, size, "%.1f MiB", mib);
    else
        snprintf(buf, size, "%.3f MiB", mib);
    return buf;
}

static const char *count_human(double n, char *buf, size_t size)
{
    if (n >= 1e9)
        snprintf(buf, size, "%.2f B", n / 1e9);
    else if (n >= 1e6)
        snprintf(buf, size, "%.2f M", n / 1e6);
    else if (n >= 1e3)
        snprintf(buf, size, "%.2f K", n / 1e3);
    else
        snprintf(buf, size, "%.0f", n);
    return buf;
}

static const char *rope_scaling_name(whet_rope_scaling s)
{
    return s == WHET_ROPE_SCALING_LINEAR   ? "linear"
           : s == WHET_ROPE_SCALING_LLAMA3 ? "llama3"
           : s == WHET_ROPE_SCALING_FREQS  ? "rope_freqs" /* a GGUF's divisors; factor: the largest */
                                           : "none";
}

static void print_text(const char *path, const model_info *mi, const memory_plan *p)
{
    const whet_model_config *c = &mi->cfg;
    const whet_arch_info *info = c->info;
    char a[32], b[32], d[32], f[32];
    size_t params = whet_model_param_count(c);
    printf("model             %s (%s)\n", path, mi->format);
    printf("architecture      %s (%s)\n", info->name, mi->arch_source);
    printf("parameters        %s (%zu)\n", count_human((double)params, a, sizeof a), params);
    for (size_t i = 0; i < mi->n_dtypes; i++)
        printf("%-17s %s: %zu tensors, %s parameters, %s\n", i ? "" : "stored dtypes", mi->dtypes[i].name,
               mi->dtypes[i].tensors, count_human((double)mi->dtypes[i].elements, a, sizeof a),
               human((double)mi->dtypes[i].bytes, b, sizeof b));
    printf("layers            %zu\n", c->layers);
    printf("hidden size       %zu\n", c->hidden);
    printf("attention heads   %zu query, %zu key/value, head_dim %zu\n", c->heads, c->kv_heads, c->head_dim);
    printf("FFN width         %zu (%s)\n", c->ffn, info->act == WHET_ACT_SWIGLU ? "SwiGLU" : "GELU");
    printf("vocabulary        %zu tokens\n", c->vocab);
    printf("max positions     %zu tokens\n", c->max_positions);
    printf("norm              %s, eps %g\n", info->norm == WHET_NORM_RMS ? "RMSNorm" : "LayerNorm", (double)c->norm_eps);
    if (info->positions == WHET_POS_ROPE) {
        printf("rope theta        %g\n", c->rope_theta);
        if (c->rope_scaling == WHET_ROPE_SCALING_NONE)
            printf("rope scaling      none\n");
        else
            printf("rope scaling      %s, factor %g\n", rope_scaling_name(c->rope_scaling), c->rope_factor);
    } else {
        printf("positions         learned\n");
    }
    printf("tied embeddings   %s\n", c->tied ? "yes" : "no");
    printf("chat template     %s\n", mi->chat);
    printf("\nmemory, fp32 (T = %zu tokens; training: batch %zu)\n", p->seq_len, p->batch);
    printf("  inference       %s: weights %s, activations %s,\n", human(p->run_total, a, sizeof a),
           human((double)p->run.weights, b, sizeof b), human((double)p->run.activations, d, sizeof d));
    printf("                  KV cache %s\n", human((double)p->run.kv_cache, f, sizeof f));
    printf("  training        activations %s kept for the backward pass,\n", human(p->acts_kept, a, sizeof a));
    printf("                  %s with gradient checkpointing\n", human(p->acts_checkpointed, b, sizeof b));
    printf("  LoRA r=%-2d       %s (estimate; %s checkpointed):\n", LORA_RANK, human(p->lora_kept, a, sizeof a),
           human(p->lora_checkpointed, b, sizeof b));
    printf("                  frozen weights %s, training activations,\n", human(p->lora_weights, a, sizeof a));
    printf("                  adapters %s (%s parameters with gradients\n", human(p->lora_state, a, sizeof a),
           count_human((double)p->lora_params, b, sizeof b));
    printf("                  and 2 AdamW moments), their activations %s\n", human(p->lora_products, a, sizeof a));
    printf("  full fine-tune  %s (estimate; %s checkpointed):\n", human(p->full_kept, a, sizeof a),
           human(p->full_checkpointed, b, sizeof b));
    printf("                  training activations, and weights, gradients and\n");
    printf("                  2 AdamW moments %s\n", human(p->full_state, a, sizeof a));
}

static int print_json(const char *path, const model_info *mi, const memory_plan *p)
{
    const whet_model_config *c = &mi->cfg;
    whet_json_writer w;
    whet_json_writer_init(&w, 2);
    whet_json_begin_object(&w);
    whet_json_key(&w, "model");
    whet_json_write_string(&w, path);
    whet_json_key(&w, "format");
    whet_json_write_string(&w, mi->format);
    whet_json_key(&w, "architecture");
    whet_json_write_string(&w, c->info->name);
    whet_json_key(&w, "source_architecture");
    whet_json_write_string(&w, mi->arch_source);
    whet_json_key(&w, "parameters");
    whet_json_write_int(&w, (int64_t)whet_model_param_count(c));
    whet_json_key(&w, "dtypes");
    whet_json_begin_object(&w);
    for (size_t i = 0; i < mi->n_dtypes; i++) {
        whet_json_key(&w, mi->dtypes[i].name);
        whet_json_begin_object(&w);
        whet_json_key(&w, "tensors");
        whet_json_write_int(&w, (int64_t)mi->dtypes[i].tensors);
        whet_json_key(&w, "elements");
        whet_json_write_int(&w, (int64_t)mi->dtypes[i].elements);
        whet_json_key(&w, "bytes");
        whet_json_write_int(&w, (int64_t)mi->dtypes[i].bytes);
        whet_json_end_object(&w);
    }
    whet_json_end_object(&w);
    const struct { const char *k; size_t v; } sizes[] = {
        {"layers", c->layers}, {"hidden_size", c->hidden}, {"heads", c->heads}, {"kv_heads", c->kv_heads},
        {"head_dim", c->head_dim}, {"ffn", c->ffn}, {"vocab", c->vocab}, {"max_positions", c->max_positions}};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        whet_json_key(&w, sizes[i].k);
        whet_json_write_int(&w, (int64_t)sizes[i].v);
    }
    whet_json_key(&w, "norm");
    whet_json_write_string(&w, c->info->norm == WHET_NORM_RMS ? "rmsnorm" : "layernorm");
    whet_json_key(&w, "norm_eps");
    whet_json_write_float(&w, c->norm_eps);
    whet_json_key(&w, "positions");
    whet_json_write_string(&w, c->info->positions == WHET_POS_ROPE ? "rope" : "learned");
    if (c->info->positions == WHET_POS_ROPE) {
        whet_json_key(&w, "rope_theta");
        whet_json_write_double(&w, c->rope_theta);
        whet_json_key(&w, "rope_scaling");
        whet_json_write_string(&w, rope_scaling_name(c->rope_scaling));
        if (c->rope_scaling != WHET_ROPE_SCALING_NONE) {
            whet_json_key(&w, "rope_factor");
            whet_json_write_double(&w, c->rope_factor);
        }
    }
    whet_json_key(&w, "tied_embeddings");
    whet_json_write_bool(&w, c->tied);
    whet_json_key(&w, "chat_template");
    whet_json_write_string(&w, mi->chat);
    whet_json_key(&w, "memory");
    whet_json_begin_object(&w);
    whet_json_key(&w, "seq_len");
    whet_json_write_int(&w, (int64_t)p->seq_len);
    whet_json_key(&w, "batch_size");
    whet_json_write_int(&w, (int64_t)p->batch);
    whet_json_key(&w, "run_bytes");
    whet_json_write_int(&w, (int64_t)p->run_total);
    whet_json_key(&w, "run_weights_bytes");
    whet_json_write_int(&w, (int64_t)p->run.weights);
    whet_json_key(&w, "run_activations_bytes");
    whet_json_write_int(&w, (int64_t)p->run.activations);
    whet_json_key(&w, "run_kv_cache_bytes");
    whet_json_write_int(&w, (int64_t)p->run.kv_cache);
    const struct { const char *k; double v; } training[] = {
        {"train_activations_bytes", p->acts_kept},
        {"train_activations_checkpointed_bytes", p->acts_checkpointed},
        {"lora_rank", LORA_RANK},
        {"lora_parameters", (double)p->lora_params},
        {"lora_activations_bytes", p->lora_products},
        {"lora_bytes", p->lora_kept},
        {"lora_checkpointed_bytes", p->lora_checkpointed},
        {"full_bytes", p->full_kept},
        {"full_checkpointed_bytes", p->full_checkpointed}};
    for (size_t i = 0; i < sizeof training / sizeof *training; i++) {
        whet_json_key(&w, training[i].k);
        whet_json_write_int(&w, (int64_t)training[i].v);
    }
    whet_json_end_object(&w);
    whet_json_end_object(&w);
    return cli_print_json(&w, "info output");
}

int cmd_info(int argc, char **argv)
{
    size_t seq_len = 0, batch = 1;
    int json = 0;
    enum { OPT_SEQ_LEN = 256, OPT_BATCH, OPT_JSON };
    static const struct option options[] = {{"seq-len", required_argument, NULL, OPT_SEQ_LEN},
                                            {"batch-size", required_argument, NULL, OPT_BATCH},
                                            {"json", no_argument, NULL, OPT_JSON},
                                            CLI_COMMON_OPTIONS};
    cli_parser p = {.command = "info", .usage = usage};
    int opt;
    while ((opt = cli_next_option(&p, argc, argv, "", options)) != -1) {
        int bad = 0;
        switch (opt) {
        case OPT_SEQ_LEN: bad = cli_parse_size("info", "--seq-len", optarg, 1, (size_t)1 << 24, &seq_len); break;
        case OPT_BATCH: bad = cli_parse_size("info", "--batch-size", optarg, 1, 1 << 16, &batch); break;
        case OPT_JSON: json = 1; break;
        }
        if (bad)
            return WHET_EXIT_ERROR;
    }
    if (p.exit >= 0)
        return p.exit;
    if (optind >= argc) {
        whet_error("info: expected a MODEL (an HF model directory or a GGUF file)");
        return WHET_EXIT_ERROR;
    }
    if (optind + 1 < argc) {
        whet_error("info: unexpected argument '%s'", argv[optind + 1]);
        return WHET_EXIT_ERROR;
    }
    const char *path = argv[optind];
    model_info mi;
    memset(&mi, 0, sizeof mi);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && !whet_is_gguf_file(path)) {
        whet_error("%s: expected an HF model directory or a GGUF file, found a file without the GGUF magic", path);
        return WHET_EXIT_ERROR;
    }
    if ((whet_is_gguf_file(path) ? info_from_gguf(path, &mi) : info_from_dir(path, &mi)) != 0)
        return WHET_EXIT_ERROR;
    if (!seq_len)
        seq_len = mi.cfg.max_positions < DEFAULT_SEQ_LEN ? mi.cfg.max_positions : DEFAULT_SEQ_LEN;
    memory_plan plan = plan_memory(&mi.cfg, seq_len, batch);
    if (json)
        return print_json(path, &mi, &plan) == 0 ? WHET_EXIT_OK : WHET_EXIT_ERROR;
    print_text(path, &mi, &plan);
    return WHET_EXIT_OK;
}
