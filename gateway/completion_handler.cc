#include "gateway/completion_handler.h"

#include <algorithm>
#include <utility>

#include "common/log.h"
#include "gateway/http/api_error.h"

namespace tern::gateway {

using tern::v1::FinishReason;

void CompletionHandler::Start(const Dependencies& deps, const OpenAiRequest& request,
                              PreparedRequest prepared, ResponseIdentity identity,
                              std::shared_ptr<HttpExchange> exchange, absl::Time received) {
  std::shared_ptr<CompletionHandler> handler(new CompletionHandler(
      deps, request, prepared, std::move(identity), std::move(exchange), received));
  handler->Begin(std::move(prepared.rpc));
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
                                     const PreparedRequest& prepared, ResponseIdentity identity,
                                     std::shared_ptr<HttpExchange> exchange, absl::Time received)
    : deps_(WithoutLease(deps)),
      key_lease_(deps.key_lease),
      identity_(std::move(identity)),
      exchange_(std::move(exchange)),
      received_(received),
      stream_(request.stream),
      prompt_tokens_(prepared.prompt_tokens),
      max_tokens_(prepared.max_tokens),
      endpoint_label_(request.endpoint == Endpoint::kChatCompletions ? "/v1/chat/completions"
                                                                     : "/v1/completions"),
      logprobs_(request.sampling.logprobs),
      top_logprobs_(request.sampling.top_logprobs),
      detokenizer_(*deps.model->tokenizer, request.skip_special_tokens),
      stop_matcher_(request.stop, request.include_stop_str_in_output) {}

CompletionHandler::~CompletionHandler() {
  if (done_) return;
  deps_.metrics->RequestFinished();
  if (stream_started_) deps_.metrics->StreamClosed();
}

void CompletionHandler::Begin(tern::v1::RouterGenerateRequest rpc) {
  deps_.metrics->RequestStarted();
  deps_.metrics->AddPromptTokens(prompt_tokens_);
  std::weak_ptr<CompletionHandler> weak = weak_from_this();
  exchange_->SetOnClientGone([weak] {
    if (auto self = weak.lock()) self->OnClientGone();
  });
  std::shared_ptr<CompletionHandler> self = shared_from_this();
  GenerateCallbacks callbacks;
  callbacks.on_response = [self](tern::v1::GenerateResponse response) {
    self->exchange_->Post([self, response = std::move(response)] { self->OnResponse(response); });
  };
  callbacks.on_done = [self](absl::Status status) {
    self->exchange_->Post([self, status = std::move(status)] { self->OnDone(status); });
  };
  call_ = deps_.router->Generate(std::move(rpc), deps_.timeout, std::move(callbacks));
}

void CompletionHandler::OnResponse(const tern::v1::GenerateResponse& response) {
  if (done_) return;
  const int n = response.token_ids_size();
  if (n > 0) {
    const absl::Time now = absl::Now();
    if (!first_token_seen_) {
      first_token_seen_ = true;
      deps_.metrics->ObserveTimeToFirstToken(now - received_);
      // The first token's gap is its TTFT; the message's others follow it.
      deps_.metrics->ObserveInterTokenLatency(absl::ZeroDuration(), n - 1);
    } else {
      deps_.metrics->ObserveInterTokenLatency(now - last_token_, n);
    }
    last_token_ = now;
  }
  completion_tokens_ += n;
  if (logprobs_ && response.logprobs_size() != n) {
    return Fail(absl::InternalError("The worker did not send the logprobs of every token."));
  }
  std::string text;
  for (int i = 0; i < n; ++i) {
    const std::string piece = detokenizer_.Append(response.token_ids(i));
    if (logprobs_) {
      logprob_tracker_.Add(response.logprobs(i), piece.size(), detokenizer_.pending_bytes() > 0);
    }
    text += piece;
  }
  const FinishReason finish = response.finish_reason();
  const bool finished =
      finish == tern::v1::FINISH_REASON_STOP || finish == tern::v1::FINISH_REASON_LENGTH;
  if (response.has_usage()) {
    cached_tokens_ = response.usage().cached_prompt_tokens();
    // The worker counts the EOS/stop token it sampled (as vLLM does); it is
    // not among the streamed ids.
    reported_completion_tokens_ = response.usage().completion_tokens();
  }
  if (finished) {
    const std::string tail = detokenizer_.Flush();
    logprob_tracker_.ExtendLast(tail.size());
    text += tail;
  }
  Release(text, finished);

  if (stop_matcher_.stopped()) {
    call_->Cancel();  // the rest of the generation is not wanted
    return Complete("stop");
  }
  switch (finish) {
    case tern::v1::FINISH_REASON_STOP:
      return Complete("stop");
    case tern::v1::FINISH_REASON_LENGTH:
      return Complete("length");
    case tern::v1::FINISH_REASON_CANCELLED:
      return Fail(absl::UnavailableError("The generation was cancelled by the server."));
    case tern::v1::FINISH_REASON_ERROR:
      worker_error_ = true;  // the RPC's status says why
      return;
    default:
      return;
  }
}

void CompletionHandler::OnDone(const absl::Status& status) {
  if (done_) return;
  if (absl::IsCancelled(status)) {
    // Not the client's doing (that path never gets here): shutdown, or the router gave up.
    return Fail(absl::UnavailableError("The request was cancelled before it completed; retry it."));
  }
  if (!status.ok()) return Fail(status);
  if (worker_error_) return Fail(absl::InternalError("The worker failed while generating."));
  // The stream ended without a finish reason: treat it as the end of the output.
  const std::string tail = detokenizer_.Flush();
  logprob_tracker_.ExtendLast(tail.size());
  Release(tail, /*finished=*/true);
  Complete(stop_matcher_.stopped() || completion_tokens_ < max_tokens_ ? "stop" : "length");
}

void CompletionHandler::OnClientGone() {
  if (done_) return;
  call_->Cancel();
  deps_.metrics->ClientDisconnected();
  Finished(499);
  TERN_LOG(Debug) << "client went away request_id=" << identity_.id
                  << " completion_tokens=" << completion_tokens_;
}

void CompletionHandler::EnsureStreamStarted() {
  if (!stream_ || stream_started_) return;
  stream_started_ = true;
  deps_.metrics->StreamOpened();
  exchange_->StartEventStream();
  if (identity_.endpoint == Endpoint::kChatCompletions)
    exchange_->SendEvent(SseEvent(ChatRoleChunk(identity_)));
}

void CompletionHandler::Release(const std::string& text, bool finished) {
  std::string out = stop_matcher_.Push(text);
  if (finished && !stop_matcher_.stopped()) out += stop_matcher_.Flush();
  std::vector<TokenLogprobEntry> logprobs;
  if (logprobs_) {
    logprobs = logprob_tracker_.Release(out);
    if (finished || stop_matcher_.stopped()) {
      for (TokenLogprobEntry& entry : logprob_tracker_.Finish(stop_matcher_.stopped())) {
        logprobs.push_back(std::move(entry));
      }
    }
  }
  Emit(out, std::move(logprobs));
}

void CompletionHandler::Emit(const std::string& text, std::vector<TokenLogprobEntry> logprobs) {
  if (!stream_) {
    text_ += text;
    for (TokenLogprobEntry& entry : logprobs) logprob_entries_.push_back(std::move(entry));
    return;
  }
  // The stream starts with the router's first response, even an empty one.
  EnsureStreamStarted();
  if (text.empty() && logprobs.empty()) return;
  const bool chat = identity_.endpoint == Endpoint::kChatCompletions;
  OrderedJson logprobs_json = nullptr;
  if (logprobs_) {
    logprobs_json = chat ? ChatLogprobsJson(*deps_.model->tokenizer, logprobs)
                         : CompletionLogprobsJson(*deps_.model->tokenizer, logprobs, top_logprobs_);
  }
  exchange_->SendEvent(
      SseEvent(chat ? ChatContentChunk(identity_, text, std::move(logprobs_json))
                    : CompletionTextChunk(identity_, text, std::move(logprobs_json))));
}

void CompletionHandler::Complete(const char* finish_reason) {
  TokenUsage usage;
  usage.prompt_tokens = prompt_tokens_;
  usage.completion_tokens = std::max(completion_tokens_, reported_completion_tokens_);
  usage.cached_tokens = cached_tokens_;
  deps_.metrics->AddGenerationTokens(usage.completion_tokens);
  deps_.metrics->ObserveRequestTokens(usage.prompt_tokens, usage.completion_tokens);
  if (stream_) {
    EnsureStreamStarted();
    exchange_->SendEvent(SseEvent(identity_.endpoint == Endpoint::kChatCompletions
                                      ? ChatFinishChunk(identity_, finish_reason)
                                      : CompletionFinishChunk(identity_, finish_reason)));
    if (identity_.include_usage) exchange_->SendEvent(SseEvent(UsageChunk(identity_, usage)));
    exchange_->SendEvent(SseDone());
    exchange_->EndEventStream();
  } else {
    const bool chat = identity_.endpoint == Endpoint::kChatCompletions;
    OrderedJson logprobs = nullptr;
    if (logprobs_) {
      logprobs =
          chat ? ChatLogprobsJson(*deps_.model->tokenizer, logprob_entries_)
               : CompletionLogprobsJson(*deps_.model->tokenizer, logprob_entries_, top_logprobs_);
    }
    HttpResponse response;
    response.body = DumpJson(
        chat ? ChatCompletionBody(identity_, text_, finish_reason, usage, std::move(logprobs))
             : CompletionBody(identity_, text_, finish_reason, usage, std::move(logprobs)));
    exchange_->Respond(std::move(response));
  }
  Finished(200);
  TERN_LOG(Debug) << "done request_id=" << identity_.id << " prompt_tokens=" << prompt_tokens_
                  << " completion_tokens=" << completion_tokens_
                  << " finish_reason=" << finish_reason;
}

void CompletionHandler::Fail(const absl::Status& status) {
  call_->Cancel();
  deps_.metrics->AddGenerationTokens(completion_tokens_);
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
    const int64_t tokens =
        prompt_tokens_ + std::max(completion_tokens_, reported_completion_tokens_);
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
