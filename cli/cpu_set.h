// The CPUs this process may run on, and how `tern up` shares them among its
// workers. Plain functions; thread-safe.
#ifndef TERN_CLI_CPU_SET_H_
#define TERN_CLI_CPU_SET_H_

#include <sched.h>

#include <cstdint>
#include <string>
#include <vector>

#include "worker/model/model_config.h"

namespace tern::cli {

// The CPUs of the process's affinity mask (sched_getaffinity), ascending.
// Falls back to 0..hardware_concurrency-1 when the mask cannot be read.
std::vector<int32_t> ProcessCpus();

// Splits `cpus` among `workers` workers: contiguous groups in order, sizes
// differing by at most one (the first groups get the extra CPUs). With more
// workers than CPUs each worker gets one CPU, round-robin. Empty when `cpus`
// is empty or `workers` < 1.
std::vector<std::vector<int32_t>> DivideCpus(const std::vector<int32_t>& cpus, int workers);

// The largest tp <= threads the native executor accepts for `config` (it
// must divide the attention heads, the kv heads and intermediate_size).
int32_t LargestValidTp(const worker::ModelConfig& config, int32_t threads);

// "0,1,2" for the worker's --cpus flag.
std::string CpuListFlag(const std::vector<int32_t>& cpus);

// The CPUs of `groups` no tensor-parallel rank runs on: worker i's ranks take
// the first ranks[i] CPUs of groups[i] (a missing entry: all of them).
// Ascending, without duplicates.
std::vector<int32_t> SpareCpus(const std::vector<std::vector<int32_t>>& groups,
                               const std::vector<int64_t>& ranks);

// Restricts the calling thread to `cpus` while it lives, then restores the
// mask it had; processes the thread starts meanwhile keep the restriction
// (a child inherits its parent thread's mask). No change when `cpus` is empty
// or the kernel refuses it. Used by one thread, the one that made it.
class ScopedThreadAffinity {
 public:
  explicit ScopedThreadAffinity(const std::vector<int32_t>& cpus);
  ~ScopedThreadAffinity();
  ScopedThreadAffinity(const ScopedThreadAffinity&) = delete;
  ScopedThreadAffinity& operator=(const ScopedThreadAffinity&) = delete;

  bool applied() const { return applied_; }

 private:
  bool applied_ = false;
  cpu_set_t previous_;
};

}  // namespace tern::cli

#endif  // TERN_CLI_CPU_SET_H_
