#include "worker/kv_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tern::worker {

KvCache::KvCache(const ModelConfig& config, int capacity_tokens)
    : kv_dim_(config.kv_dim()),
      capacity_(std::max(capacity_tokens, 0)),
      keys_(config.num_hidden_layers),
      values_(config.num_hidden_layers) {}

void KvCache::Truncate(int n) { size_ = std::clamp(n, 0, size_); }

absl::Status KvCache::Extend(int n) {
  if (n < 0 || n > capacity_ - size_) {
    return absl::OutOfRangeError(
        absl::StrCat("KV cache holds ", size_, " of ", capacity_, " positions; cannot add ", n));
  }
  const size_t needed = static_cast<size_t>(size_ + n) * kv_dim_;
  for (size_t layer = 0; layer < keys_.size(); ++layer) {
    if (keys_[layer].size() < needed) {
      // Grow geometrically, never past the capacity.
      const size_t grown = std::min(std::max(needed, keys_[layer].size() * 2),
                                    static_cast<size_t>(capacity_) * kv_dim_);
      keys_[layer].resize(grown);
      values_[layer].resize(grown);
    }
  }
  size_ += n;
  return absl::OkStatus();
}

}  // namespace tern::worker
