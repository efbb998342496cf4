// Fault drills for the router and the gateway, end to end over REST: two
// workers on a tiny synthetic checkpoint behind one router and one gateway,
// each its own process (tests/e2e/faults_workers.test.mjs drills the workers).
//  - SIGKILL of the router during streams, restarted on the same port: the
//    streams in flight end with an error or complete (never hang), the
//    gateway reconnects, the new router rebuilds its prefix index from the
//    workers' WatchState snapshots (a cached prefix is predicted again) and
//    new requests succeed;
//  - SIGTERM of the gateway during N long streams: the listener is closed
//    at once (new connections refused), all N streams end with [DONE] and
//    the gateway exits 0 within a bound.
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
  synthModel,
  tempDir,
  timedCompletion,
  waitUntil,
} from "../lib/tern.mjs";

const REQUEST_TIMEOUT_MS = 30_000;
let dir;
let modelDir;
const workers = [];
let router;
let routerArgs;
let routerMetricsURL;
let gateway;
let gatewayArgs;
let gatewayPort;
let baseURL;

const logs = () => [...workers, router, gateway].filter(Boolean).map((p) => p.tail()).join("\n");

async function workerHealth() {
  const health = {};
  for (const s of await scrapeMetric(routerMetricsURL, "tern_router_worker_healthy")) health[s.labels.worker] = s.value;
  return health;
}

async function metricSum(name, filter = () => true) {
  const samples = await scrapeMetric(routerMetricsURL, name);
  return samples.filter((s) => filter(s.labels)).reduce((sum, s) => sum + s.value, 0);
}

async function startGateway() {
  gateway = new TierProcess("tern-gateway", gatewayArgs);
  await waitUntil("gateway ready", 30_000, async () => (await fetch(`http://127.0.0.1:${gatewayPort}/health`)).ok, logs);
}

before(async () => {
  dir = tempDir("tern-e2e-faults-");
  modelDir = synthModel("tiny", `${dir}/tiny`);
  for (let i = 0; i < 2; i++) {
    const address = `127.0.0.1:${await freePort()}`;
    workers.push(
      new TierProcess("tern-worker", [
        "--model", modelDir, "--listen", address, "--max-num-seqs", "8", "--tp", "1",
        "--kv-cache-gib", "0.25", "--log-level", "warning",
      ]),
    );
    workers[i].address = address;
  }
  const routerAddress = `127.0.0.1:${await freePort()}`;
  const metricsAddress = `127.0.0.1:${await freePort()}`;
  routerMetricsURL = `http://${metricsAddress}/metrics`;
  routerArgs = [
    "--listen", routerAddress, "--workers", workers.map((w) => w.address).join(","),
    "--health-interval-ms", "300", "--metrics-listen", metricsAddress, "--log-level", "warning",
  ];
  router = new TierProcess("tern-router", routerArgs);
  await waitUntil("two healthy workers", 120_000, async () => {
    const health = await workerHealth();
    return workers.every((w) => health[w.address] === 1);
  }, logs);
  gatewayPort = await freePort();
  baseURL = `http://127.0.0.1:${gatewayPort}/v1`;
  gatewayArgs = [
    "--listen", `127.0.0.1:${gatewayPort}`, "--router", routerAddress, "--model", modelDir,
    "--served-model-name", "tiny", "--log-level", "warning",
  ];
  await startGateway();
});

after(async () => {
  await Promise.all([gateway, router, ...workers].filter(Boolean).map((p) => p.stop()));
  if (dir) removeDir(dir);
});

// A prompt of many 16-token blocks, the same every time (a shared prefix).
const PREFIX = "The river runs past the old mill and under the stone bridge toward the sea. ".repeat(8);

function summarize(what, results) {
  const completed = results.filter((r) => r.status === 200 && r.done && !r.error).length;
  const hung = results.filter((r) => r.error === "TimeoutError").length;
  const failed = results.length - completed;
  console.log(
    `[drill] ${what}: sent ${results.length}, completed ${completed}, failed ${failed} ` +
      `(hung ${hung}), p99 ${Math.round(percentile(results.map((r) => r.ms), 99))} ms`,
  );
  return { completed, failed, hung };
}

describe("router and gateway fault drills", { timeout: 240_000 }, () => {
  test("router SIGKILL and restart: in-flight streams end cleanly, the index is rebuilt, new requests succeed", async () => {
    // The prefix is cached on a worker, and the router predicts it.
    const warm = await timedCompletion(baseURL, { model: "tiny", prompt: PREFIX, max_tokens: 4 }, REQUEST_TIMEOUT_MS);
    assert.equal(warm.status, 200, warm.error);

    const N = 8;
    const body = (i) => ({ model: "tiny", prompt: `Stream ${i}: a story.`, max_tokens: 400, ignore_eos: true });
    const inFlight = [...Array(N).keys()].map(async (i) => {
      const start = Date.now();
      const r = await timedCompletion(baseURL, body(i), REQUEST_TIMEOUT_MS);
      return { ...r, start };
    });
    await waitUntil("streams under way", 30_000, async () => {
      const running = await metricSum("tern_router_worker_inflight");
      return running >= N;
    }, logs);
    router.signal("SIGKILL");
    const killedAt = Date.now();
    await router.exited;

    const ended = await Promise.all(inFlight);
    const endMs = Math.max(...ended.map((r) => r.start + r.ms)) - killedAt;
    const inflight = summarize("router SIGKILL, streams in flight", ended);
    console.log(`[drill] router SIGKILL: last in-flight stream ended ${Math.round(endMs)} ms after the kill`);
    assert.equal(inflight.hung, 0, `a stream hung after the router died\n${logs()}`);
    for (const r of ended.filter((r) => r.error)) {
      // A proper error: an HTTP error status, a closed connection, or an SSE error event.
      assert.ok(r.status !== 200 || r.error, JSON.stringify(r));
    }

    // While the router is down, requests fail fast, they do not hang.
    const down = await timedCompletion(baseURL, { model: "tiny", prompt: "down?", max_tokens: 2 }, REQUEST_TIMEOUT_MS);
    console.log(`[drill] router down: a request answered ${down.status} in ${Math.round(down.ms)} ms`);
    assert.notEqual(down.error, "TimeoutError");

    router = new TierProcess("tern-router", routerArgs);
    const restartedAt = Date.now();
    await waitUntil("workers healthy in the restarted router", 60_000, async () => {
      const health = await workerHealth();
      return workers.every((w) => health[w.address] === 1);
    }, logs);
    // The index comes from the workers' snapshots, not from routing history.
    await waitUntil("cached blocks known again", 10_000, async () => (await metricSum("tern_router_worker_cached_blocks")) > 0, logs);
    const blocks = await metricSum("tern_router_worker_cached_blocks");
    let firstOkMs = -1;
    await waitUntil("a request succeeds through the gateway", 30_000, async () => {
      const r = await timedCompletion(baseURL, { model: "tiny", prompt: "back?", max_tokens: 2 }, 10_000);
      if (r.status === 200 && r.done) firstOkMs = Date.now() - restartedAt;
      return firstOkMs >= 0;
    }, logs);
    const again = await timedCompletion(baseURL, { model: "tiny", prompt: PREFIX, max_tokens: 4 }, REQUEST_TIMEOUT_MS);
    assert.equal(again.status, 200, again.error);
    const hits = await metricSum("tern_router_prefix_hits_total");
    const predicted = await metricSum("tern_router_worker_predicted_cached_tokens_total");
    console.log(
      `[drill] router restart: first success ${firstOkMs} ms after the restart, ` +
        `${blocks} cached blocks known from snapshots, prefix hits ${hits}, predicted cached tokens ${predicted}`,
    );
    assert.ok(hits >= 1 && predicted >= 16, `the shared prefix was not predicted after the restart\n${logs()}`);

    const after = await Promise.all(
      [...Array(N).keys()].map((i) => timedCompletion(baseURL, { model: "tiny", prompt: `After ${i}`, max_tokens: 16 }, REQUEST_TIMEOUT_MS)),
    );
    const fresh = summarize("router restarted, new requests", after);
    assert.equal(fresh.failed, 0, JSON.stringify(after.find((r) => r.error)));
  });

  test("gateway SIGTERM drains its open streams, refuses new connections and exits 0", async () => {
    const N = 6;
    let started = 0;
    const streams = [...Array(N).keys()].map(async (i) => {
      const r = await timedCompletion(
        baseURL,
        { model: "tiny", prompt: `Drain ${i}: a long story.`, max_tokens: 300, ignore_eos: true },
        REQUEST_TIMEOUT_MS,
      );
      return r;
    });
    // Every stream has started (is in flight at the router) before the signal.
    await waitUntil("streams under way", 30_000, async () => (await metricSum("tern_router_worker_inflight")) >= N, logs);
    started = N;
    const exitBoundMs = 30_000;
    const signalledAt = Date.now();
    gateway.signal("SIGTERM");
    // New connections are refused while the streams drain.
    let refusedAfterMs = -1;
    await waitUntil("new connections refused", 5_000, async () => {
      const refused = await new Promise((resolve) => {
        const socket = net.connect(gatewayPort, "127.0.0.1");
        socket.once("connect", () => {
          socket.destroy();
          resolve(false);
        });
        socket.once("error", (err) => resolve(err.code === "ECONNREFUSED"));
      });
      if (refused) refusedAfterMs = Date.now() - signalledAt;
      return refused;
    }, logs);
    const stillStreaming = (await metricSum("tern_router_worker_inflight")) > 0;
    const code = await Promise.race([gateway.exited, new Promise((resolve) => setTimeout(() => resolve("timeout"), exitBoundMs))]);
    const exitMs = Date.now() - signalledAt;
    const results = await Promise.all(streams);
    const { completed } = summarize("gateway SIGTERM, open streams", results);
    console.log(
      `[drill] gateway SIGTERM: ${started} streams open, ${completed} ended with [DONE], new connections refused ` +
        `${refusedAfterMs} ms after the signal (streams still running then: ${stillStreaming}), exit ${code} after ${exitMs} ms`,
    );
    assert.equal(code, 0, `gateway exit\n${logs()}`);
    assert.equal(completed, N, JSON.stringify(results.find((r) => !r.done || r.error)));
    for (const r of results) assert.ok(r.text.length > 0);
    await startGateway();
    const after = await timedCompletion(baseURL, { model: "tiny", prompt: "Hello", max_tokens: 4 }, REQUEST_TIMEOUT_MS);
    assert.equal(after.status, 200, after.error);
  });
});
