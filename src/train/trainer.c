/* The trainer: which tensors train, one optimizer step, validation batches,
 * and checkpoints of its state (train/trainer.h). */
#include "train/trainer.h"

#include "io/json.h"
#include "io/safetensors.h"
#include "model/adapter.h"
#include "train/checkpoint.h"

#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the trainable tensors -------------------------------------------------- */

/* One parameter view: where it sits in whet_model_params, whether it is
 * stacked over layers, its per-layer (or whole) shape, and whether AdamW
 * decays it (matrices and embeddings yes, norms and biases no). */
typedef struct view_spec {
    const char *name;
    size_t offset;
    int per_layer;
    int decay;
} view_spec;

#define V(field, per_layer, decay) {#field, offsetof(whet_model_params, field), per_layer, decay}
static const view_spec views[] = {
    V(wte, 0, 1),    V(wpe, 0, 1),    V(ln1_w, 1, 0),  V(ln1_b, 1, 0),    V(wq, 1, 1),   V(bq, 1, 0),
    V(wk, 1, 1),     V(bk, 1, 0),     V(wv, 1, 1),     V(bv, 1, 0),       V(q_norm, 1, 0), V(k_norm, 1, 0),
    V(wo, 1, 1),     V(bo, 1, 0),     V(ln2_w, 1, 0),  V(ln2_b, 1, 0),    V(w_gate, 1, 1), V(b_gate, 1, 0),
    V(w_up, 1, 1),   V(b_up, 1, 0),   V(w_down, 1, 1), V(b_down, 1, 0),   V(lnf_w, 0, 0), V(lnf_b, 0, 0),
    V(lm_head, 0, 1),
};
#undef V
enum { N_VIEWS = sizeof views / sizeof views[0] };

/* The per-layer (or whole) shape of a view: rank and dims. */
static size_t view_shape(const whet_model_config *c, const char *name, int64_t *dims)
{
    int64_t C = (int64_t)c->hidden, V_ = (int64_t)c->vocab, F = (int64_t)c->ffn, HD = (int64_t)c->head_dim;
    int64_t QD = (int64_t)(c->heads * c->head_dim), KVD = (int64_t)(c->kv_heads * c->head_dim);
    struct {
        const char *name;
        int64_t a, b;
    } table[] = {
        {"wte", V_, C},   {"wpe", (int64_t)c->max_positions, C}, {"ln1_w", C, 0},  {"ln1_b", C, 0},
        {"wq", QD, C},    {"bq", QD, 0},   {"wk", KVD, C},  {"bk", KVD, 0},   {"wv", KVD, C},  {"bv", KVD, 0},
        {"q_norm", HD, 0}, {"k_norm", HD, 0}, {"wo", C, QD}, {"bo", C, 0},    {"ln2_w", C, 0}, {"ln2_b", C, 0},
        {"w_gate", F, C}, {"b_gate", F, 0}, {"w_up", F, C}, {"b_up", F, 0},   {"w_down", C, F}, {"b_down", C, 0},
        {"lnf_w", C, 0},  {"lnf_b", C, 0}, {"lm_head", V_, C},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].name, name) == 0) {
            dims[0] = table[i].a;
            dims[1] = table[i].b;
            return table[i].b ? 2 : 1;
        }
    return 0;
}

static float *view_ptr(const whet_model_params *p, const view_spec *v)
{
    return *(float *const *)(const void *)((const char *)p + v->offset);
}

/* Full fine-tuning: the gradients' trained ranges (model.h), each with its
 * shape and decay flag from the view it belongs to. */
static size_t full_tensors(const whet_model *m, const whet_model_grads *g, whet_param_tensor *out)
{
    const whet_model_config *c = &m->cfg;
    whet_grad_range ranges[WHET_MAX_GRAD_RANGES];
    size_t n = whet_model_grads_ranges(m, g, ranges, WHET_MAX_GRAD_RANGES);
    if (n > WHET_MAX_GRAD_RANGES)
        n = WHET_MAX_GRAD_RANGES;
    for (size_t i = 0; i < n; i++) {
        whet_param_tensor *t = &out[i];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", ranges[i].name);
        t->param = ranges[i].param;
        t->grad = ranges[i].grad;
        t->n = ranges[i].n;
        const view_spec *v = NULL;
        for (size_t k = 0; k < N_VIEWS; k++)
            if (strcmp(views[k].name, ranges[i].name) == 0)
                v = &views[k];
        int64_t dims[2] = {(int64_t)t->n, 0};
        size_t rank = v ? view_shape(c, v->name, dims) : 1;
        size_t per = (size_t)dims[0] * (size_t)(rank == 2 ? dims[1] : 1);
        t->decay = v ? v->decay : 1;
        t->shadow = whet_model_bf16_shadow(m, t->param, t->n);
        if (v && v->per_layer) {
            t->rank = rank + 1;
            t->shape[0] = (int64_t)(t->n / per);
            memcpy(t->shape + 1, dims, rank * sizeof *dims);
        } else {
            t->rank = rank;
            memcpy(t->shape, dims, rank * sizeof *dims);
        }
    }
    return n;
}

static size_t lora_tensors(const whet_lora *lora, whet_param_tensor *out)
{
    size_t n = 0, L = lora->layers, r = lora->opt.rank;
    for (int id = 0; id < WHET_LIN_COUNT; id++) {
        if (!lora->A[id])
            continue;
        for (int which = 0; which < 2; which++) {
            whet_param_tensor *t = &out[n++];
            memset(t, 0, sizeof *t);
            snprintf(t->name, sizeof t->name, "lora_%s.%s", which ? "B" : "A", whet_linear_name((whet_linear_id)id));
            t->param = which ? lora->B[id] : lora->A[id];
            t->grad = which ? lora->dB[id] : lora->dA[id];
            t->decay = 1;
            t->rank = 3;
            t->shape[0] = (int64_t)L;
            t->shape[1] = (int64_t)(which ? lora->out[id] : r);
            t->shape[2] = (int64_t)(which ? r : lora->in[id]);
            t->n = L * (size_t)t->shape[1] * (size_t)t->shape[2];
        }
    }
    return n;
}

int whet_trainer_create(whet_trainer **out, whet_model *m, const whet_trainer_options *o, whet_err *e)
{
    *out = NULL;
    whet_trainer *t = calloc(1, sizeof *t);
    if (!t)
        return whet_fail(e, "trainer: out of memory");
    t->m = m;
    t->opt = *o;
    if (t->opt.grad_accum == 0)
        t->opt.grad_accum = 1;
    const whet_model_config *c = &m->cfg;
    if (o->sel.full && o->base_bf16) {
        free(t);
        return whet_fail(e, "--base-dtype bf16 holds frozen weights only: it goes with --method lora, not full");
    }
    if (o->sel.full && o->sel.train_layers > c->layers) {
        free(t);
        return whet_fail(e, "--train-layers %zu: %s has %zu layers", o->sel.train_layers, m->path, c->layers);
    }
    if ((o->base_bf16 || (o->compute_bf16 && !o->sel.full)) && whet_model_base_to_bf16(m, e) != 0)
        goto fail;
    if (o->compute_bf16 && o->sel.full && whet_model_compute_bf16(m, e) != 0)
        goto fail;
    if (o->sel.full) {
        if (!(t->grads = whet_model_grads_create(m, &o->sel, e)))
            goto fail;
    } else {
        if (!(t->lora = whet_lora_create(m, &o->lora, e)) || whet_lora_alloc_grads(t->lora, e) != 0 ||
            whet_lora_reserve(t->lora, o->batch_size * o->seq_len, e) != 0)
            goto fail;
    }
    t->acts = whet_acts_create(m, o->batch_size, o->seq_len, o->grad_checkpoint ? WHET_ACTS_CHECKPOINT : WHET_ACTS_KEEP,
                               e);
    if (!t->acts)
        goto fail;
    t->tensors = calloc(WHET_MAX_GRAD_RANGES + 2 * WHET_LIN_COUNT, sizeof *t->tensors);
    if (!t->tensors) {
        whet_fail(e, "trainer: out of memory");
        goto fail;
    }
    t->n_tensors = o->sel.full ? full_tensors(m, t->grads, t->tensors) : lora_tensors(t->lora, t->tensors);
    if (t->n_tensors == 0) {
        whet_fail(e, "nothing to train: every tensor is frozen (check --lora-targets, --freeze-embeddings, "
                     "--train-layers)");
        goto fail;
    }
    if (whet_optim_create(&t->optim, t->tensors, t->n_tensors, &o->adamw, e) != 0)
        goto fail;
    *out = t;
    return 0;
fail:
    whet_trainer_free(t);
    return -1;
}

void whet_trainer_free(whet_trainer *t)
{
    if (!t)
        return;
    whet_optim_free(t->optim);
    whet_acts_free(t->acts);
    whet_model_grads_free(t->grads);
    if (t->lora)
        whet_lora_free(t->m, t->lora);
    free(t->tensors);
    free(t);
}

int whet_trainer_plan(const whet_model *m, const whet_trainer_options *o, whet_train_plan *p, whet_err *e)
{
    memset(p, 0, sizeof *p);
    const whet_model_config *c = &m->cfg;
    size_t L = c->layers;
    if (o->sel.full) {
        size_t first = o->sel.train_layers && o->sel.train_layers < L ? L - o->sel.train_layers : 0;
        for (size_t i = 0; i < N_VIEWS; i++) {
            const view_spec *v = &views[i];
            if (!view_ptr(&m->params, v) || (strcmp(v->name, "lm_head") == 0 && c->tied))
                continue;
            int embedding = strcmp(v->name, "wte") == 0 || strcmp(v->name, "wpe") == 0 ||
                            (strcmp(v->name, "lm_head") == 0 && c->tied);
            if (o->sel.freeze_embeddings && embedding)
                continue;
            int64_t dims[2];
            size_t rank = view_shape(c, v->name, dims);
            size_t per = (size_t)dims[0] * (size_t)(rank == 2 ? dims[1] : 1);
            p->trainable += v->per_layer ? (L - first) * per : per;
        }
    } else {
        unsigned targets = o->lora.targets;
        for (int id = 0; id < WHET_LIN_COUNT; id++) {
            if (!(targets & (1u << id)) || !whet_linear_exists(c, (whet_linear_id)id))
                continue;
            size_t in, out;
            whet_linear_shape(c, (whet_linear_id)id, &in, &out);
            p->trainable += L * o->lora.rank * (in + out);
        }
    }
    int mode = o->grad_checkpoint ? WHET_ACTS_CHECKPOINT : WHET_ACTS_KEEP;
    whet_memory_estimate me = whet_model_memory(c, o->batch_size, o->seq_len, mode);
    p->weights = me.weights;
    int bf16_base = (o->base_bf16 || o->compute_bf16) && !o->sel.full, shadows = o->compute_bf16 && o->sel.full;
    if (bf16_base || shadows) {
        /* the linear layers and the head as bf16: 2 bytes instead of 4 (a frozen base), or 2 more (shadows) */
        size_t linear = 0;
        for (int id = 0; id < WHET_LIN_COUNT; id++)
            if (whet_linear_exists(c, (whet_linear_id)id)) {
                size_t in, out;
                whet_linear_shape(c, (whet_linear_id)id, &in, &out);
                linear += L * in * out;
            }
        size_t head = c->vocab * c->hidden;
        if (shadows) {
            p->weights += (linear + head) * 2;
        } else {
            p->weights -= (linear + (c->tied ? 0 : head)) * 2;
            if (c->tied)
                p->weights += head * 2; /* the head's bf16 copy beside the fp32 embeddings */
        }
    }
    p->gradients = p->trainable * sizeof(float);
    p->optimizer = 2 * p->trainable * sizeof(float);
    p->activations = mode == WHET_ACTS_CHECKPOINT ? me.activations_checkpointed : me.activations_kept;
    if (!o->sel.full) {
        /* the adapter's rank-r products per layer (model/lora.h), estimated from the targets */
        size_t per_row = 0;
        for (int id = 0; id < WHET_LIN_COUNT; id++)
            if ((o->lora.targets & (1u << id)) && whet_linear_exists(c, (whet_linear_id)id))
                per_row += o->lora.rank;
        p->activations += L * o->batch_size * o->seq_len * per_row * sizeof(float);
    }
    p->tokens_per_micro_batch = o->batch_size * o->seq_len;
    (void)e;
    return 0;
}

size_t whet_trainer_trainable(const whet_trainer *t)
{
    return whet_optim_param_floats(t->optim);
}

/* ---- one step ----------------------------------------------------------------- */

/* Forward and NLL of one batch; adds to *acc (Σ NLL, tokens, correct). A
 * loss_scale > 0 (training) also runs the LM head's backward with it. */
static int forward_loss(whet_trainer *t, const whet_batch *b, float loss_scale, whet_eval_acc *acc, whet_err *e)
{
    whet_model *m = t->m;
    whet_acts *a = t->acts;
    if (b->B > a->B || b->T > a->T)
        return whet_fail(e, "trainer: a batch of %zu × %zu is larger than the %zu × %zu it was set up for", b->B, b->T,
                         a->B, a->T);
    double mean;
    if (whet_model_forward_packed(m, a, b->tokens, b->positions, b->seg_start, b->B, b->T, e) != 0 ||
        (loss_scale > 0 ? whet_model_nll_head_backward(m, a, b->targets, loss_scale, t->grads, &mean, e)
                        : whet_model_nll(m, a, b->targets, NULL, &mean, e)) != 0)
        return -1;
    size_t rows = b->B * b->T, counted = 0, correct = 0;
    for (size_t r = 0; r < rows; r++)
        if (b->targets[r] >= 0) {
            counted++;
            /* the target's logit is the row's largest */
            correct += a->ce_target[r] >= a->ce_max[r];
        }
    acc->nll += mean * (double)counted;
    acc->tokens += counted;
    acc->correct += correct;
    return 0;
}

int whet_trainer_step(whet_trainer *t, const whet_batch *micro, size_t n, whet_step_stats *s, whet_err *e)
{
    memset(s, 0, sizeof *s);
    whet_compute *c = t->m->compute;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += micro[i].loss_tokens;
        s->tokens += micro[i].B * micro[i].T;
    }
    s->lr = whet_schedule_lr(&t->opt.schedule, (size_t)t->step);
    whet_optim_zero_grads(t->optim, c);
    if (t->lora)
        t->lora->training = 1;
    whet_eval_acc acc = {0};
    int finite = 1;
    for (size_t i = 0; i < n && total > 0; i++) {
        if (t->lora)
            t->lora->step = t->step * t->opt.grad_accum + i;
        whet_eval_acc one = {0};
        if (forward_loss(t, &micro[i], (float)(1.0 / (double)total), &one, e) != 0)
            return -1;
        acc.nll += one.nll, acc.tokens += one.tokens, acc.correct += one.correct;
        if (!isfinite(one.nll)) {
            finite = 0;
            break;
        }
        if (one.tokens && whet_model_backward(t->m, t->acts, micro[i].targets, (float)(1.0 / (double)total), t->grads,
                                              e) != 0)
            return -1;
    }
    if (t->lora)
        t->lora->training = 0;
    s->loss_tokens = total;
    s->loss = total ? acc.nll / (double)acc.tokens : 0.0;
    s->accuracy = total ? (double)acc.correct / (double)acc.tokens : 0.0;
    s->grad_norm = finite && total ? whet_optim_grad_norm(t->optim, c) : (finite ? 0.0 : NAN);
    if (!finite || !isfinite(s->loss) || !isfinite(s->grad_norm)) {
        s->skipped = 1;
    } else if (total > 0) {
        whet_optim_step(t->optim, c, s->lr, whet_optim_clip_scale(t->optim, s->grad_norm));
    }
    t->step++;
    return 0;
}

int whet_trainer_eval_batch(whet_trainer *t, const whet_batch *b, whet_eval_acc *acc, whet_err *e)
{
    if (t->lora)
        t->lora->training = 0;
    return forward_loss(t, b, 0.0f, acc, e);
}

/* Validation batches are made here rather than by a batcher: a batcher wraps
 * into its next epoch within a batch, and validation must see each example
 * exactly once. Rows follow whet_batch's layout, one example per row. */
static int fill_valid_batch(whet_dataset *ds, size_t first, size_t count, size_t T, whet_batch *b, whet_err *e)
{
    size_t n = b->B * T;
    for (size_t i = 0; i < n; i++) {
        b->tokens[i] = 0, b->targets[i] = -1, b->positions[i] = 0;
        b->seg_start[i] = (int32_t)(i % T);
    }
    b->loss_tokens = 0;
    for (size_t r = 0; r < count; r++) {
        whet_example ex;
        if (whet_dataset_get(ds, first + r, &ex, e) != 0)
            return -1;
        size_t L = ex.n < T ? ex.n : T;
        for (size_t k = 0; k < L; k++) {
            size_t at = r * T + k;
            b->tokens[at] = ex.ids[k];
            b->positions[at] = (int32_t)k;
            b->seg_start[at] = 0;
            if (k + 1 < L && ex.loss[k + 1]) {
                b->targets[at] = ex.ids[k + 1];
                b->loss_tokens++;
            }
        }
        whet_example_free(&ex);
    }
    return 0;
}

int whet_trainer_validate(whet_trainer *t, whet_dataset *ds, whet_valid_stats *v, whet_err *e)
{
    memset(v, 0, sizeof *v);
    size_t B = t->acts->B, T = t->acts->T, n = whet_dataset_count(ds);
    int32_t *memory = malloc(4 * B * T * sizeof *memory);
    if (!memory)
        return whet_fail(e, "out of memory for a validation batch");
    whet_batch b = {.B = B, .T = T, .tokens = memory, .targets = memory + B * T, .positions = memory + 2 * B * T,
                    .seg_start = memory + 3 * B * T};
    whet_eval_acc acc = {0};
    int rc = 0;
    for (size_t first = 0; first < n && rc == 0; first += B) {
        size_t count = n - first < B ? n - first : B;
        rc = fill_valid_batch(ds, first, count, T, &b, e);
        if (rc == 0 && b.loss_tokens)
            rc = whet_trainer_eval_batch(t, &b, &acc, e);
    }
    free(memory);
    if (rc != 0)
        return -1;
    v->tokens = acc.tokens;
    v->loss = acc.tokens ? acc.nll / (double)acc.tokens : NAN;
    v->accuracy = acc.tokens ? (double)acc.correct / (double)acc.tokens : NAN;
    v->perplexity = exp(v->loss);
    return 0;
}

/* ---- checkpoints -------------------------------------------------------------- */

static int write_state_json(const whet_trainer *t, const whet_run_state *st, char **text, size_t *len,
                            whet_json_writer *w, whet_err *e)
{
    whet_json_writer_init(w, 2);
    whet_json_begin_object(w);
    whet_json_key(w, "step");
    whet_json_write_int(w, (int64_t)st->step);
    whet_json_key(w, "adam_t");
    whet_json_write_int(w, (int64_t)st->adam_t);
    whet_json_key(w, "method");
    whet_json_write_string(w, t->lora ? "lora" : "full");
    whet_json_key(w, "trainable_floats");
    whet_json_write_int(w, (int64_t)whet_trainer_trainable(t));
    /* 64-bit values as strings: JSON numbers are doubles to most readers */
    char buf[32];
    whet_json_key(w, "batcher");
    whet_json_begin_object(w);
    whet_json_key(w, "epoch");
    snprintf(buf, sizeof buf, "%" PRIu64, st->batcher.epoch);
    whet_json_write_string(w, buf);
    whet_json_key(w, "cursor");
    snprintf(buf, sizeof buf, "%" PRIu64, st->batcher.cursor);
    whet_json_write_string(w, buf);
    whet_json_key(w, "seed");
    snprintf(buf, sizeof buf, "%" PRIu64, st->batcher.seed);
    whet_json_write_string(w, buf);
    whet_json_end_object(w);
    whet_json_key(w, "best_valid_loss");
    if (isfinite(st->best_valid_loss))
        whet_json_write_double(w, st->best_valid_loss);
    else
        whet_json_write_null(w);
    whet_json_key(w, "evals_since_best");
    whet_json_write_int(w, (int64_t)st->evals_since_best);
    whet_json_key(w, "nonfinite_in_row");
    whet_json_write_int(w, (int64_t)st->nonfinite_in_row);
    whet_json_key(w, "tokens_seen");
    whet_json_write_int(w, (int64_t)st->tokens_seen);
    whet_json_key(w, "elapsed_s");
    whet_json_write_double(w, st->elapsed_s);
    whet_json_end_object(w);
    const char *out;
    if (whet_json_writer_finish(w, "state.json", &out, len, e) != 0)
        return -1;
    *text = (char *)out;
    return 0;
}

int whet_trainer_save(whet_trainer *t, const whet_run_state *st, const char *run_dir, size_t keep, char *saved_dir,
                      size_t saved_size, whet_err *e)
{
    size_t n = t->n_tensors;
    whet_st_entry *entries = calloc(2 * n, sizeof *entries);
    char(*names)[112] = calloc(2 * n, sizeof *names);
    if (!entries || !names) {
        free(entries);
        free(names);
        return whet_fail(e, "%s: out of memory for a checkpoint", run_dir);
    }
    whet_ckpt_writer w;
    whet_json_writer jw = {0};
    int rc = whet_ckpt_begin(&w, run_dir, st->step, e);
    if (rc == 0) {
        for (size_t i = 0; i < n; i++)
            entries[i] = (whet_st_entry){t->tensors[i].name, WHET_ST_F32, t->tensors[i].rank, t->tensors[i].shape,
                                         t->tensors[i].param};
        rc = whet_ckpt_add_safetensors(&w, "weights.safetensors", entries, n, e);
    }
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) {
            const whet_param_tensor *p = &t->tensors[i];
            snprintf(names[2 * i], sizeof names[0], "%s.exp_avg", p->name);
            snprintf(names[2 * i + 1], sizeof names[0], "%s.exp_avg_sq", p->name);
            entries[2 * i] = (whet_st_entry){names[2 * i], WHET_ST_F32, p->rank, p->shape, t->optim->m[i]};
            entries[2 * i + 1] = (whet_st_entry){names[2 * i + 1], WHET_ST_F32, p->rank, p->shape, t->optim->v[i]};
        }
        rc = whet_ckpt_add_safetensors(&w, "optimizer.safetensors", entries, 2 * n, e);
    }
    if (rc == 0) {
        char *text;
        size_t len;
        rc = write_state_json(t, st, &text, &len, &jw, e);
        if (rc == 0)
            rc = whet_ckpt_add_file(&w, "state.json", text, len, e);
    }
    whet_json_writer_free(&jw);
    if (rc == 0 && t->lora) {
        /* each checkpoint of a LoRA run is also a PEFT adapter directory */
        rc = whet_adapter_save_peft(t->m, t->lora, w.tmp_dir, NULL, e);
        if (rc == 0)
            rc = whet_ckpt_add_existing(&w, "adapter_model.safetensors", e);
        if (rc == 0)
            rc = whet_ckpt_add_existing(&w, "adapter_config.json", e);
    }
    if (rc == 0)
        rc = whet_ckpt_commit(&w, keep, e);
    if (rc != 0) {
        whet_ckpt_abort(&w);
        char msg[sizeof e->msg];
        snprintf(msg, sizeof msg, "%.900s; checkpoint-%" PRIu64 " not written, earlier checkpoints are intact", e->msg,
                 st->step);
        snprintf(e->msg, sizeof e->msg, "%s", msg);
    } else if (saved_dir) {
        snprintf(saved_dir, saved_size, "%s", w.final_dir);
    }
    free(entries);
    free(names);
    return rc;
}

/* Copies tensor `name` of st into dst (n floats of the given shape). */
static int load_f32(const whet_safetensors *st, const char *name, const whet_param_tensor *p, float *dst, whet_err *e)
{
    const whet_st_tensor *t = whet_st_find(st, name);
    if (!t)
        return whet_fail(e, "%s: no tensor \"%s\": the checkpoint is not of this run's configuration", whet_st_name(st),
                         name);
    int same = t->dtype == WHET_ST_F32 && t->rank == p->rank;
    for (size_t d = 0; same && d < p->rank; d++)
        same = t->shape[d] == p->shape[d];
    if (!same)
        return whet_fail(e, "%s: tensor \"%s\" has another dtype or shape than this run's: the checkpoint is not of "
                            "this run's configuration", whet_st_name(st), name);
    memcpy(dst, t->data, p->n * sizeof(float));
    return 0;
}

static int state_u64(const whet_json_doc *doc, const whet_json *obj, const char *key, uint64_t *out, whet_err *e)
{
    const whet_json *v = whet_json_get(obj, key);
    if (!v)
        return whet_json_fail_missing(e, doc, obj, key);
    if (v->type == WHET_JSON_STRING) {
        char *end;
        unsigned long long x = strtoull(whet_json_string(v), &end, 10);
        if (*end || !whet_json_string(v)[0])
            return whet_json_fail_at(e, doc, v, "a whole number");
        *out = (uint64_t)x;
        return 0;
    }
    int64_t x;
    if (whet_json_int64(doc, v, 0, INT64_MAX, &x, e) != 0)
        return -1;
    *out = (uint64_t)x;
    return 0;
}

int whet_trainer_load(whet_trainer *t, const char *ckpt_dir, whet_run_state *st, whet_err *e)
{
    uint64_t manifest_step;
    if (whet_ckpt_verify(ckpt_dir, &manifest_step, e) != 0)
        return -1;
    char path[1300];
    whet_safetensors *w = NULL, *o = NULL;
    snprintf(path, sizeof path, "%s/weights.safetensors", ckpt_dir);
    int rc = whet_st_open(&w, path, e);
    snprintf(path, sizeof path, "%s/optimizer.safetensors", ckpt_dir);
    if (rc == 0)
        rc = whet_st_open(&o, path, e);
    for (size_t i = 0; rc == 0 && i < t->n_tensors; i++) {
        const whet_param_tensor *p = &t->tensors[i];
        char name[128];
        rc = load_f32(w, p->name, p, p->param, e);
        snprintf(name, sizeof name, "%s.exp_avg", p->name);
        if (rc == 0)
            rc = load_f32(o, name, p, t->optim->m[i], e);
        snprintf(name, sizeof name, "%s.exp_avg_sq", p->name);
        if (rc == 0)
            rc = load_f32(o, name, p, t->optim->v[i], e);
    }
    if (rc == 0 && w && whet_st_count(w) != t->n_tensors)
        rc = whet_fail(e, "%s/weights.safetensors: %zu tensors, this run trains %zu: the checkpoint is not of this "
                          "run's configuration", ckpt_dir, whet_st_count(w), t->n_tensors);
    whet_st_close(w);
    whet_st_close(o);
    if (rc != 0)
        return -1;
    snprintf(path, sizeof path, "%s/state.json", ckpt_dir);
    whet_json_doc *doc;
    if (whet_json_parse_file(&doc, path, NULL, e) != 0)
        return -1;
    const whet_json *root = whet_json_root(doc), *b = whet_json_get(root, "batcher");
    memset(st, 0, sizeof *st);
    rc = state_u64(doc, root, "step", &st->step, e) || state_u64(doc, root, "adam_t", &st->adam_t, e) ||
                 state_u64(doc, root, "evals_since_best", &st->evals_since_best, e) ||
                 state_u64(doc, root, "nonfinite_in_row", &st->nonfinite_in_row, e) ||
                 state_u64(doc, root, "tokens_seen", &st->tokens_seen, e)
             ? -1
             : 0;
    if (rc == 0 && !b)
        rc = whet_json_fail_missing(e, doc, root, "batcher");
    if (rc == 0)
        rc = state_u64(doc, b, "epoch", &st->batcher.epoch, e) || state_u64(doc, b, "cursor", &st->batcher.cursor, e) ||
                     state_u64(doc, b, "seed", &st->batcher.seed, e)
                 ? -1
                 : 0;
    const whet_json *best = whet_json_get(root, "best_valid_loss"), *el = whet_json_get(root, "elapsed_s");
    st->best_valid_loss = best && best->type == WHET_JSON_NUMBER ? best->u.number.value : INFINITY;
    st->elapsed_s = el && el->type == WHET_JSON_NUMBER ? el->u.number.value : 0.0;
    if (rc == 0 && st->step != manifest_step)
        rc = whet_fail(e, "%s: step %" PRIu64 ", but its manifest says %" PRIu64, path, st->step, manifest_step);
    whet_json_free(doc);
    if (rc != 0)
        return -1;
    t->step = st->step;
    t->optim->t = st->adam_t;
    whet_model_bf16_refresh(t->m); /* the masters changed under the shadows */
    return 0;
}
