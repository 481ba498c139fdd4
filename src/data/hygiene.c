/* Content hashes (for --valid-split, duplicates and dedup), and n-gram
 * overlap between training data and eval suites. */
#include "data/data_internal.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Appends s with whitespace runs collapsed to one space and the ends trimmed. */
static void hash_normalised(XXH3_state_t *st, const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && is_space((unsigned char)s[i]))
        i++;
    int pending_space = 0;
    while (i < len) {
        size_t run = i;
        while (run < len && !is_space((unsigned char)s[run]))
            run++;
        if (run > i) {
            if (pending_space)
                XXH3_64bits_update(st, " ", 1);
            XXH3_64bits_update(st, s + i, run - i);
            pending_space = 0;
        }
        i = run;
        while (i < len && is_space((unsigned char)s[i])) {
            pending_space = 1;
            i++;
        }
    }
}

/* Field separators that text cannot hold (ASCII RS and US). */
static void hash_field(XXH3_state_t *st, const char *name, const char *s, size_t len)
{
    XXH3_64bits_update(st, name, strlen(name));
    XXH3_64bits_update(st, "\x1e", 1);
    hash_normalised(st, s, len);
    XXH3_64bits_update(st, "\x1f", 1);
}

uint64_t data_content_hash(const data_parsed *d)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return 0;
    XXH3_64bits_reset(st);
    switch (d->format) {
    case WHET_DATA_CHAT:
        for (size_t i = 0; i < d->n_messages; i++)
            hash_field(st, d->messages[i].role, d->messages[i].content, d->messages[i].content_len);
        break;
    case WHET_DATA_PROMPT_COMPLETION:
        hash_field(st, "prompt", d->prompt, d->prompt_len);
        hash_field(st, "completion", d->completion, d->completion_len);
        break;
    default:
        hash_field(st, "text", d->text, d->text_len);
        break;
    }
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

uint64_t data_example_hash(const data_file *f, size_t i)
{
    data_parsed d;
    data_problem p;
    if (data_parse(f, i, f->format, &d, &p) != 0)
        return XXH3_64bits(f->map.data + f->lines[i].offset, f->lines[i].len);
    uint64_t h = data_content_hash(&d);
    data_parsed_free(&d);
    return h;
}
