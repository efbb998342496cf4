#include "gateway/api_service.h"

#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "gateway/completion_handler.h"
#include "gateway/http/api_error.h"
#include "gateway/openai/openai_request.h"
#include "gateway/openai/openai_response.h"
#include "gateway/openai/request_builder.h"
#include "gateway/openai/responses_request.h"
#include "gateway/openai/tokenize_api.h"

namespace tern::gateway {
namespace {

struct Route {
  const char* path;
  const char* method;
};

constexpr Route kRoutes[] = {
    {"/v1/completions", "POST"}, {"/v1/chat/completions", "POST"},
    {"/v1/models", "GET"},       {"/v1/responses", "POST"},
    {"/tokenize", "POST"},       {"/detokenize", "POST"},
    {"/health", "GET"},          {"/metrics", "GET"},
};

constexpr char kPriorityHeader[] = "X-Tern-Priority";

// The X-Tern-Priority header's value, on the body's `priority` scale and
// range; nullopt when the header is absent.
absl::StatusOr<std::optional<int32_t>> HeaderPriority(const HttpRequest& request) {
  if (request.priority.empty()) return std::nullopt;
  int64_t value = 0;
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  if (!absl::SimpleAtoi(request.priority, &value) || value < -kMax || value > kMax) {
    return InvalidRequestError(
        kPriorityHeader,
        absl::StrCat("The ", kPriorityHeader, " header must be an integer between ", -kMax, " and ",
                     kMax, ", got '", request.priority, "'."),
        "invalid_value");
  }
  return static_cast<int32_t>(value);
}

// Whether the body gives `priority` (a JSON null counts as absent). The
// parsed request cannot tell an absent field from 0, so the body is read
// again, only for requests that carry the header.
bool BodyHasPriority(const HttpRequest& request) {
  const absl::StatusOr<OrderedJson> body = ParseJsonBody(request.body);
  if (!body.ok() || !body->is_object()) return false;
  const auto it = body->find("priority");
  return it != body->end() && !it->is_null();
}

HttpResponse JsonResponse(int status, const OrderedJson& body) {
  HttpResponse response;
  response.status = status;
  response.body = DumpJson(body);
  return response;
}

}  // namespace

ApiService::ApiService(ApiServiceOptions options, ModelRegistry* registry, RouterClient* router,
                       GatewayMetrics* metrics)
    : options_(std::move(options)),
      registry_(registry),
      limiter_(options_.key_limiter != nullptr ? options_.key_limiter
                                               : std::make_shared<KeyLimiter>()),
      router_(router),
      metrics_(metrics) {}

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
  if (path == "/v1/completions" || path == "/v1/chat/completions" || path == "/v1/responses") {
    HandleGeneration(path, request, std::move(exchange), received);
    return;
  }
  HttpResponse response;
  if (path == "/v1/models") {
    const absl::StatusOr<const ApiKeyEntry*> auth = Authenticate(request);
    response = auth.ok() ? Models() : ToHttpResponse(auth.status());
  } else if (path == "/tokenize" || path == "/detokenize") {
    response = Tokenization(request);
  } else if (path == "/health") {
    response = Health();
  } else {
    response = Metrics();
  }
  metrics_->RecordRequest(path, response.status);
  exchange->Respond(std::move(response));
}

void ApiService::HandleGeneration(const std::string& path, const HttpRequest& request,
                                  std::shared_ptr<HttpExchange> exchange, absl::Time received) {
  const absl::Status status = StartGeneration(path, request, exchange, received);
  if (status.ok()) return;
  HttpResponse response = ToHttpResponse(status);
  metrics_->RecordRequest(path, response.status);
  TERN_LOG(Debug) << "rejected " << request.path << ": " << status.ToString();
  exchange->Respond(std::move(response));
}

absl::Status ApiService::StartGeneration(const std::string& path, const HttpRequest& request,
                                         std::shared_ptr<HttpExchange> exchange,
                                         absl::Time received) {
  TERN_ASSIGN_OR_RETURN(const ApiKeyEntry* const key, Authenticate(request));
  // The Responses API's body reads as the chat request it amounts to.
  std::optional<ResponsesRequest> responses;
  if (path == "/v1/responses") {
    TERN_ASSIGN_OR_RETURN(responses, ParseResponsesRequest(request.body));
  }
  const Endpoint endpoint =
      path == "/v1/completions" ? Endpoint::kCompletions : Endpoint::kChatCompletions;
  absl::StatusOr<OpenAiRequest> parsed_or = responses.has_value()
                                                ? absl::StatusOr<OpenAiRequest>(responses->chat)
                                                : ParseOpenAiRequest(endpoint, request.body);
  TERN_ASSIGN_OR_RETURN(const OpenAiRequest parsed, std::move(parsed_or));
  TERN_ASSIGN_OR_RETURN(const std::optional<int32_t> header_priority, HeaderPriority(request));
  std::shared_ptr<KeyLease> lease;
  if (key != nullptr) {
    KeyLimit refused;
    absl::StatusOr<std::shared_ptr<KeyLease>> admitted = AdmitKey(*limiter_, *key, &refused);
    if (!admitted.ok()) {
      metrics_->KeyRejected(key->name, KeyLimitName(refused));
      return admitted.status();
    }
    lease = *std::move(admitted);
    metrics_->KeyAdmitted(key->name);
  }
  TERN_ASSIGN_OR_RETURN(const RouterModelView view, registry_->Resolve(parsed.model));
  ResponseIdentity identity;
  identity.id = NewResponseId(endpoint);
  identity.created = absl::ToUnixSeconds(absl::Now());
  identity.model = parsed.model;
  identity.endpoint = endpoint;
  identity.include_usage = parsed.include_usage;
  identity.system_fingerprint = registry_->model().system_fingerprint;
  TERN_ASSIGN_OR_RETURN(
      std::vector<PreparedChoice> choices,
      PrepareChoices(parsed, registry_->model(), view.max_model_len, identity.id));
  // The body's priority wins over the header's.
  const bool header_priority_applies = header_priority.has_value() && !BodyHasPriority(request);
  for (PreparedChoice& choice : choices) {
    tern::v1::RouterGenerateRequest& rpc = choice.prepared.rpc;
    if (header_priority_applies) {
      // vLLM's scale (lower first) to the router's (higher first), as for the body's.
      rpc.set_priority(-*header_priority);
    }
    rpc.set_routing_policy(request.routing_policy);
    if (!request.session_id.empty()) rpc.set_session_key(request.session_id);
  }
  CompletionHandler::Dependencies deps;
  deps.model = &registry_->model();
  deps.router = router_;
  deps.metrics = metrics_;
  deps.timeout = options_.request_timeout;
  deps.key_lease = std::move(lease);
  if (responses.has_value()) {
    CompletionHandler::StartResponses(deps, *responses, std::move(choices), std::move(identity),
                                      std::move(exchange), received);
    return absl::OkStatus();
  }
  CompletionHandler::Start(deps, parsed, std::move(choices), std::move(identity),
                           std::move(exchange), received);
  return absl::OkStatus();
}

HttpResponse ApiService::Tokenization(const HttpRequest& request) const {
  if (absl::Status auth = Authenticate(request).status(); !auth.ok()) return ToHttpResponse(auth);
  const MaxModelLenFn max_model_len = [this](std::string_view model) -> absl::StatusOr<int32_t> {
    TERN_ASSIGN_OR_RETURN(const RouterModelView view, registry_->Resolve(model));
    return view.max_model_len;
  };
  const absl::StatusOr<OrderedJson> body =
      request.path == "/tokenize" ? Tokenize(request.body, registry_->model(), max_model_len)
                                  : Detokenize(request.body, registry_->model(), max_model_len);
  if (!body.ok()) {
    TERN_LOG(Debug) << "rejected " << request.path << ": " << body.status().ToString();
    return ToHttpResponse(body.status());
  }
  return JsonResponse(200, *body);
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
  return AuthenticateBearer(options_.api_keys.get(), request.authorization);
}

}  // namespace tern::gateway
