// Runs posted tasks one at a time, in the order posted: the thread that posts
// while no task runs runs them all (its own and those posted meanwhile), so
// a task may post more (or call code that calls back into Post) without
// deadlocking, and the tasks' state needs no lock of its own. The gateway's
// gRPC calls use one per call to serialize their reactions and router
// callbacks, as the REST path posts them to an io context.
//
// Thread-safe: Post may be called from any thread.
#ifndef TERN_GATEWAY_INFERENCE_API_SERIAL_QUEUE_H_
#define TERN_GATEWAY_INFERENCE_API_SERIAL_QUEUE_H_

#include <deque>
#include <functional>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace tern::gateway {

class SerialQueue {
 public:
  void Post(std::function<void()> task);

 private:
  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_INFERENCE_API_SERIAL_QUEUE_H_
