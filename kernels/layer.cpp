// The shape side of Layer: Keras's batch-shape text and the element-wise layers' shape; the default of the
// producer's bias gradient hand-over.
#include "kernels/layer.h"

#include "kernels/error.h"

namespace shardfit {

std::string batch_shape_text(const Shape& shape) {
  std::string text = "(None";
  for (const int64_t d : shape) text += cat(", ", d);
  return text + ")";
}

void Layer::set_elementwise_shape(const Shape& shape) {
  SF_CHECK(element_count(shape) == input_dim_ && input_dim_ == output_dim_,
           cat("layer '", name_, "' of width ", input_dim_, " cannot take the shape ", batch_shape_text(shape), " (",
               element_count(shape), " elements)"));
  input_shape_ = shape;
  output_shape_ = shape;
}

void Layer::write_producer_bias_gradient(float* /*bias_grad*/, int64_t /*count*/) {
  SF_FAIL(cat("layer '", name_, "' (", type_name(), ") cannot write the bias gradient of the layer before it"));
}

}  // namespace shardfit
