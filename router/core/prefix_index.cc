#include "router/core/prefix_index.h"

#include <algorithm>

namespace tern::router {

namespace {

template <typename Holders>
void EraseHolder(Holders& holders, WorkerId worker) {
  auto it = std::find(holders.begin(), holders.end(), worker);
  if (it != holders.end()) holders.erase(it);
}

}  // namespace

PrefixIndex::PrefixIndex(PrefixIndexOptions options) : options_(options) {}

PrefixIndex::WorkerState& PrefixIndex::State(WorkerId worker) {
  if (static_cast<size_t>(worker) >= workers_.size()) workers_.resize(worker + 1);
  return workers_[worker];
}

void PrefixIndex::BeginStream(WorkerId worker) {
  ClearExact(worker);
  ClearApprox(worker);
  WorkerState& state = State(worker);
  state.exact = true;
  state.in_sync = true;
  state.expect_any = true;
}

PrefixIndex::ApplyResult PrefixIndex::ApplyEvents(WorkerId worker,
                                                  absl::Span<const KvEvent> events) {
  WorkerState& state = State(worker);
  if (!state.in_sync) return ApplyResult::kResync;
  for (const KvEvent& event : events) {
    if (!state.expect_any && event.sequence_number != state.last_sequence + 1) {
      // Lost events: what the worker holds is unknown until a new snapshot.
      ClearExact(worker);
      state.in_sync = false;
      ++resyncs_;
      return ApplyResult::kResync;
    }
    state.expect_any = false;
    state.last_sequence = event.sequence_number;
    switch (event.kind) {
      case KvEvent::Kind::kStored:
        for (uint64_t hash : event.block_hashes) AddExact(worker, hash);
        break;
      case KvEvent::Kind::kRemoved:
        for (uint64_t hash : event.block_hashes) RemoveExact(worker, hash);
        break;
      case KvEvent::Kind::kCleared:
        ClearExact(worker);
        break;
      case KvEvent::Kind::kUnknown:
        break;
    }
  }
  return ApplyResult::kOk;
}

void PrefixIndex::RemoveWorker(WorkerId worker) {
  ClearExact(worker);
  ClearApprox(worker);
  State(worker) = WorkerState();
}

void PrefixIndex::AddExact(WorkerId worker, uint64_t hash) {
  if (!workers_[worker].blocks.insert(hash).second) return;
  exact_[hash].push_back(worker);
}

void PrefixIndex::RemoveExact(WorkerId worker, uint64_t hash) {
  if (workers_[worker].blocks.erase(hash) == 0) return;
  auto it = exact_.find(hash);
  if (it == exact_.end()) return;
  EraseHolder(it->second, worker);
  if (it->second.empty()) exact_.erase(it);
}

void PrefixIndex::ClearExact(WorkerId worker) {
  WorkerState& state = State(worker);
  for (uint64_t hash : state.blocks) {
    auto it = exact_.find(hash);
    if (it == exact_.end()) continue;
    EraseHolder(it->second, worker);
    if (it->second.empty()) exact_.erase(it);
  }
  state.blocks.clear();
}

void PrefixIndex::DropApprox(ApproxList::iterator it) {
  auto by_hash = approx_.find(it->hash);
  if (by_hash != approx_.end()) {
    by_hash->second.erase(it->worker);
    if (by_hash->second.empty()) approx_.erase(by_hash);
  }
  approx_lru_.erase(it);
}

void PrefixIndex::ClearApprox(WorkerId worker) {
  // Linear in the approximate entries; runs only when a worker changes mode.
  for (auto it = approx_lru_.begin(); it != approx_lru_.end();) {
    auto next = std::next(it);
    if (it->worker == worker) DropApprox(it);
    it = next;
  }
}

void PrefixIndex::RecordRouted(WorkerId worker, absl::Span<const uint64_t> block_hashes,
                               absl::Time now) {
  State(worker);
  for (uint64_t hash : block_hashes) {
    auto& holders = approx_[hash];
    auto found = holders.find(worker);
    if (found != holders.end()) {
      // Refresh: move to the most recently routed end.
      found->second->routed_at = now;
      approx_lru_.splice(approx_lru_.end(), approx_lru_, found->second);
      continue;
    }
    holders[worker] = approx_lru_.insert(approx_lru_.end(), ApproxEntry{hash, worker, now});
  }
  // Records past approx_ttl never match again: drop them (oldest first, as
  // the list is in routing order), so the index follows the recent traffic
  // instead of growing to max_approx_blocks.
  const absl::Time expired = now - options_.approx_ttl;
  while (!approx_lru_.empty() &&
         (approx_lru_.front().routed_at < expired ||
          static_cast<int64_t>(approx_lru_.size()) > options_.max_approx_blocks)) {
    DropApprox(approx_lru_.begin());
  }
}

void PrefixIndex::MatchPrefix(absl::Span<const uint64_t> block_hashes, absl::Time now,
                              std::vector<int32_t>* matched) const {
  std::fill(matched->begin(), matched->end(), 0);
  const int32_t num_workers = static_cast<int32_t>(matched->size());
  const absl::Time oldest = now - options_.approx_ttl;
  const absl::Time oldest_speculative = now - options_.speculative_ttl;
  // A worker holding block i (by its chained hash) holds the whole prefix
  // through block i, but its record of an earlier block may have been evicted
  // independently; counting only unbroken runs from block 0 keeps the figure
  // to what the worker's cache will actually reuse.
  for (size_t i = 0; i < block_hashes.size(); ++i) {
    const int32_t before = static_cast<int32_t>(i);
    bool advanced = false;
    auto advance = [&](WorkerId worker) {
      if (worker < num_workers && (*matched)[worker] == before) {
        (*matched)[worker] = before + 1;
        advanced = true;
      }
    };
    if (auto it = exact_.find(block_hashes[i]); it != exact_.end()) {
      for (WorkerId worker : it->second) advance(worker);
    }
    if (auto it = approx_.find(block_hashes[i]); it != approx_.end()) {
      for (const auto& [worker, entry] : it->second) {
        if (entry->routed_at >= (exact(worker) ? oldest_speculative : oldest)) advance(worker);
      }
    }
    if (!advanced) break;
  }
}

int32_t PrefixIndex::MatchPrefixFor(WorkerId worker, absl::Span<const uint64_t> block_hashes,
                                    absl::Time now) const {
  if (worker < 0) return 0;
  const bool has_state = static_cast<size_t>(worker) < workers_.size();
  const absl::Time oldest =
      now - (has_state && workers_[worker].exact ? options_.speculative_ttl : options_.approx_ttl);
  int32_t matched = 0;
  for (uint64_t hash : block_hashes) {
    bool holds = has_state && workers_[worker].blocks.contains(hash);
    if (!holds) {
      if (auto it = approx_.find(hash); it != approx_.end()) {
        auto entry = it->second.find(worker);
        holds = entry != it->second.end() && entry->second->routed_at >= oldest;
      }
    }
    if (!holds) break;
    ++matched;
  }
  return matched;
}

bool PrefixIndex::exact(WorkerId worker) const {
  return static_cast<size_t>(worker) < workers_.size() && workers_[worker].exact;
}

std::vector<uint64_t> PrefixIndex::ExactBlocks(WorkerId worker) const {
  if (static_cast<size_t>(worker) >= workers_.size()) return {};
  const auto& blocks = workers_[worker].blocks;
  return std::vector<uint64_t>(blocks.begin(), blocks.end());
}

int64_t PrefixIndex::num_exact_blocks(WorkerId worker) const {
  if (static_cast<size_t>(worker) >= workers_.size()) return 0;
  return static_cast<int64_t>(workers_[worker].blocks.size());
}

PrefixIndexStats PrefixIndex::stats() const {
  PrefixIndexStats stats;
  for (const WorkerState& state : workers_) {
    stats.exact_pairs += static_cast<int64_t>(state.blocks.size());
  }
  stats.approx_pairs = static_cast<int64_t>(approx_lru_.size());
  stats.distinct_blocks = static_cast<int64_t>(exact_.size());
  for (const auto& [hash, holders] : approx_) {
    if (!exact_.contains(hash)) ++stats.distinct_blocks;
  }
  stats.resyncs = resyncs_;
  return stats;
}

}  // namespace tern::router
