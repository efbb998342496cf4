// Health checks of every member, each on its own schedule: a probe of a
// worker starts when its previous one ended `interval` ago, runs
// asynchronously, and counts as failed once it has run `timeout` without an
// answer. Probes of different workers overlap freely, so one worker that
// stops answering never delays another's check, nor the caller's tick.
//
// The probe itself is the HealthProber's (router/fleet.cc probes over gRPC:
// grpc.health.v1 Check, then Worker.Info). Results go to the FleetState; the
// FleetEffects they produce go to `on_effects`.
//
// Thread contract: Tick and CheckNow from any thread; a prober may answer
// on any thread, also inline from Probe. `on_effects` is called without the
// checker's lock held.
#ifndef TERN_ROUTER_CORE_HEALTH_CHECKER_H_
#define TERN_ROUTER_CORE_HEALTH_CHECKER_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "router/core/clock.h"
#include "router/core/fleet_state.h"
#include "router/core/worker_report.h"

namespace tern::router {

class HealthProber {
 public:
  virtual ~HealthProber() = default;
  // Probes `worker`, giving up at `deadline`; calls `done` exactly once.
  virtual void Probe(const FleetMember& worker, absl::Time deadline,
                     std::function<void(HealthReport)> done) = 0;
};

struct HealthCheckOptions {
  absl::Duration interval = absl::Seconds(1);
  absl::Duration timeout = absl::Seconds(1);
};

class HealthChecker {
 public:
  using EffectsHandler = std::function<void(FleetMember&, FleetEffects)>;

  // `state`, `prober` and `clock` must outlive the checker.
  HealthChecker(FleetState* state, HealthProber* prober, Clock* clock, HealthCheckOptions options,
                EffectsHandler on_effects);

  // Starts the probes that are due and fails those past their deadline.
  void Tick();
  // Probes `worker` now unless a probe of it is already running.
  void CheckNow(FleetMember& worker);
  // Waits (real time) until no probe is running and every result has been
  // applied to the state; false on timeout.
  bool WaitIdle(absl::Duration timeout) const;

  // Probes started on `worker` so far.
  uint64_t probes_started(const FleetMember& worker) const;

 private:
  struct Schedule {
    uint64_t probe = 0;  // the running probe's number; 0: none running
    absl::Time deadline;
    absl::Time next_due = absl::InfinitePast();
    uint64_t started = 0;
  };
  struct Start {
    FleetMember* worker;
    uint64_t probe;
    absl::Time deadline;
  };

  Schedule& ScheduleLocked(WorkerId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Start BeginLocked(FleetMember* worker, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Launch(const Start& start);
  void Finish(FleetMember* worker, uint64_t probe, const HealthReport& report);

  FleetState* const state_;
  HealthProber* const prober_;
  Clock* const clock_;
  const HealthCheckOptions options_;
  const EffectsHandler on_effects_;

  mutable absl::Mutex mu_;
  std::vector<Schedule> schedules_ ABSL_GUARDED_BY(mu_);  // by WorkerId
  uint64_t next_probe_ ABSL_GUARDED_BY(mu_) = 1;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tern::router

#endif  // TERN_ROUTER_CORE_HEALTH_CHECKER_H_
