#include "common/config.h"

#include <gtest/gtest.h>

namespace tern {
namespace {

TEST(ConfigTest, ParsesSectionsAndKeepsDefaults) {
  auto config = ParseClusterConfig(R"(
model:
  path: /models/llama
router:
  policy: round-robin
  workers: ["127.0.0.1:1", "127.0.0.1:2"]
gateway:
  listen: 127.0.0.1:9000
)");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model.path, "/models/llama");
  EXPECT_EQ(config->router.workers.size(), 2u);
  EXPECT_EQ(config->gateway.listen, "127.0.0.1:9000");
  EXPECT_EQ(config->gateway.max_body_bytes, 1 << 20);
  EXPECT_EQ(config->worker.kv_block_size, 16);
}

TEST(ConfigTest, RejectsUnknownKeysNamingThem) {
  auto config = ParseClusterConfig("router:\n  polcy: prefix\n");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(config.status().message().find("polcy"), std::string::npos);
}

TEST(ConfigTest, MalformedYamlIsAnErrorNotACrash) {
  EXPECT_FALSE(ParseClusterConfig("model: [unclosed").ok());
  EXPECT_FALSE(ParseClusterConfig("worker:\n  max_num_seqs: many\n").ok());
  EXPECT_FALSE(ParseClusterConfig("worker:\n  max_num_seqs: 0\n").ok());
}

TEST(ConfigTest, MissingFileIsNotFound) {
  EXPECT_EQ(LoadClusterConfig("/nonexistent/tern.yaml").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tern

namespace tern {
namespace {

TEST(ConfigTest, ExampleConfigParses) {
  auto config = LoadClusterConfig(TERN_SOURCE_DIR "/deploy/tern.example.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->gateway.listen, "127.0.0.1:8000");
  EXPECT_EQ(config->router.workers.size(), 1u);
}

}  // namespace
}  // namespace tern

namespace tern {
namespace {

TEST(ConfigTest, DefaultServedModelNameIsTheFolderName) {
  EXPECT_EQ(DefaultServedModelName("models/llama-3"), "llama-3");
  EXPECT_EQ(DefaultServedModelName("models/llama-3/"), "llama-3");
  EXPECT_EQ(DefaultServedModelName("models/llama-3/."), "llama-3");
  EXPECT_EQ(DefaultServedModelName("/abs/x//"), "x");
  EXPECT_EQ(DefaultServedModelName("."), "");
}

}  // namespace
}  // namespace tern
