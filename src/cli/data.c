/* whet data: check training data (every problem as file:line:column), its
 * statistics, examples with their trained tokens marked, deduplication, and
 * n-gram overlap with eval suites. The work is in src/data/ (check.h), which
 * `whet train` calls too. */
#include "cli/commands.h"
#include "cli/common.h"
#include "data/check.h"
#include "data/dataset.h"
#include "io/json.h"
#include "util/log.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_SEQ_LEN 2048
#define DEFAULT_BATCH 4
#define DEFAULT_SHOW 3
#define DEFAULT_NGRAM 13


static void usage(FILE *out)
{
    fputs("usage: whet data check FILE... [--model M] [--chat-template N] [--seq-len T] [--json]\n"
          "       whet data stats FILE --model M [--chat-template N] [--seq-len T] [--batch-size B]\n"
          "                       [--pack] [--train-on-prompt] [--json]\n"
          "       whet data show FILE --model M [--chat-template N] [-n N] [--start K] [--train-on-prompt]\n"
          "       whet data dedup FILE --out OUT\n"
          "       whet data overlap TRAIN EVAL... [--n N] [--max-common F] [--json]\n"
          "Check and inspect training data (JSONL chat, prompt/completion or text; .txt).\n"
          "  check    every problem as file:line:column: class: message; exit 2 on errors\n"
          "  stats    examples, tokens per example, trained share, truncations, steps per epoch\n"
          "  show     examples as the model sees them, trained tokens marked\n"
          "  dedup    copy FILE to OUT without duplicate examples\n"
          "  overlap  eval cases whose word n-grams appear in the training data\n"
          "  --model M           HF model directory, tokenizer.json or GGUF file (its tokenizer\n"
          "                      and chat template); check without it does not tokenize\n"
          "  --chat-template N   render with template N instead of the model's\n"
          "  --seq-len T         sequence length: longer examples are cut (default 2048)\n"
          "  --batch-size B      sequences per step for stats (default 4)\n"
          "  --pack              stats: several examples per sequence, as training with --pack\n"
          "  --train-on-prompt   every token trained, not only assistant turns and completions\n"
          "  -n N                show N examples (default 3)\n"
          "  --start K           show from example K (from 0; default 0)\n"
          "  --out OUT           dedup: the file to write (may be FILE itself)\n"
          "  --n N               overlap: words per n-gram (default 13)\n"
          "  --max-common F      overlap: n-grams in more than F of the training examples\n"
          "                      (and in more than 10) are a template and not counted\n"
          "                      (default 0.1; 1 counts them all)\n"
          "  --json              print one JSON object\n"
          "  --version           print whet's version\n"
          "  --help              this text\n",
          out);
}

typedef struct data_args {
    const char *sub;
    char **files;
    size_t n_files;
    const char *model, *chat_template, *out;
    size_t seq_len, batch_size, show_n, start, ngram;
    double max_common;
    int pack, train_on_prompt, json, seq_len_given;
} data_args;

/* ---- the model's tokenizer and template ---- */

static int open_data_model(cli_model *dm, const data_args *a)
{
    cli_model_options o = {.model = a->model, .chat_template = a->chat_template};
    return cli_open_model(dm, &o, CLI_LOAD_TOKENIZER | CLI_LOAD_TEMPLATE);
}

static whet_data_options data_options(const cli_model *dm, const data_args *a)
{
    whet_data_options o = {.tok = dm->tok, .tmpl = dm->have_template ? &dm->tmpl : NULL,
                           .train_on_prompt = a->train_on_prompt, .add_eos = 1};
    return o;
}

/* ---- check ---- */

static int run_check(const data_args *a)
{
    cli_model dm = {0};
    if (a->model && open_data_model(&dm, a) != 0)
        return WHET_EXIT_ERROR;
    whet_data_check_options co = {.seq_len = a->model ? a->seq_len : 0};
    if (a->model)
        co.data = data_options(&dm, a);
    whet_data_report rep;
    whet_err e = {{0}};
    int rc = whet_data_check((const char *const *)a->files, a->n_files, &co, &rep, &e);
    cli_close_model(&dm);
    if (rc != 0) {
        whet_error("%s", e.msg);
        return WHET_EXIT_ERROR;
    }
    if (a->json) {
        whet_json_writer w;
        whet_json_writer_init(&w, 2);
        whet_json_begin_object(&w);
        whet_json_key(&w, "files");
        whet_json_begin_array(&w);
        for (size_t i = 0; i < rep.n_files; i++)
            whet_json_write_string(&w, rep.files[i]);
        whet_json_end_array(&w);
        whet_json_key(&w, "examples");
        whet_json_write_int(&w, (int64_t)rep.examples);
        whet_json_key(&w, "errors");
        whet_json_write_int(&w, (int64_t)rep.errors);
        whet_json_key(&w, "warnings");
        whet_json_write_int(&w, (int64_t)rep.warnings);
        whet_json_key(&w, "problems");
        whet_json_begin_array(&w);
        for (size_t i = 0; i < rep.n_problems; i++) {
            const whet_data_problem *p = &rep.problems[i];
            whet_json_begin_object(&w);
            whet_json_key(&w, "file");
            whet_json_write_string(&w, p->file);
            whet_json_key(&w, "line");
            whet_json_write_int(&w, (int64_t)p->line);
            whet_json_key(&w, "column");
            whet_json_write_int(&w, (int64_t)p->column);
            whet_json_key(&w, "severity");
            whet_json_write_string(&w, p->warning ? "warning" : "error");
            whet_json_key(&w, "class");
            whet_json_write_string(&w, p->cls);
            whet_json_key(&w, "message");
            whet_json_write_string(&w, p->message);
            whet_json_end_object(&w);
        }
        whet_json_end_array(&w);
        whet_json_end_object(&w);
        int bad = cli_print_json(&w, "the report");
        if (bad) {
            whet_data_report_free(&rep);
            return WHET_EXIT_ERROR;
        }
    } else {
        for (size_t i = 0; i < rep.n_problems; i++) {
            char line[1400];
            whet_data_problem_format(&rep.problems[i], line, sizeof line);
            puts(line);
        }
        size_t shown = rep.n_problems, all = rep.errors + rep.warnings;
        if (shown < all)
            printf("... and %zu more problems\n", all - shown);
        fprintf(stderr, "whet: %zu examples in %zu file%s: %zu error%s, %zu warning%s\n", rep.examples, rep.n_files,
                rep.n_files == 1 ? "" : "s", rep.errors, rep.errors == 1 ? "" : "s", rep.warnings,
                rep.warnings == 1 ? "" : "s");
    }
    int status = rep.errors ? WHET_EXIT_GATE : WHET_EXIT_OK;
    whet_data_report_free(&rep);
    return status;
}

/* ---- stats ---- */

static int run_stats(const data_args *a)
{
    cli_model dm;
    if (open_data_model(&dm, a) != 0)
        return WHET_EXIT_ERROR;
    whet_data_options o = data_options(&dm, a);
    whet_dataset *ds = NULL;
    whet_err e = {{0}};
    whet_data_stats st;
    int status = WHET_EXIT_ERROR;
    if (whet_dataset_open(&ds, a->files[0], &o, &e) != 0 ||
        whet_data_stats_compute(ds, a->seq_len, a->batch_size, a->pack, &st, &e) != 0) {
        whet_error("%s", e.msg);
        goto done;
    }
    double share = st.kept_tokens ? 100.0 * (double)st.loss_tokens / (double)st.kept_tokens : 0.0;
    if (a->json) {
        whet_json_writer w;
        whet_json_writer_init(&w, 2);
        whet_json_begin_object(&w);
        whet_json_key(&w, "file");
        whet_json_write_string(&w, a->files[0]);
        whet_json_key(&w, "format");
        static const char *const formats[] = {"unknown", "text", "prompt-completion", "chat"};
        whet_json_write_string(&w, formats[whet_dataset_format(ds)]);
        const struct { const char *key; size_t v; } fields[] = {
            {"examples", st.examples}, {"tokens", st.tokens}, {"min", st.min}, {"median", st.median},
            {"p95", st.p95}, {"max", st.max}, {"kept_tokens", st.kept_tokens}, {"loss_tokens", st.loss_tokens},
            {"truncated", st.truncated}, {"cut_tokens", st.cut_tokens}, {"seq_len", a->seq_len},
            {"batch_size", a->batch_size}, {"rows", st.rows}, {"steps_per_epoch", st.steps_per_epoch}};
        for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
            whet_json_key(&w, fields[i].key);
            whet_json_write_int(&w, (int64_t)fields[i].v);
        }
        whet_json_key(&w, "loss_share");
        whet_json_write_double(&w, st.kept_tokens ? (double)st.loss_tokens / (double)st.kept_tokens : 0.0);
        whet_json_key(&w, "packed");
        whet_json_write_bool(&w, a->pack);
        whet_json_end_object(&w);
        int bad = cli_print_json(&w, "the report");
        if (bad)
            goto done;
    } else {
        static const char *const formats[] = {"unknown", "text", "prompt/completion", "chat"};
        printf("file:            %s (%s)\n", a->files[0], formats[whet_dataset_format(ds)]);
        printf("examples:        %zu\n", st.examples);
        printf("tokens:          %zu (per example: min %zu, median %zu, p95 %zu, max %zu)\n", st.tokens, st.min,
               st.median, st.p95, st.max);
        printf("trained tokens:  %zu of %zu kept (%.1f %%)%s\n", st.loss_tokens, st.kept_tokens, share,
               a->train_on_prompt ? " with --train-on-prompt" : "");
        printf("truncated:       %zu example%s longer than --seq-len %zu (%zu tokens cut)\n", st.truncated,
               st.truncated == 1 ? "" : "s", a->seq_len, st.cut_tokens);
        printf("steps per epoch: %zu at --batch-size %zu (%zu %s rows of %zu)\n", st.steps_per_epoch, a->batch_size,
               st.rows, a->pack ? "packed" : "unpacked", a->seq_len);
    }
    status = WHET_EXIT_OK;
done:
    whet_dataset_close(ds);
    cli_close_model(&dm);
    return status;
}

/* ---- show ---- */

static void put_bytes(whet_utf8_stream *u, const char *bytes, size_t len)
{
    while (len > 0) {
        size_t piece = len < 256 ? len : 256;
        char out[3 * (256 + 3)];
        size_t n = whet_utf8_feed(u, bytes, piece, out);
        fwrite(out, 1, n, stdout);
        bytes += piece;
        len -= piece;
    }
}

static int run_show(const data_args *a)
{
    cli_model dm;
    if (open_data_model(&dm, a) != 0)
        return WHET_EXIT_ERROR;
    whet_data_options o = data_options(&dm, a);
    whet_dataset *ds = NULL;
    whet_err e = {{0}};
    int status = WHET_EXIT_ERROR;
    if (whet_dataset_open(&ds, a->files[0], &o, &e) != 0) {
        whet_error("%s", e.msg);
        goto done;
    }
    const char *no_color = getenv("NO_COLOR"); /* as whet_use_color, for standard output */
    int color = isatty(STDOUT_FILENO) && !(no_color && *no_color);
    const char *open_mark = color ? "\x1b[1;32m" : "\xc2\xab", *close_mark = color ? "\x1b[0m" : "\xc2\xbb";
    size_t n = whet_dataset_count(ds);
    for (size_t i = a->start; i < n && i < a->start + a->show_n; i++) {
        whet_example ex;
        if (whet_dataset_get(ds, i, &ex, &e) != 0) {
            whet_error("%s", e.msg);
            goto done;
        }
        size_t trained = 0;
        for (size_t k = 1; k < ex.n; k++)
            trained += ex.loss[k];
        printf("%s== %s:%zu: example %zu, %zu tokens, %zu trained%s\n", i > a->start ? "\n" : "", a->files[0],
               whet_dataset_line(ds, i), i, ex.n, trained,
               ex.n > a->seq_len ? " (longer than --seq-len)" : "");
        whet_utf8_stream u = {{0}, 0};
        int in_trained = 0;
        for (size_t k = 0; k < ex.n; k++) {
            /* the first token is never a target: it is shown untrained */
            int t = k > 0 && ex.loss[k];
            if (t != in_trained) {
                char tail[8];
                fwrite(tail, 1, whet_utf8_flush(&u, tail), stdout);
                fputs(t ? open_mark : close_mark, stdout);
                in_trained = t;
            }
            size_t len = 0;
            const char *bytes = whet_tokenizer_token_bytes(dm.tok, ex.ids[k], &len);
            if (bytes)
                put_bytes(&u, bytes, len);
        }
        char tail[8];
        fwrite(tail, 1, whet_utf8_flush(&u, tail), stdout);
        if (in_trained)
            fputs(close_mark, stdout);
        putchar('\n');
        whet_example_free(&ex);
    }
    if (!color)
        fprintf(stderr, "whet: trained tokens are between \xc2\xab and \xc2\xbb\n");
    status = WHET_EXIT_OK;
done:
    whet_dataset_close(ds);
    cli_close_model(&dm);
    return status;
}

/* ---- dedup, overlap ---- */

static int run_dedup(const data_args *a)
{
    size_t kept, removed;
    whet_err e = {{0}};
    if (whet_data_dedup(a->files[0], a->out, &kept, &removed, &e) != 0) {
        whet_error("%s", e.msg);
        return WHET_EXIT_ERROR;
    }
    printf("%s: kept %zu examples, removed %zu duplicate%s\n", a->out, kept, removed, removed == 1 ? "" : "s");
    return WHET_EXIT_OK;
}

static int run_overlap(const data_args *a)
{
    whet_overlap_report r;
    whet_err e = {{0}};
    whet_overlap_options o = {.n = a->ngram, .max_common = a->max_common};
    if (whet_data_overlap_with((const char *const *)a->files, 1, (const char *const *)a->files + 1, a->n_files - 1,
                               &o, &r, &e) != 0) {
        whet_error("%s", e.msg);
        return WHET_EXIT_ERROR;
    }
    if (a->json) {
        whet_json_writer w;
        whet_json_writer_init(&w, 2);
        whet_json_begin_object(&w);
        whet_json_key(&w, "n");
        whet_json_write_int(&w, (int64_t)r.n);
        whet_json_key(&w, "eval_cases");
        whet_json_write_int(&w, (int64_t)r.eval_cases);
        whet_json_key(&w, "short_cases");
        whet_json_write_int(&w, (int64_t)r.short_cases);
        whet_json_key(&w, "train_examples");
        whet_json_write_int(&w, (int64_t)r.train_examples);
        whet_json_key(&w, "max_common");
        whet_json_write_double(&w, r.max_common);
        whet_json_key(&w, "common_ngrams");
        whet_json_write_int(&w, (int64_t)r.common_ngrams);
        whet_json_key(&w, "template_cases");
        whet_json_write_int(&w, (int64_t)r.template_cases);
        whet_json_key(&w, "overlapping");
        whet_json_begin_array(&w);
        for (size_t i = 0; i < r.n_cases; i++) {
            const whet_overlap_case *c = &r.cases[i];
            whet_json_begin_object(&w);
            whet_json_key(&w, "id");
            whet_json_write_string(&w, c->id);
            whet_json_key(&w, "file");
            whet_json_write_string(&w, c->file);
            whet_json_key(&w, "line");
            whet_json_write_int(&w, (int64_t)c->line);
            whet_json_key(&w, "ngrams");
            whet_json_write_int(&w, (int64_t)c->ngrams);
            whet_json_key(&w, "overlapping");
            whet_json_write_int(&w, (int64_t)c->overlapping);
            whet_json_key(&w, "common");
            whet_json_write_int(&w, (int64_t)c->common);
            whet_json_key(&w, "train_file");
            whet_json_write_string(&w, c->train_file);
            whet_json_key(&w, "train_line");
            whet_json_write_int(&w, (int64_t)c->train_line);
            whet_json_end_object(&w);
        }
        whet_json_end_array(&w);
        whet_json_end_object(&w);
        int bad = cli_print_json(&w, "the report");
        if (bad) {
            whet_overlap_report_free(&r);
            return WHET_EXIT_ERROR;
        }
    } else {
        for (size_t i = 0; i < r.n_cases; i++) {
            const whet_overlap_case *c = &r.cases[i];
            printf("%s:%zu: %s: %zu of its %zu %zu-grams are in %s (first at line %zu)\n", c->file, c->line, c->id,
                   c->overlapping, c->ngrams, r.n, c->train_file, c->train_line);
        }
        printf("%zu of %zu eval cases overlap the training data", r.n_cases, r.eval_cases);
        if (r.short_cases)
            printf(" (%zu case%s fewer than %zu words and %s not checked)", r.short_cases,
                   r.short_cases == 1 ? " has" : "s have", r.n, r.short_cases == 1 ? "was" : "were");
        printf("\n");
        if (r.common_ngrams)
            printf("%zu %zu-gram%s in more than %g %% of the %zu training examples %s left out as a shared "
                   "template (%zu case%s only those)\n",
                   r.common_ngrams, r.n, r.common_ngrams == 1 ? "" : "s", r.max_common * 100, r.train_examples,
                   r.common_ngrams == 1 ? "was" : "were", r.template_cases,
                   r.template_cases == 1 ? " shares" : "s share");
    }
    whet_overlap_report_free(&r);
    return WHET_EXIT_OK;
}

/* ---- options ---- */

int cmd_data(int argc, char **argv)
{
    data_args a = {.seq_len = DEFAULT_SEQ_LEN, .batch_size = DEFAULT_BATCH, .show_n = DEFAULT_SHOW,
                   .ngram = DEFAULT_NGRAM, .max_common = WHET_OVERLAP_MAX_COMMON};
    enum {
        OPT_TEMPLATE = 256, OPT_SEQ_LEN, OPT_BATCH, OPT_PACK, OPT_TRAIN_ON_PROMPT, OPT_START, OPT_OUT, OPT_NGRAM,
        OPT_MAX_COMMON, OPT_JSON
    };
    static const struct option options[] = {
        {"model", required_argument, NULL, 'm'},
        {"chat-template", required_argument, NULL, OPT_TEMPLATE},
        {"seq-len", required_argument, NULL, OPT_SEQ_LEN},
        {"batch-size", required_argument, NULL, OPT_BATCH},
        {"pack", no_argument, NULL, OPT_PACK},
        {"train-on-prompt", no_argument, NULL, OPT_TRAIN_ON_PROMPT},
        {"start", required_argument, NULL, OPT_START},
        {"out", required_argument, NULL, OPT_OUT},
        {"n", required_argument, NULL, OPT_NGRAM},
        {"max-common", required_argument, NULL, OPT_MAX_COMMON},
        {"json", no_argument, NULL, OPT_JSON},
        CLI_COMMON_OPTIONS};
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return WHET_EXIT_OK;
    }
    if (argc < 2 || argv[1][0] == '-') {
        whet_error("data: expected a subcommand: check, stats, show, dedup or overlap (see 'whet data --help')");
        return WHET_EXIT_ERROR;
    }
    a.sub = argv[1];
    static const char *const subs[] = {"check", "stats", "show", "dedup", "overlap"};
    int known = 0;
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        known |= strcmp(a.sub, subs[i]) == 0;
    if (!known) {
        whet_error("data: unknown subcommand '%s': expected check, stats, show, dedup or overlap", a.sub);
        return WHET_EXIT_ERROR;
    }
    argc--;
    argv++;
    char cmd[32];
    snprintf(cmd, sizeof cmd, "data %s", a.sub);
    cli_parser p = {.command = cmd, .usage = usage};
    int opt;
    while ((opt = cli_next_option(&p, argc, argv, "n:", options)) != -1) {
        int bad = 0;
        switch (opt) {
        case 'm': a.model = optarg; break;
        case OPT_TEMPLATE: a.chat_template = optarg; break;
        case OPT_SEQ_LEN:
            bad = cli_parse_size(cmd, "--seq-len", optarg, 1, 1u << 24, &a.seq_len);
            a.seq_len_given = 1;
            break;
        case OPT_BATCH: bad = cli_parse_size(cmd, "--batch-size", optarg, 1, 1u << 20, &a.batch_size); break;
        case OPT_PACK: a.pack = 1; break;
        case OPT_TRAIN_ON_PROMPT: a.train_on_prompt = 1; break;
        case 'n': bad = cli_parse_size(cmd, "-n", optarg, 1, SIZE_MAX / 2, &a.show_n); break;
        case OPT_START: bad = cli_parse_size(cmd, "--start", optarg, 0, SIZE_MAX / 2, &a.start); break;
        case OPT_OUT: a.out = optarg; break;
        case OPT_NGRAM: bad = cli_parse_size(cmd, "--n", optarg, 1, 64, &a.ngram); break;
        case OPT_MAX_COMMON:
            bad = cli_parse_double(cmd, "--max-common", optarg, 0, 1, &a.max_common);
            if (!bad && a.max_common <= 0) {
                whet_error("%s: --max-common %s: expected more than 0 and at most 1", cmd, optarg);
                bad = 1;
            }
            break;
        case OPT_JSON: a.json = 1; break;
        }
        if (bad)
            return WHET_EXIT_ERROR;
    }
    if (p.exit >= 0)
        return p.exit;
    a.files = argv + optind;
    a.n_files = (size_t)(argc - optind);
    int is_check = strcmp(a.sub, "check") == 0, is_overlap = strcmp(a.sub, "overlap") == 0;
    int is_dedup = strcmp(a.sub, "dedup") == 0;
    if (a.n_files == 0 || (is_overlap && a.n_files < 2) || (!is_check && !is_overlap && a.n_files != 1)) {
        whet_error("%s: expected %s", cmd,
                   is_check     ? "one or more data files"
                   : is_overlap ? "a training data file and one or more eval files"
                                : "one data file");
        return WHET_EXIT_ERROR;
    }
    if (!is_check && !is_dedup && !is_overlap && !a.model) {
        whet_error("%s: --model is required", cmd);
        return WHET_EXIT_ERROR;
    }
    if (is_dedup && !a.out) {
        whet_error("%s: --out is required", cmd);
        return WHET_EXIT_ERROR;
    }
    if (is_check)
        return run_check(&a);
    if (strcmp(a.sub, "stats") == 0)
        return run_stats(&a);
    if (strcmp(a.sub, "show") == 0)
        return run_show(&a);
    if (is_dedup)
        return run_dedup(&a);
    return run_overlap(&a);
}
