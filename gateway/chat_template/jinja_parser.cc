#include "gateway/chat_template/jinja_parser.h"

#include <algorithm>
#include <initializer_list>
#include <string_view>

#include "absl/status/status.h"
#include "common/status_macros.h"
#include "gateway/chat_template/jinja_parser_impl.h"
#include "gateway/chat_template/jinja_unicode.h"

namespace tern::gateway::jinja {
namespace internal {
namespace {

bool ReadsName(const StmtList& body, std::string_view name);

bool ExprReadsName(const Expr* e, std::string_view name) {
  if (e == nullptr) return false;
  if (e->kind == ExprKind::kIdentifier && e->name == name) return true;
  if (ExprReadsName(e->lhs.get(), name) || ExprReadsName(e->rhs.get(), name) ||
      ExprReadsName(e->test.get(), name) || ExprReadsName(e->slice_start.get(), name) ||
      ExprReadsName(e->slice_stop.get(), name) || ExprReadsName(e->slice_step.get(), name)) {
    return true;
  }
  for (const auto& item : e->items) {
    if (ExprReadsName(item.get(), name)) return true;
  }
  for (const auto& [k, v] : e->entries) {
    if (ExprReadsName(k.get(), name) || ExprReadsName(v.get(), name)) return true;
  }
  for (const auto& arg : e->args) {
    if (ExprReadsName(arg.value.get(), name)) return true;
  }
  return false;
}

bool ReadsName(const StmtList& body, std::string_view name) {
  for (const auto& s : body) {
    if (ExprReadsName(s->expr.get(), name) || ExprReadsName(s->loop_filter.get(), name) ||
        ReadsName(s->body, name) || ReadsName(s->else_body, name)) {
      return true;
    }
    for (const auto& b : s->branches) {
      if (ExprReadsName(b.condition.get(), name) || ReadsName(b.body, name)) return true;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Stmt>> Parser::ParseAny() {
  NestingGuard guard(&nesting_);
  if (guard.exceeded(kMaxStmtNesting)) return Error("template is nested too deeply");
  const Token& t = tokens_[pos_];
  switch (t.type) {
    case TokenType::kComment:
      ++pos_;
      return nullptr;
    case TokenType::kText: {
      auto stmt = std::make_unique<Stmt>(StmtKind::kText, t.line);
      stmt->text = std::make_shared<const std::string>(t.value);
      ++pos_;
      return stmt;
    }
    case TokenType::kOpenStatement:
      return ParseStatement();
    case TokenType::kOpenExpression: {
      auto stmt = std::make_unique<Stmt>(StmtKind::kOutput, t.line);
      ++pos_;
      TERN_ASSIGN_OR_RETURN(stmt->expr, ParseExpression());
      TERN_RETURN_IF_ERROR(
          Expect(TokenType::kCloseExpression, "Expected closing expression token"));
      return stmt;
    }
    default:
      return Error(Cat("Unexpected token type: ", TokenTypeName(t.type)));
  }
}

absl::StatusOr<std::unique_ptr<Stmt>> Parser::ParseStatement() {
  ++pos_;  // {%
  if (AtEnd()) return Error("Unexpected end of template");
  if (tokens_[pos_].type != TokenType::kIdentifier) {
    return Error(Cat("Unknown statement, got ", TokenTypeName(tokens_[pos_].type)));
  }
  const std::string name = tokens_[pos_].value;
  ++pos_;
  if (name == "set") return ParseSet();
  if (name == "if") return ParseIf();
  if (name == "for") return ParseFor();
  if (name == "macro") return ParseMacro();
  if (name == "call") return ParseCallBlock();
  if (name == "filter") return ParseFilterBlock();
  if (name == "break" || name == "continue") {
    auto stmt =
        std::make_unique<Stmt>(name == "break" ? StmtKind::kBreak : StmtKind::kContinue, Line());
    TERN_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "Expected closing statement token"));
    return stmt;
  }
  --pos_;
  return Error(Cat("Unknown statement type: ", name));
}

absl::StatusOr<std::unique_ptr<Stmt>> Parser::ParseSet() {
  auto stmt = std::make_unique<Stmt>(StmtKind::kSet, Line());
  TERN_ASSIGN_OR_RETURN(stmt->target, ParseSequence(/*primary=*/false));
  if (Is(TokenType::kEquals)) {
    ++pos_;
    TERN_ASSIGN_OR_RETURN(stmt->expr, ParseSequence(/*primary=*/false));
  } else {
    TERN_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "Expected %} token"));
    TERN_RETURN_IF_ERROR(ParseBody({"endset"}, &stmt->body));
    pos_ += 1;  // {%
    TERN_RETURN_IF_ERROR(ExpectIdent("endset"));
  }
  TERN_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "Expected closing statement token"));
  return stmt;
}

absl::StatusOr<std::unique_ptr<Stmt>> Parser::ParseIf() {
  auto stmt = std::make_unique<Stmt>(StmtKind::kIf, Line());
  while (true) {
    IfBranch branch;
    TERN_ASSIGN_OR_RETURN(branch.condition, ParseExpression());
    TERN_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "Expected closing statement token"));
    TERN_RETURN_IF_ERROR(ParseBody({"endif", "elif", "else"}, &branch.body));
    stmt->branches.push_back(std::move(branch));
    if (!IsStatement({"elif"})) break;
    pos_ += 2;  // {% elif
  }
  if (IsStatement({"else"})) {
    pos_ += 2;  // {% else
    TERN_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "Expected closing statement token"));
    TERN_RETURN_IF_ERROR(ParseBody({"endif"}, &stmt->else_body));
  }
  TERN_RETURN_IF_ERROR(ExpectEndTag("endif"));
  return stmt;
}

absl::StatusOr<std::unique_ptr<Stmt>> Parser::ParseFor() {
  auto stmt = std::make_unique<Stmt>(StmtKind::kFor, Line());
  TERN_ASSIGN_OR_RETURN(ExprPtr vars, ParseSequence(/*primary=*/true));
  if (vars->kind == ExprKind::kIdentifier) {
    stmt->loop_vars.push_back(vars->name);
  } else if (vars->kind == ExprKind::kTuple) {
    stmt->loop_tuple = true;
    for (const auto& item : vars->items) {
      if (item->kind != ExprKind::kIdentifier) {
        return Error("Cannot unpack to a non-identifier loop variable");
      }
      stmt->loop_vars.push_back(item->name);
    }
  } else {
    return Error("Expected identifier/tuple for the loop variable");
  }
  if (!IsIdent("in")) return Error("Expected `in` keyword following loop variable");
  ++pos_;
  TERN_ASSIGN_OR_RETURN(ExprPtr iterable, ParseExpression());
  if (iterable->kind == ExprKind::kSelect) {
    stmt->loop_filter = std::move(iterable->test);
    stmt->expr = std::move(iterable->lhs);
  } else {
    stmt->expr = std::move(iterable);
  }
  TERN_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "Expected closing statement token"));
  TERN_RETURN_IF_ERROR(ParseBody({"endfor", "else"}, &stmt->body));
  if (IsStatement({"else"})) {
    pos_ += 2;
    TERN_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "Expected closing statement token"));
    TERN_RETURN_IF_ERROR(ParseBody({"endfor"}, &stmt->else_body));
  }
  TERN_RETURN_IF_ERROR(ExpectEndTag("endfor"));
  return stmt;
}

absl::Status Parser::ParseParams(std::vector<Param>* params) {
  std::vector<Arg> args;
  TERN_RETURN_IF_ERROR(ParseArgs(&args, /*params=*/true));
  bool saw_default = false;
  for (Arg& arg : args) {
    Param param;
    if (arg.kind == Arg::Kind::kKeyword) {
      param.name = arg.name;
      param.default_value = std::move(arg.value);
      saw_default = true;
    } else if (arg.kind == Arg::Kind::kPositional && arg.value->kind == ExprKind::kIdentifier) {
      if (saw_default) return Error("Non-default argument follows default argument");
      param.name = arg.value->name;
    } else {
      return Error("Expected identifier for parameter declaration");
    }
    for (const Param& p : *params) {
      if (p.name == param.name) return Error(Cat("Duplicate parameter name: ", p.name));
    }
    params->push_back(std::move(param));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Stmt>> Parser::ParseMacro() {
  auto stmt = std::make_unique<Stmt>(StmtKind::kMacro, Line());
  if (!Is(TokenType::kIdentifier)) return Error("Expected identifier following macro statement");
  stmt->name = tokens_[pos_++].value;
  TERN_RETURN_IF_ERROR(ParseParams(&stmt->params));
  TERN_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "Expected closing statement token"));
  TERN_RETURN_IF_ERROR(ParseBody({"endmacro"}, &stmt->body));
  TERN_RETURN_IF_ERROR(ExpectEndTag("endmacro"));
  stmt->uses_kwargs = ReadsName(stmt->body, "kwargs");
  stmt->uses_varargs = ReadsName(stmt->body, "varargs");
  return stmt;
}

absl::StatusOr<std::unique_ptr<Stmt>> Parser::ParseCallBlock() {
  auto stmt = std::make_unique<Stmt>(StmtKind::kCallBlock, Line());
  if (Is(TokenType::kOpenParen)) TERN_RETURN_IF_ERROR(ParseParams(&stmt->params));
  if (!Is(TokenType::kIdentifier)) return Error("Expected identifier following call statement");
  auto call = NewExpr(ExprKind::kCall);
  auto callee = NewExpr(ExprKind::kIdentifier);
  callee->name = tokens_[pos_++].value;
  TERN_ASSIGN_OR_RETURN(call->lhs, Done(std::move(callee)));
  TERN_RETURN_IF_ERROR(ParseArgs(&call->args, /*params=*/false));
  TERN_ASSIGN_OR_RETURN(stmt->expr, Done(std::move(call)));
  TERN_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "Expected closing statement token"));
  TERN_RETURN_IF_ERROR(ParseBody({"endcall"}, &stmt->body));
  TERN_RETURN_IF_ERROR(ExpectEndTag("endcall"));
  stmt->uses_kwargs = ReadsName(stmt->body, "kwargs");
  stmt->uses_varargs = ReadsName(stmt->body, "varargs");
  return stmt;
}

absl::StatusOr<std::unique_ptr<Stmt>> Parser::ParseFilterBlock() {
  auto stmt = std::make_unique<Stmt>(StmtKind::kFilterBlock, Line());
  if (!Is(TokenType::kIdentifier)) return Error("Expected identifier for the filter");
  auto filter = NewExpr(ExprKind::kFilter);
  filter->name = tokens_[pos_++].value;
  if (Is(TokenType::kOpenParen)) {
    filter->has_args = true;
    TERN_RETURN_IF_ERROR(ParseArgs(&filter->args, /*params=*/false));
  }
  TERN_ASSIGN_OR_RETURN(stmt->expr, Done(std::move(filter)));
  TERN_RETURN_IF_ERROR(Expect(TokenType::kCloseStatement, "Expected closing statement token"));
  TERN_RETURN_IF_ERROR(ParseBody({"endfilter"}, &stmt->body));
  TERN_RETURN_IF_ERROR(ExpectEndTag("endfilter"));
  return stmt;
}

}  // namespace internal

absl::StatusOr<StmtList> Parse(const std::vector<Token>& tokens) {
  return internal::Parser(tokens).ParseProgram();
}

}  // namespace tern::gateway::jinja
