// API keys end to end: `tern keys add` prints a key once and stores only its
// salted hash; a cluster whose gateway reads that key file answers the
// official openai client with the key, refuses it without (401,
// invalid_api_key), and neither the key nor the prompt shows up in any
// process's log.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";

import OpenAI from "openai";

import { Cluster, binary, removeDir, synthModel, tempDir } from "../lib/tern.mjs";

let dir;
let cluster;
let key;
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
    const completion = await client.completions.create({ model: "tiny", prompt, max_tokens: 3 });
    assert.equal(completion.usage.completion_tokens, 3);

    const wrong = new OpenAI({ baseURL: cluster.baseURL, apiKey: `${key.slice(0, -1)}0`, maxRetries: 0 });
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

  test("neither the key nor the prompt is logged", async () => {
    const logs = cluster.logs.join("");
    assert.ok(logs.length > 0);
    assert.equal(logs.includes(key), false, "the key appears in a log");
    assert.equal(logs.includes(key.slice(5)), false, "the key appears in a log");
    assert.equal(logs.includes(prompt), false, "the prompt appears in a log");
  });
});
