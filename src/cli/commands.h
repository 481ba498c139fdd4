/* The subcommands: each is a main() of its own, in src/cli/<name>.c.
 * Exit status: 0 success, 1 error, 2 bad usage (documented in whet(1)). */
#ifndef WHET_COMMANDS_H
#define WHET_COMMANDS_H

enum { WHET_EXIT_OK = 0, WHET_EXIT_ERROR = 1, WHET_EXIT_USAGE = 2 };

int cmd_cpu(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_export(int argc, char **argv);

#endif
