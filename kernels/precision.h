// Mixed precision as Keras names it: the dtype policy "float32" (everything f32) or "mixed_bfloat16" (compute
// dtype bf16, variable dtype f32), the bf16 storage the matmuls read, and the check that this CPU runs bf16 at
// speed. Not the policy's use: Dense (kernels/dense.h) and Model (kernels/model.h) apply it.
//
// Design of mixed_bfloat16 (issue 10):
//  1. What is bf16: only the two operands of each Dense matmul -- the activations x and the loss gradients dz,
//     and the weights. Everything else stays f32: master weights, optimizer state, every matmul's dst (oneDNN
//     accumulates in f32 and writes f32, so y, dx and dW are f32), the bias and the fused activation (post-ops
//     on the f32 accumulator), the loss and the bias sums. So the gradients the reducer sums are f32, and P ranks
//     sum to 1 rank's result exactly as in f32 mode.
//  2. The bf16 weight copy is one flat buffer beside the flat f32 parameters (Model::compute_weights), each
//     layer holding a view, like the f32 ones. It is refreshed by one conversion pass over the whole buffer
//     (to_bf16 over arrays, below; oneDNN 2.6's reorder took 2.6x as long on 2 threads) before the first
//     forward after the parameters were handed out for writing (Model::parameters() non-const marks them
//     changed): that is once per step after the optimizer update, at first use, and after set_weights,
//     initialize, a checkpoint restore or a broadcast -- never per layer call, and not during evaluation, which
//     writes no weights. One pass over the buffer keeps the door open to fusing it into the optimizer's loop.
//  3. Activations are bf16 between two layers that both compute in bf16, f32 elsewhere. The model decides per
//     edge (Model::activation_is_bf16): bf16 where the producer can write it (a bf16 Dense with relu or no
//     activation: its matmul's dst is bf16, rounded after the f32 bias and relu) and the consumer can read it (a
//     bf16 Dense); the model's input, its output (the loss reads f32) and the edges of Activation and Dropout
//     stay f32. On a bf16 edge nothing converts x; elsewhere each bf16 Dense converts its input x to bf16 in a
//     buffer of its plan by the array to_bf16 below. Backward stays f32 between layers (dx is an f32 dst): a relu
//     or linear bf16 Dense reads it once to make its bf16 dz and the f32 bias sums (Dense's gradient pass), the
//     values the separate relu backward, conversion and sums gave. A bf16 dx would halve that edge's bytes but
//     round dz before the bias sums. So the bf16 model computes the same values with or without bf16 edges (the
//     consumer rounded the same f32 y before); the edges only drop passes over memory.
//  4. Capability: oneDNN 2.6 runs bf16 matmuls on avx512_core by emulation, slower than f32. The policy is
//     honoured only where oneDNN dispatches avx512_core_bf16 or avx512_core_amx; elsewhere the model runs f32
//     and says so once (runnable_dtype_policy).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "kernels/buffer.h"
#include "kernels/error.h"

namespace shardfit {

enum class DtypePolicy { kFloat32, kMixedBfloat16 };

// "float32" | "mixed_bfloat16" (Keras's names); anything else is an Error naming the choices.
DtypePolicy parse_dtype_policy(const std::string& name);
std::string dtype_policy_name(DtypePolicy policy);

// True when oneDNN dispatches bf16 instructions here (AVX512_BF16 or AMX), from dnnl::get_effective_cpu_isa.
bool cpu_has_bf16();
// The policy this CPU runs: `requested`, or float32 when it asks for bf16 on a CPU without it (cpu_bf16 false),
// with *warning set to the one line that says so, without a "warning: " in front (else cleared). The fit and the
// bench print it once at start (dist/placement.h, warn_about_dtype_policy).
DtypePolicy runnable_dtype_policy(DtypePolicy requested, bool cpu_bf16, std::string* warning);

// bf16 as stored: the high half of an f32. Round to nearest even, as oneDNN's reorders and the AVX512_BF16
// conversion instructions round; NaN stays a (quiet) NaN.
// Written without a branch, so that loops over it vectorise.
inline uint16_t to_bf16(float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  const uint32_t rounded = (bits + 0x7FFFU + ((bits >> 16) & 1U)) >> 16;
  const uint32_t quiet_nan = (bits >> 16) | 0x0040U;
  return static_cast<uint16_t>((bits & 0x7FFFFFFFU) > 0x7F800000U ? quiet_nan : rounded);
}
inline float from_bf16(uint16_t value) {
  const uint32_t bits = static_cast<uint32_t>(value) << 16;
  float result = 0.0F;
  std::memcpy(&result, &bits, sizeof result);
  return result;
}

// Below this many elements an OpenMP team costs more than it saves: the element-wise loops of kernels/ run on one
// thread under it (precision.cpp's conversions, Dense's and Conv2D's gradient passes, the channel sums).
inline constexpr int64_t kParallelCount = 32768;

// x86-64 with GCC or Clang: a loop over bf16 in an AVX-512 and a baseline version, chosen when the program loads
// (the build's baseline, SSE4.2, converts 4 wide). Used by the loops below, Dense's gradient pass and Conv2D's.
#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define SF_AVX512_CLONES __attribute__((target_clones("arch=x86-64-v4", "default")))
#endif
#endif
#ifndef SF_AVX512_CLONES
#define SF_AVX512_CLONES
#endif

// The same over arrays, and the bf16 sum inout[i] = bf16(f32(in[i]) + f32(inout[i])) (the gradient reducer's
// bf16 transport, dist/gradient_reducer.h note 12). Each is compiled twice, for x86-64-v4 (AVX-512) and for the
// build's baseline, and the loader picks one for this CPU (target_clones): the baseline (SSE4.2) runs these loops
// 4 wide and took 2.5-2.8x longer. The array conversions use the OpenMP threads for long arrays unless
// openmp is false (a caller on a thread of its own beside the compute team: the gradient reducer's).
void to_bf16(const float* src, uint16_t* dst, int64_t count, bool openmp = true);
void from_bf16(const uint16_t* src, float* dst, int64_t count, bool openmp = true);
void add_bf16(const uint16_t* in, uint16_t* inout, int64_t count);

}  // namespace shardfit
