#include "gateway/auth/key_limiter.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "gateway/http/api_error.h"

namespace tern::gateway {

const char* KeyLimitName(KeyLimit limit) {
  switch (limit) {
    case KeyLimit::kRequests:
      return "requests_per_minute";
    case KeyLimit::kTokens:
      return "tokens_per_minute";
    case KeyLimit::kStreams:
      return "max_concurrent_streams";
  }
  return "unknown";
}

KeyLease::~KeyLease() { limiter_->Release(key_, 0, /*end=*/true); }

void KeyLease::Charge(int64_t tokens) { limiter_->Release(key_, tokens, /*end=*/false); }

void KeyLimiter::Refill(State& state, absl::Time now) const {
  const double minutes = absl::ToDoubleSeconds(now - state.refilled) / 60.0;
  state.refilled = now;
  if (minutes <= 0) return;
  if (state.limits.requests_per_minute > 0) {
    state.requests = std::min<double>(state.limits.requests_per_minute,
                                      state.requests + minutes * state.limits.requests_per_minute);
  }
  if (state.limits.tokens_per_minute > 0) {
    state.tokens = std::min<double>(state.limits.tokens_per_minute,
                                    state.tokens + minutes * state.limits.tokens_per_minute);
  }
}

std::shared_ptr<KeyLease> KeyLimiter::Admit(const std::string& key, const KeyLimits& limits,
                                            KeyRefusal* refusal) {
  const absl::Time now = clock_();
  absl::MutexLock lock(&mu_);
  auto [it, added] = states_.try_emplace(key);
  State& state = it->second;
  if (added || !(state.limits == limits)) {
    // New key, or its limits changed (key file reloaded): start full.
    state.limits = limits;
    state.requests = limits.requests_per_minute;
    state.tokens = limits.tokens_per_minute;
    state.refilled = now;
  }
  Refill(state, now);
  const auto wait_for = [](double missing, int64_t per_minute) {
    return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(missing * 60.0 / per_minute)));
  };
  if (limits.max_concurrent_streams > 0 && state.streams >= limits.max_concurrent_streams) {
    *refusal = {KeyLimit::kStreams, 1};
    return nullptr;
  }
  if (limits.requests_per_minute > 0 && state.requests < 1) {
    *refusal = {KeyLimit::kRequests, wait_for(1 - state.requests, limits.requests_per_minute)};
    return nullptr;
  }
  if (limits.tokens_per_minute > 0 && state.tokens <= 0) {
    *refusal = {KeyLimit::kTokens, wait_for(-state.tokens + 1, limits.tokens_per_minute)};
    return nullptr;
  }
  if (limits.requests_per_minute > 0) state.requests -= 1;
  ++state.streams;
  return std::shared_ptr<KeyLease>(new KeyLease(this, key));
}

void KeyLimiter::Release(const std::string& key, int64_t tokens, bool end) {
  const absl::Time now = clock_();
  absl::MutexLock lock(&mu_);
  auto it = states_.find(key);
  if (it == states_.end()) return;
  State& state = it->second;
  Refill(state, now);
  if (state.limits.tokens_per_minute > 0) state.tokens -= static_cast<double>(tokens);
  if (end) state.streams = std::max<int64_t>(0, state.streams - 1);
}

absl::StatusOr<std::shared_ptr<KeyLease>> AdmitKey(KeyLimiter& limiter, const ApiKeyEntry& key,
                                                   KeyLimit* refused) {
  KeyRefusal refusal;
  std::shared_ptr<KeyLease> lease = limiter.Admit(key.name, key.limits, &refusal);
  if (lease != nullptr) return lease;
  *refused = refusal.limit;
  return WithRetryAfter(absl::ResourceExhaustedError(absl::StrCat(
                            "Rate limit reached for this API key on ", KeyLimitName(refusal.limit),
                            ". Please try again in ", refusal.retry_after_s, "s.")),
                        static_cast<int>(refusal.retry_after_s));
}

}  // namespace tern::gateway
