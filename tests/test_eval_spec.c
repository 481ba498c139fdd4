/* The eval spec reader: a valid suite with every kind read field by field,
 * comments and blank lines skipped, errors that name the file, the line of
 * the file (not of the JSON text) and the column, the prompt hash (the input,
 * not the assertions), and the shipped suites under datasets/. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "eval/eval.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static whet_eval_suite *parse_ok(const char *text)
{
    whet_eval_suite *s = NULL;
    whet_err e = {{0}};
    if (whet_eval_suite_parse(&s, text, strlen(text), "dir/s.jsonl", &e) != 0)
        fail_msg("unexpected error: %s", e.msg);
    return s;
}

static int mismatches;

/* Expects an error whose message starts with `prefix` and contains `part`. */
static void expect_error(const char *text, const char *prefix, const char *part)
{
    whet_eval_suite *s = (whet_eval_suite *)1;
    whet_err e = {{0}};
    assert_int_equal(whet_eval_suite_parse(&s, text, strlen(text), "s.jsonl", &e), -1);
    assert_null(s);
    if (strncmp(e.msg, prefix, strlen(prefix)) != 0 || (part && !strstr(e.msg, part))) {
        print_message("message \"%s\"\nexpected it to start \"%s\" and contain \"%s\"\n", e.msg, prefix,
                      part ? part : "");
        mismatches++;
    }
}

#define HEADER "{\"suite\":\"s\"}\n"

static void reads_a_suite(void **state)
{
    (void)state;
    whet_eval_suite *s = parse_ok(
        "# a comment, then a blank line\n\n"
        "{\"suite\":\"demo\",\"version\":1,\"seed\":42,\"temperature\":0.5,\"top_k\":5,\"top_p\":0.9,\"max_tokens\":16,"
        "\"stop\":[\"\\n\\n\",\"END\"],\"repeats\":3,\"reduce\":\"majority\",\"threshold\":0.5,"
        "\"gate\":{\"min_pass_rate\":0.9,\"max_drop\":0.02,\"alpha\":0.01,\"must_pass_tag\":\"must\",\"max_ppl_increase\":0.05}}\n"
        "{\"id\":\"g\",\"tags\":[\"critical\",\"x\"],\"prompt\":\"Q:\",\"max_tokens\":4,\"assert\":[{\"type\":\"not_contains\",\"value\":\"no\",\"weight\":2}],\"meta\":{\"any\":[1]}}\n"
        "  # indented comment\n"
        "{\"id\":\"m\",\"kind\":\"gen\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\",\"content\":\"hi\"}],\"assert\":[{\"type\":\"json_valid\"}]}\n"
        "{\"id\":\"c\",\"kind\":\"choice\",\"prompt\":\"Capital of France?\",\"choices\":[\" Paris\",\" Lyon\"],\"gold\":0}\n"
        "{\"id\":\"p\",\"kind\":\"ppl\",\"text\":\"Some text.\"}");
    assert_string_equal(s->name, "demo");
    assert_string_equal(s->dir, "dir");
    assert_int_equal(s->seed, 42);
    assert_true(s->temperature == 0.5 && s->top_p == 0.9);
    assert_int_equal(s->top_k, 5);
    assert_int_equal(s->max_tokens, 16);
    assert_int_equal(s->n_stops, 2);
    assert_string_equal(s->stops[1], "END");
    assert_int_equal(s->repeats, 3);
    assert_int_equal(s->reduce, WHET_EVAL_REDUCE_MAJORITY);
    assert_true(s->gate.min_pass_rate == 0.9 && s->gate.max_drop == 0.02 && s->gate.alpha == 0.01);
    assert_true(s->gate.max_ppl_increase == 0.05);
    assert_string_equal(s->gate.must_pass_tag, "must");
    assert_int_equal(s->n_cases, 4);
    const whet_eval_case *g = &s->cases[0];
    assert_int_equal(g->line, 4);
    assert_int_equal(g->kind, WHET_EVAL_GEN);
    assert_int_equal(g->n_tags, 2);
    assert_string_equal(g->tags[0], "critical");
    assert_int_equal(g->max_tokens, 4);
    assert_true(g->threshold == 0.5);
    assert_int_equal(g->asserts[0].type, WHET_ASSERT_CONTAINS);
    assert_true(g->asserts[0].negate);
    assert_true(g->asserts[0].weight == 2);
    assert_int_equal(strncmp(g->line_text, "{\"id\":\"g\"", 9), 0);
    const whet_eval_case *m = &s->cases[1];
    assert_int_equal(m->line, 6);
    assert_int_equal(m->n_messages, 2);
    assert_string_equal(m->messages[1].role, "user");
    assert_int_equal(m->max_tokens, 16);
    const whet_eval_case *c = &s->cases[2];
    assert_int_equal(c->kind, WHET_EVAL_CHOICE);
    assert_int_equal(c->n_choices, 2);
    assert_string_equal(c->choices[0], " Paris");
    assert_int_equal(c->gold, 0);
    assert_int_equal(s->cases[3].kind, WHET_EVAL_PPL);
    assert_string_equal(s->cases[3].text, "Some text.");
    whet_eval_suite_free(s);

    /* defaults */
    s = parse_ok(HEADER "{\"id\":\"a\",\"prompt\":\"\",\"assert\":[{\"type\":\"equals\",\"value\":\"\"}]}");
    assert_true(s->temperature == 0 && s->top_p == 1 && s->repeats == 1 && s->reduce == WHET_EVAL_REDUCE_MEAN);
    assert_true(s->cases[0].threshold == 1);
    assert_true(isnan(s->gate.min_pass_rate) && isnan(s->gate.max_drop) && isnan(s->gate.max_ppl_increase));
    assert_string_equal(s->gate.must_pass_tag, "critical");
    assert_true(s->gate.alpha == 0.05);
    assert_string_equal(s->dir, "dir");
    whet_eval_suite_free(s);
}

static void errors_name_line_and_column(void **state)
{
    (void)state;
    /* a JSON error on line 3 of the file is reported on line 3 */
    expect_error(HEADER "\n{\"id\":\"a\",}", "s.jsonl: line 3, column 11 (byte 25): expected", NULL);
    expect_error(HEADER "{\"id\":\"a\",\"prompt\":\"p\",\"asert\":[]}",
                 "s.jsonl: line 2, column 24 (byte 37): unknown key \"asert\" in a case", "assert");
    expect_error("", "s.jsonl: expected the suite header", NULL);
    expect_error("# only a comment\n", "s.jsonl: expected the suite header", NULL);
    expect_error("{\"id\":\"a\"}", "s.jsonl: line 1, column 1 (byte 0): expected the suite header", NULL);
    expect_error(HEADER, "s.jsonl: expected cases after the suite header", NULL);
    expect_error("{\"suite\":\"s\",\"temprature\":0}\n", "s.jsonl: line 1, column 14 (byte 13): unknown key "
                 "\"temprature\" in the suite header", NULL);
    expect_error("{\"suite\":\"s\",\"reduce\":\"median\"}\n", "s.jsonl: line 1, column 23 (byte 22): expected a reducer",
                 NULL);
    expect_error("{\"suite\":\"s\",\"gate\":{\"min_pass_rate\":2}}\n",
                 "s.jsonl: line 1, column 38 (byte 37): expected a number from 0 to 1", NULL);
    expect_error(HEADER "{\"id\":\"a\",\"prompt\":\"p\",\"assert\":[{\"type\":\"equals\",\"value\":\"x\"}]}\n"
                 "{\"id\":\"a\",\"prompt\":\"q\",\"assert\":[{\"type\":\"equals\",\"value\":\"x\"}]}\n",
                 "s.jsonl: line 3: the id \"a\" is already the id of the case on line 2", NULL);
    expect_error(HEADER "{\"id\":\"a\",\"prompt\":\"p\",\"assert\":[{\"type\":\"equal\",\"value\":\"x\"}]}",
                 "s.jsonl: line 2, column 42 (byte 55): expected an assertion type", NULL);
    expect_error(HEADER "{\"id\":\"a\",\"prompt\":\"p\",\"assert\":[{\"type\":\"regex\",\"value\":\"(a\"}]}",
                 "s.jsonl: line 2, column 58 (byte 71): expected a PCRE2 regular expression", NULL);
    expect_error(HEADER "{\"id\":\"a\",\"prompt\":\"p\",\"assert\":[{\"type\":\"contains\"}]}",
                 "s.jsonl: line 2, column 34 (byte 47): expected key \"value\"", NULL);
    expect_error(HEADER "{\"id\":\"a\",\"prompt\":\"p\",\"assert\":[{\"type\":\"json_valid\",\"value\":1}]}",
                 "s.jsonl: line 2, column 63 (byte 76): expected no \"value\" key", NULL);
    expect_error(HEADER "{\"id\":\"a\",\"prompt\":\"p\",\"assert\":[{\"type\":\"contains\",\"value\":\"x\",\"max\":3}]}",
                 "s.jsonl: line 2, column ", "no \"max\" key in a contains assertion");
    expect_error(HEADER "{\"id\":\"a\",\"prompt\":\"p\",\"assert\":[]}", "s.jsonl: line 2, column 33 (byte 46): "
                 "expected a non-empty array of assertions", NULL);
    expect_error(HEADER "{\"id\":\"a\",\"assert\":[{\"type\":\"json_valid\"}]}", "s.jsonl: line 2, column 1 (byte 14): "
                 "expected a gen case with exactly one of", NULL);
    expect_error(HEADER "{\"id\":\"a\",\"kind\":\"choice\",\"prompt\":\"p\",\"choices\":[\"x\",\"y\"],\"gold\":2}",
                 "s.jsonl: line 2, column 67 (byte 80): expected an integer in [0, 1]", NULL);
    expect_error(HEADER "{\"id\":\"a\",\"kind\":\"choice\",\"prompt\":\"p\",\"choices\":[\"x\"],\"gold\":0}",
                 "s.jsonl: line 2, column 50 (byte 63): expected an array of at least 2 strings", NULL);
    expect_error(HEADER "{\"id\":\"a\",\"kind\":\"ppl\",\"text\":\"t\",\"choices\":[]}",
                 "s.jsonl: line 2, column ", "no \"choices\" key in a ppl case");
    expect_error(HEADER "{\"id\":\"a\",\"kind\":\"gen\",\"messages\":[{\"role\":\"user\"}],\"assert\":[{\"type\":\"json_valid\"}]}",
                 "s.jsonl: line 2, column ", "content");
    expect_error(HEADER "{\"id\":\"a\",\"kind\":\"ppl\",\"text\":\"t\"}\n[1]\n",
                 "s.jsonl: line 3, column 1 (byte 49): expected a case object", NULL);
    expect_error(HEADER "{\"id\":\"a\",\"prompt\":\"p\",\"assert\":[{\"type\":\"contains\",\"value\":\"x\",\"weight\":0}]}",
                 "s.jsonl: line 2, column ", "weights");
    assert_int_equal(mismatches, 0);
}

static void prompt_hash_follows_the_input(void **state)
{
    (void)state;
    whet_eval_suite *s = parse_ok(
        HEADER "{\"id\":\"a\",\"prompt\":\"Q\",\"assert\":[{\"type\":\"equals\",\"value\":\"x\"}]}\n"
               "{\"id\":\"b\",\"prompt\":\"Q\",\"tags\":[\"t\"],\"assert\":[{\"type\":\"contains\",\"value\":\"y\"}]}\n"
               "{\"id\":\"c\",\"prompt\":\"Q \",\"assert\":[{\"type\":\"equals\",\"value\":\"x\"}]}\n"
               "{\"id\":\"d\",\"kind\":\"choice\",\"prompt\":\"Q\",\"choices\":[\"a\",\"b\"],\"gold\":0}\n"
               "{\"id\":\"e\",\"kind\":\"choice\",\"prompt\":\"Q\",\"choices\":[\"a\",\"c\"],\"gold\":0}\n");
    assert_int_equal(strlen(s->cases[0].prompt_hash), 32);
    assert_string_equal(s->cases[0].prompt_hash, s->cases[1].prompt_hash); /* assertions and tags do not count */
    assert_string_not_equal(s->cases[0].prompt_hash, s->cases[2].prompt_hash);
    assert_string_not_equal(s->cases[0].prompt_hash, s->cases[3].prompt_hash); /* kind counts */
    assert_string_not_equal(s->cases[3].prompt_hash, s->cases[4].prompt_hash);
    whet_eval_suite_free(s);
}

/* Every datasets/<task>/eval*.jsonl the project ships reads cleanly. */
static void shipped_suites_load(void **state)
{
    (void)state;
    DIR *d = opendir("datasets");
    if (!d)
        skip();
    struct dirent *task;
    size_t loaded = 0;
    while ((task = readdir(d))) {
        if (task->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof path, "datasets/%s/eval.jsonl", task->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        fclose(f);
        whet_eval_suite *s = NULL;
        whet_err e = {{0}};
        if (whet_eval_suite_load(&s, path, &e) != 0)
            fail_msg("%s", e.msg);
        assert_true(s->n_cases > 0);
        whet_eval_suite_free(s);
        loaded++;
    }
    closedir(d);
    print_message("%zu shipped suites read\n", loaded);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_a_suite),
        cmocka_unit_test(errors_name_line_and_column),
        cmocka_unit_test(prompt_hash_follows_the_input),
        cmocka_unit_test(shipped_suites_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
