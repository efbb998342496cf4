// Internal to the parser (jinja_parser.cc: statements, jinja_parser_expr.cc:
// expressions). Not part of the engine's interface.
#ifndef TERN_GATEWAY_CHAT_TEMPLATE_JINJA_PARSER_IMPL_H_
#define TERN_GATEWAY_CHAT_TEMPLATE_JINJA_PARSER_IMPL_H_

#include <algorithm>
#include <initializer_list>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/status_macros.h"
#include "gateway/chat_template/jinja_ast.h"
#include "gateway/chat_template/jinja_lexer.h"
#include "gateway/chat_template/jinja_parser.h"
#include "gateway/chat_template/jinja_unicode.h"

namespace tern::gateway::jinja::internal {

inline int ChildDepth(const ExprPtr& e) { return e == nullptr ? 0 : e->depth; }

// Guards the recursion depth of the parser itself.
class NestingGuard {
 public:
  explicit NestingGuard(int* nesting) : nesting_(nesting) { ++*nesting_; }
  ~NestingGuard() { --*nesting_; }
  bool exceeded(int limit) const { return *nesting_ > limit; }

 private:
  int* nesting_;
};

// Recursive-descent parser over a token vector; one per Parse call.
class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : tokens_(tokens) {}

  absl::StatusOr<StmtList> ParseProgram() {
    StmtList program;
    while (!AtEnd()) {
      TERN_ASSIGN_OR_RETURN(auto stmt, ParseAny());
      if (stmt != nullptr) program.push_back(std::move(stmt));
    }
    return program;
  }

 private:
  // ---- token helpers ----
  bool AtEnd() const { return pos_ >= tokens_.size(); }
  int Line() const {
    if (tokens_.empty()) return 1;
    return tokens_[std::min(pos_, tokens_.size() - 1)].line;
  }
  absl::Status Error(std::string_view message) const {
    return absl::InvalidArgumentError(Cat("line ", Line(), ": ", message));
  }
  bool Is(TokenType type) const { return !AtEnd() && tokens_[pos_].type == type; }
  bool IsIdent(std::string_view name, size_t offset = 0) const {
    return pos_ + offset < tokens_.size() &&
           tokens_[pos_ + offset].type == TokenType::kIdentifier &&
           tokens_[pos_ + offset].value == name;
  }
  bool IsStatement(std::initializer_list<std::string_view> names) const {
    if (!Is(TokenType::kOpenStatement) || pos_ + 1 >= tokens_.size()) return false;
    const Token& t = tokens_[pos_ + 1];
    if (t.type != TokenType::kIdentifier) return false;
    return std::find(names.begin(), names.end(), t.value) != names.end();
  }
  absl::Status Expect(TokenType type, std::string_view what) {
    if (AtEnd()) return Error(Cat("Unexpected end of template: ", what));
    if (tokens_[pos_].type != type) {
      return Error(
          Cat(what, ". ", TokenTypeName(tokens_[pos_].type), " !== ", TokenTypeName(type), "."));
    }
    ++pos_;
    return absl::OkStatus();
  }
  absl::Status ExpectIdent(std::string_view name) {
    if (!IsIdent(name)) return Error(Cat("Expected ", name));
    ++pos_;
    return absl::OkStatus();
  }
  absl::Status ExpectEndTag(std::string_view name) {
    TERN_RETURN_IF_ERROR(Expect(TokenType::kOpenStatement, Cat("Expected {% ", name, " %}")));
    TERN_RETURN_IF_ERROR(ExpectIdent(name));
    return Expect(TokenType::kCloseStatement, "Expected closing statement token");
  }
  // Parses statements until one of `ends` opens a tag.
  absl::Status ParseBody(std::initializer_list<std::string_view> ends, StmtList* body) {
    while (!IsStatement(ends)) {
      if (AtEnd()) {
        return Error(Cat("Unexpected end of template: expected {% ", *ends.begin(), " %}"));
      }
      TERN_ASSIGN_OR_RETURN(auto stmt, ParseAny());
      if (stmt != nullptr) body->push_back(std::move(stmt));
    }
    return absl::OkStatus();
  }
  ExprPtr NewExpr(ExprKind kind) { return std::make_unique<Expr>(kind, Line()); }
  // Records the depth of a finished node; trees deeper than kMaxExprDepth are
  // rejected so evaluation recursion stays bounded.
  absl::StatusOr<ExprPtr> Done(ExprPtr e) {
    int depth = std::max({ChildDepth(e->lhs), ChildDepth(e->rhs), ChildDepth(e->test),
                          ChildDepth(e->slice_start), ChildDepth(e->slice_stop),
                          ChildDepth(e->slice_step)});
    for (const auto& item : e->items) depth = std::max(depth, ChildDepth(item));
    for (const auto& [k, v] : e->entries) depth = std::max({depth, ChildDepth(k), ChildDepth(v)});
    for (const auto& arg : e->args) depth = std::max(depth, ChildDepth(arg.value));
    e->depth = depth + 1;
    if (e->depth > kMaxExprDepth) return Error("expression is nested too deeply");
    return e;
  }

  // ---- statements ----
  absl::StatusOr<std::unique_ptr<Stmt>> ParseAny();
  absl::StatusOr<std::unique_ptr<Stmt>> ParseStatement();
  absl::StatusOr<std::unique_ptr<Stmt>> ParseSet();
  absl::StatusOr<std::unique_ptr<Stmt>> ParseIf();
  absl::StatusOr<std::unique_ptr<Stmt>> ParseFor();
  absl::StatusOr<std::unique_ptr<Stmt>> ParseMacro();
  absl::StatusOr<std::unique_ptr<Stmt>> ParseCallBlock();
  absl::StatusOr<std::unique_ptr<Stmt>> ParseFilterBlock();
  absl::Status ParseParams(std::vector<Param>* params);

  // ---- expressions ----
  absl::StatusOr<ExprPtr> ParseExpression();
  absl::StatusOr<ExprPtr> ParseSequence(bool primary);
  absl::StatusOr<ExprPtr> ParseOr();
  absl::StatusOr<ExprPtr> ParseAnd();
  absl::StatusOr<ExprPtr> ParseNot();
  absl::StatusOr<ExprPtr> ParseComparison();
  absl::StatusOr<ExprPtr> ParseAdditive();
  absl::StatusOr<ExprPtr> ParseMultiplicative();
  absl::StatusOr<ExprPtr> ParsePower();
  absl::StatusOr<ExprPtr> ParseTest();
  absl::StatusOr<ExprPtr> ParseFilter();
  absl::StatusOr<ExprPtr> ParseUnarySign();
  absl::StatusOr<ExprPtr> ParseCallMember();
  absl::StatusOr<ExprPtr> ParseCall(ExprPtr callee);
  absl::StatusOr<ExprPtr> ParseMember(ExprPtr object);
  absl::StatusOr<ExprPtr> ParsePrimary();
  absl::Status ParseArgs(std::vector<Arg>* args, bool params);
  absl::StatusOr<ExprPtr> Binary(BinaryOp op, ExprPtr left, ExprPtr right, int line) {
    auto e = std::make_unique<Expr>(ExprKind::kBinary, line);
    e->binary_op = op;
    e->lhs = std::move(left);
    e->rhs = std::move(right);
    return Done(std::move(e));
  }

  const std::vector<Token>& tokens_;
  size_t pos_ = 0;
  int nesting_ = 0;  // recursion depth of statement and expression parsing
};

}  // namespace tern::gateway::jinja::internal

#endif  // TERN_GATEWAY_CHAT_TEMPLATE_JINJA_PARSER_IMPL_H_
