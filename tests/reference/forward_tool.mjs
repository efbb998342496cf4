// Drives tests/reference/forward_tool.cc (the `forward-tool` binary) for the
// forward-pass parity suite.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";

// The tool's path; throws (the suite fails) when it is missing.
export function forwardToolPath() {
  const buildDir = process.env.TERN_BUILD_DIR;
  if (!buildDir) throw new Error("TERN_BUILD_DIR is not set (the CMake build directory)");
  const tool = path.join(buildDir, "tests", "forward-tool");
  if (!existsSync(tool)) throw new Error(`forward-tool not found at ${tool}; build it first`);
  return tool;
}

function runTool(args, input) {
  const result = spawnSync(forwardToolPath(), args, {
    input,
    maxBuffer: 1 << 30,
    encoding: "utf8",
  });
  if (result.error) throw result.error;
  if (result.status !== 0) {
    throw new Error(`forward-tool ${args[0]} failed (${result.status}): ${result.stderr}`);
  }
  return result.stdout;
}

// Writes a synthetic checkpoint (safetensors + model.gguf) into outDir.
export function synthesize({ preset, seed, outDir, tokenizerDir, chatTemplate, ggufF32 }) {
  const args = ["synth", "--preset", preset, "--seed", String(seed), "--out", outDir,
    "--tokenizer-dir", tokenizerDir];
  if (chatTemplate) args.push("--chat-template", chatTemplate);
  if (ggufF32) args.push("--gguf-f32");
  runTool(args, "");
}

// For each prompt (a list of token ids): our logits after its last token,
// nPredict greedy tokens and the top1-top2 margin at each greedy step.
// With `forced` (one id list per prompt), each continuation appends those
// tokens instead of its own picks and reports our argmax after each prefix.
export function runPrompts(modelDir, prompts, nPredict, forced) {
  const input = prompts.map((tokens, i) => JSON.stringify(
    forced ? { tokens, forced: forced[i] } : { tokens, n_predict: nPredict })).join("\n");
  const lines = runTool(["run", modelDir], input + "\n").trim().split("\n");
  return lines.map((line) => {
    const out = JSON.parse(line);
    if (out.error) throw new Error(`forward-tool run: ${out.error}`);
    return out;
  });
}
