/* Chat templates: every golden rendering (made from the real template text by
 * Python's Jinja2 set up as transformers does, cross-checked with
 * @huggingface/jinja: tests/ref/make_chat_goldens.mjs) byte for byte,
 * recognition of each real template, look-alikes refused, the --chat-template
 * override, loading from a model directory, assistant spans against the
 * reference's own prefix renderings, and every error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/json.h"
#include "tok/chat_template.h"
#include "util/file.h"

#define DATA_DIR "tests/data/chat"

static const char *const GOLDENS[] = {
    "chatml", "qwen2", "qwen2.5", "qwen3", "llama3", "llama3-instruct",
    "llama2", "mistral", "mistral-v0.1", "zephyr", "gemma", "gemma3",
};
#define N_GOLDENS (sizeof GOLDENS / sizeof GOLDENS[0])

static whet_json_doc *load_golden(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, DATA_DIR "/%s.golden.json", name);
    whet_json_doc *doc = NULL;
    whet_err e;
    if (whet_json_parse_file(&doc, path, NULL, &e) != 0)
        fail_msg("%s", e.msg);
    return doc;
}

static const whet_json *get(const whet_json *o, const char *key)
{
    const whet_json *v = whet_json_get(o, key);
    if (!v)
        fail_msg("golden: missing key %s", key);
    return v;
}

static void set_token(char *dst, size_t cap, const whet_json *v)
{
    if (v->type == WHET_JSON_NULL) {
        dst[0] = 0;
        return;
    }
    assert_int_equal(v->type, WHET_JSON_STRING);
    assert_true(v->u.string.len < cap);
    memcpy(dst, v->u.string.chars, v->u.string.len + 1);
}

/* The end-of-turn marker each family's spans must end with. */
static const char *end_marker(const whet_chat_template *t)
{
    switch (t->family) {
    case WHET_CHAT_CHATML:
    case WHET_CHAT_QWEN2_5:
    case WHET_CHAT_QWEN3:
        return "<|im_end|>";
    case WHET_CHAT_LLAMA3:
        return "<|eot_id|>";
    case WHET_CHAT_GEMMA:
        return "<end_of_turn>";
    default:
        return t->eos;
    }
}

static int starts_with(const char *s, size_t n, const char *p, size_t pn)
{
    return pn <= n && memcmp(s, p, pn) == 0;
}

typedef struct golden_counts {
    size_t rendered, refused, python_only, spans_start_checked, spans_end_checked;
} golden_counts;

static void check_spans(const whet_chat_template *t, const whet_json *c, const whet_chat_rendered *r,
                        const char *where, golden_counts *counts)
{
    const whet_json *prefixes = get(c, "assistant_prefixes");
    assert_int_equal(r->n_spans, whet_json_count(prefixes));
    const char *marker = end_marker(t);
    size_t ml = strlen(marker);
    for (size_t k = 0; k < whet_json_count(prefixes); k++) {
        const whet_json *p = whet_json_at(prefixes, k);
        const whet_chat_span *sp = &r->spans[k];
        int64_t msg = get(p, "message")->u.number.integer;
        if ((int64_t)sp->message != msg)
            fail_msg("%s: span %zu is for message %zu, expected %lld", where, k, sp->message, (long long)msg);
        assert_true(sp->start <= sp->content_start && sp->content_start <= sp->content_end &&
                    sp->content_end <= sp->end && sp->end <= r->len);
        /* the span ends with the end-of-turn marker, right after the content */
        if (sp->end - sp->start < ml || memcmp(r->text + sp->end - ml, marker, ml) != 0)
            fail_msg("%s: span of message %lld does not end with %s", where, (long long)msg, marker);
        assert_true(sp->content_end <= sp->end - ml);
        /* it starts where the reference's prompt (conversation before, with the
         * generation prompt) ends, when that prompt is a prefix of the text */
        const whet_json *before = get(p, "prompt_before");
        if (before->type == WHET_JSON_STRING &&
            starts_with(r->text, r->len, before->u.string.chars, before->u.string.len)) {
            if (sp->start != before->u.string.len)
                fail_msg("%s: span of message %lld starts at %zu, the reference prompt ends at %zu", where,
                         (long long)msg, sp->start, before->u.string.len);
            counts->spans_start_checked++;
        }
        /* it ends at most where the reference's rendering through the message
         * ends, leaving only the template's separator (or, for the first
         * Llama 3 template, the appended generation prompt) */
        const whet_json *through = get(p, "through");
        if (through->type == WHET_JSON_STRING &&
            starts_with(r->text, r->len, through->u.string.chars, through->u.string.len)) {
            assert_true(sp->end <= through->u.string.len);
            const char *rest = through->u.string.chars + sp->end;
            size_t rest_len = through->u.string.len - sp->end;
            int ok = rest_len == 0 || (rest_len == 1 && (rest[0] == '\n' || rest[0] == ' ')) ||
                     (t->always_generation_prompt &&
                      strcmp(rest, "<|start_header_id|>assistant<|end_header_id|>\n\n") == 0);
            if (!ok)
                fail_msg("%s: after the span of message %lld the reference has \"%s\"", where, (long long)msg,
                         rest);
            counts->spans_end_checked++;
        }
    }
}

static void run_golden(const char *name, golden_counts *counts)
{
    whet_json_doc *doc = load_golden(name);
    const whet_json *root = whet_json_root(doc);
    const whet_json *text = get(root, "template");
    whet_chat_template t;
    whet_err e;
    char source[256];
    snprintf(source, sizeof source, DATA_DIR "/%s.golden.json", name);
    if (whet_chat_template_recognize(&t, text->u.string.chars, text->u.string.len, source, &e) != 0)
        fail_msg("%s", e.msg);
    assert_string_equal(t.name, whet_json_string(get(root, "expect_recognized_as")));
    set_token(t.bos, sizeof t.bos, get(root, "bos_token"));
    set_token(t.eos, sizeof t.eos, get(root, "eos_token"));

    const whet_json *cases = get(root, "cases");
    for (size_t i = 0; i < whet_json_count(cases); i++) {
        const whet_json *c = whet_json_at(cases, i);
        char where[256];
        snprintf(where, sizeof where, "%s/%s", name, whet_json_string(get(c, "name")));
        /* where @huggingface/jinja differs from Python's Jinja2, whet follows
         * Python (what transformers runs); count those cases */
        if (whet_json_get(c, "huggingface_jinja"))
            counts->python_only++;
        whet_chat_message *msgs = NULL;
        size_t n = 0;
        if (whet_chat_messages_from_json(doc, get(c, "messages"), &msgs, &n, &e) != 0)
            fail_msg("%s: %s", where, e.msg);
        whet_chat_options o = {get(c, "add_generation_prompt")->type == WHET_JSON_TRUE, 0};
        const whet_json *thinking = whet_json_get(c, "enable_thinking");
        if (thinking && thinking->type == WHET_JSON_FALSE)
            o.disable_thinking = 1;
        whet_chat_rendered r;
        int rc = whet_chat_render(&t, msgs, n, &o, &r, &e);
        const whet_json *expected = whet_json_get(c, "expected");
        if (expected) {
            if (rc != 0)
                fail_msg("%s: %s", where, e.msg);
            if (r.len != expected->u.string.len || memcmp(r.text, expected->u.string.chars, r.len) != 0)
                fail_msg("%s: rendered\n[%s]\nexpected\n[%s]", where, r.text, expected->u.string.chars);
            size_t bl = strlen(t.bos);
            assert_int_equal(r.starts_with_bos,
                             bl > 0 && starts_with(expected->u.string.chars, expected->u.string.len, t.bos, bl));
            check_spans(&t, c, &r, where, counts);
            whet_chat_rendered_free(&r);
            counts->rendered++;
        } else {
            const char *err = whet_json_string(get(c, "error"));
            if (rc == 0)
                fail_msg("%s: rendered [%s], the reference refuses: %s", where, r.text, err);
            if (!strstr(e.msg, err))
                fail_msg("%s: error \"%s\" lacks the template's \"%s\"", where, e.msg, err);
            if (!strstr(e.msg, source))
                fail_msg("%s: error \"%s\" does not name %s", where, e.msg, source);
            counts->refused++;
        }
        free(msgs);
    }
    whet_json_free(doc);
}

static void goldens_render_byte_for_byte(void **state)
{
    (void)state;
    golden_counts total = {0};
    for (size_t g = 0; g < N_GOLDENS; g++) {
        golden_counts counts = {0};
        run_golden(GOLDENS[g], &counts);
        print_message("%-16s %2zu rendered, %2zu refused as the template does (%zu where @huggingface/jinja differs), "
                      "%zu span starts and %zu span ends checked\n",
                      GOLDENS[g], counts.rendered, counts.refused, counts.python_only, counts.spans_start_checked,
                      counts.spans_end_checked);
        assert_true(counts.rendered >= 8);
        total.rendered += counts.rendered;
        total.spans_start_checked += counts.spans_start_checked;
        total.spans_end_checked += counts.spans_end_checked;
    }
    assert_true(total.spans_start_checked > 50 && total.spans_end_checked > 50);
}

/* ---- recognition --------------------------------------------------------------- */

static char *read_template(const char *file)
{
    char path[512], *text = NULL;
    size_t size;
    whet_err e;
    snprintf(path, sizeof path, DATA_DIR "/templates/%s", file);
    if (whet_read_file(path, &text, &size, &e) != 0)
        fail_msg("%s", e.msg);
    return text;
}

static void expect_unknown(const char *text, const char *label)
{
    whet_chat_template t;
    whet_err e;
    if (whet_chat_template_recognize(&t, text, strlen(text), label, &e) == 0)
        fail_msg("%s: recognised as %s, expected refusal", label, t.name);
    assert_non_null(strstr(e.msg, label));
    assert_non_null(strstr(e.msg, "--chat-template"));
    assert_non_null(strstr(e.msg, whet_chat_template_names()));
}

static void look_alikes_are_refused(void **state)
{
    (void)state;
    /* Qwen1.5: the last message loses <|im_end|> without a generation prompt */
    expect_unknown("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
                   "'<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + "
                   "message['role'] + '\\n' + message['content']}}{% if (loop.last and add_generation_prompt) or not "
                   "loop.last %}{{ '<|im_end|>' + '\\n'}}{% endif %}{% endfor %}",
                   "qwen1.5");
    /* internlm2: ChatML with a BOS and a final EOS */
    expect_unknown("{% if messages[0]['role'] == 'user' or messages[0]['role'] == 'system' %}{{ bos_token }}{% endif "
                   "%}{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                   "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                   "{% elif messages[-1]['role'] == 'assistant' %}{{ eos_token }}{% endif %}",
                   "internlm2");
    /* a Llama 3.1-style template (knowledge date and tools) */
    char *l3 = read_template("llama3-instruct.jinja");
    size_t n = strlen(l3);
    char *l31 = malloc(n + 64);
    memcpy(l31, "{{- \"Cutting Knowledge Date: December 2023\\n\" }}", 48);
    memcpy(l31 + 48, l3, n + 1);
    expect_unknown(l31, "llama3.1");
    free(l31);
    free(l3);
    /* Zephyr's markers on one line: no newline after each message */
    expect_unknown("{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\\n' + "
                   "message['content'] + eos_token }}{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\\n' + "
                   "message['content'] + eos_token }}{% elif message['role'] == 'system' %}{{ '<|system|>\\n' + "
                   "message['content'] + eos_token }}{% endif %}{% if loop.last and add_generation_prompt %}{{ "
                   "'<|assistant|>' }}{% endif %}{% endfor %}",
                   "zephyr-one-line");
    expect_unknown("", "empty");
    expect_unknown("{{ messages }}", "plain");
}

static void real_templates_are_recognised(void **state)
{
    (void)state;
    static const char *const pairs[][2] = {
        {"chatml.jinja", "chatml"},       {"qwen2.jinja", "qwen2"},
        {"qwen2.5.jinja", "qwen2.5"},     {"qwen3.jinja", "qwen3"},
        {"llama3.jinja", "llama3-always-gen"}, {"llama3-instruct.jinja", "llama3"},
        {"llama2.jinja", "llama2"},       {"mistral.jinja", "mistral"},
        {"mistral-v0.1.jinja", "mistral-v0.1-space"}, {"zephyr.jinja", "zephyr"},
        {"gemma.jinja", "gemma1"},        {"gemma3.jinja", "gemma"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        char *text = read_template(pairs[i][0]);
        whet_chat_template t;
        whet_err e;
        if (whet_chat_template_recognize(&t, text, strlen(text), pairs[i][0], &e) != 0)
            fail_msg("%s", e.msg);
        assert_string_equal(t.name, pairs[i][1]);
        assert_string_equal(t.source, pairs[i][0]);
        /* the name gives the same variant */
        whet_chat_template by;
        assert_int_equal(whet_chat_template_by_name(&by, t.name, &e), 0);
        assert_int_equal(by.family, t.family);
        assert_string_equal(by.default_system, t.default_system);
        assert_int_equal(by.always_generation_prompt, t.always_generation_prompt);
        assert_int_equal(by.space_after_eos, t.space_after_eos);
        assert_int_equal(by.system_refused, t.system_refused);
        free(text);
    }
}

static void override_by_name(void **state)
{
    (void)state;
    whet_chat_template t;
    whet_err e;
    static const char *const names[] = {"chatml", "qwen2.5", "qwen3", "llama3", "llama2", "mistral", "zephyr", "gemma"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        assert_int_equal(whet_chat_template_by_name(&t, names[i], &e), 0);
        assert_string_equal(t.name, names[i]);
        assert_non_null(strstr(whet_chat_template_names(), names[i]));
    }
    assert_int_equal(whet_chat_template_by_name(&t, "qwen2.5", &e), 0);
    assert_string_equal(t.default_system, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
    assert_int_equal(whet_chat_template_by_name(&t, "vicuna", &e), -1);
    assert_non_null(strstr(e.msg, "vicuna"));
    assert_non_null(strstr(e.msg, whet_chat_template_names()));
    assert_int_equal(whet_chat_template_by_name(&t, NULL, &e), -1);
}

/* ---- loading from a model directory ------------------------------------------------ */

static void write_text(const char *path, const char *text)
{
    whet_err e;
    if (whet_write_file_atomic(path, text, strlen(text), &e) != 0)
        fail_msg("%s", e.msg);
}

static void write_config(const char *path, const char *template_text, int as_list, const char *bos_key_json)
{
    whet_json_writer w;
    whet_json_writer_init(&w, 1);
    whet_json_begin_object(&w);
    whet_json_key(&w, "eos_token");
    whet_json_begin_object(&w);
    whet_json_key(&w, "content");
    whet_json_write_string(&w, "<|custom_eos|>");
    whet_json_end_object(&w);
    whet_json_key(&w, "bos_token");
    if (bos_key_json)
        whet_json_write_string(&w, bos_key_json);
    else
        whet_json_write_null(&w);
    if (template_text) {
        whet_json_key(&w, "chat_template");
        if (as_list) {
            whet_json_begin_array(&w);
            whet_json_begin_object(&w);
            whet_json_key(&w, "name");
            whet_json_write_string(&w, "tool_use");
            whet_json_key(&w, "template");
            whet_json_write_string(&w, "{{ nothing }}");
            whet_json_end_object(&w);
            whet_json_begin_object(&w);
            whet_json_key(&w, "name");
            whet_json_write_string(&w, "default");
            whet_json_key(&w, "template");
            whet_json_write_string(&w, template_text);
            whet_json_end_object(&w);
            whet_json_end_array(&w);
        } else {
            whet_json_write_string(&w, template_text);
        }
    }
    whet_json_end_object(&w);
    const char *text;
    size_t len;
    whet_err e;
    if (whet_json_writer_finish(&w, path, &text, &len, &e) != 0)
        fail_msg("%s", e.msg);
    write_text(path, text);
    whet_json_writer_free(&w);
}

static void load_from_model_directory(void **state)
{
    (void)state;
    char dir[] = "/tmp/whet_chat_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char config[256], jinja[256];
    snprintf(config, sizeof config, "%s/tokenizer_config.json", dir);
    snprintf(jinja, sizeof jinja, "%s/chat_template.jinja", dir);
    whet_chat_template t;
    whet_err e;

    /* nothing there */
    assert_int_equal(whet_chat_template_load(&t, dir, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "--chat-template"));

    char *zephyr = read_template("zephyr.jinja");
    write_config(config, zephyr, 0, "<s>");
    assert_int_equal(whet_chat_template_load(&t, dir, NULL, &e), 0);
    assert_string_equal(t.name, "zephyr");
    assert_string_equal(t.eos, "<|custom_eos|>");
    assert_string_equal(t.source, config);
    assert_int_equal(whet_chat_template_load(&t, config, NULL, &e), 0);
    assert_string_equal(t.name, "zephyr");

    /* the list form picks "default" */
    char *gemma3 = read_template("gemma3.jinja");
    write_config(config, gemma3, 1, NULL);
    assert_int_equal(whet_chat_template_load(&t, dir, NULL, &e), 0);
    assert_string_equal(t.name, "gemma");
    assert_string_equal(t.bos, "<bos>"); /* null keeps the family default */

    /* chat_template.jinja beside the config wins */
    char *qwen3 = read_template("qwen3.jinja");
    write_text(jinja, qwen3);
    assert_int_equal(whet_chat_template_load(&t, config, NULL, &e), 0);
    assert_string_equal(t.name, "qwen3");
    assert_string_equal(t.source, jinja);
    /* the .jinja file itself, with bos/eos from the config beside it */
    assert_int_equal(whet_chat_template_load(&t, jinja, NULL, &e), 0);
    assert_string_equal(t.name, "qwen3");
    assert_string_equal(t.eos, "<|custom_eos|>");
    char missing[300];
    snprintf(missing, sizeof missing, "%s/other.jinja", dir);
    assert_int_equal(whet_chat_template_load(&t, missing, NULL, &e), -1);
    assert_non_null(strstr(e.msg, missing));
    assert_non_null(strstr(e.msg, "--chat-template"));

    /* an unknown template: the file is named, --chat-template suggested */
    write_text(jinja, "{% for m in messages %}### {{ m.role }}: {{ m.content }}\n{% endfor %}");
    assert_int_equal(whet_chat_template_load(&t, dir, NULL, &e), -1);
    assert_non_null(strstr(e.msg, jinja));
    assert_non_null(strstr(e.msg, "--chat-template NAME"));
    assert_non_null(strstr(e.msg, whet_chat_template_names()));
    /* ... and the override takes the family from the name, bos/eos from the config */
    assert_int_equal(whet_chat_template_load(&t, dir, "llama2", &e), 0);
    assert_string_equal(t.name, "llama2");
    assert_string_equal(t.eos, "<|custom_eos|>");
    assert_int_equal(whet_chat_template_load(&t, dir, "nope", &e), -1);
    assert_non_null(strstr(e.msg, "nope"));
    unlink(jinja);

    /* no chat_template key */
    write_config(config, NULL, 0, "<s>");
    assert_int_equal(whet_chat_template_load(&t, dir, NULL, &e), -1);
    assert_non_null(strstr(e.msg, config));
    assert_non_null(strstr(e.msg, "chat_template"));
    /* a chat_template of the wrong type, bos_token of the wrong type, bad JSON */
    write_text(config, "{\"chat_template\": 42}");
    assert_int_equal(whet_chat_template_load(&t, dir, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "line 1"));
    write_text(config, "{\"chat_template\": \"{{ bos_token }}{% for m in messages %}\", \"bos_token\": [1]}");
    assert_int_equal(whet_chat_template_load(&t, dir, "chatml", &e), -1);
    assert_non_null(strstr(e.msg, "bos_token"));
    write_text(config, "{\"chat_template\": ");
    assert_int_equal(whet_chat_template_load(&t, dir, NULL, &e), -1);
    assert_non_null(strstr(e.msg, config));

    unlink(config);
    rmdir(dir);
    free(zephyr);
    free(gemma3);
    free(qwen3);
}

/* ---- errors ------------------------------------------------------------------------- */

static void render_errors(void **state)
{
    (void)state;
    whet_chat_template t;
    whet_err e;
    whet_chat_rendered r;
    whet_chat_options o = {1, 0};
    assert_int_equal(whet_chat_template_by_name(&t, "chatml", &e), 0);

    whet_chat_message tool[] = {{"user", "hi", 2}, {"tool", "42", 2}};
    assert_int_equal(whet_chat_render(&t, tool, 2, &o, &r, &e), -1);
    assert_non_null(strstr(e.msg, "message 1"));
    assert_non_null(strstr(e.msg, "\"tool\""));

    assert_int_equal(whet_chat_render(&t, tool, 0, &o, &r, &e), -1);
    assert_non_null(strstr(e.msg, "at least one message"));

    whet_chat_message bad_utf8[] = {{"user", "\xff\xfe", 2}};
    assert_int_equal(whet_chat_render(&t, bad_utf8, 1, &o, &r, &e), -1);
    assert_non_null(strstr(e.msg, "UTF-8"));

    whet_chat_message no_role[] = {{NULL, "x", 1}};
    assert_int_equal(whet_chat_render(&t, no_role, 1, &o, &r, &e), -1);

    /* content with a NUL byte passes through with its length */
    whet_chat_message nul[] = {{"user", "a\0b", 3}};
    assert_int_equal(whet_chat_render(&t, nul, 1, NULL, &r, &e), 0);
    assert_int_equal(r.len, strlen("<|im_start|>user\n") + 3 + strlen("<|im_end|>\n"));
    whet_chat_rendered_free(&r);

    /* role order: llama2, mistral, gemma raise the template's exception */
    static const char *const strict[] = {"llama2", "mistral", "gemma", "gemma1"};
    whet_chat_message two_users[] = {{"user", "a", 1}, {"user", "b", 1}};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(whet_chat_template_by_name(&t, strict[i], &e), 0);
        assert_int_equal(whet_chat_render(&t, two_users, 2, &o, &r, &e), -1);
        assert_non_null(strstr(e.msg, "Conversation roles must alternate user/assistant/user/assistant/..."));
        assert_non_null(strstr(e.msg, "message 1"));
        assert_non_null(strstr(e.msg, strict[i]));
    }
    whet_chat_message sys_in_middle[] = {{"user", "a", 1}, {"system", "s", 1}};
    assert_int_equal(whet_chat_template_by_name(&t, "mistral", &e), 0);
    assert_int_equal(whet_chat_render(&t, sys_in_middle, 2, &o, &r, &e), -1);
    assert_non_null(strstr(e.msg, "Only user and assistant roles are supported!"));
    whet_chat_message sys_first[] = {{"system", "s", 1}, {"user", "a", 1}};
    assert_int_equal(whet_chat_template_by_name(&t, "gemma1", &e), 0);
    assert_int_equal(whet_chat_render(&t, sys_first, 2, &o, &r, &e), -1);
    assert_non_null(strstr(e.msg, "System role not supported"));
}

static void messages_from_json_errors(void **state)
{
    (void)state;
    static const char *const bad[][2] = {
        {"{}", "an array of messages"},
        {"[1]", "a message object"},
        {"[{\"content\": \"x\"}]", "\"role\""},
        {"[{\"role\": \"user\"}]", "\"content\""},
        {"[{\"role\": 3, \"content\": \"x\"}]", "the role as a string"},
        {"[{\"role\": \"user\", \"content\": null}]", "the content as a string"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        whet_json_doc *doc;
        whet_err e;
        assert_int_equal(whet_json_parse(&doc, bad[i][0], strlen(bad[i][0]), "msgs.json", NULL, &e), 0);
        whet_chat_message *m;
        size_t n;
        assert_int_equal(whet_chat_messages_from_json(doc, whet_json_root(doc), &m, &n, &e), -1);
        if (!strstr(e.msg, bad[i][1]) || !strstr(e.msg, "msgs.json"))
            fail_msg("%s: %s", bad[i][0], e.msg);
        whet_json_free(doc);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(goldens_render_byte_for_byte),
        cmocka_unit_test(real_templates_are_recognised),
        cmocka_unit_test(look_alikes_are_refused),
        cmocka_unit_test(override_by_name),
        cmocka_unit_test(load_from_model_directory),
        cmocka_unit_test(render_errors),
        cmocka_unit_test(messages_from_json_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
