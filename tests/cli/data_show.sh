# whet data stats and show: the figures for a small file (computed by hand:
# GPT-2 gives the three texts 10, 8 and 2 tokens, plus EOS), trained tokens
# marked with « » in a pipe, --train-on-prompt, --start, errors.
. "$(dirname "$0")/lib.inc"
top=$(cd "$(dirname "$0")/../.." && pwd)
ds="$top/tests/data/datasets"
tok="$top/tests/data/tokenizers"

run 0 data stats "$ds/text.jsonl" --model "$tok/gpt2" --seq-len 10 --batch-size 2
stdout_has "^examples: +3$"
stdout_has "^tokens: +23 \(per example: min 3, median 9, p95 11, max 11\)$"
stdout_has "^trained tokens: +19 of 22 kept \(86.4 %\)$"
stdout_has "^truncated: +1 example longer than --seq-len 10 \(1 tokens cut\)$"
stdout_has "^steps per epoch: +2 at --batch-size 2 \(3 unpacked rows of 10\)$"
run 0 data stats "$ds/text.jsonl" --model "$tok/gpt2" --seq-len 12 --batch-size 1 --pack --json
python3 - "$out" <<'PY' || fail "stats --json"
import json, sys
r = json.load(open(sys.argv[1]))
assert (r["examples"], r["tokens"], r["rows"], r["steps_per_epoch"], r["packed"]) == (3, 23, 2, 2, True), r
assert r["format"] == "text"
PY

# chat: only the assistant's tokens are trained
run 0 data show "$ds/chat.jsonl" --model "$tok/qwen3" --chat-template chatml -n 1
stdout_has "^== $ds/chat.jsonl:1: example 0, 18 tokens, 2 trained$"
stdout_has "^«4<\|im_end\|>»$"
stderr_has "between « and »"
grep -q "«.*user" "$out" && fail "a user turn is marked trained"
# --start, and the second assistant turn has weight 0
run 0 data show "$ds/chat.jsonl" --model "$tok/qwen3" --chat-template chatml --start 1 -n 1
stdout_has "^== $ds/chat.jsonl:2: example 1"
stdout_has "^Bonjour !<\|im_end\|>$"
stdout_has "^«De rien.<\|im_end\|>»$"
# --train-on-prompt: all but the first token
run 0 data show "$ds/chat.jsonl" --model "$tok/qwen3" --chat-template chatml -n 1 --train-on-prompt
stdout_has "^== .*example 0, 18 tokens, 17 trained$"
# prompt/completion without a template
run 0 data show "$ds/prompt_completion.jsonl" --model "$tok/gpt2" -n 1
stdout_has "^The capital of France is« Paris.<\|endoftext\|>»$"

run 1 data stats "$ds/text.jsonl"
stderr_has -- "--model is required"
run 1 data show "$ds/text.jsonl" "$ds/chat.jsonl" --model "$tok/gpt2"
run 1 data stats "$ds/errors.jsonl" --model "$tok/qwen3" --chat-template chatml
stderr_has "errors.jsonl:2:88: invalid-json: "
run 1 data show "$ds/chat.jsonl" --model "$tok/gpt2"
stderr_has "chat.jsonl:1:1: no-chat-template: "
finish
