// The trn2.48xlarge comparison that `tern bench simulate --preset trn2`
// prints: the seed's setup (one NxD Inference server spanning the instance,
// TP64, one request at a time, as AWS's Llama 3.3 70B tutorial measured it)
// against tern's (four vLLM Neuron TP16 engines per instance with the limits
// of AWS's Llama 3.3 70B FP8 recipe, prefix caching at block 128, the
// router's prefix policy in front), both driven through the fleet simulator
// (fleet_simulator.h) on one arrival trace. Every per-engine cost is derived
// from a published figure; Trn2Assumptions() says which and how.
//
// Thread contract: functions run on the calling thread and share nothing.
#ifndef TERN_CLI_BENCH_TRN2_FLEET_H_
#define TERN_CLI_BENCH_TRN2_FLEET_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cli/bench/fleet_simulator.h"

namespace tern::cli {

// The seed's published run (NxDI tutorial, LLMPerf, 10,000 input and 1,500
// output tokens, one request at a time).
inline constexpr double kSeedTtftMs = 814.2;            // p50
inline constexpr double kSeedTpotMs = 19.6;             // p50
inline constexpr double kSeedE2eS = 30.33;              // p50
inline constexpr double kSeedOutputTokensPerS = 36.56;  // overall, per instance
inline constexpr int32_t kSeedInputTokens = 10000;
inline constexpr int32_t kSeedOutputTokens = 1500;
// Its context-encoding bucket for a 10,000-token prompt.
inline constexpr int32_t kSeedPromptBucket = 12288;

// The target: per-instance output throughput >= this multiple of the seed's,
// with TTFT p99 <= kTargetTtftP99Ms.
inline constexpr double kTargetThroughputRatio = 10;
inline constexpr double kTargetTtftP99Ms = 2000;

// How much a TP16 engine's step costs relative to the seed's TP64 server,
// per phase.
struct Trn2TpFactors {
  double prefill = 2;
  double decode = 2;
};

// The seed: one TP64 server per instance, batch 1, no prefix cache.
SimCostModel Trn2SeedModel();
// One of tern's four TP16 vLLM Neuron engines per instance.
// `mean_context_tokens` sizes the per-sequence decode growth (its KV read).
SimCostModel Trn2EngineModel(Trn2TpFactors factors = {},
                             double mean_context_tokens = kSeedInputTokens +
                                                          kSeedOutputTokens / 2.0);
// The tern engine of Trn2EngineModel() with default factors.
SimCostModel Trn2Preset();
// One line per assumption: what, its value, and where it comes from.
std::vector<std::string> Trn2Assumptions(const SimCostModel& seed, const SimCostModel& tern,
                                         Trn2TpFactors factors, Trn2TpFactors pessimistic);

struct Trn2Options {
  int32_t instances = 1;
  int64_t requests = 0;  // on the whole fleet; 0: 2,000 per instance
  int32_t groups = 0;    // shared prefixes; 0: 16 per instance
  int32_t prefix_len = 9000;
  int32_t question_len = 1000;
  int32_t output_len = kSeedOutputTokens;
  // Offered output tokens per second per instance, in multiples of the
  // seed's 36.56.
  std::vector<double> loads = {1, 5, 10, 12, 15};
  Trn2TpFactors factors;            // of `tern` when it is Trn2EngineModel()
  Trn2TpFactors pessimistic{4, 4};  // the bound row
  uint64_t seed = 1;
};

// One simulated setup at one load.
struct Trn2Row {
  std::string setup;
  double load = 0;  // multiple of the seed's throughput offered
  SimResult result;
  double tokens_per_s_per_instance = 0;
};

// The seed, `tern` (prefix policy), `tern` with round-robin, and tern's
// engine with the pessimistic factors, each at every load, on the same
// trace. INVALID_ARGUMENT for bad sizes.
absl::StatusOr<std::vector<Trn2Row>> RunTrn2Comparison(const Trn2Options& options,
                                                       const SimCostModel& tern);

// Runs the comparison and prints assumptions, workload, single-request
// figures, the table and the verdict on the target to `out`.
absl::Status PrintTrn2Report(const Trn2Options& options, const SimCostModel& tern,
                             std::ostream& out);

}  // namespace tern::cli

#endif  // TERN_CLI_BENCH_TRN2_FLEET_H_
