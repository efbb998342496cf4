#include "tests/testing/reference_forward.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/dispatch.h"
#include "kernels/reference.h"

namespace tern::testing {
namespace {

namespace k = ::tern::kernels;
using worker::Model;
using worker::ModelConfig;

// Tokens processed together through each layer: every weight row is read
// once per chunk instead of once per token, while activations stay small.
constexpr int kChunkTokens = 64;

// Per-call activations; allocated per call so concurrent calls share nothing.
struct Scratch {
  Scratch(const ModelConfig& c, int n)
      : x(static_cast<size_t>(n) * c.hidden_size),
        xn(x.size()),
        tmp(x.size()),
        q(static_cast<size_t>(n) * c.q_dim()),
        attn(q.size()),
        k(static_cast<size_t>(n) * c.kv_dim()),
        v(k.size()),
        gate(static_cast<size_t>(n) * c.intermediate_size),
        up(gate.size()),
        cos(c.head_dim / 2),
        sin(c.head_dim / 2) {}
  std::vector<float> x, xn, tmp, q, attn, k, v, gate, up, cos, sin, scores;
};

// Causal attention of the query `q` at `position` over the cache of `layer`.
void Attention(const ModelConfig& c, const k::KernelSet& kern, int layer, int position,
               const float* q, const KvCache& cache, float* out, std::vector<float>& scores) {
  const size_t hd = c.head_dim;
  const int group = c.num_attention_heads / c.num_key_value_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int len = position + 1;  // keys at positions <= this one
  scores.resize(len);
  for (int h = 0; h < c.num_attention_heads; ++h) {
    const size_t kv_offset = static_cast<size_t>(h / group) * hd;
    const float* qh = q + h * hd;
    for (int j = 0; j < len; ++j) {
      scores[j] = kern.DotF32(qh, cache.keys(layer, j) + kv_offset, hd) * scale;
    }
    kern.SoftmaxInPlace(absl::MakeSpan(scores));
    absl::Span<float> oh(out + h * hd, hd);
    std::fill(oh.begin(), oh.end(), 0.0f);
    for (int j = 0; j < len; ++j) {
      kern.AxpyInPlace(scores[j], absl::MakeConstSpan(cache.values(layer, j) + kv_offset, hd), oh);
    }
  }
}

// Runs one chunk of tokens through all layers; positions start at `start`.
void ForwardChunk(const Model& model, const k::KernelSet& kern, absl::Span<const int32_t> tokens,
                  int start, KvCache& cache, Scratch& s) {
  const ModelConfig& c = model.config();
  const size_t n = tokens.size();
  const size_t d = c.hidden_size, q_dim = c.q_dim(), kv_dim = c.kv_dim();
  const size_t ffn = c.intermediate_size, hd = c.head_dim;
  const float eps = static_cast<float>(c.rms_norm_eps);
  auto row = [](std::vector<float>& v, size_t t, size_t width) {
    return absl::Span<float>(v.data() + t * width, width);
  };

  for (size_t t = 0; t < n; ++t) {
    const uint16_t* e = model.embed_tokens().data() + static_cast<size_t>(tokens[t]) * d;
    for (size_t i = 0; i < d; ++i) s.x[t * d + i] = k::Bf16ToFloat(e[i]);
  }
  for (int li = 0; li < c.num_hidden_layers; ++li) {
    const Model::Layer& l = model.layer(li);
    // Attention block.
    for (size_t t = 0; t < n; ++t) kern.RmsNorm(row(s.x, t, d), l.input_norm, eps, row(s.xn, t, d));
    absl::Span<const float> xn(s.xn.data(), n * d);
    kern.MatmulBf16(l.q_proj, q_dim, d, xn, n, absl::MakeSpan(s.q.data(), n * q_dim));
    kern.MatmulBf16(l.k_proj, kv_dim, d, xn, n, absl::MakeSpan(s.k.data(), n * kv_dim));
    kern.MatmulBf16(l.v_proj, kv_dim, d, xn, n, absl::MakeSpan(s.v.data(), n * kv_dim));
    for (size_t t = 0; t < n; ++t) {
      const int pos = start + static_cast<int>(t);
      k::RopeCosSin(pos, model.inv_freq(), absl::MakeSpan(s.cos), absl::MakeSpan(s.sin));
      for (int h = 0; h < c.num_attention_heads; ++h) {
        k::ApplyRopeRotateHalf(absl::MakeSpan(s.q.data() + t * q_dim + h * hd, hd), s.cos, s.sin);
      }
      for (int h = 0; h < c.num_key_value_heads; ++h) {
        k::ApplyRopeRotateHalf(absl::MakeSpan(s.k.data() + t * kv_dim + h * hd, hd), s.cos, s.sin);
      }
      std::copy_n(s.k.data() + t * kv_dim, kv_dim, cache.keys(li, pos));
      std::copy_n(s.v.data() + t * kv_dim, kv_dim, cache.values(li, pos));
    }
    for (size_t t = 0; t < n; ++t) {
      Attention(c, kern, li, start + static_cast<int>(t), s.q.data() + t * q_dim, cache,
                s.attn.data() + t * q_dim, s.scores);
    }
    kern.MatmulBf16(l.o_proj, d, q_dim, absl::MakeSpan(s.attn.data(), n * q_dim), n,
                    absl::MakeSpan(s.tmp.data(), n * d));
    kern.AddInPlace(absl::MakeSpan(s.x.data(), n * d), absl::MakeSpan(s.tmp.data(), n * d));
    // MLP block.
    for (size_t t = 0; t < n; ++t) {
      kern.RmsNorm(row(s.x, t, d), l.post_attention_norm, eps, row(s.xn, t, d));
    }
    kern.MatmulBf16(l.gate_proj, ffn, d, xn, n, absl::MakeSpan(s.gate.data(), n * ffn));
    kern.MatmulBf16(l.up_proj, ffn, d, xn, n, absl::MakeSpan(s.up.data(), n * ffn));
    kern.SiluMulInPlace(absl::MakeSpan(s.gate.data(), n * ffn),
                        absl::MakeSpan(s.up.data(), n * ffn));
    kern.MatmulBf16(l.down_proj, d, ffn, absl::MakeSpan(s.gate.data(), n * ffn), n,
                    absl::MakeSpan(s.tmp.data(), n * d));
    kern.AddInPlace(absl::MakeSpan(s.x.data(), n * d), absl::MakeSpan(s.tmp.data(), n * d));
  }
}

}  // namespace

KvCache::KvCache(const ModelConfig& config, int capacity_tokens)
    : kv_dim_(config.kv_dim()),
      capacity_(std::max(capacity_tokens, 0)),
      keys_(config.num_hidden_layers),
      values_(config.num_hidden_layers) {}

void KvCache::Truncate(int n) { size_ = std::clamp(n, 0, size_); }

absl::Status KvCache::Extend(int n) {
  if (n < 0 || n > capacity_ - size_) {
    return absl::OutOfRangeError(
        absl::StrCat("KV cache holds ", size_, " of ", capacity_, " positions; cannot add ", n));
  }
  const size_t needed = static_cast<size_t>(size_ + n) * kv_dim_;
  for (size_t layer = 0; layer < keys_.size(); ++layer) {
    if (keys_[layer].size() < needed) {
      // Grow geometrically, never past the capacity.
      const size_t grown = std::min(std::max(needed, keys_[layer].size() * 2),
                                    static_cast<size_t>(capacity_) * kv_dim_);
      keys_[layer].resize(grown);
      values_[layer].resize(grown);
    }
  }
  size_ += n;
  return absl::OkStatus();
}

absl::Status ReferenceForward(const Model& model, absl::Span<const int32_t> tokens, KvCache& cache,
                              std::vector<float>* logits_last) {
  const ModelConfig& c = model.config();
  if (tokens.empty()) return absl::InvalidArgumentError("no tokens to run");
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " at index ", i,
                                                     " is outside the vocabulary [0, ",
                                                     c.vocab_size, ")"));
    }
  }
  if (cache.num_layers() != c.num_hidden_layers || cache.kv_dim() != c.kv_dim()) {
    return absl::InvalidArgumentError("KV cache was built for a different model");
  }
  const int start = cache.size();
  TERN_RETURN_IF_ERROR(cache.Extend(static_cast<int>(tokens.size())));

  const k::KernelSet& kern = k::ActiveKernels();
  const int n_total = static_cast<int>(tokens.size());
  Scratch s(c, std::min(n_total, kChunkTokens));
  int last_in_chunk = 0;
  for (int done = 0; done < n_total; done += kChunkTokens) {
    const int n = std::min(kChunkTokens, n_total - done);
    ForwardChunk(model, kern, tokens.subspan(done, n), start + done, cache, s);
    last_in_chunk = n - 1;
  }
  if (logits_last != nullptr) {
    const size_t d = c.hidden_size;
    absl::Span<const float> x(s.x.data() + last_in_chunk * d, d);
    absl::Span<float> xn(s.xn.data(), d);
    kern.RmsNorm(x, model.final_norm(), static_cast<float>(c.rms_norm_eps), xn);
    logits_last->resize(c.vocab_size);
    kern.GemvBf16(model.lm_head().bf16, c.vocab_size, d, xn, absl::MakeSpan(*logits_last));
  }
  return absl::OkStatus();
}

}  // namespace tern::testing
