/* The eval library as a trainer calls it: suites run on a model already in
 * memory (tests/data/models/llama with a 300-token test tokenizer, each id a
 * text of its own), the same results for 1 and 3 threads, the cache (hits,
 * misses, sampled repeats kept apart), an attached LoRA adapter (new hashes,
 * new outputs, no stale cache hits), stop strings, reducers, choice
 * log-likelihoods against a direct forward pass, and whet_eval_compare with
 * an in-memory baseline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "eval/eval.h"
#include "model/lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* tests/cli/models.inc's tokenizer: 1 <s>, 2 </s>, 3 <|im_start|>,
 * 4 <|im_end|> (special), 5 "user\n", 6 "assistant\n", 7 "\n", 8 "system\n",
 * every other id i "<ti>"; no BOS/EOS added. */
static whet_tokenizer *test_tokenizer(void)
{
    size_t cap = 1 << 16, n = 0;
    char *json = malloc(cap), *vocab = malloc(cap);
    size_t nv = 0;
    n += (size_t)snprintf(json + n, cap - n, "{\"version\":\"1.0\",\"added_tokens\":[");
    for (int i = 0; i < 300; i++) {
        char t[32];
        const char *special = "false";
        snprintf(t, sizeof t, "<t%d>", i);
        if (i == 1) strcpy(t, "<s>"), special = "true";
        if (i == 2) strcpy(t, "</s>"), special = "true";
        if (i == 3) strcpy(t, "<|im_start|>"), special = "true";
        if (i == 4) strcpy(t, "<|im_end|>"), special = "true";
        if (i == 5) strcpy(t, "user\\n");
        if (i == 6) strcpy(t, "assistant\\n");
        if (i == 7) strcpy(t, "\\n");
        if (i == 8) strcpy(t, "system\\n");
        n += (size_t)snprintf(json + n, cap - n,
                              "%s{\"id\":%d,\"content\":\"%s\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
                              "\"normalized\":false,\"special\":%s}", i ? "," : "", i, t, special);
        nv += (size_t)snprintf(vocab + nv, cap - nv, "%s\"%s\":%d", i ? "," : "", t, i);
    }
    n += (size_t)snprintf(json + n, cap - n,
                          "],\"normalizer\":null,\"pre_tokenizer\":null,\"post_processor\":null,\"decoder\":null,"
                          "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"fuse_unk\":false,"
                          "\"byte_fallback\":false,\"vocab\":{%s},\"merges\":[]}}", vocab);
    whet_err e = {{0}};
    whet_tokenizer *t = whet_tokenizer_parse(json, n, "test tokenizer", &e);
    if (!t)
        fail_msg("%s", e.msg);
    free(json);
    free(vocab);
    return t;
}

typedef struct fixture {
    whet_compute *c1, *c3;
    whet_model *m;
    whet_tokenizer *tok;
    whet_chat_template tmpl;
    char cache[64];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    const whet_kernels *k = whet_kernels_from_env();
    f->c1 = whet_compute_create(k, 1);
    f->c3 = whet_compute_create(k, 3);
    whet_err e = {{0}};
    if (whet_model_load(&f->m, "tests/data/models/llama", f->c1, &e) != 0)
        fail_msg("%s", e.msg);
    f->tok = test_tokenizer();
    if (whet_chat_template_by_name(&f->tmpl, "chatml", &e) != 0)
        fail_msg("%s", e.msg);
    snprintf(f->cache, sizeof f->cache, "/tmp/whet-test-eval-run.%d", (int)getpid());
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->cache);
    if (system(cmd) != 0)
        return -1;
    whet_tokenizer_free(f->tok);
    whet_model_free(f->m);
    whet_compute_destroy(f->c1);
    whet_compute_destroy(f->c3);
    free(f);
    return 0;
}

static whet_eval_suite *suite(const char *text)
{
    whet_eval_suite *s = NULL;
    whet_err e = {{0}};
    if (whet_eval_suite_parse(&s, text, strlen(text), "tests/data/eval/inline.jsonl", &e) != 0)
        fail_msg("%s", e.msg);
    return s;
}

static whet_eval_results *run(fixture *f, whet_eval_suite *s, const char *cache)
{
    whet_eval_env env = {.model = f->m, .tok = f->tok, .tmpl = &f->tmpl, .model_label = "llama",
                         .cache_dir = cache};
    whet_eval_results *r = NULL;
    whet_err e = {{0}};
    if (whet_eval_run(&env, &s, 1, &r, &e) != 0)
        fail_msg("%s", e.msg);
    if (whet_eval_compare(r, NULL, &e) != 0)
        fail_msg("%s", e.msg);
    return r;
}

static char *json_of(const whet_eval_results *r)
{
    char *text = NULL;
    size_t len;
    whet_err e = {{0}};
    if (whet_eval_results_json(r, &text, &len, &e) != 0)
        fail_msg("%s", e.msg);
    return text;
}

static const char *SUITE =
    "{\"suite\":\"lib\",\"seed\":11,\"max_tokens\":6}\n"
    "{\"id\":\"g\",\"tags\":[\"t\"],\"prompt\":\"<t9><t10>\",\"assert\":[{\"type\":\"regex\",\"value\":\"^<t\"}]}\n"
    "{\"id\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":\"<t12>\"}],\"assert\":[{\"type\":\"not_contains\",\"value\":\"zzz\"}]}\n"
    "{\"id\":\"c\",\"kind\":\"choice\",\"prompt\":\"<t20><t21>\",\"choices\":[\"<t30>\",\"<t31><t32>\",\"<t40>\"],\"gold\":2}\n"
    "{\"id\":\"p\",\"kind\":\"ppl\",\"text\":\"<t50><t51><t52><t53>\"}\n";

static void same_results_for_any_thread_count(void **state)
{
    fixture *f = *state;
    whet_eval_suite *s = suite(SUITE);
    f->m->compute = f->c1;
    whet_eval_results *a = run(f, s, NULL);
    f->m->compute = f->c3;
    whet_eval_results *b = run(f, s, NULL);
    f->m->compute = f->c1;
    char *ja = json_of(a), *jb = json_of(b);
    assert_string_equal(ja, jb);
    for (size_t i = 0; i < a->n_cases; i++) {
        assert_true(a->cases[i].score == b->cases[i].score);
        if (a->cases[i].kind == WHET_EVAL_GEN)
            assert_string_equal(a->cases[i].samples[0].output, b->cases[i].samples[0].output);
    }
    assert_true(a->cases[3].nll == b->cases[3].nll);
    free(ja);
    free(jb);
    whet_eval_results_free(a);
    whet_eval_results_free(b);
    whet_eval_suite_free(s);
}

/* The choice log-likelihood is log p(choice tokens | prompt tokens) from one
 * forward pass over the concatenation; recomputed here token by token from
 * whet_model_logits, a different code path. */
static void choice_loglik_matches_direct_computation(void **state)
{
    fixture *f = *state;
    whet_eval_suite *s = suite(SUITE);
    whet_eval_results *r = run(f, s, NULL);
    const whet_eval_case_result *c = &r->cases[2];
    assert_int_equal(c->n_choices, 3);
    int32_t ids[4] = {20, 21, 31, 32};
    whet_err e = {{0}};
    whet_acts *a = whet_acts_create(f->m, 1, 4, 0, &e);
    assert_non_null(a);
    assert_int_equal(whet_model_forward(f->m, a, ids, 1, 4, &e), 0);
    size_t V = f->m->cfg.vocab, rows[2] = {1, 2};
    float *logits = malloc(2 * V * sizeof *logits);
    assert_int_equal(whet_model_logits(f->m, a, rows, 2, logits, &e), 0);
    double ll = 0;
    for (size_t r2 = 0; r2 < 2; r2++) {
        const float *l = logits + r2 * V;
        double mx = l[0], sum = 0;
        for (size_t v = 1; v < V; v++)
            mx = l[v] > mx ? l[v] : mx;
        for (size_t v = 0; v < V; v++)
            sum += exp((double)l[v] - mx);
        ll += (double)l[ids[r2 + 2]] - mx - log(sum);
    }
    if (fabs(ll - c->ll[1]) > 1e-4)
        fail_msg("choice 1: ll %.9g, direct %.9g", c->ll[1], ll);
    /* acc and acc_norm follow the log-likelihoods and byte lengths */
    size_t best = 0, best_norm = 0;
    for (size_t i = 1; i < 3; i++) {
        best = c->ll[i] > c->ll[best] ? i : best;
        best_norm = c->ll[i] / (double)c->choice_bytes[i] > c->ll[best_norm] / (double)c->choice_bytes[best_norm]
                        ? i : best_norm;
    }
    assert_int_equal(c->pred, best);
    assert_int_equal(c->pred_norm, best_norm);
    assert_int_equal(c->pass, best == 2);
    assert_int_equal(c->choice_bytes[1], 10);
    free(logits);
    whet_acts_free(a);
    whet_eval_results_free(r);
    whet_eval_suite_free(s);
}

static void cache_hits_misses_and_sampled_repeats(void **state)
{
    fixture *f = *state;
    whet_eval_suite *s = suite(SUITE);
    whet_eval_results *a = run(f, s, f->cache);
    assert_int_equal(a->cache_hits, 0);
    assert_int_equal(a->cache_misses, 4);
    whet_eval_results *b = run(f, s, f->cache);
    assert_int_equal(b->cache_hits, 4);
    assert_int_equal(b->cache_misses, 0);
    char *ja = json_of(a), *jb = json_of(b);
    assert_string_equal(ja, jb);
    free(ja);
    free(jb);
    whet_eval_results_free(a);
    whet_eval_results_free(b);
    whet_eval_suite_free(s);

    /* sampled repeats: each its own seed, so its own cache entry and (almost surely) its own text */
    s = suite("{\"suite\":\"sampled\",\"seed\":5,\"temperature\":1.0,\"max_tokens\":12,\"repeats\":4,\"reduce\":\"all\"}\n"
              "{\"id\":\"g\",\"prompt\":\"<t9>\",\"assert\":[{\"type\":\"contains\",\"value\":\"<t\"}]}\n");
    a = run(f, s, f->cache);
    assert_int_equal(a->cache_misses, 4);
    const whet_eval_case_result *c = &a->cases[0];
    assert_int_equal(c->n_samples, 4);
    size_t distinct = 0;
    for (size_t i = 0; i < 4; i++) {
        int seen = 0;
        for (size_t j = 0; j < i; j++)
            seen |= strcmp(c->samples[i].output, c->samples[j].output) == 0;
        distinct += !seen;
    }
    assert_true(distinct >= 3);
    b = run(f, s, f->cache);
    assert_int_equal(b->cache_hits, 4);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(a->cases[0].samples[i].output, b->cases[0].samples[i].output);
    whet_eval_results_free(b);
    whet_eval_suite_free(s);
    /* every reducer over the same 4 repeats, with assertions that exactly the
     * first 2, then the first 3, of them pass (their texts are "<tN>" runs: no
     * regex metacharacters) */
    static const char *const reducers[] = {"all", "any", "majority", "mean"};
    size_t mixed[2] = {0, 0};
    for (int twice = 0; twice < 2; twice++)
        for (size_t k = 0; k < 4; k++) {
            char text[2048];
            snprintf(text, sizeof text,
                     "{\"suite\":\"sampled\",\"seed\":5,\"temperature\":1.0,\"max_tokens\":12,\"repeats\":4,"
                     "\"reduce\":\"%s\",\"threshold\":%s}\n"
                     "{\"id\":\"g\",\"prompt\":\"<t9>\",\"assert\":[{\"type\":\"regex\",\"value\":\"^(%s|%s%s%s)$\"}]}\n",
                     reducers[k], twice ? "0.5" : "1", c->samples[0].output, c->samples[1].output, twice ? "|" : "",
                     twice ? c->samples[2].output : "");
            s = suite(text);
            b = run(f, s, f->cache);
            assert_int_equal(b->cache_hits, 4); /* the texts do not depend on the reducer */
            const whet_eval_case_result *cb = &b->cases[0];
            size_t passes = 0;
            double mean = 0;
            for (size_t i = 0; i < 4; i++) {
                passes += (size_t)cb->samples[i].pass;
                mean += cb->samples[i].score / 4;
            }
            int want = k == 0 ? passes == 4 : k == 1 ? passes > 0 : k == 2 ? passes > 2 : mean >= (twice ? 0.5 : 1);
            assert_int_equal(cb->pass, want);
            assert_true(cb->score == mean);
            mixed[twice] = passes;
            whet_eval_results_free(b);
            whet_eval_suite_free(s);
        }
    /* the reducers were told apart: neither none nor all of the repeats passed */
    assert_int_equal(mixed[0], 2);
    assert_int_equal(mixed[1], 3);
    whet_eval_results_free(a);
}

static void stop_strings_cut_the_output(void **state)
{
    fixture *f = *state;
    whet_eval_suite *s = suite(SUITE);
    whet_eval_results *a = run(f, s, NULL);
    const char *full = a->cases[0].samples[0].output;
    /* stop at the text of the third generated token: the output is the first two */
    const char *third = full;
    for (int k = 0; k < 2; k++)
        third = strchr(third + 1, '<');
    assert_non_null(third);
    char stop[16] = {0};
    memcpy(stop, third, (size_t)(strchr(third, '>') - third + 1));
    char text[512];
    snprintf(text, sizeof text,
             "{\"suite\":\"lib\",\"seed\":11,\"max_tokens\":6,\"stop\":[\"%s\"]}\n"
             "{\"id\":\"g\",\"prompt\":\"<t9><t10>\",\"assert\":[{\"type\":\"regex\",\"value\":\"^<t\"}]}\n", stop);
    whet_eval_suite *s2 = suite(text);
    whet_eval_results *b = run(f, s2, NULL);
    const whet_eval_sample *smp = &b->cases[0].samples[0];
    assert_string_equal(smp->stop_reason, "stop");
    assert_int_equal(smp->output_len, (size_t)(strstr(full, stop) - full));
    assert_int_equal(strncmp(smp->output, full, smp->output_len), 0);
    whet_eval_results_free(a);
    whet_eval_results_free(b);
    whet_eval_suite_free(s);
    whet_eval_suite_free(s2);
}

static void adapter_changes_hashes_and_outputs(void **state)
{
    fixture *f = *state;
    whet_eval_suite *s = suite(SUITE);
    whet_eval_results *base = run(f, s, f->cache);
    assert_string_equal(base->adapter_hash, "");
    whet_lora_options opt = {.rank = 4, .alpha = 8, .targets = (1u << WHET_LIN_Q) | (1u << WHET_LIN_V) |
                                                               (1u << WHET_LIN_DOWN), .seed = 3};
    whet_err e = {{0}};
    whet_lora *lora = whet_lora_create(f->m, &opt, &e);
    if (!lora)
        fail_msg("%s", e.msg);
    lora->training = 1; /* as the trainer leaves it: the eval must run without dropout anyway */
    lora->opt.dropout = 0.5f;
    /* B starts at zero: give A and B values so that the adapter changes the outputs */
    for (size_t i = 0; i < lora->floats; i++)
        lora->memory[i] = 0.05f * (float)((int)(i * 2654435761u % 17) - 8);
    whet_eval_results *tuned = run(f, s, f->cache);
    assert_int_equal(strlen(tuned->adapter_hash), 32);
    assert_string_equal(tuned->model_hash, base->model_hash);
    assert_int_equal(tuned->cache_hits, 0); /* nothing of the base model's is reused */
    assert_true(tuned->cases[3].nll != base->cases[3].nll);
    assert_int_equal(lora->training, 1); /* restored after the run */
    whet_eval_results *tuned2 = run(f, s, NULL); /* no dropout: the same numbers without the cache */
    assert_true(tuned2->cases[3].nll == tuned->cases[3].nll);
    whet_eval_results_free(tuned2);

    /* the trainer's use: the first run is the baseline of the next */
    assert_int_equal(whet_eval_compare(tuned, base, &e), 0);
    const whet_eval_comparison *cmp = &tuned->suites[0].cmp;
    assert_true(cmp->present);
    assert_int_equal(cmp->joined, 4);
    assert_true(!isnan(cmp->ppl_increase));
    assert_true(fabs(cmp->ppl_increase - (tuned->suites[0].ppl / base->suites[0].ppl - 1)) < 1e-12);
    whet_lora_free(f->m, lora);
    whet_eval_results *again = run(f, s, f->cache);
    assert_string_equal(again->adapter_hash, "");
    assert_int_equal(again->cache_hits, 4);
    whet_eval_results_free(again);
    whet_eval_results_free(base);
    whet_eval_results_free(tuned);
    whet_eval_suite_free(s);
}

/* Written, read back as a baseline, compared with itself: no flips. */
static void reports_round_trip_as_baseline(void **state)
{
    fixture *f = *state;
    whet_eval_suite *s = suite(SUITE);
    whet_eval_results *r = run(f, s, NULL);
    char dir[96];
    snprintf(dir, sizeof dir, "%s/reports", f->cache);
    whet_err e = {{0}};
    assert_int_equal(whet_eval_write_reports(r, dir, &e), 0);
    whet_eval_results *base = NULL;
    if (whet_eval_results_load(&base, dir, &e) != 0)
        fail_msg("%s", e.msg);
    assert_int_equal(base->n_cases, 4);
    assert_true(base->suites[0].ppl == r->suites[0].ppl);
    assert_true(base->suites[0].pass.rate == r->suites[0].pass.rate);
    assert_int_equal(whet_eval_compare(r, base, &e), 0);
    assert_int_equal(r->suites[0].cmp.n_flips, 0);
    assert_true(r->suites[0].cmp.mcnemar_p == 1);
    assert_true(r->suites[0].cmp.ppl_increase == 0);
    assert_false(r->gate_failed);

    /* the summary a trainer puts in metrics.jsonl */
    whet_json_writer w;
    whet_json_writer_init(&w, 0);
    whet_eval_write_summary(&w, r);
    const char *text;
    size_t len;
    assert_int_equal(whet_json_writer_finish(&w, "summary", &text, &len, &e), 0);
    whet_json_doc *doc = NULL;
    if (whet_json_parse(&doc, text, len, "summary", NULL, &e) != 0)
        fail_msg("%s", e.msg);
    const whet_json *root = whet_json_root(doc), *lib = whet_json_get(whet_json_get(root, "suites"), "lib");
    assert_non_null(lib);
    assert_true(whet_json_get(root, "gate_passed")->type == WHET_JSON_TRUE);
    assert_int_equal(whet_json_get(root, "cases")->u.number.integer, 3);
    assert_true(whet_json_get(lib, "perplexity")->u.number.value == r->suites[0].ppl);
    assert_int_equal(whet_json_get(lib, "pass_to_fail")->u.number.integer, 0);
    whet_json_free(doc);
    whet_json_writer_free(&w);
    whet_eval_results_free(base);
    whet_eval_results_free(r);
    whet_eval_suite_free(s);
}

/* The trainer's session: baseline, checkpoints gated against it, the best
 * passing checkpoint remembered, reports in each checkpoint directory. */
static void training_session(void **state)
{
    fixture *f = *state;
    whet_eval_suite *s = suite("{\"suite\":\"train\",\"max_tokens\":4,\"gate\":{\"max_ppl_increase\":0.0001}}\n"
                               "{\"id\":\"g\",\"prompt\":\"<t9>\",\"assert\":[{\"type\":\"regex\",\"value\":\"<t\"}]}\n"
                               "{\"id\":\"p\",\"kind\":\"ppl\",\"text\":\"<t50><t51><t52><t53><t54><t55>\"}\n");
    whet_eval_session ses;
    whet_eval_session_init(&ses, &s, 1, f->tok, &f->tmpl, f->cache);
    whet_err e = {{0}};
    char out[128], ck1[160], ck2[160], path[200];
    snprintf(out, sizeof out, "%s/run", f->cache);
    snprintf(ck1, sizeof ck1, "%s/checkpoint-1", out);
    snprintf(ck2, sizeof ck2, "%s/checkpoint-2", out);
    if (whet_eval_session_baseline(&ses, f->m, out, &e) != 0)
        fail_msg("%s", e.msg);
    int passed = -1;
    /* an unchanged model: no rise, passes, the best so far */
    if (whet_eval_session_checkpoint(&ses, f->m, 1, ck1, &passed, &e) != 0)
        fail_msg("%s", e.msg);
    assert_int_equal(passed, 1);
    assert_true(ses.have_best && ses.best_step == 1);
    assert_string_equal(ses.best_dir, ck1);
    snprintf(path, sizeof path, "%s/eval/results.json", ck1);
    assert_int_equal(access(path, R_OK), 0);
    snprintf(path, sizeof path, "%s/eval-base/samples.jsonl", out);
    assert_int_equal(access(path, R_OK), 0);
    /* a changed model: the gate follows its perplexity; the best stays checkpoint 1 (a tie goes to the earlier) */
    whet_lora_options opt = {.rank = 2, .alpha = 4, .targets = 1u << WHET_LIN_V, .seed = 9};
    whet_lora *lora = whet_lora_create(f->m, &opt, &e);
    assert_non_null(lora);
    for (size_t i = 0; i < lora->floats; i++)
        lora->memory[i] = 0.1f * (float)((int)(i * 40503u % 13) - 6);
    if (whet_eval_session_checkpoint(&ses, f->m, 2, ck2, &passed, &e) != 0)
        fail_msg("%s", e.msg);
    double base_ppl = ses.baseline->suites[0].ppl, now = ses.last->suites[0].ppl;
    assert_true(now != base_ppl);
    assert_int_equal(passed, !(now / base_ppl - 1 > 0.0001));
    assert_int_equal(ses.best_step, 1);
    assert_int_equal(ses.last->suites[0].n_gate_reasons, (size_t)!passed);
    whet_lora_free(f->m, lora);
    whet_eval_session_free(&ses);
    whet_eval_suite_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(same_results_for_any_thread_count),
        cmocka_unit_test(choice_loglik_matches_direct_computation),
        cmocka_unit_test(cache_hits_misses_and_sampled_repeats),
        cmocka_unit_test(stop_strings_cut_the_output),
        cmocka_unit_test(adapter_changes_hashes_and_outputs),
        cmocka_unit_test(reports_round_trip_as_baseline),
        cmocka_unit_test(training_session),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
