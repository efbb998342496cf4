// The private halves of constraint.h's classes, shared by the library's .cc
// files (and visible to tests and benchmarks through impl()).
//
// Thread safety: as the public classes.
#ifndef TERN_STRUCTURED_CONSTRAINT_IMPL_H_
#define TERN_STRUCTURED_CONSTRAINT_IMPL_H_

#include <memory>
#include <string>
#include <vector>

#include "structured/constraint.h"
#include "structured/grammar.h"
#include "structured/grammar_matcher.h"
#include "structured/mask_cache.h"
#include "structured/token_trie.h"

namespace tern::structured {

// Masks kept per compiled constraint.
inline constexpr size_t kMaskCacheEntries = 4096;
inline constexpr size_t kMaskCacheBytes = size_t{8} << 20;

struct TokenVocabulary::Impl {
  std::vector<std::string> token_bytes;
  std::vector<bool> special;
  // Tokens a grammar may allow: not special, not empty.
  TokenMask eligible;
  TokenTrie trie;
};

// Builds the trie and eligibility mask of `impl`'s tokens.
void IndexVocabulary(TokenVocabulary::Impl* impl);

struct CompiledConstraint::Impl {
  Impl(Grammar g, std::shared_ptr<const TokenVocabulary> v)
      : grammar(std::move(g)),
        stepper(&grammar),
        vocabulary(std::move(v)),
        initial(stepper.Initial()),
        cache(&vocabulary->impl().eligible, kMaskCacheEntries, kMaskCacheBytes) {}

  const Grammar grammar;
  const GrammarStepper stepper;
  const std::shared_ptr<const TokenVocabulary> vocabulary;
  const ParseState initial;
  mutable MaskCache cache;
};

struct ConstraintMatcher::State {
  ParseState parse;  // canonical
};

// The tokens whose bytes keep `state` alive, by a walk of the vocabulary's
// trie that skips every subtree below a dead prefix. Ignores the cache.
void ComputeAllowedTokens(const GrammarStepper& stepper, const TokenVocabulary::Impl& vocabulary,
                          const ParseState& state, TokenMask* mask);

// Compiles a spec to its grammar (no vocabulary needed).
absl::StatusOr<Grammar> CompileSpecGrammar(const ConstraintSpec& spec);

}  // namespace tern::structured

#endif  // TERN_STRUCTURED_CONSTRAINT_IMPL_H_
