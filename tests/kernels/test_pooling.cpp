// Tests of kernels/pooling: MaxPooling2D, AveragePooling2D and GlobalAveragePooling2D forward and backward against a
// naive double-precision reference over a sweep of shapes (odd sizes, batch 1, strides, both paddings), central
// finite differences, Keras's output shapes and default strides, the errors; max pooling that takes the relu of the
// layer before it (relu then pool, cell for cell, and that layer's bias gradient).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "kernels/pooling.h"
#include "kernels/window.h"
#include "tests/support/numeric_checks.h"

namespace shardfit {
namespace {

using testing::all_close;
using testing::finite_difference_gradient;
using Kind = Pooling2D::Kind;

struct Case {
  Kind kind;
  int64_t n, h, w, c, ph, pw, sh, sw;
  bool same;
};

std::string describe(const Case& k) {
  const char* names[] = {"max", "average", "global average"};
  return cat(names[static_cast<int>(k.kind)], ", n ", k.n, ", input (", k.h, ", ", k.w, ", ", k.c, "), pool (", k.ph,
             ", ", k.pw, "), strides (", k.sh, ", ", k.sw, "), ", k.same ? "same" : "valid");
}

Pooling2D::Options options_for(const Case& k) {
  Pooling2D::Options o;
  o.kind = k.kind;
  o.pool_size = {k.ph, k.pw};
  o.strides = {k.sh, k.sw};
  o.same_padding = k.same;
  return o;
}

// The reference from the definition: each window's cells inside the image (padding never counts), x (n, h, w, c)
// and y (n, oh, ow, c) row-major.
struct Reference {
  Case k;
  WindowAxis rows, cols;

  explicit Reference(const Case& c) : k(c) {
    if (c.kind == Kind::kGlobalAverage) {
      k.ph = c.h;
      k.pw = c.w;
      k.sh = k.sw = 1;
      k.same = false;
    }
    rows = window_axis(k.h, k.ph, k.sh, 1, k.same);
    cols = window_axis(k.w, k.pw, k.sw, 1, k.same);
  }
  int64_t in_count() const { return k.n * k.h * k.w * k.c; }
  int64_t out_count() const { return k.n * rows.out * cols.out * k.c; }

  // Calls f(y index, the window's x indices).
  template <typename F>
  void for_each_window(F f) const {
    std::vector<int64_t> cells;
    for (int64_t s = 0; s < k.n; ++s) {
      for (int64_t oy = 0; oy < rows.out; ++oy) {
        for (int64_t ox = 0; ox < cols.out; ++ox) {
          for (int64_t ch = 0; ch < k.c; ++ch) {
            cells.clear();
            for (int64_t py = 0; py < k.ph; ++py) {
              const int64_t iy = oy * k.sh - rows.pad_begin + py;
              if (iy < 0 || iy >= k.h) continue;
              for (int64_t px = 0; px < k.pw; ++px) {
                const int64_t ix = ox * k.sw - cols.pad_begin + px;
                if (ix >= 0 && ix < k.w) cells.push_back(((s * k.h + iy) * k.w + ix) * k.c + ch);
              }
            }
            f(((s * rows.out + oy) * cols.out + ox) * k.c + ch, cells);
          }
        }
      }
    }
  }

  std::vector<double> forward(const std::vector<double>& x) const {
    std::vector<double> y(out_count());
    for_each_window([&](int64_t yi, const std::vector<int64_t>& cells) {
      double acc = k.kind == Kind::kMax ? -std::numeric_limits<double>::infinity() : 0.0;
      for (const int64_t xi : cells) acc = k.kind == Kind::kMax ? std::max(acc, x[xi]) : acc + x[xi];
      y[yi] = k.kind == Kind::kMax ? acc : acc / static_cast<double>(cells.size());
    });
    return y;
  }

  std::vector<double> backward(const std::vector<double>& x, const std::vector<double>& dy) const {
    std::vector<double> dx(in_count(), 0.0);
    for_each_window([&](int64_t yi, const std::vector<int64_t>& cells) {
      if (k.kind == Kind::kMax) {
        const int64_t winner =
            *std::max_element(cells.begin(), cells.end(), [&](int64_t a, int64_t b) { return x[a] < x[b]; });
        dx[winner] += dy[yi];
      } else {
        for (const int64_t xi : cells) dx[xi] += dy[yi] / static_cast<double>(cells.size());
      }
    });
    return dx;
  }
};

struct Harness {
  Reference ref;
  Pooling2D layer;
  std::vector<float> x, y, dy, dx;

  explicit Harness(const Case& c) : ref(c), layer("pool", Shape{c.h, c.w, c.c}, options_for(c)) {
    x.resize(ref.in_count());
    y.resize(ref.out_count());
    dy.resize(ref.out_count());
    dx.assign(ref.in_count(), 12345.0F);
    layer.prepare(c.n, {x.data(), y.data(), dy.data(), dx.data(), nullptr});
  }
};

// Distinct values (a permutation of a grid), so that every window has one maximum and small steps keep it.
std::vector<double> distinct_values(int64_t count, Rng& rng) {
  std::vector<double> v(count);
  for (int64_t i = 0; i < count; ++i) v[i] = static_cast<double>(i) / static_cast<double>(count) - 0.5;
  for (int64_t i = count - 1; i > 0; --i) std::swap(v[i], v[rng.below(i + 1)]);
  return v;
}

constexpr Case kSweep[] = {
    {Kind::kMax, 1, 4, 4, 1, 2, 2, 2, 2, false},  // batch 1, the default pool
    {Kind::kMax, 3, 7, 5, 3, 2, 2, 2, 2, false},  // odd sizes: the last row and column left out
    {Kind::kMax, 2, 7, 5, 3, 2, 2, 2, 2, true},   // odd sizes, same: a padded last window
    {Kind::kMax, 2, 9, 8, 17, 3, 3, 2, 2, true},  // overlapping windows, odd channels
    {Kind::kMax, 2, 6, 9, 4, 3, 2, 1, 3, false},  // unequal pool and strides
    {Kind::kAverage, 1, 4, 4, 1, 2, 2, 2, 2, false},
    {Kind::kAverage, 3, 7, 5, 3, 2, 2, 2, 2, true},   // same: the padded window divides by its cells inside
    {Kind::kAverage, 2, 9, 8, 17, 3, 3, 2, 2, true},  // overlapping, padded on both sides
    {Kind::kAverage, 2, 6, 9, 4, 3, 2, 1, 3, false},
    {Kind::kGlobalAverage, 1, 1, 1, 1, 0, 0, 0, 0, false},
    {Kind::kGlobalAverage, 3, 7, 5, 33, 0, 0, 0, 0, false},
    {Kind::kGlobalAverage, 2, 26, 26, 16, 0, 0, 0, 0, false},
};

TEST(Pooling2D, MatchesTheReferenceOverASweepOfShapes) {
  for (const Case& c : kSweep) {
    SCOPED_TRACE(describe(c));
    Harness t(c);
    Rng rng(static_cast<uint64_t>(c.n * 100 + c.h * 10 + c.w));
    const std::vector<double> x = distinct_values(t.ref.in_count(), rng);
    const std::vector<double> dy = distinct_values(t.ref.out_count(), rng);
    std::copy(x.begin(), x.end(), t.x.begin());
    std::copy(dy.begin(), dy.end(), t.dy.begin());
    // A few roundings per term a value sums: a window's cells (the whole image for global average); a max is a
    // copy of one rounded input, and its backward sums at most the windows that overlap a cell.
    const double terms = static_cast<double>(c.kind == Kind::kGlobalAverage ? c.h * c.w : c.ph * c.pw);
    t.layer.forward(c.n, BatchContext{});
    const std::vector<double> y = t.ref.forward(x);
    EXPECT_TRUE(all_close(t.y, y, 4 * terms)) << "forward";
    t.layer.backward(c.n);
    EXPECT_TRUE(all_close(t.dx, t.ref.backward(x, dy), 4 * terms)) << "backward";
  }
}

TEST(Pooling2D, GradientsMatchFiniteDifferences) {
  for (const Case& c : {kSweep[3], kSweep[7], kSweep[10]}) {
    SCOPED_TRACE(describe(c));
    Harness t(c);
    Rng rng(9);
    const std::vector<double> x = distinct_values(t.ref.in_count(), rng);
    const std::vector<double> r = distinct_values(t.ref.out_count(), rng);
    std::copy(x.begin(), x.end(), t.x.begin());
    std::copy(r.begin(), r.end(), t.dy.begin());
    t.layer.forward(c.n, BatchContext{});
    t.layer.backward(c.n);
    const auto dx = finite_difference_gradient(
        [&](const std::vector<double>& v) {
          const std::vector<double> y = t.ref.forward(v);
          double sum = 0;
          for (size_t i = 0; i < y.size(); ++i) sum += y[i] * r[i];
          return sum;
        },
        x, 1e-7);
    EXPECT_TRUE(all_close(t.dx, dx, 2000)) << "dx";
  }
}

// Max pooling with the producer's relu (kernels/pooling.h) against the reference of relu THEN max pooling: the same
// output; dz = pool_backward(relu(z), dy) * relu'(z), the gradient of the relu's input; and the producer's bias
// gradient, the per-channel sums of dz. The values are in [-0.5, 0.5), so windows whose maximum is negative (all of
// whose relu outputs are 0) occur. The last case is large enough for OpenMP and several blocks of the sums, whose
// result does not depend on the thread count.
TEST(Pooling2D, MaxTakingTheReluBeforeItIsReluThenPoolAndSumsTheBiasGradient) {
  std::vector<Case> cases(kSweep, kSweep + 5);
  cases.push_back({Kind::kMax, 8, 26, 26, 32, 2, 2, 2, 2, false});  // the convnet's first pooling
  for (const Case& c : cases) {
    SCOPED_TRACE(describe(c));
    const Reference ref(c);
    Pooling2D::Options options = options_for(c);
    options.relu = true;
    Pooling2D layer("pool", Shape{c.h, c.w, c.c}, options);
    std::vector<float> bias_grad(c.c, 12345.0F);
    layer.write_producer_bias_gradient(bias_grad.data(), c.c);
    std::vector<float> z(ref.in_count()), y(ref.out_count()), dy(ref.out_count()), dz(ref.in_count());
    std::vector<float> scratch(ref.out_count());
    layer.prepare(c.n, {z.data(), y.data(), dy.data(), dz.data(), scratch.data()});
    Rng rng(static_cast<uint64_t>(c.n * 100 + c.h * 10 + c.c));
    const std::vector<double> zd = distinct_values(ref.in_count(), rng);
    const std::vector<double> dyd = distinct_values(ref.out_count(), rng);
    std::copy(zd.begin(), zd.end(), z.begin());
    std::copy(dyd.begin(), dyd.end(), dy.begin());

    std::vector<double> relu(zd.size());
    std::transform(zd.begin(), zd.end(), relu.begin(), [](double v) { return std::max(v, 0.0); });
    const std::vector<double> y_ref = ref.forward(relu);
    std::vector<double> dz_ref = ref.backward(relu, dyd);
    std::vector<double> bias_ref(c.c, 0.0);
    int64_t negative_windows = 0;
    for (double v : y_ref) negative_windows += v == 0.0 ? 1 : 0;
    for (size_t i = 0; i < dz_ref.size(); ++i) {
      dz_ref[i] *= zd[i] > 0.0 ? 1.0 : 0.0;
      bias_ref[i % c.c] += dz_ref[i];
    }
    EXPECT_GT(negative_windows, 0) << "no window of negative values: the case tests less than it says";

    layer.forward(c.n, BatchContext{.training = true});
    EXPECT_TRUE(all_close(y, y_ref, 4)) << "forward";
    layer.backward(c.n);
    EXPECT_TRUE(all_close(dz, dz_ref, 4)) << "dz";
    EXPECT_TRUE(all_close(bias_grad, bias_ref, 256)) << "bias gradient";

    // Without a producer's bias (use_bias false): the same dz, from the loop that only masks.
    Pooling2D unbiased("pool", Shape{c.h, c.w, c.c}, options);
    std::vector<float> dz_unbiased(ref.in_count());
    unbiased.prepare(c.n, {z.data(), y.data(), dy.data(), dz_unbiased.data(), scratch.data()});
    unbiased.forward(c.n, BatchContext{.training = true});
    unbiased.backward(c.n);
    EXPECT_EQ(dz_unbiased, dz) << "without the bias sums";

    const std::vector<float> first = bias_grad;
    const int threads = omp_get_max_threads();
    for (const int t : {1, 2, 3}) {
      omp_set_num_threads(t);
      layer.backward(c.n);
      EXPECT_EQ(bias_grad, first) << t << " thread(s) summed the bias gradient differently";
    }
    omp_set_num_threads(threads);
  }
}

TEST(Pooling2D, KerasShapesAndNames) {
  Pooling2D::Options o;  // pool (2, 2), strides (2, 2), valid
  EXPECT_EQ(Pooling2D::output_shape_for("p", {26, 26, 32}, o), (Shape{13, 13, 32}));
  EXPECT_EQ(Pooling2D::output_shape_for("p", {27, 27, 32}, o), (Shape{13, 13, 32}));
  o.same_padding = true;
  EXPECT_EQ(Pooling2D::output_shape_for("p", {27, 27, 32}, o), (Shape{14, 14, 32}));
  o.kind = Kind::kGlobalAverage;
  EXPECT_EQ(Pooling2D::output_shape_for("p", {5, 5, 64}, o), (Shape{64}));
  const Pooling2D global("g", {5, 5, 64}, o);
  EXPECT_EQ(global.type_name(), "GlobalAveragePooling2D");
  EXPECT_EQ(global.param_count(), 0);
}

TEST(Pooling2D, RefusesFlatInputsAndWindowsThatDoNotFit) {
  Pooling2D::Options o;
  o.pool_size = {3, 3};
  o.strides = {3, 3};
  try {
    const Pooling2D layer("p", {784}, o);
    ADD_FAILURE() << "a flat input was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("got (None, 784)"), std::string::npos) << e.what();
  }
  try {
    const Pooling2D layer("p", {2, 5, 1}, o);
    ADD_FAILURE() << "a window larger than the input was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not fit in the input (None, 2, 5, 1)"), std::string::npos) << e.what();
  }
  Pooling2D::Options average;
  average.kind = Kind::kAverage;
  average.relu = true;
  try {
    const Pooling2D layer("p", {4, 4, 3}, average);
    ADD_FAILURE() << "average pooling took a relu";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("only max pooling can take the relu"), std::string::npos) << e.what();
  }
  float bias[3] = {};
  Pooling2D plain("p", {4, 4, 3}, Pooling2D::Options{});
  EXPECT_THROW(plain.write_producer_bias_gradient(bias, 3), Error) << "a pooling without the relu";
  Pooling2D::Options with_relu;
  with_relu.relu = true;
  Pooling2D taking("p", {4, 4, 3}, with_relu);
  EXPECT_THROW(taking.write_producer_bias_gradient(bias, 2), Error) << "2 bias values for 3 channels";
}

}  // namespace
}  // namespace shardfit
