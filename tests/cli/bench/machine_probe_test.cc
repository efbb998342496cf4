#include "cli/bench/machine_probe.h"

#include <cmath>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"

namespace tern::cli {
namespace {

std::vector<ProbeIsa> SupportedIsas() {
  std::vector<ProbeIsa> isas;
  for (ProbeIsa isa : {ProbeIsa::kScalar, ProbeIsa::kAvx2, ProbeIsa::kAvx512}) {
    if (ProbeIsaSupported(isa)) isas.push_back(isa);
  }
  return isas;
}

TEST(MachineProbeTest, ReadKernelSumsEveryWordAtEveryLevel) {
  // Odd length so the vector loops leave a tail; values that wrap.
  std::vector<uint64_t> words(100003);
  for (size_t i = 0; i < words.size(); ++i) words[i] = i * 0x9e3779b97f4a7c15ULL;
  const uint64_t expected = std::accumulate(words.begin(), words.end(), uint64_t{0});
  for (ProbeIsa isa : SupportedIsas()) {
    EXPECT_EQ(SumWords(isa, words.data(), words.size()), expected) << ProbeIsaName(isa);
    EXPECT_EQ(SumWords(isa, words.data() + 1, 7),
              std::accumulate(words.begin() + 1, words.begin() + 8, uint64_t{0}))
        << ProbeIsaName(isa);
  }
}

TEST(MachineProbeTest, FmaKernelMatchesScalarFmaChains) {
  const int64_t iterations = 5000;
  for (ProbeIsa isa : SupportedIsas()) {
    double expected = 0.0;
    for (int c = 0; c < kFmaChains; ++c) {
      float acc = 1.0f + 0.01f * c;
      for (int64_t k = 0; k < iterations; ++k) acc = std::fma(acc, kFmaMultiplier, kFmaAddend);
      expected += static_cast<double>(acc) * FmaLanes(isa);
    }
    EXPECT_NEAR(FmaChains(isa, iterations), expected, 1e-5 * expected) << ProbeIsaName(isa);
    EXPECT_EQ(FmaFlops(isa, iterations), 2.0 * kFmaChains * FmaLanes(isa) * iterations);
  }
}

TEST(MachineProbeTest, MeasuresPositiveFiguresOnOneCpu) {
  ProbeOptions options;
  options.cpus = {0};
  options.buffer_bytes = size_t{16} << 20;
  options.passes = 1;
  options.fma_seconds = 0.02;
  int lines = 0;
  options.progress = [&](const std::string&) { ++lines; };
  auto bandwidth = MeasureReadBandwidth(options);
  ASSERT_TRUE(bandwidth.ok()) << bandwidth.status();
  EXPECT_GT(bandwidth->value, 0.1);  // GB/s
  auto fma = MeasureFmaPeak(options);
  ASSERT_TRUE(fma.ok()) << fma.status();
  EXPECT_GT(fma->value, 0.1);  // GFLOP/s
  EXPECT_EQ(fma->isa, BestProbeIsa());
  EXPECT_EQ(lines, 2);
}

TEST(MachineProbeTest, NoCpusIsAnError) {
  ProbeOptions options;
  EXPECT_EQ(MeasureReadBandwidth(options).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MeasureFmaPeak(options).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tern::cli
