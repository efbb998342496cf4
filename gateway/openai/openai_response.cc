#include "gateway/openai/openai_response.h"

#include <random>

namespace tern::gateway {
namespace {

const char* ChunkObject(Endpoint endpoint) {
  return endpoint == Endpoint::kChatCompletions ? "chat.completion.chunk" : "text_completion";
}

// id, object, created, model and system_fingerprint, in OpenAI's order.
OrderedJson BodyEnvelope(const ResponseIdentity& identity, const char* object) {
  OrderedJson body;
  body["id"] = identity.id;
  body["object"] = object;
  body["created"] = identity.created;
  body["model"] = identity.model;
  if (!identity.system_fingerprint.empty()) {
    body["system_fingerprint"] = identity.system_fingerprint;
  }
  return body;
}

OrderedJson ChunkEnvelope(const ResponseIdentity& identity, OrderedJson choices) {
  OrderedJson chunk = BodyEnvelope(identity, ChunkObject(identity.endpoint));
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

OrderedJson ChatToolCallsChunk(const ResponseIdentity& identity, OrderedJson tool_calls) {
  OrderedJson delta;
  delta["tool_calls"] = std::move(tool_calls);
  return ChunkEnvelope(identity, ChatChoice(std::move(delta), ""));
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

OrderedJson ChatBodyChoice(int index, std::string_view text, std::string_view finish_reason,
                           OrderedJson logprobs, OrderedJson tool_calls) {
  OrderedJson message;
  message["role"] = "assistant";
  if (tool_calls.is_null()) {
    message["content"] = text;
  } else {
    // OpenAI's shape: content null beside the calls (text, if any, kept).
    message["content"] = text.empty() ? OrderedJson(nullptr) : OrderedJson(text);
    message["tool_calls"] = std::move(tool_calls);
  }
  OrderedJson choice;
  choice["index"] = index;
  choice["message"] = std::move(message);
  choice["logprobs"] = std::move(logprobs);
  choice["finish_reason"] = finish_reason;
  return choice;
}

OrderedJson CompletionBodyChoice(int index, std::string_view text, std::string_view finish_reason,
                                 OrderedJson logprobs) {
  OrderedJson choices = TextChoice(text, finish_reason, std::move(logprobs));
  choices[0]["index"] = index;
  return std::move(choices[0]);
}

OrderedJson ChatCompletionBody(const ResponseIdentity& identity, OrderedJson choices,
                               const TokenUsage& usage) {
  OrderedJson body = BodyEnvelope(identity, "chat.completion");
  body["choices"] = std::move(choices);
  body["usage"] = UsageJson(usage);
  return body;
}

OrderedJson CompletionBody(const ResponseIdentity& identity, OrderedJson choices,
                           const TokenUsage& usage) {
  OrderedJson body = BodyEnvelope(identity, "text_completion");
  body["choices"] = std::move(choices);
  body["usage"] = UsageJson(usage);
  return body;
}

OrderedJson ChatCompletionBody(const ResponseIdentity& identity, std::string_view text,
                               std::string_view finish_reason, const TokenUsage& usage,
                               OrderedJson logprobs, OrderedJson tool_calls) {
  return ChatCompletionBody(
      identity,
      OrderedJson::array(
          {ChatBodyChoice(0, text, finish_reason, std::move(logprobs), std::move(tool_calls))}),
      usage);
}

OrderedJson CompletionBody(const ResponseIdentity& identity, std::string_view text,
                           std::string_view finish_reason, const TokenUsage& usage,
                           OrderedJson logprobs) {
  return CompletionBody(
      identity,
      OrderedJson::array({CompletionBodyChoice(0, text, finish_reason, std::move(logprobs))}),
      usage);
}

void SetChoiceIndex(OrderedJson& chunk, int index) {
  for (OrderedJson& choice : chunk["choices"]) choice["index"] = index;
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
