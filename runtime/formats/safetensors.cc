#include "runtime/formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>

#include "base/status.h"
#include "fmt/format.h"
#include "fmt/ranges.h"
#include "nlohmann/json.hpp"
#include "runtime/formats/internal/file_sink.h"

namespace tessera {
namespace {

using formats_internal::FileSink;
using Json = nlohmann::json;

// Header size limit: real headers are well under 10 MB; this stops a corrupt
// length from making the JSON parser chew through gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DTypeEntry {
  const char* name;
  int elem_bytes;
  std::optional<DType> dtype;
};

const DTypeEntry kDTypes[] = {
    {"F32", 4, DType::kF32},      {"F16", 2, DType::kF16},
    {"BF16", 2, DType::kBF16},    {"I8", 1, DType::kI8},
    {"I32", 4, DType::kI32},      {"I64", 8, DType::kI64},
    {"U8", 1, DType::kU8},        {"F64", 8, std::nullopt},
    {"I16", 2, std::nullopt},     {"U16", 2, std::nullopt},
    {"U32", 4, std::nullopt},     {"U64", 8, std::nullopt},
    {"BOOL", 1, std::nullopt},    {"F8_E4M3", 1, std::nullopt},
    {"F8_E5M2", 1, std::nullopt},
};

const DTypeEntry* FindDType(std::string_view name) {
  for (const DTypeEntry& e : kDTypes) {
    if (name == e.name) return &e;
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<std::string> SafetensorsDTypeName(DType dtype) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.dtype == dtype) return std::string(e.name);
  }
  return absl::InvalidArgumentError(fmt::format(
      "dtype {} cannot be stored in safetensors", DTypeName(dtype)));
}

// ----------------------------------------------------------- SafetensorsFile

absl::StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::Open(path));
  const absl::Span<const uint8_t> bytes = file->bytes();
  return Parse(bytes, path, std::move(file));
}

absl::StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::Parse(
    absl::Span<const uint8_t> bytes, std::string name,
    std::shared_ptr<const void> keep_alive) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = std::move(name);
  f->keep_alive_ = std::move(keep_alive);
  RETURN_IF_ERROR(f->ParseImpl(bytes));
  return f;
}

absl::Status SafetensorsFile::ParseImpl(absl::Span<const uint8_t> bytes) {
  if (bytes.size() < 8) {
    return absl::DataLossError(fmt::format(
        "{}: truncated safetensors file ({} bytes, the header length alone "
        "takes 8)",
        path_, bytes.size()));
  }
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  if (header_len > bytes.size() - 8) {
    return absl::DataLossError(fmt::format(
        "{}: safetensors header length {} exceeds the {} bytes after it "
        "(truncated or not a safetensors file)",
        path_, header_len, bytes.size() - 8));
  }
  if (header_len > kMaxHeaderBytes || header_len < 2) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: implausible safetensors header length {}", path_, header_len));
  }
  const char* hp = reinterpret_cast<const char*>(bytes.data() + 8);
  Json header = Json::parse(hp, hp + header_len, nullptr,
                            /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: safetensors header is not a JSON object", path_));
  }
  const uint8_t* data = bytes.data() + 8 + header_len;
  const uint64_t data_size = bytes.size() - 8 - header_len;
  for (const auto& item : header.items()) {
    // Named copies: lambdas cannot capture structured bindings in C++20.
    const std::string& name = item.key();
    const Json& entry = item.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        return absl::InvalidArgumentError(
            fmt::format("{}: __metadata__ is not an object", path_));
      }
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) {
          return absl::InvalidArgumentError(fmt::format(
              "{}: __metadata__ value of '{}' is not a string", path_, k));
        }
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    auto bad = [&](std::string_view why) {
      return absl::InvalidArgumentError(
          fmt::format("{}: tensor '{}': {}", path_, name, why));
    };
    if (!entry.is_object()) return bad("entry is not an object");
    SafetensorsTensorInfo info;
    info.name = name;
    auto dt = entry.find("dtype");
    if (dt == entry.end() || !dt->is_string()) return bad("missing dtype");
    info.dtype_name = dt->get<std::string>();
    const DTypeEntry* d = FindDType(info.dtype_name);
    if (d == nullptr) {
      return bad(fmt::format("unknown dtype \"{}\"", info.dtype_name));
    }
    info.dtype = d->dtype;
    auto shape = entry.find("shape");
    if (shape == entry.end() || !shape->is_array() || shape->size() > 8) {
      return bad("missing or bad shape");
    }
    uint64_t numel = 1;
    for (const Json& dim : *shape) {
      if (!dim.is_number_unsigned()) return bad("shape has a non-integer");
      const uint64_t n = dim.get<uint64_t>();
      if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          (n != 0 && numel > (std::numeric_limits<uint64_t>::max() >> 4) / n)) {
        return bad("shape overflows");
      }
      numel *= n;
      info.shape.push_back(static_cast<int64_t>(n));
    }
    auto offs = entry.find("data_offsets");
    if (offs == entry.end() || !offs->is_array() || offs->size() != 2 ||
        !(*offs)[0].is_number_unsigned() || !(*offs)[1].is_number_unsigned()) {
      return bad("missing or bad data_offsets");
    }
    info.begin = (*offs)[0].get<uint64_t>();
    info.end = (*offs)[1].get<uint64_t>();
    if (info.begin > info.end || info.end > data_size) {
      return absl::DataLossError(fmt::format(
          "{}: tensor '{}': data_offsets [{}, {}] outside the {}-byte data "
          "buffer (truncated file?)",
          path_, name, info.begin, info.end, data_size));
    }
    const uint64_t want = numel * static_cast<uint64_t>(d->elem_bytes);
    if (info.end - info.begin != want) {
      return bad(fmt::format(
          "data_offsets span {} bytes but {} of shape [{}] needs {}",
          info.end - info.begin, info.dtype_name, fmt::join(info.shape, ", "),
          want));
    }
    info.data = data + info.begin;
    tensors_.push_back(std::move(info));
  }
  std::sort(tensors_.begin(), tensors_.end(),
            [](const SafetensorsTensorInfo& a, const SafetensorsTensorInfo& b) {
              return a.begin != b.begin ? a.begin < b.begin : a.name < b.name;
            });
  for (size_t k = 0; k < tensors_.size(); ++k) {
    if (k > 0 && tensors_[k].begin < tensors_[k - 1].end) {
      return absl::InvalidArgumentError(
          fmt::format("{}: tensors '{}' and '{}' overlap", path_,
                      tensors_[k - 1].name, tensors_[k].name));
    }
    index_.emplace(tensors_[k].name, k);
  }
  return absl::OkStatus();
}

const SafetensorsTensorInfo* SafetensorsFile::Find(
    std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<Tensor> SafetensorsFile::TensorView(
    std::string_view name) const {
  const SafetensorsTensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(
        fmt::format("{}: tensor '{}' not found", path_, name));
  }
  return TensorView(*info);
}

absl::StatusOr<Tensor> SafetensorsFile::TensorView(
    const SafetensorsTensorInfo& info) const {
  if (!info.dtype) {
    return absl::InvalidArgumentError(
        fmt::format("{}: tensor '{}': dtype {} is not supported (supported: "
                    "F32, F16, BF16, I8, I32, I64, U8)",
                    path_, info.name, info.dtype_name));
  }
  // An empty tensor may point at the end of the mapping; give it a non-null
  // pointer anyway so it counts as defined.
  return Tensor::Borrow(*info.dtype, info.shape,
                        const_cast<uint8_t*>(info.data), keep_alive_);
}

// ----------------------------------------------------- SafetensorsCheckpoint

absl::StatusOr<SafetensorsCheckpoint> SafetensorsCheckpoint::Open(
    const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  SafetensorsCheckpoint ckpt;
  ckpt.path_ = path;
  std::string index_path;
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    if (fs::exists(dir / "model.safetensors.index.json", ec)) {
      index_path = (dir / "model.safetensors.index.json").string();
    } else if (fs::exists(dir / "model.safetensors", ec)) {
      ASSIGN_OR_RETURN(
          auto f, SafetensorsFile::Open((dir / "model.safetensors").string()));
      ckpt.files_.push_back(std::move(f));
    } else {
      return absl::NotFoundError(fmt::format(
          "{}: no model.safetensors or model.safetensors.index.json", path));
    }
  } else if (path.size() >= 5 && path.substr(path.size() - 5) == ".json") {
    index_path = path;
  } else {
    ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(path));
    ckpt.files_.push_back(std::move(f));
  }

  if (!index_path.empty()) {
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(index_path));
    Json index = Json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object() ||
        !index.contains("weight_map") || !index["weight_map"].is_object()) {
      return absl::InvalidArgumentError(
          fmt::format("{}: not a safetensors index (no \"weight_map\" object)",
                      index_path));
    }
    const fs::path dir = fs::path(index_path).parent_path();
    std::map<std::string, size_t> file_index;
    for (const auto& [name, shard] : index["weight_map"].items()) {
      if (!shard.is_string()) {
        return absl::InvalidArgumentError(fmt::format(
            "{}: weight_map entry of '{}' is not a string", index_path, name));
      }
      const std::string file = shard.get<std::string>();
      if (file.find('/') != std::string::npos || file == "..") {
        return absl::InvalidArgumentError(fmt::format(
            "{}: shard name '{}' must be a plain file name", index_path, file));
      }
      auto it = file_index.find(file);
      if (it == file_index.end()) {
        ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open((dir / file).string()));
        it = file_index.emplace(file, ckpt.files_.size()).first;
        ckpt.files_.push_back(std::move(f));
      }
      if (ckpt.files_[it->second]->Find(name) == nullptr) {
        return absl::NotFoundError(
            fmt::format("{}: tensor '{}' listed in {} is not in {}", path, name,
                        index_path, file));
      }
      ckpt.shard_of_.emplace(name, it->second);
    }
  } else {
    for (const SafetensorsTensorInfo& t : ckpt.files_[0]->tensors()) {
      ckpt.shard_of_.emplace(t.name, 0);
    }
  }
  return ckpt;
}

std::vector<std::string> SafetensorsCheckpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(shard_of_.size());
  for (const auto& [name, shard] : shard_of_) names.push_back(name);
  return names;
}

bool SafetensorsCheckpoint::Has(std::string_view name) const {
  return shard_of_.find(name) != shard_of_.end();
}

const SafetensorsTensorInfo* SafetensorsCheckpoint::Find(
    std::string_view name, const SafetensorsFile** file) const {
  auto it = shard_of_.find(name);
  if (it == shard_of_.end()) return nullptr;
  if (file != nullptr) *file = files_[it->second].get();
  return files_[it->second]->Find(name);
}

absl::StatusOr<Tensor> SafetensorsCheckpoint::TensorView(
    std::string_view name) const {
  auto it = shard_of_.find(name);
  if (it == shard_of_.end()) {
    return absl::NotFoundError(
        fmt::format("{}: tensor '{}' not found", path_, name));
  }
  return files_[it->second]->TensorView(name);
}

// --------------------------------------------------------- SafetensorsWriter

void SafetensorsWriter::SetMetadata(std::string key, std::string value) {
  for (auto& kv : metadata_) {
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(std::move(key), std::move(value));
}

absl::Status SafetensorsWriter::AddTensor(std::string name, DType dtype,
                                          Shape shape, TensorSource source) {
  RETURN_IF_ERROR(SafetensorsDTypeName(dtype).status());
  if (name == "__metadata__" || name.empty()) {
    return absl::InvalidArgumentError(
        fmt::format("bad tensor name '{}'", name));
  }
  for (const PendingTensor& t : tensors_) {
    if (t.name == name) {
      return absl::InvalidArgumentError(
          fmt::format("duplicate tensor '{}'", name));
    }
  }
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          fmt::format("tensor '{}': negative dimension", name));
    }
    numel *= d;
  }
  const uint64_t nbytes = static_cast<uint64_t>(DTypeBytes(dtype, numel));
  data_bytes_ += nbytes;
  tensors_.push_back(
      {std::move(name), dtype, std::move(shape), nbytes, std::move(source)});
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::AddTensor(std::string name,
                                          const Tensor& tensor) {
  if (!tensor.is_contiguous()) {
    return absl::InvalidArgumentError(
        fmt::format("tensor '{}' is not contiguous", name));
  }
  return AddTensor(std::move(name), tensor.dtype(), tensor.shape(),
                   [tensor]() -> absl::StatusOr<Tensor> { return tensor; });
}

absl::Status SafetensorsWriter::Write(const std::string& path) const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata_) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const PendingTensor& t : tensors_) {
    nlohmann::ordered_json e = nlohmann::ordered_json::object();
    e["dtype"] = *SafetensorsDTypeName(t.dtype);
    e["shape"] = std::vector<int64_t>(t.shape.begin(), t.shape.end());
    e["data_offsets"] = {offset, offset + t.nbytes};
    offset += t.nbytes;
    header[t.name] = std::move(e);
  }
  std::string text = header.dump();
  // Pad with spaces so the data buffer starts 8-byte aligned (as HF's writer
  // does), which keeps f32/i64 views aligned in the mapping.
  while ((text.size() + 8) % 8 != 0) text.push_back(' ');
  FileSink s(path);
  RETURN_IF_ERROR(s.status());
  s.Put<uint64_t>(text.size());
  s.Write(text.data(), text.size());
  for (const PendingTensor& t : tensors_) {
    absl::StatusOr<Tensor> data = t.source();
    if (!data.ok()) {
      return Annotate(data.status(),
                      fmt::format("{}: tensor '{}'", path, t.name));
    }
    if (!data->is_contiguous() || data->dtype() != t.dtype ||
        static_cast<uint64_t>(data->nbytes()) != t.nbytes) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: tensor '{}': source gave {}, declared {} with {} bytes", path,
          t.name, data->DebugString(), DTypeName(t.dtype), t.nbytes));
    }
    s.Write(data->raw_data(), static_cast<size_t>(t.nbytes));
    RETURN_IF_ERROR(s.status());
  }
  return s.Close();
}

}  // namespace tessera
