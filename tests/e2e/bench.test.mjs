// `tern bench engine --quick` on the tiny preset: a bounded smoke run of the
// whole command (machine probes, the tern engine, llama.cpp through
// node-llama-cpp on the GGUF `tern model synth` wrote) that checks every
// figure, the ratio column and the targets are printed.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import path from "node:path";
import { binary, llamaCppScript, synthModel, tempDir } from "../lib/tern.mjs";

const workDir = tempDir("tern-bench-");
after(() => rmSync(workDir, { recursive: true, force: true }));

// The figure names and "n/a" or a number in the tern / llama.cpp / ratio columns.
const row = (name) => new RegExp(`^${name} \\([^)]*\\)\\s*\\| ([0-9.e+-]+|n/a)\\s*\\| ([0-9.e+-]+|n/a)\\s*\\| ([0-9.]+x|n/a)`, "m");

test("tern bench engine --quick prints every figure against llama.cpp", () => {
  const model = synthModel("tiny", path.join(workDir, "tiny"));
  const args = ["bench", "engine", "--model", model, "--quick", "--threads", "1", "--llama-cpp-script", llamaCppScript];
  const out = spawnSync(binary("tern"), args, {
    encoding: "utf8",
    timeout: 240_000,
  });
  const text = `${out.stdout}\n${out.stderr}`;
  assert.equal(out.status, 0, text);
  for (const phase of ["phase 1/3: machine probes", "phase 2/3: tern engine", "phase 3/3: llama.cpp"]) {
    assert.ok(out.stdout.includes(phase), `missing "${phase}":\n${text}`);
  }
  assert.match(out.stdout, /machine: DRAM read [0-9.]+ GB\/s, FP32 FMA peak [0-9.]+ GFLOP\/s/);
  // Which kernels tern ran with (TERN_KERNELS can change them), in the
  // opening line and the results' heading.
  assert.match(out.stdout, /threads on CPUs \S+, (scalar|avx2|avx512|avx512bf16) kernels/, text);
  assert.match(out.stdout, /results: tern tp \d+ \((scalar|avx2|avx512|avx512bf16) kernels\) vs /, text);
  assert.match(out.stdout, /llama\.cpp build: llama\.cpp \S+ \(ggml-org\/llama\.cpp\)/, text);
  assert.match(out.stdout, /^figure\s*\| tern\s*\| llama\.cpp\s*\| ratio\s*\| roofline/m);

  // Figures both sides measure: numbers on both and a ratio.
  for (const name of ["prefill 128", "decode batch 1", "decode batch 8", "decode batch 32"]) {
    const m = out.stdout.match(row(name));
    assert.ok(m, `no row "${name}":\n${text}`);
    assert.ok(Number(m[1]) > 0, `${name}: tern ${m[1]}`);
    assert.ok(Number(m[2]) > 0, `${name}: llama.cpp ${m[2]}`);
    assert.match(m[3], /^[0-9.]+x$/, `${name}: ratio ${m[3]}`);
  }
  // tern-only figures.
  for (const name of ["TTFT 128 cold", "TTFT 128 prefix-cached", "peak RSS"]) {
    const m = out.stdout.match(row(name));
    assert.ok(m, `no row "${name}":\n${text}`);
    assert.ok(Number(m[1]) > 0, `${name}: tern ${m[1]}`);
  }
  // The second submission reuses at least every full block but the last.
  const cached = out.stdout.match(/TTFT 128 prefix-cached.*\| (\d+) tokens cached/);
  assert.ok(cached && Number(cached[1]) >= 112 && Number(cached[1]) < 128, text);

  // One verdict per target, none left unmeasured.
  const targets = out.stdout.split("[tern bench] targets:")[1] ?? "";
  const verdicts = targets.split("\n").filter((l) => /^(met|NOT met|n\/a)\s/.test(l));
  assert.equal(verdicts.length, 8, targets);
  assert.ok(verdicts.every((l) => !l.startsWith("n/a")), targets);
});

// --repeat and --interference: every figure measured twice clean and twice
// under the bench's own background thread, on both sides, with the spread
// and the loss tables filled in.
test("tern bench engine --repeat 2 --interference reports spread and loss on both sides", () => {
  const model = path.join(workDir, "tiny");
  if (!existsSync(model)) synthModel("tiny", model);
  const args = ["bench", "engine", "--model", model, "--quick", "--threads", "2", "--repeat", "2",
    "--interference", "--prefill", "128", "--batches", "1", "--llama-cpp-script", llamaCppScript];
  const out = spawnSync(binary("tern"), args, { encoding: "utf8", timeout: 420_000 });
  const text = `${out.stdout}\n${out.stderr}`;
  assert.equal(out.status, 0, text);
  for (const line of ["run 2/2 with a background load", "llama.cpp: run 2/2 with a background load"]) {
    assert.ok(out.stdout.includes(line), `missing "${line}":\n${text}`);
  }
  const spread = out.stdout.split("[tern bench] spread over 2 runs")[1]?.split("[tern bench] interference")[0] ?? "";
  const loss = out.stdout.split("[tern bench] interference:")[1] ?? "";
  const range = "[0-9.e+-]+\\.\\.[0-9.e+-]+ \\([0-9.]+%\\)";
  const num = "[0-9.e+-]+";
  const pct = "-?[0-9.]+%";
  for (const name of ["prefill 128 \\(tok/s\\)", "decode batch 1 \\(tok/s\\)"]) {
    assert.match(spread, new RegExp(`^${name}\\s*\\| ${num}\\s*\\| ${range}\\s*\\| ${num}\\s*\\| ${range}`, "m"), text);
    assert.match(loss, new RegExp(`^${name}\\s*\\| ${num}\\s*\\| ${num}\\s*\\| ${pct}\\s*\\| ${num}\\s*\\| ${num}\\s*\\| ${pct}\\s*\\| (met|NOT met)$`, "m"), text);
  }
  // Only the figures --batches asked for.
  assert.ok(!/^decode batch (8|32)/m.test(out.stdout), text);
});

test("tern bench engine rejects a bad --repeat or --batches", () => {
  const model = path.join(workDir, "tiny");
  if (!existsSync(model)) synthModel("tiny", model);
  for (const bad of [["--repeat", "0"], ["--batches", "1,x"], ["--prefill", ""]]) {
    const out = spawnSync(binary("tern"), ["bench", "engine", "--model", model, "--no-llama-cpp", ...bad],
      { encoding: "utf8", timeout: 60_000 });
    assert.equal(out.status, 2, `${bad.join(" ")}:\n${out.stdout}\n${out.stderr}`);
  }
});
