// The sampling helpers (kernels/sampling.h) and every level's versions of
// them (KernelSet::log_softmax_stats, top_n).
//  - The scalar references are checked against independent computations: a
//    long-double log-sum-exp and a stable sort of all ids.
//  - Each level is checked against the references: top-N exactly (same ids,
//    values, order and count), log_sum_exp within 1e-6 * (1 + |ref|) (f32 exp
//    within 2 ulp, f64 sums), max exactly. Inputs sit at the end of guarded
//    pages, so reading past them faults.
#include "kernels/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/dispatch.h"
#include "tests/kernels/kernel_test_util.h"

namespace tern::kernels {
namespace {

using testing::AllIsas;
using testing::GuardedBuffer;
using testing::IsaParamName;
using testing::RandomFloats;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Logits with many exact ties (values on a 1/4 grid), some masked to -inf
// and, when asked, some NaN.
std::vector<float> TiedLogits(size_t n, std::mt19937& rng, double masked, double nan) {
  std::uniform_int_distribution<int> grid(-40, 40);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<float> v(n);
  for (float& x : v) {
    const double r = u(rng);
    x = r < masked ? -kInf : r < masked + nan ? kNaN : static_cast<float>(grid(rng)) * 0.25f;
  }
  return v;
}

// Every id sorted by value (descending), ties by id, NaN dropped.
std::vector<ScoredToken> SortedIds(const std::vector<float>& v) {
  std::vector<int32_t> ids(v.size());
  std::iota(ids.begin(), ids.end(), 0);
  ids.erase(std::remove_if(ids.begin(), ids.end(), [&](int32_t i) { return std::isnan(v[i]); }),
            ids.end());
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return v[a] > v[b]; });
  std::vector<ScoredToken> out;
  for (int32_t i : ids) out.push_back({i, v[i]});
  return out;
}

TEST(SamplingReferenceTest, LogSumExpMatchesLongDouble) {
  std::mt19937 rng(1);
  for (size_t n : {1, 2, 100, 128256}) {
    const std::vector<float> v = RandomFloats(n, rng, 30.0f);
    long double sum = 0.0L;
    for (float x : v) sum += std::exp(static_cast<long double>(x));
    const LogSoftmaxStats stats = ComputeLogSoftmaxStats(v);
    EXPECT_EQ(stats.max, *std::max_element(v.begin(), v.end()));
    EXPECT_NEAR(stats.log_sum_exp, static_cast<double>(std::log(sum)), 1e-9) << n;
  }
  EXPECT_DOUBLE_EQ(ComputeLogSoftmaxStats(std::vector<float>{0.0f, 0.0f}).log_sum_exp,
                   std::log(2.0));
}

TEST(SamplingReferenceTest, LogSumExpEdgeCases) {
  EXPECT_EQ(ComputeLogSoftmaxStats({}).log_sum_exp, -kInf);
  EXPECT_EQ(ComputeLogSoftmaxStats(std::vector<float>{-kInf, -kInf}).log_sum_exp, -kInf);
  EXPECT_EQ(ComputeLogSoftmaxStats(std::vector<float>{-kInf, 3.0f}).log_sum_exp, 3.0);
  EXPECT_TRUE(std::isnan(ComputeLogSoftmaxStats(std::vector<float>{1.0f, kNaN}).log_sum_exp));
  EXPECT_TRUE(std::isnan(ComputeLogSoftmaxStats(std::vector<float>{-kInf, kNaN}).log_sum_exp));
  // Large logits do not overflow: exp is taken of v - max.
  EXPECT_NEAR(ComputeLogSoftmaxStats(std::vector<float>{1000.0f, 1000.0f}).log_sum_exp,
              1000.0 + std::log(2.0), 1e-9);
}

TEST(SamplingReferenceTest, TopNMatchesStableSort) {
  std::mt19937 rng(2);
  for (size_t size : {1, 7, 64, 1000}) {
    const std::vector<float> v = TiedLogits(size, rng, 0.1, 0.05);
    const std::vector<ScoredToken> sorted = SortedIds(v);
    for (size_t n : {1, 3, 16, 50, 2000}) {
      std::vector<ScoredToken> out(n);
      const size_t count = SelectTopN(v, absl::MakeSpan(out));
      ASSERT_EQ(count, std::min(n, sorted.size())) << size << " " << n;
      for (size_t i = 0; i < count; ++i) {
        ASSERT_EQ(out[i].id, sorted[i].id) << "size " << size << " n " << n << " rank " << i;
        ASSERT_EQ(out[i].value, sorted[i].value);
      }
    }
  }
  std::vector<ScoredToken> none;
  EXPECT_EQ(SelectTopN(std::vector<float>{1.0f}, absl::MakeSpan(none)), 0u);
}

class SamplingKernelTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    set_ = KernelSetFor(GetParam());
    if (set_ == nullptr) GTEST_SKIP() << IsaName(GetParam()) << " is not supported by this CPU";
  }
  const KernelSet* set_ = nullptr;
};

TEST_P(SamplingKernelTest, LogSoftmaxStatsMatchReference) {
  std::mt19937 rng(3);
  for (size_t n : {0, 1, 5, 15, 16, 17, 31, 33, 1000, 128256}) {
    for (int variant = 0; variant < 4; ++variant) {
      std::vector<float> v = variant == 0   ? RandomFloats(n, rng, 20.0f)
                             : variant == 1 ? TiedLogits(n, rng, 0.3, 0.0)
                             : variant == 2 ? TiedLogits(n, rng, 1.0, 0.0)  // all masked
                                            : TiedLogits(n, rng, 0.2, 0.01);
      GuardedBuffer<float> buf(v);
      const LogSoftmaxStats got = set_->log_softmax_stats(buf.data(), n);
      const LogSoftmaxStats want = ComputeLogSoftmaxStats(v);
      if (std::isnan(want.log_sum_exp)) {
        EXPECT_TRUE(std::isnan(got.log_sum_exp)) << "n=" << n << " variant " << variant;
        continue;
      }
      EXPECT_EQ(got.max, want.max) << "n=" << n << " variant " << variant;
      if (std::isinf(want.log_sum_exp)) {
        EXPECT_EQ(got.log_sum_exp, want.log_sum_exp) << "n=" << n << " variant " << variant;
      } else {
        EXPECT_NEAR(got.log_sum_exp, want.log_sum_exp, 1e-6 * (1.0 + std::abs(want.log_sum_exp)))
            << "n=" << n << " variant " << variant;
      }
    }
  }
}

TEST_P(SamplingKernelTest, TopNMatchesReference) {
  std::mt19937 rng(4);
  for (size_t size : {1, 2, 9, 16, 17, 100, 4099, 128256}) {
    for (double nan : {0.0, 0.02}) {
      const std::vector<float> v = TiedLogits(size, rng, 0.2, nan);
      GuardedBuffer<float> buf(v);
      for (size_t n : {0, 1, 2, 5, 20, 100, 200000}) {
        const size_t cap = std::min<size_t>(n, size + 5);
        std::vector<ScoredToken> got(cap, ScoredToken{-1, kNaN}), want(cap);
        const size_t got_count = set_->top_n(buf.data(), size, got.data(), cap);
        const size_t want_count = SelectTopN(v, absl::MakeSpan(want));
        ASSERT_EQ(got_count, want_count) << "size " << size << " n " << cap;
        for (size_t i = 0; i < want_count; ++i) {
          ASSERT_EQ(got[i].id, want[i].id) << "size " << size << " n " << cap << " rank " << i;
          ASSERT_EQ(got[i].value, want[i].value);
        }
      }
    }
  }
}

TEST_P(SamplingKernelTest, TopNOfIncreasingValuesReplacesEveryTime) {
  // The worst case for the threshold filter: every value beats the N-th best.
  std::vector<float> v(5000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  std::vector<ScoredToken> out(10);
  ASSERT_EQ(set_->top_n(v.data(), v.size(), out.data(), out.size()), 10u);
  for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i].id, static_cast<int32_t>(4999 - i));
}

INSTANTIATE_TEST_SUITE_P(AllLevels, SamplingKernelTest, ::testing::ValuesIn(AllIsas()),
                         IsaParamName);

}  // namespace
}  // namespace tern::kernels
