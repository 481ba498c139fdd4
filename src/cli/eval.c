/* whet eval: run regression suites (whet-evalspec(5)) on a model, write the
 * reports, compare with a baseline run and gate. Exit status: 0 the gate
 * passed, 1 an error (bad usage included), 2 the gate failed — so that CI can
 * tell a regression from a broken job (whet-eval(1)). */
#include "cli/commands.h"
#include "cli/common.h"
#include "eval/eval.h"
#include "util/log.h"
#include "util/timer.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static void usage(FILE *out)
{
    fputs("usage: whet eval --model M [options] SPEC...\n"
          "Run eval suites (JSONL, see whet-evalspec(5)) on a model; write results and reports;\n"
          "compare with a baseline run and gate. Exit status: 0 passed, 1 error, 2 gate failed.\n"
          "  --model M           HF model directory (config.json, safetensors, tokenizer.json)\n"
          "                      or GGUF file\n"
          "  --adapter DIR       apply a PEFT LoRA adapter directory (whet's or HF PEFT's)\n"
          "  --chat-template N   render chat cases with template N instead of the model's\n"
          "  --out DIR           write results.json, samples.jsonl, report.md, report.html\n"
          "                      (default: eval-out)\n"
          "  --baseline DIR      compare with the results of an earlier run in DIR\n"
          "  --junit FILE        also write JUnit XML to FILE\n"
          "  --repeats N         run every gen case N times (default: each suite's repeats)\n"
          "  --cache DIR         cache of model outputs (default: $XDG_CACHE_HOME/whet/eval,\n"
          "                      else ~/.cache/whet/eval)\n"
          "  --no-cache          neither read nor write the cache\n"
          "  --json              print results.json to standard output\n"
          "  --threads N         threads to use (default: WHET_THREADS, else every core)\n"
          "  --version           print whet's version\n"
          "  --help              this text\n",
          out);
}

static char *default_cache_dir(void)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char buf[4096];
    if (xdg && xdg[0])
        snprintf(buf, sizeof buf, "%s/whet/eval", xdg);
    else if (home && home[0])
        snprintf(buf, sizeof buf, "%s/.cache/whet/eval", home);
    else
        return NULL;
    return strdup(buf);
}

static void print_summary(const whet_eval_results *r, const char *out_dir)
{
    for (size_t i = 0; i < r->n_suites; i++) {
        const whet_eval_suite_result *s = &r->suites[i];
        printf("%s: ", s->name);
        if (s->pass.n)
            printf("%zu of %zu passed (%.1f%%, Wilson 95%% %.1f-%.1f%%)", s->pass.passed, s->pass.n,
                   100 * s->pass.rate, 100 * s->pass.lo, 100 * s->pass.hi);
        else
            printf("no pass/fail cases");
        if (s->n_choice)
            printf("; acc %.4f, acc_norm %.4f", s->acc, s->acc_norm);
        if (s->ppl_cases)
            printf("; perplexity %.4f, %.4f bits/byte", s->ppl, s->bits_per_byte);
        putchar('\n');
        for (size_t t = 0; t < s->n_tags; t++)
            printf("  tag %-20s %zu of %zu (%.1f%%)\n", s->tags[t].tag, s->tags[t].r.passed, s->tags[t].r.n,
                   100 * s->tags[t].r.rate);
        const whet_eval_comparison *c = &s->cmp;
        if (c->present && c->joined == 0) {
            printf("  against the baseline: no case of this suite in it\n");
        } else if (c->present) {
            printf("  against the baseline: %zu joined", c->joined);
            if (!isnan(c->base_rate))
                printf("; pass rate %.1f%% -> %.1f%%; %zu pass->fail, %zu fail->pass; McNemar p = %.4g",
                       100 * c->base_rate, 100 * c->cur_rate, c->pass_to_fail, c->fail_to_pass, c->mcnemar_p);
            if (!isnan(c->diff_mean))
                printf("; score difference %+.4f [%+.4f, %+.4f]", c->diff_mean, c->diff_lo, c->diff_hi);
            if (!isnan(c->ppl_increase))
                printf("; perplexity %+.2f%%", 100 * c->ppl_increase);
            putchar('\n');
            for (size_t k = 0; k < c->n_flips; k++)
                printf("    %s %s\n", k < c->pass_to_fail ? "pass->fail" : "fail->pass",
                       r->cases[c->flips[k].case_index].id);
        }
        for (size_t g = 0; g < s->n_gate_reasons; g++)
            printf("  gate: %s\n", s->gate_reasons[g]);
    }
    printf("gate %s; reports in %s\n", r->gate_failed ? "FAILED" : "passed", out_dir);
}

int cmd_eval(int argc, char **argv)
{
    const char *out_dir = "eval-out", *baseline_dir = NULL, *junit_path = NULL, *cache_opt = NULL;
    cli_model_options mo = {0};
    size_t repeats = 0;
    int json = 0, no_cache = 0;
    enum { OPT_OUT = 256, OPT_BASELINE, OPT_JUNIT, OPT_REPEATS, OPT_CACHE, OPT_NO_CACHE, OPT_JSON };
    static const struct option options[] = {
        {"model", required_argument, NULL, CLI_OPT_MODEL},
        {"adapter", required_argument, NULL, CLI_OPT_ADAPTER},
        {"chat-template", required_argument, NULL, CLI_OPT_CHAT_TEMPLATE},
        {"out", required_argument, NULL, OPT_OUT},
        {"baseline", required_argument, NULL, OPT_BASELINE},
        {"junit", required_argument, NULL, OPT_JUNIT},
        {"repeats", required_argument, NULL, OPT_REPEATS},
        {"cache", required_argument, NULL, OPT_CACHE},
        {"no-cache", no_argument, NULL, OPT_NO_CACHE},
        {"json", no_argument, NULL, OPT_JSON},
        {"threads", required_argument, NULL, CLI_OPT_THREADS},
        CLI_COMMON_OPTIONS};
    cli_parser p = {.command = "eval", .usage = usage, .model = &mo};
    int opt;
    while ((opt = cli_next_option(&p, argc, argv, "", options)) != -1) {
        int bad = 0;
        switch (opt) {
        case OPT_OUT: out_dir = optarg; break;
        case OPT_BASELINE: baseline_dir = optarg; break;
        case OPT_JUNIT: junit_path = optarg; break;
        case OPT_REPEATS: bad = cli_parse_size("eval", "--repeats", optarg, 1, 1000, &repeats); break;
        case OPT_CACHE: cache_opt = optarg; break;
        case OPT_NO_CACHE: no_cache = 1; break;
        case OPT_JSON: json = 1; break;
        }
        if (bad)
            return WHET_EXIT_ERROR;
    }
    if (p.exit >= 0)
        return p.exit;
    if (!mo.model) {
        whet_error("eval: --model is required");
        return WHET_EXIT_ERROR;
    }
    if (optind == argc) {
        whet_error("eval: give at least one SPEC file");
        return WHET_EXIT_ERROR;
    }
    if (no_cache && cache_opt) {
        whet_error("eval: --cache and --no-cache exclude each other");
        return WHET_EXIT_ERROR;
    }

    int status = WHET_EXIT_ERROR;
    whet_err e = {{0}};
    size_t n_suites = (size_t)(argc - optind);
    whet_eval_suite **suites = calloc(n_suites, sizeof *suites);
    whet_eval_results *base = NULL, *res = NULL;
    char *cache_dir = no_cache ? NULL : cache_opt ? strdup(cache_opt) : default_cache_dir();
    cli_model cm = {0};
    if (!suites) {
        whet_error("eval: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n_suites; i++)
        if (whet_eval_suite_load(&suites[i], argv[optind + (int)i], &e) != 0) {
            whet_error("%s", e.msg);
            goto done;
        }
    if (baseline_dir && whet_eval_results_load(&base, baseline_dir, &e) != 0) {
        whet_error("%s", e.msg);
        goto done;
    }
    if (cli_open_model(&cm, &mo, CLI_LOAD_WEIGHTS | CLI_LOAD_TOKENIZER | CLI_LOAD_TEMPLATE) != 0)
        goto done;
    whet_eval_env env = {
        .model = cm.model,
        .tok = cm.tok,
        .tmpl = cm.have_template ? &cm.tmpl : NULL,
        .model_label = mo.model,
        .adapter_label = mo.adapter,
        .cache_dir = cache_dir,
        .repeats = repeats,
        .progress = whet_stderr_is_terminal(),
    };
    double t0 = whet_now();
    if (whet_eval_run(&env, suites, n_suites, &res, &e) != 0) {
        whet_error("%s", e.msg);
        goto done;
    }
    double seconds = whet_now() - t0;
    if (whet_eval_compare(res, base, &e) != 0) {
        whet_error("%s", e.msg);
        goto done;
    }
    if (whet_eval_write_reports(res, out_dir, &e) != 0 || (junit_path && whet_eval_write_junit(res, junit_path, &e) != 0)) {
        whet_error("%s", e.msg);
        goto done;
    }
    if (json) {
        char *text = NULL;
        size_t len = 0;
        if (whet_eval_results_json(res, &text, &len, &e) != 0) {
            whet_error("%s", e.msg);
            goto done;
        }
        fwrite(text, 1, len, stdout);
        free(text);
    } else {
        print_summary(res, out_dir);
    }
    fprintf(stderr, "whet: eval: %zu cases in %.2f s; cache: %zu hits, %zu misses%s\n", res->n_cases, seconds,
            res->cache_hits, res->cache_misses, cache_dir ? "" : " (off)");
    status = res->gate_failed ? WHET_EXIT_GATE : WHET_EXIT_OK;
done:
    for (size_t i = 0; suites && i < n_suites; i++)
        whet_eval_suite_free(suites[i]);
    free(suites);
    whet_eval_results_free(res);
    whet_eval_results_free(base);
    free(cache_dir);
    cli_close_model(&cm);
    return status;
}
