// The vocabulary as a byte trie laid out in preorder, so a walk is a scan of
// one array that can skip a whole subtree (every token sharing a prefix) in
// one step.
//
// Thread safety: immutable after Build.
#ifndef TERN_STRUCTURED_TOKEN_TRIE_H_
#define TERN_STRUCTURED_TOKEN_TRIE_H_

#include <cstdint>
#include <string>
#include <vector>

namespace tern::structured {

struct TokenTrie {
  struct Node {
    int32_t end = 0;          // one past the last node of this subtree
    int32_t token_begin = 0;  // this node's tokens: tokens[token_begin, next node's)
    uint16_t depth = 0;       // bytes from the root; the root is node 0, depth 0
    uint8_t byte = 0;         // the byte leading here from the parent
  };
  // Nodes in preorder plus a sentinel whose token_begin is tokens.size().
  std::vector<Node> nodes;
  // Token ids ordered by node.
  std::vector<int32_t> tokens;
  int32_t max_depth = 0;

  int32_t node_count() const { return static_cast<int32_t>(nodes.size()) - 1; }

  // The trie of the tokens with include[id] set (their bytes non-empty).
  static TokenTrie Build(const std::vector<std::string>& token_bytes,
                         const std::vector<bool>& include);
};

}  // namespace tern::structured

#endif  // TERN_STRUCTURED_TOKEN_TRIE_H_
