/* libFuzzer target for the dataset reader. The first byte chooses how the
 * rest is read: bit 0 a .txt file (paragraphs) instead of JSONL, bit 1
 * --train-on-prompt, bit 2 add_eos. The rest is the file's bytes, indexed in
 * memory (data_file_index_memory: the same index as a mapped file), then up
 * to 64 examples parsed, hashed and tokenized with ChatML and a byte-level
 * tokenizer whose tokens are single bytes (plus <|im_start|>, <|im_end|>).
 * Beyond "no crash", for every input:
 *  - the index is in order and inside the input, no example holds a line end
 *    (JSONL), and line numbers increase;
 *  - a problem has a class, a message, its example's line (a .txt paragraph:
 *    that line or a later one) and a column from 1;
 *  - the content hash is the same when computed twice;
 *  - a tokenized example has a loss of 0 or 1 per token, and with single-byte
 *    tokens the trained tokens are exactly the bytes of the template's spans
 *    of trained messages (all of them with --train-on-prompt). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"
#include "tok/chat_template.h"
#include "tok/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

/* GPT-2's byte-to-character map, for a vocabulary of the 256 bytes. */
static uint32_t byte_char(unsigned b)
{
    int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    if (keep)
        return b;
    unsigned n = 0;
    for (unsigned x = 0; x < b; x++)
        n += !((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE));
    return 0x100 + n;
}

static whet_tokenizer *byte_tokenizer(void)
{
    static char json[16384];
    size_t n = (size_t)snprintf(json, sizeof json,
                                "{\"added_tokens\":[{\"id\":256,\"content\":\"<|im_start|>\",\"special\":true},"
                                "{\"id\":257,\"content\":\"<|im_end|>\",\"special\":true}],\"normalizer\":null,"
                                "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
                                "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"merges\":[],\"vocab\":{");
    for (unsigned b = 0; b < 256; b++) {
        uint32_t cp = byte_char(b);
        char ch[8];
        if (cp < 0x80)
            snprintf(ch, sizeof ch, "%s%c", cp == '"' || cp == '\\' ? "\\" : "", (char)cp);
        else
            snprintf(ch, sizeof ch, "%c%c", (char)(0xC0 | (cp >> 6)), (char)(0x80 | (cp & 0x3F)));
        n += (size_t)snprintf(json + n, sizeof json - n, "\"%s\":%u%s", ch, b, b < 255 ? "," : "");
    }
    n += (size_t)snprintf(json + n, sizeof json - n, "}}}");
    whet_err e;
    whet_tokenizer *t = whet_tokenizer_parse(json, n, "fuzz", &e);
    check(t != NULL);
    return t;
}

/* With single-byte tokens: loss[k] is 1 exactly on the bytes of trained spans. */
static void check_mask(const data_parsed *d, const whet_data_options *opt, const whet_example *ex)
{
    whet_chat_message pair[2];
    const whet_chat_message *m = d->messages;
    size_t n = d->n_messages;
    static const uint8_t pair_trained[2] = {0, 1};
    const uint8_t *trained = d->trained;
    if (d->format == WHET_DATA_PROMPT_COMPLETION) {
        pair[0] = (whet_chat_message){"user", d->prompt, d->prompt_len};
        pair[1] = (whet_chat_message){"assistant", d->completion, d->completion_len};
        m = pair;
        n = 2;
        trained = pair_trained;
    }
    whet_chat_rendered r;
    whet_chat_options co = {0};
    whet_err e;
    check(whet_chat_render(opt->tmpl, m, n, &co, &r, &e) == 0);
    /* tokens: one per byte, specials one per marker; walk both */
    size_t pos = 0;
    for (size_t k = 0; k < ex->n; k++) {
        size_t len = 0;
        const char *bytes = whet_tokenizer_token_bytes(opt->tok, ex->ids[k], &len);
        check(bytes != NULL && pos + len <= r.len && memcmp(r.text + pos, bytes, len) == 0);
        int in_span = 0;
        for (size_t s = 0; s < r.n_spans; s++)
            in_span |= trained[r.spans[s].message] && pos >= r.spans[s].start && pos < r.spans[s].end;
        check(ex->loss[k] == (opt->train_on_prompt ? 1 : in_span));
        pos += len;
    }
    check(pos == r.len);
    whet_chat_rendered_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static whet_tokenizer *tok;
    static whet_chat_template chatml;
    if (!tok) {
        tok = byte_tokenizer();
        whet_err e;
        check(whet_chat_template_by_name(&chatml, "chatml", &e) == 0);
    }
    if (size < 1)
        return 0;
    unsigned flags = data[0];
    data_file *f;
    whet_err e;
    if (data_file_index_memory(&f, "fuzz.jsonl", data + 1, size - 1, flags & 1, &e) != 0) {
        check(strstr(e.msg, "fuzz.jsonl") != NULL);
        return 0;
    }
    for (size_t i = 0; i < f->n; i++) {
        const data_line *l = &f->lines[i];
        check(l->offset + l->len <= size - 1);
        check(i == 0 || (l->offset > f->lines[i - 1].offset && l->line > f->lines[i - 1].line));
        if (!f->is_text)
            check(memchr(data + 1 + l->offset, '\n', l->len) == NULL);
    }
    data_problem first;
    if (data_file_detect(f, &first) != 0 && f->n > 0)
        check(first.cls != NULL && first.msg[0] != 0);
    whet_data_options opt = {.tok = tok, .tmpl = &chatml, .train_on_prompt = (flags >> 1) & 1,
                             .add_eos = (flags >> 2) & 1};
    for (size_t i = 0; i < f->n && i < 64; i++) {
        data_parsed d;
        data_problem p;
        if (data_parse(f, i, f->format, &d, &p) != 0) {
            check(p.cls != NULL && p.msg[0] != 0 && p.column >= 1 && p.line >= f->lines[i].line);
            check(f->is_text || p.line == f->lines[i].line);
            continue;
        }
        check(data_content_hash(&d) == data_content_hash(&d));
        whet_example ex;
        if (data_tokenize(&opt, &d, &ex, NULL, NULL, &p) != 0) {
            check(p.cls != NULL && p.msg[0] != 0);
        } else {
            for (size_t k = 0; k < ex.n; k++)
                check(ex.loss[k] <= 1 && ex.ids[k] >= 0 && (size_t)ex.ids[k] < whet_tokenizer_vocab_size(tok));
            if (d.format != WHET_DATA_TEXT)
                check_mask(&d, &opt, &ex);
            whet_example_free(&ex);
        }
        data_parsed_free(&d);
    }
    data_file_release(f);
    return 0;
}
