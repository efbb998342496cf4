// A context-free grammar over bytes: rules with alternatives, each a sequence
// of byte sets and references to other rules. GrammarBuilder collects rules;
// Build() drops what can never derive a finite string, rejects left recursion
// (which the matcher could not expand), and flattens the result into the
// immutable Grammar the matcher walks.
//
// Thread safety: a GrammarBuilder belongs to one thread; a Grammar is
// immutable and may be shared.
#ifndef TERN_STRUCTURED_GRAMMAR_H_
#define TERN_STRUCTURED_GRAMMAR_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tern::structured {

// A set of byte values.
struct ByteSet {
  std::array<uint64_t, 4> bits{};

  static ByteSet Single(uint8_t b);
  static ByteSet Range(uint8_t lo, uint8_t hi);
  void Add(uint8_t b) { bits[b >> 6] |= uint64_t{1} << (b & 63); }
  void AddRange(uint8_t lo, uint8_t hi);
  bool Contains(uint8_t b) const { return (bits[b >> 6] >> (b & 63)) & 1U; }
  bool Empty() const { return (bits[0] | bits[1] | bits[2] | bits[3]) == 0; }
  ByteSet& operator|=(const ByteSet& o);
  ByteSet Intersect(const ByteSet& o) const;
  ByteSet Minus(const ByteSet& o) const;
  friend bool operator==(const ByteSet& a, const ByteSet& b) { return a.bits == b.bits; }
};

// One element of an alternative: a byte from a set, or a whole rule.
struct Symbol {
  ByteSet bytes;
  int32_t rule = -1;  // >= 0: a reference to this rule; -1: `bytes`

  static Symbol Bytes(const ByteSet& set) { return Symbol{set, -1}; }
  static Symbol Byte(uint8_t b) { return Symbol{ByteSet::Single(b), -1}; }
  static Symbol Rule(int32_t rule) { return Symbol{ByteSet{}, rule}; }
};
using Sequence = std::vector<Symbol>;

// The symbols matching exactly `text`, byte by byte.
Sequence LiteralSequence(std::string_view text);

// The flattened grammar. Positions index elements(): an element is a rule
// reference (>= 0), the end of an alternative (kEnd), or a byte set
// (<= kFirstByteSet, set number kFirstByteSet - element). Position 0 holds a
// reference to the root rule followed by kEnd, so parsing starts there.
class Grammar {
 public:
  static constexpr int32_t kEnd = -1;
  static constexpr int32_t kFirstByteSet = -2;

  const std::vector<int32_t>& elements() const { return elements_; }
  int32_t element(int32_t position) const { return elements_[position]; }
  const ByteSet& byte_set(int32_t element) const { return byte_sets_[kFirstByteSet - element]; }
  // The first positions of rule `rule`'s alternatives.
  const int32_t* alternatives_begin(int32_t rule) const {
    return alternative_starts_.data() + rule_offsets_[rule];
  }
  const int32_t* alternatives_end(int32_t rule) const {
    return alternative_starts_.data() + rule_offsets_[rule + 1];
  }
  int32_t rule_count() const { return static_cast<int32_t>(rule_offsets_.size()) - 1; }

 private:
  friend class GrammarBuilder;
  std::vector<int32_t> elements_;
  std::vector<ByteSet> byte_sets_;
  std::vector<int32_t> rule_offsets_;        // rule r: [offsets[r], offsets[r + 1])
  std::vector<int32_t> alternative_starts_;  // positions into elements_
};

class GrammarBuilder {
 public:
  // A new rule without alternatives (add them later; recursion may refer to
  // it meanwhile). `name` only serves error messages.
  int32_t AddRule(std::string name);
  void AddAlternative(int32_t rule, Sequence sequence);
  // A new rule with these alternatives.
  int32_t AddRule(std::string name, std::vector<Sequence> alternatives);
  int32_t rule_count() const { return static_cast<int32_t>(rules_.size()); }

  // The grammar rooted at `root`. INVALID_ARGUMENT when the root derives no
  // finite string, or some rule can reach itself without consuming a byte.
  absl::StatusOr<Grammar> Build(int32_t root) const;

 private:
  struct Rule {
    std::string name;
    std::vector<Sequence> alternatives;
  };
  std::vector<Rule> rules_;
};

}  // namespace tern::structured

#endif  // TERN_STRUCTURED_GRAMMAR_H_
