/* The training loop (whet_train_run_loop, train/trainer.h): validation,
 * steps, metrics, checkpoints, stopping, resuming.
 *
 * Order at each step boundary, which a resumed run repeats exactly:
 *   step k → metrics record → validation (every eval_every) → checkpoint
 *   (every save_every, or a stop request) → after_checkpoint hook.
 * The on_start hook runs once before the first step of a session (after
 * step 0's validation), where whet train runs its eval baseline.
 * A checkpoint at step k holds everything a run needs to continue with
 * step k + 1, so resuming from it gives the same bits as not stopping. */
#include "train/trainer.h"

#include "train/checkpoint.h"
#include "train/metrics.h"
#include "util/log.h"
#include "util/timer.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A batch the loop owns: whet_batcher_next's arrays live only until its next
 * call, and a step needs all its micro-batches before the first backward. */
typedef struct owned_batch {
    whet_batch b;
    int32_t *memory;
} owned_batch;

static int copy_batch(owned_batch *o, const whet_batch *src, whet_err *e)
{
    size_t n = src->B * src->T;
    if (!o->memory || o->b.B * o->b.T < n) {
        free(o->memory);
        if (!(o->memory = malloc(4 * n * sizeof *o->memory)))
            return whet_fail(e, "out of memory for a batch of %zu × %zu", src->B, src->T);
    }
    o->b = *src;
    o->b.tokens = o->memory;
    o->b.targets = o->memory + n;
    o->b.positions = o->memory + 2 * n;
    o->b.seg_start = o->memory + 3 * n;
    memcpy(o->b.tokens, src->tokens, n * sizeof *src->tokens);
    memcpy(o->b.targets, src->targets, n * sizeof *src->targets);
    memcpy(o->b.positions, src->positions, n * sizeof *src->positions);
    memcpy(o->b.seg_start, src->seg_start, n * sizeof *src->seg_start);
    return 0;
}

typedef struct loop {
    const whet_train_run *run;
    whet_trainer *t;
    whet_train_result *res;
    whet_metrics metrics;
    uint64_t last_saved;      /* step of the newest checkpoint (UINT64_MAX: none this session) */
    uint64_t last_validated;
} loop;

static int validate(loop *lp, whet_err *e)
{
    const whet_train_run *run = lp->run;
    whet_run_state *st = &lp->res->state;
    if (!run->valid || lp->last_validated == st->step)
        return 0;
    whet_valid_stats v;
    if (whet_trainer_validate(lp->t, run->valid, &v, e) != 0 || whet_metrics_valid(&lp->metrics, st->step, &v, e) != 0)
        return -1;
    lp->last_validated = st->step;
    if (!lp->res->has_valid)
        lp->res->first_valid = v;
    lp->res->has_valid = 1;
    lp->res->last_valid = v;
    if (v.loss < st->best_valid_loss) {
        st->best_valid_loss = v.loss;
        st->evals_since_best = 0;
    } else if (st->step > 0) {
        st->evals_since_best++;
    }
    if (run->hooks.on_valid)
        run->hooks.on_valid(run->hooks.ctx, st->step, &v);
    return 0;
}

/* Writes checkpoint-STEP, then calls the evaluation hook. *stop_by_hook is
 * set when the hook asks to stop. */
static int save(loop *lp, int *stop_by_hook, whet_err *e)
{
    const whet_train_run *run = lp->run;
    whet_run_state *st = &lp->res->state;
    if (lp->last_saved == st->step)
        return 0;
    /* rotation after the write, sparing the checkpoint the caller keeps */
    if (whet_trainer_save(lp->t, st, run->out_dir, 0, lp->res->last_checkpoint, sizeof lp->res->last_checkpoint,
                          e) != 0 ||
        whet_ckpt_rotate(run->out_dir, run->keep_checkpoints, run->also_keep ? *run->also_keep : UINT64_MAX, e) != 0)
        return -1;
    lp->last_saved = st->step;
    if (run->hooks.on_checkpoint_saved)
        run->hooks.on_checkpoint_saved(run->hooks.ctx, st->step, lp->res->last_checkpoint);
    if (run->hooks.after_checkpoint) {
        int rc = run->hooks.after_checkpoint(run->hooks.ctx, lp->t->m, st->step, lp->res->last_checkpoint,
                                             lp->res->has_valid ? &lp->res->last_valid : NULL, &lp->metrics, e);
        if (rc < 0)
            return -1;
        if (rc > 0 && stop_by_hook)
            *stop_by_hook = 1;
    }
    return 0;
}

int whet_train_run_loop(const whet_train_run *run, whet_train_result *res, whet_err *e)
{
    memset(res, 0, sizeof *res);
    whet_run_state *st = &res->state;
    st->best_valid_loss = INFINITY;
    loop lp = {.run = run, .t = run->trainer, .res = res, .last_saved = UINT64_MAX, .last_validated = UINT64_MAX};
    whet_trainer *t = run->trainer;
    size_t accum = run->grad_accum ? run->grad_accum : 1;
    size_t max_bad = run->max_nonfinite ? run->max_nonfinite : 5;
    owned_batch *micro = calloc(accum, sizeof *micro);
    whet_batch *batches = calloc(accum, sizeof *batches);
    int rc = -1;
    if (!micro || !batches) {
        whet_fail(e, "out of memory");
        goto done;
    }
    if (run->resume_from) {
        if (whet_trainer_load(t, run->resume_from, st, e) != 0 || whet_batcher_restore(run->train, &st->batcher, e) != 0)
            goto done;
        lp.last_saved = st->step;
        lp.last_validated = st->step; /* its validation, if due, happened before the checkpoint */
        snprintf(res->last_checkpoint, sizeof res->last_checkpoint, "%s", run->resume_from);
    } else {
        st->batcher = whet_batcher_save(run->train);
    }
    if (whet_metrics_open(&lp.metrics, run->out_dir, st->step, e) != 0)
        goto done;
    if (st->step == 0 && validate(&lp, e) != 0)
        goto done;
    if (run->hooks.on_start && run->hooks.on_start(run->hooks.ctx, t->m, st->step, &lp.metrics, e) != 0)
        goto done;
    double t0 = whet_now(), elapsed_before = st->elapsed_s;
    size_t session_tokens = 0;
    uint64_t first_step = st->step;
    res->outcome = WHET_TRAIN_COMPLETED;
    while (st->step < run->total_steps) {
        if (run->stop && *run->stop) {
            res->outcome = WHET_TRAIN_INTERRUPTED;
            break;
        }
        for (size_t i = 0; i < accum; i++) {
            whet_batch b;
            if (whet_batcher_next(run->train, &b, e) != 0 || copy_batch(&micro[i], &b, e) != 0)
                goto done;
            batches[i] = micro[i].b;
        }
        if (whet_trainer_step(t, batches, accum, &res->last, e) != 0)
            goto done;
        st->step = t->step;
        st->adam_t = t->optim->t;
        st->batcher = whet_batcher_save(run->train);
        session_tokens += res->last.tokens;
        double now = whet_now(), session = now - t0;
        if (res->last.skipped) {
            st->nonfinite_in_row++;
            whet_warn("step %" PRIu64 ": %s is not finite (loss %g, gradient norm %g); the step is skipped", st->step,
                      isfinite(res->last.loss) ? "the gradient" : "the loss", res->last.loss, res->last.grad_norm);
        } else {
            st->nonfinite_in_row = 0;
            st->tokens_seen += res->last.loss_tokens;
        }
        whet_progress p = {
            .step = st->step,
            .total_steps = run->total_steps,
            .stats = &res->last,
            .tokens_per_s = session > 0 ? (double)session_tokens / session : 0,
            .elapsed_s = session,
            .eta_s = session / (double)(st->step - first_step) * (double)(run->total_steps - st->step),
        };
        st->elapsed_s = elapsed_before + session;
        if (whet_metrics_train(&lp.metrics, st->step, &res->last, p.tokens_per_s, st->elapsed_s, e) != 0)
            goto done;
        if (run->hooks.on_step)
            run->hooks.on_step(run->hooks.ctx, &p);
        if (st->nonfinite_in_row >= max_bad) {
            /* the weights were not touched by the skipped steps, but something is wrong: stop and keep the last
             * good checkpoint as it is */
            res->outcome = WHET_TRAIN_NONFINITE;
            break;
        }
        int at_end = st->step == run->total_steps;
        if (run->valid && run->eval_every && st->step % run->eval_every == 0 && validate(&lp, e) != 0)
            goto done;
        if (run->early_stop && st->evals_since_best >= run->early_stop) {
            res->outcome = WHET_TRAIN_EARLY_STOPPED;
            break;
        }
        /* no periodic checkpoint inside a run of skipped steps: the last good one stays the newest */
        int due = (run->save_every && st->step % run->save_every == 0 && st->nonfinite_in_row == 0) ||
                  (run->stop && *run->stop);
        if (due && !at_end) {
            int by_hook = 0;
            if (save(&lp, &by_hook, e) != 0)
                goto done;
            if (by_hook) {
                res->outcome = WHET_TRAIN_STOPPED_BY_HOOK;
                break;
            }
        }
    }
    if (res->outcome == WHET_TRAIN_COMPLETED || res->outcome == WHET_TRAIN_EARLY_STOPPED) {
        if (validate(&lp, e) != 0)
            goto done;
    }
    if (res->outcome != WHET_TRAIN_NONFINITE && res->outcome != WHET_TRAIN_STOPPED_BY_HOOK) {
        int by_hook = 0;
        if (save(&lp, &by_hook, e) != 0)
            goto done;
        if (by_hook && res->outcome == WHET_TRAIN_COMPLETED)
            res->outcome = WHET_TRAIN_STOPPED_BY_HOOK;
    }
    res->session_s = whet_now() - t0;
    rc = 0;
done:
    whet_metrics_close(&lp.metrics);
    for (size_t i = 0; micro && i < accum; i++)
        free(micro[i].memory);
    free(micro);
    free(batches);
    return rc;
}
