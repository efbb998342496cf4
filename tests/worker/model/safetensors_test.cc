#include "worker/model/safetensors.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/reference.h"
#include "nlohmann/json.hpp"

namespace tern::worker {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

struct RawTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// A safetensors file's bytes; `pad` extra bytes after the header shift the
// data section (to test unaligned data).
std::string BuildFile(const std::vector<RawTensor>& tensors, size_t pad = 0) {
  nlohmann::json header = {{"__metadata__", {{"format", "pt"}}}};
  std::string data;
  for (const RawTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  std::string h = header.dump() + std::string(pad, ' ');
  uint64_t len = h.size();
  std::string out(reinterpret_cast<const char*>(&len), 8);
  return out + h + data;
}

template <typename T>
std::string Bytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tern-st-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  absl::Status OpenError(const std::string& bytes) {
    return SafetensorsCheckpoint::OpenFile(Write("model.safetensors", bytes)).status();
  }

  fs::path dir_;
};

TEST_F(SafetensorsTest, ReadsBf16F16AndF32AsBf16) {
  const std::vector<float> values = {1.0f, -2.5f, 0.125f, 3.0f, 1e-3f, -7.75f};
  std::vector<uint16_t> bf16, f16;
  for (float v : values) {
    bf16.push_back(kernels::FloatToBf16(v));
    f16.push_back(kernels::FloatToF16(v));
  }
  const std::string path =
      Write("model.safetensors", BuildFile({{"a", "BF16", {2, 3}, Bytes(bf16)},
                                            {"b", "F16", {6}, Bytes(f16)},
                                            {"c", "F32", {3, 2}, Bytes(values)}}));
  auto ckpt = SafetensorsCheckpoint::OpenFile(path);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->TensorNames(), (std::vector<std::string>{"a", "b", "c"}));
  auto a = (*ckpt)->GetBf16("a", {2, 3});
  auto b = (*ckpt)->GetBf16("b", {6});
  auto c = (*ckpt)->GetBf16("c", {3, 2});
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ((*a)[i], bf16[i]);
    EXPECT_EQ((*b)[i], kernels::FloatToBf16(kernels::F16ToFloat(f16[i])));
    EXPECT_EQ((*c)[i], bf16[i]);
  }
  auto info = (*ckpt)->Info("b");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ((*info)->stored_dtype, TensorDType::kF16);
}

TEST_F(SafetensorsTest, QuantizedDtypesAreServedAsRawBytesInPlace) {
  const std::string fp8 = "\x38\xb8\x01\x7e";  // 1, -1, 2^-9, 448
  const float scale = 0.125f;
  const std::vector<uint16_t> bf16_scale = {kernels::FloatToBf16(0.5f)};
  const int64_t shape[2] = {3, 8};
  ASSERT_FALSE(
      Write("model.safetensors",
            BuildFile({{"w", "F8_E4M3", {2, 2}, fp8},
                       {"s", "F32", {}, std::string(reinterpret_cast<const char*>(&scale), 4)},
                       {"b", "BF16", {1, 1}, Bytes(bf16_scale)},
                       {"q", "I32", {1}, std::string("\x80\x81\x7f\x00", 4)},
                       {"shape", "I64", {2}, std::string(reinterpret_cast<const char*>(shape), 16)},
                       {"i8", "I8", {1}, std::string("\xff", 1)},
                       {"u8", "U8", {1}, std::string("\xff", 1)}}))
          .empty());
  auto ckpt = SafetensorsCheckpoint::OpenDir(dir_.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto w = (*ckpt)->GetRaw("w", TensorDType::kF8E4M3, {2, 2});
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->size(), 4u);
  EXPECT_EQ(kernels::Fp8E4M3ToFloat((*w)[0]), 1.0f);
  EXPECT_EQ(kernels::Fp8E4M3ToFloat((*w)[1]), -1.0f);
  EXPECT_EQ(kernels::Fp8E4M3ToFloat((*w)[3]), 448.0f);
  // No bf16 view of an 8-bit tensor; a wrong dtype or shape is named.
  EXPECT_THAT(std::string((*ckpt)->GetBf16("w", {2, 2}).status().message()),
              HasSubstr("tensor w is F8_E4M3"));
  EXPECT_THAT(std::string((*ckpt)->GetRaw("w", TensorDType::kI8, {2, 2}).status().message()),
              HasSubstr("expected I8"));
  EXPECT_THAT(std::string((*ckpt)->GetRaw("w", TensorDType::kF8E4M3, {4}).status().message()),
              HasSubstr("has shape [2, 2], expected [4]"));
  EXPECT_TRUE((*ckpt)->GetRaw("q", TensorDType::kI32, {1}).ok());
  EXPECT_TRUE((*ckpt)->GetRaw("shape", TensorDType::kI64, {2}).ok());
  EXPECT_TRUE((*ckpt)->GetRaw("i8", TensorDType::kI8, {1}).ok());
  EXPECT_TRUE((*ckpt)->GetRaw("u8", TensorDType::kU8, {1}).ok());
  // Scales read exactly (F32 is not rounded through bf16).
  auto s = (*ckpt)->GetFloats("s");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, std::vector<float>{0.125f});
  auto b = (*ckpt)->GetFloats("b");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, std::vector<float>{0.5f});
  EXPECT_FALSE((*ckpt)->GetFloats("w").ok());
  // The byte count must match the dtype's element size.
  EXPECT_THAT(
      std::string(OpenError(BuildFile({{"x", "I32", {2}, std::string(4, '\0')}})).message()),
      HasSubstr("needs 8"));
}

TEST_F(SafetensorsTest, UnalignedBf16DataIsCopied) {
  std::vector<uint16_t> bf16 = {kernels::FloatToBf16(1.5f), kernels::FloatToBf16(-3.0f)};
  // One leading byte tensor-free shift: a 1-byte pad makes the data start odd.
  const std::string path =
      Write("model.safetensors", BuildFile({{"w", "BF16", {2}, Bytes(bf16)}}, /*pad=*/1));
  auto ckpt = SafetensorsCheckpoint::OpenFile(path);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto w = (*ckpt)->GetBf16("w", {2});
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w->data()) % 2, 0u);
  EXPECT_EQ(kernels::Bf16ToFloat((*w)[0]), 1.5f);
  EXPECT_EQ(kernels::Bf16ToFloat((*w)[1]), -3.0f);
}

TEST_F(SafetensorsTest, ShapeMismatchAndMissingTensorAreNamed) {
  std::vector<uint16_t> data(6, 0);
  auto ckpt = SafetensorsCheckpoint::OpenFile(
      Write("model.safetensors", BuildFile({{"layer.weight", "BF16", {2, 3}, Bytes(data)}})));
  ASSERT_TRUE(ckpt.ok());
  auto wrong = (*ckpt)->GetBf16("layer.weight", {3, 2});
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(wrong.status().message()),
              HasSubstr("layer.weight has shape [2, 3], expected [3, 2]"));
  auto missing = (*ckpt)->GetBf16("other.weight", {1});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("other.weight"));
}

TEST_F(SafetensorsTest, HostileFilesGiveErrors) {
  const std::string good = BuildFile({{"w", "BF16", {4}, std::string(8, '\0')}});
  EXPECT_EQ(OpenError("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenError("abc").code(), absl::StatusCode::kInvalidArgument);
  // Header length beyond the file.
  std::string too_long = good;
  uint64_t huge = good.size();
  std::memcpy(too_long.data(), &huge, 8);
  EXPECT_THAT(std::string(OpenError(too_long).message()), HasSubstr("exceeds the file size"));
  huge = ~uint64_t{0};
  std::memcpy(too_long.data(), &huge, 8);
  EXPECT_FALSE(OpenError(too_long).ok());
  // Truncated data section.
  EXPECT_THAT(std::string(OpenError(good.substr(0, good.size() - 2)).message()),
              HasSubstr("outside the data section"));
  // Header that is not JSON / not an object.
  auto with_header = [](const std::string& h) {
    uint64_t len = h.size();
    return std::string(reinterpret_cast<const char*>(&len), 8) + h;
  };
  EXPECT_THAT(std::string(OpenError(with_header("{not json")).message()), HasSubstr("JSON"));
  EXPECT_FALSE(OpenError(with_header("[1,2,3]")).ok());
  EXPECT_FALSE(OpenError(with_header(R"({"w": 5})")).ok());
  // Unsupported dtype, negative shape, offsets/shape disagreement, overlap.
  EXPECT_THAT(
      std::string(OpenError(BuildFile({{"w", "F64", {1}, std::string(8, '\0')}})).message()),
      HasSubstr("unsupported dtype F64"));
  EXPECT_FALSE(
      OpenError(with_header(R"({"w":{"dtype":"BF16","shape":[-1],"data_offsets":[0,0]}})")).ok());
  EXPECT_THAT(
      std::string(OpenError(BuildFile({{"w", "BF16", {3}, std::string(8, '\0')}})).message()),
      HasSubstr("needs 6"));
  EXPECT_FALSE(OpenError(with_header(R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[4,0]}})") +
                         std::string(8, '\0'))
                   .ok());
  EXPECT_THAT(
      std::string(
          OpenError(with_header(R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},)"
                                R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[2,6]}})") +
                    std::string(8, '\0'))
              .message()),
      HasSubstr("overlap"));
  EXPECT_FALSE(
      OpenError(
          with_header(
              R"({"w":{"dtype":"BF16","shape":[1099511627776,1099511627776],"data_offsets":[0,2]}})") +
          std::string(2, '\0'))
          .ok());
  EXPECT_EQ(SafetensorsCheckpoint::OpenFile((dir_ / "absent").string()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, RandomCorruptionNeverCrashes) {
  const std::string good =
      BuildFile({{"a", "BF16", {8, 4}, Bytes(std::vector<uint16_t>(32, 1))},
                 {"b", "F32", {8}, Bytes(std::vector<float>(8, 2.0f))},
                 {"c", "F16", {16}, Bytes(std::vector<uint16_t>(16, 0x3c00))}});
  std::mt19937 rng(42);
  int opened = 0;
  for (int trial = 0; trial < 1000; ++trial) {
    std::string bytes = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % bytes.size();
      switch (rng() % 3) {
        case 0:
          bytes[pos] = static_cast<char>(rng());
          break;
        case 1:
          bytes = bytes.substr(0, pos) + bytes.substr(std::min(bytes.size(), pos + 1 + rng() % 8));
          break;
        default:
          bytes.insert(pos, 1, "0123456789[]{},\":-"[rng() % 18]);
          break;
      }
      if (bytes.empty()) bytes.push_back('x');
    }
    auto ckpt = SafetensorsCheckpoint::OpenFile(Write("fuzz.safetensors", bytes));
    if (ckpt.ok()) {
      ++opened;
      for (const std::string& name : (*ckpt)->TensorNames()) {
        auto info = (*ckpt)->Info(name);
        ASSERT_TRUE(info.ok());
        uint64_t sum = 0;
        for (uint16_t v : (*info)->bf16) sum += v;  // every span must be readable
        EXPECT_LE(sum, uint64_t{0xffff} * (*info)->bf16.size());
      }
    }
  }
  EXPECT_GT(opened, 0);  // some mutations (e.g. in data bytes) keep the file valid
}

TEST_F(SafetensorsTest, ShardedCheckpointWithIndex) {
  std::vector<uint16_t> x(4, kernels::FloatToBf16(1.0f)), y(2, kernels::FloatToBf16(2.0f));
  Write("model-00001-of-00002.safetensors", BuildFile({{"x", "BF16", {4}, Bytes(x)}}));
  Write("model-00002-of-00002.safetensors", BuildFile({{"y", "BF16", {2}, Bytes(y)}}));
  Write("model.safetensors.index.json",
        R"({"metadata":{"total_size":12},"weight_map":{"x":"model-00001-of-00002.safetensors",)"
        R"("y":"model-00002-of-00002.safetensors"}})");
  auto ckpt = SafetensorsCheckpoint::OpenDir(dir_.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto yv = (*ckpt)->GetBf16("y", {2});
  ASSERT_TRUE(yv.ok());
  EXPECT_EQ(kernels::Bf16ToFloat((*yv)[1]), 2.0f);
  EXPECT_EQ((*(*ckpt)->Info("x"))->file, "model-00001-of-00002.safetensors");
}

TEST_F(SafetensorsTest, BadIndexesGiveErrors) {
  std::vector<uint16_t> x(4, 0);
  Write("model-00001-of-00001.safetensors", BuildFile({{"x", "BF16", {4}, Bytes(x)}}));
  auto open_with = [&](const std::string& index) {
    Write("model.safetensors.index.json", index);
    return SafetensorsCheckpoint::OpenDir(dir_.string()).status();
  };
  EXPECT_THAT(std::string(open_with(R"({"weight_map":{"x":"model-00001-of-00001.safetensors",)"
                                    R"("z":"model-00001-of-00001.safetensors"}})")
                              .message()),
              HasSubstr("tensor z"));
  EXPECT_EQ(open_with(R"({"weight_map":{"x":"missing.safetensors"}})").code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(open_with(R"({"weight_map":{"x":"../x.safetensors"}})").message()),
              HasSubstr("invalid file name"));
  EXPECT_FALSE(open_with(R"({"weight_map":{}})").ok());
  EXPECT_FALSE(open_with("nonsense").ok());
}

}  // namespace
}  // namespace tern::worker
