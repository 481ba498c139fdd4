/* A model with random weights, initialised as HF's PreTrainedModel
 * _init_weights does for these architectures: linear and embedding weights
 * from normal(0, initializer_range = 0.02) (GPT-2's residual projections
 * scaled by 1/sqrt(2·layers)), biases zero, norm weights one (LayerNorm
 * biases zero). The parameter layout is whet_model_layout_params's,
 * the one whet_model_load fills.
 *
 * The random numbers are a pure function of (seed, tensor, index): a
 * SplitMix64 hash of a counter gives two uniforms per pair of parameters,
 * Box-Muller turns them into two normals (float math), so they are the same
 * for any thread count; the work is spread over compute's threads. */
#include "model/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define INIT_STD 0.02f /* HF's default initializer_range */

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* uniform in (0, 1]: 24 random bits, never 0 (log(0) in Box-Muller) */
static float uniform_open0(uint64_t bits)
{
    return ((float)(bits >> 40) + 1.0f) * (1.0f / 16777216.0f);
}

typedef struct normal_job {
    float *x;
    size_t n;
    uint64_t key;
    float std;
} normal_job;

/* Values [2·p0, 2·p1) of one tensor: pair p from counter key + p, so the
 * numbers do not depend on how the pairs are split across threads. */
static void normal_pairs(void *ctx, size_t p0, size_t p1)
{
    const normal_job *j = ctx;
    const float two_pi = 6.28318530717958647692f;
    for (size_t p = p0; p < p1; p++) {
        uint64_t c = j->key + (uint64_t)p;
        float u1 = uniform_open0(splitmix64(c)), u2 = uniform_open0(splitmix64(c ^ 0xd1b54a32d192ed03ull));
        float r = sqrtf(-2.0f * logf(u1)) * j->std;
        size_t i = 2 * p;
        j->x[i] = r * cosf(two_pi * u2);
        if (i + 1 < j->n)
            j->x[i + 1] = r * sinf(two_pi * u2);
    }
}

/* n normals of standard deviation std into x; the stream for one tensor is
 * keyed by (seed, tensor number), so tensors do not depend on each other. */
static void fill_normal(whet_compute *c, float *x, size_t n, uint64_t seed, uint64_t tensor, float std)
{
    normal_job j = {x, n, splitmix64(seed ^ splitmix64(tensor * 0x632be59bd9b4e019ull)), std};
    size_t pairs = (n + 1) / 2;
    if (c)
        whet_compute_for(c, pairs, 1 << 14, normal_pairs, &j);
    else
        normal_pairs(&j, 0, pairs);
}

static void fill_value(float *x, size_t n, float value)
{
    if (x)
        for (size_t i = 0; i < n; i++)
            x[i] = value;
}

int whet_model_init(whet_model **out, const whet_model_config *cfg, whet_compute *compute, uint64_t seed,
                    whet_err *e)
{
    *out = NULL;
    whet_model *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup("(random init)"))) {
        free(m);
        return whet_fail(e, "model init: out of memory");
    }
    m->compute = compute;
    m->cfg = *cfg;
    size_t floats = whet_model_layout_params(&m->cfg, &m->params, NULL);
    m->num_params = whet_model_param_count(&m->cfg);
    m->params_memory = aligned_alloc(64, floats * sizeof(float));
    if (!m->params_memory) {
        whet_fail(e, "model init: out of memory for %zu parameters (%.1f MiB)", m->num_params,
                  (double)floats * 4 / (1 << 20));
        whet_model_free(m);
        return -1;
    }
    /* the padding between views too, so the whole allocation is defined */
    memset(m->params_memory, 0, floats * sizeof(float));
    whet_model_layout_params(&m->cfg, &m->params, m->params_memory);

    whet_model_params *p = &m->params;
    const whet_model_config *c = &m->cfg;
    size_t L = c->layers, C = c->hidden, V = c->vocab, F = c->ffn, HD = c->head_dim;
    size_t QD = c->heads * HD, KVD = c->kv_heads * HD;
    /* weights drawn from normal(0, std); biases stay 0 (the memset). GPT-2's
     * residual projections (c_proj of attention and MLP) get std/sqrt(2L), as
     * GPT2PreTrainedModel._init_weights scales them. */
    const float resid = c->info->arch == WHET_ARCH_GPT2 ? INIT_STD / sqrtf(2.0f * (float)L) : INIT_STD;
    const struct {
        float *w;
        size_t n;
        float std;
    } normal[] = {
        {p->wte, V * C, INIT_STD},          {p->wpe, c->max_positions * C, INIT_STD},
        {p->wq, L * QD * C, INIT_STD},      {p->wk, L * KVD * C, INIT_STD},
        {p->wv, L * KVD * C, INIT_STD},     {p->wo, L * C * QD, resid},
        {p->w_gate, L * F * C, INIT_STD},   {p->w_up, L * F * C, INIT_STD},
        {p->w_down, L * C * F, resid},      {c->tied ? NULL : p->lm_head, V * C, INIT_STD},
    };
    for (size_t i = 0; i < sizeof normal / sizeof normal[0]; i++)
        if (normal[i].w)
            fill_normal(compute, normal[i].w, normal[i].n, seed, i, normal[i].std);
    fill_value(p->ln1_w, L * C, 1.0f);
    fill_value(p->ln2_w, L * C, 1.0f);
    fill_value(p->lnf_w, C, 1.0f);
    fill_value(p->q_norm, L * HD, 1.0f);
    fill_value(p->k_norm, L * HD, 1.0f);
    *out = m;
    return 0;
}
