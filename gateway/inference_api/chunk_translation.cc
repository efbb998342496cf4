#include "gateway/inference_api/chunk_translation.h"

#include <algorithm>
#include <string>

namespace tern::gateway {
namespace {

// The chat logprobs format's "bytes" (an array of byte values) as a string.
std::string Bytes(const Json& values) {
  std::string bytes;
  if (!values.is_array()) return bytes;
  for (const Json& value : values) bytes.push_back(static_cast<char>(value.get<int>()));
  return bytes;
}

// One token of the chat logprobs format.
void FillToken(const Json& item, int32_t token_id, tern::v1::LogprobToken& token) {
  token.set_token(item.value("token", std::string()));
  token.set_token_id(token_id);
  token.set_logprob(item.value("logprob", 0.0f));
  token.set_bytes(Bytes(item["bytes"]));
}

std::string StringField(const Json& object, const char* name) {
  const Json* value = Find(object, name);
  return value != nullptr && value->is_string() ? value->get<std::string>() : std::string();
}

}  // namespace

void AddLogprobs(const Tokenizer& tokenizer, const std::vector<TokenLogprobEntry>& entries,
                 int32_t top_n, tern::v1::TextChunk& chunk) {
  if (entries.empty()) return;
  // The chat renderer decides each token's text and bytes, as REST shows them.
  const Json content = ChatLogprobsJson(tokenizer, entries)["content"];
  for (size_t i = 0; i < entries.size() && i < content.size(); ++i) {
    const TokenLogprobEntry& entry = entries[i];
    tern::v1::LogprobToken& token = *chunk.add_logprobs();
    FillToken(content[i], entry.token_id, token);
    token.set_text_offset(entry.text_offset);
    const Json& top = content[i]["top_logprobs"];
    const size_t n =
        std::min({entry.top.size(), top.size(), static_cast<size_t>(std::max(top_n, 0))});
    for (size_t j = 0; j < n; ++j) FillToken(top[j], entry.top[j].first, *token.add_top());
  }
}

void AddToolCallDeltas(const Json& tool_calls, tern::v1::TextChunk& chunk) {
  if (!tool_calls.is_array()) return;
  for (const Json& call : tool_calls) {
    tern::v1::ToolCallDelta& delta = *chunk.add_tool_calls();
    delta.set_index(call.value("index", 0));
    delta.set_id(StringField(call, "id"));
    if (const Json* function = Find(call, "function");
        function != nullptr && function->is_object()) {
      delta.set_name(StringField(*function, "name"));
      delta.set_arguments(StringField(*function, "arguments"));
    }
  }
}

}  // namespace tern::gateway
