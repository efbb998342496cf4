#include "router/generate_relay.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace tern::router {
namespace {

// Requests sent again after their worker failed go ahead of everything in
// the queue: they were admitted once, and their client may be streaming.
constexpr int32_t kResumePriority = std::numeric_limits<int32_t>::max();

AttemptOutcome::End EndOf(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return AttemptOutcome::End::kOk;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNKNOWN:
      return AttemptOutcome::End::kWorkerFailure;
    case grpc::StatusCode::CANCELLED:
      return AttemptOutcome::End::kCancelled;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return AttemptOutcome::End::kResourceExhausted;
    default:
      return AttemptOutcome::End::kOther;
  }
}

}  // namespace

// One call to one worker. It holds itself open (AddHold) until the relay will
// start no more operations on it. Shared ownership (itself until OnDone, the
// relay, and the fleet while aborting it) lets others cancel it without a lock
// and without racing its end.
class GenerateRelay::Attempt : public grpc::ClientReadReactor<tern::v1::GenerateResponse>,
                               public WorkerCall,
                               public std::enable_shared_from_this<GenerateRelay::Attempt> {
 public:
  Attempt(GenerateRelay* relay, FleetMember* worker, tern::v1::GenerateRequest request,
          int32_t predicted_cached_tokens)
      : relay_(relay),
        worker_(worker),
        request_(std::move(request)),
        predicted_cached_tokens_(predicted_cached_tokens) {
    const auto deadline = relay->context_->deadline();
    if (deadline != std::chrono::system_clock::time_point::max()) context_.set_deadline(deadline);
  }

  void Start() {
    started_ = relay_->fleet_->clock()->Now();
    // Its own slot is counted already.
    alone_ = worker_->inflight() <= 1;
    self_ = shared_from_this();
    registration_ = relay_->fleet_->state().RegisterCall(*worker_, weak_from_this());
    relay_->fleet_->stub(*worker_)->async()->Generate(&context_, &request_, this);
    AddHold();
    StartRead(&response_);
    StartCall();
  }

  void ReadNext() { StartRead(&response_); }
  void Cancel() { context_.TryCancel(); }
  // After Release the relay must not touch this attempt again.
  void Release() { RemoveHold(); }
  FleetMember* worker() const { return worker_; }
  bool resumed() const { return request_.resume_token_ids_size() > 0; }
  int32_t predicted_cached_tokens() const { return predicted_cached_tokens_; }
  bool lost() const { return lost_.load(); }
  // True exactly once: the caller frees this attempt's slot in the dispatcher.
  bool TakeSlot() { return !slot_released_.exchange(true); }
  absl::Time started() const { return started_; }
  bool alone() const { return alone_; }
  // True for the first response carrying tokens (reads come one at a time).
  bool TakeFirstToken(const tern::v1::GenerateResponse& response) {
    if (first_token_seen_ || response.token_ids_size() == 0) return false;
    first_token_seen_ = true;
    return true;
  }

  // Touches only this attempt's own members: the relay may be gone.
  void AbortWorkerLost() override {
    lost_.store(true);
    context_.TryCancel();
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      relay_->OnWorkerResponse(this, response_);
    } else {
      Release();  // the stream ended; OnDone follows with its status
    }
  }

  void OnDone(const grpc::Status& status) override {
    std::shared_ptr<Attempt> keep = std::move(self_);
    relay_->fleet_->state().UnregisterCall(*worker_, registration_);
    relay_->OnAttemptDone(this, status);
  }

 private:
  GenerateRelay* const relay_;
  FleetMember* const worker_;
  tern::v1::GenerateRequest request_;
  const int32_t predicted_cached_tokens_;
  grpc::ClientContext context_;
  tern::v1::GenerateResponse response_;
  std::shared_ptr<Attempt> self_;
  uint64_t registration_ = 0;
  std::atomic<bool> lost_{false};
  std::atomic<bool> slot_released_{false};
  absl::Time started_;  // set by Start, before any callback
  bool alone_ = false;  // nothing else was in flight on the worker at Start
  bool first_token_seen_ = false;
};

void GenerateRelay::ReleaseSlot(Attempt* attempt) {
  if (!attempt->TakeSlot()) return;
  dispatcher_->Release(attempt->worker(), fleet_->clock()->Now() - attempt->started());
}

GenerateRelay::GenerateRelay(Fleet* fleet, Dispatcher* dispatcher, RelayOptions options,
                             RelayCounters* counters, grpc::CallbackServerContext* context,
                             const tern::v1::RouterGenerateRequest* request)
    : fleet_(fleet),
      dispatcher_(dispatcher),
      options_(options),
      counters_(counters),
      context_(context),
      request_(request),
      ticket_(reinterpret_cast<uintptr_t>(this)) {
  Admit();
}

void GenerateRelay::Admit() {
  DispatchRequest dispatch;
  dispatch.ticket = ticket_;
  dispatch.model = request_->model();
  const auto& prompt = request_->request().prompt_token_ids();
  dispatch.prompt = absl::MakeConstSpan(prompt.data(), prompt.size());
  dispatch.waiter = this;
  dispatch.session_key = request_->session_key();
  if (!request_->routing_policy().empty()) {
    absl::StatusOr<PolicyKind> kind = ParsePolicyKind(request_->routing_policy());
    if (!kind.ok()) {
      FinishWithError(kind.status());
      return;
    }
    dispatch.policy = *kind;
  }
  {
    absl::MutexLock lock(&mu_);
    phase_ = Phase::kWaiting;
    // A request sent again after its worker failed was admitted once already.
    dispatch.resumed = retries_ > 0;
    dispatch.priority = dispatch.resumed ? kResumePriority : request_->priority();
    dispatch.exclude = failed_;
  }
  absl::StatusOr<Admission> admission = dispatcher_->Admit(std::move(dispatch));
  if (!admission.ok()) {
    FinishWithError(admission.status());
    return;
  }
  if (admission->worker != nullptr) {
    StartAttempt(admission->worker, admission->predicted_cached_tokens);
    return;
  }
  // Queued. A cancel that came while Admit ran could not find it in the queue.
  bool cancelled = false;
  {
    absl::MutexLock lock(&mu_);
    cancelled = cancelled_;
  }
  if (cancelled && dispatcher_->Cancel(ticket_)) {
    FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the caller"));
  }
}

void GenerateRelay::OnDispatched(FleetMember* worker, int32_t predicted_cached_tokens) {
  StartAttempt(worker, predicted_cached_tokens);
}

void GenerateRelay::OnRejected(const absl::Status& status) { FinishWithError(status); }

void GenerateRelay::StartAttempt(FleetMember* worker, int32_t predicted_cached_tokens) {
  std::shared_ptr<Attempt> attempt;
  {
    absl::MutexLock lock(&mu_);
    if (!cancelled_) {
      tern::v1::GenerateRequest request = request_->request();
      request.mutable_resume_token_ids()->Add(streamed_.begin(), streamed_.end());
      if (has_seed_) {
        // The same random stream: the sampler is keyed by (seed, request id, position).
        request.mutable_sampling()->set_seed(seed_);
        request.mutable_sampling()->set_has_seed(true);
      }
      attempt =
          std::make_shared<Attempt>(this, worker, std::move(request), predicted_cached_tokens);
      attempt_ = attempt;
      phase_ = Phase::kRunning;
    }
  }
  if (attempt == nullptr) {
    dispatcher_->Release(worker);
    FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the caller"));
    return;
  }
  attempt->Start();
}

void GenerateRelay::OnWorkerResponse(Attempt* attempt, const tern::v1::GenerateResponse& response) {
  // The sequence is over on the worker: its slot is free before the client
  // hears the end (a client sending its next request at once finds it free).
  if (response.finish_reason() != tern::v1::FINISH_REASON_UNSPECIFIED) ReleaseSlot(attempt);
  if (attempt->TakeFirstToken(response) && !attempt->resumed()) {
    dispatcher_->ObserveFirstToken(attempt->worker(), fleet_->clock()->Now() - attempt->started(),
                                   attempt->alone());
  }
  bool report_prefix = false;
  {
    absl::MutexLock lock(&mu_);
    // Only one write is ever in flight (lockstep), so the buffer is free.
    pending_write_ = response;
    if (response.has_seed()) {
      if (!has_seed_) {
        seed_ = response.seed();
        has_seed_ = true;
      }
      // The client learns the seed once, from the first worker that reported it.
      if (seed_sent_) {
        pending_write_.clear_seed();
        pending_write_.clear_has_seed();
      }
      seed_sent_ = true;
    }
    streamed_.insert(streamed_.end(), response.token_ids().begin(), response.token_ids().end());
    if (response.has_usage()) {
      tern::v1::Usage* usage = pending_write_.mutable_usage();
      // Every token the client received counts, whichever worker produced it.
      usage->set_completion_tokens(
          std::max<int32_t>(usage->completion_tokens(), static_cast<int32_t>(streamed_.size())));
      report_prefix = !attempt->resumed();
    }
  }
  if (report_prefix) {
    fleet_->state().OnPrefixReport(*attempt->worker(), response.usage().prompt_tokens(),
                                   attempt->predicted_cached_tokens(),
                                   response.usage().cached_prompt_tokens());
  }
  StartWrite(&pending_write_);
}

void GenerateRelay::OnWriteDone(bool ok) {
  std::shared_ptr<Attempt> attempt;
  {
    absl::MutexLock lock(&mu_);
    attempt = attempt_;
    if (!ok) cancelled_ = true;  // the caller is gone
  }
  // The attempt is alive: its hold is released only on the paths below or
  // when its stream ends, and no read is outstanding while a write is.
  if (attempt == nullptr) return;
  if (ok) {
    attempt->ReadNext();
  } else {
    attempt->Cancel();  // stop the worker
    attempt->Release();
  }
}

void GenerateRelay::OnAttemptDone(Attempt* attempt, const grpc::Status& status) {
  FleetMember* const worker = attempt->worker();
  ReleaseSlot(attempt);
  const grpc::StatusCode code = status.error_code();
  AttemptOutcome outcome;
  outcome.end = EndOf(code);
  outcome.worker_lost = attempt->lost();
  outcome.max_tokens = request_->request().sampling().max_tokens();
  thread_local std::minstd_rand jitter_source(std::random_device{}());
  const double jitter = std::uniform_real_distribution<double>(0.8, 1.2)(jitter_source);
  FailoverDecision decision;
  {
    absl::MutexLock lock(&mu_);
    attempt_ = nullptr;
    outcome.client_gone = cancelled_;
    outcome.streamed = streamed_.size();
    outcome.retries = retries_;
    decision = DecideFailover(options_, outcome, jitter);
    if (decision.action == FailoverDecision::Action::kRetry ||
        decision.action == FailoverDecision::Action::kCompleteLength) {
      failed_.push_back(worker);
      last_error_ = status;
      phase_ = Phase::kBackoff;
      ++retries_;
    }
  }
  fleet_->state().OnCallResult(*worker, status.ok(), decision.worker_fault, fleet_->clock()->Now());
  const size_t streamed = outcome.streamed;
  switch (decision.action) {
    case FailoverDecision::Action::kFinish:
      FinishOnce(status);
      return;
    case FailoverDecision::Action::kGiveUp:
      FinishOnce(grpc::Status(code, absl::StrCat(status.error_message(), " (after ",
                                                 options_.max_retries, " retries)")));
      return;
    case FailoverDecision::Action::kCompleteLength:
    case FailoverDecision::Action::kRetry:
      break;
  }
  TERN_LOG(Warning) << "request " << request_->request().request_id() << " failed on "
                    << worker->address() << " after " << streamed << " token(s) ("
                    << status.error_message() << "); resuming on another worker";
  if (decision.action == FailoverDecision::Action::kCompleteLength) {
    // Every token was streamed; only the final message was lost.
    tern::v1::GenerateResponse last;
    last.set_finish_reason(tern::v1::FINISH_REASON_LENGTH);
    last.mutable_usage()->set_prompt_tokens(request_->request().prompt_token_ids_size());
    last.mutable_usage()->set_completion_tokens(static_cast<int32_t>(streamed));
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      finished_ = true;
      phase_ = Phase::kDone;
      pending_write_ = std::move(last);
    }
    StartWriteAndFinish(&pending_write_, grpc::WriteOptions(), grpc::Status::OK);
    return;
  }
  (streamed == 0 ? counters_->retries : counters_->resumes).fetch_add(1);
  backoff_alarm_ = std::make_unique<grpc::Alarm>();
  backoff_alarm_->Set(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(decision.delay),
                      [this](bool /*fired*/) { OnBackoffDone(); });
}

void GenerateRelay::OnBackoffDone() {
  bool cancelled = false;
  {
    absl::MutexLock lock(&mu_);
    cancelled = cancelled_;
  }
  if (cancelled) {
    FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the caller"));
    return;
  }
  Admit();
}

void GenerateRelay::OnCancel() {
  std::shared_ptr<Attempt> attempt;
  Phase phase;
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    attempt = attempt_;
    phase = phase_;
  }
  // Outside the lock: TryCancel and the dispatcher may run reactions inline.
  if (phase == Phase::kWaiting) {
    // A queued request leaves the queue at once.
    if (dispatcher_->Cancel(ticket_)) {
      FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the caller"));
    }
    return;
  }
  // In backoff the alarm's callback sees the cancel and finishes.
  if (attempt != nullptr) attempt->Cancel();
}

void GenerateRelay::FinishWithError(const absl::Status& status) {
  grpc::Status last_error;
  {
    absl::MutexLock lock(&mu_);
    last_error = last_error_;
  }
  auto code = static_cast<grpc::StatusCode>(status.code());
  std::string message(status.message());
  if (!last_error.ok()) {
    // After a failed attempt the worker's own error says more than "no other worker".
    code = last_error.error_code() == grpc::StatusCode::CANCELLED ? grpc::StatusCode::UNAVAILABLE
                                                                  : last_error.error_code();
    message = absl::StrCat(last_error.error_message(), " (", status.message(), ")");
  }
  FinishOnce(grpc::Status(code, message));
}

void GenerateRelay::FinishOnce(const grpc::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
    phase_ = Phase::kDone;
  }
  Finish(status);
}

void GenerateRelay::OnDone() { delete this; }

}  // namespace tern::router
