// Expression grammar of the parser (see jinja_parser.h for precedence).
#include <charconv>
#include <cmath>
#include <string_view>

#include "absl/status/status.h"
#include "common/status_macros.h"
#include "gateway/chat_template/jinja_parser_impl.h"
#include "gateway/chat_template/jinja_unicode.h"

namespace tern::gateway::jinja::internal {
namespace {

// Tests that take one argument, which may follow the test name without
// parentheses (`x is divisibleby 3`).
bool TestTakesArgument(std::string_view name) {
  for (std::string_view t : {"divisibleby", "equalto", "eq", "ne", "sameas", "gt", "ge", "lt", "le",
                             "greaterthan", "lessthan", "in"}) {
    if (name == t) return true;
  }
  return false;
}

bool IsKeyword(std::string_view word) {
  return word == "and" || word == "or" || word == "not" || word == "in" || word == "is" ||
         word == "if" || word == "else";
}

double ParseNumber(std::string_view text) {
  if (!text.empty() && text[0] == '+') text.remove_prefix(1);
  double value = 0;
  const auto res = std::from_chars(text.data(), text.data() + text.size(), value);
  if (res.ec == std::errc::result_out_of_range) return text[0] == '-' ? -HUGE_VAL : HUGE_VAL;
  return value;
}

BinaryOp ComparisonOp(std::string_view op) {
  if (op == "==") return BinaryOp::kEq;
  if (op == "!=") return BinaryOp::kNe;
  if (op == "<") return BinaryOp::kLt;
  if (op == ">") return BinaryOp::kGt;
  if (op == "<=") return BinaryOp::kLe;
  return BinaryOp::kGe;
}

}  // namespace

absl::StatusOr<ExprPtr> Parser::ParseExpression() {
  NestingGuard guard(&nesting_);
  if (guard.exceeded(kMaxStmtNesting)) return Error("expression is nested too deeply");
  const int line = Line();
  TERN_ASSIGN_OR_RETURN(ExprPtr value, ParseOr());
  if (!IsIdent("if")) return value;
  ++pos_;
  auto e = std::make_unique<Expr>(ExprKind::kSelect, line);
  e->lhs = std::move(value);
  TERN_ASSIGN_OR_RETURN(e->test, ParseOr());
  if (IsIdent("else")) {
    ++pos_;
    e->kind = ExprKind::kTernary;
    TERN_ASSIGN_OR_RETURN(e->rhs, ParseExpression());
  }
  return Done(std::move(e));
}

absl::StatusOr<ExprPtr> Parser::ParseSequence(bool primary) {
  const int line = Line();
  TERN_ASSIGN_OR_RETURN(ExprPtr first, primary ? ParsePrimary() : ParseExpression());
  if (!Is(TokenType::kComma)) return first;
  auto tuple = std::make_unique<Expr>(ExprKind::kTuple, line);
  tuple->items.push_back(std::move(first));
  while (Is(TokenType::kComma)) {
    ++pos_;
    TERN_ASSIGN_OR_RETURN(ExprPtr next, primary ? ParsePrimary() : ParseExpression());
    tuple->items.push_back(std::move(next));
  }
  return Done(std::move(tuple));
}

absl::StatusOr<ExprPtr> Parser::ParseOr() {
  TERN_ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
  while (IsIdent("or")) {
    const int line = Line();
    ++pos_;
    TERN_ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
    TERN_ASSIGN_OR_RETURN(left, Binary(BinaryOp::kOr, std::move(left), std::move(right), line));
  }
  return left;
}

absl::StatusOr<ExprPtr> Parser::ParseAnd() {
  TERN_ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
  while (IsIdent("and")) {
    const int line = Line();
    ++pos_;
    TERN_ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
    TERN_ASSIGN_OR_RETURN(left, Binary(BinaryOp::kAnd, std::move(left), std::move(right), line));
  }
  return left;
}

absl::StatusOr<ExprPtr> Parser::ParseNot() {
  if (!IsIdent("not")) return ParseComparison();
  NestingGuard guard(&nesting_);
  if (guard.exceeded(kMaxStmtNesting)) return Error("expression is nested too deeply");
  auto e = NewExpr(ExprKind::kUnary);
  e->unary_op = UnaryOp::kNot;
  ++pos_;
  TERN_ASSIGN_OR_RETURN(e->lhs, ParseNot());
  return Done(std::move(e));
}

absl::StatusOr<ExprPtr> Parser::ParseComparison() {
  TERN_ASSIGN_OR_RETURN(ExprPtr left, ParseAdditive());
  while (true) {
    const int line = Line();
    BinaryOp op;
    if (IsIdent("not") && IsIdent("in", 1)) {
      op = BinaryOp::kNotIn;
      pos_ += 2;
    } else if (IsIdent("in")) {
      op = BinaryOp::kIn;
      ++pos_;
    } else if (Is(TokenType::kComparisonBinaryOperator)) {
      op = ComparisonOp(tokens_[pos_++].value);
    } else {
      break;
    }
    TERN_ASSIGN_OR_RETURN(ExprPtr right, ParseAdditive());
    TERN_ASSIGN_OR_RETURN(left, Binary(op, std::move(left), std::move(right), line));
  }
  return left;
}

absl::StatusOr<ExprPtr> Parser::ParseAdditive() {
  TERN_ASSIGN_OR_RETURN(ExprPtr left, ParseMultiplicative());
  while (Is(TokenType::kAdditiveBinaryOperator)) {
    const int line = Line();
    const std::string& op = tokens_[pos_++].value;
    const BinaryOp bop = op == "+"   ? BinaryOp::kAdd
                         : op == "-" ? BinaryOp::kSub
                                     : BinaryOp::kConcat;
    TERN_ASSIGN_OR_RETURN(ExprPtr right, ParseMultiplicative());
    TERN_ASSIGN_OR_RETURN(left, Binary(bop, std::move(left), std::move(right), line));
  }
  return left;
}

absl::StatusOr<ExprPtr> Parser::ParseMultiplicative() {
  TERN_ASSIGN_OR_RETURN(ExprPtr left, ParsePower());
  while (Is(TokenType::kMultiplicativeBinaryOperator)) {
    const int line = Line();
    const std::string& op = tokens_[pos_++].value;
    const BinaryOp bop = op == "*"    ? BinaryOp::kMul
                         : op == "/"  ? BinaryOp::kDiv
                         : op == "//" ? BinaryOp::kFloorDiv
                                      : BinaryOp::kMod;
    TERN_ASSIGN_OR_RETURN(ExprPtr right, ParsePower());
    TERN_ASSIGN_OR_RETURN(left, Binary(bop, std::move(left), std::move(right), line));
  }
  return left;
}

absl::StatusOr<ExprPtr> Parser::ParsePower() {
  TERN_ASSIGN_OR_RETURN(ExprPtr left, ParseTest());
  while (Is(TokenType::kExponentiationBinaryOperator)) {
    const int line = Line();
    ++pos_;
    TERN_ASSIGN_OR_RETURN(ExprPtr right, ParseTest());
    TERN_ASSIGN_OR_RETURN(left, Binary(BinaryOp::kPow, std::move(left), std::move(right), line));
  }
  return left;
}

absl::StatusOr<ExprPtr> Parser::ParseTest() {
  TERN_ASSIGN_OR_RETURN(ExprPtr operand, ParseFilter());
  while (IsIdent("is")) {
    auto e = NewExpr(ExprKind::kTest);
    ++pos_;
    if (IsIdent("not")) {
      e->negate = true;
      ++pos_;
    }
    if (!Is(TokenType::kIdentifier)) return Error("Expected identifier for the test");
    e->name = tokens_[pos_++].value;
    if (Is(TokenType::kOpenParen)) {
      e->has_args = true;
      TERN_RETURN_IF_ERROR(ParseArgs(&e->args, /*params=*/false));
    } else if (TestTakesArgument(e->name) && !AtEnd() &&
               (Is(TokenType::kStringLiteral) || Is(TokenType::kNumericLiteral) ||
                (Is(TokenType::kIdentifier) && !IsKeyword(tokens_[pos_].value)))) {
      e->has_args = true;
      Arg arg;
      TERN_ASSIGN_OR_RETURN(arg.value, ParsePrimary());
      e->args.push_back(std::move(arg));
    }
    e->lhs = std::move(operand);
    TERN_ASSIGN_OR_RETURN(operand, Done(std::move(e)));
  }
  return operand;
}

absl::StatusOr<ExprPtr> Parser::ParseFilter() {
  TERN_ASSIGN_OR_RETURN(ExprPtr operand, ParseUnarySign());
  while (Is(TokenType::kPipe)) {
    ++pos_;
    if (!Is(TokenType::kIdentifier)) return Error("Expected identifier for the filter");
    auto e = NewExpr(ExprKind::kFilter);
    e->name = tokens_[pos_++].value;
    if (Is(TokenType::kOpenParen)) {
      e->has_args = true;
      TERN_RETURN_IF_ERROR(ParseArgs(&e->args, /*params=*/false));
    }
    e->lhs = std::move(operand);
    TERN_ASSIGN_OR_RETURN(operand, Done(std::move(e)));
  }
  return operand;
}

absl::StatusOr<ExprPtr> Parser::ParseUnarySign() {
  if ((Is(TokenType::kUnaryOperator) || Is(TokenType::kAdditiveBinaryOperator)) &&
      (tokens_[pos_].value == "-" || tokens_[pos_].value == "+")) {
    NestingGuard guard(&nesting_);
    if (guard.exceeded(kMaxStmtNesting)) return Error("expression is nested too deeply");
    auto e = NewExpr(ExprKind::kUnary);
    e->unary_op = tokens_[pos_++].value == "-" ? UnaryOp::kNeg : UnaryOp::kPos;
    TERN_ASSIGN_OR_RETURN(e->lhs, ParseUnarySign());
    return Done(std::move(e));
  }
  return ParseCallMember();
}

absl::StatusOr<ExprPtr> Parser::ParseCallMember() {
  TERN_ASSIGN_OR_RETURN(ExprPtr primary, ParsePrimary());
  TERN_ASSIGN_OR_RETURN(ExprPtr member, ParseMember(std::move(primary)));
  if (!Is(TokenType::kOpenParen)) return member;
  return ParseCall(std::move(member));
}

absl::StatusOr<ExprPtr> Parser::ParseCall(ExprPtr callee) {
  while (Is(TokenType::kOpenParen)) {
    auto call = NewExpr(ExprKind::kCall);
    call->lhs = std::move(callee);
    TERN_RETURN_IF_ERROR(ParseArgs(&call->args, /*params=*/false));
    TERN_ASSIGN_OR_RETURN(ExprPtr done, Done(std::move(call)));
    TERN_ASSIGN_OR_RETURN(callee, ParseMember(std::move(done)));
  }
  return callee;
}

absl::Status Parser::ParseArgs(std::vector<Arg>* args, bool params) {
  TERN_RETURN_IF_ERROR(
      Expect(TokenType::kOpenParen, "Expected opening parenthesis for arguments list"));
  bool saw_keyword = false;
  bool saw_spread = false;
  while (!Is(TokenType::kCloseParen)) {
    if (AtEnd()) return Error("Unexpected end of template in arguments list");
    Arg arg;
    if (Is(TokenType::kExponentiationBinaryOperator)) {
      ++pos_;
      arg.kind = Arg::Kind::kKeywordSpread;
      TERN_ASSIGN_OR_RETURN(arg.value, ParseExpression());
      args->push_back(std::move(arg));
      if (Is(TokenType::kComma)) ++pos_;
      if (!Is(TokenType::kCloseParen)) {
        return Error("Expected closing parenthesis: `**` must be applied to the final argument");
      }
      break;
    }
    if (Is(TokenType::kMultiplicativeBinaryOperator) && tokens_[pos_].value == "*") {
      if (saw_spread) return Error("Only one `*` argument unpacking is allowed");
      saw_spread = true;
      ++pos_;
      arg.kind = Arg::Kind::kSpread;
      TERN_ASSIGN_OR_RETURN(arg.value, ParseExpression());
    } else {
      TERN_ASSIGN_OR_RETURN(arg.value, ParseExpression());
      if (Is(TokenType::kEquals)) {
        ++pos_;
        if (arg.value->kind != ExprKind::kIdentifier) {
          return Error(params ? "Expected identifier for parameter declaration"
                              : "Expected identifier for keyword argument");
        }
        arg.kind = Arg::Kind::kKeyword;
        arg.name = arg.value->name;
        TERN_ASSIGN_OR_RETURN(arg.value, ParseExpression());
        saw_keyword = true;
      } else if (saw_keyword) {
        return Error(params ? "Non-default argument follows default argument"
                            : "Positional arguments must come before keyword arguments");
      } else if (saw_spread) {
        return Error("Positional arguments must not follow `*` argument unpacking");
      }
    }
    args->push_back(std::move(arg));
    if (Is(TokenType::kComma)) ++pos_;
  }
  return Expect(TokenType::kCloseParen, "Expected closing parenthesis for arguments list");
}

absl::StatusOr<ExprPtr> Parser::ParseMember(ExprPtr object) {
  while (Is(TokenType::kDot) || Is(TokenType::kOpenSquareBracket)) {
    auto e = NewExpr(ExprKind::kMember);
    if (tokens_[pos_++].type == TokenType::kDot) {
      if (Is(TokenType::kIdentifier)) {
        e->name = tokens_[pos_++].value;
      } else if (Is(TokenType::kNumericLiteral) &&
                 tokens_[pos_].value.find('.') == std::string::npos) {
        auto index = NewExpr(ExprKind::kLiteral);
        index->value = Value::Int(ParseNumber(tokens_[pos_++].value));
        e->computed = true;
        TERN_ASSIGN_OR_RETURN(e->rhs, Done(std::move(index)));
      } else {
        return Error("Expected identifier or integer following dot operator");
      }
    } else {
      e->computed = true;
      std::vector<ExprPtr> parts;
      while (!Is(TokenType::kCloseSquareBracket)) {
        if (AtEnd()) return Error("Unexpected end of template in subscript");
        if (Is(TokenType::kColon)) {
          parts.push_back(nullptr);
          ++pos_;
          e->is_slice = true;
        } else {
          TERN_ASSIGN_OR_RETURN(ExprPtr part, ParseExpression());
          parts.push_back(std::move(part));
          if (Is(TokenType::kColon)) {
            ++pos_;
            e->is_slice = true;
          }
        }
      }
      if (parts.empty()) return Error("Expected at least one argument for member/slice expression");
      if (e->is_slice) {
        if (parts.size() > 3) return Error("Expected 0-3 arguments for slice expression");
        parts.resize(3);
        e->slice_start = std::move(parts[0]);
        e->slice_stop = std::move(parts[1]);
        e->slice_step = std::move(parts[2]);
      } else {
        e->rhs = std::move(parts[0]);
      }
      TERN_RETURN_IF_ERROR(
          Expect(TokenType::kCloseSquareBracket, "Expected closing square bracket"));
    }
    e->lhs = std::move(object);
    TERN_ASSIGN_OR_RETURN(object, Done(std::move(e)));
  }
  return object;
}

absl::StatusOr<ExprPtr> Parser::ParsePrimary() {
  if (AtEnd()) return Error("Unexpected end of template");
  const Token& t = tokens_[pos_++];
  switch (t.type) {
    case TokenType::kNumericLiteral: {
      auto e = std::make_unique<Expr>(ExprKind::kLiteral, t.line);
      const double v = ParseNumber(t.value);
      e->value = t.value.find('.') != std::string::npos ? Value::Float(v) : Value::Int(v);
      return Done(std::move(e));
    }
    case TokenType::kStringLiteral: {
      std::string text = t.value;
      while (Is(TokenType::kStringLiteral)) text += tokens_[pos_++].value;
      auto e = std::make_unique<Expr>(ExprKind::kLiteral, t.line);
      e->value = Value::Str(std::move(text));
      return Done(std::move(e));
    }
    case TokenType::kIdentifier: {
      auto e = std::make_unique<Expr>(ExprKind::kIdentifier, t.line);
      e->name = t.value;
      return Done(std::move(e));
    }
    case TokenType::kOpenParen: {
      TERN_ASSIGN_OR_RETURN(ExprPtr inner, ParseSequence(/*primary=*/false));
      TERN_RETURN_IF_ERROR(Expect(TokenType::kCloseParen, "Expected closing parenthesis"));
      return inner;
    }
    case TokenType::kOpenSquareBracket: {
      auto e = std::make_unique<Expr>(ExprKind::kArray, t.line);
      while (!Is(TokenType::kCloseSquareBracket)) {
        if (AtEnd()) return Error("Unexpected end of template in list literal");
        TERN_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
        e->items.push_back(std::move(item));
        if (Is(TokenType::kComma)) ++pos_;
      }
      ++pos_;
      return Done(std::move(e));
    }
    case TokenType::kOpenCurlyBracket: {
      auto e = std::make_unique<Expr>(ExprKind::kObject, t.line);
      while (!Is(TokenType::kCloseCurlyBracket)) {
        if (AtEnd()) return Error("Unexpected end of template in dict literal");
        TERN_ASSIGN_OR_RETURN(ExprPtr key, ParseExpression());
        TERN_RETURN_IF_ERROR(
            Expect(TokenType::kColon, "Expected colon between key and value in object literal"));
        TERN_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
        e->entries.emplace_back(std::move(key), std::move(value));
        if (Is(TokenType::kComma)) ++pos_;
      }
      ++pos_;
      return Done(std::move(e));
    }
    default:
      --pos_;
      return Error(Cat("Unexpected token: ", TokenTypeName(t.type)));
  }
}

}  // namespace tern::gateway::jinja::internal
