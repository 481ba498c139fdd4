/* Loading a tokenizer from GGUF metadata (formats.md §2, tokenizer keys): the
 * same BPE machinery, configured as llama.cpp's vocab loader (VOC) reads the
 * keys, with HF's pre-tokenizer for each tokenizer.ggml.pre. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/gguf.h"
#include "tok/tok_pipeline.h"
#include "tok/tokenizer.h"

/* token_type values */
enum { GGUF_TOKEN_NORMAL = 1, GGUF_TOKEN_UNKNOWN = 2, GGUF_TOKEN_CONTROL = 3, GGUF_TOKEN_USER_DEFINED = 4,
       GGUF_TOKEN_UNUSED = 5, GGUF_TOKEN_BYTE = 6 };

static const char llama3_regex[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                   "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char qwen2_regex[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                                  "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char digit_regex[] = "\\p{N}";

static const char metaspace[] = "\xE2\x96\x81"; /* ▁ U+2581 */

/* Optional keys: absent is fine, a wrong type is an error. */
static int optional_u32(const whet_gguf *g, const char *key, int32_t *out, whet_err *e)
{
    uint32_t v;
    if (!whet_gguf_find(g, key))
        return 0;
    if (whet_gguf_get_u32(g, key, &v, e) != 0)
        return -1;
    *out = v > INT32_MAX ? -1 : (int32_t)v;
    return 0;
}

static int optional_bool(const whet_gguf *g, const char *key, int *out, whet_err *e)
{
    if (!whet_gguf_find(g, key))
        return 0;
    return whet_gguf_get_bool(g, key, out, e);
}

static int add_split(whet_tokenizer *t, const char *regex, whet_err *e)
{
    tok_pre_step *s = tok_add_pre(t);
    char why[256];
    if (!s)
        return whet_fail(e, "%s: out of memory", t->name);
    s->kind = TOK_PRE_SPLIT;
    s->behavior = TOK_SPLIT_ISOLATED;
    if (tok_regex_compile(&s->regex, regex, strlen(regex), 0, why, sizeof why) != 0)
        return whet_fail(e, "%s: built-in regex: %s", t->name, why);
    return 0;
}

static int add_byte_level(whet_tokenizer *t, int use_regex, whet_err *e)
{
    tok_pre_step *s = tok_add_pre(t);
    tok_dec_step *d = s ? tok_add_dec(t) : NULL;
    if (!d)
        return whet_fail(e, "%s: out of memory", t->name);
    s->kind = TOK_PRE_BYTE_LEVEL;
    s->use_regex = use_regex;
    d->kind = TOK_DEC_BYTE_LEVEL;
    return use_regex ? tok_need_gpt2_regex(t, e) : 0;
}

static int add_norm(whet_tokenizer *t, tok_norm_kind kind, const char *a, const char *b, whet_err *e)
{
    tok_norm_step *n = tok_add_norm(t);
    if (!n || (a && !(n->a = tok_strdup(a, strlen(a)))) || (b && !(n->b = tok_strdup(b, strlen(b)))))
        return whet_fail(e, "%s: out of memory", t->name);
    n->kind = kind;
    n->a_len = a ? strlen(a) : 0;
    n->b_len = b ? strlen(b) : 0;
    return 0;
}

static int add_dec(whet_tokenizer *t, tok_dec_kind kind, const char *a, const char *b, int start, whet_err *e)
{
    tok_dec_step *d = tok_add_dec(t);
    if (!d || (a && !(d->a = tok_strdup(a, strlen(a)))) || (b && !(d->b = tok_strdup(b, strlen(b)))))
        return whet_fail(e, "%s: out of memory", t->name);
    d->kind = kind;
    d->a_len = a ? strlen(a) : 0;
    d->b_len = b ? strlen(b) : 0;
    d->start = start;
    return 0;
}

typedef struct score_rank {
    float score;
    uint32_t id;
} score_rank;

static int cmp_score_desc(const void *pa, const void *pb)
{
    const score_rank *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* SentencePiece merges from scores: every split of a token into two tokens
 * is a merge, ranked by the merged token's score (highest first; equal scores
 * share a rank, so the leftmost pair wins, as in llama.cpp). */
static int merges_from_scores(whet_tokenizer *t, const float *scores, const int32_t *types, whet_err *e)
{
    const tok_vocab *v = &t->bpe.vocab;
    score_rank *order = malloc((v->n ? v->n : 1) * sizeof *order);
    uint32_t *rank_of = malloc((v->n ? v->n : 1) * sizeof *rank_of);
    if (!order || !rank_of || tok_merges_init(&t->bpe.merges, v->n) != 0) {
        free(order);
        free(rank_of);
        return whet_fail(e, "%s: out of memory", t->name);
    }
    for (size_t i = 0; i < v->n; i++)
        order[i] = (score_rank){scores[i], (uint32_t)i};
    qsort(order, v->n, sizeof *order, cmp_score_desc);
    uint32_t rank = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (i && order[i].score != order[i - 1].score)
            rank++;
        rank_of[order[i].id] = rank;
    }
    int rc = 0;
    for (size_t id = 0; id < v->n && rc == 0; id++) {
        int32_t type = types ? types[id] : GGUF_TOKEN_NORMAL;
        if (type == GGUF_TOKEN_CONTROL || type == GGUF_TOKEN_BYTE || type == GGUF_TOKEN_UNUSED || !v->text[id])
            continue;
        const char *s = v->text[id];
        for (size_t k = 1; k < v->len[id]; k++) {
            if (((unsigned char)s[k] & 0xC0) == 0x80)
                continue; /* split between characters only */
            int32_t left = tok_vocab_find(v, s, k), right = tok_vocab_find(v, s + k, v->len[id] - k);
            if (left >= 0 && right >= 0 &&
                tok_merges_put(&t->bpe.merges, (uint32_t)left, (uint32_t)right, rank_of[id], (uint32_t)id) != 0) {
                rc = whet_fail(e, "%s: out of memory", t->name);
                break;
            }
        }
    }
    free(order);
    free(rank_of);
    return rc;
}

static int gguf_merges(whet_tokenizer *t, const whet_gguf *g, whet_err *e)
{
    const whet_gguf_str *merges;
    uint64_t n;
    if (whet_gguf_get_string_array(g, "tokenizer.ggml.merges", &merges, &n, e) != 0)
        return -1;
    if (tok_merges_init(&t->bpe.merges, (size_t)n) != 0)
        return whet_fail(e, "%s: out of memory", t->name);
    const whet_gguf_kv *kv = whet_gguf_find(g, "tokenizer.ggml.merges");
    tok_buf joined = {0};
    for (uint64_t i = 0; i < n; i++) {
        const char *s = merges[i].data;
        size_t len = (size_t)merges[i].len;
        const char *space = memchr(s, ' ', len);
        if (!space || memchr(space + 1, ' ', len - (size_t)(space + 1 - s))) {
            tok_buf_free(&joined);
            return whet_fail(e, "%s: byte %llu: key 'tokenizer.ggml.merges': item %llu: expected \"left right\" with one space, found \"%.*s\"",
                             g->name, (unsigned long long)kv->key_offset, (unsigned long long)i, len > 60 ? 60 : (int)len, s);
        }
        size_t a_len = (size_t)(space - s);
        joined.len = 0;
        tok_buf_append(&joined, s, a_len);
        tok_buf_append(&joined, space + 1, len - a_len - 1);
        int32_t left = tok_vocab_find(&t->bpe.vocab, s, a_len);
        int32_t right = tok_vocab_find(&t->bpe.vocab, space + 1, len - a_len - 1);
        int32_t merged = joined.oom ? -1 : tok_vocab_find(&t->bpe.vocab, joined.data, joined.len);
        if (left < 0 || right < 0 || merged < 0) {
            tok_buf_free(&joined);
            return whet_fail(e, "%s: byte %llu: key 'tokenizer.ggml.merges': item %llu: expected two tokens whose concatenation is a token, found \"%.*s\"",
                             g->name, (unsigned long long)kv->key_offset, (unsigned long long)i, len > 60 ? 60 : (int)len, s);
        }
        if (tok_merges_put(&t->bpe.merges, (uint32_t)left, (uint32_t)right, (uint32_t)i, (uint32_t)merged) != 0) {
            tok_buf_free(&joined);
            return whet_fail(e, "%s: out of memory", t->name);
        }
    }
    tok_buf_free(&joined);
    return 0;
}

whet_tokenizer *whet_tokenizer_from_gguf(const whet_gguf *g, whet_err *e)
{
    const whet_gguf_str *model, *tokens;
    uint64_t n_tokens;
    if (whet_gguf_get_string(g, "tokenizer.ggml.model", &model, e) != 0 ||
        whet_gguf_get_string_array(g, "tokenizer.ggml.tokens", &tokens, &n_tokens, e) != 0)
        return NULL;
    int is_bpe = strcmp(model->data, "gpt2") == 0, is_spm = strcmp(model->data, "llama") == 0;
    if (!is_bpe && !is_spm) {
        whet_fail(e, "%s: key 'tokenizer.ggml.model': expected \"gpt2\" (byte-level BPE) or \"llama\" "
                     "(SentencePiece-style BPE), found \"%.*s\" (other tokenizer models are not supported)",
                  g->name, model->len > 60 ? 60 : (int)model->len, model->data);
        return NULL;
    }
    if (n_tokens == 0 || n_tokens > INT32_MAX) {
        whet_fail(e, "%s: key 'tokenizer.ggml.tokens': expected 1 to %d tokens, found %llu", g->name, INT32_MAX,
                  (unsigned long long)n_tokens);
        return NULL;
    }
    const int32_t *types = NULL;
    const float *scores = NULL;
    uint64_t n;
    if (whet_gguf_find(g, "tokenizer.ggml.token_type")) {
        if (whet_gguf_get_i32_array(g, "tokenizer.ggml.token_type", &types, &n, e) != 0)
            return NULL;
        if (n != n_tokens) {
            whet_fail(e, "%s: key 'tokenizer.ggml.token_type': expected %llu entries (one per token), found %llu",
                      g->name, (unsigned long long)n_tokens, (unsigned long long)n);
            return NULL;
        }
    }
    if (is_spm) {
        if (whet_gguf_get_f32_array(g, "tokenizer.ggml.scores", &scores, &n, e) != 0)
            return NULL;
        if (n != n_tokens) {
            whet_fail(e, "%s: key 'tokenizer.ggml.scores': expected %llu entries (one per token), found %llu",
                      g->name, (unsigned long long)n_tokens, (unsigned long long)n);
            return NULL;
        }
    }

    whet_tokenizer *t = tok_new(g->name);
    if (!t) {
        whet_fail(e, "%s: out of memory", g->name);
        return NULL;
    }
    if (tok_vocab_init(&t->bpe.vocab, (size_t)n_tokens) != 0) {
        whet_fail(e, "%s: out of memory", g->name);
        goto fail;
    }
    for (uint64_t i = 0; i < n_tokens; i++) {
        if (tok_vocab_set(&t->bpe.vocab, (uint32_t)i, tokens[i].data, (size_t)tokens[i].len) != 0) {
            whet_fail(e, "%s: out of memory", g->name);
            goto fail;
        }
        int32_t type = types ? types[i] : GGUF_TOKEN_NORMAL;
        if (type == GGUF_TOKEN_CONTROL || type == GGUF_TOKEN_USER_DEFINED) {
            tok_added_token *a = tok_add_added(t);
            if (!a || !(a->content = tok_strdup(tokens[i].data, (size_t)tokens[i].len))) {
                whet_fail(e, "%s: out of memory", g->name);
                goto fail;
            }
            a->len = (size_t)tokens[i].len;
            a->id = (int32_t)i;
            a->special = type == GGUF_TOKEN_CONTROL;
            t->bpe.vocab.special[i] = (uint8_t)a->special;
        }
        if (type == GGUF_TOKEN_UNKNOWN && t->bpe.unk_id < 0)
            t->bpe.unk_id = (int32_t)i;
    }
    if (tok_vocab_freeze(&t->bpe.vocab) != 0) {
        whet_fail(e, "%s: out of memory", g->name);
        goto fail;
    }

    int add_bos = is_spm, add_eos = 0, add_space_prefix = 1;
    if (is_spm) {
        t->bos_id = 1;
        t->eos_id = 2;
        if (t->bpe.unk_id < 0)
            t->bpe.unk_id = 0;
    }
    if (optional_u32(g, "tokenizer.ggml.bos_token_id", &t->bos_id, e) ||
        optional_u32(g, "tokenizer.ggml.eos_token_id", &t->eos_id, e) ||
        optional_u32(g, "tokenizer.ggml.unknown_token_id", &t->bpe.unk_id, e))
        goto fail;
    if (t->bos_id >= (int32_t)n_tokens || t->eos_id >= (int32_t)n_tokens || t->bpe.unk_id >= (int32_t)n_tokens) {
        whet_fail(e, "%s: key 'tokenizer.ggml.bos_token_id' / 'eos_token_id' / 'unknown_token_id': expected an id "
                     "below the %llu tokens", g->name, (unsigned long long)n_tokens);
        goto fail;
    }

    if (is_bpe) {
        const whet_gguf_str *pre = NULL;
        if (whet_gguf_find(g, "tokenizer.ggml.pre") && whet_gguf_get_string(g, "tokenizer.ggml.pre", &pre, e) != 0)
            goto fail;
        const char *p = pre ? pre->data : "default";
        if (strcmp(p, "default") == 0 || strcmp(p, "gpt-2") == 0 || strcmp(p, "gpt2") == 0) {
            if (add_byte_level(t, 1, e))
                goto fail;
        } else if (strcmp(p, "llama-bpe") == 0 || strcmp(p, "llama3") == 0 || strcmp(p, "llama-v3") == 0) {
            if (add_split(t, llama3_regex, e) || add_byte_level(t, 0, e))
                goto fail;
            t->bpe.ignore_merges = 1;
            add_bos = 1;
        } else if (strcmp(p, "qwen2") == 0) {
            if (add_norm(t, TOK_NORM_NFC, NULL, NULL, e) || add_split(t, qwen2_regex, e) || add_byte_level(t, 0, e))
                goto fail;
        } else if (strcmp(p, "smollm") == 0) {
            if (add_split(t, digit_regex, e) || add_byte_level(t, 1, e))
                goto fail;
        } else {
            whet_fail(e, "%s: key 'tokenizer.ggml.pre': expected default, gpt-2, llama-bpe, qwen2 or smollm, found "
                         "\"%.*s\" (other pre-tokenizers are not supported)",
                      g->name, pre->len > 60 ? 60 : (int)pre->len, pre->data);
            goto fail;
        }
        if (gguf_merges(t, g, e) != 0)
            goto fail;
    } else {
        if (optional_bool(g, "tokenizer.ggml.add_space_prefix", &add_space_prefix, e))
            goto fail;
        t->bpe.byte_fallback = 1;
        t->bpe.fuse_unk = 1;
        for (int b = 0; b < 256; b++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            t->bpe.byte_ids[b] = tok_vocab_find(&t->bpe.vocab, name, 6);
        }
        if ((add_space_prefix && add_norm(t, TOK_NORM_PREPEND, metaspace, NULL, e)) ||
            add_norm(t, TOK_NORM_REPLACE, " ", metaspace, e) || add_dec(t, TOK_DEC_REPLACE, metaspace, " ", 0, e) ||
            add_dec(t, TOK_DEC_BYTE_FALLBACK, NULL, NULL, 0, e) || add_dec(t, TOK_DEC_FUSE, NULL, NULL, 0, e) ||
            (add_space_prefix && add_dec(t, TOK_DEC_STRIP, " ", NULL, 1, e)))
            goto fail;
        if (merges_from_scores(t, scores, types, e) != 0)
            goto fail;
    }
    if (optional_bool(g, "tokenizer.ggml.add_bos_token", &add_bos, e) ||
        optional_bool(g, "tokenizer.ggml.add_eos_token", &add_eos, e))
        goto fail;
    if ((add_bos && t->bos_id < 0) || (add_eos && t->eos_id < 0)) {
        whet_fail(e, "%s: key 'tokenizer.ggml.%s_token_id': expected one, since the tokenizer adds it", g->name,
                  add_bos && t->bos_id < 0 ? "bos" : "eos");
        goto fail;
    }
    int32_t parts[3] = {add_bos ? t->bos_id : -1, -2, add_eos ? t->eos_id : -1};
    for (int i = 0; i < 3; i++) {
        if (parts[i] == -1)
            continue;
        tok_template_item *ti = tok_add_template_item(t);
        if (!ti || (parts[i] >= 0 && !(ti->ids = malloc(sizeof *ti->ids)))) {
            whet_fail(e, "%s: out of memory", g->name);
            goto fail;
        }
        if (parts[i] == -2) {
            ti->is_sequence = 1;
        } else {
            ti->ids[0] = parts[i];
            ti->n_ids = 1;
        }
    }
    if (tok_finish(t, e) != 0)
        goto fail;
    return t;
fail:
    whet_tokenizer_free(t);
    return NULL;
}
