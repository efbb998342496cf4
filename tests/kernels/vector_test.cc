// Every level's element-wise kernels against the scalar reference, for sizes
// 1..70 (every tail length of 8- and 16-wide vectors) and a few long ones,
// with inputs at the end of guarded pages.
//
// Tolerances (ref = the reference's value):
//   RmsNorm:  |got - ref| <= 1e-6 |ref|  (f64 sum of squares in another order)
//   SiLU-mul, softmax: |got - ref| <= 1e-6 |ref| + 1e-30  (vector exp within
//             2 ulp of expf, plus the division / normalisation roundings)
//   DotF32:   |got - ref| <= 1e-5 * sum |a b| + 1e-6  (summation order, FMA)
//   Axpy:     |got - ref| <= 1e-6 (|out| + |scale x|) + 1e-30  (FMA)
//   Add:      bit-identical.
#include <cmath>
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

std::vector<size_t> Sizes() {
  std::vector<size_t> sizes;
  for (size_t n = 1; n <= 70; ++n) sizes.push_back(n);
  for (size_t n : {255, 1000, 2048, 2049, 8195}) sizes.push_back(n);
  return sizes;
}

bool CloseRel(float got, float want, double rel, double abs) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  return std::abs(static_cast<double>(got) - want) <= rel * std::abs(want) + abs;
}

class VectorKernelTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    set_ = KernelSetFor(GetParam());
    if (set_ == nullptr) GTEST_SKIP() << IsaName(GetParam()) << " is not supported by this CPU";
  }
  const KernelSet* set_ = nullptr;
};

TEST_P(VectorKernelTest, RmsNormMatchesReference) {
  std::mt19937 rng(1);
  for (size_t n : Sizes()) {
    const std::vector<float> x = RandomFloats(n, rng, 3.0f);
    const std::vector<float> weight = RandomFloats(n, rng, 2.0f);
    GuardedBuffer<float> x_buf(x), w_buf(weight), out(std::vector<float>(n, NAN));
    set_->rms_norm(x_buf.data(), w_buf.data(), n, 1e-5f, out.data());
    std::vector<float> want(n);
    RmsNorm(x, weight, 1e-5f, absl::MakeSpan(want));
    const std::vector<float> got = out.ToVector();
    for (size_t i = 0; i < n; ++i) {
      ASSERT_TRUE(CloseRel(got[i], want[i], 1e-6, 0.0))
          << "n=" << n << " i=" << i << ": " << got[i] << " vs " << want[i];
    }
    // In place (out aliases x).
    GuardedBuffer<float> inplace(x);
    set_->rms_norm(inplace.data(), w_buf.data(), n, 1e-5f, inplace.data());
    EXPECT_EQ(inplace.ToVector(), got) << "n=" << n;
  }
}

TEST_P(VectorKernelTest, SiluMulMatchesReference) {
  std::mt19937 rng(2);
  for (size_t n : Sizes()) {
    const std::vector<float> gate = RandomFloats(n, rng, 20.0f);
    const std::vector<float> up = RandomFloats(n, rng, 3.0f);
    GuardedBuffer<float> g_buf(gate), u_buf(up);
    set_->silu_mul(g_buf.data(), u_buf.data(), n);
    std::vector<float> want = gate;
    SiluMulInPlace(absl::MakeSpan(want), up);
    const std::vector<float> got = g_buf.ToVector();
    for (size_t i = 0; i < n; ++i) {
      ASSERT_TRUE(CloseRel(got[i], want[i], 1e-6, 1e-30))
          << "n=" << n << " gate=" << gate[i] << ": " << got[i] << " vs " << want[i];
    }
  }
}

TEST_P(VectorKernelTest, SiluMulHandlesExtremes) {
  // Around expf's overflow (88.72) and underflow (-87.3 normal, -103.9
  // subnormal) thresholds, and non-finite values.
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> gate = {-200.0f, -104.0f, -103.0f, -89.0f, -88.8f, -88.7f, -87.4f, -20.0f,
                             -1e-30f, 0.0f,    1e-30f,  3.0f,   87.4f,  88.7f,  88.8f,  89.0f,
                             103.0f,  104.0f,  200.0f,  inf,    -inf,   NAN};
  std::vector<float> up(gate.size(), 1.5f);
  std::vector<float> got = gate, want = gate;
  set_->silu_mul(got.data(), up.data(), got.size());
  SiluMulInPlace(absl::MakeSpan(want), up);
  for (size_t i = 0; i < gate.size(); ++i) {
    EXPECT_TRUE(CloseRel(got[i], want[i], 1e-6, 1e-30))
        << "gate=" << gate[i] << ": " << got[i] << " vs " << want[i];
  }
}

TEST_P(VectorKernelTest, SoftmaxMatchesReference) {
  std::mt19937 rng(3);
  for (size_t n : Sizes()) {
    const std::vector<float> v = RandomFloats(n, rng, 30.0f);
    GuardedBuffer<float> buf(v);
    set_->softmax(buf.data(), n);
    std::vector<float> want = v;
    SoftmaxInPlace(absl::MakeSpan(want));
    const std::vector<float> got = buf.ToVector();
    double total = 0.0;
    for (size_t i = 0; i < n; ++i) {
      ASSERT_TRUE(CloseRel(got[i], want[i], 1e-6, 1e-30))
          << "n=" << n << " i=" << i << ": " << got[i] << " vs " << want[i];
      total += got[i];
    }
    EXPECT_NEAR(total, 1.0, 1e-5) << "n=" << n;
  }
}

TEST_P(VectorKernelTest, SoftmaxUnderflowsFarBelowTheMaximum) {
  std::vector<float> v = {0.0f, -50.0f, -120.0f, -1000.0f, 10.0f, -INFINITY, 9.0f};
  std::vector<float> want = v;
  set_->softmax(v.data(), v.size());
  SoftmaxInPlace(absl::MakeSpan(want));
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_TRUE(CloseRel(v[i], want[i], 1e-6, 1e-30)) << i << ": " << v[i] << " vs " << want[i];
  }
  EXPECT_EQ(v[3], 0.0f);
  EXPECT_EQ(v[5], 0.0f);
}

TEST_P(VectorKernelTest, DotF32MatchesReference) {
  std::mt19937 rng(4);
  std::vector<size_t> sizes = Sizes();
  sizes.push_back(0);
  for (size_t n : sizes) {
    const std::vector<float> a = RandomFloats(n, rng), b = RandomFloats(n, rng);
    GuardedBuffer<float> a_buf(a), b_buf(b);
    const float got = set_->dot_f32(a_buf.data(), b_buf.data(), n);
    const float want = DotF32(a.data(), b.data(), n);
    double s = 0.0;
    for (size_t i = 0; i < n; ++i) s += std::abs(static_cast<double>(a[i]) * b[i]);
    EXPECT_LE(std::abs(static_cast<double>(got) - want), 1e-5 * s + 1e-6) << "n=" << n;
  }
}

TEST_P(VectorKernelTest, AxpyAndAddMatchReference) {
  std::mt19937 rng(5);
  std::vector<size_t> sizes = Sizes();
  sizes.push_back(0);
  for (size_t n : sizes) {
    const std::vector<float> x = RandomFloats(n, rng), out0 = RandomFloats(n, rng);
    const float scale = 0.37f;
    GuardedBuffer<float> x_buf(x), out_buf(out0);
    set_->axpy(scale, x_buf.data(), out_buf.data(), n);
    std::vector<float> want = out0;
    AxpyInPlace(scale, x, absl::MakeSpan(want));
    const std::vector<float> got = out_buf.ToVector();
    for (size_t i = 0; i < n; ++i) {
      const double bound = 1e-6 * (std::abs(out0[i]) + std::abs(scale * x[i])) + 1e-30;
      ASSERT_LE(std::abs(static_cast<double>(got[i]) - want[i]), bound) << "n=" << n << " i=" << i;
    }

    GuardedBuffer<float> acc_buf(out0);
    set_->add(acc_buf.data(), x_buf.data(), n);
    std::vector<float> sum = out0;
    AddInPlace(absl::MakeSpan(sum), x);
    EXPECT_EQ(acc_buf.ToVector(), sum) << "n=" << n;
  }
}

INSTANTIATE_TEST_SUITE_P(AllLevels, VectorKernelTest, ::testing::ValuesIn(AllIsas()), IsaParamName);

}  // namespace
}  // namespace tern::kernels
