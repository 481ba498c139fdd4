/* safetensors: a strict reader (one file, or a sharded model through its
 * model.safetensors.index.json) and an atomic writer.
 *
 * Layout: u64 LE header length N, N bytes of JSON header, then the data
 * section. The reader maps files read-only and hands out zero-copy views; it
 * refuses what the reference implementation (huggingface/safetensors) refuses:
 * N above 100,000,000, a header that is not a JSON object, unknown dtypes,
 * sizes that disagree with dtype × shape, offsets outside the data section,
 * overlaps, holes, bytes after the last tensor, duplicate names. The order of
 * the header's keys means nothing; tensors are listed sorted by name.
 *
 * Tensor data is little-endian in the file and handed out as it is, so the
 * views assume a little-endian host (x86-64 and AArch64); safetensors.c
 * refuses to build on any other. Views are not aligned in general (the format
 * does not require it); whet_st_load_f32/bf16 copy into aligned memory. */
#ifndef WHET_SAFETENSORS_H
#define WHET_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "simd/simd.h"
#include "util/file.h"

/* The reference's largest header, in bytes. */
#define WHET_ST_MAX_HEADER_SIZE 100000000u

/* In the reference's order, which is increasing alignment: the writer packs
 * tensors by descending dtype so that each one lands aligned. */
typedef enum whet_st_dtype {
    WHET_ST_BOOL,
    WHET_ST_F4,
    WHET_ST_F6_E2M3,
    WHET_ST_F6_E3M2,
    WHET_ST_U8,
    WHET_ST_I8,
    WHET_ST_F8_E5M2,
    WHET_ST_F8_E4M3,
    WHET_ST_F8_E8M0,
    WHET_ST_F8_E4M3FNUZ,
    WHET_ST_F8_E5M2FNUZ,
    WHET_ST_I16,
    WHET_ST_U16,
    WHET_ST_F16,
    WHET_ST_BF16,
    WHET_ST_I32,
    WHET_ST_U32,
    WHET_ST_F32,
    WHET_ST_C64,
    WHET_ST_F64,
    WHET_ST_I64,
    WHET_ST_U64,
    WHET_ST_DTYPE_COUNT
} whet_st_dtype;

/* "F32", "BF16" ... */
const char *whet_st_dtype_name(whet_st_dtype dtype);
/* The dtype a header string names, or -1. */
int whet_st_dtype_from_name(const char *name, size_t len);
/* Bits per element: 4 (F4), 6 (F6_*), 8 ... 64. */
unsigned whet_st_dtype_bits(whet_st_dtype dtype);

typedef struct whet_st_tensor {
    const char *name;     /* NUL-terminated (names holding U+0000 are refused) */
    whet_st_dtype dtype;
    size_t rank;          /* 0 for a scalar */
    const int64_t *shape; /* rank dimensions, each >= 0, row-major */
    uint64_t numel;       /* product of shape; 1 for a scalar */
    const void *data;     /* zero-copy view of nbytes bytes; any alignment */
    size_t nbytes;
    uint64_t data_begin, data_end; /* data_offsets, relative to the data section */
    const char *file;     /* the file holding it, for messages */
} whet_st_tensor;

typedef struct whet_st_kv {
    const char *key, *value;
} whet_st_kv;

/* An open model: one file or every shard of a sharded one. */
typedef struct whet_safetensors whet_safetensors;

/* Maps and validates one .safetensors file. */
int whet_st_open(whet_safetensors **out, const char *path, whet_err *e);

/* Validates a safetensors image in memory (name labels messages). The
 * tensors point into data, which must outlive the result. */
int whet_st_parse(whet_safetensors **out, const void *data, size_t size, const char *name, whet_err *e);

/* Opens a sharded model from its model.safetensors.index.json: every shard the
 * weight_map names (plain file names beside the index) is mapped and fully
 * validated; every tensor of the index must be in the shard it names, and
 * every tensor of a shard must be in the index under that shard. */
int whet_st_open_index(whet_safetensors **out, const char *index_path, whet_err *e);

/* A model directory: model.safetensors.index.json if present, otherwise
 * model.safetensors. */
int whet_st_open_dir(whet_safetensors **out, const char *dir, whet_err *e);

void whet_st_close(whet_safetensors *st);

/* The file or index it was opened from. */
const char *whet_st_name(const whet_safetensors *st);

/* Tensors, sorted by name. */
size_t whet_st_count(const whet_safetensors *st);
const whet_st_tensor *whet_st_tensor_at(const whet_safetensors *st, size_t i);
/* The tensor called name, or NULL. */
const whet_st_tensor *whet_st_find(const whet_safetensors *st, const char *name);

/* __metadata__ (for a sharded model, the first shard's in file-name order),
 * in header order. */
size_t whet_st_metadata_count(const whet_safetensors *st);
const whet_st_kv *whet_st_metadata_at(const whet_safetensors *st, size_t i);
/* The metadata value for key, or NULL. */
const char *whet_st_metadata(const whet_safetensors *st, const char *key);

/* Converts a F32, F16 or BF16 tensor into dst (numel floats), with kernels
 * (NULL: whet_kernels_best()). Any other dtype is an error naming the tensor. */
int whet_st_load_f32(const whet_st_tensor *t, float *dst, const whet_kernels *kernels, whet_err *e);
/* The same into bfloat16; F32 and F16 are rounded to nearest even. */
int whet_st_load_bf16(const whet_st_tensor *t, whet_bf16 *dst, const whet_kernels *kernels, whet_err *e);

/* ---- writer ---- */

/* One tensor to write: data holds numel × bits / 8 bytes, little-endian,
 * row-major (NULL is allowed only for 0 bytes). */
typedef struct whet_st_entry {
    const char *name;
    whet_st_dtype dtype;
    size_t rank;
    const int64_t *shape;
    const void *data;
} whet_st_entry;

/* Writes a safetensors file atomically (temporary file, fsync, rename): the
 * header lists "__metadata__" first (always with "format":"pt" unless the
 * caller gives a format), metadata keys sorted, then the tensors in data order;
 * tensors are packed by descending dtype, then by name, as the reference
 * writer does; the header is padded with spaces to a multiple of 8 so that
 * every tensor is aligned for its dtype. The same input gives the same bytes.
 * Refuses duplicate or empty names, "__metadata__" as a name, negative
 * dimensions, sizes that are not whole bytes and invalid UTF-8. */
int whet_st_write(const char *path, const whet_st_entry *tensors, size_t count, const whet_st_kv *metadata,
                  size_t metadata_count, whet_err *e);

/* The same to an open stream (name labels messages); the caller handles the
 * stream's errors and atomicity. */
int whet_st_write_stream(FILE *f, const char *name, const whet_st_entry *tensors, size_t count,
                         const whet_st_kv *metadata, size_t metadata_count, whet_err *e);

/* Writes a model directory the way transformers' save_pretrained lays it out:
 * one model.safetensors when all tensors fit in max_shard_bytes (0: no
 * limit); otherwise model-00001-of-0000N.safetensors ..., filled in name order
 * up to max_shard_bytes each (a larger tensor gets a shard of its own), and
 * model.safetensors.index.json ({"metadata": {"total_size": bytes},
 * "weight_map": {name: shard}}), written last. Each file is atomic. Weights
 * files of an earlier save that the new layout does not use (the other
 * layout's index or single file, shards of another count) are removed, so
 * that a reader never mixes two saves. */
int whet_st_write_model_dir(const char *dir, const whet_st_entry *tensors, size_t count, const whet_st_kv *metadata,
                            size_t metadata_count, uint64_t max_shard_bytes, whet_err *e);

#endif
