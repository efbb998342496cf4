#include "structured/constraint.h"

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "structured/byte_dfa.h"
#include "structured/constraint_impl.h"
#include "structured/json_schema_compiler.h"
#include "structured/regex_compiler.h"

namespace tern::structured {

std::string ConstraintSpec::CacheKey() const {
  // Length-prefixed fields, so no two specs collide.
  std::string key = absl::StrCat(static_cast<int>(kind), ";");
  switch (kind) {
    case Kind::kNone:
    case Kind::kJsonObject:
      break;
    case Kind::kJsonSchema:
      absl::StrAppend(&key, json_schema.size(), ":", json_schema);
      break;
    case Kind::kRegex:
      absl::StrAppend(&key, regex.size(), ":", regex);
      break;
    case Kind::kChoice:
      for (const std::string& c : choices) absl::StrAppend(&key, c.size(), ":", c);
      break;
  }
  return key;
}

absl::StatusOr<Grammar> CompileSpecGrammar(const ConstraintSpec& spec) {
  switch (spec.kind) {
    case ConstraintSpec::Kind::kNone:
      return absl::InvalidArgumentError("no constraint to compile");
    case ConstraintSpec::Kind::kJsonSchema:
      return CompileJsonSchema(spec.json_schema);
    case ConstraintSpec::Kind::kJsonObject:
      return CompileAnyJsonObject();
    case ConstraintSpec::Kind::kRegex: {
      auto dfa = CompileRegex(spec.regex);
      if (!dfa.ok()) return dfa.status();
      GrammarBuilder builder;
      const int32_t root = EmitDfa(*dfa, DfaEncoding::kRaw, "regex", &builder);
      if (root < 0) return absl::InvalidArgumentError("regex matches nothing");
      return builder.Build(root);
    }
    case ConstraintSpec::Kind::kChoice: {
      if (spec.choices.empty()) return absl::InvalidArgumentError("empty choice list");
      GrammarBuilder builder;
      std::vector<Sequence> alternatives;
      for (const std::string& choice : spec.choices) {
        alternatives.push_back(LiteralSequence(choice));
      }
      return builder.Build(builder.AddRule("choice", std::move(alternatives)));
    }
  }
  return absl::InvalidArgumentError("unknown constraint kind");
}

absl::Status ValidateConstraint(const ConstraintSpec& spec) {
  if (spec.kind == ConstraintSpec::Kind::kNone) return absl::OkStatus();
  return CompileSpecGrammar(spec).status();
}

CompiledConstraint::CompiledConstraint(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CompiledConstraint::~CompiledConstraint() = default;

absl::StatusOr<std::shared_ptr<const CompiledConstraint>> CompiledConstraint::Compile(
    const ConstraintSpec& spec, std::shared_ptr<const TokenVocabulary> vocabulary) {
  auto grammar = CompileSpecGrammar(spec);
  if (!grammar.ok()) return grammar.status();
  return std::make_shared<const CompiledConstraint>(
      std::make_unique<Impl>(*std::move(grammar), std::move(vocabulary)));
}

ConstraintMatcher::ConstraintMatcher(std::shared_ptr<const CompiledConstraint> constraint)
    : constraint_(std::move(constraint)), state_(std::make_unique<State>()) {
  state_->parse = constraint_->impl().initial;
}

ConstraintMatcher::ConstraintMatcher(const ConstraintMatcher& other)
    : constraint_(other.constraint_), state_(std::make_unique<State>(*other.state_)) {}

ConstraintMatcher& ConstraintMatcher::operator=(const ConstraintMatcher& other) {
  if (this != &other) {
    constraint_ = other.constraint_;
    *state_ = *other.state_;
  }
  return *this;
}

ConstraintMatcher::~ConstraintMatcher() = default;

void ConstraintMatcher::FillAllowedTokens(TokenMask* mask) const {
  const CompiledConstraint::Impl& c = constraint_->impl();
  if (mask->vocab_size() != c.vocabulary->size()) {
    std::fprintf(stderr, "FillAllowedTokens: mask of %d tokens for a vocabulary of %d\n",
                 mask->vocab_size(), c.vocabulary->size());
    std::abort();
  }
  const ParseState& parse = state_->parse;
  if (parse.stacks.empty()) {
    mask->Clear();
    return;
  }
  if (c.cache.Lookup(parse.stacks, mask)) return;
  ComputeAllowedTokens(c.stepper, c.vocabulary->impl(), parse, mask);
  c.cache.Insert(parse.stacks, *mask);
}

bool ConstraintMatcher::CanEnd() const { return state_->parse.complete; }

bool ConstraintMatcher::MustEnd() const {
  return state_->parse.complete && state_->parse.stacks.empty();
}

absl::Status ConstraintMatcher::AcceptToken(int32_t token) {
  const TokenVocabulary& vocabulary = *constraint_->impl().vocabulary;
  if (token < 0 || token >= vocabulary.size()) {
    return absl::FailedPreconditionError(absl::StrCat("token ", token, " is out of range"));
  }
  if (vocabulary.is_special(token)) {
    return absl::FailedPreconditionError(
        absl::StrCat("special token ", token, " breaks the constraint"));
  }
  if (vocabulary.bytes(token).empty()) {
    return absl::FailedPreconditionError(absl::StrCat("token ", token, " has no bytes"));
  }
  return AcceptBytes(vocabulary.bytes(token));
}

absl::Status ConstraintMatcher::AcceptBytes(const std::string& bytes) {
  const GrammarStepper& stepper = constraint_->impl().stepper;
  ParseState current = state_->parse;
  ParseState next;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (!stepper.Advance(current, static_cast<uint8_t>(bytes[i]), &next)) {
      return absl::FailedPreconditionError(
          absl::StrCat("output breaks the constraint at byte ", i, " of the new text"));
    }
    std::swap(current, next);
  }
  GrammarStepper::Canonicalize(&current);
  state_->parse = std::move(current);
  return absl::OkStatus();
}

}  // namespace tern::structured
