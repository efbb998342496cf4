#include "kernels/gemv_tuning.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace tern::kernels {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

// Streams `bytes` of the matrices from matrix `next` on (cyclically) with one
// GEMV each; returns GB/s and advances `next`.
double TimeStream(const KernelSet& kernels, absl::Span<const GemvMatrix> matrices, size_t bytes,
                  const float* x, float* y, size_t& next) {
  size_t done = 0;
  const auto start = std::chrono::steady_clock::now();
  while (done < bytes) {
    const GemvMatrix& m = matrices[next];
    kernels.matmul_bf16(m.w, m.rows, m.cols, x, 1, y);
    done += m.rows * m.cols * sizeof(uint16_t);
    next = (next + 1) % matrices.size();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return static_cast<double>(done) / std::max(seconds, 1e-9) / 1e9;
}

std::string Rate(double gb_per_s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f GB/s", gb_per_s);
  return buf;
}

}  // namespace

const GemvTrial* GemvTuneResult::chosen_trial() const {
  for (const GemvTrial& t : trials) {
    if (t.tuning == chosen) return &t;
  }
  return nullptr;
}

std::string GemvTuneResult::Summary() const {
  const GemvTrial* mine = chosen_trial();
  if (mine == nullptr) return GemvTuningName(chosen) + " (not timed)";
  const GemvTrial& fallback = trials.front();
  std::string out = GemvTuningName(chosen) + ": " + Rate(mine->gb_per_s);
  if (mine != &fallback) {
    char gain[48];
    std::snprintf(gain, sizeof(gain),
                  " (%+.1f %%, and %+.1f %% on a second look, over the default, ",
                  100.0 * (mine->gb_per_s / fallback.gb_per_s - 1.0), 100.0 * confirmed_gain);
    return out + gain + GemvTuningName(fallback.tuning) + ", at " + Rate(fallback.gb_per_s) + ")";
  }
  const GemvTrial* other = nullptr;
  for (const GemvTrial& t : trials) {
    if (&t != mine && (other == nullptr || t.gb_per_s > other->gb_per_s)) other = &t;
  }
  out += " (the default; best other: " + GemvTuningName(other->tuning) + " at " +
         Rate(other->gb_per_s);
  if (confirmed_gain != 0.0) {
    char again[64];
    std::snprintf(again, sizeof(again), ", only %+.1f %% on a second look", 100.0 * confirmed_gain);
    out += again;
  }
  return out + ")";
}

std::string GemvTuneResult::Trials() const {
  std::string out;
  for (const GemvTrial& t : trials) {
    char buf[48];
    std::snprintf(buf, sizeof(buf), "%s%d/%d %.1f", out.empty() ? "" : ", ", t.tuning.rows,
                  t.tuning.prefetch_groups, t.gb_per_s);
    out += buf;
  }
  return out;
}

GemvTuneResult TuneGemv(const KernelSet& kernels, absl::Span<const GemvMatrix> matrices,
                        const GemvTuneOptions& options) {
  GemvTuneResult result;
  const std::vector<GemvTuning> candidates = GemvTuningCandidates(kernels.isa);
  if (matrices.empty() || options.rounds < 1 || candidates.size() < 2) return result;
  size_t max_rows = 0, max_cols = 0;
  for (const GemvMatrix& m : matrices) {
    max_rows = std::max(max_rows, m.rows);
    max_cols = std::max(max_cols, m.cols);
  }
  const std::vector<float> x(max_cols, 0.5f);
  std::vector<float> y(max_rows);
  const GemvTuning before = CurrentGemvTuning();
  std::vector<std::vector<double>> rates(candidates.size());
  size_t next = 0;
  for (int32_t round = 0; round <= options.rounds; ++round) {
    for (size_t k = 0; k < candidates.size(); ++k) {
      const size_t c = (k + static_cast<size_t>(round)) % candidates.size();
      SetGemvTuning(candidates[c]);
      const double rate =
          TimeStream(kernels, matrices, options.stream_bytes, x.data(), y.data(), next);
      if (round > 0) rates[c].push_back(rate);
    }
  }
  size_t best = 0;
  for (size_t c = 0; c < candidates.size(); ++c) {
    result.trials.push_back({candidates[c], Median(rates[c])});
    if (result.trials[c].gb_per_s > result.trials[best].gb_per_s) best = c;
  }
  result.chosen = candidates[0];
  if (best != 0 &&
      result.trials[best].gb_per_s >= result.trials[0].gb_per_s * (1.0 + options.min_gain)) {
    // A burst of noise during the default's turns can make any setting look
    // better: the two take turns once more and the gain must hold again.
    std::vector<double> again[2];
    for (int32_t round = 0; round < options.rounds; ++round) {
      for (size_t k = 0; k < 2; ++k) {
        const size_t which = (k + static_cast<size_t>(round)) % 2;
        SetGemvTuning(candidates[which == 0 ? 0 : best]);
        again[which].push_back(
            TimeStream(kernels, matrices, options.stream_bytes, x.data(), y.data(), next));
      }
    }
    result.confirmed_gain = Median(again[1]) / Median(again[0]) - 1.0;
    if (result.confirmed_gain >= options.min_gain) result.chosen = candidates[best];
  }
  SetGemvTuning(before);
  return result;
}

}  // namespace tern::kernels
