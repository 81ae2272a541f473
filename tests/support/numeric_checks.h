// Test helpers shared by the kernel tests: closeness with tolerances scaled to the problem, and central finite
// differences of a double-precision scalar function, and the fusable activations (relu, sigmoid, tanh) in double for
// the references of the layers that fuse them (Dense, Conv2D). References themselves are written inside each test.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "kernels/activation_kind.h"

namespace shardfit::testing {

// Every element within k * eps(float) * max(|expected|, scale), scale = max(1, max |expected|) by default.
// Reports the worst element (index, actual, expected) so a failure says where.
inline ::testing::AssertionResult all_close(std::span<const float> actual, std::span<const double> expected, double k,
                                            double scale = -1.0) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure() << "size " << actual.size() << " != " << expected.size();
  }
  if (scale < 0) {
    scale = 1.0;
    for (double e : expected) scale = std::max(scale, std::abs(e));
  }
  const double eps = 1.1920928955078125e-07;
  size_t worst = 0;
  double worst_ratio = 0.0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double tol = k * eps * std::max(std::abs(expected[i]), scale);
    const double err = std::abs(static_cast<double>(actual[i]) - expected[i]);
    if (!(err <= tol)) {  // NaN fails too
      const double ratio = std::isfinite(err) ? err / tol : INFINITY;
      if (ratio >= worst_ratio) {
        worst_ratio = ratio;
        worst = i;
      }
    }
  }
  if (worst_ratio > 0.0) {
    return ::testing::AssertionFailure() << "element " << worst << ": actual " << actual[worst] << ", expected "
                                         << expected[worst] << " (error " << std::abs(actual[worst] - expected[worst])
                                         << " is " << worst_ratio << "x the tolerance " << k << "*eps*" << scale << ")";
  }
  return ::testing::AssertionSuccess();
}

// Central differences of f at x (double precision throughout), step h * max(1, |x_i|).
inline std::vector<double> finite_difference_gradient(const std::function<double(const std::vector<double>&)>& f,
                                                      std::vector<double> x, double h = 1e-6) {
  std::vector<double> grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double xi = x[i];
    const double step = h * std::max(1.0, std::abs(xi));
    x[i] = xi + step;
    const double up = f(x);
    x[i] = xi - step;
    const double down = f(x);
    x[i] = xi;
    grad[i] = (up - down) / (2 * step);
  }
  return grad;
}

inline std::vector<double> to_double(std::span<const float> v) { return {v.begin(), v.end()}; }
inline std::vector<float> to_float(std::span<const double> v) {
  std::vector<float> out(v.size());
  std::transform(v.begin(), v.end(), out.begin(), [](double d) { return static_cast<float>(d); });
  return out;
}

// f(z) of a fusable activation; the identity for any other kind (linear).
inline double activate(ActivationKind kind, double z) {
  switch (kind) {
    case ActivationKind::kRelu:
      return z > 0 ? z : 0.0;
    case ActivationKind::kSigmoid:
      return 1.0 / (1.0 + std::exp(-z));
    case ActivationKind::kTanh:
      return std::tanh(z);
    default:
      return z;
  }
}

// f'(z) written through y = f(z), the form the layers' backward reads.
inline double derivative_from_output(ActivationKind kind, double y) {
  switch (kind) {
    case ActivationKind::kRelu:
      return y > 0 ? 1.0 : 0.0;
    case ActivationKind::kSigmoid:
      return y * (1.0 - y);
    case ActivationKind::kTanh:
      return 1.0 - y * y;
    default:
      return 1.0;
  }
}

}  // namespace shardfit::testing
