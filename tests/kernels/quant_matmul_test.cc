// Every level's 8-bit-weight matmuls (int8 offset bytes, FP8 E4M3) against
// the scalar reference (reference.h MatmulInt8 / MatmulFp8) over many shapes:
// tokens n = 1..9, rows not a multiple of 4, columns not a multiple of 8/16/32
// and across the 1024-column panels. Inputs sit at the end of guarded pages,
// so reading past any array faults, and outputs start as NaN, so a skipped
// one fails.
//
// Tolerance, with S = scale[r] * sum_c |q(W[r,c]) * x[t,c]|:
//   |got - ref| <= 1e-5 * S + 1e-6. The widening is exact at every level, so
//   only the f32 summation order differs from the f64 reference.
// Also checked: the E4M3 decoding of all 254 finite codes, and the encoder's
// rounding (every code round-trips; midpoints go to the even code).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
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
using testing::RandomFloats;

enum class WeightKind { kInt8, kFp8 };

std::vector<uint8_t> RandomWeightBytes(WeightKind kind, size_t count, std::mt19937& rng) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<uint8_t> w(count);
  for (uint8_t& b : w) {
    b = static_cast<uint8_t>(byte(rng));
    // The FP8 NaN codes are outside the kernels' contract.
    if (kind == WeightKind::kFp8 && (b & 0x7f) == 0x7f) b ^= 0x01;
  }
  return w;
}

float Decode(WeightKind kind, uint8_t b) {
  return kind == WeightKind::kInt8 ? static_cast<float>(Int8FromOffsetByte(b)) : Fp8E4M3ToFloat(b);
}

class QuantMatmulTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    set_ = KernelSetFor(GetParam());
    if (set_ == nullptr) GTEST_SKIP() << IsaName(GetParam()) << " is not supported by this CPU";
  }

  bool CheckShape(WeightKind kind, size_t n, size_t rows, size_t cols, uint32_t seed) {
    std::mt19937 rng(seed);
    const std::vector<uint8_t> w = RandomWeightBytes(kind, rows * cols, rng);
    std::vector<float> scales = RandomFloats(rows, rng, 0.02f);
    for (float& s : scales) s = std::fabs(s) + 1e-4f;
    const std::vector<float> x = RandomFloats(n * cols, rng, 2.0f);
    GuardedBuffer<uint8_t> w_buf(w);
    GuardedBuffer<float> s_buf(scales);
    GuardedBuffer<float> x_buf(x);
    GuardedBuffer<float> y_buf(
        std::vector<float>(n * rows, std::numeric_limits<float>::quiet_NaN()));
    auto fn = kind == WeightKind::kInt8 ? set_->matmul_int8 : set_->matmul_fp8;
    fn(w_buf.data(), s_buf.data(), rows, cols, x_buf.data(), n, y_buf.data());
    const std::vector<float> got = y_buf.ToVector();
    std::vector<float> want(n * rows);
    if (kind == WeightKind::kInt8) {
      MatmulInt8(w, scales, rows, cols, x, n, absl::MakeSpan(want));
    } else {
      MatmulFp8(w, scales, rows, cols, x, n, absl::MakeSpan(want));
    }
    for (size_t t = 0; t < n; ++t) {
      for (size_t r = 0; r < rows; ++r) {
        double s = 0.0;
        for (size_t c = 0; c < cols; ++c) {
          s += std::fabs(static_cast<double>(Decode(kind, w[r * cols + c])) * x[t * cols + c]);
        }
        s *= scales[r];
        const float g = got[t * rows + r], e = want[t * rows + r];
        if (!(std::fabs(g - e) <= 1e-5 * s + 1e-6)) {
          ADD_FAILURE() << (kind == WeightKind::kInt8 ? "int8" : "fp8") << " n=" << n
                        << " rows=" << rows << " cols=" << cols << " t=" << t << " r=" << r
                        << ": got " << g << ", want " << e << " (S=" << s << ")";
          return false;
        }
      }
    }
    return true;
  }

  const KernelSet* set_ = nullptr;
};

TEST_P(QuantMatmulTest, MatchesReferenceAcrossShapes) {
  uint32_t seed = 1;
  for (WeightKind kind : {WeightKind::kInt8, WeightKind::kFp8}) {
    for (size_t n : {1, 2, 3, 4, 5, 9}) {
      for (size_t rows : {1, 3, 4, 5, 8, 13}) {
        for (size_t cols : {1, 7, 8, 15, 16, 31, 33, 64, 255, 257, 600}) {
          if (!CheckShape(kind, n, rows, cols, seed++)) return;
        }
      }
    }
  }
}

TEST_P(QuantMatmulTest, MatchesReferenceAtModelShapes) {
  for (WeightKind kind : {WeightKind::kInt8, WeightKind::kFp8}) {
    EXPECT_TRUE(CheckShape(kind, 1, 64, 2048, 7));
    EXPECT_TRUE(CheckShape(kind, 1, 40, 8192, 8));
    EXPECT_TRUE(CheckShape(kind, 6, 24, 2048, 9));
    EXPECT_TRUE(CheckShape(kind, 7, 9, 1500, 10));   // a partial second panel
    EXPECT_TRUE(CheckShape(kind, 13, 5, 2100, 11));  // three panels, partial tiles
  }
}

// Blocks of 64 weight rows (how the executor shares a matmul between ranks)
// sum exactly as one call over all rows.
TEST_P(QuantMatmulTest, BlocksOf64RowsGiveTheSameBitsAsOneCall) {
  const size_t rows = 150, cols = 1500, block = 64;
  std::mt19937 rng(29);
  for (WeightKind kind : {WeightKind::kInt8, WeightKind::kFp8}) {
    const std::vector<uint8_t> w = RandomWeightBytes(kind, rows * cols, rng);
    std::vector<float> scales = RandomFloats(rows, rng);
    for (float& s : scales) s = std::fabs(s) + 1e-4f;
    auto fn = kind == WeightKind::kInt8 ? set_->matmul_int8 : set_->matmul_fp8;
    for (size_t n : {1, 6, 32}) {
      const std::vector<float> x = RandomFloats(n * cols, rng, 2.0f);
      std::vector<float> whole(n * rows);
      fn(w.data(), scales.data(), rows, cols, x.data(), n, whole.data());
      for (size_t r0 = 0; r0 < rows; r0 += block) {
        const size_t count = std::min(block, rows - r0);
        std::vector<float> part(n * count);
        fn(w.data() + r0 * cols, scales.data() + r0, count, cols, x.data(), n, part.data());
        for (size_t t = 0; t < n; ++t) {
          for (size_t r = 0; r < count; ++r) {
            ASSERT_EQ(part[t * count + r], whole[t * rows + r0 + r])
                << IsaName(GetParam()) << (kind == WeightKind::kInt8 ? " int8" : " fp8")
                << " n=" << n << " token " << t << " row " << r0 + r;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllLevels, QuantMatmulTest, ::testing::ValuesIn(AllIsas()), IsaParamName);

TEST(Fp8E4M3Test, DecodesEveryCode) {
  EXPECT_EQ(Fp8E4M3ToFloat(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(Fp8E4M3ToFloat(0x80)));
  EXPECT_EQ(Fp8E4M3ToFloat(0x01), 0x1p-9f);  // smallest subnormal
  EXPECT_EQ(Fp8E4M3ToFloat(0x07), 7 * 0x1p-9f);
  EXPECT_EQ(Fp8E4M3ToFloat(0x08), 0x1p-6f);  // smallest normal
  EXPECT_EQ(Fp8E4M3ToFloat(0x38), 1.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0x7e), 448.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0xfe), -448.0f);
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0x7f)));
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0xff)));
  // Increasing magnitudes over the positive codes.
  for (int b = 1; b < 0x7f; ++b) {
    EXPECT_LT(Fp8E4M3ToFloat(static_cast<uint8_t>(b - 1)), Fp8E4M3ToFloat(static_cast<uint8_t>(b)));
  }
}

TEST(Fp8E4M3Test, EncoderRoundTripsAndRoundsToEven) {
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7f) == 0x7f) continue;
    const uint8_t code = static_cast<uint8_t>(b);
    const float v = Fp8E4M3ToFloat(code);
    if (v == 0.0f) continue;  // +0 / -0 are checked by sign below
    EXPECT_EQ(FloatToFp8E4M3(v), code) << "code " << b;
  }
  EXPECT_EQ(FloatToFp8E4M3(-0.0f), 0x80);
  // 1 + 1/16 is halfway between 1 (0x38, even) and 1.125 (0x39).
  EXPECT_EQ(FloatToFp8E4M3(1.0625f), 0x38);
  // 1.125 + 1/16 is halfway between 0x39 (odd) and 1.25 (0x3a, even).
  EXPECT_EQ(FloatToFp8E4M3(1.1875f), 0x3a);
  EXPECT_EQ(FloatToFp8E4M3(1000.0f), 0x7e);  // saturates
  EXPECT_EQ(FloatToFp8E4M3(-1000.0f), 0xfe);
  EXPECT_EQ(FloatToFp8E4M3(0x1p-10f), 0x00);      // half the smallest subnormal: to even (0)
  EXPECT_EQ(FloatToFp8E4M3(3 * 0x1p-10f), 0x02);  // 1.5 subnormal steps: to even (2)
}

}  // namespace
}  // namespace tern::kernels
