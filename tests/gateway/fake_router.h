// A tern.v1.Router for the gateway's tests, served on 127.0.0.1 port 0: each
// Generate streams a fixed text's token ids one per response, then a stop
// finish (or, given an error status, ends the stream with it instead);
// endlessly with ignore_eos, and never past max_tokens (a length finish).
// It records its calls and how they ended, so cancellation and deadlines
// can be seen reaching it.
//
// Thread-safe: gRPC serves the calls on its own threads.
#ifndef TERN_TESTS_GATEWAY_FAKE_ROUTER_H_
#define TERN_TESTS_GATEWAY_FAKE_ROUTER_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tern/v1/router.grpc.pb.h"

namespace tern::gateway {

class FakeRouter final : public tern::v1::Router::Service {
 public:
  explicit FakeRouter(std::vector<int32_t> tokens, grpc::Status status = grpc::Status::OK)
      : tokens_(std::move(tokens)), status_(std::move(status)) {}
  ~FakeRouter() override { Shutdown(); }

  // Starts serving; returns the port (0 when it could not).
  int Serve() {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    return port;
  }
  void Shutdown() {
    if (server_ != nullptr) server_->Shutdown();
    server_.reset();
  }

  grpc::Status Generate(grpc::ServerContext* context,
                        const tern::v1::RouterGenerateRequest* request,
                        grpc::ServerWriter<tern::v1::GenerateResponse>* writer) override {
    const bool endless = request->request().sampling().ignore_eos();
    const int32_t max_tokens = request->request().sampling().max_tokens();
    {
      absl::MutexLock lock(&mu_);
      ++calls_;
      ++active_;
    }
    grpc::Status status = grpc::Status::OK;
    for (int32_t sent = 0; !context->IsCancelled(); ++sent) {
      tern::v1::GenerateResponse response;
      const bool at_budget = sent == max_tokens;
      if (at_budget || (!endless && sent == static_cast<int32_t>(tokens_.size()))) {
        if (!at_budget && !status_.ok()) {
          status = status_;
          break;
        }
        response.set_finish_reason(at_budget ? tern::v1::FINISH_REASON_LENGTH
                                             : tern::v1::FINISH_REASON_STOP);
        response.mutable_usage()->set_completion_tokens(sent);
        writer->Write(response);
        break;
      }
      response.add_token_ids(tokens_[sent % tokens_.size()]);
      if (!writer->Write(response)) break;
      if (endless) absl::SleepFor(absl::Milliseconds(5));
    }
    absl::MutexLock lock(&mu_);
    --active_;
    if (context->IsCancelled()) ++cancelled_;
    return status;
  }

  // Waits until no call is running; false after `timeout`.
  bool WaitUntilIdle(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return active_ == 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
  }
  int calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  int cancelled() {
    absl::MutexLock lock(&mu_);
    return cancelled_;
  }

 private:
  const std::vector<int32_t> tokens_;
  const grpc::Status status_;  // ends each stream instead of its stop finish, when not OK
  std::unique_ptr<grpc::Server> server_;
  absl::Mutex mu_;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  int active_ ABSL_GUARDED_BY(mu_) = 0;
  int cancelled_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tern::gateway

#endif  // TERN_TESTS_GATEWAY_FAKE_ROUTER_H_
