// Metric families every tern process exports beside its own: what is
// running (tern_build_info) and the standard process_* families of
// Prometheus client libraries (CPU, memory, file descriptors, start time),
// read from /proc/self at scrape time. See docs/metrics.md.
//
// Thread-safe: each call reads the kernel's view afresh.
#ifndef TERN_COMMON_PROCESS_METRICS_H_
#define TERN_COMMON_PROCESS_METRICS_H_

#include <prometheus/metric_family.h>

#include <string>
#include <vector>

namespace tern {

// tern's version (the CMake project version) and the commit it was built
// from ("unknown" outside a git checkout).
const char* TernVersion();
const char* TernCommit();

// tern_build_info{version, commit, component} = 1, then the process_*
// families. Families the kernel does not show (no /proc) are left out.
std::vector<prometheus::MetricFamily> ProcessMetricFamilies(const std::string& component);

}  // namespace tern

#endif  // TERN_COMMON_PROCESS_METRICS_H_
