// Every level's bf16-weight matmul against the scalar reference (reference.h)
// on random inputs over many shapes: tokens n = 1..70, rows not a multiple of
// 4, columns not a multiple of 16/32, and across the 1024/2048-column passes.
// Inputs sit at the end of guarded pages, so reading or writing past any
// array faults, and outputs start as NaN, so a skipped one fails.
//
// Tolerances, with S = sum_c |W[r,c] * x[t,c]| for the output compared:
//   scalar, avx2, avx512 (f32 FMA): |got - ref| <= 1e-5 * S + 1e-6
//     (only the f32 summation order differs; observed ~1e-7 * S).
//   avx512bf16 (vdpbf16ps rounds x to bf16 for every n):
//     against the reference on bf16-rounded x: 1e-5 * S + 1e-6;
//     against the reference on exact x: 2^-8 * S (the bound on the rounding:
//     bf16 keeps 8 significant bits, |x - bf16(x)| <= 2^-8 |x|) + 1e-5 * S + 1e-6.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/dispatch.h"
#include "kernels/reference.h"
#include "tests/kernels/kernel_test_util.h"

namespace tern::kernels {
namespace {

using testing::AllIsas;
using testing::GuardedBuffer;
using testing::IsaParamName;
using testing::RandomBf16;
using testing::RandomFloats;

class MatmulTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    set_ = KernelSetFor(GetParam());
    if (set_ == nullptr) GTEST_SKIP() << IsaName(GetParam()) << " is not supported by this CPU";
  }

  // Runs one shape and compares every output; returns false (after one
  // failure message) on the first output out of tolerance.
  bool CheckShape(size_t n, size_t rows, size_t cols, uint32_t seed) {
    std::mt19937 rng(seed);
    const std::vector<uint16_t> w = RandomBf16(rows * cols, rng);
    const std::vector<float> x = RandomFloats(n * cols, rng, 2.0f);
    GuardedBuffer<uint16_t> w_buf(w);
    GuardedBuffer<float> x_buf(x);
    GuardedBuffer<float> y_buf(
        std::vector<float>(n * rows, std::numeric_limits<float>::quiet_NaN()));
    set_->matmul_bf16(w_buf.data(), rows, cols, x_buf.data(), n, y_buf.data());
    const std::vector<float> got = y_buf.ToVector();

    const bool rounds_x = GetParam() == Isa::kAvx512Bf16;
    std::vector<float> x_used = x;
    if (rounds_x) {
      for (float& v : x_used) v = Bf16ToFloat(FloatToBf16(v));
    }
    std::vector<float> want(n * rows), want_exact(n * rows);
    MatmulBf16(w, rows, cols, x_used, n, absl::MakeSpan(want));
    MatmulBf16(w, rows, cols, x, n, absl::MakeSpan(want_exact));

    for (size_t t = 0; t < n; ++t) {
      for (size_t r = 0; r < rows; ++r) {
        double s = 0.0, s_exact = 0.0;
        for (size_t c = 0; c < cols; ++c) {
          const double wv = Bf16ToFloat(w[r * cols + c]);
          s += std::abs(wv * x_used[t * cols + c]);
          s_exact += std::abs(wv * x[t * cols + c]);
        }
        const size_t i = t * rows + r;
        const double diff = std::abs(static_cast<double>(got[i]) - want[i]);
        const double tol = 1e-5 * s + 1e-6;
        const double diff_exact = std::abs(static_cast<double>(got[i]) - want_exact[i]);
        const double tol_exact = rounds_x ? std::ldexp(s_exact, -8) + 1e-5 * s_exact + 1e-6 : tol;
        if (!(diff <= tol) || !(diff_exact <= tol_exact)) {
          ADD_FAILURE() << IsaName(GetParam()) << " n=" << n << " rows=" << rows << " cols=" << cols
                        << " y[" << t << "," << r << "] = " << got[i] << ", reference " << want[i]
                        << " (exact x: " << want_exact[i] << "), tolerance " << tol << " / "
                        << tol_exact;
          return false;
        }
      }
    }
    return true;
  }

  const KernelSet* set_ = nullptr;
};

TEST_P(MatmulTest, MatchesReferenceForEveryTokenCount) {
  uint32_t seed = 1;
  for (size_t n = 1; n <= 70; ++n) {
    ASSERT_TRUE(CheckShape(n, 7, 67, seed++));
    ASSERT_TRUE(CheckShape(n, 9, 1030, seed++));  // crosses the 1024-column panel
  }
}

TEST_P(MatmulTest, MatchesReferenceForOddRowsAndColumns) {
  uint32_t seed = 100;
  for (size_t cols :
       {1, 2, 3, 15, 16, 17, 31, 32, 33, 63, 100, 1023, 1024, 1025, 2047, 2048, 2049, 3000}) {
    for (size_t rows : {1, 2, 3, 4, 5, 6, 9}) {
      for (size_t n : {1, 2, 5, 6, 7, 13}) ASSERT_TRUE(CheckShape(n, rows, cols, seed++));
    }
  }
}

TEST_P(MatmulTest, MatchesReferenceAtModelLikeShapes) {
  ASSERT_TRUE(CheckShape(1, 256, 2048, 7));
  ASSERT_TRUE(CheckShape(64, 64, 2048, 8));
  ASSERT_TRUE(CheckShape(16, 130, 4100, 9));
  ASSERT_TRUE(CheckShape(3, 33, 8192, 10));
}

// Prefill-sized products: more tokens than one block of converted x (256),
// rows across and short of the 32-row blocks, columns across and short of
// the 256-column blocks (odd, so the last column pair is half padding).
TEST_P(MatmulTest, MatchesReferenceAcrossPrefillBlocks) {
  ASSERT_TRUE(CheckShape(300, 70, 515, 11));
  ASSERT_TRUE(CheckShape(257, 33, 256, 12));
  ASSERT_TRUE(CheckShape(40, 32, 257, 13));
  ASSERT_TRUE(CheckShape(35, 1, 1, 14));
  ASSERT_TRUE(CheckShape(100, 17, 33, 15));
}

// A token's outputs do not depend on how many tokens share the call (the
// engine batches decode steps and prefill chunks of other sequences with it):
// the f32 levels may differ in summation order between their small-n and
// large-n schemes, never in how x is rounded; avx512bf16 keeps one order for
// every n, so it must agree bit for bit.
TEST_P(MatmulTest, TokenResultDoesNotDependOnTokenCount) {
  const size_t rows = 70, cols = 2100, most = 140;
  std::mt19937 rng(21);
  const std::vector<uint16_t> w = RandomBf16(rows * cols, rng);
  const std::vector<float> x = RandomFloats(most * cols, rng, 2.0f);
  std::vector<float> alone(rows);
  set_->matmul_bf16(w.data(), rows, cols, x.data(), 1, alone.data());
  for (size_t n : {2, 3, 7, 8, 13, 33, 140}) {
    std::vector<float> y(n * rows);
    set_->matmul_bf16(w.data(), rows, cols, x.data(), n, y.data());
    for (size_t r = 0; r < rows; ++r) {
      if (GetParam() == Isa::kAvx512Bf16) {
        ASSERT_EQ(y[r], alone[r]) << "n=" << n << " row " << r;
        continue;
      }
      double s = 0.0;
      for (size_t c = 0; c < cols; ++c) s += std::abs(Bf16ToFloat(w[r * cols + c]) * x[c]);
      ASSERT_LE(std::abs(static_cast<double>(y[r]) - alone[r]), 1e-6 * s + 1e-6)
          << IsaName(GetParam()) << " n=" << n << " row " << r;
    }
  }
}

// The executor shares a tensor-parallel matmul between ranks in blocks of
// 64 weight rows (worker/model/executor.cc): a row must sum exactly as in
// one call over all rows, at every level and token count.
TEST_P(MatmulTest, BlocksOf64RowsGiveTheSameBitsAsOneCall) {
  const size_t rows = 200, cols = 2100, block = 64;
  std::mt19937 rng(23);
  const std::vector<uint16_t> w = RandomBf16(rows * cols, rng);
  for (size_t n : {1, 5, 8, 32, 127}) {
    const std::vector<float> x = RandomFloats(n * cols, rng, 2.0f);
    std::vector<float> whole(n * rows);
    set_->matmul_bf16(w.data(), rows, cols, x.data(), n, whole.data());
    for (size_t r0 = 0; r0 < rows; r0 += block) {
      const size_t count = std::min(block, rows - r0);
      std::vector<float> part(n * count);
      set_->matmul_bf16(w.data() + r0 * cols, count, cols, x.data(), n, part.data());
      for (size_t t = 0; t < n; ++t) {
        for (size_t r = 0; r < count; ++r) {
          ASSERT_EQ(part[t * count + r], whole[t * rows + r0 + r])
              << IsaName(GetParam()) << " n=" << n << " token " << t << " row " << r0 + r;
        }
      }
    }
  }
}

// The decode GEMV streams its rows in groups and prefetches ahead as
// CurrentGemvTuning() says (dispatch.h): every setting must give the bits of
// the default, with rows no multiple of any group, fewer full groups than the
// prefetch distance, and guarded buffers (a load past W faults).
TEST_P(MatmulTest, EveryGemvTuningGivesTheSameBits) {
  const GemvTuning before = CurrentGemvTuning();
  std::vector<GemvTuning> tunings = GemvTuningCandidates(GetParam());
  // AVX2 runs 1 and 2 rows as 4, and 16 as 8.
  tunings.insert(tunings.end(), {GemvTuning{1, 1}, GemvTuning{2, 0}, GemvTuning{16, 3}});
  std::mt19937 rng(29);
  for (const auto& [rows, cols] : std::vector<std::pair<size_t, size_t>>{
           {1, 33}, {7, 67}, {37, 1030}, {70, 64}, {200, 2100}}) {
    GuardedBuffer<uint16_t> w(RandomBf16(rows * cols, rng));
    GuardedBuffer<float> x(RandomFloats(cols, rng, 2.0f));
    ASSERT_TRUE(SetGemvTuning(GemvTuning{}));
    std::vector<float> want(rows);
    set_->matmul_bf16(w.data(), rows, cols, x.data(), 1, want.data());
    for (const GemvTuning& t : tunings) {
      ASSERT_TRUE(SetGemvTuning(t)) << GemvTuningName(t);
      GuardedBuffer<float> y(std::vector<float>(rows, std::numeric_limits<float>::quiet_NaN()));
      set_->matmul_bf16(w.data(), rows, cols, x.data(), 1, y.data());
      EXPECT_EQ(y.ToVector(), want) << IsaName(GetParam()) << " rows=" << rows << " cols=" << cols
                                    << ": " << GemvTuningName(t);
    }
  }
  SetGemvTuning(before);
}

TEST_P(MatmulTest, ZeroColumnsGiveZeros) {
  std::vector<float> y(3 * 5, std::numeric_limits<float>::quiet_NaN());
  const uint16_t w = 0;
  const float x = 0.0f;
  set_->matmul_bf16(&w, 5, 0, &x, 3, y.data());
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

TEST_P(MatmulTest, ExactProductsAreExact) {
  // Small integers: every product and partial sum is exact in f32 (and x is
  // exact in bf16), so all levels must agree bit for bit.
  const size_t n = 8, rows = 6, cols = 300;
  std::vector<uint16_t> w(rows * cols);
  std::vector<float> x(n * cols);
  for (size_t i = 0; i < w.size(); ++i) w[i] = FloatToBf16(static_cast<float>(int(i % 7) - 3));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(int(i % 5) - 2);
  std::vector<float> got(n * rows), want(n * rows);
  set_->matmul_bf16(w.data(), rows, cols, x.data(), n, got.data());
  MatmulBf16(w, rows, cols, x, n, absl::MakeSpan(want));
  EXPECT_EQ(got, want);
}

TEST_P(MatmulTest, GemvSpanFormMatchesPointerForm) {
  std::mt19937 rng(5);
  const std::vector<uint16_t> w = RandomBf16(10 * 40, rng);
  const std::vector<float> x = RandomFloats(40, rng);
  std::vector<float> a(10), b(10);
  set_->GemvBf16(w, 10, 40, x, absl::MakeSpan(a));
  set_->matmul_bf16(w.data(), 10, 40, x.data(), 1, b.data());
  EXPECT_EQ(a, b);
}

INSTANTIATE_TEST_SUITE_P(AllLevels, MatmulTest, ::testing::ValuesIn(AllIsas()), IsaParamName);

}  // namespace
}  // namespace tern::kernels
