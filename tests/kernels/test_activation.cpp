// Tests of kernels/activation: linear, relu, sigmoid, tanh, exact-erf gelu and softmax against a naive double
// reference and finite differences over a sweep of shapes; huge and saturated inputs; plan handling.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kernels/activation.h"
#include "kernels/error.h"
#include "tests/support/numeric_checks.h"

namespace shardfit {
namespace {

using testing::all_close;
using testing::finite_difference_gradient;

constexpr double kFloatEps = 1.1920928955078125e-07;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int64_t kBatchSizes[] = {1, 3, 17, 64};
constexpr int64_t kWidths[] = {1, 5, 10, 33, 64};
constexpr ActivationKind kEltwise[] = {ActivationKind::kLinear, ActivationKind::kRelu, ActivationKind::kSigmoid,
                                       ActivationKind::kTanh, ActivationKind::kGelu};

// ---- the naive reference, double precision throughout ----

double eltwise(ActivationKind kind, double x) {
  switch (kind) {
    case ActivationKind::kRelu:
      return x > 0 ? x : 0.0;
    case ActivationKind::kSigmoid:
      return 1.0 / (1.0 + std::exp(-x));
    case ActivationKind::kTanh:
      return std::tanh(x);
    case ActivationKind::kGelu:
      return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    default:
      return x;
  }
}

double eltwise_derivative(ActivationKind kind, double x) {
  switch (kind) {
    case ActivationKind::kRelu:
      return x > 0 ? 1.0 : 0.0;
    case ActivationKind::kSigmoid: {
      const double s = eltwise(kind, x);
      return s * (1.0 - s);
    }
    case ActivationKind::kTanh: {
      const double t = std::tanh(x);
      return 1.0 - t * t;
    }
    case ActivationKind::kGelu: {
      // d/dx [x Phi(x)] = Phi(x) + x phi(x)
      const double pdf = std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
      return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) + x * pdf;
    }
    default:
      return 1.0;
  }
}

// y (d) = f(x (d)) for one row; softmax shifted by the row max so that +-1000 stays finite.
std::vector<double> reference_row(ActivationKind kind, std::span<const double> x) {
  std::vector<double> y(x.size());
  if (kind != ActivationKind::kSoftmax) {
    for (size_t j = 0; j < x.size(); ++j) y[j] = eltwise(kind, x[j]);
    return y;
  }
  const double max = *std::max_element(x.begin(), x.end());
  double sum = 0.0;
  for (size_t j = 0; j < x.size(); ++j) sum += y[j] = std::exp(x[j] - max);
  for (double& v : y) v /= sum;
  return y;
}

// dx (d) for one row given dy: dy * f'(x), or for softmax y * (dy - sum(dy * y)).
std::vector<double> reference_row_backward(ActivationKind kind, std::span<const double> x, std::span<const double> dy) {
  std::vector<double> dx(x.size());
  if (kind != ActivationKind::kSoftmax) {
    for (size_t j = 0; j < x.size(); ++j) dx[j] = dy[j] * eltwise_derivative(kind, x[j]);
    return dx;
  }
  const std::vector<double> y = reference_row(kind, x);
  double dot = 0.0;
  for (size_t j = 0; j < x.size(); ++j) dot += dy[j] * y[j];
  for (size_t j = 0; j < x.size(); ++j) dx[j] = y[j] * (dy[j] - dot);
  return dx;
}

// ---- running the layer ----

// One batch: x, and r with L = sum(y * r), so dy = r. The outputs are NaN until the layer writes them.
struct Batch {
  int64_t n = 0;
  int64_t d = 0;
  std::vector<float> x, y, dy, dx;
  LayerBuffers buffers() { return {x.data(), y.data(), dy.data(), dx.data(), nullptr}; }
};

// x uniform in (-3, 3): across sigmoid / tanh's curved part and into gelu's tails. For relu, |x| >= 1e-2, far
// above the finite-difference step, so the reference is smooth where it is differentiated.
Batch make_batch(ActivationKind kind, int64_t n, int64_t d, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> uniform(-3, 3);
  std::uniform_real_distribution<double> unit(-1, 1);
  Batch b;
  b.n = n;
  b.d = d;
  b.x.resize(n * d);
  b.dy.resize(n * d);
  for (float& v : b.x) {
    do {
      v = static_cast<float>(uniform(rng));
    } while (kind == ActivationKind::kRelu && std::abs(v) < 1e-2F);
  }
  for (float& v : b.dy) v = static_cast<float>(unit(rng));
  b.y.assign(n * d, kNaN);
  b.dx.assign(n * d, kNaN);
  return b;
}

struct Expected {
  std::vector<double> y, dx;
};

Expected reference(ActivationKind kind, const Batch& b) {
  Expected e;
  for (int64_t i = 0; i < b.n; ++i) {
    const std::vector<double> x(b.x.begin() + i * b.d, b.x.begin() + (i + 1) * b.d);
    const std::vector<double> dy(b.dy.begin() + i * b.d, b.dy.begin() + (i + 1) * b.d);
    const std::vector<double> y = reference_row(kind, x);
    const std::vector<double> dx = reference_row_backward(kind, x, dy);
    e.y.insert(e.y.end(), y.begin(), y.end());
    e.dx.insert(e.dx.end(), dx.begin(), dx.end());
  }
  return e;
}

// Tolerances (k for all_close with scale 1: k eps max(|expected|, 1), and |dy| <= 1).
//  eltwise forward: a few ulps for oneDNN's exp / tanh: k = 4. gelu: oneDNN's vectorised erf is a polynomial
//    with ~1.5e-7 (1.3 eps) absolute error, times |x| / 2 <= 1.5 here, plus the roundings: k = 8.
//  eltwise backward: f' from the float output (sigmoid y (1 - y), tanh 1 - y^2) or from x (gelu), times dy:
//    the forward's error, amplified at most 2x by d f'/dy, plus two roundings: k = 8, gelu 12.
//  softmax forward: the row sum of d terms adds up to d/2 eps relative to each output: k = d + 4.
//  softmax backward: sum(dy * y) over d terms, and y's own error, each up to (d/2 + 4) eps: k = 2 d + 8.
double forward_k(ActivationKind kind, int64_t d) {
  if (kind == ActivationKind::kSoftmax) return d + 4.0;
  return kind == ActivationKind::kGelu ? 8.0 : 4.0;
}
double backward_k(ActivationKind kind, int64_t d) {
  if (kind == ActivationKind::kSoftmax) return 2.0 * d + 8;
  return kind == ActivationKind::kGelu ? 12.0 : 8.0;
}

// L = sum over rows of sum_j f(x_i)_j r_ij; row i's term depends on row i only, so the gradient with respect to
// row i is the finite-difference gradient of that row's term: every coordinate checked at O(n d^2) cost.
std::vector<double> finite_difference_dx(ActivationKind kind, const Batch& b) {
  std::vector<double> fd;
  for (int64_t i = 0; i < b.n; ++i) {
    const std::vector<double> r(b.dy.begin() + i * b.d, b.dy.begin() + (i + 1) * b.d);
    auto row_loss = [&](const std::vector<double>& x) {
      const std::vector<double> y = reference_row(kind, x);
      double total = 0.0;
      for (size_t j = 0; j < y.size(); ++j) total += y[j] * r[j];
      return total;
    };
    const std::vector<double> g =
        finite_difference_gradient(row_loss, std::vector<double>(b.x.begin() + i * b.d, b.x.begin() + (i + 1) * b.d));
    fd.insert(fd.end(), g.begin(), g.end());
  }
  return fd;
}

void check_activation(ActivationKind kind) {
  uint32_t seed = 1;
  for (int64_t n : kBatchSizes) {
    for (int64_t d : kWidths) {
      SCOPED_TRACE(activation_name(kind) + ", n " + std::to_string(n) + ", d " + std::to_string(d));
      Batch b = make_batch(kind, n, d, seed++);
      Activation layer("act", d, kind);
      EXPECT_EQ(layer.activation(), kind);
      layer.prepare(n, b.buffers());
      layer.forward(n, BatchContext{});
      layer.backward(n);
      const Expected e = reference(kind, b);
      EXPECT_TRUE(all_close(b.y, e.y, forward_k(kind, d), 1.0)) << "y";
      EXPECT_TRUE(all_close(b.dx, e.dx, backward_k(kind, d), 1.0)) << "dx";
      // The finite differences' own error (~1e-9 here) is under one more eps.
      EXPECT_TRUE(all_close(b.dx, finite_difference_dx(kind, b), backward_k(kind, d) + 1, 1.0))
          << "dx vs finite differences";
      if (kind == ActivationKind::kSoftmax) {
        for (int64_t i = 0; i < n; ++i) {
          double sum = 0.0;
          for (int64_t j = 0; j < d; ++j) sum += b.y[i * d + j];
          EXPECT_NEAR(sum, 1.0, (d + 4.0) * kFloatEps) << "row " << i;
        }
      }
    }
  }
}

TEST(Activation, LinearMatchesReferenceAndFiniteDifferences) { check_activation(ActivationKind::kLinear); }
TEST(Activation, ReluMatchesReferenceAndFiniteDifferences) { check_activation(ActivationKind::kRelu); }
TEST(Activation, SigmoidMatchesReferenceAndFiniteDifferences) { check_activation(ActivationKind::kSigmoid); }
TEST(Activation, TanhMatchesReferenceAndFiniteDifferences) { check_activation(ActivationKind::kTanh); }
TEST(Activation, GeluMatchesExactErfReferenceAndFiniteDifferences) { check_activation(ActivationKind::kGelu); }
TEST(Activation, SoftmaxMatchesReferenceAndFiniteDifferences) { check_activation(ActivationKind::kSoftmax); }

// Keras's default gelu is the exact erf form; the tanh approximation differs from it by 2e-4 to 5e-4 at these
// points, hundreds of times the tolerance, so a layer that used it fails here as well as in the sweep.
TEST(Activation, GeluIsNotTheTanhApproximation) {
  Batch b;
  b.n = 1;
  b.d = 3;
  b.x = {-2.7F, 1.5F, 2.5F};
  b.dy = {1, 1, 1};
  b.y.assign(3, kNaN);
  b.dx.assign(3, kNaN);
  Activation layer("gelu", 3, ActivationKind::kGelu);
  layer.prepare(1, b.buffers());
  layer.forward(1, BatchContext{});
  EXPECT_TRUE(all_close(b.y, reference(ActivationKind::kGelu, b).y, forward_k(ActivationKind::kGelu, 3), 1.0));
  for (size_t j = 0; j < b.x.size(); ++j) {
    const double x = b.x[j];
    const double approx = 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    EXPECT_GT(std::abs(approx - b.y[j]), 1e-4) << "x = " << x;
  }
}

// Huge and saturated inputs: finite outputs and gradients equal to the limits (softmax of +-1000 is the reason
// for the max shift: exp(1000) overflows even in double).
TEST(Activation, SoftmaxIsStableForHugeInputs) {
  const std::vector<std::vector<float>> rows = {
      {1000, -1000, 999, 0},    {-1000, -1000, -1000, -1000},
      {1000, 1000, 1000, 1000}, {-1000, 1000, -1000, -999},
      {88, 89, 90, -90},        {0, 0, 0, 1000},
  };
  Batch b;
  b.d = 4;
  b.n = static_cast<int64_t>(rows.size());
  for (const auto& row : rows) b.x.insert(b.x.end(), row.begin(), row.end());
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> unit(-1, 1);
  for (size_t i = 0; i < b.x.size(); ++i) b.dy.push_back(static_cast<float>(unit(rng)));
  b.y.assign(b.x.size(), kNaN);
  b.dx.assign(b.x.size(), kNaN);
  Activation layer("softmax", b.d, ActivationKind::kSoftmax);
  layer.prepare(b.n, b.buffers());
  layer.forward(b.n, BatchContext{});
  layer.backward(b.n);
  for (size_t i = 0; i < b.y.size(); ++i) {
    ASSERT_TRUE(std::isfinite(b.y[i])) << "y element " << i;
    ASSERT_TRUE(std::isfinite(b.dx[i])) << "dx element " << i;
  }
  const Expected e = reference(ActivationKind::kSoftmax, b);
  EXPECT_TRUE(all_close(b.y, e.y, forward_k(ActivationKind::kSoftmax, b.d), 1.0)) << "y";
  EXPECT_TRUE(all_close(b.dx, e.dx, backward_k(ActivationKind::kSoftmax, b.d), 1.0)) << "dx";
  for (int64_t i = 0; i < b.n; ++i) {
    double sum = 0.0;
    for (int64_t j = 0; j < b.d; ++j) sum += b.y[i * b.d + j];
    EXPECT_NEAR(sum, 1.0, (b.d + 4.0) * kFloatEps) << "row " << i;
  }
  EXPECT_EQ(b.y[1 * 4 + 0], 0.25F);  // a constant row is uniform whatever the constant
  EXPECT_EQ(b.y[2 * 4 + 3], 0.25F);
}

TEST(Activation, EltwiseIsFiniteAndExactAtExtremeInputs) {
  const std::vector<float> x = {-1000, -100, -20, -5, -0.5F, 0.5F, 5, 20, 100, 1000};
  for (ActivationKind kind : kEltwise) {
    SCOPED_TRACE(activation_name(kind));
    Batch b;
    b.n = 2;
    b.d = static_cast<int64_t>(x.size()) / 2;
    b.x = x;
    b.dy.assign(x.size(), 1.0F);
    b.y.assign(x.size(), kNaN);
    b.dx.assign(x.size(), kNaN);
    Activation layer("act", b.d, kind);
    layer.prepare(b.n, b.buffers());
    layer.forward(b.n, BatchContext{});
    layer.backward(b.n);
    const Expected e = reference(kind, b);
    EXPECT_TRUE(all_close(b.y, e.y, forward_k(kind, b.d), 1.0)) << "y";
    EXPECT_TRUE(all_close(b.dx, e.dx, backward_k(kind, b.d), 1.0)) << "dx";
  }
}

// Plans are cached per batch size over their own buffers: 7, then 3, then 7 again with new data.
TEST(Activation, SeveralBatchSizesOnOneLayer) {
  for (ActivationKind kind : {ActivationKind::kTanh, ActivationKind::kGelu, ActivationKind::kSoftmax}) {
    SCOPED_TRACE(activation_name(kind));
    Activation layer("act", 10, kind);
    Batch b7 = make_batch(kind, 7, 10, 1);
    Batch b3 = make_batch(kind, 3, 10, 2);
    layer.prepare(7, b7.buffers());
    layer.prepare(3, b3.buffers());
    auto run_and_check = [&](Batch& b) {
      layer.forward(b.n, BatchContext{});
      layer.backward(b.n);
      const Expected e = reference(kind, b);
      EXPECT_TRUE(all_close(b.y, e.y, forward_k(kind, 10), 1.0)) << "n " << b.n;
      EXPECT_TRUE(all_close(b.dx, e.dx, backward_k(kind, 10), 1.0)) << "n " << b.n;
    };
    run_and_check(b7);
    run_and_check(b3);
    // New samples in the 7-row buffers: the cached plan must read them, not a copy.
    const Batch fresh = make_batch(kind, 7, 10, 3);
    std::copy(fresh.x.begin(), fresh.x.end(), b7.x.begin());
    std::copy(fresh.dy.begin(), fresh.dy.end(), b7.dy.begin());
    std::fill(b7.y.begin(), b7.y.end(), kNaN);
    std::fill(b7.dx.begin(), b7.dx.end(), kNaN);
    run_and_check(b7);
  }
}

// The model prepares inference-only plans (no dy, no dx) for evaluation: forward alone.
TEST(Activation, InferenceOnlyPlan) {
  for (ActivationKind kind : {ActivationKind::kRelu, ActivationKind::kGelu, ActivationKind::kSoftmax}) {
    SCOPED_TRACE(activation_name(kind));
    Batch b = make_batch(kind, 3, 5, 9);
    Activation layer("act", 5, kind);
    layer.prepare(3, LayerBuffers{b.x.data(), b.y.data(), nullptr, nullptr, nullptr});
    layer.forward(3, BatchContext{});
    EXPECT_TRUE(all_close(b.y, reference(kind, b).y, forward_k(kind, 5), 1.0));
  }
}

// As the model's first layer an Activation gets dy but no dx (nothing below wants it), and the model still calls
// its backward: with no parameters there is nothing to write, and that must not be an error.
TEST(Activation, FirstLayerWithoutDxHasNothingToWrite) {
  for (ActivationKind kind : {ActivationKind::kTanh, ActivationKind::kGelu, ActivationKind::kSoftmax}) {
    SCOPED_TRACE(activation_name(kind));
    Batch b = make_batch(kind, 3, 5, 10);
    Activation layer("act", 5, kind);
    layer.prepare(3, LayerBuffers{b.x.data(), b.y.data(), b.dy.data(), nullptr, nullptr});
    layer.forward(3, BatchContext{});
    EXPECT_TRUE(all_close(b.y, reference(kind, b).y, forward_k(kind, 5), 1.0));
    EXPECT_NO_THROW(layer.backward(3));
  }
}

TEST(Activation, UnpreparedBatchSizeAndBadWidthAreErrors) {
  EXPECT_THROW(Activation("act", 0, ActivationKind::kRelu), Error);
  Batch b = make_batch(ActivationKind::kRelu, 3, 5, 11);
  Activation layer("act", 5, ActivationKind::kRelu);
  EXPECT_THROW(layer.forward(3, BatchContext{}), Error);
  layer.prepare(3, b.buffers());
  EXPECT_THROW(layer.forward(2, BatchContext{}), Error);
  EXPECT_THROW(layer.backward(2), Error);
  layer.forget_plans();
  EXPECT_THROW(layer.forward(3, BatchContext{}), Error);
  EXPECT_EQ(layer.kind(), "activation");
  EXPECT_EQ(layer.param_count(), 0);
}

}  // namespace
}  // namespace shardfit
