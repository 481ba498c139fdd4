/* whet score: how well a model predicts a text: mean NLL per token,
 * perplexity and bits per byte, over sliding windows for long texts (the
 * Hugging Face "strided perplexity" recipe; see whet-score(1)). */
#include "cli/commands.h"
#include "cli/common.h"
#include "io/json.h"
#include "util/log.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_CTX 1024

static void usage(FILE *out)
{
    fputs("usage: whet score --model M [--adapter DIR] (--file F | --text S) [--ctx N]\n"
          "                  [--stride S] [--json] [--per-token] [--threads N]\n"
          "Score a text with a model: tokens, mean NLL, perplexity, bits per byte.\n"
          "  --model M      HF model directory (config.json, safetensors, tokenizer.json)\n"
          "                 or GGUF file\n"
          "  --adapter DIR  apply the PEFT LoRA adapter in DIR (whet's or HF PEFT's)\n"
          "  --file F       the text to score (- for standard input)\n"
          "  --text S       the text to score, given on the command line\n"
          "  --ctx N        window of N tokens (default: the model's positions, at most 1024)\n"
          "  --stride S     windows start S tokens apart, S < N (default N/2)\n"
          "  --json         print one JSON object\n"
          "  --per-token    also list every token: position, id, log-probability, text\n"
          "  --threads N    threads to use (default: WHET_THREADS, else every core)\n"
          "  --version      print whet's version\n"
          "  --help         this text\n",
          out);
}

/* A token's text, made valid UTF-8 (a token that splits a character shows
 * U+FFFD); malloc'd. */
static char *token_text(const whet_tokenizer *t, int32_t id, size_t *len)
{
    size_t n = 0;
    const char *b = whet_tokenizer_token_bytes(t, id, &n);
    if (!b)
        b = "", n = 0;
    char *out = malloc(3 * (n + 4) + 1);
    if (!out)
        return NULL;
    whet_utf8_stream s = {{0}, 0};
    size_t o = whet_utf8_feed(&s, b, n, out);
    o += whet_utf8_flush(&s, out + o);
    out[o] = 0;
    *len = o;
    return out;
}

/* Prints s as a JSON string literal (the per-token table's text column). */
static void print_quoted(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

typedef struct score_result {
    size_t tokens, scored, windows, bytes;
    double total_nll; /* nats */
    float *logprob;   /* [tokens]: log p(token i | what the window gave before it); [0] unused */
} score_result;

static int print_json(const cli_model *cm, const char *model_path, const char *source, const int32_t *ids,
                      const score_result *r, size_t ctx, size_t stride, int per_token)
{
    whet_json_writer w;
    whet_json_writer_init(&w, 0);
    double mean = r->total_nll / (double)r->scored;
    whet_json_begin_object(&w);
    whet_json_key(&w, "model");
    whet_json_write_string(&w, model_path);
    whet_json_key(&w, "source");
    whet_json_write_string(&w, source);
    whet_json_key(&w, "tokens");
    whet_json_write_int(&w, (int64_t)r->tokens);
    whet_json_key(&w, "scored");
    whet_json_write_int(&w, (int64_t)r->scored);
    whet_json_key(&w, "bytes");
    whet_json_write_int(&w, (int64_t)r->bytes);
    whet_json_key(&w, "mean_nll");
    whet_json_write_double(&w, mean);
    whet_json_key(&w, "total_nll");
    whet_json_write_double(&w, r->total_nll);
    whet_json_key(&w, "perplexity");
    whet_json_write_double(&w, exp(mean));
    whet_json_key(&w, "bits_per_byte");
    if (r->bytes)
        whet_json_write_double(&w, r->total_nll / log(2.0) / (double)r->bytes);
    else
        whet_json_write_null(&w);
    whet_json_key(&w, "ctx");
    whet_json_write_int(&w, (int64_t)ctx);
    whet_json_key(&w, "stride");
    whet_json_write_int(&w, (int64_t)stride);
    whet_json_key(&w, "windows");
    whet_json_write_int(&w, (int64_t)r->windows);
    if (per_token) {
        whet_json_key(&w, "per_token");
        whet_json_begin_array(&w);
        for (size_t i = 0; i < r->tokens; i++) {
            size_t len = 0;
            char *text = token_text(cm->tok, ids[i], &len);
            whet_json_begin_object(&w);
            whet_json_key(&w, "id");
            whet_json_write_int(&w, ids[i]);
            whet_json_key(&w, "text");
            whet_json_write_string_len(&w, text ? text : "", text ? len : 0);
            whet_json_key(&w, "logprob");
            if (i == 0)
                whet_json_write_null(&w);
            else
                whet_json_write_double(&w, r->logprob[i]);
            whet_json_end_object(&w);
            free(text);
        }
        whet_json_end_array(&w);
    }
    whet_json_end_object(&w);
    return cli_print_json(&w, "score output");
}

static void print_text(const cli_model *cm, const char *source, const int32_t *ids, const score_result *r,
                       size_t ctx, size_t stride, int per_token)
{
    if (per_token) {
        printf("%8s %8s %12s  %s\n", "position", "id", "logprob", "text");
        for (size_t i = 0; i < r->tokens; i++) {
            size_t len = 0;
            char *text = token_text(cm->tok, ids[i], &len);
            if (i == 0)
                printf("%8zu %8d %12s  ", i, ids[i], "-");
            else
                printf("%8zu %8d %12.6f  ", i, ids[i], (double)r->logprob[i]);
            print_quoted(text ? text : "", text ? len : 0);
            putchar('\n');
            free(text);
        }
        putchar('\n');
    }
    double mean = r->total_nll / (double)r->scored;
    printf("text           %s, %zu bytes\n", source, r->bytes);
    printf("tokens         %zu (%zu scored)\n", r->tokens, r->scored);
    printf("windows        %zu of at most %zu tokens, stride %zu\n", r->windows, ctx, stride);
    printf("mean NLL       %.6f nats/token\n", mean);
    printf("perplexity     %.4f\n", exp(mean));
    if (r->bytes)
        printf("bits per byte  %.6f bits/byte\n", r->total_nll / log(2.0) / (double)r->bytes);
}

int cmd_score(int argc, char **argv)
{
    const char *file = NULL, *text = NULL;
    cli_model_options mo = {0};
    size_t ctx = 0, stride = 0;
    int json = 0, per_token = 0;
    enum { OPT_CTX = 256, OPT_STRIDE, OPT_JSON, OPT_PER_TOKEN };
    static const struct option options[] = {
        {"model", required_argument, NULL, CLI_OPT_MODEL}, {"file", required_argument, NULL, 'f'},
        {"text", required_argument, NULL, 't'},  {"ctx", required_argument, NULL, OPT_CTX},
        {"stride", required_argument, NULL, OPT_STRIDE}, {"json", no_argument, NULL, OPT_JSON},
        {"per-token", no_argument, NULL, OPT_PER_TOKEN}, {"threads", required_argument, NULL, CLI_OPT_THREADS},
        {"adapter", required_argument, NULL, CLI_OPT_ADAPTER}, CLI_COMMON_OPTIONS};
    cli_parser p = {.command = "score", .usage = usage, .model = &mo};
    int opt;
    while ((opt = cli_next_option(&p, argc, argv, "", options)) != -1) {
        int bad = 0;
        switch (opt) {
        case 'f': file = optarg; break;
        case 't': text = optarg; break;
        case OPT_CTX: bad = cli_parse_size("score", "--ctx", optarg, 2, 1u << 24, &ctx); break;
        case OPT_STRIDE: bad = cli_parse_size("score", "--stride", optarg, 1, 1u << 24, &stride); break;
        case OPT_JSON: json = 1; break;
        case OPT_PER_TOKEN: per_token = 1; break;
        }
        if (bad)
            return WHET_EXIT_ERROR;
    }
    if (p.exit >= 0)
        return p.exit;
    const char *model_path = mo.model;
    if (optind < argc) {
        whet_error("score: unexpected argument '%s'", argv[optind]);
        return WHET_EXIT_ERROR;
    }
    if (!model_path) {
        whet_error("score: --model is required");
        return WHET_EXIT_ERROR;
    }
    if ((text != NULL) == (file != NULL)) {
        whet_error("score: give exactly one of --file and --text");
        return WHET_EXIT_ERROR;
    }
    if (ctx && stride && stride >= ctx) {
        whet_error("score: --stride %zu must be less than --ctx %zu (windows must overlap so that every token but "
                   "the first is scored)", stride, ctx);
        return WHET_EXIT_ERROR;
    }

    char *input = NULL;
    size_t len = 0;
    if (cli_read_input("score", text, file, &input, &len) != 0)
        return WHET_EXIT_ERROR;
    cli_model cm;
    if (cli_open_model(&cm, &mo, CLI_LOAD_WEIGHTS | CLI_LOAD_TOKENIZER) != 0) {
        free(input);
        return WHET_EXIT_ERROR;
    }
    int status = WHET_EXIT_ERROR;
    whet_err e = {{0}};
    int32_t *ids = NULL;
    size_t n = 0;
    score_result r = {0};
    const whet_model_config *cfg = &cm.model->cfg;
    size_t limit = cfg->max_positions;
    if (cfg->sliding_window && cfg->sliding_window < limit)
        limit = cfg->sliding_window;
    if (ctx > limit) {
        whet_error("score: --ctx %zu is more than the %zu positions of %s", ctx, limit, model_path);
        goto done;
    }
    if (!ctx)
        ctx = limit < DEFAULT_MAX_CTX ? limit : DEFAULT_MAX_CTX;
    if (!stride)
        stride = ctx / 2;
    if (stride >= ctx) {
        whet_error("score: --stride %zu must be less than the window of %zu tokens", stride, ctx);
        goto done;
    }
    if (whet_tokenizer_encode(cm.tok, input, len, 1, &ids, &n, &e) != 0) {
        whet_error("%s", e.msg);
        goto done;
    }
    const char *source = file ? (strcmp(file, "-") == 0 ? "standard input" : file) : "--text";
    if (n < 2) {
        whet_error("score: %s is %zu token%s long; scoring needs at least 2", source, n, n == 1 ? "" : "s");
        goto done;
    }
    r.tokens = n;
    r.bytes = len;
    r.logprob = calloc(n, sizeof *r.logprob);
    if (!r.logprob) {
        whet_error("score: out of memory for %zu tokens", n);
        goto done;
    }
    if (whet_model_score_windows(cm.model, ids, n, ctx, stride, r.logprob, &r.total_nll, &r.scored, &r.windows,
                          whet_stderr_is_terminal() && n > ctx, &e) != 0) {
        whet_error("%s", e.msg);
        goto done;
    }
    if (json) {
        if (print_json(&cm, model_path, source, ids, &r, ctx, stride, per_token) != 0)
            goto done;
    } else {
        print_text(&cm, source, ids, &r, ctx, stride, per_token);
    }
    status = WHET_EXIT_OK;
done:
    free(r.logprob);
    free(ids);
    free(input);
    cli_close_model(&cm);
    return status;
}
