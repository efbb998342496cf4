// OpenAI response bodies and server-sent-event chunks, built as ordered JSON
// so keys appear in OpenAI's order (id, object, created, model, choices, usage).
//
// Chat stream: ChatRoleChunk, ChatContentChunk... (or ChatToolCallsChunk...),
// ChatFinishChunk, then
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
  // What served the response (binary version and model); omitted when empty.
  std::string system_fingerprint;
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
// delta.tool_calls: entries with their "index" (tool_calls.h's Delta).
OrderedJson ChatToolCallsChunk(const ResponseIdentity& identity, OrderedJson tool_calls);
OrderedJson ChatFinishChunk(const ResponseIdentity& identity, std::string_view finish_reason);
OrderedJson CompletionTextChunk(const ResponseIdentity& identity, std::string_view text,
                                OrderedJson logprobs = nullptr);
OrderedJson CompletionFinishChunk(const ResponseIdentity& identity, std::string_view finish_reason);
// choices: [] and the full usage; object per endpoint.
OrderedJson UsageChunk(const ResponseIdentity& identity, const TokenUsage& usage);

// Chunks are built for choice 0; this renumbers one for another choice (n > 1,
// or several prompts).
void SetChoiceIndex(OrderedJson& chunk, int index);

// One choice of a non-streaming body.
OrderedJson ChatBodyChoice(int index, std::string_view text, std::string_view finish_reason,
                           OrderedJson logprobs = nullptr, OrderedJson tool_calls = nullptr);
OrderedJson CompletionBodyChoice(int index, std::string_view text, std::string_view finish_reason,
                                 OrderedJson logprobs = nullptr);
// Non-streaming bodies with every choice.
OrderedJson ChatCompletionBody(const ResponseIdentity& identity, OrderedJson choices,
                               const TokenUsage& usage);
OrderedJson CompletionBody(const ResponseIdentity& identity, OrderedJson choices,
                           const TokenUsage& usage);

// Non-streaming bodies of one choice.
OrderedJson ChatCompletionBody(const ResponseIdentity& identity, std::string_view text,
                               std::string_view finish_reason, const TokenUsage& usage,
                               OrderedJson logprobs = nullptr, OrderedJson tool_calls = nullptr);
OrderedJson CompletionBody(const ResponseIdentity& identity, std::string_view text,
                           std::string_view finish_reason, const TokenUsage& usage,
                           OrderedJson logprobs = nullptr);

// GET /v1/models with one model card.
OrderedJson ModelListBody(std::string_view model, int64_t created, int32_t max_model_len);

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_OPENAI_OPENAI_RESPONSE_H_
