/* libFuzzer target for the JSON parser and writer. Beyond "no crash", it
 * checks what must hold for every input:
 *  - a refusal reads "fuzz: line L, column C (byte B): expected ..., found ...";
 *  - every key of every object is found by lookup, at its own member;
 *  - an exact integer equals its double, an out-of-range one is beyond 2^63;
 *  - writing the tree and parsing the text again gives the same tree
 *    (strings byte for byte, numbers bit for bit, key order kept). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

/* Recursion is bounded by the parser's depth limit (512 levels). */
static void check_value(const whet_json_doc *doc, const whet_json *v)
{
    whet_err e;
    switch (v->type) {
    case WHET_JSON_NUMBER:
        if (v->u.number.int_status == WHET_JSON_INT_EXACT)
            check(v->u.number.value == (double)v->u.number.integer);
        else if (v->u.number.int_status == WHET_JSON_INT_OUT_OF_RANGE)
            check(fabs(v->u.number.value) >= 9223372036854775808.0);
        check(strlen(v->u.number.text) == v->u.number.text_len);
        break;
    case WHET_JSON_STRING:
        check(v->u.string.chars[v->u.string.len] == 0);
        check(whet_json_fail_at(&e, doc, v, "something else") == -1);
        break;
    case WHET_JSON_ARRAY:
        for (size_t i = 0; i < v->u.array.count; i++)
            check_value(doc, &v->u.array.items[i]);
        break;
    case WHET_JSON_OBJECT:
        for (size_t i = 0; i < v->u.object.count; i++) {
            const whet_json_member *m = &v->u.object.members[i];
            check(whet_json_get_len(v, m->key, m->key_len) == &m->value);
            check_value(doc, &m->value);
        }
        break;
    default:
        break;
    }
}

static int depth_of(const whet_json *v)
{
    int deepest = 0;
    size_t n = whet_json_count(v);
    for (size_t i = 0; i < n; i++) {
        const whet_json *child = v->type == WHET_JSON_ARRAY ? &v->u.array.items[i] : &v->u.object.members[i].value;
        int d = depth_of(child);
        if (d > deepest)
            deepest = d;
    }
    return deepest + (v->type == WHET_JSON_ARRAY || v->type == WHET_JSON_OBJECT);
}

static void write_value(whet_json_writer *w, const whet_json *v)
{
    switch (v->type) {
    case WHET_JSON_NULL: whet_json_write_null(w); break;
    case WHET_JSON_FALSE: whet_json_write_bool(w, 0); break;
    case WHET_JSON_TRUE: whet_json_write_bool(w, 1); break;
    case WHET_JSON_NUMBER:
        /* "-0" is an exact integer whose double is negative zero */
        if (v->u.number.int_status == WHET_JSON_INT_EXACT && !(v->u.number.value == 0 && signbit(v->u.number.value)))
            whet_json_write_int(w, v->u.number.integer);
        else
            whet_json_write_double(w, v->u.number.value);
        break;
    case WHET_JSON_STRING: whet_json_write_string_len(w, v->u.string.chars, v->u.string.len); break;
    case WHET_JSON_ARRAY:
        whet_json_begin_array(w);
        for (size_t i = 0; i < v->u.array.count; i++)
            write_value(w, &v->u.array.items[i]);
        whet_json_end_array(w);
        break;
    case WHET_JSON_OBJECT:
        whet_json_begin_object(w);
        for (size_t i = 0; i < v->u.object.count; i++) {
            whet_json_key_len(w, v->u.object.members[i].key, v->u.object.members[i].key_len);
            write_value(w, &v->u.object.members[i].value);
        }
        whet_json_end_object(w);
        break;
    }
}

static void check_same(const whet_json *a, const whet_json *b)
{
    check(a->type == b->type);
    switch (a->type) {
    case WHET_JSON_NUMBER:
        check(memcmp(&a->u.number.value, &b->u.number.value, sizeof(double)) == 0);
        break;
    case WHET_JSON_STRING:
        check(a->u.string.len == b->u.string.len);
        check(memcmp(a->u.string.chars, b->u.string.chars, a->u.string.len) == 0);
        break;
    case WHET_JSON_ARRAY:
        check(a->u.array.count == b->u.array.count);
        for (size_t i = 0; i < a->u.array.count; i++)
            check_same(&a->u.array.items[i], &b->u.array.items[i]);
        break;
    case WHET_JSON_OBJECT:
        check(a->u.object.count == b->u.object.count);
        for (size_t i = 0; i < a->u.object.count; i++) {
            const whet_json_member *x = &a->u.object.members[i], *y = &b->u.object.members[i];
            check(x->key_len == y->key_len && memcmp(x->key, y->key, x->key_len) == 0);
            check_same(&x->value, &y->value);
        }
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    whet_json_doc *doc = NULL;
    whet_err e;
    if (whet_json_parse(&doc, (const char *)data, size, "fuzz", NULL, &e) != 0) {
        check(doc == NULL);
        check(strncmp(e.msg, "fuzz: line ", 11) == 0 && strstr(e.msg, ": expected ") && strstr(e.msg, ", found "));
        return 0;
    }
    const whet_json *root = whet_json_root(doc);
    check_value(doc, root);

    if (depth_of(root) <= WHET_JSON_WRITER_MAX_DEPTH) {
        for (int indent = 0; indent <= 1; indent++) {
            whet_json_writer w;
            whet_json_writer_init(&w, indent);
            write_value(&w, root);
            const char *text;
            size_t len;
            check(whet_json_writer_finish(&w, "fuzz", &text, &len, &e) == 0);
            whet_json_doc *again = NULL;
            check(whet_json_parse(&again, text, len, "again", NULL, &e) == 0);
            check_same(root, whet_json_root(again));
            whet_json_free(again);
            whet_json_writer_free(&w);
        }
    }
    whet_json_free(doc);
    return 0;
}
