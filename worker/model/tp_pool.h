// A persistent pool of tensor-parallel rank threads for the executor.
//
// Rank 0 is the thread that calls Run; ranks 1..size-1 are threads the pool
// owns, each pinned to one CPU. Run(fn) executes fn(rank) on every rank at
// once and returns when all have finished; inside fn, Barrier(rank) waits
// until every rank has reached it. With size 1 there are no threads at all:
// Run calls fn(0) (on rank 0's CPU, as with more ranks) and Barrier returns
// at once.
//
// Shared work: inside fn, Share(rank, tiles, body) runs a rank's work as
// independent tiles that any idle rank may take. A rank that waits (at a
// barrier, or for the last tiles of its own shared work) takes the other
// ranks' untaken tiles meanwhile, so when one rank loses its CPU to another
// thread the others do its work instead of waiting for it (the matmuls of a
// tensor-parallel step, whose ranks would otherwise run at the pace of the
// one that shares its core). The rank that owns the work takes its tiles
// from the same counter, so without contention it simply runs them all.
//
// Waiting spins briefly (a rank usually arrives within microseconds of the
// others) and then sleeps on a futex, so ranks that share cores with each
// other or with other processes do not burn the time the slow rank needs;
// the spin shortens while waits keep outlasting it (an oversubscribed
// machine) and lengthens again when they stop.
// (Raw futexes rather than std::atomic wait/notify: the spin length is ours,
// and a wake costs a syscall only when some rank actually sleeps.)
//
// Thread contract: Run is called by one thread at a time; Barrier only from
// inside fn, by every rank the same number of times; Share only from inside
// fn, by the rank it names. fn and Share's body must not throw.
#ifndef TERN_WORKER_MODEL_TP_POOL_H_
#define TERN_WORKER_MODEL_TP_POOL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"

namespace tern::worker {

// A 32-bit word threads wait on until it changes: spin, then futex-wait.
// Set publishes a new value (release) and wakes the sleepers, with a syscall
// only when some thread sleeps.
class FutexWord {
 public:
  uint32_t Load() const { return word_.load(std::memory_order_acquire); }
  void Set(uint32_t value);
  // Returns once the word no longer holds `value` (acquire).
  void WaitWhileEquals(uint32_t value);

 private:
  std::atomic<uint32_t> word_{0};
  std::atomic<int32_t> sleepers_{0};
  // Spin iterations before a waiter sleeps; adapts (see tp_pool.cc).
  std::atomic<int32_t> spin_limit_{2000};
};

// A reusable barrier for a fixed number of threads: spin, then futex-wait.
// A waiting party calls `help` between its checks: help returns true when it
// found and did some work (it is then called again at once), false when
// there was none. Nudge() tells waiters that new work may be there: it wakes
// the sleeping ones, which call help again before they sleep once more.
class SpinFutexBarrier {
 public:
  explicit SpinFutexBarrier(int32_t parties) : parties_(parties) {}
  SpinFutexBarrier(const SpinFutexBarrier&) = delete;
  SpinFutexBarrier& operator=(const SpinFutexBarrier&) = delete;

  // Returns once all `parties` threads have called it (for this phase).
  // Everything written before by any party is visible after.
  void ArriveAndWait(absl::FunctionRef<bool()> help);
  void Nudge();

 private:
  const int32_t parties_;
  alignas(64) std::atomic<int32_t> arrived_{0};
  alignas(64) std::atomic<uint32_t> phase_{0};
  // Bumped by every phase change and every Nudge; the futex word sleepers
  // wait on, so a bump between a waiter's last check and its sleep is seen.
  alignas(64) std::atomic<uint32_t> events_{0};
  std::atomic<int32_t> sleepers_{0};
  // Idle spin iterations before a waiter sleeps; adapts (see tp_pool.cc).
  std::atomic<int32_t> spin_limit_{2000};
};

class TpPool {
 public:
  // `cpus[r]` is the CPU of rank r (missing entries: no pinning). Rank 0's
  // CPU applies to the thread that calls Run while it runs (see there).
  // Pinning failures are ignored (the kernel may not allow a CPU).
  TpPool(int32_t size, std::vector<int32_t> cpus);
  // Stops and joins the rank threads.
  ~TpPool();

  TpPool(const TpPool&) = delete;
  TpPool& operator=(const TpPool&) = delete;

  int32_t size() const { return size_; }

  // Runs fn(rank) on all ranks, the caller as rank 0; returns when all ranks
  // have returned from fn. With `pin_caller` the calling thread runs pinned
  // to cpus[0] during the call; its own CPU mask is back when Run returns.
  void Run(absl::FunctionRef<void(int32_t)> fn, bool pin_caller = true);

  // All ranks wait for each other; only from inside Run's fn, by `rank`.
  // While it waits, the rank runs other ranks' shared tiles.
  void Barrier(int32_t rank) {
    if (size_ > 1) barrier_.ArriveAndWait([this, rank] { return Help(rank); });
  }

  // Runs body(tile, runner) once for every tile in [0, tiles) and returns
  // when all have returned; `runner` is the rank whose thread runs the tile
  // (`rank` itself, or a rank that took it while waiting). Only from inside
  // Run's fn, by `rank`. Tiles must be independent of each other, and body
  // must not call Share or Barrier.
  void Share(int32_t rank, uint32_t tiles, absl::FunctionRef<void(uint32_t, int32_t)> body);

 private:
  // A rank's shared work. `claim` packs the work's sequence number, its
  // tile count and the next untaken tile (see tp_pool.cc); `done` counts the
  // tiles finished. `body` is written before the release store of `claim`
  // that publishes it and read only after a successful claim.
  struct alignas(64) SharedWork {
    std::atomic<uint64_t> claim{0};
    std::atomic<uint32_t> done{0};
    const absl::FunctionRef<void(uint32_t, int32_t)>* body = nullptr;
    uint32_t sequence = 0;  // the owner's own count of its published works
  };

  void RankLoop(int32_t rank);
  // Takes and runs one untaken tile of another rank's shared work; whether
  // it found one.
  bool Help(int32_t rank);
  // Takes one untaken tile of `work` and runs it on `runner`; whether there
  // was one.
  static bool RunOneTile(SharedWork& work, int32_t runner);

  const int32_t size_;
  const std::vector<int32_t> cpus_;
  SpinFutexBarrier barrier_;
  std::unique_ptr<SharedWork[]> work_;
  // The job of the current generation; written by the caller before it bumps
  // generation_, read by the ranks after they see the bump.
  const absl::FunctionRef<void(int32_t)>* job_ = nullptr;
  alignas(64) FutexWord generation_;
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> threads_;
};

}  // namespace tern::worker

#endif  // TERN_WORKER_MODEL_TP_POOL_H_
