#include "gateway/chat_template/jinja_lexer.h"

#include <utility>

#include "absl/status/status.h"
#include "gateway/chat_template/jinja_unicode.h"

namespace tern::gateway::jinja {
namespace {

// Preprocessed text plus, for every byte, the source line it came from (so
// errors point at the template as written).
struct Source {
  std::string text;
  std::vector<int> lines;

  void Push(const Source& from, size_t i) {
    text.push_back(from.text[i]);
    lines.push_back(from.lines[i]);
  }
  void PushRange(const Source& from, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) Push(from, i);
  }
};

size_t LineTerminatorAt(std::string_view t, size_t i) {
  if (t[i] == '\n' || t[i] == '\r') return 1;
  if (t[i] == '\xE2' && i + 2 < t.size() && t[i + 1] == '\x80' &&
      (t[i + 2] == '\xA8' || t[i + 2] == '\xA9')) {
    return 3;
  }
  return 0;
}

// lstrip_blocks: spaces and tabs between a line start and "{%", "{#" or "{-"
// are removed.
Source LstripBlocks(const Source& in) {
  Source out;
  const std::string& t = in.text;
  bool at_line_start = true;
  for (size_t i = 0; i < t.size();) {
    if (at_line_start) {
      at_line_start = false;
      size_t j = i;
      while (j < t.size() && (t[j] == ' ' || t[j] == '\t')) ++j;
      if (j + 1 < t.size() && t[j] == '{' &&
          (t[j + 1] == '#' || t[j + 1] == '%' || t[j + 1] == '-')) {
        out.PushRange(in, j, j + 2);
        i = j + 2;
        continue;
      }
    }
    if (const size_t n = LineTerminatorAt(t, i)) {
      out.PushRange(in, i, i + n);
      i += n;
      at_line_start = true;
      continue;
    }
    out.Push(in, i++);
  }
  return out;
}

// trim_blocks: the newline right after "%}", "#}" or "-}" is removed.
Source TrimBlocks(const Source& in) {
  Source out;
  const std::string& t = in.text;
  for (size_t i = 0; i < t.size();) {
    if (i + 2 < t.size() && (t[i] == '#' || t[i] == '%' || t[i] == '-') && t[i + 1] == '}' &&
        t[i + 2] == '\n') {
      out.PushRange(in, i, i + 2);
      i += 3;
      continue;
    }
    out.Push(in, i++);
  }
  return out;
}

size_t SkipSpaces(std::string_view t, size_t i) {
  while (size_t n = JsWhitespaceAt(t, i)) i += n;
  return i;
}

// Matches "{%-? (end)?generation -?%}" at i; returns its end or 0.
size_t MatchGenerationTag(std::string_view t, size_t i, bool* lstrip, bool* rstrip) {
  if (t.compare(i, 2, "{%") != 0) return 0;
  size_t j = i + 2;
  *lstrip = j < t.size() && t[j] == '-';
  if (*lstrip) ++j;
  j = SkipSpaces(t, j);
  if (t.compare(j, 3, "end") == 0 && t.compare(j + 3, 10, "generation") == 0) j += 3;
  if (t.compare(j, 10, "generation") != 0) return 0;
  j = SkipSpaces(t, j + 10);
  *rstrip = j < t.size() && t[j] == '-';
  if (*rstrip) ++j;
  if (t.compare(j, 2, "%}") != 0) return 0;
  return j + 2;
}

// Removes the transformers-only {% generation %} / {% endgeneration %} tags,
// honouring their whitespace-control dashes.
Source StripGenerationTags(const Source& in) {
  Source out;
  const std::string& t = in.text;
  size_t done = 0;
  for (size_t p = 0; p < t.size(); ++p) {
    bool lstrip, rstrip;
    const size_t tag_end = MatchGenerationTag(t, p, &lstrip, &rstrip);
    if (tag_end == 0) continue;
    size_t before = p;
    while (before > done) {
      const size_t n = JsWhitespaceBefore(std::string_view(t).substr(0, before), before);
      if (n == 0 || before - n < done) break;
      before -= n;
    }
    const size_t after = SkipSpaces(t, tag_end);
    out.PushRange(in, done, before);
    if (!lstrip) out.PushRange(in, before, p);
    if (!rstrip) out.PushRange(in, tag_end, after);
    done = after;
    p = after - 1;
  }
  out.PushRange(in, done, t.size());
  return out;
}

Source Preprocess(std::string_view template_source) {
  Source src;
  int line = 1;
  for (char c : template_source) {
    src.text.push_back(c);
    src.lines.push_back(line);
    if (c == '\n') ++line;
  }
  if (!src.text.empty() && src.text.back() == '\n') {
    src.text.pop_back();
    src.lines.pop_back();
  }
  return StripGenerationTags(TrimBlocks(LstripBlocks(src)));
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsWordChar(char c) {
  return IsDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
int HexDigit(char c) {
  if (IsDigit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

struct Operator {
  std::string_view text;
  TokenType type;
};

constexpr Operator kOperators[] = {
    {"{%", TokenType::kOpenStatement},
    {"%}", TokenType::kCloseStatement},
    {"{{", TokenType::kOpenExpression},
    {"}}", TokenType::kCloseExpression},
    {"(", TokenType::kOpenParen},
    {")", TokenType::kCloseParen},
    {"{", TokenType::kOpenCurlyBracket},
    {"}", TokenType::kCloseCurlyBracket},
    {"[", TokenType::kOpenSquareBracket},
    {"]", TokenType::kCloseSquareBracket},
    {",", TokenType::kComma},
    {".", TokenType::kDot},
    {":", TokenType::kColon},
    {"|", TokenType::kPipe},
    {"<=", TokenType::kComparisonBinaryOperator},
    {">=", TokenType::kComparisonBinaryOperator},
    {"==", TokenType::kComparisonBinaryOperator},
    {"!=", TokenType::kComparisonBinaryOperator},
    {"<", TokenType::kComparisonBinaryOperator},
    {">", TokenType::kComparisonBinaryOperator},
    {"+", TokenType::kAdditiveBinaryOperator},
    {"-", TokenType::kAdditiveBinaryOperator},
    {"~", TokenType::kAdditiveBinaryOperator},
    {"**", TokenType::kExponentiationBinaryOperator},
    {"*", TokenType::kMultiplicativeBinaryOperator},
    {"//", TokenType::kMultiplicativeBinaryOperator},
    {"/", TokenType::kMultiplicativeBinaryOperator},
    {"%", TokenType::kMultiplicativeBinaryOperator},
    {"=", TokenType::kEquals},
};

class Lexer {
 public:
  explicit Lexer(Source src) : src_(std::move(src)), t_(src_.text) {}

  absl::StatusOr<std::vector<Token>> Run();

 private:
  int LineAt(size_t pos) const {
    if (src_.lines.empty()) return 1;
    return src_.lines[pos < src_.lines.size() ? pos : src_.lines.size() - 1];
  }
  absl::Status Error(std::string_view message) const {
    return absl::InvalidArgumentError(Cat("line ", LineAt(pos_), ": ", message));
  }
  bool StartsWith(std::string_view s) const { return t_.compare(pos_, s.size(), s) == 0; }
  TokenType LastType() const { return tokens_.back().type; }
  void Push(TokenType type, std::string value, size_t start) {
    tokens_.push_back(Token{type, std::move(value), LineAt(start)});
  }
  void StripTrailingWhitespace() {
    if (tokens_.empty() || tokens_.back().type != TokenType::kText) return;
    std::string& text = tokens_.back().value;
    text.resize(JsTrimEnd(text).size());
    if (text.empty()) tokens_.pop_back();
  }
  void SkipWhitespace() { pos_ = SkipSpaces(t_, pos_); }
  absl::Status ConsumeComment();
  absl::Status ConsumeString(char quote, size_t start);
  absl::Status ConsumeDigits(std::string* out);

  Source src_;
  std::string_view t_;
  size_t pos_ = 0;
  int curly_depth_ = 0;
  std::vector<Token> tokens_;
};

absl::Status Lexer::ConsumeDigits(std::string* out) {
  while (pos_ < t_.size() && IsDigit(t_[pos_])) {
    out->push_back(t_[pos_++]);
    // The reference rejects a template that ends inside a tag.
    if (pos_ >= t_.size()) return Error("Unexpected end of input");
  }
  return absl::OkStatus();
}

absl::Status Lexer::ConsumeComment() {
  const size_t start = pos_;
  pos_ += 2;
  const bool strip_before = pos_ < t_.size() && t_[pos_] == '-';
  if (strip_before) ++pos_;
  std::string comment;
  while (!(pos_ + 1 < t_.size() && t_[pos_] == '#' && t_[pos_ + 1] == '}')) {
    if (pos_ + 2 >= t_.size()) return Error("Missing end of comment tag");
    comment.push_back(t_[pos_++]);
  }
  const bool strip_after = !comment.empty() && comment.back() == '-';
  if (strip_after) comment.pop_back();
  if (strip_before) StripTrailingWhitespace();
  Push(TokenType::kComment, std::move(comment), start);
  pos_ += 2;
  if (strip_after) SkipWhitespace();
  return absl::OkStatus();
}

absl::Status Lexer::ConsumeString(char quote, size_t start) {
  ++pos_;  // opening quote
  std::string value;
  char32_t pending_high = 0;  // a \u escape that opened a surrogate pair
  auto flush_pending = [&] {
    if (pending_high != 0) AppendUtf8(0xFFFD, &value);
    pending_high = 0;
  };
  while (true) {
    if (pos_ >= t_.size()) return Error("Unexpected end of input");
    const char c = t_[pos_];
    if (c == quote) break;
    if (c != '\\') {
      flush_pending();
      value.push_back(c);
      ++pos_;
      continue;
    }
    if (++pos_ >= t_.size()) return Error("Unexpected end of input");
    const char e = t_[pos_++];
    if (e == 'x' || e == 'u') {
      const size_t len = e == 'x' ? 2 : 4;
      char32_t unit = 0;
      for (size_t i = 0; i < len; ++i) {
        const int d = pos_ + i < t_.size() ? HexDigit(t_[pos_ + i]) : -1;
        if (d < 0) {
          return Error(Cat("Invalid hexadecimal escape sequence: \\", std::string(1, e),
                           t_.substr(pos_, std::min(len, t_.size() - pos_))));
        }
        unit = unit * 16 + static_cast<char32_t>(d);
      }
      pos_ += len;
      if (unit >= 0xDC00 && unit <= 0xDFFF && pending_high != 0) {
        AppendUtf8(0x10000 + ((pending_high - 0xD800) << 10) + (unit - 0xDC00), &value);
        pending_high = 0;
      } else {
        flush_pending();
        if (unit >= 0xD800 && unit <= 0xDBFF) {
          pending_high = unit;
        } else {
          AppendUtf8(unit, &value);  // a lone low surrogate becomes U+FFFD
        }
      }
      continue;
    }
    flush_pending();
    switch (e) {
      case 'n':
        value.push_back('\n');
        break;
      case 't':
        value.push_back('\t');
        break;
      case 'r':
        value.push_back('\r');
        break;
      case 'b':
        value.push_back('\b');
        break;
      case 'f':
        value.push_back('\f');
        break;
      case 'v':
        value.push_back('\v');
        break;
      case '\'':
        value.push_back('\'');
        break;
      case '"':
        value.push_back('"');
        break;
      case '\\':
        value.push_back('\\');
        break;
      default:
        return Error(Cat("Unexpected escaped character: ", std::string(1, e)));
    }
  }
  flush_pending();
  ++pos_;  // closing quote
  Push(TokenType::kStringLiteral, std::move(value), start);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Token>> Lexer::Run() {
  while (pos_ < t_.size()) {
    // Text between tags.
    if (tokens_.empty() || LastType() == TokenType::kCloseStatement ||
        LastType() == TokenType::kCloseExpression || LastType() == TokenType::kComment) {
      const size_t start = pos_;
      while (pos_ < t_.size() &&
             !(t_[pos_] == '{' && pos_ + 1 < t_.size() &&
               (t_[pos_ + 1] == '%' || t_[pos_ + 1] == '{' || t_[pos_ + 1] == '#'))) {
        ++pos_;
      }
      if (pos_ > start) {
        Push(TokenType::kText, std::string(t_.substr(start, pos_ - start)), start);
        continue;
      }
    }
    if (StartsWith("{#")) {
      if (absl::Status s = ConsumeComment(); !s.ok()) return s;
      continue;
    }
    if (StartsWith("{%-")) {
      StripTrailingWhitespace();
      Push(TokenType::kOpenStatement, "{%", pos_);
      pos_ += 3;
      continue;
    }
    if (StartsWith("{{-")) {
      StripTrailingWhitespace();
      Push(TokenType::kOpenExpression, "{{", pos_);
      curly_depth_ = 0;
      pos_ += 3;
      continue;
    }
    SkipWhitespace();
    if (pos_ >= t_.size()) return Error("Unexpected end of input");
    if (StartsWith("-%}")) {
      Push(TokenType::kCloseStatement, "%}", pos_);
      pos_ += 3;
      SkipWhitespace();
      continue;
    }
    if (StartsWith("-}}")) {
      Push(TokenType::kCloseExpression, "}}", pos_);
      pos_ += 3;
      SkipWhitespace();
      continue;
    }
    const size_t start = pos_;
    const char c = t_[pos_];
    if (c == '-' || c == '+') {
      if (tokens_.empty() || LastType() == TokenType::kText) {
        return Error(Cat("Unexpected character: ", std::string(1, c)));
      }
      const TokenType last = LastType();
      const bool binary = last == TokenType::kIdentifier || last == TokenType::kNumericLiteral ||
                          last == TokenType::kStringLiteral || last == TokenType::kCloseParen ||
                          last == TokenType::kCloseSquareBracket;
      if (!binary) {
        ++pos_;
        std::string num;
        if (absl::Status s = ConsumeDigits(&num); !s.ok()) return s;
        if (!num.empty() && pos_ + 1 < t_.size() && t_[pos_] == '.' && IsDigit(t_[pos_ + 1])) {
          ++pos_;
          num.push_back('.');
          if (absl::Status s = ConsumeDigits(&num); !s.ok()) return s;
        }
        if (num.empty()) {
          Push(TokenType::kUnaryOperator, std::string(1, c), start);
        } else {
          Push(TokenType::kNumericLiteral, std::string(1, c) + num, start);
        }
        continue;
      }
    }
    bool matched = false;
    for (const Operator& op : kOperators) {
      if (op.text == "}}" && curly_depth_ > 0) continue;
      if (!StartsWith(op.text)) continue;
      Push(op.type, std::string(op.text), start);
      if (op.type == TokenType::kOpenExpression) {
        curly_depth_ = 0;
      } else if (op.type == TokenType::kOpenCurlyBracket) {
        ++curly_depth_;
      } else if (op.type == TokenType::kCloseCurlyBracket) {
        --curly_depth_;
      }
      pos_ += op.text.size();
      matched = true;
      break;
    }
    if (matched) continue;
    if (c == '\'' || c == '"') {
      if (absl::Status s = ConsumeString(c, start); !s.ok()) return s;
      continue;
    }
    if (IsDigit(c)) {
      std::string num;
      if (absl::Status s = ConsumeDigits(&num); !s.ok()) return s;
      if ((tokens_.empty() || LastType() != TokenType::kDot) && pos_ + 1 < t_.size() &&
          t_[pos_] == '.' && IsDigit(t_[pos_ + 1])) {
        ++pos_;
        num.push_back('.');
        if (absl::Status s = ConsumeDigits(&num); !s.ok()) return s;
      }
      Push(TokenType::kNumericLiteral, std::move(num), start);
      continue;
    }
    if (IsWordChar(c)) {
      std::string word;
      while (pos_ < t_.size() && IsWordChar(t_[pos_])) {
        word.push_back(t_[pos_++]);
        if (pos_ >= t_.size()) return Error("Unexpected end of input");
      }
      Push(TokenType::kIdentifier, std::move(word), start);
      continue;
    }
    char32_t cp;
    const size_t n = DecodeUtf8(t_, pos_, &cp);
    return Error(Cat("Unexpected character: ", t_.substr(pos_, n)));
  }
  return std::move(tokens_);
}

}  // namespace

std::string_view TokenTypeName(TokenType type) {
  switch (type) {
    case TokenType::kText:
      return "Text";
    case TokenType::kNumericLiteral:
      return "NumericLiteral";
    case TokenType::kStringLiteral:
      return "StringLiteral";
    case TokenType::kIdentifier:
      return "Identifier";
    case TokenType::kEquals:
      return "Equals";
    case TokenType::kOpenParen:
      return "OpenParen";
    case TokenType::kCloseParen:
      return "CloseParen";
    case TokenType::kOpenStatement:
      return "OpenStatement";
    case TokenType::kCloseStatement:
      return "CloseStatement";
    case TokenType::kOpenExpression:
      return "OpenExpression";
    case TokenType::kCloseExpression:
      return "CloseExpression";
    case TokenType::kOpenSquareBracket:
      return "OpenSquareBracket";
    case TokenType::kCloseSquareBracket:
      return "CloseSquareBracket";
    case TokenType::kOpenCurlyBracket:
      return "OpenCurlyBracket";
    case TokenType::kCloseCurlyBracket:
      return "CloseCurlyBracket";
    case TokenType::kComma:
      return "Comma";
    case TokenType::kDot:
      return "Dot";
    case TokenType::kColon:
      return "Colon";
    case TokenType::kPipe:
      return "Pipe";
    case TokenType::kAdditiveBinaryOperator:
      return "AdditiveBinaryOperator";
    case TokenType::kMultiplicativeBinaryOperator:
      return "MultiplicativeBinaryOperator";
    case TokenType::kExponentiationBinaryOperator:
      return "ExponentiationBinaryOperator";
    case TokenType::kComparisonBinaryOperator:
      return "ComparisonBinaryOperator";
    case TokenType::kUnaryOperator:
      return "UnaryOperator";
    case TokenType::kComment:
      return "Comment";
  }
  return "Token";
}

absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source) {
  if (source.size() > kMaxTemplateBytes) {
    return absl::InvalidArgumentError("template is larger than 1 MiB");
  }
  if (!IsValidUtf8(source)) return absl::InvalidArgumentError("template is not valid UTF-8");
  return Lexer(Preprocess(source)).Run();
}

}  // namespace tern::gateway::jinja
