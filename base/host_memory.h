// Host memory for large, long-lived buffers (weights, KV pools, activations).
//
// Why: on the VMs we measured (AMD Zen 5 guest, 4 KiB guest pages) decode
// streams 2 GB of weights per token, and every 4 KiB page costs a TLB miss
// and a nested page walk; weights in 2 MiB transparent huge pages decoded a
// TinyLlama-1.1B f16 model at 23 tok/s against 17.5 from 4 KiB pages
// (runtime/README, "Weight memory"). Large allocations are therefore mapped
// 2 MiB-aligned and advised for huge pages (MADV_HUGEPAGE, which the kernel
// honours in THP's `madvise` and `always` modes and ignores in `never`).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace tessera {

// The huge-page size (x86-64 and arm64 with 4 KiB base pages). Allocations of
// at least this many bytes are mapped at this alignment and advised for
// transparent huge pages; smaller ones come from the C heap.
inline constexpr size_t kHugePageBytes = size_t{2} << 20;

// Uninitialized host memory of `bytes` (0 allowed), 64-byte aligned, and 2
// MiB-aligned with a huge-page hint from kHugePageBytes up. Returns
// null when the memory cannot be had (the caller classifies the error).
std::shared_ptr<void> AllocateHostMemory(size_t bytes);

// Whether `bytes` of AllocateHostMemory would be huge-page advised.
bool UsesHugePages(size_t bytes);

// The system's transparent-huge-page mode as the kernel reports it in
// /sys/kernel/mm/transparent_hugepage/enabled: "always", "madvise", "never",
// or "unknown" when the file is missing (non-Linux, old kernels).
const char* TransparentHugePageMode();

// Bytes of AnonHugePages the kernel reports for this process (from
// /proc/self/smaps_rollup), or -1 when unreadable. For benchmarks and notes.
int64_t AnonHugePageBytes();

// Bytes this process could take now without swapping or hitting its cgroup's
// limit: MemAvailable, capped by cgroup v2 memory.max - memory.current (a
// container on a large host sees the host in /proc/meminfo). -1 if unknown.
int64_t AvailableHostMemoryBytes();

}  // namespace tessera
