// The engine decoding under output constraints (structured/constraint.h) on
// the tiny random-weight model with the real Llama 3.1 vocabulary: whatever
// the weights prefer, the output must match, end only where the constraint
// may end, and a resumed sequence must continue the same match.
#include <gtest/gtest.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "tests/testing/tiny_model.h"
#include "worker/engine/engine.h"

namespace tern::worker {
namespace {

using Kind = structured::ConstraintSpec::Kind;

class EngineConstraintTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = testing::TinyModelDir();
    if (dir.empty()) GTEST_SKIP() << "tokenizer files missing: run scripts/install-deps.sh";
    auto model = Model::Load(dir);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    auto vocabulary = structured::TokenVocabulary::FromTokenizerJson(dir + "/tokenizer.json",
                                                                     model_->config().vocab_size);
    ASSERT_TRUE(vocabulary.ok()) << vocabulary.status();
    vocabulary_ = *vocabulary;
    EngineOptions options;
    options.executor.tp = 1;
    options.executor.block_size = 16;
    const ModelConfig& c = model_->config();
    options.executor.kv_cache_bytes = int64_t{512} * 2 * c.num_hidden_layers * 16 * c.kv_dim() * 4;
    options.constraints = std::make_shared<structured::ConstraintCache>(vocabulary_);
    auto engine = Engine::Create(model_.get(), std::move(options));
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
  }

  std::vector<StreamEvent> Run(SequenceSpec spec) {
    auto events = std::make_shared<std::vector<StreamEvent>>();
    auto done = std::make_shared<absl::Notification>();
    auto handle = engine_->Submit(std::move(spec), [events, done](StreamEvent e) {
      const bool finished = e.finished;
      events->push_back(std::move(e));
      if (finished) done->Notify();
    });
    EXPECT_TRUE(handle.ok()) << handle.status();
    if (!handle.ok()) return {};
    done->WaitForNotification();
    return *events;
  }

  std::string Text(const std::vector<StreamEvent>& events) const {
    std::string text;
    for (const StreamEvent& e : events) {
      for (int32_t t : e.tokens) text += vocabulary_->bytes(t);
    }
    return text;
  }

  static SequenceSpec Spec(structured::ConstraintSpec constraint, uint64_t seed,
                           float temperature = 1.0f, int32_t max_tokens = 200) {
    SequenceSpec spec;
    spec.prompt = {128000, 791, 4320, 374};
    spec.max_tokens = max_tokens;
    spec.sampling.temperature = temperature;
    spec.sampling.seed = seed;
    spec.has_seed = true;
    spec.constraint = std::move(constraint);
    return spec;
  }

  static structured::ConstraintSpec Schema(const std::string& schema) {
    structured::ConstraintSpec spec;
    spec.kind = Kind::kJsonSchema;
    spec.json_schema = schema;
    return spec;
  }

  std::unique_ptr<Model> model_;
  std::shared_ptr<const structured::TokenVocabulary> vocabulary_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineConstraintTest, ChoiceEndsWithOneOfTheStrings) {
  structured::ConstraintSpec choice;
  choice.kind = Kind::kChoice;
  choice.choices = {"yes", "no", "maybe later"};
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    const std::vector<StreamEvent> events = Run(Spec(choice, seed));
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().finish_reason, FinishReason::kStop);
    const std::string text = Text(events);
    EXPECT_TRUE(text == "yes" || text == "no" || text == "maybe later") << text;
  }
}

TEST_F(EngineConstraintTest, JsonSchemaOutputsParseAndHoldTheirBounds) {
  const structured::ConstraintSpec schema = Schema(R"({"type": "object", "properties": {
      "n": {"type": "integer", "minimum": 0, "maximum": 50},
      "s": {"type": "string", "maxLength": 5},
      "k": {"enum": ["a", "b"]}}, "required": ["n", "s", "k"]})");
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    const std::vector<StreamEvent> events = Run(Spec(schema, seed, seed == 1 ? 0.0f : 1.0f));
    ASSERT_FALSE(events.empty());
    const std::string text = Text(events);
    ASSERT_EQ(events.back().finish_reason, FinishReason::kStop) << text;
    const nlohmann::json value = nlohmann::json::parse(text, nullptr, false);
    ASSERT_TRUE(value.is_object()) << text;
    ASSERT_TRUE(value["n"].is_number_integer()) << text;
    EXPECT_GE(value["n"].get<int>(), 0);
    EXPECT_LE(value["n"].get<int>(), 50);
    EXPECT_LE(value["s"].get<std::string>().size(), 5u * 4) << text;  // code points, UTF-8
    EXPECT_TRUE(value["k"] == "a" || value["k"] == "b") << text;
  }
}

TEST_F(EngineConstraintTest, ResumedSequenceContinuesTheSameMatch) {
  structured::ConstraintSpec regex;
  regex.kind = Kind::kRegex;
  regex.regex = "[a-z]{2,5}-[0-9]{3}";
  const std::vector<StreamEvent> whole = Run(Spec(regex, 7));
  std::vector<int32_t> tokens;
  for (const StreamEvent& e : whole) tokens.insert(tokens.end(), e.tokens.begin(), e.tokens.end());
  ASSERT_GE(tokens.size(), 2u);
  // Another worker picks it up after the first token, with the same seed.
  SequenceSpec resumed = Spec(regex, 7);
  resumed.resume = {tokens[0]};
  const std::vector<StreamEvent> rest = Run(std::move(resumed));
  EXPECT_EQ(vocabulary_->bytes(tokens[0]) + Text(rest), Text(whole));
  // A resumed prefix that breaks the constraint is refused.
  SequenceSpec broken = Spec(regex, 7);
  broken.resume = {15};  // "0": a digit cannot start the match
  EXPECT_EQ(engine_->Submit(std::move(broken), [](StreamEvent) {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineConstraintTest, CutOffByMaxTokensIsALengthFinish) {
  const structured::ConstraintSpec schema =
      Schema(R"({"type": "array", "items": {"type": "integer"}, "minItems": 50})");
  const std::vector<StreamEvent> events = Run(Spec(schema, 3, 1.0f, /*max_tokens=*/6));
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().finish_reason, FinishReason::kLength);
  EXPECT_EQ(Text(events)[0], '[');
}

TEST_F(EngineConstraintTest, WithoutAVocabularyConstraintsAreRefused) {
  EngineOptions options;
  options.executor.tp = 1;
  options.executor.block_size = 16;
  const ModelConfig& c = model_->config();
  options.executor.kv_cache_bytes = int64_t{64} * 2 * c.num_hidden_layers * 16 * c.kv_dim() * 4;
  auto engine = Engine::Create(model_.get(), std::move(options));
  ASSERT_TRUE(engine.ok());
  structured::ConstraintSpec object;
  object.kind = Kind::kJsonObject;
  EXPECT_EQ((*engine)->Submit(Spec(object, 1), [](StreamEvent) {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tern::worker
