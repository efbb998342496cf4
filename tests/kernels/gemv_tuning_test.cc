// GemvTuning's process-wide setting and TuneGemv's choice rule (which setting
// is fastest on a given host is not testable; that the tuner times every
// candidate, keeps the default unless another clearly wins, and leaves the
// setting as it found it is).
#include "kernels/gemv_tuning.h"

#include <optional>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/dispatch.h"
#include "tests/kernels/kernel_test_util.h"

namespace tern::kernels {
namespace {

using testing::RandomBf16;

class GemvTuningTest : public ::testing::Test {
 protected:
  void TearDown() override { SetGemvTuning(GemvTuning{}); }
};

TEST_F(GemvTuningTest, SetAcceptsOnlyValidSettings) {
  EXPECT_EQ(CurrentGemvTuning(), (GemvTuning{1, 2}));
  EXPECT_TRUE(SetGemvTuning({16, 3}));
  EXPECT_EQ(CurrentGemvTuning(), (GemvTuning{16, 3}));
  EXPECT_TRUE(SetGemvTuning({4, 0}));
  EXPECT_EQ(CurrentGemvTuning(), (GemvTuning{4, 0}));
  for (const GemvTuning& bad : {GemvTuning{5, 1}, GemvTuning{0, 1}, GemvTuning{3, 1},
                                GemvTuning{32, 1}, GemvTuning{8, -1}, GemvTuning{8, 4}}) {
    EXPECT_FALSE(SetGemvTuning(bad)) << bad.rows << "/" << bad.prefetch_groups;
    EXPECT_EQ(CurrentGemvTuning(), (GemvTuning{4, 0}));
  }
}

TEST_F(GemvTuningTest, CandidatesStartWithTheDefaultAndFitTheLevel) {
  EXPECT_EQ(GemvTuningCandidates(Isa::kScalar), std::vector<GemvTuning>{GemvTuning{}});
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16}) {
    const std::vector<GemvTuning> c = GemvTuningCandidates(isa);
    ASSERT_FALSE(c.empty());
    EXPECT_EQ(c.front(), GemvTuning{});
    // AVX2 runs the default (1 row) as 8 rows, so 8/2 would repeat it there.
    EXPECT_EQ(c.size(), isa == Isa::kAvx2 ? 8u : 20u) << IsaName(isa);
    for (size_t i = 0; i < c.size(); ++i) {
      EXPECT_TRUE(SetGemvTuning(c[i]));
      if (isa == Isa::kAvx2 && i > 0) {
        EXPECT_TRUE(c[i].rows == 4 || c[i].rows == 8) << c[i].rows;
        EXPECT_FALSE(c[i] == (GemvTuning{8, 2}));
      }
      for (size_t j = 0; j < i; ++j) EXPECT_FALSE(c[i] == c[j]) << "duplicate candidate";
    }
  }
}

TEST_F(GemvTuningTest, NamesSayRowsAndPrefetch) {
  EXPECT_EQ(GemvTuningName({8, 1}), "8 rows, prefetch 1 group ahead");
  EXPECT_EQ(GemvTuningName({16, 2}), "16 rows, prefetch 2 groups ahead");
  EXPECT_EQ(GemvTuningName({4, 0}), "4 rows, no software prefetch");
  EXPECT_EQ(GemvTuningName({1, 3}), "1 row, prefetch 3 groups ahead");
}

TEST_F(GemvTuningTest, ParsesRowsSlashPrefetch) {
  EXPECT_EQ(ParseGemvTuning("1/3"), (GemvTuning{1, 3}));
  EXPECT_EQ(ParseGemvTuning("16/0"), (GemvTuning{16, 0}));
  EXPECT_EQ(ParseGemvTuning("1/2"), GemvTuning{});
  EXPECT_EQ(ParseGemvTuning("8/1"), (GemvTuning{8, 1}));
  for (const char* bad :
       {"", "8", "8/", "/1", "3/1", "8/4", "8/1x", "x/1", "8/-1", "08/1/1", "99999999999/1"}) {
    EXPECT_EQ(ParseGemvTuning(bad), std::nullopt) << bad;
  }
}

TEST_F(GemvTuningTest, TimesEveryCandidateAndRestoresTheSetting) {
  const KernelSet& kernels = ActiveKernels();
  std::mt19937 rng(3);
  const std::vector<uint16_t> a = RandomBf16(96 * 256, rng), b = RandomBf16(40 * 128, rng);
  const std::vector<GemvMatrix> matrices = {{a.data(), 96, 256}, {b.data(), 40, 128}};
  ASSERT_TRUE(SetGemvTuning({4, 2}));
  GemvTuneOptions options;
  options.stream_bytes = 64 << 10;
  options.rounds = 3;
  const GemvTuneResult result = TuneGemv(kernels, matrices, options);
  EXPECT_EQ(CurrentGemvTuning(), (GemvTuning{4, 2}));
  const std::vector<GemvTuning> candidates = GemvTuningCandidates(kernels.isa);
  if (candidates.size() < 2) {
    EXPECT_TRUE(result.trials.empty());
    EXPECT_EQ(result.chosen, GemvTuning{});
    return;
  }
  ASSERT_EQ(result.trials.size(), candidates.size());
  for (size_t i = 0; i < candidates.size(); ++i) {
    EXPECT_EQ(result.trials[i].tuning, candidates[i]);
    EXPECT_GT(result.trials[i].gb_per_s, 0.0);
  }
  const GemvTrial* chosen = result.chosen_trial();
  ASSERT_NE(chosen, nullptr);
  // The default stays unless another setting is min_gain faster, and then
  // the fastest is taken.
  double best = 0.0;
  for (const GemvTrial& t : result.trials) best = std::max(best, t.gb_per_s);
  if (!(result.chosen == GemvTuning{})) {
    EXPECT_EQ(chosen->gb_per_s, best);
    EXPECT_GE(chosen->gb_per_s, result.trials[0].gb_per_s * (1.0 + options.min_gain));
    EXPECT_GE(result.confirmed_gain, options.min_gain);
  } else if (best >= result.trials[0].gb_per_s * (1.0 + options.min_gain)) {
    EXPECT_LT(result.confirmed_gain, options.min_gain);  // the second look refused it
  }
  EXPECT_NE(result.Summary().find(GemvTuningName(result.chosen)), std::string::npos);
  EXPECT_EQ(result.Trials().rfind("1/2 ", 0), 0u) << result.Trials();

  // Nothing clears an unreachable gain.
  options.min_gain = 1e9;
  EXPECT_EQ(TuneGemv(kernels, matrices, options).chosen, GemvTuning{});
}

TEST_F(GemvTuningTest, NoMatricesNoTrials) {
  const GemvTuneResult result = TuneGemv(ActiveKernels(), {});
  EXPECT_TRUE(result.trials.empty());
  EXPECT_EQ(result.chosen, GemvTuning{});
  EXPECT_EQ(result.chosen_trial(), nullptr);
  EXPECT_EQ(result.Summary(), "1 row, prefetch 2 groups ahead (not timed)");
  EXPECT_EQ(result.Trials(), "");
}

}  // namespace
}  // namespace tern::kernels
