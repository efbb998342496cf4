#include "gateway/chat_template/jinja_unicode.h"

#include <locale.h>
#include <wctype.h>

namespace tern::gateway::jinja {
namespace {

constexpr char32_t kReplacement = 0xFFFD;

bool IsContinuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// The C.UTF-8 locale carries glibc's Unicode case tables; it is created once
// and only read afterwards (towupper_l is thread-safe on a fixed locale).
locale_t CaseLocale() {
  static const locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(nullptr));
  return loc;
}

char32_t MapCase(char32_t cp, bool upper) {
  if (cp < 0x80) {
    if (upper && cp >= 'a' && cp <= 'z') return cp - 32;
    if (!upper && cp >= 'A' && cp <= 'Z') return cp + 32;
    return cp;
  }
  locale_t loc = CaseLocale();
  if (loc == static_cast<locale_t>(nullptr)) return cp;
  const wint_t mapped =
      upper ? towupper_l(static_cast<wint_t>(cp), loc) : towlower_l(static_cast<wint_t>(cp), loc);
  return static_cast<char32_t>(mapped);
}

std::string ConvertCase(std::string_view s, bool upper) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    char32_t cp;
    const size_t n = DecodeUtf8(s, i, &cp);
    if (upper && cp == 0xDF) {
      out += "SS";  // JavaScript applies the full mapping of sharp s.
    } else if (cp == kReplacement && n == 1 && static_cast<unsigned char>(s[i]) >= 0x80) {
      out.push_back(s[i]);  // keep undecodable bytes as they were
    } else {
      AppendUtf8(MapCase(cp, upper), &out);
    }
    i += n;
  }
  return out;
}

}  // namespace

size_t DecodeUtf8(std::string_view s, size_t pos, char32_t* cp) {
  const auto c0 = static_cast<unsigned char>(s[pos]);
  if (c0 < 0x80) {
    *cp = c0;
    return 1;
  }
  size_t len;
  char32_t value;
  char32_t min;
  if ((c0 & 0xE0) == 0xC0) {
    len = 2, value = c0 & 0x1F, min = 0x80;
  } else if ((c0 & 0xF0) == 0xE0) {
    len = 3, value = c0 & 0x0F, min = 0x800;
  } else if ((c0 & 0xF8) == 0xF0) {
    len = 4, value = c0 & 0x07, min = 0x10000;
  } else {
    *cp = kReplacement;
    return 1;
  }
  if (pos + len > s.size()) {
    *cp = kReplacement;
    return 1;
  }
  for (size_t i = 1; i < len; ++i) {
    const auto c = static_cast<unsigned char>(s[pos + i]);
    if (!IsContinuation(c)) {
      *cp = kReplacement;
      return 1;
    }
    value = (value << 6) | (c & 0x3F);
  }
  if (value < min || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) {
    *cp = kReplacement;
    return 1;
  }
  *cp = value;
  return len;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = kReplacement;
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    char32_t cp;
    const size_t n = DecodeUtf8(s, i, &cp);
    if (cp == kReplacement && n == 1 && static_cast<unsigned char>(s[i]) >= 0x80) return false;
    i += n;
  }
  return true;
}

bool IsJsWhitespace(char32_t cp) {
  switch (cp) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x20:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
    case 0xFEFF:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

size_t JsWhitespaceAt(std::string_view s, size_t pos) {
  if (pos >= s.size()) return 0;
  char32_t cp;
  const size_t n = DecodeUtf8(s, pos, &cp);
  return IsJsWhitespace(cp) ? n : 0;
}

size_t JsWhitespaceBefore(std::string_view s, size_t end) {
  if (end == 0) return 0;
  // Walk back over at most three continuation bytes to the lead byte.
  size_t start = end - 1;
  while (start > 0 && end - start < 4 && IsContinuation(static_cast<unsigned char>(s[start]))) {
    --start;
  }
  char32_t cp;
  const size_t n = DecodeUtf8(s, start, &cp);
  if (start + n != end) return 0;
  return IsJsWhitespace(cp) ? n : 0;
}

std::string_view JsTrimStart(std::string_view s) {
  size_t i = 0;
  while (size_t n = JsWhitespaceAt(s, i)) i += n;
  return s.substr(i);
}

std::string_view JsTrimEnd(std::string_view s) {
  size_t end = s.size();
  while (size_t n = JsWhitespaceBefore(s, end)) end -= n;
  return s.substr(0, end);
}

std::string_view JsTrim(std::string_view s) { return JsTrimEnd(JsTrimStart(s)); }

size_t Utf16Length(std::string_view s) {
  size_t units = 0;
  for (size_t i = 0; i < s.size();) {
    char32_t cp;
    i += DecodeUtf8(s, i, &cp);
    units += cp >= 0x10000 ? 2 : 1;
  }
  return units;
}

std::vector<std::string> SplitCodePoints(std::string_view s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    char32_t cp;
    const size_t n = DecodeUtf8(s, i, &cp);
    out.emplace_back(s.substr(i, n));
    i += n;
  }
  return out;
}

std::string ToUpperCase(std::string_view s) { return ConvertCase(s, /*upper=*/true); }
std::string ToLowerCase(std::string_view s) { return ConvertCase(s, /*upper=*/false); }

}  // namespace tern::gateway::jinja
