#include "gateway/inference_api/serial_queue.h"

#include <utility>

namespace tern::gateway {

void SerialQueue::Post(std::function<void()> task) {
  {
    absl::MutexLock lock(&mu_);
    tasks_.push_back(std::move(task));
    if (running_) return;
    running_ = true;
  }
  while (true) {
    std::function<void()> next;
    {
      absl::MutexLock lock(&mu_);
      if (tasks_.empty()) {
        running_ = false;
        return;
      }
      next = std::move(tasks_.front());
      tasks_.pop_front();
    }
    next();
  }
}

}  // namespace tern::gateway
