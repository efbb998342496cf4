// Test support for the router's service tests: real in-process workers
// (engine + gRPC service over the tiny model) on 127.0.0.1 and a router in
// front of them.
#ifndef TERN_TESTS_ROUTER_ROUTER_FIXTURE_H_
#define TERN_TESTS_ROUTER_ROUTER_FIXTURE_H_

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>

#include <optional>
#include <set>
#include <thread>

#include "router/core/dispatcher.h"
#include "router/fleet.h"
#include "router/router_service.h"
#include "tern/v1/router.grpc.pb.h"
#include "tests/testing/tiny_model.h"
#include "worker/engine/engine.h"
#include "worker/model/model.h"
#include "worker/worker_service.h"

namespace tern::router {

// A real worker (engine + gRPC service over the tiny model) on 127.0.0.1:0.
struct InProcessWorker {
  // `before_step` runs before every engine step (a slow or hung model).
  InProcessWorker(const worker::Model* model, const std::string& name,
                  std::function<void(int64_t tokens)> before_step = nullptr) {
    worker::EngineOptions options;
    options.before_step_for_testing = std::move(before_step);
    options.max_num_seqs = 4;
    options.max_model_len = 2048;
    options.executor.tp = 1;
    options.executor.block_size = 16;
    options.executor.kv_cache_bytes = int64_t{64} << 20;
    auto created = worker::Engine::Create(model, options);
    EXPECT_TRUE(created.ok()) << created.status();
    engine = std::move(*created);
    service =
        std::make_unique<worker::WorkerService>(engine.get(), worker::WorkerIdentity{name, "test"});
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

}  // namespace tern::router

#endif  // TERN_TESTS_ROUTER_ROUTER_FIXTURE_H_
