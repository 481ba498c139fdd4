/* whet: CPU fine-tuning toolkit. Dispatches to src/cli/<command>.c. */
#include "cli/commands.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"bench", cmd_bench, "measure GEMM throughput per ISA and layout, against OpenBLAS when installed"},
    {"cpu", cmd_cpu, "show CPU features, the measured FMA peak and the kernels chosen"},
    {"data", cmd_data, "check training data, its statistics, trained tokens, duplicates, eval overlap"},
    {"eval", cmd_eval, "run eval suites on a model, compare with a baseline run and gate (exit 2 on failure)"},
    {"export", cmd_export, "write a model or adapter as a PEFT adapter, an HF directory or GGUF"},
    {"generate", cmd_generate, "generate text from a prompt or a chat, streamed as it comes"},
    {"info", cmd_info, "describe a model: architecture, sizes, dtypes, chat template, memory needed"},
    {"score", cmd_score, "perplexity and bits per byte of a text under a model"},
    {"tokenize", cmd_tokenize, "encode text to token ids with a model's tokenizer (or decode ids)"},
    {"train", cmd_train, "fine-tune a model (LoRA or full) or train one from scratch, with checkpoints"},
};
enum { NCOMMANDS = sizeof commands / sizeof commands[0] };

static void usage(FILE *out)
{
    fprintf(out, "usage: whet [--version] [--help] COMMAND [ARGS]\n\ncommands:\n");
    for (int i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "  %-10s %s\n", "help", "show a command's manual page (whet help COMMAND)");
    fprintf(out, "\n'whet COMMAND --help' describes each command. Environment: WHET_ISA, WHET_THREADS.\n");
}

static int help(const char *topic)
{
    char page[64];
    snprintf(page, sizeof page, topic ? "whet-%s" : "whet", topic);
    if (topic) {
        int known = 0;
        for (int i = 0; i < NCOMMANDS; i++)
            known |= strcmp(commands[i].name, topic) == 0;
        if (!known) {
            whet_error("no command '%s' (see 'whet --help')", topic);
            return WHET_EXIT_USAGE;
        }
    }
    /* the installed page first, then the one in the source tree */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "man %s 2>/dev/null || man -l man/%s.%d", page, page, 1);
    return system(cmd) == 0 ? WHET_EXIT_OK : WHET_EXIT_ERROR;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return WHET_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        usage(stdout);
        return WHET_EXIT_OK;
    }
    if (strcmp(name, "--version") == 0) {
        printf("whet %s\n", WHET_VERSION);
        return WHET_EXIT_OK;
    }
    if (strcmp(name, "help") == 0)
        return help(argc > 2 ? argv[2] : NULL);
    for (int i = 0; i < NCOMMANDS; i++)
        if (strcmp(name, commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    whet_error("unknown command '%s' (see 'whet --help')", name);
    return WHET_EXIT_USAGE;
}
