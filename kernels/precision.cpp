// The dtype policy's names, the bf16 capability check and the f32 -> bf16 conversion.
#include "kernels/precision.h"

#include <cstdlib>
#include <oneapi/dnnl/dnnl.hpp>

#include "kernels/engine.h"

namespace shardfit {

DtypePolicy parse_dtype_policy(const std::string& name) {
  if (name == "float32") return DtypePolicy::kFloat32;
  if (name == "mixed_bfloat16") return DtypePolicy::kMixedBfloat16;
  SF_FAIL(cat("unknown dtype policy '", name, "': expected float32 or mixed_bfloat16"));
}

std::string dtype_policy_name(DtypePolicy policy) {
  return policy == DtypePolicy::kMixedBfloat16 ? "mixed_bfloat16" : "float32";
}

bool cpu_has_bf16() {
  // oneDNN's ISA values are nested bit sets: every ISA from avx512_core_bf16 up (AMX included) has its bits.
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const auto bf16 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16);
  return (isa & bf16) == bf16;
}

DtypePolicy runnable_dtype_policy(DtypePolicy requested, bool cpu_bf16, std::string* warning) {
  warning->clear();
  if (requested != DtypePolicy::kMixedBfloat16 || cpu_bf16) return requested;
  *warning =
      cat("dtype policy mixed_bfloat16 asked for, but this CPU has neither AVX512_BF16 nor AMX (oneDNN "
          "dispatches ",
          cpu_isa_name(), "), where bf16 matmuls run slower than f32: training in float32");
  return DtypePolicy::kFloat32;
}

namespace {
// Below this, an OpenMP team costs more than it saves.
}  // namespace

SF_AVX512_CLONES void to_bf16(const float* src, uint16_t* dst, int64_t count, bool openmp) {
#pragma omp parallel for simd schedule(static) if (openmp && count >= kParallelCount)
  for (int64_t i = 0; i < count; ++i) dst[i] = to_bf16(src[i]);
}

SF_AVX512_CLONES void from_bf16(const uint16_t* src, float* dst, int64_t count, bool openmp) {
#pragma omp parallel for simd schedule(static) if (openmp && count >= kParallelCount)
  for (int64_t i = 0; i < count; ++i) dst[i] = from_bf16(src[i]);
}

// Serial: MPI calls it from inside a collective, on pieces of the buffer of its own choosing.
SF_AVX512_CLONES void add_bf16(const uint16_t* in, uint16_t* inout, int64_t count) {
  for (int64_t i = 0; i < count; ++i) inout[i] = to_bf16(from_bf16(in[i]) + from_bf16(inout[i]));
}

}  // namespace shardfit
