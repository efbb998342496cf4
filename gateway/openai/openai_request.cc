#include "gateway/openai/openai_request.h"

#include <cmath>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "gateway/http/api_error.h"

namespace tern::gateway {
namespace {

using Json = nlohmann::ordered_json;

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status TypeError(std::string_view param, std::string_view expected) {
  return InvalidRequestError(
      param,
      absl::StrCat("Invalid type for '", AbslView(param), "': expected ", AbslView(expected), "."),
      "invalid_type");
}

absl::Status ValueError(std::string_view param, std::string_view message) {
  return InvalidRequestError(param, message, "invalid_value");
}

absl::Status Unsupported(std::string_view param, std::string_view message) {
  return InvalidRequestError(param, message, "unsupported_parameter");
}

// The field `name` of `obj`, or nullptr when it is absent or null.
const Json* Find(const Json& obj, const char* name) {
  const auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::optional<double>> GetNumber(const Json& obj, const char* name) {
  const Json* value = Find(obj, name);
  if (value == nullptr) return std::optional<double>();
  if (!value->is_number()) return TypeError(name, "a number");
  const double d = value->get<double>();
  if (!std::isfinite(d))
    return ValueError(name, absl::StrCat("'", name, "' must be a finite number."));
  return std::optional<double>(d);
}

// Integers must be JSON integers (5, not 5.0 or "5") within int64.
absl::StatusOr<std::optional<int64_t>> GetInteger(const Json& obj, const char* name) {
  const Json* value = Find(obj, name);
  if (value == nullptr) return std::optional<int64_t>();
  if (!value->is_number_integer()) return TypeError(name, "an integer");
  if (value->is_number_unsigned() &&
      value->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return ValueError(name, absl::StrCat("'", name, "' is too large."));
  }
  return std::optional<int64_t>(value->get<int64_t>());
}

absl::StatusOr<std::optional<bool>> GetBool(const Json& obj, const char* name) {
  const Json* value = Find(obj, name);
  if (value == nullptr) return std::optional<bool>();
  if (!value->is_boolean()) return TypeError(name, "a boolean");
  return std::optional<bool>(value->get<bool>());
}

absl::StatusOr<std::optional<std::string>> GetString(const Json& obj, const char* name) {
  const Json* value = Find(obj, name);
  if (value == nullptr) return std::optional<std::string>();
  if (!value->is_string()) return TypeError(name, "a string");
  return std::optional<std::string>(value->get<std::string>());
}

absl::Status CheckRange(const char* name, double value, double lo, bool lo_closed, double hi,
                        bool hi_closed) {
  const bool ok = (lo_closed ? value >= lo : value > lo) && (hi_closed ? value <= hi : value < hi);
  if (ok) return absl::OkStatus();
  return ValueError(
      name, absl::StrFormat("'%s' must be in %c%g, %g%c, got %g.", name, lo_closed ? '[' : '(', lo,
                            hi, hi_closed ? ']' : ')', value));
}

// Reads an integer field into int32 range [lo, hi].
absl::StatusOr<std::optional<int32_t>> GetInt32(const Json& obj, const char* name, int64_t lo,
                                                int64_t hi) {
  TERN_ASSIGN_OR_RETURN(const std::optional<int64_t> value, GetInteger(obj, name));
  if (!value) return std::optional<int32_t>();
  if (*value < lo || *value > hi) {
    return ValueError(name, absl::StrCat("'", name, "' must be between ", lo, " and ", hi, ", got ",
                                         *value, "."));
  }
  return std::optional<int32_t>(static_cast<int32_t>(*value));
}

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

absl::StatusOr<std::vector<int32_t>> TokenIdArray(const Json& array, const std::string& param) {
  std::vector<int32_t> ids;
  ids.reserve(array.size());
  for (size_t i = 0; i < array.size(); ++i) {
    const Json& id = array[i];
    const std::string where = absl::StrCat(param, "[", i, "]");
    if (!id.is_number_integer()) return TypeError(where, "an integer token id");
    if (id.is_number_unsigned() ? id.get<uint64_t>() > static_cast<uint64_t>(kInt32Max)
                                : id.get<int64_t>() < 0) {
      return ValueError(where, absl::StrCat("'", where, "' is not a valid token id."));
    }
    ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
  }
  return ids;
}

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
  TERN_ASSIGN_OR_RETURN(const std::optional<int32_t> n, GetInt32(body, "n", 1, kInt32Max));
  if (n && *n > 1) return Unsupported("n", "Only n=1 is supported; 'n' > 1 is not supported yet.");
  TERN_ASSIGN_OR_RETURN(const std::optional<bool> beam, GetBool(body, "use_beam_search"));
  if (beam.value_or(false)) return Unsupported("use_beam_search", "Beam search is not supported.");
  if (endpoint == Endpoint::kCompletions) {
    TERN_ASSIGN_OR_RETURN(const std::optional<bool> echo, GetBool(body, "echo"));
    if (echo.value_or(false)) return Unsupported("echo", "'echo' is not supported.");
    TERN_ASSIGN_OR_RETURN(const std::optional<int32_t> best_of,
                          GetInt32(body, "best_of", 1, kInt32Max));
    if (best_of && *best_of > 1) return Unsupported("best_of", "'best_of' > 1 is not supported.");
    TERN_ASSIGN_OR_RETURN(const std::optional<std::string> suffix, GetString(body, "suffix"));
    if (suffix && !suffix->empty()) return Unsupported("suffix", "'suffix' is not supported.");
    return absl::OkStatus();
  }
  if (const Json* format = Find(body, "response_format")) {
    if (!format->is_object()) return TypeError("response_format", "an object");
    TERN_ASSIGN_OR_RETURN(const std::optional<std::string> type, GetString(*format, "type"));
    if (!type) return InvalidRequestError("response_format", "'response_format.type' is required.");
    if (*type != "text") {
      return Unsupported("response_format", absl::StrCat("'response_format' of type '", *type,
                                                         "' is not supported; only 'text' is."));
    }
  }
  if (const Json* choice = Find(body, "tool_choice")) {
    if (!choice->is_string() && !choice->is_object())
      return TypeError("tool_choice", "a string or an object");
    if (!choice->is_string() || (*choice != "none" && *choice != "auto")) {
      return Unsupported("tool_choice", "Only 'tool_choice' \"auto\" and \"none\" are supported.");
    }
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
    request->prompt = prompt->get<std::string>();
    return absl::OkStatus();
  }
  if (!prompt->is_array())
    return TypeError("prompt", "a string, an array of strings or an array of token ids");
  if (prompt->empty()) return ValueError("prompt", "'prompt' must not be empty.");
  const Json& first = (*prompt)[0];
  if (first.is_string() || first.is_array()) {
    if (prompt->size() > 1)
      return Unsupported("prompt", "Batched prompts are not supported; send one prompt.");
    if (first.is_string()) {
      request->prompt = first.get<std::string>();
      return absl::OkStatus();
    }
    if (first.empty()) return ValueError("prompt", "'prompt' must not be empty.");
    TERN_ASSIGN_OR_RETURN(request->prompt_token_ids, TokenIdArray(first, "prompt[0]"));
  } else {
    TERN_ASSIGN_OR_RETURN(request->prompt_token_ids, TokenIdArray(*prompt, "prompt"));
  }
  request->prompt_is_tokens = true;
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
