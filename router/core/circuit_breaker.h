// A per-worker circuit breaker: after `failure_threshold` consecutive failed
// calls the circuit opens and the worker gets no requests for `cool_down`;
// then it is half-open and lets one probe call through; the probe's success
// closes the circuit, its failure opens it for another cool-down.
//
// Time is passed in by the caller, so behaviour is deterministic in tests.
// Thread contract: not thread-safe; the fleet guards it with its lock.
#ifndef TERN_ROUTER_CORE_CIRCUIT_BREAKER_H_
#define TERN_ROUTER_CORE_CIRCUIT_BREAKER_H_

#include <cstdint>

#include "absl/time/time.h"

namespace tern::router {

struct CircuitBreakerOptions {
  int32_t failure_threshold = 3;
  absl::Duration cool_down = absl::Seconds(5);
};

class CircuitBreaker {
 public:
  enum class State { kClosed, kOpen, kHalfOpen };

  explicit CircuitBreaker(CircuitBreakerOptions options = {}) : options_(options) {}

  // Whether a new call may go to the worker at `now`. In half-open state only
  // one probe is allowed until its outcome is recorded; AllowCall reserves it.
  bool AllowCall(absl::Time now);
  // Whether AllowCall would answer true, without reserving a probe.
  bool WouldAllow(absl::Time now) const;

  void RecordSuccess();
  void RecordFailure(absl::Time now);

  State state(absl::Time now) const;
  int32_t consecutive_failures() const { return failures_; }

 private:
  const CircuitBreakerOptions options_;
  int32_t failures_ = 0;
  bool open_ = false;
  absl::Time opened_at_ = absl::InfinitePast();
  bool probe_in_flight_ = false;
};

const char* CircuitStateName(CircuitBreaker::State state);

}  // namespace tern::router

#endif  // TERN_ROUTER_CORE_CIRCUIT_BREAKER_H_
