// The router's time source. Decision code (fleet state, health scheduling,
// dispatch) reads the time only through a Clock, so tests and the fleet
// simulator drive it with a ManualClock.
//
// Thread contract: both clocks may be read from any thread; a ManualClock is
// advanced by its owner.
#ifndef TERN_ROUTER_CORE_CLOCK_H_
#define TERN_ROUTER_CORE_CLOCK_H_

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace tern::router {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;

  // The system clock (absl::Now); lives for the whole process.
  static Clock* Real();
};

// A clock that moves only when told to.
class ManualClock : public Clock {
 public:
  explicit ManualClock(absl::Time start = absl::UnixEpoch() + absl::Hours(1)) : now_(start) {}

  absl::Time Now() const override;
  void Set(absl::Time t);
  void Advance(absl::Duration d);

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tern::router

#endif  // TERN_ROUTER_CORE_CLOCK_H_
