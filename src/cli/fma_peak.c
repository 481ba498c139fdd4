#include "cli/fma_peak.h"

#include "util/timer.h"

#include <stdatomic.h>
#include <stdlib.h>

double cli_measure_fma_peak(const whet_kernels *k)
{
    return cli_measure_fma_peak_by(k, whet_now);
}

double cli_measure_fma_peak_by(const whet_kernels *k, double (*clock)(void))
{
    size_t iterations = 1 << 16;
    double best = 0;
    k->fma_peak_loop(iterations); /* warm-up: clocks up, code paged in */
    for (int round = 0; round < 8; round++) {
        double t0 = clock();
        double flops = k->fma_peak_loop(iterations);
        double dt = clock() - t0;
        if (dt < 0.02) { /* too short to time well: make it longer */
            iterations *= 4;
            round--;
            continue;
        }
        if (flops / dt > best)
            best = flops / dt;
    }
    return best * 1e-9;
}

typedef struct {
    const whet_kernels *k;
    size_t iterations; /* per round, ~20 ms */
    int threads;
    atomic_int arrived, finished;
    double *best; /* per task: FLOP/s of its best round */
} together_job;

enum { TOGETHER_ROUNDS = 4 };

static void together_task(void *p, size_t task, int worker)
{
    (void)worker;
    together_job *job = p;
    /* Every task waits for all of them to start: no thread can then run two,
     * and every timed round below overlaps the others' work. */
    atomic_fetch_add(&job->arrived, 1);
    while (atomic_load(&job->arrived) < job->threads)
        ;
    double best = 0;
    for (int round = 0; round < TOGETHER_ROUNDS; round++) {
        double t0 = whet_now();
        double flops = job->k->fma_peak_loop(job->iterations);
        double dt = whet_now() - t0;
        if (dt > 0 && flops / dt > best)
            best = flops / dt;
    }
    job->best[task] = best;
    /* keep the core busy until the last thread's rounds are over */
    atomic_fetch_add(&job->finished, 1);
    while (atomic_load(&job->finished) < job->threads)
        job->k->fma_peak_loop(job->iterations / 64 + 1);
}

double cli_measure_fma_peak_together(const whet_kernels *k, whet_pool *pool)
{
    int threads = whet_pool_threads(pool);
    together_job job = {.k = k, .threads = threads};
    job.best = calloc((size_t)threads, sizeof *job.best);
    if (!job.best)
        return 0;
    /* rounds of ~20 ms, sized on this thread */
    size_t iterations = 1 << 14;
    k->fma_peak_loop(iterations);
    for (;;) {
        double t0 = whet_now();
        k->fma_peak_loop(iterations);
        double dt = whet_now() - t0;
        if (dt >= 0.005 || iterations > ((size_t)1 << 40)) {
            job.iterations = (size_t)((double)iterations * 0.020 / (dt > 0 ? dt : 1e-9)) + 1;
            break;
        }
        iterations *= 4;
    }
    atomic_init(&job.arrived, 0);
    atomic_init(&job.finished, 0);
    whet_pool_run(pool, (size_t)threads, together_task, &job);
    double total = 0;
    for (int i = 0; i < threads; i++)
        total += job.best[i];
    free(job.best);
    return total * 1e-9;
}
