#include "cli/bench/bench_llama_cpp.h"

#include "gtest/gtest.h"

namespace tern::cli {
namespace {

TEST(LlamaCppResultTest, ParsesFiguresBuildAndUnavailableBatches) {
  auto figures = ParseLlamaCppResult(
      R"({"llama_cpp":{"repo":"ggml-org/llama.cpp","release":"b1234","build_type":"prebuilt",)"
      R"("node_llama_cpp":"3.22.1","system_info":"AVX2 = 1"},"threads":2,)"
      R"("prefill":{"512":41.5,"2048":30},"decode":{"1":12.5,"32":null},)"
      R"("errors":{"decode_32":"out of memory"}})");
  ASSERT_TRUE(figures.ok()) << figures.status();
  EXPECT_EQ(figures->build,
            "llama.cpp b1234 (ggml-org/llama.cpp), prebuilt binary, node-llama-cpp 3.22.1");
  EXPECT_EQ(figures->system_info, "AVX2 = 1");
  EXPECT_DOUBLE_EQ(figures->prefill_tokens_per_s.at(512), 41.5);
  EXPECT_DOUBLE_EQ(figures->prefill_tokens_per_s.at(2048), 30.0);
  EXPECT_DOUBLE_EQ(figures->decode_tokens_per_s.at(1).value(), 12.5);
  EXPECT_FALSE(figures->decode_tokens_per_s.at(32).has_value());
  EXPECT_EQ(figures->errors.at("decode_32"), "out of memory");
}

TEST(LlamaCppResultTest, RejectsMalformedLines) {
  EXPECT_EQ(ParseLlamaCppResult("not json").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseLlamaCppResult(R"({"prefill":{}})").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      ParseLlamaCppResult(R"({"llama_cpp":{},"prefill":{"x":1},"decode":{}})").status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(LlamaCppBenchTest, MissingNodeIsUnavailable) {
  LlamaCppBenchOptions options;
  options.node = "/nonexistent/node";
  options.script = "x.mjs";
  options.gguf = "x.gguf";
  EXPECT_EQ(RunLlamaCppBench(options).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace tern::cli
