#include "worker/model/model_config.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tern::worker {
namespace {

using ::testing::HasSubstr;

// config.json of meta-llama/Llama-3.2-1B-Instruct.
constexpr char kLlama32Config[] = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64,
  "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
  "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": false,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
  "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256})";

constexpr char kLlama32Generation[] = R"({
  "bos_token_id": 128000, "do_sample": true, "eos_token_id": [128001, 128008, 128009],
  "temperature": 0.6, "top_p": 0.9, "transformers_version": "4.45.0.dev0"})";

// The config with one field replaced (or removed when value is null).
std::string With(const std::string& key, const nlohmann::json& value) {
  nlohmann::json j = nlohmann::json::parse(kLlama32Config);
  if (value.is_null()) {
    j.erase(key);
  } else {
    j[key] = value;
  }
  return j.dump();
}

absl::Status ParseError(const std::string& config) { return ParseModelConfig(config, "").status(); }

TEST(ModelConfigTest, ParsesLlama32Config) {
  auto c = ParseModelConfig(kLlama32Config, kLlama32Generation);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 2048);
  EXPECT_EQ(c->intermediate_size, 8192);
  EXPECT_EQ(c->num_hidden_layers, 16);
  EXPECT_EQ(c->num_attention_heads, 32);
  EXPECT_EQ(c->num_key_value_heads, 8);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->vocab_size, 128256);
  EXPECT_EQ(c->max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_TRUE(c->llama3_rope());
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 32.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, 128000);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int32_t>{128001, 128008, 128009}));
  EXPECT_TRUE(c->generation.do_sample);
  EXPECT_DOUBLE_EQ(c->generation.temperature, 0.6);
  EXPECT_DOUBLE_EQ(c->generation.top_p, 0.9);
  EXPECT_EQ(c->q_dim(), 2048);
  EXPECT_EQ(c->kv_dim(), 512);
}

TEST(ModelConfigTest, EosFromGenerationConfigWinsAndMayBeAnInt) {
  auto c = ParseModelConfig(With("eos_token_id", 128001), R"({"eos_token_id": 128009})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->eos_token_ids, (std::vector<int32_t>{128009}));
}

TEST(ModelConfigTest, EosFallsBackToConfigJson) {
  auto c = ParseModelConfig(With("eos_token_id", 128001), R"({"temperature": 0.7})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->eos_token_ids, (std::vector<int32_t>{128001}));
  EXPECT_DOUBLE_EQ(c->generation.temperature, 0.7);
}

TEST(ModelConfigTest, HeadDimDefaultsToHiddenOverHeads) {
  auto c = ParseModelConfig(With("head_dim", nullptr), "");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 64);
}

TEST(ModelConfigTest, NoRopeScalingMeansDefault) {
  auto c = ParseModelConfig(With("rope_scaling", nullptr), "");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->llama3_rope());
}

TEST(ModelConfigTest, MissingRequiredFieldIsNamed) {
  const absl::Status s = ParseError(With("hidden_size", nullptr));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("hidden_size"));
  EXPECT_THAT(std::string(ParseError(With("vocab_size", nullptr)).message()),
              HasSubstr("vocab_size"));
  EXPECT_THAT(std::string(ParseError(With("num_hidden_layers", nullptr)).message()),
              HasSubstr("num_hidden_layers"));
}

TEST(ModelConfigTest, RejectsInconsistentHeads) {
  nlohmann::json j = nlohmann::json::parse(kLlama32Config);
  j.erase("head_dim");
  j["num_attention_heads"] = 30;  // does not divide 2048
  j["num_key_value_heads"] = 10;
  EXPECT_THAT(std::string(ParseError(j.dump()).message()), HasSubstr("num_attention_heads"));
  EXPECT_THAT(std::string(ParseError(With("num_key_value_heads", 7)).message()),
              HasSubstr("num_key_value_heads"));
  EXPECT_THAT(std::string(ParseError(With("head_dim", 63)).message()), HasSubstr("head_dim"));
}

TEST(ModelConfigTest, RejectsUnsupportedModels) {
  EXPECT_THAT(std::string(ParseError(With("model_type", "mistral")).message()),
              HasSubstr("mistral"));
  EXPECT_THAT(std::string(ParseError(With("hidden_act", "gelu")).message()),
              HasSubstr("hidden_act"));
  EXPECT_THAT(std::string(ParseError(With("attention_bias", true)).message()),
              HasSubstr("attention_bias"));
  nlohmann::json yarn = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_THAT(std::string(ParseError(With("rope_scaling", yarn)).message()), HasSubstr("yarn"));
}

TEST(ModelConfigTest, RejectsBadValues) {
  EXPECT_EQ(ParseError("not json").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseError("[1, 2]").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ParseError(With("hidden_size", "2048")).message()),
              HasSubstr("hidden_size"));
  EXPECT_THAT(std::string(ParseError(With("hidden_size", -5)).message()), HasSubstr("hidden_size"));
  EXPECT_THAT(std::string(ParseError(With("hidden_size", 1e12)).message()),
              HasSubstr("hidden_size"));
  EXPECT_THAT(std::string(ParseError(With("eos_token_id", 999999)).message()),
              HasSubstr("eos_token_id"));
  EXPECT_THAT(std::string(ParseError(With("rms_norm_eps", -1)).message()),
              HasSubstr("rms_norm_eps"));
  EXPECT_FALSE(ParseModelConfig(kLlama32Config, "{bad").ok());
  EXPECT_FALSE(ParseModelConfig(kLlama32Config, R"({"top_p": 2})").ok());
}

TEST(ModelConfigTest, JsonRoundTrips) {
  auto c = ParseModelConfig(kLlama32Config, kLlama32Generation);
  ASSERT_TRUE(c.ok());
  auto again = ParseModelConfig(ModelConfigToJson(*c), GenerationConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->hidden_size, c->hidden_size);
  EXPECT_EQ(again->num_key_value_heads, c->num_key_value_heads);
  EXPECT_EQ(again->rope_scaling.factor, c->rope_scaling.factor);
  EXPECT_EQ(again->eos_token_ids, c->eos_token_ids);
  EXPECT_EQ(again->tie_word_embeddings, c->tie_word_embeddings);
  EXPECT_DOUBLE_EQ(again->generation.temperature, 0.6);
  const auto j = nlohmann::json::parse(ModelConfigToJson(*c));
  EXPECT_EQ(j["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(j["rope_scaling"]["rope_type"], "llama3");
  EXPECT_EQ(j["torch_dtype"], "bfloat16");
}

TEST(ModelConfigTest, LoadReportsMissingDirectory) {
  EXPECT_EQ(LoadModelConfig("/nonexistent/model").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tern::worker
