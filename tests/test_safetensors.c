/* safetensors: write then read back byte for byte, conversions, sharded
 * models through their index, and every validation failure with its message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "io/safetensors.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a temporary directory per test ---- */

typedef struct fixture {
    char dir[64];
} fixture;

static int make_dir(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/whet-test-st-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    *state = f;
    return 0;
}

static int remove_dir(void **state)
{
    fixture *f = *state;
    DIR *d = opendir(f->dir);
    if (d) {
        struct dirent *entry;
        char path[512];
        while ((entry = readdir(d)) != NULL) {
            if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof path, "%s/%s", f->dir, entry->d_name);
            unlink(path);
        }
        closedir(d);
    }
    int rc = rmdir(f->dir);
    free(f);
    return rc;
}

static char *path_in(const fixture *f, const char *name)
{
    static char paths[4][512];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, sizeof paths[0], "%s/%s", f->dir, name);
    return p;
}

static size_t files_in(const fixture *f)
{
    size_t n = 0;
    DIR *d = opendir(f->dir);
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL)
        n += entry->d_name[0] != '.';
    closedir(d);
    return n;
}

static unsigned char *read_all(const char *path, size_t *size)
{
    char *data;
    whet_err e;
    if (whet_read_file(path, &data, size, &e) != 0)
        fail_msg("%s", e.msg);
    return (unsigned char *)data;
}

/* A safetensors image from a header string and data bytes (zeros if NULL). */
static unsigned char *image(const char *header, const void *data, size_t data_len, size_t *size)
{
    size_t n = strlen(header);
    unsigned char *buf = calloc(1, 8 + n + data_len + 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, header, n);
    if (data)
        memcpy(buf + 8 + n, data, data_len);
    *size = 8 + n + data_len;
    return buf;
}

static void write_image(const char *path, const char *header, const void *data, size_t data_len)
{
    size_t size;
    unsigned char *buf = image(header, data, data_len, &size);
    assert_int_equal(whet_write_file_atomic(path, buf, size, NULL), 0);
    free(buf);
}

static void expect_parse_error(const char *header, size_t data_len, const char *message)
{
    size_t size;
    unsigned char *buf = image(header, NULL, data_len, &size);
    whet_safetensors *st = (whet_safetensors *)1;
    whet_err e = {{0}};
    assert_int_equal(whet_st_parse(&st, buf, size, "m.safetensors", &e), -1);
    assert_null(st);
    assert_string_equal(e.msg, message);
    free(buf);
}

static whet_safetensors *parse_ok(const unsigned char *buf, size_t size)
{
    whet_safetensors *st = NULL;
    whet_err e = {{0}};
    if (whet_st_parse(&st, buf, size, "m.safetensors", &e) != 0)
        fail_msg("%s", e.msg);
    return st;
}

/* ---- round trip ---- */

static const float weight_values[6] = {1.0f, -2.5f, 0.0f, 3.25f, -0.0f, 1e-3f};
static const uint16_t bias_bf16[3] = {0x3F80, 0xC020, 0x7F80};   /* 1, -2.5, +inf */
static const uint16_t half_f16[4] = {0x3C00, 0xC100, 0x0001, 0x7BFF}; /* 1, -2.5, 2^-24, 65504 */
static const int64_t ids_values[2] = {-1, 1234567890123};
static const unsigned char flag_values[3] = {1, 0, 1};
static const float scalar_value = 42.0f;

static const int64_t shape_2x3[] = {2, 3}, shape_3[] = {3}, shape_2x2[] = {2, 2}, shape_0x4[] = {0, 4},
                     shape_2[] = {2};

/* Deliberately not in write order: the writer sorts. */
static const whet_st_entry model_entries[] = {
    {"flags", WHET_ST_BOOL, 1, shape_3, flag_values},
    {"c", WHET_ST_F16, 2, shape_2x2, half_f16},
    {"scalar", WHET_ST_F32, 0, NULL, &scalar_value},
    {"b.weight", WHET_ST_F32, 2, shape_2x3, weight_values},
    {"empty", WHET_ST_F32, 2, shape_0x4, NULL},
    {"a.bias", WHET_ST_BF16, 1, shape_3, bias_bf16},
    {"ids", WHET_ST_I64, 1, shape_2, ids_values},
};
enum { MODEL_ENTRIES = sizeof model_entries / sizeof model_entries[0] };

/* Descending dtype, then name: I64, F32 ×3, BF16, F16, BOOL. */
static const char expected_header[] =
    "{\"__metadata__\":{\"format\":\"pt\",\"step\":\"10\"},"
    "\"ids\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]},"
    "\"b.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[16,40]},"
    "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[40,40]},"
    "\"scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[40,44]},"
    "\"a.bias\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[44,50]},"
    "\"c\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[50,58]},"
    "\"flags\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[58,61]}}";

static void round_trip_bytes_and_views(void **state)
{
    fixture *f = *state;
    const char *path = path_in(f, "model.safetensors");
    const whet_st_kv meta[] = {{"step", "10"}};
    whet_err e = {{0}};
    if (whet_st_write(path, model_entries, MODEL_ENTRIES, meta, 1, &e) != 0)
        fail_msg("%s", e.msg);
    assert_int_equal(files_in(f), 1); /* no temporary left behind */

    /* the exact bytes: length, header padded with spaces to 8, packed data */
    size_t size;
    unsigned char *bytes = read_all(path, &size);
    size_t header_len = strlen(expected_header);
    size_t padded = (header_len + 7) / 8 * 8;
    uint64_t stored = 0;
    for (int i = 7; i >= 0; i--)
        stored = stored << 8 | bytes[i];
    assert_int_equal(stored, padded);
    assert_memory_equal(bytes + 8, expected_header, header_len);
    for (size_t i = header_len; i < padded; i++)
        assert_int_equal(bytes[8 + i], ' ');
    assert_int_equal(size, 8 + padded + 61);
    const unsigned char *data = bytes + 8 + padded;
    assert_memory_equal(data, ids_values, 16);
    assert_memory_equal(data + 16, weight_values, 24);
    assert_memory_equal(data + 40, &scalar_value, 4);
    assert_memory_equal(data + 44, bias_bf16, 6);
    assert_memory_equal(data + 50, half_f16, 8);
    assert_memory_equal(data + 58, flag_values, 3);

    /* read back: sorted by name, zero-copy views of the same bytes */
    whet_safetensors *st = NULL;
    if (whet_st_open(&st, path, &e) != 0)
        fail_msg("%s", e.msg);
    assert_string_equal(whet_st_name(st), path);
    assert_int_equal(whet_st_count(st), MODEL_ENTRIES);
    const char *sorted[] = {"a.bias", "b.weight", "c", "empty", "flags", "ids", "scalar"};
    for (size_t i = 0; i < MODEL_ENTRIES; i++)
        assert_string_equal(whet_st_tensor_at(st, i)->name, sorted[i]);
    assert_null(whet_st_tensor_at(st, MODEL_ENTRIES));
    for (size_t i = 0; i < MODEL_ENTRIES; i++) {
        const whet_st_entry *want = &model_entries[i];
        const whet_st_tensor *t = whet_st_find(st, want->name);
        assert_non_null(t);
        assert_int_equal(t->dtype, want->dtype);
        assert_int_equal(t->rank, want->rank);
        uint64_t numel = 1;
        for (size_t d = 0; d < want->rank; d++) {
            assert_int_equal(t->shape[d], want->shape[d]);
            numel *= (uint64_t)want->shape[d];
        }
        assert_int_equal(t->numel, numel);
        assert_int_equal(t->nbytes, numel * whet_st_dtype_bits(want->dtype) / 8);
        if (t->nbytes)
            assert_memory_equal(t->data, want->data, t->nbytes);
        assert_string_equal(t->file, path);
    }
    assert_null(whet_st_find(st, "b"));
    assert_null(whet_st_find(st, "zzz"));
    assert_int_equal(whet_st_metadata_count(st), 2);
    assert_string_equal(whet_st_metadata(st, "format"), "pt");
    assert_string_equal(whet_st_metadata(st, "step"), "10");
    assert_null(whet_st_metadata(st, "absent"));
    assert_string_equal(whet_st_metadata_at(st, 1)->key, "step");

    /* the views write back to the same bytes, whatever the order given */
    whet_st_entry again[MODEL_ENTRIES];
    for (size_t i = 0; i < MODEL_ENTRIES; i++) {
        const whet_st_tensor *t = whet_st_tensor_at(st, MODEL_ENTRIES - 1 - i);
        again[i] = (whet_st_entry){t->name, t->dtype, t->rank, t->shape, t->data};
    }
    const char *copy = path_in(f, "copy.safetensors");
    if (whet_st_write(copy, again, MODEL_ENTRIES, meta, 1, &e) != 0)
        fail_msg("%s", e.msg);
    size_t copy_size;
    unsigned char *copy_bytes = read_all(copy, &copy_size);
    assert_int_equal(copy_size, size);
    assert_memory_equal(copy_bytes, bytes, size);
    free(copy_bytes);

    /* and to a stream */
    char *mem = NULL;
    size_t mem_size = 0;
    FILE *stream = open_memstream(&mem, &mem_size);
    assert_int_equal(whet_st_write_stream(stream, "memory", again, MODEL_ENTRIES, meta, 1, &e), 0);
    fclose(stream);
    assert_int_equal(mem_size, size);
    assert_memory_equal(mem, bytes, size);
    free(mem);

    whet_st_close(st);
    free(bytes);
}

static void loads_as_float_and_bfloat16(void **state)
{
    fixture *f = *state;
    const char *path = path_in(f, "model.safetensors");
    whet_err e = {{0}};
    assert_int_equal(whet_st_write(path, model_entries, MODEL_ENTRIES, NULL, 0, &e), 0);
    whet_safetensors *st = NULL;
    assert_int_equal(whet_st_open(&st, path, &e), 0);
    assert_string_equal(whet_st_metadata(st, "format"), "pt"); /* always written */

    float out[8];
    assert_int_equal(whet_st_load_f32(whet_st_find(st, "b.weight"), out, NULL, &e), 0);
    assert_memory_equal(out, weight_values, sizeof weight_values);
    assert_int_equal(whet_st_load_f32(whet_st_find(st, "a.bias"), out, NULL, &e), 0);
    assert_true(out[0] == 1.0f && out[1] == -2.5f && out[2] > 3e38f);
    assert_int_equal(whet_st_load_f32(whet_st_find(st, "c"), out, NULL, &e), 0);
    assert_true(out[0] == 1.0f && out[1] == -2.5f && out[2] == 0x1p-24f && out[3] == 65504.0f);
    assert_int_equal(whet_st_load_f32(whet_st_find(st, "scalar"), out, NULL, &e), 0);
    assert_true(out[0] == 42.0f);
    assert_int_equal(whet_st_load_f32(whet_st_find(st, "empty"), out, NULL, &e), 0);

    /* every kernel table converts the same way */
    for (int isa = 0; isa < WHET_ISA_COUNT; isa++) {
        const whet_kernels *k = whet_kernels_for((whet_isa)isa);
        if (!k)
            continue;
        float again[4] = {0};
        assert_int_equal(whet_st_load_f32(whet_st_find(st, "c"), again, k, &e), 0);
        assert_true(again[2] == 0x1p-24f && again[3] == 65504.0f);
    }

    whet_bf16 half[8];
    assert_int_equal(whet_st_load_bf16(whet_st_find(st, "b.weight"), half, NULL, &e), 0);
    assert_int_equal(half[0], 0x3F80);
    assert_int_equal(half[1], 0xC020);
    assert_int_equal(whet_st_load_bf16(whet_st_find(st, "a.bias"), half, NULL, &e), 0);
    assert_memory_equal(half, bias_bf16, sizeof bias_bf16);
    assert_int_equal(whet_st_load_bf16(whet_st_find(st, "c"), half, NULL, &e), 0);
    assert_int_equal(half[0], 0x3F80);
    assert_int_equal(half[3], 0x4780); /* 65504 rounds to 65536 */

    /* other dtypes parse but do not load, and the message names the tensor */
    char expected[600];
    assert_int_equal(whet_st_load_f32(whet_st_find(st, "ids"), out, NULL, &e), -1);
    snprintf(expected, sizeof expected,
             "%s: tensor \"ids\" has dtype I64; only F32, F16 and BF16 tensors can be loaded as float", path);
    assert_string_equal(e.msg, expected);
    assert_int_equal(whet_st_load_bf16(whet_st_find(st, "flags"), half, NULL, &e), -1);
    snprintf(expected, sizeof expected,
             "%s: tensor \"flags\" has dtype BOOL; only F32, F16 and BF16 tensors can be loaded as bfloat16", path);
    assert_string_equal(e.msg, expected);
    whet_st_close(st);

    /* F64 and F8 files parse; loading them as float is refused by name */
    static const char header[] = "{\"w8\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[16,18]},"
                                 "\"w64\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}";
    size_t size;
    unsigned char *buf = image(header, NULL, 18, &size);
    st = parse_ok(buf, size);
    assert_int_equal(whet_st_find(st, "w8")->dtype, WHET_ST_F8_E4M3);
    assert_int_equal(whet_st_load_f32(whet_st_find(st, "w64"), out, NULL, &e), -1);
    assert_string_equal(e.msg, "m.safetensors: tensor \"w64\" has dtype F64; only F32, F16 and BF16 tensors can be "
                               "loaded as float");
    assert_int_equal(whet_st_load_f32(whet_st_find(st, "w8"), out, NULL, &e), -1);
    assert_string_equal(e.msg, "m.safetensors: tensor \"w8\" has dtype F8_E4M3; only F32, F16 and BF16 tensors can "
                               "be loaded as float");
    whet_st_close(st);
    free(buf);
}

static void large_tensor_converts_in_chunks(void **state)
{
    (void)state;
    /* More elements than one conversion chunk, at an odd offset (header
     * length 7 + 8 = 15): the reader must not assume alignment. */
    enum { N = 10007 };
    uint16_t *bf = malloc(N * sizeof *bf);
    for (size_t i = 0; i < N; i++)
        bf[i] = (uint16_t)(0x3F80 + (i % 128)); /* 1.0, 1.0078125, ... */
    char header[128];
    snprintf(header, sizeof header, "{\"x\":{\"dtype\":\"BF16\",\"shape\":[%d],\"data_offsets\":[0,%d]}}", N, 2 * N);
    assert_int_equal(strlen(header) % 2, 1);
    size_t size;
    unsigned char *buf = image(header, bf, 2 * N, &size);
    whet_safetensors *st = parse_ok(buf, size);
    float *out = malloc(N * sizeof *out);
    whet_err e;
    assert_int_equal(whet_st_load_f32(whet_st_find(st, "x"), out, NULL, &e), 0);
    for (size_t i = 0; i < N; i++)
        assert_true(out[i] == 1.0f + (float)(i % 128) / 128.0f);
    whet_bf16 *back = malloc(N * sizeof *back);
    assert_int_equal(whet_st_load_bf16(whet_st_find(st, "x"), back, NULL, &e), 0);
    assert_memory_equal(back, bf, N * sizeof *bf);
    whet_st_close(st);
    free(buf);
    free(bf);
    free(out);
    free(back);
}

static void reader_accepts_what_the_format_allows(void **state)
{
    (void)state;
    /* no tensors at all; key order meaning nothing; zero-sized tensors sharing
     * an offset; unpadded and space- or newline-padded headers; unknown keys
     * in a tensor entry (the reference ignores them) */
    static const char *const headers[] = {
        "{}",
        "{\"__metadata__\":{}}",
        "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]},"
        "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}",
        "{\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
        "\"y\":{\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\":[0,0]},"
        "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4],\"extra\":[1]}}   \n   ",
        "{\"f4\":{\"dtype\":\"F4\",\"shape\":[2,4],\"data_offsets\":[0,4]}}",
        "{\"f6\":{\"dtype\":\"F6_E2M3\",\"shape\":[4],\"data_offsets\":[0,3]},"
        "\"pad\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[3,4]}}",
    };
    const size_t data_len[] = {0, 0, 4, 4, 4, 4, 4};
    const size_t tensors[] = {0, 0, 2, 3, 1, 1, 2};
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        size_t size;
        unsigned char *buf = image(headers[i], "\1\2\3\4", data_len[i], &size);
        whet_safetensors *st = NULL;
        whet_err e = {{0}};
        if (whet_st_parse(&st, buf, size, "m.safetensors", &e) != 0)
            fail_msg("header %zu: %s", i, e.msg);
        assert_int_equal(whet_st_count(st), tensors[i]);
        if (i == 2) {
            assert_memory_equal(whet_st_find(st, "a")->data, "\1\2", 2);
            assert_memory_equal(whet_st_find(st, "b")->data, "\3\4", 2);
        }
        if (i == 3)
            assert_int_equal(whet_st_find(st, "y")->numel, 0);
        whet_st_close(st);
        free(buf);
    }
}

static void reader_refuses_bad_framing(void **state)
{
    (void)state;
    whet_safetensors *st = (whet_safetensors *)1;
    whet_err e = {{0}};
    assert_int_equal(whet_st_parse(&st, "\x02\0\0\0\0", 5, "m.safetensors", &e), -1);
    assert_null(st);
    assert_string_equal(e.msg, "m.safetensors: expected at least 8 bytes (the header length), found 5: not a "
                               "safetensors file");

    unsigned char buf[64] = {0};
    /* 100,000,001 little-endian: 0x05F5E101 */
    buf[0] = 0x01, buf[1] = 0xE1, buf[2] = 0xF5, buf[3] = 0x05;
    assert_int_equal(whet_st_parse(&st, buf, sizeof buf, "m.safetensors", &e), -1);
    assert_string_equal(e.msg, "m.safetensors: header length 100000001 is above the limit of 100000000 bytes: not a "
                               "safetensors file");
    /* a big-endian length reads as an absurd one */
    memset(buf, 0, sizeof buf);
    buf[7] = 2;
    assert_int_equal(whet_st_parse(&st, buf, sizeof buf, "m.safetensors", &e), -1);
    assert_string_equal(e.msg, "m.safetensors: header length 144115188075855872 is above the limit of 100000000 "
                               "bytes: not a safetensors file");
    memset(buf, 0, sizeof buf);
    buf[0] = 57;
    memcpy(buf + 8, "{}", 2);
    assert_int_equal(whet_st_parse(&st, buf, sizeof buf, "m.safetensors", &e), -1);
    assert_string_equal(e.msg, "m.safetensors: header length 57 runs past the end of the file (64 bytes): truncated?");
    buf[0] = 0;
    assert_int_equal(whet_st_parse(&st, buf, 8, "m.safetensors", &e), -1);
    assert_string_equal(e.msg, "m.safetensors: byte 8: expected a JSON header, found an empty one");

    expect_parse_error("[]", 0, "m.safetensors: byte 8: expected the JSON header to start with '{', found '['");
    expect_parse_error(" {}", 0, "m.safetensors: byte 8: expected the JSON header to start with '{', found ' '");
    expect_parse_error("\xEF\xBB\xBF{}", 0,
                       "m.safetensors: byte 8: expected the JSON header to start with '{', found byte 0xEF");
    /* JSON errors report file offsets: the header starts at byte 8 */
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",}}", 0,
                       "m.safetensors: line 1, column 21 (byte 28): expected a string key, found '}'");
    /* NUL padding is not space padding */
    memset(buf, 0, sizeof buf);
    buf[0] = 4;
    memcpy(buf + 8, "{}", 2);
    assert_int_equal(whet_st_parse(&st, buf, 12, "m.safetensors", &e), -1);
    assert_string_equal(e.msg, "m.safetensors: line 1, column 3 (byte 10): expected end of input, found control "
                               "character U+0000");
}

static void reader_refuses_bad_entries(void **state)
{
    (void)state;
    expect_parse_error("{\"a\":[1]}", 0,
                       "m.safetensors: line 1, column 6 (byte 13): expected an object with dtype, shape and "
                       "data_offsets for tensor \"a\", found an array of 1 item");
    expect_parse_error("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                       "m.safetensors: line 1, column 6 (byte 13): expected key \"dtype\" in this object, found none");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4,
                       "m.safetensors: line 1, column 6 (byte 13): expected key \"shape\" in this object, found none");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4,
                       "m.safetensors: line 1, column 6 (byte 13): expected key \"data_offsets\" in this object, "
                       "found none");
    expect_parse_error("{\"a\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,16]}}", 16,
                       "m.safetensors: line 1, column 15 (byte 22): expected a safetensors dtype (F32, F16, BF16, "
                       "I64 ...) for tensor \"a\", found the string \"F128\"");
    expect_parse_error("{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                       "m.safetensors: line 1, column 15 (byte 22): expected a safetensors dtype (F32, F16, BF16, "
                       "I64 ...) for tensor \"a\", found the string \"f32\"");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}}", 16,
                       "m.safetensors: line 1, column 29 (byte 36): expected an array of dimensions for tensor "
                       "\"a\", found the number 4");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,8]}}", 8,
                       "m.safetensors: line 1, column 32 (byte 39): expected an integer >= 0, found the number -1");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}}", 8,
                       "m.safetensors: line 1, column 30 (byte 37): expected an integer >= 0, found the number 1.5");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
                       "m.safetensors: line 1, column 48 (byte 55): expected data_offsets [BEGIN, END] for tensor "
                       "\"a\", found an array of 1 item");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4,
                       "m.safetensors: line 1, column 51 (byte 58): expected an integer >= 4, found the number 0");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", 4,
                       "m.safetensors: line 1, column 51 (byte 58): expected an integer >= 0, found the string \"4\"");
    expect_parse_error("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                       "m.safetensors: line 1, column 2 (byte 9): expected a tensor name without U+0000, found a key "
                       "holding U+0000");
    expect_parse_error("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                       "m.safetensors: line 1, column 2 (byte 9): expected a tensor name, found \"\"");
    expect_parse_error("{\"__metadata__\":[\"format\",\"pt\"]}", 0,
                       "m.safetensors: line 1, column 17 (byte 24): expected __metadata__ to be an object of "
                       "strings, found an array of 2 items");
    expect_parse_error("{\"__metadata__\":{\"format\":\"pt\",\"step\":10}}", 0,
                       "m.safetensors: line 1, column 39 (byte 46): expected a string (without U+0000) for "
                       "metadata key \"step\", found the number 10");
}

static void reader_refuses_bad_sizes_and_layout(void **state)
{
    (void)state;
    /* size disagrees with dtype × shape */
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 12,
                       "m.safetensors: tensor \"a\": data_offsets [0, 12] hold 12 bytes, but F32 × [2, 2] takes 16");
    expect_parse_error("{\"a\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12,
                       "m.safetensors: tensor \"a\": data_offsets [0, 12] hold 12 bytes, but BF16 × [3] takes 6");
    /* element counts that overflow, and sub-byte dtypes with a partial byte */
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,0]}}", 0,
                       "m.safetensors: tensor \"a\": F32 × [4294967296, 4294967296, 16] is not a whole number of bytes "
                       "below 2^64");
    expect_parse_error("{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2,
                       "m.safetensors: tensor \"a\": F4 × [3] is not a whole number of bytes below 2^64");
    /* offsets beyond the data section: a truncated file */
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8,
                       "m.safetensors: tensor \"a\": data_offsets [0, 16] run past the end of the data section "
                       "(8 bytes): truncated?");
    /* overlap, a hole, a duplicate region, bytes left over */
    expect_parse_error("{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                       12, "m.safetensors: tensors \"a\" [0, 8) and \"b\" [4, 12) overlap in the data section");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                       8, "m.safetensors: tensors \"a\" [0, 8) and \"b\" [0, 8) overlap in the data section");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
                       20, "m.safetensors: bytes [8, 12) of the data section belong to no tensor (the next is \"b\")");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
                       "m.safetensors: bytes [0, 4) of the data section belong to no tensor (the next is \"a\")");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12,
                       "m.safetensors: the data section has 12 bytes but its tensors end at byte 8: 4 bytes after "
                       "them belong to no tensor");
    expect_parse_error("{}", 1, "m.safetensors: the data section has 1 bytes but its tensors end at byte 0: 1 bytes "
                                "after them belong to no tensor");
    /* the same name twice */
    expect_parse_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                       "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                       2, "m.safetensors: line 1, column 54 (byte 61): expected unique keys in an object, found \"a\" "
                          "again (first at line 1, column 2)");
}

static void truncated_file_on_disk(void **state)
{
    fixture *f = *state;
    const char *path = path_in(f, "model.safetensors");
    whet_err e = {{0}};
    assert_int_equal(whet_st_write(path, model_entries, MODEL_ENTRIES, NULL, 0, &e), 0);
    size_t size;
    unsigned char *bytes = read_all(path, &size);
    /* cut inside the data, inside the header, inside the length */
    const size_t cuts[] = {size - 1, 20, 5, 0};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        assert_int_equal(whet_write_file_atomic(path, bytes, cuts[i], NULL), 0);
        whet_safetensors *st = (whet_safetensors *)1;
        assert_int_equal(whet_st_open(&st, path, &e), -1);
        assert_null(st);
        assert_non_null(strstr(e.msg, path));
        if (i == 0)
            assert_non_null(strstr(e.msg, "tensor \"flags\": data_offsets [58, 61] run past the end of the data "
                                          "section (60 bytes): truncated?"));
        else if (i == 1)
            assert_non_null(strstr(e.msg, "runs past the end of the file (20 bytes): truncated?"));
        else
            assert_non_null(strstr(e.msg, "expected at least 8 bytes (the header length)"));
    }
    free(bytes);
    whet_safetensors *st = NULL;
    assert_int_equal(whet_st_open(&st, path_in(f, "absent.safetensors"), &e), -1);
    assert_non_null(strstr(e.msg, "absent.safetensors: cannot open"));
}

static void expect_write_error(const fixture *f, const whet_st_entry *entries, size_t count, const whet_st_kv *meta,
                               size_t meta_count, const char *message)
{
    const char *path = path_in(f, "out.safetensors");
    whet_err e = {{0}};
    assert_int_equal(whet_st_write(path, entries, count, meta, meta_count, &e), -1);
    char expected[600];
    snprintf(expected, sizeof expected, "%s: %s", path, message);
    assert_string_equal(e.msg, expected);
}

static void writer_refuses_bad_input_and_keeps_the_old_file(void **state)
{
    fixture *f = *state;
    const char *path = path_in(f, "out.safetensors");
    whet_err e = {{0}};
    assert_int_equal(whet_st_write(path, model_entries, 2, NULL, 0, &e), 0);
    size_t before_size;
    unsigned char *before = read_all(path, &before_size);

    const float x[4] = {0};
    const int64_t two[] = {2}, negative[] = {2, -1}, three[] = {3};
    const whet_st_entry duplicate[] = {{"w", WHET_ST_F32, 1, two, x}, {"v", WHET_ST_F32, 1, two, x},
                                       {"w", WHET_ST_F16, 1, two, x}};
    expect_write_error(f, duplicate, 3, NULL, 0, "tensor \"w\" given twice");
    const whet_st_entry reserved[] = {{"__metadata__", WHET_ST_F32, 1, two, x}};
    expect_write_error(f, reserved, 1, NULL, 0,
                       "tensor 0: a tensor needs a name, and \"__metadata__\" is not one");
    const whet_st_entry unnamed[] = {{"", WHET_ST_F32, 1, two, x}};
    expect_write_error(f, unnamed, 1, NULL, 0, "tensor 0: a tensor needs a name, and \"__metadata__\" is not one");
    const whet_st_entry negative_dim[] = {{"w", WHET_ST_F32, 2, negative, x}};
    expect_write_error(f, negative_dim, 1, NULL, 0, "tensor \"w\": dimension 1 is negative (-1)");
    const whet_st_entry partial_byte[] = {{"w", WHET_ST_F4, 1, three, x}};
    expect_write_error(f, partial_byte, 1, NULL, 0,
                       "tensor \"w\": F4 × [3] is not a whole number of bytes that fits in memory");
    const whet_st_entry no_data[] = {{"w", WHET_ST_F32, 1, two, NULL}};
    expect_write_error(f, no_data, 1, NULL, 0, "tensor \"w\": no data");
    const whet_st_entry bad_dtype[] = {{"w", WHET_ST_DTYPE_COUNT, 1, two, x}};
    expect_write_error(f, bad_dtype, 1, NULL, 0, "tensor \"w\": unknown dtype 22");
    const whet_st_entry bad_utf8[] = {{"w\xFF", WHET_ST_F32, 1, two, x}};
    expect_write_error(f, bad_utf8, 1, NULL, 0, "cannot write the JSON: a string that is not valid UTF-8");
    const whet_st_kv twice[] = {{"a", "1"}, {"a", "2"}};
    expect_write_error(f, model_entries, 1, twice, 2, "metadata key \"a\" given twice");
    const whet_st_kv no_value[] = {{"a", NULL}};
    expect_write_error(f, model_entries, 1, no_value, 1, "metadata entry 0 has no key or no value");

    /* every refusal left the earlier file as it was, and no temporary */
    size_t after_size;
    unsigned char *after = read_all(path, &after_size);
    assert_int_equal(after_size, before_size);
    assert_memory_equal(after, before, before_size);
    assert_int_equal(files_in(f), 1);
    free(before);
    free(after);

    /* a caller's "format" replaces the default; other keys sort around it */
    const whet_st_kv meta[] = {{"z", "last"}, {"format", "mlx"}, {"a", "first"}};
    assert_int_equal(whet_st_write(path, NULL, 0, meta, 3, &e), 0);
    size_t size;
    unsigned char *bytes = read_all(path, &size);
    static const char header[] = "{\"__metadata__\":{\"a\":\"first\",\"format\":\"mlx\",\"z\":\"last\"}}";
    assert_int_equal(size, 8 + (sizeof header - 1 + 7) / 8 * 8);
    assert_memory_equal(bytes + 8, header, sizeof header - 1);
    free(bytes);
    whet_safetensors *st = NULL;
    assert_int_equal(whet_st_open(&st, path, &e), 0);
    assert_int_equal(whet_st_count(st), 0);
    assert_string_equal(whet_st_metadata(st, "format"), "mlx");
    assert_string_equal(whet_st_metadata_at(st, 0)->key, "a");
    whet_st_close(st);
}

/* ---- sharded models ---- */

static const float shard_values[4] = {1, 2, 3, 4};
static const int64_t shard_shape[] = {2};

static void write_shards(const fixture *f)
{
    const whet_st_entry first[] = {{"model.a", WHET_ST_F32, 1, shard_shape, shard_values},
                                   {"model.b", WHET_ST_F32, 1, shard_shape, shard_values + 2}};
    const whet_st_entry second[] = {{"lm_head", WHET_ST_F32, 1, shard_shape, shard_values + 1}};
    const whet_st_kv meta[] = {{"shard", "one"}};
    assert_int_equal(whet_st_write(path_in(f, "model-00001-of-00002.safetensors"), first, 2, meta, 1, NULL), 0);
    assert_int_equal(whet_st_write(path_in(f, "model-00002-of-00002.safetensors"), second, 1, NULL, 0, NULL), 0);
}

static void write_index(const fixture *f, const char *weight_map)
{
    char text[1024];
    snprintf(text, sizeof text, "{\"metadata\": {\"total_size\": 24}, \"weight_map\": %s}", weight_map);
    assert_int_equal(whet_write_file_atomic(path_in(f, "model.safetensors.index.json"), text, strlen(text), NULL), 0);
}

static const char good_map[] = "{\"lm_head\": \"model-00002-of-00002.safetensors\","
                               " \"model.a\": \"model-00001-of-00002.safetensors\","
                               " \"model.b\": \"model-00001-of-00002.safetensors\"}";

static void sharded_model_through_its_index(void **state)
{
    fixture *f = *state;
    write_shards(f);
    write_index(f, good_map);
    whet_safetensors *st = NULL;
    whet_err e = {{0}};
    if (whet_st_open_dir(&st, f->dir, &e) != 0)
        fail_msg("%s", e.msg);
    assert_string_equal(whet_st_name(st), path_in(f, "model.safetensors.index.json"));
    assert_int_equal(whet_st_count(st), 3);
    const whet_st_tensor *head = whet_st_find(st, "lm_head");
    assert_non_null(head);
    assert_string_equal(head->file, path_in(f, "model-00002-of-00002.safetensors"));
    assert_memory_equal(head->data, shard_values + 1, 8);
    const whet_st_tensor *b = whet_st_find(st, "model.b");
    assert_string_equal(b->file, path_in(f, "model-00001-of-00002.safetensors"));
    float out[2];
    assert_int_equal(whet_st_load_f32(b, out, NULL, &e), 0);
    assert_true(out[0] == 3 && out[1] == 4);
    assert_string_equal(whet_st_metadata(st, "shard"), "one"); /* the first shard's */
    whet_st_close(st);

    /* with no index, the directory's model.safetensors */
    assert_int_equal(unlink(path_in(f, "model.safetensors.index.json")), 0);
    assert_int_equal(whet_st_open_dir(&st, f->dir, &e), -1);
    char expected[600];
    snprintf(expected, sizeof expected, "%s: no model.safetensors.index.json and no model.safetensors in it", f->dir);
    assert_string_equal(e.msg, expected);
    assert_int_equal(rename(path_in(f, "model-00002-of-00002.safetensors"), path_in(f, "model.safetensors")), 0);
    assert_int_equal(whet_st_open_dir(&st, f->dir, &e), 0);
    assert_int_equal(whet_st_count(st), 1);
    assert_non_null(whet_st_find(st, "lm_head"));
    whet_st_close(st);
}

static void expect_index_error(const fixture *f, const char *message_after_index_path)
{
    whet_safetensors *st = (whet_safetensors *)1;
    whet_err e = {{0}};
    const char *index = path_in(f, "model.safetensors.index.json");
    assert_int_equal(whet_st_open_index(&st, index, &e), -1);
    assert_null(st);
    char expected[1024];
    snprintf(expected, sizeof expected, "%s%s", index, message_after_index_path);
    assert_string_equal(e.msg, expected);
}

static void sharded_model_refusals(void **state)
{
    fixture *f = *state;
    write_shards(f);
    char message[1024];

    /* named in the index, missing from its shard */
    write_index(f, "{\"lm_head\": \"model-00002-of-00002.safetensors\","
                   " \"model.a\": \"model-00001-of-00002.safetensors\","
                   " \"model.b\": \"model-00001-of-00002.safetensors\","
                   " \"model.c\": \"model-00001-of-00002.safetensors\"}");
    expect_index_error(f, ": tensor \"model.c\" is listed in the index under model-00001-of-00002.safetensors, but "
                          "that shard does not hold it");

    /* in another shard than the index says */
    write_index(f, "{\"lm_head\": \"model-00001-of-00002.safetensors\","
                   " \"model.a\": \"model-00001-of-00002.safetensors\","
                   " \"model.b\": \"model-00002-of-00002.safetensors\"}");
    snprintf(message, sizeof message,
             ": the index puts tensor \"lm_head\" in model-00001-of-00002.safetensors, but it is in %s",
             path_in(f, "model-00002-of-00002.safetensors"));
    expect_index_error(f, message);

    /* a shard tensor the index does not list */
    write_index(f, "{\"lm_head\": \"model-00002-of-00002.safetensors\","
                   " \"model.a\": \"model-00001-of-00002.safetensors\"}");
    snprintf(message, sizeof message, ": shard %s holds tensor \"model.b\", which the index does not list",
             path_in(f, "model-00001-of-00002.safetensors"));
    expect_index_error(f, message);

    /* shard names must stay beside the index */
    write_index(f, "{\"lm_head\": \"../model-00002-of-00002.safetensors\"}");
    expect_index_error(f, ": line 1, column 60 (byte 59): expected a shard file name beside the index for tensor "
                          "\"lm_head\", found the string \"../model-00002-of-00002.safetensors\"");
    write_index(f, "{\"lm_head\": 2}");
    expect_index_error(f, ": line 1, column 60 (byte 59): expected a shard file name beside the index for tensor "
                          "\"lm_head\", found the number 2");
    assert_int_equal(whet_write_file_atomic(path_in(f, "model.safetensors.index.json"), "{\"metadata\": {}}", 16,
                                            NULL),
                     0);
    expect_index_error(f, ": line 1, column 1 (byte 0): expected key \"weight_map\" in this object, found none");
    assert_int_equal(whet_write_file_atomic(path_in(f, "model.safetensors.index.json"), "[]", 2, NULL), 0);
    expect_index_error(f, ": line 1, column 1 (byte 0): expected an object with a weight_map, found an array of 0 "
                          "items");

    /* a shard that is missing, or broken, is named */
    write_index(f, "{\"lm_head\": \"model-00003-of-00002.safetensors\"}");
    whet_safetensors *st = NULL;
    whet_err e = {{0}};
    assert_int_equal(whet_st_open_index(&st, path_in(f, "model.safetensors.index.json"), &e), -1);
    snprintf(message, sizeof message, "%s: cannot open: No such file or directory",
             path_in(f, "model-00003-of-00002.safetensors"));
    assert_string_equal(e.msg, message);
    write_image(path_in(f, "model-00002-of-00002.safetensors"), "{\"lm_head\":{}}", NULL, 0);
    write_index(f, good_map);
    assert_int_equal(whet_st_open_index(&st, path_in(f, "model.safetensors.index.json"), &e), -1);
    snprintf(message, sizeof message, "%s: line 1, column 12 (byte 19): expected key \"dtype\" in this object, found "
                                      "none",
             path_in(f, "model-00002-of-00002.safetensors"));
    assert_string_equal(e.msg, message);

    /* the same tensor in two shards */
    const whet_st_entry both[] = {{"model.a", WHET_ST_F32, 1, shard_shape, shard_values},
                                  {"lm_head", WHET_ST_F32, 1, shard_shape, shard_values}};
    assert_int_equal(whet_st_write(path_in(f, "model-00002-of-00002.safetensors"), both, 2, NULL, 0, NULL), 0);
    snprintf(message, sizeof message, ": tensor \"model.a\" is in both %s and %s",
             path_in(f, "model-00001-of-00002.safetensors"), path_in(f, "model-00002-of-00002.safetensors"));
    expect_index_error(f, message);
}

static void model_dir_writer_shards_and_cleans_up(void **state)
{
    fixture *f = *state;
    const float values[6] = {1, 2, 3, 4, 5, 6};
    const int64_t two[] = {2};
    const whet_st_entry entries[] = {{"c", WHET_ST_F32, 1, two, values + 4},
                                     {"a", WHET_ST_F32, 1, two, values},
                                     {"b", WHET_ST_F32, 1, two, values + 2}};
    const whet_st_kv meta[] = {{"written_by", "whet"}};
    assert_int_equal(whet_write_file_atomic(path_in(f, "config.json"), "{}", 2, NULL), 0);
    whet_err e = {{0}};

    /* 16-byte shards: a and b, then c */
    if (whet_st_write_model_dir(f->dir, entries, 3, meta, 1, 16, &e) != 0)
        fail_msg("%s", e.msg);
    assert_int_equal(files_in(f), 4);
    size_t size;
    unsigned char *index = read_all(path_in(f, "model.safetensors.index.json"), &size);
    static const char expected_index[] = "{\n  \"metadata\": {\n    \"total_size\": 24\n  },\n  \"weight_map\": {\n"
                                         "    \"a\": \"model-00001-of-00002.safetensors\",\n"
                                         "    \"b\": \"model-00001-of-00002.safetensors\",\n"
                                         "    \"c\": \"model-00002-of-00002.safetensors\"\n  }\n}\n";
    assert_int_equal(size, sizeof expected_index - 1);
    assert_memory_equal(index, expected_index, size);
    free(index);
    whet_safetensors *st = NULL;
    if (whet_st_open_dir(&st, f->dir, &e) != 0)
        fail_msg("%s", e.msg);
    assert_int_equal(whet_st_count(st), 3);
    for (size_t i = 0; i < 3; i++) {
        const whet_st_tensor *t = whet_st_tensor_at(st, i);
        assert_memory_equal(t->data, values + 2 * i, 8);
        assert_string_equal(t->file, path_in(f, i < 2 ? "model-00001-of-00002.safetensors"
                                                      : "model-00002-of-00002.safetensors"));
    }
    assert_string_equal(whet_st_metadata(st, "written_by"), "whet"); /* every shard carries it */
    whet_st_close(st);

    /* 8-byte shards: three of them; the two-shard save is removed */
    assert_int_equal(whet_st_write_model_dir(f->dir, entries, 3, meta, 1, 8, &e), 0);
    assert_int_equal(files_in(f), 5);
    assert_int_equal(access(path_in(f, "model-00001-of-00002.safetensors"), F_OK), -1);
    assert_int_equal(access(path_in(f, "model-00003-of-00003.safetensors"), F_OK), 0);
    assert_int_equal(whet_st_open_dir(&st, f->dir, &e), 0);
    assert_int_equal(whet_st_count(st), 3);
    whet_st_close(st);

    /* everything fits: one model.safetensors, and no index or shard remains */
    assert_int_equal(whet_st_write_model_dir(f->dir, entries, 3, meta, 1, 0, &e), 0);
    assert_int_equal(files_in(f), 2);
    assert_int_equal(access(path_in(f, "config.json"), F_OK), 0);
    assert_int_equal(whet_st_open_dir(&st, f->dir, &e), 0);
    assert_string_equal(whet_st_name(st), path_in(f, "model.safetensors"));
    assert_int_equal(whet_st_count(st), 3);
    whet_st_close(st);

    /* a tensor larger than the shard size gets a shard of its own */
    assert_int_equal(whet_st_write_model_dir(f->dir, entries, 3, NULL, 0, 4, &e), 0);
    assert_int_equal(files_in(f), 5);
    assert_int_equal(access(path_in(f, "model.safetensors"), F_OK), -1);

    /* refusals come before any file is touched */
    const whet_st_entry twice[] = {{"a", WHET_ST_F32, 1, two, values}, {"a", WHET_ST_F16, 1, two, values}};
    assert_int_equal(whet_st_write_model_dir(f->dir, twice, 2, NULL, 0, 4, &e), -1);
    char expected[600];
    snprintf(expected, sizeof expected, "%s: tensor \"a\" given twice", f->dir);
    assert_string_equal(e.msg, expected);
    assert_int_equal(files_in(f), 5);
}

static void dtype_names_and_sizes(void **state)
{
    (void)state;
    for (int d = 0; d < WHET_ST_DTYPE_COUNT; d++) {
        const char *name = whet_st_dtype_name((whet_st_dtype)d);
        assert_int_equal(whet_st_dtype_from_name(name, strlen(name)), d);
    }
    assert_int_equal(whet_st_dtype_from_name("F3", 2), -1);
    assert_int_equal(whet_st_dtype_from_name("F32 ", 4), -1);
    assert_int_equal(whet_st_dtype_bits(WHET_ST_F4), 4);
    assert_int_equal(whet_st_dtype_bits(WHET_ST_F6_E3M2), 6);
    assert_int_equal(whet_st_dtype_bits(WHET_ST_BF16), 16);
    assert_int_equal(whet_st_dtype_bits(WHET_ST_C64), 64);
    assert_int_equal(whet_st_dtype_bits(WHET_ST_DTYPE_COUNT), 0);
    assert_string_equal(whet_st_dtype_name(WHET_ST_DTYPE_COUNT), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(round_trip_bytes_and_views, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(loads_as_float_and_bfloat16, make_dir, remove_dir),
        cmocka_unit_test(large_tensor_converts_in_chunks),
        cmocka_unit_test(reader_accepts_what_the_format_allows),
        cmocka_unit_test(reader_refuses_bad_framing),
        cmocka_unit_test(reader_refuses_bad_entries),
        cmocka_unit_test(reader_refuses_bad_sizes_and_layout),
        cmocka_unit_test_setup_teardown(truncated_file_on_disk, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(writer_refuses_bad_input_and_keeps_the_old_file, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(sharded_model_through_its_index, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(sharded_model_refusals, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(model_dir_writer_shards_and_cleans_up, make_dir, remove_dir),
        cmocka_unit_test(dtype_names_and_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
