#include "gateway/openai/responses_output.h"

#include <random>
#include <utility>

#include "gateway/http/api_error.h"  // DumpJson

namespace tern::gateway {
namespace {

std::string NewId(const char* prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id = prefix;
  for (int word = 0; word < 2; ++word) {
    uint64_t bits = rng();
    for (int i = 0; i < 16; ++i, bits >>= 4) id += kHex[bits & 15];
  }
  return id;
}

Json OutputText(const std::string& text) {
  return {{"type", "output_text"},
          {"text", text},
          {"annotations", Json::array()},
          {"logprobs", Json::array()}};
}

}  // namespace

ResponsesOutput::ResponsesOutput(const ResponsesRequest& request, std::string model,
                                 int64_t created_at)
    : id_(NewId("resp_")) {
  response_ = {{"id", id_},
               {"object", "response"},
               {"created_at", created_at},
               {"status", "in_progress"},
               {"error", nullptr},
               {"incomplete_details", nullptr},
               {"instructions", request.instructions},
               {"max_output_tokens", request.max_output_tokens},
               {"model", std::move(model)},
               {"output", Json::array()},
               {"parallel_tool_calls", request.chat.output.parallel_tool_calls},
               {"previous_response_id", nullptr},
               {"reasoning", {{"effort", nullptr}, {"summary", nullptr}}},
               {"store", false},
               {"temperature", request.temperature},
               {"text", {{"format", request.text_format}}},
               {"tool_choice", request.tool_choice},
               {"tools", request.tools},
               {"top_p", request.top_p},
               {"truncation", "disabled"},
               {"usage", nullptr},
               {"user", request.user},
               {"metadata", request.metadata}};
}

std::string ResponsesOutput::Event(const std::string& type, Json data) {
  Json event = {{"type", type}, {"sequence_number", sequence_++}};
  for (auto& [key, value] : data.items()) event[key] = std::move(value);
  return "event: " + type + "\ndata: " + DumpJson(event) + "\n\n";
}

std::vector<std::string> ResponsesOutput::Start() {
  std::vector<std::string> events;
  events.push_back(Event("response.created", {{"response", response_}}));
  events.push_back(Event("response.in_progress", {{"response", response_}}));
  return events;
}

std::vector<std::string> ResponsesOutput::Text(std::string_view delta) {
  std::vector<std::string> events;
  if (delta.empty()) return events;
  Json& output = response_["output"];
  if (message_index_ < 0) {
    message_index_ = static_cast<int>(output.size());
    Json item = {{"id", NewId("msg_")},
                 {"type", "message"},
                 {"status", "in_progress"},
                 {"role", "assistant"},
                 {"content", Json::array()}};
    output.push_back(item);
    events.push_back(Event("response.output_item.added",
                           {{"output_index", message_index_}, {"item", std::move(item)}}));
    output[message_index_]["content"].push_back(OutputText(""));
    events.push_back(
        Event("response.content_part.added", {{"item_id", output[message_index_]["id"]},
                                              {"output_index", message_index_},
                                              {"content_index", 0},
                                              {"part", OutputText("")}}));
  }
  message_text_ += delta;
  output[message_index_]["content"][0]["text"] = message_text_;
  events.push_back(Event("response.output_text.delta", {{"item_id", output[message_index_]["id"]},
                                                        {"output_index", message_index_},
                                                        {"content_index", 0},
                                                        {"delta", std::string(delta)},
                                                        {"logprobs", Json::array()}}));
  return events;
}

void ResponsesOutput::CloseMessage(std::vector<std::string>& events) {
  if (message_index_ < 0) return;
  Json& item = response_["output"][message_index_];
  const Json item_id = item["id"];
  events.push_back(Event("response.output_text.done", {{"item_id", item_id},
                                                       {"output_index", message_index_},
                                                       {"content_index", 0},
                                                       {"text", message_text_},
                                                       {"logprobs", Json::array()}}));
  events.push_back(Event("response.content_part.done", {{"item_id", item_id},
                                                        {"output_index", message_index_},
                                                        {"content_index", 0},
                                                        {"part", OutputText(message_text_)}}));
  item["status"] = "completed";
  events.push_back(
      Event("response.output_item.done", {{"output_index", message_index_}, {"item", item}}));
  message_index_ = -1;
}

std::vector<std::string> ResponsesOutput::ToolCalls(const Json& entries) {
  std::vector<std::string> events;
  Json& output = response_["output"];
  for (const Json& entry : entries) {
    const int64_t index = entry.value("index", int64_t{0});
    auto it = call_items_.find(index);
    if (it == call_items_.end()) {
      CloseMessage(events);
      const int output_index = static_cast<int>(output.size());
      it = call_items_.emplace(index, output_index).first;
      Json item = {{"id", NewId("fc_")},
                   {"type", "function_call"},
                   {"status", "in_progress"},
                   {"arguments", ""},
                   {"call_id", entry.value("id", NewId("call_"))},
                   {"name", entry["function"].value("name", "")}};
      output.push_back(item);
      events.push_back(
          Event("response.output_item.added", {{"output_index", output_index}, {"item", item}}));
    }
    const std::string delta = entry["function"].value("arguments", "");
    if (delta.empty()) continue;
    Json& item = output[it->second];
    item["arguments"] = item["arguments"].get<std::string>() + delta;
    events.push_back(
        Event("response.function_call_arguments.delta",
              {{"item_id", item["id"]}, {"output_index", it->second}, {"delta", delta}}));
  }
  return events;
}

std::vector<std::string> ResponsesOutput::Finish(std::string_view finish_reason,
                                                 const TokenUsage& usage) {
  std::vector<std::string> events;
  CloseMessage(events);
  Json& output = response_["output"];
  for (const auto& [index, output_index] : call_items_) {
    Json& item = output[output_index];
    events.push_back(
        Event("response.function_call_arguments.done", {{"item_id", item["id"]},
                                                        {"output_index", output_index},
                                                        {"name", item["name"]},
                                                        {"arguments", item["arguments"]}}));
    item["status"] = "completed";
    events.push_back(
        Event("response.output_item.done", {{"output_index", output_index}, {"item", item}}));
  }
  response_["usage"] = {{"input_tokens", usage.prompt_tokens},
                        {"input_tokens_details", {{"cached_tokens", usage.cached_tokens}}},
                        {"output_tokens", usage.completion_tokens},
                        {"output_tokens_details", {{"reasoning_tokens", 0}}},
                        {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
  if (finish_reason == "length") {
    response_["status"] = "incomplete";
    response_["incomplete_details"] = {{"reason", "max_output_tokens"}};
    events.push_back(Event("response.incomplete", {{"response", response_}}));
  } else {
    response_["status"] = "completed";
    events.push_back(Event("response.completed", {{"response", response_}}));
  }
  return events;
}

}  // namespace tern::gateway
