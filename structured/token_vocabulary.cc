#include <array>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "structured/constraint.h"
#include "structured/constraint_impl.h"
#include "structured/utf8_ranges.h"

namespace tern::structured {
namespace {

// GPT-2's byte-level alphabet, inverted: the byte each stand-in code point
// represents (printable bytes stand for themselves; the rest map to
// U+0100 onwards in byte order).
const std::array<int, 512>& StandInToByte() {
  static const std::array<int, 512> kTable = [] {
    std::array<int, 512> table;
    table.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      table[printable ? b : next++] = b;
    }
    return table;
  }();
  return kTable;
}

// The bytes a byte-level vocabulary entry stands for; false when `text`
// holds something other than stand-in characters.
bool DecodeByteLevel(const std::string& text, std::string* bytes) {
  bytes->clear();
  size_t pos = 0;
  while (pos < text.size()) {
    uint32_t cp = 0;
    if (!DecodeUtf8(text, &pos, &cp) || cp >= 512 || StandInToByte()[cp] < 0) return false;
    bytes->push_back(static_cast<char>(StandInToByte()[cp]));
  }
  return true;
}

}  // namespace

void IndexVocabulary(TokenVocabulary::Impl* impl) {
  const int32_t n = static_cast<int32_t>(impl->token_bytes.size());
  impl->eligible = TokenMask(n);
  std::vector<bool> include(n);
  for (int32_t id = 0; id < n; ++id) {
    include[id] = !impl->special[id] && !impl->token_bytes[id].empty();
    if (include[id]) impl->eligible.Allow(id);
  }
  impl->trie = TokenTrie::Build(impl->token_bytes, include);
}

TokenVocabulary::TokenVocabulary(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TokenVocabulary::~TokenVocabulary() = default;

int32_t TokenVocabulary::size() const { return static_cast<int32_t>(impl_->token_bytes.size()); }
const std::string& TokenVocabulary::bytes(int32_t token) const { return impl_->token_bytes[token]; }
bool TokenVocabulary::is_special(int32_t token) const { return impl_->special[token]; }

std::shared_ptr<const TokenVocabulary> TokenVocabulary::FromTokens(
    std::vector<std::string> token_bytes, std::vector<bool> special) {
  auto impl = std::make_unique<Impl>();
  special.resize(token_bytes.size(), false);
  impl->token_bytes = std::move(token_bytes);
  impl->special = std::move(special);
  IndexVocabulary(impl.get());
  return std::make_shared<const TokenVocabulary>(std::move(impl));
}

absl::StatusOr<std::shared_ptr<const TokenVocabulary>> TokenVocabulary::FromTokenizerJson(
    const std::string& path, int32_t vocab_size) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot open tokenizer file ", path));
  std::stringstream text;
  text << file.rdbuf();
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text.str());
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not valid JSON: ", e.what()));
  }
  const auto model = json.find("model");
  if (model == json.end() || !model->is_object() || !model->contains("vocab") ||
      !(*model)["vocab"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " has no model.vocab object"));
  }
  std::vector<std::pair<int64_t, std::string>> entries;
  std::vector<bool> entry_special;
  std::string bytes;
  for (const auto& [piece, id] : (*model)["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) {
      return absl::InvalidArgumentError(absl::StrCat("bad id for vocab entry ", piece));
    }
    if (!DecodeByteLevel(piece, &bytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " is not a byte-level BPE vocabulary (entry ", piece, ")"));
    }
    entries.emplace_back(id.get<int64_t>(), bytes);
    entry_special.push_back(false);
  }
  if (json.contains("added_tokens") && json["added_tokens"].is_array()) {
    for (const auto& added : json["added_tokens"]) {
      if (!added.is_object() || !added.contains("id") || !added["id"].is_number_integer() ||
          !added.contains("content") || !added["content"].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(path, " has a malformed added token"));
      }
      entries.emplace_back(added["id"].get<int64_t>(), added["content"].get<std::string>());
      entry_special.push_back(added.value("special", false));
    }
  }
  int64_t tokenizer_size = 0;
  for (const auto& [id, b] : entries) tokenizer_size = std::max(tokenizer_size, id + 1);
  if (vocab_size <= 0) vocab_size = static_cast<int32_t>(tokenizer_size);
  if (tokenizer_size > vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer has ", tokenizer_size, " ids, more than vocab_size ", vocab_size));
  }
  auto impl = std::make_unique<Impl>();
  impl->token_bytes.resize(vocab_size);
  // Ids no entry names (padding rows of the embedding) count as special.
  impl->special.assign(vocab_size, true);
  for (size_t i = 0; i < entries.size(); ++i) {
    impl->token_bytes[entries[i].first] = std::move(entries[i].second);
    impl->special[entries[i].first] = entry_special[i];
  }
  IndexVocabulary(impl.get());
  return std::shared_ptr<const TokenVocabulary>(
      std::make_shared<const TokenVocabulary>(std::move(impl)));
}

}  // namespace tern::structured
