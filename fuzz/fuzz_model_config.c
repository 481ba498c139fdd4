/* libFuzzer target for config.json → model description. Beyond "no crash":
 *  - a refusal starts with the file name the parser was given;
 *  - an accepted config is one the model code can size: positive dimensions,
 *    heads a multiple of KV heads, an even head_dim for RoPE, and memory
 *    figures that do not wrap around. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/config.h"
#include "model/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    whet_model_config cfg;
    whet_err e = {{0}};
    if (whet_config_parse(&cfg, (const char *)data, size, "config.json", &e) != 0) {
        check(strncmp(e.msg, "config.json", 11) == 0);
        return 0;
    }
    check(cfg.info != NULL);
    check(cfg.vocab > 0 && cfg.hidden > 0 && cfg.layers > 0 && cfg.heads > 0 && cfg.kv_heads > 0);
    check(cfg.heads % cfg.kv_heads == 0);
    check(cfg.head_dim > 0 && cfg.head_dim <= WHET_MAX_HEAD_DIM);
    if (cfg.info->positions == WHET_POS_ROPE)
        check(cfg.head_dim % 2 == 0);
    check(cfg.n_eos <= WHET_MAX_EOS_IDS);
    size_t params = whet_model_param_count(&cfg);
    check(params >= cfg.vocab * cfg.hidden / (cfg.tied ? 1 : 1));
    whet_memory_estimate m = whet_model_memory(&cfg, 1, 16, 1);
    check(m.weights >= params * sizeof(float));
    return 0;
}
