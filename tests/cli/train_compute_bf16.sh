# whet train --compute bf16: a full run from scratch prints the bf16 plan
# (shadows counted), writes compute = bf16 into run.conf, trains to losses
# close to fp32's but not the same bits; killed after a checkpoint and
# resumed (on another thread count) it ends with the uninterrupted run's
# bytes, which needs the shadows rebuilt from the loaded weights. LoRA with
# --compute bf16 runs on a bf16 base; the choice is checked.
. "$(dirname "$0")/lib.inc"
. "$(dirname "$0")/models.inc"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$out" "$err"' EXIT
make_model llama "$tmp/llama" chatml
write_sequence_data "$tmp/data"
write_tiny_llama_config "$tmp/tiny.json"

# kill_after RUN_DIR MIN_STEP PID: SIGKILL once a checkpoint of at least
# MIN_STEP exists (fails the test if the run ends first)
kill_after() {
    while kill -0 "$3" 2>/dev/null; do
        for _c in "$1"/checkpoint-*; do
            [ -d "$_c" ] || continue
            if [ "${_c##*-}" -ge "$2" ]; then
                kill -KILL "$3"
                return 0
            fi
        done
        sleep 0.01
    done
    fail "the run in $1 ended before it could be stopped"
}

# train_losses DIR: the training losses of metrics.jsonl, one per line
train_losses() { grep '"type":"train"' "$1/metrics.jsonl" | sed 's/.*"loss":\([^,}]*\).*/\1/'; }

full="--init $tmp/tiny.json --tokenizer $tmp/llama/tokenizer.json --data $tmp/data/train.jsonl --method full
      --steps 40 --batch-size 4 --seq-len 32 --lr 2e-3 --weight-decay 0.1 --lr-schedule linear --save-every 5
      --keep-checkpoints 3"
# shellcheck disable=SC2086
run 0 train $full --compute bf16 --out "$tmp/a" --threads 2
stdout_has "compute +bf16 GEMMs"
stdout_has "weights [0-9.]+ [KMG]?i?B \(with bf16 shadows\)"
grep -qx "compute = bf16" "$tmp/a/run.conf" || fail "run.conf lacks 'compute = bf16'"
[ -f "$tmp/a/final/model.safetensors" ] || fail "no final model"

# fp32: another model, losses within 2% step by step
# shellcheck disable=SC2086
run 0 train $full --out "$tmp/f" --threads 2
stdout_has "compute +fp32"
grep -qx "compute = f32" "$tmp/f/run.conf" || fail "run.conf lacks 'compute = f32'"
cmp -s "$tmp/a/final/model.safetensors" "$tmp/f/final/model.safetensors" &&
    fail "--compute bf16 trained the same bits as fp32"
train_losses "$tmp/a" >"$tmp/l.a"
train_losses "$tmp/f" >"$tmp/l.f"
[ "$(wc -l <"$tmp/l.a")" -eq 40 ] || fail "$(wc -l <"$tmp/l.a") training records, expected 40"
paste "$tmp/l.a" "$tmp/l.f" | awk '{ d = ($1 - $2) / $2; if (d < 0) d = -d; if (d > worst) worst = d }
    END { if (worst > 0.02) { printf "bf16 losses %.4f off fp32 at worst\n", worst; exit 1 } }' >"$tmp/cmp" ||
    fail "$(cat "$tmp/cmp")"

# killed after checkpoint-10, resumed from run.conf on another thread count: the same bytes
# shellcheck disable=SC2086
$WHET train $full --compute bf16 --out "$tmp/b" --threads 1 >"$out" 2>"$err" &
pid=$!
kill_after "$tmp/b" 10 $pid
wait $pid 2>/dev/null
[ ! -d "$tmp/b/final" ] || fail "the killed run got to its end"
run 0 train --resume "$tmp/b" --threads 2
stdout_has "resuming from .*/checkpoint-[0-9]+"
stdout_has "compute +bf16 GEMMs"
cmp -s "$tmp/a/final/model.safetensors" "$tmp/b/final/model.safetensors" ||
    fail "the resumed --compute bf16 run ended with other weights than the uninterrupted one"
grep -qx "compute = bf16" "$tmp/b/run.conf" || fail "the resumed run's run.conf lacks 'compute = bf16'"

# LoRA: a bf16 base
run 0 train --model "$tmp/llama" --data "$tmp/data/train.jsonl" --out "$tmp/l" --steps 3 --batch-size 2 \
    --seq-len 32 --compute bf16 --threads 2
stdout_has "weights [0-9.]+ [KMG]?i?B \(bf16 base\)"
stdout_has "compute +bf16 GEMMs \(projections and LM head on the bf16 base"
[ -f "$tmp/l/final/adapter_model.safetensors" ] || fail "no adapter from the LoRA run"

# shellcheck disable=SC2086
run 1 train $full --compute f16 --out "$tmp/x"
stderr_has "compute: expected f32\|bf16, got 'f16'"
finish
