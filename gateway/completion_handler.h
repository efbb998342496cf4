// The REST face of a generation (generation.h): answers /v1/completions,
// /v1/chat/completions and /v1/responses with one JSON body or an SSE
// stream whose events go out as each router response arrives (chat and
// completions chunks, with the tokens' logprobs when asked for, or the
// Responses API's typed events, responses_output.h). A stream's HTTP 200 is
// sent with the first router response, so router errors before it
// (UNAVAILABLE, RESOURCE_EXHAUSTED, ...) still get their own HTTP status;
// later errors go in-band as `data: {"error": ...}` then `data: [DONE]`. A
// client that disconnects cancels every RPC, and so the workers' sequences.
//
// Threading: all state lives on the exchange's io thread; gRPC callbacks
// only post to it. The handler is the generation's sink, kept alive with it
// until the RPCs and the exchange are all over.
#ifndef TERN_GATEWAY_COMPLETION_HANDLER_H_
#define TERN_GATEWAY_COMPLETION_HANDLER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gateway/generation.h"
#include "gateway/http/http_exchange.h"
#include "gateway/metrics.h"
#include "gateway/openai/openai_request.h"
#include "gateway/openai/openai_response.h"
#include "gateway/openai/request_builder.h"
#include "gateway/openai/responses_output.h"
#include "gateway/openai/responses_request.h"
#include "gateway/openai/served_model.h"

namespace tern::gateway {

class CompletionHandler final : public GenerationSink {
 public:
  using Dependencies = GenerationDependencies;

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

  ~CompletionHandler() override;

  // GenerationSink.
  void Started() override;
  void Content(int32_t index, const std::string& text,
               const std::vector<TokenLogprobEntry>& logprobs) override;
  void ToolCallDelta(int32_t index, Json entries) override;
  void ChoiceFinished(FinishedChoice choice) override;
  void Finished(const TokenUsage& usage) override;
  void Failed(const absl::Status& status) override;

 private:
  CompletionHandler(const Dependencies& deps, const OpenAiRequest& request,
                    const std::vector<PreparedChoice>& choices, ResponseIdentity identity,
                    std::shared_ptr<HttpExchange> exchange,
                    std::unique_ptr<ResponsesOutput> responses);

  static void Serve(const Dependencies& deps, const OpenAiRequest& request,
                    std::vector<PreparedChoice> choices, std::unique_ptr<CompletionHandler> handler,
                    absl::Time received);
  void OnClientGone(Generation& generation);
  void SendEvents(const std::vector<std::string>& events);
  void CloseStream();
  // The non-streamed body of chat and completions.
  std::string Body(const TokenUsage& usage);

  // Constant after construction.
  const ServedModel* const model_;
  GatewayMetrics* const metrics_;
  const ResponseIdentity identity_;
  const std::shared_ptr<HttpExchange> exchange_;
  const bool stream_;
  const bool chat_;
  const bool logprobs_;
  const int32_t top_logprobs_;
  const std::vector<int32_t> choice_indices_;  // each choice's, in order
  // Set for the Responses API, whose output it builds.
  const std::unique_ptr<ResponsesOutput> responses_;

  // Choices ended so far, with their output when not streaming.
  std::vector<FinishedChoice> finished_;
  bool stream_open_ = false;  // the 200 went out; the stream has not ended
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_COMPLETION_HANDLER_H_
