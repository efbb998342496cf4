#include "router/router_service.h"

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>

#include <optional>
#include <set>
#include <thread>

#include "router/core/dispatcher.h"
#include "router/fleet.h"
#include "tern/v1/router.grpc.pb.h"
#include "tests/testing/tiny_model.h"
#include "worker/engine/engine.h"
#include "worker/model/model.h"
#include "worker/worker_service.h"

namespace tern::router {
namespace {

// A real worker (engine + gRPC service over the tiny model) on 127.0.0.1:0.
struct InProcessWorker {
  InProcessWorker(const worker::Model* model, const std::string& name) {
    worker::EngineOptions options;
    options.max_num_seqs = 4;
    options.max_model_len = 2048;
    options.executor.tp = 1;
    options.executor.block_size = 16;
    options.executor.kv_cache_bytes = int64_t{64} << 20;
    auto created = worker::Engine::Create(model, options);
    EXPECT_TRUE(created.ok()) << created.status();
    engine = std::move(*created);
    service = std::make_unique<worker::WorkerService>(engine.get(), model,
                                                      worker::WorkerIdentity{name, 16, "test"});
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service.get());
    server = builder.BuildAndStart();
    server->GetHealthCheckService()->SetServingStatus(true);
  }
  ~InProcessWorker() { Kill(); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
  // As a crash looks to the router: every stream of the worker ends at once.
  void Kill() {
    if (killed) return;
    killed = true;
    service->StopWatchers();
    server->Shutdown(std::chrono::system_clock::now());
  }

  std::unique_ptr<worker::Engine> engine;
  std::unique_ptr<worker::WorkerService> service;
  int port = 0;
  bool killed = false;
  std::unique_ptr<grpc::Server> server;
};

class RouterServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = testing::TinyModelDir();
    if (dir.empty()) GTEST_SKIP() << "tokenizer files missing: run scripts/install-deps.sh";
    auto model = worker::Model::Load(dir);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
  }

  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    if (fleet_) fleet_->Stop();
  }

  void StartRouter(const std::vector<std::string>& workers, DispatcherOptions dispatcher = {},
                   const std::function<void(FleetOptions&)>& adjust = nullptr) {
    FleetOptions options;
    options.worker_addresses = workers;
    options.health_interval = std::chrono::milliseconds(200);
    options.health_timeout = std::chrono::milliseconds(500);
    if (adjust) adjust(options);
    fleet_ = std::make_unique<Fleet>(options);
    dispatcher_ = std::make_unique<Dispatcher>(&fleet_->state(), dispatcher);
    fleet_->SetListener([this] { dispatcher_->Pump(); });
    fleet_->Start();
    service_ = std::make_unique<RouterService>(fleet_.get(), dispatcher_.get());
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    stub_ = tern::v1::Router::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                          grpc::InsecureChannelCredentials()));
  }

  static tern::v1::RouterGenerateRequest Request(const std::string& model, int max_tokens,
                                                 std::vector<int32_t> prompt = {128000, 9906,
                                                                                1917}) {
    tern::v1::RouterGenerateRequest request;
    request.set_model(model);
    request.mutable_request()->set_request_id("test");
    for (int32_t id : prompt) request.mutable_request()->add_prompt_token_ids(id);
    request.mutable_request()->mutable_sampling()->set_max_tokens(max_tokens);
    request.mutable_request()->mutable_sampling()->set_ignore_eos(true);
    return request;
  }

  // A prompt of `blocks` full blocks of 16 tokens, distinct per `salt`.
  static std::vector<int32_t> LongPrompt(int blocks, int salt) {
    std::vector<int32_t> prompt;
    for (int i = 0; i < blocks * 16; ++i) prompt.push_back(1000 + (i * 7 + salt * 131) % 5000);
    return prompt;
  }

  struct Result {
    std::vector<int32_t> tokens;
    grpc::Status status;
    tern::v1::Usage usage;
  };

  // Runs a call to the end.
  Result Generate(const tern::v1::RouterGenerateRequest& request,
                  std::chrono::milliseconds timeout) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    auto reader = stub_->Generate(&ctx, request);
    tern::v1::GenerateResponse response;
    Result result;
    while (reader->Read(&response)) {
      result.tokens.insert(result.tokens.end(), response.token_ids().begin(),
                           response.token_ids().end());
      if (response.has_usage()) result.usage = response.usage();
    }
    result.status = reader->Finish();
    return result;
  }

  static bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return done();
  }

  // `n` in-process workers serving the tiny model.
  std::vector<std::unique_ptr<InProcessWorker>> StartWorkers(int n) {
    std::vector<std::unique_ptr<InProcessWorker>> workers;
    for (int i = 0; i < n; ++i) {
      workers.push_back(std::make_unique<InProcessWorker>(model_.get(), "tiny"));
    }
    return workers;
  }

  static std::vector<std::string> Addresses(
      const std::vector<std::unique_ptr<InProcessWorker>>& workers) {
    std::vector<std::string> addresses;
    for (const auto& worker : workers) addresses.push_back(worker->address());
    return addresses;
  }

  // Waits until the router's index shows a worker holding `blocks` blocks;
  // its index in ClusterState, or -1 after 5 s.
  int WaitForHolder(int64_t blocks) {
    int holder = -1;
    WaitFor(
        [&] {
          const auto state = State();
          for (int i = 0; i < state.workers_size(); ++i) {
            if (state.workers(i).cached_blocks() >= blocks) holder = i;
          }
          return holder >= 0;
        },
        std::chrono::seconds(5));
    return holder;
  }

  static bool WaitIdle(worker::Engine& engine) {
    return WaitFor(
        [&] {
          const auto load = engine.Load();
          return load.running == 0 && load.waiting == 0;
        },
        std::chrono::seconds(5));
  }

  tern::v1::ClusterStateResponse State() {
    grpc::ClientContext ctx;
    tern::v1::ClusterStateResponse state;
    EXPECT_TRUE(stub_->ClusterState(&ctx, tern::v1::ClusterStateRequest(), &state).ok());
    return state;
  }

  grpc::Status Register(const std::string& address, int64_t* lease_ms) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    tern::v1::RegisterWorkerRequest request;
    request.set_address(address);
    tern::v1::RegisterWorkerResponse response;
    grpc::Status status = stub_->RegisterWorker(&ctx, request, &response);
    *lease_ms = response.lease_ms();
    return status;
  }

  // The state of the member at `address`, if it is one.
  std::optional<tern::v1::WorkerStatus> Member(const std::string& address) {
    const auto state = State();
    for (const auto& worker : state.workers()) {
      if (worker.address() == address) return worker;
    }
    return std::nullopt;
  }

  std::unique_ptr<worker::Model> model_;
  std::unique_ptr<Fleet> fleet_;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<RouterService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<tern::v1::Router::Stub> stub_;
};

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

TEST_F(RouterServiceTest, PrefixPolicySendsARepeatedPromptToTheWorkerThatCachedIt) {
  std::vector<std::unique_ptr<InProcessWorker>> workers = StartWorkers(3);
  const std::vector<std::string> addresses = Addresses(workers);
  StartRouter(addresses);
  const std::vector<int32_t> prompt = LongPrompt(6, 1);
  ASSERT_TRUE(Generate(Request("tiny", 2, prompt), std::chrono::seconds(30)).status.ok());
  // The worker that computed it publishes its blocks; wait for the index.
  const int holder = WaitForHolder(6);
  ASSERT_GE(holder, 0);
  // Sequential repeats, with distinct other prompts between them.
  for (int round = 0; round < 4; ++round) {
    Result result = Generate(Request("tiny", 2, prompt), std::chrono::seconds(30));
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_GE(result.usage.cached_prompt_tokens(), 80) << "round " << round;
  }
  // Only the holder found anything in its prefix cache: the others never saw the prompt.
  for (int i = 0; i < 3; ++i) {
    const uint64_t hits = workers[i]->engine->Load().prefix_hit_tokens;
    if (i == holder) {
      EXPECT_GE(hits, 4u * 80u);
    } else {
      EXPECT_EQ(hits, 0u) << "worker " << i;
    }
  }
  const auto state = State();
  EXPECT_EQ(state.policy(), "prefix");
  EXPECT_GE(state.workers(holder).predicted_cached_tokens(), 4 * 80);
  EXPECT_GE(state.workers(holder).reported_cached_tokens(), 4 * 80);
}

TEST_F(RouterServiceTest, APerRequestPolicyOverridesTheConfiguredOne) {
  std::vector<std::unique_ptr<InProcessWorker>> workers = StartWorkers(2);
  const std::vector<std::string> addresses = Addresses(workers);
  StartRouter(addresses);
  const std::vector<int32_t> prompt = LongPrompt(6, 1);
  ASSERT_TRUE(Generate(Request("tiny", 2, prompt), std::chrono::seconds(30)).status.ok());
  ASSERT_GE(WaitForHolder(6), 0);
  // Round-robin ignores the cache: the repeats land on both workers, so
  // both end up holding the prompt.
  for (int round = 0; round < 4; ++round) {
    tern::v1::RouterGenerateRequest request = Request("tiny", 2, prompt);
    request.set_routing_policy("round-robin");
    ASSERT_TRUE(Generate(request, std::chrono::seconds(30)).status.ok());
  }
  for (const auto& worker : workers) EXPECT_GT(worker->engine->Load().prompt_tokens, 0u);
  tern::v1::RouterGenerateRequest bad = Request("tiny", 2, prompt);
  bad.set_routing_policy("fastest");
  const Result result = Generate(bad, std::chrono::seconds(30));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(result.status.error_message(), ::testing::HasSubstr("fastest"));
}

TEST_F(RouterServiceTest, AModelPolicyOverridesTheDefaultOne) {
  std::vector<std::unique_ptr<InProcessWorker>> workers = StartWorkers(2);
  const std::vector<std::string> addresses = Addresses(workers);
  DispatcherOptions options;  // prefix by default
  options.model_policies["tiny"] = PolicyKind::kRoundRobin;
  StartRouter(addresses, options);
  // Under prefix a repeated prompt would follow its cache to one worker;
  // tiny's round-robin alternates, so both workers see it.
  const std::vector<int32_t> prompt = LongPrompt(6, 2);
  for (int round = 0; round < 4; ++round) {
    ASSERT_TRUE(Generate(Request("tiny", 2, prompt), std::chrono::seconds(30)).status.ok());
  }
  for (const auto& worker : workers) EXPECT_GT(worker->engine->Load().prompt_tokens, 0u);
  EXPECT_EQ(dispatcher_->PolicyFor("tiny"), PolicyKind::kRoundRobin);
  EXPECT_EQ(dispatcher_->PolicyFor("other"), PolicyKind::kPrefix);
}

TEST_F(RouterServiceTest, ASessionStaysOnItsWorkerAndSessionsSpread) {
  std::vector<std::unique_ptr<InProcessWorker>> workers = StartWorkers(3);
  const std::vector<std::string> addresses = Addresses(workers);
  StartRouter(addresses);
  // The worker rendezvous hashing gives a session, computed here.
  auto home = [&](const std::string& key) {
    size_t best = 0;
    for (size_t i = 1; i < addresses.size(); ++i) {
      if (RendezvousWeight(key, addresses[i]) > RendezvousWeight(key, addresses[best])) best = i;
    }
    return best;
  };
  auto prompt_tokens = [&] {
    std::vector<uint64_t> tokens;
    for (const auto& worker : workers) tokens.push_back(worker->engine->Load().prompt_tokens);
    return tokens;
  };
  // Distinct prompts: without the session the prefix policy would spread them.
  const size_t alice = home("alice");
  for (int i = 0; i < 4; ++i) {
    tern::v1::RouterGenerateRequest request = Request("tiny", 2, LongPrompt(2, 10 + i));
    request.set_session_key("alice");
    ASSERT_TRUE(Generate(request, std::chrono::seconds(30)).status.ok());
  }
  const std::vector<uint64_t> after_alice = prompt_tokens();
  for (size_t i = 0; i < workers.size(); ++i) {
    if (i == alice) {
      EXPECT_EQ(after_alice[i], 4u * 32) << "worker " << i;
    } else {
      EXPECT_EQ(after_alice[i], 0u) << "worker " << i;
    }
  }
  EXPECT_EQ(dispatcher_->stats().sticky, 4u);
  // Many sessions land where the hash says, so on more than one worker.
  std::set<size_t> homes;
  for (int s = 0; s < 9; ++s) {
    const std::string key = "user-" + std::to_string(s);
    const std::vector<uint64_t> before = prompt_tokens();
    tern::v1::RouterGenerateRequest request = Request("tiny", 2, LongPrompt(2, 20 + s));
    request.set_session_key(key);
    ASSERT_TRUE(Generate(request, std::chrono::seconds(30)).status.ok());
    const std::vector<uint64_t> after = prompt_tokens();
    EXPECT_GT(after[home(key)], before[home(key)]) << key;
    homes.insert(home(key));
  }
  EXPECT_GE(homes.size(), 2u);
}

TEST_F(RouterServiceTest, ARegisteredWorkerServesWhileItRenewsAndLeavesAfterItsLease) {
  InProcessWorker worker(model_.get(), "tiny");
  StartRouter({}, {},
              [](FleetOptions& options) { options.registration_lease = absl::Milliseconds(600); });
  // No members yet.
  EXPECT_EQ(Generate(Request("tiny", 2), std::chrono::seconds(5)).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  int64_t lease_ms = 0;
  EXPECT_EQ(Register("no-port", &lease_ms).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(Register(worker.address(), &lease_ms).ok());
  EXPECT_EQ(lease_ms, 600);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto member = Member(worker.address());
        return member && member->healthy() && member->state_stream();
      },
      std::chrono::seconds(5)));
  ASSERT_TRUE(Generate(Request("tiny", 2, LongPrompt(3, 5)), std::chrono::seconds(30)).status.ok());
  EXPECT_EQ(worker.engine->Load().prompt_tokens, 48u);
  // Renewing every lease/3 keeps it a member for several leases.
  for (int i = 0; i < 8; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    ASSERT_TRUE(Register(worker.address(), &lease_ms).ok());
    ASSERT_TRUE(Member(worker.address()).has_value()) << "renewal " << i;
  }
  // It stops renewing: gone after the lease, from routing, the models and the state.
  const auto stopped = std::chrono::steady_clock::now();
  ASSERT_TRUE(
      WaitFor([&] { return !Member(worker.address()).has_value(); }, std::chrono::seconds(5)));
  EXPECT_GE(std::chrono::steady_clock::now() - stopped, std::chrono::milliseconds(350));
  EXPECT_TRUE(fleet_->workers().empty());
  EXPECT_EQ(Generate(Request("tiny", 2), std::chrono::seconds(5)).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext ctx;
  tern::v1::ListModelsResponse models;
  ASSERT_TRUE(stub_->ListModels(&ctx, tern::v1::ListModelsRequest(), &models).ok());
  EXPECT_EQ(models.models_size(), 0);
  EXPECT_EQ(fleet_->index_stats().exact_pairs, 0);
  EXPECT_EQ(fleet_->index_stats().approx_pairs, 0);
  // Registering again brings it back under its old id.
  ASSERT_TRUE(Register(worker.address(), &lease_ms).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        auto member = Member(worker.address());
        return member && member->healthy();
      },
      std::chrono::seconds(5)));
  ASSERT_EQ(fleet_->workers().size(), 1u);
  EXPECT_EQ(fleet_->workers()[0]->id(), 0);
  EXPECT_TRUE(Generate(Request("tiny", 2), std::chrono::seconds(30)).status.ok());
}

TEST_F(RouterServiceTest, ADnsNameBecomesAWorkerPerAddress) {
  InProcessWorker worker(model_.get(), "tiny");
  StartRouter({"dns:localhost:" + std::to_string(worker.port)}, {},
              [](FleetOptions& options) { options.dns_refresh = absl::Milliseconds(200); });
  // localhost is 127.0.0.1 and perhaps ::1; the worker listens on the first
  // only, so a ::1 member stays unhealthy and takes nothing.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto member = Member(worker.address());
        return member && member->healthy();
      },
      std::chrono::seconds(5)));
  const tern::v1::ClusterStateResponse state = State();
  for (const auto& status : state.workers()) {
    EXPECT_TRUE(status.address() == worker.address() ||
                status.address() == "[::1]:" + std::to_string(worker.port))
        << status.address();
  }
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(
        Generate(Request("tiny", 2, LongPrompt(2, 40 + i)), std::chrono::seconds(30)).status.ok());
  }
  EXPECT_EQ(worker.engine->Load().prompt_tokens, 3u * 32);
}

TEST_F(RouterServiceTest, HotSpotGuardSpreadsAPopularPrefix) {
  std::vector<std::unique_ptr<InProcessWorker>> workers = StartWorkers(3);
  const std::vector<std::string> addresses = Addresses(workers);
  DispatcherOptions options;
  options.policy.imbalance_abs = 1;
  options.policy.imbalance_rel = 1.0;
  StartRouter(addresses, options);
  const std::vector<int32_t> prompt = LongPrompt(4, 2);
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < 9; ++i) {
    clients.emplace_back([&] {
      if (Generate(Request("tiny", 24, prompt), std::chrono::seconds(60)).status.ok()) ++ok;
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), 9);
  for (int i = 0; i < 3; ++i) {
    EXPECT_GT(workers[i]->engine->Load().prompt_tokens, 0u) << "worker " << i << " got nothing";
  }
}

TEST_F(RouterServiceTest, FullQueueAnswersResourceExhaustedFastAndCancelLeavesTheQueue) {
  InProcessWorker worker(model_.get(), "tiny");
  DispatcherOptions options;
  options.slack = 0;
  options.queue.max_length = 1;
  StartRouter({worker.address()}, options);
  // Four long calls fill the worker's four slots.
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<tern::v1::GenerateResponse>>> readers;
  tern::v1::GenerateResponse response;
  for (int i = 0; i < 4; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(stub_->Generate(contexts.back().get(), Request("tiny", 1900)));
    ASSERT_TRUE(readers.back()->Read(&response));
  }
  // The fifth waits in the queue, the sixth finds it full.
  grpc::ClientContext queued_ctx;
  auto queued = stub_->Generate(&queued_ctx, Request("tiny", 4));
  ASSERT_TRUE(WaitFor([&] { return dispatcher_->queued() == 1; }, std::chrono::seconds(5)));
  const auto start = std::chrono::steady_clock::now();
  Result rejected = Generate(Request("tiny", 4), std::chrono::seconds(10));
  EXPECT_EQ(rejected.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
  EXPECT_EQ(State().queued_requests(), 1);
  // Cancelling the queued call takes it out at once.
  queued_ctx.TryCancel();
  EXPECT_FALSE(queued->Read(&response));
  EXPECT_EQ(queued->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitFor([&] { return dispatcher_->queued() == 0; }, std::chrono::seconds(1)));
  for (auto& ctx : contexts) ctx->TryCancel();
  for (auto& reader : readers) {
    while (reader->Read(&response)) {
    }
    reader->Finish();
  }
  EXPECT_TRUE(WaitIdle(*worker.engine));
}

TEST_F(RouterServiceTest, QueuedRequestRunsWhenASlotFrees) {
  InProcessWorker worker(model_.get(), "tiny");
  DispatcherOptions options;
  options.slack = 0;
  StartRouter({worker.address()}, options);
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < 10; ++i) {
    clients.emplace_back([&] {
      Result r = Generate(Request("tiny", 8), std::chrono::seconds(60));
      if (r.status.ok() && r.tokens.size() == 8) ++ok;
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), 10);
  EXPECT_GT(dispatcher_->stats().queued, 0u);
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

}  // namespace
}  // namespace tern::router
