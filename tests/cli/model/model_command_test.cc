#include "cli/model/model_command.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cli/runtime_files.h"

namespace tern::cli {
namespace {

namespace fs = std::filesystem;

class ModelCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("tern-model-command-" + std::to_string(::getpid()));
    fs::create_directories(root_ / "tok");
    // A minimal tokenizer whose ids fit the tiny preset's vocabulary.
    std::ofstream(root_ / "tok" / "tokenizer.json")
        << R"({"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]},)"
        << R"("added_tokens":[{"id":128000,"content":"<|begin_of_text|>","special":true},)"
        << R"({"id":128009,"content":"<|eot_id|>","special":true}]})";
    std::ofstream(root_ / "tok" / "tokenizer_config.json")
        << R"({"bos_token":"<|begin_of_text|>","eos_token":"<|eot_id|>"})";
    std::ofstream(root_ / "template.jinja") << "{{ bos_token }}";
    unsetenv("TERN_TOKENIZER_DIR");
    unsetenv("TERN_CHAT_TEMPLATE");
  }
  void TearDown() override {
    unsetenv("TERN_TOKENIZER_DIR");
    unsetenv("TERN_CHAT_TEMPLATE");
    fs::remove_all(root_);
  }

  static int Run(std::vector<std::string> args) {
    args.insert(args.begin(), {"tern", "model"});
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    return RunModelCommand(static_cast<int>(argv.size()), argv.data(), 2);
  }

  fs::path root_;
};

TEST_F(ModelCommandTest, SynthTakesTokenizerAndTemplateFromFlags) {
  const fs::path out = root_ / "tiny";
  EXPECT_EQ(Run({"synth", "--preset", "tiny", "--out", out.string(), "--no-gguf", "--tokenizer-dir",
                 (root_ / "tok").string(), "--chat-template", (root_ / "template.jinja").string()}),
            0);
  EXPECT_TRUE(fs::exists(out / "config.json"));
  std::ifstream config(out / "tokenizer_config.json");
  const std::string text((std::istreambuf_iterator<char>(config)), {});
  EXPECT_NE(text.find("{{ bos_token }}"), std::string::npos) << text;
}

TEST_F(ModelCommandTest, SynthTakesTokenizerAndTemplateFromTheEnvironment) {
  setenv("TERN_TOKENIZER_DIR", (root_ / "tok").c_str(), 1);
  setenv("TERN_CHAT_TEMPLATE", (root_ / "template.jinja").c_str(), 1);
  EXPECT_EQ(Run({"synth", "--preset", "tiny", "--out", (root_ / "env").string(), "--no-gguf"}), 0);
  EXPECT_TRUE(fs::exists(root_ / "env" / "config.json"));
}

TEST_F(ModelCommandTest, SynthWithoutTokenizerFilesFailsAndWritesNothing) {
  EXPECT_EQ(Run({"synth", "--preset", "tiny", "--out", (root_ / "none").string(), "--no-gguf",
                 "--chat-template", (root_ / "template.jinja").string()}),
            2);
  EXPECT_FALSE(fs::exists(root_ / "none"));
  setenv("TERN_TOKENIZER_DIR", (root_ / "missing").c_str(), 1);
  EXPECT_EQ(Run({"synth", "--preset", "tiny", "--out", (root_ / "none").string(), "--no-gguf"}), 2);
  EXPECT_FALSE(fs::exists(root_ / "none"));
}

TEST(RuntimeFilesTest, FlagThenEnvironmentThenInstalledCopy) {
  const fs::path dir =
      fs::temp_directory_path() / ("tern-runtime-files-" + std::to_string(::getpid()));
  fs::create_directories(dir / "share" / "chat_templates");
  std::ofstream(dir / "share" / "chat_templates" / "llama-3.1-instruct.jinja") << "x";
  std::ofstream(dir / "flag.jinja") << "x";
  std::ofstream(dir / "env.jinja") << "x";
  const RuntimeFile file = ChatTemplateFile();
  const std::string share = (dir / "share").string();
  EXPECT_EQ(
      *FindRuntimeFile(file, (dir / "flag.jinja").string(), (dir / "env.jinja").string(), share),
      (dir / "flag.jinja").string());
  EXPECT_EQ(*FindRuntimeFile(file, std::nullopt, (dir / "env.jinja").string(), share),
            (dir / "env.jinja").string());
  EXPECT_EQ(*FindRuntimeFile(file, std::nullopt, std::nullopt, share),
            (dir / "share" / "chat_templates" / "llama-3.1-instruct.jinja").string());
  // An empty variable counts as unset.
  EXPECT_TRUE(FindRuntimeFile(file, std::nullopt, std::string(), share).ok());
  fs::remove_all(dir);
}

TEST(RuntimeFilesTest, MissingFilesNameTheFlagAndTheVariable) {
  const RuntimeFile file = SynthTokenizerDir();
  auto none = FindRuntimeFile(file, std::nullopt, std::nullopt, "/no/such/share");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find("--tokenizer-dir DIR"), std::string::npos);
  EXPECT_NE(none.status().message().find("TERN_TOKENIZER_DIR"), std::string::npos);
  auto flag = FindRuntimeFile(file, std::string("/no/such/dir"), std::nullopt, "");
  EXPECT_EQ(flag.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(flag.status().message().find("--tokenizer-dir DIR names '/no/such/dir'"),
            std::string::npos);
  auto env = FindRuntimeFile(file, std::nullopt, std::string("/no/such/dir"), "");
  EXPECT_EQ(env.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(env.status().message().find("TERN_TOKENIZER_DIR names '/no/such/dir'"),
            std::string::npos);
}

TEST(RuntimeFilesTest, InstalledDataSitsBesideTheBinFolder) {
  // This test program is not in a bin/ folder, but the rule is the same:
  // the executable's folder's parent, then share/tern.
  const std::string dir = InstalledDataDir();
  ASSERT_FALSE(dir.empty());
  EXPECT_EQ(fs::path(dir).filename(), "tern");
  EXPECT_EQ(fs::path(dir).parent_path().filename(), "share");
}

TEST_F(ModelCommandTest, SynthAndQuantizeWriteQuantizedCheckpoints) {
  const std::string tok = (root_ / "tok").string(), tmpl = (root_ / "template.jinja").string();
  const fs::path bf16 = root_ / "bf16", int8 = root_ / "int8", fp8 = root_ / "fp8";
  ASSERT_EQ(Run({"synth", "--preset", "tiny", "--out", bf16.string(), "--no-gguf",
                 "--tokenizer-dir", tok, "--chat-template", tmpl}),
            0);
  EXPECT_EQ(Run({"quantize", "--model", bf16.string(), "--out", int8.string(), "--format", "int8"}),
            0);
  EXPECT_EQ(Run({"inspect", int8.string()}), 0);
  std::ifstream config(int8 / "config.json");
  const std::string text((std::istreambuf_iterator<char>(config)), {});
  EXPECT_NE(text.find("\"pack-quantized\""), std::string::npos) << text;
  EXPECT_TRUE(fs::exists(int8 / "tokenizer.json"));
  EXPECT_FALSE(fs::exists(int8 / "model.gguf"));  // only with --gguf
  // synth --dtype writes the quantized checkpoint and its GGUF directly.
  EXPECT_EQ(
      Run({"synth", "--preset", "tiny", "--out", fp8.string(), "--dtype", "fp8", "--scale",
           "tensor", "--layout", "modelopt", "--tokenizer-dir", tok, "--chat-template", tmpl}),
      0);
  EXPECT_TRUE(fs::exists(fp8 / "hf_quant_config.json"));
  EXPECT_TRUE(fs::exists(fp8 / "model.gguf"));
  EXPECT_FALSE(fs::exists(fp8 / ".bf16-source"));
  EXPECT_EQ(Run({"inspect", fp8.string()}), 0);
}

TEST_F(ModelCommandTest, QuantizeRejectsBadArguments) {
  const std::string out = (root_ / "out").string();
  EXPECT_EQ(Run({"quantize", "--out", out, "--format", "int8"}), 2);  // no --model
  EXPECT_EQ(Run({"quantize", "--model", out, "--out", out, "--format", "int4"}), 2);
  EXPECT_EQ(
      Run({"quantize", "--model", out, "--out", out, "--format", "int8", "--scale", "tensor"}), 2);
  EXPECT_EQ(
      Run({"quantize", "--model", out, "--out", out, "--format", "fp8", "--layout", "modelopt"}),
      2);  // ModelOpt is per tensor
  EXPECT_EQ(
      Run({"quantize", "--model", (root_ / "missing").string(), "--out", out, "--format", "fp8"}),
      1);
}

}  // namespace
}  // namespace tern::cli
