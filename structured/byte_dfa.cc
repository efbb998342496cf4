#include "structured/byte_dfa.h"

#include <deque>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tern::structured {
namespace {

absl::Status TooComplex() {
  return absl::InvalidArgumentError(
      absl::StrCat("constraint too complex (automaton above ", kMaxDfaStates, " states)"));
}

// Builds a product automaton breadth first from pairs of component states.
template <typename Step, typename Accept>
absl::StatusOr<ByteDfa> Product(std::pair<int32_t, int32_t> start, Step step, Accept accept) {
  ByteDfa out;
  absl::flat_hash_map<std::pair<int32_t, int32_t>, int32_t> ids;
  std::deque<std::pair<int32_t, int32_t>> queue = {start};
  ids[start] = out.AddState(accept(start));
  while (!queue.empty()) {
    const auto from = queue.front();
    queue.pop_front();
    const int32_t from_id = ids[from];
    for (int b = 0; b < 256; ++b) {
      std::pair<int32_t, int32_t> to;
      if (!step(from, static_cast<uint8_t>(b), &to)) continue;
      auto [it, inserted] = ids.try_emplace(to, out.size());
      if (inserted) {
        if (out.size() >= kMaxDfaStates) return TooComplex();
        out.AddState(accept(to));
        queue.push_back(to);
      }
      out.next[from_id][b] = it->second;
    }
  }
  return out;
}

}  // namespace

int32_t ByteDfa::AddState(bool accept) {
  std::array<int32_t, 256> row;
  row.fill(-1);
  next.push_back(row);
  accepting.push_back(accept);
  return size() - 1;
}

ByteDfa LiteralsDfa(const std::vector<std::string>& literals) {
  ByteDfa dfa;
  dfa.start = dfa.AddState(false);
  for (const std::string& text : literals) {
    int32_t state = dfa.start;
    for (char c : text) {
      int32_t& to = dfa.next[state][static_cast<uint8_t>(c)];
      if (to < 0) {
        const int32_t added = dfa.AddState(false);
        dfa.next[state][static_cast<uint8_t>(c)] = added;
      }
      state = dfa.next[state][static_cast<uint8_t>(c)];
    }
    dfa.accepting[state] = true;
  }
  return dfa;
}

absl::StatusOr<ByteDfa> WithCharCount(const ByteDfa& dfa, int64_t min_chars, int64_t max_chars) {
  const int64_t cap = max_chars >= 0 ? max_chars : min_chars;
  if (static_cast<int64_t>(dfa.size()) * (cap + 1) > int64_t{4} * kMaxDfaStates) {
    return TooComplex();
  }
  const auto step = [&](std::pair<int32_t, int32_t> from, uint8_t b,
                        std::pair<int32_t, int32_t>* to) {
    const int32_t t = dfa.next[from.first][b];
    if (t < 0) return false;
    int64_t count = from.second + ((b & 0xC0) != 0x80 ? 1 : 0);
    if (max_chars >= 0 && count > max_chars) return false;
    if (max_chars < 0 && count > min_chars) count = min_chars;
    *to = {t, static_cast<int32_t>(count)};
    return true;
  };
  const auto accept = [&](std::pair<int32_t, int32_t> s) {
    return dfa.accepting[s.first] && s.second >= min_chars;
  };
  return Product({dfa.start, 0}, step, accept);
}

absl::StatusOr<ByteDfa> Difference(const ByteDfa& a, const ByteDfa& b) {
  const auto step = [&](std::pair<int32_t, int32_t> from, uint8_t x,
                        std::pair<int32_t, int32_t>* to) {
    const int32_t ta = a.next[from.first][x];
    if (ta < 0) return false;
    *to = {ta, from.second >= 0 ? b.next[from.second][x] : -1};
    return true;
  };
  const auto accept = [&](std::pair<int32_t, int32_t> s) {
    return a.accepting[s.first] && !(s.second >= 0 && b.accepting[s.second]);
  };
  return Product({a.start, b.start}, step, accept);
}

std::string JsonEscapeFor(uint8_t b) {
  switch (b) {
    case '"':
      return "\\\"";
    case '\\':
      return "\\\\";
    case '\b':
      return "\\b";
    case '\f':
      return "\\f";
    case '\n':
      return "\\n";
    case '\r':
      return "\\r";
    case '\t':
      return "\\t";
    default:
      break;
  }
  if (b < 0x20) return absl::StrFormat("\\u%04x", b);
  return "";
}

int32_t EmitDfa(const ByteDfa& dfa, DfaEncoding encoding, const std::string& name,
                GrammarBuilder* builder) {
  // Live states: those that can still reach an accepting state.
  std::vector<std::vector<int32_t>> reverse(dfa.size());
  for (int32_t s = 0; s < dfa.size(); ++s) {
    for (int b = 0; b < 256; ++b) {
      if (dfa.next[s][b] >= 0) reverse[dfa.next[s][b]].push_back(s);
    }
  }
  std::vector<bool> live(dfa.size(), false);
  std::vector<int32_t> stack;
  for (int32_t s = 0; s < dfa.size(); ++s) {
    if (dfa.accepting[s]) live[s] = true, stack.push_back(s);
  }
  while (!stack.empty()) {
    const int32_t s = stack.back();
    stack.pop_back();
    for (int32_t p : reverse[s]) {
      if (!live[p]) live[p] = true, stack.push_back(p);
    }
  }
  if (!live[dfa.start]) return -1;

  std::vector<int32_t> rules(dfa.size(), -1);
  const auto rule_for = [&](int32_t s) {
    if (rules[s] < 0) {
      rules[s] = builder->AddRule(absl::StrCat(name, "#", s));
      stack.push_back(s);
    }
    return rules[s];
  };
  const int32_t start_rule = rule_for(dfa.start);
  while (!stack.empty()) {
    const int32_t s = stack.back();
    stack.pop_back();
    const int32_t rule = rules[s];
    if (dfa.accepting[s]) builder->AddAlternative(rule, {});
    std::vector<std::pair<int32_t, ByteSet>> targets;
    for (int b = 0; b < 256; ++b) {
      const int32_t t = dfa.next[s][b];
      if (t < 0 || !live[t]) continue;
      auto it = targets.begin();
      while (it != targets.end() && it->first != t) ++it;
      if (it == targets.end()) it = targets.insert(targets.end(), {t, ByteSet{}});
      it->second.Add(static_cast<uint8_t>(b));
    }
    for (const auto& [t, bytes] : targets) {
      const int32_t target_rule = rule_for(t);
      ByteSet raw = bytes;
      if (encoding == DfaEncoding::kJsonStringContent) {
        for (int b = 0; b < 256; ++b) {
          if (!bytes.Contains(static_cast<uint8_t>(b))) continue;
          const std::string escape = JsonEscapeFor(static_cast<uint8_t>(b));
          if (escape.empty()) continue;
          raw = raw.Minus(ByteSet::Single(static_cast<uint8_t>(b)));
          Sequence seq = LiteralSequence(escape);
          seq.push_back(Symbol::Rule(target_rule));
          builder->AddAlternative(rule, std::move(seq));
        }
      }
      if (!raw.Empty())
        builder->AddAlternative(rule, {Symbol::Bytes(raw), Symbol::Rule(target_rule)});
    }
  }
  return start_rule;
}

}  // namespace tern::structured
