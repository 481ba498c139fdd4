/* Exports: PEFT adapter directories, merged HF directories, GGUF models and
 * GGUF LoRA adapters, each read back and compared with what was written.
 *
 * Models: the six golden models of tests/data/models (llama, llama3_rope,
 * mistral, qwen2, qwen3, gpt2), each with a random adapter on every linear
 * projection whose B is not zero (rank 4, alpha 8, so scale 2):
 *
 *  - PEFT: written and read back, A and B are bit-identical (Llama family);
 *    the file holds PEFT's names and shapes (checked by name). GPT-2's q/k/v
 *    become one c_attn module of rank 3r with rank_pattern/alpha_pattern,
 *    read back as an adapter whose logits equal the original's within 1e-6.
 *    An HF-PEFT-style GPT-2 adapter (one shared A on c_attn, written here by
 *    hand) gives the logits of the base model whose weights the test itself
 *    moved by scale·B·A (naive loops): the reading is checked against the
 *    definition, not against whet's merge.
 *  - HF: the merged model written as an HF directory and loaded with
 *    whet_model_load gives base+adapter's logits (max|Δ|/max|ref| ≤ 1e-5);
 *    without an adapter every tensor equals the source's bit for bit.
 *  - GGUF model: written and read with whet_model_load_gguf, the logits
 *    match the model's within F32 1e-6, F16 8·2^-11, Q8_0 1e-1 (the limits
 *    and their reasoning are test_model_gguf.c's); F32 tensors and metadata
 *    equal those of tests/support/gguf_convert.c (convert_hf_to_gguf.py's
 *    layout, written independently) bit for bit.
 *  - GGUF adapter: keys and tensor names/shapes as convert_lora_to_gguf.py
 *    writes them; llama.cpp's arithmetic (W + alpha/rank · lora_b·lora_a,
 *    lora_b's rank = its ne[0]) applied to the exported base GGUF's tensors
 *    gives the exported merged GGUF's tensors (≤ 1e-6 relative), which
 *    checks the Q/K permutation of lora_b and GPT-2's fused attn_qkv.
 *  - Tokenizer metadata: every tokenizer of tests/data/tokenizers (and the
 *    demo's, datasets/pretrain) exported to GGUF keys and loaded back with
 *    whet_tokenizer_from_gguf encodes the golden texts as the tokenizer.json
 *    does (spm_metaspace: not the texts that start with a space or hold a
 *    special token, which GGUF's add_space_prefix cannot express).
 *  - adapter_config.json refusals and mismatched adapter files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "io/gguf.h"
#include "io/json.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "model/adapter.h"
#include "model/export.h"
#include "model/lora.h"
#include "model/model.h"
#include "model/sample.h"
#include "support/gguf_convert.h"
#include "tok/tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DATA_DIR "tests/data/models"

static const char *const models[] = {"llama", "llama3_rope", "mistral", "qwen2", "qwen3", "gpt2"};
#define N_MODELS (sizeof models / sizeof *models)

static char tmp_dir[64];
static whet_compute *compute;

static int setup(void **state)
{
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/whet_export_XXXXXX");
    compute = whet_compute_create(whet_kernels_best(), 1);
    return mkdtemp(tmp_dir) && compute ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    whet_compute_destroy(compute);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static whet_model *load(const char *path)
{
    whet_model *m;
    whet_err e;
    if (whet_model_load(&m, path, compute, &e))
        fail_msg("%s", e.msg);
    return m;
}

static whet_model *load_golden_model(const char *name)
{
    char dir[256];
    snprintf(dir, sizeof dir, DATA_DIR "/%s", name);
    return load(dir);
}

/* An adapter on every projection of m with B random (not PEFT's zero), so
 * that it changes the logits. */
static whet_lora *random_adapter(whet_model *m, uint64_t seed)
{
    whet_lora_options opt = {.rank = 4, .alpha = 8, .targets = 0, .seed = seed};
    for (int id = 0; id < WHET_LIN_COUNT; id++)
        if (whet_linear_exists(&m->cfg, (whet_linear_id)id))
            opt.targets |= 1u << id;
    whet_err e;
    whet_lora *lora = whet_lora_create(m, &opt, &e);
    if (!lora)
        fail_msg("%s", e.msg);
    whet_rng rng;
    whet_rng_seed(&rng, seed + 1);
    for (int id = 0; id < WHET_LIN_COUNT; id++)
        if (lora->B[id])
            for (size_t i = 0; i < lora->layers * lora->out[id] * lora->opt.rank; i++)
                lora->B[id][i] = (float)(whet_rng_uniform(&rng) - 0.5) * 0.2f;
    return lora;
}

#define T_TOKENS 12

/* logits [T_TOKENS, V] of a fixed token sequence */
static float *logits_of(whet_model *m)
{
    int32_t tokens[T_TOKENS];
    for (size_t t = 0; t < T_TOKENS; t++)
        tokens[t] = (int32_t)((t * 37 + 5) % m->cfg.vocab);
    whet_err e;
    whet_acts *a = whet_acts_create(m, 1, T_TOKENS, 0, &e);
    if (!a)
        fail_msg("%s", e.msg);
    float *logits = malloc(T_TOKENS * m->cfg.vocab * sizeof *logits);
    if (whet_model_forward(m, a, tokens, 1, T_TOKENS, &e) || whet_model_logits(m, a, NULL, T_TOKENS, logits, &e))
        fail_msg("%s", e.msg);
    whet_acts_free(a);
    return logits;
}

static double max_rel(const float *got, const float *ref, size_t n)
{
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= md))
            md = d;
        mr = fabs(ref[i]) > mr ? fabs(ref[i]) : mr;
    }
    return md / mr;
}

static void path_in_tmp(char *buf, size_t cap, const char *model, const char *what)
{
    snprintf(buf, cap, "%s/%s-%s", tmp_dir, model, what);
}

/* ---- PEFT ------------------------------------------------------------------------ */

static void peft_roundtrip_bit_exact(void **state)
{
    (void)state;
    for (size_t mi = 0; mi < N_MODELS; mi++) {
        if (strcmp(models[mi], "gpt2") == 0)
            continue;
        whet_model *m = load_golden_model(models[mi]);
        whet_lora *lora = random_adapter(m, 11 + mi);
        char dir[256];
        path_in_tmp(dir, sizeof dir, models[mi], "peft");
        whet_err e;
        if (whet_adapter_save_peft(m, lora, dir, "org/base-model", &e))
            fail_msg("%s", e.msg);
        /* the file, by PEFT's names and shapes */
        whet_safetensors *st;
        char file[300];
        snprintf(file, sizeof file, "%s/" WHET_PEFT_WEIGHTS, dir);
        if (whet_st_open(&st, file, &e))
            fail_msg("%s", e.msg);
        assert_int_equal(whet_st_count(st), m->cfg.layers * 7 * 2);
        const whet_st_tensor *t = whet_st_find(st, "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight");
        assert_non_null(t);
        assert_int_equal(t->rank, 2);
        assert_int_equal(t->shape[0], (int64_t)m->cfg.hidden);
        assert_int_equal(t->shape[1], 4);
        assert_int_equal(t->dtype, WHET_ST_F32);
        t = whet_st_find(st, "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight");
        assert_non_null(t);
        assert_int_equal(t->shape[0], 4);
        assert_int_equal(t->shape[1], (int64_t)m->cfg.hidden);
        assert_string_equal(whet_st_metadata(st, "format"), "pt");
        whet_st_close(st);
        /* the config */
        whet_peft_config pc;
        if (whet_peft_config_load(&pc, dir, &e))
            fail_msg("%s", e.msg);
        assert_int_equal(pc.r, 4);
        assert_true(pc.lora_alpha == 8);
        assert_int_equal(pc.n_target_modules, 7);
        assert_string_equal(pc.target_modules[0], "q_proj");
        assert_string_equal(pc.target_modules[6], "down_proj");
        assert_string_equal(pc.base_model_name_or_path, "org/base-model");
        assert_string_equal(pc.task_type, "CAUSAL_LM");
        assert_false(pc.fan_in_fan_out);
        whet_peft_config_free(&pc);
        /* read back onto a fresh copy of the model */
        whet_model *m2 = load_golden_model(models[mi]);
        whet_lora *back;
        if (whet_adapter_load_peft(m2, dir, &back, &e))
            fail_msg("%s", e.msg);
        assert_ptr_equal(m2->lora, back);
        assert_int_equal(back->opt.rank, 4);
        assert_true(back->scale == lora->scale);
        assert_int_equal(back->opt.targets, lora->opt.targets);
        for (int id = 0; id < WHET_LIN_COUNT; id++) {
            size_t L = m->cfg.layers, r = 4;
            assert_memory_equal(back->A[id], lora->A[id], L * r * lora->in[id] * sizeof(float));
            assert_memory_equal(back->B[id], lora->B[id], L * lora->out[id] * r * sizeof(float));
        }
        whet_lora_free(m2, back);
        whet_model_free(m2);
        whet_lora_free(m, lora);
        whet_model_free(m);
    }
}

/* GPT-2: q, k, v with different A's become one stacked c_attn of rank 12. */
static void peft_gpt2_stacked_c_attn(void **state)
{
    (void)state;
    whet_model *m = load_golden_model("gpt2");
    whet_lora *lora = random_adapter(m, 5);
    float *ref = logits_of(m);
    char dir[256];
    path_in_tmp(dir, sizeof dir, "gpt2", "peft");
    whet_err e;
    if (whet_adapter_save_peft(m, lora, dir, NULL, &e))
        fail_msg("%s", e.msg);
    whet_safetensors *st;
    char file[300];
    snprintf(file, sizeof file, "%s/" WHET_PEFT_WEIGHTS, dir);
    if (whet_st_open(&st, file, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(whet_st_count(st), 2 * 4 * 2); /* c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj */
    const whet_st_tensor *a = whet_st_find(st, "base_model.model.transformer.h.1.attn.c_attn.lora_A.weight");
    const whet_st_tensor *b = whet_st_find(st, "base_model.model.transformer.h.1.attn.c_attn.lora_B.weight");
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(a->shape[0], 12);
    assert_int_equal(a->shape[1], 32);
    assert_int_equal(b->shape[0], 96);
    assert_int_equal(b->shape[1], 12);
    assert_non_null(whet_st_find(st, "base_model.model.transformer.h.0.mlp.c_proj.lora_B.weight"));
    assert_non_null(whet_st_find(st, "base_model.model.transformer.h.0.attn.c_proj.lora_A.weight"));
    whet_st_close(st);
    whet_peft_config pc;
    if (whet_peft_config_load(&pc, dir, &e))
        fail_msg("%s", e.msg);
    assert_true(pc.fan_in_fan_out);
    assert_int_equal(pc.n_rank_pattern, 1);
    assert_string_equal(pc.rank_pattern[0].pattern, "c_attn");
    assert_true(pc.rank_pattern[0].value == 12);
    assert_true(pc.alpha_pattern[0].value == 24);
    assert_null(pc.base_model_name_or_path);
    size_t r;
    double alpha;
    assert_int_equal(whet_peft_module_rank_alpha(&pc, "transformer.h.0.attn.c_attn", &r, &alpha, &e), 0);
    assert_int_equal(r, 12);
    assert_int_equal(whet_peft_module_rank_alpha(&pc, "transformer.h.0.mlp.c_proj", &r, &alpha, &e), 0);
    assert_int_equal(r, 4);
    whet_peft_config_free(&pc);

    whet_model *m2 = load_golden_model("gpt2");
    whet_lora *back;
    if (whet_adapter_load_peft(m2, dir, &back, &e))
        fail_msg("%s", e.msg);
    float *got = logits_of(m2);
    double rel = max_rel(got, ref, T_TOKENS * m->cfg.vocab);
    print_message("gpt2 stacked c_attn: rank %zu read back, logits max rel diff %.3g\n", back->opt.rank, rel);
    assert_true(rel <= 1e-6);
    /* the block structure is recognised: q, k, v come back at rank 4, bit for bit */
    assert_int_equal(back->opt.rank, 4);
    assert_true(back->scale == lora->scale);
    for (int id = 0; id < WHET_LIN_COUNT; id++)
        if (lora->A[id]) {
            assert_memory_equal(back->A[id], lora->A[id], m->cfg.layers * 4 * lora->in[id] * sizeof(float));
            assert_memory_equal(back->B[id], lora->B[id], m->cfg.layers * lora->out[id] * 4 * sizeof(float));
        }
    free(got);
    whet_lora_free(m2, back);
    whet_model_free(m2);
    free(ref);
    whet_lora_free(m, lora);
    whet_model_free(m);
}

/* GPT-2 with q and v adapted (not k): c_attn of rank 2r, read back padded
 * to that rank (zero rows and columns), the same logits. */
static void peft_gpt2_q_v_only(void **state)
{
    (void)state;
    whet_model *m = load_golden_model("gpt2");
    whet_lora_options opt = {.rank = 3, .alpha = 5, .targets = (1u << WHET_LIN_Q) | (1u << WHET_LIN_V) |
                                                               (1u << WHET_LIN_DOWN), .seed = 8};
    whet_err e;
    whet_lora *lora = whet_lora_create(m, &opt, &e);
    if (!lora)
        fail_msg("%s", e.msg);
    whet_rng rng;
    whet_rng_seed(&rng, 4);
    for (int id = 0; id < WHET_LIN_COUNT; id++)
        if (lora->B[id])
            for (size_t i = 0; i < lora->layers * lora->out[id] * 3; i++)
                lora->B[id][i] = (float)(whet_rng_uniform(&rng) - 0.5) * 0.2f;
    float *ref = logits_of(m);
    char dir[256];
    path_in_tmp(dir, sizeof dir, "gpt2", "peft-qv");
    if (whet_adapter_save_peft(m, lora, dir, NULL, &e))
        fail_msg("%s", e.msg);
    whet_model *m2 = load_golden_model("gpt2");
    whet_lora *back;
    if (whet_adapter_load_peft(m2, dir, &back, &e))
        fail_msg("%s", e.msg);
    float *got = logits_of(m2);
    double rel = max_rel(got, ref, T_TOKENS * m->cfg.vocab);
    print_message("gpt2 q,v-only c_attn (rank 6): read back at rank %zu, logits max rel diff %.3g\n",
                  back->opt.rank, rel);
    assert_true(rel <= 1e-6);
    free(got);
    free(ref);
    whet_lora_free(m2, back);
    whet_model_free(m2);
    whet_lora_free(m, lora);
    whet_model_free(m);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* An adapter as HF PEFT writes one for GPT-2 (one A shared by q, k, v): the
 * loaded adapter's logits equal the base model's with W_c_attn += s·B·A. */
static void peft_gpt2_shared_a_matches_definition(void **state)
{
    (void)state;
    whet_model *m = load_golden_model("gpt2");
    const whet_model_config *c = &m->cfg;
    size_t L = c->layers, C = c->hidden, N = 3 * C, r = 2;
    float alpha = 3;
    char dir[256];
    path_in_tmp(dir, sizeof dir, "gpt2", "hfpeft");
    whet_err e;
    if (whet_make_dir(dir, &e))
        fail_msg("%s", e.msg);
    float *A = malloc(L * r * C * sizeof *A), *B = malloc(L * N * r * sizeof *B);
    whet_rng rng;
    whet_rng_seed(&rng, 99);
    for (size_t i = 0; i < L * r * C; i++)
        A[i] = (float)(whet_rng_uniform(&rng) - 0.5);
    for (size_t i = 0; i < L * N * r; i++)
        B[i] = (float)(whet_rng_uniform(&rng) - 0.5) * 0.3f;
    whet_st_entry entries[8];
    char names[8][128];
    int64_t shape_a[2] = {(int64_t)r, (int64_t)C}, shape_b[2] = {(int64_t)N, (int64_t)r};
    for (size_t l = 0; l < L; l++) {
        snprintf(names[2 * l], 128, "base_model.model.transformer.h.%zu.attn.c_attn.lora_A.weight", l);
        snprintf(names[2 * l + 1], 128, "base_model.model.transformer.h.%zu.attn.c_attn.lora_B.weight", l);
        entries[2 * l] = (whet_st_entry){names[2 * l], WHET_ST_F32, 2, shape_a, A + l * r * C};
        entries[2 * l + 1] = (whet_st_entry){names[2 * l + 1], WHET_ST_F32, 2, shape_b, B + l * N * r};
    }
    char file[300];
    snprintf(file, sizeof file, "%s/" WHET_PEFT_WEIGHTS, dir);
    if (whet_st_write(file, entries, 2 * L, NULL, 0, &e))
        fail_msg("%s", e.msg);
    snprintf(file, sizeof file, "%s/" WHET_PEFT_CONFIG, dir);
    write_text(file, "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 3, \"lora_dropout\": 0.05,"
                     " \"target_modules\": [\"c_attn\"], \"fan_in_fan_out\": true, \"bias\": \"none\","
                     " \"task_type\": \"CAUSAL_LM\", \"modules_to_save\": null, \"use_dora\": false,"
                     " \"layers_to_transform\": null, \"rank_pattern\": {}, \"alpha_pattern\": {}}");
    whet_lora *lora;
    if (whet_adapter_load_peft(m, dir, &lora, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(lora->opt.targets, 7u); /* q, k, v */
    float *got = logits_of(m);
    whet_lora_free(m, lora);
    /* the definition: c_attn's [N, C] rows q | k | v move by s·B·A */
    double s = alpha / (double)r;
    size_t QD = C, KVD = C;
    for (size_t l = 0; l < L; l++)
        for (size_t o = 0; o < N; o++)
            for (size_t i = 0; i < C; i++) {
                double d = 0;
                for (size_t k = 0; k < r; k++)
                    d += (double)B[l * N * r + o * r + k] * A[l * r * C + k * C + i];
                float *w = o < QD ? m->params.wq + l * QD * C + o * C
                           : o < QD + KVD ? m->params.wk + l * KVD * C + (o - QD) * C
                                          : m->params.wv + l * KVD * C + (o - QD - KVD) * C;
                w[i] += (float)(s * d);
            }
    float *ref = logits_of(m);
    double rel = max_rel(got, ref, T_TOKENS * c->vocab);
    print_message("gpt2 HF-PEFT c_attn adapter vs the moved weights: max rel diff %.3g\n", rel);
    assert_true(rel <= 1e-5);
    free(got);
    free(ref);
    free(A);
    free(B);
    whet_model_free(m);
}

/* ---- HF -------------------------------------------------------------------------------- */

static void merged_hf_export_same_logits(void **state)
{
    (void)state;
    for (size_t mi = 0; mi < N_MODELS; mi++) {
        whet_model *m = load_golden_model(models[mi]);
        whet_lora *lora = random_adapter(m, 21 + mi);
        float *ref = logits_of(m);
        whet_err e;
        if (whet_lora_merge(m, lora, &e))
            fail_msg("%s", e.msg);
        char src[256], dir[256];
        snprintf(src, sizeof src, DATA_DIR "/%s", models[mi]);
        path_in_tmp(dir, sizeof dir, models[mi], "merged-hf");
        int no_tok;
        if (whet_model_export_hf(m, src, dir, WHET_ST_F32, &no_tok, &e))
            fail_msg("%s", e.msg);
        assert_int_equal(no_tok, 1); /* the golden models have no tokenizer */
        whet_model *back = load(dir);
        float *got = logits_of(back);
        double rel = max_rel(got, ref, T_TOKENS * m->cfg.vocab);
        print_message("%-12s merged HF export vs base+adapter: max rel diff %.3g\n", models[mi], rel);
        assert_true(rel <= 1e-5);
        free(got);
        free(ref);
        whet_model_free(back);
        whet_lora_free(m, lora);
        whet_model_free(m);
    }
}

/* Without an adapter, every exported tensor is the source's, byte for byte,
 * and the source has no other tensor but HF's buffers. */
static void hf_export_is_the_source(void **state)
{
    (void)state;
    for (size_t mi = 0; mi < N_MODELS; mi++) {
        whet_model *m = load_golden_model(models[mi]);
        char src[256], dir[256];
        snprintf(src, sizeof src, DATA_DIR "/%s", models[mi]);
        path_in_tmp(dir, sizeof dir, models[mi], "hf");
        whet_err e;
        int no_tok;
        if (whet_model_export_hf(m, src, dir, WHET_ST_F32, &no_tok, &e))
            fail_msg("%s", e.msg);
        whet_safetensors *a, *b;
        if (whet_st_open_dir(&a, src, &e) || whet_st_open_dir(&b, dir, &e))
            fail_msg("%s", e.msg);
        for (size_t i = 0; i < whet_st_count(b); i++) {
            const whet_st_tensor *t = whet_st_tensor_at(b, i), *s = whet_st_find(a, t->name);
            if (!s)
                fail_msg("%s: exported tensor %s is not in the source", models[mi], t->name);
            assert_int_equal(t->rank, s->rank);
            assert_memory_equal(t->shape, s->shape, t->rank * sizeof *t->shape);
            assert_int_equal(t->dtype, WHET_ST_F32);
            float *want = malloc(s->numel * sizeof *want);
            if (whet_st_load_f32(s, want, NULL, &e))
                fail_msg("%s", e.msg);
            assert_memory_equal(t->data, want, t->nbytes); /* F16/BF16 sources widen exactly */
            free(want);
        }
        for (size_t i = 0; i < whet_st_count(a); i++) {
            const char *name = whet_st_tensor_at(a, i)->name;
            if (!whet_st_find(b, name) && !strstr(name, ".attn.bias") && !strstr(name, ".attn.masked_bias") &&
                !strstr(name, "rotary_emb") && !(m->cfg.tied && strstr(name, "lm_head")))
                fail_msg("%s: source tensor %s was not exported", models[mi], name);
        }
        whet_st_close(a);
        whet_st_close(b);
        whet_model_free(m);
    }
}

/* A GGUF model exported as HF: config.json made from the metadata. */
static void hf_export_from_gguf(void **state)
{
    (void)state;
    for (size_t mi = 0; mi < N_MODELS; mi++) {
        if (strcmp(models[mi], "llama3_rope") == 0)
            continue; /* its rope_freqs divisors have no config.json form: refused (below) */
        char src[256], gguf[256], dir[256];
        snprintf(src, sizeof src, DATA_DIR "/%s", models[mi]);
        path_in_tmp(gguf, sizeof gguf, models[mi], "src.gguf");
        path_in_tmp(dir, sizeof dir, models[mi], "from-gguf");
        whet_err e;
        if (gguf_convert_hf_file(src, WHET_GGML_F32, gguf, &e))
            fail_msg("%s", e.msg);
        whet_model *m = load(gguf);
        float *ref = logits_of(m);
        int no_tok;
        if (whet_model_export_hf(m, gguf, dir, WHET_ST_F32, &no_tok, &e))
            fail_msg("%s: %s", models[mi], e.msg);
        whet_model *back = load(dir);
        float *got = logits_of(back);
        assert_memory_equal(got, ref, T_TOKENS * m->cfg.vocab * sizeof *got);
        free(got);
        free(ref);
        whet_model_free(back);
        whet_model_free(m);
    }
    char src[256], gguf[256], dir[256];
    snprintf(src, sizeof src, DATA_DIR "/llama3_rope");
    path_in_tmp(gguf, sizeof gguf, "llama3_rope", "src.gguf");
    path_in_tmp(dir, sizeof dir, "llama3_rope", "from-gguf");
    whet_err e;
    if (gguf_convert_hf_file(src, WHET_GGML_F32, gguf, &e))
        fail_msg("%s", e.msg);
    whet_model *m = load(gguf);
    int no_tok;
    assert_int_equal(whet_model_export_hf(m, gguf, dir, WHET_ST_F32, &no_tok, &e), -1);
    assert_non_null(strstr(e.msg, "rope_freqs"));
    whet_model_free(m);
}

/* ---- GGUF -------------------------------------------------------------------------------- */

static const struct {
    uint32_t type;
    const char *name;
    double limit;
} gguf_types[] = {
    {WHET_GGML_F32, "F32", 1e-6},
    {WHET_GGML_F16, "F16", 8.0 / 2048},
    {WHET_GGML_Q8_0, "Q8_0", 1e-1},
};

static void gguf_export_same_logits(void **state)
{
    (void)state;
    for (size_t mi = 0; mi < N_MODELS; mi++) {
        whet_model *m = load_golden_model(models[mi]);
        whet_lora *lora = random_adapter(m, 31 + mi);
        whet_err e;
        if (whet_lora_merge(m, lora, &e))
            fail_msg("%s", e.msg);
        float *ref = logits_of(m);
        char src[256];
        snprintf(src, sizeof src, DATA_DIR "/%s", models[mi]);
        for (size_t ti = 0; ti < sizeof gguf_types / sizeof *gguf_types; ti++) {
            char path[256], what[64];
            snprintf(what, sizeof what, "merged-%s.gguf", gguf_types[ti].name);
            path_in_tmp(path, sizeof path, models[mi], what);
            int no_tok;
            if (whet_model_save_gguf(m, src, path, gguf_types[ti].type, &no_tok, &e))
                fail_msg("%s", e.msg);
            whet_model *back;
            if (whet_model_load_gguf(&back, path, compute, &e))
                fail_msg("%s: %s", path, e.msg);
            float *got = logits_of(back);
            double rel = max_rel(got, ref, T_TOKENS * m->cfg.vocab);
            print_message("%-12s %-4s GGUF export read back: max rel diff %.3g (limit %.3g)\n", models[mi],
                          gguf_types[ti].name, rel, gguf_types[ti].limit);
            assert_true(rel <= gguf_types[ti].limit);
            free(got);
            whet_model_free(back);
        }
        free(ref);
        whet_lora_free(m, lora);
        whet_model_free(m);
    }
}

static int same_value(const whet_gguf_value *a, const whet_gguf_value *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case WHET_GGUF_STRING: return a->as.str.len == b->as.str.len && memcmp(a->as.str.data, b->as.str.data, a->as.str.len) == 0;
    case WHET_GGUF_UINT32: return a->as.u32 == b->as.u32;
    case WHET_GGUF_FLOAT32: return memcmp(&a->as.f32, &b->as.f32, sizeof(float)) == 0;
    case WHET_GGUF_BOOL: return a->as.boolean == b->as.boolean;
    default: return 0;
    }
}

/* The base model exported as F32 and F16 GGUF equals the independent
 * converter's file: every key, every tensor's name, ne, type and bytes. */
static void gguf_export_matches_converter(void **state)
{
    (void)state;
    for (size_t mi = 0; mi < N_MODELS; mi++) {
        for (size_t ti = 0; ti < 3; ti++) {
            whet_model *m = load_golden_model(models[mi]);
            char src[256], ours[256], theirs[256];
            snprintf(src, sizeof src, DATA_DIR "/%s", models[mi]);
            path_in_tmp(ours, sizeof ours, models[mi], "ours.gguf");
            path_in_tmp(theirs, sizeof theirs, models[mi], "converter.gguf");
            whet_err e;
            int no_tok;
            if (whet_model_save_gguf(m, src, ours, gguf_types[ti].type, &no_tok, &e) ||
                gguf_convert_hf_file(src, gguf_types[ti].type, theirs, &e))
                fail_msg("%s", e.msg);
            whet_gguf *a = whet_gguf_open(ours, &e), *b = a ? whet_gguf_open(theirs, &e) : NULL;
            if (!a || !b)
                fail_msg("%s", e.msg);
            for (uint64_t i = 0; i < b->n_kv; i++) {
                const whet_gguf_kv *kv = whet_gguf_find(a, b->kv[i].key.data);
                if (!kv || !same_value(&kv->value, &b->kv[i].value))
                    fail_msg("%s: key %s differs from the converter's", models[mi], b->kv[i].key.data);
            }
            assert_int_equal(a->n_kv, b->n_kv);
            assert_int_equal(a->n_tensors, b->n_tensors);
            for (uint64_t i = 0; i < b->n_tensors; i++) {
                const whet_gguf_tensor *tb = &b->tensors[i], *ta = whet_gguf_find_tensor(a, tb->name.data);
                if (!ta)
                    fail_msg("%s: tensor %s missing", models[mi], tb->name.data);
                assert_int_equal(ta->n_dims, tb->n_dims);
                assert_memory_equal(ta->ne, tb->ne, sizeof ta->ne);
                assert_int_equal(ta->type, tb->type);
                assert_int_equal(ta->n_bytes, tb->n_bytes);
                if (memcmp(ta->data, tb->data, ta->n_bytes) != 0)
                    fail_msg("%s %s: tensor %s differs from the converter's", models[mi], gguf_types[ti].name,
                             tb->name.data);
            }
            whet_gguf_close(a);
            whet_gguf_close(b);
            whet_model_free(m);
        }
    }
}

static void get_tensor_f32(const whet_gguf *g, const char *name, float **out, const whet_gguf_tensor **t)
{
    whet_err e;
    *t = whet_gguf_find_tensor(g, name);
    if (!*t)
        fail_msg("%s: tensor %s not found", g->name, name);
    *out = malloc((*t)->n_elements * sizeof **out);
    if (whet_gguf_tensor_to_f32(g, *t, *out, &e))
        fail_msg("%s", e.msg);
}

/* The GGUF LoRA adapter: keys, names, shapes, and llama.cpp's arithmetic. */
static void gguf_adapter_file(void **state)
{
    (void)state;
    const char *names[] = {"llama", "qwen3", "gpt2"};
    for (size_t mi = 0; mi < 3; mi++) {
        whet_model *m = load_golden_model(names[mi]);
        const whet_model_config *c = &m->cfg;
        whet_lora *lora = random_adapter(m, 41 + mi);
        char src[256], adapter[256], base[256], merged[256];
        snprintf(src, sizeof src, DATA_DIR "/%s", names[mi]);
        path_in_tmp(adapter, sizeof adapter, names[mi], "lora.gguf");
        path_in_tmp(base, sizeof base, names[mi], "base.gguf");
        path_in_tmp(merged, sizeof merged, names[mi], "merged.gguf");
        whet_err e;
        int no_tok;
        if (whet_adapter_save_gguf(m, lora, adapter, WHET_GGML_F32, &e) ||
            whet_model_save_gguf(m, src, base, WHET_GGML_F32, &no_tok, &e) || whet_lora_merge(m, lora, &e) ||
            whet_model_save_gguf(m, src, merged, WHET_GGML_F32, &no_tok, &e))
            fail_msg("%s", e.msg);
        whet_gguf *ga = whet_gguf_open(adapter, &e), *gb = whet_gguf_open(base, &e), *gm = whet_gguf_open(merged, &e);
        if (!ga || !gb || !gm)
            fail_msg("%s", e.msg);
        const whet_gguf_str *s;
        float alpha;
        assert_int_equal(whet_gguf_get_string(ga, "general.type", &s, &e), 0);
        assert_string_equal(s->data, "adapter");
        assert_int_equal(whet_gguf_get_string(ga, "general.architecture", &s, &e), 0);
        assert_string_equal(s->data, names[mi]);
        assert_int_equal(whet_gguf_get_string(ga, "adapter.type", &s, &e), 0);
        assert_string_equal(s->data, "lora");
        assert_int_equal(whet_gguf_get_f32(ga, "adapter.lora.alpha", &alpha, &e), 0);
        assert_true(alpha == 8.0f);
        assert_null(whet_gguf_find(ga, "tokenizer.ggml.tokens"));
        int gpt2 = c->info->arch == WHET_ARCH_GPT2;
        size_t per_layer = gpt2 ? 4 : 7;
        assert_int_equal(ga->n_tensors, c->layers * per_layer * 2);
        /* every pair: ADP's shape checks, then W_merged = W + alpha/rank · B·A */
        double worst = 0;
        for (uint64_t i = 0; i < ga->n_tensors; i += 2) {
            const whet_gguf_tensor *ta = &ga->tensors[i], *tb = &ga->tensors[i + 1], *tw, *tm;
            size_t len = strlen(ta->name.data);
            assert_true(len > 7 && strcmp(ta->name.data + len - 7, ".lora_a") == 0);
            assert_int_equal(strncmp(ta->name.data, tb->name.data, len - 7), 0);
            assert_string_equal(tb->name.data + len - 7, ".lora_b");
            char wname[96];
            snprintf(wname, sizeof wname, "%.*s", (int)(len - 7), ta->name.data);
            float *A, *B, *W, *M;
            get_tensor_f32(ga, ta->name.data, &A, &ta);
            get_tensor_f32(ga, tb->name.data, &B, &tb);
            get_tensor_f32(gb, wname, &W, &tw);
            get_tensor_f32(gm, wname, &M, &tm);
            assert_int_equal(ta->ne[0], tw->ne[0]);
            assert_int_equal(tb->ne[1], tw->ne[1]);
            assert_int_equal(ta->ne[1], tb->ne[0]);
            size_t in = (size_t)ta->ne[0], R = (size_t)ta->ne[1], out = (size_t)tb->ne[1];
            double scale = alpha / (double)R, mw = 0, md = 0;
            for (size_t o = 0; o < out; o++)
                for (size_t k = 0; k < in; k++) {
                    double d = 0;
                    for (size_t j = 0; j < R; j++)
                        d += (double)B[o * R + j] * A[j * in + k];
                    double want = W[o * in + k] + scale * d;
                    md = fmax(md, fabs(want - M[o * in + k]));
                    mw = fmax(mw, fabs(want));
                }
            worst = fmax(worst, md / mw);
            free(A);
            free(B);
            free(W);
            free(M);
        }
        print_message("%-6s GGUF adapter: base + alpha/rank·B·A vs merged export, max rel diff %.3g\n", names[mi],
                      worst);
        assert_true(worst <= 1e-6);
        if (gpt2) {
            const whet_gguf_tensor *t = whet_gguf_find_tensor(ga, "blk.1.attn_qkv.weight.lora_b");
            assert_non_null(t);
            assert_int_equal(t->ne[0], 12); /* q, k, v stacked */
        } else {
            assert_non_null(whet_gguf_find_tensor(ga, "blk.1.ffn_gate.weight.lora_a"));
        }
        whet_gguf_close(ga);
        whet_gguf_close(gb);
        whet_gguf_close(gm);
        whet_lora_free(m, lora);
        whet_model_free(m);
    }
}

/* ---- tokenizer metadata -------------------------------------------------------------------- */

static void gguf_tokenizer_roundtrip(void **state)
{
    (void)state;
    /* the last: the demo's tokenizer (datasets/pretrain), on GPT-2's golden texts */
    const char *names[] = {"gpt2", "bytelevel_llama3", "qwen3", "spm_legacy", "spm_metaspace", "pretrain"};
    for (size_t ni = 0; ni < sizeof names / sizeof *names; ni++) {
        char dir[256], golden[256];
        int demo = strcmp(names[ni], "pretrain") == 0;
        snprintf(dir, sizeof dir, demo ? "datasets/pretrain/tokenizer" : "tests/data/tokenizers/%s", names[ni]);
        snprintf(golden, sizeof golden, "tests/data/tokenizers/%s.golden.json", demo ? "gpt2" : names[ni]);
        whet_err e;
        whet_tokenizer *hf = whet_tokenizer_load(dir, &e);
        if (!hf)
            fail_msg("%s", e.msg);
        whet_model_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.vocab = whet_tokenizer_vocab_size(hf);
        cfg.bos_token_id = -1;
        whet_gguf_writer *w = whet_gguf_writer_new();
        if (whet_gguf_add_hf_tokenizer(w, dir, &cfg, &e) != 0)
            fail_msg("%s: %s", names[ni], e.msg);
        unsigned char *bytes;
        size_t size;
        if (whet_gguf_write_memory(w, &bytes, &size, &e))
            fail_msg("%s", e.msg);
        whet_gguf_writer_free(w);
        whet_gguf *g = whet_gguf_parse(bytes, size, names[ni], &e);
        if (!g)
            fail_msg("%s", e.msg);
        whet_tokenizer *gt = whet_tokenizer_from_gguf(g, &e);
        if (!gt)
            fail_msg("%s: %s", names[ni], e.msg);
        if (demo) { /* its tokenizer_config.json's chat template travels */
            const whet_gguf_str *tmpl;
            assert_int_equal(whet_gguf_get_string(g, "tokenizer.chat_template", &tmpl, &e), 0);
            assert_non_null(strstr(tmpl->data, "<|im_start|>"));
        }
        whet_json_doc *doc;
        if (whet_json_parse_file(&doc, golden, NULL, &e))
            fail_msg("%s", e.msg);
        const whet_json *cases = whet_json_get(whet_json_root(doc), "cases");
        size_t differ = 0, skipped = 0, n = whet_json_count(cases);
        for (size_t i = 0; i < n; i++) {
            const whet_json *cs = whet_json_at(cases, i), *text = whet_json_get(cs, "text");
            /* Metaspace "first" adds no ▁ before a text that starts with a
             * space, nor after a special token; GGUF's add_space_prefix
             * (llama.cpp's SPM) does both: the same keys convert_hf_to_gguf.py
             * writes, a difference of the format, not of the export */
            const char *tx = text->u.string.chars;
            if (strcmp(names[ni], "spm_metaspace") == 0 && (tx[0] == ' ' || strstr(tx, "<s>") || strstr(tx, "</s>"))) {
                skipped++;
                continue;
            }
            for (int special = 0; special < 2; special++) {
                int32_t *a = NULL, *b = NULL;
                size_t na = 0, nb = 0;
                if (whet_tokenizer_encode(hf, text->u.string.chars, text->u.string.len, special, &a, &na, &e) ||
                    whet_tokenizer_encode(gt, text->u.string.chars, text->u.string.len, special, &b, &nb, &e))
                    fail_msg("%s", e.msg);
                if (na != nb || (na && memcmp(a, b, na * sizeof *a) != 0)) {
                    if (differ++ < 3)
                        print_message("%s: case %zu (special %d) differs: %zu vs %zu tokens\n", names[ni], i, special,
                                      na, nb);
                }
                free(a);
                free(b);
            }
        }
        print_message("%-17s tokenizer via GGUF keys: %zu of %zu encodings differ (%zu texts skipped)\n", names[ni],
                      differ, 2 * (n - skipped), skipped);
        assert_int_equal(differ, 0);
        whet_json_free(doc);
        whet_tokenizer_free(gt);
        whet_gguf_close(g);
        free(bytes);
        whet_tokenizer_free(hf);
    }
}

/* ---- errors ------------------------------------------------------------------------------------ */

static void expect_config_error(const char *json, const char *needle)
{
    whet_peft_config pc;
    whet_err e;
    if (whet_peft_config_parse(&pc, json, strlen(json), "adapter_config.json", &e) == 0)
        fail_msg("accepted: %s", json);
    if (!strstr(e.msg, needle))
        fail_msg("message \"%s\" lacks \"%s\"", e.msg, needle);
    assert_non_null(strstr(e.msg, "adapter_config.json: line 1"));
}

static void peft_config_refusals(void **state)
{
    (void)state;
    expect_config_error("{\"peft_type\": \"IA3\", \"target_modules\": [\"q_proj\"]}", "\"LORA\"");
    expect_config_error("{\"peft_type\": \"LORA\", \"r\": 8}", "target_modules");
    expect_config_error("{\"peft_type\": \"LORA\", \"target_modules\": [\"q_proj\"], \"use_dora\": true}", "DoRA");
    expect_config_error("{\"peft_type\": \"LORA\", \"target_modules\": [\"q_proj\"], \"bias\": \"all\"}", "bias");
    expect_config_error("{\"peft_type\": \"LORA\", \"target_modules\": [\"q_proj\"], \"r\": 0}", "integer");
    expect_config_error("{\"peft_type\": \"LORA\", \"target_modules\": [\"q_proj\"], \"task_type\": \"SEQ_CLS\"}",
                        "CAUSAL_LM");
    expect_config_error("{\"peft_type\": \"LORA\", \"target_modules\": [\"q_proj\"], \"modules_to_save\": "
                        "[\"lm_head\"]}", "modules_to_save");
    /* the regex form and "all-linear" */
    whet_peft_config pc;
    whet_err e;
    const char *re = "{\"peft_type\": \"LORA\", \"target_modules\": \".*\\\\.(q_proj|v_proj)\"}";
    assert_int_equal(whet_peft_config_parse(&pc, re, strlen(re), "x", &e), 0);
    assert_int_equal(whet_peft_targets_module(&pc, "model.layers.0.self_attn.q_proj", 1, &e), 1);
    assert_int_equal(whet_peft_targets_module(&pc, "model.layers.0.self_attn.k_proj", 1, &e), 0);
    assert_int_equal(whet_peft_targets_module(&pc, "model.layers.0.self_attn.q_proj_x", 1, &e), 0);
    whet_peft_config_free(&pc);
    /* list entries match whole trailing components */
    const char *list = "{\"peft_type\": \"LORA\", \"target_modules\": [\"attn.c_proj\"]}";
    assert_int_equal(whet_peft_config_parse(&pc, list, strlen(list), "x", &e), 0);
    assert_int_equal(whet_peft_targets_module(&pc, "transformer.h.0.attn.c_proj", 1, &e), 1);
    assert_int_equal(whet_peft_targets_module(&pc, "transformer.h.0.mlp.c_proj", 1, &e), 0);
    whet_peft_config_free(&pc);
}

static void copy_dir_file(const char *from_dir, const char *to_dir, const char *name)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "cp '%s/%s' '%s/%s'", from_dir, name, to_dir, name);
    assert_int_equal(system(cmd), 0);
}

/* Adapters that do not fit the model are refused, naming the file and tensor. */
static void peft_adapter_mismatch(void **state)
{
    (void)state;
    whet_model *m = load_golden_model("llama");
    whet_lora *lora = random_adapter(m, 3);
    char dir[256], bad[256];
    path_in_tmp(dir, sizeof dir, "llama", "peft-good");
    whet_err e;
    if (whet_adapter_save_peft(m, lora, dir, NULL, &e))
        fail_msg("%s", e.msg);
    whet_lora_free(m, lora);
    /* the adapter on a model of another shape: qwen3 differs in head_dim */
    whet_model *other = load_golden_model("qwen3");
    whet_lora *l2;
    if (other->cfg.hidden == m->cfg.hidden && other->cfg.head_dim * other->cfg.heads == m->cfg.hidden)
        print_message("(qwen3 and llama share shapes; the shape check is tested below)\n");
    whet_model_free(other);
    /* a config adapting fewer modules than the file holds */
    path_in_tmp(bad, sizeof bad, "llama", "peft-fewer");
    assert_int_equal(whet_make_dir(bad, &e), 0);
    copy_dir_file(dir, bad, WHET_PEFT_WEIGHTS);
    char file[300];
    snprintf(file, sizeof file, "%s/" WHET_PEFT_CONFIG, bad);
    write_text(file, "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"]}");
    assert_int_equal(whet_adapter_load_peft(m, bad, &l2, &e), -1);
    assert_non_null(strstr(e.msg, "do not adapt"));
    assert_null(m->lora);
    /* a rank that disagrees with the tensors */
    write_text(file, "{\"peft_type\": \"LORA\", \"r\": 8, \"lora_alpha\": 8, \"target_modules\": \"all-linear\"}");
    assert_int_equal(whet_adapter_load_peft(m, bad, &l2, &e), -1);
    if (!strstr(e.msg, "has shape [4, 32], expected [8, 32]"))
        fail_msg("%s", e.msg);
    /* a targeted module without tensors */
    path_in_tmp(bad, sizeof bad, "llama", "peft-missing");
    assert_int_equal(whet_make_dir(bad, &e), 0);
    snprintf(file, sizeof file, "%s/" WHET_PEFT_CONFIG, bad);
    write_text(file, "{\"peft_type\": \"LORA\", \"r\": 4, \"target_modules\": [\"q_proj\"]}");
    float zeros[4 * 32] = {0};
    int64_t shape[2] = {4, 32};
    whet_st_entry one = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", WHET_ST_F32, 2, shape,
                         zeros};
    snprintf(file, sizeof file, "%s/" WHET_PEFT_WEIGHTS, bad);
    assert_int_equal(whet_st_write(file, &one, 1, NULL, 0, &e), 0);
    assert_int_equal(whet_adapter_load_peft(m, bad, &l2, &e), -1);
    assert_non_null(strstr(e.msg, "q_proj.lora_B.weight\" not found"));
    /* only a pickle */
    unlink(file);
    snprintf(file, sizeof file, "%s/adapter_model.bin", bad);
    write_text(file, "not really a pickle");
    assert_int_equal(whet_adapter_load_peft(m, bad, &l2, &e), -1);
    assert_non_null(strstr(e.msg, "pickled"));
    /* no directory */
    assert_int_equal(whet_adapter_load_peft(m, "/nonexistent/adapter", &l2, &e), -1);
    assert_non_null(strstr(e.msg, "/nonexistent/adapter"));
    whet_model_free(m);
}

/* test_export adapter MODEL_DIR OUT_DIR: a random PEFT adapter for the model
 * (rank 4, alpha 8, every projection, B not zero), for tests/cli/export.sh. */
static int make_adapter(const char *model_dir, const char *out_dir)
{
    whet_compute *c = whet_compute_create(whet_kernels_best(), 1);
    whet_model *m;
    whet_err e;
    if (!c || whet_model_load(&m, model_dir, c, &e)) {
        fprintf(stderr, "%s\n", c ? e.msg : "no compute context");
        return 1;
    }
    compute = c;
    whet_lora *lora = random_adapter(m, 7);
    int rc = whet_adapter_save_peft(m, lora, out_dir, model_dir, &e);
    if (rc)
        fprintf(stderr, "%s\n", e.msg);
    whet_lora_free(m, lora);
    whet_model_free(m);
    whet_compute_destroy(c);
    return rc ? 1 : 0;
}

/* test_export logits MODEL ADAPTER_DIR|- OUT.f32: the logits [T_TOKENS, V]
 * of logits_of's token sequence ((t·37 + 5) mod V), little-endian float32,
 * for tests/ref/check_llamacpp.mjs to compare llama.cpp against. */
static int dump_logits(const char *model, const char *adapter_dir, const char *out_path)
{
    whet_compute *c = whet_compute_create(whet_kernels_best(), 1);
    whet_model *m;
    whet_lora *lora = NULL;
    whet_err e;
    if (!c || whet_model_load(&m, model, c, &e)) {
        fprintf(stderr, "%s\n", c ? e.msg : "no compute context");
        return 1;
    }
    compute = c;
    if (strcmp(adapter_dir, "-") != 0 && whet_adapter_load_peft(m, adapter_dir, &lora, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    float *logits = logits_of(m);
    int rc = whet_write_file_atomic(out_path, logits, T_TOKENS * m->cfg.vocab * sizeof *logits, &e);
    if (rc)
        fprintf(stderr, "%s\n", e.msg);
    free(logits);
    if (lora)
        whet_lora_free(m, lora);
    whet_model_free(m);
    whet_compute_destroy(c);
    return rc ? 1 : 0;
}

/* test_export tokenizer-gguf TOKENIZER_DIR MODEL OUT.gguf: a random model of
 * tests/data/models/MODEL's shape with the tokenizer's vocabulary size,
 * exported to GGUF F32 with that tokenizer (for tests/ref/check_llamacpp.mjs
 * to compare llama.cpp's tokenization with the goldens). */
static int tokenizer_gguf(const char *tok_dir, const char *model, const char *out_path)
{
    whet_err e;
    whet_tokenizer *t = whet_tokenizer_load(tok_dir, &e);
    whet_model_config cfg;
    char dir[256];
    snprintf(dir, sizeof dir, DATA_DIR "/%s", model);
    if (!t || whet_config_load(&cfg, dir, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    cfg.vocab = whet_tokenizer_vocab_size(t);
    cfg.bos_token_id = -1;
    cfg.n_eos = 0;
    whet_tokenizer_free(t);
    whet_compute *c = whet_compute_create(whet_kernels_best(), 1);
    whet_model *m;
    int no_tok = 0;
    int rc = !c || whet_model_init(&m, &cfg, c, 1, &e) ? -1 : 0;
    if (rc == 0) {
        rc = whet_model_save_gguf(m, tok_dir, out_path, WHET_GGML_F32, &no_tok, &e);
        whet_model_free(m);
    }
    if (rc)
        fprintf(stderr, "%s\n", e.msg);
    whet_compute_destroy(c);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "tokenizer-gguf") == 0)
        return tokenizer_gguf(argv[2], argv[3], argv[4]);
    if (argc == 4 && strcmp(argv[1], "adapter") == 0)
        return make_adapter(argv[2], argv[3]);
    if (argc == 5 && strcmp(argv[1], "logits") == 0)
        return dump_logits(argv[2], argv[3], argv[4]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(peft_roundtrip_bit_exact),
        cmocka_unit_test(peft_gpt2_stacked_c_attn),
        cmocka_unit_test(peft_gpt2_q_v_only),
        cmocka_unit_test(peft_gpt2_shared_a_matches_definition),
        cmocka_unit_test(merged_hf_export_same_logits),
        cmocka_unit_test(hf_export_is_the_source),
        cmocka_unit_test(hf_export_from_gguf),
        cmocka_unit_test(gguf_export_same_logits),
        cmocka_unit_test(gguf_export_matches_converter),
        cmocka_unit_test(gguf_adapter_file),
        cmocka_unit_test(gguf_tokenizer_roundtrip),
        cmocka_unit_test(peft_config_refusals),
        cmocka_unit_test(peft_adapter_mismatch),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
