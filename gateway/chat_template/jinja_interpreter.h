// Tree-walking interpreter of the chat-template engine.
//
// One Interpreter renders one template once: it owns the mutable state of a
// render (scopes, counters, namespaces) and is used by a single thread. The
// syntax tree it walks is only read, so concurrent renders of one compiled
// template each use their own Interpreter.
//
// Every render is bounded: evaluation steps, recursion depth, macro call
// depth, output size, bytes and list items built, namespaces created. A
// template that exceeds a bound fails with ResourceExhausted; template
// errors fail with InvalidArgument("line N: ..."); raise_exception(msg)
// fails with Aborted(msg), which ChatTemplate reports as InvalidArgument.
#ifndef TERN_GATEWAY_CHAT_TEMPLATE_JINJA_INTERPRETER_H_
#define TERN_GATEWAY_CHAT_TEMPLATE_JINJA_INTERPRETER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gateway/chat_template/jinja_ast.h"
#include "gateway/chat_template/jinja_value.h"

namespace tern::gateway::jinja {

struct RenderLimits {
  size_t max_output_bytes = size_t{64} << 20;      // also the largest string value
  size_t max_allocated_bytes = size_t{256} << 20;  // bytes of strings built, cumulative
  size_t max_list_items = size_t{4} << 20;         // list items built, cumulative
  uint64_t max_steps = 5'000'000;                  // expressions + statements evaluated
  int max_eval_depth = 800;                        // nested evaluation frames
  int max_call_depth = 64;                         // nested macro calls
  size_t max_namespaces = 10'000;
};

// A variable scope. Lookups fall back to the parent scope.
class Env {
 public:
  explicit Env(std::shared_ptr<Env> parent) : parent_(std::move(parent)) {}
  const Value* Lookup(std::string_view name) const;
  void Set(std::string name, Value value) { vars_[std::move(name)] = std::move(value); }
  bool HasLocal(std::string_view name) const;

 private:
  std::shared_ptr<Env> parent_;
  absl::flat_hash_map<std::string, Value> vars_;
};

class Interpreter {
 public:
  explicit Interpreter(const RenderLimits& limits) : limits_(limits) {}
  ~Interpreter();
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  // Renders `program` with `globals` as the outermost scope.
  absl::StatusOr<std::string> Render(const StmtList& program, std::shared_ptr<Env> globals);

  // ---- services for filters and builtins ----
  const RenderLimits& limits() const { return limits_; }
  // A string value, counted against the size and allocation budgets.
  absl::StatusOr<Value> MakeString(std::string s);
  // A list value, counted against the item budget.
  absl::StatusOr<Value> MakeArray(std::vector<Value> items);
  // A namespace; cleared when the render ends so cycles through it are freed.
  absl::StatusOr<Value> MakeNamespace(std::vector<std::pair<std::string, Value>> entries);
  absl::Status ChargeBytes(size_t bytes);
  absl::Status ChargeItems(size_t items);
  absl::Status Step();
  // Evaluates call arguments (positional, `*spread`, keyword, `**spread`).
  absl::StatusOr<CallArgs> EvalArgs(const std::vector<Arg>& args, const std::shared_ptr<Env>& env);
  absl::StatusOr<Value> Eval(const Expr& e, const std::shared_ptr<Env>& env);
  absl::StatusOr<Value> CallFunction(const Value& fn, CallArgs& args,
                                     const std::shared_ptr<Env>& env);
  // Renders a macro or call-block body with its parameters bound.
  absl::StatusOr<Value> InvokeBody(const Stmt& def, std::string_view display_name, CallArgs& args,
                                   const std::shared_ptr<Env>& scope);

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  absl::StatusOr<Flow> ExecBlock(const StmtList& block, const std::shared_ptr<Env>& env,
                                 std::string* out);
  absl::StatusOr<Flow> Exec(const Stmt& s, const std::shared_ptr<Env>& env, std::string* out);
  absl::StatusOr<Flow> ExecFor(const Stmt& s, const std::shared_ptr<Env>& env, std::string* out);
  absl::Status ExecSet(const Stmt& s, const std::shared_ptr<Env>& env);
  absl::Status ExecCallBlock(const Stmt& s, const std::shared_ptr<Env>& env, std::string* out);
  absl::StatusOr<std::string> RenderToString(const StmtList& block,
                                             const std::shared_ptr<Env>& env);
  absl::Status Append(std::string* out, std::string_view text);
  absl::Status AppendValue(std::string* out, const Value& v);

  absl::StatusOr<Value> EvalInner(const Expr& e, const std::shared_ptr<Env>& env);
  absl::StatusOr<Value> EvalMember(const Expr& e, const std::shared_ptr<Env>& env);
  absl::StatusOr<Value> EvalSlice(const Value& object, const Expr& e,
                                  const std::shared_ptr<Env>& env);
  absl::StatusOr<Value> EvalBinary(const Expr& e, const std::shared_ptr<Env>& env);
  absl::StatusOr<Value> Concat(const Value& left, const Value& right);
  absl::StatusOr<Value> EvalUnary(const Expr& e, const std::shared_ptr<Env>& env);
  absl::StatusOr<Value> EvalCall(const Expr& e, const std::shared_ptr<Env>& env);

  const RenderLimits limits_;
  uint64_t steps_ = 0;
  size_t allocated_bytes_ = 0;
  size_t list_items_ = 0;
  int eval_depth_ = 0;
  int call_depth_ = 0;
  std::vector<Value> namespaces_;
};

// Adds "line N: " to errors that carry no location yet (raise_exception
// messages and resource limits are left as they are).
absl::Status Locate(absl::Status status, int line);

// Builtin globals: true/false/none (and title-case forms), namespace,
// raise_exception, range, strftime_now.
void InstallGlobals(Env& env);

// Member `name` of a string, list or dict that is not stored in it: string
// methods (upper, strip, split, ...), `length`, dict methods (get, items,
// keys, values, dictsort). Undefined when there is none.
absl::StatusOr<Value> BuiltinMember(Interpreter& interp, const Value& receiver,
                                    std::string_view name);

// `operand | name(args)`; `filter` is a kFilter expression.
absl::StatusOr<Value> ApplyFilter(Interpreter& interp, const Value& operand, const Expr& filter,
                                  const std::shared_ptr<Env>& env);

// `operand is name(args)`.
absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& operand,
                               const std::vector<Value>& args);

}  // namespace tern::gateway::jinja

#endif  // TERN_GATEWAY_CHAT_TEMPLATE_JINJA_INTERPRETER_H_
