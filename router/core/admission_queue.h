// The router's global admission queue for one model (DESIGN.md section 3).
//
// Requests wait here until a worker has room; they are ordered by priority
// (larger first), then arrival. Priorities age: a request that has waited
// longer than `max_priority_wait` is promoted above every priority (the
// promoted ones among themselves by arrival), so a request waits at most that
// long behind higher-priority requests that arrived after it. When a worker frees a slot, TakeFor
// hands it the queued request that suits it best: among the first `scan_window` requests in queue
// order, the one with the lowest cost on that worker (the caller's cost function, e.g. the prompt
// blocks the worker lacks), ties going to queue order. Fairness: a request that has waited longer
// than `max_skip_age`, or that has been passed over `max_skips` times, is taken before anything
// behind it, so nothing starves however the costs fall; so is a promoted request.
//
// Limits: Push answers RESOURCE_EXHAUSTED when `max_length` requests wait;
// Expire removes those that waited longer than `max_wait` (the caller fails
// them with RESOURCE_EXHAUSTED). Remove takes a cancelled request out at once.
//
// Costs: Push, Remove O(log n); TakeFor O(scan_window) cost calls plus
// O(log n) plus O(log n) per request promoted; Expire O(log n) per request
// expired; memory three entries per waiting request.
//
// Thread contract: not thread-safe; the router guards it with its lock.
#ifndef TERN_ROUTER_CORE_ADMISSION_QUEUE_H_
#define TERN_ROUTER_CORE_ADMISSION_QUEUE_H_

#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"

namespace tern::router {

struct AdmissionQueueOptions {
  int64_t max_length = 4096;
  absl::Duration max_wait = absl::Seconds(60);
  int32_t scan_window = 32;
  absl::Duration max_skip_age = absl::Seconds(2);
  int32_t max_skips = 64;
  // Longest a request waits behind later higher-priority arrivals before it
  // is promoted (router.max_priority_wait_ms); InfiniteDuration: never.
  absl::Duration max_priority_wait = absl::Seconds(10);
};

class AdmissionQueue {
 public:
  using RequestId = uint64_t;

  explicit AdmissionQueue(AdmissionQueueOptions options = {});

  // Queues `id` (unique among waiting requests). RESOURCE_EXHAUSTED when
  // full, unless `beyond_limit` (a request already streaming to its client,
  // resumed after its worker failed, must not be turned away); ALREADY_EXISTS
  // for a duplicate id.
  absl::Status Push(RequestId id, int32_t priority, absl::Time arrival, bool beyond_limit = false);

  // Takes `id` out; false when it is not waiting.
  bool Remove(RequestId id);

  // Removes and returns the requests that have waited longer than max_wait
  // at `now`, oldest first.
  std::vector<RequestId> Expire(absl::Time now);

  // Promotes the requests that have waited longer than max_priority_wait at
  // `now`; returns how many it promoted. TakeFor does this first itself.
  int64_t Promote(absl::Time now);

  // The request a worker with a free slot should take now, removed from the
  // queue; nullopt when empty. `cost(id)` scores a request on that worker
  // (lower is better).
  std::optional<RequestId> TakeFor(const std::function<double(RequestId)>& cost, absl::Time now);

  // How many waiting requests a new arrival of `priority` would find ahead of
  // it: those of at least its priority and the promoted ones. O(that count).
  int64_t CountAhead(int32_t priority) const;

  // Waiting requests in queue order as of the last promotion (for operators
  // and tests).
  std::vector<RequestId> Snapshot() const;
  size_t size() const { return by_id_.size(); }
  bool empty() const { return by_id_.empty(); }
  // Requests promoted by max_priority_wait since construction.
  uint64_t promotions() const { return promotions_; }

 private:
  // Queue order: priority descending, then arrival, then push order. A
  // promoted request's neg_priority is kPromoted, below any pushed one's.
  static constexpr int32_t kPromoted = std::numeric_limits<int32_t>::min();
  struct Key {
    int32_t neg_priority;
    absl::Time arrival;
    uint64_t order;
    bool operator<(const Key& other) const {
      if (neg_priority != other.neg_priority) return neg_priority < other.neg_priority;
      if (arrival != other.arrival) return arrival < other.arrival;
      return order < other.order;
    }
  };
  struct Entry {
    RequestId id;
    int32_t skips = 0;
  };

  const AdmissionQueueOptions options_;
  std::map<Key, Entry> queue_;
  // The same requests by arrival (then push order), so Expire looks only at
  // those that expire.
  std::map<std::pair<absl::Time, uint64_t>, RequestId> by_arrival_;
  // The requests not yet promoted, by arrival, so Promote looks only at
  // those it promotes.
  std::map<std::pair<absl::Time, uint64_t>, RequestId> unpromoted_;
  absl::flat_hash_map<RequestId, Key> by_id_;
  uint64_t next_order_ = 0;
  uint64_t promotions_ = 0;
};

}  // namespace tern::router

#endif  // TERN_ROUTER_CORE_ADMISSION_QUEUE_H_
