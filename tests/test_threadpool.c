/* The thread pool and the compute context's work splitting: every task runs
 * exactly once, ranges tile [0,n) without gaps or overlap, WHET_THREADS is
 * validated, and a GEMM split across 1, 2 or 3 threads gives identical bits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "kernel_check.h"
#include "util/compute.h"
#include "util/threadpool.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    atomic_int *hits;
    int threads;
    atomic_int bad_worker;
} hit_ctx;

static void count_hit(void *p, size_t task, int worker)
{
    hit_ctx *ctx = p;
    atomic_fetch_add(&ctx->hits[task], 1);
    if (worker < 0 || worker >= ctx->threads)
        atomic_store(&ctx->bad_worker, 1);
}

static void every_task_runs_exactly_once(void **state)
{
    (void)state;
    for (int threads = 1; threads <= 4; threads++) {
        whet_pool *pool = whet_pool_create(threads);
        assert_non_null(pool);
        assert_int_equal(whet_pool_threads(pool), threads);
        /* many short jobs in a row: the spin/sleep hand-over must never lose one */
        for (size_t ntasks = 0; ntasks < 200; ntasks += 7) {
            atomic_int hits[200];
            for (size_t i = 0; i < 200; i++)
                atomic_init(&hits[i], 0);
            hit_ctx ctx = {.hits = hits, .threads = threads};
            atomic_init(&ctx.bad_worker, 0);
            whet_pool_run(pool, ntasks, count_hit, &ctx);
            for (size_t i = 0; i < 200; i++)
                assert_int_equal(atomic_load(&hits[i]), i < ntasks ? 1 : 0);
            assert_int_equal(atomic_load(&ctx.bad_worker), 0);
        }
        whet_pool_destroy(pool);
    }
}

static void pause_us(long us)
{
    struct timespec t = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&t, &t) != 0)
        ;
}

typedef struct {
    atomic_int done;
    long task_us; /* how long task 0 takes: longer than the spin puts the caller to sleep */
} slow_ctx;

static void slow_task(void *p, size_t task, int worker)
{
    (void)worker;
    slow_ctx *ctx = p;
    if (task == 0 && ctx->task_us)
        pause_us(ctx->task_us);
    atomic_fetch_add(&ctx->done, 1);
}

/* Gaps between jobs and task lengths on either side of the spin time (200 µs)
 * and of the wait with sched_yield (5 ms), so that every hand-over happens
 * both ways: workers caught spinning, yielding or asleep, the caller the same
 * on the last worker. A lost wake-up hangs here. */
static void no_wakeup_lost_around_the_spin(void **state)
{
    (void)state;
    static const long gaps_us[] = {0, 20, 150, 400, 1500, 7000};
    enum { NGAPS = sizeof gaps_us / sizeof *gaps_us };
    for (int threads = 2; threads <= 4; threads++) {
        whet_pool *pool = whet_pool_create(threads);
        assert_non_null(pool);
        for (int round = 0; round < 42; round++) {
            slow_ctx ctx = {.task_us = gaps_us[(round * 5) % NGAPS]};
            atomic_init(&ctx.done, 0);
            size_t ntasks = 1 + (size_t)(round % 5);
            whet_pool_run(pool, ntasks, slow_task, &ctx);
            assert_int_equal(atomic_load(&ctx.done), (int)ntasks);
            pause_us(gaps_us[round % NGAPS]);
        }
        whet_pool_destroy(pool);
    }
}

typedef struct {
    unsigned char *covered;
    atomic_int calls;
    size_t per_task;       /* whet_compute_for_items' (0: whet_compute_for) */
    atomic_int misaligned; /* calls not starting at a multiple of per_task, longer than it, or empty */
} range_ctx;

static void mark_range(void *p, size_t begin, size_t end)
{
    range_ctx *ctx = p;
    atomic_fetch_add(&ctx->calls, 1);
    if (ctx->per_task && (begin % ctx->per_task != 0 || end - begin > ctx->per_task || end <= begin))
        atomic_fetch_add(&ctx->misaligned, 1);
    for (size_t i = begin; i < end; i++)
        ctx->covered[i]++;
}

/* Runs whet_compute_for (per_task 0) or whet_compute_for_items over [0, n)
 * and checks each item is covered exactly once; returns the calls made. */
static int cover(whet_compute *c, size_t n, size_t grain, size_t per_task)
{
    range_ctx ctx = {.covered = calloc(n + 1, 1), .per_task = per_task};
    atomic_init(&ctx.calls, 0);
    atomic_init(&ctx.misaligned, 0);
    if (per_task)
        whet_compute_for_items(c, n, per_task, mark_range, &ctx);
    else
        whet_compute_for(c, n, grain, mark_range, &ctx);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ctx.covered[i], 1);
    assert_int_equal(atomic_load(&ctx.misaligned), 0);
    free(ctx.covered);
    return atomic_load(&ctx.calls);
}

/* whet_compute_for: at most one range per thread, a range smaller than the
 * grain never split; whet_compute_for_items: one call per per_task items
 * (the last may be short) whatever the thread count */
static void ranges_tile_the_interval(void **state)
{
    (void)state;
    const whet_kernels *k = whet_kernels_for(WHET_ISA_SCALAR);
    for (int threads = 1; threads <= 3; threads++) {
        whet_compute *c = whet_compute_create(k, threads);
        assert_non_null(c);
        const size_t sizes[] = {0, 1, 2, 3, 5, 7, 36, 64, 100, 1000, 4099};
        const size_t grains[] = {1, 3, 16, 200, 5000};
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
            for (size_t gi = 0; gi < sizeof grains / sizeof *grains; gi++) {
                size_t n = sizes[si], grain = grains[gi];
                int calls = cover(c, n, grain, 0);
                assert_true(calls <= threads);
                if (n > 0 && n < grain)
                    assert_int_equal(calls, 1);
                assert_int_equal(cover(c, n, 0, grain), (int)((n + grain - 1) / grain));
            }
        whet_compute_destroy(c);
    }
}

static void thread_count_from_environment(void **state)
{
    (void)state;
    unsetenv("WHET_THREADS");
    assert_int_equal(whet_thread_count(5), 5);
    assert_true(whet_thread_count(0) >= 1);
    assert_int_equal(whet_thread_count(0), whet_physical_cores());
    setenv("WHET_THREADS", "3", 1);
    assert_int_equal(whet_thread_count(0), 3);
    assert_int_equal(whet_thread_count(2), 2); /* the option wins over the environment */
    const char *bad[] = {"0", "-1", "two", "3x", "99999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("WHET_THREADS", bad[i], 1);
        assert_int_equal(whet_thread_count(0), -1);
    }
    unsetenv("WHET_THREADS");
}

/* Task 0 sleeps 30 ms, the others return at once: the other threads wait for
 * it inside the job, and a one-task job of 10 ms leaves all but one thread
 * idle. Off (the default), nothing is counted. Lower bounds only: a busy host
 * can only add idle time. */
static void first_task_sleeps(void *p, size_t task, int worker)
{
    (void)p, (void)worker;
    if (task == 0)
        pause_us(30000);
}

static void one_task_sleeps(void *p, size_t task, int worker)
{
    (void)p, (void)task, (void)worker;
    pause_us(10000);
}

static void idle_inside_jobs_is_measured(void **state)
{
    (void)state;
    for (int threads = 1; threads <= 3; threads++) {
        whet_pool *pool = whet_pool_create(threads);
        assert_non_null(pool);
        whet_pool_run(pool, (size_t)threads, first_task_sleeps, NULL);
        assert_true(whet_pool_idle_seconds(pool) == 0.0);
        whet_pool_measure_idle(pool, 1);
        whet_pool_run(pool, (size_t)threads, first_task_sleeps, NULL);
        double unbalanced = whet_pool_idle_seconds(pool);
        assert_true(unbalanced >= 0.025 * (threads - 1));
        whet_pool_run(pool, 1, one_task_sleeps, NULL);
        assert_true(whet_pool_idle_seconds(pool) - unbalanced >= 0.009 * (threads - 1));
        whet_pool_measure_idle(pool, 0);
        double before = whet_pool_idle_seconds(pool);
        whet_pool_run(pool, (size_t)threads, first_task_sleeps, NULL);
        assert_true(whet_pool_idle_seconds(pool) == before);
        whet_pool_destroy(pool);
    }
}

/* A GEMM whose C rows and columns are split differently for each thread count
 * must still give identical bits, in every layout, on every ISA. */
static void gemm_bits_independent_of_threads(void **state)
{
    (void)state;
    const whet_kernels *tables[WHET_ISA_COUNT];
    int ntables = kc_tables(tables);
    const size_t shapes[][3] = {{61, 37, 45}, {5, 130, 17}, {200, 9, 33}};
    for (int t = 0; t < ntables; t++)
        for (size_t s = 0; s < 3; s++)
            for (int layout = 0; layout < 3; layout++) {
                size_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                kc_rng rng = kc_seed(17 + s);
                float *A = kc_floats(M * K), *B = kc_floats(N * K);
                kc_fill(&rng, A, M * K, -1, 1);
                kc_fill(&rng, B, N * K, -1, 1);
                float *first = NULL;
                for (int threads = 1; threads <= 3; threads++) {
                    whet_compute *c = whet_compute_create(tables[t], threads);
                    float *C = kc_floats(M * N);
                    whet_gemm g = {.layout = (whet_gemm_layout)layout, .M = M, .N = N, .K = K, .A = A,
                                   .lda = layout == WHET_GEMM_TN ? M : K, .B = B,
                                   .ldb = layout == WHET_GEMM_NT ? K : N, .C = C, .ldc = N};
                    whet_compute_sgemm(c, &g);
                    if (!first)
                        first = C;
                    else {
                        assert_memory_equal(first, C, M * N * sizeof(float));
                        kc_free(C);
                    }
                    whet_compute_destroy(c);
                }
                kc_free(first);
                kc_free(A);
                kc_free(B);
            }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_task_runs_exactly_once),
        cmocka_unit_test(no_wakeup_lost_around_the_spin),
        cmocka_unit_test(ranges_tile_the_interval),
        cmocka_unit_test(thread_count_from_environment),
        cmocka_unit_test(idle_inside_jobs_is_measured),
        cmocka_unit_test(gemm_bits_independent_of_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
