/* Tokenizer pipeline: added tokens → normalizer → pre-tokenizer → BPE →
 * post-processor, and decoding, as HF tokenizers runs them (formats.md §4).
 * Loading from tokenizer.json is here; from GGUF in tokenizer_gguf.c. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "io/json.h"
#include "tok/tok_internal.h"
#include "tok/tok_pipeline.h"
#include "tok/tokenizer.h"
#include "util/log.h"

const char tok_gpt2_regex[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---- small helpers ---- */

static char *dup_bytes(const char *s, size_t len)
{
    char *d = malloc(len + 1);
    if (d) {
        memcpy(d, s, len);
        d[len] = 0;
    }
    return d;
}

int tok_regex_compile(tok_regex *r, const char *pattern, size_t len, int literal, char *why, size_t why_size)
{
    int code;
    PCRE2_SIZE offset;
    /* PCRE2_LITERAL allows no UCP (nothing in a literal depends on it) */
    uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    r->code = pcre2_compile((PCRE2_SPTR)pattern, len, options, &code, &offset, NULL);
    if (!r->code) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(code, message, sizeof message);
        snprintf(why, why_size, "%s at pattern offset %zu", (const char *)message, (size_t)offset);
        return -1;
    }
    /* The JIT is missing on some platforms (or refused by the kernel's W^X
     * rules); the interpreter then does the same job more slowly. */
    r->jit = pcre2_jit_compile(r->code, PCRE2_JIT_COMPLETE) == 0;
    return 0;
}

void tok_regex_free(tok_regex *r)
{
    pcre2_code_free(r->code);
    r->code = NULL;
}

/* Next match of r in s[0..len) at or after `from`: 1 with [*start, *end), or
 * 0 when there is none (or the engine gave up: the rest stays unsplit). */
static int regex_next(const tok_regex *r, pcre2_match_data *md, const char *s, size_t len, size_t from, size_t *start,
                      size_t *end)
{
    int rc = -1;
    if (r->jit)
        rc = pcre2_jit_match(r->code, (PCRE2_SPTR)s, len, from, PCRE2_NO_UTF_CHECK, md, NULL);
    if (!r->jit || rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(r->code, (PCRE2_SPTR)s, len, from, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc < 0)
        return 0;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    *start = ov[0];
    *end = ov[1];
    return *end >= *start && *end <= len;
}

/* ---- piece lists: the pre-tokenizer's working set ---- */

typedef struct piece {
    size_t off, len;
    int at_start; /* begins at byte 0 of the original text (Metaspace "first") */
} piece;

typedef struct piece_list {
    tok_buf text;
    piece *items;
    size_t n, cap;
} piece_list;

typedef struct span {
    size_t start, end;
    int is_match;
} span;

typedef struct encode_ctx {
    const whet_tokenizer *t;
    int32_t *ids;
    size_t n_ids, cap_ids;
    tok_bpe_scratch scratch;
    pcre2_match_data *md;
    piece_list lists[2];
    span *spans;
    size_t n_spans, cap_spans;
    tok_buf norm[2];
    tok_buf mapped;
    int oom;
} encode_ctx;

static void pieces_reset(piece_list *l)
{
    l->text.len = 0;
    l->n = 0;
}

static void pieces_add(encode_ctx *c, piece_list *l, const char *s, size_t len, int at_start)
{
    if (len == 0)
        return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        piece *items = realloc(l->items, cap * sizeof *items);
        if (!items) {
            c->oom = 1;
            return;
        }
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = (piece){l->text.len, len, at_start};
    tok_buf_append(&l->text, s, len);
    if (l->text.oom)
        c->oom = 1;
}

/* Extends the last piece with s (the text must directly follow it). */
static void pieces_extend_last(encode_ctx *c, piece_list *l, const char *s, size_t len)
{
    l->items[l->n - 1].len += len;
    tok_buf_append(&l->text, s, len);
    if (l->text.oom)
        c->oom = 1;
}

static void spans_add(encode_ctx *c, size_t start, size_t end, int is_match)
{
    if (c->n_spans == c->cap_spans) {
        size_t cap = c->cap_spans ? c->cap_spans * 2 : 64;
        span *grown = realloc(c->spans, cap * sizeof *grown);
        if (!grown) {
            c->oom = 1;
            return;
        }
        c->spans = grown;
        c->cap_spans = cap;
    }
    c->spans[c->n_spans++] = (span){start, end, is_match};
}

/* Emits the pieces of s once c->spans (gaps and matches, in order, covering
 * s) are known, by HF's SplitDelimiterBehavior. */
static void emit_spans(encode_ctx *c, piece_list *out, const char *s, int at_start, tok_split_behavior behavior)
{
    int previous_match = 0;
    size_t first_out = out->n;
    for (size_t i = 0; i < c->n_spans && !c->oom; i++) {
        const span *sp = &c->spans[i];
        const char *text = s + sp->start;
        size_t len = sp->end - sp->start;
        int start_flag = at_start && sp->start == 0;
        switch (behavior) {
        case TOK_SPLIT_ISOLATED: pieces_add(c, out, text, len, start_flag); break;
        case TOK_SPLIT_REMOVED:
            if (!sp->is_match)
                pieces_add(c, out, text, len, start_flag);
            break;
        case TOK_SPLIT_MERGED_WITH_PREVIOUS:
            if (sp->is_match && !previous_match && out->n > first_out)
                pieces_extend_last(c, out, text, len);
            else
                pieces_add(c, out, text, len, start_flag);
            break;
        case TOK_SPLIT_MERGED_WITH_NEXT:
            /* HF folds from the end: a match joins the piece after it when
             * that piece is not itself a match ("a--b" → "a", "-", "-b") */
            if (i > 0 && c->spans[i - 1].is_match && !sp->is_match && out->n > first_out)
                pieces_extend_last(c, out, text, len);
            else
                pieces_add(c, out, text, len, start_flag);
            break;
        }
        previous_match = sp->is_match;
    }
}

/* Fills c->spans with r's matches in s and the gaps between them. Empty
 * matches split nothing and are skipped. */
static void find_spans(encode_ctx *c, const tok_regex *r, const char *s, size_t len)
{
    c->n_spans = 0;
    size_t pos = 0, prev = 0, start, end;
    while (pos < len && regex_next(r, c->md, s, len, pos, &start, &end)) {
        if (end == start) {
            /* step over one whole character */
            pos = start + 1;
            while (pos < len && ((unsigned char)s[pos] & 0xC0) == 0x80)
                pos++;
            continue;
        }
        if (start > prev)
            spans_add(c, prev, start, 0);
        spans_add(c, start, end, 1);
        prev = pos = end;
    }
    if (prev < len)
        spans_add(c, prev, len, 0);
}

/* Literal occurrences of pat in s, as spans. */
static void find_literal_spans(encode_ctx *c, const char *pat, size_t pat_len, const char *s, size_t len)
{
    c->n_spans = 0;
    size_t prev = 0;
    for (size_t i = 0; pat_len && i + pat_len <= len;) {
        if (memcmp(s + i, pat, pat_len) == 0) {
            if (i > prev)
                spans_add(c, prev, i, 0);
            spans_add(c, i, i + pat_len, 1);
            i += pat_len;
            prev = i;
        } else {
            i++;
        }
    }
    if (prev < len)
        spans_add(c, prev, len, 0);
}

static void byte_level_map(encode_ctx *c, piece_list *out, const char *s, size_t len, int at_start)
{
    /* every byte becomes one character of 1 or 2 UTF-8 bytes */
    tok_buf *mapped = &c->mapped;
    mapped->len = 0;
    tok_buf_reserve(mapped, len * 2);
    if (mapped->oom) {
        c->oom = 1;
        return;
    }
    for (size_t i = 0; i < len; i++)
        mapped->len += tok_utf8_encode(c->t->byte_cp[(unsigned char)s[i]], mapped->data + mapped->len);
    pieces_add(c, out, mapped->data, mapped->len, at_start);
}

static void apply_pre_step(encode_ctx *c, const tok_pre_step *step, const piece_list *in, piece_list *out)
{
    pieces_reset(out);
    for (size_t i = 0; i < in->n && !c->oom; i++) {
        const piece *p = &in->items[i];
        const char *s = in->text.data + p->off;
        switch (step->kind) {
        case TOK_PRE_SPLIT:
            find_spans(c, &step->regex, s, p->len);
            emit_spans(c, out, s, p->at_start, step->behavior);
            break;
        case TOK_PRE_BYTE_LEVEL: {
            tok_buf *tmp = &c->norm[0];
            tmp->len = 0;
            if (step->add_prefix_space && s[0] != ' ')
                tok_buf_append(tmp, " ", 1);
            tok_buf_append(tmp, s, p->len);
            if (tmp->oom) {
                c->oom = 1;
                break;
            }
            if (step->use_regex) {
                find_spans(c, &c->t->gpt2_regex, tmp->data, tmp->len);
                for (size_t k = 0; k < c->n_spans; k++)
                    byte_level_map(c, out, tmp->data + c->spans[k].start, c->spans[k].end - c->spans[k].start,
                                   p->at_start && c->spans[k].start == 0);
            } else {
                byte_level_map(c, out, tmp->data, tmp->len, p->at_start);
            }
            break;
        }
        case TOK_PRE_METASPACE: {
            tok_buf *tmp = &c->norm[0];
            tmp->len = 0;
            int starts_with_repl = 0;
            int prepend = 0;
            /* does the piece (after ' ' → replacement) start with the replacement? */
            if (s[0] == ' ' || (p->len >= step->repl_len && memcmp(s, step->repl, step->repl_len) == 0))
                starts_with_repl = 1;
            if (!starts_with_repl && (step->prepend_scheme == TOK_PREPEND_ALWAYS ||
                                      (step->prepend_scheme == TOK_PREPEND_FIRST && p->at_start)))
                prepend = 1;
            if (prepend)
                tok_buf_append(tmp, step->repl, step->repl_len);
            size_t run = 0;
            for (size_t k = 0; k < p->len; k++)
                if (s[k] == ' ') {
                    tok_buf_append(tmp, s + run, k - run);
                    tok_buf_append(tmp, step->repl, step->repl_len);
                    run = k + 1;
                }
            tok_buf_append(tmp, s + run, p->len - run);
            if (tmp->oom) {
                c->oom = 1;
                break;
            }
            if (step->split) {
                find_literal_spans(c, step->repl, step->repl_len, tmp->data, tmp->len);
                emit_spans(c, out, tmp->data, p->at_start, TOK_SPLIT_MERGED_WITH_NEXT);
            } else {
                pieces_add(c, out, tmp->data, tmp->len, p->at_start);
            }
            break;
        }
        }
    }
}

static void model_text(encode_ctx *c, const char *s, size_t len, int at_start)
{
    const whet_tokenizer *t = c->t;
    if (len == 0)
        return;
    piece_list *cur = &c->lists[0], *next = &c->lists[1];
    pieces_reset(cur);
    pieces_add(c, cur, s, len, at_start);
    for (size_t i = 0; i < t->n_pre && !c->oom; i++) {
        apply_pre_step(c, &t->pre[i], cur, next);
        piece_list *swap = cur;
        cur = next;
        next = swap;
    }
    for (size_t i = 0; i < cur->n && !c->oom; i++) {
        tok_bpe_word(&t->bpe, cur->text.data + cur->items[i].off, cur->items[i].len, &c->scratch, &c->ids, &c->n_ids,
                     &c->cap_ids);
        if (c->scratch.oom)
            c->oom = 1;
    }
}

static void push_id(encode_ctx *c, int32_t id)
{
    if (c->n_ids == c->cap_ids) {
        size_t cap = c->cap_ids ? c->cap_ids * 2 : 64;
        int32_t *grown = realloc(c->ids, cap * sizeof *grown);
        if (!grown) {
            c->oom = 1;
            return;
        }
        c->ids = grown;
        c->cap_ids = cap;
    }
    c->ids[c->n_ids++] = id;
}

/* ---- added tokens ---- */

/* Whether the character at s[0..len) is a word character, as HF's
 * single_word test (Rust regex \w: Alphabetic, marks, connector
 * punctuation, decimal digits, ZWNJ/ZWJ). */
static int is_word_char(encode_ctx *c, const char *s, size_t len)
{
    const tok_regex *r = &c->t->word_char_regex;
    int rc = -1;
    if (r->jit)
        rc = pcre2_jit_match(r->code, (PCRE2_SPTR)s, len, 0, PCRE2_NO_UTF_CHECK, c->md, NULL);
    else
        rc = pcre2_match(r->code, (PCRE2_SPTR)s, len, 0, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, c->md, NULL);
    return rc >= 0;
}

/* Length of the character that ends at s[len]. */
static size_t last_char_len(const char *s, size_t len)
{
    size_t i = len;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    return i > 0 ? len - (i - 1) : 0;
}

static uint32_t last_char(const char *s, size_t len)
{
    size_t i = len;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    uint32_t cp = 0xFFFD;
    if (i > 0)
        tok_utf8_decode((const unsigned char *)s + i - 1, len - (i - 1), &cp);
    return cp;
}

/* Where the leftmost match of the set begins in s[from..len), longest first
 * among those starting there: *which is the added token index. */
static int added_find(const whet_tokenizer *t, const tok_added_set *set, const char *s, size_t len, size_t from,
                      size_t *at, size_t *which)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = from; i < len; i++) {
        size_t lo = set->first[u[i]], hi = set->first[u[i] + 1];
        for (size_t k = lo; k < hi; k++) {
            const tok_added_token *a = &t->added[set->order[k]];
            if (a->len <= len - i && memcmp(s + i, a->content, a->len) == 0) {
                *at = i;
                *which = set->order[k];
                return 1;
            }
        }
    }
    return 0;
}

/* Splits s on the set's tokens (HF AddedVocabulary::find_matches); calls
 * text_fn for each stretch between matches and pushes matched ids. */
typedef void (*text_fn)(encode_ctx *c, const char *s, size_t len, int at_start);

static void split_on_added(encode_ctx *c, const tok_added_set *set, const char *s, size_t len, int at_start,
                           text_fn on_text)
{
    const whet_tokenizer *t = c->t;
    size_t offset = 0; /* end of the previous match */
    size_t from = 0, at, which;
    while (!c->oom && set->n && added_find(t, set, s, len, from, &at, &which)) {
        const tok_added_token *a = &t->added[which];
        size_t start = at, stop = at + a->len;
        from = stop;
        if (a->single_word) {
            size_t before = last_char_len(s, start), after = 0;
            uint32_t cp;
            if (stop < len)
                after = tok_utf8_decode((const unsigned char *)s + stop, len - stop, &cp);
            int start_space = start == 0 || !is_word_char(c, s + start - before, before);
            int stop_space = stop == len || !is_word_char(c, s + stop, after ? after : 1);
            if (!start_space || !stop_space)
                continue;
        }
        if (a->lstrip) {
            size_t k = start;
            while (k > offset) {
                uint32_t cp = last_char(s, k);
                if (!tok_is_whitespace(cp))
                    break;
                size_t clen = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
                k -= clen;
            }
            start = k;
        }
        if (a->rstrip) {
            uint32_t cp;
            size_t n;
            while (stop < len && (n = tok_utf8_decode((const unsigned char *)s + stop, len - stop, &cp)) &&
                   tok_is_whitespace(cp))
                stop += n;
            from = stop;
        }
        if (offset < start)
            on_text(c, s + offset, start - offset, at_start && offset == 0);
        push_id(c, a->id);
        offset = stop;
    }
    if (offset < len)
        on_text(c, s + offset, len - offset, at_start && offset == 0);
}

static void normalized_text(encode_ctx *c, const char *s, size_t len, int at_start)
{
    const whet_tokenizer *t = c->t;
    /* the normalized string is copied: model_text reuses c->norm */
    char *copy = dup_bytes(s, len);
    if (!copy) {
        c->oom = 1;
        return;
    }
    split_on_added(c, &t->normalized_set, copy, len, at_start, model_text);
    free(copy);
}

static void raw_text(encode_ctx *c, const char *s, size_t len, int at_start)
{
    const whet_tokenizer *t = c->t;
    if (t->n_norm == 0) {
        split_on_added(c, &t->normalized_set, s, len, at_start, model_text);
        return;
    }
    tok_buf *cur = &c->norm[1];
    tok_buf tmp = {0};
    cur->len = 0;
    tok_buf_append(cur, s, len);
    for (size_t i = 0; i < t->n_norm && !cur->oom; i++) {
        const tok_norm_step *n = &t->norm[i];
        tmp.len = 0;
        switch (n->kind) {
        case TOK_NORM_NFC: tok_nfc_append(&tmp, cur->data, cur->len); break;
        case TOK_NORM_PREPEND:
            if (cur->len)
                tok_buf_append(&tmp, n->a, n->a_len);
            tok_buf_append(&tmp, cur->data, cur->len);
            break;
        case TOK_NORM_REPLACE: {
            size_t run = 0;
            for (size_t k = 0; n->a_len && k + n->a_len <= cur->len;) {
                if (memcmp(cur->data + k, n->a, n->a_len) == 0) {
                    tok_buf_append(&tmp, cur->data + run, k - run);
                    tok_buf_append(&tmp, n->b, n->b_len);
                    k += n->a_len;
                    run = k;
                } else {
                    k++;
                }
            }
            tok_buf_append(&tmp, cur->data + run, cur->len - run);
            break;
        }
        }
        tok_buf_append(&tmp, "", 0);
        tok_buf swap = *cur;
        *cur = tmp;
        tmp = swap;
    }
    tok_buf_free(&tmp);
    if (cur->oom) {
        c->oom = 1;
        return;
    }
    normalized_text(c, cur->data, cur->len, at_start);
}

int whet_tokenizer_encode(const whet_tokenizer *t, const char *text, size_t len, int add_special, int32_t **ids,
                          size_t *n_ids, whet_err *e)
{
    *ids = NULL;
    *n_ids = 0;
    encode_ctx c;
    memset(&c, 0, sizeof c);
    c.t = t;
    c.md = pcre2_match_data_create(1, NULL);
    tok_buf clean = {0};
    const char *s = text;
    if (!c.md) {
        c.oom = 1;
    } else if (!tok_utf8_valid(text, len)) {
        tok_utf8_append_lossy(&clean, text, len);
        tok_buf_append(&clean, "", 0);
        if (clean.oom)
            c.oom = 1;
        s = clean.data;
        len = clean.len;
    }
    if (!c.oom) {
        if (add_special)
            for (size_t i = 0; i < t->n_template && t->template_items[i].is_sequence == 0; i++)
                for (size_t k = 0; k < t->template_items[i].n_ids; k++)
                    push_id(&c, t->template_items[i].ids[k]);
        split_on_added(&c, &t->raw_set, s ? s : "", len, 1, raw_text);
        if (add_special) {
            size_t i = 0;
            while (i < t->n_template && t->template_items[i].is_sequence == 0)
                i++;
            for (i = i < t->n_template ? i + 1 : i; i < t->n_template; i++)
                for (size_t k = 0; k < t->template_items[i].n_ids; k++)
                    push_id(&c, t->template_items[i].ids[k]);
        }
    }
    tok_buf_free(&clean);
    tok_bpe_scratch_free(&c.scratch);
    pcre2_match_data_free(c.md);
    for (int i = 0; i < 2; i++) {
        tok_buf_free(&c.lists[i].text);
        free(c.lists[i].items);
        tok_buf_free(&c.norm[i]);
    }
    free(c.spans);
    tok_buf_free(&c.mapped);
    if (c.oom) {
        free(c.ids);
        return whet_fail(e, "%s: out of memory while encoding %zu bytes", t->name, len);
    }
    *ids = c.ids;
    *n_ids = c.n_ids;
    return 0;
}

/* ---- decoding ---- */

typedef struct token_list {
    tok_buf text;
    size_t *off, *len;
    size_t n, cap;
} token_list;

static int tl_add(token_list *l, const char *s, size_t len)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        size_t *off = realloc(l->off, cap * sizeof *off);
        if (!off)
            return -1;
        l->off = off;
        size_t *lens = realloc(l->len, cap * sizeof *lens);
        if (!lens)
            return -1;
        l->len = lens;
        l->cap = cap;
    }
    l->off[l->n] = l->text.len;
    l->len[l->n] = len;
    l->n++;
    tok_buf_append(&l->text, s, len);
    return l->text.oom ? -1 : 0;
}

static void tl_reset(token_list *l)
{
    l->n = 0;
    l->text.len = 0;
}

static void tl_free(token_list *l)
{
    tok_buf_free(&l->text);
    free(l->off);
    free(l->len);
}

/* Appends token s with byte-level characters mapped back to bytes; a token
 * with any other character is kept as it is (HF's ByteLevel decoder). */
void tok_byte_level_unmap(tok_buf *out, const char *s, size_t len)
{
    size_t start = out->len;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = tok_utf8_decode(u + i, len - i, &cp);
        int b = n ? tok_cp_to_byte(cp) : -1;
        if (b < 0) {
            out->len = start;
            tok_buf_append(out, s, len);
            return;
        }
        unsigned char byte = (unsigned char)b;
        tok_buf_append(out, &byte, 1);
        i += n;
    }
}

/* <0xXX> → the byte, or -1. */
int tok_byte_token_value(const char *s, size_t len)
{
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char ch = s[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static void replace_all(tok_buf *out, const char *s, size_t len, const char *from, size_t from_len, const char *to,
                        size_t to_len)
{
    size_t run = 0;
    for (size_t k = 0; from_len && k + from_len <= len;) {
        if (memcmp(s + k, from, from_len) == 0) {
            tok_buf_append(out, s + run, k - run);
            tok_buf_append(out, to, to_len);
            k += from_len;
            run = k;
        } else {
            k++;
        }
    }
    tok_buf_append(out, s + run, len - run);
}

static int apply_dec_step(const tok_dec_step *d, const token_list *in, token_list *out)
{
    tok_buf tmp = {0};
    int rc = 0;
    tl_reset(out);
    switch (d->kind) {
    case TOK_DEC_BYTE_LEVEL:
        for (size_t i = 0; i < in->n; i++)
            tok_byte_level_unmap(&tmp, in->text.data + in->off[i], in->len[i]);
        {
            tok_buf fixed = {0};
            tok_utf8_append_lossy(&fixed, tmp.data ? tmp.data : "", tmp.len);
            rc = fixed.oom || tmp.oom ? -1 : tl_add(out, fixed.data ? fixed.data : "", fixed.len);
            tok_buf_free(&fixed);
        }
        break;
    case TOK_DEC_REPLACE:
        for (size_t i = 0; i < in->n && rc == 0; i++) {
            tmp.len = 0;
            replace_all(&tmp, in->text.data + in->off[i], in->len[i], d->a, d->a_len, d->b, d->b_len);
            rc = tmp.oom ? -1 : tl_add(out, tmp.data ? tmp.data : "", tmp.len);
        }
        break;
    case TOK_DEC_BYTE_FALLBACK:
        /* runs of <0xXX> tokens become their bytes when those form valid
         * UTF-8, otherwise one U+FFFD per byte token (HF byte_fallback.rs) */
        for (size_t i = 0; i < in->n && rc == 0;) {
            int b = tok_byte_token_value(in->text.data + in->off[i], in->len[i]);
            if (b < 0) {
                rc = tl_add(out, in->text.data + in->off[i], in->len[i]);
                i++;
                continue;
            }
            size_t j = i;
            tmp.len = 0;
            while (j < in->n && (b = tok_byte_token_value(in->text.data + in->off[j], in->len[j])) >= 0) {
                unsigned char byte = (unsigned char)b;
                tok_buf_append(&tmp, &byte, 1);
                j++;
            }
            if (tmp.oom)
                rc = -1;
            else if (tok_utf8_valid(tmp.data, tmp.len))
                rc = tl_add(out, tmp.data, tmp.len);
            else
                for (size_t k = i; k < j && rc == 0; k++)
                    rc = tl_add(out, "\xEF\xBF\xBD", 3);
            i = j;
        }
        break;
    case TOK_DEC_FUSE:
        rc = tl_add(out, in->text.data ? in->text.data : "", in->text.len);
        break;
    case TOK_DEC_STRIP:
        for (size_t i = 0; i < in->n && rc == 0; i++) {
            const char *s = in->text.data + in->off[i];
            size_t len = in->len[i];
            for (int k = 0; k < d->start && len >= d->a_len && d->a_len && memcmp(s, d->a, d->a_len) == 0; k++) {
                s += d->a_len;
                len -= d->a_len;
            }
            for (int k = 0; k < d->stop && len >= d->a_len && d->a_len &&
                            memcmp(s + len - d->a_len, d->a, d->a_len) == 0;
                 k++)
                len -= d->a_len;
            rc = tl_add(out, s, len);
        }
        break;
    case TOK_DEC_METASPACE:
        /* HF's metaspace.rs: the replacement becomes a space, except in the
         * first token, where every one is dropped (unless prepend_scheme is
         * "never") */
        for (size_t i = 0; i < in->n && rc == 0; i++) {
            tmp.len = 0;
            int drop = i == 0 && d->prepend_scheme != TOK_PREPEND_NEVER;
            replace_all(&tmp, in->text.data + in->off[i], in->len[i], d->a, d->a_len, drop ? "" : " ", drop ? 0 : 1);
            rc = tmp.oom ? -1 : tl_add(out, tmp.data ? tmp.data : "", tmp.len);
        }
        break;
    }
    tok_buf_free(&tmp);
    return rc;
}

int whet_tokenizer_decode(const whet_tokenizer *t, const int32_t *ids, size_t n_ids, int skip_special, char **text,
                          size_t *len, whet_err *e)
{
    *text = NULL;
    *len = 0;
    token_list a = {0}, b = {0};
    int rc = 0;
    for (size_t i = 0; i < n_ids && rc == 0; i++) {
        int32_t id = ids[i];
        if (id < 0 || (size_t)id >= t->bpe.vocab.n) {
            tl_free(&a);
            return whet_fail(e, "%s: cannot decode id %d (item %zu): expected an id in [0, %zu)", t->name, (int)id, i,
                             t->bpe.vocab.n);
        }
        if (!t->bpe.vocab.text[id] || (skip_special && t->bpe.vocab.special[id]))
            continue;
        rc = tl_add(&a, t->bpe.vocab.text[id], t->bpe.vocab.len[id]);
    }
    token_list *cur = &a, *next = &b;
    for (size_t i = 0; i < t->n_dec && rc == 0; i++) {
        rc = apply_dec_step(&t->dec[i], cur, next);
        token_list *swap = cur;
        cur = next;
        next = swap;
    }
    tok_buf joined = {0}, result = {0};
    for (size_t i = 0; i < cur->n && rc == 0; i++) {
        if (i && t->n_dec == 0)
            tok_buf_append(&joined, " ", 1); /* HF joins with spaces when there is no decoder */
        tok_buf_append(&joined, cur->text.data + cur->off[i], cur->len[i]);
    }
    tok_utf8_append_lossy(&result, joined.data ? joined.data : "", joined.len);
    tok_buf_append(&result, "", 0);
    if (joined.oom || result.oom)
        rc = -1;
    tok_buf_free(&joined);
    tl_free(&a);
    tl_free(&b);
    if (rc != 0) {
        tok_buf_free(&result);
        return whet_fail(e, "%s: out of memory while decoding %zu ids", t->name, n_ids);
    }
    *text = result.data;
    *len = result.len;
    return 0;
}

/* ---- lookups ---- */

int32_t whet_tokenizer_token_to_id(const whet_tokenizer *t, const char *token, size_t len)
{
    return tok_vocab_find(&t->bpe.vocab, token, len);
}

const char *whet_tokenizer_id_to_token(const whet_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || (size_t)id >= t->bpe.vocab.n || !t->bpe.vocab.text[id])
        return NULL;
    *len = t->bpe.vocab.len[id];
    return t->bpe.vocab.text[id];
}

const char *whet_tokenizer_token_bytes(const whet_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || (size_t)id >= t->bpe.vocab.n || !t->bpe.vocab.text[id])
        return NULL;
    *len = t->token_bytes_len[id];
    return t->token_bytes.data + t->token_bytes_off[id];
}

size_t whet_tokenizer_vocab_size(const whet_tokenizer *t)
{
    return t->bpe.vocab.n;
}

int32_t whet_tokenizer_bos_id(const whet_tokenizer *t)
{
    return t->bos_id;
}

int32_t whet_tokenizer_eos_id(const whet_tokenizer *t)
{
    return t->eos_id;
}

int whet_tokenizer_is_special(const whet_tokenizer *t, int32_t id)
{
    return id >= 0 && (size_t)id < t->bpe.vocab.n && t->bpe.vocab.special[id];
}

double whet_tokenizer_bench(const whet_tokenizer *t, const char *text, size_t len, double min_seconds,
                            size_t *n_tokens, whet_err *e)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double elapsed = 0, bytes = 0;
    do {
        int32_t *ids;
        size_t n;
        if (whet_tokenizer_encode(t, text, len, 0, &ids, &n, e) != 0)
            return -1;
        free(ids);
        if (n_tokens)
            *n_tokens = n;
        bytes += (double)len;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        elapsed = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    } while (elapsed < min_seconds);
    return elapsed > 0 ? bytes / elapsed / 1e6 : 0;
}

/* ---- building (shared with tokenizer_gguf.c) ---- */

whet_tokenizer *tok_new(const char *name)
{
    whet_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->name = dup_bytes(name, strlen(name));
    t->bos_id = t->eos_id = -1;
    t->bpe.unk_id = -1;
    for (int b = 0; b < 256; b++) {
        t->byte_cp[b] = tok_byte_to_cp((unsigned char)b);
        t->bpe.byte_ids[b] = -1;
    }
    if (!t->name) {
        whet_tokenizer_free(t);
        return NULL;
    }
    return t;
}

int tok_need_gpt2_regex(whet_tokenizer *t, whet_err *e)
{
    char why[256];
    if (t->gpt2_regex.code)
        return 0;
    if (tok_regex_compile(&t->gpt2_regex, tok_gpt2_regex, strlen(tok_gpt2_regex), 0, why, sizeof why) != 0)
        return whet_fail(e, "%s: GPT-2's regex: %s", t->name, why);
    return 0;
}

static int cmp_added_order(const void *pa, const void *pb, void *ctx)
{
    const whet_tokenizer *t = ctx;
    const tok_added_token *a = &t->added[*(const size_t *)pa], *b = &t->added[*(const size_t *)pb];
    unsigned char fa = (unsigned char)a->content[0], fb = (unsigned char)b->content[0];
    if (fa != fb)
        return fa < fb ? -1 : 1;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1; /* longest first */
    return 0;
}

/* insertion sort (few tokens; qsort has no context argument in C11) */
static void sort_added(const whet_tokenizer *t, size_t *order, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        size_t v = order[i], j = i;
        while (j > 0 && cmp_added_order(&order[j - 1], &v, (void *)t) > 0) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
}

static int build_added_set(whet_tokenizer *t, tok_added_set *set, int normalized)
{
    set->order = malloc((t->n_added ? t->n_added : 1) * sizeof *set->order);
    if (!set->order)
        return -1;
    set->n = 0;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len && (normalized ? t->added[i].normalized : !t->added[i].normalized))
            set->order[set->n++] = i;
    sort_added(t, set->order, set->n);
    size_t k = 0;
    for (unsigned b = 0; b <= 256; b++) {
        while (k < set->n && (unsigned char)t->added[set->order[k]].content[0] < b)
            k++;
        set->first[b] = k;
    }
    return 0;
}

/* Normalizes the contents of normalized added tokens (HF matches them in
 * normalized text) and builds both match sets and the token bytes. */
int tok_finish(whet_tokenizer *t, whet_err *e)
{
    for (size_t i = 0; i < t->n_added; i++) {
        tok_added_token *a = &t->added[i];
        if (!a->normalized || t->n_norm == 0)
            continue;
        /* run the normalizer over the content alone */
        tok_buf cur = {0}, tmp = {0};
        tok_buf_append(&cur, a->content, a->len);
        for (size_t k = 0; k < t->n_norm; k++) {
            const tok_norm_step *n = &t->norm[k];
            tmp.len = 0;
            if (n->kind == TOK_NORM_NFC)
                tok_nfc_append(&tmp, cur.data, cur.len);
            else if (n->kind == TOK_NORM_PREPEND) {
                tok_buf_append(&tmp, n->a, n->a_len);
                tok_buf_append(&tmp, cur.data, cur.len);
            } else
                replace_all(&tmp, cur.data, cur.len, n->a, n->a_len, n->b, n->b_len);
            tok_buf_append(&tmp, "", 0);
            tok_buf swap = cur;
            cur = tmp;
            tmp = swap;
        }
        tok_buf_free(&tmp);
        if (cur.oom) {
            tok_buf_free(&cur);
            return whet_fail(e, "%s: out of memory", t->name);
        }
        free(a->content);
        a->content = cur.data;
        a->len = cur.len;
    }
    tok_bpe_prepare(&t->bpe);
    for (size_t i = 0; i < t->n_added && !t->word_char_regex.code; i++) {
        if (!t->added[i].single_word)
            continue;
        /* binary properties need PCRE2 10.40; before it, letters stand in
         * for Alphabetic (which adds only some marks and letter numbers) */
        static const char *const word_char[2] = {"^[\\p{Alphabetic}\\p{M}\\p{Pc}\\p{Nd}\\x{200C}\\x{200D}]",
                                                 "^[\\p{L}\\p{Nl}\\p{M}\\p{Pc}\\p{Nd}\\x{200C}\\x{200D}]"};
        char why[256];
        if (tok_regex_compile(&t->word_char_regex, word_char[0], strlen(word_char[0]), 0, why, sizeof why) != 0 &&
            tok_regex_compile(&t->word_char_regex, word_char[1], strlen(word_char[1]), 0, why, sizeof why) != 0)
            return whet_fail(e, "%s: word-character regex: %s", t->name, why);
    }
    if (build_added_set(t, &t->raw_set, 0) || build_added_set(t, &t->normalized_set, 1))
        return whet_fail(e, "%s: out of memory", t->name);

    /* what each id decodes to on its own, for streaming */
    size_t n = t->bpe.vocab.n;
    t->token_bytes_off = malloc((n ? n : 1) * sizeof *t->token_bytes_off);
    t->token_bytes_len = malloc((n ? n : 1) * sizeof *t->token_bytes_len);
    if (!t->token_bytes_off || !t->token_bytes_len)
        return whet_fail(e, "%s: out of memory", t->name);
    tok_buf tmp = {0};
    for (size_t id = 0; id < n; id++) {
        t->token_bytes_off[id] = t->token_bytes.len;
        t->token_bytes_len[id] = 0;
        const char *s = t->bpe.vocab.text[id];
        if (!s)
            continue;
        tmp.len = 0;
        tok_buf_append(&tmp, s, t->bpe.vocab.len[id]);
        for (size_t k = 0; k < t->n_dec; k++) {
            const tok_dec_step *d = &t->dec[k];
            tok_buf out = {0};
            if (d->kind == TOK_DEC_BYTE_LEVEL)
                tok_byte_level_unmap(&out, tmp.data, tmp.len);
            else if (d->kind == TOK_DEC_REPLACE)
                replace_all(&out, tmp.data, tmp.len, d->a, d->a_len, d->b, d->b_len);
            else if (d->kind == TOK_DEC_METASPACE)
                replace_all(&out, tmp.data, tmp.len, d->a, d->a_len, " ", 1);
            else if (d->kind == TOK_DEC_BYTE_FALLBACK && tok_byte_token_value(tmp.data, tmp.len) >= 0) {
                unsigned char byte = (unsigned char)tok_byte_token_value(tmp.data, tmp.len);
                tok_buf_append(&out, &byte, 1);
            } else
                tok_buf_append(&out, tmp.data, tmp.len);
            tok_buf_append(&out, "", 0);
            tok_buf_free(&tmp);
            tmp = out;
        }
        t->token_bytes_len[id] = tmp.len;
        tok_buf_append(&t->token_bytes, tmp.data, tmp.len);
    }
    tok_buf_append(&t->token_bytes, "", 0);
    int oom = tmp.oom || t->token_bytes.oom;
    tok_buf_free(&tmp);
    if (oom)
        return whet_fail(e, "%s: out of memory", t->name);
    return 0;
}

void whet_tokenizer_free(whet_tokenizer *t)
{
    if (!t)
        return;
    tok_vocab_free(&t->bpe.vocab);
    tok_merges_free(&t->bpe.merges);
    for (size_t i = 0; i < t->n_norm; i++) {
        free(t->norm[i].a);
        free(t->norm[i].b);
    }
    free(t->norm);
    for (size_t i = 0; i < t->n_pre; i++) {
        tok_regex_free(&t->pre[i].regex);
        free(t->pre[i].repl);
    }
    free(t->pre);
    for (size_t i = 0; i < t->n_dec; i++) {
        free(t->dec[i].a);
        free(t->dec[i].b);
    }
    free(t->dec);
    for (size_t i = 0; i < t->n_added; i++)
        free(t->added[i].content);
    free(t->added);
    free(t->raw_set.order);
    free(t->normalized_set.order);
    for (size_t i = 0; i < t->n_template; i++)
        free(t->template_items[i].ids);
    free(t->template_items);
    tok_regex_free(&t->gpt2_regex);
    tok_regex_free(&t->word_char_regex);
    tok_buf_free(&t->token_bytes);
    free(t->token_bytes_off);
    free(t->token_bytes_len);
    free(t->name);
    free(t);
}

/* Step appenders (growing arrays by one: configurations are short). */
tok_norm_step *tok_add_norm(whet_tokenizer *t)
{
    tok_norm_step *grown = realloc(t->norm, (t->n_norm + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    t->norm = grown;
    memset(&grown[t->n_norm], 0, sizeof *grown);
    return &grown[t->n_norm++];
}

tok_pre_step *tok_add_pre(whet_tokenizer *t)
{
    tok_pre_step *grown = realloc(t->pre, (t->n_pre + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    t->pre = grown;
    memset(&grown[t->n_pre], 0, sizeof *grown);
    return &grown[t->n_pre++];
}

tok_dec_step *tok_add_dec(whet_tokenizer *t)
{
    tok_dec_step *grown = realloc(t->dec, (t->n_dec + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    t->dec = grown;
    memset(&grown[t->n_dec], 0, sizeof *grown);
    return &grown[t->n_dec++];
}

tok_added_token *tok_add_added(whet_tokenizer *t)
{
    tok_added_token *grown = realloc(t->added, (t->n_added + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    t->added = grown;
    memset(&grown[t->n_added], 0, sizeof *grown);
    return &grown[t->n_added++];
}

tok_template_item *tok_add_template_item(whet_tokenizer *t)
{
    tok_template_item *grown = realloc(t->template_items, (t->n_template + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    t->template_items = grown;
    memset(&grown[t->n_template], 0, sizeof *grown);
    return &grown[t->n_template++];
}

char *tok_strdup(const char *s, size_t len)
{
    return dup_bytes(s, len);
}

int tok_path_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int tok_path_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int whet_tokenizer_encode_prompt(const whet_tokenizer *t, const char *text, size_t len, int bos, int32_t **ids, size_t *n)
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
