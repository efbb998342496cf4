// Syntax tree of a parsed chat template. Built once by the parser, then only
// read: a tree may be rendered by many threads at once.
#ifndef TERN_GATEWAY_CHAT_TEMPLATE_JINJA_AST_H_
#define TERN_GATEWAY_CHAT_TEMPLATE_JINJA_AST_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gateway/chat_template/jinja_value.h"

namespace tern::gateway::jinja {

struct Expr;
struct Stmt;
using ExprPtr = std::unique_ptr<Expr>;
using StmtList = std::vector<std::unique_ptr<Stmt>>;

enum class ExprKind {
  kLiteral,     // value
  kIdentifier,  // name
  kArray,       // items
  kTuple,       // items
  kObject,      // entries
  kMember,      // object.name, object[index], object[start:stop:step]
  kCall,        // callee(args)
  kBinary,      // left op right
  kUnary,       // op operand
  kFilter,      // operand | name(args)
  kTest,        // operand is [not] name(args)
  kSelect,      // lhs if test            (undefined when test is false)
  kTernary,     // lhs if test else rhs
};

enum class BinaryOp {
  kAnd,
  kOr,
  kEq,
  kNe,
  kLt,
  kGt,
  kLe,
  kGe,
  kIn,
  kNotIn,
  kAdd,
  kSub,
  kConcat,
  kMul,
  kDiv,
  kFloorDiv,
  kMod,
  kPow,
};

enum class UnaryOp { kNot, kNeg, kPos };

struct Arg {
  enum class Kind { kPositional, kKeyword, kSpread, kKeywordSpread };
  Kind kind = Kind::kPositional;
  std::string name;  // kKeyword
  ExprPtr value;
};

struct Expr {
  ExprKind kind;
  int line = 0;
  int depth = 1;  // height of the tree rooted here

  Value value;       // kLiteral
  std::string name;  // kIdentifier, kMember (dot access), kFilter, kTest

  std::vector<ExprPtr> items;                        // kArray, kTuple
  std::vector<std::pair<ExprPtr, ExprPtr>> entries;  // kObject

  ExprPtr lhs;   // kMember object, kCall callee, kBinary left, kUnary/kFilter/kTest
                 // operand, kSelect/kTernary value when true
  ExprPtr rhs;   // kMember computed index, kBinary right, kTernary value when false
  ExprPtr test;  // kSelect/kTernary condition

  // kMember
  bool computed = false;  // [] access
  bool is_slice = false;
  ExprPtr slice_start, slice_stop, slice_step;

  // kCall args; kFilter/kTest args when has_args
  std::vector<Arg> args;
  bool has_args = false;

  BinaryOp binary_op = BinaryOp::kAdd;
  UnaryOp unary_op = UnaryOp::kNot;
  bool negate = false;  // kTest

  Expr(ExprKind k, int l) : kind(k), line(l) {}
};

enum class StmtKind {
  kText,         // text
  kOutput,       // {{ expr }}
  kSet,          // {% set target = expr %} or {% set target %}body{% endset %}
  kIf,           // branches, else_body
  kFor,          // {% for targets in iterable [if filter] %}body{% else %}else_body
  kMacro,        // {% macro name(params) %}body
  kCallBlock,    // {% call(params) callee(args) %}body
  kFilterBlock,  // {% filter name(args) %}body
  kBreak,
  kContinue,
};

struct Param {
  std::string name;
  ExprPtr default_value;  // may be null
};

struct IfBranch {
  ExprPtr condition;
  StmtList body;
};

struct Stmt {
  StmtKind kind;
  int line = 0;

  std::shared_ptr<const std::string> text;  // kText
  ExprPtr expr;         // kOutput value; kSet value (null for block set); kFor iterable;
                        // kCallBlock call; kFilterBlock filter (a kFilter with null operand)
  ExprPtr target;       // kSet target (identifier, tuple or member)
  ExprPtr loop_filter;  // kFor `if` clause

  std::vector<std::string> loop_vars;  // kFor
  bool loop_tuple = false;

  std::string name;           // kMacro
  std::vector<Param> params;  // kMacro, kCallBlock caller params
  bool uses_kwargs = false;   // kMacro, kCallBlock: body reads `kwargs`
  bool uses_varargs = false;  // kMacro, kCallBlock: body reads `varargs`

  std::vector<IfBranch> branches;  // kIf
  StmtList body;                   // kSet (block), kFor, kMacro, kCallBlock, kFilterBlock
  StmtList else_body;              // kIf, kFor

  Stmt(StmtKind k, int l) : kind(k), line(l) {}
};

}  // namespace tern::gateway::jinja

#endif  // TERN_GATEWAY_CHAT_TEMPLATE_JINJA_AST_H_
