#!/usr/bin/python3
"""tests/data/cli/tiny-llama.gguf for tests/cli/info.sh: the llama test model
(tests/data/models/llama, written by make_goldens.py) converted to GGUF as
llama.cpp's convert_hf_to_gguf.py lays it out (formats.md §2): llama.* hyper-
parameters, tensor names blk.N.*, shapes reversed into ggml order, Q and K rows
permuted to Meta's interleaved RoPE layout, 1-D norm weights in F32 and every
other tensor in F16, and tokenizer.chat_template set to the ChatML template of
tests/data/chat/templates/chatml.jinja. Its vocabulary is the CLI tests' (see
tests/cli/models.inc): every id one token of its own, written as a control
(1-4) or user-defined token of a "gpt2" tokenizer with no merges.

No dependencies beyond Python 3 (struct's 'e' format writes float16).
Run:  python3 tests/ref/make_cli_gguf.py
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "data", "models", "llama")
OUT = os.path.join(HERE, "..", "data", "cli", "tiny-llama.gguf")
CHATML = os.path.join(HERE, "..", "data", "chat", "templates", "chatml.jinja")
ALIGN = 32

# gguf value types
U32, I32T, F32T, STRING, ARRAY = 4, 5, 6, 8, 9
GGML_F32, GGML_F16 = 0, 1


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", name
        b, e = info["data_offsets"]
        count = (e - b) // 4
        out[name] = (info["shape"], list(struct.unpack("<%df" % count, data[base + b:base + e])))
    return out


def permute(values, shape, n_head):
    """convert_hf_to_gguf's LlamaModel.permute on a [rows, cols] weight."""
    rows, cols = shape
    d = rows // n_head
    out = [0.0] * len(values)
    for h in range(n_head):
        for j in range(d // 2):
            for k in range(2):
                src = h * d + k * (d // 2) + j
                dst = h * d + 2 * j + k
                out[dst * cols:(dst + 1) * cols] = values[src * cols:(src + 1) * cols]
    return out


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, value):
    out = gguf_string(key) + struct.pack("<I", vtype)
    if vtype == U32:
        out += struct.pack("<I", value)
    elif vtype == F32T:
        out += struct.pack("<f", value)
    elif vtype == STRING:
        out += gguf_string(value)
    return out


def token_text(i):
    fixed = {1: "<s>", 2: "</s>", 3: "<|im_start|>", 4: "<|im_end|>", 5: "user\n", 6: "assistant\n", 7: "\n",
             8: "system\n"}
    return fixed.get(i, "<t%d>" % i)


def kv_array(key, elem, values):
    out = gguf_string(key) + struct.pack("<IIQ", ARRAY, elem, len(values))
    for v in values:
        out += gguf_string(v) if elem == STRING else struct.pack("<i", v)
    return out


def main():
    with open(os.path.join(SRC, "config.json")) as f:
        cfg = json.load(f)
    W = read_safetensors(os.path.join(SRC, "model.safetensors"))
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
                 "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                 "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                 "mlp.down_proj": "ffn_down"}
    for l in range(cfg["num_hidden_layers"]):
        for hf, gg in per_layer.items():
            names["model.layers.%d.%s.weight" % (l, hf)] = "blk.%d.%s.weight" % (l, gg)
    tensors = []
    for hf in sorted(W, key=lambda n: names[n]):
        shape, values = W[hf]
        if hf.endswith("q_proj.weight"):
            values = permute(values, shape, H)
        elif hf.endswith("k_proj.weight"):
            values = permute(values, shape, KV)
        if len(shape) == 1:
            ggml, blob = GGML_F32, struct.pack("<%df" % len(values), *values)
        else:
            ggml, blob = GGML_F16, struct.pack("<%de" % len(values), *values)
        tensors.append((names[hf], list(reversed(shape)), ggml, blob))

    with open(CHATML) as f:
        chatml = f.read()
    meta = [
        kv("general.architecture", STRING, "llama"),
        kv("general.name", STRING, "whet tiny llama (random weights)"),
        kv("general.file_type", U32, 1),
        kv("llama.vocab_size", U32, cfg["vocab_size"]),
        kv("llama.context_length", U32, cfg["max_position_embeddings"]),
        kv("llama.embedding_length", U32, cfg["hidden_size"]),
        kv("llama.feed_forward_length", U32, cfg["intermediate_size"]),
        kv("llama.block_count", U32, cfg["num_hidden_layers"]),
        kv("llama.attention.head_count", U32, H),
        kv("llama.attention.head_count_kv", U32, KV),
        kv("llama.rope.dimension_count", U32, cfg["hidden_size"] // H),
        kv("llama.rope.freq_base", F32T, cfg["rope_theta"]),
        kv("llama.attention.layer_norm_rms_epsilon", F32T, cfg["rms_norm_eps"]),
        kv("tokenizer.ggml.bos_token_id", U32, cfg["bos_token_id"]),
        kv("tokenizer.ggml.eos_token_id", U32, cfg["eos_token_id"]),
        kv("tokenizer.chat_template", STRING, chatml),
        kv("tokenizer.ggml.model", STRING, "gpt2"),
        kv("tokenizer.ggml.pre", STRING, "default"),
        kv_array("tokenizer.ggml.tokens", STRING, [token_text(i) for i in range(cfg["vocab_size"])]),
        kv_array("tokenizer.ggml.token_type", I32T, [3 if 1 <= i <= 4 else 4 for i in range(cfg["vocab_size"])]),
        kv_array("tokenizer.ggml.merges", STRING, []),
    ]
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)) + b"".join(meta)
    offset = 0
    for name, ne, ggml, blob in tensors:
        out += gguf_string(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", ggml, offset)
        offset += (len(blob) + ALIGN - 1) // ALIGN * ALIGN
    out += b"\0" * ((ALIGN - len(out) % ALIGN) % ALIGN)
    for _, _, _, blob in tensors:
        out += blob + b"\0" * ((ALIGN - len(blob) % ALIGN) % ALIGN)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "wb") as f:
        f.write(out)
    print("%s: %d tensors, %d bytes" % (OUT, len(tensors), len(out)))


if __name__ == "__main__":
    main()
