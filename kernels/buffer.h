// A 64-byte aligned float array: the flat parameter / gradient buffers and activation buffers live in these.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>

namespace shardfit {

class FloatBuffer {
 public:
  FloatBuffer() = default;
  explicit FloatBuffer(int64_t count) { resize(count); }

  // Discards the contents; the new elements are zero.
  void resize(int64_t count) {
    const size_t bytes = ((static_cast<size_t>(count) * sizeof(float) + 63) / 64) * 64;
    data_.reset(bytes == 0 ? nullptr : static_cast<float*>(std::aligned_alloc(64, bytes)));
    count_ = count;
    if (bytes != 0) std::memset(data_.get(), 0, bytes);
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
