#include "gateway/openai/responses_request.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "gateway/http/api_error.h"

namespace tern::gateway {
namespace {

std::string Param(const absl::StatusOr<ResponsesRequest>& parsed) {
  EXPECT_FALSE(parsed.ok());
  if (parsed.ok()) return "<ok>";
  const ApiError error = ToApiError(parsed.status());
  EXPECT_EQ(error.http_status, 400);
  const auto& param = error.body["error"]["param"];
  return param.is_null() ? "" : param.get<std::string>();
}

TEST(ResponsesRequestTest, StringInputAndInstructionsBecomeMessages) {
  auto parsed = ParseResponsesRequest(
      R"({"model": "m", "input": "Hi", "instructions": "Be brief.", "max_output_tokens": 7,
          "temperature": 0.5})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const Json& messages = parsed->chat.messages;
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0]["role"], "system");
  EXPECT_EQ(messages[0]["content"], "Be brief.");
  EXPECT_EQ(messages[1]["role"], "user");
  EXPECT_EQ(messages[1]["content"], "Hi");
  EXPECT_EQ(parsed->chat.sampling.max_tokens, 7);
  EXPECT_EQ(parsed->chat.sampling.temperature, 0.5);
  EXPECT_EQ(parsed->instructions, "Be brief.");
  EXPECT_EQ(parsed->tool_choice, "auto");
  EXPECT_EQ(parsed->text_format["type"], "text");
}

TEST(ResponsesRequestTest, ItemsBecomeChatMessagesWithToolCalls) {
  auto parsed = ParseResponsesRequest(R"({"model": "m", "input": [
      {"role": "developer", "content": "Rules."},
      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
      {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{\"a\": 1}"},
      {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
      {"type": "function_call_output", "call_id": "c1", "output": "sunny"}],
      "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}]})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const Json& messages = parsed->chat.messages;
  ASSERT_EQ(messages.size(), 4u);
  EXPECT_EQ(messages[0]["role"], "system");
  EXPECT_EQ(messages[1]["content"], "Weather?");
  EXPECT_EQ(messages[2]["role"], "assistant");
  ASSERT_EQ(messages[2]["tool_calls"].size(), 2u);
  // The template sees the arguments as an object.
  EXPECT_EQ(messages[2]["tool_calls"][0]["function"]["arguments"]["a"], 1);
  EXPECT_EQ(messages[3]["role"], "tool");
  EXPECT_EQ(messages[3]["tool_call_id"], "c1");
  EXPECT_EQ(parsed->chat.tools[0]["function"]["name"], "w");
  EXPECT_EQ(parsed->chat.output.tool_choice, ToolChoice::kAuto);
}

TEST(ResponsesRequestTest, ToolChoiceAndTextFormat) {
  auto parsed = ParseResponsesRequest(R"({"model": "m", "input": "x",
      "tools": [{"type": "function", "name": "w", "parameters": {"type": "object",
                 "properties": {"c": {"type": "string"}}, "required": ["c"]}}],
      "tool_choice": {"type": "function", "name": "w"}})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->chat.output.tool_choice, ToolChoice::kNamed);
  EXPECT_EQ(parsed->chat.output.tool_name, "w");

  auto format = ParseResponsesRequest(R"({"model": "m", "input": "x", "text": {"format":
      {"type": "json_schema", "name": "n", "schema": {"type": "object"}, "strict": true}}})");
  ASSERT_TRUE(format.ok()) << format.status();
  EXPECT_EQ(format->chat.output.constraint.kind, structured::ConstraintSpec::Kind::kJsonSchema);
  EXPECT_EQ(format->text_format["name"], "n");
}

TEST(ResponsesRequestTest, StateAndUnsupportedItemsAre400) {
  EXPECT_EQ(Param(ParseResponsesRequest(R"({"model": "m", "input": "x", "store": true})")),
            "store");
  EXPECT_EQ(Param(ParseResponsesRequest(
                R"({"model": "m", "input": "x", "previous_response_id": "resp_1"})")),
            "previous_response_id");
  EXPECT_EQ(Param(ParseResponsesRequest(R"({"model": "m"})")), "input");
  EXPECT_EQ(Param(ParseResponsesRequest(
                R"({"model": "m", "input": [{"type": "input_image", "image_url": "x"}]})")),
            "input[0].type");
  EXPECT_EQ(Param(ParseResponsesRequest(
                R"({"model": "m", "input": "x", "tools": [{"type": "web_search"}]})")),
            "tools[0].type");
  // store: false is what tern does anyway.
  EXPECT_TRUE(ParseResponsesRequest(R"({"model": "m", "input": "x", "store": false})").ok());
}

}  // namespace
}  // namespace tern::gateway
