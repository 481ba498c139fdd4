# whet as a Unix tool: version, help, usage errors and their exit statuses.
. "$(dirname "$0")/lib.inc"

run 0 --version
stdout_has '^whet [0-9]+\.[0-9]+\.[0-9]+$'

run 0 --help
stdout_has '^usage: whet'
stdout_has '^  cpu '

run 1
stderr_has '^usage: whet'
stdout_empty

run 1 no-such-command
stderr_has "^whet: unknown command 'no-such-command'"
stdout_empty

run 1 help no-such-command
stderr_has "^whet: no command 'no-such-command'"

finish
