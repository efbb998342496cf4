// One generation request (/v1/completions or /v1/chat/completions) from the
// moment it passed validation to its last byte: starts the router's Generate
// stream, detokenizes the tokens incrementally, applies stop strings, and
// answers with one JSON body or an SSE stream whose events go out as each
// router response arrives, with the tokens' logprobs when asked for (kept in
// step with the released text by LogprobTracker). A stream's HTTP 200 is sent with the router's
// first response, so router errors before it (UNAVAILABLE, RESOURCE_EXHAUSTED,
// ...) still get their own HTTP status; later errors go in-band as
// `data: {"error": ...}` then `data: [DONE]`. A client that disconnects
// cancels the RPC, and so the worker's sequence.
//
// Threading: all state lives on the exchange's io thread; gRPC callbacks
// only post to it. The handler keeps itself alive (shared_ptr captured by
// the callbacks) until the RPC and the exchange are both over.
#ifndef TERN_GATEWAY_COMPLETION_HANDLER_H_
#define TERN_GATEWAY_COMPLETION_HANDLER_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gateway/auth/key_limiter.h"
#include "gateway/http/http_exchange.h"
#include "gateway/metrics.h"
#include "gateway/openai/logprobs.h"
#include "gateway/openai/openai_request.h"
#include "gateway/openai/openai_response.h"
#include "gateway/openai/request_builder.h"
#include "gateway/openai/served_model.h"
#include "gateway/openai/stop_matcher.h"
#include "gateway/router_client.h"
#include "gateway/tokenizer/detokenizer.h"

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

  // Starts serving `request` (already prepared into `prepared`) on `exchange`.
  // Call on the exchange's io thread.
  static void Start(const Dependencies& deps, const OpenAiRequest& request,
                    PreparedRequest prepared, ResponseIdentity identity,
                    std::shared_ptr<HttpExchange> exchange, absl::Time received);

  ~CompletionHandler();

 private:
  CompletionHandler(const Dependencies& deps, const OpenAiRequest& request,
                    const PreparedRequest& prepared, ResponseIdentity identity,
                    std::shared_ptr<HttpExchange> exchange, absl::Time received);

  void Begin(tern::v1::RouterGenerateRequest rpc);
  void OnResponse(const tern::v1::GenerateResponse& response);
  void OnDone(const absl::Status& status);
  void OnClientGone();

  void EnsureStreamStarted();
  // Sends (or, not streaming, keeps) released text and the logprobs of the
  // tokens behind it.
  void Emit(const std::string& text, std::vector<TokenLogprobEntry> logprobs);
  // Releases `text` through the stop matcher (and the held-back tail when
  // `finished`) and emits what became final.
  void Release(const std::string& text, bool finished);
  void Complete(const char* finish_reason);
  void Fail(const absl::Status& status);
  void Finished(int http_status);

  const Dependencies deps_;
  // The request's deps.key_lease (deps_ holds none), until Finished.
  std::shared_ptr<KeyLease> key_lease_;
  const ResponseIdentity identity_;
  const std::shared_ptr<HttpExchange> exchange_;
  const absl::Time received_;
  const bool stream_;
  const int32_t prompt_tokens_;
  const int32_t max_tokens_;
  const std::string endpoint_label_;
  const bool logprobs_;
  const int32_t top_logprobs_;

  IncrementalDetokenizer detokenizer_;
  StopMatcher stop_matcher_;
  LogprobTracker logprob_tracker_;
  std::vector<TokenLogprobEntry> logprob_entries_;  // non-streaming: all of them
  std::shared_ptr<GenerateCall> call_;
  std::string text_;                        // non-streaming: the whole output
  int32_t completion_tokens_ = 0;           // token ids received
  int32_t reported_completion_tokens_ = 0;  // the worker's count, from the final usage
  int32_t cached_tokens_ = 0;
  bool stream_started_ = false;
  bool first_token_seen_ = false;
  absl::Time last_token_;  // when the latest tokens arrived
  bool worker_error_ = false;
  bool done_ = false;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_COMPLETION_HANDLER_H_
