// The one conversion point from absl::Status to an HTTP status code and an
// OpenAI-style error body {"error": {"message", "type", "param", "code"}}.
//
// Code that rejects a request builds its status with the helpers below, which
// attach the OpenAI `param` and `code` (and, for transport-level errors such
// as 405 or 413, the exact HTTP status) as status payloads; ToApiError reads
// them back. Everything else maps by canonical code (INVALID_ARGUMENT -> 400,
// NOT_FOUND -> 404, RESOURCE_EXHAUSTED -> 429, UNAVAILABLE -> 503, ...).
//
// Pure functions; thread-safe.
#ifndef TERN_GATEWAY_HTTP_API_ERROR_H_
#define TERN_GATEWAY_HTTP_API_ERROR_H_

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "gateway/http/http_exchange.h"

namespace tern::gateway {

// INVALID_ARGUMENT naming the offending request field (`param`, e.g.
// "temperature" or "messages[1].content"). `code` is OpenAI's error code
// (e.g. "invalid_value", "context_length_exceeded"); empty leaves it null.
absl::Status InvalidRequestError(std::string_view param, std::string_view message,
                                 std::string_view code = "");

// NOT_FOUND, code model_not_found: "The model `X` does not exist."
absl::Status ModelNotFoundError(std::string_view model);

// A status whose HTTP code is forced to `http_status` (404 unknown path, 405,
// 413, 431, ...); the canonical code is derived from it.
absl::Status HttpError(int http_status, std::string_view message);

// Sets the Retry-After seconds of a 429 or 503 (1 when not set).
absl::Status WithRetryAfter(absl::Status status, int seconds);

// Adds or replaces OpenAI details on any status.
absl::Status WithOpenAiDetails(absl::Status status, std::string_view param, std::string_view code);

struct ApiError {
  int http_status = 500;
  // Seconds for a Retry-After header; 0 means none (set on 429 and 503).
  int retry_after_s = 0;
  // {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}
  nlohmann::ordered_json body;
};

// Compact JSON; invalid UTF-8 is replaced (U+FFFD) instead of throwing.
std::string DumpJson(const nlohmann::ordered_json& json);

// Maps a non-OK status. An OK status is a caller bug and maps to 500.
ApiError ToApiError(const absl::Status& status);

// The OpenAI error type of an HTTP error status ("invalid_request_error",
// "rate_limit_error", "server_error", ...).
const char* ErrorTypeForHttpStatus(int http_status);

// ToApiError as a complete HTTP response (JSON body, Retry-After when set).
HttpResponse ToHttpResponse(const absl::Status& status);

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_HTTP_API_ERROR_H_
