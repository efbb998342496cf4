// What workers report about themselves, as plain values: the service edge
// (router/fleet.cc) converts tern.v1.WorkerInfo / WorkerLoad into these once.
#ifndef TERN_ROUTER_CORE_WORKER_REPORT_H_
#define TERN_ROUTER_CORE_WORKER_REPORT_H_

#include <cstdint>
#include <string>
#include <vector>

namespace tern::router {

// Worker.Info: constant while the worker runs.
struct WorkerInfo {
  std::string model_id;
  int32_t max_model_len = 0;
  int32_t kv_block_size = 16;
  int32_t max_num_seqs = 1;
  int64_t kv_blocks_total = 0;
  std::vector<int32_t> eos_token_ids;
};

// One WorkerState load report.
struct WorkerLoad {
  int32_t running_seqs = 0;
  int32_t waiting_seqs = 0;
  int64_t free_kv_blocks = 0;
  int64_t queued_prefill_tokens = 0;
  // Engine steps since the worker started; moves whenever it makes progress.
  uint64_t step_counter = 0;
  // A step is executing now, expected to take expected_step_ms (0: unknown).
  bool step_running = false;
  int64_t expected_step_ms = 0;
};

// The result of one health probe (grpc.health.v1 Check, then Info).
struct HealthReport {
  // The worker answered SERVING and its Info.
  bool serving = false;
  // The worker answered NOT_SERVING: it drains (SIGTERM), finishing its work.
  bool draining = false;
  WorkerInfo info;      // when serving
  std::string failure;  // why not, when not serving
};

}  // namespace tern::router

#endif  // TERN_ROUTER_CORE_WORKER_REPORT_H_
