/* Greedy and seeded sampling of the next token (see sample.h for the rules). */
#include "model/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- PCG32 ------------------------------------------------------------------ */

uint32_t whet_rng_u32(whet_rng *r)
{
    uint64_t old = r->state;
    r->state = old * 6364136223846793005ULL + r->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18) ^ old) >> 27);
    uint32_t rot = (uint32_t)(old >> 59);
    return (xorshifted >> rot) | (xorshifted << ((32 - rot) & 31));
}

void whet_rng_seed(whet_rng *r, uint64_t seed)
{
    /* pcg32_srandom_r(seed, stream 54): the reference's example stream */
    r->state = 0;
    r->inc = (54u << 1) | 1u;
    whet_rng_u32(r);
    r->state += seed;
    whet_rng_u32(r);
}

double whet_rng_uniform(whet_rng *r)
{
    uint32_t a = whet_rng_u32(r) >> 5, b = whet_rng_u32(r) >> 6; /* 27 + 26 bits */
    return ((double)a * 67108864.0 + (double)b) * (1.0 / 9007199254740992.0);
}

/* ---- the sampler ---------------------------------------------------------------- */

typedef struct whet_sample_cand {
    double w; /* unnormalised probability exp(z - max z) */
    int32_t id;
} cand;

/* a ranks before b: more probable, or as probable with a lower id */
static int before(const cand *a, const cand *b)
{
    return a->w > b->w || (a->w == b->w && a->id < b->id);
}

static int cmp_cand(const void *pa, const void *pb)
{
    const cand *a = pa, *b = pb;
    return before(a, b) ? -1 : before(b, a) ? 1 : 0;
}

int whet_sampler_init(whet_sampler *s, size_t vocab, const whet_sampling *params, uint64_t seed, whet_err *e)
{
    memset(s, 0, sizeof *s);
    if (!(params->temperature >= 0) || !isfinite(params->temperature))
        return whet_fail(e, "--temperature: expected a finite number >= 0, got %g", params->temperature);
    if (!(params->top_p > 0 && params->top_p <= 1))
        return whet_fail(e, "--top-p: expected a number in (0, 1], got %g", params->top_p);
    if (vocab == 0 || vocab > INT32_MAX)
        return whet_fail(e, "sampler: a vocabulary of %zu tokens is not supported", vocab);
    s->params = *params;
    s->vocab = vocab;
    whet_rng_seed(&s->rng, seed);
    s->ids = malloc(vocab * sizeof *s->ids);
    s->probs = malloc(vocab * sizeof *s->probs);
    s->cands = malloc(vocab * sizeof *s->cands);
    if (!s->ids || !s->probs || !s->cands) {
        whet_sampler_free(s);
        return whet_fail(e, "sampler: out of memory for a vocabulary of %zu tokens", vocab);
    }
    return 0;
}

void whet_sampler_free(whet_sampler *s)
{
    free(s->ids);
    free(s->probs);
    free(s->cands);
    s->ids = NULL;
    s->probs = NULL;
    s->cands = NULL;
}

int32_t whet_argmax(const float *logits, size_t n)
{
    size_t best = 0;
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(logits[i]))
            continue;
        if (!found || logits[i] > logits[best]) {
            best = i;
            found = 1;
        }
    }
    return (int32_t)best;
}

/* The k best of c[0..n) (by `before`) into c[0..k), sorted: a heap whose root
 * is the worst of those kept so far. */
static size_t top_k_select(cand *c, size_t n, size_t k)
{
    if (k >= n) {
        qsort(c, n, sizeof *c, cmp_cand);
        return n;
    }
    /* heap in c[0..k): parent ranks after (is worse than) its children */
    for (size_t i = 0; i < n; i++) {
        cand x = c[i];
        size_t hole;
        if (i < k) {
            hole = i;
            while (hole > 0 && before(&c[(hole - 1) / 2], &x)) {
                c[hole] = c[(hole - 1) / 2];
                hole = (hole - 1) / 2;
            }
            c[hole] = x;
            continue;
        }
        if (!before(&x, &c[0]))
            continue;
        hole = 0;
        for (;;) {
            size_t l = 2 * hole + 1, r = l + 1, worst = hole;
            const cand *w = &x;
            if (l < k && before(w, &c[l]))
                worst = l, w = &c[l];
            if (r < k && before(w, &c[r]))
                worst = r, w = &c[r];
            if (worst == hole)
                break;
            c[hole] = c[worst];
            hole = worst;
        }
        c[hole] = x;
    }
    qsort(c, k, sizeof *c, cmp_cand);
    return k;
}

/* Below this weight (relative to the most probable token) tokens are first
 * left out of the nucleus sort; they are sorted too only when the ones above
 * it do not reach top_p, so the result is the same as sorting everything. */
#define NUCLEUS_PREFILTER 1e-7

size_t whet_sampler_candidates(whet_sampler *s, const float *logits)
{
    size_t V = s->vocab;
    double inv_t = 1.0 / s->params.temperature;
    double zmax = -INFINITY;
    for (size_t i = 0; i < V; i++)
        if (!isnan(logits[i]) && (double)logits[i] * inv_t > zmax)
            zmax = (double)logits[i] * inv_t;
    if (zmax == -INFINITY) { /* nothing finite to weigh */
        s->ids[0] = whet_argmax(logits, V);
        s->probs[0] = 1;
        return 1;
    }
    cand *c = s->cands;
    double total = 0;
    for (size_t i = 0; i < V; i++) {
        double w = isnan(logits[i]) ? 0.0 : exp((double)logits[i] * inv_t - zmax);
        c[i].w = w;
        c[i].id = (int32_t)i;
        total += w;
    }
    size_t n = V;
    double top_p = s->params.top_p;
    if (s->params.top_k > 0 && s->params.top_k < V) {
        n = top_k_select(c, V, s->params.top_k);
        total = 0;
        for (size_t i = 0; i < n; i++)
            total += c[i].w;
    } else if (top_p < 1) {
        size_t m = 0;
        double mass = 0;
        for (size_t i = 0; i < V; i++)
            if (c[i].w >= NUCLEUS_PREFILTER) {
                mass += c[i].w;
                c[m++] = c[i];
            }
        if (mass / total >= top_p) {
            n = m;
            qsort(c, n, sizeof *c, cmp_cand);
        } else { /* rebuild the whole list and sort it */
            for (size_t i = 0; i < V; i++) {
                c[i].w = isnan(logits[i]) ? 0.0 : exp((double)logits[i] * inv_t - zmax);
                c[i].id = (int32_t)i;
            }
            qsort(c, V, sizeof *c, cmp_cand);
        }
    } else {
        qsort(c, V, sizeof *c, cmp_cand);
    }
    if (top_p < 1) {
        double cum = 0;
        size_t keep = 0;
        while (keep < n) {
            cum += c[keep].w / total;
            keep++;
            if (cum >= top_p)
                break;
        }
        n = keep;
    }
    double kept = 0;
    for (size_t i = 0; i < n; i++)
        kept += c[i].w;
    for (size_t i = 0; i < n; i++) {
        s->ids[i] = c[i].id;
        s->probs[i] = kept > 0 ? c[i].w / kept : (i == 0 ? 1.0 : 0.0);
    }
    return n;
}

int32_t whet_sampler_sample(whet_sampler *s, const float *logits)
{
    if (s->params.temperature == 0)
        return whet_argmax(logits, s->vocab);
    size_t V = s->vocab;
    if (s->params.top_k == 0 || s->params.top_k >= V) {
        if (s->params.top_p >= 1) {
            /* no filter: walk the vocabulary in id order, no sort */
            double inv_t = 1.0 / s->params.temperature;
            double zmax = -INFINITY, total = 0;
            for (size_t i = 0; i < V; i++)
                if (!isnan(logits[i]) && (double)logits[i] * inv_t > zmax)
                    zmax = (double)logits[i] * inv_t;
            if (zmax == -INFINITY)
                return whet_argmax(logits, V);
            for (size_t i = 0; i < V; i++) {
                s->probs[i] = isnan(logits[i]) ? 0.0 : exp((double)logits[i] * inv_t - zmax);
                total += s->probs[i];
            }
            double u = whet_rng_uniform(&s->rng) * total, cum = 0;
            size_t last = 0;
            for (size_t i = 0; i < V; i++) {
                if (s->probs[i] == 0)
                    continue;
                cum += s->probs[i];
                last = i;
                if (u < cum)
                    return (int32_t)i;
            }
            return (int32_t)last;
        }
    }
    size_t n = whet_sampler_candidates(s, logits);
    double u = whet_rng_uniform(&s->rng), cum = 0;
    for (size_t i = 0; i < n; i++) {
        cum += s->probs[i];
        if (u < cum)
            return s->ids[i];
    }
    return s->ids[n - 1];
}
