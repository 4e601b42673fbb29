// Gloo backend (Debian's libgloo-dev, host memory over TCP): used when the
// ranks were not started by mpirun. Rendezvous goes through tessera's own
// bootstrap store, wrapped as a gloo::rendezvous::Store.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <map>

#include "base/status.h"
#include "comm/internal/backend_factories.h"
#include "fmt/format.h"
#include "gloo/allgather.h"
#include "gloo/allreduce.h"
#include "gloo/alltoall.h"
#include "gloo/barrier.h"
#include "gloo/broadcast.h"
#include "gloo/common/error.h"
#include "gloo/math.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/store.h"
#include "gloo/transport/tcp/device.h"
#include "spdlog/spdlog.h"

namespace tessera::comm::internal {
namespace {

// gloo::rendezvous::Store over tessera's store, under a per-group prefix.
// Gloo reports failures by exception, which stay inside this file.
class GlooStore final : public gloo::rendezvous::Store {
 public:
  GlooStore(comm::Store& store, std::string prefix,
            std::chrono::milliseconds timeout)
      : store_(store), prefix_(std::move(prefix)), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    absl::Status s =
        store_.Set(prefix_ + key, std::string_view(data.data(), data.size()));
    if (!s.ok()) throw gloo::IoException(std::string(s.message()));
  }
  std::vector<char> get(const std::string& key) override {
    auto v = store_.Get(prefix_ + key, timeout_);
    if (!v.ok()) throw gloo::IoException(std::string(v.status().message()));
    return std::vector<char>(v->begin(), v->end());
  }
  void wait(const std::vector<std::string>& keys) override {
    wait(keys, timeout_);
  }
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    std::vector<std::string> full;
    for (const auto& k : keys) full.push_back(prefix_ + k);
    absl::Status s = store_.Wait(full, timeout);
    if (!s.ok()) throw gloo::IoException(std::string(s.message()));
  }

 private:
  comm::Store& store_;
  std::string prefix_;
  std::chrono::milliseconds timeout_;
};

absl::Status FromException(const std::exception& e, const char* what) {
  const std::string msg = e.what();
  if (msg.find("Timed out") != std::string::npos ||
      msg.find("timed out") != std::string::npos ||
      msg.find("did not appear") != std::string::npos) {
    return absl::DeadlineExceededError(fmt::format("gloo {}: {}", what, msg));
  }
  return absl::UnavailableError(fmt::format("gloo {}: {}", what, msg));
}

// Runs `fn`, turning Gloo's exceptions into a Status.
template <typename Fn>
absl::Status Guard(const char* what, Fn&& fn) {
  try {
    fn();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    absl::Status s = FromException(e, what);
    spdlog::error("{}", std::string(s.message()));
    return s;
  }
}

class GlooCommunicator final : public Communicator {
 public:
  GlooCommunicator(std::shared_ptr<gloo::Context> context,
                   std::shared_ptr<gloo::transport::Device> device,
                   comm::Store& store, std::string group_id,
                   const CommOptions& options)
      : Communicator(options),
        context_(std::move(context)),
        device_(std::move(device)),
        store_(store),
        group_id_(std::move(group_id)) {}

  int rank() const override { return context_->rank; }
  int size() const override { return context_->size; }
  std::string_view backend() const override { return "gloo"; }

  // Builds a group of `size` ranks named `group_id` through the store.
  static absl::StatusOr<std::unique_ptr<Communicator>> Connect(
      comm::Store& store, std::shared_ptr<gloo::transport::Device> device,
      const std::string& group_id, int rank, int size,
      const CommOptions& options) {
    std::shared_ptr<gloo::Context> context;
    GlooStore gstore(store, "tessera/gloo/" + group_id + "/", options.timeout);
    RETURN_IF_ERROR(Guard("rendezvous", [&] {
      auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, size);
      ctx->setTimeout(options.timeout);
      ctx->connectFullMesh(gstore, device);
      context = std::move(ctx);
    }));
    return std::unique_ptr<Communicator>(std::make_unique<GlooCommunicator>(
        std::move(context), std::move(device), store, group_id, options));
  }

 protected:
  absl::Status AllReduceF32(float* data, int64_t count) override {
    return Guard("all-reduce", [&] {
      gloo::AllreduceOptions opts(context_);
      opts.setOutput(data, static_cast<size_t>(count));
      opts.setReduceFunction(
          static_cast<void (*)(void*, const void*, const void*, size_t)>(
              &gloo::sum<float>));
      opts.setTag(NextTag());
      gloo::allreduce(opts);
    });
  }
  // All-to-all then a local sum in rank order: the same bytes on the wire as
  // a ring reduce-scatter ((n-1)/n of the input per rank).
  absl::Status ReduceScatterF32(const float* send, float* recv,
                                int64_t count_per_rank) override {
    rs_scratch_.resize(static_cast<size_t>(count_per_rank) * size());
    RETURN_IF_ERROR(AllToAllBytes(send, rs_scratch_.data(),
                                  count_per_rank * sizeof(float)));
    SumChunksInRankOrder(rs_scratch_.data(), size(), count_per_rank, recv);
    return absl::OkStatus();
  }
  absl::Status AllGatherBytes(const void* send, void* recv,
                              int64_t bytes) override {
    return Guard("all-gather", [&] {
      gloo::AllgatherOptions opts(context_);
      opts.setInput(static_cast<char*>(const_cast<void*>(send)),
                    static_cast<size_t>(bytes));
      opts.setOutput(static_cast<char*>(recv),
                     static_cast<size_t>(bytes) * size());
      opts.setTag(NextTag());
      gloo::allgather(opts);
    });
  }
  absl::Status AllToAllBytes(const void* send, void* recv,
                             int64_t bytes) override {
    return Guard("all-to-all", [&] {
      gloo::AlltoallOptions opts(context_);
      opts.setInput(static_cast<char*>(const_cast<void*>(send)),
                    static_cast<size_t>(bytes) * size());
      opts.setOutput(static_cast<char*>(recv),
                     static_cast<size_t>(bytes) * size());
      opts.setTag(NextTag());
      gloo::alltoall(opts);
    });
  }
  // Pairwise sends/receives: handles zero-sized entries, which
  // gloo::alltoallv does not accept.
  absl::Status AllToAllVBytes(const void* send, std::span<const int64_t> sb,
                              void* recv,
                              std::span<const int64_t> rb) override {
    const uint64_t slot = kAllToAllVSlot + NextTag();
    return Guard("all-to-all-v", [&] {
      const int n = size();
      std::vector<std::unique_ptr<gloo::transport::UnboundBuffer>> sends, recvs;
      int64_t so = 0, ro = 0;
      auto* s = static_cast<char*>(const_cast<void*>(send));
      auto* r = static_cast<char*>(recv);
      for (int p = 0; p < n; ++p) {
        if (p == rank()) {
          if (sb[p] != rb[p]) {
            throw gloo::InvalidOperationException(
                "send and recv sizes to self differ");
          }
          if (sb[p] > 0)
            std::memcpy(r + ro, s + so, static_cast<size_t>(sb[p]));
        } else {
          if (rb[p] > 0) {
            recvs.push_back(context_->createUnboundBuffer(r + ro, rb[p]));
            recvs.back()->recv(p, slot);
          }
          if (sb[p] > 0) {
            sends.push_back(context_->createUnboundBuffer(s + so, sb[p]));
            sends.back()->send(p, slot);
          }
        }
        so += sb[p];
        ro += rb[p];
      }
      for (auto& b : recvs) b->waitRecv(options().timeout);
      for (auto& b : sends) b->waitSend(options().timeout);
    });
  }
  absl::Status SendBytes(const void* data, int64_t bytes, int peer,
                         int tag) override {
    return Guard("send", [&] {
      auto buf = context_->createUnboundBuffer(const_cast<void*>(data),
                                               static_cast<size_t>(bytes));
      buf->send(peer, static_cast<uint64_t>(tag));
      buf->waitSend(options().timeout);
    });
  }
  absl::Status RecvBytes(void* data, int64_t bytes, int peer,
                         int tag) override {
    return Guard("recv", [&] {
      auto buf =
          context_->createUnboundBuffer(data, static_cast<size_t>(bytes));
      buf->recv(peer, static_cast<uint64_t>(tag));
      buf->waitRecv(options().timeout);
    });
  }
  absl::Status BroadcastBytes(void* data, int64_t bytes, int root) override {
    return Guard("broadcast", [&] {
      gloo::BroadcastOptions opts(context_);
      opts.setOutput(static_cast<char*>(data), static_cast<size_t>(bytes));
      opts.setRoot(root);
      opts.setTag(NextTag());
      gloo::broadcast(opts);
    });
  }
  absl::Status BarrierImpl() override {
    return Guard("barrier", [&] {
      gloo::BarrierOptions opts(context_);
      opts.setTag(NextTag());
      gloo::barrier(opts);
    });
  }
  absl::StatusOr<std::unique_ptr<Communicator>> SubgroupImpl(
      const std::vector<int>& ranks) override {
    // Members agree on the name without talking: the rank list plus how
    // many times this group asked for that list.
    const std::string list = FormatRanks(ranks);
    const int generation = subgroup_generation_[list]++;
    const std::string id =
        fmt::format("{}[{}]#{}", group_id_, list, generation);
    const int new_rank = static_cast<int>(
        std::lower_bound(ranks.begin(), ranks.end(), rank()) - ranks.begin());
    return Connect(store_, device_, id, new_rank,
                   static_cast<int>(ranks.size()), options());
  }

 private:
  // Gloo slots: collectives use prefix<<56 | tag; p2p uses tag < 2^20; this
  // range is between them.
  static constexpr uint64_t kAllToAllVSlot = uint64_t{1} << 40;
  // Collectives are called in the same order on every rank, so a counter
  // gives matching tags and keeps concurrent messages apart.
  uint32_t NextTag() { return (tag_++) & 0xffffff; }

  std::shared_ptr<gloo::Context> context_;
  std::shared_ptr<gloo::transport::Device> device_;
  comm::Store& store_;
  std::string group_id_;
  uint32_t tag_ = 0;
  std::map<std::string, int> subgroup_generation_;
  std::vector<float> rs_scratch_;
};

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(
    const WorldInfo& world, Store& store, const CommOptions& options) {
  std::shared_ptr<gloo::transport::Device> device;
  gloo::transport::tcp::attr attr;
  if (!options.gloo_hostname.empty()) {
    attr.hostname = options.gloo_hostname;
  } else if (IsLoopback(world.master_host)) {
    attr.hostname = "127.0.0.1";  // All ranks on this host.
  }
  RETURN_IF_ERROR(Guard(
      "device", [&] { device = gloo::transport::tcp::CreateDevice(attr); }));
  // Every rank builds its world communicators in the same order, so a
  // per-process counter names them consistently.
  static std::atomic<int> generation{0};
  return GlooCommunicator::Connect(store, std::move(device),
                                   fmt::format("world#{}", generation++),
                                   world.rank, world.world_size, options);
}

}  // namespace tessera::comm::internal
