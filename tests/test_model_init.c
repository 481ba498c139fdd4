/* whet_model_init: random weights as HF's _init_weights gives them.
 * Same seed, same bits (on any thread count); another seed, other weights; norm weights one, biases
 * zero, weight mean ≈ 0 and std within 3% of 0.02 (GPT-2's attention and
 * MLP output projections: 0.02/sqrt(2·layers)); a tied head is the
 * embedding's memory; the forward runs and the mean NLL of random tokens is
 * ln(V) within 0.05 (logits of a 0.02-std head on unit-RMS hidden states are
 * nearly uniform). Checked on a tied Llama, a Qwen3 (q/k norms) and a GPT-2
 * (biases, LayerNorm, learned positions, untied here). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "model/config.h"
#include "model/model.h"
#include "simd/simd.h"
#include "util/compute.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const llama_json =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":512,\"hidden_size\":64,\"num_hidden_layers\":2,"
    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"intermediate_size\":160,\"tie_word_embeddings\":true,"
    "\"rope_theta\":10000.0,\"max_position_embeddings\":256}";
static const char *const qwen3_json =
    "{\"architectures\":[\"Qwen3ForCausalLM\"],\"vocab_size\":300,\"hidden_size\":64,\"num_hidden_layers\":2,"
    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":32,\"intermediate_size\":96,"
    "\"tie_word_embeddings\":false,\"max_position_embeddings\":256}";
static const char *const gpt2_json =
    "{\"architectures\":[\"GPT2LMHeadModel\"],\"vocab_size\":400,\"n_embd\":48,\"n_layer\":2,\"n_head\":4,"
    "\"n_positions\":128,\"tie_word_embeddings\":false}";

static void parse(whet_model_config *cfg, const char *json)
{
    whet_err e;
    if (whet_config_parse(cfg, json, strlen(json), "config.json", &e))
        fail_msg("%s", e.msg);
}

static whet_model *init(const char *json, whet_compute *c, uint64_t seed)
{
    whet_model_config cfg;
    parse(&cfg, json);
    whet_model *m;
    whet_err e;
    if (whet_model_init(&m, &cfg, c, seed, &e))
        fail_msg("%s", e.msg);
    return m;
}

static void assert_all(const float *x, size_t n, float value, const char *what)
{
    if (!x)
        return;
    for (size_t i = 0; i < n; i++)
        if (x[i] != value)
            fail_msg("%s[%zu] = %g, expected %g", what, i, (double)x[i], (double)value);
}

static void assert_normal_std(const float *x, size_t n, double want, const char *what)
{
    if (!x)
        return;
    double sum = 0, sq = 0;
    for (size_t i = 0; i < n; i++)
        sum += x[i], sq += (double)x[i] * x[i];
    double mean = sum / (double)n, std = sqrt(sq / (double)n - mean * mean);
    if (fabs(mean) > 4 * want / sqrt((double)n) + 1e-4 || fabs(std - want) > 0.03 * want)
        fail_msg("%s: mean %g std %g over %zu values, expected 0 and %g", what, mean, std, n, want);
}

static void assert_normal(const float *x, size_t n, const char *what)
{
    assert_normal_std(x, n, 0.02, what);
}

static void check_model(const char *json, whet_compute *c)
{
    /* b on three threads (the pairs are split differently): the same bits */
    whet_compute *c3 = whet_compute_create(c->kernels, 3);
    whet_model *a = init(json, c, 42), *b = init(json, c3, 42), *other = init(json, c, 43);
    whet_compute_destroy(c3);
    const whet_model_config *cfg = &a->cfg;
    size_t floats = whet_model_layout_params(cfg, &(whet_model_params){0}, NULL);
    assert_memory_equal(a->params_memory, b->params_memory, floats * sizeof(float));
    assert_int_not_equal(memcmp(a->params_memory, other->params_memory, floats * sizeof(float)), 0);

    const whet_model_params *p = &a->params;
    size_t L = cfg->layers, C = cfg->hidden, V = cfg->vocab, F = cfg->ffn, HD = cfg->head_dim;
    size_t QD = cfg->heads * HD, KVD = cfg->kv_heads * HD;
    assert_all(p->ln1_w, L * C, 1.0f, "ln1_w");
    assert_all(p->ln2_w, L * C, 1.0f, "ln2_w");
    assert_all(p->lnf_w, C, 1.0f, "lnf_w");
    assert_all(p->q_norm, L * HD, 1.0f, "q_norm");
    assert_all(p->k_norm, L * HD, 1.0f, "k_norm");
    assert_all(p->ln1_b, L * C, 0.0f, "ln1_b");
    assert_all(p->ln2_b, L * C, 0.0f, "ln2_b");
    assert_all(p->lnf_b, C, 0.0f, "lnf_b");
    assert_all(p->bq, L * QD, 0.0f, "bq");
    assert_all(p->bk, L * KVD, 0.0f, "bk");
    assert_all(p->bv, L * KVD, 0.0f, "bv");
    assert_all(p->bo, L * C, 0.0f, "bo");
    assert_all(p->b_up, L * F, 0.0f, "b_up");
    assert_all(p->b_down, L * C, 0.0f, "b_down");
    assert_normal(p->wte, V * C, "wte");
    assert_normal(p->wpe, cfg->max_positions * C, "wpe");
    assert_normal(p->wq, L * QD * C, "wq");
    assert_normal(p->wk, L * KVD * C, "wk");
    assert_normal(p->wv, L * KVD * C, "wv");
    /* GPT-2 scales its residual projections by 1/sqrt(2L) */
    double resid = cfg->info->arch == WHET_ARCH_GPT2 ? 0.02 / sqrt(2.0 * (double)L) : 0.02;
    assert_normal_std(p->wo, L * C * QD, resid, "wo");
    assert_normal(p->w_gate, L * F * C, "w_gate");
    assert_normal(p->w_up, L * F * C, "w_up");
    assert_normal_std(p->w_down, L * C * F, resid, "w_down");
    if (cfg->tied)
        assert_ptr_equal(p->lm_head, p->wte);
    else {
        assert_ptr_not_equal(p->lm_head, p->wte);
        assert_normal(p->lm_head, V * C, "lm_head");
        /* separate streams: the head is not a copy of the embedding */
        assert_int_not_equal(memcmp(p->lm_head, p->wte, V * C * sizeof(float)), 0);
    }

    enum { B = 2, T = 48 };
    int32_t tokens[B * T], targets[B * T];
    uint64_t s = 7;
    for (size_t i = 0; i < B * T; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tokens[i] = (int32_t)((s >> 33) % V);
    }
    for (size_t i = 0; i < B * T; i++)
        targets[i] = (i + 1) % T ? tokens[i + 1] : -1;
    whet_err e;
    whet_acts *acts = whet_acts_create(a, B, T, 0, &e);
    assert_non_null(acts);
    double nll = 0;
    if (whet_model_forward(a, acts, tokens, B, T, &e) || whet_model_nll(a, acts, targets, NULL, &nll, &e))
        fail_msg("%s", e.msg);
    if (!(fabs(nll - log((double)V)) < 0.05))
        fail_msg("mean NLL %g, expected ln(%zu) = %g", nll, V, log((double)V));
    whet_acts_free(acts);
    whet_model_free(a), whet_model_free(b), whet_model_free(other);
}

static void llama_tied(void **state)
{
    (void)state;
    whet_compute *c = whet_compute_create(whet_kernels_best(), 1);
    check_model(llama_json, c);
    whet_compute_destroy(c);
}

static void qwen3_untied(void **state)
{
    (void)state;
    whet_compute *c = whet_compute_create(whet_kernels_best(), 1);
    check_model(qwen3_json, c);
    whet_compute_destroy(c);
}

static void gpt2_biases(void **state)
{
    (void)state;
    whet_compute *c = whet_compute_create(whet_kernels_best(), 1);
    check_model(gpt2_json, c);
    whet_compute_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(llama_tied),
        cmocka_unit_test(qwen3_untied),
        cmocka_unit_test(gpt2_biases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
