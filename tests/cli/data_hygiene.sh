# whet data dedup (normalised duplicates removed, atomic in-place rewrite)
# and whet data overlap (13-grams shared by eval cases and training data, less
# the training data's template).
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

# a template every training prompt starts with (with "Ticket: my order": 7
# 13-grams) is not a leak; text in "meta" or an assertion is not the model's
# input; a copied case still is a leak
template="Read the support ticket and answer with a JSON object with the keys category and priority."
for k in 1 2 3 4 5 6 7 8 9 10 11 12; do
    printf '{"prompt": "%s\\n\\nTicket: my order %s of blue widgets arrived broken on day %s and nobody answers", "completion": " {\\"category\\": \\"order %s\\"}"}\n' \
        "$template" "$k" "$k" "$k"
done >"$tmp/tickets.jsonl"
cat >"$tmp/tickets.evalspec.jsonl" <<JSONL
{"suite": "tickets", "version": 1}
{"id": "copy", "messages": [{"role": "user", "content": "$template\n\nTicket: my order 5 of blue widgets arrived broken on day 5 and nobody answers"}], "assert": [{"type": "contains", "value": "x"}]}
{"id": "templated", "prompt": "$template\n\nTicket: the invoice for March lists a plan we cancelled in January already"}
{"id": "meta", "prompt": "A question in words of its own that no training example holds at all", "meta": {"expected": "my order 5 of blue widgets arrived broken on day 5 and nobody answers"}, "assert": [{"type": "equals", "value": "my order 7 of blue widgets arrived broken on day 7 and nobody answers"}]}
JSONL
run 0 data overlap "$tmp/tickets.jsonl" "$tmp/tickets.evalspec.jsonl"
stdout_has "^$tmp/tickets.evalspec.jsonl:2: copy: 12 of its 19 13-grams are in $tmp/tickets.jsonl \(first at line 5\)$"
stdout_has "^1 of 3 eval cases overlap the training data$"
stdout_has "^7 13-grams in more than 10 % of the 12 training examples were left out as a shared template \(1 case shares only those\)$"
run 0 data overlap "$tmp/tickets.jsonl" "$tmp/tickets.evalspec.jsonl" --max-common 1 --json
python3 - "$out" <<'PY' || fail "overlap --max-common 1 --json"
import json, sys
r = json.load(open(sys.argv[1]))
assert (r["train_examples"], r["max_common"], r["common_ngrams"], r["template_cases"]) == (12, 1, 0, 0), r
assert [(c["id"], c["overlapping"], c["common"]) for c in r["overlapping"]] == [("copy", 19, 0), ("templated", 5, 0)], r
PY
run 1 data overlap "$tmp/tickets.jsonl" "$tmp/tickets.evalspec.jsonl" --max-common 0
stderr_has -- "--max-common 0: expected more than 0 and at most 1"
run 1 data overlap "$tmp/tickets.jsonl" "$tmp/tickets.evalspec.jsonl" --max-common 1.5
run 1 data overlap "$tmp/train.jsonl"
run 1 data overlap "$tmp/train.jsonl" "$tmp/suite.jsonl" --n 0
run 1 data overlap "$tmp/train.jsonl" "$tmp/none.jsonl"
finish
