#include "router/core/failover.h"

#include <cmath>

namespace tern::router {

FailoverDecision DecideFailover(const RelayOptions& options, const AttemptOutcome& outcome,
                                double jitter) {
  using End = AttemptOutcome::End;
  FailoverDecision decision;
  const bool failed_by_worker =
      outcome.end == End::kWorkerFailure || outcome.end == End::kCancelled;
  decision.worker_fault = !outcome.client_gone && !outcome.worker_lost && failed_by_worker;
  if (outcome.end == End::kOk || outcome.client_gone) return decision;
  // A worker that died or was declared lost cancels its own calls.
  const bool worker_failed = outcome.worker_lost || failed_by_worker;
  const bool retryable =
      worker_failed || (outcome.streamed == 0 && outcome.end == End::kResourceExhausted);
  if (!retryable) return decision;
  if (outcome.retries >= options.max_retries) {
    decision.action = FailoverDecision::Action::kGiveUp;
    return decision;
  }
  if (outcome.max_tokens > 0 && outcome.streamed >= static_cast<size_t>(outcome.max_tokens)) {
    decision.action = FailoverDecision::Action::kCompleteLength;
    return decision;
  }
  decision.action = FailoverDecision::Action::kRetry;
  decision.delay = options.backoff * std::pow(options.backoff_multiplier, outcome.retries) * jitter;
  return decision;
}

}  // namespace tern::router
