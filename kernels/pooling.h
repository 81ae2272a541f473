// MaxPooling2D, AveragePooling2D and GlobalAveragePooling2D over (None, h, w, c) samples, as oneDNN pooling
// primitives built once per batch size: max keeps the forward's workspace (where each window's maximum was) for
// backward; average divides by the window's cells inside the image (TensorFlow's "same"); global average is one
// window of the whole image, (None, h, w, c) -> (None, c). No parameters.
#pragma once

#include <array>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>

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
  };
  // input_shape: (h, w, c). Throws Error when the options do not fit it.
  Pooling2D(const std::string& name, const Shape& input_shape, const Options& options);

  static Shape output_shape_for(const std::string& name, const Shape& input_shape, const Options& options);

  std::string kind() const override;
  std::string type_name() const override;

  void prepare(int64_t n, const LayerBuffers& buffers) override;
  void forward(int64_t n, const BatchContext& ctx) override;
  void backward(int64_t n) override;
  void forget_plans() override { plans_.clear(); }

  // oneDNN's implementation of the prepared batch size n's forward.
  std::string implementation(int64_t n) const;

 private:
  struct Plan {
    PrimitiveCall forward;
    PrimitiveCall backward;  // only when the model wants dx
    bool backward_prepared = false;
  };
  const Plan& plan_for(int64_t n) const;

  Options options_;
  std::unordered_map<int64_t, Plan> plans_;
};

}  // namespace shardfit
