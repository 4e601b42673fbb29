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
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "base/status.h"
#include "comm/kv_transfer.h"
#include "fmt/format.h"
#include "spdlog/spdlog.h"

namespace tessera::comm::internal {
namespace {

using Clock = std::chrono::steady_clock;

// Active message ids.
constexpr uint16_t kAmDone = 1;     // Sender → receiver: transfer landed.
constexpr uint16_t kAmAck = 2;      // Receiver → sender: got it.
constexpr uint16_t kAmControl = 3;  // Either way: control message.

struct AmHeader {
  uint64_t request_id;
  int32_t sender;
  int32_t pad;
};

// What a rank publishes about its pool.
struct PoolInfo {
  uint64_t base;
  int64_t block_bytes;
  int64_t num_blocks;
};

// A transfer or control send, shared between the caller (who waits) and the
// progress thread (which completes it).
struct Op {
  uint64_t id = 0;
  int peer = -1;
  bool is_transfer = true;
  Clock::time_point deadline;
  std::chrono::milliseconds timeout{0};
  std::string payload;  // Control messages: kept alive until sent.
  AmHeader header{};
  // Completion.
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  absl::Status status;

  void Finish(absl::Status s) {
    std::lock_guard lock(mu);
    if (done) return;
    done = true;
    status = std::move(s);
    cv.notify_all();
  }
  bool finished() {
    std::lock_guard lock(mu);
    return done;
  }
};

// User data of one UCX request: keeps its Op alive until the callback.
struct ReqCtx {
  class UcxEngine* engine;
  std::shared_ptr<Op> op;
  enum Kind { kPut, kFlush, kAm } kind;
};

struct Peer {
  ucp_ep_h ep = nullptr;
  ucp_rkey_h rkey = nullptr;
  PoolInfo pool{};
  bool failed = false;
  bool peer_failure_detection = true;  // Error mode PEER (force close ok).
};

std::string UcsError(ucs_status_t s) { return ucs_status_string(s); }

class UcxEngine final : public KvTransferEngine {
 public:
  UcxEngine(int rank, Store* store, const KvTransferOptions& options)
      : rank_(rank), store_(store), options_(options) {}

  ~UcxEngine() override {
    RunOnWorker([this] { ShutdownOnWorker(); });
    stop_.store(true);
    Wake();
    if (thread_.joinable()) thread_.join();
    if (!leak_worker_) {
      if (memh_ != nullptr) ucp_mem_unmap(context_, memh_);
      if (worker_ != nullptr) ucp_worker_destroy(worker_);
      if (context_ != nullptr) ucp_cleanup(context_);
    }
    if (wake_fd_ >= 0) ::close(wake_fd_);
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
    RETURN_IF_ERROR(RegisterPoolImpl(nullptr, block_bytes, num_blocks));
    return reinterpret_cast<void*>(pool_.base);
  }

  absl::Status RegisterPool(void* base, int64_t block_bytes,
                            int64_t num_blocks) override {
    if (base == nullptr) {
      return absl::InvalidArgumentError("RegisterPool needs a buffer");
    }
    return RegisterPoolImpl(base, block_bytes, num_blocks);
  }

  // base == nullptr: UCX allocates the pool (shared-memory segments, so
  // shm puts are plain copies into the peer's mapping).
  absl::Status RegisterPoolImpl(void* base, int64_t block_bytes,
                                int64_t num_blocks) {
    if (block_bytes <= 0 || num_blocks <= 0) {
      return absl::InvalidArgumentError(
          "RegisterPool needs a buffer, block_bytes > 0 and num_blocks > 0");
    }
    if (num_blocks > INT64_MAX / block_bytes) {
      return absl::InvalidArgumentError("RegisterPool: size overflows");
    }
    std::string packed;
    absl::Status status;
    RunOnWorker([&] {
      if (memh_ != nullptr) {
        status = absl::FailedPreconditionError("pool already registered");
        return;
      }
      ucp_mem_map_params_t mp{};
      mp.field_mask =
          UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
      mp.address = base;
      mp.length = static_cast<size_t>(block_bytes * num_blocks);
      if (base == nullptr) {
        mp.field_mask |= UCP_MEM_MAP_PARAM_FIELD_FLAGS;
        mp.flags = UCP_MEM_MAP_ALLOCATE;
      }
      ucs_status_t s = ucp_mem_map(context_, &mp, &memh_);
      if (s != UCS_OK) {
        memh_ = nullptr;
        status = absl::ResourceExhaustedError("ucp_mem_map: " + UcsError(s));
        return;
      }
      if (base == nullptr) {
        ucp_mem_attr_t attr{};
        attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS;
        ucp_mem_query(memh_, &attr);
        base = attr.address;
        std::memset(base, 0, mp.length);
      }
      void* rkey = nullptr;
      size_t rkey_len = 0;
      s = ucp_rkey_pack(context_, memh_, &rkey, &rkey_len);
      if (s != UCS_OK) {
        ucp_mem_unmap(context_, memh_);
        memh_ = nullptr;
        status = absl::InternalError("ucp_rkey_pack: " + UcsError(s));
        return;
      }
      PoolInfo info{reinterpret_cast<uint64_t>(base), block_bytes, num_blocks};
      packed.assign(reinterpret_cast<const char*>(&info), sizeof(info));
      packed.append(static_cast<const char*>(rkey), rkey_len);
      ucp_rkey_buffer_release(rkey);
      pool_ = info;
    });
    RETURN_IF_ERROR(status);
    return store_->Set(Key(rank_, "pool"), packed);
  }

  absl::Status Transfer(int peer, uint64_t request_id,
                        std::span<const BlockCopy> blocks,
                        std::chrono::milliseconds timeout) override {
    if (pool_.num_blocks == 0) {
      return absl::FailedPreconditionError(
          "Transfer before RegisterPool on this engine");
    }
    if (peer < 0) return absl::InvalidArgumentError("bad peer rank");
    ASSIGN_OR_RETURN(PeerInfo info,
                     LookupPeer(peer, /*need_pool=*/true, timeout));
    // Validate and coalesce: sort by source, merge runs adjacent on both
    // sides. Runs are (src offset, dst addr, bytes).
    std::vector<BlockCopy> sorted(blocks.begin(), blocks.end());
    for (const BlockCopy& b : sorted) {
      if (b.src_block < 0 || b.src_block >= pool_.num_blocks ||
          b.dst_block < 0 || b.dst_block >= info.pool.num_blocks) {
        return absl::InvalidArgumentError(fmt::format(
            "block copy {} -> {} is outside the pools ({} local, {} on rank "
            "{})",
            b.src_block, b.dst_block, pool_.num_blocks, info.pool.num_blocks,
            peer));
      }
    }
    if (info.pool.block_bytes != pool_.block_bytes) {
      return absl::InvalidArgumentError(
          fmt::format("block size differs: {} here, {} on rank {}",
                      pool_.block_bytes, info.pool.block_bytes, peer));
    }
    std::sort(sorted.begin(), sorted.end(),
              [](const BlockCopy& a, const BlockCopy& b) {
                return a.src_block < b.src_block;
              });
    auto runs = std::make_shared<std::vector<Run>>();
    for (const BlockCopy& b : sorted) {
      if (!runs->empty() &&
          runs->back().src_block + runs->back().count == b.src_block &&
          runs->back().dst_block + runs->back().count == b.dst_block) {
        ++runs->back().count;
      } else {
        runs->push_back({b.src_block, b.dst_block, 1});
      }
    }

    auto op = std::make_shared<Op>();
    op->id = request_id;
    op->peer = peer;
    op->timeout = timeout;
    op->deadline = Clock::now() + timeout;
    {
      std::lock_guard lock(ops_mu_);
      if (!transfers_.emplace(request_id, op).second) {
        return absl::InvalidArgumentError(
            fmt::format("transfer {} is already in flight", request_id));
      }
    }
    Post([this, op, runs, info] { StartTransfer(op, *runs, info); });
    absl::Status s = WaitOp(*op);
    std::lock_guard lock(ops_mu_);
    transfers_.erase(request_id);
    return s;
  }

  absl::Status Cancel(uint64_t request_id) override {
    std::shared_ptr<Op> op;
    {
      std::lock_guard lock(ops_mu_);
      auto it = transfers_.find(request_id);
      if (it == transfers_.end()) {
        return absl::NotFoundError(
            fmt::format("no transfer {} in flight", request_id));
      }
      op = it->second;
    }
    op->Finish(
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
    ASSIGN_OR_RETURN(PeerInfo info,
                     LookupPeer(peer, /*need_pool=*/false, timeout));
    auto op = std::make_shared<Op>();
    op->is_transfer = false;
    op->peer = peer;
    op->timeout = timeout;
    op->deadline = Clock::now() + timeout;
    op->payload = std::string(payload);
    Post([this, op, info] { StartControl(op, info); });
    return WaitOp(*op);
  }

  absl::StatusOr<ControlMessage> WaitControl(
      std::chrono::milliseconds timeout) override {
    std::unique_lock lock(rx_mu_);
    if (!rx_cv_.wait_for(lock, timeout, [&] { return !controls_.empty(); })) {
      return absl::DeadlineExceededError(fmt::format(
          "no control message arrived within {} ms", timeout.count()));
    }
    ControlMessage m = std::move(controls_.front());
    controls_.pop_front();
    return m;
  }

  bool SupportsCudaMemory() const override { return cuda_; }

  // --- UCX callbacks (progress thread) ---
  void OnRequestDone(ReqCtx* ctx, ucs_status_t status, void* request) {
    std::unique_ptr<ReqCtx> owned(ctx);
    ucp_request_free(request);
    --outstanding_requests_;
    --outstanding_by_peer_[ctx->op->peer];
    Op& op = *ctx->op;
    if (status != UCS_OK) {
      op.Finish(absl::UnavailableError(
          fmt::format("rank {} unreachable: {}", op.peer, UcsError(status))));
      return;
    }
    if (ctx->kind == ReqCtx::kFlush) SendDone(ctx->op);
    if (ctx->kind == ReqCtx::kAm && !op.is_transfer)
      op.Finish(absl::OkStatus());
  }

 private:
  struct Run {
    int64_t src_block, dst_block, count;
  };
  struct PeerInfo {
    std::string address;
    PoolInfo pool{};
    std::string rkey;
  };

  std::string Key(int rank, const char* what) const {
    return fmt::format("{}/{}/{}", options_.store_prefix, rank, what);
  }

  // Reads (once) the peer's worker address and pool key from the store,
  // waiting at most min(timeout, lookup_timeout).
  absl::StatusOr<PeerInfo> LookupPeer(int peer, bool need_pool,
                                      std::chrono::milliseconds timeout) {
    const auto wait = std::min(timeout, options_.lookup_timeout);
    {
      std::lock_guard lock(peers_mu_);
      auto it = peer_info_.find(peer);
      if (it != peer_info_.end() && (!need_pool || !it->second.rkey.empty())) {
        return it->second;
      }
    }
    PeerInfo info;
    auto addr = store_->Get(Key(peer, "worker"), wait);
    if (!addr.ok()) {
      return absl::UnavailableError(
          fmt::format("rank {} has no KV transfer engine: {}", peer,
                      std::string(addr.status().message())));
    }
    info.address = *std::move(addr);
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
      std::memcpy(&info.pool, pool->data(), sizeof(PoolInfo));
      info.rkey = pool->substr(sizeof(PoolInfo));
    }
    std::lock_guard lock(peers_mu_);
    peer_info_[peer] = info;
    return info;
  }

  absl::Status WaitOp(Op& op) {
    // The progress thread enforces the deadline; the backstop only guards
    // against a wedged progress thread.
    std::unique_lock lock(op.mu);
    if (!op.cv.wait_until(lock, op.deadline + std::chrono::seconds(2),
                          [&] { return op.done; })) {
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
  ucs_status_t OnDoneAm(const void* header, size_t header_length, void*, size_t,
                        const ucp_am_recv_param_t* param) {
    if (header_length != sizeof(AmHeader)) return UCS_OK;  // Malformed.
    AmHeader h;
    std::memcpy(&h, header, sizeof(h));
    if (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) {
      pending_acks_.push_back({param->reply_ep, h});
    }
    {
      std::lock_guard lock(rx_mu_);
      completions_.push_back({h.sender, h.request_id});
    }
    rx_cv_.notify_all();
    return UCS_OK;
  }

  ucs_status_t OnAckAm(const void* header, size_t header_length, void*, size_t,
                       const ucp_am_recv_param_t*) {
    if (header_length != sizeof(AmHeader)) return UCS_OK;
    AmHeader h;
    std::memcpy(&h, header, sizeof(h));
    auto it = awaiting_ack_.find(h.request_id);
    if (it != awaiting_ack_.end()) {
      it->second->Finish(absl::OkStatus());
      awaiting_ack_.erase(it);
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
    rx_cv_.notify_all();
    return UCS_OK;
  }

  // --- Progress thread ---
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

  void ProgressLoop() {
    auto last_activity = Clock::now();
    while (!stop_.load()) {
      bool busy = false;
      while (ucp_worker_progress(worker_) != 0) busy = true;
      busy |= RunCommands();
      busy |= SendPendingAcks();
      busy |= ProcessFailures();
      busy |= CheckDeadlines();
      const auto now = Clock::now();
      if (busy) last_activity = now;
      // Spin while work is in flight or was recent (latency); sleep on the
      // event fds otherwise (the host is shared).
      if ((outstanding_requests_ > 0 || !awaiting_ack_.empty() ||
           now - last_activity < options_.busy_poll) &&
          options_.busy_poll.count() > 0) {
        continue;
      }
      if (ucp_worker_arm(worker_) == UCS_ERR_BUSY) continue;
      pollfd fds[2] = {{worker_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
      // Not every transport signals the event fd for every arrival (shared
      // memory in UCX 1.13 may not), so sleep briefly rather than long.
      ::poll(fds, 2, options_.nap_ms);
      if (fds[1].revents & POLLIN) {
        uint64_t v;
        [[maybe_unused]] ssize_t n = ::read(wake_fd_, &v, sizeof(v));
      }
    }
  }

  bool RunCommands() {
    std::deque<std::function<void()>> cmds;
    {
      std::lock_guard lock(cmd_mu_);
      cmds.swap(commands_);
    }
    for (auto& c : cmds) c();
    return !cmds.empty();
  }

  bool SendPendingAcks() {
    if (pending_acks_.empty()) return false;
    auto acks = std::move(pending_acks_);
    pending_acks_.clear();
    for (auto& [ep, h] : acks) {
      AmHeader reply = h;
      reply.sender = rank_;
      ucp_request_param_t rp{};
      rp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      rp.flags = UCP_AM_SEND_FLAG_EAGER;
      // The header is copied by UCX before returning (header is inline).
      ucs_status_ptr_t req =
          ucp_am_send_nbx(ep, kAmAck, &reply, sizeof(reply), nullptr, 0, &rp);
      if (UCS_PTR_IS_PTR(req)) {
        // Let it complete in the background.
        ucp_request_free(req);
      }
    }
    return true;
  }

  bool CheckDeadlines() {
    if (awaiting_ack_.empty() && live_ops_.empty()) return false;
    const auto now = Clock::now();
    std::vector<int> lost;
    for (auto it = live_ops_.begin(); it != live_ops_.end();) {
      Op& op = **it;
      if (op.finished()) {
        it = live_ops_.erase(it);
        continue;
      }
      if (now >= op.deadline) {
        op.Finish(absl::UnavailableError(fmt::format(
            "rank {} did not complete {} {} within {} ms (peer presumed "
            "lost)",
            op.peer, op.is_transfer ? "transfer" : "control message", op.id,
            op.timeout.count())));
        lost.push_back(op.peer);
        it = live_ops_.erase(it);
        continue;
      }
      ++it;
    }
    for (auto it = awaiting_ack_.begin(); it != awaiting_ack_.end();) {
      if (it->second->finished()) {
        it = awaiting_ack_.erase(it);
      } else {
        ++it;
      }
    }
    for (int p : lost) ClosePeer(p, /*force=*/true);
    return !lost.empty();
  }

  bool ProcessFailures() {
    if (!ep_error_) return false;
    ep_error_ = false;
    // Find eps in error state: UCX has no query for it in 1.13, so every
    // peer with live ops or errors is probed via a zero-cost flag set in the
    // per-peer error callback below.
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
    for (auto& op : live_ops_) {
      if (op->peer == peer) op->Finish(s);
    }
  }

  struct ErrArg {
    UcxEngine* self;
    int peer;
  };

  absl::StatusOr<Peer*> GetPeer(int peer, const PeerInfo& info) {
    Peer& p = peers_[peer];
    if (p.ep == nullptr) {
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
    return rp;
  }

  static void SendCb(void* request, ucs_status_t status, void* user_data) {
    auto* ctx = static_cast<ReqCtx*>(user_data);
    ctx->engine->OnRequestDone(ctx, status, request);
  }

  // Tracks a request returned by an _nbx call; false on immediate error.
  bool Track(ucs_status_ptr_t req, ReqCtx* ctx, const char* what) {
    if (req == nullptr) {  // Completed in place; no callback.
      std::shared_ptr<Op> op = ctx->op;
      const auto kind = ctx->kind;
      delete ctx;
      if (kind == ReqCtx::kFlush) SendDone(op);
      if (kind == ReqCtx::kAm && !op->is_transfer) op->Finish(absl::OkStatus());
      return true;
    }
    if (UCS_PTR_IS_ERR(req)) {
      ctx->op->Finish(absl::UnavailableError(
          fmt::format("{} to rank {} failed: {}", what, ctx->op->peer,
                      UcsError(UCS_PTR_STATUS(req)))));
      delete ctx;
      return false;
    }
    ++outstanding_requests_;
    ++outstanding_by_peer_[ctx->op->peer];
    return true;
  }

  void StartTransfer(const std::shared_ptr<Op>& op,
                     const std::vector<Run>& runs, const PeerInfo& info) {
    if (op->finished()) return;  // Cancelled before it started.
    live_ops_.push_back(op);
    auto peer = GetPeer(op->peer, info);
    if (!peer.ok()) {
      op->Finish(peer.status());
      return;
    }
    Peer& p = **peer;
    const int64_t bb = pool_.block_bytes;
    for (const Run& r : runs) {
      auto* ctx = new ReqCtx{this, op, ReqCtx::kPut};
      ucp_request_param_t rp = Params(ctx);
      rp.cb.send = &UcxEngine::SendCb;
      char* src = reinterpret_cast<char*>(pool_.base) + r.src_block * bb;
      const uint64_t dst =
          p.pool.base + static_cast<uint64_t>(r.dst_block * bb);
      if (!Track(ucp_put_nbx(p.ep, src, static_cast<size_t>(r.count * bb), dst,
                             p.rkey, &rp),
                 ctx, "put")) {
        return;
      }
    }
    // Remote completion of every put, then the notification.
    auto* ctx = new ReqCtx{this, op, ReqCtx::kFlush};
    ucp_request_param_t rp = Params(ctx);
    rp.cb.send = &UcxEngine::SendCb;
    Track(ucp_ep_flush_nbx(p.ep, &rp), ctx, "flush");
  }

  void SendDone(const std::shared_ptr<Op>& op) {
    if (op->finished()) return;
    auto it = peers_.find(op->peer);
    if (it == peers_.end() || it->second.ep == nullptr) {
      op->Finish(absl::UnavailableError(
          fmt::format("rank {} lost before completion", op->peer)));
      return;
    }
    op->header = AmHeader{op->id, rank_, 0};
    awaiting_ack_[op->id] = op;
    auto* ctx = new ReqCtx{this, op, ReqCtx::kAm};
    ucp_request_param_t rp = Params(ctx, UCP_OP_ATTR_FIELD_FLAGS);
    rp.cb.send = &UcxEngine::SendCb;
    rp.flags = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER;
    Track(ucp_am_send_nbx(it->second.ep, kAmDone, &op->header,
                          sizeof(op->header), nullptr, 0, &rp),
          ctx, "completion message");
  }

  void StartControl(const std::shared_ptr<Op>& op, const PeerInfo& info) {
    live_ops_.push_back(op);
    auto peer = GetPeer(op->peer, info);
    if (!peer.ok()) {
      op->Finish(peer.status());
      return;
    }
    op->header = AmHeader{0, rank_, 0};
    auto* ctx = new ReqCtx{this, op, ReqCtx::kAm};
    ucp_request_param_t rp = Params(ctx, UCP_OP_ATTR_FIELD_FLAGS);
    rp.cb.send = &UcxEngine::SendCb;
    rp.flags = UCP_AM_SEND_FLAG_EAGER;
    Track(ucp_am_send_nbx((*peer)->ep, kAmControl, &op->header,
                          sizeof(op->header), op->payload.data(),
                          op->payload.size(), &rp),
          ctx, "control message");
  }

  void ShutdownOnWorker() {
    for (auto& op : live_ops_) {
      op->Finish(absl::CancelledError("KV transfer engine shut down"));
    }
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
          "KV transfer engine: {} requests still pending at shutdown; "
          "leaking the UCX worker",
          outstanding_requests_ + static_cast<int>(closing_.size()));
      leak_worker_ = true;
    }
    live_ops_.clear();
    awaiting_ack_.clear();
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

  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex cmd_mu_;
  std::deque<std::function<void()>> commands_;

  // Progress-thread state.
  std::map<int, Peer> peers_;
  std::vector<std::shared_ptr<Op>> live_ops_;
  std::unordered_map<uint64_t, std::shared_ptr<Op>> awaiting_ack_;
  std::vector<std::pair<ucp_ep_h, AmHeader>> pending_acks_;
  std::vector<ucs_status_ptr_t> closing_;
  std::vector<std::unique_ptr<ErrArg>> err_args_;
  std::vector<std::unique_ptr<void, void (*)(void*)>> thunks_;
  int outstanding_requests_ = 0;
  std::map<int, int> outstanding_by_peer_;
  bool ep_error_ = false;
  ucs_status_t failed_status_ = UCS_OK;

  // Caller-side state.
  std::mutex ops_mu_;
  std::unordered_map<uint64_t, std::shared_ptr<Op>> transfers_;
  std::mutex peers_mu_;
  std::map<int, PeerInfo> peer_info_;
  std::mutex rx_mu_;
  std::condition_variable rx_cv_;
  std::deque<TransferCompletion> completions_;
  std::deque<ControlMessage> controls_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvTransferEngine>> CreateUcxEngine(
    int rank, Store* store, const KvTransferOptions& options) {
  auto engine = std::make_unique<UcxEngine>(rank, store, options);
  RETURN_IF_ERROR(engine->Init());
  return std::unique_ptr<KvTransferEngine>(std::move(engine));
}

}  // namespace tessera::comm::internal
