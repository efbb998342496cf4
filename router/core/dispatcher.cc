#include "router/core/dispatcher.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace tern::router {
namespace {

// A per-request pseudo-random draw (splitmix64 of the ticket) for tie breaks.
uint64_t Draw(uint64_t ticket) {
  uint64_t x = ticket + 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Calls seen before a queue's wait prediction is used.
constexpr size_t kMinHeldSamples = 4;

// Overload pacing (see the header comment).
constexpr double kArrivalRateSeconds = 1.0;  // decay time of the arrival rate
constexpr size_t kMinAloneSamples = 4;       // TTFTs alone before a worker is paced
constexpr int32_t kPaceWindow = 8;           // TTFTs per adjustment
constexpr int32_t kGoodWindowsToRaise = 3;

// Arrivals per second decaying over kArrivalRateSeconds: `rate` as of `at`, seen at `now`.
double DecayedRate(double rate, absl::Time at, absl::Time now) {
  return rate * std::exp(-std::max(0.0, absl::ToDoubleSeconds(now - at)) / kArrivalRateSeconds);
}

bool Excludes(const DispatchRequest& request, const FleetMember* worker) {
  return std::find(request.exclude.begin(), request.exclude.end(), worker) != request.exclude.end();
}

}  // namespace

Dispatcher::Dispatcher(FleetView* fleet, DispatcherOptions options, Clock* clock)
    : fleet_(fleet), options_(std::move(options)), clock_(clock) {}

int32_t Dispatcher::RoomLocked(const Candidate& c, const ModelQueue& queue) const {
  const int32_t full = c.max_num_seqs + options_.slack;
  if (!queue.overloaded) return full;
  auto it = paces_.find(c.worker);
  if (it == paces_.end() || it->second.limit <= 0) return full;
  return std::min(it->second.limit, full);
}

bool Dispatcher::HasRoomLocked(const Candidate& c, const ModelQueue& queue) const {
  return c.view.inflight < RoomLocked(c, queue);
}

void Dispatcher::OnArrivalLocked(ModelQueue& queue, absl::Span<const Candidate> candidates,
                                 absl::Time now) {
  if (options_.overload_ttft_factor <= 0) return;
  queue.arrival_rate =
      DecayedRate(queue.arrival_rate, queue.arrival_at, now) + 1 / kArrivalRateSeconds;
  queue.arrival_at = now;
  MaybeEndOverloadLocked(queue, candidates, now);
}

void Dispatcher::MaybeEndOverloadLocked(ModelQueue& queue, absl::Span<const Candidate> candidates,
                                        absl::Time now) {
  // The rate lags the arrivals by about its decay time: an overload lasts
  // that long at least.
  if (!queue.overloaded || now - queue.overload_started_at < absl::Seconds(kArrivalRateSeconds)) {
    return;
  }
  const absl::Duration held =
      queue.held_full.count() > 0 ? queue.held_full.Mean() : queue.held.Mean();
  if (held <= absl::ZeroDuration()) return;
  int64_t slots = 0;
  for (const Candidate& c : candidates) slots += c.max_num_seqs + options_.slack;
  const double capacity = static_cast<double>(slots) / absl::ToDoubleSeconds(held);
  const double rate = DecayedRate(queue.arrival_rate, queue.arrival_at, now);
  if (rate >= capacity) return;
  TERN_LOG(Info) << "model " << queue.model << ": overload over (arrivals "
                 << static_cast<int64_t>(rate) << "/s, below the " << static_cast<int64_t>(capacity)
                 << "/s its workers complete at full room)";
  SetOverloadedLocked(queue, false, candidates, now);
}

void Dispatcher::OnTurnedAwayLocked(ModelQueue& queue, absl::Span<const Candidate> candidates,
                                    absl::Time now) {
  if (options_.overload_ttft_factor <= 0 || queue.overloaded) return;
  TERN_LOG(Warning) << "model " << queue.model
                    << ": overloaded (a request was turned away at full room); pacing its "
                       "workers to TTFT within "
                    << options_.overload_ttft_factor << "x alone";
  SetOverloadedLocked(queue, true, candidates, now);
}

void Dispatcher::SetOverloadedLocked(ModelQueue& queue, bool overloaded,
                                     absl::Span<const Candidate> candidates, absl::Time now) {
  queue.overloaded = overloaded;
  if (overloaded) {
    ++stats_.overloads;
    queue.overload_started_at = now;
  } else {
    queue.overload_ended_at = now;
  }
  for (const Candidate& c : candidates) {
    Pace& pace = paces_[c.worker];
    pace.model = queue.model;
    pace.limit = 0;
    pace.good_windows = 0;
    pace.fresh = 0;
    // Its last TTFTs were taken at full room: they set its first limit.
    if (overloaded && pace.recent.count() >= static_cast<size_t>(kPaceWindow)) {
      AdjustPaceLocked(pace, c.max_num_seqs + options_.slack, now);
    }
  }
}

void Dispatcher::AdjustPaceLocked(Pace& pace, int32_t full, absl::Time now) {
  pace.fresh = 0;
  if (pace.alone.count() < kMinAloneSamples) return;
  const absl::Duration mean = pace.recent.Mean();
  const absl::Duration bound = pace.alone.Mean() * options_.overload_ttft_factor;
  const int32_t current = pace.limit > 0 ? std::min(pace.limit, full) : full;
  int32_t next = current;
  if (mean > bound) {
    pace.good_windows = 0;
    const auto scaled = static_cast<int32_t>(current * absl::FDivDuration(bound, mean));
    next = std::max(1, std::min(current - 1, scaled));
    if (next != current) ++stats_.paced_down;
  } else if (++pace.good_windows >= kGoodWindowsToRaise) {
    pace.good_windows = 0;
    next = std::min(full, current + 1);
  }
  if (next == current) return;
  pace.limit = next < full ? next : 0;
  pace.moved_at = now;
  pace.recent = DurationRing<8>();
}

void Dispatcher::ObserveFirstToken(FleetMember* worker, absl::Duration ttft, bool alone) {
  if (options_.overload_ttft_factor <= 0) return;
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  std::string model;
  const std::optional<Candidate> candidate = fleet_->CandidateFor(*worker, now, &model);
  if (!candidate.has_value()) return;
  Pace& pace = paces_[worker];
  pace.model = model;
  auto it = queues_.find(model);
  const bool overloaded = it != queues_.end() && it->second->overloaded;
  // The reference is the TTFT alone on an unloaded cluster: under overload
  // a call alone on its worker still shares the rest of the cluster.
  if (alone && !overloaded) pace.alone.Add(ttft);
  // A call started before the limit last moved ran under the old one.
  if (now - ttft < pace.moved_at) return;
  pace.recent.Add(ttft);
  ++pace.fresh;
  if (!overloaded || pace.fresh < kPaceWindow) return;
  AdjustPaceLocked(pace, candidate->max_num_seqs + options_.slack, now);
}

PolicyKind Dispatcher::PolicyFor(const std::string& model) const {
  auto it = options_.model_policies.find(model);
  return it != options_.model_policies.end() ? it->second : options_.policy.kind;
}

std::optional<Admission> Dispatcher::ChooseLocked(absl::Span<const Candidate> candidates,
                                                  const ModelQueue& queue, PromptBlocks& blocks,
                                                  const DispatchRequest& request, absl::Time now) {
  std::vector<const Candidate*> roomy;
  std::vector<WorkerLoadView> views;
  int32_t smallest_block = 0;
  for (const Candidate& c : candidates) {
    if (!HasRoomLocked(c, queue)) continue;
    roomy.push_back(&c);
    WorkerLoadView view = c.view;
    // Each worker's prompt blocks at its own block size (mixed fleets).
    view.block_size = c.block_size;
    view.prompt_blocks = static_cast<int32_t>(blocks.For(c.block_size).size());
    views.push_back(view);
    if (smallest_block == 0 || c.block_size < smallest_block) smallest_block = c.block_size;
  }
  if (roomy.empty()) return std::nullopt;
  PolicyOptions policy = options_.policy;
  policy.kind = request.policy.value_or(PolicyFor(request.model));
  // The unit costs are counted in; with one block size in the fleet, that size.
  policy.block_size = smallest_block;
  std::vector<uint64_t> session_weights;
  if (options_.session_affinity && !request.session_key.empty()) {
    for (const Candidate* c : roomy) {
      session_weights.push_back(RendezvousWeight(request.session_key, c->worker->address()));
    }
  }
  const auto prompt_blocks = static_cast<int32_t>(blocks.For(policy.block_size).size());
  const Decision decision = ChooseWorker(policy, views, prompt_blocks, Draw(request.ticket),
                                         round_robin_++, session_weights);
  const Candidate& chosen = *roomy[decision.index];
  chosen.worker->AddInflight(1);
  fleet_->OnRouted(*chosen.worker, blocks, now);
  ++stats_.dispatched;
  if (options_.observer != nullptr) options_.observer->OnBound(absl::ZeroDuration());
  if (decision.reason == DecisionReason::kSticky) ++stats_.sticky;
  if (chosen.view.matched_blocks > 0) ++stats_.cache_hits;
  const int64_t predicted = int64_t{chosen.view.matched_blocks} * chosen.block_size;
  return Admission{chosen.worker, static_cast<int32_t>(std::min<int64_t>(
                                      predicted, static_cast<int64_t>(blocks.num_tokens())))};
}

absl::StatusOr<Admission> Dispatcher::Admit(DispatchRequest request) {
  const auto started = std::chrono::steady_clock::now();
  absl::StatusOr<Admission> admission = AdmitUntimed(std::move(request));
  if (options_.observer != nullptr) {
    options_.observer->OnAdmitted(absl::FromChrono(std::chrono::steady_clock::now() - started));
  }
  return admission;
}

absl::StatusOr<Admission> Dispatcher::AdmitUntimed(DispatchRequest request) {
  const absl::Time now = clock_->Now();
  auto waiting =
      std::make_unique<Waiting>(Waiting{std::move(request), PromptBlocks({}), absl::Time()});
  waiting->blocks = PromptBlocks(waiting->request.prompt);
  const DispatchRequest& r = waiting->request;
  std::vector<Outcome> outcomes;
  absl::StatusOr<Admission> result;
  {
    absl::MutexLock lock(&mu_);
    auto it = queues_.find(r.model);
    // Requests already waiting go first; a new one bypasses the queue only
    // when it is empty. Behind others it waits (the pump below says whether
    // anything can serve the model at all).
    const bool bypass = it == queues_.end() || it->second->queue.empty();
    PromptBlocks no_prompt({});
    absl::StatusOr<std::vector<Candidate>> candidates =
        fleet_->Candidates(r.model, bypass ? waiting->blocks : no_prompt, r.exclude, now);
    if (bypass && !candidates.ok()) {
      ++stats_.no_worker;
      return candidates.status();
    }
    // A model some worker serves or served: names never served make no queue.
    ModelQueue* const queue = &QueueLocked(r.model);
    if (!r.resumed && candidates.ok()) OnArrivalLocked(*queue, *candidates, now);
    if (bypass) {
      if (auto admission = ChooseLocked(*candidates, *queue, waiting->blocks, r, now)) {
        return *admission;
      }
    }
    if (!r.resumed && candidates.ok()) {
      int64_t slots = 0;
      for (const Candidate& c : *candidates) slots += RoomLocked(c, *queue);
      const std::optional<absl::Duration> wait = PredictedWaitLocked(*queue, r.priority, slots);
      if (wait.has_value() && *wait > options_.queue.max_wait) {
        ++stats_.rejected_predicted;
        OnTurnedAwayLocked(*queue, *candidates, now);
        return absl::ResourceExhaustedError(
            absl::StrCat("the router's queue would hold the request about ",
                         absl::ToInt64Milliseconds(*wait), " ms, longer than its limit of ",
                         absl::ToInt64Milliseconds(options_.queue.max_wait), " ms"));
      }
    }
    if (absl::Status pushed = queue->queue.Push(r.ticket, r.priority, now, r.resumed);
        !pushed.ok()) {
      ++stats_.rejected_full;
      if (candidates.ok()) OnTurnedAwayLocked(*queue, *candidates, now);
      return pushed;
    }
    ++stats_.queued;
    waiting->queued_at = now;
    const std::string model = r.model;
    waiting_.emplace(r.ticket, std::move(waiting));
    // A higher-priority request may be placeable at once where others are not.
    PumpModelLocked(model, *queue, now, &outcomes);
    result = Admission{};
  }
  // The waiter may hear of its own dispatch before Admit returns.
  Deliver(outcomes);
  return result;
}

bool Dispatcher::Cancel(uint64_t ticket) {
  absl::MutexLock lock(&mu_);
  auto it = waiting_.find(ticket);
  if (it == waiting_.end()) return false;
  queues_[it->second->request.model]->queue.Remove(ticket);
  waiting_.erase(it);
  return true;
}

void Dispatcher::Release(FleetMember* worker, absl::Duration held_for) {
  worker->AddInflight(-1);
  // The freed slot takes the queued request that suits it best. Only this
  // worker gained room, so only it is looked at; the fleet's periodic Pump
  // covers everything else (expiry, workers that became routable).
  const absl::Time now = clock_->Now();
  std::vector<Outcome> outcomes;
  {
    absl::MutexLock lock(&mu_);
    const bool sample = held_for > absl::ZeroDuration();
    if (waiting_.empty() && !sample) return;
    std::string model;
    const std::optional<Candidate> candidate = fleet_->CandidateFor(*worker, now, &model);
    if (sample && !model.empty()) {
      ModelQueue& queue = QueueLocked(model);
      queue.held.Add(held_for);
      // A call paced for part of its time says nothing of full room.
      if (!queue.overloaded && now - held_for >= queue.overload_ended_at) {
        queue.held_full.Add(held_for);
      }
    }
    if (waiting_.empty()) return;
    auto it = queues_.find(model);
    if (it == queues_.end() || it->second->queue.empty()) return;
    if (!candidate.has_value() || !HasRoomLocked(*candidate, *it->second)) return;
    DispatchOneLocked(model, *it->second, *candidate, now, &outcomes);
  }
  Deliver(outcomes);
}

void Dispatcher::Pump() {
  const absl::Time now = clock_->Now();
  std::vector<Outcome> outcomes;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [model, queue] : queues_) {
      if (queue->overloaded) {
        PromptBlocks no_prompt({});
        absl::StatusOr<std::vector<Candidate>> candidates =
            fleet_->Candidates(model, no_prompt, {}, now);
        if (candidates.ok()) MaybeEndOverloadLocked(*queue, *candidates, now);
      }
      if (!queue->queue.empty()) PumpModelLocked(model, *queue, now, &outcomes);
    }
  }
  Deliver(outcomes);
}

void Dispatcher::PumpModelLocked(const std::string& model, ModelQueue& queue, absl::Time now,
                                 std::vector<Outcome>* outcomes) {
  bool expired = false;
  for (AdmissionQueue::RequestId id : queue.queue.Expire(now)) {
    auto node = waiting_.extract(id);
    ++stats_.expired;
    expired = true;
    outcomes->push_back({node.mapped()->request.waiter, nullptr, 0,
                         absl::ResourceExhaustedError(absl::StrCat(
                             "no worker could take the request within ",
                             absl::FormatDuration(options_.queue.max_wait), " (router queue)"))});
  }
  if (expired && options_.overload_ttft_factor > 0 && !queue.overloaded) {
    PromptBlocks no_prompt({});
    absl::StatusOr<std::vector<Candidate>> candidates =
        fleet_->Candidates(model, no_prompt, {}, now);
    if (candidates.ok()) OnTurnedAwayLocked(queue, *candidates, now);
  }
  while (!queue.queue.empty()) {
    PromptBlocks no_prompt({});
    absl::StatusOr<std::vector<Candidate>> candidates =
        fleet_->Candidates(model, no_prompt, {}, now);
    if (!candidates.ok()) {
      // Nothing can serve them now: waiting longer would only hide it.
      for (AdmissionQueue::RequestId id : queue.queue.Snapshot()) {
        queue.queue.Remove(id);
        auto node = waiting_.extract(id);
        outcomes->push_back({node.mapped()->request.waiter, nullptr, 0, candidates.status()});
        ++stats_.no_worker;
      }
      return;
    }
    // The worker with the most free slots takes the request that suits it best.
    const Candidate* best = nullptr;
    for (const Candidate& c : *candidates) {
      if (!HasRoomLocked(c, queue)) continue;
      if (best == nullptr ||
          RoomLocked(c, queue) - c.view.inflight > RoomLocked(*best, queue) - best->view.inflight) {
        best = &c;
      }
    }
    if (best == nullptr || !DispatchOneLocked(model, queue, *best, now, outcomes)) return;
  }
}

bool Dispatcher::DispatchOneLocked(const std::string& model, ModelQueue& queue,
                                   const Candidate& candidate, absl::Time now,
                                   std::vector<Outcome>* outcomes) {
  FleetMember* const worker = candidate.worker;
  PolicyOptions policy = options_.policy;
  policy.kind = PolicyFor(model);
  policy.block_size = candidate.block_size;
  auto cost = [&](AdmissionQueue::RequestId id) {
    Waiting& w = *waiting_.at(id);
    if (Excludes(w.request, worker)) return std::numeric_limits<double>::infinity();
    if (w.request.policy.value_or(policy.kind) != PolicyKind::kPrefix) return 0.0;
    WorkerLoadView view = candidate.view;
    view.matched_blocks = fleet_->MatchedBlocks(*worker, w.blocks, now);
    return PrefixCost(policy, view, static_cast<int32_t>(w.blocks.For(policy.block_size).size()));
  };
  const std::optional<AdmissionQueue::RequestId> id = queue.queue.TakeFor(cost, now);
  if (!id) return false;
  Waiting& w = *waiting_.at(*id);
  if (Excludes(w.request, worker)) {
    // Only requests this worker failed before are left in its window; let
    // another worker take it later.
    (void)queue.queue.Push(*id, w.request.priority, now, /*beyond_limit=*/true);
    return false;
  }
  const int32_t matched = fleet_->MatchedBlocks(*worker, w.blocks, now);
  worker->AddInflight(1);
  fleet_->OnRouted(*worker, w.blocks, now);
  ++stats_.dispatched;
  if (matched > 0) ++stats_.cache_hits;
  const int64_t predicted = std::min<int64_t>(int64_t{matched} * candidate.block_size,
                                              static_cast<int64_t>(w.blocks.num_tokens()));
  outcomes->push_back(
      {w.request.waiter, worker, static_cast<int32_t>(predicted), absl::OkStatus()});
  if (options_.observer != nullptr) options_.observer->OnBound(now - w.queued_at);
  waiting_.erase(*id);
  return true;
}

std::optional<absl::Duration> Dispatcher::PredictedWaitLocked(const ModelQueue& queue,
                                                              int32_t priority,
                                                              int64_t slots) const {
  if (queue.held.count() < kMinHeldSamples || slots <= 0) return std::nullopt;
  const absl::Duration between_frees = queue.held.Mean() / slots;
  return (queue.queue.CountAhead(priority) + 1) * between_frees;
}

Dispatcher::ModelQueue& Dispatcher::QueueLocked(const std::string& model) {
  std::unique_ptr<ModelQueue>& queue = queues_[model];
  if (queue == nullptr) queue = std::make_unique<ModelQueue>(model, options_.queue);
  return *queue;
}

void Dispatcher::Deliver(const std::vector<Outcome>& outcomes) {
  for (const Outcome& o : outcomes) {
    if (o.worker != nullptr) {
      o.waiter->OnDispatched(o.worker, o.predicted);
    } else {
      o.waiter->OnRejected(o.status);
    }
  }
}

std::vector<std::pair<int32_t, int64_t>> Dispatcher::QueuedByPriority() const {
  absl::flat_hash_map<int32_t, int64_t> counts;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [ticket, waiting] : waiting_) ++counts[waiting->request.priority];
  }
  std::vector<std::pair<int32_t, int64_t>> sorted(counts.begin(), counts.end());
  std::sort(sorted.begin(), sorted.end());
  return sorted;
}

std::vector<std::pair<std::string, int32_t>> Dispatcher::Paced() const {
  std::vector<std::pair<std::string, int32_t>> paced;
  absl::MutexLock lock(&mu_);
  for (const auto& [worker, pace] : paces_) {
    auto it = queues_.find(pace.model);
    if (pace.limit > 0 && it != queues_.end() && it->second->overloaded) {
      paced.emplace_back(worker->address(), pace.limit);
    }
  }
  std::sort(paced.begin(), paced.end());
  return paced;
}

size_t Dispatcher::queued() const {
  absl::MutexLock lock(&mu_);
  return waiting_.size();
}

DispatcherStats Dispatcher::stats() const {
  absl::MutexLock lock(&mu_);
  DispatcherStats stats = stats_;
  for (const auto& [model, queue] : queues_) stats.promoted += queue->queue.promotions();
  return stats;
}

}  // namespace tern::router
