/* The batcher: examples in a seeded permutation per epoch, one per row or
 * packed several per row, as B×T arrays (layout in dataset.h). Its state is
 * (epoch, cursor into the epoch's permutation, seed): a batch always ends
 * between examples, so that is all a resume needs. */
#include "data/data_internal.h"
#include "model/sample.h"

#include <stdlib.h>
#include <string.h>

struct whet_batcher {
    whet_dataset *ds;
    whet_batch_options opt;
    size_t n;
    uint64_t *perm; /* [n] the epoch's order; NULL without shuffling */
    uint64_t perm_epoch;
    uint64_t epoch, cursor;
    whet_example pending; /* the example at (epoch, cursor), tokenized, that did not fit */
    int have_pending;
    size_t steps_estimate;
    whet_batch batch;
};

/* Uniform in [0, bound) without modulo bias: 64 bits from two draws,
 * rejecting the incomplete last block. */
static uint64_t uniform_below(whet_rng *r, uint64_t bound)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    for (;;) {
        uint64_t x = (uint64_t)whet_rng_u32(r) << 32 | whet_rng_u32(r);
        if (x < limit)
            return x % bound;
    }
}

static void make_permutation(whet_batcher *bt, uint64_t epoch)
{
    if (!bt->perm)
        return;
    whet_rng r;
    whet_rng_seed(&r, bt->opt.seed ^ (epoch + 1) * 0x9E3779B97F4A7C15ULL);
    for (size_t i = 0; i < bt->n; i++)
        bt->perm[i] = i;
    for (size_t i = bt->n; i > 1; i--) {
        size_t j = (size_t)uniform_below(&r, i);
        uint64_t t = bt->perm[i - 1];
        bt->perm[i - 1] = bt->perm[j];
        bt->perm[j] = t;
    }
    bt->perm_epoch = epoch;
}

whet_batcher *whet_batcher_create(whet_dataset *ds, const whet_batch_options *opt, whet_err *e)
{
    size_t n = whet_dataset_count(ds);
    if (n == 0) {
        whet_fail(e, "%s: no examples to make batches of", whet_dataset_path(ds));
        return NULL;
    }
    if (opt->batch_size == 0 || opt->seq_len == 0 || opt->batch_size > (1u << 20) || opt->seq_len > (1u << 24) ||
        opt->seq_len > INT32_MAX / 2) {
        whet_fail(e, "batches of %zu x %zu tokens: expected a batch size from 1 to %u and a sequence length from 1 "
                  "to %u", opt->batch_size, opt->seq_len, 1u << 20, 1u << 24);
        return NULL;
    }
    whet_batcher *bt = calloc(1, sizeof *bt);
    size_t bt_size = opt->batch_size * opt->seq_len;
    if (bt) {
        bt->ds = ds;
        bt->opt = *opt;
        bt->n = n;
        bt->batch.B = opt->batch_size;
        bt->batch.T = opt->seq_len;
        bt->batch.tokens = malloc(bt_size * sizeof(int32_t));
        bt->batch.targets = malloc(bt_size * sizeof(int32_t));
        bt->batch.positions = malloc(bt_size * sizeof(int32_t));
        bt->batch.seg_start = malloc(bt_size * sizeof(int32_t));
        if (opt->shuffle)
            bt->perm = malloc(n * sizeof *bt->perm);
    }
    if (!bt || !bt->batch.tokens || !bt->batch.targets || !bt->batch.positions || !bt->batch.seg_start ||
        (opt->shuffle && !bt->perm)) {
        whet_fail(e, "out of memory for batches of %zu x %zu tokens", opt->batch_size, opt->seq_len);
        whet_batcher_free(bt);
        return NULL;
    }
    make_permutation(bt, 0);
    return bt;
}

void whet_batcher_free(whet_batcher *bt)
{
    if (!bt)
        return;
    whet_example_free(&bt->pending);
    free(bt->perm);
    free(bt->batch.tokens);
    free(bt->batch.targets);
    free(bt->batch.positions);
    free(bt->batch.seg_start);
    free(bt);
}

static size_t example_at(const whet_batcher *bt, uint64_t cursor)
{
    return bt->perm ? (size_t)bt->perm[cursor] : (size_t)cursor;
}

static void advance(whet_batcher *bt)
{
    if (++bt->cursor == bt->n) {
        bt->cursor = 0;
        bt->epoch++;
        make_permutation(bt, bt->epoch);
    }
}

/* Writes the first L tokens of ex at (row, col). */
static void place(whet_batch *b, const whet_example *ex, size_t L, size_t row, size_t col)
{
    size_t base = row * b->T + col;
    for (size_t k = 0; k < L; k++) {
        b->tokens[base + k] = ex->ids[k];
        b->positions[base + k] = (int32_t)k;
        b->seg_start[base + k] = (int32_t)col;
        int trained = k + 1 < L && ex->loss[k + 1];
        b->targets[base + k] = trained ? ex->ids[k + 1] : -1;
        b->loss_tokens += trained;
    }
}

int whet_batcher_next(whet_batcher *bt, whet_batch *out, whet_err *e)
{
    whet_batch *b = &bt->batch;
    size_t B = b->B, T = b->T;
    for (size_t i = 0; i < B * T; i++) {
        b->tokens[i] = 0;
        b->targets[i] = -1;
        b->positions[i] = 0;
        b->seg_start[i] = (int32_t)(i % T);
    }
    b->loss_tokens = b->examples = b->truncated = 0;
    b->epoch = (size_t)bt->epoch;
    size_t row = 0, col = 0, empty_run = 0;
    while (row < B) {
        if (!bt->have_pending) {
            if (bt->perm && bt->perm_epoch != bt->epoch)
                make_permutation(bt, bt->epoch);
            if (whet_dataset_get(bt->ds, example_at(bt, bt->cursor), &bt->pending, e) != 0)
                return -1;
            bt->have_pending = 1;
        }
        whet_example *ex = &bt->pending;
        if (ex->n == 0) { /* nothing to place */
            whet_example_free(ex);
            bt->have_pending = 0;
            advance(bt);
            if (++empty_run >= bt->n)
                return whet_fail(e, "%s: every example is empty after tokenizing", whet_dataset_path(bt->ds));
            continue;
        }
        empty_run = 0;
        size_t L = ex->n < T ? ex->n : T;
        if (bt->opt.pack && col > 0 && col + L > T) {
            row++;
            col = 0;
            continue; /* the example waits for the next row, or batch */
        }
        if (b->examples == 0)
            b->epoch = (size_t)bt->epoch;
        place(b, ex, L, row, col);
        b->examples++;
        b->truncated += ex->n > T;
        whet_example_free(ex);
        bt->have_pending = 0;
        advance(bt);
        col += L;
        if (!bt->opt.pack || col == T) {
            row++;
            col = 0;
        }
    }
    *out = *b;
    return 0;
}

/* With packing: greedy packing simulated on up to 256 examples spread over
 * the dataset, scaled to all of them. */
size_t whet_batcher_steps_per_epoch(whet_batcher *bt)
{
    size_t B = bt->batch.B, T = bt->batch.T;
    if (!bt->opt.pack)
        return (bt->n + B - 1) / B;
    if (bt->steps_estimate)
        return bt->steps_estimate;
    size_t sample = bt->n < 256 ? bt->n : 256, rows = 1, col = 0, used = 0;
    for (size_t s = 0; s < sample; s++) {
        whet_example ex;
        whet_err ignored;
        if (whet_dataset_get(bt->ds, s * bt->n / sample, &ex, &ignored) != 0)
            continue;
        size_t L = ex.n < T ? ex.n : T;
        whet_example_free(&ex);
        if (L == 0)
            continue;
        used++;
        if (col > 0 && col + L > T) {
            rows++;
            col = 0;
        }
        col += L;
    }
    if (used == 0)
        return 1;
    double total_rows = (double)rows * (double)bt->n / (double)used;
    size_t steps = (size_t)(total_rows / (double)B + 0.999999);
    bt->steps_estimate = steps ? steps : 1;
    return bt->steps_estimate;
}

whet_batcher_state whet_batcher_save(const whet_batcher *bt)
{
    whet_batcher_state s = {bt->epoch, bt->cursor, bt->opt.seed};
    return s;
}

int whet_batcher_restore(whet_batcher *bt, const whet_batcher_state *s, whet_err *e)
{
    if (s->cursor >= bt->n)
        return whet_fail(e, "%s: the saved data position (example %llu of epoch %llu) is past its %zu examples: was "
                         "the checkpoint made with other data?", whet_dataset_path(bt->ds),
                         (unsigned long long)s->cursor, (unsigned long long)s->epoch, bt->n);
    whet_example_free(&bt->pending);
    bt->have_pending = 0;
    bt->epoch = s->epoch;
    bt->cursor = s->cursor;
    bt->opt.seed = s->seed;
    make_permutation(bt, bt->epoch);
    return 0;
}
