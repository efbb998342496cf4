#include "structured/regex_parser.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tern::structured {
namespace {

CodePointSet Digits() { return {{'0', '9'}}; }
CodePointSet WordChars() { return Normalize({{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}}); }
CodePointSet Spaces() { return Normalize({{'\t', '\r'}, {' ', ' '}}); }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class RegexParser {
 public:
  explicit RegexParser(const std::string& pattern) : p_(pattern) {}

  absl::StatusOr<RegexAst> Parse() {
    if (Peek('^')) ++pos_;
    auto root = ParseAlternation();
    if (!root.ok()) return root.status();
    if (pos_ < p_.size()) {
      if (p_[pos_] == ')') return Error("unbalanced ')'");
      return Error(absl::StrCat("unsupported construct '", std::string(1, p_[pos_]), "'"));
    }
    ast_.root = *root;
    return std::move(ast_);
  }

 private:
  absl::Status Error(const std::string& what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("regex: ", what, " at offset ", pos_, " in pattern '", p_, "'"));
  }
  bool Peek(char c) const { return pos_ < p_.size() && p_[pos_] == c; }
  bool AtEndAnchor() const { return Peek('$') && pos_ + 1 == p_.size(); }

  int32_t Add(RegexNode node) {
    ast_.nodes.push_back(std::move(node));
    return static_cast<int32_t>(ast_.nodes.size()) - 1;
  }
  int32_t AddClass(CodePointSet chars) {
    RegexNode node;
    node.kind = RegexNode::Kind::kClass;
    node.chars = Normalize(std::move(chars));
    return Add(std::move(node));
  }

  absl::StatusOr<int32_t> ParseAlternation() {
    RegexNode alt;
    alt.kind = RegexNode::Kind::kAlternate;
    while (true) {
      auto branch = ParseConcat();
      if (!branch.ok()) return branch.status();
      alt.children.push_back(*branch);
      if (!Peek('|')) break;
      ++pos_;
    }
    if (alt.children.size() == 1) return alt.children[0];
    return Add(std::move(alt));
  }

  absl::StatusOr<int32_t> ParseConcat() {
    RegexNode concat;
    concat.kind = RegexNode::Kind::kConcat;
    while (pos_ < p_.size() && !Peek('|') && !Peek(')')) {
      if (AtEndAnchor()) {
        ++pos_;
        break;
      }
      auto atom = ParseAtom();
      if (!atom.ok()) return atom.status();
      auto repeated = ParseQuantifiers(*atom);
      if (!repeated.ok()) return repeated.status();
      concat.children.push_back(*repeated);
    }
    if (concat.children.size() == 1) return concat.children[0];
    return Add(std::move(concat));
  }

  // Reads {n}, {n,} or {n,m} at pos_; false (pos_ unchanged) when the brace
  // does not start one, and it is then a literal '{'.
  bool ReadBraces(int32_t* min, int32_t* max) {
    size_t i = pos_ + 1;
    const auto number = [&](int32_t* value) {
      const size_t start = i;
      int64_t v = 0;
      while (i < p_.size() && p_[i] >= '0' && p_[i] <= '9') {
        v = std::min<int64_t>(v * 10 + (p_[i] - '0'), int64_t{1} << 30);
        ++i;
      }
      *value = static_cast<int32_t>(v);
      return i > start;
    };
    if (!number(min)) return false;
    *max = *min;
    if (i < p_.size() && p_[i] == ',') {
      ++i;
      if (!number(max)) *max = -1;
    }
    if (i >= p_.size() || p_[i] != '}') return false;
    pos_ = i + 1;
    return true;
  }

  absl::StatusOr<int32_t> ParseQuantifiers(int32_t atom) {
    while (pos_ < p_.size()) {
      int32_t min = 0;
      int32_t max = -1;
      const char c = p_[pos_];
      if (c == '*') {
        ++pos_;
      } else if (c == '+') {
        min = 1, ++pos_;
      } else if (c == '?') {
        max = 1, ++pos_;
      } else if (c == '{' && ReadBraces(&min, &max)) {
        if (max >= 0 && max < min) return Error("quantifier {n,m} with m < n");
        if (min > kMaxRegexRepeat || max > kMaxRegexRepeat) {
          return Error(absl::StrCat("repetition count above ", kMaxRegexRepeat));
        }
      } else {
        return atom;
      }
      if (Peek('?')) ++pos_;  // lazy: same language
      if (Peek('+')) return Error("unsupported possessive quantifier");
      RegexNode repeat;
      repeat.kind = RegexNode::Kind::kRepeat;
      repeat.children = {atom};
      repeat.min = min;
      repeat.max = max;
      atom = Add(std::move(repeat));
    }
    return atom;
  }

  absl::StatusOr<int32_t> ParseAtom() {
    const char c = p_[pos_];
    if (c == '(') {
      ++pos_;
      if (Peek('?')) {
        if (pos_ + 1 < p_.size() && p_[pos_ + 1] == ':') {
          pos_ += 2;
        } else {
          return Error(absl::StrCat("unsupported group '(?", p_.substr(pos_ + 1, 1), "'"));
        }
      }
      auto inner = ParseAlternation();
      if (!inner.ok()) return inner.status();
      if (!Peek(')')) return Error("missing ')'");
      ++pos_;
      return *inner;
    }
    if (c == '[') return ParseClass();
    if (c == '.') {
      ++pos_;
      return AddClass(Complement({{'\n', '\n'}}));
    }
    if (c == '\\') {
      CodePointSet set;
      auto status = ParseEscape(&set);
      if (!status.ok()) return status;
      return AddClass(std::move(set));
    }
    if (c == '^' || c == '$')
      return Error(
          absl::StrCat("anchor '", std::string(1, c), "' not at the pattern's start or end"));
    if (c == '*' || c == '+' || c == '?') return Error("quantifier without an operand");
    uint32_t cp = 0;
    if (!DecodeUtf8(p_, &pos_, &cp)) return Error("invalid UTF-8");
    return AddClass({{cp, cp}});
  }

  // At a backslash; sets *set to the characters the escape stands for.
  absl::Status ParseEscape(CodePointSet* set) {
    ++pos_;
    if (pos_ >= p_.size()) return Error("trailing backslash");
    const char c = p_[pos_++];
    switch (c) {
      case 'd':
        *set = Digits();
        return absl::OkStatus();
      case 'D':
        *set = Complement(Digits());
        return absl::OkStatus();
      case 'w':
        *set = WordChars();
        return absl::OkStatus();
      case 'W':
        *set = Complement(WordChars());
        return absl::OkStatus();
      case 's':
        *set = Spaces();
        return absl::OkStatus();
      case 'S':
        *set = Complement(Spaces());
        return absl::OkStatus();
      case 'n':
        *set = {{'\n', '\n'}};
        return absl::OkStatus();
      case 'r':
        *set = {{'\r', '\r'}};
        return absl::OkStatus();
      case 't':
        *set = {{'\t', '\t'}};
        return absl::OkStatus();
      case 'f':
        *set = {{'\f', '\f'}};
        return absl::OkStatus();
      case 'v':
        *set = {{'\v', '\v'}};
        return absl::OkStatus();
      case 'x':
      case 'u': {
        const size_t digits = c == 'x' ? 2 : 4;
        uint32_t cp = 0;
        for (size_t i = 0; i < digits; ++i) {
          const int h = pos_ < p_.size() ? HexValue(p_[pos_]) : -1;
          if (h < 0) return Error(absl::StrCat("bad \\", std::string(1, c), " escape"));
          cp = cp * 16 + static_cast<uint32_t>(h);
          ++pos_;
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) return Error("surrogate in \\u escape");
        *set = {{cp, cp}};
        return absl::OkStatus();
      }
      default:
        break;
    }
    const bool punctuation = (c >= '!' && c <= '/') || (c >= ':' && c <= '@') ||
                             (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
    if (!punctuation) {
      --pos_;
      return Error(absl::StrCat("unsupported escape '\\", std::string(1, c), "'"));
    }
    *set = {{static_cast<uint32_t>(c), static_cast<uint32_t>(c)}};
    return absl::OkStatus();
  }

  absl::StatusOr<int32_t> ParseClass() {
    ++pos_;  // '['
    bool negate = false;
    if (Peek('^')) negate = true, ++pos_;
    CodePointSet set;
    bool first = true;
    while (true) {
      if (pos_ >= p_.size()) return Error("missing ']'");
      if (p_[pos_] == ']' && !first) break;
      first = false;
      if (p_[pos_] == '[' && pos_ + 1 < p_.size() && p_[pos_ + 1] == ':') {
        return Error("unsupported POSIX class '[:'");
      }
      CodePointSet item;
      auto status = ParseClassItem(&item);
      if (!status.ok()) return status;
      // A range a-b: both ends single characters.
      if (Peek('-') && pos_ + 1 < p_.size() && p_[pos_ + 1] != ']') {
        ++pos_;
        CodePointSet hi;
        status = ParseClassItem(&hi);
        if (!status.ok()) return status;
        if (item.size() != 1 || item[0].lo != item[0].hi || hi.size() != 1 ||
            hi[0].lo != hi[0].hi) {
          return Error("class range with a non-character end");
        }
        if (hi[0].lo < item[0].lo) return Error("class range out of order");
        item = {{item[0].lo, hi[0].lo}};
      }
      set.insert(set.end(), item.begin(), item.end());
    }
    ++pos_;  // ']'
    set = Normalize(std::move(set));
    return AddClass(negate ? Complement(set) : set);
  }

  absl::Status ParseClassItem(CodePointSet* item) {
    if (p_[pos_] == '\\') {
      if (pos_ + 1 < p_.size() && p_[pos_ + 1] == 'b') {  // backspace inside a class
        pos_ += 2;
        *item = {{'\b', '\b'}};
        return absl::OkStatus();
      }
      return ParseEscape(item);
    }
    uint32_t cp = 0;
    if (!DecodeUtf8(p_, &pos_, &cp)) return Error("invalid UTF-8");
    *item = {{cp, cp}};
    return absl::OkStatus();
  }

  const std::string& p_;
  size_t pos_ = 0;
  RegexAst ast_;
};

}  // namespace

absl::StatusOr<RegexAst> ParseRegex(const std::string& pattern) {
  return RegexParser(pattern).Parse();
}

}  // namespace tern::structured
