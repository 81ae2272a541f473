// A 64-byte aligned float array: the flat parameter / gradient buffers and activation buffers live in these.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>

#include "kernels/error.h"

namespace shardfit {

class FloatBuffer {
 public:
  FloatBuffer() = default;
  explicit FloatBuffer(int64_t count) { resize(count); }

  // Discards the contents; the new elements are zero. A failed allocation is an Error (the model's sizes are
  // checked against the machine's memory before, in build_model; this is the last line, not the message users see).
  void resize(int64_t count) {
    SF_CHECK(count >= 0 && static_cast<uint64_t>(count) <= (SIZE_MAX - 63) / sizeof(float),
             cat("cannot allocate a buffer of ", count, " floats: expected 0 to ", (SIZE_MAX - 63) / sizeof(float)));
    const size_t bytes = ((static_cast<size_t>(count) * sizeof(float) + 63) / 64) * 64;
    data_.reset();
    count_ = 0;
    if (bytes == 0) return;
    data_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    SF_CHECK(data_ != nullptr, cat("cannot allocate ", bytes, " bytes (", count, " floats): out of memory"),
             "make the model or the batch smaller, or run fewer ranks per machine");
    count_ = count;
    std::memset(data_.get(), 0, bytes);
  }

  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  int64_t count() const { return count_; }
  std::span<float> span() { return {data_.get(), static_cast<size_t>(count_)}; }
  std::span<const float> span() const { return {data_.get(), static_cast<size_t>(count_)}; }
  float& operator[](int64_t i) { return data_.get()[i]; }
  float operator[](int64_t i) const { return data_.get()[i]; }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float[], Free> data_;
  int64_t count_ = 0;
};

}  // namespace shardfit
