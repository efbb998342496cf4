// Router acceptance, end to end over REST: three workers on a tiny synthetic
// checkpoint behind one router and one gateway, each started here as its own
// process so single workers can be killed or frozen (`tern up` stops the
// whole cluster when one of its children exits).
//  - kill -9 of a worker during 30 concurrent seeded streams: none fails and
//    every text equals the undisturbed run's (resume on another worker);
//  - SIGSTOP of a worker: the router marks it unhealthy within 5 s and its
//    streams finish elsewhere, identical to an undisturbed run;
//  - overload beyond the queue: fast 429/503 answers with Retry-After, and
//    every admitted request completes.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, describe, test } from "node:test";

import {
  binary,
  fetchMetricsText,
  freePort,
  readCompletionStream,
  removeDir,
  synthModel,
  tempDir,
} from "../lib/tern.mjs";

const MAX_NUM_SEQS = 8;
const MAX_QUEUE = 4;
let dir;
let modelDir;
const procs = [];
let workers = [];
let gatewayURL;
let routerMetricsURL;

class Proc {
  constructor(name, args) {
    this.name = name;
    this.logs = [];
    this.child = spawn(binary(name), args, { stdio: ["ignore", "ignore", "pipe"] });
    this.child.stderr.on("data", (chunk) => {
      this.logs.push(chunk.toString());
      if (this.logs.length > 400) this.logs.shift();
    });
    this.exited = new Promise((resolve) => this.child.on("exit", resolve));
    procs.push(this);
  }
  signal(sig) {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(sig);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitUntil(what, limitMs, check) {
  const end = Date.now() + limitMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not up yet
    }
    if (Date.now() > end) throw new Error(`${what} not reached in ${limitMs} ms:\n${allLogs()}`);
    await sleep(50);
  }
}

function allLogs() {
  return procs.map((p) => `--- ${p.name}\n${p.logs.slice(-30).join("")}`).join("\n");
}

// Healthy flag per worker address, from the router's /metrics.
async function routerHealth() {
  const text = await fetchMetricsText(routerMetricsURL);
  const health = {};
  for (const line of text.split("\n")) {
    const m = line.match(/^tern_router_worker_healthy\{[^}]*worker="([^"]+)"[^}]*\} (\S+)/);
    if (m) health[m[1]] = Number(m[2]);
  }
  return health;
}

before(async () => {
  dir = tempDir("tern-e2e-router-");
  modelDir = synthModel("tiny", `${dir}/tiny`);
  for (let i = 0; i < 3; i++) {
    const address = `127.0.0.1:${await freePort()}`;
    const proc = new Proc("tern-worker", [
      "--model", modelDir, "--listen", address, "--max-num-seqs", String(MAX_NUM_SEQS),
      "--tp", "1", "--kv-cache-gib", "0.25", "--log-level", "warning",
    ]);
    workers.push({ address, proc });
  }
  const routerAddress = `127.0.0.1:${await freePort()}`;
  routerMetricsURL = `http://127.0.0.1:${await freePort()}/metrics`;
  new Proc("tern-router", [
    "--listen", routerAddress, "--workers", workers.map((w) => w.address).join(","),
    "--health-interval-ms", "300", "--max-queue", String(MAX_QUEUE),
    "--metrics-listen", routerMetricsURL.slice("http://".length, -"/metrics".length),
    "--log-level", process.env.TERN_E2E_ROUTER_LOG ?? "warning",
  ]);
  await waitUntil("three healthy workers", 120_000, async () => {
    const health = await routerHealth();
    return workers.every((w) => health[w.address] === 1);
  });
  const gatewayPort = await freePort();
  gatewayURL = `http://127.0.0.1:${gatewayPort}/v1`;
  new Proc("tern-gateway", [
    "--listen", `127.0.0.1:${gatewayPort}`, "--router", routerAddress, "--model", modelDir,
    "--served-model-name", "tiny", "--log-level", "warning",
  ]);
  // /health answers 200 once the router lists the model with a ready worker.
  await waitUntil("gateway ready", 30_000, async () => (await fetch(`http://127.0.0.1:${gatewayPort}/health`)).ok);
});

after(async () => {
  for (const p of procs) {
    p.signal("SIGCONT");
    p.signal("SIGTERM");
  }
  const timer = setTimeout(() => procs.forEach((p) => p.signal("SIGKILL")), 10_000);
  await Promise.all(procs.map((p) => p.exited));
  clearTimeout(timer);
  if (dir) removeDir(dir);
});

// One streamed completion; resolves with its text, HTTP status and error, if any.
async function streamCompletion(i, maxTokens, onChunk = () => {}) {
  const response = await fetch(`${gatewayURL}/completions`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      model: "tiny",
      prompt: `Request number ${i}: tell me a story about rivers and mountains.`,
      max_tokens: maxTokens,
      temperature: 1.0,
      seed: 1000 + i,
      stream: true,
    }),
  });
  if (!response.ok) return { status: response.status, text: "", error: await response.text() };
  const { text, error } = await readCompletionStream(response, onChunk);
  return { status: response.status, text, error };
}

function assertAllIdentical(results, reference, what) {
  const failed = results.filter((r) => r.status !== 200 || r.error);
  assert.equal(failed.length, 0, `${what}: failed requests: ${JSON.stringify(failed.slice(0, 3))}`);
  for (let i = 0; i < results.length; i++) {
    assert.equal(results[i].text, reference[i].text, `${what}: text ${i} differs`);
  }
}

describe("router failover and admission", { timeout: 120_000 }, () => {
  test("kill -9 of one of three workers during 30 seeded streams: no failure, identical texts", async () => {
    const N = 30;
    const ids = [...Array(N).keys()];
    const reference = await Promise.all(ids.map((i) => streamCompletion(i, 48)));
    const bad = reference.filter((r) => r.status !== 200 || r.error || r.text.length === 0);
    assert.equal(bad.length, 0, `undisturbed run failed: ${JSON.stringify(bad.slice(0, 2))}\n${allLogs()}`);

    let chunks = 0;
    const running = Promise.all(ids.map((i) => streamCompletion(i, 48, () => chunks++)));
    await waitUntil("streams under way", 30_000, () => chunks >= 3 * N);
    workers[0].proc.signal("SIGKILL");
    const results = await running;
    assertAllIdentical(results, reference, "after kill -9");
  });

  test("SIGSTOP: the worker is unhealthy within 5 s and its streams resume elsewhere", async () => {
    const ids = [...Array(12).keys()].map((i) => 100 + i);
    const reference = await Promise.all(ids.map((i) => streamCompletion(i, 64)));
    let chunks = 0;
    const running = Promise.all(ids.map((i) => streamCompletion(i, 64, () => chunks++)));
    await waitUntil("streams under way", 30_000, () => chunks >= 2 * ids.length);
    const frozen = workers[1];
    frozen.proc.signal("SIGSTOP");
    const stoppedAt = Date.now();
    try {
      await waitUntil("frozen worker unhealthy", 5_000, async () => {
        const health = await routerHealth();
        return health[frozen.address] === 0;
      });
      assert.ok(Date.now() - stoppedAt <= 5_000);
      const results = await running;
      assertAllIdentical(results, reference, "after SIGSTOP");
    } finally {
      frozen.proc.signal("SIGCONT");
    }
  });

  test("overload beyond the queue answers 429/503 with Retry-After fast; admitted requests complete", async () => {
    // Wait for the thawed worker, so capacity is two workers' slots plus the queue.
    await waitUntil("thawed worker healthy", 10_000, async () => {
      const health = await routerHealth();
      return health[workers[1].address] === 1;
    });
    const N = 60;
    const send = async (i) => {
      const start = Date.now();
      const response = await fetch(`${gatewayURL}/completions`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ model: "tiny", prompt: `Overload ${i}`, max_tokens: 32, ignore_eos: true }),
      });
      const body = await response.json();
      return { status: response.status, ms: Date.now() - start, retryAfter: response.headers.get("retry-after"), body };
    };
    const results = await Promise.all([...Array(N).keys()].map(send));
    const rejected = results.filter((r) => r.status === 429 || r.status === 503);
    const admitted = results.filter((r) => r.status === 200);
    assert.equal(rejected.length + admitted.length, N, JSON.stringify(results.find((r) => ![200, 429, 503].includes(r.status))));
    assert.ok(rejected.length > 0, "some requests must be turned away");
    assert.ok(admitted.length >= 2 * (MAX_NUM_SEQS + 2), `admitted ${admitted.length}`);
    for (const r of rejected) {
      assert.ok(Number(r.retryAfter) >= 1, "Retry-After on every rejection");
      assert.ok(r.ms < 2_000, `rejection took ${r.ms} ms`);
    }
    for (const r of admitted) assert.equal(r.body.usage.completion_tokens, 32);
  });
});
