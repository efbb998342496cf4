// tern.v1.Worker over one Engine: Generate streams the engine's events to the
// caller; Info describes the model. Reactions only validate, enqueue and
// return; the engine thread pushes responses. Any thread may call it.
#ifndef TERN_WORKER_WORKER_SERVICE_H_
#define TERN_WORKER_WORKER_SERVICE_H_

#include <string>

#include "tern/v1/worker.grpc.pb.h"
#include "worker/engine.h"

namespace tern::worker {

struct WorkerIdentity {
  std::string model_id;
  int32_t kv_block_size = 16;
  std::string version;
};

class WorkerService final : public tern::v1::Worker::CallbackService {
 public:
  // `engine` and `model` must outlive the service.
  WorkerService(Engine* engine, const Model* model, WorkerIdentity identity)
      : engine_(engine), model_(model), identity_(std::move(identity)) {}

  grpc::ServerWriteReactor<tern::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const tern::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext* context,
                                 const tern::v1::InfoRequest* request,
                                 tern::v1::WorkerInfo* response) override;

 private:
  Engine* const engine_;
  const Model* const model_;
  const WorkerIdentity identity_;
};

// Converts a request to the engine's plain spec; INVALID_ARGUMENT names the
// field that cannot be honoured.
absl::StatusOr<SequenceSpec> SpecFromRequest(const tern::v1::GenerateRequest& request);

}  // namespace tern::worker

#endif  // TERN_WORKER_WORKER_SERVICE_H_
