#include "worker/worker_service.h"

#include <cmath>
#include <deque>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/grpc_status.h"
#include "common/log.h"

namespace tern::worker {
namespace {

tern::v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return tern::v1::FINISH_REASON_STOP;
    case FinishReason::kLength:
      return tern::v1::FINISH_REASON_LENGTH;
    case FinishReason::kCancelled:
      return tern::v1::FINISH_REASON_CANCELLED;
    case FinishReason::kError:
      return tern::v1::FINISH_REASON_ERROR;
  }
  return tern::v1::FINISH_REASON_ERROR;
}

// Streams one sequence. The engine thread enqueues responses; one write is in
// flight at a time; the last event finishes the call. Deleted in OnDone, which
// gRPC runs only after Finish, i.e. after the engine's last event.
class GenerateReactor : public grpc::ServerWriteReactor<tern::v1::GenerateResponse> {
 public:
  GenerateReactor(ServingEngine* engine, const tern::v1::GenerateRequest& request) {
    absl::StatusOr<SequenceSpec> spec = SpecFromRequest(request);
    if (!spec.ok()) {
      Finish(ToGrpcStatus(spec.status()));
      return;
    }
    absl::StatusOr<std::shared_ptr<SequenceHandle>> handle =
        engine->Submit(*std::move(spec), [this](StreamEvent event) { OnEvent(std::move(event)); });
    if (!handle.ok()) {
      Finish(ToGrpcStatus(handle.status()));
      return;
    }
    absl::MutexLock lock(&mu_);
    handle_ = *handle;
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        // The caller is gone; the engine will end the sequence at its next step.
        if (handle_) handle_->Cancel();
        queue_.clear();
      }
      finish = WriteNextLocked();
    }
    if (finish) Finish(*std::move(finish));
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    if (handle_) handle_->Cancel();
  }

  void OnDone() override { delete this; }

 private:
  void OnEvent(StreamEvent event) {
    tern::v1::GenerateResponse response;
    for (int32_t id : event.tokens) response.add_token_ids(id);
    for (const TokenLogprobs& lp : event.logprobs) {
      tern::v1::TokenLogprob* out = response.add_logprobs();
      out->set_token_id(lp.token_id);
      out->set_logprob(lp.logprob);
      for (const auto& [id, logprob] : lp.top) {
        tern::v1::TopLogprob* top = out->add_top();
        top->set_token_id(id);
        top->set_logprob(logprob);
      }
    }
    if (event.has_seed) {
      response.set_seed(event.seed);
      response.set_has_seed(true);
    }
    std::optional<grpc::Status> finish;
    absl::ReleasableMutexLock lock(&mu_);
    if (event.finished) {
      response.set_finish_reason(ToProto(event.finish_reason));
      if (event.stop_token_id >= 0) {
        response.set_stop_token_id(event.stop_token_id);
        response.set_has_stop_token_id(true);
      }
      response.mutable_usage()->set_prompt_tokens(event.prompt_tokens);
      response.mutable_usage()->set_completion_tokens(event.completion_tokens);
      response.mutable_usage()->set_cached_prompt_tokens(event.cached_prompt_tokens);
      finished_ = true;
      if (event.finish_reason == FinishReason::kError) {
        final_status_ = ToGrpcStatus(event.error);
      } else if (event.finish_reason == FinishReason::kCancelled) {
        final_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "the request was cancelled");
      }
    }
    if (final_status_.ok()) queue_.push_back(std::move(response));
    finish = WriteNextLocked();
    lock.Release();
    if (finish) Finish(*std::move(finish));
  }

  // Starts the next write, or returns the status to finish the call with.
  // The caller calls Finish once mu_ is released: gRPC may run OnDone, which
  // deletes this reactor, on another thread as soon as Finish is called.
  std::optional<grpc::Status> WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || done_) return std::nullopt;
    if (!queue_.empty()) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      StartWrite(&current_);
      return std::nullopt;
    }
    if (finished_) {
      done_ = true;
      return final_status_;
    }
    return std::nullopt;
  }

  absl::Mutex mu_;
  std::shared_ptr<SequenceHandle> handle_ ABSL_GUARDED_BY(mu_);
  std::deque<tern::v1::GenerateResponse> queue_ ABSL_GUARDED_BY(mu_);
  tern::v1::GenerateResponse current_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
};

// Answers a WatchState call that arrives while the service is stopping.
class RejectedWatch : public grpc::ServerWriteReactor<tern::v1::WorkerState> {
 public:
  RejectedWatch() { Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the worker is stopping")); }
  void OnDone() override { delete this; }
};

absl::Status CheckRange(const char* name, float value, float lo, float hi) {
  if (!std::isfinite(value) || value < lo || value > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.", name, " must be in [", lo, ", ", hi, "], got ", value));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SequenceSpec> SpecFromRequest(const tern::v1::GenerateRequest& request) {
  const tern::v1::SamplingParams& p = request.sampling();
  for (absl::Status s : {CheckRange("temperature", p.temperature(), 0, 100),
                         CheckRange("top_p", p.top_p(), 0, 1), CheckRange("min_p", p.min_p(), 0, 1),
                         CheckRange("presence_penalty", p.presence_penalty(), -2, 2),
                         CheckRange("frequency_penalty", p.frequency_penalty(), -2, 2),
                         CheckRange("repetition_penalty", p.repetition_penalty(), 0, 100)}) {
    if (!s.ok()) return s;
  }
  if (p.top_k() < 0) return absl::InvalidArgumentError("sampling.top_k must not be negative");
  if (p.top_logprobs() < 0 || p.top_logprobs() > kMaxTopLogprobs) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.top_logprobs must be in [0, ",
                                                   kMaxTopLogprobs, "], got ", p.top_logprobs()));
  }
  for (const auto& [id, bias] : p.logit_bias()) {
    if (!std::isfinite(bias) || bias < -100 || bias > 100) {
      return absl::InvalidArgumentError(
          absl::StrCat("sampling.logit_bias for token ", id, " must be in [-100, 100]"));
    }
  }
  if (p.min_tokens() < 0)
    return absl::InvalidArgumentError("sampling.min_tokens must not be negative");
  SequenceSpec spec;
  spec.request_id = request.request_id();
  spec.prompt.assign(request.prompt_token_ids().begin(), request.prompt_token_ids().end());
  spec.resume.assign(request.resume_token_ids().begin(), request.resume_token_ids().end());
  spec.sampling.temperature = p.temperature();
  spec.sampling.top_p = p.top_p() == 0 ? 1.0f : p.top_p();
  spec.sampling.top_k = p.top_k();
  spec.sampling.min_p = p.min_p();
  spec.sampling.presence_penalty = p.presence_penalty();
  spec.sampling.frequency_penalty = p.frequency_penalty();
  spec.sampling.repetition_penalty = p.repetition_penalty() == 0 ? 1.0f : p.repetition_penalty();
  spec.sampling.seed = p.seed();
  spec.has_seed = p.has_seed();
  spec.max_tokens = p.max_tokens();
  spec.min_tokens = p.min_tokens();
  spec.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  spec.ignore_eos = p.ignore_eos();
  for (const auto& [id, bias] : p.logit_bias()) spec.logit_bias.emplace_back(id, bias);
  // Alternatives come with the sampled token's own log-probability.
  spec.logprobs = p.logprobs() || p.top_logprobs() > 0;
  spec.top_logprobs = p.top_logprobs();
  spec.constraint = ConstraintFromProto(p.constraint());
  return spec;
}

structured::ConstraintSpec ConstraintFromProto(const tern::v1::OutputConstraint& constraint) {
  using Kind = structured::ConstraintSpec::Kind;
  structured::ConstraintSpec spec;
  switch (constraint.kind_case()) {
    case tern::v1::OutputConstraint::kJsonSchema:
      spec.kind = Kind::kJsonSchema;
      spec.json_schema = constraint.json_schema();
      break;
    case tern::v1::OutputConstraint::kJsonObject:
      if (constraint.json_object()) spec.kind = Kind::kJsonObject;
      break;
    case tern::v1::OutputConstraint::kRegex:
      spec.kind = Kind::kRegex;
      spec.regex = constraint.regex();
      break;
    case tern::v1::OutputConstraint::kChoice:
      spec.kind = Kind::kChoice;
      spec.choices.assign(constraint.choice().choices().begin(),
                          constraint.choice().choices().end());
      break;
    case tern::v1::OutputConstraint::KIND_NOT_SET:
      break;
  }
  return spec;
}

tern::v1::KvEvent KvEventToProto(const KvEvent& event) {
  tern::v1::KvEvent out;
  out.set_sequence_number(event.sequence_number);
  switch (event.kind) {
    case KvEventKind::kBlockStored: {
      tern::v1::BlockStored* stored = out.mutable_stored();
      stored->mutable_block_hashes()->Assign(event.block_hashes.begin(), event.block_hashes.end());
      if (event.parent_block_hash.has_value()) {
        stored->set_parent_block_hash(*event.parent_block_hash);
        stored->set_has_parent(true);
      }
      break;
    }
    case KvEventKind::kBlockRemoved:
      out.mutable_removed()->mutable_block_hashes()->Assign(event.block_hashes.begin(),
                                                            event.block_hashes.end());
      break;
    case KvEventKind::kAllBlocksCleared:
      out.mutable_cleared();
      break;
  }
  return out;
}

// Streams one engine subscription. A thread of its own waits on the
// subscription whenever no write is in flight, so updates that arrive during a
// write accumulate in the subscription (bounded there, with a resync on
// overflow) and go out as one message. The thread ends the call: it alone
// calls Finish, after the last write completed. OnDone joins it and deletes
// the reactor.
class WatchStateReactor : public grpc::ServerWriteReactor<tern::v1::WorkerState> {
 public:
  WatchStateReactor(WorkerService* service, std::shared_ptr<StateSubscription> subscription)
      : service_(service), subscription_(std::move(subscription)) {
    thread_ = std::thread([this] { Run(); });
  }

  // Ends the stream with UNAVAILABLE (the service is stopping).
  void Stop() { EndWith(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the worker is stopping")); }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok && !ending_) EndLocked(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
  }

  void OnCancel() override {
    EndWith(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled"));
  }

  void OnDone() override {
    service_->Unregister(this);
    // The thread's last act was Finish; it may still be returning from it.
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();
    } else {
      thread_.join();
    }
    delete this;
  }

 private:
  // How long one wait on the subscription lasts; ending the call wakes it
  // sooner (Cancel), so this only bounds a missed wake-up.
  static constexpr absl::Duration kPollInterval = absl::Seconds(1);
  // The most updates merged into one message, so a busy engine cannot keep
  // the thread from writing.
  static constexpr int kMaxMergedUpdates = 64;

  void EndWith(grpc::Status status) {
    absl::MutexLock lock(&mu_);
    if (!ending_) EndLocked(std::move(status));
  }

  void EndLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ending_ = true;
    final_status_ = std::move(status);
    subscription_->Cancel();
  }

  bool MayWaitForUpdate() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !writing_ || ending_; }
  bool NoWriteInFlight() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !writing_; }

  static void Merge(const EngineStateUpdate& update, tern::v1::WorkerState* state) {
    tern::v1::WorkerLoad* load = state->mutable_load();
    load->set_running_seqs(update.load.running);
    load->set_waiting_seqs(update.load.waiting);
    load->set_free_kv_blocks(update.load.free_kv_blocks);
    load->set_queued_prefill_tokens(update.load.queued_prefill_tokens);
    load->set_step_counter(update.load.steps);
    load->set_step_running(update.load.step_running);
    load->set_expected_step_ms(update.load.expected_step_ms);
    for (const KvEvent& event : update.events) *state->add_kv_events() = KvEventToProto(event);
  }

  void Run() {
    EngineStateUpdate update;
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(this, &WatchStateReactor::MayWaitForUpdate));
        if (ending_) break;
      }
      if (!subscription_->Next(kPollInterval, &update)) {
        if (!subscription_->Closed()) continue;
        EndWith(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the engine stopped"));
        break;
      }
      tern::v1::WorkerState state;
      Merge(update, &state);
      for (int i = 1; i < kMaxMergedUpdates && subscription_->Next(absl::ZeroDuration(), &update);
           ++i) {
        Merge(update, &state);
      }
      absl::MutexLock lock(&mu_);
      if (ending_) break;
      current_ = std::move(state);
      writing_ = true;
      StartWrite(&current_);
    }
    // Finish only once the write in flight (if any) completed: it completes
    // promptly, with ok=false, when the call is cancelled.
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &WatchStateReactor::NoWriteInFlight));
      status = final_status_;
    }
    Finish(status);
  }

  WorkerService* const service_;
  const std::shared_ptr<StateSubscription> subscription_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  tern::v1::WorkerState current_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
};

WorkerService::~WorkerService() {
  StopWatchers();
  absl::MutexLock lock(&mu_);
  if (!mu_.AwaitWithTimeout(
          absl::Condition(
              +[](absl::flat_hash_set<WatchStateReactor*>* watchers) { return watchers->empty(); },
              &watchers_),
          absl::Seconds(10))) {
    TERN_LOG(Error) << watchers_.size()
                    << " WatchState streams still open: the gRPC server was not shut down";
  }
}

grpc::ServerWriteReactor<tern::v1::WorkerState>* WorkerService::WatchState(
    grpc::CallbackServerContext* /*context*/, const tern::v1::WatchStateRequest* /*request*/) {
  absl::MutexLock lock(&mu_);
  if (stopping_) {
    return new RejectedWatch();
  }
  auto* reactor = new WatchStateReactor(this, engine_->WatchState());
  watchers_.insert(reactor);
  return reactor;
}

void WorkerService::StopWatchers() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  for (WatchStateReactor* reactor : watchers_) reactor->Stop();
}

int WorkerService::watchers() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(watchers_.size());
}

void WorkerService::Unregister(WatchStateReactor* reactor) {
  absl::MutexLock lock(&mu_);
  watchers_.erase(reactor);
}

grpc::ServerWriteReactor<tern::v1::GenerateResponse>* WorkerService::Generate(
    grpc::CallbackServerContext* context, const tern::v1::GenerateRequest* request) {
  return new GenerateReactor(engine_, *request);
}

grpc::ServerUnaryReactor* WorkerService::Info(grpc::CallbackServerContext* context,
                                              const tern::v1::InfoRequest* /*request*/,
                                              tern::v1::WorkerInfo* response) {
  const EngineInfo info = engine_->Info();
  response->set_model_id(identity_.model_id);
  response->set_max_model_len(info.max_model_len);
  response->set_kv_block_size(info.kv_block_size);
  response->set_kv_blocks_total(info.kv_blocks_total);
  response->set_max_num_seqs(info.max_num_seqs);
  response->set_engine_kind(info.kind);
  response->set_version(identity_.version);
  response->set_vocab_size(info.vocab_size);
  for (int32_t id : info.eos_token_ids) response->add_eos_token_ids(id);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace tern::worker
