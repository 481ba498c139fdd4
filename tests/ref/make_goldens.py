#!/usr/bin/python3
"""Golden outputs for whet's model forward (tests/test_model_forward.c).

Builds small random-weight models of each architecture whet reads, in exact
Hugging Face layout (config.json + model.safetensors with HF tensor names and
dtypes, or shards + model.safetensors.index.json), runs a forward pass with a
plain-torch reimplementation of transformers' modeling code, and writes

    tests/data/models/<name>/config.json
    tests/data/models/<name>/model.safetensors (or shards + index)
    tests/data/models/<name>/golden.safetensors:
        tokens  I32 [B, T]      input ids
        logits  F32 [B, T, V]   fp32 logits, as HF computes them in float32
        nll     F64 []          mean next-token NLL (labels = input ids, shifted
                                inside the loss as HF's ForCausalLMLoss does)

transformers and safetensors are not needed: the modeling code below follows
transformers' modeling_{llama,mistral,qwen2,qwen3,gpt2}.py and
modeling_rope_utils.py (eager attention, float32), and safetensors files are
written by hand (u64 header length, JSON header padded to 8 bytes, data).

Run:  /usr/bin/python3 tests/ref/make_goldens.py   (torch 1.13 is enough)
The outputs are committed; `make check` never needs torch.
"""
import json
import math
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "models")

# ---------------------------------------------------------------- safetensors

DTYPES = {"F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2),
          "BF16": (torch.bfloat16, 2), "I32": (torch.int32, 4)}
# the reference writer packs by descending dtype (its enum order), then by name
DTYPE_ORDER = ["BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"]


def tensor_bytes(t, dtype):
    t = t.detach().to(DTYPES[dtype][0]).contiguous()
    if dtype in ("BF16", "F16"):
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def write_safetensors(path, tensors):
    """tensors: {name: (dtype, torch tensor)}"""
    order = sorted(tensors, key=lambda n: (-DTYPE_ORDER.index(tensors[n][0]), n))
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in order:
        dtype, t = tensors[name]
        b = tensor_bytes(t, dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    return offset


# ---------------------------------------------------------------- modeling code


def rms_norm(x, w, eps):
    # LlamaRMSNorm / Qwen2RMSNorm / Qwen3RMSNorm: in float32, weight applied after
    xf = x.to(torch.float32)
    variance = xf.pow(2).mean(-1, keepdim=True)
    xf = xf * torch.rsqrt(variance + eps)
    return w * xf.to(x.dtype)


def rope_inv_freq(cfg, head_dim):
    # modeling_rope_utils: _compute_default_rope_parameters, _linear, _llama3
    base = cfg.get("rope_theta", 10000.0)
    dim = head_dim
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    rs = cfg.get("rope_scaling")
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind == "linear":
            inv_freq = inv_freq / rs["factor"]
        elif kind == "llama3":
            factor = rs["factor"]
            low_freq_factor = rs["low_freq_factor"]
            high_freq_factor = rs["high_freq_factor"]
            old_context_len = rs["original_max_position_embeddings"]
            low_freq_wavelen = old_context_len / low_freq_factor
            high_freq_wavelen = old_context_len / high_freq_factor
            wavelen = 2 * math.pi / inv_freq
            inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
            smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
            is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
            inv_freq = torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)
        else:
            raise ValueError(kind)
    return inv_freq


def rope_cos_sin(inv_freq, B, T):
    # LlamaRotaryEmbedding.forward (attention_scaling 1.0 for default/linear/llama3)
    position_ids = torch.arange(T)[None, :].expand(B, T)
    inv_freq_expanded = inv_freq[None, :, None].float().expand(B, -1, 1)
    position_ids_expanded = position_ids[:, None, :].float()
    freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def repeat_kv(x, n_rep):
    b, h, t, d = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None, :, :].expand(b, h, n_rep, t, d).reshape(b, h * n_rep, t, d)


def linear(x, w, b=None):
    return torch.nn.functional.linear(x, w, b)


def llama_like_forward(arch, cfg, W, ids):
    """LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM, eager, fp32."""
    B, T = ids.shape
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    C = cfg["hidden_size"]
    D = cfg.get("head_dim") or C // H
    eps = cfg["rms_norm_eps"]
    cos, sin = rope_cos_sin(rope_inv_freq(cfg, D), B, T)
    mask = torch.full((T, T), torch.finfo(torch.float32).min).triu(1)
    x = W["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        g = lambda n: W.get(p + n)
        residual = x
        h = rms_norm(x, g("input_layernorm.weight"), eps)
        q = linear(h, g("self_attn.q_proj.weight"), g("self_attn.q_proj.bias")).view(B, T, -1, D)
        k = linear(h, g("self_attn.k_proj.weight"), g("self_attn.k_proj.bias")).view(B, T, -1, D)
        v = linear(h, g("self_attn.v_proj.weight"), g("self_attn.v_proj.bias")).view(B, T, -1, D)
        if arch == "Qwen3ForCausalLM":
            q = rms_norm(q, g("self_attn.q_norm.weight"), eps)
            k = rms_norm(k, g("self_attn.k_norm.weight"), eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = repeat_kv(k, H // KV), repeat_kv(v, H // KV)
        att = torch.matmul(q, k.transpose(2, 3)) * D ** -0.5
        att = att + mask
        att = torch.nn.functional.softmax(att, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(att, v).transpose(1, 2).reshape(B, T, -1)
        o = linear(o, g("self_attn.o_proj.weight"), g("self_attn.o_proj.bias"))
        x = residual + o
        residual = x
        h = rms_norm(x, g("post_attention_layernorm.weight"), eps)
        act = torch.nn.functional.silu(linear(h, g("mlp.gate_proj.weight"), g("mlp.gate_proj.bias")))
        h = linear(act * linear(h, g("mlp.up_proj.weight"), g("mlp.up_proj.bias")),
                   g("mlp.down_proj.weight"), g("mlp.down_proj.bias"))
        x = residual + h
    x = rms_norm(x, W["model.norm.weight"], eps)
    lm_head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return linear(x, lm_head)


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def gpt2_forward(cfg, W, ids, prefix=""):
    """GPT2LMHeadModel, eager, fp32: Conv1D weights are [in, out]."""
    B, T = ids.shape
    C, H = cfg["n_embd"], cfg["n_head"]
    D = C // H
    eps = cfg["layer_norm_epsilon"]
    g = lambda n: W[prefix + n]
    conv1d = lambda x, n: torch.addmm(g(n + ".bias"), x.reshape(-1, x.shape[-1]), g(n + ".weight")).view(
        *x.shape[:-1], -1)
    ln = lambda x, n: torch.nn.functional.layer_norm(x, (C,), g(n + ".weight"), g(n + ".bias"), eps)
    x = g("wte.weight")[ids] + g("wpe.weight")[torch.arange(T)][None]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(cfg["n_layer"]):
        p = "h.%d." % l
        residual = x
        h = ln(x, p + "ln_1")
        q, k, v = conv1d(h, p + "attn.c_attn").split(C, dim=2)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
        att = torch.matmul(q, k.transpose(-1, -2))
        att = att / torch.full([], v.size(-1) ** 0.5, dtype=att.dtype)
        att = torch.where(causal, att, torch.full([], torch.finfo(att.dtype).min, dtype=att.dtype))
        att = torch.nn.functional.softmax(att, dim=-1)
        o = torch.matmul(att, v).transpose(1, 2).reshape(B, T, C)
        x = conv1d(o, p + "attn.c_proj") + residual
        residual = x
        h = ln(x, p + "ln_2")
        h = conv1d(gelu_new(conv1d(h, p + "mlp.c_fc")), p + "mlp.c_proj")
        x = residual + h
    x = ln(x, "ln_f")
    return linear(x, g("wte.weight"))


def causal_lm_loss(logits, ids):
    # ForCausalLMLoss: labels = input ids, shifted inside; mean over B·(T−1) tokens
    V = logits.shape[-1]
    shift_logits = logits[:, :-1, :].float().reshape(-1, V)
    shift_labels = ids[:, 1:].reshape(-1)
    return torch.nn.functional.cross_entropy(shift_logits, shift_labels, reduction="mean")


# ---------------------------------------------------------------- random models


def randn(*shape, std=1.0):
    return torch.randn(*shape) * std


def llama_like_weights(arch, cfg):
    C, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or C // H
    F, V = cfg["intermediate_size"], cfg["vocab_size"]
    qkv_bias = arch == "Qwen2ForCausalLM" or cfg.get("attention_bias", False)
    W = {"model.embed_tokens.weight": randn(V, C, std=2 * C ** -0.5)}
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        W[p + "input_layernorm.weight"] = 1 + randn(C, std=0.1)
        W[p + "post_attention_layernorm.weight"] = 1 + randn(C, std=0.1)
        W[p + "self_attn.q_proj.weight"] = randn(H * D, C, std=C ** -0.5)
        W[p + "self_attn.k_proj.weight"] = randn(KV * D, C, std=C ** -0.5)
        W[p + "self_attn.v_proj.weight"] = randn(KV * D, C, std=C ** -0.5)
        W[p + "self_attn.o_proj.weight"] = randn(C, H * D, std=(H * D) ** -0.5)
        if qkv_bias:
            W[p + "self_attn.q_proj.bias"] = randn(H * D, std=0.1)
            W[p + "self_attn.k_proj.bias"] = randn(KV * D, std=0.1)
            W[p + "self_attn.v_proj.bias"] = randn(KV * D, std=0.1)
        if cfg.get("attention_bias", False) and arch != "Qwen2ForCausalLM":
            W[p + "self_attn.o_proj.bias"] = randn(C, std=0.1)
        if arch == "Qwen3ForCausalLM":
            W[p + "self_attn.q_norm.weight"] = 1 + randn(D, std=0.1)
            W[p + "self_attn.k_norm.weight"] = 1 + randn(D, std=0.1)
        W[p + "mlp.gate_proj.weight"] = randn(F, C, std=C ** -0.5)
        W[p + "mlp.up_proj.weight"] = randn(F, C, std=C ** -0.5)
        W[p + "mlp.down_proj.weight"] = randn(C, F, std=F ** -0.5)
        if cfg.get("mlp_bias", False):
            for n, size in (("gate_proj", F), ("up_proj", F), ("down_proj", C)):
                W[p + "mlp.%s.bias" % n] = randn(size, std=0.1)
    W["model.norm.weight"] = 1 + randn(C, std=0.1)
    if not cfg["tie_word_embeddings"]:
        W["lm_head.weight"] = randn(V, C, std=C ** -0.5)
    return W


def gpt2_weights(cfg):
    C, V, P, L = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"], cfg["n_layer"]
    F = cfg.get("n_inner") or 4 * C
    W = {"wte.weight": randn(V, C, std=0.5), "wpe.weight": randn(P, C, std=0.5)}
    for l in range(L):
        p = "h.%d." % l
        for n in ("ln_1", "ln_2"):
            W[p + n + ".weight"] = 1 + randn(C, std=0.1)
            W[p + n + ".bias"] = randn(C, std=0.1)
        # Conv1D: weight [in, out]
        W[p + "attn.c_attn.weight"] = randn(C, 3 * C, std=C ** -0.5)
        W[p + "attn.c_attn.bias"] = randn(3 * C, std=0.1)
        W[p + "attn.c_proj.weight"] = randn(C, C, std=C ** -0.5)
        W[p + "attn.c_proj.bias"] = randn(C, std=0.1)
        W[p + "mlp.c_fc.weight"] = randn(C, F, std=C ** -0.5)
        W[p + "mlp.c_fc.bias"] = randn(F, std=0.1)
        W[p + "mlp.c_proj.weight"] = randn(F, C, std=F ** -0.5)
        W[p + "mlp.c_proj.bias"] = randn(C, std=0.1)
        # the causal-mask buffer old checkpoints carry (openai-community/gpt2 does)
        W[p + "attn.bias"] = torch.tril(torch.ones(P, P)).view(1, 1, P, P)
    W["ln_f.weight"] = 1 + randn(C, std=0.1)
    W["ln_f.bias"] = randn(C, std=0.1)
    return W


def base_llama_cfg(arch, **kw):
    cfg = {"architectures": [arch], "model_type": {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
                                                   "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}[arch],
           "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 128, "rms_norm_eps": 1e-5,
           "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "float32",
           "bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.45.0", "use_cache": True}
    cfg.update(kw)
    return cfg


MODELS = [
    # name, arch, config overrides, storage dtype, shards, (B, T)
    ("llama", "LlamaForCausalLM", dict(), "F32", 1, (2, 17)),
    ("llama3_rope", "LlamaForCausalLM",
     dict(hidden_size=64, intermediate_size=96, num_key_value_heads=1, rope_theta=500000.0, tie_word_embeddings=True,
          rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 64}, torch_dtype="float16", eos_token_id=[2, 3]),
     "F16", 1, (1, 32)),
    ("mistral", "MistralForCausalLM",
     dict(head_dim=16, sliding_window=4096, rope_theta=1000000.0, torch_dtype="bfloat16"), "BF16", 1, (2, 20)),
    ("qwen2", "Qwen2ForCausalLM",
     dict(rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
          sliding_window=32768, max_window_layers=2), "F32", 2, (2, 13)),
    ("qwen3", "Qwen3ForCausalLM",
     dict(head_dim=16, rms_norm_eps=1e-6, tie_word_embeddings=True, attention_bias=False,
          rope_scaling={"type": "linear", "factor": 2.0}, rope_theta=1000000.0), "F32", 1, (1, 24)),
]


def save_model(name, cfg, W, dtype, shards, ids, logits, nll, extra_f32=()):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    tensors = {n: (("F32" if n in extra_f32 else dtype), t) for n, t in W.items()}
    if shards == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), tensors)
    else:
        names = sorted(tensors)
        per = (len(names) + shards - 1) // shards
        weight_map, total = {}, 0
        for s in range(shards):
            fname = "model-%05d-of-%05d.safetensors" % (s + 1, shards)
            part = {n: tensors[n] for n in names[s * per:(s + 1) * per]}
            total += write_safetensors(os.path.join(d, fname), part)
            for n in part:
                weight_map[n] = fname
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
            f.write("\n")
    write_safetensors(os.path.join(d, "golden.safetensors"),
                      {"tokens": ("I32", ids.to(torch.int32)), "logits": ("F32", logits),
                       "nll": ("F64", torch.tensor(float(nll), dtype=torch.float64))})
    print("%-12s B=%d T=%-3d V=%d  nll %.6f  max|logit| %.3f" % (name, ids.shape[0], ids.shape[1], logits.shape[-1],
                                                                  float(nll), float(logits.abs().max())))


def stored(W, dtype):
    """The weights as whet (and HF with torch_dtype=float32) will see them: rounded to the storage dtype."""
    return {n: t.to(DTYPES[dtype][0]).to(torch.float32) for n, t in W.items()}


def main():
    torch.manual_seed(1234)
    with torch.no_grad():
        for name, arch, over, dtype, shards, (B, T) in MODELS:
            cfg = base_llama_cfg(arch, **over)
            W = stored(llama_like_weights(arch, cfg), dtype)
            ids = torch.randint(0, cfg["vocab_size"], (B, T))
            logits = llama_like_forward(arch, cfg, W, ids)
            save_model(name, cfg, W, dtype, shards, ids, logits, causal_lm_loss(logits, ids))

        cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
               "n_embd": 32, "n_head": 4, "n_layer": 2, "n_positions": 64, "n_ctx": 64, "n_inner": None,
               "vocab_size": 300, "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.1, "embd_pdrop": 0.1,
               "attn_pdrop": 0.1, "scale_attn_weights": True, "bos_token_id": 0, "eos_token_id": 0,
               "initializer_range": 0.02, "transformers_version": "4.45.0"}
        W = gpt2_weights(cfg)
        ids = torch.randint(0, cfg["vocab_size"], (2, 16))
        logits = gpt2_forward(cfg, W, ids)
        save_model("gpt2", cfg, W, "F32", 1, ids, logits, causal_lm_loss(logits, ids))
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print("total %d bytes" % total)


if __name__ == "__main__":
    sys.exit(main())
