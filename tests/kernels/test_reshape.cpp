// Tests of kernels/reshape: Flatten and Reshape copy each sample's elements in order both ways, Keras's shapes
// (target_shape with one -1), the errors.
#include <gtest/gtest.h>

#include <numeric>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "kernels/reshape.h"

namespace shardfit {
namespace {

TEST(Reshape, CopiesRowsForwardAndGradientsBackward) {
  Reshape layer("r", {4, 3, 2}, {6, 4});
  EXPECT_EQ(layer.output_shape(), (Shape{6, 4}));
  EXPECT_EQ(layer.output_dim(), 24);
  constexpr size_t kCount = size_t{3} * 24;  // 3 samples of 24
  std::vector<float> x(kCount);
  std::vector<float> y(kCount, -1.0F);
  std::vector<float> dy(kCount);
  std::vector<float> dx(kCount, -1.0F);
  std::iota(x.begin(), x.end(), 0.0F);
  std::iota(dy.begin(), dy.end(), 100.0F);
  layer.prepare(3, {x.data(), y.data(), dy.data(), dx.data(), nullptr});
  layer.prepare(2, {x.data(), y.data(), dy.data(), nullptr, nullptr});
  layer.forward(3, BatchContext{});
  EXPECT_EQ(y, x);
  layer.backward(3);
  EXPECT_EQ(dx, dy);
  std::fill(dx.begin(), dx.end(), -1.0F);
  layer.backward(2);  // no dx wanted
  EXPECT_EQ(dx[0], -1.0F);
  EXPECT_THROW(layer.forward(5, BatchContext{}), Error);
}

TEST(Flatten, GivesOneFlatRowPerSample) {
  const Flatten layer("f", {26, 26, 32});
  EXPECT_EQ(layer.output_shape(), (Shape{int64_t{26} * 26 * 32}));
  EXPECT_EQ(layer.type_name(), "Flatten");
  EXPECT_EQ(batch_shape_text(layer.output_shape()), "(None, 21632)");
}

TEST(Reshape, TargetShapeInfersOneMinusOneAndRefusesTheRest) {
  EXPECT_EQ(resolve_target_shape({28, 28, 1}, 784), (Shape{28, 28, 1}));
  EXPECT_EQ(resolve_target_shape({-1, 8, 1}, 64), (Shape{8, 8, 1}));
  auto message = [](const Shape& target, int64_t count) -> std::string {
    try {
      resolve_target_shape(target, count);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(message({28, 28, 2}, 784).find("holds 1568 elements but its input has 784"), std::string::npos);
  EXPECT_NE(message({-1, -1}, 784).find("2 entries of -1"), std::string::npos);
  EXPECT_NE(message({-1, 5}, 784).find("784 is not a multiple of 5"), std::string::npos);
  EXPECT_NE(message({0, 784}, 784).find("the entry 0"), std::string::npos);
  EXPECT_NE(message({}, 784).find("at least one dimension"), std::string::npos);
}

}  // namespace
}  // namespace shardfit
