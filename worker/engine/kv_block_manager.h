// The worker's paged KV block manager with prefix caching.
//
// The KV memory is a pool of `num_blocks` fixed-size blocks of `block_size`
// token slots; the executor owns the memory and this class hands out block
// ids, counts references to them and remembers which blocks hold a cached
// prefix. A block that is full of computed tokens gets the chained hash of its
// prefix (common/block_hash.h, the function the router uses) and enters the
// prefix cache; a later sequence whose prompt starts with the same full
// blocks shares them instead of computing them again. When the last sequence
// holding a cached block lets it go, the block stays cached but becomes
// evictable; allocation takes never-used and partial free blocks first, then
// evicts the least recently used cached block. Blocks released together are
// ordered tail first, so a prefix's later blocks go before its first ones.
//
// Life of a sequence:
//   Allocate(id, prompt)       reuses the longest cached prefix (full blocks
//                              only, always leaving at least one prompt token
//                              to compute) and allocates slots for the rest;
//   CommitComputed(id, n)      after the executor has written the KV of the
//                              first n tokens: every block now full of
//                              computed tokens enters the prefix cache;
//   AppendTokens(id, tokens)   slots for tokens to compute next (decode);
//   Free(id)                   drops the sequence's references.
// If a block's hash is already cached (two sequences computed the same
// prefix at once, or the recomputed last block of a fully cached prompt), the
// cached copy stays the one the cache knows; the other block is an ordinary
// uncached block and returns to the free pool when released.
//
// Every change of the set of cached hashes is recorded as a KvEvent
// (worker/kv_events.h): BlockStored per commit (coalesced into chain runs),
// BlockRemoved per allocation that evicted, AllBlocksCleared on Reset.
// DrainEvents hands them out; applied in order to an empty set they give
// exactly CachedBlockHashes(). If the bounded event buffer overflowed, the
// drain starts with AllBlocksCleared followed by a snapshot of the cache.
//
// Memory: 32 bytes of metadata per pool block, 4 bytes per block in the free
// list and the hash index reserved for every block at construction (at most
// ~40 bytes per block), so under 80 bytes per block, fixed at construction.
// Each live sequence adds 4 bytes per token (its token ids), 4 bytes per block
// of its block table and 8 bytes per full block (its chain hashes). The event
// buffer holds at most max_pending_event_hashes hashes.
//
// Errors: INVALID_ARGUMENT for bad arguments (including a prompt longer than
// the whole pool), ALREADY_EXISTS / NOT_FOUND for sequence ids,
// RESOURCE_EXHAUSTED when there are not enough free blocks now; every failed
// call leaves the manager unchanged.
//
// Thread contract: not thread-safe; owned and called by one thread (the
// engine loop).
#ifndef TERN_WORKER_ENGINE_KV_BLOCK_MANAGER_H_
#define TERN_WORKER_ENGINE_KV_BLOCK_MANAGER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/engine/kv_events.h"

namespace tern::worker {

using KvBlockId = int32_t;
using KvSequenceId = uint64_t;

struct KvBlockManagerOptions {
  // Token slots per block, in [1, 65536], and pool size, in [1, 2^30];
  // num_blocks * block_size must be below 2^31.
  int32_t block_size = 16;
  int32_t num_blocks = 0;
  bool enable_prefix_caching = true;
  // Bound of the event buffer in block hashes; 0 picks 4 * num_blocks. Must
  // be at least num_blocks, so a snapshot always fits.
  int64_t max_pending_event_hashes = 0;
};

// What Allocate gives a new sequence.
struct KvAllocation {
  // Leading prompt tokens whose KV is already in the shared blocks: a
  // multiple of block_size, less than the prompt length.
  int32_t num_cached_tokens = 0;
  // Block i holds token positions [i * block_size, (i + 1) * block_size).
  std::vector<KvBlockId> block_table;
};

struct KvBlockManagerStats {
  int64_t allocations = 0;          // successful Allocate calls
  int64_t prefix_query_tokens = 0;  // prompt tokens of those calls
  int64_t prefix_hit_tokens = 0;    // of them, found in the cache
  int64_t evictions = 0;            // cached blocks evicted for reuse
  int64_t duplicate_blocks = 0;     // full blocks whose hash was already cached
  int64_t event_overflows = 0;      // times the event buffer overflowed (then resynced)
  double prefix_hit_rate() const {
    return prefix_query_tokens == 0
               ? 0.0
               : static_cast<double>(prefix_hit_tokens) / static_cast<double>(prefix_query_tokens);
  }
};

class KvBlockManager {
 public:
  // INVALID_ARGUMENT when an option is out of range.
  static absl::StatusOr<std::unique_ptr<KvBlockManager>> Create(
      const KvBlockManagerOptions& options);

  KvBlockManager(const KvBlockManager&) = delete;
  KvBlockManager& operator=(const KvBlockManager&) = delete;

  // Starts sequence `id` with `prompt` (non-empty): shares the longest cached
  // prefix and allocates blocks for the other prompt tokens.
  // INVALID_ARGUMENT: empty prompt, or more blocks than the pool has.
  // ALREADY_EXISTS: id is live. RESOURCE_EXHAUSTED: not enough free blocks.
  absl::StatusOr<KvAllocation> Allocate(KvSequenceId id, absl::Span<const int32_t> prompt);

  // Appends `tokens` (whose KV is computed next, e.g. the sampled token of a
  // decode step) to sequence `id`, allocating a block whenever the last one
  // is full. NOT_FOUND; INVALID_ARGUMENT when the sequence would outgrow the
  // whole pool; RESOURCE_EXHAUSTED.
  absl::Status AppendTokens(KvSequenceId id, absl::Span<const int32_t> tokens);

  // Declares that the KV of the first `num_computed_tokens` tokens of `id` is
  // written; blocks now full of computed tokens enter the prefix cache.
  // NOT_FOUND; INVALID_ARGUMENT unless num_computed_tokens lies between the
  // current computed count and the sequence's length.
  absl::Status CommitComputed(KvSequenceId id, int32_t num_computed_tokens);

  // Ends sequence `id`. Its cached blocks stay cached (evictable); its other
  // blocks return to the free pool. NOT_FOUND.
  absl::Status Free(KvSequenceId id);

  // Forgets every cached hash (blocks held by live sequences stay theirs but
  // are no longer shared) and records AllBlocksCleared.
  void Reset();

  // Pending events, numbered 1, 2, 3, ... across drains without gaps.
  std::vector<KvEvent> DrainEvents();

  // The block table of live sequence `id`; valid until the next call that
  // changes that sequence. NOT_FOUND.
  absl::StatusOr<absl::Span<const KvBlockId>> BlockTable(KvSequenceId id) const;
  // Tokens of live sequence `id` and how many of them are computed. NOT_FOUND.
  absl::StatusOr<int32_t> NumTokens(KvSequenceId id) const;
  absl::StatusOr<int32_t> NumComputedTokens(KvSequenceId id) const;

  // Blocks an allocation may take now: never used, partial, or cached with no
  // reference.
  int32_t num_free_blocks() const;
  // Blocks in the prefix cache, referenced or not.
  int32_t num_cached_blocks() const { return static_cast<int32_t>(cache_.size()); }
  int32_t num_sequences() const { return static_cast<int32_t>(sequences_.size()); }
  int32_t num_blocks() const { return options_.num_blocks; }
  int32_t block_size() const { return options_.block_size; }
  // The hashes of every cached block, in no particular order.
  std::vector<uint64_t> CachedBlockHashes() const;
  // The cache described from scratch, without touching the pending events:
  // AllBlocksCleared followed by BlockStored chain runs (each block after its
  // parent, with its parent hash when that is cached too). Sequence numbers
  // are left 0; a consumer that streams them numbers them itself.
  std::vector<KvEvent> SnapshotEvents() const;
  KvBlockManagerStats stats() const;

 private:
  static constexpr KvBlockId kNoBlock = -1;

  struct Block {
    uint64_t hash = 0;         // chain hash, when cached
    uint64_t parent_hash = 0;  // the previous block's hash; kNoParentBlockHash for a first block
    int32_t ref_count = 0;
    KvBlockId lru_prev = kNoBlock;  // evictable-list links, when cached and unreferenced
    KvBlockId lru_next = kNoBlock;
    bool cached = false;
  };

  struct Sequence {
    std::vector<int32_t> tokens;
    std::vector<KvBlockId> block_table;
    // Chain hashes of the sequence's full blocks known so far.
    std::vector<uint64_t> block_hashes;
    int32_t num_computed_tokens = 0;
    // Leading blocks already offered to the cache.
    int32_t num_committed_blocks = 0;
  };

  explicit KvBlockManager(const KvBlockManagerOptions& options);

  int32_t BlocksFor(int64_t num_tokens) const;
  // Takes one free block (ref_count 1), evicting the LRU cached block when no
  // uncached one is free; evicted hashes are appended to `evicted`.
  KvBlockId TakeFreeBlock(std::vector<uint64_t>* evicted);
  void Retain(KvBlockId id);
  void Release(KvBlockId id);
  void LruPushBack(KvBlockId id);
  void LruUnlink(KvBlockId id);
  // Records SnapshotEvents() into the event log.
  void RecordSnapshot();

  const KvBlockManagerOptions options_;
  std::vector<Block> blocks_;
  // Unreferenced, uncached blocks; taken from the back.
  std::vector<KvBlockId> free_uncached_;
  // Unreferenced cached blocks, least recently used at the head.
  KvBlockId lru_head_ = kNoBlock;
  KvBlockId lru_tail_ = kNoBlock;
  int32_t lru_size_ = 0;
  absl::flat_hash_map<uint64_t, KvBlockId> cache_;
  absl::flat_hash_map<KvSequenceId, Sequence> sequences_;
  KvEventLog events_;
  KvBlockManagerStats stats_;
};

}  // namespace tern::worker

#endif  // TERN_WORKER_ENGINE_KV_BLOCK_MANAGER_H_
