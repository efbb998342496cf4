#include "gateway/completion_handler.h"

#include <algorithm>
#include <utility>

#include "common/log.h"
#include "gateway/http/api_error.h"

namespace tern::gateway {

void CompletionHandler::Start(const Dependencies& deps, const OpenAiRequest& request,
                              std::vector<PreparedChoice> choices, ResponseIdentity identity,
                              std::shared_ptr<HttpExchange> exchange, absl::Time received) {
  std::unique_ptr<CompletionHandler> handler(new CompletionHandler(
      deps, request, choices, std::move(identity), std::move(exchange), nullptr));
  Serve(deps, request, std::move(choices), std::move(handler), received);
}

void CompletionHandler::StartResponses(const Dependencies& deps, const ResponsesRequest& request,
                                       std::vector<PreparedChoice> choices,
                                       ResponseIdentity identity,
                                       std::shared_ptr<HttpExchange> exchange,
                                       absl::Time received) {
  auto output = std::make_unique<ResponsesOutput>(request, identity.model, identity.created);
  std::unique_ptr<CompletionHandler> handler(new CompletionHandler(
      deps, request.chat, choices, std::move(identity), std::move(exchange), std::move(output)));
  Serve(deps, request.chat, std::move(choices), std::move(handler), received);
}

void CompletionHandler::Serve(const Dependencies& deps, const OpenAiRequest& request,
                              std::vector<PreparedChoice> choices,
                              std::unique_ptr<CompletionHandler> handler, absl::Time received) {
  GenerationOptions options;
  options.endpoint_label = handler->responses_ != nullptr ? "/v1/responses"
                           : handler->chat_               ? "/v1/chat/completions"
                                                          : "/v1/completions";
  options.keep_output = !handler->stream_ && handler->responses_ == nullptr;
  options.committed_at_start = handler->stream_;
  CompletionHandler* const sink = handler.get();
  std::shared_ptr<HttpExchange> exchange = sink->exchange_;
  std::shared_ptr<Generation> generation = Generation::Create(
      deps, std::move(options), request, std::move(choices), received,
      [exchange](std::function<void()> task) { exchange->Post(std::move(task)); },
      std::move(handler));
  // The generation owns the handler: alive while it is.
  std::weak_ptr<Generation> weak = generation;
  exchange->SetOnClientGone([weak, sink] {
    if (auto generation = weak.lock()) sink->OnClientGone(*generation);
  });
  generation->Begin();
}

namespace {

std::vector<int32_t> ChoiceIndices(const std::vector<PreparedChoice>& choices) {
  std::vector<int32_t> indices;
  for (const PreparedChoice& choice : choices) indices.push_back(choice.index);
  return indices;
}

}  // namespace

CompletionHandler::CompletionHandler(const Dependencies& deps, const OpenAiRequest& request,
                                     const std::vector<PreparedChoice>& choices,
                                     ResponseIdentity identity,
                                     std::shared_ptr<HttpExchange> exchange,
                                     std::unique_ptr<ResponsesOutput> responses)
    : model_(deps.model),
      metrics_(deps.metrics),
      identity_(std::move(identity)),
      exchange_(std::move(exchange)),
      stream_(request.stream),
      chat_(request.endpoint == Endpoint::kChatCompletions),
      logprobs_(request.sampling.logprobs),
      top_logprobs_(request.sampling.top_logprobs),
      choice_indices_(ChoiceIndices(choices)),
      responses_(std::move(responses)) {}

CompletionHandler::~CompletionHandler() {
  if (stream_open_) metrics_->StreamClosed();
}

void CompletionHandler::OnClientGone(Generation& generation) {
  if (!generation.ClientGone()) return;
  CloseStream();
  TERN_LOG(Debug) << "client went away request_id=" << identity_.id
                  << " completion_tokens=" << generation.completion_tokens();
}

void CompletionHandler::Started() {
  if (!stream_) return;
  stream_open_ = true;
  metrics_->StreamOpened();
  exchange_->StartEventStream();
  if (responses_ != nullptr) return SendEvents(responses_->Start());
  if (!chat_) return;
  for (const int32_t index : choice_indices_) {
    OrderedJson role = ChatRoleChunk(identity_);
    SetChoiceIndex(role, index);
    exchange_->SendEvent(SseEvent(role));
  }
}

void CompletionHandler::Content(int32_t index, const std::string& text,
                                const std::vector<TokenLogprobEntry>& logprobs) {
  if (responses_ != nullptr) {
    std::vector<std::string> events = responses_->Text(text);
    if (stream_) SendEvents(events);
    return;
  }
  // Not streaming: the generation keeps the output for the body.
  if (!stream_ || (text.empty() && logprobs.empty())) return;
  OrderedJson logprobs_json = nullptr;
  if (logprobs_) {
    logprobs_json = chat_ ? ChatLogprobsJson(*model_->tokenizer, logprobs)
                          : CompletionLogprobsJson(*model_->tokenizer, logprobs, top_logprobs_);
  }
  OrderedJson chunk = chat_ ? ChatContentChunk(identity_, text, std::move(logprobs_json))
                            : CompletionTextChunk(identity_, text, std::move(logprobs_json));
  SetChoiceIndex(chunk, index);
  exchange_->SendEvent(SseEvent(chunk));
}

void CompletionHandler::ToolCallDelta(int32_t index, Json entries) {
  if (responses_ != nullptr) {
    std::vector<std::string> events = responses_->ToolCalls(entries);
    if (stream_) SendEvents(events);
    return;
  }
  if (!stream_) return;
  OrderedJson chunk = ChatToolCallsChunk(identity_, std::move(entries));
  SetChoiceIndex(chunk, index);
  exchange_->SendEvent(SseEvent(chunk));
}

void CompletionHandler::ChoiceFinished(FinishedChoice choice) {
  if (stream_ && responses_ == nullptr) {
    OrderedJson chunk = chat_ ? ChatFinishChunk(identity_, choice.finish_reason)
                              : CompletionFinishChunk(identity_, choice.finish_reason);
    SetChoiceIndex(chunk, choice.index);
    exchange_->SendEvent(SseEvent(chunk));
  }
  finished_.push_back(std::move(choice));
}

void CompletionHandler::Finished(const TokenUsage& usage) {
  if (responses_ != nullptr) {
    // One choice: the Responses API has no n.
    std::vector<std::string> events = responses_->Finish(finished_[0].finish_reason, usage);
    if (stream_) {
      SendEvents(events);
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
    HttpResponse response;
    response.body = Body(usage);
    exchange_->Respond(std::move(response));
  }
  CloseStream();
  TERN_LOG(Debug) << "done request_id=" << identity_.id << " prompt_tokens=" << usage.prompt_tokens
                  << " completion_tokens=" << usage.completion_tokens
                  << " choices=" << finished_.size();
}

std::string CompletionHandler::Body(const TokenUsage& usage) {
  std::sort(finished_.begin(), finished_.end(),
            [](const FinishedChoice& a, const FinishedChoice& b) { return a.index < b.index; });
  OrderedJson choices = OrderedJson::array();
  for (FinishedChoice& choice : finished_) {
    OrderedJson logprobs = nullptr;
    if (logprobs_) {
      logprobs = chat_ ? ChatLogprobsJson(*model_->tokenizer, choice.logprobs)
                       : CompletionLogprobsJson(*model_->tokenizer, choice.logprobs, top_logprobs_);
    }
    choices.push_back(chat_ ? ChatBodyChoice(choice.index, choice.text, choice.finish_reason,
                                             std::move(logprobs), std::move(choice.tool_calls))
                            : CompletionBodyChoice(choice.index, choice.text, choice.finish_reason,
                                                   std::move(logprobs)));
  }
  return DumpJson(chat_ ? ChatCompletionBody(identity_, std::move(choices), usage)
                        : CompletionBody(identity_, std::move(choices), usage));
}

void CompletionHandler::Failed(const absl::Status& status) {
  if (stream_open_) {
    // The 200 is out: report in-band, as vLLM does and the OpenAI SDKs expect.
    const ApiError error = ToApiError(status);
    metrics_->RecordStreamError(error.body["error"].value("type", "server_error"));
    exchange_->SendEvent(SseEvent(error.body));
    exchange_->SendEvent(SseDone());
    exchange_->EndEventStream();
    CloseStream();
  } else {
    exchange_->Respond(ToHttpResponse(status));
  }
  TERN_LOG(Debug) << "failed request_id=" << identity_.id << " status=" << status.ToString();
}

void CompletionHandler::SendEvents(const std::vector<std::string>& events) {
  for (const std::string& event : events) exchange_->SendEvent(event);
}

void CompletionHandler::CloseStream() {
  if (!stream_open_) return;
  stream_open_ = false;
  metrics_->StreamClosed();
}

}  // namespace tern::gateway
