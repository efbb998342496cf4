#include "router/fleet.h"

#include <algorithm>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace tern::router {

WorkerEndpoint::WorkerEndpoint(std::string address) : address_(std::move(address)) {
  grpc::ChannelArguments args;
  // Reconnect quickly after a worker restarts; health checks drive the rest.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetMaxReceiveMessageSize(64 << 20);
  channel_ = grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args);
  stub_ = tern::v1::Worker::NewStub(channel_);
  health_stub_ = grpc::health::v1::Health::NewStub(channel_);
}

bool WorkerEndpoint::healthy() const {
  absl::MutexLock lock(&mu_);
  return healthy_;
}

std::string WorkerEndpoint::model_id() const {
  absl::MutexLock lock(&mu_);
  return has_info_ ? info_.model_id() : std::string();
}

tern::v1::WorkerInfo WorkerEndpoint::info() const {
  absl::MutexLock lock(&mu_);
  return info_;
}

std::string WorkerEndpoint::detail() const {
  absl::MutexLock lock(&mu_);
  return detail_;
}

void WorkerEndpoint::MarkHealthy(const tern::v1::WorkerInfo& info) {
  absl::MutexLock lock(&mu_);
  if (!healthy_)
    TERN_LOG(Info) << "worker " << address_ << " is healthy (model " << info.model_id() << ")";
  healthy_ = true;
  has_info_ = true;
  info_ = info;
  detail_.clear();
}

void WorkerEndpoint::MarkUnhealthy(const std::string& why) {
  absl::MutexLock lock(&mu_);
  if (healthy_) TERN_LOG(Warning) << "worker " << address_ << " is unhealthy: " << why;
  healthy_ = false;
  detail_ = why;
}

Fleet::Fleet(FleetOptions options) : options_(std::move(options)) {
  for (const std::string& address : options_.worker_addresses) {
    workers_.push_back(std::make_unique<WorkerEndpoint>(address));
  }
}

Fleet::~Fleet() {
  stopping_.Notify();
  if (health_thread_.joinable()) health_thread_.join();
}

void Fleet::Start() {
  CheckAll();
  health_thread_ = std::thread([this] { HealthLoop(); });
}

void Fleet::HealthLoop() {
  const absl::Duration interval = absl::Milliseconds(options_.health_interval.count());
  while (!stopping_.WaitForNotificationWithTimeout(interval)) CheckAll();
}

void Fleet::CheckAll() {
  // Workers are checked one after another with a short deadline each, so a
  // stuck worker delays the round by at most health_timeout.
  for (auto& worker : workers_) CheckOne(*worker);
}

void Fleet::CheckOne(WorkerEndpoint& worker) {
  const auto deadline = std::chrono::system_clock::now() + options_.health_timeout;
  grpc::ClientContext health_ctx;
  health_ctx.set_deadline(deadline);
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = worker.health_stub()->Check(&health_ctx, request, &response);
  if (!status.ok()) {
    worker.MarkUnhealthy(absl::StrCat("health check failed: ", status.error_message()));
    return;
  }
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    worker.MarkUnhealthy("not serving yet");
    return;
  }
  grpc::ClientContext info_ctx;
  info_ctx.set_deadline(deadline);
  tern::v1::WorkerInfo info;
  status = worker.stub()->Info(&info_ctx, tern::v1::InfoRequest(), &info);
  if (!status.ok()) {
    worker.MarkUnhealthy(absl::StrCat("Info failed: ", status.error_message()));
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    auto it = std::find_if(model_created_.begin(), model_created_.end(),
                           [&](const auto& p) { return p.first == info.model_id(); });
    if (it == model_created_.end())
      model_created_.emplace_back(info.model_id(), std::time(nullptr));
  }
  worker.MarkHealthy(info);
}

absl::StatusOr<WorkerEndpoint*> Fleet::PickWorker(const std::string& model,
                                                  const std::vector<WorkerEndpoint*>& exclude) {
  bool known = false;
  const size_t n = workers_.size();
  const size_t start = next_.fetch_add(1);
  for (size_t i = 0; i < n; ++i) {
    WorkerEndpoint* worker = workers_[(start + i) % n].get();
    if (worker->model_id() != model) continue;
    known = true;
    if (!worker->healthy()) continue;
    if (std::find(exclude.begin(), exclude.end(), worker) != exclude.end()) continue;
    return worker;
  }
  if (!known) {
    return absl::NotFoundError(absl::StrCat("no worker serves model '", model, "'"));
  }
  return absl::UnavailableError(absl::StrCat("no healthy worker for model '", model, "'"));
}

tern::v1::ListModelsResponse Fleet::ListModels() const {
  tern::v1::ListModelsResponse response;
  std::vector<std::pair<std::string, int64_t>> created;
  {
    absl::MutexLock lock(&mu_);
    created = model_created_;
  }
  for (const auto& [model, when] : created) {
    tern::v1::ModelCard card;
    card.set_id(model);
    card.set_created(when);
    for (const auto& worker : workers_) {
      if (worker->model_id() != model || !worker->healthy()) continue;
      const tern::v1::WorkerInfo info = worker->info();
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
  for (const auto& worker : workers_) {
    tern::v1::WorkerStatus* status = response.add_workers();
    status->set_address(worker->address());
    status->set_healthy(worker->healthy());
    status->set_model_id(worker->model_id());
    status->set_inflight(worker->inflight());
    status->set_detail(worker->detail());
  }
  return response;
}

}  // namespace tern::router
