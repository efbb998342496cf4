#include "structured/regex_compiler.h"

#include <algorithm>
#include <deque>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tern::structured {
namespace {

constexpr size_t kMaxNfaStates = 200000;

// A Thompson NFA: byte-set edges and epsilon edges.
class Nfa {
 public:
  struct Edge {
    ByteSet bytes;
    int32_t to;
  };
  struct Fragment {
    int32_t start;
    int32_t end;
  };

  explicit Nfa(const RegexAst& ast) : ast_(ast) {}

  absl::StatusOr<Fragment> Build(int32_t node_id) {
    if (edges_.size() > kMaxNfaStates) {
      return absl::InvalidArgumentError("regex too large (repetitions expand too far)");
    }
    const RegexNode& node = ast_.nodes[node_id];
    switch (node.kind) {
      case RegexNode::Kind::kEmpty: {
        const Fragment f{NewState(), NewState()};
        Epsilon(f.start, f.end);
        return f;
      }
      case RegexNode::Kind::kClass:
        return BuildClass(node.chars);
      case RegexNode::Kind::kConcat: {
        Fragment f{NewState(), -1};
        f.end = f.start;
        for (int32_t child : node.children) {
          auto c = Build(child);
          if (!c.ok()) return c.status();
          Epsilon(f.end, c->start);
          f.end = c->end;
        }
        return f;
      }
      case RegexNode::Kind::kAlternate: {
        const Fragment f{NewState(), NewState()};
        for (int32_t child : node.children) {
          auto c = Build(child);
          if (!c.ok()) return c.status();
          Epsilon(f.start, c->start);
          Epsilon(c->end, f.end);
        }
        return f;
      }
      case RegexNode::Kind::kRepeat:
        return BuildRepeat(node);
    }
    return absl::InternalError("unknown regex node");
  }

  const std::vector<std::vector<Edge>>& edges() const { return edges_; }
  const std::vector<std::vector<int32_t>>& epsilons() const { return epsilons_; }

 private:
  int32_t NewState() {
    edges_.emplace_back();
    epsilons_.emplace_back();
    return static_cast<int32_t>(edges_.size()) - 1;
  }
  void Epsilon(int32_t from, int32_t to) { epsilons_[from].push_back(to); }

  Fragment BuildClass(const CodePointSet& chars) {
    const Fragment f{NewState(), NewState()};
    for (const Utf8Sequence& seq : Utf8Sequences(chars)) {
      int32_t state = f.start;
      for (int i = 0; i < seq.length; ++i) {
        const int32_t to = i + 1 == seq.length ? f.end : NewState();
        edges_[state].push_back(Edge{ByteSet::Range(seq.lo[i], seq.hi[i]), to});
        state = to;
      }
    }
    return f;
  }

  absl::StatusOr<Fragment> BuildRepeat(const RegexNode& node) {
    Fragment f{NewState(), -1};
    f.end = f.start;
    const int32_t child = node.children[0];
    for (int32_t i = 0; i < node.min; ++i) {
      auto c = Build(child);
      if (!c.ok()) return c.status();
      Epsilon(f.end, c->start);
      f.end = c->end;
    }
    if (node.max < 0) {
      auto c = Build(child);
      if (!c.ok()) return c.status();
      const int32_t loop = NewState();
      Epsilon(f.end, loop);
      Epsilon(loop, c->start);
      Epsilon(c->end, loop);
      f.end = loop;
      return f;
    }
    const int32_t end = NewState();
    for (int32_t i = node.min; i < node.max; ++i) {
      auto c = Build(child);
      if (!c.ok()) return c.status();
      Epsilon(f.end, end);
      Epsilon(f.end, c->start);
      f.end = c->end;
    }
    Epsilon(f.end, end);
    f.end = end;
    return f;
  }

  const RegexAst& ast_;
  std::vector<std::vector<Edge>> edges_;
  std::vector<std::vector<int32_t>> epsilons_;
};

void Closure(const Nfa& nfa, std::vector<int32_t>* states, std::vector<uint8_t>* seen) {
  std::vector<int32_t> stack = *states;
  for (int32_t s : *states) (*seen)[s] = 1;
  while (!stack.empty()) {
    const int32_t s = stack.back();
    stack.pop_back();
    for (int32_t t : nfa.epsilons()[s]) {
      if (!(*seen)[t]) (*seen)[t] = 1, states->push_back(t), stack.push_back(t);
    }
  }
  for (int32_t s : *states) (*seen)[s] = 0;
  std::sort(states->begin(), states->end());
}

}  // namespace

absl::StatusOr<ByteDfa> CompileRegexAst(const RegexAst& ast) {
  Nfa nfa(ast);
  auto whole = nfa.Build(ast.root);
  if (!whole.ok()) return whole.status();

  // Bytes no edge set tells apart share one class; the subset construction
  // then steps once per class instead of once per byte.
  std::array<int32_t, 256> byte_class{};
  int32_t class_count = 1;
  absl::flat_hash_set<std::array<uint64_t, 4>> seen_sets;
  for (const auto& edges : nfa.edges()) {
    for (const Nfa::Edge& e : edges) {
      if (!seen_sets.insert(e.bytes.bits).second) continue;
      std::vector<int32_t> remap(static_cast<size_t>(class_count) * 2, -1);
      int32_t next_count = 0;
      for (int b = 0; b < 256; ++b) {
        int32_t& slot = remap[byte_class[b] * 2 + (e.bytes.Contains(b) ? 1 : 0)];
        if (slot < 0) slot = next_count++;
        byte_class[b] = slot;
      }
      class_count = next_count;
    }
  }
  std::vector<int> representative(class_count, -1);
  for (int b = 0; b < 256; ++b) {
    if (representative[byte_class[b]] < 0) representative[byte_class[b]] = b;
  }

  std::vector<uint8_t> seen(nfa.edges().size(), 0);
  ByteDfa dfa;
  absl::flat_hash_map<std::vector<int32_t>, int32_t> ids;
  std::vector<std::vector<int32_t>> sets;
  const auto intern = [&](std::vector<int32_t> set) -> absl::StatusOr<int32_t> {
    auto it = ids.find(set);
    if (it != ids.end()) return it->second;
    if (dfa.size() >= kMaxDfaStates) {
      return absl::InvalidArgumentError(
          absl::StrCat("regex too complex (DFA above ", kMaxDfaStates, " states)"));
    }
    const bool accept = std::binary_search(set.begin(), set.end(), whole->end);
    const int32_t id = dfa.AddState(accept);
    ids.emplace(set, id);
    sets.push_back(std::move(set));
    return id;
  };
  std::vector<int32_t> start = {whole->start};
  Closure(nfa, &start, &seen);
  auto start_id = intern(std::move(start));
  if (!start_id.ok()) return start_id.status();
  dfa.start = *start_id;
  for (int32_t d = 0; d < dfa.size(); ++d) {
    std::vector<int32_t> class_target(class_count, -1);
    for (int32_t c = 0; c < class_count; ++c) {
      std::vector<int32_t> moved;
      for (int32_t s : sets[d]) {
        for (const Nfa::Edge& e : nfa.edges()[s]) {
          if (e.bytes.Contains(representative[c]) && !seen[e.to]) {
            seen[e.to] = 1;
            moved.push_back(e.to);
          }
        }
      }
      for (int32_t s : moved) seen[s] = 0;
      if (moved.empty()) continue;
      Closure(nfa, &moved, &seen);
      auto id = intern(std::move(moved));
      if (!id.ok()) return id.status();
      class_target[c] = *id;
    }
    for (int b = 0; b < 256; ++b) dfa.next[d][b] = class_target[byte_class[b]];
  }
  return dfa;
}

absl::StatusOr<ByteDfa> CompileRegex(const std::string& pattern) {
  auto ast = ParseRegex(pattern);
  if (!ast.ok()) return ast.status();
  return CompileRegexAst(*ast);
}

}  // namespace tern::structured
