#!/usr/bin/python3
"""Do whet's PEFT adapter directories mean, under PEFT's rules, what whet computes?

A developer's check, never run by `make check`. Hugging Face PEFT and
transformers are NOT used: Debian bookworm packages neither and PyPI is out of
reach here. Instead this re-implements, in plain torch, what
PeftModel.from_pretrained + merge_and_unload do with an adapter directory
(huggingface/peft, tuners/lora: model.py _create_and_replace /
check_target_module_exists, layer.py update_layer / get_delta_weight,
utils/other.py get_pattern_key), and runs the models with make_goldens.py's
plain-torch re-implementation of transformers' modeling code:

  - tensor names: "base_model.model." + module + ".lora_A.weight" [r, in] and
    ".lora_B.weight" [out, r];
  - the module must be targeted: target_modules as a list matches the full
    name or a "." + entry suffix, as a string re.fullmatch, "all-linear" every
    linear layer but the head; layers_to_transform restricts layers;
  - r and lora_alpha per module from rank_pattern / alpha_pattern, the first
    key k with re.match(rf"(.*\\.)?({k})$", module);
  - scaling = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora);
  - merged weight W + (B @ A) * scaling, transposed when fan_in_fan_out
    (GPT-2's Conv1D weights are [in, out]).

For each golden model of tests/data/models a random adapter on every
projection is written by whet (build/tests/test_export adapter), its logits
with the adapter applied at run time are taken from whet (test_export
logits), and compared with this reading's. The same logits must come from
the plain-torch model run on the directory `whet export --format hf` writes
with the adapter merged (its config.json and model.safetensors as
transformers would read them), and from a GGUF export converted back to an
HF directory (config.json made from GGUF metadata). Prints max|d|/max|ref|
and fails above 1e-5.

Run:  make build/whet build/tests/test_export && /usr/bin/python3 tests/ref/check_peft_load.py
"""
import json
import math
import os
import re
import struct
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import make_goldens as mg  # noqa: E402

TEST_EXPORT = os.environ.get("TEST_EXPORT", os.path.join(TOP, "build", "tests", "test_export"))
WHET = os.environ.get("WHET", os.path.join(TOP, "build", "whet"))
T = 12
DT = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2), "I32": (torch.int32, 4),
      "F64": (torch.float64, 8)}


def read_safetensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = bytearray(b[8 + n + begin:8 + n + end])
        dtype = DT[info["dtype"]][0]
        if dtype in (torch.float16, torch.bfloat16):
            t = torch.frombuffer(raw, dtype=torch.int16).view(dtype)
        else:
            t = torch.frombuffer(raw, dtype=dtype)
        out[name] = t.reshape(info["shape"]).float()
    return out


def read_model(d):
    W = {}
    for f in sorted(os.listdir(d)):
        if f.startswith("model") and f.endswith(".safetensors"):
            W.update(read_safetensors(os.path.join(d, f)))
    return W


def targeted(cfg, module, linear):
    tm = cfg["target_modules"]
    if isinstance(tm, str):
        return linear if tm == "all-linear" else re.fullmatch(tm, module) is not None
    return any(module == k or module.endswith("." + k) for k in tm)


def layer_of(module):
    m = re.search(r"\.(\d+)\.", module)
    return int(m.group(1))


def pattern_value(patterns, module, default):
    for k, v in (patterns or {}).items():
        if re.match(rf"(.*\.)?({k})$", module):
            return v
    return default


def apply_peft(W, adapter_dir, gpt2):
    cfg = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    assert cfg["peft_type"] == "LORA" and cfg.get("bias", "none") == "none"
    tensors = read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
    W = dict(W)
    modules = sorted({n[len("base_model.model."):-len(".lora_A.weight")] for n in tensors if n.endswith(".lora_A.weight")})
    assert len(tensors) == 2 * len(modules), "every lora_A has its lora_B"
    for module in modules:
        assert targeted(cfg, module, True), module + " is not targeted by adapter_config.json"
        ltt = cfg.get("layers_to_transform")
        assert ltt is None or layer_of(module) in (ltt if isinstance(ltt, list) else [ltt])
        r = pattern_value(cfg.get("rank_pattern"), module, cfg["r"])
        alpha = pattern_value(cfg.get("alpha_pattern"), module, cfg["lora_alpha"])
        A = tensors["base_model.model." + module + ".lora_A.weight"]
        B = tensors["base_model.model." + module + ".lora_B.weight"]
        assert A.shape[0] == r and B.shape[1] == r, (module, A.shape, B.shape, r)
        scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
        delta = (B.double() @ A.double()) * scaling
        if cfg.get("fan_in_fan_out"):
            delta = delta.T
        name = module + ".weight"
        if gpt2 and name.startswith("transformer.") and name not in W:
            name = name[len("transformer."):]
        assert W[name].shape == delta.shape, (name, W[name].shape, delta.shape)
        W[name] = (W[name].double() + delta).float()
    return W


def main():
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["llama", "llama3_rope", "mistral", "qwen2", "qwen3", "gpt2"]:
            d = os.path.join(TOP, "tests", "data", "models", name)
            cfg = json.load(open(os.path.join(d, "config.json")))
            adapter = os.path.join(tmp, name + "-adapter")
            subprocess.run([TEST_EXPORT, "adapter", d, adapter], check=True)
            out = os.path.join(tmp, name + ".f32")
            subprocess.run([TEST_EXPORT, "logits", d, adapter, out], check=True)
            V = cfg["vocab_size"]
            got = torch.frombuffer(bytearray(open(out, "rb").read()), dtype=torch.float32).reshape(T, V)
            gpt2 = cfg["architectures"][0] == "GPT2LMHeadModel"
            W = apply_peft(read_model(d), adapter, gpt2)
            ids = torch.tensor([[(t * 37 + 5) % V for t in range(T)]])

            def forward(c, w):
                with torch.no_grad():
                    if c["architectures"][0] == "GPT2LMHeadModel":
                        return mg.gpt2_forward(c, w, ids)[0]
                    return mg.llama_like_forward(c["architectures"][0], c, w, ids)[0]

            def report(what, ref):
                rel = ((got - ref).abs().max() / ref.abs().max()).item()
                ok = rel <= 1e-5
                print("%-12s %s %-46s max rel diff %.2e" % (name, "ok  " if ok else "FAIL", what, rel))
                return not ok

            failures += report("whet --adapter vs PEFT's reading (re-impl.)", forward(cfg, W))
            # the merged HF directory, as transformers' modeling code reads it
            merged = os.path.join(tmp, name + "-merged")
            subprocess.run([WHET, "export", "--model", d, "--adapter", adapter, "--format", "hf", "--out", merged],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            failures += report("whet --adapter vs the merged HF export", forward(
                json.load(open(os.path.join(merged, "config.json"))), read_model(merged)))
            # GGUF and back: config.json from the metadata (not for Llama 3's
            # rope_freqs, which has no config.json form)
            if name != "llama3_rope":
                gguf, back = os.path.join(tmp, name + ".gguf"), os.path.join(tmp, name + "-back")
                quiet = dict(check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                subprocess.run([WHET, "export", "--model", merged, "--format", "gguf", "--out", gguf], **quiet)
                subprocess.run([WHET, "export", "--model", gguf, "--format", "hf", "--out", back], **quiet)
                failures += report("whet --adapter vs merged -> GGUF -> HF", forward(
                    json.load(open(os.path.join(back, "config.json"))), read_model(back)))
    print("%d failed" % failures if failures else "all match")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
