/* libFuzzer target for the safetensors reader (from memory) and writer.
 * Beyond "no crash", for every input:
 *  - a refusal is a message naming the input ("fuzz: ...");
 *  - an accepted file's views lie inside the input, sizes agree with
 *    dtype × shape, and every tensor is found by name;
 *  - F32/F16/BF16 tensors load, other dtypes are refused by name;
 *  - writing the tensors and metadata back gives a file that reads back the
 *    same, and writing that again gives the same bytes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

/* Writes st's tensors and metadata to memory. */
static char *rewrite(const whet_safetensors *st, size_t *out_size)
{
    size_t n = whet_st_count(st), m = whet_st_metadata_count(st);
    whet_st_entry *entries = calloc(n ? n : 1, sizeof *entries);
    whet_st_kv *meta = calloc(m ? m : 1, sizeof *meta);
    check(entries && meta);
    for (size_t i = 0; i < n; i++) {
        const whet_st_tensor *t = whet_st_tensor_at(st, i);
        entries[i] = (whet_st_entry){t->name, t->dtype, t->rank, t->shape, t->data};
    }
    for (size_t i = 0; i < m; i++)
        meta[i] = *whet_st_metadata_at(st, i);
    char *buf = NULL;
    FILE *f = open_memstream(&buf, out_size);
    check(f != NULL);
    whet_err e;
    int rc = whet_st_write_stream(f, "rewrite", entries, n, meta, m, &e);
    fclose(f);
    free(entries);
    free(meta);
    if (rc != 0) { /* only a name that is not valid UTF-8 can be refused: the reader took it from JSON */
        free(buf);
        abort();
    }
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    whet_safetensors *st = NULL;
    whet_err e;
    if (whet_st_parse(&st, data, size, "fuzz", &e) != 0) {
        check(st == NULL && strncmp(e.msg, "fuzz: ", 6) == 0);
        return 0;
    }
    size_t n = whet_st_count(st);
    for (size_t i = 0; i < n; i++) {
        const whet_st_tensor *t = whet_st_tensor_at(st, i);
        check(whet_st_find(st, t->name) == t);
        check(i == 0 || strcmp(whet_st_tensor_at(st, i - 1)->name, t->name) < 0);
        const uint8_t *view = t->data;
        check(view >= data && view + t->nbytes <= data + size);
        check(t->data_end - t->data_begin == t->nbytes);
        check(t->numel * whet_st_dtype_bits(t->dtype) == (uint64_t)t->nbytes * 8);
        if (t->numel > (1u << 16))
            continue;
        float *f32 = malloc((size_t)t->numel * sizeof *f32 + 1);
        whet_bf16 *bf16 = malloc((size_t)t->numel * sizeof *bf16 + 1);
        check(f32 && bf16);
        int loadable = t->dtype == WHET_ST_F32 || t->dtype == WHET_ST_F16 || t->dtype == WHET_ST_BF16;
        check((whet_st_load_f32(t, f32, NULL, &e) == 0) == loadable);
        if (!loadable)
            check(strstr(e.msg, t->name) != NULL);
        check((whet_st_load_bf16(t, bf16, NULL, &e) == 0) == loadable);
        free(f32);
        free(bf16);
    }

    size_t first_size;
    char *first = rewrite(st, &first_size);
    whet_safetensors *again = NULL;
    check(whet_st_parse(&again, first, first_size, "again", &e) == 0);
    check(whet_st_count(again) == n);
    for (size_t i = 0; i < n; i++) {
        const whet_st_tensor *a = whet_st_tensor_at(st, i), *b = whet_st_tensor_at(again, i);
        check(strcmp(a->name, b->name) == 0 && a->dtype == b->dtype && a->rank == b->rank);
        check(a->rank == 0 || memcmp(a->shape, b->shape, a->rank * sizeof *a->shape) == 0);
        check(a->nbytes == b->nbytes && (a->nbytes == 0 || memcmp(a->data, b->data, a->nbytes) == 0));
    }
    for (size_t i = 0; i < whet_st_metadata_count(st); i++) {
        const whet_st_kv *kv = whet_st_metadata_at(st, i);
        const char *value = whet_st_metadata(again, kv->key);
        check(value && strcmp(value, kv->value) == 0);
    }
    check(whet_st_metadata(again, "format") != NULL);
    size_t second_size;
    char *second = rewrite(again, &second_size);
    check(second_size == first_size && memcmp(first, second, first_size) == 0);
    free(second);
    whet_st_close(again);
    free(first);
    whet_st_close(st);
    return 0;
}
