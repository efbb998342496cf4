// Measurements of the machine the engine runs on, for roofline fractions in
// `tern bench engine`: DRAM read bandwidth and FP32 FMA peak over a set of
// CPUs (one pinned thread each). They are measurements, not kernels: each
// probe uses the widest vector unit the CPU has (AVX-512, else AVX2, else
// scalar) and touches only its own buffers.
//
// Thread contract: the functions are thread-safe, but the Measure* calls
// occupy every CPU they are given while they run.
#ifndef TERN_CLI_BENCH_MACHINE_PROBE_H_
#define TERN_CLI_BENCH_MACHINE_PROBE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tern::cli {

enum class ProbeIsa { kScalar, kAvx2, kAvx512 };

// The widest level this CPU runs, and its name ("avx512", "avx2", "scalar").
ProbeIsa BestProbeIsa();
const char* ProbeIsaName(ProbeIsa isa);
bool ProbeIsaSupported(ProbeIsa isa);

// The read kernel: the wrapping sum of `words` 64-bit words. `isa` must be
// supported by the CPU.
uint64_t SumWords(ProbeIsa isa, const uint64_t* data, size_t words);

// The FMA kernel: kFmaChains independent chains of vector width lanes, each
// lane iterating acc = fma(acc, kFmaMultiplier, kFmaAddend) `iterations`
// times from 1 + 0.01 * chain; returns the sum over all lanes of all chains.
// It performs FmaFlops(isa, iterations) floating-point operations.
inline constexpr int kFmaChains = 12;
inline constexpr float kFmaMultiplier = 0.9999999f;
inline constexpr float kFmaAddend = 1e-7f;
float FmaChains(ProbeIsa isa, int64_t iterations);
int FmaLanes(ProbeIsa isa);
double FmaFlops(ProbeIsa isa, int64_t iterations);

struct ProbeOptions {
  // One thread per CPU, pinned there (pinning failures are ignored).
  std::vector<int32_t> cpus;
  // Bandwidth buffer, split evenly among the threads.
  size_t buffer_bytes = size_t{1} << 30;
  // Best of this many passes.
  int passes = 3;
  // Seconds one FMA pass should last.
  double fma_seconds = 0.25;
  // Called on the calling thread with one line per pass.
  std::function<void(const std::string&)> progress;
};

struct ProbeResult {
  ProbeIsa isa = ProbeIsa::kScalar;
  double value = 0.0;  // GB/s (1e9 bytes) or GFLOP/s
};

// Streams the buffer (filled once, first touched by the thread that reads
// it). RESOURCE_EXHAUSTED when the buffer cannot be had; INTERNAL when a
// pass's checksum does not match the buffer's contents (the read was not
// complete).
absl::StatusOr<ProbeResult> MeasureReadBandwidth(const ProbeOptions& options);

// Runs FmaChains on every thread at once; INVALID_ARGUMENT without CPUs.
absl::StatusOr<ProbeResult> MeasureFmaPeak(const ProbeOptions& options);

}  // namespace tern::cli

#endif  // TERN_CLI_BENCH_MACHINE_PROBE_H_
