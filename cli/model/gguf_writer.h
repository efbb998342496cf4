// Writing GGUF (version 3) files, and converting a Hugging Face Llama 3.x
// checkpoint directory into one the way llama.cpp's convert_hf_to_gguf.py
// does for LlamaForCausalLM with --outtype bf16:
//   - metadata: general.architecture "llama", llama.* hyperparameters
//     (context/embedding/feed-forward length, block count, head counts,
//     key/value length, rope dimension count and freq base, RMS epsilon,
//     vocab size), general.file_type MOSTLY_BF16;
//   - llama3 rope scaling as a `rope_freqs.weight` F32 tensor of per-pair
//     frequency divisors (no rope.scaling.* keys), as the converter writes;
//   - tokenizer.ggml.* for the GPT-2 style byte-level BPE of Llama 3 (model
//     "gpt2", pre "llama-bpe", tokens, token types, merges, bos/eos ids,
//     add_bos_token) and tokenizer.chat_template;
//   - tensors token_embd / blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,
//     ffn_norm,ffn_gate,ffn_up,ffn_down} / output_norm / output (untied only):
//     2-D weights BF16 (GGML type 30; F32 on request), 1-D norms F32; attn_q and attn_k rows
//     permuted from Hugging Face's rotate-half layout to GGML's interleaved
//     rotary pairs.
//
// Files are written to a temporary name and renamed into place. Errors:
// NotFound / InvalidArgument for unreadable or malformed inputs, Internal for
// write failures. Functions are thread-compatible (no shared state).
#ifndef TERN_CLI_MODEL_GGUF_WRITER_H_
#define TERN_CLI_MODEL_GGUF_WRITER_H_

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tern::worker {

// A file written under "<path>.tmp" and renamed to `path` by Commit(); the
// temporary file is removed if the writer is destroyed without a Commit.
class AtomicFileWriter {
 public:
  static absl::StatusOr<std::unique_ptr<AtomicFileWriter>> Create(const std::string& path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  absl::Status Write(const void* data, size_t size);
  uint64_t bytes_written() const { return bytes_written_; }
  absl::Status Commit();

 private:
  AtomicFileWriter(std::string path, std::FILE* file);
  std::string path_;
  std::string tmp_path_;
  std::FILE* file_;
  uint64_t bytes_written_ = 0;
};

// Writes `content` to `path` atomically.
absl::Status WriteFileAtomically(const std::string& path, const std::string& content);

enum class GgmlType : uint32_t { kF32 = 0, kF16 = 1, kQ8_0 = 8, kBF16 = 30 };

// Builds a GGUF v3 file: metadata key/values and tensors whose bytes are
// produced by callbacks at write time (nothing large is held in memory).
class GgufWriter {
 public:
  using TensorData = std::function<absl::Status(AtomicFileWriter&)>;

  void AddString(const std::string& key, const std::string& value);
  void AddUint32(const std::string& key, uint32_t value);
  void AddFloat32(const std::string& key, float value);
  void AddBool(const std::string& key, bool value);
  void AddStringArray(const std::string& key, const std::vector<std::string>& values);
  void AddInt32Array(const std::string& key, const std::vector<int32_t>& values);

  // `dims` in GGML order (fastest-varying first: {cols, rows} for a
  // row-major matrix). `write` must write exactly the tensor's byte size.
  void AddTensor(const std::string& name, std::vector<uint64_t> dims, GgmlType type,
                 TensorData write);

  // `progress(done, total)` after each tensor, when set.
  absl::Status WriteFile(const std::string& path,
                         const std::function<void(size_t, size_t)>& progress = nullptr) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> dims;
    GgmlType type;
    TensorData write;
    uint64_t size_bytes;
  };
  void Key(const std::string& key, uint32_t value_type);

  std::string metadata_;  // serialized key/value pairs
  uint64_t metadata_count_ = 0;
  std::vector<Tensor> tensors_;
};

// Converts the Hugging Face Llama checkpoint in `model_dir` (config.json,
// safetensors, tokenizer.json, tokenizer_config.json) to a GGUF file with
// BF16 matrices, or F32 ones (the same values widened exactly: llama.cpp then
// computes in f32 throughout, which the parity tests use for a tight check).
// Quantized checkpoints (worker/model/quantization.h) keep their values:
// int8 linear layers become Q8_0 (the row's f16-exact scale in every block of
// 32; InvalidArgument if a scale is not exactly an f16), FP8 ones F32
// (dequantized: E4M3 value x scale); embeddings and norms as above. The
// lm_head is what the engine computes with by default (LmHeadFormat::kAuto):
// for a model with 8-bit layers, its bf16 lm_head quantized to int8 rows
// (Q8_0 in an int8 model's file, dequantized F32 in an FP8 model's), written
// as output.weight even when the checkpoint ties it to the embeddings.
absl::Status ConvertCheckpointToGguf(const std::string& model_dir, const std::string& out_path,
                                     const std::function<void(const std::string&)>& progress,
                                     GgmlType weight_type = GgmlType::kBF16);

}  // namespace tern::worker

#endif  // TERN_CLI_MODEL_GGUF_WRITER_H_
