#include "worker/vllm/events/block_rekeyer.h"

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/types/span.h"
#include "common/block_hash.h"
#include "common/log.h"

namespace tern::worker::vllm {
namespace {

constexpr char kMediumGpu[] = "GPU";

}  // namespace

BlockRekeyer::BlockRekeyer(int32_t block_size) : block_size_(block_size) {
  TERN_CHECK(block_size_ > 0) << "BlockRekeyer needs a positive block size, got " << block_size_;
}

void BlockRekeyer::Apply(const VllmEvent& event, std::vector<KvEvent>* out) {
  switch (event.kind) {
    case VllmEventKind::kBlockStored:
      ApplyStored(event, out);
      return;
    case VllmEventKind::kBlockRemoved:
      ApplyRemoved(event, out);
      return;
    case VllmEventKind::kAllBlocksCleared: {
      Clear();
      ++stats_.clears;
      KvEvent cleared;
      cleared.kind = KvEventKind::kAllBlocksCleared;
      out->push_back(std::move(cleared));
      return;
    }
    case VllmEventKind::kUnknown:
      ++stats_.unknown_events;
      return;
  }
}

void BlockRekeyer::ApplyStored(const VllmEvent& event, std::vector<KvEvent>* out) {
  const size_t n = event.block_hashes.size();
  if (n == 0) return;
  if (event.medium != kMediumGpu) {
    stats_.other_medium_blocks += n;
    return;
  }
  if (event.block_size != block_size_ ||
      event.token_ids.size() != n * static_cast<size_t>(block_size_)) {
    stats_.wrong_block_size_blocks += n;
    return;
  }
  // A LoRA's blocks hash its name along with the tokens (lora_id in releases
  // that sent no extra_keys): the same tokens on the base model are another block.
  if (event.has_extra_keys || event.lora_name.has_value() || event.lora_id.has_value()) {
    stats_.extra_keys_blocks += n;
    return;
  }
  uint64_t parent = kNoParentBlockHash;
  std::optional<uint64_t> parent_or_none;
  if (event.parent_block_hash.has_value()) {
    auto it = by_vllm_id_.find(VllmKey(event.group_idx, *event.parent_block_hash));
    if (it == by_vllm_id_.end()) {
      stats_.unknown_parent_blocks += n;
      return;
    }
    parent = it->second;
    parent_or_none = parent;
  }

  // Blocks already present split the chain: each run's parent is the block
  // just before it, stored now or earlier.
  KvEvent run;
  run.kind = KvEventKind::kBlockStored;
  auto flush = [&] {
    if (run.block_hashes.empty()) return;
    out->push_back(std::move(run));
    run = KvEvent();
    run.kind = KvEventKind::kBlockStored;
  };
  const absl::Span<const int32_t> tokens(event.token_ids);
  for (size_t j = 0; j < n; ++j) {
    const uint64_t hash =
        HashBlock(parent, tokens.subspan(j * static_cast<size_t>(block_size_), block_size_));
    const bool new_key =
        by_vllm_id_.try_emplace(VllmKey(event.group_idx, event.block_hashes[j]), hash).second;
    bool stored = false;
    if (new_key) {
      TernBlock& block = tern_refs_[hash];
      if (++block.refs == 1) {
        block.parent = parent_or_none;
        stored = true;
      }
    }
    if (stored) {
      if (run.block_hashes.empty()) run.parent_block_hash = parent_or_none;
      run.block_hashes.push_back(hash);
      ++stats_.stored_blocks;
    } else {
      flush();
    }
    parent = hash;
    parent_or_none = hash;
  }
  flush();
}

void BlockRekeyer::ApplyRemoved(const VllmEvent& event, std::vector<KvEvent>* out) {
  const size_t n = event.block_hashes.size();
  if (n == 0) return;
  // An offloaded copy leaving its tier says nothing about the GPU copy.
  if (event.medium != kMediumGpu) {
    stats_.other_medium_blocks += n;
    return;
  }
  KvEvent removed;
  removed.kind = KvEventKind::kBlockRemoved;
  for (const VllmBlockId& id : event.block_hashes) {
    auto it = by_vllm_id_.find(VllmKey(event.group_idx, id));
    if (it == by_vllm_id_.end()) {
      ++stats_.unknown_removed_blocks;
      continue;
    }
    const uint64_t hash = it->second;
    by_vllm_id_.erase(it);
    auto block = tern_refs_.find(hash);
    TERN_CHECK(block != tern_refs_.end()) << "a known vLLM id names a tern block not held";
    if (--block->second.refs > 0) continue;
    tern_refs_.erase(block);
    removed.block_hashes.push_back(hash);
    ++stats_.removed_blocks;
  }
  if (!removed.block_hashes.empty()) out->push_back(std::move(removed));
}

void BlockRekeyer::Clear() {
  by_vllm_id_.clear();
  tern_refs_.clear();
}

std::vector<KvEvent> BlockRekeyer::Snapshot() const {
  // Chains are walked from blocks whose parent is not held; a block's other
  // children start runs of their own, emitted after the run holding it.
  absl::flat_hash_map<uint64_t, std::vector<uint64_t>> children;
  std::vector<uint64_t> pending;
  for (const auto& [hash, block] : tern_refs_) {
    if (block.parent.has_value() && tern_refs_.contains(*block.parent)) {
      children[*block.parent].push_back(hash);
    } else {
      pending.push_back(hash);
    }
  }
  std::vector<KvEvent> snapshot;
  absl::flat_hash_set<uint64_t> emitted;
  auto walk = [&](std::vector<uint64_t>& roots) {
    while (!roots.empty()) {
      uint64_t hash = roots.back();
      roots.pop_back();
      if (!emitted.insert(hash).second) continue;
      KvEvent run;
      run.kind = KvEventKind::kBlockStored;
      run.parent_block_hash = tern_refs_.at(hash).parent;
      run.block_hashes.push_back(hash);
      for (auto kids = children.find(hash); kids != children.end(); kids = children.find(hash)) {
        roots.insert(roots.end(), kids->second.begin() + 1, kids->second.end());
        hash = kids->second.front();
        if (!emitted.insert(hash).second) break;
        run.block_hashes.push_back(hash);
      }
      snapshot.push_back(std::move(run));
    }
  };
  walk(pending);
  // Only a hash collision could close a chain into a loop no walk reaches;
  // its blocks still belong to the set.
  if (emitted.size() != tern_refs_.size()) {
    for (const auto& [hash, block] : tern_refs_) {
      if (!emitted.contains(hash)) pending.push_back(hash);
    }
    walk(pending);
  }
  return snapshot;
}

}  // namespace tern::worker::vllm
