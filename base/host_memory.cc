#include "base/host_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>

namespace tessera {
namespace {

constexpr size_t kAlignment = 64;
constexpr size_t kPage = 4096;

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

// Maps `bytes` (rounded to whole 4 KiB pages) at a 2 MiB-aligned address by
// over-mapping one huge page and trimming both ends, so only the tail beyond
// the last whole 2 MiB extent falls back to small pages and nothing is wasted.
void* MapHugeAligned(size_t bytes) {
  const size_t len = RoundUp(bytes, kPage);
  const size_t span = len + kHugePageBytes;
  void* raw = ::mmap(nullptr, span, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t base = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = RoundUp(base, kHugePageBytes);
  if (aligned > base) ::munmap(raw, aligned - base);
  const uintptr_t end = base + span;
  if (end > aligned + len) {
    ::munmap(reinterpret_cast<void*>(aligned + len), end - (aligned + len));
  }
  void* p = reinterpret_cast<void*>(aligned);
#ifdef MADV_HUGEPAGE
  // A hint: failure (THP compiled out) leaves ordinary pages, still correct.
  (void)::madvise(p, len, MADV_HUGEPAGE);
#endif
  return p;
}

// The number after `key` in a "Key: value kB" file, or -1.
int64_t KibField(const char* path, const std::string& key) {
  std::ifstream in(path);
  std::string word;
  while (in >> word) {
    if (word == key) {
      int64_t kib = -1;
      in >> kib;
      return kib;
    }
    std::string rest;
    std::getline(in, rest);
  }
  return -1;
}

// The number that starts `path`, or -1 (missing file, "max").
int64_t FirstNumber(const char* path) {
  std::ifstream in(path);
  int64_t v = -1;
  if (!(in >> v)) return -1;
  return v;
}

}  // namespace

bool UsesHugePages(size_t bytes) { return bytes >= kHugePageBytes; }

std::shared_ptr<void> AllocateHostMemory(size_t bytes) {
  if (UsesHugePages(bytes)) {
    void* p = MapHugeAligned(bytes);
    if (p == nullptr) return nullptr;
    const size_t len = RoundUp(bytes, kPage);
    return std::shared_ptr<void>(p, [len](void* q) { ::munmap(q, len); });
  }
  const size_t rounded = RoundUp(bytes == 0 ? 1 : bytes, kAlignment);
  void* p = std::aligned_alloc(kAlignment, rounded);
  if (p == nullptr) return nullptr;
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

const char* TransparentHugePageMode() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  if (!in || !std::getline(in, line)) return "unknown";
  // The active mode is bracketed: "always [madvise] never".
  for (const char* mode : {"always", "madvise", "never"}) {
    if (line.find(std::string("[") + mode + "]") != std::string::npos) {
      return mode;
    }
  }
  return "unknown";
}

int64_t AnonHugePageBytes() {
  const int64_t kib = KibField("/proc/self/smaps_rollup", "AnonHugePages:");
  return kib < 0 ? -1 : kib * 1024;
}

int64_t AvailableHostMemoryBytes() {
  const int64_t kib = KibField("/proc/meminfo", "MemAvailable:");
  int64_t avail = kib < 0 ? -1 : kib * 1024;
  const int64_t limit = FirstNumber("/sys/fs/cgroup/memory.max");
  const int64_t used = FirstNumber("/sys/fs/cgroup/memory.current");
  if (limit > 0 && used >= 0) {
    const int64_t room = std::max<int64_t>(0, limit - used);
    avail = avail < 0 ? room : std::min(avail, room);
  }
  return avail;
}

}  // namespace tessera
