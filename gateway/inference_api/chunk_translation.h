// What the gateway's decoding produces (openai/choice_decoder.h,
// openai/tool_calls.h), as tern.v1.TextChunk fields: token logprobs in the
// chat API's terms (each token's text and bytes, plus its id and, for
// completions, its text offset) and tool-call deltas.
//
// Pure functions; thread-safe.
#ifndef TERN_GATEWAY_INFERENCE_API_CHUNK_TRANSLATION_H_
#define TERN_GATEWAY_INFERENCE_API_CHUNK_TRANSLATION_H_

#include <cstdint>
#include <vector>

#include "gateway/openai/json_fields.h"
#include "gateway/openai/logprobs.h"
#include "gateway/tokenizer/tokenizer.h"
#include "tern/v1/inference.pb.h"

namespace tern::gateway {

// Appends `entries` to chunk.logprobs, each with at most `top_n` alternatives.
void AddLogprobs(const Tokenizer& tokenizer, const std::vector<TokenLogprobEntry>& entries,
                 int32_t top_n, tern::v1::TextChunk& chunk);

// Appends the tool_calls entries of a ToolCallStream::Delta (the chat
// stream's delta form: [{index, id?, type?, function: {name?, arguments}}])
// to chunk.tool_calls.
void AddToolCallDeltas(const Json& tool_calls, tern::v1::TextChunk& chunk);

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_INFERENCE_API_CHUNK_TRANSLATION_H_
