# whet train end to end on the tiny Llama: the plan, the run directory
# (run.conf, metrics.jsonl, checkpoints, final/ adapter, report.svg), the
# adapter lowering the loss under whet score, repeating a run from its
# run.conf bit for bit, full fine-tuning's HF directory, option and run-file
# errors, the memory check, non-finite steps, and a full disk.
. "$(dirname "$0")/lib.inc"
. "$(dirname "$0")/models.inc"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$out" "$err"' EXIT
make_model llama "$tmp/llama" chatml
awk 'BEGIN { for (i = 0; i < 40; i++) { n = 8 + (i * 5) % 13; s = "";
             for (k = 0; k < n; k++) s = s "<t" 20 + (i + k * 3) % 40 ">";
             printf "{\"text\": \"%s\"}\n", s } }' >"$tmp/train.jsonl"
text=$(sed -n '1s/.*"text": "\(.*\)"}/\1/p' "$tmp/train.jsonl")
base="--model $tmp/llama --data $tmp/train.jsonl --batch-size 4 --seq-len 32 --threads 1"

# a LoRA run with validation carved out of the file
# shellcheck disable=SC2086
run 0 train $base --out "$tmp/a" --steps 30 --lr 5e-3 --lora-rank 4 --valid-split 0.2 --eval-every 10 --save-every 10
stdout_has "^plan: LoRA of "
stdout_has "trained +4096 parameters"
stdout_has "tokens/step +128 \(batch 4 × seq 32 × accumulation 1\)"
stdout_has "steps +30 "
stdout_has "memory .*weights .*gradients .*optimizer .*activations"
stdout_has "^completed: 30 steps in .*train loss .*valid loss .*; adapter in $tmp/a/final"
stderr_has "^step 30/30  loss [0-9.]+  accuracy [0-9.]+  lr "
stderr_has "^valid at step 0: loss "
for f in run.conf metrics.jsonl report.svg checkpoint-20/manifest.json checkpoint-30/weights.safetensors \
    checkpoint-30/adapter_config.json final/adapter_model.safetensors final/adapter_config.json; do
    [ -f "$tmp/a/$f" ] || fail "$tmp/a/$f missing"
done
[ ! -d "$tmp/a/checkpoint-10" ] || fail "checkpoint-10 should have been rotated out (keep 2)"
[ "$(grep -c '"type":"train"' "$tmp/a/metrics.jsonl")" -eq 30 ] || fail "metrics.jsonl: not 30 train records"
# validations at 0, 10, 20, 30
[ "$(grep -c '"type":"valid"' "$tmp/a/metrics.jsonl")" -eq 4 ] || fail "metrics.jsonl: not 4 valid records"
grep -q '"type":"train","step":1,"loss":[0-9.e-]*,"accuracy":[0-9.e-]*,"lr":0.005,"grad_norm":' "$tmp/a/metrics.jsonl" ||
    fail "metrics.jsonl: the first record lacks its fields"
grep -q '<polyline' "$tmp/a/report.svg" || fail "report.svg has no curve"
grep -q '"r": 4' "$tmp/a/final/adapter_config.json" || fail "adapter_config.json: no rank 4"
grep -q '^lora-rank = 4$' "$tmp/a/run.conf" || fail "run.conf lacks lora-rank = 4"
grep -q "^model = $tmp/llama\$" "$tmp/a/run.conf" || fail "run.conf lacks the absolute model path"

# the adapter learned the data: lower NLL on a training text
run 0 score --model "$tmp/llama" --text "$text" --threads 1 --json
before=$(sed 's/.*"mean_nll":\([^,]*\).*/\1/' "$out")
run 0 score --model "$tmp/llama" --adapter "$tmp/a/final" --text "$text" --threads 1 --json
after=$(sed 's/.*"mean_nll":\([^,]*\).*/\1/' "$out")
awk -v b="$before" -v a="$after" 'BEGIN { exit !(a < b - 0.5) }' || fail "adapter NLL $after not below base $before"

# run.conf repeats the run exactly (and --json prints a summary object)
run 0 train --config "$tmp/a/run.conf" --out "$tmp/b" --threads 2 --json
stdout_has '^\{"outcome":"completed","steps":30,"method":"lora",'
cmp -s "$tmp/a/final/adapter_model.safetensors" "$tmp/b/final/adapter_model.safetensors" ||
    fail "a run repeated from run.conf gave another adapter"
# the command line overrides the file
run 0 train --config "$tmp/a/run.conf" --out "$tmp/c" --steps 3 --save-every 0 --no-shuffle
stdout_has "^completed: 3 steps"
grep -q '^shuffle = false$' "$tmp/c/run.conf" || fail "--no-shuffle not in run.conf"
[ -d "$tmp/c/checkpoint-3" ] && [ ! -d "$tmp/c/checkpoint-2" ] || fail "--save-every 0: only the final checkpoint"

# adapter options reach the PEFT config; a bf16 base with gradient checkpointing trains
# shellcheck disable=SC2086
run 0 train $base --out "$tmp/o" --steps 3 --rslora --lora-targets q,v --lora-alpha 12 --base-dtype bf16 \
    --grad-checkpoint --pack --grad-accum 2 --lr-schedule linear --warmup-steps 1 --min-lr 1e-5
tr -d ' \n' <"$tmp/o/final/adapter_config.json" >"$tmp/o.json"
for want in '"use_rslora":true' '"target_modules":\["q_proj","v_proj"\]' '"lora_alpha":12' '"r":8'; do
    grep -q "$want" "$tmp/o.json" || fail "adapter_config.json lacks $want"
done
grep -qE '"type":"train","step":1,.*"lr":0(\.0)?,' "$tmp/o/metrics.jsonl" || fail "warmup: step 1 not at lr 0"

# full fine-tuning of the last layer: an HF directory that whet reads back
# shellcheck disable=SC2086
run 0 train $base --out "$tmp/f" --steps 5 --method full --train-layers 1 --freeze-embeddings --lr 1e-3
for f in model.safetensors config.json tokenizer.json tokenizer_config.json; do
    [ -f "$tmp/f/final/$f" ] || fail "full: final/$f missing"
done
run 0 score --model "$tmp/f/final" --text "$text" --threads 1
stdout_has "perplexity"

# a GGUF model: LoRA gives an adapter; full gives weights and config.json (no tokenizer files, said so)
gguf="$models_dir/../cli/tiny-llama.gguf"
run 0 train --model "$gguf" --data "$tmp/train.jsonl" --out "$tmp/g1" --steps 2 --seq-len 32 --threads 1
[ -f "$tmp/g1/final/adapter_model.safetensors" ] || fail "GGUF LoRA: no adapter"
run 0 train --model "$gguf" --data "$tmp/train.jsonl" --out "$tmp/g2" --steps 2 --seq-len 32 --threads 1 --method full
stderr_has "has no tokenizer files: .* is a GGUF file \(give --tokenizer"
[ -f "$tmp/g2/final/config.json" ] && [ -f "$tmp/g2/final/model.safetensors" ] || fail "GGUF full: no HF directory"

# errors
run 1 train --data "$tmp/train.jsonl" --out "$tmp/x"
stderr_has "give exactly one of --model and --init"
# shellcheck disable=SC2086
run 1 train $base --out "$tmp/x" --steps 3 --epochs 2
stderr_has "give --steps or --epochs, not both"
run 1 train --init "$models_dir/llama/config.json" --data "$tmp/train.jsonl" --out "$tmp/x"
stderr_has "--init starts a new model and needs --tokenizer"
# shellcheck disable=SC2086
run 1 train $base --out "$tmp/x" --lr-schedule exp
stderr_has "--lr-schedule: lr-schedule: expected constant\|linear\|cosine, got 'exp'"
# shellcheck disable=SC2086
run 1 train $base --out "$tmp/x" --seq-len 4096
stderr_has "--seq-len 4096 is more than the 128 positions of"
# shellcheck disable=SC2086
run 1 train $base --out "$tmp/x" --train-layers 1
stderr_has "--train-layers and --freeze-embeddings go with --method full"
# shellcheck disable=SC2086
run 1 train $base --out "$tmp/a" --steps 2
stderr_has "already holds a run \(run.conf\); continue it with --resume"
printf 'model = %s\nbatch-size = 4\nlearning-rate = 1e-3\n' "$tmp/llama" >"$tmp/bad.conf"
run 1 train --config "$tmp/bad.conf" --data "$tmp/train.jsonl" --out "$tmp/x"
stderr_has "bad.conf:3: unknown option 'learning-rate'"
run 1 train --resume "$tmp/nowhere"
stderr_has "no run.conf there"
[ ! -e "$tmp/x" ] || fail "a refused run left $tmp/x behind"

# the memory check: far more activations than any machine has
# shellcheck disable=SC2086
run 1 train $base --out "$tmp/m" --batch-size 65536 --seq-len 128 --method full
stderr_has "the run needs .* more memory .* is available; lower --batch-size or --seq-len"

# a model whose weights hold a NaN: 5 skipped steps, then a stop without a checkpoint
mkdir -p "$tmp/nan"
cp "$tmp/llama/config.json" "$tmp/llama/tokenizer.json" "$tmp/llama/tokenizer_config.json" "$tmp/nan/"
cp "$models_dir/llama/model.safetensors" "$tmp/nan/"
set -- $(golden_offsets "$tmp/nan/model.safetensors" model.norm.weight)
printf '\000\000\300\177' | dd of="$tmp/nan/model.safetensors" bs=1 seek="$1" conv=notrunc 2>/dev/null
run 1 train --model "$tmp/nan" --data "$tmp/train.jsonl" --out "$tmp/n" --steps 20 --seq-len 32 --save-every 2
stderr_has "warning: step 1: the loss is not finite"
stderr_has "5 steps in a row had a non-finite loss or gradient; stopped at step 5"
! ls -d "$tmp/n"/checkpoint-* >/dev/null 2>&1 || fail "checkpoints written during non-finite steps"

# a full disk: the checkpoint that does not fit is not written, the one before stays valid
# (a private mount namespace with a small tmpfs; skipped where that is not allowed)
mkdir -p "$tmp/disk"
cat >"$tmp/disk.sh" <<EOS
mount -t tmpfs -o size=300k tmpfs "$tmp/disk" || exit 77
$WHET train $base --out "$tmp/disk/run" --steps 20 --save-every 4 --keep-checkpoints 9 >"$out" 2>"$err"
echo \$? >"$tmp/disk.status"
cp -r "$tmp/disk/run" "$tmp/disk-run"
EOS
if unshare -rm sh "$tmp/disk.sh" 2>/dev/null; then
    [ "$(cat "$tmp/disk.status")" = 1 ] || fail "full disk: exit $(cat "$tmp/disk.status"), expected 1"
    stderr_has "No space left on device.*checkpoint-[0-9]+ not written, earlier checkpoints are intact"
    last=$(ls -d "$tmp/disk-run"/checkpoint-* | sort -t- -k2 -n | tail -1)
    [ -n "$last" ] && grep -q '"format": "whet-checkpoint"' "$last/manifest.json" || fail "full disk: no checkpoint left"
    ! ls -d "$tmp/disk-run"/.checkpoint-* >/dev/null 2>&1 || fail "full disk: a temporary checkpoint was left"
    cp -r "$tmp/disk-run" "$tmp/resumed"
    run 0 train --resume "$last" --threads 1
    stdout_has "resuming from $last"
else
    echo "skipped: full-disk check (no unshare -rm / tmpfs here)"
fi
finish
