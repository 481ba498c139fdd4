/* DIR/metrics.jsonl, one JSON object per line:
 *   {"type":"train","step":12,"loss":2.31,"accuracy":0.41,"lr":0.0002,"grad_norm":1.7,
 *    "tokens":2048,"loss_tokens":1530,"tokens_per_s":812.5,"elapsed_s":30.1[,"skipped":true]}
 *   {"type":"valid","step":12,"loss":2.40,"accuracy":0.39,"perplexity":11.0,"tokens":4096}
 *   {"type":"eval","step":12,"baseline":false,"seconds":1.2,"pass_rate":0.5,...}  (whet train --eval,
 *    written by the caller through whet_metrics_line; see whet-train(1))
 * and DIR/report.svg drawn from it: train and valid loss against the step,
 * and the eval pass rate (a second axis, 0-100 %) where there are evals. */
#ifndef WHET_TRAIN_METRICS_H
#define WHET_TRAIN_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "train/trainer.h"
#include "util/file.h"

typedef struct whet_metrics {
    FILE *f;
    char path[1200];
} whet_metrics;

/* Opens DIR/metrics.jsonl for appending. keep_through: records of steps
 * after it are dropped first (a resumed run redoes them); 0 starts afresh. */
int whet_metrics_open(whet_metrics *m, const char *dir, uint64_t keep_through, whet_err *e);
int whet_metrics_train(whet_metrics *m, uint64_t step, const whet_step_stats *s, double tokens_per_s, double elapsed_s,
                       whet_err *e);
int whet_metrics_valid(whet_metrics *m, uint64_t step, const whet_valid_stats *v, whet_err *e);
/* Adds a record made elsewhere: one JSON object (no line break) with
 * "type" and "step" keys, such as whet train's eval records. */
int whet_metrics_line(whet_metrics *m, const char *json, size_t len, whet_err *e);
void whet_metrics_close(whet_metrics *m);

/* Draws the loss curves of metrics_path into svg_path (atomically). */
int whet_report_svg(const char *metrics_path, const char *svg_path, const char *title, whet_err *e);

#endif
