// One tern.v1.Inference call (Complete or Chat) after it passed validation,
// to its last message: starts a router Generate stream per choice (n per
// prompt; a choice's siblings start once its leader's first response shows
// the prompt prefilled, so they find it in the prefix cache), decodes each
// choice's tokens (openai/choice_decoder.h), splits chat output into content
// and tool-call deltas (openai/tool_calls.h), and writes a TextChunk as each
// router response arrives; each choice's last chunk carries its
// finish_reason ("tool_calls" when a chat choice stopped after making
// calls), and one last chunk carries the usage. Behaves as the REST
// CompletionHandler does; errors end the call with their canonical code
// (common/grpc_status.h) and the message REST would give.
//
// Cancellation: the client cancelling (or disconnecting, or its deadline
// passing) cancels every router call, and so the workers' sequences.
//
// Threading: reactions (gRPC server threads) and router callbacks (gRPC
// client threads) only post to the call's SerialQueue; every piece of state
// below is touched only by its tasks, one at a time. The state is shared by
// the reactor and the router callbacks and lives until both are done with
// it; the reactor deletes itself in OnDone.
#ifndef TERN_GATEWAY_INFERENCE_API_GENERATION_STREAM_H_
#define TERN_GATEWAY_INFERENCE_API_GENERATION_STREAM_H_

#include <grpcpp/grpcpp.h>

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gateway/auth/key_limiter.h"
#include "gateway/inference_api/serial_queue.h"
#include "gateway/metrics.h"
#include "gateway/openai/choice_decoder.h"
#include "gateway/openai/openai_request.h"
#include "gateway/openai/request_builder.h"
#include "gateway/openai/served_model.h"
#include "gateway/openai/tool_calls.h"
#include "gateway/router_client.h"
#include "tern/v1/inference.pb.h"

namespace tern::gateway {

class GenerationStream : public std::enable_shared_from_this<GenerationStream> {
 public:
  struct Dependencies {
    const ServedModel* model = nullptr;  // outlives every stream
    RouterClient* router = nullptr;
    GatewayMetrics* metrics = nullptr;
    // The router calls' deadline: the configured request timeout, or less
    // when the client's deadline comes sooner.
    absl::Duration timeout = absl::Minutes(10);
    // The API key's hold on its limits; charged the request's tokens and
    // released when the call ends. Null without keys.
    std::shared_ptr<KeyLease> key_lease;
    // The metrics' endpoint label ("grpc:Chat", "grpc:Complete").
    std::string endpoint_label;
  };

  // Starts serving `request` (prepared into `choices`, at least one) and
  // returns the call's reactor, which gRPC owns.
  static grpc::ServerWriteReactor<tern::v1::TextChunk>* Start(Dependencies deps,
                                                              const OpenAiRequest& request,
                                                              std::vector<PreparedChoice> choices,
                                                              absl::Time received);

  // A reactor that ends the call at once with `status` (a rejected request).
  static grpc::ServerWriteReactor<tern::v1::TextChunk>* Reject(const absl::Status& status);

  GenerationStream(const GenerationStream&) = delete;
  GenerationStream& operator=(const GenerationStream&) = delete;

 private:
  class Reactor;
  struct Choice;

  GenerationStream(Dependencies deps, const OpenAiRequest& request,
                   std::vector<PreparedChoice> choices, absl::Time received);

  // Each of these runs on queue_.
  void Begin(Reactor* reactor);
  void StartCall(size_t index);
  void OnResponse(Choice& choice, const tern::v1::GenerateResponse& response);
  void OnRouterDone(Choice& choice, const absl::Status& status);
  void OnWriteDone(bool ok);
  void OnCancel();

  // Queues released text and its tokens' logprobs, through the choice's
  // tool-call stream when it has one.
  void Emit(Choice& choice, const std::string& text, std::vector<TokenLogprobEntry> logprobs);
  void EmitContent(Choice& choice, const std::string& text,
                   const std::vector<TokenLogprobEntry>& logprobs);
  void EmitDelta(Choice& choice, ToolCallStream::Delta delta);
  // Ends one choice; the call ends when every choice has.
  void Complete(Choice& choice, std::string finish_reason);
  void Fail(const absl::Status& status);
  void CancelCalls();
  // Records the outcome (metrics, the key's tokens) once.
  void Finished(const absl::Status& status, bool client_gone);
  // Queues a chunk for the client.
  void Send(tern::v1::TextChunk chunk);
  // Starts the next write, or the Finish once the writes are done.
  void Flush();
  tern::v1::Usage Usage() const;
  int32_t CompletionTokens() const;

  // Constant after construction.
  const Dependencies deps_;
  const absl::Time received_;
  const bool logprobs_;
  const int32_t top_logprobs_;

  SerialQueue queue_;
  // Valid until the Finish is started; then OnDone may delete it.
  Reactor* reactor_ = nullptr;
  std::shared_ptr<KeyLease> key_lease_;
  std::vector<std::unique_ptr<Choice>> choices_;
  size_t choices_done_ = 0;
  // Chunks waiting for the write in flight to complete.
  std::deque<tern::v1::TextChunk> queued_;
  // The chunk being written (it must live until OnWriteDone).
  tern::v1::TextChunk in_flight_;
  bool writing_ = false;
  // The call's final status, once known; sent after the queued chunks.
  std::optional<absl::Status> final_status_;
  bool finish_started_ = false;
  // The client is gone: nothing more is written.
  bool client_gone_ = false;
  // The outcome went into the metrics.
  bool recorded_ = false;
  bool first_token_seen_ = false;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_INFERENCE_API_GENERATION_STREAM_H_
