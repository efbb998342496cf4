// `tern up` keeps its workers alive: a worker killed with SIGKILL is started
// again on the same address, the router takes it back once it is healthy, and
// requests keep succeeding throughout (the other worker serves meanwhile).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import OpenAI from "openai";
import { Cluster, synthModel, tempDir, removeDir } from "../lib/tern.mjs";

const workDir = tempDir("tern-supervisor-");
let cluster;
after(async () => {
  if (cluster) await cluster.stop();
  removeDir(workDir);
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(what, predicate, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await sleep(200);
  }
  assert.fail(`${what} within ${timeoutMs} ms:\n${cluster.logs.join("").slice(-4000)}`);
}

test("a killed worker is restarted and serves again", { timeout: 120_000 }, async () => {
  const model = synthModel("tiny", path.join(workDir, "tiny"));
  cluster = await Cluster.start({ model, workers: 2 });
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${cluster.port}/v1`, apiKey: "unused", maxRetries: 0 });
  const ask = () =>
    client.completions.create({ model: "tiny", prompt: "The quick brown fox", max_tokens: 8, temperature: 0 });
  const before = await ask();

  const workers = cluster.childPids("tern-worker");
  assert.equal(workers.length, 2, cluster.logs.join(""));
  process.kill(workers[0], "SIGKILL");
  // The survivor serves while the killed one restarts.
  const during = await ask();
  assert.equal(during.choices[0].text, before.choices[0].text);

  await waitFor("the killed worker is restarted", () => cluster.logs.join("").includes("[tern up] restarted worker"), 30_000);
  await waitFor("two workers again", () => cluster.childPids("tern-worker").length === 2, 30_000);
  assert.ok(!cluster.childPids("tern-worker").includes(workers[0]));
  // The router reports both healthy again (the gateway's /health says ready workers).
  await waitFor(
    "both workers healthy in the router",
    () => cluster.logs.join("").split("is healthy (model tiny)").length - 1 >= 3,
    30_000,
  );
  for (let i = 0; i < 4; ++i) {
    const after = await ask();
    assert.equal(after.choices[0].text, before.choices[0].text);
  }
  assert.equal(cluster.child.exitCode, null, "tern up kept running");
});
