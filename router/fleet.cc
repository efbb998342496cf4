#include "router/fleet.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace tern::router {
namespace {

// The service edge: proto messages become the core's plain values here.
std::vector<KvEvent> FromProto(
    const google::protobuf::RepeatedPtrField<tern::v1::KvEvent>& messages) {
  std::vector<KvEvent> events;
  events.reserve(messages.size());
  for (const tern::v1::KvEvent& m : messages) {
    KvEvent& e = events.emplace_back();
    e.sequence_number = m.sequence_number();
    switch (m.event_case()) {
      case tern::v1::KvEvent::kStored:
        e.kind = KvEvent::Kind::kStored;
        e.block_hashes.assign(m.stored().block_hashes().begin(), m.stored().block_hashes().end());
        break;
      case tern::v1::KvEvent::kRemoved:
        e.kind = KvEvent::Kind::kRemoved;
        e.block_hashes.assign(m.removed().block_hashes().begin(), m.removed().block_hashes().end());
        break;
      case tern::v1::KvEvent::kCleared:
        e.kind = KvEvent::Kind::kCleared;
        break;
      case tern::v1::KvEvent::EVENT_NOT_SET:
        break;
    }
  }
  return events;
}

WorkerLoad FromProto(const tern::v1::WorkerLoad& m) {
  WorkerLoad load;
  load.running_seqs = m.running_seqs();
  load.waiting_seqs = m.waiting_seqs();
  load.free_kv_blocks = m.free_kv_blocks();
  load.queued_prefill_tokens = m.queued_prefill_tokens();
  load.step_counter = m.step_counter();
  load.step_running = m.step_running();
  load.expected_step_ms = m.expected_step_ms();
  return load;
}

WorkerInfo FromProto(const tern::v1::WorkerInfo& m) {
  WorkerInfo info;
  info.model_id = m.model_id();
  info.max_model_len = m.max_model_len();
  info.kv_block_size = m.kv_block_size() > 0 ? m.kv_block_size() : 16;
  info.max_num_seqs = m.max_num_seqs();
  info.kv_blocks_total = m.kv_blocks_total();
  info.eos_token_ids.assign(m.eos_token_ids().begin(), m.eos_token_ids().end());
  return info;
}

tern::v1::WorkerLoad ToProto(const WorkerLoad& load) {
  tern::v1::WorkerLoad m;
  m.set_running_seqs(load.running_seqs);
  m.set_waiting_seqs(load.waiting_seqs);
  m.set_free_kv_blocks(load.free_kv_blocks);
  m.set_queued_prefill_tokens(load.queued_prefill_tokens);
  m.set_step_counter(load.step_counter);
  m.set_step_running(load.step_running);
  m.set_expected_step_ms(load.expected_step_ms);
  return m;
}

}  // namespace

// A member's channel and stubs; created when the address first joins.
struct Fleet::Connection {
  Connection(const std::string& address, const ChannelSecurity& security) {
    grpc::ChannelArguments args;
    // Reconnect quickly after a worker restarts; health checks drive the rest.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    args.SetMaxReceiveMessageSize(64 << 20);
    channel = security.CreateChannel(address, args);
    stub = tern::v1::Worker::NewStub(channel);
    health_stub = grpc::health::v1::Health::NewStub(channel);
  }

  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<tern::v1::Worker::Stub> stub;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_stub;
};

// Probes over gRPC, asynchronously: Health.Check, then Worker.Info, both
// bounded by the probe's deadline. Counts its calls so Stop can wait for them.
class Fleet::GrpcProber : public HealthProber {
 public:
  explicit GrpcProber(Fleet* fleet) : fleet_(fleet) {}

  void Probe(const FleetMember& worker, absl::Time deadline,
             std::function<void(HealthReport)> done) override {
    auto* call = new Call;
    call->done = std::move(done);
    {
      absl::MutexLock lock(&fleet_->mu_);
      const Connection& connection = *fleet_->connections_[worker.id()];
      call->health_stub = connection.health_stub.get();
      call->stub = connection.stub.get();
    }
    call->deadline = absl::ToChronoTime(deadline);
    {
      absl::MutexLock lock(&mu_);
      ++live_;
    }
    call->health_context.set_deadline(call->deadline);
    call->health_stub->async()->Check(
        &call->health_context, &call->health_request, &call->health_response,
        [this, call](grpc::Status status) { OnHealth(call, status); });
  }

  void WaitIdle() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](int* live) { return *live == 0; }, &live_));
  }

 private:
  struct Call {
    std::function<void(HealthReport)> done;
    grpc::health::v1::Health::Stub* health_stub = nullptr;
    tern::v1::Worker::Stub* stub = nullptr;
    std::chrono::system_clock::time_point deadline;
    grpc::ClientContext health_context;
    grpc::health::v1::HealthCheckRequest health_request;
    grpc::health::v1::HealthCheckResponse health_response;
    grpc::ClientContext info_context;
    tern::v1::InfoRequest info_request;
    tern::v1::WorkerInfo info_response;
  };

  void OnHealth(Call* call, const grpc::Status& status) {
    HealthReport report;
    if (!status.ok()) {
      report.failure = absl::StrCat("health check failed: ", status.error_message());
    } else if (call->health_response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
      report.draining = true;
      report.failure = "not serving (draining)";
    } else {
      call->info_context.set_deadline(call->deadline);
      call->stub->async()->Info(&call->info_context, &call->info_request, &call->info_response,
                                [this, call](grpc::Status status) { OnInfo(call, status); });
      return;
    }
    End(call, report);
  }

  void OnInfo(Call* call, const grpc::Status& status) {
    HealthReport report;
    if (status.ok()) {
      report.serving = true;
      report.info = FromProto(call->info_response);
    } else {
      report.failure = absl::StrCat("Info failed: ", status.error_message());
    }
    End(call, report);
  }

  void End(Call* call, const HealthReport& report) {
    call->done(report);
    delete call;
    absl::MutexLock lock(&mu_);
    --live_;
  }

  Fleet* const fleet_;
  absl::Mutex mu_;
  int live_ ABSL_GUARDED_BY(mu_) = 0;
};

// A WatchState stream. It owns itself from Start until OnDone; the fleet
// keeps a shared reference while it is the worker's current stream.
class Fleet::WatchStream : public grpc::ClientReadReactor<tern::v1::WorkerState>,
                           public std::enable_shared_from_this<Fleet::WatchStream> {
 public:
  WatchStream(Fleet* fleet, FleetMember* worker, tern::v1::Worker::Stub* stub)
      : fleet_(fleet), worker_(worker), stub_(stub) {}

  void Start() {
    self_ = shared_from_this();
    stub_->async()->WatchState(&context_, &request_, this);
    StartRead(&message_);
    StartCall();
  }
  void Cancel() { context_.TryCancel(); }
  FleetMember* worker() const { return worker_; }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows with the status
    fleet_->OnWatchMessage(*worker_, message_);
    StartRead(&message_);
  }
  void OnDone(const grpc::Status& status) override {
    std::shared_ptr<WatchStream> keep = std::move(self_);
    fleet_->OnWatchDone(this, status);
  }

 private:
  Fleet* const fleet_;
  FleetMember* const worker_;
  tern::v1::Worker::Stub* const stub_;
  grpc::ClientContext context_;
  tern::v1::WatchStateRequest request_;
  tern::v1::WorkerState message_;
  std::shared_ptr<WatchStream> self_;
};

Fleet::Fleet(FleetOptions options)
    : options_(std::move(options)),
      clock_(Clock::Real()),
      state_(FleetStateOptions{.stall_timeout = options_.stall_timeout,
                               .stall_step_factor = options_.stall_step_factor,
                               .breaker = options_.breaker,
                               .index = options_.index}),
      membership_(MembershipOptions{.worker_addresses = options_.worker_addresses,
                                    .dns_refresh = options_.dns_refresh,
                                    .registration_lease = options_.registration_lease}),
      prober_(std::make_unique<GrpcProber>(this)),
      health_(&state_, prober_.get(), clock_,
              HealthCheckOptions{.interval = absl::FromChrono(options_.health_interval),
                                 .timeout = absl::FromChrono(options_.health_timeout)},
              [this](FleetMember& worker, FleetEffects effects) {
                Apply(&worker, std::move(effects));
              }) {}

Fleet::~Fleet() { Stop(); }

tern::v1::Worker::Stub* Fleet::stub(const FleetMember& worker) const {
  absl::MutexLock lock(&mu_);
  return connections_[worker.id()]->stub.get();
}

absl::StatusOr<absl::Duration> Fleet::Register(const std::string& address, absl::Time now) {
  return membership_.Register(address, now);
}

void Fleet::RefreshMembership(bool force_dns) {
  const std::vector<std::string> desired = membership_.Desired(clock_->Now(), force_dns);
  const FleetState::Reconciled change = state_.Reconcile(desired);
  {
    absl::MutexLock lock(&mu_);
    for (FleetMember* worker : change.added) {
      const auto id = static_cast<size_t>(worker->id());
      if (connections_.size() <= id) {
        connections_.resize(id + 1);
        streams_.resize(id + 1);
      }
      if (connections_[id] == nullptr) {
        connections_[id] = std::make_unique<Connection>(worker->address(), options_.security);
      }
    }
  }
  // Its calls in flight run on: they end, or fail over, as on any worker.
  for (FleetMember* worker : change.removed) CancelStream(*worker);
  for (FleetMember* worker : change.added) health_.CheckNow(*worker);
}

void Fleet::Start() {
  RefreshMembership(/*force_dns=*/true);
  const absl::Duration timeout = absl::FromChrono(options_.health_timeout);
  health_.WaitIdle(timeout + absl::Milliseconds(100));
  state_.WaitForStreams(timeout);
  loop_thread_ = std::thread([this] { Loop(); });
}

void Fleet::Stop() {
  if (!stopping_.HasBeenNotified()) stopping_.Notify();
  if (loop_thread_.joinable()) loop_thread_.join();
  // Probes end by their deadlines; their results may still start streams
  // until then (MaybeWatch refuses once stopping), so wait for them first.
  prober_->WaitIdle();
  std::vector<std::shared_ptr<WatchStream>> streams;
  {
    absl::MutexLock lock(&mu_);
    for (auto& stream : streams_) {
      if (stream != nullptr) streams.push_back(stream);
    }
  }
  for (auto& stream : streams) stream->Cancel();
  // The streams call back into the fleet until their OnDone.
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* live) { return *live == 0; }, &live_streams_));
}

void Fleet::Loop() {
  while (!stopping_.WaitForNotificationWithTimeout(options_.tick_interval)) {
    RefreshMembership(/*force_dns=*/false);
    Apply(nullptr, state_.CheckProgress(clock_->Now()));
    health_.Tick();
    Notify();
  }
}

void Fleet::Notify() const {
  if (listener_ && !stopping_.HasBeenNotified()) listener_();
}

void Fleet::Apply(FleetMember* worker, FleetEffects effects) {
  for (auto& call : effects.lost) call->AbortWorkerLost();
  if (worker != nullptr && effects.cancel_stream) CancelStream(*worker);
  if (worker != nullptr && effects.watch) MaybeWatch(*worker);
  if (effects.may_have_room) Notify();
}

void Fleet::CancelStream(const FleetMember& worker) {
  std::shared_ptr<WatchStream> stream;
  {
    absl::MutexLock lock(&mu_);
    stream = streams_[worker.id()];
  }
  if (stream != nullptr) stream->Cancel();
}

void Fleet::MaybeWatch(FleetMember& worker) {
  std::shared_ptr<WatchStream> stream;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_.HasBeenNotified() || !state_.StartStream(worker)) return;
    stream = std::make_shared<WatchStream>(this, &worker, connections_[worker.id()]->stub.get());
    streams_[worker.id()] = stream;
    ++live_streams_;
  }
  stream->Start();
}

void Fleet::OnWatchMessage(FleetMember& worker, const tern::v1::WorkerState& message) {
  const std::vector<KvEvent> events = FromProto(message.kv_events());
  Apply(&worker, state_.OnStateMessage(worker, FromProto(message.load()), events, clock_->Now()));
}

void Fleet::OnWatchDone(WatchStream* stream, const grpc::Status& status) {
  FleetMember& worker = *stream->worker();
  {
    absl::MutexLock lock(&mu_);
    if (streams_[worker.id()].get() == stream) streams_[worker.id()].reset();
  }
  Apply(&worker,
        state_.OnStreamEnded(worker, status.error_code() == grpc::StatusCode::UNIMPLEMENTED,
                             status.error_message(), clock_->Now()));
  absl::MutexLock lock(&mu_);
  --live_streams_;
}

tern::v1::ListModelsResponse Fleet::ListModels() const {
  tern::v1::ListModelsResponse response;
  for (const ModelSummary& model : state_.Models()) {
    tern::v1::ModelCard* card = response.add_models();
    card->set_id(model.id);
    card->set_created(model.created);
    card->set_ready_workers(model.ready_workers);
    card->set_max_model_len(model.max_model_len);
    card->mutable_eos_token_ids()->Add(model.eos_token_ids.begin(), model.eos_token_ids.end());
  }
  return response;
}

tern::v1::ClusterStateResponse Fleet::ClusterState() const {
  tern::v1::ClusterStateResponse response;
  for (const MemberStatus& member : state_.Status(clock_->Now())) {
    tern::v1::WorkerStatus* status = response.add_workers();
    status->set_address(member.address);
    status->set_healthy(member.healthy);
    status->set_model_id(member.model_id);
    status->set_kv_blocks_total(member.kv_blocks_total);
    if (member.has_load) *status->mutable_load() = ToProto(member.load);
    status->set_inflight(member.inflight);
    status->set_cached_blocks(member.cached_blocks);
    status->set_detail(member.detail);
    status->set_circuit(member.circuit);
    status->set_state_stream(member.state_stream);
    status->set_routed_prompt_tokens(member.routed_prompt_tokens);
    status->set_predicted_cached_tokens(member.predicted_cached_tokens);
    status->set_reported_cached_tokens(member.reported_cached_tokens);
  }
  response.set_index_resyncs(state_.index_stats().resyncs);
  return response;
}

}  // namespace tern::router
