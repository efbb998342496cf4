// Constrained decoding: what a sequence's output must match, and the
// per-step set of tokens that keep it matching.
//
//   ConstraintSpec      what the client asked for (a JSON schema, any JSON
//                       object, a regular expression, or one of fixed strings)
//   TokenVocabulary     each token id's bytes, from the model's tokenizer.json
//   CompiledConstraint  a spec compiled to a grammar over bytes, bound to one
//                       vocabulary; immutable apart from its mask cache, and
//                       shared by every sequence with the same spec
//   ConstraintMatcher   one sequence's progress through a CompiledConstraint
//
// The grammar is a pushdown automaton over bytes. The allowed tokens at a step
// come from a walk of the vocabulary's byte trie that stops descending as soon
// as no parse survives a prefix, and are cached per parser state, so a state
// seen before (every character inside a string, say) costs a lookup.
//
// JSON output is compact: no whitespace except at most one space after ':'
// and ','. Object properties come in the schema's order; required ones must
// appear, and an absent additionalProperties means false (as OpenAI's strict
// mode). Special tokens (added tokens marked special) are never allowed by the
// grammar; end-of-sequence is the caller's to allow when CanEnd().
//
// Thread safety: ConstraintSpec/TokenVocabulary are values; CompiledConstraint
// is thread-safe (its cache is synchronized); a ConstraintMatcher belongs to
// one thread at a time.
#ifndef TERN_STRUCTURED_CONSTRAINT_H_
#define TERN_STRUCTURED_CONSTRAINT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tern::structured {

struct ConstraintSpec {
  enum class Kind { kNone, kJsonSchema, kJsonObject, kRegex, kChoice };
  Kind kind = Kind::kNone;
  // kJsonSchema: the schema as JSON text.
  std::string json_schema;
  // kRegex: a pattern in the subset CompileRegex documents (whole-output match).
  std::string regex;
  // kChoice: the output is exactly one of these strings.
  std::vector<std::string> choices;

  // A stable key for caches: equal specs have equal keys.
  std::string CacheKey() const;
};

// INVALID_ARGUMENT naming the problem when `spec` cannot be compiled: bad JSON,
// an unsupported JSON-schema keyword (named, with its JSON pointer), a bad
// regex, an empty choice list, nesting beyond kMaxSchemaDepth. The gateway
// calls this to reject a request before routing it.
absl::Status ValidateConstraint(const ConstraintSpec& spec);

// Deepest schema nesting (objects, arrays, $ref expansions) compiled.
inline constexpr int kMaxSchemaDepth = 32;

// The bytes of every token id of a model.
class TokenVocabulary {
 public:
  // From a Hugging Face tokenizer.json (byte-level BPE): model.vocab decoded
  // from GPT-2's byte-to-unicode alphabet, plus added_tokens; ids at or above
  // the tokenizer's size but below `vocab_size` (padding rows of the
  // embedding) are special. `vocab_size` is the model's logits width.
  static absl::StatusOr<std::shared_ptr<const TokenVocabulary>> FromTokenizerJson(
      const std::string& path, int32_t vocab_size);
  // From explicit byte strings; special[i] marks tokens the grammar never allows.
  static std::shared_ptr<const TokenVocabulary> FromTokens(std::vector<std::string> token_bytes,
                                                           std::vector<bool> special);

  int32_t size() const;
  const std::string& bytes(int32_t token) const;
  bool is_special(int32_t token) const;

  // Implementation details (the trie) live in the .cc.
  struct Impl;
  explicit TokenVocabulary(std::unique_ptr<Impl> impl);
  ~TokenVocabulary();
  const Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// A set of token ids as a bitmask: bit (id % 64) of word (id / 64).
class TokenMask {
 public:
  explicit TokenMask(int32_t vocab_size = 0);
  bool allowed(int32_t token) const {
    return (words_[static_cast<size_t>(token) >> 6] >> (token & 63)) & 1U;
  }
  void Allow(int32_t token) {
    words_[static_cast<size_t>(token) >> 6] |= uint64_t{1} << (token & 63);
  }
  void Clear();
  int32_t vocab_size() const { return vocab_size_; }
  int32_t CountAllowed() const;
  std::vector<uint64_t>& words() { return words_; }
  const std::vector<uint64_t>& words() const { return words_; }

 private:
  int32_t vocab_size_ = 0;
  std::vector<uint64_t> words_;
};

class CompiledConstraint {
 public:
  // INVALID_ARGUMENT as ValidateConstraint.
  static absl::StatusOr<std::shared_ptr<const CompiledConstraint>> Compile(
      const ConstraintSpec& spec, std::shared_ptr<const TokenVocabulary> vocabulary);

  struct Impl;
  explicit CompiledConstraint(std::unique_ptr<Impl> impl);
  ~CompiledConstraint();
  const Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

class ConstraintMatcher {
 public:
  explicit ConstraintMatcher(std::shared_ptr<const CompiledConstraint> constraint);
  ConstraintMatcher(const ConstraintMatcher& other);
  ConstraintMatcher& operator=(const ConstraintMatcher& other);
  ~ConstraintMatcher();

  // The tokens that keep the output a prefix of some match. `mask` must have
  // the vocabulary's size.
  void FillAllowedTokens(TokenMask* mask) const;
  // The output so far is a complete match (end-of-sequence may be allowed).
  bool CanEnd() const;
  // Complete, and no byte may follow: only end-of-sequence remains.
  bool MustEnd() const;
  // Advances by one token. FAILED_PRECONDITION when the token would break the
  // match (the matcher is then unchanged); special tokens always do.
  absl::Status AcceptToken(int32_t token);
  // Advances by raw bytes (tests, and resumed text). Same errors.
  absl::Status AcceptBytes(const std::string& bytes);

  struct State;

 private:
  std::shared_ptr<const CompiledConstraint> constraint_;
  std::unique_ptr<State> state_;
};

// Compiled constraints by CacheKey, least recently used dropped beyond
// `capacity`. Each holds a mask cache of at most 8 MB, so the default bounds
// the whole at 128 MB. Thread-safe.
class ConstraintCache {
 public:
  ConstraintCache(std::shared_ptr<const TokenVocabulary> vocabulary, size_t capacity = 16);
  ~ConstraintCache();
  absl::StatusOr<std::shared_ptr<const CompiledConstraint>> GetOrCompile(
      const ConstraintSpec& spec);
  const TokenVocabulary& vocabulary() const { return *vocabulary_; }

 private:
  struct Entries;
  const std::shared_ptr<const TokenVocabulary> vocabulary_;
  const size_t capacity_;
  std::unique_ptr<Entries> entries_;
};

}  // namespace tern::structured

#endif  // TERN_STRUCTURED_CONSTRAINT_H_
