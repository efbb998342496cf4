// KV-cache events: how a worker tells the router which prefix blocks its
// cache holds. Each event is a plain value (the gRPC service converts it to
// tern.v1.KvEvent at the edge); applying every drained event in order to an
// empty set of block hashes reproduces the cache's set of hashes exactly.
//
// KvEventLog buffers events between drains. It is bounded: it holds at most
// `max_pending_hashes` block hashes. When an event would pass the bound, the
// log drops everything pending and marks itself overflowed; it then ignores
// further stored/removed events, because the consumer must resynchronise
// anyway: the owner (KvBlockManager) answers an overflow by recording
// AllBlocksCleared followed by a snapshot of the whole cache, which together
// describe the cache from scratch. Sequence numbers are given at drain time,
// so the numbers a consumer sees are 1, 2, 3, ... with no gaps, whatever was
// dropped.
//
// Memory: at most max_pending_hashes * 8 bytes of hashes plus one small
// header per event (an event holds at least one hash, except the single
// AllBlocksCleared that can lead the buffer).
//
// Thread contract: not thread-safe; owned by one thread (the engine loop).
#ifndef TERN_WORKER_ENGINE_KV_EVENTS_H_
#define TERN_WORKER_ENGINE_KV_EVENTS_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace tern::worker {

enum class KvEventKind { kBlockStored, kBlockRemoved, kAllBlocksCleared };

struct KvEvent {
  // 1 for the first event ever drained, then +1 per event.
  uint64_t sequence_number = 0;
  KvEventKind kind = KvEventKind::kBlockStored;
  // kBlockStored: the chained hashes (common/block_hash.h) of blocks that
  // entered the cache, in chain order (each is the parent of the next).
  // kBlockRemoved: hashes that left the cache. Empty for kAllBlocksCleared.
  std::vector<uint64_t> block_hashes;
  // kBlockStored only: the hash of the block before block_hashes[0]; absent
  // when block_hashes[0] is the first block of a prompt.
  std::optional<uint64_t> parent_block_hash;

  friend bool operator==(const KvEvent&, const KvEvent&) = default;
};

class KvEventLog {
 public:
  // max_pending_hashes must be positive.
  explicit KvEventLog(size_t max_pending_hashes);

  // Records blocks stored into the cache (an empty list records nothing).
  void AddStored(std::vector<uint64_t> block_hashes, std::optional<uint64_t> parent_block_hash);
  // Records blocks evicted from the cache (an empty list records nothing).
  void AddRemoved(std::vector<uint64_t> block_hashes);
  // Records that the cache was emptied. Everything pending is superseded and
  // dropped, and the overflow mark is cleared: the events that follow
  // describe the cache from empty.
  void AddAllCleared();

  // True when events were dropped since the last AddAllCleared; the owner
  // must record AllBlocksCleared and a snapshot before the next Drain.
  bool overflowed() const { return overflowed_; }
  // Number of times the log has overflowed since construction.
  uint64_t overflow_count() const { return overflow_count_; }

  // Takes the pending events, numbering them in order.
  std::vector<KvEvent> Drain();

  size_t pending_events() const { return pending_.size(); }
  size_t pending_hashes() const { return pending_hashes_; }
  size_t max_pending_hashes() const { return max_pending_hashes_; }
  // The number the next drained event will carry.
  uint64_t next_sequence_number() const { return next_sequence_number_; }

 private:
  // False (after dropping everything) when `more` hashes would pass the bound.
  bool Reserve(size_t more);

  const size_t max_pending_hashes_;
  std::vector<KvEvent> pending_;
  size_t pending_hashes_ = 0;
  bool overflowed_ = false;
  uint64_t overflow_count_ = 0;
  uint64_t next_sequence_number_ = 1;
};

}  // namespace tern::worker

#endif  // TERN_WORKER_ENGINE_KV_EVENTS_H_
