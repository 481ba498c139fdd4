/* whet: CPU fine-tuning toolkit. Dispatches to src/cli/<command>.c.
 * Exit status, for every command (whet(1) EXIT STATUS): 0 success, 1 an
 * error (bad usage included), 2 a gate or a check failed. */
#include "cli/commands.h"
#include "cli/common.h"
#include "eval/eval.h"
#include "util/log.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct command {
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
    fprintf(out, "\n'whet COMMAND --help' describes each command; 'whet COMMAND --version' and\n"
                 "'whet --version' print the version. Environment: WHET_ISA, WHET_THREADS, NO_COLOR.\n"
                 "Exit status: 0 success, 1 error (bad usage included), 2 a gate or check failed.\n");
}

static const command *find_command(const char *name)
{
    for (int i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* The command a mistyped name most likely meant: one it begins (gen →
 * generate), else the nearest within a third of its length (at least 2
 * edits); NULL when none is close. */
static const char *closest_command(const char *name)
{
    size_t len = strlen(name), best = SIZE_MAX;
    const char *found = NULL;
    for (int i = 0; i < NCOMMANDS && len >= 2; i++)
        if (strncmp(commands[i].name, name, len) == 0)
            return commands[i].name;
    for (int i = 0; i < NCOMMANDS; i++) {
        size_t d = whet_eval_levenshtein(name, len, commands[i].name, strlen(commands[i].name));
        if (d < best)
            best = d, found = commands[i].name;
    }
    size_t allowed = len / 3 > 2 ? len / 3 : 2;
    return best <= allowed ? found : NULL;
}

static int unknown_command(const char *name, const char *what)
{
    const char *near = closest_command(name);
    if (near)
        whet_error("%s '%s'; did you mean '%s'? (see 'whet --help')", what, name, near);
    else
        whet_error("%s '%s' (see 'whet --help')", what, name);
    return WHET_EXIT_ERROR;
}

/* ---- whet help COMMAND ---------------------------------------------------- */

/* Runs argv[0] (looked up in PATH) and waits: its exit status, or 127 when it
 * could not be started. Standard output and error are whet's. */
static int run_program(char *const argv[])
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return 127;
    if (pid == 0) {
        execvp(argv[0], argv);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return 127;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The page of a build's source tree: man/PAGE.1 up to three levels above the
 * directory of the running program (build/whet, build/aarch64/whet), or the
 * installed share/man/man1/PAGE.1 beside its bin/. */
static int page_beside_program(const char *page, char *out, size_t size)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return 0;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash)
        return 0;
    *slash = 0;
    for (int up = 1; up <= 3; up++) {
        slash = strrchr(exe, '/');
        if (!slash)
            return 0;
        *slash = 0;
        if (snprintf(out, size, "%s/man/%s.1", exe, page) < (int)size && is_file(out))
            return 1;
        if (snprintf(out, size, "%s/share/man/man1/%s.1", exe, page) < (int)size && is_file(out))
            return 1;
    }
    return 0;
}

enum { MAN_NO_PAGE = 16 }; /* man-db: no such page */

/* man -l on the page next to this program when there is one (a build shows
 * its own pages), else man PAGE; with neither man nor mandoc, or no page,
 * the command's --help text. */
static int help(const char *topic)
{
    const command *cmd = NULL;
    if (topic && !(cmd = find_command(topic)))
        return unknown_command(topic, "no command");
    char page[64], path[PATH_MAX + 64];
    snprintf(page, sizeof page, "whet%s%s", cmd ? "-" : "", cmd ? cmd->name : "");
    int rc;
    if (page_beside_program(page, path, sizeof path)) {
        rc = run_program((char *const[]){"man", "-l", path, NULL});
        if (rc == 127)
            rc = run_program((char *const[]){"mandoc", path, NULL});
    } else {
        rc = run_program((char *const[]){"man", page, NULL});
    }
    if (rc == 0)
        return WHET_EXIT_OK;
    if (rc == 127)
        whet_warn("help: no man or mandoc to show %s; here is the --help text", page);
    else if (rc == MAN_NO_PAGE)
        whet_warn("help: no manual page %s installed; here is the --help text", page);
    else
        return WHET_EXIT_ERROR; /* man said why */
    if (!cmd) {
        usage(stdout);
        return WHET_EXIT_OK;
    }
    char *argv[] = {(char *)cmd->name, "--help", NULL};
    return cmd->run(2, argv);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        whet_error("expected a COMMAND");
        usage(stderr);
        return WHET_EXIT_ERROR;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        usage(stdout);
        return WHET_EXIT_OK;
    }
    if (strcmp(name, "--version") == 0) {
        cli_print_version();
        return WHET_EXIT_OK;
    }
    if (strcmp(name, "help") == 0) {
        if (argc > 3) {
            whet_error("help: expected one COMMAND, got '%s' too", argv[3]);
            return WHET_EXIT_ERROR;
        }
        return help(argc > 2 ? argv[2] : NULL);
    }
    if (name[0] == '-') {
        whet_error("unknown option '%s' (see 'whet --help')", name);
        return WHET_EXIT_ERROR;
    }
    const command *cmd = find_command(name);
    if (!cmd)
        return unknown_command(name, "unknown command");
    /* every command, whatever its own options: whet CMD --version */
    if (argc == 3 && strcmp(argv[2], "--version") == 0) {
        cli_print_version();
        return WHET_EXIT_OK;
    }
    return cmd->run(argc - 1, argv + 1);
}
