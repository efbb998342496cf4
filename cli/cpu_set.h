// The CPUs this process may run on, and how `tern up` shares them among its
// workers. Plain functions; thread-safe.
#ifndef TERN_CLI_CPU_SET_H_
#define TERN_CLI_CPU_SET_H_

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

}  // namespace tern::cli

#endif  // TERN_CLI_CPU_SET_H_
