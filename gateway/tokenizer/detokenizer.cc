#include "gateway/tokenizer/detokenizer.h"

#include "gateway/tokenizer/byte_level.h"

namespace tern::gateway {

std::string IncrementalDetokenizer::Append(int32_t id) {
  if (skip_special_tokens_ && tokenizer_.IsSpecial(id)) return std::string();
  const std::string& bytes = tokenizer_.TokenBytes(id);
  if (bytes.empty()) return std::string();
  pending_ += bytes;
  std::string text;
  const size_t held = AppendUtf8Lossy(pending_, /*hold_incomplete_tail=*/true, text);
  pending_.erase(0, pending_.size() - held);
  return text;
}

std::string IncrementalDetokenizer::Flush() {
  std::string text;
  AppendUtf8Lossy(pending_, /*hold_incomplete_tail=*/false, text);
  pending_.clear();
  return text;
}

}  // namespace tern::gateway
