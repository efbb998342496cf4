// API keys end to end: `tern keys add` prints a key once and stores only its
// salted hash; a cluster whose gateway reads that key file answers the
// official openai client with the key, refuses it without (401,
// invalid_api_key), enforces a key's limits (429 rate_limit_exceeded with
// Retry-After, counted per key in /metrics), and neither the key nor the
// prompt shows up in any process's log.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";

import OpenAI from "openai";

import { Cluster, binary, removeDir, synthModel, tempDir } from "../lib/tern.mjs";

let dir;
let cluster;
let key;
let limitedKey;
const prompt = "a prompt that must never reach a log 7f3c";

before(async () => {
  dir = tempDir("tern-e2e-keys-");
  const modelDir = synthModel("tiny", `${dir}/tiny`);
  const keyFile = `${dir}/keys.yaml`;
  const added = spawnSync(binary("tern"), ["keys", "add", "ci", "--file", keyFile], { encoding: "utf8" });
  assert.equal(added.status, 0, added.stderr);
  key = added.stdout.trim();
  assert.match(key, /^tern-[0-9a-f]{64}$/);
  assert.ok(!readFileSync(keyFile, "utf8").includes(key.slice(5)), "the key file holds no key");
  const limited = spawnSync(binary("tern"), [
    "keys", "add", "limited", "--file", keyFile, "--max-concurrent-streams", "1", "--requests-per-minute", "3",
  ], { encoding: "utf8" });
  assert.equal(limited.status, 0, limited.stderr);
  limitedKey = limited.stdout.trim();
  writeFileSync(`${dir}/tern.yaml`, `gateway:\n  api_key_file: ${keyFile}\n`);
  cluster = await Cluster.start({
    model: modelDir,
    workers: 1,
    extraArgs: ["--config", `${dir}/tern.yaml`, "--served-model-name", "tiny", "--log-level", "debug"],
  });
});

after(async () => {
  if (cluster) await cluster.stop();
  if (dir) removeDir(dir);
});

describe("API keys", { timeout: 120_000 }, () => {
  test("the key from tern keys add is accepted, others are refused", async () => {
    const client = new OpenAI({ baseURL: cluster.baseURL, apiKey: key, maxRetries: 0 });
    const completion = await client.completions.create({ model: "tiny", prompt, max_tokens: 3, ignore_eos: true });
    assert.equal(completion.usage.completion_tokens, 3);

    // The key with its last digit changed.
    const wrongKey = key.slice(0, -1) + (key.endsWith("0") ? "1" : "0");
    const wrong = new OpenAI({ baseURL: cluster.baseURL, apiKey: wrongKey, maxRetries: 0 });
    await assert.rejects(wrong.completions.create({ model: "tiny", prompt, max_tokens: 3 }), (error) => {
      assert.equal(error.status, 401);
      assert.equal(error.code, "invalid_api_key");
      return true;
    });
    const anonymous = await fetch(`${cluster.baseURL}/models`);
    assert.equal(anonymous.status, 401);
    // Probes stay open.
    assert.equal((await fetch(cluster.baseURL.replace(/\/v1$/, "/health"))).status, 200);
  });

  test("a key's limits: one stream at a time, three requests a minute", async () => {
    const send = (stream, maxTokens) =>
      fetch(`${cluster.baseURL}/completions`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${limitedKey}` },
        body: JSON.stringify({ model: "tiny", prompt: "limits", max_tokens: maxTokens, stream, ignore_eos: true }),
        signal: AbortSignal.timeout(60_000),
      });
    const first = await send(true, 7000);
    assert.equal(first.status, 200);
    const reader = first.body.getReader();
    await reader.read(); // the stream is open
    const second = await send(false, 2);
    assert.equal(second.status, 429, await second.clone().text());
    assert.equal((await second.json()).error.code, "rate_limit_exceeded");
    assert.ok(Number(second.headers.get("retry-after")) >= 1);
    await reader.cancel(); // the gateway sees the client go and ends the stream
    // Refusals for the stream limit spend no request: once the first stream
    // has ended, two more fit the three a minute, and the fourth waits ~20 s.
    let third;
    for (let i = 0; i < 100; i++) {
      third = await send(false, 2);
      if (third.status !== 429) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(third.status, 200, await third.text());
    const next = await send(false, 2);
    assert.equal(next.status, 200, await next.text());
    const fourth = await send(false, 2);
    assert.equal(fourth.status, 429, await fourth.clone().text());
    const wait = Number(fourth.headers.get("retry-after"));
    assert.ok(wait >= 10 && wait <= 20, `Retry-After ${wait}`);
    const metrics = await (await fetch(cluster.baseURL.replace(/\/v1$/, "/metrics"))).text();
    assert.match(metrics, /tern_gateway_key_rejected_total\{key="limited",limit="max_concurrent_streams"\} [1-9]/);
    assert.match(metrics, /tern_gateway_key_rejected_total\{key="limited",limit="requests_per_minute"\} 1/);
    assert.match(metrics, /tern_gateway_key_requests_total\{key="limited"\} 3/);
    assert.ok(!metrics.includes(limitedKey));
  });

  test("neither the key nor the prompt is logged", async () => {
    const logs = cluster.logs.join("");
    assert.ok(logs.length > 0);
    assert.equal(logs.includes(key), false, "the key appears in a log");
    assert.equal(logs.includes(key.slice(5)), false, "the key appears in a log");
    assert.equal(logs.includes(limitedKey.slice(5)), false, "a key appears in a log");
    assert.equal(logs.includes(prompt), false, "the prompt appears in a log");
  });
});
