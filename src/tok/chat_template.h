/* Chat templates without a Jinja engine.
 *
 * A model's tokenizer_config.json `chat_template` (or a chat_template.jinja
 * beside it) is recognised by fingerprints of its text (distinctive substrings
 * that must be present, and substrings of look-alike templates that must be
 * absent), and conversations are then rendered by C code that reproduces, byte
 * for byte, what Hugging Face's Jinja rendering (apply_chat_template, with
 * trim_blocks and lstrip_blocks) gives for that template. Each family is
 * checked against renderings of the real template text by Python's Jinja2 set
 * up as transformers does, cross-checked with @huggingface/jinja
 * (tests/data/chat/<name>.golden.json, made by tests/ref/make_chat_goldens.mjs).
 *
 * Supported (name for --chat-template, what is rendered):
 *   chatml   <|im_start|>{role}\n{content}<|im_end|>\n per message; generation
 *            prompt <|im_start|>assistant\n. No BOS. (OpenHermes, dolphin, ...)
 *   qwen2.5  ChatML, and when the first message is not a system message, first
 *            the default system message "You are Qwen, created by Alibaba
 *            Cloud. You are a helpful assistant." A recognised Qwen2 template
 *            ("You are a helpful assistant.") gets its own default text.
 *            Tools and tool calls are not supported.
 *   qwen3    Qwen3's template for conversations without tools: no default
 *            system message; an assistant message after the last user message
 *            that is the last message (or that holds reasoning) is rendered as
 *            "<think>\n{reasoning}\n</think>\n\n{answer}", where reasoning and
 *            answer are split at "</think>" in the content as the template
 *            does (empty reasoning when there is none); earlier assistant
 *            messages lose any <think> part. User messages that are
 *            <tool_response>...</tool_response> do not count as the last user
 *            message, as in the template. disable_thinking adds
 *            "<think>\n\n</think>\n\n" after the generation prompt
 *            (enable_thinking=false). A message's reasoning_content field, tools
 *            and tool calls are not supported.
 *   llama3   <|begin_of_text|> then <|start_header_id|>{role}<|end_header_id|>\n\n
 *            {content|trim}<|eot_id|> per message; generation prompt
 *            <|start_header_id|>assistant<|end_header_id|>\n\n. The first
 *            Llama-3-Instruct template (no add_generation_prompt test) always
 *            appends the generation prompt; that variant is recognised too.
 *            Llama 3.1+ templates (dates, tools) are refused.
 *   llama2   Meta's Llama-2-chat: <s>[INST] <<SYS>>\n{sys}\n<</SYS>>\n\n{user} [/INST]
 *             {assistant} </s><s>[INST] ... with contents strip()ed; roles must
 *            alternate user/assistant after an optional system message (as in
 *            the template, a later system message at an odd position passes
 *            the check and renders nothing; add_generation_prompt has no
 *            effect: the text always ends with [/INST] or </s>).
 *   mistral  Mistral/Mixtral v0.1: <s>[INST] {user} [/INST]{assistant}</s>[INST] ...
 *            no system role, strict alternation, add_generation_prompt has no
 *            effect; the older Mistral-7B-Instruct-v0.1
 *            variant with a space after </s> is recognised too.
 *   zephyr   Zephyr / TinyLlama-Chat: <|{role}|>\n{content}</s>\n per message;
 *            generation prompt <|assistant|>\n.
 *   gemma    Gemma 3: <bos> then <start_of_turn>{user|model}\n{content|trim}
 *            <end_of_turn>\n, a system message folded into the first user turn
 *            as "{system}\n\n" (not trimmed); generation prompt
 *            <start_of_turn>model\n; as in the template, a later system message
 *            at an odd position renders as <start_of_turn>system. The
 *            Gemma 1/2 template (which refuses a system message) is recognised
 *            too ("gemma1").
 *
 * Whitespace trimming (Jinja `trim`, Python str.strip()) follows Python: the
 * characters str.isspace() accepts, including U+001C..U+001F and U+0085 (which
 * JavaScript's trim() keeps) and not U+FEFF (which JavaScript's trim() removes).
 *
 * Assistant spans (for assistant-only loss masking). For every assistant
 * message the renderer returns [start, end): the text the model must learn to
 * produce after the prompt it is given at generation time (the conversation
 * before the message rendered with add_generation_prompt), up to and including
 * the end-of-turn marker, and excluding the separator the template writes after
 * that marker (the model stops at the marker and never emits it). This is the
 * part mlx-lm's --mask-prompt trains for the final message, and what TRL's
 * {% generation %} markers enclose, applied to every assistant message:
 *   chatml, qwen2.5  {content}<|im_end|>                 (not the "\n" after it)
 *   qwen3            [<think>\n{reasoning}\n</think>\n\n]{answer}<|im_end|>
 *                    (the think block when the template writes one)
 *   llama3           {content|trim}<|eot_id|>
 *   llama2           " {content.strip()} </s>" (the space after [/INST] is the
 *                    model's: generation starts right after "[/INST]")
 *   mistral          {content}</s>                       (not the " " after it)
 *   zephyr           {content}</s>                       (not the "\n" after it)
 *   gemma            {content|trim}<end_of_turn>         (not the "\n" after it)
 * content_start/content_end delimit the message's own (trimmed) text inside it.
 *
 * BOS: llama3, llama2, mistral and gemma templates write the BOS text
 * themselves; starts_with_bos says so, and the tokenizer must then not add
 * another BOS token ("no double BOS"). llama2 and mistral also write <s>/</s>
 * inside the text, which must be tokenized as special tokens.
 */
#ifndef WHET_CHAT_TEMPLATE_H
#define WHET_CHAT_TEMPLATE_H

#include <stddef.h>

#include "io/json.h"
#include "util/file.h"

typedef enum whet_chat_family {
    WHET_CHAT_CHATML,
    WHET_CHAT_QWEN2_5, /* ChatML with a default system message */
    WHET_CHAT_QWEN3,
    WHET_CHAT_LLAMA3,
    WHET_CHAT_LLAMA2,
    WHET_CHAT_MISTRAL,
    WHET_CHAT_ZEPHYR,
    WHET_CHAT_GEMMA,
    WHET_CHAT_FAMILY_COUNT
} whet_chat_family;

#define WHET_CHAT_TEXT_MAX 256

typedef struct whet_chat_template {
    whet_chat_family family;
    const char *name;                /* the --chat-template name of the variant */
    char default_system[WHET_CHAT_TEXT_MAX]; /* qwen2.5: the default system message */
    char bos[64], eos[64];           /* bos_token / eos_token texts the template uses */
    int always_generation_prompt;    /* llama3: the first template, which always appends it */
    int space_after_eos;             /* mistral: the older v0.1 template ("</s> [INST]") */
    int system_refused;              /* gemma1: raise_exception('System role not supported') */
    char source[512];                /* where it came from, for messages */
} whet_chat_template;

typedef struct whet_chat_message {
    const char *role;    /* "system", "user" or "assistant" */
    const char *content; /* UTF-8, content_len bytes (may hold NUL) */
    size_t content_len;
} whet_chat_message;

typedef struct whet_chat_options {
    int add_generation_prompt;
    int disable_thinking; /* qwen3: enable_thinking=false */
} whet_chat_options;

typedef struct whet_chat_span {
    size_t message;                   /* index into the messages given */
    size_t start, end;                /* trained bytes [start, end) of text */
    size_t content_start, content_end; /* the message's own text within it */
} whet_chat_span;

typedef struct whet_chat_rendered {
    char *text; /* NUL-terminated, len bytes */
    size_t len;
    whet_chat_span *spans; /* one per assistant message that the template renders */
    size_t n_spans;
    int starts_with_bos; /* text begins with the BOS text: add no BOS token */
} whet_chat_rendered;

/* The comma-separated list of names accepted by whet_chat_template_by_name. */
const char *whet_chat_template_names(void);

/* The template called `name` (a name of whet_chat_template_names(), or a
 * variant: qwen2, llama3-always-gen, mistral-v0.1-space, gemma1), with its
 * family's default bos/eos texts. */
int whet_chat_template_by_name(whet_chat_template *out, const char *name, whet_err *e);

/* Recognises a template's text; `source` names it in messages (a file). */
int whet_chat_template_recognize(whet_chat_template *out, const char *text, size_t len, const char *source,
                                 whet_err *e);

/* Loads the template of a model: `path` is a model directory, its
 * tokenizer_config.json, or a .jinja template file (bos/eos then come from a
 * tokenizer_config.json beside it, if any). A chat_template.jinja beside the
 * config wins over the
 * config's chat_template (a string, or a list of {name, template} whose
 * "default" entry is used); bos_token and eos_token come from the config.
 * With override (a --chat-template NAME), the name decides the family and the
 * config only supplies bos/eos texts (it may then be absent). */
int whet_chat_template_load(whet_chat_template *out, const char *path, const char *override_name, whet_err *e);

/* Renders messages[0..n). Errors: no messages, an unknown role, a role order
 * the template rejects (its raise_exception text), invalid UTF-8 content. */
int whet_chat_render(const whet_chat_template *t, const whet_chat_message *messages, size_t n,
                     const whet_chat_options *options, whet_chat_rendered *out, whet_err *e);
void whet_chat_rendered_free(whet_chat_rendered *r);

/* Reads a JSON array of {"role": string, "content": string} objects (other
 * keys are ignored). The messages point into doc, which must outlive them;
 * free *out with free(). */
int whet_chat_messages_from_json(const whet_json_doc *doc, const whet_json *array, whet_chat_message **out,
                                 size_t *n, whet_err *e);

/* The token text that ends an assistant turn in the template's family
 * (<|im_end|>, <|eot_id|>, <end_of_turn>; else the template's EOS text):
 * generation stops there (whet generate, whet eval). */
const char *whet_chat_end_of_turn_text(const whet_chat_template *t);

#endif
