/* whet train: fine-tune a model (a LoRA adapter, or its own weights) or
 * train one from scratch (--init), with checkpoints and exact resume
 * (whet-train(1)). Options come from one table (train/runconf.h), so a run
 * file (--config, DIR/run.conf) and the command line mean the same things;
 * the loop itself is the library's (train/trainer.h). The data are checked
 * first (data/check.h); with --eval, suites run on the base model and at
 * every checkpoint through the loop's hooks, and with --gate the output is
 * the best checkpoint whose gate passed (eval/eval.h). */
#include "cli/commands.h"
#include "cli/common.h"
#include "data/check.h"
#include "data/dataset.h"
#include "eval/eval.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "model/adapter.h"
#include "model/export.h"
#include "model/lora.h"
#include "train/checkpoint.h"
#include "train/metrics.h"
#include "train/runconf.h"
#include "train/trainer.h"
#include "util/log.h"
#include "util/timer.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* getopt values: the run options' table index + OPT_RUN (their --no- forms
 * + OPT_NEGATED), clear of cli_next_option's ':', '?', 'h' and CLI_OPT_*;
 * then the options about this invocation, not the run (never in run.conf). */
enum { OPT_RUN = 0x2000, OPT_NEGATED = 0x3000, OPT_CONFIG = 0x4000, OPT_RESUME, OPT_FORCE, OPT_JSON };

static void usage(FILE *out)
{
    fputs("usage: whet train [--config FILE] (--model M | --init CONFIG.json --tokenizer TOK) --data PATH\n"
          "                  --out DIR [options]\n"
          "       whet train --resume DIR [options]\n"
          "Train a LoRA adapter or the whole model; checkpoints, metrics and the result go to DIR.\n",
          out);
    size_t n;
    const whet_run_option *opts = whet_run_options(&n);
    for (size_t i = 0; i < n; i++) {
        char left[64];
        const whet_run_option *o = &opts[i];
        if (o->kind == WHET_RUN_BOOL)
            snprintf(left, sizeof left, o->negatable ? "--%s, --no-%s" : "--%s", o->key, o->key);
        else
            snprintf(left, sizeof left, "--%s %s", o->key, o->arg);
        if (strlen(left) > 26) {
            fprintf(out, "  %s\n  %-26s %s", left, "", o->help);
        } else {
            fprintf(out, "  %-26s %s", left, o->help);
        }
        if (o->def[0] && o->kind != WHET_RUN_BOOL && strcmp(o->def, "0") != 0)
            fprintf(out, " (default %s)", o->def);
        fputc('\n', out);
    }
    fputs("  --config FILE              read options from a run file (whet-run(5)); the command line wins\n"
          "  --resume DIR               continue the run in DIR from its newest checkpoint\n"
          "  --force                    start even when the memory estimate exceeds what is available\n"
          "  --json                     print the summary as one JSON object\n"
          "  --version                  print whet's version\n"
          "  --help                     this text\n",
          out);
}

static volatile sig_atomic_t stop_requested;

/* The first SIGINT/SIGTERM asks for a checkpoint at the end of the step; a
 * second one ends the process at once, as it would without the handler. */
static void on_signal(int sig)
{
    if (stop_requested) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    stop_requested = 1;
}

/* ---- small helpers ---------------------------------------------------------------- */

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* mkdir -p */
static int make_dirs(const char *path)
{
    char buf[WHET_RUN_PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(buf, 0777) == 0 || errno == EEXIST ? 0 : -1;
}

/* Makes a path absolute (run.conf must work from any directory). */
static void absolute(char *path, size_t size)
{
    if (!path[0] || path[0] == '/')
        return;
    char resolved[PATH_MAX];
    if (realpath(path, resolved) && strlen(resolved) < size)
        snprintf(path, size, "%s", resolved);
}

static int copy_file(const char *from, const char *to, whet_err *e)
{
    char *data;
    size_t size;
    if (whet_read_file(from, &data, &size, e) != 0)
        return -1;
    int rc = whet_write_file_atomic(to, data, size, e);
    free(data);
    return rc;
}

static double mem_available_bytes(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return -1;
    char line[256];
    double kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1)
            break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024.0;
}

static double rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    unsigned long size, resident;
    int ok = fscanf(f, "%lu %lu", &size, &resident) == 2;
    fclose(f);
    return ok ? (double)resident * (double)sysconf(_SC_PAGESIZE) : -1;
}

static const char *human_bytes(double b, char *buf, size_t size)
{
    if (b >= 1073741824.0)
        snprintf(buf, size, "%.2f GiB", b / 1073741824.0);
    else if (b >= 1048576.0)
        snprintf(buf, size, "%.1f MiB", b / 1048576.0);
    else
        snprintf(buf, size, "%.1f KiB", b / 1024.0);
    return buf;
}

static const char *human_time(double s, char *buf, size_t size)
{
    if (!isfinite(s) || s < 0)
        snprintf(buf, size, "?");
    else if (s < 60)
        snprintf(buf, size, "%.0fs", s);
    else if (s < 3600)
        snprintf(buf, size, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else
        snprintf(buf, size, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    return buf;
}

/* ---- progress ---------------------------------------------------------------------- */

struct train_eval;

typedef struct progress_ctx {
    int tty;            /* one updating line on a terminal, plain lines otherwise */
    uint64_t every;     /* plain lines: every N steps (and the first and last) */
    int line_open;      /* a progress line is on the terminal, not ended */
    struct train_eval *ev; /* --eval: the suites, baseline and the gate's best (NULL without) */
} progress_ctx;

static void eval_saw_validation(struct train_eval *ev, uint64_t step, double loss);

static void end_line(progress_ctx *p)
{
    if (p->line_open)
        fputs("\r\033[K", stderr);
    p->line_open = 0;
}

static void on_step(void *ctx, const whet_progress *p)
{
    progress_ctx *pc = ctx;
    const whet_step_stats *s = p->stats;
    char eta[32], rss[32];
    human_time(p->eta_s, eta, sizeof eta);
    human_bytes(rss_bytes(), rss, sizeof rss);
    if (pc->tty) {
        fprintf(stderr, "\rstep %" PRIu64 "/%" PRIu64 "  loss %.4f  lr %.2e  %.0f tok/s  ETA %s  RSS %s\033[K",
                p->step, p->total_steps, s->loss, s->lr, p->tokens_per_s, eta, rss);
        fflush(stderr);
        pc->line_open = 1;
    } else if (p->step % pc->every == 0 || p->step == p->total_steps || p->step == 1 || s->skipped) {
        fprintf(stderr,
                "step %" PRIu64 "/%" PRIu64 "  loss %.4f  accuracy %.3f  lr %.3e  grad_norm %.3f  %.0f tok/s  ETA %s  "
                "RSS %s%s\n",
                p->step, p->total_steps, s->loss, s->accuracy, s->lr, s->grad_norm, p->tokens_per_s, eta, rss,
                s->skipped ? "  (skipped)" : "");
    }
}

static void on_valid(void *ctx, uint64_t step, const whet_valid_stats *v)
{
    progress_ctx *pc = ctx;
    end_line(pc);
    if (pc->ev)
        eval_saw_validation(pc->ev, step, v->loss);
    fprintf(stderr, "valid at step %" PRIu64 ": loss %.4f  accuracy %.3f  perplexity %.3f  (%zu tokens)\n", step,
            v->loss, v->accuracy, v->perplexity, v->tokens);
}

static void on_saved(void *ctx, uint64_t step, const char *dir)
{
    progress_ctx *pc = ctx;
    if (pc->tty)
        return; /* the terminal line stays clean; the summary names the last one */
    fprintf(stderr, "checkpoint at step %" PRIu64 ": %s\n", step, dir);
}

static void warn_skip(const char *msg)
{
    whet_warn("%s", msg);
}

/* ---- the full model's output: an HF directory ------------------------------------ */

/* DIR/final for a full fine-tune or a from-scratch run: the weights by
 * model/export.h's writer (HF names), config.json (the model's, or the
 * --init one), and the tokenizer files beside the model (or the --tokenizer
 * file and the files beside it). */
static int write_full_model(whet_model *m, const whet_run_config *c, const char *final_dir, whet_err *e)
{
    if (whet_model_save_hf(m, final_dir, e) != 0)
        return -1;
    char from[WHET_RUN_PATH_MAX + 64], to[WHET_RUN_PATH_MAX + 64], src_dir[WHET_RUN_PATH_MAX];
    snprintf(to, sizeof to, "%s/config.json", final_dir);
    if (c->model[0] && whet_is_gguf_file(c->model)) {
        /* a GGUF model: config.json from its hyper-parameters; its tokenizer only as --tokenizer gives it */
        char *text;
        size_t len;
        if (whet_config_to_json(&m->cfg, &text, &len, e) != 0)
            return -1;
        int rc = whet_write_file_atomic(to, text, len, e);
        free(text);
        if (rc != 0)
            return -1;
        if (!c->tokenizer[0]) {
            whet_warn("%s has no tokenizer files: %s is a GGUF file (give --tokenizer to have them copied)",
                      final_dir, c->model);
            return 0;
        }
    } else {
        if (c->init[0])
            snprintf(from, sizeof from, "%s%s", c->init, is_dir(c->init) ? "/config.json" : "");
        else
            snprintf(from, sizeof from, "%s/config.json", c->model);
        if (copy_file(from, to, e) != 0)
            return -1;
    }
    const char *tok = c->tokenizer[0] ? c->tokenizer : c->model;
    snprintf(src_dir, sizeof src_dir, "%s", tok);
    if (!is_dir(tok)) {
        snprintf(to, sizeof to, "%s/tokenizer.json", final_dir);
        if (copy_file(tok, to, e) != 0)
            return -1;
        char *slash = strrchr(src_dir, '/');
        if (slash)
            *slash = 0;
        else
            snprintf(src_dir, sizeof src_dir, ".");
    }
    static const char *const files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                        "chat_template.jinja", "generation_config.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(from, sizeof from, "%s/%s", src_dir, files[i]);
        snprintf(to, sizeof to, "%s/%s", final_dir, files[i]);
        if (is_file(from) && !is_file(to) && copy_file(from, to, e) != 0)
            return -1;
    }
    return 0;
}

/* ---- options ---------------------------------------------------------------------- */

typedef struct cli_setting {
    const char *key, *value, *origin;
} cli_setting;

typedef struct train_cli {
    whet_run_config cfg;
    char config_path[WHET_RUN_PATH_MAX], resume[WHET_RUN_PATH_MAX];
    int force, json;
    unsigned char set[64]; /* option index → given explicitly (file or command line) */
} train_cli;

static int option_index(const char *key)
{
    size_t n;
    const whet_run_option *opts = whet_run_options(&n);
    const whet_run_option *o = whet_run_option_find(strncmp(key, "no-", 3) == 0 && !whet_run_option_find(key) ? key + 3
                                                                                                               : key);
    return o ? (int)(o - opts) : -1;
}

/* Which keys a run file sets (for "given explicitly"). */
static void mark_file_keys(train_cli *tc, const char *path)
{
    char *text;
    size_t size;
    if (whet_read_file(path, &text, &size, NULL) != 0)
        return;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        while (*line == ' ' || *line == '\t')
            line++;
        char key[64];
        if (*line == '#' || sscanf(line, "%63[a-z0-9-]", key) != 1)
            continue;
        int i = option_index(key);
        if (i >= 0)
            tc->set[i] = 1;
    }
    free(text);
}

/* Parses argv into tc: the run file (--config, or the resumed run's
 * run.conf) first, then every command-line option over it. Returns an exit
 * status, or -1 to go on. */
static int parse_options(train_cli *tc, int argc, char **argv)
{
    size_t n;
    const whet_run_option *opts = whet_run_options(&n);
    struct option *longopts = calloc(2 * n + 8, sizeof *longopts);
    static const struct option common[] = {CLI_COMMON_OPTIONS};
    char(*neg_names)[80] = calloc(n, sizeof *neg_names);
    cli_setting *settings = calloc((size_t)argc + 1, sizeof *settings);
    int status = -1;
    if (!longopts || !neg_names || !settings) {
        whet_error("train: out of memory");
        status = WHET_EXIT_ERROR;
        goto done;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        longopts[k++] = (struct option){opts[i].key, opts[i].kind == WHET_RUN_BOOL ? no_argument : required_argument,
                                        NULL, OPT_RUN + (int)i};
        if (opts[i].kind == WHET_RUN_BOOL && opts[i].negatable) {
            snprintf(neg_names[i], sizeof neg_names[i], "no-%s", opts[i].key);
            longopts[k++] = (struct option){neg_names[i], no_argument, NULL, OPT_NEGATED + (int)i};
        }
    }
    longopts[k++] = (struct option){"config", required_argument, NULL, OPT_CONFIG};
    longopts[k++] = (struct option){"resume", required_argument, NULL, OPT_RESUME};
    longopts[k++] = (struct option){"force", no_argument, NULL, OPT_FORCE};
    longopts[k++] = (struct option){"json", no_argument, NULL, OPT_JSON};
    for (size_t i = 0; i < sizeof common / sizeof common[0]; i++)
        longopts[k++] = common[i]; /* --help, --version and the end */
    size_t n_settings = 0;
    int opt;
    cli_parser parser = {.command = "train", .usage = usage};
    while ((opt = cli_next_option(&parser, argc, argv, "", longopts)) != -1) {
        if (opt >= OPT_RUN && opt < OPT_RUN + (int)n) {
            settings[n_settings++] = (cli_setting){opts[opt - OPT_RUN].key, optarg, NULL};
        } else if (opt >= OPT_NEGATED && opt < OPT_NEGATED + (int)n) {
            settings[n_settings++] = (cli_setting){neg_names[opt - OPT_NEGATED], NULL, NULL};
        } else if (opt == OPT_CONFIG) {
            snprintf(tc->config_path, sizeof tc->config_path, "%s", optarg);
        } else if (opt == OPT_RESUME) {
            snprintf(tc->resume, sizeof tc->resume, "%s", optarg);
        } else if (opt == OPT_FORCE) {
            tc->force = 1;
        } else if (opt == OPT_JSON) {
            tc->json = 1;
        }
    }
    if (parser.exit >= 0) {
        status = parser.exit;
        goto done;
    }
    if (optind < argc) {
        whet_error("train: unexpected argument '%s'", argv[optind]);
        status = WHET_EXIT_ERROR;
        goto done;
    }
    whet_run_config_defaults(&tc->cfg);
    whet_err e = {{0}};
    if (tc->resume[0]) {
        if (tc->config_path[0]) {
            whet_error("train: --resume continues a run as its run.conf says; --config cannot go with it");
            status = WHET_EXIT_ERROR;
            goto done;
        }
        /* the run directory, or one of its checkpoints ("DIR/" as "DIR") */
        for (size_t n_len = strlen(tc->resume); n_len > 1 && tc->resume[n_len - 1] == '/'; n_len--)
            tc->resume[n_len - 1] = 0;
        char manifest[WHET_RUN_PATH_MAX + 32];
        snprintf(manifest, sizeof manifest, "%s/manifest.json", tc->resume);
        snprintf(tc->config_path, sizeof tc->config_path, "%s", tc->resume);
        if (is_file(manifest)) {
            char *slash = strrchr(tc->config_path, '/');
            if (slash)
                *slash = 0;
            else
                snprintf(tc->config_path, sizeof tc->config_path, ".");
        }
        size_t len = strlen(tc->config_path);
        snprintf(tc->config_path + len, sizeof tc->config_path - len, "/run.conf");
        if (!is_file(tc->config_path)) {
            whet_error("train: --resume %s: no run.conf there (expected the --out directory of a whet train run, or "
                       "one of its checkpoint-STEP directories)", tc->resume);
            status = WHET_EXIT_ERROR;
            goto done;
        }
    }
    if (tc->config_path[0]) {
        if (whet_run_config_load(&tc->cfg, tc->config_path, &e) != 0) {
            whet_error("train: %s", e.msg);
            status = WHET_EXIT_ERROR;
            goto done;
        }
        mark_file_keys(tc, tc->config_path);
    }
    unsigned char list_replaced[64] = {0};
    for (size_t i = 0; i < n_settings; i++) {
        char origin[96];
        snprintf(origin, sizeof origin, "--%s", settings[i].key);
        int li = option_index(settings[i].key);
        if (li >= 0 && li < 64 && opts[li].kind == WHET_RUN_LIST && !list_replaced[li]) {
            /* the command line's values replace the run file's */
            whet_run_config_set(&tc->cfg, settings[i].key, "", origin, NULL);
            list_replaced[li] = 1;
        }
        if (whet_run_config_set(&tc->cfg, settings[i].key, settings[i].value, origin, &e) != 0) {
            whet_error("train: %s", e.msg);
            status = WHET_EXIT_ERROR;
            goto done;
        }
        int idx = option_index(settings[i].key);
        if (idx >= 0)
            tc->set[idx] = 1;
    }
done:
    free(longopts);
    free(neg_names);
    free(settings);
    return status;
}

static int was_set(const train_cli *tc, const char *key)
{
    int i = option_index(key);
    return i >= 0 && tc->set[i];
}

/* ---- evals during training (--eval, --gate) --------------------------------------- *
 * The suites run on the base model before step 1 (the baseline: for LoRA the
 * adapter is attached with B = 0, so the model is the base) and after every
 * checkpoint, compared with the baseline and gated. Files:
 *   DIR/eval/step-N/      results.json, samples.jsonl, report.md, report.html
 *                         (step-0: the baseline, reloaded by --resume)
 *   DIR/checkpoint-N/gate.json   that checkpoint's eval record (below)
 *   metrics.jsonl         {"type":"eval","step":N,"baseline":b,"gate_enforced":b,"seconds":s,
 *                          "valid_loss":v|null, + whet_eval_write_summary's keys}
 * The gate's best checkpoint: the highest pass rate among those whose gate
 * passed; on a tie the lower validation loss measured at that step (when
 * both have one), else the later. It is spared by checkpoint rotation. */

typedef struct train_eval {
    whet_eval_suite **suites;
    size_t n_suites, n_alloc;
    char **paths;            /* the suites' files */
    const whet_tokenizer *tok;
    const whet_chat_template *tmpl;
    const char *run_dir, *model_label;
    int gate;
    whet_eval_results *baseline;
    double base_rate;
    uint64_t valid_step;     /* the last validation (UINT64_MAX: none) and its loss */
    double valid_loss;
    int have_best;
    uint64_t best_step;
    double best_rate, best_valid;
    uint64_t also_keep;      /* run->also_keep: the best, with --gate */
    size_t checkpoints, failed;
    double seconds;          /* spent evaluating */
    double started;          /* whet_now() when whet train started */
    uint64_t total_steps, save_every; /* which checkpoints are regular */
    double last_rate;
    uint64_t last_step;
    int have_last, last_passed;
    char last_failures[1024];
    progress_ctx *pc;
} train_eval;

static void eval_saw_validation(train_eval *ev, uint64_t step, double loss)
{
    ev->valid_step = step;
    ev->valid_loss = loss;
}

static void train_eval_free(train_eval *ev)
{
    for (size_t i = 0; i < ev->n_alloc; i++) {
        if (ev->suites && ev->suites[i])
            whet_eval_suite_free(ev->suites[i]);
        if (ev->paths)
            free(ev->paths[i]);
    }
    free(ev->suites);
    free(ev->paths);
    whet_eval_results_free(ev->baseline);
    memset(ev, 0, sizeof *ev);
}

/* The suites of the run's eval list, loaded; -1 with the message printed. */
static int train_eval_load(train_eval *ev, const whet_run_config *c)
{
    char list[WHET_RUN_LIST_MAX];
    snprintf(list, sizeof list, "%s", c->eval);
    size_t n = 0;
    for (char *p = list; *p; p++)
        n += *p == '\n';
    n += list[0] != 0;
    ev->suites = calloc(n ? n : 1, sizeof *ev->suites);
    ev->paths = calloc(n ? n : 1, sizeof *ev->paths);
    ev->n_alloc = n;
    if (!ev->suites || !ev->paths) {
        whet_error("train: out of memory");
        return -1;
    }
    whet_err e = {{0}};
    for (char *v = list[0] ? list : NULL, *nl; v; v = nl) {
        if ((nl = strchr(v, '\n')))
            *nl++ = 0;
        if (!(ev->paths[ev->n_suites] = strdup(v))) {
            whet_error("train: out of memory");
            return -1;
        }
        if (whet_eval_suite_load(&ev->suites[ev->n_suites], v, &e) != 0) {
            whet_error("train: --eval: %s", e.msg);
            return -1;
        }
        const whet_eval_suite *suite = ev->suites[ev->n_suites];
        for (size_t i = 0; i < suite->n_cases && !ev->tmpl; i++)
            if (suite->cases[i].messages) {
                whet_error("train: --eval: %s:%zu: case \"%s\" is a chat, and the model has no chat template "
                           "(give --chat-template)", v, suite->cases[i].line, suite->cases[i].id);
                return -1;
            }
        for (size_t i = 0; i < ev->n_suites; i++)
            if (strcmp(ev->suites[i]->name, ev->suites[ev->n_suites]->name) == 0) {
                whet_error("train: --eval: %s and %s are both suite \"%s\" (names join runs with the baseline)",
                           ev->paths[i], v, ev->suites[i]->name);
                return -1;
            }
        ev->n_suites++;
    }
    ev->valid_step = UINT64_MAX;
    ev->also_keep = UINT64_MAX;
    return 0;
}

/* Eval cases whose text is in the training data: their results would show
 * memory, not what training taught. */
static void warn_overlap(const train_eval *ev, const char *data)
{
    char train_file[WHET_RUN_PATH_MAX + 16];
    snprintf(train_file, sizeof train_file, "%s%s", data, is_dir(data) ? "/train.jsonl" : "");
    const char *train[1] = {train_file};
    const char **evals = calloc(ev->n_suites, sizeof *evals);
    if (!evals)
        return;
    for (size_t i = 0; i < ev->n_suites; i++)
        evals[i] = ev->paths[i];
    whet_overlap_report ov;
    whet_err e = {{0}};
    if (whet_data_overlap(train, 1, evals, ev->n_suites, 13, &ov, &e) != 0) {
        whet_warn("train: the overlap check of --eval with the training data failed: %s", e.msg);
        free(evals);
        return;
    }
    for (size_t i = 0; i < ov.n_cases; i++) {
        const whet_overlap_case *oc = &ov.cases[i];
        whet_warn("eval case %s (%s:%zu) shares %zu of its %zu %zu-grams with the training data (%s:%zu): "
                  "the eval lies about this case, which the model is trained on",
                  oc->id, oc->file, oc->line, oc->overlapping, oc->ngrams, ov.n, oc->train_file, oc->train_line);
    }
    whet_overlap_report_free(&ov);
    free(evals);
}

/* The eval record of results r at step (metrics.jsonl and gate.json): the
 * whet_eval_write_summary object with the run's keys before its own. */
static char *eval_record(const train_eval *ev, const whet_eval_results *r, uint64_t step, int baseline,
                         double seconds, size_t *len, whet_err *e)
{
    whet_json_writer w;
    whet_json_writer_init(&w, 0);
    whet_eval_write_summary(&w, r);
    const char *summary;
    size_t n;
    if (whet_json_writer_finish(&w, "eval summary", &summary, &n, e) != 0) {
        whet_json_writer_free(&w);
        return NULL;
    }
    char valid[40] = "null";
    if (!baseline && ev->valid_step == step && isfinite(ev->valid_loss))
        snprintf(valid, sizeof valid, "%.17g", ev->valid_loss);
    size_t cap = n + 256;
    char *line = malloc(cap);
    if (line) {
        int k = snprintf(line, cap,
                         "{\"type\":\"eval\",\"step\":%" PRIu64 ",\"baseline\":%s,\"gate_enforced\":%s,"
                         "\"seconds\":%.3f,\"valid_loss\":%s,",
                         step, baseline ? "true" : "false", ev->gate ? "true" : "false", seconds, valid);
        memcpy(line + k, summary + 1, n - 1); /* the summary's keys, after its '{' */
        *len = (size_t)k + n - 1;
        line[*len] = 0;
    } else {
        whet_fail(e, "out of memory");
    }
    whet_json_writer_free(&w);
    return line;
}

/* Does a checkpoint with pass rate `rate` and validation loss `valid` (NaN:
 * none at its step), whose gate passed, beat the best so far? */
static int eval_better(const train_eval *ev, double rate, double valid)
{
    if (!ev->have_best || rate > ev->best_rate)
        return 1;
    if (rate < ev->best_rate)
        return 0;
    if (isfinite(valid) && isfinite(ev->best_valid) && valid != ev->best_valid)
        return valid < ev->best_valid;
    return 1; /* the later */
}

static void eval_note_checkpoint(train_eval *ev, uint64_t step, double rate, double valid, int passed)
{
    ev->checkpoints++;
    ev->failed += !passed;
    if (passed && eval_better(ev, rate, valid)) {
        ev->have_best = 1;
        ev->best_step = step;
        ev->best_rate = rate;
        ev->best_valid = valid;
        if (ev->gate)
            ev->also_keep = step;
    }
}

/* Runs the suites on m at step: the baseline (step 0 of a new run) or a
 * checkpoint's (compared with the baseline, gated). */
static int eval_at(train_eval *ev, whet_model *m, uint64_t step, int baseline, whet_metrics *metrics, whet_err *e)
{
    double t0 = whet_now();
    char label[64], dir[WHET_RUN_PATH_MAX + 64];
    snprintf(label, sizeof label, "checkpoint-%" PRIu64, step);
    whet_eval_env env = {.model = m, .tok = ev->tok, .tmpl = ev->tmpl, .model_label = ev->model_label,
                         .adapter_label = baseline ? NULL : label};
    whet_eval_results *r = NULL;
    if (whet_eval_run(&env, ev->suites, ev->n_suites, &r, e) != 0 ||
        whet_eval_compare(r, baseline ? NULL : ev->baseline, e) != 0) {
        whet_eval_results_free(r);
        return -1;
    }
    snprintf(dir, sizeof dir, "%s/eval/step-%" PRIu64, ev->run_dir, step);
    int rc = whet_eval_write_reports(r, dir, e);
    double seconds = whet_now() - t0;
    ev->seconds += seconds;
    size_t len = 0;
    char *record = rc == 0 ? eval_record(ev, r, step, baseline, seconds, &len, e) : NULL;
    if (!record || whet_metrics_line(metrics, record, len, e) != 0)
        rc = -1;
    if (rc == 0 && !baseline) {
        char path[WHET_RUN_PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/checkpoint-%" PRIu64 "/gate.json", ev->run_dir, step);
        record[len] = '\n';
        rc = whet_write_file_atomic(path, record, len + 1, e);
    }
    free(record);
    double rate = isnan(r->pass.rate) ? -1 : r->pass.rate;
    if (rc == 0) {
        end_line(ev->pc);
        char rate_text[64] = "no pass/fail cases";
        if (!isnan(r->pass.rate))
            snprintf(rate_text, sizeof rate_text, "pass rate %.1f%% (%zu/%zu)", 100 * r->pass.rate, r->pass.passed,
                     r->pass.n);
        if (baseline) {
            ev->base_rate = r->pass.rate;
            fprintf(stderr, "eval baseline (the base model): %s in %.2fs; reports in %s\n", rate_text, seconds, dir);
        } else {
            ev->last_failures[0] = 0;
            for (size_t i = 0, k = 0; i < r->n_suites; i++)
                for (size_t g = 0; g < r->suites[i].n_gate_reasons; g++)
                    k += (size_t)snprintf(ev->last_failures + k, k < sizeof ev->last_failures ? sizeof ev->last_failures - k : 0,
                                          "%s%s: %s", k ? "; " : "", r->suites[i].name, r->suites[i].gate_reasons[g]);
            fprintf(stderr, "eval at step %" PRIu64 ": %s in %.2fs, gate %s%s%s\n", step, rate_text, seconds,
                    r->gate_failed ? "FAILED" : "passed", r->gate_failed ? ": " : "", ev->last_failures);
            double valid = ev->valid_step == step ? ev->valid_loss : NAN;
            eval_note_checkpoint(ev, step, rate, valid, !r->gate_failed);
            ev->have_last = 1;
            ev->last_step = step;
            ev->last_rate = r->pass.rate;
            ev->last_passed = !r->gate_failed;
        }
    }
    if (baseline && rc == 0) {
        ev->baseline = r;
        return 0;
    }
    whet_eval_results_free(r);
    return rc;
}

/* A checkpoint the run writes anyway (every --save-every and the last), not
 * one of an interruption: only these are evaluated. */
static int eval_regular(const train_eval *ev, uint64_t step)
{
    return step == ev->total_steps || (ev->save_every && step % ev->save_every == 0);
}

static int eval_after_checkpoint(void *ctx, whet_model *m, uint64_t step, const char *checkpoint_dir,
                                 const whet_valid_stats *last_valid, struct whet_metrics *metrics, whet_err *e)
{
    (void)checkpoint_dir;
    (void)last_valid;
    progress_ctx *pc = ctx;
    if (stop_requested) {
        /* interrupted: exit soon; a regular checkpoint's eval runs when the run resumes, as it would have */
        end_line(pc);
        fprintf(stderr, "eval at step %" PRIu64 ": not now (interrupted)%s\n", step,
                eval_regular(pc->ev, step) ? "; it runs on --resume" : "");
        return 0;
    }
    return eval_at(pc->ev, m, step, 0, metrics, e) != 0 ? -1 : 0;
}

/* A resumed run: what its checkpoints' gate.json files say, up to `step`. */
static int eval_reload_gates(train_eval *ev, uint64_t step, whet_err *e)
{
    uint64_t *steps;
    size_t n;
    if (whet_ckpt_list(ev->run_dir, &steps, &n, e) != 0)
        return -1;
    for (size_t i = 0; i < n && steps[i] <= step; i++) {
        char path[WHET_RUN_PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/checkpoint-%" PRIu64 "/gate.json", ev->run_dir, steps[i]);
        whet_json_doc *doc;
        if (!is_file(path) || whet_json_parse_file(&doc, path, NULL, NULL) != 0)
            continue;
        const whet_json *root = whet_json_root(doc), *rate = whet_json_get(root, "pass_rate");
        const whet_json *passed = whet_json_get(root, "gate_passed"), *valid = whet_json_get(root, "valid_loss");
        double r = rate && rate->type == WHET_JSON_NUMBER ? rate->u.number.value : -1;
        double v = valid && valid->type == WHET_JSON_NUMBER ? valid->u.number.value : NAN;
        eval_note_checkpoint(ev, steps[i], r, v, passed && passed->type == WHET_JSON_TRUE);
        whet_json_free(doc);
    }
    free(steps);
    return 0;
}

/* The validation loss metrics.jsonl holds for step (NaN: none). */
static double valid_loss_at(const char *run_dir, uint64_t step)
{
    char path[WHET_RUN_PATH_MAX + 32], want[64];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    snprintf(want, sizeof want, "{\"type\":\"valid\",\"step\":%" PRIu64 ",", step);
    FILE *f = fopen(path, "r");
    char line[1024];
    double loss = NAN;
    while (f && fgets(line, sizeof line, f)) {
        whet_json_doc *doc;
        if (strncmp(line, want, strlen(want)) != 0 || whet_json_parse(&doc, line, strlen(line), path, NULL, NULL) != 0)
            continue;
        const whet_json *v = whet_json_get(whet_json_root(doc), "loss");
        if (v && v->type == WHET_JSON_NUMBER)
            loss = v->u.number.value;
        whet_json_free(doc);
    }
    if (f)
        fclose(f);
    return loss;
}

static int eval_on_start(void *ctx, whet_model *m, uint64_t step, struct whet_metrics *metrics, whet_err *e)
{
    progress_ctx *pc = ctx;
    train_eval *ev = pc->ev;
    char base_dir[WHET_RUN_PATH_MAX + 32];
    snprintf(base_dir, sizeof base_dir, "%s/eval", ev->run_dir);
    if (make_dirs(base_dir) != 0)
        return whet_fail(e, "cannot create %s: %s", base_dir, strerror(errno));
    if (step == 0)
        return eval_at(ev, m, 0, 1, metrics, e);
    /* resumed: the baseline of the run's start, not of the model as trained so far */
    snprintf(base_dir, sizeof base_dir, "%s/eval/step-0", ev->run_dir);
    if (whet_eval_results_load(&ev->baseline, base_dir, e) != 0) {
        char msg[sizeof e->msg];
        snprintf(msg, sizeof msg, "--eval on --resume needs the baseline the run made at its start (%.900s)", e->msg);
        snprintf(e->msg, sizeof e->msg, "%s", msg);
        return -1;
    }
    ev->base_rate = ev->baseline->pass.rate;
    fprintf(stderr, "eval baseline reloaded from %s\n", base_dir);
    if (eval_reload_gates(ev, step, e) != 0)
        return -1;
    /* the checkpoint resumed from was saved but not evaluated (the run stopped in between): evaluate it now,
     * unless it is an interruption's, which an uninterrupted run would not have had */
    char gate[WHET_RUN_PATH_MAX + 64];
    snprintf(gate, sizeof gate, "%s/checkpoint-%" PRIu64 "/gate.json", ev->run_dir, step);
    if (!is_file(gate) && eval_regular(ev, step)) {
        double valid = valid_loss_at(ev->run_dir, step);
        if (!isnan(valid))
            eval_saw_validation(ev, step, valid);
        return eval_at(ev, m, step, 0, metrics, e);
    }
    return 0;
}

/* ---- the command ------------------------------------------------------------------- */

typedef struct train_session {
    train_cli tc;
    whet_compute *compute;
    whet_model *model;
    whet_tokenizer *tok;
    whet_chat_template tmpl;
    int have_template;
    whet_data_splits data;
    whet_batcher *batcher;
    whet_trainer *trainer;
    char run_dir[WHET_RUN_PATH_MAX];
    train_eval ev;           /* --eval: empty without */
} train_session;

static int open_model(train_session *s)
{
    whet_run_config *c = &s->tc.cfg;
    whet_err e = {{0}};
    const whet_kernels *k = whet_kernels_from_env();
    if (!k || !(s->compute = whet_compute_create(k, (int)c->threads)))
        return -1;
    if (c->init[0]) {
        whet_model_config mc;
        if (whet_config_load(&mc, c->init, &e) != 0 || whet_model_init(&s->model, &mc, s->compute, c->seed, &e) != 0) {
            whet_error("train: %s", e.msg);
            return -1;
        }
        if (!(s->tok = cli_open_tokenizer(c->tokenizer)))
            return -1;
    } else {
        if (whet_model_load(&s->model, c->model, s->compute, &e) != 0) {
            whet_error("train: %s", e.msg);
            return -1;
        }
        if (!(s->tok = cli_open_tokenizer(c->tokenizer[0] ? c->tokenizer : c->model)))
            return -1;
    }
    /* the chat template: needed by chat data (and prompt/completion data is rendered with it when there is one) */
    const char *tmpl_from = c->model[0] ? c->model : c->tokenizer;
    whet_err te = {{0}};
    s->have_template = cli_chat_template(tmpl_from, c->chat_template[0] ? c->chat_template : NULL, &s->tmpl, &te) == 0;
    if (!s->have_template && c->chat_template[0]) {
        whet_error("train: %s", te.msg);
        return -1;
    }
    return 0;
}

static void print_plan(const train_session *s, const whet_train_plan *p, uint64_t steps, size_t steps_per_epoch,
                       double avail, FILE *out)
{
    const whet_run_config *c = &s->tc.cfg;
    const whet_model *m = s->model;
    char b1[32], b2[32], b3[32], b4[32], b5[32], b6[32];
    size_t total_params = whet_model_param_count(&m->cfg);
    fprintf(out, "plan: %s of %s%s (%s, %zu layers, %.2fM parameters)\n", c->method ? "full fine-tune" : "LoRA",
            c->init[0] ? c->init : c->model, c->init[0] ? ", from scratch" : "", m->cfg.info->name, m->cfg.layers,
            (double)total_params / 1e6);
    if (c->method == 0)
        fprintf(out, "  adapter         rank %zu, alpha %g%s, dropout %g, targets %s\n", c->lora_rank, c->lora_alpha,
                c->rslora ? " (rsLoRA)" : "", c->lora_dropout, c->lora_targets[0] ? c->lora_targets : "all");
    fprintf(out, "  trained         %zu parameters (%.3f%% of the model)\n", p->trainable,
            100.0 * (double)p->trainable / (double)total_params);
    fprintf(out, "  data            %zu training examples, %zu validation (%s)\n", whet_dataset_count(s->data.train),
            s->data.valid ? whet_dataset_count(s->data.valid) : (size_t)0, c->data);
    fprintf(out, "  tokens/step     %zu (batch %zu × seq %zu × accumulation %zu)\n",
            p->tokens_per_micro_batch * c->grad_accum, c->batch_size, c->seq_len, c->grad_accum);
    fprintf(out, "  steps           %" PRIu64 " (%.2f epochs of ~%zu steps)\n", steps,
            (double)steps * (double)c->grad_accum / (double)(steps_per_epoch ? steps_per_epoch : 1),
            (steps_per_epoch + c->grad_accum - 1) / c->grad_accum);
    fprintf(out, "  optimizer       AdamW lr %g (%s, warmup %zu, min %g), betas %g/%g, eps %g, weight decay %g, "
                 "clip %g\n",
            c->lr, whet_lr_schedule_name((whet_lr_schedule)c->lr_schedule), c->warmup_steps, c->min_lr, c->adam_beta1,
            c->adam_beta2, c->adam_eps, c->weight_decay, c->grad_clip);
    double total = (double)(p->weights + p->gradients + p->optimizer + p->activations);
    fprintf(out, "  compute         %s\n",
            !c->compute  ? "fp32"
            : c->method ? "bf16 GEMMs (projections and LM head; bf16 shadows of the fp32 weights, fp32 gradients "
                          "and AdamW)"
                        : "bf16 GEMMs (projections and LM head on the bf16 base; the adapter in fp32)");
    fprintf(out, "  memory          %s: weights %s%s, gradients %s, optimizer %s, activations %s%s\n",
            human_bytes(total, b1, sizeof b1), human_bytes((double)p->weights, b2, sizeof b2),
            c->method == 0 && (c->base_dtype || c->compute) ? " (bf16 base)"
            : c->method == 1 && c->compute                 ? " (with bf16 shadows)"
                                                           : "",
            human_bytes((double)p->gradients, b3, sizeof b3),
            human_bytes((double)p->optimizer, b4, sizeof b4), human_bytes((double)p->activations, b5, sizeof b5),
            c->grad_checkpoint ? " (checkpointed)" : "");
    if (avail > 0)
        fprintf(out, "  available       %s (MemAvailable)\n", human_bytes(avail, b6, sizeof b6));
    fflush(out);
}

/* The first and last train and valid losses of metrics.jsonl (NaN when none). */
typedef struct run_losses {
    double first_train, last_train, first_valid, last_valid;
    int has_train, has_valid;
} run_losses;

static void read_losses(const char *path, run_losses *l)
{
    l->first_train = l->last_train = l->first_valid = l->last_valid = NAN;
    l->has_train = l->has_valid = 0;
    FILE *f = fopen(path, "r");
    char line[1024];
    while (f && fgets(line, sizeof line, f)) {
        int valid = strstr(line, "\"type\":\"valid\"") != NULL;
        char *at = strstr(line, "\"loss\":"), *end;
        if (!at)
            continue;
        double v = strtod(at + 7, &end);
        if (end == at + 7)
            v = NAN; /* null: not finite */
        if (valid) {
            if (!l->has_valid)
                l->first_valid = v;
            l->last_valid = v;
            l->has_valid = 1;
        } else {
            if (!l->has_train)
                l->first_train = v;
            l->last_train = v;
            l->has_train = 1;
        }
    }
    if (f)
        fclose(f);
}

/* The evals' part of the summary (--eval). */
static void eval_summary_json(whet_json_writer *w, const train_eval *ev, const whet_train_result *r, int gating,
                              int output)
{
    whet_json_begin_object(w);
    whet_json_key(w, "baseline_pass_rate");
    whet_json_write_double(w, ev->base_rate);
    whet_json_key(w, "pass_rate");
    whet_json_write_double(w, ev->have_last ? ev->last_rate : NAN);
    whet_json_key(w, "checkpoints");
    whet_json_write_int(w, (int64_t)ev->checkpoints);
    whet_json_key(w, "gate_failed");
    whet_json_write_int(w, (int64_t)ev->failed);
    whet_json_key(w, "gate");
    whet_json_write_string(w, !gating ? "off" : ev->have_best ? "passed" : "failed");
    whet_json_key(w, "selected_step");
    if (gating && ev->have_best && output)
        whet_json_write_int(w, (int64_t)ev->best_step);
    else if (!gating && output)
        whet_json_write_int(w, (int64_t)r->state.step);
    else
        whet_json_write_null(w);
    whet_json_key(w, "seconds");
    whet_json_write_double(w, round(ev->seconds * 1000) / 1000);
    whet_json_end_object(w);
}

static void eval_summary_text(const train_eval *ev, int gating, int output)
{
    char base[32] = "n/a", last[32] = "n/a";
    if (!isnan(ev->base_rate))
        snprintf(base, sizeof base, "%.1f%%", 100 * ev->base_rate);
    if (ev->have_last && !isnan(ev->last_rate))
        snprintf(last, sizeof last, "%.1f%%", 100 * ev->last_rate);
    printf("evals: pass rate %s at the baseline, %s at step %" PRIu64 "; gate passed at %zu of %zu checkpoints; "
           "%.2fs evaluating (%.0f%% of this invocation's time)\n",
           base, last, ev->last_step, ev->checkpoints - ev->failed, ev->checkpoints, ev->seconds,
           whet_now() > ev->started ? 100 * ev->seconds / (whet_now() - ev->started) : 0.0);
    if (gating && ev->have_best && output) {
        char best[32] = "n/a";
        if (ev->best_rate >= 0)
            snprintf(best, sizeof best, "%.1f%%", 100 * ev->best_rate);
        printf("gate: the output is checkpoint-%" PRIu64 " (pass rate %s), the best whose gate passed\n",
               ev->best_step, best);
    }
}

static void print_summary(const train_session *s, const whet_train_result *r, const char *final_dir,
                          const run_losses *l, int json)
{
    const whet_run_config *c = &s->tc.cfg;
    int gating = s->ev.n_suites && c->gate;
    static const char *const outcomes[] = {"completed", "interrupted", "early-stopped", "non-finite", "stopped-by-hook"};
    if (json) {
        whet_json_writer w;
        whet_json_writer_init(&w, 0);
        whet_json_begin_object(&w);
        whet_json_key(&w, "outcome");
        whet_json_write_string(&w, outcomes[r->outcome]);
        whet_json_key(&w, "steps");
        whet_json_write_int(&w, (int64_t)r->state.step);
        whet_json_key(&w, "method");
        whet_json_write_string(&w, c->method ? "full" : "lora");
        whet_json_key(&w, "first_loss");
        whet_json_write_double(&w, l->first_train);
        whet_json_key(&w, "train_loss");
        whet_json_write_double(&w, l->last_train);
        whet_json_key(&w, "valid_loss");
        whet_json_write_double(&w, l->last_valid); /* NaN (no validation) is written as null */
        whet_json_key(&w, "valid_perplexity");
        whet_json_write_double(&w, l->has_valid ? exp(l->last_valid) : NAN);
        whet_json_key(&w, "tokens_seen");
        whet_json_write_int(&w, (int64_t)r->state.tokens_seen);
        whet_json_key(&w, "seconds");
        whet_json_write_double(&w, round(r->state.elapsed_s * 1000) / 1000);
        whet_json_key(&w, "checkpoint");
        whet_json_write_string(&w, r->last_checkpoint);
        whet_json_key(&w, "output");
        if (final_dir)
            whet_json_write_string(&w, final_dir);
        else
            whet_json_write_null(&w);
        if (s->ev.n_suites) {
            whet_json_key(&w, "eval");
            eval_summary_json(&w, &s->ev, r, gating, final_dir != NULL);
        }
        whet_json_end_object(&w);
        const char *text;
        size_t len;
        whet_err e = {{0}};
        if (whet_json_writer_finish(&w, "summary", &text, &len, &e) == 0)
            printf("%s\n", text);
        whet_json_writer_free(&w);
        return;
    }
    char t[32];
    printf("%s: %" PRIu64 " steps in %s, train loss %.4f -> %.4f", outcomes[r->outcome], r->state.step,
           human_time(r->state.elapsed_s, t, sizeof t), l->first_train, l->last_train);
    if (l->has_valid)
        printf(", valid loss %.4f -> %.4f (perplexity %.3f)", l->first_valid, l->last_valid, exp(l->last_valid));
    if (final_dir)
        printf("; %s in %s\n", c->method ? "model" : "adapter", final_dir);
    else
        printf("; last checkpoint %s\n", r->last_checkpoint[0] ? r->last_checkpoint : "(none)");
    if (s->ev.n_suites)
        eval_summary_text(&s->ev, gating, final_dir != NULL);
}

/* ---- the data checks at the start ------------------------------------------------- */

/* whet data check over --data with the run's tokenizer, template and
 * --seq-len: every error is printed (file:line:column: class: message) and
 * stops the run; warnings are printed (the first WARNINGS_SHOWN) and do not. */
enum { WARNINGS_SHOWN = 20 };

static int check_data(const train_session *s)
{
    const whet_run_config *c = &s->tc.cfg;
    whet_data_check_options co = {
        .data = {.tok = s->tok, .tmpl = s->have_template ? &s->tmpl : NULL, .train_on_prompt = c->train_on_prompt,
                 .add_eos = 1},
        .seq_len = c->seq_len,
    };
    const char *paths[1] = {c->data};
    whet_data_report rep;
    whet_err e = {{0}};
    if (whet_data_check(paths, 1, &co, &rep, &e) != 0) {
        whet_error("train: %s", e.msg);
        return -1;
    }
    size_t warnings_shown = 0;
    for (size_t i = 0; i < rep.n_problems; i++) {
        const whet_data_problem *p = &rep.problems[i];
        if (p->warning && warnings_shown++ >= WARNINGS_SHOWN)
            continue;
        char line[1400];
        whet_data_problem_format(p, line, sizeof line);
        fprintf(stderr, "%s\n", line);
    }
    size_t hidden = rep.errors + rep.warnings - rep.n_problems + (warnings_shown > WARNINGS_SHOWN ? warnings_shown - WARNINGS_SHOWN : 0);
    if (hidden)
        fprintf(stderr, "... and %zu more problems (whet data check %s lists them)\n", hidden, c->data);
    int bad = rep.errors != 0;
    if (bad)
        whet_error("train: %s: %zu error%s in the data (%zu of %zu examples are usable); nothing was trained", c->data,
                   rep.errors, rep.errors == 1 ? "" : "s", rep.examples_ok, rep.examples);
    whet_data_report_free(&rep);
    return bad ? -1 : 0;
}

static int check_config(train_session *s)
{
    train_cli *tc = &s->tc;
    whet_run_config *c = &tc->cfg;
    if (!c->model[0] == !c->init[0]) {
        whet_error("train: give exactly one of --model and --init");
        return WHET_EXIT_ERROR;
    }
    if (c->init[0] && !c->tokenizer[0]) {
        whet_error("train: --init starts a new model and needs --tokenizer (a tokenizer.json or a directory with one)");
        return WHET_EXIT_ERROR;
    }
    if (!c->data[0] || !c->out[0]) {
        whet_error("train: --%s is required", !c->data[0] ? "data" : "out");
        return WHET_EXIT_ERROR;
    }
    if (c->steps && c->epochs) {
        whet_error("train: give --steps or --epochs, not both (steps %zu, epochs %zu)", c->steps, c->epochs);
        return WHET_EXIT_ERROR;
    }
    if (c->method == 0 && (c->train_layers || c->freeze_embeddings)) {
        whet_error("train: --train-layers and --freeze-embeddings go with --method full");
        return WHET_EXIT_ERROR;
    }
    if (c->method == 1 && c->base_dtype == 1) {
        whet_error("train: --base-dtype bf16 holds frozen base weights; with --method full every weight trains");
        return WHET_EXIT_ERROR;
    }
    if (c->gate && !c->eval[0]) {
        whet_error("train: --gate chooses among checkpoints by their evals; give --eval SPEC too");
        return WHET_EXIT_ERROR;
    }
    if (c->min_lr > c->lr) {
        whet_error("train: --min-lr %g is above --lr %g", c->min_lr, c->lr);
        return WHET_EXIT_ERROR;
    }
    return -1;
}

int cmd_train(int argc, char **argv)
{
    train_session *s = calloc(1, sizeof *s);
    if (!s) {
        whet_error("train: out of memory");
        return WHET_EXIT_ERROR;
    }
    int status = parse_options(&s->tc, argc, argv);
    if (status >= 0)
        goto out;
    if ((status = check_config(s)) >= 0)
        goto out;
    status = WHET_EXIT_ERROR;
    train_cli *tc = &s->tc;
    whet_run_config *c = &tc->cfg;
    whet_err e = {{0}};
    int resuming = tc->resume[0] != 0;
    s->ev.started = whet_now();
    FILE *info = tc->json ? stderr : stdout;

    /* where the run lives */
    if (resuming) {
        snprintf(s->run_dir, sizeof s->run_dir, "%s", tc->config_path);
        s->run_dir[strlen(s->run_dir) - strlen("/run.conf")] = 0;
    } else {
        snprintf(s->run_dir, sizeof s->run_dir, "%s", c->out);
        char probe[WHET_RUN_PATH_MAX + 32];
        snprintf(probe, sizeof probe, "%s/run.conf", c->out);
        if (is_file(probe)) {
            whet_error("train: %s already holds a run (run.conf); continue it with --resume %s, or choose another --out",
                       c->out, c->out);
            goto out;
        }
        absolute(c->model, sizeof c->model);
        absolute(c->init, sizeof c->init);
        absolute(c->tokenizer, sizeof c->tokenizer);
        absolute(c->data, sizeof c->data);
        /* each eval suite's path too */
        char list[WHET_RUN_LIST_MAX];
        snprintf(list, sizeof list, "%s", c->eval);
        c->eval[0] = 0;
        for (char *v = list[0] ? list : NULL, *nl; v; v = nl) {
            if ((nl = strchr(v, '\n')))
                *nl++ = 0;
            char path[WHET_RUN_PATH_MAX];
            if (strlen(v) >= sizeof path) {
                whet_error("train: --eval: a path longer than %zu bytes", sizeof path - 1);
                goto out;
            }
            memcpy(path, v, strlen(v) + 1);
            absolute(path, sizeof path);
            if (whet_run_config_set(c, "eval", path, "--eval", &e) != 0) {
                whet_error("train: %s", e.msg);
                goto out;
            }
        }
    }

    if (open_model(s) != 0)
        goto out;
    const whet_model_config *mc = &s->model->cfg;
    size_t limit = mc->max_positions;
    if (mc->sliding_window && mc->sliding_window < limit)
        limit = mc->sliding_window;
    if (c->seq_len > limit) {
        if (was_set(tc, "seq-len")) {
            whet_error("train: --seq-len %zu is more than the %zu positions of %s", c->seq_len, limit,
                       c->model[0] ? c->model : c->init);
            status = WHET_EXIT_ERROR;
            goto out;
        }
        c->seq_len = limit;
    }

    /* the data as whet data check sees it: errors stop the run before anything is allocated */
    if (check_data(s) != 0)
        goto out;
    if (c->eval[0]) {
        s->ev.tok = s->tok;
        s->ev.tmpl = s->have_template ? &s->tmpl : NULL;
        s->ev.run_dir = s->run_dir;
        s->ev.model_label = c->model[0] ? c->model : c->init;
        s->ev.gate = c->gate;
        if (train_eval_load(&s->ev, c) != 0)
            goto out;
        warn_overlap(&s->ev, c->data);
    }

    /* data */
    whet_data_options dopt = {.tok = s->tok, .tmpl = s->have_template ? &s->tmpl : NULL,
                              .train_on_prompt = c->train_on_prompt, .add_eos = 1};
    if (whet_data_open_splits(&s->data, c->data, c->valid_split, &dopt, &e) != 0) {
        whet_error("train: %s", e.msg);
        goto out;
    }
    if (whet_dataset_count(s->data.train) == 0) {
        whet_error("train: %s: no training examples", c->data);
        goto out;
    }
    whet_batch_options bopt = {.batch_size = c->batch_size, .seq_len = c->seq_len, .shuffle = c->shuffle,
                               .pack = c->pack, .seed = c->seed};
    if (!(s->batcher = whet_batcher_create(s->data.train, &bopt, &e))) {
        whet_error("train: %s", e.msg);
        goto out;
    }
    size_t per_epoch = whet_batcher_steps_per_epoch(s->batcher);
    uint64_t steps = c->steps ? c->steps
                              : (uint64_t)(c->epochs ? c->epochs : 1) * ((per_epoch + c->grad_accum - 1) / c->grad_accum);
    if (steps == 0)
        steps = 1;

    /* what trains */
    whet_trainer_options to = {
        .sel = {.full = c->method == 1, .train_layers = c->train_layers, .freeze_embeddings = c->freeze_embeddings},
        .lora = {.rank = c->lora_rank, .alpha = (float)c->lora_alpha, .dropout = (float)c->lora_dropout,
                 .rslora = c->rslora, .targets = WHET_LORA_ALL_TARGETS, .seed = c->seed},
        .base_bf16 = c->base_dtype == 1,
        .compute_bf16 = c->compute == 1,
        .grad_checkpoint = c->grad_checkpoint,
        .batch_size = c->batch_size,
        .seq_len = c->seq_len,
        .grad_accum = c->grad_accum,
        .adamw = {.beta1 = c->adam_beta1, .beta2 = c->adam_beta2, .eps = c->adam_eps, .weight_decay = c->weight_decay,
                  .max_grad_norm = c->grad_clip},
        .schedule = {.kind = (whet_lr_schedule)c->lr_schedule, .lr = c->lr, .min_lr = c->min_lr,
                     .warmup_steps = c->warmup_steps, .total_steps = steps},
    };
    if (c->lora_targets[0] && whet_lora_parse_targets(c->lora_targets, &to.lora.targets, &e) != 0) {
        whet_error("train: --lora-targets: %s", e.msg);
        status = WHET_EXIT_ERROR;
        goto out;
    }
    whet_train_plan plan;
    whet_trainer_plan(s->model, &to, &plan, &e);
    double avail = mem_available_bytes();
    print_plan(s, &plan, steps, per_epoch, avail, info);
    /* the weights are loaded already (MemAvailable counts them as used); the rest is still to come, bf16
     * shadows (--compute bf16 --method full) included */
    size_t loaded = s->model->num_params * sizeof(float);
    double to_come = (double)(plan.gradients + plan.optimizer + plan.activations) +
                     (double)(plan.weights > loaded ? plan.weights - loaded : 0);
    if (avail > 0 && to_come > avail && !tc->force) {
        char b1[32], b2[32];
        whet_error("train: the run needs %s more memory (gradients, optimizer state, activations) but %s is "
                   "available; lower --batch-size or --seq-len, add --grad-checkpoint, use --method lora or "
                   "--base-dtype bf16, or pass --force",
                   human_bytes(to_come, b1, sizeof b1), human_bytes(avail, b2, sizeof b2));
        goto out;
    }
    if (whet_trainer_create(&s->trainer, s->model, &to, &e) != 0) {
        whet_error("train: %s", e.msg);
        goto out;
    }

    /* the run directory: run.conf first, so a run can always be resumed or repeated */
    char resume_ckpt[1300] = "";
    if (resuming) {
        uint64_t at;
        char manifest[WHET_RUN_PATH_MAX + 32];
        snprintf(manifest, sizeof manifest, "%s/manifest.json", tc->resume);
        if (is_file(manifest)) {
            snprintf(resume_ckpt, sizeof resume_ckpt, "%s", tc->resume);
        } else if (whet_ckpt_latest(s->run_dir, resume_ckpt, sizeof resume_ckpt, &at, warn_skip, &e) != 0) {
            whet_error("train: --resume: %s", e.msg);
            goto out;
        }
        fprintf(info, "resuming from %s\n", resume_ckpt);
    } else {
        char path[WHET_RUN_PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/run.conf", s->run_dir);
        if (make_dirs(s->run_dir) != 0) {
            whet_error("train: cannot create %s: %s", s->run_dir, strerror(errno));
            goto out;
        }
        if (whet_run_config_write(c, path, &e) != 0) {
            whet_error("train: %s", e.msg);
            goto out;
        }
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    s->ev.total_steps = steps;
    s->ev.save_every = c->save_every;
    progress_ctx pc = {.tty = whet_stderr_is_terminal(), .every = steps >= 100 ? steps / 50 : 1,
                       .ev = s->ev.n_suites ? &s->ev : NULL};
    s->ev.pc = &pc;
    whet_train_run run = {
        .trainer = s->trainer,
        .train = s->batcher,
        .valid = s->data.valid,
        .grad_accum = c->grad_accum,
        .total_steps = steps,
        .eval_every = c->eval_every,
        .save_every = c->save_every,
        .keep_checkpoints = c->keep_checkpoints,
        .early_stop = c->early_stop,
        .max_nonfinite = 5,
        .out_dir = s->run_dir,
        .resume_from = resuming ? resume_ckpt : NULL,
        .stop = &stop_requested,
        .hooks = {.ctx = &pc, .on_step = on_step, .on_valid = on_valid, .on_checkpoint_saved = on_saved,
                  .after_checkpoint = pc.ev ? eval_after_checkpoint : NULL, .on_start = pc.ev ? eval_on_start : NULL},
        .also_keep = &s->ev.also_keep,
    };
    whet_train_result r;
    int rc = whet_train_run_loop(&run, &r, &e);
    end_line(&pc);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (rc != 0) {
        whet_error("train: %s", e.msg);
        goto out;
    }

    /* the run's losses from its metrics: a resumed run saw only its own part */
    run_losses losses;
    {
        char path[WHET_RUN_PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/metrics.jsonl", s->run_dir);
        read_losses(path, &losses);
        char svg[WHET_RUN_PATH_MAX + 32], title[WHET_RUN_PATH_MAX + 64];
        snprintf(svg, sizeof svg, "%s/report.svg", s->run_dir);
        snprintf(title, sizeof title, "whet train: %s", c->model[0] ? c->model : c->init);
        if (whet_report_svg(path, svg, title, &e) != 0)
            whet_warn("%s", e.msg);
    }
    char final_dir[WHET_RUN_PATH_MAX + 32];
    snprintf(final_dir, sizeof final_dir, "%s/final", s->run_dir);
    int finished = r.outcome == WHET_TRAIN_COMPLETED || r.outcome == WHET_TRAIN_EARLY_STOPPED;
    train_eval *ev = &s->ev;
    int gating = ev->n_suites && c->gate;
    int gate_failed = finished && gating && !ev->have_best;
    if (finished && gating && ev->have_best && ev->best_step != r.state.step) {
        /* the output is the best checkpoint whose gate passed, not the last one */
        char best[WHET_RUN_PATH_MAX + 64];
        snprintf(best, sizeof best, "%s/checkpoint-%" PRIu64, s->run_dir, ev->best_step);
        whet_run_state best_state;
        if (whet_trainer_load(s->trainer, best, &best_state, &e) != 0) {
            whet_error("train: the gate's best checkpoint: %s", e.msg);
            goto out;
        }
    }
    if (finished && !gate_failed) {
        if (make_dirs(final_dir) != 0) {
            whet_error("train: cannot create %s: %s", final_dir, strerror(errno));
            goto out;
        }
        int wrc = c->method == 0
                      ? whet_adapter_save_peft(s->model, s->trainer->lora, final_dir, c->model[0] ? c->model : NULL, &e)
                      : write_full_model(s->model, c, final_dir, &e);
        if (wrc != 0) {
            whet_error("train: writing %s: %s", final_dir, e.msg);
            goto out;
        }
    }
    print_summary(s, &r, finished && !gate_failed ? final_dir : NULL, &losses, tc->json);
    switch (r.outcome) {
    case WHET_TRAIN_COMPLETED:
    case WHET_TRAIN_EARLY_STOPPED:
        status = WHET_EXIT_OK;
        if (gate_failed) {
            whet_error("train: the eval gate failed at every checkpoint (%zu of them; at step %" PRIu64 ": %s); "
                       "no output was written to %s",
                       ev->checkpoints, ev->last_step, ev->last_failures[0] ? ev->last_failures : "?", final_dir);
            status = WHET_EXIT_GATE; /* whet(1) EXIT STATUS */
        }
        break;
    case WHET_TRAIN_INTERRUPTED:
        whet_error("train: interrupted at step %" PRIu64 "; continue with: whet train --resume %s", r.state.step,
                   s->run_dir);
        break;
    case WHET_TRAIN_NONFINITE:
        whet_error("train: %zu steps in a row had a non-finite loss or gradient; stopped at step %" PRIu64
                   " (the last good checkpoint is %s); try a lower --lr or --grad-clip",
                   run.max_nonfinite, r.state.step, r.last_checkpoint[0] ? r.last_checkpoint : "none");
        break;
    case WHET_TRAIN_STOPPED_BY_HOOK:
        whet_error("train: stopped at step %" PRIu64 " by the evaluation gate", r.state.step);
        break;
    }
out:
    train_eval_free(&s->ev);
    whet_trainer_free(s->trainer);
    whet_batcher_free(s->batcher);
    whet_data_splits_close(&s->data);
    whet_tokenizer_free(s->tok);
    whet_model_free(s->model);
    if (s->compute)
        whet_compute_destroy(s->compute);
    free(s);
    return status;
}
