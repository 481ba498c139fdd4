#include "io/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/json.h"

/* Tensor data is handed out as it lies in the file (little-endian). */
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "whet's safetensors views assume a little-endian host"
#endif

static const struct {
    const char *name;
    unsigned bits;
} dtype_info[WHET_ST_DTYPE_COUNT] = {
    [WHET_ST_BOOL] = {"BOOL", 8},
    [WHET_ST_F4] = {"F4", 4},
    [WHET_ST_F6_E2M3] = {"F6_E2M3", 6},
    [WHET_ST_F6_E3M2] = {"F6_E3M2", 6},
    [WHET_ST_U8] = {"U8", 8},
    [WHET_ST_I8] = {"I8", 8},
    [WHET_ST_F8_E5M2] = {"F8_E5M2", 8},
    [WHET_ST_F8_E4M3] = {"F8_E4M3", 8},
    [WHET_ST_F8_E8M0] = {"F8_E8M0", 8},
    [WHET_ST_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8},
    [WHET_ST_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8},
    [WHET_ST_I16] = {"I16", 16},
    [WHET_ST_U16] = {"U16", 16},
    [WHET_ST_F16] = {"F16", 16},
    [WHET_ST_BF16] = {"BF16", 16},
    [WHET_ST_I32] = {"I32", 32},
    [WHET_ST_U32] = {"U32", 32},
    [WHET_ST_F32] = {"F32", 32},
    [WHET_ST_C64] = {"C64", 64},
    [WHET_ST_F64] = {"F64", 64},
    [WHET_ST_I64] = {"I64", 64},
    [WHET_ST_U64] = {"U64", 64},
};

const char *whet_st_dtype_name(whet_st_dtype dtype)
{
    return (int)dtype >= 0 && dtype < WHET_ST_DTYPE_COUNT ? dtype_info[dtype].name : "unknown";
}

unsigned whet_st_dtype_bits(whet_st_dtype dtype)
{
    return (int)dtype >= 0 && dtype < WHET_ST_DTYPE_COUNT ? dtype_info[dtype].bits : 0;
}

int whet_st_dtype_from_name(const char *name, size_t len)
{
    for (int d = 0; d < WHET_ST_DTYPE_COUNT; d++)
        if (strlen(dtype_info[d].name) == len && memcmp(dtype_info[d].name, name, len) == 0)
            return d;
    return -1;
}

/* ---- reader ---- */

typedef struct st_shard {
    char *path;
    whet_map map; /* empty when the image came from memory */
    whet_json_doc *header;
    int64_t *dims; /* the shapes of all its tensors */
} st_shard;

struct whet_safetensors {
    char *name;
    st_shard *shards;
    size_t shard_count;
    whet_st_tensor *tensors; /* sorted by name once complete */
    size_t count, cap;
    whet_st_kv *metadata;
    size_t metadata_count;
};

void whet_st_close(whet_safetensors *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->shard_count; i++) {
        st_shard *sh = &st->shards[i];
        whet_unmap(&sh->map);
        whet_json_free(sh->header);
        free(sh->dims);
        free(sh->path);
    }
    free(st->shards);
    free(st->tensors);
    free(st->metadata);
    free(st->name);
    free(st);
}

static whet_safetensors *st_new(const char *name, size_t shard_count, whet_err *e)
{
    whet_safetensors *st = calloc(1, sizeof *st);
    if (st && (st->name = strdup(name)) && (st->shards = calloc(shard_count ? shard_count : 1, sizeof *st->shards)))
        return st;
    whet_st_close(st);
    whet_fail(e, "%s: out of memory", name);
    return NULL;
}

static uint64_t read_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void write_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void format_shape(const int64_t *shape, size_t rank, char *buf, size_t cap)
{
    size_t o = 0;
    o += (size_t)snprintf(buf, cap, "[");
    for (size_t i = 0; i < rank && o + 24 < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (o + 24 >= cap && rank)
        o += (size_t)snprintf(buf + o, cap - o, ", ...");
    snprintf(buf + o, cap - o, "]");
}

/* Elements and bytes of dtype × shape; -1 on overflow or a partial byte. */
static int tensor_size(whet_st_dtype dtype, const int64_t *shape, size_t rank, uint64_t *numel, uint64_t *nbytes)
{
    uint64_t n = 1;
    for (size_t i = 0; i < rank; i++)
        if (shape[i] == 0)
            n = 0;
    for (size_t i = 0; i < rank && n; i++) {
        uint64_t d = (uint64_t)shape[i];
        if (n > UINT64_MAX / d)
            return -1;
        n *= d;
    }
    uint64_t bits = dtype_info[dtype].bits;
    if (n > UINT64_MAX / bits || (n * bits) % 8 != 0)
        return -1;
    *numel = n;
    *nbytes = n * bits / 8;
    return 0;
}

/* Like whet_json_fail_at, pointing at a key rather than a value. */
static int fail_at_key(whet_err *e, const whet_json_doc *doc, const whet_json_member *m, const char *expected)
{
    return whet_fail(e, "%s: line %" PRIu32 ", column %" PRIu32 " (byte %zu): expected %s, found a key holding U+0000",
                     whet_json_doc_name(doc), m->line, m->column, m->offset, expected);
}

static int push_tensor(whet_safetensors *st, const whet_st_tensor *t, whet_err *e)
{
    if (st->count == st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 64;
        whet_st_tensor *bigger = realloc(st->tensors, cap * sizeof *bigger);
        if (!bigger)
            return whet_fail(e, "%s: out of memory", st->name);
        st->tensors = bigger;
        st->cap = cap;
    }
    st->tensors[st->count++] = *t;
    return 0;
}

static int compare_by_offsets(const void *x, const void *y)
{
    const whet_st_tensor *a = *(const whet_st_tensor *const *)x, *b = *(const whet_st_tensor *const *)y;
    if (a->data_begin != b->data_begin)
        return a->data_begin < b->data_begin ? -1 : 1;
    if (a->data_end != b->data_end)
        return a->data_end < b->data_end ? -1 : 1;
    return strcmp(a->name, b->name);
}

static int compare_by_name(const void *x, const void *y)
{
    return strcmp(((const whet_st_tensor *)x)->name, ((const whet_st_tensor *)y)->name);
}

static int read_metadata(whet_safetensors *st, const whet_json_doc *doc, const whet_json *meta, int keep,
                         whet_err *e)
{
    if (meta->type != WHET_JSON_OBJECT)
        return whet_json_fail_at(e, doc, meta, "__metadata__ to be an object of strings");
    size_t n = meta->u.object.count;
    for (size_t i = 0; i < n; i++) {
        const whet_json_member *m = &meta->u.object.members[i];
        if (strlen(m->key) != m->key_len)
            return fail_at_key(e, doc, m, "a metadata key without U+0000");
        if (m->value.type != WHET_JSON_STRING || strlen(m->value.u.string.chars) != m->value.u.string.len)
            return whet_json_fail_at(e, doc, &m->value, "a string (without U+0000) for metadata key \"%s\"", m->key);
    }
    if (!keep || !n)
        return 0;
    st->metadata = malloc(n * sizeof *st->metadata);
    if (!st->metadata)
        return whet_fail(e, "%s: out of memory", st->name);
    for (size_t i = 0; i < n; i++) {
        st->metadata[i].key = meta->u.object.members[i].key;
        st->metadata[i].value = meta->u.object.members[i].value.u.string.chars;
    }
    st->metadata_count = n;
    return 0;
}

/* Reads one tensor's header entry (shape into dims). */
static int read_tensor_entry(const whet_json_doc *doc, const whet_json_member *m, int64_t *dims, whet_st_tensor *t,
                             whet_err *e)
{
    const whet_json *v = &m->value;
    if (strlen(m->key) != m->key_len)
        return fail_at_key(e, doc, m, "a tensor name without U+0000");
    if (m->key_len == 0) /* the writer cannot write one either */
        return whet_fail(e, "%s: line %" PRIu32 ", column %" PRIu32 " (byte %zu): expected a tensor name, found \"\"",
                         whet_json_doc_name(doc), m->line, m->column, m->offset);
    t->name = m->key;
    if (v->type != WHET_JSON_OBJECT)
        return whet_json_fail_at(e, doc, v, "an object with dtype, shape and data_offsets for tensor \"%s\"", t->name);
    const whet_json *dtype = whet_json_get(v, "dtype");
    const whet_json *shape = whet_json_get(v, "shape");
    const whet_json *offsets = whet_json_get(v, "data_offsets");
    if (!dtype)
        return whet_json_fail_missing(e, doc, v, "dtype");
    if (!shape)
        return whet_json_fail_missing(e, doc, v, "shape");
    if (!offsets)
        return whet_json_fail_missing(e, doc, v, "data_offsets");
    int d = dtype->type == WHET_JSON_STRING ? whet_st_dtype_from_name(dtype->u.string.chars, dtype->u.string.len) : -1;
    if (d < 0)
        return whet_json_fail_at(e, doc, dtype, "a safetensors dtype (F32, F16, BF16, I64 ...) for tensor \"%s\"",
                                 t->name);
    t->dtype = (whet_st_dtype)d;
    if (shape->type != WHET_JSON_ARRAY)
        return whet_json_fail_at(e, doc, shape, "an array of dimensions for tensor \"%s\"", t->name);
    t->rank = shape->u.array.count;
    for (size_t i = 0; i < t->rank; i++)
        if (whet_json_int64(doc, &shape->u.array.items[i], 0, INT64_MAX, &dims[i], e) != 0)
            return -1;
    t->shape = dims;
    uint64_t expected_bytes;
    if (tensor_size(t->dtype, dims, t->rank, &t->numel, &expected_bytes) != 0) {
        char shown[128];
        format_shape(dims, t->rank, shown, sizeof shown);
        return whet_fail(e, "%s: tensor \"%s\": %s × %s is not a whole number of bytes below 2^64",
                         whet_json_doc_name(doc), t->name, whet_st_dtype_name(t->dtype), shown);
    }
    if (offsets->type != WHET_JSON_ARRAY || offsets->u.array.count != 2)
        return whet_json_fail_at(e, doc, offsets, "data_offsets [BEGIN, END] for tensor \"%s\"", t->name);
    int64_t begin, end;
    if (whet_json_int64(doc, &offsets->u.array.items[0], 0, INT64_MAX, &begin, e) != 0 ||
        whet_json_int64(doc, &offsets->u.array.items[1], begin, INT64_MAX, &end, e) != 0)
        return -1;
    t->data_begin = (uint64_t)begin;
    t->data_end = (uint64_t)end;
    if (t->data_end - t->data_begin != expected_bytes) {
        char shown[128];
        format_shape(dims, t->rank, shown, sizeof shown);
        return whet_fail(e, "%s: tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
                            " bytes, but %s × %s takes %" PRIu64,
                         whet_json_doc_name(doc), t->name, t->data_begin, t->data_end, t->data_end - t->data_begin,
                         whet_st_dtype_name(t->dtype), shown, expected_bytes);
    }
    return 0;
}

/* Validates one safetensors image and appends its tensors to st. */
static int parse_shard(whet_safetensors *st, st_shard *sh, const unsigned char *data, size_t size, int keep_metadata,
                       whet_err *e)
{
    const char *name = sh->path;
    if (size < 8)
        return whet_fail(e, "%s: expected at least 8 bytes (the header length), found %zu: not a safetensors file",
                         name, size);
    uint64_t header_len = read_le64(data);
    if (header_len > WHET_ST_MAX_HEADER_SIZE)
        return whet_fail(e, "%s: header length %" PRIu64 " is above the limit of %u bytes: not a safetensors file",
                         name, header_len, WHET_ST_MAX_HEADER_SIZE);
    if (header_len > size - 8)
        return whet_fail(e, "%s: header length %" PRIu64 " runs past the end of the file (%zu bytes): truncated?",
                         name, header_len, size);
    if (header_len == 0)
        return whet_fail(e, "%s: byte 8: expected a JSON header, found an empty one", name);
    if (data[8] != '{') {
        if (data[8] >= 0x20 && data[8] < 0x7F)
            return whet_fail(e, "%s: byte 8: expected the JSON header to start with '{', found '%c'", name, data[8]);
        return whet_fail(e, "%s: byte 8: expected the JSON header to start with '{', found byte 0x%02X", name,
                         data[8]);
    }
    whet_json_options options = {.max_depth = 64, .max_size = WHET_ST_MAX_HEADER_SIZE, .base_offset = 8};
    if (whet_json_parse(&sh->header, (const char *)data + 8, header_len, name, &options, e) != 0)
        return -1;
    const whet_json_doc *doc = sh->header;
    const whet_json *root = whet_json_root(doc);
    const unsigned char *section = data + 8 + header_len;
    size_t section_size = size - 8 - (size_t)header_len;

    size_t total_rank = 0, tensor_count = 0;
    for (size_t i = 0; i < root->u.object.count; i++) {
        const whet_json_member *m = &root->u.object.members[i];
        if (strcmp(m->key, "__metadata__") == 0 && m->key_len == strlen("__metadata__"))
            continue;
        tensor_count++;
        total_rank += whet_json_count(whet_json_get(&m->value, "shape"));
    }
    sh->dims = malloc((total_rank ? total_rank : 1) * sizeof *sh->dims);
    const whet_st_tensor **by_offset = malloc((tensor_count ? tensor_count : 1) * sizeof *by_offset);
    if (!sh->dims || !by_offset) {
        free(by_offset);
        return whet_fail(e, "%s: out of memory", name);
    }
    size_t first = st->count, dims_used = 0;
    int rc = 0;
    for (size_t i = 0; i < root->u.object.count && rc == 0; i++) {
        const whet_json_member *m = &root->u.object.members[i];
        if (strcmp(m->key, "__metadata__") == 0 && m->key_len == strlen("__metadata__")) {
            rc = read_metadata(st, doc, &m->value, keep_metadata, e);
            continue;
        }
        whet_st_tensor t = {.file = sh->path};
        rc = read_tensor_entry(doc, m, sh->dims + dims_used, &t, e);
        if (rc != 0)
            break;
        dims_used += t.rank;
        if (t.data_end > section_size) {
            rc = whet_fail(e, "%s: tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64 "] run past the end of the "
                              "data section (%zu bytes): truncated?",
                           name, t.name, t.data_begin, t.data_end, section_size);
            break;
        }
        t.data = section + t.data_begin;
        t.nbytes = (size_t)(t.data_end - t.data_begin);
        rc = push_tensor(st, &t, e);
    }
    /* The data section is exactly the tensors, end to end: sorted by offset,
     * each begins where the previous one ends, the first at 0, the last at
     * the end of the file. */
    for (size_t i = 0; rc == 0 && i < tensor_count; i++)
        by_offset[i] = &st->tensors[first + i];
    if (rc == 0 && tensor_count)
        qsort(by_offset, tensor_count, sizeof *by_offset, compare_by_offsets);
    uint64_t covered = 0;
    for (size_t i = 0; rc == 0 && i < tensor_count; i++) {
        const whet_st_tensor *t = by_offset[i];
        if (t->data_begin < covered)
            rc = whet_fail(e, "%s: tensors \"%s\" [%" PRIu64 ", %" PRIu64 ") and \"%s\" [%" PRIu64 ", %" PRIu64
                              ") overlap in the data section",
                           name, by_offset[i - 1]->name, by_offset[i - 1]->data_begin, by_offset[i - 1]->data_end,
                           t->name, t->data_begin, t->data_end);
        else if (t->data_begin > covered)
            rc = whet_fail(e, "%s: bytes [%" PRIu64 ", %" PRIu64 ") of the data section belong to no tensor "
                              "(the next is \"%s\")",
                           name, covered, t->data_begin, t->name);
        covered = t->data_end;
    }
    if (rc == 0 && covered != section_size)
        rc = whet_fail(e, "%s: the data section has %zu bytes but its tensors end at byte %" PRIu64
                          ": %" PRIu64 " bytes after them belong to no tensor",
                       name, section_size, covered, (uint64_t)section_size - covered);
    free(by_offset);
    return rc;
}

static int finish_sorted(whet_safetensors *st, whet_err *e)
{
    if (st->count)
        qsort(st->tensors, st->count, sizeof *st->tensors, compare_by_name);
    for (size_t i = 1; i < st->count; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0)
            return whet_fail(e, "%s: tensor \"%s\" is in both %s and %s", st->name, st->tensors[i].name,
                             st->tensors[i - 1].file, st->tensors[i].file);
    return 0;
}

int whet_st_parse(whet_safetensors **out, const void *data, size_t size, const char *name, whet_err *e)
{
    *out = NULL;
    whet_safetensors *st = st_new(name, 1, e);
    if (!st)
        return -1;
    st->shard_count = 1;
    if (!(st->shards[0].path = strdup(name))) {
        whet_st_close(st);
        return whet_fail(e, "%s: out of memory", name);
    }
    if (parse_shard(st, &st->shards[0], data, size, 1, e) != 0 || finish_sorted(st, e) != 0) {
        whet_st_close(st);
        return -1;
    }
    *out = st;
    return 0;
}

int whet_st_open(whet_safetensors **out, const char *path, whet_err *e)
{
    *out = NULL;
    whet_safetensors *st = st_new(path, 1, e);
    if (!st)
        return -1;
    st->shard_count = 1;
    st_shard *sh = &st->shards[0];
    if (!(sh->path = strdup(path))) {
        whet_st_close(st);
        return whet_fail(e, "%s: out of memory", path);
    }
    if (whet_map_file(&sh->map, path, e) != 0 || parse_shard(st, sh, sh->map.data, sh->map.size, 1, e) != 0 ||
        finish_sorted(st, e) != 0) {
        whet_st_close(st);
        return -1;
    }
    *out = st;
    return 0;
}

static int compare_strings(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* Shard names must be plain file names beside the index: an index must not
 * reach outside its model directory. */
static int is_plain_file_name(const char *s, size_t len)
{
    return len > 0 && strlen(s) == len && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

int whet_st_open_index(whet_safetensors **out, const char *index_path, whet_err *e)
{
    *out = NULL;
    whet_json_doc *index = NULL;
    if (whet_json_parse_file(&index, index_path, NULL, e) != 0)
        return -1;
    const whet_json *root = whet_json_root(index);
    const whet_json *map = whet_json_get(root, "weight_map");
    if (root->type != WHET_JSON_OBJECT) {
        whet_json_fail_at(e, index, root, "an object with a weight_map");
        whet_json_free(index);
        return -1;
    }
    if (!map || map->type != WHET_JSON_OBJECT) {
        if (map)
            whet_json_fail_at(e, index, map, "weight_map to be an object of tensor name: shard file");
        else
            whet_json_fail_missing(e, index, root, "weight_map");
        whet_json_free(index);
        return -1;
    }
    size_t n = map->u.object.count;
    const char **files = malloc((n ? n : 1) * sizeof *files);
    if (!files) {
        whet_json_free(index);
        return whet_fail(e, "%s: out of memory", index_path);
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const whet_json_member *m = &map->u.object.members[i];
        if (strlen(m->key) != m->key_len)
            rc = fail_at_key(e, index, m, "a tensor name without U+0000");
        else if (m->value.type != WHET_JSON_STRING ||
                 !is_plain_file_name(m->value.u.string.chars, m->value.u.string.len))
            rc = whet_json_fail_at(e, index, &m->value, "a shard file name beside the index for tensor \"%s\"",
                                   m->key);
        else
            files[i] = m->value.u.string.chars;
    }
    /* the shards in file-name order, each once */
    size_t shard_count = 0;
    if (rc == 0 && n) {
        qsort(files, n, sizeof *files, compare_strings);
        for (size_t i = 0; i < n; i++)
            if (i == 0 || strcmp(files[i], files[shard_count - 1]) != 0)
                files[shard_count++] = files[i];
    }
    whet_safetensors *st = rc == 0 ? st_new(index_path, shard_count, e) : NULL;
    if (!st)
        rc = -1;
    size_t dir_len = strrchr(index_path, '/') ? (size_t)(strrchr(index_path, '/') - index_path) + 1 : 0;
    for (size_t s = 0; s < shard_count && rc == 0; s++) {
        st_shard *sh = &st->shards[s];
        size_t len = dir_len + strlen(files[s]) + 1;
        if (!(sh->path = malloc(len))) {
            rc = whet_fail(e, "%s: out of memory", index_path);
            break;
        }
        st->shard_count++;
        memcpy(sh->path, index_path, dir_len);
        strcpy(sh->path + dir_len, files[s]);
        rc = whet_map_file(&sh->map, sh->path, e);
        if (rc == 0)
            rc = parse_shard(st, sh, sh->map.data, sh->map.size, s == 0, e);
    }
    if (rc == 0)
        rc = finish_sorted(st, e);
    /* The index and the shards must agree on every tensor and its shard.
     * metadata.total_size is informational and not checked: exporters
     * disagree on what it counts (tied weights, padding). */
    for (size_t i = 0; i < n && rc == 0; i++) {
        const whet_json_member *m = &map->u.object.members[i];
        const whet_st_tensor *t = whet_st_find(st, m->key);
        const char *file = m->value.u.string.chars;
        if (!t)
            rc = whet_fail(e, "%s: tensor \"%s\" is listed in the index under %s, but that shard does not hold it",
                           index_path, m->key, file);
        else if (strcmp(t->file + dir_len, file) != 0)
            rc = whet_fail(e, "%s: the index puts tensor \"%s\" in %s, but it is in %s", index_path, m->key, file,
                           t->file);
    }
    for (size_t i = 0; rc == 0 && i < st->count; i++)
        if (!whet_json_get(map, st->tensors[i].name))
            rc = whet_fail(e, "%s: shard %s holds tensor \"%s\", which the index does not list", index_path,
                           st->tensors[i].file, st->tensors[i].name);
    free(files);
    whet_json_free(index);
    if (rc != 0) {
        whet_st_close(st);
        return -1;
    }
    *out = st;
    return 0;
}

int whet_st_open_dir(whet_safetensors **out, const char *dir, whet_err *e)
{
    *out = NULL;
    size_t len = strlen(dir) + sizeof "/model.safetensors.index.json";
    char *path = malloc(len);
    if (!path)
        return whet_fail(e, "%s: out of memory", dir);
    snprintf(path, len, "%s/model.safetensors.index.json", dir);
    struct stat info;
    int rc;
    if (stat(path, &info) == 0) {
        rc = whet_st_open_index(out, path, e);
    } else {
        snprintf(path, len, "%s/model.safetensors", dir);
        if (stat(path, &info) != 0 && errno == ENOENT)
            rc = whet_fail(e, "%s: no model.safetensors.index.json and no model.safetensors in it", dir);
        else
            rc = whet_st_open(out, path, e);
    }
    free(path);
    return rc;
}

const char *whet_st_name(const whet_safetensors *st)
{
    return st->name;
}

size_t whet_st_count(const whet_safetensors *st)
{
    return st->count;
}

const whet_st_tensor *whet_st_tensor_at(const whet_safetensors *st, size_t i)
{
    return i < st->count ? &st->tensors[i] : NULL;
}

const whet_st_tensor *whet_st_find(const whet_safetensors *st, const char *name)
{
    size_t lo = 0, hi = st->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->tensors[mid].name, name);
        if (c == 0)
            return &st->tensors[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t whet_st_metadata_count(const whet_safetensors *st)
{
    return st->metadata_count;
}

const whet_st_kv *whet_st_metadata_at(const whet_safetensors *st, size_t i)
{
    return i < st->metadata_count ? &st->metadata[i] : NULL;
}

const char *whet_st_metadata(const whet_safetensors *st, const char *key)
{
    for (size_t i = 0; i < st->metadata_count; i++)
        if (strcmp(st->metadata[i].key, key) == 0)
            return st->metadata[i].value;
    return NULL;
}

/* ---- conversion to floats ---- */

/* Elements per step: the source is copied into an aligned buffer first, since
 * views have any alignment. */
enum { CONVERT_CHUNK = 4096 };

static int refuse_dtype(const whet_st_tensor *t, const char *as, whet_err *e)
{
    return whet_fail(e, "%s: tensor \"%s\" has dtype %s; only F32, F16 and BF16 tensors can be loaded as %s", t->file,
                     t->name, whet_st_dtype_name(t->dtype), as);
}

int whet_st_load_f32(const whet_st_tensor *t, float *dst, const whet_kernels *k, whet_err *e)
{
    if (!k)
        k = whet_kernels_best();
    const unsigned char *src = t->data;
    size_t n = (size_t)t->numel;
    switch (t->dtype) {
    case WHET_ST_F32:
        if (n)
            memcpy(dst, src, n * sizeof *dst);
        return 0;
    case WHET_ST_BF16:
    case WHET_ST_F16: {
        uint16_t chunk[CONVERT_CHUNK];
        for (size_t i = 0; i < n; i += CONVERT_CHUNK) {
            size_t m = n - i < CONVERT_CHUNK ? n - i : CONVERT_CHUNK;
            memcpy(chunk, src + 2 * i, 2 * m);
            if (t->dtype == WHET_ST_BF16)
                k->bf16_to_f32(dst + i, chunk, m);
            else
                k->f16_to_f32(dst + i, chunk, m);
        }
        return 0;
    }
    default:
        return refuse_dtype(t, "float", e);
    }
}

int whet_st_load_bf16(const whet_st_tensor *t, whet_bf16 *dst, const whet_kernels *k, whet_err *e)
{
    if (!k)
        k = whet_kernels_best();
    const unsigned char *src = t->data;
    size_t n = (size_t)t->numel;
    switch (t->dtype) {
    case WHET_ST_BF16:
        if (n)
            memcpy(dst, src, 2 * n);
        return 0;
    case WHET_ST_F32:
    case WHET_ST_F16: {
        float chunk[CONVERT_CHUNK];
        uint16_t half[CONVERT_CHUNK];
        for (size_t i = 0; i < n; i += CONVERT_CHUNK) {
            size_t m = n - i < CONVERT_CHUNK ? n - i : CONVERT_CHUNK;
            if (t->dtype == WHET_ST_F32) {
                memcpy(chunk, src + 4 * i, 4 * m);
            } else {
                memcpy(half, src + 2 * i, 2 * m);
                k->f16_to_f32(chunk, half, m);
            }
            k->f32_to_bf16(dst + i, chunk, m);
        }
        return 0;
    }
    default:
        return refuse_dtype(t, "bfloat16", e);
    }
}

/* ---- writer ---- */

typedef struct write_item {
    const whet_st_entry *entry;
    uint64_t nbytes;
} write_item;

/* The reference writer's order: descending dtype (largest alignment first),
 * then name, so packing without padding keeps every tensor aligned. */
static int compare_write_order(const void *x, const void *y)
{
    const whet_st_entry *a = ((const write_item *)x)->entry, *b = ((const write_item *)y)->entry;
    if (a->dtype != b->dtype)
        return a->dtype > b->dtype ? -1 : 1;
    return strcmp(a->name, b->name);
}

static int compare_kv(const void *x, const void *y)
{
    return strcmp(((const whet_st_kv *)x)->key, ((const whet_st_kv *)y)->key);
}

static int compare_entry_names(const void *x, const void *y)
{
    return strcmp((*(const whet_st_entry *const *)x)->name, (*(const whet_st_entry *const *)y)->name);
}

/* Checks the entries; fills items in write order and meta sorted by key. */
static int prepare_write(const char *name, const whet_st_entry *tensors, size_t count, const whet_st_kv *metadata,
                         size_t metadata_count, write_item *items, const whet_st_entry **names, whet_st_kv *meta,
                         whet_err *e)
{
    for (size_t i = 0; i < count; i++) {
        const whet_st_entry *t = &tensors[i];
        if (!t->name || !t->name[0] || strcmp(t->name, "__metadata__") == 0)
            return whet_fail(e, "%s: tensor %zu: a tensor needs a name, and \"__metadata__\" is not one", name, i);
        if ((int)t->dtype < 0 || t->dtype >= WHET_ST_DTYPE_COUNT)
            return whet_fail(e, "%s: tensor \"%s\": unknown dtype %d", name, t->name, (int)t->dtype);
        for (size_t d = 0; d < t->rank; d++)
            if (t->shape[d] < 0)
                return whet_fail(e, "%s: tensor \"%s\": dimension %zu is negative (%" PRId64 ")", name, t->name, d,
                                 t->shape[d]);
        uint64_t numel;
        if (tensor_size(t->dtype, t->shape, t->rank, &numel, &items[i].nbytes) != 0 || items[i].nbytes > SIZE_MAX) {
            char shown[128];
            format_shape(t->shape, t->rank, shown, sizeof shown);
            return whet_fail(e, "%s: tensor \"%s\": %s × %s is not a whole number of bytes that fits in memory", name,
                             t->name, whet_st_dtype_name(t->dtype), shown);
        }
        if (items[i].nbytes && !t->data)
            return whet_fail(e, "%s: tensor \"%s\": no data", name, t->name);
        items[i].entry = t;
        names[i] = t;
    }
    if (count) {
        qsort(names, count, sizeof *names, compare_entry_names);
        for (size_t i = 1; i < count; i++)
            if (strcmp(names[i - 1]->name, names[i]->name) == 0)
                return whet_fail(e, "%s: tensor \"%s\" given twice", name, names[i]->name);
        qsort(items, count, sizeof *items, compare_write_order);
    }
    if (metadata_count)
        memcpy(meta, metadata, metadata_count * sizeof *meta);
    for (size_t i = 0; i < metadata_count; i++)
        if (!meta[i].key || !meta[i].value)
            return whet_fail(e, "%s: metadata entry %zu has no key or no value", name, i);
    if (metadata_count)
        qsort(meta, metadata_count, sizeof *meta, compare_kv);
    for (size_t i = 1; i < metadata_count; i++)
        if (strcmp(meta[i - 1].key, meta[i].key) == 0)
            return whet_fail(e, "%s: metadata key \"%s\" given twice", name, meta[i].key);
    return 0;
}

static void write_header_json(whet_json_writer *w, const write_item *items, size_t count, const whet_st_kv *meta,
                              size_t metadata_count)
{
    whet_json_begin_object(w);
    whet_json_key(w, "__metadata__");
    whet_json_begin_object(w);
    int has_format = 0;
    for (size_t i = 0; i < metadata_count; i++)
        has_format |= strcmp(meta[i].key, "format") == 0;
    /* Loaders (transformers) want "format"; "pt" is what HF writes. Kept in key order. */
    int format_written = has_format;
    for (size_t i = 0; i <= metadata_count; i++) {
        if (!format_written && (i == metadata_count || strcmp(meta[i].key, "format") > 0)) {
            whet_json_key(w, "format");
            whet_json_write_string(w, "pt");
            format_written = 1;
        }
        if (i == metadata_count)
            break;
        whet_json_key(w, meta[i].key);
        whet_json_write_string(w, meta[i].value);
    }
    whet_json_end_object(w);
    uint64_t offset = 0;
    for (size_t i = 0; i < count; i++) {
        const whet_st_entry *t = items[i].entry;
        whet_json_key(w, t->name);
        whet_json_begin_object(w);
        whet_json_key(w, "dtype");
        whet_json_write_string(w, whet_st_dtype_name(t->dtype));
        whet_json_key(w, "shape");
        whet_json_begin_array(w);
        for (size_t d = 0; d < t->rank; d++)
            whet_json_write_int(w, t->shape[d]);
        whet_json_end_array(w);
        whet_json_key(w, "data_offsets");
        whet_json_begin_array(w);
        whet_json_write_int(w, (int64_t)offset);
        whet_json_write_int(w, (int64_t)(offset + items[i].nbytes));
        whet_json_end_array(w);
        whet_json_end_object(w);
        offset += items[i].nbytes;
    }
    whet_json_end_object(w);
}

int whet_st_write_stream(FILE *f, const char *name, const whet_st_entry *tensors, size_t count,
                         const whet_st_kv *metadata, size_t metadata_count, whet_err *e)
{
    write_item *items = malloc((count ? count : 1) * sizeof *items);
    const whet_st_entry **names = malloc((count ? count : 1) * sizeof *names);
    whet_st_kv *meta = malloc((metadata_count ? metadata_count : 1) * sizeof *meta);
    whet_json_writer w;
    whet_json_writer_init(&w, 0);
    int rc = 0;
    if (!items || !names || !meta)
        rc = whet_fail(e, "%s: out of memory", name);
    if (rc == 0)
        rc = prepare_write(name, tensors, count, metadata, metadata_count, items, names, meta, e);
    const char *header = NULL;
    size_t header_len = 0;
    if (rc == 0) {
        write_header_json(&w, items, count, meta, metadata_count);
        rc = whet_json_writer_finish(&w, name, &header, &header_len, e);
    }
    if (rc == 0) {
        /* Pad with spaces so that the data section starts 8-aligned. */
        size_t padded = (header_len + 7) & ~(size_t)7;
        unsigned char prefix[8];
        write_le64(prefix, padded);
        static const char spaces[8] = "        ";
        errno = 0;
        int ok = fwrite(prefix, 1, 8, f) == 8 && fwrite(header, 1, header_len, f) == header_len &&
                 fwrite(spaces, 1, padded - header_len, f) == padded - header_len;
        for (size_t i = 0; ok && i < count; i++)
            if (items[i].nbytes)
                ok = fwrite(items[i].entry->data, 1, (size_t)items[i].nbytes, f) == items[i].nbytes;
        if (!ok)
            rc = whet_fail(e, "%s: write failed: %s", name, strerror(errno ? errno : EIO));
    }
    whet_json_writer_free(&w);
    free(items);
    free(names);
    free(meta);
    return rc;
}

int whet_st_write(const char *path, const whet_st_entry *tensors, size_t count, const whet_st_kv *metadata,
                  size_t metadata_count, whet_err *e)
{
    whet_atomic_file a;
    if (whet_atomic_open(&a, path, e) != 0)
        return -1;
    if (whet_st_write_stream(a.f, path, tensors, count, metadata, metadata_count, e) != 0) {
        whet_atomic_abort(&a);
        return -1;
    }
    return whet_atomic_commit(&a, e);
}

/* ---- model directories ---- */

static const char single_file_name[] = "model.safetensors";
static const char index_file_name[] = "model.safetensors.index.json";

static char *join_path(const char *dir, const char *name)
{
    size_t len = strlen(dir) + strlen(name) + 2;
    char *path = malloc(len);
    if (path)
        snprintf(path, len, "%s/%s", dir, name);
    return path;
}

/* Whether name is "model-NNNNN-of-NNNNN.safetensors" (save_pretrained's shard names). */
static int is_shard_name(const char *name)
{
    static const char pattern[] = "model-#####-of-#####.safetensors";
    if (strlen(name) != sizeof pattern - 1)
        return 0;
    for (size_t i = 0; pattern[i]; i++)
        if (pattern[i] == '#' ? !(name[i] >= '0' && name[i] <= '9') : name[i] != pattern[i])
            return 0;
    return 1;
}

/* Removes the weights files of an earlier save that the new one did not write. */
static int remove_stale_weights(const char *dir, size_t shard_count, whet_err *e)
{
    char keep[64] = "";
    if (shard_count > 1)
        snprintf(keep, sizeof keep, "-of-%05zu.safetensors", shard_count);
    DIR *d = opendir(dir);
    if (!d)
        return whet_fail(e, "%s: cannot list: %s", dir, strerror(errno));
    int rc = 0;
    struct dirent *entry;
    while (rc == 0 && (entry = readdir(d)) != NULL) {
        const char *name = entry->d_name;
        int stale;
        if (shard_count > 1)
            stale = strcmp(name, single_file_name) == 0 || (is_shard_name(name) && strcmp(name + 11, keep) != 0);
        else
            stale = strcmp(name, index_file_name) == 0 || is_shard_name(name);
        if (!stale)
            continue;
        char *path = join_path(dir, name);
        if (!path)
            rc = whet_fail(e, "%s: out of memory", dir);
        else if (unlink(path) != 0 && errno != ENOENT)
            rc = whet_fail(e, "%s: cannot remove this file of an earlier save: %s", path, strerror(errno));
        free(path);
    }
    closedir(d);
    return rc;
}

static int write_index_file(const char *dir, const whet_st_entry *const *by_name, const size_t *shard_of,
                            size_t count, size_t shard_count, uint64_t total_size, whet_err *e)
{
    char *path = join_path(dir, index_file_name);
    if (!path)
        return whet_fail(e, "%s: out of memory", dir);
    whet_json_writer w;
    whet_json_writer_init(&w, 2);
    whet_json_begin_object(&w);
    whet_json_key(&w, "metadata");
    whet_json_begin_object(&w);
    whet_json_key(&w, "total_size");
    whet_json_write_int(&w, (int64_t)total_size);
    whet_json_end_object(&w);
    whet_json_key(&w, "weight_map");
    whet_json_begin_object(&w);
    for (size_t i = 0; i < count; i++) {
        char file[64];
        snprintf(file, sizeof file, "model-%05zu-of-%05zu.safetensors", shard_of[i] + 1, shard_count);
        whet_json_key(&w, by_name[i]->name);
        whet_json_write_string(&w, file);
    }
    whet_json_end_object(&w);
    whet_json_end_object(&w);
    const char *text;
    size_t len;
    int rc = whet_json_writer_finish(&w, path, &text, &len, e);
    if (rc == 0)
        rc = whet_write_file_atomic(path, text, len, e);
    whet_json_writer_free(&w);
    free(path);
    return rc;
}

int whet_st_write_model_dir(const char *dir, const whet_st_entry *tensors, size_t count, const whet_st_kv *metadata,
                            size_t metadata_count, uint64_t max_shard_bytes, whet_err *e)
{
    write_item *items = malloc((count ? count : 1) * sizeof *items);
    const whet_st_entry **by_name = malloc((count ? count : 1) * sizeof *by_name);
    whet_st_kv *meta = malloc((metadata_count ? metadata_count : 1) * sizeof *meta);
    size_t *shard_of = malloc((count ? count : 1) * sizeof *shard_of);
    whet_st_entry *shard = malloc((count ? count : 1) * sizeof *shard);
    char *path = NULL;
    int rc = 0;
    if (!items || !by_name || !meta || !shard_of || !shard)
        rc = whet_fail(e, "%s: out of memory", dir);
    /* everything is checked before the first file is written */
    if (rc == 0)
        rc = prepare_write(dir, tensors, count, metadata, metadata_count, items, by_name, meta, e);
    /* shards in name order: prepare_write sorted by_name */
    size_t shard_count = 0;
    uint64_t total_size = 0, in_shard = 0;
    for (size_t i = 0; rc == 0 && i < count; i++) {
        uint64_t numel, nbytes;
        tensor_size(by_name[i]->dtype, by_name[i]->shape, by_name[i]->rank, &numel, &nbytes);
        if (shard_count == 0 || (max_shard_bytes && in_shard > 0 && in_shard + nbytes > max_shard_bytes)) {
            shard_count++;
            in_shard = 0;
        }
        shard_of[i] = shard_count - 1;
        in_shard += nbytes;
        total_size += nbytes;
    }
    if (rc == 0 && shard_count <= 1) {
        if (!(path = join_path(dir, single_file_name)))
            rc = whet_fail(e, "%s: out of memory", dir);
        else
            rc = whet_st_write(path, tensors, count, metadata, metadata_count, e);
    }
    for (size_t s = 0; rc == 0 && shard_count > 1 && s < shard_count; s++) {
        size_t n = 0;
        for (size_t i = 0; i < count; i++)
            if (shard_of[i] == s)
                shard[n++] = *by_name[i];
        char file[64];
        snprintf(file, sizeof file, "model-%05zu-of-%05zu.safetensors", s + 1, shard_count);
        free(path);
        if (!(path = join_path(dir, file)))
            rc = whet_fail(e, "%s: out of memory", dir);
        else
            rc = whet_st_write(path, shard, n, metadata, metadata_count, e);
    }
    if (rc == 0 && shard_count > 1)
        rc = write_index_file(dir, by_name, shard_of, count, shard_count, total_size, e);
    if (rc == 0)
        rc = remove_stale_weights(dir, shard_count, e);
    free(path);
    free(items);
    free(by_name);
    free(meta);
    free(shard_of);
    free(shard);
    return rc;
}
