// Dense: y = act(x W + b), W of Keras shape (in, out), as oneDNN matmuls with the bias and, for relu / sigmoid /
// tanh, the activation fused as a post-op. Other activations are separate Activation layers (model_factory).
// Under mixed_bfloat16 the matmuls read bf16 operands and write f32 (kernels/precision.h has the design).
#pragma once

#include <array>
#include <functional>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/activation_kind.h"
#include "kernels/engine.h"
#include "kernels/initializer.h"
#include "kernels/layer.h"
#include "kernels/precision.h"

namespace shardfit {

// One piece of a Dense step, as Dense::pieces() hands it to a benchmark: running it executes exactly what
// forward() or backward() executes for that piece (the same primitive, the same memory, the same loop).
struct DensePiece {
  // "fwd", "relu-bwd" (sigmoid-, tanh-), "bwd-data", "bwd-weights", "bias-sums"; bf16 adds "x-to-bf16" (not
  // where x is a bf16 activation already) and "dz-to-bf16", or for relu / linear, one pass in their place:
  // "relu-bwd+dz-to-bf16+bias-sums" ("dz-to-bf16+bias-sums" when linear, no "+bias-sums" without a bias)
  std::string name;
  int64_t m = 0, k = 0, n = 0;  // the matmul (M, K) x (K, N) when the piece is one, else 0
  bool backward = false;
  std::string impl;           // oneDNN's impl_info_str(), or "OpenMP column sums"
  std::function<void()> run;  // valid until the layer's bind(), forget_plans() or destruction
};

class Dense final : public Layer {
 public:
  struct Options {
    ActivationKind activation = ActivationKind::kLinear;  // linear, relu, sigmoid or tanh
    bool use_bias = true;
    InitializerKind kernel_initializer = InitializerKind::kGlorotUniform;
    InitializerKind bias_initializer = InitializerKind::kZeros;
    bool bf16 = false;  // mixed_bfloat16: bf16 matmul operands (x, dz, the weights' bf16 copy), f32 dst
  };
  Dense(std::string name, int64_t input_dim, int64_t units, const Options& options);

  std::string kind() const override { return "dense"; }
  std::string type_name() const override { return "Dense"; }
  int64_t param_count() const override;
  std::vector<WeightShape> weight_shapes() const override;
  void bind(float* params, float* grads) override;
  void bind_compute_weights(const uint16_t* weights) override;
  // Under bf16 the layer reads a bf16 x as its matmuls' operand, and with relu or no activation writes y as bf16
  // (the matmul's dst, post-op applied in f32 before the rounding) and computes its dz from it.
  bool reads_bf16_input() const override { return options_.bf16; }
  bool writes_bf16_output() const override;
  void initialize(Rng& rng) override;

  void prepare(int64_t n, const LayerBuffers& buffers) override;
  void forward(int64_t n, const BatchContext& ctx) override;
  void backward(int64_t n) override;
  void forget_plans() override { plans_.clear(); }

  // The prepared batch size n's step taken apart, in the order forward() then backward() run it: for benchmarks
  // that time each piece of the production code rather than a copy of it. Not for the training step (each piece
  // is a std::function).
  std::vector<DensePiece> pieces(int64_t n);

 private:
  // The pieces of a step. forward() runs the plan's forward_stages in order, backward() its backward_stages, and
  // pieces() hands out the same lists, so a benchmark times what the step runs. The conversions are bf16's.
  enum class Stage {
    kConvertInput,
    kForward,
    kActivationBackward,
    kConvertGradient,
    kGradientPass,  // bf16, relu or linear: dz = dy * act'(y) rounded to bf16, and the bias sums, in one pass
    kBackwardData,
    kBackwardWeights,
    kBiasSums
  };

  // Everything one batch size needs; memory objects wrap the model's buffers, so execute() allocates nothing.
  struct Plan {
    const float* x = nullptr;
    float* y = nullptr;
    const float* dy = nullptr;
    float* dx = nullptr;
    const float* dz = nullptr;         // d loss / d pre-activation: scratch when the activation is fused, else dy
    const uint16_t* y_bf16 = nullptr;  // y when the model holds it as bf16 (LayerBuffers::y_bf16), else nullptr
    // Scratch the conversion stages write (run() takes the plan as const, as it does the oneDNN calls' buffers).
    mutable Bf16Buffer x_bf16;   // (n, in) bf16 copy of x, read by forward and backward-weights; empty when x
                                 // comes as bf16 (LayerBuffers::x_bf16)
    mutable Bf16Buffer dz_bf16;  // (n, out) bf16 copy of dz, read by backward-data and backward-weights
    PrimitiveCall forward;
    PrimitiveCall activation_backward;  // only when the activation is fused
    PrimitiveCall backward_data;        // dx (n, in) = dz (n, out) . W^T
    PrimitiveCall backward_weights;     // dW (in, out) = x^T (in, n) . dz (n, out)
    std::array<Stage, 2> forward_stages{};
    int forward_stage_count = 0;
    std::array<Stage, 5> backward_stages{};
    int backward_stage_count = 0;  // 0 when only inference was prepared
  };

  int64_t units() const { return output_dim(); }
  Plan& plan_for(int64_t n);
  void run(const Plan& plan, Stage stage, int64_t n);
  DensePiece piece(const Plan& plan, Stage stage, int64_t n);

  Options options_;
  float* kernel_ = nullptr;                // (in, out), view into the flat parameters
  float* bias_ = nullptr;                  // (out)
  float* kernel_grad_ = nullptr;           // (in, out)
  float* bias_grad_ = nullptr;             // (out)
  const uint16_t* kernel_bf16_ = nullptr;  // (in, out) bf16 copy of kernel_, under mixed_bfloat16
  std::unordered_map<int64_t, Plan> plans_;
};

// sums (out) = column sums of m (n, out), accumulated in double so batch sums stay exact enough for any n: Dense's
// bias gradient.
void column_sums(const float* m, int64_t n, int64_t out, float* sums);

// Dense's bf16 gradient pass for relu or linear: dz_bf16 (n, out) = bf16(dy * relu'(y)) with y read as f32 (y) or
// bf16 (y_bf16), or bf16(dy) when both are nullptr (linear); and, when sums is not nullptr, sums (out) = column
// sums of the unrounded dz exactly as column_sums adds them. One read of dy instead of the three passes (relu
// backward, conversion, sums) it replaces.
void relu_backward_to_bf16(const float* dy, const float* y, const uint16_t* y_bf16, int64_t n, int64_t out,
                           uint16_t* dz_bf16, float* sums);

}  // namespace shardfit
