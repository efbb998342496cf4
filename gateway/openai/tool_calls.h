// Tool calls read back from a chat's output text, and their streaming form.
//
// Llama 3.1's JSON tool-call format: an optional "<|python_tag|>", then one
// {"name": ..., "parameters": {...}} object ("arguments" is accepted for
// "parameters"), several such objects separated by ';', or a JSON array of
// them (what tool_choice "required" with parallel calls constrains to).
//
// ToolCallStream sits between the released text of a chat (after stop
// strings) and what is sent, per the request's ToolChoice (output_format.h):
//   kNone      all text is content
//   kNamed     all text is the one call's arguments, streamed as it comes
//   kRequired  held to the end, then parsed into calls (content if it is not
//              a valid call, e.g. cut off by max_tokens)
//   kAuto      content, unless the first non-blank character opens a JSON
//              object or array; then held and parsed as kRequired
//
// Not thread-safe; one per response.
#ifndef TERN_GATEWAY_OPENAI_TOOL_CALLS_H_
#define TERN_GATEWAY_OPENAI_TOOL_CALLS_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/openai/json_fields.h"
#include "gateway/openai/output_format.h"

namespace tern::gateway {

struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // a JSON object, as text
};

// "call_" and 24 random letters and digits, as OpenAI's ids.
std::string NewToolCallId();

// The calls in `text`, or nullopt when it is not wholly in the format above.
// Ids are new.
std::optional<std::vector<ToolCall>> ParseToolCalls(std::string_view text);

// message.tool_calls: [{id, type: "function", function: {name, arguments}}].
Json ToolCallsJson(const std::vector<ToolCall>& calls);

class ToolCallStream {
 public:
  ToolCallStream(ToolChoice choice, std::string tool_name);

  // What to send for some released text: content, and tool_calls entries in
  // a chunk's delta form (each with its "index"; null when none).
  struct Delta {
    std::string content;
    Json tool_calls = nullptr;
  };
  Delta Push(std::string_view text);
  // After the last text: whatever was held.
  Delta Finish();

  // Whether the output became tool calls (known after Finish, or from the
  // first Push of a named call).
  bool made_tool_calls() const { return !calls_.empty(); }
  // The whole output's calls (named: with the arguments sent so far).
  const std::vector<ToolCall>& calls() const { return calls_; }

 private:
  enum class State { kUndecided, kContent, kHolding, kNamed };

  const ToolChoice choice_;
  const std::string tool_name_;
  State state_;
  std::string held_;
  std::vector<ToolCall> calls_;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_OPENAI_TOOL_CALLS_H_
