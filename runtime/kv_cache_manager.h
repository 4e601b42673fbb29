// Paged KV cache block manager: which KV blocks each sequence uses.
//
// The manager owns block *ids* (ref counts, prefix hashes, LRU of cached free
// blocks); the ModelRunner owns the KV memory. A sequence's block table lives
// in the sequence (SequenceBlocks), so the manager keeps no per-sequence map
// and a decode instance can admit a sequence whose KV was written into blocks
// it allocated for a remote prefill (Allocate, then hand `ids` to the sender).
//
// Not thread-safe: one scheduler thread (the instance leader) drives it.
#pragma once

#include <cstdint>
#include <functional>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace tessera {

struct KvCacheOptions {
  int64_t num_blocks = 0;   // Blocks in the pool (the runner's num_kv_blocks).
  int64_t block_size = 16;  // Tokens per block.
  bool enable_prefix_caching = true;
};

// One sequence's block table and prefix-hash progress.
struct SequenceBlocks {
  std::vector<int32_t> ids;  // Block i covers positions [i*bs, (i+1)*bs).
  int64_t num_hashed = 0;    // Leading full blocks registered/looked up.
  uint64_t last_hash = 0;    // Chain hash of block num_hashed-1 (0 if none).
};

// Prefix-cache counters, in tokens (as vLLM counts them).
struct PrefixCacheStats {
  int64_t queries = 0;  // Prompt tokens looked up.
  int64_t hits = 0;     // Prompt tokens found cached.
};

class KvCacheManager {
 public:
  // `copy_block(src, dst)` copies KV memory (ModelRunner::CopyBlock); it is
  // called synchronously during Allocate for copy-on-write.
  using CopyBlockFn = std::function<void(int32_t src, int32_t dst)>;

  KvCacheManager(const KvCacheOptions& options, CopyBlockFn copy_block);

  KvCacheManager(const KvCacheManager&) = delete;
  KvCacheManager& operator=(const KvCacheManager&) = delete;

  int64_t block_size() const { return block_size_; }
  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  // Blocks that can be handed out now (free + cached but unreferenced).
  int64_t num_free_blocks() const {
    return static_cast<int64_t>(free_.size()) + num_evictable_;
  }
  // Fraction of blocks referenced by live sequences, in [0, 1].
  double usage() const;
  const PrefixCacheStats& prefix_stats() const { return prefix_stats_; }
  bool prefix_caching() const { return enable_prefix_caching_; }

  // For a sequence with no blocks yet: attaches the longest run of cached
  // full blocks matching `tokens` (at most tokens.size()-1 tokens, so that at
  // least one token is computed to produce logits). Returns the number of
  // tokens whose KV is now present. Counts a prefix-cache query.
  int64_t MatchPrefix(absl::Span<const int32_t> tokens, SequenceBlocks* seq);

  // Ensures `seq` has blocks for positions [0, num_computed + num_new) and
  // that every block written by positions [num_computed, num_computed +
  // num_new) is exclusively owned (copy-on-write of shared blocks).
  // ResourceExhausted (and no change) when not enough blocks are free.
  absl::Status Allocate(int64_t num_computed, int64_t num_new,
                        SequenceBlocks* seq);

  // Registers the full blocks among the first `num_computed` tokens of
  // `tokens` in the prefix cache (call after a step computed them).
  void CommitComputed(absl::Span<const int32_t> tokens, int64_t num_computed,
                      SequenceBlocks* seq);

  // `child` shares all of `parent`'s blocks (for parallel sampling / beam
  // search); the first write into a shared partial block copies it.
  void Fork(const SequenceBlocks& parent, SequenceBlocks* child);

  // Drops the sequence's references (tail blocks first, so the LRU evicts a
  // prefix's tail before its head) and clears `seq`.
  void Free(SequenceBlocks* seq);

  // Chain hash of one block: its tokens and the hash of the prefix before it.
  static uint64_t HashBlock(uint64_t parent_hash,
                            absl::Span<const int32_t> tokens);

 private:
  static constexpr int32_t kNone = -1;
  struct Block {
    int32_t ref_count = 0;
    bool hashed = false;
    uint64_t hash = 0;
    // Intrusive LRU list of unreferenced cached blocks (oldest at head).
    int32_t prev = kNone;
    int32_t next = kNone;
  };

  int32_t AllocateBlock();  // Caller checked availability.
  void Release(int32_t id);
  void LruPushBack(int32_t id);
  void LruRemove(int32_t id);
  void Uncache(int32_t id);

  const int64_t block_size_;
  const bool enable_prefix_caching_;
  CopyBlockFn copy_block_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;  // Unreferenced, uncached blocks (a stack).
  int64_t num_evictable_ = 0;
  int32_t lru_head_ = kNone;
  int32_t lru_tail_ = kNone;
  // Full-block chain hash -> block id; the tokens are kept to reject hash
  // collisions (a wrong hit would silently corrupt outputs).
  std::unordered_map<uint64_t, int32_t> cached_;
  std::vector<int32_t> block_tokens_;  // num_blocks * block_size.
  PrefixCacheStats prefix_stats_;
};

}  // namespace tessera
