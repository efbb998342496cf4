// One choice's router stream turned into released text: token ids
// detokenized incrementally, stop strings applied (the text after a stop is
// never released), the tokens' logprobs kept in step with the released text
// (LogprobTracker), and the finish reason. The same for every API surface
// that serves generations (REST chat and completions, Responses, gRPC).
//
// Not thread-safe; one per choice.
#ifndef TERN_GATEWAY_OPENAI_CHOICE_DECODER_H_
#define TERN_GATEWAY_OPENAI_CHOICE_DECODER_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gateway/openai/logprobs.h"
#include "gateway/openai/openai_request.h"
#include "gateway/openai/stop_matcher.h"
#include "gateway/tokenizer/detokenizer.h"
#include "gateway/tokenizer/tokenizer.h"
#include "tern/v1/worker.pb.h"

namespace tern::gateway {

class ChoiceDecoder {
 public:
  // `tokenizer` must outlive the decoder. `max_tokens` is the budget the
  // choice was sent with (to tell a length finish from a stop).
  ChoiceDecoder(const OpenAiRequest& request, const Tokenizer& tokenizer, int32_t max_tokens);

  struct Output {
    std::string text;                         // newly released
    std::vector<TokenLogprobEntry> logprobs;  // of the tokens behind it, when asked for
    // Set when the choice ended: "stop" or "length". The caller should
    // cancel the call when a stop string ended it (stopped_by_string).
    std::string finish_reason;
    bool stopped_by_string = false;
  };

  // Takes one router response. INTERNAL when logprobs were asked for and are
  // missing; UNAVAILABLE when the worker cancelled the sequence; INTERNAL
  // after the worker reported an error (the RPC's status says more).
  absl::StatusOr<Output> Push(const tern::v1::GenerateResponse& response);
  // The stream ended without a finish reason: whatever is held, as the end.
  Output End();

  bool finished() const { return !finish_reason_.empty(); }
  // Token ids received, and the worker's own count (it includes the EOS or
  // stop token it sampled).
  int32_t completion_tokens() const { return std::max(received_tokens_, reported_tokens_); }
  int32_t cached_tokens() const { return cached_tokens_; }
  bool worker_error() const { return worker_error_; }

 private:
  Output Release(std::string text, bool finished);

  const bool logprobs_;
  const int32_t max_tokens_;
  IncrementalDetokenizer detokenizer_;
  StopMatcher stop_matcher_;
  LogprobTracker logprob_tracker_;
  int32_t received_tokens_ = 0;
  int32_t reported_tokens_ = 0;
  int32_t cached_tokens_ = 0;
  bool worker_error_ = false;
  std::string finish_reason_;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_OPENAI_CHOICE_DECODER_H_
