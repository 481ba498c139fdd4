#include "train/runconf.h"

#include "train/schedule.h"
#include "util/file.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const methods[] = {"lora", "full", NULL};
static const char *const dtypes[] = {"f32", "bf16", NULL};
static const char *const schedules[] = {"constant", "linear", "cosine", NULL};

#define F(field) offsetof(whet_run_config, field)
#define STR(key, field, arg, help) {key, WHET_RUN_STRING, F(field), sizeof(((whet_run_config *)0)->field), 0, 0, NULL, 0, arg, "", help}
#define SIZE(key, field, lo, hi, def, help) {key, WHET_RUN_SIZE, F(field), 0, lo, hi, NULL, 0, "N", def, help}
#define DBL(key, field, lo, hi, arg, def, help) {key, WHET_RUN_DOUBLE, F(field), 0, lo, hi, NULL, 0, arg, def, help}
#define BOOL(key, field, neg, def, help) {key, WHET_RUN_BOOL, F(field), 0, 0, 0, NULL, neg, NULL, def, help}
#define LIST(key, field, arg, help) {key, WHET_RUN_LIST, F(field), sizeof(((whet_run_config *)0)->field), 0, 0, NULL, 0, arg, "", help}
#define CHOICE(key, field, list, arg, def, help) {key, WHET_RUN_CHOICE, F(field), 0, 0, 0, list, 0, arg, def, help}

/* 2^40: larger than any sensible count, small enough for a double to hold exactly */
#define BIG 1099511627776.0

static const whet_run_option options[] = {
    STR("model", model, "M", "HF model directory (or GGUF file) to fine-tune"),
    STR("init", init, "CONFIG.json", "start from a new model of this config instead (needs --tokenizer)"),
    STR("tokenizer", tokenizer, "TOK", "tokenizer.json (or a directory holding one) for --init"),
    STR("data", data, "PATH", "training data: a .jsonl or .txt file, or a directory with train.jsonl (+ valid.jsonl)"),
    STR("out", out, "DIR", "output directory: run.conf, metrics.jsonl, checkpoints, final/, report.svg"),
    STR("chat-template", chat_template, "NAME", "chat template to render chat data with (default: the model's)"),
    CHOICE("method", method, methods, "lora|full", "lora", "train a LoRA adapter, or the model's own weights"),
    SIZE("lora-rank", lora_rank, 1, 4096, "8", "LoRA rank r"),
    DBL("lora-alpha", lora_alpha, 1e-9, 1e9, "A", "16", "LoRA alpha: the update is scaled by alpha/r"),
    DBL("lora-dropout", lora_dropout, 0, 0.99, "P", "0", "dropout on the adapter's input while training"),
    STR("lora-targets", lora_targets, "LIST", "projections to adapt (default q,k,v,o,gate,up,down)"),
    BOOL("rslora", rslora, 0, "false", "scale by alpha/sqrt(r) (rank-stabilised LoRA)"),
    SIZE("train-layers", train_layers, 0, 1e6, "0", "full: train only the last N layers of the stack (0: all)"),
    BOOL("freeze-embeddings", freeze_embeddings, 0, "false", "full: keep the embeddings (and a tied head) frozen"),
    CHOICE("base-dtype", base_dtype, dtypes, "f32|bf16", "f32", "hold the frozen base weights in bf16 (lora)"),
    CHOICE("compute", compute, dtypes, "f32|bf16", "f32", "bf16: projection and LM head GEMMs on bf16, fp32 weights"),
    SIZE("steps", steps, 0, BIG, "0", "optimizer steps (0: from --epochs)"),
    SIZE("epochs", epochs, 0, 1e6, "0", "passes over the data (used when --steps is 0; default 1)"),
    SIZE("batch-size", batch_size, 1, 65536, "4", "sequences per micro-batch"),
    SIZE("grad-accum", grad_accum, 1, 65536, "1", "micro-batches per optimizer step"),
    SIZE("seq-len", seq_len, 2, 1 << 20, "512", "tokens per sequence (at most the model's positions)"),
    DBL("lr", lr, 0, 10, "LR", "1e-4", "peak learning rate"),
    CHOICE("lr-schedule", lr_schedule, schedules, "constant|linear|cosine", "cosine", "learning-rate schedule after warmup"),
    SIZE("warmup-steps", warmup_steps, 0, BIG, "0", "linear warmup from 0 over N steps"),
    DBL("min-lr", min_lr, 0, 10, "LR", "0", "the schedule's floor (linear, cosine)"),
    DBL("weight-decay", weight_decay, 0, 10, "WD", "0", "AdamW decoupled weight decay (not on norms and biases)"),
    DBL("adam-beta1", adam_beta1, 0, 0.999999, "B1", "0.9", "AdamW beta1"),
    DBL("adam-beta2", adam_beta2, 0, 0.9999999, "B2", "0.999", "AdamW beta2"),
    DBL("adam-eps", adam_eps, 1e-30, 1, "EPS", "1e-8", "AdamW epsilon"),
    DBL("grad-clip", grad_clip, 0, 1e9, "NORM", "1", "clip the global gradient norm to NORM (0: off)"),
    {"seed", WHET_RUN_U64, F(seed), 0, 0, 0, NULL, 0, "N", "42", "seed for initialisation, shuffling and dropout"},
    BOOL("shuffle", shuffle, 1, "true", "shuffle the examples each epoch (--no-shuffle: file order)"),
    BOOL("pack", pack, 1, "false", "pack several examples per sequence, attention kept within each"),
    BOOL("train-on-prompt", train_on_prompt, 0, "false", "loss on prompt tokens too, not only completions"),
    DBL("valid-split", valid_split, 0, 0.9, "F", "0", "hold out this share of --data for validation"),
    BOOL("grad-checkpoint", grad_checkpoint, 0, "false", "recompute each layer's activations in backward"),
    SIZE("eval-every", eval_every, 0, BIG, "0", "validate every N steps (0: before and after training only)"),
    SIZE("save-every", save_every, 0, BIG, "100", "checkpoint every N steps (0: at the end only)"),
    {"keep-checkpoints", WHET_RUN_SIZE, F(keep_checkpoints), 0, 1, 1e6, NULL, 0, "K", "2", "keep the last K checkpoints"},
    SIZE("early-stop", early_stop, 0, 1e6, "0", "stop after N validations without a better loss (0: off)"),
    SIZE("threads", threads, 0, 4096, "0", "threads (0: WHET_THREADS, else every core)"),
    LIST("eval", eval, "SPEC", "eval suite run before step 1 and at every checkpoint (repeatable)"),
    BOOL("gate", gate, 1, "false", "the output is the best checkpoint whose eval gate passed (exit 2: none)"),
};
enum { N_OPTIONS = sizeof options / sizeof options[0] };

const whet_run_option *whet_run_options(size_t *count)
{
    *count = N_OPTIONS;
    return options;
}

const whet_run_option *whet_run_option_find(const char *key)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strcmp(options[i].key, key) == 0)
            return &options[i];
    return NULL;
}

static int parse_bool(const char *v, int *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0)
            return *out = 1, 0;
        if (strcasecmp(v, no[i]) == 0)
            return *out = 0, 0;
    }
    return -1;
}

/* A text value the run file can hold: read back by whet_run_config_parse it
 * must give the same bytes, so no line break, no blank at either end (the
 * reader trims them) and no # where the reader starts a comment (at the
 * value's start, which follows "= ", or after a blank). NULL, or what is
 * wrong. */
static const char *run_file_problem(const char *value)
{
    size_t n = strlen(value);
    if (strpbrk(value, "\n\r"))
        return "a value cannot hold a line break";
    if (n && (value[0] == ' ' || value[0] == '\t' || value[n - 1] == ' ' || value[n - 1] == '\t'))
        return "a value cannot start or end with a blank (the run file trims them)";
    if (value[0] == '#')
        return "a value cannot start with '#' (the run file reads a comment there)";
    for (const char *h = strchr(value, '#'); h; h = strchr(h + 1, '#'))
        if (h[-1] == ' ' || h[-1] == '\t')
            return "a value cannot hold a blank followed by '#' (the run file reads a comment there)";
    return NULL;
}

static int set_value(whet_run_config *c, const whet_run_option *o, const char *value, int negate, const char *origin,
                     whet_err *e)
{
    char *field = (char *)c + o->offset;
    char *end;
    switch (o->kind) {
    case WHET_RUN_STRING:
        if (run_file_problem(value))
            return whet_fail(e, "%s: %s: %s", origin, o->key, run_file_problem(value));
        if (strlen(value) >= o->size)
            return whet_fail(e, "%s: the value of %s is longer than %zu bytes", origin, o->key, o->size - 1);
        memcpy(field, value, strlen(value) + 1);
        return 0;
    case WHET_RUN_SIZE:
    case WHET_RUN_U64: {
        errno = 0;
        unsigned long long v = strtoull(value, &end, 10);
        int in_range = o->kind == WHET_RUN_U64 || ((double)v >= o->min && (double)v <= o->max);
        if (!isdigit((unsigned char)value[0]) || *end || errno || !in_range) {
            if (o->kind == WHET_RUN_U64)
                return whet_fail(e, "%s: %s: expected a whole number from 0 to 18446744073709551615, got '%s'", origin,
                                 o->key, value);
            return whet_fail(e, "%s: %s: expected a whole number from %.0f to %.0f, got '%s'", origin, o->key, o->min,
                             o->max, value);
        }
        if (o->kind == WHET_RUN_U64)
            *(uint64_t *)(void *)field = (uint64_t)v;
        else
            *(size_t *)(void *)field = (size_t)v;
        return 0;
    }
    case WHET_RUN_DOUBLE: {
        errno = 0;
        double v = strtod(value, &end);
        if (end == value || *end || errno || !(v >= o->min && v <= o->max))
            return whet_fail(e, "%s: %s: expected a number from %g to %g, got '%s'", origin, o->key, o->min, o->max,
                             value);
        *(double *)(void *)field = v;
        return 0;
    }
    case WHET_RUN_BOOL: {
        int v = 1;
        if (value && parse_bool(value, &v) != 0)
            return whet_fail(e, "%s: %s: expected true or false, got '%s'", origin, o->key, value);
        *(int *)(void *)field = negate ? !v : v;
        return 0;
    }
    case WHET_RUN_LIST: {
        if (!value[0]) {
            field[0] = 0;
            return 0;
        }
        if (run_file_problem(value))
            return whet_fail(e, "%s: %s: %s", origin, o->key, run_file_problem(value));
        size_t used = strlen(field), len = strlen(value);
        if (used + (used ? 1 : 0) + len >= o->size)
            return whet_fail(e, "%s: %s: the values together are longer than %zu bytes", origin, o->key, o->size - 1);
        if (used)
            field[used++] = '\n';
        memcpy(field + used, value, len + 1);
        return 0;
    }
    case WHET_RUN_CHOICE:
        for (int i = 0; o->choices[i]; i++)
            if (strcmp(value, o->choices[i]) == 0) {
                *(int *)(void *)field = i;
                return 0;
            }
        return whet_fail(e, "%s: %s: expected %s, got '%s'", origin, o->key, o->arg, value);
    }
    return -1;
}

int whet_run_config_set(whet_run_config *c, const char *key, const char *value, const char *origin, whet_err *e)
{
    const whet_run_option *o = whet_run_option_find(key);
    int negate = 0;
    if (!o && strncmp(key, "no-", 3) == 0) {
        o = whet_run_option_find(key + 3);
        if (o && !(o->kind == WHET_RUN_BOOL && o->negatable))
            o = NULL;
        negate = 1;
    }
    if (!o)
        return whet_fail(e, "%s: unknown option '%s' (see whet-run(5) for the keys)", origin, key);
    if (!value && o->kind != WHET_RUN_BOOL)
        return whet_fail(e, "%s: %s needs a value", origin, o->key);
    return set_value(c, o, value, negate, origin, e);
}

void whet_run_config_defaults(whet_run_config *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (options[i].def[0])
            set_value(c, &options[i], options[i].def, 0, "default", NULL);
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = 0;
    return s;
}

int whet_run_config_load(whet_run_config *c, const char *path, whet_err *e)
{
    char *text;
    size_t size;
    if (whet_read_file(path, &text, &size, e) != 0)
        return -1;
    int rc = whet_run_config_parse(c, text, size, path, e);
    free(text);
    return rc;
}

int whet_run_config_parse(whet_run_config *c, const char *data, size_t size, const char *path, whet_err *e)
{
    if (memchr(data, 0, size))
        return whet_fail(e, "%s: a NUL byte in the file: expected `key = value` lines of text", path);
    char *text = malloc(size + 1);
    if (!text)
        return whet_fail(e, "%s: out of memory", path);
    memcpy(text, data, size);
    text[size] = 0;
    int rc = 0;
    size_t line_no = 0;
    for (char *line = text, *next; line && *line && rc == 0; line = next) {
        line_no++;
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        /* a comment runs from a # at the start or after whitespace to the end of the line */
        for (char *h = strchr(line, '#'); h; h = strchr(h + 1, '#'))
            if (h == line || h[-1] == ' ' || h[-1] == '\t') {
                *h = 0;
                break;
            }
        char *s = trim(line);
        if (!*s)
            continue;
        char origin[WHET_RUN_PATH_MAX + 32];
        snprintf(origin, sizeof origin, "%s:%zu", path, line_no);
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = whet_fail(e, "%s: expected `key = value`, found '%s'", origin, s);
            break;
        }
        *eq = 0;
        char *key = trim(s), *value = trim(eq + 1);
        if (!*key) {
            rc = whet_fail(e, "%s: expected a key before '='", origin);
            break;
        }
        rc = whet_run_config_set(c, key, value, origin, e);
    }
    free(text);
    return rc;
}

static void format_double(double v, char *buf, size_t size)
{
    /* the shortest of %.15g..%.17g that reads back as the same double */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

void whet_run_config_format(const whet_run_config *c, const whet_run_option *o, char *buf, size_t size)
{
    const char *field = (const char *)c + o->offset;
    switch (o->kind) {
    case WHET_RUN_STRING:
    case WHET_RUN_LIST: snprintf(buf, size, "%s", field); break;
    case WHET_RUN_SIZE: snprintf(buf, size, "%zu", *(const size_t *)(const void *)field); break;
    case WHET_RUN_U64: snprintf(buf, size, "%llu", (unsigned long long)*(const uint64_t *)(const void *)field); break;
    case WHET_RUN_DOUBLE: format_double(*(const double *)(const void *)field, buf, size); break;
    case WHET_RUN_BOOL: snprintf(buf, size, "%s", *(const int *)(const void *)field ? "true" : "false"); break;
    case WHET_RUN_CHOICE: snprintf(buf, size, "%s", o->choices[*(const int *)(const void *)field]); break;
    }
}

char *whet_run_config_text(const whet_run_config *c)
{
    size_t cap = 256 + N_OPTIONS * (WHET_RUN_PATH_MAX + 64) + 2 * WHET_RUN_LIST_MAX, n = 0;
    char *text = malloc(cap);
    if (!text)
        return NULL;
    n += (size_t)snprintf(text + n, cap - n,
                          "# whet train run file (whet-run(5)); repeat the run with\n"
                          "#   whet train --config run.conf\n");
    for (size_t i = 0; i < N_OPTIONS; i++) {
        char value[WHET_RUN_LIST_MAX + 8];
        whet_run_config_format(c, &options[i], value, sizeof value);
        if (options[i].kind == WHET_RUN_LIST && value[0]) {
            /* one line per value; reading them back adds each in turn */
            for (char *v = value, *nl; v; v = nl) {
                if ((nl = strchr(v, '\n')))
                    *nl++ = 0;
                n += (size_t)snprintf(text + n, cap - n, "%s = %s\n", options[i].key, v);
            }
            continue;
        }
        n += (size_t)snprintf(text + n, cap - n, value[0] ? "%s = %s\n" : "%s =%s\n", options[i].key, value);
    }
    return text;
}

int whet_run_config_write(const whet_run_config *c, const char *path, whet_err *e)
{
    char *text = whet_run_config_text(c);
    if (!text)
        return whet_fail(e, "%s: out of memory", path);
    int rc = whet_write_file_atomic(path, text, strlen(text), e);
    free(text);
    return rc;
}
