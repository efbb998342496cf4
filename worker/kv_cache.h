// The key/value cache of one sequence for the reference forward pass: per
// layer, f32 keys and values of `kv_dim` floats per position, rotary
// embedding already applied to the keys.
//
// Storage grows with the sequence up to `capacity_tokens` (no up-front
// allocation of the whole capacity). Not thread-safe: one sequence, one
// owner; Model::Forward may run concurrently on distinct caches.
#ifndef TERN_WORKER_KV_CACHE_H_
#define TERN_WORKER_KV_CACHE_H_

#include <cstddef>
#include <vector>

#include "absl/status/status.h"
#include "worker/model_config.h"

namespace tern::worker {

class KvCache {
 public:
  KvCache(const ModelConfig& config, int capacity_tokens);

  // Positions filled so far.
  int size() const { return size_; }
  int capacity() const { return capacity_; }
  int num_layers() const { return static_cast<int>(keys_.size()); }
  int kv_dim() const { return kv_dim_; }

  // Drops positions >= n (no-op when n >= size()); n < 0 is treated as 0.
  void Truncate(int n);

  // Adds n positions (contents unspecified until written). OutOfRange when
  // size() + n would exceed capacity(); the cache is then unchanged.
  absl::Status Extend(int n);

  // The kv_dim() floats of `layer` at `position` (< size()).
  float* keys(int layer, int position) { return keys_[layer].data() + Offset(position); }
  float* values(int layer, int position) { return values_[layer].data() + Offset(position); }
  const float* keys(int layer, int position) const {
    return keys_[layer].data() + Offset(position);
  }
  const float* values(int layer, int position) const {
    return values_[layer].data() + Offset(position);
  }

 private:
  size_t Offset(int position) const { return static_cast<size_t>(position) * kv_dim_; }

  int kv_dim_;
  int capacity_;
  int size_ = 0;
  std::vector<std::vector<float>> keys_;  // [layer][position * kv_dim + i]
  std::vector<std::vector<float>> values_;
};

}  // namespace tern::worker

#endif  // TERN_WORKER_KV_CACHE_H_
