# whet train's start and its evals: the data checks stop a run on a bad line
# (file:line:column) and print warnings; an eval case whose text is in the
# training data is warned about; --eval runs the suites on the base model
# (the baseline, eval/step-0) and at every checkpoint (metrics.jsonl records,
# eval/step-N reports, checkpoint-N/gate.json, report.svg); --gate makes the
# output the best checkpoint that passed (an earlier one is spared by the
# rotation) or, when none did, exit 2 without final/; --resume reloads the
# baseline instead of running it again and gives the records of a run never
# stopped (also when the resumed checkpoint's eval had not happened yet, and
# after SIGTERM); evals leave the trained bits as they are.
. "$(dirname "$0")/lib.inc"
. "$(dirname "$0")/models.inc"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$out" "$err"' EXIT
make_model llama "$tmp/llama" chatml
awk 'BEGIN { for (i = 0; i < 40; i++) { n = 8 + (i * 5) % 13; s = "";
             for (k = 0; k < n; k++) s = s "<t" 20 + (i + k * 3) % 40 ">";
             printf "{\"text\": \"%s\"}\n", s } }' >"$tmp/train.jsonl"
base="--model $tmp/llama --data $tmp/train.jsonl --batch-size 4 --seq-len 32 --threads 1 --lora-rank 4"

# suites: gen cases that always pass (the output is never "zzz") and one that
# never does, a ppl text unlike the training data (its perplexity rises as
# the adapter learns the data: +10.7 % at step 5, +70 % at step 10 with
# --lr 1e-2), and a case copied from line 3 of the training data
cat >"$tmp/pass.jsonl" <<'EOF'
{"suite": "always", "max_tokens": 3, "gate": {"min_pass_rate": 1.0}}
{"id": "p1", "prompt": "<t61>", "assert": [{"type": "not_equals", "value": "zzz"}]}
{"id": "p2", "prompt": "<t62>", "assert": [{"type": "not_equals", "value": "zzz"}]}
EOF
cat >"$tmp/never.jsonl" <<'EOF'
{"suite": "never", "max_tokens": 3}
{"id": "ok", "prompt": "<t61>", "assert": [{"type": "not_equals", "value": "zzz"}]}
{"id": "must", "tags": ["critical"], "prompt": "<t62>", "assert": [{"type": "equals", "value": "zzz"}]}
EOF
cat >"$tmp/drift.jsonl" <<'EOF'
{"suite": "drift", "gate": {"max_ppl_increase": 0.5}}
{"id": "other", "kind": "ppl", "text": "<t200><t150><t250><t120><t180><t90><t270><t110>"}
EOF
line3=$(sed -n '3s/.*"text": "\(.*\)"}/\1/p' "$tmp/train.jsonl")
printf '%s\n' '{"suite": "leak", "max_tokens": 2}' \
    "{\"id\": \"leaked\", \"prompt\": \"$line3\", \"assert\": [{\"type\": \"not_equals\", \"value\": \"zzz\"}]}" \
    '{"id": "fresh", "prompt": "<t70><t71>", "assert": [{"type": "not_equals", "value": "zzz"}]}' >"$tmp/leak.jsonl"

# 1. the data checks: errors stop the run before anything is written, positioned
{ sed -n 1,2p "$tmp/train.jsonl"; echo '{"text": 5}'; echo '{"prompt": "a", "completion": "b"}'; } >"$tmp/bad.jsonl"
# shellcheck disable=SC2086
run 1 train $base --data "$tmp/bad.jsonl" --out "$tmp/x" --steps 2
stderr_has "^$tmp/bad.jsonl:3:10: invalid-value: expected \"text\" to be a string, found number$"
stderr_has "^$tmp/bad.jsonl:4:1: missing-key: "
stderr_has "2 errors in the data \(2 of 4 examples are usable\); nothing was trained"
[ ! -e "$tmp/x" ] || fail "a run stopped by the data checks left $tmp/x"
# warnings are printed (the first 20) and the run goes on
# shellcheck disable=SC2086
run 0 train $base --out "$tmp/w" --steps 1 --seq-len 8
stderr_has "^$tmp/train.jsonl:1:1: warning: too-long: 9 tokens: --seq-len 8 cuts the last 1"
stderr_has "^\.\.\. and 20 more problems \(whet data check $tmp/train.jsonl lists them\)"

# a chat case without a chat template is refused before the run starts
printf '%s\n' '{"suite": "chat"}' '{"id": "c", "messages": [{"role": "user", "content": "<t9>"}], "assert": [{"type": "not_equals", "value": "z"}]}' >"$tmp/chat.jsonl"
make_model llama "$tmp/plain"
run 1 train --model "$tmp/plain" --data "$tmp/train.jsonl" --out "$tmp/x" --steps 2 --eval "$tmp/chat.jsonl"
stderr_has "chat.jsonl:2: case \"c\" is a chat, and the model has no chat template \(give --chat-template\)"
[ ! -e "$tmp/x" ] || fail "a refused suite left $tmp/x"

# 2. an eval case that is in the training data is warned about; the other is not
# shellcheck disable=SC2086
run 0 train $base --out "$tmp/l" --steps 2 --eval "$tmp/leak.jsonl"
stderr_has "warning: eval case leaked \($tmp/leak.jsonl:2\) shares 6 of its 6 13-grams with the training data \($tmp/train.jsonl:3\): the eval lies"
grep -q "eval case fresh" "$err" && fail "a case not in the training data was warned about"

# 3. evals at the baseline and every checkpoint, without --gate
# shellcheck disable=SC2086
run 0 train $base --out "$tmp/a" --steps 10 --lr 1e-2 --save-every 5 --valid-split 0.2 --eval-every 5 \
    --eval "$tmp/pass.jsonl" --eval "$tmp/never.jsonl"
stderr_has "^eval baseline \(the base model\): pass rate 75.0% \(3/4\) in "
stderr_has "^eval at step 5: pass rate 75.0% \(3/4\) in .*, gate FAILED: never: "
stdout_has "^evals: pass rate 75.0% at the baseline, 75.0% at step 10; gate passed at 0 of 2 checkpoints; "
stdout_has "; adapter in $tmp/a/final"
[ "$(grep -c '"type":"eval"' "$tmp/a/metrics.jsonl")" -eq 3 ] || fail "metrics.jsonl: not 3 eval records"
grep -q '^{"type":"eval","step":0,"baseline":true,"gate_enforced":false,"seconds":[0-9.]*,"valid_loss":null,"pass_rate":0.75,"passed":3,"cases":4,"gate_passed":false,' "$tmp/a/metrics.jsonl" ||
    fail "metrics.jsonl: the baseline record"
grep -q '^{"type":"eval","step":10,"baseline":false,.*"valid_loss":[0-9.]*,"pass_rate":0.75,.*"suites":{"always":{"pass_rate":1.0,.*"pass_to_fail":0,' "$tmp/a/metrics.jsonl" ||
    fail "metrics.jsonl: the step-10 record"
for f in eval/step-0/results.json eval/step-0/report.md eval/step-5/report.html eval/step-10/samples.jsonl \
    checkpoint-10/gate.json run.conf; do
    [ -f "$tmp/a/$f" ] || fail "$tmp/a/$f missing"
done
grep -q '"gate_passed":false,"gate_failures":\["never: ' "$tmp/a/checkpoint-10/gate.json" || fail "gate.json: no verdict"
[ "$(grep -c '^eval = ' "$tmp/a/run.conf")" -eq 2 ] || fail "run.conf: not one eval line per suite"
grep -q '^gate = false$' "$tmp/a/run.conf" || fail "run.conf: no gate line"
grep -q 'class="gate-failed"' "$tmp/a/report.svg" || fail "report.svg: no gate-failed marker"
grep -q 'eval pass rate' "$tmp/a/report.svg" || fail "report.svg: no pass-rate axis"
# the run file repeats it: both suites come back (and --eval on the command line replaces them)
run 0 train --config "$tmp/a/run.conf" --out "$tmp/a2" --threads 2
cmp -s "$tmp/a/final/adapter_model.safetensors" "$tmp/a2/final/adapter_model.safetensors" ||
    fail "the run repeated from run.conf gave another adapter"
sed 's/"seconds":[0-9.]*//' "$tmp/a/checkpoint-10/gate.json" >"$tmp/g1"
sed 's/"seconds":[0-9.]*//' "$tmp/a2/checkpoint-10/gate.json" >"$tmp/g2"
cmp -s "$tmp/g1" "$tmp/g2" || fail "the repeated run's eval at step 10 differs (2 threads against 1)"
run 0 train --config "$tmp/a/run.conf" --out "$tmp/a3" --steps 2 --eval "$tmp/pass.jsonl"
[ "$(grep -c '^eval = ' "$tmp/a3/run.conf")" -eq 1 ] || fail "--eval on the command line did not replace the file's"

# evals change nothing in training: with LoRA dropout, the same adapter with and without them
# shellcheck disable=SC2086
run 0 train $base --out "$tmp/d1" --steps 12 --save-every 4 --lr 5e-3 --lora-dropout 0.2
# shellcheck disable=SC2086
run 0 train $base --out "$tmp/d2" --steps 12 --save-every 4 --lr 5e-3 --lora-dropout 0.2 --eval "$tmp/pass.jsonl" \
    --eval "$tmp/drift.jsonl"
cmp -s "$tmp/d1/final/adapter_model.safetensors" "$tmp/d2/final/adapter_model.safetensors" ||
    fail "evals at checkpoints changed the trained adapter"

# 4. --gate, a gate no checkpoint passes (a critical case fails): exit 2, no final/
# shellcheck disable=SC2086
run 2 train $base --out "$tmp/f" --steps 10 --save-every 5 --eval "$tmp/never.jsonl" --gate
stderr_has "the eval gate failed at every checkpoint \(2 of them; at step 10: never: .*\); no output was written to $tmp/f/final"
stdout_has "; last checkpoint $tmp/f/checkpoint-10"
[ ! -e "$tmp/f/final" ] || fail "a failed gate wrote final/"
grep -q '"gate_enforced":true' "$tmp/f/checkpoint-5/gate.json" || fail "gate.json: not enforced"
# shellcheck disable=SC2086
run 2 train $base --out "$tmp/f2" --steps 2 --eval "$tmp/never.jsonl" --gate --json
stdout_has '"output":null,"eval":\{"baseline_pass_rate":0.5,"pass_rate":0.5,"checkpoints":1,"gate_failed":1,"gate":"failed","selected_step":null,'
# shellcheck disable=SC2086
run 1 train $base --out "$tmp/x" --steps 2 --gate
stderr_has "give --eval SPEC too"
# bad usage is 1, never 2 (which says that the gate failed)
# shellcheck disable=SC2086
run 1 train $base --out "$tmp/x" --steps 2 --no-such-option
stderr_has "^whet: train: unknown option '--no-such-option'"
stdout_empty
# shellcheck disable=SC2086
run 1 train $base --out "$tmp/x" --steps
stderr_has "^whet: train: --steps needs a value"

# 5. --gate, passing only at step 5: final/ is checkpoint-5, kept past --keep-checkpoints 2
# shellcheck disable=SC2086
run 0 train $base --out "$tmp/g" --steps 30 --lr 1e-2 --save-every 5 --keep-checkpoints 2 --eval "$tmp/drift.jsonl" \
    --eval "$tmp/pass.jsonl" --gate
stderr_has "^eval at step 5: .*gate passed$"
stderr_has "^eval at step 10: .*gate FAILED: drift: perplexity rose by "
stdout_has "^gate: the output is checkpoint-5 \(pass rate 100.0%\), the best whose gate passed"
for c in "$tmp/g"/checkpoint-*; do echo "${c##*/}"; done | sort >"$tmp/kept"
printf 'checkpoint-25\ncheckpoint-30\ncheckpoint-5\n' | cmp -s - "$tmp/kept" || fail "kept: $(cat "$tmp/kept")"
cmp -s "$tmp/g/final/adapter_model.safetensors" "$tmp/g/checkpoint-5/adapter_model.safetensors" ||
    fail "final/ is not checkpoint-5's adapter"
# a full fine-tune: final/ holds checkpoint-10's weights (its perplexity on the text, as whet score gives it)
sed 's/"max_ppl_increase": 0.5/"max_ppl_increase": 0.3/' "$tmp/drift.jsonl" >"$tmp/drift3.jsonl"
# shellcheck disable=SC2086
run 0 train $base --out "$tmp/h" --steps 20 --lr 1e-2 --save-every 2 --method full --eval "$tmp/drift3.jsonl" --gate
stdout_has "^gate: the output is checkpoint-10 \(pass rate n/a\)"
want=$(sed -n 's/.*"type":"eval","step":10,.*"perplexity":\([0-9.]*\),.*/\1/p' "$tmp/h/metrics.jsonl")
run 0 score --model "$tmp/h/final" --text "<t200><t150><t250><t120><t180><t90><t270><t110>" --threads 1 --json
stdout_has "\"perplexity\":${want}[,}]"
# the same run with the gate passing everywhere: the later checkpoint of equal pass rate
# shellcheck disable=SC2086
run 0 train $base --out "$tmp/p" --steps 10 --save-every 5 --eval "$tmp/pass.jsonl" --gate
stdout_has "^gate: the output is checkpoint-10 "
cmp -s "$tmp/p/final/adapter_model.safetensors" "$tmp/p/checkpoint-10/adapter_model.safetensors" ||
    fail "final/ is not checkpoint-10's adapter"

# 6. --resume keeps the baseline: a 20-step run against 10 steps resumed to 20
# (constant learning rate, so the two are the same run)
without_timing() { sed 's/,"tokens_per_s":[^,}]*//; s/,"elapsed_s":[^,}]*//; s/,"seconds":[^,}]*//' "$1"; }
long="$base --lr 5e-3 --lr-schedule constant --save-every 5 --valid-split 0.2 --eval-every 5 --eval $tmp/pass.jsonl --eval $tmp/drift.jsonl"
# shellcheck disable=SC2086
run 0 train $long --out "$tmp/r1" --steps 20
# shellcheck disable=SC2086
run 0 train $long --out "$tmp/r2" --steps 10
cp "$tmp/r2/eval/step-0/samples.jsonl" "$tmp/base.samples"
# as if stopped after writing checkpoint-10 but before its eval
rm "$tmp/r2/checkpoint-10/gate.json" "$tmp/r2/eval/step-10/results.json"
grep -v '"type":"eval","step":10,' "$tmp/r2/metrics.jsonl" >"$tmp/m" && cp "$tmp/m" "$tmp/r2/metrics.jsonl"
run 0 train --resume "$tmp/r2" --steps 20
stderr_has "^eval baseline reloaded from $tmp/r2/eval/step-0"
grep -q "eval baseline (the base model)" "$err" && fail "the resumed run evaluated the baseline again"
stderr_has "^eval at step 10: "
cmp -s "$tmp/base.samples" "$tmp/r2/eval/step-0/samples.jsonl" || fail "the baseline changed on resume"
without_timing "$tmp/r1/metrics.jsonl" >"$tmp/m1"
without_timing "$tmp/r2/metrics.jsonl" >"$tmp/m2"
cmp -s "$tmp/m1" "$tmp/m2" || fail "metrics.jsonl of the resumed run differs from the uninterrupted one's"
[ "$(grep -c '"baseline":true' "$tmp/r2/metrics.jsonl")" -eq 1 ] || fail "not one baseline record after resume"
cmp -s "$tmp/r1/final/adapter_model.safetensors" "$tmp/r2/final/adapter_model.safetensors" ||
    fail "the resumed run's output differs"
# SIGTERM: the checkpoint of the interruption is not evaluated (an uninterrupted
# run has none there); resumed, the run has the uninterrupted run's records
# shellcheck disable=SC2086
run 0 train $long --out "$tmp/s1" --steps 400 --save-every 50 --eval-every 50
# shellcheck disable=SC2086
$WHET train $long --out "$tmp/s2" --steps 400 --save-every 50 --eval-every 50 >"$out" 2>"$err" &
pid=$!
while kill -0 $pid 2>/dev/null && [ ! -d "$tmp/s2/checkpoint-50" ]; do sleep 0.01; done
kill -TERM $pid
wait $pid
status=$?
if [ -d "$tmp/s2/final" ]; then
    echo "skip: the run ended before SIGTERM reached it"
else
    [ "$status" -eq 1 ] || fail "SIGTERM: exit $status, expected 1"
    stderr_has "interrupted at step"
    grep -q "^eval at step [0-9]*: not now (interrupted)" "$err" || grep -q "^eval at step 50: " "$err" ||
        fail "SIGTERM: no eval line for the interruption's checkpoint"
    run 0 train --resume "$tmp/s2"
    without_timing "$tmp/s1/metrics.jsonl" >"$tmp/m1"
    without_timing "$tmp/s2/metrics.jsonl" >"$tmp/m2"
    cmp -s "$tmp/m1" "$tmp/m2" || fail "metrics.jsonl after SIGTERM and --resume differs from the uninterrupted run's"
fi
# --eval added on --resume to a run that had none: no baseline to compare with
# shellcheck disable=SC2086
run 0 train $base --out "$tmp/n" --steps 2
run 1 train --resume "$tmp/n" --steps 4 --eval "$tmp/pass.jsonl"
stderr_has "--eval on --resume needs the baseline the run made at its start"
finish
