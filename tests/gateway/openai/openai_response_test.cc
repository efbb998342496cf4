#include "gateway/openai/openai_response.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>

namespace tern::gateway {
namespace {

using ::testing::ElementsAre;
using ::testing::MatchesRegex;
using ::testing::StartsWith;

ResponseIdentity Identity(Endpoint endpoint, bool include_usage) {
  ResponseIdentity identity;
  identity.id = endpoint == Endpoint::kChatCompletions ? "chatcmpl-abc" : "cmpl-abc";
  identity.created = 1735000000;
  identity.model = "llama-3.1-8b-instruct";
  identity.endpoint = endpoint;
  identity.include_usage = include_usage;
  return identity;
}

std::vector<std::string> Keys(const OrderedJson& object) {
  std::vector<std::string> keys;
  for (const auto& item : object.items()) keys.push_back(item.key());
  return keys;
}

TEST(OpenAiResponseTest, ResponseIdsAreRandomHexWithThePrefix) {
  const std::string chat = NewResponseId(Endpoint::kChatCompletions);
  const std::string completion = NewResponseId(Endpoint::kCompletions);
  EXPECT_THAT(chat, MatchesRegex("chatcmpl-[0-9a-f]{32}"));
  EXPECT_THAT(completion, MatchesRegex("cmpl-[0-9a-f]{32}"));
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i) ids.insert(NewResponseId(Endpoint::kCompletions));
  EXPECT_EQ(ids.size(), 1000u);
}

TEST(OpenAiResponseTest, SseFraming) {
  OrderedJson json;
  json["a"] = 1;
  EXPECT_EQ(SseEvent(json), "data: {\"a\":1}\n\n");
  EXPECT_EQ(SseDone(), "data: [DONE]\n\n");
}

TEST(OpenAiResponseTest, ChatStreamChunksMatchOpenAi) {
  const ResponseIdentity id = Identity(Endpoint::kChatCompletions, /*include_usage=*/true);
  EXPECT_EQ(
      DumpJson(ChatRoleChunk(id)),
      R"({"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1735000000,)"
      R"("model":"llama-3.1-8b-instruct","choices":[{"index":0,"delta":{"role":"assistant","content":""},)"
      R"("logprobs":null,"finish_reason":null}],"usage":null})");
  EXPECT_EQ(DumpJson(ChatContentChunk(id, "Hel")),
            R"({"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1735000000,)"
            R"("model":"llama-3.1-8b-instruct","choices":[{"index":0,"delta":{"content":"Hel"},)"
            R"("logprobs":null,"finish_reason":null}],"usage":null})");
  EXPECT_EQ(DumpJson(ChatFinishChunk(id, "stop")),
            R"({"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1735000000,)"
            R"("model":"llama-3.1-8b-instruct","choices":[{"index":0,"delta":{},)"
            R"("logprobs":null,"finish_reason":"stop"}],"usage":null})");
  TokenUsage usage;
  usage.prompt_tokens = 42;
  usage.completion_tokens = 2;
  usage.cached_tokens = 16;
  EXPECT_EQ(
      DumpJson(UsageChunk(id, usage)),
      R"({"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1735000000,)"
      R"("model":"llama-3.1-8b-instruct","choices":[],"usage":{"prompt_tokens":42,)"
      R"("completion_tokens":2,"total_tokens":44,"prompt_tokens_details":{"cached_tokens":16}}})");
}

TEST(OpenAiResponseTest, ChunksOmitUsageWithoutIncludeUsage) {
  const ResponseIdentity id = Identity(Endpoint::kChatCompletions, /*include_usage=*/false);
  EXPECT_FALSE(ChatRoleChunk(id).contains("usage"));
  EXPECT_FALSE(ChatContentChunk(id, "x").contains("usage"));
  EXPECT_FALSE(ChatFinishChunk(id, "length").contains("usage"));
}

TEST(OpenAiResponseTest, CompletionStreamChunks) {
  const ResponseIdentity id = Identity(Endpoint::kCompletions, /*include_usage=*/false);
  EXPECT_EQ(DumpJson(CompletionTextChunk(id, "lo")),
            R"({"id":"cmpl-abc","object":"text_completion","created":1735000000,)"
            R"("model":"llama-3.1-8b-instruct","choices":[{"index":0,"text":"lo","logprobs":null,)"
            R"("finish_reason":null}]})");
  EXPECT_EQ(DumpJson(CompletionFinishChunk(id, "length")),
            R"({"id":"cmpl-abc","object":"text_completion","created":1735000000,)"
            R"("model":"llama-3.1-8b-instruct","choices":[{"index":0,"text":"","logprobs":null,)"
            R"("finish_reason":"length"}]})");
  const ResponseIdentity with_usage = Identity(Endpoint::kCompletions, /*include_usage=*/true);
  const OrderedJson usage = UsageChunk(with_usage, TokenUsage{3, 4, 0});
  EXPECT_EQ(usage["object"], "text_completion");
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);
  EXPECT_TRUE(CompletionTextChunk(with_usage, "x")["usage"].is_null());
}

TEST(OpenAiResponseTest, NonStreamingChatBody) {
  const OrderedJson body = ChatCompletionBody(Identity(Endpoint::kChatCompletions, false), "Hello!",
                                              "stop", TokenUsage{10, 3, 0});
  EXPECT_THAT(Keys(body), ElementsAre("id", "object", "created", "model", "choices", "usage"));
  EXPECT_EQ(body["object"], "chat.completion");
  ASSERT_EQ(body["choices"].size(), 1u);
  const OrderedJson& choice = body["choices"][0];
  EXPECT_THAT(Keys(choice), ElementsAre("index", "message", "logprobs", "finish_reason"));
  EXPECT_EQ(choice["index"], 0);
  EXPECT_EQ(choice["message"]["role"], "assistant");
  EXPECT_EQ(choice["message"]["content"], "Hello!");
  EXPECT_TRUE(choice["logprobs"].is_null());
  EXPECT_EQ(choice["finish_reason"], "stop");
  EXPECT_EQ(body["usage"]["prompt_tokens"], 10);
  EXPECT_EQ(body["usage"]["completion_tokens"], 3);
  EXPECT_EQ(body["usage"]["total_tokens"], 13);
  EXPECT_EQ(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
}

TEST(OpenAiResponseTest, NonStreamingCompletionBody) {
  const OrderedJson body = CompletionBody(Identity(Endpoint::kCompletions, false), " world",
                                          "length", TokenUsage{1, 16, 0});
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["id"], "cmpl-abc");
  EXPECT_EQ(body["choices"][0]["text"], " world");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(body["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(body["usage"]["total_tokens"], 17);
}

TEST(OpenAiResponseTest, InvalidUtf8IsReplacedNotThrown) {
  const std::string event =
      SseEvent(ChatContentChunk(Identity(Endpoint::kChatCompletions, false), "a\xff"));
  EXPECT_THAT(event, StartsWith("data: {"));
  EXPECT_NE(event.find("a\xef\xbf\xbd"), std::string::npos);  // U+FFFD
}

TEST(OpenAiResponseTest, ModelList) {
  const OrderedJson body = ModelListBody("llama", 1700000000, 8192);
  EXPECT_EQ(body["object"], "list");
  ASSERT_EQ(body["data"].size(), 1u);
  EXPECT_EQ(body["data"][0]["id"], "llama");
  EXPECT_EQ(body["data"][0]["object"], "model");
  EXPECT_EQ(body["data"][0]["created"], 1700000000);
  EXPECT_EQ(body["data"][0]["max_model_len"], 8192);
  EXPECT_TRUE(body["data"][0].contains("owned_by"));
}

TEST(OpenAiResponseTest, LogprobsGoInTheChoice) {
  const OrderedJson logprobs = {{"content", OrderedJson::array()}};
  const ResponseIdentity chat = Identity(Endpoint::kChatCompletions, false);
  EXPECT_EQ(ChatContentChunk(chat, "x", logprobs)["choices"][0]["logprobs"], logprobs);
  EXPECT_EQ(ChatCompletionBody(chat, "x", "stop", TokenUsage{}, logprobs)["choices"][0]["logprobs"],
            logprobs);
  const ResponseIdentity completion = Identity(Endpoint::kCompletions, false);
  EXPECT_EQ(CompletionTextChunk(completion, "x", logprobs)["choices"][0]["logprobs"], logprobs);
  EXPECT_EQ(
      CompletionBody(completion, "x", "stop", TokenUsage{}, logprobs)["choices"][0]["logprobs"],
      logprobs);
  // The finish chunk never carries any.
  EXPECT_TRUE(ChatFinishChunk(chat, "stop")["choices"][0]["logprobs"].is_null());
}

}  // namespace
}  // namespace tern::gateway
