// The process-wide oneDNN CPU engine and stream, and PrimitiveCall: a primitive bound to its arguments once,
// executed through oneDNN's C API so that the step builds no argument containers of its own.
#pragma once

#include <cstdint>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <utility>
#include <vector>

namespace shardfit {

dnnl::engine& cpu_engine();
dnnl::stream& cpu_stream();
// The instruction set oneDNN dispatches its kernels for on this CPU (dnnl::get_effective_cpu_isa), e.g.
// "avx512_core": a benchmark's record says which kernels produced its numbers.
std::string cpu_isa_name();

inline constexpr dnnl::memory::data_type kF32 = dnnl::memory::data_type::f32;
inline constexpr dnnl::memory::data_type kBf16 = dnnl::memory::data_type::bf16;

// A (rows, cols) matrix of f32 (or `type`, e.g. bf16) stored row-major.
dnnl::memory::desc row_major(int64_t rows, int64_t cols, dnnl::memory::data_type type = kF32);
// The (rows, cols) matrix stored as the transpose of a row-major (cols, rows) buffer: matmuls read a transposed
// operand through these strides, without a copy.
dnnl::memory::desc transposed(int64_t rows, int64_t cols, dnnl::memory::data_type type = kF32);

// A memory object over one of the model's buffers (f32, or bf16 as uint16_t), on cpu_engine(). oneDNN takes void*;
// a const buffer is only ever read through it (a primitive's source), never written.
inline dnnl::memory wrap(const dnnl::memory::desc& desc, const float* data) {
  return {desc, cpu_engine(), const_cast<float*>(data)};
}
inline dnnl::memory wrap(const dnnl::memory::desc& desc, const uint16_t* data) {
  return {desc, cpu_engine(), const_cast<uint16_t*>(data)};
}

class PrimitiveCall {
 public:
  PrimitiveCall() = default;
  PrimitiveCall(dnnl::primitive primitive, std::vector<std::pair<int, dnnl::memory>> args);

  // Runs on cpu_stream() and waits. The C++ wrapper's execute() would copy the arguments into a new vector on
  // every call; this passes the array built at construction.
  void execute() const;
  explicit operator bool() const { return static_cast<bool>(primitive_); }
  // oneDNN's name for the implementation it chose, e.g. "brg:avx512_core": for benchmarks and diagnostics.
  std::string impl_info() const;

 private:
  dnnl::primitive primitive_;
  std::vector<dnnl::memory> memories_;  // keeps the memory objects alive
  std::vector<dnnl_exec_arg_t> args_;
};

}  // namespace shardfit
