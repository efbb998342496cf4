// Chat templates: the Jinja templates (tokenizer_config.json "chat_template")
// that turn an OpenAI-style message list into a model prompt.
//
// The engine implements the Jinja dialect of @huggingface/jinja, which is
// what Hugging Face chat templates are written against, and renders the
// Llama 3.x Instruct templates (including tool calling) byte-for-byte as it
// does: trim_blocks and lstrip_blocks on, `{%- -%}` whitespace control,
// if/elif/else, for (loop.*, else, `if` filters, dict items), set with
// namespace(), macros and call blocks, literals, slicing, tests, filters
// (tojson, trim, join, selectattr, map, ...), string and dict methods,
// raise_exception and strftime_now. Undefined variables print as nothing
// and are falsy.
//
// Where the reference fails or is plainly wrong, Jinja's behaviour is used
// instead: output written before {% break %} / {% continue %} is kept;
// round, select, reject, map('filter'), trim(chars), str.strip(chars),
// string ordering, tests with arguments (`is divisibleby 3`), `default`
// without parentheses, tojson(4) and iterating a string work; tuples print as
// lists. Strings are UTF-8, so a lone UTF-16 surrogate (`'😀'[0]`) prints as
// U+FFFD.
//
// A ChatTemplate is immutable once compiled: Render is const and may be
// called from any number of threads at once; copies share the compiled
// template. Rendering never crashes on hostile templates or contexts: depth,
// steps, output (64 MiB) and memory are bounded.
#ifndef TERN_GATEWAY_CHAT_TEMPLATE_CHAT_TEMPLATE_H_
#define TERN_GATEWAY_CHAT_TEMPLATE_CHAT_TEMPLATE_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tern::gateway {

namespace jinja {
struct Stmt;
}  // namespace jinja

class ChatTemplate {
 public:
  // Parses a template. InvalidArgument("line N: ...") on syntax errors,
  // invalid UTF-8 or a template over 1 MiB.
  static absl::StatusOr<ChatTemplate> Compile(std::string_view source);

  // Renders with the variables of `context`, a JSON object such as
  // {"messages": [...], "tools": [...], "add_generation_prompt": true,
  //  "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", ...}.
  // Errors:
  //   InvalidArgument(message)  the template called raise_exception(message);
  //   InvalidArgument("line N: ...")  a template error (unknown filter,
  //       arithmetic on none, ...), or a context that is not an object or
  //       names a builtin (true, none, range, namespace, ...);
  //   ResourceExhausted  the render exceeded a size, step or depth bound.
  // The ordered_json overload keeps object keys in document order (what the
  // reference does); with nlohmann::json, keys arrive sorted.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& context) const;
  absl::StatusOr<std::string> Render(const nlohmann::json& context) const;

 private:
  struct Program;
  explicit ChatTemplate(std::shared_ptr<const Program> program) : program_(std::move(program)) {}

  template <typename Json>
  absl::StatusOr<std::string> RenderJson(const Json& context) const;

  std::shared_ptr<const Program> program_;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_CHAT_TEMPLATE_CHAT_TEMPLATE_H_
