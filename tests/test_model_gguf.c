/* Models from GGUF files against the same weights from the HF directory.
 *
 * Every golden model (tests/data/models: llama, llama3_rope, mistral, qwen2,
 * qwen3, gpt2) is converted by tests/support/gguf_convert.c exactly as
 * convert_hf_to_gguf.py lays it out (llama Q/K permuted, GPT-2's Conv1D
 * transposed, Mistral as llama, tied models without output.weight, Llama 3
 * scaling as rope_freqs.weight), then loaded with whet_model_load:
 *
 *   F32: the parameters must be bit-identical to the HF directory's (the
 *        loader un-permutes Q/K back to HF order), and so must the logits,
 *        except llama3_rope, whose RoPE frequencies come from rope_freqs.weight
 *        divisors (HF's base frequency / divisor may round differently from
 *        HF's own blend by an ulp): max|Δ|/max|ref| ≤ 1e-6 there. Measured:
 *        every model bit-identical, llama3_rope included.
 *   Limits for rounded weights (2-D weights only; norms and biases stay F32),
 *   as max|Δ logit| / max|HF logit| against the fp32 HF model, from the
 *   per-weight rounding step relative to the weights' scale σ:
 *     F16:  relative rounding ≤ 2^-11 per weight; the error of two layers and
 *           the head stays within a few of that: limit 8·2^-11 ≈ 3.9e-3
 *           (measured ≤ 1.2e-3).
 *     BF16: 2^-8, 8× F16's step: limit 8·2^-8 ≈ 3.1e-2 (measured ≤ 9.7e-3).
 *     Q8_0: step d = amax/127 per 32-weight block, amax ≈ 3σ: ≈ 2.4e-2·σ,
 *           ~24× F16's step (2^-11·|w| ≲ 1e-3·σ): limit 24·3.9e-3 ≈ 1e-1
 *           (measured ≤ 3.1e-2).
 *     Q4_0: d = amax/8, 16× Q8_0's step, which makes a logits bound
 *           meaningless (limit 1.0, measured ≤ 0.56): this checks the 4-bit
 *           path is wired, through the NLL (limit 5%, measured ≤ 1.4%).
 *   The mean NLL of the golden tokens against PyTorch's: F32 1e-5 (as
 *   test_model_forward), F16 5e-4, BF16 5e-3, Q8_0 1e-2 (measured 4.3e-5,
 *   4.2e-4, 1.4e-3).
 * The mean NLL over the golden tokens is checked against PyTorch's too.
 *
 * whet_config_from_gguf equals whet_config_load's config (Mistral becomes
 * llama without its sliding window; Llama 3 scaling becomes divisors).
 * Errors on valid-but-inconsistent files (each naming the file and the key or
 * tensor): unknown architecture, missing key, missing tensor, wrong shape,
 * unsupported tensor type, unexpected tensor, more blocks than tensors, an
 * embedding length far beyond the tensors, head_count_kv not dividing.
 *
 * Also a converter for tests/cli/gguf.sh:
 *   test_model_gguf convert DIR F32|F16|Q8_0 OUT.gguf */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/model.h"
#include "support/gguf_convert.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DATA_DIR "tests/data/models"

static const char *const golden_models[] = {"llama", "llama3_rope", "mistral", "qwen2", "qwen3", "gpt2"};
#define N_MODELS (sizeof golden_models / sizeof *golden_models)

static char tmp_dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/whet_gguf_XXXXXX");
    return mkdtemp(tmp_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    return system(cmd) == 0 ? 0 : -1;
}

typedef struct golden {
    size_t B, T, V;
    int32_t *tokens;
    float *logits;
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
    g->B = (size_t)tok->shape[0], g->T = (size_t)tok->shape[1], g->V = (size_t)lg->shape[2];
    g->tokens = malloc(tok->nbytes);
    memcpy(g->tokens, tok->data, tok->nbytes);
    g->logits = malloc(lg->numel * sizeof(float));
    if (whet_st_load_f32(lg, g->logits, NULL, &e))
        fail_msg("%s", e.msg);
    memcpy(&g->nll, nll->data, sizeof g->nll);
    whet_st_close(st);
}

static whet_model *load(const char *path, whet_compute *c)
{
    whet_model *m;
    whet_err e;
    if (whet_model_load(&m, path, c, &e))
        fail_msg("%s", e.msg);
    return m;
}

/* logits [B·T·V] and the mean NLL of the shifted golden tokens */
static void run(whet_model *m, const golden *g, float *logits, double *nll)
{
    whet_err e;
    whet_acts *a = whet_acts_create(m, g->B, g->T, 0, &e);
    assert_non_null(a);
    if (whet_model_forward(m, a, g->tokens, g->B, g->T, &e) || whet_model_logits(m, a, NULL, g->B * g->T, logits, &e))
        fail_msg("%s", e.msg);
    int32_t *targets = malloc(g->B * g->T * sizeof *targets);
    for (size_t b = 0; b < g->B; b++)
        for (size_t t = 0; t < g->T; t++)
            targets[b * g->T + t] = t + 1 < g->T ? g->tokens[b * g->T + t + 1] : -1;
    if (whet_model_nll(m, a, targets, NULL, nll, &e))
        fail_msg("%s", e.msg);
    free(targets);
    whet_acts_free(a);
}

static double max_rel(const float *got, const float *ref, size_t n, double *max_abs)
{
    double mr = 0, md = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= md))
            md = d;
        mr = fabs(ref[i]) > mr ? fabs(ref[i]) : mr;
    }
    *max_abs = md;
    return md / mr;
}

static void gguf_path(char *buf, size_t cap, const char *model, const char *type)
{
    snprintf(buf, cap, "%s/%s-%s.gguf", tmp_dir, model, type);
}

static void convert(const char *model, uint32_t type, const char *path)
{
    char dir[256];
    snprintf(dir, sizeof dir, DATA_DIR "/%s", model);
    whet_err e;
    if (gguf_convert_hf_file(dir, type, path, &e))
        fail_msg("converting %s: %s", model, e.msg);
}

typedef struct type_case {
    uint32_t type;
    const char *name;
    double limit;     /* max|Δ logits| / max|HF logits| */
    double nll_limit; /* |NLL − golden| / golden */
} type_case;

static const type_case types[] = {
    {WHET_GGML_F32, "F32", 1e-6, 1e-5},
    {WHET_GGML_F16, "F16", 8.0 / 2048, 5e-4},
    {WHET_GGML_BF16, "BF16", 8.0 / 256, 5e-3},
    {WHET_GGML_Q8_0, "Q8_0", 1e-1, 1e-2},
    {WHET_GGML_Q4_0, "Q4_0", 1.0, 5e-2},
};

static void logits_match_hf(void **state)
{
    (void)state;
    whet_compute *c = whet_compute_create(whet_kernels_best(), 1);
    assert_non_null(c);
    for (size_t mi = 0; mi < N_MODELS; mi++) {
        const char *name = golden_models[mi];
        golden g;
        load_golden(name, &g);
        size_t n = g.B * g.T * g.V;
        float *ref = malloc(n * sizeof *ref), *got = malloc(n * sizeof *got);
        char dir[256];
        snprintf(dir, sizeof dir, DATA_DIR "/%s", name);
        whet_model *hf = load(dir, c);
        double hf_nll;
        run(hf, &g, ref, &hf_nll);
        for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
            char path[256];
            gguf_path(path, sizeof path, name, types[ti].name);
            convert(name, types[ti].type, path);
            whet_model *m = load(path, c);
            assert_int_equal(m->num_params, hf->num_params);
            int same_params = memcmp(m->params_memory, hf->params_memory, hf->num_params * sizeof(float)) == 0;
            if (types[ti].type == WHET_GGML_F32 && !same_params)
                fail_msg("%s F32: parameters differ from the HF directory's", name);
            /* (F16 and BF16 may be exact: llama3_rope's weights are F16, mistral's BF16) */
            if ((types[ti].type == WHET_GGML_Q8_0 || types[ti].type == WHET_GGML_Q4_0) && same_params)
                fail_msg("%s %s: parameters identical to fp32 (no rounding happened?)", name, types[ti].name);
            double nll, max_abs;
            run(m, &g, got, &nll);
            double rel = max_rel(got, ref, n, &max_abs), nll_rel = fabs(nll - g.nll) / g.nll;
            int bit_identical = memcmp(got, ref, n * sizeof *got) == 0;
            print_message("%-12s %-4s max|Δlogit| %.3e (relative %.3e, limit %.1e)%s; NLL vs PyTorch %.2e\n", name,
                          types[ti].name, max_abs, rel, types[ti].limit, bit_identical ? " bit-identical" : "",
                          nll_rel);
            if (!(rel <= types[ti].limit) || !(nll_rel <= types[ti].nll_limit))
                fail_msg("%s %s: logits relative error %.3g (limit %.3g), NLL relative error %.3g (limit %.3g)", name,
                         types[ti].name, rel, types[ti].limit, nll_rel, types[ti].nll_limit);
            /* F32: the very same weights give the very same logits, but for
             * llama3_rope's divisor-derived RoPE frequencies */
            if (types[ti].type == WHET_GGML_F32 && strcmp(name, "llama3_rope") != 0 && !bit_identical)
                fail_msg("%s F32: logits not bit-identical to the HF directory's", name);
            whet_model_free(m);
        }
        whet_model_free(hf);
        free(ref);
        free(got);
        free(g.tokens);
        free(g.logits);
    }
    whet_compute_destroy(c);
}

static void config_matches_config_json(void **state)
{
    (void)state;
    for (size_t mi = 0; mi < N_MODELS; mi++) {
        const char *name = golden_models[mi];
        char dir[256], path[256];
        snprintf(dir, sizeof dir, DATA_DIR "/%s", name);
        gguf_path(path, sizeof path, name, "cfg");
        convert(name, WHET_GGML_F32, path);
        whet_model_config want, got;
        whet_err e;
        if (whet_config_load(&want, dir, &e))
            fail_msg("%s", e.msg);
        whet_gguf *g = whet_gguf_open(path, &e);
        if (!g || whet_config_from_gguf(&got, g, &e))
            fail_msg("%s", e.msg);
        whet_gguf_close(g);
        if (want.info->arch == WHET_ARCH_MISTRAL) { /* stored as llama, without the sliding window */
            assert_int_equal(got.info->arch, WHET_ARCH_LLAMA);
            assert_int_equal(want.sliding_window, 4096);
            assert_int_equal(got.sliding_window, 0);
        } else {
            assert_ptr_equal(got.info, want.info);
        }
        assert_int_equal(got.vocab, want.vocab);
        assert_int_equal(got.hidden, want.hidden);
        assert_int_equal(got.layers, want.layers);
        assert_int_equal(got.heads, want.heads);
        assert_int_equal(got.kv_heads, want.kv_heads);
        assert_int_equal(got.head_dim, want.head_dim);
        assert_int_equal(got.ffn, want.ffn);
        assert_int_equal(got.max_positions, want.max_positions);
        assert_true(got.norm_eps == want.norm_eps);
        assert_int_equal(got.qkv_bias, want.qkv_bias);
        assert_int_equal(got.o_bias, want.o_bias);
        assert_int_equal(got.mlp_bias, want.mlp_bias);
        assert_int_equal(got.tied, want.tied);
        if (want.info->positions == WHET_POS_ROPE) {
            assert_true((float)got.rope_theta == (float)want.rope_theta);
            if (want.rope_scaling == WHET_ROPE_SCALING_LLAMA3) {
                assert_int_equal(got.rope_scaling, WHET_ROPE_SCALING_FREQS);
                assert_true(got.rope_factor == want.rope_factor);
                float a[WHET_MAX_HEAD_DIM / 2], b[WHET_MAX_HEAD_DIM / 2];
                whet_rope_inv_freq(&got, a);
                whet_rope_inv_freq(&want, b);
                for (size_t i = 0; i < want.head_dim / 2; i++)
                    if (!(fabsf(a[i] - b[i]) <= 2e-7f * b[i]))
                        fail_msg("%s: inv_freq[%zu] %.9g from rope_freqs, HF %.9g", name, i, (double)a[i], (double)b[i]);
            } else {
                assert_int_equal(got.rope_scaling, want.rope_scaling);
                assert_true((float)got.rope_factor == (float)want.rope_factor);
            }
        }
        /* no tokenizer in these directories: no token ids */
        assert_int_equal(got.bos_token_id, -1);
        assert_int_equal(got.n_eos, 0);
    }
}

/* ---- inconsistent files -------------------------------------------------------- */

typedef struct edit {
    const char *skip_key, *skip_tensor;
    const char *set_key; /* a uint32 or string key set to set_u32 / set_str */
    uint32_t set_u32;
    const char *set_str;
    const char *reshape; /* this tensor gets ne {ne[0], ne[1] / 2} */
    const char *retype;  /* this tensor is stored as Q4_1 (a type whet cannot convert) */
    const char *extra;   /* one more F32 tensor of 32 elements */
} edit;

/* The F32 llama conversion, copied with one edit, written to path. */
static void edited_llama(const char *path, const edit *ed)
{
    char src[256];
    gguf_path(src, sizeof src, "llama", "edit-src");
    convert("llama", WHET_GGML_F32, src);
    whet_err e;
    whet_gguf *g = whet_gguf_open(src, &e);
    if (!g)
        fail_msg("%s", e.msg);
    whet_gguf_writer *w = whet_gguf_writer_new();
    float *buf = calloc(1 << 16, sizeof *buf);
    unsigned char *raw = calloc(1 << 16, 1);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const whet_gguf_kv *kv = &g->kv[i];
        if (ed->skip_key && strcmp(kv->key.data, ed->skip_key) == 0)
            continue;
        if (ed->set_key && strcmp(kv->key.data, ed->set_key) == 0)
            assert_int_equal(ed->set_str ? whet_gguf_set_string(w, kv->key.data, ed->set_str, &e)
                                         : whet_gguf_set_u32(w, kv->key.data, ed->set_u32, &e),
                             0);
        else
            assert_int_equal(whet_gguf_set_value(w, kv->key.data, &kv->value, &e), 0);
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const whet_gguf_tensor *t = &g->tensors[i];
        const char *name = t->name.data;
        if (ed->skip_tensor && strcmp(name, ed->skip_tensor) == 0)
            continue;
        if (ed->reshape && strcmp(name, ed->reshape) == 0) {
            uint64_t ne[2] = {t->ne[0], t->ne[1] / 2};
            assert_int_equal(whet_gguf_add_tensor_raw(w, name, t->type, 2, ne, t->data, &e), 0);
        } else if (ed->retype && strcmp(name, ed->retype) == 0) {
            assert_true(t->n_elements / 32 * 20 <= (1 << 16));
            assert_int_equal(whet_gguf_add_tensor_raw(w, name, 3 /* Q4_1 */, t->n_dims, t->ne, raw, &e), 0);
        } else {
            assert_int_equal(whet_gguf_add_tensor_raw(w, name, t->type, t->n_dims, t->ne, t->data, &e), 0);
        }
    }
    if (ed->extra) {
        uint64_t ne = 32;
        assert_int_equal(whet_gguf_add_tensor_f32(w, ed->extra, WHET_GGML_F32, 1, &ne, buf, &e), 0);
    }
    if (whet_gguf_write_file(w, path, &e))
        fail_msg("%s", e.msg);
    whet_gguf_writer_free(w);
    whet_gguf_close(g);
    free(buf);
    free(raw);
}

/* Loading must fail with a message holding the file name and every `want`. */
static void refused(const edit *ed, const char *want1, const char *want2)
{
    char path[256];
    gguf_path(path, sizeof path, "llama", "edited");
    edited_llama(path, ed);
    whet_model *m = (whet_model *)1;
    whet_err e = {{0}};
    assert_int_equal(whet_model_load(&m, path, NULL, &e), -1);
    assert_null(m);
    print_message("refused: %s\n", e.msg);
    if (!strstr(e.msg, path) || !strstr(e.msg, want1) || (want2 && !strstr(e.msg, want2)))
        fail_msg("message \"%s\" should name %s, \"%s\"%s%s", e.msg, path, want1, want2 ? " and " : "",
                 want2 ? want2 : "");
}

static void inconsistent_files_refused(void **state)
{
    (void)state;
    refused(&(edit){.set_key = "general.architecture", .set_str = "mamba"}, "'general.architecture'",
            "llama (also Mistral), qwen2, qwen3, gpt2");
    refused(&(edit){.skip_key = "llama.embedding_length"}, "key 'llama.embedding_length' not found", NULL);
    refused(&(edit){.skip_key = "llama.attention.layer_norm_rms_epsilon"},
            "'llama.attention.layer_norm_rms_epsilon' not found", NULL);
    refused(&(edit){.skip_tensor = "blk.1.ffn_down.weight"}, "tensor 'blk.1.ffn_down.weight' not found", NULL);
    refused(&(edit){.skip_tensor = "output.weight", .extra = "whatever.weight"}, "unexpected tensor 'whatever.weight'",
            NULL);
    refused(&(edit){.reshape = "blk.0.attn_k.weight"}, "tensor 'blk.0.attn_k.weight' has ne [32, 8]",
            "expected [32, 16]");
    refused(&(edit){.retype = "blk.0.attn_v.weight"}, "tensor 'blk.0.attn_v.weight' has type Q4_1", NULL);
    refused(&(edit){.extra = "blk.0.attn_q.bias"}, "tensor 'blk.0.attn_k.bias' not found", NULL);
    refused(&(edit){.set_key = "llama.block_count", .set_u32 = 3}, "tensor 'blk.2.attn_norm.weight' not found", NULL);
    refused(&(edit){.set_key = "llama.block_count", .set_u32 = 1u << 31}, "tensor 'blk.2.attn_norm.weight' not found",
            NULL);
    refused(&(edit){.set_key = "llama.embedding_length", .set_u32 = 1u << 30}, "'llama.attention.key_length'",
            "found 268435456");
    refused(&(edit){.set_key = "llama.feed_forward_length", .set_u32 = 65},
            "tensor 'blk.0.ffn_gate.weight' has ne [32, 64]", "expected [32, 65]");
    refused(&(edit){.set_key = "llama.vocab_size", .set_u32 = 301}, "tensor 'token_embd.weight' has ne [32, 300]",
            "expected [32, 301]");
    refused(&(edit){.set_key = "llama.attention.head_count_kv", .set_u32 = 3}, "'llama.attention.head_count_kv'",
            "divisor");
    refused(&(edit){.set_key = "llama.attention.head_count", .set_u32 = 0}, "'llama.attention.head_count'",
            "[1, 2^31]");
    refused(&(edit){.set_key = "llama.rope.dimension_count", .set_u32 = 4}, "'llama.rope.dimension_count'", NULL);
}

/* whet_model_load("...gguf") on something that is not GGUF goes the HF way;
 * a truncated GGUF is refused by the parser with the file name. */
static void truncated_file_refused(void **state)
{
    (void)state;
    char src[256], path[256];
    gguf_path(src, sizeof src, "qwen3", "trunc-src");
    gguf_path(path, sizeof path, "qwen3", "trunc");
    convert("qwen3", WHET_GGML_Q8_0, src);
    FILE *in = fopen(src, "rb"), *out = fopen(path, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, in);
    assert_true(n == sizeof buf);
    fwrite(buf, 1, n, out);
    fclose(in);
    fclose(out);
    whet_model *m;
    whet_err e = {{0}};
    assert_int_equal(whet_model_load(&m, path, NULL, &e), -1);
    assert_non_null(strstr(e.msg, path));
}

/* tests/data/cli/tiny-llama.gguf, converted by tests/ref/make_cli_gguf.py (an
 * independent Python implementation of the same layout, F16 weights): its
 * tensors are byte for byte this converter's F16 ones (names, ne, types, Q/K
 * permutation), and whet runs it as the HF llama within F16's limit. */
static void matches_python_converted_fixture(void **state)
{
    (void)state;
    const char *fixture = "tests/data/cli/tiny-llama.gguf";
    char path[256];
    gguf_path(path, sizeof path, "llama", "F16-fixture");
    convert("llama", WHET_GGML_F16, path);
    whet_err e;
    whet_gguf *a = whet_gguf_open(fixture, &e), *b = whet_gguf_open(path, &e);
    if (!a || !b)
        fail_msg("%s", e.msg);
    assert_int_equal(a->n_tensors, b->n_tensors);
    for (uint64_t i = 0; i < a->n_tensors; i++) {
        const whet_gguf_tensor *ta = &a->tensors[i], *tb = whet_gguf_find_tensor(b, ta->name.data);
        if (!tb)
            fail_msg("%s: tensor '%s' missing from the C conversion", fixture, ta->name.data);
        assert_int_equal(ta->n_dims, tb->n_dims);
        assert_memory_equal(ta->ne, tb->ne, sizeof ta->ne);
        assert_int_equal(ta->type, tb->type);
        assert_int_equal(ta->n_bytes, tb->n_bytes);
        if (memcmp(ta->data, tb->data, ta->n_bytes) != 0)
            fail_msg("%s: tensor '%s' differs from the C conversion", fixture, ta->name.data);
    }
    static const char *const keys[] = {"llama.vocab_size", "llama.context_length", "llama.embedding_length",
                                       "llama.feed_forward_length", "llama.block_count", "llama.attention.head_count",
                                       "llama.attention.head_count_kv", "llama.rope.dimension_count"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        uint32_t va = 0, vb = 0;
        int ra = whet_gguf_get_u32(a, keys[i], &va, &e), rb = ra ? -1 : whet_gguf_get_u32(b, keys[i], &vb, &e);
        if (ra || rb)
            fail_msg("%s", e.msg);
        assert_int_equal(va, vb);
    }
    whet_gguf_close(a);
    whet_gguf_close(b);

    golden g;
    load_golden("llama", &g);
    size_t n = g.B * g.T * g.V;
    float *ref = malloc(n * sizeof *ref), *got = malloc(n * sizeof *got);
    whet_compute *c = whet_compute_create(whet_kernels_best(), 1);
    whet_model *hf = load(DATA_DIR "/llama", c), *m = load(fixture, c);
    double nll, max_abs;
    run(hf, &g, ref, &nll);
    run(m, &g, got, &nll);
    double rel = max_rel(got, ref, n, &max_abs);
    print_message("%s: max|Δlogit| %.3e (relative %.3e) against the HF llama\n", fixture, max_abs, rel);
    assert_true(rel <= types[1].limit);
    whet_model_free(hf);
    whet_model_free(m);
    whet_compute_destroy(c);
    free(ref);
    free(got);
    free(g.tokens);
    free(g.logits);
}

static int convert_main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s convert DIR F32|F16|Q8_0 OUT.gguf\n", argv[0]);
        return 2;
    }
    uint32_t type = strcmp(argv[3], "F16") == 0 ? WHET_GGML_F16 : strcmp(argv[3], "Q8_0") == 0 ? WHET_GGML_Q8_0
                                                                                              : WHET_GGML_F32;
    whet_err e;
    if (gguf_convert_hf_file(argv[2], type, argv[4], &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "convert") == 0)
        return convert_main(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(logits_match_hf),
        cmocka_unit_test(config_matches_config_json),
        cmocka_unit_test(inconsistent_files_refused),
        cmocka_unit_test(truncated_file_refused),
        cmocka_unit_test(matches_python_converted_fixture),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
