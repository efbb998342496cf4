#include "gateway/inference_api/serial_queue.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace tern::gateway {
namespace {

TEST(SerialQueueTest, ATaskPostedFromATaskRunsAfterIt) {
  SerialQueue queue;
  std::vector<int> order;
  queue.Post([&] {
    queue.Post([&] { order.push_back(2); });
    order.push_back(1);
  });
  queue.Post([&] { order.push_back(3); });
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST(SerialQueueTest, TasksFromManyThreadsNeverOverlap) {
  SerialQueue queue;
  int running = 0;
  int overlaps = 0;
  int count = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        queue.Post([&] {
          if (++running > 1) ++overlaps;
          ++count;
          --running;
        });
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  queue.Post([] {});  // runs once the others have
  EXPECT_EQ(overlaps, 0);
  EXPECT_EQ(count, 4000);
}

}  // namespace
}  // namespace tern::gateway
