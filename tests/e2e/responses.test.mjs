// The Responses API (POST /v1/responses), stateless, driven by the official
// openai SDK's client.responses.create and client.responses.stream: text,
// json_schema output validated by ajv, a function tool, a tool result sent
// back as function_call_output, and the 400s for the state tern does not keep.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import Ajv from "ajv";
import OpenAI from "openai";

import { Cluster, removeDir, synthModel, tempDir } from "../lib/tern.mjs";

let dir;
let cluster;
let client;
const modelId = "tern-e2e-responses";
const ajv = new Ajv({ strict: false });

before(async () => {
  dir = tempDir("tern-e2e-responses-");
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

const schema = {
  type: "object",
  properties: { city: { type: "string", maxLength: 10 }, rank: { type: "integer", minimum: 1, maximum: 9 } },
  required: ["city", "rank"],
  additionalProperties: false,
};
const weather = {
  type: "function",
  name: "get_weather",
  description: "Weather for a city",
  parameters: {
    type: "object",
    properties: { city: { type: "string", maxLength: 10 }, unit: { enum: ["c", "f"] } },
    required: ["city", "unit"],
    additionalProperties: false,
  },
  strict: true,
};

// The text of a response's message items (the SDK adds output_text to
// create()'s result but not to a stream's final response).
function outputText(response) {
  return response.output
    .filter((item) => item.type === "message")
    .flatMap((item) => item.content.filter((part) => part.type === "output_text").map((part) => part.text))
    .join("");
}

describe("responses", () => {
  test("text: create and stream agree, usage and status are set", async () => {
    const params = { model: modelId, input: "Tell me a story.", instructions: "Be brief.", max_output_tokens: 12, temperature: 0 };
    const res = await client.responses.create(params);
    assert.match(res.id, /^resp_/);
    assert.equal(res.object, "response");
    assert.equal(res.status, "incomplete");  // max_output_tokens reached
    assert.equal(res.incomplete_details.reason, "max_output_tokens");
    assert.equal(res.output[0].type, "message");
    assert.equal(typeof res.output_text, "string");
    assert.ok(res.output_text.length > 0);
    assert.equal(res.usage.output_tokens, 12);
    assert.ok(res.usage.input_tokens > 0);

    const deltas = [];
    const stream = client.responses.stream(params);
    stream.on("response.output_text.delta", (e) => deltas.push(e.delta));
    const final = await stream.finalResponse();
    assert.equal(deltas.join(""), res.output_text);
    assert.equal(outputText(final), res.output_text);
  });

  test("text.format json_schema validates, streaming and not", async () => {
    const validate = ajv.compile(schema);
    const params = {
      model: modelId, input: [{ role: "user", content: "A city and its rank, as JSON." }],
      text: { format: { type: "json_schema", name: "city", schema, strict: true } },
      max_output_tokens: 200, temperature: 1,
    };
    for (const seed of [1, 2]) {
      const res = await client.responses.create({ ...params, seed });
      assert.equal(res.status, "completed");
      assert.ok(validate(JSON.parse(res.output_text)), res.output_text);
    }
    const stream = client.responses.stream({ ...params, seed: 3 });
    const final = await stream.finalResponse();
    assert.equal(final.status, "completed");
    assert.ok(validate(JSON.parse(outputText(final))), outputText(final));
  });

  test("a function tool: function_call items, streamed arguments, and the result sent back", async () => {
    const validate = ajv.compile(weather.parameters);
    const params = {
      model: modelId, input: "Weather in Paris?", tools: [weather],
      tool_choice: { type: "function", name: "get_weather" }, max_output_tokens: 200, temperature: 1, seed: 5,
    };
    const res = await client.responses.create(params);
    const call = res.output.find((item) => item.type === "function_call");
    assert.ok(call, JSON.stringify(res.output));
    assert.equal(call.name, "get_weather");
    assert.match(call.call_id, /^call_/);
    assert.ok(validate(JSON.parse(call.arguments)), call.arguments);

    let argumentDeltas = "";
    const stream = client.responses.stream(params);
    stream.on("response.function_call_arguments.delta", (e) => { argumentDeltas += e.delta; });
    const final = await stream.finalResponse();
    const streamed = final.output.find((item) => item.type === "function_call");
    assert.equal(argumentDeltas, streamed.arguments);
    assert.equal(streamed.arguments, call.arguments);  // same seed

    // The tool's result goes back as a function_call_output item.
    const next = await client.responses.create({
      model: modelId,
      input: [
        { role: "user", content: "Weather in Paris?" },
        { type: "function_call", call_id: call.call_id, name: call.name, arguments: call.arguments },
        { type: "function_call_output", call_id: call.call_id, output: "{\"temperature\": 21}" },
      ],
      tools: [weather], max_output_tokens: 8, temperature: 0,
    });
    assert.ok(next.usage.input_tokens > res.usage.input_tokens);
  });

  test("state tern does not keep gets a 400", async () => {
    for (const extra of [{ previous_response_id: "resp_123" }, { store: true }]) {
      await assert.rejects(
        client.responses.create({ model: modelId, input: "hi", ...extra }),
        (err) => err instanceof OpenAI.BadRequestError && err.param === Object.keys(extra)[0],
      );
    }
    await assert.rejects(
      client.responses.create({ model: modelId, input: "hi", tools: [{ type: "web_search" }] }),
      (err) => err instanceof OpenAI.BadRequestError,
    );
  });
});
