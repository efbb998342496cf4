#include <algorithm>
#include <bit>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "structured/constraint.h"
#include "structured/constraint_impl.h"

namespace tern::structured {
namespace {

constexpr int32_t kUnknown = -2;
constexpr int32_t kDead = -1;

// The distinct parser states one walk meets, and the byte transitions between
// them found so far. Most trie nodes lead to a state already seen (inside a
// string every ordinary character leads back to the same state), so after the
// first few thousand nodes a step is a table lookup, not a parse.
class WalkStates {
 public:
  void Reset() {
    count_ = 0;
    ids_.clear();
    next_.clear();
  }

  int32_t Intern(const ParseState& state) {
    key_.assign(state.stacks.begin(), state.stacks.end());
    key_.push_back(state.complete ? 1 : 0);
    auto [it, inserted] = ids_.try_emplace(key_, count_);
    if (!inserted) return it->second;
    if (static_cast<size_t>(count_) == states_.size()) states_.emplace_back();
    states_[count_] = state;
    next_.resize(next_.size() + 256, kUnknown);
    return count_++;
  }

  // The state after `byte` from state `from`, or kDead.
  int32_t Step(const GrammarStepper& stepper, int32_t from, uint8_t byte) {
    const size_t slot = static_cast<size_t>(from) * 256 + byte;
    if (next_[slot] == kUnknown) {
      next_[slot] = stepper.Advance(states_[from], byte, &scratch_) ? Intern(scratch_) : kDead;
    }
    return next_[slot];
  }

  bool CanContinue(int32_t id) const { return !states_[id].stacks.empty(); }

 private:
  int32_t count_ = 0;
  std::vector<ParseState> states_;  // [0, count_) in use; the rest kept for reuse
  absl::flat_hash_map<std::vector<int32_t>, int32_t> ids_;
  std::vector<int32_t> next_;  // [state * 256 + byte]
  std::vector<int32_t> key_;
  ParseState scratch_;
};

}  // namespace

TokenMask::TokenMask(int32_t vocab_size)
    : vocab_size_(vocab_size), words_((static_cast<size_t>(vocab_size) + 63) / 64, 0) {}

void TokenMask::Clear() { std::fill(words_.begin(), words_.end(), 0); }

int32_t TokenMask::CountAllowed() const {
  int32_t count = 0;
  for (uint64_t w : words_) count += std::popcount(w);
  return count;
}

void ComputeAllowedTokens(const GrammarStepper& stepper, const TokenVocabulary::Impl& vocabulary,
                          const ParseState& state, TokenMask* mask) {
  mask->Clear();
  if (state.stacks.empty()) return;
  const TokenTrie& trie = vocabulary.trie;
  thread_local WalkStates walk;
  thread_local std::vector<int32_t> path;  // path[d]: the state after the path's first d bytes
  walk.Reset();
  path.resize(trie.max_depth + 1);
  path[0] = walk.Intern(state);
  const TokenTrie::Node* nodes = trie.nodes.data();
  const int32_t count = trie.node_count();
  int32_t i = 1;
  while (i < count) {
    const TokenTrie::Node& node = nodes[i];
    // Preorder: path[depth - 1] is this node's parent's state.
    const int32_t next = walk.Step(stepper, path[node.depth - 1], node.byte);
    if (next == kDead) {
      i = node.end;
      continue;
    }
    for (int32_t t = node.token_begin; t < nodes[i + 1].token_begin; ++t) {
      mask->Allow(trie.tokens[t]);
    }
    if (!walk.CanContinue(next)) {  // complete, nothing may follow
      i = node.end;
      continue;
    }
    path[node.depth] = next;
    ++i;
  }
}

}  // namespace tern::structured
