// Test helpers for the kernel suites (header-only): random data, buffers that
// end at an inaccessible page (so any read or write past the end faults), and
// parameterization over the instruction-set levels.
#ifndef TERN_TESTS_KERNELS_KERNEL_TEST_UTIL_H_
#define TERN_TESTS_KERNELS_KERNEL_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/reference.h"

namespace tern::kernels::testing {

inline std::vector<float> RandomFloats(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline std::vector<uint16_t> RandomBf16(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<uint16_t> v(n);
  for (uint16_t& x : v) x = FloatToBf16(dist(rng));
  return v;
}

// `count` elements of T placed so that the element after the last one is the
// first byte of a PROT_NONE page.
template <typename T>
class GuardedBuffer {
 public:
  explicit GuardedBuffer(const std::vector<T>& values) : count_(values.size()) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t bytes = count_ * sizeof(T);
    data_pages_ = (bytes + page - 1) / page;
    map_bytes_ = (data_pages_ + 1) * page;
    void* map =
        mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) std::abort();
    map_ = static_cast<char*>(map);
    if (mprotect(map_ + data_pages_ * page, page, PROT_NONE) != 0) std::abort();
    data_ = reinterpret_cast<T*>(map_ + data_pages_ * page - bytes);
    if (bytes > 0) std::memcpy(data_, values.data(), bytes);
  }
  ~GuardedBuffer() { munmap(map_, map_bytes_); }
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;

  T* data() { return data_; }
  std::vector<T> ToVector() const { return std::vector<T>(data_, data_ + count_); }

 private:
  size_t count_;
  size_t data_pages_ = 0;
  size_t map_bytes_ = 0;
  char* map_ = nullptr;
  T* data_ = nullptr;
};

// Every level, for INSTANTIATE_TEST_SUITE_P; tests skip the ones the CPU lacks.
inline std::vector<Isa> AllIsas() {
  return {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16};
}
inline std::string IsaParamName(const ::testing::TestParamInfo<Isa>& info) {
  return IsaName(info.param);
}

}  // namespace tern::kernels::testing

#endif  // TERN_TESTS_KERNELS_KERNEL_TEST_UTIL_H_
