/* whet export: a model, an adapter, or both merged, written in the formats
 * other tools read: a PEFT adapter directory, an HF model directory, a GGUF
 * model or a GGUF LoRA adapter (see whet-export(1)). */
#include "cli/commands.h"
#include "cli/common.h"
#include "io/gguf.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "model/adapter.h"
#include "model/export.h"
#include "util/log.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *out)
{
    fputs("usage: whet export --model M [--adapter DIR] --out PATH --format peft|hf|gguf\n"
          "                   [--type T] [--merge] [--base-name S] [--threads N] [--json]\n"
          "Write a model, an adapter, or the two merged, for other tools.\n"
          "  --model M        HF model directory or GGUF file (the base model)\n"
          "  --adapter DIR    a PEFT adapter directory (whet's or HF PEFT's)\n"
          "  --out PATH       the directory (peft, hf) or file (gguf) to write\n"
          "  --format F       peft: the adapter as a PEFT directory;\n"
          "                   hf: the model (merged with the adapter) as an HF directory;\n"
          "                   gguf: the model (with --merge, merged with the adapter), or\n"
          "                   the adapter alone as a GGUF LoRA adapter\n"
          "  --type T         tensor type: f32, f16 or q8_0 for gguf; f32, f16 or bf16\n"
          "                   for hf (default f32)\n"
          "  --merge          gguf: fold the adapter into the model's weights\n"
          "  --base-name S    peft: base_model_name_or_path to record (default: the\n"
          "                   adapter's own, else --model)\n"
          "  --threads N      threads to use (default: WHET_THREADS, else every core)\n"
          "  --json           print what was written as one JSON object\n"
          "  --version        print whet's version\n"
          "  --help           this text\n",
          out);
}

typedef enum { FORMAT_NONE, FORMAT_PEFT, FORMAT_HF, FORMAT_GGUF } export_format;

/* Whether a and b name the same existing file or directory. */
static int same_path(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int parse_type(const char *arg, export_format format, int *st_dtype, uint32_t *ggml_type)
{
    if (strcmp(arg, "f32") == 0) {
        *st_dtype = WHET_ST_F32, *ggml_type = WHET_GGML_F32;
    } else if (strcmp(arg, "f16") == 0) {
        *st_dtype = WHET_ST_F16, *ggml_type = WHET_GGML_F16;
    } else if (strcmp(arg, "bf16") == 0 && format == FORMAT_HF) {
        *st_dtype = WHET_ST_BF16;
    } else if (strcmp(arg, "q8_0") == 0 && format == FORMAT_GGUF) {
        *ggml_type = WHET_GGML_Q8_0;
    } else {
        whet_error("export: --type: expected %s, got '%s'",
                   format == FORMAT_HF ? "f32, f16 or bf16 for --format hf" : "f32, f16 or q8_0 for --format gguf",
                   arg);
        return -1;
    }
    return 0;
}

/* The base model name a PEFT config records: --base-name, else the one the
 * adapter came with, else the --model path. */
static char *base_name(const char *option, const char *adapter_dir, const char *model_path)
{
    if (option)
        return strdup(option);
    whet_peft_config pc;
    whet_err e = {{0}};
    char *name = NULL;
    if (whet_peft_config_load(&pc, adapter_dir, &e) == 0) {
        if (pc.base_model_name_or_path)
            name = strdup(pc.base_model_name_or_path);
        whet_peft_config_free(&pc);
    }
    return name ? name : strdup(model_path);
}

int cmd_export(int argc, char **argv)
{
    const char *out_path = NULL, *type_arg = NULL, *base_opt = NULL;
    cli_model_options mo = {0};
    export_format format = FORMAT_NONE;
    int merge = 0, json = 0;
    enum { OPT_OUT = 256, OPT_FORMAT, OPT_TYPE, OPT_MERGE, OPT_BASE_NAME, OPT_JSON };
    static const struct option options[] = {
        {"model", required_argument, NULL, CLI_OPT_MODEL}, {"adapter", required_argument, NULL, CLI_OPT_ADAPTER},
        {"out", required_argument, NULL, OPT_OUT},     {"format", required_argument, NULL, OPT_FORMAT},
        {"type", required_argument, NULL, OPT_TYPE},   {"merge", no_argument, NULL, OPT_MERGE},
        {"base-name", required_argument, NULL, OPT_BASE_NAME},
        {"threads", required_argument, NULL, CLI_OPT_THREADS}, {"json", no_argument, NULL, OPT_JSON},
        CLI_COMMON_OPTIONS};
    cli_parser p = {.command = "export", .usage = usage, .model = &mo};
    int opt;
    while ((opt = cli_next_option(&p, argc, argv, "", options)) != -1) {
        switch (opt) {
        case OPT_OUT: out_path = optarg; break;
        case OPT_FORMAT:
            format = strcmp(optarg, "peft") == 0 ? FORMAT_PEFT
                     : strcmp(optarg, "hf") == 0 ? FORMAT_HF
                     : strcmp(optarg, "gguf") == 0 ? FORMAT_GGUF
                                                   : FORMAT_NONE;
            if (format == FORMAT_NONE) {
                whet_error("export: --format: expected peft, hf or gguf, got '%s'", optarg);
                return WHET_EXIT_ERROR;
            }
            break;
        case OPT_TYPE: type_arg = optarg; break;
        case OPT_MERGE: merge = 1; break;
        case OPT_BASE_NAME: base_opt = optarg; break;
        case OPT_JSON: json = 1; break;
        }
    }
    if (p.exit >= 0)
        return p.exit;
    const char *model_path = mo.model, *adapter_dir = mo.adapter;
    if (optind < argc) {
        whet_error("export: unexpected argument '%s'", argv[optind]);
        return WHET_EXIT_ERROR;
    }
    if (!model_path || !out_path || format == FORMAT_NONE) {
        whet_error("export: --model, --out and --format are required");
        return WHET_EXIT_ERROR;
    }
    int st_dtype = WHET_ST_F32;
    uint32_t ggml_type = WHET_GGML_F32;
    if (type_arg && format == FORMAT_PEFT) {
        whet_error("export: --type goes with --format hf or gguf (a PEFT adapter is written as F32)");
        return WHET_EXIT_ERROR;
    }
    if (type_arg && parse_type(type_arg, format, &st_dtype, &ggml_type))
        return WHET_EXIT_ERROR;
    if (format == FORMAT_PEFT && !adapter_dir) {
        whet_error("export: --format peft writes an adapter: give it with --adapter DIR");
        return WHET_EXIT_ERROR;
    }
    if (merge && (format != FORMAT_GGUF || !adapter_dir)) {
        whet_error("export: --merge goes with --format gguf and --adapter (--format hf always merges the adapter)");
        return WHET_EXIT_ERROR;
    }
    if (base_opt && format != FORMAT_PEFT) {
        whet_error("export: --base-name goes with --format peft");
        return WHET_EXIT_ERROR;
    }
    if (same_path(out_path, model_path) || (adapter_dir && same_path(out_path, adapter_dir))) {
        whet_error("export: --out %s is the model or adapter being read; write somewhere else", out_path);
        return WHET_EXIT_ERROR;
    }
    struct stat st;
    int out_is_dir = stat(out_path, &st) == 0 && S_ISDIR(st.st_mode);
    int out_exists = stat(out_path, &st) == 0;
    if (format == FORMAT_GGUF && out_is_dir) {
        whet_error("export: --out %s is a directory; --format gguf writes one file", out_path);
        return WHET_EXIT_ERROR;
    }
    if (format != FORMAT_GGUF && out_exists && !out_is_dir) {
        whet_error("export: --out %s is a file; --format %s writes a directory", out_path,
                   format == FORMAT_PEFT ? "peft" : "hf");
        return WHET_EXIT_ERROR;
    }

    cli_model cm;
    if (cli_open_model(&cm, &mo, CLI_LOAD_WEIGHTS) != 0)
        return WHET_EXIT_ERROR;
    whet_model *m = cm.model;
    whet_lora *lora = cm.lora;
    whet_err e = {{0}};
    char *base = NULL;
    int status = WHET_EXIT_ERROR, no_tokenizer = 0;
    const char *what = "";
    switch (format) {
    case FORMAT_PEFT:
        base = base_name(base_opt, adapter_dir, model_path);
        if (!base || whet_adapter_save_peft(m, lora, out_path, base, &e))
            goto fail;
        what = "PEFT adapter";
        break;
    case FORMAT_HF:
        if (lora && whet_lora_merge(m, lora, &e))
            goto fail;
        if (whet_model_export_hf(m, model_path, out_path, st_dtype, &no_tokenizer, &e))
            goto fail;
        what = lora ? "HF model directory (adapter merged)" : "HF model directory";
        break;
    case FORMAT_GGUF:
        if (lora && !merge) {
            if (whet_adapter_save_gguf(m, lora, out_path, ggml_type, &e))
                goto fail;
            what = "GGUF LoRA adapter";
            break;
        }
        if (lora && whet_lora_merge(m, lora, &e))
            goto fail;
        if (whet_model_save_gguf(m, model_path, out_path, ggml_type, &no_tokenizer, &e))
            goto fail;
        what = lora ? "GGUF model (adapter merged)" : "GGUF model";
        break;
    default: break;
    }
    if (no_tokenizer)
        whet_warn("export: %s has no tokenizer whet could carry over; %s holds none", model_path, out_path);
    if (json) {
        whet_json_writer w;
        whet_json_writer_init(&w, 0);
        whet_json_begin_object(&w);
        whet_json_key(&w, "wrote");
        whet_json_write_string(&w, what);
        whet_json_key(&w, "path");
        whet_json_write_string(&w, out_path);
        whet_json_key(&w, "format");
        whet_json_write_string(&w, format == FORMAT_PEFT ? "peft" : format == FORMAT_HF ? "hf" : "gguf");
        whet_json_key(&w, "type");
        whet_json_write_string(&w, format == FORMAT_PEFT ? "f32" : type_arg ? type_arg : "f32");
        whet_json_key(&w, "adapter_merged");
        whet_json_write_bool(&w, lora && (format == FORMAT_HF || merge));
        whet_json_key(&w, "no_tokenizer"); /* the warning above: a model written without one */
        whet_json_write_bool(&w, no_tokenizer);
        whet_json_end_object(&w);
        if (cli_print_json(&w, "export output") != 0)
            goto done;
    } else {
        printf("wrote %s: %s\n", what, out_path);
    }
    status = WHET_EXIT_OK;
    goto done;
fail:
    whet_error("%s", e.msg[0] ? e.msg : "export: out of memory");
done:
    free(base);
    cli_close_model(&cm);
    return status;
}
