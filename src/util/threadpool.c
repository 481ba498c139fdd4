#if defined(__linux__)
#define _GNU_SOURCE /* sched_getaffinity */
#endif
#include "util/threadpool.h"

#include "util/log.h"
#include "util/timer.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* One job at a time: the caller publishes it by bumping `generation`; workers
 * spin on that counter for a while (a training step issues thousands of short
 * jobs, and a futex sleep and wake-up costs more than most of them), then sleep
 * on `wake`. The caller takes the mutex and broadcasts only when a worker has
 * gone to sleep (`sleepers`): with the workers spinning, publishing a job costs
 * no system call. That is a Dekker-style pair (each side a read-modify-write on
 * one counter, then a load of the other), so one side always sees the other and
 * no wake-up is lost. Both sides are read-modify-writes on purpose: a plain
 * sequentially consistent store followed by a load is not kept in order by
 * qemu-user emulating AArch64 on x86-64, where a store-then-load flag pair lost
 * a wake-up; the worker finishing last therefore signals `done` under the
 * mutex unconditionally, which costs no system call when nobody waits. */
struct whet_pool {
    int threads;
    pthread_t *handles;
    pthread_mutex_t mutex;
    pthread_cond_t wake, done;
    atomic_uint generation;
    atomic_int unfinished;    /* workers (not counting the caller) still on the job */
    atomic_int sleepers;      /* workers asleep on `wake`, or about to be */
    int stopping;
    /* whet_pool_measure_idle: per worker, seconds on the current job's tasks */
    int measure;
    double *busy;
    _Atomic double idle; /* written by the caller only; read from any thread */
    /* the current job */
    whet_task_fn fn;
    void *ctx;
    size_t ntasks;
    atomic_size_t next_task;
};

struct worker_arg {
    whet_pool *pool;
    int index;
};

/* How long a thread waits awake before it sleeps: first spinning, then
 * spinning with a sched_yield between checks, which hands the core to any
 * other runnable thread but keeps it from going idle. Waking a sleeping thread
 * costs far more than a futex call where an idle (virtual) CPU must be woken
 * first: on a 2-vCPU VM, sleeping after 200 µs left a LoRA step's threads not
 * running for 9 % of their time (2 % with this wait) and made five paired
 * LoRA benchmarks 0–6 % slower. The wait bridges the serial code between a
 * step's jobs and a preempted thread's last task, and is short enough not to
 * matter when the pool is idle. */
#define SPIN_NANOSECONDS 200000L
#define YIELD_NANOSECONDS 5000000L

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static long elapsed_ns(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000000000L + (now.tv_nsec - since->tv_nsec);
}

/* Between two checks of what a waiter waits for: a pause while the wait is
 * short, a sched_yield once it is long; 0 when it is time to sleep. */
static int keep_waiting(const struct timespec *start)
{
    long waited = elapsed_ns(start);
    if (waited > YIELD_NANOSECONDS)
        return 0;
    if (waited > SPIN_NANOSECONDS)
        sched_yield();
    return 1;
}

/* Waits awake until *value differs from `from`, or the wait is over; returns the value last seen. */
static unsigned spin_while_equal_uint(atomic_uint *value, unsigned from)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        for (int i = 0; i < 256; i++) {
            unsigned now = atomic_load_explicit(value, memory_order_acquire);
            if (now != from)
                return now;
            cpu_relax();
        }
        if (!keep_waiting(&start))
            return from;
    }
}

static int spin_until_zero(atomic_int *value)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        for (int i = 0; i < 256; i++) {
            if (atomic_load_explicit(value, memory_order_acquire) == 0)
                return 1;
            cpu_relax();
        }
        if (!keep_waiting(&start))
            return 0;
    }
}

static void run_tasks(whet_pool *pool, int worker)
{
    double start = pool->measure ? whet_now() : 0;
    for (;;) {
        size_t task = atomic_fetch_add_explicit(&pool->next_task, 1, memory_order_relaxed);
        if (task >= pool->ntasks)
            break;
        pool->fn(pool->ctx, task, worker);
    }
    if (pool->measure) /* read by the caller once `unfinished` says this worker is done */
        pool->busy[worker] = whet_now() - start;
}

static void *worker_main(void *p)
{
    struct worker_arg arg = *(struct worker_arg *)p;
    free(p);
    whet_pool *pool = arg.pool;
    unsigned seen = 0; /* the generation at creation: a job published before this thread got
                         * scheduled must still be run by it */
    for (;;) {
        unsigned now = spin_while_equal_uint(&pool->generation, seen);
        if (now == seen) {
            pthread_mutex_lock(&pool->mutex);
            atomic_fetch_add(&pool->sleepers, 1);
            while ((now = atomic_load(&pool->generation)) == seen && !pool->stopping)
                pthread_cond_wait(&pool->wake, &pool->mutex);
            atomic_fetch_sub(&pool->sleepers, 1);
            int stop = pool->stopping;
            pthread_mutex_unlock(&pool->mutex);
            if (stop)
                return NULL;
        }
        seen = now;
        run_tasks(pool, arg.index);
        if (atomic_fetch_sub(&pool->unfinished, 1) == 1) {
            pthread_mutex_lock(&pool->mutex);
            pthread_cond_signal(&pool->done);
            pthread_mutex_unlock(&pool->mutex);
        }
    }
}

whet_pool *whet_pool_create(int threads)
{
    if (threads < 1)
        threads = 1;
    whet_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return NULL;
    pool->threads = threads;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->done, NULL);
    atomic_init(&pool->generation, 0);
    atomic_init(&pool->unfinished, 0);
    atomic_init(&pool->next_task, 0);
    atomic_init(&pool->sleepers, 0);
    atomic_init(&pool->idle, 0.0);
    pool->handles = calloc((size_t)threads, sizeof *pool->handles);
    pool->busy = calloc((size_t)threads, sizeof *pool->busy);
    if (!pool->handles || !pool->busy) {
        free(pool->handles);
        free(pool->busy);
        free(pool);
        return NULL;
    }
    for (int i = 1; i < threads; i++) {
        struct worker_arg *arg = malloc(sizeof *arg);
        int err = arg ? 0 : ENOMEM;
        if (arg) {
            arg->pool = pool;
            arg->index = i;
            err = pthread_create(&pool->handles[i], NULL, worker_main, arg);
            if (err)
                free(arg);
        }
        if (err) {
            whet_error("cannot start thread %d of %d: %s", i + 1, threads, strerror(err));
            pool->threads = i; /* destroy joins the ones that started */
            whet_pool_destroy(pool);
            return NULL;
        }
    }
    return pool;
}

void whet_pool_destroy(whet_pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mutex);
    pool->stopping = 1;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    for (int i = 1; i < pool->threads; i++)
        pthread_join(pool->handles[i], NULL);
    pthread_mutex_destroy(&pool->mutex);
    pthread_cond_destroy(&pool->wake);
    pthread_cond_destroy(&pool->done);
    free(pool->handles);
    free(pool->busy);
    free(pool);
}

void whet_pool_measure_idle(whet_pool *pool, int on)
{
    pool->measure = on; /* between jobs: the next job's publication makes it visible to the workers */
}

double whet_pool_idle_seconds(const whet_pool *pool)
{
    return atomic_load_explicit(&pool->idle, memory_order_relaxed);
}

static void add_idle(whet_pool *pool, double seconds)
{
    if (seconds > 0)
        atomic_store_explicit(&pool->idle, atomic_load_explicit(&pool->idle, memory_order_relaxed) + seconds,
                              memory_order_relaxed);
}

int whet_pool_threads(const whet_pool *pool)
{
    return pool->threads;
}

void whet_pool_run(whet_pool *pool, size_t ntasks, whet_task_fn fn, void *ctx)
{
    if (ntasks == 0)
        return;
    double start = pool->measure ? whet_now() : 0;
    if (pool->threads == 1 || ntasks == 1) {
        for (size_t task = 0; task < ntasks; task++)
            fn(ctx, task, 0);
        if (pool->measure)
            add_idle(pool, (double)(pool->threads - 1) * (whet_now() - start));
        return;
    }
    pool->fn = fn;
    pool->ctx = ctx;
    pool->ntasks = ntasks;
    atomic_store_explicit(&pool->next_task, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->unfinished, pool->threads - 1, memory_order_relaxed);
    atomic_fetch_add(&pool->generation, 1); /* publishes the job (sequentially consistent) */
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->mutex);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->mutex);
    }

    run_tasks(pool, 0);

    if (!spin_until_zero(&pool->unfinished)) {
        pthread_mutex_lock(&pool->mutex);
        while (atomic_load(&pool->unfinished) != 0)
            pthread_cond_wait(&pool->done, &pool->mutex);
        pthread_mutex_unlock(&pool->mutex);
    }
    if (pool->measure) {
        double idle = (double)pool->threads * (whet_now() - start);
        for (int i = 0; i < pool->threads; i++)
            idle -= pool->busy[i];
        add_idle(pool, idle);
    }
}

/* Counts distinct (package, core) pairs among the CPUs we may run on. */
int whet_physical_cores(void)
{
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online < 1)
        online = 1;
#if defined(__linux__)
    cpu_set_t allowed;
    int have_affinity = sched_getaffinity(0, sizeof allowed, &allowed) == 0;
    enum { MAX_CPUS = 1024 };
    static long core_keys[MAX_CPUS];
    int ncores = 0, ncpus = 0;
    for (int cpu = 0; cpu < MAX_CPUS && cpu < CPU_SETSIZE; cpu++) {
        if (have_affinity && !CPU_ISSET(cpu, &allowed))
            continue;
        char path[128];
        long package = 0, core = -1;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
        FILE *f = fopen(path, "r");
        if (!f) {
            if (!have_affinity)
                break;
            ncpus++;
            continue;
        }
        if (fscanf(f, "%ld", &core) != 1)
            core = -1;
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
        f = fopen(path, "r");
        if (f) {
            if (fscanf(f, "%ld", &package) != 1)
                package = 0;
            fclose(f);
        }
        ncpus++;
        long key = package * 100000 + core;
        int seen = 0;
        for (int i = 0; i < ncores; i++)
            seen |= core_keys[i] == key;
        if (!seen && core >= 0)
            core_keys[ncores++] = key;
    }
    if (ncores > 0)
        return ncores;
    if (ncpus > 0)
        return ncpus;
#endif
    return (int)online;
}

int whet_thread_count(int requested)
{
    if (requested > 0)
        return requested;
    const char *env = getenv("WHET_THREADS");
    if (env && *env) {
        char *end;
        long n = strtol(env, &end, 10);
        if (*end || n < 1 || n > 4096) {
            whet_error("WHET_THREADS='%s': expected a whole number from 1 to 4096", env);
            return -1;
        }
        return (int)n;
    }
    return whet_physical_cores();
}
