// vLLM's tokenizer endpoints (serving_tokenization.py), answered by the
// gateway from the served model alone:
//
//   POST /tokenize    {model, prompt, add_special_tokens = true, return_token_strs = false}
//                  or {model, messages, add_generation_prompt = true,
//                      add_special_tokens = false, chat_template_kwargs, tools,
//                      return_token_strs = false}
//                  -> {"count", "max_model_len", "tokens", "token_strs" (or null)}
//   POST /detokenize  {model, tokens} -> {"prompt"}
//
// The prompt is tokenized exactly as a generation request's
// (request_builder.h TokenizePrompt: the chat template, then the tokenizer),
// so the ids are the ones the model would see. `model` may be left out, as
// vLLM allows; it then names the served model. Detokenizing keeps special
// tokens, like the tokenizer library's decode().
//
// Errors: INVALID_ARGUMENT (InvalidRequestError naming the field: malformed
// body, a prompt that is not a string, ids outside the vocabulary, and
// every error ParseOpenAiRequest and TokenizePrompt give, e.g. for
// continue_final_message, which generation does not support either);
// whatever `max_model_len` answers for the model (NOT_FOUND model_not_found).
//
// Pure functions of their inputs; thread-safe.
#ifndef TERN_GATEWAY_OPENAI_TOKENIZE_API_H_
#define TERN_GATEWAY_OPENAI_TOKENIZE_API_H_

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string_view>

#include "absl/status/statusor.h"
#include "gateway/openai/served_model.h"

namespace tern::gateway {

// The context length of the model a request names, or its error.
using MaxModelLenFn = std::function<absl::StatusOr<int32_t>(std::string_view model)>;

// The body of a 200 answer to POST /tokenize.
absl::StatusOr<nlohmann::ordered_json> Tokenize(std::string_view body, const ServedModel& model,
                                                const MaxModelLenFn& max_model_len);

// The body of a 200 answer to POST /detokenize.
absl::StatusOr<nlohmann::ordered_json> Detokenize(std::string_view body, const ServedModel& model,
                                                  const MaxModelLenFn& max_model_len);

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_OPENAI_TOKENIZE_API_H_
