#include "gateway/tokenizer/bpe_added_tokens.h"

#include <algorithm>

#include "gateway/tokenizer/bpe_pre_tokenizer.h"
#include "gateway/tokenizer/byte_level.h"

namespace tern::gateway {
namespace {

// The character that ends text[0, end).
char32_t CharBefore(std::string_view text, size_t end) {
  size_t begin = end - 1;
  while (begin > 0 && (static_cast<uint8_t>(text[begin]) & 0xC0) == 0x80) --begin;
  size_t length = 0;
  return DecodeUtf8At(text, begin, &length);
}

// Start of the whitespace run that ends text[0, end) (`end` when none).
size_t TrailingWhitespaceStart(std::string_view text, size_t end) {
  while (end > 0) {
    size_t begin = end - 1;
    while (begin > 0 && (static_cast<uint8_t>(text[begin]) & 0xC0) == 0x80) --begin;
    size_t length = 0;
    if (!IsUnicodeWhitespace(DecodeUtf8At(text, begin, &length))) break;
    end = begin;
  }
  return end;
}

// End of the whitespace run that starts at text[begin].
size_t LeadingWhitespaceEnd(std::string_view text, size_t begin) {
  while (begin < text.size()) {
    size_t length = 0;
    if (!IsUnicodeWhitespace(DecodeUtf8At(text, begin, &length))) break;
    begin += length;
  }
  return begin;
}

}  // namespace

void AddedTokenSplitter::Trie::Insert(std::string_view key, int32_t token_index) {
  int32_t node = 0;
  for (unsigned char c : key) {
    auto& children = nodes_[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), c,
                               [](const auto& child, uint8_t b) { return child.first < b; });
    if (it != children.end() && it->first == c) {
      node = it->second;
      continue;
    }
    const auto child = static_cast<int32_t>(nodes_.size());
    children.insert(it, {c, child});  // `children` may dangle after emplace_back
    nodes_.emplace_back();
    node = child;
  }
  // The first token with a given content wins, like a dictionary lookup.
  if (nodes_[node].token_index < 0) nodes_[node].token_index = token_index;
}

int32_t AddedTokenSplitter::Trie::LongestAt(std::string_view text, size_t pos,
                                            size_t* length) const {
  int32_t found = -1;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto& children = nodes_[node].children;
    const auto c = static_cast<uint8_t>(text[i]);
    auto it = std::lower_bound(children.begin(), children.end(), c,
                               [](const auto& child, uint8_t b) { return child.first < b; });
    if (it == children.end() || it->first != c) break;
    node = it->second;
    if (nodes_[node].token_index >= 0) {
      found = nodes_[node].token_index;
      *length = i + 1 - pos;
    }
  }
  return found;
}

AddedTokenSplitter::AddedTokenSplitter(const std::vector<AddedToken>& tokens) : tokens_(tokens) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (tokens_[i].content.empty()) continue;  // would match everywhere
    Trie& trie = tokens_[i].normalized ? normalized_trie_ : raw_trie_;
    trie.Insert(tokens_[i].content, static_cast<int32_t>(i));
  }
}

void AddedTokenSplitter::Split(std::string_view text, std::vector<Piece>& out) const {
  if (normalized_trie_.empty()) {
    SplitWith(raw_trie_, text, out);
    return;
  }
  std::vector<Piece> first;
  SplitWith(raw_trie_, text, first);
  for (const Piece& piece : first) {
    if (piece.token_id >= 0) {
      out.push_back(piece);
    } else {
      SplitWith(normalized_trie_, piece.text, out);
    }
  }
}

void AddedTokenSplitter::SplitWith(const Trie& trie, std::string_view text,
                                   std::vector<Piece>& out) const {
  size_t plain_begin = 0;  // start of the text not yet assigned to a piece
  size_t pos = 0;
  while (!trie.empty() && pos < text.size()) {
    size_t length = 0;
    const int32_t index = trie.LongestAt(text, pos, &length);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[index];
    size_t begin = pos;
    size_t end = pos + length;
    pos = end;  // matches never overlap; a discarded one is skipped whole
    if (token.single_word) {
      const bool word_before = begin > 0 && IsUnicodeWordChar(CharBefore(text, begin));
      size_t next_length = 0;
      const bool word_after =
          end < text.size() && IsUnicodeWordChar(DecodeUtf8At(text, end, &next_length));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) begin = std::max(TrailingWhitespaceStart(text, begin), plain_begin);
    if (token.rstrip) pos = end = LeadingWhitespaceEnd(text, end);
    if (begin > plain_begin) out.push_back({text.substr(plain_begin, begin - plain_begin), -1});
    out.push_back({text.substr(begin, end - begin), token.id});
    plain_begin = end;
  }
  if (plain_begin < text.size()) out.push_back({text.substr(plain_begin), -1});
}

}  // namespace tern::gateway
