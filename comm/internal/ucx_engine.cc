// The UCX implementation of KvTransferEngine. See comm/kv_transfer.h for the
// contract and comm/README.md for the design.
#include <poll.h>
#include <sys/eventfd.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <unordered_map>

#include "base/build_config.h"
#include "base/status.h"
#include "comm/kv_transfer.h"
#include "fmt/format.h"
#include "spdlog/spdlog.h"

#if TESSERA_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace tessera::comm::internal {
namespace {

using Clock = std::chrono::steady_clock;

// Active message ids.
constexpr uint16_t kAmDone = 1;     // Sender → receiver: transfers landed.
constexpr uint16_t kAmAck = 2;      // Receiver → sender: got them.
constexpr uint16_t kAmControl = 3;  // Either way: control message.
// Receive-side staging (the destination pool is staged; see comm/README.md).
constexpr uint16_t kAmRxRequest = 4;  // Sender → receiver: slots wanted.
constexpr uint16_t kAmGrant = 5;      // Receiver → sender: slots granted.
constexpr uint16_t kAmChunk = 6;      // Sender → receiver: a grant landed.
constexpr uint16_t kAmRxAck = 7;      // Receiver → sender: in the pool.
constexpr uint16_t kAmRelease = 8;    // Sender → receiver: gave up.

// One transfer in a kAmDone batch (and the header of control messages).
// The receiver echoes the entries back in its kAmAck, so the sender finds
// each transfer by slot (no map look-up) and the generation rejects acks of
// an earlier use of the slot.
struct AmHeader {
  uint64_t request_id;
  uint32_t slot;
  uint32_t generation;
  int32_t sender;
  int32_t pad;
};

// Header of kAmDone / kAmAck; the payload is `count` AmHeader entries.
// Notifications are self-clocked per peer: while a batch is unacknowledged,
// transfers whose puts landed wait, and the next batch carries all of them.
// An isolated transfer is notified at once; under load one round trip (one
// wake-up of each side) covers many transfers.
struct BatchHeader {
  int32_t sender;
  uint32_t count;
};
constexpr uint32_t kMaxBatch = 128;  // 3 KiB of entries: always eager.

// What a rank publishes about its pool.
struct PoolInfo {
  uint64_t base;  // Staged pools: the landing area (the pool is not remote).
  int64_t block_bytes;
  int64_t num_blocks;
  uint64_t flags;          // kPoolStaged: senders put into granted slots.
  int64_t landing_blocks;  // Staged pools: slots in the landing area.
};
constexpr uint64_t kPoolStaged = 1;

// --- Receive-side staging messages. Every one names the transfer by the
// sender's AmHeader {request id, op slot, generation, sender}. ---

// kAmRxRequest: the transfer needs `total_blocks` landing slots, at most
// `max_grant` per grant (a staged sender's staging buffer), and gives up
// after `timeout_ms`.
struct RxRequest {
  AmHeader entry;
  uint64_t total_blocks;
  uint32_t max_grant;
  uint32_t timeout_ms;
};
// kAmGrant: blocks [begin, begin + count) of the transfer (in the sender's
// order) go to the `count` landing slots in the payload (uint32 each).
// `token` names the grant in the chunk message.
struct GrantHeader {
  AmHeader entry;
  uint64_t begin;
  uint32_t token;
  uint32_t count;
};
// kAmChunk: the grant's puts landed (sent after their flush); the payload
// is the `count` destination block ids (int64 each), in slot order.
struct ChunkHeader {
  AmHeader entry;
  uint32_t token;
  uint32_t count;
};
// kAmRxAck: the transfer is in the receiver's pool (code 0) or was refused
// (an absl::StatusCode).
struct RxAckHeader {
  AmHeader entry;
  int32_t code;
  int32_t pad;
};
// Most slots in one grant: bounds the grant and chunk messages (2-3 KiB).
constexpr uint32_t kMaxGrant = 256;
// An incoming staged transfer is revoked this long after the sender's own
// timeout (its grants are then quarantined for that timeout before reuse).
constexpr auto kRevokeGrace = std::chrono::milliseconds(500);

// Most operations (transfers + control sends) in flight per engine.
constexpr uint32_t kMaxOps = 16384;

std::string UcsError(ucs_status_t s) { return ucs_status_string(s); }

class UcxEngine;
struct Op;

// User data of UCX requests. Embedded in Op / MsgSlot: no allocation per
// request.
struct MsgSlot;
struct ReqCtx {
  enum Kind { kPut, kFlush, kAm, kMsg };
  UcxEngine* engine = nullptr;
  Op* op = nullptr;        // kPut, kFlush, kAm.
  MsgSlot* msg = nullptr;  // kMsg.
  Kind kind = kPut;
  int peer = -1;
};

// A grant of landing slots received by the sender of a transfer to a staged
// pool; the slots are in Op::landing[begin, begin + count).
struct Grant {
  uint64_t begin;
  uint32_t token;
  uint32_t count;
};

struct Run {
  int64_t src_block, dst_block, count;
};

struct PeerInfo {
  std::string address;
  PoolInfo pool{};
  std::string rkey;
};

// A transfer or control send. Slots are allocated once and reused: a slot is
// busy from PostTransfer until both the caller (WaitTransfer) and the
// progress thread (no request outstanding) released it.
struct Op {
  // Written by the caller before posting; read-only until recycled.
  uint64_t id = 0;
  int peer = -1;
  bool is_transfer = true;
  uint32_t slot = 0;
  uint32_t generation = 0;
  Clock::time_point posted;
  Clock::time_point deadline;
  std::chrono::milliseconds timeout{0};
  std::vector<Run> runs;          // Coalesced; capacity reused.
  std::vector<BlockCopy> sorted;  // Scratch; capacity reused.
  std::shared_ptr<const PeerInfo> info;
  std::string payload;  // Control messages: kept alive until sent.
  std::atomic<int> refs{0};

  // Progress-thread state.
  bool worker_owned = false;  // Between StartTransfer and the release.
  bool in_staging = false;    // Queued in staged_queue_.
  // Transfers to a staged pool: slots are granted by the receiver.
  bool remote_staged = false;     // Written by the caller before posting.
  bool rx_requested = false;      // kAmRxRequest sent ...
  bool rx_closed = false;         // ... and answered (else kAmRelease is owed).
  std::vector<uint32_t> landing;  // landing[i]: the slot for sorted[i].
  // Grants in arrival order: [0, grants_sent) chunk message sent,
  // [grants_sent, grants_put) put and flushing, [grants_put, end) waiting.
  std::vector<Grant> grants;
  size_t grants_put = 0, grants_sent = 0;
  AmHeader header{};
  int pending_requests = 0;
  size_t next_run = 0;        // Staged: first run of the next chunk ...
  int64_t next_run_done = 0;  // ... and blocks of it already sent.
  ReqCtx put_ctx, flush_ctx, am_ctx;

  // Completion, shared between the caller and the progress thread.
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<bool> done{false};
  absl::Status status;  // Under mu; final once done.

  void Finish(absl::Status s) {
    std::lock_guard lock(mu);
    if (done.load()) return;
    status = std::move(s);
    done.store(true);
    cv.notify_all();
  }
  bool finished() const { return done.load(); }
};

// A kAmDone or kAmAck batch in flight (its buffers must outlive the send);
// reused from a free list.
struct MsgSlot {
  BatchHeader header{};
  std::vector<AmHeader> entries;
  ReqCtx ctx;
  ucp_ep_h reply_ep = nullptr;  // Acks: where to send.
  bool is_done = false;         // A kAmDone batch (else an ack or raw).
  // Other messages (SendRaw): copies of header and payload.
  std::vector<char> raw_header, raw_data;
};

// Receiver side of receive-side staging: landing slots granted to one
// transfer, until its chunk message arrives.
struct GrantRec {
  uint32_t token = 0;
  uint32_t count = 0;
  std::vector<uint32_t> slots;  // Capacity reused.
};

// An incoming transfer into this engine's staged pool.
struct Incoming {
  AmHeader entry{};  // The sender's names for it.
  ucp_ep_h reply_ep = nullptr;
  uint64_t total = 0, granted = 0, landed = 0;
  uint32_t max_grant = 1;
  Clock::time_point deadline;
  std::chrono::milliseconds timeout{0};
  std::vector<GrantRec> grants;  // [0, live_grants) outstanding.
  size_t live_grants = 0;
  bool waiting = false;  // In want_slots_.
  bool refuse = false;   // No staged pool here: answer with an error.
};

// A kAmChunk message, kept until the progress pass after the callback.
struct PendingChunk {
  ChunkHeader header{};
  ucp_ep_h reply_ep = nullptr;
  std::vector<int64_t> dst;  // Capacity reused.
};

struct Peer {
  ucp_ep_h ep = nullptr;
  ucp_rkey_h rkey = nullptr;
  PoolInfo pool{};
  bool failed = false;
  bool peer_failure_detection = true;  // Error mode PEER (force close ok).
  // Transfers whose puts landed, waiting for the next kAmDone batch.
  std::vector<AmHeader> done_ready;
  bool done_in_flight = false;  // A batch is unacknowledged.
};

class UcxEngine final : public KvTransferEngine {
 public:
  UcxEngine(int rank, Store* store, const KvTransferOptions& options)
      : rank_(rank),
        store_(store),
        options_(options),
        ops_(new std::atomic<Op*>[kMaxOps]) {
    for (uint32_t i = 0; i < kMaxOps; ++i) ops_[i].store(nullptr);
    transfers_.reserve(1024);
    posted_.reserve(1024);
    batch_.reserve(1024);
    live_ops_.reserve(1024);
    pending_acks_.reserve(1024);
    ready_peers_.reserve(64);
  }

  ~UcxEngine() override {
    RunOnWorker([this] { ShutdownOnWorker(); });
    stop_.store(true);
    Wake();
    if (thread_.joinable()) thread_.join();
    // Registrations are released even when the worker is leaked: the
    // requests stuck on it are sends to a dead shared-memory peer whose
    // payloads are ours, and the worker never progresses again.
    if (memh_ != nullptr) ucp_mem_unmap(context_, memh_);
#if TESSERA_HAVE_CUDA
    if (copy_stream_ != nullptr) cudaStreamDestroy(copy_stream_);
    if (pinned_ != nullptr) cudaHostUnregister(pinned_);
#endif
    if (staging_memh_ != nullptr) ucp_mem_unmap(context_, staging_memh_);
    if (!leak_worker_) {
      if (worker_ != nullptr) ucp_worker_destroy(worker_);
      if (context_ != nullptr) ucp_cleanup(context_);
    }
    if (wake_fd_ >= 0) ::close(wake_fd_);
    for (uint32_t i = 0; i < num_ops_; ++i) delete ops_[i].load();
  }

  absl::Status Init() {
    ucp_config_t* config = nullptr;
    ucs_status_t s = ucp_config_read(nullptr, nullptr, &config);
    if (s != UCS_OK) {
      return absl::InternalError("ucp_config_read: " + UcsError(s));
    }
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
    s = ucp_init(&params, config, &context_);
    ucp_config_release(config);
    if (s != UCS_OK) {
      return absl::UnavailableError("ucp_init: " + UcsError(s) +
                                    " (check UCX_TLS)");
    }
    ucp_context_attr_t cattr{};
    cattr.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
    if (ucp_context_query(context_, &cattr) == UCS_OK) {
      cuda_ = (cattr.memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) != 0;
    }
    ucp_worker_params_t wparams{};
    wparams.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wparams.thread_mode = UCS_THREAD_MODE_SINGLE;  // Only our thread.
    s = ucp_worker_create(context_, &wparams, &worker_);
    if (s != UCS_OK) {
      return absl::UnavailableError("ucp_worker_create: " + UcsError(s));
    }
    s = ucp_worker_get_efd(worker_, &worker_fd_);
    if (s != UCS_OK) {
      return absl::UnavailableError("ucp_worker_get_efd: " + UcsError(s));
    }
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) return absl::InternalError("eventfd failed");

    RETURN_IF_ERROR(SetAmHandler(kAmDone, &UcxEngine::OnDoneAm));
    RETURN_IF_ERROR(SetAmHandler(kAmAck, &UcxEngine::OnAckAm));
    RETURN_IF_ERROR(SetAmHandler(kAmControl, &UcxEngine::OnControlAm));
    RETURN_IF_ERROR(SetAmHandler(kAmRxRequest, &UcxEngine::OnRxRequestAm));
    RETURN_IF_ERROR(SetAmHandler(kAmGrant, &UcxEngine::OnGrantAm));
    RETURN_IF_ERROR(SetAmHandler(kAmChunk, &UcxEngine::OnChunkAm));
    RETURN_IF_ERROR(SetAmHandler(kAmRxAck, &UcxEngine::OnRxAckAm));
    RETURN_IF_ERROR(SetAmHandler(kAmRelease, &UcxEngine::OnReleaseAm));

    ucp_address_t* addr = nullptr;
    size_t addr_len = 0;
    s = ucp_worker_get_address(worker_, &addr, &addr_len);
    if (s != UCS_OK) {
      return absl::UnavailableError("ucp_worker_get_address: " + UcsError(s));
    }
    std::string address(reinterpret_cast<const char*>(addr), addr_len);
    ucp_worker_release_address(worker_, addr);
    thread_ = std::thread([this] { ProgressLoop(); });
    return store_->Set(Key(rank_, "worker"), address);
  }

  absl::StatusOr<void*> AllocatePool(int64_t block_bytes,
                                     int64_t num_blocks) override {
    RETURN_IF_ERROR(
        RegisterPoolImpl(nullptr, block_bytes, num_blocks, PoolMemory::kHost));
    return reinterpret_cast<void*>(pool_.base);
  }

  absl::Status RegisterPool(void* base, int64_t block_bytes, int64_t num_blocks,
                            PoolMemory memory) override {
    if (base == nullptr) {
      return absl::InvalidArgumentError("RegisterPool needs a buffer");
    }
    return RegisterPoolImpl(base, block_bytes, num_blocks, memory);
  }

  // base == nullptr: UCX allocates the pool (shared-memory segments, so
  // shm puts are plain copies into the peer's mapping).
  absl::Status RegisterPoolImpl(void* base, int64_t block_bytes,
                                int64_t num_blocks, PoolMemory memory) {
    if (block_bytes <= 0 || num_blocks <= 0) {
      return absl::InvalidArgumentError(
          "RegisterPool needs a buffer, block_bytes > 0 and num_blocks > 0");
    }
    if (num_blocks > INT64_MAX / block_bytes) {
      return absl::InvalidArgumentError("RegisterPool: size overflows");
    }
#if !TESSERA_HAVE_CUDA
    if (memory == PoolMemory::kCuda) {
      return absl::UnimplementedError(
          "CUDA KV pool: tessera was built without CUDA");
    }
#endif
    // Stage when asked to, or for CUDA memory UCX cannot register.
    const bool staged =
        base != nullptr &&
        (options_.force_staging || (memory == PoolMemory::kCuda && !cuda_));
    if (staged &&
        (options_.staging_blocks <= 0 || options_.landing_blocks <= 0 ||
         options_.landing_blocks > (int64_t{1} << 30))) {
      return absl::InvalidArgumentError(
          "staging_blocks must be > 0 and landing_blocks in (0, 2^30]");
    }
    // A staged pool registers one UCX-allocated host buffer: the staging
    // buffer (outgoing chunks), then the landing area (incoming grants).
    const int64_t stage_blocks =
        staged ? std::min(options_.staging_blocks, num_blocks) : 0;
    const int64_t land_blocks = staged ? options_.landing_blocks : 0;
    if (staged && stage_blocks + land_blocks > INT64_MAX / block_bytes) {
      return absl::InvalidArgumentError("RegisterPool: staging overflows");
    }
    std::string packed;
    absl::Status status;
    RunOnWorker([&] {
      if (memh_ != nullptr || staging_memh_ != nullptr) {
        status = absl::FailedPreconditionError("pool already registered");
        return;
      }
#if TESSERA_HAVE_CUDA
      // The staging copies run on this thread: on the pool's device.
      if (memory == PoolMemory::kCuda) {
        cudaPointerAttributes pa{};
        if (cudaPointerGetAttributes(&pa, base) != cudaSuccess ||
            pa.type != cudaMemoryTypeDevice) {
          (void)cudaGetLastError();
          status = absl::InvalidArgumentError(
              "RegisterPool(kCuda): not device memory");
          return;
        }
        cudaSetDevice(pa.device);
      }
#endif
      // A staged pool registers only its staging buffer and landing area
      // (UCX-allocated host memory); the pool itself is read with
      // PoolCopyOut and written with PoolCopyIn.
      ucp_mem_map_params_t mp{};
      mp.field_mask =
          UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
      mp.address = staged ? nullptr : base;
      mp.length = static_cast<size_t>(
          block_bytes * (staged ? stage_blocks + land_blocks : num_blocks));
      if (mp.address == nullptr) {
        mp.field_mask |= UCP_MEM_MAP_PARAM_FIELD_FLAGS;
        mp.flags = UCP_MEM_MAP_ALLOCATE;
      } else if (memory == PoolMemory::kCuda) {
        mp.field_mask |= UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
        mp.memory_type = UCS_MEMORY_TYPE_CUDA;
      }
      ucp_mem_h memh = nullptr;
      ucs_status_t s = ucp_mem_map(context_, &mp, &memh);
      if (s != UCS_OK) {
        status = absl::ResourceExhaustedError("ucp_mem_map: " + UcsError(s));
        return;
      }
      void* mapped = mp.address;
      if (mapped == nullptr) {
        ucp_mem_attr_t attr{};
        attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS;
        ucp_mem_query(memh, &attr);
        mapped = attr.address;
        std::memset(mapped, 0, mp.length);
      }
      void* rkey = nullptr;
      size_t rkey_len = 0;
      s = ucp_rkey_pack(context_, memh, &rkey, &rkey_len);
      if (s != UCS_OK) {
        ucp_mem_unmap(context_, memh);
        status = absl::InternalError("ucp_rkey_pack: " + UcsError(s));
        return;
      }
      if (staged) {
        staging_memh_ = memh;
        staging_ = static_cast<char*>(mapped);
        staging_blocks_ = stage_blocks;
        landing_ = staging_ + stage_blocks * block_bytes;
        landing_blocks_ = land_blocks;
        slot_free_.assign(static_cast<size_t>(land_blocks), 1);
        free_slots_ = land_blocks;
        pool_memory_ = memory;
#if TESSERA_HAVE_CUDA
        // Pinned, the staging copies are DMA transfers instead of going
        // through the driver's own pageable bounce buffer.
        if (memory == PoolMemory::kCuda) {
          // One stream for the staging copies: a chunk's block copies are
          // queued back to back and waited for once (PoolCopyWait).
          if (copy_stream_ == nullptr &&
              cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking) !=
                  cudaSuccess) {
            (void)cudaGetLastError();
            copy_stream_ = nullptr;  // Copies fall back to the null stream.
          }
          if (cudaHostRegister(mapped, mp.length, cudaHostRegisterDefault) ==
              cudaSuccess) {
            pinned_ = mapped;
          } else {
            (void)cudaGetLastError();
            spdlog::info(
                "KV transfer: cannot pin the staging buffer; staging copies "
                "use pageable memory");
          }
        }
#endif
      } else {
        memh_ = memh;
        base = mapped;
      }
      // Remote writes go to the landing area of a staged pool.
      const uint64_t remote_base = reinterpret_cast<uint64_t>(
          staged ? static_cast<void*>(landing_) : base);
      PoolInfo info{remote_base, block_bytes, num_blocks,
                    staged ? kPoolStaged : 0, land_blocks};
      packed.assign(reinterpret_cast<const char*>(&info), sizeof(info));
      packed.append(static_cast<const char*>(rkey), rkey_len);
      ucp_rkey_buffer_release(rkey);
      pool_ = info;
      pool_.base = reinterpret_cast<uint64_t>(base);  // The local address.
    });
    RETURN_IF_ERROR(status);
    return store_->Set(Key(rank_, "pool"), packed);
  }

  absl::Status PostTransfer(int peer, uint64_t request_id,
                            std::span<const BlockCopy> blocks,
                            std::chrono::milliseconds timeout) override {
    const auto posted = Clock::now();
    if (pool_.num_blocks == 0) {
      return absl::FailedPreconditionError(
          "Transfer before RegisterPool on this engine");
    }
    if (peer < 0) return absl::InvalidArgumentError("bad peer rank");
    ASSIGN_OR_RETURN(std::shared_ptr<const PeerInfo> info,
                     LookupPeer(peer, /*need_pool=*/true, timeout));
    const PoolInfo& remote = info->pool;
    const bool remote_staged = (remote.flags & kPoolStaged) != 0;
    if (remote.block_bytes != pool_.block_bytes) {
      return absl::InvalidArgumentError(
          fmt::format("block size differs: {} here, {} on rank {}",
                      pool_.block_bytes, remote.block_bytes, peer));
    }
    for (const BlockCopy& b : blocks) {
      if (b.src_block < 0 || b.src_block >= pool_.num_blocks ||
          b.dst_block < 0 || b.dst_block >= remote.num_blocks) {
        return absl::InvalidArgumentError(fmt::format(
            "block copy {} -> {} is outside the pools ({} local, {} on rank "
            "{})",
            b.src_block, b.dst_block, pool_.num_blocks, remote.num_blocks,
            peer));
      }
    }
    ASSIGN_OR_RETURN(
        Op * op, AcquireOp(request_id, peer, posted, timeout, std::move(info)));
    // Coalesce: sort by source, merge runs adjacent on both sides.
    op->sorted.assign(blocks.begin(), blocks.end());
    std::sort(op->sorted.begin(), op->sorted.end(),
              [](const BlockCopy& a, const BlockCopy& b) {
                return a.src_block < b.src_block;
              });
    op->runs.clear();
    for (const BlockCopy& b : op->sorted) {
      if (!op->runs.empty() &&
          op->runs.back().src_block + op->runs.back().count == b.src_block &&
          op->runs.back().dst_block + op->runs.back().count == b.dst_block) {
        ++op->runs.back().count;
      } else {
        op->runs.push_back({b.src_block, b.dst_block, 1});
      }
    }
    // A staged receiver grants landing slots for sorted[i], in order.
    op->remote_staged = remote_staged;
    if (remote_staged) op->landing.resize(op->sorted.size());
    PostOp(op);
    return absl::OkStatus();
  }

  absl::Status WaitTransfer(uint64_t request_id) override {
    Op* op = nullptr;
    {
      std::lock_guard lock(ops_mu_);
      auto it = transfers_.find(request_id);
      if (it == transfers_.end()) {
        return absl::NotFoundError(
            fmt::format("no transfer {} posted", request_id));
      }
      op = it->second;
    }
    absl::Status s = WaitOp(*op);
    {
      std::lock_guard lock(ops_mu_);
      auto node = transfers_.extract(request_id);
      if (!node.empty()) spare_nodes_.push_back(std::move(node));
    }
    ReleaseOp(op);
    return s;
  }

  absl::Status Cancel(uint64_t request_id) override {
    std::lock_guard lock(ops_mu_);
    auto it = transfers_.find(request_id);
    if (it == transfers_.end()) {
      return absl::NotFoundError(
          fmt::format("no transfer {} in flight", request_id));
    }
    it->second->Finish(
        absl::CancelledError(fmt::format("transfer {} cancelled", request_id)));
    return absl::OkStatus();
  }

  absl::StatusOr<TransferCompletion> WaitCompletion(
      std::chrono::milliseconds timeout) override {
    std::unique_lock lock(rx_mu_);
    if (!rx_cv_.wait_for(lock, timeout,
                         [&] { return !completions_.empty(); })) {
      return absl::DeadlineExceededError(fmt::format(
          "no incoming transfer completed within {} ms", timeout.count()));
    }
    TransferCompletion c = completions_.front();
    completions_.pop_front();
    return c;
  }

  absl::Status SendControl(int peer, std::string_view payload,
                           std::chrono::milliseconds timeout) override {
    if (payload.size() > kMaxControlBytes) {
      return absl::InvalidArgumentError(
          fmt::format("control message of {} bytes exceeds {}", payload.size(),
                      kMaxControlBytes));
    }
    const auto posted = Clock::now();
    ASSIGN_OR_RETURN(std::shared_ptr<const PeerInfo> info,
                     LookupPeer(peer, /*need_pool=*/false, timeout));
    ASSIGN_OR_RETURN(Op * op, AcquireOp(std::nullopt, peer, posted, timeout,
                                        std::move(info)));
    op->payload.assign(payload.data(), payload.size());
    PostOp(op);
    absl::Status s = WaitOp(*op);
    ReleaseOp(op);
    return s;
  }

  absl::StatusOr<ControlMessage> WaitControl(
      std::chrono::milliseconds timeout) override {
    std::unique_lock lock(rx_mu_);
    if (!control_cv_.wait_for(lock, timeout,
                              [&] { return !controls_.empty(); })) {
      return absl::DeadlineExceededError(fmt::format(
          "no control message arrived within {} ms", timeout.count()));
    }
    ControlMessage m = std::move(controls_.front());
    controls_.pop_front();
    return m;
  }

  bool SupportsCudaMemory() const override { return cuda_; }

  KvTransferStats Stats() const override {
    std::lock_guard lock(stats_mu_);
    return stats_;
  }

  // --- UCX callbacks (progress thread) ---
  void OnRequestDone(ReqCtx* ctx, ucs_status_t status) {
    --outstanding_requests_;
    --outstanding_by_peer_[ctx->peer];
    if (ctx->kind == ReqCtx::kMsg) {
      if (status != UCS_OK && ctx->msg->is_done) {
        FinishEntries(ctx->msg->entries, absl::UnavailableError(fmt::format(
                                             "rank {} unreachable: {}",
                                             ctx->peer, UcsError(status))));
      }
      free_msgs_.push_back(ctx->msg);
      return;
    }
    Op& op = *ctx->op;
    --op.pending_requests;
    Complete(ctx, status);
  }

 private:
  std::string Key(int rank, const char* what) const {
    return fmt::format("{}/{}/{}", options_.store_prefix, rank, what);
  }

  // --- Op slots (caller threads) ---

  // A free slot for a transfer (`request_id`, registered so WaitTransfer
  // and Cancel find it) or a control message (nullopt) to `peer`, reset and
  // stamped with its deadline. No allocation once the slots and map nodes
  // exist.
  absl::StatusOr<Op*> AcquireOp(std::optional<uint64_t> request_id, int peer,
                                Clock::time_point posted,
                                std::chrono::milliseconds timeout,
                                std::shared_ptr<const PeerInfo> info) {
    std::lock_guard lock(ops_mu_);
    if (request_id) {
      if (transfers_.count(*request_id) != 0) {
        return absl::InvalidArgumentError(
            fmt::format("transfer {} is already in flight", *request_id));
      }
    }
    Op* op = nullptr;
    if (!free_ops_.empty()) {
      op = free_ops_.back();
      free_ops_.pop_back();
    } else {
      if (num_ops_ == kMaxOps) {
        return absl::ResourceExhaustedError(fmt::format(
            "more than {} KV transfers in flight on this engine", kMaxOps));
      }
      op = new Op;
      op->slot = num_ops_;
      op->put_ctx = {this, op, nullptr, ReqCtx::kPut, -1};
      op->flush_ctx = {this, op, nullptr, ReqCtx::kFlush, -1};
      op->am_ctx = {this, op, nullptr, ReqCtx::kAm, -1};
      ops_[num_ops_].store(op);
      ++num_ops_;
      if (free_ops_.capacity() < num_ops_) free_ops_.reserve(2 * num_ops_);
    }
    // Neither the progress thread nor a waiter references a free slot.
    ++op->generation;
    op->id = request_id.value_or(0);
    op->refs.store(2);  // The caller and the progress thread.
    op->done.store(false);
    op->status = absl::OkStatus();
    op->pending_requests = 0;
    op->next_run = 0;
    op->next_run_done = 0;
    op->peer = peer;
    op->is_transfer = request_id.has_value();
    op->posted = posted;
    op->timeout = timeout;
    op->deadline = posted + timeout;
    op->info = std::move(info);
    op->remote_staged = false;
    op->rx_requested = false;
    op->rx_closed = false;
    op->grants.clear();
    op->grants_put = 0;
    op->grants_sent = 0;
    if (request_id) {
      if (!spare_nodes_.empty()) {
        auto node = std::move(spare_nodes_.back());
        spare_nodes_.pop_back();
        node.key() = *request_id;
        node.mapped() = op;
        transfers_.insert(std::move(node));
      } else {
        transfers_.emplace(*request_id, op);
      }
    }
    return op;
  }

  // Drops one of the two references; the last one frees the slot.
  void ReleaseOp(Op* op) {
    if (op->refs.fetch_sub(1) != 1) return;
    op->info.reset();
    std::lock_guard lock(ops_mu_);
    free_ops_.push_back(op);
  }

  // Reads (once) the peer's worker address and pool key from the store,
  // waiting at most min(timeout, lookup_timeout).
  absl::StatusOr<std::shared_ptr<const PeerInfo>> LookupPeer(
      int peer, bool need_pool, std::chrono::milliseconds timeout) {
    const auto wait = std::min(timeout, options_.lookup_timeout);
    {
      std::lock_guard lock(peers_mu_);
      auto it = peer_info_.find(peer);
      if (it != peer_info_.end() && (!need_pool || !it->second->rkey.empty())) {
        return it->second;
      }
    }
    auto info = std::make_shared<PeerInfo>();
    auto addr = store_->Get(Key(peer, "worker"), wait);
    if (!addr.ok()) {
      return absl::UnavailableError(
          fmt::format("rank {} has no KV transfer engine: {}", peer,
                      std::string(addr.status().message())));
    }
    info->address = *std::move(addr);
    if (need_pool) {
      auto pool = store_->Get(Key(peer, "pool"), wait);
      if (!pool.ok()) {
        return absl::UnavailableError(
            fmt::format("rank {} registered no KV pool: {}", peer,
                        std::string(pool.status().message())));
      }
      if (pool->size() <= sizeof(PoolInfo)) {
        return absl::InvalidArgumentError(
            fmt::format("rank {} published a malformed pool key", peer));
      }
      std::memcpy(&info->pool, pool->data(), sizeof(PoolInfo));
      info->rkey = pool->substr(sizeof(PoolInfo));
    }
    std::lock_guard lock(peers_mu_);
    peer_info_[peer] = info;
    return std::shared_ptr<const PeerInfo>(std::move(info));
  }

  absl::Status WaitOp(Op& op) {
    // The progress thread enforces the deadline; the backstop only guards
    // against a wedged progress thread.
    std::unique_lock lock(op.mu);
    if (!op.cv.wait_until(lock, op.deadline + std::chrono::seconds(2),
                          [&] { return op.done.load(); })) {
      return absl::UnavailableError(fmt::format(
          "rank {}: no progress within {} ms", op.peer, op.timeout.count()));
    }
    return op.status;
  }

  absl::Status SetAmHandler(uint16_t id, ucs_status_t (UcxEngine::*fn)(
                                             const void*, size_t, void*, size_t,
                                             const ucp_am_recv_param_t*)) {
    struct Thunk {
      UcxEngine* self;
      decltype(fn) method;
    };
    auto* thunk = new Thunk{this, fn};
    thunks_.emplace_back(thunk, [](void* p) { delete static_cast<Thunk*>(p); });
    ucp_am_handler_param_t p{};
    p.field_mask =
        UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
        UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    p.id = id;
    p.flags = UCP_AM_FLAG_WHOLE_MSG;
    p.arg = thunk;
    p.cb = [](void* arg, const void* header, size_t header_length, void* data,
              size_t length, const ucp_am_recv_param_t* param) {
      auto* t = static_cast<Thunk*>(arg);
      return (t->self->*(t->method))(header, header_length, data, length,
                                     param);
    };
    ucs_status_t s = ucp_worker_set_am_recv_handler(worker_, &p);
    if (s != UCS_OK) {
      return absl::InternalError("ucp_worker_set_am_recv_handler: " +
                                 UcsError(s));
    }
    return absl::OkStatus();
  }

  // --- Receiver side AM handlers (progress thread) ---
  // The batch's entries, or nullptr if malformed.
  static const AmHeader* ParseBatch(const void* header, size_t header_length,
                                    const void* data, size_t length,
                                    const ucp_am_recv_param_t* param,
                                    BatchHeader* h) {
    if (header_length != sizeof(BatchHeader) ||
        (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV)) {
      return nullptr;
    }
    std::memcpy(h, header, sizeof(*h));
    if (h->count == 0 || h->count > kMaxBatch ||
        length != h->count * sizeof(AmHeader)) {
      return nullptr;
    }
    return static_cast<const AmHeader*>(data);
  }

  MsgSlot* GetMsgSlot() {
    if (free_msgs_.empty()) {
      msgs_.push_back(std::make_unique<MsgSlot>());
      msgs_.back()->entries.reserve(kMaxBatch);
      return msgs_.back().get();
    }
    MsgSlot* m = free_msgs_.back();
    free_msgs_.pop_back();
    return m;
  }

  ucs_status_t OnDoneAm(const void* header, size_t header_length, void* data,
                        size_t length, const ucp_am_recv_param_t* param) {
    BatchHeader h;
    const AmHeader* e =
        ParseBatch(header, header_length, data, length, param, &h);
    if (e == nullptr) return UCS_OK;  // Malformed: dropped.
    {
      std::lock_guard lock(rx_mu_);
      for (uint32_t i = 0; i < h.count; ++i) {
        AmHeader entry;
        std::memcpy(&entry, e + i, sizeof(entry));
        completions_.push_back({h.sender, entry.request_id});
      }
    }
    rx_cv_.notify_all();
    if (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) {
      // Echo the entries back (sent after this progress pass).
      MsgSlot* ack = GetMsgSlot();
      ack->is_done = false;
      ack->reply_ep = param->reply_ep;
      ack->header = {rank_, h.count};
      ack->entries.resize(h.count);
      std::memcpy(ack->entries.data(), e, h.count * sizeof(AmHeader));
      ack->ctx = {this, nullptr, ack, ReqCtx::kMsg, h.sender};
      pending_acks_.push_back(ack);
    }
    return UCS_OK;
  }

  // Finishes the transfers named by `entries` that are still ours.
  void FinishEntries(const std::vector<AmHeader>& entries,
                     const absl::Status& status) {
    for (const AmHeader& e : entries) FinishEntry(e, status);
  }
  // Whether the entry names one of our transfers still in flight.
  bool IsLive(const AmHeader& e) const {
    if (e.slot >= kMaxOps) return false;
    const Op* op = ops_[e.slot].load();
    return op != nullptr && op->worker_owned &&
           op->generation == e.generation && op->id == e.request_id &&
           op->is_transfer && !op->finished();
  }
  void FinishEntry(const AmHeader& e, const absl::Status& status) {
    if (e.slot >= kMaxOps) return;
    Op* op = ops_[e.slot].load();
    // While worker_owned the slot cannot be reused, so its fields are
    // stable; a late ack of an earlier use has another generation.
    if (op != nullptr && op->worker_owned && op->generation == e.generation &&
        op->id == e.request_id && op->is_transfer) {
      op->Finish(status);
    }
  }

  ucs_status_t OnAckAm(const void* header, size_t header_length, void* data,
                       size_t length, const ucp_am_recv_param_t* param) {
    BatchHeader h;
    const AmHeader* e =
        ParseBatch(header, header_length, data, length, param, &h);
    if (e == nullptr) return UCS_OK;
    for (uint32_t i = 0; i < h.count; ++i) {
      AmHeader entry;
      std::memcpy(&entry, e + i, sizeof(entry));
      FinishEntry(entry, absl::OkStatus());
    }
    auto it = peers_.find(h.sender);
    if (it != peers_.end()) {
      it->second.done_in_flight = false;
      if (!it->second.done_ready.empty()) ready_peers_.push_back(h.sender);
    }
    return UCS_OK;
  }

  ucs_status_t OnControlAm(const void* header, size_t header_length, void* data,
                           size_t length, const ucp_am_recv_param_t* param) {
    if (header_length != sizeof(AmHeader) || length > kMaxControlBytes ||
        (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV)) {
      return UCS_OK;  // Malformed or not eager: dropped.
    }
    AmHeader h;
    std::memcpy(&h, header, sizeof(h));
    {
      std::lock_guard lock(rx_mu_);
      controls_.push_back(
          {h.sender, std::string(static_cast<const char*>(data), length)});
    }
    control_cv_.notify_all();
    return UCS_OK;
  }

  // --- Receive-side staging: AM handlers (progress thread). They only
  // record; sends and copies happen in PumpGrants / PumpLanding. ---

  // Sender: slots granted for one of our transfers.
  ucs_status_t OnGrantAm(const void* header, size_t header_length, void* data,
                         size_t length, const ucp_am_recv_param_t* param) {
    if (header_length != sizeof(GrantHeader) ||
        (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV)) {
      return UCS_OK;
    }
    GrantHeader h;
    std::memcpy(&h, header, sizeof(h));
    // A grant for a transfer that is gone is dropped: the release sent when
    // it ended (or the receiver's deadline) frees its slots.
    if (!IsLive(h.entry)) return UCS_OK;
    Op* op = ops_[h.entry.slot].load();
    const uint64_t total = op->sorted.size();
    const int64_t landing = op->info->pool.landing_blocks;
    bool ok = op->remote_staged && h.count > 0 && h.count <= kMaxGrant &&
              length == h.count * sizeof(uint32_t) && h.begin <= total &&
              h.count <= total - h.begin &&
              (staging_ == nullptr || h.count <= staging_blocks_);
    for (uint32_t j = 0; ok && j < h.count; ++j) {
      uint32_t slot;
      std::memcpy(&slot, static_cast<const char*>(data) + j * sizeof(slot),
                  sizeof(slot));
      ok = slot < landing;
      op->landing[h.begin + j] = slot;
    }
    if (!ok) {
      op->Finish(absl::InternalError(
          fmt::format("rank {} sent a malformed landing grant for transfer {}",
                      op->peer, op->id)));
      return UCS_OK;
    }
    op->grants.push_back({h.begin, h.token, h.count});
    granted_ops_.push_back({op, op->generation});
    return UCS_OK;
  }

  // Sender: a transfer to a staged pool is in the pool (or was refused).
  ucs_status_t OnRxAckAm(const void* header, size_t header_length, void*,
                         size_t, const ucp_am_recv_param_t*) {
    if (header_length != sizeof(RxAckHeader)) return UCS_OK;
    RxAckHeader h;
    std::memcpy(&h, header, sizeof(h));
    if (h.entry.slot >= kMaxOps) return UCS_OK;
    Op* op = ops_[h.entry.slot].load();
    if (op == nullptr || !op->worker_owned ||
        op->generation != h.entry.generation || op->id != h.entry.request_id ||
        !op->is_transfer) {
      return UCS_OK;
    }
    op->rx_closed = true;  // The receiver forgot the transfer: no release.
    if (h.code == 0) {
      op->Finish(absl::OkStatus());
    } else {
      op->Finish(absl::Status(
          static_cast<absl::StatusCode>(h.code),
          fmt::format("rank {} refused transfer {} into its staged pool",
                      op->peer, op->id)));
    }
    return UCS_OK;
  }

  // Receiver: a sender wants landing slots.
  ucs_status_t OnRxRequestAm(const void* header, size_t header_length, void*,
                             size_t, const ucp_am_recv_param_t* param) {
    if (header_length != sizeof(RxRequest) ||
        !(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP)) {
      return UCS_OK;
    }
    RxRequest r;
    std::memcpy(&r, header, sizeof(r));
    if (FindIncoming(r.entry) != nullptr) return UCS_OK;  // Duplicate.
    Incoming* in = NewIncoming();
    in->entry = r.entry;
    in->reply_ep = param->reply_ep;
    in->total = r.total_blocks;
    in->max_grant = std::clamp<uint32_t>(r.max_grant, 1, kMaxGrant);
    in->timeout = std::chrono::milliseconds(r.timeout_ms);
    in->deadline = Clock::now() + in->timeout + kRevokeGrace;
    in->refuse = landing_ == nullptr;
    if (!in->refuse && in->total > 0) {
      in->waiting = true;
      want_slots_.push_back(in);
    }
    return UCS_OK;
  }

  // Receiver: a grant's blocks are in their slots.
  ucs_status_t OnChunkAm(const void* header, size_t header_length, void* data,
                         size_t length, const ucp_am_recv_param_t* param) {
    if (header_length != sizeof(ChunkHeader) ||
        (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV)) {
      return UCS_OK;
    }
    ChunkHeader h;
    std::memcpy(&h, header, sizeof(h));
    if (h.count == 0 || h.count > kMaxGrant ||
        length != h.count * sizeof(int64_t)) {
      return UCS_OK;  // Malformed: the grant is revoked at the deadline.
    }
    if (num_chunks_ == chunks_.size()) chunks_.emplace_back();
    PendingChunk& c = chunks_[num_chunks_++];
    c.header = h;
    c.reply_ep = (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP)
                     ? param->reply_ep
                     : nullptr;
    c.dst.resize(h.count);
    std::memcpy(c.dst.data(), data, length);
    return UCS_OK;
  }

  // Receiver: the sender gave up on a transfer; none of its puts is in
  // flight any more, so its slots are free at once.
  ucs_status_t OnReleaseAm(const void* header, size_t header_length, void*,
                           size_t, const ucp_am_recv_param_t*) {
    if (header_length != sizeof(AmHeader)) return UCS_OK;
    AmHeader e;
    std::memcpy(&e, header, sizeof(e));
    if (Incoming* in = FindIncoming(e)) {
      RevokeGrants(in, /*quarantine=*/false);
      RemoveIncoming(in);
    }
    return UCS_OK;
  }

  // --- Receive-side staging: landing slots (progress thread). ---

  Incoming* FindIncoming(const AmHeader& e) {
    for (Incoming* in : incoming_) {
      if (in->entry.sender == e.sender && in->entry.slot == e.slot &&
          in->entry.generation == e.generation &&
          in->entry.request_id == e.request_id) {
        return in;
      }
    }
    return nullptr;
  }

  Incoming* NewIncoming() {
    Incoming* in;
    if (free_incoming_.empty()) {
      incoming_store_.push_back(std::make_unique<Incoming>());
      in = incoming_store_.back().get();
    } else {
      in = free_incoming_.back();
      free_incoming_.pop_back();
    }
    in->granted = in->landed = 0;
    in->live_grants = 0;
    in->waiting = in->refuse = false;
    incoming_.push_back(in);
    return in;
  }

  void RemoveIncoming(Incoming* in) {
    incoming_.erase(std::find(incoming_.begin(), incoming_.end(), in));
    if (in->waiting) {
      want_slots_.erase(std::find(want_slots_.begin(), want_slots_.end(), in));
      in->waiting = false;
    }
    free_incoming_.push_back(in);
  }

  void FreeSlot(uint32_t slot) {
    slot_free_[slot] = 1;
    ++free_slots_;
  }

  // Takes back the slots of every outstanding grant of `in`. A sender that
  // went silent may be merely stalled with puts still to land, so its slots
  // wait out its timeout once more before reuse (quarantine); a sender that
  // released them has no put left in flight.
  void RevokeGrants(Incoming* in, bool quarantine) {
    const auto until =
        Clock::now() + std::max(in->timeout, std::chrono::milliseconds(100));
    for (size_t k = 0; k < in->live_grants; ++k) {
      for (uint32_t slot : in->grants[k].slots) {
        if (quarantine) {
          quarantine_.push_back({until, slot});
        } else {
          FreeSlot(slot);
        }
      }
    }
    if (in->live_grants > 0) {
      std::lock_guard lock(stats_mu_);
      stats_.revoked_grants += static_cast<int64_t>(in->live_grants);
    }
    in->live_grants = 0;
  }

  void SendRxAck(Incoming* in, absl::StatusCode code) {
    RxAckHeader h{in->entry, static_cast<int32_t>(code), 0};
    if (in->reply_ep != nullptr) {
      (void)SendRaw(in->reply_ep, kAmRxAck, in->entry.sender, &h, sizeof(h),
                    nullptr, 0, /*reply=*/false);
    }
  }

  // The transfer is in the pool: tell the local user, then the sender.
  void CompleteIncoming(Incoming* in) {
    {
      std::lock_guard lock(rx_mu_);
      completions_.push_back({in->entry.sender, in->entry.request_id});
    }
    rx_cv_.notify_all();
    SendRxAck(in, absl::StatusCode::kOk);
    RemoveIncoming(in);
  }

  void FailIncoming(Incoming* in, absl::StatusCode code, bool quarantine) {
    RevokeGrants(in, quarantine);
    SendRxAck(in, code);
    RemoveIncoming(in);
  }

  // Copies a landed grant into the pool and recycles its slots.
  void LandChunk(const PendingChunk& c) {
    Incoming* in = FindIncoming(c.header.entry);
    if (in == nullptr) return;  // Revoked or released meanwhile.
    if (c.reply_ep != nullptr) in->reply_ep = c.reply_ep;
    size_t k = 0;
    while (k < in->live_grants && in->grants[k].token != c.header.token) ++k;
    if (k == in->live_grants || in->grants[k].count != c.header.count) {
      spdlog::warn("KV transfer: rank {} announced an unknown landing grant",
                   in->entry.sender);
      FailIncoming(in, absl::StatusCode::kInternal, /*quarantine=*/true);
      return;
    }
    const GrantRec& g = in->grants[k];
    const int64_t bb = pool_.block_bytes;
    absl::Status status;
    for (uint32_t j = 0; j < g.count && status.ok(); ++j) {
      if (c.dst[j] < 0 || c.dst[j] >= pool_.num_blocks) {
        status = absl::InvalidArgumentError("destination block out of range");
      }
    }
    for (uint32_t j = 0; j < g.count && status.ok();) {
      // One copy per run adjacent in the landing area and in the pool.
      uint32_t n = 1;
      while (j + n < g.count && g.slots[j + n] == g.slots[j] + n &&
             c.dst[j + n] == c.dst[j] + n) {
        ++n;
      }
      status = PoolCopyIn(c.dst[j] * bb, landing_ + int64_t{g.slots[j]} * bb,
                          n * bb);
      j += n;
    }
    // The slots are reused and the transfer reported only once the copies
    // are done.
    if (absl::Status waited = PoolCopyWait(); status.ok()) status = waited;
    if (!status.ok()) {
      spdlog::error("KV transfer from rank {}: {}", in->entry.sender,
                    std::string(status.message()));
      // The sender's puts into these slots are complete: no quarantine.
      FailIncoming(in, status.code(), /*quarantine=*/false);
      return;
    }
    for (uint32_t slot : g.slots) FreeSlot(slot);
    in->landed += g.count;
    std::swap(in->grants[k], in->grants[in->live_grants - 1]);
    --in->live_grants;
    {
      std::lock_guard lock(stats_mu_);
      ++stats_.landed_chunks;
    }
    if (in->landed == in->total) {
      CompleteIncoming(in);
    } else if (in->granted < in->total && !in->waiting) {
      in->waiting = true;
      want_slots_.push_back(in);
    }
  }

  // Grants free slots to waiting transfers, round robin, at most half the
  // landing area per grant and two grants per transfer (so one stream
  // double-buffers and other senders get their turn).
  bool GrantSlots() {
    bool busy = false;
    const uint64_t cap = static_cast<uint64_t>(std::min<int64_t>(
        std::max<int64_t>(1, landing_blocks_ / 2), int64_t{kMaxGrant}));
    while (!want_slots_.empty() && free_slots_ > 0) {
      Incoming* in = want_slots_.front();
      want_slots_.pop_front();
      in->waiting = false;
      if (in->granted >= in->total || in->live_grants >= 2) continue;
      const uint64_t n =
          std::min({in->total - in->granted, uint64_t{in->max_grant}, cap,
                    static_cast<uint64_t>(free_slots_)});
      if (in->live_grants == in->grants.size()) in->grants.emplace_back();
      GrantRec& g = in->grants[in->live_grants];
      g.token = next_token_++;
      g.count = static_cast<uint32_t>(n);
      g.slots.clear();
      // Scan from where the last grant ended: consecutive slots make
      // longer puts and copies.
      for (int64_t scanned = 0; g.slots.size() < n && scanned < landing_blocks_;
           ++scanned) {
        const int64_t slot = slot_cursor_;
        slot_cursor_ = slot_cursor_ + 1 == landing_blocks_ ? 0 : slot + 1;
        if (slot_free_[slot]) {
          slot_free_[slot] = 0;
          --free_slots_;
          g.slots.push_back(static_cast<uint32_t>(slot));
        }
      }
      GrantHeader h{in->entry, in->granted, g.token, g.count};
      ++in->live_grants;
      busy = true;
      if (!SendRaw(in->reply_ep, kAmGrant, in->entry.sender, &h, sizeof(h),
                   g.slots.data(), g.slots.size() * sizeof(uint32_t),
                   /*reply=*/false)) {
        // Never reached the sender: nothing can land in these slots.
        RevokeGrants(in, /*quarantine=*/false);
        RemoveIncoming(in);
        continue;
      }
      in->granted += n;
      if (in->granted < in->total && in->live_grants < 2) {
        in->waiting = true;
        want_slots_.push_back(in);
      }
    }
    return busy;
  }

  // Lands announced chunks, answers finished and refused transfers,
  // revokes the grants of silent senders and grants free slots.
  bool PumpLanding() {
    if (incoming_.empty() && num_chunks_ == 0 && quarantine_.empty()) {
      return false;
    }
    bool busy = num_chunks_ > 0;
    for (size_t i = 0; i < num_chunks_; ++i) LandChunk(chunks_[i]);
    num_chunks_ = 0;
    const auto now = Clock::now();
    for (size_t i = 0; i < incoming_.size();) {
      Incoming* in = incoming_[i];
      if (in->refuse) {
        FailIncoming(in, absl::StatusCode::kFailedPrecondition, false);
      } else if (in->total == 0) {
        CompleteIncoming(in);
      } else if (now >= in->deadline) {
        spdlog::warn(
            "KV transfer: rank {} went silent during transfer {} into the "
            "staged pool; its landing slots are revoked",
            in->entry.sender, in->entry.request_id);
        RevokeGrants(in, /*quarantine=*/true);
        RemoveIncoming(in);
      } else {
        ++i;
        continue;
      }
      busy = true;  // incoming_[i] is the next one now.
    }
    for (size_t i = 0; i < quarantine_.size();) {
      if (now >= quarantine_[i].first) {
        FreeSlot(quarantine_[i].second);
        quarantine_[i] = quarantine_.back();
        quarantine_.pop_back();
        busy = true;
      } else {
        ++i;
      }
    }
    if (landing_ != nullptr) busy |= GrantSlots();
    return busy;
  }

  // --- Progress thread ---

  // Hands a transfer or control op to the progress thread; wakes it only if
  // it sleeps (a busy thread picks it up on its next pass).
  void PostOp(Op* op) {
    {
      std::lock_guard lock(cmd_mu_);
      posted_.push_back(op);
    }
    if (sleeping_.load()) Wake();
  }

  void Post(std::function<void()> fn) {
    {
      std::lock_guard lock(cmd_mu_);
      commands_.push_back(std::move(fn));
    }
    Wake();
  }

  void RunOnWorker(std::function<void()> fn) {
    if (!thread_.joinable()) {  // Before the thread starts / after it ends.
      fn();
      return;
    }
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    Post([&] {
      fn();
      std::lock_guard lock(mu);
      done = true;
      cv.notify_all();
    });
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return done; });
  }

  void Wake() {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof(one));
  }

  bool HasCommands() {
    std::lock_guard lock(cmd_mu_);
    return !posted_.empty() || !commands_.empty();
  }

  void ProgressLoop() {
    auto last_activity = Clock::now();
    while (!stop_.load()) {
      bool busy = false;
      while (ucp_worker_progress(worker_) != 0) busy = true;
      busy |= RunCommands();
      busy |= PumpGrants();
      busy |= PumpLanding();
      busy |= SendPendingAcks();
      busy |= SendDoneBatches();
      busy |= ProcessFailures();
      busy |= CheckDeadlines();
      busy |= PumpStaging();
      const auto now = Clock::now();
      if (busy) {
        last_activity = now;
        continue;  // One more pass before sleeping: more may be ready.
      }
      // Spin while work is in flight or was recent (latency); sleep on the
      // event fds otherwise (the host is shared).
      if ((outstanding_requests_ > 0 || !live_ops_.empty() ||
           now - last_activity < options_.busy_poll) &&
          options_.busy_poll.count() > 0) {
        continue;
      }
      // Posters wake us only while sleeping_ is set; set it before the last
      // look at the queue so a post cannot slip between the two.
      sleeping_.store(true);
      if (HasCommands() || ucp_worker_arm(worker_) == UCS_ERR_BUSY) {
        sleeping_.store(false);
        continue;
      }
      pollfd fds[2] = {{worker_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
      // Not every transport signals the event fd for every arrival (shared
      // memory in UCX 1.13 may not), so sleep briefly rather than long.
      ::poll(fds, 2, options_.nap_ms);
      sleeping_.store(false);
      if (fds[1].revents & POLLIN) {
        uint64_t v;
        [[maybe_unused]] ssize_t n = ::read(wake_fd_, &v, sizeof(v));
      }
    }
  }

  bool RunCommands() {
    {
      std::lock_guard lock(cmd_mu_);
      if (posted_.empty() && commands_.empty()) return false;
      batch_.swap(posted_);
      cmds_.swap(commands_);
    }
    for (Op* op : batch_) {
      if (op->is_transfer) {
        StartTransfer(op);
      } else {
        StartControl(op);
      }
    }
    batch_.clear();
    for (auto& c : cmds_) c();
    cmds_.clear();
    return true;
  }

  bool SendPendingAcks() {
    if (pending_acks_.empty()) return false;
    for (MsgSlot* ack : pending_acks_) {
      ucp_request_param_t rp = Params(&ack->ctx, UCP_OP_ATTR_FIELD_FLAGS);
      rp.flags = UCP_AM_SEND_FLAG_EAGER;
      ucs_status_ptr_t req = ucp_am_send_nbx(
          ack->reply_ep, kAmAck, &ack->header, sizeof(ack->header),
          ack->entries.data(), ack->entries.size() * sizeof(AmHeader), &rp);
      if (UCS_PTR_IS_PTR(req)) {
        ++outstanding_requests_;
        ++outstanding_by_peer_[ack->ctx.peer];
      } else {
        free_msgs_.push_back(ack);  // Sent (or failed: the sender times out).
      }
    }
    pending_acks_.clear();
    return true;
  }

  // Transfers whose puts landed: queued for their peer's next batch.
  void QueueDone(Op* op) {
    if (op->finished()) return;
    auto it = peers_.find(op->peer);
    if (it == peers_.end() || it->second.ep == nullptr) {
      op->Finish(absl::UnavailableError(
          fmt::format("rank {} lost before completion", op->peer)));
      return;
    }
    Peer& p = it->second;
    if (p.done_ready.empty() && !p.done_in_flight) {
      ready_peers_.push_back(op->peer);
    }
    p.done_ready.push_back(
        AmHeader{op->id, op->slot, op->generation, rank_, 0});
  }

  // One kAmDone batch to every ready peer with none unacknowledged.
  bool SendDoneBatches() {
    if (ready_peers_.empty()) return false;
    for (int rank : ready_peers_) {
      auto it = peers_.find(rank);
      if (it == peers_.end()) continue;
      Peer& p = it->second;
      if (p.done_in_flight || p.done_ready.empty() || p.ep == nullptr) {
        continue;
      }
      // Transfers cancelled (or timed out) meanwhile are not announced.
      MsgSlot* m = GetMsgSlot();
      m->entries.clear();
      size_t taken = 0;
      for (; taken < p.done_ready.size() && m->entries.size() < kMaxBatch;
           ++taken) {
        if (IsLive(p.done_ready[taken])) {
          m->entries.push_back(p.done_ready[taken]);
        }
      }
      p.done_ready.erase(p.done_ready.begin(), p.done_ready.begin() + taken);
      const size_t n = m->entries.size();
      if (n == 0) {
        free_msgs_.push_back(m);
        continue;
      }
      m->is_done = true;
      m->header = {rank_, static_cast<uint32_t>(n)};
      m->ctx = {this, nullptr, m, ReqCtx::kMsg, rank};
      ucp_request_param_t rp = Params(&m->ctx, UCP_OP_ATTR_FIELD_FLAGS);
      rp.flags = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER;
      ucs_status_ptr_t req =
          ucp_am_send_nbx(p.ep, kAmDone, &m->header, sizeof(m->header),
                          m->entries.data(), n * sizeof(AmHeader), &rp);
      if (UCS_PTR_IS_ERR(req)) {
        FinishEntries(m->entries,
                      absl::UnavailableError(fmt::format(
                          "completion message to rank {} failed: {}", rank,
                          UcsError(UCS_PTR_STATUS(req)))));
        free_msgs_.push_back(m);
        continue;
      }
      p.done_in_flight = true;
      {
        std::lock_guard lock(stats_mu_);
        ++stats_.notifications;
      }
      if (UCS_PTR_IS_PTR(req)) {
        ++outstanding_requests_;
        ++outstanding_by_peer_[rank];
      } else {
        free_msgs_.push_back(m);
      }
    }
    ready_peers_.clear();
    return true;
  }

  // Finishes ops past their deadline and releases the progress thread's
  // reference of finished ops with no request outstanding.
  bool CheckDeadlines() {
    if (live_ops_.empty()) return false;
    const auto now = Clock::now();
    bool lost_any = false;
    for (size_t i = 0; i < live_ops_.size();) {
      Op* op = live_ops_[i];
      bool done = op->finished();
      if (!done && now >= op->deadline) {
        op->Finish(absl::UnavailableError(fmt::format(
            "rank {} did not complete {} {} within {} ms (peer presumed "
            "lost)",
            op->peer, op->is_transfer ? "transfer" : "control message", op->id,
            op->timeout.count())));
        lost_.push_back(op->peer);
        lost_any = true;
        done = true;
      }
      if (done && op->pending_requests == 0 && !op->in_staging) {
        if (op->rx_requested && !op->rx_closed) SendRelease(op);
        live_ops_[i] = live_ops_.back();
        live_ops_.pop_back();
        op->worker_owned = false;
        ReleaseOp(op);
        continue;
      }
      ++i;
    }
    for (int p : lost_) ClosePeer(p, /*force=*/true);
    lost_.clear();
    return lost_any;
  }

  bool ProcessFailures() {
    if (!ep_error_) return false;
    ep_error_ = false;
    // The per-peer error callback below flags the failed peers.
    std::vector<int> failed;
    for (auto& [rank, p] : peers_) {
      if (p.failed) failed.push_back(rank);
    }
    for (int r : failed) {
      FailPeerOps(r, absl::UnavailableError(fmt::format(
                         "rank {} lost: {}", r, UcsError(failed_status_))));
      ClosePeer(r, /*force=*/true);
    }
    return true;
  }

  void FailPeerOps(int peer, const absl::Status& s) {
    for (Op* op : live_ops_) {
      if (op->peer == peer) op->Finish(s);
    }
  }

  struct ErrArg {
    UcxEngine* self;
    int peer;
  };

  // The connected peer (endpoint + unpacked rkey, cached); `connected` says
  // whether this call had to set them up.
  absl::StatusOr<Peer*> GetPeer(int peer, const PeerInfo& info,
                                bool* connected) {
    Peer& p = peers_[peer];
    *connected = false;
    if (p.ep == nullptr) {
      *connected = true;
      auto* arg = new ErrArg{this, peer};
      err_args_.emplace_back(arg);
      ucp_ep_params_t ep{};
      ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
                      UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                      UCP_EP_PARAM_FIELD_ERR_HANDLER;
      ep.address = reinterpret_cast<const ucp_address_t*>(info.address.data());
      ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
      ep.err_handler.cb = [](void* a, ucp_ep_h, ucs_status_t status) {
        auto* ea = static_cast<ErrArg*>(a);
        auto it = ea->self->peers_.find(ea->peer);
        if (it != ea->self->peers_.end()) it->second.failed = true;
        ea->self->failed_status_ = status;
        ea->self->ep_error_ = true;
      };
      ep.err_handler.arg = arg;
      ucs_status_t s = UCS_ERR_UNREACHABLE;
      if (!peer_mode_unsupported_) s = ucp_ep_create(worker_, &ep, &p.ep);
      if (s == UCS_ERR_UNREACHABLE) {
        peer_mode_unsupported_ = true;  // Ask (and log) once, not per peer.
        // Shared-memory transports have no peer-failure detection in UCX
        // 1.13: connect without it; the acknowledgement deadline then
        // catches a dead peer.
        ep.field_mask &= ~static_cast<uint64_t>(UCP_EP_PARAM_FIELD_ERR_HANDLER);
        ep.err_mode = UCP_ERR_HANDLING_MODE_NONE;
        s = ucp_ep_create(worker_, &ep, &p.ep);
        p.peer_failure_detection = false;
      } else {
        p.peer_failure_detection = true;
      }
      if (s != UCS_OK) {
        p.ep = nullptr;
        return absl::UnavailableError(
            fmt::format("cannot connect to rank {}: {}", peer, UcsError(s)));
      }
      p.failed = false;
    }
    if (p.rkey == nullptr && !info.rkey.empty()) {
      *connected = true;
      ucs_status_t s = ucp_ep_rkey_unpack(p.ep, info.rkey.data(), &p.rkey);
      if (s != UCS_OK) {
        p.rkey = nullptr;
        return absl::UnavailableError(fmt::format(
            "cannot unpack rank {}'s memory key: {}", peer, UcsError(s)));
      }
      p.pool = info.pool;
    }
    return &p;
  }

  // `force` when the peer is presumed lost or requests to it are stuck: UCX
  // then completes its outstanding requests with UCS_ERR_CANCELED.
  void ClosePeer(int peer, bool force) {
    auto it = peers_.find(peer);
    if (it == peers_.end()) return;
    Peer& p = it->second;
    if (p.rkey != nullptr) ucp_rkey_destroy(p.rkey);
    if (p.ep != nullptr) {
      ucp_request_param_t rp{};
      if (force) {
        rp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
        rp.flags = UCP_EP_CLOSE_FLAG_FORCE;
      }
      ucs_status_ptr_t req = ucp_ep_close_nbx(p.ep, &rp);
      if (UCS_PTR_IS_PTR(req)) closing_.push_back(req);
    }
    peers_.erase(it);
    // The peer may come back (restarted): look its address up again.
    std::lock_guard lock(peers_mu_);
    peer_info_.erase(peer);
  }

  ucp_request_param_t Params(ReqCtx* ctx, uint32_t extra_mask = 0) {
    ucp_request_param_t rp{};
    rp.op_attr_mask =
        UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | extra_mask;
    rp.user_data = ctx;
    rp.cb.send = &UcxEngine::SendCb;
    return rp;
  }

  static void SendCb(void* request, ucs_status_t status, void* user_data) {
    auto* ctx = static_cast<ReqCtx*>(user_data);
    ucp_request_free(request);
    ctx->engine->OnRequestDone(ctx, status);
  }

  // What a completed request of an op leads to (in place or by callback).
  void Complete(ReqCtx* ctx, ucs_status_t status) {
    Op* op = ctx->op;
    if (status != UCS_OK) {
      op->Finish(absl::UnavailableError(
          fmt::format("rank {} unreachable: {}", op->peer, UcsError(status))));
    }
    if (ctx->kind == ReqCtx::kFlush) {
      // A staged pool sends one chunk at a time: every flush ends one.
      if (staging_ != nullptr) chunk_in_flight_ = false;
      if (op->remote_staged) {
        // The oldest flushing grant's puts landed (a flush completes after
        // every earlier put on the endpoint): announce it.
        if (status == UCS_OK && !op->finished()) SendChunk(op);
      } else if (!op->in_staging && status == UCS_OK) {
        QueueDone(op);
      }
    }
    if (ctx->kind == ReqCtx::kAm && !op->is_transfer && status == UCS_OK) {
      op->Finish(absl::OkStatus());
    }
  }

  // Tracks a request returned by an _nbx call; false on immediate error.
  bool Track(ucs_status_ptr_t req, ReqCtx* ctx, const char* what) {
    if (req == nullptr) {  // Completed in place; no callback.
      Complete(ctx, UCS_OK);
      return true;
    }
    if (UCS_PTR_IS_ERR(req)) {
      ctx->op->Finish(absl::UnavailableError(
          fmt::format("{} to rank {} failed: {}", what, ctx->op->peer,
                      UcsError(UCS_PTR_STATUS(req)))));
      return false;
    }
    ++outstanding_requests_;
    ++outstanding_by_peer_[ctx->peer];
    ++ctx->op->pending_requests;
    return true;
  }

  void RecordSetup(const Op& op, bool cold, Clock::duration connect) {
    std::lock_guard lock(stats_mu_);
    const auto setup = Clock::now() - op.posted;
    ++stats_.transfers;
    if (cold) {
      ++stats_.cold_transfers;
      stats_.cold_setup += setup;
    } else {
      ++stats_.warm_transfers;
      stats_.warm_setup += setup;
    }
    if (connect.count() > 0) {
      ++stats_.connects;
      stats_.connect_time += connect;
    }
  }

  void StartTransfer(Op* op) {
    live_ops_.push_back(op);
    op->worker_owned = true;
    if (op->finished()) return;  // Cancelled before it started.
    op->put_ctx.peer = op->flush_ctx.peer = op->am_ctx.peer = op->peer;
    const auto t0 = Clock::now();
    bool connected = false;
    auto peer = GetPeer(op->peer, *op->info, &connected);
    if (!peer.ok()) {
      op->Finish(peer.status());
      return;
    }
    const Clock::duration connect =
        connected ? Clock::now() - t0 : Clock::duration::zero();
    // Cold: the first transfer to this peer (it looked the peer up in the
    // store and set up the endpoint and rkey).
    const bool cold = connected;
    if (op->remote_staged) {
      RecordSetup(*op, cold, connect);
      SendRxRequest(op, **peer);
      return;
    }
    if (staging_ != nullptr) {
      RecordSetup(*op, cold, connect);
      op->in_staging = true;
      staged_queue_.push_back(op);
      PumpStaging();
      return;
    }
    Peer& p = **peer;
    const int64_t bb = pool_.block_bytes;
    int64_t puts = 0;
    for (const Run& r : op->runs) {
      ucp_request_param_t rp = Params(&op->put_ctx);
      char* src = reinterpret_cast<char*>(pool_.base) + r.src_block * bb;
      const uint64_t dst =
          p.pool.base + static_cast<uint64_t>(r.dst_block * bb);
      // Set-up ends as the first put is posted (on shm the put itself is
      // the copy).
      if (puts++ == 0) RecordSetup(*op, cold, connect);
      ucs_status_ptr_t req = ucp_put_nbx(
          p.ep, src, static_cast<size_t>(r.count * bb), dst, p.rkey, &rp);
      if (!Track(req, &op->put_ctx, "put")) return;
    }
    {
      std::lock_guard lock(stats_mu_);
      stats_.puts += puts;
    }
    // Remote completion of every put, then the notification.
    ucp_request_param_t rp = Params(&op->flush_ctx);
    Track(ucp_ep_flush_nbx(p.ep, &rp), &op->flush_ctx, "flush");
  }

  // --- Staged sends (pool not registered: copied chunk by chunk into the
  // registered staging buffer, put from there). One chunk in flight per
  // engine; transfers queue behind each other. ---

  // Copies `bytes` of the pool at `offset` into the staging buffer. For a
  // CUDA pool the copy is only queued: PoolCopyWait before using `dst`.
  absl::Status PoolCopyOut(char* dst, int64_t offset, int64_t bytes) {
    return StagingCopy(dst, reinterpret_cast<const char*>(pool_.base) + offset,
                       bytes, /*into_pool=*/false);
  }

  // Copies `bytes` from the landing area into the pool at `offset` (queued
  // for a CUDA pool: PoolCopyWait before reusing `src`).
  absl::Status PoolCopyIn(int64_t offset, const char* src, int64_t bytes) {
    return StagingCopy(reinterpret_cast<char*>(pool_.base) + offset, src, bytes,
                       /*into_pool=*/true);
  }

  // One copy between the pool and host staging memory: queued on
  // copy_stream_ for a CUDA pool, done on return for a host pool.
  absl::Status StagingCopy(void* dst, const void* src, int64_t bytes,
                           bool into_pool) {
#if TESSERA_HAVE_CUDA
    if (pool_memory_ == PoolMemory::kCuda) {
      const cudaError_t e = cudaMemcpyAsync(
          dst, src, static_cast<size_t>(bytes),
          into_pool ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost,
          copy_stream_);
      if (e != cudaSuccess) {
        return absl::InternalError(
            fmt::format("{} the KV pool failed: {}",
                        into_pool ? "landing copy into" : "staging copy of",
                        cudaGetErrorString(e)));
      }
      return absl::OkStatus();
    }
#else
    (void)into_pool;
#endif
    std::memcpy(dst, src, static_cast<size_t>(bytes));
    return absl::OkStatus();
  }

  // Waits for the queued PoolCopyOut/PoolCopyIn copies (a no-op for host
  // pools, whose copies are done on return).
  absl::Status PoolCopyWait() {
#if TESSERA_HAVE_CUDA
    if (pool_memory_ == PoolMemory::kCuda) {
      const cudaError_t e = cudaStreamSynchronize(copy_stream_);
      if (e != cudaSuccess) {
        return absl::InternalError(fmt::format(
            "staging copy of the KV pool failed: {}", cudaGetErrorString(e)));
      }
    }
#endif
    return absl::OkStatus();
  }

  // Moves the staged queue on while no chunk is in flight: the next chunk
  // of the head transfer, or its notification once every chunk landed.
  // A loop, not recursion: on shm whole chunks complete in place.
  bool PumpStaging() {
    bool busy = false;
    while (!chunk_in_flight_ && !staged_queue_.empty()) {
      busy = true;
      Op* op = staged_queue_.front();
      if (op->remote_staged) {
        // Queued while it has a grant to send; re-queued on the next one.
        if (op->finished() || op->grants_put == op->grants.size()) {
          staged_queue_.pop_front();
          op->in_staging = false;
          continue;
        }
        PostGrant(op);
        continue;
      }
      if (op->finished() || op->next_run >= op->runs.size()) {
        staged_queue_.pop_front();
        op->in_staging = false;
        if (!op->finished()) QueueDone(op);
        continue;
      }
      StartStagedChunk(op);
    }
    return busy;
  }

  // Copies the next chunk of `op` (at most staging_blocks_ blocks) into the
  // staging buffer, puts it and flushes; chunk_in_flight_ until the flush
  // completes (the buffer is reused only after the puts landed remotely).
  void StartStagedChunk(Op* op) {
    auto it = peers_.find(op->peer);
    if (it == peers_.end() || it->second.ep == nullptr) {
      op->Finish(absl::UnavailableError(
          fmt::format("rank {} lost before completion", op->peer)));
      return;
    }
    Peer& p = it->second;
    const int64_t bb = pool_.block_bytes;
    // Pass 1: queue every copy of the chunk, then wait once (a CUDA pool's
    // copies overlap; one synchronous copy per run was ~20 us each).
    absl::Status copied;
    {
      int64_t used = 0;
      size_t run = op->next_run;
      int64_t done = op->next_run_done;
      while (run < op->runs.size() && used < staging_blocks_ && copied.ok()) {
        const Run& r = op->runs[run];
        const int64_t n = std::min(r.count - done, staging_blocks_ - used);
        copied = PoolCopyOut(staging_ + used * bb, (r.src_block + done) * bb,
                             n * bb);
        used += n;
        done += n;
        if (done == r.count) {
          ++run;
          done = 0;
        }
      }
      if (absl::Status waited = PoolCopyWait(); copied.ok()) copied = waited;
    }
    // Pass 2: put the staged runs. On a copy error nothing is put; the flush
    // below still completes the chunk.
    const bool copies_ok = copied.ok();
    if (!copies_ok) op->Finish(std::move(copied));
    int64_t used = 0;
    int64_t puts = 0;
    while (copies_ok && op->next_run < op->runs.size() &&
           used < staging_blocks_) {
      const Run& r = op->runs[op->next_run];
      const int64_t n =
          std::min(r.count - op->next_run_done, staging_blocks_ - used);
      char* stage = staging_ + used * bb;
      const uint64_t dst =
          p.pool.base +
          static_cast<uint64_t>((r.dst_block + op->next_run_done) * bb);
      ucp_request_param_t rp = Params(&op->put_ctx);
      ++puts;
      if (!Track(ucp_put_nbx(p.ep, stage, static_cast<size_t>(n * bb), dst,
                             p.rkey, &rp),
                 &op->put_ctx, "put")) {
        return;
      }
      used += n;
      op->next_run_done += n;
      if (op->next_run_done == r.count) {
        ++op->next_run;
        op->next_run_done = 0;
      }
    }
    {
      std::lock_guard lock(stats_mu_);
      stats_.puts += puts;
      ++stats_.staged_chunks;
    }
    chunk_in_flight_ = true;
    ucp_request_param_t rp = Params(&op->flush_ctx);
    if (!Track(ucp_ep_flush_nbx(p.ep, &rp), &op->flush_ctx, "flush")) {
      chunk_in_flight_ = false;
    }
  }

  // --- Transfers to a staged pool (receive-side staging). The sender asks
  // for landing slots (kAmRxRequest); the receiver grants them as they free
  // up (kAmGrant, at most two grants per transfer outstanding); per grant
  // the sender puts the blocks into the slots, flushes and announces them
  // (kAmChunk); the receiver copies them into its pool and, after the last
  // one, acknowledges the transfer (kAmRxAck). ---

  // Sends an eager active message with copies of `header` and `data`
  // (raw_* buffers of a reused MsgSlot); false if it failed at once.
  bool SendRaw(ucp_ep_h ep, uint16_t id, int peer, const void* header,
               size_t header_len, const void* data, size_t data_len,
               bool reply) {
    MsgSlot* m = GetMsgSlot();
    m->is_done = false;
    const char* h = static_cast<const char*>(header);
    const char* d = static_cast<const char*>(data);
    m->raw_header.assign(h, h + header_len);
    m->raw_data.assign(d, d + data_len);
    m->ctx = {this, nullptr, m, ReqCtx::kMsg, peer};
    ucp_request_param_t rp = Params(&m->ctx, UCP_OP_ATTR_FIELD_FLAGS);
    rp.flags = UCP_AM_SEND_FLAG_EAGER | (reply ? UCP_AM_SEND_FLAG_REPLY : 0);
    ucs_status_ptr_t req =
        ucp_am_send_nbx(ep, id, m->raw_header.data(), header_len,
                        m->raw_data.data(), data_len, &rp);
    if (UCS_PTR_IS_PTR(req)) {
      ++outstanding_requests_;
      ++outstanding_by_peer_[peer];
      return true;
    }
    free_msgs_.push_back(m);
    return !UCS_PTR_IS_ERR(req);
  }

  AmHeader EntryOf(const Op& op) const {
    return AmHeader{op.id, op.slot, op.generation, rank_, 0};
  }

  void SendRxRequest(Op* op, Peer& p) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        op->deadline - Clock::now());
    RxRequest r{};
    r.entry = EntryOf(*op);
    r.total_blocks = op->sorted.size();
    // A staged sender copies a grant into its staging buffer at once.
    r.max_grant = static_cast<uint32_t>(
        staging_ != nullptr
            ? std::min<int64_t>(staging_blocks_, int64_t{kMaxGrant})
            : int64_t{kMaxGrant});
    r.timeout_ms = static_cast<uint32_t>(std::clamp<int64_t>(
        left.count(), 1, int64_t{std::numeric_limits<uint32_t>::max()}));
    if (!SendRaw(p.ep, kAmRxRequest, op->peer, &r, sizeof(r), nullptr, 0,
                 /*reply=*/true)) {
      op->Finish(absl::UnavailableError(
          fmt::format("landing-slot request to rank {} failed", op->peer)));
      return;
    }
    op->rx_requested = true;
  }

  // Puts the blocks of the next waiting grant of `op` into its landing
  // slots (through the staging buffer when this pool is staged: then one
  // chunk in flight per engine) and flushes; the flush's completion sends
  // the chunk message.
  void PostGrant(Op* op) {
    auto it = peers_.find(op->peer);
    if (it == peers_.end() || it->second.ep == nullptr) {
      op->Finish(absl::UnavailableError(
          fmt::format("rank {} lost before completion", op->peer)));
      return;
    }
    Peer& p = it->second;
    const Grant g = op->grants[op->grants_put++];
    const int64_t bb = pool_.block_bytes;
    const bool staged = staging_ != nullptr;
    const BlockCopy* blocks = op->sorted.data() + g.begin;
    const uint32_t* slots = op->landing.data() + g.begin;
    if (staged) {
      // Gather the grant's blocks into the staging buffer (runs adjacent in
      // the pool in one copy).
      for (uint32_t j = 0; j < g.count;) {
        uint32_t n = 1;
        while (j + n < g.count &&
               blocks[j + n].src_block == blocks[j].src_block + n) {
          ++n;
        }
        absl::Status copied =
            PoolCopyOut(staging_ + j * bb, blocks[j].src_block * bb, n * bb);
        if (!copied.ok()) {
          op->Finish(std::move(copied));
          return;
        }
        j += n;
      }
      if (absl::Status waited = PoolCopyWait(); !waited.ok()) {
        op->Finish(std::move(waited));
        return;
      }
      chunk_in_flight_ = true;
    }
    int64_t puts = 0;
    for (uint32_t j = 0; j < g.count;) {
      // One put per run adjacent in the source and in the landing area.
      uint32_t n = 1;
      while (j + n < g.count && slots[j + n] == slots[j] + n &&
             (staged || blocks[j + n].src_block == blocks[j].src_block + n)) {
        ++n;
      }
      const char* src = staged ? staging_ + j * bb
                               : reinterpret_cast<const char*>(pool_.base) +
                                     blocks[j].src_block * bb;
      const uint64_t dst =
          p.pool.base + uint64_t{slots[j]} * static_cast<uint64_t>(bb);
      ucp_request_param_t rp = Params(&op->put_ctx);
      ++puts;
      if (!Track(ucp_put_nbx(p.ep, src, static_cast<size_t>(n * bb), dst,
                             p.rkey, &rp),
                 &op->put_ctx, "put")) {
        break;  // Finished; still flush what was posted.
      }
      j += n;
    }
    {
      std::lock_guard lock(stats_mu_);
      stats_.puts += puts;
      ++stats_.grants;
      if (staged) ++stats_.staged_chunks;
    }
    ucp_request_param_t rp = Params(&op->flush_ctx);
    if (!Track(ucp_ep_flush_nbx(p.ep, &rp), &op->flush_ctx, "flush") &&
        staged) {
      chunk_in_flight_ = false;
    }
  }

  // The oldest flushing grant of `op` landed: tell the receiver which
  // blocks its slots hold.
  void SendChunk(Op* op) {
    if (op->grants_sent >= op->grants_put) return;
    const Grant g = op->grants[op->grants_sent++];
    auto it = peers_.find(op->peer);
    if (it == peers_.end() || it->second.ep == nullptr) {
      op->Finish(absl::UnavailableError(
          fmt::format("rank {} lost before completion", op->peer)));
      return;
    }
    ChunkHeader h{EntryOf(*op), g.token, g.count};
    chunk_dst_.resize(g.count);
    for (uint32_t j = 0; j < g.count; ++j) {
      chunk_dst_[j] = op->sorted[g.begin + j].dst_block;
    }
    if (!SendRaw(it->second.ep, kAmChunk, op->peer, &h, sizeof(h),
                 chunk_dst_.data(), g.count * sizeof(int64_t),
                 /*reply=*/true)) {
      op->Finish(absl::UnavailableError(
          fmt::format("chunk message to rank {} failed", op->peer)));
    }
  }

  // A transfer to a staged pool that ended without the receiver's answer
  // (cancelled, timed out, failed): once none of its puts can still land,
  // tell the receiver to recycle its slots at once.
  void SendRelease(Op* op) {
    auto it = peers_.find(op->peer);
    if (it == peers_.end() || it->second.ep == nullptr || it->second.failed) {
      return;  // The receiver revokes the grants at its deadline.
    }
    const AmHeader e = EntryOf(*op);
    (void)SendRaw(it->second.ep, kAmRelease, op->peer, &e, sizeof(e), nullptr,
                  0, /*reply=*/false);
  }

  // Posts the puts of grants that arrived in this pass (a staged pool
  // queues them behind its staging buffer).
  bool PumpGrants() {
    if (granted_ops_.empty()) return false;
    for (const auto& [op, generation] : granted_ops_) {
      if (op->generation != generation || !op->worker_owned || op->finished()) {
        continue;
      }
      if (staging_ != nullptr) {
        if (!op->in_staging) {
          op->in_staging = true;
          staged_queue_.push_back(op);
        }
        continue;
      }
      while (op->grants_put < op->grants.size() && !op->finished()) {
        PostGrant(op);
      }
    }
    granted_ops_.clear();
    return true;
  }

  void StartControl(Op* op) {
    live_ops_.push_back(op);
    op->worker_owned = true;
    op->put_ctx.peer = op->flush_ctx.peer = op->am_ctx.peer = op->peer;
    bool connected = false;
    auto peer = GetPeer(op->peer, *op->info, &connected);
    if (!peer.ok()) {
      op->Finish(peer.status());
      return;
    }
    op->header = AmHeader{0, op->slot, op->generation, rank_, 0};
    ucp_request_param_t rp = Params(&op->am_ctx, UCP_OP_ATTR_FIELD_FLAGS);
    rp.flags = UCP_AM_SEND_FLAG_EAGER;
    Track(ucp_am_send_nbx((*peer)->ep, kAmControl, &op->header,
                          sizeof(op->header), op->payload.data(),
                          op->payload.size(), &rp),
          &op->am_ctx, "control message");
  }

  void ShutdownOnWorker() {
    // Ops posted but not started yet.
    {
      std::lock_guard lock(cmd_mu_);
      for (Op* op : posted_) live_ops_.push_back(op);
      posted_.clear();
    }
    for (Op* op : live_ops_) {
      op->Finish(absl::CancelledError("KV transfer engine shut down"));
    }
    for (Op* op : staged_queue_) op->in_staging = false;
    staged_queue_.clear();
    granted_ops_.clear();
    num_chunks_ = 0;
    while (!incoming_.empty()) RemoveIncoming(incoming_.back());
    quarantine_.clear();
    for (MsgSlot* m : pending_acks_) free_msgs_.push_back(m);
    pending_acks_.clear();
    ready_peers_.clear();
    std::vector<int> ranks;
    for (auto& [r, p] : peers_) ranks.push_back(r);
    for (int r : ranks) ClosePeer(r, /*force=*/outstanding_by_peer_[r] > 0);
    // Drain: force-closed endpoints complete their requests with errors.
    const auto deadline = Clock::now() + std::chrono::seconds(2);
    while ((outstanding_requests_ > 0 || !closing_.empty()) &&
           Clock::now() < deadline) {
      ucp_worker_progress(worker_);
      for (auto it = closing_.begin(); it != closing_.end();) {
        if (ucp_request_check_status(*it) != UCS_INPROGRESS) {
          ucp_request_free(*it);
          it = closing_.erase(it);
        } else {
          ++it;
        }
      }
    }
    if (outstanding_requests_ > 0 || !closing_.empty()) {
      // Destroying the worker now would crash inside UCX; leaking it at
      // process exit is the lesser evil.
      spdlog::warn(
          "KV transfer engine: {} requests and {} endpoint closes still "
          "pending at shutdown; leaking the UCX worker",
          outstanding_requests_, closing_.size());
      leak_worker_ = true;
    }
    live_ops_.clear();
    stop_.store(true);  // Nothing runs on the worker after this.
  }

  const int rank_;
  Store* store_;
  const KvTransferOptions options_;

  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_mem_h memh_ = nullptr;
  int worker_fd_ = -1;
  int wake_fd_ = -1;
  bool cuda_ = false;
  bool leak_worker_ = false;
  bool peer_mode_unsupported_ = false;
  PoolInfo pool_{};  // Written once by RegisterPool.
  // Staged pools: the registered bounce buffer.
  ucp_mem_h staging_memh_ = nullptr;
  char* staging_ = nullptr;
  int64_t staging_blocks_ = 0;
  PoolMemory pool_memory_ = PoolMemory::kHost;
  // Staged pools: the landing area (after the staging buffer, same
  // registration) and its free slots (progress thread).
  char* landing_ = nullptr;
  int64_t landing_blocks_ = 0;
  [[maybe_unused]] void* pinned_ = nullptr;  // Staging, if cudaHostRegister'ed.
#if TESSERA_HAVE_CUDA
  cudaStream_t copy_stream_ = nullptr;  // Staging copies of a CUDA pool.
#endif
  std::vector<uint8_t> slot_free_;
  int64_t free_slots_ = 0;
  int64_t slot_cursor_ = 0;

  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> sleeping_{false};
  std::mutex cmd_mu_;
  std::vector<Op*> posted_;
  std::deque<std::function<void()>> commands_;

  // Op slots: ops_[slot] is set once (before the slot is first posted) and
  // never changes, so the progress thread reads it without a lock.
  std::unique_ptr<std::atomic<Op*>[]> ops_;
  uint32_t num_ops_ = 0;  // Under ops_mu_.

  // Progress-thread state.
  std::vector<Op*> batch_;
  std::deque<std::function<void()>> cmds_;
  std::map<int, Peer> peers_;
  std::vector<Op*> live_ops_;
  std::deque<Op*> staged_queue_;
  bool chunk_in_flight_ = false;
  // Receive-side staging, sender: ops that got grants this pass (+ the
  // generation they had); scratch for chunk messages.
  std::vector<std::pair<Op*, uint32_t>> granted_ops_;
  std::vector<int64_t> chunk_dst_;
  // Receive-side staging, receiver: transfers in progress (objects reused),
  // those waiting for slots (round robin), chunk messages of this pass,
  // revoked slots waiting out their quarantine, the next grant token.
  std::vector<Incoming*> incoming_;
  std::vector<std::unique_ptr<Incoming>> incoming_store_;
  std::vector<Incoming*> free_incoming_;
  std::deque<Incoming*> want_slots_;
  std::vector<PendingChunk> chunks_;
  size_t num_chunks_ = 0;
  std::vector<std::pair<Clock::time_point, uint32_t>> quarantine_;
  uint32_t next_token_ = 1;
  std::vector<int> lost_;
  std::vector<MsgSlot*> pending_acks_;
  std::vector<int> ready_peers_;  // May hold duplicates; checked on send.
  std::vector<std::unique_ptr<MsgSlot>> msgs_;
  std::vector<MsgSlot*> free_msgs_;
  std::vector<ucs_status_ptr_t> closing_;
  std::vector<std::unique_ptr<ErrArg>> err_args_;
  std::vector<std::unique_ptr<void, void (*)(void*)>> thunks_;
  int outstanding_requests_ = 0;
  std::map<int, int> outstanding_by_peer_;
  bool ep_error_ = false;
  ucs_status_t failed_status_ = UCS_OK;

  // Caller-side state.
  std::mutex ops_mu_;
  std::vector<Op*> free_ops_;
  std::unordered_map<uint64_t, Op*> transfers_;
  std::vector<std::unordered_map<uint64_t, Op*>::node_type> spare_nodes_;
  std::mutex peers_mu_;
  std::map<int, std::shared_ptr<const PeerInfo>> peer_info_;
  std::mutex rx_mu_;
  // Separate, so that a thread waiting for control messages is not woken
  // by every completion (and vice versa).
  std::condition_variable rx_cv_;
  std::condition_variable control_cv_;
  std::deque<TransferCompletion> completions_;
  std::deque<ControlMessage> controls_;
  mutable std::mutex stats_mu_;
  KvTransferStats stats_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvTransferEngine>> CreateUcxEngine(
    int rank, Store* store, const KvTransferOptions& options) {
  auto engine = std::make_unique<UcxEngine>(rank, store, options);
  RETURN_IF_ERROR(engine->Init());
  return std::unique_ptr<KvTransferEngine>(std::move(engine));
}

}  // namespace tessera::comm::internal
