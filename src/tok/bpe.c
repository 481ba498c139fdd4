/* The BPE model: vocabulary and merge tables (xxHash, open addressing) and the
 * merge loop of HF tokenizers' models/bpe/word.rs: a binary heap of candidate
 * pairs ordered by (rank, position) over a doubly linked list of symbols, so
 * a word of n characters costs O(n log n) rather than O(n^2). */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "tok/tok_internal.h"

struct tok_symbol {
    int32_t id;
    int32_t prev, next; /* -1 at the ends */
    uint32_t len;       /* bytes covered; 0 once merged into its left neighbour */
};

struct tok_merge_entry {
    uint32_t rank, pos, merged;
};

/* ---- vocabulary ---- */

int tok_vocab_init(tok_vocab *v, size_t n_ids)
{
    memset(v, 0, sizeof *v);
    v->n = n_ids;
    v->text = calloc(n_ids ? n_ids : 1, sizeof *v->text);
    v->len = calloc(n_ids ? n_ids : 1, sizeof *v->len);
    v->special = calloc(n_ids ? n_ids : 1, 1);
    v->offsets = malloc((n_ids ? n_ids : 1) * sizeof *v->offsets);
    if (!v->text || !v->len || !v->special || !v->offsets)
        return -1;
    for (size_t i = 0; i < n_ids; i++)
        v->offsets[i] = SIZE_MAX;
    return 0;
}

int tok_vocab_set(tok_vocab *v, uint32_t id, const char *text, size_t len)
{
    if (id >= v->n || v->offsets[id] != SIZE_MAX || len > UINT32_MAX)
        return -1;
    v->offsets[id] = v->strings.len;
    v->len[id] = (uint32_t)len;
    tok_buf_append(&v->strings, text, len);
    tok_buf_append(&v->strings, "", 1); /* each token NUL-terminated, for convenience */
    return v->strings.oom ? -1 : 0;
}

static uint64_t hash_bytes(const char *text, size_t len)
{
    return XXH3_64bits(text, len);
}

int tok_vocab_freeze(tok_vocab *v)
{
    if (v->strings.oom)
        return -1;
    size_t size = 16;
    while (size < v->n * 2)
        size *= 2;
    v->slots = calloc(size, sizeof *v->slots);
    if (!v->slots)
        return -1;
    v->mask = size - 1;
    for (size_t id = 0; id < v->n; id++) {
        if (v->offsets[id] == SIZE_MAX)
            continue;
        v->text[id] = v->strings.data + v->offsets[id];
        size_t slot = hash_bytes(v->text[id], v->len[id]) & v->mask;
        while (v->slots[slot]) {
            uint32_t other = v->slots[slot] - 1;
            /* two ids with the same string: the first keeps the lookup */
            if (v->len[other] == v->len[id] && memcmp(v->text[other], v->text[id], v->len[id]) == 0)
                break;
            slot = (slot + 1) & v->mask;
        }
        if (!v->slots[slot])
            v->slots[slot] = (uint32_t)id + 1;
    }
    free(v->offsets);
    v->offsets = NULL;
    return 0;
}

int32_t tok_vocab_find(const tok_vocab *v, const char *text, size_t len)
{
    if (!v->slots)
        return -1;
    size_t slot = hash_bytes(text, len) & v->mask;
    while (v->slots[slot]) {
        uint32_t id = v->slots[slot] - 1;
        if (v->len[id] == len && memcmp(v->text[id], text, len) == 0)
            return (int32_t)id;
        slot = (slot + 1) & v->mask;
    }
    return -1;
}

void tok_vocab_free(tok_vocab *v)
{
    free(v->text);
    free(v->len);
    free(v->special);
    free(v->slots);
    free(v->offsets);
    tok_buf_free(&v->strings);
    memset(v, 0, sizeof *v);
}

/* ---- merges ---- */

static uint64_t hash_pair(uint64_t key)
{
    return XXH3_64bits(&key, sizeof key);
}

int tok_merges_init(tok_merges *m, size_t expected)
{
    memset(m, 0, sizeof *m);
    size_t size = 16;
    while (size < expected * 2)
        size *= 2;
    m->slots = malloc(size * sizeof *m->slots);
    if (!m->slots)
        return -1;
    for (size_t i = 0; i < size; i++)
        m->slots[i].key = UINT64_MAX;
    m->mask = size - 1;
    return 0;
}

static int merges_grow(tok_merges *m)
{
    tok_merges bigger;
    if (tok_merges_init(&bigger, (m->mask + 1)) != 0)
        return -1;
    for (size_t i = 0; i <= m->mask; i++) {
        const tok_merge_slot *s = &m->slots[i];
        if (s->key != UINT64_MAX)
            tok_merges_put(&bigger, (uint32_t)(s->key >> 32), (uint32_t)s->key, s->rank, s->merged);
    }
    free(m->slots);
    *m = bigger;
    return 0;
}

int tok_merges_put(tok_merges *m, uint32_t left, uint32_t right, uint32_t rank, uint32_t merged)
{
    if ((m->count + 1) * 2 > m->mask + 1 && merges_grow(m) != 0)
        return -1;
    uint64_t key = (uint64_t)left << 32 | right;
    size_t slot = hash_pair(key) & m->mask;
    while (m->slots[slot].key != UINT64_MAX && m->slots[slot].key != key)
        slot = (slot + 1) & m->mask;
    if (m->slots[slot].key == UINT64_MAX)
        m->count++;
    m->slots[slot].key = key;
    m->slots[slot].rank = rank;
    m->slots[slot].merged = merged;
    return 0;
}

const tok_merge_slot *tok_merges_find(const tok_merges *m, uint32_t left, uint32_t right)
{
    if (!m->slots)
        return NULL;
    uint64_t key = (uint64_t)left << 32 | right;
    size_t slot = hash_pair(key) & m->mask;
    while (m->slots[slot].key != UINT64_MAX) {
        if (m->slots[slot].key == key)
            return &m->slots[slot];
        slot = (slot + 1) & m->mask;
    }
    return NULL;
}

void tok_merges_free(tok_merges *m)
{
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* ---- one word ---- */

static int entry_before(const struct tok_merge_entry *a, const struct tok_merge_entry *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(struct tok_merge_entry *heap, size_t *n, struct tok_merge_entry e)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!entry_before(&e, &heap[parent]))
            break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = e;
}

static struct tok_merge_entry heap_pop(struct tok_merge_entry *heap, size_t *n)
{
    struct tok_merge_entry top = heap[0];
    struct tok_merge_entry last = heap[--*n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= *n)
            break;
        if (child + 1 < *n && entry_before(&heap[child + 1], &heap[child]))
            child++;
        if (!entry_before(&heap[child], &last))
            break;
        heap[i] = heap[child];
        i = child;
    }
    if (*n)
        heap[i] = last;
    return top;
}

static int push_id(int32_t **out, size_t *n, size_t *cap, int32_t id)
{
    if (*n == *cap) {
        size_t grown = *cap ? *cap * 2 : 64;
        int32_t *bigger = realloc(*out, grown * sizeof *bigger);
        if (!bigger)
            return -1;
        *out = bigger;
        *cap = grown;
    }
    (*out)[(*n)++] = id;
    return 0;
}

static int scratch_reserve(tok_bpe_scratch *s, size_t n_symbols)
{
    if (n_symbols > s->symbols_cap) {
        size_t cap = n_symbols < 64 ? 64 : n_symbols * 2;
        struct tok_symbol *sym = realloc(s->symbols, cap * sizeof *sym);
        if (!sym)
            return -1;
        s->symbols = sym;
        s->symbols_cap = cap;
    }
    /* every merge pushes at most two entries, plus the initial pairs */
    if (3 * n_symbols > s->heap_cap) {
        size_t cap = 3 * n_symbols < 192 ? 192 : 6 * n_symbols;
        struct tok_merge_entry *heap = realloc(s->heap, cap * sizeof *heap);
        if (!heap)
            return -1;
        s->heap = heap;
        s->heap_cap = cap;
    }
    return 0;
}

static void add_symbol(tok_bpe_scratch *s, size_t *n, int32_t id, uint32_t len)
{
    struct tok_symbol *sym = &s->symbols[*n];
    sym->id = id;
    sym->len = len;
    sym->prev = (int32_t)*n - 1;
    sym->next = -1;
    if (*n)
        s->symbols[*n - 1].next = (int32_t)*n;
    (*n)++;
}

#define METASPACE "\xE2\x96\x81"

/* Whether a ▁ starts at word[i] (i > 0) after another character than ▁. */
static int metaspace_run_starts(const char *word, size_t i, size_t len)
{
    return i + 3 <= len && memcmp(word + i, METASPACE, 3) == 0 && !(i >= 3 && memcmp(word + i - 3, METASPACE, 3) == 0);
}

void tok_bpe_prepare(tok_bpe *bpe)
{
    const tok_vocab *v = &bpe->vocab;
    bpe->cut_before_metaspace = 0;
    if (bpe->ignore_merges || tok_vocab_find(v, METASPACE, 3) < 0)
        return;
    for (size_t id = 0; id < v->n; id++)
        for (size_t i = 1; v->text[id] && i < v->len[id]; i++)
            if (metaspace_run_starts(v->text[id], i, v->len[id]))
                return;
    bpe->cut_before_metaspace = 1;
}

static void bpe_word(const tok_bpe *bpe, const char *word, size_t len, tok_bpe_scratch *scratch, int32_t **out,
                     size_t *n_out, size_t *cap_out);

void tok_bpe_word(const tok_bpe *bpe, const char *word, size_t len, tok_bpe_scratch *scratch, int32_t **out,
                  size_t *n_out, size_t *cap_out)
{
    if (!bpe->cut_before_metaspace) {
        bpe_word(bpe, word, len, scratch, out, n_out, cap_out);
        return;
    }
    size_t start = 0;
    for (size_t i = 1; i < len; i++)
        if ((unsigned char)word[i] == 0xE2 && metaspace_run_starts(word, i, len)) {
            bpe_word(bpe, word + start, i - start, scratch, out, n_out, cap_out);
            start = i;
        }
    bpe_word(bpe, word + start, len - start, scratch, out, n_out, cap_out);
}

static void bpe_word(const tok_bpe *bpe, const char *word, size_t len, tok_bpe_scratch *scratch, int32_t **out,
                     size_t *n_out, size_t *cap_out)
{
    if (len == 0 || scratch->oom)
        return;
    if (bpe->ignore_merges) {
        int32_t whole = tok_vocab_find(&bpe->vocab, word, len);
        if (whole >= 0) {
            if (push_id(out, n_out, cap_out, whole) != 0)
                scratch->oom = 1;
            return;
        }
    }
    /* at most one symbol per byte (byte fallback), plus a pending unknown */
    if (len > INT32_MAX / 4 || scratch_reserve(scratch, len + 1) != 0) {
        scratch->oom = 1;
        return;
    }
    const unsigned char *u = (const unsigned char *)word;
    size_t n = 0;
    int32_t unk_pending = -1; /* HF's `unk`: an unknown run not yet added */
    uint32_t unk_len = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t step = tok_utf8_decode(u + i, len - i, &cp);
        if (!step)
            step = 1; /* not reached: words are valid UTF-8 */
        int32_t id = tok_vocab_find(&bpe->vocab, word + i, step);
        if (id >= 0) {
            if (unk_pending >= 0) {
                add_symbol(scratch, &n, unk_pending, unk_len);
                unk_pending = -1;
            }
            add_symbol(scratch, &n, id, (uint32_t)step);
        } else {
            int fell_back = 0;
            if (bpe->byte_fallback) {
                fell_back = 1;
                for (size_t b = 0; b < step; b++)
                    if (bpe->byte_ids[u[i + b]] < 0)
                        fell_back = 0;
                /* As in HF, a pending unknown run is not flushed here. */
                if (fell_back)
                    for (size_t b = 0; b < step; b++)
                        add_symbol(scratch, &n, bpe->byte_ids[u[i + b]], 1);
            }
            if (!fell_back && bpe->unk_id >= 0) {
                if (unk_pending >= 0 && bpe->fuse_unk) {
                    unk_len += (uint32_t)step;
                } else {
                    if (unk_pending >= 0)
                        add_symbol(scratch, &n, unk_pending, unk_len);
                    unk_pending = bpe->unk_id;
                    unk_len = (uint32_t)step;
                }
            }
            /* no unk token and no byte fallback: the character is dropped, as in HF */
        }
        i += step;
    }
    if (unk_pending >= 0)
        add_symbol(scratch, &n, unk_pending, unk_len);

    struct tok_symbol *sym = scratch->symbols;
    struct tok_merge_entry *heap = scratch->heap;
    size_t heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const tok_merge_slot *m = tok_merges_find(&bpe->merges, (uint32_t)sym[i].id, (uint32_t)sym[i + 1].id);
        if (m)
            heap_push(heap, &heap_n, (struct tok_merge_entry){m->rank, (uint32_t)i, m->merged});
    }
    while (heap_n) {
        struct tok_merge_entry top = heap_pop(heap, &heap_n);
        struct tok_symbol *cur = &sym[top.pos];
        if (cur->len == 0 || cur->next < 0)
            continue;
        struct tok_symbol right = sym[cur->next];
        const tok_merge_slot *m = tok_merges_find(&bpe->merges, (uint32_t)cur->id, (uint32_t)right.id);
        if (!m || m->merged != top.merged)
            continue; /* a stale entry: one side was merged since */
        sym[cur->next].len = 0;
        cur->id = (int32_t)top.merged;
        cur->len += right.len;
        cur->next = right.next;
        if (right.next >= 0)
            sym[right.next].prev = (int32_t)top.pos;
        if (cur->prev >= 0) {
            m = tok_merges_find(&bpe->merges, (uint32_t)sym[cur->prev].id, (uint32_t)cur->id);
            if (m)
                heap_push(heap, &heap_n, (struct tok_merge_entry){m->rank, (uint32_t)cur->prev, m->merged});
        }
        if (cur->next >= 0) {
            m = tok_merges_find(&bpe->merges, (uint32_t)cur->id, (uint32_t)sym[cur->next].id);
            if (m)
                heap_push(heap, &heap_n, (struct tok_merge_entry){m->rank, top.pos, m->merged});
        }
    }
    for (int32_t i = n ? 0 : -1; i >= 0; i = sym[i].next)
        if (push_id(out, n_out, cap_out, sym[i].id) != 0) {
            scratch->oom = 1;
            return;
        }
}

void tok_bpe_scratch_free(tok_bpe_scratch *scratch)
{
    free(scratch->symbols);
    free(scratch->heap);
    memset(scratch, 0, sizeof *scratch);
}
