# whet data dedup (normalised duplicates removed, atomic in-place rewrite)
# and whet data overlap (13-grams shared by eval cases and training data).
. "$(dirname "$0")/lib.inc"
top=$(cd "$(dirname "$0")/../.." && pwd)
ds="$top/tests/data/datasets"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$out" "$err"' EXIT

cat "$ds/chat.jsonl" "$ds/chat.jsonl" >"$tmp/twice.jsonl"
printf '{"messages": [{"role": "user", "content": "What  is 2+2? "}, {"role": "assistant", "content": "4"}]}\n' \
    >>"$tmp/twice.jsonl"
run 0 data dedup "$tmp/twice.jsonl" --out "$tmp/once.jsonl"
stdout_has "once.jsonl: kept 3 examples, removed 4 duplicates$"
grep -v '^$' "$ds/chat.jsonl" >"$tmp/expected.jsonl"
cmp -s "$tmp/once.jsonl" "$tmp/expected.jsonl" || fail "dedup kept other lines than the first three"
rm "$tmp/expected.jsonl"
# in place; nothing left to remove; no temporary file left behind
run 0 data dedup "$tmp/once.jsonl" --out "$tmp/once.jsonl"
stdout_has "kept 3 examples, removed 0 duplicates$"
[ "$(ls "$tmp" | wc -l)" -eq 2 ] || fail "files left in $tmp: $(ls "$tmp")"
run 1 data dedup "$tmp/once.jsonl"
stderr_has -- "--out is required"
run 1 data dedup "$tmp/none.jsonl" --out "$tmp/x.jsonl"

# overlap: an eval suite (settings line, comment) against the training data
cat >"$tmp/train.jsonl" <<'JSONL'
{"prompt": "Summarise the minutes.", "completion": " The committee met on Tuesday to discuss the new budget for the public library and its branches."}
{"prompt": "Greet.", "completion": " Hello there."}
JSONL
cat >"$tmp/suite.jsonl" <<'JSONL'
{"suite": "demo", "version": 1}
# cases
{"id": "leak", "kind": "gen", "prompt": "The committee met on Tuesday to discuss the new budget for the public library."}
{"id": "clean", "kind": "gen", "prompt": "Translate into French: the weather is lovely today and the sea is calm and blue."}
{"id": "tiny", "kind": "ppl", "text": "Hello there."}
JSONL
run 0 data overlap "$tmp/train.jsonl" "$tmp/suite.jsonl"
stdout_has "^$tmp/suite.jsonl:3: leak: 2 of its 2 13-grams are in $tmp/train.jsonl \(first at line 1\)$"
stdout_has "^1 of 3 eval cases overlap the training data \(1 case has fewer than 13 words and was not checked\)$"
grep -q clean "$out" && fail "the clean case is reported"
run 0 data overlap "$tmp/train.jsonl" "$tmp/suite.jsonl" --n 2 --json
python3 - "$out" <<'PY' || fail "overlap --json"
import json, sys
r = json.load(open(sys.argv[1]))
assert (r["n"], r["eval_cases"], r["short_cases"]) == (2, 3, 0), r
ids = [c["id"] for c in r["overlapping"]]
assert ids == ["leak", "tiny"], ids
PY
run 1 data overlap "$tmp/train.jsonl"
run 1 data overlap "$tmp/train.jsonl" "$tmp/suite.jsonl" --n 0
run 1 data overlap "$tmp/train.jsonl" "$tmp/none.jsonl"
finish
