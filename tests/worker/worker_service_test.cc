#include "worker/worker_service.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/block_hash.h"
#include "tests/testing/reference_forward.h"
#include "tests/testing/tiny_model.h"
#include "worker/engine/engine.h"

namespace tern::worker {
namespace {

using testing::KvCache;
using testing::ReferenceForward;

using HashSet = absl::flat_hash_set<uint64_t>;

// Applies KV events in order, as the router does.
struct Replica {
  HashSet hashes;
  int removed_events = 0;
  uint64_t last_sequence_number = 0;
  bool increasing = true;
  bool starts_cleared = false;
  int events = 0;

  void Apply(const tern::v1::WorkerState& state) {
    for (const tern::v1::KvEvent& event : state.kv_events()) {
      if (events++ == 0) starts_cleared = event.has_cleared();
      if (event.sequence_number() <= last_sequence_number) increasing = false;
      last_sequence_number = event.sequence_number();
      if (event.has_cleared()) hashes.clear();
      if (event.has_stored()) {
        for (uint64_t h : event.stored().block_hashes()) hashes.insert(h);
      }
      if (event.has_removed()) {
        ++removed_events;
        for (uint64_t h : event.removed().block_hashes()) hashes.erase(h);
      }
    }
  }
};

// A WatchState stream read on a thread of its own, with a deadline.
class Watcher {
 public:
  explicit Watcher(tern::v1::Worker::Stub* stub) {
    context_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    reader_ = stub->WatchState(&context_, tern::v1::WatchStateRequest());
    thread_ = std::thread([this] {
      tern::v1::WorkerState state;
      while (reader_->Read(&state)) {
        absl::MutexLock lock(&mu_);
        states_.push_back(state);
      }
      grpc::Status status = reader_->Finish();
      absl::MutexLock lock(&mu_);
      status_ = status;
      ended_ = true;
    });
  }
  ~Watcher() {
    context_.TryCancel();
    thread_.join();
  }

  void Cancel() { context_.TryCancel(); }

  // Waits (bounded) until `done(states)` holds; false on timeout.
  template <typename Predicate>
  bool WaitFor(Predicate done, absl::Duration timeout = absl::Seconds(20)) {
    absl::MutexLock lock(&mu_);
    auto condition = [&] { return done(states_); };
    return mu_.AwaitWithTimeout(absl::Condition(&condition), timeout);
  }

  // Waits (bounded) for the end of the stream and returns its status.
  grpc::Status WaitEnd() {
    absl::MutexLock lock(&mu_);
    if (!mu_.AwaitWithTimeout(absl::Condition(&ended_), absl::Seconds(20))) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the stream did not end");
    }
    return status_;
  }

  std::vector<tern::v1::WorkerState> states() {
    absl::MutexLock lock(&mu_);
    return states_;
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<tern::v1::WorkerState>> reader_;
  std::thread thread_;
  absl::Mutex mu_;
  std::vector<tern::v1::WorkerState> states_ ABSL_GUARDED_BY(mu_);
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
};

Replica Replay(const std::vector<tern::v1::WorkerState>& states) {
  Replica replica;
  for (const auto& state : states) replica.Apply(state);
  return replica;
}

class WorkerServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = testing::TinyModelDir();
    if (dir.empty()) GTEST_SKIP() << "tokenizer files missing: run scripts/install-deps.sh";
    auto model = Model::Load(dir);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    // A pool of 24 blocks of 16 tokens, small enough for the requests below to evict.
    const ModelConfig& c = model_->config();
    EngineOptions options;
    options.max_num_seqs = 4;
    options.executor.tp = 1;
    options.executor.block_size = 16;
    options.executor.kv_cache_bytes = int64_t{24} * 2 * c.num_hidden_layers * 16 * c.kv_dim() * 4;
    auto engine = Engine::Create(model_.get(), options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    service_ = std::make_unique<WorkerService>(engine_.get(), WorkerIdentity{"tiny", "test"});
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port, 0);
    stub_ = tern::v1::Worker::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                          grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    if (service_) service_->StopWatchers();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    server_.reset();
    service_.reset();
    engine_.reset();
  }

  struct Generated {
    grpc::Status status;
    std::vector<tern::v1::GenerateResponse> responses;
  };

  Generated Generate(const tern::v1::GenerateRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto reader = stub_->Generate(&context, request);
    Generated out;
    tern::v1::GenerateResponse response;
    while (reader->Read(&response)) out.responses.push_back(response);
    out.status = reader->Finish();
    return out;
  }

  static tern::v1::GenerateRequest Greedy(const std::vector<int32_t>& prompt, int max_tokens) {
    tern::v1::GenerateRequest request;
    request.set_request_id("r");
    request.mutable_prompt_token_ids()->Assign(prompt.begin(), prompt.end());
    request.mutable_sampling()->set_temperature(0);
    request.mutable_sampling()->set_max_tokens(max_tokens);
    request.mutable_sampling()->set_ignore_eos(true);
    return request;
  }

  bool WaitIdle() {
    for (int i = 0; i < 1000; ++i) {
      const EngineLoad load = engine_->Load();
      if (load.running == 0 && load.waiting == 0) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }

  std::unique_ptr<Model> model_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<WorkerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<tern::v1::Worker::Stub> stub_;
};

TEST_F(WorkerServiceTest, WatchStateEventsRebuildTheEnginesCachedBlocks) {
  Watcher watcher(stub_.get());
  // The first message comes at once, with a snapshot that starts from empty.
  ASSERT_TRUE(watcher.WaitFor([](const auto& states) { return !states.empty(); }));
  ASSERT_GT(watcher.states().front().kv_events_size(), 0);
  EXPECT_TRUE(watcher.states().front().kv_events(0).has_cleared());
  // It carries the engine's step-time estimate (from its warm-up steps);
  // steps of the tiny model are far too short to be announced as running.
  EXPECT_GT(watcher.states().front().load().expected_step_ms(), 0);
  EXPECT_FALSE(watcher.states().front().load().step_running());

  std::vector<int32_t> shared_prefix(32);
  for (size_t i = 0; i < shared_prefix.size(); ++i) shared_prefix[i] = 2000 + i;
  std::vector<int32_t> last_prompt;
  for (int round = 0; round < 3; ++round) {
    std::vector<std::thread> clients;
    std::vector<Generated> results(4);
    for (int i = 0; i < 4; ++i) {
      std::vector<int32_t> prompt = shared_prefix;
      for (int t = 0; t < 20; ++t) prompt.push_back(3000 + 100 * round + 10 * i + t);
      last_prompt = prompt;
      clients.emplace_back(
          [this, prompt, &results, i] { results[i] = Generate(Greedy(prompt, 20)); });
    }
    for (auto& client : clients) client.join();
    for (const Generated& result : results)
      ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  }
  ASSERT_TRUE(WaitIdle());

  // A second subscription's first message is an independent snapshot of what
  // the engine holds now; the first stream, replayed, must reach exactly it.
  Watcher late(stub_.get());
  ASSERT_TRUE(late.WaitFor([](const auto& states) { return !states.empty(); }));
  const Replica snapshot = Replay({late.states().front()});
  EXPECT_TRUE(snapshot.starts_cleared);
  EXPECT_FALSE(snapshot.hashes.empty());
  EXPECT_EQ(static_cast<int64_t>(snapshot.hashes.size()), engine_->Load().cached_kv_blocks);
  for (uint64_t h : HashPrefixBlocks(last_prompt, 16)) EXPECT_TRUE(snapshot.hashes.contains(h));

  const bool converged =
      watcher.WaitFor([&](const auto& states) { return Replay(states).hashes == snapshot.hashes; });
  const Replica replica = Replay(watcher.states());
  EXPECT_TRUE(converged) << replica.hashes.size() << " replayed vs " << snapshot.hashes.size();
  EXPECT_TRUE(replica.increasing);
  EXPECT_GT(replica.removed_events, 0) << "the small pool was meant to evict";
  // Load comes along: idle now, with the step counter moving.
  const tern::v1::WorkerLoad load = watcher.states().back().load();
  EXPECT_GT(load.step_counter(), 0u);
  EXPECT_TRUE(watcher.WaitFor([](const auto& states) {
    return states.back().load().running_seqs() == 0 && states.back().load().waiting_seqs() == 0;
  }));
}

TEST_F(WorkerServiceTest, GenerateReturnsLogprobsOfTheModelsDistribution) {
  const std::vector<int32_t> prompt = {128000, 791, 4062, 14198, 39935, 927, 279, 16053};
  tern::v1::GenerateRequest request = Greedy(prompt, 6);
  request.mutable_sampling()->set_logprobs(true);
  request.mutable_sampling()->set_top_logprobs(3);
  const Generated result = Generate(request);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();

  // Reference: the model's own forward pass, without the engine.
  KvCache cache(model_->config(), static_cast<int>(prompt.size()) + 8);
  std::vector<float> logits;
  ASSERT_TRUE(ReferenceForward(*model_, prompt, cache, &logits).ok());
  int tokens = 0;
  for (const tern::v1::GenerateResponse& response : result.responses) {
    ASSERT_EQ(response.logprobs_size(), response.token_ids_size());
    for (int i = 0; i < response.token_ids_size(); ++i, ++tokens) {
      const tern::v1::TokenLogprob& lp = response.logprobs(i);
      const int32_t id = response.token_ids(i);
      EXPECT_EQ(lp.token_id(), id);
      ASSERT_EQ(lp.top_size(), 3);
      for (int k = 1; k < 3; ++k) EXPECT_GE(lp.top(k - 1).logprob(), lp.top(k).logprob());
      EXPECT_EQ(lp.top(0).token_id(), id);  // greedy takes the most likely token
      EXPECT_LE(lp.logprob(), 0.0f);

      double max_logit = logits[0];
      for (float l : logits) max_logit = std::max<double>(max_logit, l);
      double sum = 0;
      for (float l : logits) sum += std::exp(l - max_logit);
      const double log_z = max_logit + std::log(sum);
      EXPECT_NEAR(lp.logprob(), logits[id] - log_z, 2e-3) << "token " << tokens;
      for (const auto& top : lp.top())
        EXPECT_NEAR(top.logprob(), logits[top.token_id()] - log_z, 2e-3);
      ASSERT_TRUE(ReferenceForward(*model_, absl::MakeConstSpan(&id, 1), cache, &logits).ok());
    }
  }
  EXPECT_EQ(tokens, 6);
}

TEST_F(WorkerServiceTest, UsageReportsCachedPromptTokens) {
  std::vector<int32_t> prompt;
  for (int i = 0; i < 40; ++i) prompt.push_back(500 + i);
  const Generated first = Generate(Greedy(prompt, 2));
  ASSERT_TRUE(first.status.ok());
  EXPECT_EQ(first.responses.back().usage().cached_prompt_tokens(), 0);
  const Generated second = Generate(Greedy(prompt, 2));
  ASSERT_TRUE(second.status.ok());
  // Two full blocks of 16 came from the prefix cache.
  EXPECT_EQ(second.responses.back().usage().cached_prompt_tokens(), 32);
  EXPECT_EQ(second.responses.back().usage().prompt_tokens(), 40);
}

TEST_F(WorkerServiceTest, InfoReportsTheEnginesKvPool) {
  grpc::ClientContext context;
  tern::v1::WorkerInfo info;
  ASSERT_TRUE(stub_->Info(&context, tern::v1::InfoRequest(), &info).ok());
  EXPECT_EQ(info.kv_block_size(), 16);
  EXPECT_EQ(info.kv_blocks_total(), 24);
  EXPECT_EQ(info.kv_blocks_total(), engine_->num_kv_blocks());
}

TEST_F(WorkerServiceTest, WatchStateEndsWhenTheClientCancels) {
  Watcher watcher(stub_.get());
  ASSERT_TRUE(watcher.WaitFor([](const auto& states) { return !states.empty(); }));
  EXPECT_EQ(service_->watchers(), 1);
  watcher.Cancel();
  EXPECT_EQ(watcher.WaitEnd().error_code(), grpc::StatusCode::CANCELLED);
  // The server side ends too: its thread is joined and the reactor gone.
  for (int i = 0; i < 500 && service_->watchers() > 0; ++i) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(service_->watchers(), 0);
}

TEST_F(WorkerServiceTest, StopWatchersEndsStreamsSoShutdownIsPrompt) {
  Watcher watcher(stub_.get());
  ASSERT_TRUE(watcher.WaitFor([](const auto& states) { return !states.empty(); }));
  service_->StopWatchers();
  EXPECT_EQ(watcher.WaitEnd().error_code(), grpc::StatusCode::UNAVAILABLE);
  Watcher refused(stub_.get());
  EXPECT_EQ(refused.WaitEnd().error_code(), grpc::StatusCode::UNAVAILABLE);
  const absl::Time start = absl::Now();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(30));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(service_->watchers(), 0);
}

TEST_F(WorkerServiceTest, ServerShutdownEndsOpenWatchers) {
  Watcher watcher(stub_.get());
  ASSERT_TRUE(watcher.WaitFor([](const auto& states) { return !states.empty(); }));
  // Without StopWatchers the server cancels the stream at its deadline.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  EXPECT_NE(watcher.WaitEnd().error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(service_->watchers(), 0);
}

}  // namespace
}  // namespace tern::worker
