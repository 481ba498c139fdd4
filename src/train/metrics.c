#include "train/metrics.h"

#include "io/json.h"
#include "util/log.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* The step of a record line, or -1 when the line is not a record. */
static int64_t record_step(const char *line, size_t len)
{
    whet_json_doc *doc;
    if (whet_json_parse(&doc, line, len, "metrics", NULL, NULL) != 0)
        return -1;
    int64_t step = -1;
    const whet_json *s = whet_json_get(whet_json_root(doc), "step");
    if (s && s->type == WHET_JSON_NUMBER && s->u.number.int_status == WHET_JSON_INT_EXACT)
        step = s->u.number.integer;
    whet_json_free(doc);
    return step;
}

int whet_metrics_open(whet_metrics *m, const char *dir, uint64_t keep_through, whet_err *e)
{
    memset(m, 0, sizeof *m);
    snprintf(m->path, sizeof m->path, "%s/metrics.jsonl", dir);
    char *old = NULL;
    size_t size = 0;
    if (keep_through > 0 && whet_read_file(m->path, &old, &size, NULL) == 0) {
        /* keep the records up to the checkpoint; the resumed run writes the rest again */
        size_t kept = 0;
        for (size_t at = 0; at < size;) {
            char *nl = memchr(old + at, '\n', size - at);
            size_t len = nl ? (size_t)(nl - (old + at)) : size - at;
            int64_t step = record_step(old + at, len);
            if (nl && step >= 0 && (uint64_t)step <= keep_through) {
                memmove(old + kept, old + at, len + 1);
                kept += len + 1;
            }
            at += len + (nl ? 1 : 0);
        }
        int rc = whet_write_file_atomic(m->path, old, kept, e);
        free(old);
        if (rc != 0)
            return -1;
    }
    m->f = fopen(m->path, keep_through > 0 ? "a" : "w");
    if (!m->f)
        return whet_fail(e, "%s: cannot open for writing: %s", m->path, strerror(errno));
    return 0;
}

static int emit(whet_metrics *m, whet_json_writer *w, whet_err *e)
{
    const char *text;
    size_t len;
    int rc = whet_json_writer_finish(w, m->path, &text, &len, e);
    if (rc == 0 && (fwrite(text, 1, len, m->f) != len || fputc('\n', m->f) == EOF || fflush(m->f) != 0))
        rc = whet_fail(e, "%s: write failed: %s", m->path, strerror(errno));
    whet_json_writer_free(w);
    return rc;
}

static void key_double(whet_json_writer *w, const char *key, double v)
{
    whet_json_key(w, key);
    whet_json_write_double(w, v);
}

int whet_metrics_train(whet_metrics *m, uint64_t step, const whet_step_stats *s, double tokens_per_s, double elapsed_s,
                       whet_err *e)
{
    whet_json_writer w;
    whet_json_writer_init(&w, 0);
    whet_json_begin_object(&w);
    whet_json_key(&w, "type");
    whet_json_write_string(&w, "train");
    whet_json_key(&w, "step");
    whet_json_write_int(&w, (int64_t)step);
    key_double(&w, "loss", s->loss);
    key_double(&w, "accuracy", s->accuracy);
    key_double(&w, "lr", s->lr);
    key_double(&w, "grad_norm", s->grad_norm);
    whet_json_key(&w, "tokens");
    whet_json_write_int(&w, (int64_t)s->tokens);
    whet_json_key(&w, "loss_tokens");
    whet_json_write_int(&w, (int64_t)s->loss_tokens);
    key_double(&w, "tokens_per_s", round(tokens_per_s * 10) / 10);
    key_double(&w, "elapsed_s", round(elapsed_s * 1000) / 1000);
    if (s->skipped) {
        whet_json_key(&w, "skipped");
        whet_json_write_bool(&w, 1);
    }
    whet_json_end_object(&w);
    return emit(m, &w, e);
}

int whet_metrics_valid(whet_metrics *m, uint64_t step, const whet_valid_stats *v, whet_err *e)
{
    whet_json_writer w;
    whet_json_writer_init(&w, 0);
    whet_json_begin_object(&w);
    whet_json_key(&w, "type");
    whet_json_write_string(&w, "valid");
    whet_json_key(&w, "step");
    whet_json_write_int(&w, (int64_t)step);
    key_double(&w, "loss", v->loss);
    key_double(&w, "accuracy", v->accuracy);
    key_double(&w, "perplexity", v->perplexity);
    whet_json_key(&w, "tokens");
    whet_json_write_int(&w, (int64_t)v->tokens);
    whet_json_end_object(&w);
    return emit(m, &w, e);
}

int whet_metrics_line(whet_metrics *m, const char *json, size_t len, whet_err *e)
{
    if (memchr(json, '\n', len))
        return whet_fail(e, "%s: a record must be one line", m->path);
    if (fwrite(json, 1, len, m->f) != len || fputc('\n', m->f) == EOF || fflush(m->f) != 0)
        return whet_fail(e, "%s: write failed: %s", m->path, strerror(errno));
    return 0;
}

void whet_metrics_close(whet_metrics *m)
{
    if (m->f)
        fclose(m->f);
    m->f = NULL;
}

/* ---- report.svg --------------------------------------------------------------- */

typedef struct series {
    double *x, *y;
    size_t n, cap;
} series;

static int series_add(series *s, double x, double y)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        double *nx = realloc(s->x, cap * sizeof *nx);
        if (!nx)
            return -1;
        s->x = nx;
        double *ny = realloc(s->y, cap * sizeof *ny);
        if (!ny)
            return -1;
        s->y = ny;
        s->cap = cap;
    }
    s->x[s->n] = x;
    s->y[s->n] = y;
    s->n++;
    return 0;
}

typedef struct svg_buf {
    char *text;
    size_t len, cap;
    int failed;
} svg_buf;

static void put(svg_buf *b, const char *fmt, ...) WHET_PRINTF(2, 3);

static void put(svg_buf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->text ? b->text + b->len : NULL, b->text ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if (b->text && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? 2 * b->cap : 8192;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *t = realloc(b->text, cap);
        if (!t) {
            b->failed = 1;
            return;
        }
        b->text = t;
        b->cap = cap;
    }
}

/* A "nice" tick step (1, 2, 5 × 10^k) giving about `want` ticks over span. */
static double nice_step(double span, int want)
{
    double raw = span / want, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

static void escape_text(svg_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '<')
            put(b, "&lt;");
        else if (*s == '>')
            put(b, "&gt;");
        else if (*s == '&')
            put(b, "&amp;");
        else
            put(b, "%c", *s);
    }
}

int whet_report_svg(const char *metrics_path, const char *svg_path, const char *title, whet_err *e)
{
    char *text;
    size_t size;
    if (whet_read_file(metrics_path, &text, &size, e) != 0)
        return -1;
    series train = {0}, valid = {0}, evals = {0};
    /* evals: y is the pass rate; gate_failed[i] marks the points drawn as failed */
    unsigned char *gate_failed = NULL;
    size_t gate_cap = 0;
    int oom = 0;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        size_t len = next ? (size_t)(next - line) : strlen(line);
        if (next)
            next++;
        whet_json_doc *doc;
        if (whet_json_parse(&doc, line, len, metrics_path, NULL, NULL) != 0)
            continue;
        const whet_json *r = whet_json_root(doc), *type = whet_json_get(r, "type");
        const whet_json *step = whet_json_get(r, "step"), *loss = whet_json_get(r, "loss");
        const char *kind = whet_json_string(type) ? whet_json_string(type) : "";
        const whet_json *rate = whet_json_get(r, "pass_rate"), *passed = whet_json_get(r, "gate_passed");
        if (strcmp(kind, "eval") == 0 && step && step->type == WHET_JSON_NUMBER && rate &&
            rate->type == WHET_JSON_NUMBER && isfinite(rate->u.number.value)) {
            if (evals.n == gate_cap) {
                gate_cap = gate_cap ? 2 * gate_cap : 64;
                unsigned char *g = realloc(gate_failed, gate_cap);
                oom |= !g;
                if (g)
                    gate_failed = g;
            }
            if (!oom) {
                gate_failed[evals.n] = passed && passed->type == WHET_JSON_FALSE;
                oom |= series_add(&evals, step->u.number.value, rate->u.number.value) != 0;
            }
        } else if ((strcmp(kind, "train") == 0 || strcmp(kind, "valid") == 0) && step && loss &&
                   step->type == WHET_JSON_NUMBER && loss->type == WHET_JSON_NUMBER && isfinite(loss->u.number.value)) {
            series *s = kind[0] == 'v' ? &valid : &train;
            oom |= series_add(s, step->u.number.value, loss->u.number.value) != 0;
        }
        whet_json_free(doc);
    }
    free(text);
    if (oom) {
        free(train.x), free(train.y), free(valid.x), free(valid.y), free(evals.x), free(evals.y), free(gate_failed);
        return whet_fail(e, "%s: out of memory", svg_path);
    }
    /* the plot area and the data ranges (a right axis for the pass rate when there are evals) */
    const double W = 720, H = 420, left = 70, right = evals.n ? 60 : 20, top = 40, bottom = 50;
    double x0 = 0, x1 = 1, y0 = INFINITY, y1 = -INFINITY;
    series *all[2] = {&train, &valid};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < all[k]->n; i++) {
            x1 = fmax(x1, all[k]->x[i]);
            y0 = fmin(y0, all[k]->y[i]);
            y1 = fmax(y1, all[k]->y[i]);
        }
    for (size_t i = 0; i < evals.n; i++)
        x1 = fmax(x1, evals.x[i]);
    if (!(y0 <= y1))
        y0 = 0, y1 = 1;
    if (y1 - y0 < 1e-6)
        y0 -= 0.5, y1 += 0.5;
    double ystep = nice_step(y1 - y0, 6), xstep = nice_step(x1 - x0, 8);
    y0 = floor(y0 / ystep) * ystep;
    y1 = ceil(y1 / ystep) * ystep;
    double pw = W - left - right, ph = H - top - bottom;
#define PX(x) (left + ((x) - x0) / (x1 - x0) * pw)
#define PY(y) (top + (1 - ((y) - y0) / (y1 - y0)) * ph)
    svg_buf b = {0};
    put(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    put(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
    put(&b, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"%.0f\" y=\"22\" font-size=\"14\">",
        left);
    escape_text(&b, title ? title : "whet train");
    put(&b, "</text>\n");
    for (double y = y0; y <= y1 + ystep / 2; y += ystep) {
        put(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", left, PY(y), W - right,
            PY(y));
        put(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>\n", left - 6, PY(y) + 4, y);
    }
    for (double x = 0; x <= x1 + xstep / 2; x += xstep) {
        put(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n", PX(x), top, PX(x),
            H - bottom);
        put(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n", PX(x), H - bottom + 16, x);
    }
    put(&b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#444\"/>\n", left, top,
        pw, ph);
    put(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n", left + pw / 2, H - 12);
    put(&b, "<text transform=\"translate(16 %.1f) rotate(-90)\" text-anchor=\"middle\">loss (nats/token)</text>\n",
        top + ph / 2);
    static const char *const colour[2] = {"#1f77b4", "#d62728"};
    static const char *const label[2] = {"train", "valid"};
    for (int k = 0; k < 2; k++) {
        series *s = all[k];
        if (s->n == 0)
            continue;
        put(&b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\" points=\"", colour[k], k ? "2" : "1.2");
        for (size_t i = 0; i < s->n; i++)
            put(&b, "%s%.1f,%.1f", i ? " " : "", PX(s->x[i]), PY(s->y[i]));
        put(&b, "\"/>\n");
        if (k == 1)
            for (size_t i = 0; i < s->n; i++)
                put(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", PX(s->x[i]), PY(s->y[i]), colour[k]);
        double ly = top + 16 + 18 * k;
        put(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n",
            W - right - 110, ly - 4, W - right - 86, ly - 4, colour[k]);
        put(&b, "<text x=\"%.1f\" y=\"%.1f\">%s (%zu)</text>\n", W - right - 80, ly, label[k], s->n);
    }
    if (evals.n) {
        /* the eval pass rate against a 0-100 % axis on the right: filled where the gate passed, a cross where it
         * failed */
#define PR(r) (top + (1 - (r)) * ph)
        const char *green = "#2ca02c", *red = "#d62728";
        for (int pct = 0; pct <= 100; pct += 25)
            put(&b, "<text x=\"%.1f\" y=\"%.1f\" fill=\"%s\">%d%%</text>\n", W - right + 6, PR(pct / 100.0) + 4,
                green, pct);
        put(&b, "<text transform=\"translate(%.1f %.1f) rotate(90)\" text-anchor=\"middle\" fill=\"%s\">eval pass "
                "rate</text>\n", W - 8, top + ph / 2, green);
        put(&b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\" points=\"",
            green);
        for (size_t i = 0; i < evals.n; i++)
            put(&b, "%s%.1f,%.1f", i ? " " : "", PX(evals.x[i]), PR(evals.y[i]));
        put(&b, "\"/>\n");
        size_t failed = 0;
        for (size_t i = 0; i < evals.n; i++) {
            double cx = PX(evals.x[i]), cy = PR(evals.y[i]);
            if (gate_failed[i]) {
                failed++;
                put(&b, "<path class=\"gate-failed\" d=\"M%.1f,%.1f l8,8 m0,-8 l-8,8\" stroke=\"%s\" "
                        "stroke-width=\"2\"/>\n", cx - 4, cy - 4, red);
            } else {
                put(&b, "<rect class=\"gate-passed\" x=\"%.1f\" y=\"%.1f\" width=\"7\" height=\"7\" fill=\"%s\"/>\n",
                    cx - 3.5, cy - 3.5, green);
            }
        }
        double ly = top + 16 + 18 * 2;
        put(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\" "
                "stroke-dasharray=\"4 3\"/>\n", W - right - 150, ly - 4, W - right - 126, ly - 4, green);
        put(&b, "<text x=\"%.1f\" y=\"%.1f\">eval (%zu, %zu gate failed)</text>\n", W - right - 120, ly, evals.n,
            failed);
#undef PR
    }
    put(&b, "</svg>\n");
#undef PX
#undef PY
    free(train.x), free(train.y), free(valid.x), free(valid.y), free(evals.x), free(evals.y), free(gate_failed);
    int rc = b.failed ? whet_fail(e, "%s: out of memory", svg_path) : whet_write_file_atomic(svg_path, b.text, b.len, e);
    free(b.text);
    return rc;
}
