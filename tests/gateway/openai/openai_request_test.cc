#include "gateway/openai/openai_request.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "gateway/http/api_error.h"

namespace tern::gateway {
namespace {

using ::testing::HasSubstr;

// The OpenAI error a body produces, as the client would see it.
struct Rejection {
  int http_status = 0;
  std::string param;  // "" for null
  std::string code;   // "" for null
  std::string message;
};

Rejection Reject(Endpoint endpoint, const std::string& body) {
  const absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(endpoint, body);
  EXPECT_FALSE(parsed.ok()) << body;
  if (parsed.ok()) return {};
  const ApiError error = ToApiError(parsed.status());
  const auto& inner = error.body["error"];
  Rejection r;
  r.http_status = error.http_status;
  r.param = inner["param"].is_null() ? "" : inner["param"].get<std::string>();
  r.code = inner["code"].is_null() ? "" : inner["code"].get<std::string>();
  r.message = inner["message"].get<std::string>();
  return r;
}

std::string Chat(const std::string& extra) {
  return R"({"model":"m","messages":[{"role":"user","content":"hi"}])" +
         (extra.empty() ? "" : "," + extra) + "}";
}
std::string Completion(const std::string& extra) {
  return R"({"model":"m","prompt":"hi")" + (extra.empty() ? "" : "," + extra) + "}";
}

// Asserts that the chat and completions bodies with `extra` are rejected with 400 naming `param`.
void ExpectBadParam(const std::string& extra, const std::string& param) {
  for (const Endpoint endpoint : {Endpoint::kChatCompletions, Endpoint::kCompletions}) {
    const std::string body =
        endpoint == Endpoint::kChatCompletions ? Chat(extra) : Completion(extra);
    const Rejection r = Reject(endpoint, body);
    EXPECT_EQ(r.http_status, 400) << body;
    EXPECT_EQ(r.param, param) << body << " -> " << r.message;
  }
}

TEST(OpenAiRequestTest, ParsesAFullChatRequest) {
  const auto parsed = ParseOpenAiRequest(Endpoint::kChatCompletions, R"({
    "model": "llama", "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
    "max_completion_tokens": 7, "max_tokens": 99, "temperature": 0.5, "top_p": 0.9, "top_k": -1,
    "min_p": 0.1, "seed": 18446744073709551615, "stop": ["x", "y"], "stream": true,
    "stream_options": {"include_usage": true}, "presence_penalty": -2, "frequency_penalty": 2,
    "repetition_penalty": 1.1, "min_tokens": 2, "ignore_eos": true, "stop_token_ids": [128009],
    "logit_bias": {"42": -100, "7": 5.5}, "user": "u1", "n": 1, "logprobs": false,
    "response_format": {"type": "text"}, "tool_choice": "auto", "some_future_field": {"x": 1}})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->model, "llama");
  ASSERT_EQ(parsed->messages.size(), 2u);
  EXPECT_EQ(parsed->messages[1]["content"], "a\nb");
  EXPECT_EQ(parsed->sampling.max_tokens, 7);  // max_completion_tokens wins
  EXPECT_DOUBLE_EQ(*parsed->sampling.temperature, 0.5);
  EXPECT_EQ(*parsed->sampling.top_k, -1);
  EXPECT_EQ(*parsed->sampling.seed, 18446744073709551615ull);
  EXPECT_EQ(parsed->stop, (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(parsed->stream);
  EXPECT_TRUE(parsed->include_usage);
  EXPECT_EQ(parsed->sampling.min_tokens, 2);
  EXPECT_TRUE(parsed->sampling.ignore_eos);
  EXPECT_EQ(parsed->sampling.stop_token_ids, (std::vector<int32_t>{128009}));
  EXPECT_EQ(parsed->sampling.logit_bias.size(), 2u);
  EXPECT_EQ(parsed->user, "u1");
}

TEST(OpenAiRequestTest, NullFieldsCountAsAbsent) {
  const auto parsed = ParseOpenAiRequest(
      Endpoint::kCompletions,
      R"({"model":"m","prompt":"p","max_tokens":null,"temperature":null,"stop":null,"seed":null,"stream":null,"stream_options":null})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_FALSE(parsed->sampling.max_tokens.has_value());
  EXPECT_FALSE(parsed->sampling.temperature.has_value());
  EXPECT_FALSE(parsed->stream);
}

TEST(OpenAiRequestTest, PromptForms) {
  auto parsed =
      ParseOpenAiRequest(Endpoint::kCompletions, R"({"model":"m","prompt":["only one"]})");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->prompt, "only one");
  EXPECT_FALSE(parsed->prompt_is_tokens);
  parsed = ParseOpenAiRequest(Endpoint::kCompletions, R"({"model":"m","prompt":[1, 2, 3]})");
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(parsed->prompt_is_tokens);
  EXPECT_EQ(parsed->prompt_token_ids, (std::vector<int32_t>{1, 2, 3}));
  parsed = ParseOpenAiRequest(Endpoint::kCompletions, R"({"model":"m","prompt":[[5, 6]]})");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->prompt_token_ids, (std::vector<int32_t>{5, 6}));

  // A batch of prompts, strings or token ids.
  parsed = ParseOpenAiRequest(Endpoint::kCompletions, R"({"model":"m","prompt":["a",[7,8],"c"]})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->prompts.size(), 3u);
  EXPECT_EQ(parsed->prompts[0].text, "a");
  EXPECT_TRUE(parsed->prompts[1].is_tokens);
  EXPECT_EQ(parsed->prompts[1].token_ids, (std::vector<int32_t>{7, 8}));
  EXPECT_EQ(parsed->prompt, "a");
  EXPECT_EQ(Reject(Endpoint::kCompletions, R"({"model":"m","prompt":["a",[]]})").param,
            "prompt[1]");
  EXPECT_EQ(Reject(Endpoint::kCompletions, R"({"model":"m","prompt":["a",5]})").param, "prompt[1]");
  EXPECT_EQ(Reject(Endpoint::kCompletions, R"({"model":"m","prompt":[]})").param, "prompt");
  EXPECT_EQ(Reject(Endpoint::kCompletions, R"({"model":"m","prompt":[1,-2]})").param, "prompt[1]");
  EXPECT_EQ(Reject(Endpoint::kCompletions, R"({"model":"m","prompt":[1,"x"]})").param, "prompt[1]");
  EXPECT_EQ(Reject(Endpoint::kCompletions, R"({"model":"m","prompt":5})").param, "prompt");
  EXPECT_EQ(Reject(Endpoint::kCompletions, R"({"model":"m"})").param, "prompt");
}

TEST(OpenAiRequestTest, ChoicesAndEcho) {
  auto parsed =
      ParseOpenAiRequest(Endpoint::kCompletions, R"({"model":"m","prompt":"x","n":3,"echo":true})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->n, 3);
  EXPECT_TRUE(parsed->echo);
  parsed = ParseOpenAiRequest(Endpoint::kChatCompletions, Chat(R"("n":4)"));
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->n, 4);
  // n times the prompts is bounded.
  std::string prompts = "[";
  for (int i = 0; i < 3; ++i) prompts += (i ? ",\"p\"" : "\"p\"");
  prompts += "]";
  EXPECT_EQ(
      Reject(Endpoint::kCompletions, R"({"model":"m","n":50,"prompt":)" + prompts + "}").param,
      "n");
}

TEST(OpenAiRequestTest, MalformedJsonIs400WithoutParam) {
  for (const char* body :
       {"", "{", "{\"model\": }", "[1,2", "nul", "{\"a\":1}x", "{\"s\":\"\xff\"}"}) {
    const Rejection r = Reject(Endpoint::kChatCompletions, body);
    EXPECT_EQ(r.http_status, 400) << body;
    EXPECT_EQ(r.param, "") << body;
  }
  EXPECT_EQ(Reject(Endpoint::kChatCompletions, "[]").http_status, 400);
  EXPECT_EQ(Reject(Endpoint::kChatCompletions, "\"text\"").http_status, 400);
}

TEST(OpenAiRequestTest, DeepNestingIsRejectedBeforeParsing) {
  std::string deep(100000, '[');
  Rejection r = Reject(Endpoint::kChatCompletions, deep);
  EXPECT_EQ(r.http_status, 400);
  EXPECT_THAT(r.message, HasSubstr("nested"));
  // Nesting inside an unknown field counts too.
  std::string body = R"({"model":"m","messages":[{"role":"user","content":"x"}],"junk":)";
  body += std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']') + "}";
  EXPECT_EQ(Reject(Endpoint::kChatCompletions, body).http_status, 400);
  // Brackets inside strings do not count.
  const std::string quoted = Chat(R"("junk":")" + std::string(1000, '[') + R"(\"[[")");
  EXPECT_TRUE(ParseOpenAiRequest(Endpoint::kChatCompletions, quoted).ok());
}

TEST(OpenAiRequestTest, MissingOrMistypedRequiredFields) {
  EXPECT_EQ(
      Reject(Endpoint::kChatCompletions, R"({"messages":[{"role":"user","content":"x"}]})").param,
      "model");
  EXPECT_EQ(Reject(Endpoint::kChatCompletions, R"({"model":5,"messages":[]})").param, "model");
  EXPECT_EQ(Reject(Endpoint::kChatCompletions, R"({"model":"m"})").param, "messages");
  EXPECT_EQ(Reject(Endpoint::kChatCompletions, R"({"model":"m","messages":{}})").param, "messages");
  EXPECT_EQ(Reject(Endpoint::kChatCompletions, R"({"model":"m","messages":[]})").param, "messages");
  EXPECT_EQ(Reject(Endpoint::kChatCompletions, R"({"model":"m","messages":["hi"]})").param,
            "messages[0]");
  EXPECT_EQ(
      Reject(Endpoint::kChatCompletions, R"({"model":"m","messages":[{"content":"x"}]})").param,
      "messages[0].role");
  EXPECT_EQ(Reject(Endpoint::kChatCompletions,
                   R"({"model":"m","messages":[{"role":"user","content":"a"},{"role":"user"}]})")
                .param,
            "messages[1].content");
  EXPECT_EQ(Reject(Endpoint::kChatCompletions,
                   R"({"model":"m","messages":[{"role":"user","content":7}]})")
                .param,
            "messages[0].content");
}

TEST(OpenAiRequestTest, ContentPartsOtherThanTextAre400) {
  const Rejection r =
      Reject(Endpoint::kChatCompletions,
             R"({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},
                                 {"type":"image_url","image_url":{"url":"http://x"}}]}]})");
  EXPECT_EQ(r.http_status, 400);
  EXPECT_EQ(r.param, "messages[0].content[1].type");
  EXPECT_EQ(
      Reject(Endpoint::kChatCompletions,
             R"({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":3}]}]})")
          .param,
      "messages[0].content[0].text");
}

TEST(OpenAiRequestTest, AssistantToolCallMessageMayOmitContent) {
  const auto parsed =
      ParseOpenAiRequest(Endpoint::kChatCompletions,
                         R"({"model":"m","messages":[{"role":"user","content":"weather?"},
          {"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"w","arguments":"{}"}}]},
          {"role":"tool","tool_call_id":"c1","content":"sunny"}],
          "tools":[{"type":"function","function":{"name":"w","parameters":{"type":"object"}}}]})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->messages[1]["content"].is_null());
  EXPECT_EQ(parsed->messages[1]["tool_calls"][0]["function"]["name"], "w");
  EXPECT_EQ(parsed->messages[2]["tool_call_id"], "c1");
  ASSERT_TRUE(parsed->tools.is_array());
  EXPECT_EQ(parsed->tools[0]["function"]["name"], "w");
  EXPECT_EQ(Reject(Endpoint::kChatCompletions, Chat(R"("tools":[{"type":"function"}])")).param,
            "tools[0]");
  EXPECT_EQ(Reject(Endpoint::kChatCompletions, Chat(R"("tools":{})")).param, "tools");
}

TEST(OpenAiRequestTest, SamplingRangesNameTheParam) {
  ExpectBadParam(R"("temperature":-0.1)", "temperature");
  ExpectBadParam(R"("temperature":2.5)", "temperature");
  ExpectBadParam(R"("temperature":"hot")", "temperature");
  ExpectBadParam(R"("temperature":1e999)", "");  // overflows while parsing: malformed JSON
  ExpectBadParam(R"("top_p":0)", "top_p");
  ExpectBadParam(R"("top_p":1.01)", "top_p");
  ExpectBadParam(R"("top_k":-2)", "top_k");
  ExpectBadParam(R"("top_k":1.5)", "top_k");
  ExpectBadParam(R"("min_p":-0.5)", "min_p");
  ExpectBadParam(R"("min_p":1.5)", "min_p");
  ExpectBadParam(R"("presence_penalty":2.01)", "presence_penalty");
  ExpectBadParam(R"("frequency_penalty":-3)", "frequency_penalty");
  ExpectBadParam(R"("repetition_penalty":0)", "repetition_penalty");
  ExpectBadParam(R"("repetition_penalty":-1)", "repetition_penalty");
  ExpectBadParam(R"("max_tokens":0)", "max_tokens");
  ExpectBadParam(R"("max_tokens":-5)", "max_tokens");
  ExpectBadParam(R"("max_tokens":3.5)", "max_tokens");
  ExpectBadParam(R"("max_tokens":"10")", "max_tokens");
  ExpectBadParam(R"("max_tokens":4294967296)", "max_tokens");
  ExpectBadParam(R"("seed":1.5)", "seed");
  ExpectBadParam(R"("seed":"42")", "seed");
  ExpectBadParam(R"("min_tokens":-1)", "min_tokens");
  ExpectBadParam(R"("max_tokens":5,"min_tokens":6)", "min_tokens");
  ExpectBadParam(R"("ignore_eos":1)", "ignore_eos");
  ExpectBadParam(R"("stream":"yes")", "stream");
  ExpectBadParam(R"("stop_token_ids":5)", "stop_token_ids");
  ExpectBadParam(R"("stop_token_ids":[-1])", "stop_token_ids[0]");
  ExpectBadParam(R"("logit_bias":{"x":1})", "logit_bias");
  ExpectBadParam(R"("logit_bias":{"5":101})", "logit_bias");
  ExpectBadParam(R"("logit_bias":[1])", "logit_bias");
  ExpectBadParam(R"("user":5)", "user");
  ExpectBadParam(R"("n":0)", "n");
  EXPECT_EQ(Reject(Endpoint::kChatCompletions, Chat(R"("max_completion_tokens":0)")).param,
            "max_completion_tokens");
}

TEST(OpenAiRequestTest, StopSequences) {
  auto parsed = ParseOpenAiRequest(Endpoint::kCompletions, Completion(R"("stop":"\n")"));
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->stop, std::vector<std::string>{"\n"});
  ExpectBadParam(R"("stop":["a","b","c","d","e"])", "stop");
  ExpectBadParam(R"("stop":[1])", "stop");
  ExpectBadParam(R"("stop":5)", "stop");
  ExpectBadParam(R"("stop":[""])", "stop");
  ExpectBadParam("\"stop\":\"" + std::string(kMaxStopBytes + 1, 'x') + "\"", "stop");
  EXPECT_TRUE(ParseOpenAiRequest(Endpoint::kCompletions,
                                 Completion("\"stop\":\"" + std::string(kMaxStopBytes, 'x') + "\""))
                  .ok());
}

TEST(OpenAiRequestTest, StreamOptionsNeedStream) {
  ExpectBadParam(R"("stream_options":{"include_usage":true})", "stream_options");
  ExpectBadParam(R"("stream":true,"stream_options":{"include_usage":"yes"})",
                 "stream_options.include_usage");
  ExpectBadParam(R"("stream":true,"stream_options":true)", "stream_options");
}

TEST(OpenAiRequestTest, KnownFieldsThatCannotBeHonouredAre400) {
  ExpectBadParam(R"("n":129)", "n");
  ExpectBadParam(R"("n":0)", "n");
  ExpectBadParam(R"("use_beam_search":true)", "use_beam_search");
  const std::pair<const char*, const char*> completion_cases[] = {
      {R"("echo":true,"logprobs":1)", "echo"},
      {R"("best_of":3)", "best_of"},
      {R"("suffix":"x")", "suffix"},
  };
  for (const auto& [extra, param] : completion_cases) {
    const Rejection r = Reject(Endpoint::kCompletions, Completion(extra));
    EXPECT_EQ(r.http_status, 400) << extra;
    EXPECT_EQ(r.param, param) << extra;
  }
  const std::pair<const char*, const char*> chat_cases[] = {
      {R"("response_format":"json")", "response_format"},
      // Without tools, a required or named tool cannot be honoured.
      {R"("tool_choice":"required")", "tool_choice"},
      {R"("tool_choice":{"type":"function","function":{"name":"f"}})", "tool_choice"},
      {R"("continue_final_message":true)", "continue_final_message"},
      {R"("chat_template":"{{ x }}")", "chat_template"},
  };
  for (const auto& [extra, param] : chat_cases) {
    const Rejection r = Reject(Endpoint::kChatCompletions, Chat(extra));
    EXPECT_EQ(r.http_status, 400) << extra;
    EXPECT_EQ(r.param, param) << extra;
  }
  // Harmless values of those fields are accepted.
  EXPECT_TRUE(
      ParseOpenAiRequest(Endpoint::kCompletions, Completion(R"("echo":false,"n":1,"best_of":1)"))
          .ok());
  EXPECT_TRUE(ParseOpenAiRequest(Endpoint::kChatCompletions,
                                 Chat(R"("logprobs":false,"top_logprobs":0,"tool_choice":"none")"))
                  .ok());
}

TEST(OpenAiRequestTest, ChatLogprobsAreABooleanWithUpTo20Alternatives) {
  const auto off = ParseOpenAiRequest(Endpoint::kChatCompletions, Chat(""));
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->sampling.logprobs);
  EXPECT_EQ(off->sampling.top_logprobs, 0);

  const auto sampled_only =
      ParseOpenAiRequest(Endpoint::kChatCompletions, Chat(R"("logprobs":true)"));
  ASSERT_TRUE(sampled_only.ok()) << sampled_only.status();
  EXPECT_TRUE(sampled_only->sampling.logprobs);
  EXPECT_EQ(sampled_only->sampling.top_logprobs, 0);

  const auto top =
      ParseOpenAiRequest(Endpoint::kChatCompletions, Chat(R"("logprobs":true,"top_logprobs":20)"));
  ASSERT_TRUE(top.ok()) << top.status();
  EXPECT_TRUE(top->sampling.logprobs);
  EXPECT_EQ(top->sampling.top_logprobs, 20);

  const std::pair<const char*, const char*> bad[] = {
      {R"("logprobs":true,"top_logprobs":21)", "top_logprobs"},
      {R"("logprobs":true,"top_logprobs":-1)", "top_logprobs"},
      {R"("top_logprobs":3)", "top_logprobs"},  // needs logprobs: true
      {R"("logprobs":false,"top_logprobs":3)", "top_logprobs"},
      {R"("logprobs":1)", "logprobs"},
      {R"("logprobs":true,"top_logprobs":2.5)", "top_logprobs"},
  };
  for (const auto& [extra, param] : bad) {
    const Rejection r = Reject(Endpoint::kChatCompletions, Chat(extra));
    EXPECT_EQ(r.http_status, 400) << extra;
    EXPECT_EQ(r.param, param) << extra;
  }
}

TEST(OpenAiRequestTest, CompletionLogprobsAreTheLegacyCountOfAlternatives) {
  const auto zero = ParseOpenAiRequest(Endpoint::kCompletions, Completion(R"("logprobs":0)"));
  ASSERT_TRUE(zero.ok()) << zero.status();
  EXPECT_TRUE(zero->sampling.logprobs);  // 0: the sampled token's logprob only
  EXPECT_EQ(zero->sampling.top_logprobs, 0);
  const auto five = ParseOpenAiRequest(Endpoint::kCompletions, Completion(R"("logprobs":5)"));
  ASSERT_TRUE(five.ok()) << five.status();
  EXPECT_TRUE(five->sampling.logprobs);
  EXPECT_EQ(five->sampling.top_logprobs, 5);
  const auto absent = ParseOpenAiRequest(Endpoint::kCompletions, Completion(R"("logprobs":null)"));
  ASSERT_TRUE(absent.ok());
  EXPECT_FALSE(absent->sampling.logprobs);
  for (const char* extra : {R"("logprobs":6)", R"("logprobs":-1)", R"("logprobs":true)"}) {
    const Rejection r = Reject(Endpoint::kCompletions, Completion(extra));
    EXPECT_EQ(r.http_status, 400) << extra;
    EXPECT_EQ(r.param, "logprobs") << extra;
  }
}

TEST(OpenAiRequestTest, MessagesContentIsFlattenedForTheTemplate) {
  const auto parsed = ParseOpenAiRequest(
      Endpoint::kChatCompletions,
      R"({"model":"m","messages":[{"role":"user","name":"bob","content":[{"type":"text","text":"only"}]}]})");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->messages[0]["content"], "only");
  EXPECT_EQ(parsed->messages[0]["name"], "bob");
}

}  // namespace
}  // namespace tern::gateway
