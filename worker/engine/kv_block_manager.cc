#include "worker/engine/kv_block_manager.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/block_hash.h"
#include "common/log.h"

namespace tern::worker {
namespace {

constexpr int32_t kMaxBlockSize = 1 << 16;
constexpr int32_t kMaxNumBlocks = 1 << 30;

std::optional<uint64_t> ParentOf(uint64_t parent_hash) {
  if (parent_hash == kNoParentBlockHash) return std::nullopt;
  return parent_hash;
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvBlockManager>> KvBlockManager::Create(
    const KvBlockManagerOptions& options) {
  if (options.block_size < 1 || options.block_size > kMaxBlockSize) {
    return absl::InvalidArgumentError(absl::StrCat("kv block_size must be in [1, ", kMaxBlockSize,
                                                   "], got ", options.block_size));
  }
  if (options.num_blocks < 1 || options.num_blocks > kMaxNumBlocks) {
    return absl::InvalidArgumentError(absl::StrCat("kv num_blocks must be in [1, ", kMaxNumBlocks,
                                                   "], got ", options.num_blocks));
  }
  if (int64_t{options.num_blocks} * options.block_size > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        "kv pool of num_blocks * block_size must hold under 2^31 tokens");
  }
  KvBlockManagerOptions resolved = options;
  if (resolved.max_pending_event_hashes == 0) {
    resolved.max_pending_event_hashes = int64_t{4} * options.num_blocks;
  }
  if (resolved.max_pending_event_hashes < options.num_blocks) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_pending_event_hashes (", options.max_pending_event_hashes,
                     ") must be 0 or at least num_blocks (", options.num_blocks, ")"));
  }
  return std::unique_ptr<KvBlockManager>(new KvBlockManager(resolved));
}

KvBlockManager::KvBlockManager(const KvBlockManagerOptions& options)
    : options_(options),
      blocks_(options.num_blocks),
      events_(static_cast<size_t>(options.max_pending_event_hashes)) {
  static_assert(sizeof(Block) <= 32, "per-block metadata is part of the stated memory bound");
  free_uncached_.reserve(options_.num_blocks);
  // Highest id at the front, so the first allocations get ids 0, 1, 2, ...
  for (KvBlockId id = options_.num_blocks - 1; id >= 0; --id) free_uncached_.push_back(id);
  if (options_.enable_prefix_caching) cache_.reserve(options_.num_blocks);
}

int32_t KvBlockManager::BlocksFor(int64_t num_tokens) const {
  return static_cast<int32_t>((num_tokens + options_.block_size - 1) / options_.block_size);
}

int32_t KvBlockManager::num_free_blocks() const {
  return static_cast<int32_t>(free_uncached_.size()) + lru_size_;
}

absl::StatusOr<KvAllocation> KvBlockManager::Allocate(KvSequenceId id,
                                                      absl::Span<const int32_t> prompt) {
  if (prompt.empty()) return absl::InvalidArgumentError("kv allocation needs at least one token");
  const int64_t pool_tokens = int64_t{options_.num_blocks} * options_.block_size;
  if (static_cast<uint64_t>(prompt.size()) > static_cast<uint64_t>(pool_tokens)) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", prompt.size(),
                                                   " tokens does not fit in the KV pool of ",
                                                   pool_tokens, " tokens"));
  }
  if (sequences_.contains(id)) {
    return absl::AlreadyExistsError(absl::StrCat("kv sequence ", id, " is already allocated"));
  }
  const int64_t num_tokens = static_cast<int64_t>(prompt.size());
  const int32_t total_blocks = BlocksFor(num_tokens);

  std::vector<uint64_t> hashes;
  int32_t hit_blocks = 0;
  int32_t evictable_hits = 0;
  if (options_.enable_prefix_caching) {
    hashes = HashPrefixBlocks(prompt, options_.block_size);
    // At least one prompt token must be computed to produce the first logits.
    const int64_t max_hit_blocks = (num_tokens - 1) / options_.block_size;
    while (hit_blocks < max_hit_blocks) {
      auto it = cache_.find(hashes[hit_blocks]);
      if (it == cache_.end()) break;
      if (blocks_[it->second].ref_count == 0) ++evictable_hits;
      ++hit_blocks;
    }
  }
  const int32_t new_blocks = total_blocks - hit_blocks;
  // Shared blocks that sit in the evictable list stop being free once taken.
  if (new_blocks > num_free_blocks() - evictable_hits) {
    return absl::ResourceExhaustedError(absl::StrCat("kv cache full: sequence needs ", new_blocks,
                                                     " new blocks, ",
                                                     num_free_blocks() - evictable_hits, " free"));
  }

  Sequence seq;
  seq.tokens.assign(prompt.begin(), prompt.end());
  seq.block_table.reserve(total_blocks);
  for (int32_t i = 0; i < hit_blocks; ++i) {
    const KvBlockId block = cache_.find(hashes[i])->second;
    Retain(block);
    seq.block_table.push_back(block);
  }
  std::vector<uint64_t> evicted;
  for (int32_t i = 0; i < new_blocks; ++i) seq.block_table.push_back(TakeFreeBlock(&evicted));
  events_.AddRemoved(std::move(evicted));
  seq.block_hashes = std::move(hashes);
  seq.num_computed_tokens = hit_blocks * options_.block_size;
  seq.num_committed_blocks = hit_blocks;

  KvAllocation allocation;
  allocation.num_cached_tokens = seq.num_computed_tokens;
  allocation.block_table = seq.block_table;
  sequences_.emplace(id, std::move(seq));
  ++stats_.allocations;
  stats_.prefix_query_tokens += num_tokens;
  stats_.prefix_hit_tokens += allocation.num_cached_tokens;
  return allocation;
}

absl::Status KvBlockManager::AppendTokens(KvSequenceId id, absl::Span<const int32_t> tokens) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("kv sequence ", id, " is not allocated"));
  }
  Sequence& seq = it->second;
  const int64_t num_tokens = static_cast<int64_t>(seq.tokens.size()) + tokens.size();
  if (num_tokens > int64_t{options_.num_blocks} * options_.block_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv sequence ", id, " would grow past the KV pool"));
  }
  const int32_t new_blocks = BlocksFor(num_tokens) - static_cast<int32_t>(seq.block_table.size());
  if (new_blocks > num_free_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat("kv cache full: sequence needs ", new_blocks,
                                                     " new blocks, ", num_free_blocks(), " free"));
  }
  std::vector<uint64_t> evicted;
  for (int32_t i = 0; i < new_blocks; ++i) seq.block_table.push_back(TakeFreeBlock(&evicted));
  events_.AddRemoved(std::move(evicted));
  seq.tokens.insert(seq.tokens.end(), tokens.begin(), tokens.end());
  return absl::OkStatus();
}

absl::Status KvBlockManager::CommitComputed(KvSequenceId id, int32_t num_computed_tokens) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("kv sequence ", id, " is not allocated"));
  }
  Sequence& seq = it->second;
  if (num_computed_tokens < seq.num_computed_tokens ||
      static_cast<size_t>(num_computed_tokens) > seq.tokens.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv sequence ", id, ": computed tokens must be in [", seq.num_computed_tokens,
                     ", ", seq.tokens.size(), "], got ", num_computed_tokens));
  }
  seq.num_computed_tokens = num_computed_tokens;
  if (!options_.enable_prefix_caching) return absl::OkStatus();

  const int32_t full_blocks = num_computed_tokens / options_.block_size;
  const absl::Span<const int32_t> tokens(seq.tokens);
  // A commit stores a contiguous stretch of the chain; a block already cached
  // elsewhere splits it into separately parented runs.
  std::vector<uint64_t> run;
  std::optional<uint64_t> run_parent;
  for (int32_t i = seq.num_committed_blocks; i < full_blocks; ++i) {
    const uint64_t parent = i == 0 ? kNoParentBlockHash : seq.block_hashes[i - 1];
    if (static_cast<size_t>(i) == seq.block_hashes.size()) {
      seq.block_hashes.push_back(HashBlock(
          parent,
          tokens.subspan(static_cast<size_t>(i) * options_.block_size, options_.block_size)));
    }
    const uint64_t hash = seq.block_hashes[i];
    if (!cache_.emplace(hash, seq.block_table[i]).second) {
      ++stats_.duplicate_blocks;
      events_.AddStored(std::move(run), run_parent);
      run.clear();
      continue;
    }
    Block& block = blocks_[seq.block_table[i]];
    block.cached = true;
    block.hash = hash;
    block.parent_hash = parent;
    if (run.empty()) run_parent = ParentOf(parent);
    run.push_back(hash);
  }
  events_.AddStored(std::move(run), run_parent);
  seq.num_committed_blocks = std::max(seq.num_committed_blocks, full_blocks);
  return absl::OkStatus();
}

absl::Status KvBlockManager::Free(KvSequenceId id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("kv sequence ", id, " is not allocated"));
  }
  // Tail first: the end of a prefix is the least likely part to be shared.
  const std::vector<KvBlockId>& table = it->second.block_table;
  for (auto block = table.rbegin(); block != table.rend(); ++block) Release(*block);
  sequences_.erase(it);
  return absl::OkStatus();
}

void KvBlockManager::Reset() {
  for (const auto& [hash, id] : cache_) {
    Block& block = blocks_[id];
    block.cached = false;
    if (block.ref_count == 0) {
      LruUnlink(id);
      free_uncached_.push_back(id);
    }
  }
  cache_.clear();
  events_.AddAllCleared();
}

std::vector<KvEvent> KvBlockManager::DrainEvents() {
  if (events_.overflowed()) RecordSnapshot();
  return events_.Drain();
}

void KvBlockManager::RecordSnapshot() {
  events_.AddAllCleared();
  for (KvEvent& event : SnapshotEvents()) {
    if (event.kind == KvEventKind::kBlockStored) {
      events_.AddStored(std::move(event.block_hashes), event.parent_block_hash);
    }
  }
}

std::vector<KvEvent> KvBlockManager::SnapshotEvents() const {
  std::vector<KvEvent> snapshot(1);
  snapshot[0].kind = KvEventKind::kAllBlocksCleared;
  // The cached blocks form a forest by parent hash; one DFS per root emits
  // each root-to-leaf path as a chain run, so every block is stored once,
  // after its parent, with the right parent.
  absl::flat_hash_map<uint64_t, std::vector<uint64_t>> children;
  std::vector<uint64_t> pending;
  for (const auto& [hash, id] : cache_) {
    const uint64_t parent = blocks_[id].parent_hash;
    if (parent != kNoParentBlockHash && cache_.contains(parent)) {
      children[parent].push_back(hash);
    } else {
      pending.push_back(hash);
    }
  }
  while (!pending.empty()) {
    uint64_t hash = pending.back();
    pending.pop_back();
    KvEvent run;
    run.kind = KvEventKind::kBlockStored;
    run.parent_block_hash = ParentOf(blocks_[cache_.at(hash)].parent_hash);
    run.block_hashes = {hash};
    for (auto kids = children.find(hash); kids != children.end(); kids = children.find(hash)) {
      pending.insert(pending.end(), kids->second.begin() + 1, kids->second.end());
      hash = kids->second.front();
      run.block_hashes.push_back(hash);
    }
    snapshot.push_back(std::move(run));
  }
  return snapshot;
}

absl::StatusOr<absl::Span<const KvBlockId>> KvBlockManager::BlockTable(KvSequenceId id) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("kv sequence ", id, " is not allocated"));
  }
  return absl::Span<const KvBlockId>(it->second.block_table);
}

absl::StatusOr<int32_t> KvBlockManager::NumTokens(KvSequenceId id) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("kv sequence ", id, " is not allocated"));
  }
  return static_cast<int32_t>(it->second.tokens.size());
}

absl::StatusOr<int32_t> KvBlockManager::NumComputedTokens(KvSequenceId id) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("kv sequence ", id, " is not allocated"));
  }
  return it->second.num_computed_tokens;
}

KvBlockManagerStats KvBlockManager::stats() const {
  KvBlockManagerStats stats = stats_;
  stats.event_overflows = static_cast<int64_t>(events_.overflow_count());
  return stats;
}

std::vector<uint64_t> KvBlockManager::CachedBlockHashes() const {
  std::vector<uint64_t> hashes;
  hashes.reserve(cache_.size());
  for (const auto& entry : cache_) hashes.push_back(entry.first);
  return hashes;
}

KvBlockId KvBlockManager::TakeFreeBlock(std::vector<uint64_t>* evicted) {
  KvBlockId id;
  if (!free_uncached_.empty()) {
    id = free_uncached_.back();
    free_uncached_.pop_back();
  } else {
    id = lru_head_;
    TERN_CHECK(id != kNoBlock) << "kv block pool empty after a successful free-block check";
    LruUnlink(id);
    Block& block = blocks_[id];
    cache_.erase(block.hash);
    block.cached = false;
    evicted->push_back(block.hash);
    ++stats_.evictions;
  }
  blocks_[id].ref_count = 1;
  return id;
}

void KvBlockManager::Retain(KvBlockId id) {
  Block& block = blocks_[id];
  if (block.ref_count++ == 0) LruUnlink(id);
}

void KvBlockManager::Release(KvBlockId id) {
  Block& block = blocks_[id];
  TERN_CHECK(block.ref_count > 0) << "kv block " << id << " released more often than taken";
  if (--block.ref_count > 0) return;
  if (block.cached) {
    LruPushBack(id);
  } else {
    free_uncached_.push_back(id);
  }
}

void KvBlockManager::LruPushBack(KvBlockId id) {
  Block& block = blocks_[id];
  block.lru_prev = lru_tail_;
  block.lru_next = kNoBlock;
  if (lru_tail_ == kNoBlock) {
    lru_head_ = id;
  } else {
    blocks_[lru_tail_].lru_next = id;
  }
  lru_tail_ = id;
  ++lru_size_;
}

void KvBlockManager::LruUnlink(KvBlockId id) {
  Block& block = blocks_[id];
  if (block.lru_prev == kNoBlock) {
    lru_head_ = block.lru_next;
  } else {
    blocks_[block.lru_prev].lru_next = block.lru_next;
  }
  if (block.lru_next == kNoBlock) {
    lru_tail_ = block.lru_prev;
  } else {
    blocks_[block.lru_next].lru_prev = block.lru_prev;
  }
  block.lru_prev = kNoBlock;
  block.lru_next = kNoBlock;
  --lru_size_;
}

}  // namespace tern::worker
