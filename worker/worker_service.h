// tern.v1.Worker over one engine of any kind (ServingEngine): Generate streams the engine's events
// to the caller; Info describes the model; WatchState pushes load and KV-cache events. Reactions
// only validate, enqueue and return; the engine thread pushes Generate responses, and each
// WatchState call has a thread of its own that waits on the engine's subscription. Any thread may
// call it.
#ifndef TERN_WORKER_WORKER_SERVICE_H_
#define TERN_WORKER_WORKER_SERVICE_H_

#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "tern/v1/worker.grpc.pb.h"
#include "worker/engine/serving_engine.h"

namespace tern::worker {

struct WorkerIdentity {
  std::string model_id;
  std::string version;
};

class WatchStateReactor;

class WorkerService final : public tern::v1::Worker::CallbackService {
 public:
  // `engine` must outlive the service.
  WorkerService(ServingEngine* engine, WorkerIdentity identity)
      : engine_(engine), identity_(std::move(identity)) {}
  // Ends the open WatchState streams (as StopWatchers) and waits for their
  // threads; the gRPC server must be shut down first or at the same time.
  ~WorkerService() override;

  grpc::ServerWriteReactor<tern::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const tern::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext* context,
                                 const tern::v1::InfoRequest* request,
                                 tern::v1::WorkerInfo* response) override;
  // The first message carries the load and a snapshot of the prefix cache
  // (AllBlocksCleared, then every cached block as BlockStored); later ones
  // carry what changed, coalesced while the previous write is in flight. The
  // stream ends with CANCELLED when the client cancels, UNAVAILABLE when the
  // engine stops or StopWatchers is called.
  grpc::ServerWriteReactor<tern::v1::WorkerState>* WatchState(
      grpc::CallbackServerContext* context, const tern::v1::WatchStateRequest* request) override;

  // Ends every WatchState stream with UNAVAILABLE and refuses new ones.
  // WatchState streams never end on their own, so call this before
  // grpc::Server::Shutdown, which would otherwise wait its whole deadline for
  // them. Returns at once; the streams finish on their own threads.
  void StopWatchers();

  // Open WatchState streams (tests and metrics).
  int watchers() const;

 private:
  friend class WatchStateReactor;
  void Unregister(WatchStateReactor* reactor);

  ServingEngine* const engine_;
  const WorkerIdentity identity_;

  mutable absl::Mutex mu_;
  absl::flat_hash_set<WatchStateReactor*> watchers_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

// Converts a request to the engine's plain spec; INVALID_ARGUMENT names the
// field that cannot be honoured.
absl::StatusOr<SequenceSpec> SpecFromRequest(const tern::v1::GenerateRequest& request);

// The constraint's plain form (kind kNone when none is set).
structured::ConstraintSpec ConstraintFromProto(const tern::v1::OutputConstraint& constraint);

// Converts one engine KV event to its wire form.
tern::v1::KvEvent KvEventToProto(const KvEvent& event);

}  // namespace tern::worker

#endif  // TERN_WORKER_WORKER_SERVICE_H_
