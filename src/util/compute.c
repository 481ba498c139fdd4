#include "util/compute.h"

#include "util/log.h"

#include <assert.h>

#include <stdlib.h>
#include <string.h>

const whet_kernels *whet_kernels_from_env(void)
{
    const char *want = getenv("WHET_ISA");
    if (!want || !*want)
        return whet_kernels_best();
    int isa = whet_isa_from_name(want);
    if (isa < 0) {
        whet_error("WHET_ISA='%s': unknown level (expected scalar, avx2, avx512 or neon)", want);
        return NULL;
    }
    const whet_kernels *k = whet_kernels_for((whet_isa)isa);
    if (!k) {
        const whet_cpu_features *f = whet_cpu_detect();
        whet_error("WHET_ISA=%s: this %s CPU (%s) cannot run it; 'whet cpu' lists what it has",
                   want, f->arch, f->brand[0] ? f->brand : "unnamed");
        return NULL;
    }
    return k;
}

whet_compute *whet_compute_create(const whet_kernels *kernels, int threads)
{
    if (threads <= 0)
        threads = whet_thread_count(0);
    if (threads <= 0)
        return NULL;
    whet_compute *c = calloc(1, sizeof *c);
    if (!c)
        goto oom;
    c->kernels = kernels;
    c->threads = threads;
    c->gemm_workspace = calloc((size_t)threads, sizeof *c->gemm_workspace);
    if (!c->gemm_workspace)
        goto oom;
    for (int i = 0; i < threads; i++) {
        /* 64-byte aligned, the size rounded up as aligned_alloc requires */
        size_t bytes = (kernels->gemm_workspace_bytes + 63) & ~(size_t)63;
        c->gemm_workspace[i] = aligned_alloc(64, bytes ? bytes : 64);
        if (!c->gemm_workspace[i])
            goto oom;
    }
    c->pool = whet_pool_create(threads);
    if (!c->pool) {
        whet_compute_destroy(c);
        return NULL;
    }
    return c;
oom:
    whet_error("out of memory setting up %d threads", threads);
    whet_compute_destroy(c);
    return NULL;
}

void whet_compute_destroy(whet_compute *c)
{
    if (!c)
        return;
    if (c->gemm_workspace)
        for (int i = 0; i < c->threads; i++)
            free(c->gemm_workspace[i]);
    free(c->gemm_workspace);
    whet_pool_destroy(c->pool);
    free(c);
}

/* How a GEMM is cut: along its longer side into at most `threads` slabs of
 * whole micro-tiles, so no thread works on ragged tiles mid-matrix; returns
 * the number of slabs. */
static size_t gemm_split(const whet_compute *c, const whet_gemm *g, int *split_rows, size_t *step)
{
    const whet_kernels *k = c->kernels;
    *split_rows = g->M >= g->N;
    size_t extent = *split_rows ? g->M : g->N;
    size_t tile = *split_rows ? k->gemm_tile_m : k->gemm_tile_n;
    if (tile == 0)
        tile = 1;
    size_t tiles = (extent + tile - 1) / tile;
    size_t parts = (size_t)c->threads < tiles ? (size_t)c->threads : tiles;
    *step = (tiles + parts - 1) / parts * tile;
    return (extent + *step - 1) / *step;
}

/* A GEMM alone: one piece of a job (whet_jobs, below) */
static void compute_gemm(whet_compute *c, const whet_gemm *g, int bf16)
{
    whet_jobs jobs;
    whet_jobs_init(&jobs, c);
    whet_jobs_gemm(&jobs, g, bf16);
    whet_jobs_run(&jobs);
}

void whet_compute_sgemm(whet_compute *c, const whet_gemm *g)
{
    compute_gemm(c, g, 0);
}

void whet_compute_gemm_bf16(whet_compute *c, const whet_gemm *g)
{
    compute_gemm(c, g, 1);
}

static void gemm_on(whet_compute *c, const whet_gemm *g, int bf16, int worker)
{
    if (worker < 0) {
        compute_gemm(c, g, bf16);
        return;
    }
    if (g->M == 0 || g->N == 0)
        return;
    void *ws = c->gemm_workspace[worker];
    if (bf16)
        c->kernels->gemm_bf16(g, 0, g->M, 0, g->N, ws);
    else
        c->kernels->sgemm(g, 0, g->M, 0, g->N, ws);
}

void whet_compute_sgemm_on(whet_compute *c, const whet_gemm *g, int worker)
{
    gemm_on(c, g, 0, worker);
}

void whet_compute_gemm_bf16_on(whet_compute *c, const whet_gemm *g, int worker)
{
    gemm_on(c, g, 1, worker);
}

void whet_compute_for(whet_compute *c, size_t n, size_t grain, whet_range_fn fn, void *ctx)
{
    whet_jobs jobs;
    whet_jobs_init(&jobs, c);
    whet_jobs_for(&jobs, n, grain, fn, ctx);
    whet_jobs_run(&jobs);
}

void whet_compute_for_items(whet_compute *c, size_t n, size_t per_task, whet_range_fn fn, void *ctx)
{
    whet_jobs jobs;
    whet_jobs_init(&jobs, c);
    whet_jobs_items(&jobs, n, per_task, fn, ctx);
    whet_jobs_run(&jobs);
}

/* ---- several pieces as one job ------------------------------------------------------------------ */

void whet_jobs_init(whet_jobs *b, whet_compute *c)
{
    b->c = c;
    b->count = 0;
    b->tasks = 0;
}

static whet_jobs_piece *jobs_add(whet_jobs *b, size_t tasks)
{
    assert(b->count < WHET_JOBS_MAX);
    whet_jobs_piece *p = &b->piece[b->count++];
    *p = (whet_jobs_piece){.first_task = b->tasks};
    b->tasks += tasks;
    return p;
}

int whet_jobs_gemm(whet_jobs *b, const whet_gemm *g, int bf16)
{
    if (g->M == 0 || g->N == 0)
        return -1;
    int split_rows;
    size_t step, tasks = gemm_split(b->c, g, &split_rows, &step);
    whet_jobs_piece *p = jobs_add(b, tasks);
    p->chain[0] = g, p->bf16[0] = (unsigned char)bf16, p->links = 1;
    p->split_rows = split_rows, p->step = step;
    return (int)(b->count - 1);
}

void whet_jobs_then(whet_jobs *b, int piece, const whet_gemm *g, int bf16)
{
    if (piece < 0)
        return;
    whet_jobs_piece *p = &b->piece[piece];
    assert(p->links > 0 && p->links < WHET_JOBS_CHAIN && g->M == p->chain[0]->M && g->N == p->chain[0]->N);
    p->chain[p->links] = g, p->bf16[p->links] = (unsigned char)bf16;
    p->links++;
}

void whet_jobs_for(whet_jobs *b, size_t n, size_t grain, whet_range_fn fn, void *ctx)
{
    if (n == 0)
        return;
    if (grain == 0)
        grain = 1;
    size_t parts = n / grain;
    if (parts > (size_t)b->c->threads)
        parts = (size_t)b->c->threads;
    if (parts < 1)
        parts = 1;
    size_t step = (n + parts - 1) / parts;
    whet_jobs_piece *p = jobs_add(b, (n + step - 1) / step);
    p->fn = fn, p->ctx = ctx, p->n = n, p->step = step;
}

void whet_jobs_items(whet_jobs *b, size_t n, size_t per_task, whet_range_fn fn, void *ctx)
{
    if (n == 0)
        return;
    if (per_task == 0)
        per_task = 1;
    whet_jobs_piece *p = jobs_add(b, (n + per_task - 1) / per_task);
    p->fn = fn, p->ctx = ctx, p->n = n, p->step = per_task;
}

static void jobs_task(void *ctx, size_t task, int worker)
{
    whet_jobs *b = ctx;
    size_t i = b->count - 1;
    while (task < b->piece[i].first_task)
        i--;
    const whet_jobs_piece *p = &b->piece[i];
    size_t t = task - p->first_task;
    if (p->fn) {
        size_t begin = t * p->step, end = begin + p->step < p->n ? begin + p->step : p->n;
        p->fn(p->ctx, begin, end);
        return;
    }
    const whet_gemm *g = p->chain[0];
    size_t m0 = 0, m1 = g->M, n0 = 0, n1 = g->N;
    if (p->split_rows) {
        m0 = t * p->step;
        m1 = m0 + p->step < g->M ? m0 + p->step : g->M;
    } else {
        n0 = t * p->step;
        n1 = n0 + p->step < g->N ? n0 + p->step : g->N;
    }
    const whet_kernels *k = b->c->kernels;
    void *ws = b->c->gemm_workspace[worker];
    for (size_t link = 0; link < p->links; link++)
        (p->bf16[link] ? k->gemm_bf16 : k->sgemm)(p->chain[link], m0, m1, n0, n1, ws);
}

void whet_jobs_run(whet_jobs *b)
{
    if (b->tasks)
        whet_pool_run(b->c->pool, b->tasks, jobs_task, b);
    b->count = 0;
    b->tasks = 0;
}
