// The fleet state without gRPC: health, draining, stalls scaled by the
// expected step time, event gaps, membership changes — all on a ManualClock.
#include "router/core/fleet_state.h"

#include <gtest/gtest.h>

#include <memory>

#include "tests/router/core/test_fleet.h"

namespace tern::router {
namespace {

using testing::Idle;
using testing::Info;
using testing::Serving;
using testing::TestFleet;

class CountingCall : public WorkerCall {
 public:
  void AbortWorkerLost() override { ++aborted; }
  int aborted = 0;
};

WorkerLoad Busy(uint64_t steps, bool step_running = false, int64_t expected_step_ms = 0) {
  WorkerLoad load = Idle(steps);
  load.running_seqs = 1;
  load.step_running = step_running;
  load.expected_step_ms = expected_step_ms;
  return load;
}

TEST(FleetStateTest, HealthyOnlyAfterHealthAndStateSnapshot) {
  TestFleet fleet;
  FleetMember* w = fleet.state.Reconcile({"a:1"}).added.at(0);
  EXPECT_FALSE(fleet.state.healthy(*w));
  const FleetEffects effects =
      fleet.state.OnHealthReport(*w, Serving(Info("m", 4)), fleet.clock.Now());
  EXPECT_TRUE(effects.watch);
  EXPECT_FALSE(fleet.state.healthy(*w)) << "no state stream yet";
  ASSERT_TRUE(fleet.state.StartStream(*w));
  EXPECT_FALSE(fleet.state.StartStream(*w)) << "one stream at a time";
  EXPECT_TRUE(fleet.state.OnStateMessage(*w, Idle(), {}, fleet.clock.Now()).may_have_room);
  EXPECT_TRUE(fleet.state.healthy(*w));
  EXPECT_EQ(fleet.state.Models().at(0).id, "m");
}

TEST(FleetStateTest, AWorkerWithoutWatchStateIsHealthyFromHealthAlone) {
  TestFleet fleet;
  FleetMember* w = fleet.state.Reconcile({"a:1"}).added.at(0);
  fleet.state.OnHealthReport(*w, Serving(Info("m", 4)), fleet.clock.Now());
  ASSERT_TRUE(fleet.state.StartStream(*w));
  fleet.state.OnStreamEnded(*w, /*unimplemented=*/true, "unimplemented", fleet.clock.Now());
  EXPECT_TRUE(fleet.state.healthy(*w));
  EXPECT_FALSE(fleet.state.StartStream(*w));
}

TEST(FleetStateTest, FailedHealthCheckLosesTheWorkersCalls) {
  TestFleet fleet;
  FleetMember* w = fleet.AddHealthy(1).at(0);
  auto call = std::make_shared<CountingCall>();
  fleet.state.RegisterCall(*w, call);
  HealthReport down;
  down.failure = "health check failed: connection refused";
  FleetEffects effects = fleet.state.OnHealthReport(*w, down, fleet.clock.Now());
  ASSERT_EQ(effects.lost.size(), 1u);
  EXPECT_EQ(effects.lost[0].get(), call.get());
  EXPECT_FALSE(fleet.state.healthy(*w));
  EXPECT_EQ(fleet.state.Status(fleet.clock.Now()).at(0).detail,
            "health check failed: connection refused");
}

TEST(FleetStateTest, DrainingWorkerTakesNothingNewButKeepsItsCalls) {
  TestFleet fleet;
  std::vector<FleetMember*> w = fleet.AddHealthy(2);
  auto call = std::make_shared<CountingCall>();
  fleet.state.RegisterCall(*w[0], call);
  HealthReport draining;
  draining.draining = true;
  draining.failure = "not serving (draining)";
  const FleetEffects effects = fleet.state.OnHealthReport(*w[0], draining, fleet.clock.Now());
  EXPECT_TRUE(effects.lost.empty()) << "a draining worker finishes its calls";
  EXPECT_FALSE(fleet.state.healthy(*w[0]));
  PromptBlocks prompt({});
  auto candidates = fleet.state.Candidates("m", prompt, {}, fleet.clock.Now());
  ASSERT_TRUE(candidates.ok());
  ASSERT_EQ(candidates->size(), 1u);
  EXPECT_EQ((*candidates)[0].worker, w[1]);
  // Should it exit before they end, their own streams fail and the relay
  // resumes them: the fleet does not abort them a second time.
  const FleetEffects ended =
      fleet.state.OnStreamEnded(*w[0], false, "connection reset", fleet.clock.Now());
  EXPECT_TRUE(ended.lost.empty());
  EXPECT_EQ(call->aborted, 0);
}

TEST(FleetStateTest, LongStepsWithAnExpectedDurationAreNotStalls) {
  TestFleet fleet(FleetStateOptions{.stall_timeout = absl::Seconds(3), .stall_step_factor = 2});
  FleetMember* w = fleet.AddHealthy(1).at(0);
  // Every step takes 10 s; the worker says so when each starts.
  uint64_t steps = 0;
  for (int step = 0; step < 3; ++step) {
    fleet.state.OnStateMessage(*w, Busy(steps, /*step_running=*/true, 10'000), {},
                               fleet.clock.Now());
    for (int s = 0; s < 10; ++s) {
      fleet.clock.Advance(absl::Seconds(1));
      EXPECT_TRUE(fleet.state.CheckProgress(fleet.clock.Now()).lost.empty());
      ASSERT_TRUE(fleet.state.healthy(*w)) << "step " << step << " second " << s;
    }
    fleet.state.OnStateMessage(*w, Busy(++steps, false, 10'000), {}, fleet.clock.Now());
  }
  EXPECT_TRUE(fleet.state.healthy(*w));
}

TEST(FleetStateTest, AHungEngineIsCaughtWithinTheScaledBound) {
  TestFleet fleet(FleetStateOptions{.stall_timeout = absl::Seconds(3), .stall_step_factor = 2});
  FleetMember* w = fleet.AddHealthy(1).at(0);
  auto call = std::make_shared<CountingCall>();
  fleet.state.RegisterCall(*w, call);
  // A step expected to take 10 s starts and never ends: the bound is 3 + 2 * 10 s.
  fleet.state.OnStateMessage(*w, Busy(5, true, 10'000), {}, fleet.clock.Now());
  fleet.clock.Advance(absl::Seconds(23));
  EXPECT_TRUE(fleet.state.CheckProgress(fleet.clock.Now()).lost.empty());
  EXPECT_TRUE(fleet.state.healthy(*w));
  fleet.clock.Advance(absl::Milliseconds(200));
  const FleetEffects effects = fleet.state.CheckProgress(fleet.clock.Now());
  EXPECT_FALSE(fleet.state.healthy(*w));
  ASSERT_EQ(effects.lost.size(), 1u);
  EXPECT_NE(fleet.state.Status(fleet.clock.Now()).at(0).detail.find("no progress"),
            std::string::npos);
  // Progress again: healthy again.
  fleet.state.OnStateMessage(*w, Busy(6), {}, fleet.clock.Now());
  EXPECT_TRUE(fleet.state.healthy(*w));
}

TEST(FleetStateTest, FastStepsThatStopAreCaughtAfterTheStallTimeout) {
  TestFleet fleet(FleetStateOptions{.stall_timeout = absl::Seconds(3), .stall_step_factor = 2});
  FleetMember* w = fleet.AddHealthy(1).at(0);
  fleet.state.OnStateMessage(*w, Busy(5, false, 50), {}, fleet.clock.Now());
  fleet.clock.Advance(absl::Milliseconds(3050));
  fleet.state.CheckProgress(fleet.clock.Now());
  EXPECT_TRUE(fleet.state.healthy(*w));
  fleet.clock.Advance(absl::Milliseconds(100));
  fleet.state.CheckProgress(fleet.clock.Now());
  EXPECT_FALSE(fleet.state.healthy(*w));
}

TEST(FleetStateTest, AnIdleWorkerNeverStalls) {
  TestFleet fleet;
  FleetMember* w = fleet.AddHealthy(1).at(0);
  fleet.clock.Advance(absl::Minutes(10));
  fleet.state.CheckProgress(fleet.clock.Now());
  EXPECT_TRUE(fleet.state.healthy(*w));
}

TEST(FleetStateTest, EventGapResubscribesWhileStayingRoutable) {
  TestFleet fleet;
  FleetMember* w = fleet.AddHealthy(1).at(0);
  const KvEvent first{1, KvEvent::Kind::kStored, {11, 12}};
  fleet.state.OnStateMessage(*w, Idle(), {&first, 1}, fleet.clock.Now());
  EXPECT_EQ(fleet.state.index_stats().exact_pairs, 2);
  const KvEvent gap{5, KvEvent::Kind::kStored, {13}};
  FleetEffects effects = fleet.state.OnStateMessage(*w, Idle(), {&gap, 1}, fleet.clock.Now());
  EXPECT_TRUE(effects.cancel_stream);
  EXPECT_TRUE(fleet.state.healthy(*w));
  EXPECT_EQ(fleet.state.index_stats().exact_pairs, 0);
  // Messages of the cancelled stream are ignored.
  const KvEvent late{6, KvEvent::Kind::kStored, {14}};
  fleet.state.OnStateMessage(*w, Idle(), {&late, 1}, fleet.clock.Now());
  EXPECT_EQ(fleet.state.index_stats().exact_pairs, 0);
  effects = fleet.state.OnStreamEnded(*w, false, "cancelled", fleet.clock.Now());
  EXPECT_TRUE(effects.watch) << "subscribe again at once";
  EXPECT_TRUE(fleet.state.healthy(*w));
  ASSERT_TRUE(fleet.state.StartStream(*w));
  const KvEvent snapshot{1, KvEvent::Kind::kStored, {11, 12, 13}};
  fleet.state.OnStateMessage(*w, Idle(), {&snapshot, 1}, fleet.clock.Now());
  EXPECT_EQ(fleet.state.index_stats().exact_pairs, 3);
  EXPECT_EQ(fleet.state.index_stats().resyncs, 1u);
}

TEST(FleetStateTest, ReconcileRemovesAndRevivesWithTheSameId) {
  TestFleet fleet;
  std::vector<FleetMember*> w = fleet.AddHealthy(2);
  FleetState::Reconciled change = fleet.state.Reconcile({"w1:1"});
  ASSERT_EQ(change.removed.size(), 1u);
  EXPECT_EQ(change.removed[0], w[0]);
  EXPECT_FALSE(fleet.state.healthy(*w[0]));
  EXPECT_EQ(fleet.state.members(), std::vector<FleetMember*>({w[1]}));
  change = fleet.state.Reconcile({"w1:1", "w0:1", "w2:1"});
  ASSERT_EQ(change.added.size(), 2u);
  EXPECT_EQ(change.added[0], w[0]) << "the same address keeps its entry";
  EXPECT_EQ(change.added[1]->id(), 2);
  EXPECT_EQ(fleet.state.members().size(), 3u);
}

TEST(FleetStateTest, CandidatesSkipOpenCircuitsAndExcludedWorkers) {
  TestFleet fleet(FleetStateOptions{
      .breaker = CircuitBreakerOptions{.failure_threshold = 2, .cool_down = absl::Seconds(5)}});
  std::vector<FleetMember*> w = fleet.AddHealthy(3);
  fleet.state.OnCallResult(*w[0], false, true, fleet.clock.Now());
  fleet.state.OnCallResult(*w[0], false, true, fleet.clock.Now());
  PromptBlocks prompt({});
  const std::vector<FleetMember*> exclude = {w[1]};
  auto candidates = fleet.state.Candidates("m", prompt, exclude, fleet.clock.Now());
  ASSERT_TRUE(candidates.ok());
  ASSERT_EQ(candidates->size(), 1u);
  EXPECT_EQ((*candidates)[0].worker, w[2]);
  EXPECT_EQ(fleet.state.Candidates("other", prompt, {}, fleet.clock.Now()).status().code(),
            absl::StatusCode::kNotFound);
  fleet.clock.Advance(absl::Seconds(6));
  candidates = fleet.state.Candidates("m", prompt, {}, fleet.clock.Now());
  ASSERT_TRUE(candidates.ok());
  EXPECT_EQ(candidates->size(), 3u) << "half-open after the cool-down";
}

}  // namespace
}  // namespace tern::router
