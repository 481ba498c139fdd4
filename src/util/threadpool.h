/* A persistent pool of worker threads. The caller of whet_pool_run works too,
 * as worker 0, so a pool of N threads starts N-1 pthreads.
 *
 * Results stay bit-identical for any thread count as long as every task writes
 * its own outputs: callers split work by rows, columns or heads, never along a
 * reduction. Tasks are handed out dynamically, so which worker runs a task
 * varies; a task must depend only on its index (and may use per-worker scratch
 * through the worker index). */
#ifndef WHET_THREADPOOL_H
#define WHET_THREADPOOL_H

#include <stddef.h>

typedef struct whet_pool whet_pool;

/* task in [0, ntasks); worker in [0, threads) */
typedef void (*whet_task_fn)(void *ctx, size_t task, int worker);

/* threads ≥ 1. Returns NULL when a thread cannot be started. */
whet_pool *whet_pool_create(int threads);
void whet_pool_destroy(whet_pool *pool);
int whet_pool_threads(const whet_pool *pool);
/* Runs fn(ctx, task, worker) for every task and returns when all are done. */
void whet_pool_run(whet_pool *pool, size_t ntasks, whet_task_fn fn, void *ctx);

/* Load balance, measured when asked for (off by default; switch it only
 * between jobs): the thread time inside jobs that went to no task, that is
 * threads x the job's wall time less each thread's time on its tasks. It is
 * threads that finished their share and wait for the last one (or were slow
 * to start), and the idle threads of a job with one task. Cumulative seconds. */
void whet_pool_measure_idle(whet_pool *pool, int on);
double whet_pool_idle_seconds(const whet_pool *pool);

/* Physical cores this process may run on (SMT siblings counted once). */
int whet_physical_cores(void);

/* The thread count to use: `requested` when > 0, else WHET_THREADS when set,
 * else the physical cores. Returns -1 (after an error message) when WHET_THREADS
 * is not a positive integer. */
int whet_thread_count(int requested);

#endif
