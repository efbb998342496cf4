#include "structured/utf8_ranges.h"

#include <algorithm>

namespace tern::structured {
namespace {

int EncodedLength(uint32_t cp) {
  if (cp < 0x80) return 1;
  if (cp < 0x800) return 2;
  if (cp < 0x10000) return 3;
  return 4;
}

void Encode(uint32_t cp, uint8_t* bytes) {
  switch (EncodedLength(cp)) {
    case 1:
      bytes[0] = static_cast<uint8_t>(cp);
      break;
    case 2:
      bytes[0] = static_cast<uint8_t>(0xC0 | (cp >> 6));
      bytes[1] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
      break;
    case 3:
      bytes[0] = static_cast<uint8_t>(0xE0 | (cp >> 12));
      bytes[1] = static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F));
      bytes[2] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
      break;
    default:
      bytes[0] = static_cast<uint8_t>(0xF0 | (cp >> 18));
      bytes[1] = static_cast<uint8_t>(0x80 | ((cp >> 12) & 0x3F));
      bytes[2] = static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F));
      bytes[3] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
  }
}

// Splits [lo, hi] until each piece encodes as one sequence of byte ranges:
// same length, and below the first differing byte every byte spans its
// whole continuation range.
void SplitRange(uint32_t lo, uint32_t hi, std::vector<Utf8Sequence>* out) {
  if (lo > hi) return;
  if (lo <= 0xD7FF && hi >= 0xE000) {
    SplitRange(lo, 0xD7FF, out);
    SplitRange(0xE000, hi, out);
    return;
  }
  if (lo >= 0xD800 && lo <= 0xDFFF) lo = 0xE000;
  if (hi >= 0xD800 && hi <= 0xDFFF) hi = 0xD7FF;
  if (lo > hi) return;
  for (uint32_t boundary : {0x7Fu, 0x7FFu, 0xFFFFu}) {
    if (lo <= boundary && hi > boundary) {
      SplitRange(lo, boundary, out);
      SplitRange(boundary + 1, hi, out);
      return;
    }
  }
  for (int i = 1; i < 4; ++i) {
    const uint32_t m = (1u << (6 * i)) - 1;
    if ((lo & ~m) != (hi & ~m)) {
      if ((lo & m) != 0) {
        SplitRange(lo, lo | m, out);
        SplitRange((lo | m) + 1, hi, out);
        return;
      }
      if ((hi & m) != m) {
        SplitRange(lo, (hi & ~m) - 1, out);
        SplitRange(hi & ~m, hi, out);
        return;
      }
    }
  }
  Utf8Sequence seq;
  seq.length = EncodedLength(lo);
  Encode(lo, seq.lo);
  Encode(hi, seq.hi);
  out->push_back(seq);
}

}  // namespace

CodePointSet Normalize(CodePointSet ranges) {
  std::sort(ranges.begin(), ranges.end(),
            [](const CodePointRange& a, const CodePointRange& b) { return a.lo < b.lo; });
  CodePointSet merged;
  for (const CodePointRange& r : ranges) {
    if (r.lo > r.hi) continue;
    if (!merged.empty() && r.lo <= merged.back().hi + 1) {
      merged.back().hi = std::max(merged.back().hi, r.hi);
    } else {
      merged.push_back(r);
    }
  }
  return merged;
}

CodePointSet Complement(const CodePointSet& set) {
  CodePointSet out;
  uint32_t next = 0;
  for (const CodePointRange& r : set) {
    if (r.lo > next) out.push_back({next, r.lo - 1});
    next = r.hi + 1;
  }
  if (next <= kMaxCodePoint) out.push_back({next, kMaxCodePoint});
  // Surrogates are no characters; SplitRange skips them.
  return out;
}

std::vector<Utf8Sequence> Utf8Sequences(const CodePointSet& set) {
  std::vector<Utf8Sequence> out;
  for (const CodePointRange& r : set) SplitRange(r.lo, std::min(r.hi, kMaxCodePoint), &out);
  return out;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  uint8_t bytes[4];
  Encode(cp, bytes);
  out->append(reinterpret_cast<const char*>(bytes), EncodedLength(cp));
}

bool DecodeUtf8(const std::string& text, size_t* pos, uint32_t* cp) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t b0 = byte(*pos);
  int length = 0;
  uint32_t value = 0;
  uint32_t min = 0;
  if (b0 < 0x80) {
    *cp = b0;
    ++*pos;
    return true;
  } else if ((b0 & 0xE0) == 0xC0) {
    length = 2, value = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    length = 3, value = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    length = 4, value = b0 & 0x07, min = 0x10000;
  } else {
    return false;
  }
  if (*pos + length > text.size()) return false;
  for (int i = 1; i < length; ++i) {
    const uint8_t b = byte(*pos + i);
    if ((b & 0xC0) != 0x80) return false;
    value = (value << 6) | (b & 0x3F);
  }
  if (value < min || value > kMaxCodePoint || (value >= 0xD800 && value <= 0xDFFF)) return false;
  *cp = value;
  *pos += length;
  return true;
}

}  // namespace tern::structured
