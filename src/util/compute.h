/* The compute context: the chosen kernel table, the thread pool and each
 * worker's GEMM scratch. Splits kernels across threads by rows or columns of
 * their output, never along a reduction, so results are bit-identical for any
 * thread count. */
#ifndef WHET_COMPUTE_H
#define WHET_COMPUTE_H

#include "simd/simd.h"
#include "util/threadpool.h"

typedef struct whet_compute {
    const whet_kernels *kernels;
    whet_pool *pool;
    int threads;
    void **gemm_workspace; /* one per worker, kernels->gemm_workspace_bytes each */
} whet_compute;

/* The kernel table WHET_ISA names, or the best one when it is unset. Prints an
 * error and returns NULL for an unknown name or a level this CPU cannot run. */
const whet_kernels *whet_kernels_from_env(void);

/* threads ≤ 0 means whet_thread_count(0). NULL (after an error) on failure. */
whet_compute *whet_compute_create(const whet_kernels *kernels, int threads);
void whet_compute_destroy(whet_compute *c);

/* g->B is fp32 (sgemm) or bf16 (gemm_bf16), split across the pool. */
void whet_compute_sgemm(whet_compute *c, const whet_gemm *g);
void whet_compute_gemm_bf16(whet_compute *c, const whet_gemm *g);

/* The same on one worker alone when worker ≥ 0: inside a task of a pool job
 * that shares its work out another way (whet_pool_run hands the task its
 * worker index, whose GEMM workspace this uses). WHET_ALL_WORKERS: split
 * across the pool, as above. A GEMM's bits do not depend on either. */
#define WHET_ALL_WORKERS (-1)
void whet_compute_sgemm_on(whet_compute *c, const whet_gemm *g, int worker);
void whet_compute_gemm_bf16_on(whet_compute *c, const whet_gemm *g, int worker);

/* Runs fn(ctx, begin, end) over [0, n) cut into at most `threads` contiguous
 * ranges of at least `grain` items: for row-wise and element-wise kernels. */
typedef void (*whet_range_fn)(void *ctx, size_t begin, size_t end);
void whet_compute_for(whet_compute *c, size_t n, size_t grain, whet_range_fn fn, void *ctx);
/* Runs fn over [0, n) as one pool task per `per_task` items, taken by threads
 * as they free up: for a few heavy items (attention's sequence × head pairs),
 * where two fixed halves leave the faster thread waiting for the slower. */
void whet_compute_for_items(whet_compute *c, size_t n, size_t per_task, whet_range_fn fn, void *ctx);

/* Independent pieces of work run as one pool job: GEMMs, split as
 * whet_compute_sgemm splits them, and ranges, split as whet_compute_for
 * does. One wake-up and one wait instead of one per piece, and a thread done
 * with its share of one piece takes a share of the next (pieces run in the
 * order added: put the large ones first). A GEMM piece may be a chain: GEMMs
 * on the same C with the same M and N, each slab running them in order while
 * it is in cache — the bits of the chain's GEMMs run one after the other.
 * Pieces must not touch what another writes. The whet_gemm structs and
 * contexts must live until whet_jobs_run returns. */
enum { WHET_JOBS_MAX = 16, WHET_JOBS_CHAIN = 8 };
typedef struct whet_jobs_piece {
    const whet_gemm *chain[WHET_JOBS_CHAIN]; /* a GEMM piece: chain[0] sets the split */
    unsigned char bf16[WHET_JOBS_CHAIN];
    size_t links;
    int split_rows;
    size_t step;                  /* rows, columns or range items per task */
    whet_range_fn fn;             /* a range piece */
    void *ctx;
    size_t n;                     /* range: items */
    size_t first_task;
} whet_jobs_piece;

typedef struct whet_jobs {
    whet_compute *c;
    size_t count, tasks;
    whet_jobs_piece piece[WHET_JOBS_MAX];
} whet_jobs;

void whet_jobs_init(whet_jobs *b, whet_compute *c);
/* A new GEMM piece (bf16: gemm_bf16, else sgemm); returns its index for
 * whet_jobs_then, or -1 (nothing added) when C is empty. */
int whet_jobs_gemm(whet_jobs *b, const whet_gemm *g, int bf16);
/* g runs after the chain of piece (from whet_jobs_gemm) on each of its slabs:
 * the same C, M and N. Nothing when piece is -1. */
void whet_jobs_then(whet_jobs *b, int piece, const whet_gemm *g, int bf16);
void whet_jobs_for(whet_jobs *b, size_t n, size_t grain, whet_range_fn fn, void *ctx);
/* A range cut as whet_compute_for_items cuts it: one task per per_task items. */
void whet_jobs_items(whet_jobs *b, size_t n, size_t per_task, whet_range_fn fn, void *ctx);
void whet_jobs_run(whet_jobs *b);

#endif
