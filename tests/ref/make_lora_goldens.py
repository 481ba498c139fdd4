#!/usr/bin/python3
"""LoRA goldens for tests/test_lora.c: one nn.Linear with a LoRA adapter,
computed as PEFT's LoraLayer does (torch only; PEFT is not needed):

    y = base(x) + lora_B(lora_A(x)) * scaling,   scaling = alpha / r  (rsLoRA: alpha / sqrt(r))

The layer is k_proj of a Qwen2 model (hidden 8, 2 heads, 1 KV head, so
in = 8, out = 4, with bias), in float64 so the goldens are exact to float32.
The loss is sum(y * R) for a fixed R, so dL/dy = R; the file holds x, W, b,
A, B, R and then y, dA, dB, dx for a plain and an rsLoRA adapter.

Run:  /usr/bin/python3 tests/ref/make_lora_goldens.py  (writes tests/data/lora/linear.txt)
Format: one tensor per line, "name count v0 v1 ..." (%.9g), row-major. """
import math
import os

import torch

IN, OUT, ROWS, RANK, ALPHA = 8, 4, 5, 3, 6.0


def main():
    g = torch.Generator().manual_seed(1234)

    def rand(*shape, scale=1.0):
        # float32 values, so the C test reads exactly what torch used
        return ((torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * scale).float().double()

    x = rand(ROWS, IN)
    W = rand(OUT, IN, scale=0.5)
    b = rand(OUT, scale=0.1)
    A = rand(RANK, IN, scale=1 / math.sqrt(IN))
    B = rand(OUT, RANK, scale=0.3)
    R = rand(ROWS, OUT)
    lines = []

    def put(name, t):
        v = t.detach().reshape(-1).tolist()
        lines.append(name + " " + str(len(v)) + " " + " ".join("%.9g" % f for f in v))

    for name, t in (("x", x), ("W", W), ("b", b), ("A", A), ("B", B), ("R", R)):
        put(name, t)
    for tag, scaling in (("plain", ALPHA / RANK), ("rslora", ALPHA / math.sqrt(RANK))):
        base = torch.nn.Linear(IN, OUT).double()
        lora_A = torch.nn.Linear(IN, RANK, bias=False).double()
        lora_B = torch.nn.Linear(RANK, OUT, bias=False).double()
        with torch.no_grad():
            base.weight.copy_(W)
            base.bias.copy_(b)
            lora_A.weight.copy_(A)
            lora_B.weight.copy_(B)
        base.weight.requires_grad_(False)
        base.bias.requires_grad_(False)
        xi = x.clone().requires_grad_(True)
        y = base(xi) + lora_B(lora_A(xi)) * scaling
        (y * R).sum().backward()
        put(tag + ".y", y)
        put(tag + ".dA", lora_A.weight.grad)
        put(tag + ".dB", lora_B.weight.grad)
        put(tag + ".dx", xi.grad)

    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "lora", "linear.txt")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
