#include "structured/token_trie.h"

#include <algorithm>
#include <numeric>

namespace tern::structured {

TokenTrie TokenTrie::Build(const std::vector<std::string>& token_bytes,
                           const std::vector<bool>& include) {
  std::vector<int32_t> order;
  for (size_t id = 0; id < token_bytes.size(); ++id) {
    if (include[id] && !token_bytes[id].empty()) order.push_back(static_cast<int32_t>(id));
  }
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return token_bytes[a] < token_bytes[b]; });
  // Sorted strings visit the trie in preorder: each token adds the nodes
  // past its common prefix with the one before.
  TokenTrie trie;
  trie.nodes.push_back(Node{});
  std::vector<int32_t> path = {0};
  const std::string* previous = nullptr;
  const auto close_to = [&](size_t depth) {
    while (path.size() > depth + 1) {
      trie.nodes[path.back()].end = static_cast<int32_t>(trie.nodes.size());
      path.pop_back();
    }
  };
  for (int32_t id : order) {
    const std::string& s = token_bytes[id];
    size_t common = 0;
    if (previous != nullptr) {
      const size_t limit = std::min(previous->size(), s.size());
      while (common < limit && (*previous)[common] == s[common]) ++common;
    }
    close_to(common);
    for (size_t k = common; k < s.size(); ++k) {
      Node node;
      node.byte = static_cast<uint8_t>(s[k]);
      node.depth = static_cast<uint16_t>(std::min<size_t>(k + 1, 65535));
      node.token_begin = static_cast<int32_t>(trie.tokens.size());
      path.push_back(static_cast<int32_t>(trie.nodes.size()));
      trie.nodes.push_back(node);
    }
    trie.tokens.push_back(id);
    trie.max_depth = std::max<int32_t>(trie.max_depth, static_cast<int32_t>(s.size()));
    previous = &s;
  }
  close_to(0);
  trie.nodes[0].end = static_cast<int32_t>(trie.nodes.size());
  Node sentinel;
  sentinel.token_begin = static_cast<int32_t>(trie.tokens.size());
  sentinel.end = static_cast<int32_t>(trie.nodes.size()) + 1;
  trie.nodes.push_back(sentinel);
  return trie;
}

}  // namespace tern::structured
