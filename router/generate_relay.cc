#include "router/generate_relay.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace tern::router {

// One call to one worker. It holds itself open (AddHold) until the relay will
// start no more operations on it. Shared ownership (itself until OnDone, and
// the relay) lets the relay cancel it without a lock and without racing its end.
class GenerateRelay::Attempt : public grpc::ClientReadReactor<tern::v1::GenerateResponse>,
                               public std::enable_shared_from_this<GenerateRelay::Attempt> {
 public:
  Attempt(GenerateRelay* relay, WorkerEndpoint* worker) : relay_(relay), worker_(worker) {
    request_ = relay->request_->request();
    const auto deadline = relay->context_->deadline();
    if (deadline != std::chrono::system_clock::time_point::max()) context_.set_deadline(deadline);
    worker_->AddInflight(1);
  }

  void Start() {
    self_ = shared_from_this();
    worker_->stub()->async()->Generate(&context_, &request_, this);
    AddHold();
    StartRead(&response_);
    StartCall();
  }

  void ReadNext() { StartRead(&response_); }
  void Cancel() { context_.TryCancel(); }
  // After Release the relay must not touch this attempt again.
  void Release() { RemoveHold(); }
  WorkerEndpoint* worker() const { return worker_; }

  void OnReadDone(bool ok) override {
    if (ok) {
      relay_->OnWorkerResponse(response_);
    } else {
      Release();  // the stream ended; OnDone follows with its status
    }
  }

  void OnDone(const grpc::Status& status) override {
    std::shared_ptr<Attempt> keep = std::move(self_);
    worker_->AddInflight(-1);
    relay_->OnAttemptDone(this, status);
  }

 private:
  GenerateRelay* const relay_;
  WorkerEndpoint* const worker_;
  grpc::ClientContext context_;
  tern::v1::GenerateRequest request_;
  tern::v1::GenerateResponse response_;
  std::shared_ptr<Attempt> self_;
};

GenerateRelay::GenerateRelay(Fleet* fleet, int max_attempts, grpc::CallbackServerContext* context,
                             const tern::v1::RouterGenerateRequest* request)
    : fleet_(fleet), max_attempts_(max_attempts), context_(context), request_(request) {
  StartAttempt(grpc::Status::OK);
}

void GenerateRelay::StartAttempt(const grpc::Status& last_error) {
  std::shared_ptr<Attempt> attempt;
  grpc::Status finish_status;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<WorkerEndpoint*> worker =
        static_cast<int>(tried_.size()) >= max_attempts_
            ? absl::StatusOr<WorkerEndpoint*>(absl::UnavailableError("retry budget spent"))
            : fleet_->PickWorker(request_->model(), tried_);
    if (cancelled_) {
      finish_status = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the caller");
    } else if (!worker.ok()) {
      // After a failed attempt the worker's own error says more than "no other worker".
      finish_status =
          last_error.ok()
              ? grpc::Status(static_cast<grpc::StatusCode>(worker.status().code()),
                             std::string(worker.status().message()))
              : grpc::Status(last_error.error_code(), absl::StrCat(last_error.error_message(), " (",
                                                                   worker.status().message(), ")"));
    } else {
      tried_.push_back(*worker);
      attempt = std::make_shared<Attempt>(this, *worker);
      attempt_ = attempt;
    }
  }
  if (attempt != nullptr) {
    attempt->Start();
  } else {
    Finish(finish_status);
  }
}

void GenerateRelay::OnWorkerResponse(const tern::v1::GenerateResponse& response) {
  {
    absl::MutexLock lock(&mu_);
    tokens_relayed_ += response.token_ids_size();
  }
  // Only one write is ever in flight (lockstep), so the buffer is free.
  pending_write_ = response;
  StartWrite(&pending_write_);
}

void GenerateRelay::OnWriteDone(bool ok) {
  std::shared_ptr<Attempt> attempt;
  {
    absl::MutexLock lock(&mu_);
    attempt = attempt_;
  }
  // The attempt is alive: its hold is released only on the paths below or
  // when its stream ends, and no read is outstanding while a write is.
  if (attempt == nullptr) return;
  if (ok) {
    attempt->ReadNext();
  } else {
    attempt->Cancel();  // the caller is gone: stop the worker
    attempt->Release();
  }
}

void GenerateRelay::OnAttemptDone(Attempt* attempt, const grpc::Status& status) {
  bool retry = false;
  {
    absl::MutexLock lock(&mu_);
    attempt_ = nullptr;
    retry = !status.ok() && !cancelled_ && tokens_relayed_ == 0 &&
            (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
             status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  if (retry) {
    TERN_LOG(Warning) << "request " << request_->request().request_id() << " failed on "
                      << attempt->worker()->address() << " before its first token ("
                      << status.error_message() << "); trying another worker";
    StartAttempt(status);
    return;
  }
  Finish(status);
}

void GenerateRelay::OnCancel() {
  std::shared_ptr<Attempt> attempt;
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    attempt = attempt_;
  }
  // Called outside the lock: TryCancel may run reactions inline.
  if (attempt != nullptr) attempt->Cancel();
}

void GenerateRelay::OnDone() { delete this; }

}  // namespace tern::router
