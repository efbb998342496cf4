// Byte-level helpers shared by the BPE tokenizer and the detokenizer:
//  - the GPT-2 byte <-> unicode table that byte-level BPE vocabularies are
//    written in (every byte has a printable stand-in character);
//  - UTF-8 validation and lossy decoding that replaces ill-formed sequences
//    with U+FFFD using the "maximal subpart" practice of the Unicode standard
//    (what Rust's String::from_utf8_lossy and the WHATWG TextDecoder do).
//
// All functions are pure and thread-safe.
#ifndef TERN_GATEWAY_TOKENIZER_BYTE_LEVEL_H_
#define TERN_GATEWAY_TOKENIZER_BYTE_LEVEL_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tern::gateway {

// The code point that stands for byte `b` in a byte-level vocabulary.
char32_t ByteToUnicode(uint8_t b);

// The byte a stand-in code point represents, or nullopt when `cp` is not one
// of the 256 stand-ins.
std::optional<uint8_t> UnicodeToByte(char32_t cp);

// Maps every byte of `bytes` to its stand-in character, UTF-8 encoded.
std::string BytesToByteLevel(std::string_view bytes);

// Undoes BytesToByteLevel: nullopt when `text` is not valid UTF-8 or holds a
// character that is not a byte stand-in.
std::optional<std::string> ByteLevelToBytes(std::string_view text);

// Appends the UTF-8 encoding of `cp` (which must be a scalar value) to `out`.
void AppendUtf8(char32_t cp, std::string& out);

// Decodes the UTF-8 sequence starting at `text[pos]`: the code point and its
// length. Requires valid UTF-8 (as produced by SanitizeUtf8).
char32_t DecodeUtf8At(std::string_view text, size_t pos, size_t* length);

// Appends `bytes` to `out` with every ill-formed subsequence replaced by
// U+FFFD. With `hold_incomplete_tail`, a trailing sequence that is a valid but
// unfinished prefix of a character is not decoded; the return value is the
// number of such trailing bytes left undecoded (always 0 otherwise, the tail
// then becoming one U+FFFD).
size_t AppendUtf8Lossy(std::string_view bytes, bool hold_incomplete_tail, std::string& out);

// Whether `text` is well-formed UTF-8 (no surrogates, no overlongs).
bool IsValidUtf8(std::string_view text);

// `text` with every ill-formed subsequence replaced by U+FFFD.
std::string SanitizeUtf8(std::string_view text);

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_TOKENIZER_BYTE_LEVEL_H_
