// `tern bench soak`: a long run of steady load against a running cluster
// that watches for leaks. Every interval it offers `rate` requests per second
// (Poisson arrivals, bench_load.h) and prints one line: for each tier
// process, its resident memory and open file descriptors (from /proc), then
// the interval's TTFT p50/p99, end-to-end p99, completed and failed. At the
// end: the RSS drift of each process from the first interval to the last,
// its least-squares trend per hour over every interval, and its fd growth.
// A warm-up (--warmup-s) runs the same load first, printed but left out of
// the drift: caches filling to their bounds (the workers' KV blocks, the
// router's prefix index that mirrors them) are not a leak.
//
// The processes are those named with --pid NAME=PID, and the children of
// --cluster-pid PID (a `tern up`), each named by its command
// (tern-gateway, tern-router, tern-worker#N).
//
// Thread contract: RunBenchSoak runs on the calling thread.
#ifndef TERN_CLI_BENCH_BENCH_SOAK_H_
#define TERN_CLI_BENCH_BENCH_SOAK_H_

#include <cstdint>
#include <string>
#include <vector>

namespace tern::cli {

// argv[0] is the verb ("soak"); flags follow. Exit status 0 when every
// request succeeded, 1 when some failed, 2 for bad flags or setup errors.
int RunBenchSoak(int argc, char** argv);

// One process watched by the soak run.
struct SoakProcess {
  std::string name;
  int pid = 0;
};

// The children of `parent` (from /proc), named by their command's base name;
// workers get "#0", "#1", ... in pid order.
std::vector<SoakProcess> ChildProcesses(int parent);

// Resident set size in KiB and open fds of `pid`; {-1, -1} when it is gone.
struct ProcessUsage {
  int64_t rss_kib = -1;
  int64_t fds = -1;
};
ProcessUsage ReadProcessUsage(int pid);

}  // namespace tern::cli

#endif  // TERN_CLI_BENCH_BENCH_SOAK_H_
