#include "cli/bench/trn2_fleet.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "router/core/policy.h"

namespace tern::cli {
namespace {

// Source keys as in the trn2 reference notes: SDK = aws-neuron/aws-neuron-sdk
// @81ce03ae (Neuron SDK 2.32 documentation).
constexpr char kSeedSource[] =
    "SDK libraries/nxd-inference/tutorials/trn2-llama3.3-70b-tutorial.rst and "
    "llama70b_perf_comparison.csv (NxDI, Llama 3.3 70B BF16, TP64 at LNC=2, batch 1, "
    "vllm --max-num-seqs 1, context buckets 2048/4096/8192/12288, LLMPerf 10,000 in / "
    "1,500 out)";
constexpr char kDpSource[] =
    "SDK libraries/nxd-inference/tutorials/trn2-llama3.3-70b-dp-tutorial.ipynb: going from "
    "TP64 x DP1 to TP16 x DP4 gave 'up to 2x' the instance's throughput at batch 1 and 4 "
    "(BF16, ~8k in / 256 out), i.e. each TP16 copy at about half TP64's speed; no TP16 "
    "step time is published; FP8's speed-up is not credited";
constexpr char kRecipeSource[] =
    "AWS vLLM Neuron Llama 3.3 70B FP8 recipe, SDK vllm-neuron/docs/tutorials/"
    "tutorial-llama3-70b.md (reference trainium2.md 1.1)";
constexpr char kSchedulerSource[] =
    "SDK vllm-neuron/docs/design/vllm/neuron-scheduler.md: max_prefills_per_batch = 1, "
    "prefill and decode never share a batch (decodes are held back while a prefill waits), "
    "chunks padded to num_batched_tokens_buckets, decode batches to num_seqs_buckets";

// Llama 3.3 70B (config.json): 80 layers, 8 KV heads of 128 dims; 70.6 B
// parameters. With FP8 weights and FP8 KV (the recipe's checkpoint sets
// kv_cache_quant_algo FP8) both are one byte per element; the ratio is the
// same in BF16.
constexpr double kKvBytesPerToken = 2.0 * 80 * 8 * 128;  // K and V, 1 byte each
constexpr double kWeightBytes = 70.6e9;
// KV budget of one TP16 engine: 16 logical cores at LNC=2 are 4 Trainium2
// chips of 96 GiB HBM (SDK about-neuron/arch/neuron-hardware/trainium2.rst);
// vLLM's gpu_memory_utilization default 0.9; vLLM Neuron caps KV at 0.30 of
// that budget (SDK vllm-neuron/docs/guides/features-guide.md, Memory
// management).
constexpr double kEngineHbmBytes = 4 * 96.0 * (1 << 30);
constexpr double kKvBudgetBytes = kEngineHbmBytes * 0.9 * 0.30;

constexpr int32_t kEnginesPerInstance = 4;  // 64 logical cores at LNC=2 / TP16
constexpr int32_t kRecipeMaxNumSeqs = 8;
constexpr int32_t kRecipeBatchedTokens = 8192;
constexpr int32_t kRecipeBlockSize = 128;

double Ratio(double tokens_per_s) { return tokens_per_s / kSeedOutputTokensPerS; }

bool MeetsTarget(const Trn2Row& row) {
  // Both on the same run: the throughput at a load the TTFT bound holds for.
  return Ratio(row.tokens_per_s_per_instance) >= kTargetThroughputRatio &&
         row.result.ttft_ms.p99 <= kTargetTtftP99Ms;
}

}  // namespace

SimCostModel Trn2SeedModel() {
  SimCostModel m;
  m.name = "trn2-seed";
  // 814.2 ms for a 10,000-token prompt, run in the 12288 bucket.
  m.prefill_tokens_per_s = kSeedPromptBucket / (kSeedTtftMs / 1e3);
  m.prefill_buckets = {2048, 4096, 8192, 12288};
  m.prefill_chunk = 12288;  // NxDI encodes the whole context at once
  m.decode_step_ms = kSeedTpotMs;
  m.decode_step_growth_ms = 0;  // batch 1: never grows
  m.max_num_seqs = 1;
  m.separate_prefill = true;
  m.prefix_caching = false;
  m.block_size = kRecipeBlockSize;  // unused without a prefix cache
  m.cache_blocks = 12800 / kRecipeBlockSize;
  m.engines_per_instance = 1;
  return m;
}

SimCostModel Trn2EngineModel(Trn2TpFactors factors, double mean_context_tokens) {
  SimCostModel m;
  m.name = "trn2";
  m.engines_per_instance = kEnginesPerInstance;
  m.prefill_tokens_per_s = kSeedPromptBucket / (kSeedTtftMs / 1e3) / factors.prefill;
  m.prefill_chunk = kRecipeBatchedTokens;
  m.prefill_buckets = {kRecipeBatchedTokens};
  m.decode_step_ms = kSeedTpotMs * factors.decode;
  // Memory-bound decode: each extra sequence adds its KV read to the weight
  // read, a fraction KV bytes / weight bytes of the batch-1 step.
  m.decode_step_growth_ms =
      m.decode_step_ms * mean_context_tokens * kKvBytesPerToken / kWeightBytes;
  m.decode_buckets = {kRecipeMaxNumSeqs};
  m.max_num_seqs = kRecipeMaxNumSeqs;
  m.block_size = kRecipeBlockSize;
  m.cache_blocks = static_cast<int64_t>(kKvBudgetBytes / (kKvBytesPerToken * kRecipeBlockSize));
  m.separate_prefill = true;
  m.prefix_caching = true;
  return m;
}

SimCostModel Trn2Preset() { return Trn2EngineModel(); }

std::vector<std::string> Trn2Assumptions(const SimCostModel& seed, const SimCostModel& tern,
                                         Trn2TpFactors factors, Trn2TpFactors pessimistic) {
  std::vector<std::string> lines;
  lines.push_back(absl::StrFormat(
      "seed: 1 server x TP64 per instance (all 64 logical NeuronCores), batch 1, BF16, no "
      "prefix cache; prefill %.1f ms for a 10,000-token prompt (its 12288 bucket: %.0f padded "
      "tok/s), decode %.1f ms per token. Source: %s",
      kSeedTtftMs, seed.prefill_tokens_per_s, seed.decode_step_ms, kSeedSource));
  lines.push_back(absl::StrFormat(
      "tern: %d engines x TP16 per instance (64 logical cores at LNC=2 / 16; reference "
      "trainium2.md 1.1 and 6), each max_num_seqs %d, max_num_batched_tokens %d (prefill "
      "bucket %d, decode batch bucket %d), block %d, prefix caching. Source: %s",
      tern.engines_per_instance, tern.max_num_seqs, tern.prefill_chunk,
      tern.prefill_buckets.empty() ? 0 : tern.prefill_buckets.back(),
      tern.decode_buckets.empty() ? 0 : tern.decode_buckets.back(), tern.block_size,
      kRecipeSource));
  lines.push_back(absl::StrCat(
      "tern: a step prefills one chunk of one request or decodes every running request, "
      "padded to the buckets. Source: ",
      kSchedulerSource));
  lines.push_back(absl::StrFormat(
      "tern: TP16 step cost = %.1fx the seed's TP64 cost in prefill, %.1fx in decode "
      "(derived). Source: %s",
      factors.prefill, factors.decode, kDpSource));
  lines.push_back(absl::StrFormat(
      "tern: prefill %.0f padded tok/s: an 8192-token chunk takes %.0f ms (= %.1f ms x "
      "8192/12288 x %.1f)",
      tern.prefill_tokens_per_s, 1e3 * tern.PrefillSeconds(kRecipeBatchedTokens), kSeedTtftMs,
      factors.prefill));
  const double growth = tern.decode_step_growth_ms / tern.decode_step_ms;
  lines.push_back(absl::StrFormat(
      "tern: decode step %.2f ms at batch 1 (= %.1f ms x %.1f) + %.3f ms per extra sequence "
      "(+%.2f%% each, derived: memory-bound decode reads the weights once per step and each "
      "sequence's KV; the KV of a %.0f-token sequence, %.0f B per token, over %.1f GB of "
      "weights, from Llama 3.3 70B's shape: 80 layers, 8 KV heads of 128, FP8 both); every "
      "batch runs padded to %d: %.2f ms per step",
      tern.decode_step_ms, kSeedTpotMs, factors.decode, tern.decode_step_growth_ms, 100 * growth,
      growth * kWeightBytes / kKvBytesPerToken, kKvBytesPerToken, kWeightBytes / 1e9,
      tern.decode_buckets.empty() ? 1 : tern.decode_buckets.back(),
      1e3 * tern.DecodeStepSeconds(1)));
  lines.push_back(absl::StrFormat(
      "tern: prefix cache %d blocks of %d tokens per engine (= 4 chips x 96 GiB HBM x 0.9 "
      "gpu_memory_utilization x 0.30 KV cap / %.0f MiB per FP8 block; derived from SDK "
      "trainium2.rst and vllm-neuron features-guide.md, Memory management); 8 x 16384 tokens "
      "reserved for the running batch fit, so KV never limits the batch",
      tern.cache_blocks, tern.block_size, kKvBytesPerToken * tern.block_size / (1 << 20)));
  lines.push_back(absl::StrFormat(
      "bound: the same engine at %.1fx prefill and %.1fx decode (each TP64 cost scaled by its "
      "4x cores: TP64 scaling perfectly, the slowest TP16 could be)",
      pessimistic.prefill, pessimistic.decode));
  return lines;
}

absl::StatusOr<std::vector<Trn2Row>> RunTrn2Comparison(const Trn2Options& options,
                                                       const SimCostModel& tern) {
  if (options.instances < 1 || options.requests < 0 || options.groups < 0 ||
      options.loads.empty()) {
    return absl::InvalidArgumentError("trn2 comparison: bad instances, requests or loads");
  }
  for (double load : options.loads) {
    if (!(load > 0)) return absl::InvalidArgumentError("trn2 comparison: loads must be > 0");
  }
  SimCostModel pessimistic = Trn2EngineModel(options.pessimistic);
  pessimistic.prefill_buckets = tern.prefill_buckets;
  struct Setup {
    std::string label;
    SimCostModel model;
    router::PolicyKind policy;
  };
  // The router as configured (slack 2 by default) and with no slack: a
  // request then waits in the router's queue for any engine's free batch
  // slot instead of in the line of the engine it was bound to.
  SimCostModel no_slack = tern;
  no_slack.router_slack = 0;
  std::vector<Setup> setups = {{"seed 1xTP64 b1", Trn2SeedModel(), router::PolicyKind::kPrefix},
                               {absl::StrFormat("tern prefix slack %d", tern.router_slack), tern,
                                router::PolicyKind::kPrefix}};
  // With --router-slack 0 the configured row is already the no-slack one.
  if (tern.router_slack != 0) {
    setups.push_back({"tern prefix slack 0", no_slack, router::PolicyKind::kPrefix});
  }
  setups.push_back({absl::StrFormat("tern round-robin slack %d", tern.router_slack), tern,
                    router::PolicyKind::kRoundRobin});
  setups.push_back({absl::StrFormat("tern bound %.0fx/%.0fx", options.pessimistic.prefill,
                                    options.pessimistic.decode),
                    pessimistic, router::PolicyKind::kPrefix});
  SimWorkload workload;
  workload.dataset = SimDataset::kSharedPrefix;
  workload.requests = options.requests > 0 ? options.requests : int64_t{2000} * options.instances;
  workload.groups = options.groups > 0 ? options.groups : 16 * options.instances;
  workload.prefix_len = options.prefix_len;
  workload.question_len = options.question_len;
  workload.output_len = options.output_len;
  workload.seed = options.seed;
  std::vector<Trn2Row> rows;
  for (double load : options.loads) {
    // The same Poisson trace for every setup: the rate is per instance.
    workload.requests_per_s = load * kSeedOutputTokensPerS * options.instances / options.output_len;
    for (const Setup& setup : setups) {
      TERN_ASSIGN_OR_RETURN(
          SimResult result,
          SimulateFleet(setup.model, options.instances * setup.model.engines_per_instance,
                        setup.policy, workload));
      Trn2Row row;
      row.setup = setup.label;
      row.load = load;
      row.tokens_per_s_per_instance = result.output_tokens_per_s / options.instances;
      row.result = std::move(result);
      rows.push_back(std::move(row));
    }
  }
  return rows;
}

absl::Status PrintTrn2Report(const Trn2Options& options, const SimCostModel& tern,
                             std::ostream& out) {
  const SimCostModel seed = Trn2SeedModel();
  out << "[tern bench] trn2.48xlarge fleet: the seed's setup against tern's on one arrival "
         "trace; simulated engines and clock, the router's own dispatcher and fleet state in "
         "front of both\n";
  out << "[tern bench] assumptions per engine, with their sources:\n";
  for (const std::string& line :
       Trn2Assumptions(seed, tern, options.factors, options.pessimistic)) {
    out << "  - " << line << "\n";
  }
  const SimCostModel derived = Trn2EngineModel(options.factors);
  const bool overridden = tern.prefill_tokens_per_s != derived.prefill_tokens_per_s ||
                          tern.decode_step_ms != derived.decode_step_ms ||
                          tern.decode_step_growth_ms != derived.decode_step_growth_ms ||
                          tern.prefill_buckets != derived.prefill_buckets ||
                          tern.max_num_seqs != derived.max_num_seqs ||
                          tern.cache_blocks != derived.cache_blocks ||
                          tern.router_slack != derived.router_slack;
  out << "  - engine model in use" << (overridden ? " (flags replaced some figures above)" : "")
      << ": " << DescribeCostModel(tern) << "\n";
  const int64_t requests =
      options.requests > 0 ? options.requests : int64_t{2000} * options.instances;
  const int32_t groups = options.groups > 0 ? options.groups : 16 * options.instances;
  out << absl::StrFormat(
      "[tern bench] workload: %d instance(s), %d requests, each one of %d shared prefixes of %d "
      "tokens (a long system prompt or document) + a %d-token question = %d input tokens, %d "
      "output tokens (the seed's LLMPerf lengths); Poisson arrivals offering L x %.2f output "
      "tok/s per instance (the seed's published throughput), the same trace for every setup\n",
      options.instances, requests, groups, options.prefix_len, options.question_len,
      options.prefix_len + options.question_len, options.output_len, kSeedOutputTokensPerS);

  // The seed's cost model alone, against its published figures.
  SimWorkload one;
  one.requests = 1;
  one.groups = 1;
  one.prefix_len = kSeedInputTokens - 1;
  one.question_len = 1;
  one.output_len = kSeedOutputTokens;
  TERN_ASSIGN_OR_RETURN(SimResult alone, SimulateFleet(seed, 1, router::PolicyKind::kPrefix, one));
  out << absl::StrFormat(
      "[tern bench] seed model, one request of %d in / %d out: TTFT %.1f ms, TPOT %.2f ms, e2e "
      "%.2f s, %.1f tok/s; published: TTFT p50 %.1f ms, TPOT p50 %.1f ms, e2e p50 %.2f s, "
      "36.56 tok/s overall (LLMPerf left gaps: 1.46 requests/min against one per %.1f s; its "
      "TTFT p75 30.5 s is a request waiting for the one before)\n",
      kSeedInputTokens, kSeedOutputTokens, alone.ttft_ms.median, alone.tpot_ms.median,
      alone.sim_seconds, alone.output_tokens_per_s, kSeedTtftMs, kSeedTpotMs, kSeedE2eS,
      alone.sim_seconds);
  const int64_t prompt = options.prefix_len + options.question_len;
  const int64_t cached = options.prefix_len / tern.block_size * tern.block_size;
  double cold_s = 0;
  for (int64_t left = prompt; left > 0; left -= tern.prefill_chunk) {
    cold_s += tern.PrefillSeconds(std::min<int64_t>(left, tern.prefill_chunk));
  }
  out << absl::StrFormat(
      "[tern bench] tern engine, one request: TTFT %.0f ms with no cached prefix (%d tokens), "
      "%.0f ms with its %d-token prefix cached (%d tokens computed, padded to the bucket); "
      "decode step %.2f ms\n",
      1e3 * cold_s, prompt, 1e3 * tern.PrefillSeconds(prompt - cached), cached, prompt - cached,
      1e3 * tern.DecodeStepSeconds(1));

  TERN_ASSIGN_OR_RETURN(std::vector<Trn2Row> rows, RunTrn2Comparison(options, tern));
  out << absl::StrFormat("%5s %7s  %-25s %10s %10s %10s %10s %8s %8s %10s %7s %6s %5s %5s\n",
                         "load", "offered", "setup", "TTFT p50", "TTFT p90", "TTFT p99", "wait p99",
                         "TPOT p50", "TPOT p99", "tok/s/inst", "x seed", "hit", "cold", "wall");
  for (const Trn2Row& row : rows) {
    const SimResult& r = row.result;
    out << absl::StrFormat(
        "%4.0fx %7.1f  %-25s %8.0fms %8.0fms %8.0fms %8.0fms %6.1fms %6.1fms %10.1f %6.2fx "
        "%5.1f%% %5d %4.1fs\n",
        row.load, row.load * kSeedOutputTokensPerS, row.setup, r.ttft_ms.median, r.ttft_ms.p90,
        r.ttft_ms.p99, r.batch_wait_ms.p99, r.tpot_ms.median, r.tpot_ms.p99,
        row.tokens_per_s_per_instance, Ratio(row.tokens_per_s_per_instance),
        100 * r.actual_hit_rate, r.full_prefills, r.wall_seconds);
  }
  out << absl::StrFormat(
      "[tern bench] columns: load = offered / %.2f; offered = output tok/s per instance the "
      "trace asks for; wait = arrival to a place in an engine's batch (router queue, then the "
      "engine's line); tok/s/inst = output tokens / (first arrival to last completion) / "
      "instances; x seed = that / %.2f; hit = prompt tokens found in the engine's cache; cold "
      "= requests with no cached block; wall = real time to simulate\n",
      kSeedOutputTokensPerS, kSeedOutputTokensPerS);
  out << absl::StrFormat(
      "[tern bench] target: >= %.0f x %.2f = %.1f output tok/s per instance with TTFT p99 <= "
      "%.0f ms\n",
      kTargetThroughputRatio, kSeedOutputTokensPerS, kTargetThroughputRatio * kSeedOutputTokensPerS,
      kTargetTtftP99Ms);
  std::vector<std::string> labels;
  for (const Trn2Row& row : rows) {
    if (std::find(labels.begin(), labels.end(), row.setup) == labels.end()) {
      labels.push_back(row.setup);
    }
  }
  for (const std::string& label : labels) {
    const Trn2Row* met = nullptr;     // the first load meeting the target
    const Trn2Row* within = nullptr;  // the most throughput with TTFT p99 in bounds
    const Trn2Row* enough = nullptr;  // the first load delivering the throughput
    for (const Trn2Row& row : rows) {
      if (row.setup != label) continue;
      if (met == nullptr && MeetsTarget(row)) met = &row;
      if (row.result.ttft_ms.p99 <= kTargetTtftP99Ms &&
          (within == nullptr ||
           row.tokens_per_s_per_instance > within->tokens_per_s_per_instance)) {
        within = &row;
      }
      if (enough == nullptr && Ratio(row.tokens_per_s_per_instance) >= kTargetThroughputRatio) {
        enough = &row;
      }
    }
    if (met != nullptr) {
      out << absl::StrFormat(
          "  %-25s target met: at %.0fx load %.1f tok/s per instance = %.2fx, "
          "TTFT p99 %.0f ms\n",
          label, met->load, met->tokens_per_s_per_instance, Ratio(met->tokens_per_s_per_instance),
          met->result.ttft_ms.p99);
      continue;
    }
    std::string why =
        enough == nullptr
            ? std::string("never delivers 10x the seed")
            : absl::StrFormat(
                  "at %.0fx load %.1f tok/s = %.2fx but TTFT p99 %.0f ms (p50 %.0f, "
                  "batch wait p99 %.0f ms)",
                  enough->load, enough->tokens_per_s_per_instance,
                  Ratio(enough->tokens_per_s_per_instance), enough->result.ttft_ms.p99,
                  enough->result.ttft_ms.median, enough->result.batch_wait_ms.p99);
    std::string best =
        within == nullptr
            ? std::string("TTFT p99 > 2 s at every load")
            : absl::StrFormat("within TTFT p99 <= 2 s at most %.1f tok/s = %.2fx (%.0fx load)",
                              within->tokens_per_s_per_instance,
                              Ratio(within->tokens_per_s_per_instance), within->load);
    out << absl::StrFormat("  %-25s target NOT met: %s; %s\n", label, why, best);
  }
  return absl::OkStatus();
}

}  // namespace tern::cli
