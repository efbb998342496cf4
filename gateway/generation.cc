#include "gateway/generation.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "gateway/http/api_error.h"
#include "gateway/openai/choice_decoder.h"

namespace tern::gateway {

// One choice's generation: its router call and everything that turns the
// call's tokens into its output.
struct Generation::Choice {
  Choice(const OpenAiRequest& request, const ServedModel& model, PreparedChoice prepared)
      : index(prepared.index),
        leader(prepared.leader),
        rpc(std::move(prepared.prepared.rpc)),
        prompt_tokens(prepared.prepared.prompt_tokens),
        echo(std::move(prepared.echo)),
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
  std::string echo;  // passed on before the first text, then cleared

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
  FinishedChoice output;  // keep_output: the text and logprobs so far
};

std::shared_ptr<Generation> Generation::Create(GenerationDependencies deps,
                                               GenerationOptions options,
                                               const OpenAiRequest& request,
                                               std::vector<PreparedChoice> choices,
                                               absl::Time received, GenerationExecutor executor,
                                               std::unique_ptr<GenerationSink> sink) {
  return std::shared_ptr<Generation>(new Generation(std::move(deps), std::move(options), request,
                                                    std::move(choices), received,
                                                    std::move(executor), std::move(sink)));
}

namespace {

// The generation keeps the key's lease apart, so that dropping it in Record
// releases it.
GenerationDependencies WithoutLease(GenerationDependencies deps) {
  deps.key_lease.reset();
  return deps;
}

}  // namespace

Generation::Generation(GenerationDependencies deps, GenerationOptions options,
                       const OpenAiRequest& request, std::vector<PreparedChoice> choices,
                       absl::Time received, GenerationExecutor executor,
                       std::unique_ptr<GenerationSink> sink)
    : deps_(WithoutLease(deps)),
      options_(std::move(options)),
      received_(received),
      executor_(std::move(executor)),
      sink_(std::move(sink)),
      key_lease_(std::move(deps.key_lease)) {
  for (PreparedChoice& choice : choices) {
    choices_.push_back(std::make_unique<Choice>(request, *deps_.model, std::move(choice)));
  }
}

Generation::~Generation() {
  if (!done_) deps_.metrics->RequestFinished();
}

void Generation::Begin() {
  deps_.metrics->RequestStarted();
  deps_.metrics->AddPromptTokens(Usage().prompt_tokens);
  for (size_t i = 0; i < choices_.size(); ++i) {
    if (choices_[i]->leader) StartCall(i);
  }
}

void Generation::StartCall(size_t index) {
  Choice& choice = *choices_[index];
  if (choice.started || done_) return;
  choice.started = true;
  std::shared_ptr<Generation> self = shared_from_this();
  Choice* target = &choice;
  GenerateCallbacks callbacks;
  callbacks.on_response = [self, target](tern::v1::GenerateResponse response) {
    self->executor_(
        [self, target, response = std::move(response)] { self->OnResponse(*target, response); });
  };
  callbacks.on_done = [self, target](absl::Status status) {
    self->executor_(
        [self, target, status = std::move(status)] { self->OnRouterDone(*target, status); });
  };
  choice.call = deps_.router->Generate(std::move(choice.rpc), deps_.timeout, std::move(callbacks));
}

void Generation::OnResponse(Choice& choice, const tern::v1::GenerateResponse& response) {
  if (done_ || choice.finished) return;
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
  ObserveTokens(choice, response.token_ids_size());
  absl::StatusOr<ChoiceDecoder::Output> out = choice.decoder.Push(response);
  if (!out.ok()) return Fail(out.status());
  Emit(choice, out->text, std::move(out->logprobs));
  if (out->finish_reason.empty()) return;
  // A stop string ended it: the rest of the generation is not wanted.
  if (out->stopped_by_string) choice.call->Cancel();
  Complete(choice, out->finish_reason);
}

void Generation::ObserveTokens(Choice& choice, int tokens) {
  if (tokens == 0) return;
  const absl::Time now = absl::Now();
  if (!first_token_seen_) {
    first_token_seen_ = true;
    deps_.metrics->ObserveTimeToFirstToken(now - received_);
  }
  if (choice.last_token == absl::InfinitePast()) {
    // The first token's gap is its TTFT; the message's others follow it.
    deps_.metrics->ObserveInterTokenLatency(absl::ZeroDuration(), tokens - 1);
  } else {
    deps_.metrics->ObserveInterTokenLatency(now - choice.last_token, tokens);
  }
  choice.last_token = now;
}

void Generation::OnRouterDone(Choice& choice, const absl::Status& status) {
  if (done_ || choice.finished) return;
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
}

bool Generation::ClientGone() {
  if (done_) return false;
  CancelCalls();
  deps_.metrics->ClientDisconnected();
  Record(499);
  return true;
}

void Generation::CancelCalls() {
  for (const auto& choice : choices_) {
    if (choice->call != nullptr) choice->call->Cancel();
  }
}

void Generation::Emit(Choice& choice, const std::string& text,
                      std::vector<TokenLogprobEntry> logprobs) {
  if (!started_) {
    started_ = true;
    sink_->Started();
  }
  if (!choice.echo.empty()) {
    // Completions with echo: the prompt comes first (logprobs and echo are exclusive).
    std::string echo = std::move(choice.echo);
    choice.echo.clear();
    return EmitContent(choice, echo + text, std::move(logprobs));
  }
  if (!choice.tool_stream) return EmitContent(choice, text, std::move(logprobs));
  for (TokenLogprobEntry& entry : logprobs) choice.held_logprobs.push_back(std::move(entry));
  EmitDelta(choice, choice.tool_stream->Push(text));
}

void Generation::EmitDelta(Choice& choice, ToolCallStream::Delta delta) {
  if (!delta.content.empty()) {
    EmitContent(choice, delta.content, std::move(choice.held_logprobs));
    choice.held_logprobs.clear();
  }
  if (delta.tool_calls.is_null()) return;
  // Logprobs go with content only; a kept output keeps the calls' tokens'
  // logprobs in its list (Complete adds them).
  if (!options_.keep_output) choice.held_logprobs.clear();
  sink_->ToolCallDelta(choice.index, std::move(delta.tool_calls));
}

void Generation::EmitContent(Choice& choice, const std::string& text,
                             std::vector<TokenLogprobEntry> logprobs) {
  sink_->Content(choice.index, text, logprobs);
  if (!options_.keep_output) return;
  choice.output.text += text;
  for (TokenLogprobEntry& entry : logprobs) choice.output.logprobs.push_back(std::move(entry));
}

void Generation::Complete(Choice& choice, std::string finish_reason) {
  choice.finished = true;
  if (!choice.echo.empty()) Emit(choice, "", {});  // an empty output still echoes
  if (choice.tool_stream) {
    EmitDelta(choice, choice.tool_stream->Finish());
    if (choice.tool_stream->made_tool_calls()) {
      if (finish_reason == "stop") finish_reason = "tool_calls";
      if (options_.keep_output)
        choice.output.tool_calls = ToolCallsJson(choice.tool_stream->calls());
    }
    if (options_.keep_output) {
      // Held logprobs belong to text the body carries anyway.
      for (TokenLogprobEntry& entry : choice.held_logprobs) {
        choice.output.logprobs.push_back(std::move(entry));
      }
      choice.held_logprobs.clear();
    }
  }
  choice.output.index = choice.index;
  choice.output.finish_reason = std::move(finish_reason);
  sink_->ChoiceFinished(std::move(choice.output));
  if (++choices_done_ < choices_.size()) return;

  const TokenUsage usage = Usage();
  deps_.metrics->AddGenerationTokens(usage.completion_tokens);
  deps_.metrics->ObserveRequestTokens(usage.prompt_tokens, usage.completion_tokens);
  Record(200);
  sink_->Finished(usage);
}

void Generation::Fail(const absl::Status& status) {
  if (done_) return;
  CancelCalls();
  deps_.metrics->AddGenerationTokens(completion_tokens());
  // The metrics speak HTTP statuses: what REST answers (or would have).
  Record(started_ && options_.committed_at_start ? 200 : ToApiError(status).http_status);
  sink_->Failed(status);
}

void Generation::Record(int http_status) {
  done_ = true;
  if (key_lease_ != nullptr) {
    // Charged and released as the answer ends, not when the generation goes
    // (gRPC may hold it a little longer): the key's next request must find
    // its stream slot free.
    const int64_t tokens = Usage().prompt_tokens + completion_tokens();
    key_lease_->Charge(tokens);
    deps_.metrics->KeyTokens(key_lease_->key(), tokens);
    key_lease_.reset();
  }
  deps_.metrics->RecordRequest(options_.endpoint_label, http_status);
  deps_.metrics->RequestFinished();
  deps_.metrics->ObserveRequestLatency(absl::Now() - received_);
}

TokenUsage Generation::Usage() const {
  // A prompt counts once however many choices share it; its cached tokens
  // are the most any of its choices found in the prefix cache.
  TokenUsage usage;
  int32_t group_cached = 0;
  for (const auto& choice : choices_) {
    if (choice->leader) {
      usage.cached_tokens += group_cached;
      group_cached = 0;
      usage.prompt_tokens += choice->prompt_tokens;
    }
    group_cached = std::max(group_cached, choice->decoder.cached_tokens());
  }
  usage.cached_tokens += group_cached;
  usage.completion_tokens = completion_tokens();
  return usage;
}

int32_t Generation::completion_tokens() const {
  int32_t tokens = 0;
  for (const auto& choice : choices_) tokens += choice->decoder.completion_tokens();
  return tokens;
}

}  // namespace tern::gateway
