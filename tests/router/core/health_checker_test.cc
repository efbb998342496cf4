// Health checks run per worker and concurrently: a worker that stops
// answering is failed at its deadline, and the others' checks go on at their
// own pace meanwhile. A scripted prober stands in for gRPC; time is a
// ManualClock.
#include "router/core/health_checker.h"

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "tests/router/core/test_fleet.h"

namespace tern::router {
namespace {

using testing::Info;
using testing::Serving;
using testing::TestFleet;

// Answers at once for responsive workers; holds the probes of "hung" ones
// (never answering, like a stopped process behind an open socket).
class ScriptedProber : public HealthProber {
 public:
  void Probe(const FleetMember& worker, absl::Time deadline,
             std::function<void(HealthReport)> done) override {
    bool hung = false;
    {
      absl::MutexLock lock(&mu_);
      ++probes_[worker.address()];
      hung = hung_.count(worker.address()) > 0;
      if (hung) held_.push_back(std::move(done));
    }
    if (!hung) done(Serving(Info("m", 4)));
  }

  void Hang(const std::string& address) {
    absl::MutexLock lock(&mu_);
    hung_[address] = true;
  }
  int probes(const std::string& address) {
    absl::MutexLock lock(&mu_);
    return probes_[address];
  }
  // Answers every held probe now (a late answer).
  void AnswerHeld() {
    std::vector<std::function<void(HealthReport)>> held;
    {
      absl::MutexLock lock(&mu_);
      held.swap(held_);
    }
    for (auto& done : held) done(Serving(Info("m", 4)));
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, int> probes_;
  std::map<std::string, bool> hung_;
  std::vector<std::function<void(HealthReport)>> held_;
};

class HealthCheckerTest : public ::testing::Test {
 protected:
  HealthCheckerTest()
      : checker_(&fleet_.state, &prober_, &fleet_.clock,
                 HealthCheckOptions{.interval = absl::Seconds(1), .timeout = absl::Seconds(2)},
                 [this](FleetMember& worker, FleetEffects effects) {
                   lost_ += static_cast<int>(effects.lost.size());
                   // The shell opens the state stream when asked; here it
                   // delivers the snapshot at once.
                   if (effects.watch && fleet_.state.StartStream(worker)) {
                     fleet_.state.OnStateMessage(worker, testing::Idle(), {}, fleet_.clock.Now());
                   }
                 }) {}

  TestFleet fleet_;
  ScriptedProber prober_;
  int lost_ = 0;
  HealthChecker checker_;
};

TEST_F(HealthCheckerTest, FirstTickChecksEveryMemberAndMakesThemHealthy) {
  fleet_.state.Reconcile({"a:1", "b:1", "c:1"});
  checker_.Tick();
  for (FleetMember* w : fleet_.state.members()) {
    EXPECT_TRUE(fleet_.state.healthy(*w)) << w->address();
    EXPECT_EQ(prober_.probes(w->address()), 1);
  }
  EXPECT_TRUE(checker_.WaitIdle(absl::ZeroDuration()));
}

TEST_F(HealthCheckerTest, AHungWorkerNeitherDelaysNorBlocksTheOthers) {
  std::vector<FleetMember*> w = fleet_.state.Reconcile({"a:1", "b:1", "c:1"}).added;
  checker_.Tick();
  prober_.Hang("b:1");
  // Ten seconds of 100 ms ticks.
  for (int tick = 0; tick < 100; ++tick) {
    fleet_.clock.Advance(absl::Milliseconds(100));
    checker_.Tick();
  }
  // a and c were checked every interval, on time: 1 + 10 probes each.
  EXPECT_EQ(prober_.probes("a:1"), 11);
  EXPECT_EQ(prober_.probes("c:1"), 11);
  EXPECT_TRUE(fleet_.state.healthy(*w[0]));
  EXPECT_TRUE(fleet_.state.healthy(*w[2]));
  // b: answered at 0 s; probed at 1 s, failed at that probe's deadline
  // (3 s), probed again 1 s later (4 s), and so on: at 0, 1, 4, 7 and 10 s.
  EXPECT_FALSE(fleet_.state.healthy(*w[1]));
  EXPECT_EQ(prober_.probes("b:1"), 5);
  EXPECT_NE(fleet_.state.Status(fleet_.clock.Now()).at(1).detail.find("no answer within 2s"),
            std::string::npos);
}

TEST_F(HealthCheckerTest, ALateAnswerToAnExpiredProbeIsIgnored) {
  std::vector<FleetMember*> w = fleet_.state.Reconcile({"a:1"}).added;
  prober_.Hang("a:1");
  checker_.Tick();
  fleet_.clock.Advance(absl::Seconds(2));
  checker_.Tick();  // the probe passes its deadline: failed
  EXPECT_FALSE(fleet_.state.healthy(*w[0]));
  EXPECT_TRUE(checker_.WaitIdle(absl::ZeroDuration()));
  prober_.AnswerHeld();  // SERVING, but too late to count
  EXPECT_FALSE(fleet_.state.healthy(*w[0]));
  EXPECT_EQ(checker_.probes_started(*w[0]), 1u);
}

TEST_F(HealthCheckerTest, CheckNowProbesANewMemberOnce) {
  std::vector<FleetMember*> w = fleet_.state.Reconcile({"a:1"}).added;
  prober_.Hang("a:1");
  checker_.CheckNow(*w[0]);
  checker_.CheckNow(*w[0]);  // one probe at a time
  checker_.Tick();
  EXPECT_EQ(prober_.probes("a:1"), 1);
  EXPECT_FALSE(checker_.WaitIdle(absl::Milliseconds(1)));
}

}  // namespace
}  // namespace tern::router
