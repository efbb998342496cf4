// The gateway's HTTP endpoints: routes each request by path and method and
// answers it, or hands a validated generation request to a
// CompletionHandler.
//
//   POST /v1/completions, POST /v1/chat/completions   (JSON or SSE; n choices,
//                                                     structured outputs, tools)
//   POST /v1/responses                                the Responses API, stateless
//                                                     (openai/responses_request.h)
//   GET  /v1/models                                   the served model
//   POST /tokenize, POST /detokenize                  vLLM's (openai/tokenize_api.h)
//   GET  /health                                      200 once a worker is ready, else 503
//   GET  /metrics                                     Prometheus text
//
// A generation request's `X-Tern-Priority` header (an integer, vLLM's
// `priority` scale: lower is served earlier) stands in for the body's
// `priority` when the body has none; anything but an integer is a 400.
//
// Unknown paths get 404, wrong methods 405; with API keys configured, /v1/*,
// /tokenize and /detokenize need `Authorization: Bearer <key>` (401
// otherwise), and a key's limits on generation (requests and tokens per
// minute, streams in flight) give 429 with the seconds to wait in
// Retry-After. Every rejection goes through ToApiError.
//
// Thread-safe: Handle runs on io threads; everything it touches is immutable
// or synchronized (registry, metrics, router client).
#ifndef TERN_GATEWAY_API_SERVICE_H_
#define TERN_GATEWAY_API_SERVICE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gateway/auth/api_keys.h"
#include "gateway/auth/key_limiter.h"
#include "gateway/http/http_exchange.h"
#include "gateway/metrics.h"
#include "gateway/model_registry.h"
#include "gateway/openai/openai_request.h"
#include "gateway/router_client.h"

namespace tern::gateway {

struct ApiServiceOptions {
  // Null or empty: no authentication.
  std::shared_ptr<const ApiKeyStore> api_keys;
  // The keys' limits, shared with the gRPC API so that a key has one budget
  // across both; null: the service keeps its own.
  std::shared_ptr<KeyLimiter> key_limiter;
  absl::Duration request_timeout = absl::Minutes(10);
};

class ApiService {
 public:
  // The registry, router client and metrics must outlive the service and
  // every request it started.
  ApiService(ApiServiceOptions options, ModelRegistry* registry, RouterClient* router,
             GatewayMetrics* metrics);

  // The server's RequestHandler.
  void Handle(HttpRequest request, std::shared_ptr<HttpExchange> exchange);

 private:
  // `path`: /v1/completions, /v1/chat/completions or /v1/responses.
  void HandleGeneration(const std::string& path, const HttpRequest& request,
                        std::shared_ptr<HttpExchange> exchange, absl::Time received);
  // The request's error, or OK when it was handed to a CompletionHandler.
  absl::Status StartGeneration(const std::string& path, const HttpRequest& request,
                               std::shared_ptr<HttpExchange> exchange, absl::Time received);
  // /tokenize or /detokenize.
  HttpResponse Tokenization(const HttpRequest& request) const;
  HttpResponse Models() const;
  HttpResponse Health() const;
  HttpResponse Metrics() const;
  // The caller's key entry (null when no keys are configured), or
  // UNAUTHENTICATED.
  absl::StatusOr<const ApiKeyEntry*> Authenticate(const HttpRequest& request) const;

  const ApiServiceOptions options_;
  ModelRegistry* const registry_;
  // Per-key limits (the key file's); thread-safe.
  const std::shared_ptr<KeyLimiter> limiter_;
  RouterClient* const router_;
  GatewayMetrics* const metrics_;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_API_SERVICE_H_
