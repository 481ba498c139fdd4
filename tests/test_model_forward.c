/* The model layer against PyTorch goldens (tests/ref/make_goldens.py):
 * Llama (untied, fp32), Llama with llama3 rope_scaling (tied, F16 weights),
 * Mistral (explicit head_dim, BF16 weights), Qwen2 (q/k/v biases, sharded),
 * Qwen3 (per-head q/k norm, explicit head_dim, linear rope_scaling) and GPT-2
 * (Conv1D, learned positions, LayerNorm, gelu_new, attn.bias buffers).
 *
 * Tolerances (fp32 against PyTorch fp32):
 *   logits: max|whet − ref| / max|ref| ≤ 1e-4 over all B·T·V logits;
 *   mean NLL: |whet − ref| / ref ≤ 1e-5;
 *   per-token log-probs: within 1e-4·(1 + |ref|) of a double log-softmax of
 *   the golden logits.
 * On every ISA table this build and CPU run, with 1, 2 and 3 threads, whose
 * logits must be bit-identical (one thread only under an emulator, where
 * EMULATOR is set); keeping every layer's activations must not
 * change a bit. KV cache: a prefill plus one-token steps gives the full
 * forward's logits (1e-5 relative). Config and weight errors: exact messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/model.h"
#include "support/kernel_check.h"
#include "util/compute.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DATA_DIR "tests/data/models"

static const char *const golden_models[] = {"llama", "llama3_rope", "mistral", "qwen2", "qwen3", "gpt2"};
#define N_MODELS (sizeof golden_models / sizeof *golden_models)

typedef struct golden {
    size_t B, T, V;
    int32_t *tokens; /* [B·T] */
    float *logits;   /* [B·T·V] */
    double nll;
} golden;

static void load_golden(const char *name, golden *g)
{
    char path[256];
    snprintf(path, sizeof path, DATA_DIR "/%s/golden.safetensors", name);
    whet_safetensors *st;
    whet_err e;
    if (whet_st_open(&st, path, &e))
        fail_msg("%s", e.msg);
    const whet_st_tensor *tok = whet_st_find(st, "tokens"), *lg = whet_st_find(st, "logits"),
                         *nll = whet_st_find(st, "nll");
    assert_non_null(tok);
    assert_non_null(lg);
    assert_non_null(nll);
    assert_int_equal(tok->dtype, WHET_ST_I32);
    assert_int_equal(tok->rank, 2);
    assert_int_equal(nll->dtype, WHET_ST_F64);
    g->B = (size_t)tok->shape[0], g->T = (size_t)tok->shape[1], g->V = (size_t)lg->shape[2];
    g->tokens = malloc(tok->nbytes);
    memcpy(g->tokens, tok->data, tok->nbytes);
    g->logits = malloc(lg->numel * sizeof(float));
    if (whet_st_load_f32(lg, g->logits, NULL, &e))
        fail_msg("%s", e.msg);
    memcpy(&g->nll, nll->data, sizeof g->nll);
    whet_st_close(st);
}

static void free_golden(golden *g)
{
    free(g->tokens);
    free(g->logits);
}

static whet_model *load_model(const char *name, whet_compute *c)
{
    char dir[256];
    snprintf(dir, sizeof dir, DATA_DIR "/%s", name);
    whet_model *m;
    whet_err e;
    if (whet_model_load(&m, dir, c, &e))
        fail_msg("%s", e.msg);
    return m;
}

/* labels = input ids shifted: row (b, t) predicts token t + 1; the last row of each sequence nothing */
static int32_t *shifted_targets(const golden *g)
{
    int32_t *t = malloc(g->B * g->T * sizeof *t);
    for (size_t b = 0; b < g->B; b++)
        for (size_t i = 0; i < g->T; i++)
            t[b * g->T + i] = i + 1 < g->T ? g->tokens[b * g->T + i + 1] : -1;
    return t;
}

static double max_rel_error(const float *got, const float *ref, size_t n)
{
    double max_ref = 0, max_diff = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= max_diff))
            max_diff = d;
        if (fabs(ref[i]) > max_ref)
            max_ref = fabs(ref[i]);
    }
    return max_diff / max_ref;
}

/* Forward + logits + NLL for one model on one table and thread count. */
static void run_golden(const char *name, const golden *g, const whet_kernels *k, int threads, int keep,
                       float *logits_out, double *logit_err, double *nll_err)
{
    whet_compute *c = whet_compute_create(k, threads);
    assert_non_null(c);
    whet_model *m = load_model(name, c);
    whet_err e;
    whet_acts *a = whet_acts_create(m, g->B, g->T, keep, &e);
    assert_non_null(a);
    if (whet_model_forward(m, a, g->tokens, g->B, g->T, &e))
        fail_msg("%s", e.msg);
    size_t BT = g->B * g->T;
    if (whet_model_logits(m, a, NULL, BT, logits_out, &e))
        fail_msg("%s", e.msg);
    *logit_err = max_rel_error(logits_out, g->logits, BT * g->V);

    int32_t *targets = shifted_targets(g);
    float *logprobs = malloc(BT * sizeof *logprobs);
    double nll;
    if (whet_model_nll(m, a, targets, logprobs, &nll, &e))
        fail_msg("%s", e.msg);
    *nll_err = fabs(nll - g->nll) / g->nll;
    /* per-token log-probs against a double log-softmax of the golden logits */
    for (size_t r = 0; r < BT; r++) {
        if (targets[r] < 0) {
            assert_true(logprobs[r] == 0.0f);
            continue;
        }
        const float *lr = g->logits + r * g->V;
        double max = -INFINITY, sum = 0;
        for (size_t v = 0; v < g->V; v++)
            max = lr[v] > max ? lr[v] : max;
        for (size_t v = 0; v < g->V; v++)
            sum += exp(lr[v] - max);
        double ref = lr[targets[r]] - max - log(sum);
        if (!(fabs(logprobs[r] - ref) <= 1e-4 * (1 + fabs(ref))))
            fail_msg("%s/%s: row %zu log p = %.7g, expected %.7g", name, k->name, r, logprobs[r], ref);
        assert_true(fabs(a->lse[r] - (max + log(sum))) <= 1e-4 * (1 + fabs(max + log(sum))));
    }
    free(targets);
    free(logprobs);
    whet_acts_free(a);
    whet_model_free(m);
    whet_compute_destroy(c);
}

/* Under an emulator (check-aarch64 sets EMULATOR for tests/run.sh) a pool of
 * spinning threads crawls: the thread-count checks run natively only. */
static int max_threads(void)
{
    const char *emulator = getenv("EMULATOR");
    if (emulator && *emulator) {
        print_message("EMULATOR is set: one thread only (thread counts are checked natively)\n");
        return 1;
    }
    return 3;
}

static void matches_pytorch_goldens(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int nt = kc_tables(tables);
    int top_threads = max_threads();
    for (size_t mi = 0; mi < N_MODELS; mi++) {
        golden g;
        load_golden(golden_models[mi], &g);
        size_t n = g.B * g.T * g.V;
        float *one = malloc(n * sizeof *one), *other = malloc(n * sizeof *other);
        double worst_logit = 0, worst_nll = 0;
        for (int t = 0; t < nt; t++) {
            double le, ne;
            run_golden(golden_models[mi], &g, tables[t], 1, 0, one, &le, &ne);
            if (!(le <= 1e-4) || !(ne <= 1e-5))
                fail_msg("%s on %s: logits max|Δ|/max|ref| = %.3g (limit 1e-4), NLL relative error %.3g (limit 1e-5)",
                         golden_models[mi], tables[t]->name, le, ne);
            worst_logit = le > worst_logit ? le : worst_logit;
            worst_nll = ne > worst_nll ? ne : worst_nll;
            /* every layer kept (1 and 3 threads), 2 threads: the same bits */
            for (int threads = 1; threads <= top_threads; threads++) {
                int keep = threads != 2;
                run_golden(golden_models[mi], &g, tables[t], threads, keep, other, &le, &ne);
                if (memcmp(one, other, n * sizeof *one) != 0)
                    fail_msg("%s on %s: %d threads (keep_layers %d) changed the logits", golden_models[mi],
                             tables[t]->name, threads, keep);
            }
        }
        print_message("%-12s B=%zu T=%-3zu max logit error %.2e, NLL error %.2e (worst over %d tables)\n",
                      golden_models[mi], g.B, g.T, worst_logit, worst_nll, nt);
        free(one);
        free(other);
        free_golden(&g);
    }
}

/* A prefill of the first half (its attention in parts of 3 query rows), then
 * one token at a time, through a KV cache: the logits of every step equal the
 * full forward's at that position. One
 * thread, and two for Llama (B = 2, GQA): each step is dozens of short pool
 * jobs, slow under an emulator. */
static void kv_cache_decode_matches_full_forward(void **state)
{
    (void)state;
    whet_compute *c1 = whet_compute_create(whet_kernels_best(), 1);
    whet_compute *c2 = whet_compute_create(whet_kernels_best(), max_threads() > 1 ? 2 : 1);
    assert_non_null(c1);
    assert_non_null(c2);
    whet_err e;
    for (size_t mi = 0; mi < N_MODELS; mi++) {
        golden g;
        load_golden(golden_models[mi], &g);
        whet_model *m = load_model(golden_models[mi], mi == 0 ? c2 : c1);
        size_t B = g.B, T = g.T, V = g.V, P = T / 2;
        whet_acts *full = whet_acts_create(m, B, T, 0, &e);
        assert_non_null(full);
        float *ref = malloc(B * T * V * sizeof *ref);
        assert_int_equal(whet_model_forward(m, full, g.tokens, B, T, &e), 0);
        assert_int_equal(whet_model_logits(m, full, NULL, B * T, ref, &e), 0);

        whet_kv_cache *kv = whet_kv_cache_create(m, B, T, &e);
        whet_acts *a = whet_acts_create_parts(m, B, P, 0, 3, &e); /* the prefill's queries 3 rows per part */
        assert_non_null(kv);
        assert_non_null(a);
        int32_t *step = malloc(B * P * sizeof *step);
        float *got = malloc(B * V * sizeof *got), *want = malloc(B * V * sizeof *want);
        for (size_t b = 0; b < B; b++)
            memcpy(step + b * P, g.tokens + b * T, P * sizeof *step);
        if (whet_model_decode(m, kv, a, step, B, P, got, &e))
            fail_msg("%s", e.msg);
        size_t pos = P - 1;
        double worst = 0;
        for (;;) {
            for (size_t b = 0; b < B; b++)
                memcpy(want + b * V, ref + (b * T + pos) * V, V * sizeof *want);
            double err = max_rel_error(got, want, B * V);
            worst = err > worst ? err : worst;
            if (!(err <= 1e-5))
                fail_msg("%s: KV-cache logits at position %zu differ from the full forward by %.3g", golden_models[mi],
                         pos, err);
            if (++pos == T)
                break;
            for (size_t b = 0; b < B; b++)
                step[b] = g.tokens[b * T + pos];
            if (whet_model_decode(m, kv, a, step, B, 1, got, &e))
                fail_msg("%s", e.msg);
        }
        assert_int_equal(kv->len, T);
        /* full: one more token overflows the cache */
        assert_int_equal(whet_model_decode(m, kv, a, step, B, 1, got, &e), -1);
        assert_non_null(strstr(e.msg, "overflow the KV cache"));
        print_message("%-12s KV-cache decode max error %.2e\n", golden_models[mi], worst);
        free(step), free(got), free(want), free(ref);
        whet_kv_cache_free(kv);
        whet_acts_free(a);
        whet_acts_free(full);
        whet_model_free(m);
        free_golden(&g);
    }
    whet_compute_destroy(c1);
    whet_compute_destroy(c2);
}

/* The parameter count is the checkpoint's tensor elements (less GPT-2's
 * attn.bias mask buffers); the activation estimate is what whet_acts takes. */
static void memory_estimate_matches(void **state)
{
    (void)state;
    whet_compute *c = whet_compute_create(whet_kernels_best(), 1);
    whet_err e;
    for (size_t mi = 0; mi < N_MODELS; mi++) {
        whet_model *m = load_model(golden_models[mi], c);
        char dir[256];
        snprintf(dir, sizeof dir, DATA_DIR "/%s", golden_models[mi]);
        whet_safetensors *st;
        assert_int_equal(whet_st_open_dir(&st, dir, &e), 0);
        size_t elements = 0;
        for (size_t i = 0; i < whet_st_count(st); i++) {
            const whet_st_tensor *t = whet_st_tensor_at(st, i);
            size_t len = strlen(t->name);
            if (len < 10 || strcmp(t->name + len - 10, ".attn.bias") != 0)
                elements += (size_t)t->numel;
        }
        whet_st_close(st);
        assert_int_equal(m->num_params, elements);
        whet_memory_estimate est = whet_model_memory(&m->cfg, 3, 7, 1);
        assert_int_equal(est.weights, elements * sizeof(float));
        whet_acts *a = whet_acts_create(m, 3, 7, 1, &e);
        assert_int_equal(est.activations, a->floats * sizeof(float));
        whet_acts_free(a);
        assert_int_equal(est.kv_cache,
                         2 * m->cfg.layers * 3 * 7 * m->cfg.kv_heads * m->cfg.head_dim * sizeof(float));
        /* one reused layer slot takes less than every layer kept */
        assert_true(whet_model_memory(&m->cfg, 3, 7, 0).activations < est.activations);
        whet_model_free(m);
    }
    whet_compute_destroy(c);
    /* attention's parts: 512 rows up to T = 2048, then the fewest multiple of 512 rows that keeps to 4 parts */
    const size_t lengths[] = {1, 511, 512, 513, 2048, 2049, 3000, 4096, 8192, 100000};
    for (size_t i = 0; i < sizeof lengths / sizeof *lengths; i++) {
        size_t T = lengths[i], rows = whet_attn_part_rows(T);
        assert_int_equal(rows % WHET_ATTN_PART_ROWS, 0);
        assert_true((T + rows - 1) / rows <= WHET_ATTN_MAX_PARTS);
        if (T <= WHET_ATTN_PART_ROWS * WHET_ATTN_MAX_PARTS)
            assert_int_equal(rows, WHET_ATTN_PART_ROWS);
        else
            assert_true((T + rows - WHET_ATTN_PART_ROWS - 1) / (rows - WHET_ATTN_PART_ROWS) > WHET_ATTN_MAX_PARTS);
    }
}

/* ---- config.json errors ---- */

static void expect_config_error(const char *json, const char *message)
{
    whet_model_config cfg;
    whet_err e = {{0}};
    assert_int_equal(whet_config_parse(&cfg, json, strlen(json), "x/config.json", &e), -1);
    if (strcmp(e.msg, message) != 0)
        fail_msg("got      \"%s\"\nexpected \"%s\"", e.msg, message);
}

#define LLAMA_KEYS "\"hidden_size\": 32, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, " \
                   "\"intermediate_size\": 64, \"vocab_size\": 300"

static void config_errors_name_file_and_key(void **state)
{
    (void)state;
    expect_config_error("{\"architectures\": [\"FalconForCausalLM\"]}",
                        "x/config.json: line 1, column 20 (byte 19): expected \"architectures\" to name one model class "
                        "whet supports (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, "
                        "GPT2LMHeadModel), found the string \"FalconForCausalLM\"");
    expect_config_error("{\"hidden_size\": 32}",
                        "x/config.json: line 1, column 1 (byte 0): expected key \"architectures\" in this object, "
                        "found none");
    expect_config_error("{\"architectures\": [\"LlamaForCausalLM\"], \"num_hidden_layers\": 2}",
                        "x/config.json: line 1, column 1 (byte 0): expected key \"vocab_size\" in this object, "
                        "found none");
    expect_config_error("{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_KEYS
                        ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}}",
                        "x/config.json: line 1, column 184 (byte 183): expected \"rope_type\" to be a RoPE scaling "
                        "whet supports: \"default\", \"linear\" or \"llama3\", found the string \"yarn\"");
    expect_config_error("{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_KEYS
                        ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0}}",
                        "x/config.json: line 1, column 170 (byte 169): expected key \"low_freq_factor\" in this "
                        "object, found none");
    expect_config_error("{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_KEYS ", \"hidden_act\": \"gelu\"}",
                        "x/config.json: line 1, column 168 (byte 167): expected \"hidden_act\" to be \"silu\" (the only "
                        "activation whet supports for this class), found the string \"gelu\"");
    expect_config_error("{\"architectures\": [\"Qwen2ForCausalLM\"], " LLAMA_KEYS ", \"use_sliding_window\": true}",
                        "x/config.json: line 1, column 176 (byte 175): expected \"use_sliding_window\" to be false "
                        "(whet supports full causal attention only), found true");
    expect_config_error("{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_KEYS ", \"num_key_value_heads\": 3}",
                        "x/config.json: line 1, column 177 (byte 176): expected \"num_key_value_heads\" to divide "
                        "\"num_attention_heads\" (4), found the number 3");
    expect_config_error("{\"architectures\": [\"GPT2LMHeadModel\"], \"vocab_size\": 10, \"n_embd\": 8, \"n_layer\": 1, "
                        "\"n_head\": 2, \"n_positions\": 4, \"activation_function\": \"relu\"}",
                        "x/config.json: line 1, column 139 (byte 138): expected \"activation_function\" to be "
                        "\"gelu_new\" or \"gelu_pytorch_tanh\" (the activations whet supports for GPT-2), found the "
                        "string \"relu\"");
    expect_config_error("[1]", "x/config.json: line 1, column 1 (byte 0): expected a JSON object (a model's "
                               "config.json), found an array of 1 item");
}

/* What the parser takes from a good config: defaults, v5 rope_parameters, eos lists. */
static void config_values(void **state)
{
    (void)state;
    whet_model_config cfg;
    whet_err e;
    const char *json = "{\"architectures\": [\"LlamaForCausalLM\"], " LLAMA_KEYS
                       ", \"head_dim\": null, \"eos_token_id\": [7, 9], \"rope_parameters\": {\"rope_type\": "
                       "\"linear\", \"factor\": 2.0, \"rope_theta\": 50000.0}}";
    if (whet_config_parse(&cfg, json, strlen(json), "c.json", &e))
        fail_msg("%s", e.msg);
    assert_int_equal(cfg.info->arch, WHET_ARCH_LLAMA);
    assert_int_equal(cfg.head_dim, 8);
    assert_int_equal(cfg.kv_heads, 4);
    assert_int_equal(cfg.max_positions, 2048);
    assert_true(cfg.norm_eps == 1e-6f);
    assert_true(cfg.rope_theta == 50000.0);
    assert_int_equal(cfg.rope_scaling, WHET_ROPE_SCALING_LINEAR);
    assert_int_equal(cfg.n_eos, 2);
    assert_int_equal(cfg.eos_token_ids[1], 9);
    assert_int_equal(cfg.tied, 0);
    assert_int_equal(cfg.qkv_bias, 0);
    /* linear scaling divides every inverse frequency by the factor */
    float inv[4];
    whet_rope_inv_freq(&cfg, inv);
    for (int i = 0; i < 4; i++)
        assert_true(fabs(inv[i] - 1.0 / pow(50000.0, 2.0 * i / 8) / 2.0) <= 1e-6 * inv[i] + 1e-12);
}

/* ---- weight errors ---- */

static char tmp_dir[64];

static void make_dir_with_config(const char *model, const char *from, const char *to)
{
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/whet-model-XXXXXX");
    assert_non_null(mkdtemp(tmp_dir));
    char src[1024], dst[1024];
    snprintf(src, sizeof src, DATA_DIR "/%s/config.json", model);
    FILE *f = fopen(src, "rb");
    assert_non_null(f);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char *hit = strstr(text, from);
    assert_non_null(hit);
    char out[8192];
    snprintf(out, sizeof out, "%.*s%s%s", (int)(hit - text), text, to, hit + strlen(from));
    snprintf(dst, sizeof dst, "%s/config.json", tmp_dir);
    f = fopen(dst, "wb");
    fputs(out, f);
    fclose(f);
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(src, sizeof src, "%s/" DATA_DIR "/%s/model.safetensors", cwd, model);
    snprintf(dst, sizeof dst, "%s/model.safetensors", tmp_dir);
    assert_int_equal(symlink(src, dst), 0);
}

static void remove_dir(void)
{
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", tmp_dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", tmp_dir);
    unlink(p);
    rmdir(tmp_dir);
}

static void expect_load_error(const char *model, const char *from, const char *to, const char *message_fmt)
{
    make_dir_with_config(model, from, to);
    whet_compute *c = whet_compute_create(whet_kernels_for(WHET_ISA_SCALAR), 1);
    whet_model *m;
    whet_err e = {{0}};
    assert_int_equal(whet_model_load(&m, tmp_dir, c, &e), -1);
    char expected[1024];
    snprintf(expected, sizeof expected, message_fmt, tmp_dir);
    if (strcmp(e.msg, expected) != 0)
        fail_msg("got      \"%s\"\nexpected \"%s\"", e.msg, expected);
    whet_compute_destroy(c);
    remove_dir();
}

static void weight_errors_name_tensor_and_file(void **state)
{
    (void)state;
    expect_load_error("llama", "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3",
                      "%s/model.safetensors: tensor \"model.layers.2.input_layernorm.weight\" not found, expected for "
                      "LlamaForCausalLM (3 layers, untied lm_head)");
    expect_load_error("llama", "\"intermediate_size\": 64", "\"intermediate_size\": 48",
                      "%s/model.safetensors: tensor \"model.layers.0.mlp.gate_proj.weight\" has shape [64, 32], "
                      "expected [48, 32] from config.json");
    expect_load_error("llama", "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1",
                      "%s/model.safetensors: unexpected tensor \"model.layers.1.input_layernorm.weight\" for "
                      "LlamaForCausalLM as config.json describes it (1 layers)");
    expect_load_error("mistral", "\"head_dim\": 16", "\"head_dim\": 8",
                      "%s/model.safetensors: tensor \"model.layers.0.self_attn.q_proj.weight\" has shape [64, 32], "
                      "expected [32, 32] from config.json");
    /* GPT-2's Conv1D weights are [in, out] in the file */
    expect_load_error("gpt2", "\"n_inner\": null", "\"n_inner\": 64",
                      "%s/model.safetensors: tensor \"h.0.mlp.c_fc.weight\" has shape [32, 128], expected [32, 64] "
                      "from config.json");
}

/* Mistral's sliding window: full causal attention equals it within the
 * window; a longer sequence is refused, not silently computed differently. */
static void sliding_window_is_enforced(void **state)
{
    (void)state;
    make_dir_with_config("mistral", "\"sliding_window\": 4096", "\"sliding_window\": 8");
    whet_compute *c = whet_compute_create(whet_kernels_best(), 1);
    whet_model *m;
    whet_err e;
    if (whet_model_load(&m, tmp_dir, c, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(m->cfg.sliding_window, 8);
    whet_acts *a = whet_acts_create(m, 1, 9, 0, &e);
    int32_t tokens[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    assert_int_equal(whet_model_forward(m, a, tokens, 1, 8, &e), 0);
    assert_int_equal(whet_model_forward(m, a, tokens, 1, 9, &e), -1);
    char expected[1024];
    snprintf(expected, sizeof expected,
             "%s: 9 tokens exceed the sliding_window of 8 in config.json; whet computes full causal attention only, "
             "which equals sliding-window attention within the window",
             tmp_dir);
    assert_string_equal(e.msg, expected);
    whet_acts_free(a);
    whet_model_free(m);
    whet_compute_destroy(c);
    remove_dir();
}

/* GPT-2 checkpoints saved from GPT2LMHeadModel name every tensor
 * "transformer.<name>": the same weights load to the same bits. */
static void gpt2_transformer_prefix_loads(void **state)
{
    (void)state;
    make_dir_with_config("gpt2", "\"n_layer\": 2", "\"n_layer\": 2");
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", tmp_dir);
    unlink(path); /* the symlink: replaced by a renamed copy */
    whet_safetensors *st;
    whet_err e;
    assert_int_equal(whet_st_open(&st, DATA_DIR "/gpt2/model.safetensors", &e), 0);
    size_t n = whet_st_count(st);
    whet_st_entry *entries = calloc(n, sizeof *entries);
    char **names = calloc(n, sizeof *names);
    for (size_t i = 0; i < n; i++) {
        const whet_st_tensor *t = whet_st_tensor_at(st, i);
        names[i] = malloc(strlen(t->name) + 16);
        sprintf(names[i], "transformer.%s", t->name);
        entries[i] = (whet_st_entry){names[i], t->dtype, t->rank, t->shape, t->data};
    }
    if (whet_st_write(path, entries, n, NULL, 0, &e))
        fail_msg("%s", e.msg);
    whet_st_close(st);

    golden g;
    load_golden("gpt2", &g);
    whet_compute *c = whet_compute_create(whet_kernels_best(), 1);
    float *logits[2];
    for (int variant = 0; variant < 2; variant++) {
        whet_model *m;
        char dir[256];
        snprintf(dir, sizeof dir, "%s", variant ? tmp_dir : DATA_DIR "/gpt2");
        if (whet_model_load(&m, dir, c, &e))
            fail_msg("%s", e.msg);
        whet_acts *a = whet_acts_create(m, g.B, g.T, 0, &e);
        logits[variant] = malloc(g.B * g.T * g.V * sizeof(float));
        assert_int_equal(whet_model_forward(m, a, g.tokens, g.B, g.T, &e), 0);
        assert_int_equal(whet_model_logits(m, a, NULL, g.B * g.T, logits[variant], &e), 0);
        whet_acts_free(a);
        whet_model_free(m);
    }
    assert_memory_equal(logits[0], logits[1], g.B * g.T * g.V * sizeof(float));
    free(logits[0]), free(logits[1]);
    free_golden(&g);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names), free(entries);
    whet_compute_destroy(c);
    remove_dir();
}

/* Token ids outside the vocabulary and sequences past the positions are refused. */
static void forward_refuses_bad_input(void **state)
{
    (void)state;
    whet_compute *c = whet_compute_create(whet_kernels_best(), 1);
    whet_model *m = load_model("gpt2", c);
    whet_err e;
    whet_acts *a = whet_acts_create(m, 1, 65, 0, &e);
    int32_t tokens[65] = {0};
    tokens[3] = 300;
    assert_int_equal(whet_model_forward(m, a, tokens, 1, 4, &e), -1);
    assert_string_equal(e.msg, DATA_DIR "/gpt2: token id 300 (sequence 0, position 3) is outside the vocabulary of 300");
    tokens[3] = 0;
    assert_int_equal(whet_model_forward(m, a, tokens, 1, 65, &e), -1);
    assert_string_equal(e.msg, DATA_DIR "/gpt2: position 64 is past the model's 64 positions "
                                        "(max_position_embeddings / n_positions in config.json)");
    assert_int_equal(whet_model_forward(m, a, tokens, 2, 4, &e), -1);
    assert_string_equal(e.msg, DATA_DIR "/gpt2: a batch of 2 × 4 tokens does not fit activations made for 1 × 65");
    whet_acts_free(a);
    whet_model_free(m);
    whet_compute_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matches_pytorch_goldens),
        cmocka_unit_test(kv_cache_decode_matches_full_forward),
        cmocka_unit_test(memory_estimate_matches),
        cmocka_unit_test(config_errors_name_file_and_key),
        cmocka_unit_test(config_values),
        cmocka_unit_test(weight_errors_name_tensor_and_file),
        cmocka_unit_test(sliding_window_is_enforced),
        cmocka_unit_test(gpt2_transformer_prefix_loads),
        cmocka_unit_test(forward_refuses_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
