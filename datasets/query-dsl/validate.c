/* query-dsl-validate: checks one query of the query DSL (GRAMMAR.md beside
 * this file) read on standard input; optionally compares it with an expected
 * query by canonical form. Standalone C11 + libc, so that it can serve as the
 * eval's `exec` scorer and be copied as an example of one.
 *
 *   query-dsl-validate [--canonical] [--lines] [--stdout] [--expect | --expect-query QUERY]
 *   query-dsl-validate --print-schema
 *
 * Exit 0: valid (and the same query as the expected one); 1: invalid or
 * different, with "error: LINE:COLUMN: expected ..." on stderr (stdout with
 * --stdout: whet eval's exec scorer records a failing validator's stdout);
 * 2: usage or environment error (bad option, missing/malformed WHET_CASE,
 * invalid expected query). --expect reads the expected query from the eval
 * case in WHET_CASE, at meta.expected (whet-evalspec(5) keeps "meta" for the
 * case's own data).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- schema: the single source of schema.json (see --print-schema) ---- */

typedef enum field_type { T_STRING, T_INT, T_FLOAT, T_BOOL } field_type;
static const char *const TYPE_NAMES[] = {"string", "int", "float", "bool"};

typedef struct schema_field {
    const char *name;
    field_type type;
    const char *description;
} schema_field;

static const schema_field SCHEMA[] = {
    {"service.name", T_STRING, "the service that handled the span"},
    {"http.method", T_STRING, "the HTTP method: GET, POST, PUT, DELETE"},
    {"http.route", T_STRING, "the route template of the request, e.g. /api/cart"},
    {"http.status_code", T_INT, "the HTTP response status"},
    {"duration_ms", T_FLOAT, "the span's duration in milliseconds"},
    {"error", T_BOOL, "whether the span ended in an error"},
    {"exception.message", T_STRING, "the message of the exception raised, if any"},
    {"user.id", T_STRING, "the id of the user who made the request"},
    {"region", T_STRING, "the cloud region that served the request, e.g. us-east-1"},
    {"host.name", T_STRING, "the host (machine or pod) that ran the span"},
    {"db.system", T_STRING, "the database queried: postgres, mysql, redis"},
    {"db.statement", T_STRING, "the database statement"},
    {"db.duration_ms", T_FLOAT, "the time spent in the database, in milliseconds"},
    {"cache.hit", T_BOOL, "whether the cache had the value"},
    {"response.size_bytes", T_INT, "the size of the response body in bytes"},
    {"retry.count", T_INT, "how many times the request was retried"},
};
#define N_FIELDS (sizeof SCHEMA / sizeof SCHEMA[0])

static void print_schema(void)
{
    printf("{\n  \"fields\": [\n");
    for (size_t i = 0; i < N_FIELDS; i++)
        printf("    {\"name\": \"%s\", \"type\": \"%s\", \"description\": \"%s\"}%s\n", SCHEMA[i].name,
               TYPE_NAMES[SCHEMA[i].type], SCHEMA[i].description, i + 1 < N_FIELDS ? "," : "");
    printf("  ]\n}\n");
}

/* ---- tokens ---- */

typedef enum tok_kind { K_END, K_WORD, K_NUMBER, K_DURATION, K_STRING, K_PUNCT, K_OP, K_BAD } tok_kind;

typedef struct token {
    tok_kind kind;
    const char *start; /* into the query text */
    size_t len;
    int line, column;
} token;

typedef struct lexer {
    const char *text, *p;
    int line;
    const char *line_start;
} lexer;

static int is_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

static token next_token(lexer *lx)
{
    while (*lx->p == ' ' || *lx->p == '\t' || *lx->p == '\n' || *lx->p == '\r') {
        if (*lx->p == '\n') {
            lx->line++;
            lx->line_start = lx->p + 1;
        }
        lx->p++;
    }
    token t = {K_END, lx->p, 0, lx->line, (int)(lx->p - lx->line_start) + 1};
    const char *p = lx->p;
    if (*p == '\0') {
        return t;
    } else if (is_letter(*p)) {
        while (is_letter(*p) || is_digit(*p) || *p == '_' || *p == '.')
            p++;
        t.kind = K_WORD;
    } else if (is_digit(*p) || (*p == '-' && is_digit(p[1]))) {
        p++;
        while (is_digit(*p))
            p++;
        t.kind = K_NUMBER;
        if (*p == '.' && is_digit(p[1])) {
            p++;
            while (is_digit(*p))
                p++;
        } else if ((*p == 'm' || *p == 'h' || *p == 'd') && *t.start != '-' && !is_letter(p[1]) &&
                   !is_digit(p[1]) && p[1] != '_' && p[1] != '.') {
            p++;
            t.kind = K_DURATION;
        }
    } else if (*p == '"') {
        p++;
        while (*p && *p != '"' && *p != '\n') {
            if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
                p++;
            else if (*p == '\\')
                break;
            p++;
        }
        t.kind = *p == '"' ? K_STRING : K_BAD;
        if (*p == '"')
            p++;
    } else if (*p == '(' || *p == ')' || *p == ',') {
        p++;
        t.kind = K_PUNCT;
    } else if (*p == '=') {
        p++;
        t.kind = K_OP;
    } else if ((*p == '!' && p[1] == '=') || ((*p == '<' || *p == '>') && p[1] == '=')) {
        p += 2;
        t.kind = K_OP;
    } else if (*p == '<' || *p == '>') {
        p++;
        t.kind = K_OP;
    } else {
        p++;
        t.kind = K_BAD;
    }
    t.len = (size_t)(p - t.start);
    lx->p = p;
    return t;
}

/* ---- the parsed query ---- */

enum { MAX_ITEMS = 8, MAX_STRING = 512 };

typedef enum calc_op { C_COUNT, C_AVG, C_SUM, C_MIN, C_MAX, C_P50, C_P90, C_P95, C_P99, C_COUNT_DISTINCT } calc_op;
static const char *const CALC_NAMES[] = {"COUNT", "AVG", "SUM", "MIN", "MAX", "P50", "P90", "P95", "P99",
                                         "COUNT_DISTINCT"};
#define N_CALCS (sizeof CALC_NAMES / sizeof CALC_NAMES[0])

typedef struct calc {
    calc_op op;
    int field; /* index into SCHEMA; -1 for COUNT */
} calc;

typedef enum filter_op { F_EQ, F_NE, F_GT, F_LT, F_GE, F_LE, F_CONTAINS, F_EXISTS } filter_op;
static const char *const FILTER_OP_NAMES[] = {"=", "!=", ">", "<", ">=", "<=", "CONTAINS", "EXISTS"};

typedef struct filter {
    int field;
    filter_op op;
    char value[MAX_STRING]; /* canonical text of the value ("" for EXISTS) */
} filter;

typedef struct query {
    calc calcs[MAX_ITEMS];
    int n_calcs;
    filter filters[MAX_ITEMS];
    int n_filters;
    int groups[MAX_ITEMS];
    int n_groups;
    int has_order, order_calc, order_desc; /* order_calc indexes calcs */
    long limit;                            /* 0: none */
    long since_minutes;                    /* 0: none */
} query;

/* ---- parser ---- */

typedef struct parser {
    lexer lx;
    token tok;
    char error[MAX_STRING + 256];
} parser;

static int fail_at(parser *ps, const token *t, const char *fmt, ...)
{
    char what[MAX_STRING + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    char got[96];
    if (t->kind == K_END)
        snprintf(got, sizeof got, "the end of the query");
    else
        snprintf(got, sizeof got, "\"%.*s\"%s", t->len > 40 ? 40 : (int)t->len, t->start,
                 t->len > 40 ? "..." : "");
    snprintf(ps->error, sizeof ps->error, "%d:%d: expected %s, got %s", t->line, t->column, what, got);
    return -1;
}

static void advance(parser *ps) { ps->tok = next_token(&ps->lx); }

static int tok_is(const token *t, tok_kind kind, const char *text)
{
    return t->kind == kind && strlen(text) == t->len && memcmp(t->start, text, t->len) == 0;
}

static int accept_word(parser *ps, const char *word)
{
    if (!tok_is(&ps->tok, K_WORD, word))
        return 0;
    advance(ps);
    return 1;
}

static int expect_word(parser *ps, const char *word)
{
    if (!accept_word(ps, word))
        return fail_at(ps, &ps->tok, "%s", word);
    return 0;
}

static int parse_field(parser *ps, int *field)
{
    if (ps->tok.kind == K_WORD)
        for (size_t i = 0; i < N_FIELDS; i++)
            if (tok_is(&ps->tok, K_WORD, SCHEMA[i].name)) {
                *field = (int)i;
                advance(ps);
                return 0;
            }
    return fail_at(ps, &ps->tok, "a field of the schema");
}

static int parse_calc(parser *ps, calc *c)
{
    size_t op = N_CALCS;
    for (size_t i = 0; i < N_CALCS; i++)
        if (tok_is(&ps->tok, K_WORD, CALC_NAMES[i]))
            op = i;
    if (op == N_CALCS)
        return fail_at(ps, &ps->tok, "a calculation (COUNT, AVG, SUM, MIN, MAX, P50, P90, P95, P99, COUNT_DISTINCT)");
    c->op = (calc_op)op;
    c->field = -1;
    advance(ps);
    if (c->op == C_COUNT)
        return 0;
    if (!tok_is(&ps->tok, K_PUNCT, "("))
        return fail_at(ps, &ps->tok, "\"(\" after %s", CALC_NAMES[op]);
    advance(ps);
    token at = ps->tok;
    if (parse_field(ps, &c->field))
        return -1;
    field_type type = SCHEMA[c->field].type;
    if (c->op != C_COUNT_DISTINCT && type != T_INT && type != T_FLOAT)
        return fail_at(ps, &at, "a numeric field for %s (%s is %s)", CALC_NAMES[op], SCHEMA[c->field].name,
                       TYPE_NAMES[type]);
    if (!tok_is(&ps->tok, K_PUNCT, ")"))
        return fail_at(ps, &ps->tok, "\")\"");
    advance(ps);
    return 0;
}

static int same_calc(const calc *a, const calc *b) { return a->op == b->op && a->field == b->field; }

static int same_filter(const filter *a, const filter *b)
{
    return a->field == b->field && a->op == b->op && strcmp(a->value, b->value) == 0;
}

/* The canonical text of a number token for a field of `type`. */
static int canonical_number(parser *ps, const token *t, field_type type, char *out, size_t cap)
{
    char buf[64];
    if (t->len >= sizeof buf)
        return fail_at(ps, t, "a number of at most %d characters", (int)sizeof buf - 1);
    memcpy(buf, t->start, t->len);
    buf[t->len] = '\0';
    if (type == T_INT) {
        if (memchr(buf, '.', t->len))
            return fail_at(ps, t, "an integer");
        errno = 0;
        long long v = strtoll(buf, NULL, 10);
        if (errno == ERANGE)
            return fail_at(ps, t, "an integer in the range of 64 bits");
        snprintf(out, cap, "%lld", v);
    } else {
        double v = strtod(buf, NULL);
        if (v == 0)
            v = 0; /* -0 is 0 */
        snprintf(out, cap, "%.17g", v);
    }
    return 0;
}

static void canonical_string(const token *t, char *out, size_t cap)
{
    size_t n = 0;
    out[n++] = '"';
    for (size_t i = 1; i + 1 < t->len && n + 3 < cap; i++) {
        char c = t->start[i];
        if (c == '\\')
            c = t->start[++i];
        if (c == '"' || c == '\\')
            out[n++] = '\\';
        out[n++] = c;
    }
    out[n++] = '"';
    out[n] = '\0';
}

static int parse_filter(parser *ps, filter *f)
{
    token field_tok = ps->tok;
    if (parse_field(ps, &f->field))
        return -1;
    const schema_field *sf = &SCHEMA[f->field];
    token op_tok = ps->tok;
    size_t op = 8;
    for (size_t i = 0; i < 8; i++)
        if (tok_is(&op_tok, i < 6 ? K_OP : K_WORD, FILTER_OP_NAMES[i]))
            op = i;
    if (op == 8)
        return fail_at(ps, &op_tok, "an operator (= != > < >= <= CONTAINS EXISTS) after %s", sf->name);
    f->op = (filter_op)op;
    int numeric = sf->type == T_INT || sf->type == T_FLOAT;
    if ((f->op == F_GT || f->op == F_LT || f->op == F_GE || f->op == F_LE) && !numeric)
        return fail_at(ps, &op_tok, "%s for %s (%s)", sf->type == T_STRING ? "= != CONTAINS or EXISTS" : "= != or EXISTS",
                       sf->name, TYPE_NAMES[sf->type]);
    if (f->op == F_CONTAINS && sf->type != T_STRING)
        return fail_at(ps, &field_tok, "a string field before CONTAINS (%s is %s)", sf->name, TYPE_NAMES[sf->type]);
    advance(ps);
    f->value[0] = '\0';
    if (f->op == F_EXISTS)
        return 0;
    token v = ps->tok;
    if (sf->type == T_STRING) {
        if (v.kind != K_STRING)
            return fail_at(ps, &v, "a string in double quotes for %s", sf->name);
        canonical_string(&v, f->value, sizeof f->value);
    } else if (sf->type == T_BOOL) {
        if (!tok_is(&v, K_WORD, "true") && !tok_is(&v, K_WORD, "false"))
            return fail_at(ps, &v, "true or false for %s", sf->name);
        snprintf(f->value, sizeof f->value, "%.*s", (int)v.len, v.start);
    } else {
        if (v.kind != K_NUMBER)
            return fail_at(ps, &v, "%s for %s", sf->type == T_INT ? "an integer" : "a number", sf->name);
        if (canonical_number(ps, &v, sf->type, f->value, sizeof f->value))
            return -1;
    }
    if (v.kind == K_STRING && v.len > MAX_STRING - 8)
        return fail_at(ps, &v, "a string of at most %d bytes", MAX_STRING - 8);
    advance(ps);
    return 0;
}

static int parse_count(parser *ps, long lo, long hi, long *out)
{
    token t = ps->tok;
    if (t.kind != K_NUMBER || *t.start == '-' || memchr(t.start, '.', t.len) || t.len > 9)
        return fail_at(ps, &t, "an integer from %ld to %ld", lo, hi);
    long v = strtol(t.start, NULL, 10);
    if (v < lo || v > hi)
        return fail_at(ps, &t, "an integer from %ld to %ld", lo, hi);
    *out = v;
    advance(ps);
    return 0;
}

/* Parses text, whose first line is line `line` of the input. */
static int parse_query(parser *ps, const char *text, int line, query *q)
{
    memset(q, 0, sizeof *q);
    ps->lx = (lexer){text, text, line, text};
    ps->error[0] = '\0';
    advance(ps);
    if (expect_word(ps, "FIND"))
        return -1;
    do {
        token at = ps->tok;
        if (q->n_calcs == MAX_ITEMS)
            return fail_at(ps, &at, "at most %d calculations", MAX_ITEMS);
        calc *c = &q->calcs[q->n_calcs];
        if (parse_calc(ps, c))
            return -1;
        for (int i = 0; i < q->n_calcs; i++)
            if (same_calc(&q->calcs[i], c))
                return fail_at(ps, &at, "a calculation not already in FIND");
        q->n_calcs++;
    } while (tok_is(&ps->tok, K_PUNCT, ",") && (advance(ps), 1));

    if (accept_word(ps, "WHERE")) {
        do {
            token at = ps->tok;
            if (q->n_filters == MAX_ITEMS)
                return fail_at(ps, &at, "at most %d filters", MAX_ITEMS);
            filter *f = &q->filters[q->n_filters];
            if (parse_filter(ps, f))
                return -1;
            for (int i = 0; i < q->n_filters; i++)
                if (same_filter(&q->filters[i], f))
                    return fail_at(ps, &at, "a filter not already in WHERE");
            q->n_filters++;
        } while (accept_word(ps, "AND"));
    }
    if (accept_word(ps, "GROUP")) {
        if (expect_word(ps, "BY"))
            return -1;
        do {
            token at = ps->tok;
            if (q->n_groups == MAX_ITEMS)
                return fail_at(ps, &at, "at most %d GROUP BY fields", MAX_ITEMS);
            int field;
            if (parse_field(ps, &field))
                return -1;
            if (SCHEMA[field].type == T_FLOAT)
                return fail_at(ps, &at, "a field that is not float to group by (%s is float)", SCHEMA[field].name);
            for (int i = 0; i < q->n_groups; i++)
                if (q->groups[i] == field)
                    return fail_at(ps, &at, "a field not already in GROUP BY");
            q->groups[q->n_groups++] = field;
        } while (tok_is(&ps->tok, K_PUNCT, ",") && (advance(ps), 1));
    }
    if (accept_word(ps, "ORDER")) {
        if (expect_word(ps, "BY"))
            return -1;
        token at = ps->tok;
        calc c;
        if (parse_calc(ps, &c))
            return -1;
        q->order_calc = -1;
        for (int i = 0; i < q->n_calcs; i++)
            if (same_calc(&q->calcs[i], &c))
                q->order_calc = i;
        if (q->order_calc < 0)
            return fail_at(ps, &at, "a calculation of FIND after ORDER BY");
        if (accept_word(ps, "DESC"))
            q->order_desc = 1;
        else if (!accept_word(ps, "ASC"))
            return fail_at(ps, &ps->tok, "ASC or DESC");
        q->has_order = 1;
    }
    if (accept_word(ps, "LIMIT") && parse_count(ps, 1, 10000, &q->limit))
        return -1;
    if (accept_word(ps, "SINCE")) {
        token t = ps->tok;
        if (t.kind != K_DURATION || t.len > 7)
            return fail_at(ps, &t, "a duration such as 15m, 2h or 7d");
        long n = strtol(t.start, NULL, 10);
        char unit = t.start[t.len - 1];
        long minutes = n * (unit == 'm' ? 1 : unit == 'h' ? 60 : 1440);
        if (minutes < 1 || minutes > 60 * 1440)
            return fail_at(ps, &t, "a duration from 1m to 60d");
        q->since_minutes = minutes;
        advance(ps);
    }
    if (ps->tok.kind != K_END) {
        const char *next = "end of the query";
        if (q->since_minutes)
            next = "the end of the query";
        else if (q->limit)
            next = "SINCE or the end of the query";
        else if (q->has_order)
            next = "LIMIT, SINCE or the end of the query";
        else if (q->n_groups)
            next = "\",\", ORDER BY, LIMIT, SINCE or the end of the query";
        else if (q->n_filters)
            next = "AND, GROUP BY, ORDER BY, LIMIT, SINCE or the end of the query";
        else
            next = "\",\", WHERE, GROUP BY, ORDER BY, LIMIT, SINCE or the end of the query";
        return fail_at(ps, &ps->tok, "%s", next);
    }
    return 0;
}

/* ---- canonical form ---- */

static void calc_text(const calc *c, char *out, size_t cap)
{
    if (c->op == C_COUNT)
        snprintf(out, cap, "COUNT");
    else
        snprintf(out, cap, "%s(%s)", CALC_NAMES[c->op], SCHEMA[c->field].name);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

typedef struct text_buf {
    char *s;
    size_t len, cap;
} text_buf;

static void put(text_buf *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            fprintf(stderr, "error: out of memory\n");
            exit(2);
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n + 1);
    b->len += n;
}

/* Sorts `n` item texts and appends them joined by `sep`. */
static void put_sorted(text_buf *b, char items[][MAX_STRING + 64], int n, const char *sep)
{
    const char *ptrs[MAX_ITEMS];
    for (int i = 0; i < n; i++)
        ptrs[i] = items[i];
    qsort(ptrs, (size_t)n, sizeof ptrs[0], cmp_str);
    for (int i = 0; i < n; i++) {
        if (i)
            put(b, sep);
        put(b, ptrs[i]);
    }
}

static char *canonical(const query *q)
{
    text_buf b = {0};
    char items[MAX_ITEMS][MAX_STRING + 64], tmp[MAX_STRING + 64];
    put(&b, "FIND ");
    for (int i = 0; i < q->n_calcs; i++)
        calc_text(&q->calcs[i], items[i], sizeof items[i]);
    put_sorted(&b, items, q->n_calcs, ", ");
    if (q->n_filters) {
        put(&b, " WHERE ");
        for (int i = 0; i < q->n_filters; i++) {
            const filter *f = &q->filters[i];
            snprintf(items[i], sizeof items[i], "%s %s%s%s", SCHEMA[f->field].name, FILTER_OP_NAMES[f->op],
                     f->op == F_EXISTS ? "" : " ", f->value);
        }
        put_sorted(&b, items, q->n_filters, " AND ");
    }
    if (q->n_groups) {
        put(&b, " GROUP BY ");
        for (int i = 0; i < q->n_groups; i++)
            snprintf(items[i], sizeof items[i], "%s", SCHEMA[q->groups[i]].name);
        put_sorted(&b, items, q->n_groups, ", ");
    }
    if (q->has_order) {
        calc_text(&q->calcs[q->order_calc], tmp, sizeof tmp);
        put(&b, " ORDER BY ");
        put(&b, tmp);
        put(&b, q->order_desc ? " DESC" : " ASC");
    }
    if (q->limit) {
        snprintf(tmp, sizeof tmp, " LIMIT %ld", q->limit);
        put(&b, tmp);
    }
    if (q->since_minutes) {
        long m = q->since_minutes;
        if (m % 1440 == 0)
            snprintf(tmp, sizeof tmp, " SINCE %ldd", m / 1440);
        else if (m % 60 == 0)
            snprintf(tmp, sizeof tmp, " SINCE %ldh", m / 60);
        else
            snprintf(tmp, sizeof tmp, " SINCE %ldm", m);
        put(&b, tmp);
    }
    return b.s;
}

/* ---- WHET_CASE: the top-level string member "expected" of a JSON object ---- */

typedef struct json_reader {
    const char *p;
    int depth;
} json_reader;

static void json_ws(json_reader *r)
{
    while (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')
        r->p++;
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (is_digit(c))
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Reads a JSON string at r->p; with out, decodes it (UTF-8) into a malloc'd buffer. */
static int json_string(json_reader *r, char **out)
{
    if (*r->p != '"')
        return -1;
    r->p++;
    text_buf b = {0};
    if (out)
        put(&b, "");
    while (*r->p != '"') {
        unsigned char c = (unsigned char)*r->p;
        if (c == '\0' || c < 0x20)
            goto bad;
        char chunk[5] = {(char)c, 0, 0, 0, 0};
        r->p++;
        if (c == '\\') {
            char e = *r->p++;
            const char *simple = strchr("\"\\/bfnrt", e);
            if (e && simple) {
                chunk[0] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
            } else if (e == 'u') {
                unsigned cp, lo;
                if (hex4(r->p, &cp))
                    goto bad;
                r->p += 4;
                if (cp >= 0xD800 && cp < 0xDC00) {
                    if (r->p[0] != '\\' || r->p[1] != 'u' || hex4(r->p + 2, &lo) || lo < 0xDC00 || lo >= 0xE000)
                        goto bad;
                    r->p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp < 0xE000) {
                    goto bad;
                }
                if (cp == 0)
                    goto bad; /* a NUL would cut the query short */
                if (cp < 0x80) {
                    chunk[0] = (char)cp;
                } else if (cp < 0x800) {
                    chunk[0] = (char)(0xC0 | (cp >> 6));
                    chunk[1] = (char)(0x80 | (cp & 0x3F));
                } else if (cp < 0x10000) {
                    chunk[0] = (char)(0xE0 | (cp >> 12));
                    chunk[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    chunk[2] = (char)(0x80 | (cp & 0x3F));
                } else {
                    chunk[0] = (char)(0xF0 | (cp >> 18));
                    chunk[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                    chunk[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    chunk[3] = (char)(0x80 | (cp & 0x3F));
                }
            } else {
                goto bad;
            }
        }
        if (out)
            put(&b, chunk);
    }
    r->p++;
    if (out)
        *out = b.s;
    return 0;
bad:
    free(b.s);
    return -1;
}

static int json_skip_value(json_reader *r)
{
    json_ws(r);
    if (*r->p == '"')
        return json_string(r, NULL);
    if (*r->p == '{' || *r->p == '[') {
        char close = *r->p == '{' ? '}' : ']';
        if (++r->depth > 64)
            return -1;
        r->p++;
        json_ws(r);
        if (*r->p == close) {
            r->p++;
            r->depth--;
            return 0;
        }
        for (;;) {
            if (close == '}') {
                json_ws(r);
                if (json_string(r, NULL))
                    return -1;
                json_ws(r);
                if (*r->p++ != ':')
                    return -1;
            }
            if (json_skip_value(r))
                return -1;
            json_ws(r);
            if (*r->p == ',') {
                r->p++;
                continue;
            }
            if (*r->p++ != close)
                return -1;
            r->depth--;
            return 0;
        }
    }
    static const char *const literals[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++)
        if (strncmp(r->p, literals[i], strlen(literals[i])) == 0) {
            r->p += strlen(literals[i]);
            return 0;
        }
    const char *start = r->p;
    if (*r->p == '-')
        r->p++;
    while (is_digit(*r->p) || *r->p == '.' || *r->p == 'e' || *r->p == 'E' || *r->p == '+' || *r->p == '-')
        r->p++;
    return r->p > start && is_digit(r->p[-1]) ? 0 : -1;
}

/* Reads the object at r->p whole; when it holds keys[0] (an object holding
 * keys[1], ... down to a string), decodes that string into *out (malloc'd).
 * 0: found, 1: absent or not a string, -1: malformed JSON. */
static int json_object_lookup(json_reader *r, const char *const *keys, size_t n_keys, char **out)
{
    json_ws(r);
    if (*r->p != '{' || ++r->depth > 64)
        return -1;
    r->p++;
    json_ws(r);
    int found = 1;
    if (*r->p == '}') {
        r->p++;
        r->depth--;
        return found;
    }
    for (;;) {
        char *name = NULL;
        json_ws(r);
        if (json_string(r, &name))
            goto bad;
        json_ws(r);
        int match = found == 1 && strcmp(name, keys[0]) == 0;
        free(name);
        if (*r->p++ != ':')
            goto bad;
        json_ws(r);
        if (match && n_keys == 1 && *r->p == '"') {
            if (json_string(r, out))
                goto bad;
            found = 0;
        } else if (match && n_keys > 1 && *r->p == '{') {
            found = json_object_lookup(r, keys + 1, n_keys - 1, out);
            if (found < 0)
                return -1;
        } else if (json_skip_value(r)) {
            goto bad;
        }
        json_ws(r);
        if (*r->p == ',') {
            r->p++;
            continue;
        }
        if (*r->p++ != '}')
            goto bad;
        r->depth--;
        return found;
    }
bad:
    if (found == 0)
        free(*out);
    return -1;
}

/* The string at keys[0].keys[1]... of the JSON object `text`; as above. */
static int json_find_string(const char *text, const char *const *keys, size_t n_keys, char **out)
{
    json_reader r = {text, 0};
    int found = json_object_lookup(&r, keys, n_keys, out);
    if (found < 0)
        return -1;
    json_ws(&r);
    if (*r.p != '\0') {
        if (found == 0)
            free(*out);
        return -1;
    }
    return found;
}

/* ---- main ---- */

static char *read_stdin(void)
{
    text_buf b = {0};
    put(&b, "");
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk - 1, stdin)) > 0) {
        chunk[n] = '\0';
        if (strlen(chunk) != n) {
            free(b.s);
            return NULL; /* a NUL byte: not a query */
        }
        put(&b, chunk);
    }
    return b.s;
}

static int usage(void)
{
    fprintf(stderr, "usage: query-dsl-validate [--canonical] [--lines] [--stdout] [--expect | --expect-query QUERY]\n"
                    "       query-dsl-validate --print-schema\n"
                    "Reads a query on standard input; exit 0 valid, 1 invalid or not the expected query, 2 usage.\n"
                    "--expect reads the expected query from meta.expected of the JSON object in $WHET_CASE;\n"
                    "--lines checks each non-blank line as a query of its own.\n"
                    "--stdout prints the query's error on standard output (an exec scorer's record).\n");
    return 2;
}

int main(int argc, char **argv)
{
    int print_canonical = 0, expect_case = 0, each_line = 0;
    FILE *report = stderr; /* where a query's errors go */
    const char *expected_text = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--print-schema") == 0 && argc == 2) {
            print_schema();
            return 0;
        } else if (strcmp(argv[i], "--canonical") == 0) {
            print_canonical = 1;
        } else if (strcmp(argv[i], "--lines") == 0) {
            each_line = 1;
        } else if (strcmp(argv[i], "--stdout") == 0) {
            report = stdout;
        } else if (strcmp(argv[i], "--expect") == 0) {
            expect_case = 1;
        } else if (strcmp(argv[i], "--expect-query") == 0 && i + 1 < argc) {
            expected_text = argv[++i];
        } else {
            return usage();
        }
    }
    if (expect_case && expected_text)
        return usage();

    char *case_expected = NULL;
    if (expect_case) {
        const char *json = getenv("WHET_CASE");
        if (!json) {
            fprintf(stderr, "error: --expect: the environment variable WHET_CASE is not set\n");
            return 2;
        }
        static const char *const path[] = {"meta", "expected"};
        int r = json_find_string(json, path, 2, &case_expected);
        if (r != 0) {
            fprintf(stderr, "error: --expect: WHET_CASE %s\n",
                    r < 0 ? "is not a JSON object" : "has no string \"expected\" in its \"meta\" object");
            return 2;
        }
        expected_text = case_expected;
    }

    parser ps;
    query want, got;
    char *want_canonical = NULL;
    if (expected_text) {
        if (parse_query(&ps, expected_text, 1, &want)) {
            fprintf(stderr, "error: the expected query is invalid: %s\n", ps.error);
            free(case_expected);
            return 2;
        }
        want_canonical = canonical(&want);
    }
    free(case_expected);

    char *text = read_stdin();
    if (!text) {
        fprintf(report, "error: 1:1: expected a query, got a NUL byte\n");
        free(want_canonical);
        return 1;
    }
    int status = 0;
    char *line = text;
    for (int line_no = 1; line; line_no++) {
        /* one query: the whole input, or (--lines) each non-blank line */
        char *next = NULL;
        if (each_line && (next = strchr(line, '\n')))
            *next++ = '\0';
        if (each_line && strspn(line, " \t\r") == strlen(line)) {
            line = next;
            continue;
        }
        if (parse_query(&ps, line, line_no, &got)) {
            fprintf(report, "error: %s\n", ps.error);
            status = 1;
        } else {
            char *got_canonical = canonical(&got);
            if (want_canonical && strcmp(want_canonical, got_canonical) != 0) {
                fprintf(report, "error: %d:1: expected the query %s, got %s\n", line_no, want_canonical,
                        got_canonical);
                status = 1;
            } else if (print_canonical) {
                printf("%s\n", got_canonical);
            }
            free(got_canonical);
        }
        line = next;
    }
    free(text);
    free(want_canonical);
    return status;
}
