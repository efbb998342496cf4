#include "gateway/model_registry.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "gateway/http/api_error.h"

namespace tern::gateway {

ModelRegistry::ModelRegistry(std::unique_ptr<ServedModel> model) : model_(std::move(model)) {}

ModelRegistry::~ModelRegistry() { Stop(); }

void ModelRegistry::Update(const absl::StatusOr<tern::v1::ListModelsResponse>& response) {
  RouterModelView next;
  bool first_update = false;
  {
    absl::MutexLock lock(&mu_);
    next = view_;
    first_update = !updated_;
    updated_ = true;
  }
  if (!response.ok()) {
    next.router_reachable = false;
    next.ready_workers = 0;
  } else {
    next.router_answered = true;
    next.router_reachable = true;
    next.listed = false;
    next.ready_workers = 0;
    for (const tern::v1::ModelCard& card : response->models()) {
      if (card.id() != model_->name) continue;
      next.listed = true;
      next.max_model_len = card.max_model_len();
      next.ready_workers = card.ready_workers();
      next.created = card.created();
      next.eos_token_ids.assign(card.eos_token_ids().begin(), card.eos_token_ids().end());
    }
  }
  RouterModelView previous;
  {
    absl::MutexLock lock(&mu_);
    previous = std::exchange(view_, next);
  }
  // Warn on the first failure and when an answering router stops answering.
  if (!response.ok() && (previous.router_reachable || first_update)) {
    TERN_LOG(Warning) << "router unreachable: " << response.status().ToString();
  }
  if ((previous.ready_workers > 0) != (next.ready_workers > 0) || previous.listed != next.listed ||
      previous.max_model_len != next.max_model_len) {
    TERN_LOG(Info) << "model " << model_->name << " listed=" << next.listed
                   << " ready_workers=" << next.ready_workers
                   << " max_model_len=" << next.max_model_len;
  }
}

RouterModelView ModelRegistry::RouterView() const {
  absl::MutexLock lock(&mu_);
  return view_;
}

bool ModelRegistry::Ready() const {
  absl::MutexLock lock(&mu_);
  return view_.listed && view_.ready_workers > 0 && view_.max_model_len > 0;
}

absl::StatusOr<RouterModelView> ModelRegistry::Resolve(std::string_view requested) const {
  if (requested != model_->name) return ModelNotFoundError(requested);
  RouterModelView view = RouterView();
  if (!view.router_answered) {
    return absl::UnavailableError(absl::StrCat("The model `", model_->name,
                                               "` is not ready yet: the router has not answered."));
  }
  if (!view.listed) return ModelNotFoundError(requested);
  if (view.max_model_len <= 0) {
    return absl::UnavailableError(
        absl::StrCat("The model `", model_->name, "` has no ready worker yet."));
  }
  return view;
}

void ModelRegistry::Start(RouterClient* router, absl::Duration interval) {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = false;
  }
  refresher_ = std::thread([this, router, interval] { RefreshLoop(router, interval); });
}

void ModelRegistry::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (refresher_.joinable()) refresher_.join();
}

void ModelRegistry::RefreshLoop(RouterClient* router, absl::Duration interval) {
  for (;;) {
    Update(router->ListModels(std::min(interval, absl::Seconds(5))));
    absl::MutexLock lock(&mu_);
    auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
    if (mu_.AwaitWithTimeout(absl::Condition(&stopping), interval)) return;
  }
}

}  // namespace tern::gateway
