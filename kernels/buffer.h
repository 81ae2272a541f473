// 64-byte aligned arrays: the flat parameter / gradient buffers, activation buffers and bf16 copies live in these.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>

#include "kernels/error.h"

namespace shardfit {

// A 64-byte aligned array of T (float, or uint16_t for bf16), zero-filled. `noun` names the element in the
// errors ("floats", "bf16 values").
template <typename T, const char* noun>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(int64_t count) { resize(count); }

  // Discards the contents; the new elements are zero. A failed allocation is an Error (the model's sizes are
  // checked against the machine's memory before, in build_model; this is the last line, not the message users see).
  void resize(int64_t count) {
    SF_CHECK(count >= 0 && static_cast<uint64_t>(count) <= (SIZE_MAX - 63) / sizeof(T),
             cat("cannot allocate a buffer of ", count, " ", noun, ": expected 0 to ", (SIZE_MAX - 63) / sizeof(T)));
    const size_t bytes = ((static_cast<size_t>(count) * sizeof(T) + 63) / 64) * 64;
    data_.reset();
    count_ = 0;
    if (bytes == 0) return;
    data_.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
    SF_CHECK(data_ != nullptr, cat("cannot allocate ", bytes, " bytes (", count, " ", noun, "): out of memory"),
             "make the model or the batch smaller, or run fewer ranks per machine");
    count_ = count;
    std::memset(data_.get(), 0, bytes);
  }

  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  int64_t count() const { return count_; }
  std::span<T> span() { return {data_.get(), static_cast<size_t>(count_)}; }
  std::span<const T> span() const { return {data_.get(), static_cast<size_t>(count_)}; }
  T& operator[](int64_t i) { return data_.get()[i]; }
  T operator[](int64_t i) const { return data_.get()[i]; }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T[], Free> data_;
  int64_t count_ = 0;
};

inline constexpr char kFloatsNoun[] = "floats";
inline constexpr char kBf16Noun[] = "bf16 values";
using FloatBuffer = AlignedBuffer<float, kFloatsNoun>;
// bf16 stored as its bit pattern (kernels/precision.h): the bf16 twin of FloatBuffer.
using Bf16Buffer = AlignedBuffer<uint16_t, kBf16Noun>;

}  // namespace shardfit
