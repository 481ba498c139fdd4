#!/usr/bin/python3
"""Golden training trajectories for whet's trainer (tests/test_train_golden.c).

Trains the tiny Llama of tests/data/models/llama (its config.json and
model.safetensors, read here by hand) for 5 optimizer steps on fixed token
batches with PyTorch, the way an HF Trainer run would:

  - loss: cross-entropy, mean over the loss tokens of the whole optimizer step
    (2 micro-batches of 2 x 16 tokens per step, gradients accumulated; targets
    of -1 carry no loss, as labels of -100 do in HF);
  - torch.optim.AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0.1) with two
    parameter groups: decay on matrices and embeddings, none on norms and
    biases (HF Trainer's get_decay_parameter_names);
  - LambdaLR with get_cosine_schedule_with_warmup's lambda (2 warmup steps
    of 5, so the first step runs at lr 0), lr 1e-2;
  - torch.nn.utils.clip_grad_norm_(max_norm 0.5) before each step.

Two runs: "full" (every weight trains) and "lora" (rank 4, alpha 8 on
q,k,v,o,gate,up,down; PEFT's math: y = Wx + (alpha/r) * B(A x); A drawn here
Kaiming-uniform, i.e. U(-1/sqrt(in), 1/sqrt(in)), B zero; the initial A is
stored so that the C side starts from the same values).

Writes tests/data/train/golden_{full,lora}.safetensors:
    tokens   I32 [5, 2, 2, 16]  input ids per step, micro-batch, row
    targets  I32 [5, 2, 2, 16]  the next token, or -1 (no loss)
    loss     F64 [5]            the step's loss (before its update)
    grad_norm F64 [5]           the global gradient norm before clipping
    lr       F64 [5]            the learning rate of the step
    init.lora_A.<proj> F32 [L, r, in]        (lora only) A at the start
    final.<name> F32 ...        every trained tensor after 5 steps, in whet's
                                layout: wte [V, C], wq [L, QD, C], ln1_w [L, C],
                                lm_head [V, C] ...; lora_A.<proj> [L, r, in],
                                lora_B.<proj> [L, out, r]

Run:  /usr/bin/python3 tests/ref/make_train_goldens.py   (torch 1.13 is enough)
"""
import json
import math
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_goldens as mg  # noqa: E402  (the modeling code and the safetensors writer)

MODEL = os.path.join(HERE, "..", "data", "models", "llama")
OUT = os.path.join(HERE, "..", "data", "train")

STEPS, ACCUM, B, T = 5, 2, 2, 16
LR, WARMUP, WD, CLIP = 1e-2, 2, 0.1, 0.5
BETAS, EPS = (0.9, 0.95), 1e-8
RANK, ALPHA = 4, 8.0


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", name
        b, e = info["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32).reshape(info["shape"]).clone()
    return out


def cosine_lambda(step):
    # transformers.get_cosine_schedule_with_warmup (num_cycles 0.5)
    if step < WARMUP:
        return float(step) / float(max(1, WARMUP))
    progress = float(step - WARMUP) / float(max(1, STEPS - WARMUP))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))


def batches(cfg):
    g = torch.Generator().manual_seed(1234)
    V = cfg["vocab_size"]
    tokens = torch.randint(3, V, (STEPS, ACCUM, B, T), generator=g, dtype=torch.int64)
    targets = torch.full_like(tokens, -1)
    targets[..., :-1] = tokens[..., 1:]
    # a prompt-like masked prefix of varying length per row, and a padded tail on some rows
    for s in range(STEPS):
        for a in range(ACCUM):
            for b in range(B):
                prefix = int(torch.randint(0, 6, (1,), generator=g))
                targets[s, a, b, :prefix] = -1
                if (s + a + b) % 3 == 0:
                    targets[s, a, b, T - 4:] = -1
    return tokens, targets


# whet's parameter views for a Llama: name -> (HF name format, per layer)
VIEWS = [("wte", "model.embed_tokens.weight", False),
         ("ln1_w", "model.layers.%d.input_layernorm.weight", True),
         ("wq", "model.layers.%d.self_attn.q_proj.weight", True),
         ("wk", "model.layers.%d.self_attn.k_proj.weight", True),
         ("wv", "model.layers.%d.self_attn.v_proj.weight", True),
         ("wo", "model.layers.%d.self_attn.o_proj.weight", True),
         ("ln2_w", "model.layers.%d.post_attention_layernorm.weight", True),
         ("w_gate", "model.layers.%d.mlp.gate_proj.weight", True),
         ("w_up", "model.layers.%d.mlp.up_proj.weight", True),
         ("w_down", "model.layers.%d.mlp.down_proj.weight", True),
         ("lnf_w", "model.norm.weight", False),
         ("lm_head", "lm_head.weight", False)]
PROJ = [("q_proj", "self_attn.q_proj"), ("k_proj", "self_attn.k_proj"), ("v_proj", "self_attn.v_proj"),
        ("o_proj", "self_attn.o_proj"), ("gate_proj", "mlp.gate_proj"), ("up_proj", "mlp.up_proj"),
        ("down_proj", "mlp.down_proj")]


def train(cfg, W, lora):
    L = cfg["num_hidden_layers"]
    tokens, targets = batches(cfg)
    adapters = {}  # id(base weight) -> (A, B)
    init_A = {}
    if lora:
        g = torch.Generator().manual_seed(99)
        for short, mod in PROJ:
            As, Bs = [], []
            for l in range(L):
                w = W["model.layers.%d.%s.weight" % (l, mod)]
                out_f, in_f = w.shape
                bound = 1.0 / math.sqrt(in_f)  # kaiming_uniform_(a=sqrt(5)) on [r, in]
                A = ((torch.rand(RANK, in_f, generator=g) * 2 - 1) * bound).requires_grad_()
                Bm = torch.zeros(out_f, RANK, requires_grad=True)
                adapters[id(w)] = (A, Bm)
                As.append(A)
                Bs.append(Bm)
            init_A[short] = torch.stack([a.detach().clone() for a in As])
        scale = ALPHA / RANK
        plain = torch.nn.functional.linear

        def lora_linear(x, w, b=None):
            y = plain(x, w, b)
            if id(w) in adapters:
                A, Bm = adapters[id(w)]
                y = y + scale * plain(plain(x, A), Bm)
            return y
        mg.linear = lora_linear
        trained = [(n, t) for pair in adapters.values() for n, t in zip(("A", "B"), pair)]
        decay = [t for _, t in trained]
        no_decay = []
    else:
        mg.linear = torch.nn.functional.linear
        for t in W.values():
            t.requires_grad_()
        decay = [t for n, t in W.items() if not n.endswith("norm.weight")]
        no_decay = [t for n, t in W.items() if n.endswith("norm.weight")]
    params = decay + no_decay
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=EPS)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda)
    losses, norms, lrs = [], [], []
    for s in range(STEPS):
        opt.zero_grad()
        total = int((targets[s] >= 0).sum())
        step_loss = 0.0
        for a in range(ACCUM):
            logits = mg.llama_like_forward("LlamaForCausalLM", cfg, W, tokens[s, a])
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[s, a].reshape(-1),
                                                    ignore_index=-1, reduction="sum")
            (nll / total).backward()
            step_loss += float(nll.detach().double())
        losses.append(step_loss / total)
        lrs.append(opt.param_groups[0]["lr"])
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, CLIP)))
        opt.step()
        sched.step()
        print("%s step %d: loss %.6f  grad_norm %.6f  lr %.6g" % ("lora" if lora else "full", s + 1, losses[-1],
                                                                  norms[-1], lrs[-1]))
    out = {"tokens": ("I32", tokens.to(torch.int32)), "targets": ("I32", targets.to(torch.int32)),
           "loss": ("F64", torch.tensor(losses, dtype=torch.float64)),
           "grad_norm": ("F64", torch.tensor(norms, dtype=torch.float64)),
           "lr": ("F64", torch.tensor(lrs, dtype=torch.float64))}
    if lora:
        for short, mod in PROJ:
            pairs = [adapters[id(W["model.layers.%d.%s.weight" % (l, mod)])] for l in range(L)]
            out["init.lora_A." + short] = ("F32", init_A[short])
            out["final.lora_A." + short] = ("F32", torch.stack([p[0].detach() for p in pairs]))
            out["final.lora_B." + short] = ("F32", torch.stack([p[1].detach() for p in pairs]))
    else:
        for name, hf, per_layer in VIEWS:
            if per_layer:
                out["final." + name] = ("F32", torch.stack([W[hf % l].detach() for l in range(L)]))
            else:
                out["final." + name] = ("F32", W[hf].detach())
    return out


def main():
    torch.manual_seed(0)
    with open(os.path.join(MODEL, "config.json")) as f:
        cfg = json.load(f)
    os.makedirs(OUT, exist_ok=True)
    for lora in (False, True):
        W = read_safetensors(os.path.join(MODEL, "model.safetensors"))
        out = train(cfg, W, lora)
        mg.write_safetensors(os.path.join(OUT, "golden_%s.safetensors" % ("lora" if lora else "full")), out)


if __name__ == "__main__":
    main()
