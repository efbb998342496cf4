#include "worker/model/sampler.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include "gtest/gtest.h"
#include "tests/worker/model/sorting_sampler.h"

namespace tern::worker {
namespace {

SamplingOptions Greedy() {
  SamplingOptions o;
  o.temperature = 0.0f;
  return o;
}

TEST(SamplerTest, GreedyPicksArgmaxWithLowestIdOnTies) {
  std::vector<float> logits = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f};
  EXPECT_EQ(SampleToken(logits, Greedy(), {}, 0), 1);
  std::vector<float> one = {-5.0f};
  EXPECT_EQ(SampleToken(one, Greedy(), {}, 0), 0);
}

TEST(SamplerTest, TopKOneEqualsGreedy) {
  const std::vector<float> base = {0.1f, 2.0f, 1.9f, -3.0f, 1.95f};
  SamplingOptions o;
  o.temperature = 1.5f;
  o.top_k = 1;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    o.seed = seed;
    std::vector<float> logits = base;
    EXPECT_EQ(SampleToken(logits, o, {}, static_cast<int64_t>(seed)), 1);
  }
}

TEST(SamplerTest, SameSeedAndPositionDrawTheSameToken) {
  std::vector<float> base(1000);
  for (size_t i = 0; i < base.size(); ++i) base[i] = std::sin(static_cast<float>(i)) * 2.0f;
  SamplingOptions o;
  o.temperature = 1.0f;
  o.seed = 1234;
  std::vector<int32_t> draws;
  for (int64_t pos = 0; pos < 20; ++pos) {
    std::vector<float> a = base, b = base;
    const int32_t first = SampleToken(a, o, {}, pos);
    const int32_t second = SampleToken(b, o, {}, pos);
    EXPECT_EQ(first, second);
    draws.push_back(first);
  }
  // Different positions draw different numbers: not all the same token.
  std::map<int32_t, int> distinct;
  for (int32_t d : draws) ++distinct[d];
  EXPECT_GT(distinct.size(), 5u);
  EXPECT_EQ(SamplerUniform(7, 3), SamplerUniform(7, 3));
  EXPECT_NE(SamplerUniform(7, 3), SamplerUniform(7, 4));
  EXPECT_NE(SamplerUniform(7, 3), SamplerUniform(8, 3));
}

TEST(SamplerTest, DistributionMatchesSoftmax) {
  // 4 tokens, temperature 0.7: empirical frequencies over 40000 (seed,
  // position) draws within 4 standard errors of softmax(logits / 0.7).
  const std::vector<float> base = {1.0f, 0.0f, 2.0f, -0.5f};
  SamplingOptions o;
  o.temperature = 0.7f;
  std::vector<double> expected(4);
  double z = 0;
  for (size_t i = 0; i < 4; ++i) z += expected[i] = std::exp(base[i] / 0.7);
  for (double& p : expected) p /= z;
  std::vector<int> counts(4, 0);
  const int n = 40000;
  for (int i = 0; i < n; ++i) {
    o.seed = static_cast<uint64_t>(i / 100);
    std::vector<float> logits = base;
    ++counts[SampleToken(logits, o, {}, i % 100)];
  }
  for (size_t i = 0; i < 4; ++i) {
    const double freq = static_cast<double>(counts[i]) / n;
    const double se = std::sqrt(expected[i] * (1 - expected[i]) / n);
    EXPECT_NEAR(freq, expected[i], 4 * se) << "token " << i;
  }
}

TEST(SamplerTest, NanLogitsAreNeverDrawnAndAllInfiniteIsGreedy) {
  const std::vector<float> base = {NAN, 0.0f, NAN, 0.5f, -INFINITY, NAN};
  SamplingOptions o;
  std::vector<int> counts(base.size(), 0);
  for (int i = 0; i < 2000; ++i) {
    o.seed = static_cast<uint64_t>(i);
    std::vector<float> logits = base;
    ++counts[SampleToken(logits, o, {}, i)];
  }
  EXPECT_EQ(counts[0] + counts[2] + counts[4] + counts[5], 0);
  EXPECT_GT(counts[1], 500);
  EXPECT_GT(counts[3], 800);
  std::vector<float> none = {-INFINITY, NAN, -INFINITY};
  EXPECT_EQ(SampleToken(none, o, {}, 0), 0);
}

TEST(SamplerTest, FlatVocabularyDrawsSpreadOverAllIds) {
  // A flat distribution over a Llama 3 sized vocabulary: the draw in id order
  // reaches every part of it evenly (16 bands, 8000 draws: 500 expected each).
  std::vector<float> base(128256, 0.25f);
  SamplingOptions o;
  std::vector<int> bands(16, 0);
  for (int i = 0; i < 8000; ++i) {
    o.seed = static_cast<uint64_t>(i);
    std::vector<float> logits = base;
    const int32_t t = SampleToken(logits, o, {}, 3);
    ASSERT_GE(t, 0);
    ASSERT_LT(t, 128256);
    ++bands[static_cast<size_t>(t) * 16 / base.size()];
  }
  for (int b : bands) EXPECT_NEAR(b, 500, 5 * std::sqrt(500.0)) << "band count";
}

TEST(SamplerTest, TruncationWithoutSortingDrawsWhatSortingDraws) {
  // Llama 3's vocabulary size and a small one; logits rounded to steps of
  // 1/16 so that many candidates tie, at the cut too.
  for (const size_t vocab : {size_t{300}, size_t{128256}}) {
    std::vector<float> base(vocab);
    uint64_t state = 42;
    for (float& l : base) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      l = std::round(static_cast<float>((state >> 40) % 160) - 80.0f) / 16.0f;
    }
    struct Case {
      float temperature, top_p, min_p;
      int top_k;
    };
    for (const Case& c :
         {Case{1.0f, 0.9f, 0.0f, 0}, Case{0.6f, 0.9f, 0.0f, 0}, Case{1.3f, 0.1f, 0.0f, 0},
          Case{1.0f, 0.999f, 0.0f, 0}, Case{1.0f, 1.0f, 0.0f, 50}, Case{1.0f, 1.0f, 0.0f, 1},
          Case{0.7f, 0.95f, 0.0f, 40}, Case{1.0f, 1.0f, 0.3f, 0}, Case{0.8f, 0.8f, 0.5f, 200}}) {
      SamplingOptions o;
      o.temperature = c.temperature;
      o.top_p = c.top_p;
      o.min_p = c.min_p;
      o.top_k = c.top_k;
      for (uint64_t seed = 0; seed < 40; ++seed) {
        o.seed = seed;
        std::vector<float> logits = base;
        ASSERT_EQ(SampleToken(logits, o, {}, 5), SortingReferenceDraw(base, o, 5))
            << "vocab " << vocab << " temperature " << c.temperature << " top_p " << c.top_p
            << " min_p " << c.min_p << " top_k " << c.top_k << " seed " << seed;
      }
    }
  }
}

TEST(SamplerTest, TopPExcludesTheTail) {
  // probs ~ {0.6, 0.3, 0.07, 0.03}: top_p 0.8 keeps tokens 0 and 1 only.
  const std::vector<float> base = {std::log(0.6f), std::log(0.3f), std::log(0.07f),
                                   std::log(0.03f)};
  SamplingOptions o;
  o.top_p = 0.8f;
  std::vector<int> counts(4, 0);
  for (int i = 0; i < 5000; ++i) {
    o.seed = static_cast<uint64_t>(i);
    std::vector<float> logits = base;
    ++counts[SampleToken(logits, o, {}, 0)];
  }
  EXPECT_EQ(counts[2] + counts[3], 0);
  EXPECT_GT(counts[1], 1200);  // renormalized: ~1/3 of draws
  EXPECT_GT(counts[0], 2800);
}

TEST(SamplerTest, MinPExcludesUnlikelyTokens) {
  // min_p 0.2: tokens below 0.2 * p_max (0.6) = 0.12 are dropped.
  const std::vector<float> base = {std::log(0.6f), std::log(0.3f), std::log(0.07f),
                                   std::log(0.03f)};
  SamplingOptions o;
  o.min_p = 0.2f;
  std::vector<int> counts(4, 0);
  for (int i = 0; i < 5000; ++i) {
    o.seed = static_cast<uint64_t>(i);
    std::vector<float> logits = base;
    ++counts[SampleToken(logits, o, {}, 1)];
  }
  EXPECT_EQ(counts[2] + counts[3], 0);
  EXPECT_GT(counts[1], 0);
}

TEST(SamplerTest, TopKKeepsOnlyTheKBest) {
  const std::vector<float> base = {0.0f, 0.1f, 0.2f, 0.3f, 0.4f};
  SamplingOptions o;
  o.top_k = 2;
  for (int i = 0; i < 500; ++i) {
    o.seed = static_cast<uint64_t>(i);
    std::vector<float> logits = base;
    const int32_t t = SampleToken(logits, o, {}, 0);
    EXPECT_TRUE(t == 3 || t == 4) << t;
  }
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  std::vector<float> logits = {2.0f, -2.0f, 1.5f, 0.5f};
  SamplingOptions o = Greedy();
  o.repetition_penalty = 2.0f;
  const std::vector<int32_t> seen = {0, 1, 0};  // counted once each
  EXPECT_EQ(SampleToken(logits, o, seen, 3), 2);
  EXPECT_FLOAT_EQ(logits[0], 1.0f);
  EXPECT_FLOAT_EQ(logits[1], -4.0f);
  EXPECT_FLOAT_EQ(logits[2], 1.5f);
}

TEST(SamplerTest, PresenceAndFrequencyPenaltiesCountOutputTokensOnly) {
  std::vector<float> logits = {3.0f, 3.0f, 3.0f};
  SamplingOptions o = Greedy();
  o.presence_penalty = 0.5f;
  o.frequency_penalty = 0.25f;
  // Prompt [2, 2], output [0, 0, 1]: token 2 is not penalized.
  const std::vector<int32_t> tokens = {2, 2, 0, 0, 1};
  EXPECT_EQ(SampleToken(logits, o, tokens, 5, /*num_prompt_tokens=*/2), 2);
  EXPECT_FLOAT_EQ(logits[0], 3.0f - 0.5f - 2 * 0.25f);
  EXPECT_FLOAT_EQ(logits[1], 3.0f - 0.5f - 0.25f);
  EXPECT_FLOAT_EQ(logits[2], 3.0f);
}

TEST(SamplerTest, IgnoresOutOfVocabularyHistory) {
  std::vector<float> logits = {1.0f, 2.0f};
  SamplingOptions o = Greedy();
  o.repetition_penalty = 1.5f;
  o.presence_penalty = 1.0f;
  EXPECT_EQ(SampleToken(logits, o, std::vector<int32_t>{-1, 7, 99999}, 3), 1);
}

TEST(SamplerTest, ValidatesOptions) {
  EXPECT_TRUE(ValidateSamplingOptions(SamplingOptions()).ok());
  SamplingOptions o;
  o.top_p = 0.0f;
  EXPECT_EQ(ValidateSamplingOptions(o).code(), absl::StatusCode::kInvalidArgument);
  o = SamplingOptions();
  o.temperature = -1.0f;
  EXPECT_FALSE(ValidateSamplingOptions(o).ok());
  o = SamplingOptions();
  o.min_p = 1.5f;
  EXPECT_FALSE(ValidateSamplingOptions(o).ok());
  o = SamplingOptions();
  o.repetition_penalty = 0.0f;
  EXPECT_FALSE(ValidateSamplingOptions(o).ok());
  o = SamplingOptions();
  o.presence_penalty = 3.0f;
  EXPECT_FALSE(ValidateSamplingOptions(o).ok());
}

}  // namespace
}  // namespace tern::worker

namespace tern::worker {
namespace {

// log_softmax by the textbook formula in long double, for comparison.
std::vector<double> ReferenceLogSoftmax(const std::vector<float>& logits) {
  long double total = 0;
  for (float l : logits) total += std::exp(static_cast<long double>(l));
  std::vector<double> out;
  for (float l : logits) out.push_back(static_cast<double>(l - std::log(total)));
  return out;
}

TEST(LogprobsTest, SampledTokenLogprobIsLogSoftmaxOfRawLogits) {
  std::vector<float> logits(5000);
  for (size_t i = 0; i < logits.size(); ++i)
    logits[i] = std::sin(static_cast<float>(i) * 0.37f) * 6;
  const std::vector<double> reference = ReferenceLogSoftmax(logits);
  for (int32_t token : {0, 17, 4999}) {
    const TokenLogprobs lp = ComputeLogprobs(logits, token, 0);
    EXPECT_EQ(lp.token_id, token);
    EXPECT_NEAR(lp.logprob, reference[token], 1e-5);
    EXPECT_TRUE(lp.top.empty());
  }
}

TEST(LogprobsTest, TopNIsSortedHighestFirstWithLowerIdOnTies) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f, 2.5f, 3.0f};
  const TokenLogprobs lp = ComputeLogprobs(logits, 4, 4);
  const std::vector<double> reference = ReferenceLogSoftmax(logits);
  ASSERT_EQ(lp.top.size(), 4u);
  const std::vector<int32_t> expected_ids = {1, 3, 6, 5};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(lp.top[i].first, expected_ids[i]);
    EXPECT_NEAR(lp.top[i].second, reference[expected_ids[i]], 1e-6);
  }
}

TEST(LogprobsTest, TopNMatchesAFullSortAndIsClampedToTwenty) {
  std::vector<float> logits(3000);
  for (size_t i = 0; i < logits.size(); ++i) {
    logits[i] = static_cast<float>(static_cast<int>((i * 7919) % 211)) / 10.0f;  // many ties
  }
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  std::stable_sort(ids.begin(), ids.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  const TokenLogprobs lp = ComputeLogprobs(logits, 5, 50);
  ASSERT_EQ(lp.top.size(), static_cast<size_t>(kMaxTopLogprobs));
  for (size_t i = 0; i < lp.top.size(); ++i) EXPECT_EQ(lp.top[i].first, ids[i]) << i;
  // The greedy token is the top-1 alternative.
  std::vector<float> copy = logits;
  SamplingOptions greedy;
  greedy.temperature = 0;
  EXPECT_EQ(SampleToken(copy, greedy, {}, 0), lp.top[0].first);
}

TEST(LogprobsTest, LargeLogitsDoNotOverflow) {
  const std::vector<float> logits = {1000.0f, 999.0f, -1000.0f};
  const TokenLogprobs lp = ComputeLogprobs(logits, 1, 1);
  EXPECT_NEAR(lp.logprob, -1.0 - std::log1p(std::exp(-1.0)), 1e-5);
  EXPECT_NEAR(lp.top[0].second, -std::log1p(std::exp(-1.0)), 1e-5);
}

}  // namespace
}  // namespace tern::worker
