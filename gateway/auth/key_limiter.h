// Per-key limits of the gateway (gateway/auth/api_keys.h KeyLimits): requests
// per minute and prompt + completion tokens per minute as token buckets
// (full at start, refilled continuously, so a key may burst up to a minute's
// allowance), and streams in flight. A request is admitted while its key has
// a request to spend, a token allowance above zero and a free stream slot;
// its tokens are charged when it ends (they are not known before), so one
// large request may take the allowance below zero and later ones wait until
// it refills. A refusal says which limit and when to retry.
//
// Thread-safe: every method may be called from any thread.
#ifndef TERN_GATEWAY_AUTH_KEY_LIMITER_H_
#define TERN_GATEWAY_AUTH_KEY_LIMITER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gateway/auth/api_keys.h"

namespace tern::gateway {

class KeyLimiter;

// One admitted request's hold on its key: ends the stream slot when
// destroyed; Charge adds the tokens it used.
class KeyLease {
 public:
  ~KeyLease();
  KeyLease(const KeyLease&) = delete;
  KeyLease& operator=(const KeyLease&) = delete;

  void Charge(int64_t tokens);
  const std::string& key() const { return key_; }

 private:
  friend class KeyLimiter;
  KeyLease(KeyLimiter* limiter, std::string key) : limiter_(limiter), key_(std::move(key)) {}
  KeyLimiter* const limiter_;
  const std::string key_;
};

// Why a request was refused, for metrics.
enum class KeyLimit { kRequests, kTokens, kStreams };
const char* KeyLimitName(KeyLimit limit);

struct KeyRefusal {
  KeyLimit limit = KeyLimit::kRequests;
  // Whole seconds until the request could be admitted (at least 1).
  int64_t retry_after_s = 1;
};

// Admits one request of `key` under its limits: the lease, or
// RESOURCE_EXHAUSTED (OpenAI's 429 rate_limit_exceeded) carrying the seconds
// to wait as Retry-After, with the limit that refused it in `refused`.
absl::StatusOr<std::shared_ptr<KeyLease>> AdmitKey(KeyLimiter& limiter, const ApiKeyEntry& key,
                                                   KeyLimit* refused);

class KeyLimiter {
 public:
  using Clock = std::function<absl::Time()>;
  explicit KeyLimiter(Clock clock = [] { return absl::Now(); }) : clock_(std::move(clock)) {}

  // A lease for one request of key `key` under `limits`, or the refusal.
  // Keys without limits always get one. The limiter must outlive its leases.
  std::shared_ptr<KeyLease> Admit(const std::string& key, const KeyLimits& limits,
                                  KeyRefusal* refusal);

 private:
  friend class KeyLease;
  struct State {
    KeyLimits limits;
    double requests = 0;  // available
    double tokens = 0;    // available; may go negative
    int64_t streams = 0;
    absl::Time refilled;
  };
  void Refill(State& state, absl::Time now) const;
  void Release(const std::string& key, int64_t tokens, bool end);

  const Clock clock_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, State> states_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_AUTH_KEY_LIMITER_H_
