// The process-wide oneDNN CPU engine and stream, created on first use; PrimitiveCall.
#include "kernels/engine.h"

namespace shardfit {

dnnl::memory::desc row_major(int64_t rows, int64_t cols, dnnl::memory::data_type type) {
  using dnnl::memory;
  return {memory::dims{rows, cols}, type, memory::dims{cols, 1}};
}

dnnl::memory::desc transposed(int64_t rows, int64_t cols, dnnl::memory::data_type type) {
  using dnnl::memory;
  return {memory::dims{rows, cols}, type, memory::dims{1, rows}};
}

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& cpu_stream() {
  static dnnl::stream stream(cpu_engine());
  return stream;
}

PrimitiveCall::PrimitiveCall(dnnl::primitive primitive, std::vector<std::pair<int, dnnl::memory>> args)
    : primitive_(std::move(primitive)) {
  memories_.reserve(args.size());
  args_.reserve(args.size());
  for (auto& [arg, memory] : args) {
    args_.push_back({arg, memory.get()});
    memories_.push_back(std::move(memory));  // moved from our own copy of the list
  }
}

void PrimitiveCall::execute() const {
  dnnl::error::wrap_c_api(
      dnnl_primitive_execute(primitive_.get(), cpu_stream().get(), static_cast<int>(args_.size()), args_.data()),
      "could not execute a primitive");
  dnnl::error::wrap_c_api(dnnl_stream_wait(cpu_stream().get()), "could not wait on the stream");
}

std::string PrimitiveCall::impl_info() const {
  const char* info = nullptr;
  dnnl::error::wrap_c_api(
      dnnl_primitive_desc_query(primitive_.get_primitive_desc(), dnnl_query_impl_info_str, 0, &info),
      "could not query a primitive's implementation");
  return info != nullptr ? info : "";
}

std::string cpu_isa_name() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41:
      return "sse41";
    case dnnl::cpu_isa::avx:
      return "avx";
    case dnnl::cpu_isa::avx2:
      return "avx2";
    case dnnl::cpu_isa::avx2_vnni:
      return "avx2_vnni";
    case dnnl::cpu_isa::avx512_mic:
      return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops:
      return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core:
      return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx:
      return "avx512_core_amx";
    default:
      return "all";  // no limit set and none detected: oneDNN's generic code
  }
}

}  // namespace shardfit
