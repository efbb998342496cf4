// Parser of the chat-template engine: tokens to a syntax tree, with the
// grammar and operator precedence of @huggingface/jinja (filters bind tighter
// than `is` tests, which bind tighter than arithmetic; `x if c` without
// `else` yields undefined when c is false).
//
// Nesting is bounded (statements and expressions alike) so hostile templates
// cannot exhaust the stack while parsing or rendering. Pure function;
// thread-safe.
#ifndef TERN_GATEWAY_CHAT_TEMPLATE_JINJA_PARSER_H_
#define TERN_GATEWAY_CHAT_TEMPLATE_JINJA_PARSER_H_

#include <vector>

#include "absl/status/statusor.h"
#include "gateway/chat_template/jinja_ast.h"
#include "gateway/chat_template/jinja_lexer.h"

namespace tern::gateway::jinja {

// Deepest expression tree and statement nesting accepted.
inline constexpr int kMaxExprDepth = 200;
inline constexpr int kMaxStmtNesting = 100;

// InvalidArgument("line N: ...") on syntax errors.
absl::StatusOr<StmtList> Parse(const std::vector<Token>& tokens);

}  // namespace tern::gateway::jinja

#endif  // TERN_GATEWAY_CHAT_TEMPLATE_JINJA_PARSER_H_
