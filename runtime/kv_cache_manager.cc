#include "runtime/kv_cache_manager.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "base/logging.h"
#include "fmt/format.h"

namespace tessera {

KvCacheManager::KvCacheManager(const KvCacheOptions& options,
                               CopyBlockFn copy_block)
    : block_size_(options.block_size),
      enable_prefix_caching_(options.enable_prefix_caching),
      copy_block_(std::move(copy_block)),
      blocks_(static_cast<size_t>(options.num_blocks)) {
  TESSERA_CHECK(options.block_size > 0 && options.num_blocks >= 0);
  free_.reserve(blocks_.size());
  // Stack order: block 0 is handed out first.
  for (int64_t i = options.num_blocks - 1; i >= 0; --i) {
    free_.push_back(static_cast<int32_t>(i));
  }
  if (enable_prefix_caching_) {
    block_tokens_.resize(blocks_.size() * static_cast<size_t>(block_size_));
    cached_.reserve(blocks_.size());
  }
}

double KvCacheManager::usage() const {
  if (blocks_.empty()) return 0.0;
  return 1.0 - static_cast<double>(num_free_blocks()) /
                   static_cast<double>(blocks_.size());
}

uint64_t KvCacheManager::HashBlock(uint64_t parent_hash,
                                   absl::Span<const int32_t> tokens) {
  // FNV-1a style mixing with a SplitMix64 finaliser per token: fast, and a
  // collision is additionally rejected by comparing stored tokens.
  uint64_t h = parent_hash ^ 0x9e3779b97f4a7c15ull;
  for (int32_t t : tokens) {
    uint64_t z = h + static_cast<uint32_t>(t) + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    h = z ^ (z >> 31);
  }
  return h == 0 ? 1 : h;  // 0 means "no parent".
}

void KvCacheManager::LruPushBack(int32_t id) {
  Block& b = blocks_[id];
  b.prev = lru_tail_;
  b.next = kNone;
  if (lru_tail_ != kNone) {
    blocks_[lru_tail_].next = id;
  } else {
    lru_head_ = id;
  }
  lru_tail_ = id;
  ++num_evictable_;
}

void KvCacheManager::LruRemove(int32_t id) {
  Block& b = blocks_[id];
  if (b.prev != kNone) {
    blocks_[b.prev].next = b.next;
  } else {
    lru_head_ = b.next;
  }
  if (b.next != kNone) {
    blocks_[b.next].prev = b.prev;
  } else {
    lru_tail_ = b.prev;
  }
  b.prev = b.next = kNone;
  --num_evictable_;
}

void KvCacheManager::Uncache(int32_t id) {
  Block& b = blocks_[id];
  if (!b.hashed) return;
  auto it = cached_.find(b.hash);
  if (it != cached_.end() && it->second == id) cached_.erase(it);
  b.hashed = false;
  b.hash = 0;
}

int32_t KvCacheManager::AllocateBlock() {
  int32_t id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else {
    TESSERA_CHECK(lru_head_ != kNone, "no block to evict");
    id = lru_head_;  // Least recently used cached block.
    LruRemove(id);
    Uncache(id);
  }
  blocks_[id].ref_count = 1;
  return id;
}

void KvCacheManager::Release(int32_t id) {
  Block& b = blocks_[id];
  TESSERA_CHECK(b.ref_count > 0, "double free of KV block {}", id);
  if (--b.ref_count > 0) return;
  if (b.hashed) {
    LruPushBack(id);
  } else {
    free_.push_back(id);
  }
}

int64_t KvCacheManager::MatchPrefix(absl::Span<const int32_t> tokens,
                                    SequenceBlocks* seq) {
  TESSERA_CHECK(seq->ids.empty(), "MatchPrefix on a sequence with blocks");
  if (!enable_prefix_caching_ || tokens.empty()) return 0;
  prefix_stats_.queries += static_cast<int64_t>(tokens.size());
  const int64_t max_blocks =
      (static_cast<int64_t>(tokens.size()) - 1) / block_size_;
  uint64_t parent = 0;
  for (int64_t i = 0; i < max_blocks; ++i) {
    auto chunk = tokens.subspan(i * block_size_, block_size_);
    const uint64_t h = HashBlock(parent, chunk);
    auto it = cached_.find(h);
    if (it == cached_.end()) break;
    const int32_t id = it->second;
    if (!std::equal(chunk.begin(), chunk.end(),
                    block_tokens_.begin() + id * block_size_)) {
      break;  // Hash collision.
    }
    Block& b = blocks_[id];
    if (b.ref_count == 0) LruRemove(id);
    ++b.ref_count;
    seq->ids.push_back(id);
    parent = h;
  }
  seq->num_hashed = static_cast<int64_t>(seq->ids.size());
  seq->last_hash = parent;
  const int64_t hit = seq->num_hashed * block_size_;
  prefix_stats_.hits += hit;
  return hit;
}

absl::Status KvCacheManager::Allocate(int64_t num_computed, int64_t num_new,
                                      SequenceBlocks* seq) {
  const int64_t total = num_computed + num_new;
  const int64_t needed = (total + block_size_ - 1) / block_size_;
  const int64_t have = static_cast<int64_t>(seq->ids.size());
  // Blocks written by this step that other sequences also reference.
  const int64_t first_written = num_computed / block_size_;
  int64_t cow = 0;
  for (int64_t i = first_written; i < std::min(have, needed); ++i) {
    if (blocks_[seq->ids[i]].ref_count > 1) ++cow;
  }
  const int64_t fresh = std::max<int64_t>(0, needed - have);
  if (fresh + cow > num_free_blocks()) {
    return absl::ResourceExhaustedError(
        fmt::format("KV cache full: need {} blocks, {} free of {}", fresh + cow,
                    num_free_blocks(), blocks_.size()));
  }
  for (int64_t i = first_written; cow > 0 && i < std::min(have, needed); ++i) {
    const int32_t old = seq->ids[i];
    if (blocks_[old].ref_count <= 1) continue;
    const int32_t copy = AllocateBlock();
    copy_block_(old, copy);
    --blocks_[old].ref_count;  // Still referenced by the other sharers.
    seq->ids[i] = copy;
    --cow;
  }
  for (int64_t i = have; i < needed; ++i) seq->ids.push_back(AllocateBlock());
  return absl::OkStatus();
}

void KvCacheManager::CommitComputed(absl::Span<const int32_t> tokens,
                                    int64_t num_computed, SequenceBlocks* seq) {
  if (!enable_prefix_caching_) return;
  const int64_t full = std::min<int64_t>(num_computed / block_size_,
                                         static_cast<int64_t>(seq->ids.size()));
  for (int64_t i = seq->num_hashed; i < full; ++i) {
    auto chunk = tokens.subspan(i * block_size_, block_size_);
    const uint64_t h = HashBlock(seq->last_hash, chunk);
    const int32_t id = seq->ids[i];
    Block& b = blocks_[id];
    if (!b.hashed && cached_.find(h) == cached_.end()) {
      // First copy of this content: make it findable. (A duplicate computed
      // concurrently by another sequence stays private and is freed later.)
      b.hashed = true;
      b.hash = h;
      cached_.emplace(h, id);
      std::copy(chunk.begin(), chunk.end(),
                block_tokens_.begin() + id * block_size_);
    }
    seq->last_hash = h;
    seq->num_hashed = i + 1;
  }
}

void KvCacheManager::Fork(const SequenceBlocks& parent, SequenceBlocks* child) {
  TESSERA_CHECK(child->ids.empty(), "Fork into a sequence with blocks");
  *child = parent;
  for (int32_t id : child->ids) ++blocks_[id].ref_count;
}

void KvCacheManager::Free(SequenceBlocks* seq) {
  for (auto it = seq->ids.rbegin(); it != seq->ids.rend(); ++it) Release(*it);
  seq->ids.clear();
  seq->num_hashed = 0;
  seq->last_hash = 0;
}

}  // namespace tessera
