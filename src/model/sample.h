/* Choosing the next token from a row of logits: greedy argmax, or sampling
 * with temperature, top-k and top-p (nucleus) from a seeded PCG32 stream.
 *
 * The order of operations is Hugging Face's (generate's logits processors):
 *   1. temperature 0: the argmax of the raw logits, ties to the lowest id,
 *      and nothing else below applies (no random number is drawn);
 *   2. z = logits / temperature (in double);
 *   3. top-k (k > 0): keep the k largest z, ties to the lower id;
 *   4. p = softmax(z) over what is kept;
 *   5. top-p (p < 1): sort by p (descending, ties to the lower id) and keep
 *      the shortest prefix whose mass reaches top_p (at least one token);
 *   6. draw u uniform in [0, 1) (53 bits) and return the first kept token,
 *      in that order, whose cumulative renormalised mass exceeds u.
 * When neither top-k nor top-p filters, step 6 walks the vocabulary in id
 * order (no sort). Everything is sequential double arithmetic on the given
 * logits, so the same logits and seed give the same tokens on any thread
 * count. */
#ifndef WHET_SAMPLE_H
#define WHET_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "util/file.h"

/* PCG32 (O'Neill's pcg32_random_r, XSH RR 64/32). */
typedef struct whet_rng {
    uint64_t state, inc;
} whet_rng;

void whet_rng_seed(whet_rng *r, uint64_t seed);
uint32_t whet_rng_u32(whet_rng *r);
/* Uniform in [0, 1) with 53 random bits (two draws). */
double whet_rng_uniform(whet_rng *r);

typedef struct whet_sampling {
    double temperature; /* 0: greedy; else > 0 */
    size_t top_k;       /* 0: off */
    double top_p;       /* in (0, 1]; 1: off */
} whet_sampling;

typedef struct whet_sampler {
    whet_sampling params;
    whet_rng rng;
    size_t vocab;
    int32_t *ids;  /* [vocab] scratch: candidate ids */
    double *probs; /* [vocab] scratch: their probabilities */
    struct whet_sample_cand *cands; /* [vocab] scratch for the sorts */
} whet_sampler;

/* Checks the parameters (messages name the option: --temperature, --top-k,
 * --top-p) and allocates scratch for a vocabulary of `vocab`. */
int whet_sampler_init(whet_sampler *s, size_t vocab, const whet_sampling *params, uint64_t seed, whet_err *e);
void whet_sampler_free(whet_sampler *s);

/* The index of the largest value, ties (and NaN-free rows) to the lowest
 * index; NaN never wins. 0 for n == 0. */
int32_t whet_argmax(const float *logits, size_t n);

/* Steps 2-5 above: the kept tokens, most probable first, with their
 * probabilities renormalised to sum to 1, in s->ids / s->probs; returns how
 * many. Only for temperature > 0. */
size_t whet_sampler_candidates(whet_sampler *s, const float *logits);

/* The next token for logits[vocab]. */
int32_t whet_sampler_sample(whet_sampler *s, const float *logits);

#endif
