// What the router does when a Generate call on a worker ends: finish the
// client's call, or send the request again to another worker, resuming after
// the tokens already streamed (router/generate_relay.h carries it out).
//
// A worker failure (UNAVAILABLE, INTERNAL, UNKNOWN; a CANCELLED the client
// did not ask for; or a call the fleet aborted because the worker was lost)
// is retried, before or after the first token, at most max_retries times,
// after a backoff growing by backoff_multiplier with ±20% jitter. A worker's
// RESOURCE_EXHAUSTED is retried only before the first token (after it the
// client has seen output from that worker's admission). When every token
// the request asked for was streamed and only the final message was lost,
// the call completes with finish reason "length" instead.
//
// Pure functions; thread-safe.
#ifndef TERN_ROUTER_CORE_FAILOVER_H_
#define TERN_ROUTER_CORE_FAILOVER_H_

#include <cstddef>
#include <cstdint>

#include "absl/time/time.h"

namespace tern::router {

struct RelayOptions {
  int max_retries = 3;
  absl::Duration backoff = absl::Milliseconds(50);
  double backoff_multiplier = 1.5;
};

// How one attempt on a worker ended, as the relay saw it.
struct AttemptOutcome {
  enum class End {
    kOk,
    kWorkerFailure,      // UNAVAILABLE, INTERNAL or UNKNOWN
    kCancelled,          // CANCELLED
    kResourceExhausted,  // the worker was full
    kOther,              // anything else: the request's own fault
  };
  End end = End::kOk;
  bool worker_lost = false;  // the fleet aborted the call: the worker was lost
  bool client_gone = false;  // the client cancelled or went away
  size_t streamed = 0;       // tokens the client received so far, from any worker
  int32_t max_tokens = 0;    // the request's budget; 0: none
  int retries = 0;           // re-dispatches already made
};

struct FailoverDecision {
  enum class Action {
    kFinish,          // end the call with the attempt's status
    kGiveUp,          // retryable, but the retry budget is spent
    kCompleteLength,  // all tokens streamed: finish with "length"
    kRetry,           // admit again elsewhere after `delay`
  };
  Action action = Action::kFinish;
  absl::Duration delay;
  // The outcome says the worker failed (for its circuit breaker). A call
  // aborted because the worker was lost is already counted by its health.
  bool worker_fault = false;
};

// `jitter` in [0.8, 1.2] scales the backoff (the caller draws it).
FailoverDecision DecideFailover(const RelayOptions& options, const AttemptOutcome& outcome,
                                double jitter);

}  // namespace tern::router

#endif  // TERN_ROUTER_CORE_FAILOVER_H_
