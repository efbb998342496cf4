#include "gateway/tokenizer/byte_level.h"

#include <array>

namespace tern::gateway {
namespace {

struct ByteTables {
  std::array<char32_t, 256> byte_to_cp{};
  // Stand-ins are all below U+0144 (256 + 68 remapped bytes).
  std::array<int16_t, 512> cp_to_byte{};
};

// GPT-2's table: printable Latin-1 bytes stand for themselves; the other 68
// bytes (controls, space, DEL, NBSP, soft hyphen...) are shifted to U+0100+n
// in byte order, so no vocabulary entry contains whitespace or controls.
ByteTables BuildTables() {
  ByteTables t;
  t.cp_to_byte.fill(-1);
  int shifted = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const char32_t cp =
        printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + shifted++);
    t.byte_to_cp[b] = cp;
    t.cp_to_byte[cp] = static_cast<int16_t>(b);
  }
  return t;
}

const ByteTables& Tables() {
  static const ByteTables tables = BuildTables();
  return tables;
}

// Length of the well-formed sequence led by `lead` (0 when `lead` can never
// start one) and the allowed range of its second byte (Unicode Table 3-7).
int SequenceLength(uint8_t lead, uint8_t* lo, uint8_t* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) {
    if (lead == 0xE0) *lo = 0xA0;
    if (lead == 0xED) *hi = 0x9F;
    return 3;
  }
  if (lead >= 0xF0 && lead <= 0xF4) {
    if (lead == 0xF0) *lo = 0x90;
    if (lead == 0xF4) *hi = 0x8F;
    return 4;
  }
  return 0;
}

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

}  // namespace

char32_t ByteToUnicode(uint8_t b) { return Tables().byte_to_cp[b]; }

std::optional<uint8_t> UnicodeToByte(char32_t cp) {
  if (cp >= Tables().cp_to_byte.size()) return std::nullopt;
  const int16_t b = Tables().cp_to_byte[cp];
  if (b < 0) return std::nullopt;
  return static_cast<uint8_t>(b);
}

std::string BytesToByteLevel(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) AppendUtf8(ByteToUnicode(c), out);
  return out;
}

std::optional<std::string> ByteLevelToBytes(std::string_view text) {
  if (!IsValidUtf8(text)) return std::nullopt;
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    size_t len = 0;
    const std::optional<uint8_t> b = UnicodeToByte(DecodeUtf8At(text, pos, &len));
    if (!b.has_value()) return std::nullopt;
    out.push_back(static_cast<char>(*b));
    pos += len;
  }
  return out;
}

void AppendUtf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

char32_t DecodeUtf8At(std::string_view text, size_t pos, size_t* length) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[pos + i]); };
  const uint8_t lead = byte(0);
  if (lead < 0x80) {
    *length = 1;
    return lead;
  }
  if (lead < 0xE0) {
    *length = 2;
    return (char32_t{lead & 0x1Fu} << 6) | (byte(1) & 0x3Fu);
  }
  if (lead < 0xF0) {
    *length = 3;
    return (char32_t{lead & 0x0Fu} << 12) | (char32_t{byte(1) & 0x3Fu} << 6) | (byte(2) & 0x3Fu);
  }
  *length = 4;
  return (char32_t{lead & 0x07u} << 18) | (char32_t{byte(1) & 0x3Fu} << 12) |
         (char32_t{byte(2) & 0x3Fu} << 6) | (byte(3) & 0x3Fu);
}

size_t AppendUtf8Lossy(std::string_view bytes, bool hold_incomplete_tail, std::string& out) {
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    // Copy runs of ASCII at once: the common case for generated text.
    size_t ascii_end = i;
    while (ascii_end < n && static_cast<uint8_t>(bytes[ascii_end]) < 0x80) ++ascii_end;
    out.append(bytes.data() + i, ascii_end - i);
    i = ascii_end;
    if (i == n) break;

    uint8_t lo = 0;
    uint8_t hi = 0;
    const int len = SequenceLength(static_cast<uint8_t>(bytes[i]), &lo, &hi);
    if (len == 0) {
      out.append(kReplacement);
      ++i;
      continue;
    }
    size_t j = i + 1;
    int have = 1;
    while (have < len && j < n) {
      const uint8_t c = static_cast<uint8_t>(bytes[j]);
      if (c < lo || c > hi) break;
      lo = 0x80;
      hi = 0xBF;
      ++j;
      ++have;
    }
    if (have == len) {
      out.append(bytes.data() + i, j - i);
    } else if (j == n && hold_incomplete_tail) {
      return n - i;
    } else {
      // The maximal subpart i..j becomes a single replacement character.
      out.append(kReplacement);
    }
    i = j;
  }
  return 0;
}

bool IsValidUtf8(std::string_view text) {
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    const uint8_t lead = static_cast<uint8_t>(text[i]);
    if (lead < 0x80) {
      ++i;
      continue;
    }
    uint8_t lo = 0;
    uint8_t hi = 0;
    const int len = SequenceLength(lead, &lo, &hi);
    if (len == 0 || i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      const uint8_t c = static_cast<uint8_t>(text[i + k]);
      if (c < lo || c > hi) return false;
      lo = 0x80;
      hi = 0xBF;
    }
    i += len;
  }
  return true;
}

std::string SanitizeUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  AppendUtf8Lossy(text, /*hold_incomplete_tail=*/false, out);
  return out;
}

}  // namespace tern::gateway
