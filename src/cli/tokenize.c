/* whet tokenize: text → token ids as a JSON array, or ids → text with --decode,
 * with the model's own tokenizer (HF directory, tokenizer.json or GGUF). */
#include "cli/commands.h"
#include "cli/common.h"
#include "io/json.h"
#include "util/log.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fputs("usage: whet tokenize --model M (--text S | --file F) [--no-special] [--decode] [--json]\n"
          "Encode text with a model's tokenizer and print the ids as a JSON array.\n"
          "  --model M      HF model directory, tokenizer.json, or GGUF file\n"
          "  --text S       the text to encode\n"
          "  --file F       read the text from F (- for standard input)\n"
          "  --no-special   add no BOS/EOS (special tokens written in the text are still\n"
          "                 recognised); with --decode, leave special tokens out\n"
          "  --decode       the input is a JSON array of ids: print the text they decode to\n"
          "  --json         print one JSON object: {\"ids\":[...],\"count\":N}, or with\n"
          "                 --decode {\"text\":\"...\"}\n"
          "  --version      print whet's version\n"
          "  --help         this text\n",
          out);
}

static int decode_ids(const whet_tokenizer *t, const char *input, size_t len, const char *name, int skip_special,
                      int json)
{
    whet_err e = {{0}};
    whet_json_doc *doc = NULL;
    if (whet_json_parse(&doc, input, len, name, NULL, &e) != 0) {
        whet_error("%s", e.msg);
        return WHET_EXIT_ERROR;
    }
    const whet_json *root = whet_json_root(doc);
    if (root->type != WHET_JSON_ARRAY) {
        whet_json_fail_at(&e, doc, root, "a JSON array of token ids");
        whet_error("%s", e.msg);
        whet_json_free(doc);
        return WHET_EXIT_ERROR;
    }
    size_t n = whet_json_count(root);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    int status = ids ? WHET_EXIT_OK : WHET_EXIT_ERROR;
    for (size_t i = 0; i < n && status == WHET_EXIT_OK; i++) {
        int64_t id;
        if (whet_json_int64(doc, whet_json_at(root, i), 0, INT32_MAX, &id, &e) != 0) {
            whet_error("%s", e.msg);
            status = WHET_EXIT_ERROR;
        }
        ids[i] = (int32_t)id;
    }
    char *text = NULL;
    size_t text_len = 0;
    if (status == WHET_EXIT_OK && whet_tokenizer_decode(t, ids, n, skip_special, &text, &text_len, &e) != 0) {
        whet_error("%s", e.msg);
        status = WHET_EXIT_ERROR;
    }
    if (status == WHET_EXIT_OK && json) {
        whet_json_writer w;
        whet_json_writer_init(&w, 0);
        whet_json_begin_object(&w);
        whet_json_key(&w, "text");
        whet_json_write_string_len(&w, text, text_len);
        whet_json_end_object(&w);
        if (cli_print_json(&w, "tokenize output") != 0)
            status = WHET_EXIT_ERROR;
    } else if (status == WHET_EXIT_OK) {
        fwrite(text, 1, text_len, stdout);
    }
    free(text);
    free(ids);
    whet_json_free(doc);
    return status;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *text = NULL, *file = NULL;
    int no_special = 0, decode = 0, json = 0;
    enum { OPT_NO_SPECIAL = 256, OPT_DECODE, OPT_JSON };
    static const struct option options[] = {
        {"model", required_argument, NULL, 'm'}, {"text", required_argument, NULL, 't'},
        {"file", required_argument, NULL, 'f'},  {"no-special", no_argument, NULL, OPT_NO_SPECIAL},
        {"decode", no_argument, NULL, OPT_DECODE}, {"json", no_argument, NULL, OPT_JSON}, CLI_COMMON_OPTIONS};
    cli_parser p = {.command = "tokenize", .usage = usage};
    int opt;
    while ((opt = cli_next_option(&p, argc, argv, "", options)) != -1) {
        switch (opt) {
        case 'm': model = optarg; break;
        case 't': text = optarg; break;
        case 'f': file = optarg; break;
        case OPT_NO_SPECIAL: no_special = 1; break;
        case OPT_DECODE: decode = 1; break;
        case OPT_JSON: json = 1; break;
        }
    }
    if (p.exit >= 0)
        return p.exit;
    if (optind < argc) {
        whet_error("tokenize: unexpected argument '%s'", argv[optind]);
        return WHET_EXIT_ERROR;
    }
    if (!model) {
        whet_error("tokenize: --model is required");
        return WHET_EXIT_ERROR;
    }
    if ((text != NULL) == (file != NULL)) {
        whet_error("tokenize: give exactly one of --text and --file");
        return WHET_EXIT_ERROR;
    }
    char *input = NULL;
    size_t len = 0;
    if (cli_read_input("tokenize", text, file, &input, &len) != 0)
        return WHET_EXIT_ERROR;
    whet_tokenizer *t = cli_open_tokenizer(model);
    if (!t) {
        free(input);
        return WHET_EXIT_ERROR;
    }
    int status = WHET_EXIT_OK;
    if (decode) {
        status = decode_ids(t, input, len, file ? file : "--text", no_special, json);
    } else {
        whet_err e = {{0}};
        int32_t *ids = NULL;
        size_t n = 0;
        if (whet_tokenizer_encode(t, input, len, !no_special, &ids, &n, &e) != 0) {
            whet_error("%s", e.msg);
            status = WHET_EXIT_ERROR;
        } else if (json) {
            whet_json_writer w;
            whet_json_writer_init(&w, 0);
            whet_json_begin_object(&w);
            whet_json_key(&w, "ids");
            whet_json_begin_array(&w);
            for (size_t i = 0; i < n; i++)
                whet_json_write_int(&w, ids[i]);
            whet_json_end_array(&w);
            whet_json_key(&w, "count");
            whet_json_write_int(&w, (int64_t)n);
            whet_json_end_object(&w);
            if (cli_print_json(&w, "tokenize output") != 0)
                status = WHET_EXIT_ERROR;
        } else {
            putchar('[');
            for (size_t i = 0; i < n; i++)
                printf(i ? ", %d" : "%d", ids[i]);
            puts("]");
        }
        free(ids);
    }
    whet_tokenizer_free(t);
    free(input);
    return status;
}
