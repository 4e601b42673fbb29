#include "comm/bootstrap.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <thread>

#include "base/status.h"
#include "fmt/format.h"
#include "spdlog/spdlog.h"

namespace tessera::comm {
namespace {

using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------- world ----

absl::StatusOr<int> ParseInt(std::string_view name, std::string_view text) {
  int value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) {
    return absl::InvalidArgumentError(
        fmt::format("{}='{}' is not an integer", name, text));
  }
  return value;
}

absl::StatusOr<std::optional<int>> EnvInt(const EnvLookup& env,
                                          std::string_view name) {
  std::optional<std::string> v = env(name);
  if (!v) return std::optional<int>();
  ASSIGN_OR_RETURN(int value, ParseInt(name, *v));
  return std::optional<int>(value);
}

// ------------------------------------------------------------ protocol ----
// Request: u8 op, u32 timeout_ms, u32 nkeys, nkeys x (u32 len, bytes),
//          u32 value_len, value bytes.
// Reply:   u8 code (0 ok, 1 deadline, 2 bad request), u32 n, n x (u32, bytes).
enum Op : uint8_t { kSet = 1, kGet = 2, kWait = 3, kAdd = 4 };
enum Reply : uint8_t { kOk = 0, kDeadline = 1, kBad = 2 };
constexpr uint32_t kMaxKeysPerRequest = 1 << 16;

bool WriteAll(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool ReadAll(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t r = ::recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

void PutU32(std::string* out, uint32_t v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}
void PutBytes(std::string* out, std::string_view s) {
  PutU32(out, static_cast<uint32_t>(s.size()));
  out->append(s.data(), s.size());
}

bool ReadU32(int fd, uint32_t* v) { return ReadAll(fd, v, sizeof(*v)); }
bool ReadBytes(int fd, size_t limit, std::string* s) {
  uint32_t n = 0;
  if (!ReadU32(fd, &n) || n > limit) return false;
  s->resize(n);
  return n == 0 || ReadAll(fd, s->data(), n);
}

// ------------------------------------------------------------- server -----

class TcpStoreServer final : public StoreServer {
 public:
  ~TcpStoreServer() override {
    {
      // Let ranks that still use the store finish (bounded), then stop.
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::seconds(10),
                   [&] { return active_ == 0; });
      stopping_ = true;
      cv_.notify_all();
    }
    ::shutdown(listen_fd_, SHUT_RDWR);
    ::close(listen_fd_);
    if (accept_thread_.joinable()) accept_thread_.join();
    std::list<std::thread> threads;
    {
      std::lock_guard lock(mu_);
      for (int fd : conn_fds_) ::shutdown(fd, SHUT_RDWR);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }

  int port() const override { return port_; }

  absl::Status Listen(const std::string& host, int port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0) return absl::InternalError("socket() failed");
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (host.empty() || host == "0.0.0.0") {
      addr.sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
      addr.sin_addr.s_addr = htonl(INADDR_ANY);
    }
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) !=
            0 ||
        ::listen(listen_fd_, 1024) != 0) {
      const int err = errno;
      ::close(listen_fd_);
      listen_fd_ = -1;
      return absl::UnavailableError(
          fmt::format("rendezvous store cannot listen on {}:{}: {}", host, port,
                      std::strerror(err)));
    }
    socklen_t len = sizeof(addr);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    accept_thread_ = std::thread([this] { AcceptLoop(); });
    return absl::OkStatus();
  }

 private:
  void AcceptLoop() {
    while (true) {
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return;  // Listening socket closed.
      }
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      std::lock_guard lock(mu_);
      if (stopping_) {
        ::close(fd);
        return;
      }
      ++active_;
      conn_fds_.push_back(fd);
      threads_.emplace_back([this, fd] { Serve(fd); });
    }
  }

  void Serve(int fd) {
    while (HandleOne(fd)) {
    }
    std::lock_guard lock(mu_);
    conn_fds_.erase(std::find(conn_fds_.begin(), conn_fds_.end(), fd));
    ::close(fd);
    --active_;
    cv_.notify_all();
  }

  // Returns false when the connection should close (EOF or bad request).
  bool HandleOne(int fd) {
    uint8_t op = 0;
    uint32_t timeout_ms = 0, nkeys = 0;
    if (!ReadAll(fd, &op, 1) || !ReadU32(fd, &timeout_ms) ||
        !ReadU32(fd, &nkeys) || nkeys > kMaxKeysPerRequest) {
      return false;
    }
    std::vector<std::string> keys(nkeys);
    for (auto& k : keys) {
      if (!ReadBytes(fd, kMaxStoreKeyBytes, &k)) return false;
    }
    std::string value;
    if (!ReadBytes(fd, kMaxStoreValueBytes, &value)) return false;

    std::string reply;
    uint8_t code = kOk;
    std::vector<std::string> out;
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    {
      std::unique_lock lock(mu_);
      switch (op) {
        case kSet:
          if (nkeys != 1) return false;
          data_[keys[0]] = std::move(value);
          cv_.notify_all();
          break;
        case kAdd: {
          if (nkeys != 1 || value.size() != sizeof(int64_t)) return false;
          int64_t delta;
          std::memcpy(&delta, value.data(), sizeof(delta));
          int64_t current = 0;
          auto it = data_.find(keys[0]);
          if (it != data_.end() && it->second.size() == sizeof(int64_t)) {
            std::memcpy(&current, it->second.data(), sizeof(current));
          }
          current += delta;
          data_[keys[0]] =
              std::string(reinterpret_cast<char*>(&current), sizeof(current));
          out.push_back(data_[keys[0]]);
          cv_.notify_all();
          break;
        }
        case kGet:
        case kWait: {
          if (op == kGet && nkeys != 1) return false;
          auto all_present = [&] {
            if (stopping_) return true;
            for (const auto& k : keys) {
              if (!data_.contains(k)) return false;
            }
            return true;
          };
          cv_.wait_until(lock, deadline, all_present);
          for (const auto& k : keys) {
            auto it = data_.find(k);
            if (it == data_.end()) {
              code = kDeadline;
              out.push_back(k);  // On deadline: the missing keys.
            } else if (op == kGet) {
              out.push_back(it->second);
            }
          }
          break;
        }
        default:
          return false;
      }
    }
    reply.push_back(static_cast<char>(code));
    PutU32(&reply, static_cast<uint32_t>(out.size()));
    for (const auto& s : out) PutBytes(&reply, s);
    return WriteAll(fd, reply.data(), reply.size());
  }

  int listen_fd_ = -1;
  int port_ = 0;
  std::thread accept_thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::string> data_;
  std::list<std::thread> threads_;
  std::vector<int> conn_fds_;
  int active_ = 0;
  bool stopping_ = false;
};

// ------------------------------------------------------------- client -----

class TcpStore final : public Store {
 public:
  TcpStore(int fd, std::string where) : fd_(fd), where_(std::move(where)) {}
  ~TcpStore() override { ::close(fd_); }

  absl::Status Set(const std::string& key, std::string_view value) override {
    std::vector<std::string> out;
    return Call(kSet, {key}, value, std::chrono::milliseconds(0), &out);
  }

  absl::StatusOr<std::string> Get(const std::string& key,
                                  std::chrono::milliseconds timeout) override {
    std::vector<std::string> out;
    absl::Status s = Call(kGet, {key}, {}, timeout, &out);
    if (absl::IsDeadlineExceeded(s)) {
      return absl::DeadlineExceededError(
          fmt::format("key '{}' did not appear in the rendezvous store at {} "
                      "within {} ms",
                      key, where_, timeout.count()));
    }
    RETURN_IF_ERROR(s);
    if (out.size() != 1) return absl::InternalError("malformed store reply");
    return std::move(out[0]);
  }

  absl::Status Wait(const std::vector<std::string>& keys,
                    std::chrono::milliseconds timeout,
                    std::vector<std::string>* missing) override {
    std::vector<std::string> out;
    absl::Status s = Call(kWait, keys, {}, timeout, &out);
    if (absl::IsDeadlineExceeded(s)) {
      if (missing != nullptr) *missing = out;
      return absl::DeadlineExceededError(
          fmt::format("{} of {} keys did not appear in the rendezvous store "
                      "at {} within {} ms",
                      out.size(), keys.size(), where_, timeout.count()));
    }
    return s;
  }

  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta) override {
    std::vector<std::string> out;
    RETURN_IF_ERROR(
        Call(kAdd, {key},
             std::string_view(reinterpret_cast<char*>(&delta), sizeof(delta)),
             std::chrono::milliseconds(0), &out));
    if (out.size() != 1 || out[0].size() != sizeof(int64_t)) {
      return absl::InternalError("malformed store reply");
    }
    int64_t v;
    std::memcpy(&v, out[0].data(), sizeof(v));
    return v;
  }

 private:
  absl::Status Call(uint8_t op, const std::vector<std::string>& keys,
                    std::string_view value, std::chrono::milliseconds timeout,
                    std::vector<std::string>* out) {
    for (const auto& k : keys) {
      if (k.size() > kMaxStoreKeyBytes) {
        return absl::InvalidArgumentError("store key too long");
      }
    }
    if (value.size() > kMaxStoreValueBytes ||
        keys.size() > kMaxKeysPerRequest) {
      return absl::InvalidArgumentError("store value or key list too large");
    }
    std::string req;
    req.push_back(static_cast<char>(op));
    const int64_t ms = std::clamp<int64_t>(timeout.count(), 0, INT32_MAX);
    PutU32(&req, static_cast<uint32_t>(ms));
    PutU32(&req, static_cast<uint32_t>(keys.size()));
    for (const auto& k : keys) PutBytes(&req, k);
    PutBytes(&req, value);

    std::lock_guard lock(mu_);
    // The server answers by the deadline; the socket timeout is a backstop
    // against a hung or dead server.
    timeval tv{};
    const int64_t backstop_ms = ms + 5000;
    tv.tv_sec = backstop_ms / 1000;
    tv.tv_usec = (backstop_ms % 1000) * 1000;
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (!WriteAll(fd_, req.data(), req.size())) {
      return absl::UnavailableError(
          fmt::format("rendezvous store at {} is unreachable", where_));
    }
    uint8_t code = 0;
    uint32_t n = 0;
    if (!ReadAll(fd_, &code, 1) || !ReadU32(fd_, &n) ||
        n > kMaxKeysPerRequest) {
      return absl::UnavailableError(
          fmt::format("rendezvous store at {} did not answer", where_));
    }
    out->resize(n);
    for (auto& s : *out) {
      if (!ReadBytes(fd_, kMaxStoreValueBytes, &s)) {
        return absl::UnavailableError(
            fmt::format("rendezvous store at {} did not answer", where_));
      }
    }
    if (code == kDeadline) return absl::DeadlineExceededError("deadline");
    if (code != kOk) return absl::InternalError("store rejected the request");
    return absl::OkStatus();
  }

  int fd_;
  std::string where_;
  std::mutex mu_;
};

int TryConnect(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port_str = std::to_string(port);
  if (::getaddrinfo(host.c_str(), port_str.c_str(), &hints, &res) != 0) {
    return -1;
  }
  int fd = -1;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                  ai->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(res);
  if (fd >= 0) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  return fd;
}

}  // namespace

EnvLookup ProcessEnv() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* v = std::getenv(std::string(name).c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

absl::Status ParseHostPort(std::string_view text, std::string* host,
                           int* port) {
  *port = kDefaultMasterPort;
  if (text.empty()) return absl::InvalidArgumentError("empty address");
  std::string_view port_part;
  if (text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError(
          fmt::format("bad address '{}': missing ']'", text));
    }
    *host = std::string(text.substr(1, close - 1));
    if (close + 1 < text.size()) {
      if (text[close + 1] != ':') {
        return absl::InvalidArgumentError(
            fmt::format("bad address '{}'", text));
      }
      port_part = text.substr(close + 2);
    }
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      *host = std::string(text);
    } else {
      *host = std::string(text.substr(0, colon));
      port_part = text.substr(colon + 1);
    }
  }
  if (host->empty()) {
    return absl::InvalidArgumentError(
        fmt::format("bad address '{}': empty host", text));
  }
  if (!port_part.empty() || text.back() == ':') {
    auto p = ParseInt("port", port_part);
    if (!p.ok() || *p <= 0 || *p > 65535) {
      return absl::InvalidArgumentError(
          fmt::format("bad address '{}': port must be 1..65535", text));
    }
    *port = *p;
  }
  return absl::OkStatus();
}

absl::StatusOr<WorldInfo> ResolveWorld(const BootstrapFlags& flags,
                                       const EnvLookup& env) {
  WorldInfo w;
  ASSIGN_OR_RETURN(std::optional<int> env_local, EnvInt(env, "LOCAL_RANK"));
  if (flags.rank || flags.world_size) {
    if (!flags.rank || !flags.world_size) {
      return absl::InvalidArgumentError(
          "--rank and --world-size must be given together");
    }
    w.rank = *flags.rank;
    w.world_size = *flags.world_size;
    w.local_rank = flags.local_rank.value_or(env_local.value_or(w.rank));
    w.source = "flags";
  } else if (env("OMPI_COMM_WORLD_RANK")) {
    ASSIGN_OR_RETURN(auto r, EnvInt(env, "OMPI_COMM_WORLD_RANK"));
    ASSIGN_OR_RETURN(auto n, EnvInt(env, "OMPI_COMM_WORLD_SIZE"));
    ASSIGN_OR_RETURN(auto l, EnvInt(env, "OMPI_COMM_WORLD_LOCAL_RANK"));
    if (!n) return absl::InvalidArgumentError("OMPI_COMM_WORLD_SIZE is unset");
    w.rank = *r;
    w.world_size = *n;
    w.local_rank = l.value_or(0);
    w.source = "openmpi";
  } else if (env("SLURM_PROCID")) {
    ASSIGN_OR_RETURN(auto r, EnvInt(env, "SLURM_PROCID"));
    ASSIGN_OR_RETURN(auto n, EnvInt(env, "SLURM_NTASKS"));
    ASSIGN_OR_RETURN(auto l, EnvInt(env, "SLURM_LOCALID"));
    if (!n) return absl::InvalidArgumentError("SLURM_NTASKS is unset");
    w.rank = *r;
    w.world_size = *n;
    w.local_rank = l.value_or(0);
    w.source = "slurm";
  } else if (env("LWS_WORKER_INDEX")) {
    ASSIGN_OR_RETURN(auto r, EnvInt(env, "LWS_WORKER_INDEX"));
    ASSIGN_OR_RETURN(auto n, EnvInt(env, "LWS_GROUP_SIZE"));
    if (!n) return absl::InvalidArgumentError("LWS_GROUP_SIZE is unset");
    w.rank = *r;
    w.world_size = *n;
    // One rank per pod unless the pod runs several (LOCAL_RANK).
    w.local_rank = env_local.value_or(0);
    w.source = "lws";
    if (std::optional<std::string> leader = env("LWS_LEADER_ADDRESS")) {
      RETURN_IF_ERROR(ParseHostPort(*leader, &w.master_host, &w.master_port));
    } else if (w.world_size > 1) {
      return absl::InvalidArgumentError(
          "LWS_WORKER_INDEX is set but LWS_LEADER_ADDRESS is not");
    }
  } else {
    w.source = "default";  // A single process.
  }

  // Master address: flag, then TESSERA_MASTER_ADDR, then MASTER_ADDR (+
  // MASTER_PORT, as torchrun sets them); TESSERA_MASTER_PORT overrides the
  // port of a host-only address.
  std::optional<std::string> master = !flags.master_addr.empty()
                                          ? std::optional(flags.master_addr)
                                          : env("TESSERA_MASTER_ADDR");
  bool explicit_port = false;
  if (master) {
    RETURN_IF_ERROR(ParseHostPort(*master, &w.master_host, &w.master_port));
    explicit_port =
        master->find(':') != std::string::npos && master->back() != ']';
  } else if (std::optional<std::string> m = env("MASTER_ADDR")) {
    RETURN_IF_ERROR(ParseHostPort(*m, &w.master_host, &w.master_port));
    ASSIGN_OR_RETURN(auto p, EnvInt(env, "MASTER_PORT"));
    if (p) {
      w.master_port = *p;
      explicit_port = true;
    }
  }
  if (!explicit_port) {
    ASSIGN_OR_RETURN(auto p, EnvInt(env, "TESSERA_MASTER_PORT"));
    if (p) w.master_port = *p;
  }
  if (w.world_size < 1) {
    return absl::InvalidArgumentError(
        fmt::format("world size {} must be at least 1", w.world_size));
  }
  if (w.rank < 0 || w.rank >= w.world_size) {
    return absl::InvalidArgumentError(
        fmt::format("rank {} is outside the world of {} ranks (from {})",
                    w.rank, w.world_size, w.source));
  }
  if (w.local_rank < 0) {
    return absl::InvalidArgumentError("local rank must be >= 0");
  }
  if (w.master_port <= 0 || w.master_port > 65535) {
    return absl::InvalidArgumentError(
        fmt::format("master port {} must be 1..65535", w.master_port));
  }
  return w;
}

std::string FormatRanks(const std::vector<int>& ranks) {
  std::string s;
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(ranks[i]);
  }
  return s;
}

absl::StatusOr<std::unique_ptr<StoreServer>> StoreServer::Start(
    const std::string& host, int port) {
  auto server = std::make_unique<TcpStoreServer>();
  RETURN_IF_ERROR(server->Listen(host, port));
  return std::unique_ptr<StoreServer>(std::move(server));
}

absl::StatusOr<std::unique_ptr<Store>> ConnectStore(
    const std::string& host, int port, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  auto backoff = std::chrono::milliseconds(5);
  while (true) {
    int fd = TryConnect(host, port);
    if (fd >= 0) {
      return std::unique_ptr<Store>(
          std::make_unique<TcpStore>(fd, fmt::format("{}:{}", host, port)));
    }
    if (Clock::now() + backoff > deadline) break;
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(200));
  }
  return absl::DeadlineExceededError(
      fmt::format("could not reach the rendezvous store (rank 0) at {}:{} "
                  "within {} ms",
                  host, port, timeout.count()));
}

absl::StatusOr<std::unique_ptr<Bootstrap>> Bootstrap::Join(
    const WorldInfo& world, std::chrono::milliseconds timeout) {
  auto b = std::unique_ptr<Bootstrap>(new Bootstrap());
  b->world_ = world;
  if (world.rank == 0) {
    ASSIGN_OR_RETURN(b->server_, StoreServer::Start("", world.master_port));
  }
  const std::string connect_host =
      world.rank == 0 ? std::string("127.0.0.1") : world.master_host;
  auto store = ConnectStore(connect_host, world.master_port, timeout);
  if (!store.ok()) {
    spdlog::error("bootstrap: rank {}: {}", world.rank,
                  std::string(store.status().message()));
    return store.status();
  }
  b->store_ = std::move(store).value();
  RETURN_IF_ERROR(b->Barrier("join", timeout));
  return b;
}

Bootstrap::~Bootstrap() {
  store_.reset();  // Rank 0's server then waits for the other clients.
  server_.reset();
}

absl::Status Bootstrap::Barrier(const std::string& name,
                                std::chrono::milliseconds timeout) {
  const std::string prefix = "tessera/barrier/" + name + "/";
  RETURN_IF_ERROR(store_->Set(prefix + std::to_string(world_.rank), ""));
  std::vector<std::string> keys;
  keys.reserve(world_.world_size);
  for (int r = 0; r < world_.world_size; ++r) {
    keys.push_back(prefix + std::to_string(r));
  }
  std::vector<std::string> missing;
  absl::Status s = store_->Wait(keys, timeout, &missing);
  if (absl::IsDeadlineExceeded(s)) {
    std::vector<int> ranks;
    for (const auto& k : missing) {
      ranks.push_back(std::atoi(k.c_str() + prefix.size()));
    }
    std::string msg = fmt::format(
        "barrier '{}': rank(s) {} of {} did not arrive within {} ms", name,
        FormatRanks(ranks), world_.world_size, timeout.count());
    spdlog::error("bootstrap: rank {}: {}", world_.rank, msg);
    return absl::DeadlineExceededError(msg);
  }
  return s;
}

}  // namespace tessera::comm
