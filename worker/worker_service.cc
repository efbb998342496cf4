#include "worker/worker_service.h"

#include <cmath>
#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/grpc_status.h"

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
  GenerateReactor(Engine* engine, const tern::v1::GenerateRequest& request) {
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
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      // The caller is gone; the engine will end the sequence at its next step.
      if (handle_) handle_->Cancel();
      queue_.clear();
    }
    WriteNextLocked();
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
    if (event.has_seed) {
      response.set_seed(event.seed);
      response.set_has_seed(true);
    }
    absl::MutexLock lock(&mu_);
    if (event.finished) {
      response.set_finish_reason(ToProto(event.finish_reason));
      if (event.stop_token_id >= 0) {
        response.set_stop_token_id(event.stop_token_id);
        response.set_has_stop_token_id(true);
      }
      response.mutable_usage()->set_prompt_tokens(event.prompt_tokens);
      response.mutable_usage()->set_completion_tokens(event.completion_tokens);
      finished_ = true;
      if (event.finish_reason == FinishReason::kError) {
        final_status_ = ToGrpcStatus(event.error);
      } else if (event.finish_reason == FinishReason::kCancelled) {
        final_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "the request was cancelled");
      }
    }
    if (final_status_.ok()) queue_.push_back(std::move(response));
    WriteNextLocked();
  }

  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || done_) return;
    if (!queue_.empty()) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      StartWrite(&current_);
      return;
    }
    if (finished_) {
      done_ = true;
      Finish(final_status_);
    }
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
  if (p.logprobs() || p.top_logprobs() > 0) {
    return absl::InvalidArgumentError("logprobs are not supported by this worker's engine");
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
  return spec;
}

grpc::ServerWriteReactor<tern::v1::GenerateResponse>* WorkerService::Generate(
    grpc::CallbackServerContext* context, const tern::v1::GenerateRequest* request) {
  return new GenerateReactor(engine_, *request);
}

grpc::ServerUnaryReactor* WorkerService::Info(grpc::CallbackServerContext* context,
                                              const tern::v1::InfoRequest* /*request*/,
                                              tern::v1::WorkerInfo* response) {
  response->set_model_id(identity_.model_id);
  response->set_max_model_len(engine_->options().max_model_len);
  response->set_kv_block_size(identity_.kv_block_size);
  response->set_max_num_seqs(engine_->options().max_num_seqs);
  response->set_engine_kind("native");
  response->set_version(identity_.version);
  response->set_vocab_size(model_->config().vocab_size);
  for (int32_t id : model_->config().eos_token_ids) response->add_eos_token_ids(id);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace tern::worker
