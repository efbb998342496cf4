#include "common/process_metrics.h"

#include <gtest/gtest.h>

#include <ctime>
#include <map>
#include <string>

namespace tern {
namespace {

std::map<std::string, prometheus::MetricFamily> ByName() {
  std::map<std::string, prometheus::MetricFamily> families;
  for (prometheus::MetricFamily& family : ProcessMetricFamilies("worker")) {
    families[family.name] = family;
  }
  return families;
}

TEST(ProcessMetricsTest, BuildInfoNamesVersionCommitAndComponent) {
  auto families = ByName();
  ASSERT_EQ(families.count("tern_build_info"), 1u);
  const prometheus::ClientMetric& info = families["tern_build_info"].metric.at(0);
  EXPECT_EQ(info.gauge.value, 1.0);
  std::map<std::string, std::string> labels;
  for (const auto& label : info.label) labels[label.name] = label.value;
  EXPECT_EQ(labels["version"], TernVersion());
  EXPECT_FALSE(labels["version"].empty());
  EXPECT_FALSE(labels["commit"].empty());
  EXPECT_EQ(labels["component"], "worker");
}

TEST(ProcessMetricsTest, ProcessFamiliesReadThisProcess) {
  // Some CPU time to see: the kernel counts it in clock ticks (10 ms).
  const std::clock_t start_cpu = std::clock();
  volatile double spin = 0;
  while (std::clock() - start_cpu < CLOCKS_PER_SEC / 20) spin = spin + 1;
  auto families = ByName();
  for (const char* name : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                           "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                           "process_start_time_seconds"}) {
    ASSERT_EQ(families.count(name), 1u) << name;
  }
  EXPECT_EQ(families["process_cpu_seconds_total"].type, prometheus::MetricType::Counter);
  EXPECT_GT(families["process_cpu_seconds_total"].metric[0].counter.value, 0.0);
  EXPECT_GT(families["process_resident_memory_bytes"].metric[0].gauge.value, 1 << 20);
  EXPECT_GE(families["process_virtual_memory_bytes"].metric[0].gauge.value,
            families["process_resident_memory_bytes"].metric[0].gauge.value);
  EXPECT_GE(families["process_open_fds"].metric[0].gauge.value, 3.0);  // stdin, stdout, stderr
  EXPECT_GE(families["process_max_fds"].metric[0].gauge.value,
            families["process_open_fds"].metric[0].gauge.value);
  const double start = families["process_start_time_seconds"].metric[0].gauge.value;
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_LE(start, now + 1);
  EXPECT_GT(start, now - 3600) << "this test process started within the hour";
}

}  // namespace
}  // namespace tern
