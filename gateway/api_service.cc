#include "gateway/api_service.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "gateway/completion_handler.h"
#include "gateway/http/api_error.h"
#include "gateway/openai/openai_request.h"
#include "gateway/openai/openai_response.h"
#include "gateway/openai/request_builder.h"

namespace tern::gateway {
namespace {

struct Route {
  const char* path;
  const char* method;
};

constexpr Route kRoutes[] = {
    {"/v1/completions", "POST"}, {"/v1/chat/completions", "POST"},
    {"/v1/models", "GET"},       {"/health", "GET"},
    {"/metrics", "GET"},
};

HttpResponse JsonResponse(int status, const OrderedJson& body) {
  HttpResponse response;
  response.status = status;
  response.body = DumpJson(body);
  return response;
}

}  // namespace

ApiService::ApiService(ApiServiceOptions options, ModelRegistry* registry, RouterClient* router,
                       GatewayMetrics* metrics)
    : options_(std::move(options)), registry_(registry), router_(router), metrics_(metrics) {}

void ApiService::Handle(HttpRequest request, std::shared_ptr<HttpExchange> exchange) {
  const absl::Time received = absl::Now();
  const Route* route = nullptr;
  for (const Route& candidate : kRoutes) {
    if (request.path == candidate.path) route = &candidate;
  }
  if (route == nullptr) {
    metrics_->RecordRequest("other", 404);
    exchange->Respond(ToHttpResponse(
        HttpError(404, absl::StrCat("Invalid URL (", request.method, " ", request.path, ")"))));
    return;
  }
  if (request.method != route->method) {
    metrics_->RecordRequest(route->path, 405);
    HttpResponse response = ToHttpResponse(
        HttpError(405, absl::StrCat("Method ", request.method, " is not allowed for ", route->path,
                                    "; use ", route->method, ".")));
    response.headers.emplace_back("Allow", route->method);
    exchange->Respond(std::move(response));
    return;
  }
  const std::string path = route->path;
  if (path == "/v1/completions" || path == "/v1/chat/completions") {
    HandleGeneration(
        path == "/v1/completions" ? Endpoint::kCompletions : Endpoint::kChatCompletions, request,
        std::move(exchange), received);
    return;
  }
  HttpResponse response;
  if (path == "/v1/models") {
    const absl::StatusOr<const ApiKeyEntry*> auth = Authenticate(request);
    response = auth.ok() ? Models() : ToHttpResponse(auth.status());
  } else if (path == "/health") {
    response = Health();
  } else {
    response = Metrics();
  }
  metrics_->RecordRequest(path, response.status);
  exchange->Respond(std::move(response));
}

void ApiService::HandleGeneration(Endpoint endpoint, const HttpRequest& request,
                                  std::shared_ptr<HttpExchange> exchange, absl::Time received) {
  const absl::Status status = StartGeneration(endpoint, request, exchange, received);
  if (status.ok()) return;
  HttpResponse response = ToHttpResponse(status);
  metrics_->RecordRequest(
      endpoint == Endpoint::kCompletions ? "/v1/completions" : "/v1/chat/completions",
      response.status);
  TERN_LOG(Debug) << "rejected " << request.path << ": " << status.ToString();
  exchange->Respond(std::move(response));
}

absl::Status ApiService::StartGeneration(Endpoint endpoint, const HttpRequest& request,
                                         std::shared_ptr<HttpExchange> exchange,
                                         absl::Time received) {
  TERN_ASSIGN_OR_RETURN(const ApiKeyEntry* const key, Authenticate(request));
  TERN_ASSIGN_OR_RETURN(const OpenAiRequest parsed, ParseOpenAiRequest(endpoint, request.body));
  std::shared_ptr<KeyLease> lease;
  if (key != nullptr) {
    KeyRefusal refusal;
    lease = limiter_.Admit(key->name, key->limits, &refusal);
    if (lease == nullptr) {
      metrics_->KeyRejected(key->name, KeyLimitName(refusal.limit));
      return WithRetryAfter(
          absl::ResourceExhaustedError(
              absl::StrCat("Rate limit reached for this API key on ", KeyLimitName(refusal.limit),
                           ". Please try again in ", refusal.retry_after_s, "s.")),
          static_cast<int>(refusal.retry_after_s));
    }
    metrics_->KeyAdmitted(key->name);
  }
  TERN_ASSIGN_OR_RETURN(const RouterModelView view, registry_->Resolve(parsed.model));
  ResponseIdentity identity;
  identity.id = NewResponseId(endpoint);
  identity.created = absl::ToUnixSeconds(absl::Now());
  identity.model = parsed.model;
  identity.endpoint = endpoint;
  identity.include_usage = parsed.include_usage;
  TERN_ASSIGN_OR_RETURN(
      PreparedRequest prepared,
      PrepareGenerateRequest(parsed, registry_->model(), view.max_model_len, identity.id));
  prepared.rpc.set_routing_policy(request.routing_policy);
  if (!request.session_id.empty()) prepared.rpc.set_session_key(request.session_id);
  CompletionHandler::Dependencies deps;
  deps.model = &registry_->model();
  deps.router = router_;
  deps.metrics = metrics_;
  deps.timeout = options_.request_timeout;
  deps.key_lease = std::move(lease);
  CompletionHandler::Start(deps, parsed, std::move(prepared), std::move(identity),
                           std::move(exchange), received);
  return absl::OkStatus();
}

HttpResponse ApiService::Models() const {
  const RouterModelView view = registry_->RouterView();
  const int64_t created = view.created > 0 ? view.created : absl::ToUnixSeconds(absl::Now());
  return JsonResponse(200, ModelListBody(registry_->model().name, created, view.max_model_len));
}

HttpResponse ApiService::Health() const {
  if (registry_->Ready()) return JsonResponse(200, OrderedJson::object());
  const RouterModelView view = registry_->RouterView();
  std::string why = !view.router_reachable ? "the router is not reachable"
                    : !view.listed         ? "the router does not list the model"
                                           : "no worker is ready";
  return ToHttpResponse(absl::UnavailableError(absl::StrCat("Not ready: ", why, ".")));
}

HttpResponse ApiService::Metrics() const {
  HttpResponse response;
  response.content_type = "text/plain; version=0.0.4; charset=utf-8";
  response.body = metrics_->Serialize();
  return response;
}

absl::StatusOr<const ApiKeyEntry*> ApiService::Authenticate(const HttpRequest& request) const {
  if (options_.api_keys == nullptr || options_.api_keys->empty()) {
    return static_cast<const ApiKeyEntry*>(nullptr);
  }
  constexpr std::string_view kBearer = "Bearer ";
  const std::string& header = request.authorization;
  if (header.size() > kBearer.size() && header.compare(0, kBearer.size(), kBearer) == 0) {
    const absl::string_view key = absl::string_view(header).substr(kBearer.size());
    if (const ApiKeyEntry* entry = options_.api_keys->Verify(key)) return entry;
  }
  return absl::UnauthenticatedError("Incorrect API key provided.");
}

}  // namespace tern::gateway
