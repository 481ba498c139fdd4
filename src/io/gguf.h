/* GGUF (llama.cpp's model file): a reader that validates everything before
 * anyone touches a tensor, dequantization of the common tensor types to fp32,
 * and a writer whose files llama.cpp's gguf.cpp accepts.
 *
 * Layout (little-endian throughout; formats.md §2):
 *   "GGUF" u32 version  u64 tensor_count  u64 kv_count
 *   kv_count × (string key, u32 value_type, value)
 *   tensor_count × (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset)
 *   zero padding to ALIGNMENT, then the tensor data; offsets are relative to it.
 * A string is u64 length + bytes, no terminator. Versions 2 and 3 share this
 * layout (v3 only added big-endian files, which whet refuses); version 1 used
 * 32-bit counts and is refused.
 *
 * Every reader error reads "<file>: byte B: expected ..., found ...", with B
 * the offset of the field at fault. */
#ifndef WHET_GGUF_H
#define WHET_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "util/file.h"

#define WHET_GGUF_MAGIC "GGUF"
#define WHET_GGUF_VERSION 3            /* what the writer writes */
#define WHET_GGUF_DEFAULT_ALIGNMENT 32 /* when general.alignment is absent */
#define WHET_GGUF_MAX_DIMS 4
#define WHET_GGUF_MAX_NAME 64 /* tensor name bytes the SPEC allows (ggml: < 64) */
#define WHET_GGUF_MAX_ARRAY_DEPTH 8 /* nested arrays deeper than this are refused */

/* Metadata value types, with their ids in the file. */
typedef enum whet_gguf_type {
    WHET_GGUF_UINT8 = 0,
    WHET_GGUF_INT8 = 1,
    WHET_GGUF_UINT16 = 2,
    WHET_GGUF_INT16 = 3,
    WHET_GGUF_UINT32 = 4,
    WHET_GGUF_INT32 = 5,
    WHET_GGUF_FLOAT32 = 6,
    WHET_GGUF_BOOL = 7,
    WHET_GGUF_STRING = 8,
    WHET_GGUF_ARRAY = 9,
    WHET_GGUF_UINT64 = 10,
    WHET_GGUF_INT64 = 11,
    WHET_GGUF_FLOAT64 = 12,
    WHET_GGUF_TYPE_COUNT
} whet_gguf_type;

/* Tensor types (ggml_type ids) whet converts; whet_ggml_type_size knows the
 * block sizes of every other id too, so such files still open. */
typedef enum whet_ggml_type {
    WHET_GGML_F32 = 0,
    WHET_GGML_F16 = 1,
    WHET_GGML_Q4_0 = 2,
    WHET_GGML_Q8_0 = 8,
    WHET_GGML_Q4_K = 12,
    WHET_GGML_Q6_K = 14,
    WHET_GGML_BF16 = 30,
} whet_ggml_type;

/* A GGUF string: `len` bytes at `data`, which the reader and writer also
 * NUL-terminate (data[len] == 0) so it can be used as a C string when the
 * bytes hold no NUL. */
typedef struct whet_gguf_str {
    char *data;
    uint64_t len;
} whet_gguf_str;

/* A metadata value. An array's elements are a packed C array of the element
 * type: uint8_t … double for numbers, uint8_t (0/1) for BOOL, whet_gguf_str
 * for STRING, whet_gguf_value (each an ARRAY) for nested arrays. */
typedef struct whet_gguf_value {
    whet_gguf_type type;
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        float f32;
        uint8_t boolean; /* 0 or 1 */
        uint64_t u64;
        int64_t i64;
        double f64;
        whet_gguf_str str;
        struct {
            whet_gguf_type type;
            uint64_t count;
            void *data;
        } arr;
    } as;
} whet_gguf_value;

typedef struct whet_gguf_kv {
    whet_gguf_str key;
    whet_gguf_value value;
    uint64_t key_offset;  /* byte of the key's length field */
    uint64_t type_offset; /* byte of the u32 value type (for type-mismatch messages) */
} whet_gguf_kv;

typedef struct whet_gguf_tensor {
    whet_gguf_str name;
    uint32_t n_dims;
    uint64_t ne[WHET_GGUF_MAX_DIMS]; /* ggml order: ne[0] is contiguous; unused dims are 1 */
    uint32_t type;                   /* ggml type id */
    uint64_t offset;                 /* relative to the data section */
    uint64_t n_elements, n_bytes;
    const unsigned char *data; /* n_bytes inside the file's buffer (not aligned for any C type) */
    uint64_t info_offset;      /* byte of the tensor info's name */
    uint64_t type_offset;      /* byte of its ggml type field */
} whet_gguf_tensor;

/* A parsed file. Read-only for users: iterate kv[] and tensors[] freely. */
typedef struct whet_gguf {
    char *name; /* the file name (or the name given to whet_gguf_parse), for messages */
    uint32_t version;
    uint32_t alignment;
    uint64_t n_kv;
    whet_gguf_kv *kv;
    uint64_t n_tensors;
    whet_gguf_tensor *tensors;
    uint64_t data_offset; /* where the data section starts (file size when there are no tensors) */
    const unsigned char *bytes;
    size_t size;
    /* private */
    whet_map map;
    struct whet_gguf_name_ref *kv_index, *tensor_index; /* sorted by name, for binary search */
} whet_gguf;

/* ---- reading -------------------------------------------------------------- */

/* Maps and parses `path`. NULL (with e set) on any error. */
whet_gguf *whet_gguf_open(const char *path, whet_err *e);
/* Parses `size` bytes at `data`, which must outlive the result (tensors point
 * into it); `name` stands for the file in messages. */
whet_gguf *whet_gguf_parse(const void *data, size_t size, const char *name, whet_err *e);
void whet_gguf_close(whet_gguf *g);

/* The key's entry, or NULL when absent (for optional keys). */
const whet_gguf_kv *whet_gguf_find(const whet_gguf *g, const char *key);

/* Typed getters: 0 on success; -1 when the key is absent ("key '…' not found")
 * or has another type ("byte B: key '…': expected uint32, found string").
 * Pointers returned stay valid until whet_gguf_close. */
int whet_gguf_get_string(const whet_gguf *g, const char *key, const whet_gguf_str **out, whet_err *e);
int whet_gguf_get_u32(const whet_gguf *g, const char *key, uint32_t *out, whet_err *e);
int whet_gguf_get_i32(const whet_gguf *g, const char *key, int32_t *out, whet_err *e);
int whet_gguf_get_u64(const whet_gguf *g, const char *key, uint64_t *out, whet_err *e);
int whet_gguf_get_f32(const whet_gguf *g, const char *key, float *out, whet_err *e);
int whet_gguf_get_bool(const whet_gguf *g, const char *key, int *out, whet_err *e);
int whet_gguf_get_string_array(const whet_gguf *g, const char *key, const whet_gguf_str **out, uint64_t *count,
                               whet_err *e);
int whet_gguf_get_i32_array(const whet_gguf *g, const char *key, const int32_t **out, uint64_t *count, whet_err *e);
int whet_gguf_get_u32_array(const whet_gguf *g, const char *key, const uint32_t **out, uint64_t *count, whet_err *e);
int whet_gguf_get_f32_array(const whet_gguf *g, const char *key, const float **out, uint64_t *count, whet_err *e);

/* The tensor named `name`, or NULL. */
const whet_gguf_tensor *whet_gguf_find_tensor(const whet_gguf *g, const char *name);

/* Converts all t->n_elements of a tensor to fp32 into `out`. Types other than
 * F32, F16, BF16, Q8_0, Q4_0, Q4_K and Q6_K are an error naming the tensor and type. */
int whet_gguf_tensor_to_f32(const whet_gguf *g, const whet_gguf_tensor *t, float *out, whet_err *e);

/* ---- tensor types ----------------------------------------------------------- */

/* "Q4_K" ..., or NULL for an id ggml does not define. */
const char *whet_ggml_type_name(uint32_t type);
/* Elements per block and bytes per block; -1 for an unknown id. */
int whet_ggml_type_size(uint32_t type, uint64_t *block_elems, uint64_t *block_bytes);
/* Whether whet_ggml_dequantize / whet_ggml_quantize handle the type. */
int whet_ggml_can_dequantize(uint32_t type);
int whet_ggml_can_quantize(uint32_t type);

/* n elements (a whole number of blocks) of `type`, packed little-endian at
 * `src`, to fp32. -1 when the type is not convertible or n is not whole blocks. */
int whet_ggml_dequantize(uint32_t type, const void *src, float *dst, uint64_t n);
/* fp32 to `type` (F32, F16, BF16, Q8_0, Q4_0), exactly as ggml's reference
 * quantizers round. -1 when the type is not supported, n is not whole blocks,
 * or a quantized type meets a value that is not finite. */
int whet_ggml_quantize(uint32_t type, const float *src, void *dst, uint64_t n);

const char *whet_gguf_type_name(whet_gguf_type type); /* "uint32" ..., "?" for an invalid id */

/* ---- writing ------------------------------------------------------------------ */

/* Collects metadata and tensors, then writes them in one go. Keys and tensors
 * keep the order they were first added in; setting a key again replaces its
 * value in place. The writer copies metadata; tensor data is only referenced
 * and must stay valid until the write. */
typedef struct whet_gguf_writer whet_gguf_writer;

whet_gguf_writer *whet_gguf_writer_new(void);
void whet_gguf_writer_free(whet_gguf_writer *w);

int whet_gguf_set_u8(whet_gguf_writer *w, const char *key, uint8_t v, whet_err *e);
int whet_gguf_set_i8(whet_gguf_writer *w, const char *key, int8_t v, whet_err *e);
int whet_gguf_set_u16(whet_gguf_writer *w, const char *key, uint16_t v, whet_err *e);
int whet_gguf_set_i16(whet_gguf_writer *w, const char *key, int16_t v, whet_err *e);
int whet_gguf_set_u32(whet_gguf_writer *w, const char *key, uint32_t v, whet_err *e);
int whet_gguf_set_i32(whet_gguf_writer *w, const char *key, int32_t v, whet_err *e);
int whet_gguf_set_f32(whet_gguf_writer *w, const char *key, float v, whet_err *e);
int whet_gguf_set_bool(whet_gguf_writer *w, const char *key, int v, whet_err *e);
int whet_gguf_set_u64(whet_gguf_writer *w, const char *key, uint64_t v, whet_err *e);
int whet_gguf_set_i64(whet_gguf_writer *w, const char *key, int64_t v, whet_err *e);
int whet_gguf_set_f64(whet_gguf_writer *w, const char *key, double v, whet_err *e);
int whet_gguf_set_string(whet_gguf_writer *w, const char *key, const char *v, whet_err *e);
/* An array of `count` elements: a packed C array of elem_type for numbers and
 * BOOL (uint8_t 0/1), `const char *const *` for STRING. Nested arrays go
 * through whet_gguf_set_value. */
int whet_gguf_set_array(whet_gguf_writer *w, const char *key, whet_gguf_type elem_type, const void *elems,
                        uint64_t count, whet_err *e);
/* Any value (deep copy), e.g. one read from another file; strings may hold NULs.
 * Note llama.cpp refuses nested arrays, though the SPEC allows them. */
int whet_gguf_set_value(whet_gguf_writer *w, const char *key, const whet_gguf_value *v, whet_err *e);

/* A tensor of shape ne[0..n_dims) (ggml order) from fp32 `data`, stored as
 * `type` (F32, F16, BF16, Q8_0, Q4_0), converted while writing. */
int whet_gguf_add_tensor_f32(whet_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                             const uint64_t *ne, const float *data, whet_err *e);
/* A tensor whose bytes are already in `type`'s file layout (any known type),
 * e.g. copied from another GGUF. */
int whet_gguf_add_tensor_raw(whet_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                             const uint64_t *ne, const void *data, whet_err *e);

/* Writes the file atomically (see whet_atomic_open). When a tensor is
 * quantized and general.quantization_version was not set, it is written as
 * uint32 2 after the other keys, as llama.cpp expects. */
int whet_gguf_write_file(whet_gguf_writer *w, const char *path, whet_err *e);
/* Writes into a malloc'd buffer (free() it). */
int whet_gguf_write_memory(whet_gguf_writer *w, unsigned char **data, size_t *size, whet_err *e);

#endif
