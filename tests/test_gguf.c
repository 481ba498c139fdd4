/* GGUF: the writer and reader agree on every metadata and tensor type; the
 * dequantizers match blocks built by hand from the format's description;
 * every malformed file is refused with the byte at fault. Files here are built
 * byte by byte in little-endian order by the test itself, so the offsets in
 * the expected messages come from the test, not from the code under test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "io/gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a little-endian byte builder --------------------------------------------- */

typedef struct bytes {
    unsigned char p[16384];
    size_t len;
} bytes;

static void b_raw(bytes *b, const void *p, size_t n)
{
    assert_true(b->len + n <= sizeof b->p);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void b_u8(bytes *b, unsigned v)
{
    unsigned char c = (unsigned char)v;
    b_raw(b, &c, 1);
}

static void b_u16(bytes *b, unsigned v)
{
    b_u8(b, v & 0xFF);
    b_u8(b, (v >> 8) & 0xFF);
}

static void b_u32(bytes *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b_u8(b, (v >> (8 * i)) & 0xFF);
}

static void b_u64(bytes *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b_u8(b, (unsigned)(v >> (8 * i)) & 0xFF);
}

static void b_str(bytes *b, const char *s)
{
    b_u64(b, strlen(s));
    b_raw(b, s, strlen(s));
}

static void b_header(bytes *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    b_raw(b, "GGUF", 4);
    b_u32(b, version);
    b_u64(b, n_tensors);
    b_u64(b, n_kv);
}

/* A tensor info; returns the byte where its offset field starts. */
static size_t b_tensor(bytes *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset)
{
    b_str(b, name);
    b_u32(b, n_dims);
    for (uint32_t j = 0; j < n_dims; j++)
        b_u64(b, ne[j]);
    b_u32(b, type);
    size_t at = b->len;
    b_u64(b, offset);
    return at;
}

static void b_pad(bytes *b, size_t alignment)
{
    while (b->len % alignment)
        b_u8(b, 0);
}

static void b_zeros(bytes *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        b_u8(b, 0);
}

/* Parsing must fail with a message containing the formatted text. */
static void expect_error(const bytes *b, const char *fmt, ...)
{
    char expected[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(expected, sizeof expected, fmt, ap);
    va_end(ap);
    whet_err e = {{0}};
    whet_gguf *g = whet_gguf_parse(b->p, b->len, "t.gguf", &e);
    if (g || !strstr(e.msg, expected))
        fail_msg("expected an error containing\n  %s\nfound\n  %s", expected, g ? "(parsed fine)" : e.msg);
    assert_null(g);
    assert_memory_equal(e.msg, "t.gguf: ", 8);
}

static whet_gguf *parse_ok(const bytes *b)
{
    whet_err e = {{0}};
    whet_gguf *g = whet_gguf_parse(b->p, b->len, "t.gguf", &e);
    if (!g)
        fail_msg("parse failed: %s", e.msg);
    return g;
}

static float half_bits_to_float(uint16_t h)
{
    /* independent of the code under test: sign · 2^(e−15) · (1 + m/1024), or subnormal */
    int sign = h >> 15, exponent = (h >> 10) & 31, mantissa = h & 1023;
    double v = exponent ? ldexp(1.0 + mantissa / 1024.0, exponent - 15) : ldexp(mantissa / 1024.0, -14);
    return (float)(sign ? -v : v);
}

/* ---- header: versions and endianness -------------------------------------------- */

static void versions_2_and_3_read_alike_and_others_are_refused(void **state)
{
    (void)state;
    for (uint32_t version = 2; version <= 3; version++) {
        bytes b = {.len = 0};
        b_header(&b, version, 0, 1);
        b_str(&b, "general.name");
        b_u32(&b, WHET_GGUF_STRING);
        b_str(&b, "tiny");
        whet_gguf *g = parse_ok(&b);
        assert_int_equal(g->version, version);
        const whet_gguf_str *name;
        assert_int_equal(whet_gguf_get_string(g, "general.name", &name, NULL), 0);
        assert_string_equal(name->data, "tiny");
        assert_int_equal(g->n_tensors, 0);
        assert_int_equal(g->data_offset, b.len); /* no padding without tensors */
        whet_gguf_close(g);
    }
    bytes b = {.len = 0};
    b_header(&b, 1, 0, 0);
    expect_error(&b, "t.gguf: byte 4: expected GGUF version 2 or 3, found 1 (version 1 files are no longer supported");
    b.len = 0;
    b_header(&b, 4, 0, 0);
    expect_error(&b, "t.gguf: byte 4: expected GGUF version 2 or 3, found 4");
    b.len = 0;
    b_header(&b, 0x03000000u, 0, 0); /* a v3 file written big-endian */
    expect_error(&b, "t.gguf: byte 4: expected a little-endian file, found version bytes 00 00 00 03");
    b.len = 0;
    b_raw(&b, "GGML", 4);
    b_u32(&b, 3);
    expect_error(&b, "t.gguf: byte 0: expected the magic \"GGUF\", found bytes 47 47 4d 4c");
    b.len = 0;
    expect_error(&b, "t.gguf: byte 0: expected 4 bytes for the magic \"GGUF\", found 0 (the file ends)");
    b_header(&b, 3, 0, 0);
    b.len = 11;
    expect_error(&b, "t.gguf: byte 8: expected 8 bytes for the tensor count, found 3 (the file ends)");
}

/* ---- metadata round trip -----------------------------------------------------------------*/

static void writer_lays_out_bytes_little_endian(void **state)
{
    (void)state;
    whet_gguf_writer *w = whet_gguf_writer_new();
    assert_int_equal(whet_gguf_set_u32(w, "a", 0x01020304u, NULL), 0);
    assert_int_equal(whet_gguf_set_i16(w, "b", -2, NULL), 0);
    unsigned char *data;
    size_t size;
    assert_int_equal(whet_gguf_write_memory(w, &data, &size, NULL), 0);
    bytes expected = {.len = 0};
    b_header(&expected, 3, 0, 2);
    b_str(&expected, "a");
    b_u32(&expected, 4);
    b_u32(&expected, 0x01020304u);
    b_str(&expected, "b");
    b_u32(&expected, 3);
    b_u16(&expected, 0xFFFE);
    assert_int_equal(size, expected.len);
    assert_memory_equal(data, expected.p, size);
    /* spelled out once, so that a builder bug cannot hide a byte-order one */
    static const unsigned char head[] = {'G', 'G', 'U', 'F', 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
                                         1, 0, 0, 0, 0, 0, 0, 0, 'a', 4, 0, 0, 0, 4, 3, 2, 1};
    assert_memory_equal(data, head, sizeof head);
    free(data);
    whet_gguf_writer_free(w);
}

static void every_metadata_type_round_trips(void **state)
{
    (void)state;
    whet_gguf_writer *w = whet_gguf_writer_new();
    whet_err e = {{0}};
    assert_int_equal(whet_gguf_set_u8(w, "t.u8", 250, &e), 0);
    assert_int_equal(whet_gguf_set_i8(w, "t.i8", -100, &e), 0);
    assert_int_equal(whet_gguf_set_u16(w, "t.u16", 65000, &e), 0);
    assert_int_equal(whet_gguf_set_i16(w, "t.i16", -32000, &e), 0);
    assert_int_equal(whet_gguf_set_u32(w, "t.u32", 4000000000u, &e), 0);
    assert_int_equal(whet_gguf_set_i32(w, "t.i32", -2000000000, &e), 0);
    assert_int_equal(whet_gguf_set_f32(w, "t.f32", 1e-5f, &e), 0);
    assert_int_equal(whet_gguf_set_bool(w, "t.bool", 7, &e), 0); /* any non-zero is true */
    assert_int_equal(whet_gguf_set_u64(w, "t.u64", 0xFEDCBA9876543210ull, &e), 0);
    assert_int_equal(whet_gguf_set_i64(w, "t.i64", -0x123456789ABCDEFll, &e), 0);
    assert_int_equal(whet_gguf_set_f64(w, "t.f64", 3.141592653589793, &e), 0);
    assert_int_equal(whet_gguf_set_string(w, "t.string", "h\xc3\xa9llo", &e), 0);
    assert_int_equal(whet_gguf_set_string(w, "t.empty_string", "", &e), 0);

    const uint8_t u8s[] = {0, 255};
    const int8_t i8s[] = {-128, 127};
    const uint16_t u16s[] = {1, 65535};
    const int16_t i16s[] = {-32768, 32767};
    const uint32_t u32s[] = {7, 4294967295u};
    const int32_t i32s[] = {1, 2, 3, 6, -1};
    const float f32s[] = {-1000.0f, 0.5f, -0.25f};
    const uint8_t bools[] = {1, 0, 1};
    const uint64_t u64s[] = {UINT64_MAX, 0};
    const int64_t i64s[] = {INT64_MIN, INT64_MAX};
    const double f64s[] = {1e300, -2.5};
    const char *strings[] = {"<s>", "", "\xe2\x96\x81the", "Ġworld"};
    assert_int_equal(whet_gguf_set_array(w, "a.u8", WHET_GGUF_UINT8, u8s, 2, &e), 0);
    assert_int_equal(whet_gguf_set_array(w, "a.i8", WHET_GGUF_INT8, i8s, 2, &e), 0);
    assert_int_equal(whet_gguf_set_array(w, "a.u16", WHET_GGUF_UINT16, u16s, 2, &e), 0);
    assert_int_equal(whet_gguf_set_array(w, "a.i16", WHET_GGUF_INT16, i16s, 2, &e), 0);
    assert_int_equal(whet_gguf_set_array(w, "a.u32", WHET_GGUF_UINT32, u32s, 2, &e), 0);
    assert_int_equal(whet_gguf_set_array(w, "a.i32", WHET_GGUF_INT32, i32s, 5, &e), 0);
    assert_int_equal(whet_gguf_set_array(w, "a.f32", WHET_GGUF_FLOAT32, f32s, 3, &e), 0);
    assert_int_equal(whet_gguf_set_array(w, "a.bool", WHET_GGUF_BOOL, bools, 3, &e), 0);
    assert_int_equal(whet_gguf_set_array(w, "a.u64", WHET_GGUF_UINT64, u64s, 2, &e), 0);
    assert_int_equal(whet_gguf_set_array(w, "a.i64", WHET_GGUF_INT64, i64s, 2, &e), 0);
    assert_int_equal(whet_gguf_set_array(w, "a.f64", WHET_GGUF_FLOAT64, f64s, 2, &e), 0);
    assert_int_equal(whet_gguf_set_array(w, "a.string", WHET_GGUF_STRING, strings, 4, &e), 0);
    assert_int_equal(whet_gguf_set_array(w, "a.empty", WHET_GGUF_INT32, NULL, 0, &e), 0);

    /* [[1, 2], [], [["x"]]]: the SPEC allows arrays of arrays */
    const int32_t one_two[] = {1, 2};
    whet_gguf_str x = {(char *)"x", 1};
    whet_gguf_value innermost = {.type = WHET_GGUF_ARRAY, .as.arr = {WHET_GGUF_STRING, 1, &x}};
    whet_gguf_value items[3] = {
        {.type = WHET_GGUF_ARRAY, .as.arr = {WHET_GGUF_INT32, 2, (void *)one_two}},
        {.type = WHET_GGUF_ARRAY, .as.arr = {WHET_GGUF_FLOAT32, 0, NULL}},
        {.type = WHET_GGUF_ARRAY, .as.arr = {WHET_GGUF_ARRAY, 1, &innermost}},
    };
    whet_gguf_value nested = {.type = WHET_GGUF_ARRAY, .as.arr = {WHET_GGUF_ARRAY, 3, items}};
    assert_int_equal(whet_gguf_set_value(w, "a.nested", &nested, &e), 0);
    /* a string with a NUL inside keeps its length */
    whet_gguf_value with_nul = {.type = WHET_GGUF_STRING, .as.str = {(char *)"a\0b", 3}};
    assert_int_equal(whet_gguf_set_value(w, "t.nul", &with_nul, &e), 0);
    /* setting a key again replaces its value where it stands */
    assert_int_equal(whet_gguf_set_u8(w, "t.u8", 251, &e), 0);

    unsigned char *data;
    size_t size;
    assert_int_equal(whet_gguf_write_memory(w, &data, &size, &e), 0);
    whet_gguf_writer_free(w);
    whet_gguf *g = whet_gguf_parse(data, size, "rt.gguf", &e);
    assert_non_null(g);
    assert_int_equal(g->n_kv, 28);
    assert_string_equal(g->kv[0].key.data, "t.u8");
    assert_int_equal(g->kv[0].value.type, WHET_GGUF_UINT8);
    assert_int_equal(g->kv[0].value.as.u8, 251);
    assert_int_equal(whet_gguf_find(g, "t.i8")->value.as.i8, -100);
    assert_int_equal(whet_gguf_find(g, "t.u16")->value.as.u16, 65000);
    assert_int_equal(whet_gguf_find(g, "t.i16")->value.as.i16, -32000);
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    float f32;
    int boolean;
    assert_int_equal(whet_gguf_get_u32(g, "t.u32", &u32, &e), 0);
    assert_int_equal(u32, 4000000000u);
    assert_int_equal(whet_gguf_get_i32(g, "t.i32", &i32, &e), 0);
    assert_int_equal(i32, -2000000000);
    assert_int_equal(whet_gguf_get_f32(g, "t.f32", &f32, &e), 0);
    assert_true(f32 == 1e-5f);
    assert_int_equal(whet_gguf_get_bool(g, "t.bool", &boolean, &e), 0);
    assert_int_equal(boolean, 1);
    assert_int_equal(whet_gguf_get_u64(g, "t.u64", &u64, &e), 0);
    assert_true(u64 == 0xFEDCBA9876543210ull);
    assert_true(whet_gguf_find(g, "t.i64")->value.as.i64 == -0x123456789ABCDEFll);
    assert_true(whet_gguf_find(g, "t.f64")->value.as.f64 == 3.141592653589793);
    const whet_gguf_str *s;
    assert_int_equal(whet_gguf_get_string(g, "t.string", &s, &e), 0);
    assert_int_equal(s->len, 6);
    assert_string_equal(s->data, "h\xc3\xa9llo");
    assert_int_equal(whet_gguf_get_string(g, "t.empty_string", &s, &e), 0);
    assert_int_equal(s->len, 0);
    assert_string_equal(s->data, "");
    assert_int_equal(whet_gguf_get_string(g, "t.nul", &s, &e), 0);
    assert_int_equal(s->len, 3);
    assert_memory_equal(s->data, "a\0b", 4);

    const whet_gguf_value *v;
#define CHECK_ARRAY(key, elem, ctype, values, n)                                    \
    v = &whet_gguf_find(g, key)->value;                                            \
    assert_int_equal(v->type, WHET_GGUF_ARRAY);                                    \
    assert_int_equal(v->as.arr.type, elem);                                        \
    assert_int_equal(v->as.arr.count, n);                                          \
    assert_memory_equal(v->as.arr.data, values, (n) * sizeof(ctype));
    CHECK_ARRAY("a.u8", WHET_GGUF_UINT8, uint8_t, u8s, 2)
    CHECK_ARRAY("a.i8", WHET_GGUF_INT8, int8_t, i8s, 2)
    CHECK_ARRAY("a.u16", WHET_GGUF_UINT16, uint16_t, u16s, 2)
    CHECK_ARRAY("a.i16", WHET_GGUF_INT16, int16_t, i16s, 2)
    CHECK_ARRAY("a.u32", WHET_GGUF_UINT32, uint32_t, u32s, 2)
    CHECK_ARRAY("a.i32", WHET_GGUF_INT32, int32_t, i32s, 5)
    CHECK_ARRAY("a.f32", WHET_GGUF_FLOAT32, float, f32s, 3)
    CHECK_ARRAY("a.bool", WHET_GGUF_BOOL, uint8_t, bools, 3)
    CHECK_ARRAY("a.u64", WHET_GGUF_UINT64, uint64_t, u64s, 2)
    CHECK_ARRAY("a.i64", WHET_GGUF_INT64, int64_t, i64s, 2)
    CHECK_ARRAY("a.f64", WHET_GGUF_FLOAT64, double, f64s, 2)
#undef CHECK_ARRAY
    const int32_t *ints;
    const uint32_t *uints;
    const float *floats;
    const whet_gguf_str *strs;
    uint64_t count;
    assert_int_equal(whet_gguf_get_i32_array(g, "a.i32", &ints, &count, &e), 0);
    assert_int_equal(count, 5);
    assert_int_equal(ints[4], -1);
    assert_int_equal(whet_gguf_get_u32_array(g, "a.u32", &uints, &count, &e), 0);
    assert_int_equal(uints[1], 4294967295u);
    assert_int_equal(whet_gguf_get_f32_array(g, "a.f32", &floats, &count, &e), 0);
    assert_int_equal(count, 3);
    assert_true(floats[0] == -1000.0f && floats[2] == -0.25f);
    assert_int_equal(whet_gguf_get_string_array(g, "a.string", &strs, &count, &e), 0);
    assert_int_equal(count, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(strs[i].len, strlen(strings[i]));
        assert_string_equal(strs[i].data, strings[i]);
    }
    assert_int_equal(whet_gguf_get_i32_array(g, "a.empty", &ints, &count, &e), 0);
    assert_int_equal(count, 0);

    v = &whet_gguf_find(g, "a.nested")->value;
    assert_int_equal(v->as.arr.type, WHET_GGUF_ARRAY);
    assert_int_equal(v->as.arr.count, 3);
    const whet_gguf_value *got = v->as.arr.data;
    assert_int_equal(got[0].as.arr.type, WHET_GGUF_INT32);
    assert_int_equal(got[0].as.arr.count, 2);
    assert_memory_equal(got[0].as.arr.data, one_two, sizeof one_two);
    assert_int_equal(got[1].as.arr.type, WHET_GGUF_FLOAT32);
    assert_int_equal(got[1].as.arr.count, 0);
    assert_int_equal(got[2].as.arr.type, WHET_GGUF_ARRAY);
    const whet_gguf_value *inner = got[2].as.arr.data;
    assert_int_equal(inner[0].as.arr.type, WHET_GGUF_STRING);
    assert_string_equal(((const whet_gguf_str *)inner[0].as.arr.data)[0].data, "x");
    whet_gguf_close(g);
    free(data);
}

static void getters_name_the_key_and_both_types(void **state)
{
    (void)state;
    bytes b = {.len = 0};
    b_header(&b, 3, 0, 3);
    b_str(&b, "tokenizer.ggml.scores");
    size_t scores_type_at = b.len;
    b_u32(&b, WHET_GGUF_ARRAY);
    b_u32(&b, WHET_GGUF_INT32);
    b_u64(&b, 1);
    b_u32(&b, 5);
    b_str(&b, "llama.block_count");
    size_t count_type_at = b.len;
    b_u32(&b, WHET_GGUF_UINT64);
    b_u64(&b, 22);
    b_str(&b, "general.name");
    b_u32(&b, WHET_GGUF_STRING);
    b_str(&b, "x");
    whet_gguf *g = parse_ok(&b);
    whet_err e = {{0}};
    const float *floats;
    uint64_t count;
    char expected[256];
    assert_int_equal(whet_gguf_get_f32_array(g, "tokenizer.ggml.scores", &floats, &count, &e), -1);
    snprintf(expected, sizeof expected,
             "t.gguf: byte %zu: key 'tokenizer.ggml.scores': expected array of float32, found array of int32",
             scores_type_at);
    assert_string_equal(e.msg, expected);
    uint32_t u32;
    assert_int_equal(whet_gguf_get_u32(g, "llama.block_count", &u32, &e), -1);
    snprintf(expected, sizeof expected, "t.gguf: byte %zu: key 'llama.block_count': expected uint32, found uint64",
             count_type_at);
    assert_string_equal(e.msg, expected);
    assert_int_equal(whet_gguf_get_u32(g, "general.name", &u32, &e), -1);
    assert_non_null(strstr(e.msg, "key 'general.name': expected uint32, found string"));
    const whet_gguf_str *s;
    assert_int_equal(whet_gguf_get_string(g, "tokenizer.ggml.scores", &s, &e), -1);
    assert_non_null(strstr(e.msg, "expected string, found array of int32"));
    assert_int_equal(whet_gguf_get_u32(g, "llama.context_length", &u32, &e), -1);
    assert_string_equal(e.msg, "t.gguf: key 'llama.context_length' not found");
    assert_null(whet_gguf_find(g, "llama.context_length"));
    assert_null(whet_gguf_find(g, "general.nam"));
    assert_null(whet_gguf_find(g, "general.namex"));
    whet_gguf_close(g);
}

/* ---- tensors ---------------------------------------------------------------------------- */

static void tensor_types_round_trip_through_a_file(void **state)
{
    (void)state;
    enum { N = 64 };
    float f32[N], f16[N], bf16[N], q8[N], q4[N];
    for (int i = 0; i < N; i++) {
        f32[i] = (float)sin(i * 0.37) * 1e3f + 1e-7f * (float)i; /* needs all of fp32's bits */
        f16[i] = (float)(i - 32) * 0.125f;                        /* exact in fp16 */
        bf16[i] = (float)(i - 20) * 4096.0f;                      /* exact in bf16 */
        /* block 0 has max |x| = 127 so d = 1 and q = round(x); block 1 has max |x| = 63.5 so d = 0.5 */
        q8[i] = i < 32 ? (float)(i - 16) * 2.5f + (i == 0 ? -87.0f : 0.0f) : (float)(i - 48) * 0.3f;
        q4[i] = i < 32 ? (float)(i % 16) - 8.0f : 0.0f; /* block 0: max = -8 so d = 1; block 1: all 0 */
    }
    q8[31] = 127.0f;
    q8[63] = -63.5f;
    uint64_t ne2[2] = {32, 2}, ne1[1] = {N};
    whet_gguf_writer *w = whet_gguf_writer_new();
    whet_err e = {{0}};
    assert_int_equal(whet_gguf_set_string(w, "general.architecture", "llama", &e), 0);
    assert_int_equal(whet_gguf_add_tensor_f32(w, "f32", WHET_GGML_F32, 2, ne2, f32, &e), 0);
    assert_int_equal(whet_gguf_add_tensor_f32(w, "f16", WHET_GGML_F16, 1, ne1, f16, &e), 0);
    assert_int_equal(whet_gguf_add_tensor_f32(w, "bf16", WHET_GGML_BF16, 1, ne1, bf16, &e), 0);
    assert_int_equal(whet_gguf_add_tensor_f32(w, "q8", WHET_GGML_Q8_0, 2, ne2, q8, &e), 0);
    assert_int_equal(whet_gguf_add_tensor_f32(w, "q4", WHET_GGML_Q4_0, 2, ne2, q4, &e), 0);
    /* a Q4_K block copied as bytes: d = 1, dmin = 0, scales all 1, every nibble 3 → every value 3 */
    unsigned char q4k[144] = {0};
    q4k[1] = 0x3C;
    for (int i = 0; i < 4; i++)
        q4k[4 + i] = 1;
    for (int i = 8; i < 12; i++)
        q4k[4 + i] = 0x01;
    memset(q4k + 16, 0x33, 128);
    uint64_t ne_k[1] = {256};
    assert_int_equal(whet_gguf_add_tensor_raw(w, "q4k", WHET_GGML_Q4_K, 1, ne_k, q4k, &e), 0);

    char dir[] = "/tmp/whet_gguf_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/model.gguf", dir);
    assert_int_equal(whet_gguf_write_file(w, path, &e), 0);
    whet_gguf_writer_free(w);
    whet_gguf *g = whet_gguf_open(path, &e);
    if (!g)
        fail_msg("%s", e.msg);
    assert_int_equal(g->version, 3);
    assert_int_equal(g->alignment, 32);
    assert_int_equal(g->n_tensors, 6);
    /* quantized tensors and no general.quantization_version: the writer added it last */
    uint32_t quantization_version = 0;
    assert_int_equal(g->n_kv, 2);
    assert_string_equal(g->kv[1].key.data, "general.quantization_version");
    assert_int_equal(whet_gguf_get_u32(g, "general.quantization_version", &quantization_version, &e), 0);
    assert_int_equal(quantization_version, 2);
    assert_int_equal(g->data_offset % 32, 0);
    /* ggml's rule: each offset is the sum of the padded sizes before it */
    static const uint64_t bytes_of[6] = {64 * 4, 64 * 2, 64 * 2, 2 * 34, 2 * 18, 144};
    uint64_t offset = 0;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(g->tensors[i].offset, offset);
        assert_int_equal(g->tensors[i].n_bytes, bytes_of[i]);
        offset += (bytes_of[i] + 31) / 32 * 32;
    }
    assert_int_equal(g->size, g->data_offset + offset);

    float out[256];
    const whet_gguf_tensor *t = whet_gguf_find_tensor(g, "f32");
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 32);
    assert_int_equal(t->ne[1], 2);
    assert_int_equal(t->ne[2], 1);
    assert_int_equal(whet_gguf_tensor_to_f32(g, t, out, &e), 0);
    assert_memory_equal(out, f32, sizeof f32);
    assert_int_equal(whet_gguf_tensor_to_f32(g, whet_gguf_find_tensor(g, "f16"), out, &e), 0);
    assert_memory_equal(out, f16, sizeof f16);
    assert_int_equal(whet_gguf_tensor_to_f32(g, whet_gguf_find_tensor(g, "bf16"), out, &e), 0);
    assert_memory_equal(out, bf16, sizeof bf16);

    t = whet_gguf_find_tensor(g, "q8");
    /* block 0: d = 127/127 = 1 (fp16 0x3C00); block 1: d = 63.5/127 = 0.5 (fp16 0x3800) */
    assert_int_equal(t->data[0] | t->data[1] << 8, 0x3C00);
    assert_int_equal(t->data[34] | t->data[35] << 8, 0x3800);
    assert_int_equal(whet_gguf_tensor_to_f32(g, t, out, &e), 0);
    for (int i = 0; i < 32; i++) {
        /* q = round half away from zero of x/1 */
        double want = q8[i] < 0 ? -floor(-q8[i] + 0.5) : floor(q8[i] + 0.5);
        assert_true(out[i] == (float)want);
        assert_int_equal((int8_t)t->data[2 + i], (int)want);
    }
    for (int i = 32; i < 64; i++) {
        double q = q8[i] / 0.5;
        double want = (q < 0 ? -floor(-q + 0.5) : floor(q + 0.5)) * 0.5;
        assert_true(fabs(out[i] - want) < 1e-6);
    }
    assert_true(out[0] == -127.0f); /* -16·2.5 − 87 = −127 */
    assert_true(out[2] == -35.0f);  /* −14·2.5 = −35 exactly */
    assert_true(out[1] == -38.0f);  /* −15·2.5 = −37.5 rounds away from zero to −38 */

    t = whet_gguf_find_tensor(g, "q4");
    assert_int_equal(t->data[0] | t->data[1] << 8, 0x3C00); /* d = −8/−8 = 1 */
    assert_int_equal(whet_gguf_tensor_to_f32(g, t, out, &e), 0);
    for (int i = 0; i < 64; i++)
        assert_true(out[i] == q4[i]);
    assert_int_equal(t->data[2], 0x00); /* x[0] = −8 → q 0; x[16] = −8 → q 0 */
    assert_int_equal(t->data[2 + 15], 0xFF); /* x[15] = 7 → q 15; x[31] = 7 → 15 */

    assert_int_equal(whet_gguf_tensor_to_f32(g, whet_gguf_find_tensor(g, "q4k"), out, &e), 0);
    for (int i = 0; i < 256; i++)
        assert_true(out[i] == 3.0f);
    assert_null(whet_gguf_find_tensor(g, "q4k "));
    whet_gguf_close(g);

    /* the atomic write left nothing but the file */
    char cmd[160];
    snprintf(cmd, sizeof cmd, "test \"$(ls -A %s)\" = model.gguf", dir);
    assert_int_equal(system(cmd), 0);
    unlink(path);
    rmdir(dir);
}

static void alignment_comes_from_general_alignment(void **state)
{
    (void)state;
    whet_gguf_writer *w = whet_gguf_writer_new();
    whet_err e = {{0}};
    assert_int_equal(whet_gguf_set_u32(w, "general.alignment", 64, &e), 0);
    float x[32] = {1.0f};
    uint64_t ne[1] = {32};
    assert_int_equal(whet_gguf_add_tensor_f32(w, "a", WHET_GGML_F16, 1, ne, x, &e), 0); /* 64 bytes */
    assert_int_equal(whet_gguf_add_tensor_f32(w, "b", WHET_GGML_Q8_0, 1, ne, x, &e), 0); /* 34 bytes */
    assert_int_equal(whet_gguf_add_tensor_f32(w, "c", WHET_GGML_F32, 1, ne, x, &e), 0);
    unsigned char *data;
    size_t size;
    assert_int_equal(whet_gguf_write_memory(w, &data, &size, &e), 0);
    whet_gguf_writer_free(w);
    whet_gguf *g = whet_gguf_parse(data, size, "a.gguf", &e);
    assert_non_null(g);
    assert_int_equal(g->alignment, 64);
    assert_int_equal(g->data_offset % 64, 0);
    assert_int_equal(g->tensors[1].offset, 64);
    assert_int_equal(g->tensors[2].offset, 128); /* 64 + 34 padded to 64 */
    whet_gguf_close(g);
    free(data);

    /* only unquantized tensors: no general.quantization_version */
    w = whet_gguf_writer_new();
    assert_int_equal(whet_gguf_add_tensor_f32(w, "c", WHET_GGML_BF16, 1, ne, x, &e), 0);
    assert_int_equal(whet_gguf_write_memory(w, &data, &size, &e), 0);
    whet_gguf_writer_free(w);
    g = whet_gguf_parse(data, size, "a.gguf", &e);
    assert_non_null(g);
    assert_int_equal(g->n_kv, 0);
    whet_gguf_close(g);
    free(data);

    w = whet_gguf_writer_new();
    assert_int_equal(whet_gguf_set_u32(w, "general.alignment", 48, &e), -1);
    assert_non_null(strstr(e.msg, "general.alignment"));
    assert_int_equal(whet_gguf_set_u64(w, "general.alignment", 64, &e), -1);
    assert_non_null(strstr(e.msg, "expected a uint32 power of 2, found uint64"));
    whet_gguf_writer_free(w);
}

/* ---- dequantization of hand-built blocks ------------------------------------------------- */

static void q8_0_block_by_hand(void **state)
{
    (void)state;
    unsigned char block[2 * 34];
    /* block 0: d = fp16 0x3800 = 0.5; block 1: d = fp16 0xC200 = −3 */
    block[0] = 0x00, block[1] = 0x38;
    block[34] = 0x00, block[35] = 0xC2;
    for (int j = 0; j < 32; j++) {
        block[2 + j] = (unsigned char)(int8_t)(j * 8 - 128); /* −128, −120, ..., 120 */
        block[36 + j] = (unsigned char)(int8_t)(j - 16);
    }
    float y[64];
    assert_int_equal(whet_ggml_dequantize(WHET_GGML_Q8_0, block, y, 64), 0);
    for (int j = 0; j < 32; j++) {
        assert_true(y[j] == (float)(j * 8 - 128) * 0.5f);
        assert_true(y[32 + j] == (float)(j - 16) * -3.0f);
    }
    assert_true(y[0] == -64.0f);
    assert_true(y[31] == 60.0f);
    assert_true(y[32] == 48.0f);
    assert_int_equal(whet_ggml_dequantize(WHET_GGML_Q8_0, block, y, 48), -1); /* not whole blocks */
}

static void q4_0_block_by_hand(void **state)
{
    (void)state;
    unsigned char block[18];
    block[0] = 0x00, block[1] = 0x40; /* d = 2 */
    for (int j = 0; j < 16; j++)
        block[2 + j] = (unsigned char)(j | (15 - j) << 4);
    float y[32];
    assert_int_equal(whet_ggml_dequantize(WHET_GGML_Q4_0, block, y, 32), 0);
    /* element j < 16 is the low nibble, element 16 + j the high nibble of byte j */
    for (int j = 0; j < 16; j++) {
        assert_true(y[j] == (float)((j - 8) * 2));
        assert_true(y[16 + j] == (float)((15 - j - 8) * 2));
    }
    assert_true(y[0] == -16.0f && y[15] == 14.0f && y[16] == 14.0f && y[31] == -16.0f);
}

/* Packs eight 6-bit scales and mins into Q4_K's 12 bytes, from the format's
 * description: sc/m 0..3 in the low 6 bits of bytes 0..3 / 4..7; sc/m 4..7 low
 * nibbles in bytes 8..11 (sc low, m high), top 2 bits in the top of bytes
 * 0..3 (sc) and 4..7 (m). */
static void pack_q4_k_scales(unsigned char s[12], const unsigned sc[8], const unsigned m[8])
{
    memset(s, 0, 12);
    for (int j = 0; j < 4; j++) {
        s[j] = (unsigned char)(sc[j] | (sc[j + 4] >> 4) << 6);
        s[j + 4] = (unsigned char)(m[j] | (m[j + 4] >> 4) << 6);
        s[j + 8] = (unsigned char)((sc[j + 4] & 0xF) | (m[j + 4] & 0xF) << 4);
    }
}

static void q4_k_block_by_hand(void **state)
{
    (void)state;
    /* scales and mins over the whole 6-bit range, high bits set in the last four */
    const unsigned sc[8] = {1, 63, 17, 32, 5, 48, 63, 33};
    const unsigned m[8] = {0, 2, 63, 40, 36, 1, 16, 63};
    unsigned char block[144];
    block[0] = 0x00, block[1] = 0x38; /* d = 0.5 */
    block[2] = 0x00, block[3] = 0x30; /* dmin = 0.125 */
    pack_q4_k_scales(block + 4, sc, m);
    for (int l = 0; l < 128; l++)
        block[16 + l] = (unsigned char)((l * 7) & 0xFF);
    float y[256];
    assert_int_equal(whet_ggml_dequantize(WHET_GGML_Q4_K, block, y, 256), 0);
    /* sub-block b covers elements 32b..32b+31; chunk c = b/2 uses bytes 32c..32c+31,
     * low nibbles for the even sub-block, high for the odd */
    for (int i = 0; i < 256; i++) {
        int sub = i / 32, l = i % 32, chunk = sub / 2;
        unsigned byte = (unsigned)(((32 * chunk + l) * 7) & 0xFF);
        unsigned q = sub % 2 ? byte >> 4 : byte & 0xF;
        double want = 0.5 * sc[sub] * q - 0.125 * m[sub];
        if (fabs(y[i] - want) > 1e-6)
            fail_msg("element %d: expected %g, found %g", i, want, (double)y[i]);
    }
    /* a few by hand: y[0]: byte 0 = 0, q 0 → −0.125·0 = 0.
     * y[33]: sub 1 (sc 63, m 2), byte 1 = 7, high nibble 0 → −0.25.
     * y[45]: sub 1, byte 13 = 91 = 0x5B, high 5 → 0.5·63·5 − 0.25 = 157.25.
     * y[200]: sub 6 (sc 63, m 16), chunk 3, byte 96+8 = 104·7 = 728 & 255 = 216 = 0xD8, low 8 → 252 − 2 = 250.
     * y[255]: sub 7 (sc 33, m 63), byte 127·7 = 889 & 255 = 121 = 0x79, high 7 → 115.5 − 7.875 = 107.625 */
    assert_true(y[0] == 0.0f);
    assert_true(y[33] == -0.25f);
    assert_true(y[45] == 157.25f);
    assert_true(y[200] == 250.0f);
    assert_true(y[255] == 107.625f);
}

static void q6_k_block_by_hand(void **state)
{
    (void)state;
    /* layout: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], f16 d at byte 208 */
    unsigned char block[210];
    for (int i = 0; i < 128; i++)
        block[i] = (unsigned char)((i * 11 + 5) & 0xFF);
    for (int i = 0; i < 64; i++)
        block[128 + i] = (unsigned char)((i * 37 + 1) & 0xFF);
    const int8_t scales[16] = {1, -1, 2, -3, 5, 8, -13, 21, 127, -128, 0, 4, -7, 9, 16, -32};
    memcpy(block + 192, scales, 16);
    block[208] = 0x00, block[209] = 0x34; /* d = 0.25 */
    float y[256];
    assert_int_equal(whet_ggml_dequantize(WHET_GGML_Q6_K, block, y, 256), 0);
    /* element i: half h = i/128 owns ql[64h..], qh[32h..], scales[8h..]; within it,
     * group g = (i%128)/32 and lane l = i%32 take the 4 low bits from ql[64h + l + 32(g&1)]
     * (low nibble for g < 2, high for g ≥ 2) and 2 high bits from bits 2g..2g+1 of qh[32h + l];
     * value = d · scales[8h + 2g + l/16] · (q − 32) */
    for (int i = 0; i < 256; i++) {
        int h = i / 128, g = (i % 128) / 32, l = i % 32;
        unsigned low_byte = block[64 * h + l + 32 * (g & 1)];
        unsigned low = g < 2 ? low_byte & 0xF : low_byte >> 4;
        unsigned high = (block[128 + 32 * h + l] >> (2 * g)) & 3;
        int q = (int)(low | high << 4) - 32;
        double want = 0.25 * scales[8 * h + 2 * g + l / 16] * q;
        if (y[i] != (float)want)
            fail_msg("element %d: expected %g, found %g", i, want, (double)y[i]);
    }
    /* y[0]: ql[0] = 5 → low 5; qh[0] = 1 → bits 0..1 = 1 → q = 5 + 16 − 32 = −11; 0.25·1·−11 = −2.75.
     * y[200]: h 1, g 2, l 8: ql[64+8] = (72·11+5) & 255 = 797 & 255 = 29 = 0x1D → high 1;
     * qh[32+8] = (40·37+1) & 255 = 1481 & 255 = 201 = 0b11001001 → bits 4..5 = 0 → q = 1 − 32 = −31;
     * scale[8+4+0] = −7 → 0.25·−7·−31 = 54.25 */
    assert_true(y[0] == -2.75f);
    assert_true(y[200] == 54.25f);
}

static void half_types_by_hand(void **state)
{
    (void)state;
    const unsigned char f16[] = {0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B, 0x01, 0x00, 0x00, 0x7C, 0x00, 0x80};
    float y[6];
    assert_int_equal(whet_ggml_dequantize(WHET_GGML_F16, f16, y, 6), 0);
    assert_true(y[0] == 1.0f && y[1] == -2.0f && y[2] == 65504.0f);
    assert_true(y[3] == ldexpf(1.0f, -24)); /* the smallest subnormal */
    assert_true(isinf(y[4]) && y[4] > 0);
    assert_true(y[5] == 0.0f && signbit(y[5]));
    for (int i = 0; i < 6; i++)
        assert_true(y[i] == half_bits_to_float((uint16_t)(f16[2 * i] | f16[2 * i + 1] << 8)) || isinf(y[i]));
    const unsigned char bf16[] = {0x80, 0x3F, 0x49, 0x40, 0x80, 0xC0};
    assert_int_equal(whet_ggml_dequantize(WHET_GGML_BF16, bf16, y, 3), 0);
    assert_true(y[0] == 1.0f && y[1] == 3.140625f && y[2] == -4.0f);
    /* F32 from unaligned bytes: 1.5 = 0x3FC00000 */
    const unsigned char f32[] = {0xFF, 0x00, 0x00, 0xC0, 0x3F};
    assert_int_equal(whet_ggml_dequantize(WHET_GGML_F32, f32 + 1, y, 1), 0);
    assert_true(y[0] == 1.5f);
}

static void quantizers_round_like_ggml(void **state)
{
    (void)state;
    float x[32] = {0};
    /* amax 12.7 → d = 0.1 */
    x[0] = 12.7f, x[1] = -6.35f, x[2] = 0.04f, x[3] = -0.06f;
    unsigned char q[34];
    assert_int_equal(whet_ggml_quantize(WHET_GGML_Q8_0, x, q, 32), 0);
    float d = 12.7f / 127.0f, id = 1.0f / d;
    assert_int_equal((int8_t)q[2], 127);
    assert_int_equal((int8_t)q[3], (int)roundf(-6.35f * id)); /* −63.5 ± ulp, ggml's x·(1/d) */
    assert_int_equal((int8_t)q[4], 0);                          /* 0.4 → 0 */
    assert_int_equal((int8_t)q[5], -1);                         /* −0.6 → −1 */
    assert_int_equal((int8_t)q[6], 0);
    /* d stored as fp16: 0.1 → 0x2E66 */
    assert_int_equal(q[0] | q[1] << 8, 0x2E66);

    /* all zeros: d = 0 and every q 0, no division by zero */
    memset(x, 0, sizeof x);
    assert_int_equal(whet_ggml_quantize(WHET_GGML_Q8_0, x, q, 32), 0);
    for (int i = 0; i < 34; i++)
        assert_int_equal(q[i], 0);

    /* Q4_0: the value of largest magnitude, sign kept, maps to −8: max = 16 → d = −2 */
    for (int i = 0; i < 32; i++)
        x[i] = (float)(i - 16);
    x[0] = -15.0f;
    x[31] = 16.0f;
    unsigned char q4[18];
    assert_int_equal(whet_ggml_quantize(WHET_GGML_Q4_0, x, q4, 32), 0);
    assert_int_equal(q4[0] | q4[1] << 8, 0xC000); /* −2 */
    /* q = min(15, trunc(x/d + 8.5)): x = −15 → 7.5 + 8.5 = 16 → clamped to 15; x = 16 → −8 + 8.5 → 0;
     * x = 0 (element 16) → 8; x = −1 (element 15) → 0.5 + 8.5 = 9 */
    assert_int_equal(q4[2] & 0xF, 15);
    assert_int_equal(q4[2 + 15] >> 4, 0);
    assert_int_equal(q4[2] >> 4, 8);
    assert_int_equal(q4[2 + 15] & 0xF, 9);
    /* with a tie in magnitude the first wins: −16 before 16 gives d = +2 */
    x[0] = -16.0f;
    assert_int_equal(whet_ggml_quantize(WHET_GGML_Q4_0, x, q4, 32), 0);
    assert_int_equal(q4[0] | q4[1] << 8, 0x4000);

    x[5] = NAN;
    assert_int_equal(whet_ggml_quantize(WHET_GGML_Q8_0, x, q, 32), -1);
    assert_int_equal(whet_ggml_quantize(WHET_GGML_Q4_0, x, q4, 32), -1);
    assert_int_equal(whet_ggml_quantize(WHET_GGML_Q4_K, x, q, 32), -1); /* not a quantizer whet has */
}

static void writer_refuses_what_llama_cpp_would(void **state)
{
    (void)state;
    whet_gguf_writer *w = whet_gguf_writer_new();
    whet_err e = {{0}};
    float x[64] = {0};
    uint64_t ne[2] = {48, 1};
    assert_int_equal(whet_gguf_add_tensor_f32(w, "odd", WHET_GGML_Q8_0, 2, ne, x, &e), -1);
    assert_non_null(strstr(e.msg, "tensor 'odd': expected ne[0] to be a multiple of 32 (the Q8_0 block), found 48"));
    ne[0] = 32;
    assert_int_equal(whet_gguf_add_tensor_f32(w, "k", WHET_GGML_Q4_K, 2, ne, x, &e), -1);
    assert_non_null(strstr(e.msg, "found Q4_K"));
    assert_int_equal(whet_gguf_add_tensor_f32(w, "t", 99, 2, ne, x, &e), -1);
    assert_non_null(strstr(e.msg, "expected a known ggml type id, found 99"));
    assert_int_equal(whet_gguf_add_tensor_f32(w, "t", WHET_GGML_F32, 5, ne, x, &e), -1);
    char long_name[80];
    memset(long_name, 'n', 64);
    long_name[64] = 0;
    assert_int_equal(whet_gguf_add_tensor_f32(w, long_name, WHET_GGML_F32, 2, ne, x, &e), -1);
    long_name[63] = 0;
    assert_int_equal(whet_gguf_add_tensor_f32(w, long_name, WHET_GGML_F32, 2, ne, x, &e), 0);
    assert_int_equal(whet_gguf_add_tensor_f32(w, long_name, WHET_GGML_F16, 2, ne, x, &e), -1);
    assert_non_null(strstr(e.msg, "expected each tensor name once"));
    assert_int_equal(whet_gguf_set_u32(w, "", 1, &e), -1);
    whet_gguf_value bad_bool = {.type = WHET_GGUF_BOOL, .as.boolean = 2};
    assert_int_equal(whet_gguf_set_value(w, "b", &bad_bool, &e), -1);

    /* a value that cannot be quantized fails the write, naming the tensor and element */
    x[37] = INFINITY;
    assert_int_equal(whet_gguf_add_tensor_f32(w, "inf", WHET_GGML_Q8_0, 2, ne, x + 32, &e), 0);
    unsigned char *data = NULL;
    size_t size = 0;
    assert_int_equal(whet_gguf_write_memory(w, &data, &size, &e), -1);
    assert_non_null(strstr(e.msg, "tensor 'inf': element 5 is inf, which Q8_0 cannot store"));
    char dir[] = "/tmp/whet_gguf_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64], cmd[160];
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    assert_int_equal(whet_gguf_write_file(w, path, &e), -1);
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A %s)\"", dir); /* no temporary left behind */
    assert_int_equal(system(cmd), 0);
    rmdir(dir);
    whet_gguf_writer_free(w);
}

/* ---- validation errors with their byte offsets ----------------------------------------------- */

static void metadata_errors_name_the_byte(void **state)
{
    (void)state;
    bytes b = {.len = 0};
    b_header(&b, 3, 0, 1000);
    expect_error(&b, "t.gguf: byte 16: expected a metadata count that fits the 0 bytes left (at most 0), found 1000");

    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_u64(&b, 100); /* key length past the end */
    b_raw(&b, "abcdefgh", 8);
    expect_error(&b, "t.gguf: byte 24: expected a length for a metadata key of at most the 8 bytes left, found 100");

    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "");
    b_u32(&b, WHET_GGUF_UINT8);
    b_u8(&b, 0);
    expect_error(&b, "t.gguf: byte 24: expected a non-empty metadata key, found an empty one");

    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, 13);
    b_u8(&b, 0);
    expect_error(&b, "t.gguf: byte 33: key 'k': expected a value type 0..12, found 13");

    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, WHET_GGUF_BOOL);
    b_u8(&b, 2);
    expect_error(&b, "t.gguf: byte 37: key 'k': expected a bool 0 or 1, found 2");

    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, WHET_GGUF_UINT32);
    b_u16(&b, 7);
    expect_error(&b, "t.gguf: byte 37: expected 4 bytes for uint32, found 2 (the file ends)");

    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, WHET_GGUF_STRING);
    b_u64(&b, 5);
    b_raw(&b, "abc", 3);
    expect_error(&b, "t.gguf: byte 37: expected a length for a string value of at most the 3 bytes left, found 5");

    /* arrays: element type, count bounded by the bytes left, bools, strings, depth */
    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, WHET_GGUF_ARRAY);
    b_u32(&b, 13);
    b_u64(&b, 0);
    expect_error(&b, "t.gguf: byte 37: key 'k': expected an array element type 0..12, found 13");

    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, WHET_GGUF_ARRAY);
    b_u32(&b, WHET_GGUF_UINT32);
    b_u64(&b, 3);
    b_u32(&b, 1);
    b_u32(&b, 2);
    expect_error(&b, "t.gguf: byte 41: key 'k': expected an array count that fits the 8 bytes left (at most 2 uint32), found 3");

    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, WHET_GGUF_ARRAY);
    b_u32(&b, WHET_GGUF_UINT64);
    b_u64(&b, UINT64_MAX); /* would overflow count × 8 if not bounded first */
    expect_error(&b, "t.gguf: byte 41: key 'k': expected an array count that fits the 0 bytes left (at most 0 uint64), found 18446744073709551615");

    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, WHET_GGUF_ARRAY);
    b_u32(&b, WHET_GGUF_BOOL);
    b_u64(&b, 3);
    b_u8(&b, 1);
    b_u8(&b, 0);
    b_u8(&b, 9);
    expect_error(&b, "t.gguf: byte 51: key 'k': expected a bool 0 or 1, found 9");

    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "tokenizer.ggml.tokens");
    b_u32(&b, WHET_GGUF_ARRAY);
    b_u32(&b, WHET_GGUF_STRING);
    b_u64(&b, 2);
    b_str(&b, "ab");
    size_t second_at = b.len;
    b_u64(&b, 9);
    b_raw(&b, "cd", 2);
    expect_error(&b, "t.gguf: byte %zu: key 'tokenizer.ggml.tokens': expected a length for string 1 of at most the 2 bytes left, found 9",
                 second_at);

    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, WHET_GGUF_ARRAY);
    size_t depth_at = 0;
    for (int level = 0; level < WHET_GGUF_MAX_ARRAY_DEPTH; level++) {
        depth_at = b.len;
        b_u32(&b, WHET_GGUF_ARRAY);
        b_u64(&b, 1);
    }
    b_zeros(&b, 12);
    /* the key's own array holds 7 levels of arrays; the 8th is refused at its element type */
    expect_error(&b, "t.gguf: byte %zu: key 'k': expected arrays nested at most %d deep, found deeper", depth_at,
                 WHET_GGUF_MAX_ARRAY_DEPTH);

    b.len = 0;
    b_header(&b, 3, 0, 3);
    b_str(&b, "a");
    b_u32(&b, WHET_GGUF_UINT8);
    b_u8(&b, 1);
    size_t first_b = b.len;
    b_str(&b, "b");
    b_u32(&b, WHET_GGUF_UINT8);
    b_u8(&b, 2);
    size_t second_b = b.len;
    b_str(&b, "b");
    b_u32(&b, WHET_GGUF_UINT8);
    b_u8(&b, 3);
    expect_error(&b, "t.gguf: byte %zu: expected each metadata key once, found 'b' again (first at byte %zu)", second_b,
                 first_b);

    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "general.alignment");
    b_u32(&b, WHET_GGUF_UINT64);
    b_u64(&b, 64);
    expect_error(&b, "t.gguf: byte 49: key 'general.alignment': expected uint32, found uint64");

    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "general.alignment");
    b_u32(&b, WHET_GGUF_UINT32);
    b_u32(&b, 48);
    expect_error(&b, "t.gguf: byte 53: key 'general.alignment': expected a power of 2, found 48");
}

/* A file with one metadata key and the given tensor infos follows. */
static void tensor_file_header(bytes *b, uint64_t n_tensors)
{
    b->len = 0;
    b_header(b, 3, n_tensors, 1);
    b_str(b, "general.architecture");
    b_u32(b, WHET_GGUF_STRING);
    b_str(b, "llama");
}

static void tensor_errors_name_the_byte(void **state)
{
    (void)state;
    bytes b;
    const uint64_t ne32[2] = {32, 2}, ne_odd[2] = {33, 2}, ne5[5] = {32, 1, 1, 1, 1};

    tensor_file_header(&b, 100);
    size_t infos_at = b.len;
    expect_error(&b, "t.gguf: byte 8: expected a tensor count that fits the 0 bytes left after the metadata (at most 0), found 100");

    tensor_file_header(&b, 1);
    char name[70];
    memset(name, 'w', 65);
    name[65] = 0;
    b_tensor(&b, name, 2, ne32, WHET_GGML_F32, 0);
    expect_error(&b, "t.gguf: byte %zu: expected a tensor name of at most 64 bytes, found 65 bytes", infos_at);

    tensor_file_header(&b, 1);
    b_str(&b, "five");
    size_t ndims_at = b.len;
    b_u32(&b, 5);
    for (int j = 0; j < 5; j++)
        b_u64(&b, ne5[j]);
    b_u32(&b, 0);
    b_u64(&b, 0);
    expect_error(&b, "t.gguf: byte %zu: tensor 'five': expected at most 4 dimensions, found 5", ndims_at);

    tensor_file_header(&b, 1);
    b_str(&b, "huge");
    b_u32(&b, 2);
    b_u64(&b, 1ull << 40);
    size_t ne1_at = b.len;
    b_u64(&b, 1ull << 40);
    b_u32(&b, 0);
    b_u64(&b, 0);
    expect_error(&b, "t.gguf: byte %zu: tensor 'huge': expected at most 2^63-1 elements", ne1_at);

    tensor_file_header(&b, 1);
    size_t offset_at = b_tensor(&b, "blk.0.attn_q.weight", 2, ne32, 99, 0);
    expect_error(&b, "t.gguf: byte %zu: tensor 'blk.0.attn_q.weight': expected a known ggml type id, found 99",
                 offset_at - 4);

    tensor_file_header(&b, 1);
    size_t name_at = b.len;
    b_tensor(&b, "odd", 2, ne_odd, WHET_GGML_Q8_0, 0);
    size_t ne0_at = name_at + 8 + 3 + 4;
    expect_error(&b, "t.gguf: byte %zu: tensor 'odd': expected ne[0] to be a multiple of 32 (the Q8_0 block), found 33",
                 ne0_at);

    tensor_file_header(&b, 1);
    offset_at = b_tensor(&b, "t", 2, ne32, WHET_GGML_F32, 16);
    b_pad(&b, 32);
    b_zeros(&b, 512);
    expect_error(&b, "t.gguf: byte %zu: tensor 't': expected a data offset that is a multiple of the alignment 32, found 16",
                 offset_at);

    /* 256 bytes of F32 data, but the file holds only 255 after the padding */
    tensor_file_header(&b, 1);
    offset_at = b_tensor(&b, "t", 2, ne32, WHET_GGML_F32, 0);
    b_pad(&b, 32);
    size_t data_at = b.len;
    b_zeros(&b, 255);
    expect_error(&b, "t.gguf: byte %zu: tensor 't': expected its 256 bytes at data offset 0 to end within the file (255 bytes "
                 "of data from byte %zu), found they run past it", offset_at, data_at);
    b_u8(&b, 0);
    whet_gguf *g = parse_ok(&b);
    assert_int_equal(g->data_offset, data_at);
    assert_ptr_equal(g->tensors[0].data, b.p + data_at);
    whet_gguf_close(g);

    /* an offset near 2^64 must not wrap around */
    tensor_file_header(&b, 1);
    offset_at = b_tensor(&b, "t", 2, ne32, WHET_GGML_F32, UINT64_MAX - 31);
    b_pad(&b, 32);
    b_zeros(&b, 256);
    expect_error(&b, "t.gguf: byte %zu: tensor 't': expected its 256 bytes at data offset 18446744073709551584", offset_at);

    /* two tensors over the same bytes: Q8_0 "a" takes 0..68, "b" starts at 64 */
    tensor_file_header(&b, 2);
    b_tensor(&b, "a", 2, ne32, WHET_GGML_Q8_0, 0);
    offset_at = b_tensor(&b, "b", 2, ne32, WHET_GGML_Q8_0, 64);
    b_pad(&b, 32);
    b_zeros(&b, 160);
    expect_error(&b, "t.gguf: byte %zu: tensor 'b': expected data that no other tensor uses, found bytes 64..132 "
                 "overlapping tensor 'a' (0..68)", offset_at);
    /* listed in the other order, the later info is still the one named */
    tensor_file_header(&b, 2);
    b_tensor(&b, "b", 2, ne32, WHET_GGML_Q8_0, 64);
    offset_at = b_tensor(&b, "a", 2, ne32, WHET_GGML_Q8_0, 0);
    b_pad(&b, 32);
    b_zeros(&b, 160);
    expect_error(&b, "t.gguf: byte %zu: tensor 'a': expected data that no other tensor uses", offset_at);

    tensor_file_header(&b, 3);
    b_tensor(&b, "x", 2, ne32, WHET_GGML_F16, 0);
    b_tensor(&b, "y", 2, ne32, WHET_GGML_F16, 128);
    name_at = b.len;
    b_tensor(&b, "x", 2, ne32, WHET_GGML_F16, 256);
    b_pad(&b, 32);
    b_zeros(&b, 384);
    expect_error(&b, "t.gguf: byte %zu: expected each tensor name once, found 'x' again", name_at);

    /* a type whet knows the size of but cannot convert: the file opens, conversion names it */
    tensor_file_header(&b, 1);
    const uint64_t ne256[1] = {256};
    offset_at = b_tensor(&b, "output.weight", 1, ne256, 13, 0);
    b_pad(&b, 32);
    b_zeros(&b, 176);
    g = parse_ok(&b);
    float out[256];
    whet_err e = {{0}};
    assert_int_equal(whet_gguf_tensor_to_f32(g, &g->tensors[0], out, &e), -1);
    char expected[256];
    snprintf(expected, sizeof expected,
             "t.gguf: byte %zu: tensor 'output.weight': expected a type whet can convert to fp32 (F32, F16, BF16, Q8_0, "
             "Q4_0, Q4_K, Q6_K), found Q5_K (type id 13)", offset_at - 4);
    assert_string_equal(e.msg, expected);
    whet_gguf_close(g);
}

static void tensor_infos_read_as_the_spec_says(void **state)
{
    (void)state;
    /* hand-built: non-contiguous but aligned offsets, an empty tensor, a 0-dim tensor,
     * data read from bytes at an odd address */
    bytes b;
    tensor_file_header(&b, 3);
    const uint64_t ne_a[3] = {2, 3, 1}, ne_empty[2] = {0, 4};
    b_tensor(&b, "a", 3, ne_a, WHET_GGML_F32, 64);
    b_tensor(&b, "empty", 2, ne_empty, WHET_GGML_F32, 0);
    b_tensor(&b, "scalar", 0, NULL, WHET_GGML_F32, 0);
    b_pad(&b, 32);
    size_t data_at = b.len;
    b_u32(&b, 0x40400000u); /* scalar = 3.0 */
    b_zeros(&b, 60);
    for (int i = 0; i < 6; i++)
        b_u32(&b, 0x3F800000u + ((uint32_t)i << 20)); /* 1, 1.125, 1.25, ... */
    /* parse a copy placed at an odd address */
    unsigned char *odd = malloc(b.len + 1);
    memcpy(odd + 1, b.p, b.len);
    whet_err e = {{0}};
    whet_gguf *g = whet_gguf_parse(odd + 1, b.len, "odd.gguf", &e);
    if (!g)
        fail_msg("%s", e.msg);
    assert_int_equal(g->data_offset, data_at);
    const whet_gguf_tensor *t = whet_gguf_find_tensor(g, "a");
    assert_int_equal(t->n_dims, 3);
    assert_int_equal(t->n_elements, 6);
    assert_int_equal(t->n_bytes, 24);
    float out[6];
    assert_int_equal(whet_gguf_tensor_to_f32(g, t, out, &e), 0);
    for (int i = 0; i < 6; i++)
        assert_true(out[i] == 1.0f + 0.125f * (float)i);
    t = whet_gguf_find_tensor(g, "empty");
    assert_int_equal(t->n_elements, 0);
    assert_int_equal(t->n_bytes, 0);
    t = whet_gguf_find_tensor(g, "scalar");
    assert_int_equal(t->n_dims, 0);
    assert_int_equal(t->n_elements, 1);
    assert_int_equal(whet_gguf_tensor_to_f32(g, t, out, &e), 0);
    assert_true(out[0] == 3.0f);
    whet_gguf_close(g);
    free(odd);

    /* an empty tensor in a file that ends before the padded data section
     * (fuzzer-found): parses, and its data pointer stays within the buffer */
    tensor_file_header(&b, 1);
    b_tensor(&b, "empty", 1, ne_empty, WHET_GGML_F32, 0);
    assert_true(b.len % 32 != 0);
    g = parse_ok(&b);
    assert_true(g->data_offset > b.len);
    assert_ptr_equal(g->tensors[0].data, b.p + b.len);
    whet_gguf_close(g);

    /* a missing file is an error naming it */
    assert_null(whet_gguf_open("/nonexistent/whet.gguf", &e));
    assert_non_null(strstr(e.msg, "/nonexistent/whet.gguf"));
}

/* Copying every key (set_value) and tensor (raw bytes) from a parsed file
 * gives the same bytes back: what GGUF export will do with a base model's
 * tokenizer metadata. */
static void copying_a_file_reproduces_it(void **state)
{
    (void)state;
    whet_gguf_writer *w = whet_gguf_writer_new();
    whet_err e = {{0}};
    const char *tokens[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81hello"};
    const float scores[] = {0.0f, 0.0f, 0.0f, -1.5f};
    const int32_t types[] = {2, 3, 3, 1};
    assert_int_equal(whet_gguf_set_string(w, "general.type", "adapter", &e), 0);
    assert_int_equal(whet_gguf_set_f32(w, "adapter.lora.alpha", 16.0f, &e), 0);
    assert_int_equal(whet_gguf_set_array(w, "tokenizer.ggml.tokens", WHET_GGUF_STRING, tokens, 4, &e), 0);
    assert_int_equal(whet_gguf_set_array(w, "tokenizer.ggml.scores", WHET_GGUF_FLOAT32, scores, 4, &e), 0);
    assert_int_equal(whet_gguf_set_array(w, "tokenizer.ggml.token_type", WHET_GGUF_INT32, types, 4, &e), 0);
    float a[64], bm[96];
    for (int i = 0; i < 64; i++)
        a[i] = (float)i / 7.0f;
    for (int i = 0; i < 96; i++)
        bm[i] = (float)(i % 5) - 2.0f;
    uint64_t ne_a[2] = {32, 2}, ne_b[2] = {32, 3};
    assert_int_equal(whet_gguf_add_tensor_f32(w, "blk.0.attn_q.weight.lora_a", WHET_GGML_F32, 2, ne_a, a, &e), 0);
    assert_int_equal(whet_gguf_add_tensor_f32(w, "blk.0.attn_q.weight.lora_b", WHET_GGML_Q8_0, 2, ne_b, bm, &e), 0);
    unsigned char *first;
    size_t first_size;
    assert_int_equal(whet_gguf_write_memory(w, &first, &first_size, &e), 0);
    whet_gguf_writer_free(w);

    whet_gguf *g = whet_gguf_parse(first, first_size, "first.gguf", &e);
    assert_non_null(g);
    w = whet_gguf_writer_new();
    for (uint64_t i = 0; i < g->n_kv; i++)
        assert_int_equal(whet_gguf_set_value(w, g->kv[i].key.data, &g->kv[i].value, &e), 0);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const whet_gguf_tensor *t = &g->tensors[i];
        assert_int_equal(whet_gguf_add_tensor_raw(w, t->name.data, t->type, t->n_dims, t->ne, t->data, &e), 0);
    }
    unsigned char *second;
    size_t second_size;
    assert_int_equal(whet_gguf_write_memory(w, &second, &second_size, &e), 0);
    assert_int_equal(second_size, first_size);
    assert_memory_equal(second, first, first_size);
    whet_gguf_writer_free(w);
    whet_gguf_close(g);
    free(first);
    free(second);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(versions_2_and_3_read_alike_and_others_are_refused),
        cmocka_unit_test(writer_lays_out_bytes_little_endian),
        cmocka_unit_test(every_metadata_type_round_trips),
        cmocka_unit_test(getters_name_the_key_and_both_types),
        cmocka_unit_test(tensor_types_round_trip_through_a_file),
        cmocka_unit_test(alignment_comes_from_general_alignment),
        cmocka_unit_test(q8_0_block_by_hand),
        cmocka_unit_test(q4_0_block_by_hand),
        cmocka_unit_test(q4_k_block_by_hand),
        cmocka_unit_test(q6_k_block_by_hand),
        cmocka_unit_test(half_types_by_hand),
        cmocka_unit_test(quantizers_round_like_ggml),
        cmocka_unit_test(writer_refuses_what_llama_cpp_would),
        cmocka_unit_test(metadata_errors_name_the_byte),
        cmocka_unit_test(tensor_errors_name_the_byte),
        cmocka_unit_test(tensor_infos_read_as_the_spec_says),
        cmocka_unit_test(copying_a_file_reproduces_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
