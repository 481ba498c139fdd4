/* The training loop's parts that stand alone: learning-rate schedules (HF's
 * formulas at their landmarks), AdamW over parameter groups against a
 * double-precision reference of torch.optim.AdamW + clip_grad_norm_, the
 * gradient norm's bits for any thread count, the run file (defaults, file
 * syntax, errors with file:line, round trip), and checkpoint directories
 * (manifest, checksums, damage found, the last K kept, stale temporaries). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "train/checkpoint.h"
#include "train/optim.h"
#include "train/runconf.h"
#include "train/schedule.h"
#include "util/compute.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- schedules ---------------------------------------------------------------- */

static void schedules_follow_hf(void **state)
{
    (void)state;
    whet_schedule s = {WHET_LR_COSINE, 1e-3, 0, 10, 110};
    /* warmup: step/W, the first step at 0 */
    assert_true(whet_schedule_lr(&s, 0) == 0.0);
    assert_true(fabs(whet_schedule_lr(&s, 5) - 5e-4) < 1e-18);
    assert_true(whet_schedule_lr(&s, 10) == 1e-3);
    /* cosine: half way through the decay at half the peak, 0 at the end */
    assert_true(fabs(whet_schedule_lr(&s, 60) - 5e-4) < 1e-15);
    assert_true(fabs(whet_schedule_lr(&s, 110)) < 1e-18);
    /* with a floor: min + (lr - min)·factor */
    s.min_lr = 1e-4;
    assert_true(fabs(whet_schedule_lr(&s, 60) - 5.5e-4) < 1e-15);
    assert_true(fabs(whet_schedule_lr(&s, 110) - 1e-4) < 1e-15);
    assert_true(fabs(whet_schedule_lr(&s, 35) - (1e-4 + 9e-4 * 0.5 * (1 + cos(M_PI * 0.25)))) < 1e-15);
    /* linear: (S - step)/(S - W) */
    s = (whet_schedule){WHET_LR_LINEAR, 2e-4, 0, 0, 100};
    assert_true(whet_schedule_lr(&s, 0) == 2e-4);
    assert_true(fabs(whet_schedule_lr(&s, 25) - 1.5e-4) < 1e-18);
    assert_true(whet_schedule_lr(&s, 100) == 0.0);
    /* constant: warmup, then flat */
    s = (whet_schedule){WHET_LR_CONSTANT, 3e-4, 0, 4, 100};
    assert_true(fabs(whet_schedule_lr(&s, 1) - 0.75e-4) < 1e-18);
    assert_true(whet_schedule_lr(&s, 4) == 3e-4 && whet_schedule_lr(&s, 99) == 3e-4);
    assert_int_equal(whet_lr_schedule_from_name("cosine"), WHET_LR_COSINE);
    assert_int_equal(whet_lr_schedule_from_name("exp"), -1);
}

/* ---- AdamW -------------------------------------------------------------------- */

static float frand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return ((float)((*s >> 8) & 0xffff) / 65536.0f - 0.5f) * 2.0f;
}

/* torch.optim.AdamW (single-tensor) and clip_grad_norm_, in double. */
static void reference_steps(double *p, double *m, double *v, const float *const *grads, size_t n, const int *decay,
                            int steps, double lr, double wd, double clip)
{
    const double b1 = 0.9, b2 = 0.95, eps = 1e-8;
    for (int t = 1; t <= steps; t++) {
        const float *g = grads[t - 1];
        double sq = 0;
        for (size_t i = 0; i < n; i++)
            sq += (double)g[i] * g[i];
        double coef = clip / (sqrt(sq) + 1e-6);
        if (coef > 1)
            coef = 1;
        for (size_t i = 0; i < n; i++) {
            double gi = g[i] * coef;
            if (decay[i])
                p[i] *= 1 - lr * wd;
            m[i] = b1 * m[i] + (1 - b1) * gi;
            v[i] = b2 * v[i] + (1 - b2) * gi * gi;
            double denom = sqrt(v[i]) / sqrt(1 - pow(b2, t)) + eps;
            p[i] -= lr / (1 - pow(b1, t)) * m[i] / denom;
        }
    }
}

static void adamw_matches_reference(void **state)
{
    (void)state;
    /* two tensors: a decayed matrix spanning several chunks, an undecayed norm */
    size_t na = 3 * WHET_OPTIM_CHUNK + 17, nb = 33, n = na + nb;
    float *param = malloc(n * sizeof *param), *grad = malloc(n * sizeof *grad);
    double *p = malloc(n * sizeof *p), *m = calloc(n, sizeof *m), *v = calloc(n, sizeof *v);
    int *decay = malloc(n * sizeof *decay);
    float *g_steps[3];
    unsigned seed = 7;
    for (size_t i = 0; i < n; i++) {
        param[i] = frand(&seed);
        p[i] = param[i];
        decay[i] = i < na;
    }
    for (int s = 0; s < 3; s++) {
        g_steps[s] = malloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++)
            g_steps[s][i] = frand(&seed) * (s == 1 ? 0.001f : 0.05f); /* step 2 below the clip, 1 and 3 above */
    }
    whet_param_tensor t[2] = {{.name = "w", .param = param, .grad = grad, .n = na, .decay = 1},
                              {.name = "norm", .param = param + na, .grad = grad + na, .n = nb, .decay = 0}};
    whet_adamw_config cfg = {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .max_grad_norm = 1.0};
    whet_optim *o;
    whet_err e = {{0}};
    assert_int_equal(whet_optim_create(&o, t, 2, &cfg, &e), 0);
    assert_int_equal(whet_optim_param_floats(o), n);
    whet_compute *c1 = whet_compute_create(whet_kernels_best(), 1), *c2 = whet_compute_create(whet_kernels_best(), 2);
    double lr = 3e-3;
    for (int s = 0; s < 3; s++) {
        memcpy(grad, g_steps[s], n * sizeof *grad);
        double norm1 = whet_optim_grad_norm(o, c1), norm2 = whet_optim_grad_norm(o, c2);
        assert_memory_equal(&norm1, &norm2, sizeof norm1); /* same bits for any thread count */
        double sq = 0;
        for (size_t i = 0; i < n; i++)
            sq += (double)grad[i] * grad[i];
        assert_true(fabs(norm1 - sqrt(sq)) <= 1e-12 * sqrt(sq));
        float scale = whet_optim_clip_scale(o, norm1);
        assert_true(s == 1 ? scale == 1.0f : scale < 1.0f);
        whet_optim_step(o, s % 2 ? c2 : c1, lr, scale);
    }
    assert_int_equal(o->t, 3);
    reference_steps(p, m, v, (const float *const *)g_steps, n, decay, 3, lr, 0.1, 1.0);
    double worst = 0;
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, fabs(param[i] - p[i]) / (fabs(p[i]) + 1e-3));
    assert_true(worst < 1e-5);
    /* the undecayed group really was not decayed: with a zero gradient from here on, only decay moves it */
    memset(grad, 0, n * sizeof *grad);
    memset(o->state, 0, o->state_floats * sizeof *o->state);
    float before_w = param[0], before_n = param[na];
    whet_optim_step(o, c1, 0.5, 1.0f);
    assert_true(param[na] == before_n);
    assert_true(fabsf(param[0] - before_w * (1.0f - 0.5f * 0.1f)) <= 1e-7f * fabsf(before_w) + 1e-12f);
    /* a NaN gradient gives a NaN norm */
    grad[5] = NAN;
    assert_true(isnan(whet_optim_grad_norm(o, c2)));
    whet_optim_free(o);
    whet_compute_destroy(c1);
    whet_compute_destroy(c2);
    for (int s = 0; s < 3; s++)
        free(g_steps[s]);
    free(param), free(grad), free(p), free(m), free(v), free(decay);
}

/* ---- the run file --------------------------------------------------------------- */

static char tmpdir[256];

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void run_file_reads_and_round_trips(void **state)
{
    (void)state;
    whet_run_config c, d;
    whet_run_config_defaults(&c);
    assert_int_equal(c.lora_rank, 8);
    assert_true(c.lr == 1e-4 && c.adam_beta2 == 0.999 && c.grad_clip == 1.0);
    assert_int_equal(c.shuffle, 1);
    assert_int_equal(c.pack, 0);
    assert_int_equal(c.seed, 42);
    char path[300];
    snprintf(path, sizeof path, "%s/run.conf", tmpdir);
    write_text(path, "# a comment\n\nmodel = /m/x # trailing comment\n  lr=2e-4\nlr-schedule = linear\n"
                     "no-shuffle = true\npack = yes\nmethod = full\nseed = 18446744073709551615\n"
                     "lora-targets = q,v\ndata = a#b.jsonl\n");
    whet_err e = {{0}};
    assert_int_equal(whet_run_config_load(&c, path, &e), 0);
    assert_string_equal(c.model, "/m/x");
    assert_string_equal(c.data, "a#b.jsonl"); /* '#' inside a value is not a comment */
    assert_true(c.lr == 2e-4);
    assert_int_equal(c.lr_schedule, WHET_LR_LINEAR);
    assert_int_equal(c.shuffle, 0);
    assert_int_equal(c.pack, 1);
    assert_int_equal(c.method, 1);
    assert_true(c.seed == UINT64_MAX);
    assert_string_equal(c.lora_targets, "q,v");
    /* the command line overrides, flags without a value */
    assert_int_equal(whet_run_config_set(&c, "shuffle", NULL, "--shuffle", &e), 0);
    assert_int_equal(c.shuffle, 1);
    assert_int_equal(whet_run_config_set(&c, "lr", "0.1", "--lr", &e), 0);
    c.adam_eps = 1.0 / 3.0; /* a double that needs 17 digits */
    /* written and read back: the same configuration */
    assert_int_equal(whet_run_config_write(&c, path, &e), 0);
    whet_run_config_defaults(&d);
    assert_int_equal(whet_run_config_load(&d, path, &e), 0);
    assert_memory_equal(&c, &d, sizeof c);
    char *text = whet_run_config_text(&c);
    assert_non_null(strstr(text, "\nlr = 0.1\n"));
    assert_non_null(strstr(text, "\nshuffle = true\n"));
    free(text);
}

/* eval, the repeatable key: one line per value, "" empties it */
static void run_file_lists_round_trip(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/list.conf", tmpdir);
    write_text(path, "eval = /s/a.jsonl\neval = /s/b c.jsonl # two\ngate = true\n");
    whet_run_config c, d;
    whet_run_config_defaults(&c);
    assert_string_equal(c.eval, "");
    assert_int_equal(c.gate, 0);
    whet_err e = {{0}};
    assert_int_equal(whet_run_config_load(&c, path, &e), 0);
    assert_string_equal(c.eval, "/s/a.jsonl\n/s/b c.jsonl");
    assert_int_equal(c.gate, 1);
    char *text = whet_run_config_text(&c);
    assert_non_null(strstr(text, "\neval = /s/a.jsonl\neval = /s/b c.jsonl\ngate = true\n"));
    free(text);
    assert_int_equal(whet_run_config_write(&c, path, &e), 0);
    whet_run_config_defaults(&d);
    assert_int_equal(whet_run_config_load(&d, path, &e), 0);
    assert_string_equal(d.eval, c.eval);
    /* an empty value clears the list; an empty list is written as "eval =" and reads back empty */
    assert_int_equal(whet_run_config_set(&c, "eval", "", "--eval", &e), 0);
    assert_string_equal(c.eval, "");
    text = whet_run_config_text(&c);
    assert_non_null(strstr(text, "\neval =\n"));
    free(text);
    assert_int_equal(whet_run_config_write(&c, path, &e), 0);
    assert_int_equal(whet_run_config_load(&d, path, &e), 0);
    assert_string_equal(d.eval, "");
    assert_int_equal(whet_run_config_set(&c, "eval", "a\nb", "--eval", &e), -1);
    assert_string_equal(e.msg, "--eval: eval: a value cannot hold a line break");
    /* values the run file would read back differently (found by fuzz_runconf) */
    assert_int_equal(whet_run_config_set(&c, "eval", "#suite.jsonl", "--eval", &e), -1);
    assert_non_null(strstr(e.msg, "comment"));
    assert_int_equal(whet_run_config_set(&c, "data", "my #1 data", "--data", &e), -1);
    assert_int_equal(whet_run_config_set(&c, "data", " data", "--data", &e), -1);
    assert_int_equal(whet_run_config_set(&c, "data", "data#1", "--data", &e), 0);
    /* too many values for the buffer: refused, not cut */
    char big[WHET_RUN_PATH_MAX];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    int rc = 0;
    for (int i = 0; i < 16 && rc == 0; i++)
        rc = whet_run_config_set(&c, "eval", big, "--eval", &e);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, "the values together are longer than"));
}

static void expect_load_error(const char *content, const char *message)
{
    char path[300];
    snprintf(path, sizeof path, "%s/bad.conf", tmpdir);
    write_text(path, content);
    whet_run_config c;
    whet_run_config_defaults(&c);
    whet_err e = {{0}};
    assert_int_equal(whet_run_config_load(&c, path, &e), -1);
    char want[600];
    snprintf(want, sizeof want, "%s/%s", tmpdir, message);
    if (strcmp(e.msg, want) != 0)
        fail_msg("got  %s\nwant %s", e.msg, want);
}

static void run_file_errors_name_the_line(void **state)
{
    (void)state;
    expect_load_error("lr = 1e-4\nbatch-size = many\n",
                      "bad.conf:2: batch-size: expected a whole number from 1 to 65536, got 'many'");
    expect_load_error("\n\nlearning-rate = 1\n", "bad.conf:3: unknown option 'learning-rate' (see whet-run(5) for the keys)");
    expect_load_error("steps 100\n", "bad.conf:1: expected `key = value`, found 'steps 100'");
    expect_load_error("lr = -1\n", "bad.conf:1: lr: expected a number from 0 to 10, got '-1'");
    expect_load_error("method = qlora\n", "bad.conf:1: method: expected lora|full, got 'qlora'");
    expect_load_error("shuffle = maybe\n", "bad.conf:1: shuffle: expected true or false, got 'maybe'");
    expect_load_error("no-rslora = true\n", "bad.conf:1: unknown option 'no-rslora' (see whet-run(5) for the keys)");
    expect_load_error(" = 3\n", "bad.conf:1: expected a key before '='");
    whet_run_config c;
    whet_err e = {{0}};
    assert_int_equal(whet_run_config_set(&c, "steps", NULL, "--steps", &e), -1);
    assert_string_equal(e.msg, "--steps: steps needs a value");
}

/* ---- checkpoints ------------------------------------------------------------------ */

static void write_one(const char *run, uint64_t step, size_t keep, float value)
{
    whet_ckpt_writer w;
    whet_err e = {{0}};
    assert_int_equal(whet_ckpt_begin(&w, run, step, &e), 0);
    float data[6] = {value, 1, 2, 3, 4, 5};
    int64_t shape[2] = {2, 3};
    whet_st_entry t = {"w", WHET_ST_F32, 2, shape, data};
    assert_int_equal(whet_ckpt_add_safetensors(&w, "weights.safetensors", &t, 1, &e), 0);
    assert_int_equal(whet_ckpt_add_file(&w, "state.json", "{\"step\": 1}\n", 12, &e), 0);
    if (whet_ckpt_commit(&w, keep, &e) != 0)
        fail_msg("%s", e.msg);
}

static void checkpoints_verify_and_rotate(void **state)
{
    (void)state;
    char run[300], path[400];
    snprintf(run, sizeof run, "%s/run", tmpdir);
    mkdir(run, 0777);
    whet_err e = {{0}};
    /* a stale temporary from a killed writer is ignored, then cleared */
    snprintf(path, sizeof path, "%s/.checkpoint-30.tmp", run);
    mkdir(path, 0777);
    for (uint64_t s = 10; s <= 40; s += 10)
        write_one(run, s, 3, (float)s);
    struct stat st;
    assert_int_equal(stat(path, &st), -1);
    uint64_t *steps;
    size_t n;
    assert_int_equal(whet_ckpt_list(run, &steps, &n, &e), 0);
    assert_int_equal(n, 3); /* checkpoint-10 rotated out */
    assert_true(steps[0] == 20 && steps[2] == 40);
    free(steps);
    uint64_t step;
    char latest[400];
    assert_int_equal(whet_ckpt_latest(run, latest, sizeof latest, &step, NULL, &e), 0);
    assert_true(step == 40);
    /* rewriting a step replaces it whole */
    write_one(run, 40, 3, 41.0f);
    assert_int_equal(whet_ckpt_verify(latest, &step, &e), 0);
    /* one flipped byte is found, and the one before is used instead */
    snprintf(path, sizeof path, "%s/checkpoint-40/weights.safetensors", run);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, -3, SEEK_END);
    fputc(0x7f, f);
    fclose(f);
    assert_int_equal(whet_ckpt_verify(latest, &step, &e), -1);
    assert_non_null(strstr(e.msg, "checkpoint-40/weights.safetensors: xxh64 "));
    assert_non_null(strstr(e.msg, "the checkpoint is damaged"));
    assert_int_equal(whet_ckpt_latest(run, latest, sizeof latest, &step, NULL, &e), 0);
    assert_true(step == 30);
    /* a truncated file too */
    snprintf(path, sizeof path, "%s/checkpoint-30/state.json", run);
    assert_int_equal(truncate(path, 3), 0);
    assert_int_equal(whet_ckpt_verify(latest, &step, &e), -1);
    assert_non_null(strstr(e.msg, "state.json: 3 bytes, but "));
    assert_int_equal(whet_ckpt_latest(run, latest, sizeof latest, &step, NULL, &e), 0);
    assert_true(step == 20);

    /* rotation that spares one older checkpoint (whet train --gate's best) */
    snprintf(run, sizeof run, "%s/run2", tmpdir);
    mkdir(run, 0777);
    for (uint64_t s = 10; s <= 40; s += 10)
        write_one(run, s, 0, (float)s);
    assert_int_equal(whet_ckpt_rotate(run, 2, 10, &e), 0);
    assert_int_equal(whet_ckpt_list(run, &steps, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_true(steps[0] == 10 && steps[1] == 30 && steps[2] == 40);
    free(steps);
    assert_int_equal(whet_ckpt_rotate(run, 2, UINT64_MAX, &e), 0);
    assert_int_equal(whet_ckpt_list(run, &steps, &n, &e), 0);
    assert_true(n == 2 && steps[0] == 30);
    free(steps);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/whet_train_units.XXXXXX");
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
        cmocka_unit_test(schedules_follow_hf),
        cmocka_unit_test(adamw_matches_reference),
        cmocka_unit_test(run_file_reads_and_round_trips),
        cmocka_unit_test(run_file_lists_round_trip),
        cmocka_unit_test(run_file_errors_name_the_line),
        cmocka_unit_test(checkpoints_verify_and_rotate),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
