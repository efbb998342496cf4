// One generation request (/v1/completions or /v1/chat/completions) from the
// moment it passed validation to its last byte: starts a router Generate
// stream per choice (n per prompt; a choice's siblings start once its
// leader's first response shows the prompt prefilled, so they find it in the
// prefix cache), detokenizes each choice's tokens incrementally, applies stop
// strings, splits chat output into content and tool calls (tool_calls.h), and
// answers with one JSON body or an SSE stream whose events go out as each
// router response arrives, with the tokens' logprobs when asked for (kept in
// step with the released text by LogprobTracker). A stream's HTTP 200 is sent
// with the first router response, so router errors before it (UNAVAILABLE,
// RESOURCE_EXHAUSTED, ...) still get their own HTTP status; later errors go
// in-band as `data: {"error": ...}` then `data: [DONE]`. Any choice failing
// fails the request. A client that disconnects cancels every RPC, and so the
// workers' sequences.
//
// Threading: all state lives on the exchange's io thread; gRPC callbacks
// only post to it. The handler keeps itself alive (shared_ptr captured by
// the callbacks) until the RPCs and the exchange are all over.
#ifndef TERN_GATEWAY_COMPLETION_HANDLER_H_
#define TERN_GATEWAY_COMPLETION_HANDLER_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gateway/auth/key_limiter.h"
#include "gateway/http/http_exchange.h"
#include "gateway/metrics.h"
#include "gateway/openai/choice_decoder.h"
#include "gateway/openai/logprobs.h"
#include "gateway/openai/openai_request.h"
#include "gateway/openai/openai_response.h"
#include "gateway/openai/request_builder.h"
#include "gateway/openai/responses_output.h"
#include "gateway/openai/responses_request.h"
#include "gateway/openai/served_model.h"
#include "gateway/openai/tool_calls.h"
#include "gateway/router_client.h"

namespace tern::gateway {

class CompletionHandler : public std::enable_shared_from_this<CompletionHandler> {
 public:
  struct Dependencies {
    const ServedModel* model = nullptr;  // outlives every handler
    RouterClient* router = nullptr;
    GatewayMetrics* metrics = nullptr;
    absl::Duration timeout = absl::Minutes(10);  // router call deadline
    // The API key's hold on its limits; charged the request's tokens when it
    // ends, released with the handler. Null without keys.
    std::shared_ptr<KeyLease> key_lease;
  };

  // Starts serving `request` (already prepared into `choices`, at least one)
  // on `exchange`. Call on the exchange's io thread.
  static void Start(const Dependencies& deps, const OpenAiRequest& request,
                    std::vector<PreparedChoice> choices, ResponseIdentity identity,
                    std::shared_ptr<HttpExchange> exchange, absl::Time received);

  // The same for the Responses API (POST /v1/responses): one choice, answered
  // with a response object or its typed events (responses_output.h).
  static void StartResponses(const Dependencies& deps, const ResponsesRequest& request,
                             std::vector<PreparedChoice> choices, ResponseIdentity identity,
                             std::shared_ptr<HttpExchange> exchange, absl::Time received);

  ~CompletionHandler();

 private:
  struct Choice;

  CompletionHandler(const Dependencies& deps, const OpenAiRequest& request,
                    std::vector<PreparedChoice> choices, ResponseIdentity identity,
                    std::shared_ptr<HttpExchange> exchange, absl::Time received,
                    std::unique_ptr<ResponsesOutput> responses = nullptr);

  void Begin();
  // Starts the router call of choice `index`.
  void StartCall(size_t index);
  void OnResponse(Choice& choice, const tern::v1::GenerateResponse& response);
  void OnDone(Choice& choice, const absl::Status& status);
  void OnClientGone();

  void EnsureStreamStarted();
  // Sends (or, not streaming, keeps) released text and the logprobs of the
  // tokens behind it, through the choice's tool-call stream when it has one.
  void Emit(Choice& choice, const std::string& text, std::vector<TokenLogprobEntry> logprobs);
  void EmitContent(Choice& choice, const std::string& text,
                   std::vector<TokenLogprobEntry> logprobs);
  void EmitDelta(Choice& choice, ToolCallStream::Delta delta);
  // Ends one choice; the response ends when every choice has.
  void Complete(Choice& choice, std::string finish_reason);
  void CompleteResponse();
  void Fail(const absl::Status& status);
  void Finished(int http_status);
  void CancelCalls();
  TokenUsage Usage() const;
  int32_t CompletionTokens() const;

  const Dependencies deps_;
  // The request's deps.key_lease (deps_ holds none), until Finished.
  std::shared_ptr<KeyLease> key_lease_;
  const ResponseIdentity identity_;
  const std::shared_ptr<HttpExchange> exchange_;
  const absl::Time received_;
  const bool stream_;
  const bool chat_;
  const std::string endpoint_label_;
  const bool logprobs_;
  const int32_t top_logprobs_;

  // Set for the Responses API, whose output it builds.
  const std::unique_ptr<ResponsesOutput> responses_;
  std::vector<std::unique_ptr<Choice>> choices_;
  size_t choices_done_ = 0;
  bool stream_started_ = false;
  bool first_token_seen_ = false;
  absl::Time last_token_;  // when the latest tokens arrived
  bool done_ = false;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_COMPLETION_HANDLER_H_
