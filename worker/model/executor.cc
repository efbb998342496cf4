#include "worker/model/executor.h"

#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "kernels/dispatch.h"
#include "kernels/gemv_tuning.h"
#include "kernels/reference.h"
#include "worker/model/tp_pool.h"

namespace tern::worker {
namespace {

namespace k = ::tern::kernels;

// Rows of the final-norm'd hidden states pushed through a rank's lm_head
// slice at once when tp > 1: the partial logits go through a small buffer
// (kLogitChunkRows x vocab / tp) before being scattered into the caller's
// rows, instead of one buffer for max_batch_tokens full vocabularies.
constexpr size_t kLogitChunkRows = 16;

// Activation offsets are rounded to a cache line so no two ranks' buffers
// (or two arrays of one rank) share one.
constexpr size_t kAlignFloats = 16;

// A tensor-parallel matmul is shared between the ranks (TpPool::Share) in
// tiles, so a rank that lost its CPU is not waited for: for fewer than
// kTokenTileMin tokens, blocks of weight rows, about kTilesPerMatmul of them,
// each a multiple of kTileRowAlign rows (every kernel's row blocks divide it,
// so a row sums exactly as in one call); for more, blocks of kTokenTile
// tokens over all rows (the kernels stream the weights once per 128 tokens
// anyway; a token's sums do not depend on its batch with avx512bf16, and stay
// within the f32 levels' summation-order bound otherwise). The tiling is
// fixed by the shapes, so which rank runs a tile never changes a result.
constexpr size_t kTilesPerMatmul = 16;
constexpr size_t kTileRowAlign = 64;
constexpr size_t kTokenTileMin = 128;
constexpr size_t kTokenTile = 64;

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

size_t TileRows(size_t rows) {
  return std::min(rows, RoundUp((rows + kTilesPerMatmul - 1) / kTilesPerMatmul, kTileRowAlign));
}

// A rank's view of a linear layer's matrix (or a slice of it): its storage
// format, its first element, and, for 8-bit formats, the scale of its first row.
struct LinearView {
  WeightFormat format = WeightFormat::kBf16;
  const void* data = nullptr;
  const float* row_scales = nullptr;
};

// Rows [begin, begin + count) of `w`: contiguous, read in place.
LinearView RowSlice(const LinearWeight& w, size_t begin) {
  LinearView v{w.format, static_cast<const uint8_t*>(w.data()) + begin * w.cols * w.element_bytes(),
               nullptr};
  if (w.format != WeightFormat::kBf16) v.row_scales = w.row_scales.data() + begin;
  return v;
}

// Rows from `begin` on of a view of a matrix with `cols` columns.
LinearView SkipRows(const LinearView& w, size_t cols, size_t begin) {
  const size_t element_bytes = w.format == WeightFormat::kBf16 ? 2 : 1;
  return {w.format, static_cast<const uint8_t*>(w.data) + begin * cols * element_bytes,
          w.row_scales == nullptr ? nullptr : w.row_scales + begin};
}

// Copies columns [begin, begin + width) of every row of `w` to `dst`
// (rows x width elements) and returns the view of the copy.
LinearView CopyColumns(const LinearWeight& w, size_t begin, size_t width, uint8_t* dst) {
  const size_t e = w.element_bytes();
  const uint8_t* src = static_cast<const uint8_t*>(w.data());
  for (size_t i = 0; i < static_cast<size_t>(w.rows); ++i) {
    std::memcpy(dst + i * width * e, src + (i * w.cols + begin) * e, width * e);
  }
  return {w.format, dst, w.format == WeightFormat::kBf16 ? nullptr : w.row_scales.data()};
}

// y (n x rows) = x (n x cols) . W^T in the matrix's own format.
void Matmul(const k::KernelSet& kn, const LinearView& w, size_t rows, size_t cols, const float* x,
            size_t n, float* y) {
  switch (w.format) {
    case WeightFormat::kBf16:
      kn.matmul_bf16(static_cast<const uint16_t*>(w.data), rows, cols, x, n, y);
      return;
    case WeightFormat::kInt8:
      kn.matmul_int8(static_cast<const uint8_t*>(w.data), w.row_scales, rows, cols, x, n, y);
      return;
    case WeightFormat::kFp8:
      kn.matmul_fp8(static_cast<const uint8_t*>(w.data), w.row_scales, rows, cols, x, n, y);
      return;
  }
}

// Anonymous memory owned by one rank, written (first touched) by the thread
// that allocates it, so its pages sit on that thread's NUMA node.
class RankMemory {
 public:
  RankMemory() = default;
  RankMemory(const RankMemory&) = delete;
  RankMemory& operator=(const RankMemory&) = delete;
  ~RankMemory() {
    if (data_ != nullptr) ::munmap(data_, bytes_);
  }

  absl::Status Allocate(size_t bytes, const char* what) {
    if (bytes == 0) return absl::OkStatus();
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate ", bytes, " bytes for ", what, ": ", std::strerror(errno)));
    }
    (void)::madvise(p, bytes, MADV_HUGEPAGE);  // best effort: fewer TLB misses
    std::memset(p, 0, bytes);
    data_ = p;
    bytes_ = bytes;
    return absl::OkStatus();
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace

struct Executor::Impl {
  // One rank's slice of a layer. q/k/v/gate/up are row ranges of the
  // checkpoint's matrices, read in place, with their rows' scales; o/down are
  // column blocks, copied into the rank's memory when tp > 1 (in place when
  // tp == 1), which keep every output row and so all the per-row scales.
  struct RankLayer {
    LinearView q, k, v, gate, up, o, down;
  };

  struct Rank {
    int32_t q_head_begin = 0, q_heads = 0;
    int32_t kv_head_begin = 0, kv_heads = 0;
    int32_t ffn_begin = 0, ffn = 0;
    int32_t vocab_begin = 0, vocab_end = 0;
    std::vector<RankLayer> layers;
    LinearView head;                 // rows [vocab_begin, vocab_end) of the lm_head
    std::vector<float> head_scales;  // their scales when quantized at Create
    // The copied o_proj / down_proj column blocks, then the quantized lm_head rows.
    RankMemory weights;
    RankMemory kv;           // per layer: keys then values, kernels::PagedKv layout
    RankMemory activations;  // the buffers below
    size_t kv_layer_floats = 0;
    float *q = nullptr, *k = nullptr, *v = nullptr, *attn = nullptr;
    float *gate = nullptr, *up = nullptr, *xn = nullptr;
    // The rank's residual stream [max_batch_tokens x hidden]: its own copy
    // when tp > 1 (every rank sums the all-reduces itself), else Impl::x.
    float* x = nullptr;
    // Partial sums of the o_proj and down_proj outputs, one buffer for each
    // of a layer's two all-reduces (the same buffer when tp == 1).
    float* partials[2] = {nullptr, nullptr};
    float *logit_rows = nullptr, *logit_tmp = nullptr;
    // A row tile's output when this rank runs one for a few tokens (tp > 1).
    float* tile_out = nullptr;

    float* keys(int layer) const { return kv.as<float>() + 2 * layer * kv_layer_floats; }
    float* values(int layer) const { return keys(layer) + kv_layer_floats; }
  };

  // One sequence of the current step.
  struct SeqPlan {
    int32_t offset = 0;  // its first token's row in the activations
    int32_t count = 0;
    int32_t start = 0;
    const int32_t* block_table = nullptr;
  };

  absl::Status SetUpRank(int32_t r);
  // ExecutorOptions::tune_gemv: times the GEMV settings on rank 0's bf16
  // matrices, cut into the row tiles SharedMatmul runs, sets the fastest and
  // says so in gemv_tuning.
  void TuneGemv();
  void RankStep(int32_t r, size_t n, absl::Span<float> logits);
  // Matmul by rank r, as work the other ranks may take tiles of while they
  // wait (see kTilesPerMatmul).
  void SharedMatmul(int32_t r, const LinearView& w, size_t rows, size_t cols, const float* x,
                    size_t n, float* y);
  void Attention(Rank& rk, int layer);
  // Rank r's residual stream += the sum over ranks of their partials[buffer],
  // added in rank order. Every rank sums every column itself, so all hold
  // the same residual bit for bit and one barrier suffices: a rank writes a
  // buffer again two all-reduces later, after every rank has read it (they
  // all passed the barrier of the all-reduce in between).
  void AllReduceAdd(int32_t r, size_t n, int buffer);
  void Logits(int32_t r, absl::Span<float> logits);

  const Model* model = nullptr;
  ModelConfig c;
  ExecutorOptions options;
  const k::KernelSet* kern = &k::ActiveKernels();
  int32_t tp = 1;
  int32_t num_blocks = 0;
  int64_t bytes_per_block = 0;
  int64_t owned_weight_bytes = 0;
  bool quantize_head = false;  // the ranks quantize their lm_head rows to int8
  std::vector<Rank> ranks;
  // Declared after `ranks`: its threads are joined before their memory goes.
  std::unique_ptr<TpPool> pool;

  // Shared by all ranks: the step's embeddings [max_batch_tokens x hidden]
  // (tp 1 runs its residual stream in place there; with more ranks each
  // copies them to its own), and per token row its position's RoPE cos/sin.
  std::vector<float> x, cos, sin;
  // The current step (set by Step before the ranks run).
  std::vector<SeqPlan> plan;
  std::vector<int32_t> logit_token_rows;
  std::string gemv_tuning;
};

void Executor::Impl::TuneGemv() {
  if (const char* forced = std::getenv("TERN_GEMV"); forced != nullptr && *forced != '\0') {
    if (const std::optional<k::GemvTuning> t = k::ParseGemvTuning(forced)) {
      k::SetGemvTuning(*t);
      gemv_tuning = k::GemvTuningName(*t) + " (TERN_GEMV; not timed)";
      return;
    }
    TERN_LOG(Warning)
        << "TERN_GEMV=" << forced
        << " is not ROWS/PREFETCH (rows 1, 2, 4, 8 or 16; prefetch 0-3); timing instead";
  }
  const k::GemvTuneOptions tune;
  std::vector<k::GemvMatrix> matrices;
  size_t bytes = 0;
  auto add = [&](const LinearView& w, size_t rows, size_t cols) {
    if (w.format != WeightFormat::kBf16) return;
    const auto* data = static_cast<const uint16_t*>(w.data);
    // n == 1 shares a matmul between the ranks in row tiles (SharedMatmul).
    const size_t tile = tp > 1 ? TileRows(rows) : rows;
    for (size_t r0 = 0; r0 < rows; r0 += tile) {
      matrices.push_back({data + r0 * cols, std::min(tile, rows - r0), cols});
    }
    bytes += rows * cols * sizeof(uint16_t);
  };
  const Rank& rk = ranks[0];
  const size_t d = c.hidden_size, hd = c.head_dim;
  const size_t qd = static_cast<size_t>(rk.q_heads) * hd;
  const size_t kvd = static_cast<size_t>(rk.kv_heads) * hd;
  for (const RankLayer& l : rk.layers) {
    add(l.q, qd, d);
    add(l.k, kvd, d);
    add(l.v, kvd, d);
    add(l.o, d, qd);
    add(l.gate, rk.ffn, d);
    add(l.up, rk.ffn, d);
    add(l.down, d, rk.ffn);
  }
  add(rk.head, static_cast<size_t>(rk.vocab_end - rk.vocab_begin), d);
  const std::string fallback = k::GemvTuningName(k::CurrentGemvTuning());
  if (bytes < 2 * tune.stream_bytes) {
    gemv_tuning = absl::StrCat(fallback, " (not timed: rank 0's bf16 matrices, ", bytes >> 20,
                               " MiB, would be timed from cache)");
    return;
  }
  const k::GemvTuneResult result = k::TuneGemv(*kern, matrices, tune);
  if (result.trials.empty()) {
    gemv_tuning = absl::StrCat(fallback, " (", k::IsaName(kern->isa), " has no other setting)");
    return;
  }
  k::SetGemvTuning(result.chosen);
  gemv_tuning = result.Summary();
  TERN_LOG(Info) << "executor: decode GEMV trials, rows/prefetch GB/s (median of " << tune.rounds
                 << " x " << (tune.stream_bytes >> 20) << " MiB each): " << result.Trials();
}

absl::Status Executor::Impl::SetUpRank(int32_t r) {
  Rank& rk = ranks[r];
  const size_t d = c.hidden_size, hd = c.head_dim;
  const size_t qd = static_cast<size_t>(rk.q_heads) * hd;
  const size_t kvd = static_cast<size_t>(rk.kv_heads) * hd;
  const size_t ffn = rk.ffn;

  // Bytes of the copied o_proj / down_proj column blocks, each block's
  // start rounded to a cache line.
  size_t owned_bytes = 0;
  if (tp > 1) {
    for (int li = 0; li < c.num_hidden_layers; ++li) {
      const Model::Layer& ml = model->layer(li);
      owned_bytes += RoundUp(d * qd * ml.o.element_bytes(), 64);
      owned_bytes += RoundUp(d * ffn * ml.down.element_bytes(), 64);
    }
  }
  const size_t vocab_rows = rk.vocab_end - rk.vocab_begin;
  const size_t head_bytes = quantize_head ? vocab_rows * d : 0;
  TERN_RETURN_IF_ERROR(rk.weights.Allocate(owned_bytes + head_bytes, "weight shards"));
  uint8_t* owned = rk.weights.as<uint8_t>();
  const LinearWeight& head = model->lm_head();
  if (quantize_head) {
    rk.head_scales.resize(vocab_rows);
    uint8_t* codes = owned + owned_bytes;
    QuantizeRowsInt8(head.bf16.subspan(static_cast<size_t>(rk.vocab_begin) * d, vocab_rows * d),
                     static_cast<int64_t>(vocab_rows), static_cast<int64_t>(d), codes,
                     rk.head_scales.data());
    rk.head = {WeightFormat::kInt8, codes, rk.head_scales.data()};
  } else {
    rk.head = RowSlice(head, static_cast<size_t>(rk.vocab_begin));
  }
  rk.layers.resize(c.num_hidden_layers);
  for (int li = 0; li < c.num_hidden_layers; ++li) {
    const Model::Layer& ml = model->layer(li);
    RankLayer& rl = rk.layers[li];
    rl.q = RowSlice(ml.q, static_cast<size_t>(rk.q_head_begin) * hd);
    rl.k = RowSlice(ml.k, static_cast<size_t>(rk.kv_head_begin) * hd);
    rl.v = RowSlice(ml.v, static_cast<size_t>(rk.kv_head_begin) * hd);
    rl.gate = RowSlice(ml.gate, static_cast<size_t>(rk.ffn_begin));
    rl.up = RowSlice(ml.up, static_cast<size_t>(rk.ffn_begin));
    if (tp == 1) {
      rl.o = RowSlice(ml.o, 0);
      rl.down = RowSlice(ml.down, 0);
      continue;
    }
    rl.o = CopyColumns(ml.o, static_cast<size_t>(rk.q_head_begin) * hd, qd, owned);
    owned += RoundUp(d * qd * ml.o.element_bytes(), 64);
    rl.down = CopyColumns(ml.down, static_cast<size_t>(rk.ffn_begin), ffn, owned);
    owned += RoundUp(d * ffn * ml.down.element_bytes(), 64);
  }

  rk.kv_layer_floats =
      static_cast<size_t>(num_blocks) * options.block_size * static_cast<size_t>(rk.kv_heads) * hd;
  TERN_RETURN_IF_ERROR(rk.kv.Allocate(
      2 * static_cast<size_t>(c.num_hidden_layers) * rk.kv_layer_floats * sizeof(float),
      "the KV cache"));

  const size_t t = options.max_batch_tokens;
  // Row tiles run for fewer than kTokenTileMin tokens of any rank's layer
  // matrices (every rank's shard has the same shape), or for a chunk of
  // logit rows.
  const size_t tile_out =
      tp == 1 ? 0
              : std::max(std::min(t, kTokenTileMin - 1) * TileRows(std::max({qd, kvd, ffn, d})),
                         std::min(t, kLogitChunkRows) * TileRows(vocab_rows));
  const size_t own = tp > 1 ? t * d : 0;  // a residual stream and a second partial
  const std::pair<float**, size_t> buffers[] = {
      {&rk.q, t * qd},
      {&rk.k, t * kvd},
      {&rk.v, t * kvd},
      {&rk.attn, t * qd},
      {&rk.gate, t * ffn},
      {&rk.up, t * ffn},
      {&rk.partials[0], t * d},
      {&rk.partials[1], own},
      {&rk.xn, t * d},
      {&rk.logit_rows, t * d},
      {&rk.x, own},
      {&rk.logit_tmp, tp > 1 ? kLogitChunkRows * vocab_rows : 0},
      {&rk.tile_out, tile_out}};
  size_t total = 0;
  for (const auto& [target, size] : buffers) total += RoundUp(size, kAlignFloats);
  TERN_RETURN_IF_ERROR(rk.activations.Allocate(total * sizeof(float), "activations"));
  float* p = rk.activations.as<float>();
  for (const auto& [target, size] : buffers) {
    *target = p;
    p += RoundUp(size, kAlignFloats);
  }
  if (tp == 1) {
    rk.partials[1] = rk.partials[0];
    rk.x = x.data();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Executor>> Executor::Create(const Model* model,
                                                           ExecutorOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->model = model;
  impl->c = model->config();
  const ModelConfig& c = impl->c;
  if (options.block_size < 1) return absl::InvalidArgumentError("block_size must be positive");
  if (options.max_batch_tokens < 1) {
    return absl::InvalidArgumentError("max_batch_tokens must be positive");
  }
  if (options.tp < 0) return absl::InvalidArgumentError("tp must not be negative");
  const bool cpus_given = !options.cpus.empty();
  if (options.cpus.empty()) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
      for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
        if (CPU_ISSET(cpu, &set)) options.cpus.push_back(cpu);
      }
    }
  }
  if (options.tp == 0) options.tp = std::max<int32_t>(1, static_cast<int32_t>(options.cpus.size()));
  const int32_t tp = options.tp;
  const int32_t heads = c.num_attention_heads, kv_heads = c.num_key_value_heads;
  if (heads % tp != 0 || c.intermediate_size % tp != 0 ||
      (kv_heads % tp != 0 && tp % kv_heads != 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tp ", tp, " does not divide the model (", heads, " attention heads, ",
                     kv_heads, " kv heads, intermediate size ", c.intermediate_size,
                     "); kv heads must be a multiple of tp, or tp a multiple of kv heads"));
  }
  impl->tp = tp;
  impl->options = options;
  impl->quantize_head =
      QuantizesLmHead(options.lm_head, model->weight_format(), model->lm_head().format);

  // With tp > kv heads each kv head is replicated on tp / kv_heads ranks.
  const int32_t kv_per_rank = kv_heads >= tp ? kv_heads / tp : 1;
  impl->bytes_per_block = int64_t{2} * c.num_hidden_layers * options.block_size * tp * kv_per_rank *
                          c.head_dim * static_cast<int64_t>(sizeof(float));
  const int64_t blocks = options.kv_cache_bytes / impl->bytes_per_block;
  if (blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat("kv_cache_bytes ", options.kv_cache_bytes,
                                                   " holds no KV block of ", impl->bytes_per_block,
                                                   " bytes"));
  }
  if (blocks > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError("kv_cache_bytes gives more than 2^31 blocks");
  }
  impl->num_blocks = static_cast<int32_t>(blocks);

  impl->ranks = std::vector<Impl::Rank>(tp);
  const int32_t d = c.hidden_size;
  for (int32_t r = 0; r < tp; ++r) {
    Impl::Rank& rk = impl->ranks[r];
    rk.q_heads = heads / tp;
    rk.q_head_begin = r * rk.q_heads;
    rk.kv_heads = kv_per_rank;
    rk.kv_head_begin = kv_heads >= tp ? r * kv_per_rank : r / (tp / kv_heads);
    rk.ffn = c.intermediate_size / tp;
    rk.ffn_begin = r * rk.ffn;
    rk.vocab_begin = static_cast<int32_t>(int64_t{c.vocab_size} * r / tp);
    rk.vocab_end = static_cast<int32_t>(int64_t{c.vocab_size} * (r + 1) / tp);
  }
  const size_t t = options.max_batch_tokens;
  impl->x.resize(t * d);
  impl->cos.resize(t * (c.head_dim / 2));
  impl->sin.resize(impl->cos.size());

  // A single rank with no CPU named stays where the scheduler puts it:
  // pinned to the first CPU the process may use, every such worker of a host
  // would share that one CPU.
  impl->pool =
      std::make_unique<TpPool>(tp, tp == 1 && !cpus_given ? std::vector<int32_t>{} : options.cpus);
  std::vector<absl::Status> statuses(tp);
  Impl* raw = impl.get();
  // The creating thread is not pinned: it may not be the one that runs Step,
  // and threads it starts later would inherit its CPU.
  impl->pool->Run([&](int32_t r) { statuses[r] = raw->SetUpRank(r); }, /*pin_caller=*/false);
  for (const absl::Status& s : statuses) TERN_RETURN_IF_ERROR(s);
  if (tp > 1) {
    // The ranks hold their own copies of o_proj and down_proj now; drop this
    // process's pages of those tensors (the file mapping stays valid: a later
    // read, e.g. by Model::Forward, faults them back in from the file).
    const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    auto release = [page](const LinearWeight& w) {
      const uintptr_t data = reinterpret_cast<uintptr_t>(w.data());
      const uintptr_t begin = RoundUp(data, page);
      const uintptr_t end =
          (data + static_cast<uintptr_t>(w.rows * w.cols) * w.element_bytes()) / page * page;
      if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
    };
    for (int li = 0; li < c.num_hidden_layers; ++li) {
      release(model->layer(li).o);
      release(model->layer(li).down);
    }
  }
  for (const Impl::Rank& rk : impl->ranks) {
    impl->owned_weight_bytes += static_cast<int64_t>(rk.weights.bytes());
  }
  if (options.tune_gemv) {
    impl->TuneGemv();
  } else {
    impl->gemv_tuning = k::GemvTuningName(k::CurrentGemvTuning()) + " (not timed: tune_gemv off)";
  }
  TERN_LOG(Info) << "executor: decode GEMV " << impl->gemv_tuning;
  TERN_LOG(Info) << "executor: tp " << tp << ", " << impl->num_blocks << " KV blocks of "
                 << options.block_size << " tokens (" << impl->bytes_per_block
                 << " bytes each), weight shards " << impl->owned_weight_bytes << " bytes"
                 << (impl->quantize_head ? ", lm_head quantized to int8 at load" : "");
  return std::unique_ptr<Executor>(new Executor(std::move(impl)));
}

Executor::Executor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Executor::~Executor() = default;

absl::Status Executor::Step(absl::Span<const StepSequence> batch, absl::Span<float> logits) {
  Impl& m = *impl_;
  const ModelConfig& c = m.c;
  const int32_t bs = m.options.block_size;
  int64_t total = 0, logit_rows = 0;
  for (size_t s = 0; s < batch.size(); ++s) {
    const StepSequence& seq = batch[s];
    if (seq.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s, " has no tokens"));
    }
    for (size_t i = 0; i < seq.tokens.size(); ++i) {
      if (seq.tokens[i] < 0 || seq.tokens[i] >= c.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("sequence ", s, ": token id ", seq.tokens[i], " at index ", i,
                         " is outside the vocabulary [0, ", c.vocab_size, ")"));
      }
    }
    const int64_t end = int64_t{seq.start_position} + static_cast<int64_t>(seq.tokens.size());
    if (seq.start_position < 0 || end > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", s, ": bad start position ", seq.start_position));
    }
    const int64_t blocks_needed = (end + bs - 1) / bs;
    if (static_cast<int64_t>(seq.block_table.size()) < blocks_needed) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", s, ": block table has ", seq.block_table.size(),
                       " blocks, positions up to ", end, " need ", blocks_needed));
    }
    for (int64_t b = 0; b < blocks_needed; ++b) {
      if (seq.block_table[b] < 0 || seq.block_table[b] >= m.num_blocks) {
        return absl::InvalidArgumentError(
            absl::StrCat("sequence ", s, ": block ", seq.block_table[b],
                         " is outside the pool [0, ", m.num_blocks, ")"));
      }
    }
    total += static_cast<int64_t>(seq.tokens.size());
    if (seq.want_logits) ++logit_rows;
  }
  if (total > m.options.max_batch_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("the batch has ", total,
                                                   " tokens, more than max_batch_tokens ",
                                                   m.options.max_batch_tokens));
  }
  if (static_cast<int64_t>(logits.size()) < logit_rows * c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("logits hold ", logits.size(), " values, ",
                                                   logit_rows, " rows need ",
                                                   logit_rows * c.vocab_size));
  }
  if (total == 0) return absl::OkStatus();

  // Plan, embeddings and rotary tables (shared by the ranks).
  const size_t d = c.hidden_size, half = c.head_dim / 2;
  m.plan.clear();
  m.logit_token_rows.clear();
  int32_t row = 0;
  for (const StepSequence& seq : batch) {
    const int32_t n = static_cast<int32_t>(seq.tokens.size());
    m.plan.push_back({row, n, seq.start_position, seq.block_table.data()});
    for (int32_t i = 0; i < n; ++i, ++row) {
      const uint16_t* e = m.model->embed_tokens().data() + static_cast<size_t>(seq.tokens[i]) * d;
      float* xr = m.x.data() + static_cast<size_t>(row) * d;
      for (size_t j = 0; j < d; ++j) xr[j] = k::Bf16ToFloat(e[j]);
      k::RopeCosSin(seq.start_position + i, m.model->inv_freq(),
                    absl::MakeSpan(m.cos.data() + row * half, half),
                    absl::MakeSpan(m.sin.data() + row * half, half));
    }
    if (seq.want_logits) m.logit_token_rows.push_back(row - 1);
  }
  const size_t n = static_cast<size_t>(total);
  m.pool->Run([&](int32_t r) { m.RankStep(r, n, logits); });
  return absl::OkStatus();
}

void Executor::Impl::RankStep(int32_t r, size_t n, absl::Span<float> logits) {
  Rank& rk = ranks[r];
  const size_t d = c.hidden_size, hd = c.head_dim;
  const size_t qd = static_cast<size_t>(rk.q_heads) * hd;
  const size_t kvd = static_cast<size_t>(rk.kv_heads) * hd;
  const size_t ffn = rk.ffn;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const k::KernelSet& kn = *kern;
  if (tp > 1) std::memcpy(rk.x, x.data(), n * d * sizeof(float));
  for (int li = 0; li < c.num_hidden_layers; ++li) {
    const Model::Layer& ml = model->layer(li);
    const RankLayer& rl = rk.layers[li];
    // Attention block. Every rank normalizes all rows itself: cheaper than a
    // barrier to share them.
    for (size_t t = 0; t < n; ++t) {
      kn.rms_norm(rk.x + t * d, ml.input_norm.data(), d, eps, rk.xn + t * d);
    }
    SharedMatmul(r, rl.q, qd, d, rk.xn, n, rk.q);
    SharedMatmul(r, rl.k, kvd, d, rk.xn, n, rk.k);
    SharedMatmul(r, rl.v, kvd, d, rk.xn, n, rk.v);
    Attention(rk, li);
    SharedMatmul(r, rl.o, d, qd, rk.attn, n, rk.partials[0]);
    AllReduceAdd(r, n, 0);
    // MLP block.
    for (size_t t = 0; t < n; ++t) {
      kn.rms_norm(rk.x + t * d, ml.post_attention_norm.data(), d, eps, rk.xn + t * d);
    }
    SharedMatmul(r, rl.gate, ffn, d, rk.xn, n, rk.gate);
    SharedMatmul(r, rl.up, ffn, d, rk.xn, n, rk.up);
    kn.silu_mul(rk.gate, rk.up, n * ffn);
    SharedMatmul(r, rl.down, d, ffn, rk.gate, n, rk.partials[1]);
    AllReduceAdd(r, n, 1);
  }
  if (!logit_token_rows.empty()) Logits(r, logits);
}

void Executor::Impl::SharedMatmul(int32_t r, const LinearView& w, size_t rows, size_t cols,
                                  const float* x, size_t n, float* y) {
  if (tp == 1) {
    Matmul(*kern, w, rows, cols, x, n, y);
    return;
  }
  if (n >= kTokenTileMin) {
    pool->Share(r, static_cast<uint32_t>((n + kTokenTile - 1) / kTokenTile),
                [&](uint32_t tile, int32_t) {
                  const size_t t0 = tile * kTokenTile, count = std::min(kTokenTile, n - t0);
                  Matmul(*kern, w, rows, cols, x + t0 * cols, count, y + t0 * rows);
                });
    return;
  }
  const size_t tile_rows = TileRows(rows);
  pool->Share(r, static_cast<uint32_t>((rows + tile_rows - 1) / tile_rows),
              [&](uint32_t tile, int32_t runner) {
                const size_t r0 = tile * tile_rows, count = std::min(tile_rows, rows - r0);
                const LinearView part = SkipRows(w, cols, r0);
                if (n == 1) {
                  Matmul(*kern, part, count, cols, x, 1, y + r0);
                  return;
                }
                float* out = ranks[runner].tile_out;
                Matmul(*kern, part, count, cols, x, n, out);
                for (size_t t = 0; t < n; ++t) {
                  std::memcpy(y + t * rows + r0, out + t * count, count * sizeof(float));
                }
              });
}

void Executor::Impl::Attention(Rank& rk, int layer) {
  const size_t hd = c.head_dim, half = hd / 2;
  const size_t qd = static_cast<size_t>(rk.q_heads) * hd;
  const size_t kvd = static_cast<size_t>(rk.kv_heads) * hd;
  const int32_t bs = options.block_size;
  float* keys = rk.keys(layer);
  float* values = rk.values(layer);
  const k::PagedKv kv{keys, values, bs, rk.kv_heads, c.head_dim};
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (const SeqPlan& seq : plan) {
    for (int32_t i = 0; i < seq.count; ++i) {
      const size_t t = static_cast<size_t>(seq.offset + i);
      absl::Span<const float> cs(cos.data() + t * half, half), sn(sin.data() + t * half, half);
      for (int32_t h = 0; h < rk.q_heads; ++h) {
        k::ApplyRopeRotateHalf(absl::MakeSpan(rk.q + t * qd + h * hd, hd), cs, sn);
      }
      float* kt = rk.k + t * kvd;
      for (int32_t h = 0; h < rk.kv_heads; ++h) {
        k::ApplyRopeRotateHalf(absl::MakeSpan(kt + h * hd, hd), cs, sn);
      }
      const int32_t p = seq.start + i;
      const size_t slot =
          static_cast<size_t>(seq.block_table[p / bs]) * bs + static_cast<size_t>(p % bs);
      std::memcpy(keys + slot * kvd, kt, kvd * sizeof(float));
      std::memcpy(values + slot * kvd, rk.v + t * kvd, kvd * sizeof(float));
    }
    const size_t first = static_cast<size_t>(seq.offset);
    kern->paged_attention(kv, seq.block_table, seq.start, seq.count, rk.q + first * qd, rk.q_heads,
                          scale, rk.attn + first * qd);
  }
}

void Executor::Impl::AllReduceAdd(int32_t r, size_t n, int buffer) {
  Rank& rk = ranks[r];
  const size_t values = n * c.hidden_size;
  if (tp == 1) {
    kern->add(rk.x, rk.partials[buffer], values);
    return;
  }
  pool->Barrier(r);  // every rank's partial is complete
  for (const Rank& other : ranks) kern->add(rk.x, other.partials[buffer], values);
}

void Executor::Impl::Logits(int32_t r, absl::Span<float> logits) {
  Rank& rk = ranks[r];
  const size_t d = c.hidden_size, vocab = c.vocab_size;
  const size_t rows = logit_token_rows.size();
  const float eps = static_cast<float>(c.rms_norm_eps);
  for (size_t i = 0; i < rows; ++i) {
    kern->rms_norm(rk.x + static_cast<size_t>(logit_token_rows[i]) * d, model->final_norm().data(),
                   d, eps, rk.logit_rows + i * d);
  }
  const size_t vocab_rows = rk.vocab_end - rk.vocab_begin;
  if (tp == 1) {
    Matmul(*kern, rk.head, vocab, d, rk.logit_rows, rows, logits.data());
    return;
  }
  for (size_t i0 = 0; i0 < rows; i0 += kLogitChunkRows) {
    const size_t m = std::min(kLogitChunkRows, rows - i0);
    SharedMatmul(r, rk.head, vocab_rows, d, rk.logit_rows + i0 * d, m, rk.logit_tmp);
    for (size_t i = 0; i < m; ++i) {
      std::memcpy(logits.data() + (i0 + i) * vocab + rk.vocab_begin, rk.logit_tmp + i * vocab_rows,
                  vocab_rows * sizeof(float));
    }
  }
}

const ModelConfig& Executor::config() const { return impl_->c; }
int32_t Executor::tp() const { return impl_->tp; }
const std::string& Executor::gemv_tuning() const { return impl_->gemv_tuning; }
int32_t Executor::block_size() const { return impl_->options.block_size; }
int32_t Executor::num_blocks() const { return impl_->num_blocks; }
int32_t Executor::max_batch_tokens() const { return impl_->options.max_batch_tokens; }
int64_t Executor::bytes_per_block() const { return impl_->bytes_per_block; }
int64_t Executor::owned_weight_bytes() const { return impl_->owned_weight_bytes; }
int64_t Executor::kv_pool_bytes() const {
  return int64_t{impl_->num_blocks} * impl_->bytes_per_block;
}
WeightFormat Executor::lm_head_format() const {
  return impl_->quantize_head ? WeightFormat::kInt8 : impl_->model->lm_head().format;
}
int64_t Executor::decode_weight_bytes() const {
  const LinearWeight& head = impl_->model->lm_head();
  int64_t bytes = impl_->model->decode_weight_bytes();
  if (impl_->quantize_head) {
    bytes += head.rows * head.cols * 1 + head.rows * int64_t{sizeof(float)} - head.stored_bytes();
  }
  return bytes;
}

}  // namespace tern::worker
