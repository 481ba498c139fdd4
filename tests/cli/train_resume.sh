# whet train --resume continues bit for bit: a run killed with SIGKILL at a
# step (after a checkpoint, possibly inside the next one's writing) and
# resumed ends with the same bytes as a run never stopped, on a different
# thread count; SIGTERM checkpoints at the step boundary and exits 1. LoRA
# (dropout, packing, accumulation, validation) and a full from-scratch run.
. "$(dirname "$0")/lib.inc"
. "$(dirname "$0")/models.inc"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$out" "$err"' EXIT
make_model llama "$tmp/llama" chatml
write_sequence_data "$tmp/data" split

# kill_after RUN_DIR MIN_STEP PID SIGNAL: sends SIGNAL once a checkpoint of
# at least MIN_STEP exists (fails the test if the run ends first)
kill_after() {
    _i=0
    while kill -0 "$3" 2>/dev/null; do
        for _c in "$1"/checkpoint-*; do
            [ -d "$_c" ] || continue
            if [ "${_c##*-}" -ge "$2" ]; then
                kill "-$4" "$3"
                return 0
            fi
        done
        _i=$((_i + 1))
        sleep 0.01
    done
    fail "the run in $1 ended before it could be stopped"
}

# without_timing FILE: metrics.jsonl without the wall-clock fields
without_timing() { sed 's/,"tokens_per_s":[^,}]*//; s/,"elapsed_s":[^,}]*//' "$1"; }

check_same() { # DIR_A DIR_B FILE...
    _a=$1 _b=$2
    shift 2
    for _f in "$@"; do
        cmp -s "$_a/$_f" "$_b/$_f" || fail "$_b/$_f differs from the uninterrupted run's"
    done
    without_timing "$_a/metrics.jsonl" >"$tmp/m.a"
    without_timing "$_b/metrics.jsonl" >"$tmp/m.b"
    cmp -s "$tmp/m.a" "$tmp/m.b" || fail "$_b/metrics.jsonl records differ from the uninterrupted run's"
}

lora="--model $tmp/llama --data $tmp/data --steps 60 --batch-size 4 --seq-len 32 --grad-accum 2 --pack
      --lora-rank 4 --lora-dropout 0.1 --lr 3e-3 --warmup-steps 10 --weight-decay 0.01 --eval-every 20
      --save-every 7 --keep-checkpoints 2"
# shellcheck disable=SC2086
run 0 train $lora --out "$tmp/a" --threads 1
[ -f "$tmp/a/final/adapter_model.safetensors" ] || fail "no adapter in the uninterrupted run"

# SIGKILL after checkpoint-14 exists, then resume on another thread count
# shellcheck disable=SC2086
$WHET train $lora --out "$tmp/b" --threads 2 >"$out" 2>"$err" &
pid=$!
kill_after "$tmp/b" 14 $pid KILL
wait $pid 2>/dev/null
[ ! -d "$tmp/b/final" ] || fail "the killed run got to its end"
run 0 train --resume "$tmp/b" --threads 1
stdout_has "resuming from .*/checkpoint-[0-9]+"
check_same "$tmp/a" "$tmp/b" final/adapter_model.safetensors final/adapter_config.json \
    checkpoint-60/weights.safetensors checkpoint-60/optimizer.safetensors
grep -v elapsed_s "$tmp/a/checkpoint-60/state.json" >"$tmp/s.a"
grep -v elapsed_s "$tmp/b/checkpoint-60/state.json" >"$tmp/s.b"
cmp -s "$tmp/s.a" "$tmp/s.b" || fail "checkpoint-60/state.json differs (beyond the elapsed time)"

# SIGTERM: the step finishes, a checkpoint is written, exit 1 with a message
# shellcheck disable=SC2086
$WHET train $lora --out "$tmp/c" --threads 2 >"$out" 2>"$err" &
pid=$!
kill_after "$tmp/c" 21 $pid TERM
wait $pid
status=$?
[ "$status" -eq 1 ] || fail "SIGTERM: exit $status, expected 1"
stderr_has "interrupted at step [0-9]+; continue with: whet train --resume"
stopped=$(sed -n 's/.*interrupted at step \([0-9]*\).*/\1/p' "$err")
[ -n "$stopped" ] && [ -f "$tmp/c/checkpoint-$stopped/manifest.json" ] ||
    fail "no checkpoint at the interrupted step '$stopped'"
run 0 train --resume "$tmp/c/checkpoint-$stopped" --threads 1
check_same "$tmp/a" "$tmp/c" final/adapter_model.safetensors

# a full run from scratch (--init, tied embeddings): killed, resumed, the same model
write_tiny_llama_config "$tmp/tiny.json"
full="--init $tmp/tiny.json --tokenizer $tmp/llama/tokenizer.json --data $tmp/data/train.jsonl --method full
      --steps 40 --batch-size 4 --seq-len 32 --lr 2e-3 --weight-decay 0.1 --lr-schedule linear --save-every 5
      --grad-checkpoint"
# shellcheck disable=SC2086
run 0 train $full --out "$tmp/d" --threads 2
# shellcheck disable=SC2086
$WHET train $full --out "$tmp/e" --threads 1 >"$out" 2>"$err" &
pid=$!
kill_after "$tmp/e" 10 $pid KILL
wait $pid 2>/dev/null
run 0 train --resume "$tmp/e" --threads 2
check_same "$tmp/d" "$tmp/e" final/model.safetensors final/config.json final/tokenizer.json
run 0 score --model "$tmp/e/final" --text "<t10><t11><t12><t13>" --threads 1
stdout_has "perplexity"
finish
