/* One example to tokens and a loss mask.
 *
 * The example is rendered to text (the chat template for chat and, when the
 * model has one, prompt/completion; else the text itself, or prompt then
 * completion), with the byte ranges that carry loss: the template's assistant
 * spans ({content}{end-of-turn}; see chat_template.h) of the messages without
 * "weight": 0, the completion, or everything.
 *
 * Tokens: the whole rendered text is encoded once, exactly as the prompt is
 * encoded at generation time (no special tokens added, a BOS in front when the
 * tokenizer adds one on its own and the template did not write it), so the
 * model trains on the token sequence it will see. The byte ranges are mapped
 * to tokens by also encoding the pieces between range boundaries: when the
 * pieces' tokens, concatenated, are the whole text's tokens (nearly always:
 * spans end at a special token, and start after a template marker that the
 * pre-tokenizer splits at), the boundaries fall between tokens exactly.
 * Otherwise (a token of the whole text crosses a boundary, or a tokenizer
 * that prepends "▁" to each piece) each boundary b is placed by encoding
 * text[0..b) and taking how many leading tokens it shares with the whole
 * text; a token that crosses a boundary carries loss (it holds trained
 * bytes). */
#include "data/data_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct byte_range {
    size_t start, end;
} byte_range;

/* The tokens a tokenizer puts before a text on its own (a BOS): encoding "a"
 * with and without special tokens shows them (as whet_tokenizer_encode_prompt does). */
static int bos_prefix(const whet_tokenizer *t, int32_t *prefix, size_t cap, size_t *n, whet_err *e)
{
    int32_t *plain = NULL, *special = NULL;
    size_t n_plain = 0, n_special = 0;
    *n = 0;
    if (whet_tokenizer_encode(t, "a", 1, 0, &plain, &n_plain, e) != 0 ||
        whet_tokenizer_encode(t, "a", 1, 1, &special, &n_special, e) != 0) {
        free(plain);
        free(special);
        return -1;
    }
    if (n_plain == 0) {
        if (n_special > 0 && special[0] == whet_tokenizer_bos_id(t))
            *n = 1;
    } else {
        for (size_t p = 0; p + n_plain <= n_special; p++)
            if (memcmp(special + p, plain, n_plain * sizeof *plain) == 0) {
                *n = p;
                break;
            }
    }
    if (*n > cap)
        *n = cap;
    if (*n)
        memcpy(prefix, special, *n * sizeof *prefix);
    free(plain);
    free(special);
    return 0;
}

static void copy_msg(data_problem *p, const char *msg)
{
    size_t n = strnlen(msg, sizeof p->msg - 1);
    memcpy(p->msg, msg, n);
    p->msg[n] = 0;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* Token index of each byte boundary (sorted, distinct, inside (0, len)):
 * at[b] tokens of the whole text lie before it, and crosses[b] says whether
 * the next token straddles it. */
static int place_boundaries(const whet_tokenizer *t, const char *text, size_t len, const int32_t *whole, size_t n_whole,
                            const size_t *bounds, size_t n_bounds, size_t *at, uint8_t *crosses, whet_err *e)
{
    /* first: the pieces between boundaries */
    int32_t *ids = NULL;
    size_t n_ids = 0, pos = 0, from = 0;
    int aligned = 1;
    for (size_t b = 0; b <= n_bounds && aligned; b++) {
        size_t to = b < n_bounds ? bounds[b] : len;
        if (whet_tokenizer_encode(t, text + from, to - from, 0, &ids, &n_ids, e) != 0)
            return -1;
        if (pos + n_ids > n_whole || (n_ids && memcmp(whole + pos, ids, n_ids * sizeof *ids) != 0))
            aligned = 0;
        free(ids);
        ids = NULL;
        pos += n_ids;
        if (b < n_bounds) {
            at[b] = pos;
            crosses[b] = 0;
        }
        from = to;
    }
    if (aligned && pos == n_whole)
        return 0;
    /* the shared prefix of text[0..b)'s tokens and the whole text's */
    for (size_t b = 0; b < n_bounds; b++) {
        if (whet_tokenizer_encode(t, text, bounds[b], 0, &ids, &n_ids, e) != 0)
            return -1;
        size_t k = 0;
        while (k < n_ids && k < n_whole && ids[k] == whole[k])
            k++;
        at[b] = k;
        crosses[b] = k < n_ids && k < n_whole;
        free(ids);
        ids = NULL;
    }
    return 0;
}

/* The example's tokens (prefix, the whole text, EOS) and their loss: the
 * tokens of the byte ranges, and the EOS. */
static int tokenize_ranges(const whet_data_options *opt, const char *text, size_t len, const byte_range *ranges,
                           size_t n_ranges, int add_prefix, int add_eos, whet_example *ex, data_problem *p)
{
    whet_err e = {{0}};
    int32_t prefix[8];
    size_t n_prefix = 0;
    int32_t *whole = NULL;
    size_t n_whole = 0;
    size_t *bounds = NULL, *at = NULL;
    uint8_t *crosses = NULL;
    int rc = -1;
    if ((add_prefix && bos_prefix(opt->tok, prefix, 8, &n_prefix, &e) != 0) ||
        whet_tokenizer_encode(opt->tok, text, len, 0, &whole, &n_whole, &e) != 0)
        goto done;
    /* boundaries strictly inside the text, sorted and distinct */
    bounds = malloc((2 * n_ranges + 1) * sizeof *bounds);
    at = malloc((2 * n_ranges + 1) * sizeof *at);
    crosses = malloc(2 * n_ranges + 1);
    if (!bounds || !at || !crosses) {
        whet_fail(&e, "out of memory");
        goto done;
    }
    size_t n_bounds = 0;
    for (size_t r = 0; r < n_ranges; r++) {
        if (ranges[r].start > 0 && ranges[r].start < len)
            bounds[n_bounds++] = ranges[r].start;
        if (ranges[r].end > 0 && ranges[r].end < len)
            bounds[n_bounds++] = ranges[r].end;
    }
    qsort(bounds, n_bounds, sizeof *bounds, cmp_size);
    size_t distinct = 0;
    for (size_t b = 0; b < n_bounds; b++)
        if (distinct == 0 || bounds[distinct - 1] != bounds[b])
            bounds[distinct++] = bounds[b];
    n_bounds = distinct;
    if (place_boundaries(opt->tok, text, len, whole, n_whole, bounds, n_bounds, at, crosses, &e) != 0)
        goto done;

    int32_t eos = add_eos ? whet_tokenizer_eos_id(opt->tok) : -1;
    size_t n = n_prefix + n_whole + (eos >= 0);
    ex->ids = malloc((n ? n : 1) * sizeof *ex->ids);
    ex->loss = calloc(n ? n : 1, 1);
    if (!ex->ids || !ex->loss) {
        whet_fail(&e, "out of memory for %zu tokens", n);
        goto done;
    }
    ex->n = n;
    if (n_prefix)
        memcpy(ex->ids, prefix, n_prefix * sizeof *prefix);
    if (n_whole)
        memcpy(ex->ids + n_prefix, whole, n_whole * sizeof *whole);
    if (eos >= 0) {
        ex->ids[n - 1] = eos;
        ex->loss[n - 1] = 1;
    }
    /* range [s, e) trains tokens [at(s), at(e)), plus the token crossing e,
     * which holds trained bytes (one crossing s starts at at(s) already) */
    for (size_t r = 0; r < n_ranges; r++) {
        size_t from = 0, to = n_whole;
        for (size_t b = 0; b < n_bounds; b++) {
            if (bounds[b] == ranges[r].start)
                from = at[b];
            if (bounds[b] == ranges[r].end)
                to = at[b] + crosses[b];
        }
        if (ranges[r].start >= len)
            from = n_whole;
        for (size_t k = from; k < to && k < n_whole; k++)
            ex->loss[n_prefix + k] = 1;
    }
    if (opt->train_on_prompt)
        memset(ex->loss, 1, n);
    rc = 0;
done:
    if (rc != 0) {
        p->cls = "tokenizer-error";
        p->column = 1;
        copy_msg(p, e.msg);
        whet_example_free(ex);
    }
    free(whole);
    free(bounds);
    free(at);
    free(crosses);
    return rc;
}

int data_tokenize(const whet_data_options *opt, const data_parsed *d, whet_example *ex, char **text_out,
                  size_t *text_len_out, data_problem *p)
{
    memset(ex, 0, sizeof *ex);
    if (text_out)
        *text_out = NULL;
    whet_chat_message pair[2];
    const whet_chat_message *msgs = d->messages;
    size_t n_msgs = d->n_messages;
    const uint8_t *trained = d->trained;
    static const uint8_t pair_trained[2] = {0, 1};
    if (d->format == WHET_DATA_PROMPT_COMPLETION && opt->tmpl) {
        pair[0] = (whet_chat_message){"user", d->prompt, d->prompt_len};
        pair[1] = (whet_chat_message){"assistant", d->completion, d->completion_len};
        msgs = pair;
        n_msgs = 2;
        trained = pair_trained;
    }
    char *owned = NULL;
    const char *text;
    size_t len;
    byte_range one, *ranges = &one;
    size_t n_ranges = 0;
    int add_prefix = 1, add_eos = 0;
    whet_chat_rendered r = {0};
    if (d->format == WHET_DATA_CHAT || (d->format == WHET_DATA_PROMPT_COMPLETION && opt->tmpl)) {
        if (!opt->tmpl) {
            p->cls = "no-chat-template";
            p->column = 1;
            snprintf(p->msg, sizeof p->msg, "chat examples need a chat template and the model has none "
                                            "(give one with --chat-template NAME)");
            return -1;
        }
        whet_err e = {{0}};
        whet_chat_options copt = {0};
        if (whet_chat_render(opt->tmpl, msgs, n_msgs, &copt, &r, &e) != 0) {
            p->cls = "template-error";
            p->column = 1;
            copy_msg(p, e.msg);
            return -1;
        }
        text = r.text;
        len = r.len;
        add_prefix = !r.starts_with_bos;
        ranges = malloc((r.n_spans ? r.n_spans : 1) * sizeof *ranges);
        if (!ranges) {
            whet_chat_rendered_free(&r);
            p->cls = "out-of-memory";
            snprintf(p->msg, sizeof p->msg, "out of memory");
            return -1;
        }
        for (size_t s = 0; s < r.n_spans; s++)
            if (trained[r.spans[s].message])
                ranges[n_ranges++] = (byte_range){r.spans[s].start, r.spans[s].end};
    } else if (d->format == WHET_DATA_PROMPT_COMPLETION) {
        len = d->prompt_len + d->completion_len;
        owned = malloc(len + 1);
        if (!owned) {
            p->cls = "out-of-memory";
            snprintf(p->msg, sizeof p->msg, "out of memory");
            return -1;
        }
        memcpy(owned, d->prompt, d->prompt_len);
        memcpy(owned + d->prompt_len, d->completion, d->completion_len);
        owned[len] = 0;
        text = owned;
        one = (byte_range){d->prompt_len, len};
        n_ranges = 1;
        add_eos = opt->add_eos;
    } else {
        text = d->text;
        len = d->text_len;
        one = (byte_range){0, len};
        n_ranges = 1;
        add_eos = opt->add_eos;
    }
    int rc = tokenize_ranges(opt, text, len, ranges, n_ranges, add_prefix, add_eos, ex, p);
    if (rc == 0 && text_out) {
        *text_out = malloc(len + 1);
        if (!*text_out) {
            whet_example_free(ex);
            p->cls = "out-of-memory";
            snprintf(p->msg, sizeof p->msg, "out of memory");
            rc = -1;
        } else {
            memcpy(*text_out, text, len);
            (*text_out)[len] = 0;
            *text_len_out = len;
        }
    }
    if (ranges != &one)
        free(ranges);
    whet_chat_rendered_free(&r);
    free(owned);
    return rc;
}

void whet_example_free(whet_example *ex)
{
    if (!ex)
        return;
    free(ex->ids);
    free(ex->loss);
    memset(ex, 0, sizeof *ex);
}
