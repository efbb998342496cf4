#include "kernels/reference.h"

#include <cmath>
#include <cstring>
#include <numbers>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace tern::kernels {
namespace {

std::vector<float> RandomVector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<uint16_t> ToBf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = FloatToBf16(v[i]);
  return out;
}

TEST(Bf16Test, RoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBf16(-2.0f), 0xc000);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even mantissa (1).
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
  EXPECT_EQ(FloatToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  // Just above halfway rounds up.
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3f81);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(NAN))));
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(INFINITY)), INFINITY);
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(3.5f)), 3.5f);
}

TEST(Bf16Test, EveryFiniteBf16RoundTrips) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const float f = Bf16ToFloat(static_cast<uint16_t>(bits));
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToBf16(f), bits);
  }
}

TEST(F16Test, KnownValues) {
  EXPECT_EQ(F16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(F16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(F16ToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(F16ToFloat(0x7c00), INFINITY);
  EXPECT_TRUE(std::isnan(F16ToFloat(0x7e00)));
  EXPECT_EQ(FloatToF16(1.0f), 0x3c00);
  EXPECT_EQ(FloatToF16(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToF16(1e6f), 0x7c00);
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -26)), 0x0000);  // below half the smallest: zero
  // 1 + 2^-11 is halfway between 1 and the next half: ties to even (1).
  EXPECT_EQ(FloatToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
}

TEST(F16Test, EveryFiniteHalfRoundTrips) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const float f = F16ToFloat(static_cast<uint16_t>(bits));
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToF16(f), bits) << bits;
  }
}

TEST(DotTest, MatchesDoublePrecisionReference) {
  for (size_t n : {1u, 15u, 16u, 17u, 100u, 2048u}) {
    const auto x = RandomVector(n, 1);
    const auto w = ToBf16(RandomVector(n, 2));
    double expected = 0;
    for (size_t i = 0; i < n; ++i) expected += static_cast<double>(Bf16ToFloat(w[i])) * x[i];
    EXPECT_NEAR(DotBf16(w.data(), x.data(), n), expected, 1e-5 * std::sqrt(n)) << n;
    const auto y = RandomVector(n, 3);
    double expected_f32 = 0;
    for (size_t i = 0; i < n; ++i) expected_f32 += static_cast<double>(x[i]) * y[i];
    EXPECT_NEAR(DotF32(x.data(), y.data(), n), expected_f32, 1e-5 * std::sqrt(n)) << n;
  }
}

TEST(GemvTest, MatmulEqualsOneGemvPerToken) {
  const size_t rows = 37, cols = 70, n = 5;
  const auto w = ToBf16(RandomVector(rows * cols, 4));
  const auto x = RandomVector(n * cols, 5);
  std::vector<float> batched(n * rows);
  MatmulBf16(w, rows, cols, x, n, absl::MakeSpan(batched));
  for (size_t t = 0; t < n; ++t) {
    std::vector<float> single(rows);
    GemvBf16(w, rows, cols, absl::MakeConstSpan(x.data() + t * cols, cols), absl::MakeSpan(single));
    for (size_t r = 0; r < rows; ++r) {
      EXPECT_EQ(batched[t * rows + r], single[r]);
      double expected = 0;
      for (size_t c = 0; c < cols; ++c) {
        expected += static_cast<double>(Bf16ToFloat(w[r * cols + c])) * x[t * cols + c];
      }
      EXPECT_NEAR(single[r], expected, 1e-4);
    }
  }
}

TEST(RmsNormTest, MatchesFormula) {
  const auto x = RandomVector(64, 6, 3.0f);
  const auto weight = RandomVector(64, 7);
  std::vector<float> out(64);
  RmsNorm(x, weight, 1e-5f, absl::MakeSpan(out));
  double sum_sq = 0;
  for (float v : x) sum_sq += static_cast<double>(v) * v;
  const double inv = 1.0 / std::sqrt(sum_sq / 64 + 1e-5);
  for (size_t i = 0; i < 64; ++i) EXPECT_NEAR(out[i], x[i] * inv * weight[i], 1e-5);
  // In place gives the same result.
  std::vector<float> in_place = x;
  RmsNorm(in_place, weight, 1e-5f, absl::MakeSpan(in_place));
  EXPECT_EQ(in_place, out);
}

TEST(RopeTest, InvFreqWithoutScalingIsThetaPowers) {
  std::vector<float> inv(64);
  RopeInvFreq(128, 500000.0, nullptr, absl::MakeSpan(inv));
  for (size_t i = 0; i < 64; ++i) {
    EXPECT_FLOAT_EQ(inv[i], static_cast<float>(std::pow(500000.0, -2.0 * i / 128.0)));
  }
}

TEST(RopeTest, Llama3ScalingKeepsHighFrequenciesAndDividesLowOnes) {
  // Llama 3.1 8B: head_dim 128, theta 500000, factor 8, low 1, high 4, 8192.
  Llama3RopeScaling scaling;
  std::vector<float> plain(64), scaled(64);
  RopeInvFreq(128, 500000.0, nullptr, absl::MakeSpan(plain));
  RopeInvFreq(128, 500000.0, &scaling, absl::MakeSpan(scaled));
  int unchanged = 0, divided = 0, interpolated = 0;
  for (size_t i = 0; i < 64; ++i) {
    const double wavelen = 2 * std::numbers::pi / plain[i];
    if (wavelen < 8192.0 / 4.0) {
      EXPECT_FLOAT_EQ(scaled[i], plain[i]);
      ++unchanged;
    } else if (wavelen > 8192.0) {
      EXPECT_FLOAT_EQ(scaled[i], plain[i] / 8.0f);
      ++divided;
    } else {
      EXPECT_LT(scaled[i], plain[i]);
      EXPECT_GT(scaled[i], plain[i] / 8.0f);
      ++interpolated;
    }
    if (i > 0) {
      EXPECT_LT(scaled[i], scaled[i - 1]);  // still decreasing
    }
  }
  EXPECT_GT(unchanged, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(interpolated, 0);
}

TEST(RopeTest, RotationIsIdentityAtZeroAndPreservesPairNorms) {
  std::vector<float> inv(8), cos(8), sin(8);
  RopeInvFreq(16, 10000.0, nullptr, absl::MakeSpan(inv));
  auto head = RandomVector(16, 8);
  RopeCosSin(0, inv, absl::MakeSpan(cos), absl::MakeSpan(sin));
  auto rotated = head;
  ApplyRopeRotateHalf(absl::MakeSpan(rotated), cos, sin);
  EXPECT_EQ(rotated, head);
  RopeCosSin(37, inv, absl::MakeSpan(cos), absl::MakeSpan(sin));
  ApplyRopeRotateHalf(absl::MakeSpan(rotated), cos, sin);
  for (size_t i = 0; i < 8; ++i) {
    // Rotate-half pairs element i with element i + 8.
    EXPECT_NEAR(std::hypot(rotated[i], rotated[i + 8]), std::hypot(head[i], head[i + 8]), 1e-5);
    const float expected_first =
        head[i] * std::cos(37.0f * inv[i]) - head[i + 8] * std::sin(37.0f * inv[i]);
    EXPECT_NEAR(rotated[i], expected_first, 1e-5);
  }
}

TEST(RopeTest, ScoresDependOnlyOnRelativePosition) {
  std::vector<float> inv(16), cos(16), sin(16);
  RopeInvFreq(32, 500000.0, nullptr, absl::MakeSpan(inv));
  const auto q = RandomVector(32, 9), k = RandomVector(32, 10);
  auto score = [&](int qpos, int kpos) {
    auto qr = q, kr = k;
    RopeCosSin(qpos, inv, absl::MakeSpan(cos), absl::MakeSpan(sin));
    ApplyRopeRotateHalf(absl::MakeSpan(qr), cos, sin);
    RopeCosSin(kpos, inv, absl::MakeSpan(cos), absl::MakeSpan(sin));
    ApplyRopeRotateHalf(absl::MakeSpan(kr), cos, sin);
    return DotF32(qr.data(), kr.data(), 32);
  };
  EXPECT_NEAR(score(5, 2), score(103, 100), 1e-4);
  EXPECT_NEAR(score(7, 7), score(0, 0), 1e-4);
}

TEST(ActivationTest, SiluMul) {
  std::vector<float> gate = {-3.0f, -0.5f, 0.0f, 0.5f, 4.0f};
  const std::vector<float> up = {2.0f, 1.0f, 7.0f, -1.0f, 0.5f};
  const auto original = gate;
  SiluMulInPlace(absl::MakeSpan(gate), up);
  for (size_t i = 0; i < gate.size(); ++i) {
    const double g = original[i];
    EXPECT_NEAR(gate[i], g / (1 + std::exp(-g)) * up[i], 1e-6);
  }
}

TEST(SoftmaxTest, NormalizesAndIsShiftInvariant) {
  std::vector<float> v = {1.0f, 2.0f, 3.0f, -1000.0f};
  std::vector<float> shifted = {1001.0f, 1002.0f, 1003.0f, 0.0f};
  SoftmaxInPlace(absl::MakeSpan(v));
  SoftmaxInPlace(absl::MakeSpan(shifted));
  double sum = 0;
  for (float p : v) sum += p;
  EXPECT_NEAR(sum, 1.0, 1e-6);
  EXPECT_NEAR(v[2] / v[1], std::exp(1.0), 1e-5);
  EXPECT_EQ(v[3], 0.0f);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(v[i], shifted[i], 1e-6);
}

TEST(VectorOpsTest, AddAndAxpy) {
  std::vector<float> acc = {1, 2, 3};
  AddInPlace(absl::MakeSpan(acc), std::vector<float>{1, 1, 1});
  EXPECT_EQ(acc, (std::vector<float>{2, 3, 4}));
  AxpyInPlace(0.5f, std::vector<float>{2, 4, 6}, absl::MakeSpan(acc));
  EXPECT_EQ(acc, (std::vector<float>{3, 5, 7}));
}

}  // namespace
}  // namespace tern::kernels
