// The vLLM protocol test double alone (tests/vllm_double/vllm_double.py), checked
// against the wire facts of docs-of-record vLLM (see the double's header):
//  - /v1/completions on token ids: SSE deltas with return_token_ids (prompt ids
//    once), finish/stop reasons, the usage chunk, vLLM's error JSON;
//  - a deterministic "model": greedy continues identically from a prompt that
//    already holds its first tokens, seeds repeat, recompute preemption
//    changes nothing;
//  - prefix-cache hits in block steps, /metrics with the names GAIE reads;
//  - waiting and running requests aborted when their client disconnects;
//  - KV events over ZMQ (read with read_events.py): tagged maps with int
//    hashes and array_like with byte hashes, BlockStored/BlockRemoved/
//    AllBlocksCleared, sequence numbers, batches dropped on PUB and replayed,
//    the replay end marker.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { batchEvents, VllmDouble } from "../lib/vllm_double.mjs";

const BLOCK = 4;

// A prompt of `n` token ids unlikely to share a block with another test's.
let promptSalt = 1000;
function freshPrompt(n) {
  promptSalt += 97;
  return Array.from({ length: n }, (_, i) => promptSalt + i);
}

async function post(double, route, body, { signal } = {}) {
  return await fetch(double.baseURL + route, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal: signal ?? AbortSignal.timeout(10_000),
  });
}

async function complete(double, body) {
  const response = await post(double, "/v1/completions", { ...body, stream: false });
  const json = await response.json();
  assert.equal(response.status, 200, JSON.stringify(json));
  return json;
}

async function greedy(double, prompt, maxTokens, extra = {}) {
  const json = await complete(double, { prompt, max_tokens: maxTokens, temperature: 0, return_token_ids: true, ...extra });
  return json.choices[0];
}

// POSTs a streaming completion and parses its SSE events. `onChunk(chunk, count)`
// sees each JSON chunk; it may abort through `controller`.
async function stream(double, body, { controller = new AbortController(), onChunk } = {}) {
  const timer = setTimeout(() => controller.abort(), 15_000);
  try {
    const response = await post(double, "/v1/completions", { ...body, stream: true }, { signal: controller.signal });
    const result = { status: response.status, headers: response.headers, chunks: [], done: false, raw: "" };
    if (response.status !== 200) {
      result.error = await response.json();
      return result;
    }
    const decoder = new TextDecoder();
    let pending = "";
    try {
      for await (const bytes of response.body) {
        const text = decoder.decode(bytes, { stream: true });
        result.raw += text;
        pending += text;
        let cut;
        while ((cut = pending.indexOf("\n\n")) >= 0) {
          const event = pending.slice(0, cut);
          pending = pending.slice(cut + 2);
          assert.match(event, /^data: /);
          const data = event.slice("data: ".length);
          if (data === "[DONE]") {
            result.done = true;
            continue;
          }
          assert.equal(result.done, false, "nothing may follow [DONE]");
          const chunk = JSON.parse(data);
          result.chunks.push(chunk);
          onChunk?.(chunk, result.chunks.length);
        }
      }
    } catch (e) {
      if (!controller.signal.aborted) throw e;
      result.aborted = true;
    }
    assert.equal(pending, "");
    return result;
  } finally {
    clearTimeout(timer);
  }
}

describe("vLLM protocol test double", () => {
  let double; // map encoding, int hashes
  before(async () => {
    double = await VllmDouble.start({
      blockSize: BLOCK,
      numBlocks: 64,
      maxNumSeqs: 4,
      maxModelLen: 256,
      eosTokenIds: [128001, 128009],
      stepMs: 5,
      servedModelName: "llama-double",
    });
  });
  after(async () => {
    assert.equal(await double?.stop(), 0, "the double exits cleanly on SIGTERM");
  });

  test("serves /health and /v1/models", async () => {
    const health = await fetch(`${double.baseURL}/health`);
    assert.equal(health.status, 200);
    const models = await (await fetch(`${double.baseURL}/v1/models`)).json();
    assert.equal(models.object, "list");
    assert.deepEqual(
      models.data.map((m) => [m.id, m.object, m.max_model_len]),
      [["llama-double", "model", 256]],
    );
  });

  test("streams one token per chunk, prompt ids once, then the usage chunk and [DONE]", async () => {
    const prompt = freshPrompt(10);
    const out = await stream(double, {
      model: "llama-double",
      prompt,
      max_tokens: 6,
      temperature: 0,
      return_token_ids: true,
      stream_options: { include_usage: true },
    });
    assert.equal(out.status, 200);
    assert.match(out.headers.get("content-type"), /^text\/event-stream/);
    assert.ok(out.done, "the stream ends with data: [DONE]");
    const [usage, ...rest] = out.chunks.splice(-1);
    assert.equal(rest.length, 0);
    assert.equal(out.chunks.length, 6);
    const ids = new Set(out.chunks.map((c) => c.id));
    assert.equal(ids.size, 1);
    assert.match([...ids][0], /^cmpl-/);
    out.chunks.forEach((chunk, i) => {
      assert.equal(chunk.object, "text_completion");
      assert.equal(chunk.model, "llama-double");
      assert.equal(typeof chunk.created, "number");
      assert.equal(chunk.choices.length, 1);
      const c = chunk.choices[0];
      assert.equal(c.index, 0);
      assert.equal(c.token_ids.length, 1);
      assert.equal(c.text, ` t${c.token_ids[0]}`);
      assert.equal(c.logprobs, null);
      assert.equal(c.stop_reason, null);
      assert.equal(c.finish_reason, i === 5 ? "length" : null);
      assert.deepEqual(c.prompt_token_ids, i === 0 ? prompt : null);
      assert.ok(c.token_ids[0] >= 0 && c.token_ids[0] < 128000);
    });
    assert.deepEqual(usage.choices, []);
    assert.equal(usage.id, [...ids][0]);
    assert.deepEqual(usage.usage, {
      prompt_tokens: 10,
      total_tokens: 16,
      completion_tokens: 6,
      prompt_tokens_details: { cached_tokens: 0 },
    });

    // The same greedy request without streaming: identical tokens and text.
    const whole = await greedy(double, prompt, 6);
    assert.deepEqual(whole.token_ids, out.chunks.map((c) => c.choices[0].token_ids[0]));
    assert.equal(whole.text, out.chunks.map((c) => c.choices[0].text).join(""));
    assert.equal(whole.finish_reason, "length");

    // The response id is "cmpl-" + request_id, as in vLLM.
    const named = await complete(double, { prompt, max_tokens: 1, request_id: "abc-1" });
    assert.equal(named.id, "cmpl-abc-1");

    // Without return_token_ids or stream_options: no ids, no usage chunk.
    const plain = await stream(double, { prompt, max_tokens: 2, temperature: 0 });
    assert.equal(plain.chunks.length, 2);
    assert.ok(plain.chunks.every((c) => c.choices[0].token_ids == null && c.choices[0].prompt_token_ids == null));
    // stream_options without include_usage still means usage (vLLM's default).
    const implicit = await stream(double, { prompt, max_tokens: 2, temperature: 0, stream_options: {} });
    assert.deepEqual(implicit.chunks.at(-1).choices, []);
  });

  test("greedy decoding continues identically from a prompt holding its first tokens", async () => {
    const prompt = freshPrompt(7);
    const full = (await greedy(double, prompt, 12)).token_ids;
    assert.equal(full.length, 12);
    assert.ok(new Set(full).size > 6, `tokens vary: ${full}`);
    for (const k of [1, 5, 11]) {
      const rest = await greedy(double, [...prompt, ...full.slice(0, k)], 12 - k);
      assert.deepEqual(rest.token_ids, full.slice(k), `resume after ${k} tokens`);
    }
    // Sampling: a seed repeats, another seed differs, and neither is the greedy path.
    const sampled = async (seed) =>
      (await complete(double, { prompt, max_tokens: 8, temperature: 0.8, seed, return_token_ids: true })).choices[0].token_ids;
    const a = await sampled(7);
    assert.deepEqual(await sampled(7), a);
    assert.notDeepEqual(await sampled(8), a);
    assert.notDeepEqual(a, full.slice(0, 8));
  });

  test("stop_token_ids end a request with the stop token included, after min_tokens", async () => {
    const prompt = freshPrompt(5);
    const full = (await greedy(double, prompt, 12)).token_ids;
    const stopId = full[4];
    const k = full.indexOf(stopId);
    const stopped = await greedy(double, prompt, 12, { stop_token_ids: [stopId] });
    assert.equal(stopped.finish_reason, "stop");
    assert.equal(stopped.stop_reason, stopId);
    assert.deepEqual(stopped.token_ids, full.slice(0, k + 1));

    const later = await greedy(double, prompt, 12, { stop_token_ids: [stopId], min_tokens: k + 2 });
    assert.ok(later.token_ids.length > k + 1, `min_tokens defers the stop: ${later.token_ids}`);
    assert.deepEqual(later.token_ids.slice(0, k + 1), full.slice(0, k + 1));

    const streamed = await stream(double, { prompt, max_tokens: 12, temperature: 0, stop_token_ids: [stopId], return_token_ids: true });
    const last = streamed.chunks.at(-1).choices[0];
    assert.equal(streamed.chunks.length, k + 1);
    assert.deepEqual([last.finish_reason, last.stop_reason, last.token_ids], ["stop", stopId, [stopId]]);
  });

  test("logprobs name tokens token_id:<id> with return_tokens_as_token_ids", async () => {
    const json = await complete(double, {
      prompt: freshPrompt(3),
      max_tokens: 3,
      temperature: 0,
      logprobs: 2,
      return_tokens_as_token_ids: true,
      return_token_ids: true,
    });
    const c = json.choices[0];
    assert.deepEqual(c.logprobs.tokens, c.token_ids.map((t) => `token_id:${t}`));
    assert.equal(c.logprobs.token_logprobs.length, 3);
    assert.deepEqual(c.logprobs.text_offset, [0, c.text.indexOf(" t", 1), c.text.lastIndexOf(" t")]);
    c.logprobs.top_logprobs.forEach((top, i) => {
      assert.equal(Object.keys(top).length, 2);
      assert.equal(top[`token_id:${c.token_ids[i]}`], c.logprobs.token_logprobs[i]);
    });
  });

  test("rejects what vLLM rejects with its error JSON, and ignores unknown fields", async () => {
    const cases = [
      [{ prompt: Array(256).fill(5), max_tokens: 1 }, 400, "prompt"],
      [{ prompt: [1, 2, 3], max_tokens: 254 }, 400, "max_tokens"],
      [{ prompt: [1, 128256], max_tokens: 1 }, 400, "prompt"],
      [{ prompt: [[1, 2], [3]], max_tokens: 1 }, 400, "prompt"],
      [{ prompt: [1, 2], max_tokens: 1, model: "other" }, 404, "model"],
      [{ prompt: [1, 2], max_tokens: 1, stream_options: { include_usage: true } }, 400, null],
    ];
    for (const [body, status, param] of cases) {
      const response = await post(double, "/v1/completions", body);
      const json = await response.json();
      assert.equal(response.status, status, JSON.stringify(body));
      assert.equal(json.error.code, status);
      assert.equal(json.error.type, status === 404 ? "NotFoundError" : "BadRequestError");
      assert.equal(json.error.param, param);
      assert.equal(typeof json.error.message, "string");
    }
    const tooLong = await (await post(double, "/v1/completions", { prompt: Array(300).fill(5) })).json();
    assert.match(tooLong.error.message, /maximum context length is 256 tokens/);
    // A streaming request is rejected before any event, with the same JSON.
    const rejected = await stream(double, { prompt: Array(256).fill(5) });
    assert.equal(rejected.status, 400);
    assert.equal(rejected.error.error.code, 400);
    const ok = await complete(double, { prompt: [1, 2], max_tokens: 1, no_such_field: true, top_k: 5, top_p: 0.9 });
    assert.equal(ok.choices[0].finish_reason, "length");
    // max_tokens omitted: up to max_model_len.
    const rest = await greedy(double, freshPrompt(250), undefined);
    assert.equal(rest.token_ids.length, 6);
  });

  test("counts prefix-cache hits in whole blocks on a repeated prompt", async () => {
    const before = await double.stats();
    const prompt = freshPrompt(3 * BLOCK + 2);
    const first = await complete(double, { prompt, max_tokens: 1, temperature: 0 });
    const second = await complete(double, { prompt, max_tokens: 1, temperature: 0 });
    assert.equal(first.usage.prompt_tokens_details.cached_tokens, 0);
    assert.equal(second.usage.prompt_tokens_details.cached_tokens, 3 * BLOCK);
    // A prompt of whole blocks recomputes its last block (at least one token is computed).
    const aligned = freshPrompt(3 * BLOCK);
    await complete(double, { prompt: aligned, max_tokens: 1 });
    const again = await complete(double, { prompt: aligned, max_tokens: 1 });
    assert.equal(again.usage.prompt_tokens_details.cached_tokens, 2 * BLOCK);

    const after = await double.stats();
    assert.equal(after.prefix_query_tokens - before.prefix_query_tokens, 2 * (3 * BLOCK + 2) + 2 * 3 * BLOCK);
    assert.equal(after.prefix_hit_tokens - before.prefix_hit_tokens, 3 * BLOCK + 2 * BLOCK);
    assert.equal(after.requests - before.requests, 4);
    assert.ok(after.cached_blocks >= 6);
    const m = await double.metrics();
    assert.equal(m.get("vllm:prefix_cache_queries_total"), after.prefix_query_tokens);
    assert.equal(m.get("vllm:prefix_cache_hits_total"), after.prefix_hit_tokens);
  });

  test("/metrics carries the names GAIE and tern read, with vLLM's labels", async () => {
    const m = await double.metrics();
    const labels = { model_name: "llama-double", engine: "0" };
    for (const [name, type] of [
      ["vllm:num_requests_running", "gauge"],
      ["vllm:num_requests_waiting", "gauge"],
      ["vllm:kv_cache_usage_perc", "gauge"],
      ["vllm:cache_config_info", "gauge"],
      ["vllm:prefix_cache_queries", "counter"],
      ["vllm:prefix_cache_hits", "counter"],
      ["vllm:prompt_tokens", "counter"],
      ["vllm:generation_tokens", "counter"],
      ["vllm:request_success", "counter"],
    ]) {
      assert.equal(m.types[name], type, name);
    }
    assert.equal(m.get("vllm:num_requests_running", labels), 0);
    assert.equal(m.get("vllm:num_requests_waiting", labels), 0);
    assert.equal(m.get("vllm:kv_cache_usage_perc", labels), 0);
    assert.equal(m.get("vllm:cache_config_info", { block_size: "4", num_gpu_blocks: "64", enable_prefix_caching: "True", engine: "0" }), 1);
    const stats = await double.stats();
    const success = (reason) => m.get("vllm:request_success_total", { ...labels, finished_reason: reason });
    assert.equal(success("stop") + success("length"), stats.finished);
    assert.equal(success("abort"), stats.aborted);
    assert.ok(m.get("vllm:prompt_tokens_total", labels) > 0);
    assert.ok(m.get("vllm:generation_tokens_total", labels) > 0);
  });

  test("a client that disconnects aborts its running request and frees its blocks", async () => {
    const before = await double.stats();
    const controller = new AbortController();
    let usage;
    const out = await stream(double, { prompt: freshPrompt(9), max_tokens: 200, temperature: 0 }, {
      controller,
      onChunk: (chunk, count) => {
        if (count === 3) {
          double.metrics().then((m) => (usage = m.get("vllm:kv_cache_usage_perc")));
          setTimeout(() => controller.abort(), 50);
        }
      },
    });
    assert.ok(out.aborted);
    const after = await double.waitForStats((s) => s.aborted === before.aborted + 1 && s.running === 0);
    assert.equal(after.finished, before.finished);
    assert.equal(after.used_blocks, 0);
    assert.ok(usage > 0, `kv usage while running: ${usage}`);
    assert.equal((await double.metrics()).get("vllm:kv_cache_usage_perc"), 0);

    // A non-streaming client is never written to before the end; it is noticed all the same.
    const body = { prompt: freshPrompt(9), max_tokens: 200, temperature: 0 };
    await assert.rejects(post(double, "/v1/completions", body, { signal: AbortSignal.timeout(100) }));
    await double.waitForStats((s) => s.aborted === before.aborted + 2 && s.running === 0);
  });

  test("KV events: tagged maps with int hashes, seq numbers, drops replayed, end marker", async () => {
    const reader = await double.subscribe();
    try {
      const prompt = freshPrompt(2 * BLOCK + 1);
      const tokens = (await greedy(double, prompt, 4)).token_ids;
      // Prompt blocks at prefill; the block holding generated tokens once it is computed.
      let stored = [];
      await reader.waitFor((msgs) => {
        stored = msgs.flatMap((m) => batchEvents(m.batch)).filter((e) => e.type === "BlockStored");
        return stored.length >= 2;
      });
      for (const m of reader.messages) {
        assert.equal(m.frames, 3);
        assert.equal(m.topic, "");
        assert.deepEqual(Object.keys(m.batch), ["ts", "events", "data_parallel_rank"]);
        assert.equal(m.batch.data_parallel_rank, 0);
        assert.ok(Math.abs(m.batch.ts - Date.now() / 1000) < 30);
      }
      const seqs = reader.messages.map((m) => m.seq);
      seqs.forEach((s, i) => i && assert.equal(s, seqs[i - 1] + 1));
      const [head, tail] = stored;
      assert.deepEqual(Object.keys(head), ["type", "block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium", "lora_name"]);
      assert.equal(head.parent_block_hash, null);
      assert.equal(head.block_hashes.length, 2);
      assert.deepEqual(head.token_ids, prompt.slice(0, 2 * BLOCK));
      assert.deepEqual([head.block_size, head.lora_id, head.medium, head.lora_name], [BLOCK, null, "GPU", null]);
      for (const h of head.block_hashes) assert.ok(BigInt(h) >= 0n && BigInt(h) < 1n << 64n);
      assert.notEqual(head.block_hashes[0], head.block_hashes[1]);
      assert.equal(tail.parent_block_hash, head.block_hashes[1]);
      assert.deepEqual(tail.token_ids, [prompt[2 * BLOCK], ...tokens.slice(0, BLOCK - 1)]);

      // Dropped on PUB, kept for replay.
      const lastSeq = reader.messages.at(-1).seq;
      const statsBefore = await double.stats();
      await double.dropEvents(1);
      await greedy(double, freshPrompt(BLOCK + 1), 1);
      await greedy(double, freshPrompt(BLOCK + 1), 1);
      await reader.waitFor((msgs) => msgs.at(-1).seq >= lastSeq + 2);
      assert.ok(!reader.messages.some((m) => m.seq === lastSeq + 1), "the dropped batch never reached PUB");
      const statsAfter = await double.stats();
      assert.equal(statsAfter.dropped_batches, statsBefore.dropped_batches + 1);
      assert.equal(statsAfter.published_batches, statsBefore.published_batches + 1);

      const replies = double.replay(lastSeq + 1);
      const end = replies.pop();
      assert.deepEqual(
        { frames: end.frames, delimiter: end.delimiter, seq: end.seq, seq_hex: end.seq_hex, payload_len: end.payload_len },
        { frames: 3, delimiter: "", seq: -1, seq_hex: "ffffffffffffffff", payload_len: 0 },
      );
      assert.deepEqual(replies.map((r) => r.seq), [lastSeq + 1, lastSeq + 2]);
      assert.ok(replies.every((r) => r.frames === 3 && r.delimiter === ""));
      assert.deepEqual(replies[1].batch, reader.messages.find((m) => m.seq === lastSeq + 2).batch);
      assert.ok(batchEvents(replies[0].batch).some((e) => e.type === "BlockStored"));
      // Replay from the start holds everything this process published.
      assert.equal(double.replay(0).at(-2).seq, lastSeq + 2);

      // reset_prefix_cache: AllBlocksCleared, and the next identical prompt misses.
      const reset = await post(double, "/reset_prefix_cache", {});
      assert.equal(reset.status, 200);
      await reader.waitFor((msgs) => msgs.some((m) => batchEvents(m.batch).some((e) => e.type === "AllBlocksCleared")));
      const cleared = reader.messages.flatMap((m) => batchEvents(m.batch)).find((e) => e.type === "AllBlocksCleared");
      assert.deepEqual(cleared, { type: "AllBlocksCleared" });
      assert.equal((await double.stats()).cached_blocks, 0);
      const miss = await complete(double, { prompt, max_tokens: 1 });
      assert.equal(miss.usage.prompt_tokens_details.cached_tokens, 0);
    } finally {
      reader.close();
    }
  });
});

describe("vLLM protocol test double: a queue of one", () => {
  let double;
  before(async () => {
    double = await VllmDouble.start({ maxNumSeqs: 1, stepMs: 10, blockSize: 16, numBlocks: 64, maxModelLen: 1024, events: false });
  });
  after(async () => {
    await double?.stop();
  });

  test("queues beyond max_num_seqs, and aborts a waiting request whose client leaves", async () => {
    const running = new AbortController();
    const first = stream(double, { prompt: freshPrompt(5), max_tokens: 300 }, { controller: running });
    await double.waitForStats((s) => s.running === 1);
    const waiting = new AbortController();
    const second = stream(double, { prompt: freshPrompt(5), max_tokens: 5 }, { controller: waiting });
    await double.waitForStats((s) => s.waiting === 1);
    const m = await double.metrics();
    assert.equal(m.get("vllm:num_requests_running"), 1);
    assert.equal(m.get("vllm:num_requests_waiting"), 1);
    assert.ok(m.get("vllm:kv_cache_usage_perc") > 0 && m.get("vllm:kv_cache_usage_perc") <= 1);

    waiting.abort();
    assert.ok((await second).aborted);
    await double.waitForStats((s) => s.waiting === 0 && s.aborted === 1 && s.running === 1);
    running.abort();
    assert.ok((await first).aborted);
    const stats = await double.waitForStats((s) => s.running === 0 && s.aborted === 2);
    assert.equal(stats.finished, 0);
    assert.equal((await double.metrics()).get("vllm:request_success_total", { finished_reason: "abort" }), 2);
  });
});

describe("vLLM protocol test double: array_like events, byte hashes, a small pool", () => {
  const topic = "kv@pod-a@llama-double";
  let double;
  before(async () => {
    double = await VllmDouble.start({ encoding: "array", hash: "bytes", topic, blockSize: BLOCK, numBlocks: 6, maxModelLen: 24, stepMs: 5 });
  });
  after(async () => {
    await double?.stop();
  });

  test("array batches with the tag first; eviction emits BlockRemoved per block", async () => {
    const reader = await double.subscribe({ topic: "kv@pod-a" });
    try {
      const a = freshPrompt(2 * BLOCK);
      await greedy(double, a, 1);
      await reader.waitFor((msgs) => msgs.length >= 1);
      const first = reader.messages[0];
      assert.equal(first.topic, topic);
      assert.ok(Array.isArray(first.batch) && first.batch.length === 3);
      assert.equal(typeof first.batch[0], "number");
      assert.equal(first.batch[2], 0);
      const raw = first.batch[1][0];
      assert.equal(raw[0], "BlockStored");
      assert.equal(raw.length, 8);
      const stored = batchEvents(first.batch)[0];
      assert.equal(stored.block_hashes.length, 2);
      for (const h of stored.block_hashes) assert.match(h.hex, /^[0-9a-f]{64}$/);
      assert.deepEqual(stored.token_ids, a);

      // A 5-block prompt in a 6-block pool evicts A's cached blocks, one event each.
      await greedy(double, freshPrompt(5 * BLOCK), 2);
      let removed = [];
      await reader.waitFor((msgs) => {
        removed = msgs.flatMap((m) => batchEvents(m.batch)).filter((e) => e.type === "BlockRemoved");
        return removed.length >= 2;
      });
      const removedHashes = removed.map((e) => e.block_hashes[0].hex);
      for (const e of removed) {
        assert.equal(e.block_hashes.length, 1);
        assert.equal(e.medium, "GPU");
      }
      assert.deepEqual(new Set(removedHashes), new Set(stored.block_hashes.map((h) => h.hex)));
      const replies = double.replay(0);
      assert.equal(replies.at(-1).seq, -1);
      assert.deepEqual(replies.slice(0, -1).map((r) => r.seq), reader.messages.map((m) => m.seq));
    } finally {
      reader.close();
    }
  });

  test("recompute preemption in a full pool leaves every request's tokens unchanged", async () => {
    const prompts = [freshPrompt(BLOCK), freshPrompt(BLOCK)];
    const alone = [];
    for (const p of prompts) alone.push((await greedy(double, p, 12)).token_ids);
    const before = await double.stats();
    const together = await Promise.all(prompts.map((p) => greedy(double, p, 12)));
    assert.deepEqual(together.map((c) => c.token_ids), alone);
    const after = await double.stats();
    assert.ok(after.preemptions > before.preemptions, "two 4-block requests in a 6-block pool preempt");
  });

  test("a restart on the same ports starts over: seq 0, an empty cache", async () => {
    const prompt = freshPrompt(2 * BLOCK + 1);
    await greedy(double, prompt, 1);
    await double.restart();
    assert.equal((await fetch(`${double.baseURL}/health`)).status, 200);
    assert.deepEqual(double.replay(0).map((r) => r.seq), [-1]);
    const reader = await double.subscribe({ topic });
    try {
      const again = await complete(double, { prompt, max_tokens: 1 });
      assert.equal(again.usage.prompt_tokens_details.cached_tokens, 0);
      await reader.waitFor((msgs) => msgs.length >= 1);
      assert.equal(reader.messages[0].seq, 0);
    } finally {
      reader.close();
    }
  });
});
