// Tensor: dtype, shape, strides, device and owning or borrowed storage.
//
// A Tensor is a cheap-to-copy view: copies share storage. Storage is either
// owned (64-byte aligned, allocated by Empty/Zeros) or borrowed from someone
// else, e.g. a memory-mapped file, in which case an optional keep-alive handle
// holds it open. Strides are in elements; block-quantized dtypes (Q8_0) must be
// contiguous in the last dimension.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

#include "absl/container/inlined_vector.h"
#include "absl/types/span.h"
#include "base/dtype.h"

namespace tessera {

using Shape = absl::InlinedVector<int64_t, 4>;

enum class DeviceType : uint8_t { kCpu, kCuda };

// Where a tensor's bytes live.
struct Device {
  DeviceType type = DeviceType::kCpu;
  int index = 0;
  bool operator==(const Device&) const = default;
};

class Tensor {
 public:
  // An empty (null) tensor: rank 0, no storage.
  Tensor() = default;

  // Allocates uninitialized, 64-byte-aligned host memory for a contiguous
  // tensor.
  static Tensor Empty(DType dtype, Shape shape);
  // Like Empty, zero-filled.
  static Tensor Zeros(DType dtype, Shape shape);
  // Wraps memory owned elsewhere as a contiguous tensor; `keep_alive` (may be
  // null) is held for as long as any copy of the tensor lives.
  static Tensor Borrow(DType dtype, Shape shape, void* data,
                       std::shared_ptr<const void> keep_alive = nullptr,
                       Device device = {});

  // Row-major element strides for `shape`.
  static Shape ContiguousStrides(absl::Span<const int64_t> shape);

  // False for a default-constructed tensor.
  bool defined() const { return data_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  Device device() const { return device_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  // Size of dimension `i`; negative `i` counts from the end.
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t numel() const;
  // Bytes spanned by a contiguous tensor's elements.
  int64_t nbytes() const;
  bool is_contiguous() const;

  void* raw_data() const { return data_; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(data_);
  }

  // Rows [begin, end) of dimension 0, sharing storage.
  Tensor Slice(int64_t begin, int64_t end) const;
  // Same storage, new shape with the same element count; requires contiguity.
  Tensor Reshape(Shape shape) const;
  // "f32[2, 3]" style summary.
  std::string DebugString() const;

 private:
  DType dtype_ = DType::kF32;
  Shape shape_;
  Shape strides_;
  Device device_;
  void* data_ = nullptr;
  std::shared_ptr<const void> storage_;
};

}  // namespace tessera
