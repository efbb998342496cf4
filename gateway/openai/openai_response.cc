#include "gateway/openai/openai_response.h"

#include <random>

namespace tern::gateway {
namespace {

const char* ChunkObject(Endpoint endpoint) {
  return endpoint == Endpoint::kChatCompletions ? "chat.completion.chunk" : "text_completion";
}

OrderedJson ChunkEnvelope(const ResponseIdentity& identity, OrderedJson choices) {
  OrderedJson chunk;
  chunk["id"] = identity.id;
  chunk["object"] = ChunkObject(identity.endpoint);
  chunk["created"] = identity.created;
  chunk["model"] = identity.model;
  chunk["choices"] = std::move(choices);
  if (identity.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

OrderedJson ChatChoice(OrderedJson delta, std::string_view finish_reason,
                       OrderedJson logprobs = nullptr) {
  OrderedJson choice;
  choice["index"] = 0;
  choice["delta"] = std::move(delta);
  choice["logprobs"] = std::move(logprobs);
  if (finish_reason.empty()) {
    choice["finish_reason"] = nullptr;
  } else {
    choice["finish_reason"] = finish_reason;
  }
  return OrderedJson::array({std::move(choice)});
}

OrderedJson TextChoice(std::string_view text, std::string_view finish_reason,
                       OrderedJson logprobs = nullptr) {
  OrderedJson choice;
  choice["index"] = 0;
  choice["text"] = text;
  choice["logprobs"] = std::move(logprobs);
  if (finish_reason.empty()) {
    choice["finish_reason"] = nullptr;
  } else {
    choice["finish_reason"] = finish_reason;
  }
  return OrderedJson::array({std::move(choice)});
}

}  // namespace

std::string NewResponseId(Endpoint endpoint) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id = endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-";
  for (int word = 0; word < 2; ++word) {
    uint64_t bits = rng();
    for (int i = 0; i < 16; ++i, bits >>= 4) id += kHex[bits & 15];
  }
  return id;
}

std::string SseEvent(const OrderedJson& json) {
  std::string event = "data: ";
  event += DumpJson(json);
  event += "\n\n";
  return event;
}

std::string SseDone() { return "data: [DONE]\n\n"; }

OrderedJson UsageJson(const TokenUsage& usage) {
  OrderedJson json;
  json["prompt_tokens"] = usage.prompt_tokens;
  json["completion_tokens"] = usage.completion_tokens;
  json["total_tokens"] = usage.prompt_tokens + usage.completion_tokens;
  json["prompt_tokens_details"] = {{"cached_tokens", usage.cached_tokens}};
  return json;
}

OrderedJson ChatRoleChunk(const ResponseIdentity& identity) {
  OrderedJson delta;
  delta["role"] = "assistant";
  delta["content"] = "";
  return ChunkEnvelope(identity, ChatChoice(std::move(delta), ""));
}

OrderedJson ChatContentChunk(const ResponseIdentity& identity, std::string_view text,
                             OrderedJson logprobs) {
  OrderedJson delta;
  delta["content"] = text;
  return ChunkEnvelope(identity, ChatChoice(std::move(delta), "", std::move(logprobs)));
}

OrderedJson ChatFinishChunk(const ResponseIdentity& identity, std::string_view finish_reason) {
  return ChunkEnvelope(identity, ChatChoice(OrderedJson::object(), finish_reason));
}

OrderedJson CompletionTextChunk(const ResponseIdentity& identity, std::string_view text,
                                OrderedJson logprobs) {
  return ChunkEnvelope(identity, TextChoice(text, "", std::move(logprobs)));
}

OrderedJson CompletionFinishChunk(const ResponseIdentity& identity,
                                  std::string_view finish_reason) {
  return ChunkEnvelope(identity, TextChoice("", finish_reason));
}

OrderedJson UsageChunk(const ResponseIdentity& identity, const TokenUsage& usage) {
  OrderedJson chunk = ChunkEnvelope(identity, OrderedJson::array());
  chunk["usage"] = UsageJson(usage);
  return chunk;
}

OrderedJson ChatCompletionBody(const ResponseIdentity& identity, std::string_view text,
                               std::string_view finish_reason, const TokenUsage& usage,
                               OrderedJson logprobs) {
  OrderedJson message;
  message["role"] = "assistant";
  message["content"] = text;
  OrderedJson choice;
  choice["index"] = 0;
  choice["message"] = std::move(message);
  choice["logprobs"] = std::move(logprobs);
  choice["finish_reason"] = finish_reason;
  OrderedJson body;
  body["id"] = identity.id;
  body["object"] = "chat.completion";
  body["created"] = identity.created;
  body["model"] = identity.model;
  body["choices"] = OrderedJson::array({std::move(choice)});
  body["usage"] = UsageJson(usage);
  return body;
}

OrderedJson CompletionBody(const ResponseIdentity& identity, std::string_view text,
                           std::string_view finish_reason, const TokenUsage& usage,
                           OrderedJson logprobs) {
  OrderedJson body;
  body["id"] = identity.id;
  body["object"] = "text_completion";
  body["created"] = identity.created;
  body["model"] = identity.model;
  body["choices"] = TextChoice(text, finish_reason, std::move(logprobs));
  body["usage"] = UsageJson(usage);
  return body;
}

OrderedJson ModelListBody(std::string_view model, int64_t created, int32_t max_model_len) {
  OrderedJson card;
  card["id"] = model;
  card["object"] = "model";
  card["created"] = created;
  card["owned_by"] = "tern";
  card["root"] = model;
  card["parent"] = nullptr;
  if (max_model_len > 0) card["max_model_len"] = max_model_len;
  OrderedJson body;
  body["object"] = "list";
  body["data"] = OrderedJson::array({std::move(card)});
  return body;
}

}  // namespace tern::gateway
