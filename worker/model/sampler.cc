#include "worker/model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

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

  // Candidates in (logit descending, id ascending) order, so ties and the
  // cumulative walks below are deterministic. Only the prefix the walks reach
  // is sorted (in growing chunks): with a peaked distribution that is a few
  // dozen of the vocabulary's ids, not all of them.
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  auto better = [&logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  size_t kept = ids.size();
  if (options.top_k > 0 && static_cast<size_t>(options.top_k) < kept) {
    kept = static_cast<size_t>(options.top_k);
    std::nth_element(ids.begin(), ids.begin() + kept, ids.end(), better);
  }
  size_t sorted = 0;  // ids[0, sorted) are in order and precede the rest of the kept ones
  auto ensure_sorted = [&](size_t n) {
    if (n <= sorted) return;
    const size_t upto = std::min(kept, std::max(n, std::max<size_t>(64, sorted * 4)));
    if (upto < kept) {
      std::nth_element(ids.begin() + sorted, ids.begin() + upto, ids.begin() + kept, better);
    }
    std::sort(ids.begin() + sorted, ids.begin() + upto, better);
    sorted = upto;
  };
  ensure_sorted(1);
  const float max_logit = logits[ids[0]];
  auto prob = [&](size_t i) { return std::exp(static_cast<double>(logits[ids[i]] - max_logit)); };
  double total = 0.0;
  for (size_t i = 0; i < kept; ++i) total += prob(i);
  // top-p: the shortest prefix whose mass reaches top_p (at least one token).
  double mass = total;
  if (options.top_p < 1.0f && options.top_p > 0.0f) {
    const double target = static_cast<double>(options.top_p) * total;
    double cumulative = 0.0;
    size_t i = 0;
    while (i < kept) {
      ensure_sorted(i + 1);
      cumulative += prob(i++);
      if (cumulative >= target) break;
    }
    kept = std::max<size_t>(i, 1);
    mass = cumulative;
  }
  // min-p: drop tokens below min_p times the most likely one's probability
  // (which is exp(0) = 1).
  if (options.min_p > 0.0f) {
    const double threshold = static_cast<double>(std::min(options.min_p, 1.0f));
    size_t i = 1;
    mass = 1.0;
    while (i < kept) {
      ensure_sorted(i + 1);
      const double p = prob(i);
      if (p < threshold) break;
      mass += p;
      ++i;
    }
    kept = i;
  }
  const double target = SamplerUniform(options.seed, position) * mass;
  double cumulative = 0.0;
  for (size_t i = 0; i < kept; ++i) {
    ensure_sorted(i + 1);
    cumulative += prob(i);
    if (target < cumulative) return ids[i];
  }
  ensure_sorted(kept);
  return ids[kept - 1];
}

}  // namespace tern::worker
