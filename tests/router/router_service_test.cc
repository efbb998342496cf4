#include "router/router_service.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>

#include <thread>

#include "router/fleet.h"
#include "tern/v1/router.grpc.pb.h"
#include "tests/testing/tiny_model.h"
#include "worker/engine.h"
#include "worker/model.h"
#include "worker/worker_service.h"

namespace tern::router {
namespace {

// A real worker (engine + gRPC service over the tiny model) on 127.0.0.1:0.
struct InProcessWorker {
  InProcessWorker(const worker::Model* model, const std::string& name)
      : engine(model, worker::EngineOptions{.max_num_seqs = 4, .max_model_len = 2048}),
        service(&engine, model, worker::WorkerIdentity{name, 16, "test"}) {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
    server->GetHealthCheckService()->SetServingStatus(true);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
  void Kill() { server->Shutdown(std::chrono::system_clock::now()); }

  worker::Engine engine;
  worker::WorkerService service;
  int port = 0;
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

  void StartRouter(const std::vector<std::string>& workers) {
    FleetOptions options;
    options.worker_addresses = workers;
    options.health_interval = std::chrono::hours(1);  // rounds are run by the test
    options.health_timeout = std::chrono::milliseconds(500);
    fleet_ = std::make_unique<Fleet>(options);
    fleet_->CheckAll();
    service_ = std::make_unique<RouterService>(fleet_.get(), 3);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    stub_ = tern::v1::Router::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                          grpc::InsecureChannelCredentials()));
  }

  static tern::v1::RouterGenerateRequest Request(const std::string& model, int max_tokens) {
    tern::v1::RouterGenerateRequest request;
    request.set_model(model);
    request.mutable_request()->set_request_id("test");
    for (int32_t id : {128000, 9906, 1917}) request.mutable_request()->add_prompt_token_ids(id);
    request.mutable_request()->mutable_sampling()->set_max_tokens(max_tokens);
    request.mutable_request()->mutable_sampling()->set_ignore_eos(true);
    return request;
  }

  // Runs a call to the end: its token ids and final status.
  std::pair<std::vector<int32_t>, grpc::Status> Generate(
      const tern::v1::RouterGenerateRequest& request, std::chrono::milliseconds timeout) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    auto reader = stub_->Generate(&ctx, request);
    tern::v1::GenerateResponse response;
    std::vector<int32_t> tokens;
    while (reader->Read(&response))
      tokens.insert(tokens.end(), response.token_ids().begin(), response.token_ids().end());
    return {tokens, reader->Finish()};
  }

  static bool WaitIdle(worker::Engine& engine) {
    for (int i = 0; i < 200; ++i) {
      const auto load = engine.Load();
      if (load.running == 0 && load.waiting == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return false;
  }

  std::unique_ptr<worker::Model> model_;
  std::unique_ptr<Fleet> fleet_;
  std::unique_ptr<RouterService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<tern::v1::Router::Stub> stub_;
};

TEST_F(RouterServiceTest, RelaysTheWorkersStreamAndListsTheModel) {
  InProcessWorker worker(model_.get(), "tiny");
  StartRouter({worker.address()});
  auto [tokens, status] = Generate(Request("tiny", 8), std::chrono::seconds(30));
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(tokens.size(), 8u);
  auto [again, status2] = Generate(Request("tiny", 8), std::chrono::seconds(30));
  EXPECT_EQ(again, tokens);  // greedy: same tokens

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
  auto [tokens, status] = Generate(Request("other", 4), std::chrono::seconds(10));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(RouterServiceTest, DownWorkerGivesUnavailableNotAHang) {
  auto worker = std::make_unique<InProcessWorker>(model_.get(), "tiny");
  StartRouter({worker->address()});
  worker->Kill();
  // Before the health round notices, the relay itself sees the failure.
  const auto start = std::chrono::steady_clock::now();
  auto [tokens, status] = Generate(Request("tiny", 4), std::chrono::seconds(20));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  fleet_->CheckAll();
  auto [tokens2, status2] = Generate(Request("tiny", 4), std::chrono::seconds(20));
  EXPECT_EQ(status2.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

TEST_F(RouterServiceTest, FailureBeforeFirstTokenIsRetriedOnAnotherWorker) {
  InProcessWorker alive(model_.get(), "tiny");
  auto dead = std::make_unique<InProcessWorker>(model_.get(), "tiny");
  StartRouter({alive.address(), dead->address()});
  dead->Kill();  // still marked healthy: the router learns it from the failed call
  for (int i = 0; i < 4; ++i) {
    auto [tokens, status] = Generate(Request("tiny", 4), std::chrono::seconds(20));
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(tokens.size(), 4u);
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
  EXPECT_TRUE(WaitIdle(worker.engine));
}

TEST_F(RouterServiceTest, DeadlinePropagatesToTheWorker) {
  InProcessWorker worker(model_.get(), "tiny");
  StartRouter({worker.address()});
  auto [tokens, status] = Generate(Request("tiny", 1900), std::chrono::milliseconds(300));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(tokens.size(), 1900u);
  EXPECT_TRUE(WaitIdle(worker.engine));
}

}  // namespace
}  // namespace tern::router
