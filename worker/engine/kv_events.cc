#include "worker/engine/kv_events.h"

#include <utility>

#include "common/log.h"

namespace tern::worker {

KvEventLog::KvEventLog(size_t max_pending_hashes) : max_pending_hashes_(max_pending_hashes) {
  TERN_CHECK(max_pending_hashes_ > 0) << "KvEventLog needs room for at least one hash";
}

bool KvEventLog::Reserve(size_t more) {
  if (overflowed_) return false;
  if (more <= max_pending_hashes_ - pending_hashes_) {
    pending_hashes_ += more;
    return true;
  }
  // The consumer will get a fresh snapshot instead, so nothing pending is
  // worth keeping.
  pending_.clear();
  pending_.shrink_to_fit();
  pending_hashes_ = 0;
  overflowed_ = true;
  ++overflow_count_;
  return false;
}

void KvEventLog::AddStored(std::vector<uint64_t> block_hashes,
                           std::optional<uint64_t> parent_block_hash) {
  if (block_hashes.empty() || !Reserve(block_hashes.size())) return;
  KvEvent event;
  event.kind = KvEventKind::kBlockStored;
  event.block_hashes = std::move(block_hashes);
  event.parent_block_hash = parent_block_hash;
  pending_.push_back(std::move(event));
}

void KvEventLog::AddRemoved(std::vector<uint64_t> block_hashes) {
  if (block_hashes.empty() || !Reserve(block_hashes.size())) return;
  KvEvent event;
  event.kind = KvEventKind::kBlockRemoved;
  event.block_hashes = std::move(block_hashes);
  pending_.push_back(std::move(event));
}

void KvEventLog::AddAllCleared() {
  pending_.clear();
  pending_hashes_ = 0;
  overflowed_ = false;
  KvEvent event;
  event.kind = KvEventKind::kAllBlocksCleared;
  pending_.push_back(std::move(event));
}

std::vector<KvEvent> KvEventLog::Drain() {
  std::vector<KvEvent> out;
  out.swap(pending_);
  pending_hashes_ = 0;
  for (KvEvent& event : out) event.sequence_number = next_sequence_number_++;
  return out;
}

}  // namespace tern::worker
