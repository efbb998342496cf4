// Fuzzes the safetensors reader: each input is written to an in-memory file
// (memfd) and opened with SafetensorsCheckpoint::OpenFile, as a checkpoint
// on disk would be. Properties: a bad file is InvalidArgument, never a
// crash; every tensor of an accepted file has exactly as many stored bytes
// as its shape and dtype say, all readable, and the float ones (BF16, F16,
// F32) exactly as many BF16 values; the others (8-bit and integer dtypes of
// quantized checkpoints) have no BF16 view and say so.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "tests/fuzz/fuzz_check.h"
#include "worker/model/safetensors.h"

namespace {

int g_fd = -1;
std::string g_path;

bool WriteFile(const uint8_t* data, size_t size) {
  if (::ftruncate(g_fd, 0) != 0) return false;
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pwrite(g_fd, data + done, size - done, static_cast<off_t>(done));
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  g_fd = ::memfd_create("model.safetensors", MFD_CLOEXEC);
  if (g_fd < 0) {
    std::perror("safetensors_fuzz: memfd_create");
    std::exit(1);
  }
  g_path = "/proc/self/fd/" + std::to_string(g_fd);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  TERN_FUZZ_CHECK(WriteFile(data, size));
  auto checkpoint = tern::worker::SafetensorsCheckpoint::OpenFile(g_path);
  if (!checkpoint.ok()) {
    TERN_FUZZ_CHECK(absl::IsInvalidArgument(checkpoint.status()));
    return 0;
  }
  for (const std::string& name : (*checkpoint)->TensorNames()) {
    auto info = (*checkpoint)->Info(name);
    TERN_FUZZ_CHECK(info.ok());
    // The shape's element count, without wrapping around.
    uint64_t elements = 1;
    bool overflow = false;
    bool empty = false;
    for (const int64_t dim : (*info)->shape) {
      TERN_FUZZ_CHECK(dim >= 0);
      empty |= dim == 0;
      overflow |= __builtin_mul_overflow(elements, static_cast<uint64_t>(dim), &elements);
    }
    if (empty) overflow = false;
    TERN_FUZZ_CHECK(!overflow);
    const tern::worker::TensorDType dtype = (*info)->stored_dtype;
    uint64_t bytes = 0;
    TERN_FUZZ_CHECK(
        !__builtin_mul_overflow(elements, tern::worker::TensorDTypeSize(dtype), &bytes));
    auto raw = (*checkpoint)->GetRaw(name, dtype, (*info)->shape);
    TERN_FUZZ_CHECK(raw.ok());
    TERN_FUZZ_CHECK(raw->size() == bytes);
    uint32_t sum = 0;
    for (const uint8_t b : *raw) sum += b;
    const bool floats = dtype == tern::worker::TensorDType::kBF16 ||
                        dtype == tern::worker::TensorDType::kF16 ||
                        dtype == tern::worker::TensorDType::kF32;
    auto values = (*checkpoint)->GetBf16(name, (*info)->shape);
    if (floats) {
      TERN_FUZZ_CHECK(values.ok());
      TERN_FUZZ_CHECK(values->size() == elements);
      for (const uint16_t v : *values) sum += v;
    } else {
      TERN_FUZZ_CHECK(absl::IsInvalidArgument(values.status()));
    }
    volatile uint32_t sink = sum;
    (void)sink;
  }
  return 0;
}
