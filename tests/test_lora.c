/* LoRA adapters and the bf16 base behind whet_linear_forward/backward.
 *
 *  - targets: every accepted spelling, errors that name the bad item;
 *  - creation: A within PEFT's Kaiming-uniform bound with its mean and
 *    variance, B zero, the scale (plain and rsLoRA), same seed same bits,
 *    A of (layer, target) independent of the other targets, bad options
 *    refused;
 *  - B = 0 gives the base output exactly;
 *  - dA, dB and din against central finite differences on odd shapes (the
 *    loss Σ out·R is linear in each of them, so differences are exact up to
 *    rounding), without and with dropout (the regenerated mask);
 *  - a PyTorch golden (tests/ref/make_lora_goldens.py): y, dA, dB, dx of a
 *    k_proj with bias, plain and rsLoRA;
 *  - merging: the merged base gives the adapter's output;
 *  - 1 and 3 threads give the same bits (dropout on), and calls larger than
 *    the scratch (run in blocks) give the same forward bits;
 *  - without dropout, the adapter's products run inside the base path's pool
 *    jobs give the general path's bits, on 1 and 3 threads;
 *  - whet_linear_forward_set/_backward_set (q, k, v; gate, up) give the
 *    one-by-one calls' bits;
 *  - the bf16 base: outputs and input gradients within 1e-2 of fp32, the
 *    fp32 linear weights actually released;
 *  - the whole model (forward.c routes every projection and the LM head
 *    through here): an adapter with B ≠ 0 gives the merged model's logits
 *    (1e-5), and the bf16 base gives fp32's logits within 1e-2, NLL 1e-3. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "model/config.h"
#include "model/lora.h"
#include "model/model.h"
#include "simd/simd.h"
#include "util/compute.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* odd widths: C 35, QD 30, KVD 10, F 37; biases on */
static const char *const odd_llama_json =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":97,\"hidden_size\":35,\"num_hidden_layers\":2,\"head_dim\":10,"
    "\"num_attention_heads\":3,\"num_key_value_heads\":1,\"intermediate_size\":37,\"tie_word_embeddings\":false,"
    "\"attention_bias\":true,\"mlp_bias\":true,\"max_position_embeddings\":64}";
static const char *const llama_json =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":512,\"hidden_size\":64,\"num_hidden_layers\":2,"
    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"intermediate_size\":160,\"tie_word_embeddings\":true,"
    "\"max_position_embeddings\":256}";
static const char *const qwen2_json =
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"vocab_size\":50,\"hidden_size\":8,\"num_hidden_layers\":2,"
    "\"num_attention_heads\":2,\"num_key_value_heads\":1,\"intermediate_size\":12,\"tie_word_embeddings\":false,"
    "\"max_position_embeddings\":64}";
static const char *const gpt2_json =
    "{\"architectures\":[\"GPT2LMHeadModel\"],\"vocab_size\":60,\"n_embd\":16,\"n_layer\":2,\"n_head\":2,"
    "\"n_positions\":32,\"tie_word_embeddings\":false}";

static whet_model *init_model(const char *json, whet_compute *c, uint64_t seed)
{
    whet_model_config cfg;
    whet_err e;
    if (whet_config_parse(&cfg, json, strlen(json), "config.json", &e))
        fail_msg("%s", e.msg);
    whet_model *m;
    if (whet_model_init(&m, &cfg, c, seed, &e))
        fail_msg("%s", e.msg);
    return m;
}

static whet_lora *create(whet_model *m, size_t rank, float alpha, float dropout, unsigned targets, uint64_t seed)
{
    whet_lora_options o = {.rank = rank, .alpha = alpha, .dropout = dropout, .targets = targets, .seed = seed};
    whet_err e;
    whet_lora *lora = whet_lora_create(m, &o, &e);
    if (!lora)
        fail_msg("%s", e.msg);
    return lora;
}

static uint64_t rng_state = 88172645463325252ull;

static float frand(void) /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *random_floats(size_t n, float scale)
{
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = frand() * scale;
    return x;
}

static void randomize_B(whet_lora *lora, float scale)
{
    for (int id = 0; id < WHET_LIN_COUNT; id++)
        if (lora->B[id])
            for (size_t i = 0; i < lora->layers * lora->out[id] * lora->opt.rank; i++)
                lora->B[id][i] = frand() * scale;
}

/* Activations with only the adapter's scratch, every layer kept, as
 * forward.c lays it out for training. */
typedef struct lora_acts {
    whet_acts a;
} lora_acts;

static void acts_init(lora_acts *la, const whet_model *m, size_t rows)
{
    memset(la, 0, sizeof *la);
    la->a.B = rows, la->a.T = 1, la->a.keep_layers = 1;
    la->a.lora = malloc(m->cfg.layers * whet_lora_acts_floats(m, rows) * sizeof(float));
    assert_non_null(la->a.lora);
}

static double loss_of(const float *out, const float *R, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)out[i] * R[i];
    return s;
}

/* ---- targets ------------------------------------------------------------------- */

static void parse_targets(void **state)
{
    (void)state;
    const struct {
        const char *list;
        unsigned mask;
    } ok[] = {
        {"q,v", (1u << WHET_LIN_Q) | (1u << WHET_LIN_V)},
        {"q_proj, k_proj ,v_proj,o_proj", 0xfu},
        {"gate,up,down", (1u << WHET_LIN_GATE) | (1u << WHET_LIN_UP) | (1u << WHET_LIN_DOWN)},
        {"all", WHET_LORA_ALL_TARGETS},
        {"c_attn", 0x7u},
        {"c_attn,attn.c_proj,c_fc,mlp.c_proj", 0x7u | (1u << WHET_LIN_O) | (1u << WHET_LIN_UP) | (1u << WHET_LIN_DOWN)},
        {"c_proj", (1u << WHET_LIN_O) | (1u << WHET_LIN_DOWN)},
        {"down_proj", 1u << WHET_LIN_DOWN},
    };
    whet_err e;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        unsigned t = 0;
        if (whet_lora_parse_targets(ok[i].list, &t, &e))
            fail_msg("\"%s\": %s", ok[i].list, e.msg);
        if (t != ok[i].mask)
            fail_msg("\"%s\": mask 0x%x, expected 0x%x", ok[i].list, t, ok[i].mask);
    }
    unsigned t;
    assert_int_equal(whet_lora_parse_targets("q,kk,v", &t, &e), -1);
    assert_non_null(strstr(e.msg, "'kk'"));
    assert_non_null(strstr(e.msg, "item 2"));
    assert_non_null(strstr(e.msg, "gate_proj")); /* the valid names are listed */
    assert_int_equal(whet_lora_parse_targets("q,,v", &t, &e), -1);
    assert_non_null(strstr(e.msg, "empty"));
    assert_int_equal(whet_lora_parse_targets("", &t, &e), -1);
    assert_int_equal(whet_lora_parse_targets("Q", &t, &e), -1);
}

/* ---- creation -------------------------------------------------------------------- */

static void init_statistics(void **state)
{
    (void)state;
    whet_compute *c = whet_compute_create(whet_kernels_from_env(), 1);
    whet_model *m = init_model(llama_json, c, 1);
    whet_lora *lora = create(m, 8, 16.0f, 0.0f, WHET_LORA_ALL_TARGETS, 7);
    assert_ptr_equal(m->lora, lora);
    assert_true(fabsf(lora->scale - 2.0f) < 1e-7f);
    size_t expect_floats = 0;
    for (int id = 0; id < WHET_LIN_COUNT; id++) {
        size_t in = lora->in[id], out = lora->out[id], n = lora->layers * 8 * in;
        expect_floats += lora->layers * 8 * (in + out);
        double bound = 1.0 / sqrt((double)in), sum = 0, sq = 0;
        for (size_t i = 0; i < n; i++) {
            double v = lora->A[id][i];
            if (!(fabs(v) <= bound))
                fail_msg("%s A[%zu] = %g outside ±%g", whet_linear_name((whet_linear_id)id), i, v, bound);
            sum += v, sq += v * v;
        }
        double mean = sum / (double)n, var = sq / (double)n - mean * mean, want = bound * bound / 3;
        if (fabs(mean) > 4 * sqrt(want / (double)n))
            fail_msg("%s: mean of A %g", whet_linear_name((whet_linear_id)id), mean);
        if (fabs(var / want - 1) > 0.12)
            fail_msg("%s: variance of A %g, expected %g", whet_linear_name((whet_linear_id)id), var, want);
        for (size_t i = 0; i < lora->layers * out * 8; i++)
            assert_true(lora->B[id][i] == 0.0f);
    }
    assert_int_equal(lora->floats, expect_floats);

    /* the same seed: the same bits, on another model of the same shape; only
     * q targeted: the same A for q; another seed: another A */
    whet_model *m2 = init_model(llama_json, c, 2);
    whet_lora *same = create(m2, 8, 16.0f, 0.0f, WHET_LORA_ALL_TARGETS, 7);
    for (int id = 0; id < WHET_LIN_COUNT; id++)
        assert_memory_equal(same->A[id], lora->A[id], lora->layers * 8 * lora->in[id] * sizeof(float));
    whet_lora_free(m2, same);
    assert_null(m2->lora);
    whet_lora *only_q = create(m2, 8, 16.0f, 0.0f, 1u << WHET_LIN_Q, 7);
    assert_null(only_q->A[WHET_LIN_K]);
    assert_memory_equal(only_q->A[WHET_LIN_Q], lora->A[WHET_LIN_Q], lora->layers * 8 * lora->in[0] * sizeof(float));
    whet_lora_free(m2, only_q);
    whet_lora *other = create(m2, 8, 16.0f, 0.0f, 1u << WHET_LIN_Q, 8);
    assert_memory_not_equal(other->A[WHET_LIN_Q], lora->A[WHET_LIN_Q], 8 * lora->in[0] * sizeof(float));
    whet_lora_free(m2, other);

    /* rsLoRA's scale */
    whet_lora_options o = {.rank = 8, .alpha = 16.0f, .rslora = 1, .targets = 1u, .seed = 1};
    whet_err e;
    whet_lora *rs = whet_lora_create(m2, &o, &e);
    assert_non_null(rs);
    assert_true(fabsf(rs->scale - 16.0f / sqrtf(8.0f)) < 1e-6f);
    /* a second adapter on the same model is refused */
    assert_null(whet_lora_create(m2, &o, &e));
    assert_non_null(strstr(e.msg, "already"));
    whet_lora_free(m2, rs);

    /* bad options */
    o.rslora = 0;
    o.rank = 0;
    assert_null(whet_lora_create(m2, &o, &e));
    assert_non_null(strstr(e.msg, "rank"));
    o.rank = 4, o.dropout = 1.0f;
    assert_null(whet_lora_create(m2, &o, &e));
    assert_non_null(strstr(e.msg, "dropout"));
    o.dropout = 0.0f, o.targets = 0;
    assert_null(whet_lora_create(m2, &o, &e));
    whet_model *gpt2 = init_model(gpt2_json, c, 1);
    o.targets = 1u << WHET_LIN_GATE;
    assert_null(whet_lora_create(gpt2, &o, &e));
    assert_non_null(strstr(e.msg, "gate_proj"));
    assert_null(gpt2->lora);
    whet_model_free(gpt2);

    whet_lora_free(m, lora);
    whet_model_free(m);
    whet_model_free(m2);
    whet_compute_destroy(c);
}

/* ---- B = 0 ------------------------------------------------------------------------ */

static void zero_B_is_the_base(void **state)
{
    (void)state;
    whet_compute *c = whet_compute_create(whet_kernels_from_env(), 2);
    whet_model *m = init_model(odd_llama_json, c, 3);
    whet_lora *lora = create(m, 4, 8.0f, 0.0f, WHET_LORA_ALL_TARGETS, 5);
    const size_t rows = 11;
    for (int id = 0; id < WHET_LIN_COUNT; id++) {
        size_t K = lora->in[id], N = lora->out[id];
        float *x = random_floats(rows * K, 1.0f), *y0 = malloc(rows * N * 4), *y1 = malloc(rows * N * 4);
        m->lora = NULL;
        whet_linear_forward(m, NULL, 1, (whet_linear_id)id, y0, x, rows);
        m->lora = lora;
        whet_linear_forward(m, NULL, 1, (whet_linear_id)id, y1, x, rows);
        for (size_t i = 0; i < rows * N; i++)
            if (y0[i] != y1[i])
                fail_msg("%s: out[%zu] %g with B = 0, %g without adapter", whet_linear_name((whet_linear_id)id), i,
                         (double)y1[i], (double)y0[i]);
        free(x), free(y0), free(y1);
    }
    whet_lora_free(m, lora);
    whet_model_free(m);
    whet_compute_destroy(c);
}

/* ---- finite differences ----------------------------------------------------------- */

/* One projection's analytical gradients against central differences of
 * Σ out·R, for a sample of A's, B's and x's elements. */
static void check_fd(whet_model *m, whet_lora *lora, whet_linear_id id, size_t l, size_t rows)
{
    const char *name = whet_linear_name(id);
    size_t K = lora->in[id], N = lora->out[id], r = lora->opt.rank;
    float *x = random_floats(rows * K, 1.0f), *R = random_floats(rows * N, 1.0f);
    float *out = malloc(rows * N * sizeof *out), *din = malloc(rows * K * sizeof *din);
    float *din2 = malloc(rows * K * sizeof *din2);
    lora_acts la;
    acts_init(&la, m, rows);
    whet_lora_zero_grads(lora);
    whet_linear_forward(m, &la.a, l, id, out, x, rows);
    whet_linear_backward(m, &la.a, l, id, din, 0, R, x, rows, NULL);
    float *dA = lora->dA[id] + l * r * K, *dB = lora->dB[id] + l * N * r;
    float *dA1 = malloc(r * K * 4), *dB1 = malloc(N * r * 4);
    memcpy(dA1, dA, r * K * 4), memcpy(dB1, dB, N * r * 4);

    /* without saved activations (xs recomputed): the same bits */
    whet_lora_zero_grads(lora);
    whet_linear_backward(m, NULL, l, id, din2, 0, R, x, rows, NULL);
    assert_memory_equal(din2, din, rows * K * 4);
    assert_memory_equal(dA, dA1, r * K * 4);
    assert_memory_equal(dB, dB1, N * r * 4);

    struct {
        const char *what;
        float *param, *grad;
        size_t n;
    } sets[] = {{"A", lora->A[id] + l * r * K, dA1, r * K}, {"B", lora->B[id] + l * N * r, dB1, N * r},
                {"x", x, din, rows * K}};
    const float eps = 1e-2f;
    for (size_t s = 0; s < 3; s++) {
        for (size_t k = 0; k < 7; k++) {
            size_t i = (k * 7919 + s * 31) % sets[s].n;
            float keep = sets[s].param[i];
            sets[s].param[i] = keep + eps;
            whet_linear_forward(m, NULL, l, id, out, x, rows);
            double up = loss_of(out, R, rows * N);
            sets[s].param[i] = keep - eps;
            whet_linear_forward(m, NULL, l, id, out, x, rows);
            double down = loss_of(out, R, rows * N);
            sets[s].param[i] = keep;
            double fd = (up - down) / (2.0 * eps), an = sets[s].grad[i];
            if (fabs(fd - an) > 1e-4 + 1e-3 * fabs(fd))
                fail_msg("%s (layer %zu, dropout %s): d%s[%zu] = %.7g, finite difference %.7g", name, l,
                         lora->training ? "on" : "off", sets[s].what, i, an, fd);
        }
    }
    free(x), free(R), free(out), free(din), free(din2), free(dA1), free(dB1), free(la.a.lora);
}

static void gradients_finite_differences(void **state)
{
    (void)state;
    whet_compute *c = whet_compute_create(whet_kernels_from_env(), 2);
    whet_model *m = init_model(odd_llama_json, c, 11);
    whet_lora *lora = create(m, 3, 5.0f, 0.3f, WHET_LORA_ALL_TARGETS, 13);
    randomize_B(lora, 0.2f);
    whet_err e;
    assert_int_equal(whet_lora_alloc_grads(lora, &e), 0);
    for (int training = 0; training <= 1; training++) {
        lora->training = training;
        lora->step = 4;
        for (int id = 0; id < WHET_LIN_COUNT; id++)
            check_fd(m, lora, (whet_linear_id)id, (size_t)id % 2, 13);
    }
    whet_lora_free(m, lora);
    whet_model_free(m);
    whet_compute_destroy(c);
}

/* Dropout: the same step the same output, another step another; in eval
 * mode none; about p of x·Aᵀ's inputs dropped (seen through A = one-hot). */
static void dropout_stream(void **state)
{
    (void)state;
    whet_compute *c = whet_compute_create(whet_kernels_from_env(), 2);
    whet_model *m = init_model(odd_llama_json, c, 11);
    const float p = 0.25f;
    whet_lora *lora = create(m, 1, 1.0f, p, 1u << WHET_LIN_Q, 3);
    size_t K = lora->in[0], N = lora->out[0], rows = 400;
    /* A = e_0, B = e_0: out[:, 0] gains dropout(x)[:, 0] */
    memset(lora->A[0], 0, K * 4), lora->A[0][0] = 1.0f;
    memset(lora->B[0], 0, N * 4), lora->B[0][0] = 1.0f;
    float *x = malloc(rows * K * 4), *y0 = malloc(rows * N * 4), *y1 = malloc(rows * N * 4), *y2 = malloc(rows * N * 4);
    for (size_t i = 0; i < rows * K; i++)
        x[i] = 1.0f;
    whet_linear_forward(m, NULL, 0, WHET_LIN_Q, y0, x, rows); /* eval: x kept */
    lora->training = 1, lora->step = 1;
    whet_linear_forward(m, NULL, 0, WHET_LIN_Q, y1, x, rows);
    size_t dropped = 0;
    for (size_t i = 0; i < rows; i++) {
        float gain = y1[i * N] - (y0[i * N] - 1.0f);
        if (fabsf(gain) < 1e-5f)
            dropped++;
        else if (fabsf(gain - 1.0f / (1.0f - p)) > 1e-5f)
            fail_msg("row %zu: kept value %g, expected %g", i, (double)gain, 1.0 / (1.0 - p));
    }
    if (dropped < rows * p * 0.6 || dropped > rows * p * 1.4)
        fail_msg("%zu of %zu dropped at p = %g", dropped, rows, (double)p);
    whet_linear_forward(m, NULL, 0, WHET_LIN_Q, y2, x, rows);
    assert_memory_equal(y1, y2, rows * N * 4);
    lora->step = 2;
    whet_linear_forward(m, NULL, 0, WHET_LIN_Q, y2, x, rows);
    assert_memory_not_equal(y1, y2, rows * N * 4);
    free(x), free(y0), free(y1), free(y2);
    whet_lora_free(m, lora);
    whet_model_free(m);
    whet_compute_destroy(c);
}

/* ---- PyTorch golden ---------------------------------------------------------------- */

typedef struct golden {
    char name[32];
    size_t n;
    float *v;
} golden;

static size_t read_goldens(golden *g, size_t cap)
{
    FILE *f = fopen("tests/data/lora/linear.txt", "r");
    if (!f)
        fail_msg("tests/data/lora/linear.txt: cannot open (run from the source tree)");
    size_t n = 0;
    while (n < cap && fscanf(f, "%31s %zu", g[n].name, &g[n].n) == 2) {
        g[n].v = malloc(g[n].n * sizeof(float));
        for (size_t i = 0; i < g[n].n; i++)
            if (fscanf(f, "%f", &g[n].v[i]) != 1)
                fail_msg("tests/data/lora/linear.txt: %s: value %zu missing", g[n].name, i);
        n++;
    }
    fclose(f);
    return n;
}

static const float *find(golden *g, size_t n, const char *name, size_t count)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(g[i].name, name) == 0) {
            assert_int_equal(g[i].n, count);
            return g[i].v;
        }
    fail_msg("tests/data/lora/linear.txt: no %s", name);
    return NULL;
}

/* |got − want| ≤ 1e-5 · max |want| over the tensor, element by element */
static void close_to(const float *got, const float *want, size_t n, const char *what)
{
    float most = 0;
    for (size_t i = 0; i < n; i++)
        most = fabsf(want[i]) > most ? fabsf(want[i]) : most;
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(got[i] - want[i]) <= 1e-5f * most))
            fail_msg("%s[%zu] = %.8g, PyTorch %.8g", what, i, (double)got[i], (double)want[i]);
}

static void pytorch_golden(void **state)
{
    (void)state;
    enum { IN = 8, OUT = 4, ROWS = 5, RANK = 3 };
    golden g[32];
    size_t ng = read_goldens(g, 32);
    whet_compute *c = whet_compute_create(whet_kernels_from_env(), 1);
    whet_model *m = init_model(qwen2_json, c, 1);
    const size_t l = 1;
    memcpy(m->params.wk + l * OUT * IN, find(g, ng, "W", OUT * IN), OUT * IN * 4);
    memcpy(m->params.bk + l * OUT, find(g, ng, "b", OUT), OUT * 4);
    const float *x = find(g, ng, "x", ROWS * IN), *R = find(g, ng, "R", ROWS * OUT);
    for (int rs = 0; rs <= 1; rs++) {
        whet_lora_options o = {.rank = RANK, .alpha = 6.0f, .rslora = rs, .targets = 1u << WHET_LIN_K, .seed = 1};
        whet_err e;
        whet_lora *lora = whet_lora_create(m, &o, &e);
        assert_non_null(lora);
        assert_int_equal(lora->in[WHET_LIN_K], IN);
        assert_int_equal(lora->out[WHET_LIN_K], OUT);
        assert_int_equal(whet_lora_alloc_grads(lora, &e), 0);
        memcpy(lora->A[WHET_LIN_K] + l * RANK * IN, find(g, ng, "A", RANK * IN), RANK * IN * 4);
        memcpy(lora->B[WHET_LIN_K] + l * OUT * RANK, find(g, ng, "B", OUT * RANK), OUT * RANK * 4);
        float y[ROWS * OUT], dx[ROWS * IN];
        lora_acts la;
        acts_init(&la, m, ROWS);
        whet_linear_forward(m, &la.a, l, WHET_LIN_K, y, x, ROWS);
        whet_linear_backward(m, &la.a, l, WHET_LIN_K, dx, 0, R, x, ROWS, NULL);
        char name[32];
        const char *tag = rs ? "rslora" : "plain";
        snprintf(name, sizeof name, "%s.y", tag);
        close_to(y, find(g, ng, name, ROWS * OUT), ROWS * OUT, name);
        snprintf(name, sizeof name, "%s.dA", tag);
        close_to(lora->dA[WHET_LIN_K] + l * RANK * IN, find(g, ng, name, RANK * IN), RANK * IN, name);
        snprintf(name, sizeof name, "%s.dB", tag);
        close_to(lora->dB[WHET_LIN_K] + l * OUT * RANK, find(g, ng, name, OUT * RANK), OUT * RANK, name);
        snprintf(name, sizeof name, "%s.dx", tag);
        close_to(dx, find(g, ng, name, ROWS * IN), ROWS * IN, name);
        free(la.a.lora);
        whet_lora_free(m, lora);
    }
    for (size_t i = 0; i < ng; i++)
        free(g[i].v);
    whet_model_free(m);
    whet_compute_destroy(c);
}

/* ---- merging ----------------------------------------------------------------------- */

static void merge_matches_adapter(void **state)
{
    (void)state;
    whet_compute *c = whet_compute_create(whet_kernels_from_env(), 2);
    whet_model *m = init_model(odd_llama_json, c, 21);
    whet_lora *lora = create(m, 5, 10.0f, 0.1f, WHET_LORA_ALL_TARGETS, 22);
    randomize_B(lora, 0.3f);
    const size_t rows = 9;
    float *x[WHET_LIN_COUNT], *y[WHET_LIN_COUNT][2];
    for (int id = 0; id < WHET_LIN_COUNT; id++) {
        x[id] = random_floats(rows * lora->in[id], 1.0f);
        for (size_t l = 0; l < 2; l++) {
            y[id][l] = malloc(rows * lora->out[id] * 4);
            whet_linear_forward(m, NULL, l, (whet_linear_id)id, y[id][l], x[id], rows);
        }
    }
    whet_err e;
    assert_int_equal(whet_lora_merge(m, lora, &e), 0);
    assert_null(m->lora);
    for (int id = 0; id < WHET_LIN_COUNT; id++) {
        size_t N = lora->out[id];
        float *merged = malloc(rows * N * 4);
        for (size_t l = 0; l < 2; l++) {
            whet_linear_forward(m, NULL, l, (whet_linear_id)id, merged, x[id], rows);
            for (size_t i = 0; i < rows * N; i++)
                if (!(fabsf(merged[i] - y[id][l][i]) <= 1e-5f * fmaxf(1.0f, fabsf(y[id][l][i]))))
                    fail_msg("%s layer %zu: merged %g, adapter %g", whet_linear_name((whet_linear_id)id), l,
                             (double)merged[i], (double)y[id][l][i]);
            free(y[id][l]);
        }
        free(merged);
        free(x[id]);
    }
    whet_lora_free(m, lora);
    whet_model_free(m);
    whet_compute_destroy(c);
}

/* ---- threads and blocks ------------------------------------------------------------- */

typedef struct run {
    float *out, *din, *grads;
} run;

/* every dA, then dB, of every target, in order */
static void copy_grads(const whet_lora *lora, float *grads)
{
    size_t o = 0;
    for (int id = 0; id < WHET_LIN_COUNT; id++) {
        size_t na = lora->layers * lora->opt.rank * lora->in[id], nb = lora->layers * lora->out[id] * lora->opt.rank;
        memcpy(grads + o, lora->dA[id], na * 4);
        memcpy(grads + o + na, lora->dB[id], nb * 4);
        o += na + nb;
    }
}

static run run_all(whet_model *m, whet_lora *lora, size_t rows, int saved)
{
    size_t floats = 0;
    for (int id = 0; id < WHET_LIN_COUNT; id++)
        floats += rows * (lora->in[id] + lora->out[id]);
    run r = {calloc(floats, 4), calloc(floats, 4), NULL};
    size_t grad_floats = 0;
    for (int id = 0; id < WHET_LIN_COUNT; id++)
        grad_floats += lora->layers * lora->opt.rank * (lora->in[id] + lora->out[id]);
    r.grads = malloc(grad_floats * 4);
    whet_lora_zero_grads(lora);
    rng_state = 99;
    lora_acts la;
    acts_init(&la, m, rows);
    size_t o = 0;
    for (int id = 0; id < WHET_LIN_COUNT; id++) {
        size_t K = lora->in[id], N = lora->out[id];
        float *x = random_floats(rows * K, 1.0f), *R = random_floats(rows * N, 1.0f);
        for (size_t l = 0; l < lora->layers; l++) {
            whet_linear_forward(m, saved ? &la.a : NULL, l, (whet_linear_id)id, r.out + o, x, rows);
            whet_linear_backward(m, saved ? &la.a : NULL, l, (whet_linear_id)id, r.din + o, l > 0, R, x, rows, NULL);
        }
        o += rows * (K + N);
        free(x), free(R);
    }
    copy_grads(lora, r.grads);
    free(la.a.lora);
    return r;
}

/* An adapter in training with random B ≠ 0 and zeroed gradients */
static whet_lora *training_lora(whet_model *m, size_t rank, float alpha, float dropout, uint64_t seed)
{
    whet_lora *lora = create(m, rank, alpha, dropout, WHET_LORA_ALL_TARGETS, seed);
    randomize_B(lora, 0.2f);
    whet_err e;
    assert_int_equal(whet_lora_alloc_grads(lora, &e), 0);
    lora->training = 1;
    return lora;
}

static void free_run(run *r)
{
    free(r->out), free(r->din), free(r->grads);
}

static void thread_invariance(void **state)
{
    (void)state;
    whet_compute *c1 = whet_compute_create(whet_kernels_from_env(), 1);
    whet_compute *c3 = whet_compute_create(whet_kernels_from_env(), 3);
    whet_model *m = init_model(odd_llama_json, c1, 31);
    whet_lora *lora = training_lora(m, 6, 12.0f, 0.2f, 32);
    whet_err e;
    lora->step = 17;
    const size_t rows = 203;
    size_t floats = 0, grad_floats = 0;
    for (int id = 0; id < WHET_LIN_COUNT; id++) {
        floats += rows * (lora->in[id] + lora->out[id]);
        grad_floats += lora->layers * lora->opt.rank * (lora->in[id] + lora->out[id]);
    }
    run one = run_all(m, lora, rows, 1);
    m->compute = c3;
    run three = run_all(m, lora, rows, 1);
    assert_memory_equal(one.out, three.out, floats * 4);
    assert_memory_equal(one.din, three.din, floats * 4);
    assert_memory_equal(one.grads, three.grads, grad_floats * 4);
    free_run(&three);

    /* more rows than the scratch holds: blocks of it, the forward's bits kept
     * (rows are independent), the gradients' sums split per block */
    const size_t big = 2 * lora->work_rows + 37;
    m->compute = c1;
    run blocks = run_all(m, lora, big, 0);
    assert_int_equal(whet_lora_reserve(lora, big, &e), 0);
    run whole = run_all(m, lora, big, 1);
    size_t big_floats = floats / rows * big;
    assert_memory_equal(blocks.out, whole.out, big_floats * 4);
    for (size_t i = 0; i < big_floats; i++)
        if (!(fabsf(blocks.din[i] - whole.din[i]) <= 1e-5f * fmaxf(1.0f, fabsf(whole.din[i]))))
            fail_msg("din[%zu]: %g in blocks, %g whole", i, (double)blocks.din[i], (double)whole.din[i]);
    for (size_t i = 0; i < grad_floats; i++)
        if (!(fabsf(blocks.grads[i] - whole.grads[i]) <= 1e-4f * fmaxf(1.0f, fabsf(whole.grads[i]))))
            fail_msg("grad[%zu]: %g in blocks, %g whole", i, (double)blocks.grads[i], (double)whole.grads[i]);
    free_run(&blocks), free_run(&whole), free_run(&one);
    whet_lora_free(m, lora);
    whet_model_free(m);
    whet_compute_destroy(c1);
    whet_compute_destroy(c3);
}

/* Without dropout, with the forward's xs kept and all rows in one block,
 * whet_linear_forward/backward run the adapter's products inside the base
 * path's pool jobs (whet_lora_forward_begin, _backward_begin); without the
 * kept xs the backward takes the general path (whet_lora_backward). Both,
 * and 1 or 3 threads, give the same bits. */
static void jobs_path_matches_general_path(void **state)
{
    (void)state;
    whet_compute *c1 = whet_compute_create(whet_kernels_from_env(), 1);
    whet_compute *c3 = whet_compute_create(whet_kernels_from_env(), 3);
    whet_model *m = init_model(odd_llama_json, c1, 41);
    whet_lora *lora = training_lora(m, 5, 10.0f, 0.0f, 42);
    const size_t rows = 157;
    size_t floats = 0, grad_floats = 0;
    for (int id = 0; id < WHET_LIN_COUNT; id++) {
        floats += rows * (lora->in[id] + lora->out[id]);
        grad_floats += lora->layers * lora->opt.rank * (lora->in[id] + lora->out[id]);
    }
    run general = run_all(m, lora, rows, 0);
    run jobs = run_all(m, lora, rows, 1);
    m->compute = c3;
    run jobs3 = run_all(m, lora, rows, 1);
    const run *got[2] = {&jobs, &jobs3};
    for (int i = 0; i < 2; i++) {
        assert_memory_equal(got[i]->out, general.out, floats * 4);
        assert_memory_equal(got[i]->din, general.din, floats * 4);
        assert_memory_equal(got[i]->grads, general.grads, grad_floats * 4);
    }
    /* the gradients are not all zero: the test compares something */
    size_t nonzero = 0;
    for (size_t i = 0; i < grad_floats; i++)
        nonzero += general.grads[i] != 0.0f;
    assert_true(nonzero > grad_floats / 2);
    free_run(&general), free_run(&jobs), free_run(&jobs3);
    m->compute = c1;
    whet_lora_free(m, lora);
    whet_model_free(m);
    whet_compute_destroy(c1);
    whet_compute_destroy(c3);
}

/* whet_linear_forward_set and _backward_set on q, k, v (and gate, up) give
 * the bits of the one-by-one calls: outputs, din and the adapter's
 * gradients, with and without dropout, with and without the kept xs, on 1
 * and 3 threads. */
typedef struct set_run {
    float *out[WHET_LIN_COUNT], *din, *grads;
} set_run;

static set_run run_set(whet_model *m, whet_lora *lora, const whet_linear_id *ids, size_t n, const float *x,
                       float *const *R, size_t rows, int saved, int as_set)
{
    size_t K = lora->in[ids[0]], grad_floats = 0;
    set_run r = {{0}, calloc(rows * K, 4), NULL};
    for (size_t i = 0; i < n; i++)
        r.out[i] = calloc(rows * lora->out[ids[i]], 4);
    for (int id = 0; id < WHET_LIN_COUNT; id++)
        grad_floats += lora->layers * lora->opt.rank * (lora->in[id] + lora->out[id]);
    r.grads = malloc(grad_floats * 4);
    whet_lora_zero_grads(lora);
    lora_acts la;
    acts_init(&la, m, rows);
    whet_acts *a = saved ? &la.a : NULL;
    const float *douts[WHET_LIN_COUNT];
    for (size_t i = 0; i < n; i++)
        douts[i] = R[i];
    for (size_t l = 0; l < lora->layers; l++) {
        if (as_set) {
            whet_linear_forward_set(m, a, l, ids, r.out, n, x, rows);
            whet_linear_backward_set(m, a, l, ids, douts, n, r.din, l > 0, x, rows, NULL);
        } else {
            for (size_t i = 0; i < n; i++)
                whet_linear_forward(m, a, l, ids[i], r.out[i], x, rows);
            for (size_t i = 0; i < n; i++)
                whet_linear_backward(m, a, l, ids[i], r.din, l > 0 || i > 0, R[i], x, rows, NULL);
        }
    }
    copy_grads(lora, r.grads);
    free(la.a.lora);
    return r;
}

static void sets_match_one_by_one(void **state)
{
    (void)state;
    whet_compute *c[2] = {whet_compute_create(whet_kernels_from_env(), 1),
                          whet_compute_create(whet_kernels_from_env(), 3)};
    static const whet_linear_id qkv[3] = {WHET_LIN_Q, WHET_LIN_K, WHET_LIN_V}, mlp[2] = {WHET_LIN_GATE, WHET_LIN_UP};
    const size_t rows = 131;
    for (int dropout = 0; dropout < 2; dropout++) {
        whet_model *m = init_model(odd_llama_json, c[0], 51);
        whet_lora *lora = training_lora(m, 4, 8.0f, dropout ? 0.25f : 0.0f, 52);
        whet_err e;
        assert_int_equal(whet_lora_reserve(lora, rows, &e), 0);
        lora->step = 3;
        size_t grad_floats = 0;
        for (int id = 0; id < WHET_LIN_COUNT; id++)
            grad_floats += lora->layers * lora->opt.rank * (lora->in[id] + lora->out[id]);
        for (int set = 0; set < 2; set++) {
            const whet_linear_id *ids = set ? mlp : qkv;
            size_t n = set ? 2 : 3, K = lora->in[ids[0]];
            float *x = random_floats(rows * K, 1.0f), *R[3];
            for (size_t i = 0; i < n; i++)
                R[i] = random_floats(rows * lora->out[ids[i]], 1.0f);
            for (int saved = 0; saved < 2; saved++) {
                m->compute = c[0];
                set_run want = run_set(m, lora, ids, n, x, R, rows, saved, 0);
                for (int t = 0; t < 2; t++) {
                    m->compute = c[t];
                    set_run got = run_set(m, lora, ids, n, x, R, rows, saved, 1);
                    for (size_t i = 0; i < n; i++)
                        assert_memory_equal(got.out[i], want.out[i], rows * lora->out[ids[i]] * 4);
                    assert_memory_equal(got.din, want.din, rows * K * 4);
                    assert_memory_equal(got.grads, want.grads, grad_floats * 4);
                    for (size_t i = 0; i < n; i++)
                        free(got.out[i]);
                    free(got.din), free(got.grads);
                }
                for (size_t i = 0; i < n; i++)
                    free(want.out[i]);
                free(want.din), free(want.grads);
            }
            free(x);
            for (size_t i = 0; i < n; i++)
                free(R[i]);
        }
        m->compute = c[0];
        whet_lora_free(m, lora);
        whet_model_free(m);
    }
    whet_compute_destroy(c[0]);
    whet_compute_destroy(c[1]);
}

/* ---- bf16 base ----------------------------------------------------------------------- */

static void near(const float *got, const float *want, size_t n, float rel, const char *what)
{
    float most = 0;
    for (size_t i = 0; i < n; i++)
        most = fabsf(want[i]) > most ? fabsf(want[i]) : most;
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(got[i] - want[i]) <= rel * most))
            fail_msg("%s[%zu] = %g in bf16, %g in fp32 (max %g)", what, i, (double)got[i], (double)want[i],
                     (double)most);
}

static void check_bf16_base(const char *json)
{
    whet_compute *c = whet_compute_create(whet_kernels_from_env(), 2);
    whet_model *m = init_model(json, c, 41);
    const whet_model_config *cfg = &m->cfg;
    const size_t rows = 7, C = cfg->hidden, V = cfg->vocab;
    float *x[WHET_LIN_COUNT] = {0}, *y[WHET_LIN_COUNT] = {0}, *dx[WHET_LIN_COUNT] = {0};
    float *R[WHET_LIN_COUNT] = {0};
    size_t linear_floats = 0;
    for (int id = 0; id < WHET_LIN_COUNT; id++) {
        if (!whet_linear_exists(cfg, (whet_linear_id)id))
            continue;
        size_t K, N;
        whet_linear_shape(cfg, (whet_linear_id)id, &K, &N);
        linear_floats += cfg->layers * K * N;
        x[id] = random_floats(rows * K, 1.0f), R[id] = random_floats(rows * N, 1.0f);
        y[id] = malloc(rows * N * 4), dx[id] = malloc(rows * K * 4);
        whet_linear_forward(m, NULL, 1, (whet_linear_id)id, y[id], x[id], rows);
        whet_linear_backward(m, NULL, 1, (whet_linear_id)id, dx[id], 0, R[id], x[id], rows, NULL);
    }
    float *h = random_floats(rows * C, 1.0f), *logits = malloc(rows * V * 4), *dl = random_floats(rows * V, 1.0f);
    float *dh = malloc(rows * C * 4);
    whet_lm_head_forward(m, WHET_ALL_WORKERS, logits, V, h, rows, 0, V);
    whet_lm_head_backward(m, WHET_ALL_WORKERS, dh, 0, dl, V, h, rows, 0, V, NULL);
    float *wte = malloc(V * C * 4);
    memcpy(wte, m->params.wte, V * C * 4);

    size_t before = m->num_params;
    whet_err e;
    assert_int_equal(whet_model_base_to_bf16(m, &e), 0);
    assert_int_equal(whet_model_base_to_bf16(m, &e), 0); /* twice: nothing more */
    size_t released = linear_floats + (cfg->tied ? 0 : V * C);
    assert_int_equal(m->num_params, before - released);
    assert_true(whet_model_base_bf16_bytes(m) >= 2 * (linear_floats + V * C));
    if (whet_model_base_bf16_bytes(m) >= 2 * (linear_floats + V * C) + 4096)
        fail_msg("%zu bf16 bytes for %zu values", whet_model_base_bf16_bytes(m), linear_floats + V * C);
    assert_null(m->params.wq);
    assert_null(m->params.w_down);
    if (cfg->tied)
        assert_ptr_equal(m->params.lm_head, m->params.wte);
    else
        assert_null(m->params.lm_head);
    assert_memory_equal(m->params.wte, wte, V * C * 4);
    assert_non_null(m->params.lnf_w);
    assert_true(m->params.lnf_w[0] == 1.0f);

    for (int id = 0; id < WHET_LIN_COUNT; id++) {
        if (!x[id])
            continue;
        size_t K, N;
        whet_linear_shape(cfg, (whet_linear_id)id, &K, &N);
        float *y16 = malloc(rows * N * 4), *dx16 = malloc(rows * K * 4);
        whet_linear_forward(m, NULL, 1, (whet_linear_id)id, y16, x[id], rows);
        whet_linear_backward(m, NULL, 1, (whet_linear_id)id, dx16, 0, R[id], x[id], rows, NULL);
        near(y16, y[id], rows * N, 1e-2f, whet_linear_name((whet_linear_id)id));
        near(dx16, dx[id], rows * K, 1e-2f, "din");
        free(y16), free(dx16), free(x[id]), free(y[id]), free(dx[id]), free(R[id]);
    }
    float *logits16 = malloc(rows * V * 4), *dh16 = malloc(rows * C * 4);
    whet_lm_head_forward(m, WHET_ALL_WORKERS, logits16, V, h, rows, 0, V);
    whet_lm_head_backward(m, WHET_ALL_WORKERS, dh16, 0, dl, V, h, rows, 0, V, NULL);
    near(logits16, logits, rows * V, 1e-2f, "logits");
    near(dh16, dh, rows * C, 1e-2f, "LM head din");

    /* merging needs the fp32 base */
    whet_lora *lora = create(m, 2, 4.0f, 0.0f, 1u << WHET_LIN_Q, 1);
    assert_int_equal(whet_lora_merge(m, lora, &e), -1);
    assert_non_null(strstr(e.msg, "bf16"));
    whet_lora_free(m, lora);

    free(h), free(logits), free(dl), free(dh), free(wte), free(logits16), free(dh16);
    whet_model_free(m);
    whet_compute_destroy(c);
}

static void bf16_base_tied(void **state)
{
    (void)state;
    check_bf16_base(llama_json);
}

static void bf16_base_untied_biases(void **state)
{
    (void)state;
    check_bf16_base(gpt2_json);
    check_bf16_base(odd_llama_json);
}

/* ---- the whole model ------------------------------------------------------------------ */

static float *model_logits(whet_model *m, whet_acts *a, const int32_t *tokens, size_t B, size_t T, double *nll)
{
    whet_err e;
    if (whet_model_forward(m, a, tokens, B, T, &e))
        fail_msg("%s", e.msg);
    float *logits = malloc(B * T * m->cfg.vocab * sizeof *logits);
    if (whet_model_logits(m, a, NULL, B * T, logits, &e))
        fail_msg("%s", e.msg);
    int32_t targets[64];
    for (size_t r = 0; r < B * T; r++)
        targets[r] = r % T + 1 < T ? tokens[r + 1] : -1;
    if (whet_model_nll(m, a, targets, NULL, nll, &e))
        fail_msg("%s", e.msg);
    return logits;
}

static float max_abs_diff(const float *x, const float *y, size_t n)
{
    float d = 0;
    for (size_t i = 0; i < n; i++)
        d = fabsf(x[i] - y[i]) > d ? fabsf(x[i] - y[i]) : d;
    return d;
}

/* The model with an adapter (B ≠ 0) gives the merged model's logits; on a
 * bf16 base, with and without the adapter, logits within 1e-2 (of the
 * largest) of fp32's and the NLL within 1e-3. */
static void check_model_level(const char *json)
{
    whet_compute *c = whet_compute_create(whet_kernels_from_env(), 2);
    whet_model *m = init_model(json, c, 51), *merged = init_model(json, c, 51);
    whet_lora *lora = create(m, 4, 8.0f, 0.1f, WHET_LORA_ALL_TARGETS, 52);
    whet_lora *lora2 = create(merged, 4, 8.0f, 0.1f, WHET_LORA_ALL_TARGETS, 52);
    if (!whet_linear_exists(&m->cfg, WHET_LIN_GATE)) /* "all" on GPT-2 */
        assert_null(lora->A[WHET_LIN_GATE]);
    else
        assert_non_null(lora->A[WHET_LIN_GATE]);
    rng_state = 5;
    randomize_B(lora, 0.05f);
    rng_state = 5;
    randomize_B(lora2, 0.05f);
    const size_t B = 2, T = 9, n = B * T * m->cfg.vocab;
    int32_t tokens[B * T];
    for (size_t i = 0; i < B * T; i++)
        tokens[i] = (int32_t)((i * 37 + 11) % m->cfg.vocab);
    whet_err e;
    whet_acts *a = whet_acts_create(m, B, T, 0, &e);
    assert_non_null(a);
    assert_non_null(a->lora);
    double nll_adapter, nll_base, nll_merged, nll16;
    float *adapter = model_logits(m, a, tokens, B, T, &nll_adapter);
    m->lora = NULL;
    float *base = model_logits(m, a, tokens, B, T, &nll_base);
    m->lora = lora;
    float scale = 0;
    for (size_t i = 0; i < n; i++)
        scale = fabsf(adapter[i]) > scale ? fabsf(adapter[i]) : scale;
    if (max_abs_diff(adapter, base, n) < 1e-2f * scale)
        fail_msg("the adapter hardly changes the logits (%g)", (double)max_abs_diff(adapter, base, n));

    assert_int_equal(whet_lora_merge(merged, lora2, &e), 0);
    whet_acts *a2 = whet_acts_create(merged, B, T, 0, &e);
    assert_non_null(a2);
    float *merged_logits = model_logits(merged, a2, tokens, B, T, &nll_merged);
    if (max_abs_diff(merged_logits, adapter, n) > 1e-5f * fmaxf(scale, 1.0f))
        fail_msg("merged logits differ from the adapter's by %g", (double)max_abs_diff(merged_logits, adapter, n));

    assert_int_equal(whet_model_base_to_bf16(m, &e), 0);
    float *adapter16 = model_logits(m, a, tokens, B, T, &nll16);
    near(adapter16, adapter, n, 1e-2f, "adapter logits");
    assert_true(fabs(nll16 - nll_adapter) < 1e-3 * nll_adapter);
    free(adapter16);
    m->lora = NULL;
    float *base16 = model_logits(m, a, tokens, B, T, &nll16);
    near(base16, base, n, 1e-2f, "base logits");
    assert_true(fabs(nll16 - nll_base) < 1e-3 * nll_base);

    free(adapter), free(base), free(merged_logits), free(base16);
    whet_acts_free(a), whet_acts_free(a2);
    whet_lora_free(m, lora), whet_lora_free(merged, lora2);
    whet_model_free(m), whet_model_free(merged);
    whet_compute_destroy(c);
}

static void model_level(void **state)
{
    (void)state;
    check_model_level(llama_json);
    check_model_level(gpt2_json);
    check_model_level(odd_llama_json);
}

/* Mean NLL of the model on tokens (targets: the next token). */
static double model_loss(whet_model *m, whet_acts *a, const int32_t *tokens, const int32_t *targets, size_t B,
                         size_t T)
{
    whet_err e;
    double nll = 0;
    if (whet_model_forward(m, a, tokens, B, T, &e) || whet_model_nll(m, a, targets, NULL, &nll, &e))
        fail_msg("%s", e.msg);
    return nll;
}

/* The adapter's gradients through whet_model_backward (dropout on, one
 * step): the directional derivative along a random ±1 direction over every
 * A and B against a central difference of the mean NLL; then the same bits
 * from gradient checkpointing and from 3 threads. */
static void check_model_gradients(const char *json)
{
    whet_compute *c = whet_compute_create(whet_kernels_from_env(), 1), *c3 = whet_compute_create(whet_kernels_from_env(), 3);
    whet_model *m = init_model(json, c, 61);
    whet_lora *lora = create(m, 3, 6.0f, 0.2f, WHET_LORA_ALL_TARGETS, 62);
    rng_state = 63;
    randomize_B(lora, 0.5f);
    whet_err e;
    assert_int_equal(whet_lora_alloc_grads(lora, &e), 0);
    lora->training = 1, lora->step = 9;
    const size_t B = 2, T = 7;
    int32_t tokens[B * T], targets[B * T];
    for (size_t i = 0; i < B * T; i++)
        tokens[i] = (int32_t)((i * 29 + 3) % m->cfg.vocab);
    size_t counted = 0;
    for (size_t i = 0; i < B * T; i++) {
        targets[i] = i % T + 1 < T ? tokens[i + 1] : -1;
        counted += targets[i] >= 0;
    }
    whet_acts *keep = whet_acts_create(m, B, T, WHET_ACTS_KEEP, &e);
    whet_acts *ckpt = whet_acts_create(m, B, T, WHET_ACTS_CHECKPOINT, &e);
    assert_non_null(keep);
    assert_non_null(ckpt);
    model_loss(m, keep, tokens, targets, B, T);
    whet_lora_zero_grads(lora);
    assert_int_equal(whet_model_backward(m, keep, targets, 1.0f / (float)counted, NULL, &e), 0);
    float *grads = malloc(lora->floats * sizeof *grads), *dir = malloc(lora->floats * sizeof *dir);
    float *params[2 * WHET_LIN_COUNT], *gviews[2 * WHET_LIN_COUNT];
    size_t sizes[2 * WHET_LIN_COUNT], np = 0;
    for (int id = 0; id < WHET_LIN_COUNT; id++) {
        if (!lora->A[id])
            continue;
        size_t r = lora->opt.rank, L = lora->layers;
        params[np] = lora->A[id], gviews[np] = lora->dA[id], sizes[np++] = L * r * lora->in[id];
        params[np] = lora->B[id], gviews[np] = lora->dB[id], sizes[np++] = L * lora->out[id] * r;
    }
    double analytic = 0, norm = 0;
    size_t o = 0;
    for (size_t t = 0; t < np; t++)
        for (size_t i = 0; i < sizes[t]; i++, o++) {
            grads[o] = gviews[t][i];
            dir[o] = frand() < 0 ? -1.0f : 1.0f;
            analytic += (double)grads[o] * dir[o];
            norm += (double)grads[o] * grads[o];
        }
    assert_true(norm > 0);
    const float eps = 5e-4f;
    double loss[2];
    float *snapshot = malloc(lora->floats * sizeof *snapshot);
    for (int side = 0; side < 2; side++) {
        o = 0;
        for (size_t t = 0; t < np; t++) {
            memcpy(snapshot + o, params[t], sizes[t] * sizeof *snapshot);
            for (size_t i = 0; i < sizes[t]; i++)
                params[t][i] += (side ? -eps : eps) * dir[o + i];
            o += sizes[t];
        }
        loss[side] = model_loss(m, keep, tokens, targets, B, T);
        o = 0;
        for (size_t t = 0; t < np; t++) { /* restored exactly: θ + εd − εd need not round back to θ */
            memcpy(params[t], snapshot + o, sizes[t] * sizeof *snapshot);
            o += sizes[t];
        }
    }
    free(snapshot);
    double fd = (loss[0] - loss[1]) / (2.0 * eps);
    if (getenv("LORA_DEBUG"))
        fprintf(stderr, "directional %.9g fd %.9g\n", analytic, fd);
    if (fabs(fd - analytic) > 1e-2 * fabs(analytic) + 2e-4)
        fail_msg("directional derivative %.7g, finite difference %.7g", analytic, fd);

    /* checkpointing, and 3 threads: the same bits */
    model_loss(m, ckpt, tokens, targets, B, T);
    whet_lora_zero_grads(lora);
    assert_int_equal(whet_model_backward(m, ckpt, targets, 1.0f / (float)counted, NULL, &e), 0);
    o = 0;
    for (size_t t = 0; t < np; t++, o += sizes[t - 1])
        assert_memory_equal(gviews[t], grads + o, sizes[t] * sizeof(float));
    m->compute = c3;
    model_loss(m, keep, tokens, targets, B, T);
    whet_lora_zero_grads(lora);
    assert_int_equal(whet_model_backward(m, keep, targets, 1.0f / (float)counted, NULL, &e), 0);
    o = 0;
    for (size_t t = 0; t < np; t++, o += sizes[t - 1])
        assert_memory_equal(gviews[t], grads + o, sizes[t] * sizeof(float));

    free(grads), free(dir);
    whet_acts_free(keep), whet_acts_free(ckpt);
    whet_lora_free(m, lora);
    whet_model_free(m);
    whet_compute_destroy(c), whet_compute_destroy(c3);
}

static void model_gradients(void **state)
{
    (void)state;
    check_model_gradients(odd_llama_json);
    check_model_gradients(gpt2_json);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_targets),
        cmocka_unit_test(init_statistics),
        cmocka_unit_test(zero_B_is_the_base),
        cmocka_unit_test(gradients_finite_differences),
        cmocka_unit_test(dropout_stream),
        cmocka_unit_test(jobs_path_matches_general_path),
        cmocka_unit_test(sets_match_one_by_one),
        cmocka_unit_test(pytorch_golden),
        cmocka_unit_test(merge_matches_adapter),
        cmocka_unit_test(thread_invariance),
        cmocka_unit_test(bf16_base_tied),
        cmocka_unit_test(bf16_base_untied_biases),
        cmocka_unit_test(model_level),
        cmocka_unit_test(model_gradients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
