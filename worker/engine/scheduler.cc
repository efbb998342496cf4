#include "worker/engine/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace tern::worker {
namespace {

// Blocks kept free when admitting next to running sequences (1% of the pool,
// as vLLM's watermark), so the decodes of the running batch do not at once
// preempt what was just admitted.
int32_t AdmissionWatermark(const KvBlockManager& kv) { return std::max(1, kv.num_blocks() / 100); }

}  // namespace

Scheduler::Scheduler(SchedulerOptions options, KvBlockManager* kv) : options_(options), kv_(kv) {}

absl::Status Scheduler::Add(KvSequenceId id, std::vector<int32_t> tokens) {
  if (sequences_.contains(id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", id, " is already scheduled"));
  }
  auto seq = std::make_unique<ScheduledSequence>();
  seq->id = id;
  seq->tokens = std::move(tokens);
  waiting_.push_back(seq.get());
  sequences_.emplace(id, std::move(seq));
  return absl::OkStatus();
}

absl::Status Scheduler::Remove(KvSequenceId id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("sequence ", id, " is not scheduled"));
  }
  ScheduledSequence* seq = it->second.get();
  if (seq->running) {
    TERN_CHECK(kv_->Free(id).ok()) << "running sequence " << id << " holds no KV blocks";
    EraseRunning(seq);
  } else {
    auto pos = std::find(waiting_.begin(), waiting_.end(), seq);
    if (pos != waiting_.end()) waiting_.erase(pos);
  }
  sequences_.erase(it);
  return absl::OkStatus();
}

bool Scheduler::SharesInflightPrefix(const ScheduledSequence& seq) const {
  const int32_t block = kv_->block_size();
  for (const ScheduledSequence* other : running_) {
    if (IsDecoding(*other)) continue;
    const size_t limit = std::min(seq.tokens.size(), other->tokens.size());
    const auto [mine, theirs] =
        std::mismatch(seq.tokens.begin(), seq.tokens.begin() + static_cast<std::ptrdiff_t>(limit),
                      other->tokens.begin());
    const auto shared = static_cast<int32_t>(mine - seq.tokens.begin());
    // A full block in common that the other sequence has not computed yet
    // (the last prompt token is always computed anew, so it does not count).
    const int32_t shared_blocks =
        std::min<int32_t>(shared, static_cast<int32_t>(seq.tokens.size()) - 1) / block;
    if (shared_blocks > 0 && shared_blocks * block > other->num_computed) return true;
  }
  return false;
}

bool Scheduler::IsDecoding(const ScheduledSequence& seq) const {
  return seq.num_computed + 1 >= static_cast<int32_t>(seq.tokens.size());
}

void Scheduler::EraseRunning(ScheduledSequence* seq) {
  running_.erase(std::find(running_.begin(), running_.end(), seq));
  seq->running = false;
}

void Scheduler::Preempt(ScheduledSequence* victim) {
  TERN_CHECK(kv_->Free(victim->id).ok()) << "preempted sequence " << victim->id << " holds no KV";
  EraseRunning(victim);
  victim->num_computed = 0;
  ++victim->num_preemptions;
  ++preemptions_;
  waiting_.push_front(victim);
}

StepPlan Scheduler::Schedule() {
  StepPlan plan;
  int32_t budget = options_.max_num_batched_tokens;
  auto add_chunk = [&](ScheduledSequence* seq, int32_t count) {
    const int32_t size = static_cast<int32_t>(seq->tokens.size());
    plan.chunks.push_back({seq->id, seq->num_computed, count, seq->num_computed + count == size});
    plan.num_tokens += count;
    budget -= count;
  };

  // 1. Decodes. Victims come from the back of running_, which this loop has
  // not reached yet, so no victim already has a chunk in the plan.
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    ScheduledSequence* seq = running_[i];
    if (!IsDecoding(*seq) || seq->num_computed == static_cast<int32_t>(seq->tokens.size()))
      continue;
    bool has_slots = false;
    while (true) {
      const int32_t kv_tokens = *kv_->NumTokens(seq->id);
      const auto missing = absl::MakeConstSpan(seq->tokens).subspan(kv_tokens);
      const absl::Status status =
          missing.empty() ? absl::OkStatus() : kv_->AppendTokens(seq->id, missing);
      if (status.ok()) {
        has_slots = true;
        break;
      }
      if (!absl::IsResourceExhausted(status) || running_.size() == 1) {
        plan.failed.emplace_back(seq->id, status);
        break;
      }
      ScheduledSequence* victim = running_.back();
      plan.preempted.push_back(victim->id);
      Preempt(victim);
      if (victim == seq) break;
    }
    if (has_slots) add_chunk(seq, static_cast<int32_t>(seq->tokens.size()) - seq->num_computed);
  }

  // 2. Prefill chunks of admitted sequences, oldest first; shorter ones while
  // others wait, so that the budget admits some of them too.
  const int32_t long_chunk = options_.long_prefill_chunk > 0
                                 ? options_.long_prefill_chunk
                                 : std::max(1, options_.max_num_batched_tokens / 2);
  // Others wait when some sequence is waiting and could be admitted.
  auto chunk_limit = [&](bool others_wait) {
    others_wait = others_wait && static_cast<int32_t>(running_.size()) < options_.max_num_seqs;
    return others_wait ? std::min(budget, long_chunk) : budget;
  };
  for (ScheduledSequence* seq : running_) {
    if (budget <= 0) break;
    if (IsDecoding(*seq)) continue;
    const int32_t remaining = static_cast<int32_t>(seq->tokens.size()) - seq->num_computed;
    add_chunk(seq, std::min(remaining, chunk_limit(!waiting_.empty())));
  }

  // 3. Admission, first come first served (except sequences waiting for a
  // prefix another one is computing).
  for (auto it = waiting_.begin(); it != waiting_.end() && budget > 0 &&
                                   static_cast<int32_t>(running_.size()) < options_.max_num_seqs;) {
    ScheduledSequence* seq = *it;
    if (options_.wait_for_inflight_prefix && SharesInflightPrefix(*seq)) {
      ++it;
      continue;
    }
    if (!running_.empty()) {
      // Conservative: counts cached prefix blocks as needed too.
      const int64_t need =
          (static_cast<int64_t>(seq->tokens.size()) + kv_->block_size() - 1) / kv_->block_size();
      if (kv_->num_free_blocks() - need < AdmissionWatermark(*kv_)) break;
    }
    absl::StatusOr<KvAllocation> allocation = kv_->Allocate(seq->id, seq->tokens);
    if (absl::IsResourceExhausted(allocation.status())) break;
    it = waiting_.erase(it);
    if (!allocation.ok()) {
      plan.failed.emplace_back(seq->id, allocation.status());
      continue;
    }
    seq->num_computed = allocation->num_cached_tokens;
    if (seq->first_cached_tokens < 0) seq->first_cached_tokens = allocation->num_cached_tokens;
    seq->running = true;
    running_.push_back(seq);
    const int32_t remaining = static_cast<int32_t>(seq->tokens.size()) - seq->num_computed;
    add_chunk(seq, std::min(remaining, chunk_limit(it != waiting_.end())));
  }
  return plan;
}

void Scheduler::Commit(const StepPlan& plan) {
  for (const ScheduledChunk& chunk : plan.chunks) {
    auto it = sequences_.find(chunk.id);
    TERN_CHECK(it != sequences_.end() && it->second->running)
        << "committing sequence " << chunk.id << " that is not running";
    ScheduledSequence& seq = *it->second;
    TERN_CHECK(seq.num_computed == chunk.start) << "sequence " << chunk.id << " committed twice";
    seq.num_computed += chunk.count;
    const absl::Status status = kv_->CommitComputed(chunk.id, seq.num_computed);
    TERN_CHECK(status.ok()) << status;
  }
}

absl::Status Scheduler::AppendToken(KvSequenceId id, int32_t token) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("sequence ", id, " is not scheduled"));
  }
  ScheduledSequence& seq = *it->second;
  if (!seq.running || seq.num_computed != static_cast<int32_t>(seq.tokens.size())) {
    return absl::FailedPreconditionError(
        absl::StrCat("sequence ", id, " has tokens not computed yet"));
  }
  seq.tokens.push_back(token);
  return absl::OkStatus();
}

const ScheduledSequence* Scheduler::Find(KvSequenceId id) const {
  auto it = sequences_.find(id);
  return it == sequences_.end() ? nullptr : it->second.get();
}

int64_t Scheduler::QueuedPrefillTokens() const {
  int64_t total = 0;
  for (const ScheduledSequence* seq : running_) {
    if (!IsDecoding(*seq)) total += static_cast<int64_t>(seq->tokens.size()) - seq->num_computed;
  }
  for (const ScheduledSequence* seq : waiting_) total += static_cast<int64_t>(seq->tokens.size());
  return total;
}

}  // namespace tern::worker
