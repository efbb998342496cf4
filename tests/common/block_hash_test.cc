#include "common/block_hash.h"

#include <gtest/gtest.h>

#include <vector>

namespace tern {
namespace {

TEST(BlockHashTest, HashesOnlyFullBlocks) {
  std::vector<int32_t> tokens(37);
  for (int i = 0; i < 37; ++i) tokens[i] = i * 7;
  EXPECT_EQ(HashPrefixBlocks(tokens, 16).size(), 2u);
  EXPECT_EQ(HashPrefixBlocks(absl::MakeConstSpan(tokens).subspan(0, 15), 16).size(), 0u);
}

TEST(BlockHashTest, ChainsThroughParent) {
  std::vector<int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<int32_t> b = {9, 9, 9, 9, 5, 6, 7, 8};
  // Same second block, different first block: the second hashes must differ.
  const auto ha = HashPrefixBlocks(a, 4);
  const auto hb = HashPrefixBlocks(b, 4);
  ASSERT_EQ(ha.size(), 2u);
  EXPECT_NE(ha[0], hb[0]);
  EXPECT_NE(ha[1], hb[1]);
  EXPECT_EQ(ha[1], HashBlock(ha[0], absl::MakeConstSpan(a).subspan(4, 4)));
  EXPECT_EQ(ha[0], HashBlock(kNoParentBlockHash, absl::MakeConstSpan(a).subspan(0, 4)));
}

TEST(BlockHashTest, SharedPrefixGivesSharedHashes) {
  std::vector<int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8, 10};
  std::vector<int32_t> b = {1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14};
  const auto ha = HashPrefixBlocks(a, 4);
  const auto hb = HashPrefixBlocks(b, 4);
  ASSERT_EQ(ha.size(), 2u);
  ASSERT_EQ(hb.size(), 3u);
  EXPECT_EQ(ha[0], hb[0]);
  EXPECT_EQ(ha[1], hb[1]);
}

TEST(BlockHashTest, RejectsNonPositiveBlockSize) {
  std::vector<int32_t> a = {1, 2, 3};
  EXPECT_TRUE(HashPrefixBlocks(a, 0).empty());
}

}  // namespace
}  // namespace tern
