#!/usr/bin/env python3
"""Trains the demo model's byte-level BPE tokenizer and writes its model files.

    python3 datasets/pretrain/train_tokenizer.py [OUT_DIR]

reads the pretraining text (datasets/pretrain/train.jsonl: the base model must
not depend on the fine-tuning tasks' files) and writes, into
OUT_DIR (default: the directory of this script):
  tokenizer/tokenizer.json         HF tokenizers format, GPT-2's byte-level BPE
                                   layout (ByteLevel pre-tokenizer with GPT-2's
                                   regex, ByteLevel decoder), N_MERGES merges
  tokenizer/tokenizer_config.json  special tokens and a ChatML chat_template
  model-config.json                the tiny Llama-shaped model for
                                   `whet train --init` (vocab_size from here)
Python 3 standard library only; the same bytes on every run.

Training is the classic BPE of Sennrich et al. as GPT-2 and HF tokenizers do
it: the text is split into pre-tokens by GPT-2's regex, each pre-token is a
sequence of bytes, and the most frequent adjacent pair (ties: the smallest
pair in string order) is merged, N_MERGES times. Python's re has no \\p{L}:
letters are [^\\W\\d_] and numbers \\d, the same as \\p{L} and \\p{N} on the
ASCII text this corpus holds (the script stops if the text is not ASCII).
"""
import heapq
import json
import os
import re
import sys

N_MERGES = 2000
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{% endif %}")
# GPT-2's  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+  on ASCII text
PY_PATTERN = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")

MODEL_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 192,
    "intermediate_size": 576,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
}


def bytes_to_unicode():
    """GPT-2's map from bytes to printable characters (encoder.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def corpus_texts(datasets_dir):
    """The training text, in file order."""
    def lines(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)

    for obj in lines(os.path.join(datasets_dir, "pretrain", "train.jsonl")):
        yield obj["text"]


def train(texts):
    b2u = bytes_to_unicode()
    word_counts = {}
    for text in texts:
        if not text.isascii():
            sys.exit("train_tokenizer.py: non-ASCII text: %r" % text[:80])
        for piece in PY_PATTERN.findall(text):
            word = tuple(b2u[b] for b in piece.encode("utf-8"))
            word_counts[word] = word_counts.get(word, 0) + 1
    words = [list(w) for w in sorted(word_counts)]
    counts = [word_counts[tuple(w)] for w in words]

    pair_counts, where = {}, {}
    for i, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pair_counts[(a, b)] = pair_counts.get((a, b), 0) + counts[i]
            where.setdefault((a, b), set()).add(i)
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)

    merges = []
    while len(merges) < N_MERGES and heap:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg or -neg <= 0:
            continue  # a stale entry
        merges.append(pair)
        merged = pair[0] + pair[1]
        changed = {}
        for i in sorted(where.pop(pair, ())):
            w, c = words[i], counts[i]
            j, out = 0, []
            while j < len(w):
                if j + 1 < len(w) and w[j] == pair[0] and w[j + 1] == pair[1]:
                    out.append(merged)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            for p in zip(w, w[1:]):
                pair_counts[p] -= c
                changed[p] = True
            for p in zip(out, out[1:]):
                pair_counts[p] = pair_counts.get(p, 0) + c
                changed[p] = True
                where.setdefault(p, set()).add(i)
            words[i] = out
        pair_counts.pop(pair, None)
        for p in sorted(changed):
            if p != pair and pair_counts.get(p, 0) > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
    return b2u, merges


def tokenizer_json(b2u, merges):
    vocab = {}
    for b in range(256):
        vocab[b2u[b]] = b
    for a, b in merges:
        vocab[a + b] = len(vocab)
    if len(vocab) != 256 + len(merges):
        sys.exit("train_tokenizer.py: a merge produced a token twice")
    added = []
    for s in SPECIALS:
        added.append({"id": len(vocab) + len(added), "content": s, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": dict(byte_level, trim_offsets=False),
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for a, b in merges]},
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else here
    b2u, merges = train(corpus_texts(os.path.dirname(here)))
    tok = tokenizer_json(b2u, merges)
    ids = {t["content"]: t["id"] for t in tok["added_tokens"]}
    vocab_size = 256 + len(merges) + len(SPECIALS)

    os.makedirs(os.path.join(out_dir, "tokenizer"), exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer", "tokenizer.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(tok, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    config = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
              "unk_token": None, "model_max_length": MODEL_CONFIG["max_position_embeddings"],
              "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHATML}
    with open(os.path.join(out_dir, "tokenizer", "tokenizer_config.json"), "w", encoding="utf-8",
              newline="\n") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
        f.write("\n")
    model = dict(MODEL_CONFIG, vocab_size=vocab_size, bos_token_id=ids["<|endoftext|>"],
                 eos_token_id=[ids["<|endoftext|>"], ids["<|im_end|>"]])
    with open(os.path.join(out_dir, "model-config.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(model, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
