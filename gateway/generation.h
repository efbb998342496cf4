// One generation request from the moment it passed validation to its end,
// whichever API surface serves it (REST chat/completions and Responses in
// completion_handler.h, gRPC tern.v1.Inference in
// inference_api/generation_stream.h): starts a router Generate stream per
// choice (n per prompt; a choice's siblings start once its leader's first
// response shows the prompt prefilled, so they find it in the prefix cache),
// decodes each choice's tokens incrementally (openai/choice_decoder.h: stop
// strings, logprobs kept in step with the released text), splits chat output
// into content and tool calls (openai/tool_calls.h), and hands the results to
// a GenerationSink, which the transport implements, as each router response
// arrives. It observes TTFT and inter-token latency, counts the usage (a
// prompt counts once per group of choices sharing it; its cached tokens are
// the most any of them found in the prefix cache), charges and releases the
// API key's lease and records the request's metrics as the answer ends. Any
// choice failing fails the request and cancels every router call; so does
// the client going away (ClientGone), and so the workers' sequences stop.
//
// Threading: every method, and every call into the sink, runs on the
// generation's executor (the transport's thread: an exchange's io thread, a
// call's SerialQueue); router callbacks (gRPC client threads) only post to
// it. Ownership: the generation owns its sink and is itself shared by the
// transport and its router callbacks, living until both are done with it.
#ifndef TERN_GATEWAY_GENERATION_H_
#define TERN_GATEWAY_GENERATION_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gateway/auth/key_limiter.h"
#include "gateway/metrics.h"
#include "gateway/openai/json_fields.h"
#include "gateway/openai/logprobs.h"
#include "gateway/openai/openai_request.h"
#include "gateway/openai/openai_response.h"
#include "gateway/openai/request_builder.h"
#include "gateway/openai/served_model.h"
#include "gateway/openai/tool_calls.h"
#include "gateway/router_client.h"

namespace tern::gateway {

struct GenerationDependencies {
  const ServedModel* model = nullptr;  // outlives every generation
  RouterClient* router = nullptr;
  GatewayMetrics* metrics = nullptr;
  absl::Duration timeout = absl::Minutes(10);  // router call deadline
  // The API key's hold on its limits; charged the request's tokens and
  // released when the answer ends. Null without keys.
  std::shared_ptr<KeyLease> key_lease;
};

struct GenerationOptions {
  // The metrics' endpoint label ("/v1/chat/completions", "grpc:Chat", ...).
  std::string endpoint_label;
  // Keep each choice's whole text, logprob entries (those of tool-call text
  // included) and tool calls for its FinishedChoice: a non-streamed body.
  bool keep_output = false;
  // The answer's success goes out with Started (an HTTP stream's 200): a
  // later failure is answered in-band, and recorded as a 200.
  bool committed_at_start = false;
};

// A choice's end, as GenerationSink::ChoiceFinished gets it.
struct FinishedChoice {
  int32_t index = 0;
  // "stop", "length", or "tool_calls" for a chat choice that stopped after
  // making calls.
  std::string finish_reason;
  // With keep_output only: the whole text (echo included), its tokens'
  // logprob entries, and message.tool_calls (null when none were made).
  std::string text;
  std::vector<TokenLogprobEntry> logprobs;
  Json tool_calls = nullptr;
};

// What a transport does with a generation's output. Called on the
// generation's executor only; after Finished or Failed, nothing more.
class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  // Before the first output of any choice (the first router response, or a
  // choice's stream ending without one); once.
  virtual void Started() = 0;
  // Released content of choice `index` (possibly empty) and the logprob
  // entries of the tokens behind it (when asked for).
  virtual void Content(int32_t index, const std::string& text,
                       const std::vector<TokenLogprobEntry>& logprobs) = 0;
  // Tool-call entries in a chat chunk's delta form (tool_calls.h's Delta).
  virtual void ToolCallDelta(int32_t index, Json entries) = 0;
  virtual void ChoiceFinished(FinishedChoice choice) = 0;
  // Every choice finished; the request's metrics are recorded.
  virtual void Finished(const TokenUsage& usage) = 0;
  // The request failed (every router call is cancelled; the metrics are
  // recorded): the router's status; UNAVAILABLE when a router call was
  // cancelled not by the client (shutdown, the router gave up) or the worker
  // cancelled the sequence; INTERNAL after a worker error or when asked-for
  // logprobs are missing. Not called after the client went away.
  virtual void Failed(const absl::Status& status) = 0;
};

// Runs a task on the generation's thread; callable from any thread.
using GenerationExecutor = std::function<void(std::function<void()>)>;

class Generation : public std::enable_shared_from_this<Generation> {
 public:
  // `choices` (at least one) are `request`'s, prepared (request_builder.h).
  // Call Begin on the executor to start.
  static std::shared_ptr<Generation> Create(GenerationDependencies deps, GenerationOptions options,
                                            const OpenAiRequest& request,
                                            std::vector<PreparedChoice> choices,
                                            absl::Time received, GenerationExecutor executor,
                                            std::unique_ptr<GenerationSink> sink);
  // Records the request as finished if it never ended (its tasks were dropped).
  ~Generation();

  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  // Starts the leaders' router calls.
  void Begin();
  // The client went away: cancels every router call and records the request
  // (499). False when the request had already ended.
  bool ClientGone();

  // Token ids generated so far, over every choice.
  int32_t completion_tokens() const;

 private:
  struct Choice;

  Generation(GenerationDependencies deps, GenerationOptions options, const OpenAiRequest& request,
             std::vector<PreparedChoice> choices, absl::Time received, GenerationExecutor executor,
             std::unique_ptr<GenerationSink> sink);

  void StartCall(size_t index);
  void OnResponse(Choice& choice, const tern::v1::GenerateResponse& response);
  void OnRouterDone(Choice& choice, const absl::Status& status);
  // TTFT and inter-token latency of `tokens` new tokens.
  void ObserveTokens(Choice& choice, int tokens);

  // Passes on released text and its tokens' logprobs, through the choice's
  // tool-call stream when it has one.
  void Emit(Choice& choice, const std::string& text, std::vector<TokenLogprobEntry> logprobs);
  void EmitContent(Choice& choice, const std::string& text,
                   std::vector<TokenLogprobEntry> logprobs);
  void EmitDelta(Choice& choice, ToolCallStream::Delta delta);
  // Ends one choice; the request ends when every choice has.
  void Complete(Choice& choice, std::string finish_reason);
  void Fail(const absl::Status& status);
  void CancelCalls();
  // Ends the request: the key's tokens and the metrics, once.
  void Record(int http_status);
  TokenUsage Usage() const;

  // Constant after construction.
  const GenerationDependencies deps_;  // without the key lease
  const GenerationOptions options_;
  const absl::Time received_;
  const GenerationExecutor executor_;
  const std::unique_ptr<GenerationSink> sink_;

  std::shared_ptr<KeyLease> key_lease_;  // until Record
  std::vector<std::unique_ptr<Choice>> choices_;
  size_t choices_done_ = 0;
  bool started_ = false;
  bool first_token_seen_ = false;
  bool done_ = false;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_GENERATION_H_
