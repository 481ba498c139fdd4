# whet score: the mean NLL of every committed model's golden token rows equals
# PyTorch's loss (labels = input ids) within 1e-5 relative; sliding windows
# score every token once with the context their window gives; JSON, per-token
# output, standard input, errors.
. "$(dirname "$0")/lib.inc"
. "$(dirname "$0")/models.inc"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$out" "$err"' EXIT
# one thread unless a run asks for more: under qemu (check-aarch64) the thread
# pool's spinning crawls when the host is busy
WHET_THREADS=1
export WHET_THREADS

json_field() { # NAME: a number field of the JSON object on stdout
    sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p" "$out"
}

for name in llama llama3_rope mistral qwen2 qwen3 gpt2; do
    make_model "$name" "$tmp/$name"
    golden="$models_dir/$name/golden.safetensors"
    set -- $(golden_shape "$golden" tokens)
    rows=$1
    total=0
    count=0
    row=0
    while [ "$row" -lt "$rows" ]; do
        text_of_ids $(golden_tokens "$golden" "$row") >"$tmp/$name.row$row.txt"
        run 0 score --model "$tmp/$name" --file "$tmp/$name.row$row.txt" --json
        tokens=$(json_field tokens)
        scored=$(json_field scored)
        mean=$(json_field mean_nll)
        [ "$tokens" = "$2" ] || fail "$name row $row: $tokens tokens, the golden has $2"
        [ "$scored" = $(($2 - 1)) ] || fail "$name row $row: $scored tokens scored, expected $(($2 - 1))"
        total=$(awk -v t="$total" -v m="$mean" -v n="$scored" 'BEGIN { printf "%.17g", t + m * n }')
        count=$((count + scored))
        row=$((row + 1))
    done
    want=$(golden_nll "$golden")
    # the golden NLL is the mean over all rows' tokens (B·(T−1) of them)
    awk -v s="$total" -v n="$count" -v w="$want" -v name="$name" 'BEGIN {
        got = s / n; rel = (got - w) / w; if (rel < 0) rel = -rel
        printf "%-12s whet %.9f  PyTorch %.9f  relative difference %.2e\n", name, got, w, rel
        exit !(rel <= 1e-5) }' || fail "$name: mean NLL differs from the golden by more than 1e-5 relative"
done

# the text summary has the same numbers, with units
run 0 score --model "$tmp/llama" --file "$tmp/llama.row0.txt"
stdout_has '^tokens +17 \(16 scored\)$'
stdout_has '^mean NLL +[0-9.]+ nats/token$'
stdout_has '^perplexity +[0-9.]+$'
stdout_has '^bits per byte +[0-9.]+ bits/byte$'

# bits per byte = total NLL / ln 2 / bytes; perplexity = exp(mean NLL)
run 0 score --model "$tmp/qwen3" --file "$tmp/qwen3.row0.txt" --json
awk -v t="$(json_field total_nll)" -v b="$(json_field bytes)" -v bpb="$(json_field bits_per_byte)" \
    -v m="$(json_field mean_nll)" -v p="$(json_field perplexity)" 'BEGIN {
    e1 = t / log(2) / b - bpb; e2 = exp(m) - p
    exit !(e1 < 1e-12 && e1 > -1e-12 && e2 / p < 1e-12 && e2 / p > -1e-12) }' ||
    fail "bits_per_byte or perplexity inconsistent with total_nll"
[ "$(json_field bytes)" = "$(wc -c <"$tmp/qwen3.row0.txt" | tr -d ' ')" ] || fail "bytes is not the file's size"

# sliding windows on qwen3's 24-token row: --ctx 8 --stride 3 gives windows
# [0,8) [3,11) [6,14) [9,17) [12,20) [15,23) [18,24), each scoring the tokens
# the ones before it did not reach, so the 23 tokens are scored once each.
# Token 20 is scored in [15,23), so its log-prob is that of the last token of
# the text of tokens 15..20 scored alone. (In the JSON split at '{', item k of
# per_token is line k + 3.)
run 0 score --model "$tmp/qwen3" --file "$tmp/qwen3.row0.txt" --ctx 8 --stride 3 --json --per-token
[ "$(json_field scored)" = 23 ] || fail "windowed scoring scored $(json_field scored) tokens, expected 23"
[ "$(json_field windows)" = 7 ] || fail "windows: $(json_field windows), expected 7 (begins 0, 3, ..., 18)"
windowed=$(json_field mean_nll)
lp20=$(tr '{' '\n' <"$out" | sed -n '23s/.*"logprob":\([-0-9.eE+]*\).*/\1/p')
text_of_ids $(golden_tokens "$models_dir/qwen3/golden.safetensors" 0 | sed -n '16,21p') >"$tmp/w.txt"
run 0 score --model "$tmp/qwen3" --file "$tmp/w.txt" --json --per-token
lp_alone=$(tr '{' '\n' <"$out" | sed -n '8s/.*"logprob":\([-0-9.eE+]*\).*/\1/p')
[ -n "$lp20" ] && awk -v a="$lp20" -v b="$lp_alone" 'BEGIN { d = a - b; exit !(d < 1e-5 && d > -1e-5) }' ||
    fail "token 20 scored in its window gives '$lp20', scoring its window's text alone '$lp_alone'"
run 0 score --model "$tmp/qwen3" --file "$tmp/qwen3.row0.txt" --json
[ "$windowed" != "$(json_field mean_nll)" ] || fail "less context gave the very same mean NLL"
# a window at least as long as the text is the plain full-context score
run 0 score --model "$tmp/qwen3" --file "$tmp/qwen3.row0.txt" --ctx 24 --stride 1 --json
full=$(json_field mean_nll)
run 0 score --model "$tmp/qwen3" --file "$tmp/qwen3.row0.txt" --json
[ "$full" = "$(json_field mean_nll)" ] || fail "--ctx 24 differs from the default window on 24 tokens"

# per-token text lines: the first token has no log-prob
run 0 score --model "$tmp/llama" --file "$tmp/llama.row0.txt" --per-token
stdout_has '^ +0 +81 +- +"<t81>"$'
stdout_has '^ +1 +139 +-[0-9.]+ +"<t139>"$'

# the GGUF copy of the llama model (F16 weights) scores within 1e-3 of it
run 0 score --model "$tmp/llama" --file "$tmp/llama.row0.txt" --json
st_nll=$(json_field mean_nll)
run 0 score --model "$(cd "$(dirname "$0")/.." && pwd)/data/cli/tiny-llama.gguf" --file "$tmp/llama.row0.txt" --json
awk -v a="$st_nll" -v b="$(json_field mean_nll)" 'BEGIN { d = (a - b) / a; exit !(d < 1e-3 && d > -1e-3 && a != b) }' ||
    fail "GGUF mean NLL $(json_field mean_nll), safetensors $st_nll"

# standard input, --text
cat "$tmp/llama.row0.txt" | $WHET score --model "$tmp/llama" --file - --json >"$out" 2>"$err" || fail "--file - failed"
stdin_nll=$(json_field mean_nll)
run 0 score --model "$tmp/llama" --text "$(cat "$tmp/llama.row0.txt")" --json
[ "$stdin_nll" = "$(json_field mean_nll)" ] || fail "standard input and --text differ"

# errors
run 1 score --file "$tmp/llama.row0.txt"
stderr_has -- '^whet: score: --model is required'
run 1 score --model "$tmp/llama"
stderr_has 'exactly one of --file and --text'
run 1 score --model "$tmp/llama" --file "$tmp/llama.row0.txt" --ctx 8 --stride 8
stderr_has -- '--stride 8 must be less than --ctx 8'
run 1 score --model "$tmp/llama" --file "$tmp/llama.row0.txt" --ctx 1
stderr_has -- '^whet: score: --ctx: expected a whole number from 2 to'
run 1 score --model "$tmp/llama" --file "$tmp/llama.row0.txt" --stride x
run 1 score --model "$tmp/llama" --file "$tmp/llama.row0.txt" --ctx 4096
stderr_has -- '--ctx 4096 is more than the 128 positions'
run 1 score --model "$tmp/llama" --text "<t9>"
stderr_has 'is 1 token long; scoring needs at least 2'
run 1 score --model /no/such/model --text "<t9><t10>"
stderr_has '^whet: /no/such/model'
run 1 score --model "$tmp/llama" --file /no/such/file
stderr_has '^whet: /no/such/file'
finish
