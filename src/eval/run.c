/* Running suites on a loaded model. Cases run one after another (the model
 * spreads each forward over the compute pool, bit-identically for any thread
 * count); each repeat of a gen case samples with its own seed, derived from
 * the suite seed, the case id and the repeat, so results do not depend on the
 * order of cases or on which of them came from the cache. */
#include "eval/eval_internal.h"

#include "tok/text_stream.h"
#include "model/lora.h"
#include "model/sample.h"
#include "util/log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define CACHE_FORMAT "whet-eval-cache-1"
#define PPL_MAX_CTX 1024 /* whet score's default window */

static void hex128(XXH128_hash_t h, char out[33])
{
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h.high64, (unsigned long long)h.low64);
}

void whet_eval_model_hash(const whet_model *m, char model_hex[33], char adapter_hex[33])
{
    XXH3_state_t *st = XXH3_createState();
    const whet_model_config *c = &m->cfg;
    uint64_t dims[] = {c->vocab, c->hidden, c->layers, c->heads, c->kv_heads, c->head_dim, c->ffn,
                       c->max_positions, (uint64_t)c->tied, c->sliding_window};
    XXH3_128bits_reset(st);
    XXH3_128bits_update(st, c->info->name, strlen(c->info->name));
    XXH3_128bits_update(st, dims, sizeof dims);
    XXH3_128bits_update(st, &c->norm_eps, sizeof c->norm_eps);
    XXH3_128bits_update(st, &c->rope_theta, sizeof c->rope_theta);
    XXH3_128bits_update(st, m->params_memory, m->num_params * sizeof *m->params_memory);
    hex128(XXH3_128bits_digest(st), model_hex);
    adapter_hex[0] = 0;
    if (m->lora) {
        const whet_lora *l = m->lora;
        uint64_t meta[] = {l->opt.rank, l->opt.targets, (uint64_t)l->opt.rslora, l->layers};
        XXH3_128bits_reset(st);
        XXH3_128bits_update(st, meta, sizeof meta);
        XXH3_128bits_update(st, &l->scale, sizeof l->scale);
        XXH3_128bits_update(st, l->memory, l->floats * sizeof *l->memory);
        hex128(XXH3_128bits_digest(st), adapter_hex);
    }
    XXH3_freeState(st);
}

typedef struct runner {
    const whet_eval_env *env;
    whet_model *m;
    size_t limit; /* positions the model takes */
    int32_t stop_ids[WHET_MAX_EOS_IDS + 4];
    size_t n_stop_ids;
    char model_hash[33], adapter_hash[33];
    float *logits;
    whet_eval_results *r;
} runner;

static void add_stop_id(runner *x, int64_t id)
{
    if (id < 0 || id > INT32_MAX)
        return;
    for (size_t i = 0; i < x->n_stop_ids; i++)
        if (x->stop_ids[i] == id)
            return;
    if (x->n_stop_ids < sizeof x->stop_ids / sizeof *x->stop_ids)
        x->stop_ids[x->n_stop_ids++] = (int32_t)id;
}

static int is_stop_id(const runner *x, int32_t id)
{
    for (size_t i = 0; i < x->n_stop_ids; i++)
        if (x->stop_ids[i] == id)
            return 1;
    return 0;
}

/* The start of a cache key: the format, the model and the adapter. */
static XXH3_state_t *key_begin(const runner *x, const char *kind)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return NULL;
    XXH3_128bits_reset(st);
    XXH3_128bits_update(st, CACHE_FORMAT, sizeof CACHE_FORMAT);
    XXH3_128bits_update(st, x->model_hash, 33);
    XXH3_128bits_update(st, x->adapter_hash, 33);
    XXH3_128bits_update(st, kind, strlen(kind) + 1);
    return st;
}

static void key_ids(XXH3_state_t *st, const int32_t *ids, size_t n)
{
    uint64_t len = n;
    XXH3_128bits_update(st, &len, sizeof len);
    XXH3_128bits_update(st, ids, n * sizeof *ids);
}

static void key_end(XXH3_state_t *st, char key[33])
{
    hex128(XXH3_128bits_digest(st), key);
    XXH3_freeState(st);
}

/* Writes a cache entry: {"key": ..., <fill>}. */
static int cache_store(const runner *x, const char key[33], void (*fill)(whet_json_writer *, const void *),
                       const void *arg, whet_err *e)
{
    if (!x->env->cache_dir)
        return 0;
    whet_json_writer w;
    whet_json_writer_init(&w, 0);
    whet_json_begin_object(&w);
    whet_json_key(&w, "key");
    whet_json_write_string(&w, key);
    fill(&w, arg);
    whet_json_end_object(&w);
    const char *text;
    size_t len;
    int rc = whet_json_writer_finish(&w, "cache entry", &text, &len, e);
    if (rc == 0)
        rc = whet_eval_cache_put(x->env->cache_dir, key, text, len, e);
    whet_json_writer_free(&w);
    return rc;
}

/* ---- prompts -------------------------------------------------------------------- */

/* The token ids of a gen or choice case's input (and the text, for reports). */
static int encode_input(const runner *x, const whet_eval_suite *s, const whet_eval_case *k, int32_t **ids,
                        size_t *n, char **shown, whet_err *e)
{
    if (!k->messages) {
        if (whet_tokenizer_encode_prompt(x->env->tok, k->prompt, k->prompt_len, 1, ids, n) != 0)
            return whet_fail(e, "%s: case \"%s\": cannot encode the prompt", s->path, k->id);
        *shown = strndup(k->prompt, k->prompt_len);
        return *shown ? 0 : whet_fail(e, "out of memory");
    }
    if (!x->env->tmpl)
        return whet_fail(e, "%s: line %zu: case \"%s\" has chat messages, and the model has no chat template "
                         "(pass --chat-template NAME)", s->path, k->line, k->id);
    whet_chat_rendered rendered = {0};
    whet_chat_options opt = {.add_generation_prompt = 1};
    if (whet_chat_render(x->env->tmpl, k->messages, k->n_messages, &opt, &rendered, e) != 0) {
        char why[sizeof e->msg];
        snprintf(why, sizeof why, "%s", e->msg);
        return whet_fail(e, "%s: line %zu: case \"%s\": %s", s->path, k->line, k->id, why);
    }
    int rc = whet_tokenizer_encode_prompt(x->env->tok, rendered.text, rendered.len, !rendered.starts_with_bos, ids, n);
    *shown = rendered.text;
    rendered.text = NULL;
    whet_chat_rendered_free(&rendered);
    return rc == 0 ? 0 : whet_fail(e, "%s: case \"%s\": cannot encode the prompt", s->path, k->id);
}

/* ---- generation ---------------------------------------------------------------------- */

typedef struct gen_out {
    char *text;
    size_t len, tokens;
    const char *reason;
} gen_out;

static const char *const reasons[] = {"eos", "stop", "max_tokens", "context"};

static int text_append(gen_out *g, size_t *cap, const char *b, size_t n)
{
    if (g->len + n + 1 > *cap) {
        size_t c = (g->len + n + 1) * 2;
        char *t = realloc(g->text, c);
        if (!t)
            return -1;
        g->text = t, *cap = c;
    }
    memcpy(g->text + g->len, b, n);
    g->len += n;
    g->text[g->len] = 0;
    return 0;
}

/* Generates from ids until an end-of-sequence token, a stop string (cut off,
 * not included), max_tokens or the end of the context. The text is made
 * valid UTF-8 as whet generate prints it. */
static int generate(runner *x, const whet_eval_suite *s, const int32_t *ids, size_t n, size_t max_tokens,
                    uint64_t seed, gen_out *g, whet_err *e)
{
    whet_model *m = x->m;
    memset(g, 0, sizeof *g);
    if (n == 0)
        return whet_fail(e, "the prompt is empty and the tokenizer adds no BOS to start from");
    if (n >= x->limit)
        return whet_fail(e, "the prompt is %zu tokens; the model takes at most %zu, leaving no room to generate", n,
                         x->limit);
    size_t max_len = n + max_tokens < x->limit ? n + max_tokens : x->limit;
    whet_sampling sp = {s->temperature, s->top_k, s->top_p};
    whet_sampler sampler;
    whet_kv_cache *kv = NULL;
    whet_acts *acts = NULL;
    size_t cap = 0, raw_len = 0, raw_cap = 0, max_stop = 0;
    char *raw = NULL;
    int rc = -1;
    whet_utf8_stream utf8 = {{0}, 0};
    for (size_t i = 0; i < s->n_stops; i++)
        if (strlen(s->stops[i]) > max_stop)
            max_stop = strlen(s->stops[i]);
    if (whet_sampler_init(&sampler, m->cfg.vocab, &sp, seed, e) != 0)
        return -1;
    if (!(kv = whet_kv_cache_create(m, 1, max_len, e)) || !(acts = whet_acts_create(m, 1, n, 0, e)))
        goto done;
    if (text_append(g, &cap, "", 0) != 0)
        goto oom;
    if (whet_model_decode(m, kv, acts, ids, 1, n, x->logits, e) != 0)
        goto done;
    g->reason = reasons[2];
    for (;;) {
        int32_t next = whet_sampler_sample(&sampler, x->logits);
        if (is_stop_id(x, next)) {
            g->reason = reasons[0];
            break;
        }
        g->tokens++;
        size_t nb = 0;
        const char *bytes = whet_tokenizer_is_special(x->env->tok, next) ? "" :
                            whet_tokenizer_token_bytes(x->env->tok, next, &nb);
        if (!bytes)
            bytes = "", nb = 0;
        /* valid UTF-8 as it comes; stop strings are searched in that text */
        if (raw_len + 3 * (nb + 4) + 1 > raw_cap) {
            raw_cap = (raw_len + 3 * (nb + 4) + 1) * 2;
            char *t = realloc(raw, raw_cap);
            if (!t)
                goto oom;
            raw = t;
        }
        size_t before = raw_len;
        raw_len += whet_utf8_feed(&utf8, bytes, nb, raw + raw_len);
        long stop_at = -1;
        if (s->n_stops) {
            size_t from = before > max_stop ? before - max_stop : 0;
            for (size_t i = 0; i < s->n_stops; i++) {
                size_t sl = strlen(s->stops[i]);
                for (size_t p = from; p + sl <= raw_len; p++)
                    if (memcmp(raw + p, s->stops[i], sl) == 0) {
                        if (stop_at < 0 || (long)p < stop_at)
                            stop_at = (long)p;
                        break;
                    }
            }
        }
        if (stop_at >= 0) {
            raw_len = (size_t)stop_at;
            g->reason = reasons[1];
            break;
        }
        if (g->tokens == max_tokens)
            break;
        if (kv->len == max_len) {
            g->reason = reasons[3];
            break;
        }
        if (whet_model_decode(m, kv, acts, &next, 1, 1, x->logits, e) != 0)
            goto done;
    }
    if (g->reason != reasons[1]) {
        if (raw_len + 4 > raw_cap) {
            char *t = realloc(raw, raw_len + 4);
            if (!t)
                goto oom;
            raw = t;
        }
        raw_len += whet_utf8_flush(&utf8, raw + raw_len);
    }
    g->len = 0;
    if (text_append(g, &cap, raw ? raw : "", raw_len) != 0)
        goto oom;
    rc = 0;
    goto done;
oom:
    whet_fail(e, "out of memory generating");
done:
    free(raw);
    whet_sampler_free(&sampler);
    whet_acts_free(acts);
    whet_kv_cache_free(kv);
    if (rc) {
        free(g->text);
        g->text = NULL;
    }
    return rc;
}

static void fill_gen(whet_json_writer *w, const void *arg)
{
    const gen_out *g = arg;
    whet_json_key(w, "output");
    whet_json_write_string_len(w, g->text, g->len);
    whet_json_key(w, "tokens");
    whet_json_write_int(w, (int64_t)g->tokens);
    whet_json_key(w, "stop");
    whet_json_write_string(w, g->reason);
}

static int gen_from_cache(whet_json_doc *doc, gen_out *g)
{
    const whet_json *root = whet_json_root(doc), *o = whet_json_get(root, "output"),
                    *t = whet_json_get(root, "tokens"), *st = whet_json_get(root, "stop");
    if (!o || o->type != WHET_JSON_STRING || !t || t->type != WHET_JSON_NUMBER || !st || st->type != WHET_JSON_STRING)
        return -1;
    g->reason = NULL;
    for (size_t i = 0; i < 4; i++)
        if (strcmp(st->u.string.chars, reasons[i]) == 0)
            g->reason = reasons[i];
    if (!g->reason || !(g->text = malloc(o->u.string.len + 1)))
        return -1;
    memcpy(g->text, o->u.string.chars, o->u.string.len + 1);
    g->len = o->u.string.len;
    g->tokens = (size_t)t->u.number.value;
    return 0;
}

static uint64_t repeat_seed(const whet_eval_suite *s, const whet_eval_case *k, size_t repeat)
{
    uint64_t parts[2] = {s->seed, repeat};
    XXH64_state_t *st = XXH64_createState();
    XXH64_reset(st, 0);
    XXH64_update(st, parts, sizeof parts);
    XXH64_update(st, k->id, strlen(k->id));
    uint64_t h = XXH64_digest(st);
    XXH64_freeState(st);
    return h;
}

static int run_gen(runner *x, const whet_eval_suite *s, const whet_eval_case *k, whet_eval_case_result *cr,
                   size_t repeats, whet_err *e)
{
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = -1;
    if (encode_input(x, s, k, &ids, &n, &cr->prompt, e) != 0)
        return -1;
    if (!(cr->samples = calloc(repeats, sizeof *cr->samples)))
        goto oom;
    cr->n_samples = repeats;
    size_t passes = 0;
    double score_sum = 0;
    for (size_t r = 0; r < repeats; r++) {
        whet_eval_sample *smp = &cr->samples[r];
        /* greedy decoding draws no random numbers: every repeat is the same */
        uint64_t seed = s->temperature > 0 ? repeat_seed(s, k, r) : 0;
        XXH3_state_t *st = key_begin(x, "gen");
        if (!st)
            goto oom;
        key_ids(st, ids, n);
        double dec[2] = {s->temperature, s->top_p};
        uint64_t dec_int[3] = {s->top_k, k->max_tokens, seed};
        XXH3_128bits_update(st, dec, sizeof dec);
        XXH3_128bits_update(st, dec_int, sizeof dec_int);
        for (size_t i = 0; i < s->n_stops; i++)
            XXH3_128bits_update(st, s->stops[i], strlen(s->stops[i]) + 1);
        key_ids(st, x->stop_ids, x->n_stop_ids);
        char key[33];
        key_end(st, key);
        gen_out g = {0};
        whet_json_doc *hit = whet_eval_cache_get(x->env->cache_dir, key);
        if (hit && gen_from_cache(hit, &g) == 0) {
            smp->cached = 1;
            x->r->cache_hits++;
        } else {
            free(g.text);
            if (generate(x, s, ids, n, k->max_tokens, seed, &g, e) != 0) {
                whet_json_free(hit);
                char why[sizeof e->msg];
                snprintf(why, sizeof why, "%s", e->msg);
                whet_fail(e, "%s: line %zu: case \"%s\": %s", s->path, k->line, k->id, why);
                goto done;
            }
            x->r->cache_misses++;
            if (cache_store(x, key, fill_gen, &g, e) != 0) {
                whet_json_free(hit);
                free(g.text);
                goto done;
            }
        }
        whet_json_free(hit);
        smp->output = g.text;
        smp->output_len = g.len;
        smp->tokens = g.tokens;
        smp->stop_reason = g.reason;
        if (!(smp->asserts = calloc(k->n_asserts, sizeof *smp->asserts)))
            goto oom;
        smp->n_asserts = k->n_asserts;
        double total = 0, weights = 0;
        for (size_t i = 0; i < k->n_asserts; i++) {
            whet_eval_assert_result *ar = &smp->asserts[i];
            snprintf(ar->name, sizeof ar->name, "%s", k->asserts[i].name);
            ar->weight = k->asserts[i].weight;
            if (whet_eval_assert_score(&k->asserts[i], k, s->dir, g.text, g.len, &ar->score, &ar->detail, e) != 0)
                goto done;
            total += ar->weight * ar->score;
            weights += ar->weight;
        }
        smp->score = total / weights;
        smp->pass = smp->score >= k->threshold;
        passes += (size_t)smp->pass;
        score_sum += smp->score;
    }
    cr->score = score_sum / (double)repeats;
    switch (s->reduce) {
    case WHET_EVAL_REDUCE_MEAN: cr->pass = cr->score >= k->threshold; break;
    case WHET_EVAL_REDUCE_ALL: cr->pass = passes == repeats; break;
    case WHET_EVAL_REDUCE_ANY: cr->pass = passes > 0; break;
    case WHET_EVAL_REDUCE_MAJORITY: cr->pass = 2 * passes > repeats; break;
    }
    rc = 0;
    goto done;
oom:
    whet_fail(e, "out of memory");
done:
    free(ids);
    return rc;
}

/* ---- log-likelihoods ---------------------------------------------------------------- */

/* Sum of log p(ids[t]) for t ≥ from, given everything before (one forward). */
static int loglik(runner *x, const int32_t *ids, size_t n, size_t from, double *ll, size_t *scored, whet_err *e)
{
    whet_acts *a = whet_acts_create(x->m, 1, n, 0, e);
    int32_t *targets = malloc(n * sizeof *targets);
    float *lp = malloc(n * sizeof *lp);
    int rc = -1;
    if (!a || !targets || !lp) {
        if (a)
            whet_fail(e, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        targets[i] = i + 1 < n && i + 1 >= from ? ids[i + 1] : -1;
    double mean;
    if (whet_model_forward(x->m, a, ids, 1, n, e) != 0 || whet_model_nll(x->m, a, targets, lp, &mean, e) != 0)
        goto done;
    *ll = 0;
    *scored = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (targets[i] >= 0) {
            *ll += lp[i];
            ++*scored;
        }
    rc = 0;
done:
    whet_acts_free(a);
    free(targets);
    free(lp);
    return rc;
}

typedef struct choice_cached {
    const double *ll;
    size_t n;
} choice_cached;

static void fill_choice(whet_json_writer *w, const void *arg)
{
    const choice_cached *c = arg;
    whet_json_key(w, "ll");
    whet_json_begin_array(w);
    for (size_t i = 0; i < c->n; i++)
        whet_json_write_double(w, c->ll[i]);
    whet_json_end_array(w);
}

/* lm-evaluation-harness's split: the continuation is what encoding prompt +
 * choice adds after the prompt's own tokens (or, when the tokens at the seam
 * merge, the choice encoded alone after them). */
static int run_choice(runner *x, const whet_eval_suite *s, const whet_eval_case *k, whet_eval_case_result *cr,
                      whet_err *e)
{
    int32_t *ctx = NULL, *whole = NULL, **seqs = NULL;
    size_t n_ctx = 0, *lens = NULL, *froms = NULL;
    int rc = -1;
    char *whole_text = NULL;
    if (encode_input(x, s, k, &ctx, &n_ctx, &cr->prompt, e) != 0)
        return -1;
    cr->n_choices = k->n_choices;
    cr->gold = k->gold;
    cr->ll = calloc(k->n_choices, sizeof *cr->ll);
    cr->choice_bytes = calloc(k->n_choices, sizeof *cr->choice_bytes);
    seqs = calloc(k->n_choices, sizeof *seqs);
    lens = calloc(k->n_choices, sizeof *lens);
    froms = calloc(k->n_choices, sizeof *froms);
    if (!cr->ll || !cr->choice_bytes || !seqs || !lens || !froms)
        goto oom;
    if (n_ctx == 0) {
        whet_fail(e, "%s: line %zu: case \"%s\": the prompt is empty and the tokenizer adds no BOS to condition on",
                  s->path, k->line, k->id);
        goto done;
    }
    XXH3_state_t *st = key_begin(x, "choice");
    if (!st)
        goto oom;
    for (size_t c = 0; c < k->n_choices; c++) {
        size_t n_whole = 0;
        free(whole_text);
        if (!(whole_text = malloc(k->prompt_len + k->choices_len[c] + 1)))
            goto oom_key;
        memcpy(whole_text, k->prompt, k->prompt_len);
        memcpy(whole_text + k->prompt_len, k->choices[c], k->choices_len[c]);
        whole = NULL;
        if (whet_tokenizer_encode_prompt(x->env->tok, whole_text, k->prompt_len + k->choices_len[c], 1, &whole, &n_whole) != 0)
            goto oom_key;
        if (n_whole > n_ctx && memcmp(whole, ctx, n_ctx * sizeof *ctx) == 0) {
            seqs[c] = whole;
            lens[c] = n_whole;
        } else {
            free(whole);
            int32_t *cont = NULL;
            size_t n_cont = 0;
            if (whet_tokenizer_encode(x->env->tok, k->choices[c], k->choices_len[c], 0, &cont, &n_cont, e) != 0)
                goto fail_key;
            seqs[c] = malloc((n_ctx + n_cont + 1) * sizeof **seqs);
            if (!seqs[c]) {
                free(cont);
                goto oom_key;
            }
            memcpy(seqs[c], ctx, n_ctx * sizeof *ctx);
            if (n_cont)
                memcpy(seqs[c] + n_ctx, cont, n_cont * sizeof *cont);
            free(cont);
            lens[c] = n_ctx + n_cont;
        }
        whole = NULL;
        froms[c] = n_ctx;
        if (lens[c] > x->limit) {
            whet_fail(e, "%s: line %zu: case \"%s\": prompt and choice %zu are %zu tokens; the model takes at most %zu",
                      s->path, k->line, k->id, c, lens[c], x->limit);
            goto fail_key;
        }
        key_ids(st, seqs[c], lens[c]);
        uint64_t from = froms[c];
        XXH3_128bits_update(st, &from, sizeof from);
        cr->choice_bytes[c] = k->choices_len[c];
    }
    char key[33];
    key_end(st, key);
    whet_json_doc *hit = whet_eval_cache_get(x->env->cache_dir, key);
    const whet_json *cached = hit ? whet_json_get(whet_json_root(hit), "ll") : NULL;
    if (cached && cached->type == WHET_JSON_ARRAY && cached->u.array.count == k->n_choices) {
        for (size_t c = 0; c < k->n_choices; c++)
            cr->ll[c] = cached->u.array.items[c].type == WHET_JSON_NUMBER ? cached->u.array.items[c].u.number.value : NAN;
        x->r->cache_hits++;
    } else {
        for (size_t c = 0; c < k->n_choices; c++) {
            size_t scored;
            if (loglik(x, seqs[c], lens[c], froms[c], &cr->ll[c], &scored, e) != 0) {
                whet_json_free(hit);
                goto done;
            }
        }
        x->r->cache_misses++;
        choice_cached cc = {cr->ll, k->n_choices};
        if (cache_store(x, key, fill_choice, &cc, e) != 0) {
            whet_json_free(hit);
            goto done;
        }
    }
    whet_json_free(hit);
    size_t best = 0, best_norm = 0;
    for (size_t c = 1; c < k->n_choices; c++) {
        if (cr->ll[c] > cr->ll[best])
            best = c;
        if (cr->ll[c] / (double)cr->choice_bytes[c] > cr->ll[best_norm] / (double)cr->choice_bytes[best_norm])
            best_norm = c;
    }
    cr->pred = best;
    cr->pred_norm = best_norm;
    cr->pass = best == k->gold;
    cr->score = cr->pass;
    cr->acc_norm = best_norm == k->gold;
    rc = 0;
    goto done;
oom_key:
    whet_fail(e, "out of memory");
fail_key:
    XXH3_freeState(st);
    goto done;
oom:
    whet_fail(e, "out of memory");
done:
    free(whole_text);
    free(ctx);
    for (size_t c = 0; seqs && c < k->n_choices; c++)
        free(seqs[c]);
    free(seqs);
    free(lens);
    free(froms);
    return rc;
}

typedef struct ppl_cached {
    double nll;
    size_t tokens;
} ppl_cached;

static void fill_ppl(whet_json_writer *w, const void *arg)
{
    const ppl_cached *p = arg;
    whet_json_key(w, "nll");
    whet_json_write_double(w, p->nll);
    whet_json_key(w, "tokens");
    whet_json_write_int(w, (int64_t)p->tokens);
}

/* The text as whet score reads it (with the tokenizer's special tokens) and
 * scores it with its defaults: windows of the model's positions (at most
 * 1024) overlapping by half; every token after the first is scored once. */
static int run_ppl(runner *x, const whet_eval_suite *s, const whet_eval_case *k, whet_eval_case_result *cr,
                   whet_err *e)
{
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = -1;
    if (whet_tokenizer_encode(x->env->tok, k->text, k->text_len, 1, &ids, &n, e) != 0)
        return -1;
    cr->bytes = k->text_len;
    if (n < 2) {
        whet_fail(e, "%s: line %zu: case \"%s\": the text is %zu token%s; perplexity needs at least 2", s->path,
                  k->line, k->id, n, n == 1 ? "" : "s");
        goto done;
    }
    size_t ctx = x->limit < PPL_MAX_CTX ? x->limit : PPL_MAX_CTX, stride = ctx / 2;
    XXH3_state_t *st = key_begin(x, "ppl");
    if (!st) {
        whet_fail(e, "out of memory");
        goto done;
    }
    key_ids(st, ids, n);
    uint64_t window[2] = {ctx, stride};
    XXH3_128bits_update(st, window, sizeof window);
    char key[33];
    key_end(st, key);
    whet_json_doc *hit = whet_eval_cache_get(x->env->cache_dir, key);
    const whet_json *nll = hit ? whet_json_get(whet_json_root(hit), "nll") : NULL,
                    *tok = hit ? whet_json_get(whet_json_root(hit), "tokens") : NULL;
    if (nll && nll->type == WHET_JSON_NUMBER && tok && tok->type == WHET_JSON_NUMBER) {
        cr->nll = nll->u.number.value;
        cr->tokens = (size_t)tok->u.number.value;
        x->r->cache_hits++;
    } else {
        size_t windows;
        if (whet_model_score_windows(x->m, ids, n, ctx, stride, NULL, &cr->nll, &cr->tokens, &windows, 0, e) != 0) {
            whet_json_free(hit);
            char why[sizeof e->msg];
            snprintf(why, sizeof why, "%s", e->msg);
            whet_fail(e, "%s: line %zu: case \"%s\": %s", s->path, k->line, k->id, why);
            goto done;
        }
        x->r->cache_misses++;
        ppl_cached pc = {cr->nll, cr->tokens};
        if (cache_store(x, key, fill_ppl, &pc, e) != 0) {
            whet_json_free(hit);
            goto done;
        }
    }
    whet_json_free(hit);
    if (!(cr->prompt = strndup(k->text, k->text_len))) {
        whet_fail(e, "out of memory");
        goto done;
    }
    rc = 0;
done:
    free(ids);
    return rc;
}

/* ---- suites ---------------------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int whet_eval_run(const whet_eval_env *env, whet_eval_suite *const *suites, size_t n_suites,
                  whet_eval_results **out, whet_err *e)
{
    *out = NULL;
    whet_eval_results *r = calloc(1, sizeof *r);
    if (!r)
        return whet_fail(e, "out of memory");
    runner x = {.env = env, .m = env->model, .r = r};
    const whet_model_config *cfg = &env->model->cfg;
    x.limit = cfg->max_positions;
    if (cfg->sliding_window && cfg->sliding_window < x.limit)
        x.limit = cfg->sliding_window;
    for (size_t i = 0; i < cfg->n_eos; i++)
        add_stop_id(&x, cfg->eos_token_ids[i]);
    add_stop_id(&x, whet_tokenizer_eos_id(env->tok));
    if (env->tmpl) {
        const char *eot = whet_chat_end_of_turn_text(env->tmpl);
        add_stop_id(&x, whet_tokenizer_token_to_id(env->tok, eot, strlen(eot)));
    }
    /* a trainer may call between steps: no adapter dropout while evaluating */
    int lora_training = env->model->lora ? env->model->lora->training : 0;
    if (env->model->lora)
        env->model->lora->training = 0;
    whet_eval_model_hash(env->model, x.model_hash, x.adapter_hash);
    memcpy(r->model_hash, x.model_hash, 33);
    memcpy(r->adapter_hash, x.adapter_hash, 33);
    r->model = dup_or_null(env->model_label ? env->model_label : "model");
    r->adapter = dup_or_null(env->adapter_label);
    size_t total = 0;
    for (size_t i = 0; i < n_suites; i++)
        total += suites[i]->n_cases;
    r->cases = calloc(total, sizeof *r->cases);
    r->suites = calloc(n_suites, sizeof *r->suites);
    x.logits = malloc(cfg->vocab * sizeof *x.logits);
    if (!r->model || !r->cases || !r->suites || !x.logits || (env->adapter_label && !r->adapter))
        goto oom;
    for (size_t i = 0; i < n_suites; i++) {
        const whet_eval_suite *s = suites[i];
        for (size_t j = 0; j < i; j++)
            if (strcmp(suites[j]->name, s->name) == 0) {
                whet_fail(e, "%s: the suite name \"%s\" is also the name of %s (names join runs with baselines)",
                          s->path, s->name, suites[j]->path);
                goto fail;
            }
        whet_eval_suite_result *sr = &r->suites[r->n_suites++];
        sr->name = strdup(s->name);
        sr->path = strdup(s->path);
        sr->must_pass_tag = strdup(s->gate.must_pass_tag);
        if (!sr->name || !sr->path || !sr->must_pass_tag)
            goto oom;
        sr->gate = s->gate;
        sr->gate.must_pass_tag = sr->must_pass_tag;
        sr->seed = s->seed;
        sr->temperature = s->temperature;
        sr->top_p = s->top_p;
        sr->top_k = s->top_k;
        sr->max_tokens = s->max_tokens;
        sr->repeats = env->repeats ? env->repeats : s->repeats;
        sr->reduce = s->reduce;
        sr->first_case = r->n_cases;
        for (size_t c = 0; c < s->n_cases; c++) {
            const whet_eval_case *k = &s->cases[c];
            whet_eval_case_result *cr = &r->cases[r->n_cases++];
            cr->suite = strdup(s->name);
            cr->id = strdup(k->id);
            cr->kind = k->kind;
            memcpy(cr->prompt_hash, k->prompt_hash, sizeof cr->prompt_hash);
            if (k->n_tags && !(cr->tags = calloc(k->n_tags, sizeof *cr->tags)))
                goto oom;
            for (size_t t = 0; t < k->n_tags; t++)
                if (!(cr->tags[cr->n_tags++] = strdup(k->tags[t])))
                    goto oom;
            if (!cr->suite || !cr->id)
                goto oom;
            if (env->progress)
                fprintf(stderr, "\rwhet: eval: %s: case %zu of %zu\033[K", s->name, c + 1, s->n_cases);
            int rc = k->kind == WHET_EVAL_GEN      ? run_gen(&x, s, k, cr, sr->repeats, e)
                     : k->kind == WHET_EVAL_CHOICE ? run_choice(&x, s, k, cr, e)
                                                   : run_ppl(&x, s, k, cr, e);
            if (rc != 0)
                goto fail;
        }
        sr->n_cases = r->n_cases - sr->first_case;
    }
    if (env->progress)
        fputs("\r\033[K", stderr);
    if (whet_eval_aggregate(r, e) != 0)
        goto fail;
    free(x.logits);
    if (env->model->lora)
        env->model->lora->training = lora_training;
    *out = r;
    return 0;
oom:
    whet_fail(e, "out of memory");
fail:
    if (env->progress)
        fputs("\r\033[K", stderr);
    free(x.logits);
    if (env->model->lora)
        env->model->lora->training = lora_training;
    whet_eval_results_free(r);
    return -1;
}

/* ---- aggregates ------------------------------------------------------------------------- */

void whet_eval_rate_finish(whet_eval_rate *rt)
{
    rt->rate = rt->n ? (double)rt->passed / (double)rt->n : NAN;
    whet_eval_wilson(rt->passed, rt->n, 1.959963984540054, &rt->lo, &rt->hi);
}

static int add_tag(whet_eval_suite_result *sr, const char *tag, int pass)
{
    size_t i = 0;
    while (i < sr->n_tags && strcmp(sr->tags[i].tag, tag) != 0)
        i++;
    if (i == sr->n_tags) {
        whet_eval_tag_rate *t = realloc(sr->tags, (sr->n_tags + 1) * sizeof *t);
        if (!t)
            return -1;
        sr->tags = t;
        memset(&t[i], 0, sizeof t[i]);
        if (!(t[i].tag = strdup(tag)))
            return -1;
        sr->n_tags++;
    }
    sr->tags[i].r.n++;
    sr->tags[i].r.passed += (size_t)pass;
    return 0;
}

static int cmp_tag(const void *pa, const void *pb)
{
    return strcmp(((const whet_eval_tag_rate *)pa)->tag, ((const whet_eval_tag_rate *)pb)->tag);
}

int whet_eval_aggregate(whet_eval_results *r, whet_err *e)
{
    memset(&r->pass, 0, sizeof r->pass);
    for (size_t i = 0; i < r->n_suites; i++) {
        whet_eval_suite_result *sr = &r->suites[i];
        memset(&sr->pass, 0, sizeof sr->pass);
        size_t acc = 0, acc_norm = 0;
        sr->n_choice = sr->ppl_cases = sr->ppl_tokens = sr->ppl_bytes = 0;
        sr->ppl_nll = 0;
        for (size_t c = sr->first_case; c < sr->first_case + sr->n_cases; c++) {
            const whet_eval_case_result *cr = &r->cases[c];
            if (cr->kind == WHET_EVAL_PPL) {
                sr->ppl_cases++;
                sr->ppl_tokens += cr->tokens;
                sr->ppl_bytes += cr->bytes;
                sr->ppl_nll += cr->nll;
                continue;
            }
            sr->pass.n++;
            sr->pass.passed += (size_t)cr->pass;
            for (size_t t = 0; t < cr->n_tags; t++)
                if (add_tag(sr, cr->tags[t], cr->pass) != 0)
                    return whet_fail(e, "out of memory");
            if (cr->kind == WHET_EVAL_CHOICE) {
                sr->n_choice++;
                acc += (size_t)cr->pass;
                acc_norm += (size_t)cr->acc_norm;
            }
        }
        whet_eval_rate_finish(&sr->pass);
        if (sr->n_tags)
            qsort(sr->tags, sr->n_tags, sizeof *sr->tags, cmp_tag);
        for (size_t t = 0; t < sr->n_tags; t++)
            whet_eval_rate_finish(&sr->tags[t].r);
        sr->acc = sr->n_choice ? (double)acc / (double)sr->n_choice : NAN;
        sr->acc_norm = sr->n_choice ? (double)acc_norm / (double)sr->n_choice : NAN;
        sr->ppl = sr->ppl_tokens ? exp(sr->ppl_nll / (double)sr->ppl_tokens) : NAN;
        sr->bits_per_byte = sr->ppl_bytes ? sr->ppl_nll / log(2.0) / (double)sr->ppl_bytes : NAN;
        r->pass.n += sr->pass.n;
        r->pass.passed += sr->pass.passed;
    }
    whet_eval_rate_finish(&r->pass);
    return 0;
}

static void free_case_result(whet_eval_case_result *cr)
{
    free(cr->suite);
    free(cr->id);
    for (size_t t = 0; t < cr->n_tags; t++)
        free(cr->tags[t]);
    free(cr->tags);
    free(cr->prompt);
    for (size_t s = 0; s < cr->n_samples; s++) {
        free(cr->samples[s].output);
        for (size_t a = 0; a < cr->samples[s].n_asserts; a++)
            free(cr->samples[s].asserts[a].detail);
        free(cr->samples[s].asserts);
    }
    free(cr->samples);
    free(cr->ll);
    free(cr->choice_bytes);
}

void whet_eval_results_free(whet_eval_results *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_cases; i++)
        free_case_result(&r->cases[i]);
    free(r->cases);
    for (size_t i = 0; i < r->n_suites; i++) {
        whet_eval_suite_result *sr = &r->suites[i];
        free(sr->name);
        free(sr->path);
        free(sr->must_pass_tag);
        for (size_t t = 0; t < sr->n_tags; t++)
            free(sr->tags[t].tag);
        free(sr->tags);
        free(sr->cmp.flips);
        for (size_t g = 0; g < sr->n_gate_reasons; g++)
            free(sr->gate_reasons[g]);
        free(sr->gate_reasons);
    }
    free(r->suites);
    free(r->model);
    free(r->adapter);
    free(r->baseline);
    free(r);
}
