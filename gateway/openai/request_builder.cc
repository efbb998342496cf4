#include "gateway/openai/request_builder.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gateway/http/api_error.h"

namespace tern::gateway {
namespace {

const char* PromptParam(Endpoint endpoint) {
  return endpoint == Endpoint::kChatCompletions ? "messages" : "prompt";
}

absl::Status CheckVocabulary(const std::vector<int32_t>& ids, int32_t vocab_size,
                             const char* param) {
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab_size) {
      return InvalidRequestError(
          param,
          absl::StrCat("Token id ", id, " in '", param, "' is out of the vocabulary (size ",
                       vocab_size, ")."),
          "invalid_value");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RenderChat(const OpenAiRequest& request, const ServedModel& model) {
  if (!model.chat_template.has_value()) {
    return InvalidRequestError(
        "messages", "This model has no chat template; use /v1/completions with a raw prompt.");
  }
  nlohmann::ordered_json context = nlohmann::ordered_json::object();
  if (request.chat_template_kwargs.is_object()) context = request.chat_template_kwargs;
  context["messages"] = request.messages;
  if (!request.tools.is_null()) {
    context["tools"] = request.tools;
  } else {
    context.erase("tools");
  }
  context["add_generation_prompt"] = request.add_generation_prompt;
  context["bos_token"] = model.bos_token;
  context["eos_token"] = model.eos_token;
  absl::StatusOr<std::string> text = model.chat_template->Render(context);
  if (!text.ok()) {
    // raise_exception in the template (e.g. roles out of order), template
    // errors caused by the messages' shape, or a render over its bounds: all
    // come from what the client sent.
    if (absl::IsInvalidArgument(text.status()) || absl::IsResourceExhausted(text.status())) {
      return InvalidRequestError("messages", std::string(text.status().message()));
    }
    return text.status();
  }
  return text;
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> TokenizePrompt(const OpenAiRequest& request,
                                                    const ServedModel& model) {
  std::vector<int32_t> ids;
  if (request.endpoint == Endpoint::kChatCompletions) {
    TERN_ASSIGN_OR_RETURN(const std::string text, RenderChat(request, model));
    ids = model.tokenizer->Encode(text, request.add_special_tokens.value_or(false));
  } else if (request.prompt_is_tokens) {
    ids = request.prompt_token_ids;
    TERN_RETURN_IF_ERROR(CheckVocabulary(ids, model.tokenizer->vocab_size(), "prompt"));
  } else {
    ids = model.tokenizer->Encode(request.prompt, request.add_special_tokens.value_or(true));
  }
  if (ids.empty()) {
    return InvalidRequestError(PromptParam(request.endpoint),
                               "The prompt is empty after tokenization.");
  }
  return ids;
}

absl::StatusOr<int32_t> ResolveMaxTokens(Endpoint endpoint, int32_t prompt_tokens,
                                         std::optional<int32_t> requested, int32_t max_model_len) {
  const char* param = PromptParam(endpoint);
  if (!requested.has_value()) {
    if (prompt_tokens >= max_model_len) {
      return InvalidRequestError(
          param,
          absl::StrCat("This model's maximum context length is ", max_model_len,
                       " tokens. However, your ",
                       endpoint == Endpoint::kChatCompletions ? "messages" : "prompt",
                       " resulted in ", prompt_tokens, " tokens. Please reduce the length of the ",
                       endpoint == Endpoint::kChatCompletions ? "messages." : "prompt."),
          "context_length_exceeded");
    }
    return max_model_len - prompt_tokens;
  }
  const int64_t total = static_cast<int64_t>(prompt_tokens) + *requested;
  if (total > max_model_len) {
    return InvalidRequestError(
        param,
        absl::StrCat(
            "This model's maximum context length is ", max_model_len,
            " tokens. However, you requested ", total, " tokens (", prompt_tokens,
            " in the messages, ", *requested,
            " in the completion). Please reduce the length of the messages or completion."),
        "context_length_exceeded");
  }
  return *requested;
}

tern::v1::SamplingParams ToSamplingParams(const SamplingOptions& options,
                                          const SamplingDefaults& defaults, int32_t max_tokens) {
  tern::v1::SamplingParams params;
  params.set_temperature(
      static_cast<float>(options.temperature.value_or(defaults.temperature.value_or(1.0))));
  params.set_top_p(static_cast<float>(options.top_p.value_or(defaults.top_p.value_or(1.0))));
  // OpenAI/vLLM spell "off" as -1, the proto as 0.
  params.set_top_k(std::max(0, options.top_k.value_or(defaults.top_k.value_or(0))));
  params.set_min_p(static_cast<float>(options.min_p.value_or(defaults.min_p.value_or(0.0))));
  params.set_presence_penalty(static_cast<float>(options.presence_penalty));
  params.set_frequency_penalty(static_cast<float>(options.frequency_penalty));
  params.set_repetition_penalty(static_cast<float>(
      options.repetition_penalty.value_or(defaults.repetition_penalty.value_or(1.0))));
  if (options.seed.has_value()) {
    params.set_seed(*options.seed);
    params.set_has_seed(true);
  }
  params.set_max_tokens(max_tokens);
  params.set_min_tokens(std::min(options.min_tokens, max_tokens));
  for (const int32_t id : options.stop_token_ids) params.add_stop_token_ids(id);
  params.set_ignore_eos(options.ignore_eos);
  for (const auto& [id, bias] : options.logit_bias) (*params.mutable_logit_bias())[id] = bias;
  params.set_logprobs(options.logprobs);
  params.set_top_logprobs(options.top_logprobs);
  return params;
}

absl::StatusOr<PreparedRequest> PrepareGenerateRequest(const OpenAiRequest& request,
                                                       const ServedModel& model,
                                                       int32_t max_model_len,
                                                       const std::string& request_id) {
  const int32_t vocab_size = model.tokenizer->vocab_size();
  TERN_RETURN_IF_ERROR(
      CheckVocabulary(request.sampling.stop_token_ids, vocab_size, "stop_token_ids"));
  for (const auto& [id, bias] : request.sampling.logit_bias) {
    if (id >= vocab_size) {
      return InvalidRequestError("logit_bias",
                                 absl::StrCat("Token id ", id,
                                              " in 'logit_bias' is out of the "
                                              "vocabulary (size ",
                                              vocab_size, ")."),
                                 "invalid_value");
    }
  }
  TERN_ASSIGN_OR_RETURN(std::vector<int32_t> prompt, TokenizePrompt(request, model));
  PreparedRequest prepared;
  prepared.prompt_tokens = static_cast<int32_t>(prompt.size());
  TERN_ASSIGN_OR_RETURN(prepared.max_tokens,
                        ResolveMaxTokens(request.endpoint, prepared.prompt_tokens,
                                         request.sampling.max_tokens, max_model_len));
  prepared.rpc.set_model(model.name);
  prepared.rpc.set_session_key(request.user);
  // vLLM's priority: lower first; the router's: higher first.
  prepared.rpc.set_priority(-request.priority);
  tern::v1::GenerateRequest* generate = prepared.rpc.mutable_request();
  generate->set_request_id(request_id);
  generate->mutable_prompt_token_ids()->Assign(prompt.begin(), prompt.end());
  *generate->mutable_sampling() =
      ToSamplingParams(request.sampling, model.sampling_defaults, prepared.max_tokens);
  *generate->mutable_sampling()->mutable_constraint() =
      ToOutputConstraint(request.output.constraint);
  return prepared;
}

absl::StatusOr<std::vector<PreparedChoice>> PrepareChoices(const OpenAiRequest& request,
                                                           const ServedModel& model,
                                                           int32_t max_model_len,
                                                           const std::string& request_id) {
  const size_t prompts = std::max<size_t>(1, request.prompts.size());
  const bool several = prompts > 1 || request.n > 1;
  std::vector<PreparedChoice> choices;
  choices.reserve(prompts * static_cast<size_t>(request.n));
  for (size_t p = 0; p < prompts; ++p) {
    OpenAiRequest one = request;
    if (!request.prompts.empty()) {
      one.prompt = request.prompts[p].text;
      one.prompt_token_ids = request.prompts[p].token_ids;
      one.prompt_is_tokens = request.prompts[p].is_tokens;
    }
    TERN_ASSIGN_OR_RETURN(const PreparedRequest prepared,
                          PrepareGenerateRequest(one, model, max_model_len, request_id));
    std::string echo;
    if (request.echo) {
      echo = one.prompt_is_tokens
                 ? model.tokenizer->Decode(one.prompt_token_ids, request.skip_special_tokens)
                 : one.prompt;
    }
    for (int32_t i = 0; i < request.n; ++i) {
      PreparedChoice choice;
      choice.index = static_cast<int32_t>(choices.size());
      choice.leader = i == 0;
      choice.echo = echo;
      choice.prepared = prepared;
      tern::v1::GenerateRequest* generate = choice.prepared.rpc.mutable_request();
      if (several) generate->set_request_id(absl::StrCat(request_id, "-", choice.index));
      // Each choice its own random stream, reproducible from the request's seed.
      if (request.sampling.seed.has_value()) {
        generate->mutable_sampling()->set_seed(*request.sampling.seed + static_cast<uint64_t>(i));
      }
      choices.push_back(std::move(choice));
    }
  }
  return choices;
}

tern::v1::OutputConstraint ToOutputConstraint(const structured::ConstraintSpec& spec) {
  using Kind = structured::ConstraintSpec::Kind;
  tern::v1::OutputConstraint constraint;
  switch (spec.kind) {
    case Kind::kJsonSchema:
      constraint.set_json_schema(spec.json_schema);
      break;
    case Kind::kJsonObject:
      constraint.set_json_object(true);
      break;
    case Kind::kRegex:
      constraint.set_regex(spec.regex);
      break;
    case Kind::kChoice:
      for (const std::string& choice : spec.choices)
        constraint.mutable_choice()->add_choices(choice);
      break;
    case Kind::kNone:
      break;
  }
  return constraint;
}

}  // namespace tern::gateway
