#include "router/core/policy.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"

namespace tern::router {
namespace {

int64_t Load(const WorkerLoadView& w) {
  // The router's in-flight count covers dispatches the worker has not
  // reported yet; its report covers work from other routers.
  return std::max<int64_t>(w.running + w.waiting, w.inflight);
}

// Mixes a draw with a candidate index: a stable per-request order among ties.
uint64_t TieKey(uint64_t draw, size_t index) {
  uint64_t x = draw ^ (0x9e3779b97f4a7c15ULL * (index + 1));
  x ^= x >> 31;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 29;
  return x;
}

size_t LeastLoaded(absl::Span<const WorkerLoadView> candidates, uint64_t draw) {
  size_t best = 0;
  for (size_t i = 1; i < candidates.size(); ++i) {
    const int64_t a = Load(candidates[i]);
    const int64_t b = Load(candidates[best]);
    if (a < b || (a == b && TieKey(draw, i) < TieKey(draw, best))) best = i;
  }
  return best;
}

// splitmix64's finalizer.
uint64_t Mix(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The guard's test: `load` exceeds the least loaded candidate's by both thresholds.
bool Overloaded(const PolicyOptions& options, int64_t load, int64_t min_load) {
  return load - min_load > options.imbalance_abs &&
         static_cast<double>(load) > options.imbalance_rel * static_cast<double>(min_load);
}

}  // namespace

uint64_t RendezvousWeight(absl::string_view session_key, absl::string_view worker_address) {
  // FNV-1a over key, a separator no address contains, and address; then a
  // finalizer so that nearby inputs give independent weights.
  uint64_t h = 0xcbf29ce484222325ULL;
  auto feed = [&h](absl::string_view bytes) {
    for (const char c : bytes) {
      h ^= static_cast<unsigned char>(c);
      h *= 0x100000001b3ULL;
    }
  };
  feed(session_key);
  feed(absl::string_view("\0", 1));
  feed(worker_address);
  return Mix(h);
}

absl::StatusOr<PolicyKind> ParsePolicyKind(absl::string_view name) {
  if (name == "prefix") return PolicyKind::kPrefix;
  if (name == "least-loaded") return PolicyKind::kLeastLoaded;
  if (name == "round-robin") return PolicyKind::kRoundRobin;
  if (name == "random") return PolicyKind::kRandom;
  return absl::InvalidArgumentError(absl::StrCat("unknown routing policy \"", name,
                                                 "\" (prefix, least-loaded, round-robin, random)"));
}

absl::StatusOr<absl::flat_hash_map<std::string, PolicyKind>> ParseModelPolicies(
    const std::map<std::string, std::string>& model_policies) {
  absl::flat_hash_map<std::string, PolicyKind> kinds;
  for (const auto& [model, name] : model_policies) {
    absl::StatusOr<PolicyKind> kind = ParsePolicyKind(name);
    if (!kind.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("router.model_policies.", model, ": ", kind.status().message()));
    }
    kinds.emplace(model, *kind);
  }
  return kinds;
}

const char* PolicyKindName(PolicyKind kind) {
  switch (kind) {
    case PolicyKind::kPrefix:
      return "prefix";
    case PolicyKind::kLeastLoaded:
      return "least-loaded";
    case PolicyKind::kRoundRobin:
      return "round-robin";
    case PolicyKind::kRandom:
      return "random";
  }
  return "unknown";
}

const char* DecisionReasonName(DecisionReason reason) {
  switch (reason) {
    case DecisionReason::kCacheHit:
      return "cache_hit";
    case DecisionReason::kMinCost:
      return "min_cost";
    case DecisionReason::kImbalance:
      return "imbalance";
    case DecisionReason::kLeastLoaded:
      return "least_loaded";
    case DecisionReason::kRoundRobin:
      return "round_robin";
    case DecisionReason::kRandom:
      return "random";
    case DecisionReason::kSticky:
      return "sticky";
  }
  return "unknown";
}

double PrefixCost(const PolicyOptions& options, const WorkerLoadView& worker,
                  int32_t prompt_blocks) {
  const int64_t unit = std::max(1, options.block_size);
  const int64_t own_block = worker.block_size > 0 ? worker.block_size : unit;
  const int64_t own_prompt_blocks =
      worker.prompt_blocks >= 0 ? worker.prompt_blocks : prompt_blocks;
  // Missing prompt tokens in units of the policy's block size: the same as
  // missing blocks when the worker's block size is that size.
  const double missing =
      static_cast<double>(std::max<int64_t>(0, own_prompt_blocks - worker.matched_blocks) *
                          own_block) /
      static_cast<double>(unit);
  const int64_t queued_blocks = (worker.queued_prefill_tokens + unit - 1) / unit;
  return options.alpha * (missing + static_cast<double>(queued_blocks)) +
         options.beta * static_cast<double>(Load(worker));
}

Decision ChooseWorker(const PolicyOptions& options, absl::Span<const WorkerLoadView> candidates,
                      int32_t prompt_blocks, uint64_t draw, uint64_t round_robin,
                      absl::Span<const uint64_t> session_weights) {
  Decision decision;
  int64_t max_load = 0;
  int64_t min_load = std::numeric_limits<int64_t>::max();
  for (const WorkerLoadView& w : candidates) {
    max_load = std::max(max_load, Load(w));
    min_load = std::min(min_load, Load(w));
  }
  if (!session_weights.empty() && session_weights.size() == candidates.size()) {
    const size_t sticky = static_cast<size_t>(
        std::max_element(session_weights.begin(), session_weights.end()) - session_weights.begin());
    if (!Overloaded(options, Load(candidates[sticky]), min_load)) {
      decision.index = sticky;
      decision.reason = DecisionReason::kSticky;
      decision.cost = PrefixCost(options, candidates[sticky], prompt_blocks);
      return decision;
    }
  }
  switch (options.kind) {
    case PolicyKind::kRoundRobin:
      decision.index = round_robin % candidates.size();
      decision.reason = DecisionReason::kRoundRobin;
      return decision;
    case PolicyKind::kRandom:
      decision.index = TieKey(draw, 0) % candidates.size();
      decision.reason = DecisionReason::kRandom;
      return decision;
    case PolicyKind::kLeastLoaded:
      decision.index = LeastLoaded(candidates, draw);
      decision.reason = DecisionReason::kLeastLoaded;
      return decision;
    case PolicyKind::kPrefix:
      break;
  }
  // Hot-spot guard.
  if (Overloaded(options, max_load, min_load)) {
    decision.index = LeastLoaded(candidates, draw);
    decision.reason = DecisionReason::kImbalance;
    decision.cost = PrefixCost(options, candidates[decision.index], prompt_blocks);
    return decision;
  }
  // Skip workers whose KV pool is nearly full while some other is not.
  const bool any_roomy = std::any_of(candidates.begin(), candidates.end(), [&](const auto& w) {
    return w.kv_usage <= options.max_kv_usage;
  });
  bool found = false;
  double best_cost = 0.0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (any_roomy && candidates[i].kv_usage > options.max_kv_usage) continue;
    const double cost = PrefixCost(options, candidates[i], prompt_blocks);
    const WorkerLoadView& best = candidates[decision.index];
    const bool better = !found || cost < best_cost ||
                        (cost == best_cost && (candidates[i].inflight < best.inflight ||
                                               (candidates[i].inflight == best.inflight &&
                                                TieKey(draw, i) < TieKey(draw, decision.index))));
    if (better) {
      found = true;
      best_cost = cost;
      decision.index = i;
    }
  }
  decision.cost = best_cost;
  decision.reason = candidates[decision.index].matched_blocks > 0 ? DecisionReason::kCacheHit
                                                                  : DecisionReason::kMinCost;
  return decision;
}

}  // namespace tern::router
