// Routing through the router service with real in-process workers: policies,
// session affinity, membership (registration, DNS), the hot-spot guard and the queue.
#include <gtest/gtest.h>

#include "tests/router/router_fixture.h"

namespace tern::router {
namespace {

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

}  // namespace
}  // namespace tern::router
