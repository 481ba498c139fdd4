# whet generate: greedy decoding picks PyTorch's argmax (the goldens' logits)
# and agrees with itself across the KV-cache and prefill paths; seeds, thread
# counts, --stop, --max-tokens, EOS, top-k/top-p limits, chat rendering,
# UTF-8 streaming, and errors.
. "$(dirname "$0")/lib.inc"
. "$(dirname "$0")/models.inc"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$out" "$err"' EXIT
# one thread unless a run asks for more: under qemu (check-aarch64) the thread
# pool's spinning crawls when the host is busy
WHET_THREADS=1
export WHET_THREADS

# P= the text of ids, exact ($( ) would drop a trailing newline)
prompt_of() {
    P=$(text_of_ids "$@"; printf x)
    P=${P%x}
}
ntokens() { # MODEL FILE → how many tokens the text of FILE is
    $WHET tokenize --model "$1" --file "$2" | tr ',' '\n' | grep -c '[0-9]'
}

# 1. The first greedy token after each model's first golden row is the argmax of PyTorch's
#    logits at the row's last position (unless the two best are within 1e-3,
#    where whet's last bits may decide either way, or the argmax is a special
#    token or an EOS, which print nothing).
checked=0
for name in llama llama3_rope mistral qwen2 qwen3 gpt2; do
    make_model "$name" "$tmp/$name"
    golden="$models_dir/$name/golden.safetensors"
    set -- $(golden_shape "$golden" tokens)
    T=$2
    row=0
    while [ "$row" -lt 1 ]; do
        set -- $(golden_logits_row "$golden" "$row" $((T - 1)) | awk '
            { v[NR - 1] = $1 }
            END { best = 0; for (i = 1; i < NR; i++) if (v[i] > v[best]) best = i
                  second = -1e30; for (i = 0; i < NR; i++) if (i != best && v[i] > second) second = v[i]
                  print best, (v[best] - second > 1e-3) }')
        best=$1 clear=$2
        if [ "$clear" = 1 ] && [ "$best" -ge 9 ]; then
            prompt_of $(golden_tokens "$golden" "$row")
            run 0 generate --model "$tmp/$name" --prompt "$P" \
                --temperature 0 --max-tokens 1
            [ "$(cat "$out")" = "<t$best>" ] || fail "$name row $row: greedy gave '$(cat "$out")', PyTorch's argmax is $best"
            checked=$((checked + 1))
        fi
        row=$((row + 1))
    done
done
[ "$checked" -ge 4 ] || fail "only $checked golden rows had a clear argmax to check"
echo "greedy first token = PyTorch argmax on $checked golden rows"

# 2. Greedy text is the same in one run of 12 tokens as in a run of 5 followed
#    by a run of 7 from the prompt plus those 5 (prefill vs KV-cache steps).
for name in qwen2 gpt2; do
    prompt_of 11 12 13
    p=$P
    run 0 generate --model "$tmp/$name" --prompt "$p" --temperature 0 --max-tokens 12
    cp "$out" "$tmp/g12"
    [ "$(ntokens "$tmp/$name" "$tmp/g12")" = 12 ] || fail "$name: 12 greedy tokens did not print as 12 tokens"
    run 0 generate --model "$tmp/$name" --prompt "$p" --temperature 0 --max-tokens 5
    cp "$out" "$tmp/g5"
    run 0 generate --model "$tmp/$name" --prompt "$p$(cat "$tmp/g5"; printf x)" --temperature 0 --max-tokens 7
    p2=$(cat "$tmp/g5" "$out"; printf x)
    [ "$(cat "$tmp/g12"; printf x)" = "$p2" ] || fail "$name: greedy 12 tokens differ from 5 + 7"
    # top-k 1 and a tiny top-p keep only the most likely token: greedy again
    run 0 generate --model "$tmp/$name" --prompt "$p" --max-tokens 12 --top-k 1 --seed 3 --temperature 1.5
    cmp -s "$out" "$tmp/g12" || fail "$name: --top-k 1 differs from greedy"
    run 0 generate --model "$tmp/$name" --prompt "$p" --max-tokens 12 --top-p 1e-9 --seed 4 --temperature 1
    cmp -s "$out" "$tmp/g12" || fail "$name: --top-p 1e-9 differs from greedy"
done

# 3. Seeds: the same seed gives the same text for any thread count; different
#    seeds give different texts.
m="$tmp/llama"
p="<t9><t10>"
run 0 generate --model "$m" --prompt "$p" --seed 7 --temperature 1 --max-tokens 40 --threads 1
cp "$out" "$tmp/s7"
[ -s "$tmp/s7" ] || fail "sampling printed nothing"
if [ -z "${EMULATOR:-}" ]; then # see WHET_THREADS above
    run 0 generate --model "$m" --prompt "$p" --seed 7 --temperature 1 --max-tokens 40 --threads 3
    cmp -s "$out" "$tmp/s7" || fail "seed 7 gives different text on 1 and 3 threads"
fi
distinct=$(for s in 1 2 3; do
    $WHET generate --model "$m" --prompt "$p" --seed $s --temperature 1 --max-tokens 40 | cksum
done | sort -u | wc -l)
[ "$distinct" -ge 2 ] || fail "3 seeds gave only $distinct distinct texts"
# the defaults sample (temperature 0.7): two unseeded runs print something
run 0 generate --model "$m" --prompt "$p" --max-tokens 5
[ -s "$out" ] || fail "default sampling printed nothing"
# quiet in a pipe: nothing on standard error
[ ! -s "$err" ] || fail "generate wrote to standard error in a pipe: $(cat "$err")"

# 4. --max-tokens bounds the output; --stop ends it before the stop string,
#    also when the stop string spans two tokens.
run 0 generate --model "$m" --prompt "$p" --temperature 0 --max-tokens 10
cp "$out" "$tmp/g10"
full=$(cat "$tmp/g10")
[ "$(ntokens "$m" "$tmp/g10")" = 10 ] || fail "the 10-token greedy text should be 10 plain tokens: '$full'"
run 0 generate --model "$m" --prompt "$p" --temperature 0 --max-tokens 3
[ "$(ntokens "$m" "$out")" = 3 ] || fail "--max-tokens 3 printed $(ntokens "$m" "$out") tokens"
case $full in "$(cat "$out")"*) ;; *) fail "--max-tokens 3 is not a prefix of the 10-token text" ;; esac
fourth=$(printf '%s' "$full" | sed 's/></>\n</g' | sed -n 4p)
run 0 generate --model "$m" --prompt "$p" --temperature 0 --max-tokens 10 --stop "$fourth"
[ "$(cat "$out")" = "${full%%"$fourth"*}" ] || fail "--stop '$fourth' printed '$(cat "$out")'"
span=$(printf '%s' "$full" | cut -c9-14) # the end of token 2 and the start of token 3
run 0 generate --model "$m" --prompt "$p" --temperature 0 --max-tokens 10 --stop nomatch --stop "$span"
[ "$(cat "$out")" = "${full%%"$span"*}" ] || fail "--stop '$span' (across tokens) printed '$(cat "$out")'"
run 0 generate --model "$m" --prompt "$p" --temperature 0 --max-tokens 10 --stop "<t"
[ ! -s "$out" ] || fail "--stop '<t' should print nothing"

# 5. EOS: with the third greedy token declared eos_token_id in config.json,
#    generation stops before it.
third=$(printf '%s' "$full" | sed 's/></>\n</g' | sed -n 3p | tr -dc 0-9)
mkdir -p "$tmp/eos"
ln -s "$models_dir/llama/model.safetensors" "$tmp/eos/"
cp "$m/tokenizer.json" "$m/tokenizer_config.json" "$tmp/eos/"
sed "s/\"eos_token_id\": 2/\"eos_token_id\": $third/" "$models_dir/llama/config.json" >"$tmp/eos/config.json"
run 0 generate --model "$tmp/eos" --prompt "$p" --temperature 0 --max-tokens 10
[ "$(cat "$out")" = "${full%%"<t$third>"*}" ] || fail "EOS id $third: printed '$(cat "$out")'"

# The model's last position ends generation, with a warning: GPT-2's 64
# positions after a 60-token prompt leave room for 4 more inputs, so the fifth
# token generated is the last.
long=$(i=0; while [ $i -lt 60 ]; do printf '<t9>'; i=$((i + 1)); done)
run 0 generate --model "$tmp/gpt2" --prompt "$long" --temperature 0 --max-tokens 10
stderr_has "^whet: warning: generate: stopped at the model's 64 positions after 5 tokens$"
[ "$(ntokens "$tmp/gpt2" "$out")" = 5 ] || fail "5 tokens expected at the end of GPT-2's positions"

# 6. Chats render with the model's template and its generation prompt: the
#    same tokens as the ChatML text written out by hand.
make_model llama "$tmp/chat" chatml
run 0 generate --model "$tmp/chat" --chat "<t9><t10>" --temperature 0 --max-tokens 8
cp "$out" "$tmp/c1"
prompt_of 3 5 9 10 4 7 3 6
run 0 generate --model "$tmp/chat" --prompt "$P" --temperature 0 --max-tokens 8
cmp -s "$out" "$tmp/c1" || fail "--chat differs from its ChatML rendering given as --prompt"
run 0 generate --model "$tmp/chat" --chat "<t9><t10>" --system "<t30>" --temperature 0 --max-tokens 8
cp "$out" "$tmp/c2"
prompt_of 3 8 30 4 7 3 5 9 10 4 7 3 6
run 0 generate --model "$tmp/chat" --prompt "$P" --temperature 0 --max-tokens 8
cmp -s "$out" "$tmp/c2" || fail "--chat with --system differs from its ChatML rendering"
printf '[{"role": "system", "content": "<t30>"}, {"role": "user", "content": "<t9><t10>"}]\n' >"$tmp/m.json"
run 0 generate --model "$tmp/chat" --messages "$tmp/m.json" --temperature 0 --max-tokens 8
cmp -s "$out" "$tmp/c2" || fail "--messages differs from --system + --chat"
printf '{"messages": [{"role": "user", "content": "<t9><t10>"}], "id": 3}\n' >"$tmp/m2.json"
run 0 generate --model "$tmp/chat" --messages "$tmp/m2.json" --temperature 0 --max-tokens 8
cmp -s "$out" "$tmp/c1" || fail "--messages {\"messages\": [...]} differs from --chat"
# a model without a template takes one by name
run 0 generate --model "$tmp/llama" --chat "<t9><t10>" --chat-template chatml --temperature 0 --max-tokens 8
cmp -s "$out" "$tmp/c1" || fail "--chat-template chatml differs from the model's own ChatML template"

# A GGUF file (the llama test model in F16, with the same vocabulary and the
# ChatML template in its metadata) answers a chat as its safetensors original
run 0 generate --model "$(cd "$(dirname "$0")/.." && pwd)/data/cli/tiny-llama.gguf" --chat "<t9><t10>" \
    --temperature 0 --max-tokens 8
cmp -s "$out" "$tmp/c1" || fail "the GGUF llama answers '$(cat "$out")', the safetensors one '$(cat "$tmp/c1")'"

# 7. Tokens that split UTF-8 characters (the byte-fallback tokenizer): the
#    output is valid UTF-8 and holds characters made of several tokens.
make_model llama "$tmp/bytes" "" bytes
fffd=$(printf '\357\277\275')
multibyte=0
for s in 1 2 3; do
    run 0 generate --model "$tmp/bytes" --prompt "<t9>" --seed $s --temperature 1.5 --top-k 0 --top-p 1 \
        --max-tokens 120
    iconv -f UTF-8 -t UTF-8 <"$out" >/dev/null 2>&1 || fail "seed $s: the output is not valid UTF-8"
    [ -n "$(LC_ALL=C sed "s/$fffd//g" "$out" | LC_ALL=C tr -d '\000-\177')" ] && multibyte=$((multibyte + 1))
done
[ "$multibyte" -ge 1 ] || fail "no sampled text held a character other than U+FFFD beyond ASCII"

# 8. On a terminal, a stats line on standard error.
if script -qec true /dev/null >/dev/null 2>&1; then
    script -qec "$WHET generate --model $m --prompt '<t9>' --temperature 0 --max-tokens 4" /dev/null >"$out" 2>&1
    grep -q 'whet: prompt 1 tokens in .* tokens/s); generated 4 tokens in .* tokens/s); stopped by max-tokens' "$out" ||
        fail "no stats line on a terminal: $(cat "$out")"
fi

# 9. --json: the text streamed otherwise, the counts and the seed, in one object.
run 0 generate --model "$tmp/bytes" --prompt "<t9>" --seed 7 --temperature 1 --max-tokens 12
cp "$out" "$tmp/streamed"
run 0 generate --model "$tmp/bytes" --prompt "<t9>" --seed 7 --temperature 1 --max-tokens 12 --json
[ "$(wc -l <"$out")" -eq 1 ] || fail "--json printed more than one line"
python3 - "$out" "$tmp/streamed" <<'PY' || fail "--json does not hold the streamed text and counts"
import json, sys
o = json.load(open(sys.argv[1], encoding="utf-8"))
streamed = open(sys.argv[2], encoding="utf-8").read()
assert o["text"] == streamed, (o["text"], streamed)
assert o["prompt_tokens"] == 1 and o["generated_tokens"] <= 12 and o["seed"] == "7", o
assert o["stop_reason"] in ("max-tokens", "end of sequence"), o
assert o["generated_tokens_per_second"] >= 0 and o["threads"] >= 1, o
PY

# 10. Errors.
run 1 generate --prompt hi
stderr_has -- '^whet: generate: --model is required'
run 1 generate --model "$m"
stderr_has 'exactly one of --prompt, --chat and --messages'
run 1 generate --model "$m" --prompt a --chat b
stderr_has 'exactly one of --prompt, --chat and --messages'
run 1 generate --model "$m" --prompt a --system b
stderr_has -- '--system goes with --chat'
run 1 generate --model "$m" --prompt a --top-p 0
stderr_has -- "^whet: generate: --top-p: expected a number in \(0, 1\], got '0'"
run 1 generate --model "$m" --prompt a --top-p 1.5
stderr_has -- '--top-p: expected a number from 0 to 1'
run 1 generate --model "$m" --prompt a --top-k -1
stderr_has -- '--top-k: expected a whole number'
run 1 generate --model "$m" --prompt a --temperature -0.5
stderr_has -- '--temperature: expected a number from 0'
run 1 generate --model "$m" --prompt a --seed -1
run 1 generate --model "$m" --prompt a --bogus
run 1 generate --model /no/such/model --prompt a
stderr_has '^whet: /no/such/model'
run 1 generate --model "$m" --chat hi
stderr_has 'chat_template'
run 1 generate --model "$tmp/chat" --messages /no/such.json
stderr_has '^whet: /no/such.json'
printf '{"messages": 3}' >"$tmp/bad.json"
run 1 generate --model "$tmp/chat" --messages "$tmp/bad.json"
stderr_has "^whet: $tmp/bad.json: .*expected an array"
printf '[]' >"$tmp/empty.json"
run 1 generate --model "$tmp/chat" --messages "$tmp/empty.json"
stderr_has 'empty'
long=$(i=0; while [ $i -lt 130 ]; do printf '<t9>'; i=$((i + 1)); done)
run 1 generate --model "$m" --prompt "$long"
stderr_has 'the prompt is 130 tokens; the model .* takes at most 128'
finish
