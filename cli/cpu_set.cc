#include "cli/cpu_set.h"

#include <sched.h>

#include <algorithm>
#include <thread>

#include "absl/strings/str_join.h"

namespace tern::cli {

std::vector<int32_t> ProcessCpus() {
  std::vector<int32_t> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
    }
  }
  if (cpus.empty()) {
    const int count = std::max(1u, std::thread::hardware_concurrency());
    for (int cpu = 0; cpu < count; ++cpu) cpus.push_back(cpu);
  }
  return cpus;
}

std::vector<std::vector<int32_t>> DivideCpus(const std::vector<int32_t>& cpus, int workers) {
  if (cpus.empty() || workers < 1) return {};
  std::vector<std::vector<int32_t>> groups(workers);
  const int count = static_cast<int>(cpus.size());
  if (workers >= count) {
    for (int i = 0; i < workers; ++i) groups[i].push_back(cpus[i % count]);
    return groups;
  }
  const int base = count / workers;
  const int extra = count % workers;
  int next = 0;
  for (int i = 0; i < workers; ++i) {
    const int size = base + (i < extra ? 1 : 0);
    groups[i].assign(cpus.begin() + next, cpus.begin() + next + size);
    next += size;
  }
  return groups;
}

int32_t LargestValidTp(const worker::ModelConfig& config, int32_t threads) {
  for (int32_t tp = std::min(threads, config.num_key_value_heads); tp > 1; --tp) {
    if (config.num_attention_heads % tp == 0 && config.num_key_value_heads % tp == 0 &&
        config.intermediate_size % tp == 0) {
      return tp;
    }
  }
  return 1;
}

std::string CpuListFlag(const std::vector<int32_t>& cpus) { return absl::StrJoin(cpus, ","); }

}  // namespace tern::cli
