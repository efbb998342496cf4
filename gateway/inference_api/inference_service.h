// tern.v1.Inference, the gateway's public gRPC API (callback API): Complete
// and Chat are authenticated (`authorization: Bearer <key>` metadata when
// API keys are configured; UNAUTHENTICATED otherwise), admitted under the
// key's limits (RESOURCE_EXHAUSTED, with the seconds to wait in the
// `retry-after` trailer), translated into the REST body they mirror and
// validated by the REST parser (request_translation.h; INVALID_ARGUMENT),
// resolved against the served model (NOT_FOUND, UNAVAILABLE), prepared into
// per-choice router requests, and streamed by a GenerationStream. The
// call's deadline bounds the router calls (with the configured request
// timeout); the metrics count the calls as "grpc:Complete" / "grpc:Chat".
//
// Thread-safe: the methods run on gRPC threads; everything they touch is
// immutable or synchronized (registry, router client, metrics, key limiter).
#ifndef TERN_GATEWAY_INFERENCE_API_INFERENCE_SERVICE_H_
#define TERN_GATEWAY_INFERENCE_API_INFERENCE_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gateway/auth/api_keys.h"
#include "gateway/auth/key_limiter.h"
#include "gateway/metrics.h"
#include "gateway/model_registry.h"
#include "gateway/openai/openai_request.h"
#include "gateway/router_client.h"
#include "tern/v1/inference.grpc.pb.h"

namespace tern::gateway {

struct InferenceServiceOptions {
  // Null or empty: no authentication.
  std::shared_ptr<const ApiKeyStore> api_keys;
  // The per-key limits, shared with the REST API so a key has one budget;
  // required when api_keys has entries.
  KeyLimiter* key_limiter = nullptr;
  // The longest a generation may take, whatever the client's deadline.
  absl::Duration request_timeout = absl::Minutes(10);
};

// The router calls' deadline: `timeout`, or what is left until the client's
// `deadline` when that comes sooner. DEADLINE_EXCEEDED when it has passed.
absl::StatusOr<absl::Duration> CallTimeout(absl::Duration timeout, absl::Time deadline,
                                           absl::Time now);

class InferenceService final : public tern::v1::Inference::CallbackService {
 public:
  // The registry, router client, metrics and key limiter must outlive the
  // service and every call it started.
  InferenceService(InferenceServiceOptions options, ModelRegistry* registry, RouterClient* router,
                   GatewayMetrics* metrics);

  grpc::ServerWriteReactor<tern::v1::TextChunk>* Complete(
      grpc::CallbackServerContext* context, const tern::v1::CompleteRequest* request) override;
  grpc::ServerWriteReactor<tern::v1::TextChunk>* Chat(
      grpc::CallbackServerContext* context, const tern::v1::ChatRequest* request) override;

 private:
  // Authenticates the call, then parses its request with `parse` and serves it.
  grpc::ServerWriteReactor<tern::v1::TextChunk>* Serve(
      grpc::CallbackServerContext* context, const std::string& endpoint_label,
      const std::function<absl::StatusOr<OpenAiRequest>()>& parse);
  // The call's GenerationStream, or why it cannot start.
  absl::StatusOr<grpc::ServerWriteReactor<tern::v1::TextChunk>*> StartGeneration(
      grpc::CallbackServerContext* context, const std::string& endpoint_label,
      const std::function<absl::StatusOr<OpenAiRequest>()>& parse, absl::Time received);

  const InferenceServiceOptions options_;
  ModelRegistry* const registry_;
  RouterClient* const router_;
  GatewayMetrics* const metrics_;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_INFERENCE_API_INFERENCE_SERVICE_H_
