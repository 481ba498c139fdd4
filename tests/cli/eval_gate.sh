# whet eval --baseline and the gate: flips, the exact McNemar p, the paired
# bootstrap, and the exit status: 0 passed, 2 gate failed (a critical case,
# the pass rate below its minimum, a significant drop beyond max_drop, a
# perplexity rise beyond max_ppl_increase), 1 error (a case whose input
# changed under the same id). Baselines are earlier runs' directories with
# samples.jsonl edited, so that every flip is known in advance.
. "$(dirname "$0")/lib.inc"
. "$(dirname "$0")/models.inc"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$out" "$err"' EXIT
WHET_THREADS=1
export WHET_THREADS
data="$(cd "$(dirname "$0")/.." && pwd)/data/eval"
make_model llama "$tmp/llama" chatml
m="$tmp/llama"
spec="$data/gate.jsonl" # p1..p4 always pass, f1..f8 always fail, one ppl text

ev() { run "$1" eval --model "$m" --cache "$tmp/cache" --out "$tmp/run" "$@" ; }
# baseline NAME SED-SCRIPT: the first run's samples edited into $tmp/NAME
baseline() {
    mkdir -p "$tmp/$1"
    sed "$2" "$tmp/r0/samples.jsonl" >"$tmp/$1/samples.jsonl"
}
to_pass() { echo "/\"id\":\"$1\"/s/\"score\":0.0,\"pass\":false/\"score\":1.0,\"pass\":true/;"; }
to_fail() { echo "/\"id\":\"$1\"/s/\"score\":1.0,\"pass\":true/\"score\":0.0,\"pass\":false/;"; }

# 1. no baseline, no threshold broken: exit 0
run 0 eval --model "$m" --cache "$tmp/cache" --out "$tmp/r0" "$spec"
stdout_has '^gate: 4 of 12 passed'
stdout_has 'gate passed'

# 2. the same run as baseline: no flips, p = 1, difference 0
run 0 eval --model "$m" --cache "$tmp/cache" --out "$tmp/r1" --baseline "$tmp/r0" "$spec"
stdout_has '13 joined; pass rate 33.3% -> 33.3%; 0 pass->fail, 0 fail->pass; McNemar p = 1; score difference \+0.0000 \[\+0.0000, \+0.0000\]; perplexity \+0.00%'
grep -q '"mcnemar_p": 1.0' "$tmp/r1/results.json" || fail "McNemar p of no flips is not 1"

# 3. eight cases passed before: 8 pass->fail, exact p = 2/2^8, drop 8/12 > 0.1: exit 2
baseline all_passed "$(for i in 1 2 3 4 5 6 7 8; do to_pass f$i; done)"
run 2 eval --model "$m" --cache "$tmp/cache" --out "$tmp/r3" --baseline "$tmp/all_passed" --junit "$tmp/j.xml" "$spec"
stdout_has '8 pass->fail, 0 fail->pass; McNemar p = 0.007812;'
stdout_has 'pass->fail f1'
stdout_has 'gate: pass rate dropped by 0.6667'
stdout_has 'gate FAILED'
grep -q '"mcnemar_p": 0.0078125,' "$tmp/r3/results.json" || fail "results.json: McNemar p"
grep -q '"mean": -0.6666666666666666,' "$tmp/r3/results.json" || fail "results.json: mean score difference"
grep -q '"pass_to_fail": \[' "$tmp/r3/results.json" || fail "results.json: flips"
grep -q '<testcase classname="gate" name="gate"><failure' "$tmp/j.xml" || fail "JUnit: no gate failure"
grep -q 'pass→fail' "$tmp/r3/report.md" || fail "report.md: no flip table"
grep -q '| tag broken | 0 | 8 | 0.0% | 0.0% – 32.4% | 100.0% → 0.0% |' "$tmp/r3/report.md" ||
    fail "report.md: no per-tag before/after"
tr -d ' \n' <"$tmp/r3/results.json" | grep -q '"broken":{"all":{"n":8,"passed":0,.*"joined_baseline":{"n":8,"passed":8,' ||
    fail "results.json: no per-tag baseline"
grep -q 'before and after' "$tmp/r3/report.html" || fail "report.html: no comparison plot"

# 4. two flips: the same drop rule, but p = 0.5 is not significant: exit 0
baseline two "$(to_pass f1; to_pass f2)"
run 0 eval --model "$m" --cache "$tmp/cache" --out "$tmp/r4" --baseline "$tmp/two" "$spec"
stdout_has '2 pass->fail, 0 fail->pass; McNemar p = 0.5;'
# a fixed case: fail->pass, listed after the pass->fail ones
baseline fixed "$(to_pass f1; to_fail p1)"
run 0 eval --model "$m" --cache "$tmp/cache" --out "$tmp/r4" --baseline "$tmp/fixed" "$spec"
stdout_has '1 pass->fail, 1 fail->pass; McNemar p = 1'
stdout_has 'fail->pass p1'

# 5. perplexity: a baseline with a lower NLL is a rise beyond 5 %: exit 2
baseline low_nll 's/"nll":[0-9.e+-]*,/"nll":20.0,/'
run 2 eval --model "$m" --cache "$tmp/cache" --out "$tmp/r5" --baseline "$tmp/low_nll" "$spec"
stdout_has 'gate: perplexity rose by'

# 6. a critical case that fails, and a pass rate below its minimum: exit 2 without a baseline
sed '1s/"gate": {/"gate": {"must_pass_tag": "broken", /' "$spec" >"$tmp/critical.jsonl"
run 2 eval --model "$m" --cache "$tmp/cache" --out "$tmp/r6" "$tmp/critical.jsonl"
stdout_has 'gate: case "f1" \(tagged broken\) failed'
sed '1s/"gate": {/"gate": {"min_pass_rate": 0.5, /' "$spec" >"$tmp/min.jsonl"
run 2 eval --model "$m" --cache "$tmp/cache" --out "$tmp/r6" "$tmp/min.jsonl"
stdout_has 'gate: pass rate 0.3333 \(4 of 12\) is below min_pass_rate 0.5'
sed '1s/"gate": {/"gate": {"min_pass_rate": 0.3, /' "$spec" >"$tmp/min.jsonl"
run 0 eval --model "$m" --cache "$tmp/cache" --out "$tmp/r6" "$tmp/min.jsonl"

# 7. a changed input under the same id is an error (1); new and removed cases only change the join
sed 's/"prompt": "<t21>"/"prompt": "<t21><t22>"/' "$spec" >"$tmp/changed.jsonl"
run 1 eval --model "$m" --cache "$tmp/cache" --out "$tmp/r7" --baseline "$tmp/r0" "$tmp/changed.jsonl"
stderr_has 'suite "gate", case "p1": its input .* differs from the baseline'
sed 's/"id": "p1"/"id": "p1-new"/' "$spec" >"$tmp/renamed.jsonl"
run 0 eval --model "$m" --cache "$tmp/cache" --out "$tmp/r7" --baseline "$tmp/r0" "$tmp/renamed.jsonl"
stdout_has '12 joined'
grep -q '"only_current": 1,' "$tmp/r7/results.json" || fail "only_current"
grep -q '"only_baseline": 1,' "$tmp/r7/results.json" || fail "only_baseline"
# a baseline directory without samples.jsonl
run 1 eval --model "$m" --cache "$tmp/cache" --out "$tmp/r7" --baseline "$tmp/nowhere" "$spec"
stderr_has 'nowhere/samples.jsonl'
finish
