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
// The lm_head: ours runs with the worker's default (--lm-head auto), which
// quantizes an 8-bit model's bf16 lm_head to int8 rows at load; the GGUF
// holds those very rows as output.weight (Q8_0 in the int8 files, where
// llama.cpp also rounds the final hidden state to 8 bits before it;
// dequantized F32 in the FP8 files, so the FP8 tolerance stays tight).
// Prompts: 8 (random ids of several lengths, plain and chat-format text);
// the checks are those of forward.test.mjs: logits after the prompt, 32
// free-running greedy tokens identical up to llama.cpp's first near-tie, and
// teacher-forced argmax at every step clear of a near-tie (at least 90%).
// Ours runs with tp 1 and with tp 2 over 16 batched sequences (row shards
// carry their scales; o_proj / down_proj column shards keep every row's).
import { test, after } from "node:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { spawnSync } from "node:child_process";
import { checkRun, llamaReference, makePrompts } from "./forward_parity.mjs";

const TESTS_DIR = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const TOKENIZER_DIR = path.join(TESTS_DIR, "node_modules", "@lenml", "tokenizer-llama3_1", "models");
const CHAT_TEMPLATE = path.join(path.dirname(TESTS_DIR), "deploy", "chat_templates",
  "llama-3.1-instruct.jinja");
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

const workDir = mkdtempSync(path.join(os.tmpdir(), "tern-forward-quant-"));
after(() => rmSync(workDir, { recursive: true, force: true }));
const PROMPTS = makePrompts(20241203, [1, 5, 17, 48, 120]);

for (const c of CASES) {
  test(`logits and greedy tokens match llama.cpp: ${c.preset}, ${c.what}`, async (t) => {
    const tol = TOLERANCES[c.dtype];
    const dir = path.join(workDir, `${c.preset}-${c.dtype}`);
    synthesize(c, dir);
    const llama = await llamaReference(path.join(dir, "model.gguf"), PROMPTS);
    for (const run of RUNS) checkRun(t, dir, run, tol, llama, PROMPTS);
  });
}
