// Reference parity for gateway::ChatTemplate: the Llama 3.0 and 3.1 Instruct
// chat templates rendered by our C++ engine (chat-template-tool) against
// @huggingface/jinja (the engine transformers.js uses), byte for byte, over
// conversations covering system prompts, multi-turn chats, generation
// prompts, tool definitions, tool calls and results, unicode, whitespace and
// the templates' own raise_exception paths.
//
// Run from tests/: TERN_BUILD_DIR=/abs/build node --test reference/chat_template.test.mjs
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Template } from "@huggingface/jinja";

const here = path.dirname(fileURLToPath(import.meta.url));
const llama30Config = path.join(
  here, "..", "node_modules", "@lenml", "tokenizer-llama3_1", "models", "tokenizer_config.json");
const llama31Template = path.join(here, "..", "..", "deploy", "chat_templates",
  "llama-3.1-instruct.jinja");
const BOS = "<|begin_of_text|>";
const EOS = "<|eot_id|>";

function toolPath() {
  const buildDir = process.env.TERN_BUILD_DIR;
  assert.ok(buildDir, "TERN_BUILD_DIR is not set: point it at the CMake build directory");
  const tool = path.join(buildDir, "tests", "chat-template-tool");
  assert.ok(existsSync(tool), `${tool} is missing: build the chat-template-tool target first`);
  return tool;
}

// Renders every context with the C++ engine (one process per template).
function renderCpp(templateSource, contexts) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "tern-chat-template-"));
  try {
    const file = path.join(dir, "template.jinja");
    writeFileSync(file, templateSource);
    const input = contexts.map((c) => JSON.stringify(c)).join("\n") + "\n";
    const result = spawnSync(toolPath(), [file], { input, encoding: "utf8", maxBuffer: 1 << 28 });
    assert.equal(result.status, 0, `chat-template-tool failed: ${result.stderr}`);
    const lines = result.stdout.trim().split("\n").map((line) => JSON.parse(line));
    assert.equal(lines.length, contexts.length, "chat-template-tool answered a different count");
    return lines;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function renderReference(templateSource, context) {
  try {
    return { ok: true, text: new Template(templateSource).render(context) };
  } catch (e) {
    return { ok: false, error: e.message };
  }
}

// ---- conversation building blocks ----

const weatherTool = {
  type: "function",
  function: {
    name: "get_current_weather",
    description: "Get the current weather in a given location",
    parameters: {
      type: "object",
      properties: {
        location: { type: "string", description: "The city and state, e.g. San Francisco, CA" },
        unit: { type: "string", enum: ["celsius", "fahrenheit"] },
      },
      required: ["location"],
    },
  },
};
const searchTool = {
  type: "function",
  function: {
    name: "search_documents",
    description: "Full-text search over the knowledge base — returns the top hits",
    parameters: {
      type: "object",
      properties: {
        query: { type: "string" },
        limit: { type: "integer", minimum: 1, maximum: 50, default: 10 },
        filters: {
          type: "object",
          properties: { tags: { type: "array", items: { type: "string" } }, after: { type: "string", format: "date" } },
        },
        exact: { type: "boolean" },
        boost: { type: "number", default: 1.5 },
      },
      required: ["query"],
    },
  },
};
const calculatorTool = {
  type: "function",
  function: {
    name: "calculate",
    description: "Evaluate an arithmetic expression",
    parameters: { type: "object", properties: { expression: { type: "string" } }, required: ["expression"] },
  },
};
// A bare JSON schema (no OpenAI wrapper) with keys JavaScript reorders.
const oddKeysTool = {
  name: "odd_keys",
  parameters: { type: "object", properties: { "10": { type: "string" }, "2": { type: "null" }, zeta: {}, alpha: { nullable: true } } },
};
const tools = [weatherTool, searchTool, calculatorTool];

const sys = (content) => ({ role: "system", content });
const user = (content) => ({ role: "user", content });
const assistant = (content) => ({ role: "assistant", content });
const call = (name, args) => ({ role: "assistant", tool_calls: [{ type: "function", function: { name, arguments: args } }] });
const toolResult = (content) => ({ role: "tool", content });

const longText = Array.from({ length: 400 }, (_, i) => `line ${i}: the quick brown fox ${"·".repeat(i % 7)}`).join("\n");

// Each case: a context (bos/eos added below) and, for the templates' own
// raise_exception paths, the message both engines must raise.
const cases = [
  { name: "single user turn, generation prompt", ctx: { messages: [user("Hello!")], add_generation_prompt: true } },
  { name: "single user turn, no generation prompt", ctx: { messages: [user("Hello!")], add_generation_prompt: false } },
  { name: "add_generation_prompt absent", ctx: { messages: [user("Hi")] } },
  { name: "system and user", ctx: { messages: [sys("You are a helpful assistant."), user("What is 2+2?")], add_generation_prompt: true } },
  { name: "multi-turn", ctx: { messages: [sys("Be brief."), user("Hi"), assistant("Hello! How can I help?"), user("Tell me a joke.")], add_generation_prompt: true } },
  { name: "long multi-turn ending with assistant", ctx: { messages: [user("a"), assistant("b"), user("c"), assistant("d"), user("e"), assistant("f"), user("g"), assistant("h")], add_generation_prompt: false } },
  { name: "leading and trailing whitespace", ctx: { messages: [sys("  \n system with spaces \t\n"), user("\n\n  padded question?  \n"), assistant("   answer   ")], add_generation_prompt: true } },
  { name: "unicode content", ctx: { messages: [sys("Réponds en français, s'il te plaît."), user("日本語で答えて 🙂 — Ελληνικά, עברית, العربية, emoji 👩‍👩‍👧‍👦 and e\u0301")], add_generation_prompt: true } },
  { name: "unicode whitespace around content", ctx: { messages: [user("\u00a0\u2003 nbsp and em space \u3000"), assistant("\ufeffBOM first\u2028")], add_generation_prompt: true } },
  { name: "special-token text inside content", ctx: { messages: [user("Ignore <|eot_id|> and <|start_header_id|>system<|end_header_id|>")], add_generation_prompt: true } },
  { name: "template syntax inside content", ctx: { messages: [user("{{ messages }} {% if x %} {# c #} '\" \\ backslash")], add_generation_prompt: true } },
  { name: "empty content", ctx: { messages: [user(""), assistant(""), user("   ")], add_generation_prompt: true } },
  { name: "CRLF line endings", ctx: { messages: [sys("line1\r\nline2\r\n"), user("a\r\n\r\nb")], add_generation_prompt: true } },
  { name: "long content", ctx: { messages: [sys("Summarize."), user(longText)], add_generation_prompt: true } },
  { name: "custom role names", ctx: { messages: [{ role: "developer", content: "dev note" }, user("hi")], add_generation_prompt: true } },
  { name: "extra message fields", ctx: { messages: [{ role: "user", content: "hi", name: "alice", id: 7 }], add_generation_prompt: true } },
  { name: "system message only", ctx: { messages: [sys("Only a system prompt")], add_generation_prompt: true } },
  { name: "empty message list", ctx: { messages: [], add_generation_prompt: true } },
  { name: "assistant prefill", ctx: { messages: [user("Write a haiku"), assistant("Autumn moonlight—")], add_generation_prompt: false } },
  { name: "code block with tabs", ctx: { messages: [user("Fix this:\n```c\nint main() {\n\treturn 0;\n}\n```"), assistant("\tLooks fine.\n")], add_generation_prompt: true } },
  { name: "markdown and JSON content", ctx: { messages: [sys("# Rules\n- be *nice*\n- answer in `json`"), user("{\"a\": [1, 2, {\"b\": null}]}")], add_generation_prompt: true } },
  { name: "twenty turns", ctx: { messages: Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? user(`question ${i}`) : assistant(`answer ${i}`))), add_generation_prompt: true } },
  { name: "tool role with plain content", ctx: { messages: [user("run it"), assistant("Running."), toolResult("exit code 0")], add_generation_prompt: true } },
  { name: "bos and eos text in content", ctx: { messages: [sys("<|begin_of_text|>"), user("ends with <|eot_id|>")], add_generation_prompt: true } },
  { name: "custom date_string", ctx: { messages: [user("What day is it?")], date_string: "03 Feb 2025", add_generation_prompt: true } },
  { name: "custom date_string with system", ctx: { messages: [sys("sys"), user("q")], date_string: "31 Dec 1999", add_generation_prompt: false } },
  { name: "tools in first user message", ctx: { messages: [user("What's the weather in Paris?")], tools, date_string: "26 Jul 2024", add_generation_prompt: true } },
  { name: "tools with system message", ctx: { messages: [sys("You can call functions."), user("Find docs about llamas")], tools, date_string: "10 Mar 2025", add_generation_prompt: true } },
  { name: "tools in system message", ctx: { messages: [sys("sys"), user("calc 2*3")], tools, tools_in_user_message: false, date_string: "26 Jul 2024", add_generation_prompt: true } },
  { name: "single tool, bare schema with numeric keys", ctx: { messages: [user("q")], tools: [oddKeysTool], date_string: "01 Jan 2025", add_generation_prompt: true } },
  { name: "empty tool list", ctx: { messages: [user("no tools really")], tools: [], date_string: "01 Jan 2025", add_generation_prompt: true } },
  { name: "custom_tools", ctx: { messages: [user("q")], custom_tools: [calculatorTool], date_string: "26 Jul 2024", add_generation_prompt: true } },
  {
    name: "tool call and tool result",
    ctx: {
      messages: [user("Weather in Paris?"), call("get_current_weather", { location: "Paris, France", unit: "celsius" }), toolResult("{\"temperature\": 21, \"sky\": \"clear\"}")],
      tools, date_string: "26 Jul 2024", add_generation_prompt: true,
    },
  },
  {
    name: "tool call with rich arguments and mapping result",
    ctx: {
      messages: [sys("Use tools."), user("Search"), call("search_documents", { query: "llamas — 🦙", limit: 5, boost: 2.5, exact: false, filters: { tags: ["a", "b"], after: null }, neg: -3, big: 12345678901234 }),
        toolResult({ hits: [{ id: 1, title: "Llama facts", score: 0.97 }], total: 1 }), assistant("I found one document.")],
      tools, date_string: "26 Jul 2024", add_generation_prompt: false,
    },
  },
  {
    name: "ipython result with list content",
    ctx: { messages: [user("calc"), call("calculate", { expression: "6*7" }), { role: "ipython", content: [42, "forty-two", true, null] }], tools, date_string: "26 Jul 2024", add_generation_prompt: true },
  },
  {
    name: "tool call with JSON-string arguments",
    ctx: { messages: [user("calc"), call("calculate", "{\"expression\": \"1+1\"}"), toolResult("2")], tools, date_string: "26 Jul 2024", add_generation_prompt: true },
  },
  {
    name: "tool call without tools defined",
    ctx: { messages: [user("calc"), call("calculate", { expression: "1/0" }), toolResult("error: division by zero"), assistant("Cannot divide by zero.")], add_generation_prompt: false },
  },
  {
    name: "tool result with numeric content",
    ctx: { messages: [user("calc"), call("calculate", { expression: "2+2" }), toolResult(4)], tools, date_string: "26 Jul 2024", add_generation_prompt: true },
  },
  {
    name: "several tool rounds",
    ctx: {
      messages: [user("Paris and Rome?"), call("get_current_weather", { location: "Paris" }), toolResult("18C"), call("get_current_weather", { location: "Rome" }), toolResult("25C"), assistant("Paris 18C, Rome 25C.")],
      tools, date_string: "26 Jul 2024", add_generation_prompt: false,
    },
  },
  {
    name: "multiple tool calls in one message",
    ctx: {
      messages: [user("Both cities"), { role: "assistant", tool_calls: [
        { type: "function", function: { name: "get_current_weather", arguments: { location: "Paris" } } },
        { type: "function", function: { name: "get_current_weather", arguments: { location: "Rome" } } }] }],
      tools, date_string: "26 Jul 2024", add_generation_prompt: true,
    },
    raises31: "This model only supports single tool-calls at once!",
  },
  {
    name: "empty tool_calls list",
    ctx: { messages: [user("x"), { role: "assistant", content: "", tool_calls: [] }], tools, date_string: "26 Jul 2024" },
    raises31: "This model only supports single tool-calls at once!",
  },
  {
    name: "tools but no user message",
    ctx: { messages: [sys("System only, with tools")], tools, date_string: "26 Jul 2024", add_generation_prompt: true },
    raises31: "Cannot put tools in the first user message when there's no first user message!",
  },
  { name: "non-string content", ctx: { messages: [user(12345)], add_generation_prompt: true }, bothRaise: true },
  { name: "null assistant content", ctx: { messages: [user("hi"), { role: "assistant", content: null }] }, bothRaise: true },
];

function contextsOf(selected) {
  return selected.map((c) => ({ bos_token: BOS, eos_token: EOS, ...c.ctx }));
}

function checkParity(templateSource, raisesKey, minimum) {
  const contexts = contextsOf(cases);
  assert.ok(contexts.length >= minimum, `only ${contexts.length} conversations`);
  const ours = renderCpp(templateSource, contexts);
  const failures = [];
  let rendered = 0;
  let raised = 0;
  cases.forEach((c, i) => {
    const ref = renderReference(templateSource, contexts[i]);
    const got = ours[i];
    const expectedRaise = c[raisesKey];
    if (expectedRaise !== undefined) {
      if (ref.ok || ref.error !== expectedRaise) {
        failures.push(`${c.name}: reference did not raise ${JSON.stringify(expectedRaise)}: ${JSON.stringify(ref)}`);
      } else if (got.ok || got.error !== expectedRaise) {
        failures.push(`${c.name}: expected raise ${JSON.stringify(expectedRaise)}, got ${JSON.stringify(got)}`);
      } else {
        raised++;
      }
      return;
    }
    if (ref.ok !== got.ok) {
      failures.push(`${c.name}: reference ${ref.ok ? "rendered" : `raised ${JSON.stringify(ref.error)}`}, ours ${got.ok ? "rendered" : `raised ${JSON.stringify(got.error)}`}`);
      return;
    }
    if (!ref.ok) {
      raised++;
      return;
    }
    if (ref.text !== got.text) {
      let at = 0;
      while (at < ref.text.length && ref.text[at] === got.text[at]) at++;
      failures.push(`${c.name}: differs at char ${at}: reference ${JSON.stringify(ref.text.slice(at, at + 80))} vs ours ${JSON.stringify(got.text.slice(at, at + 80))}`);
      return;
    }
    assert.ok(ref.text.length > 0 || contexts[i].messages.length === 0);
    rendered++;
  });
  assert.deepEqual(failures, [], `${failures.length} of ${cases.length} conversations differ:\n${failures.join("\n")}`);
  return { rendered, raised };
}

const llama30 = JSON.parse(readFileSync(llama30Config, "utf8")).chat_template;
const llama31 = readFileSync(llama31Template, "utf8");

test("Llama 3.0 template renders like @huggingface/jinja", () => {
  const { rendered, raised } = checkParity(llama30, "raises30", 30);
  assert.ok(rendered >= 30, `only ${rendered} conversations rendered`);
  assert.ok(raised >= 2, "expected the non-string content cases to raise");
  console.log(`llama 3.0: ${rendered} rendered identically, ${raised} raised on both sides`);
});

test("Llama 3.1 template renders like @huggingface/jinja", () => {
  const { rendered, raised } = checkParity(llama31, "raises31", 30);
  assert.ok(rendered >= 30, `only ${rendered} conversations rendered`);
  assert.ok(raised >= 5, "expected the raise_exception cases to raise");
  console.log(`llama 3.1: ${rendered} rendered identically, ${raised} raised on both sides`);
});

test("the 3.1 template copy in deploy/ is the published template", () => {
  const text = readFileSync(llama31Template, "utf8");
  assert.ok(text.startsWith("{{- bos_token }}"));
  assert.ok(text.includes("This model only supports single tool-calls at once!"));
  assert.ok(text.includes('{%- set date_string = "26 Jul 2024" %}'));
});

test("the default date comes from the template when date_string is absent", () => {
  const [ours] = renderCpp(llama31, [{ bos_token: BOS, eos_token: EOS, messages: [user("hi")] }]);
  assert.equal(ours.ok, true);
  assert.ok(ours.text.includes("Today Date: 26 Jul 2024\n\n"), ours.text);
  assert.equal(ours.text, renderReference(llama31, { bos_token: BOS, eos_token: EOS, messages: [user("hi")] }).text);
});

test("a Llama 3.2-style strftime_now default date agrees", () => {
  // Llama 3.2 templates fall back to strftime_now("%d %b %Y") when no
  // date_string is given; both engines define strftime_now (local time).
  const marker = '{%- set date_string = "26 Jul 2024" %}';
  assert.ok(llama31.includes(marker));
  const llama32Style = llama31.replace(marker,
    '{%- if strftime_now is defined %}{%- set date_string = strftime_now("%d %b %Y") %}' +
    '{%- else %}{%- set date_string = "26 Jul 2024" %}{%- endif %}');
  const selected = cases.filter((c) => !c.ctx.date_string && !c.raises31 && !c.bothRaise).slice(0, 10);
  const contexts = contextsOf(selected);
  const ours = renderCpp(llama32Style, contexts);
  contexts.forEach((ctx, i) => {
    const ref = renderReference(llama32Style, ctx);
    assert.equal(ref.ok, true, ref.error);
    assert.deepEqual(ours[i], { ok: true, text: ref.text }, selected[i].name);
    assert.match(ref.text, /Today Date: \d\d [A-Z][a-z]{2} \d{4}\n/);
  });
});
