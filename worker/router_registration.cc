#include "worker/router_registration.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/time/time.h"
#include "common/log.h"
#include "tern/v1/router.grpc.pb.h"

namespace tern::worker {

RouterRegistration::RouterRegistration(std::string router, std::string advertise,
                                       tern::ChannelSecurity security)
    : router_(std::move(router)), advertise_(std::move(advertise)), security_(std::move(security)) {
  thread_ = std::thread([this] { Loop(); });
}

RouterRegistration::~RouterRegistration() { Stop(); }

void RouterRegistration::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void RouterRegistration::Loop() {
  auto stub = tern::v1::Router::NewStub(security_.CreateChannel(router_));
  tern::v1::RegisterWorkerRequest request;
  request.set_address(advertise_);
  bool registered = false;
  absl::Duration wait = absl::ZeroDuration();
  while (!stop_.WaitForNotificationWithTimeout(wait)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    tern::v1::RegisterWorkerResponse response;
    const grpc::Status status = stub->RegisterWorker(&ctx, request, &response);
    if (status.ok()) {
      if (!registered) {
        TERN_LOG(Info) << "registered with router " << router_ << " as " << advertise_ << " (lease "
                       << response.lease_ms() << " ms)";
      }
      registered = true;
      wait = std::max(absl::Milliseconds(100), absl::Milliseconds(response.lease_ms()) / 3);
    } else {
      if (registered || wait == absl::ZeroDuration()) {
        TERN_LOG(Warning) << "cannot register with router " << router_ << ": "
                          << status.error_message() << " (retrying every second)";
      }
      registered = false;
      wait = absl::Seconds(1);
    }
  }
}

}  // namespace tern::worker
