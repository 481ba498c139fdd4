# datasets/: the generators reproduce every committed file byte for byte; the
# query-DSL validator accepts every query of the committed files, rejects bad
# ones at the right position, compares canonical forms (--expect with
# WHET_CASE) and carries the same schema as schema.json; the demo tokenizer
# encodes as its merges say; no eval text leaks into training text.
. "$(dirname "$0")/lib.inc"
root="$(cd "$(dirname "$0")/../.." && pwd)"
ds="$root/datasets"

# The validator sits beside whet in the build directory ($WHET may carry an
# emulator prefix: its last word is the binary).
whet_bin=${WHET##* }
emulator=${WHET%"$whet_bin"}
tools="$(cd "$(dirname "$whet_bin")" && pwd)/datasets"
validator="$emulator $tools/query-dsl-validate"
[ -x "$tools/query-dsl-validate" ] || { echo "FAIL: no $tools/query-dsl-validate (make builds it)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$out" "$err"' EXIT

# validate EXPECTED_STATUS QUERY [ARGS...]: the query on stdin
validate() {
    expected=$1 query=$2
    shift 2
    # shellcheck disable=SC2086
    printf '%s' "$query" | $validator "$@" >"$out" 2>"$err"
    status=$?
    [ "$status" -eq "$expected" ] || fail "validator $* on '$query' exited $status, expected $expected"
}

# ---- the validator on the committed files

# The assistant message of each chat line (the generator's fixed layout),
# unescaped from JSON (queries hold no escapes but \" and \\).
queries() {
    sed -e 's/.*"role": "assistant", "content": "\(.*\)"}]}$/\1/' -e 's/\\"/"/g' -e 's/\\\\/\\/g' "$1"
}
for f in train valid test; do
    n_lines=$(wc -l <"$ds/query-dsl/$f.jsonl")
    queries "$ds/query-dsl/$f.jsonl" >"$tmp/$f.queries"
    [ "$(grep -c '^FIND ' "$tmp/$f.queries")" -eq "$n_lines" ] || fail "query-dsl/$f.jsonl: not every line has a FIND query"
    # shellcheck disable=SC2086
    $validator --lines <"$tmp/$f.queries" >"$out" 2>"$err" || fail "query-dsl/$f.jsonl: the validator refuses a query"
done
# the canonical form is a fixed point: canonical(canonical(q)) = canonical(q)
# shellcheck disable=SC2086
$validator --lines --canonical <"$tmp/train.queries" >"$tmp/canonical1" 2>"$err" || fail "--canonical on train failed"
# shellcheck disable=SC2086
$validator --lines --canonical <"$tmp/canonical1" >"$tmp/canonical2" 2>"$err" || fail "--canonical refuses its own output"
cmp -s "$tmp/canonical1" "$tmp/canonical2" || fail "--canonical is not idempotent"
[ "$(wc -l <"$tmp/canonical1")" -eq "$(wc -l <"$tmp/train.queries")" ] || fail "--canonical --lines dropped lines"

# every eval case's expected query is its test.jsonl query, and passes --expect
# with the case itself in WHET_CASE (what whet eval's exec scorer does)
n_cases=0
tail -n +2 "$ds/query-dsl/eval.jsonl" >"$tmp/cases"
paste -d '\n' "$tmp/cases" "$tmp/test.queries" >"$tmp/pairs"
while IFS= read -r case_line && IFS= read -r query; do
    n_cases=$((n_cases + 1))
    # shellcheck disable=SC2086
    printf '%s\n' "$query" | WHET_CASE=$case_line $validator --stdout --expect >"$out" 2>"$err" ||
        fail "eval case $n_cases: its test.jsonl query fails --expect: $(cat "$out" "$err")"
done <"$tmp/pairs"
[ "$n_cases" -eq "$(wc -l <"$ds/query-dsl/test.jsonl")" ] || fail "eval.jsonl has $n_cases cases for $(wc -l <"$ds/query-dsl/test.jsonl") test lines"
first_case=$(sed -n 1p "$tmp/cases")
printf 'FIND COUNT' | WHET_CASE=$first_case $validator --stdout --expect >"$out" 2>"$err"
[ $? -eq 1 ] || fail "--expect accepted FIND COUNT for the first eval case"
grep -q '^error: 1:1: expected the query FIND ' "$out" || fail "--expect --stdout: no error on stdout"
[ ! -s "$err" ] || fail "--stdout still wrote on stderr"

# the compiled-in schema is schema.json
# shellcheck disable=SC2086
$validator --print-schema >"$out" 2>"$err" || fail "--print-schema failed"
cmp -s "$out" "$ds/query-dsl/schema.json" || fail "schema.json differs from query-dsl-validate --print-schema"

# ---- valid queries and canonical forms
validate 0 'FIND COUNT'
stdout_empty
validate 0 'FIND COUNT SINCE 60m' --canonical
stdout_has '^FIND COUNT SINCE 1h$'
validate 0 '  FIND   MAX(duration_ms),COUNT  WHERE region="eu-west-1" AND duration_ms>=250.0 GROUP BY service.name,http.route ORDER BY COUNT DESC LIMIT 5 SINCE 24h
' --canonical
stdout_has '^FIND COUNT, MAX\(duration_ms\) WHERE duration_ms >= 250 AND region = "eu-west-1" GROUP BY http.route, service.name ORDER BY COUNT DESC LIMIT 5 SINCE 1d$'
validate 0 'FIND COUNT WHERE exception.message CONTAINS "say \"hi\" \\ bye" AND db.system EXISTS' --canonical
stdout_has '^FIND COUNT WHERE db.system EXISTS AND exception.message CONTAINS "say \\"hi\\" \\\\ bye"$'
# the same query in another order and spelling; a different one
validate 0 'FIND P95(duration_ms) WHERE error = true AND service.name = "cart" SINCE 2h' \
    --expect-query 'FIND P95(duration_ms) WHERE service.name = "cart" AND error = true SINCE 120m'
validate 1 'FIND P95(duration_ms) WHERE service.name = "cart" SINCE 2h' \
    --expect-query 'FIND P99(duration_ms) WHERE service.name = "cart" SINCE 2h'
stderr_has '^error: 1:1: expected the query FIND P99\(duration_ms\) WHERE service.name = "cart" SINCE 2h, got FIND P95'
validate 1 'FIND COUNT LIMIT 5' --expect-query 'FIND COUNT'

# ---- invalid queries: the error names the first wrong token's line:column
reject() {
    position=$1 what=$2 query=$3
    validate 1 "$query"
    grep -qF -- "error: $position: expected $what" "$err" || fail "'$query': expected 'error: $position: expected $what', got '$(cat "$err")'"
}
reject 1:1 'FIND, got the end' ''
reject 1:1 'FIND, got "find"' 'find count'
reject 1:5 'a calculation' 'FIND'
reject 1:6 'a calculation' 'FIND AVERAGE(duration_ms)'
reject 1:10 '"(" after AVG, got "duration_ms"' 'FIND AVG duration_ms'
reject 1:10 'a field of the schema, got "latency"' 'FIND AVG(latency)'
reject 1:10 'a numeric field for P95 (service.name is string)' 'FIND P95(service.name)'
reject 1:21 '")"' 'FIND MAX(duration_ms'
reject 1:13 'a calculation not already in FIND' 'FIND COUNT, COUNT'
reject 1:35 'a filter not already in WHERE, got "error"' 'FIND COUNT WHERE error = true AND error = true'
reject 1:18 'a field of the schema, got "status"' 'FIND COUNT WHERE status = 500'
reject 1:31 'an operator' 'FIND COUNT WHERE service.name is "cart"'
reject 1:31 '= != CONTAINS or EXISTS for service.name (string)' 'FIND COUNT WHERE service.name > "a"'
reject 1:24 '= != or EXISTS for error (bool)' 'FIND COUNT WHERE error < true'
reject 1:18 'a string field before CONTAINS (http.status_code is int)' 'FIND COUNT WHERE http.status_code CONTAINS "5"'
reject 1:33 'a string in double quotes for service.name, got "cart"' 'FIND COUNT WHERE service.name = cart'
reject 1:37 'an integer, got "500.5"' 'FIND COUNT WHERE http.status_code = 500.5'
reject 1:37 'an integer for http.status_code, got ""500""' 'FIND COUNT WHERE http.status_code = "500"'
reject 1:26 'true or false for error' 'FIND COUNT WHERE error = 1'
reject 1:32 'a number for duration_ms, got "fast"' 'FIND COUNT WHERE duration_ms > fast'
reject 1:33 'a string in double quotes' 'FIND COUNT WHERE service.name = "cart'
reject 1:31 'AND, GROUP BY, ORDER BY, LIMIT, SINCE or the end of the query, got "OR"' 'FIND COUNT WHERE error = true OR region = "x"'
reject 1:18 'BY' 'FIND COUNT GROUP service.name'
reject 1:21 'a field that is not float to group by (duration_ms is float)' 'FIND COUNT GROUP BY duration_ms'
reject 1:29 'a field not already in GROUP BY' 'FIND COUNT GROUP BY region, region'
reject 1:21 'a calculation of FIND after ORDER BY' 'FIND COUNT ORDER BY MAX(duration_ms) DESC'
reject 1:27 'ASC or DESC' 'FIND COUNT ORDER BY COUNT LIMIT 5'
reject 1:18 'an integer from 1 to 10000, got "0"' 'FIND COUNT LIMIT 0'
reject 1:18 'an integer from 1 to 10000' 'FIND COUNT LIMIT 20000'
reject 1:18 'a duration such as 15m, 2h or 7d, got "2"' 'FIND COUNT SINCE 2 hours'
reject 1:18 'a duration from 1m to 60d, got "61d"' 'FIND COUNT SINCE 61d'
reject 1:21 'the end of the query, got "LIMIT"' 'FIND COUNT SINCE 1h LIMIT 5'
reject 2:1 '",", WHERE, GROUP BY, ORDER BY, LIMIT, SINCE or the end of the query, got "FIND"' 'FIND COUNT
FIND COUNT'
reject 3:7 'a field of the schema, got "nope"' 'FIND COUNT

WHERE nope EXISTS'
reject 1:12 '",", WHERE, GROUP BY, ORDER BY, LIMIT, SINCE or the end of the query, got ";"' 'FIND COUNT ; DROP'
# --lines: LINE is the input line; every bad line is reported
validate 1 'FIND COUNT
FIND COUNT WHERE x = 1

FIND AVG(region)' --lines
stderr_has '^error: 2:18: expected a field of the schema'
stderr_has '^error: 4:10: expected a numeric field for AVG'
# usage errors
validate 2 'FIND COUNT' --bogus
validate 2 'FIND COUNT' --expect-query 'FIND NOTHING'
stderr_has 'the expected query is invalid: 1:6: expected a calculation'
printf 'FIND COUNT' | env -u WHET_CASE $validator --expect >"$out" 2>"$err"
[ $? -eq 2 ] || fail "--expect without WHET_CASE did not exit 2"
printf 'FIND COUNT' | WHET_CASE='{"id": "a", "meta": {}}' $validator --expect >"$out" 2>"$err"
[ $? -eq 2 ] || fail "--expect without meta.expected did not exit 2"
printf 'FIND COUNT' | WHET_CASE='{"id": "a", "meta": {"expected": "FIND COUNT"}' $validator --expect >"$out" 2>"$err"
[ $? -eq 2 ] || fail "--expect with truncated JSON did not exit 2"
printf 'FIND COUNT' | WHET_CASE='{"a": [1, {"b": "\u00e9\ud83d\ude00"}], "meta": {"x": null, "expected": "FIND\u0020COUNT"}}' \
    $validator --expect >"$out" 2>"$err" || fail "--expect: escapes in WHET_CASE"

# ---- whet eval runs the shipped suites (their first 5 cases) on a random model
# of the demo's config: they load, the exec assertions find the validator by
# the committed relative path (../../build/..., mirrored here with a link) or
# by QUERY_DSL_VALIDATE, and its messages land in samples.jsonl.
run 0 train --init "$ds/pretrain/model-config.json" --tokenizer "$ds/pretrain/tokenizer" \
    --data "$ds/pretrain/valid.jsonl" --out "$tmp/random" --method full --steps 1 --batch-size 1 --seq-len 16 \
    --save-every 0 --eval-every 0
mkdir -p "$tmp/suites/query-dsl" "$tmp/build/datasets"
ln -s "$tools/query-dsl-validate" "$tmp/build/datasets/query-dsl-validate"
for s in query-dsl ticket-json general; do
    head -n 6 "$ds/$s/eval.jsonl" >"$tmp/suites/$s.jsonl"
done
mv "$tmp/suites/query-dsl.jsonl" "$tmp/suites/query-dsl/eval.jsonl"
if [ -n "$emulator" ]; then
    export QUERY_DSL_VALIDATE="$validator"
fi
run 2 eval --model "$tmp/random/final" --no-cache --out "$tmp/eval" "$tmp/suites/query-dsl/eval.jsonl" \
    "$tmp/suites/ticket-json.jsonl" "$tmp/suites/general.jsonl"
stdout_has '^query-dsl: 0 of 5 passed'
stdout_has '^ticket-json: 0 of 5 passed'
stdout_has '^general: no pass/fail cases; perplexity'
grep -q '"detail":"exit status 1: error: 1:[0-9]*: expected FIND' "$tmp/eval/samples.jsonl" ||
    fail "samples.jsonl lacks the validator's message"
[ "$(grep -c '"type":"exec"' "$tmp/eval/samples.jsonl")" -eq 0 ] && fail "no exec assertion ran"
rm -f "$tmp/build/datasets/query-dsl-validate"
export QUERY_DSL_VALIDATE="$validator"
run 2 eval --model "$tmp/random/final" --no-cache --out "$tmp/eval2" \
    "$tmp/suites/query-dsl/eval.jsonl"
grep -q '"detail":"exit status 1: error: 1:[0-9]*: expected FIND' "$tmp/eval2/samples.jsonl" ||
    fail "QUERY_DSL_VALIDATE was not used"

# ---- the generators reproduce the committed files
if ! command -v python3 >/dev/null 2>&1; then
    echo "skipped: the generator checks (no python3)"
    finish
    exit 0
fi
check_same() { # DIR FILE...: each committed file equals the regenerated one
    dir=$1
    shift
    for f in "$@"; do
        cmp -s "$tmp/$dir/$f" "$ds/$dir/$f" || fail "datasets/$dir/$f differs from what datasets/$dir's generator writes"
    done
}
python3 "$ds/query-dsl/generate.py" "$tmp/query-dsl" || fail "query-dsl/generate.py failed"
check_same query-dsl train.jsonl valid.jsonl test.jsonl eval.jsonl
python3 "$ds/ticket-json/generate.py" "$tmp/ticket-json" || fail "ticket-json/generate.py failed"
check_same ticket-json train.jsonl valid.jsonl test.jsonl eval.jsonl
python3 "$ds/general/generate.py" "$tmp/general" || fail "general/generate.py failed"
check_same general eval.jsonl
python3 "$ds/pretrain/generate.py" "$tmp/pretrain" || fail "pretrain/generate.py failed"
check_same pretrain train.jsonl valid.jsonl
python3 "$ds/pretrain/train_tokenizer.py" "$tmp/pretrain" || fail "pretrain/train_tokenizer.py failed"
check_same pretrain tokenizer/tokenizer.json tokenizer/tokenizer_config.json model-config.json

# ---- contents: splits disjoint, no eval text in training text, the tokenizer as trained
python3 - "$ds" "$tmp/texts" >"$out" 2>"$err" <<'EOF' || fail "dataset contents: $(cat "$out" "$err")"
import json, os, sys
ds, texts_path = sys.argv[1], sys.argv[2]
def rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]
problems = []
# no test or valid question/ticket is a training one
for task, key in (("query-dsl", lambda r: r["messages"][1]["content"]), ("ticket-json", lambda r: r["prompt"])):
    train = {key(r).lower() for r in rows(os.path.join(ds, task, "train.jsonl"))}
    for split in ("valid", "test"):
        dup = [key(r) for r in rows(os.path.join(ds, task, split + ".jsonl")) if key(r).lower() in train]
        if dup:
            problems.append("%s/%s.jsonl repeats %d training inputs, e.g. %r" % (task, split, len(dup), dup[0]))
# the general suite's texts share no 13-word run with any training text
def grams(text, n=13):
    w = text.split()
    return {" ".join(w[i:i + n]) for i in range(len(w) - n + 1)}
training = set()
for r in rows(os.path.join(ds, "pretrain", "train.jsonl")):
    training |= grams(r["text"])
for task in ("query-dsl", "ticket-json"):
    for r in rows(os.path.join(ds, task, "train.jsonl")):
        for t in ([m["content"] for m in r["messages"]] if "messages" in r else [r["prompt"], r["completion"]]):
            training |= grams(t)
suite = rows(os.path.join(ds, "general", "eval.jsonl"))
for case in suite[1:]:
    text = case.get("text") or case["prompt"] + case["choices"][case["gold"]]
    if grams(text) & training:
        problems.append("general case %s overlaps the training text" % case["id"])
# the tokenizer: a plain BPE by merge rank over GPT-2's pre-tokens, to compare with whet
import re
tok = json.load(open(os.path.join(ds, "pretrain", "tokenizer", "tokenizer.json"), encoding="utf-8"))
vocab = tok["model"]["vocab"]
rank = {tuple(m): i for i, m in enumerate(tok["model"]["merges"])}
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
cs = bs[:] + [256 + i for i in range(256 - len(bs))]
bs += [b for b in range(256) if b not in bs]
b2u = {b: chr(c) for b, c in zip(bs, cs)}
pattern = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")
def encode(text):
    ids = []
    for piece in pattern.findall(text):
        word = [b2u[b] for b in piece.encode()]
        while len(word) > 1:
            best = min(range(len(word) - 1), key=lambda i: rank.get((word[i], word[i + 1]), 1 << 30))
            if (word[best], word[best + 1]) not in rank:
                break
            word[best:best + 2] = [word[best] + word[best + 1]]
        ids += [vocab[t] for t in word]
    return ids
samples = [rows(os.path.join(ds, "query-dsl", "test.jsonl"))[i]["messages"][j]["content"] for i in range(5) for j in (1, 2)]
samples += [c.get("text") or c["prompt"] for c in suite[1:6]]
samples += ["Hello  world!\n\n  It's 12:30 -- the API's p99 is 1500ms; user_id=u-42 (eu-west-1)?"]
os.makedirs(texts_path)
for i, s in enumerate(samples):
    with open(os.path.join(texts_path, "%02d.txt" % i), "w", encoding="utf-8") as f:
        f.write(s)
    with open(os.path.join(texts_path, "%02d.ids" % i), "w", encoding="utf-8") as f:
        f.write(json.dumps(encode(s)) + "\n")
print("\n".join(problems))
sys.exit(1 if problems else 0)
EOF
n=0
for text in "$tmp"/texts/*.txt; do
    n=$((n + 1))
    got=$($WHET tokenize --model "$ds/pretrain/tokenizer" --no-special --file "$text") || fail "whet tokenize failed on $text"
    [ "$got" = "$(cat "${text%.txt}.ids")" ] || fail "tokenizer sample $n: whet gives $got, the merges give $(cat "${text%.txt}.ids")"
done
[ "$n" -ge 10 ] || fail "only $n tokenizer samples"
finish
