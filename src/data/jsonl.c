/* Data files: the line index, format detection, and parsing one example from
 * its line with every problem positioned as file:line:column. */
#include "data/data_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *data_format_name(whet_data_format f)
{
    switch (f) {
    case WHET_DATA_TEXT: return "text";
    case WHET_DATA_PROMPT_COMPLETION: return "prompt/completion";
    case WHET_DATA_CHAT: return "chat";
    default: return "unknown";
    }
}

int data_problem_fail(whet_err *e, const char *path, const data_problem *p)
{
    return whet_fail(e, "%s:%u:%u: %s: %s", path, (unsigned)p->line, (unsigned)p->column, p->cls, p->msg);
}

static int problem(data_problem *p, const char *cls, uint32_t line, uint32_t column, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

static int problem(data_problem *p, const char *cls, uint32_t line, uint32_t column, const char *fmt, ...)
{
    p->cls = cls;
    p->warning = 0;
    p->line = line;
    p->column = column;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->msg, sizeof p->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- UTF-8 -------------------------------------------------------------------- */

size_t data_utf8_invalid_at(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F; /* no surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F; /* nothing past U+10FFFF */
        } else
            return i;
        if (len - i <= need)
            return i; /* cut short */
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return i;
        i += need + 1;
    }
    return len;
}

uint32_t data_column_of(const char *s, size_t at)
{
    uint32_t column = 1;
    for (size_t i = 0; i < at; i++)
        column += ((unsigned char)s[i] & 0xC0) != 0x80;
    return column;
}

/* ---- the index -------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int is_blank(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\f' && s[i] != '\v')
            return 0;
    return 1;
}

static int push_line(data_file *f, size_t *cap, uint64_t offset, size_t len, size_t line, whet_err *e)
{
    if (len > UINT32_MAX)
        return whet_fail(e, "%s:%zu:1: example too large: %zu bytes on one line (at most %u)", f->path, line, len,
                         (unsigned)UINT32_MAX);
    if (line > UINT32_MAX)
        return whet_fail(e, "%s:%zu:1: too many lines (at most %u)", f->path, line, (unsigned)UINT32_MAX);
    if (f->n == *cap) {
        size_t new_cap = *cap ? *cap * 2 : 1024;
        data_line *bigger = realloc(f->lines, new_cap * sizeof *bigger);
        if (!bigger)
            return whet_fail(e, "%s: out of memory indexing %zu examples", f->path, f->n);
        f->lines = bigger;
        *cap = new_cap;
    }
    f->lines[f->n++] = (data_line){offset, (uint32_t)len, (uint32_t)line};
    return 0;
}

/* One pass over the mapped bytes: a data_line per non-blank line (JSONL) or
 * per paragraph (.txt: lines up to a blank line), without line ends. */
static int build_index(data_file *f, whet_err *e)
{
    const unsigned char *data = f->map.data;
    size_t size = f->map.size, pos = 0, line = 1, cap = 0;
    if (size >= 3 && data[0] == 0xEF && data[1] == 0xBB && data[2] == 0xBF)
        pos = 3; /* a byte order mark */
    size_t para_start = 0, para_end = 0, para_line = 0; /* .txt: the paragraph being gathered */
    int in_para = 0;
    while (pos < size) {
        const unsigned char *nl = memchr(data + pos, '\n', size - pos);
        size_t end = nl ? (size_t)(nl - data) : size, next = nl ? end + 1 : size;
        size_t len = end - pos;
        if (len > 0 && data[pos + len - 1] == '\r')
            len--;
        int blank = is_blank(data + pos, len);
        if (f->is_text) {
            if (!blank) {
                if (!in_para) {
                    in_para = 1;
                    para_start = pos;
                    para_line = line;
                }
                para_end = pos + len;
            } else if (in_para) {
                in_para = 0;
                if (push_line(f, &cap, para_start, para_end - para_start, para_line, e) != 0)
                    return -1;
            }
        } else if (!blank && push_line(f, &cap, pos, len, line, e) != 0) {
            return -1;
        }
        pos = next;
        line++;
    }
    if (in_para && push_line(f, &cap, para_start, para_end - para_start, para_line, e) != 0)
        return -1;
    return 0;
}

int data_file_index(data_file **out, const char *path, whet_err *e)
{
    *out = NULL;
    data_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return whet_fail(e, "%s: out of memory", path);
    }
    f->refs = 1;
    f->is_text = ends_with(path, ".txt");
    if (f->is_text)
        f->format = WHET_DATA_TEXT;
    if (whet_map_file(&f->map, path, e) != 0 || build_index(f, e) != 0) {
        data_file_release(f);
        return -1;
    }
    *out = f;
    return 0;
}

int data_file_index_memory(data_file **out, const char *name, const void *data, size_t size, int is_text,
                           whet_err *e)
{
    *out = NULL;
    data_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(name))) {
        free(f);
        return whet_fail(e, "%s: out of memory", name);
    }
    f->refs = 1;
    f->borrowed = 1;
    f->is_text = is_text;
    if (is_text)
        f->format = WHET_DATA_TEXT;
    f->map.data = data;
    f->map.size = size;
    if (build_index(f, e) != 0) {
        data_file_release(f);
        return -1;
    }
    *out = f;
    return 0;
}

int data_file_detect(data_file *f, data_problem *first)
{
    memset(first, 0, sizeof *first);
    for (size_t i = 0; i < f->n && f->format == WHET_DATA_UNKNOWN; i++) {
        data_parsed d;
        data_problem p;
        if (data_parse(f, i, WHET_DATA_UNKNOWN, &d, &p) == 0) {
            f->format = d.format;
            f->format_line = f->lines[i].line;
            data_parsed_free(&d);
        } else if (!first->cls) {
            *first = p;
        }
    }
    return f->format == WHET_DATA_UNKNOWN ? -1 : 0;
}

int data_file_open(data_file **out, const char *path, whet_err *e)
{
    data_file *f;
    if (data_file_index(&f, path, e) != 0)
        return -1;
    if (f->n == 0) {
        whet_fail(e, "%s: no examples (the file is empty or blank)", path);
        data_file_release(f);
        return -1;
    }
    data_problem first;
    if (data_file_detect(f, &first) != 0) {
        data_problem_fail(e, path, &first);
        data_file_release(f);
        return -1;
    }
    *out = f;
    return 0;
}

void data_file_release(data_file *f)
{
    if (!f || --f->refs > 0)
        return;
    if (!f->borrowed)
        whet_unmap(&f->map);
    free(f->lines);
    free(f->path);
    free(f);
}

/* ---- one example ------------------------------------------------------------------ */

void data_parsed_free(data_parsed *d)
{
    whet_json_free(d->doc);
    free(d->messages);
    free(d->trained);
    memset(d, 0, sizeof *d);
}

/* The column of a JSON value inside the line (the parser counts from 1 on
 * line 1, as the line is parsed alone). */
static uint32_t col(const whet_json *v)
{
    return v->column;
}

/* Whitespace only (ASCII whitespace and newlines): what "empty content" means. */
static int empty_text(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n' && s[i] != '\f' && s[i] != '\v')
            return 0;
    return 1;
}

static const whet_json *string_member(const whet_json *obj, const char *key, uint32_t line, const char *what,
                                      data_problem *p)
{
    const whet_json *v = whet_json_get(obj, key);
    if (!v) {
        problem(p, "missing-key", line, col(obj), "expected key \"%s\" in %s", key, what);
        return NULL;
    }
    if (v->type != WHET_JSON_STRING) {
        problem(p, "invalid-value", line, col(v), "expected \"%s\" to be a string, found %s", key,
                whet_json_type_name(v->type));
        return NULL;
    }
    return v;
}

static int parse_chat(const whet_json *root, uint32_t line, data_parsed *d, data_problem *p)
{
    const whet_json *msgs = whet_json_get(root, "messages");
    if (msgs->type != WHET_JSON_ARRAY)
        return problem(p, "invalid-value", line, col(msgs), "expected \"messages\" to be an array of messages, found %s",
                       whet_json_type_name(msgs->type));
    size_t n = whet_json_count(msgs);
    if (n == 0)
        return problem(p, "no-assistant-message", line, col(msgs), "\"messages\" is empty");
    d->messages = calloc(n, sizeof *d->messages);
    d->trained = calloc(n, 1);
    if (!d->messages || !d->trained)
        return problem(p, "out-of-memory", line, 1, "out of memory for %zu messages", n);
    d->n_messages = n;
    int assistants = 0;
    for (size_t i = 0; i < n; i++) {
        const whet_json *m = whet_json_at(msgs, i);
        if (m->type != WHET_JSON_OBJECT)
            return problem(p, "invalid-value", line, col(m), "expected message %zu to be an object with \"role\" and "
                           "\"content\", found %s", i + 1, whet_json_type_name(m->type));
        char what[64];
        snprintf(what, sizeof what, "message %zu", i + 1);
        const whet_json *role = string_member(m, "role", line, what, p);
        if (!role)
            return -1;
        const char *r = role->u.string.chars;
        int is_assistant = strcmp(r, "assistant") == 0;
        if (!is_assistant && strcmp(r, "user") != 0 && strcmp(r, "system") != 0) {
            char shown[80];
            snprintf(shown, sizeof shown, "%.60s%s", r, role->u.string.len > 60 ? "..." : "");
            return problem(p, "unrecognised-role", line, col(role),
                           "role \"%s\" of message %zu: expected \"system\", \"user\" or \"assistant\"", shown, i + 1);
        }
        const whet_json *content = string_member(m, "content", line, what, p);
        if (!content)
            return -1;
        if (empty_text(content->u.string.chars, content->u.string.len))
            return problem(p, "empty-content", line, col(content), "message %zu (%s) has empty content", i + 1, r);
        const whet_json *weight = whet_json_get(m, "weight");
        int trained = is_assistant;
        if (weight) {
            if (!is_assistant)
                return problem(p, "invalid-value", line, col(weight),
                               "\"weight\" on message %zu (%s): only assistant messages take a weight", i + 1, r);
            if (weight->type != WHET_JSON_NUMBER || weight->u.number.int_status != WHET_JSON_INT_EXACT ||
                (weight->u.number.integer != 0 && weight->u.number.integer != 1))
                return problem(p, "invalid-value", line, col(weight), "\"weight\" of message %zu: expected 0 or 1, found %s",
                               i + 1, weight->type == WHET_JSON_NUMBER ? weight->u.number.text
                                                                       : whet_json_type_name(weight->type));
            trained = weight->u.number.integer == 1;
        }
        assistants += is_assistant;
        d->messages[i] = (whet_chat_message){r, content->u.string.chars, content->u.string.len};
        d->trained[i] = (uint8_t)trained;
    }
    if (!assistants)
        return problem(p, "no-assistant-message", line, col(msgs),
                       "no message has role \"assistant\": nothing to learn from this example");
    return 0;
}

int data_parse(const data_file *f, size_t i, whet_data_format format, data_parsed *d, data_problem *p)
{
    memset(d, 0, sizeof *d);
    memset(p, 0, sizeof *p);
    const data_line *l = &f->lines[i];
    const char *s = (const char *)f->map.data + l->offset;
    size_t len = l->len;
    size_t bad = data_utf8_invalid_at(s, len);
    if (f->is_text) {
        /* a paragraph may span lines: name the line of the bad byte */
        if (bad < len) {
            uint32_t line = l->line;
            size_t line_start = 0;
            for (size_t k = 0; k < bad; k++)
                if (s[k] == '\n') {
                    line++;
                    line_start = k + 1;
                }
            return problem(p, "invalid-utf8", line, data_column_of(s + line_start, bad - line_start),
                           "byte 0x%02X is not valid UTF-8", (unsigned char)s[bad]);
        }
        d->format = WHET_DATA_TEXT;
        d->text = s;
        d->text_len = len;
        return 0;
    }
    if (bad < len)
        return problem(p, "invalid-utf8", l->line, data_column_of(s, bad), "byte 0x%02X is not valid UTF-8",
                       (unsigned char)s[bad]);
    whet_err e = {{0}};
    if (whet_json_parse(&d->doc, s, len, "", NULL, &e) != 0) {
        unsigned line = 0, column = 0;
        int used = 0;
        if (sscanf(e.msg, ": line %u, column %u (byte %*u): %n", &line, &column, &used) == 2 && used > 0)
            return problem(p, "invalid-json", l->line, column, "%s", e.msg + used);
        return problem(p, "invalid-json", l->line, 1, "%s", e.msg[0] == ':' ? e.msg + 2 : e.msg);
    }
    const whet_json *root = whet_json_root(d->doc);
    if (root->type != WHET_JSON_OBJECT) {
        problem(p, "unknown-format", l->line, 1, "expected an object with \"messages\", \"prompt\" and \"completion\", "
                "or \"text\", found %s", whet_json_type_name(root->type));
        data_parsed_free(d);
        return -1;
    }
    whet_data_format own = whet_json_get(root, "messages")                                       ? WHET_DATA_CHAT
                           : whet_json_get(root, "prompt") || whet_json_get(root, "completion") ? WHET_DATA_PROMPT_COMPLETION
                           : whet_json_get(root, "text")                                        ? WHET_DATA_TEXT
                                                                                               : WHET_DATA_UNKNOWN;
    int rc = 0;
    if (own == WHET_DATA_UNKNOWN) {
        char keys[200] = "";
        size_t used = 0, n = whet_json_count(root);
        for (size_t k = 0; k < n && k < 6 && used + 1 < sizeof keys; k++) {
            const whet_json_member *mem = &root->u.object.members[k];
            int w = snprintf(keys + used, sizeof keys - used, "%s\"%.40s\"", k ? ", " : "", mem->key);
            used += w > 0 ? (size_t)w : 0;
            if (used >= sizeof keys)
                used = sizeof keys - 1;
        }
        if (n > 6 && used + 5 < sizeof keys)
            strcat(keys, ", ...");
        rc = problem(p, "unknown-format", l->line, 1,
                     "expected key \"messages\" (chat), \"prompt\" and \"completion\", or \"text\"; found %s",
                     n ? keys : "an empty object");
    } else if (format != WHET_DATA_UNKNOWN && own != format) {
        const char *key = format == WHET_DATA_CHAT ? "messages" : format == WHET_DATA_TEXT ? "text" : "prompt";
        rc = problem(p, "missing-key", l->line, 1, "expected key \"%s\": this file holds %s examples (from line %u)",
                     key, data_format_name(format), (unsigned)f->format_line);
    } else if (own == WHET_DATA_CHAT) {
        rc = parse_chat(root, l->line, d, p);
    } else if (own == WHET_DATA_PROMPT_COMPLETION) {
        const whet_json *prompt = string_member(root, "prompt", l->line, "a prompt/completion example", p);
        const whet_json *completion =
            prompt ? string_member(root, "completion", l->line, "a prompt/completion example", p) : NULL;
        if (!prompt || !completion)
            rc = -1;
        else if (empty_text(completion->u.string.chars, completion->u.string.len))
            rc = problem(p, "empty-content", l->line, col(completion), "\"completion\" is empty");
        else {
            d->prompt = prompt->u.string.chars;
            d->prompt_len = prompt->u.string.len;
            d->completion = completion->u.string.chars;
            d->completion_len = completion->u.string.len;
        }
    } else {
        const whet_json *text = string_member(root, "text", l->line, "a text example", p);
        if (!text)
            rc = -1;
        else if (empty_text(text->u.string.chars, text->u.string.len))
            rc = problem(p, "empty-content", l->line, col(text), "\"text\" is empty");
        else {
            d->text = text->u.string.chars;
            d->text_len = text->u.string.len;
        }
    }
    if (rc != 0) {
        data_parsed_free(d);
        return -1;
    }
    d->format = own;
    return 0;
}
