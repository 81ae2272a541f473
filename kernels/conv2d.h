// Conv2D: y = act(conv(x, K) + b) over (None, h, w, in) samples, K of Keras shape (kh, kw, in, filters), as oneDNN
// convolution primitives (forward, backward data, backward weights) built once per batch size, with relu / sigmoid /
// tanh fused as a post-op. Other activations are separate Activation layers (model_factory). Under mixed_bfloat16
// Conv2D computes in f32 for now (it ignores the model's bf16 weight copy).
#pragma once

#include <array>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/activation_kind.h"
#include "kernels/engine.h"
#include "kernels/initializer.h"
#include "kernels/layer.h"

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
  void initialize(Rng& rng) override;

  void prepare(int64_t n, const LayerBuffers& buffers) override;
  void forward(int64_t n, const BatchContext& ctx) override;
  void backward(int64_t n) override;
  void forget_plans() override { plans_.clear(); }

  // oneDNN's implementations of the prepared batch size n: "forward", "backward data", "backward weights".
  std::vector<std::string> implementations(int64_t n) const;

 private:
  // Everything one batch size needs; memory objects wrap the model's buffers. The kernel stays in Keras's hwio
  // layout in the flat parameters; when oneDNN's chosen kernels want another layout, the plan reorders into its
  // own copies (forward: each step's weights; backward weights: the gradient back to hwio), as oneDNN's
  // cnn_training example does.
  struct Plan {
    PrimitiveCall kernel_to_forward;  // hwio -> forward's layout, when they differ
    PrimitiveCall forward;
    PrimitiveCall activation_backward;      // dz = dy * act'(y), only when the activation is fused
    PrimitiveCall backward_weights;         // d kernel and d bias from x and dz
    PrimitiveCall kernel_grad_to_hwio;      // backward weights' layout -> hwio, when they differ
    PrimitiveCall kernel_to_backward_data;  // hwio -> backward data's layout, when they differ
    PrimitiveCall backward_data;            // dx from dz and the kernel; only when the model wants dx
    bool backward_prepared = false;
  };

  const Plan& plan_for(int64_t n) const;

  Options options_;
  float* kernel_ = nullptr;       // (kh, kw, in, filters), view into the flat parameters
  float* bias_ = nullptr;         // (filters)
  float* kernel_grad_ = nullptr;  // (kh, kw, in, filters)
  float* bias_grad_ = nullptr;    // (filters)
  std::unordered_map<int64_t, Plan> plans_;
};

}  // namespace shardfit
