// gen.mjs writes golden encodings (text -> ids) made by Hugging Face's
// JavaScript tokenizer implementation, which Go tests compare against.
//
// Regenerate (from model/tokenizer; node_modules stays outside the repo):
//
//   mkdir -p /tmp/tokjs && (cd /tmp/tokjs && npm init -y && npm install @huggingface/tokenizers@0.2.0)
//   gunzip -c testdata/llama3-tokenizer.json.gz > /tmp/tokjs/llama3.json
//   gunzip -c testdata/qwen3-tokenizer.json.gz > /tmp/tokjs/qwen3.json
//   go run ./internal/gpt2json > /tmp/tokjs/gpt2.json
//   NODE_PATH=/tmp/tokjs/node_modules node testdata/golden/gen.mjs \
//     llama3=/tmp/tokjs/llama3.json qwen3=/tmp/tokjs/qwen3.json gpt2=/tmp/tokjs/gpt2.json \
//     sentencepiece=testdata/sentencepiece-bytefallback.json metaspace=testdata/metaspace.json
//
// Each NAME=FILE argument produces testdata/golden/NAME.json: an array of
// {"text", "special", "ids"} where special is add_special_tokens. The corpus
// is generated from a fixed seed, so reruns give the same file.
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(join(process.env.NODE_PATH ?? ".", "x.js"));
const { Tokenizer } = require("@huggingface/tokenizers");

// mulberry32: a small seeded PRNG so the corpus is reproducible.
function rng(seed) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const fixed = [
  "Hello, world!", " Hello", "  two leading spaces", "\n\nnewline runs\n\n\n", "trailing spaces   ",
  "I'm sure they'll say we've done it, isn't it? I'D SAY SHE'S RIGHT.", "don’t (curly apostrophe)",
  "1234567890 12 123 1234 3.14159 -42 1e10 0x1F", "٣٤٥ ١٢٣ ４５６ ²³ Ⅻ ½",
  "日本語のテキストです。中文文本。한국어 텍스트", "Привет, мир! Γειά σου Κόσμε", "مرحبا بالعالم שלום עולם", "नमस्ते दुनिया ภาษาไทย",
  "emoji 🎉🎉 👩‍💻 🇫🇷 👍🏽 ❤️", "café naïve e\u0301 A\u030a", "tabs\tand\ttabs\t\t end", "mixed \r\n line\r\nendings\r",
  "func main() {\n\tfmt.Println(\"hi\")\n}\n", "for (let i = 0; i < n; i++) { x += a[i] * 2; }", "def f(x):\n    return x**2  # square\n",
  "https://example.com/path/to?q=1&x=two#frag", "user@example.org", "<|begin_of_text|>Hello<|eot_id|>", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
  "<|endoftext|> after eot", "text<|endoftext|>text", "a" + "b".repeat(300), "x".repeat(50) + " " + "y".repeat(50), "   ", "\n", " ", "'", "''s", "'S'T'RE",
];

const pieces = {
  words: ["the", "The", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "tokenizer", "inference", "GPU", "cluster", "Tandem", "hello", "WORLD", "naïve", "Straße", "über", "东京", "北京", "データ", "모델", "слово", "λόγος", "كلمة", "מילה"],
  contractions: ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'LL", "'D", "’s"],
  spaces: [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000", "\u2028", "\f", "\v"],
  numbers: ["0", "7", "42", "123", "1234", "12345678", "3.14", "1,000,000", "٣", "४२", "１２", "²", "Ⅷ", "½"],
  code: ["{", "}", "()", "[]", "=>", "->", "::", "==", "!=", "+=", "&&", "||", "/*", "*/", "//", "#include", "<div>", "</div>", "\"str\"", "`x`", "$var", "@decorator", "\\n"],
  emoji: ["🎉", "😀", "👩‍💻", "🇯🇵", "👍🏽", "✨", "🚀", "❤️", "🤖"],
  special: ["<|begin_of_text|>", "<|eot_id|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|reserved_special_token_3|>"],
  punct: [".", ",", "!", "?", ";", ":", "...", "—", "–", "«", "»", "“", "”", "(", ")", "-", "_", "%", "&"],
};
const kinds = Object.keys(pieces);

function corpus(n) {
  const r = rng(20240601);
  const pick = (a) => a[Math.floor(r() * a.length)];
  const out = [...fixed];
  while (out.length < n) {
    let s = "";
    const len = 1 + Math.floor(r() * 12);
    for (let i = 0; i < len; i++) {
      const kind = pick(kinds);
      if (kind === "special" && r() < 0.6) continue; // keep special tokens rarer
      s += pick(pieces[kind]);
      if (r() < 0.5) s += " ";
    }
    out.push(s);
  }
  return out;
}

const here = dirname(fileURLToPath(import.meta.url));
const texts = corpus(400);
for (const arg of process.argv.slice(2)) {
  const [name, file] = arg.split("=");
  const tok = new Tokenizer(JSON.parse(readFileSync(file, "utf8")), {});
  const rows = [];
  texts.forEach((text, i) => {
    const special = i % 5 === 0;
    rows.push({ text, special, ids: tok.encode(text, { add_special_tokens: special }).ids });
  });
  writeFileSync(join(here, `${name}.json`), JSON.stringify(rows, null, 0).replace(/\},\{/g, "},\n{") + "\n");
  console.log(`${name}: ${rows.length} rows`);
}
