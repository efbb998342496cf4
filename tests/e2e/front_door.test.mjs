// The gateway's front door, end to end:
// (a) slowloris: 500 connections trickling header bytes (reconnecting when
//     cut) do not raise the p99 latency of normal requests beyond 2x (+50 ms,
//     the host is noisy) nor exhaust the gateway's fds; the header timeout
//     then ends every one of them (408, or a close);
// (b) 1,000 concurrent SSE streams on one gateway all end with [DONE]
//     (gateway RSS and fds printed at peak and after);
// (c) HTTPS: a gateway with gateway.tls_cert_file/tls_key_file answers the
//     official openai client (trusting the test's own CA through a custom
//     https agent), while plain HTTP to that port fails cleanly.
// Each part prints its figures and stops by itself.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";

import OpenAI from "openai";

import { Cluster, binary, freePort, removeDir, synthModel, tempDir } from "../lib/tern.mjs";

const HEADER_TIMEOUT_S = 10;
const SLOW_CONNECTIONS = 500;
const STREAMS = 1000;

let dir;
let modelDir;
let cluster;
let gatewayPid;

before(async () => {
  dir = tempDir("tern-e2e-front-door-");
  modelDir = synthModel("tiny", `${dir}/tiny`);
  // Room for 1,000 streams from one address that queue instead of being refused.
  writeFileSync(`${dir}/tern.yaml`, [
    "gateway:",
    `  header_timeout_s: ${HEADER_TIMEOUT_S}`,
    "  max_connections: 4000",
    "  max_connections_per_client: 3000",
    "router:",
    "  max_queue: 4096",
    "  max_queue_wait_ms: 300000",
    "",
  ].join("\n"));
  cluster = await Cluster.start({
    model: modelDir,
    workers: 1,
    extraArgs: ["--config", `${dir}/tern.yaml`, "--served-model-name", "tiny", "--max-num-seqs", "64"],
  });
  const pids = cluster.childPids("tern-gateway");
  assert.equal(pids.length, 1, `one gateway process: ${pids}`);
  gatewayPid = pids[0];
});

after(async () => {
  if (cluster) await cluster.stop();
  if (dir) removeDir(dir);
});

function fdCount(pid) {
  return readdirSync(`/proc/${pid}/fd`).length;
}

function fdLimit(pid) {
  const line = readFileSync(`/proc/${pid}/limits`, "utf8").split("\n").find((l) => l.startsWith("Max open files"));
  return Number(line.trim().split(/\s+/)[3]);
}

function rssMiB(pid) {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"));
  return Number(line.split(/\s+/)[1]) / 1024;
}

function percentile(samples, p) {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

const chatBody = (extra = {}) => JSON.stringify({
  model: "tiny",
  messages: [{ role: "user", content: "Hello there" }],
  max_tokens: 1,
  ...extra,
});

// Latencies (ms) of `count` sequential small chat completions, or fewer when
// `limitMs` runs out first.
async function measure(count, limitMs) {
  const samples = [];
  const start = performance.now();
  while (samples.length < count && performance.now() - start < limitMs) {
    const t0 = performance.now();
    const response = await fetch(`${cluster.baseURL}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chatBody(),
    });
    assert.equal(response.status, 200, await response.clone().text());
    await response.json();
    samples.push(performance.now() - t0);
  }
  return samples;
}

// A connection that sends a request line, then one header line every 500 ms.
function trickle(port, onEnd) {
  const socket = net.connect(port, "127.0.0.1");
  let received = "";
  let line = 0;
  let timer;
  socket.on("connect", () => {
    socket.write("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    // Spread over the interval, as independent clients would be.
    const first = setTimeout(() => {
      timer = setInterval(() => socket.write(`X-Slow-${line++}: y\r\n`), 500);
    }, Math.random() * 500);
    socket.on("close", () => clearTimeout(first));
  });
  socket.on("data", (chunk) => (received += chunk.toString()));
  socket.on("error", () => {});
  socket.on("close", () => {
    clearInterval(timer);
    onEnd(received);
  });
  return socket;
}

describe("front door", { timeout: 600_000 }, () => {
  test("slowloris: normal requests keep their latency and fds stay bounded", async () => {
    await measure(5, 10_000); // warm-up
    const before = await measure(100, 30_000);

    let attacking = true;
    let open = 0;
    const endings = { timeout408: 0, closedWithoutResponse: 0, other: 0 };
    const onEnd = (received) => {
      open--;
      if (received.startsWith("HTTP/1.1 408")) endings.timeout408++;
      else if (received === "") endings.closedWithoutResponse++;
      else endings.other++;
      if (attacking) openOne();
    };
    const openOne = () => {
      open++;
      trickle(cluster.port, onEnd);
    };
    for (let i = 0; i < SLOW_CONNECTIONS; i++) openOne();
    let peakFds = 0;
    const sampler = setInterval(() => (peakFds = Math.max(peakFds, fdCount(gatewayPid))), 100);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    // Within the header timeout, so the same 500 connections last throughout.
    const during = await measure(100, (HEADER_TIMEOUT_S - 2) * 1000);
    attacking = false;
    const deadline = Date.now() + (HEADER_TIMEOUT_S + 20) * 1000;
    while (open > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    clearInterval(sampler);

    const limit = fdLimit(gatewayPid);
    const [p50b, p99b, p50d, p99d] = [percentile(before, 50), percentile(before, 99),
      percentile(during, 50), percentile(during, 99)];
    console.log(`slowloris: ${SLOW_CONNECTIONS} trickling connections; ` +
      `before p50 ${p50b.toFixed(1)} ms p99 ${p99b.toFixed(1)} ms (${before.length} requests); ` +
      `during p50 ${p50d.toFixed(1)} ms p99 ${p99d.toFixed(1)} ms (${during.length} requests); ` +
      `p99 ratio ${(p99d / p99b).toFixed(2)}; gateway fds peak ${peakFds} of limit ${limit}, ` +
      `after ${fdCount(gatewayPid)}; endings ${JSON.stringify(endings)}`);
    assert.ok(during.length >= 20, `only ${during.length} requests during the attack`);
    assert.ok(p99d <= 2 * p99b + 50, `p99 during ${p99d} ms > 2 x ${p99b} ms + 50 ms`);
    assert.ok(peakFds < limit, `gateway fds ${peakFds} reached the limit ${limit}`);
    assert.equal(open, 0, `${open} trickling connections still open after the header timeout`);
    assert.equal(endings.other, 0);
    assert.ok(endings.timeout408 >= SLOW_CONNECTIONS, `only ${endings.timeout408} got 408`);
    const metrics = await (await fetch(`${cluster.baseURL.slice(0, -3)}/metrics`)).text();
    assert.match(metrics, /^tern_gateway_open_connections \d+/m);
  });

  test("1,000 concurrent SSE streams all complete", async () => {
    const agent = new http.Agent({ keepAlive: false, maxSockets: STREAMS });
    const baseFds = fdCount(gatewayPid);
    let peakFds = 0;
    let peakRss = 0;
    const sampler = setInterval(() => {
      peakFds = Math.max(peakFds, fdCount(gatewayPid));
      peakRss = Math.max(peakRss, rssMiB(gatewayPid));
    }, 100);
    const started = performance.now();
    const one = () => new Promise((resolve, reject) => {
      const request = http.request(`${cluster.baseURL}/chat/completions`, {
        method: "POST", agent, headers: { "content-type": "application/json" },
      }, (response) => {
        let text = "";
        response.setEncoding("utf8");
        response.on("data", (chunk) => (text += chunk));
        response.on("end", () => resolve({ status: response.statusCode, done: text.includes("data: [DONE]") }));
        response.on("error", reject);
      });
      request.on("error", reject);
      request.setTimeout(300_000, () => request.destroy(new Error("stream timed out")));
      request.end(chatBody({ max_tokens: 8, stream: true }));
    });
    const results = await Promise.all(Array.from({ length: STREAMS }, one));
    const seconds = (performance.now() - started) / 1000;
    clearInterval(sampler);
    agent.destroy();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const completed = results.filter((r) => r.status === 200 && r.done).length;
    console.log(`sse: ${completed}/${STREAMS} streams completed with [DONE] in ${seconds.toFixed(1)} s; ` +
      `gateway RSS peak ${peakRss.toFixed(1)} MiB, after ${rssMiB(gatewayPid).toFixed(1)} MiB; ` +
      `fds before ${baseFds}, peak ${peakFds}, after ${fdCount(gatewayPid)} (limit ${fdLimit(gatewayPid)})`);
    assert.equal(completed, STREAMS, JSON.stringify(results.filter((r) => !(r.status === 200 && r.done)).slice(0, 3)));
  });

  test("HTTPS: the openai client over TLS; plain HTTP to the TLS port fails cleanly", async () => {
    const cert = `${dir}/tls.crt`;
    const key = `${dir}/tls.key`;
    const made = spawnSync("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
      "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
    ], { encoding: "utf8" });
    assert.equal(made.status, 0, made.stderr);
    writeFileSync(`${dir}/tls.yaml`, `gateway:\n  tls_cert_file: ${cert}\n  tls_key_file: ${key}\n`);
    const router = cluster.logs.join("").match(/starting router on (\S+)/)[1];
    const port = await freePort();
    const logs = [];
    const gateway = spawn(binary("tern-gateway"), [
      "--config", `${dir}/tls.yaml`, "--model", modelDir, "--served-model-name", "tiny",
      "--listen", `127.0.0.1:${port}`, "--router", router,
    ], { stdio: ["ignore", "ignore", "pipe"] });
    gateway.stderr.on("data", (chunk) => logs.push(chunk.toString()));
    try {
      const agent = new https.Agent({ ca: readFileSync(cert), keepAlive: true });
      // A fetch over node:https with that agent, for the openai client.
      const httpsFetch = (url, init = {}) => new Promise((resolve, reject) => {
        const request = https.request(url, {
          method: init.method ?? "GET", agent, headers: Object.fromEntries(new Headers(init.headers)),
          signal: init.signal,
        }, (response) => {
          const headers = new Headers();
          for (const [name, value] of Object.entries(response.headers)) headers.set(name, String(value));
          resolve(new Response(Readable.toWeb(response), { status: response.statusCode, headers }));
        });
        request.on("error", reject);
        request.end(init.body);
      });
      const deadline = Date.now() + 60_000;
      for (;;) {
        const healthy = await httpsFetch(`https://127.0.0.1:${port}/health`).then((r) => r.status === 200, () => false);
        if (healthy) break;
        assert.ok(Date.now() < deadline && gateway.exitCode === null, `TLS gateway not ready:\n${logs.join("")}`);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      assert.match(logs.join(""), new RegExp(`listening on https://127\\.0\\.0\\.1:${port}`));

      const client = new OpenAI({ baseURL: `https://127.0.0.1:${port}/v1`, apiKey: "unused", fetch: httpsFetch, maxRetries: 0 });
      const completion = await client.chat.completions.create({
        model: "tiny", messages: [{ role: "user", content: "Hello over TLS" }], max_tokens: 4, ignore_eos: true,
      });
      assert.equal(completion.object, "chat.completion");
      assert.equal(completion.usage.completion_tokens, 4);

      // Plain HTTP to the TLS port: no HTTP answer, the connection just ends.
      const plain = await new Promise((resolve) => {
        const request = http.request(`http://127.0.0.1:${port}/health`, (response) => resolve(`answered ${response.statusCode}`));
        request.on("error", (error) => resolve(error.code ?? error.message));
        request.setTimeout(10_000, () => request.destroy(new Error("timed out")));
        request.end();
      });
      assert.notEqual(plain, "timed out");
      assert.ok(!plain.startsWith("answered"), plain);

      const stream = await client.chat.completions.create({
        model: "tiny", messages: [{ role: "user", content: "still serving?" }], max_tokens: 3, stream: true,
      });
      let chunks = 0;
      for await (const chunk of stream) chunks += chunk.choices.length ? 1 : 0;
      assert.ok(chunks >= 3, `${chunks} chunks`);
      console.log(`https: chat completion over TLS ok; plain HTTP to the TLS port: ${plain}; streaming after it ok`);
      agent.destroy();
    } finally {
      gateway.kill("SIGTERM");
      await new Promise((resolve) => (gateway.exitCode !== null ? resolve() : gateway.on("exit", resolve)));
    }
  });
});
