#include "cli/bench/bench_report.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tern::cli {
namespace {

std::string PadRight(const std::string& text, size_t width) {
  return text.size() >= width ? text : text + std::string(width - text.size(), ' ');
}

std::string Percent(double fraction) { return absl::StrFormat("%.1f%%", 100.0 * fraction); }

TargetCheck AtLeast(std::string description, std::optional<double> value, double threshold,
                    const std::string& what) {
  TargetCheck check{std::move(description), std::nullopt, ""};
  if (value) {
    check.met = *value >= threshold;
    check.detail = absl::StrFormat("%s %.3g (needs >= %.3g)", what, *value, threshold);
  } else {
    check.detail = what + " not measured";
  }
  return check;
}

std::optional<double> Ratio(const std::optional<double>& a, const std::optional<double>& b) {
  if (!a || !b || *b <= 0.0) return std::nullopt;
  return *a / *b;
}

}  // namespace

ModelCost ComputeModelCost(const worker::ModelConfig& config) {
  ModelCost cost;
  const int64_t hidden = config.hidden_size;
  const int64_t layer_matmul = hidden * (config.q_dim() + 2LL * config.kv_dim()) +
                               int64_t{config.q_dim()} * hidden +
                               3 * hidden * config.intermediate_size;
  const int64_t vocab_matrix = int64_t{config.vocab_size} * hidden;
  cost.layers = config.num_hidden_layers;
  cost.q_dim = config.q_dim();
  cost.layer_params = layer_matmul * config.num_hidden_layers;
  cost.lm_head_params = vocab_matrix;
  cost.matmul_params = cost.layer_params + cost.lm_head_params;
  const int64_t norms = (2 * int64_t{config.num_hidden_layers} + 1) * hidden;
  cost.total_params = cost.matmul_params + norms + (config.tie_word_embeddings ? 0 : vocab_matrix);
  cost.weight_bytes = 2 * cost.total_params;
  cost.matmul_bytes = 2 * cost.matmul_params;
  cost.kv_bytes_per_token = 2LL * config.num_hidden_layers * config.kv_dim() * 4;
  return cost;
}

double PrefillFlops(const ModelCost& cost, int64_t tokens) {
  const double n = static_cast<double>(tokens);
  return 2.0 * static_cast<double>(cost.layer_params) * n +
         2.0 * static_cast<double>(cost.lm_head_params) +
         4.0 * cost.layers * cost.q_dim * (n * (n + 1.0) / 2.0);
}

double PrefillBytes(const ModelCost& cost, int64_t chunks) {
  // The layers' share of matmul_bytes is read once per chunk, lm_head (bf16
  // in every format tern loads) once.
  const double lm_head = 2.0 * static_cast<double>(cost.lm_head_params);
  const double layers = static_cast<double>(cost.matmul_bytes) - lm_head;
  return layers * static_cast<double>(chunks) + lm_head;
}

double DecodeStepFlops(const ModelCost& cost, int64_t batch, int64_t context) {
  return static_cast<double>(batch) *
         (2.0 * static_cast<double>(cost.matmul_params) +
          4.0 * cost.layers * cost.q_dim * static_cast<double>(context));
}

double DecodeStepBytes(const ModelCost& cost, int64_t batch, int64_t context) {
  return static_cast<double>(cost.matmul_bytes) + static_cast<double>(batch) *
                                                      static_cast<double>(context) *
                                                      static_cast<double>(cost.kv_bytes_per_token);
}

std::string FormatFigureTable(const std::vector<FigureRow>& rows) {
  std::vector<std::vector<std::string>> cells = {
      {"figure", "tern", "llama.cpp", "ratio", "roofline (tern)"}};
  for (const FigureRow& row : rows) {
    const auto ratio = Ratio(row.tern, row.llama_cpp);
    cells.push_back({absl::StrCat(row.name, " (", row.unit, ")"), FormatFigureValue(row.tern),
                     FormatFigureValue(row.llama_cpp),
                     ratio ? absl::StrFormat("%.2fx", *ratio) : std::string("n/a"),
                     row.roofline.empty() ? "-" : row.roofline});
  }
  return FormatTable(cells);
}

std::string FormatFigureValue(const std::optional<double>& value) {
  if (!value) return "n/a";
  if (*value >= 100.0) return absl::StrFormat("%.0f", *value);
  if (*value >= 10.0) return absl::StrFormat("%.1f", *value);
  return absl::StrFormat("%#.3g", *value);
}

std::string FormatTable(const std::vector<std::vector<std::string>>& cells) {
  if (cells.empty()) return "";
  std::vector<size_t> widths(cells[0].size(), 0);
  for (const auto& line : cells) {
    for (size_t i = 0; i < line.size(); ++i) widths[i] = std::max(widths[i], line[i].size());
  }
  std::string out;
  for (size_t r = 0; r < cells.size(); ++r) {
    std::string line;
    for (size_t i = 0; i < cells[r].size(); ++i) {
      line += (i == 0 ? "" : " | ") + PadRight(cells[r][i], widths[i]);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
    if (r == 0) {
      std::string rule;
      for (size_t i = 0; i < widths.size(); ++i) {
        rule += (i == 0 ? "" : "-|-") + std::string(widths[i], '-');
      }
      out += rule + "\n";
    }
  }
  return out;
}

std::string FormatTargets(const std::vector<TargetCheck>& targets) {
  std::string out;
  for (const TargetCheck& target : targets) {
    const char* verdict = !target.met ? "n/a    " : *target.met ? "met    " : "NOT met";
    absl::StrAppend(&out, verdict, "  ", target.description, ": ", target.detail, "\n");
  }
  return out;
}

std::vector<TargetCheck> CheckTargets(const BenchSummary& s) {
  std::vector<TargetCheck> checks;
  checks.push_back(AtLeast("decode batch 1 >= 1.5x llama.cpp",
                           Ratio(s.decode1_tern, s.decode1_llama), 1.5, "ratio"));
  checks.push_back(AtLeast("decode batch 1 >= 85% of the bandwidth roofline", s.decode1_bw_fraction,
                           0.85, "fraction"));
  checks.push_back(AtLeast(absl::StrCat("prefill ", s.prefill_tokens, " >= 1.5x llama.cpp"),
                           Ratio(s.prefill_tern, s.prefill_llama), 1.5, "ratio"));
  checks.push_back(AtLeast(absl::StrCat("decode batch ", s.big_batch, " >= 8x batch 1"),
                           Ratio(s.decode_big_tern, s.decode1_tern), 8.0, "ratio"));
  checks.push_back(AtLeast(absl::StrCat("decode batch ", s.big_batch, " >= 60% of the FMA peak"),
                           s.decode_big_fma_fraction, 0.60, "fraction"));
  checks.push_back(AtLeast(absl::StrCat("decode batch ", s.big_batch, " >= 1.3x llama.cpp"),
                           Ratio(s.decode_big_tern, s.decode_big_llama), 1.3, "ratio"));
  {
    TargetCheck check{"prefix-cached TTFT <= 10% of cold", std::nullopt, "TTFT not measured"};
    if (s.ttft_cold_s && s.ttft_cached_s && *s.ttft_cold_s > 0.0) {
      const double ratio = *s.ttft_cached_s / *s.ttft_cold_s;
      check.met = ratio <= 0.10;
      check.detail = absl::StrFormat("cached %.4f s / cold %.4f s = %s", *s.ttft_cached_s,
                                     *s.ttft_cold_s, Percent(ratio));
    }
    checks.push_back(check);
  }
  {
    TargetCheck check{"peak RSS <= weights + KV pool + 10%", std::nullopt, "RSS not measured"};
    if (s.peak_rss_bytes && s.weights_plus_kv_bytes && *s.weights_plus_kv_bytes > 0.0) {
      const double ratio = *s.peak_rss_bytes / *s.weights_plus_kv_bytes;
      check.met = ratio <= 1.10;
      check.detail = absl::StrFormat("%.0f MiB / %.0f MiB = %s", *s.peak_rss_bytes / 1048576.0,
                                     *s.weights_plus_kv_bytes / 1048576.0, Percent(ratio));
    }
    checks.push_back(check);
  }
  return checks;
}

}  // namespace tern::cli
