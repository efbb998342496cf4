#include "gateway/chat_template/chat_template.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gateway/chat_template/jinja_ast.h"
#include "gateway/chat_template/jinja_interpreter.h"
#include "gateway/chat_template/jinja_lexer.h"
#include "gateway/chat_template/jinja_parser.h"

namespace tern::gateway {

struct ChatTemplate::Program {
  jinja::StmtList statements;
};

absl::StatusOr<ChatTemplate> ChatTemplate::Compile(std::string_view source) {
  TERN_ASSIGN_OR_RETURN(std::vector<jinja::Token> tokens, jinja::Tokenize(source));
  auto program = std::make_shared<Program>();
  TERN_ASSIGN_OR_RETURN(program->statements, jinja::Parse(tokens));
  return ChatTemplate(std::move(program));
}

template <typename Json>
absl::StatusOr<std::string> ChatTemplate::RenderJson(const Json& context) const {
  if (!context.is_object()) {
    return absl::InvalidArgumentError("chat template context must be a JSON object");
  }
  auto globals = std::make_shared<jinja::Env>(nullptr);
  jinja::InstallGlobals(*globals);
  for (auto it = context.begin(); it != context.end(); ++it) {
    if (globals->HasLocal(it.key())) {
      return absl::InvalidArgumentError(absl::StrCat("chat template context key '", it.key(),
                                                     "' collides with a template builtin"));
    }
  }
  for (auto it = context.begin(); it != context.end(); ++it) {
    TERN_ASSIGN_OR_RETURN(jinja::Value value, jinja::FromJson(it.value()));
    globals->Set(it.key(), std::move(value));
  }
  absl::StatusOr<std::string> text;
  {
    jinja::Interpreter interpreter{jinja::RenderLimits{}};
    text = interpreter.Render(program_->statements, globals);
  }
  if (!text.ok() && text.status().code() == absl::StatusCode::kAborted) {
    // raise_exception(message): the template rejected its input.
    return absl::InvalidArgumentError(text.status().message());
  }
  return text;
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& context) const {
  return RenderJson(context);
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& context) const {
  return RenderJson(context);
}

}  // namespace tern::gateway
