// Turns a validated OpenAiRequest into the router's RouterGenerateRequest:
// renders the chat template (or takes the completion prompt), tokenizes it,
// checks the prompt and output length against max_model_len and every token
// id against the vocabulary, and fills SamplingParams (client values, else
// the model's generation_config defaults, else OpenAI's).
//
// Errors are INVALID_ARGUMENT statuses from InvalidRequestError naming the
// param (context_length_exceeded for too long requests). Pure functions of
// their inputs; thread-safe.
#ifndef TERN_GATEWAY_OPENAI_REQUEST_BUILDER_H_
#define TERN_GATEWAY_OPENAI_REQUEST_BUILDER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gateway/openai/openai_request.h"
#include "gateway/openai/served_model.h"
#include "tern/v1/router.pb.h"

namespace tern::gateway {

struct PreparedRequest {
  tern::v1::RouterGenerateRequest rpc;
  int32_t prompt_tokens = 0;
  int32_t max_tokens = 0;  // the effective budget sent to the router
};

// The prompt's token ids: the rendered chat template encoded without special
// tokens (the template writes BOS), or the completion prompt encoded with
// them (as vLLM does), or the client's token ids.
absl::StatusOr<std::vector<int32_t>> TokenizePrompt(const OpenAiRequest& request,
                                                    const ServedModel& model);

// The completion budget: the client's max_tokens, or max_model_len minus the
// prompt when absent. context_length_exceeded when prompt + budget exceeds
// max_model_len (or the prompt alone fills it).
absl::StatusOr<int32_t> ResolveMaxTokens(Endpoint endpoint, int32_t prompt_tokens,
                                         std::optional<int32_t> requested, int32_t max_model_len);

tern::v1::SamplingParams ToSamplingParams(const SamplingOptions& options,
                                          const SamplingDefaults& defaults, int32_t max_tokens);

// One choice of a response: its own router request, and where it stands.
struct PreparedChoice {
  PreparedRequest prepared;
  int32_t index = 0;  // choices[].index: prompt * n + i
  // The first choice of its prompt: the others start once it has prefilled
  // the prompt, so that they find it in the prefix cache.
  bool leader = true;
  // Completions with echo: the prompt's text, which the choice's text begins with.
  std::string echo;
};

// Every choice of `request`: n per prompt (a completions batch has several
// prompts), choice i of a prompt seeded with seed + i when a seed is given;
// request ids get "-<index>" when there is more than one. Errors as
// PrepareGenerateRequest.
absl::StatusOr<std::vector<PreparedChoice>> PrepareChoices(const OpenAiRequest& request,
                                                           const ServedModel& model,
                                                           int32_t max_model_len,
                                                           const std::string& request_id);

// The constraint's wire form (no kind set for kNone).
tern::v1::OutputConstraint ToOutputConstraint(const structured::ConstraintSpec& spec);

absl::StatusOr<PreparedRequest> PrepareGenerateRequest(const OpenAiRequest& request,
                                                       const ServedModel& model,
                                                       int32_t max_model_len,
                                                       const std::string& request_id);

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_OPENAI_REQUEST_BUILDER_H_
