// Does llama.cpp load what whet export writes, and compute what whet computes?
// A developer's check, never run by `make check` (it needs llama.cpp).
//
// llama.cpp comes from npm's node-llama-cpp (its prebuilt CPU binary for
// linux-x64 is inside the @node-llama-cpp/linux-x64 package):
//   mkdir -p /tmp/llamacheck && cd /tmp/llamacheck && npm install node-llama-cpp@3.22.1
//   cd /path/to/whet && make build/whet build/tests/test_export
//   NODE_LLAMA_CPP=/tmp/llamacheck/node_modules/node-llama-cpp/dist/index.js \
//       node tests/ref/check_llamacpp.mjs
//
// For each golden model of tests/data/models (made runnable with the CLI
// tests' 300-token tokenizer) and a random adapter on every projection
// (test_export adapter), it writes with whet export: the base model as GGUF
// F32, the merged model as GGUF F32 and the adapter as a GGUF LoRA adapter;
// then it compares llama.cpp's logits for the token sequence of
// test_export's logits_of ((t·37 + 5) mod V, t < 12) with whet's:
//   base GGUF                      vs whet, base model
//   merged GGUF                    vs whet, base model + adapter
//   base GGUF + GGUF LoRA adapter  vs whet, base model + adapter
//   base GGUF F16, Q8_0            vs whet, base model (limits 4e-3, 1e-1)
// and prints max|Δ| / max|whet logit| for each. llama.cpp runs with an F32
// KV cache (its default F16 cache alone moves logits by ~1e-3). The F32
// limit is 1e-5, but 1e-3 for GPT-2: ggml's CPU GELU reads an F16 table.
//
// Measured 2026-11-28 (node-llama-cpp 3.22.1, x86-64): every file loaded;
// F32 logits within 1.1e-6 of whet's for llama, llama3_rope, mistral, qwen2,
// qwen3 (base, merged, and base + the LoRA adapter applied by llama.cpp),
// 2.7e-4 for gpt2; F16 ≤ 1.3e-3, Q8_0 ≤ 3.8e-2. Tokenizers: gpt2,
// bytelevel_llama3 and spm_legacy tokenize all 31 golden texts as HF does;
// qwen3 differs on the 2 texts in NFD (llama.cpp applies no NFC normalizer),
// spm_metaspace on the 5 that start with a space or hold a special token
// (add_space_prefix cannot say Metaspace's prepend_scheme "first").
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, mkdirSync, symlinkSync, writeFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const top = resolve(new URL("../..", import.meta.url).pathname);
const whet = process.env.WHET || join(top, "build/whet");
const testExport = process.env.TEST_EXPORT || join(top, "build/tests/test_export");
const { getLlama, LlamaLogLevel } = await import(process.env.NODE_LLAMA_CPP || "node-llama-cpp");
const T = 12;
const f32Limit = name => (name === "gpt2" ? 1e-3 : 1e-5);

// the CLI tests' tokenizer (tests/cli/models.inc write_tokenizer): every id an added token
function writeTokenizer(dir) {
    const texts = { 1: "<s>", 2: "</s>", 3: "<|im_start|>", 4: "<|im_end|>", 5: "user\n", 6: "assistant\n", 7: "\n", 8: "system\n" };
    const added = [], vocab = {};
    for (let i = 0; i < 300; i++) {
        const t = texts[i] ?? `<t${i}>`;
        added.push({ id: i, content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special: i >= 1 && i <= 4 });
        vocab[t] = i;
    }
    writeFileSync(join(dir, "tokenizer.json"), JSON.stringify({
        version: "1.0", truncation: null, padding: null, added_tokens: added, normalizer: null, pre_tokenizer: null,
        post_processor: null, decoder: null,
        model: { type: "BPE", dropout: null, unk_token: null, fuse_unk: false, byte_fallback: false, vocab, merges: [] },
    }));
    writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ bos_token: "<s>", eos_token: "</s>" }));
}

function run(cmd, args) {
    execFileSync(cmd, args, { stdio: ["ignore", "pipe", "inherit"] });
}

function whetLogits(tmp, model, adapter) {
    const out = join(tmp, "logits.f32");
    run(testExport, ["logits", model, adapter ?? "-", out]);
    const b = readFileSync(out);
    return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

async function llamaLogits(llama, modelPath, loraPath, vocab) {
    const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
    const context = await model.createContext({
        contextSize: 64, batchSize: 64, threads: 1, flashAttention: false,
        // F32 keys and values: the default F16 cache alone moves logits by ~1e-3
        experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
        ...(loraPath ? { lora: { adapters: [{ filePath: loraPath, scale: 1 }] } } : {}),
    });
    const seq = context.getSequence();
    const tokens = [];
    for (let t = 0; t < T; t++) tokens.push((t * 37 + 5) % vocab);
    const res = await seq.controlledEvaluate(tokens.map(tok => [tok, { generateNext: { logits: true } }]));
    const out = new Float32Array(T * vocab);
    for (let t = 0; t < T; t++) {
        const logits = res[t]?.next?.logits;
        if (!logits) throw new Error(`no logits at position ${t}`);
        for (const [id, v] of logits) out[t * vocab + id] = v;
    }
    await context.dispose();
    await model.dispose();
    return out;
}

function maxRel(got, ref) {
    let md = 0, mr = 0;
    for (let i = 0; i < ref.length; i++) {
        const d = Math.abs(got[i] - ref[i]);
        if (!(d <= md)) md = d;
        mr = Math.max(mr, Math.abs(ref[i]));
    }
    return md / mr;
}

const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error, build: "never" });
const tmp = mkdtempSync(join(tmpdir(), "whet_llamacpp_"));
let failures = 0;
try {
    for (const name of ["llama", "llama3_rope", "mistral", "qwen2", "qwen3", "gpt2"]) {
        const src = join(top, "tests/data/models", name), dir = join(tmp, name);
        mkdirSync(dir);
        for (const f of readdirSync(src))
            if (f === "config.json" || f.startsWith("model")) symlinkSync(join(src, f), join(dir, f));
        writeTokenizer(dir);
        const adapter = join(tmp, `${name}-adapter`);
        run(testExport, ["adapter", dir, adapter]);
        const base = join(tmp, `${name}.gguf`), merged = join(tmp, `${name}-merged.gguf`), lora = join(tmp, `${name}-lora.gguf`);
        run(whet, ["export", "--model", dir, "--format", "gguf", "--out", base]);
        run(whet, ["export", "--model", dir, "--adapter", adapter, "--format", "gguf", "--merge", "--out", merged]);
        run(whet, ["export", "--model", dir, "--adapter", adapter, "--format", "gguf", "--out", lora]);
        const f16 = join(tmp, `${name}-f16.gguf`), q8 = join(tmp, `${name}-q8_0.gguf`);
        run(whet, ["export", "--model", dir, "--format", "gguf", "--type", "f16", "--out", f16]);
        run(whet, ["export", "--model", dir, "--format", "gguf", "--type", "q8_0", "--out", q8]);
        const vocab = JSON.parse(readFileSync(join(src, "config.json"), "utf8")).vocab_size;
        const refBase = whetLogits(tmp, dir, null), refAdapted = whetLogits(tmp, dir, adapter);
        const cases = [
            ["base GGUF", base, null, refBase, f32Limit(name)],
            ["merged GGUF", merged, null, refAdapted, f32Limit(name)],
            ["base GGUF + LoRA GGUF", base, lora, refAdapted, f32Limit(name)],
            ["base GGUF F16", f16, null, refBase, 4e-3],
            ["base GGUF Q8_0", q8, null, refBase, 1e-1],
        ];
        for (const [what, model, loraPath, ref, limit] of cases) {
            let line;
            try {
                const rel = maxRel(await llamaLogits(llama, model, loraPath, vocab), ref);
                const ok = rel <= limit;
                failures += ok ? 0 : 1;
                line = `${ok ? "ok  " : "FAIL"} max rel diff ${rel.toExponential(2)}`;
            } catch (err) {
                failures++;
                line = `FAIL ${err.message.split("\n")[0]}`;
            }
            console.log(`${name.padEnd(12)} ${what.padEnd(22)} ${line}`);
        }
    }
    // tokenizers: a random model with each tokenizer of tests/data/tokenizers,
    // exported with whet's tokenizer.ggml.* keys, tokenized by llama.cpp
    // (special tokens in the text parsed, nothing added) against the goldens
    // (HF tokenizers' encode(text, add_special_tokens=False))
    for (const [tok, model] of [["gpt2", "gpt2"], ["bytelevel_llama3", "llama"], ["qwen3", "qwen3"],
                                ["spm_legacy", "llama"], ["spm_metaspace", "llama"]]) {
        const path = join(tmp, `${tok}-tok.gguf`);
        run(testExport, ["tokenizer-gguf", join(top, "tests/data/tokenizers", tok), model, path]);
        const m = await llama.loadModel({ modelPath: path, vocabOnly: true });
        const golden = JSON.parse(readFileSync(join(top, "tests/data/tokenizers", `${tok}.golden.json`), "utf8"));
        let differ = 0;
        const examples = [];
        for (const c of golden.cases) {
            const got = Array.from(m.tokenize(c.text, true));
            if (got.length !== c.ids.length || got.some((id, i) => id !== c.ids[i])) {
                differ++;
                if (examples.length < 3) examples.push(JSON.stringify(c.text).slice(0, 40));
            }
        }
        await m.dispose();
        console.log(`${tok.padEnd(17)} tokenizer via llama.cpp: ${differ} of ${golden.cases.length} texts differ` +
                    (examples.length ? ` (e.g. ${examples.join(", ")})` : ""));
    }
} finally {
    rmSync(tmp, { recursive: true, force: true });
}
console.log(failures ? `${failures} failed` : "all loaded by llama.cpp and matched whet");
process.exit(failures ? 1 : 0);
