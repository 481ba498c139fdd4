/* PEFT adapter directories (huggingface/peft's save_pretrained layout):
 *
 *   DIR/adapter_config.json        {"peft_type": "LORA", "r": 8, "lora_alpha": 16, ...}
 *   DIR/adapter_model.safetensors  base_model.model.<HF module>.lora_A.weight [r, in]
 *                                  base_model.model.<HF module>.lora_B.weight [out, r]
 *
 * This file knows the format only: adapter_config.json read into a struct
 * (every key that changes the math is checked, the ones whet cannot honour
 * are refused with the key's position) and written back, and the tensor file
 * opened with the safetensors reader. Which HF module a tensor belongs to,
 * and how it becomes a whet_lora, is model/adapter.c's business.
 *
 * PEFT's matching rules, which the reader follows:
 *  - target_modules as a list: a module is adapted when its full name equals
 *    an entry or ends with "." + entry; as a string: the full name must match
 *    it as a regular expression (re.fullmatch); "all-linear": every linear
 *    layer but the output head.
 *  - rank_pattern / alpha_pattern: {pattern: value}; the first pattern
 *    (in the file's order) that matches the end of a module's name
 *    (re.match(rf"(.*\.)?({pattern})$", name)) gives its r / lora_alpha.
 *  - scaling = lora_alpha / r, or lora_alpha / √r with use_rslora. */
#ifndef WHET_PEFT_H
#define WHET_PEFT_H

#include <stddef.h>

#include "io/safetensors.h"
#include "util/file.h"

#define WHET_PEFT_CONFIG "adapter_config.json"
#define WHET_PEFT_WEIGHTS "adapter_model.safetensors"
#define WHET_PEFT_PREFIX "base_model.model."

/* A pattern → value pair of rank_pattern / alpha_pattern. */
typedef struct whet_peft_pattern {
    char *pattern;
    double value;
} whet_peft_pattern;

typedef struct whet_peft_config {
    size_t r;
    double lora_alpha;    /* PEFT's default when absent: 8 */
    double lora_dropout;
    int use_rslora;
    int fan_in_fan_out;
    int inference_mode;
    char **target_modules; /* the list form (NULL with target_regex) */
    size_t n_target_modules;
    char *target_regex;    /* the string form ("all-linear" included) */
    whet_peft_pattern *rank_pattern, *alpha_pattern;
    size_t n_rank_pattern, n_alpha_pattern;
    int *layers_to_transform; /* NULL: every layer */
    size_t n_layers_to_transform;
    char *base_model_name_or_path; /* NULL when absent or null */
    char *task_type;               /* NULL when absent or null */
} whet_peft_config;

/* Parses adapter_config.json text (name labels messages). Refuses what whet
 * cannot apply exactly: peft_type other than "LORA", bias other than "none",
 * use_dora, modules_to_save, layers_pattern, a task_type other than
 * CAUSAL_LM, r < 1, a negative alpha or dropout. */
int whet_peft_config_parse(whet_peft_config *cfg, const char *text, size_t size, const char *name, whet_err *e);
/* DIR/adapter_config.json */
int whet_peft_config_load(whet_peft_config *cfg, const char *dir, whet_err *e);
void whet_peft_config_free(whet_peft_config *cfg);

/* Writes cfg as adapter_config.json text (malloc'd, NUL-terminated), with the
 * keys PEFT's LoraConfig writes (peft_type "LORA", task_type "CAUSAL_LM",
 * bias "none", inference_mode true, ...), sorted as PEFT sorts them. */
int whet_peft_config_to_json(const whet_peft_config *cfg, char **text, size_t *len, whet_err *e);

/* Whether the module with the full HF name (e.g. "model.layers.0.self_attn.q_proj")
 * is adapted under cfg's target_modules; -1 on a bad regex. all_linear_ok
 * tells whether the module is a linear layer "all-linear" takes. */
int whet_peft_targets_module(const whet_peft_config *cfg, const char *module, int all_linear_ok, whet_err *e);
/* The module's r and lora_alpha after rank_pattern / alpha_pattern. */
int whet_peft_module_rank_alpha(const whet_peft_config *cfg, const char *module, size_t *r, double *alpha,
                                whet_err *e);
/* Whether layer l is adapted under layers_to_transform. */
int whet_peft_layer_included(const whet_peft_config *cfg, size_t l);

/* Opens DIR/adapter_model.safetensors; an adapter_model.bin alone (a pickle)
 * is refused with a message saying to convert it. */
int whet_peft_open_weights(whet_safetensors **out, const char *dir, whet_err *e);

/* Creates DIR when missing (one level, mode 0777 less the umask); an existing
 * non-directory is an error. */
int whet_make_dir(const char *dir, whet_err *e);

#endif
