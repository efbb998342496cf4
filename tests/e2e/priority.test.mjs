// Request priorities end to end, with the official openai SDK: one worker
// taking one sequence at a time (max_num_seqs 1, router slack 0), so every
// other request waits in the router's admission queue.
//  - a high-priority request sent behind a queue of low-priority ones (vLLM's
//    body `priority`, then the X-Tern-Priority header as a per-request SDK
//    header) finishes before most of them;
//  - with router.max_priority_wait_ms at 1 s, a low-priority request behind
//    a steady stream of high-priority ones still finishes within the bound
//    plus a margin (and the router counts the promotion), where with a long
//    bound it waits for the stream to end.
// Completion order and waits are printed.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";

import OpenAI from "openai";

import { Cluster, fetchMetricsText, removeDir, synthModel, tempDir } from "../lib/tern.mjs";

const BOUND_MS = 1000;
const LONG_BOUND_MS = 600_000;
// Tokens per request: a few hundred ms each on the tiny checkpoint.
const TOKENS = 48;
const QUEUED_LOWS = 6;
const LOW = 10; // vLLM's scale: lower is served earlier
const HIGH = -10;

let dir;
let model;
const clusters = [];

// A cluster whose router bounds priority waits at `boundMs`.
async function startCluster(name, boundMs) {
  const config = `${dir}/${name}.yaml`;
  writeFileSync(config, `router:\n  slack: 0\n  max_priority_wait_ms: ${boundMs}\n`);
  const cluster = await Cluster.start({
    model, extraArgs: ["--config", config, "--max-num-seqs", "1", "--served-model-name", "tiny"],
  });
  clusters.push(cluster);
  const metrics = cluster.logs.join("").match(/(http:\/\/[\d.:]+\/metrics) \(router\)/);
  assert.ok(metrics, `no router metrics URL in:\n${cluster.logs.join("")}`);
  const client = new OpenAI({ apiKey: "sk-local", baseURL: cluster.baseURL, maxRetries: 0, timeout: 120_000 });
  return { cluster, client, routerMetrics: metrics[1] };
}

// The router's metric `name` summed over its series.
async function routerMetric(routerMetrics, name) {
  const text = await fetchMetricsText(routerMetrics);
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.split(" ").at(-1));
  }
  return sum;
}

async function waitForQueue(routerMetrics, depth) {
  const end = Date.now() + 30_000;
  while ((await routerMetric(routerMetrics, "tern_router_queue_depth")) < depth) {
    if (Date.now() > end) throw new Error(`the router queue never reached ${depth}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// One completion; `priority` in the body, or `header` as X-Tern-Priority.
function complete(client, { priority, header }) {
  const body = { model: "tiny", prompt: "Count slowly:", max_tokens: TOKENS, temperature: 0, ignore_eos: true };
  if (priority !== undefined) body.priority = priority;
  const options = header === undefined ? undefined : { headers: { "X-Tern-Priority": String(header) } };
  return client.completions.create(body, options);
}

before(async () => {
  dir = tempDir("tern-e2e-priority-");
  model = synthModel("tiny", `${dir}/tiny`);
});

after(async () => {
  for (const cluster of clusters) await cluster.stop();
  if (dir) removeDir(dir);
});

describe("priorities", { timeout: 240_000 }, () => {
  let long;
  before(async () => {
    long = await startCluster("long-bound", LONG_BOUND_MS);
  });

  for (const via of ["body", "header"]) {
    test(`a high-priority request (${via}) overtakes queued low-priority ones`, async () => {
      const order = [];
      const track = (label, promise) => promise.then((res) => {
        assert.equal(res.usage.completion_tokens, TOKENS);
        order.push(label);
      });
      const lows = [];
      for (let i = 0; i < QUEUED_LOWS; i++) {
        lows.push(track(`low${i}`, complete(long.client, { priority: LOW })));
      }
      // One runs, the rest wait in the router.
      await waitForQueue(long.routerMetrics, QUEUED_LOWS - 1);
      const high = track("high", complete(long.client, via === "body" ? { priority: HIGH } : { header: HIGH }));
      await Promise.all([...lows, high]);
      const position = order.indexOf("high") + 1;
      const lowsAfter = order.length - position;
      console.log(`priority via ${via}: completion order ${order.join(" ")}; high finished ${position} of ` +
        `${order.length}, before ${lowsAfter} of ${QUEUED_LOWS} low-priority requests`);
      // Only the request already running (and, at worst, one dispatched in
      // the same instant) may finish first.
      assert.ok(position <= 3, `high finished ${position} of ${order.length}: ${order.join(" ")}`);
      assert.ok(lowsAfter >= QUEUED_LOWS - 2);
    });
  }

  // A steady stream of high-priority requests (three clients back to back,
  // so the queue is never without one) until `stopWhen` or `capMs`; a
  // low-priority request sent into it. Returns its wait and what passed it.
  async function lowBehindHighStream(target, capMs) {
    let stop = false;
    let highsDone = 0;
    const loop = async () => {
      while (!stop) {
        await complete(target.client, { priority: HIGH });
        highsDone++;
      }
    };
    const loops = [loop(), loop(), loop()];
    await waitForQueue(target.routerMetrics, 2);
    const highsBefore = highsDone;
    const sent = Date.now();
    const low = complete(target.client, { priority: LOW }).then(() => Date.now() - sent);
    const timer = setTimeout(() => (stop = true), capMs);
    const waitMs = await low;
    const overtaken = highsDone - highsBefore;
    stop = true;
    clearTimeout(timer);
    await Promise.all(loops);
    return { waitMs, overtaken };
  }

  test("without a short bound a low-priority request waits for the high-priority stream to end", async () => {
    const capMs = 3000;
    const { waitMs, overtaken } = await lowBehindHighStream(long, capMs);
    console.log(`bound ${LONG_BOUND_MS} ms, stream stopped after ${capMs} ms: the low-priority request ` +
      `took ${waitMs} ms, ${overtaken} high-priority requests finished meanwhile`);
    assert.ok(waitMs >= capMs, `it finished in ${waitMs} ms, inside the stream`);
  });

  test(`with max_priority_wait_ms ${BOUND_MS} a low-priority request finishes within the bound`, async () => {
    const short = await startCluster("short-bound", BOUND_MS);
    const promotionsBefore = await routerMetric(short.routerMetrics, "tern_router_priority_promotions_total");
    // The stream would run on for 20 s: only the bound gets the request out.
    const { waitMs, overtaken } = await lowBehindHighStream(short, 20_000);
    const promotions =
      (await routerMetric(short.routerMetrics, "tern_router_priority_promotions_total")) - promotionsBefore;
    const marginMs = 2500;
    console.log(`bound ${BOUND_MS} ms: the low-priority request took ${waitMs} ms (limit ${BOUND_MS + marginMs} ms) ` +
      `while ${overtaken} high-priority requests finished; router promotions: ${promotions}`);
    assert.ok(waitMs <= BOUND_MS + marginMs, `it took ${waitMs} ms`);
    assert.ok(overtaken >= 1, "the stream should pass it until the bound");
    assert.ok(promotions >= 1, "the router counts the promotion");
  });
});
