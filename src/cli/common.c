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

int cli_encode_prompt(const whet_tokenizer *t, const char *text, size_t len, int bos, int32_t **ids, size_t *n)
{
    whet_err e = {{0}};
    int32_t *body = NULL, *probe = NULL, *probe_special = NULL;
    size_t n_body = 0, n_probe = 0, n_special = 0, prefix = 0;
    int rc = -1;
    if (whet_tokenizer_encode(t, text, len, 0, &body, &n_body, &e) != 0)
        goto done;
    if (bos) {
        /* what the post-processor writes before a text: "a" with and without it */
        if (whet_tokenizer_encode(t, "a", 1, 0, &probe, &n_probe, &e) != 0 ||
            whet_tokenizer_encode(t, "a", 1, 1, &probe_special, &n_special, &e) != 0)
            goto done;
        if (n_probe == 0) /* "a" is no token here: only a leading BOS can be told apart */
            prefix = n_special > 0 && probe_special[0] == whet_tokenizer_bos_id(t);
        else
            for (size_t p = 0; p + n_probe <= n_special; p++)
                if (memcmp(probe_special + p, probe, n_probe * sizeof *probe) == 0) {
                    prefix = p;
                    break;
                }
    }
    *ids = malloc((prefix + n_body + 1) * sizeof **ids);
    if (!*ids) {
        whet_fail(&e, "out of memory for %zu tokens", prefix + n_body);
        goto done;
    }
    if (prefix)
        memcpy(*ids, probe_special, prefix * sizeof **ids);
    if (n_body)
        memcpy(*ids + prefix, body, n_body * sizeof **ids);
    *n = prefix + n_body;
    rc = 0;
done:
    if (rc)
        whet_error("%s", e.msg);
    free(body);
    free(probe);
    free(probe_special);
    return rc;
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

const char *cli_end_of_turn_text(const whet_chat_template *t)
{
    switch (t->family) {
    case WHET_CHAT_CHATML:
    case WHET_CHAT_QWEN2_5:
    case WHET_CHAT_QWEN3: return "<|im_end|>";
    case WHET_CHAT_LLAMA3: return "<|eot_id|>";
    case WHET_CHAT_GEMMA: return "<end_of_turn>";
    default: return t->eos;
    }
}

int cli_score_windows(whet_model *m, const int32_t *ids, size_t n, size_t ctx, size_t stride, float *logprob,
                      double *total_nll, size_t *scored, size_t *windows, int progress, whet_err *e)
{
    whet_acts *a = whet_acts_create(m, 1, ctx < n ? ctx : n, 0, e);
    int32_t *targets = malloc(ctx * sizeof *targets);
    float *lp = malloc(ctx * sizeof *lp);
    int rc = -1;
    if (!a || !targets || !lp) {
        if (a)
            whet_fail(e, "out of memory for a window of %zu tokens", ctx);
        goto done;
    }
    size_t prev_end = 0, n_windows = n <= ctx ? 1 : 1 + (n - ctx + stride - 1) / stride;
    *total_nll = 0;
    *scored = 0;
    *windows = 0;
    for (size_t begin = 0;; begin += stride) {
        size_t end = begin + ctx < n ? begin + ctx : n, T = end - begin;
        size_t first = prev_end > begin + 1 ? prev_end : begin + 1;
        for (size_t i = 0; i < T; i++) {
            size_t t = begin + i + 1; /* the token row i predicts */
            targets[i] = t >= first && t < end ? ids[t] : -1;
        }
        double mean;
        if (whet_model_forward(m, a, ids + begin, 1, T, e) != 0 || whet_model_nll(m, a, targets, lp, &mean, e) != 0)
            goto done;
        for (size_t i = 0; i < T; i++)
            if (targets[i] >= 0) {
                if (logprob)
                    logprob[begin + i + 1] = lp[i];
                *total_nll -= lp[i];
                ++*scored;
            }
        ++*windows;
        if (progress)
            fprintf(stderr, "\rwhet: score: window %zu of %zu", *windows, n_windows);
        prev_end = end;
        if (end == n)
            break;
    }
    rc = 0;
done:
    if (progress)
        fputs("\r\033[K", stderr);
    whet_acts_free(a);
    free(targets);
    free(lp);
    return rc;
}

/* ---- streaming ------------------------------------------------------------------ */

/* Bytes of the UTF-8 sequence a lead byte starts; 0 for a byte that starts none. */
static size_t utf8_length(unsigned char b)
{
    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF)
        return 2;
    if (b >= 0xE0 && b <= 0xEF)
        return 3;
    if (b >= 0xF0 && b <= 0xF4)
        return 4;
    return 0;
}

/* Whether b may be byte i (≥ 1) of a sequence led by `lead` (no overlongs,
 * surrogates or code points past U+10FFFF). */
static int utf8_continues(unsigned char lead, size_t i, unsigned char b)
{
    unsigned char lo = 0x80, hi = 0xBF;
    if (i == 1) {
        if (lead == 0xE0)
            lo = 0xA0;
        else if (lead == 0xED)
            hi = 0x9F;
        else if (lead == 0xF0)
            lo = 0x90;
        else if (lead == 0xF4)
            hi = 0x8F;
    }
    return b >= lo && b <= hi;
}

static size_t put_replacement(char *out)
{
    memcpy(out, "\xEF\xBF\xBD", 3);
    return 3;
}

size_t cli_utf8_feed(cli_utf8_stream *s, const char *in, size_t len, char *out)
{
    unsigned char old[4];
    size_t n_old = s->n, total = n_old + len, o = 0, i = 0;
    memcpy(old, s->pending, n_old);
    s->n = 0;
#define BYTE_AT(k) ((k) < n_old ? old[(k)] : (unsigned char)in[(k) - n_old])
    while (i < total) {
        unsigned char b = BYTE_AT(i);
        size_t need = utf8_length(b);
        if (need == 1) {
            out[o++] = (char)b;
            i++;
            continue;
        }
        if (need == 0) {
            o += put_replacement(out + o);
            i++;
            continue;
        }
        size_t j = 1;
        while (j < need && i + j < total && utf8_continues(b, j, BYTE_AT(i + j)))
            j++;
        if (j == need) {
            for (size_t k = 0; k < need; k++)
                out[o++] = (char)BYTE_AT(i + k);
            i += need;
        } else if (i + j == total) { /* unfinished: keep it for the next piece */
            for (size_t k = 0; k < j; k++)
                s->pending[k] = BYTE_AT(i + k);
            s->n = j;
            break;
        } else { /* the maximal invalid subpart becomes one U+FFFD */
            o += put_replacement(out + o);
            i += j;
        }
    }
#undef BYTE_AT
    return o;
}

size_t cli_utf8_flush(cli_utf8_stream *s, char *out)
{
    size_t o = s->n ? put_replacement(out) : 0;
    s->n = 0;
    return o;
}

static long find_bytes(const char *hay, size_t n, const char *needle, size_t m)
{
    if (m == 0 || m > n)
        return -1;
    for (size_t i = 0; i + m <= n; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, m) == 0)
            return (long)i;
    return -1;
}

size_t cli_stop_scan(const char *held, size_t len, char *const *stops, size_t n_stops, long *stop_at)
{
    long first = -1;
    for (size_t i = 0; i < n_stops; i++) {
        long at = find_bytes(held, len, stops[i], strlen(stops[i]));
        if (at >= 0 && (first < 0 || at < first))
            first = at;
    }
    *stop_at = first;
    if (first >= 0)
        return (size_t)first;
    size_t hold = 0;
    for (size_t i = 0; i < n_stops; i++) {
        size_t m = strlen(stops[i]);
        for (size_t k = m > 0 ? (m - 1 < len ? m - 1 : len) : 0; k > hold; k--)
            if (memcmp(held + len - k, stops[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return len - hold;
}
