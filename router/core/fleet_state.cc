#include "router/core/fleet_state.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/block_hash.h"
#include "common/log.h"
#include "router/core/membership.h"

namespace tern::router {

void FleetEffects::Merge(FleetEffects other) {
  for (auto& call : other.lost) lost.push_back(std::move(call));
  may_have_room = may_have_room || other.may_have_room;
  watch = watch || other.watch;
  cancel_stream = cancel_stream || other.cancel_stream;
}

const std::vector<uint64_t>& PromptBlocks::For(int32_t block_size) {
  for (const auto& [size, hashes] : by_size_) {
    if (size == block_size) return hashes;
  }
  by_size_.emplace_back(block_size, HashPrefixBlocks(prompt_, std::max(1, block_size)));
  return by_size_.back().second;
}

struct FleetState::State {
  explicit State(CircuitBreakerOptions options) : breaker(options) {}

  bool health_ok = false;
  // The worker answers its health check with NOT_SERVING: it is draining
  // (SIGTERM), takes no new work but finishes what it has.
  bool draining = false;
  bool has_info = false;
  WorkerInfo info;
  std::string detail = "not checked yet";
  bool stream_open = false;          // a state stream is open (StartStream..OnStreamEnded)
  bool watch_synced = false;         // the open stream delivered its snapshot
  bool watch_unimplemented = false;  // the worker has no WatchState
  bool resync_pending = false;       // replacing the stream after an event gap
  bool stale_stream = false;         // the open stream is being cancelled: ignore it
  WorkerLoad load;
  bool has_load = false;
  absl::Time progress_at = absl::InfinitePast();
  bool stalled = false;
  bool healthy = false;  // as last computed
  bool removed = false;  // no longer a member
  CircuitBreaker breaker;
  absl::flat_hash_map<uint64_t, std::weak_ptr<WorkerCall>> calls;
  int64_t routed_prompt_tokens = 0;
  int64_t predicted_cached_tokens = 0;
  int64_t reported_cached_tokens = 0;
};

FleetState::FleetState(FleetStateOptions options)
    : options_(std::move(options)), index_(options_.index) {}

FleetState::~FleetState() = default;

FleetMember* FleetState::AddLocked(const std::string& address) {
  for (auto& member : members_) {
    if (member->address() != address) continue;
    // The same address again: its old entry (and id) serves.
    State& state = *states_[member->id()];
    if (state.removed) {
      state.removed = false;
      state.health_ok = false;
      state.stalled = false;
      state.watch_unimplemented = false;
      state.detail = "not checked yet";
      TERN_LOG(Info) << "worker " << address << " joins the fleet again";
    }
    return member.get();
  }
  const auto id = static_cast<WorkerId>(members_.size());
  members_.push_back(std::make_unique<FleetMember>(id, address));
  states_.push_back(std::make_unique<State>(options_.breaker));
  return members_.back().get();
}

bool FleetState::RemoveLocked(WorkerId id) {
  State& state = *states_[id];
  if (state.removed) return false;
  TERN_LOG(Info) << "worker " << members_[id]->address() << " leaves the fleet";
  state.removed = true;
  state.health_ok = false;
  state.healthy = false;
  state.detail = "removed from the fleet";
  state.watch_synced = false;
  state.resync_pending = false;
  // Its calls in flight run on: they end, or fail over, as on any worker.
  index_.RemoveWorker(id);
  return true;
}

FleetState::Reconciled FleetState::Reconcile(absl::Span<const std::string> desired) {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> current;
  for (const auto& member : members_) {
    if (!states_[member->id()]->removed) current.push_back(member->address());
  }
  const MembershipDiff diff = DiffMembership(current, desired);
  Reconciled result;
  for (const std::string& address : diff.added) result.added.push_back(AddLocked(address));
  for (const std::string& address : diff.removed) {
    for (const auto& member : members_) {
      if (member->address() == address && RemoveLocked(member->id())) {
        result.removed.push_back(member.get());
      }
    }
  }
  return result;
}

std::vector<FleetMember*> FleetState::members() const {
  absl::MutexLock lock(&mu_);
  std::vector<FleetMember*> members;
  for (const auto& member : members_) {
    if (!states_[member->id()]->removed) members.push_back(member.get());
  }
  return members;
}

bool FleetState::HealthyLocked(const State& state) const {
  const bool stream_ok = state.watch_synced || state.watch_unimplemented || state.resync_pending;
  return !state.removed && state.health_ok && state.has_info && stream_ok && !state.stalled;
}

void FleetState::UpdateHealthLocked(WorkerId id, absl::Time now, FleetEffects* effects) {
  State& state = *states_[id];
  const bool healthy = HealthyLocked(state);
  if (healthy == state.healthy) return;
  state.healthy = healthy;
  const FleetMember& member = *members_[id];
  if (healthy) {
    TERN_LOG(Info) << "worker " << member.address() << " is healthy (model " << state.info.model_id
                   << ")";
    state.detail.clear();
    state.progress_at = now;
    effects->may_have_room = true;
    return;
  }
  TERN_LOG(Warning) << "worker " << member.address() << " is unhealthy: " << state.detail;
  if (state.draining && !state.stalled && state.watch_synced) {
    // A draining worker still streams its state and finishes its requests:
    // route nothing new to it, but leave its calls running. Should it die
    // before they end, their streams fail and the relay resumes them.
    return;
  }
  // What it held may be gone (a restart) and its requests must resume elsewhere.
  index_.RemoveWorker(id);
  for (auto& [registration, weak] : state.calls) {
    if (auto call = weak.lock()) effects->lost.push_back(std::move(call));
  }
  state.calls.clear();
}

FleetEffects FleetState::OnHealthReport(FleetMember& worker, const HealthReport& report,
                                        absl::Time now) {
  FleetEffects effects;
  absl::MutexLock lock(&mu_);
  State& state = *states_[worker.id()];
  if (state.removed) return effects;
  state.health_ok = report.serving;
  state.draining = report.draining;
  if (report.serving) {
    state.has_info = true;
    state.info = report.info;
    auto it = std::find_if(model_created_.begin(), model_created_.end(),
                           [&](const auto& p) { return p.first == report.info.model_id; });
    if (it == model_created_.end()) {
      model_created_.emplace_back(report.info.model_id, absl::ToUnixSeconds(now));
    }
    if (!state.stalled && !HealthyLocked(state)) state.detail = "waiting for its state stream";
  } else {
    state.detail = report.failure;
  }
  UpdateHealthLocked(worker.id(), now, &effects);
  effects.watch = state.health_ok && !state.stream_open && !state.watch_unimplemented;
  return effects;
}

bool FleetState::StartStream(FleetMember& worker) {
  absl::MutexLock lock(&mu_);
  State& state = *states_[worker.id()];
  if (state.removed || !state.health_ok || state.stream_open || state.watch_unimplemented) {
    return false;
  }
  state.stream_open = true;
  state.watch_synced = false;
  state.stale_stream = false;
  return true;
}

FleetEffects FleetState::OnStateMessage(FleetMember& worker, const WorkerLoad& load,
                                        absl::Span<const KvEvent> events, absl::Time now) {
  FleetEffects effects;
  effects.may_have_room = true;
  absl::MutexLock lock(&mu_);
  const WorkerId id = worker.id();
  State& state = *states_[id];
  if (state.removed || !state.stream_open || state.stale_stream) return effects;
  if (!state.watch_synced) {
    // The first message of a stream is a snapshot: start the worker afresh.
    index_.BeginStream(id);
    state.watch_synced = true;
    state.resync_pending = false;
    state.progress_at = now;
  }
  const bool progressed = !state.has_load || load.step_counter != state.load.step_counter ||
                          (load.step_running && !state.load.step_running);
  if (progressed) {
    state.progress_at = now;
    if (state.stalled) {
      TERN_LOG(Info) << "worker " << worker.address() << " makes progress again";
      state.stalled = false;
    }
  }
  state.load = load;
  state.has_load = true;
  if (index_.ApplyEvents(id, events) == PrefixIndex::ApplyResult::kResync) {
    TERN_LOG(Warning) << "worker " << worker.address() << ": KV event gap; subscribing again";
    state.resync_pending = true;
    state.stale_stream = true;
    state.watch_synced = false;
    effects.cancel_stream = true;
  }
  UpdateHealthLocked(id, now, &effects);
  return effects;
}

FleetEffects FleetState::OnStreamEnded(FleetMember& worker, bool unimplemented,
                                       const std::string& detail, absl::Time now) {
  FleetEffects effects;
  absl::MutexLock lock(&mu_);
  State& state = *states_[worker.id()];
  state.stream_open = false;
  state.watch_synced = false;
  if (state.removed) return effects;
  if (state.stale_stream) {
    // Cancelled after an event gap: subscribe again at once.
    effects.watch = true;
  } else if (unimplemented) {
    state.resync_pending = false;
    TERN_LOG(Warning) << "worker " << worker.address()
                      << " publishes no state; routing from the router's own history";
    state.watch_unimplemented = true;
  } else {
    state.resync_pending = false;
    state.detail = absl::StrCat("state stream ended: ", detail);
  }
  UpdateHealthLocked(worker.id(), now, &effects);
  return effects;
}

absl::Duration FleetState::StallBoundLocked(const State& state) const {
  return options_.stall_timeout + options_.stall_step_factor * absl::Milliseconds(std::max<int64_t>(
                                                                   0, state.load.expected_step_ms));
}

FleetEffects FleetState::CheckProgress(absl::Time now) {
  FleetEffects effects;
  absl::MutexLock lock(&mu_);
  for (const auto& member : members_) {
    State& state = *states_[member->id()];
    if (state.removed || !state.watch_synced) continue;
    const bool has_work =
        state.load.running_seqs + state.load.waiting_seqs > 0 || member->inflight() > 0;
    if (!has_work) {
      state.progress_at = now;
      continue;
    }
    const absl::Duration bound = StallBoundLocked(state);
    if (state.stalled || now - state.progress_at <= bound) continue;
    state.stalled = true;
    state.detail =
        absl::StrCat("engine made no progress for ", absl::FormatDuration(now - state.progress_at),
                     " with work (bound ", absl::FormatDuration(bound), ")");
    UpdateHealthLocked(member->id(), now, &effects);
  }
  return effects;
}

absl::StatusOr<std::vector<Candidate>> FleetState::Candidates(
    const std::string& model, PromptBlocks& prompt, absl::Span<FleetMember* const> exclude,
    absl::Time now) {
  absl::MutexLock lock(&mu_);
  std::vector<Candidate> candidates;
  bool known = false;
  std::vector<std::pair<int32_t, std::vector<int32_t>>> matched_by_size;
  for (auto& member : members_) {
    const State& state = *states_[member->id()];
    if (state.removed || !state.has_info || state.info.model_id != model) continue;
    known = true;
    if (!state.healthy || !state.breaker.WouldAllow(now)) continue;
    if (std::find(exclude.begin(), exclude.end(), member.get()) != exclude.end()) continue;
    Candidate c = CandidateLocked(member.get(), state);
    auto it = std::find_if(matched_by_size.begin(), matched_by_size.end(),
                           [&](const auto& p) { return p.first == c.block_size; });
    if (it == matched_by_size.end()) {
      std::vector<int32_t> matched(members_.size(), 0);
      index_.MatchPrefix(prompt.For(c.block_size), now, &matched);
      matched_by_size.emplace_back(c.block_size, std::move(matched));
      it = std::prev(matched_by_size.end());
    }
    c.view.matched_blocks = it->second[member->id()];
    candidates.push_back(c);
  }
  if (!known) return absl::NotFoundError(absl::StrCat("no worker serves model '", model, "'"));
  if (candidates.empty()) {
    return absl::UnavailableError(absl::StrCat("no healthy worker for model '", model, "'"));
  }
  return candidates;
}

Candidate FleetState::CandidateLocked(FleetMember* member, const State& state) const {
  Candidate c;
  c.worker = member;
  c.max_num_seqs = std::max(1, state.info.max_num_seqs);
  c.block_size = state.info.kv_block_size > 0 ? state.info.kv_block_size : 16;
  c.view.running = state.load.running_seqs;
  c.view.waiting = state.load.waiting_seqs;
  c.view.queued_prefill_tokens = state.load.queued_prefill_tokens;
  c.view.inflight = member->inflight();
  const int64_t total = state.info.kv_blocks_total;
  if (total > 0 && state.has_load) {
    c.view.kv_usage = 1.0 - static_cast<double>(state.load.free_kv_blocks) / total;
  }
  return c;
}

std::optional<Candidate> FleetState::CandidateFor(const FleetMember& worker, absl::Time now,
                                                  std::string* model) {
  absl::MutexLock lock(&mu_);
  const State& state = *states_[worker.id()];
  if (state.removed || !state.has_info || !state.healthy || !state.breaker.WouldAllow(now)) {
    return std::nullopt;
  }
  *model = state.info.model_id;
  return CandidateLocked(members_[worker.id()].get(), state);
}

int32_t FleetState::MatchedBlocks(const FleetMember& worker, PromptBlocks& prompt, absl::Time now) {
  absl::MutexLock lock(&mu_);
  const State& state = *states_[worker.id()];
  const int32_t block_size = state.info.kv_block_size > 0 ? state.info.kv_block_size : 16;
  return index_.MatchPrefixFor(worker.id(), prompt.For(block_size), now);
}

void FleetState::OnRouted(const FleetMember& worker, PromptBlocks& prompt, absl::Time now) {
  absl::MutexLock lock(&mu_);
  State& state = *states_[worker.id()];
  const int32_t block_size = state.info.kv_block_size > 0 ? state.info.kv_block_size : 16;
  index_.RecordRouted(worker.id(), prompt.For(block_size), now);
  state.breaker.AllowCall(now);
}

void FleetState::OnCallResult(const FleetMember& worker, bool ok, bool worker_fault,
                              absl::Time now) {
  absl::MutexLock lock(&mu_);
  CircuitBreaker& breaker = states_[worker.id()]->breaker;
  if (ok) {
    breaker.RecordSuccess();
  } else if (worker_fault) {
    const bool was_open = breaker.state(now) == CircuitBreaker::State::kOpen;
    breaker.RecordFailure(now);
    if (!was_open && breaker.state(now) == CircuitBreaker::State::kOpen) {
      TERN_LOG(Warning) << "worker " << worker.address() << ": circuit open after "
                        << breaker.consecutive_failures() << " failed calls";
    }
  }
}

void FleetState::OnPrefixReport(const FleetMember& worker, int64_t prompt_tokens,
                                int64_t predicted_cached, int64_t reported_cached) {
  absl::MutexLock lock(&mu_);
  State& state = *states_[worker.id()];
  state.routed_prompt_tokens += prompt_tokens;
  state.predicted_cached_tokens += predicted_cached;
  state.reported_cached_tokens += reported_cached;
}

uint64_t FleetState::RegisterCall(const FleetMember& worker, std::weak_ptr<WorkerCall> call) {
  absl::MutexLock lock(&mu_);
  const uint64_t registration = next_registration_++;
  states_[worker.id()]->calls.emplace(registration, std::move(call));
  return registration;
}

void FleetState::UnregisterCall(const FleetMember& worker, uint64_t registration) {
  absl::MutexLock lock(&mu_);
  states_[worker.id()]->calls.erase(registration);
}

bool FleetState::healthy(const FleetMember& worker) const {
  absl::MutexLock lock(&mu_);
  return states_[worker.id()]->healthy;
}

PrefixIndexStats FleetState::index_stats() const {
  absl::MutexLock lock(&mu_);
  return index_.stats();
}

std::vector<ModelSummary> FleetState::Models() const {
  std::vector<ModelSummary> models;
  absl::MutexLock lock(&mu_);
  for (const auto& [model, when] : model_created_) {
    ModelSummary summary;
    summary.id = model;
    summary.created = when;
    for (const auto& state : states_) {
      if (state->removed || !state->healthy || state->info.model_id != model) continue;
      ++summary.ready_workers;
      // The smallest context among replicas bounds what the model accepts.
      if (summary.max_model_len == 0 || state->info.max_model_len < summary.max_model_len) {
        summary.max_model_len = state->info.max_model_len;
      }
      if (summary.eos_token_ids.empty()) summary.eos_token_ids = state->info.eos_token_ids;
    }
    if (summary.ready_workers > 0) models.push_back(std::move(summary));
  }
  return models;
}

std::vector<MemberStatus> FleetState::Status(absl::Time now) const {
  std::vector<MemberStatus> members;
  absl::MutexLock lock(&mu_);
  for (const auto& member : members_) {
    const State& state = *states_[member->id()];
    if (state.removed) continue;
    MemberStatus& status = members.emplace_back();
    status.address = member->address();
    status.healthy = state.healthy;
    status.model_id = state.has_info ? state.info.model_id : std::string();
    status.kv_blocks_total = state.has_info ? state.info.kv_blocks_total : 0;
    status.has_load = state.has_load;
    status.load = state.load;
    status.inflight = member->inflight();
    status.cached_blocks = index_.num_exact_blocks(member->id());
    status.detail = state.healthy ? std::string() : state.detail;
    status.circuit = CircuitStateName(state.breaker.state(now));
    status.state_stream = state.watch_synced;
    status.routed_prompt_tokens = state.routed_prompt_tokens;
    status.predicted_cached_tokens = state.predicted_cached_tokens;
    status.reported_cached_tokens = state.reported_cached_tokens;
  }
  return members;
}

bool FleetState::WaitForStreams(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(
                                  +[](const std::vector<std::unique_ptr<State>>* states) {
                                    return std::all_of(
                                        states->begin(), states->end(), [](const auto& s) {
                                          return s->removed || !s->health_ok || s->healthy ||
                                                 s->stalled || s->watch_unimplemented;
                                        });
                                  },
                                  &states_),
                              timeout);
}

}  // namespace tern::router
