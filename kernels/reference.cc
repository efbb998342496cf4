#include "kernels/reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>
#include <vector>

namespace tern::kernels {
namespace {

// 16 independent partial sums: GCC vectorizes the lane loop without needing
// -ffast-math (the summation order is fixed, so results are reproducible).
constexpr size_t kLanes = 16;

}  // namespace

float F16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) {  // inf / NaN
    return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  }
  if (exponent == 0) {  // zero / subnormal: mantissa * 2^-24
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  return std::bit_cast<float>(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

uint16_t FloatToF16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs_bits >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: inf
  if (abs_bits < 0x38800000u) {                        // below 2^-14: subnormal half
    const float scaled = std::bit_cast<float>(abs_bits) * 16777216.0f;  // * 2^24, exact
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));        // ties-to-even mode
  }
  // Normal: re-bias the exponent and round the 13 dropped mantissa bits to even.
  uint32_t v = abs_bits - (112u << 23);
  v += 0xfffu + ((v >> 13) & 1u);
  return sign | static_cast<uint16_t>(v >> 13);
}

float DotBf16(const uint16_t* w, const float* x, size_t n) {
  float acc[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t l = 0; l < kLanes; ++l) acc[l] += Bf16ToFloat(w[i + l]) * x[i + l];
  }
  float sum = 0.0f;
  for (size_t l = 0; l < kLanes; ++l) sum += acc[l];
  for (; i < n; ++i) sum += Bf16ToFloat(w[i]) * x[i];
  return sum;
}

float DotF32(const float* a, const float* b, size_t n) {
  float acc[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t l = 0; l < kLanes; ++l) acc[l] += a[i + l] * b[i + l];
  }
  float sum = 0.0f;
  for (size_t l = 0; l < kLanes; ++l) sum += acc[l];
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

void GemvBf16(absl::Span<const uint16_t> w, size_t rows, size_t cols, absl::Span<const float> x,
              absl::Span<float> y) {
  for (size_t r = 0; r < rows; ++r) y[r] = DotBf16(w.data() + r * cols, x.data(), cols);
}

void MatmulBf16(absl::Span<const uint16_t> w, size_t rows, size_t cols, absl::Span<const float> x,
                size_t n, absl::Span<float> y) {
  for (size_t r = 0; r < rows; ++r) {
    const uint16_t* row = w.data() + r * cols;
    for (size_t t = 0; t < n; ++t) y[t * rows + r] = DotBf16(row, x.data() + t * cols, cols);
  }
}

float Fp8E4M3ToFloat(uint8_t v) {
  const uint32_t exponent = (v >> 3) & 0xfu;
  const uint32_t mantissa = v & 0x7u;
  if (exponent == 0xf && mantissa == 0x7) return std::numeric_limits<float>::quiet_NaN();
  // Subnormals are mantissa * 2^-9; normals (8 + mantissa) * 2^(exponent - 10).
  const float magnitude =
      exponent == 0 ? std::ldexp(static_cast<float>(mantissa), -9)
                    : std::ldexp(static_cast<float>(8 + mantissa), static_cast<int>(exponent) - 10);
  return (v & 0x80u) != 0 ? -magnitude : magnitude;
}

uint8_t FloatToFp8E4M3(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  const float a = std::min(std::fabs(f), kFp8E4M3Max);
  if (a < 0x1p-6f) {
    // Subnormal range: multiples of 2^-9; rounding up to 8 * 2^-9 lands on
    // the smallest normal, whose encoding (0x08) continues the sequence.
    return sign | static_cast<uint8_t>(std::nearbyint(a * 0x1p9f));
  }
  int e = 0;
  const float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  // 16 * m in [8, 16): the implicit bit and 3 mantissa bits, rounded to even.
  int q = static_cast<int>(std::nearbyint(std::ldexp(m, 4)));
  int exponent = e - 1 + 7;
  if (q == 16) {
    q = 8;
    ++exponent;
  }
  return sign | static_cast<uint8_t>((exponent << 3) | (q - 8));
}

namespace {

template <typename Decode>
void MatmulQuantized(absl::Span<const uint8_t> w, absl::Span<const float> row_scales, size_t rows,
                     size_t cols, absl::Span<const float> x, size_t n, absl::Span<float> y,
                     Decode decode) {
  for (size_t r = 0; r < rows; ++r) {
    const uint8_t* row = w.data() + r * cols;
    for (size_t t = 0; t < n; ++t) {
      const float* xt = x.data() + t * cols;
      double sum = 0.0;
      for (size_t c = 0; c < cols; ++c) sum += static_cast<double>(decode(row[c])) * xt[c];
      y[t * rows + r] = row_scales[r] * static_cast<float>(sum);
    }
  }
}

}  // namespace

void MatmulInt8(absl::Span<const uint8_t> w, absl::Span<const float> row_scales, size_t rows,
                size_t cols, absl::Span<const float> x, size_t n, absl::Span<float> y) {
  MatmulQuantized(w, row_scales, rows, cols, x, n, y,
                  [](uint8_t b) { return static_cast<float>(Int8FromOffsetByte(b)); });
}

void MatmulFp8(absl::Span<const uint8_t> w, absl::Span<const float> row_scales, size_t rows,
               size_t cols, absl::Span<const float> x, size_t n, absl::Span<float> y) {
  MatmulQuantized(w, row_scales, rows, cols, x, n, y, Fp8E4M3ToFloat);
}

void RmsNorm(absl::Span<const float> x, absl::Span<const float> weight, float eps,
             absl::Span<float> out) {
  double sum_sq = 0.0;
  for (float v : x) sum_sq += static_cast<double>(v) * v;
  const float mean_sq = static_cast<float>(sum_sq / static_cast<double>(x.size()));
  const float inv_rms = 1.0f / std::sqrt(mean_sq + eps);
  for (size_t i = 0; i < x.size(); ++i) out[i] = (x[i] * inv_rms) * weight[i];
}

void RopeInvFreq(size_t head_dim, double theta, const Llama3RopeScaling* llama3,
                 absl::Span<float> inv_freq) {
  const size_t half = head_dim / 2;
  for (size_t i = 0; i < half; ++i) {
    const double exponent = static_cast<double>(2 * i) / static_cast<double>(head_dim);
    double freq = 1.0 / std::pow(theta, exponent);
    if (llama3 != nullptr) {
      const double old_ctx = llama3->original_max_position_embeddings;
      const double low_freq_wavelen = old_ctx / llama3->low_freq_factor;
      const double high_freq_wavelen = old_ctx / llama3->high_freq_factor;
      const double wavelen = 2.0 * std::numbers::pi / freq;
      if (wavelen > low_freq_wavelen) {
        freq /= llama3->factor;
      } else if (wavelen >= high_freq_wavelen) {
        const double smooth = (old_ctx / wavelen - llama3->low_freq_factor) /
                              (llama3->high_freq_factor - llama3->low_freq_factor);
        freq = (1.0 - smooth) * freq / llama3->factor + smooth * freq;
      }
    }
    inv_freq[i] = static_cast<float>(freq);
  }
}

void RopeCosSin(int64_t position, absl::Span<const float> inv_freq, absl::Span<float> cos,
                absl::Span<float> sin) {
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    // The angle is formed in f32 as Hugging Face does (position * inv_freq).
    const float angle = static_cast<float>(position) * inv_freq[i];
    cos[i] = static_cast<float>(std::cos(static_cast<double>(angle)));
    sin[i] = static_cast<float>(std::sin(static_cast<double>(angle)));
  }
}

void ApplyRopeRotateHalf(absl::Span<float> head, absl::Span<const float> cos,
                         absl::Span<const float> sin) {
  const size_t half = head.size() / 2;
  for (size_t i = 0; i < half; ++i) {
    const float a = head[i];
    const float b = head[i + half];
    head[i] = a * cos[i] - b * sin[i];
    head[i + half] = b * cos[i] + a * sin[i];
  }
}

void SiluMulInPlace(absl::Span<float> gate, absl::Span<const float> up) {
  for (size_t i = 0; i < gate.size(); ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void SoftmaxInPlace(absl::Span<float> v) {
  if (v.empty()) return;
  float max_value = v[0];
  for (float x : v) max_value = x > max_value ? x : max_value;
  double sum = 0.0;
  for (float& x : v) {
    x = std::exp(x - max_value);
    sum += x;
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (float& x : v) x *= inv;
}

void AddInPlace(absl::Span<float> acc, absl::Span<const float> x) {
  for (size_t i = 0; i < acc.size(); ++i) acc[i] += x[i];
}

void AxpyInPlace(float scale, absl::Span<const float> x, absl::Span<float> out) {
  for (size_t i = 0; i < out.size(); ++i) out[i] += scale * x[i];
}

void PagedAttention(const PagedKv& kv, const int32_t* block_table, int32_t start,
                    int32_t num_tokens, const float* q, int32_t num_heads, float scale,
                    float* out) {
  const int32_t group = num_heads / kv.num_kv_heads;
  const size_t head_dim = static_cast<size_t>(kv.head_dim);
  std::vector<double> weights;
  std::vector<double> acc(head_dim);
  for (int32_t t = 0; t < num_tokens; ++t) {
    const int32_t length = start + t + 1;
    weights.resize(static_cast<size_t>(length));
    for (int32_t h = 0; h < num_heads; ++h) {
      const int32_t kv_head = h / group;
      const float* qh = q + (static_cast<size_t>(t) * num_heads + h) * head_dim;
      auto offset = [&](int32_t p) {
        const size_t slot = static_cast<size_t>(block_table[p / kv.block_size]) * kv.block_size +
                            static_cast<size_t>(p % kv.block_size);
        return (slot * kv.num_kv_heads + kv_head) * head_dim;
      };
      double max_score = -std::numeric_limits<double>::infinity();
      for (int32_t p = 0; p < length; ++p) {
        const float* k = kv.keys + offset(p);
        double dot = 0.0;
        for (size_t i = 0; i < head_dim; ++i) dot += static_cast<double>(qh[i]) * k[i];
        weights[p] = dot * scale;
        max_score = std::max(max_score, weights[p]);
      }
      double sum = 0.0;
      for (int32_t p = 0; p < length; ++p) {
        weights[p] = std::exp(weights[p] - max_score);
        sum += weights[p];
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int32_t p = 0; p < length; ++p) {
        const float* v = kv.values + offset(p);
        for (size_t i = 0; i < head_dim; ++i) acc[i] += weights[p] * v[i];
      }
      float* oh = out + (static_cast<size_t>(t) * num_heads + h) * head_dim;
      for (size_t i = 0; i < head_dim; ++i) oh[i] = static_cast<float>(acc[i] / sum);
    }
  }
}

}  // namespace tern::kernels
