/* Strided-window scoring of long texts (whet score, whet eval ppl cases). */
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>

int whet_model_score_windows(whet_model *m, const int32_t *ids, size_t n, size_t ctx, size_t stride, float *logprob,
                      double *total_nll, size_t *scored, size_t *windows, int progress, whet_err *e)
{
    whet_acts *a = whet_acts_create(m, 1, ctx < n ? ctx : n, 0, e);
    int32_t *targets = malloc(ctx * sizeof *targets);
    float *lp = malloc(ctx * sizeof *lp);
    int rc = -1;
    if (!a || !targets || !lp) {
        if (a)
            whet_fail(e, "out of memory for a window of %zu tokens", ctx);
        goto done;
    }
    size_t prev_end = 0, n_windows = n <= ctx ? 1 : 1 + (n - ctx + stride - 1) / stride;
    *total_nll = 0;
    *scored = 0;
    *windows = 0;
    for (size_t begin = 0;; begin += stride) {
        size_t end = begin + ctx < n ? begin + ctx : n, T = end - begin;
        size_t first = prev_end > begin + 1 ? prev_end : begin + 1;
        for (size_t i = 0; i < T; i++) {
            size_t t = begin + i + 1; /* the token row i predicts */
            targets[i] = t >= first && t < end ? ids[t] : -1;
        }
        double mean;
        if (whet_model_forward(m, a, ids + begin, 1, T, e) != 0 || whet_model_nll(m, a, targets, lp, &mean, e) != 0)
            goto done;
        for (size_t i = 0; i < T; i++)
            if (targets[i] >= 0) {
                if (logprob)
                    logprob[begin + i + 1] = lp[i];
                *total_nll -= lp[i];
                ++*scored;
            }
        ++*windows;
        if (progress)
            fprintf(stderr, "\rwhet: score: window %zu of %zu", *windows, n_windows);
        prev_end = end;
        if (end == n)
            break;
    }
    rc = 0;
done:
    if (progress)
        fputs("\r\033[K", stderr);
    whet_acts_free(a);
    free(targets);
    free(lp);
    return rc;
}
