// The served model (constant) plus what the router says about it (changing):
// whether the router lists it, its max_model_len and EOS ids, and how many
// workers are ready. A background thread refreshes the router's view with
// ListModels; /health is 200 only while at least one worker is ready.
//
// Thread-safe: model() is immutable; RouterView()/Resolve() take a short lock
// and may be called from io threads; Start/Stop from the owning thread.
#ifndef TERN_GATEWAY_MODEL_REGISTRY_H_
#define TERN_GATEWAY_MODEL_REGISTRY_H_

#include <cstdint>
#include <memory>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gateway/openai/served_model.h"
#include "gateway/router_client.h"

namespace tern::gateway {

struct RouterModelView {
  bool router_answered = false;   // some ListModels call succeeded
  bool router_reachable = false;  // the latest ListModels call succeeded
  bool listed = false;            // the router lists the served model
  int32_t max_model_len = 0;
  int32_t ready_workers = 0;
  int64_t created = 0;
  std::vector<int32_t> eos_token_ids;
};

class ModelRegistry {
 public:
  explicit ModelRegistry(std::unique_ptr<ServedModel> model);
  ~ModelRegistry();  // stops the refresher

  ModelRegistry(const ModelRegistry&) = delete;
  ModelRegistry& operator=(const ModelRegistry&) = delete;

  const ServedModel& model() const { return *model_; }

  // Applies the outcome of one ListModels call. A failed call keeps the last
  // known max_model_len but counts no ready worker.
  void Update(const absl::StatusOr<tern::v1::ListModelsResponse>& response);

  RouterModelView RouterView() const;
  // A worker serving the model is ready.
  bool Ready() const;

  // The router's view for a request naming `requested`: NOT_FOUND
  // (model_not_found) unless it is the served model and the router lists it;
  // UNAVAILABLE while the router has never answered.
  absl::StatusOr<RouterModelView> Resolve(std::string_view requested) const;

  // Calls ListModels on `router` now and then every `interval` on a
  // background thread, until Stop(). `router` must outlive Stop().
  void Start(RouterClient* router, absl::Duration interval);
  void Stop();

 private:
  void RefreshLoop(RouterClient* router, absl::Duration interval);

  const std::unique_ptr<ServedModel> model_;

  mutable absl::Mutex mu_;
  RouterModelView view_ ABSL_GUARDED_BY(mu_);
  bool updated_ ABSL_GUARDED_BY(mu_) = false;  // Update ran at least once
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  std::thread refresher_;  // owned by the thread calling Start/Stop
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_MODEL_REGISTRY_H_
