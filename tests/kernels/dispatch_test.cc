#include "kernels/dispatch.h"

#include <cstdlib>

#include "gtest/gtest.h"

namespace tern::kernels {
namespace {

TEST(DispatchTest, IsaNamesRoundTrip) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16}) {
    EXPECT_EQ(ParseIsaName(IsaName(isa)), isa);
  }
  EXPECT_EQ(ParseIsaName("AVX512"), std::nullopt);
  EXPECT_EQ(ParseIsaName(""), std::nullopt);
  EXPECT_EQ(ParseIsaName("avx"), std::nullopt);
}

TEST(DispatchTest, SupportedLevelsAreNested) {
  EXPECT_TRUE(CpuSupports(Isa::kScalar));
  if (CpuSupports(Isa::kAvx512Bf16)) {
    EXPECT_TRUE(CpuSupports(Isa::kAvx512));
  }
  if (CpuSupports(Isa::kAvx512)) {
    EXPECT_TRUE(CpuSupports(Isa::kAvx2));
  }
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16}) {
    const KernelSet* set = KernelSetFor(isa);
    EXPECT_EQ(set != nullptr, CpuSupports(isa)) << IsaName(isa);
    if (set != nullptr) {
      EXPECT_EQ(set->isa, isa);
    }
  }
}

TEST(DispatchTest, BestIsaIsTheFastestSupportedLevel) {
  const Isa best = BestIsa();
  EXPECT_TRUE(CpuSupports(best));
  if (CpuSupports(Isa::kAvx512Bf16)) {
    EXPECT_EQ(best, Isa::kAvx512Bf16);
  } else if (CpuSupports(Isa::kAvx512)) {
    EXPECT_EQ(best, Isa::kAvx512);
  } else if (CpuSupports(Isa::kAvx2)) {
    EXPECT_EQ(best, Isa::kAvx2);
  }
}

TEST(DispatchTest, OnlyAvx512Bf16RoundsActivations) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) EXPECT_FALSE(RoundsActivations(isa));
  EXPECT_TRUE(RoundsActivations(Isa::kAvx512Bf16));
}

TEST(DispatchTest, SelectionHonoursSupportedRequests) {
  EXPECT_EQ(SelectKernels(nullptr).isa, BestIsa());
  EXPECT_EQ(SelectKernels(nullptr).note, "");
  EXPECT_EQ(SelectKernels("").isa, BestIsa());
  const KernelSelection scalar = SelectKernels("scalar");
  EXPECT_EQ(scalar.isa, Isa::kScalar);
  EXPECT_EQ(scalar.note, "");
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16}) {
    const KernelSelection s = SelectKernels(IsaName(isa));
    if (CpuSupports(isa)) {
      EXPECT_EQ(s.isa, isa);
      EXPECT_EQ(s.note, "");
    } else {
      EXPECT_EQ(s.isa, BestIsa());
      EXPECT_NE(s.note.find("not supported by this CPU"), std::string::npos) << s.note;
    }
  }
}

TEST(DispatchTest, UnknownRequestFallsBackWithANote) {
  const KernelSelection s = SelectKernels("sse9");
  EXPECT_EQ(s.isa, BestIsa());
  EXPECT_NE(s.note.find("TERN_KERNELS=sse9 is not one of"), std::string::npos) << s.note;
}

TEST(DispatchTest, ActiveKernelsFollowTheEnvironment) {
  const KernelSelection expected = SelectKernels(std::getenv("TERN_KERNELS"));
  EXPECT_EQ(ActiveSelection().isa, expected.isa);
  EXPECT_EQ(ActiveKernels().isa, expected.isa);
  EXPECT_EQ(&ActiveKernels(), KernelSetFor(expected.isa));
}

}  // namespace
}  // namespace tern::kernels
