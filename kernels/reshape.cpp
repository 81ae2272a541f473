// Flatten and Reshape: a row copy each way.
#include "kernels/reshape.h"

#include <algorithm>
#include <cstring>

#include "kernels/error.h"

namespace shardfit {

namespace {

// Copies n rows of `width` floats; rows are contiguous, so one memcpy.
void copy_rows(float* out, const float* in, int64_t n, int64_t width) {
  std::memcpy(out, in, static_cast<size_t>(n * width) * sizeof(float));
}

}  // namespace

Shape resolve_target_shape(const Shape& target, int64_t count) {
  SF_CHECK(!target.empty(), "expected at least one dimension in target_shape, e.g. [28, 28, 1]");
  const auto unknown = std::count(target.begin(), target.end(), int64_t{-1});
  SF_CHECK(unknown <= 1, cat("target_shape ", batch_shape_text(target), " has ", unknown,
                             " entries of -1: expected at most one (the dimension to infer)"));
  int64_t known = 1;
  for (const int64_t d : target) {
    SF_CHECK(d > 0 || d == -1,
             cat("target_shape ", batch_shape_text(target), " has the entry ", d, ": expected positive sizes or -1"));
    if (d > 0) known *= d;
  }
  Shape resolved = target;
  if (unknown == 1) {
    SF_CHECK(count % known == 0, cat("target_shape ", batch_shape_text(target), " cannot hold ", count,
                                     " elements: ", count, " is not a multiple of ", known));
    *std::find(resolved.begin(), resolved.end(), int64_t{-1}) = count / known;
  }
  SF_CHECK(element_count(resolved) == count, cat("target_shape ", batch_shape_text(target), " holds ",
                                                 element_count(resolved), " elements but its input has ", count));
  return resolved;
}

Reshape::Reshape(std::string name, Shape input_shape, Shape target)
    : Layer(std::move(name), std::move(input_shape), std::move(target)) {
  SF_CHECK(input_dim() == output_dim() && input_dim() > 0,
           cat("Reshape '", this->name(), "': ", batch_shape_text(this->input_shape()), " and ",
               batch_shape_text(output_shape()), " hold different element counts"));
}

Flatten::Flatten(std::string name, const Shape& input_shape)
    : Reshape(std::move(name), input_shape, Shape{element_count(input_shape)}) {}

void Reshape::prepare(int64_t n, const LayerBuffers& buffers) { plans_[n] = buffers; }

void Reshape::forward(int64_t n, const BatchContext& /*ctx*/) {
  auto it = plans_.find(n);
  SF_CHECK(it != plans_.end(), cat(type_name(), " '", name(), "': batch size ", n, " was not prepared"));
  copy_rows(it->second.y, it->second.x, n, input_dim());
}

void Reshape::backward(int64_t n) {
  auto it = plans_.find(n);
  SF_CHECK(it != plans_.end(), cat(type_name(), " '", name(), "': backward for batch size ", n, " was not prepared"));
  // The model's first layer gets no dx (nothing below it wants one).
  if (it->second.dx != nullptr && it->second.dy != nullptr) copy_rows(it->second.dx, it->second.dy, n, input_dim());
}

}  // namespace shardfit
