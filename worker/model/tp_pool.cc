#include "worker/model/tp_pool.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <utility>

namespace tern::worker {
namespace {

// At most about 50-100 us of spinning: long enough to cover the skew between
// ranks finishing equal shares of a matmul, short enough not to starve a
// thread that shares the core. When waits keep outlasting the spin (a rank
// was preempted: more runnable threads than CPUs), the spin shrinks towards
// kMinSpinIterations, so waiters sleep at once and leave their CPU to
// whatever is runnable, instead of burning it while the late rank waits for
// a CPU; it grows back as waits end within it again.
constexpr int32_t kMaxSpinIterations = 2000;
constexpr int32_t kMinSpinIterations = 50;

// SharedWork::claim: bits 40-63 the work's sequence number (so a rank that
// read the claim of a finished work cannot take a tile of the next one: its
// compare-exchange fails), bits 20-39 the tile count, bits 0-19 the next
// untaken tile.
constexpr uint32_t kTileBits = 20;
constexpr uint64_t kTileMask = (uint64_t{1} << kTileBits) - 1;
constexpr uint32_t kSequenceMask = (uint32_t{1} << 24) - 1;
constexpr uint32_t kMaxSharedTiles = static_cast<uint32_t>(kTileMask) - 1;
// Idle iterations between yields while an owner waits for taken tiles.
constexpr uint32_t kYieldEvery = 4096;

uint64_t PackClaim(uint32_t sequence, uint32_t tiles, uint32_t next) {
  return (uint64_t{sequence} << (2 * kTileBits)) | (uint64_t{tiles} << kTileBits) | next;
}
uint32_t ClaimTiles(uint64_t claim) {
  return static_cast<uint32_t>((claim >> kTileBits) & kTileMask);
}
uint32_t ClaimNext(uint64_t claim) { return static_cast<uint32_t>(claim & kTileMask); }

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Best effort: false when the kernel refuses the CPU.
bool PinThread(pthread_t thread, int32_t cpu) {
  if (cpu < 0 || cpu >= CPU_SETSIZE) return false;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(thread, sizeof(set), &set) == 0;
}

}  // namespace

void FutexWord::Set(uint32_t value) {
  // seq_cst store and load against WaitWhileEquals' seq_cst increment and
  // load: either the sleeper sees the new value or we see the sleeper.
  word_.store(value, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word_), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
            nullptr, 0);
  }
}

void FutexWord::WaitWhileEquals(uint32_t value) {
  // Racy updates of the limit lose at most one adjustment: it is a hint.
  const int32_t limit = spin_limit_.load(std::memory_order_relaxed);
  for (int32_t i = 0; i < limit; ++i) {
    if (word_.load(std::memory_order_acquire) != value) {
      if (limit < kMaxSpinIterations) {
        spin_limit_.store(std::min(kMaxSpinIterations, 2 * limit), std::memory_order_relaxed);
      }
      return;
    }
    CpuRelax();
  }
  spin_limit_.store(std::max(kMinSpinIterations, limit / 2), std::memory_order_relaxed);
  sleepers_.fetch_add(1, std::memory_order_seq_cst);
  // FUTEX_WAIT returns at once if the word already differs, so a Set between
  // the load and the sleep is not missed.
  while (word_.load(std::memory_order_seq_cst) == value) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word_), FUTEX_WAIT_PRIVATE, value, nullptr,
            nullptr, 0);
  }
  sleepers_.fetch_sub(1, std::memory_order_relaxed);
}

void SpinFutexBarrier::Nudge() {
  // Against the waiter's seq_cst increment of sleepers_ and its later loads:
  // either we see the sleeper, or it sees what was stored before this fence.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) == 0) return;
  events_.fetch_add(1, std::memory_order_seq_cst);
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&events_), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
          nullptr, 0);
}

void SpinFutexBarrier::ArriveAndWait(absl::FunctionRef<bool()> help) {
  const uint32_t phase = phase_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == parties_) {
    // Reset before publishing the new phase: a party that sees the new phase
    // and re-enters immediately must count from zero.
    arrived_.store(0, std::memory_order_relaxed);
    phase_.store(phase + 1, std::memory_order_seq_cst);
    Nudge();  // the sleepers see the new phase
    return;
  }
  // Racy updates of the limit lose at most one adjustment: it is a hint.
  // Only idle iterations count against it: time spent helping is not a wait.
  const int32_t limit = spin_limit_.load(std::memory_order_relaxed);
  for (int32_t idle = 0; idle < limit;) {
    if (phase_.load(std::memory_order_acquire) != phase) {
      if (limit < kMaxSpinIterations) {
        spin_limit_.store(std::min(kMaxSpinIterations, 2 * limit), std::memory_order_relaxed);
      }
      return;
    }
    if (help()) {
      idle = 0;
    } else {
      ++idle;
      CpuRelax();
    }
  }
  spin_limit_.store(std::max(kMinSpinIterations, limit / 2), std::memory_order_relaxed);
  sleepers_.fetch_add(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  while (true) {
    // FUTEX_WAIT returns at once if events_ moved since this load, so a
    // phase change or a nudge after the checks below is not missed.
    const uint32_t events = events_.load(std::memory_order_seq_cst);
    if (phase_.load(std::memory_order_seq_cst) != phase) break;
    if (help()) continue;
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&events_), FUTEX_WAIT_PRIVATE, events, nullptr,
            nullptr, 0);
  }
  sleepers_.fetch_sub(1, std::memory_order_relaxed);
}

TpPool::TpPool(int32_t size, std::vector<int32_t> cpus)
    : size_(size < 1 ? 1 : size),
      cpus_(std::move(cpus)),
      barrier_(size_),
      work_(std::make_unique<SharedWork[]>(size_)) {
  threads_.reserve(size_ - 1);
  for (int32_t rank = 1; rank < size_; ++rank) {
    threads_.emplace_back([this, rank] { RankLoop(rank); });
    if (rank < static_cast<int32_t>(cpus_.size())) {
      (void)PinThread(threads_.back().native_handle(), cpus_[rank]);
    }
  }
}

TpPool::~TpPool() {
  if (threads_.empty()) return;
  stopping_.store(true, std::memory_order_relaxed);
  generation_.Set(generation_.Load() + 1);
  for (std::thread& t : threads_) t.join();
}

void TpPool::Run(absl::FunctionRef<void(int32_t)> fn, bool pin_caller) {
  // The caller runs as rank 0 on rank 0's CPU only for the call: a pin that
  // outlived it would confine every thread the caller starts later (a
  // worker's main thread warms the engine up, then starts the gRPC server)
  // to that CPU, where each of them preempts rank 0 and stalls all ranks. A
  // single rank is pinned too, so the threads around it keep off its CPU.
  cpu_set_t saved;
  bool restore = false;
  if (pin_caller && !cpus_.empty() && cpus_[0] >= 0 && cpus_[0] < CPU_SETSIZE &&
      pthread_getaffinity_np(pthread_self(), sizeof(saved), &saved) == 0 &&
      !(CPU_COUNT(&saved) == 1 && CPU_ISSET(cpus_[0], &saved))) {
    restore = PinThread(pthread_self(), cpus_[0]);
  }
  if (size_ == 1) {
    fn(0);
  } else {
    job_ = &fn;
    generation_.Set(generation_.Load() + 1);
    fn(0);
    // Completion: every rank arrives after its share; the ranks then go back
    // to waiting for the next generation, so job_ may be replaced right away.
    Barrier(0);
    job_ = nullptr;
  }
  if (restore) (void)pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
}

void TpPool::RankLoop(int32_t rank) {
  // The generation the pool was built with: a thread that starts after the
  // first Run has bumped it must still run that job.
  uint32_t seen = 0;
  while (true) {
    generation_.WaitWhileEquals(seen);
    seen = generation_.Load();
    if (stopping_.load(std::memory_order_relaxed)) return;
    (*job_)(rank);
    Barrier(rank);
  }
}

void TpPool::Share(int32_t rank, uint32_t tiles, absl::FunctionRef<void(uint32_t, int32_t)> body) {
  if (size_ == 1 || tiles > kMaxSharedTiles) {
    for (uint32_t t = 0; t < tiles; ++t) body(t, rank);
    return;
  }
  if (tiles == 0) return;
  SharedWork& work = work_[rank];
  // No other rank reads body or done now: every tile of the previous work
  // was counted done (acquire) before Share returned.
  work.body = &body;
  work.done.store(0, std::memory_order_relaxed);
  work.sequence = (work.sequence + 1) & kSequenceMask;
  work.claim.store(PackClaim(work.sequence, tiles, 0), std::memory_order_release);
  barrier_.Nudge();
  while (RunOneTile(work, rank)) {
  }
  // The tiles other ranks took: help elsewhere while they finish.
  for (uint32_t idle = 0; work.done.load(std::memory_order_acquire) != tiles;) {
    if (Help(rank)) continue;
    CpuRelax();
    // A taker that lost its CPU mid-tile: let it (or whatever shares this
    // CPU) run now and then rather than spin against it.
    if (++idle % kYieldEvery == 0) sched_yield();
  }
}

bool TpPool::Help(int32_t rank) {
  for (int32_t i = 1; i < size_; ++i) {
    if (RunOneTile(work_[(rank + i) % size_], rank)) return true;
  }
  return false;
}

bool TpPool::RunOneTile(SharedWork& work, int32_t runner) {
  uint64_t claim = work.claim.load(std::memory_order_acquire);
  while (true) {
    if (ClaimNext(claim) >= ClaimTiles(claim)) return false;
    // acq_rel: the claim reads from the release sequence of the owner's
    // publishing store, so body (written before it) is visible after.
    if (work.claim.compare_exchange_weak(claim, claim + 1, std::memory_order_acq_rel,
                                         std::memory_order_acquire)) {
      break;
    }
  }
  (*work.body)(ClaimNext(claim), runner);
  work.done.fetch_add(1, std::memory_order_release);
  return true;
}

}  // namespace tern::worker
