/* Every assertion type of whet-evalspec(5), each passing and failing, and
 * each negated with not_; the helpers (normalisation, Levenshtein in code
 * points, SQuAD token F1, JSON match/subset) on known values; exec's exit
 * status, printed score, WHET_CASE, timeout and a validator that reads
 * nothing. Assertions are built by the spec reader from JSON text, as a
 * suite file gives them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "eval/eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The score of output under the assertion written as JSON (and its not_
 * twin, which must score 1 - score). */
static double score_of(const char *assertion, const char *output)
{
    char spec[4096];
    snprintf(spec, sizeof spec, "{\"suite\":\"t\"}\n{\"id\":\"c\",\"prompt\":\"p\",\"assert\":[%s]}\n", assertion);
    whet_eval_suite *s = NULL;
    whet_err e = {{0}};
    if (whet_eval_suite_parse(&s, spec, strlen(spec), "tests/t.jsonl", &e) != 0)
        fail_msg("%s", e.msg);
    whet_eval_case *c = &s->cases[0];
    double score = -1, negated = -1;
    char *detail = NULL;
    if (whet_eval_assert_score(&c->asserts[0], c, s->dir, output, strlen(output), &score, &detail, &e) != 0)
        fail_msg("%s", e.msg);
    free(detail);
    c->asserts[0].negate = !c->asserts[0].negate;
    if (whet_eval_assert_score(&c->asserts[0], c, s->dir, output, strlen(output), &negated, &detail, &e) != 0)
        fail_msg("%s", e.msg);
    free(detail);
    whet_eval_suite_free(s);
    if (fabs(score + negated - 1) > 1e-12)
        fail_msg("%s: score %g, negated %g", assertion, score, negated);
    return score;
}

#define PASSES(a, out) assert_true(score_of(a, out) == 1)
#define FAILS(a, out) assert_true(score_of(a, out) == 0)

static void string_assertions(void **state)
{
    (void)state;
    PASSES("{\"type\":\"equals\",\"value\":\"Paris\"}", "Paris");
    FAILS("{\"type\":\"equals\",\"value\":\"Paris\"}", " Paris");
    PASSES("{\"type\":\"equals\",\"value\":\"paris\",\"norm\":[\"trim\",\"lower\"]}", "  PARIS\n");
    FAILS("{\"type\":\"equals\",\"value\":\"paris\",\"norm\":[\"trim\"]}", "  PARIS\n");
    PASSES("{\"type\":\"equals\",\"value\":\"a b c\",\"norm\":[\"ws\"]}", "  a \t b\n\nc ");
    PASSES("{\"type\":\"equals\",\"value\":\"Its done\",\"norm\":[\"punct\"]}", "It's done!");
    FAILS("{\"type\":\"equals\",\"value\":\"Its done\"}", "It's done!");
    PASSES("{\"type\":\"not_equals\",\"value\":\"x\"}", "y");
    PASSES("{\"type\":\"prefix\",\"value\":\"SELECT\"}", "SELECT * FROM t");
    FAILS("{\"type\":\"prefix\",\"value\":\"SELECT\"}", " SELECT * FROM t");
    PASSES("{\"type\":\"prefix\",\"value\":\"select\",\"norm\":[\"trim\",\"lower\"]}", " SELECT * FROM t");
    PASSES("{\"type\":\"contains\",\"value\":\"needle\"}", "hay needle hay");
    FAILS("{\"type\":\"contains\",\"value\":\"Needle\"}", "hay needle hay");
    PASSES("{\"type\":\"icontains\",\"value\":\"NeEdLe\"}", "hay needle hay");
    FAILS("{\"type\":\"icontains\",\"value\":\"pin\"}", "hay needle hay");
    PASSES("{\"type\":\"not_contains\",\"value\":\"error\"}", "all good");
    FAILS("{\"type\":\"not_icontains\",\"value\":\"ERROR\"}", "an error");
    PASSES("{\"type\":\"contains_any\",\"value\":[\"cat\",\"dog\"]}", "a dog");
    FAILS("{\"type\":\"contains_any\",\"value\":[\"cat\",\"dog\"]}", "a bird");
    PASSES("{\"type\":\"contains_all\",\"value\":[\"cat\",\"dog\"]}", "dog and cat");
    FAILS("{\"type\":\"contains_all\",\"value\":[\"cat\",\"dog\"]}", "dog and bird");
    PASSES("{\"type\":\"contains_all\",\"value\":[\"CAT\",\"dog\"],\"norm\":[\"lower\"]}", "Dog and Cat");
    PASSES("{\"type\":\"length\",\"min\":2,\"max\":4}", "héé"); /* 3 characters, 5 bytes */
    FAILS("{\"type\":\"length\",\"max\":4}", "héééé");
    FAILS("{\"type\":\"length\",\"min\":1}", "");
    PASSES("{\"type\":\"not_length\",\"min\":10}", "short");
}

static void regex_assertions(void **state)
{
    (void)state;
    PASSES("{\"type\":\"regex\",\"value\":\"^[0-9]+$\"}", "12345");
    FAILS("{\"type\":\"regex\",\"value\":\"^[0-9]+$\"}", "123a45");
    /* UTF-8 aware: one character for \"é\" */
    PASSES("{\"type\":\"regex\",\"value\":\"^caf.$\"}", "café");
    /* no UUID leaks (Hamel's example) */
    PASSES("{\"type\":\"not_regex\",\"value\":\"[0-9a-f]{8}-[0-9a-f]{4}-\"}", "trace 42");
    FAILS("{\"type\":\"not_regex\",\"value\":\"[0-9a-f]{8}-[0-9a-f]{4}-\"}", "id 0123abcd-1234-");
    /* a capture compared with target: group 1 by default when there is one */
    PASSES("{\"type\":\"regex\",\"value\":\"answer: (\\\\w+)\",\"target\":\"Paris\"}", "so the answer: Paris.");
    FAILS("{\"type\":\"regex\",\"value\":\"answer: (\\\\w+)\",\"target\":\"Lyon\"}", "so the answer: Paris.");
    PASSES("{\"type\":\"regex\",\"value\":\"answer: (\\\\w+)\",\"target\":\"paris\",\"norm\":[\"lower\"]}",
           "so the answer: Paris.");
    PASSES("{\"type\":\"regex\",\"value\":\"(a)(b+)\",\"group\":2,\"target\":\"bbb\"}", "xabbby");
    PASSES("{\"type\":\"regex\",\"value\":\"ab+\",\"target\":\"abb\"}", "xabby"); /* no group: the match */
    FAILS("{\"type\":\"regex\",\"value\":\"(x)|(y)\",\"group\":1,\"target\":\"x\"}", "y");
}

static void similarity_assertions(void **state)
{
    (void)state;
    assert_int_equal(whet_eval_levenshtein("kitten", 6, "sitting", 7), 3);
    assert_int_equal(whet_eval_levenshtein("", 0, "abc", 3), 3);
    assert_int_equal(whet_eval_levenshtein("héllo", 6, "hallo", 5), 1); /* one code point, not two bytes */
    PASSES("{\"type\":\"levenshtein\",\"value\":\"sitting\",\"max_distance\":3}", "kitten");
    FAILS("{\"type\":\"levenshtein\",\"value\":\"sitting\",\"max_distance\":2}", "kitten");
    PASSES("{\"type\":\"levenshtein\",\"value\":\"Kitten\",\"norm\":[\"lower\"]}", "kitten");
    /* SQuAD F1: articles and punctuation ignored; 2 common of 3 and 2 tokens → P 2/3, R 1 → 0.8 */
    double f1 = whet_eval_token_f1("the cat sat down", 16, "Cat sat.", 8);
    if (fabs(f1 - 0.8) > 1e-12)
        fail_msg("f1 %.17g, expected 0.8", f1);
    assert_true(whet_eval_token_f1("", 0, "", 0) == 1);
    assert_true(whet_eval_token_f1("x", 1, "", 0) == 0);
    assert_true(fabs(score_of("{\"type\":\"f1\",\"value\":\"Cat sat.\"}", "the cat sat down") - 0.8) < 1e-12);
    assert_true(fabs(score_of("{\"type\":\"not_f1\",\"value\":\"Cat sat.\"}", "the cat sat down") - 0.2) < 1e-12);
    PASSES("{\"type\":\"f1\",\"value\":\"Cat sat.\",\"min_score\":0.75}", "the cat sat down");
    FAILS("{\"type\":\"f1\",\"value\":\"Cat sat.\",\"min_score\":0.85}", "the cat sat down");
    /* normalisation helper */
    size_t n;
    char *s = whet_eval_normalize("  A,  b\tC!  ", 12, WHET_NORM_WS | WHET_NORM_LOWER | WHET_NORM_PUNCT, &n);
    assert_string_equal(s, "a b c");
    free(s);
}

static void json_assertions(void **state)
{
    (void)state;
    PASSES("{\"type\":\"json_valid\"}", " {\"a\": [1, 2]}\n");
    FAILS("{\"type\":\"json_valid\"}", "{\"a\": [1, 2]");
    FAILS("{\"type\":\"json_valid\"}", "Sure! {\"a\": 1}");
    PASSES("{\"type\":\"not_json_valid\"}", "plain text");
    PASSES("{\"type\":\"json_match\",\"value\":{\"a\":1,\"b\":[true,null]}}", "{\"b\": [true, null], \"a\": 1.0}");
    FAILS("{\"type\":\"json_match\",\"value\":{\"a\":1}}", "{\"a\": 1, \"b\": 2}");
    FAILS("{\"type\":\"json_match\",\"value\":{\"a\":[1,2]}}", "{\"a\": [2, 1]}");
    FAILS("{\"type\":\"json_match\",\"value\":{\"a\":1}}", "not json");
    PASSES("{\"type\":\"json_subset\",\"value\":{\"a\":1,\"o\":{\"x\":\"y\"}}}",
           "{\"a\": 1, \"b\": 2, \"o\": {\"x\": \"y\", \"z\": 0}}");
    FAILS("{\"type\":\"json_subset\",\"value\":{\"a\":1,\"o\":{\"x\":\"y\"}}}", "{\"a\": 1, \"o\": {\"x\": \"n\"}}");
    FAILS("{\"type\":\"json_subset\",\"value\":{\"missing\":1}}", "{\"a\": 1}");
    PASSES("{\"type\":\"not_json_subset\",\"value\":{\"a\":2}}", "{\"a\": 1}");
    PASSES("{\"type\":\"json_match\",\"value\":\"s\"}", "\"s\"");
}

static void exec_assertions(void **state)
{
    (void)state;
    /* exit status decides; the output arrives on stdin */
    PASSES("{\"type\":\"exec\",\"value\":\"grep -q needle\"}", "hay needle");
    FAILS("{\"type\":\"exec\",\"value\":\"grep -q needle\"}", "hay only");
    PASSES("{\"type\":\"not_exec\",\"value\":\"exit 3\"}", "x");
    /* a printed score */
    assert_true(fabs(score_of("{\"type\":\"exec\",\"value\":\"cat >/dev/null; echo 0.25\"}", "x") - 0.25) < 1e-12);
    assert_true(score_of("{\"type\":\"exec\",\"value\":\"echo 7\"}", "x") == 1); /* clamped */
    PASSES("{\"type\":\"exec\",\"value\":\"echo 0.6\",\"min_score\":0.5}", "x");
    FAILS("{\"type\":\"exec\",\"value\":\"echo 0.4\",\"min_score\":0.5}", "x");
    FAILS("{\"type\":\"exec\",\"value\":\"echo 0.9; exit 1\"}", "x"); /* failing exit wins */
    /* the case in WHET_CASE; the command runs in the spec's directory (tests/) */
    PASSES("{\"type\":\"exec\",\"value\":\"printf '%s' \\\"$WHET_CASE\\\" | grep -q '\\\"id\\\":\\\"c\\\"'\"}", "x");
    PASSES("{\"type\":\"exec\",\"value\":\"test -f test_eval_assert.c\"}", "x");
    /* a validator that reads nothing of a large output must not kill us (SIGPIPE) */
    size_t big = 1 << 20;
    char *out = malloc(big + 1);
    memset(out, 'a', big);
    out[big] = 0;
    PASSES("{\"type\":\"exec\",\"value\":\"exit 0\"}", out);
    free(out);
    /* a validator's message that is not UTF-8 becomes valid UTF-8 (reports are JSON) */
    {
        const char *spec = "{\"suite\":\"t\"}\n{\"id\":\"c\",\"prompt\":\"p\",\"assert\":[{\"type\":\"exec\","
                           "\"value\":\"printf 'bad \\\\377\\\\303'; exit 1\"}]}\n";
        whet_eval_suite *s = NULL;
        whet_err e = {{0}};
        if (whet_eval_suite_parse(&s, spec, strlen(spec), "t.jsonl", &e) != 0)
            fail_msg("%s", e.msg);
        double score;
        char *detail = NULL;
        assert_int_equal(whet_eval_assert_score(&s->cases[0].asserts[0], &s->cases[0], ".", "x", 1, &score, &detail, &e), 0);
        assert_true(score == 0);
        assert_non_null(detail);
        assert_string_equal(detail, "exit status 1: bad \xEF\xBF\xBD\xEF\xBF\xBD");
        free(detail);
        whet_eval_suite_free(s);
    }
    /* a validator that hangs is killed at the timeout and fails */
    FAILS("{\"type\":\"exec\",\"value\":\"sleep 5\",\"timeout\":0.2}", "x");
}

static void weights_and_threshold(void **state)
{
    (void)state;
    const char *spec = "{\"suite\":\"t\",\"threshold\":0.7}\n"
                       "{\"id\":\"a\",\"prompt\":\"p\",\"assert\":[{\"type\":\"contains\",\"value\":\"x\",\"weight\":3},"
                       "{\"type\":\"contains\",\"value\":\"y\"}]}\n"
                       "{\"id\":\"b\",\"prompt\":\"p\",\"threshold\":0.8,\"assert\":[{\"type\":\"equals\",\"value\":\"q\"}]}\n";
    whet_eval_suite *s = NULL;
    whet_err e = {{0}};
    if (whet_eval_suite_parse(&s, spec, strlen(spec), "w.jsonl", &e) != 0)
        fail_msg("%s", e.msg);
    assert_true(s->cases[0].threshold == 0.7);
    assert_true(s->cases[1].threshold == 0.8);
    assert_true(s->cases[0].asserts[0].weight == 3);
    assert_true(s->cases[0].asserts[1].weight == 1);
    whet_eval_suite_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(string_assertions),   cmocka_unit_test(regex_assertions),
        cmocka_unit_test(similarity_assertions), cmocka_unit_test(json_assertions),
        cmocka_unit_test(exec_assertions),     cmocka_unit_test(weights_and_threshold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
