#include "gateway/http/api_error.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace tern::gateway {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

std::vector<std::string> Keys(const nlohmann::ordered_json& object) {
  std::vector<std::string> keys;
  for (const auto& item : object.items()) keys.push_back(item.key());
  return keys;
}

TEST(ApiErrorTest, BodyHasOpenAiShape) {
  const ApiError error = ToApiError(InvalidRequestError("temperature", "too hot", "invalid_value"));
  EXPECT_EQ(error.http_status, 400);
  EXPECT_EQ(error.retry_after_s, 0);
  EXPECT_THAT(Keys(error.body), ElementsAre("error"));
  const auto& inner = error.body["error"];
  EXPECT_THAT(Keys(inner), ElementsAre("message", "type", "param", "code"));
  EXPECT_EQ(inner["message"], "too hot");
  EXPECT_EQ(inner["type"], "invalid_request_error");
  EXPECT_EQ(inner["param"], "temperature");
  EXPECT_EQ(inner["code"], "invalid_value");
}

TEST(ApiErrorTest, MissingDetailsAreNull) {
  const ApiError error = ToApiError(absl::InvalidArgumentError("bad"));
  EXPECT_TRUE(error.body["error"]["param"].is_null());
  EXPECT_TRUE(error.body["error"]["code"].is_null());
}

TEST(ApiErrorTest, ModelNotFound) {
  const ApiError error = ToApiError(ModelNotFoundError("gpt-9"));
  EXPECT_EQ(error.http_status, 404);
  EXPECT_EQ(error.body["error"]["message"], "The model `gpt-9` does not exist.");
  EXPECT_EQ(error.body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(error.body["error"]["param"], "model");
  EXPECT_EQ(error.body["error"]["code"], "model_not_found");
}

TEST(ApiErrorTest, CanonicalCodesMapToHttpStatuses) {
  struct Case {
    absl::Status status;
    int http_status;
    int retry_after_s;
    const char* type;
  };
  const Case cases[] = {
      {absl::InvalidArgumentError("x"), 400, 0, "invalid_request_error"},
      {absl::FailedPreconditionError("x"), 400, 0, "invalid_request_error"},
      {absl::OutOfRangeError("x"), 400, 0, "invalid_request_error"},
      {absl::UnauthenticatedError("x"), 401, 0, "invalid_request_error"},
      {absl::PermissionDeniedError("x"), 403, 0, "permission_error"},
      {absl::NotFoundError("x"), 404, 0, "invalid_request_error"},
      {absl::ResourceExhaustedError("x"), 429, 1, "rate_limit_error"},
      {absl::UnavailableError("x"), 503, 1, "server_error"},
      {absl::CancelledError("x"), 503, 1, "server_error"},
      {absl::DeadlineExceededError("x"), 504, 0, "server_error"},
      {absl::UnimplementedError("x"), 501, 0, "not_supported_error"},
      {absl::InternalError("x"), 500, 0, "server_error"},
      {absl::UnknownError("x"), 500, 0, "server_error"},
      {absl::DataLossError("x"), 500, 0, "server_error"},
  };
  for (const Case& c : cases) {
    const ApiError error = ToApiError(c.status);
    EXPECT_EQ(error.http_status, c.http_status) << c.status;
    EXPECT_EQ(error.retry_after_s, c.retry_after_s) << c.status;
    EXPECT_EQ(error.body["error"]["type"], c.type) << c.status;
    EXPECT_EQ(error.body["error"]["message"], "x");
  }
  EXPECT_EQ(ToApiError(absl::ResourceExhaustedError("x")).body["error"]["code"],
            "rate_limit_exceeded");
  EXPECT_EQ(ToApiError(absl::UnauthenticatedError("x")).body["error"]["code"], "invalid_api_key");
}

TEST(ApiErrorTest, ForcedHttpStatuses) {
  for (const int status : {404, 405, 413, 431, 400, 503}) {
    const ApiError error = ToApiError(HttpError(status, "m"));
    EXPECT_EQ(error.http_status, status);
    EXPECT_EQ(error.body["error"]["message"], "m");
    EXPECT_TRUE(error.body["error"]["code"].is_null());
  }
  EXPECT_EQ(ToApiError(HttpError(405, "m")).body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(ToApiError(HttpError(503, "m")).retry_after_s, 1);
  EXPECT_EQ(HttpError(404, "m").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(HttpError(413, "m").code(), absl::StatusCode::kInvalidArgument);
}

TEST(ApiErrorTest, OkStatusIsAServerError) {
  const ApiError error = ToApiError(absl::OkStatus());
  EXPECT_EQ(error.http_status, 500);
  EXPECT_FALSE(error.body["error"]["message"].get<std::string>().empty());
}

TEST(ApiErrorTest, HttpResponseCarriesRetryAfter) {
  const HttpResponse busy = ToHttpResponse(absl::ResourceExhaustedError("queue full"));
  EXPECT_EQ(busy.status, 429);
  EXPECT_EQ(busy.content_type, "application/json");
  EXPECT_THAT(busy.headers, ElementsAre(Pair("Retry-After", "1")));
  const auto body = nlohmann::json::parse(busy.body);
  EXPECT_EQ(body["error"]["message"], "queue full");
  EXPECT_TRUE(ToHttpResponse(absl::InvalidArgumentError("x")).headers.empty());
}

TEST(ApiErrorTest, DetailsCanBeAddedToAnyStatus) {
  const ApiError error = ToApiError(
      WithOpenAiDetails(absl::InvalidArgumentError("long"), "messages", "context_length_exceeded"));
  EXPECT_EQ(error.body["error"]["param"], "messages");
  EXPECT_EQ(error.body["error"]["code"], "context_length_exceeded");
}

}  // namespace
}  // namespace tern::gateway
