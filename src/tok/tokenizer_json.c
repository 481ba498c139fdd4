/* Loading tokenizer.json (+ tokenizer_config.json): HF tokenizers'
 * serialization (formats.md §4.1-4.6). Every refusal points at the value at
 * fault: "<file>: line L, column C (byte B): expected ..., found ...". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"
#include "tok/tok_pipeline.h"
#include "tok/tokenizer.h"

typedef struct loader {
    whet_tokenizer *t;
    const whet_json_doc *doc;
    whet_err *e;
} loader;

static int fail_at(loader *l, const whet_json *v, const char *expected)
{
    return whet_json_fail_at(l->e, l->doc, v, "%s", expected);
}

static int oom(loader *l)
{
    return whet_fail(l->e, "%s: out of memory", whet_json_doc_name(l->doc));
}

/* A string member (or NULL when absent / null if optional). */
static int get_string(loader *l, const whet_json *obj, const char *key, int required, const whet_json **out)
{
    const whet_json *v = whet_json_get(obj, key);
    *out = NULL;
    if (!v || v->type == WHET_JSON_NULL) {
        if (required)
            return v ? fail_at(l, v, "a string") : whet_json_fail_missing(l->e, l->doc, obj, key);
        return 0;
    }
    if (v->type != WHET_JSON_STRING) {
        char what[128];
        snprintf(what, sizeof what, "a string for \"%s\"", key);
        return fail_at(l, v, what);
    }
    *out = v;
    return 0;
}

/* A boolean member; absent or null gives `fallback`. */
static int get_bool(loader *l, const whet_json *obj, const char *key, int fallback, int *out)
{
    const whet_json *v = whet_json_get(obj, key);
    *out = fallback;
    if (!v || v->type == WHET_JSON_NULL)
        return 0;
    if (v->type != WHET_JSON_TRUE && v->type != WHET_JSON_FALSE) {
        char what[128];
        snprintf(what, sizeof what, "true or false for \"%s\"", key);
        return fail_at(l, v, what);
    }
    *out = v->type == WHET_JSON_TRUE;
    return 0;
}

static int get_type(loader *l, const whet_json *obj, const char **type)
{
    if (!obj || obj->type != WHET_JSON_OBJECT)
        return fail_at(l, obj, "an object");
    const whet_json *v;
    if (get_string(l, obj, "type", 1, &v) != 0)
        return -1;
    *type = v->u.string.chars;
    return 0;
}

/* Replace's / Split's pattern: {"String": s} or {"Regex": r}. */
static int get_pattern(loader *l, const whet_json *obj, const whet_json **pattern, int *is_regex)
{
    const whet_json *p = whet_json_get(obj, "pattern");
    if (!p)
        return whet_json_fail_missing(l->e, l->doc, obj, "pattern");
    if (p->type != WHET_JSON_OBJECT || whet_json_count(p) != 1)
        return fail_at(l, p, "{\"String\": ...} or {\"Regex\": ...}");
    const whet_json *s = whet_json_get(p, "String");
    *is_regex = s == NULL;
    if (!s)
        s = whet_json_get(p, "Regex");
    if (!s || s->type != WHET_JSON_STRING)
        return fail_at(l, p, "{\"String\": ...} or {\"Regex\": ...}");
    *pattern = s;
    return 0;
}

/* ---- model ---- */

static int load_model(loader *l, const whet_json *model, const whet_json *added)
{
    whet_tokenizer *t = l->t;
    const char *type = "BPE";
    if (!model || model->type != WHET_JSON_OBJECT)
        return model ? fail_at(l, model, "an object") : whet_json_fail_missing(l->e, l->doc, whet_json_root(l->doc), "model");
    const whet_json *type_v = whet_json_get(model, "type");
    if (type_v) {
        if (type_v->type != WHET_JSON_STRING)
            return fail_at(l, type_v, "a string");
        type = type_v->u.string.chars;
    }
    if (strcmp(type, "BPE") != 0)
        return fail_at(l, type_v,
                       "model type \"BPE\" (whet supports BPE models only: byte-level as GPT-2, Llama 3 and Qwen2 "
                       "use, and SentencePiece-style with byte fallback as Llama 2 uses; WordPiece, Unigram and "
                       "WordLevel are not supported)");

    const whet_json *v = whet_json_get(model, "dropout");
    if (v && v->type != WHET_JSON_NULL && !(v->type == WHET_JSON_NUMBER && v->u.number.value == 0))
        return fail_at(l, v, "dropout null or 0 (BPE dropout is a training-time option whet does not apply)");
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        v = whet_json_get(model, affixes[i]);
        if (v && v->type != WHET_JSON_NULL && !(v->type == WHET_JSON_STRING && v->u.string.len == 0)) {
            char what[128];
            snprintf(what, sizeof what, "%s null or \"\" (subword affixes are not supported)", affixes[i]);
            return fail_at(l, v, what);
        }
    }
    if (get_bool(l, model, "byte_fallback", 0, &t->bpe.byte_fallback) || get_bool(l, model, "fuse_unk", 0, &t->bpe.fuse_unk) ||
        get_bool(l, model, "ignore_merges", 0, &t->bpe.ignore_merges))
        return -1;

    const whet_json *vocab = whet_json_get(model, "vocab");
    if (!vocab)
        return whet_json_fail_missing(l->e, l->doc, model, "vocab");
    if (vocab->type != WHET_JSON_OBJECT)
        return fail_at(l, vocab, "an object of token: id");

    /* ids: the model's and the added tokens' */
    int64_t max_id = -1;
    for (size_t i = 0; i < vocab->u.object.count; i++) {
        int64_t id;
        if (whet_json_int64(l->doc, &vocab->u.object.members[i].value, 0, INT32_MAX - 1, &id, l->e) != 0)
            return -1;
        if (id > max_id)
            max_id = id;
    }
    size_t n_added = added ? whet_json_count(added) : 0;
    if (added && added->type != WHET_JSON_ARRAY)
        return fail_at(l, added, "an array of added tokens");
    for (size_t i = 0; i < n_added; i++) {
        const whet_json *a = whet_json_at(added, i), *idv;
        if (a->type != WHET_JSON_OBJECT)
            return fail_at(l, a, "an added token object");
        if (!(idv = whet_json_get(a, "id")))
            return whet_json_fail_missing(l->e, l->doc, a, "id");
        int64_t id;
        if (whet_json_int64(l->doc, idv, 0, INT32_MAX - 1, &id, l->e) != 0)
            return -1;
        if (id > max_id)
            max_id = id;
    }
    if (tok_vocab_init(&t->bpe.vocab, (size_t)(max_id + 1)) != 0)
        return oom(l);
    for (size_t i = 0; i < vocab->u.object.count; i++) {
        const whet_json_member *m = &vocab->u.object.members[i];
        uint32_t id = (uint32_t)m->value.u.number.integer;
        if (tok_vocab_set(&t->bpe.vocab, id, m->key, m->key_len) != 0)
            return whet_json_fail_at(l->e, l->doc, &m->value, "an id no other token has");
    }

    /* added tokens */
    for (size_t i = 0; i < n_added; i++) {
        const whet_json *a = whet_json_at(added, i), *content;
        if (get_string(l, a, "content", 1, &content) != 0)
            return -1;
        if (content->u.string.len == 0)
            return fail_at(l, content, "a non-empty token");
        tok_added_token *tok = tok_add_added(t);
        if (!tok || !(tok->content = tok_strdup(content->u.string.chars, content->u.string.len)))
            return oom(l);
        tok->len = content->u.string.len;
        tok->id = (int32_t)whet_json_get(a, "id")->u.number.integer;
        if (get_bool(l, a, "special", 0, &tok->special) || get_bool(l, a, "lstrip", 0, &tok->lstrip) ||
            get_bool(l, a, "rstrip", 0, &tok->rstrip) || get_bool(l, a, "single_word", 0, &tok->single_word) ||
            get_bool(l, a, "normalized", !tok->special, &tok->normalized))
            return -1;
        const tok_vocab *voc = &t->bpe.vocab;
        uint32_t id = (uint32_t)tok->id;
        if (voc->offsets[id] == SIZE_MAX) {
            if (tok_vocab_set(&t->bpe.vocab, id, tok->content, tok->len) != 0)
                return oom(l);
        } else if (voc->len[id] != tok->len ||
                   memcmp(voc->strings.data + voc->offsets[id], tok->content, tok->len) != 0) {
            return fail_at(l, whet_json_get(a, "id"), "the id of this token or an id the model's vocab leaves free");
        }
        if (tok->special)
            t->bpe.vocab.special[id] = 1;
    }
    if (tok_vocab_freeze(&t->bpe.vocab) != 0)
        return oom(l);

    const whet_json *unk;
    if (get_string(l, model, "unk_token", 0, &unk) != 0)
        return -1;
    if (unk) {
        t->bpe.unk_id = tok_vocab_find(&t->bpe.vocab, unk->u.string.chars, unk->u.string.len);
        if (t->bpe.unk_id < 0)
            return fail_at(l, unk, "an unk_token that is in the vocab");
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->bpe.byte_ids[b] = tok_vocab_find(&t->bpe.vocab, name, 6);
    }

    /* merges: "a b" or ["a", "b"]; the rank is the position in the list */
    const whet_json *merges = whet_json_get(model, "merges");
    size_t n_merges = merges ? whet_json_count(merges) : 0;
    if (merges && merges->type != WHET_JSON_ARRAY)
        return fail_at(l, merges, "an array of merges");
    if (tok_merges_init(&t->bpe.merges, n_merges) != 0)
        return oom(l);
    tok_buf joined = {0};
    for (size_t i = 0; i < n_merges; i++) {
        const whet_json *m = whet_json_at(merges, i);
        const char *a, *b;
        size_t a_len, b_len;
        if (m->type == WHET_JSON_STRING) {
            const char *space = memchr(m->u.string.chars, ' ', m->u.string.len);
            if (!space || memchr(space + 1, ' ', m->u.string.len - (size_t)(space + 1 - m->u.string.chars))) {
                tok_buf_free(&joined);
                return fail_at(l, m, "a merge \"left right\" with exactly one space");
            }
            a = m->u.string.chars;
            a_len = (size_t)(space - a);
            b = space + 1;
            b_len = m->u.string.len - a_len - 1;
        } else if (m->type == WHET_JSON_ARRAY && whet_json_count(m) == 2 &&
                   whet_json_at(m, 0)->type == WHET_JSON_STRING && whet_json_at(m, 1)->type == WHET_JSON_STRING) {
            a = whet_json_at(m, 0)->u.string.chars;
            a_len = whet_json_at(m, 0)->u.string.len;
            b = whet_json_at(m, 1)->u.string.chars;
            b_len = whet_json_at(m, 1)->u.string.len;
        } else {
            tok_buf_free(&joined);
            return fail_at(l, m, "a merge \"left right\" or [\"left\", \"right\"]");
        }
        joined.len = 0;
        tok_buf_append(&joined, a, a_len);
        tok_buf_append(&joined, b, b_len);
        if (joined.oom) {
            tok_buf_free(&joined);
            return oom(l);
        }
        int32_t left = tok_vocab_find(&t->bpe.vocab, a, a_len), right = tok_vocab_find(&t->bpe.vocab, b, b_len);
        int32_t merged = tok_vocab_find(&t->bpe.vocab, joined.data, joined.len);
        if (left < 0 || right < 0 || merged < 0) {
            tok_buf_free(&joined);
            return fail_at(l, m, "a merge whose two parts and their concatenation are in the vocab");
        }
        if (tok_merges_put(&t->bpe.merges, (uint32_t)left, (uint32_t)right, (uint32_t)i, (uint32_t)merged) != 0) {
            tok_buf_free(&joined);
            return oom(l);
        }
    }
    tok_buf_free(&joined);
    return 0;
}

/* A "Sequence" step: load each item of node[key] with load_item, in order. */
static int load_sequence(loader *l, const whet_json *node, const char *key, const char *expected,
                         int (*load_item)(loader *, const whet_json *))
{
    const whet_json *list = whet_json_get(node, key);
    if (!list || list->type != WHET_JSON_ARRAY)
        return list ? fail_at(l, list, expected) : whet_json_fail_missing(l->e, l->doc, node, key);
    for (size_t i = 0; i < list->u.array.count; i++)
        if (load_item(l, &list->u.array.items[i]) != 0)
            return -1;
    return 0;
}

/* ---- normalizer ---- */

static int load_normalizer(loader *l, const whet_json *n)
{
    if (!n || n->type == WHET_JSON_NULL)
        return 0;
    const char *type;
    if (get_type(l, n, &type) != 0)
        return -1;
    if (strcmp(type, "Sequence") == 0)
        return load_sequence(l, n, "normalizers", "an array of normalizers", load_normalizer);
    tok_norm_step *step;
    if (strcmp(type, "NFC") == 0) {
        if (!(step = tok_add_norm(l->t)))
            return oom(l);
        step->kind = TOK_NORM_NFC;
        return 0;
    }
    if (strcmp(type, "Prepend") == 0) {
        const whet_json *s;
        if (get_string(l, n, "prepend", 1, &s) != 0)
            return -1;
        if (!(step = tok_add_norm(l->t)) || !(step->a = tok_strdup(s->u.string.chars, s->u.string.len)))
            return oom(l);
        step->kind = TOK_NORM_PREPEND;
        step->a_len = s->u.string.len;
        return 0;
    }
    if (strcmp(type, "Replace") == 0) {
        const whet_json *pattern, *content;
        int is_regex;
        if (get_pattern(l, n, &pattern, &is_regex) != 0 || get_string(l, n, "content", 1, &content) != 0)
            return -1;
        if (is_regex || pattern->u.string.len == 0)
            return fail_at(l, pattern, "a non-empty String pattern (Replace with a Regex is not supported)");
        if (!(step = tok_add_norm(l->t)) || !(step->a = tok_strdup(pattern->u.string.chars, pattern->u.string.len)) ||
            !(step->b = tok_strdup(content->u.string.chars, content->u.string.len)))
            return oom(l);
        step->kind = TOK_NORM_REPLACE;
        step->a_len = pattern->u.string.len;
        step->b_len = content->u.string.len;
        return 0;
    }
    return fail_at(l, whet_json_get(n, "type"),
                   "a normalizer whet supports (NFC, Prepend, Replace, Sequence); NFD, NFKC, NFKD, Lowercase, "
                   "Strip and the BERT normalizer are not supported");
}

/* ---- pre-tokenizer ---- */

static int parse_prepend_scheme(loader *l, const whet_json *obj, tok_prepend_scheme *out)
{
    const whet_json *s;
    if (get_string(l, obj, "prepend_scheme", 0, &s) != 0)
        return -1;
    if (!s) {
        /* older files: add_prefix_space true means "always" */
        int add_prefix_space;
        if (get_bool(l, obj, "add_prefix_space", 1, &add_prefix_space) != 0)
            return -1;
        *out = add_prefix_space ? TOK_PREPEND_ALWAYS : TOK_PREPEND_NEVER;
        return 0;
    }
    if (strcmp(s->u.string.chars, "first") == 0)
        *out = TOK_PREPEND_FIRST;
    else if (strcmp(s->u.string.chars, "always") == 0)
        *out = TOK_PREPEND_ALWAYS;
    else if (strcmp(s->u.string.chars, "never") == 0)
        *out = TOK_PREPEND_NEVER;
    else
        return fail_at(l, s, "\"first\", \"always\" or \"never\"");
    return 0;
}

static int get_replacement(loader *l, const whet_json *obj, char **out, size_t *len)
{
    const whet_json *s;
    if (get_string(l, obj, "replacement", 1, &s) != 0)
        return -1;
    if (s->u.string.len == 0)
        return fail_at(l, s, "a non-empty replacement");
    if (!(*out = tok_strdup(s->u.string.chars, s->u.string.len)))
        return oom(l);
    *len = s->u.string.len;
    return 0;
}

static int load_pre_tokenizer(loader *l, const whet_json *p)
{
    if (!p || p->type == WHET_JSON_NULL)
        return 0;
    const char *type;
    if (get_type(l, p, &type) != 0)
        return -1;
    if (strcmp(type, "Sequence") == 0)
        return load_sequence(l, p, "pretokenizers", "an array of pre-tokenizers", load_pre_tokenizer);
    tok_pre_step *step;
    if (strcmp(type, "ByteLevel") == 0) {
        if (!(step = tok_add_pre(l->t)))
            return oom(l);
        step->kind = TOK_PRE_BYTE_LEVEL;
        if (get_bool(l, p, "add_prefix_space", 1, &step->add_prefix_space) ||
            get_bool(l, p, "use_regex", 1, &step->use_regex))
            return -1;
        return step->use_regex ? tok_need_gpt2_regex(l->t, l->e) : 0;
    }
    if (strcmp(type, "Split") == 0) {
        const whet_json *pattern, *behavior;
        int is_regex, invert;
        if (get_pattern(l, p, &pattern, &is_regex) != 0 || get_string(l, p, "behavior", 1, &behavior) != 0 ||
            get_bool(l, p, "invert", 0, &invert) != 0)
            return -1;
        if (invert)
            return fail_at(l, whet_json_get(p, "invert"), "invert false (inverted splits are not supported)");
        tok_split_behavior b;
        const char *name = behavior->u.string.chars;
        if (strcmp(name, "Isolated") == 0)
            b = TOK_SPLIT_ISOLATED;
        else if (strcmp(name, "Removed") == 0)
            b = TOK_SPLIT_REMOVED;
        else if (strcmp(name, "MergedWithPrevious") == 0)
            b = TOK_SPLIT_MERGED_WITH_PREVIOUS;
        else if (strcmp(name, "MergedWithNext") == 0)
            b = TOK_SPLIT_MERGED_WITH_NEXT;
        else
            return fail_at(l, behavior, "behavior Isolated, Removed, MergedWithPrevious or MergedWithNext");
        if (!(step = tok_add_pre(l->t)))
            return oom(l);
        step->kind = TOK_PRE_SPLIT;
        step->behavior = b;
        char why[300];
        if (tok_regex_compile(&step->regex, pattern->u.string.chars, pattern->u.string.len, !is_regex, why,
                              sizeof why) != 0) {
            char what[400];
            snprintf(what, sizeof what, "a regex PCRE2 compiles (%s)", why);
            return fail_at(l, pattern, what);
        }
        return 0;
    }
    if (strcmp(type, "Metaspace") == 0) {
        if (!(step = tok_add_pre(l->t)))
            return oom(l);
        step->kind = TOK_PRE_METASPACE;
        if (get_replacement(l, p, &step->repl, &step->repl_len) != 0 ||
            parse_prepend_scheme(l, p, &step->prepend_scheme) != 0 || get_bool(l, p, "split", 1, &step->split) != 0)
            return -1;
        return 0;
    }
    return fail_at(l, whet_json_get(p, "type"),
                   "a pre-tokenizer whet supports (ByteLevel, Split, Metaspace, Sequence); Whitespace, "
                   "WhitespaceSplit, BertPreTokenizer, Punctuation, Digits, CharDelimiterSplit and "
                   "UnicodeScripts are not supported");
}

/* ---- post-processor ---- */

static int load_template(loader *l, const whet_json *p)
{
    whet_tokenizer *t = l->t;
    const whet_json *single = whet_json_get(p, "single"), *specials = whet_json_get(p, "special_tokens");
    if (!single || single->type != WHET_JSON_ARRAY)
        return single ? fail_at(l, single, "an array") : whet_json_fail_missing(l->e, l->doc, p, "single");
    for (size_t i = 0; i < single->u.array.count; i++) {
        const whet_json *item = &single->u.array.items[i];
        const whet_json *sp = whet_json_get(item, "SpecialToken"), *seq = whet_json_get(item, "Sequence");
        tok_template_item *ti = tok_add_template_item(t);
        if (!ti)
            return oom(l);
        if (seq) {
            ti->is_sequence = 1;
            continue;
        }
        const whet_json *name;
        if (!sp || sp->type != WHET_JSON_OBJECT)
            return fail_at(l, item, "{\"SpecialToken\": ...} or {\"Sequence\": ...}");
        if (get_string(l, sp, "id", 1, &name) != 0)
            return -1;
        const whet_json *entry = specials ? whet_json_get_len(specials, name->u.string.chars, name->u.string.len)
                                          : NULL;
        const whet_json *ids = entry ? whet_json_get(entry, "ids") : NULL;
        if (!ids || ids->type != WHET_JSON_ARRAY)
            return fail_at(l, name, "a special token that special_tokens lists with its ids");
        ti->ids = malloc((ids->u.array.count ? ids->u.array.count : 1) * sizeof *ti->ids);
        if (!ti->ids)
            return oom(l);
        for (size_t k = 0; k < ids->u.array.count; k++) {
            int64_t id;
            if (whet_json_int64(l->doc, &ids->u.array.items[k], 0, (int64_t)t->bpe.vocab.n - 1, &id, l->e) != 0)
                return -1;
            ti->ids[ti->n_ids++] = (int32_t)id;
        }
    }
    return 0;
}

static int load_post_processor(loader *l, const whet_json *p)
{
    if (!p || p->type == WHET_JSON_NULL)
        return 0;
    const char *type;
    if (get_type(l, p, &type) != 0)
        return -1;
    if (strcmp(type, "Sequence") == 0)
        return load_sequence(l, p, "processors", "an array of processors", load_post_processor);
    if (strcmp(type, "ByteLevel") == 0)
        return 0; /* only moves offsets; ids are unchanged */
    if (strcmp(type, "TemplateProcessing") == 0) {
        if (l->t->n_template)
            return fail_at(l, p, "at most one TemplateProcessing");
        return load_template(l, p);
    }
    return fail_at(l, whet_json_get(p, "type"),
                   "a post-processor whet supports (TemplateProcessing, ByteLevel, Sequence); BertProcessing and "
                   "RobertaProcessing are not supported");
}

/* ---- decoder ---- */

static int load_decoder(loader *l, const whet_json *d)
{
    if (!d || d->type == WHET_JSON_NULL)
        return 0;
    const char *type;
    if (get_type(l, d, &type) != 0)
        return -1;
    if (strcmp(type, "Sequence") == 0)
        return load_sequence(l, d, "decoders", "an array of decoders", load_decoder);
    tok_dec_step *step = NULL;
    if (strcmp(type, "ByteLevel") == 0 || strcmp(type, "ByteFallback") == 0 || strcmp(type, "Fuse") == 0) {
        if (!(step = tok_add_dec(l->t)))
            return oom(l);
        step->kind = type[4] == 'L' ? TOK_DEC_BYTE_LEVEL : type[0] == 'B' ? TOK_DEC_BYTE_FALLBACK : TOK_DEC_FUSE;
        return 0;
    }
    if (strcmp(type, "Replace") == 0) {
        const whet_json *pattern, *content;
        int is_regex;
        if (get_pattern(l, d, &pattern, &is_regex) != 0 || get_string(l, d, "content", 1, &content) != 0)
            return -1;
        if (is_regex || pattern->u.string.len == 0)
            return fail_at(l, pattern, "a non-empty String pattern (Replace with a Regex is not supported)");
        if (!(step = tok_add_dec(l->t)) || !(step->a = tok_strdup(pattern->u.string.chars, pattern->u.string.len)) ||
            !(step->b = tok_strdup(content->u.string.chars, content->u.string.len)))
            return oom(l);
        step->kind = TOK_DEC_REPLACE;
        step->a_len = pattern->u.string.len;
        step->b_len = content->u.string.len;
        return 0;
    }
    if (strcmp(type, "Strip") == 0) {
        const whet_json *content;
        int64_t start = 0, stop = 0;
        const whet_json *sv = whet_json_get(d, "start"), *ev = whet_json_get(d, "stop");
        if (get_string(l, d, "content", 1, &content) != 0 ||
            (sv && whet_json_int64(l->doc, sv, 0, 1 << 20, &start, l->e) != 0) ||
            (ev && whet_json_int64(l->doc, ev, 0, 1 << 20, &stop, l->e) != 0))
            return -1;
        if (!(step = tok_add_dec(l->t)) || !(step->a = tok_strdup(content->u.string.chars, content->u.string.len)))
            return oom(l);
        step->kind = TOK_DEC_STRIP;
        step->a_len = content->u.string.len;
        step->start = (int)start;
        step->stop = (int)stop;
        return 0;
    }
    if (strcmp(type, "Metaspace") == 0) {
        if (!(step = tok_add_dec(l->t)))
            return oom(l);
        step->kind = TOK_DEC_METASPACE;
        return get_replacement(l, d, &step->a, &step->a_len) || parse_prepend_scheme(l, d, &step->prepend_scheme) ? -1 : 0;
    }
    return fail_at(l, whet_json_get(d, "type"),
                   "a decoder whet supports (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence); "
                   "WordPiece, BPEDecoder and CTC are not supported");
}

/* ---- tokenizer_config.json ---- */

/* bos_token / eos_token: a string or {"content": ...}; NULL when absent. */
static const whet_json *special_token_content(const whet_json *cfg, const char *key)
{
    const whet_json *v = whet_json_get(cfg, key);
    if (v && v->type == WHET_JSON_OBJECT)
        v = whet_json_get(v, "content");
    return v && v->type == WHET_JSON_STRING ? v : NULL;
}

static int load_config(whet_tokenizer *t, const char *path, whet_err *e)
{
    whet_json_doc *doc = NULL;
    if (whet_json_parse_file(&doc, path, NULL, e) != 0)
        return -1;
    loader l = {t, doc, e};
    const whet_json *cfg = whet_json_root(doc);
    int rc = 0;
    if (cfg->type != WHET_JSON_OBJECT) {
        rc = fail_at(&l, cfg, "an object");
        goto done;
    }
    int32_t *ids[2] = {&t->bos_id, &t->eos_id};
    static const char *const keys[2] = {"bos_token", "eos_token"};
    for (int i = 0; i < 2 && rc == 0; i++) {
        const whet_json *s = special_token_content(cfg, keys[i]);
        if (!s)
            continue;
        *ids[i] = tok_vocab_find(&t->bpe.vocab, s->u.string.chars, s->u.string.len);
        if (*ids[i] < 0)
            rc = fail_at(&l, s, "a token that is in the vocab");
    }
    /* transformers' LlamaTokenizerFast rebuilds its post-processor from
     * add_bos_token / add_eos_token (update_post_processor); other classes
     * keep tokenizer.json's. */
    const whet_json *cls = whet_json_get(cfg, "tokenizer_class");
    if (rc == 0 && cls && cls->type == WHET_JSON_STRING &&
        (strncmp(cls->u.string.chars, "Llama", 5) == 0 || strncmp(cls->u.string.chars, "CodeLlama", 9) == 0)) {
        int add_bos, add_eos;
        if (get_bool(&l, cfg, "add_bos_token", 1, &add_bos) || get_bool(&l, cfg, "add_eos_token", 0, &add_eos)) {
            rc = -1;
            goto done;
        }
        if ((add_bos && t->bos_id < 0) || (add_eos && t->eos_id < 0)) {
            rc = fail_at(&l, cfg, add_bos && t->bos_id < 0 ? "a bos_token, since add_bos_token is true"
                                                            : "an eos_token, since add_eos_token is true");
            goto done;
        }
        for (size_t i = 0; i < t->n_template; i++)
            free(t->template_items[i].ids);
        t->n_template = 0;
        int32_t parts[3] = {add_bos ? t->bos_id : -1, -2, add_eos ? t->eos_id : -1};
        for (int i = 0; i < 3; i++) {
            if (parts[i] == -1)
                continue;
            tok_template_item *ti = tok_add_template_item(t);
            if (!ti || (parts[i] >= 0 && !(ti->ids = malloc(sizeof *ti->ids)))) {
                rc = whet_fail(e, "%s: out of memory", path);
                goto done;
            }
            if (parts[i] == -2) {
                ti->is_sequence = 1;
            } else {
                ti->ids[0] = parts[i];
                ti->n_ids = 1;
            }
        }
    }
done:
    whet_json_free(doc);
    return rc;
}

/* Builds the tokenizer from a parsed tokenizer.json; config_path (may be
 * NULL) names a tokenizer_config.json to read when it exists. */
static whet_tokenizer *from_doc(const whet_json_doc *doc, const char *config_path, whet_err *e)
{
    whet_tokenizer *t = tok_new(whet_json_doc_name(doc));
    if (!t) {
        whet_fail(e, "%s: out of memory", whet_json_doc_name(doc));
        return NULL;
    }
    loader l = {t, doc, e};
    const whet_json *root = whet_json_root(doc);
    if (root->type != WHET_JSON_OBJECT) {
        fail_at(&l, root, "a tokenizer.json object");
        goto fail;
    }
    if (load_model(&l, whet_json_get(root, "model"), whet_json_get(root, "added_tokens")) != 0 ||
        load_normalizer(&l, whet_json_get(root, "normalizer")) != 0 ||
        load_pre_tokenizer(&l, whet_json_get(root, "pre_tokenizer")) != 0 ||
        load_post_processor(&l, whet_json_get(root, "post_processor")) != 0 ||
        load_decoder(&l, whet_json_get(root, "decoder")) != 0)
        goto fail;
    /* without a tokenizer_config.json, BOS is the template's leading token */
    if (t->n_template && !t->template_items[0].is_sequence && t->template_items[0].n_ids == 1)
        t->bos_id = t->template_items[0].ids[0];
    if (config_path && tok_path_exists(config_path) && load_config(t, config_path, e) != 0)
        goto fail;
    if (tok_finish(t, e) != 0)
        goto fail;
    return t;
fail:
    whet_tokenizer_free(t);
    return NULL;
}

whet_tokenizer *whet_tokenizer_parse(const char *json, size_t len, const char *name, whet_err *e)
{
    whet_json_doc *doc = NULL;
    if (whet_json_parse(&doc, json, len, name, NULL, e) != 0)
        return NULL;
    whet_tokenizer *t = from_doc(doc, NULL, e);
    whet_json_free(doc);
    return t;
}

whet_tokenizer *whet_tokenizer_load(const char *path, whet_err *e)
{
    size_t plen = strlen(path);
    char *file = malloc(plen + 32), *config = malloc(plen + 32);
    if (!file || !config) {
        free(file);
        free(config);
        whet_fail(e, "%s: out of memory", path);
        return NULL;
    }
    if (tok_path_is_dir(path)) {
        snprintf(file, plen + 32, "%s/tokenizer.json", path);
        snprintf(config, plen + 32, "%s/tokenizer_config.json", path);
    } else {
        memcpy(file, path, plen + 1);
        const char *slash = strrchr(path, '/');
        size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
        memcpy(config, path, dir_len);
        memcpy(config + dir_len, "tokenizer_config.json", sizeof "tokenizer_config.json");
    }
    whet_json_doc *doc = NULL;
    whet_tokenizer *t = NULL;
    if (whet_json_parse_file(&doc, file, NULL, e) == 0)
        t = from_doc(doc, config, e);
    whet_json_free(doc);
    free(file);
    free(config);
    return t;
}
