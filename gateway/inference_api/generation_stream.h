// The gRPC face of a generation (generation.h): one tern.v1.Inference call
// (Complete or Chat) after it passed validation, to its last message. Writes
// a TextChunk as each router response arrives: released text with its
// tokens' logprobs, tool-call deltas, each choice's last chunk with its
// finish_reason ("tool_calls" when a chat choice stopped after making
// calls), and one last chunk with the usage. Behaves as the REST
// CompletionHandler does; errors end the call with their canonical code
// (common/grpc_status.h) and the message REST would give.
//
// Cancellation: the client cancelling (or disconnecting, or its deadline
// passing) cancels every router call, and so the workers' sequences.
//
// Threading: reactions (gRPC server threads) and router callbacks (gRPC
// client threads) only post to the call's SerialQueue, the generation's
// executor; every piece of state below is touched only by its tasks, one at
// a time. The stream is the generation's sink and lives as long as it: until
// the reactor and the router callbacks are done with it; the reactor deletes
// itself in OnDone.
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
#include "gateway/generation.h"
#include "gateway/inference_api/serial_queue.h"
#include "gateway/openai/openai_request.h"
#include "gateway/openai/request_builder.h"
#include "gateway/openai/served_model.h"
#include "tern/v1/inference.pb.h"

namespace tern::gateway {

class GenerationStream final : public GenerationSink {
 public:
  struct Dependencies : GenerationDependencies {
    // The metrics' endpoint label ("grpc:Chat", "grpc:Complete").
    std::string endpoint_label;
  };

  // Starts serving `request` (prepared into `choices`, at least one) and
  // returns the call's reactor, which gRPC owns. deps.timeout is the router
  // calls' deadline: the configured request timeout, or less when the
  // client's deadline comes sooner.
  static grpc::ServerWriteReactor<tern::v1::TextChunk>* Start(Dependencies deps,
                                                              const OpenAiRequest& request,
                                                              std::vector<PreparedChoice> choices,
                                                              absl::Time received);

  // A reactor that ends the call at once with `status` (a rejected request).
  static grpc::ServerWriteReactor<tern::v1::TextChunk>* Reject(const absl::Status& status);

  GenerationStream(const GenerationStream&) = delete;
  GenerationStream& operator=(const GenerationStream&) = delete;

  // GenerationSink.
  void Started() override {}
  void Content(int32_t index, const std::string& text,
               const std::vector<TokenLogprobEntry>& logprobs) override;
  void ToolCallDelta(int32_t index, Json entries) override;
  void ChoiceFinished(FinishedChoice choice) override;
  void Finished(const TokenUsage& usage) override;
  void Failed(const absl::Status& status) override;

 private:
  class Reactor;

  GenerationStream(const ServedModel* model, const OpenAiRequest& request);

  // Each of these runs on queue_.
  void OnWriteDone(Generation& generation, bool ok);
  void OnCancel(Generation& generation);
  // Queues a chunk for the client and writes it when no write is in flight.
  void Send(tern::v1::TextChunk chunk);
  // Starts the next write, or the Finish once the writes are done.
  void Flush();

  // Constant after construction.
  const ServedModel* const model_;
  const bool logprobs_;
  const int32_t top_logprobs_;

  SerialQueue queue_;
  // Valid until the Finish is started; then OnDone may delete it.
  Reactor* reactor_ = nullptr;
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
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_INFERENCE_API_GENERATION_STREAM_H_
