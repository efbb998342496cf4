#include "structured/grammar.h"

#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tern::structured {

ByteSet ByteSet::Single(uint8_t b) {
  ByteSet set;
  set.Add(b);
  return set;
}

ByteSet ByteSet::Range(uint8_t lo, uint8_t hi) {
  ByteSet set;
  set.AddRange(lo, hi);
  return set;
}

void ByteSet::AddRange(uint8_t lo, uint8_t hi) {
  for (int b = lo; b <= hi; ++b) Add(static_cast<uint8_t>(b));
}

ByteSet& ByteSet::operator|=(const ByteSet& o) {
  for (int i = 0; i < 4; ++i) bits[i] |= o.bits[i];
  return *this;
}

ByteSet ByteSet::Intersect(const ByteSet& o) const {
  ByteSet r;
  for (int i = 0; i < 4; ++i) r.bits[i] = bits[i] & o.bits[i];
  return r;
}

ByteSet ByteSet::Minus(const ByteSet& o) const {
  ByteSet r;
  for (int i = 0; i < 4; ++i) r.bits[i] = bits[i] & ~o.bits[i];
  return r;
}

Sequence LiteralSequence(std::string_view text) {
  Sequence seq;
  seq.reserve(text.size());
  for (char c : text) seq.push_back(Symbol::Byte(static_cast<uint8_t>(c)));
  return seq;
}

int32_t GrammarBuilder::AddRule(std::string name) {
  rules_.push_back(Rule{std::move(name), {}});
  return static_cast<int32_t>(rules_.size()) - 1;
}

void GrammarBuilder::AddAlternative(int32_t rule, Sequence sequence) {
  rules_[rule].alternatives.push_back(std::move(sequence));
}

int32_t GrammarBuilder::AddRule(std::string name, std::vector<Sequence> alternatives) {
  rules_.push_back(Rule{std::move(name), std::move(alternatives)});
  return static_cast<int32_t>(rules_.size()) - 1;
}

namespace {

// Whether every symbol of `seq` can match: referenced rules in `set`, byte
// sets non-empty.
bool AllRefsIn(const Sequence& seq, const std::vector<bool>& set) {
  for (const Symbol& s : seq) {
    if (s.rule >= 0 ? !set[s.rule] : s.bytes.Empty()) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<Grammar> GrammarBuilder::Build(int32_t root) const {
  const size_t n = rules_.size();
  // Productive rules derive some finite string; alternatives through the
  // others are dropped, so every parse the matcher keeps can be completed.
  std::vector<bool> productive(n, false);
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t r = 0; r < n; ++r) {
      if (productive[r]) continue;
      for (const Sequence& alt : rules_[r].alternatives) {
        if (AllRefsIn(alt, productive)) {
          productive[r] = changed = true;
          break;
        }
      }
    }
  }
  if (!productive[root]) {
    return absl::InvalidArgumentError("the constraint admits no output at all");
  }
  std::vector<bool> nullable(n, false);
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t r = 0; r < n; ++r) {
      if (nullable[r] || !productive[r]) continue;
      for (const Sequence& alt : rules_[r].alternatives) {
        bool all = AllRefsIn(alt, productive);
        for (const Symbol& s : alt) all = all && s.rule >= 0 && nullable[s.rule];
        if (all) {
          nullable[r] = changed = true;
          break;
        }
      }
    }
  }
  // Left references: rules reachable from a rule without consuming a byte. A
  // cycle among them would make the matcher's expansion endless.
  std::vector<std::vector<int32_t>> left(n);
  for (size_t r = 0; r < n; ++r) {
    for (const Sequence& alt : rules_[r].alternatives) {
      if (!AllRefsIn(alt, productive)) continue;
      for (const Symbol& s : alt) {
        if (s.rule < 0) break;
        left[r].push_back(s.rule);
        if (!nullable[s.rule]) break;
      }
    }
  }
  std::vector<uint8_t> color(n, 0);  // 0 new, 1 on the path, 2 done
  std::vector<std::pair<int32_t, size_t>> path;
  for (size_t start = 0; start < n; ++start) {
    if (color[start] != 0) continue;
    path.emplace_back(static_cast<int32_t>(start), 0);
    color[start] = 1;
    while (!path.empty()) {
      auto& [rule, next] = path.back();
      if (next == left[rule].size()) {
        color[rule] = 2;
        path.pop_back();
        continue;
      }
      const int32_t to = left[rule][next++];
      if (color[to] == 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("the constraint is left-recursive (", rules_[to].name,
                         " refers to itself before any output; a $ref cycle without content?)"));
      }
      if (color[to] == 0) {
        color[to] = 1;
        path.emplace_back(to, 0);
      }
    }
  }

  Grammar g;
  absl::flat_hash_map<std::array<uint64_t, 4>, int32_t> set_ids;
  g.elements_ = {static_cast<int32_t>(root), Grammar::kEnd};
  g.rule_offsets_.push_back(0);
  for (size_t r = 0; r < n; ++r) {
    for (const Sequence& alt : rules_[r].alternatives) {
      if (!productive[r] || !AllRefsIn(alt, productive)) continue;
      g.alternative_starts_.push_back(static_cast<int32_t>(g.elements_.size()));
      for (const Symbol& s : alt) {
        if (s.rule >= 0) {
          g.elements_.push_back(s.rule);
          continue;
        }
        auto [it, inserted] =
            set_ids.try_emplace(s.bytes.bits, static_cast<int32_t>(g.byte_sets_.size()));
        if (inserted) g.byte_sets_.push_back(s.bytes);
        g.elements_.push_back(Grammar::kFirstByteSet - it->second);
      }
      g.elements_.push_back(Grammar::kEnd);
    }
    g.rule_offsets_.push_back(static_cast<int32_t>(g.alternative_starts_.size()));
  }
  return g;
}

}  // namespace tern::structured
