// Incremental top-N selection into caller-owned memory (internal to kernels/,
// shared by SelectTopN and its vector versions): ids are offered in
// increasing order; the N best (value descending, then id ascending) are kept
// in `out`, never allocating. Small N keeps `out` sorted by insertion (cheap
// when few values beat the N-th best); large N keeps a heap whose top is the
// N-th best (O(log N) per accepted value), sorted at Finish().
#ifndef TERN_KERNELS_TOP_N_SELECTOR_H_
#define TERN_KERNELS_TOP_N_SELECTOR_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/sampling.h"

namespace tern::kernels {

class TopNSelector {
 public:
  // Up to this many, insertion into a sorted array beats a heap.
  static constexpr size_t kMaxSortedInsert = 32;

  TopNSelector(ScoredToken* out, size_t n) : out_(out), n_(n), heap_(n > kMaxSortedInsert) {}

  bool full() const { return count_ == n_; }
  // The N-th best value so far; meaningful once full(). A later id must be
  // strictly greater to enter.
  float threshold() const { return heap_ ? out_[0].value : out_[n_ - 1].value; }

  // Offers (id, x); ids must increase from call to call. NaN never enters.
  void Offer(int32_t id, float x) {
    if (full() ? !(x > threshold()) : std::isnan(x)) return;
    if (heap_) {
      if (full()) {
        std::pop_heap(out_, out_ + n_, Better);
        --count_;
      }
      out_[count_++] = {id, x};
      std::push_heap(out_, out_ + count_, Better);
      return;
    }
    size_t pos = full() ? n_ - 1 : count_++;
    while (pos > 0 && x > out_[pos - 1].value) {
      out_[pos] = out_[pos - 1];
      --pos;
    }
    out_[pos] = {id, x};
  }

  // Leaves out[0, count) sorted best first and returns count.
  size_t Finish() {
    if (heap_) std::sort_heap(out_, out_ + count_, Better);
    return count_;
  }

 private:
  // The heap order: Better(a, b) puts the worst kept token on top.
  static bool Better(const ScoredToken& a, const ScoredToken& b) {
    return a.value > b.value || (a.value == b.value && a.id < b.id);
  }

  ScoredToken* const out_;
  const size_t n_;
  const bool heap_;
  size_t count_ = 0;
};

}  // namespace tern::kernels

#endif  // TERN_KERNELS_TOP_N_SELECTOR_H_
