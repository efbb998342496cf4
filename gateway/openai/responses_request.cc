#include "gateway/openai/responses_request.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gateway/http/api_error.h"

namespace tern::gateway {
namespace {

// A message item's content: a string, or text parts joined as the chat
// parser joins them.
absl::StatusOr<Json> MessageContent(const Json& content, const std::string& param) {
  if (content.is_string()) return content;
  if (!content.is_array()) return TypeError(param, "a string or an array of content parts");
  Json parts = Json::array();
  for (size_t i = 0; i < content.size(); ++i) {
    const std::string where = absl::StrCat(param, "[", i, "]");
    const Json& part = content[i];
    if (!part.is_object()) return TypeError(where, "a content part object");
    TERN_ASSIGN_OR_RETURN(const std::optional<std::string> type, GetString(part, "type"));
    if (type != "input_text" && type != "output_text" && type != "text") {
      return Unsupported(absl::StrCat(where, ".type"),
                         absl::StrCat("Content parts of type '", type.value_or(""),
                                      "' are not supported; only input_text and output_text are."));
    }
    const Json* text = Find(part, "text");
    if (text == nullptr || !text->is_string())
      return TypeError(absl::StrCat(where, ".text"), "a string");
    parts.push_back({{"type", "text"}, {"text", *text}});
  }
  return parts;
}

// The input items as chat messages; consecutive function calls become one
// assistant message's tool_calls.
absl::StatusOr<Json> InputMessages(const Json& input) {
  Json messages = Json::array();
  if (input.is_string()) {
    messages.push_back({{"role", "user"}, {"content", input}});
    return messages;
  }
  if (!input.is_array()) return TypeError("input", "a string or an array of input items");
  if (input.empty()) return ValueError("input", "'input' must not be empty.");
  for (size_t i = 0; i < input.size(); ++i) {
    const std::string where = absl::StrCat("input[", i, "]");
    const Json& item = input[i];
    if (!item.is_object()) return TypeError(where, "an input item object");
    TERN_ASSIGN_OR_RETURN(const std::optional<std::string> type, GetString(item, "type"));
    if (!type || *type == "message") {
      TERN_ASSIGN_OR_RETURN(const std::optional<std::string> role, GetString(item, "role"));
      if (role != "user" && role != "system" && role != "developer" && role != "assistant") {
        return ValueError(absl::StrCat(where, ".role"),
                          "A message's role must be user, system, developer or assistant.");
      }
      const Json* content = Find(item, "content");
      if (content == nullptr) {
        return InvalidRequestError(absl::StrCat(where, ".content"), "Messages need a 'content'.");
      }
      TERN_ASSIGN_OR_RETURN(Json chat_content,
                            MessageContent(*content, absl::StrCat(where, ".content")));
      messages.push_back({{"role", *role == "developer" ? "system" : *role},
                          {"content", std::move(chat_content)}});
    } else if (*type == "function_call") {
      TERN_ASSIGN_OR_RETURN(const std::optional<std::string> call_id, GetString(item, "call_id"));
      TERN_ASSIGN_OR_RETURN(const std::optional<std::string> name, GetString(item, "name"));
      TERN_ASSIGN_OR_RETURN(const std::optional<std::string> arguments,
                            GetString(item, "arguments"));
      if (!call_id || !name || !arguments) {
        return InvalidRequestError(where,
                                   "A function_call item needs call_id, name and arguments.");
      }
      Json call = {{"id", *call_id},
                   {"type", "function"},
                   {"function", {{"name", *name}, {"arguments", *arguments}}}};
      if (!messages.empty() && messages.back()["role"] == "assistant" &&
          messages.back().contains("tool_calls")) {
        messages.back()["tool_calls"].push_back(std::move(call));
      } else {
        messages.push_back(
            {{"role", "assistant"}, {"content", nullptr}, {"tool_calls", Json::array({call})}});
      }
    } else if (*type == "function_call_output") {
      TERN_ASSIGN_OR_RETURN(const std::optional<std::string> call_id, GetString(item, "call_id"));
      const Json* output = Find(item, "output");
      if (!call_id || output == nullptr) {
        return InvalidRequestError(where, "A function_call_output item needs call_id and output.");
      }
      TERN_ASSIGN_OR_RETURN(Json content, MessageContent(*output, absl::StrCat(where, ".output")));
      messages.push_back(
          {{"role", "tool"}, {"tool_call_id", *call_id}, {"content", std::move(content)}});
    } else {
      return Unsupported(absl::StrCat(where, ".type"),
                         absl::StrCat("Input items of type '", *type,
                                      "' are not supported; use message, function_call and "
                                      "function_call_output."));
    }
  }
  return messages;
}

absl::StatusOr<Json> ChatTools(const Json& tools) {
  if (!tools.is_array()) return TypeError("tools", "an array");
  Json chat = Json::array();
  for (size_t i = 0; i < tools.size(); ++i) {
    const std::string where = absl::StrCat("tools[", i, "]");
    const Json& tool = tools[i];
    if (!tool.is_object()) return TypeError(where, "an object");
    TERN_ASSIGN_OR_RETURN(const std::optional<std::string> type, GetString(tool, "type"));
    if (type != "function") {
      return Unsupported(absl::StrCat(where, ".type"),
                         absl::StrCat("Tools of type '", type.value_or(""),
                                      "' are not supported; only function tools are."));
    }
    TERN_ASSIGN_OR_RETURN(const std::optional<std::string> name, GetString(tool, "name"));
    if (!name)
      return InvalidRequestError(absl::StrCat(where, ".name"), "Function tools need a 'name'.");
    Json function = {{"name", *name}};
    for (const char* key : {"description", "parameters"}) {
      if (const Json* value = Find(tool, key)) function[key] = *value;
    }
    chat.push_back({{"type", "function"}, {"function", std::move(function)}});
  }
  return chat;
}

absl::StatusOr<Json> ChatToolChoice(const Json& choice) {
  if (choice.is_string()) return choice;
  if (!choice.is_object()) return TypeError("tool_choice", "a string or an object");
  TERN_ASSIGN_OR_RETURN(const std::optional<std::string> type, GetString(choice, "type"));
  TERN_ASSIGN_OR_RETURN(const std::optional<std::string> name, GetString(choice, "name"));
  if (type != "function" || !name) {
    return InvalidRequestError("tool_choice",
                               "A named 'tool_choice' is {\"type\": \"function\", \"name\": ...}.");
  }
  return Json{{"type", "function"}, {"function", {{"name", *name}}}};
}

absl::StatusOr<Json> ChatResponseFormat(const Json& text) {
  if (!text.is_object()) return TypeError("text", "an object");
  const Json* format = Find(text, "format");
  if (format == nullptr) return Json();
  if (!format->is_object()) return TypeError("text.format", "an object");
  TERN_ASSIGN_OR_RETURN(const std::optional<std::string> type, GetString(*format, "type"));
  if (type == "json_schema") {
    Json schema = {{"name", format->value("name", "response")}};
    for (const char* key : {"schema", "strict", "description"}) {
      if (const Json* value = Find(*format, key)) schema[key] = *value;
    }
    return Json{{"type", "json_schema"}, {"json_schema", std::move(schema)}};
  }
  return *format;  // text and json_object read the same as response_format
}

}  // namespace

absl::StatusOr<ResponsesRequest> ParseResponsesRequest(std::string_view text) {
  TERN_ASSIGN_OR_RETURN(const Json body, ParseJsonBody(text));
  if (!body.is_object()) return InvalidRequestError("", "The request body must be a JSON object.");
  for (const char* stateful : {"previous_response_id", "conversation"}) {
    if (Find(body, stateful) != nullptr) {
      return Unsupported(stateful, absl::StrCat("'", stateful,
                                                "' is not supported: tern keeps no "
                                                "conversation state; send the whole input."));
    }
  }
  TERN_ASSIGN_OR_RETURN(const std::optional<bool> store, GetBool(body, "store"));
  if (store.value_or(false)) {
    return Unsupported("store", "'store': true is not supported: tern keeps no responses.");
  }
  TERN_ASSIGN_OR_RETURN(const std::optional<bool> background, GetBool(body, "background"));
  if (background.value_or(false)) {
    return Unsupported("background", "'background': true is not supported.");
  }
  const Json* input = Find(body, "input");
  if (input == nullptr) return InvalidRequestError("input", "'input' is a required property.");

  ResponsesRequest request;
  Json chat = Json::object();
  if (const Json* model = Find(body, "model")) chat["model"] = *model;
  Json messages = Json::array();
  if (const Json* instructions = Find(body, "instructions")) {
    if (!instructions->is_string()) return TypeError("instructions", "a string");
    messages.push_back({{"role", "system"}, {"content", *instructions}});
    request.instructions = *instructions;
  }
  TERN_ASSIGN_OR_RETURN(Json input_messages, InputMessages(*input));
  for (Json& message : input_messages) messages.push_back(std::move(message));
  chat["messages"] = std::move(messages);
  if (const Json* max_output = Find(body, "max_output_tokens")) {
    chat["max_tokens"] = *max_output;
    request.max_output_tokens = *max_output;
  }
  for (const char* key : {"temperature", "top_p", "user", "seed", "parallel_tool_calls", "stream",
                          "top_k", "min_p", "stop", "priority"}) {
    if (const Json* value = Find(body, key)) chat[key] = *value;
  }
  request.temperature = body.value("temperature", Json());
  request.top_p = body.value("top_p", Json());
  request.user = body.value("user", Json());
  request.metadata = body.value("metadata", Json::object());
  request.tools = Json::array();
  if (const Json* tools = Find(body, "tools")) {
    TERN_ASSIGN_OR_RETURN(Json chat_tools, ChatTools(*tools));
    if (!chat_tools.empty()) chat["tools"] = std::move(chat_tools);
    request.tools = *tools;
  }
  request.tool_choice = "auto";
  if (const Json* choice = Find(body, "tool_choice")) {
    TERN_ASSIGN_OR_RETURN(chat["tool_choice"], ChatToolChoice(*choice));
    request.tool_choice = *choice;
  }
  request.text_format = {{"type", "text"}};
  if (const Json* text = Find(body, "text")) {
    TERN_ASSIGN_OR_RETURN(Json format, ChatResponseFormat(*text));
    if (!format.is_null()) {
      chat["response_format"] = std::move(format);
      request.text_format = (*text)["format"];
    }
  }
  TERN_ASSIGN_OR_RETURN(request.chat, ParseOpenAiRequest(Endpoint::kChatCompletions, chat.dump()));
  return request;
}

}  // namespace tern::gateway
