// Picks the decode GEMV's streaming settings (dispatch.h GemvTuning) for the
// CPU it runs on, by timing every candidate on the caller's own matrices:
// the sizes and the memory a decode step reads, not a synthetic buffer.
//
// Each timing streams `stream_bytes` of weights, cycling through the
// matrices (so each timing continues where the last one stopped and reads
// from DRAM, as a decode step does, as long as the matrices are well past the
// last-level cache). The candidates take turns, the order rotated each round,
// so a burst of noise from other work on the host spreads over all of them;
// the first round only warms up (page faults, frequency) and is not counted;
// each candidate's median rate counts. The fastest replaces the default only
// when it is faster by `min_gain`, and again by `min_gain` when the two take
// turns for `rounds` more timings, so noise alone keeps the default.
//
// Every candidate gives the same bits (dispatch.h), so this decides speed only.
#ifndef TERN_KERNELS_GEMV_TUNING_H_
#define TERN_KERNELS_GEMV_TUNING_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "kernels/dispatch.h"

namespace tern::kernels {

// A bf16 matrix of `rows` x `cols`, row-major (KernelSet::matmul_bf16's W).
struct GemvMatrix {
  const uint16_t* w = nullptr;
  size_t rows = 0, cols = 0;
};

struct GemvTuneOptions {
  size_t stream_bytes = size_t{128} << 20;
  // Counted rounds (each runs every candidate once), after one warm-up round.
  int32_t rounds = 5;
  double min_gain = 0.05;
};

struct GemvTrial {
  GemvTuning tuning;
  double gb_per_s = 0.0;  // the median over the counted rounds
};

struct GemvTuneResult {
  GemvTuning chosen;
  // One per candidate, in GemvTuningCandidates order: trials[0] is the
  // default. Empty when there was nothing to time.
  std::vector<GemvTrial> trials;
  // When the fastest cleared min_gain: its gain over the default when the
  // two took turns again (it is chosen only if this clears min_gain too).
  double confirmed_gain = 0.0;

  // The chosen setting's trial, or nullptr without trials.
  const GemvTrial* chosen_trial() const;
  // "1 row, prefetch 2 groups ahead: 38.2 GB/s (the default; best other:
  // 1 row, prefetch 3 groups ahead at 37.9 GB/s)" (with ", only +1.0 % on a
  // second look" when the best was timed again), or for another choice
  // "8 rows, ...: 40.1 GB/s (+5.0 %, and +6.1 % on a second look, over the
  // default, 1 row, ..., at 38.2 GB/s)".
  std::string Summary() const;
  // Every trial, as rows/prefetch_groups and GB/s: "1/2 38.2, 1/0 35.0, ...".
  std::string Trials() const;
};

// Times the candidates of `kernels`' level (GemvTuningCandidates) on
// `matrices` (which must not be empty for a timing to happen) and returns the
// one to keep. Leaves CurrentGemvTuning() as it found it; the caller sets
// the result. Runs on the calling thread only.
GemvTuneResult TuneGemv(const KernelSet& kernels, absl::Span<const GemvMatrix> matrices,
                        const GemvTuneOptions& options = {});

}  // namespace tern::kernels

#endif  // TERN_KERNELS_GEMV_TUNING_H_
