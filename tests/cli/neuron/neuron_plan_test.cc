// One test per rule of `tern neuron plan` (each violation names its fields),
// and AWS's published Llama 3.3 70B FP8 recipe for vLLM Neuron reproduced
// from a tern config. The recipe is the reference; the plan itself is
// unverified on hardware.
#include "cli/neuron/neuron_plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/neuron/neuron_plan_printer.h"
#include "common/config.h"

namespace tern::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

// The recipe of trainium2.md §1.1 (SDK vllm-neuron/docs/tutorials/tutorial-llama3-70b.md)
// as tern.yaml, keys spelled out where the defaults would give the same.
constexpr char kRecipeYaml[] = R"(
model:
  path: nvidia/Llama-3.3-70B-Instruct-FP8
  max_model_len: 16384
neuron:
  instance_type: trn2.48xlarge
  lnc: 2
  tp: 16
  max_num_seqs: 8
  block_size: 128
  optimization_level: 2
  prefill_buckets: [8192]
  num_seqs_buckets: [8]
  fp8: true
)";

ClusterConfig RecipeConfig() {
  absl::StatusOr<ClusterConfig> config = ParseClusterConfig(kRecipeYaml);
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : ClusterConfig();
}

// The plan must fail with INVALID_ARGUMENT naming every one of `fields`.
void ExpectRejectedNaming(const ClusterConfig& config, std::initializer_list<const char*> fields,
                          const CheckpointFacts& checkpoint = {}) {
  absl::StatusOr<NeuronPlan> plan = PlanNeuronServers(config, checkpoint);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  for (const char* field : fields) EXPECT_THAT(plan.status().message(), HasSubstr(field));
}

std::string FlagValue(const NeuronServer& server, const std::string& flag) {
  for (size_t i = 0; i + 1 < server.argv.size(); ++i) {
    if (server.argv[i] == flag) return server.argv[i + 1];
  }
  return "";
}

std::string Env(const NeuronServer& server, const std::string& name) {
  for (const auto& [key, value] : server.env) {
    if (key == name) return value;
  }
  return "";
}

CheckpointFacts Checkpoint(bool fp8, int32_t max_position_embeddings = 131072) {
  CheckpointFacts facts;
  facts.has_config = true;
  facts.fp8 = fp8;
  facts.quantization = fp8 ? "modelopt FP8" : "none";
  facts.max_position_embeddings = max_position_embeddings;
  return facts;
}

TEST(NeuronPlanTest, ReproducesAwsLlama33_70bFp8Recipe) {
  absl::StatusOr<NeuronPlan> plan = PlanNeuronServers(RecipeConfig(), CheckpointFacts());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->servers.size(), 4u);
  EXPECT_THAT(
      plan->servers[0].argv,
      ElementsAre("vllm", "serve", "nvidia/Llama-3.3-70B-Instruct-FP8", "--tensor-parallel-size",
                  "16", "--enable-prefix-caching", "--max-model-len", "16384",
                  "--max-num-batched-tokens", "8192", "--max-num-seqs", "8", "--block-size", "128",
                  "--optimization-level", "2", "--additional-config",
                  R"({"neuron_config":{"kv_segment_size_buckets":[8192],)"
                  R"("num_batched_tokens_buckets":[8192],"num_seqs_buckets":[8],)"
                  R"("fp8_packed_kv":true}})",
                  "--served-model-name", "Llama-3.3-70B-Instruct-FP8", "--host", "127.0.0.1",
                  "--port", "8100", "--kv-events-config",
                  R"({"enable_kv_cache_events":true,"publisher":"zmq",)"
                  R"("endpoint":"tcp://*:5557","replay_endpoint":"tcp://*:5657"})"));
  EXPECT_THAT(
      plan->servers[0].env,
      ElementsAre(Pair("NEURON_RT_VISIBLE_CORES", "0-15"), Pair("NEURON_LOGICAL_NC_CONFIG", "2"),
                  Pair("PYTHONHASHSEED", "42"), Pair("VLLM_CACHE_ROOT", "/var/cache/tern/vllm"),
                  Pair("VLLM_NEURON_COMPILATION_TIMEOUT", "1200"),
                  Pair("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "1200")));
}

// Rule: servers × TP = the logical NeuronCores at the LNC; one core range each.
TEST(NeuronPlanTest, ServersTimesTpFillTheLogicalCores) {
  absl::StatusOr<NeuronPlan> plan = PlanNeuronServers(RecipeConfig(), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->logical_cores, 64);
  const char* ranges[] = {"0-15", "16-31", "32-47", "48-63"};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(plan->servers[i].visible_cores, ranges[i]);
    EXPECT_EQ(Env(plan->servers[i], "NEURON_RT_VISIBLE_CORES"), ranges[i]);
  }
  ClusterConfig lnc1 = RecipeConfig();
  lnc1.neuron.lnc = 1;
  lnc1.neuron.tp = 32;
  plan = PlanNeuronServers(lnc1, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->logical_cores, 128);
  ASSERT_EQ(plan->servers.size(), 4u);
  EXPECT_EQ(plan->servers[3].visible_cores, "96-127");
  EXPECT_EQ(Env(plan->servers[3], "NEURON_LOGICAL_NC_CONFIG"), "1");

  ClusterConfig three = RecipeConfig();
  three.neuron.servers = 3;
  ExpectRejectedNaming(three, {"neuron.servers", "neuron.tp", "neuron.lnc", "64"});
  ClusterConfig uneven = RecipeConfig();
  uneven.neuron.tp = 24;
  ExpectRejectedNaming(uneven, {"neuron.tp", "neuron.lnc", "does not divide"});
  ClusterConfig zero = RecipeConfig();
  zero.neuron.tp = 0;
  ExpectRejectedNaming(zero, {"neuron.tp"});
}

TEST(NeuronPlanTest, OnlyTrn2WithLnc1Or2) {
  ClusterConfig other = RecipeConfig();
  other.neuron.instance_type = "trn1.32xlarge";
  ExpectRejectedNaming(other, {"neuron.instance_type", "trn1.32xlarge"});
  ClusterConfig lnc = RecipeConfig();
  lnc.neuron.lnc = 4;
  ExpectRejectedNaming(lnc, {"neuron.lnc"});
}

// Rule: --max-num-batched-tokens is the last prefill bucket.
TEST(NeuronPlanTest, MaxNumBatchedTokensIsTheLastPrefillBucket) {
  ClusterConfig config = RecipeConfig();
  config.neuron.prefill_buckets = {2048, 4096};
  absl::StatusOr<NeuronPlan> plan = PlanNeuronServers(config, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(FlagValue(plan->servers[0], "--max-num-batched-tokens"), "4096");
  config.neuron.max_num_batched_tokens = 4096;
  EXPECT_TRUE(PlanNeuronServers(config, {}).ok());
  config.neuron.max_num_batched_tokens = 8192;
  ExpectRejectedNaming(config, {"neuron.max_num_batched_tokens", "neuron.prefill_buckets"});
}

// Rule: the KV segment buckets are the prefill buckets.
TEST(NeuronPlanTest, SegmentBucketsEqualPrefillBuckets) {
  ClusterConfig config = RecipeConfig();
  config.neuron.prefill_buckets = {2048, 8192};
  config.neuron.kv_segment_size_buckets = {2048, 8192};
  absl::StatusOr<NeuronPlan> plan = PlanNeuronServers(config, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  const auto neuron_config =
      nlohmann::json::parse(FlagValue(plan->servers[0], "--additional-config"))["neuron_config"];
  EXPECT_EQ(neuron_config["kv_segment_size_buckets"], neuron_config["num_batched_tokens_buckets"]);
  config.neuron.kv_segment_size_buckets = {4096};
  ExpectRejectedNaming(config, {"neuron.kv_segment_size_buckets", "neuron.prefill_buckets"});
}

// Rule: each bucket is divisible by the block size, within 512–8192, ascending.
TEST(NeuronPlanTest, PrefillBucketsFitTheBlockSizeAndRange) {
  ClusterConfig config = RecipeConfig();
  config.neuron.prefill_buckets = {1000};
  ExpectRejectedNaming(config, {"neuron.prefill_buckets", "neuron.block_size", "1000"});
  config.neuron.prefill_buckets = {256};
  ExpectRejectedNaming(config, {"neuron.prefill_buckets", "512", "8192"});
  config.neuron.prefill_buckets = {16384};
  ExpectRejectedNaming(config, {"neuron.prefill_buckets", "16384"});
  config.neuron.prefill_buckets = {8192, 4096};
  ExpectRejectedNaming(config, {"neuron.prefill_buckets", "ascending"});
  config.neuron.prefill_buckets = {};
  ExpectRejectedNaming(config, {"neuron.prefill_buckets"});
  config = RecipeConfig();
  config.neuron.block_size = 0;
  ExpectRejectedNaming(config, {"neuron.block_size"});
}

// Rule: num_seqs_buckets cover --max-num-seqs.
TEST(NeuronPlanTest, NumSeqsBucketsCoverMaxNumSeqs) {
  ClusterConfig config = RecipeConfig();
  config.neuron.num_seqs_buckets = {1, 4, 8};
  absl::StatusOr<NeuronPlan> plan = PlanNeuronServers(config, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(FlagValue(plan->servers[0], "--additional-config"),
              HasSubstr(R"("num_seqs_buckets":[1,4,8])"));
  config.neuron.num_seqs_buckets = {};
  config.neuron.max_num_seqs = 16;
  plan = PlanNeuronServers(config, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(FlagValue(plan->servers[0], "--additional-config"),
              HasSubstr(R"("num_seqs_buckets":[16])"));
  config.neuron.num_seqs_buckets = {4};
  ExpectRejectedNaming(config, {"neuron.num_seqs_buckets", "neuron.max_num_seqs"});
  config.neuron.max_num_seqs = 0;
  ExpectRejectedNaming(config, {"neuron.max_num_seqs"});
}

// Rule: --max-model-len covers the gateway's context limit, model.max_model_len.
TEST(NeuronPlanTest, MaxModelLenCoversTheGatewayContextLimit) {
  ClusterConfig config = RecipeConfig();
  absl::StatusOr<NeuronPlan> plan = PlanNeuronServers(config, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->gateway_max_model_len, 16384);
  config.neuron.max_model_len = 32768;
  plan = PlanNeuronServers(config, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(FlagValue(plan->servers[0], "--max-model-len"), "32768");
  config.neuron.max_model_len = 8192;
  ExpectRejectedNaming(config, {"neuron.max_model_len", "model.max_model_len", "gateway"});
  config.neuron.max_model_len = 0;
  config.model.max_model_len = 0;
  ExpectRejectedNaming(config, {"model.max_model_len", "gateway"});
  config.model.max_model_len = 16384;
  ExpectRejectedNaming(config, {"model.max_model_len", "max_position_embeddings"},
                       Checkpoint(/*fp8=*/true, /*max_position_embeddings=*/8192));
}

// Rule: an FP8 (ModelOpt) checkpoint gets fp8_packed_kv, and never --quantization.
TEST(NeuronPlanTest, Fp8CheckpointGetsPackedKvAndNoQuantizationFlag) {
  ClusterConfig config = RecipeConfig();
  config.neuron.fp8 = "auto";
  for (bool fp8 : {true, false}) {
    absl::StatusOr<NeuronPlan> plan = PlanNeuronServers(config, Checkpoint(fp8));
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->fp8, fp8);
    EXPECT_EQ(plan->fp8_source, "model.path/config.json");
    EXPECT_THAT(FlagValue(plan->servers[0], "--additional-config"),
                HasSubstr(fp8 ? R"("fp8_packed_kv":true)" : R"("fp8_packed_kv":false)"));
    for (const std::string& arg : plan->servers[0].argv) {
      EXPECT_THAT(arg, ::testing::Not(HasSubstr("--quantization")));
    }
  }
  ExpectRejectedNaming(config, {"neuron.fp8", "model.path", "config.json"});
  config.neuron.fp8 = "false";
  ExpectRejectedNaming(config, {"neuron.fp8", "model.path/config.json", "modelopt FP8"},
                       Checkpoint(true));
  config.neuron.fp8 = "true";
  ExpectRejectedNaming(config, {"neuron.fp8", "model.path/config.json"}, Checkpoint(false));
  config.neuron.extra_args = {"--quantization=fp8"};
  ExpectRejectedNaming(config, {"neuron.extra_args", "--quantization", "neuron.fp8"});
}

// Rule: KV events on, with distinct ports per server, and the endpoints the
// tern worker subscribes to.
TEST(NeuronPlanTest, KvEventsPerServerOnDistinctPorts) {
  absl::StatusOr<NeuronPlan> plan = PlanNeuronServers(RecipeConfig(), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (int i = 0; i < 4; ++i) {
    const NeuronServer& server = plan->servers[i];
    const auto events = nlohmann::json::parse(FlagValue(server, "--kv-events-config"));
    EXPECT_EQ(events["enable_kv_cache_events"], true);
    EXPECT_EQ(events["publisher"], "zmq");
    EXPECT_EQ(events["endpoint"], "tcp://*:" + std::to_string(5557 + i));
    EXPECT_EQ(events["replay_endpoint"], "tcp://*:" + std::to_string(5657 + i));
    EXPECT_EQ(server.kv_events_endpoint, "tcp://127.0.0.1:" + std::to_string(5557 + i));
    EXPECT_EQ(server.kv_replay_endpoint, "tcp://127.0.0.1:" + std::to_string(5657 + i));
    EXPECT_EQ(FlagValue(server, "--port"), std::to_string(8100 + i));
    EXPECT_EQ(server.url, "http://127.0.0.1:" + std::to_string(8100 + i));
  }
  ClusterConfig overlap = RecipeConfig();
  overlap.neuron.kv_replay_port = 5559;  // 5557..5560 and 5559..5562 overlap
  ExpectRejectedNaming(overlap, {"neuron.kv_events_port", "neuron.kv_replay_port"});
  ClusterConfig out_of_range = RecipeConfig();
  out_of_range.neuron.port = 65534;
  ExpectRejectedNaming(out_of_range, {"neuron.port"});
  ClusterConfig any_host = RecipeConfig();
  any_host.neuron.host = "0.0.0.0";
  plan = PlanNeuronServers(any_host, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(FlagValue(plan->servers[1], "--host"), "0.0.0.0");
  EXPECT_EQ(plan->servers[1].kv_events_endpoint, "tcp://127.0.0.1:5558");
}

// Rule: PYTHONHASHSEED pinned alike on every server; the compile cache shared.
TEST(NeuronPlanTest, HashSeedPinnedAndCompileCacheShared) {
  ClusterConfig config = RecipeConfig();
  config.neuron.remote_cache = "/mnt/fsx/neuron-cache";
  absl::StatusOr<NeuronPlan> plan = PlanNeuronServers(config, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (const NeuronServer& server : plan->servers) {
    EXPECT_EQ(Env(server, "PYTHONHASHSEED"), "42");
    EXPECT_EQ(Env(server, "VLLM_CACHE_ROOT"), "/var/cache/tern/vllm");
    EXPECT_EQ(Env(server, "NEURON_LIBTORCH_REMOTE_CACHE"), "/mnt/fsx/neuron-cache");
  }
  config.neuron.cache_root = "cache";
  ExpectRejectedNaming(config, {"neuron.cache_root"});
}

// Rule: extra_args cannot repeat a flag the plan derives.
TEST(NeuronPlanTest, ExtraArgsCannotOverrideDerivedFlags) {
  ClusterConfig config = RecipeConfig();
  config.neuron.extra_args = {"--num-gpu-blocks-override", "512"};
  absl::StatusOr<NeuronPlan> plan = PlanNeuronServers(config, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->servers[0].argv.back(), "512");
  config.neuron.extra_args = {"--block-size=32"};
  ExpectRejectedNaming(config, {"neuron.extra_args", "--block-size"});
  config = RecipeConfig();
  config.neuron.optimization_level = 5;
  ExpectRejectedNaming(config, {"neuron.optimization_level"});
  config = RecipeConfig();
  config.model.path = "";
  ExpectRejectedNaming(config, {"model.path"});
}

TEST(NeuronPlanTest, ReportsEveryBrokenRuleAtOnce) {
  ClusterConfig config = RecipeConfig();
  config.neuron.servers = 2;
  config.neuron.kv_segment_size_buckets = {4096};
  config.neuron.num_seqs_buckets = {4};
  config.neuron.fp8 = "auto";
  absl::StatusOr<NeuronPlan> plan = PlanNeuronServers(config, {});
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(plan.status().message(), HasSubstr("breaks 4 rules"));
  for (const char* field : {"neuron.servers", "neuron.kv_segment_size_buckets",
                            "neuron.num_seqs_buckets", "neuron.fp8"}) {
    EXPECT_THAT(plan.status().message(), HasSubstr(field));
  }
}

TEST(NeuronPlanTest, ReadsQuantizationFromTheCheckpointConfig) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / "neuron_plan_test_checkpoint";
  std::filesystem::create_directories(dir);
  {
    std::ofstream(dir / "config.json") << R"({"max_position_embeddings": 131072,
        "quantization_config": {"quant_method": "modelopt", "quant_algo": "FP8",
                                "kv_cache_quant_algo": "FP8"}})";
  }
  absl::StatusOr<CheckpointFacts> facts = ReadCheckpointFacts(dir.string());
  ASSERT_TRUE(facts.ok()) << facts.status();
  EXPECT_TRUE(facts->has_config);
  EXPECT_TRUE(facts->fp8);
  EXPECT_EQ(facts->quantization, "modelopt FP8");
  EXPECT_EQ(facts->max_position_embeddings, 131072);
  { std::ofstream(dir / "config.json") << R"({"max_position_embeddings": 8192})"; }
  facts = ReadCheckpointFacts(dir.string());
  ASSERT_TRUE(facts.ok()) << facts.status();
  EXPECT_FALSE(facts->fp8);
  { std::ofstream(dir / "config.json") << "{not json"; }
  EXPECT_EQ(ReadCheckpointFacts(dir.string()).status().code(), absl::StatusCode::kInvalidArgument);
  std::filesystem::remove_all(dir);
  facts = ReadCheckpointFacts(dir.string());
  ASSERT_TRUE(facts.ok());
  EXPECT_FALSE(facts->has_config);
}

TEST(NeuronPlanPrinterTest, TextIsShellAndJsonHasArgvAndEnv) {
  absl::StatusOr<NeuronPlan> plan = PlanNeuronServers(RecipeConfig(), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  const std::string text = RenderNeuronPlanText(*plan);
  EXPECT_THAT(text, HasSubstr("UNVERIFIED ON HARDWARE"));
  EXPECT_THAT(text, HasSubstr("NEURON_RT_VISIBLE_CORES=48-63 \\\n"));
  EXPECT_THAT(text, HasSubstr("--additional-config '{\"neuron_config\":"));
  EXPECT_THAT(text, HasSubstr("model.max_model_len = 16384"));
  const auto json = nlohmann::json::parse(RenderNeuronPlanJson(*plan));
  EXPECT_EQ(json["unverified_on_hardware"], true);
  ASSERT_EQ(json["servers"].size(), 4u);
  EXPECT_EQ(json["servers"][0]["argv"].get<std::vector<std::string>>(), plan->servers[0].argv);
  EXPECT_EQ(json["servers"][2]["env"]["NEURON_RT_VISIBLE_CORES"], "32-47");
  EXPECT_EQ(json["servers"][3]["kv_replay_endpoint"], "tcp://127.0.0.1:5660");
  EXPECT_EQ(ShellQuote("it's"), "'it'\\''s'");
  EXPECT_EQ(ShellQuote("--port"), "--port");
}

}  // namespace
}  // namespace tern::cli
