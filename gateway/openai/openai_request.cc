#include "gateway/openai/openai_request.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "gateway/http/api_error.h"
#include "gateway/openai/json_fields.h"

namespace tern::gateway {
namespace {

absl::Status ParseLogprobs(const Json& body, Endpoint endpoint, SamplingOptions* s) {
  if (endpoint == Endpoint::kCompletions) {
    // The legacy form: an integer, the number of alternatives per token.
    TERN_ASSIGN_OR_RETURN(const std::optional<int32_t> logprobs,
                          GetInt32(body, "logprobs", 0, kMaxCompletionLogprobs));
    s->logprobs = logprobs.has_value();
    s->top_logprobs = logprobs.value_or(0);
    return absl::OkStatus();
  }
  TERN_ASSIGN_OR_RETURN(const std::optional<bool> logprobs, GetBool(body, "logprobs"));
  TERN_ASSIGN_OR_RETURN(const std::optional<int32_t> top_logprobs,
                        GetInt32(body, "top_logprobs", 0, kMaxChatTopLogprobs));
  s->logprobs = logprobs.value_or(false);
  if (top_logprobs.value_or(0) > 0 && !s->logprobs) {
    return ValueError("top_logprobs", "'logprobs' must be true when 'top_logprobs' is used.");
  }
  s->top_logprobs = s->logprobs ? top_logprobs.value_or(0) : 0;
  return absl::OkStatus();
}

absl::Status ParseSampling(const Json& body, Endpoint endpoint, SamplingOptions* s) {
  TERN_ASSIGN_OR_RETURN(s->temperature, GetNumber(body, "temperature"));
  if (s->temperature)
    TERN_RETURN_IF_ERROR(CheckRange("temperature", *s->temperature, 0, true, 2, true));
  TERN_ASSIGN_OR_RETURN(s->top_p, GetNumber(body, "top_p"));
  if (s->top_p) TERN_RETURN_IF_ERROR(CheckRange("top_p", *s->top_p, 0, false, 1, true));
  TERN_ASSIGN_OR_RETURN(s->top_k, GetInt32(body, "top_k", -1, kInt32Max));
  TERN_ASSIGN_OR_RETURN(s->min_p, GetNumber(body, "min_p"));
  if (s->min_p) TERN_RETURN_IF_ERROR(CheckRange("min_p", *s->min_p, 0, true, 1, true));
  TERN_ASSIGN_OR_RETURN(s->repetition_penalty, GetNumber(body, "repetition_penalty"));
  if (s->repetition_penalty && *s->repetition_penalty <= 0) {
    return ValueError("repetition_penalty",
                      absl::StrCat("'repetition_penalty' must be greater than 0, got ",
                                   *s->repetition_penalty, "."));
  }
  TERN_ASSIGN_OR_RETURN(const std::optional<double> presence, GetNumber(body, "presence_penalty"));
  if (presence) TERN_RETURN_IF_ERROR(CheckRange("presence_penalty", *presence, -2, true, 2, true));
  s->presence_penalty = presence.value_or(0);
  TERN_ASSIGN_OR_RETURN(const std::optional<double> frequency,
                        GetNumber(body, "frequency_penalty"));
  if (frequency)
    TERN_RETURN_IF_ERROR(CheckRange("frequency_penalty", *frequency, -2, true, 2, true));
  s->frequency_penalty = frequency.value_or(0);

  if (const Json* seed = Find(body, "seed")) {
    if (!seed->is_number_integer()) return TypeError("seed", "an integer");
    s->seed = seed->is_number_unsigned() ? seed->get<uint64_t>()
                                         : static_cast<uint64_t>(seed->get<int64_t>());
  }

  TERN_ASSIGN_OR_RETURN(s->max_tokens, GetInt32(body, "max_tokens", 1, kInt32Max));
  if (endpoint == Endpoint::kChatCompletions) {
    TERN_ASSIGN_OR_RETURN(const std::optional<int32_t> max_completion,
                          GetInt32(body, "max_completion_tokens", 1, kInt32Max));
    if (max_completion) s->max_tokens = max_completion;
  }
  TERN_ASSIGN_OR_RETURN(const std::optional<int32_t> min_tokens,
                        GetInt32(body, "min_tokens", 0, kInt32Max));
  s->min_tokens = min_tokens.value_or(0);
  if (s->max_tokens && s->min_tokens > *s->max_tokens) {
    return ValueError("min_tokens", absl::StrCat("'min_tokens' (", s->min_tokens,
                                                 ") must be less than or equal to max_tokens (",
                                                 *s->max_tokens, ")."));
  }
  TERN_ASSIGN_OR_RETURN(const std::optional<bool> ignore_eos, GetBool(body, "ignore_eos"));
  s->ignore_eos = ignore_eos.value_or(false);

  if (const Json* ids = Find(body, "stop_token_ids")) {
    if (!ids->is_array()) return TypeError("stop_token_ids", "an array of token ids");
    TERN_ASSIGN_OR_RETURN(s->stop_token_ids, TokenIdArray(*ids, "stop_token_ids"));
  }
  if (const Json* bias = Find(body, "logit_bias")) {
    if (!bias->is_object()) return TypeError("logit_bias", "an object mapping token ids to biases");
    for (const auto& [key, value] : bias->items()) {
      int64_t id = -1;
      const bool numeric = !key.empty() && key.size() <= 10 &&
                           key.find_first_not_of("0123456789") == std::string::npos;
      if (numeric) id = std::stoll(key);
      if (!numeric || id > kInt32Max) {
        return ValueError("logit_bias", absl::StrCat("Invalid key in 'logit_bias': '", key,
                                                     "' is not a token id."));
      }
      if (!value.is_number()) return TypeError("logit_bias", "numeric bias values");
      const double v = value.get<double>();
      if (!std::isfinite(v) || v < -100 || v > 100) {
        return ValueError("logit_bias", absl::StrCat("Invalid value for 'logit_bias' of token ",
                                                     key, ": biases must be in [-100, 100]."));
      }
      s->logit_bias.emplace_back(static_cast<int32_t>(id), static_cast<float>(v));
    }
  }
  return ParseLogprobs(body, endpoint, s);
}

absl::Status ParseStop(const Json& body, std::vector<std::string>* stop) {
  const Json* value = Find(body, "stop");
  if (value == nullptr) return absl::OkStatus();
  if (value->is_string()) {
    stop->push_back(value->get<std::string>());
  } else if (value->is_array()) {
    if (value->size() > static_cast<size_t>(kMaxStopSequences)) {
      return ValueError("stop",
                        absl::StrCat("'stop' may hold at most ", kMaxStopSequences, " sequences."));
    }
    for (const Json& s : *value) {
      if (!s.is_string()) return TypeError("stop", "a string or an array of strings");
      stop->push_back(s.get<std::string>());
    }
  } else {
    return TypeError("stop", "a string or an array of strings");
  }
  for (const std::string& s : *stop) {
    if (s.empty()) return ValueError("stop", "Stop sequences must not be empty.");
    if (s.size() > kMaxStopBytes) {
      return ValueError(
          "stop", absl::StrCat("Stop sequences may be at most ", kMaxStopBytes, " bytes long."));
    }
  }
  return absl::OkStatus();
}

// Known OpenAI / vLLM fields whose effect the gateway cannot produce yet.
absl::Status RejectUnsupported(const Json& body, Endpoint endpoint) {
  TERN_ASSIGN_OR_RETURN(const std::optional<bool> beam, GetBool(body, "use_beam_search"));
  if (beam.value_or(false)) return Unsupported("use_beam_search", "Beam search is not supported.");
  if (endpoint == Endpoint::kCompletions) {
    TERN_ASSIGN_OR_RETURN(const std::optional<int32_t> n, GetInt32(body, "n", 1, kMaxChoices));
    TERN_ASSIGN_OR_RETURN(const std::optional<int32_t> best_of,
                          GetInt32(body, "best_of", 1, kInt32Max));
    if (best_of && *best_of > n.value_or(1)) {
      return Unsupported("best_of", "'best_of' greater than 'n' is not supported.");
    }
    TERN_ASSIGN_OR_RETURN(const std::optional<std::string> suffix, GetString(body, "suffix"));
    if (suffix && !suffix->empty()) return Unsupported("suffix", "'suffix' is not supported.");
    return absl::OkStatus();
  }
  TERN_ASSIGN_OR_RETURN(const std::optional<bool> continue_final,
                        GetBool(body, "continue_final_message"));
  if (continue_final.value_or(false)) {
    return Unsupported("continue_final_message", "'continue_final_message' is not supported.");
  }
  if (Find(body, "chat_template") != nullptr) {
    return Unsupported("chat_template", "A per-request 'chat_template' is not supported.");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> FlattenContent(const Json& content, const std::string& param) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) return TypeError(param, "a string or an array of content parts");
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const Json& part = content[i];
    const std::string where = absl::StrCat(param, "[", i, "]");
    if (!part.is_object()) return TypeError(where, "a content part object");
    TERN_ASSIGN_OR_RETURN(const std::optional<std::string> type, GetString(part, "type"));
    if (!type)
      return InvalidRequestError(absl::StrCat(where, ".type"), "Content parts need a 'type'.");
    if (*type != "text") {
      return Unsupported(
          absl::StrCat(where, ".type"),
          absl::StrCat("Content parts of type '", *type, "' are not supported; only 'text' is."));
    }
    const Json* part_text = Find(part, "text");
    if (part_text == nullptr || !part_text->is_string())
      return TypeError(absl::StrCat(where, ".text"), "a string");
    // vLLM joins text parts with newlines.
    if (i > 0) text += '\n';
    text += part_text->get<std::string>();
  }
  return text;
}

// An assistant message's tool calls carry their arguments as JSON text; chat
// templates (Llama's `tool_call.arguments | tojson`) want the object, so it
// is parsed in place, as vLLM does.
absl::Status ParseToolCallArguments(Json& message, const std::string& where) {
  if (!message.contains("tool_calls") || message["tool_calls"].is_null()) return absl::OkStatus();
  Json& calls = message["tool_calls"];
  if (!calls.is_array()) return TypeError(absl::StrCat(where, ".tool_calls"), "an array");
  for (size_t i = 0; i < calls.size(); ++i) {
    const std::string param = absl::StrCat(where, ".tool_calls[", i, "]");
    if (!calls[i].is_object()) return TypeError(param, "an object");
    const Json* function = Find(calls[i], "function");
    if (function == nullptr || !function->is_object()) {
      return TypeError(absl::StrCat(param, ".function"), "an object");
    }
    Json& arguments = calls[i]["function"]["arguments"];
    if (!arguments.is_string()) continue;
    const std::string text = arguments.get<std::string>();
    Json parsed = Json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded() || !parsed.is_object()) {
      return ValueError(absl::StrCat(param, ".function.arguments"),
                        "Tool call arguments must be a JSON object encoded as a string.");
    }
    arguments = std::move(parsed);
  }
  return absl::OkStatus();
}

absl::Status ParseMessages(const Json& body, OpenAiRequest* request) {
  const Json* messages = Find(body, "messages");
  if (messages == nullptr)
    return InvalidRequestError("messages", "'messages' is a required property.");
  if (!messages->is_array()) return TypeError("messages", "an array");
  if (messages->empty())
    return ValueError("messages", "'messages' must contain at least one message.");
  request->messages = Json::array();
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& message = (*messages)[i];
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!message.is_object()) return TypeError(where, "an object");
    TERN_ASSIGN_OR_RETURN(const std::optional<std::string> role, GetString(message, "role"));
    if (!role || role->empty())
      return InvalidRequestError(absl::StrCat(where, ".role"), "Each message needs a 'role'.");
    Json normalized = message;
    const Json* content = Find(message, "content");
    if (content == nullptr) {
      if (*role != "assistant" || Find(message, "tool_calls") == nullptr) {
        return InvalidRequestError(absl::StrCat(where, ".content"),
                                   "Each message needs a 'content'.");
      }
      normalized["content"] = nullptr;
    } else {
      TERN_ASSIGN_OR_RETURN(normalized["content"],
                            FlattenContent(*content, absl::StrCat(where, ".content")));
    }
    TERN_RETURN_IF_ERROR(ParseToolCallArguments(normalized, where));
    request->messages.push_back(std::move(normalized));
  }
  if (const Json* tools = Find(body, "tools")) {
    if (!tools->is_array()) return TypeError("tools", "an array");
    for (size_t i = 0; i < tools->size(); ++i) {
      const Json& tool = (*tools)[i];
      const std::string where = absl::StrCat("tools[", i, "]");
      if (!tool.is_object()) return TypeError(where, "an object");
      const Json* function = Find(tool, "function");
      if (Find(tool, "type") == nullptr || tool["type"] != "function" || function == nullptr ||
          !function->is_object() || !function->contains("name") ||
          !(*function)["name"].is_string()) {
        return InvalidRequestError(
            where, "Tools must be {\"type\": \"function\", \"function\": {\"name\": ...}}.");
      }
    }
    if (!tools->empty()) request->tools = *tools;
  }
  TERN_ASSIGN_OR_RETURN(const std::optional<bool> add_generation_prompt,
                        GetBool(body, "add_generation_prompt"));
  request->add_generation_prompt = add_generation_prompt.value_or(true);
  if (const Json* kwargs = Find(body, "chat_template_kwargs")) {
    if (!kwargs->is_object()) return TypeError("chat_template_kwargs", "an object");
    request->chat_template_kwargs = *kwargs;
  }
  return absl::OkStatus();
}

absl::Status ParsePrompt(const Json& body, OpenAiRequest* request) {
  const Json* prompt = Find(body, "prompt");
  if (prompt == nullptr) return InvalidRequestError("prompt", "'prompt' is a required property.");
  if (prompt->is_string()) {
    request->prompts.push_back(PromptInput{prompt->get<std::string>(), {}, false});
  } else if (!prompt->is_array()) {
    return TypeError("prompt", "a string, an array of strings or an array of token ids");
  } else if (prompt->empty()) {
    return ValueError("prompt", "'prompt' must not be empty.");
  } else if ((*prompt)[0].is_string() || (*prompt)[0].is_array()) {
    // A batch: strings, or arrays of token ids.
    if (prompt->size() > static_cast<size_t>(kMaxChoices)) {
      return ValueError("prompt", absl::StrCat("At most ", kMaxChoices, " prompts per request."));
    }
    for (size_t i = 0; i < prompt->size(); ++i) {
      const Json& item = (*prompt)[i];
      const std::string where = absl::StrCat("prompt[", i, "]");
      if (item.is_string()) {
        request->prompts.push_back(PromptInput{item.get<std::string>(), {}, false});
        continue;
      }
      if (!item.is_array()) return TypeError(where, "a string or an array of token ids");
      if (item.empty()) return ValueError(where, absl::StrCat("'", where, "' must not be empty."));
      PromptInput input;
      input.is_tokens = true;
      TERN_ASSIGN_OR_RETURN(input.token_ids, TokenIdArray(item, where));
      request->prompts.push_back(std::move(input));
    }
  } else {
    PromptInput input;
    input.is_tokens = true;
    TERN_ASSIGN_OR_RETURN(input.token_ids, TokenIdArray(*prompt, "prompt"));
    request->prompts.push_back(std::move(input));
  }
  const PromptInput& first = request->prompts.front();
  request->prompt = first.text;
  request->prompt_token_ids = first.token_ids;
  request->prompt_is_tokens = first.is_tokens;
  return absl::OkStatus();
}

// n, and the completions' echo.
absl::Status ParseChoices(const Json& body, Endpoint endpoint, OpenAiRequest* request) {
  TERN_ASSIGN_OR_RETURN(const std::optional<int32_t> n, GetInt32(body, "n", 1, kMaxChoices));
  request->n = n.value_or(1);
  const size_t prompts = std::max<size_t>(1, request->prompts.size());
  if (prompts * static_cast<size_t>(request->n) > static_cast<size_t>(kMaxChoices)) {
    return ValueError(
        "n", absl::StrCat("'n' times the number of prompts may be at most ", kMaxChoices, "."));
  }
  if (endpoint != Endpoint::kCompletions) return absl::OkStatus();
  TERN_ASSIGN_OR_RETURN(const std::optional<bool> echo, GetBool(body, "echo"));
  request->echo = echo.value_or(false);
  if (request->echo && request->sampling.logprobs) {
    return Unsupported("echo",
                       "'echo' together with 'logprobs' is not supported: tern does not "
                       "compute the prompt's logprobs.");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<nlohmann::ordered_json> ParseJsonBody(std::string_view body) {
  // nlohmann-json puts no bound on nesting, so measure it before parsing.
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (const char c : body) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxJsonDepth) {
        return InvalidRequestError(
            "", absl::StrCat("The JSON body is nested deeper than ", kMaxJsonDepth, " levels."));
      }
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  try {
    return Json::parse(body.begin(), body.end());
  } catch (const Json::exception& e) {
    return InvalidRequestError(
        "", absl::StrCat("We could not parse the JSON body of your request: ", e.what()));
  }
}

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(Endpoint endpoint, std::string_view body_text) {
  TERN_ASSIGN_OR_RETURN(const Json body, ParseJsonBody(body_text));
  if (!body.is_object()) return InvalidRequestError("", "The request body must be a JSON object.");
  OpenAiRequest request;
  request.endpoint = endpoint;

  TERN_ASSIGN_OR_RETURN(const std::optional<std::string> model, GetString(body, "model"));
  if (!model || model->empty())
    return InvalidRequestError("model", "You must provide a model parameter.");
  request.model = *model;

  TERN_RETURN_IF_ERROR(RejectUnsupported(body, endpoint));
  if (endpoint == Endpoint::kChatCompletions) {
    TERN_RETURN_IF_ERROR(ParseMessages(body, &request));
  } else {
    TERN_RETURN_IF_ERROR(ParsePrompt(body, &request));
  }
  TERN_RETURN_IF_ERROR(ParseSampling(body, endpoint, &request.sampling));
  TERN_RETURN_IF_ERROR(ParseChoices(body, endpoint, &request));
  TERN_RETURN_IF_ERROR(ParseStop(body, &request.stop));

  TERN_ASSIGN_OR_RETURN(const std::optional<bool> stream, GetBool(body, "stream"));
  request.stream = stream.value_or(false);
  if (const Json* options = Find(body, "stream_options")) {
    if (!options->is_object()) return TypeError("stream_options", "an object");
    if (!request.stream) {
      return InvalidRequestError("stream_options",
                                 "'stream_options' is only allowed when 'stream' is true.");
    }
    const Json* include_usage = Find(*options, "include_usage");
    if (include_usage != nullptr && !include_usage->is_boolean()) {
      return TypeError("stream_options.include_usage", "a boolean");
    }
    request.include_usage = include_usage != nullptr && include_usage->get<bool>();
  }

  TERN_ASSIGN_OR_RETURN(const std::optional<std::string> user, GetString(body, "user"));
  request.user = user.value_or("");
  TERN_ASSIGN_OR_RETURN(const std::optional<int32_t> priority,
                        GetInt32(body, "priority", -kInt32Max, kInt32Max));
  request.priority = priority.value_or(0);
  TERN_ASSIGN_OR_RETURN(
      request.output,
      ParseOutputFormat(body, endpoint == Endpoint::kChatCompletions, request.tools));
  TERN_ASSIGN_OR_RETURN(request.add_special_tokens, GetBool(body, "add_special_tokens"));
  TERN_ASSIGN_OR_RETURN(const std::optional<bool> skip_special,
                        GetBool(body, "skip_special_tokens"));
  request.skip_special_tokens = skip_special.value_or(true);
  TERN_ASSIGN_OR_RETURN(const std::optional<bool> include_stop,
                        GetBool(body, "include_stop_str_in_output"));
  request.include_stop_str_in_output = include_stop.value_or(false);
  return request;
}

}  // namespace tern::gateway
