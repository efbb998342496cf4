#include "worker/model/tp_pool.h"

#include <gtest/gtest.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <set>
#include <thread>
#include <vector>

namespace tern::worker {
namespace {

TEST(TpPoolTest, SizeOneRunsOnTheCallerWithoutThreads) {
  TpPool pool(1, {});
  EXPECT_EQ(pool.size(), 1);
  std::thread::id ran_on;
  int calls = 0;
  pool.Run([&](int32_t rank) {
    EXPECT_EQ(rank, 0);
    pool.Barrier(0);  // a no-op
    ran_on = std::this_thread::get_id();
    ++calls;
  });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(TpPoolTest, CallerRunsOnRankZerosCpuOnlyDuringRun) {
  cpu_set_t allowed;
  ASSERT_EQ(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
  int32_t last = -1;
  for (int32_t cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &allowed)) last = cpu;
  }
  ASSERT_GE(last, 0);
  for (int32_t size : {1, 2}) {
    TpPool pool(size, {last, last});
    // A fresh thread, so a failure cannot leave the test's own thread pinned.
    std::thread caller([&] {
      cpu_set_t before;
      ASSERT_EQ(sched_getaffinity(0, sizeof(before), &before), 0);
      pool.Run([&](int32_t rank) {
        if (rank != 0) return;
        cpu_set_t mine;
        ASSERT_EQ(sched_getaffinity(0, sizeof(mine), &mine), 0);
        EXPECT_EQ(CPU_COUNT(&mine), 1);
        EXPECT_TRUE(CPU_ISSET(last, &mine));
      });
      // Threads the caller starts later are not confined to rank 0's CPU.
      cpu_set_t after;
      ASSERT_EQ(sched_getaffinity(0, sizeof(after), &after), 0);
      EXPECT_TRUE(CPU_EQUAL(&before, &after)) << "size " << size;
    });
    caller.join();
  }
}

TEST(TpPoolTest, EveryRankRunsOnceOnItsOwnThreadAndTheCallerIsRankZero) {
  for (int32_t size : {2, 3, 4}) {
    TpPool pool(size, {});
    std::vector<std::thread::id> ids(size);
    std::vector<int> calls(size, 0);
    pool.Run([&](int32_t rank) {
      ids[rank] = std::this_thread::get_id();
      ++calls[rank];
    });
    EXPECT_EQ(ids[0], std::this_thread::get_id());
    EXPECT_EQ(std::set<std::thread::id>(ids.begin(), ids.end()).size(), static_cast<size_t>(size));
    EXPECT_EQ(calls, std::vector<int>(size, 1));
  }
}

// Each phase, every rank writes its slot, waits, then checks everyone's slot
// of this phase: a rank leaving a barrier early would read a stale value.
TEST(TpPoolTest, BarrierSeparatesPhasesOverManyRuns) {
  for (int32_t size : {2, 4, 6}) {  // 4 and 6 oversubscribe small machines
    TpPool pool(size, {});
    std::vector<std::atomic<int64_t>> slots(size);
    std::atomic<int64_t> errors{0};
    constexpr int kRuns = 200, kPhases = 20;
    for (int run = 0; run < kRuns; ++run) {
      pool.Run([&](int32_t rank) {
        for (int phase = 0; phase < kPhases; ++phase) {
          const int64_t stamp = int64_t{run} * kPhases + phase;
          slots[rank].store(stamp, std::memory_order_relaxed);
          pool.Barrier(rank);
          for (int32_t r = 0; r < size; ++r) {
            if (slots[r].load(std::memory_order_relaxed) != stamp) ++errors;
          }
          pool.Barrier(rank);
        }
      });
      // Run returns only after every rank finished: all slots hold the last stamp.
      for (int32_t r = 0; r < size; ++r) {
        ASSERT_EQ(slots[r].load(), int64_t{run} * kPhases + kPhases - 1) << "size " << size;
      }
    }
    EXPECT_EQ(errors.load(), 0) << "size " << size;
  }
}

TEST(TpPoolTest, PlainMemoryWrittenBeforeABarrierIsSeenAfterIt) {
  constexpr int32_t kSize = 3;
  TpPool pool(kSize, {0, 1, 2});  // pinning to CPUs the machine may lack is ignored
  std::vector<int64_t> data(kSize * 1024);
  for (int run = 0; run < 100; ++run) {
    int64_t sums[kSize] = {};
    pool.Run([&](int32_t rank) {
      for (int i = 0; i < 1024; ++i) data[rank * 1024 + i] = run + rank + i;
      pool.Barrier(rank);
      int64_t sum = 0;
      for (int64_t v : data) sum += v;
      sums[rank] = sum;
    });
    int64_t want = 0;
    for (int32_t r = 0; r < kSize; ++r) {
      for (int i = 0; i < 1024; ++i) want += run + r + i;
    }
    for (int32_t r = 0; r < kSize; ++r) EXPECT_EQ(sums[r], want) << "run " << run;
  }
}

// A rank thread that starts only after the first Run was posted must still
// run that job (a fresh pool's threads may not be scheduled yet).
TEST(TpPoolTest, FirstRunRightAfterConstructionReachesEveryRank) {
  for (int i = 0; i < 100; ++i) {
    TpPool pool(4, {});
    std::atomic<int> ran{0};
    pool.Run([&](int32_t) { ++ran; });
    ASSERT_EQ(ran.load(), 4) << "pool " << i;
  }
}

TEST(TpPoolTest, DestroysCleanlyWhileRanksSleep) {
  for (int i = 0; i < 20; ++i) {
    TpPool pool(3, {});
    if (i % 2 == 0) pool.Run([](int32_t) {});
  }
}

// Waits (bounded) until `flag` is set; whether it was.
bool WaitFor(const std::atomic<bool>& flag) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!flag.load()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

TEST(TpPoolTest, ShareRunsEveryTileOnceAndWaitingRanksTakeTiles) {
  for (int32_t size : {2, 3, 4}) {
    TpPool pool(size, {});
    constexpr uint32_t kTiles = 64;
    for (int run = 0; run < 20; ++run) {
      std::vector<std::atomic<int>> runs(kTiles);
      std::atomic<bool> taken{false};
      pool.Run([&](int32_t rank) {
        if (rank != 0) {
          pool.Barrier(rank);  // waits: takes rank 0's tiles meanwhile
          return;
        }
        pool.Share(0, kTiles, [&](uint32_t tile, int32_t runner) {
          ++runs[tile];
          if (runner != 0) {
            taken = true;
          } else {
            // The owner holds on (bounded) until a waiting rank took a tile.
            (void)WaitFor(taken);
          }
        });
        pool.Barrier(0);
      });
      EXPECT_TRUE(taken.load()) << "size " << size << ": no waiting rank took a tile";
      for (uint32_t t = 0; t < kTiles; ++t) {
        ASSERT_EQ(runs[t].load(), 1) << "size " << size << " run " << run << " tile " << t;
      }
    }
  }
}

TEST(TpPoolTest, SharedTilesWrittenByAnyRankAreSeenByTheOwnerAfterShare) {
  for (int32_t size : {2, 4}) {  // 4 oversubscribes small machines
    TpPool pool(size, {});
    constexpr uint32_t kTiles = 24, kWidth = 256;
    std::vector<std::vector<int64_t>> out(size, std::vector<int64_t>(kTiles * kWidth));
    std::atomic<int64_t> errors{0};
    for (int run = 0; run < 50; ++run) {
      pool.Run([&](int32_t rank) {
        for (int step = 0; step < 4; ++step) {
          pool.Share(rank, kTiles, [&](uint32_t tile, int32_t) {
            for (uint32_t i = 0; i < kWidth; ++i) {
              out[rank][tile * kWidth + i] = int64_t{run} * 1000000 + step * 10000 + rank * 100 + i;
            }
          });
          for (uint32_t tile = 0; tile < kTiles; ++tile) {
            for (uint32_t i = 0; i < kWidth; ++i) {
              if (out[rank][tile * kWidth + i] !=
                  int64_t{run} * 1000000 + step * 10000 + rank * 100 + i) {
                ++errors;
              }
            }
          }
          pool.Barrier(rank);
        }
      });
    }
    EXPECT_EQ(errors.load(), 0) << "size " << size;
  }
}

// A rank that waited long enough to sleep at the barrier is woken by new
// shared work and takes some of it.
TEST(TpPoolTest, ARankSleepingAtTheBarrierWakesForSharedWork) {
  TpPool pool(2, {});
  std::atomic<bool> taken{false};
  pool.Run([&](int32_t rank) {
    if (rank == 0) {
      pool.Barrier(0);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // rank 0 sleeps by now
    pool.Share(1, 8, [&](uint32_t, int32_t runner) {
      if (runner == 0) {
        taken = true;
      } else {
        (void)WaitFor(taken);  // bounded: the owner holds on until rank 0 took one
      }
    });
    pool.Barrier(1);
  });
  EXPECT_TRUE(taken.load()) << "the sleeping rank took no tile";
}

}  // namespace
}  // namespace tern::worker
