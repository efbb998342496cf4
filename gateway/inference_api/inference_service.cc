#include "gateway/inference_api/inference_service.h"

#include <chrono>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "gateway/inference_api/generation_stream.h"
#include "gateway/inference_api/request_translation.h"
#include "gateway/openai/openai_response.h"
#include "gateway/openai/request_builder.h"

namespace tern::gateway {
namespace {

// The call's deadline; InfiniteFuture when it has none.
absl::Time Deadline(const grpc::CallbackServerContext& context) {
  const std::chrono::system_clock::time_point deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

std::string AuthorizationMetadata(const grpc::CallbackServerContext& context) {
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  if (it == metadata.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

}  // namespace

absl::StatusOr<absl::Duration> CallTimeout(absl::Duration timeout, absl::Time deadline,
                                           absl::Time now) {
  if (deadline <= now) return absl::DeadlineExceededError("The call's deadline has passed.");
  return std::min(timeout, deadline - now);
}

InferenceService::InferenceService(InferenceServiceOptions options, ModelRegistry* registry,
                                   RouterClient* router, GatewayMetrics* metrics)
    : options_(std::move(options)), registry_(registry), router_(router), metrics_(metrics) {}

grpc::ServerWriteReactor<tern::v1::TextChunk>* InferenceService::Complete(
    grpc::CallbackServerContext* context, const tern::v1::CompleteRequest* request) {
  return Serve(context, "grpc:Complete", [request] { return ParseRequest(*request); });
}

grpc::ServerWriteReactor<tern::v1::TextChunk>* InferenceService::Chat(
    grpc::CallbackServerContext* context, const tern::v1::ChatRequest* request) {
  return Serve(context, "grpc:Chat", [request] { return ParseRequest(*request); });
}

grpc::ServerWriteReactor<tern::v1::TextChunk>* InferenceService::Serve(
    grpc::CallbackServerContext* context, const std::string& endpoint_label,
    const std::function<absl::StatusOr<OpenAiRequest>()>& parse) {
  const absl::Time received = absl::Now();
  absl::StatusOr<grpc::ServerWriteReactor<tern::v1::TextChunk>*> stream =
      StartGeneration(context, endpoint_label, parse, received);
  if (stream.ok()) return *stream;
  const ApiError error = ToApiError(stream.status());
  if (error.retry_after_s > 0) {
    context->AddTrailingMetadata("retry-after", std::to_string(error.retry_after_s));
  }
  metrics_->RecordRequest(endpoint_label, error.http_status);
  TERN_LOG(Debug) << "rejected " << endpoint_label << ": " << stream.status().ToString();
  return GenerationStream::Reject(stream.status());
}

absl::StatusOr<grpc::ServerWriteReactor<tern::v1::TextChunk>*> InferenceService::StartGeneration(
    grpc::CallbackServerContext* context, const std::string& endpoint_label,
    const std::function<absl::StatusOr<OpenAiRequest>()>& parse, absl::Time received) {
  TERN_ASSIGN_OR_RETURN(
      const ApiKeyEntry* const key,
      AuthenticateBearer(options_.api_keys.get(), AuthorizationMetadata(*context)));
  TERN_ASSIGN_OR_RETURN(const OpenAiRequest parsed, parse());
  TERN_ASSIGN_OR_RETURN(const absl::Duration timeout,
                        CallTimeout(options_.request_timeout, Deadline(*context), received));
  std::shared_ptr<KeyLease> lease;
  if (key != nullptr) {
    KeyLimit refused;
    absl::StatusOr<std::shared_ptr<KeyLease>> admitted =
        AdmitKey(*options_.key_limiter, *key, &refused);
    if (!admitted.ok()) {
      metrics_->KeyRejected(key->name, KeyLimitName(refused));
      return admitted.status();
    }
    lease = *std::move(admitted);
    metrics_->KeyAdmitted(key->name);
  }
  TERN_ASSIGN_OR_RETURN(const RouterModelView view, registry_->Resolve(parsed.model));
  TERN_ASSIGN_OR_RETURN(std::vector<PreparedChoice> choices,
                        PrepareChoices(parsed, registry_->model(), view.max_model_len,
                                       NewResponseId(parsed.endpoint)));
  GenerationStream::Dependencies deps;
  deps.model = &registry_->model();
  deps.router = router_;
  deps.metrics = metrics_;
  deps.timeout = timeout;
  deps.key_lease = std::move(lease);
  deps.endpoint_label = endpoint_label;
  return GenerationStream::Start(std::move(deps), parsed, std::move(choices), received);
}

}  // namespace tern::gateway
