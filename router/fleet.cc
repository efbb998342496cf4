#include "router/fleet.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <ctime>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/block_hash.h"
#include "common/log.h"

namespace tern::router {

WorkerEndpoint::WorkerEndpoint(WorkerId id, std::string address)
    : id_(id), address_(std::move(address)) {
  grpc::ChannelArguments args;
  // Reconnect quickly after a worker restarts; health checks drive the rest.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetMaxReceiveMessageSize(64 << 20);
  channel_ = grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args);
  stub_ = tern::v1::Worker::NewStub(channel_);
  health_stub_ = grpc::health::v1::Health::NewStub(channel_);
}

namespace {

constexpr absl::string_view kDnsPrefix = "dns:";

// Splits "HOST:PORT" at its last colon; false unless both parts are there and
// the port is a number.
bool SplitHostPort(absl::string_view address, absl::string_view* host, absl::string_view* port) {
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return false;
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  int port_number = 0;
  return absl::SimpleAtoi(*port, &port_number) && port_number > 0 && port_number < 65536;
}

}  // namespace

MembershipDiff DiffMembership(absl::Span<const std::string> current,
                              absl::Span<const std::string> desired) {
  const absl::flat_hash_set<std::string> have(current.begin(), current.end());
  const absl::flat_hash_set<std::string> want(desired.begin(), desired.end());
  MembershipDiff diff;
  absl::flat_hash_set<std::string> seen;
  for (const std::string& address : desired) {
    if (!have.contains(address) && seen.insert(address).second) diff.added.push_back(address);
  }
  seen.clear();
  for (const std::string& address : current) {
    if (!want.contains(address) && seen.insert(address).second) diff.removed.push_back(address);
  }
  return diff;
}

absl::StatusOr<std::vector<std::string>> ResolveWorkerAddresses(absl::string_view name_and_port) {
  absl::string_view name;
  absl::string_view port;
  if (!SplitHostPort(name_and_port, &name, &port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker address \"dns:", name_and_port, "\" is not dns:NAME:PORT"));
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;  // AF_INET and AF_INET6
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string host(name);
  const std::string service(port);
  if (const int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", name_and_port, ": ", gai_strerror(rc)));
  }
  std::vector<std::string> addresses;
  for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    std::string address;
    if (ai->ai_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(ai->ai_addr);
      if (inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)) == nullptr) continue;
      address = absl::StrCat(text, ":", port);
    } else if (ai->ai_family == AF_INET6) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(ai->ai_addr);
      if (inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text)) == nullptr) continue;
      address = absl::StrCat("[", text, "]:", port);
    } else {
      continue;
    }
    if (std::find(addresses.begin(), addresses.end(), address) == addresses.end()) {
      addresses.push_back(std::move(address));
    }
  }
  freeaddrinfo(found);
  if (addresses.empty()) {
    return absl::UnavailableError(absl::StrCat(name_and_port, " has no IPv4 or IPv6 address"));
  }
  return addresses;
}

const std::vector<uint64_t>& PromptBlocks::For(int32_t block_size) {
  for (const auto& [size, hashes] : by_size_) {
    if (size == block_size) return hashes;
  }
  by_size_.emplace_back(block_size, HashPrefixBlocks(prompt_, std::max(1, block_size)));
  return by_size_.back().second;
}

// A WatchState stream. It owns itself from Start until OnDone; the fleet
// keeps a shared reference while it is the worker's current stream.
class Fleet::WatchStream : public grpc::ClientReadReactor<tern::v1::WorkerState>,
                           public std::enable_shared_from_this<Fleet::WatchStream> {
 public:
  WatchStream(Fleet* fleet, WorkerEndpoint* worker) : fleet_(fleet), worker_(worker) {}

  void Start() {
    self_ = shared_from_this();
    worker_->stub()->async()->WatchState(&context_, &request_, this);
    StartRead(&message_);
    StartCall();
  }
  void Cancel() { context_.TryCancel(); }
  WorkerEndpoint* worker() const { return worker_; }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows with the status
    fleet_->OnWatchMessage(this, message_);
    StartRead(&message_);
  }
  void OnDone(const grpc::Status& status) override {
    std::shared_ptr<WatchStream> keep = std::move(self_);
    fleet_->OnWatchDone(this, status);
  }

  // Guarded by the fleet's lock.
  bool cancelled_for_resync = false;

 private:
  Fleet* const fleet_;
  WorkerEndpoint* const worker_;
  grpc::ClientContext context_;
  tern::v1::WatchStateRequest request_;
  tern::v1::WorkerState message_;
  std::shared_ptr<WatchStream> self_;
};

struct Fleet::State {
  explicit State(CircuitBreakerOptions options) : breaker(options) {}

  bool health_ok = false;
  // The worker answers its health check with NOT_SERVING: it is draining
  // (SIGTERM), takes no new work but finishes what it has.
  bool draining = false;
  bool has_info = false;
  tern::v1::WorkerInfo info;
  std::string detail = "not checked yet";
  std::shared_ptr<WatchStream> watch;  // the current stream, if any
  bool watch_synced = false;           // the current stream delivered its snapshot
  bool watch_unimplemented = false;    // the worker has no WatchState
  bool resync_pending = false;         // replacing the stream after an event gap
  tern::v1::WorkerLoad load;
  bool has_load = false;
  absl::Time progress_at = absl::InfinitePast();
  bool stalled = false;
  bool healthy = false;  // as last computed
  bool removed = false;  // no longer a member (see Membership in fleet.h)
  CircuitBreaker breaker;
  absl::flat_hash_map<uint64_t, std::weak_ptr<WorkerCall>> calls;
  int64_t routed_prompt_tokens = 0;
  int64_t predicted_cached_tokens = 0;
  int64_t reported_cached_tokens = 0;
};

Fleet::Fleet(FleetOptions options) : options_(std::move(options)), index_(options_.index) {
  absl::MutexLock lock(&mu_);
  for (const std::string& address : options_.worker_addresses) {
    if (absl::StartsWith(address, kDnsPrefix)) {
      dns_names_.push_back(address.substr(kDnsPrefix.size()));
    } else if (std::find(static_addresses_.begin(), static_addresses_.end(), address) ==
               static_addresses_.end()) {
      static_addresses_.push_back(address);
      AddWorkerLocked(address);
    }
  }
}

WorkerEndpoint* Fleet::AddWorkerLocked(const std::string& address) {
  for (auto& worker : workers_) {
    if (worker->address() != address) continue;
    // The same address again: its old entry (and id) serves.
    State& state = *states_[worker->id()];
    if (state.removed) {
      state.removed = false;
      state.health_ok = false;
      state.stalled = false;
      state.watch_unimplemented = false;
      state.detail = "not checked yet";
      TERN_LOG(Info) << "worker " << address << " joins the fleet again";
    }
    return worker.get();
  }
  const auto id = static_cast<WorkerId>(workers_.size());
  workers_.push_back(std::make_unique<WorkerEndpoint>(id, address));
  states_.push_back(std::make_unique<State>(options_.breaker));
  return workers_.back().get();
}

std::shared_ptr<Fleet::WatchStream> Fleet::RemoveWorkerLocked(WorkerId id) {
  State& state = *states_[id];
  if (state.removed) return nullptr;
  TERN_LOG(Info) << "worker " << workers_[id]->address() << " leaves the fleet";
  state.removed = true;
  state.health_ok = false;
  state.healthy = false;
  state.detail = "removed from the fleet";
  state.watch_synced = false;
  state.resync_pending = false;
  // Its calls in flight run on: they end, or fail over, as on any worker.
  index_.RemoveWorker(id);
  return std::move(state.watch);
}

absl::StatusOr<absl::Duration> Fleet::Register(const std::string& address, absl::Time now) {
  absl::string_view host;
  absl::string_view port;
  if (!SplitHostPort(address, &host, &port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker address \"", address, "\" is not HOST:PORT"));
  }
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = leases_.try_emplace(address, now);
  if (inserted) TERN_LOG(Info) << "worker " << address << " registers";
  it->second = now + options_.registration_lease;
  return options_.registration_lease;
}

std::vector<WorkerEndpoint*> Fleet::UpdateMembership(absl::Time now, bool resolve_dns) {
  // Resolution may block: it runs without the lock.
  std::vector<std::pair<std::string, std::vector<std::string>>> resolved;
  if (resolve_dns) {
    for (const std::string& name : dns_names_) {
      absl::StatusOr<std::vector<std::string>> addresses = ResolveWorkerAddresses(name);
      if (addresses.ok()) {
        resolved.emplace_back(name, *std::move(addresses));
      } else {
        // A resolver hiccup must not empty the fleet: the last answer stands.
        TERN_LOG(Warning) << addresses.status().message();
      }
    }
  }
  std::vector<WorkerEndpoint*> added;
  std::vector<std::shared_ptr<WatchStream>> to_cancel;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [name, addresses] : resolved) resolved_[name] = std::move(addresses);
    for (auto it = leases_.begin(); it != leases_.end();) {
      if (it->second > now) {
        ++it;
        continue;
      }
      TERN_LOG(Warning) << "worker " << it->first << " did not renew its registration";
      leases_.erase(it++);
    }
    std::vector<std::string> desired = static_addresses_;
    for (const auto& [name, addresses] : resolved_) {
      desired.insert(desired.end(), addresses.begin(), addresses.end());
    }
    for (const auto& [address, until] : leases_) desired.push_back(address);
    std::vector<std::string> current;
    for (const auto& worker : workers_) {
      if (!states_[worker->id()]->removed) current.push_back(worker->address());
    }
    const MembershipDiff diff = DiffMembership(current, desired);
    for (const std::string& address : diff.added) added.push_back(AddWorkerLocked(address));
    for (const std::string& address : diff.removed) {
      for (const auto& worker : workers_) {
        if (worker->address() != address) continue;
        if (auto stream = RemoveWorkerLocked(worker->id())) to_cancel.push_back(std::move(stream));
      }
    }
  }
  for (auto& stream : to_cancel) stream->Cancel();
  return added;
}

void Fleet::RefreshMembership(absl::Time now, bool resolve_dns) {
  for (WorkerEndpoint* worker : UpdateMembership(now, resolve_dns)) CheckOne(*worker);
}

std::vector<WorkerEndpoint*> Fleet::workers() const {
  absl::MutexLock lock(&mu_);
  std::vector<WorkerEndpoint*> members;
  for (const auto& worker : workers_) {
    if (!states_[worker->id()]->removed) members.push_back(worker.get());
  }
  return members;
}

Fleet::~Fleet() { Stop(); }

void Fleet::Stop() {
  if (!stopping_.HasBeenNotified()) stopping_.Notify();
  if (loop_thread_.joinable()) loop_thread_.join();
  std::vector<std::shared_ptr<WatchStream>> streams;
  {
    absl::MutexLock lock(&mu_);
    for (auto& state : states_) {
      if (state->watch != nullptr) streams.push_back(state->watch);
    }
  }
  for (auto& stream : streams) stream->Cancel();
  // The streams call back into the fleet until their OnDone.
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* live) { return *live == 0; }, &live_streams_));
}

void Fleet::Start() {
  UpdateMembership(absl::Now(), /*resolve_dns=*/true);
  next_dns_refresh_ = absl::Now() + options_.dns_refresh;
  CheckAll();
  WaitForStreams(absl::Milliseconds(options_.health_timeout.count()));
  loop_thread_ = std::thread([this] { Loop(); });
}

bool Fleet::WaitForStreams(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(
      absl::Condition(
          +[](std::vector<std::unique_ptr<State>>* states) {
            return std::all_of(states->begin(), states->end(), [](const auto& s) {
              return s->removed || !s->health_ok || s->healthy || s->stalled;
            });
          },
          &states_),
      timeout);
}

void Fleet::Notify() const {
  if (listener_) listener_();
}

void Fleet::Loop() {
  const absl::Duration interval = absl::Milliseconds(options_.health_interval.count());
  absl::Time next_round = absl::Now() + interval;
  while (!stopping_.WaitForNotificationWithTimeout(options_.tick_interval)) {
    const absl::Time now = absl::Now();
    const bool resolve_dns = !dns_names_.empty() && now >= next_dns_refresh_;
    if (resolve_dns) next_dns_refresh_ = now + options_.dns_refresh;
    RefreshMembership(now, resolve_dns);
    CheckProgress(now);
    if (now >= next_round) {
      CheckAll();
      next_round = absl::Now() + interval;
    }
    Notify();
  }
}

void Fleet::CheckAll() {
  // Workers are checked one after another with a short deadline each, so a
  // stuck worker delays the round by at most health_timeout.
  for (WorkerEndpoint* worker : workers()) CheckOne(*worker);
}

void Fleet::CheckOne(WorkerEndpoint& worker) {
  const auto deadline = std::chrono::system_clock::now() + options_.health_timeout;
  std::string failure;
  tern::v1::WorkerInfo info;
  grpc::ClientContext health_ctx;
  health_ctx.set_deadline(deadline);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status =
      worker.health_stub()->Check(&health_ctx, grpc::health::v1::HealthCheckRequest(), &response);
  if (!status.ok()) {
    failure = absl::StrCat("health check failed: ", status.error_message());
  } else if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    failure = "not serving (draining)";
  } else {
    grpc::ClientContext info_ctx;
    info_ctx.set_deadline(deadline);
    status = worker.stub()->Info(&info_ctx, tern::v1::InfoRequest(), &info);
    if (!status.ok()) failure = absl::StrCat("Info failed: ", status.error_message());
  }
  std::vector<std::shared_ptr<WorkerCall>> lost;
  bool healthy = false;
  {
    absl::MutexLock lock(&mu_);
    State& state = *states_[worker.id()];
    state.health_ok = failure.empty();
    state.draining = status.ok() && !failure.empty();
    if (failure.empty()) {
      state.has_info = true;
      state.info = info;
      auto it = std::find_if(model_created_.begin(), model_created_.end(),
                             [&](const auto& p) { return p.first == info.model_id(); });
      if (it == model_created_.end()) {
        model_created_.emplace_back(info.model_id(), std::time(nullptr));
      }
    } else {
      state.detail = failure;
    }
    if (failure.empty() && !state.stalled && !HealthyLocked(state)) {
      state.detail = "waiting for its state stream";
    }
    lost = UpdateHealthLocked(worker.id(), absl::Now());
    healthy = state.healthy;
  }
  for (auto& call : lost) call->AbortWorkerLost();
  MaybeWatch(worker);
  if (healthy) Notify();
}

bool Fleet::HealthyLocked(const State& state) const {
  const bool stream_ok = state.watch_synced || state.watch_unimplemented || state.resync_pending;
  return !state.removed && state.health_ok && state.has_info && stream_ok && !state.stalled;
}

std::vector<std::shared_ptr<WorkerCall>> Fleet::UpdateHealthLocked(WorkerId id, absl::Time now) {
  State& state = *states_[id];
  const bool healthy = HealthyLocked(state);
  std::vector<std::shared_ptr<WorkerCall>> lost;
  if (healthy == state.healthy) return lost;
  state.healthy = healthy;
  const WorkerEndpoint& worker = *workers_[id];
  if (healthy) {
    TERN_LOG(Info) << "worker " << worker.address() << " is healthy (model "
                   << state.info.model_id() << ")";
    state.detail.clear();
    state.progress_at = now;
    return lost;
  }
  TERN_LOG(Warning) << "worker " << worker.address() << " is unhealthy: " << state.detail;
  if (state.draining && !state.stalled && state.watch_synced) {
    // A draining worker still streams its state and finishes its requests:
    // route nothing new to it, but leave its calls running. Should it die
    // before they end, their streams fail and the relay resumes them.
    return lost;
  }
  // What it held may be gone (a restart) and its requests must resume elsewhere.
  index_.RemoveWorker(id);
  for (auto& [registration, weak] : state.calls) {
    if (auto call = weak.lock()) lost.push_back(std::move(call));
  }
  state.calls.clear();
  return lost;
}

void Fleet::MaybeWatch(WorkerEndpoint& worker) {
  std::shared_ptr<WatchStream> stream;
  {
    absl::MutexLock lock(&mu_);
    State& state = *states_[worker.id()];
    if (stopping_.HasBeenNotified() || state.removed || !state.health_ok ||
        state.watch != nullptr || state.watch_unimplemented) {
      return;
    }
    stream = std::make_shared<WatchStream>(this, &worker);
    state.watch = stream;
    state.watch_synced = false;
    ++live_streams_;
  }
  stream->Start();
}

void Fleet::OnWatchMessage(WatchStream* stream, const tern::v1::WorkerState& message) {
  const WorkerId id = stream->worker()->id();
  const absl::Time now = absl::Now();
  std::vector<std::shared_ptr<WorkerCall>> lost;
  std::shared_ptr<WatchStream> to_cancel;
  {
    absl::MutexLock lock(&mu_);
    State& state = *states_[id];
    if (state.watch.get() != stream) return;  // a stream being replaced
    if (!state.watch_synced) {
      // The first message of a stream is a snapshot: start the worker afresh.
      index_.BeginStream(id);
      state.watch_synced = true;
      state.resync_pending = false;
      state.progress_at = now;
    }
    if (!state.has_load || message.load().step_counter() != state.load.step_counter()) {
      state.progress_at = now;
      if (state.stalled) {
        TERN_LOG(Info) << "worker " << stream->worker()->address() << " makes progress again";
        state.stalled = false;
      }
    }
    state.load = message.load();
    state.has_load = true;
    // The index takes a contiguous span; repeated message fields are not one.
    const std::vector<tern::v1::KvEvent> events(message.kv_events().begin(),
                                                message.kv_events().end());
    if (index_.ApplyEvents(id, events) == PrefixIndex::ApplyResult::kResync) {
      TERN_LOG(Warning) << "worker " << stream->worker()->address()
                        << ": KV event gap; subscribing again";
      state.resync_pending = true;
      state.watch_synced = false;
      stream->cancelled_for_resync = true;
      to_cancel = state.watch;
    }
    lost = UpdateHealthLocked(id, now);
  }
  for (auto& call : lost) call->AbortWorkerLost();
  if (to_cancel != nullptr) to_cancel->Cancel();
  Notify();
}

void Fleet::OnWatchDone(WatchStream* stream, const grpc::Status& status) {
  WorkerEndpoint& worker = *stream->worker();
  std::vector<std::shared_ptr<WorkerCall>> lost;
  bool restart = false;
  {
    absl::MutexLock lock(&mu_);
    --live_streams_;
    State& state = *states_[worker.id()];
    if (state.watch.get() == stream) {
      state.watch.reset();
      state.watch_synced = false;
      restart = stream->cancelled_for_resync && !stopping_.HasBeenNotified();
      if (!restart) {
        state.resync_pending = false;
        if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
          TERN_LOG(Warning) << "worker " << worker.address()
                            << " publishes no state; routing from the router's own history";
          state.watch_unimplemented = true;
        } else {
          state.detail = absl::StrCat("state stream ended: ", status.error_message());
        }
      }
      lost = UpdateHealthLocked(worker.id(), absl::Now());
    }
  }
  for (auto& call : lost) call->AbortWorkerLost();
  if (restart) MaybeWatch(worker);
}

void Fleet::CheckProgress(absl::Time now) {
  for (WorkerEndpoint* worker : workers()) {
    std::vector<std::shared_ptr<WorkerCall>> lost;
    {
      absl::MutexLock lock(&mu_);
      State& state = *states_[worker->id()];
      if (state.removed || !state.watch_synced) continue;
      const bool has_work =
          state.load.running_seqs() + state.load.waiting_seqs() > 0 || worker->inflight() > 0;
      if (!has_work) {
        state.progress_at = now;
        continue;
      }
      if (state.stalled || now - state.progress_at <= options_.stall_timeout) continue;
      state.stalled = true;
      state.detail = absl::StrCat("engine made no progress for ",
                                  absl::FormatDuration(now - state.progress_at), " with work");
      lost = UpdateHealthLocked(worker->id(), now);
    }
    for (auto& call : lost) call->AbortWorkerLost();
  }
}

absl::StatusOr<std::vector<Candidate>> Fleet::Candidates(const std::string& model,
                                                         PromptBlocks& prompt,
                                                         absl::Span<WorkerEndpoint* const> exclude,
                                                         absl::Time now) {
  std::vector<Candidate> candidates;
  bool known = false;
  absl::MutexLock lock(&mu_);
  std::vector<std::pair<int32_t, std::vector<int32_t>>> matched_by_size;
  for (auto& worker : workers_) {
    const State& state = *states_[worker->id()];
    if (state.removed || !state.has_info || state.info.model_id() != model) continue;
    known = true;
    if (!state.healthy || !state.breaker.WouldAllow(now)) continue;
    if (std::find(exclude.begin(), exclude.end(), worker.get()) != exclude.end()) continue;
    Candidate c;
    c.worker = worker.get();
    c.max_num_seqs = std::max(1, state.info.max_num_seqs());
    c.block_size = state.info.kv_block_size() > 0 ? state.info.kv_block_size() : 16;
    c.view.running = state.load.running_seqs();
    c.view.waiting = state.load.waiting_seqs();
    c.view.queued_prefill_tokens = state.load.queued_prefill_tokens();
    c.view.inflight = worker->inflight();
    const int64_t total = state.info.kv_blocks_total();
    if (total > 0 && state.has_load) {
      c.view.kv_usage = 1.0 - static_cast<double>(state.load.free_kv_blocks()) / total;
    }
    auto it = std::find_if(matched_by_size.begin(), matched_by_size.end(),
                           [&](const auto& p) { return p.first == c.block_size; });
    if (it == matched_by_size.end()) {
      std::vector<int32_t> matched(workers_.size(), 0);
      index_.MatchPrefix(prompt.For(c.block_size), now, &matched);
      matched_by_size.emplace_back(c.block_size, std::move(matched));
      it = std::prev(matched_by_size.end());
    }
    c.view.matched_blocks = it->second[worker->id()];
    candidates.push_back(c);
  }
  if (!known) return absl::NotFoundError(absl::StrCat("no worker serves model '", model, "'"));
  if (candidates.empty()) {
    return absl::UnavailableError(absl::StrCat("no healthy worker for model '", model, "'"));
  }
  return candidates;
}

int32_t Fleet::MatchedBlocks(const WorkerEndpoint& worker, PromptBlocks& prompt, absl::Time now) {
  absl::MutexLock lock(&mu_);
  const State& state = *states_[worker.id()];
  const int32_t block_size = state.info.kv_block_size() > 0 ? state.info.kv_block_size() : 16;
  std::vector<int32_t> matched(workers_.size(), 0);
  index_.MatchPrefix(prompt.For(block_size), now, &matched);
  return matched[worker.id()];
}

void Fleet::OnRouted(const WorkerEndpoint& worker, PromptBlocks& prompt, absl::Time now) {
  absl::MutexLock lock(&mu_);
  State& state = *states_[worker.id()];
  const int32_t block_size = state.info.kv_block_size() > 0 ? state.info.kv_block_size() : 16;
  index_.RecordRouted(worker.id(), prompt.For(block_size), now);
  state.breaker.AllowCall(now);
}

void Fleet::OnCallResult(const WorkerEndpoint& worker, bool ok, bool worker_fault) {
  absl::MutexLock lock(&mu_);
  CircuitBreaker& breaker = states_[worker.id()]->breaker;
  if (ok) {
    breaker.RecordSuccess();
  } else if (worker_fault) {
    const absl::Time now = absl::Now();
    const bool was_open = breaker.state(now) == CircuitBreaker::State::kOpen;
    breaker.RecordFailure(now);
    if (!was_open && breaker.state(now) == CircuitBreaker::State::kOpen) {
      TERN_LOG(Warning) << "worker " << worker.address() << ": circuit open after "
                        << breaker.consecutive_failures() << " failed calls";
    }
  }
}

void Fleet::OnPrefixReport(const WorkerEndpoint& worker, int64_t prompt_tokens,
                           int64_t predicted_cached, int64_t reported_cached) {
  absl::MutexLock lock(&mu_);
  State& state = *states_[worker.id()];
  state.routed_prompt_tokens += prompt_tokens;
  state.predicted_cached_tokens += predicted_cached;
  state.reported_cached_tokens += reported_cached;
}

uint64_t Fleet::RegisterCall(const WorkerEndpoint& worker, std::weak_ptr<WorkerCall> call) {
  absl::MutexLock lock(&mu_);
  const uint64_t registration = next_registration_++;
  states_[worker.id()]->calls.emplace(registration, std::move(call));
  return registration;
}

void Fleet::UnregisterCall(const WorkerEndpoint& worker, uint64_t registration) {
  absl::MutexLock lock(&mu_);
  states_[worker.id()]->calls.erase(registration);
}

bool Fleet::healthy(const WorkerEndpoint& worker) const {
  absl::MutexLock lock(&mu_);
  return states_[worker.id()]->healthy;
}

PrefixIndexStats Fleet::index_stats() const {
  absl::MutexLock lock(&mu_);
  return index_.stats();
}

tern::v1::ListModelsResponse Fleet::ListModels() const {
  tern::v1::ListModelsResponse response;
  absl::MutexLock lock(&mu_);
  for (const auto& [model, when] : model_created_) {
    tern::v1::ModelCard card;
    card.set_id(model);
    card.set_created(when);
    for (const auto& state : states_) {
      if (state->removed || !state->healthy || state->info.model_id() != model) continue;
      const tern::v1::WorkerInfo& info = state->info;
      card.set_ready_workers(card.ready_workers() + 1);
      // The smallest context among replicas bounds what the model accepts.
      if (card.max_model_len() == 0 || info.max_model_len() < card.max_model_len()) {
        card.set_max_model_len(info.max_model_len());
      }
      if (card.eos_token_ids().empty()) *card.mutable_eos_token_ids() = info.eos_token_ids();
    }
    if (card.ready_workers() > 0) *response.add_models() = card;
  }
  return response;
}

tern::v1::ClusterStateResponse Fleet::ClusterState() const {
  tern::v1::ClusterStateResponse response;
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  for (const auto& worker : workers_) {
    const State& state = *states_[worker->id()];
    if (state.removed) continue;
    tern::v1::WorkerStatus* status = response.add_workers();
    status->set_address(worker->address());
    status->set_healthy(state.healthy);
    status->set_model_id(state.has_info ? state.info.model_id() : std::string());
    if (state.has_load) *status->mutable_load() = state.load;
    status->set_inflight(worker->inflight());
    status->set_cached_blocks(index_.num_exact_blocks(worker->id()));
    status->set_detail(state.healthy ? std::string() : state.detail);
    status->set_circuit(CircuitStateName(state.breaker.state(now)));
    status->set_state_stream(state.watch_synced);
    status->set_routed_prompt_tokens(state.routed_prompt_tokens);
    status->set_predicted_cached_tokens(state.predicted_cached_tokens);
    status->set_reported_cached_tokens(state.reported_cached_tokens);
  }
  response.set_index_resyncs(index_.stats().resyncs);
  return response;
}

}  // namespace tern::router
