// The fleet of workers as the router sees it: their connections, health and
// the model each serves. A health loop thread checks every worker with
// grpc.health.v1 and refreshes its WorkerInfo; PickWorker chooses among the
// healthy ones. Thread-safe: every method may be called from any thread.
#ifndef TERN_ROUTER_FLEET_H_
#define TERN_ROUTER_FLEET_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tern/v1/router.pb.h"
#include "tern/v1/worker.grpc.pb.h"

namespace tern::router {

// One worker endpoint. Constant after construction except the guarded state.
class WorkerEndpoint {
 public:
  explicit WorkerEndpoint(std::string address);

  const std::string& address() const { return address_; }
  tern::v1::Worker::Stub* stub() const { return stub_.get(); }
  grpc::health::v1::Health::Stub* health_stub() const { return health_stub_.get(); }

  bool healthy() const;
  std::string model_id() const;
  tern::v1::WorkerInfo info() const;
  std::string detail() const;
  int inflight() const { return inflight_.load(); }

  void MarkHealthy(const tern::v1::WorkerInfo& info);
  void MarkUnhealthy(const std::string& why);
  void AddInflight(int delta) { inflight_.fetch_add(delta); }

 private:
  const std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<tern::v1::Worker::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_stub_;
  std::atomic<int> inflight_{0};

  mutable absl::Mutex mu_;
  bool healthy_ ABSL_GUARDED_BY(mu_) = false;
  bool has_info_ ABSL_GUARDED_BY(mu_) = false;
  tern::v1::WorkerInfo info_ ABSL_GUARDED_BY(mu_);
  std::string detail_ ABSL_GUARDED_BY(mu_) = "not checked yet";
};

struct FleetOptions {
  std::vector<std::string> worker_addresses;
  std::chrono::milliseconds health_interval{1000};
  std::chrono::milliseconds health_timeout{1000};
};

class Fleet {
 public:
  explicit Fleet(FleetOptions options);
  ~Fleet();  // stops and joins the health loop

  // Starts the health loop; the first round runs before Start returns.
  void Start();

  // The next healthy worker serving `model`, round-robin, skipping those in
  // `exclude`. NOT_FOUND when no configured worker ever served the model,
  // UNAVAILABLE when none of them is healthy now.
  absl::StatusOr<WorkerEndpoint*> PickWorker(const std::string& model,
                                             const std::vector<WorkerEndpoint*>& exclude);

  // Models served by healthy workers.
  tern::v1::ListModelsResponse ListModels() const;
  tern::v1::ClusterStateResponse ClusterState() const;

  // Runs one health round now (tests and the first round).
  void CheckAll();

 private:
  void CheckOne(WorkerEndpoint& worker);
  void HealthLoop();

  const FleetOptions options_;
  std::vector<std::unique_ptr<WorkerEndpoint>> workers_;  // constant after construction
  std::atomic<size_t> next_{0};

  absl::Notification stopping_;
  mutable absl::Mutex mu_;
  // First time each model was seen (ModelCard.created).
  std::vector<std::pair<std::string, int64_t>> model_created_ ABSL_GUARDED_BY(mu_);
  std::thread health_thread_;
};

}  // namespace tern::router

#endif  // TERN_ROUTER_FLEET_H_
