// MaxPooling2D, AveragePooling2D and GlobalAveragePooling2D over (None, h, w, c) samples, as oneDNN pooling
// primitives built once per batch size: max keeps the forward's workspace (where each window's maximum was) for
// backward; average divides by the window's cells inside the image (TensorFlow's "same"); global average is one
// window of the whole image, (None, h, w, c) -> (None, c). No parameters.
//
// Max pooling can also run the relu of the Conv2D before it (model_factory.cpp pairs them): relu is monotone, so
// relu(max(z)) = max(relu(z)) value for value, and max pooling's backward sends each window's gradient to the one
// cell that won it, so dz = pool_backward(dy * (y > 0)) is the gradient the relu-then-pool order gives, cell for
// cell (a window whose maximum is <= 0 sends 0 either way). The relu's forward and backward then run over the
// pooled output (a quarter of the convolution's at pool_size 2) instead of the convolution's, and the backward pass
// also sums the producer's bias gradient there: each window's gradient lands on exactly one cell, so the per-channel
// sums of dz are the sums of the pooled gradient (in another order). Exact in float32 up to that order; under
// mixed_bfloat16 the convolution's bias gradient is then summed from these f32 terms, where the relu-then-pool order
// sums the bf16-rounded dz (Keras's bf16 policy): more precise, not the same bits. Measured at the Fashion-MNIST
// convnet's first convolution (bench/README.md, conv_bench): oneDNN's bias reduction inside backward weights took 2.7x
// the weight gradient itself, and the relu backward over the convolution's output 1.8x.
#pragma once

#include <array>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>

#include "kernels/buffer.h"
#include "kernels/engine.h"
#include "kernels/layer.h"

namespace shardfit {

class Pooling2D final : public Layer {
 public:
  enum class Kind { kMax, kAverage, kGlobalAverage };
  struct Options {
    Kind kind = Kind::kMax;
    std::array<int64_t, 2> pool_size{2, 2};  // (height, width); the whole image for kGlobalAverage
    std::array<int64_t, 2> strides{2, 2};    // Keras's default is pool_size: the factory fills it in
    bool same_padding = false;
    bool relu = false;  // kMax only: relu on the output, the producer's relu moved past the max (above)
  };
  // input_shape: (h, w, c). Throws Error when the options do not fit it.
  Pooling2D(const std::string& name, const Shape& input_shape, const Options& options);

  static Shape output_shape_for(const std::string& name, const Shape& input_shape, const Options& options);

  std::string kind() const override;
  std::string type_name() const override;

  void write_producer_bias_gradient(float* bias_grad, int64_t count) override;

  void prepare(int64_t n, const LayerBuffers& buffers) override;
  void forward(int64_t n, const BatchContext& ctx) override;
  void backward(int64_t n) override;
  void forget_plans() override { plans_.clear(); }

  // oneDNN's implementation of the prepared batch size n's forward.
  std::string implementation(int64_t n) const;

 private:
  struct Plan {
    PrimitiveCall forward;
    PrimitiveCall relu_forward;  // in place on y, with Options::relu
    PrimitiveCall backward;      // only when the model wants dx; with Options::relu it reads g, not dy
    // With Options::relu: g = dy * (y > 0) (the model's scratch for this layer), and the per-block channel sums
    // of g that make the producer's bias gradient.
    const float* y = nullptr;
    const float* dy = nullptr;
    float* g = nullptr;
    mutable FloatBuffer block_sums;
    bool backward_prepared = false;
  };
  const Plan& plan_for(int64_t n) const;

  Options options_;
  float* producer_bias_grad_ = nullptr;  // (channels), written by backward; nullptr: no producer bias to sum
  std::unordered_map<int64_t, Plan> plans_;
};

}  // namespace shardfit
