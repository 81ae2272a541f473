// Conv2D: y = act(conv(x, K) + b) over (None, h, w, in) samples, K of Keras shape (kh, kw, in, filters), as oneDNN
// convolution primitives (forward, backward data, backward weights) built once per batch size, with relu / sigmoid /
// tanh fused as a post-op. Other activations are separate Activation layers (model_factory). Under mixed_bfloat16 the
// three convolutions read bf16 operands and write f32, as Dense's matmuls do (kernels/precision.h has the design).
#pragma once

#include <array>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/activation_kind.h"
#include "kernels/buffer.h"
#include "kernels/engine.h"
#include "kernels/initializer.h"
#include "kernels/layer.h"
#include "kernels/precision.h"

namespace shardfit {

class Conv2D final : public Layer {
 public:
  struct Options {
    int64_t filters = 0;
    std::array<int64_t, 2> kernel_size{};                 // (height, width)
    std::array<int64_t, 2> strides{1, 1};                 // (height, width)
    std::array<int64_t, 2> dilation_rate{1, 1};           // (height, width)
    bool same_padding = false;                            // Keras's "same"; else "valid"
    ActivationKind activation = ActivationKind::kLinear;  // linear, relu, sigmoid or tanh
    bool use_bias = true;
    InitializerKind kernel_initializer = InitializerKind::kGlorotUniform;
    InitializerKind bias_initializer = InitializerKind::kZeros;
    bool bf16 = false;  // mixed_bfloat16: bf16 src, weights and diff_dst (x, the kernel's bf16 copy, dz), f32 dst
    // The next layer writes the bias gradient (a MaxPooling2D that took this layer's relu, kernels/pooling.h):
    // backward weights computes the kernel's alone. Needs use_bias.
    bool bias_gradient_by_consumer = false;
  };
  // input_shape: (h, w, in). Throws Error when the options do not fit it (sizes, an empty output).
  Conv2D(const std::string& name, const Shape& input_shape, const Options& options);

  // The output shape (oh, ow, filters) for this input, or an Error naming what does not fit.
  static Shape output_shape_for(const std::string& name, const Shape& input_shape, const Options& options);

  std::string kind() const override { return "conv2d"; }
  std::string type_name() const override { return "Conv2D"; }
  int64_t param_count() const override;
  std::vector<WeightShape> weight_shapes() const override;
  void bind(float* params, float* grads) override;
  void bind_compute_weights(const uint16_t* weights) override;
  void initialize(Rng& rng) override;
  float* bias_gradient_for_consumer(int64_t* count) const override;

  void prepare(int64_t n, const LayerBuffers& buffers) override;
  void forward(int64_t n, const BatchContext& ctx) override;
  void backward(int64_t n) override;
  void forget_plans() override { plans_.clear(); }

  // oneDNN's implementations of the prepared batch size n: "forward", "backward weights", "backward data".
  std::vector<std::string> implementations(int64_t n) const;

 private:
  // Everything one batch size needs; memory objects wrap the model's buffers. The kernel stays in Keras's hwio
  // layout in the flat parameters; when oneDNN's chosen kernels want another layout, the plan reorders into its
  // own copies (forward: each step's weights; backward weights: the gradient back to hwio), as oneDNN's
  // cnn_training example does. Under bf16 the kernel reorders read the model's bf16 copy (hwio too) and the plan
  // holds bf16 copies of x (to_bf16's array loop, as Dense's) and of dz (formed from y and dy in one loop).
  struct Plan {
    const float* x = nullptr;
    const float* y = nullptr;
    const float* dy = nullptr;
    // Scratch the conversions write (forward and backward take the plan as const, as they do the oneDNN buffers).
    mutable Bf16Buffer x_bf16;        // (n, h, w, in) bf16 copy of x: forward's src, and backward weights'
    mutable Bf16Buffer dz_bf16;       // (n, oh, ow, filters) bf16 dz = dy * act'(.): both backwards' diff_dst
    PrimitiveCall kernel_to_forward;  // hwio -> forward's layout, when they differ
    PrimitiveCall forward;
    PrimitiveCall activation_backward;  // dz = dy * act'(y), when the activation is fused (f32), but relu:
    // relu with a bias (f32) forms dz and the bias gradient in one pass of ours instead (kernels/channel_sums.h):
    // dz into relu_dz, the blocks' sums into block_sums.
    float* relu_dz = nullptr;
    mutable FloatBuffer block_sums;
    PrimitiveCall backward_weights;         // d kernel and d bias from x and dz
    PrimitiveCall kernel_grad_to_hwio;      // backward weights' layout -> hwio, when they differ
    PrimitiveCall kernel_to_backward_data;  // hwio -> backward data's layout, when they differ
    PrimitiveCall backward_data;            // dx from dz and the kernel; only when the model wants dx
    bool backward_prepared = false;
  };

  const Plan& plan_for(int64_t n) const;

  Options options_;
  float* kernel_ = nullptr;                // (kh, kw, in, filters), view into the flat parameters
  float* bias_ = nullptr;                  // (filters)
  float* kernel_grad_ = nullptr;           // (kh, kw, in, filters)
  float* bias_grad_ = nullptr;             // (filters)
  const uint16_t* kernel_bf16_ = nullptr;  // (kh, kw, in, filters) bf16 copy of kernel_, under mixed_bfloat16
  std::unordered_map<int64_t, Plan> plans_;
};

}  // namespace shardfit
