#include "cli/common.h"
#include "cli/commands.h"

#include "io/gguf.h"
#include "io/json.h"
#include "model/adapter.h"
#include "util/file.h"
#include "util/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

whet_tokenizer *cli_open_tokenizer(const char *path)
{
    whet_err e = {{0}};
    whet_tokenizer *t = NULL;
    if (whet_is_gguf_file(path)) {
        whet_gguf *g = whet_gguf_open(path, &e);
        if (g) {
            t = whet_tokenizer_from_gguf(g, &e);
            whet_gguf_close(g);
        }
    } else {
        t = whet_tokenizer_load(path, &e);
    }
    if (!t)
        whet_error("%s", e.msg);
    return t;
}

static int read_stream(FILE *f, const char *name, char **out, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1)
            break;
        char *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    if (!buf) {
        whet_error("%s: out of memory reading it", name);
        return -1;
    }
    if (ferror(f)) {
        whet_error("%s: read error: %s", name, strerror(errno));
        free(buf);
        return -1;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

int cli_read_input(const char *command, const char *text, const char *file, char **out, size_t *len)
{
    if ((text != NULL) == (file != NULL)) {
        whet_error("%s: give exactly one of --text and --file", command);
        return -1;
    }
    if (text) {
        *len = strlen(text);
        *out = malloc(*len + 1);
        if (!*out) {
            whet_error("out of memory");
            return -1;
        }
        memcpy(*out, text, *len + 1);
        return 0;
    }
    if (strcmp(file, "-") == 0)
        return read_stream(stdin, "standard input", out, len);
    whet_err e = {{0}};
    if (whet_read_file(file, out, len, &e) != 0) {
        whet_error("%s", e.msg);
        return -1;
    }
    return 0;
}

/* ---- option values ---------------------------------------------------------- */

int cli_parse_size(const char *command, const char *option, const char *arg, size_t min, size_t max, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    if (arg[0] < '0' || arg[0] > '9' || *end || errno || v < min || v > max) {
        whet_error("%s: %s: expected a whole number from %zu to %zu, got '%s'", command, option, min, max, arg);
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

int cli_parse_u64(const char *command, const char *option, const char *arg, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    if (arg[0] < '0' || arg[0] > '9' || *end || errno) {
        whet_error("%s: %s: expected a whole number from 0 to %llu, got '%s'", command, option,
                   (unsigned long long)UINT64_MAX, arg);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

int cli_parse_double(const char *command, const char *option, const char *arg, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (end == arg || *end || errno || !(v >= min && v <= max)) {
        whet_error("%s: %s: expected a number from %g to %g, got '%s'", command, option, min, max, arg);
        return -1;
    }
    *out = v;
    return 0;
}

/* ---- options every command shares -------------------------------------------- */

void cli_print_version(void)
{
    printf("whet %s\n", WHET_VERSION);
}

/* The option getopt_long just refused, as the user wrote it ("--foo" without
 * any "=value", or "-x"); 1 when it is a known option given a value it does
 * not take (--json=1). */
static int refused_option(char **argv, const struct option *options, char *buf, size_t size)
{
    const char *arg = optind > 1 ? argv[optind - 1] : "";
    if (strncmp(arg, "--", 2) != 0) {
        if (optopt > 0 && optopt < 128)
            snprintf(buf, size, "-%c", optopt);
        else
            snprintf(buf, size, "%s", arg);
        return 0;
    }
    size_t len = strcspn(arg, "=");
    snprintf(buf, size, "%.*s", (int)len, arg);
    for (const struct option *o = options; arg[len] == '=' && o->name; o++)
        if (strlen(o->name) == len - 2 && strncmp(o->name, arg + 2, len - 2) == 0)
            return o->has_arg == no_argument;
    return 0;
}

/* --model, --adapter, --chat-template, --threads into p->model; 1 when opt
 * was one of them, -1 when its value is bad. */
static int model_option(cli_parser *p, int opt)
{
    cli_model_options *o = p->model;
    switch (opt) {
    case CLI_OPT_MODEL: o->model = optarg; return 1;
    case CLI_OPT_ADAPTER: o->adapter = optarg; return 1;
    case CLI_OPT_CHAT_TEMPLATE: o->chat_template = optarg; return 1;
    case CLI_OPT_THREADS: return cli_parse_size(p->command, "--threads", optarg, 1, 4096, &o->threads) ? -1 : 1;
    default: return 0;
    }
}

int cli_next_option(cli_parser *p, int argc, char **argv, const char *shortopts, const struct option *options)
{
    char spec[64];
    /* ':' first: a missing value comes back as ':', and getopt prints nothing
     * itself (its messages would lack the "whet:" prefix) */
    snprintf(spec, sizeof spec, ":h%s", shortopts);
    if (!p->started) {
        p->started = 1;
        p->exit = -1;
        optind = 1;
        opterr = 0;
    }
    for (;;) {
        int opt = getopt_long(argc, argv, spec, options, NULL);
        char name[128];
        switch (opt) {
        case -1: return -1;
        case CLI_OPT_HELP:
            p->usage(stdout);
            p->exit = WHET_EXIT_OK;
            return -1;
        case CLI_OPT_VERSION:
            cli_print_version();
            p->exit = WHET_EXIT_OK;
            return -1;
        case ':':
            refused_option(argv, options, name, sizeof name);
            whet_error("%s: %s needs a value (see 'whet %s --help')", p->command, name, p->command);
            p->exit = WHET_EXIT_ERROR;
            return -1;
        case '?':
            if (refused_option(argv, options, name, sizeof name))
                whet_error("%s: %s takes no value (see 'whet %s --help')", p->command, name, p->command);
            else
                whet_error("%s: unknown option '%s' (see 'whet %s --help')", p->command, name, p->command);
            p->exit = WHET_EXIT_ERROR;
            return -1;
        default:
            if (p->model) {
                int used = model_option(p, opt);
                if (used < 0) {
                    p->exit = WHET_EXIT_ERROR;
                    return -1;
                }
                if (used)
                    continue;
            }
            return opt;
        }
    }
}

int cli_print_json(whet_json_writer *w, const char *what)
{
    const char *text;
    size_t len;
    whet_err e = {{0}};
    int rc = whet_json_writer_finish(w, what, &text, &len, &e);
    if (rc == 0) {
        fwrite(text, 1, len, stdout);
        if (len == 0 || text[len - 1] != '\n')
            putchar('\n');
    } else {
        whet_error("%s", e.msg);
    }
    whet_json_writer_free(w);
    return rc;
}

/* ---- models ------------------------------------------------------------------- */

int cli_open_model(cli_model *m, const cli_model_options *o, int what)
{
    memset(m, 0, sizeof *m);
    whet_err e = {{0}};
    if (what & CLI_LOAD_WEIGHTS) {
        const whet_kernels *k = whet_kernels_from_env();
        if (!k || !(m->compute = whet_compute_create(k, (int)o->threads)))
            goto fail;
        if (whet_model_load(&m->model, o->model, m->compute, &e) != 0)
            goto fail_msg;
    }
    if ((what & CLI_LOAD_TOKENIZER) && !(m->tok = cli_open_tokenizer(o->model)))
        goto fail;
    if ((what & CLI_LOAD_WEIGHTS) && o->adapter && whet_adapter_load_peft(m->model, o->adapter, &m->lora, &e) != 0)
        goto fail_msg;
    if (what & CLI_LOAD_TEMPLATE) {
        m->have_template = cli_chat_template(o->model, o->chat_template, &m->tmpl, &m->template_err) == 0;
        if (!m->have_template && o->chat_template) {
            e = m->template_err;
            goto fail_msg;
        }
    }
    return 0;
fail_msg:
    whet_error("%s", e.msg);
fail:
    cli_close_model(m);
    return -1;
}

void cli_close_model(cli_model *m)
{
    if (m->lora)
        whet_lora_free(m->model, m->lora);
    whet_tokenizer_free(m->tok);
    whet_model_free(m->model);
    if (m->compute)
        whet_compute_destroy(m->compute);
    memset(m, 0, sizeof *m);
}

int cli_chat_template(const char *path, const char *override_name, whet_chat_template *out, whet_err *e)
{
    if (!whet_is_gguf_file(path))
        return whet_chat_template_load(out, path, override_name, e);
    if (override_name)
        return whet_chat_template_by_name(out, override_name, e);
    whet_gguf *g = whet_gguf_open(path, e);
    if (!g)
        return -1;
    int rc = -1;
    const whet_gguf_str *text;
    if (!whet_gguf_find(g, "tokenizer.chat_template")) {
        whet_fail(e, "%s: no tokenizer.chat_template in the metadata; pass --chat-template NAME with one of: %s",
                  path, whet_chat_template_names());
    } else if (whet_gguf_get_string(g, "tokenizer.chat_template", &text, e) == 0 &&
               whet_chat_template_recognize(out, text->data, (size_t)text->len, path, e) == 0) {
        /* the BOS/EOS texts the template writes: the tokens the metadata names */
        const whet_gguf_str *tokens;
        uint64_t n = 0, id;
        whet_err ignored;
        if (whet_gguf_get_string_array(g, "tokenizer.ggml.tokens", &tokens, &n, &ignored) == 0) {
            const struct { const char *key; char *dst; size_t size; } names[] = {
                {"tokenizer.ggml.bos_token_id", out->bos, sizeof out->bos},
                {"tokenizer.ggml.eos_token_id", out->eos, sizeof out->eos}};
            for (size_t i = 0; i < 2; i++) {
                uint32_t v;
                if (whet_gguf_get_u32(g, names[i].key, &v, &ignored) == 0 && (id = v) < n &&
                    tokens[id].len < names[i].size) {
                    memcpy(names[i].dst, tokens[id].data, (size_t)tokens[id].len);
                    names[i].dst[tokens[id].len] = 0;
                }
            }
        }
        rc = 0;
    }
    whet_gguf_close(g);
    return rc;
}
