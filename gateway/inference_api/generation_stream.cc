#include "gateway/inference_api/generation_stream.h"

#include <utility>

#include "common/grpc_status.h"
#include "common/log.h"
#include "gateway/inference_api/chunk_translation.h"

namespace tern::gateway {

using tern::v1::TextChunk;

// The call's reactor: gRPC's handle on the stream. It only posts the
// reactions to the stream's queue, and keeps the generation (which owns the
// stream) alive until gRPC is done with the call.
class GenerationStream::Reactor : public grpc::ServerWriteReactor<TextChunk> {
 public:
  Reactor(std::shared_ptr<Generation> generation, GenerationStream* stream)
      : generation_(std::move(generation)), stream_(stream) {}

  void OnWriteDone(bool ok) override {
    stream_->queue_.Post(
        [generation = generation_, stream = stream_, ok] { stream->OnWriteDone(*generation, ok); });
  }
  void OnCancel() override {
    stream_->queue_.Post(
        [generation = generation_, stream = stream_] { stream->OnCancel(*generation); });
  }
  void OnDone() override { delete this; }

 private:
  const std::shared_ptr<Generation> generation_;
  GenerationStream* const stream_;
};

namespace {

// A call refused before anything was generated.
class RejectedCall : public grpc::ServerWriteReactor<TextChunk> {
 public:
  explicit RejectedCall(const absl::Status& status) { Finish(ToGrpcStatus(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerWriteReactor<TextChunk>* GenerationStream::Start(Dependencies deps,
                                                             const OpenAiRequest& request,
                                                             std::vector<PreparedChoice> choices,
                                                             absl::Time received) {
  std::unique_ptr<GenerationStream> sink(new GenerationStream(deps.model, request));
  GenerationStream* const stream = sink.get();
  GenerationOptions options;
  options.endpoint_label = std::move(deps.endpoint_label);
  SerialQueue* const queue = &stream->queue_;  // lives as long as the generation
  std::shared_ptr<Generation> generation = Generation::Create(
      static_cast<GenerationDependencies&&>(std::move(deps)), std::move(options), request,
      std::move(choices), received,
      [queue](std::function<void()> task) { queue->Post(std::move(task)); }, std::move(sink));
  auto* reactor = new Reactor(generation, stream);
  stream->queue_.Post([generation, stream, reactor] {
    stream->reactor_ = reactor;
    generation->Begin();
  });
  return reactor;
}

grpc::ServerWriteReactor<TextChunk>* GenerationStream::Reject(const absl::Status& status) {
  return new RejectedCall(status);
}

GenerationStream::GenerationStream(const ServedModel* model, const OpenAiRequest& request)
    : model_(model),
      logprobs_(request.sampling.logprobs),
      top_logprobs_(request.sampling.top_logprobs) {}

void GenerationStream::Content(int32_t index, const std::string& text,
                               const std::vector<TokenLogprobEntry>& logprobs) {
  if (text.empty() && logprobs.empty()) return;
  TextChunk chunk;
  chunk.set_index(index);
  chunk.set_text(text);
  if (logprobs_) AddLogprobs(*model_->tokenizer, logprobs, top_logprobs_, chunk);
  Send(std::move(chunk));
}

void GenerationStream::ToolCallDelta(int32_t index, Json entries) {
  TextChunk chunk;
  chunk.set_index(index);
  AddToolCallDeltas(entries, chunk);
  Send(std::move(chunk));
}

void GenerationStream::ChoiceFinished(FinishedChoice choice) {
  TextChunk chunk;
  chunk.set_index(choice.index);
  chunk.set_finish_reason(std::move(choice.finish_reason));
  Send(std::move(chunk));
}

void GenerationStream::Finished(const TokenUsage& usage) {
  TextChunk last;
  last.mutable_usage()->set_prompt_tokens(usage.prompt_tokens);
  last.mutable_usage()->set_completion_tokens(usage.completion_tokens);
  last.mutable_usage()->set_cached_prompt_tokens(usage.cached_tokens);
  final_status_ = absl::OkStatus();
  Send(std::move(last));
}

void GenerationStream::Failed(const absl::Status& status) {
  final_status_ = status;
  TERN_LOG(Debug) << "grpc call failed status=" << status.ToString();
  Flush();
}

void GenerationStream::OnWriteDone(Generation& generation, bool ok) {
  writing_ = false;
  // A failed write: the client is gone (cancelled, past its deadline, or disconnected).
  if (!ok) return OnCancel(generation);
  Flush();
}

void GenerationStream::OnCancel(Generation& generation) {
  if (!client_gone_) {
    client_gone_ = true;
    queued_.clear();
    if (!final_status_.has_value()) {
      generation.ClientGone();
      final_status_ = absl::CancelledError("The client cancelled the call.");
      TERN_LOG(Debug) << "grpc client went away completion_tokens="
                      << generation.completion_tokens();
    }
  }
  Flush();
}

void GenerationStream::Send(TextChunk chunk) {
  if (client_gone_ || finish_started_) return;
  queued_.push_back(std::move(chunk));
  Flush();
}

void GenerationStream::Flush() {
  if (writing_ || finish_started_ || reactor_ == nullptr) return;
  if (!queued_.empty()) {
    in_flight_ = std::move(queued_.front());
    queued_.pop_front();
    writing_ = true;
    reactor_->StartWrite(&in_flight_);
    return;
  }
  if (!final_status_.has_value()) return;
  finish_started_ = true;
  Reactor* reactor = reactor_;
  reactor_ = nullptr;  // OnDone may delete it once the Finish is started
  reactor->Finish(ToGrpcStatus(*final_status_));
}

}  // namespace tern::gateway
