// llama.cpp (through node-llama-cpp's prebuilt CPU binary) as the independent
// reference for the forward pass: token ids go in directly (no tokenization,
// no BOS insertion), raw logits come out.
import { getLlama } from "node-llama-cpp";

let llamaPromise = null;

// The prebuilt CPU backend only: never download or compile.
export function loadLlama() {
  llamaPromise ??= getLlama({ gpu: false, build: "never", logLevel: "error" });
  return llamaPromise;
}

// One model with a single-sequence context. Flash attention is off (its CPU
// kernel converts Q/K/V to f16) and the KV cache is f32, so the only
// rounding llama.cpp adds is the one its matmuls do for the weight type.
export async function openModel(ggufPath, contextSize) {
  const llama = await loadLlama();
  const model = await llama.loadModel({ modelPath: ggufPath, gpuLayers: 0 });
  const context = await model.createContext({
    contextSize,
    batchSize: contextSize,
    sequences: 1,
    // One thread: ggml's worker threads spin-wait, which on a shared,
    // loaded machine makes each decode step 10x slower.
    threads: 1,
    flashAttention: false,
    experimentalKvCacheKeyType: "F32",
    experimentalKvCacheValueType: "F32",
  });
  const sequence = context.getSequence();
  return {
    sequence,
    async dispose() {
      await context.dispose();
      await model.dispose();
    },
  };
}

// Evaluates `tokens` on a fresh history; returns the full logits (a
// Float64Array over the vocabulary) after the last token.
export async function promptLogits(handle, tokens, vocabSize) {
  await handle.sequence.clearHistory();
  const items = tokens.map((t, i) =>
    i === tokens.length - 1 ? [t, { generateNext: { logits: true } }] : t);
  const results = await handle.sequence.controlledEvaluate(items);
  const logits = results[tokens.length - 1]?.next?.logits;
  if (!logits) throw new Error("llama.cpp returned no logits");
  const out = new Float64Array(vocabSize).fill(Number.NaN);
  for (const [token, value] of logits) out[token] = value;
  return out;
}

// Appends one token and returns llama.cpp's two best next tokens as
// [[id, logit], [id, logit]], highest first.
export async function stepTop2(handle, token) {
  const results = await handle.sequence.controlledEvaluate([
    [token, { generateNext: { logits: { filter: { tokens: [], includeTop: 2 } } } }],
  ]);
  const logits = results[0]?.next?.logits;
  if (!logits || logits.size < 2) throw new Error("llama.cpp returned no top-2 logits");
  return [...logits.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, 2);
}

// The two best [id, logit] pairs of a full logits array (lowest id on ties).
export function top2(logits) {
  let first = [-1, -Infinity];
  let second = [-1, -Infinity];
  for (let i = 0; i < logits.length; ++i) {
    const v = logits[i];
    if (v > first[1]) {
      second = first;
      first = [i, v];
    } else if (v > second[1]) {
      second = [i, v];
    }
  }
  return [first, second];
}
