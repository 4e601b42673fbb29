#include "base/host_memory.h"

#include <cstdint>
#include <cstring>
#include <string>

#include "gtest/gtest.h"

namespace tessera {
namespace {

TEST(HostMemoryTest, SmallAllocationsAreCacheLineAligned) {
  for (size_t bytes :
       {size_t{0}, size_t{1}, size_t{63}, size_t{4096}, kHugePageBytes - 1}) {
    EXPECT_FALSE(UsesHugePages(bytes));
    std::shared_ptr<void> p = AllocateHostMemory(bytes);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p.get()) % 64, 0u);
    std::memset(p.get(), 0x5a, bytes);
  }
}

// Large buffers start on a 2 MiB boundary (so THP can back them from the
// first byte) and every byte up to the requested size is usable, including
// a tail that is not a whole huge page.
TEST(HostMemoryTest, LargeAllocationsAreHugePageAlignedAndUsable) {
  for (size_t bytes : {kHugePageBytes, kHugePageBytes * 3 + 4097}) {
    EXPECT_TRUE(UsesHugePages(bytes));
    std::shared_ptr<void> p = AllocateHostMemory(bytes);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p.get()) % kHugePageBytes, 0u);
    auto* c = static_cast<unsigned char*>(p.get());
    std::memset(c, 0xa5, bytes);
    EXPECT_EQ(c[0], 0xa5);
    EXPECT_EQ(c[bytes - 1], 0xa5);
  }
}

TEST(HostMemoryTest, ReportsTheTransparentHugePageMode) {
  const std::string mode = TransparentHugePageMode();
  EXPECT_TRUE(mode == "always" || mode == "madvise" || mode == "never" ||
              mode == "unknown")
      << mode;
  EXPECT_GE(AnonHugePageBytes(), -1);
  EXPECT_NE(AvailableHostMemoryBytes(), 0);
}

}  // namespace
}  // namespace tessera
