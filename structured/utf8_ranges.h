// Sets of Unicode scalar values as sorted code point ranges, and their UTF-8
// encodings as sequences of byte ranges (so a character class becomes a small
// byte-level automaton).
//
// Thread safety: pure functions.
#ifndef TERN_STRUCTURED_UTF8_RANGES_H_
#define TERN_STRUCTURED_UTF8_RANGES_H_

#include <cstdint>
#include <string>
#include <vector>

namespace tern::structured {

inline constexpr uint32_t kMaxCodePoint = 0x10FFFF;

struct CodePointRange {
  uint32_t lo;
  uint32_t hi;  // inclusive
};

// Sorted, non-overlapping, non-adjacent ranges.
using CodePointSet = std::vector<CodePointRange>;

// `ranges` sorted and merged.
CodePointSet Normalize(CodePointSet ranges);

// Every scalar value (surrogates excluded) not in `set`.
CodePointSet Complement(const CodePointSet& set);

// One UTF-8 encoding shape: byte i lies in [lo[i], hi[i]] for i < length.
struct Utf8Sequence {
  int length = 0;
  uint8_t lo[4] = {};
  uint8_t hi[4] = {};
};

// The byte-range sequences whose union encodes exactly the scalar values in
// `set` (surrogates are skipped).
std::vector<Utf8Sequence> Utf8Sequences(const CodePointSet& set);

// Appends the UTF-8 encoding of scalar value `cp`.
void AppendUtf8(uint32_t cp, std::string* out);

// Decodes the character at text[*pos], advancing *pos; false when the bytes
// there are not well-formed UTF-8.
bool DecodeUtf8(const std::string& text, size_t* pos, uint32_t* cp);

}  // namespace tern::structured

#endif  // TERN_STRUCTURED_UTF8_RANGES_H_
