// The arithmetic of `tern bench engine`: what a Llama model costs per token
// (bytes of weights streamed, FLOPs), the roofline fractions of measured
// figures, and the final table with the performance targets.
// Plain values and pure functions; thread-safe.
#ifndef TERN_CLI_BENCH_BENCH_REPORT_H_
#define TERN_CLI_BENCH_BENCH_REPORT_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "worker/model/model_config.h"

namespace tern::cli {

// Per-token costs of a model whose weights are bf16 and whose KV cache is f32
// (the native executor's layout).
struct ModelCost {
  // Parameters of the matrices every token multiplies: q/k/v/o, gate/up/down
  // of every layer (layer_params) and lm_head (the embedding matrix when
  // tied), which a prefill applies to the last prompt token only.
  int64_t layer_params = 0;
  int64_t lm_head_params = 0;
  int64_t matmul_params = 0;  // layer_params + lm_head_params
  // Every parameter of the checkpoint (embeddings and norms included).
  int64_t total_params = 0;
  int64_t weight_bytes = 0;  // total_params in bf16
  // Bytes of the matrices (with their scales) one decode step reads:
  // 2 x matmul_params for bf16; a quantized checkpoint's loader knows its
  // own (worker::Model::decode_weight_bytes), and the bench sets it.
  int64_t matmul_bytes = 0;
  int64_t kv_bytes_per_token = 0;  // keys and values of all layers, f32
  int32_t layers = 0;
  int32_t q_dim = 0;
};

ModelCost ComputeModelCost(const worker::ModelConfig& config);

// FLOPs to prefill `tokens` tokens from position 0: 2 per layer matmul
// parameter per token, lm_head for the last token, plus 4 * q_dim per layer
// per attended position (QK^T and PV).
double PrefillFlops(const ModelCost& cost, int64_t tokens);
// Bytes of weights a prefill in `chunks` steps streams: the layers once per
// step, lm_head once.
double PrefillBytes(const ModelCost& cost, int64_t chunks);
// One decode step of `batch` sequences at `context` positions each.
double DecodeStepFlops(const ModelCost& cost, int64_t batch, int64_t context);
// Bytes one decode step must read: the matmul weights once, plus each
// sequence's KV cache.
double DecodeStepBytes(const ModelCost& cost, int64_t batch, int64_t context);

// One figure of the final table. Higher is better unless lower_is_better.
struct FigureRow {
  std::string name;
  std::string unit;
  std::optional<double> tern;
  std::optional<double> llama_cpp;
  // e.g. "bw 84% / fma 3%"; empty when it does not apply.
  std::string roofline;
};

struct TargetCheck {
  std::string description;
  // Absent when a figure it needs was not measured.
  std::optional<bool> met;
  std::string detail;
};

// The table: figure | tern | llama.cpp | ratio (tern / llama.cpp) | roofline.
std::string FormatFigureTable(const std::vector<FigureRow>& rows);
// Any table in that layout: the first row is the header, columns padded and
// separated by " | ", a rule under the header.
std::string FormatTable(const std::vector<std::vector<std::string>>& cells);
// A figure as the tables print it: 3 significant digits, "n/a" when absent.
std::string FormatFigureValue(const std::optional<double>& value);
// "met", "NOT met" or "n/a" lines, one per target.
std::string FormatTargets(const std::vector<TargetCheck>& targets);

// Everything the targets look at. Fractions are in [0, 1] units.
struct BenchSummary {
  int32_t prefill_tokens = 512;  // the prompt length compared with llama.cpp
  std::optional<double> prefill_tern, prefill_llama;
  std::optional<double> decode1_tern, decode1_llama, decode1_bw_fraction;
  int32_t big_batch = 32;
  std::optional<double> decode_big_tern, decode_big_llama, decode_big_fma_fraction;
  std::optional<double> ttft_cold_s, ttft_cached_s;
  std::optional<double> peak_rss_bytes, weights_plus_kv_bytes;
};

// The targets: decode batch 1 >= 1.5x llama.cpp and >= 85% of the
// bandwidth roofline; prefill >= 1.5x llama.cpp; big-batch decode >= 8x batch
// 1, >= 60% of the FMA peak and >= 1.3x llama.cpp at the same batch;
// prefix-cached TTFT <= 10% of cold; peak RSS <= (weights + KV pool) * 1.1.
std::vector<TargetCheck> CheckTargets(const BenchSummary& summary);

}  // namespace tern::cli

#endif  // TERN_CLI_BENCH_BENCH_REPORT_H_
