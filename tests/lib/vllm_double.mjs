// Starts and stops the vLLM protocol test double (tests/vllm_double/vllm_double.py)
// for the Node suites: free ports for its HTTP server and its KV-event PUB and
// replay sockets, its test-only knobs (/double/stats, /double/drop_events), a
// parsed /metrics, and a subscriber for its events (read_events.py).
import { spawn, spawnSync } from "node:child_process";
import path from "node:path";
import readline from "node:readline";

import { freePort, testsDir } from "./tern.mjs";

export const python = "/usr/bin/python3";
export const doubleScript = path.join(testsDir, "vllm_double", "vllm_double.py");
export const readEventsScript = path.join(testsDir, "vllm_double", "read_events.py");

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Waits for `needle` in a child's stdout; rejects if it exits first or after `timeoutMs`.
function waitForLine(child, logs, needle, timeoutMs, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${what} not ready after ${timeoutMs} ms:\n${logs.join("")}`));
    }, timeoutMs);
    const onData = () => {
      if (logs.join("").includes(needle)) {
        cleanup();
        resolve();
      }
    };
    const onExit = (code, signal) => {
      cleanup();
      reject(new Error(`${what} exited (${code ?? signal}) before ready:\n${logs.join("")}`));
    };
    const cleanup = () => {
      clearTimeout(timer);
      child.stdout.off("data", onData);
      child.off("exit", onExit);
    };
    child.stdout.on("data", onData);
    child.on("exit", onExit);
    onData();
  });
}

// One running double. `options` (all optional): blockSize, numBlocks, maxNumSeqs,
// maxModelLen, vocabSize, eosTokenIds, encoding ("map" | "array"), hash
// ("int" | "bytes"), topic, stepMs, servedModelName, replay (default true),
// events (default true), extraArgs.
export class VllmDouble {
  constructor(options, ports) {
    this.options = options;
    this.port = ports.http;
    this.eventsPort = ports.events;
    this.replayPort = ports.replay;
    this.baseURL = `http://127.0.0.1:${ports.http}`;
    this.eventsEndpoint = ports.events ? `tcp://127.0.0.1:${ports.events}` : "";
    this.replayEndpoint = ports.replay ? `tcp://127.0.0.1:${ports.replay}` : "";
    this.modelName = options.servedModelName ?? "vllm-double";
    this.logs = [];
    this.child = null;
  }

  static async start(options = {}) {
    const ports = {
      http: await freePort(),
      events: options.events === false ? 0 : await freePort(),
      replay: options.events === false || options.replay === false ? 0 : await freePort(),
    };
    const double = new VllmDouble(options, ports);
    await double.#spawn();
    return double;
  }

  args() {
    const o = this.options;
    const args = [doubleScript, "--port", String(this.port), "--served-model-name", this.modelName];
    const flag = (name, value) => {
      if (value !== undefined) args.push(name, String(value));
    };
    flag("--block-size", o.blockSize);
    flag("--num-blocks", o.numBlocks);
    flag("--max-num-seqs", o.maxNumSeqs);
    flag("--max-model-len", o.maxModelLen);
    flag("--vocab-size", o.vocabSize);
    for (const id of o.eosTokenIds ?? []) flag("--eos-token-id", id);
    if (this.eventsEndpoint) flag("--kv-events-endpoint", this.eventsEndpoint);
    if (this.replayEndpoint) flag("--kv-replay-endpoint", this.replayEndpoint);
    flag("--kv-events-encoding", o.encoding);
    flag("--kv-events-topic", o.topic);
    flag("--hash", o.hash);
    flag("--step-ms", o.stepMs);
    return [...args, ...(o.extraArgs ?? [])];
  }

  async #spawn(readyTimeoutMs = 15_000) {
    this.child = spawn(python, this.args(), { stdio: ["ignore", "pipe", "pipe"] });
    const keep = (chunk) => {
      this.logs.push(chunk.toString());
      if (this.logs.length > 200) this.logs.shift();
    };
    this.child.stdout.on("data", keep);
    this.child.stderr.on("data", keep);
    this.exited = new Promise((resolve) => this.child.on("exit", (code, signal) => resolve(code ?? signal)));
    await waitForLine(this.child, this.logs, `vllm double ready on port ${this.port}`, readyTimeoutMs, "vllm double");
  }

  running() {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  // Sends `signal`; resolves with the exit code (or signal name) once it has exited.
  async kill(signal = "SIGTERM", timeoutMs = 10_000) {
    if (!this.running()) return this.child?.exitCode ?? null;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    const result = await this.exited;
    clearTimeout(timer);
    return result;
  }

  stop() {
    return this.kill("SIGTERM");
  }

  // A fresh process on the same ports (a vLLM restart: new seq numbers, new NONE_HASH).
  async restart(signal = "SIGTERM") {
    await this.kill(signal);
    this.logs = [];
    for (let attempt = 0; ; attempt++) {
      try {
        await this.#spawn();
        return;
      } catch (e) {
        if (attempt >= 20 || !/Address already in use/.test(e.message)) throw e;
        await sleep(100); // the old sockets may linger a moment
      }
    }
  }

  async #json(method, route, body) {
    const response = await fetch(this.baseURL + route, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    if (!response.ok) throw new Error(`${route}: HTTP ${response.status}: ${await response.text()}`);
    return await response.json();
  }

  // GET /double/stats: {running, waiting, aborted, finished, cached_blocks, prefix_query_tokens,
  // prefix_hit_tokens, published_batches, dropped_batches, requests, ...}.
  stats() {
    return this.#json("GET", "/double/stats");
  }

  // The next `count` event batches are kept for replay but not sent on the PUB socket.
  dropEvents(count) {
    return this.#json("POST", "/double/drop_events", { count });
  }

  async metricsText() {
    const response = await fetch(`${this.baseURL}/metrics`, { signal: AbortSignal.timeout(10_000) });
    if (!response.ok) throw new Error(`/metrics: HTTP ${response.status}`);
    return await response.text();
  }

  // /metrics parsed: {samples: [{name, labels, value}], types: {name: type}, get(name, labels)}.
  async metrics() {
    return parseMetrics(await this.metricsText());
  }

  // Polls stats() until `check(stats)` holds; throws with the last stats after `timeoutMs`.
  async waitForStats(check, timeoutMs = 5_000) {
    const end = Date.now() + timeoutMs;
    let stats;
    for (;;) {
      stats = await this.stats();
      if (check(stats)) return stats;
      if (Date.now() > end) throw new Error(`stats condition not met in ${timeoutMs} ms: ${JSON.stringify(stats)}`);
      await sleep(20);
    }
  }

  // A SUB reader of this double's events, ready once it has connected.
  subscribe(options = {}) {
    return EventReader.start(this.eventsEndpoint, options);
  }

  // Asks the replay socket for every buffered batch from `fromSeq`: the reply lines
  // of read_events.py (end marker last).
  replay(fromSeq, timeoutMs = 5_000) {
    const out = spawnSync(
      python,
      [readEventsScript, "replay", "--endpoint", this.replayEndpoint, "--from", String(fromSeq), "--timeout-ms", String(timeoutMs)],
      { encoding: "utf8", timeout: timeoutMs + 5_000 },
    );
    if (out.status !== 0) throw new Error(`read_events.py replay failed: ${out.stderr}${out.stdout}`);
    return out.stdout.split("\n").filter(Boolean).map((line) => JSON.parse(line));
  }
}

// Prometheus text format, enough for the double's /metrics.
export function parseMetrics(text) {
  const samples = [];
  const types = {};
  for (const line of text.split("\n")) {
    const type = line.match(/^# TYPE (\S+) (\S+)/);
    if (type) types[type[1]] = type[2];
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/);
    if (!m) throw new Error(`unparsable metrics line: ${line}`);
    const labels = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  const get = (name, labels = {}) => {
    const found = samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
    return found?.value;
  };
  return { samples, types, get };
}

// read_events.py in `sub` mode: collects messages as they arrive.
export class EventReader {
  constructor(child) {
    this.child = child;
    this.messages = [];
    this.logs = [];
  }

  static async start(endpoint, { topic = "", timeoutMs = 30_000 } = {}) {
    const args = [readEventsScript, "sub", "--endpoint", endpoint, "--topic", topic, "--timeout-ms", String(timeoutMs)];
    const child = spawn(python, args, { stdio: ["pipe", "pipe", "pipe"] });
    const reader = new EventReader(child);
    child.stderr.on("data", (chunk) => reader.logs.push(chunk.toString()));
    const lines = readline.createInterface({ input: child.stdout });
    const ready = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`event reader not ready: ${reader.logs.join("")}`)), 10_000);
      child.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`event reader exited (${code}): ${reader.logs.join("")}`));
      });
      lines.on("line", (line) => {
        const msg = JSON.parse(line);
        if (msg.ready) {
          clearTimeout(timer);
          resolve();
        } else {
          reader.messages.push(msg);
        }
      });
    });
    await ready;
    return reader;
  }

  // Waits until `check(messages)` holds.
  async waitFor(check, timeoutMs = 5_000) {
    const end = Date.now() + timeoutMs;
    while (!check(this.messages)) {
      if (Date.now() > end) {
        throw new Error(`events not seen in ${timeoutMs} ms; got ${JSON.stringify(this.messages).slice(0, 2000)}`);
      }
      await sleep(20);
    }
    return this.messages;
  }

  close() {
    this.child.stdin.end();
    if (this.child.exitCode === null) this.child.kill("SIGTERM");
  }
}

// The events of a decoded batch, whatever the encoding: [{type, ...fields}] with the
// positional (array_like) fields named as in vLLM's structs.
export function batchEvents(batch) {
  const events = Array.isArray(batch) ? batch[1] : batch.events;
  return events.map((e) => {
    if (!Array.isArray(e)) return e;
    const [type, ...f] = e;
    if (type === "BlockStored") {
      const names = ["block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium", "lora_name"];
      return Object.fromEntries([["type", type], ...names.map((n, i) => [n, f[i]])]);
    }
    if (type === "BlockRemoved") return { type, block_hashes: f[0], medium: f[1] };
    return { type };
  });
}
