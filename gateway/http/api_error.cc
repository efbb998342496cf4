#include "gateway/http/api_error.h"

#include <charconv>
#include <optional>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace tern::gateway {

std::string DumpJson(const nlohmann::ordered_json& json) {
  return json.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

namespace {

constexpr char kParamUrl[] = "type.tern.dev/openai.param";
constexpr char kCodeUrl[] = "type.tern.dev/openai.code";
constexpr char kRetryAfterUrl[] = "type.tern.dev/http.retry_after";
constexpr char kHttpStatusUrl[] = "type.tern.dev/http.status";

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::optional<std::string> Payload(const absl::Status& status, const char* url) {
  const absl::optional<absl::Cord> cord = status.GetPayload(url);
  if (!cord.has_value()) return std::nullopt;
  return std::string(*cord);
}

absl::StatusCode CodeForHttpStatus(int http_status) {
  switch (http_status) {
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
      return absl::StatusCode::kNotFound;
    case 408:
    case 504:
      return absl::StatusCode::kDeadlineExceeded;
    case 429:
      return absl::StatusCode::kResourceExhausted;
    case 501:
      return absl::StatusCode::kUnimplemented;
    case 503:
      return absl::StatusCode::kUnavailable;
    default:
      return http_status < 500 ? absl::StatusCode::kInvalidArgument : absl::StatusCode::kInternal;
  }
}

struct Mapping {
  int http_status;
  const char* type;
  const char* default_code;  // nullptr: JSON null
  int retry_after_s;
};

Mapping MappingFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return {400, "invalid_request_error", nullptr, 0};
    case absl::StatusCode::kUnauthenticated:
      return {401, "invalid_request_error", "invalid_api_key", 0};
    case absl::StatusCode::kPermissionDenied:
      return {403, "permission_error", nullptr, 0};
    case absl::StatusCode::kNotFound:
      return {404, "invalid_request_error", nullptr, 0};
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return {409, "invalid_request_error", nullptr, 0};
    case absl::StatusCode::kResourceExhausted:
      return {429, "rate_limit_error", "rate_limit_exceeded", 1};
    case absl::StatusCode::kUnimplemented:
      return {501, "not_supported_error", nullptr, 0};
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kCancelled:
      return {503, "server_error", "service_unavailable", 1};
    case absl::StatusCode::kDeadlineExceeded:
      return {504, "server_error", "timeout", 0};
    default:
      return {500, "server_error", nullptr, 0};
  }
}

}  // namespace

const char* ErrorTypeForHttpStatus(int http_status) {
  if (http_status == 429) return "rate_limit_error";
  if (http_status == 403) return "permission_error";
  if (http_status == 501) return "not_supported_error";
  return http_status < 500 ? "invalid_request_error" : "server_error";
}

absl::Status WithOpenAiDetails(absl::Status status, std::string_view param, std::string_view code) {
  if (!param.empty()) status.SetPayload(kParamUrl, absl::Cord(AbslView(param)));
  if (!code.empty()) status.SetPayload(kCodeUrl, absl::Cord(AbslView(code)));
  return status;
}

absl::Status InvalidRequestError(std::string_view param, std::string_view message,
                                 std::string_view code) {
  return WithOpenAiDetails(absl::InvalidArgumentError(AbslView(message)), param, code);
}

absl::Status ModelNotFoundError(std::string_view model) {
  return WithOpenAiDetails(
      absl::NotFoundError(absl::StrCat("The model `", AbslView(model), "` does not exist.")),
      "model", "model_not_found");
}

absl::Status WithRetryAfter(absl::Status status, int seconds) {
  status.SetPayload(kRetryAfterUrl, absl::Cord(absl::StrCat(seconds)));
  return status;
}

absl::Status HttpError(int http_status, std::string_view message) {
  absl::Status status(CodeForHttpStatus(http_status), AbslView(message));
  status.SetPayload(kHttpStatusUrl, absl::Cord(absl::StrCat(http_status)));
  return status;
}

ApiError ToApiError(const absl::Status& status) {
  ApiError error;
  Mapping mapping = MappingFor(status.code());
  std::string message(status.message());
  if (status.ok()) {
    mapping = {500, "server_error", nullptr, 0};
    message = "The server had an error while processing your request.";
  }
  error.http_status = mapping.http_status;
  error.retry_after_s = mapping.retry_after_s;
  const char* type = mapping.type;
  if (const std::optional<std::string> forced = Payload(status, kHttpStatusUrl)) {
    int value = 0;
    const auto [ptr, ec] = std::from_chars(forced->data(), forced->data() + forced->size(), value);
    if (ec == std::errc() && ptr == forced->data() + forced->size() && value >= 400 &&
        value <= 599) {
      error.http_status = value;
      type = ErrorTypeForHttpStatus(value);
      error.retry_after_s = (value == 429 || value == 503) ? 1 : 0;
    }
  }
  if (const std::optional<std::string> retry = Payload(status, kRetryAfterUrl)) {
    int seconds = 0;
    const auto [ptr, ec] = std::from_chars(retry->data(), retry->data() + retry->size(), seconds);
    if (ec == std::errc() && seconds > 0) error.retry_after_s = seconds;
  }
  if (message.empty()) message = "The server had an error while processing your request.";

  nlohmann::ordered_json inner;
  inner["message"] = message;
  inner["type"] = type;
  const std::optional<std::string> param = Payload(status, kParamUrl);
  inner["param"] = param ? nlohmann::ordered_json(*param) : nlohmann::ordered_json(nullptr);
  if (const std::optional<std::string> code = Payload(status, kCodeUrl)) {
    inner["code"] = *code;
  } else if (mapping.default_code != nullptr && !Payload(status, kHttpStatusUrl)) {
    inner["code"] = mapping.default_code;
  } else {
    inner["code"] = nullptr;
  }
  error.body["error"] = std::move(inner);
  return error;
}

HttpResponse ToHttpResponse(const absl::Status& status) {
  const ApiError error = ToApiError(status);
  HttpResponse response;
  response.status = error.http_status;
  response.body = DumpJson(error.body);
  if (error.retry_after_s > 0)
    response.headers.emplace_back("Retry-After", std::to_string(error.retry_after_s));
  return response;
}

}  // namespace tern::gateway
