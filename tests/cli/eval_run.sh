# whet eval: the reports a run writes, perplexity equal to whet score's,
# greedy text equal to whet generate's, the same bits for any thread count,
# the cache (hits, misses, a changed case recomputed alone, --no-cache), an
# HF directory and a GGUF file, JUnit XML, and the errors (exit status 1).
. "$(dirname "$0")/lib.inc"
. "$(dirname "$0")/models.inc"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$out" "$err"' EXIT
WHET_THREADS=1
export WHET_THREADS
data="$(cd "$(dirname "$0")/.." && pwd)/data/eval"
make_model llama "$tmp/llama" chatml
m="$tmp/llama"
spec="$data/basic.jsonl"

json_num() { # FILE KEY → the first number after "KEY":
    tr -d ' \n' <"$1" | sed -n "s/.*\"$2\":\(-\{0,1\}[0-9.e+-]*\).*/\1/p" | head -1
}

# 1. a run: the four reports, a summary, exit 0 (the gate passes: 6 of 7 pass)
run 0 eval --model "$m" --cache "$tmp/cache" --out "$tmp/r1" "$spec"
for f in results.json samples.jsonl report.md report.html; do
    [ -s "$tmp/r1/$f" ] || fail "no $f"
done
stdout_has '^basic: 6 of 7 passed'
stdout_has 'tag critical +1 of 1'
stdout_has 'gate passed'
stderr_has 'cache: 0 hits, 8 misses'
[ "$(wc -l <"$tmp/r1/samples.jsonl")" -eq 8 ] || fail "samples.jsonl should have 8 lines"
grep -q '"id":"always-fail".*"pass":false' "$tmp/r1/samples.jsonl" || fail "always-fail passed"
grep -q '"id":"weighted".*"score":0.75,"pass":true' "$tmp/r1/samples.jsonl" || fail "weighted: not 3/4 >= 0.7"
grep -q '"id":"exec".*"pass":true' "$tmp/r1/samples.jsonl" || fail "the exec validator did not pass"
grep -q '"model_hash": "[0-9a-f]\{32\}"' "$tmp/r1/results.json" || fail "no model hash"
grep -q '<svg' "$tmp/r1/report.html" || fail "no plot in report.html"
grep -q '| tag critical | 1 | 1 |' "$tmp/r1/report.md" || fail "report.md lacks the tag table"

# 2. the ppl case is whet score's perplexity; the prompt case is whet generate's text
run 0 score --model "$m" --text "<t50><t51><t52><t53><t54>" --json
want=$(json_num "$out" total_nll)
grep -q "\"id\":\"text\".*\"nll\":$want," "$tmp/r1/samples.jsonl" || fail "ppl nll differs from whet score's $want"
# a text longer than the model's 128 positions: whet score's windows, the same NLL
long=$(awk 'BEGIN { for (i = 0; i < 300; i++) printf "<t%d>", 9 + (i * 37) % 280 }')
printf '{"suite":"long"}\n{"id":"long","kind":"ppl","text":"%s"}\n' "$long" >"$tmp/long-ppl.jsonl"
run 0 eval --model "$m" --no-cache --out "$tmp/long" "$tmp/long-ppl.jsonl"
run 0 score --model "$m" --text "$long" --json
stdout_has '"windows":4'
want=$(json_num "$out" total_nll)
grep -q "\"nll\":$want,\"tokens\":299," "$tmp/long/samples.jsonl" || fail "long ppl nll differs from whet score's $want"
run 0 generate --model "$m" --prompt "<t12><t13>" --temperature 0 --max-tokens 8
gen=$(cat "$out")
grep -qF "\"id\":\"tokens\"" "$tmp/r1/samples.jsonl" &&
    grep -F "\"id\":\"tokens\"" "$tmp/r1/samples.jsonl" | grep -qF "\"output\":\"$gen\"" ||
    fail "gen output differs from whet generate's '$gen'"

# 3. the same files for any thread count, from the cache or not
run 0 eval --model "$m" --no-cache --out "$tmp/r3" --threads 3 "$spec"
stderr_has 'cache: 0 hits, 8 misses \(off\)'
diff -r "$tmp/r1" "$tmp/r3" >/dev/null || fail "3 threads without the cache gave other reports"
run 0 eval --model "$m" --cache "$tmp/cache" --out "$tmp/r2" --threads 2 "$spec"
stderr_has 'cache: 8 hits, 0 misses'
diff -r "$tmp/r1" "$tmp/r2" >/dev/null || fail "reports from the cache differ"

# 4. a changed case is recomputed alone; another model misses everything
sed 's/"<t15>"/"<t15><t16>"/' "$spec" >"$tmp/changed.jsonl"
run 0 eval --model "$m" --cache "$tmp/cache" --out "$tmp/r4" "$tmp/changed.jsonl"
stderr_has 'cache: 7 hits, 1 misses'
make_model qwen2 "$tmp/qwen2" chatml
run 0 eval --model "$tmp/qwen2" --cache "$tmp/cache" --out "$tmp/r5" "$spec"
stderr_has 'cache: 0 hits, 8 misses'
[ "$(grep '"model_hash"' "$tmp/r5/results.json")" != "$(grep '"model_hash"' "$tmp/r1/results.json")" ] ||
    fail "two models with one hash"
# repeats: greedy repeats are the same text, one cache entry each... every repeat scored
run 0 eval --model "$m" --cache "$tmp/cache" --out "$tmp/r6" --repeats 3 "$spec"
[ "$(grep -o '"output"' "$tmp/r6/samples.jsonl" | wc -l)" -eq 18 ] || fail "--repeats 3: not 3 samples per gen case"

# 5. a GGUF model, JSON on standard output, JUnit XML
run 0 eval --model "$(cd "$(dirname "$0")/.." && pwd)/data/cli/tiny-llama.gguf" --no-cache --out "$tmp/g" \
    --junit "$tmp/junit.xml" --json "$spec"
stdout_has '"format": "whet-eval-results-1"'
grep -q '<testsuite name="basic" tests="9" failures="[0-9]*">' "$tmp/junit.xml" || fail "JUnit testsuite line"
grep -q '<testcase classname="basic" name="always-fail"><failure' "$tmp/junit.xml" || fail "JUnit lacks the failure"

# 6. errors: exit 1, with the file and line
printf '{"suite":"x"}\n{"id":"a","prompt":"p","asert":[]}\n' >"$tmp/bad.jsonl"
run 1 eval --model "$m" --no-cache --out "$tmp/e" "$tmp/bad.jsonl"
stderr_has 'bad.jsonl: line 2, column 24 \(byte 37\): unknown key "asert"'
run 1 eval --model "$m" --no-cache "$tmp/missing.jsonl"
stderr_has 'missing.jsonl'
run 1 eval --model "$m"
stderr_has 'at least one SPEC'
run 1 eval "$spec"
stderr_has '--model is required'
run 1 eval --model "$m" --bogus "$spec"
run 1 eval --model "$m" --no-cache --out "$tmp/e" "$spec" "$spec"
stderr_has 'the suite name "basic" is also the name of'
run 1 eval --model "$m" --no-cache --repeats 0 "$spec"
stderr_has '--repeats: expected a whole number from 1 to 1000'
run 1 eval --model "$m" --cache "$tmp/c" --no-cache "$spec"
stderr_has 'exclude each other'
run 0 eval --help
stdout_has 'Exit status: 0 passed, 1 error, 2 gate failed'
printf '{"suite":"x"}\n{"id":"a","messages":[{"role":"user","content":"hi"}],"assert":[{"type":"json_valid"}]}\n' >"$tmp/chat.jsonl"
make_model llama "$tmp/notemplate"
run 1 eval --model "$tmp/notemplate" --no-cache --out "$tmp/e" "$tmp/chat.jsonl"
stderr_has 'line 2: case "a" has chat messages, and the model has no chat template'
run 0 eval --model "$tmp/notemplate" --chat-template chatml --no-cache --out "$tmp/e" "$tmp/chat.jsonl"
run 1 eval --model "$m" --adapter "$tmp/no-adapter" --no-cache --out "$tmp/e" "$spec"
stderr_has 'no-adapter'
long=$(awk 'BEGIN { for (i = 0; i < 200; i++) printf "<t9>" }')
printf '{"suite":"x","max_tokens":8}\n{"id":"a","prompt":"%s","assert":[{"type":"json_valid"}]}\n' "$long" >"$tmp/long.jsonl"
run 1 eval --model "$m" --no-cache --out "$tmp/e" "$tmp/long.jsonl"
stderr_has 'line 2: case "a": the prompt is [0-9]+ tokens; the model takes at most 128'
finish
