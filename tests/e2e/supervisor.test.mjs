// `tern up` as an operator sees it: its ready line shows a request that works
// as printed, and it keeps its workers alive: a worker killed with SIGKILL is
// started again on the same address, the router takes it back once it is
// healthy, and requests keep succeeding throughout (the other worker serves
// meanwhile).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import OpenAI from "openai";
import { Cluster, synthModel, tempDir, removeDir } from "../lib/tern.mjs";

const workDir = tempDir("tern-supervisor-");
let cluster;
before(async () => {
  const model = synthModel("tiny", path.join(workDir, "tiny"));
  cluster = await Cluster.start({ model, workers: 2 });
});
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

test("the ready line's example request names the served model and works as printed", async () => {
  const logs = cluster.logs.join("");
  assert.match(logs, /\[tern up\] ready: 2 worker\(s\), model tiny, OpenAI API at http:\/\/127\.0\.0\.1:\d+\/v1/);
  const url = logs.match(/^ {2}curl (\S+\/chat\/completions) -H 'Content-Type: application\/json' \\$/m);
  const body = logs.match(/^ {4}-d '(.*)'$/m);
  assert.ok(url && body, `no example request in:\n${logs}`);
  assert.equal(url[1], `http://127.0.0.1:${cluster.port}/v1/chat/completions`);
  const request = JSON.parse(body[1].replaceAll("'\\''", "'"));
  assert.equal(request.model, "tiny");
  const response = await fetch(url[1], {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(request),
  });
  const answer = await response.json();
  assert.equal(response.status, 200, JSON.stringify(answer));
  assert.equal(answer.model, "tiny");
  assert.equal(answer.choices.length, 1);
  assert.equal(typeof answer.choices[0].message.content, "string");
});

test("a killed worker is restarted and serves again", { timeout: 120_000 }, async () => {
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
