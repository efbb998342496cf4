#include "gateway/completion_handler.h"

#include <algorithm>
#include <utility>

#include "common/log.h"
#include "gateway/http/api_error.h"

namespace tern::gateway {

using tern::v1::FinishReason;

// One choice's generation: its router call and everything that turns the
// call's tokens into its text.
struct CompletionHandler::Choice {
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
  std::string echo;  // sent (or kept) before the first text, then cleared

  ChoiceDecoder decoder;
  // Chats with tools: splits the output into content and tool calls.
  std::optional<ToolCallStream> tool_stream;
  // Logprobs of text the tool-call stream holds back.
  std::vector<TokenLogprobEntry> held_logprobs;
  std::vector<TokenLogprobEntry> logprob_entries;  // non-streaming: all of them
  std::shared_ptr<GenerateCall> call;
  bool started = false;
  std::string text;        // non-streaming: the whole output
  bool responded = false;  // a router response arrived
  absl::Time last_token = absl::InfinitePast();
  bool finished = false;
  std::string finish_reason;
  OrderedJson tool_calls = nullptr;
};

void CompletionHandler::Start(const Dependencies& deps, const OpenAiRequest& request,
                              std::vector<PreparedChoice> choices, ResponseIdentity identity,
                              std::shared_ptr<HttpExchange> exchange, absl::Time received) {
  std::shared_ptr<CompletionHandler> handler(new CompletionHandler(
      deps, request, std::move(choices), std::move(identity), std::move(exchange), received));
  handler->Begin();
}

void CompletionHandler::StartResponses(const Dependencies& deps, const ResponsesRequest& request,
                                       std::vector<PreparedChoice> choices,
                                       ResponseIdentity identity,
                                       std::shared_ptr<HttpExchange> exchange,
                                       absl::Time received) {
  auto output = std::make_unique<ResponsesOutput>(request, identity.model, identity.created);
  std::shared_ptr<CompletionHandler> handler(
      new CompletionHandler(deps, request.chat, std::move(choices), std::move(identity),
                            std::move(exchange), received, std::move(output)));
  handler->Begin();
}

namespace {

// The handler keeps the key's lease apart, so that dropping it in Finished
// releases it.
CompletionHandler::Dependencies WithoutLease(CompletionHandler::Dependencies deps) {
  deps.key_lease.reset();
  return deps;
}

}  // namespace

CompletionHandler::CompletionHandler(const Dependencies& deps, const OpenAiRequest& request,
                                     std::vector<PreparedChoice> choices, ResponseIdentity identity,
                                     std::shared_ptr<HttpExchange> exchange, absl::Time received,
                                     std::unique_ptr<ResponsesOutput> responses)
    : deps_(WithoutLease(deps)),
      key_lease_(deps.key_lease),
      identity_(std::move(identity)),
      exchange_(std::move(exchange)),
      received_(received),
      stream_(request.stream),
      chat_(request.endpoint == Endpoint::kChatCompletions),
      endpoint_label_(responses != nullptr ? "/v1/responses"
                      : chat_              ? "/v1/chat/completions"
                                           : "/v1/completions"),
      logprobs_(request.sampling.logprobs),
      top_logprobs_(request.sampling.top_logprobs),
      responses_(std::move(responses)) {
  for (PreparedChoice& choice : choices) {
    choices_.push_back(std::make_unique<Choice>(request, *deps.model, std::move(choice)));
  }
}

CompletionHandler::~CompletionHandler() {
  if (done_) return;
  deps_.metrics->RequestFinished();
  if (stream_started_) deps_.metrics->StreamClosed();
}

void CompletionHandler::Begin() {
  deps_.metrics->RequestStarted();
  deps_.metrics->AddPromptTokens(Usage().prompt_tokens);
  std::weak_ptr<CompletionHandler> weak = weak_from_this();
  exchange_->SetOnClientGone([weak] {
    if (auto self = weak.lock()) self->OnClientGone();
  });
  for (size_t i = 0; i < choices_.size(); ++i) {
    if (choices_[i]->leader) StartCall(i);
  }
}

void CompletionHandler::StartCall(size_t index) {
  Choice& choice = *choices_[index];
  if (choice.started) return;
  choice.started = true;
  std::shared_ptr<CompletionHandler> self = shared_from_this();
  Choice* target = &choice;
  GenerateCallbacks callbacks;
  callbacks.on_response = [self, target](tern::v1::GenerateResponse response) {
    self->exchange_->Post(
        [self, target, response = std::move(response)] { self->OnResponse(*target, response); });
  };
  callbacks.on_done = [self, target](absl::Status status) {
    self->exchange_->Post(
        [self, target, status = std::move(status)] { self->OnDone(*target, status); });
  };
  choice.call = deps_.router->Generate(std::move(choice.rpc), deps_.timeout, std::move(callbacks));
}

void CompletionHandler::OnResponse(Choice& choice, const tern::v1::GenerateResponse& response) {
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
  const int n = response.token_ids_size();
  if (n > 0) {
    const absl::Time now = absl::Now();
    if (!first_token_seen_) {
      first_token_seen_ = true;
      deps_.metrics->ObserveTimeToFirstToken(now - received_);
    }
    if (choice.last_token == absl::InfinitePast()) {
      // The first token's gap is its TTFT; the message's others follow it.
      deps_.metrics->ObserveInterTokenLatency(absl::ZeroDuration(), n - 1);
    } else {
      deps_.metrics->ObserveInterTokenLatency(now - choice.last_token, n);
    }
    choice.last_token = now;
  }
  absl::StatusOr<ChoiceDecoder::Output> out = choice.decoder.Push(response);
  if (!out.ok()) return Fail(out.status());
  Emit(choice, out->text, std::move(out->logprobs));
  if (out->finish_reason.empty()) return;
  // A stop string ended it: the rest of the generation is not wanted.
  if (out->stopped_by_string) choice.call->Cancel();
  Complete(choice, out->finish_reason);
}

void CompletionHandler::OnDone(Choice& choice, const absl::Status& status) {
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

void CompletionHandler::OnClientGone() {
  if (done_) return;
  CancelCalls();
  deps_.metrics->ClientDisconnected();
  Finished(499);
  TERN_LOG(Debug) << "client went away request_id=" << identity_.id
                  << " completion_tokens=" << CompletionTokens();
}

void CompletionHandler::CancelCalls() {
  for (const auto& choice : choices_) {
    if (choice->call != nullptr) choice->call->Cancel();
  }
}

void CompletionHandler::EnsureStreamStarted() {
  if (!stream_ || stream_started_) return;
  stream_started_ = true;
  deps_.metrics->StreamOpened();
  exchange_->StartEventStream();
  if (responses_ != nullptr) {
    for (const std::string& event : responses_->Start()) exchange_->SendEvent(event);
    return;
  }
  if (!chat_) return;
  for (const auto& choice : choices_) {
    OrderedJson role = ChatRoleChunk(identity_);
    SetChoiceIndex(role, choice->index);
    exchange_->SendEvent(SseEvent(role));
  }
}

void CompletionHandler::Emit(Choice& choice, const std::string& text,
                             std::vector<TokenLogprobEntry> logprobs) {
  if (!choice.echo.empty()) {
    // Completions with echo: the prompt comes first (logprobs and echo are exclusive).
    std::string echo = std::move(choice.echo);
    choice.echo.clear();
    EmitContent(choice, echo + text, std::move(logprobs));
    return;
  }
  if (!choice.tool_stream) return EmitContent(choice, text, std::move(logprobs));
  EnsureStreamStarted();
  for (TokenLogprobEntry& entry : logprobs) choice.held_logprobs.push_back(std::move(entry));
  EmitDelta(choice, choice.tool_stream->Push(text));
}

void CompletionHandler::EmitDelta(Choice& choice, ToolCallStream::Delta delta) {
  if (!delta.content.empty()) {
    EmitContent(choice, delta.content, std::move(choice.held_logprobs));
    choice.held_logprobs.clear();
  }
  if (delta.tool_calls.is_null()) return;
  if (responses_ != nullptr) {
    std::vector<std::string> events = responses_->ToolCalls(delta.tool_calls);
    if (stream_) {
      EnsureStreamStarted();
      for (const std::string& event : events) exchange_->SendEvent(event);
    }
    return;
  }
  // Logprobs go with content only; the calls' tokens keep theirs in a
  // non-streamed body's logprob list.
  if (!stream_) return;
  choice.held_logprobs.clear();
  EnsureStreamStarted();
  OrderedJson chunk = ChatToolCallsChunk(identity_, std::move(delta.tool_calls));
  SetChoiceIndex(chunk, choice.index);
  exchange_->SendEvent(SseEvent(chunk));
}

void CompletionHandler::EmitContent(Choice& choice, const std::string& text,
                                    std::vector<TokenLogprobEntry> logprobs) {
  if (responses_ != nullptr) {
    EnsureStreamStarted();
    std::vector<std::string> events = responses_->Text(text);
    if (stream_) {
      for (const std::string& event : events) exchange_->SendEvent(event);
    }
    return;
  }
  if (!stream_) {
    choice.text += text;
    for (TokenLogprobEntry& entry : logprobs) choice.logprob_entries.push_back(std::move(entry));
    return;
  }
  // The stream starts with the router's first response, even an empty one.
  EnsureStreamStarted();
  if (text.empty() && logprobs.empty()) return;
  OrderedJson logprobs_json = nullptr;
  if (logprobs_) {
    logprobs_json = chat_
                        ? ChatLogprobsJson(*deps_.model->tokenizer, logprobs)
                        : CompletionLogprobsJson(*deps_.model->tokenizer, logprobs, top_logprobs_);
  }
  OrderedJson chunk = chat_ ? ChatContentChunk(identity_, text, std::move(logprobs_json))
                            : CompletionTextChunk(identity_, text, std::move(logprobs_json));
  SetChoiceIndex(chunk, choice.index);
  exchange_->SendEvent(SseEvent(chunk));
}

void CompletionHandler::Complete(Choice& choice, std::string finish_reason) {
  choice.finished = true;
  if (!choice.echo.empty()) Emit(choice, "", {});  // an empty output still echoes
  if (choice.tool_stream) {
    if (!stream_) {
      // Held logprobs belong to text the body carries anyway.
      for (TokenLogprobEntry& entry : choice.held_logprobs) {
        choice.logprob_entries.push_back(std::move(entry));
      }
      choice.held_logprobs.clear();
    }
    EmitDelta(choice, choice.tool_stream->Finish());
    if (choice.tool_stream->made_tool_calls()) {
      if (finish_reason == "stop") finish_reason = "tool_calls";
      choice.tool_calls = ToolCallsJson(choice.tool_stream->calls());
    }
  }
  choice.finish_reason = finish_reason;
  if (stream_ && responses_ == nullptr) {
    EnsureStreamStarted();
    OrderedJson chunk = chat_ ? ChatFinishChunk(identity_, finish_reason)
                              : CompletionFinishChunk(identity_, finish_reason);
    SetChoiceIndex(chunk, choice.index);
    exchange_->SendEvent(SseEvent(chunk));
  }
  if (++choices_done_ == choices_.size()) CompleteResponse();
}

TokenUsage CompletionHandler::Usage() const {
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
  usage.completion_tokens = CompletionTokens();
  return usage;
}

int32_t CompletionHandler::CompletionTokens() const {
  int32_t tokens = 0;
  for (const auto& choice : choices_) {
    tokens += choice->decoder.completion_tokens();
  }
  return tokens;
}

void CompletionHandler::CompleteResponse() {
  const TokenUsage usage = Usage();
  deps_.metrics->AddGenerationTokens(usage.completion_tokens);
  deps_.metrics->ObserveRequestTokens(usage.prompt_tokens, usage.completion_tokens);
  if (responses_ != nullptr) {
    // One choice: the Responses API has no n.
    std::vector<std::string> events = responses_->Finish(choices_[0]->finish_reason, usage);
    if (stream_) {
      EnsureStreamStarted();
      for (const std::string& event : events) exchange_->SendEvent(event);
      exchange_->EndEventStream();
    } else {
      HttpResponse response;
      response.body = DumpJson(responses_->Response());
      exchange_->Respond(std::move(response));
    }
  } else if (stream_) {
    if (identity_.include_usage) exchange_->SendEvent(SseEvent(UsageChunk(identity_, usage)));
    exchange_->SendEvent(SseDone());
    exchange_->EndEventStream();
  } else {
    OrderedJson choices = OrderedJson::array();
    for (const auto& choice : choices_) {
      OrderedJson logprobs = nullptr;
      if (logprobs_) {
        logprobs = chat_ ? ChatLogprobsJson(*deps_.model->tokenizer, choice->logprob_entries)
                         : CompletionLogprobsJson(*deps_.model->tokenizer, choice->logprob_entries,
                                                  top_logprobs_);
      }
      choices.push_back(chat_ ? ChatBodyChoice(choice->index, choice->text, choice->finish_reason,
                                               std::move(logprobs), std::move(choice->tool_calls))
                              : CompletionBodyChoice(choice->index, choice->text,
                                                     choice->finish_reason, std::move(logprobs)));
    }
    HttpResponse response;
    response.body = DumpJson(chat_ ? ChatCompletionBody(identity_, std::move(choices), usage)
                                   : CompletionBody(identity_, std::move(choices), usage));
    exchange_->Respond(std::move(response));
  }
  Finished(200);
  TERN_LOG(Debug) << "done request_id=" << identity_.id << " prompt_tokens=" << usage.prompt_tokens
                  << " completion_tokens=" << usage.completion_tokens
                  << " choices=" << choices_.size();
}

void CompletionHandler::Fail(const absl::Status& status) {
  if (done_) return;
  CancelCalls();
  deps_.metrics->AddGenerationTokens(CompletionTokens());
  if (stream_started_) {
    // The 200 is out: report in-band, as vLLM does and the OpenAI SDKs expect.
    const ApiError error = ToApiError(status);
    deps_.metrics->RecordStreamError(error.body["error"].value("type", "server_error"));
    exchange_->SendEvent(SseEvent(error.body));
    exchange_->SendEvent(SseDone());
    exchange_->EndEventStream();
    Finished(200);
  } else {
    HttpResponse response = ToHttpResponse(status);
    const int http_status = response.status;
    exchange_->Respond(std::move(response));
    Finished(http_status);
  }
  TERN_LOG(Debug) << "failed request_id=" << identity_.id << " status=" << status.ToString();
}

void CompletionHandler::Finished(int http_status) {
  done_ = true;
  if (key_lease_ != nullptr) {
    // Charged and released here, as the answer ends, not when the handler
    // goes (gRPC may hold it a little longer): the key's next request must
    // find its stream slot free.
    const int64_t tokens = Usage().prompt_tokens + CompletionTokens();
    key_lease_->Charge(tokens);
    deps_.metrics->KeyTokens(key_lease_->key(), tokens);
    key_lease_.reset();
  }
  if (stream_started_) deps_.metrics->StreamClosed();
  deps_.metrics->RecordRequest(endpoint_label_, http_status);
  deps_.metrics->RequestFinished();
  deps_.metrics->ObserveRequestLatency(absl::Now() - received_);
}

}  // namespace tern::gateway
