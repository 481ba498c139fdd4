# whet export and --adapter: a random PEFT adapter (every projection, B not
# zero; made by test_export) applied at run time by whet score gives the same
# mean NLL as the HF directory and the GGUF file it is merged into (1e-6
# relative for F32; Q8_0 within 2e-2); the PEFT export of a PEFT adapter is
# the same bytes; the model's tokenizer goes into the GGUF (same token ids);
# the GGUF adapter file starts as GGUF; generate --adapter runs; usage errors
# and bad inputs give clear messages and write nothing.
. "$(dirname "$0")/lib.inc"
. "$(dirname "$0")/models.inc"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$out" "$err"' EXIT
WHET_THREADS=1
export WHET_THREADS
tests_dir="$(cd "$(dirname "$0")/.." && pwd)"
make_adapter_bin="${TEST_EXPORT:-$tests_dir/../build/tests/test_export}"
if [ ! -x "$make_adapter_bin" ]; then
    echo "skip: $make_adapter_bin not built (make build/tests/test_export)"
    exit 0
fi

json_field() { # NAME: a number field of the JSON object on stdout
    sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p" "$out"
}
close_to() { # A B LIMIT WHAT: |A-B|/|B| <= LIMIT
    awk -v a="$1" -v b="$2" -v l="$3" 'BEGIN { d = (a - b) / b; if (d < 0) d = -d; exit !(d <= l) }' ||
        fail "$4: $1 vs $2 (limit $3 relative)"
}

text_of_ids 10 11 12 13 14 15 16 17 18 19 20 21 22 23 >"$tmp/text.txt"

for name in llama qwen3 gpt2; do
    make_model "$name" "$tmp/$name"
    $make_adapter_bin adapter "$tmp/$name" "$tmp/$name-adapter" || fail "$name: test_export adapter"

    run 0 score --model "$tmp/$name" --file "$tmp/text.txt" --json
    base=$(json_field mean_nll)
    run 0 score --model "$tmp/$name" --adapter "$tmp/$name-adapter" --file "$tmp/text.txt" --json
    adapted=$(json_field mean_nll)
    [ "$base" != "$adapted" ] || fail "$name: the adapter changes nothing ($base)"

    run 0 export --model "$tmp/$name" --adapter "$tmp/$name-adapter" --format hf --out "$tmp/$name-merged"
    stdout_has "^wrote HF model directory \(adapter merged\): "
    for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do
        [ -f "$tmp/$name-merged/$f" ] || fail "$name: hf export lacks $f"
    done
    run 0 score --model "$tmp/$name-merged" --file "$tmp/text.txt" --json
    close_to "$(json_field mean_nll)" "$adapted" 1e-6 "$name: merged HF directory vs model + adapter"

    for type in f32 q8_0; do
        run 0 export --model "$tmp/$name" --adapter "$tmp/$name-adapter" --format gguf --merge --type $type \
            --out "$tmp/$name-merged-$type.gguf"
        stdout_has "^wrote GGUF model \(adapter merged\): "
        run 0 score --model "$tmp/$name-merged-$type.gguf" --file "$tmp/text.txt" --json
        limit=1e-6
        [ $type = f32 ] || limit=2e-2
        close_to "$(json_field mean_nll)" "$adapted" $limit "$name: merged GGUF ($type) vs model + adapter"
    done

    # the tokenizer travels: the same ids from the GGUF
    run 0 tokenize --model "$tmp/$name" --file "$tmp/text.txt"
    cp "$out" "$tmp/ids-dir"
    run 0 tokenize --model "$tmp/$name-merged-f32.gguf" --file "$tmp/text.txt"
    cmp -s "$out" "$tmp/ids-dir" || fail "$name: the GGUF's tokenizer encodes differently"

    run 0 export --model "$tmp/$name" --adapter "$tmp/$name-adapter" --format gguf --out "$tmp/$name-lora.gguf"
    stdout_has "^wrote GGUF LoRA adapter: "
    [ "$(head -c 4 "$tmp/$name-lora.gguf")" = GGUF ] || fail "$name: the adapter file is not GGUF"
    run 1 score --model "$tmp/$name-lora.gguf" --file "$tmp/text.txt"
    stderr_has "a LoRA adapter for llama.cpp, not a model"

    run 0 export --model "$tmp/$name" --adapter "$tmp/$name-adapter" --format peft --out "$tmp/$name-peft"
    stdout_has "^wrote PEFT adapter: "
    cmp -s "$tmp/$name-adapter/adapter_model.safetensors" "$tmp/$name-peft/adapter_model.safetensors" ||
        fail "$name: PEFT re-export changed the weights file"
    cmp -s "$tmp/$name-adapter/adapter_config.json" "$tmp/$name-peft/adapter_config.json" ||
        fail "$name: PEFT re-export changed adapter_config.json"
    grep -q '"peft_type": "LORA"' "$tmp/$name-peft/adapter_config.json" || fail "$name: no peft_type"
done
grep -q '"fan_in_fan_out": true' "$tmp/gpt2-peft/adapter_config.json" || fail "gpt2: fan_in_fan_out not true"
grep -q '"c_attn": 12' "$tmp/gpt2-peft/adapter_config.json" || fail "gpt2: no rank_pattern for the stacked c_attn"

# a plain model (no adapter) to GGUF F16, and the base name recorded for PEFT
run 0 export --model "$tmp/llama" --format gguf --type f16 --out "$tmp/llama-f16.gguf"
stdout_has "^wrote GGUF model: "
run 0 export --model "$tmp/llama" --adapter "$tmp/llama-adapter" --format peft --base-name org/llama-tiny \
    --out "$tmp/llama-named"
grep -q '"base_model_name_or_path": "org/llama-tiny"' "$tmp/llama-named/adapter_config.json" ||
    fail "--base-name not recorded"

# generate with an adapter: greedy, deterministic, and different from the base somewhere
run 0 generate --model "$tmp/llama" --adapter "$tmp/llama-adapter" --prompt "<t10><t11>" --max-tokens 8 \
    --temperature 0
cp "$out" "$tmp/gen-adapter"
run 0 generate --model "$tmp/llama-merged" --prompt "<t10><t11>" --max-tokens 8 --temperature 0
cmp -s "$out" "$tmp/gen-adapter" || fail "generate: --adapter and the merged model differ"

# usage errors
run 1 export --model "$tmp/llama" --out "$tmp/x"
stderr_has "--model, --out and --format are required"
run 1 export --model "$tmp/llama" --format peft --out "$tmp/x"
stderr_has "--format peft writes an adapter"
run 1 export --model "$tmp/llama" --format zip --out "$tmp/x"
stderr_has "expected peft, hf or gguf, got 'zip'"
run 1 export --model "$tmp/llama" --format hf --type q8_0 --out "$tmp/x"
stderr_has "expected f32, f16 or bf16 for --format hf"
run 1 export --model "$tmp/llama" --format gguf --merge --out "$tmp/x.gguf"
stderr_has "--merge goes with --format gguf and --adapter"
run 1 export --model "$tmp/llama" --format hf --out "$tmp/llama"
stderr_has "is the model or adapter being read"
run 1 export --model "$tmp/llama" --format gguf --out "$tmp"
stderr_has "is a directory"
run 1 export --model "$tmp/llama" --format hf --out "$tmp/text.txt"
stderr_has "is a file"
# bad inputs: nothing written
run 1 export --model "$tmp/llama" --adapter "$tmp/nonexistent" --format hf --out "$tmp/none"
stderr_has "nonexistent"
[ ! -e "$tmp/none" ] || fail "a failed export left $tmp/none"
run 1 export --model "$tmp/gpt2" --adapter "$tmp/llama-adapter" --format hf --out "$tmp/none"
stderr_has "adapter_config.json"
[ ! -e "$tmp/none" ] || fail "a failed export left $tmp/none"
run 1 score --model "$tmp/llama" --adapter "$tmp/gpt2-adapter" --file "$tmp/text.txt"
stderr_has "gpt2-adapter"
ls "$tmp" | grep -q '\.tmp\.' && fail "temporary files left behind: $(ls "$tmp" | grep '\.tmp\.')"

finish
