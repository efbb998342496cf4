// llama.cpp's figures for `tern bench engine`, measured through
// node-llama-cpp's prebuilt CPU binary on the GGUF that holds the same weights:
// prefill tokens/s (time to the first token of a fresh prompt) and steady-state
// greedy decode tokens/s at several batch sizes (one context sequence per
// stream, all of a step's tokens evaluated in one llama.cpp batch).
//
// usage: node llama_cpp_engine.mjs --model X.gguf --threads N
//          [--prefill 512,2048] [--batches 1,8,32] [--decode-prompt 16] [--decode-steps 24]
// Progress goes to stderr; the result is one JSON line on stdout:
//   {"llama_cpp": {...build info...}, "threads": N,
//    "prefill": {"512": tok/s, ...}, "decode": {"1": tok/s, ...}}
// A batch size llama.cpp could not run is reported as null with a reason in
// "errors".
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { parseArgs } from "node:util";
import { getLlama } from "node-llama-cpp";

const { values: args } = parseArgs({
  options: {
    model: { type: "string" },
    threads: { type: "string" },
    prefill: { type: "string", default: "512,2048" },
    batches: { type: "string", default: "1,8,32" },
    "decode-prompt": { type: "string", default: "16" },
    "decode-steps": { type: "string", default: "24" },
  },
});
if (!args.model || !args.threads) {
  process.stderr.write("usage: llama_cpp_engine.mjs --model X.gguf --threads N [...]\n");
  process.exit(2);
}
const threads = Number(args.threads);
const prefillLengths = args.prefill ? args.prefill.split(",").filter(Boolean).map(Number) : [];
const batches = args.batches ? args.batches.split(",").filter(Boolean).map(Number) : [];
const decodePrompt = Number(args["decode-prompt"]);
const decodeSteps = Number(args["decode-steps"]);

const say = (line) => process.stderr.write(`[llama.cpp] ${line}\n`);

// Deterministic prompts (mulberry32), distinct for every use so no result
// depends on what an earlier evaluation left in the KV cache.
let state = 20250101;
function randomIds(n) {
  const ids = [];
  for (let i = 0; i < n; ++i) {
    state = (state + 0x6d2b79f5) | 0;
    let r = Math.imul(state ^ (state >>> 15), 1 | state);
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
    ids.push(1000 + Math.floor((((r ^ (r >>> 14)) >>> 0) / 4294967296) * 100000));
  }
  return ids;
}

const greedy = { generateNext: { token: true, options: { temperature: 0 } } };
const withNext = (tokens) => tokens.map((t, i) => (i === tokens.length - 1 ? [t, greedy] : t));
const seconds = (start) => Number(process.hrtime.bigint() - start) / 1e9;

function nodeLlamaCppVersion() {
  const require = createRequire(import.meta.url);
  const main = require.resolve("node-llama-cpp");
  let dir = path.dirname(main);
  for (let i = 0; i < 4; ++i, dir = path.dirname(dir)) {
    try {
      return JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")).version;
    } catch {
      // not this level
    }
  }
  return "unknown";
}

const llama = await getLlama({ gpu: false, build: "never", logLevel: "error", maxThreads: threads });
const release = llama.llamaCppRelease;
const info = {
  repo: release.repo,
  release: release.release,
  build_type: llama.buildType,
  node_llama_cpp: nodeLlamaCppVersion(),
  system_info: llama.systemInfo,
};
say(`llama.cpp ${info.release} (${info.repo}), ${info.build_type} binary, ` +
  `node-llama-cpp ${info.node_llama_cpp}, ${threads} threads`);
const model = await llama.loadModel({ modelPath: args.model, gpuLayers: 0 });
const contextThreads = { ideal: threads, min: threads };
const result = { llama_cpp: info, threads, prefill: {}, decode: {}, errors: {} };

if (prefillLengths.length > 0) {
  const longest = Math.max(...prefillLengths);
  const context = await model.createContext({
    contextSize: longest + 16, batchSize: longest, sequences: 1, threads: contextThreads,
  });
  const sequence = context.getSequence();
  // Warm-up: pages the mmapped weights in.
  await sequence.controlledEvaluate(withNext(randomIds(16)));
  for (const n of prefillLengths) {
    await sequence.clearHistory();
    const prompt = randomIds(n);
    const start = process.hrtime.bigint();
    const out = await sequence.controlledEvaluate(withNext(prompt));
    const elapsed = seconds(start);
    if (out[n - 1]?.next?.token == null) throw new Error("llama.cpp produced no token");
    result.prefill[String(n)] = n / elapsed;
    say(`prefill ${n} tokens: ${elapsed.toFixed(3)} s to the first token, ` +
      `${(n / elapsed).toFixed(1)} tok/s`);
  }
  await context.dispose();
}

for (const batch of batches) {
  let context = null;
  try {
    context = await model.createContext({
      contextSize: decodePrompt + decodeSteps + 16,
      batchSize: Math.max(batch * decodePrompt, batch),
      sequences: batch,
      threads: contextThreads,
    });
    const sequences = Array.from({ length: batch }, () => context.getSequence());
    // Prefill every stream (queued together: llama.cpp batches them).
    const first = await Promise.all(sequences.map((s) => s.controlledEvaluate(
      withNext(randomIds(decodePrompt)))));
    let next = first.map((out) => out[decodePrompt - 1].next.token);
    const start = process.hrtime.bigint();
    for (let step = 0; step < decodeSteps; ++step) {
      const stepStart = process.hrtime.bigint();
      const outs = await Promise.all(sequences.map((s, i) => s.controlledEvaluate([[next[i], greedy]])));
      next = outs.map((out) => out[0].next.token);
      if ((step + 1) % 8 === 0 || step + 1 === decodeSteps) {
        say(`decode batch ${batch}: step ${step + 1}/${decodeSteps}, ` +
          `${(seconds(stepStart) * 1000).toFixed(1)} ms/step`);
      }
    }
    const elapsed = seconds(start);
    result.decode[String(batch)] = (batch * decodeSteps) / elapsed;
    say(`decode batch ${batch}: ${(batch * decodeSteps / elapsed).toFixed(1)} tok/s`);
  } catch (error) {
    result.decode[String(batch)] = null;
    result.errors[`decode_${batch}`] = String(error?.message ?? error);
    say(`decode batch ${batch}: n/a (${result.errors[`decode_${batch}`]})`);
  } finally {
    await context?.dispose();
  }
}

await model.dispose();
process.stdout.write(`${JSON.stringify(result)}\n`);
