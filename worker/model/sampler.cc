#include "worker/model/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>

#include "absl/base/casts.h"
#include "absl/strings/str_cat.h"

namespace tern::worker {
namespace {

// vLLM treats temperatures below this as greedy.
constexpr float kGreedyTemperature = 1e-5f;

// splitmix64's finalizer: a bijective 64-bit mix with full avalanche.
uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void ApplyPenalties(std::vector<float>& logits, const SamplingOptions& o,
                    absl::Span<const int32_t> tokens, size_t num_prompt_tokens) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  auto in_vocab = [vocab](int32_t t) { return t >= 0 && t < vocab; };
  if (o.repetition_penalty > 0.0f && o.repetition_penalty != 1.0f) {
    std::vector<bool> seen(logits.size(), false);
    for (int32_t t : tokens) {
      if (!in_vocab(t) || seen[t]) continue;
      seen[t] = true;
      float& l = logits[t];
      l = l > 0.0f ? l / o.repetition_penalty : l * o.repetition_penalty;
    }
  }
  if (o.presence_penalty != 0.0f || o.frequency_penalty != 0.0f) {
    std::unordered_map<int32_t, int> counts;
    for (size_t i = std::min(num_prompt_tokens, tokens.size()); i < tokens.size(); ++i) {
      if (in_vocab(tokens[i])) ++counts[tokens[i]];
    }
    for (const auto& [t, count] : counts) {
      logits[t] -= o.frequency_penalty * static_cast<float>(count) + o.presence_penalty;
    }
  }
}

int32_t Argmax(const std::vector<float>& logits) {
  int32_t best = 0;
  for (int32_t i = 1; i < static_cast<int32_t>(logits.size()); ++i) {
    if (logits[i] > logits[best]) best = i;  // strict: lowest id wins ties
  }
  return best;
}

// Truncation without sorting. Candidates are ordered by probability, highest
// first, lower id first on ties; a truncation keeps a prefix of that order,
// described by where it ends (`Cut`). For probabilities in [0, 1] the float
// bit patterns order like the values, so the prefix that a count or a mass
// first reaches is found by radix selection: three passes over the
// vocabulary, each fixing 11 more bits of the cut's value from a histogram of
// counts and masses, then one pass over the ids whose probability is the
// cut's value exactly. No candidate array is built and nothing is sorted.

struct Cut {
  float value = 0.0f;                                     // the last kept probability
  int32_t last_id = std::numeric_limits<int32_t>::max();  // the last kept id of that probability
  float floor = 0.0f;                                     // min-p: nothing below is kept
};

bool Kept(const Cut& cut, float p, int32_t id) {
  return p > 0.0f && p >= cut.floor && (p > cut.value || (p == cut.value && id <= cut.last_id));
}

uint32_t Bits(float p) { return absl::bit_cast<uint32_t>(p); }

// The shortest prefix of the candidates `within` keeps whose count reaches
// `count` or whose mass reaches `mass`. Returns `within` when the kept ones
// never reach it (a count beyond them, or a mass rounding left short).
Cut CutAt(const std::vector<float>& probs, const Cut& within, int64_t count, double mass) {
  constexpr int kLevels = 3;
  constexpr int kShift[kLevels] = {21, 10, 0};
  constexpr uint32_t kBuckets = 1u << 11;
  uint32_t prefix = 0;  // the bits of the cut's value fixed so far
  int64_t count_above = 0;
  double mass_above = 0.0;
  auto reached = [&](int64_t c, double m) { return c >= count || m >= mass; };
  std::vector<int64_t> counts(kBuckets);
  std::vector<double> masses(kBuckets);
  for (int level = 0; level < kLevels; ++level) {
    const int shift = kShift[level];
    const int fixed_shift = level == 0 ? 32 : kShift[level - 1];
    std::fill(counts.begin(), counts.end(), 0);
    std::fill(masses.begin(), masses.end(), 0.0);
    for (size_t id = 0; id < probs.size(); ++id) {
      const float p = probs[id];
      if (!Kept(within, p, static_cast<int32_t>(id))) continue;
      const uint32_t bits = Bits(p);
      if (fixed_shift < 32 && (bits >> fixed_shift) != prefix) continue;
      const uint32_t bucket = (bits >> shift) & ((1u << (fixed_shift - shift)) - 1);
      ++counts[bucket];
      masses[bucket] += p;
    }
    int64_t bucket = kBuckets - 1;
    for (; bucket >= 0; --bucket) {
      if (reached(count_above + counts[bucket], mass_above + masses[bucket])) break;
      count_above += counts[bucket];
      mass_above += masses[bucket];
    }
    if (bucket < 0) return within;
    prefix = (prefix << (fixed_shift - shift)) | static_cast<uint32_t>(bucket);
  }
  // Every candidate of the cut's value, by id, until the prefix is reached.
  Cut cut = within;
  cut.value = absl::bit_cast<float>(prefix);
  for (size_t id = 0; id < probs.size(); ++id) {
    const float p = probs[id];
    if (p != cut.value || !Kept(within, p, static_cast<int32_t>(id))) continue;
    ++count_above;
    mass_above += p;
    if (reached(count_above, mass_above)) {
      cut.last_id = static_cast<int32_t>(id);
      return cut;
    }
  }
  return within;
}

// The probability mass of the candidates `cut` keeps.
double KeptMass(const std::vector<float>& probs, const Cut& cut) {
  double mass = 0.0;
  for (size_t id = 0; id < probs.size(); ++id) {
    if (Kept(cut, probs[id], static_cast<int32_t>(id))) mass += probs[id];
  }
  return mass;
}

}  // namespace

TokenLogprobs ComputeLogprobs(absl::Span<const float> raw_logits, int32_t token, int top_n) {
  TokenLogprobs out;
  out.token_id = token;
  if (raw_logits.empty()) return out;
  double max_logit = -INFINITY;
  for (float l : raw_logits) max_logit = std::max(max_logit, static_cast<double>(l));
  double sum = 0.0;
  for (float l : raw_logits) sum += std::exp(static_cast<double>(l) - max_logit);
  const double log_normaliser = max_logit + std::log(sum);
  auto logprob = [&](int32_t id) {
    return static_cast<float>(static_cast<double>(raw_logits[id]) - log_normaliser);
  };
  out.logprob = logprob(token);

  const size_t n = static_cast<size_t>(std::clamp(top_n, 0, kMaxTopLogprobs));
  if (n == 0) return out;
  // `better` orders by logit descending, id ascending; the heap's front is
  // the worst of the kept candidates, so a new id replaces it when better.
  auto better = [&raw_logits](int32_t a, int32_t b) {
    return raw_logits[a] > raw_logits[b] || (raw_logits[a] == raw_logits[b] && a < b);
  };
  std::vector<int32_t> heap;
  heap.reserve(n + 1);
  for (int32_t id = 0; id < static_cast<int32_t>(raw_logits.size()); ++id) {
    if (std::isnan(raw_logits[id])) continue;
    if (heap.size() < n) {
      heap.push_back(id);
      std::push_heap(heap.begin(), heap.end(), better);
    } else if (better(id, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), better);
      heap.back() = id;
      std::push_heap(heap.begin(), heap.end(), better);
    }
  }
  std::sort(heap.begin(), heap.end(), better);
  out.top.reserve(heap.size());
  for (int32_t id : heap) out.top.emplace_back(id, logprob(id));
  return out;
}

double SamplerUniform(uint64_t seed, int64_t position) {
  const uint64_t key = Mix64(seed ^ Mix64(static_cast<uint64_t>(position) + 0x9e3779b97f4a7c15ull));
  return static_cast<double>(key >> 11) * 0x1.0p-53;
}

absl::Status ValidateSamplingOptions(const SamplingOptions& o) {
  auto bad = [](const char* name, float v) {
    return absl::InvalidArgumentError(absl::StrCat(name, " ", v, " is out of range"));
  };
  if (!(o.temperature >= 0.0f && o.temperature <= 100.0f)) return bad("temperature", o.temperature);
  if (!(o.top_p > 0.0f && o.top_p <= 1.0f)) return bad("top_p", o.top_p);
  if (o.top_k < 0) return bad("top_k", static_cast<float>(o.top_k));
  if (!(o.min_p >= 0.0f && o.min_p <= 1.0f)) return bad("min_p", o.min_p);
  if (!(o.repetition_penalty > 0.0f && o.repetition_penalty <= 100.0f)) {
    return bad("repetition_penalty", o.repetition_penalty);
  }
  if (!(o.presence_penalty >= -2.0f && o.presence_penalty <= 2.0f)) {
    return bad("presence_penalty", o.presence_penalty);
  }
  if (!(o.frequency_penalty >= -2.0f && o.frequency_penalty <= 2.0f)) {
    return bad("frequency_penalty", o.frequency_penalty);
  }
  return absl::OkStatus();
}

int32_t SampleToken(std::vector<float>& logits, const SamplingOptions& options,
                    absl::Span<const int32_t> prompt_and_generated, int64_t position,
                    size_t num_prompt_tokens) {
  if (logits.empty()) return 0;
  ApplyPenalties(logits, options, prompt_and_generated, num_prompt_tokens);
  // NaN options fall through to greedy / no filtering.
  if (!(options.temperature >= kGreedyTemperature)) return Argmax(logits);

  const float inv_t = 1.0f / options.temperature;
  for (float& l : logits) l *= inv_t;

  // Probabilities relative to the most likely token (which gets exactly 1),
  // written over the logits. NaN logits get none.
  float max_logit = -INFINITY;
  for (float l : logits) max_logit = std::max(max_logit, l);  // NaN never wins
  if (!(max_logit > -INFINITY)) return Argmax(logits);
  std::vector<float>& probs = logits;
  double total = 0.0;
  for (float& l : probs) {
    const float p = std::exp(l - max_logit);
    l = std::isnan(p) ? 0.0f : p;
    total += l;
  }
  // `mass` follows what the truncations keep.
  Cut cut;
  double mass = total;
  if (options.top_k > 0 && static_cast<size_t>(options.top_k) < probs.size()) {
    cut = CutAt(probs, cut, options.top_k, INFINITY);
    mass = KeptMass(probs, cut);
  }
  if (options.top_p < 1.0f && options.top_p > 0.0f) {
    // The shortest prefix whose mass reaches top_p (at least one token).
    cut = CutAt(probs, cut, std::numeric_limits<int64_t>::max(),
                static_cast<double>(options.top_p) * mass);
    mass = KeptMass(probs, cut);
  }
  // min-p: nothing below min_p times the most likely token's probability
  // (1), which itself always stays.
  if (options.min_p > 0.0f) {
    cut.floor = std::min(options.min_p, 1.0f);
    mass = KeptMass(probs, cut);
  }

  // One draw over the kept tokens in id order: every fixed order draws from
  // the same distribution, and this one needs no sort.
  const double target = SamplerUniform(options.seed, position) * mass;
  double cumulative = 0.0;
  int32_t last = 0;  // the last kept id: rounding can leave the target unreached
  for (size_t id = 0; id < probs.size(); ++id) {
    if (!Kept(cut, probs[id], static_cast<int32_t>(id))) continue;
    last = static_cast<int32_t>(id);
    cumulative += probs[id];
    if (target < cumulative) return last;
  }
  return last;
}

}  // namespace tern::worker
