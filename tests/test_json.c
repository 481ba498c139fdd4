/* The JSON parser and writer: valid documents, the exact message and position
 * of every error class, escapes and surrogates, numbers at the int64 limits,
 * nesting limits without recursion, lookups, and writer round trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "io/json.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static whet_json_doc *parse_ok(const char *text, size_t len)
{
    whet_json_doc *doc = NULL;
    whet_err e = {{0}};
    int rc = whet_json_parse(&doc, text, len, "t.json", NULL, &e);
    if (rc != 0)
        fail_msg("unexpected error: %s", e.msg);
    assert_non_null(doc);
    return doc;
}

static whet_json_doc *parse_str(const char *text)
{
    return parse_ok(text, strlen(text));
}

/* Parses text (of explicit length) expecting exactly `message`. */
static void expect_error_len(const char *text, size_t len, const whet_json_options *opt, const char *message)
{
    whet_json_doc *doc = (whet_json_doc *)1;
    whet_err e = {{0}};
    assert_int_equal(whet_json_parse(&doc, text, len, "t.json", opt, &e), -1);
    assert_null(doc);
    assert_string_equal(e.msg, message);
}

static void expect_error(const char *text, const char *message)
{
    expect_error_len(text, strlen(text), NULL, message);
}

static void valid_document_keeps_order_and_answers_lookups(void **state)
{
    (void)state;
    whet_json_doc *doc = parse_str(" {\"z\": 1, \"a\": [true, false, null, \"s\", {}, []],\n"
                                   "  \"m\": {\"inner\": -2.5e1}, \"\": \"empty key\"} \r\n\t");
    const whet_json *root = whet_json_root(doc);
    assert_int_equal(root->type, WHET_JSON_OBJECT);
    assert_int_equal(whet_json_count(root), 4);
    const char *order[] = {"z", "a", "m", ""};
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(root->u.object.members[i].key, order[i]);
    assert_int_equal(root->line, 1);
    assert_int_equal(root->column, 2);
    assert_int_equal(root->offset, 1);

    const whet_json *a = whet_json_get(root, "a");
    assert_non_null(a);
    assert_int_equal(whet_json_count(a), 6);
    assert_int_equal(whet_json_at(a, 0)->type, WHET_JSON_TRUE);
    assert_int_equal(whet_json_at(a, 1)->type, WHET_JSON_FALSE);
    assert_int_equal(whet_json_at(a, 2)->type, WHET_JSON_NULL);
    assert_string_equal(whet_json_string(whet_json_at(a, 3)), "s");
    assert_int_equal(whet_json_at(a, 4)->type, WHET_JSON_OBJECT);
    assert_int_equal(whet_json_count(whet_json_at(a, 4)), 0);
    assert_int_equal(whet_json_at(a, 5)->type, WHET_JSON_ARRAY);
    assert_null(whet_json_at(a, 6));
    assert_null(whet_json_get(whet_json_at(a, 4), "x")); /* empty object */

    const whet_json *inner = whet_json_get(whet_json_get(root, "m"), "inner");
    assert_non_null(inner);
    assert_true(inner->u.number.value == -25.0);
    assert_int_equal(inner->line, 2);
    assert_int_equal(inner->column, 18);
    assert_string_equal(inner->u.number.text, "-2.5e1");
    assert_string_equal(whet_json_string(whet_json_get(root, "")), "empty key");
    assert_null(whet_json_get(root, "missing"));
    assert_null(whet_json_get(a, "z")); /* not an object */
    assert_null(whet_json_string(a));
    whet_json_free(doc);

    /* any value may be the whole document */
    doc = parse_str("\"only\"");
    assert_string_equal(whet_json_string(whet_json_root(doc)), "only");
    whet_json_free(doc);
    doc = parse_str("  7 ");
    assert_int_equal(whet_json_root(doc)->u.number.integer, 7);
    whet_json_free(doc);
    /* RFC 8259 §8.1: a leading byte order mark is ignored */
    doc = parse_str("\xEF\xBB\xBF{}");
    assert_int_equal(whet_json_root(doc)->type, WHET_JSON_OBJECT);
    assert_int_equal(whet_json_root(doc)->column, 1); /* the mark is invisible */
    assert_int_equal(whet_json_root(doc)->offset, 3);
    whet_json_free(doc);
}

static void large_object_lookups(void **state)
{
    (void)state;
    size_t cap = 64 * 1024, len = 0;
    char *text = malloc(cap);
    len += (size_t)snprintf(text + len, cap - len, "{");
    for (int i = 0; i < 2000; i++)
        len += (size_t)snprintf(text + len, cap - len, "%s\"key%d\":%d", i ? "," : "", (i * 7919) % 2000, i);
    len += (size_t)snprintf(text + len, cap - len, "}");
    whet_json_doc *doc = parse_ok(text, len);
    const whet_json *root = whet_json_root(doc);
    for (int i = 0; i < 2000; i++) {
        char key[32];
        snprintf(key, sizeof key, "key%d", (i * 7919) % 2000);
        const whet_json *v = whet_json_get(root, key);
        assert_non_null(v);
        assert_int_equal(v->u.number.integer, i);
        assert_string_equal(root->u.object.members[i].key, key); /* document order kept */
    }
    assert_null(whet_json_get(root, "key2000"));
    assert_null(whet_json_get(root, "key"));
    whet_json_free(doc);
    free(text);

    /* keys that differ only after an embedded NUL */
    static const char nul_keys[] = "{\"a\\u0000b\":1,\"a\\u0000c\":2,\"a\":3}";
    doc = parse_str(nul_keys);
    root = whet_json_root(doc);
    assert_int_equal(whet_json_get_len(root, "a\0c", 3)->u.number.integer, 2);
    assert_int_equal(whet_json_get_len(root, "a\0b", 3)->u.number.integer, 1);
    assert_int_equal(whet_json_get(root, "a")->u.number.integer, 3);
    assert_int_equal(root->u.object.members[0].key_len, 3);
    whet_json_free(doc);
}

static void escapes_and_surrogates(void **state)
{
    (void)state;
    whet_json_doc *doc = parse_str("[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\", \"\\u0041\\u00e9\\u20AC\\ud83d\\ude00\","
                                   " \"raw \xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\", \"nul\\u0000inside\","
                                   " \"\\uDBFF\\uDFFF\", \"\"]");
    const whet_json *root = whet_json_root(doc);
    assert_string_equal(whet_json_string(whet_json_at(root, 0)), "\"\\/\b\f\n\r\t");
    assert_string_equal(whet_json_string(whet_json_at(root, 1)), "A\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
    assert_string_equal(whet_json_string(whet_json_at(root, 2)), "raw \xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
    const whet_json *nul = whet_json_at(root, 3);
    assert_int_equal(nul->u.string.len, 10);
    assert_memory_equal(nul->u.string.chars, "nul\0inside", 11);
    assert_string_equal(whet_json_string(whet_json_at(root, 4)), "\xF4\x8F\xBF\xBF"); /* U+10FFFF */
    assert_int_equal(whet_json_at(root, 5)->u.string.len, 0);
    whet_json_free(doc);
}

static void expect_integer(const char *literal, int64_t value)
{
    whet_json_doc *doc = parse_str(literal);
    const whet_json *v = whet_json_root(doc);
    assert_int_equal(v->type, WHET_JSON_NUMBER);
    if (v->u.number.int_status != WHET_JSON_INT_EXACT)
        fail_msg("%s: not read as an exact integer", literal);
    assert_true(v->u.number.integer == value);
    int64_t got = 0;
    assert_int_equal(whet_json_int64(doc, v, INT64_MIN, INT64_MAX, &got, NULL), 0);
    assert_true(got == value);
    whet_json_free(doc);
}

static void expect_int_status(const char *literal, whet_json_int_status status, double value)
{
    whet_json_doc *doc = parse_str(literal);
    const whet_json *v = whet_json_root(doc);
    if (v->u.number.int_status != status)
        fail_msg("%s: int status %d, expected %d", literal, v->u.number.int_status, status);
    assert_true(v->u.number.value == value);
    whet_json_free(doc);
}

static void numbers_and_int64_limits(void **state)
{
    (void)state;
    expect_integer("0", 0);
    expect_integer("-0", 0);
    expect_integer("42", 42);
    expect_integer("9223372036854775807", INT64_MAX);
    expect_integer("-9223372036854775808", INT64_MIN);
    expect_integer("1e3", 1000);
    expect_integer("1E+2", 100);
    expect_integer("2.50e1", 25);
    expect_integer("100e-2", 1);
    expect_integer("1.0", 1);
    expect_integer("-0.0e-7", 0);
    expect_integer("0.000", 0);
    expect_integer("922337203685477580.7e1", INT64_MAX);
    expect_integer("9.223372036854775807e18", INT64_MAX);
    expect_int_status("9223372036854775808", WHET_JSON_INT_OUT_OF_RANGE, 9223372036854775808.0);
    expect_int_status("-9223372036854775809", WHET_JSON_INT_OUT_OF_RANGE, -9223372036854775808.0);
    expect_int_status("1e19", WHET_JSON_INT_OUT_OF_RANGE, 1e19);
    expect_int_status("1e300", WHET_JSON_INT_OUT_OF_RANGE, 1e300);
    expect_int_status("1.5", WHET_JSON_INT_NOT_INTEGER, 1.5);
    expect_int_status("25e-1", WHET_JSON_INT_NOT_INTEGER, 2.5);
    expect_int_status("1e-400", WHET_JSON_INT_NOT_INTEGER, 0.0); /* underflow is not an error */
    expect_int_status("-1.25E-2", WHET_JSON_INT_NOT_INTEGER, -0.0125);
    expect_int_status("0.1", WHET_JSON_INT_NOT_INTEGER, 0.1);
    expect_int_status("1.7976931348623157e308", WHET_JSON_INT_OUT_OF_RANGE, 1.7976931348623157e308);
    expect_int_status("123456789012345678901234567890e-20", WHET_JSON_INT_NOT_INTEGER, 1234567890.1234567890123);

    /* -0 keeps its sign as a double */
    whet_json_doc *doc = parse_str("-0");
    assert_true(signbit(whet_json_root(doc)->u.number.value));
    whet_json_free(doc);

    /* whet_json_int64: range checks and their messages */
    doc = parse_str("[1.5, 300, -1, \"7\", 9223372036854775808]");
    const whet_json *root = whet_json_root(doc);
    int64_t out = 0;
    whet_err e = {{0}};
    assert_int_equal(whet_json_int64(doc, whet_json_at(root, 0), 0, 255, &out, &e), -1);
    assert_string_equal(e.msg, "t.json: line 1, column 2 (byte 1): expected an integer in [0, 255], found the number 1.5");
    assert_int_equal(whet_json_int64(doc, whet_json_at(root, 1), 0, 255, &out, &e), -1);
    assert_string_equal(e.msg, "t.json: line 1, column 7 (byte 6): expected an integer in [0, 255], found the number 300");
    assert_int_equal(whet_json_int64(doc, whet_json_at(root, 1), 0, INT64_MAX, &out, &e), 0);
    assert_int_equal(out, 300);
    assert_int_equal(whet_json_int64(doc, whet_json_at(root, 2), 0, INT64_MAX, &out, &e), -1);
    assert_string_equal(e.msg, "t.json: line 1, column 12 (byte 11): expected an integer >= 0, found the number -1");
    assert_int_equal(whet_json_int64(doc, whet_json_at(root, 3), INT64_MIN, INT64_MAX, &out, &e), -1);
    assert_string_equal(e.msg, "t.json: line 1, column 16 (byte 15): expected a 64-bit integer, found the string \"7\"");
    assert_int_equal(whet_json_int64(doc, whet_json_at(root, 4), INT64_MIN, INT64_MAX, &out, &e), -1);
    assert_string_equal(e.msg, "t.json: line 1, column 21 (byte 20): expected a 64-bit integer, found the number "
                               "9223372036854775808");
    whet_json_free(doc);
}

static void structural_errors(void **state)
{
    (void)state;
    expect_error("", "t.json: line 1, column 1 (byte 0): expected a JSON value, found end of input");
    expect_error("  \n ", "t.json: line 2, column 2 (byte 4): expected a JSON value, found end of input");
    expect_error("{\"a\":1,}", "t.json: line 1, column 8 (byte 7): expected a string key, found '}'");
    expect_error("{,}", "t.json: line 1, column 2 (byte 1): expected a string key or '}', found ','");
    expect_error("{a:1}", "t.json: line 1, column 2 (byte 1): expected a string key or '}', found 'a'");
    expect_error("[1,]", "t.json: line 1, column 4 (byte 3): expected a JSON value, found ']'");
    expect_error("[,1]", "t.json: line 1, column 2 (byte 1): expected a JSON value or ']', found ','");
    expect_error("[1 2]", "t.json: line 1, column 4 (byte 3): expected ',' or ']', found '2'");
    expect_error("{\"a\" 1}", "t.json: line 1, column 6 (byte 5): expected ':' after the key, found '1'");
    expect_error("{\"a\":1\n \"b\":2}", "t.json: line 2, column 2 (byte 8): expected ',' or '}', found '\"'");
    expect_error("[1}", "t.json: line 1, column 3 (byte 2): expected ',' or ']', found '}'");
    expect_error("{\"a\":1]", "t.json: line 1, column 7 (byte 6): expected ',' or '}', found ']'");
    expect_error("[[1]", "t.json: line 1, column 5 (byte 4): expected ',' or ']', found end of input");
    expect_error("[1] x", "t.json: line 1, column 5 (byte 4): expected end of input, found 'x'");
    expect_error("{}{}", "t.json: line 1, column 3 (byte 2): expected end of input, found '{'");
    expect_error("tru", "t.json: line 1, column 1 (byte 0): expected a JSON value, found 'tru'");
    expect_error("[True]", "t.json: line 1, column 2 (byte 1): expected a JSON value or ']', found 'True'");
    expect_error("[1, NaN]", "t.json: line 1, column 5 (byte 4): expected a JSON value, found 'NaN'");
    expect_error("[1, nullx]", "t.json: line 1, column 5 (byte 4): expected a JSON value, found 'nullx'");
    expect_error("'a'", "t.json: line 1, column 1 (byte 0): expected a JSON value, found \"'\"");
    expect_error("\x01", "t.json: line 1, column 1 (byte 0): expected a JSON value, found control character U+0001");
    expect_error_len("[\0]", 3, NULL,
                     "t.json: line 1, column 2 (byte 1): expected a JSON value or ']', found control character U+0000");
    expect_error("[\xEF\xBB\xBF]",
                 "t.json: line 1, column 2 (byte 1): expected a JSON value or ']', found a byte order mark (U+FEFF)");
    expect_error("\xC3\xA9", "t.json: line 1, column 1 (byte 0): expected a JSON value, found '\xC3\xA9' (U+00E9)");
    expect_error("\xFF", "t.json: line 1, column 1 (byte 0): expected a JSON value, found invalid UTF-8 (byte 0xFF)");
    /* columns count characters, bytes count bytes */
    expect_error("[\"\xC3\xA9\xC3\xA9\", x]", "t.json: line 1, column 8 (byte 9): expected a JSON value, found 'x'");
    /* CRLF line ends: \r is ordinary whitespace, \n starts the line */
    expect_error("{\r\n\"a\":\r\n}", "t.json: line 3, column 1 (byte 9): expected a JSON value, found '}'");
    expect_error("{\"a\":1,\"b\":2,\"a\":3}",
                 "t.json: line 1, column 14 (byte 13): expected unique keys in an object, found \"a\" again "
                 "(first at line 1, column 2)");
    expect_error("{\"k\":{\"x\":1,\n \"x\":2}}",
                 "t.json: line 2, column 2 (byte 14): expected unique keys in an object, found \"x\" again "
                 "(first at line 1, column 7)");
}

static void number_errors(void **state)
{
    (void)state;
    expect_error("01", "t.json: line 1, column 2 (byte 1): expected '.', 'e' or the end of the number after a "
                       "leading 0, found '1'");
    expect_error("-", "t.json: line 1, column 2 (byte 1): expected a digit after '-', found end of input");
    expect_error("-a", "t.json: line 1, column 2 (byte 1): expected a digit after '-', found 'a'");
    expect_error("[1.]", "t.json: line 1, column 4 (byte 3): expected a digit after '.', found ']'");
    expect_error(".5", "t.json: line 1, column 1 (byte 0): expected a JSON value, found '.'");
    expect_error("+1", "t.json: line 1, column 1 (byte 0): expected a JSON value, found '+'");
    expect_error("1e+", "t.json: line 1, column 4 (byte 3): expected a digit in the exponent, found end of input");
    expect_error("1ex", "t.json: line 1, column 3 (byte 2): expected a digit in the exponent, found 'x'");
    expect_error("[1e999]", "t.json: line 1, column 2 (byte 1): expected a number a double can hold (up to about "
                            "1.8e308), found 1e999");
    expect_error("-1e999999999999999999",
                 "t.json: line 1, column 1 (byte 0): expected a number a double can hold (up to about 1.8e308), "
                 "found -1e999999999999999999");
    expect_error("0x10", "t.json: line 1, column 2 (byte 1): expected end of input, found 'x'");
}

static void string_errors(void **state)
{
    (void)state;
    expect_error("\"abc", "t.json: line 1, column 5 (byte 4): expected '\"' to close the string, found end of input");
    expect_error("\"ab\\", "t.json: line 1, column 5 (byte 4): expected an escape after '\\', found end of input");
    expect_error("\"a\nb\"", "t.json: line 1, column 3 (byte 2): expected a string character (control characters "
                             "must be escaped), found a newline");
    expect_error("\"a\tb\"", "t.json: line 1, column 3 (byte 2): expected a string character (control characters "
                             "must be escaped), found a tab");
    expect_error("\"\\x\"",
                 "t.json: line 1, column 3 (byte 2): expected one of \" \\ / b f n r t u after '\\', found 'x'");
    expect_error("\"\\U0041\"",
                 "t.json: line 1, column 3 (byte 2): expected one of \" \\ / b f n r t u after '\\', found 'U'");
    expect_error("\"\\u12G4\"", "t.json: line 1, column 6 (byte 5): expected 4 hex digits after \\u, found 'G'");
    expect_error("\"\\u12", "t.json: line 1, column 6 (byte 5): expected 4 hex digits after \\u, found end of input");
    expect_error("\"\\ud83d\"", "t.json: line 1, column 8 (byte 7): expected a low surrogate \\uDC00-\\uDFFF after "
                                "\\uD83D, found '\"'");
    expect_error("\"\\ud83d\\u0041\"", "t.json: line 1, column 8 (byte 7): expected a low surrogate "
                                       "\\uDC00-\\uDFFF after \\uD83D, found \\u0041");
    expect_error("\"\\ud83d\\ud83d\"", "t.json: line 1, column 8 (byte 7): expected a low surrogate "
                                       "\\uDC00-\\uDFFF after \\uD83D, found \\uD83D");
    expect_error("\"\\ude00\"",
                 "t.json: line 1, column 2 (byte 1): expected a character escape, found the lone low surrogate \\uDE00");
    /* invalid UTF-8: bad continuation, overlong, UTF-16 surrogate, beyond U+10FFFF, truncated, stray continuation */
    static const char *const invalid[] = {"\"\xC3\x28\"", "\"\xC0\xAF\"", "\"\xE0\x80\xAF\"", "\"\xED\xA0\x80\"",
                                          "\"\xF4\x90\x80\x80\"", "\"\xF5\x80\x80\x80\"", "\"\xE2\x82",
                                          "\"\x80\""};
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        char expected[160];
        snprintf(expected, sizeof expected,
                 "t.json: line 1, column 2 (byte 1): expected UTF-8 text, found invalid UTF-8 (byte 0x%02X)",
                 (unsigned char)invalid[i][1]);
        expect_error(invalid[i], expected);
    }
    expect_error("{\"k\xFF\":1}",
                 "t.json: line 1, column 4 (byte 3): expected UTF-8 text, found invalid UTF-8 (byte 0xFF)");
}

static char *nested(size_t depth, size_t *len)
{
    char *text = malloc(2 * depth + 1);
    memset(text, '[', depth);
    memset(text + depth, ']', depth);
    text[2 * depth] = 0;
    *len = 2 * depth;
    return text;
}

static void nesting_limits(void **state)
{
    (void)state;
    size_t len;
    char *text = nested(WHET_JSON_DEFAULT_MAX_DEPTH, &len);
    whet_json_doc *doc = parse_ok(text, len);
    whet_json_free(doc);
    free(text);

    text = nested(WHET_JSON_DEFAULT_MAX_DEPTH + 1, &len);
    expect_error_len(text, len, NULL,
                     "t.json: line 1, column 513 (byte 512): expected at most 512 nested arrays and objects, found "
                     "one more '['");
    free(text);

    /* a hostile depth is refused at the limit, long before any stack could matter */
    text = nested(1000000, &len);
    expect_error_len(text, len, NULL,
                     "t.json: line 1, column 513 (byte 512): expected at most 512 nested arrays and objects, found "
                     "one more '['");
    /* and the parser does not recurse: a huge explicit limit still parses */
    whet_json_options deep = {.max_depth = 1000000};
    whet_err e = {{0}};
    assert_int_equal(whet_json_parse(&doc, text, len, "t.json", &deep, &e), 0);
    const whet_json *v = whet_json_root(doc);
    size_t levels = 0;
    while (whet_json_count(v) == 1) {
        v = whet_json_at(v, 0);
        levels++;
    }
    assert_int_equal(levels, 999999);
    whet_json_free(doc);
    free(text);

    whet_json_options shallow = {.max_depth = 2};
    expect_error_len("{\"a\":[{}]}", 10, &shallow,
                     "t.json: line 1, column 7 (byte 6): expected at most 2 nested arrays and objects, found one "
                     "more '{'");
}

static void size_limit_and_base_offset(void **state)
{
    (void)state;
    whet_json_options small = {.max_size = 4};
    expect_error_len("[1,2]", 5, &small, "t.json: line 1, column 1 (byte 0): expected at most 4 bytes of JSON, found 5");
    whet_json_doc *doc = NULL;
    assert_int_equal(whet_json_parse(&doc, "[12]", 4, "t.json", &small, NULL), 0);
    whet_json_free(doc);

    /* JSON inside a larger file reports file offsets */
    whet_json_options embedded = {.base_offset = 8};
    expect_error_len("{\"a\":x}", 7, &embedded, "t.json: line 1, column 6 (byte 13): expected a JSON value, found 'x'");
    assert_int_equal(whet_json_parse(&doc, "{\"a\":1}", 7, "t.json", &embedded, NULL), 0);
    assert_int_equal(whet_json_get(whet_json_root(doc), "a")->offset, 13);
    assert_int_equal(whet_json_root(doc)->u.object.members[0].offset, 9);
    whet_json_free(doc);
}

static void caller_errors_point_at_values(void **state)
{
    (void)state;
    whet_json_doc *doc = parse_str("{\n  \"dtype\": [1, 2],\n  \"name\": \"a\\\"b\\n\"\n}");
    const whet_json *root = whet_json_root(doc);
    whet_err e = {{0}};
    assert_int_equal(whet_json_fail_at(&e, doc, whet_json_get(root, "dtype"), "a dtype %s", "string"), -1);
    assert_string_equal(e.msg, "t.json: line 2, column 12 (byte 13): expected a dtype string, found an array of 2 items");
    whet_json_fail_at(&e, doc, whet_json_get(root, "name"), "a number");
    assert_string_equal(e.msg, "t.json: line 3, column 11 (byte 31): expected a number, found the string \"a\\\"b\\x0A\"");
    whet_json_fail_at(&e, doc, root, "an array");
    assert_string_equal(e.msg, "t.json: line 1, column 1 (byte 0): expected an array, found an object");
    assert_int_equal(whet_json_fail_missing(&e, doc, root, "shape"), -1);
    assert_string_equal(e.msg, "t.json: line 1, column 1 (byte 0): expected key \"shape\" in this object, found none");
    whet_json_free(doc);
}

static void parse_file_names_the_path(void **state)
{
    (void)state;
    char dir[] = "/tmp/whet-test-json-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/config.json", dir);
    const char *text = "{\"hidden_size\": 64,\n \"rope_theta\": 1e4,\n \"bad\": [}";
    assert_int_equal(whet_write_file_atomic(path, text, strlen(text), NULL), 0);
    whet_json_doc *doc = NULL;
    whet_err e = {{0}};
    assert_int_equal(whet_json_parse_file(&doc, path, NULL, &e), -1);
    char expected[256];
    snprintf(expected, sizeof expected, "%s: line 3, column 10 (byte 49): expected a JSON value or ']', found '}'",
             path);
    assert_string_equal(e.msg, expected);

    text = "{\"hidden_size\": 64}";
    assert_int_equal(whet_write_file_atomic(path, text, strlen(text), NULL), 0);
    assert_int_equal(whet_json_parse_file(&doc, path, NULL, &e), 0);
    assert_string_equal(whet_json_doc_name(doc), path);
    int64_t hidden = 0;
    assert_int_equal(whet_json_int64(doc, whet_json_get(whet_json_root(doc), "hidden_size"), 1, 1 << 20, &hidden, &e), 0);
    assert_int_equal(hidden, 64);
    whet_json_free(doc);

    snprintf(expected, sizeof expected, "%s/absent.json", dir);
    assert_int_equal(whet_json_parse_file(&doc, expected, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "absent.json: cannot open"));
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

static const char *finish(whet_json_writer *w)
{
    const char *text = NULL;
    size_t len = 0;
    whet_err e = {{0}};
    if (whet_json_writer_finish(w, "out.json", &text, &len, &e) != 0)
        fail_msg("writer: %s", e.msg);
    assert_int_equal(strlen(text), len);
    return text;
}

static void writer_compact_and_indented(void **state)
{
    (void)state;
    for (int indent = 0; indent <= 2; indent += 2) {
        whet_json_writer w;
        whet_json_writer_init(&w, indent);
        whet_json_begin_object(&w);
        whet_json_key(&w, "name");
        whet_json_write_string(&w, "q\"\\\n\t\x01\xC3\xA9/");
        whet_json_key(&w, "r");
        whet_json_write_int(&w, 16);
        whet_json_key(&w, "list");
        whet_json_begin_array(&w);
        whet_json_write_double(&w, 0.1);
        whet_json_write_bool(&w, 1);
        whet_json_write_null(&w);
        whet_json_begin_array(&w);
        whet_json_end_array(&w);
        whet_json_end_array(&w);
        whet_json_key(&w, "empty");
        whet_json_begin_object(&w);
        whet_json_end_object(&w);
        whet_json_end_object(&w);
        const char *text = finish(&w);
        if (indent == 0)
            assert_string_equal(text, "{\"name\":\"q\\\"\\\\\\n\\t\\u0001\xC3\xA9/\",\"r\":16,\"list\":[0.1,true,null,[]],"
                                      "\"empty\":{}}");
        else
            assert_string_equal(text, "{\n  \"name\": \"q\\\"\\\\\\n\\t\\u0001\xC3\xA9/\",\n  \"r\": 16,\n  \"list\": [\n"
                                      "    0.1,\n    true,\n    null,\n    []\n  ],\n  \"empty\": {}\n}\n");
        whet_json_doc *doc = parse_str(text);
        assert_string_equal(whet_json_string(whet_json_get(whet_json_root(doc), "name")),
                            "q\"\\\n\t\x01\xC3\xA9/");
        whet_json_free(doc);
        whet_json_writer_free(&w);
    }
}

static void writer_numbers_round_trip(void **state)
{
    (void)state;
    const double values[] = {0.1, 1.0 / 3.0, 1e300, 5e-324, 2.2250738585072014e-308, -0.0, 100.0, 1e21, 123456789.0,
                             1.7976931348623157e308, 3.14159, -2.5e-7};
    const char *expected[] = {"0.1", "0.3333333333333333", "1e+300", "5e-324", "2.2250738585072014e-308", "-0.0",
                              "100.0", "1e+21", "123456789.0", "1.7976931348623157e+308", "3.14159", "-2.5e-07"};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        whet_json_writer w;
        whet_json_writer_init(&w, 0);
        whet_json_write_double(&w, values[i]);
        const char *text = finish(&w);
        assert_string_equal(text, expected[i]);
        whet_json_doc *doc = parse_str(text);
        double back = whet_json_root(doc)->u.number.value;
        assert_memory_equal(&back, &values[i], sizeof back); /* bit for bit, -0.0 included */
        whet_json_free(doc);
        whet_json_writer_free(&w);
    }
    whet_json_writer w;
    whet_json_writer_init(&w, 0);
    whet_json_begin_array(&w);
    whet_json_write_float(&w, 0.1f);
    whet_json_write_float(&w, 1e-5f);
    whet_json_write_float(&w, 16777217.0f);
    whet_json_write_double(&w, NAN);
    whet_json_write_float(&w, -INFINITY);
    whet_json_write_int(&w, INT64_MIN);
    whet_json_write_int(&w, INT64_MAX);
    whet_json_end_array(&w);
    assert_string_equal(finish(&w), "[0.1,1e-05,16777216.0,null,null,-9223372036854775808,9223372036854775807]");
    whet_json_writer_free(&w);
}

static void expect_writer_error(whet_json_writer *w, const char *message)
{
    const char *text;
    size_t len;
    whet_err e = {{0}};
    assert_int_equal(whet_json_writer_finish(w, "out.json", &text, &len, &e), -1);
    assert_string_equal(e.msg, message);
    whet_json_writer_free(w);
}

static void writer_refuses_misuse(void **state)
{
    (void)state;
    whet_json_writer w;
    whet_json_writer_init(&w, 0);
    whet_json_begin_object(&w);
    whet_json_write_int(&w, 1);
    expect_writer_error(&w, "out.json: cannot write the JSON: a value in an object without a key before it");

    whet_json_writer_init(&w, 0);
    whet_json_begin_array(&w);
    whet_json_key(&w, "k");
    expect_writer_error(&w, "out.json: cannot write the JSON: a key outside an object or where a value belongs");

    whet_json_writer_init(&w, 0);
    whet_json_begin_array(&w);
    whet_json_end_object(&w);
    expect_writer_error(&w, "out.json: cannot write the JSON: an object end without its beginning");

    whet_json_writer_init(&w, 0);
    whet_json_begin_object(&w);
    whet_json_key(&w, "k");
    whet_json_end_object(&w);
    expect_writer_error(&w, "out.json: cannot write the JSON: a key without a value");

    whet_json_writer_init(&w, 0);
    whet_json_begin_array(&w);
    expect_writer_error(&w, "out.json: cannot write the JSON: unclosed arrays or objects");

    whet_json_writer_init(&w, 0);
    expect_writer_error(&w, "out.json: cannot write the JSON: no value at all");

    whet_json_writer_init(&w, 0);
    whet_json_write_int(&w, 1);
    whet_json_write_int(&w, 2);
    expect_writer_error(&w, "out.json: cannot write the JSON: a second value after the complete document");

    whet_json_writer_init(&w, 0);
    whet_json_write_string(&w, "bad \xC0\xAF");
    expect_writer_error(&w, "out.json: cannot write the JSON: a string that is not valid UTF-8");

    whet_json_writer_init(&w, 0);
    for (int i = 0; i <= WHET_JSON_WRITER_MAX_DEPTH; i++)
        whet_json_begin_array(&w);
    expect_writer_error(&w, "out.json: cannot write the JSON: nesting deeper than WHET_JSON_WRITER_MAX_DEPTH");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_document_keeps_order_and_answers_lookups),
        cmocka_unit_test(large_object_lookups),
        cmocka_unit_test(escapes_and_surrogates),
        cmocka_unit_test(numbers_and_int64_limits),
        cmocka_unit_test(structural_errors),
        cmocka_unit_test(number_errors),
        cmocka_unit_test(string_errors),
        cmocka_unit_test(nesting_limits),
        cmocka_unit_test(size_limit_and_base_offset),
        cmocka_unit_test(caller_errors_point_at_values),
        cmocka_unit_test(parse_file_names_the_path),
        cmocka_unit_test(writer_compact_and_indented),
        cmocka_unit_test(writer_numbers_round_trip),
        cmocka_unit_test(writer_refuses_misuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
