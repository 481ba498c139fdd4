# whet tokenize: ids as a JSON array, --no-special, --decode, --json, stdin, errors.
. "$(dirname "$0")/lib.inc"
data="$(cd "$(dirname "$0")/.." && pwd)/data/tokenizers"

# GPT-2's ids for this text, from HF tokenizers (tests/data/tokenizers/gpt2.golden.json's tool)
run 0 tokenize --model "$data/gpt2" --text "Hello world"
stdout_has '^\[15496, 995\]$'

# Qwen3 adds no BOS; a special token written in the text is one id
run 0 tokenize --model "$data/qwen3" --text "<|im_start|>user"
stdout_has '^\[151644, 872\]$'

printf 'Hello world' >"$out.in"
run 0 tokenize --model "$data/gpt2" --file "$out.in"
stdout_has '^\[15496, 995\]$'
rm -f "$out.in"

# decode round trip through standard input
echo '[15496, 995, 11]' | $WHET tokenize --model "$data/gpt2" --decode --file - >"$out" 2>"$err" ||
    fail "decode from stdin failed"
[ "$(cat "$out")" = "Hello world," ] || fail "decode gave '$(cat "$out")'"

# --json: the same ids and their count; decoded text as a JSON string
run 0 tokenize --model "$data/gpt2" --text "Hello world" --json
stdout_has '^\{"ids":\[15496,995\],"count":2\}$'
run 0 tokenize --model "$data/gpt2" --decode --text '[15496, 995, 198]' --json
stdout_has '^\{"text":"Hello world\\n"\}$'

run 1 tokenize --model "$data/gpt2" --decode --text '[15496, -3]'
stderr_has '^whet: --text: line 1, column 9 \(byte 8\): expected an integer'
run 1 tokenize --model "$data/gpt2" --decode --text '{"a": 1}'
stderr_has 'expected a JSON array of token ids'
run 1 tokenize --model /no/such/model --text hi
stderr_has '^whet: /no/such/model'
run 1 tokenize --text hi
stderr_has -- '--model is required'
run 1 tokenize --model "$data/gpt2"
stderr_has 'exactly one of --text and --file'
run 1 tokenize --model "$data/gpt2" --text a --file b
finish
