// The Responses API's output: the response object and, for streams, its
// typed server-sent events in the order the openai SDK's ResponseStream
// accumulates them:
//
//   response.created, response.in_progress
//   text:   response.output_item.added (message), response.content_part.added,
//           response.output_text.delta..., response.output_text.done,
//           response.content_part.done, response.output_item.done
//   calls:  response.output_item.added (function_call),
//           response.function_call_arguments.delta...,
//           response.function_call_arguments.done, response.output_item.done
//   response.completed (or response.incomplete when max_output_tokens cut
//   it off)
//
// Each event is "event: <type>\ndata: <json>\n\n" with a sequence_number.
// The object accumulates in both modes, so Response() is the non-streaming
// body too.
//
// Not thread-safe; one per response.
#ifndef TERN_GATEWAY_OPENAI_RESPONSES_OUTPUT_H_
#define TERN_GATEWAY_OPENAI_RESPONSES_OUTPUT_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/openai/openai_response.h"
#include "gateway/openai/responses_request.h"

namespace tern::gateway {

class ResponsesOutput {
 public:
  ResponsesOutput(const ResponsesRequest& request, std::string model, int64_t created_at);

  // "resp_" and 32 hex digits.
  const std::string& id() const { return id_; }

  // The events that open a stream.
  std::vector<std::string> Start();
  // Text released for the assistant's message.
  std::vector<std::string> Text(std::string_view delta);
  // Tool-call deltas as ToolCallStream gives them (entries with "index", and
  // "id"/"function.name" on a call's first entry).
  std::vector<std::string> ToolCalls(const Json& entries);
  // Closes the open items; finish_reason "length" makes the response
  // incomplete (max_output_tokens).
  std::vector<std::string> Finish(std::string_view finish_reason, const TokenUsage& usage);

  // The response object as it stands.
  const Json& Response() const { return response_; }

 private:
  std::string Event(const std::string& type, Json data);
  // Closes the message item, if one is open.
  void CloseMessage(std::vector<std::string>& events);

  const std::string id_;
  Json response_;
  int64_t sequence_ = 0;
  // The open message item's output index (-1: none) and its text.
  int message_index_ = -1;
  std::string message_text_;
  // Function-call items by tool-call index: their output index.
  std::map<int64_t, int> call_items_;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_OPENAI_RESPONSES_OUTPUT_H_
