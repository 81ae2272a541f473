// Tests of kernels/conv2d: forward, backward data and backward weights against a naive double-precision reference
// over a sweep of shapes (odd sizes, batch 1, strides, dilation, both paddings, with and without bias, each fusable
// activation), central finite differences of the reference, Keras's output sizes and "same" padding, Keras's weight
// shapes and initialiser fans, plans per batch size, and the errors. Under mixed_bfloat16, the same sweep with
// tolerances derived from bf16's 8-bit significand (see "bf16" below), and finite differences in f32 master weights.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/conv2d.h"
#include "kernels/error.h"
#include "kernels/precision.h"
#include "kernels/window.h"
#include "tests/support/numeric_checks.h"

namespace shardfit {
namespace {

using testing::activate;
using testing::all_close;
using testing::derivative_from_output;
using testing::finite_difference_gradient;

struct Case {
  int64_t n, h, w, c, filters, kh, kw, sh, sw, dh, dw;
  bool same;
  bool use_bias;
  ActivationKind activation;
};

std::string describe(const Case& k) {
  return cat("n ", k.n, ", input (", k.h, ", ", k.w, ", ", k.c, "), filters ", k.filters, ", kernel (", k.kh, ", ",
             k.kw, "), strides (", k.sh, ", ", k.sw, "), dilation (", k.dh, ", ", k.dw, "), ",
             k.same ? "same" : "valid", k.use_bias ? ", bias, " : ", no bias, ", activation_name(k.activation));
}

Conv2D::Options options_for(const Case& k, bool bf16 = false) {
  Conv2D::Options o;
  o.bf16 = bf16;
  o.filters = k.filters;
  o.kernel_size = {k.kh, k.kw};
  o.strides = {k.sh, k.sw};
  o.dilation_rate = {k.dh, k.dw};
  o.same_padding = k.same;
  o.use_bias = k.use_bias;
  o.activation = k.activation;
  return o;
}

// The reference, written from the definition: Keras's output sizes and "same" padding (the smaller half first),
// x (n, h, w, c), kernel (kh, kw, c, f) and y (n, oh, ow, f) row-major, double throughout.
struct Reference {
  Case k;
  int64_t oh, ow, top, left;

  explicit Reference(const Case& c) : k(c) {
    const auto span = [](int64_t kernel, int64_t d) { return (kernel - 1) * d + 1; };
    if (c.same) {
      oh = (c.h + c.sh - 1) / c.sh;
      ow = (c.w + c.sw - 1) / c.sw;
      top = std::max<int64_t>((oh - 1) * c.sh + span(c.kh, c.dh) - c.h, 0) / 2;
      left = std::max<int64_t>((ow - 1) * c.sw + span(c.kw, c.dw) - c.w, 0) / 2;
    } else {
      oh = (c.h - span(c.kh, c.dh)) / c.sh + 1;
      ow = (c.w - span(c.kw, c.dw)) / c.sw + 1;
      top = left = 0;
    }
  }
  int64_t kernel_count() const { return k.kh * k.kw * k.c * k.filters; }
  int64_t param_count() const { return kernel_count() + (k.use_bias ? k.filters : 0); }
  int64_t in_count() const { return k.n * k.h * k.w * k.c; }
  int64_t out_count() const { return k.n * oh * ow * k.filters; }

  // Calls term(x index, kernel index, y index) for every product the convolution sums.
  template <typename F>
  void for_each_term(F term) const {
    for (int64_t s = 0; s < k.n; ++s) {
      for (int64_t oy = 0; oy < oh; ++oy) {
        for (int64_t ox = 0; ox < ow; ++ox) {
          for (int64_t ky = 0; ky < k.kh; ++ky) {
            const int64_t iy = oy * k.sh - top + ky * k.dh;
            if (iy < 0 || iy >= k.h) continue;
            for (int64_t kx = 0; kx < k.kw; ++kx) {
              const int64_t ix = ox * k.sw - left + kx * k.dw;
              if (ix < 0 || ix >= k.w) continue;
              for (int64_t ch = 0; ch < k.c; ++ch) {
                for (int64_t f = 0; f < k.filters; ++f) {
                  term(((s * k.h + iy) * k.w + ix) * k.c + ch, ((ky * k.kw + kx) * k.c + ch) * k.filters + f,
                       ((s * oh + oy) * ow + ox) * k.filters + f);
                }
              }
            }
          }
        }
      }
    }
  }

  // y = act(conv(x, kernel) + bias); params: kernel then bias, the model's flat layout.
  std::vector<double> forward(const std::vector<double>& x, const std::vector<double>& params) const {
    std::vector<double> z(out_count(), 0.0);
    if (k.use_bias) {
      for (int64_t i = 0; i < out_count(); ++i) z[i] = params[kernel_count() + i % k.filters];
    }
    for_each_term([&](int64_t xi, int64_t ki, int64_t yi) { z[yi] += x[xi] * params[ki]; });
    for (double& v : z) v = activate(k.activation, v);
    return z;
  }

  // Backward for dy: dx, and d params (kernel then bias); y is forward's output.
  void backward(const std::vector<double>& x, const std::vector<double>& params, const std::vector<double>& y,
                const std::vector<double>& dy, std::vector<double>* dx, std::vector<double>* dparams) const {
    std::vector<double> dz(out_count());
    for (int64_t i = 0; i < out_count(); ++i) dz[i] = dy[i] * derivative_from_output(k.activation, y[i]);
    dx->assign(in_count(), 0.0);
    dparams->assign(param_count(), 0.0);
    for_each_term([&](int64_t xi, int64_t ki, int64_t yi) {
      (*dx)[xi] += params[ki] * dz[yi];
      (*dparams)[ki] += x[xi] * dz[yi];
    });
    if (k.use_bias) {
      for (int64_t i = 0; i < out_count(); ++i) (*dparams)[kernel_count() + i % k.filters] += dz[i];
    }
  }
};

// The layer over buffers of its own, as the model would give them. Under bf16 it also holds the bf16 copy of the
// parameters, which refresh() makes from params as the model does once per step.
struct Harness {
  Case k;
  Reference ref;
  Conv2D layer;
  std::vector<float> params, grads, x, y, dy, dx, scratch;
  std::vector<uint16_t> params_bf16;

  explicit Harness(const Case& c, bool with_dx = true, bool bf16 = false)
      : k(c), ref(c), layer("conv", Shape{c.h, c.w, c.c}, options_for(c, bf16)) {
    params.resize(ref.param_count());
    params_bf16.resize(bf16 ? ref.param_count() : 0);
    grads.assign(ref.param_count(), 12345.0F);  // backward overwrites
    x.resize(ref.in_count());
    y.resize(ref.out_count());
    dy.resize(ref.out_count());
    dx.assign(ref.in_count(), 12345.0F);
    scratch.resize(ref.out_count());
    layer.bind(params.data(), grads.data());
    if (bf16) layer.bind_compute_weights(params_bf16.data());
    LayerBuffers buffers{x.data(), y.data(), dy.data(), with_dx ? dx.data() : nullptr, scratch.data()};
    layer.prepare(c.n, buffers);
  }
  void refresh() {
    for (size_t i = 0; i < params_bf16.size(); ++i) params_bf16[i] = to_bf16(params[i]);
  }
};

// bf16_exact: representable in bf16 too, so the bf16 path's conversions of them are exact.
std::vector<double> random_values(int64_t count, Rng& rng, double low = -1.0, double high = 1.0,
                                  bool bf16_exact = false) {
  std::vector<double> v(count);
  for (double& e : v) {
    e = static_cast<float>(rng.uniform(low, high));  // exactly representable in float
    if (bf16_exact) e = from_bf16(to_bf16(static_cast<float>(e)));
  }
  return v;
}

void fill(std::vector<float>& out, const std::vector<double>& in) { std::copy(in.begin(), in.end(), out.begin()); }

// Forward and both backwards against the reference. The tolerance grows with the length of the sums each output
// is (a product per kernel cell and channel forward and in backward data; per output cell in backward weights).
void check_case(const Case& c) {
  SCOPED_TRACE(describe(c));
  Harness t(c);
  ASSERT_EQ(t.layer.output_shape(), (Shape{t.ref.oh, t.ref.ow, c.filters}));
  Rng rng(static_cast<uint64_t>(c.n * 1000 + c.h * 100 + c.w * 10 + c.filters));
  const std::vector<double> x = random_values(t.ref.in_count(), rng);
  const std::vector<double> params = random_values(t.ref.param_count(), rng, -0.5, 0.5);
  const std::vector<double> dy = random_values(t.ref.out_count(), rng);
  fill(t.x, x);
  fill(t.params, params);
  fill(t.dy, dy);

  t.layer.forward(c.n, BatchContext{});
  const std::vector<double> y = t.ref.forward(x, params);
  const double forward_terms = static_cast<double>(c.kh * c.kw * c.c + 1);
  EXPECT_TRUE(all_close(t.y, y, 8 * std::sqrt(forward_terms) + 16)) << "forward";

  t.layer.backward(c.n);
  std::vector<double> dx;
  std::vector<double> dparams;
  t.ref.backward(x, params, y, dy, &dx, &dparams);
  const double data_terms = static_cast<double>(c.kh * c.kw * c.filters);
  const double weight_terms = static_cast<double>(c.n * t.ref.oh * t.ref.ow);
  EXPECT_TRUE(all_close(t.dx, dx, 8 * std::sqrt(data_terms) + 16)) << "backward data";
  EXPECT_TRUE(all_close({t.grads.data(), static_cast<size_t>(t.ref.kernel_count())},
                        std::span<const double>(dparams.data(), t.ref.kernel_count()),
                        8 * std::sqrt(weight_terms) + 16))
      << "backward weights (kernel)";
  if (c.use_bias) {
    EXPECT_TRUE(all_close({t.grads.data() + t.ref.kernel_count(), static_cast<size_t>(c.filters)},
                          std::span<const double>(dparams.data() + t.ref.kernel_count(), c.filters),
                          8 * std::sqrt(weight_terms) + 16))
        << "backward weights (bias)";
  }
}

using A = ActivationKind;
// n, h, w, c, filters, kh, kw, sh, sw, dh, dw, same, bias, activation
constexpr Case kSweep[] = {
    {1, 5, 5, 1, 1, 3, 3, 1, 1, 1, 1, false, true, A::kLinear},    // batch 1, one channel and filter
    {2, 7, 6, 3, 4, 3, 2, 1, 1, 1, 1, true, true, A::kRelu},       // odd sizes, non-square kernel, same
    {3, 9, 8, 2, 5, 3, 3, 2, 2, 1, 1, true, false, A::kLinear},    // strides, same, no bias
    {2, 9, 9, 3, 2, 3, 3, 2, 3, 1, 1, false, true, A::kRelu},      // unequal strides, valid
    {1, 10, 11, 2, 3, 3, 3, 1, 1, 2, 2, false, true, A::kTanh},    // dilation, valid
    {2, 6, 7, 2, 3, 2, 2, 1, 1, 3, 2, true, true, A::kSigmoid},    // dilation, same, even kernel
    {1, 7, 7, 3, 4, 4, 4, 3, 3, 1, 1, true, true, A::kRelu},       // even kernel, same: the odd pad at the end
    {2, 8, 8, 1, 16, 5, 5, 1, 1, 1, 1, true, true, A::kSigmoid},   // 5x5, same
    {4, 6, 6, 17, 33, 1, 1, 1, 1, 1, 1, false, true, A::kRelu},    // 1x1, odd channel counts
    {5, 12, 12, 16, 32, 3, 3, 1, 1, 1, 1, false, true, A::kRelu},  // blocked channels: oneDNN's direct kernels
    {3, 11, 13, 32, 16, 3, 3, 2, 2, 1, 1, true, false, A::kTanh},  // the same with strides and same
    {2, 28, 28, 1, 8, 3, 3, 1, 1, 1, 1, false, true, A::kRelu},    // an MNIST-sized grey image
    {4, 28, 28, 1, 32, 3, 3, 1, 1, 1, 1, false, true, A::kRelu},   // the convnet's conv1: OpenMP, 11 blocks of sums
    {1, 3, 3, 2, 3, 3, 3, 1, 1, 1, 1, false, true, A::kLinear},    // kernel as large as the input: 1x1 output
    {2, 1, 9, 2, 3, 1, 3, 1, 2, 1, 1, true, true, A::kLinear},     // height 1
};

TEST(Conv2D, MatchesTheReferenceOverASweepOfShapes) {
  for (const Case& c : kSweep) check_case(c);
}

// Central differences of L = sum(y * r) through the reference's forward, against the layer's backward: the
// backward is the derivative of the forward, not only the reference's backward. tanh: no kinks.
TEST(Conv2D, GradientsMatchFiniteDifferences) {
  for (const Case& c : {Case{2, 6, 5, 2, 3, 3, 3, 2, 1, 1, 1, true, true, A::kTanh},
                        Case{1, 7, 7, 2, 2, 2, 3, 1, 1, 2, 2, false, true, A::kLinear}}) {
    SCOPED_TRACE(describe(c));
    Harness t(c);
    Rng rng(3);
    const std::vector<double> x = random_values(t.ref.in_count(), rng);
    const std::vector<double> params = random_values(t.ref.param_count(), rng, -0.5, 0.5);
    const std::vector<double> r = random_values(t.ref.out_count(), rng);
    fill(t.x, x);
    fill(t.params, params);
    fill(t.dy, r);
    t.layer.forward(c.n, BatchContext{});
    t.layer.backward(c.n);
    auto loss = [&](const std::vector<double>& xs, const std::vector<double>& ps) {
      const std::vector<double> y = t.ref.forward(xs, ps);
      double sum = 0;
      for (size_t i = 0; i < y.size(); ++i) sum += y[i] * r[i];
      return sum;
    };
    const auto dx = finite_difference_gradient([&](const std::vector<double>& v) { return loss(v, params); }, x);
    const auto dparams = finite_difference_gradient([&](const std::vector<double>& v) { return loss(x, v); }, params);
    EXPECT_TRUE(all_close(t.dx, dx, 2000)) << "dx";
    EXPECT_TRUE(all_close(t.grads, dparams, 2000)) << "d params";
  }
}

TEST(Conv2D, KerasOutputSizesAndSamePadding) {
  // 28 -> 26 (3x3 valid); same keeps ceil(in / stride); the odd pad goes at the end.
  EXPECT_EQ(window_axis(28, 3, 1, 1, false).out, 26);
  EXPECT_EQ(window_axis(28, 3, 2, 1, false).out, 13);
  EXPECT_EQ(window_axis(28, 3, 1, 2, false).out, 24);
  const WindowAxis same = window_axis(7, 4, 3, 1, true);  // out 3: (3 - 1) * 3 + 4 - 7 = 3 padded, 1 before
  EXPECT_EQ(same.out, 3);
  EXPECT_EQ(same.pad_begin, 1);
  EXPECT_EQ(same.pad_end, 2);
  const WindowAxis none = window_axis(5, 1, 3, 1, true);  // out 2: (2 - 1) * 3 + 1 - 5 < 0: no padding
  EXPECT_EQ(none.out, 2);
  EXPECT_EQ(none.pad_begin + none.pad_end, 0);
  Conv2D::Options o;
  o.filters = 32;
  o.kernel_size = {3, 3};
  EXPECT_EQ(Conv2D::output_shape_for("c", {28, 28, 1}, o), (Shape{26, 26, 32}));
  o.same_padding = true;
  o.strides = {2, 2};
  EXPECT_EQ(Conv2D::output_shape_for("c", {28, 27, 1}, o), (Shape{14, 14, 32}));
}

TEST(Conv2D, WeightShapesAndInitializerFansAreKeras) {
  Conv2D::Options o;
  o.filters = 64;
  o.kernel_size = {3, 5};
  Conv2D layer("conv2d_0", {10, 12, 32}, o);
  ASSERT_EQ(layer.param_count(), 3 * 5 * 32 * 64 + 64);
  const auto shapes = layer.weight_shapes();
  ASSERT_EQ(shapes.size(), 2U);
  EXPECT_EQ(shapes[0].name, "conv2d_0/kernel");
  EXPECT_EQ(shapes[0].shape, (std::vector<int64_t>{3, 5, 32, 64}));
  EXPECT_EQ(shapes[1].shape, (std::vector<int64_t>{64}));
  std::vector<float> params(layer.param_count(), 7.0F);
  std::vector<float> grads(layer.param_count());
  layer.bind(params.data(), grads.data());
  Rng rng(1);
  layer.initialize(rng);
  // glorot_uniform with fan_in = 3 * 5 * 32, fan_out = 3 * 5 * 64: limit sqrt(6 / 2880)
  const double limit = std::sqrt(6.0 / (15.0 * 32 + 15.0 * 64));
  const auto kernel_end = params.end() - 64;
  const float largest =
      *std::max_element(params.begin(), kernel_end, [](float a, float b) { return std::abs(a) < std::abs(b); });
  EXPECT_LE(std::abs(largest), limit);
  EXPECT_GT(std::abs(largest), 0.95 * limit);  // the fans are the receptive field's, not (in, out) alone
  EXPECT_TRUE(std::all_of(kernel_end, params.end(), [](float b) { return b == 0.0F; }));
}

TEST(Conv2D, SeveralBatchSizesAndAFirstLayerWithoutDx) {
  const Case c{3, 6, 6, 2, 4, 3, 3, 1, 1, 1, 1, true, true, A::kRelu};
  Harness t(c, /*with_dx=*/false);
  Rng rng(5);
  fill(t.x, random_values(t.ref.in_count(), rng));
  fill(t.params, random_values(t.ref.param_count(), rng, -0.5, 0.5));
  fill(t.dy, random_values(t.ref.out_count(), rng));
  // Batch 1 over the same buffers: the first sample of batch 3.
  t.layer.prepare(1, {t.x.data(), t.y.data(), t.dy.data(), nullptr, t.scratch.data()});
  t.layer.forward(3, BatchContext{});
  const std::vector<float> y3 = t.y;
  t.layer.forward(1, BatchContext{});
  const int64_t per_sample = t.ref.out_count() / 3;
  for (int64_t i = 0; i < per_sample; ++i) EXPECT_FLOAT_EQ(t.y[i], y3[i]) << i;
  t.layer.backward(3);
  EXPECT_TRUE(std::all_of(t.dx.begin(), t.dx.end(), [](float v) { return v == 12345.0F; })) << "no dx was asked for";
  EXPECT_NE(t.grads[0], 12345.0F);
  EXPECT_THROW(t.layer.forward(2, BatchContext{}), Error);
  // What oneDNN chose, for benchmarks: forward and backward weights, no backward data without a dx.
  const auto names = t.layer.implementations(3);
  ASSERT_EQ(names.size(), 2U);
  EXPECT_EQ(names[0].rfind("forward ", 0), 0U) << names[0];
  EXPECT_GT(names[0].size(), std::string("forward ").size()) << names[0];
  EXPECT_EQ(names[1].rfind("backward weights ", 0), 0U) << names[1];
}

// ---- bf16 (mixed_bfloat16): the convolutions read bf16 x, dz and kernel and accumulate and write f32 ----
//
// Tolerances, in units of the f32 eps 2^-23 as all_close counts them (as tests/kernels/test_dense.cpp derives
// them): one rounding to bf16 is off by at most u = 2^-8 relative, 2^15 eps; a product of two rounded operands by
// 2u + u^2. Against the sum of |terms| of each output as the scale, on top of the f32 checks' own k.
constexpr double kOneBf16Rounding = 32768;         // u = 2^-8
constexpr double kTwoBf16Roundings = 65536 + 128;  // 2u + u^2

bool smooth(ActivationKind a) { return a == ActivationKind::kSigmoid || a == ActivationKind::kTanh; }

// The largest sum of |terms| of any output of forward (bias included), backward data, backward weights and the
// bias gradient, for these x, params and dz.
struct TermScales {
  double y = 0, dx = 0, dkernel = 0, dbias = 0;
};

TermScales term_scales(const Reference& ref, const std::vector<double>& x, const std::vector<double>& params,
                       const std::vector<double>& dz) {
  std::vector<double> y(ref.out_count(), 0.0);
  std::vector<double> dx(ref.in_count(), 0.0);
  std::vector<double> dk(ref.kernel_count(), 0.0);
  std::vector<double> db(ref.k.filters, 0.0);
  ref.for_each_term([&](int64_t xi, int64_t ki, int64_t yi) {
    y[yi] += std::abs(x[xi] * params[ki]);
    dx[xi] += std::abs(params[ki] * dz[yi]);
    dk[ki] += std::abs(x[xi] * dz[yi]);
  });
  for (int64_t i = 0; i < ref.out_count(); ++i) {
    if (ref.k.use_bias) y[i] += std::abs(params[ref.kernel_count() + i % ref.k.filters]);
    db[i % ref.k.filters] += std::abs(dz[i]);
  }
  auto largest = [](const std::vector<double>& v) { return std::max(1e-30, *std::max_element(v.begin(), v.end())); };
  return {largest(y), largest(dx), largest(dk), largest(db)};
}

// One case in bf16. exact: x, params and dy representable in bf16, so the products of x or dy with the kernel are
// exact and the forward must hold to the f32 tolerance (this pins the bf16 path's layouts, its reorders from the
// bf16 copy and its f32 accumulation); the backward too, except for the rounding of dz where sigmoid / tanh make it
// inexact (one rounding). General inputs: two roundings per product, forward and backward; the bias gradient one
// (oneDNN sums it from the bf16 dz). The reference's dz is formed from the layer's own f32 output, so only the
// backward's rounding is measured there.
void check_case_bf16(const Case& c, bool exact) {
  SCOPED_TRACE(describe(c) + (exact ? ", bf16, inputs exact in bf16" : ", bf16, general inputs"));
  Harness t(c, /*with_dx=*/true, /*bf16=*/true);
  Rng rng(static_cast<uint64_t>(c.n * 1000 + c.h * 100 + c.w * 10 + c.filters + (exact ? 7 : 0)));
  const std::vector<double> x = random_values(t.ref.in_count(), rng, -1.0, 1.0, exact);
  const std::vector<double> params = random_values(t.ref.param_count(), rng, -0.5, 0.5, exact);
  const std::vector<double> dy = random_values(t.ref.out_count(), rng, -1.0, 1.0, exact);
  fill(t.x, x);
  fill(t.params, params);
  fill(t.dy, dy);
  t.refresh();

  t.layer.forward(c.n, BatchContext{});
  t.layer.backward(c.n);
  const std::vector<double> y = t.ref.forward(x, params);
  const std::vector<double> layer_y(t.y.begin(), t.y.end());
  std::vector<double> dz(t.ref.out_count());
  for (int64_t i = 0; i < t.ref.out_count(); ++i) dz[i] = dy[i] * derivative_from_output(c.activation, layer_y[i]);
  const TermScales scale = term_scales(t.ref, x, params, dz);
  std::vector<double> dx;
  std::vector<double> dparams;
  t.ref.backward(x, params, layer_y, dy, &dx, &dparams);

  const double forward_k = 8 * std::sqrt(static_cast<double>(c.kh * c.kw * c.c + 1)) + 16;
  const double data_k = 8 * std::sqrt(static_cast<double>(c.kh * c.kw * c.filters)) + 16;
  const double weight_k = 8 * std::sqrt(static_cast<double>(c.n * t.ref.oh * t.ref.ow)) + 16;
  const std::span<const float> dkernel(t.grads.data(), t.ref.kernel_count());
  const std::span<const double> dkernel_ref(dparams.data(), t.ref.kernel_count());
  const std::span<const float> dbias(t.grads.data() + t.ref.kernel_count(), c.use_bias ? c.filters : 0);
  const std::span<const double> dbias_ref(dparams.data() + t.ref.kernel_count(), c.use_bias ? c.filters : 0);
  if (exact) {
    EXPECT_TRUE(all_close(t.y, y, forward_k)) << "forward";
    if (!smooth(c.activation)) {
      EXPECT_TRUE(all_close(t.dx, dx, data_k)) << "backward data";
      EXPECT_TRUE(all_close(dkernel, dkernel_ref, weight_k)) << "backward weights (kernel)";
      EXPECT_TRUE(all_close(dbias, dbias_ref, weight_k)) << "backward weights (bias)";
      return;
    }
  } else {
    EXPECT_TRUE(all_close(t.y, y, forward_k + kTwoBf16Roundings, scale.y)) << "forward";
  }
  const double rounding = exact ? kOneBf16Rounding : kTwoBf16Roundings;
  EXPECT_TRUE(all_close(t.dx, dx, data_k + rounding, scale.dx)) << "backward data";
  EXPECT_TRUE(all_close(dkernel, dkernel_ref, weight_k + rounding, scale.dkernel)) << "backward weights (kernel)";
  EXPECT_TRUE(all_close(dbias, dbias_ref, weight_k + kOneBf16Rounding, scale.dbias)) << "backward weights (bias)";
}

TEST(Conv2DBf16, MatchesTheReferenceOverASweepOfShapes) {
  for (const Case& c : kSweep) {
    check_case_bf16(c, /*exact=*/true);
    check_case_bf16(c, /*exact=*/false);
  }
}

// The gradient check in f32 master weights: central differences of L = sum(y * r) through the double reference at
// inputs exact in bf16, against the f32 gradients the bf16 layer writes. Linear: dz = r is exact in bf16, so the
// f32 check's tolerance holds; tanh adds the one rounding of dz.
TEST(Conv2DBf16, GradientsMatchFiniteDifferences) {
  for (const Case& c : {Case{2, 6, 5, 2, 3, 3, 3, 2, 1, 1, 1, true, true, A::kTanh},
                        Case{1, 7, 7, 2, 2, 2, 3, 1, 1, 2, 2, false, true, A::kLinear},
                        Case{1, 4, 4, 16, 16, 3, 3, 1, 1, 1, 1, true, true, A::kLinear}}) {
    SCOPED_TRACE(describe(c));
    Harness t(c, /*with_dx=*/true, /*bf16=*/true);
    Rng rng(3);
    const std::vector<double> x = random_values(t.ref.in_count(), rng, -1.0, 1.0, true);
    const std::vector<double> params = random_values(t.ref.param_count(), rng, -0.5, 0.5, true);
    const std::vector<double> r = random_values(t.ref.out_count(), rng, -1.0, 1.0, true);
    fill(t.x, x);
    fill(t.params, params);
    fill(t.dy, r);
    t.refresh();
    t.layer.forward(c.n, BatchContext{});
    t.layer.backward(c.n);
    auto loss = [&](const std::vector<double>& xs, const std::vector<double>& ps) {
      const std::vector<double> y = t.ref.forward(xs, ps);
      double sum = 0;
      for (size_t i = 0; i < y.size(); ++i) sum += y[i] * r[i];
      return sum;
    };
    const auto dx = finite_difference_gradient([&](const std::vector<double>& v) { return loss(v, params); }, x);
    const auto dparams = finite_difference_gradient([&](const std::vector<double>& v) { return loss(x, v); }, params);
    if (smooth(c.activation)) {
      std::vector<double> dz(t.ref.out_count());
      for (size_t i = 0; i < dz.size(); ++i) dz[i] = r[i] * derivative_from_output(c.activation, t.y[i]);
      const TermScales scale = term_scales(t.ref, x, params, dz);
      EXPECT_TRUE(all_close(t.dx, dx, 2000 + kOneBf16Rounding, scale.dx)) << "dx";
      EXPECT_TRUE(all_close(t.grads, dparams, 2000 + kOneBf16Rounding, std::max(scale.dkernel, scale.dbias)))
          << "d params";
    } else {
      EXPECT_TRUE(all_close(t.dx, dx, 2000)) << "dx";
      EXPECT_TRUE(all_close(t.grads, dparams, 2000)) << "d params";
    }
  }
}

// The bf16 path does round (a layer that silently ran f32 would pass the tolerances above): on general inputs its
// output and gradients differ from the f32 layer's, and oneDNN names bf16 kernels where the CPU has them.
TEST(Conv2DBf16, RoundsAndRunsBf16Kernels) {
  const Case c{4, 10, 10, 16, 32, 3, 3, 1, 1, 1, 1, true, true, A::kRelu};
  Harness f32(c);
  Harness bf16(c, /*with_dx=*/true, /*bf16=*/true);
  Rng rng(11);
  const std::vector<double> x = random_values(f32.ref.in_count(), rng);
  const std::vector<double> params = random_values(f32.ref.param_count(), rng, -0.5, 0.5);
  const std::vector<double> dy = random_values(f32.ref.out_count(), rng);
  for (Harness* t : {&f32, &bf16}) {
    fill(t->x, x);
    fill(t->params, params);
    fill(t->dy, dy);
    t->refresh();
    t->layer.forward(c.n, BatchContext{});
    t->layer.backward(c.n);
  }
  EXPECT_NE(f32.y, bf16.y);
  EXPECT_NE(f32.dx, bf16.dx);
  EXPECT_NE(f32.grads, bf16.grads);
  if (cpu_has_bf16()) {
    for (const std::string& name : bf16.layer.implementations(c.n)) {
      EXPECT_NE(name.find("bf16"), std::string::npos) << name;
    }
  }
}

// The layer reads the bf16 copy at each call, not a reordered snapshot taken at prepare: after the copy is refreshed
// with new weights (as the model does after each update) forward and backward data use them.
TEST(Conv2DBf16, ReadsTheRefreshedCopy) {
  const Case c{2, 9, 9, 16, 32, 3, 3, 1, 1, 1, 1, false, true, A::kLinear};
  Harness t(c, /*with_dx=*/true, /*bf16=*/true);
  Rng rng(17);
  const std::vector<double> x = random_values(t.ref.in_count(), rng, -1.0, 1.0, true);
  std::vector<double> params = random_values(t.ref.param_count(), rng, -0.5, 0.5, true);
  const std::vector<double> dy = random_values(t.ref.out_count(), rng, -1.0, 1.0, true);
  fill(t.x, x);
  fill(t.params, params);
  fill(t.dy, dy);
  t.refresh();
  t.layer.forward(c.n, BatchContext{});
  t.layer.backward(c.n);
  for (double& p : params) p = -2 * p;  // still exact in bf16
  fill(t.params, params);
  t.refresh();
  t.layer.forward(c.n, BatchContext{});
  t.layer.backward(c.n);
  const std::vector<double> y = t.ref.forward(x, params);
  std::vector<double> dx;
  std::vector<double> dparams;
  t.ref.backward(x, params, y, dy, &dx, &dparams);
  EXPECT_TRUE(all_close(t.y, y, 8 * std::sqrt(3.0 * 3 * 16 + 1) + 16)) << "forward";
  EXPECT_TRUE(all_close(t.dx, dx, 8 * std::sqrt(3.0 * 3 * 32) + 16)) << "backward data";
}

// A bf16 layer without its bf16 weights is an error at prepare, not a crash in the step.
TEST(Conv2DBf16, NeedsItsComputeWeights) {
  const Case c{2, 5, 5, 1, 2, 3, 3, 1, 1, 1, 1, false, true, A::kLinear};
  Conv2D layer("conv", Shape{5, 5, 1}, options_for(c, /*bf16=*/true));
  std::vector<float> params(layer.param_count());
  std::vector<float> grads(layer.param_count());
  std::vector<float> x(2 * 25);
  std::vector<float> y(2 * 9 * 2);
  layer.bind(params.data(), grads.data());
  EXPECT_THROW(layer.prepare(2, {x.data(), y.data(), nullptr, nullptr, nullptr}), Error);
}

TEST(Conv2D, RefusesWhatKerasRefuses) {
  Conv2D::Options o;
  o.filters = 4;
  o.kernel_size = {3, 3};
  auto message = [](auto build) -> std::string {
    try {
      build();
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(
      message([&] { Conv2D("c", {784}, o); }).find("takes (None, height, width, channels) samples, got (None, 784)"),
      std::string::npos);
  EXPECT_NE(message([&] {
              Conv2D("c", {2, 2, 1}, o);
            }).find("does not fit in the input (None, 2, 2, 1)"),
            std::string::npos);
  Conv2D::Options both = o;
  both.strides = {2, 2};
  both.dilation_rate = {2, 2};
  EXPECT_NE(message([&] {
              Conv2D("c", {9, 9, 1}, both);
            }).find("strides > 1 with dilation_rate > 1"),
            std::string::npos);
  Conv2D::Options softmax = o;
  softmax.activation = A::kSoftmax;
  EXPECT_NE(message([&] {
              Conv2D("c", {9, 9, 1}, softmax);
            }).find("cannot fuse activation 'softmax'"),
            std::string::npos);
}

}  // namespace
}  // namespace shardfit
