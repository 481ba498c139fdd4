/* The training loop as a library (whet_train_run_loop): the plan's count of
 * trained parameters against what the trainer really trains, the hooks
 * (progress, validation, checkpoint, and the evaluation hook point that can
 * stop a run), early stopping, a stop request from a signal handler, and a
 * resumed loop reaching the same weights as an uninterrupted one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "data/dataset.h"
#include "model/lora.h"
#include "model/model.h"
#include "tok/tokenizer.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MODELS "tests/data/models"

static char tmpdir[256];

/* ---- the plan ------------------------------------------------------------------ */

static void plan_counts_what_trains(void **state)
{
    (void)state;
    static const char *const models[] = {"llama", "gpt2", "qwen3"};
    whet_compute *c = whet_compute_create(whet_kernels_best(), 1);
    for (size_t mi = 0; mi < 3; mi++) {
        for (int variant = 0; variant < 6; variant++) {
            whet_model *m;
            whet_err e = {{0}};
            char dir[256];
            snprintf(dir, sizeof dir, MODELS "/%s", models[mi]);
            if (whet_model_load(&m, dir, c, &e) != 0)
                fail_msg("%s", e.msg);
            whet_trainer_options o = {
                .lora = {.rank = 3, .alpha = 6, .targets = WHET_LORA_ALL_TARGETS, .seed = 1},
                .batch_size = 2, .seq_len = 8, .grad_accum = 1,
                .adamw = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8},
                .schedule = {.kind = WHET_LR_CONSTANT, .lr = 1e-3, .total_steps = 1},
            };
            switch (variant) {
            case 1: o.lora.targets = (1u << WHET_LIN_Q) | (1u << WHET_LIN_V); break;
            case 2: o.sel.full = 1; break;
            case 3: o.sel.full = 1, o.sel.train_layers = 1; break;
            case 4: o.sel.full = 1, o.sel.freeze_embeddings = 1; break;
            case 5: o.sel.full = 1, o.sel.train_layers = 1, o.sel.freeze_embeddings = 1; break;
            }
            whet_train_plan p;
            whet_trainer *t;
            assert_int_equal(whet_trainer_plan(m, &o, &p, &e), 0);
            if (whet_trainer_create(&t, m, &o, &e) != 0)
                fail_msg("%s variant %d: %s", models[mi], variant, e.msg);
            if (p.trainable != whet_trainer_trainable(t))
                fail_msg("%s variant %d: the plan says %zu trained, the trainer trains %zu", models[mi], variant,
                         p.trainable, whet_trainer_trainable(t));
            assert_true(p.optimizer == 2 * p.gradients && p.gradients == 4 * p.trainable);
            assert_true(p.activations >= t->acts->floats * sizeof(float) * 9 / 10);
            /* decay: never on a norm or a bias */
            for (size_t i = 0; i < t->n_tensors; i++) {
                const char *n = t->tensors[i].name;
                int norm_or_bias = strstr(n, "ln") == n || strstr(n, "norm") || n[0] == 'b';
                assert_int_equal(t->tensors[i].decay, !norm_or_bias);
            }
            whet_trainer_free(t);
            whet_model_free(m);
        }
    }
    whet_compute_destroy(c);
}

/* ---- the loop -------------------------------------------------------------------- */

/* A tokenizer in which "<tI>" is token I (0..299), as tests/cli/models.inc
 * makes it, and a text dataset of learnable sequences. */
static whet_tokenizer *toy_tokenizer(void)
{
    size_t cap = 1 << 16, n = 0;
    char *json = malloc(cap);
    n += (size_t)snprintf(json + n, cap - n, "{\"version\":\"1.0\",\"added_tokens\":[");
    for (int i = 0; i < 300; i++)
        n += (size_t)snprintf(json + n, cap - n,
                              "%s{\"id\":%d,\"content\":\"<t%d>\",\"single_word\":false,\"lstrip\":false,"
                              "\"rstrip\":false,\"normalized\":false,\"special\":%s}",
                              i ? "," : "", i, i, i == 2 ? "true" : "false");
    n += (size_t)snprintf(json + n, cap - n, "],\"normalizer\":null,\"pre_tokenizer\":null,\"post_processor\":null,"
                                             "\"decoder\":null,\"model\":{\"type\":\"BPE\",\"vocab\":{");
    for (int i = 0; i < 300; i++)
        n += (size_t)snprintf(json + n, cap - n, "%s\"<t%d>\":%d", i ? "," : "", i, i);
    n += (size_t)snprintf(json + n, cap - n, "},\"merges\":[]}}");
    whet_err e = {{0}};
    whet_tokenizer *t = whet_tokenizer_parse(json, n, "toy tokenizer", &e);
    if (!t)
        fail_msg("%s", e.msg);
    free(json);
    return t;
}

static void write_data(const char *path, int count, int seed)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < count; i++) {
        fputs("{\"text\": \"", f);
        int len = 6 + (i * 7 + seed) % 11, a = 10 + (i * 13 + seed) % 50;
        for (int k = 0; k < len; k++)
            fprintf(f, "<t%d>", 10 + (a + 2 * k) % 250);
        fputs("\"}\n", f);
    }
    fclose(f);
}

typedef struct record {
    int steps, valids, saves, hook_calls;
    uint64_t hook_steps[16];
    int stop_at_hook_call;         /* 1-based call that returns 1 (0: never) */
    volatile sig_atomic_t *stop;
    uint64_t stop_after_step;
} record;

static void rec_step(void *ctx, const whet_progress *p)
{
    record *r = ctx;
    r->steps++;
    assert_non_null(p->stats);
    assert_true(p->step <= p->total_steps);
    if (r->stop && p->step == r->stop_after_step)
        *r->stop = 1; /* as the signal handler would */
}

static void rec_valid(void *ctx, uint64_t step, const whet_valid_stats *v)
{
    record *r = ctx;
    (void)step;
    assert_true(isfinite(v->loss) && v->tokens > 0);
    assert_true(fabs(v->perplexity - exp(v->loss)) < 1e-9 * v->perplexity);
    r->valids++;
}

static void rec_saved(void *ctx, uint64_t step, const char *dir)
{
    record *r = ctx;
    (void)step;
    assert_non_null(strstr(dir, "checkpoint-"));
    r->saves++;
}

static int rec_hook(void *ctx, whet_model *m, uint64_t step, const char *dir, const whet_valid_stats *v,
                    struct whet_metrics *metrics, whet_err *e)
{
    record *r = ctx;
    (void)e;
    assert_non_null(metrics);
    assert_non_null(m->lora);            /* the model as trained: adapter attached */
    assert_int_equal(m->lora->training, 0);
    char manifest[600];
    snprintf(manifest, sizeof manifest, "%s/manifest.json", dir);
    assert_int_equal(access(manifest, F_OK), 0); /* called after the checkpoint is complete */
    assert_non_null(v);
    if (r->hook_calls < 16)
        r->hook_steps[r->hook_calls] = step;
    r->hook_calls++;
    return r->hook_calls == r->stop_at_hook_call;
}

typedef struct setup_t {
    whet_compute *c;
    whet_model *m;
    whet_tokenizer *tok;
    whet_dataset *train, *valid;
    whet_batcher *bt;
    whet_trainer *t;
} setup_t;

static void open_all(setup_t *s, uint64_t total_steps)
{
    whet_err e = {{0}};
    char path[400];
    s->c = whet_compute_create(whet_kernels_best(), 2);
    if (whet_model_load(&s->m, MODELS "/llama", s->c, &e) != 0)
        fail_msg("%s", e.msg);
    s->tok = toy_tokenizer();
    whet_data_options dopt = {.tok = s->tok, .add_eos = 1};
    snprintf(path, sizeof path, "%s/train.jsonl", tmpdir);
    write_data(path, 24, 0);
    if (whet_dataset_open(&s->train, path, &dopt, &e) != 0)
        fail_msg("%s", e.msg);
    snprintf(path, sizeof path, "%s/valid.jsonl", tmpdir);
    write_data(path, 5, 3);
    if (whet_dataset_open(&s->valid, path, &dopt, &e) != 0)
        fail_msg("%s", e.msg);
    whet_batch_options bo = {.batch_size = 4, .seq_len = 24, .shuffle = 1, .pack = 1, .seed = 3};
    s->bt = whet_batcher_create(s->train, &bo, &e);
    assert_non_null(s->bt);
    whet_trainer_options o = {
        .lora = {.rank = 2, .alpha = 4, .dropout = 0.1f, .targets = WHET_LORA_ALL_TARGETS, .seed = 3},
        .batch_size = 4, .seq_len = 24, .grad_accum = 2,
        .adamw = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01, .max_grad_norm = 1.0},
        .schedule = {.kind = WHET_LR_COSINE, .lr = 5e-3, .warmup_steps = 2, .total_steps = total_steps},
    };
    if (whet_trainer_create(&s->t, s->m, &o, &e) != 0)
        fail_msg("%s", e.msg);
}

static void close_all(setup_t *s)
{
    whet_trainer_free(s->t);
    whet_batcher_free(s->bt);
    whet_dataset_close(s->train);
    whet_dataset_close(s->valid);
    whet_tokenizer_free(s->tok);
    whet_model_free(s->m);
    whet_compute_destroy(s->c);
}

static void run_dir(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmpdir, name);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", buf, buf);
    assert_int_equal(system(cmd), 0);
}

static void hooks_and_stops(void **state)
{
    (void)state;
    char dir[300];
    whet_err e = {{0}};
    /* an uninterrupted run: every hook, checkpoints at 3, 6, 9 and the end (10) */
    setup_t a = {0};
    open_all(&a, 10);
    record ra = {0};
    run_dir(dir, sizeof dir, "a");
    whet_train_run run = {.trainer = a.t, .train = a.bt, .valid = a.valid, .grad_accum = 2, .total_steps = 10,
                          .eval_every = 5, .save_every = 3, .keep_checkpoints = 10, .out_dir = dir,
                          .hooks = {&ra, rec_step, rec_valid, rec_saved, rec_hook, NULL}};
    whet_train_result res;
    if (whet_train_run_loop(&run, &res, &e) != 0)
        fail_msg("%s", e.msg);
    assert_int_equal(res.outcome, WHET_TRAIN_COMPLETED);
    assert_int_equal(ra.steps, 10);
    assert_int_equal(ra.valids, 3); /* steps 0, 5, 10 */
    assert_int_equal(ra.saves, 4);
    assert_int_equal(ra.hook_calls, 4);
    assert_true(ra.hook_steps[0] == 3 && ra.hook_steps[3] == 10);
    assert_true(res.has_valid && res.last_valid.loss < res.first_valid.loss);
    float *final_a = malloc(a.t->tensors[0].n * sizeof(float));
    memcpy(final_a, a.t->tensors[0].param, a.t->tensors[0].n * sizeof(float));
    size_t n0 = a.t->tensors[0].n;
    close_all(&a);

    /* the evaluation hook stops the run at its second call (step 6) */
    setup_t b = {0};
    open_all(&b, 10);
    record rb = {.stop_at_hook_call = 2};
    run_dir(dir, sizeof dir, "b");
    run.trainer = b.t, run.train = b.bt, run.valid = b.valid, run.hooks.ctx = &rb;
    if (whet_train_run_loop(&run, &res, &e) != 0)
        fail_msg("%s", e.msg);
    assert_int_equal(res.outcome, WHET_TRAIN_STOPPED_BY_HOOK);
    assert_true(res.state.step == 6);
    close_all(&b);

    /* a stop request after step 4: a checkpoint at 4, then resumed to the same weights as run a */
    setup_t c = {0};
    open_all(&c, 10);
    volatile sig_atomic_t stop = 0;
    record rc = {.stop = &stop, .stop_after_step = 4};
    run_dir(dir, sizeof dir, "c");
    run.trainer = c.t, run.train = c.bt, run.valid = c.valid, run.hooks.ctx = &rc, run.stop = &stop;
    if (whet_train_run_loop(&run, &res, &e) != 0)
        fail_msg("%s", e.msg);
    assert_int_equal(res.outcome, WHET_TRAIN_INTERRUPTED);
    assert_true(res.state.step == 4);
    assert_non_null(strstr(res.last_checkpoint, "checkpoint-4"));
    char ckpt[1200];
    snprintf(ckpt, sizeof ckpt, "%s", res.last_checkpoint);
    close_all(&c);
    setup_t d = {0};
    open_all(&d, 10);
    stop = 0;
    record rd = {0};
    run.trainer = d.t, run.train = d.bt, run.valid = d.valid, run.hooks.ctx = &rd, run.resume_from = ckpt;
    if (whet_train_run_loop(&run, &res, &e) != 0)
        fail_msg("%s", e.msg);
    assert_int_equal(res.outcome, WHET_TRAIN_COMPLETED);
    assert_int_equal(rd.steps, 6);
    assert_int_equal(d.t->tensors[0].n, n0);
    assert_memory_equal(d.t->tensors[0].param, final_a, n0 * sizeof(float));
    close_all(&d);
    run.resume_from = NULL;
    run.stop = NULL;

    /* early stopping: a learning rate that makes validation worse stops after 1 bad validation */
    setup_t f = {0};
    open_all(&f, 10);
    f.t->opt.schedule.lr = 5.0;
    record rf = {0};
    run_dir(dir, sizeof dir, "f");
    run.trainer = f.t, run.train = f.bt, run.valid = f.valid, run.hooks.ctx = &rf, run.eval_every = 1;
    run.early_stop = 1;
    if (whet_train_run_loop(&run, &res, &e) != 0)
        fail_msg("%s", e.msg);
    assert_int_equal(res.outcome, WHET_TRAIN_EARLY_STOPPED);
    assert_true(res.state.step < 10);
    assert_true(res.state.evals_since_best == 1);
    close_all(&f);
    free(final_a);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/whet_train_loop.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plan_counts_what_trains),
        cmocka_unit_test(hooks_and_stops),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
