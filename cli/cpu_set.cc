#include "cli/cpu_set.h"

#include <sched.h>

#include <algorithm>
#include <iterator>
#include <set>
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

std::vector<int32_t> SpareCpus(const std::vector<std::vector<int32_t>>& groups,
                               const std::vector<int64_t>& ranks) {
  std::set<int32_t> used, all;
  for (size_t i = 0; i < groups.size(); ++i) {
    const size_t ranked =
        i < ranks.size() ? static_cast<size_t>(std::max<int64_t>(0, ranks[i])) : groups[i].size();
    for (size_t c = 0; c < groups[i].size(); ++c) {
      all.insert(groups[i][c]);
      if (c < ranked) used.insert(groups[i][c]);
    }
  }
  std::vector<int32_t> spare;
  std::set_difference(all.begin(), all.end(), used.begin(), used.end(), std::back_inserter(spare));
  return spare;
}

ScopedThreadAffinity::ScopedThreadAffinity(const std::vector<int32_t>& cpus) {
  CPU_ZERO(&previous_);
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int32_t cpu : cpus) {
    if (cpu >= 0 && cpu < CPU_SETSIZE) CPU_SET(cpu, &set);
  }
  if (CPU_COUNT(&set) == 0) return;
  if (sched_getaffinity(0, sizeof(previous_), &previous_) != 0) return;
  applied_ = sched_setaffinity(0, sizeof(set), &set) == 0;
}

ScopedThreadAffinity::~ScopedThreadAffinity() {
  if (applied_) (void)sched_setaffinity(0, sizeof(previous_), &previous_);  // best effort
}

}  // namespace tern::cli
