// What a request's output must look like and how the gateway reads it back:
// structured outputs (`response_format` json_object / json_schema, vLLM's
// `structured_outputs` and its older `guided_json` / `guided_regex` /
// `guided_choice`) and tool calling (`tools`, `tool_choice`,
// `parallel_tool_calls`).
//
// Structured outputs become a constraint the worker decodes under. Tools:
//   "none"             no constraint; the output is text
//   "auto" (default)   no constraint; an output in Llama 3.1's JSON tool-call
//                      form becomes tool calls (tool_calls.h)
//   "required"         the output is constrained to calls of the given tools:
//                      one {"name": ..., "parameters": {...}} object, or, with
//                      parallel_tool_calls (the default), a JSON array of them
//   a named function   the output is constrained to that function's
//                      parameters schema and is its call's arguments
// Every schema is checked here (structured::ValidateConstraint), so a bad or
// unsupported one is a 400 naming the keyword before anything is routed.
//
// Pure functions; thread-safe.
#ifndef TERN_GATEWAY_OPENAI_OUTPUT_FORMAT_H_
#define TERN_GATEWAY_OPENAI_OUTPUT_FORMAT_H_

#include <string>

#include "absl/status/statusor.h"
#include "gateway/openai/json_fields.h"
#include "structured/constraint.h"

namespace tern::gateway {

enum class ToolChoice { kNone, kAuto, kRequired, kNamed };

struct OutputFormat {
  // Sent to the worker; kind kNone: free text.
  structured::ConstraintSpec constraint;
  ToolChoice tool_choice = ToolChoice::kNone;
  // kNamed: the function whose arguments the output is.
  std::string tool_name;
  bool parallel_tool_calls = true;
};

// Reads the output fields of a request body. `chat` allows tools; `tools` is
// the request's validated tools array (null when none). INVALID_ARGUMENT
// naming the field: malformed fields, a tool_choice naming no given tool,
// more than one structured-output field, tool_choice "required" or a named
// function together with a structured response_format, and schemas the
// constraint compiler rejects.
absl::StatusOr<OutputFormat> ParseOutputFormat(const Json& body, bool chat, const Json& tools);

// The schema "required" constrains to (see above), as JSON text. `tools` must
// be a validated, non-empty tools array. Each tool's `$defs`/`definitions`
// move to the root under names prefixed with the tool's index, and its
// `$ref`s follow them.
std::string RequiredToolCallsSchema(const Json& tools, bool parallel);

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_OPENAI_OUTPUT_FORMAT_H_
