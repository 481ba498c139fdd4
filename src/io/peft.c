/* PEFT adapter directories: adapter_config.json and adapter_model.safetensors
 * (see peft.h). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "io/peft.h"

#include "io/json.h"

#include <errno.h>
#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

void whet_peft_config_free(whet_peft_config *cfg)
{
    for (size_t i = 0; i < cfg->n_target_modules; i++)
        free(cfg->target_modules[i]);
    for (size_t i = 0; i < cfg->n_rank_pattern; i++)
        free(cfg->rank_pattern[i].pattern);
    for (size_t i = 0; i < cfg->n_alpha_pattern; i++)
        free(cfg->alpha_pattern[i].pattern);
    free(cfg->target_modules);
    free(cfg->target_regex);
    free(cfg->rank_pattern);
    free(cfg->alpha_pattern);
    free(cfg->layers_to_transform);
    free(cfg->base_model_name_or_path);
    free(cfg->task_type);
    memset(cfg, 0, sizeof *cfg);
}

/* ---- reading ---------------------------------------------------------------- */

/* A key whose value is null counts as absent (PEFT writes "layers_to_transform": null). */
static const whet_json *lookup(const whet_json *obj, const char *key)
{
    const whet_json *v = whet_json_get(obj, key);
    return v && v->type != WHET_JSON_NULL ? v : NULL;
}

static int dup_string(const whet_json_doc *doc, const whet_json *v, const char *key, char **out, whet_err *e)
{
    if (v->type != WHET_JSON_STRING)
        return whet_json_fail_at(e, doc, v, "\"%s\" to be a string", key);
    *out = strdup(v->u.string.chars);
    return *out ? 0 : whet_fail(e, "%s: out of memory", whet_json_doc_name(doc));
}

static int get_number(const whet_json_doc *doc, const whet_json *root, const char *key, double dflt, double min,
                      double *out, whet_err *e)
{
    const whet_json *v = lookup(root, key);
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (v->type != WHET_JSON_NUMBER || !isfinite(v->u.number.value) || v->u.number.value < min)
        return whet_json_fail_at(e, doc, v, "\"%s\" to be a number of at least %g", key, min);
    *out = v->u.number.value;
    return 0;
}

static int get_flag(const whet_json_doc *doc, const whet_json *root, const char *key, int *out, whet_err *e)
{
    const whet_json *v = lookup(root, key);
    *out = 0;
    if (!v)
        return 0;
    if (v->type != WHET_JSON_TRUE && v->type != WHET_JSON_FALSE)
        return whet_json_fail_at(e, doc, v, "\"%s\" to be true or false", key);
    *out = v->type == WHET_JSON_TRUE;
    return 0;
}

static int read_patterns(const whet_json_doc *doc, const whet_json *root, const char *key, int integer,
                         whet_peft_pattern **out, size_t *n, whet_err *e)
{
    const whet_json *v = lookup(root, key);
    if (!v)
        return 0;
    if (v->type != WHET_JSON_OBJECT)
        return whet_json_fail_at(e, doc, v, "\"%s\" to be an object {pattern: value}", key);
    if (v->u.object.count == 0)
        return 0;
    *out = calloc(v->u.object.count, sizeof **out);
    if (!*out)
        return whet_fail(e, "%s: out of memory", whet_json_doc_name(doc));
    for (size_t i = 0; i < v->u.object.count; i++) {
        const whet_json_member *mb = &v->u.object.members[i];
        const whet_json *x = &mb->value;
        int ok = x->type == WHET_JSON_NUMBER && isfinite(x->u.number.value) &&
                 (integer ? x->u.number.int_status == WHET_JSON_INT_EXACT && x->u.number.integer >= 1 &&
                                x->u.number.integer <= 1 << 20
                          : x->u.number.value >= 0);
        if (!ok)
            return whet_json_fail_at(e, doc, x, "\"%s\" values to be %s", key,
                                     integer ? "ranks from 1 to 2^20" : "non-negative numbers");
        (*out)[i].value = x->u.number.value;
        (*out)[i].pattern = strdup(mb->key);
        (*n)++;
        if (!(*out)[i].pattern)
            return whet_fail(e, "%s: out of memory", whet_json_doc_name(doc));
    }
    return 0;
}

/* Keys whose presence (non-null, non-empty, non-false) changes what the
 * adapter computes in ways whet does not implement. */
static int refuse_unsupported(const whet_json_doc *doc, const whet_json *root, whet_err *e)
{
    static const struct {
        const char *key, *why;
    } refused[] = {
        {"use_dora", "DoRA adapters are not supported"},
        {"modules_to_save", "fully trained extra modules (modules_to_save) are not supported"},
        {"layers_pattern", "layers_pattern is not supported (layers are found by whet's own names)"},
        {"layer_replication", "layer_replication is not supported"},
        {"trainable_token_indices", "trainable_token_indices is not supported"},
        {"use_qalora", "QA-LoRA adapters are not supported"},
        {"lora_bias", "LoRA bias terms are not supported"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        const whet_json *v = lookup(root, refused[i].key);
        if (!v || v->type == WHET_JSON_FALSE || ((v->type == WHET_JSON_ARRAY || v->type == WHET_JSON_OBJECT) &&
                                                 whet_json_count(v) == 0))
            continue;
        return whet_json_fail_at(e, doc, v, "\"%s\" to be null, false or empty (%s)", refused[i].key,
                                 refused[i].why);
    }
    return 0;
}

static int parse_root(whet_peft_config *cfg, const whet_json_doc *doc, whet_err *e)
{
    const whet_json *root = whet_json_root(doc);
    if (root->type != WHET_JSON_OBJECT)
        return whet_json_fail_at(e, doc, root, "an object");
    const whet_json *v = lookup(root, "peft_type");
    if (!v)
        return whet_json_fail_missing(e, doc, root, "peft_type");
    if (v->type != WHET_JSON_STRING || strcmp(v->u.string.chars, "LORA") != 0)
        return whet_json_fail_at(e, doc, v, "\"peft_type\" to be \"LORA\" (the only adapter type whet applies)");
    v = lookup(root, "r");
    int64_t r = 8; /* LoraConfig's default */
    if (v && whet_json_int64(doc, v, 1, 1 << 20, &r, e))
        return -1;
    cfg->r = (size_t)r;
    if (get_number(doc, root, "lora_alpha", 8, 0, &cfg->lora_alpha, e) ||
        get_number(doc, root, "lora_dropout", 0, 0, &cfg->lora_dropout, e) ||
        get_flag(doc, root, "use_rslora", &cfg->use_rslora, e) ||
        get_flag(doc, root, "fan_in_fan_out", &cfg->fan_in_fan_out, e) ||
        get_flag(doc, root, "inference_mode", &cfg->inference_mode, e))
        return -1;
    if (cfg->lora_dropout >= 1)
        return whet_json_fail_at(e, doc, lookup(root, "lora_dropout"), "\"lora_dropout\" to be less than 1");
    v = lookup(root, "bias");
    if (v && (v->type != WHET_JSON_STRING || strcmp(v->u.string.chars, "none") != 0))
        return whet_json_fail_at(e, doc, v, "\"bias\" to be \"none\" (trained biases are not supported)");
    if (refuse_unsupported(doc, root, e))
        return -1;
    v = lookup(root, "target_modules");
    if (!v)
        return whet_json_fail_missing(e, doc, root, "target_modules");
    if (v->type == WHET_JSON_STRING) {
        if (dup_string(doc, v, "target_modules", &cfg->target_regex, e))
            return -1;
    } else if (v->type == WHET_JSON_ARRAY && v->u.array.count > 0) {
        cfg->target_modules = calloc(v->u.array.count, sizeof *cfg->target_modules);
        if (!cfg->target_modules)
            return whet_fail(e, "%s: out of memory", whet_json_doc_name(doc));
        for (size_t i = 0; i < v->u.array.count; i++) {
            if (dup_string(doc, &v->u.array.items[i], "target_modules", &cfg->target_modules[i], e))
                return -1;
            cfg->n_target_modules++;
        }
    } else {
        return whet_json_fail_at(e, doc, v, "\"target_modules\" to be a non-empty list of module names or a regex");
    }
    if (read_patterns(doc, root, "rank_pattern", 1, &cfg->rank_pattern, &cfg->n_rank_pattern, e) ||
        read_patterns(doc, root, "alpha_pattern", 0, &cfg->alpha_pattern, &cfg->n_alpha_pattern, e))
        return -1;
    v = lookup(root, "layers_to_transform");
    if (v) {
        size_t n = v->type == WHET_JSON_ARRAY ? v->u.array.count : 1;
        cfg->layers_to_transform = calloc(n ? n : 1, sizeof *cfg->layers_to_transform);
        if (!cfg->layers_to_transform)
            return whet_fail(e, "%s: out of memory", whet_json_doc_name(doc));
        for (size_t i = 0; i < n; i++) {
            int64_t l;
            if (whet_json_int64(doc, v->type == WHET_JSON_ARRAY ? &v->u.array.items[i] : v, 0, 1 << 20, &l, e))
                return -1;
            cfg->layers_to_transform[cfg->n_layers_to_transform++] = (int)l;
        }
    }
    v = lookup(root, "base_model_name_or_path");
    if (v && dup_string(doc, v, "base_model_name_or_path", &cfg->base_model_name_or_path, e))
        return -1;
    v = lookup(root, "task_type");
    if (v) {
        if (dup_string(doc, v, "task_type", &cfg->task_type, e))
            return -1;
        if (strcmp(cfg->task_type, "CAUSAL_LM") != 0)
            return whet_json_fail_at(e, doc, v, "\"task_type\" to be \"CAUSAL_LM\" or null (whet runs causal LMs)");
    }
    return 0;
}

int whet_peft_config_parse(whet_peft_config *cfg, const char *text, size_t size, const char *name, whet_err *e)
{
    memset(cfg, 0, sizeof *cfg);
    whet_json_doc *doc;
    if (whet_json_parse(&doc, text, size, name, NULL, e))
        return -1;
    int rc = parse_root(cfg, doc, e);
    whet_json_free(doc);
    if (rc)
        whet_peft_config_free(cfg);
    return rc;
}

int whet_peft_config_load(whet_peft_config *cfg, const char *dir, whet_err *e)
{
    memset(cfg, 0, sizeof *cfg);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, WHET_PEFT_CONFIG);
    struct stat st;
    if (stat(dir, &st) != 0)
        return whet_fail(e, "%s: %s (expected a PEFT adapter directory)", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return whet_fail(e, "%s: not a directory (expected a PEFT adapter directory holding %s and %s)", dir,
                         WHET_PEFT_CONFIG, WHET_PEFT_WEIGHTS);
    char *text;
    size_t size;
    if (whet_read_file(path, &text, &size, e))
        return -1;
    int rc = whet_peft_config_parse(cfg, text, size, path, e);
    free(text);
    return rc;
}

/* ---- matching ----------------------------------------------------------------- */

/* Whether subject matches pattern as a whole (anchored at both ends). */
static int regex_full_match(const char *pattern, const char *subject, const char *what, whet_err *e)
{
    int code;
    PCRE2_SIZE offset;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED | PCRE2_ENDANCHORED |
                                   PCRE2_UTF, &code, &offset, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        return whet_fail(e, "%s: regex \"%s\" at offset %zu: %s", what, pattern, (size_t)offset, (const char *)msg);
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int rc = md ? pcre2_match(re, (PCRE2_SPTR)subject, strlen(subject), 0, 0, md, NULL) : PCRE2_ERROR_NOMEMORY;
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    if (rc < 0)
        return whet_fail(e, "%s: regex \"%s\" failed on \"%s\" (PCRE2 error %d)", what, pattern, subject, rc);
    return 1;
}

static int ends_with_module(const char *module, const char *key)
{
    size_t n = strlen(module), k = strlen(key);
    return strcmp(module, key) == 0 || (n > k && module[n - k - 1] == '.' && strcmp(module + n - k, key) == 0);
}

int whet_peft_targets_module(const whet_peft_config *cfg, const char *module, int all_linear_ok, whet_err *e)
{
    if (cfg->target_regex) {
        if (strcmp(cfg->target_regex, "all-linear") == 0)
            return all_linear_ok;
        return regex_full_match(cfg->target_regex, module, "adapter_config.json: target_modules", e);
    }
    for (size_t i = 0; i < cfg->n_target_modules; i++)
        if (ends_with_module(module, cfg->target_modules[i]))
            return 1;
    return 0;
}

/* PEFT's get_pattern_key: the first key k with re.match(rf"(.*\.)?({k})$", module). */
static int pattern_value(const whet_peft_pattern *p, size_t n, const char *module, const char *what, double *value,
                         whet_err *e)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(p[i].pattern) + 16;
        char *re = malloc(len);
        if (!re)
            return whet_fail(e, "out of memory");
        snprintf(re, len, "(.*\\.)?(%s)", p[i].pattern);
        int m = regex_full_match(re, module, what, e);
        free(re);
        if (m < 0)
            return -1;
        if (m) {
            *value = p[i].value;
            return 1;
        }
    }
    return 0;
}

int whet_peft_module_rank_alpha(const whet_peft_config *cfg, const char *module, size_t *r, double *alpha,
                                whet_err *e)
{
    double v;
    int m = pattern_value(cfg->rank_pattern, cfg->n_rank_pattern, module, "adapter_config.json: rank_pattern", &v, e);
    if (m < 0)
        return -1;
    *r = m ? (size_t)v : cfg->r;
    m = pattern_value(cfg->alpha_pattern, cfg->n_alpha_pattern, module, "adapter_config.json: alpha_pattern", &v, e);
    if (m < 0)
        return -1;
    *alpha = m ? v : cfg->lora_alpha;
    return 0;
}

int whet_peft_layer_included(const whet_peft_config *cfg, size_t l)
{
    if (!cfg->layers_to_transform)
        return 1;
    for (size_t i = 0; i < cfg->n_layers_to_transform; i++)
        if ((size_t)cfg->layers_to_transform[i] == l)
            return 1;
    return 0;
}

/* ---- writing -------------------------------------------------------------------- */

/* A number as PEFT writes it: integers without a fraction (lora_alpha is an
 * int in most configs), anything else as the shortest double. */
static void write_number(whet_json_writer *w, double v)
{
    if (v == floor(v) && fabs(v) < 1e15)
        whet_json_write_int(w, (int64_t)v);
    else
        whet_json_write_double(w, v);
}

static void write_patterns(whet_json_writer *w, const char *key, const whet_peft_pattern *p, size_t n, int integer)
{
    whet_json_key(w, key);
    whet_json_begin_object(w);
    for (size_t i = 0; i < n; i++) {
        whet_json_key(w, p[i].pattern);
        if (integer)
            whet_json_write_int(w, (int64_t)p[i].value);
        else
            write_number(w, p[i].value);
    }
    whet_json_end_object(w);
}

int whet_peft_config_to_json(const whet_peft_config *cfg, char **text, size_t *len, whet_err *e)
{
    whet_json_writer w;
    whet_json_writer_init(&w, 2);
    whet_json_begin_object(&w);
    /* keys in sorted order, as PEFT's to_json_string(sort_keys=True) writes them */
    write_patterns(&w, "alpha_pattern", cfg->alpha_pattern, cfg->n_alpha_pattern, 0);
    whet_json_key(&w, "auto_mapping");
    whet_json_write_null(&w);
    whet_json_key(&w, "base_model_name_or_path");
    if (cfg->base_model_name_or_path)
        whet_json_write_string(&w, cfg->base_model_name_or_path);
    else
        whet_json_write_null(&w);
    whet_json_key(&w, "bias");
    whet_json_write_string(&w, "none");
    whet_json_key(&w, "fan_in_fan_out");
    whet_json_write_bool(&w, cfg->fan_in_fan_out);
    whet_json_key(&w, "inference_mode");
    whet_json_write_bool(&w, 1);
    whet_json_key(&w, "init_lora_weights");
    whet_json_write_bool(&w, 1);
    whet_json_key(&w, "layers_pattern");
    whet_json_write_null(&w);
    whet_json_key(&w, "layers_to_transform");
    if (cfg->layers_to_transform) {
        whet_json_begin_array(&w);
        for (size_t i = 0; i < cfg->n_layers_to_transform; i++)
            whet_json_write_int(&w, cfg->layers_to_transform[i]);
        whet_json_end_array(&w);
    } else {
        whet_json_write_null(&w);
    }
    whet_json_key(&w, "lora_alpha");
    write_number(&w, cfg->lora_alpha);
    whet_json_key(&w, "lora_dropout");
    whet_json_write_double(&w, cfg->lora_dropout);
    whet_json_key(&w, "modules_to_save");
    whet_json_write_null(&w);
    whet_json_key(&w, "peft_type");
    whet_json_write_string(&w, "LORA");
    whet_json_key(&w, "r");
    whet_json_write_int(&w, (int64_t)cfg->r);
    write_patterns(&w, "rank_pattern", cfg->rank_pattern, cfg->n_rank_pattern, 1);
    whet_json_key(&w, "revision");
    whet_json_write_null(&w);
    whet_json_key(&w, "target_modules");
    whet_json_begin_array(&w);
    for (size_t i = 0; i < cfg->n_target_modules; i++)
        whet_json_write_string(&w, cfg->target_modules[i]);
    whet_json_end_array(&w);
    whet_json_key(&w, "task_type");
    whet_json_write_string(&w, "CAUSAL_LM");
    whet_json_key(&w, "use_dora");
    whet_json_write_bool(&w, 0);
    whet_json_key(&w, "use_rslora");
    whet_json_write_bool(&w, cfg->use_rslora);
    whet_json_end_object(&w);
    const char *out;
    int rc = whet_json_writer_finish(&w, WHET_PEFT_CONFIG, &out, len, e);
    if (rc == 0) {
        *text = malloc(*len + 2);
        if (!*text)
            rc = whet_fail(e, "%s: out of memory", WHET_PEFT_CONFIG);
        else {
            memcpy(*text, out, *len);
            (*text)[(*len)++] = '\n';
            (*text)[*len] = 0;
        }
    }
    whet_json_writer_free(&w);
    return rc;
}

/* ---- files ------------------------------------------------------------------------ */

int whet_peft_open_weights(whet_safetensors **out, const char *dir, whet_err *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, WHET_PEFT_WEIGHTS);
    struct stat st;
    if (stat(path, &st) != 0) {
        char bin[4096];
        snprintf(bin, sizeof bin, "%s/adapter_model.bin", dir);
        if (stat(bin, &st) == 0)
            return whet_fail(e, "%s: a pickled PyTorch adapter; whet reads %s only (convert it with PEFT: "
                             "model.save_pretrained(dir, safe_serialization=True))", bin, WHET_PEFT_WEIGHTS);
        return whet_fail(e, "%s: %s (expected the adapter's weights beside %s)", path, strerror(errno),
                         WHET_PEFT_CONFIG);
    }
    return whet_st_open(out, path, e);
}

int whet_make_dir(const char *dir, whet_err *e)
{
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return whet_fail(e, "%s: exists and is not a directory", dir);
        return 0;
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return whet_fail(e, "%s: cannot create the directory: %s", dir, strerror(errno));
    return 0;
}
