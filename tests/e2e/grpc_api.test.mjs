// The gateway's public gRPC API (tern.v1.Inference) end to end, from a
// client that knows nothing of our .proto files: it discovers the service by
// server reflection (grpc-js-reflection-client over @grpc/grpc-js). A
// streamed Chat gives exactly the text REST gives for the same seeded
// request (read with the official openai SDK), Complete streams text and
// usage, a bad request fails with INVALID_ARGUMENT and REST's message, a
// call without the API key is UNAUTHENTICATED, and cancelling a long
// generation stops the worker's sequence.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";

import * as grpc from "@grpc/grpc-js";
import { GrpcReflection } from "grpc-js-reflection-client";
import OpenAI from "openai";

import { Cluster, fetchMetricsText, removeDir, synthModel, tempDir } from "../lib/tern.mjs";

const API_KEY = "sk-grpc-e2e";
let dir;
let cluster;
let inference;  // the tern.v1.Inference client, built from reflection
let reflection;

const auth = () => {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${API_KEY}`);
  return metadata;
};

const deadline = (ms = 60_000) => ({ deadline: new Date(Date.now() + ms) });

// Reads a server stream to its end: every chunk, and the status it ended with.
function collect(call) {
  return new Promise((resolve) => {
    const chunks = [];
    call.on("data", (chunk) => chunks.push(chunk));
    call.on("error", (error) => resolve({ chunks, error }));
    call.on("end", () => resolve({ chunks, error: null }));
  });
}

const textOf = (chunks, index = 0) =>
  chunks.filter((c) => c.index === index).map((c) => c.text).join("");

async function workerRunningSequences() {
  const match = cluster.logs.join("").match(/http:\/\/(\S+)\/metrics \(worker[^)]*\)/);
  assert.ok(match, "tern up prints the worker's metrics address");
  const text = await fetchMetricsText(`http://${match[1]}/metrics`);
  const line = text.split("\n").find((l) => l.startsWith("tern_worker_running_sequences"));
  assert.ok(line, "the worker exports tern_worker_running_sequences");
  return Number(line.trim().split(/\s+/).pop());
}

before(async () => {
  dir = tempDir("tern-e2e-grpc-");
  const model = synthModel("tiny", `${dir}/tiny`);
  writeFileSync(`${dir}/tern.yaml`, `gateway:\n  api_keys: ["${API_KEY}"]\n`);
  cluster = await Cluster.start({
    model,
    extraArgs: ["--config", `${dir}/tern.yaml`, "--served-model-name", "tiny"],
  });
  reflection = new GrpcReflection(cluster.grpcAddress, grpc.credentials.createInsecure());
  const descriptor = await reflection.getDescriptorBySymbol("tern.v1.Inference");
  const pkg = descriptor.getPackageObject({ keepCase: true, longs: String, enums: String, defaults: true });
  inference = new pkg.tern.v1.Inference(cluster.grpcAddress, grpc.credentials.createInsecure());
});

after(async () => {
  inference?.close();
  if (cluster) await cluster.stop();
  if (dir) removeDir(dir);
});

describe("gRPC API", { timeout: 180_000 }, () => {
  test("reflection lists the Inference and health services", async () => {
    const services = await reflection.listServices();
    assert.ok(services.includes("tern.v1.Inference"), services.join(", "));
    assert.ok(services.includes("grpc.health.v1.Health"), services.join(", "));
    const methods = (await reflection.listMethods("tern.v1.Inference")).map((m) => m.name);
    assert.deepEqual(methods.sort(), ["Chat", "Complete"]);
  });

  test("a seeded Chat streams exactly the text REST returns", async () => {
    const messages = [{ role: "user", content: "Tell me a story about a lighthouse." }];
    const client = new OpenAI({ baseURL: cluster.baseURL, apiKey: API_KEY, maxRetries: 0, timeout: 60_000 });
    const rest = await client.chat.completions.create({
      model: "tiny", messages, temperature: 0.7, seed: 1234, max_tokens: 24,
    });
    const { chunks, error } = await collect(inference.Chat({
      model: "tiny",
      messages,
      sampling: { temperature: 0.7, seed: 1234, max_tokens: 24 },
    }, auth(), deadline()));
    assert.equal(error, null);
    assert.ok(chunks.length > 2);
    assert.equal(textOf(chunks), rest.choices[0].message.content);
    const finish = chunks.find((c) => c.finish_reason !== "");
    assert.equal(finish.finish_reason, rest.choices[0].finish_reason);
    const usage = chunks.at(-1).usage;
    assert.equal(usage.prompt_tokens, rest.usage.prompt_tokens);
    assert.equal(usage.completion_tokens, rest.usage.completion_tokens);
  });

  test("Complete streams text, a finish reason and the usage", async () => {
    const { chunks, error } = await collect(inference.Complete({
      model: "tiny", prompt: "Once upon a time", sampling: { max_tokens: 8, ignore_eos: true },
    }, auth(), deadline()));
    assert.equal(error, null);
    assert.ok(textOf(chunks).length > 0);
    assert.equal(chunks.filter((c) => c.text !== "").length >= 1, true);
    assert.equal(chunks.find((c) => c.finish_reason !== "").finish_reason, "length");
    assert.equal(chunks.at(-1).usage.completion_tokens, 8);
  });

  test("a bad request is INVALID_ARGUMENT with REST's message", async () => {
    const messages = [{ role: "user", content: "hi" }];
    const response = await fetch(`${cluster.baseURL}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${API_KEY}` },
      body: JSON.stringify({ model: "tiny", messages, temperature: 3 }),
    });
    assert.equal(response.status, 400);
    const restMessage = (await response.json()).error.message;
    const { chunks, error } = await collect(inference.Chat({
      model: "tiny", messages, sampling: { temperature: 3 },
    }, auth(), deadline()));
    assert.equal(chunks.length, 0);
    assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(error.details, restMessage);
  });

  test("without the API key a call is UNAUTHENTICATED", async () => {
    const { error } = await collect(inference.Complete({ model: "tiny", prompt: "x" }, new grpc.Metadata(), deadline()));
    assert.equal(error.code, grpc.status.UNAUTHENTICATED);
    const wrong = new grpc.Metadata();
    wrong.set("authorization", "Bearer sk-wrong");
    const second = await collect(inference.Complete({ model: "tiny", prompt: "x" }, wrong, deadline()));
    assert.equal(second.error.code, grpc.status.UNAUTHENTICATED);
  });

  test("cancelling a long generation stops the worker's sequence", async () => {
    const call = inference.Complete({
      model: "tiny", prompt: "Count forever:", sampling: { ignore_eos: true },
    }, auth(), deadline(120_000));
    const ended = collect(call);
    await new Promise((resolve) => {
      let count = 0;
      call.on("data", () => {
        if (++count === 3) resolve();
      });
    });
    assert.equal(await workerRunningSequences(), 1);
    call.cancel();
    const { error } = await ended;
    assert.equal(error.code, grpc.status.CANCELLED);
    const until = Date.now() + 5_000;
    let running = await workerRunningSequences();
    while (running !== 0 && Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      running = await workerRunningSequences();
    }
    assert.equal(running, 0, "the worker stopped the cancelled sequence");
  });
});
