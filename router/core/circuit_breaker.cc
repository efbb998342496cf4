#include "router/core/circuit_breaker.h"

namespace tern::router {

CircuitBreaker::State CircuitBreaker::state(absl::Time now) const {
  if (!open_) return State::kClosed;
  return now - opened_at_ >= options_.cool_down ? State::kHalfOpen : State::kOpen;
}

bool CircuitBreaker::WouldAllow(absl::Time now) const {
  switch (state(now)) {
    case State::kClosed:
      return true;
    case State::kOpen:
      return false;
    case State::kHalfOpen:
      return !probe_in_flight_;
  }
  return false;
}

bool CircuitBreaker::AllowCall(absl::Time now) {
  if (!WouldAllow(now)) return false;
  if (state(now) == State::kHalfOpen) probe_in_flight_ = true;
  return true;
}

void CircuitBreaker::RecordSuccess() {
  failures_ = 0;
  open_ = false;
  probe_in_flight_ = false;
}

void CircuitBreaker::RecordFailure(absl::Time now) {
  ++failures_;
  // A failed probe re-opens at once; otherwise the threshold decides.
  if (probe_in_flight_ || failures_ >= options_.failure_threshold) {
    open_ = true;
    opened_at_ = now;
  }
  probe_in_flight_ = false;
}

const char* CircuitStateName(CircuitBreaker::State state) {
  switch (state) {
    case CircuitBreaker::State::kClosed:
      return "closed";
    case CircuitBreaker::State::kOpen:
      return "open";
    case CircuitBreaker::State::kHalfOpen:
      return "half-open";
  }
  return "unknown";
}

}  // namespace tern::router
