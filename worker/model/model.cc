#include "worker/model/model.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "kernels/dispatch.h"
#include "kernels/reference.h"

namespace tern::worker {
namespace {

namespace k = ::tern::kernels;

std::vector<float> ToFloat(absl::Span<const uint16_t> bf16) {
  std::vector<float> out(bf16.size());
  for (size_t i = 0; i < bf16.size(); ++i) out[i] = k::Bf16ToFloat(bf16[i]);
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& dir) {
  auto model = std::unique_ptr<Model>(new Model());
  TERN_ASSIGN_OR_RETURN(model->config_, LoadModelConfig(dir));
  TERN_ASSIGN_OR_RETURN(model->quantization_, LoadQuantizationConfig(dir));
  TERN_ASSIGN_OR_RETURN(model->checkpoint_, SafetensorsCheckpoint::OpenDir(dir));
  TERN_RETURN_IF_ERROR(model->LoadWeights());
  const k::KernelSelection& kernels = k::ActiveSelection();
  if (!kernels.note.empty()) TERN_LOG(Warning) << kernels.note;
  TERN_LOG(Debug) << "model kernels: " << k::IsaName(kernels.isa) << ", weights "
                  << WeightFormatName(model->weight_format_);
  return model;
}

absl::StatusOr<LinearWeight> Model::LoadLinear(const std::string& name, int64_t rows,
                                               int64_t cols) {
  const SafetensorsCheckpoint& ck = *checkpoint_;
  LinearWeight w;
  w.rows = rows;
  w.cols = cols;
  const std::string weight = name + ".weight", packed = name + ".weight_packed";
  auto needs_config = [&](WeightFormat f, const std::string& tensor) -> absl::Status {
    if (quantization_.layout == QuantLayout::kNone || quantization_.format != f) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", tensor, " holds ", WeightFormatName(f),
                       " weights but the checkpoint's quantization config declares ",
                       quantization_.layout == QuantLayout::kNone
                           ? std::string("none")
                           : absl::StrCat(QuantLayoutName(quantization_.layout), " ",
                                          WeightFormatName(quantization_.format))));
    }
    if (quantization_.Ignores(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", tensor, " holds ", WeightFormatName(f),
                       " weights but the quantization config lists ", name, " as unquantized"));
    }
    return absl::OkStatus();
  };
  if (ck.Contains(packed)) {
    w.format = WeightFormat::kInt8;
    TERN_RETURN_IF_ERROR(needs_config(w.format, packed));
    if (cols % 4 != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(packed, ": ", cols, " columns do not pack into whole int32 words"));
    }
    TERN_ASSIGN_OR_RETURN(w.bytes, ck.GetRaw(packed, TensorDType::kI32, {rows, cols / 4}));
    TERN_ASSIGN_OR_RETURN(auto shape, ck.GetRaw(name + ".weight_shape", TensorDType::kI64, {2}));
    int64_t dims[2];
    std::memcpy(dims, shape.data(), sizeof(dims));
    if (dims[0] != rows || dims[1] != cols) {
      return absl::InvalidArgumentError(absl::StrCat(name, ".weight_shape is [", dims[0], ", ",
                                                     dims[1], "], expected [", rows, ", ", cols,
                                                     "]"));
    }
  } else {
    TERN_ASSIGN_OR_RETURN(const TensorInfo* info, ck.Info(weight));
    if (info->stored_dtype != TensorDType::kF8E4M3) {
      TERN_ASSIGN_OR_RETURN(w.bf16, ck.GetBf16(weight, {rows, cols}));
      return w;
    }
    w.format = WeightFormat::kFp8;
    TERN_RETURN_IF_ERROR(needs_config(w.format, weight));
    TERN_ASSIGN_OR_RETURN(w.bytes, ck.GetRaw(weight, TensorDType::kF8E4M3, {rows, cols}));
  }
  const std::string scale_name = name + ".weight_scale";
  TERN_ASSIGN_OR_RETURN(const TensorInfo* scale_info, ck.Info(scale_name));
  TERN_ASSIGN_OR_RETURN(std::vector<float> scales, ck.GetFloats(scale_name));
  // Per tensor: shape [] or [1]; per row: [rows] or [rows, 1]. Anything else
  // (per-group, block-wise [rows / b, cols / b]) the kernels cannot apply.
  const std::vector<int64_t>& s = scale_info->shape;
  const bool per_tensor = scales.size() == 1 && (s.empty() || s == std::vector<int64_t>{1});
  const bool per_row = static_cast<int64_t>(scales.size()) == rows &&
                       (s == std::vector<int64_t>{rows} || s == std::vector<int64_t>{rows, 1});
  if (!per_tensor && !per_row) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", scale_name, " has shape ", ShapeToString(s),
                     "; expected a per-tensor [] / [1] or per-channel [", rows, "] / [", rows,
                     ", 1] scale (group and block-wise scales are not supported)"));
  }
  for (float v : scales) {
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", scale_name, " holds ", v));
    }
  }
  w.row_scales =
      per_tensor ? std::vector<float>(static_cast<size_t>(rows), scales[0]) : std::move(scales);
  return w;
}

absl::Status Model::LoadWeights() {
  const ModelConfig& c = config_;
  const int64_t d = c.hidden_size, q_dim = c.q_dim(), kv_dim = c.kv_dim();
  const int64_t ffn = c.intermediate_size, vocab = c.vocab_size;
  const SafetensorsCheckpoint& ck = *checkpoint_;
  // Embeddings stay in bf16 (every layout leaves them unquantized); GetBf16
  // names the tensor if they are not. An untied lm_head loads like a linear
  // layer: bf16, or 8-bit where the quantization config covers it.
  TERN_ASSIGN_OR_RETURN(embed_tokens_, ck.GetBf16("model.embed_tokens.weight", {vocab, d}));
  if (c.tie_word_embeddings) {
    lm_head_.rows = vocab;
    lm_head_.cols = d;
    lm_head_.bf16 = embed_tokens_;
  } else {
    TERN_ASSIGN_OR_RETURN(lm_head_, LoadLinear("lm_head", vocab, d));
  }
  decode_weight_bytes_ = lm_head_.stored_bytes() + d * 4;
  TERN_ASSIGN_OR_RETURN(auto final_norm, ck.GetBf16("model.norm.weight", {d}));
  final_norm_ = ToFloat(final_norm);
  layers_.resize(c.num_hidden_layers);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    Layer& l = layers_[i];
    TERN_ASSIGN_OR_RETURN(auto in_norm, ck.GetBf16(p + "input_layernorm.weight", {d}));
    TERN_ASSIGN_OR_RETURN(auto post_norm, ck.GetBf16(p + "post_attention_layernorm.weight", {d}));
    l.input_norm = ToFloat(in_norm);
    l.post_attention_norm = ToFloat(post_norm);
    TERN_ASSIGN_OR_RETURN(l.q, LoadLinear(p + "self_attn.q_proj", q_dim, d));
    TERN_ASSIGN_OR_RETURN(l.k, LoadLinear(p + "self_attn.k_proj", kv_dim, d));
    TERN_ASSIGN_OR_RETURN(l.v, LoadLinear(p + "self_attn.v_proj", kv_dim, d));
    TERN_ASSIGN_OR_RETURN(l.o, LoadLinear(p + "self_attn.o_proj", d, q_dim));
    TERN_ASSIGN_OR_RETURN(l.gate, LoadLinear(p + "mlp.gate_proj", ffn, d));
    TERN_ASSIGN_OR_RETURN(l.up, LoadLinear(p + "mlp.up_proj", ffn, d));
    TERN_ASSIGN_OR_RETURN(l.down, LoadLinear(p + "mlp.down_proj", d, ffn));
    std::pair<LinearWeight*, absl::Span<const uint16_t>*> views[] = {
        {&l.q, &l.q_proj},       {&l.k, &l.k_proj},   {&l.v, &l.v_proj},      {&l.o, &l.o_proj},
        {&l.gate, &l.gate_proj}, {&l.up, &l.up_proj}, {&l.down, &l.down_proj}};
    for (auto& [linear, bf16] : views) {
      *bf16 = linear->bf16;
      decode_weight_bytes_ += linear->stored_bytes();
      if (linear->format != WeightFormat::kBf16) weight_format_ = linear->format;
    }
    decode_weight_bytes_ += 2 * d * 4;
  }
  inv_freq_.resize(c.head_dim / 2);
  k::Llama3RopeScaling llama3{c.rope_scaling.factor, c.rope_scaling.low_freq_factor,
                              c.rope_scaling.high_freq_factor,
                              static_cast<double>(c.rope_scaling.original_max_position_embeddings)};
  k::RopeInvFreq(c.head_dim, c.rope_theta, c.llama3_rope() ? &llama3 : nullptr,
                 absl::MakeSpan(inv_freq_));
  return absl::OkStatus();
}

}  // namespace tern::worker
