// Test support: a FleetState whose workers are made healthy by feeding it
// what the gRPC shell would (a SERVING health report with Info, a state
// stream's snapshot), on a ManualClock. No sockets, no threads.
#ifndef TERN_TESTS_ROUTER_CORE_TEST_FLEET_H_
#define TERN_TESTS_ROUTER_CORE_TEST_FLEET_H_

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "router/core/clock.h"
#include "router/core/fleet_state.h"

namespace tern::router::testing {

inline WorkerInfo Info(const std::string& model, int32_t max_num_seqs, int32_t kv_block_size = 16) {
  WorkerInfo info;
  info.model_id = model;
  info.max_model_len = 4096;
  info.kv_block_size = kv_block_size;
  info.max_num_seqs = max_num_seqs;
  info.kv_blocks_total = 1000;
  return info;
}

inline HealthReport Serving(const WorkerInfo& info) {
  HealthReport report;
  report.serving = true;
  report.info = info;
  return report;
}

inline WorkerLoad Idle(uint64_t steps = 0) {
  WorkerLoad load;
  load.free_kv_blocks = 1000;
  load.step_counter = steps;
  return load;
}

class TestFleet {
 public:
  explicit TestFleet(FleetStateOptions options = {}) : state(options) {}

  // Adds `n` workers "w<i>:1" serving `model` with KV blocks of
  // `kv_block_size` tokens, each healthy with an open, synced state stream.
  std::vector<FleetMember*> AddHealthy(int n, const std::string& model = "m",
                                       int32_t max_num_seqs = 1, int32_t kv_block_size = 16) {
    std::vector<std::string> desired;
    for (FleetMember* m : state.members()) desired.push_back(m->address());
    const size_t first = desired.size();
    for (int i = 0; i < n; ++i) desired.push_back(absl::StrCat("w", first + i, ":1"));
    const FleetState::Reconciled change = state.Reconcile(desired);
    for (FleetMember* worker : change.added) {
      const FleetEffects effects = state.OnHealthReport(
          *worker, Serving(Info(model, max_num_seqs, kv_block_size)), clock.Now());
      EXPECT_TRUE(effects.watch);
      EXPECT_TRUE(state.StartStream(*worker));
      state.OnStateMessage(*worker, Idle(), {}, clock.Now());
      EXPECT_TRUE(state.healthy(*worker)) << worker->address();
    }
    return change.added;
  }

  ManualClock clock;
  FleetState state;
};

}  // namespace tern::router::testing

#endif  // TERN_TESTS_ROUTER_CORE_TEST_FLEET_H_
