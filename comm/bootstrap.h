// Bootstrap: who am I (rank, world size, local rank) and where is the
// rendezvous store, for every launcher tessera supports; plus the TCP
// key-value store that rank 0 serves for exchanging addresses and keys.
//
// Resolution order (first match wins): explicit flags (--rank, --world-size,
// --master-addr), Open MPI (OMPI_COMM_WORLD_*), Slurm (SLURM_PROCID/NTASKS/
// LOCALID), Kubernetes LeaderWorkerSet (LWS_WORKER_INDEX/GROUP_SIZE/
// LEADER_ADDRESS). See comm/README.md for the master address rules.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera::comm {

// Port of the rendezvous store when none is given (TESSERA_MASTER_PORT
// overrides it for launchers that give a host only, e.g. LWS).
inline constexpr int kDefaultMasterPort = 29500;

// Where this process sits in the world.
struct WorldInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_host = "127.0.0.1";  // Rank 0's store address.
  int master_port = kDefaultMasterPort;
  std::string source = "default";  // "flags", "openmpi", "slurm", "lws"...
};

// Values from command-line flags; unset fields fall through to the
// environment.
struct BootstrapFlags {
  std::optional<int> rank;
  std::optional<int> world_size;
  std::optional<int> local_rank;
  std::string master_addr;  // "HOST:PORT" (or "HOST"), empty when not given.
};

// Reads an environment variable; injectable for tests.
using EnvLookup = std::function<std::optional<std::string>(std::string_view)>;

// The process environment (getenv).
EnvLookup ProcessEnv();

// Resolves the world from flags, then the environment. InvalidArgument for
// inconsistent or malformed values (rank outside [0, world), bad port...).
absl::StatusOr<WorldInfo> ResolveWorld(const BootstrapFlags& flags,
                                       const EnvLookup& env);

// Parses "HOST:PORT", "HOST" (default port) or "[v6]:PORT".
absl::Status ParseHostPort(std::string_view text, std::string* host, int* port);

// Limits of the store protocol (requests beyond them are rejected).
inline constexpr size_t kMaxStoreKeyBytes = 4096;
inline constexpr size_t kMaxStoreValueBytes = 64u << 20;

// Serves the rendezvous store over TCP (one thread per connected rank; fine
// for worlds up to a few thousand ranks, which is all a bootstrap needs).
class StoreServer {
 public:
  // Listens on host:port (port 0 picks an ephemeral port).
  static absl::StatusOr<std::unique_ptr<StoreServer>> Start(
      const std::string& host, int port);
  virtual ~StoreServer() = default;
  // The port actually bound.
  virtual int port() const = 0;
};

// Client of the rendezvous store. Thread-safe (requests are serialized).
class Store {
 public:
  virtual ~Store() = default;
  // Stores `value` under `key` (overwrites) and wakes waiters.
  virtual absl::Status Set(const std::string& key, std::string_view value) = 0;
  // Returns the value of `key`, waiting until it exists; DeadlineExceeded
  // after `timeout`.
  virtual absl::StatusOr<std::string> Get(
      const std::string& key, std::chrono::milliseconds timeout) = 0;
  // Waits until all `keys` exist. DeadlineExceeded after `timeout`; then
  // `*missing` (if given) receives the keys that never appeared.
  virtual absl::Status Wait(const std::vector<std::string>& keys,
                            std::chrono::milliseconds timeout,
                            std::vector<std::string>* missing = nullptr) = 0;
  // Atomically adds `delta` to the integer counter at `key`; returns the new
  // value.
  virtual absl::StatusOr<int64_t> Add(const std::string& key,
                                      int64_t delta) = 0;
};

// Connects to a store at host:port, retrying until `timeout` (rank 0 may
// start later than the others). DeadlineExceeded names the address.
absl::StatusOr<std::unique_ptr<Store>> ConnectStore(
    const std::string& host, int port, std::chrono::milliseconds timeout);

// A joined world: rank 0 serves the store, everyone holds a client.
class Bootstrap {
 public:
  // Rank 0 starts the store at world.master_port (all interfaces); every rank
  // connects, announces itself and waits for the others. A rank that does not
  // arrive within `timeout` gives DeadlineExceeded naming the missing ranks.
  static absl::StatusOr<std::unique_ptr<Bootstrap>> Join(
      const WorldInfo& world, std::chrono::milliseconds timeout);
  ~Bootstrap();

  const WorldInfo& world() const { return world_; }
  Store& store() { return *store_; }
  // Keyed barrier through the store: all ranks call it with the same `name`.
  // DeadlineExceeded names the ranks that did not arrive.
  absl::Status Barrier(const std::string& name,
                       std::chrono::milliseconds timeout);

 private:
  Bootstrap() = default;
  WorldInfo world_;
  std::unique_ptr<StoreServer> server_;
  std::unique_ptr<Store> store_;
};

// Formats a list of ranks compactly ("1, 3, 5").
std::string FormatRanks(const std::vector<int>& ranks);

}  // namespace tessera::comm
