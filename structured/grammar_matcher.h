// Pushdown parsing of a Grammar one byte at a time.
//
// A parse is a stack of grammar positions: the top is the byte set the next
// byte must match; each entry below is where its rule continues once the rule
// above it completes. An ambiguous grammar keeps several stacks at once. Rule
// references in tail position replace their caller's frame, so loops written
// as right recursion (`items ::= "" | item items`) run in constant stack.
//
// Thread safety: the functions are pure given their arguments; a
// GrammarStepper is immutable and may be shared; a ParseState is a value.
#ifndef TERN_STRUCTURED_GRAMMAR_MATCHER_H_
#define TERN_STRUCTURED_GRAMMAR_MATCHER_H_

#include <cstdint>
#include <vector>

#include "structured/grammar.h"

namespace tern::structured {

// The live parses after some input.
struct ParseState {
  // Stacks back to back, each stored as its length then its positions from
  // bottom to top; every top is a byte-set element. In canonical form (see
  // Canonicalize) equal states have equal vectors, so this is a cache key.
  std::vector<int32_t> stacks;
  // Some parse has consumed the whole grammar: the input so far is a match.
  bool complete = false;

  // Whether the input so far is a prefix of some match.
  bool alive() const { return complete || !stacks.empty(); }
};

class GrammarStepper {
 public:
  // `grammar` must outlive the stepper.
  explicit GrammarStepper(const Grammar* grammar) : grammar_(grammar) {}

  // The state before any input.
  ParseState Initial() const;

  // The state after `byte` from `from`, into `*next` (whose buffers are
  // reused). Returns next->alive(). Not in canonical form.
  bool Advance(const ParseState& from, uint8_t byte, ParseState* next) const;

  // Sorts the stacks and drops duplicates.
  static void Canonicalize(ParseState* state);

 private:
  // Expands `work` (a stack whose top may be a rule reference or the end of
  // an alternative) to stacks topped by byte sets, appended to `out`.
  // Leaves `work` as it found it.
  void Expand(std::vector<int32_t>& work, ParseState* out) const;

  const Grammar* grammar_;
};

}  // namespace tern::structured

#endif  // TERN_STRUCTURED_GRAMMAR_MATCHER_H_
