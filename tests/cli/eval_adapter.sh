# whet eval --adapter: a random PEFT adapter (made by test_export, as
# tests/cli/export.sh does) changes the adapter hash in results.json and the
# perplexity, which equals whet score --adapter's; nothing cached for the
# base model is reused; the adapter run against the base run as baseline.
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
make_model llama "$tmp/llama" chatml
m="$tmp/llama"
# a host program (as in export.sh): the adapter files are the same on every CPU
$make_adapter_bin adapter "$m" "$tmp/adapter" || fail "test_export adapter"
spec="$tests_dir/data/eval/basic.jsonl"

run 0 eval --model "$m" --cache "$tmp/cache" --out "$tmp/base" "$spec"
grep -q '"adapter": null,' "$tmp/base/results.json" || fail "base run: adapter not null"
run 0 eval --model "$m" --adapter "$tmp/adapter" --cache "$tmp/cache" --out "$tmp/tuned" --baseline "$tmp/base" "$spec"
stderr_has 'cache: 0 hits, 8 misses'
stdout_has 'against the baseline: 8 joined'
grep -q "\"adapter\": \"$tmp/adapter\"," "$tmp/tuned/results.json" || fail "tuned run: no adapter path"
grep -q '"adapter_hash": "[0-9a-f]\{32\}"' "$tmp/tuned/results.json" || fail "tuned run: no adapter hash"
base_nll=$(sed -n 's/.*"id":"text".*"nll":\([-0-9.e+]*\),.*/\1/p' "$tmp/base/samples.jsonl")
tuned_nll=$(sed -n 's/.*"id":"text".*"nll":\([-0-9.e+]*\),.*/\1/p' "$tmp/tuned/samples.jsonl")
[ -n "$tuned_nll" ] && [ "$base_nll" != "$tuned_nll" ] || fail "the adapter did not change the NLL ($base_nll)"
run 0 score --model "$m" --adapter "$tmp/adapter" --text "<t50><t51><t52><t53><t54>" --json
grep -q "\"total_nll\":$tuned_nll," "$out" || fail "eval's NLL $tuned_nll is not whet score --adapter's"
# the same adapter again: all from the cache
run 0 eval --model "$m" --adapter "$tmp/adapter" --cache "$tmp/cache" --out "$tmp/tuned2" "$spec"
stderr_has 'cache: 8 hits, 0 misses'
finish
