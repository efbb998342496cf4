#include "gateway/inference_api/request_translation.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "gateway/openai/json_fields.h"

namespace tern::gateway {
namespace {

using ::testing::HasSubstr;

tern::v1::ChatRequest UserChat(const std::string& text) {
  tern::v1::ChatRequest request;
  request.set_model("llama");
  tern::v1::ChatMessage* message = request.add_messages();
  message->set_role("user");
  message->set_content(text);
  return request;
}

TEST(RequestTranslationTest, CompletionBodyCarriesOnlyTheFieldsSet) {
  tern::v1::CompleteRequest request;
  request.set_model("llama");
  request.set_prompt("Once upon");
  absl::StatusOr<Json> body = RestBody(request);
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*body, Json::parse(R"({"model":"llama","prompt":"Once upon","stream":true,
                                   "stream_options":{"include_usage":true}})"));
}

TEST(RequestTranslationTest, SamplingFieldsTakeTheirRestNames) {
  tern::v1::CompleteRequest request;
  request.set_model("llama");
  request.add_prompt_token_ids(1);
  request.add_prompt_token_ids(2);
  request.set_n(2);
  tern::v1::Sampling& s = *request.mutable_sampling();
  s.set_temperature(0.7);
  s.set_top_p(0.9);
  s.set_top_k(40);
  s.set_min_p(0.05);
  s.set_presence_penalty(0.5);
  s.set_frequency_penalty(-0.5);
  s.set_repetition_penalty(1.1);
  s.set_seed(42);
  s.set_max_tokens(16);
  s.set_min_tokens(2);
  s.add_stop("\n\n");
  s.add_stop_token_ids(7);
  s.set_ignore_eos(true);
  s.set_logprobs(true);
  s.set_top_logprobs(3);
  (*s.mutable_logit_bias())[300] = -100;
  (*s.mutable_logit_bias())[20] = 5.5;
  absl::StatusOr<Json> body = RestBody(request);
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(body->dump(),
            R"({"model":"llama","prompt":[1,2],"n":2,"temperature":0.7,"top_p":0.9,"top_k":40,)"
            R"("min_p":0.05,"presence_penalty":0.5,"frequency_penalty":-0.5,)"
            R"("repetition_penalty":1.1,"seed":42,"max_tokens":16,"min_tokens":2,)"
            R"("stop":["\n\n"],"stop_token_ids":[7],"ignore_eos":true,"logprobs":3,)"
            R"("logit_bias":{"20":5.5,"300":-100.0},"stream":true,)"
            R"("stream_options":{"include_usage":true}})");
}

TEST(RequestTranslationTest, ZeroTemperatureIsSentNotDropped) {
  tern::v1::ChatRequest request = UserChat("hi");
  request.mutable_sampling()->set_temperature(0);
  absl::StatusOr<OpenAiRequest> parsed = ParseRequest(request);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_TRUE(parsed->sampling.temperature.has_value());
  EXPECT_EQ(*parsed->sampling.temperature, 0);
  EXPECT_FALSE(parsed->sampling.seed.has_value());
  EXPECT_FALSE(parsed->sampling.max_tokens.has_value());
}

TEST(RequestTranslationTest, ChatMessagesKeepToolCallsAndToolAnswers) {
  tern::v1::ChatRequest request = UserChat("Weather in Paris?");
  tern::v1::ChatMessage* assistant = request.add_messages();
  assistant->set_role("assistant");
  tern::v1::ToolCall* call = assistant->add_tool_calls();
  call->set_id("call_1");
  call->set_name("weather");
  call->set_arguments(R"({"city":"Paris"})");
  tern::v1::ChatMessage* tool = request.add_messages();
  tool->set_role("tool");
  tool->set_tool_call_id("call_1");
  tool->set_name("weather");
  tool->set_content("sunny");
  absl::StatusOr<Json> body = RestBody(request);
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ((*body)["messages"], Json::parse(R"([
      {"role":"user","content":"Weather in Paris?"},
      {"role":"assistant","tool_calls":[{"id":"call_1","type":"function",
        "function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}}]},
      {"role":"tool","content":"sunny","name":"weather","tool_call_id":"call_1"}])"));
  absl::StatusOr<OpenAiRequest> parsed = ParseRequest(request);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->messages[1]["content"].is_null());
}

TEST(RequestTranslationTest, ToolsAndToolChoice) {
  tern::v1::ChatRequest request = UserChat("hi");
  tern::v1::Tool* tool = request.add_tools();
  tool->set_name("weather");
  tool->set_description("Current weather");
  tool->set_parameters(R"({"type":"object","properties":{"city":{"type":"string"}}})");
  request.mutable_tool_choice()->set_function_name("weather");
  request.set_parallel_tool_calls(false);
  absl::StatusOr<Json> body = RestBody(request);
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ((*body)["tools"], Json::parse(R"([{"type":"function","function":{"name":"weather",
      "description":"Current weather",
      "parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}])"));
  EXPECT_EQ((*body)["tool_choice"],
            Json::parse(R"({"type":"function","function":{"name":"weather"}})"));
  EXPECT_EQ((*body)["parallel_tool_calls"], false);
  absl::StatusOr<OpenAiRequest> parsed = ParseRequest(request);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->output.tool_choice, ToolChoice::kNamed);
  EXPECT_EQ(parsed->output.tool_name, "weather");

  for (const auto& [mode, text] : {std::pair{tern::v1::ToolChoice::MODE_AUTO, "auto"},
                                   std::pair{tern::v1::ToolChoice::MODE_NONE, "none"},
                                   std::pair{tern::v1::ToolChoice::MODE_REQUIRED, "required"}}) {
    request.mutable_tool_choice()->set_mode(mode);
    body = RestBody(request);
    ASSERT_TRUE(body.ok()) << body.status();
    EXPECT_EQ((*body)["tool_choice"], text);
  }
  request.mutable_tool_choice()->set_mode(tern::v1::ToolChoice::MODE_UNSPECIFIED);
  body = RestBody(request);
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_FALSE(body->contains("tool_choice"));
}

TEST(RequestTranslationTest, ToolParametersMustBeJson) {
  tern::v1::ChatRequest request = UserChat("hi");
  request.add_tools()->set_name("a");
  request.add_tools()->set_parameters("{not json");
  absl::StatusOr<OpenAiRequest> parsed = ParseRequest(request);
  ASSERT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(parsed.status().message(), "'tools[1].function.parameters' is not valid JSON.");
}

TEST(RequestTranslationTest, OutputFormats) {
  tern::v1::CompleteRequest request;
  request.set_model("llama");
  request.set_prompt("x");
  request.mutable_output_format()->set_json_object(true);
  EXPECT_EQ((*RestBody(request))["response_format"], Json::parse(R"({"type":"json_object"})"));

  tern::v1::JsonSchemaFormat& schema = *request.mutable_output_format()->mutable_json_schema();
  schema.set_name("answer");
  schema.set_schema(R"({"type":"object"})");
  schema.set_strict(true);
  EXPECT_EQ((*RestBody(request))["response_format"],
            Json::parse(R"({"type":"json_schema","json_schema":{"name":"answer",
                            "schema":{"type":"object"},"strict":true}})"));

  request.mutable_output_format()->set_regex("[0-9]+");
  EXPECT_EQ((*RestBody(request))["structured_outputs"], Json::parse(R"({"regex":"[0-9]+"})"));
  absl::StatusOr<OpenAiRequest> parsed = ParseRequest(request);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->output.constraint.regex, "[0-9]+");

  request.mutable_output_format()->mutable_choice()->add_choices("yes");
  request.mutable_output_format()->mutable_choice()->add_choices("no");
  EXPECT_EQ((*RestBody(request))["structured_outputs"], Json::parse(R"({"choice":["yes","no"]})"));

  request.mutable_output_format()->mutable_json_schema()->set_schema("[");
  EXPECT_EQ(RestBody(request).status().message(),
            "'response_format.json_schema.schema' is not valid JSON.");
}

TEST(RequestTranslationTest, ErrorsAreTheRestParsersOwn) {
  // The same request over REST and gRPC fails with the same status.
  tern::v1::ChatRequest request = UserChat("hi");
  request.mutable_sampling()->set_temperature(3);
  const absl::Status grpc_status = ParseRequest(request).status();
  const absl::Status rest_status =
      ParseOpenAiRequest(Endpoint::kChatCompletions,
                         R"({"model":"llama","messages":[{"role":"user","content":"hi"}],)"
                         R"("temperature":3,"stream":true})")
          .status();
  ASSERT_EQ(grpc_status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(grpc_status, rest_status);
  EXPECT_THAT(std::string(grpc_status.message()), HasSubstr("temperature"));

  tern::v1::ChatRequest empty;
  empty.set_model("llama");
  EXPECT_EQ(ParseRequest(empty).status().message(),
            "'messages' must contain at least one message.");
}

TEST(RequestTranslationTest, CompletionTopLogprobsNeedLogprobs) {
  tern::v1::CompleteRequest request;
  request.set_model("llama");
  request.set_prompt("x");
  request.mutable_sampling()->set_top_logprobs(2);
  const absl::Status status = ParseRequest(request).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "'logprobs' must be true when 'top_logprobs' is used.");

  request.mutable_sampling()->set_logprobs(true);
  absl::StatusOr<OpenAiRequest> parsed = ParseRequest(request);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->sampling.logprobs);
  EXPECT_EQ(parsed->sampling.top_logprobs, 2);
}

TEST(RequestTranslationTest, ChatLogprobsAndChoices) {
  tern::v1::ChatRequest request = UserChat("hi");
  request.set_n(3);
  request.mutable_sampling()->set_logprobs(true);
  request.mutable_sampling()->set_top_logprobs(5);
  request.mutable_sampling()->set_seed(9);
  absl::StatusOr<OpenAiRequest> parsed = ParseRequest(request);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->n, 3);
  EXPECT_TRUE(parsed->sampling.logprobs);
  EXPECT_EQ(parsed->sampling.top_logprobs, 5);
  EXPECT_EQ(parsed->sampling.seed, 9u);
  EXPECT_TRUE(parsed->stream);
}

}  // namespace
}  // namespace tern::gateway
