// The gateway's HTTP endpoints: routes each request by path and method and
// answers it, or hands a validated generation request to a
// CompletionHandler.
//
//   POST /v1/completions, POST /v1/chat/completions   (JSON or SSE)
//   GET  /v1/models                                   the served model
//   GET  /health                                      200 once a worker is ready, else 503
//   GET  /metrics                                     Prometheus text
//
// Unknown paths get 404, wrong methods 405; with API keys configured, /v1/*
// needs `Authorization: Bearer <key>` (401 otherwise), and a key's limits
// (requests and tokens per minute, streams in flight) give 429 with the
// seconds to wait in Retry-After. Every rejection goes through ToApiError.
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
  void HandleGeneration(Endpoint endpoint, const HttpRequest& request,
                        std::shared_ptr<HttpExchange> exchange, absl::Time received);
  // The request's error, or OK when it was handed to a CompletionHandler.
  absl::Status StartGeneration(Endpoint endpoint, const HttpRequest& request,
                               std::shared_ptr<HttpExchange> exchange, absl::Time received);
  HttpResponse Models() const;
  HttpResponse Health() const;
  HttpResponse Metrics() const;
  // The caller's key entry (null when no keys are configured), or
  // UNAUTHENTICATED.
  absl::StatusOr<const ApiKeyEntry*> Authenticate(const HttpRequest& request) const;

  const ApiServiceOptions options_;
  ModelRegistry* const registry_;
  // Per-key limits (the key file's); mutable state, thread-safe.
  mutable KeyLimiter limiter_;
  RouterClient* const router_;
  GatewayMetrics* const metrics_;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_API_SERVICE_H_
