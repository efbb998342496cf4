// Parsing and validation of OpenAI request bodies (/v1/completions and
// /v1/chat/completions, with vLLM's sampling extensions) into plain structs.
//
// Everything that can be checked without the tokenizer or the router is
// checked here: JSON syntax and nesting depth, field types, value ranges, and
// the known fields the gateway cannot honour (beam search, best_of > n, ...).
// Output fields (response_format, tools, tool_choice) are read by
// output_format.h.
// Errors are INVALID_ARGUMENT statuses built with InvalidRequestError, naming
// the offending field as `param`. Unknown fields are ignored, as vLLM does,
// and a JSON null counts as an absent field.
//
// Pure functions; thread-safe.
#ifndef TERN_GATEWAY_OPENAI_OPENAI_REQUEST_H_
#define TERN_GATEWAY_OPENAI_OPENAI_REQUEST_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "gateway/openai/output_format.h"

namespace tern::gateway {

enum class Endpoint { kCompletions, kChatCompletions };

// Deepest JSON nesting a request body may have.
inline constexpr int kMaxJsonDepth = 64;
// OpenAI's limit on stop sequences, and ours on their length (bytes), which
// bounds the work of matching them.
inline constexpr int kMaxStopSequences = 4;
inline constexpr size_t kMaxStopBytes = 1024;

// Sampling controls as the client gave them. Optional fields left empty take
// the model's defaults (generation_config.json) or OpenAI's.
struct SamplingOptions {
  std::optional<double> temperature;         // [0, 2]
  std::optional<double> top_p;               // (0, 1]
  std::optional<int32_t> top_k;              // -1 (off) or >= 0
  std::optional<double> min_p;               // [0, 1]
  std::optional<double> repetition_penalty;  // > 0
  double presence_penalty = 0;               // [-2, 2]
  double frequency_penalty = 0;              // [-2, 2]
  std::optional<uint64_t> seed;
  std::optional<int32_t> max_tokens;  // >= 1; chat: max_completion_tokens wins
  int32_t min_tokens = 0;             // >= 0, <= max_tokens
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  // Token id -> additive bias in [-100, 100]; ids are checked against the
  // vocabulary later, when the tokenizer is at hand.
  std::vector<std::pair<int32_t, float>> logit_bias;
  // Report the sampled tokens' log-probabilities and the `top_logprobs` most
  // likely alternatives at each position. Chat: `logprobs` (boolean) and
  // `top_logprobs` (0..20, only with logprobs true). Completions: the legacy
  // integer `logprobs` (0..5) sets both.
  bool logprobs = false;
  int32_t top_logprobs = 0;
};

// Most alternatives per token: OpenAI's limits for each endpoint.
inline constexpr int32_t kMaxChatTopLogprobs = 20;
inline constexpr int32_t kMaxCompletionLogprobs = 5;

// Most choices one request may ask for: n times the number of prompts.
inline constexpr int32_t kMaxChoices = 128;

// One completion prompt: text, or token ids when is_tokens.
struct PromptInput {
  std::string text;
  std::vector<int32_t> token_ids;
  bool is_tokens = false;
};

struct OpenAiRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;

  // Chat: messages normalized for the chat template (content flattened to a
  // string, or null for an assistant message that only carries tool_calls);
  // other message keys (name, tool_calls, tool_call_id) pass through. JSON
  // objects keep the client's key order, as the reference renderers see it.
  nlohmann::ordered_json messages;
  // Chat: the `tools` array, or null.
  nlohmann::ordered_json tools;

  // Completions: every prompt of the request (a batch when more than one),
  // and the first of them in the three fields after it: as text, or as
  // token ids when prompt_is_tokens.
  std::vector<PromptInput> prompts;
  std::string prompt;
  std::vector<int32_t> prompt_token_ids;
  bool prompt_is_tokens = false;
  // Choices per prompt; each has its own seed stream (seed + index).
  int32_t n = 1;
  // Completions: the prompt's text precedes each choice's text.
  bool echo = false;

  // vLLM extensions on prompt handling. add_special_tokens defaults to true
  // for completions and false for chat (the template writes the BOS itself).
  std::optional<bool> add_special_tokens;
  bool add_generation_prompt = true;  // chat
  nlohmann::ordered_json
      chat_template_kwargs;         // chat: object merged into the template context, or null
  bool skip_special_tokens = true;  // output detokenization
  bool include_stop_str_in_output = false;

  SamplingOptions sampling;
  // Structured outputs and tool calling: the constraint sent to the worker
  // and how the output is read back.
  OutputFormat output;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;
  std::string user;
  // vLLM's `priority`: lower is served earlier (the router's scale is the reverse).
  int32_t priority = 0;
};

// Parses a JSON document of at most kMaxJsonDepth levels. Malformed JSON and
// deeper nesting are INVALID_ARGUMENT.
// Objects keep their keys in document order.
absl::StatusOr<nlohmann::ordered_json> ParseJsonBody(std::string_view body);

// Parses and validates a request body for `endpoint`.
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(Endpoint endpoint, std::string_view body);

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_OPENAI_OPENAI_REQUEST_H_
