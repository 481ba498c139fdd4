/* The subcommands: each is a main() of its own, in src/cli/<name>.c.
 * Exit status (whet(1) EXIT STATUS): 0 success; 1 an error, bad usage
 * included; 2 a gate or a check failed (whet eval, whet train --gate, whet
 * data check). */
#ifndef WHET_COMMANDS_H
#define WHET_COMMANDS_H

enum { WHET_EXIT_OK = 0, WHET_EXIT_ERROR = 1, WHET_EXIT_GATE = 2 };

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
