// Allowed-token masks by parser state, for one CompiledConstraint. Bounded by
// entry count and bytes; eviction is CLOCK (second chance), so states used
// again and again (inside a string, say) stay while one-off states go.
// Masks are stored compactly: as the allowed ids, the refused ids (of the
// grammar-eligible tokens), or a bitmask, whichever is smallest.
//
// Thread safety: all methods may be called from any thread.
#ifndef TERN_STRUCTURED_MASK_CACHE_H_
#define TERN_STRUCTURED_MASK_CACHE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "structured/constraint.h"

namespace tern::structured {

class MaskCache {
 public:
  // `eligible` is every token a grammar may allow; refused-id entries are
  // expanded against it.
  MaskCache(const TokenMask* eligible, size_t max_entries, size_t max_bytes);

  // On a hit fills *mask (of the vocabulary's size) and returns true.
  bool Lookup(const std::vector<int32_t>& key, TokenMask* mask) const;
  void Insert(const std::vector<int32_t>& key, const TokenMask& mask);

  int64_t hits() const { return hits_.load(std::memory_order_relaxed); }
  int64_t misses() const { return misses_.load(std::memory_order_relaxed); }
  size_t size() const;

 private:
  struct Entry {
    enum class Form { kAllowed, kRefused, kBits } form;
    std::vector<int32_t> ids;
    std::vector<uint64_t> bits;
    mutable std::atomic<bool> referenced{false};
    size_t bytes() const { return ids.size() * 4 + bits.size() * 8 + 64; }
  };

  const TokenMask* const eligible_;
  const size_t max_entries_;
  const size_t max_bytes_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::vector<int32_t>, std::shared_ptr<const Entry>> entries_
      ABSL_GUARDED_BY(mu_);
  std::deque<std::vector<int32_t>> clock_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  mutable std::atomic<int64_t> hits_{0};
  mutable std::atomic<int64_t> misses_{0};
};

}  // namespace tern::structured

#endif  // TERN_STRUCTURED_MASK_CACHE_H_
