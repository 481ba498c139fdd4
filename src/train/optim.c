#include "train/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int whet_optim_create(whet_optim **out, const whet_param_tensor *tensors, size_t count, const whet_adamw_config *cfg,
                      whet_err *e)
{
    *out = NULL;
    whet_optim *o = calloc(1, sizeof *o);
    if (!o)
        return whet_fail(e, "optimizer: out of memory");
    o->cfg = *cfg;
    o->count = count;
    size_t floats = 0, chunks = 0;
    for (size_t i = 0; i < count; i++) {
        floats += tensors[i].n;
        chunks += (tensors[i].n + WHET_OPTIM_CHUNK - 1) / WHET_OPTIM_CHUNK;
    }
    o->tensors = calloc(count ? count : 1, sizeof *o->tensors);
    o->m = calloc(count ? count : 1, sizeof *o->m);
    o->v = calloc(count ? count : 1, sizeof *o->v);
    o->state = calloc(2 * floats + 1, sizeof *o->state);
    o->chunks = calloc(chunks + 1, sizeof *o->chunks);
    o->partial = calloc(chunks + 1, sizeof *o->partial);
    if (!o->tensors || !o->m || !o->v || !o->state || !o->chunks || !o->partial) {
        whet_optim_free(o);
        return whet_fail(e, "optimizer: out of memory for the AdamW moments of %zu parameters (%.1f MiB)", floats,
                         2.0 * (double)floats * sizeof(float) / 1048576.0);
    }
    memcpy(o->tensors, tensors, count * sizeof *tensors);
    o->state_floats = 2 * floats;
    size_t at = 0;
    for (size_t i = 0; i < count; i++) {
        o->m[i] = o->state + at;
        o->v[i] = o->state + floats + at;
        at += tensors[i].n;
        for (size_t off = 0; off < tensors[i].n; off += WHET_OPTIM_CHUNK) {
            size_t n = tensors[i].n - off < WHET_OPTIM_CHUNK ? tensors[i].n - off : WHET_OPTIM_CHUNK;
            o->chunks[o->n_chunks++] = (whet_optim_chunk){i, off, n};
        }
    }
    *out = o;
    return 0;
}

void whet_optim_free(whet_optim *o)
{
    if (!o)
        return;
    free(o->tensors);
    free(o->m);
    free(o->v);
    free(o->state);
    free(o->chunks);
    free(o->partial);
    free(o);
}

size_t whet_optim_param_floats(const whet_optim *o)
{
    return o->state_floats / 2;
}

/* Chunks per pool task: the optimizer's passes are bound by memory bandwidth,
 * and a thread the host stops should not hold up the other's last half, so
 * threads take a few chunks (2 MiB of one array) at a time. */
#define CHUNKS_PER_TASK 8

typedef struct optim_job {
    whet_optim *o;
    const whet_kernels *k;
    whet_adamw_params h[2]; /* [decay] */
} optim_job;

static void norm_chunks(void *p, size_t c0, size_t c1)
{
    optim_job *j = p;
    for (size_t c = c0; c < c1; c++) {
        const whet_optim_chunk *ch = &j->o->chunks[c];
        j->o->partial[c] = j->k->sum_squares(j->o->tensors[ch->tensor].grad + ch->offset, ch->n);
    }
}

double whet_optim_grad_norm(whet_optim *o, whet_compute *c)
{
    optim_job j = {.o = o, .k = c->kernels};
    whet_compute_for_items(c, o->n_chunks, CHUNKS_PER_TASK, norm_chunks, &j);
    double sum = 0;
    for (size_t i = 0; i < o->n_chunks; i++)
        sum += o->partial[i];
    return sqrt(sum);
}

float whet_optim_clip_scale(const whet_optim *o, double grad_norm)
{
    if (o->cfg.max_grad_norm <= 0)
        return 1.0f;
    /* torch computes the coefficient in float32 from the float32 norm */
    float coef = (float)o->cfg.max_grad_norm / ((float)grad_norm + 1e-6f);
    return coef < 1.0f ? coef : 1.0f;
}

static void step_chunks(void *p, size_t c0, size_t c1)
{
    optim_job *j = p;
    for (size_t c = c0; c < c1; c++) {
        const whet_optim_chunk *ch = &j->o->chunks[c];
        const whet_param_tensor *t = &j->o->tensors[ch->tensor];
        j->k->adamw(t->param + ch->offset, j->o->m[ch->tensor] + ch->offset, j->o->v[ch->tensor] + ch->offset,
                    t->grad + ch->offset, ch->n, &j->h[t->decay ? 1 : 0]);
        if (t->shadow)
            j->k->f32_to_bf16(t->shadow + ch->offset, t->param + ch->offset, ch->n);
    }
}

void whet_optim_step(whet_optim *o, whet_compute *c, double lr, float grad_scale)
{
    o->t++;
    const whet_adamw_config *cfg = &o->cfg;
    whet_adamw_params h = {
        .lr = (float)lr,
        .beta1 = (float)cfg->beta1,
        .beta2 = (float)cfg->beta2,
        .eps = (float)cfg->eps,
        .weight_decay = 0.0f,
        .grad_scale = grad_scale,
        .bias_correction1 = (float)(1.0 - pow(cfg->beta1, (double)o->t)),
        .bias_correction2 = (float)(1.0 - pow(cfg->beta2, (double)o->t)),
    };
    optim_job j = {.o = o, .k = c->kernels, .h = {h, h}};
    j.h[1].weight_decay = (float)cfg->weight_decay;
    whet_compute_for_items(c, o->n_chunks, CHUNKS_PER_TASK, step_chunks, &j);
}

static void zero_chunks(void *p, size_t c0, size_t c1)
{
    optim_job *j = p;
    for (size_t c = c0; c < c1; c++) {
        const whet_optim_chunk *ch = &j->o->chunks[c];
        memset(j->o->tensors[ch->tensor].grad + ch->offset, 0, ch->n * sizeof(float));
    }
}

void whet_optim_zero_grads(whet_optim *o, whet_compute *c)
{
    optim_job j = {.o = o, .k = c->kernels};
    whet_compute_for_items(c, o->n_chunks, CHUNKS_PER_TASK, zero_chunks, &j);
}
