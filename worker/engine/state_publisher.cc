#include "worker/engine/state_publisher.h"

#include <algorithm>
#include <iterator>
#include <optional>
#include <utility>

namespace tern::worker {
namespace {

// Publication cadence (see StateSubscription).
constexpr absl::Duration kStructuralPublishInterval = absl::Milliseconds(20);
constexpr absl::Duration kLoadPublishInterval = absl::Milliseconds(200);

size_t CountHashes(const std::vector<KvEvent>& events) {
  size_t n = 0;
  for (const KvEvent& e : events) n += e.block_hashes.size();
  return n;
}

}  // namespace

// A WatchState feed. The publisher appends under mu_; Next takes.
class StatePublisher::Subscription final : public StateSubscription {
 public:
  explicit Subscription(size_t max_pending_hashes) : max_pending_hashes_(max_pending_hashes) {}

  bool Next(absl::Duration timeout, EngineStateUpdate* out) override {
    const absl::Time deadline = absl::Now() + timeout;
    absl::MutexLock lock(&mu_);
    while (!has_update_ && !closed_) {
      if (cv_.WaitWithDeadline(&mu_, deadline)) break;
    }
    if (closed_ || !has_update_) return false;
    out->load = load_;
    out->events = std::move(pending_);
    // Numbered on delivery, so whatever was replaced by a snapshot leaves no gap.
    for (KvEvent& event : out->events) event.sequence_number = next_sequence_number_++;
    pending_.clear();
    pending_hashes_ = 0;
    has_update_ = false;
    return true;
  }

  bool Closed() const override {
    absl::MutexLock lock(&mu_);
    return closed_;
  }

  void Cancel() override { Close(); }

  void Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    cv_.SignalAll();
  }

  bool started() const {
    absl::MutexLock lock(&mu_);
    return started_;
  }

  // `events` happened since the previous push; `snapshot` describes the
  // cache after them (computed only when needed).
  template <typename SnapshotFn>
  void Push(const std::vector<KvEvent>& events, const EngineLoad& load, SnapshotFn&& snapshot) {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    const size_t more = CountHashes(events);
    if (!started_ || pending_hashes_ + more > max_pending_hashes_) {
      pending_ = snapshot();
      pending_hashes_ = CountHashes(pending_);
      started_ = true;
    } else {
      pending_.insert(pending_.end(), events.begin(), events.end());
      pending_hashes_ += more;
    }
    load_ = load;
    has_update_ = true;
    cv_.SignalAll();
  }

 private:
  const size_t max_pending_hashes_;
  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool has_update_ ABSL_GUARDED_BY(mu_) = false;
  EngineLoad load_ ABSL_GUARDED_BY(mu_);
  std::vector<KvEvent> pending_ ABSL_GUARDED_BY(mu_);
  size_t pending_hashes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_sequence_number_ ABSL_GUARDED_BY(mu_) = 1;
};

StatePublisher::StatePublisher(size_t max_pending_hashes)
    : max_pending_hashes_(std::max<size_t>(max_pending_hashes, 1)) {}

StatePublisher::~StatePublisher() { CloseAll(); }

std::shared_ptr<StateSubscription> StatePublisher::Subscribe() {
  auto subscription = std::make_shared<Subscription>(max_pending_hashes_);
  absl::MutexLock lock(&mu_);
  if (closed_) {
    subscription->Close();
  } else {
    subscriptions_.push_back(subscription);
  }
  return subscription;
}

void StatePublisher::Publish(std::vector<KvEvent> events, const EngineLoad& load, Urgency urgency,
                             absl::FunctionRef<EngineLoad()> published_load,
                             absl::FunctionRef<std::vector<KvEvent>()> snapshot) {
  if (!events.empty() && events.front().kind == KvEventKind::kAllBlocksCleared) {
    unpublished_events_.clear();
  }
  std::move(events.begin(), events.end(), std::back_inserter(unpublished_events_));

  bool new_subscribers = false;
  {
    absl::MutexLock lock(&mu_);
    for (const std::weak_ptr<Subscription>& weak : subscriptions_) {
      std::shared_ptr<Subscription> subscription = weak.lock();
      if (subscription && !subscription->started()) new_subscribers = true;
    }
  }
  const EngineLoad& last = last_published_load_;
  const bool structural =
      !unpublished_events_.empty() || load.running != last.running || load.waiting != last.waiting;
  const bool changed = structural || load.free_kv_blocks != last.free_kv_blocks ||
                       load.cached_kv_blocks != last.cached_kv_blocks ||
                       load.queued_prefill_tokens != last.queued_prefill_tokens ||
                       load.preemptions != last.preemptions ||
                       load.step_running != last.step_running;
  // Steps alone count too: routers judge a busy worker stuck when its step
  // counter stops moving, and a long decode changes nothing else for many steps.
  const bool progressed = load.steps != last.steps;
  const absl::Duration since = absl::Now() - last_publish_;
  const bool due = urgency == Urgency::kNow || new_subscribers ||
                   (urgency == Urgency::kFlush && changed) ||
                   (structural && since >= kStructuralPublishInterval) ||
                   ((changed || progressed) && since >= kLoadPublishInterval);
  if (!due) return;

  const EngineLoad published = published_load();
  std::optional<std::vector<KvEvent>> cache;
  auto get_snapshot = [&]() -> std::vector<KvEvent> {
    if (!cache) cache = snapshot();
    return *cache;
  };
  {
    absl::MutexLock lock(&mu_);
    std::erase_if(subscriptions_, [&](const std::weak_ptr<Subscription>& weak) {
      std::shared_ptr<Subscription> subscription = weak.lock();
      if (!subscription || subscription->Closed()) return true;
      subscription->Push(unpublished_events_, published, get_snapshot);
      return false;
    });
  }
  unpublished_events_.clear();
  last_published_load_ = load;
  last_publish_ = absl::Now();
}

void StatePublisher::CloseAll() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
  for (const std::weak_ptr<Subscription>& weak : subscriptions_) {
    if (std::shared_ptr<Subscription> subscription = weak.lock()) subscription->Close();
  }
  subscriptions_.clear();
}

}  // namespace tern::worker
