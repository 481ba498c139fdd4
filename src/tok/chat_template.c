/* Chat templates: recognition by fingerprints, and renderers that reproduce
 * each family's Jinja template byte for byte. See chat_template.h. */
#include "tok/chat_template.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- small helpers ---------------------------------------------------------- */

typedef struct strbuf {
    char *p;
    size_t len, cap;
    int oom;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) {
            if (cap > SIZE_MAX / 2) {
                b->oom = 1;
                return;
            }
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_str(strbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* A byte range of a message's content. */
typedef struct slice {
    const char *p;
    size_t n;
} slice;

static void sb_slice(strbuf *b, slice s)
{
    sb_add(b, s.p, s.n);
}

static int contains(const char *text, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    if (n == 0)
        return 1;
    if (n > len)
        return 0;
    for (size_t i = 0; i + n <= len; i++)
        if (text[i] == needle[0] && memcmp(text + i, needle, n) == 0)
            return 1;
    return 0;
}

/* Position of needle in s, or SIZE_MAX. */
static size_t find(slice s, const char *needle, size_t from)
{
    size_t n = strlen(needle);
    if (n > s.n)
        return SIZE_MAX;
    for (size_t i = from; i + n <= s.n; i++)
        if (memcmp(s.p + i, needle, n) == 0)
            return i;
    return SIZE_MAX;
}

static size_t rfind(slice s, const char *needle)
{
    size_t n = strlen(needle);
    if (n > s.n)
        return SIZE_MAX;
    for (size_t i = s.n - n + 1; i-- > 0;)
        if (memcmp(s.p + i, needle, n) == 0)
            return i;
    return SIZE_MAX;
}

static int slice_starts(slice s, const char *prefix)
{
    size_t n = strlen(prefix);
    return s.n >= n && memcmp(s.p, prefix, n) == 0;
}

static int slice_ends(slice s, const char *suffix)
{
    size_t n = strlen(suffix);
    return s.n >= n && memcmp(s.p + s.n - n, suffix, n) == 0;
}

/* Whether s[0..n) is valid UTF-8 (no overlongs, surrogates or > U+10FFFF). */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
            cp = c & 0x1F;
            min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            cp = c & 0x0F;
            min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

/* Python's str.isspace() (what Jinja's trim and str.strip() remove). */
static int py_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* The code point starting at s[i] (valid UTF-8) and its length. */
static uint32_t utf8_at(const unsigned char *s, size_t i, size_t *len)
{
    unsigned c = s[i];
    if (c < 0x80) {
        *len = 1;
        return c;
    }
    size_t k = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : 1;
    uint32_t cp = c & (0x3F >> k);
    for (size_t j = 1; j <= k; j++)
        cp = (cp << 6) | (s[i + j] & 0x3F);
    *len = k + 1;
    return cp;
}

/* Python str.strip() on valid UTF-8. */
static slice py_strip(slice s)
{
    const unsigned char *u = (const unsigned char *)s.p;
    size_t a = 0, b = s.n, l;
    while (a < b && py_space(utf8_at(u, a, &l)))
        a += l;
    while (b > a) {
        size_t st = b - 1;
        while (st > a && (u[st] & 0xC0) == 0x80)
            st--;
        if (!py_space(utf8_at(u, st, &l)))
            break;
        b = st;
    }
    return (slice){s.p + a, b - a};
}

static slice lstrip_nl(slice s)
{
    while (s.n && s.p[0] == '\n') {
        s.p++;
        s.n--;
    }
    return s;
}

static slice rstrip_nl(slice s)
{
    while (s.n && s.p[s.n - 1] == '\n')
        s.n--;
    return s;
}

/* ---- names ------------------------------------------------------------------- */

static const char *const family_names[WHET_CHAT_FAMILY_COUNT] = {
    "chatml", "qwen2.5", "qwen3", "llama3", "llama2", "mistral", "zephyr", "gemma",
};

const char *whet_chat_template_names(void)
{
    return "chatml, qwen2.5, qwen3, llama3, llama2, mistral, zephyr, gemma";
}

#define QWEN25_SYSTEM "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
#define QWEN2_SYSTEM "You are a helpful assistant."

static void set_str(char *dst, size_t cap, const char *src, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

static void init_family(whet_chat_template *t, whet_chat_family f)
{
    memset(t, 0, sizeof *t);
    t->family = f;
    t->name = family_names[f];
    switch (f) {
    case WHET_CHAT_CHATML:
    case WHET_CHAT_QWEN3:
        set_str(t->eos, sizeof t->eos, "<|im_end|>", 10);
        break;
    case WHET_CHAT_QWEN2_5:
        set_str(t->eos, sizeof t->eos, "<|im_end|>", 10);
        set_str(t->default_system, sizeof t->default_system, QWEN25_SYSTEM, strlen(QWEN25_SYSTEM));
        break;
    case WHET_CHAT_LLAMA3:
        set_str(t->bos, sizeof t->bos, "<|begin_of_text|>", 17);
        set_str(t->eos, sizeof t->eos, "<|eot_id|>", 10);
        break;
    case WHET_CHAT_LLAMA2:
    case WHET_CHAT_MISTRAL:
    case WHET_CHAT_ZEPHYR:
        set_str(t->bos, sizeof t->bos, "<s>", 3);
        set_str(t->eos, sizeof t->eos, "</s>", 4);
        break;
    case WHET_CHAT_GEMMA:
        set_str(t->bos, sizeof t->bos, "<bos>", 5);
        set_str(t->eos, sizeof t->eos, "<eos>", 5);
        break;
    default:
        break;
    }
}

int whet_chat_template_by_name(whet_chat_template *out, const char *name, whet_err *e)
{
    if (!name)
        return whet_fail(e, "--chat-template: expected a name, one of %s", whet_chat_template_names());
    for (int f = 0; f < WHET_CHAT_FAMILY_COUNT; f++) {
        if (strcmp(name, family_names[f]) == 0) {
            init_family(out, (whet_chat_family)f);
            snprintf(out->source, sizeof out->source, "--chat-template %s", name);
            return 0;
        }
    }
    if (strcmp(name, "qwen2") == 0) {
        init_family(out, WHET_CHAT_QWEN2_5);
        out->name = "qwen2";
        set_str(out->default_system, sizeof out->default_system, QWEN2_SYSTEM, strlen(QWEN2_SYSTEM));
    } else if (strcmp(name, "llama3-always-gen") == 0) {
        init_family(out, WHET_CHAT_LLAMA3);
        out->name = "llama3-always-gen";
        out->always_generation_prompt = 1;
    } else if (strcmp(name, "mistral-v0.1-space") == 0) {
        init_family(out, WHET_CHAT_MISTRAL);
        out->name = "mistral-v0.1-space";
        out->space_after_eos = 1;
    } else if (strcmp(name, "gemma1") == 0) {
        init_family(out, WHET_CHAT_GEMMA);
        out->name = "gemma1";
        out->system_refused = 1;
    } else {
        return whet_fail(e, "--chat-template %s: unknown template name; expected one of %s "
                            "(or the variants qwen2, llama3-always-gen, mistral-v0.1-space, gemma1)",
                         name, whet_chat_template_names());
    }
    snprintf(out->source, sizeof out->source, "--chat-template %s", name);
    return 0;
}

/* ---- recognition ------------------------------------------------------------- */

typedef struct fingerprint {
    const char *const *all;  /* every one must be present */
    const char *const *none; /* none may be present */
} fingerprint;

static int has_all(const char *text, size_t len, const char *const *list)
{
    for (; *list; list++)
        if (!contains(text, len, *list))
            return 0;
    return 1;
}

static int has_any(const char *text, size_t len, const char *const *list)
{
    for (; *list; list++)
        if (contains(text, len, *list))
            return 1;
    return 0;
}

/* "\n" in a template is the two characters backslash, n (a Jinja string escape)
 * or a real newline: both render as a newline. */
static const char *const CHATML_ALL[] = {"<|im_start|>", "<|im_end|>", "'<|im_start|>' + message", NULL};
static const char *const CHATML_NONE[] = {"<think>", "or not loop.last", "bos_token", "eos_token", "<|im_sep|>",
                                          "<end_of_utterance>", "strip", "trim", "capitalize", "tool", NULL};
static const char *const QWEN25_NONE[] = {"<think>", "or not loop.last", "bos_token", "eos_token", "<|im_sep|>",
                                          "<end_of_utterance>", "strip", "trim", "capitalize", NULL};
static const char *const QWEN3_ALL[] = {"<|im_start|>", "<|im_end|>", "<think>", "</think>", "last_query_index",
                                        "reasoning_content", "(not loop.last and reasoning_content)",
                                        "enable_thinking is defined and enable_thinking is false", NULL};
static const char *const QWEN3_NONE[] = {"assistant\\n<think>\\n' }}", "bos_token", NULL};
static const char *const LLAMA3_ALL[] = {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "bos_token",
                                         "trim", NULL};
static const char *const LLAMA3_NONE[] = {"Cutting Knowledge", "tools", "date_string", "ipython", "<|python_tag|>",
                                          "image", "strftime", NULL};
static const char *const LLAMA2_ALL[] = {"[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "bos_token + '[INST] '",
                                         "content.strip()", "eos_token", "system_message != false",
                                         "(message['role'] == 'user') != (loop.index0 % 2 == 0)", NULL};
static const char *const LLAMA2_NONE[] = {"USE_DEFAULT_PROMPT", "DEFAULT_SYSTEM_MESSAGE",
                                          "elif message['role'] == 'system'", "tools", NULL};
static const char *const MISTRAL_ALL[] = {"[INST]", "[/INST]", "{{ bos_token }}",
                                          "'[INST] ' + message['content'] + ' [/INST]'",
                                          "message['content'] + eos_token",
                                          "(message['role'] == 'user') != (loop.index0 % 2 == 0)",
                                          "Only user and assistant roles are supported!", NULL};
static const char *const MISTRAL_NONE[] = {"<<SYS>>", "system_message", "[AVAILABLE_TOOLS]", "[SYSTEM_PROMPT]",
                                           "strip", "trim", "tools", "' ' + message['content']", NULL};
static const char *const ZEPHYR_ALL[] = {"'<|user|>", "'<|assistant|>", "'<|system|>",
                                         "+ message['content'] + eos_token }}\n{%", "{{ '<|assistant|>' }}\n{%",
                                         "loop.last and add_generation_prompt", NULL};
static const char *const ZEPHYR_NONE[] = {"<|end|>", "strip", "trim", "bos_token", "<|endoftext|>", "tools", NULL};
static const char *const GEMMA_ALL[] = {"<start_of_turn>", "<end_of_turn>", "bos_token", "trim",
                                        "(message['role'] == 'user') != (loop.index0 % 2 == 0)", NULL};
static const char *const GEMMA_NONE[] = {"tools", "tool_call", NULL};

/* The default system message of a ChatML template: the literal text T in
 * '<|im_start|>system\nT<|im_end|>' (T free of quotes, braces and '+'). */
static int chatml_default_system(const char *text, size_t len, char *out, size_t cap)
{
    static const char *const heads[] = {"<|im_start|>system\\n", "<|im_start|>system\n"};
    for (int h = 0; h < 2; h++) {
        slice s = {text, len};
        size_t hl = strlen(heads[h]);
        for (size_t at = find(s, heads[h], 0); at != SIZE_MAX; at = find(s, heads[h], at + 1)) {
            size_t b = at + hl, i = b;
            while (i < len && !strchr("'\"{}+\\<", text[i]) && text[i] != '\n')
                i++;
            if (i > b && i - b < cap && i + 10 <= len && memcmp(text + i, "<|im_end|>", 10) == 0) {
                set_str(out, cap, text + b, i - b);
                return 1;
            }
        }
    }
    return 0;
}

int whet_chat_template_recognize(whet_chat_template *out, const char *text, size_t len, const char *source,
                                 whet_err *e)
{
    if (!source)
        source = "chat_template";
    char sys[WHET_CHAT_TEXT_MAX];
    int found = 0;
    if (!text)
        len = 0;
    if (text && has_all(text, len, QWEN3_ALL) && !has_any(text, len, QWEN3_NONE)) {
        init_family(out, WHET_CHAT_QWEN3);
        found = 1;
    } else if (text && has_all(text, len, CHATML_ALL) && chatml_default_system(text, len, sys, sizeof sys)) {
        if (!has_any(text, len, QWEN25_NONE)) {
            init_family(out, WHET_CHAT_QWEN2_5);
            set_str(out->default_system, sizeof out->default_system, sys, strlen(sys));
            if (strcmp(sys, QWEN25_SYSTEM) != 0)
                out->name = strcmp(sys, QWEN2_SYSTEM) == 0 ? "qwen2" : "qwen2.5";
            found = 1;
        }
    } else if (text && has_all(text, len, CHATML_ALL) && !has_any(text, len, CHATML_NONE)) {
        init_family(out, WHET_CHAT_CHATML);
        found = 1;
    } else if (text && has_all(text, len, LLAMA3_ALL) && !has_any(text, len, LLAMA3_NONE)) {
        init_family(out, WHET_CHAT_LLAMA3);
        if (!contains(text, len, "add_generation_prompt")) {
            out->always_generation_prompt = 1;
            out->name = "llama3-always-gen";
        }
        found = 1;
    } else if (text && has_all(text, len, LLAMA2_ALL) && !has_any(text, len, LLAMA2_NONE)) {
        init_family(out, WHET_CHAT_LLAMA2);
        found = 1;
    } else if (text && has_all(text, len, MISTRAL_ALL) && !has_any(text, len, MISTRAL_NONE)) {
        init_family(out, WHET_CHAT_MISTRAL);
        if (contains(text, len, "eos_token + ' '")) {
            out->space_after_eos = 1;
            out->name = "mistral-v0.1-space";
        }
        found = 1;
    } else if (text && has_all(text, len, ZEPHYR_ALL) && !has_any(text, len, ZEPHYR_NONE)) {
        init_family(out, WHET_CHAT_ZEPHYR);
        found = 1;
    } else if (text && has_all(text, len, GEMMA_ALL) && !has_any(text, len, GEMMA_NONE)) {
        if (contains(text, len, "first_user_prefix")) {
            init_family(out, WHET_CHAT_GEMMA);
            found = 1;
        } else if (contains(text, len, "System role not supported")) {
            init_family(out, WHET_CHAT_GEMMA);
            out->system_refused = 1;
            out->name = "gemma1";
            found = 1;
        }
    }
    if (!found)
        return whet_fail(e, "%s: expected a chat template of a known family, found one that matches none "
                            "(%zu bytes); pass --chat-template NAME with one of: %s",
                         source, len, whet_chat_template_names());
    set_str(out->source, sizeof out->source, source, strlen(source));
    return 0;
}

/* ---- loading ------------------------------------------------------------------ */

/* bos_token / eos_token: a string or an AddedToken {"content": ...}; null or
 * absent leaves the family default. */
static int token_text(const whet_json_doc *doc, const whet_json *root, const char *key, char *dst, size_t cap,
                      whet_err *e)
{
    const whet_json *v = whet_json_get(root, key);
    if (!v || v->type == WHET_JSON_NULL)
        return 0;
    if (v->type == WHET_JSON_OBJECT)
        v = whet_json_get(v, "content");
    if (!v || v->type != WHET_JSON_STRING)
        return whet_json_fail_at(e, doc, v ? v : whet_json_get(root, key),
                                 "%s to be a string or an object with a string \"content\"", key);
    if (v->u.string.len >= cap || memchr(v->u.string.chars, 0, v->u.string.len))
        return whet_json_fail_at(e, doc, v, "%s of at most %zu bytes without NUL", key, cap - 1);
    set_str(dst, cap, v->u.string.chars, v->u.string.len);
    return 0;
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int whet_chat_template_load(whet_chat_template *out, const char *path, const char *override_name, whet_err *e)
{
    char config[4096], jinja[4096];
    if (!path)
        return whet_fail(e, "chat template: expected a model directory or tokenizer_config.json path");
    size_t plen = strlen(path);
    if (plen >= sizeof config)
        return whet_fail(e, "%s: path too long", path);
    if (!is_dir(path) && plen > 6 && strcmp(path + plen - 6, ".jinja") == 0) {
        /* a template file itself: bos/eos from a tokenizer_config.json beside it */
        set_str(jinja, sizeof jinja, path, plen);
        const char *slash = strrchr(path, '/');
        size_t dir_len = slash ? (size_t)(slash - path + 1) : 0;
        if (dir_len + sizeof "tokenizer_config.json" > sizeof config)
            return whet_fail(e, "%s: path too long", path);
        memcpy(config, path, dir_len);
        memcpy(config + dir_len, "tokenizer_config.json", sizeof "tokenizer_config.json");
        if (!override_name && !file_exists(jinja))
            return whet_fail(e, "%s: cannot read the chat template: no such file; pass --chat-template NAME with "
                                "one of: %s",
                             path, whet_chat_template_names());
    } else if (is_dir(path)) {
        if ((size_t)snprintf(config, sizeof config, "%s/tokenizer_config.json", path) >= sizeof config ||
            (size_t)snprintf(jinja, sizeof jinja, "%s/chat_template.jinja", path) >= sizeof jinja)
            return whet_fail(e, "%s: path too long", path);
    } else {
        set_str(config, sizeof config, path, strlen(path));
        const char *slash = strrchr(path, '/');
        size_t dir_len = slash ? (size_t)(slash - path + 1) : 0;
        if (dir_len + sizeof "chat_template.jinja" > sizeof jinja)
            return whet_fail(e, "%s: path too long", path);
        memcpy(jinja, path, dir_len);
        memcpy(jinja + dir_len, "chat_template.jinja", sizeof "chat_template.jinja");
    }

    whet_json_doc *doc = NULL;
    const whet_json *root = NULL;
    int have_config = file_exists(config);
    if (have_config) {
        if (whet_json_parse_file(&doc, config, NULL, e) != 0)
            return -1;
        root = whet_json_root(doc);
        if (root->type != WHET_JSON_OBJECT) {
            whet_json_fail_at(e, doc, root, "a JSON object (tokenizer_config.json)");
            whet_json_free(doc);
            return -1;
        }
    } else if (!override_name && !file_exists(jinja)) {
        return whet_fail(e, "%s: cannot read the chat template: neither %s nor %s exists; pass --chat-template "
                            "NAME with one of: %s",
                         path, config, jinja, whet_chat_template_names());
    }

    int rc = -1;
    whet_chat_template t;
    if (override_name) {
        if (whet_chat_template_by_name(&t, override_name, e) != 0)
            goto done;
    } else if (file_exists(jinja)) {
        char *text = NULL;
        size_t size = 0;
        if (whet_read_file(jinja, &text, &size, e) != 0)
            goto done;
        int r = whet_chat_template_recognize(&t, text, size, jinja, e);
        free(text);
        if (r != 0)
            goto done;
    } else {
        const whet_json *ct = whet_json_get(root, "chat_template");
        if (!ct || ct->type == WHET_JSON_NULL) {
            whet_fail(e, "%s: expected a \"chat_template\" (or a chat_template.jinja beside it), found none; "
                         "pass --chat-template NAME with one of: %s",
                      config, whet_chat_template_names());
            goto done;
        }
        if (ct->type == WHET_JSON_ARRAY) {
            const whet_json *pick = NULL;
            for (size_t i = 0; i < whet_json_count(ct); i++) {
                const whet_json *item = whet_json_at(ct, i);
                const char *nm = whet_json_string(whet_json_get(item, "name"));
                if (nm && strcmp(nm, "default") == 0)
                    pick = whet_json_get(item, "template");
            }
            if (!pick) {
                whet_json_fail_at(e, doc, ct, "a chat_template entry {\"name\": \"default\", \"template\": ...}");
                goto done;
            }
            ct = pick;
        }
        if (ct->type != WHET_JSON_STRING) {
            whet_json_fail_at(e, doc, ct, "chat_template to be a string or a list of {name, template}");
            goto done;
        }
        if (whet_chat_template_recognize(&t, ct->u.string.chars, ct->u.string.len, config, e) != 0)
            goto done;
    }
    if (root && (token_text(doc, root, "bos_token", t.bos, sizeof t.bos, e) != 0 ||
                 token_text(doc, root, "eos_token", t.eos, sizeof t.eos, e) != 0))
        goto done;
    *out = t;
    rc = 0;
done:
    whet_json_free(doc);
    return rc;
}

/* ---- rendering ---------------------------------------------------------------- */

typedef struct render_ctx {
    const whet_chat_template *t;
    strbuf b;
    whet_chat_span *spans;
    size_t n_spans;
    whet_err *e;
} render_ctx;

static slice content_of(const whet_chat_message *m)
{
    return (slice){m->content, m->content_len};
}

static int role_is(const whet_chat_message *m, const char *role)
{
    return strcmp(m->role, role) == 0;
}

static int fail_raise(render_ctx *c, size_t index, const char *role, const char *what)
{
    return whet_fail(c->e, "%s: chat template %s rejects the conversation at message %zu (role \"%s\"): %s",
                     c->t->source, c->t->name, index, role, what);
}

/* Starts an assistant span at the current end of the text. */
static void span_begin(render_ctx *c, size_t message)
{
    c->spans[c->n_spans] = (whet_chat_span){message, c->b.len, 0, 0, 0};
}
static void span_content(render_ctx *c, slice s)
{
    c->spans[c->n_spans].content_start = c->b.len;
    sb_slice(&c->b, s);
    c->spans[c->n_spans].content_end = c->b.len;
}
static void span_end(render_ctx *c)
{
    c->spans[c->n_spans].end = c->b.len;
    c->n_spans++;
}

static void render_chatml(render_ctx *c, const whet_chat_message *m, size_t n, const whet_chat_options *o)
{
    strbuf *b = &c->b;
    if (c->t->default_system[0] && !role_is(&m[0], "system")) {
        sb_str(b, "<|im_start|>system\n");
        sb_str(b, c->t->default_system);
        sb_str(b, "<|im_end|>\n");
    }
    for (size_t i = 0; i < n; i++) {
        sb_str(b, "<|im_start|>");
        sb_str(b, m[i].role);
        sb_str(b, "\n");
        if (role_is(&m[i], "assistant")) {
            span_begin(c, i);
            span_content(c, content_of(&m[i]));
            sb_str(b, "<|im_end|>");
            span_end(c);
        } else {
            sb_slice(b, content_of(&m[i]));
            sb_str(b, "<|im_end|>");
        }
        sb_str(b, "\n");
    }
    if (o->add_generation_prompt)
        sb_str(b, "<|im_start|>assistant\n");
}

static int is_tool_response(slice s)
{
    return slice_starts(s, "<tool_response>") && slice_ends(s, "</tool_response>");
}

static void render_qwen3(render_ctx *c, const whet_chat_message *m, size_t n, const whet_chat_options *o)
{
    strbuf *b = &c->b;
    if (role_is(&m[0], "system")) {
        sb_str(b, "<|im_start|>system\n");
        sb_slice(b, content_of(&m[0]));
        sb_str(b, "<|im_end|>\n");
    }
    /* the last user message that is not a tool response (else the last index) */
    size_t last_query = n - 1;
    for (size_t k = n; k-- > 0;) {
        if (role_is(&m[k], "user") && !is_tool_response(content_of(&m[k]))) {
            last_query = k;
            break;
        }
    }
    for (size_t i = 0; i < n; i++) {
        slice content = content_of(&m[i]);
        if (role_is(&m[i], "user") || (role_is(&m[i], "system") && i > 0)) {
            sb_str(b, "<|im_start|>");
            sb_str(b, m[i].role);
            sb_str(b, "\n");
            sb_slice(b, content);
            sb_str(b, "<|im_end|>\n");
        } else if (role_is(&m[i], "assistant")) {
            slice answer = content, reasoning = {content.p, 0};
            size_t close = find(content, "</think>", 0);
            if (close != SIZE_MAX) {
                size_t last_close = rfind(content, "</think>");
                answer = lstrip_nl((slice){content.p + last_close + 8, content.n - last_close - 8});
                slice before = rstrip_nl((slice){content.p, close});
                size_t open = rfind(before, "<think>");
                if (open != SIZE_MAX)
                    before = (slice){before.p + open + 7, before.n - open - 7};
                reasoning = lstrip_nl(before);
            }
            sb_str(b, "<|im_start|>assistant\n");
            span_begin(c, i);
            if (i > last_query && (i == n - 1 || reasoning.n > 0)) {
                sb_str(b, "<think>\n");
                sb_slice(b, rstrip_nl(lstrip_nl(reasoning)));
                sb_str(b, "\n</think>\n\n");
                span_content(c, lstrip_nl(answer));
            } else {
                span_content(c, answer);
            }
            sb_str(b, "<|im_end|>");
            span_end(c);
            sb_str(b, "\n");
        }
    }
    if (o->add_generation_prompt) {
        sb_str(b, "<|im_start|>assistant\n");
        if (o->disable_thinking)
            sb_str(b, "<think>\n\n</think>\n\n");
    }
}

static void render_llama3(render_ctx *c, const whet_chat_message *m, size_t n, const whet_chat_options *o)
{
    strbuf *b = &c->b;
    for (size_t i = 0; i < n; i++) {
        if (i == 0)
            sb_str(b, c->t->bos);
        sb_str(b, "<|start_header_id|>");
        sb_str(b, m[i].role);
        sb_str(b, "<|end_header_id|>\n\n");
        slice content = py_strip(content_of(&m[i]));
        if (role_is(&m[i], "assistant")) {
            span_begin(c, i);
            span_content(c, content);
            sb_str(b, "<|eot_id|>");
            span_end(c);
        } else {
            sb_slice(b, content);
            sb_str(b, "<|eot_id|>");
        }
    }
    if (o->add_generation_prompt || c->t->always_generation_prompt)
        sb_str(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static int render_llama2(render_ctx *c, const whet_chat_message *m, size_t n)
{
    strbuf *b = &c->b;
    size_t first = role_is(&m[0], "system") ? 1 : 0;
    for (size_t i = first; i < n; i++) {
        size_t k = i - first;
        if (role_is(&m[i], "user") != (k % 2 == 0))
            return fail_raise(c, i, m[i].role, "Conversation roles must alternate user/assistant/user/assistant/...");
        slice content = content_of(&m[i]);
        strbuf joined = {0};
        if (k == 0 && first) {
            sb_str(&joined, "<<SYS>>\n");
            sb_slice(&joined, content_of(&m[0]));
            sb_str(&joined, "\n<</SYS>>\n\n");
            sb_slice(&joined, content);
            if (joined.oom) {
                free(joined.p);
                c->b.oom = 1;
                return 0;
            }
            content = (slice){joined.p, joined.len};
        }
        if (role_is(&m[i], "user")) {
            sb_str(b, c->t->bos);
            sb_str(b, "[INST] ");
            sb_slice(b, py_strip(content));
            sb_str(b, " [/INST]");
        } else if (role_is(&m[i], "assistant")) {
            span_begin(c, i);
            sb_str(b, " ");
            span_content(c, py_strip(content));
            sb_str(b, " ");
            sb_str(b, c->t->eos);
            span_end(c);
        }
        /* a system message at an odd position passes the check and renders nothing */
        free(joined.p);
    }
    return 0;
}

static int render_mistral(render_ctx *c, const whet_chat_message *m, size_t n)
{
    strbuf *b = &c->b;
    sb_str(b, c->t->bos);
    for (size_t i = 0; i < n; i++) {
        if (role_is(&m[i], "user") != (i % 2 == 0))
            return fail_raise(c, i, m[i].role, "Conversation roles must alternate user/assistant/user/assistant/...");
        if (role_is(&m[i], "user")) {
            sb_str(b, "[INST] ");
            sb_slice(b, content_of(&m[i]));
            sb_str(b, " [/INST]");
        } else if (role_is(&m[i], "assistant")) {
            span_begin(c, i);
            span_content(c, content_of(&m[i]));
            sb_str(b, c->t->eos);
            span_end(c);
            if (c->t->space_after_eos)
                sb_str(b, " ");
        } else {
            return fail_raise(c, i, m[i].role, "Only user and assistant roles are supported!");
        }
    }
    return 0;
}

static void render_zephyr(render_ctx *c, const whet_chat_message *m, size_t n, const whet_chat_options *o)
{
    strbuf *b = &c->b;
    for (size_t i = 0; i < n; i++) {
        sb_str(b, "<|");
        sb_str(b, m[i].role);
        sb_str(b, "|>\n");
        if (role_is(&m[i], "assistant")) {
            span_begin(c, i);
            span_content(c, content_of(&m[i]));
            sb_str(b, c->t->eos);
            span_end(c);
        } else {
            sb_slice(b, content_of(&m[i]));
            sb_str(b, c->t->eos);
        }
        sb_str(b, "\n");
        if (i == n - 1 && o->add_generation_prompt)
            sb_str(b, "<|assistant|>\n");
    }
}

static int render_gemma(render_ctx *c, const whet_chat_message *m, size_t n, const whet_chat_options *o)
{
    strbuf *b = &c->b;
    sb_str(b, c->t->bos);
    size_t first = 0;
    if (role_is(&m[0], "system")) {
        if (c->t->system_refused)
            return fail_raise(c, 0, m[0].role, "System role not supported");
        first = 1;
    }
    for (size_t i = first; i < n; i++) {
        size_t k = i - first;
        if (role_is(&m[i], "user") != (k % 2 == 0))
            return fail_raise(c, i, m[i].role, "Conversation roles must alternate user/assistant/user/assistant/...");
        int assistant = role_is(&m[i], "assistant");
        sb_str(b, "<start_of_turn>");
        sb_str(b, assistant ? "model" : m[i].role);
        sb_str(b, "\n");
        if (k == 0 && first) {
            sb_slice(b, content_of(&m[0]));
            sb_str(b, "\n\n");
        }
        slice content = py_strip(content_of(&m[i]));
        if (assistant) {
            span_begin(c, i);
            span_content(c, content);
            sb_str(b, "<end_of_turn>");
            span_end(c);
        } else {
            sb_slice(b, content);
            sb_str(b, "<end_of_turn>");
        }
        sb_str(b, "\n");
    }
    if (o->add_generation_prompt)
        sb_str(b, "<start_of_turn>model\n");
    return 0;
}

int whet_chat_render(const whet_chat_template *t, const whet_chat_message *messages, size_t n,
                     const whet_chat_options *options, whet_chat_rendered *out, whet_err *e)
{
    memset(out, 0, sizeof *out);
    whet_chat_options none = {0, 0};
    if (!options)
        options = &none;
    if (!t || (int)t->family < 0 || (int)t->family >= WHET_CHAT_FAMILY_COUNT)
        return whet_fail(e, "chat template: no template given");
    if (n == 0 || !messages)
        return whet_fail(e, "%s: chat template %s: expected at least one message, found none", t->source, t->name);
    size_t n_assistant = 0;
    for (size_t i = 0; i < n; i++) {
        const char *r = messages[i].role;
        if (!r || (strcmp(r, "system") != 0 && strcmp(r, "user") != 0 && strcmp(r, "assistant") != 0))
            return whet_fail(e, "%s: chat template %s: message %zu: expected role \"system\", \"user\" or "
                                "\"assistant\", found %s%s%s",
                             t->source, t->name, i, r ? "\"" : "", r ? r : "none", r ? "\"" : "");
        if (!messages[i].content && messages[i].content_len)
            return whet_fail(e, "%s: chat template %s: message %zu: content is missing", t->source, t->name, i);
        if (messages[i].content_len &&
            !utf8_valid((const unsigned char *)messages[i].content, messages[i].content_len))
            return whet_fail(e, "%s: chat template %s: message %zu: expected UTF-8 content, found invalid bytes",
                             t->source, t->name, i);
        n_assistant += strcmp(r, "assistant") == 0;
    }
    render_ctx c = {t, {0}, NULL, 0, e};
    c.spans = calloc(n_assistant ? n_assistant : 1, sizeof *c.spans);
    if (!c.spans)
        return whet_fail(e, "%s: out of memory rendering a chat", t->source);
    /* an empty message must still give a NUL-terminated text */
    sb_add(&c.b, "", 0);
    int rc = 0;
    switch (t->family) {
    case WHET_CHAT_CHATML:
    case WHET_CHAT_QWEN2_5:
        render_chatml(&c, messages, n, options);
        break;
    case WHET_CHAT_QWEN3:
        render_qwen3(&c, messages, n, options);
        break;
    case WHET_CHAT_LLAMA3:
        render_llama3(&c, messages, n, options);
        break;
    case WHET_CHAT_LLAMA2:
        rc = render_llama2(&c, messages, n);
        break;
    case WHET_CHAT_MISTRAL:
        rc = render_mistral(&c, messages, n);
        break;
    case WHET_CHAT_ZEPHYR:
        render_zephyr(&c, messages, n, options);
        break;
    case WHET_CHAT_GEMMA:
        rc = render_gemma(&c, messages, n, options);
        break;
    default:
        rc = whet_fail(e, "chat template: unknown family");
        break;
    }
    if (rc == 0 && c.b.oom)
        rc = whet_fail(e, "%s: out of memory rendering a chat", t->source);
    if (rc != 0) {
        free(c.b.p);
        free(c.spans);
        return -1;
    }
    out->text = c.b.p;
    out->len = c.b.len;
    out->spans = c.spans;
    out->n_spans = c.n_spans;
    size_t bl = strlen(t->bos);
    out->starts_with_bos = bl > 0 && out->len >= bl && memcmp(out->text, t->bos, bl) == 0;
    return 0;
}

void whet_chat_rendered_free(whet_chat_rendered *r)
{
    if (!r)
        return;
    free(r->text);
    free(r->spans);
    memset(r, 0, sizeof *r);
}

int whet_chat_messages_from_json(const whet_json_doc *doc, const whet_json *array, whet_chat_message **out,
                                 size_t *n, whet_err *e)
{
    *out = NULL;
    *n = 0;
    if (!array || array->type != WHET_JSON_ARRAY)
        return whet_json_fail_at(e, doc, array ? array : whet_json_root(doc), "an array of messages");
    size_t count = whet_json_count(array);
    whet_chat_message *m = calloc(count ? count : 1, sizeof *m);
    if (!m)
        return whet_fail(e, "%s: out of memory", whet_json_doc_name(doc));
    for (size_t i = 0; i < count; i++) {
        const whet_json *item = whet_json_at(array, i);
        if (item->type != WHET_JSON_OBJECT) {
            free(m);
            return whet_json_fail_at(e, doc, item, "a message object {\"role\": ..., \"content\": ...}");
        }
        const whet_json *role = whet_json_get(item, "role");
        const whet_json *content = whet_json_get(item, "content");
        if (!role) {
            free(m);
            return whet_json_fail_missing(e, doc, item, "role");
        }
        if (!content) {
            free(m);
            return whet_json_fail_missing(e, doc, item, "content");
        }
        if (role->type != WHET_JSON_STRING || memchr(role->u.string.chars, 0, role->u.string.len)) {
            free(m);
            return whet_json_fail_at(e, doc, role, "the role as a string");
        }
        if (content->type != WHET_JSON_STRING) {
            free(m);
            return whet_json_fail_at(e, doc, content, "the content as a string");
        }
        m[i].role = role->u.string.chars;
        m[i].content = content->u.string.chars;
        m[i].content_len = content->u.string.len;
    }
    *out = m;
    *n = count;
    return 0;
}

const char *whet_chat_end_of_turn_text(const whet_chat_template *t)
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
