# whet as one Unix tool (whet(1) CONVENTIONS, EXIT STATUS): for every command
# of whet --help, --help exits 0 with a usage on standard output, --version
# exits 0, an unknown option exits 1 with "whet:" on standard error and
# nothing on standard output; output to a pipe (and with NO_COLOR, on a
# terminal) holds no escape sequences; whet help shows the manual pages; a
# mistyped command names the closest one.
. "$(dirname "$0")/lib.inc"
. "$(dirname "$0")/models.inc"
top=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$out" "$err"' EXIT
WHET_THREADS=1
export WHET_THREADS

esc=$(printf '\033')
no_escapes() { # WHAT: neither stdout nor stderr holds an ESC byte
    if grep -q "$esc" "$out" "$err"; then
        fail "$1: escape sequences in the output"
    fi
}

run 0 --help
commands=$(sed -n 's/^  \([a-z][a-z-]*\) .*/\1/p' "$out" | grep -v '^help$')
[ "$(echo "$commands" | wc -l)" -ge 10 ] || fail "whet --help lists $(echo $commands) (expected every command)"
version=$($WHET --version)
echo "$version" | grep -qE '^whet [0-9]+\.[0-9]+\.[0-9]+$' || fail "whet --version printed '$version'"

for cmd in $commands; do
    run 0 "$cmd" --help
    stdout_has "^usage: whet $cmd"
    no_escapes "whet $cmd --help"
    run 0 "$cmd" --version
    [ "$(cat "$out")" = "$version" ] || fail "whet $cmd --version printed '$(cat "$out")', not '$version'"
    # an unknown option, after a subcommand for the commands that take one
    case $cmd in
    data) set -- data check "$top/tests/data/datasets/text.jsonl" ;;
    bench) set -- bench gemm ;;
    *) set -- "$cmd" ;;
    esac
    run 1 "$@" --no-such-option
    stdout_empty
    stderr_has "^whet: .*no-such-option"
    no_escapes "whet $* --no-such-option"
    run 1 "$@" --no-such-option=1
    stderr_has "^whet: "
done

# Real work of each command that is quick, to a pipe, with and without
# NO_COLOR: no escape sequences, and the errors and warnings start "whet:".
make_model llama "$tmp/llama" chatml
m="$tmp/llama"
ds="$top/tests/data/datasets"
work() { # STATUS ARGS...: run it both ways
    _status=$1
    shift
    run "$_status" "$@"
    no_escapes "whet $*"
    NO_COLOR=1
    export NO_COLOR
    run "$_status" "$@"
    no_escapes "NO_COLOR=1 whet $*"
    unset NO_COLOR
}
work 0 cpu
work 0 info "$m"
work 0 tokenize --model "$m" --text '<t9><t10>'
work 0 score --model "$m" --text '<t9><t10><t11><t12>'
work 0 generate --model "$m" --prompt '<t9>' --max-tokens 3 --temperature 0
work 0 generate --model "$m" --chat '<t9>' --max-tokens 3 --temperature 0 --json
stdout_has '^\{"model":.*"generated_tokens":[0-3],'
work 0 eval --model "$m" --no-cache --out "$tmp/eval" "$top/tests/data/eval/basic.jsonl"
work 0 export --model "$m" --format gguf --out "$tmp/m.gguf" --json
stdout_has '^\{"wrote":"GGUF model","path":'
work 0 data show "$ds/chat.jsonl" --model "$m" -n 1
stderr_has '^whet: trained tokens are between'
work 0 data stats "$ds/chat.jsonl" --model "$m"
work 2 data check "$ds/errors.jsonl"
work 1 info "$tmp/none"
stderr_has "^whet: $tmp/none"

# On a terminal (script(1) gives one), whet data show colours the trained
# tokens unless NO_COLOR is set and not empty.
if command -v script >/dev/null 2>&1 && [ -z "${EMULATOR:-}" ]; then
    shown="$WHET data show $ds/chat.jsonl --model $m -n 1"
    script -qec "$shown" /dev/null >"$out" 2>&1 </dev/null
    grep -q "$esc\[1;32m" "$out" || fail "whet data show on a terminal: no colour"
    NO_COLOR=1 script -qec "$shown" /dev/null >"$out" 2>&1 </dev/null
    grep -q "$esc\[" "$out" && fail "NO_COLOR=1 whet data show on a terminal: escape sequences"
    NO_COLOR= script -qec "$shown" /dev/null >"$out" 2>&1 </dev/null
    grep -q "$esc\[1;32m" "$out" || fail "NO_COLOR set but empty: no colour (whet(1): only a non-empty NO_COLOR counts)"
else
    echo "skip: the terminal checks (no script(1), or under an emulator)"
fi

# Usage errors and mistyped commands: exit 1, the closest command named.
run 1
stderr_has '^whet: expected a COMMAND'
stdout_empty
run 1 genrate
stderr_has "^whet: unknown command 'genrate'; did you mean 'generate'\?"
stdout_empty
run 1 toknize
stderr_has "did you mean 'tokenize'"
run 1 qqqqqqqq
stderr_has "^whet: unknown command 'qqqqqqqq' \(see 'whet --help'\)$"
run 1 --no-such-option
stderr_has "^whet: unknown option '--no-such-option'"
run 1 help genrate
stderr_has "^whet: no command 'genrate'; did you mean 'generate'\?"

# whet help COMMAND: the page of the source tree (for a whet built in it),
# formatted by man or mandoc (its NAME line); without either, the command's
# --help text.
for word in $WHET; do bin=$word; done # the program, after any emulator
case $(cd "$(dirname "$bin")" && pwd) in
"$top"/*) in_tree=1 ;;
*) in_tree= ;;
esac
if [ -z "$in_tree" ]; then
    echo "skip: whet help pages ($bin is not built in $top)"
elif command -v man >/dev/null 2>&1 || command -v mandoc >/dev/null 2>&1; then
    for cmd in train data; do # man takes most of a second a page
        run 0 help "$cmd"
        stdout_has "whet-$cmd +- "
    done
    run 0 help
    stdout_has "whet +- +fine-tune"
else
    echo "skip: whet help pages (neither man nor mandoc installed)"
fi
if [ -z "${EMULATOR:-}" ]; then
    mkdir "$tmp/empty-path"
    saved_path=$PATH
    PATH="$tmp/empty-path"
    run 0 help train
    PATH=$saved_path
    stdout_has '^usage: whet train'
    stderr_has '^whet: warning: help: no man or mandoc'
    # a whet with no pages beside it and none installed (an empty MANPATH)
    if command -v man >/dev/null 2>&1; then
        mkdir "$tmp/bin" "$tmp/no-pages"
        cp "$bin" "$tmp/bin/whet"
        MANPATH="$tmp/no-pages" "$tmp/bin/whet" help cpu >"$out" 2>"$err"
        [ $? -eq 0 ] || fail "whet help cpu without pages: exit status not 0"
        stdout_has '^usage: whet cpu'
        stderr_has '^whet: warning: help: no manual page whet-cpu installed'
    fi
fi
finish
