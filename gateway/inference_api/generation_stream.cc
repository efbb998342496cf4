#include "gateway/inference_api/generation_stream.h"

#include <algorithm>
#include <utility>

#include "common/grpc_status.h"
#include "common/log.h"
#include "gateway/http/api_error.h"
#include "gateway/inference_api/chunk_translation.h"

namespace tern::gateway {

using tern::v1::TextChunk;

// The call's reactor: gRPC's handle on the stream. It only posts the
// reactions to the stream's queue.
class GenerationStream::Reactor : public grpc::ServerWriteReactor<TextChunk> {
 public:
  explicit Reactor(std::shared_ptr<GenerationStream> stream) : stream_(std::move(stream)) {}

  void OnWriteDone(bool ok) override {
    stream_->queue_.Post([stream = stream_, ok] { stream->OnWriteDone(ok); });
  }
  void OnCancel() override {
    stream_->queue_.Post([stream = stream_] { stream->OnCancel(); });
  }
  void OnDone() override { delete this; }

 private:
  const std::shared_ptr<GenerationStream> stream_;
};

namespace {

// A call refused before anything was generated.
class RejectedCall : public grpc::ServerWriteReactor<TextChunk> {
 public:
  explicit RejectedCall(const absl::Status& status) { Finish(ToGrpcStatus(status)); }
  void OnDone() override { delete this; }
};

// The stream keeps the key's lease apart, so that dropping it when the call
// ends releases it.
GenerationStream::Dependencies WithoutLease(GenerationStream::Dependencies deps) {
  deps.key_lease.reset();
  return deps;
}

}  // namespace

// One choice's generation: its router call and everything that turns the
// call's tokens into its chunks.
struct GenerationStream::Choice {
  Choice(const OpenAiRequest& request, const ServedModel& model, PreparedChoice prepared)
      : index(prepared.index),
        leader(prepared.leader),
        rpc(std::move(prepared.prepared.rpc)),
        prompt_tokens(prepared.prepared.prompt_tokens),
        decoder(request, *model.tokenizer, prepared.prepared.max_tokens) {
    if (request.endpoint == Endpoint::kChatCompletions &&
        request.output.tool_choice != ToolChoice::kNone) {
      tool_stream.emplace(request.output.tool_choice, request.output.tool_name);
    }
  }

  const int32_t index;
  const bool leader;
  tern::v1::RouterGenerateRequest rpc;  // moved into the call when it starts
  const int32_t prompt_tokens;

  ChoiceDecoder decoder;
  // Chats with tools: splits the output into content and tool calls.
  std::optional<ToolCallStream> tool_stream;
  // Logprobs of text the tool-call stream holds back.
  std::vector<TokenLogprobEntry> held_logprobs;
  std::shared_ptr<GenerateCall> call;
  bool started = false;
  bool responded = false;  // a router response arrived
  absl::Time last_token = absl::InfinitePast();
  bool finished = false;
};

grpc::ServerWriteReactor<TextChunk>* GenerationStream::Start(Dependencies deps,
                                                             const OpenAiRequest& request,
                                                             std::vector<PreparedChoice> choices,
                                                             absl::Time received) {
  std::shared_ptr<GenerationStream> stream(
      new GenerationStream(std::move(deps), request, std::move(choices), received));
  auto* reactor = new Reactor(stream);
  stream->queue_.Post([stream, reactor] { stream->Begin(reactor); });
  return reactor;
}

grpc::ServerWriteReactor<TextChunk>* GenerationStream::Reject(const absl::Status& status) {
  return new RejectedCall(status);
}

GenerationStream::GenerationStream(Dependencies deps, const OpenAiRequest& request,
                                   std::vector<PreparedChoice> choices, absl::Time received)
    : deps_(WithoutLease(deps)),
      received_(received),
      logprobs_(request.sampling.logprobs),
      top_logprobs_(request.sampling.top_logprobs),
      key_lease_(std::move(deps.key_lease)) {
  for (PreparedChoice& choice : choices) {
    choices_.push_back(std::make_unique<Choice>(request, *deps_.model, std::move(choice)));
  }
}

void GenerationStream::Begin(Reactor* reactor) {
  reactor_ = reactor;
  deps_.metrics->RequestStarted();
  deps_.metrics->AddPromptTokens(Usage().prompt_tokens());
  for (size_t i = 0; i < choices_.size(); ++i) {
    if (choices_[i]->leader) StartCall(i);
  }
}

void GenerationStream::StartCall(size_t index) {
  Choice& choice = *choices_[index];
  if (choice.started || final_status_.has_value()) return;
  choice.started = true;
  std::shared_ptr<GenerationStream> self = shared_from_this();
  Choice* target = &choice;
  GenerateCallbacks callbacks;
  callbacks.on_response = [self, target](tern::v1::GenerateResponse response) {
    self->queue_.Post(
        [self, target, response = std::move(response)] { self->OnResponse(*target, response); });
  };
  callbacks.on_done = [self, target](absl::Status status) {
    self->queue_.Post(
        [self, target, status = std::move(status)] { self->OnRouterDone(*target, status); });
  };
  choice.call = deps_.router->Generate(std::move(choice.rpc), deps_.timeout, std::move(callbacks));
}

void GenerationStream::OnResponse(Choice& choice, const tern::v1::GenerateResponse& response) {
  if (final_status_.has_value() || choice.finished) return;
  if (!choice.responded) {
    choice.responded = true;
    // The prompt is prefilled: its siblings now find it in the prefix cache.
    if (choice.leader) {
      for (size_t i = static_cast<size_t>(choice.index) + 1;
           i < choices_.size() && !choices_[i]->leader; ++i) {
        StartCall(i);
      }
    }
  }
  const int n = response.token_ids_size();
  if (n > 0) {
    const absl::Time now = absl::Now();
    if (!first_token_seen_) {
      first_token_seen_ = true;
      deps_.metrics->ObserveTimeToFirstToken(now - received_);
    }
    if (choice.last_token == absl::InfinitePast()) {
      deps_.metrics->ObserveInterTokenLatency(absl::ZeroDuration(), n - 1);
    } else {
      deps_.metrics->ObserveInterTokenLatency(now - choice.last_token, n);
    }
    choice.last_token = now;
  }
  absl::StatusOr<ChoiceDecoder::Output> out = choice.decoder.Push(response);
  if (!out.ok()) return Fail(out.status());
  Emit(choice, out->text, std::move(out->logprobs));
  if (!out->finish_reason.empty()) {
    // A stop string ended it: the rest of the generation is not wanted.
    if (out->stopped_by_string) choice.call->Cancel();
    Complete(choice, out->finish_reason);
  }
  Flush();
}

void GenerationStream::OnRouterDone(Choice& choice, const absl::Status& status) {
  if (final_status_.has_value() || choice.finished) return;
  if (absl::IsCancelled(status)) {
    // Not the client's doing (that path never gets here): shutdown, or the router gave up.
    return Fail(absl::UnavailableError("The request was cancelled before it completed; retry it."));
  }
  if (!status.ok()) return Fail(status);
  if (choice.decoder.worker_error()) {
    return Fail(absl::InternalError("The worker failed while generating."));
  }
  // The stream ended without a finish reason: treat it as the end of the output.
  ChoiceDecoder::Output out = choice.decoder.End();
  Emit(choice, out.text, std::move(out.logprobs));
  Complete(choice, out.finish_reason);
  Flush();
}

void GenerationStream::OnWriteDone(bool ok) {
  writing_ = false;
  // A failed write: the client is gone (cancelled, past its deadline, or disconnected).
  if (!ok) return OnCancel();
  Flush();
}

void GenerationStream::OnCancel() {
  if (!client_gone_) {
    client_gone_ = true;
    queued_.clear();
    if (!final_status_.has_value()) {
      CancelCalls();
      deps_.metrics->ClientDisconnected();
      final_status_ = absl::CancelledError("The client cancelled the call.");
      Finished(*final_status_, /*client_gone=*/true);
      TERN_LOG(Debug) << "grpc client went away completion_tokens=" << CompletionTokens();
    }
  }
  Flush();
}

void GenerationStream::CancelCalls() {
  for (const auto& choice : choices_) {
    if (choice->call != nullptr) choice->call->Cancel();
  }
}

void GenerationStream::Emit(Choice& choice, const std::string& text,
                            std::vector<TokenLogprobEntry> logprobs) {
  if (!choice.tool_stream) return EmitContent(choice, text, logprobs);
  for (TokenLogprobEntry& entry : logprobs) choice.held_logprobs.push_back(std::move(entry));
  EmitDelta(choice, choice.tool_stream->Push(text));
}

void GenerationStream::EmitDelta(Choice& choice, ToolCallStream::Delta delta) {
  if (!delta.content.empty()) {
    EmitContent(choice, delta.content, choice.held_logprobs);
    choice.held_logprobs.clear();
  }
  if (delta.tool_calls.is_null()) return;
  // Logprobs go with content only, as in REST streams.
  choice.held_logprobs.clear();
  TextChunk chunk;
  chunk.set_index(choice.index);
  AddToolCallDeltas(delta.tool_calls, chunk);
  Send(std::move(chunk));
}

void GenerationStream::EmitContent(Choice& choice, const std::string& text,
                                   const std::vector<TokenLogprobEntry>& logprobs) {
  if (text.empty() && logprobs.empty()) return;
  TextChunk chunk;
  chunk.set_index(choice.index);
  chunk.set_text(text);
  if (logprobs_) AddLogprobs(*deps_.model->tokenizer, logprobs, top_logprobs_, chunk);
  Send(std::move(chunk));
}

void GenerationStream::Complete(Choice& choice, std::string finish_reason) {
  choice.finished = true;
  if (choice.tool_stream) {
    EmitDelta(choice, choice.tool_stream->Finish());
    if (choice.tool_stream->made_tool_calls() && finish_reason == "stop") {
      finish_reason = "tool_calls";
    }
  }
  TextChunk chunk;
  chunk.set_index(choice.index);
  chunk.set_finish_reason(std::move(finish_reason));
  Send(std::move(chunk));
  if (++choices_done_ < choices_.size()) return;

  TextChunk last;
  *last.mutable_usage() = Usage();
  deps_.metrics->AddGenerationTokens(last.usage().completion_tokens());
  deps_.metrics->ObserveRequestTokens(last.usage().prompt_tokens(),
                                      last.usage().completion_tokens());
  Send(std::move(last));
  final_status_ = absl::OkStatus();
  Finished(*final_status_, /*client_gone=*/false);
}

void GenerationStream::Fail(const absl::Status& status) {
  if (final_status_.has_value()) return;
  CancelCalls();
  deps_.metrics->AddGenerationTokens(CompletionTokens());
  final_status_ = status;
  Finished(status, /*client_gone=*/false);
  TERN_LOG(Debug) << "grpc call failed status=" << status.ToString();
  Flush();
}

void GenerationStream::Finished(const absl::Status& status, bool client_gone) {
  if (recorded_) return;
  recorded_ = true;
  if (key_lease_ != nullptr) {
    // Charged and released as the answer ends, so that the key's next
    // request finds its stream slot free.
    const int64_t tokens = Usage().prompt_tokens() + CompletionTokens();
    key_lease_->Charge(tokens);
    deps_.metrics->KeyTokens(key_lease_->key(), tokens);
    key_lease_.reset();
  }
  // The metrics speak HTTP statuses: the one REST would have answered.
  const int http_status = client_gone ? 499 : status.ok() ? 200 : ToApiError(status).http_status;
  deps_.metrics->RecordRequest(deps_.endpoint_label, http_status);
  deps_.metrics->RequestFinished();
  deps_.metrics->ObserveRequestLatency(absl::Now() - received_);
}

void GenerationStream::Send(TextChunk chunk) {
  if (client_gone_ || finish_started_) return;
  queued_.push_back(std::move(chunk));
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

tern::v1::Usage GenerationStream::Usage() const {
  // A prompt counts once however many choices share it; its cached tokens
  // are the most any of its choices found in the prefix cache.
  tern::v1::Usage usage;
  int32_t group_cached = 0;
  int32_t cached = 0;
  int32_t prompt = 0;
  for (const auto& choice : choices_) {
    if (choice->leader) {
      cached += group_cached;
      group_cached = 0;
      prompt += choice->prompt_tokens;
    }
    group_cached = std::max(group_cached, choice->decoder.cached_tokens());
  }
  usage.set_prompt_tokens(prompt);
  usage.set_completion_tokens(CompletionTokens());
  usage.set_cached_prompt_tokens(cached + group_cached);
  return usage;
}

int32_t GenerationStream::CompletionTokens() const {
  int32_t tokens = 0;
  for (const auto& choice : choices_) tokens += choice->decoder.completion_tokens();
  return tokens;
}

}  // namespace tern::gateway
