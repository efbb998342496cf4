#include "gateway/openai/tool_calls.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace tern::gateway {
namespace {

TEST(ParseToolCallsTest, LlamaJsonForms) {
  auto one = ParseToolCalls(R"({"name": "get_weather", "parameters": {"city": "Paris"}})");
  ASSERT_TRUE(one.has_value());
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ((*one)[0].name, "get_weather");
  EXPECT_EQ(Json::parse((*one)[0].arguments)["city"], "Paris");
  EXPECT_THAT((*one)[0].id, ::testing::StartsWith("call_"));
  EXPECT_EQ((*one)[0].id.size(), 5u + 24u);

  auto tagged = ParseToolCalls(R"(<|python_tag|>{"name": "f", "arguments": {}})");
  ASSERT_TRUE(tagged.has_value());
  EXPECT_EQ((*tagged)[0].name, "f");
  EXPECT_EQ((*tagged)[0].arguments, "{}");

  auto array =
      ParseToolCalls(R"([{"name": "a", "parameters": {"x": 1}},{"name": "b", "parameters": {}}])");
  ASSERT_TRUE(array.has_value());
  ASSERT_EQ(array->size(), 2u);
  EXPECT_EQ((*array)[1].name, "b");
  EXPECT_NE((*array)[0].id, (*array)[1].id);

  auto separated = ParseToolCalls(
      R"({"name": "a", "parameters": {"s": "x;y"}}; {"name": "b", "parameters": {}})");
  ASSERT_TRUE(separated.has_value());
  ASSERT_EQ(separated->size(), 2u);
  EXPECT_EQ(Json::parse((*separated)[0].arguments)["s"], "x;y");
}

TEST(ParseToolCallsTest, AnythingElseIsNotACall) {
  for (const char* text :
       {"", "Hello!", R"({"name": "a"})", R"({"parameters": {}})",
        R"({"name": 3, "parameters": {}})", R"({"name": "a", "parameters": 5})", R"([])",
        R"({"name": "a", "parameters": {})", R"({"name": "a", "parameters": {}} trailing)"}) {
    EXPECT_FALSE(ParseToolCalls(text).has_value()) << text;
  }
}

TEST(ToolCallStreamTest, NoneIsContent) {
  ToolCallStream stream(ToolChoice::kNone, "");
  EXPECT_EQ(stream.Push("{\"a\"").content, "{\"a\"");
  EXPECT_TRUE(stream.Finish().tool_calls.is_null());
  EXPECT_FALSE(stream.made_tool_calls());
}

TEST(ToolCallStreamTest, NamedStreamsArguments) {
  ToolCallStream stream(ToolChoice::kNamed, "f");
  const ToolCallStream::Delta first = stream.Push("{\"x\":");
  ASSERT_TRUE(first.tool_calls.is_array());
  EXPECT_EQ(first.tool_calls[0]["index"], 0);
  EXPECT_EQ(first.tool_calls[0]["type"], "function");
  EXPECT_EQ(first.tool_calls[0]["function"]["name"], "f");
  EXPECT_EQ(first.tool_calls[0]["function"]["arguments"], "{\"x\":");
  const ToolCallStream::Delta second = stream.Push(" 1}");
  EXPECT_FALSE(second.tool_calls[0].contains("id"));
  EXPECT_EQ(second.tool_calls[0]["function"]["arguments"], " 1}");
  EXPECT_TRUE(stream.Finish().tool_calls.is_null());
  ASSERT_TRUE(stream.made_tool_calls());
  EXPECT_EQ(stream.calls()[0].arguments, "{\"x\": 1}");
  EXPECT_EQ(stream.calls()[0].id, first.tool_calls[0]["id"]);
}

TEST(ToolCallStreamTest, RequiredIsHeldThenParsed) {
  ToolCallStream stream(ToolChoice::kRequired, "");
  EXPECT_TRUE(stream.Push("[{\"name\": \"a\", ").content.empty());
  EXPECT_TRUE(stream.Push("\"parameters\": {}}]").tool_calls.is_null());
  const ToolCallStream::Delta last = stream.Finish();
  ASSERT_TRUE(last.tool_calls.is_array());
  EXPECT_EQ(last.tool_calls[0]["function"]["name"], "a");
  EXPECT_EQ(last.tool_calls[0]["function"]["arguments"], "{}");
  EXPECT_TRUE(stream.made_tool_calls());
}

TEST(ToolCallStreamTest, RequiredCutOffBecomesContent) {
  ToolCallStream stream(ToolChoice::kRequired, "");
  (void)stream.Push("[{\"name\": \"a\", \"param");
  const ToolCallStream::Delta last = stream.Finish();
  EXPECT_TRUE(last.tool_calls.is_null());
  EXPECT_EQ(last.content, "[{\"name\": \"a\", \"param");
  EXPECT_FALSE(stream.made_tool_calls());
}

TEST(ToolCallStreamTest, AutoDecidesOnTheFirstCharacter) {
  ToolCallStream text(ToolChoice::kAuto, "");
  EXPECT_EQ(text.Push("  ").content, "");
  EXPECT_EQ(text.Push(" Hi").content, "   Hi");
  EXPECT_EQ(text.Push(" there").content, " there");
  EXPECT_TRUE(text.Finish().content.empty());

  ToolCallStream call(ToolChoice::kAuto, "");
  EXPECT_EQ(call.Push("<|python").content, "");
  EXPECT_EQ(call.Push("_tag|>{\"name\": \"f\", \"parameters\": {}}").content, "");
  EXPECT_EQ(call.Finish().tool_calls.size(), 1u);
  EXPECT_TRUE(call.made_tool_calls());

  ToolCallStream brace_text(ToolChoice::kAuto, "");
  EXPECT_EQ(brace_text.Push("{not json").content, "");
  EXPECT_EQ(brace_text.Finish().content, "{not json");
}

}  // namespace
}  // namespace tern::gateway
