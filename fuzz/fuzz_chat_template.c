/* libFuzzer target for chat templates. The input is
 *   byte 0: flags (bit 0 add_generation_prompt, bit 1 disable_thinking,
 *           bits 2..5 a template name, 15 = recognise the template text)
 *   then a JSON messages array, a NUL byte, and a template text.
 * The messages go through whet_chat_messages_from_json and whet_chat_render
 * with the named template and, when the text is recognised, with that one too.
 * Beyond "no crash", for every input:
 *  - a refusal has a message (an unknown template's names --chat-template);
 *  - a rendering is NUL-terminated at its length, starts_with_bos agrees with
 *    the text, and its spans are in message order, inside the text, each
 *    ending with its family's end-of-turn marker right after the content
 *    (after one space for llama2);
 *  - for families that copy contents verbatim (chatml, qwen2.5, mistral,
 *    zephyr) each span's content is the message's content byte for byte. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"
#include "tok/chat_template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

static const char *const NAMES[] = {
    "chatml", "qwen2.5", "qwen3", "llama3", "llama2", "mistral", "zephyr", "gemma",
    "qwen2",  "llama3-always-gen", "mistral-v0.1-space", "gemma1",
};

static const char *marker(const whet_chat_template *t)
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

static void render_and_check(const whet_chat_template *t, const whet_chat_message *m, size_t n,
                             const whet_chat_options *o)
{
    whet_chat_rendered r;
    whet_err e;
    e.msg[0] = 0;
    if (whet_chat_render(t, m, n, o, &r, &e) != 0) {
        check(e.msg[0] != 0);
        return;
    }
    check(r.text != NULL && r.text[r.len] == 0);
    size_t bl = strlen(t->bos);
    check(r.starts_with_bos == (bl > 0 && r.len >= bl && memcmp(r.text, t->bos, bl) == 0));
    const char *mk = marker(t);
    size_t ml = strlen(mk);
    int verbatim = t->family == WHET_CHAT_CHATML || t->family == WHET_CHAT_QWEN2_5 ||
                   t->family == WHET_CHAT_MISTRAL || t->family == WHET_CHAT_ZEPHYR;
    size_t prev_end = 0;
    for (size_t k = 0; k < r.n_spans; k++) {
        const whet_chat_span *s = &r.spans[k];
        check(s->message < n && strcmp(m[s->message].role, "assistant") == 0);
        check(k == 0 || s->message > r.spans[k - 1].message);
        check(prev_end <= s->start && s->start <= s->content_start && s->content_start <= s->content_end);
        /* llama2 writes " {content} </s>": one space between content and marker */
        size_t gap = t->family == WHET_CHAT_LLAMA2 ? 1 : 0;
        check(s->content_end + gap + ml == s->end && s->end <= r.len);
        check(memcmp(r.text + s->end - ml, mk, ml) == 0);
        if (verbatim)
            check(s->content_end - s->content_start == m[s->message].content_len &&
                  memcmp(r.text + s->content_start, m[s->message].content, m[s->message].content_len) == 0);
        prev_end = s->end;
    }
    whet_chat_rendered_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned flags = data[0];
    const char *rest = (const char *)data + 1;
    size_t rest_len = size - 1;
    const char *nul = memchr(rest, 0, rest_len);
    size_t json_len = nul ? (size_t)(nul - rest) : rest_len;
    const char *tmpl = nul ? nul + 1 : NULL;
    size_t tmpl_len = nul ? rest_len - json_len - 1 : 0;

    whet_chat_options o = {(int)(flags & 1), (int)((flags >> 1) & 1)};
    whet_err e;

    whet_chat_template named, recognised;
    int have_named = 0, have_recognised = 0;
    unsigned pick = (flags >> 2) & 15;
    if (pick < sizeof NAMES / sizeof NAMES[0]) {
        check(whet_chat_template_by_name(&named, NAMES[pick], &e) == 0);
        have_named = 1;
    }
    if (tmpl) {
        e.msg[0] = 0;
        if (whet_chat_template_recognize(&recognised, tmpl, tmpl_len, "fuzz.jinja", &e) == 0)
            have_recognised = 1;
        else
            check(strstr(e.msg, "fuzz.jinja") != NULL && strstr(e.msg, "--chat-template") != NULL);
    }

    whet_json_doc *doc = NULL;
    if (whet_json_parse(&doc, rest, json_len, "fuzz", NULL, &e) != 0)
        return 0;
    whet_chat_message *m = NULL;
    size_t n = 0;
    e.msg[0] = 0;
    if (whet_chat_messages_from_json(doc, whet_json_root(doc), &m, &n, &e) != 0) {
        check(strncmp(e.msg, "fuzz: ", 6) == 0);
        whet_json_free(doc);
        return 0;
    }
    if (have_named)
        render_and_check(&named, m, n, &o);
    if (have_recognised)
        render_and_check(&recognised, m, n, &o);
    free(m);
    whet_json_free(doc);
    return 0;
}
