#!/usr/bin/python3
"""Golden gradients for whet's backward pass (tests/test_model_backward.c).

For each tiny model (the ones tests/ref/make_goldens.py wrote under
tests/data/models/, plus llama_bias here: Llama with o_proj and MLP biases, a
tied head and a 1100-token vocabulary, so that the fused LM head runs over two
vocabulary chunks and, at B·T = 280 rows, two row blocks), computes in float64
with autograd, from the stored weights:

    loss = mean over rows with a target (target >= 0) of −log softmax(logits)[target]

and writes tests/data/grads/<case>.safetensors:

    tokens, targets, positions, seg_start   I32 [B, T]
    loss                                    F64 []
    grad.<view>                             F32, in whet's parameter layout:
        views named as whet_model_params (wte, wpe, ln1_w, ln1_b, wq, bq, ...,
        lnf_w, lnf_b, lm_head), per-layer tensors stacked [L, ...], linear
        weights [out, in] (GPT-2's Conv1D weights transposed, c_attn split into
        q, k, v); a tied head's gradient is in grad.wte (both uses summed).

Packed cases (qwen3, gpt2): a sequence holds several examples; seg_start[b, t]
is the row where t's example starts, positions restart at 0 in each example
(position_ids), and attention is causal within an example only (an explicit
block-diagonal causal mask), as a packed batch with restarted position_ids
computes it in transformers. Targets: the next token within the example, -1
on each example's last row and on a few "prompt" rows.

The modeling code follows transformers' modeling_{llama,mistral,qwen2,qwen3,
gpt2}.py like make_goldens.py (whose helpers it imports); RoPE angles are
float32 products as in HF, cos/sin in float64.

Run:  /usr/bin/python3 tests/ref/make_grad_goldens.py   (torch 1.13 is enough)
"""
import json
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_goldens as mg  # noqa: E402

MODELS = os.path.join(HERE, "..", "data", "models")
OUT = os.path.join(HERE, "..", "data", "grads")

ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        dt = ST_DTYPES[info["dtype"]]
        raw = bytearray(data[a:b])
        if dt in (torch.float16, torch.bfloat16):
            t = torch.frombuffer(raw, dtype=torch.int16).view(dt)
        else:
            t = torch.frombuffer(raw, dtype=dt)
        out[name] = t.reshape(info["shape"]).to(torch.float64)
    return out


def read_model(d):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    index = os.path.join(d, "model.safetensors.index.json")
    W = {}
    if os.path.exists(index):
        with open(index) as f:
            for shard in sorted(set(json.load(f)["weight_map"].values())):
                W.update(read_safetensors(os.path.join(d, shard)))
    else:
        W = read_safetensors(os.path.join(d, "model.safetensors"))
    return cfg, W


# ---------------------------------------------------------------- modeling, float64


def rms_norm(x, w, eps):
    # LlamaRMSNorm's formula, kept in float64 (make_goldens.rms_norm computes in float32)
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope_cos_sin(inv_freq, positions):
    # HF: inv_freq @ position_ids in float32 (one product per angle); cos/sin here in float64
    angle = (inv_freq[None, None, :].float() * positions[..., None].float()).double()
    emb = torch.cat((angle, angle), dim=-1)
    return emb.cos(), emb.sin()


def block_causal_mask(seg_start):
    """[B, 1, T, T] additive mask: query i sees key j when j <= i within i's example."""
    B, T = seg_start.shape
    i = torch.arange(T)
    allowed = (i[None, None, :] <= i[None, :, None]) & (i[None, None, :] >= seg_start[:, :, None])
    return torch.where(allowed, 0.0, float("-inf")).double()[:, None]


def llama_like_logits(arch, cfg, W, ids, positions, seg_start):
    B, T = ids.shape
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    C = cfg["hidden_size"]
    D = cfg.get("head_dim") or C // H
    eps = cfg["rms_norm_eps"]
    cos, sin = rope_cos_sin(mg.rope_inv_freq(cfg, D), positions)
    cos, sin = cos[:, None], sin[:, None]
    mask = block_causal_mask(seg_start)
    x = W["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        g = lambda n: W.get(p + n)
        residual = x
        h = rms_norm(x, g("input_layernorm.weight"), eps)
        q = mg.linear(h, g("self_attn.q_proj.weight"), g("self_attn.q_proj.bias")).view(B, T, -1, D)
        k = mg.linear(h, g("self_attn.k_proj.weight"), g("self_attn.k_proj.bias")).view(B, T, -1, D)
        v = mg.linear(h, g("self_attn.v_proj.weight"), g("self_attn.v_proj.bias")).view(B, T, -1, D)
        if arch == "Qwen3ForCausalLM":
            q = rms_norm(q, g("self_attn.q_norm.weight"), eps)
            k = rms_norm(k, g("self_attn.k_norm.weight"), eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q = q * cos + mg.rotate_half(q) * sin
        k = k * cos + mg.rotate_half(k) * sin
        k, v = mg.repeat_kv(k, H // KV), mg.repeat_kv(v, H // KV)
        att = torch.matmul(q, k.transpose(2, 3)) * D ** -0.5 + mask
        att = torch.softmax(att, dim=-1)
        o = torch.matmul(att, v).transpose(1, 2).reshape(B, T, -1)
        x = residual + mg.linear(o, g("self_attn.o_proj.weight"), g("self_attn.o_proj.bias"))
        residual = x
        h = rms_norm(x, g("post_attention_layernorm.weight"), eps)
        act = torch.nn.functional.silu(mg.linear(h, g("mlp.gate_proj.weight"), g("mlp.gate_proj.bias")))
        h = mg.linear(act * mg.linear(h, g("mlp.up_proj.weight"), g("mlp.up_proj.bias")),
                      g("mlp.down_proj.weight"), g("mlp.down_proj.bias"))
        x = residual + h
    x = rms_norm(x, W["model.norm.weight"], eps)
    lm_head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return mg.linear(x, lm_head)


def gpt2_logits(cfg, W, ids, positions, seg_start):
    B, T = ids.shape
    C, H = cfg["n_embd"], cfg["n_head"]
    D = C // H
    eps = cfg["layer_norm_epsilon"]
    g = lambda n: W[n]
    conv1d = lambda x, n: (x @ g(n + ".weight")) + g(n + ".bias")
    ln = lambda x, n: torch.nn.functional.layer_norm(x, (C,), g(n + ".weight"), g(n + ".bias"), eps)
    mask = block_causal_mask(seg_start)
    x = g("wte.weight")[ids] + g("wpe.weight")[positions]
    for l in range(cfg["n_layer"]):
        p = "h.%d." % l
        residual = x
        h = ln(x, p + "ln_1")
        q, k, v = conv1d(h, p + "attn.c_attn").split(C, dim=2)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
        att = torch.matmul(q, k.transpose(-1, -2)) / D ** 0.5 + mask
        att = torch.softmax(att, dim=-1)
        o = torch.matmul(att, v).transpose(1, 2).reshape(B, T, C)
        x = conv1d(o, p + "attn.c_proj") + residual
        residual = x
        h = ln(x, p + "ln_2")
        x = residual + conv1d(mg.gelu_new(conv1d(h, p + "mlp.c_fc")), p + "mlp.c_proj")
    x = ln(x, "ln_f")
    return mg.linear(x, g("wte.weight"))


# ---------------------------------------------------------------- whet's layout


def llama_like_grads(arch, cfg, G):
    L = cfg["num_hidden_layers"]
    out = {"wte": G["model.embed_tokens.weight"]}
    per_layer = [("ln1_w", "input_layernorm.weight"), ("wq", "self_attn.q_proj.weight"),
                 ("wk", "self_attn.k_proj.weight"), ("wv", "self_attn.v_proj.weight"),
                 ("bq", "self_attn.q_proj.bias"), ("bk", "self_attn.k_proj.bias"), ("bv", "self_attn.v_proj.bias"),
                 ("q_norm", "self_attn.q_norm.weight"), ("k_norm", "self_attn.k_norm.weight"),
                 ("wo", "self_attn.o_proj.weight"), ("bo", "self_attn.o_proj.bias"),
                 ("ln2_w", "post_attention_layernorm.weight"), ("w_gate", "mlp.gate_proj.weight"),
                 ("b_gate", "mlp.gate_proj.bias"), ("w_up", "mlp.up_proj.weight"), ("b_up", "mlp.up_proj.bias"),
                 ("w_down", "mlp.down_proj.weight"), ("b_down", "mlp.down_proj.bias")]
    for view, hf in per_layer:
        names = ["model.layers.%d.%s" % (l, hf) for l in range(L)]
        if names[0] in G:
            out[view] = torch.stack([G[n] for n in names])
    out["lnf_w"] = G["model.norm.weight"]
    if not cfg["tie_word_embeddings"]:
        out["lm_head"] = G["lm_head.weight"]
    return out


def gpt2_grads(cfg, G):
    L, C = cfg["n_layer"], cfg["n_embd"]
    stack = lambda f: torch.stack([f("h.%d." % l) for l in range(L)])
    out = {"wte": G["wte.weight"], "wpe": G["wpe.weight"]}
    out["ln1_w"] = stack(lambda p: G[p + "ln_1.weight"])
    out["ln1_b"] = stack(lambda p: G[p + "ln_1.bias"])
    for i, (w, b) in enumerate((("wq", "bq"), ("wk", "bk"), ("wv", "bv"))):
        out[w] = stack(lambda p: G[p + "attn.c_attn.weight"].t()[i * C:(i + 1) * C])
        out[b] = stack(lambda p: G[p + "attn.c_attn.bias"][i * C:(i + 1) * C])
    out["wo"] = stack(lambda p: G[p + "attn.c_proj.weight"].t())
    out["bo"] = stack(lambda p: G[p + "attn.c_proj.bias"])
    out["ln2_w"] = stack(lambda p: G[p + "ln_2.weight"])
    out["ln2_b"] = stack(lambda p: G[p + "ln_2.bias"])
    out["w_up"] = stack(lambda p: G[p + "mlp.c_fc.weight"].t())
    out["b_up"] = stack(lambda p: G[p + "mlp.c_fc.bias"])
    out["w_down"] = stack(lambda p: G[p + "mlp.c_proj.weight"].t())
    out["b_down"] = stack(lambda p: G[p + "mlp.c_proj.bias"])
    out["lnf_w"] = G["ln_f.weight"]
    out["lnf_b"] = G["ln_f.bias"]
    return out


# ---------------------------------------------------------------- cases


def batch(B, T, V, segments, prompt, gen):
    """segments[b]: example lengths summing to T; the first `prompt` rows of each example have no target."""
    ids = torch.randint(0, V, (B, T), generator=gen)
    positions = torch.zeros(B, T, dtype=torch.int64)
    seg_start = torch.zeros(B, T, dtype=torch.int64)
    targets = torch.full((B, T), -1, dtype=torch.int64)
    for b in range(B):
        s = 0
        for n in segments[b]:
            for t in range(s, s + n):
                positions[b, t] = t - s
                seg_start[b, t] = s
                if t + 1 < s + n and t - s >= prompt:
                    targets[b, t] = ids[b, t + 1]
            s += n
        assert s == T
    return ids, positions, seg_start, targets


CASES = [
    # name, model dir, (B, T), examples per sequence
    ("llama", "llama", (2, 17), [[17], [17]]),
    ("llama3_rope", "llama3_rope", (1, 20), [[20]]),
    ("mistral", "mistral", (2, 16), [[16], [16]]),
    ("qwen2", "qwen2", (2, 13), [[13], [13]]),
    ("qwen3", "qwen3", (2, 18), [[7, 11], [5, 1, 12]]),
    ("gpt2", "gpt2", (2, 16), [[9, 7], [16]]),
    ("llama_bias", None, (2, 140), [[140], [60, 80]]),
]


def llama_bias_model():
    """Llama with attention_bias (q/k/v and o_proj biases) and mlp_bias, tied, V > WHET_CE_VOCAB."""
    d = os.path.join(OUT, "llama_bias")
    os.makedirs(d, exist_ok=True)
    cfg = mg.base_llama_cfg("LlamaForCausalLM", hidden_size=16, intermediate_size=32, num_attention_heads=2,
                            num_key_value_heads=1, vocab_size=1100, max_position_embeddings=256,
                            attention_bias=True, mlp_bias=True, tie_word_embeddings=True)
    torch.manual_seed(4321)
    W = mg.llama_like_weights("LlamaForCausalLM", cfg)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    mg.write_safetensors(os.path.join(d, "model.safetensors"), {n: ("F32", t) for n, t in W.items()})
    return d


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(99)
    for name, model, (B, T), segments in CASES:
        d = os.path.join(MODELS, model) if model else llama_bias_model()
        cfg, W = read_model(d)
        W = {n: t.clone().requires_grad_(True) for n, t in W.items() if not n.endswith(".attn.bias")}
        arch = cfg["architectures"][0]
        V = cfg["vocab_size"]
        ids, positions, seg_start, targets = batch(B, T, V, segments, 2, gen)
        if arch == "GPT2LMHeadModel":
            logits = gpt2_logits(cfg, W, ids, positions, seg_start)
        else:
            logits = llama_like_logits(arch, cfg, W, ids, positions, seg_start)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-1)
        loss.backward()
        G = {n: t.grad for n, t in W.items()}
        views = gpt2_grads(cfg, G) if arch == "GPT2LMHeadModel" else llama_like_grads(arch, cfg, G)
        tensors = {"tokens": ("I32", ids.to(torch.int32)), "targets": ("I32", targets.to(torch.int32)),
                   "positions": ("I32", positions.to(torch.int32)), "seg_start": ("I32", seg_start.to(torch.int32)),
                   "loss": ("F64", loss.detach())}
        for v, t in views.items():
            tensors["grad." + v] = ("F32", t.float())
        mg.write_safetensors(os.path.join(OUT, name + ".safetensors"), tensors)
        print("%-12s B=%d T=%-3d rows with a target %3d  loss %.6f  %d gradient views" %
              (name, B, T, int((targets >= 0).sum()), float(loss), len(views)))
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print("total %d bytes" % total)


if __name__ == "__main__":
    sys.exit(main())
