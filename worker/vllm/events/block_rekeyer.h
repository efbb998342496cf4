// Re-keys vLLM's prefix-cache events into tern's: every stored block gets
// tern's chained block hash (common/block_hash.h) computed from the event's
// token_ids and its parent's tern hash, so the router's exact prefix index
// works unchanged whatever hash algorithm and seed vLLM runs with. vLLM's
// hashes are kept only as opaque ids, to resolve later parents and removals.
//
// Blocks that cannot be re-keyed are skipped and counted: a parent never
// seen (stored before this worker listened, or its event lost), a block size
// other than the worker's, token_ids that do not fill the blocks, blocks with
// extra keys or a LoRA (their hash covers more than tokens: a prompt's tokens
// alone cannot name them) and media other than "GPU" (vLLM's name for device
// memory; offloaded tiers are not what the engine computes from). A tern hash
// reached from two vLLM ids (across hash algorithms, or one id in two KV-cache
// groups of a hybrid model) is stored once and removed with its last id.
//
// Thread contract: not thread-safe; owned by one thread.
#ifndef TERN_WORKER_VLLM_EVENTS_BLOCK_REKEYER_H_
#define TERN_WORKER_VLLM_EVENTS_BLOCK_REKEYER_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "worker/engine/kv_events.h"
#include "worker/vllm/events/vllm_kv_events.h"

namespace tern::worker::vllm {

struct RekeyStats {
  uint64_t stored_blocks = 0;
  uint64_t removed_blocks = 0;
  uint64_t clears = 0;
  uint64_t unknown_parent_blocks = 0;
  uint64_t wrong_block_size_blocks = 0;
  uint64_t extra_keys_blocks = 0;
  uint64_t other_medium_blocks = 0;
  uint64_t unknown_removed_blocks = 0;
  uint64_t unknown_events = 0;
};

class BlockRekeyer {
 public:
  // block_size: the tokens per block the worker reports in Info (vLLM's
  // --block-size); must be positive.
  explicit BlockRekeyer(int32_t block_size);

  // Applies one event and appends what it means in tern's terms to *out
  // (sequence numbers left 0): BlockStored runs with tern hashes and parent,
  // BlockRemoved of tern hashes that left, AllBlocksCleared.
  void Apply(const VllmEvent& event, std::vector<KvEvent>* out);
  // Forgets every block (vLLM restarted, or events were lost for good). The
  // caller tells its consumers with AllBlocksCleared.
  void Clear();

  // The blocks known now as BlockStored chain runs, each after its parent's
  // (no AllBlocksCleared): what a new subscriber starts from.
  std::vector<KvEvent> Snapshot() const;

  size_t blocks() const { return tern_refs_.size(); }
  const RekeyStats& stats() const { return stats_; }
  int32_t block_size() const { return block_size_; }

 private:
  // A vLLM id within its KV-cache group: hybrid models store the same hash
  // once per group and evict it per group.
  using VllmKey = std::pair<int32_t, VllmBlockId>;
  struct TernBlock {
    std::optional<uint64_t> parent;
    int32_t refs = 0;
  };

  void ApplyStored(const VllmEvent& event, std::vector<KvEvent>* out);
  void ApplyRemoved(const VllmEvent& event, std::vector<KvEvent>* out);

  const int32_t block_size_;
  // vLLM key -> its tern hash.
  absl::flat_hash_map<VllmKey, uint64_t> by_vllm_id_;
  // tern hash -> (parent tern hash or none, number of vLLM keys naming it).
  absl::flat_hash_map<uint64_t, TernBlock> tern_refs_;
  RekeyStats stats_;
};

}  // namespace tern::worker::vllm

#endif  // TERN_WORKER_VLLM_EVENTS_BLOCK_REKEYER_H_
