#include "common/config.h"

#include <gtest/gtest.h>

#include <utility>

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

TEST(ConfigTest, RangeChecksNameTheKey) {
  const std::pair<const char*, const char*> bad[] = {
      {"router:\n  health_timeout_ms: 0\n", "router.health_timeout_ms"},
      {"router:\n  max_retries: -1\n", "router.max_retries"},
      {"gateway:\n  request_timeout_s: 0\n", "gateway.request_timeout_s"},
      {"worker:\n  kv_cache_gib: 0\n", "worker.kv_cache_gib"},
      {"router:\n  max_priority_wait_ms: 0\n", "router.max_priority_wait_ms"},
      {"router:\n  overload_ttft_factor: 0.5\n", "router.overload_ttft_factor"},
      {"gateway:\n  header_timeout_s: 0\n", "gateway.header_timeout_s"},
      {"gateway:\n  body_idle_timeout_s: -1\n", "gateway.body_idle_timeout_s"},
      {"gateway:\n  max_connections: -1\n", "gateway.max_connections"},
      {"gateway:\n  max_connections_per_client: -1\n", "gateway.max_connections_per_client"},
      {"gateway:\n  tls_cert_file: a.pem\n", "gateway.tls_key_file"},
      {"gateway:\n  grpc_listen: nonsense\n", "gateway.grpc_listen"},
      {"gateway:\n  listen: 127.0.0.1:8000\n  grpc_listen: 127.0.0.1:8000\n",
       "gateway.grpc_listen"},
      {"tls:\n  cert_file: a.pem\n", "tls:"},
      {"tls:\n  server_name_override: x\n", "tls.server_name_override"}};
  for (const auto& [yaml, key] : bad) {
    auto config = ParseClusterConfig(yaml);
    ASSERT_FALSE(config.ok()) << yaml;
    EXPECT_NE(config.status().message().find(key), std::string::npos) << config.status();
  }
}

TEST(ConfigTest, FlagOverridesAreValidatedToo) {
  const char* argv[] = {"tern-worker", "--kv-cache-gib", "-1"};
  auto flags = Flags::Parse(3, const_cast<char**>(argv), 1, {"kv-cache-gib"}, {});
  ASSERT_TRUE(flags.ok()) << flags.status();
  ClusterConfig config;
  const absl::Status status =
      LoadConfigWithFlags(*flags, &config, {{"kv-cache-gib", &config.worker.kv_cache_gib}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("worker.kv_cache_gib"), std::string::npos) << status;
}

TEST(ConfigTest, RouterModelPoliciesAndSessionAffinity) {
  auto config = ParseClusterConfig(R"(
router:
  policy: prefix
  session_affinity: false
  workers: ["dns:tern-workers.default.svc:50061"]
  model_policies:
    llama-8b: round-robin
    llama-1b: least-loaded
)");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->router.session_affinity);
  EXPECT_EQ(config->router.dns_refresh_ms, 5000);
  EXPECT_EQ(config->router.registration_lease_ms, 10000);
  ASSERT_EQ(config->router.model_policies.size(), 2u);
  EXPECT_EQ(config->router.model_policies.at("llama-8b"), "round-robin");
  EXPECT_EQ(config->router.model_policies.at("llama-1b"), "least-loaded");
  auto defaults = ParseClusterConfig("router:\n  policy: prefix\n");
  ASSERT_TRUE(defaults.ok());
  EXPECT_TRUE(defaults->router.session_affinity);
  EXPECT_TRUE(defaults->router.model_policies.empty());
  EXPECT_FALSE(ParseClusterConfig("router:\n  dns_refresh_ms: 0\n").ok());
  auto lease = ParseClusterConfig("router:\n  registration_lease_ms: 3000\n");
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(lease->router.registration_lease_ms, 3000);
  auto not_a_map = ParseClusterConfig("router:\n  model_policies: [prefix]\n");
  ASSERT_FALSE(not_a_map.ok());
  EXPECT_NE(not_a_map.status().message().find("model_policies"), std::string::npos);
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

namespace tern {
namespace {

TEST(ConfigTest, NeuronSectionParsesAndRejectsUnknownKeys) {
  auto config = ParseClusterConfig(R"(
neuron:
  lnc: 2
  tp: 16
  prefill_buckets: [4096, 8192]
  fp8: true
  extra_args: ["--num-gpu-blocks-override", "512"]
)");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->neuron.tp, 16);
  EXPECT_EQ(config->neuron.prefill_buckets, (std::vector<int32_t>{4096, 8192}));
  EXPECT_EQ(config->neuron.fp8, "true");
  EXPECT_EQ(config->neuron.extra_args.size(), 2u);
  EXPECT_EQ(config->neuron.block_size, 128);
  auto unknown = ParseClusterConfig("neuron:\n  tensor_parallel: 16\n");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("tensor_parallel"), std::string::npos);
  EXPECT_NE(unknown.status().message().find("neuron"), std::string::npos);
  auto fp8 = ParseClusterConfig("neuron:\n  fp8: maybe\n");
  ASSERT_FALSE(fp8.ok());
  EXPECT_NE(fp8.status().message().find("neuron.fp8"), std::string::npos);
  EXPECT_FALSE(ParseClusterConfig("neuron:\n  servers: -1\n").ok());
}

TEST(ConfigTest, Trn2ExampleConfigParses) {
  auto config = LoadClusterConfig(TERN_SOURCE_DIR "/deploy/trn2.example.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->neuron.instance_type, "trn2.48xlarge");
  EXPECT_EQ(config->model.max_model_len, 16384);
}

}  // namespace
}  // namespace tern
