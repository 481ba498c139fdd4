/* libFuzzer target for the GGUF reader. Any input either parses or fails with
 * a message naming the file; a parsed file's tensors all convert (or are
 * refused by type), and copying it through the writer gives a file that parses
 * to the same metadata and tensor bytes. Anything else aborts. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_gguf: %s\n", what);
        abort();
    }
}

/* Every getter on every key: each either succeeds or says why. */
static void exercise_getters(const whet_gguf *g)
{
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const char *key = g->kv[i].key.data;
        if (strlen(key) != g->kv[i].key.len)
            continue; /* a key with a NUL inside cannot be looked up by C string */
        check(whet_gguf_find(g, key) != NULL, "a parsed key is not found");
        whet_err e = {{0}};
        const whet_gguf_str *s;
        uint32_t u32;
        int32_t i32;
        uint64_t u64, count;
        float f32;
        int b;
        const whet_gguf_str *strs;
        const int32_t *i32s;
        const uint32_t *u32s;
        const float *f32s;
        int results[] = {
            whet_gguf_get_string(g, key, &s, &e),
            whet_gguf_get_u32(g, key, &u32, &e),
            whet_gguf_get_i32(g, key, &i32, &e),
            whet_gguf_get_u64(g, key, &u64, &e),
            whet_gguf_get_f32(g, key, &f32, &e),
            whet_gguf_get_bool(g, key, &b, &e),
            whet_gguf_get_string_array(g, key, &strs, &count, &e),
            whet_gguf_get_i32_array(g, key, &i32s, &count, &e),
            whet_gguf_get_u32_array(g, key, &u32s, &count, &e),
            whet_gguf_get_f32_array(g, key, &f32s, &count, &e),
        };
        int successes = 0;
        for (size_t j = 0; j < sizeof results / sizeof results[0]; j++)
            successes += results[j] == 0;
        check(successes <= 1, "a key answers to two getters");
    }
}

static void convert_tensors(const whet_gguf *g)
{
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const whet_gguf_tensor *t = &g->tensors[i];
        check(t->data >= g->bytes && t->n_bytes <= g->size && t->data + t->n_bytes <= g->bytes + g->size,
              "tensor data outside the input");
        /* at most ~8 floats per stored byte, so bounded by the input size */
        float *out = malloc(t->n_elements ? (size_t)t->n_elements * sizeof *out : 1);
        check(out != NULL, "out of memory");
        whet_err e = {{0}};
        int rc = whet_gguf_tensor_to_f32(g, t, out, &e);
        check(rc == 0 || !whet_ggml_can_dequantize(t->type), "a convertible tensor failed to convert");
        check(rc == 0 || strncmp(e.msg, "fuzz.gguf: ", 11) == 0, "conversion error without the file name");
        free(out);
    }
}

/* Copies metadata and tensors into a writer; 0 when the writer took all of it. */
static int copy_into(const whet_gguf *g, whet_gguf_writer *w)
{
    for (uint64_t i = 0; i < g->n_kv; i++) {
        if (strlen(g->kv[i].key.data) != g->kv[i].key.len)
            return -1;
        if (whet_gguf_set_value(w, g->kv[i].key.data, &g->kv[i].value, NULL) != 0)
            return -1;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const whet_gguf_tensor *t = &g->tensors[i];
        if (strlen(t->name.data) != t->name.len)
            return -1;
        /* the writer refuses 0-dim tensors and empty dimensions, which ggml never writes */
        if (whet_gguf_add_tensor_raw(w, t->name.data, t->type, t->n_dims, t->ne, t->data, NULL) != 0)
            return -1;
    }
    return 0;
}

static void round_trip(const whet_gguf *g)
{
    whet_gguf_writer *w = whet_gguf_writer_new();
    check(w != NULL, "out of memory");
    if (copy_into(g, w) != 0) {
        whet_gguf_writer_free(w);
        return;
    }
    unsigned char *copy;
    size_t copy_size;
    whet_err e = {{0}};
    check(whet_gguf_write_memory(w, &copy, &copy_size, &e) == 0, "writing a copy failed");
    whet_gguf_writer_free(w);
    whet_gguf *h = whet_gguf_parse(copy, copy_size, "copy.gguf", &e);
    if (!h)
        fprintf(stderr, "fuzz_gguf: %s\n", e.msg);
    check(h != NULL, "the writer's copy does not parse");
    /* the writer adds general.quantization_version when quantized tensors lack it */
    int added = h->n_kv == g->n_kv + 1 && !whet_gguf_find(g, "general.quantization_version") &&
                whet_gguf_find(h, "general.quantization_version") == &h->kv[h->n_kv - 1];
    check(h->n_kv == g->n_kv || added, "the copy has other keys");
    check(h->n_tensors == g->n_tensors && h->alignment == g->alignment, "the copy differs");
    for (uint64_t i = 0; i < g->n_kv; i++) {
        check(h->kv[i].key.len == g->kv[i].key.len && !memcmp(h->kv[i].key.data, g->kv[i].key.data, g->kv[i].key.len),
              "a copied key differs");
        check(h->kv[i].value.type == g->kv[i].value.type, "a copied value's type differs");
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const whet_gguf_tensor *a = &g->tensors[i], *b = &h->tensors[i];
        check(a->type == b->type && a->n_elements == b->n_elements && a->n_bytes == b->n_bytes &&
                  !memcmp(a->ne, b->ne, sizeof a->ne) && (a->n_bytes == 0 || !memcmp(a->data, b->data, a->n_bytes)),
              "a copied tensor differs");
    }
    whet_gguf_close(h);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    whet_err e = {{0}};
    whet_gguf *g = whet_gguf_parse(data, size, "fuzz.gguf", &e);
    if (!g) {
        check(strncmp(e.msg, "fuzz.gguf: ", 11) == 0, "an error without the file name");
        return 0;
    }
    check(g->alignment && !(g->alignment & (g->alignment - 1)), "alignment not a power of 2");
    exercise_getters(g);
    convert_tensors(g);
    round_trip(g);
    whet_gguf_close(g);
    return 0;
}
