// The `vllm` engine kind, end to end: gateway -> router -> tern-worker
// --engine vllm -> the vLLM protocol test double (tests/vllm_double; vLLM
// itself cannot run here). Two clusters, each process started here so single
// ones can be killed:
//  - "vllm": two doubles (block 128) behind two vllm workers: shared-prefix
//    routing with the router's predicted cache hits equal to each double's
//    actual ones; events dropped on the PUB socket recovered by replay; a
//    double restart clearing its worker's index; a client disconnect
//    aborting the request in the double; kill -9 of a double mid-stream
//    resumed on the other one (greedy: identical text; sampled: no error).
//  - "mixed": a native worker (block 16) and a vllm worker (block 128)
//    behind one router, each request's hits predicted at its worker's own
//    block size.
//  - "launch": tern-worker --launch runs the servers tern.yaml's neuron
//    section plans (the double stands in for `vllm` on PATH), each with its
//    own NEURON_RT_VISIBLE_CORES, and starts one again after kill -9.
//  - `tern up --vllm` in front of a running double.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { after, before, describe, test } from "node:test";

import {
  Cluster,
  binary,
  fetchMetricsText,
  freePort,
  readCompletionStream,
  removeDir,
  synthModel,
  tempDir,
} from "../lib/tern.mjs";
import { VllmDouble, doubleScript, python } from "../lib/vllm_double.mjs";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const procs = [];
const doubles = [];
let dir;
let modelDir;
let modelFacts;

class Proc {
  constructor(name, args, env = {}) {
    this.name = name;
    this.logs = [];
    this.child = spawn(binary(name), args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
    const keep = (chunk) => {
      this.logs.push(chunk.toString());
      if (this.logs.length > 400) this.logs.shift();
    };
    this.child.stdout.on("data", keep);
    this.child.stderr.on("data", keep);
    this.exited = new Promise((resolve) => this.child.on("exit", resolve));
    procs.push(this);
  }
  signal(sig) {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(sig);
  }
}

function allLogs() {
  return [
    ...procs.map((p) => `--- ${p.name}\n${p.logs.slice(-30).join("")}`),
    ...doubles.map((d, i) => `--- double ${i}\n${d.logs.slice(-10).join("")}`),
  ].join("\n");
}

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

// Sample values of one router metric family by worker address.
async function byWorker(metricsURL, name) {
  const text = await fetchMetricsText(metricsURL);
  const out = {};
  for (const line of text.split("\n")) {
    const m = line.match(new RegExp(`^${name}\\{[^}]*worker="([^"]+)"[^}]*\\} (\\S+)`));
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

async function startDouble(options = {}) {
  const d = await VllmDouble.start({
    blockSize: 128,
    numBlocks: 256,
    maxNumSeqs: 8,
    maxModelLen: 4096,
    vocabSize: modelFacts.vocabSize,
    eosTokenIds: modelFacts.eos,
    stepMs: 10,
    servedModelName: "tiny",
    ...options,
  });
  doubles.push(d);
  return d;
}

function vllmSpec(d) {
  return `${d.baseURL},events=${d.eventsEndpoint},replay=${d.replayEndpoint}`;
}

async function startVllmWorker(d) {
  const address = `127.0.0.1:${await freePort()}`;
  const metrics = `127.0.0.1:${await freePort()}`;
  const proc = new Proc("tern-worker", [
    "--engine", "vllm", "--vllm", vllmSpec(d), "--model", modelDir, "--served-model-name", "tiny",
    "--listen", address, "--metrics-listen", metrics, "--max-num-seqs", "8", "--log-level", "info",
  ]);
  return { address, proc, double: d, metricsURL: `http://${metrics}/metrics` };
}

// One sample of a worker's /metrics (summed over label sets).
async function workerMetric(w, name) {
  const text = await fetchMetricsText(w.metricsURL);
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = line.match(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)`));
    if (m) sum += Number(m[2]);
  }
  return sum;
}

async function startNativeWorker() {
  const address = `127.0.0.1:${await freePort()}`;
  const proc = new Proc("tern-worker", [
    "--model", modelDir, "--served-model-name", "tiny", "--listen", address, "--max-num-seqs", "8",
    "--tp", "1", "--kv-cache-gib", "0.25", "--log-level", "warning",
  ]);
  return { address, proc };
}

// A router and a gateway over `workers`, ready when every worker is healthy.
async function startFront(workers) {
  const routerAddress = `127.0.0.1:${await freePort()}`;
  const metricsURL = `http://127.0.0.1:${await freePort()}/metrics`;
  new Proc("tern-router", [
    "--listen", routerAddress, "--workers", workers.map((w) => w.address).join(","),
    "--policy", "prefix", "--health-interval-ms", "300",
    "--metrics-listen", metricsURL.slice("http://".length, -"/metrics".length), "--log-level", "warning",
  ]);
  await waitUntil("healthy workers", 60_000, async () => {
    const health = await byWorker(metricsURL, "tern_router_worker_healthy");
    return workers.every((w) => health[w.address] === 1);
  });
  const gatewayPort = await freePort();
  new Proc("tern-gateway", [
    "--listen", `127.0.0.1:${gatewayPort}`, "--router", routerAddress, "--model", modelDir,
    "--served-model-name", "tiny", "--log-level", "warning",
  ]);
  await waitUntil("gateway ready", 30_000, async () => (await fetch(`http://127.0.0.1:${gatewayPort}/health`)).ok);
  return { metricsURL, url: `http://127.0.0.1:${gatewayPort}/v1` };
}

// A long text prefix of about `words` words, distinct per `tag`.
function prefixText(tag, words) {
  const vocabulary = ["river", "mountain", "lantern", "copper", "meadow", "harbor", "violet", "ember", "glacier", "orchard"];
  const out = [];
  for (let i = 0; i < words; i++) out.push(`${vocabulary[(i * 7 + tag.length) % vocabulary.length]}-${tag}-${i}`);
  return out.join(" ");
}

async function complete(url, body) {
  const response = await fetch(`${url}/completions`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model: "tiny", max_tokens: 4, temperature: 0, ...body }),
    signal: AbortSignal.timeout(60_000),
  });
  const json = await response.json();
  assert.equal(response.status, 200, JSON.stringify(json));
  return json;
}

// Streams one completion; `onChunk(count)` after each chunk.
async function stream(url, body, onChunk = () => {}, signal = undefined) {
  const response = await fetch(`${url}/completions`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model: "tiny", stream: true, ...body }),
    signal,
  });
  if (!response.ok) return { status: response.status, text: "", error: await response.text() };
  const { text, error } = await readCompletionStream(response, onChunk);
  return { status: response.status, text, error };
}

before(async () => {
  dir = tempDir("tern-e2e-vllm-");
  modelDir = synthModel("tiny", `${dir}/tiny`);
  const config = JSON.parse(readFileSync(`${modelDir}/config.json`, "utf8"));
  const generation = JSON.parse(readFileSync(`${modelDir}/generation_config.json`, "utf8"));
  const eos = generation.eos_token_id ?? config.eos_token_id;
  modelFacts = { vocabSize: config.vocab_size, eos: Array.isArray(eos) ? eos : [eos] };
});

after(async () => {
  for (const p of procs) p.signal("SIGTERM");
  const timer = setTimeout(() => procs.forEach((p) => p.signal("SIGKILL")), 10_000);
  await Promise.all(procs.map((p) => p.exited));
  clearTimeout(timer);
  await Promise.all(doubles.map((d) => d.kill("SIGKILL")));
  if (dir) removeDir(dir);
});

describe("tern in front of vLLM", { timeout: 240_000 }, () => {
  let workers;
  let front;

  before(async () => {
    const a = await startDouble();
    const b = await startDouble({ encoding: "array", hash: "bytes" });
    workers = [await startVllmWorker(a), await startVllmWorker(b)];
    front = await startFront(workers);
  });

  // Predicted (router) and actual (double) cached prompt tokens per worker.
  async function hitsPerWorker() {
    const predicted = await byWorker(front.metricsURL, "tern_router_worker_predicted_cached_tokens_total");
    const reported = await byWorker(front.metricsURL, "tern_router_worker_reported_cached_tokens_total");
    const routed = await byWorker(front.metricsURL, "tern_router_worker_routed_prompt_tokens_total");
    const rows = [];
    for (const w of workers) {
      const stats = await w.double.stats();
      rows.push({
        worker: w.address,
        routed: routed[w.address] ?? 0,
        predicted: predicted[w.address] ?? 0,
        reported: reported[w.address] ?? 0,
        actual: stats.prefix_hit_tokens,
        requests: stats.requests,
      });
    }
    return rows;
  }

  test("a shared prefix goes to the double that holds it; predicted hits = the double's, per worker", async () => {
    const before = await hitsPerWorker();
    // Two conversations' prefixes, each followed up five times.
    const groups = ["alpha", "beta"].map((tag) => prefixText(tag, 300));
    const served = [];
    // First sight of both prefixes at once: the router spreads them by load.
    await Promise.all(groups.map((p, g) => complete(front.url, { prompt: `${p} opening ${g}?` })));
    await sleep(200);
    for (let round = 0; round < 6; round++) {
      for (let g = 0; g < groups.length; g++) {
        const before = await Promise.all(workers.map((w) => w.double.stats()));
        await complete(front.url, { prompt: `${groups[g]} question ${round}?` });
        const after = await Promise.all(workers.map((w) => w.double.stats()));
        served.push({ g, round, worker: after.findIndex((s, i) => s.requests > before[i].requests) });
        await sleep(100); // the stored blocks' events reach the router
      }
    }
    for (let g = 0; g < groups.length; g++) {
      const where = new Set(served.filter((s) => s.g === g).map((s) => s.worker));
      assert.equal(where.size, 1, `group ${g} was served by ${[...where]}: ${JSON.stringify(served)}`);
    }
    const after = await hitsPerWorker();
    const delta = after.map((row, i) => ({
      worker: row.worker,
      routed: row.routed - before[i].routed,
      predicted: row.predicted - before[i].predicted,
      reported: row.reported - before[i].reported,
      actual: row.actual - before[i].actual,
    }));
    console.log(`# prefix routing per worker: ${JSON.stringify(delta)}`);
    for (const row of delta) {
      assert.equal(row.predicted, row.actual, `router's predicted hits vs the double's: ${JSON.stringify(delta)}`);
      assert.equal(row.reported, row.actual, JSON.stringify(delta));
    }
    const totalActual = delta.reduce((sum, row) => sum + row.actual, 0);
    // 12 follow-ups, each finding at least 8 blocks of its 300-word prefix.
    assert.ok(totalActual >= 12 * 8 * 128, `hits ${totalActual}: the follow-ups must hit their prefix`);
  });

  // A session key (OpenAI `user`) the router's affinity maps to worker `w`.
  async function userPinnedTo(w) {
    for (let i = 0; i < 40; i++) {
      const before = (await w.double.stats()).requests;
      await complete(front.url, { prompt: `probe ${i} ${prefixText(`probe${i}`, 10)}`, user: `session-${i}` });
      if ((await w.double.stats()).requests > before) return `session-${i}`;
    }
    throw new Error("no session key maps to the worker");
  }

  const cachedInRouter = async (w) =>
    (await byWorker(front.metricsURL, "tern_router_worker_cached_blocks"))[w.address];

  test("events dropped on the PUB socket come back by replay", async () => {
    const w = workers[0];
    const user = await userPinnedTo(w);
    await waitUntil("index in step", 5_000, async () => (await cachedInRouter(w)) === (await w.double.stats()).cached_blocks);
    await w.double.dropEvents(1);
    await complete(front.url, { prompt: `${prefixText("dropped", 300)} one`, user });
    // The next batch shows the gap; the worker replays the dropped one.
    await complete(front.url, { prompt: `${prefixText("after-drop", 300)} two`, user });
    const stats = await w.double.stats();
    assert.ok(stats.dropped_batches >= 1, JSON.stringify(stats));
    await waitUntil("dropped blocks recovered", 5_000, async () => (await cachedInRouter(w)) === (await w.double.stats()).cached_blocks);
    const replayed = await workerMetric(w, "tern_worker_vllm_kv_event_replayed_batches_total");
    assert.ok(replayed >= 1, "the worker counts the replayed batch");
    console.log(`# replay: ${stats.dropped_batches} batch(es) dropped on PUB, ${replayed} replayed; double holds ${(await w.double.stats()).cached_blocks} blocks, router's index ${await cachedInRouter(w)}`);
  });

  test("a double restart clears its worker's index", async () => {
    const w = workers[1];
    const user = await userPinnedTo(w);
    await complete(front.url, { prompt: `${prefixText("before-restart", 300)} zero`, user });
    await waitUntil("index in step", 5_000, async () => (await cachedInRouter(w)) === (await w.double.stats()).cached_blocks);
    const before = await cachedInRouter(w);
    await w.double.restart();
    // The worker reads /health every second: let it see the new process
    // before the router is asked (a check inside the restart shows it down).
    await sleep(1_500);
    await waitUntil("worker healthy again", 20_000, async () => (await byWorker(front.metricsURL, "tern_router_worker_healthy"))[w.address] === 1);
    // The new process's first batch may go out before the worker's SUB
    // socket has reconnected (ZMQ's slow joiner); the next one shows the
    // sequence back near 0, or the worker's idle check of the replay socket
    // finds the new process, and the worker replays it from 0.
    await complete(front.url, { prompt: `${prefixText("after-restart", 300)} one`, user });
    await complete(front.url, { prompt: `${prefixText("after-restart-2", 300)} two`, user });
    const fresh = await w.double.stats();
    assert.equal(fresh.requests, 2, `both requests reach the restarted double: ${JSON.stringify(fresh)}`);
    // Equal only if the old process's blocks left the index: the new one
    // holds none of them (its hash seed differs too).
    await waitUntil("index cleared and rebuilt", 5_000, async () => (await cachedInRouter(w)) === (await w.double.stats()).cached_blocks);
    const restarts = await workerMetric(w, "tern_worker_vllm_restarts_total");
    const lost = await workerMetric(w, "tern_worker_vllm_kv_event_lost_total");
    assert.ok(restarts >= 1, `the worker counts the restart (restarts ${restarts}, lost ${lost}):\n${w.proc.logs.join("")}`);
    console.log(`# restart: router's index ${before} blocks before, ${await cachedInRouter(w)} after (the double holds ${fresh.cached_blocks})`);
  });

  test("a client that goes away aborts the request in the double", async () => {
    const controller = new AbortController();
    let seen = 0;
    const running = stream(front.url, { prompt: "a long story please", max_tokens: 3000, temperature: 0 }, (n) => {
      seen = n;
    }, controller.signal).catch((e) => ({ aborted: e.name }));
    await waitUntil("tokens flowing", 10_000, async () => seen >= 5);
    const busy = await Promise.all(workers.map((w) => w.double.stats()));
    assert.equal(busy.reduce((s, x) => s + x.running, 0), 1, JSON.stringify(busy));
    const abortedBefore = busy.reduce((s, x) => s + x.aborted, 0);
    controller.abort();
    await running;
    await waitUntil("the double aborted it", 5_000, async () => {
      const now = await Promise.all(workers.map((w) => w.double.stats()));
      return now.reduce((s, x) => s + x.running, 0) === 0 && now.reduce((s, x) => s + x.aborted, 0) === abortedBefore + 1;
    });
  });

  test("kill -9 of a double mid-stream: greedy resumes with identical text, sampled without error", async () => {
    const greedy = { prompt: `${prefixText("resume", 40)} go on`, max_tokens: 120, temperature: 0 };
    const sampled = { prompt: `${prefixText("sampled", 40)} go on`, max_tokens: 120, temperature: 0.8, seed: 7 };
    const reference = await stream(front.url, greedy);
    assert.equal(reference.error, null, JSON.stringify(reference));
    let chunks = 0;
    const runs = [stream(front.url, greedy, () => chunks++), stream(front.url, sampled, () => chunks++)];
    await waitUntil("streams under way", 10_000, async () => chunks >= 20);
    const states = await Promise.all(workers.map((w) => w.double.stats()));
    const victim = states.findIndex((s) => s.running > 0);
    assert.ok(victim >= 0);
    await workers[victim].double.kill("SIGKILL");
    const [g, s] = await Promise.all(runs);
    assert.equal(g.error, null, `greedy: ${JSON.stringify(g)}\n${allLogs()}`);
    assert.equal(g.text, reference.text, "greedy text after resume");
    assert.equal(s.error, null, `sampled: ${JSON.stringify(s)}`);
    const resumes = await fetchMetricsText(front.metricsURL);
    const count = Number(resumes.match(/^tern_router_resumes_total (\S+)/m)?.[1] ?? 0);
    assert.ok(count >= 1, "the router resumed at least one stream");
    console.log(`# kill -9: ${count} resume(s); greedy identical (${g.text.length} chars), sampled finished`);
  });
});

describe("mixed fleet: native (block 16) and vllm (block 128) workers", { timeout: 240_000 }, () => {
  let workers;
  let front;

  before(async () => {
    const d = await startDouble();
    workers = [await startNativeWorker(), await startVllmWorker(d)];
    front = await startFront(workers);
  });

  test("each request's hits are predicted at its worker's block size", async () => {
    const prefixes = [...Array(16).keys()].map((i) => prefixText(`side${i}`, 120));
    // First sight of each prefix, all at once: more than one worker's
    // max_num_seqs + slack, so both workers get some.
    await Promise.all(prefixes.map((p, i) => complete(front.url, { prompt: `${p} first ${i}` })));
    await sleep(300);
    for (let round = 0; round < 2; round++) {
      for (const [i, p] of prefixes.entries()) {
        await complete(front.url, { prompt: `${p} again ${round} ${i}` });
        await sleep(50);
      }
    }
    const predicted = await byWorker(front.metricsURL, "tern_router_worker_predicted_cached_tokens_total");
    const reported = await byWorker(front.metricsURL, "tern_router_worker_reported_cached_tokens_total");
    const routed = await byWorker(front.metricsURL, "tern_router_worker_routed_prompt_tokens_total");
    const rows = workers.map((w) => ({
      worker: w.address,
      kind: w.double ? "vllm/128" : "native/16",
      routed: routed[w.address] ?? 0,
      predicted: predicted[w.address] ?? 0,
      reported: reported[w.address] ?? 0,
    }));
    console.log(`# mixed fleet: ${JSON.stringify(rows)}`);
    for (const row of rows) {
      assert.ok(row.routed > 0, `both workers serve: ${JSON.stringify(rows)}`);
      assert.ok(row.predicted > 0, `hits predicted on each: ${JSON.stringify(rows)}`);
      assert.equal(row.predicted, row.reported, `predicted vs reported: ${JSON.stringify(rows)}`);
    }
    assert.equal(rows[1].predicted % 128, 0, "vllm hits come in 128-token blocks");
    assert.equal(rows[0].predicted % 16, 0);
  });
});

describe("tern-worker --launch runs and supervises the planned servers", { timeout: 240_000 }, () => {
  let front;
  let worker;
  let ports;

  before(async () => {
    // `vllm` on PATH is the test double, taking `vllm serve` arguments.
    const bin = `${dir}/bin`;
    const shim = `${bin}/vllm`;
    mkdirSync(bin, { recursive: true });
    writeFileSync(shim, `#!/bin/sh\nexec ${python} ${doubleScript} "$@"\n`);
    chmodSync(shim, 0o755);
    // Server i and engine i take base + i: each base has its neighbour free too.
    ports = { http: await freePortPair(), events: await freePortPair(), replay: await freePortPair(), grpc: await freePortPair() };
    const config = `${dir}/trn2-test.yaml`;
    writeFileSync(config, [
      "model:", `  path: ${modelDir}`, "  served_name: tiny", "  max_model_len: 4096",
      "neuron:", "  lnc: 2", "  tp: 32", "  servers: 2", "  max_num_seqs: 8", "  block_size: 128",
      "  prefill_buckets: [1024]", "  fp8: false", `  port: ${ports.http}`,
      `  kv_events_port: ${ports.events}`, `  kv_replay_port: ${ports.replay}`, `  cache_root: ${dir}/cache`,
      "",
    ].join("\n"));
    const proc = new Proc("tern-worker", [
      "--engine", "vllm", "--launch", "--config", config, "--listen", `127.0.0.1:${ports.grpc}`,
      "--log-level", "info",
    ], { PATH: `${bin}:${process.env.PATH}` });
    worker = { proc, engines: [0, 1].map((i) => ({ address: `127.0.0.1:${ports.grpc + i}` })) };
    front = await startFront(worker.engines);
  });

  const doubleStats = async (i) =>
    await (await fetch(`http://127.0.0.1:${ports.http + i}/double/stats`, { signal: AbortSignal.timeout(5_000) })).json();

  const children = () =>
    (spawnSync("pgrep", ["-P", String(worker.proc.child.pid)], { encoding: "utf8" }).stdout ?? "")
      .split("\n").filter(Boolean).map(Number);

  test("each server runs with its planned environment and serves through the cluster", async () => {
    const envs = await Promise.all([0, 1].map(async (i) => (await doubleStats(i)).env));
    assert.deepEqual(envs.map((e) => e.NEURON_RT_VISIBLE_CORES), ["0-31", "32-63"]);
    assert.deepEqual(envs.map((e) => e.PYTHONHASHSEED), ["42", "42"]);
    const json = await complete(front.url, { prompt: "launched servers answer" });
    assert.equal(json.usage.completion_tokens, 4);
  });

  test("kill -9 of a launched server: it is started again and serves", async () => {
    const pids = children();
    const victim = pids.find((pid) => readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(String(ports.http)));
    assert.ok(victim, `no server child on port ${ports.http} among ${pids}`);
    process.kill(victim, "SIGKILL");
    await waitUntil("the server is back", 30_000, async () =>
      !children().includes(victim) && (await doubleStats(0)).requests === 0);
    await waitUntil("engine 0 healthy again", 20_000, async () =>
      (await byWorker(front.metricsURL, "tern_router_worker_healthy"))[worker.engines[0].address] === 1);
    for (let i = 0; i < 4; i++) await complete(front.url, { prompt: `after the restart ${i}` });
    assert.ok(worker.proc.logs.join("").includes("starting it again"), "the launcher logs the restart");
  });
});

describe("a vllm worker configured for another block size", { timeout: 60_000 }, () => {
  test("stops with an error naming both sizes", async () => {
    const d = await startDouble();
    const proc = new Proc("tern-worker", [
      "--engine", "vllm", "--vllm", vllmSpec(d), "--model", modelDir, "--served-model-name", "tiny",
      "--listen", `127.0.0.1:${await freePort()}`, "--block-size", "16", "--log-level", "warning",
    ]);
    const code = await Promise.race([proc.exited, sleep(30_000).then(() => "still running")]);
    assert.equal(code, 1, proc.logs.join(""));
    assert.match(proc.logs.join(""), /runs --block-size 128 but this worker was configured with block size 16/);
  });
});

describe("tern up --vllm fronts a running vLLM server in one command", { timeout: 120_000 }, () => {
  test("a chat completion through tern up's gateway reaches the server", async () => {
    const d = await startDouble();
    const cluster = await Cluster.start({
      model: modelDir, workers: 0, extraArgs: ["--served-model-name", "tiny", "--vllm", vllmSpec(d)],
    });
    try {
      const before = (await d.stats()).requests;
      const response = await fetch(`${cluster.baseURL}/chat/completions`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "Hello!" }], max_tokens: 5 }),
        signal: AbortSignal.timeout(30_000),
      });
      const json = await response.json();
      assert.equal(response.status, 200, JSON.stringify(json));
      assert.equal(json.usage.completion_tokens, 5);
      assert.equal((await d.stats()).requests, before + 1);
      assert.match(cluster.logs.join(""), /1 worker\(s\)/);

      // Structured outputs go on to vLLM's own `structured_outputs` (the
      // double records it; it cannot constrain its made-up tokens).
      const schema = { type: "object", properties: { a: { type: "integer" } }, required: ["a"] };
      const structured = await fetch(`${cluster.baseURL}/chat/completions`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          model: "tiny", messages: [{ role: "user", content: "JSON" }], max_tokens: 3,
          response_format: { type: "json_schema", json_schema: { name: "a", schema } },
        }),
        signal: AbortSignal.timeout(30_000),
      });
      assert.equal(structured.status, 200, await structured.text());
      assert.deepEqual((await d.stats()).last_structured_outputs, { json: schema });
    } finally {
      assert.equal(await cluster.stop(), 0, cluster.logs.join(""));
    }
  });
});

// A port P with P + 1 free as well, a moment ago.
async function freePortPair() {
  const canBind = (port) =>
    new Promise((resolve) => {
      const server = net.createServer();
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
    });
  for (;;) {
    const port = await freePort();
    if (port < 65535 && (await canBind(port + 1))) return port;
  }
}
