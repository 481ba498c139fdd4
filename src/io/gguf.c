/* GGUF reader, dequantizers, quantizers and writer (see gguf.h; formats.md §2).
 *
 * The reader never trusts a count or a length: each is checked against the
 * bytes left before anything is allocated, every multi-byte field is assembled
 * from bytes (no unaligned casts, no host byte order), and each error names
 * the byte where the file went wrong. */
#include "io/gguf.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "simd/simd.h"

/* ---- tensor type table (gguf-py GGML_QUANT_SIZES) ------------------------ */

typedef struct ggml_type_info {
    const char *name;
    uint32_t block_elems, block_bytes;
} ggml_type_info;

static const ggml_type_info GGML_TYPES[] = {
    [0] = {"F32", 1, 4},       [1] = {"F16", 1, 2},        [2] = {"Q4_0", 32, 18},    [3] = {"Q4_1", 32, 20},
    [6] = {"Q5_0", 32, 22},    [7] = {"Q5_1", 32, 24},     [8] = {"Q8_0", 32, 34},    [9] = {"Q8_1", 32, 36},
    [10] = {"Q2_K", 256, 84},  [11] = {"Q3_K", 256, 110},  [12] = {"Q4_K", 256, 144}, [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210}, [15] = {"Q8_K", 256, 292},  [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74}, [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18}, [21] = {"IQ3_S", 256, 110}, [22] = {"IQ2_S", 256, 82},  [23] = {"IQ4_XS", 256, 136},
    [24] = {"I8", 1, 1},       [25] = {"I16", 1, 2},       [26] = {"I32", 1, 4},      [27] = {"I64", 1, 8},
    [28] = {"F64", 1, 8},      [29] = {"IQ1_M", 256, 56},  [30] = {"BF16", 1, 2},     [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66}, [39] = {"MXFP4", 32, 17},
};
#define GGML_TYPE_IDS (sizeof GGML_TYPES / sizeof GGML_TYPES[0])

const char *whet_ggml_type_name(uint32_t type)
{
    return type < GGML_TYPE_IDS ? GGML_TYPES[type].name : NULL;
}

int whet_ggml_type_size(uint32_t type, uint64_t *block_elems, uint64_t *block_bytes)
{
    if (!whet_ggml_type_name(type))
        return -1;
    *block_elems = GGML_TYPES[type].block_elems;
    *block_bytes = GGML_TYPES[type].block_bytes;
    return 0;
}

int whet_ggml_can_dequantize(uint32_t type)
{
    return type == WHET_GGML_F32 || type == WHET_GGML_F16 || type == WHET_GGML_BF16 || type == WHET_GGML_Q8_0 ||
           type == WHET_GGML_Q4_0 || type == WHET_GGML_Q4_K || type == WHET_GGML_Q6_K;
}

int whet_ggml_can_quantize(uint32_t type)
{
    return type == WHET_GGML_F32 || type == WHET_GGML_F16 || type == WHET_GGML_BF16 || type == WHET_GGML_Q8_0 ||
           type == WHET_GGML_Q4_0;
}

static const char *const GGUF_TYPE_NAMES[WHET_GGUF_TYPE_COUNT] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
    "bool",  "string", "array", "uint64", "int64", "float64",
};

const char *whet_gguf_type_name(whet_gguf_type type)
{
    return (unsigned)type < WHET_GGUF_TYPE_COUNT ? GGUF_TYPE_NAMES[type] : "?";
}

/* Bytes one element of a fixed-size type takes in the file (and in memory). */
static size_t scalar_size(whet_gguf_type type)
{
    switch (type) {
    case WHET_GGUF_UINT8: case WHET_GGUF_INT8: case WHET_GGUF_BOOL: return 1;
    case WHET_GGUF_UINT16: case WHET_GGUF_INT16: return 2;
    case WHET_GGUF_UINT32: case WHET_GGUF_INT32: case WHET_GGUF_FLOAT32: return 4;
    case WHET_GGUF_UINT64: case WHET_GGUF_INT64: case WHET_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* ---- little-endian bytes ------------------------------------------------------ */

static uint16_t load_u16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (unsigned)p[1] << 8);
}

static uint32_t load_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t load_u64(const unsigned char *p)
{
    return (uint64_t)load_u32(p) | (uint64_t)load_u32(p + 4) << 32;
}

static void store_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void store_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void store_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f16_to_f32(uint16_t h)
{
    float f;
    whet_kernels_best()->f16_to_f32(&f, &h, 1);
    return f;
}

static uint16_t f32_to_f16(float f)
{
    whet_f16 h;
    whet_kernels_best()->f32_to_f16(&h, &f, 1);
    return h;
}

/* Decodes one scalar of `type` at p into the C object at out. */
static void load_scalar(whet_gguf_type type, const unsigned char *p, void *out)
{
    switch (scalar_size(type)) {
    case 1: *(uint8_t *)out = p[0]; break;
    case 2: { uint16_t v = load_u16(p); memcpy(out, &v, 2); break; }
    case 4: { uint32_t v = load_u32(p); memcpy(out, &v, 4); break; }
    case 8: { uint64_t v = load_u64(p); memcpy(out, &v, 8); break; }
    default: break;
    }
}

static void store_scalar(whet_gguf_type type, const void *in, unsigned char *p)
{
    switch (scalar_size(type)) {
    case 1: p[0] = *(const uint8_t *)in; break;
    case 2: { uint16_t v; memcpy(&v, in, 2); store_u16(p, v); break; }
    case 4: { uint32_t v; memcpy(&v, in, 4); store_u32(p, v); break; }
    case 8: { uint64_t v; memcpy(&v, in, 8); store_u64(p, v); break; }
    default: break;
    }
}

/* ---- dequantization (ggml-quants.c dequantize_row_*) ---------------------------- */

#define QK8_0 32
#define QK4_0 32
#define QK_K 256

static void dequantize_q8_0(const unsigned char *b, float *y, uint64_t blocks)
{
    for (uint64_t i = 0; i < blocks; i++, b += 34, y += QK8_0) {
        const float d = f16_to_f32(load_u16(b));
        for (int j = 0; j < QK8_0; j++)
            y[j] = (float)(int8_t)b[2 + j] * d;
    }
}

static void dequantize_q4_0(const unsigned char *b, float *y, uint64_t blocks)
{
    for (uint64_t i = 0; i < blocks; i++, b += 18, y += QK4_0) {
        const float d = f16_to_f32(load_u16(b));
        const unsigned char *qs = b + 2;
        /* low nibbles are elements 0..15, high nibbles 16..31 (not interleaved) */
        for (int j = 0; j < QK4_0 / 2; j++) {
            y[j] = (float)((qs[j] & 0x0F) - 8) * d;
            y[j + QK4_0 / 2] = (float)((qs[j] >> 4) - 8) * d;
        }
    }
}

/* Q4_K's 12 scale bytes hold eight 6-bit scales and eight 6-bit mins: the
 * first four of each in the low 6 bits of bytes 0..3 (scales) and 4..7 (mins);
 * the last four split between the nibbles of bytes 8..11 (low 4 bits) and the
 * top two bits of bytes 0..7. */
static void q4_k_scale_min(int j, const unsigned char *s, unsigned *sc, unsigned *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

static void dequantize_q4_k(const unsigned char *b, float *y, uint64_t blocks)
{
    for (uint64_t i = 0; i < blocks; i++, b += 144) {
        const float d = f16_to_f32(load_u16(b));
        const float dmin = f16_to_f32(load_u16(b + 2));
        const unsigned char *scales = b + 4, *q = b + 16;
        for (int chunk = 0; chunk < 4; chunk++, q += 32) {
            unsigned sc, m;
            q4_k_scale_min(2 * chunk, scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            q4_k_scale_min(2 * chunk + 1, scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)(q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

/* Q6_K (ggml-common.h block_q6_K): u8 ql[128] low 4 bits, u8 qh[64] high 2
 * bits, i8 scales[16] (one per 16 elements), f16 d last. Q4_K_M files store
 * some tensors (output.weight, half the ffn_down) in it. Per 128 elements,
 * byte l of ql/qh feeds elements l, l+32, l+64, l+96. */
static void dequantize_q6_k(const unsigned char *b, float *y, uint64_t blocks)
{
    for (uint64_t i = 0; i < blocks; i++, b += 210) {
        const float d = f16_to_f32(load_u16(b + 208));
        const unsigned char *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        for (int half = 0; half < 2; half++, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32;
                int q2 = ((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32;
                int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                y[l] = d * (float)sc[is] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

/* fp16 and bf16 go through the kernel table in chunks, after assembling each
 * value from its two bytes. */
#define CONVERT_CHUNK 1024

static void dequantize_half(uint32_t type, const unsigned char *b, float *y, uint64_t n)
{
    const whet_kernels *k = whet_kernels_best();
    uint16_t half[CONVERT_CHUNK];
    for (uint64_t done = 0; done < n;) {
        size_t len = n - done < CONVERT_CHUNK ? (size_t)(n - done) : CONVERT_CHUNK;
        for (size_t i = 0; i < len; i++)
            half[i] = load_u16(b + 2 * (done + i));
        if (type == WHET_GGML_F16)
            k->f16_to_f32(y + done, half, len);
        else
            k->bf16_to_f32(y + done, half, len);
        done += len;
    }
}

int whet_ggml_dequantize(uint32_t type, const void *src, float *dst, uint64_t n)
{
    uint64_t block_elems, block_bytes;
    if (!whet_ggml_can_dequantize(type) || whet_ggml_type_size(type, &block_elems, &block_bytes) != 0 ||
        n % block_elems != 0)
        return -1;
    const unsigned char *b = src;
    switch (type) {
    case WHET_GGML_F32:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = f32_from_bits(load_u32(b + 4 * i));
        break;
    case WHET_GGML_F16:
    case WHET_GGML_BF16: dequantize_half(type, b, dst, n); break;
    case WHET_GGML_Q8_0: dequantize_q8_0(b, dst, n / QK8_0); break;
    case WHET_GGML_Q4_0: dequantize_q4_0(b, dst, n / QK4_0); break;
    case WHET_GGML_Q4_K: dequantize_q4_k(b, dst, n / QK_K); break;
    case WHET_GGML_Q6_K: dequantize_q6_k(b, dst, n / QK_K); break;
    default: return -1;
    }
    return 0;
}

/* ---- quantization (ggml-quants.c quantize_row_*_ref) ------------------------------- */

static void quantize_q8_0(const float *x, unsigned char *b, uint64_t blocks)
{
    for (uint64_t i = 0; i < blocks; i++, x += QK8_0, b += 34) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f;
        /* ggml multiplies by the reciprocal of the unrounded d rather than
         * dividing; the rare ties round differently, so keep its form */
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        store_u16(b, f32_to_f16(d));
        for (int j = 0; j < QK8_0; j++)
            b[2 + j] = (unsigned char)(int8_t)roundf(x[j] * id);
    }
}

static void quantize_q4_0(const float *x, unsigned char *b, uint64_t blocks)
{
    for (uint64_t i = 0; i < blocks; i++, x += QK4_0, b += 18) {
        /* the value of largest magnitude, sign kept, maps to -8 */
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK4_0; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        store_u16(b, f32_to_f16(d));
        for (int j = 0; j < QK4_0 / 2; j++) {
            int lo = (int8_t)(x[j] * id + 8.5f), hi = (int8_t)(x[j + QK4_0 / 2] * id + 8.5f);
            lo = lo < 15 ? lo : 15;
            hi = hi < 15 ? hi : 15;
            b[2 + j] = (unsigned char)(lo | hi << 4);
        }
    }
}

static void quantize_half(uint32_t type, const float *x, unsigned char *b, uint64_t n)
{
    const whet_kernels *k = whet_kernels_best();
    uint16_t half[CONVERT_CHUNK];
    for (uint64_t done = 0; done < n;) {
        size_t len = n - done < CONVERT_CHUNK ? (size_t)(n - done) : CONVERT_CHUNK;
        if (type == WHET_GGML_F16)
            k->f32_to_f16(half, x + done, len);
        else
            k->f32_to_bf16(half, x + done, len);
        for (size_t i = 0; i < len; i++)
            store_u16(b + 2 * (done + i), half[i]);
        done += len;
    }
}

/* Index of the first value that is NaN or infinite, or n. */
static uint64_t first_non_finite(const float *x, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return i;
    return n;
}

int whet_ggml_quantize(uint32_t type, const float *src, void *dst, uint64_t n)
{
    uint64_t block_elems, block_bytes;
    if (!whet_ggml_can_quantize(type) || whet_ggml_type_size(type, &block_elems, &block_bytes) != 0 ||
        n % block_elems != 0)
        return -1;
    unsigned char *b = dst;
    /* the block quantizers convert scaled values to integers: not finite
     * values have no integer and would be undefined behaviour */
    if ((type == WHET_GGML_Q8_0 || type == WHET_GGML_Q4_0) && first_non_finite(src, n) != n)
        return -1;
    switch (type) {
    case WHET_GGML_F32:
        for (uint64_t i = 0; i < n; i++)
            store_u32(b + 4 * i, f32_bits(src[i]));
        break;
    case WHET_GGML_F16:
    case WHET_GGML_BF16: quantize_half(type, src, b, n); break;
    case WHET_GGML_Q8_0: quantize_q8_0(src, b, n / QK8_0); break;
    case WHET_GGML_Q4_0: quantize_q4_0(src, b, n / QK4_0); break;
    default: return -1;
    }
    return 0;
}

/* ---- values --------------------------------------------------------------------- */

static void value_free(whet_gguf_value *v)
{
    if (v->type == WHET_GGUF_STRING) {
        free(v->as.str.data);
    } else if (v->type == WHET_GGUF_ARRAY) {
        if (v->as.arr.type == WHET_GGUF_ARRAY) {
            whet_gguf_value *items = v->as.arr.data;
            for (uint64_t i = 0; i < v->as.arr.count; i++)
                value_free(&items[i]);
        }
        /* a string array's texts live in the same block as its whet_gguf_str[] */
        free(v->as.arr.data);
    }
    memset(v, 0, sizeof *v);
}

/* One block: whet_gguf_str[count] followed by every text, each NUL-terminated.
 * Lengths and sources come from `src` (texts may hold NULs). */
static whet_gguf_str *string_array_copy(const whet_gguf_str *src, uint64_t count)
{
    uint64_t bytes = 0;
    for (uint64_t i = 0; i < count; i++)
        bytes += src[i].len + 1;
    if (count > SIZE_MAX / sizeof(whet_gguf_str) || bytes > SIZE_MAX - count * sizeof(whet_gguf_str))
        return NULL;
    whet_gguf_str *out = malloc(count * sizeof *out + bytes);
    if (!out)
        return NULL;
    char *text = (char *)(out + count);
    for (uint64_t i = 0; i < count; i++) {
        if (src[i].len)
            memcpy(text, src[i].data, src[i].len);
        text[src[i].len] = 0;
        out[i].data = text;
        out[i].len = src[i].len;
        text += src[i].len + 1;
    }
    return out;
}

/* ---- the reader ------------------------------------------------------------------- */

struct whet_gguf_name_ref {
    const char *data;
    uint64_t len;
    uint64_t pos;   /* byte of the name in the file */
    uint64_t index; /* into kv[] or tensors[] */
};

typedef struct reader {
    const unsigned char *p;
    uint64_t size, pos;
    const char *name;
    whet_err *e;
} reader;

static uint64_t left(const reader *r)
{
    return r->size - r->pos;
}

/* "expected N bytes for WHAT, found M (the file ends)" when fewer are left. */
static int need(reader *r, uint64_t n, const char *what)
{
    if (left(r) >= n)
        return 0;
    return whet_fail(r->e, "%s: byte %" PRIu64 ": expected %" PRIu64 " bytes for %s, found %" PRIu64 " (the file ends)",
                     r->name, r->pos, n, what, left(r));
}

static int read_u32(reader *r, uint32_t *v, const char *what)
{
    if (need(r, 4, what) != 0)
        return -1;
    *v = load_u32(r->p + r->pos);
    r->pos += 4;
    return 0;
}

static int read_u64(reader *r, uint64_t *v, const char *what)
{
    if (need(r, 8, what) != 0)
        return -1;
    *v = load_u64(r->p + r->pos);
    r->pos += 8;
    return 0;
}

static int read_string(reader *r, whet_gguf_str *s, const char *what)
{
    uint64_t at = r->pos, len;
    if (read_u64(r, &len, what) != 0)
        return -1;
    if (len > left(r))
        return whet_fail(r->e,
                         "%s: byte %" PRIu64 ": expected a length for %s of at most the %" PRIu64
                         " bytes left, found %" PRIu64,
                         r->name, at, what, left(r), len);
    s->data = malloc((size_t)len + 1);
    if (!s->data)
        return whet_fail(r->e, "%s: byte %" PRIu64 ": out of memory for %s", r->name, at, what);
    if (len)
        memcpy(s->data, r->p + r->pos, (size_t)len);
    s->data[len] = 0;
    s->len = len;
    r->pos += len;
    return 0;
}

/* A key or name for a message: at most 80 bytes of it. */
#define NAME_FMT "'%.*s%s'"
#define NAME_ARGS(s) (int)((s).len < 80 ? (s).len : 80), (s).data, ((s).len > 80 ? "..." : "")

static int read_value(reader *r, whet_gguf_type type, whet_gguf_value *v, int depth, const whet_gguf_str *key);

static int read_array(reader *r, whet_gguf_value *v, int depth, const whet_gguf_str *key)
{
    uint64_t type_at = r->pos, count_at, count;
    uint32_t elem_type;
    if (read_u32(r, &elem_type, "an array element type") != 0)
        return -1;
    if (elem_type >= WHET_GGUF_TYPE_COUNT)
        return whet_fail(r->e, "%s: byte %" PRIu64 ": key " NAME_FMT ": expected an array element type 0..12, found %" PRIu32,
                         r->name, type_at, NAME_ARGS(*key), elem_type);
    if (elem_type == WHET_GGUF_ARRAY && depth + 1 >= WHET_GGUF_MAX_ARRAY_DEPTH)
        return whet_fail(r->e, "%s: byte %" PRIu64 ": key " NAME_FMT ": expected arrays nested at most %d deep, found deeper",
                         r->name, type_at, NAME_ARGS(*key), WHET_GGUF_MAX_ARRAY_DEPTH);
    count_at = r->pos;
    if (read_u64(r, &count, "an array count") != 0)
        return -1;
    /* the smallest an element can be in the file: bounds the count before any allocation */
    uint64_t min_bytes = elem_type == WHET_GGUF_STRING  ? 8
                         : elem_type == WHET_GGUF_ARRAY ? 12
                                                        : scalar_size((whet_gguf_type)elem_type);
    if (count > left(r) / min_bytes)
        return whet_fail(r->e,
                         "%s: byte %" PRIu64 ": key " NAME_FMT ": expected an array count that fits the %" PRIu64
                         " bytes left (at most %" PRIu64 " %s), found %" PRIu64,
                         r->name, count_at, NAME_ARGS(*key), left(r), left(r) / min_bytes,
                         whet_gguf_type_name((whet_gguf_type)elem_type), count);
    v->type = WHET_GGUF_ARRAY;
    v->as.arr.type = (whet_gguf_type)elem_type;
    v->as.arr.count = 0;
    v->as.arr.data = NULL;
    if (count == 0)
        return 0;

    if (elem_type == WHET_GGUF_STRING) {
        /* first pass: check every length, so that one block holds all texts */
        uint64_t pos = r->pos, total = 0;
        for (uint64_t i = 0; i < count; i++) {
            if (r->size - pos < 8)
                return whet_fail(r->e, "%s: byte %" PRIu64 ": expected 8 bytes for a string length, found %" PRIu64
                                 " (the file ends)", r->name, pos, r->size - pos);
            uint64_t len = load_u64(r->p + pos);
            if (len > r->size - pos - 8)
                return whet_fail(r->e,
                                 "%s: byte %" PRIu64 ": key " NAME_FMT ": expected a length for string %" PRIu64
                                 " of at most the %" PRIu64 " bytes left, found %" PRIu64,
                                 r->name, pos, NAME_ARGS(*key), i, r->size - pos - 8, len);
            pos += 8 + len;
            total += len + 1;
        }
        whet_gguf_str *items = malloc((size_t)(count * sizeof *items + total));
        if (!items)
            return whet_fail(r->e, "%s: byte %" PRIu64 ": out of memory for %" PRIu64 " strings", r->name, count_at, count);
        char *text = (char *)(items + count);
        for (uint64_t i = 0; i < count; i++) {
            uint64_t len = load_u64(r->p + r->pos);
            if (len)
                memcpy(text, r->p + r->pos + 8, (size_t)len);
            text[len] = 0;
            items[i].data = text;
            items[i].len = len;
            text += len + 1;
            r->pos += 8 + len;
        }
        v->as.arr.data = items;
        v->as.arr.count = count;
        return 0;
    }

    if (elem_type == WHET_GGUF_ARRAY) {
        whet_gguf_value *items = calloc((size_t)count, sizeof *items);
        if (!items)
            return whet_fail(r->e, "%s: byte %" PRIu64 ": out of memory for %" PRIu64 " arrays", r->name, count_at, count);
        v->as.arr.data = items;
        for (uint64_t i = 0; i < count; i++) {
            /* count covers each element before it is read, so value_free also frees
             * what a failing element had allocated (the rest are zeroed) */
            v->as.arr.count = i + 1;
            if (read_array(r, &items[i], depth + 1, key) != 0)
                return -1;
        }
        return 0;
    }

    size_t size = scalar_size((whet_gguf_type)elem_type);
    unsigned char *items = malloc((size_t)count * size);
    if (!items)
        return whet_fail(r->e, "%s: byte %" PRIu64 ": out of memory for %" PRIu64 " elements", r->name, count_at, count);
    for (uint64_t i = 0; i < count; i++, r->pos += size) {
        if (elem_type == WHET_GGUF_BOOL && r->p[r->pos] > 1) {
            free(items);
            return whet_fail(r->e, "%s: byte %" PRIu64 ": key " NAME_FMT ": expected a bool 0 or 1, found %u", r->name,
                             r->pos, NAME_ARGS(*key), r->p[r->pos]);
        }
        load_scalar((whet_gguf_type)elem_type, r->p + r->pos, items + i * size);
    }
    v->as.arr.data = items;
    v->as.arr.count = count;
    return 0;
}

static int read_value(reader *r, whet_gguf_type type, whet_gguf_value *v, int depth, const whet_gguf_str *key)
{
    memset(v, 0, sizeof *v);
    if (type == WHET_GGUF_ARRAY)
        return read_array(r, v, depth, key);
    if (type == WHET_GGUF_STRING) {
        if (read_string(r, &v->as.str, "a string value") != 0)
            return -1;
        v->type = WHET_GGUF_STRING;
        return 0;
    }
    size_t size = scalar_size(type);
    if (need(r, size, GGUF_TYPE_NAMES[type]) != 0)
        return -1;
    if (type == WHET_GGUF_BOOL && r->p[r->pos] > 1)
        return whet_fail(r->e, "%s: byte %" PRIu64 ": key " NAME_FMT ": expected a bool 0 or 1, found %u", r->name, r->pos,
                         NAME_ARGS(*key), r->p[r->pos]);
    load_scalar(type, r->p + r->pos, &v->as);
    v->type = type;
    r->pos += size;
    return 0;
}

static int compare_name_refs(const void *a, const void *b)
{
    const struct whet_gguf_name_ref *x = a, *y = b;
    uint64_t n = x->len < y->len ? x->len : y->len;
    int c = n ? memcmp(x->data, y->data, (size_t)n) : 0;
    if (c)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Sorts the names; returns the index (into refs) of the later of the
 * earliest-in-file duplicate pair, or count when every name is unique. */
static uint64_t sort_and_find_duplicate(struct whet_gguf_name_ref *refs, uint64_t count)
{
    if (count > 1)
        qsort(refs, (size_t)count, sizeof *refs, compare_name_refs);
    uint64_t found = count;
    for (uint64_t i = 1; i < count; i++) {
        if (refs[i].len == refs[i - 1].len && (refs[i].len == 0 || !memcmp(refs[i].data, refs[i - 1].data, refs[i].len)))
            if (found == count || refs[i].pos < refs[found].pos)
                found = i;
    }
    return found;
}

static const struct whet_gguf_name_ref *find_ref(const struct whet_gguf_name_ref *refs, uint64_t count, const char *name)
{
    size_t len = strlen(name);
    uint64_t lo = 0, hi = count;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        uint64_t n = refs[mid].len < len ? refs[mid].len : len;
        int c = n ? memcmp(refs[mid].data, name, (size_t)n) : 0;
        if (!c && refs[mid].len != len)
            c = refs[mid].len < len ? -1 : 1;
        if (c == 0)
            return &refs[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

void whet_gguf_close(whet_gguf *g)
{
    if (!g)
        return;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        free(g->kv[i].key.data);
        value_free(&g->kv[i].value);
    }
    free(g->kv);
    for (uint64_t i = 0; i < g->n_tensors; i++)
        free(g->tensors[i].name.data);
    free(g->tensors);
    free(g->kv_index);
    free(g->tensor_index);
    whet_unmap(&g->map);
    free(g->name);
    free(g);
}

static int parse_header(whet_gguf *g, reader *r, uint64_t *n_tensors, uint64_t *n_kv)
{
    if (need(r, 4, "the magic \"GGUF\"") != 0)
        return -1;
    if (memcmp(r->p, WHET_GGUF_MAGIC, 4) != 0)
        return whet_fail(r->e, "%s: byte 0: expected the magic \"GGUF\", found bytes %02x %02x %02x %02x (not a GGUF file)",
                         r->name, r->p[0], r->p[1], r->p[2], r->p[3]);
    r->pos = 4;
    if (read_u32(r, &g->version, "the version") != 0)
        return -1;
    if (g->version == 0 || g->version == 1)
        return whet_fail(r->e,
                         "%s: byte 4: expected GGUF version 2 or 3, found %" PRIu32
                         " (version 1 files are no longer supported; convert the model again with a current llama.cpp)",
                         r->name, g->version);
    if ((g->version & 0xFFFF) == 0)
        return whet_fail(r->e,
                         "%s: byte 4: expected a little-endian file, found version bytes %02x %02x %02x %02x "
                         "(a big-endian GGUF, which whet does not read)",
                         r->name, r->p[4], r->p[5], r->p[6], r->p[7]);
    if (g->version > 3)
        return whet_fail(r->e, "%s: byte 4: expected GGUF version 2 or 3, found %" PRIu32 " (a newer format than whet knows)",
                         r->name, g->version);
    if (read_u64(r, n_tensors, "the tensor count") != 0 || read_u64(r, n_kv, "the metadata count") != 0)
        return -1;
    /* a metadata entry takes at least 13 bytes (key length, type, 1-byte value) */
    if (*n_kv > left(r) / 13)
        return whet_fail(r->e, "%s: byte 16: expected a metadata count that fits the %" PRIu64 " bytes left (at most %" PRIu64
                         "), found %" PRIu64, r->name, left(r), left(r) / 13, *n_kv);
    return 0;
}

static int parse_metadata(whet_gguf *g, reader *r, uint64_t n_kv)
{
    g->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
    g->kv_index = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv_index);
    if (!g->kv || !g->kv_index)
        return whet_fail(r->e, "%s: out of memory for %" PRIu64 " metadata entries", r->name, n_kv);
    for (uint64_t i = 0; i < n_kv; i++) {
        whet_gguf_kv *kv = &g->kv[i];
        kv->key_offset = r->pos;
        if (read_string(r, &kv->key, "a metadata key") != 0)
            return -1;
        g->n_kv = i + 1; /* from here on close() frees this entry */
        if (kv->key.len == 0)
            return whet_fail(r->e, "%s: byte %" PRIu64 ": expected a non-empty metadata key, found an empty one", r->name,
                             kv->key_offset);
        kv->type_offset = r->pos;
        uint32_t type;
        if (read_u32(r, &type, "a metadata value type") != 0)
            return -1;
        if (type >= WHET_GGUF_TYPE_COUNT)
            return whet_fail(r->e, "%s: byte %" PRIu64 ": key " NAME_FMT ": expected a value type 0..12, found %" PRIu32,
                             r->name, kv->type_offset, NAME_ARGS(kv->key), type);
        if (read_value(r, (whet_gguf_type)type, &kv->value, 0, &kv->key) != 0) {
            value_free(&kv->value);
            return -1;
        }
        g->kv_index[i] = (struct whet_gguf_name_ref){kv->key.data, kv->key.len, kv->key_offset, i};
    }
    uint64_t dup = sort_and_find_duplicate(g->kv_index, n_kv);
    if (dup != n_kv) {
        const struct whet_gguf_name_ref *later = &g->kv_index[dup];
        const struct whet_gguf_name_ref *first = &g->kv_index[dup - 1];
        while (first > g->kv_index && first[-1].len == later->len && !memcmp(first[-1].data, later->data, later->len))
            first--;
        whet_gguf_str key = {(char *)later->data, later->len};
        return whet_fail(r->e, "%s: byte %" PRIu64 ": expected each metadata key once, found " NAME_FMT
                         " again (first at byte %" PRIu64 ")", r->name, later->pos, NAME_ARGS(key), first->pos);
    }

    g->alignment = WHET_GGUF_DEFAULT_ALIGNMENT;
    const whet_gguf_kv *align = whet_gguf_find(g, "general.alignment");
    if (align) {
        if (align->value.type != WHET_GGUF_UINT32)
            return whet_fail(r->e, "%s: byte %" PRIu64 ": key 'general.alignment': expected uint32, found %s", r->name,
                             align->type_offset, whet_gguf_type_name(align->value.type));
        uint32_t a = align->value.as.u32;
        if (a == 0 || (a & (a - 1)) != 0)
            return whet_fail(r->e, "%s: byte %" PRIu64 ": key 'general.alignment': expected a power of 2, found %" PRIu32,
                             r->name, align->type_offset + 4, a);
        g->alignment = a;
    }
    return 0;
}

/* Positions of fields checked after every tensor info has been read. */
typedef struct tensor_fields {
    uint64_t offset_at;
} tensor_fields;

static int parse_tensor_info(whet_gguf *g, reader *r, whet_gguf_tensor *t, tensor_fields *f)
{
    uint64_t at;
    if (read_u32(r, &t->n_dims, "the tensor's dimension count") != 0)
        return -1;
    if (t->n_dims > WHET_GGUF_MAX_DIMS)
        return whet_fail(r->e, "%s: byte %" PRIu64 ": tensor " NAME_FMT ": expected at most %d dimensions, found %" PRIu32,
                         r->name, r->pos - 4, NAME_ARGS(t->name), WHET_GGUF_MAX_DIMS, t->n_dims);
    uint64_t ne0_at = r->pos;
    t->n_elements = 1;
    for (int j = 0; j < WHET_GGUF_MAX_DIMS; j++)
        t->ne[j] = 1;
    for (uint32_t j = 0; j < t->n_dims; j++) {
        at = r->pos;
        if (read_u64(r, &t->ne[j], "a tensor dimension") != 0)
            return -1;
        /* ggml holds dimensions and element counts in int64_t */
        if (t->ne[j] > (uint64_t)INT64_MAX || (t->ne[j] && t->n_elements > (uint64_t)INT64_MAX / t->ne[j]))
            return whet_fail(r->e, "%s: byte %" PRIu64 ": tensor " NAME_FMT ": expected at most 2^63-1 elements, found "
                             "dimension %" PRIu32 " = %" PRIu64 " makes more", r->name, at, NAME_ARGS(t->name), j, t->ne[j]);
        t->n_elements *= t->ne[j];
    }
    t->type_offset = r->pos;
    if (read_u32(r, &t->type, "the tensor's type") != 0)
        return -1;
    uint64_t block_elems, block_bytes;
    if (whet_ggml_type_size(t->type, &block_elems, &block_bytes) != 0)
        return whet_fail(r->e, "%s: byte %" PRIu64 ": tensor " NAME_FMT ": expected a known ggml type id, found %" PRIu32,
                         r->name, t->type_offset, NAME_ARGS(t->name), t->type);
    if (t->ne[0] % block_elems != 0)
        return whet_fail(r->e, "%s: byte %" PRIu64 ": tensor " NAME_FMT ": expected ne[0] to be a multiple of %" PRIu64
                         " (the %s block), found %" PRIu64, r->name, ne0_at, NAME_ARGS(t->name), block_elems,
                         whet_ggml_type_name(t->type), t->ne[0]);
    uint64_t blocks = t->n_elements / block_elems;
    if (blocks > UINT64_MAX / block_bytes)
        return whet_fail(r->e, "%s: byte %" PRIu64 ": tensor " NAME_FMT ": expected a size below 2^64 bytes, found %" PRIu64
                         " blocks of %" PRIu64, r->name, ne0_at, NAME_ARGS(t->name), blocks, block_bytes);
    t->n_bytes = blocks * block_bytes;
    f->offset_at = r->pos;
    if (read_u64(r, &t->offset, "the tensor's data offset") != 0)
        return -1;
    if (t->offset % g->alignment != 0)
        return whet_fail(r->e, "%s: byte %" PRIu64 ": tensor " NAME_FMT ": expected a data offset that is a multiple of "
                         "the alignment %" PRIu32 ", found %" PRIu64, r->name, f->offset_at, NAME_ARGS(t->name),
                         g->alignment, t->offset);
    return 0;
}

static int compare_by_offset(const void *a, const void *b)
{
    const whet_gguf_tensor *x = *(whet_gguf_tensor *const *)a, *y = *(whet_gguf_tensor *const *)b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return x->info_offset < y->info_offset ? -1 : x->info_offset > y->info_offset;
}

static int parse_tensors(whet_gguf *g, reader *r, uint64_t n_tensors)
{
    /* a tensor info takes at least 24 bytes (name length, n_dims, type, offset) */
    if (n_tensors > left(r) / 24)
        return whet_fail(r->e, "%s: byte 8: expected a tensor count that fits the %" PRIu64 " bytes left after the metadata "
                         "(at most %" PRIu64 "), found %" PRIu64, r->name, left(r), left(r) / 24, n_tensors);
    size_t n = n_tensors ? (size_t)n_tensors : 1;
    g->tensors = calloc(n, sizeof *g->tensors);
    g->tensor_index = calloc(n, sizeof *g->tensor_index);
    tensor_fields *fields = calloc(n, sizeof *fields);
    whet_gguf_tensor **by_offset = calloc(n, sizeof *by_offset);
    int rc = -1;
    if (!g->tensors || !g->tensor_index || !fields || !by_offset) {
        whet_fail(r->e, "%s: out of memory for %" PRIu64 " tensors", r->name, n_tensors);
        goto out;
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        whet_gguf_tensor *t = &g->tensors[i];
        t->info_offset = r->pos;
        if (read_string(r, &t->name, "a tensor name") != 0)
            goto out;
        g->n_tensors = i + 1;
        if (t->name.len > WHET_GGUF_MAX_NAME) {
            whet_fail(r->e, "%s: byte %" PRIu64 ": expected a tensor name of at most %d bytes, found %" PRIu64 " bytes " NAME_FMT,
                      r->name, t->info_offset, WHET_GGUF_MAX_NAME, t->name.len, NAME_ARGS(t->name));
            goto out;
        }
        if (parse_tensor_info(g, r, t, &fields[i]) != 0)
            goto out;
        g->tensor_index[i] = (struct whet_gguf_name_ref){t->name.data, t->name.len, t->info_offset, i};
    }
    uint64_t dup = sort_and_find_duplicate(g->tensor_index, n_tensors);
    if (dup != n_tensors) {
        const struct whet_gguf_name_ref *later = &g->tensor_index[dup];
        whet_gguf_str name = {(char *)later->data, later->len};
        whet_fail(r->e, "%s: byte %" PRIu64 ": expected each tensor name once, found " NAME_FMT " again", r->name, later->pos,
                  NAME_ARGS(name));
        goto out;
    }

    /* the data section starts at the next multiple of the alignment (only when
     * there are tensors, as ggml writes it) */
    g->data_offset = r->pos;
    if (n_tensors > 0)
        g->data_offset += (g->alignment - r->pos % g->alignment) % g->alignment;
    for (uint64_t i = 0; i < n_tensors; i++) {
        whet_gguf_tensor *t = &g->tensors[i];
        uint64_t room = g->data_offset <= r->size ? r->size - g->data_offset : 0;
        if (t->offset > room || t->n_bytes > room - t->offset) {
            whet_fail(r->e, "%s: byte %" PRIu64 ": tensor " NAME_FMT ": expected its %" PRIu64 " bytes at data offset %" PRIu64
                      " to end within the file (%" PRIu64 " bytes of data from byte %" PRIu64 "), found they run past it",
                      r->name, fields[i].offset_at, NAME_ARGS(t->name), t->n_bytes, t->offset, room, g->data_offset);
            goto out;
        }
        /* an empty tensor may sit where the (unpadded) file already ended: point
         * it at the end rather than past it */
        t->data = t->n_bytes ? r->p + g->data_offset + t->offset : r->p + r->size;
    }

    /* no two tensors may share a byte: sort by offset and compare neighbours
     * (empty tensors hold no bytes, so they are left out) */
    uint64_t n_nonempty = 0;
    for (uint64_t i = 0; i < n_tensors; i++)
        if (g->tensors[i].n_bytes)
            by_offset[n_nonempty++] = &g->tensors[i];
    if (n_nonempty > 1)
        qsort(by_offset, (size_t)n_nonempty, sizeof *by_offset, compare_by_offset);
    const whet_gguf_tensor *bad = NULL, *other = NULL;
    for (uint64_t i = 1; i < n_nonempty; i++) {
        const whet_gguf_tensor *a = by_offset[i - 1], *b = by_offset[i];
        if (a->offset + a->n_bytes > b->offset) {
            /* report at whichever of the two comes later in the file; of all such pairs, the earliest */
            const whet_gguf_tensor *later = a->info_offset > b->info_offset ? a : b;
            if (!bad || later->info_offset < bad->info_offset) {
                bad = later;
                other = later == a ? b : a;
            }
        }
    }
    if (bad) {
        uint64_t at = fields[bad - g->tensors].offset_at;
        whet_fail(r->e, "%s: byte %" PRIu64 ": tensor " NAME_FMT ": expected data that no other tensor uses, found bytes %"
                  PRIu64 "..%" PRIu64 " overlapping tensor " NAME_FMT " (%" PRIu64 "..%" PRIu64 ")", r->name, at,
                  NAME_ARGS(bad->name), bad->offset, bad->offset + bad->n_bytes, NAME_ARGS(other->name), other->offset,
                  other->offset + other->n_bytes);
        goto out;
    }
    rc = 0;
out:
    free(fields);
    free(by_offset);
    return rc;
}

whet_gguf *whet_gguf_parse(const void *data, size_t size, const char *name, whet_err *e)
{
    whet_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->name = strdup(name ? name : "<memory>"))) {
        free(g);
        whet_fail(e, "%s: out of memory", name ? name : "<memory>");
        return NULL;
    }
    g->bytes = data;
    g->size = size;
    reader r = {data, size, 0, g->name, e};
    uint64_t n_tensors, n_kv;
    if (parse_header(g, &r, &n_tensors, &n_kv) != 0 || parse_metadata(g, &r, n_kv) != 0 ||
        parse_tensors(g, &r, n_tensors) != 0) {
        whet_gguf_close(g);
        return NULL;
    }
    return g;
}

whet_gguf *whet_gguf_open(const char *path, whet_err *e)
{
    whet_map map;
    if (whet_map_file(&map, path, e) != 0)
        return NULL;
    whet_gguf *g = whet_gguf_parse(map.data, map.size, path, e);
    if (!g) {
        whet_unmap(&map);
        return NULL;
    }
    g->map = map;
    return g;
}

/* ---- lookups ------------------------------------------------------------------------- */

const whet_gguf_kv *whet_gguf_find(const whet_gguf *g, const char *key)
{
    const struct whet_gguf_name_ref *ref = find_ref(g->kv_index, g->n_kv, key);
    return ref ? &g->kv[ref->index] : NULL;
}

const whet_gguf_tensor *whet_gguf_find_tensor(const whet_gguf *g, const char *name)
{
    const struct whet_gguf_name_ref *ref = find_ref(g->tensor_index, g->n_tensors, name);
    return ref ? &g->tensors[ref->index] : NULL;
}

/* "uint32", or "array of float32" */
static void describe_type(char *buf, size_t size, whet_gguf_type type, whet_gguf_type elem)
{
    if (type == WHET_GGUF_ARRAY)
        snprintf(buf, size, "array of %s", whet_gguf_type_name(elem));
    else
        snprintf(buf, size, "%s", whet_gguf_type_name(type));
}

/* The entry for `key` when it has type `want` (and, for arrays, elements of `want_elem`). */
static const whet_gguf_value *typed(const whet_gguf *g, const char *key, whet_gguf_type want, whet_gguf_type want_elem,
                                    whet_err *e)
{
    const whet_gguf_kv *kv = whet_gguf_find(g, key);
    if (!kv) {
        whet_fail(e, "%s: key '%s' not found", g->name, key);
        return NULL;
    }
    const whet_gguf_value *v = &kv->value;
    if (v->type != want || (want == WHET_GGUF_ARRAY && v->as.arr.type != want_elem)) {
        char expected[64], found[64];
        describe_type(expected, sizeof expected, want, want_elem);
        describe_type(found, sizeof found, v->type, v->type == WHET_GGUF_ARRAY ? v->as.arr.type : v->type);
        whet_fail(e, "%s: byte %" PRIu64 ": key '%s': expected %s, found %s", g->name, kv->type_offset, key, expected, found);
        return NULL;
    }
    return v;
}

int whet_gguf_get_string(const whet_gguf *g, const char *key, const whet_gguf_str **out, whet_err *e)
{
    const whet_gguf_value *v = typed(g, key, WHET_GGUF_STRING, 0, e);
    if (!v)
        return -1;
    *out = &v->as.str;
    return 0;
}

#define SCALAR_GETTER(fn, ctype, gtype, field)                                              \
    int fn(const whet_gguf *g, const char *key, ctype *out, whet_err *e)                    \
    {                                                                                       \
        const whet_gguf_value *v = typed(g, key, gtype, 0, e);                              \
        if (!v)                                                                             \
            return -1;                                                                      \
        *out = (ctype)v->as.field;                                                          \
        return 0;                                                                           \
    }
SCALAR_GETTER(whet_gguf_get_u32, uint32_t, WHET_GGUF_UINT32, u32)
SCALAR_GETTER(whet_gguf_get_i32, int32_t, WHET_GGUF_INT32, i32)
SCALAR_GETTER(whet_gguf_get_u64, uint64_t, WHET_GGUF_UINT64, u64)
SCALAR_GETTER(whet_gguf_get_f32, float, WHET_GGUF_FLOAT32, f32)
SCALAR_GETTER(whet_gguf_get_bool, int, WHET_GGUF_BOOL, boolean)
#undef SCALAR_GETTER

#define ARRAY_GETTER(fn, ctype, elem)                                                                   \
    int fn(const whet_gguf *g, const char *key, const ctype **out, uint64_t *count, whet_err *e)       \
    {                                                                                                   \
        const whet_gguf_value *v = typed(g, key, WHET_GGUF_ARRAY, elem, e);                             \
        if (!v)                                                                                         \
            return -1;                                                                                  \
        *out = v->as.arr.data;                                                                          \
        *count = v->as.arr.count;                                                                       \
        return 0;                                                                                       \
    }
ARRAY_GETTER(whet_gguf_get_string_array, whet_gguf_str, WHET_GGUF_STRING)
ARRAY_GETTER(whet_gguf_get_i32_array, int32_t, WHET_GGUF_INT32)
ARRAY_GETTER(whet_gguf_get_u32_array, uint32_t, WHET_GGUF_UINT32)
ARRAY_GETTER(whet_gguf_get_f32_array, float, WHET_GGUF_FLOAT32)
#undef ARRAY_GETTER

int whet_gguf_tensor_to_f32(const whet_gguf *g, const whet_gguf_tensor *t, float *out, whet_err *e)
{
    if (!whet_ggml_can_dequantize(t->type))
        return whet_fail(e, "%s: byte %" PRIu64 ": tensor " NAME_FMT ": expected a type whet can convert to fp32 (F32, F16, "
                         "BF16, Q8_0, Q4_0, Q4_K, Q6_K), found %s (type id %" PRIu32 ")", g->name, t->type_offset,
                         NAME_ARGS(t->name), whet_ggml_type_name(t->type) ? whet_ggml_type_name(t->type) : "unknown",
                         t->type);
    if (whet_ggml_dequantize(t->type, t->data, out, t->n_elements) != 0)
        return whet_fail(e, "%s: tensor " NAME_FMT ": cannot convert %" PRIu64 " elements of %s", g->name,
                         NAME_ARGS(t->name), t->n_elements, whet_ggml_type_name(t->type));
    return 0;
}

/* ---- the writer ------------------------------------------------------------------------- */

typedef struct writer_kv {
    whet_gguf_str key;
    whet_gguf_value value;
} writer_kv;

typedef struct writer_tensor {
    char *name;
    uint32_t type, n_dims;
    uint64_t ne[WHET_GGUF_MAX_DIMS];
    uint64_t n_elements, n_bytes;
    const void *data;
    int from_f32; /* data is fp32 to convert to `type` while writing; else the bytes as stored */
} writer_tensor;

struct whet_gguf_writer {
    writer_kv *kv;
    size_t n_kv, cap_kv;
    writer_tensor *tensors;
    size_t n_tensors, cap_tensors;
};

whet_gguf_writer *whet_gguf_writer_new(void)
{
    return calloc(1, sizeof(whet_gguf_writer));
}

void whet_gguf_writer_free(whet_gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key.data);
        value_free(&w->kv[i].value);
    }
    free(w->kv);
    for (size_t i = 0; i < w->n_tensors; i++)
        free(w->tensors[i].name);
    free(w->tensors);
    free(w);
}

/* Checks a value the caller built (types in range, bools 0/1, depth bounded). */
static int value_check(const whet_gguf_value *v, int depth, const char *key, whet_err *e)
{
    if ((unsigned)v->type >= WHET_GGUF_TYPE_COUNT)
        return whet_fail(e, "gguf writer: key '%s': expected a value type 0..12, found %d", key, (int)v->type);
    if (v->type == WHET_GGUF_BOOL && v->as.boolean > 1)
        return whet_fail(e, "gguf writer: key '%s': expected a bool 0 or 1, found %u", key, v->as.boolean);
    if (v->type == WHET_GGUF_STRING && v->as.str.len && !v->as.str.data)
        return whet_fail(e, "gguf writer: key '%s': expected string bytes, found NULL", key);
    if (v->type != WHET_GGUF_ARRAY)
        return 0;
    whet_gguf_type elem = v->as.arr.type;
    if ((unsigned)elem >= WHET_GGUF_TYPE_COUNT)
        return whet_fail(e, "gguf writer: key '%s': expected an array element type 0..12, found %d", key, (int)elem);
    if (v->as.arr.count && !v->as.arr.data)
        return whet_fail(e, "gguf writer: key '%s': expected %" PRIu64 " array elements, found NULL", key, v->as.arr.count);
    if (elem == WHET_GGUF_ARRAY) {
        if (depth + 1 >= WHET_GGUF_MAX_ARRAY_DEPTH)
            return whet_fail(e, "gguf writer: key '%s': expected arrays nested at most %d deep, found deeper", key,
                             WHET_GGUF_MAX_ARRAY_DEPTH);
        const whet_gguf_value *items = v->as.arr.data;
        for (uint64_t i = 0; i < v->as.arr.count; i++) {
            if (items[i].type != WHET_GGUF_ARRAY)
                return whet_fail(e, "gguf writer: key '%s': expected nested arrays, found element %" PRIu64 " of type %s",
                                 key, i, whet_gguf_type_name(items[i].type));
            if (value_check(&items[i], depth + 1, key, e) != 0)
                return -1;
        }
    } else if (elem == WHET_GGUF_STRING) {
        const whet_gguf_str *items = v->as.arr.data;
        for (uint64_t i = 0; i < v->as.arr.count; i++)
            if (items[i].len && !items[i].data)
                return whet_fail(e, "gguf writer: key '%s': expected bytes for string %" PRIu64 ", found NULL", key, i);
    } else if (elem == WHET_GGUF_BOOL) {
        const uint8_t *items = v->as.arr.data;
        for (uint64_t i = 0; i < v->as.arr.count; i++)
            if (items[i] > 1)
                return whet_fail(e, "gguf writer: key '%s': expected bools 0 or 1, found %u at %" PRIu64, key, items[i], i);
    }
    return 0;
}

/* Deep copy of a checked value; -1 only when out of memory. */
static int value_copy(whet_gguf_value *dst, const whet_gguf_value *src)
{
    memset(dst, 0, sizeof *dst);
    dst->type = src->type;
    if (src->type == WHET_GGUF_STRING) {
        dst->as.str.data = malloc((size_t)src->as.str.len + 1);
        if (!dst->as.str.data)
            return -1;
        if (src->as.str.len)
            memcpy(dst->as.str.data, src->as.str.data, (size_t)src->as.str.len);
        dst->as.str.data[src->as.str.len] = 0;
        dst->as.str.len = src->as.str.len;
        return 0;
    }
    if (src->type != WHET_GGUF_ARRAY) {
        dst->as = src->as;
        return 0;
    }
    uint64_t count = src->as.arr.count;
    dst->as.arr.type = src->as.arr.type;
    if (count == 0)
        return 0;
    if (src->as.arr.type == WHET_GGUF_STRING) {
        if (!(dst->as.arr.data = string_array_copy(src->as.arr.data, count)))
            return -1;
    } else if (src->as.arr.type == WHET_GGUF_ARRAY) {
        const whet_gguf_value *items = src->as.arr.data;
        whet_gguf_value *copies = count <= SIZE_MAX / sizeof *copies ? calloc((size_t)count, sizeof *copies) : NULL;
        if (!copies)
            return -1;
        dst->as.arr.data = copies;
        for (uint64_t i = 0; i < count; i++) {
            dst->as.arr.count = i + 1; /* so value_free reaches a half-made copy */
            if (value_copy(&copies[i], &items[i]) != 0)
                return -1;
        }
    } else {
        size_t size = scalar_size(src->as.arr.type);
        if (count > SIZE_MAX / size || !(dst->as.arr.data = malloc((size_t)count * size)))
            return -1;
        memcpy(dst->as.arr.data, src->as.arr.data, (size_t)count * size);
    }
    dst->as.arr.count = count;
    return 0;
}

int whet_gguf_set_value(whet_gguf_writer *w, const char *key, const whet_gguf_value *v, whet_err *e)
{
    if (!key || !*key)
        return whet_fail(e, "gguf writer: expected a non-empty metadata key, found %s", key ? "\"\"" : "NULL");
    if (value_check(v, 0, key, e) != 0)
        return -1;
    /* llama.cpp refuses the file unless the alignment is a uint32 power of 2 */
    if (!strcmp(key, "general.alignment") &&
        (v->type != WHET_GGUF_UINT32 || v->as.u32 == 0 || (v->as.u32 & (v->as.u32 - 1)) != 0))
        return whet_fail(e, "gguf writer: key 'general.alignment': expected a uint32 power of 2, found %s%s",
                         whet_gguf_type_name(v->type), v->type == WHET_GGUF_UINT32 ? " that is not a power of 2" : "");
    whet_gguf_value copy;
    if (value_copy(&copy, v) != 0) {
        value_free(&copy);
        return whet_fail(e, "gguf writer: key '%s': out of memory", key);
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (!strcmp(w->kv[i].key.data, key)) {
            value_free(&w->kv[i].value);
            w->kv[i].value = copy;
            return 0;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        writer_kv *bigger = realloc(w->kv, cap * sizeof *bigger);
        if (!bigger) {
            value_free(&copy);
            return whet_fail(e, "gguf writer: key '%s': out of memory", key);
        }
        w->kv = bigger;
        w->cap_kv = cap;
    }
    writer_kv *kv = &w->kv[w->n_kv];
    if (!(kv->key.data = strdup(key))) {
        value_free(&copy);
        return whet_fail(e, "gguf writer: key '%s': out of memory", key);
    }
    kv->key.len = strlen(key);
    kv->value = copy;
    w->n_kv++;
    return 0;
}

#define SCALAR_SETTER(fn, ctype, gtype, field)                                \
    int fn(whet_gguf_writer *w, const char *key, ctype v, whet_err *e)        \
    {                                                                         \
        whet_gguf_value value = {.type = gtype};                              \
        value.as.field = v;                                                   \
        return whet_gguf_set_value(w, key, &value, e);                        \
    }
SCALAR_SETTER(whet_gguf_set_u8, uint8_t, WHET_GGUF_UINT8, u8)
SCALAR_SETTER(whet_gguf_set_i8, int8_t, WHET_GGUF_INT8, i8)
SCALAR_SETTER(whet_gguf_set_u16, uint16_t, WHET_GGUF_UINT16, u16)
SCALAR_SETTER(whet_gguf_set_i16, int16_t, WHET_GGUF_INT16, i16)
SCALAR_SETTER(whet_gguf_set_u32, uint32_t, WHET_GGUF_UINT32, u32)
SCALAR_SETTER(whet_gguf_set_i32, int32_t, WHET_GGUF_INT32, i32)
SCALAR_SETTER(whet_gguf_set_f32, float, WHET_GGUF_FLOAT32, f32)
SCALAR_SETTER(whet_gguf_set_u64, uint64_t, WHET_GGUF_UINT64, u64)
SCALAR_SETTER(whet_gguf_set_i64, int64_t, WHET_GGUF_INT64, i64)
SCALAR_SETTER(whet_gguf_set_f64, double, WHET_GGUF_FLOAT64, f64)
#undef SCALAR_SETTER

int whet_gguf_set_bool(whet_gguf_writer *w, const char *key, int v, whet_err *e)
{
    whet_gguf_value value = {.type = WHET_GGUF_BOOL};
    value.as.boolean = v ? 1 : 0;
    return whet_gguf_set_value(w, key, &value, e);
}

int whet_gguf_set_string(whet_gguf_writer *w, const char *key, const char *v, whet_err *e)
{
    if (!v)
        return whet_fail(e, "gguf writer: key '%s': expected a string, found NULL", key ? key : "");
    whet_gguf_value value = {.type = WHET_GGUF_STRING};
    value.as.str.data = (char *)v;
    value.as.str.len = strlen(v);
    return whet_gguf_set_value(w, key, &value, e);
}

int whet_gguf_set_array(whet_gguf_writer *w, const char *key, whet_gguf_type elem_type, const void *elems,
                        uint64_t count, whet_err *e)
{
    if (elem_type == WHET_GGUF_ARRAY)
        return whet_fail(e, "gguf writer: key '%s': nested arrays go through whet_gguf_set_value", key ? key : "");
    whet_gguf_value value = {.type = WHET_GGUF_ARRAY};
    value.as.arr.type = elem_type;
    value.as.arr.count = count;
    value.as.arr.data = (void *)elems;
    if (elem_type != WHET_GGUF_STRING || count == 0)
        return whet_gguf_set_value(w, key, &value, e);
    /* C strings to whet_gguf_str, for the value's layout */
    const char *const *texts = elems;
    if (!texts)
        return whet_fail(e, "gguf writer: key '%s': expected %" PRIu64 " strings, found NULL", key ? key : "", count);
    whet_gguf_str *strs = count <= SIZE_MAX / sizeof *strs ? malloc((size_t)count * sizeof *strs) : NULL;
    if (!strs)
        return whet_fail(e, "gguf writer: key '%s': out of memory", key ? key : "");
    for (uint64_t i = 0; i < count; i++) {
        if (!texts[i]) {
            free(strs);
            return whet_fail(e, "gguf writer: key '%s': expected string %" PRIu64 ", found NULL", key ? key : "", i);
        }
        strs[i].data = (char *)texts[i];
        strs[i].len = strlen(texts[i]);
    }
    value.as.arr.data = strs;
    int rc = whet_gguf_set_value(w, key, &value, e);
    free(strs);
    return rc;
}

static int add_tensor(whet_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims, const uint64_t *ne,
                      const void *data, int from_f32, whet_err *e)
{
    if (!name)
        return whet_fail(e, "gguf writer: expected a tensor name, found NULL");
    size_t name_len = strlen(name);
    /* ggml keeps names in char[64] with the NUL, so 63 bytes is its limit */
    if (name_len == 0 || name_len >= WHET_GGUF_MAX_NAME)
        return whet_fail(e, "gguf writer: tensor '%s': expected a name of 1..%d bytes, found %zu", name,
                         WHET_GGUF_MAX_NAME - 1, name_len);
    uint64_t block_elems, block_bytes;
    if (whet_ggml_type_size(type, &block_elems, &block_bytes) != 0)
        return whet_fail(e, "gguf writer: tensor '%s': expected a known ggml type id, found %" PRIu32, name, type);
    if (from_f32 && !whet_ggml_can_quantize(type))
        return whet_fail(e, "gguf writer: tensor '%s': expected a type whet can convert fp32 to (F32, F16, BF16, Q8_0, "
                         "Q4_0), found %s", name, whet_ggml_type_name(type));
    if (n_dims < 1 || n_dims > WHET_GGUF_MAX_DIMS)
        return whet_fail(e, "gguf writer: tensor '%s': expected 1..%d dimensions, found %" PRIu32, name,
                         WHET_GGUF_MAX_DIMS, n_dims);
    writer_tensor t = {.type = type, .n_dims = n_dims, .data = data, .from_f32 = from_f32, .n_elements = 1};
    for (uint32_t j = 0; j < WHET_GGUF_MAX_DIMS; j++) {
        t.ne[j] = j < n_dims ? ne[j] : 1;
        if (t.ne[j] == 0 || t.ne[j] > (uint64_t)INT64_MAX / t.n_elements)
            return whet_fail(e, "gguf writer: tensor '%s': expected dimensions of at least 1 and at most 2^63-1 elements, "
                             "found ne[%" PRIu32 "] = %" PRIu64, name, j, t.ne[j]);
        t.n_elements *= t.ne[j];
    }
    if (t.ne[0] % block_elems != 0)
        return whet_fail(e, "gguf writer: tensor '%s': expected ne[0] to be a multiple of %" PRIu64 " (the %s block), found %"
                         PRIu64, name, block_elems, whet_ggml_type_name(type), t.ne[0]);
    if (t.n_elements / block_elems > (UINT64_MAX / 2) / block_bytes)
        return whet_fail(e, "gguf writer: tensor '%s': too large", name);
    t.n_bytes = t.n_elements / block_elems * block_bytes;
    if (!data)
        return whet_fail(e, "gguf writer: tensor '%s': expected data, found NULL", name);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (!strcmp(w->tensors[i].name, name))
            return whet_fail(e, "gguf writer: tensor '%s': expected each tensor name once, found it again", name);
    if (w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? 2 * w->cap_tensors : 16;
        writer_tensor *bigger = realloc(w->tensors, cap * sizeof *bigger);
        if (!bigger)
            return whet_fail(e, "gguf writer: tensor '%s': out of memory", name);
        w->tensors = bigger;
        w->cap_tensors = cap;
    }
    if (!(t.name = strdup(name)))
        return whet_fail(e, "gguf writer: tensor '%s': out of memory", name);
    w->tensors[w->n_tensors++] = t;
    return 0;
}

int whet_gguf_add_tensor_f32(whet_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                             const uint64_t *ne, const float *data, whet_err *e)
{
    return add_tensor(w, name, type, n_dims, ne, data, 1, e);
}

int whet_gguf_add_tensor_raw(whet_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                             const uint64_t *ne, const void *data, whet_err *e)
{
    return add_tensor(w, name, type, n_dims, ne, data, 0, e);
}

/* Serialization to a stdio stream; the first failure sticks. */
typedef struct sink {
    FILE *f;
    const char *path;
    whet_err *e;
    int failed;
    uint64_t written;
} sink;

static void put(sink *s, const void *p, size_t n)
{
    if (!s->failed && n && fwrite(p, 1, n, s->f) != n) {
        s->failed = 1;
        whet_fail(s->e, "%s: write failed", s->path);
    }
    s->written += n;
}

static void put_u32(sink *s, uint32_t v)
{
    unsigned char b[4];
    store_u32(b, v);
    put(s, b, 4);
}

static void put_u64(sink *s, uint64_t v)
{
    unsigned char b[8];
    store_u64(b, v);
    put(s, b, 8);
}

static void put_str(sink *s, const char *data, uint64_t len)
{
    put_u64(s, len);
    put(s, data, (size_t)len);
}

static void put_zeros(sink *s, uint64_t n)
{
    static const unsigned char zeros[64];
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        put(s, zeros, k);
        n -= k;
    }
}

static void put_array_body(sink *s, const whet_gguf_value *v);

static void put_value(sink *s, const whet_gguf_value *v)
{
    if (v->type == WHET_GGUF_STRING) {
        put_str(s, v->as.str.data, v->as.str.len);
    } else if (v->type == WHET_GGUF_ARRAY) {
        put_array_body(s, v);
    } else {
        unsigned char b[8];
        store_scalar(v->type, &v->as, b);
        put(s, b, scalar_size(v->type));
    }
}

static void put_array_body(sink *s, const whet_gguf_value *v)
{
    whet_gguf_type elem = v->as.arr.type;
    put_u32(s, (uint32_t)elem);
    put_u64(s, v->as.arr.count);
    if (elem == WHET_GGUF_STRING) {
        const whet_gguf_str *items = v->as.arr.data;
        for (uint64_t i = 0; i < v->as.arr.count; i++)
            put_str(s, items[i].data, items[i].len);
    } else if (elem == WHET_GGUF_ARRAY) {
        const whet_gguf_value *items = v->as.arr.data;
        for (uint64_t i = 0; i < v->as.arr.count; i++)
            put_array_body(s, &items[i]);
    } else {
        size_t size = scalar_size(elem);
        const unsigned char *items = v->as.arr.data;
        unsigned char b[8];
        for (uint64_t i = 0; i < v->as.arr.count; i++) {
            store_scalar(elem, items + i * size, b);
            put(s, b, size);
        }
    }
}

static uint64_t pad_to(uint64_t n, uint32_t alignment)
{
    return (alignment - n % alignment) % alignment;
}

static void put_tensor_data(sink *s, const writer_tensor *t)
{
    if (!t->from_f32) {
        put(s, t->data, (size_t)t->n_bytes);
        return;
    }
    uint64_t block_elems = 1, block_bytes = 1;
    whet_ggml_type_size(t->type, &block_elems, &block_bytes);
    /* convert in chunks of whole blocks, so nothing near the tensor's size is allocated */
    enum { CHUNK_BLOCKS_BYTES = 1 << 16 };
    uint64_t chunk_blocks = CHUNK_BLOCKS_BYTES / block_bytes;
    unsigned char buf[CHUNK_BLOCKS_BYTES];
    const float *x = t->data;
    for (uint64_t done = 0; done < t->n_elements && !s->failed;) {
        uint64_t n = t->n_elements - done;
        if (n > chunk_blocks * block_elems)
            n = chunk_blocks * block_elems;
        if (whet_ggml_quantize(t->type, x + done, buf, n) != 0) {
            uint64_t bad = done + first_non_finite(x + done, n);
            s->failed = 1;
            whet_fail(s->e, "%s: tensor '%s': element %" PRIu64 " is %g, which %s cannot store", s->path, t->name, bad,
                      (double)x[bad], whet_ggml_type_name(t->type));
            return;
        }
        put(s, buf, (size_t)(n / block_elems * block_bytes));
        done += n;
    }
}

static int write_all(whet_gguf_writer *w, sink *s)
{
    uint32_t alignment = WHET_GGUF_DEFAULT_ALIGNMENT;
    int has_quantization_version = 0, has_quantized_tensor = 0;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (!strcmp(w->kv[i].key.data, "general.alignment"))
            alignment = w->kv[i].value.as.u32;
        if (!strcmp(w->kv[i].key.data, "general.quantization_version"))
            has_quantization_version = 1;
    }
    for (size_t i = 0; i < w->n_tensors; i++)
        if (GGML_TYPES[w->tensors[i].type].block_elems > 1)
            has_quantized_tensor = 1;
    /* llama.cpp wants general.quantization_version (uint32 2, the block format
     * ggml has used since 2023) whenever a tensor is quantized */
    int add_quantization_version = has_quantized_tensor && !has_quantization_version;

    put(s, WHET_GGUF_MAGIC, 4);
    put_u32(s, WHET_GGUF_VERSION);
    put_u64(s, w->n_tensors);
    put_u64(s, w->n_kv + (uint64_t)add_quantization_version);
    for (size_t i = 0; i < w->n_kv; i++) {
        put_str(s, w->kv[i].key.data, w->kv[i].key.len);
        put_u32(s, (uint32_t)w->kv[i].value.type);
        put_value(s, &w->kv[i].value);
    }
    if (add_quantization_version) {
        static const char key[] = "general.quantization_version";
        put_str(s, key, sizeof key - 1);
        put_u32(s, WHET_GGUF_UINT32);
        put_u32(s, 2);
    }
    /* ggml requires each offset to be the padded sum of the sizes before it */
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const writer_tensor *t = &w->tensors[i];
        put_str(s, t->name, strlen(t->name));
        put_u32(s, t->n_dims);
        for (uint32_t j = 0; j < t->n_dims; j++)
            put_u64(s, t->ne[j]);
        put_u32(s, t->type);
        put_u64(s, offset);
        offset += t->n_bytes + pad_to(t->n_bytes, alignment);
    }
    if (w->n_tensors > 0)
        put_zeros(s, pad_to(s->written, alignment));
    for (size_t i = 0; i < w->n_tensors && !s->failed; i++) {
        put_tensor_data(s, &w->tensors[i]);
        put_zeros(s, pad_to(w->tensors[i].n_bytes, alignment));
    }
    return s->failed ? -1 : 0;
}

int whet_gguf_write_file(whet_gguf_writer *w, const char *path, whet_err *e)
{
    whet_atomic_file a;
    if (whet_atomic_open(&a, path, e) != 0)
        return -1;
    sink s = {a.f, path, e, 0, 0};
    if (write_all(w, &s) != 0) {
        whet_atomic_abort(&a);
        return -1;
    }
    return whet_atomic_commit(&a, e);
}

int whet_gguf_write_memory(whet_gguf_writer *w, unsigned char **data, size_t *size, whet_err *e)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return whet_fail(e, "<memory>: cannot open a memory stream");
    sink s = {f, "<memory>", e, 0, 0};
    int rc = write_all(w, &s);
    if (fclose(f) != 0 && rc == 0)
        rc = whet_fail(e, "<memory>: write failed");
    if (rc != 0) {
        free(buf);
        return -1;
    }
    *data = (unsigned char *)buf;
    *size = len;
    return 0;
}
