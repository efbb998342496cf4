// Routing policies: which of the healthy workers serving a model takes a
// request (DESIGN.md section 3).
//
// `prefix` (the default) scores each worker by what the request would cost
// it, in KV blocks of work:
//   cost = alpha * (prompt blocks it lacks + its queued prefill blocks)
//        + beta  * (its running and waiting sequences)
// and picks the lowest, ties broken by fewer in-flight requests and then by a
// per-request pseudo-random draw (so equal workers share traffic). A hot-spot
// guard overrides the score: when the most and least loaded candidates differ
// by more than `imbalance_abs` sequences and by a factor above
// `imbalance_rel`, the request goes to the least loaded worker instead, so a
// worker holding a popular prefix can never take all traffic (SGLang's
// cache-aware router uses the same two thresholds). Workers whose KV pool is
// fuller than `max_kv_usage` are skipped while others are below it.
//
// `least-loaded` picks the fewest running + waiting sequences, `round-robin`
// rotates, `random` draws uniformly.
//
// Session affinity runs before any policy: a request carrying a session key
// goes to the candidate with the highest rendezvous weight of (session key,
// worker address), so a session stays on one worker while that worker is a
// candidate, and when workers join or leave only the sessions whose worker
// left move (and ~1/n of the others, to a newcomer). The hot-spot guard's
// thresholds still apply: when the session's worker is overloaded against the
// least loaded candidate, the configured policy decides instead.
//
// Pure and deterministic given the inputs; thread-compatible (round-robin's
// counter is the caller's).
#ifndef TERN_ROUTER_CORE_POLICY_H_
#define TERN_ROUTER_CORE_POLICY_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace tern::router {

enum class PolicyKind { kPrefix, kLeastLoaded, kRoundRobin, kRandom };

// "prefix", "least-loaded", "round-robin", "random"; INVALID_ARGUMENT otherwise.
absl::StatusOr<PolicyKind> ParsePolicyKind(absl::string_view name);
const char* PolicyKindName(PolicyKind kind);
// router.model_policies (model name -> policy name) parsed; INVALID_ARGUMENT
// naming the first entry whose policy is unknown.
absl::StatusOr<absl::flat_hash_map<std::string, PolicyKind>> ParseModelPolicies(
    const std::map<std::string, std::string>& model_policies);

struct PolicyOptions {
  PolicyKind kind = PolicyKind::kPrefix;
  double alpha = 1.0;  // per prefill block
  double beta = 1.0;   // per running or waiting sequence
  int32_t imbalance_abs = 8;
  double imbalance_rel = 1.5;
  double max_kv_usage = 0.95;
  int32_t block_size = 16;
};

// One candidate as the router sees it now: the worker's last report plus the
// router's own accounting of what it dispatched since.
struct WorkerLoadView {
  int32_t running = 0;  // sequences decoding or prefilling
  int32_t waiting = 0;  // queued in the worker
  int64_t queued_prefill_tokens = 0;
  int32_t inflight = 0;        // requests the router has open on it
  double kv_usage = 0.0;       // fraction of KV blocks in use, 0..1
  int32_t matched_blocks = 0;  // leading prompt blocks it holds (prefix index)
  // The worker's KV block size, in which matched_blocks counts; 0: the
  // policy's block_size. Workers of one model may differ (16 on tern's
  // engine, 128 on vLLM Neuron): the prefix cost counts missing prompt
  // tokens, in units of the policy's block_size, so they compare.
  int32_t block_size = 0;
  // The prompt's full blocks at that size; -1: ChooseWorker's prompt_blocks.
  int32_t prompt_blocks = -1;
};

enum class DecisionReason {
  kCacheHit,
  kMinCost,
  kImbalance,
  kLeastLoaded,
  kRoundRobin,
  kRandom,
  kSticky,  // session affinity
};
const char* DecisionReasonName(DecisionReason reason);

struct Decision {
  size_t index = 0;  // into the candidates
  DecisionReason reason = DecisionReason::kMinCost;
  double cost = 0.0;
};

// Chooses among `candidates` (non-empty). `prompt_blocks` is the number of
// full blocks of the prompt; `draw` a per-request pseudo-random value (tie
// breaks and `random`); `round_robin` the caller's counter for `round-robin`.
// `session_weights`: empty, or one RendezvousWeight per candidate for a
// request with a session key (session affinity, above).
Decision ChooseWorker(const PolicyOptions& options, absl::Span<const WorkerLoadView> candidates,
                      int32_t prompt_blocks, uint64_t draw, uint64_t round_robin,
                      absl::Span<const uint64_t> session_weights = {});

// The rendezvous (highest-random-weight) weight of a session on a worker. A
// fixed hash, not absl::Hash, so every router process agrees on it.
uint64_t RendezvousWeight(absl::string_view session_key, absl::string_view worker_address);

// The cost the `prefix` policy gives one candidate.
double PrefixCost(const PolicyOptions& options, const WorkerLoadView& worker,
                  int32_t prompt_blocks);

}  // namespace tern::router

#endif  // TERN_ROUTER_CORE_POLICY_H_
