#include "router/core/health_checker.h"

#include "absl/strings/str_cat.h"

namespace tern::router {

HealthChecker::HealthChecker(FleetState* state, HealthProber* prober, Clock* clock,
                             HealthCheckOptions options, EffectsHandler on_effects)
    : state_(state),
      prober_(prober),
      clock_(clock),
      options_(options),
      on_effects_(std::move(on_effects)) {}

HealthChecker::Schedule& HealthChecker::ScheduleLocked(WorkerId id) {
  if (schedules_.size() <= static_cast<size_t>(id)) schedules_.resize(id + 1);
  return schedules_[id];
}

HealthChecker::Start HealthChecker::BeginLocked(FleetMember* worker, absl::Time now) {
  Schedule& schedule = ScheduleLocked(worker->id());
  schedule.probe = next_probe_++;
  schedule.deadline = now + options_.timeout;
  ++schedule.started;
  ++running_;
  return Start{worker, schedule.probe, schedule.deadline};
}

void HealthChecker::Tick() {
  const absl::Time now = clock_->Now();
  std::vector<Start> starts;
  std::vector<std::pair<FleetMember*, uint64_t>> expired;
  {
    absl::MutexLock lock(&mu_);
    for (FleetMember* worker : state_->members()) {
      Schedule& schedule = ScheduleLocked(worker->id());
      if (schedule.probe != 0) {
        if (now >= schedule.deadline) expired.emplace_back(worker, schedule.probe);
        continue;
      }
      if (now >= schedule.next_due) starts.push_back(BeginLocked(worker, now));
    }
  }
  for (const auto& [worker, probe] : expired) {
    HealthReport report;
    report.failure = absl::StrCat("health check failed: no answer within ",
                                  absl::FormatDuration(options_.timeout));
    Finish(worker, probe, report);
  }
  for (const Start& start : starts) Launch(start);
}

void HealthChecker::CheckNow(FleetMember& worker) {
  Start start;
  {
    absl::MutexLock lock(&mu_);
    if (ScheduleLocked(worker.id()).probe != 0) return;
    start = BeginLocked(&worker, clock_->Now());
  }
  Launch(start);
}

void HealthChecker::Launch(const Start& start) {
  FleetMember* const worker = start.worker;
  const uint64_t probe = start.probe;
  prober_->Probe(*worker, start.deadline,
                 [this, worker, probe](HealthReport report) { Finish(worker, probe, report); });
}

void HealthChecker::Finish(FleetMember* worker, uint64_t probe, const HealthReport& report) {
  const absl::Time now = clock_->Now();
  {
    absl::MutexLock lock(&mu_);
    Schedule& schedule = ScheduleLocked(worker->id());
    // A probe already counted as failed (past its deadline) answers late: ignore it.
    if (schedule.probe != probe) return;
    schedule.probe = 0;
    schedule.next_due = now + options_.interval;
  }
  on_effects_(*worker, state_->OnHealthReport(*worker, report, now));
  // Counted as running until its result is in the state and its effects
  // are carried out, so WaitIdle means "every result applied".
  absl::MutexLock lock(&mu_);
  --running_;
}

bool HealthChecker::WaitIdle(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(
                                  +[](const int* running) { return *running == 0; }, &running_),
                              timeout);
}

uint64_t HealthChecker::probes_started(const FleetMember& worker) const {
  absl::MutexLock lock(&mu_);
  const auto id = static_cast<size_t>(worker.id());
  return id < schedules_.size() ? schedules_[id].started : 0;
}

}  // namespace tern::router
