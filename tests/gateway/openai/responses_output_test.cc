#include "gateway/openai/responses_output.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tern::gateway {
namespace {

// The event types of `events`, in order, after checking each is well formed.
std::vector<std::string> Types(const std::vector<std::string>& events, int64_t* sequence) {
  std::vector<std::string> types;
  for (const std::string& event : events) {
    const size_t data = event.find("\ndata: ");
    EXPECT_EQ(event.rfind("event: ", 0), 0u) << event;
    EXPECT_NE(data, std::string::npos) << event;
    const Json json = Json::parse(event.substr(data + 7));
    EXPECT_EQ("event: " + json["type"].get<std::string>(), event.substr(0, data));
    EXPECT_EQ(json["sequence_number"], (*sequence)++);
    types.push_back(json["type"]);
  }
  return types;
}

ResponsesRequest Request() {
  auto parsed = ParseResponsesRequest(R"({"model": "m", "input": "x", "max_output_tokens": 9})");
  EXPECT_TRUE(parsed.ok());
  return *parsed;
}

TEST(ResponsesOutputTest, TextEventsInTheSdksOrder) {
  ResponsesOutput output(Request(), "m", 123);
  int64_t sequence = 0;
  EXPECT_THAT(Types(output.Start(), &sequence),
              ::testing::ElementsAre("response.created", "response.in_progress"));
  EXPECT_THAT(Types(output.Text("Hel"), &sequence),
              ::testing::ElementsAre("response.output_item.added", "response.content_part.added",
                                     "response.output_text.delta"));
  EXPECT_THAT(Types(output.Text("lo"), &sequence),
              ::testing::ElementsAre("response.output_text.delta"));
  TokenUsage usage{5, 2, 1};
  EXPECT_THAT(Types(output.Finish("stop", usage), &sequence),
              ::testing::ElementsAre("response.output_text.done", "response.content_part.done",
                                     "response.output_item.done", "response.completed"));
  const Json& response = output.Response();
  EXPECT_EQ(response["status"], "completed");
  EXPECT_EQ(response["output"][0]["content"][0]["text"], "Hello");
  EXPECT_EQ(response["usage"]["input_tokens"], 5);
  EXPECT_EQ(response["usage"]["output_tokens"], 2);
  EXPECT_EQ(response["usage"]["input_tokens_details"]["cached_tokens"], 1);
  EXPECT_EQ(response["max_output_tokens"], 9);
  EXPECT_THAT(response["id"].get<std::string>(), ::testing::StartsWith("resp_"));
}

TEST(ResponsesOutputTest, FunctionCallsAndIncomplete) {
  ResponsesOutput output(Request(), "m", 123);
  int64_t sequence = 0;
  (void)Types(output.Start(), &sequence);
  const Json first = Json::array({{{"index", 0},
                                   {"id", "call_1"},
                                   {"type", "function"},
                                   {"function", {{"name", "f"}, {"arguments", "{\"a\""}}}}});
  EXPECT_THAT(Types(output.ToolCalls(first), &sequence),
              ::testing::ElementsAre("response.output_item.added",
                                     "response.function_call_arguments.delta"));
  const Json more = Json::array({{{"index", 0}, {"function", {{"arguments", ": 1}"}}}}});
  EXPECT_THAT(Types(output.ToolCalls(more), &sequence),
              ::testing::ElementsAre("response.function_call_arguments.delta"));
  EXPECT_THAT(Types(output.Finish("length", TokenUsage{}), &sequence),
              ::testing::ElementsAre("response.function_call_arguments.done",
                                     "response.output_item.done", "response.incomplete"));
  const Json& item = output.Response()["output"][0];
  EXPECT_EQ(item["type"], "function_call");
  EXPECT_EQ(item["call_id"], "call_1");
  EXPECT_EQ(item["arguments"], "{\"a\": 1}");
  EXPECT_EQ(output.Response()["incomplete_details"]["reason"], "max_output_tokens");
}

}  // namespace
}  // namespace tern::gateway
