// Helpers shared by the KV block manager's test files (allocation, prefix
// caching, events): a manager from a few options, token runs, the cached set,
// a sequence's block table and KV events to compare with drained ones.
#ifndef TERN_TESTS_WORKER_ENGINE_KV_BLOCK_MANAGER_TEST_UTIL_H_
#define TERN_TESTS_WORKER_ENGINE_KV_BLOCK_MANAGER_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <memory>
#include <numeric>
#include <optional>
#include <set>
#include <vector>

#include "worker/engine/kv_block_manager.h"

namespace tern::worker {

inline std::unique_ptr<KvBlockManager> MakeManager(int32_t block_size, int32_t num_blocks,
                                                   bool prefix_caching = true) {
  KvBlockManagerOptions options;
  options.block_size = block_size;
  options.num_blocks = num_blocks;
  options.enable_prefix_caching = prefix_caching;
  auto manager = KvBlockManager::Create(options);
  EXPECT_TRUE(manager.ok()) << manager.status();
  return std::move(manager).value();
}

// `n` token ids starting at `first`, counting up.
inline std::vector<int32_t> Tokens(int n, int32_t first) {
  std::vector<int32_t> tokens(n);
  std::iota(tokens.begin(), tokens.end(), first);
  return tokens;
}

inline std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

inline std::set<uint64_t> CachedSet(const KvBlockManager& manager) {
  const std::vector<uint64_t> hashes = manager.CachedBlockHashes();
  return std::set<uint64_t>(hashes.begin(), hashes.end());
}

inline std::vector<KvBlockId> Table(const KvBlockManager& manager, KvSequenceId id) {
  auto table = manager.BlockTable(id);
  EXPECT_TRUE(table.ok()) << table.status();
  if (!table.ok()) return {};
  return std::vector<KvBlockId>(table->begin(), table->end());
}

inline KvEvent Stored(std::vector<uint64_t> hashes, std::optional<uint64_t> parent) {
  KvEvent event;
  event.kind = KvEventKind::kBlockStored;
  event.block_hashes = std::move(hashes);
  event.parent_block_hash = parent;
  return event;
}

inline KvEvent Removed(std::vector<uint64_t> hashes) {
  KvEvent event;
  event.kind = KvEventKind::kBlockRemoved;
  event.block_hashes = std::move(hashes);
  return event;
}

// Drained events without their sequence numbers, for comparison.
inline std::vector<KvEvent> DrainUnnumbered(KvBlockManager& manager) {
  std::vector<KvEvent> events = manager.DrainEvents();
  for (KvEvent& event : events) event.sequence_number = 0;
  return events;
}

}  // namespace tern::worker

#endif  // TERN_TESTS_WORKER_ENGINE_KV_BLOCK_MANAGER_TEST_UTIL_H_
