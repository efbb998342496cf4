// Read-only access to the tensors of a Hugging Face safetensors checkpoint:
// one `model.safetensors`, or shards listed by `model.safetensors.index.json`.
//
// Files are mmapped. BF16 tensors are served in place from the mapping (no
// copy). F16 and F32 tensors are converted once, at open time, to BF16
// (round to nearest even) in memory owned by the checkpoint, so every caller
// sees one dtype; so is a BF16 tensor whose data is not 2-byte aligned.
// Quantized checkpoints add F8_E4M3, I8, U8, I32 and I64 tensors: those are
// served only as their raw bytes in place (`raw`), with no BF16 view; every
// tensor's raw bytes are available, and GetFloats reads small float tensors
// (quantization scales) exactly.
//
// Files are untrusted: a truncated file, a header that is not JSON, unknown
// dtypes, shapes that disagree with the byte ranges, overlapping or
// out-of-bounds offsets give InvalidArgument naming the file and tensor;
// never a crash. A missing file is NotFound.
//
// Thread safety: immutable after Open; all const methods may be called
// concurrently. Spans returned stay valid for the checkpoint's lifetime.
#ifndef TERN_WORKER_MODEL_SAFETENSORS_H_
#define TERN_WORKER_MODEL_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace tern::worker {

enum class TensorDType { kBF16, kF16, kF32, kF8E4M3, kI8, kU8, kI32, kI64 };
// "BF16", "F16", "F32", "F8_E4M3", "I8", "U8", "I32", "I64" (safetensors' names).
const char* TensorDTypeName(TensorDType dtype);
size_t TensorDTypeSize(TensorDType dtype);

struct TensorInfo {
  std::string name;
  TensorDType stored_dtype = TensorDType::kBF16;  // dtype in the file
  std::vector<int64_t> shape;
  std::string file;  // file name within the checkpoint directory
  // The values, row-major, as BF16: BF16, F16 and F32 tensors only (empty
  // for the others).
  absl::Span<const uint16_t> bf16;
  // The stored bytes, in place in the mapping (no alignment guaranteed).
  absl::Span<const uint8_t> raw;
};

class SafetensorsCheckpoint {
 public:
  // Opens dir/model.safetensors.index.json and its shards when the index
  // exists, else dir/model.safetensors.
  static absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> OpenDir(const std::string& dir);
  // Opens a single .safetensors file.
  static absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> OpenFile(const std::string& path);

  SafetensorsCheckpoint(const SafetensorsCheckpoint&) = delete;
  SafetensorsCheckpoint& operator=(const SafetensorsCheckpoint&) = delete;
  ~SafetensorsCheckpoint();

  bool Contains(const std::string& name) const { return tensors_.count(name) > 0; }
  std::vector<std::string> TensorNames() const;  // sorted
  // NotFound when absent.
  absl::StatusOr<const TensorInfo*> Info(const std::string& name) const;
  // The tensor's BF16 values after checking its shape: NotFound when absent,
  // InvalidArgument "tensor NAME has shape [a, b], expected [c, d]".
  // InvalidArgument too for a tensor with no BF16 view (an 8-bit or
  // integer dtype).
  absl::StatusOr<absl::Span<const uint16_t>> GetBf16(const std::string& name,
                                                     absl::Span<const int64_t> shape) const;
  // The raw bytes of a tensor of exactly `dtype` and `shape`: NotFound when
  // absent, InvalidArgument naming the tensor for another dtype or shape.
  absl::StatusOr<absl::Span<const uint8_t>> GetRaw(const std::string& name, TensorDType dtype,
                                                   absl::Span<const int64_t> shape) const;
  // The values of a BF16, F16 or F32 tensor, widened exactly to f32, any
  // shape; InvalidArgument for other dtypes.
  absl::StatusOr<std::vector<float>> GetFloats(const std::string& name) const;

 private:
  class MappedFile;
  SafetensorsCheckpoint();
  absl::Status AddFile(const std::string& path, const std::string& display_name);

  std::vector<std::unique_ptr<MappedFile>> files_;
  std::vector<std::unique_ptr<uint16_t[]>> converted_;  // owned BF16 copies
  std::map<std::string, TensorInfo> tensors_;
};

// "[a, b, c]" for messages.
std::string ShapeToString(absl::Span<const int64_t> shape);

}  // namespace tern::worker

#endif  // TERN_WORKER_MODEL_SAFETENSORS_H_
