# whet info: the fields of the committed models, their parameter counts
# against the safetensors headers, the memory figures against their formulas
# (whet-info(1)), the chat template family, GGUF metadata, and errors.
. "$(dirname "$0")/lib.inc"
. "$(dirname "$0")/models.inc"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$out" "$err"' EXIT

jf() { # KEY: the first value of "KEY" in the indented JSON on stdout
    sed -n "s/^ *\"$1\": \([^,{]*\),\{0,1\}$/\1/p" "$out" | head -1
}

run 0 info "$models_dir/llama"
stdout_has '^architecture +llama \(LlamaForCausalLM\)$'
stdout_has '^parameters +37\.79 K \(37792\)$'
stdout_has '^stored dtypes +F32: 21 tensors, 37\.79 K parameters, 0\.144 MiB$'
stdout_has '^layers +2$'
stdout_has '^hidden size +32$'
stdout_has '^attention heads +4 query, 2 key/value, head_dim 8$'
stdout_has '^FFN width +64 \(SwiGLU\)$'
stdout_has '^vocabulary +300 tokens$'
stdout_has '^max positions +128 tokens$'
stdout_has '^rope theta +10000$'
stdout_has '^rope scaling +none$'
stdout_has '^tied embeddings +no$'
stdout_has '^chat template +none$'
stdout_has '^memory, fp32 \(T = 128 tokens; training: batch 1\)$'
stdout_has '^  inference +[0-9.]+ MiB: weights 0\.144 MiB, activations [0-9.]+ MiB,$'
stdout_has '^  training +activations [0-9.]+ MiB kept for the backward pass,$'
stdout_has '^ +[0-9.]+ MiB with gradient checkpointing$'
stdout_has '^  LoRA r=8 +[0-9.]+ MiB \(estimate; [0-9.]+ MiB checkpointed\):$'
stdout_has '^  full fine-tune +[0-9.]+ MiB \(estimate; [0-9.]+ MiB checkpointed\):$'
# every line fits a terminal
awk 'length > 80 { exit 1 }' "$out" || fail "info prints lines longer than 80 columns"

run 0 info "$models_dir/llama3_rope"
stdout_has '^stored dtypes +F16: 20 tensors'
stdout_has '^attention heads +4 query, 1 key/value, head_dim 16$'
stdout_has '^rope theta +500000$'
stdout_has '^rope scaling +llama3, factor 8$'
stdout_has '^tied embeddings +yes$'
run 0 info "$models_dir/mistral"
stdout_has '^architecture +mistral \(MistralForCausalLM\)$'
stdout_has '^stored dtypes +BF16: 21 tensors'
stdout_has '^attention heads +4 query, 2 key/value, head_dim 16$'
run 0 info "$models_dir/qwen3"
stdout_has '^rope scaling +linear, factor 2$'
run 0 info "$models_dir/gpt2"
stdout_has '^architecture +gpt2 \(GPT2LMHeadModel\)$'
stdout_has '^FFN width +128 \(GELU\)$'
stdout_has '^norm +LayerNorm, eps 1e-05$'
stdout_has '^positions +learned$'
stdout_has '^max positions +64 tokens$'

# Parameters equal the elements of the stored tensors (GPT-2 also stores its
# attn.bias mask buffers, so it is left out); the memory figures follow the
# formulas of whet-info(1), with the LoRA adapter count computed here from the
# shapes: r·L·((C+QD) + 2(C+KVD) + (QD+C) + 2(C+F) + (F+C)).
for name in llama llama3_rope mistral qwen2 qwen3; do
    run 0 info "$models_dir/$name" --json --seq-len 32 --batch-size 2
    params=$(jf parameters)
    elements=$(sed -n 's/^ *"elements": \([0-9]*\),*$/\1/p' "$out" | awk '{ s += $1 } END { print s }')
    [ "$params" = "$elements" ] || fail "$name: parameters $params, the safetensors headers hold $elements"
    C=$(jf hidden_size) L=$(jf layers) H=$(jf heads) KV=$(jf kv_heads) D=$(jf head_dim) F=$(jf ffn)
    lora=$((8 * L * ((C + H * D) + 2 * (C + KV * D) + (H * D + C) + 2 * (C + F) + (F + C))))
    [ "$(jf lora_parameters)" = "$lora" ] || fail "$name: LoRA parameters $(jf lora_parameters), expected $lora"
    [ "$(jf run_weights_bytes)" = $((4 * params)) ] || fail "$name: run weights are not 4 bytes per parameter"
    kv=$((2 * L * 32 * KV * D * 4))
    [ "$(jf run_kv_cache_bytes)" = "$kv" ] || fail "$name: KV cache $(jf run_kv_cache_bytes) bytes, expected $kv"
    [ "$(jf run_bytes)" = $(($(jf run_weights_bytes) + $(jf run_activations_bytes) + kv)) ] ||
        fail "$name: run total is not weights + activations + KV cache"
    [ "$(jf seq_len)" = 32 ] && [ "$(jf batch_size)" = 2 ] || fail "$name: --seq-len / --batch-size not taken"
    # full = 16P + A; LoRA = 4P + 16·lora + A + 4·B·T·r·7·L, with A the
    # training activations kept (or checkpointed, which are fewer but more
    # than inference's one layer at batch 1)
    A=$(jf train_activations_bytes) Ac=$(jf train_activations_checkpointed_bytes)
    products=$((4 * 2 * 32 * 8 * 7 * L))
    [ "$(jf lora_activations_bytes)" = "$products" ] || fail "$name: adapter activations $(jf lora_activations_bytes)"
    [ "$(jf full_bytes)" = $((16 * params + A)) ] && [ "$(jf full_checkpointed_bytes)" = $((16 * params + Ac)) ] ||
        fail "$name: full fine-tune figures are not 16P + activations"
    [ "$(jf lora_bytes)" = $((4 * params + 16 * lora + A + products)) ] &&
        [ "$(jf lora_checkpointed_bytes)" = $((4 * params + 16 * lora + Ac + products)) ] ||
        fail "$name: LoRA figures are not 4P + 16·lora + activations + adapter activations"
    [ "$Ac" -lt "$A" ] && [ "$Ac" -gt "$(jf run_activations_bytes)" ] ||
        fail "$name: activations: checkpointed $Ac, kept $A, inference $(jf run_activations_bytes)"
done
run 0 info "$models_dir/qwen2" --json
[ "$(jf architecture)" = '"qwen2"' ] || fail "qwen2 --json architecture: $(jf architecture)"
[ "$(jf tied_embeddings)" = true ] || fail "qwen2 is tied"
[ "$(jf rope_theta)" = 1000000.0 ] || fail "qwen2 rope_theta $(jf rope_theta)"
[ "$(jf seq_len)" = 128 ] || fail "the default sequence length is the model's 128 positions"

# the chat template family, from chat_template.jinja or tokenizer_config.json
make_model llama "$tmp/chat" chatml
run 0 info "$tmp/chat"
stdout_has '^chat template +chatml$'
make_model qwen2 "$tmp/odd"
printf '{"chat_template": "{{ messages[0] }}"}\n' >"$tmp/odd/tokenizer_config.json"
run 0 info "$tmp/odd"
stdout_has '^chat template +unrecognised$'

# GGUF: metadata and the tensor list (tests/data/cli/tiny-llama.gguf is the
# llama test model, written by tests/ref/make_cli_gguf.py)
gguf="$(cd "$(dirname "$0")/.." && pwd)/data/cli/tiny-llama.gguf"
run 0 info "$gguf"
stdout_has '^architecture +llama \(llama\)$'
stdout_has '^parameters +37\.79 K \(37792\)$'
stdout_has '^(stored dtypes)? +F16: 16 tensors, 37\.63 K parameters, 0\.072 MiB$'
stdout_has '^(stored dtypes)? +F32: 5 tensors, 160 parameters, 0\.001 MiB$'
stdout_has '^attention heads +4 query, 2 key/value, head_dim 8$'
stdout_has '^FFN width +64 \(SwiGLU\)$'
stdout_has '^max positions +128 tokens$'
stdout_has '^rope theta +10000$'
stdout_has '^tied embeddings +no$'
stdout_has '^chat template +chatml$'
run 0 info "$gguf" --json --seq-len 32 --batch-size 2
not_shared='"model"\|"format"\|"source_architecture"\|"dtypes"\|"tensors"\|"elements"\|"bytes"\|"chat_template"'
not_shared="$not_shared"'\|"norm_eps"\|^ *}\|^    "[A-Z0-9_]*": {$'
gguf_json=$(grep -v "$not_shared" "$out")
run 0 info "$models_dir/llama" --json --seq-len 32 --batch-size 2
st_json=$(grep -v "$not_shared" "$out")
[ "$gguf_json" = "$st_json" ] || fail "the GGUF and safetensors llama differ: $gguf_json // $st_json"

# errors
printf 'GGUF\003\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' >"$tmp/empty.gguf"
run 1 info "$tmp/empty.gguf"
stderr_has "^whet: $tmp/empty.gguf: key 'general.architecture' not found"
printf 'not a model' >"$tmp/file.txt"
run 1 info "$tmp/file.txt"
stderr_has "^whet: $tmp/file.txt: expected an HF model directory or a GGUF file"
run 1 info
stderr_has '^whet: info: expected a MODEL'
run 1 info "$models_dir/llama" --seq-len 0
stderr_has -- '^whet: info: --seq-len: expected a whole number from 1 to'
run 1 info "$models_dir/llama" --batch-size x
run 1 info "$models_dir/llama" extra
stderr_has "unexpected argument 'extra'"
run 1 info /no/such/model
stderr_has '^whet: /no/such/model'
mkdir -p "$tmp/noweights"
cp "$models_dir/llama/config.json" "$tmp/noweights/"
run 1 info "$tmp/noweights"
stderr_has "^whet: $tmp/noweights"
finish
