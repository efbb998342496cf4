// OpenAI response bodies and server-sent-event chunks, built as ordered JSON
// so keys appear in OpenAI's order (id, object, created, model, choices, usage).
//
// Chat stream: ChatRoleChunk, ChatContentChunk..., ChatFinishChunk, then
// UsageChunk when stream_options.include_usage (every other chunk then carries
// "usage": null), then SseDone(). Completions stream: CompletionTextChunk...,
// CompletionFinishChunk, optional UsageChunk, SseDone().
//
// Pure functions; thread-safe.
#ifndef TERN_GATEWAY_OPENAI_OPENAI_RESPONSE_H_
#define TERN_GATEWAY_OPENAI_OPENAI_RESPONSE_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "gateway/http/api_error.h"  // DumpJson
#include "gateway/openai/openai_request.h"

namespace tern::gateway {

using OrderedJson = nlohmann::ordered_json;

// What every chunk and body of one response repeats.
struct ResponseIdentity {
  std::string id;       // "chatcmpl-<hex>" or "cmpl-<hex>"
  int64_t created = 0;  // Unix seconds
  std::string model;
  Endpoint endpoint = Endpoint::kChatCompletions;
  bool include_usage = false;  // streams: add "usage": null to non-usage chunks
};

struct TokenUsage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_tokens = 0;
};

// "chatcmpl-" or "cmpl-" followed by 32 random hex digits.
std::string NewResponseId(Endpoint endpoint);

// "data: <json>\n\n".
std::string SseEvent(const OrderedJson& json);
// "data: [DONE]\n\n".
std::string SseDone();

OrderedJson UsageJson(const TokenUsage& usage);

OrderedJson ChatRoleChunk(const ResponseIdentity& identity);
// `logprobs` (see gateway/logprobs.h) goes in choices[0].logprobs; null when
// the client did not ask for them.
OrderedJson ChatContentChunk(const ResponseIdentity& identity, std::string_view text,
                             OrderedJson logprobs = nullptr);
OrderedJson ChatFinishChunk(const ResponseIdentity& identity, std::string_view finish_reason);
OrderedJson CompletionTextChunk(const ResponseIdentity& identity, std::string_view text,
                                OrderedJson logprobs = nullptr);
OrderedJson CompletionFinishChunk(const ResponseIdentity& identity, std::string_view finish_reason);
// choices: [] and the full usage; object per endpoint.
OrderedJson UsageChunk(const ResponseIdentity& identity, const TokenUsage& usage);

// Non-streaming bodies.
OrderedJson ChatCompletionBody(const ResponseIdentity& identity, std::string_view text,
                               std::string_view finish_reason, const TokenUsage& usage,
                               OrderedJson logprobs = nullptr);
OrderedJson CompletionBody(const ResponseIdentity& identity, std::string_view text,
                           std::string_view finish_reason, const TokenUsage& usage,
                           OrderedJson logprobs = nullptr);

// GET /v1/models with one model card.
OrderedJson ModelListBody(std::string_view model, int64_t created, int32_t max_model_len);

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_OPENAI_OPENAI_RESPONSE_H_
