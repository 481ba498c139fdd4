/* The trainer against PyTorch: 5 AdamW steps of the tiny Llama on fixed
 * batches (2 micro-batches per step, masked targets, weight decay on
 * matrices only, cosine schedule with warmup, global-norm clipping), full
 * fine-tuning and LoRA, from tests/ref/make_train_goldens.py. Per-step loss
 * and gradient norm within 1e-4 relative, the learning rate exactly as HF's
 * lambda gives it, final weights within 1e-4; and the same bits on 1 and 2
 * threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "io/safetensors.h"
#include "model/lora.h"
#include "model/model.h"
#include "train/trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODEL_DIR "tests/data/models/llama"
#define GOLDEN_DIR "tests/data/train"

enum { STEPS = 5, ACCUM = 2, B = 2, T = 16 };

static const whet_st_tensor *need(const whet_safetensors *st, const char *name)
{
    const whet_st_tensor *t = whet_st_find(st, name);
    if (!t)
        fail_msg("%s: no tensor %s", whet_st_name(st), name);
    return t;
}

static double f64_at(const whet_st_tensor *t, size_t i)
{
    double v;
    memcpy(&v, (const char *)t->data + 8 * i, 8);
    return v;
}

typedef struct run_out {
    double loss[STEPS], norm[STEPS], lr[STEPS];
    whet_trainer *t;
    whet_model *m;
    whet_compute *c;
} run_out;

/* Runs the 5 steps of the golden's batches; leaves the trainer for checks. */
static void run_steps(const whet_safetensors *g, int lora, int threads, run_out *r)
{
    whet_err e = {{0}};
    r->c = whet_compute_create(whet_kernels_best(), threads);
    assert_non_null(r->c);
    if (whet_model_load(&r->m, MODEL_DIR, r->c, &e) != 0)
        fail_msg("%s", e.msg);
    whet_trainer_options o = {
        .sel = {.full = !lora},
        .lora = {.rank = 4, .alpha = 8.0f, .dropout = 0.0f, .targets = WHET_LORA_ALL_TARGETS, .seed = 5},
        .batch_size = B,
        .seq_len = T,
        .grad_accum = ACCUM,
        .adamw = {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .max_grad_norm = 0.5},
        .schedule = {.kind = WHET_LR_COSINE, .lr = 1e-2, .min_lr = 0, .warmup_steps = 2, .total_steps = STEPS},
    };
    if (whet_trainer_create(&r->t, r->m, &o, &e) != 0)
        fail_msg("%s", e.msg);
    if (lora) /* the golden's initial A (PyTorch's random numbers, not whet's) */
        for (int id = 0; id < WHET_LIN_COUNT; id++) {
            char name[64];
            snprintf(name, sizeof name, "init.lora_A.%s", whet_linear_name((whet_linear_id)id));
            const whet_st_tensor *a = need(g, name);
            assert_int_equal(a->numel, r->t->lora->layers * 4 * r->t->lora->in[id]);
            memcpy(r->t->lora->A[id], a->data, a->nbytes);
        }
    const whet_st_tensor *tok = need(g, "tokens"), *tgt = need(g, "targets");
    int32_t positions[B * T], seg_start[B * T];
    for (size_t i = 0; i < B * T; i++)
        positions[i] = (int32_t)(i % T), seg_start[i] = 0;
    for (size_t s = 0; s < STEPS; s++) {
        whet_batch micro[ACCUM];
        for (size_t a = 0; a < ACCUM; a++) {
            size_t at = (s * ACCUM + a) * B * T;
            micro[a] = (whet_batch){.B = B, .T = T, .tokens = (int32_t *)tok->data + at,
                                    .targets = (int32_t *)tgt->data + at, .positions = positions,
                                    .seg_start = seg_start};
            for (size_t i = 0; i < B * T; i++)
                micro[a].loss_tokens += micro[a].targets[i] >= 0;
        }
        whet_step_stats st;
        if (whet_trainer_step(r->t, micro, ACCUM, &st, &e) != 0)
            fail_msg("%s", e.msg);
        assert_false(st.skipped);
        r->loss[s] = st.loss, r->norm[s] = st.grad_norm, r->lr[s] = st.lr;
    }
}

static void free_run(run_out *r)
{
    whet_trainer_free(r->t);
    whet_model_free(r->m);
    whet_compute_destroy(r->c);
}

static void check_golden(int lora)
{
    whet_err e = {{0}};
    whet_safetensors *g;
    const char *path = lora ? GOLDEN_DIR "/golden_lora.safetensors" : GOLDEN_DIR "/golden_full.safetensors";
    if (whet_st_open(&g, path, &e) != 0)
        fail_msg("%s", e.msg);
    run_out r1, r2;
    run_steps(g, lora, 1, &r1);
    const whet_st_tensor *loss = need(g, "loss"), *norm = need(g, "grad_norm"), *lr = need(g, "lr");
    for (size_t s = 0; s < STEPS; s++) {
        double want_loss = f64_at(loss, s), want_norm = f64_at(norm, s);
        printf("%s step %zu: loss %.7f (torch %.7f)  grad_norm %.7f (torch %.7f)  lr %g\n", lora ? "lora" : "full",
               s + 1, r1.loss[s], want_loss, r1.norm[s], want_norm, r1.lr[s]);
        if (fabs(r1.loss[s] - want_loss) > 1e-4 * fabs(want_loss))
            fail_msg("step %zu: loss %.8f, torch %.8f", s + 1, r1.loss[s], want_loss);
        if (fabs(r1.norm[s] - want_norm) > 1e-4 * fabs(want_norm))
            fail_msg("step %zu: grad norm %.8f, torch %.8f", s + 1, r1.norm[s], want_norm);
        if (fabs(r1.lr[s] - f64_at(lr, s)) > 1e-15)
            fail_msg("step %zu: lr %.17g, torch %.17g", s + 1, r1.lr[s], f64_at(lr, s));
    }
    /* every trained tensor after the 5 steps, and nothing trained that torch did not train */
    size_t compared = 0;
    for (size_t i = 0; i < r1.t->n_tensors; i++) {
        const whet_param_tensor *p = &r1.t->tensors[i];
        char name[128];
        snprintf(name, sizeof name, "final.%s", p->name);
        const whet_st_tensor *want = need(g, name);
        assert_int_equal(want->numel, p->n);
        const float *w = want->data;
        double worst = 0;
        size_t at = 0;
        for (size_t k = 0; k < p->n; k++)
            if (fabs((double)p->param[k] - w[k]) > worst)
                worst = fabs((double)p->param[k] - w[k]), at = k;
        printf("  %-16s max |whet - torch| %.3g (at %zu)\n", p->name, worst, at);
        if (worst > 1e-4)
            fail_msg("%s: element %zu is %.8f, torch %.8f", p->name, at, p->param[at], w[at]);
        compared++;
    }
    size_t finals = 0;
    for (size_t i = 0; i < whet_st_count(g); i++)
        finals += strncmp(whet_st_tensor_at(g, i)->name, "final.", 6) == 0;
    assert_int_equal(compared, finals);
    /* the same bits on two threads */
    run_steps(g, lora, 2, &r2);
    assert_memory_equal(r1.loss, r2.loss, sizeof r1.loss);
    assert_memory_equal(r1.norm, r2.norm, sizeof r1.norm);
    for (size_t i = 0; i < r1.t->n_tensors; i++)
        assert_memory_equal(r1.t->tensors[i].param, r2.t->tensors[i].param, r1.t->tensors[i].n * sizeof(float));
    free_run(&r1);
    free_run(&r2);
    whet_st_close(g);
}

static void full_fine_tune_matches_torch(void **state)
{
    (void)state;
    check_golden(0);
}

static void lora_matches_torch(void **state)
{
    (void)state;
    check_golden(1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_fine_tune_matches_torch),
        cmocka_unit_test(lora_matches_torch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
