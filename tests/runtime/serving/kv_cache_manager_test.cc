#include "runtime/kv_cache_manager.h"

#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace tessera {
namespace {

std::vector<int32_t> Iota(int n, int start = 100) {
  std::vector<int32_t> v(n);
  for (int i = 0; i < n; ++i) v[i] = start + i;
  return v;
}

struct Copies {
  std::vector<std::pair<int32_t, int32_t>> calls;
  KvCacheManager::CopyBlockFn Fn() {
    return [this](int32_t s, int32_t d) { calls.push_back({s, d}); };
  }
};

TEST(KvCacheManagerTest, AllocatesAndFrees) {
  Copies copies;
  KvCacheManager kv({.num_blocks = 8, .block_size = 4}, copies.Fn());
  SequenceBlocks seq;
  ASSERT_TRUE(kv.Allocate(0, 9, &seq).ok());
  EXPECT_EQ(seq.ids.size(), 3u);
  EXPECT_EQ(kv.num_free_blocks(), 5);
  EXPECT_DOUBLE_EQ(kv.usage(), 3.0 / 8);
  ASSERT_TRUE(kv.Allocate(9, 3, &seq).ok());  // Fits in block 3.
  EXPECT_EQ(seq.ids.size(), 3u);
  ASSERT_TRUE(kv.Allocate(12, 1, &seq).ok());
  EXPECT_EQ(seq.ids.size(), 4u);
  kv.Free(&seq);
  EXPECT_TRUE(seq.ids.empty());
  EXPECT_EQ(kv.num_free_blocks(), 8);
  EXPECT_DOUBLE_EQ(kv.usage(), 0.0);
}

TEST(KvCacheManagerTest, ResourceExhaustedLeavesStateUnchanged) {
  KvCacheManager kv({.num_blocks = 2, .block_size = 4}, nullptr);
  SequenceBlocks a;
  ASSERT_TRUE(kv.Allocate(0, 5, &a).ok());
  SequenceBlocks b;
  absl::Status st = kv.Allocate(0, 1, &b);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(b.ids.empty());
  EXPECT_EQ(kv.num_free_blocks(), 0);
  kv.Free(&a);
  EXPECT_TRUE(kv.Allocate(0, 8, &b).ok());
}

TEST(KvCacheManagerTest, ForkSharesAndCopiesOnWrite) {
  Copies copies;
  KvCacheManager kv({.num_blocks = 8, .block_size = 4}, copies.Fn());
  SequenceBlocks parent;
  ASSERT_TRUE(kv.Allocate(0, 6, &parent).ok());  // Block 1 half full.
  SequenceBlocks child;
  kv.Fork(parent, &child);
  EXPECT_EQ(child.ids, parent.ids);
  EXPECT_EQ(kv.num_free_blocks(), 6);
  // The child writes position 6: the shared partial block is copied.
  ASSERT_TRUE(kv.Allocate(6, 1, &child).ok());
  ASSERT_EQ(copies.calls.size(), 1u);
  EXPECT_EQ(copies.calls[0].first, parent.ids[1]);
  EXPECT_EQ(copies.calls[0].second, child.ids[1]);
  EXPECT_EQ(child.ids[0], parent.ids[0]);  // The full block stays shared.
  EXPECT_NE(child.ids[1], parent.ids[1]);
  // Now the parent owns its block alone: no copy.
  ASSERT_TRUE(kv.Allocate(6, 1, &parent).ok());
  EXPECT_EQ(copies.calls.size(), 1u);
  kv.Free(&parent);
  EXPECT_EQ(kv.num_free_blocks(), 6);  // Block 0 still held by the child.
  kv.Free(&child);
  EXPECT_EQ(kv.num_free_blocks(), 8);
}

TEST(KvCacheManagerTest, CopyOnWriteNeedsAFreeBlock) {
  KvCacheManager kv({.num_blocks = 2, .block_size = 4},
                    [](int32_t, int32_t) {});
  SequenceBlocks parent;
  ASSERT_TRUE(kv.Allocate(0, 6, &parent).ok());
  SequenceBlocks child;
  kv.Fork(parent, &child);
  EXPECT_EQ(kv.Allocate(6, 1, &child).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(child.ids, parent.ids);
}

TEST(KvCacheManagerTest, PrefixHitsReuseFullBlocks) {
  KvCacheManager kv({.num_blocks = 16, .block_size = 4}, nullptr);
  const auto prompt = Iota(10);
  SequenceBlocks a;
  EXPECT_EQ(kv.MatchPrefix(prompt, &a), 0);
  ASSERT_TRUE(kv.Allocate(0, 10, &a).ok());
  kv.CommitComputed(prompt, 10, &a);
  EXPECT_EQ(a.num_hashed, 2);

  SequenceBlocks b;
  EXPECT_EQ(kv.MatchPrefix(prompt, &b), 8);
  EXPECT_EQ(b.ids[0], a.ids[0]);
  EXPECT_EQ(b.ids[1], a.ids[1]);
  ASSERT_TRUE(kv.Allocate(8, 2, &b).ok());
  EXPECT_NE(b.ids[2], a.ids[2]);
  EXPECT_EQ(kv.prefix_stats().queries, 20);
  EXPECT_EQ(kv.prefix_stats().hits, 8);

  // A different second block: only the first is reused.
  auto other = prompt;
  other[5] = 7;
  SequenceBlocks c;
  EXPECT_EQ(kv.MatchPrefix(other, &c), 4);
  // Same tokens at a different offset do not hit (chain hash).
  SequenceBlocks d;
  EXPECT_EQ(kv.MatchPrefix(Iota(10, 104), &d), 0);
  kv.Free(&a);
  kv.Free(&b);
  kv.Free(&c);
  EXPECT_DOUBLE_EQ(kv.usage(), 0.0);  // Cached blocks count as free.
}

TEST(KvCacheManagerTest, FullyCachedPromptStillComputesOneToken) {
  KvCacheManager kv({.num_blocks = 16, .block_size = 4}, nullptr);
  const auto prompt = Iota(8);
  SequenceBlocks a;
  ASSERT_TRUE(kv.Allocate(0, 8, &a).ok());
  kv.CommitComputed(prompt, 8, &a);
  SequenceBlocks b;
  EXPECT_EQ(kv.MatchPrefix(prompt, &b), 4);  // At most 7 tokens, whole blocks.
}

TEST(KvCacheManagerTest, EvictsLeastRecentlyUsedCachedBlocks) {
  KvCacheManager kv({.num_blocks = 4, .block_size = 2}, nullptr);
  const auto p1 = Iota(5, 100);  // 2 full blocks + 1.
  const auto p2 = Iota(5, 200);
  SequenceBlocks a;
  ASSERT_TRUE(kv.Allocate(0, 4, &a).ok());
  kv.CommitComputed(p1, 4, &a);
  kv.Free(&a);  // 2 cached, unreferenced blocks.
  SequenceBlocks b;
  ASSERT_TRUE(kv.Allocate(0, 4, &b).ok());
  kv.CommitComputed(p2, 4, &b);
  kv.Free(&b);  // p1's blocks are older.
  EXPECT_EQ(kv.num_free_blocks(), 4);
  // Needing 3 blocks evicts p1's tail block first, then its head.
  SequenceBlocks c;
  ASSERT_TRUE(kv.Allocate(0, 6, &c).ok());
  kv.Free(&c);
  SequenceBlocks d;
  EXPECT_EQ(kv.MatchPrefix(p1, &d), 0);  // p1 evicted.
  kv.Free(&d);
  SequenceBlocks e;
  EXPECT_EQ(kv.MatchPrefix(p2, &e), 2);  // p2's head survived, tail evicted.
}

TEST(KvCacheManagerTest, PrefixCachingOff) {
  KvCacheManager kv(
      {.num_blocks = 8, .block_size = 4, .enable_prefix_caching = false},
      nullptr);
  const auto prompt = Iota(9);
  SequenceBlocks a;
  ASSERT_TRUE(kv.Allocate(0, 9, &a).ok());
  kv.CommitComputed(prompt, 9, &a);
  SequenceBlocks b;
  EXPECT_EQ(kv.MatchPrefix(prompt, &b), 0);
  EXPECT_EQ(kv.prefix_stats().queries, 0);
}

}  // namespace
}  // namespace tessera
