// ChatTemplate: the Llama 3.1 template's paths the reference engine cannot
// render (builtin tools use the `reject` filter), its error paths,
// concurrency, and bounded behaviour on hostile templates and contexts.
#include "gateway/chat_template/chat_template.h"

#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tern::gateway {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::ordered_json;

std::string ReadLlama31Template() {
  std::ifstream in(std::string(TERN_SOURCE_DIR) + "/deploy/chat_templates/llama-3.1-instruct.jinja",
                   std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ChatTemplate Llama31() {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Compile(ReadLlama31Template());
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

Json Base(Json messages) {
  return Json{
      {"bos_token", "<|begin_of_text|>"}, {"eos_token", "<|eot_id|>"}, {"messages", messages}};
}

std::string Message(const absl::StatusOr<std::string>& out) {
  return std::string(out.status().message());
}

absl::StatusOr<std::string> RenderSource(std::string_view source, const Json& context = {}) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Compile(source);
  if (!t.ok()) return t.status();
  return t->Render(context.is_null() ? Json::object() : context);
}

TEST(ChatTemplateTest, Llama31PlainConversation) {
  Json ctx = Base(Json::array(
      {{{"role", "system"}, {"content", " Be brief. "}}, {{"role", "user"}, {"content", "Hi\n"}}}));
  ctx["add_generation_prompt"] = true;
  EXPECT_EQ(*Llama31().Render(ctx),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
            "Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, Llama31ToolsGoToTheFirstUserMessage) {
  Json ctx = Base(Json::array({{{"role", "user"}, {"content", "hi"}}}));
  ctx["tools"] = Json::parse(
      R"([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])");
  ctx["date_string"] = "1 Jan 2025";
  ctx["add_generation_prompt"] = true;
  EXPECT_EQ(
      *Llama31().Render(ctx),
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
      "Environment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 1 Jan 2025\n\n"
      "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
      "Given the following functions, please respond with a JSON for a function call with its "
      "proper arguments that best answers the given prompt.\n\n"
      "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument "
      "name and its value}.Do not use variables.\n\n"
      "{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"f\",\n"
      "        \"parameters\": {\n            \"type\": \"object\"\n        }\n    }\n}\n\n"
      "hi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, Llama31BuiltinToolsUseRejectAndPythonTag) {
  Json ctx = Base(Json::parse(R"([
      {"role": "system", "content": "sys"},
      {"role": "user", "content": "Weather?"},
      {"role": "assistant", "tool_calls": [{"function": {"name": "brave_search",
                                                         "arguments": {"query": "weather"}}}]},
      {"role": "ipython", "content": "sunny"}])"));
  ctx["builtin_tools"] = Json::array({"brave_search", "code_interpreter", "wolfram_alpha"});
  EXPECT_EQ(*Llama31().Render(ctx),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "Environment: ipython\nTools: brave_search, wolfram_alpha\n\n"
            "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
            "sys<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWeather?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
            "<|python_tag|>brave_search.call(query=\"weather\")<|eom_id|>"
            "<|start_header_id|>ipython<|end_header_id|>\n\n\"sunny\"<|eot_id|>");
}

TEST(ChatTemplateTest, Llama31RaisesOnMultipleToolCalls) {
  Json ctx = Base(Json::parse(R"([{"role": "user", "content": "x"},
      {"role": "assistant", "tool_calls": [{"function": {"name": "a", "arguments": {}}},
                                          {"function": {"name": "b", "arguments": {}}}]}])"));
  const absl::StatusOr<std::string> out = Llama31().Render(ctx);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out.status().message(), "This model only supports single tool-calls at once!");
}

TEST(ChatTemplateTest, UnorderedJsonContextRendersWithSortedKeys) {
  nlohmann::json ctx = {{"messages", {{{"role", "user"}, {"content", "q"}}}},
                        {"tools", {{{"type", "function"}, {"function", {{"name", "f"}}}}}},
                        {"bos_token", ""}};
  const absl::StatusOr<std::string> out = Llama31().Render(ctx);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(*out,
              HasSubstr("{\n    \"function\": {\n        \"name\": \"f\"\n    },\n    \"type\""));
}

TEST(ChatTemplateTest, RejectsBadContexts) {
  const ChatTemplate t = Llama31();
  EXPECT_EQ(t.Render(Json::array()).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::string> out = t.Render(Json{{"range", 1}, {"messages", Json::array()}});
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(std::string(out.status().message()),
              HasSubstr("'range' collides with a template builtin"));
}

TEST(ChatTemplateTest, CopiesShareTheCompiledTemplate) {
  const ChatTemplate a = Llama31();
  const ChatTemplate b = a;
  const Json ctx = Base(Json::array({{{"role", "user"}, {"content", "x"}}}));
  EXPECT_EQ(*a.Render(ctx), *b.Render(ctx));
}

TEST(ChatTemplateTest, ConcurrentRendersAgree) {
  const ChatTemplate t = Llama31();
  Json ctx = Base(Json::parse(R"([{"role": "user", "content": "weather?"},
      {"role": "assistant", "tool_calls": [{"function": {"name": "w", "arguments": {"city": "Oslo"}}}]},
      {"role": "tool", "content": {"temp": -3.5}}])"));
  ctx["tools"] = Json::parse(R"([{"type": "function", "function": {"name": "w"}}])");
  const std::string expected = *t.Render(ctx);
  std::vector<std::thread> threads;
  std::vector<int> mismatches(8, 0);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      for (int j = 0; j < 100; ++j) {
        absl::StatusOr<std::string> out = t.Render(ctx);
        if (!out.ok() || *out != expected) ++mismatches[i];
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(8, 0));
  EXPECT_THAT(expected, HasSubstr("{\"temp\": -3.5}"));
}

TEST(ChatTemplateTest, DeepNestingIsRejectedNotACrash) {
  const std::string parens =
      "{{ " + std::string(20000, '(') + "1" + std::string(20000, ')') + " }}";
  EXPECT_THAT(Message(RenderSource(parens)), HasSubstr("nested too deeply"));
  std::string ifs;
  for (int i = 0; i < 5000; ++i) ifs += "{% if true %}";
  EXPECT_THAT(Message(RenderSource(ifs + "x")), HasSubstr("nested too deeply"));
  std::string chain = "{{ 1";
  for (int i = 0; i < 20000; ++i) chain += " + 1";
  EXPECT_THAT(Message(RenderSource(chain + " }}")), HasSubstr("nested too deeply"));
  std::string nots = "{{ ";
  for (int i = 0; i < 20000; ++i) nots += "not ";
  EXPECT_FALSE(RenderSource(nots + "x }}").ok());
  const Json deep = Json::parse(std::string(1000, '[') + std::string(1000, ']'));
  EXPECT_THAT(Message(RenderSource("{{ x }}", Json{{"x", deep}})), HasSubstr("nested too deeply"));
}

TEST(ChatTemplateTest, RunawayTemplatesHitBudgets) {
  const auto code = [](std::string_view source) { return RenderSource(source).status().code(); };
  constexpr auto kExhausted = absl::StatusCode::kResourceExhausted;
  EXPECT_EQ(code("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"), kExhausted);
  EXPECT_EQ(code("{% set ns = namespace(s='x') %}{% for i in range(40) %}"
                 "{% set ns.s = ns.s ~ ns.s %}{% endfor %}"),
            kExhausted);
  EXPECT_EQ(code("{% set ns = namespace(l=[1]) %}{% for i in range(40) %}"
                 "{% set ns.l = ns.l + ns.l %}{% endfor %}"),
            kExhausted);
  EXPECT_EQ(code("{{ range(1000000000)|length }}"), kExhausted);
}

TEST(ChatTemplateTest, DeepValuesAndCyclesAreSafe) {
  // 100k nested lists: built, measured and destroyed without recursion.
  EXPECT_EQ(*RenderSource("{% set ns = namespace(l=[]) %}{% for i in range(100000) %}"
                          "{% set ns.l = [ns.l] %}{% endfor %}{{ ns.l|length }}"),
            "1");
  EXPECT_THAT(Message(RenderSource("{% set ns = namespace(l=[]) %}{% for i in range(2000) %}"
                                   "{% set ns.l = [ns.l] %}{% endfor %}{{ ns.l|tojson }}")),
              HasSubstr("nested too deeply"));
  // A namespace holding itself: printing fails cleanly, the cycle is freed.
  EXPECT_THAT(Message(RenderSource("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}")),
              HasSubstr("nested too deeply"));
}

TEST(ChatTemplateTest, RejectsInvalidUtf8Templates) {
  EXPECT_EQ(ChatTemplate::Compile("ok \xFF\xFE").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ChatTemplateTest, MutatedTemplatesNeverCrash) {
  const std::string base = ReadLlama31Template();
  Json ctx =
      Base(Json::parse(R"([{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
      {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
      {"role": "tool", "content": "r"}])"));
  ctx["tools"] = Json::parse(R"([{"type": "function", "function": {"name": "f"}}])");
  std::mt19937 rng(1234);
  const std::string alphabet = "{}%#-()[]'\".,|~+*/=<>! \nabcdefgilmnorstuxz0123456789";
  int compiled = 0;
  for (int i = 0; i < 600; ++i) {
    std::string source = base;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % source.size();
      switch (rng() % 3) {
        case 0:
          source[pos] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          source.erase(pos, 1 + rng() % 8);
          break;
        default:
          source.insert(pos, source.substr(rng() % source.size(), 1 + rng() % 40));
          break;
      }
    }
    absl::StatusOr<ChatTemplate> t = ChatTemplate::Compile(source);
    if (!t.ok()) continue;
    ++compiled;
    (void)t->Render(ctx);
  }
  EXPECT_GT(compiled, 50);
}

}  // namespace
}  // namespace tern::gateway
