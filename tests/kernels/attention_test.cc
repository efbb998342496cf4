// Every level's paged attention against the scalar f64 reference
// (reference.h PagedAttention) on random shapes: head_dim 32/64/128, groups
// of 1/4/8 query heads per KV head (and 16, the tile bound, and 32, past it:
// the reference fallback), block sizes 1/16, scrambled block tables, decode
// (one token, long context) and chunked prefill (many tokens at start > 0).
// KV pools and q sit at the end of guarded pages, so reading past them
// faults; outputs start as NaN, so a skipped one fails.
//
// Tolerance: |got - ref| <= 2e-5 * (1 + |ref|) per output. The outputs are
// convex combinations of values in [-1, 1]; the f32 online softmax differs
// from the f64 reference by rounding only (observed below 1e-6).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/dispatch.h"
#include "kernels/reference.h"
#include "kernels/simd_kernels.h"
#include "tests/kernels/kernel_test_util.h"

namespace tern::kernels {
namespace {

using testing::AllIsas;
using testing::GuardedBuffer;
using testing::IsaParamName;
using testing::RandomFloats;

struct AttentionShape {
  int32_t head_dim;
  int32_t num_kv_heads;
  int32_t group;
  int32_t block_size;
  int32_t start;
  int32_t num_tokens;
};

class PagedAttentionTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    set_ = KernelSetFor(GetParam());
    if (set_ == nullptr) GTEST_SKIP() << IsaName(GetParam()) << " is not supported by this CPU";
  }

  // Runs one shape against the reference; false (after one failure message)
  // on the first output out of tolerance.
  bool Check(const AttentionShape& s, uint32_t seed, float q_scale = 1.0f) {
    std::mt19937 rng(seed);
    const int32_t length = s.start + s.num_tokens;
    const int32_t blocks = (length + s.block_size - 1) / s.block_size;
    // More physical blocks than the sequence uses, in a scrambled order.
    const int32_t pool_blocks = blocks + 3;
    std::vector<int32_t> table(pool_blocks);
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng);
    table.resize(blocks);
    const size_t pool =
        static_cast<size_t>(pool_blocks) * s.block_size * s.num_kv_heads * s.head_dim;
    const int32_t num_heads = s.num_kv_heads * s.group;
    const size_t q_size = static_cast<size_t>(s.num_tokens) * num_heads * s.head_dim;
    GuardedBuffer<float> keys(RandomFloats(pool, rng));
    GuardedBuffer<float> values(RandomFloats(pool, rng));
    GuardedBuffer<int32_t> table_buf(table);
    GuardedBuffer<float> q(RandomFloats(q_size, rng, q_scale));
    GuardedBuffer<float> out(std::vector<float>(q_size, std::numeric_limits<float>::quiet_NaN()));
    PagedKv kv;
    kv.keys = keys.data();
    kv.values = values.data();
    kv.block_size = s.block_size;
    kv.num_kv_heads = s.num_kv_heads;
    kv.head_dim = s.head_dim;
    const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
    set_->paged_attention(kv, table_buf.data(), s.start, s.num_tokens, q.data(), num_heads, scale,
                          out.data());
    std::vector<float> want(q_size);
    PagedAttention(kv, table_buf.data(), s.start, s.num_tokens, q.data(), num_heads, scale,
                   want.data());
    const std::vector<float> got = out.ToVector();
    for (size_t i = 0; i < q_size; ++i) {
      const double diff = std::abs(static_cast<double>(got[i]) - want[i]);
      if (!(diff <= 2e-5 * (1.0 + std::abs(want[i])))) {
        const size_t per_token = static_cast<size_t>(num_heads) * s.head_dim;
        ADD_FAILURE() << IsaName(GetParam()) << " head_dim=" << s.head_dim
                      << " kv_heads=" << s.num_kv_heads << " group=" << s.group
                      << " block_size=" << s.block_size << " start=" << s.start
                      << " tokens=" << s.num_tokens << ": token " << i / per_token << " head "
                      << (i % per_token) / s.head_dim << " dim " << i % s.head_dim << " = "
                      << got[i] << ", reference " << want[i];
        return false;
      }
    }
    return true;
  }

  const KernelSet* set_ = nullptr;
};

TEST_P(PagedAttentionTest, DecodeMatchesReference) {
  uint32_t seed = 1;
  for (int32_t head_dim : {32, 64, 128}) {
    for (int32_t group : {1, 4, 8}) {
      for (int32_t block_size : {1, 16}) {
        for (int32_t start : {0, 1, 15, 16, 17, 300}) {
          ASSERT_TRUE(Check({head_dim, 2, group, block_size, start, 1}, seed++));
        }
      }
    }
  }
}

TEST_P(PagedAttentionTest, ChunkedPrefillMatchesReference) {
  uint32_t seed = 100;
  for (int32_t head_dim : {64, 128}) {
    for (int32_t group : {1, 4, 8}) {
      for (int32_t block_size : {1, 16}) {
        // Whole prompts from 0, and chunks after a cached prefix, with token
        // counts that do and do not fill the query tiles.
        ASSERT_TRUE(Check({head_dim, 2, group, block_size, 0, 37}, seed++));
        ASSERT_TRUE(Check({head_dim, 2, group, block_size, 45, 19}, seed++));
        ASSERT_TRUE(Check({head_dim, 1, group, block_size, 130, 5}, seed++));
      }
    }
  }
}

TEST_P(PagedAttentionTest, RandomShapesMatchReference) {
  std::mt19937 rng(7);
  auto pick = [&rng](std::initializer_list<int32_t> v) {
    return *(v.begin() + std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng));
  };
  for (uint32_t i = 0; i < 40; ++i) {
    AttentionShape s;
    s.head_dim = pick({16, 48, 64, 128, 256});
    s.num_kv_heads = pick({1, 2, 3});
    s.group = pick({1, 2, 3, 4, 5, 8});
    s.block_size = pick({1, 2, 16, 32});
    s.start = std::uniform_int_distribution<int32_t>(0, 200)(rng);
    s.num_tokens = std::uniform_int_distribution<int32_t>(1, 40)(rng);
    ASSERT_TRUE(Check(s, 1000 + i));
  }
}

TEST_P(PagedAttentionTest, PeakedScoresMatchReference) {
  // Large scores: the running max grows chunk after chunk and the online
  // rescaling must keep the sum exact; exp underflows for most positions.
  uint32_t seed = 500;
  for (int32_t group : {1, 4}) {
    ASSERT_TRUE(Check({64, 2, group, 16, 200, 3}, seed++, /*q_scale=*/40.0f));
    ASSERT_TRUE(Check({128, 1, group, 1, 90, 1}, seed++, /*q_scale=*/40.0f));
  }
}

TEST_P(PagedAttentionTest, ShapesPastTheTileBoundsMatchReference) {
  // Group 16 is the largest tile; 32 and head_dim 264 / 40 go to the
  // reference on the vector levels (40 is not a multiple of 16).
  ASSERT_TRUE(Check({64, 1, kMaxAttentionRows, 16, 20, 3}, 900));
  ASSERT_TRUE(Check({64, 1, 2 * kMaxAttentionRows, 16, 20, 3}, 901));
  ASSERT_TRUE(Check({kMaxAttentionHeadDim + 8, 1, 2, 16, 20, 3}, 902));
  ASSERT_TRUE(Check({40, 2, 2, 16, 20, 3}, 903));
}

INSTANTIATE_TEST_SUITE_P(AllLevels, PagedAttentionTest, ::testing::ValuesIn(AllIsas()),
                         IsaParamName);

}  // namespace
}  // namespace tern::kernels
