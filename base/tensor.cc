#include "base/tensor.h"

#include <cstring>

#include "base/host_memory.h"
#include "base/logging.h"
#include "fmt/format.h"
#include "fmt/ranges.h"

namespace tessera {
namespace {

std::shared_ptr<void> AllocateAligned(size_t bytes) {
  std::shared_ptr<void> p = AllocateHostMemory(bytes);
  TESSERA_CHECK(p != nullptr, "out of host memory allocating {} bytes", bytes);
  return p;
}

int64_t Product(absl::Span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

Shape Tensor::ContiguousStrides(absl::Span<const int64_t> shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

Tensor Tensor::Empty(DType dtype, Shape shape) {
  for (int64_t d : shape) TESSERA_CHECK(d >= 0, "negative dimension");
  Tensor t;
  t.dtype_ = dtype;
  t.strides_ = ContiguousStrides(shape);
  t.shape_ = std::move(shape);
  auto storage =
      AllocateAligned(static_cast<size_t>(DTypeBytes(dtype, t.numel())));
  t.data_ = storage.get();
  t.storage_ = std::move(storage);
  return t;
}

Tensor Tensor::Zeros(DType dtype, Shape shape) {
  Tensor t = Empty(dtype, std::move(shape));
  std::memset(t.data_, 0, static_cast<size_t>(t.nbytes()));
  return t;
}

Tensor Tensor::Borrow(DType dtype, Shape shape, void* data,
                      std::shared_ptr<const void> keep_alive, Device device) {
  Tensor t;
  t.dtype_ = dtype;
  t.strides_ = ContiguousStrides(shape);
  t.shape_ = std::move(shape);
  t.data_ = data;
  t.storage_ = std::move(keep_alive);
  t.device_ = device;
  return t;
}

int64_t Tensor::numel() const { return Product(shape_); }

int64_t Tensor::nbytes() const { return DTypeBytes(dtype_, numel()); }

bool Tensor::is_contiguous() const {
  return strides_ == ContiguousStrides(shape_);
}

Tensor Tensor::Slice(int64_t begin, int64_t end) const {
  TESSERA_CHECK(rank() >= 1 && 0 <= begin && begin <= end && end <= shape_[0],
                "bad slice [{}, {}) of {}", begin, end, DebugString());
  Tensor t = *this;
  t.shape_[0] = end - begin;
  const int64_t offset_bytes = DTypeBytes(dtype_, begin * strides_[0]);
  t.data_ = static_cast<char*>(data_) + offset_bytes;
  return t;
}

Tensor Tensor::Reshape(Shape shape) const {
  TESSERA_CHECK(is_contiguous() && Product(shape) == numel(),
                "cannot reshape {}", DebugString());
  Tensor t = *this;
  t.strides_ = ContiguousStrides(shape);
  t.shape_ = std::move(shape);
  return t;
}

std::string Tensor::DebugString() const {
  return fmt::format("{}[{}]{}", DTypeName(dtype_), fmt::join(shape_, ", "),
                     device_.type == DeviceType::kCuda
                         ? fmt::format("@cuda:{}", device_.index)
                         : "");
}

}  // namespace tessera
