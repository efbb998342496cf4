#include "gateway/openai/tokenize_api.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gateway/http/api_error.h"
#include "gateway/openai/openai_request.h"
#include "gateway/openai/request_builder.h"

namespace tern::gateway {
namespace {

using Json = nlohmann::ordered_json;

absl::Status TypeMismatch(const char* param, const char* expected) {
  return InvalidRequestError(
      param, absl::StrCat("Invalid type for '", param, "': expected ", expected, "."),
      "invalid_type");
}

// The field, or nullptr when absent or null (null counts as absent, as in
// every other body).
const Json* Field(const Json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

// The body as an object whose `model` is set: the served model when the
// client left it out (vLLM's default).
absl::StatusOr<Json> ParseBody(std::string_view text, const ServedModel& model) {
  TERN_ASSIGN_OR_RETURN(Json body, ParseJsonBody(text));
  if (!body.is_object()) return InvalidRequestError("", "The request body must be a JSON object.");
  if (Field(body, "model") == nullptr) body["model"] = model.name;
  if (!body["model"].is_string()) return TypeMismatch("model", "a string");
  return body;
}

}  // namespace

absl::StatusOr<nlohmann::ordered_json> Tokenize(std::string_view text, const ServedModel& model,
                                                const MaxModelLenFn& max_model_len) {
  TERN_ASSIGN_OR_RETURN(const Json body, ParseBody(text, model));
  bool return_token_strs = false;
  if (const Json* strs = Field(body, "return_token_strs")) {
    if (!strs->is_boolean()) return TypeMismatch("return_token_strs", "a boolean");
    return_token_strs = strs->get<bool>();
  }
  // The chat form when it has messages, as vLLM's TokenizeRequest union
  // tells them apart. Both forms are parsed as the matching generation
  // request, so they share its validation and its defaults.
  const bool chat = Field(body, "messages") != nullptr;
  if (!chat) {
    const Json* prompt = Field(body, "prompt");
    if (prompt == nullptr) {
      return InvalidRequestError("prompt", "Either 'prompt' or 'messages' is required.");
    }
    if (!prompt->is_string()) return TypeMismatch("prompt", "a string");
  }
  TERN_ASSIGN_OR_RETURN(
      const OpenAiRequest request,
      ParseOpenAiRequest(chat ? Endpoint::kChatCompletions : Endpoint::kCompletions,
                         DumpJson(body)));
  TERN_ASSIGN_OR_RETURN(const int32_t context, max_model_len(request.model));
  TERN_ASSIGN_OR_RETURN(const std::vector<int32_t> ids, TokenizePrompt(request, model));
  Json answer = Json::object();
  answer["count"] = ids.size();
  answer["max_model_len"] = context;
  answer["tokens"] = ids;
  if (return_token_strs) {
    Json strs = Json::array();
    for (const int32_t id : ids) strs.push_back(model.tokenizer->TokenString(id));
    answer["token_strs"] = std::move(strs);
  } else {
    answer["token_strs"] = nullptr;
  }
  return answer;
}

absl::StatusOr<nlohmann::ordered_json> Detokenize(std::string_view text, const ServedModel& model,
                                                  const MaxModelLenFn& max_model_len) {
  TERN_ASSIGN_OR_RETURN(const Json body, ParseBody(text, model));
  TERN_RETURN_IF_ERROR(max_model_len(body["model"].get<std::string>()).status());
  const Json* tokens = Field(body, "tokens");
  if (tokens == nullptr) return InvalidRequestError("tokens", "'tokens' is required.");
  if (!tokens->is_array()) return TypeMismatch("tokens", "an array of token ids");
  const int32_t vocab_size = model.tokenizer->vocab_size();
  std::vector<int32_t> ids;
  ids.reserve(tokens->size());
  for (const Json& token : *tokens) {
    if (!token.is_number_integer()) return TypeMismatch("tokens", "an array of token ids");
    // Ids in range may still name no token (a gap in the vocabulary): decode
    // would drop them silently, so they are refused like the others.
    const int64_t id = token.get<int64_t>();
    if (id < 0 || id >= vocab_size ||
        model.tokenizer->TokenString(static_cast<int32_t>(id)).empty()) {
      return InvalidRequestError(
          "tokens",
          absl::StrCat("Token id ", id, " in 'tokens' is out of the vocabulary (size ", vocab_size,
                       ")."),
          "invalid_value");
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  Json answer = Json::object();
  answer["prompt"] = model.tokenizer->Decode(ids, /*skip_special_tokens=*/false);
  return answer;
}

}  // namespace tern::gateway
