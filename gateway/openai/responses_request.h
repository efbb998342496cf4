// The OpenAI Responses API's request (POST /v1/responses), stateless: its
// body translated into the equivalent chat-completions body and parsed by
// ParseOpenAiRequest, so every field is validated and rendered exactly as
// for /v1/chat/completions.
//
//   input                  a string (one user message) or items: messages
//                          (roles user, system, developer -> system,
//                          assistant; content a string or input_text /
//                          output_text parts), function_call and
//                          function_call_output items (-> an assistant
//                          message with tool_calls, and tool messages)
//   instructions           a system message before the input
//   max_output_tokens, temperature, top_p, user, seed
//   tools                  function tools {type, name, description,
//                          parameters, strict}; tool_choice ("auto", "none",
//                          "required", {type: "function", name}),
//                          parallel_tool_calls
//   text.format            text, json_object or json_schema {name, schema, strict}
//   stream
// State the API keeps elsewhere (previous_response_id, store: true,
// conversation, background) and non-function tools get a 400: tern keeps
// no conversation state.
//
// Pure functions; thread-safe.
#ifndef TERN_GATEWAY_OPENAI_RESPONSES_REQUEST_H_
#define TERN_GATEWAY_OPENAI_RESPONSES_REQUEST_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "gateway/openai/json_fields.h"
#include "gateway/openai/openai_request.h"

namespace tern::gateway {

struct ResponsesRequest {
  // The chat request it amounts to (endpoint kChatCompletions).
  OpenAiRequest chat;
  // Echoed in the response object, as the client sent them (null when absent).
  Json instructions;
  Json tools;        // the Responses-form tools
  Json tool_choice;  // "auto" when absent
  Json text_format;  // {"type": "text"} when absent
  Json metadata;
  Json max_output_tokens;
  Json temperature;
  Json top_p;
  Json user;
};

absl::StatusOr<ResponsesRequest> ParseResponsesRequest(std::string_view body);

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_OPENAI_RESPONSES_REQUEST_H_
