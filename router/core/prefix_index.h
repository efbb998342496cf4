// The router's prefix index: which workers hold which prefix blocks, so the
// routing policy can count, per worker, the prompt blocks it would not have to
// compute again.
//
// Two sources, chosen per worker:
//  - exact: the worker's KV events (Worker.WatchState). Each BlockStored adds
//    the worker to its blocks, BlockRemoved removes it, AllBlocksCleared
//    removes it from everything. Event sequence numbers must follow each other
//    without a gap within one stream; a gap makes ApplyEvents answer kResync,
//    forget what the worker held and ignore its events until the caller starts
//    a new stream (BeginStream), whose first events are a full snapshot.
//  - approximate, for workers that publish no events: the router records the
//    prompt blocks it sent to a worker, and trusts them for `approx_ttl` after
//    the last time they were routed there. At most `max_approx_blocks`
//    (worker, block) entries are kept; past that the least recently routed
//    go first.
// Routing records also cover exact workers for `speculative_ttl` (the events
// of a prefix being computed arrive only once it is), so requests that share a
// new prefix and arrive together are sent to the same worker.
//
// Blocks are the chained hashes of common/block_hash.h, so a hash names a
// whole prefix: a worker holding block i of a prompt (by hash) holds the
// prefix through block i. MatchPrefix counts, per worker, the leading prompt
// blocks it holds.
//
// Memory: an exact (worker, block) pair costs about 24 bytes (one id in the
// block's worker list, one hash in the worker's set); the total is bounded by
// the workers' KV pools, which their eviction events keep in step. An
// approximate pair costs about 48 bytes and is bounded by max_approx_blocks.
//
// Thread contract: not thread-safe; the router guards it with its own lock.
#ifndef TERN_ROUTER_CORE_PREFIX_INDEX_H_
#define TERN_ROUTER_CORE_PREFIX_INDEX_H_

#include <cstdint>
#include <list>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "router/core/kv_event.h"

namespace tern::router {

// Dense worker numbers, assigned by the fleet (0, 1, 2, ...).
using WorkerId = int32_t;

struct PrefixIndexOptions {
  absl::Duration approx_ttl = absl::Minutes(2);
  absl::Duration speculative_ttl = absl::Seconds(2);
  int64_t max_approx_blocks = int64_t{1} << 20;
};

struct PrefixIndexStats {
  int64_t exact_pairs = 0;   // (worker, block) pairs from events
  int64_t approx_pairs = 0;  // (worker, block) pairs from routing history
  int64_t distinct_blocks = 0;
  uint64_t resyncs = 0;  // gaps seen since construction
};

class PrefixIndex {
 public:
  enum class ApplyResult { kOk, kResync };

  explicit PrefixIndex(PrefixIndexOptions options = {});

  // Marks the start of a new event stream from `worker`: forgets what it
  // held (exact and approximate) and accepts the stream's first sequence
  // number, whatever it is. The worker is exact from now on.
  void BeginStream(WorkerId worker);

  // Applies events of the worker's current stream in order. kResync on a
  // sequence-number gap, or for events of a worker with no open stream (never
  // begun, or already out of sync): the worker then holds nothing here until
  // the next BeginStream.
  ApplyResult ApplyEvents(WorkerId worker, absl::Span<const KvEvent> events);

  // Forgets the worker entirely (removed, or unhealthy); it becomes
  // approximate until its next BeginStream.
  void RemoveWorker(WorkerId worker);

  // Records that the blocks of a prompt were routed to `worker` at `now`, and
  // forgets records older than approx_ttl (they match nothing any more).
  void RecordRouted(WorkerId worker, absl::Span<const uint64_t> block_hashes, absl::Time now);

  // For each worker w < matched->size(), (*matched)[w] becomes the number of
  // leading `block_hashes` it holds (routing records older than approx_ttl,
  // or speculative_ttl for exact workers, at `now` do not count).
  void MatchPrefix(absl::Span<const uint64_t> block_hashes, absl::Time now,
                   std::vector<int32_t>* matched) const;

  // MatchPrefix for one worker: the number of leading `block_hashes` it
  // holds. O(blocks matched), whatever the number of workers.
  int32_t MatchPrefixFor(WorkerId worker, absl::Span<const uint64_t> block_hashes,
                         absl::Time now) const;

  // Whether events are the source of truth for this worker.
  bool exact(WorkerId worker) const;
  // The blocks `worker` holds by its events (empty in approximate mode).
  std::vector<uint64_t> ExactBlocks(WorkerId worker) const;
  int64_t num_exact_blocks(WorkerId worker) const;
  PrefixIndexStats stats() const;

 private:
  struct WorkerState {
    bool exact = false;
    bool in_sync = false;
    bool expect_any = true;  // the stream's first event may carry any number
    uint64_t last_sequence = 0;
    absl::flat_hash_set<uint64_t> blocks;  // exact mode
  };
  struct ApproxEntry {
    uint64_t hash;
    WorkerId worker;
    absl::Time routed_at;
  };
  using ApproxList = std::list<ApproxEntry>;  // least recently routed first

  WorkerState& State(WorkerId worker);
  void AddExact(WorkerId worker, uint64_t hash);
  void RemoveExact(WorkerId worker, uint64_t hash);
  void ClearExact(WorkerId worker);
  void ClearApprox(WorkerId worker);
  void DropApprox(ApproxList::iterator it);

  const PrefixIndexOptions options_;
  std::vector<WorkerState> workers_;
  // Block hash -> workers holding it by their events.
  absl::flat_hash_map<uint64_t, absl::InlinedVector<WorkerId, 4>> exact_;
  // Block hash -> (worker -> its entry in approx_lru_).
  absl::flat_hash_map<uint64_t, absl::flat_hash_map<WorkerId, ApproxList::iterator>> approx_;
  ApproxList approx_lru_;
  uint64_t resyncs_ = 0;
};

}  // namespace tern::router

#endif  // TERN_ROUTER_CORE_PREFIX_INDEX_H_
