// Statements, scopes and budgets of the interpreter (expressions are in
// jinja_eval.cc).
#include "gateway/chat_template/jinja_interpreter.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gateway/chat_template/jinja_unicode.h"

namespace tern::gateway::jinja {

const Value* Env::Lookup(std::string_view name) const {
  for (const Env* e = this; e != nullptr; e = e->parent_.get()) {
    auto it = e->vars_.find(AbslView(name));
    if (it != e->vars_.end()) return &it->second;
  }
  return nullptr;
}

bool Env::HasLocal(std::string_view name) const { return vars_.contains(AbslView(name)); }

absl::Status Locate(absl::Status status, int line) {
  if (status.ok() || status.code() != absl::StatusCode::kInvalidArgument ||
      absl::StartsWith(status.message(), "line ")) {
    return status;
  }
  return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", status.message()));
}

Interpreter::~Interpreter() {
  // Namespaces are the only mutable values, so every reference cycle runs
  // through one; emptying them frees everything the render built.
  for (Value& ns : namespaces_) ns.mutable_namespace().Clear();
}

absl::Status Interpreter::ChargeBytes(size_t bytes) {
  allocated_bytes_ += bytes;
  if (allocated_bytes_ > limits_.max_allocated_bytes) {
    return absl::ResourceExhaustedError("template rendering built too much text");
  }
  return absl::OkStatus();
}

absl::Status Interpreter::ChargeItems(size_t items) {
  list_items_ += items;
  if (list_items_ > limits_.max_list_items) {
    return absl::ResourceExhaustedError("template rendering built too many list items");
  }
  return absl::OkStatus();
}

absl::Status Interpreter::Step() {
  if (++steps_ > limits_.max_steps) {
    return absl::ResourceExhaustedError("template rendering exceeded its step budget");
  }
  return absl::OkStatus();
}

absl::StatusOr<Value> Interpreter::MakeString(std::string s) {
  if (s.size() > limits_.max_output_bytes) {
    return absl::ResourceExhaustedError("template string value exceeds the output size limit");
  }
  TERN_RETURN_IF_ERROR(ChargeBytes(s.size()));
  return Value::Str(std::move(s));
}

absl::StatusOr<Value> Interpreter::MakeArray(std::vector<Value> items) {
  TERN_RETURN_IF_ERROR(ChargeItems(items.size()));
  return Value::Array(std::move(items));
}

absl::StatusOr<Value> Interpreter::MakeNamespace(
    std::vector<std::pair<std::string, Value>> entries) {
  if (namespaces_.size() >= limits_.max_namespaces) {
    return absl::ResourceExhaustedError("template rendering created too many namespaces");
  }
  TERN_RETURN_IF_ERROR(ChargeItems(entries.size()));
  namespaces_.push_back(Value::Namespace(std::move(entries)));
  return namespaces_.back();
}

absl::Status Interpreter::Append(std::string* out, std::string_view text) {
  if (out->size() + text.size() > limits_.max_output_bytes) {
    return absl::ResourceExhaustedError("template output exceeds the output size limit");
  }
  TERN_RETURN_IF_ERROR(ChargeBytes(text.size()));
  out->append(text);
  return absl::OkStatus();
}

absl::Status Interpreter::AppendValue(std::string* out, const Value& v) {
  if (v.is_null() || v.is_undefined()) return absl::OkStatus();
  if (v.is_string()) return Append(out, v.str());
  TERN_ASSIGN_OR_RETURN(std::string text, ToDisplayString(v, limits_.max_output_bytes));
  return Append(out, text);
}

absl::StatusOr<std::string> Interpreter::Render(const StmtList& program,
                                                std::shared_ptr<Env> globals) {
  std::string out;
  TERN_ASSIGN_OR_RETURN(Flow flow, ExecBlock(program, globals, &out));
  if (flow != Flow::kNormal) {
    return absl::InvalidArgumentError("{% break %} or {% continue %} outside of a loop");
  }
  return out;
}

absl::StatusOr<std::string> Interpreter::RenderToString(const StmtList& block,
                                                        const std::shared_ptr<Env>& env) {
  std::string out;
  TERN_ASSIGN_OR_RETURN(Flow flow, ExecBlock(block, env, &out));
  if (flow != Flow::kNormal) {
    return absl::InvalidArgumentError("{% break %} or {% continue %} outside of a loop");
  }
  return out;
}

absl::StatusOr<Interpreter::Flow> Interpreter::ExecBlock(const StmtList& block,
                                                         const std::shared_ptr<Env>& env,
                                                         std::string* out) {
  for (const auto& stmt : block) {
    absl::StatusOr<Flow> flow = Exec(*stmt, env, out);
    if (!flow.ok()) return Locate(flow.status(), stmt->line);
    if (*flow != Flow::kNormal) return *flow;
  }
  return Flow::kNormal;
}

absl::StatusOr<Interpreter::Flow> Interpreter::Exec(const Stmt& s, const std::shared_ptr<Env>& env,
                                                    std::string* out) {
  TERN_RETURN_IF_ERROR(Step());
  if (eval_depth_ >= limits_.max_eval_depth) {
    return absl::ResourceExhaustedError("template rendering recursed too deeply");
  }
  ++eval_depth_;
  struct DepthRestore {
    int* depth;
    ~DepthRestore() { --*depth; }
  } restore{&eval_depth_};

  switch (s.kind) {
    case StmtKind::kText:
      TERN_RETURN_IF_ERROR(Append(out, *s.text));
      return Flow::kNormal;
    case StmtKind::kOutput: {
      TERN_ASSIGN_OR_RETURN(Value v, Eval(*s.expr, env));
      TERN_RETURN_IF_ERROR(AppendValue(out, v));
      return Flow::kNormal;
    }
    case StmtKind::kSet:
      TERN_RETURN_IF_ERROR(ExecSet(s, env));
      return Flow::kNormal;
    case StmtKind::kIf:
      for (const IfBranch& branch : s.branches) {
        TERN_ASSIGN_OR_RETURN(Value cond, Eval(*branch.condition, env));
        if (Truthy(cond)) return ExecBlock(branch.body, env, out);
      }
      return ExecBlock(s.else_body, env, out);
    case StmtKind::kFor:
      return ExecFor(s, env, out);
    case StmtKind::kMacro: {
      const Stmt* def = &s;
      env->Set(s.name,
               Value::Function([def](Interpreter& interp, const std::shared_ptr<Env>& caller,
                                     CallArgs& args) -> absl::StatusOr<Value> {
                 auto scope = std::make_shared<Env>(caller);
                 return interp.InvokeBody(*def, Cat("'", def->name, "'"), args, scope);
               }));
      return Flow::kNormal;
    }
    case StmtKind::kCallBlock:
      TERN_RETURN_IF_ERROR(ExecCallBlock(s, env, out));
      return Flow::kNormal;
    case StmtKind::kFilterBlock: {
      TERN_ASSIGN_OR_RETURN(std::string body, RenderToString(s.body, env));
      TERN_ASSIGN_OR_RETURN(Value text, MakeString(std::move(body)));
      TERN_ASSIGN_OR_RETURN(Value filtered, ApplyFilter(*this, text, *s.expr, env));
      TERN_RETURN_IF_ERROR(AppendValue(out, filtered));
      return Flow::kNormal;
    }
    case StmtKind::kBreak:
      return Flow::kBreak;
    case StmtKind::kContinue:
      return Flow::kContinue;
  }
  return Flow::kNormal;
}

absl::Status Interpreter::ExecSet(const Stmt& s, const std::shared_ptr<Env>& env) {
  Value rhs;
  if (s.expr != nullptr) {
    TERN_ASSIGN_OR_RETURN(rhs, Eval(*s.expr, env));
  } else {
    TERN_ASSIGN_OR_RETURN(std::string body, RenderToString(s.body, env));
    TERN_ASSIGN_OR_RETURN(rhs, MakeString(std::move(body)));
  }
  const Expr& target = *s.target;
  switch (target.kind) {
    case ExprKind::kIdentifier:
      env->Set(target.name, std::move(rhs));
      return absl::OkStatus();
    case ExprKind::kTuple: {
      if (!rhs.is_array()) {
        return absl::InvalidArgumentError(
            Cat("Cannot unpack non-iterable type in set: ", rhs.TypeName()));
      }
      const std::vector<Value>& values = rhs.array();
      if (values.size() != target.items.size()) {
        return absl::InvalidArgumentError(Cat("Too ",
                                              target.items.size() > values.size() ? "few" : "many",
                                              " items to unpack in set"));
      }
      for (size_t i = 0; i < values.size(); ++i) {
        if (target.items[i]->kind != ExprKind::kIdentifier) {
          return absl::InvalidArgumentError("Cannot unpack to non-identifier in set");
        }
      }
      for (size_t i = 0; i < values.size(); ++i) env->Set(target.items[i]->name, values[i]);
      return absl::OkStatus();
    }
    case ExprKind::kMember: {
      TERN_ASSIGN_OR_RETURN(Value object, Eval(*target.lhs, env));
      if (!object.is_namespace()) {
        return absl::InvalidArgumentError("cannot assign attribute on non-namespace object");
      }
      if (target.computed || target.is_slice) {
        return absl::InvalidArgumentError("Cannot assign to member with non-identifier property");
      }
      object.mutable_namespace().Set(target.name, std::move(rhs));
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError("Invalid LHS inside assignment expression");
  }
}

absl::StatusOr<Interpreter::Flow> Interpreter::ExecFor(const Stmt& s,
                                                       const std::shared_ptr<Env>& env,
                                                       std::string* out) {
  auto scope = std::make_shared<Env>(env);
  TERN_ASSIGN_OR_RETURN(Value iterable, Eval(*s.expr, scope));
  std::vector<Value> all;
  if (iterable.is_array()) {
    all = iterable.array();
  } else if (iterable.is_object()) {
    for (const auto& entry : iterable.object().entries()) {
      TERN_ASSIGN_OR_RETURN(Value key, MakeString(entry.first));
      all.push_back(std::move(key));
    }
  } else if (iterable.is_string()) {
    for (std::string& ch : SplitCodePoints(iterable.str())) {
      TERN_ASSIGN_OR_RETURN(Value v, MakeString(std::move(ch)));
      all.push_back(std::move(v));
    }
  } else {
    return absl::InvalidArgumentError(
        Cat("Expected iterable or object type in for loop: got ", iterable.TypeName()));
  }
  TERN_RETURN_IF_ERROR(ChargeItems(all.size()));

  auto bind = [&s](Env& target, const Value& item) -> absl::Status {
    if (!s.loop_tuple) {
      target.Set(s.loop_vars[0], item);
      return absl::OkStatus();
    }
    if (!item.is_array()) {
      return absl::InvalidArgumentError(Cat("Cannot unpack non-iterable type: ", item.TypeName()));
    }
    const std::vector<Value>& parts = item.array();
    if (parts.size() != s.loop_vars.size()) {
      return absl::InvalidArgumentError(
          Cat("Too ", s.loop_vars.size() > parts.size() ? "few" : "many", " items to unpack"));
    }
    for (size_t j = 0; j < parts.size(); ++j) target.Set(s.loop_vars[j], parts[j]);
    return absl::OkStatus();
  };

  std::vector<Value> items;
  if (s.loop_filter != nullptr) {
    for (const Value& item : all) {
      auto test_scope = std::make_shared<Env>(scope);
      TERN_RETURN_IF_ERROR(bind(*test_scope, item));
      TERN_ASSIGN_OR_RETURN(Value keep, Eval(*s.loop_filter, test_scope));
      if (Truthy(keep)) items.push_back(item);
    }
  } else {
    items = std::move(all);
  }

  const size_t n = items.size();
  for (size_t i = 0; i < n; ++i) {
    TERN_RETURN_IF_ERROR(Step());
    const double di = static_cast<double>(i);
    const double dn = static_cast<double>(n);
    scope->Set("loop", Value::Object({
                           {"index", Value::Int(di + 1)},
                           {"index0", Value::Int(di)},
                           {"revindex", Value::Int(dn - di)},
                           {"revindex0", Value::Int(dn - di - 1)},
                           {"first", Value::Bool(i == 0)},
                           {"last", Value::Bool(i + 1 == n)},
                           {"length", Value::Int(dn)},
                           {"previtem", i > 0 ? items[i - 1] : Value()},
                           {"nextitem", i + 1 < n ? items[i + 1] : Value()},
                       }));
    TERN_RETURN_IF_ERROR(bind(*scope, items[i]));
    TERN_ASSIGN_OR_RETURN(Flow flow, ExecBlock(s.body, scope, out));
    if (flow == Flow::kBreak) break;
  }
  if (n == 0) {
    TERN_ASSIGN_OR_RETURN(Flow flow, ExecBlock(s.else_body, scope, out));
    return flow;
  }
  return Flow::kNormal;
}

absl::StatusOr<Value> Interpreter::InvokeBody(const Stmt& def, std::string_view display_name,
                                              CallArgs& args, const std::shared_ptr<Env>& scope) {
  if (call_depth_ >= limits_.max_call_depth) {
    return absl::ResourceExhaustedError("macro calls are nested too deeply");
  }
  std::vector<std::pair<std::string, Value>> keywords = std::move(args.keywords);
  std::vector<const Param*> pending_defaults;
  for (size_t i = 0; i < def.params.size(); ++i) {
    const Param& param = def.params[i];
    Value value;
    bool bound = false;
    if (i < args.positional.size()) {
      value = args.positional[i];
      bound = true;
    } else {
      for (auto it = keywords.begin(); it != keywords.end(); ++it) {
        if (it->first == param.name) {
          value = std::move(it->second);
          keywords.erase(it);
          bound = true;
          break;
        }
      }
    }
    if (!bound && param.default_value != nullptr) pending_defaults.push_back(&param);
    scope->Set(param.name, std::move(value));
  }
  if (def.uses_kwargs) {
    scope->Set("kwargs", Value::Object(std::move(keywords)));
  } else if (!keywords.empty()) {
    return absl::InvalidArgumentError(
        Cat("macro ", display_name, " takes no keyword argument '", keywords.front().first, "'"));
  }
  if (def.uses_varargs) {
    std::vector<Value> rest;
    for (size_t i = def.params.size(); i < args.positional.size(); ++i) {
      rest.push_back(args.positional[i]);
    }
    TERN_ASSIGN_OR_RETURN(Value varargs, MakeArray(std::move(rest)));
    scope->Set("varargs", std::move(varargs));
  } else if (args.positional.size() > def.params.size()) {
    return absl::InvalidArgumentError(
        Cat("macro ", display_name, " takes not more than ", def.params.size(), " argument(s)"));
  }
  for (const Param* param : pending_defaults) {
    TERN_ASSIGN_OR_RETURN(Value v, Eval(*param->default_value, scope));
    scope->Set(param->name, std::move(v));
  }
  ++call_depth_;
  absl::StatusOr<std::string> body = RenderToString(def.body, scope);
  --call_depth_;
  if (!body.ok()) return body.status();
  return MakeString(*std::move(body));
}

absl::Status Interpreter::ExecCallBlock(const Stmt& s, const std::shared_ptr<Env>& env,
                                        std::string* out) {
  const Stmt* def = &s;
  std::shared_ptr<Env> defining_env = env;
  Value caller =
      Value::Function([def, defining_env](Interpreter& interp, const std::shared_ptr<Env>&,
                                          CallArgs& args) -> absl::StatusOr<Value> {
        auto scope = std::make_shared<Env>(defining_env);
        return interp.InvokeBody(*def, "None", args, scope);
      });
  const Expr& call = *s.expr;
  TERN_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(call.args, env));
  TERN_ASSIGN_OR_RETURN(Value fn, Eval(*call.lhs, env));
  auto call_env = std::make_shared<Env>(env);
  call_env->Set("caller", std::move(caller));
  TERN_ASSIGN_OR_RETURN(Value result, CallFunction(fn, args, call_env));
  return AppendValue(out, result);
}

}  // namespace tern::gateway::jinja
