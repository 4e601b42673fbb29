#include "placement/internal/gguf_metadata.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <vector>

#include "absl/status/status.h"
#include "base/status.h"
#include "fmt/format.h"

namespace tessera::placement::internal {
namespace {

// Largest header we read: GGUF metadata (with tokenizer tables) is a few MB.
constexpr size_t kMaxHeaderBytes = size_t{256} << 20;
constexpr uint64_t kMaxKeys = 1 << 20;

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  template <typename T>
  absl::StatusOr<T> Read() {
    if (size_ - pos_ < sizeof(T)) return Truncated();
    T value;
    std::memcpy(&value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  absl::StatusOr<std::string> ReadString() {
    ASSIGN_OR_RETURN(uint64_t n, Read<uint64_t>());
    if (n > size_ - pos_) return Truncated();
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }

  absl::Status Skip(uint64_t n) {
    if (n > size_ - pos_) return Truncated();
    pos_ += n;
    return absl::OkStatus();
  }

 private:
  absl::Status Truncated() const {
    return absl::InvalidArgumentError(
        fmt::format("GGUF metadata truncated at byte {}", pos_));
  }
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// GGUF value type ids (gguf.md).
enum : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

int ScalarSize(uint32_t type) {
  switch (type) {
    case kU8:
    case kI8:
    case kBool:
      return 1;
    case kU16:
    case kI16:
      return 2;
    case kU32:
    case kI32:
    case kF32:
      return 4;
    case kU64:
    case kI64:
    case kF64:
      return 8;
    default:
      return 0;
  }
}

GgufValue Int(int64_t v) {
  GgufValue g;
  g.kind = GgufValue::Kind::kInt;
  g.i = v;
  return g;
}
GgufValue Uint(uint64_t v) {
  GgufValue g;
  g.kind = GgufValue::Kind::kUint;
  g.u = v;
  return g;
}

absl::StatusOr<GgufValue> ReadValue(Reader& r, uint32_t type, int depth) {
  GgufValue g;
  switch (type) {
    case kU8: {
      ASSIGN_OR_RETURN(uint8_t v, r.Read<uint8_t>());
      return Uint(v);
    }
    case kI8: {
      ASSIGN_OR_RETURN(int8_t v, r.Read<int8_t>());
      return Int(v);
    }
    case kU16: {
      ASSIGN_OR_RETURN(uint16_t v, r.Read<uint16_t>());
      return Uint(v);
    }
    case kI16: {
      ASSIGN_OR_RETURN(int16_t v, r.Read<int16_t>());
      return Int(v);
    }
    case kU32: {
      ASSIGN_OR_RETURN(uint32_t v, r.Read<uint32_t>());
      return Uint(v);
    }
    case kI32: {
      ASSIGN_OR_RETURN(int32_t v, r.Read<int32_t>());
      return Int(v);
    }
    case kU64: {
      ASSIGN_OR_RETURN(uint64_t v, r.Read<uint64_t>());
      return Uint(v);
    }
    case kI64: {
      ASSIGN_OR_RETURN(int64_t v, r.Read<int64_t>());
      return Int(v);
    }
    case kF32: {
      ASSIGN_OR_RETURN(float v, r.Read<float>());
      g.kind = GgufValue::Kind::kFloat;
      g.f = v;
      return g;
    }
    case kF64: {
      ASSIGN_OR_RETURN(double v, r.Read<double>());
      g.kind = GgufValue::Kind::kFloat;
      g.f = v;
      return g;
    }
    case kBool: {
      ASSIGN_OR_RETURN(uint8_t v, r.Read<uint8_t>());
      g.kind = GgufValue::Kind::kBool;
      g.b = v != 0;
      return g;
    }
    case kString: {
      g.kind = GgufValue::Kind::kString;
      ASSIGN_OR_RETURN(g.s, r.ReadString());
      return g;
    }
    case kArray: {
      if (depth > 2)
        return absl::InvalidArgumentError("GGUF arrays nested too deep");
      ASSIGN_OR_RETURN(uint32_t elem, r.Read<uint32_t>());
      ASSIGN_OR_RETURN(uint64_t n, r.Read<uint64_t>());
      const int size = ScalarSize(elem);
      if (size > 0) {
        if (n > kMaxHeaderBytes)
          return absl::InvalidArgumentError("GGUF array too long");
        RETURN_IF_ERROR(r.Skip(n * static_cast<uint64_t>(size)));
      } else {
        for (uint64_t k = 0; k < n; ++k) {
          RETURN_IF_ERROR(ReadValue(r, elem, depth + 1).status());
        }
      }
      g.kind = GgufValue::Kind::kArray;
      g.u = n;
      return g;
    }
    default:
      return absl::InvalidArgumentError(
          fmt::format("GGUF: unknown value type {}", type));
  }
}

}  // namespace

std::optional<int64_t> GgufValue::AsInt() const {
  switch (kind) {
    case Kind::kInt:
      return i;
    case Kind::kUint:
    case Kind::kArray:
      if (u > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
      return static_cast<int64_t>(u);
    default:
      return std::nullopt;
  }
}

absl::StatusOr<std::map<std::string, GgufValue>> ParseGgufMetadata(
    const uint8_t* data, size_t size) {
  Reader r(data, size);
  ASSIGN_OR_RETURN(uint32_t magic, r.Read<uint32_t>());
  if (magic != 0x46554747u) {  // "GGUF" little-endian
    return absl::InvalidArgumentError("not a GGUF file (bad magic)");
  }
  ASSIGN_OR_RETURN(uint32_t version, r.Read<uint32_t>());
  if (version < 2 || version > 3) {
    return absl::InvalidArgumentError(
        fmt::format("unsupported GGUF version {}", version));
  }
  ASSIGN_OR_RETURN(uint64_t num_tensors, r.Read<uint64_t>());
  (void)num_tensors;
  ASSIGN_OR_RETURN(uint64_t num_keys, r.Read<uint64_t>());
  if (num_keys > kMaxKeys) {
    return absl::InvalidArgumentError(
        fmt::format("GGUF: {} metadata keys", num_keys));
  }
  std::map<std::string, GgufValue> out;
  for (uint64_t i = 0; i < num_keys; ++i) {
    ASSIGN_OR_RETURN(std::string key, r.ReadString());
    ASSIGN_OR_RETURN(uint32_t type, r.Read<uint32_t>());
    ASSIGN_OR_RETURN(out[key], ReadValue(r, type, 0));
  }
  return out;
}

absl::StatusOr<std::map<std::string, GgufValue>> ReadGgufMetadata(
    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(fmt::format("cannot open {}", path));
  std::vector<uint8_t> buf;
  // Grow the read window until the metadata parses (it sits at the front).
  size_t want = size_t{1} << 20;
  while (true) {
    buf.resize(want);
    in.clear();
    in.seekg(0);
    in.read(reinterpret_cast<char*>(buf.data()),
            static_cast<std::streamsize>(want));
    const size_t got = static_cast<size_t>(in.gcount());
    auto parsed = ParseGgufMetadata(buf.data(), got);
    if (parsed.ok() || got < want || want >= kMaxHeaderBytes) {
      if (!parsed.ok()) return Annotate(parsed.status(), path);
      return parsed;
    }
    want *= 4;
  }
}

}  // namespace tessera::placement::internal
