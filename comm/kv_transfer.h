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
};

class KvTransferEngine {
 public:
  // Creates the UCX context, worker and progress thread and publishes this
  // rank's worker address in `store` (which must outlive the engine).
  // Unimplemented when tessera was built without UCX.
  static absl::StatusOr<std::unique_ptr<KvTransferEngine>> Create(
      int rank, Store* store, const KvTransferOptions& options = {});
  virtual ~KvTransferEngine() = default;

  // Registers the KV pool (host memory): `num_blocks` blocks of `block_bytes`
  // at `base`, and publishes its packed remote key. Once per engine; the
  // memory must stay valid until the engine is destroyed, which deregisters
  // it.
  virtual absl::Status RegisterPool(void* base, int64_t block_bytes,
                                    int64_t num_blocks) = 0;

  // Like RegisterPool, but UCX allocates the (zeroed) pool, which lets
  // shared-memory transports write it directly; returns its address, valid
  // until the engine is destroyed.
  virtual absl::StatusOr<void*> AllocatePool(int64_t block_bytes,
                                             int64_t num_blocks) = 0;

  // Puts the listed blocks into `peer`'s pool (runs of blocks adjacent in
  // both pools go as one put), flushes, and notifies the receiver with
  // `request_id` (unique among this engine's transfers in flight). Returns
  // once the receiver has acknowledged. Unavailable when the peer is
  // unreachable, dies or does not acknowledge within `timeout`; Cancelled if
  // Cancel(request_id) was called; InvalidArgument for bad block ids.
  virtual absl::Status Transfer(int peer, uint64_t request_id,
                                std::span<const BlockCopy> blocks,
                                std::chrono::milliseconds timeout) = 0;

  // Makes the in-flight Transfer with `request_id` return Cancelled. Puts
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

  // Whether UCX can register CUDA memory directly (else KV pools in device
  // memory must be staged through a registered host buffer by the caller).
  virtual bool SupportsCudaMemory() const = 0;
};

}  // namespace tessera::comm
