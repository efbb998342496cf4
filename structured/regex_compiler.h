// Compiles the regex subset of regex_parser.h to a byte-level DFA that
// matches whole inputs: characters become their UTF-8 byte sequences (a
// negated class or `.` admits only well-formed UTF-8), then Thompson
// construction and subset construction over byte equivalence classes.
//
// Thread safety: pure functions.
#ifndef TERN_STRUCTURED_REGEX_COMPILER_H_
#define TERN_STRUCTURED_REGEX_COMPILER_H_

#include <string>

#include "absl/status/statusor.h"
#include "structured/byte_dfa.h"
#include "structured/regex_parser.h"

namespace tern::structured {

// INVALID_ARGUMENT for syntax outside the subset (named) or an automaton
// above kMaxDfaStates.
absl::StatusOr<ByteDfa> CompileRegex(const std::string& pattern);

absl::StatusOr<ByteDfa> CompileRegexAst(const RegexAst& ast);

}  // namespace tern::structured

#endif  // TERN_STRUCTURED_REGEX_COMPILER_H_
