# GGUF models run: every committed golden model (tests/data/models, with the
# tokenizer of models.inc), converted to GGUF as convert_hf_to_gguf.py lays it
# out by the unit test's converter (build/tests/test_model_gguf convert, from
# tests/support/gguf_convert.c), scores its golden rows with the golden NLL
# (1e-5 relative, as the HF directory does in score.sh); Q8_0 within 1e-2;
# greedy generation gives the HF directory's text; whet info describes the
# GGUF as the HF directory.
. "$(dirname "$0")/lib.inc"
. "$(dirname "$0")/models.inc"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$out" "$err"' EXIT
WHET_THREADS=1
export WHET_THREADS

# the converter sits beside whet (WHET may carry an emulator prefix)
whet_bin=${WHET##* }
case $WHET in *" "*) emulator=${WHET% *} ;; *) emulator= ;; esac
convert="$(dirname "$whet_bin")/tests/test_model_gguf"
if [ ! -x "$convert" ]; then
    echo "FAIL: $convert not found: build the unit tests first (make tests)"
    exit 1
fi

json_field() { # NAME: a number field of the JSON object on stdout
    sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p" "$out"
}

# score_rows MODEL_PATH GOLDEN LIMIT NAME: the mean NLL over the golden's rows
score_rows() {
    set -- $(golden_shape "$2" tokens) "$1" "$2" "$3" "$4"
    rows=$1 T=$2 model=$3 golden=$4 limit=$5 label=$6
    total=0 count=0 row=0
    while [ "$row" -lt "$rows" ]; do
        text_of_ids $(golden_tokens "$golden" "$row") >"$tmp/row.txt"
        run 0 score --model "$model" --file "$tmp/row.txt" --json
        [ "$(json_field tokens)" = "$T" ] || fail "$label row $row: $(json_field tokens) tokens, the golden has $T"
        total=$(awk -v t="$total" -v m="$(json_field mean_nll)" -v n="$(json_field scored)" \
            'BEGIN { printf "%.17g", t + m * n }')
        count=$((count + $(json_field scored)))
        row=$((row + 1))
    done
    awk -v s="$total" -v n="$count" -v w="$(golden_nll "$golden")" -v name="$label" -v lim="$limit" 'BEGIN {
        got = s / n; rel = (got - w) / w; if (rel < 0) rel = -rel
        printf "%-18s whet %.9f  PyTorch %.9f  relative difference %.2e (limit %g)\n", name, got, w, rel, lim
        exit !(rel <= lim) }' || fail "$label: mean NLL differs from the golden by more than $limit relative"
}

for name in llama llama3_rope mistral qwen2 qwen3 gpt2; do
    make_model "$name" "$tmp/$name"
    $emulator "$convert" convert "$tmp/$name" F32 "$tmp/$name.gguf" >"$out" 2>"$err" ||
        fail "converting $name failed"
    score_rows "$tmp/$name.gguf" "$models_dir/$name/golden.safetensors" 1e-5 "$name F32"
done

# quantized: Q8_0 within 1e-2 (the unit test measures ≤ 1.4e-3), and not the F32 figure
$emulator "$convert" convert "$tmp/qwen3" Q8_0 "$tmp/qwen3-q8.gguf" >"$out" 2>"$err" || fail "converting qwen3 to Q8_0 failed"
score_rows "$tmp/qwen3-q8.gguf" "$models_dir/qwen3/golden.safetensors" 1e-2 "qwen3 Q8_0"
run 0 score --model "$tmp/qwen3-q8.gguf" --file "$tmp/row.txt" --json
q8=$(json_field mean_nll)
run 0 score --model "$tmp/qwen3.gguf" --file "$tmp/row.txt" --json
[ "$q8" != "$(json_field mean_nll)" ] || fail "Q8_0 weights scored exactly as F32 ones"

# greedy generation: the GGUF gives the HF directory's text, token for token
for name in llama gpt2; do
    run 0 generate --model "$tmp/$name" --prompt "<t9><t10><t11>" --temperature 0 --max-tokens 12
    cp "$out" "$tmp/hf.txt"
    run 0 generate --model "$tmp/$name.gguf" --prompt "<t9><t10><t11>" --temperature 0 --max-tokens 12
    [ -s "$out" ] || fail "$name: the GGUF generated nothing"
    cmp -s "$out" "$tmp/hf.txt" || fail "$name: the GGUF generates '$(cat "$out")', the HF directory '$(cat "$tmp/hf.txt")'"
done

# whet info: the same description as the HF directory (Qwen3: q/k norms, tied, linear RoPE scaling)
not_shared='"model"\|"format"\|"source_architecture"\|"dtypes"\|"tensors"\|"elements"\|"bytes"\|"chat_template"'
not_shared="$not_shared"'\|^ *}\|^    "[A-Z0-9_]*": {$'
run 0 info "$tmp/qwen3.gguf" --json
gguf_json=$(grep -v "$not_shared" "$out")
run 0 info "$tmp/qwen3" --json
st_json=$(grep -v "$not_shared" "$out")
[ "$gguf_json" = "$st_json" ] || fail "info: the GGUF and safetensors qwen3 differ: $gguf_json // $st_json"

# an inconsistent file is refused, naming the file and the tensor
head -c 3000 "$tmp/llama.gguf" >"$tmp/cut.gguf"
run 1 score --model "$tmp/cut.gguf" --text "<t9>"
stderr_has "^whet: $tmp/cut.gguf: "
finish
