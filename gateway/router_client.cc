#include "gateway/router_client.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/client_callback.h>

#include <utility>

#include "common/grpc_status.h"

namespace tern::gateway {

// Owns itself from StartCall until OnDone (self_), so the handle returned to
// the caller stays valid for Cancel() whatever the order of events.
class RouterClient::Reactor : public grpc::ClientReadReactor<tern::v1::GenerateResponse>,
                              public GenerateCall,
                              public std::enable_shared_from_this<Reactor> {
 public:
  Reactor(RouterClient* client, tern::v1::RouterGenerateRequest request,
          GenerateCallbacks callbacks)
      : client_(client), request_(std::move(request)), callbacks_(std::move(callbacks)) {}

  void Start(tern::v1::Router::Stub* stub, absl::Duration timeout) {
    self_ = shared_from_this();
    context_.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    client_->Register(this);
    stub->async()->Generate(&context_, &request_, this);
    StartRead(&response_);
    StartCall();
  }

  void Cancel() override { context_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows with the status.
    callbacks_.on_response(std::move(response_));
    response_.Clear();
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    GenerateCallbacks callbacks = std::move(callbacks_);
    callbacks_ = {};
    callbacks.on_done(FromGrpcStatus(status));
    // Drop what the callbacks captured while the client still counts this
    // call as in flight: they may reference io contexts that are torn down
    // once the client reports idle.
    callbacks = {};
    RouterClient* client = client_;
    std::shared_ptr<Reactor> self = std::move(self_);
    client->Unregister(this);
  }

 private:
  RouterClient* const client_;
  grpc::ClientContext context_;
  tern::v1::RouterGenerateRequest request_;
  tern::v1::GenerateResponse response_;
  GenerateCallbacks callbacks_;
  std::shared_ptr<Reactor> self_;
};

RouterClient::RouterClient(std::shared_ptr<grpc::Channel> channel)
    : stub_(tern::v1::Router::NewStub(std::move(channel))) {}

std::unique_ptr<RouterClient> RouterClient::Connect(const std::string& target,
                                                    const tern::ChannelSecurity& security) {
  // gRPC's default reconnect backoff grows to two minutes: a router that
  // restarts would stay unreachable long after it is back. Retry within a second.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  return std::make_unique<RouterClient>(security.CreateChannel(target, args));
}

RouterClient::~RouterClient() {
  CancelAll();
  WaitUntilIdle(absl::InfiniteDuration());
}

std::shared_ptr<GenerateCall> RouterClient::Generate(tern::v1::RouterGenerateRequest request,
                                                     absl::Duration timeout,
                                                     GenerateCallbacks callbacks) {
  auto reactor = std::make_shared<Reactor>(this, std::move(request), std::move(callbacks));
  reactor->Start(stub_.get(), timeout);
  return reactor;
}

absl::StatusOr<tern::v1::ListModelsResponse> RouterClient::ListModels(absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  tern::v1::ListModelsResponse response;
  const grpc::Status status = stub_->ListModels(&context, tern::v1::ListModelsRequest(), &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

void RouterClient::CancelAll() {
  absl::MutexLock lock(&mu_);
  for (Reactor* reactor : active_) reactor->Cancel();
}

bool RouterClient::WaitUntilIdle(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return active_.empty(); };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
}

void RouterClient::Register(Reactor* reactor) {
  absl::MutexLock lock(&mu_);
  active_.insert(reactor);
}

void RouterClient::Unregister(Reactor* reactor) {
  absl::MutexLock lock(&mu_);
  active_.erase(reactor);
}

}  // namespace tern::gateway
