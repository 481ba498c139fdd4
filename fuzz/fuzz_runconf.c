/* libFuzzer target for run files (whet train --config, DIR/run.conf).
 * Beyond "no crash":
 *  - a refusal names the file it was given;
 *  - an accepted file round-trips: the text whet writes for the resulting
 *    configuration reads back to the same configuration and the same text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "train/runconf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    whet_run_config c;
    whet_err e = {{0}};
    whet_run_config_defaults(&c);
    if (whet_run_config_parse(&c, (const char *)data, size, "run.conf", &e) != 0) {
        check(strncmp(e.msg, "run.conf", 8) == 0);
        return 0;
    }
    char *text = whet_run_config_text(&c);
    check(text != NULL);
    whet_run_config again;
    whet_run_config_defaults(&again);
    check(whet_run_config_parse(&again, text, strlen(text), "written", &e) == 0);
    char *text_again = whet_run_config_text(&again);
    check(text_again != NULL && strcmp(text, text_again) == 0);
    free(text);
    free(text_again);
    return 0;
}
