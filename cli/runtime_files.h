// Where `tern` finds the files it reads at run time (tokenizer files, the
// chat template, the llama.cpp benchmark script). It never looks in a source
// tree: a file is named by its flag, else by its environment variable, else
// it is the copy installed with tern, under <prefix>/share/tern for
// <prefix>/bin/tern (a build folder has the same layout: <build>/share/tern
// beside <build>/bin). When none of these gives an existing path, the error
// says which flag and variable to set.
//
// Thread contract: thread-safe (reads the environment and /proc/self/exe).
#ifndef TERN_CLI_RUNTIME_FILES_H_
#define TERN_CLI_RUNTIME_FILES_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/flags.h"

namespace tern::cli {

// A file or folder tern needs, and where it may come from.
struct RuntimeFile {
  // For messages: "the chat template".
  std::string what;
  // The flag without dashes ("chat-template") and its argument ("FILE").
  std::string flag;
  std::string flag_argument;
  // The environment variable ("TERN_CHAT_TEMPLATE").
  std::string env;
  // Path under the installed data folder; empty when tern installs none.
  std::string installed;
  // What the flag names, for the NOT_FOUND message ("a folder with ...").
  std::string hint;
};

// The chat template of the synthetic demo checkpoints (`tern model synth`).
RuntimeFile ChatTemplateFile();
// Llama 3.1 tokenizer files (tokenizer.json, tokenizer_config.json), for
// `tern model synth --tokenizer-dir`.
RuntimeFile SynthTokenizerDir();
// The benchmark script `tern bench engine` runs llama.cpp with.
RuntimeFile LlamaCppScript();

// <prefix>/share/tern for this executable's <prefix>/bin; empty when the
// executable's path cannot be read.
std::string InstalledDataDir();

// The path of `file`: the flag's value, else the environment variable's,
// else `data_dir`/installed. NOT_FOUND when the path named by the flag or the
// variable does not exist (naming which), or when neither is set and
// nothing is installed (naming both).
absl::StatusOr<std::string> FindRuntimeFile(const RuntimeFile& file,
                                            const std::optional<std::string>& flag_value,
                                            const std::optional<std::string>& env_value,
                                            const std::string& data_dir);
// The same with the flag from `flags`, the variable from the environment and
// InstalledDataDir().
absl::StatusOr<std::string> FindRuntimeFile(const RuntimeFile& file, const Flags& flags);

}  // namespace tern::cli

#endif  // TERN_CLI_RUNTIME_FILES_H_
