// Deterministic automata over bytes: the form regular constraints (regex
// patterns, string formats, length limits, key exclusions) take before they
// become right-linear grammar rules.
//
// Thread safety: values and pure functions.
#ifndef TERN_STRUCTURED_BYTE_DFA_H_
#define TERN_STRUCTURED_BYTE_DFA_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "structured/grammar.h"

namespace tern::structured {

// The most states any automaton built here may have; beyond it the
// constraint is INVALID_ARGUMENT as too complex.
inline constexpr int32_t kMaxDfaStates = 20000;

struct ByteDfa {
  std::vector<std::array<int32_t, 256>> next;  // -1: no transition
  std::vector<bool> accepting;
  int32_t start = 0;

  int32_t AddState(bool accept);
  int32_t size() const { return static_cast<int32_t>(next.size()); }
};

// Matches exactly the given byte strings.
ByteDfa LiteralsDfa(const std::vector<std::string>& literals);

// Matches what `dfa` matches, restricted to inputs holding between
// `min_chars` and `max_chars` (-1: no limit) UTF-8 characters (counted by
// their lead bytes). INVALID_ARGUMENT past kMaxDfaStates.
absl::StatusOr<ByteDfa> WithCharCount(const ByteDfa& dfa, int64_t min_chars, int64_t max_chars);

// Matches what `a` matches and `b` does not. INVALID_ARGUMENT past
// kMaxDfaStates.
absl::StatusOr<ByteDfa> Difference(const ByteDfa& a, const ByteDfa& b);

// How EmitDfa writes the bytes a DFA consumes.
enum class DfaEncoding {
  kRaw,                // as they are (a regex over the whole output)
  kJsonStringContent,  // inside a JSON string: '"', '\' and control bytes escaped
};

// Adds rules matching what `dfa` matches (one per live state, each
// alternative a byte set then the next state's rule) and returns the start
// state's rule. States from which no accepting state can be reached are left
// out, so every prefix the grammar admits can be completed. Returns -1 when
// the DFA matches nothing.
int32_t EmitDfa(const ByteDfa& dfa, DfaEncoding encoding, const std::string& name,
                GrammarBuilder* builder);

// The JSON escape sequence for byte `b` inside a string, or "" when `b` may
// appear raw.
std::string JsonEscapeFor(uint8_t b);

}  // namespace tern::structured

#endif  // TERN_STRUCTURED_BYTE_DFA_H_
