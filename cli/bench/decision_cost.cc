#include "cli/bench/decision_cost.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <random>
#include <vector>

#include "cli/bench/bench_metrics.h"
#include "cli/bench/fleet_simulator.h"
#include "common/block_hash.h"
#include "router/core/clock.h"
#include "router/core/dispatcher.h"
#include "router/core/fleet_state.h"

namespace tern::cli {

using router::FleetMember;

DecisionCost MeasureDecisionCost(int32_t workers, int64_t queued, int64_t decisions,
                                 uint64_t seed) {
  constexpr int32_t kBlockSize = 16;
  constexpr int32_t kPrefixBlocks = 128;
  constexpr int32_t kQuestionBlocks = 8;
  constexpr int32_t kGroupsPerWorker = 4;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> token(0, 127999);
  auto random_tokens = [&](int32_t n) {
    std::vector<int32_t> out(n);
    for (auto& t : out) t = token(rng);
    return out;
  };
  const int32_t groups = std::max(1, workers / 4);
  std::vector<std::vector<int32_t>> prefixes;
  for (int32_t g = 0; g < groups; ++g) {
    prefixes.push_back(random_tokens(kPrefixBlocks * kBlockSize));
  }
  std::uniform_int_distribution<int32_t> pick_group(0, groups - 1);
  auto new_prompt = [&]() {
    std::vector<int32_t> tokens = prefixes[pick_group(rng)];
    const std::vector<int32_t> q = random_tokens(kQuestionBlocks * kBlockSize);
    tokens.insert(tokens.end(), q.begin(), q.end());
    return tokens;
  };
  // Every worker (one slot each) holds the prefixes of a few groups, by its
  // events, and is busy; `queued` requests wait for a slot.
  SimCostModel model;
  model.block_size = kBlockSize;
  model.max_num_seqs = 1;
  model.cache_blocks = int64_t{1} << 20;
  router::ManualClock clock;
  router::FleetState state{router::FleetStateOptions{}};
  const std::vector<FleetMember*> members = AddSimulatedWorkers(state, workers, model, clock.Now());
  std::vector<std::vector<uint64_t>> group_hashes;
  for (const auto& p : prefixes) group_hashes.push_back(HashPrefixBlocks(p, kBlockSize));
  router::WorkerLoad busy;
  busy.running_seqs = 1;
  busy.free_kv_blocks = model.cache_blocks / 2;
  for (FleetMember* member : members) {
    std::vector<router::KvEvent> events;
    for (int32_t k = 0; k < kGroupsPerWorker; ++k) {
      events.push_back(router::KvEvent{static_cast<uint64_t>(k + 1), router::KvEvent::Kind::kStored,
                                       group_hashes[pick_group(rng)]});
    }
    state.OnStateMessage(*member, busy, events, clock.Now());
  }
  router::DispatcherOptions options = SimDispatcherOptions(router::PolicyKind::kPrefix, 0);
  options.queue.max_length = queued + workers + decisions + 1;
  router::Dispatcher dispatcher(&state, options, &clock);
  class Sink : public router::DispatchWaiter {
   public:
    void OnDispatched(FleetMember* worker, int32_t) override { last = worker; }
    void OnRejected(const absl::Status&) override {}
    FleetMember* last = nullptr;
  } sink;
  // Prompts must outlive their wait: one per request, kept to the end.
  std::deque<std::vector<int32_t>> prompts;
  uint64_t ticket = 0;
  auto admit = [&]() {
    prompts.push_back(new_prompt());
    router::DispatchRequest request;
    request.ticket = ++ticket;
    request.model = kSimModel;
    request.prompt = prompts.back();
    request.waiter = &sink;
    return dispatcher.Admit(std::move(request));
  };
  for (int32_t w = 0; w < workers; ++w) (void)admit();  // every slot taken
  for (int64_t i = 0; i < queued; ++i) {
    (void)admit();
    clock.Advance(absl::Microseconds(10));
  }
  std::uniform_int_distribution<int32_t> pick_worker(0, workers - 1);
  std::vector<double> micros;
  for (int64_t i = 0; i < decisions; ++i) {
    FleetMember* freed = members[pick_worker(rng)];
    const auto start = std::chrono::steady_clock::now();
    // A call ends: the freed slot takes its best queued request (TakeFor
    // over the scan window, matching each prompt against the index).
    dispatcher.Release(freed);
    // A request arrives and, with no slot free, queues (Candidates over
    // every worker, the policy's choice).
    (void)admit();
    micros.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
            .count());
    clock.Advance(absl::Microseconds(10));
  }
  DecisionCost cost;
  cost.workers = workers;
  cost.queued = static_cast<int64_t>(dispatcher.queued());
  cost.decisions = decisions;
  cost.p50_us = Percentile(micros, 50);
  cost.p99_us = Percentile(micros, 99);
  cost.max_us = micros.empty() ? 0 : *std::max_element(micros.begin(), micros.end());
  return cost;
}

}  // namespace tern::cli
