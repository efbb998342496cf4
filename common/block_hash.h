// Prefix block hashing shared by the worker's prefix cache and the router's
// index: a prompt is cut into full blocks of `block_size` tokens and block i's
// hash is H(hash(i-1), tokens of block i), with xxHash64 and a fixed seed, so
// a hash names the same prefix everywhere. Pure functions; thread-safe.
#ifndef TERN_COMMON_BLOCK_HASH_H_
#define TERN_COMMON_BLOCK_HASH_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace tern {

// Seed of the chain; part of the contract between router and worker.
inline constexpr uint64_t kBlockHashSeed = 0x7465726e2d763101ULL;  // "tern-v1\x01"
// The parent of a prompt's first block.
inline constexpr uint64_t kNoParentBlockHash = 0;

// Hash of one full block given its parent's hash.
uint64_t HashBlock(uint64_t parent_hash, absl::Span<const int32_t> block_tokens);

// Chained hashes of every full block of `tokens`; a trailing partial block is
// not hashed. block_size must be positive.
std::vector<uint64_t> HashPrefixBlocks(absl::Span<const int32_t> tokens, int block_size);

}  // namespace tern

#endif  // TERN_COMMON_BLOCK_HASH_H_
