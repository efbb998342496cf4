#include "common/block_hash.h"

#include <xxhash.h>

#include <cstring>

namespace tern {

uint64_t HashBlock(uint64_t parent_hash, absl::Span<const int32_t> block_tokens) {
  // Little-endian bytes of the parent hash, then of each token id: the layout
  // is fixed so hashes agree across processes and machines of this byte order.
  XXH64_state_t* state = XXH64_createState();
  XXH64_reset(state, kBlockHashSeed);
  XXH64_update(state, &parent_hash, sizeof(parent_hash));
  XXH64_update(state, block_tokens.data(), block_tokens.size() * sizeof(int32_t));
  const uint64_t hash = XXH64_digest(state);
  XXH64_freeState(state);
  return hash;
}

std::vector<uint64_t> HashPrefixBlocks(absl::Span<const int32_t> tokens, int block_size) {
  std::vector<uint64_t> hashes;
  if (block_size <= 0) return hashes;
  const size_t full_blocks = tokens.size() / static_cast<size_t>(block_size);
  hashes.reserve(full_blocks);
  uint64_t parent = kNoParentBlockHash;
  for (size_t i = 0; i < full_blocks; ++i) {
    parent = HashBlock(parent, tokens.subspan(i * block_size, block_size));
    hashes.push_back(parent);
  }
  return hashes;
}

}  // namespace tern
