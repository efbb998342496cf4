// The engine's scheduling policy (DESIGN.md section 3): which tokens of which
// sequences one engine step computes, over a KvBlockManager. Pure policy: it
// runs no model, so it is tested on its own.
//
// Each step (Schedule) spends a budget of max_num_batched_tokens:
//   1. one decode token for every running sequence whose tokens are all
//      computed but the last sampled one, in admission order;
//   2. prefill chunks for running sequences still prefilling, in admission
//      order (a long prompt takes several steps, and the decodes of step 1
//      run in every one of them); while sequences wait for admission a chunk
//      is at most long_prefill_chunk tokens, so what is left of the budget
//      admits them in the same step and a short prompt arriving behind a
//      long one is not held up for the long one's whole prefill;
//   3. admission of waiting sequences, first come first served, while
//      max_num_seqs, free KV blocks and the budget allow: Allocate reuses the
//      longest cached prefix and the rest is prefilled in chunks. A waiting
//      head that does not fit stops admission, so later (smaller) arrivals
//      never overtake it.
// When a decode needs a block and none is free, the most recently admitted
// running sequence is preempted: its blocks are freed and it goes back to the
// front of the waiting queue; readmitted, it recomputes its prompt and
// generated tokens, reusing whatever prefix is still cached. The only running
// sequence is never preempted (the engine rejects sequences longer than the
// pool, so it always fits).
//
// After the executor ran a step, Commit marks the scheduled tokens computed
// (full blocks enter the prefix cache); the engine then samples for every
// entry with want_logits and hands the token back with AppendToken, or ends
// the sequence with Remove.
//
// Thread contract: not thread-safe; owned by the engine loop, like the
// KvBlockManager it drives (which must outlive it).
#ifndef TERN_WORKER_ENGINE_SCHEDULER_H_
#define TERN_WORKER_ENGINE_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "worker/engine/kv_block_manager.h"

namespace tern::worker {

struct SchedulerOptions {
  int32_t max_num_seqs = 8;
  int32_t max_num_batched_tokens = 256;
  // Hold back a waiting sequence whose prompt shares full blocks with one
  // still prefilling until those blocks are computed and cached, so a prefix
  // that arrives several times at once is computed once. Sequences behind it
  // may be admitted meanwhile (it waits on a prefill that is progressing, so
  // it cannot starve). Only useful with prefix caching.
  bool wait_for_inflight_prefix = true;
  // The most tokens one prefill chunk takes while others wait for admission
  // (vLLM's long_prefill_token_threshold); 0: half of max_num_batched_tokens.
  int32_t long_prefill_chunk = 0;
};

// One sequence's share of a step: tokens [start, start + count) of its token
// list are computed now.
struct ScheduledChunk {
  KvSequenceId id = 0;
  int32_t start = 0;
  int32_t count = 0;
  // True when the chunk ends at the sequence's last token: the step's logits
  // for it give the next token.
  bool want_logits = false;
};

struct StepPlan {
  std::vector<ScheduledChunk> chunks;
  // Sequences preempted while planning this step (now waiting again).
  std::vector<KvSequenceId> preempted;
  // Sequences that cannot continue (an impossible KV state); the engine ends
  // them with an error and removes them.
  std::vector<std::pair<KvSequenceId, absl::Status>> failed;
  int32_t num_tokens = 0;
  bool empty() const { return chunks.empty(); }
};

// What the scheduler knows of one sequence.
struct ScheduledSequence {
  KvSequenceId id = 0;
  // Prompt (with resumed tokens) followed by the tokens sampled here.
  std::vector<int32_t> tokens;
  // Leading tokens whose KV is written (0 while waiting).
  int32_t num_computed = 0;
  // Prompt tokens found in the prefix cache at the first admission; -1
  // before it.
  int32_t first_cached_tokens = -1;
  int32_t num_preemptions = 0;
  bool running = false;
};

class Scheduler {
 public:
  // `kv` must outlive the scheduler. Options must be positive (the engine
  // validates them).
  Scheduler(SchedulerOptions options, KvBlockManager* kv);

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a sequence at the back of the waiting queue. `tokens` is not
  // empty and fits the KV pool; ALREADY_EXISTS for a live id.
  absl::Status Add(KvSequenceId id, std::vector<int32_t> tokens);
  // Ends a sequence (finished or cancelled): frees its blocks if it holds
  // any. NOT_FOUND.
  absl::Status Remove(KvSequenceId id);

  // Plans the next step (see the file comment).
  StepPlan Schedule();
  // Marks the plan's tokens computed; full blocks enter the prefix cache.
  // Call once per plan, after the executor succeeded, before AppendToken.
  void Commit(const StepPlan& plan);
  // Appends a sampled token to a sequence whose tokens are all computed; it
  // is computed by the sequence's next decode. NOT_FOUND; FAILED_PRECONDITION
  // when the sequence still has uncomputed tokens.
  absl::Status AppendToken(KvSequenceId id, int32_t token);

  // nullptr when `id` is not live.
  const ScheduledSequence* Find(KvSequenceId id) const;
  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  // Uncomputed prompt (and recompute) tokens of prefilling and waiting
  // sequences; a decoding sequence's pending sampled token is not counted.
  int64_t QueuedPrefillTokens() const;
  uint64_t preemptions() const { return preemptions_; }

 private:
  // Sequences of running_ that decode (all but the last token computed).
  bool IsDecoding(const ScheduledSequence& seq) const;
  // Whether `seq` shares a full prompt block with a running sequence that has
  // not computed it yet.
  bool SharesInflightPrefix(const ScheduledSequence& seq) const;
  // Frees the victim's blocks and puts it at the front of the waiting queue.
  void Preempt(ScheduledSequence* victim);
  void EraseRunning(ScheduledSequence* seq);

  const SchedulerOptions options_;
  KvBlockManager* const kv_;
  absl::flat_hash_map<KvSequenceId, std::unique_ptr<ScheduledSequence>> sequences_;
  // Admission order; the back is the most recently admitted.
  std::vector<ScheduledSequence*> running_;
  std::deque<ScheduledSequence*> waiting_;
  uint64_t preemptions_ = 0;
};

}  // namespace tern::worker

#endif  // TERN_WORKER_ENGINE_SCHEDULER_H_
