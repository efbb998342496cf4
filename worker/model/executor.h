// The native executor: the Llama 3 forward pass over a batch of sequences,
// with a paged KV cache, tensor-parallel across `tp` ranks.
//
// Ranks are threads of a persistent pool, each pinned to one CPU; the thread
// calling Step is rank 0. Megatron-style sharding: each rank owns a slice of
// the attention heads (its rows of q/k/v_proj and its columns of o_proj) and
// of the MLP (its rows of gate/up_proj, its columns of down_proj), an
// all-reduce after o_proj and after down_proj sums the partial outputs, and
// lm_head is split by vocabulary rows. A rank's shard is laid out from the
// checkpoint straight into memory that rank touched first (no full extra copy
// of the weights); slices that are contiguous in the checkpoint are read in
// place from the mmapped file. Quantized matrices (int8, FP8) shard the same
// way: a row slice carries its rows' scales, a column block keeps every row
// and so all the per-row scales; each matmul runs in its matrix's format.
//
// KV memory: each rank holds the keys and values of its kv heads for every
// block of the pool, f32, in the kernels::PagedKv layout. Block ids come from
// the caller (the KV block manager); the executor only reads and writes the
// slots the batch names.
//
// Any tp in 1..num_kv_heads that divides num_attention_heads, num_kv_heads
// and intermediate_size gives the same greedy tokens as tp 1 (the all-reduce
// sums partials in rank order, so results are deterministic for a given tp).
//
// Thread contract: Step is called by one thread at a time (the engine loop).
#ifndef TERN_WORKER_MODEL_EXECUTOR_H_
#define TERN_WORKER_MODEL_EXECUTOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/model/model.h"
#include "worker/model/quantization.h"

namespace tern::worker {

struct ExecutorOptions {
  // Tensor-parallel ranks; 0: one per CPU in `cpus` (or the process's CPUs).
  int32_t tp = 1;
  // CPUs to pin the ranks to, in rank order; empty: the CPUs the process may
  // run on (sched_getaffinity), in order, except that a single rank is then
  // not pinned at all. Pinning failures are not errors.
  std::vector<int32_t> cpus;
  // Token slots per KV block.
  int32_t block_size = 16;
  // KV pool size over all ranks; the pool has
  // floor(kv_cache_bytes / bytes_per_block()) blocks.
  int64_t kv_cache_bytes = int64_t{1} << 30;
  // Largest number of tokens one Step computes (sizes the activation
  // buffers, allocated once at Create).
  int32_t max_batch_tokens = 512;
  // How the ranks hold the lm_head: with kInt8 (or kAuto on a model with
  // 8-bit linear layers) each rank quantizes its bf16 vocabulary rows at
  // Create into its own memory (per-row int8, worker/model/quantization.h),
  // halving the bytes the largest matrix of a small model costs per decode
  // step; kAsStored reads the checkpoint's matrix in place.
  LmHeadFormat lm_head = LmHeadFormat::kAuto;
  // Time the decode GEMV's streaming settings on rank 0's bf16 matrices at
  // Create and keep the fastest for the process (kernels/gemv_tuning.h):
  // about 0.7 s for a 1B model. Skipped when those matrices would be timed
  // from cache (under 256 MiB) and the default is kept; the environment
  // variable TERN_GEMV=ROWS/PREFETCH sets one instead (dispatch.h).
  bool tune_gemv = true;
};

// One sequence's share of a step.
struct StepSequence {
  // Tokens to compute now, at positions start_position, start_position + 1, ...
  absl::Span<const int32_t> tokens;
  int32_t start_position = 0;
  // Blocks covering positions [0, start_position + tokens.size()); the KV of
  // positions below start_position is already in them.
  absl::Span<const int32_t> block_table;
  // Whether to produce the logits that follow the last token.
  bool want_logits = true;
};

class Executor {
 public:
  // `model` must outlive the executor. Lays out the shards, allocates the KV
  // pool and the activation buffers, starts and pins tp - 1 threads.
  // INVALID_ARGUMENT when tp does not divide the model, or the pool holds no
  // block; RESOURCE_EXHAUSTED when memory cannot be had.
  static absl::StatusOr<std::unique_ptr<Executor>> Create(const Model* model,
                                                          ExecutorOptions options);
  // Stops and joins the rank threads.
  ~Executor();

  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Runs the batch: writes the keys and values of every token into its slot
  // and stores, for each sequence with want_logits (in batch order),
  // vocab_size logits into consecutive rows of `logits`. INVALID_ARGUMENT for
  // an empty sequence, token ids outside the vocabulary, a block table too
  // short or naming blocks outside the pool, more than max_batch_tokens
  // tokens, or `logits` too small; nothing is written then.
  absl::Status Step(absl::Span<const StepSequence> batch, absl::Span<float> logits);

  const ModelConfig& config() const;
  int32_t tp() const;
  int32_t block_size() const;
  int32_t num_blocks() const;
  int32_t max_batch_tokens() const;
  // KV bytes per block over all ranks.
  int64_t bytes_per_block() const;
  // Bytes of weights held in the ranks' own memory (copied shards), and of
  // the KV pool.
  int64_t owned_weight_bytes() const;
  int64_t kv_pool_bytes() const;
  // The lm_head's format in the ranks (int8 when quantized at Create).
  WeightFormat lm_head_format() const;
  // Bytes of weights one decode step streams (Model::decode_weight_bytes
  // with the lm_head as the ranks hold it).
  int64_t decode_weight_bytes() const;
  // What Create decided for the decode GEMV's streaming settings and why
  // (GemvTuneResult::Summary, or why nothing was timed).
  const std::string& gemv_tuning() const;

 private:
  struct Impl;
  explicit Executor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tern::worker

#endif  // TERN_WORKER_MODEL_EXECUTOR_H_
