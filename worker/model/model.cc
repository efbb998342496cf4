#include "worker/model/model.h"

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
  TERN_ASSIGN_OR_RETURN(model->checkpoint_, SafetensorsCheckpoint::OpenDir(dir));
  TERN_RETURN_IF_ERROR(model->LoadWeights());
  const k::KernelSelection& kernels = k::ActiveSelection();
  if (!kernels.note.empty()) TERN_LOG(Warning) << kernels.note;
  TERN_LOG(Debug) << "model kernels: " << k::IsaName(kernels.isa);
  return model;
}

absl::Status Model::LoadWeights() {
  const ModelConfig& c = config_;
  const int64_t d = c.hidden_size, q_dim = c.q_dim(), kv_dim = c.kv_dim();
  const int64_t ffn = c.intermediate_size, vocab = c.vocab_size;
  const SafetensorsCheckpoint& ck = *checkpoint_;
  TERN_ASSIGN_OR_RETURN(embed_tokens_, ck.GetBf16("model.embed_tokens.weight", {vocab, d}));
  if (c.tie_word_embeddings) {
    lm_head_ = embed_tokens_;
  } else {
    TERN_ASSIGN_OR_RETURN(lm_head_, ck.GetBf16("lm_head.weight", {vocab, d}));
  }
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
    TERN_ASSIGN_OR_RETURN(l.q_proj, ck.GetBf16(p + "self_attn.q_proj.weight", {q_dim, d}));
    TERN_ASSIGN_OR_RETURN(l.k_proj, ck.GetBf16(p + "self_attn.k_proj.weight", {kv_dim, d}));
    TERN_ASSIGN_OR_RETURN(l.v_proj, ck.GetBf16(p + "self_attn.v_proj.weight", {kv_dim, d}));
    TERN_ASSIGN_OR_RETURN(l.o_proj, ck.GetBf16(p + "self_attn.o_proj.weight", {d, q_dim}));
    TERN_ASSIGN_OR_RETURN(l.gate_proj, ck.GetBf16(p + "mlp.gate_proj.weight", {ffn, d}));
    TERN_ASSIGN_OR_RETURN(l.up_proj, ck.GetBf16(p + "mlp.up_proj.weight", {ffn, d}));
    TERN_ASSIGN_OR_RETURN(l.down_proj, ck.GetBf16(p + "mlp.down_proj.weight", {d, ffn}));
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
