#include "gateway/inference_api/request_translation.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gateway/http/api_error.h"
#include "gateway/openai/json_fields.h"

namespace tern::gateway {
namespace {

// JSON text a client put in a string field (a schema, a tool's parameters),
// held to the body's nesting limit.
absl::StatusOr<Json> ParseEmbeddedJson(const std::string& text, const std::string& param) {
  absl::StatusOr<Json> value = ParseJsonBody(text);
  if (!value.ok()) return ValueError(param, absl::StrCat("'", param, "' is not valid JSON."));
  return value;
}

// The sampling fields, as REST names them. Only fields the client set are
// written, so absent ones take the same defaults as an absent REST field.
absl::Status AddSampling(const tern::v1::Sampling& s, Endpoint endpoint, Json& body) {
  if (s.has_temperature()) body["temperature"] = s.temperature();
  if (s.has_top_p()) body["top_p"] = s.top_p();
  if (s.has_top_k()) body["top_k"] = s.top_k();
  if (s.has_min_p()) body["min_p"] = s.min_p();
  if (s.presence_penalty() != 0) body["presence_penalty"] = s.presence_penalty();
  if (s.frequency_penalty() != 0) body["frequency_penalty"] = s.frequency_penalty();
  if (s.has_repetition_penalty()) body["repetition_penalty"] = s.repetition_penalty();
  if (s.has_seed()) body["seed"] = s.seed();
  if (s.has_max_tokens()) body["max_tokens"] = s.max_tokens();
  if (s.min_tokens() != 0) body["min_tokens"] = s.min_tokens();
  if (!s.stop().empty())
    body["stop"] = Json(std::vector<std::string>(s.stop().begin(), s.stop().end()));
  if (!s.stop_token_ids().empty()) {
    body["stop_token_ids"] =
        Json(std::vector<int32_t>(s.stop_token_ids().begin(), s.stop_token_ids().end()));
  }
  if (s.ignore_eos()) body["ignore_eos"] = true;
  if (endpoint == Endpoint::kChatCompletions) {
    if (s.logprobs()) body["logprobs"] = true;
    if (s.top_logprobs() != 0) body["top_logprobs"] = s.top_logprobs();
  } else if (s.logprobs()) {
    // The legacy integer form: the number of alternatives per token.
    body["logprobs"] = s.top_logprobs();
  } else if (s.top_logprobs() != 0) {
    return ValueError("top_logprobs", "'logprobs' must be true when 'top_logprobs' is used.");
  }
  if (!s.logit_bias().empty()) {
    // Token order, so that the body does not depend on the map's.
    std::vector<std::pair<int32_t, double>> bias(s.logit_bias().begin(), s.logit_bias().end());
    std::sort(bias.begin(), bias.end());
    Json object = Json::object();
    for (const auto& [token, value] : bias) object[std::to_string(token)] = value;
    body["logit_bias"] = std::move(object);
  }
  return absl::OkStatus();
}

absl::Status AddOutputFormat(const tern::v1::OutputFormat& format, Json& body) {
  switch (format.kind_case()) {
    case tern::v1::OutputFormat::kJsonObject:
      if (format.json_object()) body["response_format"] = {{"type", "json_object"}};
      break;
    case tern::v1::OutputFormat::kJsonSchema: {
      const tern::v1::JsonSchemaFormat& schema = format.json_schema();
      Json json_schema = Json::object();
      if (!schema.name().empty()) json_schema["name"] = schema.name();
      TERN_ASSIGN_OR_RETURN(
          json_schema["schema"],
          ParseEmbeddedJson(schema.schema(), "response_format.json_schema.schema"));
      if (schema.strict()) json_schema["strict"] = true;
      body["response_format"] = {{"type", "json_schema"}, {"json_schema", std::move(json_schema)}};
      break;
    }
    case tern::v1::OutputFormat::kRegex:
      body["structured_outputs"] = {{"regex", format.regex()}};
      break;
    case tern::v1::OutputFormat::kChoice:
      body["structured_outputs"] = {
          {"choice", std::vector<std::string>(format.choice().choices().begin(),
                                              format.choice().choices().end())}};
      break;
    case tern::v1::OutputFormat::KIND_NOT_SET:
      break;
  }
  return absl::OkStatus();
}

Json ChatMessageJson(const tern::v1::ChatMessage& message) {
  Json json = {{"role", message.role()}};
  if (message.has_content()) json["content"] = message.content();
  if (!message.name().empty()) json["name"] = message.name();
  if (!message.tool_call_id().empty()) json["tool_call_id"] = message.tool_call_id();
  if (!message.tool_calls().empty()) {
    Json calls = Json::array();
    for (const tern::v1::ToolCall& call : message.tool_calls()) {
      calls.push_back({{"id", call.id()},
                       {"type", "function"},
                       {"function", {{"name", call.name()}, {"arguments", call.arguments()}}}});
    }
    json["tool_calls"] = std::move(calls);
  }
  return json;
}

absl::StatusOr<Json> ToolsJson(const google::protobuf::RepeatedPtrField<tern::v1::Tool>& tools) {
  Json json = Json::array();
  for (int i = 0; i < tools.size(); ++i) {
    const tern::v1::Tool& tool = tools[i];
    Json function = {{"name", tool.name()}};
    if (!tool.description().empty()) function["description"] = tool.description();
    if (!tool.parameters().empty()) {
      TERN_ASSIGN_OR_RETURN(
          function["parameters"],
          ParseEmbeddedJson(tool.parameters(), absl::StrCat("tools[", i, "].function.parameters")));
    }
    json.push_back({{"type", "function"}, {"function", std::move(function)}});
  }
  return json;
}

void AddToolChoice(const tern::v1::ToolChoice& choice, Json& body) {
  switch (choice.choice_case()) {
    case tern::v1::ToolChoice::kMode:
      switch (choice.mode()) {
        case tern::v1::ToolChoice::MODE_AUTO:
          body["tool_choice"] = "auto";
          break;
        case tern::v1::ToolChoice::MODE_NONE:
          body["tool_choice"] = "none";
          break;
        case tern::v1::ToolChoice::MODE_REQUIRED:
          body["tool_choice"] = "required";
          break;
        default:
          break;
      }
      break;
    case tern::v1::ToolChoice::kFunctionName:
      body["tool_choice"] = {{"type", "function"},
                             {"function", {{"name", choice.function_name()}}}};
      break;
    case tern::v1::ToolChoice::CHOICE_NOT_SET:
      break;
  }
}

// The fields every streamed body has.
void AddStreaming(Json& body) {
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
}

absl::StatusOr<OpenAiRequest> Parse(Endpoint endpoint, absl::StatusOr<Json> body) {
  if (!body.ok()) return body.status();
  return ParseOpenAiRequest(endpoint, DumpJson(*body));
}

}  // namespace

absl::StatusOr<Json> RestBody(const tern::v1::CompleteRequest& request) {
  Json body = {{"model", request.model()}};
  if (!request.prompt_token_ids().empty()) {
    body["prompt"] = Json(
        std::vector<int32_t>(request.prompt_token_ids().begin(), request.prompt_token_ids().end()));
  } else {
    body["prompt"] = request.prompt();
  }
  if (request.has_n()) body["n"] = request.n();
  TERN_RETURN_IF_ERROR(AddSampling(request.sampling(), Endpoint::kCompletions, body));
  TERN_RETURN_IF_ERROR(AddOutputFormat(request.output_format(), body));
  AddStreaming(body);
  return body;
}

absl::StatusOr<Json> RestBody(const tern::v1::ChatRequest& request) {
  Json body = {{"model", request.model()}};
  Json messages = Json::array();
  for (const tern::v1::ChatMessage& message : request.messages()) {
    messages.push_back(ChatMessageJson(message));
  }
  body["messages"] = std::move(messages);
  if (request.has_n()) body["n"] = request.n();
  TERN_RETURN_IF_ERROR(AddSampling(request.sampling(), Endpoint::kChatCompletions, body));
  TERN_RETURN_IF_ERROR(AddOutputFormat(request.output_format(), body));
  if (!request.tools().empty()) {
    TERN_ASSIGN_OR_RETURN(body["tools"], ToolsJson(request.tools()));
  }
  AddToolChoice(request.tool_choice(), body);
  if (request.has_parallel_tool_calls())
    body["parallel_tool_calls"] = request.parallel_tool_calls();
  AddStreaming(body);
  return body;
}

absl::StatusOr<OpenAiRequest> ParseRequest(const tern::v1::CompleteRequest& request) {
  return Parse(Endpoint::kCompletions, RestBody(request));
}

absl::StatusOr<OpenAiRequest> ParseRequest(const tern::v1::ChatRequest& request) {
  return Parse(Endpoint::kChatCompletions, RestBody(request));
}

}  // namespace tern::gateway
