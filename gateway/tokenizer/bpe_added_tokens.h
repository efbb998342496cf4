// AddedTokenSplitter: finds the `added_tokens` of a tokenizer.json (special
// tokens such as <|eot_id|>) in input text before pre-tokenization, the way
// the `tokenizers` library does: leftmost-longest matching, first of the
// tokens marked `normalized: false`, then of the others in the text left
// between them; `single_word` matches only between non-word characters;
// `lstrip` / `rstrip` make a match swallow the whitespace beside it.
//
// Thread-safety: immutable after construction; Split() may run concurrently.
#ifndef TERN_GATEWAY_TOKENIZER_BPE_ADDED_TOKENS_H_
#define TERN_GATEWAY_TOKENIZER_BPE_ADDED_TOKENS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tern::gateway {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

class AddedTokenSplitter {
 public:
  // A run of `text`: an added token (`token_id` >= 0) or plain text (-1).
  struct Piece {
    std::string_view text;
    int32_t token_id;
  };

  explicit AddedTokenSplitter(const std::vector<AddedToken>& tokens);

  // Appends the pieces of `text` (valid UTF-8) to `out`, in order. Plain
  // pieces are never empty; stripped whitespace belongs to no piece.
  void Split(std::string_view text, std::vector<Piece>& out) const;

 private:
  // A byte trie over the contents of one group of tokens.
  class Trie {
   public:
    void Insert(std::string_view key, int32_t token_index);
    // Index of the longest token that starts at text[pos], or -1.
    int32_t LongestAt(std::string_view text, size_t pos, size_t* length) const;
    bool empty() const { return nodes_.size() <= 1; }

   private:
    struct Node {
      std::vector<std::pair<uint8_t, int32_t>> children;  // sorted by byte
      int32_t token_index = -1;
    };
    std::vector<Node> nodes_{1};
  };

  // Splits one plain piece with one group's trie.
  void SplitWith(const Trie& trie, std::string_view text, std::vector<Piece>& out) const;

  std::vector<AddedToken> tokens_;
  Trie raw_trie_;         // normalized == false: matched on the input as is
  Trie normalized_trie_;  // matched after normalization (none is supported)
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_TOKENIZER_BPE_ADDED_TOKENS_H_
