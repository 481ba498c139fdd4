/* What a run leaves behind: results.json (aggregates, configuration, content
 * hashes, comparison, gate), samples.jsonl (every case: input hash, outputs,
 * each assertion's score), report.md, report.html (the same with plots as
 * inline SVG) and JUnit XML. Nothing here depends on timing, thread count or
 * the cache, so a run repeated gives the same files byte for byte.
 * whet_eval_results_load reads samples.jsonl back as a baseline. */
#include "eval/eval_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESULTS_FORMAT "whet-eval-results-1"
#ifndef WHET_VERSION
#define WHET_VERSION "unknown"
#endif

static void write_num(whet_json_writer *w, double v)
{
    if (isnan(v))
        whet_json_write_null(w);
    else
        whet_json_write_double(w, v);
}

static void write_rate(whet_json_writer *w, const whet_eval_rate *r)
{
    whet_json_begin_object(w);
    whet_json_key(w, "n");
    whet_json_write_int(w, (int64_t)r->n);
    whet_json_key(w, "passed");
    whet_json_write_int(w, (int64_t)r->passed);
    whet_json_key(w, "rate");
    write_num(w, r->rate);
    whet_json_key(w, "wilson95");
    whet_json_begin_array(w);
    write_num(w, r->lo);
    write_num(w, r->hi);
    whet_json_end_array(w);
    whet_json_end_object(w);
}

static void write_ids(whet_json_writer *w, const whet_eval_results *r, const whet_eval_comparison *c, int to_fail)
{
    whet_json_begin_array(w);
    for (size_t i = 0; i < c->n_flips; i++)
        if ((i < c->pass_to_fail) == to_fail)
            whet_json_write_string(w, r->cases[c->flips[i].case_index].id);
    whet_json_end_array(w);
}

static void write_suite(whet_json_writer *w, const whet_eval_results *r, const whet_eval_suite_result *s)
{
    whet_json_begin_object(w);
    whet_json_key(w, "name");
    whet_json_write_string(w, s->name);
    whet_json_key(w, "file");
    whet_json_write_string(w, s->path);
    whet_json_key(w, "config");
    whet_json_begin_object(w);
    whet_json_key(w, "seed");
    whet_json_write_int(w, (int64_t)s->seed);
    whet_json_key(w, "temperature");
    whet_json_write_double(w, s->temperature);
    whet_json_key(w, "top_k");
    whet_json_write_int(w, (int64_t)s->top_k);
    whet_json_key(w, "top_p");
    whet_json_write_double(w, s->top_p);
    whet_json_key(w, "max_tokens");
    whet_json_write_int(w, (int64_t)s->max_tokens);
    whet_json_key(w, "repeats");
    whet_json_write_int(w, (int64_t)s->repeats);
    whet_json_key(w, "reduce");
    whet_json_write_string(w, whet_eval_reduce_name(s->reduce));
    whet_json_key(w, "gate");
    whet_json_begin_object(w);
    whet_json_key(w, "min_pass_rate");
    write_num(w, s->gate.min_pass_rate);
    whet_json_key(w, "max_drop");
    write_num(w, s->gate.max_drop);
    whet_json_key(w, "alpha");
    write_num(w, s->gate.alpha);
    whet_json_key(w, "must_pass_tag");
    whet_json_write_string(w, s->gate.must_pass_tag);
    whet_json_key(w, "max_ppl_increase");
    write_num(w, s->gate.max_ppl_increase);
    whet_json_end_object(w);
    whet_json_end_object(w);
    whet_json_key(w, "cases");
    whet_json_write_int(w, (int64_t)s->n_cases);
    whet_json_key(w, "pass_rate");
    write_rate(w, &s->pass);
    whet_json_key(w, "tags");
    whet_json_begin_object(w);
    for (size_t t = 0; t < s->n_tags; t++) {
        whet_json_key(w, s->tags[t].tag);
        if (s->cmp.present) {
            /* the rate, and over the joined cases the baseline's and the current */
            whet_json_begin_object(w);
            whet_json_key(w, "all");
            write_rate(w, &s->tags[t].r);
            whet_json_key(w, "joined_baseline");
            write_rate(w, &s->tags[t].base);
            whet_json_key(w, "joined_current");
            write_rate(w, &s->tags[t].joined);
            whet_json_end_object(w);
        } else {
            write_rate(w, &s->tags[t].r);
        }
    }
    whet_json_end_object(w);
    whet_json_key(w, "choice");
    if (s->n_choice) {
        whet_json_begin_object(w);
        whet_json_key(w, "n");
        whet_json_write_int(w, (int64_t)s->n_choice);
        whet_json_key(w, "acc");
        write_num(w, s->acc);
        whet_json_key(w, "acc_norm");
        write_num(w, s->acc_norm);
        whet_json_end_object(w);
    } else {
        whet_json_write_null(w);
    }
    whet_json_key(w, "ppl");
    if (s->ppl_cases) {
        whet_json_begin_object(w);
        whet_json_key(w, "cases");
        whet_json_write_int(w, (int64_t)s->ppl_cases);
        whet_json_key(w, "tokens");
        whet_json_write_int(w, (int64_t)s->ppl_tokens);
        whet_json_key(w, "bytes");
        whet_json_write_int(w, (int64_t)s->ppl_bytes);
        whet_json_key(w, "nll");
        write_num(w, s->ppl_nll);
        whet_json_key(w, "perplexity");
        write_num(w, s->ppl);
        whet_json_key(w, "bits_per_byte");
        write_num(w, s->bits_per_byte);
        whet_json_end_object(w);
    } else {
        whet_json_write_null(w);
    }
    whet_json_key(w, "comparison");
    const whet_eval_comparison *c = &s->cmp;
    if (c->present) {
        whet_json_begin_object(w);
        whet_json_key(w, "joined");
        whet_json_write_int(w, (int64_t)c->joined);
        whet_json_key(w, "only_current");
        whet_json_write_int(w, (int64_t)c->only_current);
        whet_json_key(w, "only_baseline");
        whet_json_write_int(w, (int64_t)c->only_baseline);
        whet_json_key(w, "baseline_pass_rate");
        write_num(w, c->base_rate);
        whet_json_key(w, "pass_rate");
        write_num(w, c->cur_rate);
        whet_json_key(w, "drop");
        write_num(w, c->drop);
        whet_json_key(w, "pass_to_fail");
        write_ids(w, r, c, 1);
        whet_json_key(w, "fail_to_pass");
        write_ids(w, r, c, 0);
        whet_json_key(w, "mcnemar_p");
        write_num(w, c->mcnemar_p);
        whet_json_key(w, "score_diff");
        whet_json_begin_object(w);
        whet_json_key(w, "mean");
        write_num(w, c->diff_mean);
        whet_json_key(w, "bootstrap95");
        whet_json_begin_array(w);
        write_num(w, c->diff_lo);
        write_num(w, c->diff_hi);
        whet_json_end_array(w);
        whet_json_end_object(w);
        whet_json_key(w, "baseline_perplexity");
        write_num(w, c->base_ppl);
        whet_json_key(w, "perplexity");
        write_num(w, c->cur_ppl);
        whet_json_key(w, "ppl_increase");
        write_num(w, c->ppl_increase);
        whet_json_end_object(w);
    } else {
        whet_json_write_null(w);
    }
    whet_json_key(w, "gate");
    whet_json_begin_object(w);
    whet_json_key(w, "passed");
    whet_json_write_bool(w, s->n_gate_reasons == 0);
    whet_json_key(w, "failures");
    whet_json_begin_array(w);
    for (size_t g = 0; g < s->n_gate_reasons; g++)
        whet_json_write_string(w, s->gate_reasons[g]);
    whet_json_end_array(w);
    whet_json_end_object(w);
    whet_json_end_object(w);
}

static void write_results(whet_json_writer *w, const whet_eval_results *r)
{
    whet_json_begin_object(w);
    whet_json_key(w, "format");
    whet_json_write_string(w, RESULTS_FORMAT);
    whet_json_key(w, "whet_version");
    whet_json_write_string(w, WHET_VERSION);
    whet_json_key(w, "model");
    whet_json_write_string(w, r->model);
    whet_json_key(w, "model_hash");
    whet_json_write_string(w, r->model_hash);
    whet_json_key(w, "adapter");
    if (r->adapter)
        whet_json_write_string(w, r->adapter);
    else
        whet_json_write_null(w);
    whet_json_key(w, "adapter_hash");
    if (r->adapter_hash[0])
        whet_json_write_string(w, r->adapter_hash);
    else
        whet_json_write_null(w);
    whet_json_key(w, "baseline");
    if (r->baseline)
        whet_json_write_string(w, r->baseline);
    else
        whet_json_write_null(w);
    whet_json_key(w, "pass_rate");
    write_rate(w, &r->pass);
    whet_json_key(w, "gate");
    whet_json_begin_object(w);
    whet_json_key(w, "passed");
    whet_json_write_bool(w, !r->gate_failed);
    whet_json_key(w, "failures");
    whet_json_begin_array(w);
    for (size_t i = 0; i < r->n_suites; i++)
        for (size_t g = 0; g < r->suites[i].n_gate_reasons; g++) {
            char buf[700];
            snprintf(buf, sizeof buf, "%s: %s", r->suites[i].name, r->suites[i].gate_reasons[g]);
            whet_json_write_string(w, buf);
        }
    whet_json_end_array(w);
    whet_json_end_object(w);
    whet_json_key(w, "suites");
    whet_json_begin_array(w);
    for (size_t i = 0; i < r->n_suites; i++)
        write_suite(w, r, &r->suites[i]);
    whet_json_end_array(w);
    whet_json_end_object(w);
}

void whet_eval_write_summary(whet_json_writer *w, const whet_eval_results *r)
{
    whet_json_begin_object(w);
    whet_json_key(w, "pass_rate");
    write_num(w, r->pass.rate);
    whet_json_key(w, "passed");
    whet_json_write_int(w, (int64_t)r->pass.passed);
    whet_json_key(w, "cases");
    whet_json_write_int(w, (int64_t)r->pass.n);
    whet_json_key(w, "gate_passed");
    whet_json_write_bool(w, !r->gate_failed);
    whet_json_key(w, "gate_failures");
    whet_json_begin_array(w);
    for (size_t i = 0; i < r->n_suites; i++)
        for (size_t g = 0; g < r->suites[i].n_gate_reasons; g++) {
            char buf[700];
            snprintf(buf, sizeof buf, "%s: %s", r->suites[i].name, r->suites[i].gate_reasons[g]);
            whet_json_write_string(w, buf);
        }
    whet_json_end_array(w);
    whet_json_key(w, "suites");
    whet_json_begin_object(w);
    for (size_t i = 0; i < r->n_suites; i++) {
        const whet_eval_suite_result *s = &r->suites[i];
        whet_json_key(w, s->name);
        whet_json_begin_object(w);
        whet_json_key(w, "pass_rate");
        write_num(w, s->pass.rate);
        whet_json_key(w, "acc");
        write_num(w, s->acc);
        whet_json_key(w, "acc_norm");
        write_num(w, s->acc_norm);
        whet_json_key(w, "perplexity");
        write_num(w, s->ppl);
        whet_json_key(w, "bits_per_byte");
        write_num(w, s->bits_per_byte);
        if (s->cmp.present) {
            whet_json_key(w, "pass_to_fail");
            whet_json_write_int(w, (int64_t)s->cmp.pass_to_fail);
            whet_json_key(w, "fail_to_pass");
            whet_json_write_int(w, (int64_t)s->cmp.fail_to_pass);
            whet_json_key(w, "mcnemar_p");
            write_num(w, s->cmp.mcnemar_p);
        }
        whet_json_end_object(w);
    }
    whet_json_end_object(w);
    whet_json_end_object(w);
}

int whet_eval_results_json(const whet_eval_results *r, char **text, size_t *len, whet_err *e)
{
    whet_json_writer w;
    whet_json_writer_init(&w, 2);
    write_results(&w, r);
    const char *t;
    int rc = whet_json_writer_finish(&w, "results.json", &t, len, e);
    if (rc == 0 && !(*text = strndup(t, *len)))
        rc = whet_fail(e, "out of memory");
    whet_json_writer_free(&w);
    return rc;
}

static void write_sample_line(whet_json_writer *w, const whet_eval_case_result *c)
{
    whet_json_begin_object(w);
    whet_json_key(w, "suite");
    whet_json_write_string(w, c->suite);
    whet_json_key(w, "id");
    whet_json_write_string(w, c->id);
    whet_json_key(w, "kind");
    whet_json_write_string(w, whet_eval_kind_name(c->kind));
    whet_json_key(w, "tags");
    whet_json_begin_array(w);
    for (size_t t = 0; t < c->n_tags; t++)
        whet_json_write_string(w, c->tags[t]);
    whet_json_end_array(w);
    whet_json_key(w, "prompt_hash");
    whet_json_write_string(w, c->prompt_hash);
    whet_json_key(w, "prompt");
    whet_json_write_string(w, c->prompt ? c->prompt : "");
    if (c->kind != WHET_EVAL_PPL) {
        whet_json_key(w, "score");
        whet_json_write_double(w, c->score);
        whet_json_key(w, "pass");
        whet_json_write_bool(w, c->pass);
    }
    if (c->kind == WHET_EVAL_GEN) {
        whet_json_key(w, "samples");
        whet_json_begin_array(w);
        for (size_t s = 0; s < c->n_samples; s++) {
            const whet_eval_sample *sm = &c->samples[s];
            whet_json_begin_object(w);
            whet_json_key(w, "output");
            whet_json_write_string_len(w, sm->output, sm->output_len);
            whet_json_key(w, "tokens");
            whet_json_write_int(w, (int64_t)sm->tokens);
            whet_json_key(w, "stop");
            whet_json_write_string(w, sm->stop_reason);
            whet_json_key(w, "score");
            whet_json_write_double(w, sm->score);
            whet_json_key(w, "pass");
            whet_json_write_bool(w, sm->pass);
            whet_json_key(w, "asserts");
            whet_json_begin_array(w);
            for (size_t a = 0; a < sm->n_asserts; a++) {
                whet_json_begin_object(w);
                whet_json_key(w, "type");
                whet_json_write_string(w, sm->asserts[a].name);
                whet_json_key(w, "weight");
                whet_json_write_double(w, sm->asserts[a].weight);
                whet_json_key(w, "score");
                whet_json_write_double(w, sm->asserts[a].score);
                if (sm->asserts[a].detail) {
                    whet_json_key(w, "detail");
                    whet_json_write_string(w, sm->asserts[a].detail);
                }
                whet_json_end_object(w);
            }
            whet_json_end_array(w);
            whet_json_end_object(w);
        }
        whet_json_end_array(w);
    } else if (c->kind == WHET_EVAL_CHOICE) {
        whet_json_key(w, "ll");
        whet_json_begin_array(w);
        for (size_t i = 0; i < c->n_choices; i++)
            whet_json_write_double(w, c->ll[i]);
        whet_json_end_array(w);
        whet_json_key(w, "choice_bytes");
        whet_json_begin_array(w);
        for (size_t i = 0; i < c->n_choices; i++)
            whet_json_write_int(w, (int64_t)c->choice_bytes[i]);
        whet_json_end_array(w);
        whet_json_key(w, "gold");
        whet_json_write_int(w, (int64_t)c->gold);
        whet_json_key(w, "pred");
        whet_json_write_int(w, (int64_t)c->pred);
        whet_json_key(w, "pred_norm");
        whet_json_write_int(w, (int64_t)c->pred_norm);
        whet_json_key(w, "acc_norm");
        whet_json_write_bool(w, c->acc_norm);
    } else {
        whet_json_key(w, "nll");
        whet_json_write_double(w, c->nll);
        whet_json_key(w, "tokens");
        whet_json_write_int(w, (int64_t)c->tokens);
        whet_json_key(w, "bytes");
        whet_json_write_int(w, (int64_t)c->bytes);
        whet_json_key(w, "perplexity");
        write_num(w, c->tokens ? exp(c->nll / (double)c->tokens) : NAN);
        whet_json_key(w, "bits_per_byte");
        write_num(w, c->bytes ? c->nll / log(2.0) / (double)c->bytes : NAN);
    }
    whet_json_end_object(w);
}

/* ---- text helpers ------------------------------------------------------------------- */

static void put_pct(FILE *f, double v)
{
    if (isnan(v))
        fputs("–", f);
    else
        fprintf(f, "%.1f%%", 100 * v);
}

/* A Markdown table cell: pipes escaped, newlines shown as ⏎, HTML's <>&
 * escaped (renderers would take "<t12>" for a tag), at most max bytes (cut at
 * a character boundary). */
static void md_cell(FILE *f, const char *s, size_t len, size_t max)
{
    size_t n = len;
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '|')
            fputs("\\|", f);
        else if (c == '\n')
            fputs("⏎", f);
        else if (c == '\r' || c == '\t')
            fputc(' ', f);
        else if (c == '`')
            fputs("\\`", f);
        else if (c == '<')
            fputs("&lt;", f);
        else if (c == '>')
            fputs("&gt;", f);
        else if (c == '&')
            fputs("&amp;", f);
        else if ((unsigned char)c < 0x20)
            fputc('?', f);
        else
            fputc(c, f);
    }
    if (n < len)
        fputs("…", f);
}

/* XML/HTML text: &<>" escaped; control characters XML 1.0 cannot hold shown as U+FFFD. */
static void xml_text(FILE *f, const char *s, size_t len, size_t max)
{
    size_t n = len;
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '&')
            fputs("&amp;", f);
        else if (c == '<')
            fputs("&lt;", f);
        else if (c == '>')
            fputs("&gt;", f);
        else if (c == '"')
            fputs("&quot;", f);
        else if (c < 0x20 && c != '\n' && c != '\t' && c != '\r')
            fputs("\xEF\xBF\xBD", f);
        else
            fputc(c, f);
    }
    if (n < len)
        fputs("…", f);
}

static void xml_str(FILE *f, const char *s)
{
    xml_text(f, s, strlen(s), SIZE_MAX);
}

static const whet_eval_sample *first_failing(const whet_eval_case_result *c)
{
    for (size_t s = 0; s < c->n_samples; s++)
        if (!c->samples[s].pass)
            return &c->samples[s];
    return c->n_samples ? &c->samples[0] : NULL;
}

/* ---- report.md ------------------------------------------------------------------------ */

static void md_report(FILE *f, const whet_eval_results *r)
{
    fprintf(f, "# whet eval: %s\n\n", r->model);
    fprintf(f, "- model hash: `%s`\n", r->model_hash);
    if (r->adapter)
        fprintf(f, "- adapter: %s (hash `%s`)\n", r->adapter, r->adapter_hash);
    if (r->baseline)
        fprintf(f, "- baseline: %s\n", r->baseline);
    fprintf(f, "- pass rate: %zu of %zu = ", r->pass.passed, r->pass.n);
    put_pct(f, r->pass.rate);
    fputs(" (Wilson 95%: ", f);
    put_pct(f, r->pass.lo);
    fputs(" – ", f);
    put_pct(f, r->pass.hi);
    fprintf(f, ")\n- gate: **%s**\n", r->gate_failed ? "FAILED" : "passed");
    for (size_t i = 0; i < r->n_suites; i++)
        for (size_t g = 0; g < r->suites[i].n_gate_reasons; g++)
            fprintf(f, "  - %s: %s\n", r->suites[i].name, r->suites[i].gate_reasons[g]);
    for (size_t i = 0; i < r->n_suites; i++) {
        const whet_eval_suite_result *s = &r->suites[i];
        fprintf(f, "\n## Suite %s\n\n", s->name);
        fprintf(f, "%s: %zu cases; seed %llu, temperature %g, max_tokens %zu, repeats %zu (%s)\n\n", s->path,
                s->n_cases, (unsigned long long)s->seed, s->temperature, s->max_tokens, s->repeats,
                whet_eval_reduce_name(s->reduce));
        int cmp_cols = s->cmp.present;
        fputs(cmp_cols ? "| | passed | cases | rate | Wilson 95% | joined: baseline → now |\n|---|---:|---:|---:|---|---|\n"
                       : "| | passed | cases | rate | Wilson 95% |\n|---|---:|---:|---:|---|\n", f);
        for (size_t t = 0; t <= s->n_tags; t++) {
            const whet_eval_rate *rt = t ? &s->tags[t - 1].r : &s->pass;
            fputs("| ", f);
            if (t) {
                fputs("tag ", f);
                md_cell(f, s->tags[t - 1].tag, strlen(s->tags[t - 1].tag), 60);
            } else {
                fputs("**all**", f);
            }
            fprintf(f, " | %zu | %zu | ", rt->passed, rt->n);
            put_pct(f, rt->rate);
            fputs(" | ", f);
            put_pct(f, rt->lo);
            fputs(" – ", f);
            put_pct(f, rt->hi);
            if (cmp_cols) {
                fputs(" | ", f);
                put_pct(f, t ? s->tags[t - 1].base.rate : s->cmp.base_rate);
                fputs(" → ", f);
                put_pct(f, t ? s->tags[t - 1].joined.rate : s->cmp.cur_rate);
            }
            fputs(" |\n", f);
        }
        if (s->n_choice)
            fprintf(f, "\nMultiple choice (%zu): acc %.4f, acc_norm %.4f\n", s->n_choice, s->acc, s->acc_norm);
        if (s->ppl_cases)
            fprintf(f, "\nPerplexity (%zu text%s, %zu tokens): %.4f; bits per byte %.4f\n", s->ppl_cases,
                    s->ppl_cases == 1 ? "" : "s", s->ppl_tokens, s->ppl, s->bits_per_byte);
        const whet_eval_comparison *c = &s->cmp;
        if (c->present) {
            fprintf(f, "\n### Against the baseline\n\n%zu cases joined (%zu new, %zu only in the baseline). "
                    "Pass rate ", c->joined, c->only_current, c->only_baseline);
            put_pct(f, c->base_rate);
            fputs(" → ", f);
            put_pct(f, c->cur_rate);
            fprintf(f, "; %zu pass→fail, %zu fail→pass; exact McNemar p = %.4g.\n", c->pass_to_fail,
                    c->fail_to_pass, c->mcnemar_p);
            if (!isnan(c->diff_mean))
                fprintf(f, "Mean score difference %+.4f (paired bootstrap 95%%: %+.4f to %+.4f).\n", c->diff_mean,
                        c->diff_lo, c->diff_hi);
            if (!isnan(c->ppl_increase))
                fprintf(f, "Perplexity %.4f → %.4f (%+.2f%%).\n", c->base_ppl, c->cur_ppl, 100 * c->ppl_increase);
            if (c->n_flips) {
                fputs("\n| flip | case | baseline score | score | output |\n|---|---|---:|---:|---|\n", f);
                for (size_t k = 0; k < c->n_flips; k++) {
                    const whet_eval_case_result *cr = &r->cases[c->flips[k].case_index];
                    fprintf(f, "| %s | ", k < c->pass_to_fail ? "pass→fail" : "fail→pass");
                    md_cell(f, cr->id, strlen(cr->id), 80);
                    fprintf(f, " | %.3f | %.3f | ", c->flips[k].base_score, cr->score);
                    const whet_eval_sample *sm = first_failing(cr);
                    if (sm)
                        md_cell(f, sm->output, sm->output_len, 120);
                    fputs(" |\n", f);
                }
            }
        }
        int header = 0;
        for (size_t k = s->first_case; k < s->first_case + s->n_cases; k++) {
            const whet_eval_case_result *cr = &r->cases[k];
            if (cr->kind == WHET_EVAL_PPL || cr->pass)
                continue;
            if (!header) {
                fputs("\n### Failing cases\n\n| case | score | output | assertions below 1 |\n|---|---:|---|---|\n", f);
                header = 1;
            }
            fputs("| ", f);
            md_cell(f, cr->id, strlen(cr->id), 80);
            fprintf(f, " | %.3f | ", cr->score);
            const whet_eval_sample *sm = first_failing(cr);
            if (sm) {
                md_cell(f, sm->output, sm->output_len, 160);
                fputs(" | ", f);
                for (size_t a = 0; a < sm->n_asserts; a++)
                    if (sm->asserts[a].score < 1) {
                        fprintf(f, "%s %.2f", sm->asserts[a].name, sm->asserts[a].score);
                        if (sm->asserts[a].detail) {
                            fputs(" (", f);
                            md_cell(f, sm->asserts[a].detail, strlen(sm->asserts[a].detail), 80);
                            fputs(")", f);
                        }
                        fputs("; ", f);
                    }
            } else {
                fprintf(f, "chose %zu, gold %zu | ", cr->pred, cr->gold);
            }
            fputs(" |\n", f);
        }
    }
}

/* ---- report.html --------------------------------------------------------------------------- */

#define BAR_W 360.0
#define LABEL_W 170.0
#define ROW_H 22.0

/* Horizontal bars of pass rates with their Wilson 95 % whiskers; after a
 * comparison, a thin grey bar above each: the baseline on the joined cases. */
static void svg_rates(FILE *f, const whet_eval_suite_result *s)
{
    size_t rows = s->n_tags + 1;
    double h = (double)rows * ROW_H + 30;
    int cmp = s->cmp.present;
    fprintf(f, "<svg width=\"%.0f\" height=\"%.0f\" role=\"img\" aria-label=\"pass rate per tag\">\n",
            LABEL_W + BAR_W + 70, h);
    for (int q = 0; q <= 4; q++) {
        double x = LABEL_W + BAR_W * q / 4;
        fprintf(f, "<line x1=\"%.1f\" y1=\"0\" x2=\"%.1f\" y2=\"%.0f\" class=\"grid\"/>"
                "<text x=\"%.1f\" y=\"%.0f\" class=\"axis\">%d%%</text>\n", x, x, h - 20, x - 8, h - 6, q * 25);
    }
    for (size_t t = 0; t < rows; t++) {
        const whet_eval_rate *rt = t ? &s->tags[t - 1].r : &s->pass;
        double y = (double)t * ROW_H;
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"label\">", LABEL_W - 6, y + 15);
        xml_str(f, t ? s->tags[t - 1].tag : "all");
        fputs("</text>\n", f);
        double base_rate = t ? s->tags[t - 1].base.rate : s->cmp.base_rate;
        if (cmp && !isnan(base_rate))
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"4\" class=\"bar base\"><title>baseline "
                    "%.1f%%</title></rect>\n", LABEL_W, y, BAR_W * base_rate, 100 * base_rate);
        if (isnan(rt->rate))
            continue;
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"14\" class=\"bar\"><title>%zu of %zu</title>"
                "</rect>\n", LABEL_W, y + 4, BAR_W * rt->rate, rt->passed, rt->n);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"ci\"/>\n", LABEL_W + BAR_W * rt->lo,
                y + 11, LABEL_W + BAR_W * rt->hi, y + 11);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"value\">%.1f%%</text>\n", LABEL_W + BAR_W + 6, y + 15,
                100 * rt->rate);
    }
    fputs("</svg>\n", f);
}

/* Baseline and current pass rate on the joined cases, and the bootstrap
 * interval of the mean score difference against zero. */
static void svg_compare(FILE *f, const whet_eval_comparison *c)
{
    fprintf(f, "<svg width=\"%.0f\" height=\"110\" role=\"img\" aria-label=\"before and after\">\n",
            LABEL_W + BAR_W + 70);
    const char *labels[2] = {"baseline", "current"};
    double rates[2] = {c->base_rate, c->cur_rate};
    for (int i = 0; i < 2; i++) {
        double y = i * ROW_H;
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"label\">%s</text>\n", LABEL_W - 6, y + 15, labels[i]);
        if (!isnan(rates[i]))
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"14\" class=\"%s\"/>"
                    "<text x=\"%.1f\" y=\"%.1f\" class=\"value\">%.1f%%</text>\n", LABEL_W, y + 4, BAR_W * rates[i],
                    i ? "bar" : "bar base", LABEL_W + BAR_W + 6, y + 15, 100 * rates[i]);
    }
    if (!isnan(c->diff_mean)) {
        /* score difference on [-1, 1] */
        double y = 2 * ROW_H + 20, mid = LABEL_W + BAR_W / 2;
#define DX(v) (mid + (v) * BAR_W / 2)
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"label\">score difference</text>\n", LABEL_W - 6, y + 4);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>\n", LABEL_W, y, LABEL_W + BAR_W,
                y);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"zero\"/>\n", mid, y - 10, mid, y + 10);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"ci\"/>\n", DX(c->diff_lo), y,
                DX(c->diff_hi), y);
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" class=\"dot\"><title>%+.4f [%+.4f, %+.4f]</title>"
                "</circle>\n", DX(c->diff_mean), y, c->diff_mean, c->diff_lo, c->diff_hi);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"axis\">-1</text><text x=\"%.1f\" y=\"%.1f\" class=\"axis\">0"
                "</text><text x=\"%.1f\" y=\"%.1f\" class=\"axis\">+1</text>\n", LABEL_W - 4, y + 24, mid - 3, y + 24,
                LABEL_W + BAR_W - 8, y + 24);
#undef DX
    }
    fputs("</svg>\n", f);
}

static void html_report(FILE *f, const whet_eval_results *r)
{
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>whet eval: ", f);
    xml_str(f, r->model);
    fputs("</title>\n<style>\nbody{font:14px/1.45 system-ui,sans-serif;margin:2em;max-width:70em;color:#222}\n"
          "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.2em .5em;"
          "text-align:left;vertical-align:top}\ntd.n{text-align:right}\n.fail{color:#b00020;font-weight:bold}"
          ".pass{color:#1b7a1b;font-weight:bold}\npre{white-space:pre-wrap;margin:0;max-width:40em}\n"
          "svg .bar{fill:#4a7bd0}svg .base{fill:#a8a8a8}svg .ci{stroke:#111;stroke-width:2}"
          "svg .grid{stroke:#ddd}svg .zero{stroke:#888}svg .dot{fill:#d04a4a}\n"
          "svg text{font-size:12px}svg .label{text-anchor:end}svg .axis{fill:#666;font-size:11px}\n"
          "</style></head><body>\n<h1>whet eval</h1>\n<p>Model <code>", f);
    xml_str(f, r->model);
    fprintf(f, "</code> (hash <code>%s</code>)", r->model_hash);
    if (r->adapter) {
        fputs(", adapter <code>", f);
        xml_str(f, r->adapter);
        fprintf(f, "</code> (hash <code>%s</code>)", r->adapter_hash);
    }
    if (r->baseline) {
        fputs(", against the baseline <code>", f);
        xml_str(f, r->baseline);
        fputs("</code>", f);
    }
    fprintf(f, ".</p>\n<p>Pass rate %zu of %zu = ", r->pass.passed, r->pass.n);
    put_pct(f, r->pass.rate);
    fprintf(f, ". Gate: <span class=\"%s\">%s</span></p>\n", r->gate_failed ? "fail" : "pass",
            r->gate_failed ? "FAILED" : "passed");
    if (r->gate_failed) {
        fputs("<ul>\n", f);
        for (size_t i = 0; i < r->n_suites; i++)
            for (size_t g = 0; g < r->suites[i].n_gate_reasons; g++) {
                fputs("<li>", f);
                xml_str(f, r->suites[i].name);
                fputs(": ", f);
                xml_str(f, r->suites[i].gate_reasons[g]);
                fputs("</li>\n", f);
            }
        fputs("</ul>\n", f);
    }
    for (size_t i = 0; i < r->n_suites; i++) {
        const whet_eval_suite_result *s = &r->suites[i];
        fputs("<h2>Suite ", f);
        xml_str(f, s->name);
        fputs("</h2>\n<p><code>", f);
        xml_str(f, s->path);
        fprintf(f, "</code>: %zu cases; seed %llu, temperature %g, repeats %zu (%s).", s->n_cases,
                (unsigned long long)s->seed, s->temperature, s->repeats, whet_eval_reduce_name(s->reduce));
        if (s->n_choice)
            fprintf(f, " Multiple choice: acc %.4f, acc_norm %.4f.", s->acc, s->acc_norm);
        if (s->ppl_cases)
            fprintf(f, " Perplexity %.4f, %.4f bits per byte.", s->ppl, s->bits_per_byte);
        fputs(s->cmp.present ? "</p>\n<h3>Pass rate by tag (Wilson 95 % intervals; grey: the baseline on the joined "
                               "cases)</h3>\n" : "</p>\n<h3>Pass rate by tag (Wilson 95 % intervals)</h3>\n", f);
        svg_rates(f, s);
        const whet_eval_comparison *c = &s->cmp;
        if (c->present) {
            fputs("<h3>Before and after</h3>\n", f);
            svg_compare(f, c);
            fprintf(f, "<p>%zu cases joined; %zu pass→fail, %zu fail→pass; exact McNemar p = %.4g.", c->joined,
                    c->pass_to_fail, c->fail_to_pass, c->mcnemar_p);
            if (!isnan(c->diff_mean))
                fprintf(f, " Mean score difference %+.4f (paired bootstrap 95 %%: %+.4f to %+.4f).", c->diff_mean,
                        c->diff_lo, c->diff_hi);
            if (!isnan(c->ppl_increase))
                fprintf(f, " Perplexity %.4f → %.4f (%+.2f %%).", c->base_ppl, c->cur_ppl, 100 * c->ppl_increase);
            fputs("</p>\n", f);
            if (c->n_flips) {
                fputs("<table><tr><th>flip</th><th>case</th><th>baseline</th><th>score</th><th>output</th></tr>\n", f);
                for (size_t k = 0; k < c->n_flips; k++) {
                    const whet_eval_case_result *cr = &r->cases[c->flips[k].case_index];
                    fprintf(f, "<tr><td class=\"%s\">%s</td><td>", k < c->pass_to_fail ? "fail" : "pass",
                            k < c->pass_to_fail ? "pass→fail" : "fail→pass");
                    xml_str(f, cr->id);
                    fprintf(f, "</td><td class=\"n\">%.3f</td><td class=\"n\">%.3f</td><td><pre>", c->flips[k].base_score,
                            cr->score);
                    const whet_eval_sample *sm = first_failing(cr);
                    if (sm)
                        xml_text(f, sm->output, sm->output_len, 400);
                    fputs("</pre></td></tr>\n", f);
                }
                fputs("</table>\n", f);
            }
        }
        fputs("<h3>Cases</h3>\n<table><tr><th>case</th><th>kind</th><th>score</th><th>result</th><th>output</th>"
              "<th>assertions</th></tr>\n", f);
        for (size_t k = s->first_case; k < s->first_case + s->n_cases; k++) {
            const whet_eval_case_result *cr = &r->cases[k];
            fputs("<tr><td>", f);
            xml_str(f, cr->id);
            fprintf(f, "</td><td>%s</td>", whet_eval_kind_name(cr->kind));
            if (cr->kind == WHET_EVAL_PPL) {
                fprintf(f, "<td class=\"n\">–</td><td>ppl %.3f</td><td></td><td></td></tr>\n",
                        cr->tokens ? exp(cr->nll / (double)cr->tokens) : NAN);
                continue;
            }
            fprintf(f, "<td class=\"n\">%.3f</td><td class=\"%s\">%s</td><td><pre>", cr->score,
                    cr->pass ? "pass" : "fail", cr->pass ? "pass" : "fail");
            const whet_eval_sample *sm = first_failing(cr);
            if (sm)
                xml_text(f, sm->output, sm->output_len, 400);
            else
                fprintf(f, "chose %zu (gold %zu)", cr->pred, cr->gold);
            fputs("</pre></td><td>", f);
            for (size_t a = 0; sm && a < sm->n_asserts; a++) {
                xml_str(f, sm->asserts[a].name);
                fprintf(f, " %.2f", sm->asserts[a].score);
                if (sm->asserts[a].detail) {
                    fputs(" (", f);
                    xml_text(f, sm->asserts[a].detail, strlen(sm->asserts[a].detail), 120);
                    fputs(")", f);
                }
                fputs("<br>", f);
            }
            fputs("</td></tr>\n", f);
        }
        fputs("</table>\n", f);
    }
    fputs("</body></html>\n", f);
}

/* ---- files ------------------------------------------------------------------------------ */

typedef void (*text_writer)(FILE *f, const whet_eval_results *r);

static int write_text_file(const char *path, text_writer fn, const whet_eval_results *r, whet_err *e)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return whet_fail(e, "%s: out of memory", path);
    fn(f, r);
    if (fclose(f) != 0) {
        free(buf);
        return whet_fail(e, "%s: out of memory", path);
    }
    int rc = whet_write_file_atomic(path, buf, len, e);
    free(buf);
    return rc;
}

static int write_json_file(const char *path, whet_json_writer *w, whet_err *e)
{
    const char *text;
    size_t len;
    int rc = whet_json_writer_finish(w, path, &text, &len, e);
    if (rc == 0)
        rc = whet_write_file_atomic(path, text, len, e);
    whet_json_writer_free(w);
    return rc;
}

int whet_eval_write_reports(const whet_eval_results *r, const char *dir, whet_err *e)
{
    if (whet_eval_mkdir_p(dir, e) != 0)
        return -1;
    char path[4200];
    whet_json_writer w;
    whet_json_writer_init(&w, 2);
    write_results(&w, r);
    snprintf(path, sizeof path, "%s/results.json", dir);
    if (write_json_file(path, &w, e) != 0)
        return -1;

    /* samples.jsonl: one writer per line, joined */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return whet_fail(e, "out of memory");
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < r->n_cases; i++) {
        whet_json_writer_init(&w, 0);
        write_sample_line(&w, &r->cases[i]);
        const char *text;
        size_t n;
        rc = whet_json_writer_finish(&w, "samples.jsonl", &text, &n, e);
        if (rc == 0) {
            fwrite(text, 1, n, f);
            fputc('\n', f);
        }
        whet_json_writer_free(&w);
    }
    fclose(f);
    snprintf(path, sizeof path, "%s/samples.jsonl", dir);
    if (rc == 0)
        rc = whet_write_file_atomic(path, buf, len, e);
    free(buf);
    if (rc != 0)
        return -1;
    snprintf(path, sizeof path, "%s/report.md", dir);
    if (write_text_file(path, md_report, r, e) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/report.html", dir);
    return write_text_file(path, html_report, r, e);
}

static void junit(FILE *f, const whet_eval_results *r)
{
    size_t tests = 0, failures = 0;
    for (size_t i = 0; i < r->n_suites; i++) {
        tests += r->suites[i].n_cases + 1;
        failures += r->suites[i].pass.n - r->suites[i].pass.passed + (r->suites[i].n_gate_reasons > 0);
    }
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"whet eval\" tests=\"%zu\" "
            "failures=\"%zu\">\n", tests, failures);
    for (size_t i = 0; i < r->n_suites; i++) {
        const whet_eval_suite_result *s = &r->suites[i];
        fputs("  <testsuite name=\"", f);
        xml_str(f, s->name);
        fprintf(f, "\" tests=\"%zu\" failures=\"%zu\">\n", s->n_cases + 1,
                s->pass.n - s->pass.passed + (s->n_gate_reasons > 0));
        for (size_t k = s->first_case; k < s->first_case + s->n_cases; k++) {
            const whet_eval_case_result *cr = &r->cases[k];
            fputs("    <testcase classname=\"", f);
            xml_str(f, s->name);
            fputs("\" name=\"", f);
            xml_str(f, cr->id);
            fputs("\"", f);
            if (cr->kind == WHET_EVAL_PPL) {
                fprintf(f, "><system-out>perplexity %.6f over %zu tokens</system-out></testcase>\n",
                        cr->tokens ? exp(cr->nll / (double)cr->tokens) : NAN, cr->tokens);
                continue;
            }
            if (cr->pass) {
                fputs("/>\n", f);
                continue;
            }
            fprintf(f, "><failure message=\"score %.4f\">", cr->score);
            const whet_eval_sample *sm = first_failing(cr);
            if (sm) {
                fputs("output: ", f);
                xml_text(f, sm->output, sm->output_len, 2000);
                for (size_t a = 0; a < sm->n_asserts; a++) {
                    fprintf(f, "\n%s: %.3f", sm->asserts[a].name, sm->asserts[a].score);
                    if (sm->asserts[a].detail) {
                        fputs(" (", f);
                        xml_str(f, sm->asserts[a].detail);
                        fputs(")", f);
                    }
                }
            } else {
                fprintf(f, "chose %zu, gold %zu", cr->pred, cr->gold);
            }
            fputs("</failure></testcase>\n", f);
        }
        fputs("    <testcase classname=\"", f);
        xml_str(f, s->name);
        fputs("\" name=\"gate\"", f);
        if (!s->n_gate_reasons) {
            fputs("/>\n", f);
        } else {
            fputs("><failure message=\"gate failed\">", f);
            for (size_t g = 0; g < s->n_gate_reasons; g++) {
                xml_str(f, s->gate_reasons[g]);
                fputc('\n', f);
            }
            fputs("</failure></testcase>\n", f);
        }
        fputs("  </testsuite>\n", f);
    }
    fputs("</testsuites>\n", f);
}

int whet_eval_write_junit(const whet_eval_results *r, const char *path, whet_err *e)
{
    return write_text_file(path, junit, r, e);
}

/* ---- reading a baseline ------------------------------------------------------------------ */

static int load_line(whet_eval_results *r, const whet_json_doc *doc, const char *path, size_t line, whet_err *e)
{
    const whet_json *v = whet_json_root(doc);
    const whet_json *suite = whet_json_get(v, "suite"), *id = whet_json_get(v, "id"), *kind = whet_json_get(v, "kind"),
                    *hash = whet_json_get(v, "prompt_hash"), *tags = whet_json_get(v, "tags");
    if (v->type != WHET_JSON_OBJECT || !suite || suite->type != WHET_JSON_STRING || !id ||
        id->type != WHET_JSON_STRING || !kind || kind->type != WHET_JSON_STRING || !hash ||
        hash->type != WHET_JSON_STRING || hash->u.string.len != 32)
        return whet_fail(e, "%s: line %zu: expected a case of whet eval's samples.jsonl (suite, id, kind, "
                         "prompt_hash, ...)", path, line);
    whet_eval_case_result *c = &r->cases[r->n_cases];
    memset(c, 0, sizeof *c);
    c->kind = strcmp(kind->u.string.chars, "choice") == 0 ? WHET_EVAL_CHOICE
              : strcmp(kind->u.string.chars, "ppl") == 0  ? WHET_EVAL_PPL
                                                           : WHET_EVAL_GEN;
    c->suite = strdup(suite->u.string.chars);
    c->id = strdup(id->u.string.chars);
    r->n_cases++;
    if (!c->suite || !c->id)
        return whet_fail(e, "out of memory");
    memcpy(c->prompt_hash, hash->u.string.chars, 33);
    size_t nt = whet_json_count(tags);
    if (tags && tags->type == WHET_JSON_ARRAY && nt) {
        if (!(c->tags = calloc(nt, sizeof *c->tags)))
            return whet_fail(e, "out of memory");
        for (size_t t = 0; t < nt; t++) {
            const char *s = whet_json_string(whet_json_at(tags, t));
            if (s && !(c->tags[c->n_tags++] = strdup(s)))
                return whet_fail(e, "out of memory");
        }
    }
    const whet_json *x;
    if (c->kind == WHET_EVAL_PPL) {
        if (!(x = whet_json_get(v, "nll")) || x->type != WHET_JSON_NUMBER)
            return whet_fail(e, "%s: line %zu: a ppl case without \"nll\"", path, line);
        c->nll = x->u.number.value;
        if ((x = whet_json_get(v, "tokens")) && x->type == WHET_JSON_NUMBER && x->u.number.value >= 0)
            c->tokens = (size_t)x->u.number.value;
        if ((x = whet_json_get(v, "bytes")) && x->type == WHET_JSON_NUMBER && x->u.number.value >= 0)
            c->bytes = (size_t)x->u.number.value;
        return 0;
    }
    const whet_json *score = whet_json_get(v, "score"), *pass = whet_json_get(v, "pass");
    if (!score || score->type != WHET_JSON_NUMBER || !pass ||
        (pass->type != WHET_JSON_TRUE && pass->type != WHET_JSON_FALSE))
        return whet_fail(e, "%s: line %zu: a case without \"score\" and \"pass\"", path, line);
    c->score = score->u.number.value;
    c->pass = pass->type == WHET_JSON_TRUE;
    if (c->kind == WHET_EVAL_CHOICE && (x = whet_json_get(v, "acc_norm")))
        c->acc_norm = x->type == WHET_JSON_TRUE;
    return 0;
}

int whet_eval_results_load(whet_eval_results **out, const char *dir, whet_err *e)
{
    *out = NULL;
    char path[4200];
    snprintf(path, sizeof path, "%s/samples.jsonl", dir);
    char *text = NULL;
    size_t len = 0;
    if (whet_read_file(path, &text, &len, e) != 0)
        return -1;
    whet_eval_results *r = calloc(1, sizeof *r);
    size_t max_lines = 1;
    for (size_t i = 0; i < len; i++)
        max_lines += text[i] == '\n';
    if (!r || !(r->cases = calloc(max_lines, sizeof *r->cases)) ||
        !(r->suites = calloc(max_lines, sizeof *r->suites)) || !(r->model = strdup(dir))) {
        free(text);
        whet_eval_results_free(r);
        return whet_fail(e, "out of memory");
    }
    size_t line = 0;
    for (size_t begin = 0; begin < len;) {
        const char *nl = memchr(text + begin, '\n', len - begin);
        size_t end = nl ? (size_t)(nl - text) : len, at = begin;
        begin = end + 1;
        line++;
        if (end == at)
            continue;
        whet_json_doc *doc = NULL;
        whet_json_options opt = {.base_offset = at};
        if (whet_json_parse(&doc, text + at, end - at, path, &opt, e) != 0 ||
            load_line(r, doc, path, line, e) != 0) {
            whet_json_free(doc);
            free(text);
            whet_eval_results_free(r);
            return -1;
        }
        whet_json_free(doc);
        whet_eval_case_result *c = &r->cases[r->n_cases - 1];
        whet_eval_suite_result *s = r->n_suites ? &r->suites[r->n_suites - 1] : NULL;
        if (!s || strcmp(s->name, c->suite) != 0) {
            for (size_t i = 0; i < r->n_suites; i++)
                if (strcmp(r->suites[i].name, c->suite) == 0) {
                    free(text);
                    whet_fail(e, "%s: line %zu: the cases of suite \"%s\" are not together", path, line, c->suite);
                    whet_eval_results_free(r);
                    return -1;
                }
            s = &r->suites[r->n_suites++];
            s->first_case = r->n_cases - 1;
            s->gate = (whet_eval_gate){NAN, NAN, 0.05, "critical", NAN};
            if (!(s->name = strdup(c->suite)) || !(s->path = strdup(path))) {
                free(text);
                whet_eval_results_free(r);
                return whet_fail(e, "out of memory");
            }
        }
        s->n_cases++;
    }
    free(text);
    if (whet_eval_aggregate(r, e) != 0) {
        whet_eval_results_free(r);
        return -1;
    }
    *out = r;
    return 0;
}
