// Log-probabilities of generated tokens, kept in step with the text the
// client actually receives, and rendered in OpenAI's two formats.
//
// The text a client gets is a prefix of the detokenized stream: the
// incremental detokenizer holds back unfinished UTF-8 characters and the stop
// matcher holds back a tail that may grow into a stop string, and cuts the
// stream at a match. LogprobTracker records, per token, the bytes of the
// stream its text occupies and hands out a token's entry once the text
// released to the client covers all of it, so every chunk carries the
// logprobs of the tokens behind its own text. A token that ends inside a
// character waits for the token that completes the character. At a stop string the tokens whose
// text was at least partly released are reported (the one that straddles the cut included); tokens
// wholly inside the trimmed stop string, or after it, are not. A token whose text is empty (a
// skipped special token) goes out with the text that follows it, or at the end of the generation.
//
// Not thread-safe: one tracker per request, used from one thread.
#ifndef TERN_GATEWAY_OPENAI_LOGPROBS_H_
#define TERN_GATEWAY_OPENAI_LOGPROBS_H_

#include <cstdint>
#include <deque>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/tokenizer/tokenizer.h"
#include "tern/v1/common.pb.h"

namespace tern::gateway {

// One generated token's log-probability and its most likely alternatives.
struct TokenLogprobEntry {
  int32_t token_id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // highest first
  // Where the token's text starts in the output, in Unicode code points (as
  // the legacy completions API's text_offset).
  int64_t text_offset = 0;
};

class LogprobTracker {
 public:
  // Records the next token, whose detokenized text was `text_bytes` long
  // (possibly 0); `inside_character` when the detokenizer still holds bytes
  // of an unfinished character after it.
  void Add(const tern::v1::TokenLogprob& logprob, size_t text_bytes, bool inside_character);
  // Attributes `text_bytes` more bytes to the last token (the detokenizer's
  // flushed tail at the end of the stream); no character is open any more.
  void ExtendLast(size_t text_bytes);

  // Records `text`, the next piece released to the client, and returns the
  // entries it completes (see the file comment).
  std::vector<TokenLogprobEntry> Release(std::string_view text);
  // The generation ended. After a stop string (`stopped`), returns the
  // pending entries whose text was partly released and drops the rest;
  // otherwise (everything was released) returns all pending entries.
  std::vector<TokenLogprobEntry> Finish(bool stopped);

 private:
  struct Pending {
    TokenLogprobEntry entry;
    size_t start = 0;  // byte range of its text in the detokenized stream
    size_t end = 0;
    bool open = false;  // some of its bytes wait for a later token's
  };

  // The code-point offset of stream byte `at` (at <= released_.size(),
  // non-decreasing across calls).
  int64_t CodePointOffset(size_t at);
  TokenLogprobEntry Take();

  std::deque<Pending> pending_;
  size_t stream_bytes_ = 0;   // bytes of the detokenized stream so far
  std::string released_;      // the text released to the client so far
  size_t counted_bytes_ = 0;  // released_ bytes already counted in code points
  int64_t counted_code_points_ = 0;
};

// The chat format: {"content": [{token, logprob, bytes, top_logprobs: [{token,
// logprob, bytes}]}]}. `token` is the token decoded on its own (special
// tokens written out; bytes that are not a whole character read as U+FFFD),
// `bytes` the token's raw bytes, which concatenate to the output's UTF-8.
nlohmann::ordered_json ChatLogprobsJson(const Tokenizer& tokenizer,
                                        const std::vector<TokenLogprobEntry>& entries);

// The legacy completions format: {tokens, token_logprobs, top_logprobs,
// text_offset}; each top_logprobs item maps token text to log-probability for
// the sampled token and the `top_n` most likely ones (up to top_n + 1 keys),
// as vLLM reports them.
nlohmann::ordered_json CompletionLogprobsJson(const Tokenizer& tokenizer,
                                              const std::vector<TokenLogprobEntry>& entries,
                                              int32_t top_n);

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_OPENAI_LOGPROBS_H_
