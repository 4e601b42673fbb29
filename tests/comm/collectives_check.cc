// Multi-process collective checks, run once per rank: under mpirun (backend
// mpi) by ctest, or spawned with LeaderWorkerSet-style env (backend gloo) by
// collectives_spawn_test.cc. Every collective is compared with a serial
// reference computed locally from the same seeded inputs. Exit 0 when all
// checks pass on this rank.
//
// Usage: comm_collectives_check --backend mpi|gloo|auto
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "base/dtype.h"
#include "base/random.h"
#include "comm/bootstrap.h"
#include "comm/communicator.h"
#include "fmt/format.h"

namespace tessera::comm {
namespace {

int g_failures = 0;
int g_checks = 0;

#define CHECK_OK(expr)                                                       \
  do {                                                                       \
    ++g_checks;                                                              \
    absl::Status s_ = (expr);                                                \
    if (!s_.ok()) {                                                          \
      ++g_failures;                                                          \
      std::fprintf(stderr, "FAIL %s:%d %s: %s\n", __FILE__, __LINE__, #expr, \
                   std::string(s_.message()).c_str());                       \
    }                                                                        \
  } while (0)

void Expect(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    std::fprintf(stderr, "FAIL %s\n", what.c_str());
  }
}

int64_t Bytes(DType t) { return t == DType::kF32 ? 4 : 2; }

// Element i of rank r's input for test `seed`, as a float: small integers in
// fast mode (sums exact in every dtype), normals in deterministic mode.
float Value(uint64_t seed, int r, int64_t i, bool normal) {
  SplitMix64 rng(seed * 1000003u + static_cast<uint64_t>(r) * 7919u +
                 static_cast<uint64_t>(i) * 104729u);
  if (normal) return rng.Normal();
  return static_cast<float>(static_cast<int>(rng.Next() % 17) - 8);
}

void Store(DType t, float v, void* dst, int64_t i) {
  if (t == DType::kF32) {
    static_cast<float*>(dst)[i] = v;
  } else if (t == DType::kF16) {
    static_cast<uint16_t*>(dst)[i] = FloatToHalf(v);
  } else {
    static_cast<uint16_t*>(dst)[i] = FloatToBF16(v);
  }
}
float Load(DType t, const void* src, int64_t i) {
  if (t == DType::kF32) return static_cast<const float*>(src)[i];
  if (t == DType::kF16)
    return HalfToFloat(static_cast<const uint16_t*>(src)[i]);
  return BF16ToFloat(static_cast<const uint16_t*>(src)[i]);
}
// The input element as the collective sees it (rounded to the dtype).
float Input(DType t, uint64_t seed, int r, int64_t i, bool normal) {
  uint32_t tmp[1];
  Store(t, Value(seed, r, i, normal), tmp, 0);
  return Load(t, tmp, 0);
}

// Serial reference: acc = x0; acc += x1 ... in f32, rounded once to t.
std::vector<char> ReferenceSum(DType t, uint64_t seed, int n, int64_t count,
                               int64_t offset, bool normal,
                               const std::vector<int>& members) {
  std::vector<char> out(static_cast<size_t>(count * Bytes(t)));
  for (int64_t i = 0; i < count; ++i) {
    float acc = Input(t, seed, members[0], offset + i, normal);
    for (int k = 1; k < n; ++k) {
      acc += Input(t, seed, members[k], offset + i, normal);
    }
    Store(t, acc, out.data(), i);
  }
  return out;
}

std::vector<int> Iota(int n) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = i;
  return v;
}

void CheckReductions(Communicator& c, const std::vector<int>& members,
                     const std::string& label) {
  const int n = c.size();
  const int me = members[c.rank()];
  const bool det = c.deterministic();
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int64_t count : {0, 1, 7, 1000, 4097}) {
      const uint64_t seed = static_cast<uint64_t>(count) * 31 +
                            static_cast<uint64_t>(t) + (det ? 5 : 0);
      std::vector<char> buf(static_cast<size_t>(count * Bytes(t)) + 1);
      for (int64_t i = 0; i < count; ++i) {
        Store(t, Value(seed, me, i, det), buf.data(), i);
      }
      CHECK_OK(c.AllReduceSum(buf.data(), count, t));
      auto ref = ReferenceSum(t, seed, n, count, 0, det, members);
      Expect(
          ref.empty() || std::memcmp(buf.data(), ref.data(), ref.size()) == 0,
          fmt::format("{} all-reduce {} x{} (det={})", label, DTypeName(t),
                      count, det));
    }
    for (int64_t per : {0, 1, 5, 300}) {
      const uint64_t seed = static_cast<uint64_t>(per) * 17 +
                            static_cast<uint64_t>(t) + 99 + (det ? 5 : 0);
      std::vector<char> send(static_cast<size_t>(per * n * Bytes(t)) + 1);
      std::vector<char> recv(static_cast<size_t>(per * Bytes(t)) + 1);
      for (int64_t i = 0; i < per * n; ++i) {
        Store(t, Value(seed, me, i, det), send.data(), i);
      }
      CHECK_OK(c.ReduceScatterSum(send.data(), recv.data(), per, t));
      auto ref = ReferenceSum(t, seed, n, per, per * c.rank(), det, members);
      Expect(
          ref.empty() || std::memcmp(recv.data(), ref.data(), ref.size()) == 0,
          fmt::format("{} reduce-scatter {} x{} (det={})", label, DTypeName(t),
                      per, det));
    }
  }
}

char Byte(int src, int dst, int64_t i) {
  return static_cast<char>((src * 131 + dst * 31 + i * 7) & 0xff);
}

void CheckMovement(Communicator& c, const std::string& label) {
  const int n = c.size();
  const int r = c.rank();
  for (int64_t bytes : {0, 1, 13, 4096}) {
    std::vector<char> send(bytes + 1), recv(bytes * n + 1);
    for (int64_t i = 0; i < bytes; ++i) send[i] = Byte(r, 0, i);
    CHECK_OK(c.AllGather(send.data(), recv.data(), bytes));
    bool ok = true;
    for (int p = 0; p < n; ++p) {
      for (int64_t i = 0; i < bytes; ++i)
        ok &= recv[p * bytes + i] == Byte(p, 0, i);
    }
    Expect(ok, fmt::format("{} all-gather {}", label, bytes));
  }
  for (int64_t bytes : {0, 3, 1024}) {
    std::vector<char> send(bytes * n + 1), recv(bytes * n + 1);
    for (int p = 0; p < n; ++p) {
      for (int64_t i = 0; i < bytes; ++i) send[p * bytes + i] = Byte(r, p, i);
    }
    CHECK_OK(c.AllToAll(send.data(), recv.data(), bytes));
    bool ok = true;
    for (int p = 0; p < n; ++p) {
      for (int64_t i = 0; i < bytes; ++i)
        ok &= recv[p * bytes + i] == Byte(p, r, i);
    }
    Expect(ok, fmt::format("{} all-to-all {}", label, bytes));
  }
  {
    // Sizes with zeros: src s sends (s*7 + d*3) % 11 bytes to d.
    auto size_of = [](int s, int d) -> int64_t { return (s * 7 + d * 3) % 11; };
    std::vector<int64_t> sb(n), rb(n);
    std::string send, expect;
    for (int p = 0; p < n; ++p) {
      sb[p] = size_of(r, p);
      rb[p] = size_of(p, r);
      for (int64_t i = 0; i < sb[p]; ++i) send.push_back(Byte(r, p, i));
      for (int64_t i = 0; i < rb[p]; ++i) expect.push_back(Byte(p, r, i));
    }
    std::string recv(expect.size(), '\0');
    CHECK_OK(c.AllToAllV(send.data(), sb, recv.data(), rb));
    Expect(recv == expect, label + " all-to-all-v");
  }
  if (n > 1) {
    const int64_t bytes = 100000;
    std::vector<char> out(bytes), in(bytes);
    const int next = (r + 1) % n, prev = (r + n - 1) % n;
    for (int64_t i = 0; i < bytes; ++i) out[i] = Byte(r, next, i);
    if (r % 2 == 0) {
      CHECK_OK(c.Send(out.data(), bytes, next, 3));
      CHECK_OK(c.Recv(in.data(), bytes, prev, 3));
    } else {
      CHECK_OK(c.Recv(in.data(), bytes, prev, 3));
      CHECK_OK(c.Send(out.data(), bytes, next, 3));
    }
    bool ok = true;
    for (int64_t i = 0; i < bytes; ++i) ok &= in[i] == Byte(prev, r, i);
    Expect(ok, label + " send/recv ring");
  }
  for (int64_t bytes : {0, 17, 65536}) {
    const int root = n - 1;
    std::vector<char> buf(bytes + 1, 0);
    if (r == root) {
      for (int64_t i = 0; i < bytes; ++i) buf[i] = Byte(root, 9, i);
    }
    CHECK_OK(c.Broadcast(buf.data(), bytes, root));
    bool ok = true;
    for (int64_t i = 0; i < bytes; ++i) ok &= buf[i] == Byte(root, 9, i);
    Expect(ok, fmt::format("{} broadcast {}", label, bytes));
  }
  CHECK_OK(c.Barrier());
}

void CheckAll(Communicator& c, const std::string& label) {
  CheckReductions(c, Iota(c.size()), label);
  CheckMovement(c, label);
  const int n = c.size();
  if (n < 2) return;
  // Even and odd ranks, then {0, n-1}.
  std::vector<int> same_parity;
  for (int r = c.rank() % 2; r < n; r += 2) same_parity.push_back(r);
  auto sub = c.CreateSubgroup(same_parity);
  CHECK_OK(sub.status());
  if (sub.ok()) {
    CheckReductions(**sub, same_parity, label + " parity-subgroup");
    CheckMovement(**sub, label + " parity-subgroup");
  }
  if (c.rank() == 0 || c.rank() == n - 1) {
    std::vector<int> ends = {0, n - 1};
    auto sub2 = c.CreateSubgroup(ends);
    CHECK_OK(sub2.status());
    if (sub2.ok()) CheckReductions(**sub2, ends, label + " ends-subgroup");
  }
  CHECK_OK(c.Barrier());
}

int Main(int argc, char** argv) {
  std::string backend = "auto";
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--backend") backend = argv[i + 1];
  }
  auto world = ResolveWorld({}, ProcessEnv());
  if (!world.ok()) {
    std::fprintf(stderr, "bootstrap: %s\n",
                 std::string(world.status().message()).c_str());
    return 2;
  }
  std::unique_ptr<Bootstrap> boot;
  if (backend != "mpi") {
    auto b = Bootstrap::Join(*world, std::chrono::seconds(20));
    if (!b.ok()) {
      std::fprintf(stderr, "join: %s\n",
                   std::string(b.status().message()).c_str());
      return 2;
    }
    boot = std::move(b).value();
  }
  for (bool det : {false, true}) {
    CommOptions opts;
    opts.backend = backend;
    opts.deterministic = det;
    opts.timeout = std::chrono::seconds(20);
    auto c = CreateCommunicator(*world, boot.get(), opts);
    if (!c.ok()) {
      std::fprintf(stderr, "communicator: %s\n",
                   std::string(c.status().message()).c_str());
      return 2;
    }
    CheckAll(**c, fmt::format("[{} n={} det={}]", (*c)->backend(), (*c)->size(),
                              det));
  }
  std::printf("rank %d: %d checks, %d failures\n", world->rank, g_checks,
              g_failures);
  return g_failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace tessera::comm

int main(int argc, char** argv) { return tessera::comm::Main(argc, argv); }
