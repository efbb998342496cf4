// `tern bench serve` end to end: a two-worker cluster of the tiny synthetic
// checkpoint on 127.0.0.1, a short shared-prefix run per policy, and the
// report checked against what was asked (request and token counts, the
// metric table, no failures).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, before, test } from "node:test";

import { Cluster, binary, removeDir, synthModel, tempDir } from "../lib/tern.mjs";

// The subcommand is looked for in the built binary, so the suite says why it
// does not run rather than failing on a `tern` built without it.
const probe = spawnSync(binary("tern"), ["bench", "serve", "--help"], { encoding: "utf8", timeout: 30_000 });
const missing = probe.status !== 0 || !probe.stdout.includes("tern bench serve")
  ? "this tern binary has no `bench serve` subcommand"
  : false;

let dir;
let model;
let cluster;

before(async () => {
  if (missing) return;
  dir = tempDir("tern-bench-serve-");
  model = synthModel("tiny", `${dir}/tern-bench-tiny`);
  cluster = await Cluster.start({ model, workers: 2 });
});

after(async () => {
  if (cluster) {
    const code = await cluster.stop();
    assert.equal(code, 0, `tern up should exit cleanly on SIGINT:\n${cluster.logs.join("")}`);
  }
  if (dir) removeDir(dir);
});

test("bench serve reports the metric table with no failures", { skip: missing }, () => {
  const groups = 2;
  const users = 3;
  const prefixLen = 128;
  const questionLen = 16;
  const outputLen = 8;
  const out = spawnSync(binary("tern"), [
    "bench", "serve", "--url", `http://127.0.0.1:${cluster.port}`, "--model", "tern-bench-tiny",
    "--dataset", "shared-prefix", "--groups", String(groups), "--users", String(users),
    "--prefix-len", String(prefixLen), "--question-len", String(questionLen),
    "--output-len", String(outputLen), "--concurrency", "3", "--policies", "prefix,round-robin",
    "--request-timeout", "60", "--timeout", "120", "--no-progress", "--tokenizer", model,
  ], { encoding: "utf8", timeout: 180_000 });
  const report = `${out.stdout}\n${out.stderr}`;
  assert.equal(out.status, 0, report);
  assert.match(out.stdout, /policy via x-tern-routing-policy/);
  const row = (name) => {
    const line = out.stdout.split("\n").find((l) => l.startsWith(name));
    assert.ok(line, `no "${name}" row in:\n${report}`);
    return line.slice(name.length).trim().split(/\s+/);
  };
  const header = out.stdout.split("\n").find((l) => /^\s+prefix\s+round-robin\s*$/.test(l));
  assert.ok(header, `no column header "prefix round-robin" in:\n${report}`);
  const requests = groups * users;
  assert.deepEqual(row("Successful requests"), [String(requests), String(requests)]);
  assert.deepEqual(row("Failed requests"), ["0", "0"]);
  // Completions prompts are encoded with BOS: prefix + question + 1 tokens each.
  const input = requests * (prefixLen + questionLen + 1);
  assert.deepEqual(row("Total input tokens"), [String(input), String(input)]);
  assert.deepEqual(row("Total generated tokens"), [String(requests * outputLen), String(requests * outputLen)]);
  for (const metric of ["TTFT", "TPOT", "ITL", "E2E latency"]) {
    for (const stat of ["Mean", "Median", "P90", "P99"]) {
      for (const cell of row(`${stat} ${metric} (ms)`)) assert.ok(Number(cell) >= 0, report);
    }
  }
  // Later users of a group reuse its prefix: some prompt tokens are cached.
  for (const cell of row("Prefix hit rate (cached/prompt)")) assert.ok(parseFloat(cell) > 0, report);
  assert.ok(!/Errors \[/.test(out.stdout), report);
});

// Engine-relative figures: the cluster's API against the same checkpoint in
// process, and a second OpenAI server (here the same gateway under another
// name) side by side, with the ratio the serving path must keep.
test("bench serve --engine-model reports the API as a share of the in-process engine", { skip: missing }, () => {
  const out = spawnSync(binary("tern"), [
    "bench", "serve", "--url", `http://127.0.0.1:${cluster.port}`, "--model", "tern-bench-tiny",
    "--engine-model", model, "--engine-threads", "1", "--compare-url", `http://127.0.0.1:${cluster.port}`,
    "--compare-label", "second", "--quick", "--rounds", "2", "--tokenizer", model,
  ], { encoding: "utf8", timeout: 180_000 });
  const report = `${out.stdout}\n${out.stderr}`;
  assert.equal(out.status, 0, report);
  assert.match(out.stdout, /^figure\s*\| in-process\s*\| API\s*\| API \/ in-process\s*\| second\s*\| second \/ in-process$/m, report);
  const value = "[0-9.e+-]+ \\([0-9.e+-]+\\.\\.[0-9.e+-]+\\)";
  for (const name of ["decode batch 1 \\(tok/s\\)", "prefill 128 \\(tok/s\\)"]) {
    const m = out.stdout.match(new RegExp(`^${name}\\s*\\| (${value})\\s*\\| (${value})\\s*\\| ([0-9.]+)%\\s*\\| (${value})\\s*\\| ([0-9.]+)%$`, "m"));
    assert.ok(m, `no "${name}" row:\n${report}`);
    assert.ok(parseFloat(m[1]) > 0 && parseFloat(m[2]) > 0 && Number(m[3]) > 0, report);
  }
  assert.match(out.stdout, /^(met|NOT met)\s+API decode batch 1 >= 95% of in-process: [0-9.]+%$/m, report);
  assert.match(out.stdout, /round 2\/2 in-process: decode/, report);
});

test("bench serve --compare-url alone compares the second server with the first", { skip: missing }, () => {
  const out = spawnSync(binary("tern"), [
    "bench", "serve", "--url", `http://127.0.0.1:${cluster.port}`, "--model", "tern-bench-tiny",
    "--compare-url", `http://127.0.0.1:${cluster.port}`, "--quick", "--tokenizer", model,
  ], { encoding: "utf8", timeout: 120_000 });
  const report = `${out.stdout}\n${out.stderr}`;
  assert.equal(out.status, 0, report);
  assert.match(out.stdout, /^figure\s*\| API\s*\| compare\s*\| compare \/ API$/m, report);
  assert.ok(!out.stdout.includes("in-process"), report);
});

test("bench serve fails when the compared server does not answer", { skip: missing }, () => {
  const out = spawnSync(binary("tern"), [
    "bench", "serve", "--url", `http://127.0.0.1:${cluster.port}`, "--model", "tern-bench-tiny",
    "--compare-url", "http://127.0.0.1:1", "--quick", "--request-timeout", "5", "--tokenizer", model,
  ], { encoding: "utf8", timeout: 60_000 });
  assert.equal(out.status, 1, `${out.stdout}\n${out.stderr}`);
  assert.match(out.stderr, /compare: the request failed/);
});
