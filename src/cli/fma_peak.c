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

/* Windows of ~50 ms in which every thread runs rounds of ~1 ms: its rate is
 * its FLOPs over the time from the window's start to the end of its last
 * round, so time a thread spends not running (more threads than cores, or a
 * host that stops a virtual CPU) counts against it, and a thread never adds
 * more than the core it got. The peak is the best window's sum over threads. */
enum { TOGETHER_WINDOWS = 3 };
#define TOGETHER_WINDOW_SECONDS 0.050

typedef struct {
    const whet_kernels *k;
    size_t iterations; /* per round, ~1 ms */
    int threads;
    atomic_int arrived; /* threads × windows started */
    atomic_int started; /* windows under way, counted when starts[] holds the window's start */
    double starts[TOGETHER_WINDOWS];
    double *rates;      /* [window][task] FLOP/s */
} together_job;

static void together_task(void *p, size_t task, int worker)
{
    (void)worker;
    together_job *job = p;
    for (int w = 0; w < TOGETHER_WINDOWS; w++) {
        /* All tasks start each window together. Waiting for every task also
         * keeps any thread from running two of them: each is on a thread of
         * its own. */
        if (atomic_fetch_add(&job->arrived, 1) == job->threads * (w + 1) - 1) {
            job->starts[w] = whet_now(); /* the last to arrive starts the window's clock for all */
            atomic_store(&job->started, w + 1);
        }
        while (atomic_load(&job->started) <= w)
            ;
        double start = job->starts[w], now, flops = 0;
        do {
            flops += job->k->fma_peak_loop(job->iterations);
            now = whet_now();
        } while (now - start < TOGETHER_WINDOW_SECONDS);
        job->rates[(size_t)w * (size_t)job->threads + task] = flops / (now - start);
    }
}

double cli_measure_fma_peak_together(const whet_kernels *k, whet_pool *pool)
{
    int threads = whet_pool_threads(pool);
    together_job job = {.k = k, .threads = threads};
    job.rates = calloc((size_t)TOGETHER_WINDOWS * (size_t)threads, sizeof *job.rates);
    if (!job.rates)
        return 0;
    /* rounds of ~1 ms, sized on this thread */
    size_t iterations = 1 << 10;
    k->fma_peak_loop(iterations);
    for (;;) {
        double t0 = whet_now();
        k->fma_peak_loop(iterations);
        double dt = whet_now() - t0;
        if (dt >= 0.0005 || iterations > ((size_t)1 << 40)) {
            job.iterations = (size_t)((double)iterations * 0.001 / (dt > 0 ? dt : 1e-9)) + 1;
            break;
        }
        iterations *= 2;
    }
    atomic_init(&job.arrived, 0);
    atomic_init(&job.started, 0);
    whet_pool_run(pool, (size_t)threads, together_task, &job);
    double best = 0;
    for (int w = 0; w < TOGETHER_WINDOWS; w++) {
        double total = 0;
        for (int i = 0; i < threads; i++)
            total += job.rates[(size_t)w * (size_t)threads + i];
        if (total > best)
            best = total;
    }
    free(job.rates);
    return best * 1e-9;
}
