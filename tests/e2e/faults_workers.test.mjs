// Fault drills for the workers, end to end over REST under steady load: two
// workers on a tiny synthetic checkpoint (the second reached through a
// user-space TCP proxy that can blackhole it), one router, one gateway, each
// its own process.
//  - partition: the proxy swallows every byte both ways; the router stops
//    sending to that worker within a detection time (printed), requests keep
//    succeeding on the other, and it rejoins once the proxy forwards again;
//  - rolling restart of every worker (SIGTERM: drain, exit; start again on
//    the same address; rejoin) under load with zero failed requests;
//  - a slow worker (every engine step sleeps, --debug-step-delay-ms): the
//    router stops preferring it (its share of requests before and after).
// Each drill prints its figures ("[drill] ..."); every request is bounded.
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, test } from "node:test";

import {
  TierProcess,
  freePort,
  percentile,
  removeDir,
  scrapeMetric,
  sleep,
  synthModel,
  tempDir,
  timedCompletion,
  waitUntil,
} from "../lib/tern.mjs";

const REQUEST_TIMEOUT_MS = 30_000;
const WORKER_FLAGS = ["--max-num-seqs", "8", "--tp", "1", "--kv-cache-gib", "0.25", "--log-level", "warning"];

// A TCP proxy to `target` that forwards, or blackholes: every byte is
// swallowed both ways and connections stay open (no FIN, no RST), as a
// network partition looks to both ends. Restoring drops the connections the
// partition corrupted; the peers reconnect.
class BlackholeProxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.blackholed = false;
    this.sockets = new Set();
    this.server = net.createServer((client) => this.accept(client));
  }
  async listen() {
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.address = `127.0.0.1:${this.server.address().port}`;
  }
  track(socket) {
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", () => {});
  }
  accept(client) {
    this.track(client);
    if (this.blackholed) {
      client.on("data", () => {});
      return;
    }
    const upstream = net.connect(this.targetPort, "127.0.0.1");
    this.track(upstream);
    const pipe = (from, to) =>
      from.on("data", (chunk) => {
        if (!this.blackholed) to.write(chunk);
      });
    pipe(client, upstream);
    pipe(upstream, client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  }
  blackhole() {
    this.blackholed = true;
  }
  restore() {
    for (const socket of this.sockets) socket.destroy();
    this.blackholed = false;
  }
  close() {
    this.restore();
    this.server.close();
  }
}

let dir;
let modelDir;
const workers = []; // { address (as the router knows it), listen, proc }
let proxy;
let router;
let routerMetricsURL;
let gateway;
let baseURL;

const logs = () => [...workers.map((w) => w.proc), router, gateway].filter(Boolean).map((p) => p.tail()).join("\n");

async function workerHealth() {
  const health = {};
  for (const s of await scrapeMetric(routerMetricsURL, "tern_router_worker_healthy")) health[s.labels.worker] = s.value;
  return health;
}

// Prompt tokens the router has routed to each worker (address -> tokens).
async function routedTokens() {
  const routed = {};
  for (const s of await scrapeMetric(routerMetricsURL, "tern_router_worker_routed_prompt_tokens_total")) {
    routed[s.labels.worker] = s.value;
  }
  return routed;
}

// Re-dispatches (before the first token) and mid-stream resumes so far.
async function retried() {
  const sum = async (name) => (await scrapeMetric(routerMetricsURL, name)).reduce((t, s) => t + s.value, 0);
  return { retries: await sum("tern_router_retries_total"), resumes: await sum("tern_router_resumes_total") };
}
const retriedSince = (a, b) => `retried ${b.retries - a.retries}, resumed ${b.resumes - a.resumes}`;

function startWorker(w, extra = []) {
  w.proc = new TierProcess("tern-worker", ["--model", modelDir, "--listen", w.listen, ...WORKER_FLAGS, ...extra]);
}

async function waitHealthy(w, limitMs = 60_000) {
  await waitUntil(`${w.address} healthy`, limitMs, async () => (await workerHealth())[w.address] === 1, logs);
}

// Closed-loop load: `concurrency` clients each sending one streamed
// completion after another until stop() is called; stop() resolves with
// every result (each has `at`, its start time).
function startLoad(concurrency, maxTokens = 24) {
  let running = true;
  const results = [];
  let n = 0;
  const client = async () => {
    while (running) {
      const i = n++;
      const at = Date.now();
      const r = await timedCompletion(
        baseURL,
        { model: "tiny", prompt: `Load request ${i % 97}: the weather today is`, max_tokens: maxTokens, ignore_eos: true },
        REQUEST_TIMEOUT_MS,
      );
      results.push({ ...r, at });
    }
  };
  const clients = [...Array(concurrency).keys()].map(client);
  return {
    results,
    async stop() {
      running = false;
      await Promise.all(clients);
      return results;
    },
  };
}

function figures(results) {
  const failed = results.filter((r) => r.status !== 200 || !r.done || r.error);
  return {
    sent: results.length,
    completed: results.length - failed.length,
    failed: failed.length,
    p99: Math.round(percentile(results.map((r) => r.ms), 99)),
    firstFailure: failed[0],
  };
}

before(async () => {
  dir = tempDir("tern-e2e-faults-workers-");
  modelDir = synthModel("tiny", `${dir}/tiny`);
  for (let i = 0; i < 2; i++) {
    const port = await freePort();
    const w = { listen: `127.0.0.1:${port}`, address: `127.0.0.1:${port}` };
    startWorker(w);
    workers.push(w);
  }
  proxy = new BlackholeProxy(Number(workers[1].listen.split(":")[1]));
  await proxy.listen();
  workers[1].address = proxy.address;
  const routerAddress = `127.0.0.1:${await freePort()}`;
  const metricsAddress = `127.0.0.1:${await freePort()}`;
  routerMetricsURL = `http://${metricsAddress}/metrics`;
  router = new TierProcess("tern-router", [
    "--listen", routerAddress, "--workers", workers.map((w) => w.address).join(","),
    "--health-interval-ms", "300", "--metrics-listen", metricsAddress, "--log-level", "warning",
  ]);
  for (const w of workers) await waitHealthy(w, 120_000);
  const gatewayPort = await freePort();
  baseURL = `http://127.0.0.1:${gatewayPort}/v1`;
  gateway = new TierProcess("tern-gateway", [
    "--listen", `127.0.0.1:${gatewayPort}`, "--router", routerAddress, "--model", modelDir,
    "--served-model-name", "tiny", "--log-level", "warning",
  ]);
  await waitUntil("gateway ready", 30_000, async () => (await fetch(`http://127.0.0.1:${gatewayPort}/health`)).ok, logs);
});

after(async () => {
  proxy?.close();
  await Promise.all([gateway, router, ...workers.map((w) => w.proc)].filter(Boolean).map((p) => p.stop()));
  if (dir) removeDir(dir);
});

describe("worker fault drills under load", { timeout: 300_000 }, () => {
  test("a partitioned worker is dropped within the detection time and rejoins after the partition heals", async () => {
    const cut = workers[1];
    const retriedAtStart = await retried();
    const load = startLoad(4);
    await sleep(2_000);
    const cutAt = Date.now();
    proxy.blackhole();
    await waitUntil("partitioned worker unhealthy", 10_000, async () => (await workerHealth())[cut.address] === 0, logs);
    const detectionMs = Date.now() - cutAt;
    // Nothing more is routed there while the partition lasts.
    const routedAtDetection = (await routedTokens())[cut.address];
    await sleep(2_000);
    const routedLater = (await routedTokens())[cut.address];
    const healAt = Date.now();
    proxy.restore();
    await waitHealthy(cut, 20_000);
    const rejoinMs = Date.now() - healAt;
    await waitUntil("requests routed to the rejoined worker", 20_000, async () => (await routedTokens())[cut.address] > routedLater, logs);
    const results = await load.stop();
    const during = figures(results.filter((r) => r.at >= cutAt && r.at < healAt));
    const all = figures(results);
    console.log(
      `[drill] partition: detection ${detectionMs} ms, rejoin ${rejoinMs} ms after restore; ` +
        `sent ${all.sent}, completed ${all.completed}, failed ${all.failed}, ${retriedSince(retriedAtStart, await retried())}; ` +
        `while partitioned sent ${during.sent}, p99 ${during.p99} ms`,
    );
    assert.equal(routedLater, routedAtDetection, "requests were routed to the partitioned worker");
    assert.ok(detectionMs < 5_000, `detection took ${detectionMs} ms`);
    assert.equal(all.failed, 0, `${JSON.stringify(all.firstFailure)}\n${logs()}`);
    assert.ok(during.completed > 0);
  });

  test("rolling restart of every worker under load: zero failed requests", async () => {
    const retriedAtStart = await retried();
    const load = startLoad(4);
    await sleep(3_000);
    const rollAt = Date.now();
    const steps = [];
    for (const w of workers) {
      const termAt = Date.now();
      const code = await w.proc.stop(40_000);
      const drainMs = Date.now() - termAt;
      startWorker(w);
      await waitHealthy(w, 60_000);
      steps.push(`${w.listen}: exit ${code} after ${drainMs} ms drain, back in ${Date.now() - termAt} ms`);
      assert.equal(code, 0, `worker exit\n${logs()}`);
    }
    const rolledAt = Date.now();
    await sleep(2_000);
    const results = await load.stop();
    const beforeRoll = figures(results.filter((r) => r.at < rollAt));
    const duringRoll = figures(results.filter((r) => r.at >= rollAt && r.at < rolledAt));
    const all = figures(results);
    console.log(`[drill] rolling restart: ${steps.join("; ")}`);
    console.log(
      `[drill] rolling restart: sent ${all.sent}, completed ${all.completed}, failed ${all.failed}, ` +
        `${retriedSince(retriedAtStart, await retried())}; ` +
        `p99 before ${beforeRoll.p99} ms, during ${duringRoll.p99} ms (${duringRoll.sent} requests)`,
    );
    assert.equal(all.failed, 0, `${JSON.stringify(all.firstFailure)}\n${logs()}`);
    // The workers serve again after the roll.
    const routed = await routedTokens();
    assert.ok(workers.every((w) => routed[w.address] > 0));
  });

  test("a slow worker (10x step time) gets a smaller share of requests", async () => {
    const slow = workers[0];
    const share = async () => {
      const start = await routedTokens();
      const load = startLoad(6);
      await sleep(5_000);
      const results = await load.stop();
      const end = await routedTokens();
      const delta = workers.map((w) => (end[w.address] ?? 0) - (start[w.address] ?? 0));
      return { share: delta[0] / (delta[0] + delta[1]), ...figures(results) };
    };
    const before = await share();
    // ~10x the tiny model's step here (a few ms): every step sleeps 40 ms.
    await slow.proc.stop();
    startWorker(slow, ["--debug-step-delay-ms", "40"]);
    await waitHealthy(slow);
    const after = await share();
    console.log(
      `[drill] slow worker: share ${(100 * before.share).toFixed(1)}% before (p99 ${before.p99} ms, ${before.sent} requests), ` +
        `${(100 * after.share).toFixed(1)}% after the 40 ms step delay (p99 ${after.p99} ms, ${after.sent} requests)`,
    );
    assert.equal(before.failed + after.failed, 0, JSON.stringify(before.firstFailure ?? after.firstFailure));
    assert.ok(after.share < before.share, "the slow worker is preferred as much as before");
    assert.ok(after.share < 0.4, `the slow worker still got ${after.share} of the requests`);
  });
});
