#include "io/json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena: every node, string and index of a document, freed at once ---- */

enum { ARENA_ALIGN = alignof(max_align_t), ARENA_CHUNK = 64 * 1024 };

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    alignas(max_align_t) unsigned char data[];
} arena_chunk;

struct whet_json_doc {
    char *name;
    arena_chunk *chunks;
    whet_json root;
};

static void *arena_alloc(whet_json_doc *doc, size_t size)
{
    if (size > SIZE_MAX - ARENA_ALIGN - sizeof(arena_chunk))
        return NULL;
    size = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    arena_chunk *head = doc->chunks;
    if (head && head->cap - head->used >= size) {
        void *p = head->data + head->used;
        head->used += size;
        return p;
    }
    /* A large block gets a chunk of its own behind the head, so that the
     * head's free space is not thrown away. */
    size_t cap = size > ARENA_CHUNK / 4 ? size : ARENA_CHUNK;
    arena_chunk *c = malloc(sizeof *c + cap);
    if (!c)
        return NULL;
    c->cap = cap;
    c->used = size;
    if (head && cap == size) {
        c->next = head->next;
        head->next = c;
    } else {
        c->next = head;
        doc->chunks = c;
    }
    return c->data;
}

void whet_json_free(whet_json_doc *doc)
{
    if (!doc)
        return;
    arena_chunk *c = doc->chunks;
    while (c) {
        arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    free(doc->name);
    free(doc);
}

const whet_json *whet_json_root(const whet_json_doc *doc)
{
    return &doc->root;
}

const char *whet_json_doc_name(const whet_json_doc *doc)
{
    return doc->name;
}

const char *whet_json_type_name(whet_json_type type)
{
    switch (type) {
    case WHET_JSON_NULL: return "null";
    case WHET_JSON_FALSE: return "false";
    case WHET_JSON_TRUE: return "true";
    case WHET_JSON_NUMBER: return "number";
    case WHET_JSON_STRING: return "string";
    case WHET_JSON_ARRAY: return "array";
    case WHET_JSON_OBJECT: return "object";
    }
    return "unknown";
}

/* ---- UTF-8 (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF) ---- */

/* The length of the valid sequence at s (1..4), or 0 if it is not one. */
static size_t utf8_decode(const unsigned char *s, size_t avail, uint32_t *cp)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        v = c & 0x0F;
        if (c == 0xE0)
            lo = 0xA0; /* overlong below */
        if (c == 0xED)
            hi = 0x9F; /* UTF-16 surrogates above */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        v = c & 0x07;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F; /* beyond U+10FFFF above */
    } else {
        return 0;
    }
    if (avail < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    *cp = v;
    return len;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Writes a short, printable rendering of s[0..len) between double quotes into
 * buf, for messages: escapes what a terminal should not see, cuts long text. */
static void quote_for_message(const char *s, size_t len, char *buf, size_t cap)
{
    const size_t limit = 48;
    size_t o = 0;
    buf[o++] = '"';
    size_t i = 0;
    while (i < len && i < limit && o + 8 < cap) {
        unsigned char c = (unsigned char)s[i];
        uint32_t cp;
        size_t n = c < 0x80 ? 1 : utf8_decode((const unsigned char *)s + i, len - i, &cp);
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7F || n == 0) {
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02X", c);
            n = 1;
        } else {
            memcpy(buf + o, s + i, n);
            o += n;
        }
        i += n;
    }
    if (i < len && o + 5 < cap) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = 0;
}

/* ---- error messages ---- */

static int vfail_at(whet_err *e, const char *name, uint32_t line, uint32_t column, size_t offset, const char *fmt,
                    va_list ap)
{
    if (!e)
        return -1;
    int n = snprintf(e->msg, sizeof e->msg, "%s: line %" PRIu32 ", column %" PRIu32 " (byte %zu): ", name, line,
                     column, offset);
    if (n > 0 && (size_t)n < sizeof e->msg)
        vsnprintf(e->msg + n, sizeof e->msg - (size_t)n, fmt, ap);
    return -1;
}

static int fail_at(whet_err *e, const char *name, uint32_t line, uint32_t column, size_t offset, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 6, 7)))
#endif
    ;

static int fail_at(whet_err *e, const char *name, uint32_t line, uint32_t column, size_t offset, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail_at(e, name, line, column, offset, fmt, ap);
    va_end(ap);
    return -1;
}

/* What a value is, for "found ...". */
static void describe_value(const whet_json *v, char *buf, size_t cap)
{
    switch (v->type) {
    case WHET_JSON_NULL:
    case WHET_JSON_FALSE:
    case WHET_JSON_TRUE:
        snprintf(buf, cap, "%s", whet_json_type_name(v->type));
        break;
    case WHET_JSON_NUMBER:
        if (v->u.number.text_len > 40)
            snprintf(buf, cap, "the number %.40s...", v->u.number.text);
        else
            snprintf(buf, cap, "the number %s", v->u.number.text);
        break;
    case WHET_JSON_STRING: {
        char quoted[256];
        quote_for_message(v->u.string.chars, v->u.string.len, quoted, sizeof quoted);
        snprintf(buf, cap, "the string %s", quoted);
        break;
    }
    case WHET_JSON_ARRAY:
        snprintf(buf, cap, "an array of %zu item%s", v->u.array.count, v->u.array.count == 1 ? "" : "s");
        break;
    case WHET_JSON_OBJECT:
        snprintf(buf, cap, "an object");
        break;
    }
}

int whet_json_fail_at(whet_err *e, const whet_json_doc *doc, const whet_json *v, const char *expected_fmt, ...)
{
    if (!e)
        return -1;
    char expected[512], found[320];
    va_list ap;
    va_start(ap, expected_fmt);
    vsnprintf(expected, sizeof expected, expected_fmt, ap);
    va_end(ap);
    describe_value(v, found, sizeof found);
    return fail_at(e, doc->name, v->line, v->column, v->offset, "expected %s, found %s", expected, found);
}

int whet_json_fail_missing(whet_err *e, const whet_json_doc *doc, const whet_json *object, const char *key)
{
    char quoted[256];
    quote_for_message(key, strlen(key), quoted, sizeof quoted);
    return fail_at(e, doc->name, object->line, object->column, object->offset,
                   "expected key %s in this object, found none", quoted);
}

/* ---- parser ---- */

typedef struct frame {
    int is_object;
    size_t scratch_start; /* where this container's members begin in the scratch list */
    uint32_t line, column;
    size_t offset;
} frame;

typedef struct parser {
    const unsigned char *text;
    size_t size, pos;
    whet_json_doc *doc;
    size_t base_offset, max_depth;
    whet_err *e;
    /* Position tracking: lines advance only in whitespace (strings cannot hold
     * a raw newline). Columns are counted lazily from a cache that only moves
     * forward, so a long minified line costs O(n) in total, not O(n²). */
    uint32_t line;
    size_t line_start;
    size_t column_pos;
    uint32_t column_at_pos;
    /* Children of the open containers, innermost last. */
    whet_json_member *scratch;
    size_t scratch_len, scratch_cap;
    frame *stack;
    size_t depth, stack_cap;
} parser;

static uint32_t column_of(parser *p, size_t at)
{
    if (at < p->column_pos) { /* not expected; recount from the line start */
        p->column_pos = p->line_start;
        p->column_at_pos = 1;
    }
    size_t end = at < p->size ? at : p->size;
    for (size_t i = p->column_pos; i < end; i++)
        if ((p->text[i] & 0xC0) != 0x80)
            p->column_at_pos++;
    p->column_pos = end;
    return p->column_at_pos + (at > end ? (uint32_t)(at - end) : 0);
}

static void describe_input(const parser *p, size_t at, char *buf, size_t cap)
{
    if (at >= p->size) {
        snprintf(buf, cap, "end of input");
        return;
    }
    unsigned char c = p->text[at];
    if (c == '\n')
        snprintf(buf, cap, "a newline");
    else if (c == '\t')
        snprintf(buf, cap, "a tab");
    else if (c == '\r')
        snprintf(buf, cap, "a carriage return");
    else if (c < 0x20 || c == 0x7F)
        snprintf(buf, cap, "control character U+%04X", c);
    else if (c == '\'')
        snprintf(buf, cap, "\"'\"");
    else if (c < 0x80)
        snprintf(buf, cap, "'%c'", c);
    else {
        uint32_t cp;
        size_t n = utf8_decode(p->text + at, p->size - at, &cp);
        if (n == 0)
            snprintf(buf, cap, "invalid UTF-8 (byte 0x%02X)", c);
        else if (cp == 0xFEFF)
            snprintf(buf, cap, "a byte order mark (U+FEFF)");
        else
            snprintf(buf, cap, "'%.*s' (U+%04" PRIX32 ")", (int)n, (const char *)p->text + at, cp);
    }
}

static int parser_fail(parser *p, size_t at, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static int parser_fail(parser *p, size_t at, const char *fmt, ...)
{
    if (!p->e)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vfail_at(p->e, p->doc->name, p->line, column_of(p, at), p->base_offset + at, fmt, ap);
    va_end(ap);
    return -1;
}

/* "expected <what>, found <the input at `at`>" */
static int fail_found(parser *p, size_t at, const char *what)
{
    char found[64];
    describe_input(p, at, found, sizeof found);
    return parser_fail(p, at, "expected %s, found %s", what, found);
}

static int fail_memory(parser *p)
{
    return parser_fail(p, p->pos, "expected to parse the document, found too little memory");
}

static void skip_whitespace(parser *p)
{
    while (p->pos < p->size) {
        unsigned char c = p->text[p->pos];
        if (c == '\n') {
            p->line++;
            p->line_start = p->column_pos = p->pos + 1;
            p->column_at_pos = 1;
        } else if (c != ' ' && c != '\t' && c != '\r') {
            return;
        }
        p->pos++;
    }
}

static void mark_position(parser *p, whet_json *v)
{
    v->line = p->line;
    v->column = column_of(p, p->pos);
    v->offset = p->base_offset + p->pos;
}

static int hex4(const unsigned char *s, size_t avail, uint32_t *out, size_t *bad)
{
    uint32_t v = 0;
    for (size_t i = 0; i < 4; i++) {
        if (i >= avail) {
            *bad = i;
            return -1;
        }
        unsigned char c = s[i];
        uint32_t d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else {
            *bad = i;
            return -1;
        }
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

/* p->pos is at the opening quote. */
static int parse_string(parser *p, const char **out, size_t *out_len)
{
    const unsigned char *t = p->text;
    const size_t size = p->size;
    /* First find the closing quote: unescaping never lengthens a string, so
     * the raw span bounds the output. */
    size_t end = p->pos + 1;
    while (end < size && t[end] != '"')
        end += t[end] == '\\' ? 2 : 1;
    if (end > size)
        end = size;
    char *dst = arena_alloc(p->doc, end - p->pos);
    if (!dst)
        return fail_memory(p);
    size_t n = 0, i = p->pos + 1;
    for (;;) {
        if (i >= size)
            return fail_found(p, i, "'\"' to close the string");
        unsigned char c = t[i];
        if (c == '"')
            break;
        if (c >= 0x20 && c < 0x80 && c != '\\') {
            dst[n++] = (char)c;
            i++;
        } else if (c < 0x20) {
            return fail_found(p, i, "a string character (control characters must be escaped)");
        } else if (c >= 0x80) {
            uint32_t cp;
            size_t len = utf8_decode(t + i, size - i, &cp);
            if (len == 0)
                return fail_found(p, i, "UTF-8 text");
            memcpy(dst + n, t + i, len);
            n += len;
            i += len;
        } else { /* backslash */
            if (i + 1 >= size)
                return fail_found(p, i + 1, "an escape after '\\'");
            unsigned char esc = t[i + 1];
            const char *simple = strchr("\"\\/bfnrt", esc);
            if (esc && simple) {
                static const char decoded[] = "\"\\/\b\f\n\r\t";
                dst[n++] = decoded[simple - "\"\\/bfnrt"];
                i += 2;
                continue;
            }
            if (esc != 'u')
                return fail_found(p, i + 1, "one of \" \\ / b f n r t u after '\\'");
            uint32_t cp;
            size_t bad;
            if (hex4(t + i + 2, size - (i + 2), &cp, &bad) != 0)
                return fail_found(p, i + 2 + bad, "4 hex digits after \\u");
            size_t consumed = 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return parser_fail(p, i, "expected a character escape, found the lone low surrogate \\u%04" PRIX32,
                                   cp);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t low = 0;
                size_t at = i + 6, bad_low;
                if (at + 1 < size && t[at] == '\\' && t[at + 1] == 'u' &&
                    hex4(t + at + 2, size - (at + 2), &low, &bad_low) == 0 && low >= 0xDC00 && low <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    consumed = 12;
                } else if (at + 1 < size && t[at] == '\\' && t[at + 1] == 'u' &&
                           hex4(t + at + 2, size - (at + 2), &low, &bad_low) == 0) {
                    return parser_fail(p, at,
                                       "expected a low surrogate \\uDC00-\\uDFFF after \\u%04" PRIX32
                                       ", found \\u%04" PRIX32,
                                       cp, low);
                } else {
                    char found[64];
                    describe_input(p, at, found, sizeof found);
                    return parser_fail(p, at, "expected a low surrogate \\uDC00-\\uDFFF after \\u%04" PRIX32
                                              ", found %s", cp, found);
                }
            }
            n += utf8_encode(cp, dst + n);
            i += consumed;
        }
    }
    dst[n] = 0;
    *out = dst;
    *out_len = n;
    p->pos = i + 1;
    return 0;
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Whether the literal (already checked against the grammar) is an integer
 * int64_t holds, computed from its digits, not from the rounded double: the
 * value is M × 10^e, M the significant digits of the integer and fraction
 * parts together. */
static whet_json_int_status exact_integer(const char *s, size_t len, int64_t *out)
{
    const char *end = s + len;
    int negative = *s == '-';
    if (negative)
        s++;
    const char *mantissa_end = s;
    while (mantissa_end < end && *mantissa_end != 'e' && *mantissa_end != 'E')
        mantissa_end++;
    int64_t e = 0;
    if (mantissa_end < end) {
        const char *x = mantissa_end + 1;
        int exponent_negative = 0;
        if (*x == '+' || *x == '-')
            exponent_negative = *x++ == '-';
        for (; x < end; x++) /* saturate: beyond 1e9 the answer no longer changes */
            if (e < 1000000000)
                e = e * 10 + (*x - '0');
        if (exponent_negative)
            e = -e;
    }
    const char *first = NULL, *last = NULL; /* first and last non-zero digits */
    int in_fraction = 0;
    for (const char *q = s; q < mantissa_end; q++) {
        if (*q == '.') {
            in_fraction = 1;
            continue;
        }
        if (in_fraction)
            e--;
        if (*q != '0') {
            if (!first)
                first = q;
            last = q;
        }
    }
    if (!first) {
        *out = 0;
        return WHET_JSON_INT_EXACT;
    }
    for (const char *q = last + 1; q < mantissa_end; q++)
        if (*q != '.')
            e++; /* a zero after the last significant digit is a factor of ten */
    if (e < 0)
        return WHET_JSON_INT_NOT_INTEGER;
    int64_t significant = 0;
    for (const char *q = first; q <= last; q++)
        if (*q != '.')
            significant++;
    if (significant + e > 19)
        return WHET_JSON_INT_OUT_OF_RANGE;
    uint64_t v = 0; /* at most 19 digits: below 10^19 < 2^64 */
    for (const char *q = first; q <= last; q++)
        if (*q != '.')
            v = v * 10 + (uint64_t)(*q - '0');
    for (int64_t k = 0; k < e; k++)
        v *= 10;
    uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    if (v > limit)
        return WHET_JSON_INT_OUT_OF_RANGE;
    if (negative)
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    else
        *out = (int64_t)v;
    return WHET_JSON_INT_EXACT;
}

static int parse_number(parser *p, whet_json *v)
{
    const unsigned char *t = p->text;
    size_t start = p->pos, i = start;
    if (t[i] == '-')
        i++;
    if (i >= p->size || !is_digit(t[i]))
        return fail_found(p, i, "a digit after '-'");
    if (t[i] == '0') {
        i++;
        if (i < p->size && is_digit(t[i]))
            return fail_found(p, i, "'.', 'e' or the end of the number after a leading 0");
    } else {
        while (i < p->size && is_digit(t[i]))
            i++;
    }
    if (i < p->size && t[i] == '.') {
        i++;
        if (i >= p->size || !is_digit(t[i]))
            return fail_found(p, i, "a digit after '.'");
        while (i < p->size && is_digit(t[i]))
            i++;
    }
    if (i < p->size && (t[i] == 'e' || t[i] == 'E')) {
        i++;
        if (i < p->size && (t[i] == '+' || t[i] == '-'))
            i++;
        if (i >= p->size || !is_digit(t[i]))
            return fail_found(p, i, "a digit in the exponent");
        while (i < p->size && is_digit(t[i]))
            i++;
    }
    size_t len = i - start;
    char *text = arena_alloc(p->doc, len + 1);
    if (!text)
        return fail_memory(p);
    memcpy(text, t + start, len);
    text[len] = 0;
    /* strtod reads the C locale's decimal point; whet never changes LC_NUMERIC. */
    double value = strtod(text, NULL);
    if (isinf(value)) {
        char shown[48];
        snprintf(shown, sizeof shown, "%.40s%s", text, len > 40 ? "..." : "");
        return parser_fail(p, start, "expected a number a double can hold (up to about 1.8e308), found %s", shown);
    }
    v->type = WHET_JSON_NUMBER;
    v->u.number.value = value;
    v->u.number.text = text;
    v->u.number.text_len = len;
    v->u.number.integer = 0;
    v->u.number.int_status = exact_integer(text, len, &v->u.number.integer);
    p->pos = i;
    return 0;
}

static int is_word_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_';
}

static int parse_literal(parser *p, whet_json *v, const char *expected)
{
    static const struct {
        const char *word;
        whet_json_type type;
    } literals[] = {{"true", WHET_JSON_TRUE}, {"false", WHET_JSON_FALSE}, {"null", WHET_JSON_NULL}};
    size_t end = p->pos;
    while (end < p->size && is_word_char(p->text[end]))
        end++;
    size_t len = end - p->pos;
    for (size_t k = 0; k < sizeof literals / sizeof literals[0]; k++) {
        if (strlen(literals[k].word) == len && memcmp(p->text + p->pos, literals[k].word, len) == 0) {
            v->type = literals[k].type;
            p->pos = end;
            return 0;
        }
    }
    return parser_fail(p, p->pos, "expected %s, found '%.*s%s'", expected, (int)(len > 32 ? 32 : len),
                       (const char *)p->text + p->pos, len > 32 ? "..." : "");
}

static int push_scratch(parser *p)
{
    if (p->scratch_len == p->scratch_cap) {
        size_t cap = p->scratch_cap ? p->scratch_cap * 2 : 64;
        whet_json_member *bigger = realloc(p->scratch, cap * sizeof *bigger);
        if (!bigger)
            return fail_memory(p);
        p->scratch = bigger;
        p->scratch_cap = cap;
    }
    memset(&p->scratch[p->scratch_len++], 0, sizeof *p->scratch);
    return 0;
}

/* Expects a key string at p->pos, then ':'; leaves p->pos at the value. */
static int parse_key(parser *p, const char *expected)
{
    if (p->pos >= p->size || p->text[p->pos] != '"')
        return fail_found(p, p->pos, expected);
    if (push_scratch(p) != 0)
        return -1;
    whet_json_member *m = &p->scratch[p->scratch_len - 1];
    whet_json where;
    mark_position(p, &where);
    m->line = where.line;
    m->column = where.column;
    m->offset = where.offset;
    const char *key;
    size_t key_len;
    if (parse_string(p, &key, &key_len) != 0)
        return -1;
    m = &p->scratch[p->scratch_len - 1];
    m->key = key;
    m->key_len = key_len;
    skip_whitespace(p);
    if (p->pos >= p->size || p->text[p->pos] != ':')
        return fail_found(p, p->pos, "':' after the key");
    p->pos++;
    skip_whitespace(p);
    return 0;
}

static int compare_keys(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen;
}

static int compare_members(const void *x, const void *y)
{
    const whet_json_member *a = *(const whet_json_member *const *)x;
    const whet_json_member *b = *(const whet_json_member *const *)y;
    int c = compare_keys(a->key, a->key_len, b->key, b->key_len);
    if (c != 0)
        return c;
    return a->offset < b->offset ? -1 : a->offset > b->offset; /* duplicates in document order */
}

/* Closes the innermost container into *v. */
static int close_container(parser *p, whet_json *v)
{
    frame *f = &p->stack[p->depth - 1];
    size_t count = p->scratch_len - f->scratch_start;
    const whet_json_member *children = count ? p->scratch + f->scratch_start : NULL; /* scratch may be NULL */
    memset(v, 0, sizeof *v);
    v->line = f->line;
    v->column = f->column;
    v->offset = f->offset;
    if (!f->is_object) {
        whet_json *items = NULL;
        if (count) {
            if (count > SIZE_MAX / sizeof *items || !(items = arena_alloc(p->doc, count * sizeof *items)))
                return fail_memory(p);
            for (size_t i = 0; i < count; i++)
                items[i] = children[i].value;
        }
        v->type = WHET_JSON_ARRAY;
        v->u.array.items = items;
        v->u.array.count = count;
    } else {
        whet_json_member *members = NULL;
        const whet_json_member **by_key = NULL;
        if (count) {
            if (count > SIZE_MAX / sizeof *members ||
                !(members = arena_alloc(p->doc, count * sizeof *members)) ||
                !(by_key = arena_alloc(p->doc, count * sizeof *by_key)))
                return fail_memory(p);
            memcpy(members, children, count * sizeof *members);
            for (size_t i = 0; i < count; i++)
                by_key[i] = &members[i];
            qsort(by_key, count, sizeof *by_key, compare_members);
            /* Report the duplicate that comes first in the document. */
            const whet_json_member *dup = NULL, *first = NULL;
            for (size_t i = 1, run = 0; i < count; i++) {
                if (compare_keys(by_key[i]->key, by_key[i]->key_len, by_key[run]->key, by_key[run]->key_len) != 0) {
                    run = i;
                } else if (i == run + 1 && (!dup || by_key[i]->offset < dup->offset)) {
                    dup = by_key[i];
                    first = by_key[run];
                }
            }
            if (dup) {
                char quoted[256];
                quote_for_message(dup->key, dup->key_len, quoted, sizeof quoted);
                return fail_at(p->e, p->doc->name, dup->line, dup->column, dup->offset,
                               "expected unique keys in an object, found %s again (first at line %" PRIu32
                               ", column %" PRIu32 ")",
                               quoted, first->line, first->column);
            }
        }
        v->type = WHET_JSON_OBJECT;
        v->u.object.members = members;
        v->u.object.count = count;
        v->u.object.by_key = by_key;
    }
    p->scratch_len = f->scratch_start;
    p->depth--;
    return 0;
}

static int open_container(parser *p, int is_object, const whet_json *where)
{
    if (p->depth >= p->max_depth)
        return parser_fail(p, p->pos, "expected at most %zu nested arrays and objects, found one more '%c'",
                           p->max_depth, is_object ? '{' : '[');
    if (p->depth == p->stack_cap) {
        size_t cap = p->stack_cap ? p->stack_cap * 2 : 16;
        frame *bigger = realloc(p->stack, cap * sizeof *bigger);
        if (!bigger)
            return fail_memory(p);
        p->stack = bigger;
        p->stack_cap = cap;
    }
    frame *f = &p->stack[p->depth++];
    f->is_object = is_object;
    f->scratch_start = p->scratch_len;
    f->line = where->line;
    f->column = where->column;
    f->offset = where->offset;
    p->pos++;
    skip_whitespace(p);
    return 0;
}

/* The whole document, without recursion: a value either completes at once
 * (scalars, empty containers) or opens a container whose children follow;
 * each completed value is attached to the innermost open container. */
static int parse_document(parser *p)
{
    const char *expected = "a JSON value";
    skip_whitespace(p);
    for (;;) {
        whet_json v;
        memset(&v, 0, sizeof v);
        if (p->pos >= p->size)
            return fail_found(p, p->pos, expected);
        mark_position(p, &v);
        unsigned char c = p->text[p->pos];
        int complete = 1;
        if (c == '{') {
            if (open_container(p, 1, &v) != 0)
                return -1;
            if (p->pos < p->size && p->text[p->pos] == '}') {
                p->pos++;
                if (close_container(p, &v) != 0)
                    return -1;
            } else {
                if (parse_key(p, "a string key or '}'") != 0)
                    return -1;
                expected = "a JSON value";
                complete = 0;
            }
        } else if (c == '[') {
            if (open_container(p, 0, &v) != 0)
                return -1;
            if (p->pos < p->size && p->text[p->pos] == ']') {
                p->pos++;
                if (close_container(p, &v) != 0)
                    return -1;
            } else {
                expected = "a JSON value or ']'";
                complete = 0;
            }
        } else if (c == '"') {
            v.type = WHET_JSON_STRING;
            if (parse_string(p, &v.u.string.chars, &v.u.string.len) != 0)
                return -1;
        } else if (c == '-' || is_digit(c)) {
            if (parse_number(p, &v) != 0)
                return -1;
        } else if (is_word_char(c)) {
            if (parse_literal(p, &v, expected) != 0)
                return -1;
        } else {
            return fail_found(p, p->pos, expected);
        }
        if (!complete)
            continue;
        /* Attach v, then close every container that ends here. */
        for (;;) {
            if (p->depth == 0) {
                p->doc->root = v;
                skip_whitespace(p);
                if (p->pos < p->size)
                    return fail_found(p, p->pos, "end of input");
                return 0;
            }
            const frame *f = &p->stack[p->depth - 1];
            if (!f->is_object && push_scratch(p) != 0)
                return -1;
            p->scratch[p->scratch_len - 1].value = v;
            skip_whitespace(p);
            unsigned char close = f->is_object ? '}' : ']';
            if (p->pos < p->size && p->text[p->pos] == ',') {
                p->pos++;
                skip_whitespace(p);
                if (f->is_object) {
                    if (parse_key(p, "a string key") != 0)
                        return -1;
                }
                expected = "a JSON value";
                break;
            }
            if (p->pos < p->size && p->text[p->pos] == close) {
                p->pos++;
                if (close_container(p, &v) != 0)
                    return -1;
                continue;
            }
            return fail_found(p, p->pos, f->is_object ? "',' or '}'" : "',' or ']'");
        }
    }
}

int whet_json_parse(whet_json_doc **out, const char *text, size_t size, const char *name,
                    const whet_json_options *options, whet_err *e)
{
    *out = NULL;
    whet_json_options opt = options ? *options : (whet_json_options){0};
    if (!opt.max_depth)
        opt.max_depth = WHET_JSON_DEFAULT_MAX_DEPTH;
    if (!opt.max_size)
        opt.max_size = WHET_JSON_DEFAULT_MAX_SIZE;
    if (opt.max_size > UINT32_MAX - 1) /* lines and columns are 32-bit */
        opt.max_size = UINT32_MAX - 1;
    if (!name)
        name = "JSON";
    if (size > opt.max_size)
        return fail_at(e, name, 1, 1, opt.base_offset, "expected at most %zu bytes of JSON, found %zu", opt.max_size,
                       size);
    whet_json_doc *doc = calloc(1, sizeof *doc);
    if (!doc || !(doc->name = strdup(name))) {
        free(doc);
        return whet_fail(e, "%s: out of memory", name);
    }
    parser p = {
        .text = (const unsigned char *)text,
        .size = size,
        .doc = doc,
        .base_offset = opt.base_offset,
        .max_depth = opt.max_depth,
        .e = e,
        .line = 1,
        .column_at_pos = 1,
    };
    /* RFC 8259 §8.1: a parser may ignore a byte order mark. */
    if (size >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        p.pos = p.line_start = p.column_pos = 3;
    int rc = parse_document(&p);
    free(p.scratch);
    free(p.stack);
    if (rc != 0) {
        whet_json_free(doc);
        return -1;
    }
    *out = doc;
    return 0;
}

int whet_json_parse_file(whet_json_doc **out, const char *path, const whet_json_options *options, whet_err *e)
{
    char *text;
    size_t size;
    *out = NULL;
    if (whet_read_file(path, &text, &size, e) != 0)
        return -1;
    int rc = whet_json_parse(out, text, size, path, options, e);
    free(text);
    return rc;
}

/* ---- access ---- */

const whet_json *whet_json_get_len(const whet_json *v, const char *key, size_t key_len)
{
    if (!v || v->type != WHET_JSON_OBJECT)
        return NULL;
    size_t lo = 0, hi = v->u.object.count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const whet_json_member *m = v->u.object.by_key[mid];
        int c = compare_keys(m->key, m->key_len, key, key_len);
        if (c == 0)
            return &m->value;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const whet_json *whet_json_get(const whet_json *v, const char *key)
{
    return whet_json_get_len(v, key, strlen(key));
}

size_t whet_json_count(const whet_json *v)
{
    if (!v)
        return 0;
    if (v->type == WHET_JSON_ARRAY)
        return v->u.array.count;
    if (v->type == WHET_JSON_OBJECT)
        return v->u.object.count;
    return 0;
}

const whet_json *whet_json_at(const whet_json *v, size_t i)
{
    if (!v || v->type != WHET_JSON_ARRAY || i >= v->u.array.count)
        return NULL;
    return &v->u.array.items[i];
}

const char *whet_json_string(const whet_json *v)
{
    return v && v->type == WHET_JSON_STRING ? v->u.string.chars : NULL;
}

int whet_json_int64(const whet_json_doc *doc, const whet_json *v, int64_t min, int64_t max, int64_t *out,
                    whet_err *e)
{
    if (v && v->type == WHET_JSON_NUMBER && v->u.number.int_status == WHET_JSON_INT_EXACT &&
        v->u.number.integer >= min && v->u.number.integer <= max) {
        *out = v->u.number.integer;
        return 0;
    }
    if (!v)
        return whet_fail(e, "%s: expected an integer, found nothing", doc->name);
    if (min == INT64_MIN && max == INT64_MAX)
        return whet_json_fail_at(e, doc, v, "a 64-bit integer");
    if (max == INT64_MAX)
        return whet_json_fail_at(e, doc, v, "an integer >= %" PRId64, min);
    return whet_json_fail_at(e, doc, v, "an integer in [%" PRId64 ", %" PRId64 "]", min, max);
}

/* ---- writer ---- */

static void writer_error(whet_json_writer *w, const char *msg)
{
    if (!w->error[0])
        snprintf(w->error, sizeof w->error, "%s", msg);
}

static void append(whet_json_writer *w, const char *s, size_t n)
{
    if (w->error[0])
        return;
    if (n + 1 > w->cap - w->len) {
        size_t cap = w->cap ? w->cap : 256;
        while (n + 1 > cap - w->len) {
            if (cap > SIZE_MAX / 2) {
                writer_error(w, "out of memory");
                return;
            }
            cap *= 2;
        }
        char *bigger = realloc(w->text, cap);
        if (!bigger) {
            writer_error(w, "out of memory");
            return;
        }
        w->text = bigger;
        w->cap = cap;
    }
    memcpy(w->text + w->len, s, n);
    w->len += n;
    w->text[w->len] = 0;
}

static void append_str(whet_json_writer *w, const char *s)
{
    append(w, s, strlen(s));
}

static void newline_and_indent(whet_json_writer *w)
{
    if (w->indent <= 0)
        return;
    append(w, "\n", 1);
    for (int i = 0; i < w->depth * w->indent; i++)
        append(w, " ", 1);
}

void whet_json_writer_init(whet_json_writer *w, int indent)
{
    memset(w, 0, sizeof *w);
    w->indent = indent;
}

void whet_json_writer_free(whet_json_writer *w)
{
    free(w->text);
    memset(w, 0, sizeof *w);
}

/* Separators before a value; 0 if the value may be written. */
static int before_value(whet_json_writer *w)
{
    if (w->error[0])
        return -1;
    if (w->done) {
        writer_error(w, "a second value after the complete document");
        return -1;
    }
    if (w->depth == 0)
        return 0;
    if (w->level_is_object[w->depth - 1]) {
        if (!w->expecting_value_after_key) {
            writer_error(w, "a value in an object without a key before it");
            return -1;
        }
        w->expecting_value_after_key = 0;
        return 0;
    }
    if (w->level_has_items[w->depth - 1])
        append(w, ",", 1);
    w->level_has_items[w->depth - 1] = 1;
    newline_and_indent(w);
    return 0;
}

static void after_value(whet_json_writer *w)
{
    if (w->depth == 0)
        w->done = 1;
}

static void write_escaped(whet_json_writer *w, const char *s, size_t len)
{
    append(w, "\"", 1);
    size_t run = 0; /* bytes copied as they are, flushed in one append */
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char buf[8];
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\t')
            esc = "\\t";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\b')
            esc = "\\b";
        else if (c == '\f')
            esc = "\\f";
        else if (c < 0x20) {
            snprintf(buf, sizeof buf, "\\u%04x", c);
            esc = buf;
        }
        if (esc) {
            append(w, s + i - run, run);
            run = 0;
            append_str(w, esc);
            i++;
            continue;
        }
        size_t n = 1;
        if (c >= 0x80) {
            uint32_t cp;
            n = utf8_decode((const unsigned char *)s + i, len - i, &cp);
            if (n == 0) {
                writer_error(w, "a string that is not valid UTF-8");
                return;
            }
        }
        run += n;
        i += n;
    }
    append(w, s + len - run, run);
    append(w, "\"", 1);
}

void whet_json_begin_object(whet_json_writer *w)
{
    if (before_value(w) != 0)
        return;
    if (w->depth >= WHET_JSON_WRITER_MAX_DEPTH) {
        writer_error(w, "nesting deeper than WHET_JSON_WRITER_MAX_DEPTH");
        return;
    }
    append(w, "{", 1);
    w->level_is_object[w->depth] = 1;
    w->level_has_items[w->depth] = 0;
    w->depth++;
}

void whet_json_begin_array(whet_json_writer *w)
{
    if (before_value(w) != 0)
        return;
    if (w->depth >= WHET_JSON_WRITER_MAX_DEPTH) {
        writer_error(w, "nesting deeper than WHET_JSON_WRITER_MAX_DEPTH");
        return;
    }
    append(w, "[", 1);
    w->level_is_object[w->depth] = 0;
    w->level_has_items[w->depth] = 0;
    w->depth++;
}

static void end_container(whet_json_writer *w, int is_object)
{
    if (w->error[0])
        return;
    if (w->depth == 0 || w->level_is_object[w->depth - 1] != is_object) {
        writer_error(w, is_object ? "an object end without its beginning" : "an array end without its beginning");
        return;
    }
    if (w->expecting_value_after_key) {
        writer_error(w, "a key without a value");
        return;
    }
    int had_items = w->level_has_items[w->depth - 1];
    w->depth--;
    if (had_items)
        newline_and_indent(w);
    append(w, is_object ? "}" : "]", 1);
    after_value(w);
}

void whet_json_end_object(whet_json_writer *w)
{
    end_container(w, 1);
}

void whet_json_end_array(whet_json_writer *w)
{
    end_container(w, 0);
}

void whet_json_key_len(whet_json_writer *w, const char *key, size_t len)
{
    if (w->error[0])
        return;
    if (w->depth == 0 || !w->level_is_object[w->depth - 1] || w->expecting_value_after_key) {
        writer_error(w, "a key outside an object or where a value belongs");
        return;
    }
    if (w->level_has_items[w->depth - 1])
        append(w, ",", 1);
    w->level_has_items[w->depth - 1] = 1;
    newline_and_indent(w);
    write_escaped(w, key, len);
    append_str(w, w->indent > 0 ? ": " : ":");
    w->expecting_value_after_key = 1;
}

void whet_json_key(whet_json_writer *w, const char *key)
{
    whet_json_key_len(w, key, strlen(key));
}

void whet_json_write_string_len(whet_json_writer *w, const char *s, size_t len)
{
    if (before_value(w) != 0)
        return;
    write_escaped(w, s, len);
    after_value(w);
}

void whet_json_write_string(whet_json_writer *w, const char *s)
{
    whet_json_write_string_len(w, s, strlen(s));
}

/* The shortest %g rendering of v that reads back as the same value (as a
 * float when as_float), written like Python's repr: positional notation for
 * decimal exponents in [-4, 16), and ".0" after an integral result such as
 * "3", so that readers that tell floats from integers read a float back. */
static void format_shortest(double v, int as_float, char *buf, size_t cap)
{
    int precision = 1;
    for (; precision < (as_float ? 9 : 17); precision++) {
        snprintf(buf, cap, "%.*g", precision, v);
        if (as_float ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v)
            break;
    }
    snprintf(buf, cap, "%.*g", precision, v);
    const char *exponent = strchr(buf, 'e');
    if (exponent) {
        int x = atoi(exponent + 1);
        if (x >= -4 && x < 16) /* %g chose exponent form only because precision <= x */
            snprintf(buf, cap, "%.*g", x + 1, v);
    }
    if (strspn(buf, "-0123456789") == strlen(buf))
        strncat(buf, ".0", cap - strlen(buf) - 1);
}

void whet_json_write_double(whet_json_writer *w, double v)
{
    if (before_value(w) != 0)
        return;
    if (!isfinite(v)) {
        append(w, "null", 4);
    } else {
        char buf[48];
        format_shortest(v, 0, buf, sizeof buf);
        append_str(w, buf);
    }
    after_value(w);
}

void whet_json_write_float(whet_json_writer *w, float v)
{
    if (before_value(w) != 0)
        return;
    if (!isfinite(v)) {
        append(w, "null", 4);
    } else {
        char buf[48];
        format_shortest((double)v, 1, buf, sizeof buf);
        append_str(w, buf);
    }
    after_value(w);
}

void whet_json_write_int(whet_json_writer *w, int64_t v)
{
    if (before_value(w) != 0)
        return;
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    append_str(w, buf);
    after_value(w);
}

void whet_json_write_bool(whet_json_writer *w, int v)
{
    if (before_value(w) != 0)
        return;
    append_str(w, v ? "true" : "false");
    after_value(w);
}

void whet_json_write_null(whet_json_writer *w)
{
    if (before_value(w) != 0)
        return;
    append(w, "null", 4);
    after_value(w);
}

int whet_json_writer_finish(whet_json_writer *w, const char *what, const char **text, size_t *len, whet_err *e)
{
    if (!w->error[0] && !w->done)
        writer_error(w, w->depth ? "unclosed arrays or objects" : "no value at all");
    if (!w->error[0] && w->indent > 0)
        append(w, "\n", 1);
    if (w->error[0])
        return whet_fail(e, "%s: cannot write the JSON: %s", what, w->error);
    *text = w->text;
    *len = w->len;
    return 0;
}
