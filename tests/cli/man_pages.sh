# Every command has a man page, and the options its --help lists are exactly
# the options its page documents, so the two never drift.
. "$(dirname "$0")/lib.inc"
top=$(cd "$(dirname "$0")/../.." && pwd)

options_in() { grep -oE -- '--[a-z][a-z0-9-]*' | sort -u; }

[ -f "$top/man/whet.1" ] || fail "man/whet.1 missing"
run 0 --help
commands=$(sed -n 's/^  \([a-z][a-z-]*\) .*/\1/p' "$out" | grep -v '^help$')
[ -n "$commands" ] || fail "no commands found in whet --help"
for cmd in $commands; do
    page="$top/man/whet-$cmd.1"
    grep -q "whet-$cmd" "$top/man/whet.1" || fail "whet(1) does not mention whet-$cmd"
    if [ ! -f "$page" ]; then
        fail "man/whet-$cmd.1 missing"
        continue
    fi
    run 0 "$cmd" --help
    from_help=$(options_in <"$out")
    # man sources spell a dash \- ; undo that before collecting options
    from_page=$(sed 's/\\-/-/g; s/\\f[BIRP]//g' "$page" | options_in)
    if [ "$from_help" != "$from_page" ]; then
        fail "whet $cmd: --help and man/whet-$cmd.1 list different options:
--help: $(echo $from_help)
page:   $(echo $from_page)"
    fi
done
finish
