// Tokenizer of the chat-template engine.
//
// Templates are preprocessed the way Hugging Face renders chat templates
// (trim_blocks and lstrip_blocks on, one trailing newline dropped, the
// transformers-specific {% generation %} tags removed), then split into
// tokens with {%- -%} / {{- -}} / {#- -#} whitespace control applied. The
// rules follow @huggingface/jinja, the reference this engine is tested
// against. Pure functions; thread-safe.
#ifndef TERN_GATEWAY_CHAT_TEMPLATE_JINJA_LEXER_H_
#define TERN_GATEWAY_CHAT_TEMPLATE_JINJA_LEXER_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tern::gateway::jinja {

enum class TokenType {
  kText,
  kNumericLiteral,
  kStringLiteral,
  kIdentifier,
  kEquals,
  kOpenParen,
  kCloseParen,
  kOpenStatement,
  kCloseStatement,
  kOpenExpression,
  kCloseExpression,
  kOpenSquareBracket,
  kCloseSquareBracket,
  kOpenCurlyBracket,
  kCloseCurlyBracket,
  kComma,
  kDot,
  kColon,
  kPipe,
  kAdditiveBinaryOperator,        // + - ~
  kMultiplicativeBinaryOperator,  // * / // %
  kExponentiationBinaryOperator,  // **
  kComparisonBinaryOperator,      // < > <= >= == !=
  kUnaryOperator,                 // + - before an operand
  kComment,
};

std::string_view TokenTypeName(TokenType type);

struct Token {
  TokenType type;
  std::string value;
  int line;  // 1-based line of the original source where the token starts
};

// Maximum template size accepted.
inline constexpr size_t kMaxTemplateBytes = 1 << 20;

// Tokenizes a template. InvalidArgument("line N: ...") on malformed input
// (unterminated strings or comments, unknown characters or escapes).
absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source);

}  // namespace tern::gateway::jinja

#endif  // TERN_GATEWAY_CHAT_TEMPLATE_JINJA_LEXER_H_
