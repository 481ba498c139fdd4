/* whet generate: continue a prompt, or answer a chat, streaming the text to
 * standard output as the tokens come. Prefill with whet_model_decode, then one
 * token at a time through the KV cache; the next token from model/sample.c. */
#include "cli/commands.h"
#include "cli/common.h"
#include "io/json.h"
#include "model/sample.h"
#include "util/log.h"
#include "util/timer.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAX_TOKENS 256
#define DEFAULT_TEMPERATURE 0.7
#define DEFAULT_TOP_K 40
#define DEFAULT_TOP_P 0.95
#define MAX_STOPS 16

static void usage(FILE *out)
{
    fputs("usage: whet generate --model M (--prompt S | --chat S | --messages F) [options]\n"
          "Generate text with a model, streaming it to standard output.\n"
          "  --model M           HF model directory (config.json, safetensors, tokenizer.json)\n"
          "                      or GGUF file\n"
          "  --adapter DIR       apply the PEFT LoRA adapter in DIR (whet's or HF PEFT's)\n"
          "  --prompt S          continue the text S (after the BOS the tokenizer adds, if any)\n"
          "  --chat S            answer the user message S, rendered with the chat template\n"
          "  --system S          with --chat: a system message before it\n"
          "  --messages F        answer the conversation in JSON file F: an array of\n"
          "                      {\"role\", \"content\"} objects, or an object with one in \"messages\"\n"
          "  --chat-template N   render with template N instead of the model's\n"
          "  --max-tokens N      generate at most N tokens (default 256)\n"
          "  --temperature T     0 for greedy decoding (default 0.7)\n"
          "  --top-k K           sample from the K most likely tokens; 0: all (default 40)\n"
          "  --top-p P           nucleus: the fewest tokens holding mass P, in (0, 1] (default 0.95)\n"
          "  --seed S            random seed; the same seed gives the same text (default: random)\n"
          "  --stop S            stop before the text S (not printed); may be repeated\n"
          "  --threads N         threads to use (default: WHET_THREADS, else every core)\n"
          "  --json              print one JSON object when done (the text, token counts,\n"
          "                      speeds, why it stopped) instead of streaming the text\n"
          "  --version           print whet's version\n"
          "  --help              this text\n",
          out);
}

typedef struct stop_ids {
    int32_t id[WHET_MAX_EOS_IDS + 4];
    size_t n;
} stop_ids;

static void add_stop_id(stop_ids *s, int64_t id)
{
    if (id < 0 || id > INT32_MAX)
        return;
    for (size_t i = 0; i < s->n; i++)
        if (s->id[i] == id)
            return;
    if (s->n < sizeof s->id / sizeof *s->id)
        s->id[s->n++] = (int32_t)id;
}

static int is_stop_id(const stop_ids *s, int32_t id)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->id[i] == id)
            return 1;
    return 0;
}

/* --messages: the messages array of file F. */
static int read_messages(const char *path, whet_json_doc **doc, whet_chat_message **msgs, size_t *n)
{
    whet_err e = {{0}};
    if (whet_json_parse_file(doc, path, NULL, &e) != 0) {
        whet_error("%s", e.msg);
        return -1;
    }
    const whet_json *root = whet_json_root(*doc), *arr = root;
    if (root->type == WHET_JSON_OBJECT) {
        arr = whet_json_get(root, "messages");
        if (!arr) {
            whet_json_fail_missing(&e, *doc, root, "messages");
            whet_error("%s", e.msg);
            return -1;
        }
    }
    if (arr->type != WHET_JSON_ARRAY) {
        whet_json_fail_at(&e, *doc, arr, "an array of {\"role\", \"content\"} messages");
        whet_error("%s", e.msg);
        return -1;
    }
    if (whet_chat_messages_from_json(*doc, arr, msgs, n, &e) != 0) {
        whet_error("%s", e.msg);
        return -1;
    }
    if (*n == 0) {
        whet_error("%s: the messages array is empty", path);
        return -1;
    }
    return 0;
}

typedef struct printer {
    whet_utf8_stream utf8;
    char *held; /* complete characters not printed yet (a stop string may begin there) */
    size_t len, cap;
    char *const *stops;
    size_t n_stops;
    int stopped; /* a stop string was found */
    int ends_with_newline;
    int keep;    /* --json: the text is kept in `text`, not streamed */
    char *text;
    size_t text_len, text_cap;
} printer;

static int emit(printer *p, const char *s, size_t n)
{
    if (!n)
        return 0;
    if (p->keep) {
        if (p->text_len + n + 1 > p->text_cap) {
            size_t cap = (p->text_len + n + 1) * 2;
            char *t = realloc(p->text, cap);
            if (!t)
                return -1;
            p->text = t, p->text_cap = cap;
        }
        memcpy(p->text + p->text_len, s, n);
        p->text_len += n;
    } else {
        fwrite(s, 1, n, stdout);
        fflush(stdout);
    }
    p->ends_with_newline = s[n - 1] == '\n';
    return 0;
}

/* Appends the token's bytes; prints what can be printed. -1 when out of memory. */
static int printer_add(printer *p, const char *bytes, size_t n, int final)
{
    size_t need = p->len + 3 * (n + 4) + 1;
    if (need > p->cap) {
        size_t cap = need * 2;
        char *h = realloc(p->held, cap);
        if (!h)
            return -1;
        p->held = h, p->cap = cap;
    }
    p->len += whet_utf8_feed(&p->utf8, bytes, n, p->held + p->len);
    if (final)
        p->len += whet_utf8_flush(&p->utf8, p->held + p->len);
    long stop_at;
    size_t safe = whet_stop_scan(p->held, p->len, p->stops, p->n_stops, &stop_at);
    if (final && stop_at < 0)
        safe = p->len;
    if (emit(p, p->held, safe) != 0)
        return -1;
    if (stop_at >= 0) {
        p->stopped = 1;
        p->len = 0;
    } else {
        memmove(p->held, p->held + safe, p->len - safe);
        p->len -= safe;
    }
    return 0;
}

static double per_second(size_t n, double seconds)
{
    return seconds > 0 ? (double)n / seconds : 0.0;
}

/* --json: the text and the figures the terminal line gives. */
static int print_json(const printer *p, const char *model_path, size_t prompt_tokens, double prompt_seconds,
                      size_t generated, double generate_seconds, const char *reason, uint64_t seed, int threads)
{
    whet_json_writer w;
    whet_json_writer_init(&w, 0);
    whet_json_begin_object(&w);
    whet_json_key(&w, "model");
    whet_json_write_string(&w, model_path);
    whet_json_key(&w, "text");
    whet_json_write_string_len(&w, p->text ? p->text : "", p->text_len);
    whet_json_key(&w, "stop_reason");
    whet_json_write_string(&w, reason);
    whet_json_key(&w, "prompt_tokens");
    whet_json_write_int(&w, (int64_t)prompt_tokens);
    whet_json_key(&w, "generated_tokens");
    whet_json_write_int(&w, (int64_t)generated);
    const struct { const char *key; double v; } figures[] = {
        {"prompt_seconds", prompt_seconds},
        {"prompt_tokens_per_second", per_second(prompt_tokens, prompt_seconds)},
        {"generate_seconds", generate_seconds},
        {"generated_tokens_per_second", per_second(generated, generate_seconds)}};
    for (size_t i = 0; i < sizeof figures / sizeof *figures; i++) {
        whet_json_key(&w, figures[i].key);
        whet_json_write_double(&w, figures[i].v);
    }
    /* a string: a 64-bit seed may not fit the doubles JSON readers use */
    char seed_text[24];
    snprintf(seed_text, sizeof seed_text, "%llu", (unsigned long long)seed);
    whet_json_key(&w, "seed");
    whet_json_write_string(&w, seed_text);
    whet_json_key(&w, "threads");
    whet_json_write_int(&w, threads);
    whet_json_end_object(&w);
    return cli_print_json(&w, "generate output");
}

int cmd_generate(int argc, char **argv)
{
    const char *prompt = NULL, *chat = NULL, *system_msg = NULL, *messages_path = NULL;
    cli_model_options mo = {0};
    size_t max_tokens = DEFAULT_MAX_TOKENS, top_k = DEFAULT_TOP_K;
    double temperature = DEFAULT_TEMPERATURE, top_p = DEFAULT_TOP_P;
    uint64_t seed = 0;
    int have_seed = 0, json = 0;
    char *stops[MAX_STOPS];
    size_t n_stops = 0;
    enum {
        OPT_PROMPT = 256, OPT_CHAT, OPT_SYSTEM, OPT_MESSAGES, OPT_MAX_TOKENS, OPT_TEMPERATURE, OPT_TOP_K, OPT_TOP_P,
        OPT_SEED, OPT_STOP, OPT_JSON
    };
    static const struct option options[] = {
        {"model", required_argument, NULL, CLI_OPT_MODEL},
        {"adapter", required_argument, NULL, CLI_OPT_ADAPTER},
        {"prompt", required_argument, NULL, OPT_PROMPT},
        {"chat", required_argument, NULL, OPT_CHAT},
        {"system", required_argument, NULL, OPT_SYSTEM},
        {"messages", required_argument, NULL, OPT_MESSAGES},
        {"chat-template", required_argument, NULL, CLI_OPT_CHAT_TEMPLATE},
        {"max-tokens", required_argument, NULL, OPT_MAX_TOKENS},
        {"temperature", required_argument, NULL, OPT_TEMPERATURE},
        {"top-k", required_argument, NULL, OPT_TOP_K},
        {"top-p", required_argument, NULL, OPT_TOP_P},
        {"seed", required_argument, NULL, OPT_SEED},
        {"stop", required_argument, NULL, OPT_STOP},
        {"threads", required_argument, NULL, CLI_OPT_THREADS},
        {"json", no_argument, NULL, OPT_JSON},
        CLI_COMMON_OPTIONS};
    cli_parser p = {.command = "generate", .usage = usage, .model = &mo};
    int opt;
    while ((opt = cli_next_option(&p, argc, argv, "", options)) != -1) {
        int bad = 0;
        switch (opt) {
        case OPT_PROMPT: prompt = optarg; break;
        case OPT_CHAT: chat = optarg; break;
        case OPT_SYSTEM: system_msg = optarg; break;
        case OPT_MESSAGES: messages_path = optarg; break;
        case OPT_MAX_TOKENS: bad = cli_parse_size("generate", "--max-tokens", optarg, 1, 1u << 24, &max_tokens); break;
        case OPT_TEMPERATURE:
            bad = cli_parse_double("generate", "--temperature", optarg, 0, 1e6, &temperature);
            break;
        case OPT_TOP_K: bad = cli_parse_size("generate", "--top-k", optarg, 0, INT32_MAX, &top_k); break;
        case OPT_TOP_P:
            bad = cli_parse_double("generate", "--top-p", optarg, 0, 1, &top_p);
            if (!bad && !(top_p > 0)) {
                whet_error("generate: --top-p: expected a number in (0, 1], got '%s'", optarg);
                bad = -1;
            }
            break;
        case OPT_SEED:
            bad = cli_parse_u64("generate", "--seed", optarg, &seed);
            have_seed = 1;
            break;
        case OPT_STOP:
            if (!optarg[0]) {
                whet_error("generate: --stop: expected a non-empty string");
                bad = -1;
            } else if (n_stops == MAX_STOPS) {
                whet_error("generate: --stop: at most %d stop strings", MAX_STOPS);
                bad = -1;
            } else {
                stops[n_stops++] = optarg;
            }
            break;
        case OPT_JSON: json = 1; break;
        }
        if (bad)
            return WHET_EXIT_ERROR;
    }
    if (p.exit >= 0)
        return p.exit;
    const char *model_path = mo.model, *template_name = mo.chat_template;
    if (optind < argc) {
        whet_error("generate: unexpected argument '%s'", argv[optind]);
        return WHET_EXIT_ERROR;
    }
    if (!model_path) {
        whet_error("generate: --model is required");
        return WHET_EXIT_ERROR;
    }
    if ((prompt != NULL) + (chat != NULL) + (messages_path != NULL) != 1) {
        whet_error("generate: give exactly one of --prompt, --chat and --messages");
        return WHET_EXIT_ERROR;
    }
    if (system_msg && !chat) {
        whet_error("generate: --system goes with --chat (put a system message in the --messages file instead)");
        return WHET_EXIT_ERROR;
    }
    if (template_name && prompt) {
        whet_error("generate: --chat-template goes with --chat or --messages");
        return WHET_EXIT_ERROR;
    }
    if (!have_seed)
        seed = (uint64_t)time(NULL) * 6364136223846793005ULL ^ (uint64_t)getpid();

    int status = WHET_EXIT_ERROR;
    whet_err e = {{0}};
    cli_model cm;
    whet_json_doc *messages_doc = NULL;
    whet_chat_message *messages = NULL;
    whet_chat_rendered rendered = {0};
    int32_t *ids = NULL;
    size_t n_ids = 0;
    whet_kv_cache *kv = NULL;
    whet_acts *acts = NULL;
    float *logits = NULL;
    whet_sampler sampler = {0};
    printer pr = {.stops = stops, .n_stops = n_stops, .keep = json};
    size_t n_messages = 0;
    if (messages_path && read_messages(messages_path, &messages_doc, &messages, &n_messages) != 0) {
        free(messages);
        whet_json_free(messages_doc);
        return WHET_EXIT_ERROR;
    }
    if (cli_open_model(&cm, &mo, CLI_LOAD_WEIGHTS | CLI_LOAD_TOKENIZER | CLI_LOAD_TEMPLATE) != 0) {
        free(messages);
        whet_json_free(messages_doc);
        return WHET_EXIT_ERROR;
    }
    whet_model *m = cm.model;
    const whet_model_config *cfg = &m->cfg;
    stop_ids stop = {{0}, 0};
    for (size_t i = 0; i < cfg->n_eos; i++)
        add_stop_id(&stop, cfg->eos_token_ids[i]);
    add_stop_id(&stop, whet_tokenizer_eos_id(cm.tok));

    if (prompt) {
        if (whet_tokenizer_encode_prompt(cm.tok, prompt, strlen(prompt), 1, &ids, &n_ids) != 0)
            goto done;
    } else {
        if (!cm.have_template) {
            whet_error("%s", cm.template_err.msg);
            goto done;
        }
        whet_chat_message two[2];
        size_t n_msgs = 0;
        if (chat) {
            if (system_msg)
                two[n_msgs++] = (whet_chat_message){"system", system_msg, strlen(system_msg)};
            two[n_msgs++] = (whet_chat_message){"user", chat, strlen(chat)};
        } else {
            n_msgs = n_messages;
        }
        whet_chat_options copt = {.add_generation_prompt = 1};
        if (whet_chat_render(&cm.tmpl, chat ? two : messages, n_msgs, &copt, &rendered, &e) != 0) {
            whet_error("%s", e.msg);
            goto done;
        }
        if (whet_tokenizer_encode_prompt(cm.tok, rendered.text, rendered.len, !rendered.starts_with_bos, &ids, &n_ids) != 0)
            goto done;
    }
    if (cm.have_template) {
        const char *eot = whet_chat_end_of_turn_text(&cm.tmpl);
        add_stop_id(&stop, whet_tokenizer_token_to_id(cm.tok, eot, strlen(eot)));
    }
    if (n_ids == 0) {
        whet_error("generate: the prompt is empty and the tokenizer adds no BOS to start from");
        goto done;
    }
    size_t limit = cfg->max_positions;
    if (cfg->sliding_window && cfg->sliding_window < limit)
        limit = cfg->sliding_window;
    if (n_ids >= limit) {
        whet_error("generate: the prompt is %zu tokens; the model (%s) takes at most %zu, leaving no room to generate",
                   n_ids, model_path, limit);
        goto done;
    }
    size_t max_len = n_ids + max_tokens < limit ? n_ids + max_tokens : limit;
    whet_sampling sp = {temperature, top_k, top_p};
    if (whet_sampler_init(&sampler, cfg->vocab, &sp, seed, &e) != 0 ||
        !(kv = whet_kv_cache_create(m, 1, max_len, &e)) || !(acts = whet_acts_create(m, 1, n_ids, 0, &e))) {
        whet_error("%s", e.msg);
        goto done;
    }
    logits = malloc(cfg->vocab * sizeof *logits);
    if (!logits) {
        whet_error("generate: out of memory for the logits");
        goto done;
    }

    double t0 = whet_now();
    if (whet_model_decode(m, kv, acts, ids, 1, n_ids, logits, &e) != 0) {
        whet_error("%s", e.msg);
        goto done;
    }
    double t_prefill = whet_now() - t0;
    t0 = whet_now();
    size_t generated = 0;
    const char *reason = "max-tokens";
    for (;;) {
        int32_t next = whet_sampler_sample(&sampler, logits);
        if (is_stop_id(&stop, next)) {
            reason = "end of sequence";
            break;
        }
        generated++;
        size_t nb = 0;
        const char *bytes = whet_tokenizer_is_special(cm.tok, next) ? "" : whet_tokenizer_token_bytes(cm.tok, next, &nb);
        if (!bytes)
            bytes = "", nb = 0;
        if (printer_add(&pr, bytes, nb, 0) != 0) {
            whet_error("generate: out of memory");
            goto done;
        }
        if (pr.stopped) {
            reason = "stop string";
            break;
        }
        if (generated == max_tokens)
            break;
        if (kv->len == max_len) {
            reason = "context full";
            break;
        }
        if (whet_model_decode(m, kv, acts, &next, 1, 1, logits, &e) != 0) {
            whet_error("%s", e.msg);
            goto done;
        }
    }
    if (!pr.stopped && printer_add(&pr, "", 0, 1) != 0) {
        whet_error("generate: out of memory");
        goto done;
    }
    double t_gen = whet_now() - t0;
    if (json) {
        if (print_json(&pr, model_path, n_ids, t_prefill, generated, t_gen, reason, seed, cm.compute->threads) != 0)
            goto done;
    } else if (isatty(STDOUT_FILENO) && !pr.ends_with_newline) {
        putchar('\n');
    }
    fflush(stdout);
    if (strcmp(reason, "context full") == 0)
        whet_warn("generate: stopped at the model's %zu positions after %zu tokens", limit, generated);
    if (whet_stderr_is_terminal())
        fprintf(stderr,
                "whet: prompt %zu tokens in %.2f s (%.1f tokens/s); generated %zu tokens in %.2f s (%.1f tokens/s); "
                "stopped by %s; seed %llu; %d threads\n",
                n_ids, t_prefill, per_second(n_ids, t_prefill), generated, t_gen, per_second(generated, t_gen), reason, (unsigned long long)seed, cm.compute->threads);
    status = WHET_EXIT_OK;
done:
    free(pr.held);
    free(pr.text);
    free(logits);
    whet_sampler_free(&sampler);
    whet_acts_free(acts);
    whet_kv_cache_free(kv);
    free(ids);
    whet_chat_rendered_free(&rendered);
    free(messages);
    whet_json_free(messages_doc);
    cli_close_model(&cm);
    return status;
}
