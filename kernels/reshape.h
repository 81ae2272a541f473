// Flatten and Reshape: the same elements under another shape. A buffer row already is one sample's tensor in
// row-major order, so both are a copy of the row (y = x forward, dx = dy backward): no arithmetic, no oneDNN. Not an
// alias of the input buffer: the model gives every layer buffers of its own, and a copy keeps backward simple.
#pragma once

#include <unordered_map>

#include "kernels/layer.h"

namespace shardfit {

class Reshape : public Layer {
 public:
  // target: one sample's output shape, with the same element count as input_shape (no -1 left: see
  // resolve_target_shape).
  Reshape(std::string name, Shape input_shape, Shape target);

  std::string kind() const override { return "reshape"; }
  std::string type_name() const override { return "Reshape"; }

  void prepare(int64_t n, const LayerBuffers& buffers) override;
  void forward(int64_t n, const BatchContext& ctx) override;
  void backward(int64_t n) override;
  void forget_plans() override { plans_.clear(); }

 private:
  std::unordered_map<int64_t, LayerBuffers> plans_;
};

// Keras's Flatten: (None, d1, ..., dk) -> (None, d1 * ... * dk).
class Flatten final : public Reshape {
 public:
  Flatten(std::string name, const Shape& input_shape);

  std::string kind() const override { return "flatten"; }
  std::string type_name() const override { return "Flatten"; }
};

// Keras's target_shape with at most one -1 (the entry inferred) for an input of `count` elements; every other entry
// positive and the product `count`. Throws Error saying which of these fails.
Shape resolve_target_shape(const Shape& target, int64_t count);

}  // namespace shardfit
