// The router service with real in-process workers: relaying streams, errors,
// cancellation, deadlines, failover with resume, cluster state.
#include <gtest/gtest.h>

#include <atomic>
#include <optional>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "tests/router/router_fixture.h"

namespace tern::router {
namespace {

TEST_F(RouterServiceTest, RelaysTheWorkersStreamAndListsTheModel) {
  InProcessWorker worker(model_.get(), "tiny");
  StartRouter({worker.address()});
  Result first = Generate(Request("tiny", 8), std::chrono::seconds(30));
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  EXPECT_EQ(first.tokens.size(), 8u);
  EXPECT_EQ(first.usage.completion_tokens(), 8);
  Result again = Generate(Request("tiny", 8), std::chrono::seconds(30));
  EXPECT_EQ(again.tokens, first.tokens);  // greedy: same tokens

  grpc::ClientContext ctx;
  tern::v1::ListModelsResponse models;
  ASSERT_TRUE(stub_->ListModels(&ctx, tern::v1::ListModelsRequest(), &models).ok());
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).id(), "tiny");
  EXPECT_EQ(models.models(0).max_model_len(), 2048);
  EXPECT_EQ(models.models(0).ready_workers(), 1);
}

TEST_F(RouterServiceTest, UnknownModelIsNotFound) {
  InProcessWorker worker(model_.get(), "tiny");
  StartRouter({worker.address()});
  EXPECT_EQ(Generate(Request("other", 4), std::chrono::seconds(10)).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(RouterServiceTest, DownWorkerGivesUnavailableNotAHang) {
  auto worker = std::make_unique<InProcessWorker>(model_.get(), "tiny");
  StartRouter({worker->address()});
  worker->Kill();
  const auto start = std::chrono::steady_clock::now();
  // The state stream's end marks the worker unhealthy at once.
  ASSERT_TRUE(
      WaitFor([&] { return !fleet_->healthy(*fleet_->workers()[0]); }, std::chrono::seconds(3)));
  Result result = Generate(Request("tiny", 4), std::chrono::seconds(20));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << result.status.error_message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(RouterServiceTest, FailureBeforeFirstTokenIsRetriedOnAnotherWorker) {
  InProcessWorker alive(model_.get(), "tiny");
  auto dead = std::make_unique<InProcessWorker>(model_.get(), "tiny");
  StartRouter({alive.address(), dead->address()}, {.policy = {.kind = PolicyKind::kRoundRobin}});
  // Gone without its streams noticing yet: only its gRPC server stops.
  dead->server->Shutdown(std::chrono::system_clock::now());
  dead->killed = true;
  for (int i = 0; i < 4; ++i) {
    Result result = Generate(Request("tiny", 4), std::chrono::seconds(20));
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_EQ(result.tokens.size(), 4u);
  }
}

TEST_F(RouterServiceTest, CallerCancellationStopsTheWorker) {
  InProcessWorker worker(model_.get(), "tiny");
  StartRouter({worker.address()});
  grpc::ClientContext ctx;
  auto reader = stub_->Generate(&ctx, Request("tiny", 1900));
  tern::v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  ctx.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitIdle(*worker.engine));
  // Its KV blocks are free again (cached ones stay, unreferenced and evictable).
  const worker::EngineLoad load = worker.engine->Load();
  EXPECT_EQ(load.free_kv_blocks, load.total_kv_blocks);
}

TEST_F(RouterServiceTest, DeadlinePropagatesToTheWorker) {
  InProcessWorker worker(model_.get(), "tiny");
  StartRouter({worker.address()});
  Result result = Generate(Request("tiny", 1900), std::chrono::milliseconds(300));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(result.tokens.size(), 1900u);
  EXPECT_TRUE(WaitIdle(*worker.engine));
}

TEST_F(RouterServiceTest, KilledWorkerMidStreamIsResumedWithIdenticalTokens) {
  auto a = std::make_unique<InProcessWorker>(model_.get(), "tiny");
  auto b = std::make_unique<InProcessWorker>(model_.get(), "tiny");
  StartRouter({a->address(), b->address()});
  tern::v1::RouterGenerateRequest request = Request("tiny", 48, LongPrompt(2, 3));
  request.mutable_request()->set_request_id("resume-me");
  tern::v1::SamplingParams* sampling = request.mutable_request()->mutable_sampling();
  sampling->set_temperature(1.0f);
  sampling->set_seed(1234);
  sampling->set_has_seed(true);
  Result reference = Generate(request, std::chrono::seconds(60));
  ASSERT_TRUE(reference.status.ok()) << reference.status.error_message();
  ASSERT_EQ(reference.tokens.size(), 48u);

  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub_->Generate(&ctx, request);
  std::vector<int32_t> tokens;
  tern::v1::GenerateResponse response;
  while (tokens.size() < 8 && reader->Read(&response)) {
    tokens.insert(tokens.end(), response.token_ids().begin(), response.token_ids().end());
  }
  ASSERT_GE(tokens.size(), 8u);
  // Kill whichever worker runs it.
  InProcessWorker* serving = a->engine->Load().running > 0 ? a.get() : b.get();
  serving->Kill();
  tern::v1::Usage usage;
  while (reader->Read(&response)) {
    tokens.insert(tokens.end(), response.token_ids().begin(), response.token_ids().end());
    if (response.has_usage()) usage = response.usage();
  }
  const grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(tokens, reference.tokens);
  EXPECT_EQ(usage.completion_tokens(), 48);
}

TEST_F(RouterServiceTest, ResumeKeepsTheSeedTheWorkerChose) {
  auto a = std::make_unique<InProcessWorker>(model_.get(), "tiny");
  auto b = std::make_unique<InProcessWorker>(model_.get(), "tiny");
  StartRouter({a->address(), b->address()});
  tern::v1::RouterGenerateRequest request = Request("tiny", 40, LongPrompt(1, 5));
  request.mutable_request()->mutable_sampling()->set_temperature(1.0f);  // no seed given
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub_->Generate(&ctx, request);
  std::vector<int32_t> tokens;
  tern::v1::GenerateResponse response;
  uint64_t seed = 0;
  int seeds_seen = 0;
  while (tokens.size() < 6 && reader->Read(&response)) {
    if (response.has_seed()) seed = response.seed(), ++seeds_seen;
    tokens.insert(tokens.end(), response.token_ids().begin(), response.token_ids().end());
  }
  ASSERT_EQ(seeds_seen, 1);
  (a->engine->Load().running > 0 ? a : b)->Kill();
  while (reader->Read(&response)) {
    if (response.has_seed()) ++seeds_seen;
    tokens.insert(tokens.end(), response.token_ids().begin(), response.token_ids().end());
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(seeds_seen, 1);  // the client hears the seed once
  // The same request with that seed given explicitly, undisturbed.
  request.mutable_request()->mutable_sampling()->set_seed(seed);
  request.mutable_request()->mutable_sampling()->set_has_seed(true);
  Result reference = Generate(request, std::chrono::seconds(60));
  ASSERT_TRUE(reference.status.ok()) << reference.status.error_message();
  EXPECT_EQ(tokens, reference.tokens);
}

TEST_F(RouterServiceTest, ClusterStateReportsLoadStreamAndCircuit) {
  InProcessWorker worker(model_.get(), "tiny");
  StartRouter({worker.address()});
  ASSERT_TRUE(Generate(Request("tiny", 4, LongPrompt(3, 4)), std::chrono::seconds(30)).status.ok());
  ASSERT_TRUE(
      WaitFor([&] { return State().workers(0).cached_blocks() >= 3; }, std::chrono::seconds(5)));
  const auto state = State();
  ASSERT_EQ(state.workers_size(), 1);
  EXPECT_TRUE(state.workers(0).healthy());
  EXPECT_TRUE(state.workers(0).state_stream());
  EXPECT_EQ(state.workers(0).circuit(), "closed");
  EXPECT_GT(state.workers(0).load().step_counter(), 0u);
  EXPECT_GT(state.workers(0).load().free_kv_blocks(), 0);
  EXPECT_EQ(state.workers(0).routed_prompt_tokens(), 48);
}

TEST_F(RouterServiceTest, AWorkerWithLongStepsStaysHealthy) {
  // Every step takes 1 s, more than three times the stall timeout: the worker
  // announces each step and its expected duration, and the router waits.
  InProcessWorker slow(model_.get(), "tiny",
                       [](int64_t) { std::this_thread::sleep_for(std::chrono::seconds(1)); });
  StartRouter({slow.address()}, {},
              [](FleetOptions& options) { options.stall_timeout = absl::Milliseconds(300); });
  const absl::Time start = absl::Now();
  const Result result = Generate(Request("tiny", 3), std::chrono::seconds(60));
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_EQ(result.tokens.size(), 3u);
  EXPECT_GE(absl::Now() - start, absl::Seconds(3)) << "three steps of 1 s";
  EXPECT_TRUE(fleet_->healthy(*fleet_->workers()[0]));
  const auto state = State();
  EXPECT_EQ(state.workers(0).circuit(), "closed");
}

TEST_F(RouterServiceTest, AHungEngineIsCaughtWithinTheStallBound) {
  // Steps are fast until the engine hangs inside one (a deadlock, a stuck device).
  absl::Notification release;
  std::atomic<bool> hang{false};
  InProcessWorker worker(model_.get(), "tiny", [&](int64_t) {
    if (hang.load()) release.WaitForNotification();
  });
  StartRouter({worker.address()}, {},
              [](FleetOptions& options) { options.stall_timeout = absl::Milliseconds(300); });
  ASSERT_TRUE(Generate(Request("tiny", 2), std::chrono::seconds(30)).status.ok());
  hang.store(true);
  const absl::Time start = absl::Now();
  const Result result = Generate(Request("tiny", 4), std::chrono::seconds(30));
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << result.status.error_message();
  // The bound: 300 ms plus twice a fast step, plus the loop's 100 ms tick.
  EXPECT_LT(took, absl::Seconds(2)) << absl::FormatDuration(took);
  const std::optional<tern::v1::WorkerStatus> member = Member(worker.address());
  ASSERT_TRUE(member.has_value());
  EXPECT_FALSE(member->healthy());
  EXPECT_NE(member->detail().find("no progress"), std::string::npos) << member->detail();
  release.Notify();
}

}  // namespace
}  // namespace tern::router
