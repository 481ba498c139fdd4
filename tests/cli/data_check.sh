# whet data check: every problem as file:line:column: class: message, exit
# status 2 when it finds errors, 0 with warnings only, 1 when it cannot run
# (an unreadable file, bad usage); --json, directories.
. "$(dirname "$0")/lib.inc"
top=$(cd "$(dirname "$0")/../.." && pwd)
ds="$top/tests/data/datasets"
tok="$top/tests/data/tokenizers"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$out" "$err"' EXIT

run 2 data check "$ds/errors.jsonl" --model "$tok/qwen3" --chat-template chatml --seq-len 40
stdout_has "^$ds/errors.jsonl:2:88: invalid-json: expected ',' or '\]', found end of input$"
stdout_has "^$ds/errors.jsonl:3:47: invalid-utf8: byte 0xE9 is not valid UTF-8$"
stdout_has "^$ds/errors.jsonl:4:1: unknown-format: "
stdout_has "^$ds/errors.jsonl:5:1: missing-key: expected key \"messages\""
stdout_has "^$ds/errors.jsonl:6:50: missing-key: expected key \"role\" in message 2$"
stdout_has "^$ds/errors.jsonl:7:24: unrecognised-role: role \"bot\""
stdout_has "^$ds/errors.jsonl:8:43: empty-content: "
stdout_has "^$ds/errors.jsonl:9:14: no-assistant-message: "
stdout_has "^$ds/errors.jsonl:10:99: invalid-value: \"weight\""
stdout_has "^$ds/errors.jsonl:11:1: warning: duplicate: the same content as line 1$"
stdout_has "^$ds/errors.jsonl:12:1: warning: too-long: 69 tokens: --seq-len 40 cuts the last 29 \(28 of them trained\)$"
stdout_has "^$ds/errors.jsonl:13:84: invalid-value: "
[ "$(wc -l <"$out")" -eq 13 ] || fail "expected 13 problems, got $(wc -l <"$out")"
stderr_has "^whet: 14 examples in 1 file: 11 errors, 2 warnings$"

# warnings alone do not fail; clean files print nothing
head -1 "$ds/errors.jsonl" >"$tmp/dup.jsonl"
head -1 "$ds/errors.jsonl" >>"$tmp/dup.jsonl"
run 0 data check "$tmp/dup.jsonl" --model "$tok/qwen3"
stdout_has "dup.jsonl:2:1: warning: duplicate: the same content as line 1$"
run 0 data check "$ds/chat.jsonl" "$ds/text.jsonl" "$ds/prompt_completion.jsonl" "$ds/plain.txt" --model "$tok/qwen3"
stdout_empty
stderr_has "^whet: 11 examples in 4 files: 0 errors, 0 warnings$"

# without --model: no tokenizing, the format checks still run
run 2 data check "$ds/errors.jsonl"
stdout_has ":7:24: unrecognised-role: "
grep -q too-long "$out" && fail "too-long reported without a tokenizer"

# chat data and a model without a template
run 2 data check "$ds/chat.jsonl" --model "$tok/gpt2"
stdout_has "^$ds/chat.jsonl:1:1: no-chat-template: "

# a template that refuses a conversation
run 2 data check "$ds/chat.jsonl" --model "$tok/spm_legacy" --chat-template mistral
stdout_has "^$ds/chat.jsonl:2:1: template-error: .*alternate"

# JSON
run 2 data check "$ds/errors.jsonl" --model "$tok/qwen3" --chat-template chatml --seq-len 40 --json
python3 - "$out" <<'PY' || fail "--json report"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["examples"] == 14 and r["errors"] == 11 and r["warnings"] == 2, r
p = r["problems"]
assert len(p) == 13
assert (p[0]["line"], p[0]["column"], p[0]["class"], p[0]["severity"]) == (2, 88, "invalid-json", "error"), p[0]
assert p[9]["class"] == "duplicate" and p[9]["severity"] == "warning"
PY

# a directory: its train.jsonl and valid.jsonl; a duplicate across them
mkdir "$tmp/d"
cp "$ds/chat.jsonl" "$tmp/d/train.jsonl"
head -1 "$ds/chat.jsonl" >"$tmp/d/valid.jsonl"
run 0 data check "$tmp/d" --model "$tok/qwen3"
stdout_has "^$tmp/d/valid.jsonl:1:1: warning: duplicate: the same content as $tmp/d/train.jsonl:1$"
mkdir "$tmp/empty"
run 1 data check "$tmp/empty"
stderr_has "train.jsonl"

# unreadable file, usage
run 1 data check "$tmp/none.jsonl"
stderr_has "none.jsonl: cannot open"
run 1 data check
run 1 data frobnicate x
stderr_has "unknown subcommand 'frobnicate'"
run 1 data
run 1 data check "$ds/chat.jsonl" --seq-len 0
run 1 data check "$ds/chat.jsonl" --no-such-option
run 1 data check "$ds/chat.jsonl" --model "$tok/qwen3" --chat-template nonesuch
finish
