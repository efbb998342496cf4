// A discrete-event simulation of a fleet behind the router, driving the
// router's own code: the Dispatcher (late binding, the admission queue and
// its fairness bounds, routing policies, session affinity) over a FleetState
// (the prefix index, fed by the simulated workers' KV events; their load
// reports; circuit breakers), on a simulated clock (ManualClock). Only the
// workers and the passage of time are simulated; what the router decides is
// what tern-router would decide, minus its gRPC shell.
//
// Worker model: continuous batching of up to max_num_seqs sequences (more
// wait in the worker, FIFO); each engine step prefills up to prefill_chunk
// uncached prompt tokens and decodes one token for every sequence past its
// prefill, taking prefill_tokens / prefill_rate + decode_step(batch). With
// separate_prefill (vLLM Neuron's scheduler) a step is either one chunk of
// one sequence's prefill (FIFO) or one decode of every sequence past its
// prefill, never both, and decodes wait while any prefill is pending. Token
// counts and batches are padded up to the compiled buckets, if any. The
// prefix cache is an LRU of block hashes (common/block_hash.h) of
// cache_blocks capacity: a sequence admitted to the batch reuses its longest
// cached prefix, and its prompt blocks enter the cache when its prefill ends
// (stored events; evictions are removed events). After every change the
// worker publishes its load and events, as its WatchState stream would; a
// finished request releases its router slot, and the dispatcher hands the
// slot to the queued request it finds best.
//
// Thread contract: functions run on the calling thread and share nothing.
#ifndef TERN_CLI_BENCH_FLEET_SIMULATOR_H_
#define TERN_CLI_BENCH_FLEET_SIMULATOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/bench/bench_metrics.h"
#include "router/core/dispatcher.h"
#include "router/core/fleet_state.h"
#include "router/core/policy.h"

namespace tern::cli {

// What one simulated engine costs and allows. Worker counts elsewhere are
// engines; engines_per_instance says how many share one machine.
struct SimCostModel {
  std::string name;
  double prefill_tokens_per_s = 2000;  // computed (padded) prompt tokens
  double decode_step_ms = 11;          // at batch 1
  double decode_step_growth_ms = 0.4;  // per extra sequence in the batch
  int32_t max_num_seqs = 16;
  int32_t router_slack = 2;  // in flight beyond max_num_seqs
  int64_t cache_blocks = 2048;
  int32_t block_size = 16;
  int32_t prefill_chunk = 512;  // prompt tokens per step (max_num_batched_tokens)
  // Compiled shapes, ascending: a step's prefill tokens are padded up to the
  // first bucket that holds them, its decode batch likewise; none: no padding.
  std::vector<int32_t> prefill_buckets;
  std::vector<int32_t> decode_buckets;
  bool separate_prefill = false;  // see the file comment
  bool prefix_caching = true;
  int32_t engines_per_instance = 1;

  double DecodeStepSeconds(int32_t batch) const;
  double PrefillSeconds(int64_t tokens) const;
};

// This machine's CPU engine with a small model.
SimCostModel CpuPreset();
// One line per assumption, for the report header.
std::string DescribeCostModel(const SimCostModel& model);

enum class SimDataset { kSharedPrefix, kMultiTurn };

struct SimWorkload {
  SimDataset dataset = SimDataset::kSharedPrefix;
  int64_t requests = 0;  // 0: 32 per worker
  int32_t groups = 0;    // shared-prefix prefixes; 0: 4 per worker
  int32_t prefix_len = 2048;
  int32_t question_len = 128;
  int32_t output_len = 128;
  int32_t turns = 4;          // multi-turn: turns per conversation
  double load = 0.9;          // arrival rate / the fleet's capacity without cache hits
  double requests_per_s = 0;  // the fleet's arrival rate; 0: set by `load`
  uint64_t seed = 1;
};

struct SimResult {
  int64_t completed = 0;
  double sim_seconds = 0;   // first arrival to last completion, simulated
  double wall_seconds = 0;  // to run the simulation
  Distribution ttft_ms;
  Distribution tpot_ms;  // (e2e - TTFT) / (output tokens - 1), as benchmark_serving
  // Arrival to a place in an engine's running batch: the router's queue,
  // then the engine's own line.
  Distribution batch_wait_ms;
  double requests_per_s = 0;
  double output_tokens_per_s = 0;
  double predicted_hit_rate = 0;  // router's matched blocks at dispatch / prompt tokens
  double actual_hit_rate = 0;     // worker cache hits at admission / prompt tokens
  double imbalance = 0;           // mean over arrivals of max/mean in-flight per worker
  uint64_t index_resyncs = 0;
  int64_t rejected = 0;       // turned away by the dispatcher (none expected)
  int64_t full_prefills = 0;  // requests admitted with no cached block
};

// `workers` engines. INVALID_ARGUMENT for workers < 1 or bad workload sizes.
absl::StatusOr<SimResult> SimulateFleet(const SimCostModel& model, int32_t workers,
                                        router::PolicyKind policy, const SimWorkload& workload);

// The model every simulated worker serves.
inline constexpr char kSimModel[] = "sim";

// `workers` healthy members "sim-worker-<i>:1" in `state`, as the router's
// gRPC shell would have made them (a SERVING health report with the cost
// model's Info, a state stream's idle snapshot).
std::vector<router::FleetMember*> AddSimulatedWorkers(router::FleetState& state, int32_t workers,
                                                      const SimCostModel& model, absl::Time now);

// The dispatcher's options for a simulation: `policy`, `slack` requests
// beyond max_num_seqs, and a queue that neither fills nor expires.
router::DispatcherOptions SimDispatcherOptions(router::PolicyKind policy, int32_t slack);

}  // namespace tern::cli

#endif  // TERN_CLI_BENCH_FLEET_SIMULATOR_H_
