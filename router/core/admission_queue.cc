#include "router/core/admission_queue.h"

#include <algorithm>
#include <iterator>
#include <limits>

#include "absl/strings/str_cat.h"

namespace tern::router {

AdmissionQueue::AdmissionQueue(AdmissionQueueOptions options) : options_(options) {}

absl::Status AdmissionQueue::Push(RequestId id, int32_t priority, absl::Time arrival,
                                  bool beyond_limit) {
  if (by_id_.contains(id)) {
    return absl::AlreadyExistsError(absl::StrCat("request ", id, " is already queued"));
  }
  if (!beyond_limit && static_cast<int64_t>(by_id_.size()) >= options_.max_length) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the router's queue is full (", options_.max_length, " requests waiting)"));
  }
  // Negating INT32_MIN would overflow; clamp it to the lowest priority that negates.
  const int32_t clamped = std::max(priority, -std::numeric_limits<int32_t>::max());
  const Key key{-clamped, arrival, next_order_++};
  queue_.emplace(key, Entry{id});
  by_id_.emplace(id, key);
  by_arrival_.emplace(std::make_pair(key.arrival, key.order), id);
  unpromoted_.emplace(std::make_pair(key.arrival, key.order), id);
  return absl::OkStatus();
}

bool AdmissionQueue::Remove(RequestId id) {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return false;
  by_arrival_.erase({it->second.arrival, it->second.order});
  unpromoted_.erase({it->second.arrival, it->second.order});
  queue_.erase(it->second);
  by_id_.erase(it);
  return true;
}

std::vector<AdmissionQueue::RequestId> AdmissionQueue::Expire(absl::Time now) {
  std::vector<RequestId> ids;
  while (!by_arrival_.empty() && now - by_arrival_.begin()->first.first > options_.max_wait) {
    const RequestId id = by_arrival_.begin()->second;
    Remove(id);
    ids.push_back(id);
  }
  return ids;
}

int64_t AdmissionQueue::Promote(absl::Time now) {
  int64_t promoted = 0;
  while (!unpromoted_.empty() &&
         now - unpromoted_.begin()->first.first > options_.max_priority_wait) {
    const RequestId id = unpromoted_.begin()->second;
    unpromoted_.erase(unpromoted_.begin());
    Key& key = by_id_.at(id);
    auto node = queue_.extract(key);
    key.neg_priority = kPromoted;
    node.key() = key;
    queue_.insert(std::move(node));
    ++promoted;
  }
  promotions_ += promoted;
  return promoted;
}

std::optional<AdmissionQueue::RequestId> AdmissionQueue::TakeFor(
    const std::function<double(RequestId)>& cost, absl::Time now) {
  if (queue_.empty()) return std::nullopt;
  Promote(now);
  auto best = queue_.end();
  double best_cost = 0.0;
  int32_t scanned = 0;
  for (auto it = queue_.begin(); it != queue_.end() && scanned < options_.scan_window;
       ++it, ++scanned) {
    const bool overdue = it->first.neg_priority == kPromoted ||
                         now - it->first.arrival > options_.max_skip_age ||
                         it->second.skips >= options_.max_skips;
    if (overdue) {
      // Nothing behind an overdue request may pass it.
      if (best == queue_.end()) best = it;
      break;
    }
    const double c = cost(it->second.id);
    if (best == queue_.end() || c < best_cost) {
      best = it;
      best_cost = c;
    }
  }
  // Everything ahead of the chosen request was passed over once more.
  for (auto it = queue_.begin(); it != best; ++it) ++it->second.skips;
  const RequestId id = best->second.id;
  by_arrival_.erase({best->first.arrival, best->first.order});
  unpromoted_.erase({best->first.arrival, best->first.order});
  by_id_.erase(id);
  queue_.erase(best);
  return id;
}

int64_t AdmissionQueue::CountAhead(int32_t priority) const {
  // Keys order by negated priority first: everything before the first key of
  // a lower priority goes first (later arrivals of the same priority follow).
  const int32_t neg = -std::max(priority, -std::numeric_limits<int32_t>::max());
  if (neg == std::numeric_limits<int32_t>::max()) return static_cast<int64_t>(queue_.size());
  const auto end = queue_.lower_bound(Key{neg + 1, absl::InfinitePast(), 0});
  return std::distance(queue_.begin(), end);
}

std::vector<AdmissionQueue::RequestId> AdmissionQueue::Snapshot() const {
  std::vector<RequestId> ids;
  ids.reserve(queue_.size());
  for (const auto& [key, entry] : queue_) ids.push_back(entry.id);
  return ids;
}

}  // namespace tern::router
