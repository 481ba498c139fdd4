# `make demo`'s script (tests/demo.sh), start to end, on a tiny random model
# with the demo tokenizer and 2 LoRA steps: every phase runs and leaves its
# files, the baseline comparison is made, the exports are readable, and a
# model that cannot learn the task in 2 steps is not "clearly improved" (exit
# 2) and the task suite's gate reasons are printed.
. "$(dirname "$0")/lib.inc"
root="$(cd "$(dirname "$0")/../.." && pwd)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$out" "$err"' EXIT

# a 1-layer Llama of width 32 with the demo model's tokenizer and chat template
sed -e 's/"hidden_size": [0-9]*/"hidden_size": 32/' -e 's/"intermediate_size": [0-9]*/"intermediate_size": 64/' \
    -e 's/"num_hidden_layers": [0-9]*/"num_hidden_layers": 1/' -e 's/"num_attention_heads": [0-9]*/"num_attention_heads": 2/' \
    -e 's/"num_key_value_heads": [0-9]*/"num_key_value_heads": 1/' \
    "$root/datasets/demo-model/config.json" >"$tmp/tiny-config.json"
head -n 20 "$root/datasets/pretrain/valid.jsonl" >"$tmp/text.jsonl"
# the suites cut short (whole ones take minutes under qemu): the task suite's
# header and two cases of each tag, the general suite's header, 3 ppl and 8
# choice cases
task="$root/datasets/query-dsl/eval.jsonl"
{
    head -n 1 "$task"
    grep -m2 '"critical"\]' "$task"
    for tag in seen_phrasing new_phrasing new_value; do grep -m2 "\"tags\": \[\"$tag\"\]" "$task"; done
} >"$tmp/task.jsonl"
{
    head -n 1 "$root/datasets/general/eval.jsonl"
    grep -m3 '"kind": "ppl"' "$root/datasets/general/eval.jsonl"
    grep -m8 '"kind": "choice"' "$root/datasets/general/eval.jsonl"
} >"$tmp/general.jsonl"
[ "$(wc -l <"$tmp/task.jsonl")" -eq 9 ] && [ "$(wc -l <"$tmp/general.jsonl")" -eq 12 ] || fail "cutting the suites short"
run 0 train --init "$tmp/tiny-config.json" --tokenizer "$root/datasets/demo-model" --data "$tmp/text.jsonl" \
    --out "$tmp/init" --method full --steps 1 --batch-size 1 --seq-len 32 --threads 1
[ -f "$tmp/init/final/model.safetensors" ] || fail "no tiny model"

WHET_THREADS=1 DEMO_MODEL="$tmp/init/final" DEMO_OUT="$tmp/demo" DEMO_STEPS=2 \
    DEMO_TASK_SPEC="$tmp/task.jsonl" DEMO_GENERAL_SPEC="$tmp/general.jsonl" \
    sh "$root/tests/demo.sh" >"$out" 2>"$err"
status=$?
[ "$status" -eq 2 ] || fail "demo.sh on a random model exited $status, expected 2 (the task does not improve)"

# said up front how long it takes, then ran each phase in order
sed -n 3p "$out" | grep -qE 'this takes about [0-9]+ minutes' || fail "no time estimate on the third line"
prev=0
for n in 1 2 3 4 5 6; do
    line=$(grep -n "^== $n/6 " "$out" | head -1 | cut -d: -f1)
    [ -n "$line" ] && [ "$line" -gt "$prev" ] || fail "phase $n/6 missing or out of order"
    prev=${line:-$prev}
done
grep -q '^== summary' "$out" || fail "no summary"

# 1 and 4: both evals, the second against the first
for d in eval-before eval-after; do
    for f in results.json samples.jsonl report.md report.html; do
        [ -s "$tmp/demo/$d/$f" ] || fail "no $d/$f"
    done
done
grep -q '"baseline": null' "$tmp/demo/eval-before/results.json" || fail "the baseline eval has a baseline"
grep -q '"baseline": null' "$tmp/demo/eval-after/results.json" && fail "the eval after training has no baseline"
stdout_has '^query-dsl: 0 of 8 passed'
stdout_has '^general: [0-9]+ of 8 passed'
# 3: the adapter; 5: the exports
[ -f "$tmp/demo/run/final/adapter_config.json" ] || fail "no trained adapter"
[ -f "$tmp/demo/run/metrics.jsonl" ] || fail "no metrics.jsonl"
# whet train --eval: the suites on the base model and at the checkpoint
[ -s "$tmp/demo/run/eval/step-0/results.json" ] && [ -s "$tmp/demo/run/eval/step-2/results.json" ] ||
    fail "whet train --eval left no baseline or checkpoint eval"
grep -q '"type":"eval"' "$tmp/demo/run/metrics.jsonl" || fail "no eval record in metrics.jsonl"
[ -s "$tmp/demo/adapter/adapter_model.safetensors" ] && [ -s "$tmp/demo/adapter/adapter_config.json" ] ||
    fail "no PEFT export"
[ "$(head -c 4 "$tmp/demo/demo-query-dsl.gguf")" = GGUF ] || fail "the merged export is not a GGUF file"
# 6: four questions, each with its expected query, two answers and the validator's verdicts
[ "$(grep -c '^  question (' "$out")" -eq 4 ] || fail "not four side-by-side questions"
[ "$(grep -c '^    expected  FIND ' "$out")" -eq 4 ] || fail "an expected query is missing"
[ "$(grep -cE '^              -> (right|wrong)' "$out")" -eq 8 ] || fail "a verdict is missing"
# the summary: pass rates before and after, the general suite, the gate's reasons
stdout_has '^  query-dsl pass rate:  before 0 of 8 \(0\.0%\)  ->  after [0-9]+ of 8'
stdout_has '^  general after: +[0-9]+ of 8 passed'
stdout_has '^  the task: NOT clearly improved'
stdout_has "^  the task suite's own gate .* is not reached yet"
stdout_has '^      pass rate 0\.0000 \(0 of 8\) is below min_pass_rate'
stdout_has '^  general ability: '
# nothing outside DEMO_OUT: the eval cache is the demo's own
[ -d "$tmp/demo/eval-cache" ] || fail "the eval cache is not under DEMO_OUT"

# a missing model is an error, not a gate failure
DEMO_MODEL="$tmp/none" DEMO_OUT="$tmp/demo2" sh "$root/tests/demo.sh" >"$out" 2>"$err"
[ $? -eq 1 ] || fail "demo.sh with a missing model did not exit 1"
stderr_has '^demo: no model at '
finish
