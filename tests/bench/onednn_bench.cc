// oneDNN's bf16 matmul (Debian's libdnnl-dev, 2.6) at the shapes of
// kernels_bench.cc, one thread, for comparison with tern's kernels there:
//
//   Matmul/onednn_packed/K<cols>_N<rows>/M<tokens>: W reordered once into
//     the layout oneDNN picks for the shape (format_tag::any), which a model
//     would have to hold as a second copy of its weights;
//   Matmul/onednn_plain/...: W read in place in tern's layout (rows x cols,
//     as oneDNN's K x N with format_tag::ba), as tern's kernels read it;
//   Llama1bLayer/onednn_packed|onednn_plain/M<tokens>: one 1B layer's seven
//     matmuls.
// Each call rounds x to bf16 first (a oneDNN reorder), as tern's avx512bf16
// kernels do, and writes f32 y; counters as in kernels_bench.cc. W cycles
// through copies totalling >= 256 MiB so it comes from DRAM.
//
// Built only where CMake finds oneDNN: the engine does not use it (README,
// "bf16 matmuls with vdpbf16ps": its summation order depends on the shape,
// which would break the bit-identical results across token counts).
#include <omp.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/reference.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace tern::kernels {
namespace {

constexpr size_t kPoolBytes = size_t{256} << 20;

struct Shape {
  size_t cols, rows;
};
constexpr Shape kLayer1b[] = {{2048, 2048}, {2048, 512},  {2048, 512}, {2048, 2048},
                              {2048, 8192}, {2048, 8192}, {8192, 2048}};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One shape's matmul for m tokens, over `copies` of the weights.
class OneDnnMatmul {
 public:
  OneDnnMatmul(size_t m, Shape s, bool packed, const std::vector<uint16_t>& w, size_t copies)
      : m_(m), s_(s) {
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    const auto M = static_cast<dnnl::memory::dim>(m), K = static_cast<dnnl::memory::dim>(s.cols),
               N = static_cast<dnnl::memory::dim>(s.rows);
    const dnnl::memory::desc x_f32({M, K}, dt::f32, tag::ab), x_bf16({M, K}, dt::bf16, tag::ab);
    const dnnl::memory::desc w_plain({K, N}, dt::bf16, tag::ba);
    const dnnl::memory::desc w_any({K, N}, dt::bf16, packed ? tag::any : tag::ba);
    const dnnl::memory::desc y_f32({M, N}, dt::f32, tag::ab);
    pd_ = dnnl::matmul::primitive_desc(dnnl::matmul::desc(x_bf16, w_any, y_f32), Engine());
    matmul_ = dnnl::matmul(pd_);
    x_ = dnnl::memory(x_f32, Engine());
    xb_ = dnnl::memory(x_bf16, Engine());
    y_ = dnnl::memory(y_f32, Engine());
    round_ = dnnl::reorder(x_, xb_);
    dnnl::stream stream(Engine());
    for (size_t c = 0; c < copies; ++c) {
      dnnl::memory plain(w_plain, Engine(), const_cast<uint16_t*>(w.data()));
      weights_.emplace_back(pd_.weights_desc(), Engine());
      dnnl::reorder(plain, weights_.back()).execute(stream, plain, weights_.back());
    }
    stream.wait();
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    auto* x = static_cast<float*>(x_.get_data_handle());
    for (size_t i = 0; i < m * s.cols; ++i) x[i] = dist(rng);
  }

  void Run(dnnl::stream& stream, size_t copy) {
    round_.execute(stream, x_, xb_);
    matmul_.execute(stream,
                    {{DNNL_ARG_SRC, xb_}, {DNNL_ARG_WEIGHTS, weights_[copy]}, {DNNL_ARG_DST, y_}});
  }
  std::string impl() const { return pd_.impl_info_str(); }

 private:
  size_t m_;
  Shape s_;
  dnnl::matmul::primitive_desc pd_;
  dnnl::matmul matmul_;
  dnnl::reorder round_;
  dnnl::memory x_, xb_, y_;
  std::vector<dnnl::memory> weights_;
};

std::vector<uint16_t> RandomWeights(Shape s) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-0.05f, 0.05f);
  std::vector<uint16_t> w(s.rows * s.cols);
  for (uint16_t& v : w) v = FloatToBf16(dist(rng));
  return w;
}

void BM_OneDnnMatmul(benchmark::State& state, bool packed, Shape s) {
  const size_t m = static_cast<size_t>(state.range(0));
  const size_t bytes = s.rows * s.cols * sizeof(uint16_t);
  const size_t copies = std::max<size_t>(1, (kPoolBytes + bytes - 1) / bytes);
  OneDnnMatmul mm(m, s, packed, RandomWeights(s), copies);
  dnnl::stream stream(Engine());
  size_t copy = 0;
  for (auto _ : state) {
    mm.Run(stream, copy);
    stream.wait();
    copy = copy + 1 == copies ? 0 : copy + 1;
  }
  state.SetLabel(mm.impl());
  state.counters["weight_bytes/s"] =
      benchmark::Counter(static_cast<double>(bytes), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["flop/s"] =
      benchmark::Counter(2.0 * m * s.rows * s.cols, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_OneDnnLayer(benchmark::State& state, bool packed) {
  const size_t m = static_cast<size_t>(state.range(0));
  size_t layer_bytes = 0;
  double flops = 0.0;
  for (const Shape& s : kLayer1b) {
    layer_bytes += s.rows * s.cols * sizeof(uint16_t);
    flops += 2.0 * m * s.rows * s.cols;
  }
  const size_t copies = std::max<size_t>(2, kPoolBytes / layer_bytes + 1);
  std::vector<std::unique_ptr<OneDnnMatmul>> layer;
  for (const Shape& s : kLayer1b) {
    layer.push_back(std::make_unique<OneDnnMatmul>(m, s, packed, RandomWeights(s), copies));
  }
  dnnl::stream stream(Engine());
  size_t copy = 0;
  for (auto _ : state) {
    for (auto& mm : layer) mm->Run(stream, copy);
    stream.wait();
    copy = copy + 1 == copies ? 0 : copy + 1;
  }
  state.counters["flop/s"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["weight_bytes/s"] = benchmark::Counter(
      static_cast<double>(layer_bytes), benchmark::Counter::kIsIterationInvariantRate);
}

bool RegisterOneDnn() {
  // One thread, as tern's kernels_bench rows (a rank's share of a matmul).
  omp_set_num_threads(1);
  const Shape shapes[] = {{2048, 2048}, {2048, 8192}, {8192, 2048}, {2048, 32768}};
  for (const Shape& s : shapes) {
    for (const bool packed : {true, false}) {
      const std::string name = std::string("Matmul/") +
                               (packed ? "onednn_packed" : "onednn_plain") + "/K" +
                               std::to_string(s.cols) + "_N" + std::to_string(s.rows);
      benchmark::RegisterBenchmark(name.c_str(), BM_OneDnnMatmul, packed, s)
          ->ArgName("M")
          ->ArgsProduct({{1, 8, 16, 32, 64}})
          ->Unit(benchmark::kMicrosecond);
    }
  }
  for (const bool packed : {true, false}) {
    benchmark::RegisterBenchmark(
        (std::string("Llama1bLayer/") + (packed ? "onednn_packed" : "onednn_plain")).c_str(),
        BM_OneDnnLayer, packed)
        ->ArgName("M")
        ->ArgsProduct({{1, 8, 16, 32, 64, 512}})
        ->Unit(benchmark::kMillisecond);
  }
  return true;
}

const bool registered = RegisterOneDnn();

}  // namespace
}  // namespace tern::kernels
