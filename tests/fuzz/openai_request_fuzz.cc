// Fuzzes OpenAI request validation (ParseOpenAiRequest). The first byte
// picks the endpoint (odd: chat completions, even: completions; the seeds
// use '0' and '1'), the rest is the body; structured outputs and tools go
// through the JSON-schema and regex compilers. Properties: a refusal is an
// INVALID_ARGUMENT that maps to a 400 with a serializable error body; an
// accepted request holds only values within the documented ranges, and its
// output constraint compiles.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "gateway/http/api_error.h"
#include "gateway/openai/openai_request.h"
#include "structured/constraint.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using tern::gateway::Endpoint;
using tern::gateway::OpenAiRequest;
using tern::gateway::SamplingOptions;

void CheckSampling(const SamplingOptions& s, Endpoint endpoint) {
  TERN_FUZZ_CHECK(!s.temperature || (*s.temperature >= 0 && *s.temperature <= 2));
  TERN_FUZZ_CHECK(!s.top_p || (*s.top_p > 0 && *s.top_p <= 1));
  TERN_FUZZ_CHECK(!s.top_k || *s.top_k >= -1);
  TERN_FUZZ_CHECK(!s.min_p || (*s.min_p >= 0 && *s.min_p <= 1));
  TERN_FUZZ_CHECK(!s.repetition_penalty || *s.repetition_penalty > 0);
  TERN_FUZZ_CHECK(s.presence_penalty >= -2 && s.presence_penalty <= 2);
  TERN_FUZZ_CHECK(s.frequency_penalty >= -2 && s.frequency_penalty <= 2);
  TERN_FUZZ_CHECK(!s.max_tokens || *s.max_tokens >= 1);
  TERN_FUZZ_CHECK(s.min_tokens >= 0 && (!s.max_tokens || s.min_tokens <= *s.max_tokens));
  for (const int32_t id : s.stop_token_ids) TERN_FUZZ_CHECK(id >= 0);
  for (const auto& [id, bias] : s.logit_bias) {
    TERN_FUZZ_CHECK(id >= 0 && bias >= -100 && bias <= 100);
  }
  const int32_t max_top = endpoint == Endpoint::kChatCompletions
                              ? tern::gateway::kMaxChatTopLogprobs
                              : tern::gateway::kMaxCompletionLogprobs;
  TERN_FUZZ_CHECK(s.top_logprobs >= 0 && s.top_logprobs <= max_top);
  TERN_FUZZ_CHECK(s.logprobs || s.top_logprobs == 0);
}

void CheckRequest(const OpenAiRequest& r, Endpoint endpoint) {
  TERN_FUZZ_CHECK(r.endpoint == endpoint && !r.model.empty());
  CheckSampling(r.sampling, endpoint);
  TERN_FUZZ_CHECK(r.stop.size() <= static_cast<size_t>(tern::gateway::kMaxStopSequences));
  for (const std::string& stop : r.stop) {
    TERN_FUZZ_CHECK(!stop.empty() && stop.size() <= tern::gateway::kMaxStopBytes);
  }
  TERN_FUZZ_CHECK(!r.include_usage || r.stream);
  TERN_FUZZ_CHECK(r.n >= 1 && r.n <= tern::gateway::kMaxChoices);
  TERN_FUZZ_CHECK(r.prompts.size() * static_cast<size_t>(r.n) <=
                  static_cast<size_t>(tern::gateway::kMaxChoices));
  // An accepted constraint compiles (the gateway checked it before routing).
  TERN_FUZZ_CHECK(tern::structured::ValidateConstraint(r.output.constraint).ok());
  if (r.output.tool_choice == tern::gateway::ToolChoice::kNamed) {
    TERN_FUZZ_CHECK(!r.output.tool_name.empty() && r.tools.is_array());
  }
  if (endpoint == Endpoint::kChatCompletions) {
    TERN_FUZZ_CHECK(r.messages.is_array() && !r.messages.empty());
    for (const auto& message : r.messages) {
      TERN_FUZZ_CHECK(message.is_object() && message.contains("role"));
      TERN_FUZZ_CHECK(message["content"].is_string() || message["content"].is_null());
    }
    TERN_FUZZ_CHECK(r.tools.is_null() || r.tools.is_array());
    TERN_FUZZ_CHECK(r.chat_template_kwargs.is_null() || r.chat_template_kwargs.is_object());
  } else {
    TERN_FUZZ_CHECK(!r.prompt_is_tokens || !r.prompt_token_ids.empty());
    for (const int32_t id : r.prompt_token_ids) TERN_FUZZ_CHECK(id >= 0);
  }
  // What the gateway later does with the messages: serialize them.
  (void)tern::gateway::DumpJson(r.messages);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Endpoint endpoint = (data[0] & 1) ? Endpoint::kChatCompletions : Endpoint::kCompletions;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  const auto request = tern::gateway::ParseOpenAiRequest(endpoint, body);
  if (!request.ok()) {
    TERN_FUZZ_CHECK(absl::IsInvalidArgument(request.status()));
    const tern::gateway::ApiError error = tern::gateway::ToApiError(request.status());
    TERN_FUZZ_CHECK(error.http_status == 400);
    (void)tern::gateway::DumpJson(error.body);
    return 0;
  }
  CheckRequest(*request, endpoint);
  return 0;
}
