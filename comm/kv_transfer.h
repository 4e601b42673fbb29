// KV-block transfer engine (the transfer plane): moves KV-cache blocks from a
// prefill rank's pool into a decode rank's pool with one-sided UCX puts, and
// carries small control messages as UCX active messages.
//
// Progress model: each engine owns one UCX context and one worker, driven by
// its own progress thread (the worker is only touched from that thread, so
// the public methods are thread-safe). By default the thread is event-driven:
// it arms the worker and sleeps on its event fd (plus an eventfd for new
// commands), which on a shared or oversubscribed host is far faster than
// spinning (a spinning sender steals the CPU the receiver needs to
// acknowledge). KvTransferOptions::busy_poll adds spinning for dedicated
// cores.
//
// Transfers are pipelined: PostTransfer returns as soon as the transfer is
// queued and WaitTransfer collects its result, so a caller keeps a window of
// transfers in flight and their puts, flushes and notifications overlap
// instead of paying one round trip each. Transfer = PostTransfer +
// WaitTransfer.
//
// Transports follow UCX_TLS (e.g. UCX_TLS=shm or UCX_TLS=tcp).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/bootstrap.h"

namespace tessera::comm {

// Copy block `src_block` of the local pool to block `dst_block` of the peer's.
struct BlockCopy {
  int64_t src_block = 0;
  int64_t dst_block = 0;
};

// Delivered to the receiver once every block of a transfer has landed.
struct TransferCompletion {
  int peer = -1;            // The sender's rank.
  uint64_t request_id = 0;  // The id the sender passed to Transfer.
};

// A control message (request metadata, token ids...).
struct ControlMessage {
  int peer = -1;
  std::string payload;
};

// Largest control message payload.
inline constexpr size_t kMaxControlBytes = 64 * 1024;

struct KvTransferOptions {
  // Keys in the store are "<store_prefix>/<rank>/...", so several engines
  // (e.g. one per instance) can share a bootstrap store.
  std::string store_prefix = "tessera/kv";
  // How long to wait for a peer's address and pool key in the store.
  std::chrono::milliseconds lookup_timeout{30000};
  // If > 0, the progress thread spins while requests are in flight and for
  // this long after the last activity before sleeping (dedicated cores only).
  std::chrono::microseconds busy_poll{0};
  // Longest sleep on the event fds; also the resolution of timeouts.
  int nap_ms = 50;
  // Stage the pool through a registered host buffer even when UCX could
  // register it directly. The staged path is what CUDA pools take when UCX
  // has no CUDA support; forcing it on host memory tests it without a GPU.
  bool force_staging = false;
  // Blocks in the staging buffer (the most blocks one staged chunk moves).
  int64_t staging_blocks = 64;
  // Staged pools only: blocks in the landing area, the registered host
  // buffer incoming transfers are put into before the receiver copies them
  // into the pool. Senders are granted slots of it (at most half each, so a
  // stream double-buffers and several senders share it).
  int64_t landing_blocks = 128;
};

// Where a registered pool lives.
enum class PoolMemory { kHost, kCuda };

// Counters, for benchmarks and monitoring (sender side unless noted).
struct KvTransferStats {
  int64_t transfers = 0;      // Transfers whose puts were posted.
  int64_t puts = 0;           // ucp_put_nbx calls (after coalescing).
  int64_t staged_chunks = 0;  // Chunks copied through the staging buffer.
  int64_t notifications = 0;  // Completion batches sent (transfers/batch).
  int64_t grants = 0;         // Landing-slot grants used (staged receivers).
  // Receiver side, staged pools: chunks copied from the landing area into
  // the pool, and grants revoked because their sender went silent or gave
  // up (their slots were recycled).
  int64_t landed_chunks = 0;
  int64_t revoked_grants = 0;
  // Set-up = PostTransfer call to its first put posted. "Cold" transfers
  // were the first to their peer (store look-up, endpoint, rkey unpack);
  // "warm" ones reused the cached endpoint and unpacked rkey.
  int64_t cold_transfers = 0;
  std::chrono::nanoseconds cold_setup{0};  // Sum over cold transfers.
  int64_t warm_transfers = 0;
  std::chrono::nanoseconds warm_setup{0};    // Sum over warm transfers.
  int64_t connects = 0;                      // Endpoint + rkey set-ups.
  std::chrono::nanoseconds connect_time{0};  // Sum of their durations.
};

class KvTransferEngine {
 public:
  // Creates the UCX context, worker and progress thread and publishes this
  // rank's worker address in `store` (which must outlive the engine).
  // Unimplemented when tessera was built without UCX.
  static absl::StatusOr<std::unique_ptr<KvTransferEngine>> Create(
      int rank, Store* store, const KvTransferOptions& options = {});
  virtual ~KvTransferEngine() = default;

  // Registers the KV pool: `num_blocks` blocks of `block_bytes` at `base`,
  // and publishes its packed remote key. Once per engine; the memory must
  // stay valid until the engine is destroyed, which deregisters it. CUDA
  // pools are registered directly when UCX supports CUDA memory
  // (SupportsCudaMemory), else staged: outgoing blocks are copied through
  // a registered host staging buffer, incoming ones land in a registered
  // host landing area (KvTransferOptions::landing_blocks slots granted to
  // senders) and are copied into the pool before the transfer completes.
  virtual absl::Status RegisterPool(void* base, int64_t block_bytes,
                                    int64_t num_blocks,
                                    PoolMemory memory = PoolMemory::kHost) = 0;

  // Like RegisterPool, but UCX allocates the (zeroed) pool, which lets
  // shared-memory transports write it directly; returns its address, valid
  // until the engine is destroyed.
  virtual absl::StatusOr<void*> AllocatePool(int64_t block_bytes,
                                             int64_t num_blocks) = 0;

  // Queues a transfer of the listed blocks into `peer`'s pool (runs of
  // blocks adjacent in both pools go as one put; then a flush and a
  // notification carrying `request_id`, unique among this engine's
  // transfers in flight) and returns without waiting. Errors found before
  // anything is queued (bad block ids, unknown peer, duplicate id) are
  // returned here; everything later by WaitTransfer. The source blocks must
  // not be modified until WaitTransfer returns.
  virtual absl::Status PostTransfer(int peer, uint64_t request_id,
                                    std::span<const BlockCopy> blocks,
                                    std::chrono::milliseconds timeout) = 0;

  // Waits for a posted transfer: OK once the receiver has acknowledged it;
  // Unavailable when the peer is unreachable, dies or does not acknowledge
  // within the transfer's timeout; Cancelled after Cancel(request_id);
  // NotFound for an id that is not posted (or was already waited for).
  virtual absl::Status WaitTransfer(uint64_t request_id) = 0;

  // PostTransfer + WaitTransfer.
  absl::Status Transfer(int peer, uint64_t request_id,
                        std::span<const BlockCopy> blocks,
                        std::chrono::milliseconds timeout);

  // Makes the in-flight transfer with `request_id` return Cancelled. Puts
  // already posted may still land; the receiver gets no completion for it.
  // NotFound when no such transfer is in flight.
  virtual absl::Status Cancel(uint64_t request_id) = 0;

  // Next completed incoming transfer; DeadlineExceeded after `timeout`.
  virtual absl::StatusOr<TransferCompletion> WaitCompletion(
      std::chrono::milliseconds timeout) = 0;

  // Sends a control message (at most kMaxControlBytes); returns once it
  // left this process. Unavailable for an unreachable peer.
  virtual absl::Status SendControl(int peer, std::string_view payload,
                                   std::chrono::milliseconds timeout) = 0;
  // Next control message received; DeadlineExceeded after `timeout`.
  virtual absl::StatusOr<ControlMessage> WaitControl(
      std::chrono::milliseconds timeout) = 0;

  // Whether UCX can register CUDA memory directly (else CUDA pools are
  // staged through registered host buffers, both ways).
  virtual bool SupportsCudaMemory() const = 0;

  // Counters: sender side (set-up latency, puts, staged chunks, grants)
  // and, for staged pools, receiver side (landed chunks, revoked grants).
  virtual KvTransferStats Stats() const = 0;
};

}  // namespace tessera::comm
