#!/bin/sh
# `make demo`: the whole job on what ships in the repository, in a few minutes
# on a laptop-class CPU. The base model (datasets/demo-model/) was pretrained
# from scratch by whet on datasets/pretrain/; this script teaches it the
# query-DSL task (datasets/query-dsl/) with a LoRA adapter and proves the tune
# with whet eval's gate:
#
#   1. baseline eval: the task suite and the general-ability suite
#   2. whet data check on the training data
#   3. LoRA fine-tune (whet train, with its progress line)
#   4. eval again against the baseline, with the suites' gates
#   5. export: the adapter for PEFT, the merged model as GGUF
#   6. answers before and after, side by side (base model / merged GGUF)
#
# Everything is written under DEMO_OUT (default build/demo); nothing in the
# source tree changes. It lives in tests/ because it is an end-to-end run of
# the CLI on shipped data, and tests/cli/demo_smoke.sh runs this very script
# on a tiny random model so that `make check` keeps it working.
#
# Environment (all optional):
#   WHET         the whet command (default build/whet; may carry an emulator
#                prefix, its last word is the binary)
#   DEMO_MODEL   base model directory (default datasets/demo-model)
#   DEMO_OUT     output directory (default build/demo)
#   DEMO_STEPS   LoRA optimizer steps (default 800)
#   DEMO_TASK_SPEC, DEMO_GENERAL_SPEC   eval suites (default the datasets' ones)
#   WHET_THREADS threads (default: every physical core)
#
# Exit status: 0 when the tuned model passes the task suite's own gate (its
# min_pass_rate and every case tagged critical), its pass rate improved
# clearly over the base model's (more cases pass, McNemar p < 0.05) and the
# general suite's gate held; 2 when not; 1 on an error.
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
: "${WHET:=$root/build/whet}"
whet_bin=${WHET##* }
model=${DEMO_MODEL:-$root/datasets/demo-model}
out=${DEMO_OUT:-$root/build/demo}
steps=${DEMO_STEPS:-800}
task_spec=${DEMO_TASK_SPEC:-$root/datasets/query-dsl/eval.jsonl}
general_spec=${DEMO_GENERAL_SPEC:-$root/datasets/general/eval.jsonl}
data=$root/datasets/query-dsl
# the eval's exec scorer: the validator built beside whet
QUERY_DSL_VALIDATE=${QUERY_DSL_VALIDATE:-"${WHET%"$whet_bin"}$(cd "$(dirname "$whet_bin")" && pwd)/datasets/query-dsl-validate"}
export QUERY_DSL_VALIDATE
system_prompt="Translate the question into a query of the observability query language."
nl='
'

die() {
    echo "demo: $*" >&2
    exit 1
}
[ -x "$whet_bin" ] || die "no whet at $whet_bin (run make first)"
[ -f "$model/config.json" ] || die "no model at $model"
[ -x "${QUERY_DSL_VALIDATE##* }" ] || die "no validator at $QUERY_DSL_VALIDATE (make builds it)"
mkdir -p "$out" || die "cannot create $out"
out=$(cd "$out" && pwd)

# ---- the time it will take: a fixed part (the evals, the export, the
# answers) and a part per LoRA step, measured on a 2-core x86-64 machine
# (AVX-512) whose `whet cpu` peak read REF_GFLOPS per core: with the cores to
# itself a step took 0.14 s and the rest 35 s (147 s in all), shared with
# other jobs (load 2-4) 0.21 s and 95 s (265 s); the figures below lean to the
# cautious side. They are scaled by this CPU's measured peak and threads (more
# than 4 threads are not counted: the matrices are small and keep whet far
# from peak, so this is a rough guide) and rounded up to the next minute.
REF_FIXED_SECONDS=40
REF_STEP_SECONDS=0.17
REF_GFLOPS=200
REF_THREADS=2
cpu_json=$($WHET cpu --json) || die "whet cpu failed"
gflops=$(printf '%s' "$cpu_json" | sed -n 's/.*"fma_peak_gflops_per_core":\([0-9.]*\).*/\1/p')
threads=$(printf '%s' "$cpu_json" | sed -n 's/.*"threads":\([0-9]*\).*/\1/p')
isa=$(printf '%s' "$cpu_json" | sed -n 's/.*"isa":"\([a-z0-9]*\)".*/\1/p')
estimate=$(awk -v g="${gflops:-10}" -v t="${threads:-1}" -v n="$steps" -v rf=$REF_FIXED_SECONDS \
    -v rs=$REF_STEP_SECONDS -v rg=$REF_GFLOPS -v rt=$REF_THREADS \
    'BEGIN { if (t > 4) t = 4; if (g <= 0) g = 10; printf "%d", (rf + n * rs) * (rg * rt) / (g * t) }')
echo "whet demo: teach a tiny pretrained model (datasets/demo-model) the query-DSL task with LoRA,"
echo "prove it with an eval gate, export it, and compare answers before and after."
echo "CPU: ${isa:-?}, $threads threads, ${gflops:-?} GFLOP/s per core: this takes about $((estimate / 60 + 1)) minutes."
echo "Output: $out"

start=$(date +%s)
phase() {
    echo
    echo "== $* (at $(($(date +%s) - start)) s)"
}

# `whet eval` exits 2 when a gate fails: for the baseline that is expected
# (the base model cannot do the task yet); 1 is an error.
run_eval() {
    label=$1
    shift
    $WHET eval --model "$model" --cache "$out/eval-cache" --out "$out/$label" "$@" \
        "$task_spec" "$general_spec" >"$out/$label.txt"
    eval_status=$?
    cat "$out/$label.txt"
    [ $eval_status -ne 1 ] || die "whet eval failed"
}

# suite_line FILE SUITE: the summary line whet eval printed for SUITE
suite_line() {
    grep -m1 "^$2: " "$1" | sed "s/^$2: //"
}
pass_rate() {
    suite_line "$1" "$2" | sed -n 's/^\([0-9]* of [0-9]*\) passed (\([0-9.]*%\).*/\1 (\2)/p'
}

# ---- 1. baseline
phase "1/6 baseline eval of the base model: $(basename "$task_spec") (task) and general"
rm -rf "$out/eval-before" "$out/eval-after"
run_eval eval-before

# ---- 2. the data
phase "2/6 whet data check on the training data"
$WHET data check "$data/train.jsonl" "$data/valid.jsonl" --model "$model" || die "the training data has errors"

# ---- 3. LoRA fine-tune
phase "3/6 LoRA fine-tune on $data (train.jsonl, valid.jsonl): $steps steps"
rm -rf "$out/run"
# --eval runs both suites on the base model and at each checkpoint (every 400
# steps), each line with its gate verdict. No --gate: it would make the output
# the best checkpoint that passes every suite's gate and stop the demo when
# none does; step 4 judges the final adapter instead, and says why it fails if
# it does. The settings are the demo's measured best on a 2-core budget: 800
# steps of 8 packed sequences of 256 tokens are 1.6 M tokens, about 8 passes
# over train.jsonl, 43 of 120 passed (38 and 42 after kernel changes that
# reorder sums, every critical case still passing); 400 steps left two critical cases
# wrong, 1000 or 1200 did no better, batch 4 or 16, rank 16 or 64, lr 2e-3,
# 4e-3 or 6e-3 and dropout 0.1 did worse. Other seeds (1, 2) gave 40 of 120,
# one of them with critical case 013 wrong: the gate is passed, narrowly.
$WHET train --model "$model" --data "$data" --out "$out/run" --method lora --lora-rank 32 --lora-alpha 64 \
    --pack --seq-len 256 --batch-size 8 --lr 3e-3 --warmup-steps 20 --steps "$steps" \
    --eval-every 100 --save-every 400 --keep-checkpoints 1 --eval "$task_spec" --eval "$general_spec" ||
    die "whet train failed"
adapter=$out/run/final

# ---- 4. eval with the gate
phase "4/6 eval of the tuned model against the baseline, with the suites' gates"
run_eval eval-after --adapter "$adapter" --baseline "$out/eval-before"

# ---- 5. export
phase "5/6 export: the adapter for PEFT, the merged model as GGUF"
$WHET export --model "$model" --adapter "$adapter" --format peft --out "$out/adapter" ||
    die "export of the PEFT adapter failed"
$WHET export --model "$model" --adapter "$adapter" --format gguf --merge --type f16 --out "$out/demo-query-dsl.gguf" ||
    die "export of the merged GGUF failed"
echo "  $out/adapter/       PEFT adapter (adapter_config.json, adapter_model.safetensors)"
echo "  $out/demo-query-dsl.gguf   base + adapter merged, F16, for llama.cpp / Ollama"

# ---- 6. before and after
phase "6/6 answers before (base model) and after (the merged GGUF), on held-out questions"
# answer MODEL QUESTION: greedy, one line, as the eval decodes
answer() {
    $WHET generate --model "$1" --system "$system_prompt" --chat "$2" --temperature 0 --max-tokens 64 \
        --stop "$nl" 2>/dev/null
}
# verdict CASE_LINE ANSWER: what the eval's validator says of the answer
verdict() {
    # shellcheck disable=SC2086
    if msg=$(printf '%s' "$2" | WHET_CASE=$1 $QUERY_DSL_VALIDATE --stdout --expect 2>&1); then
        echo "right"
    else
        echo "wrong: ${msg#error: }"
    fi
}
for tag in critical seen_phrasing new_phrasing new_value; do
    case $tag in
    critical) pattern='"critical"\]' ;;
    *) pattern="\"tags\": \[\"$tag\"\]" ;;
    esac
    case_line=$(grep -m1 "$pattern" "$task_spec") || continue
    question=$(printf '%s' "$case_line" | sed 's/.*"role": "user", "content": "\([^"]*\)".*/\1/')
    expected=$(printf '%s' "$case_line" | sed 's/.*"expected": "\(.*\)"}}$/\1/; s/\\"/"/g')
    before=$(answer "$model" "$question")
    after=$(answer "$out/demo-query-dsl.gguf" "$question")
    echo
    echo "  question ($tag): $question"
    echo "    expected  $expected"
    echo "    before    ${before:-(nothing)}"
    echo "              -> $(verdict "$case_line" "$before")"
    echo "    after     ${after:-(nothing)}"
    echo "              -> $(verdict "$case_line" "$after")"
done

# ---- summary
# baseline_line FILE SUITE: whet eval's comparison line for SUITE
baseline_line() {
    awk -v s="$2" '$0 ~ "^" s ": " { on = 1; next } /^[^ ]/ { on = 0 }
        on && /^  against the baseline: / { sub(/^  against the baseline: /, ""); print }' "$1"
}
# gate_reasons FILE SUITE: the gate's reasons whet eval printed for SUITE
gate_reasons() {
    awk -v s="$2" '$0 ~ "^" s ": " { on = 1; next } /^[^ ]/ { on = 0 }
        on && /^  gate: / { sub(/^  gate: /, ""); print "      " $0 }' "$1"
}
end=$(date +%s)
task=$(sed -n 's/^{"suite": "\([^"]*\)".*/\1/p' "$task_spec" | head -1)
task_cmp=$(baseline_line "$out/eval-after.txt" "$task")
# improved clearly: more fail->pass than pass->fail flips, McNemar p < 0.05
improved=$(printf '%s' "$task_cmp" | awk '{
    if (match($0, /[0-9]+ pass->fail/)) worse = substr($0, RSTART, RLENGTH) + 0
    if (match($0, /[0-9]+ fail->pass/)) better = substr($0, RSTART, RLENGTH) + 0
    if (match($0, /McNemar p = [0-9.e+-]+/)) p = substr($0, RSTART + 12, RLENGTH - 12) + 0
    print (better > worse && p < 0.05) ? "yes" : "no" }')
task_gate=$(gate_reasons "$out/eval-after.txt" "$task")
general_gate=$(gate_reasons "$out/eval-after.txt" general)
echo
echo "== summary: $((end - start)) s"
echo "  $task pass rate:  before $(pass_rate "$out/eval-before.txt" "$task")  ->  after $(pass_rate "$out/eval-after.txt" "$task")"
echo "    $task_cmp"
echo "  general before:  $(suite_line "$out/eval-before.txt" general)"
echo "  general after:   $(suite_line "$out/eval-after.txt" general)"
echo "    $(baseline_line "$out/eval-after.txt" general)"
if [ "$improved" = yes ]; then
    echo "  the task: improved clearly (more cases pass, McNemar p < 0.05)"
else
    echo "  the task: NOT clearly improved"
fi
if [ -z "$task_gate" ]; then
    echo "  the task suite's own gate (what a model must reach to ship): passed, every critical case included"
else
    echo "  the task suite's own gate (what a model must reach to ship) is not reached yet:"
    echo "$task_gate"
fi
if [ -z "$general_gate" ]; then
    echo "  general ability: within its gate (no significant drop, perplexity not up by more than allowed)"
else
    echo "  general ability: its gate FAILED (the tune made the model forget):"
    echo "$general_gate"
fi
echo "  reports: $out/eval-after/report.html (and report.md); training curve: $out/run/report.svg"
# the demo's own verdict: the task improved clearly and passed its gate, and
# general ability held
[ "$improved" = yes ] && [ -z "$task_gate" ] && [ -z "$general_gate" ] && exit 0
exit 2
