/* AdamW over the trainable tensors, with global-norm gradient clipping.
 *
 * Each tensor is a parameter group of one: its own weight-decay flag (no
 * decay on norms and biases, as HF's Trainer groups them) and its moments
 * m, v in one allocation. The update is torch.optim.AdamW's (the simd adamw
 * kernel); clipping is torch.nn.utils.clip_grad_norm_'s:
 *
 *   norm = sqrt(Σ_tensors Σ g²),  scale = min(1, max_norm / (norm + 1e-6))
 *
 * applied as the kernel's grad_scale, so gradients are never rewritten.
 *
 * Determinism: the tensors are cut into fixed chunks of WHET_OPTIM_CHUNK
 * floats whatever the thread count; each chunk's Σ g² comes from the
 * sum_squares kernel and the partial sums are added in chunk order, so the
 * norm has the same bits for any thread count. */
#ifndef WHET_TRAIN_OPTIM_H
#define WHET_TRAIN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "util/compute.h"
#include "util/file.h"

#define WHET_OPTIM_CHUNK ((size_t)1 << 16)

/* One trainable tensor: param and grad hold n floats. */
typedef struct whet_param_tensor {
    char name[96];   /* unique; names the tensor in checkpoints */
    float *param, *grad;
    size_t n;
    whet_bf16 *shadow; /* n bf16 copies of param to keep current (--compute bf16), or NULL */
    int decay;       /* weight decay applies */
    size_t rank;     /* shape, for checkpoints */
    int64_t shape[4];
} whet_param_tensor;

typedef struct whet_adamw_config {
    double beta1, beta2, eps, weight_decay;
    double max_grad_norm; /* 0: no clipping */
} whet_adamw_config;

typedef struct whet_optim_chunk {
    size_t tensor, offset, n;
} whet_optim_chunk;

typedef struct whet_optim {
    whet_adamw_config cfg;
    whet_param_tensor *tensors;  /* owned copy */
    size_t count;
    float **m, **v;              /* [count] views into state */
    float *state;                /* 2 · Σ n floats */
    size_t state_floats;
    uint64_t t;                  /* AdamW steps taken (the bias corrections' exponent) */
    whet_optim_chunk *chunks;
    size_t n_chunks;
    double *partial;             /* [n_chunks] Σ g² per chunk */
} whet_optim;

int whet_optim_create(whet_optim **out, const whet_param_tensor *tensors, size_t count, const whet_adamw_config *cfg,
                      whet_err *e);
void whet_optim_free(whet_optim *o);

/* Floats the trainable tensors hold (Σ n). */
size_t whet_optim_param_floats(const whet_optim *o);

/* The global L2 norm of the gradients (NaN or inf when one is not finite). */
double whet_optim_grad_norm(whet_optim *o, whet_compute *c);

/* The clipping factor clip_grad_norm_ applies for this norm. */
float whet_optim_clip_scale(const whet_optim *o, double grad_norm);

/* One AdamW step at learning rate lr, gradients multiplied by grad_scale.
 * A tensor's shadow is rounded from its updated chunk right after the
 * chunk's update, while the chunk is still in cache. */
void whet_optim_step(whet_optim *o, whet_compute *c, double lr, float grad_scale);

/* Zeroes every gradient. */
void whet_optim_zero_grads(whet_optim *o, whet_compute *c);

#endif
