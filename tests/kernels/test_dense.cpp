// Tests of kernels/dense: every fusable activation x bias, forward and backward against a naive double reference
// and finite differences over a sweep of shapes; plans per batch size, overwriting grads, Keras shapes and init;
// pieces() for benchmarks runs the step itself, bit for bit. Under mixed_bfloat16, the same checks with tolerances
// derived from bf16's 8-bit significand (see "bf16" below).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kernels/dense.h"
#include "kernels/error.h"
#include "kernels/precision.h"
#include "tests/support/numeric_checks.h"

namespace shardfit {
namespace {

using testing::activate;
using testing::all_close;
using testing::derivative_from_output;
using testing::finite_difference_gradient;
using testing::to_double;

constexpr double kFloatEps = 1.1920928955078125e-07;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int64_t kBatchSizes[] = {1, 3, 17, 64};
constexpr int64_t kWidths[] = {1, 5, 10, 33, 64};
constexpr ActivationKind kFusable[] = {ActivationKind::kLinear, ActivationKind::kRelu, ActivationKind::kSigmoid,
                                       ActivationKind::kTanh};

struct Case {
  ActivationKind activation;
  bool use_bias;
  int64_t n;
  int64_t in;
  int64_t out;
};

std::string describe(const Case& c) {
  return activation_name(c.activation) + (c.use_bias ? ", bias" : ", no bias") + ", n " + std::to_string(c.n) +
         ", in " + std::to_string(c.in) + ", out " + std::to_string(c.out);
}

Dense::Options options_for(const Case& c) {
  Dense::Options options;
  options.activation = c.activation;
  options.use_bias = c.use_bias;
  return options;
}

// One layer's parameters and one batch. L = sum(y * r) for the fixed r, so dy = r.
struct Problem {
  Case c;
  std::vector<float> params;  // kernel (in, out) row-major, then bias (out) when used: the model's flat layout
  std::vector<float> x;       // (n, in)
  std::vector<float> r;       // (n, out)

  std::span<const float> kernel() const { return {params.data(), static_cast<size_t>(c.in * c.out)}; }
  std::span<const float> bias() const {
    return c.use_bias ? std::span<const float>(params.data() + c.in * c.out, c.out) : std::span<const float>();
  }
};

// ---- the naive reference, double precision throughout ----

// z (n, out) = x (n, in) . w (in, out) + b (out, or empty).
std::vector<double> preactivation(const Case& c, std::span<const double> x, std::span<const double> w,
                                  std::span<const double> b) {
  std::vector<double> z(c.n * c.out);
  for (int64_t i = 0; i < c.n; ++i) {
    for (int64_t j = 0; j < c.out; ++j) {
      double sum = b.empty() ? 0.0 : b[j];
      for (int64_t k = 0; k < c.in; ++k) sum += x[i * c.in + k] * w[k * c.out + j];
      z[i * c.out + j] = sum;
    }
  }
  return z;
}

// L(x, w, b) = sum(act(x w + b) * r): the scalar whose gradients the layer's backward computes for dy = r.
double reference_loss(const Problem& p, std::span<const double> x, std::span<const double> w,
                      std::span<const double> b) {
  const std::vector<double> z = preactivation(p.c, x, w, b);
  double total = 0.0;
  for (size_t i = 0; i < z.size(); ++i) total += activate(p.c.activation, z[i]) * p.r[i];
  return total;
}

struct ReferenceForward {
  std::vector<double> y;  // (n, out)
  // max over outputs of sum_k |x w| + |b|, at least 1: rounding in the matmul scales with this, not with |y|.
  double scale = 1.0;
};

ReferenceForward reference_forward(const Problem& p) {
  const Case& c = p.c;
  const std::vector<double> x = to_double(p.x);
  const std::vector<double> w = to_double(p.kernel());
  const std::vector<double> b = to_double(p.bias());
  ReferenceForward ref;
  ref.y = preactivation(c, x, w, b);
  for (double& v : ref.y) v = activate(c.activation, v);
  for (int64_t i = 0; i < c.n; ++i) {
    for (int64_t j = 0; j < c.out; ++j) {
      double magnitude = b.empty() ? 0.0 : std::abs(b[j]);
      for (int64_t k = 0; k < c.in; ++k) magnitude += std::abs(x[i * c.in + k] * w[k * c.out + j]);
      ref.scale = std::max(ref.scale, magnitude);
    }
  }
  return ref;
}

// dx = dz w^T, dw = x^T dz, db = column sums of dz, for a given dz (n, out); and, per gradient, the max over its
// elements of the sum of |terms| (at least 1), which is what the rounding of that reduction scales with.
struct ReferenceGradients {
  std::vector<double> dx, dw, db;
  double dx_scale = 1.0, dw_scale = 1.0, db_scale = 1.0;
};

ReferenceGradients gradients_from_dz(const Problem& p, const std::vector<double>& dz) {
  const Case& c = p.c;
  ReferenceGradients g;
  g.dx.assign(c.n * c.in, 0.0);
  g.dw.assign(c.in * c.out, 0.0);
  g.db.assign(c.out, 0.0);
  std::vector<double> dx_mag(g.dx.size()), dw_mag(g.dw.size()), db_mag(g.db.size());
  for (int64_t i = 0; i < c.n; ++i) {
    for (int64_t j = 0; j < c.out; ++j) {
      const double d = dz[i * c.out + j];
      g.db[j] += d;
      db_mag[j] += std::abs(d);
      for (int64_t k = 0; k < c.in; ++k) {
        const double xk = p.x[i * c.in + k];
        const double wk = p.params[k * c.out + j];
        g.dx[i * c.in + k] += d * wk;
        dx_mag[i * c.in + k] += std::abs(d * wk);
        g.dw[k * c.out + j] += xk * d;
        dw_mag[k * c.out + j] += std::abs(xk * d);
      }
    }
  }
  for (double m : dx_mag) g.dx_scale = std::max(g.dx_scale, m);
  for (double m : dw_mag) g.dw_scale = std::max(g.dw_scale, m);
  for (double m : db_mag) g.db_scale = std::max(g.db_scale, m);
  return g;
}

// ---- inputs ----

// bf16_exact: every value drawn is representable in bf16, so converting it to bf16 is exact.
void fill_uniform(std::span<float> values, double lo, double hi, std::mt19937& rng, bool bf16_exact = false) {
  std::uniform_real_distribution<double> dist(lo, hi);
  for (float& v : values) {
    v = static_cast<float>(dist(rng));
    if (bf16_exact) v = from_bf16(to_bf16(v));
  }
}

// Kernel at the glorot scale the layer is initialised with (so pre-activations stay O(1) and sigmoid / tanh are
// not saturated), bias, x and r uniform. For relu, redraws until every |pre-activation| >= 1e-2, far above how
// far finite differences move it: there the reference is smooth and the float result is on the same side of the
// kink as the double one.
// bf16_exact: kernel, bias, x and r all representable in bf16 (the kink test then runs on those very values).
Problem make_problem(const Case& c, uint32_t seed, bool bf16_exact = false) {
  std::mt19937 rng(seed);
  Problem p;
  p.c = c;
  p.params.resize(c.in * c.out + (c.use_bias ? c.out : 0));
  p.x.resize(c.n * c.in);
  p.r.resize(c.n * c.out);
  const double limit = std::sqrt(6.0 / static_cast<double>(c.in + c.out));
  fill_uniform(p.r, -1, 1, rng, bf16_exact);
  auto draw_params = [&] {
    fill_uniform({p.params.data(), static_cast<size_t>(c.in * c.out)}, -limit, limit, rng, bf16_exact);
    if (c.use_bias) {
      fill_uniform({p.params.data() + c.in * c.out, static_cast<size_t>(c.out)}, -0.5, 0.5, rng, bf16_exact);
    }
  };
  draw_params();
  fill_uniform(p.x, -1, 1, rng, bf16_exact);
  if (c.activation != ActivationKind::kRelu) return p;

  for (int attempt = 0; attempt < 1000; ++attempt) {
    const std::vector<double> w = to_double(p.kernel());
    const std::vector<double> bias = to_double(p.bias());
    bool all_rows_clear = true;
    for (int64_t i = 0; i < c.n && all_rows_clear; ++i) {
      std::span<float> row(p.x.data() + i * c.in, c.in);
      bool clear = false;
      for (int tries = 0; tries < 50 && !clear; ++tries) {
        const Case one_row{c.activation, c.use_bias, 1, c.in, c.out};
        const std::vector<double> z = preactivation(one_row, to_double(row), w, bias);
        clear = std::all_of(z.begin(), z.end(), [](double v) { return std::abs(v) >= 1e-2; });
        if (!clear) fill_uniform(row, -1, 1, rng, bf16_exact);
      }
      all_rows_clear = clear;
    }
    if (all_rows_clear) return p;
    draw_params();  // some weight is too small for any row to clear the kink
  }
  ADD_FAILURE() << "could not draw relu inputs away from the kink for " << describe(c);
  return p;
}

// ---- running the layer ----

// What the model owns for one batch size, NaN-filled so that anything the layer fails to write shows up.
struct BatchMemory {
  std::vector<float> x, y, dy, dx, scratch;
  explicit BatchMemory(const Problem& p)
      : x(p.x), y(p.c.n * p.c.out, kNaN), dy(p.r), dx(p.c.n * p.c.in, kNaN), scratch(p.c.n * p.c.out, kNaN) {}
  LayerBuffers buffers(bool with_dx) {
    return {x.data(), y.data(), dy.data(), with_dx ? dx.data() : nullptr, scratch.data()};
  }
};

// The layer's params and grads live in buffers the test owns, as they would in the model's flat buffers.
// Under bf16 the test also makes the bf16 copy of the parameters, as the model would.
Dense::Options options_for(const Case& c, bool bf16) {
  Dense::Options options = options_for(c);
  options.bf16 = bf16;
  return options;
}

struct BoundDense {
  std::vector<float> params;
  std::vector<float> grads;
  std::vector<uint16_t> params_bf16;
  Dense layer;
  explicit BoundDense(const Problem& p, bool bf16 = false)
      : params(p.params), grads(p.params.size(), kNaN), layer("dense", p.c.in, p.c.out, options_for(p.c, bf16)) {
    layer.bind(params.data(), grads.data());
    if (bf16) {
      for (float v : params) params_bf16.push_back(to_bf16(v));
      layer.bind_compute_weights(params_bf16.data());
    }
  }
  std::span<const float> kernel_grad() const { return {grads.data(), kernel_count()}; }
  std::span<const float> bias_grad() const { return {grads.data() + kernel_count(), grads.size() - kernel_count()}; }
  size_t kernel_count() const { return static_cast<size_t>(layer.input_dim() * layer.output_dim()); }
};

// Forward against the reference, then dx / dW / db against the reference applied to the dz the layer must have
// formed from its own float output (so only the backward's rounding is measured). Tolerances: k = reduction length
// + 4 (the worst-case bound of a length-K float sum is K/2 eps times the sum of |terms|; 4 eps covers the
// activation and the dz product), against the sum of |terms| as the scale.
// forward_extra / backward_extra: more k for bf16's roundings of the matmul operands (see "bf16" below); the
// bias sums read the f32 dz and keep their k.
void expect_matches_reference(const Problem& p, const BatchMemory& m, const BoundDense& d, bool with_dx,
                              double forward_extra = 0, double backward_extra = 0) {
  const Case& c = p.c;
  const ReferenceForward fwd = reference_forward(p);
  EXPECT_TRUE(all_close(m.y, fwd.y, static_cast<double>(c.in) + 4 + forward_extra, fwd.scale)) << "y";

  std::vector<double> dz(c.n * c.out);
  for (size_t i = 0; i < dz.size(); ++i) dz[i] = p.r[i] * derivative_from_output(c.activation, m.y[i]);
  const ReferenceGradients g = gradients_from_dz(p, dz);
  if (with_dx) {
    EXPECT_TRUE(all_close(m.dx, g.dx, static_cast<double>(c.out) + 4 + backward_extra, g.dx_scale)) << "dx";
  }
  EXPECT_TRUE(all_close(d.kernel_grad(), g.dw, static_cast<double>(c.n) + 4 + backward_extra, g.dw_scale)) << "dW";
  // The layer sums the bias gradient in double: one rounding of the sum plus the dz roundings.
  if (c.use_bias) {
    EXPECT_TRUE(all_close(d.bias_grad(), g.db, 4, g.db_scale)) << "db";
  }
}

// Central differences of f along at most kProbes coordinates of v, always including the first and the last: enough
// to catch a wrong index or transpose anywhere, at a cost that does not grow with the tensor.
constexpr size_t kProbes = 16;

struct Probe {
  std::vector<size_t> index;
  std::vector<double> derivative;
};

Probe probe(const std::function<double(std::span<const double>)>& f, const std::vector<double>& v, std::mt19937& rng) {
  Probe pr;
  if (v.size() <= kProbes) {
    for (size_t i = 0; i < v.size(); ++i) pr.index.push_back(i);
  } else {
    // Distinct coordinates: a repeated one would be written back unperturbed by its twin.
    std::vector<size_t> inner(v.size() - 2);
    for (size_t i = 0; i < inner.size(); ++i) inner[i] = i + 1;
    std::shuffle(inner.begin(), inner.end(), rng);
    pr.index = {0, v.size() - 1};
    pr.index.insert(pr.index.end(), inner.begin(), inner.begin() + (kProbes - 2));
  }
  std::vector<double> at(pr.index.size());
  for (size_t i = 0; i < at.size(); ++i) at[i] = v[pr.index[i]];
  auto along = [&](const std::vector<double>& sub) {
    std::vector<double> full = v;
    for (size_t i = 0; i < sub.size(); ++i) full[pr.index[i]] = sub[i];
    return f(full);
  };
  // h = 1e-5: the double rounding of L (|L| up to ~1e3) over 2h stays below 1e-8, and the truncation error
  // h^2 f''' / 6 is far below that for these O(1) pre-activations.
  pr.derivative = finite_difference_gradient(along, at, 1e-5);
  return pr;
}

std::vector<float> gather(std::span<const float> values, const Probe& pr) {
  std::vector<float> out;
  for (size_t i : pr.index) out.push_back(values[i]);
  return out;
}

// Finite differences of L at the exact inputs against the layer's float gradients. Beyond the backward's own
// rounding (checked tightly above), the float output's error (in + 4) eps * forward scale reaches dz through
// f'(y) for sigmoid and tanh, with |d f'(y) / dy| <= 2; relu (away from the kink) and linear have no such term.
// Hence k = reduction + 4 + 2 (in + 4) + 1 (the finite differences' own error) on the scale forward scale *
// sum |a| |r| of each gradient.
void expect_matches_finite_differences(const Problem& p, const BoundDense& d, std::span<const float> dx,
                                       std::mt19937& rng, double backward_extra = 0) {
  const Case& c = p.c;
  const std::vector<double> x = to_double(p.x);
  const std::vector<double> w = to_double(p.kernel());
  const std::vector<double> b = to_double(p.bias());
  const double forward_scale = reference_forward(p).scale;
  const bool smooth_derivative = c.activation == ActivationKind::kSigmoid || c.activation == ActivationKind::kTanh;
  const double propagated = smooth_derivative ? 2.0 * (static_cast<double>(c.in) + 4) : 0.0;
  std::vector<double> abs_r(p.r.size());
  for (size_t i = 0; i < abs_r.size(); ++i) abs_r[i] = std::abs(p.r[i]);
  const ReferenceGradients r_scale = gradients_from_dz(p, abs_r);

  const Probe px = probe([&](std::span<const double> v) { return reference_loss(p, v, w, b); }, x, rng);
  const Probe pw = probe([&](std::span<const double> v) { return reference_loss(p, x, v, b); }, w, rng);
  EXPECT_TRUE(all_close(gather(dx, px), px.derivative, static_cast<double>(c.out) + 5 + propagated + backward_extra,
                        forward_scale * r_scale.dx_scale))
      << "dx vs finite differences";
  EXPECT_TRUE(all_close(gather(d.kernel_grad(), pw), pw.derivative,
                        static_cast<double>(c.n) + 5 + propagated + backward_extra, forward_scale * r_scale.dw_scale))
      << "dW vs finite differences";
  if (c.use_bias) {
    const Probe pb = probe([&](std::span<const double> v) { return reference_loss(p, x, w, v); }, b, rng);
    EXPECT_TRUE(all_close(gather(d.bias_grad(), pb), pb.derivative, 5 + propagated, forward_scale * r_scale.db_scale))
        << "db vs finite differences";
  }
}

// Sweeps every shape for one activation, with and without bias.
void check_activation(ActivationKind activation) {
  uint32_t seed = 1;
  std::mt19937 probe_rng(12345);
  for (bool use_bias : {true, false}) {
    for (int64_t n : kBatchSizes) {
      for (int64_t in : kWidths) {
        for (int64_t out : kWidths) {
          const Case c{activation, use_bias, n, in, out};
          SCOPED_TRACE(describe(c));
          const Problem p = make_problem(c, seed++);
          BoundDense d(p);
          BatchMemory m(p);
          d.layer.prepare(n, m.buffers(true));
          d.layer.forward(n, BatchContext{});
          d.layer.backward(n);
          expect_matches_reference(p, m, d, true);
          expect_matches_finite_differences(p, d, m.dx, probe_rng);
        }
      }
    }
  }
}

TEST(Dense, LinearMatchesReferenceAndFiniteDifferences) { check_activation(ActivationKind::kLinear); }
TEST(Dense, ReluMatchesReferenceAndFiniteDifferences) { check_activation(ActivationKind::kRelu); }
TEST(Dense, SigmoidMatchesReferenceAndFiniteDifferences) { check_activation(ActivationKind::kSigmoid); }
TEST(Dense, TanhMatchesReferenceAndFiniteDifferences) { check_activation(ActivationKind::kTanh); }

// ---- bf16 (mixed_bfloat16): the matmuls read bf16 x, dz and kernel and accumulate and write f32 ----
//
// Tolerances, in units of the f32 eps 2^-23 as all_close counts them. bf16 keeps 8 significant bits, so one
// rounding to bf16 is off by at most u = 2^-8 relative: 2^15 eps. A product of two rounded operands is off by at
// most 2u + u^2 = 2^16 + 2^7 eps relative, on top of the f32 sum's K + 4 of the f32 checks, against the same scale
// (sum of |terms|). The product of two bf16 values is exact in f32 (8 + 8 <= 24 bits).
constexpr double kOneBf16Rounding = 32768;         // u = 2^-8
constexpr double kTwoBf16Roundings = 65536 + 128;  // 2u + u^2

bool smooth(ActivationKind a) { return a == ActivationKind::kSigmoid || a == ActivationKind::kTanh; }

// Two checks per shape. (1) Inputs representable in bf16: rounding them is exact, so the forward must hold to the
// f32 tolerance (this pins the bf16 path's layouts, transposes and f32 accumulation), and the backward too except
// for the rounding of dz where sigmoid / tanh make it inexact (one rounding); finite differences likewise.
// (2) General inputs: the bf16-scaled tolerance of two roundings per product, forward and backward. No finite
// differences there: an input rounding may move a relu pre-activation across the kink, where the exact
// derivative is not the layer's.
void check_activation_bf16(ActivationKind activation) {
  uint32_t seed = 7001;
  std::mt19937 probe_rng(54321);
  for (bool use_bias : {true, false}) {
    for (int64_t n : kBatchSizes) {
      for (int64_t in : kWidths) {
        for (int64_t out : kWidths) {
          const Case c{activation, use_bias, n, in, out};
          SCOPED_TRACE(describe(c) + ", bf16");
          {
            const Problem p = make_problem(c, seed++, /*bf16_exact=*/true);
            BoundDense d(p, /*bf16=*/true);
            BatchMemory m(p);
            d.layer.prepare(n, m.buffers(true));
            d.layer.forward(n, BatchContext{});
            d.layer.backward(n);
            const double dz_rounding = smooth(activation) ? kOneBf16Rounding : 0.0;
            SCOPED_TRACE("inputs exact in bf16");
            expect_matches_reference(p, m, d, true, 0.0, dz_rounding);
            expect_matches_finite_differences(p, d, m.dx, probe_rng, dz_rounding);
          }
          {
            const Problem p = make_problem(c, seed++);
            BoundDense d(p, /*bf16=*/true);
            BatchMemory m(p);
            d.layer.prepare(n, m.buffers(true));
            d.layer.forward(n, BatchContext{});
            d.layer.backward(n);
            SCOPED_TRACE("general inputs");
            expect_matches_reference(p, m, d, true, kTwoBf16Roundings, kTwoBf16Roundings);
          }
        }
      }
    }
  }
}

TEST(DenseBf16, LinearMatchesReference) { check_activation_bf16(ActivationKind::kLinear); }
TEST(DenseBf16, ReluMatchesReference) { check_activation_bf16(ActivationKind::kRelu); }
TEST(DenseBf16, SigmoidMatchesReference) { check_activation_bf16(ActivationKind::kSigmoid); }
TEST(DenseBf16, TanhMatchesReference) { check_activation_bf16(ActivationKind::kTanh); }

// The bf16 path does round (a layer that silently ran f32 would pass the tolerances above): on general inputs its
// output differs from the f32 layer's and stays within the bf16 bound, and its pieces name the two conversions.
TEST(DenseBf16, RoundsAndShowsItsConversions) {
  const Case c{ActivationKind::kRelu, true, 17, 64, 33};
  const Problem p = make_problem(c, 99);
  BoundDense f32(p);
  BoundDense bf16(p, true);
  BatchMemory m32(p);
  BatchMemory m16(p);
  f32.layer.prepare(c.n, m32.buffers(true));
  bf16.layer.prepare(c.n, m16.buffers(true));
  f32.layer.forward(c.n, BatchContext{});
  bf16.layer.forward(c.n, BatchContext{});
  EXPECT_NE(m32.y, m16.y);
  std::vector<std::string> names;
  for (const DensePiece& piece : bf16.layer.pieces(c.n)) names.push_back(piece.name);
  // dx last, after the parameter gradients (the gradients-ready point, kernels/dense.cpp).
  // relu's backward, dz's conversion and the bias sums are one pass (kernels/dense.cpp, the gradient pass).
  EXPECT_EQ(names,
            (std::vector<std::string>{"x-to-bf16", "fwd", "relu-bwd+dz-to-bf16+bias-sums", "bwd-weights", "bwd-data"}));
  // tanh keeps oneDNN's eltwise backward, then the conversion and the sums.
  const Case t{ActivationKind::kTanh, true, 17, 64, 33};
  BoundDense tanh(make_problem(t, 98), true);
  BatchMemory mt(make_problem(t, 98));
  tanh.layer.prepare(t.n, mt.buffers(true));
  names.clear();
  for (const DensePiece& piece : tanh.layer.pieces(t.n)) names.push_back(piece.name);
  EXPECT_EQ(names, (std::vector<std::string>{"x-to-bf16", "fwd", "tanh-bwd", "dz-to-bf16", "bwd-weights", "bias-sums",
                                             "bwd-data"}));
}

// bf16 edges (kernels/precision.h note 3): a producer that writes its output as bf16 writes exactly the f32 layer's
// output rounded to bf16 (oneDNN rounds its dst to nearest even, as to_bf16 does), and its backward from that
// bf16 y gives the same gradients, bit for bit; a consumer that reads a bf16 x computes exactly what it computes
// from the f32 x it would have converted itself, and has no conversion piece. So bf16 edges change no value of
// the bf16 model (its tolerance tests above and in test_model then hold for it too).
TEST(DenseBf16, Bf16EdgesChangeNoValue) {
  for (ActivationKind activation : {ActivationKind::kRelu, ActivationKind::kLinear}) {
    for (bool use_bias : {true, false}) {
      for (int64_t n : {1, 17, 64}) {
        for (int64_t width : {5, 64, 130}) {
          const Case c{activation, use_bias, n, 33, width};
          SCOPED_TRACE(describe(c));
          const Problem p = make_problem(c, 4000 + static_cast<uint32_t>(n + width));
          BoundDense f32_edge(p, true);
          BoundDense bf16_edge(p, true);
          BatchMemory mf(p);
          BatchMemory mb(p);
          std::vector<uint16_t> x_bf16(p.x.size());
          for (size_t i = 0; i < x_bf16.size(); ++i) x_bf16[i] = to_bf16(p.x[i]);
          std::vector<uint16_t> y_bf16(mb.y.size(), 0xFFFF);  // a NaN where the layer writes nothing
          LayerBuffers b = mb.buffers(true);
          b.x = nullptr;
          b.x_bf16 = x_bf16.data();
          b.y = nullptr;
          b.y_bf16 = y_bf16.data();
          f32_edge.layer.prepare(n, mf.buffers(true));
          bf16_edge.layer.prepare(n, b);
          f32_edge.layer.forward(n, BatchContext{});
          bf16_edge.layer.forward(n, BatchContext{});
          for (size_t i = 0; i < y_bf16.size(); ++i) ASSERT_EQ(y_bf16[i], to_bf16(mf.y[i])) << "y " << i;
          f32_edge.layer.backward(n);
          bf16_edge.layer.backward(n);
          EXPECT_EQ(std::vector<float>(bf16_edge.grads), std::vector<float>(f32_edge.grads)) << "dW, db";
          EXPECT_EQ(mb.dx, mf.dx) << "dx";
          std::vector<std::string> names;
          for (const DensePiece& piece : bf16_edge.layer.pieces(n)) names.push_back(piece.name);
          EXPECT_EQ(std::count(names.begin(), names.end(), "x-to-bf16"), 0);
          EXPECT_EQ(names.front(), "fwd");
        }
      }
    }
  }
}

// The gradient pass against the passes it replaces: relu backward from y's sign (f32 or bf16), to_bf16 of dz and
// column_sums of the f32 dz, bit for bit, over shapes that leave partial column blocks (of 512 columns on one
// thread, 64 on several) and cross the threshold where it runs threaded.
TEST(DenseBf16, GradientPassMatchesSeparatePasses) {
  std::mt19937 rng(77);
  for (const auto& [n, out] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 63}, {17, 65}, {2, 1100}, {100, 513}}) {
    std::vector<float> dy(n * out);
    std::vector<float> y(n * out);
    fill_uniform(dy, -1, 1, rng);
    fill_uniform(y, -1, 1, rng);
    y[0] = 0.0F;  // relu' is 0 at 0
    std::vector<uint16_t> y_bf16(y.size());
    for (size_t i = 0; i < y.size(); ++i) y_bf16[i] = to_bf16(y[i]);
    for (int mode = 0; mode < 3; ++mode) {  // relu from f32 y, relu from bf16 y, linear
      SCOPED_TRACE("n " + std::to_string(n) + ", out " + std::to_string(out) + ", mode " + std::to_string(mode));
      std::vector<float> dz(dy.size());
      for (size_t i = 0; i < dz.size(); ++i) dz[i] = mode == 2 || y[i] > 0.0F ? dy[i] : 0.0F;
      std::vector<float> expected_sums(out);
      column_sums(dz.data(), n, out, expected_sums.data());
      std::vector<uint16_t> dz_bf16(dz.size());
      std::vector<float> sums(out, kNaN);
      relu_backward_to_bf16(dy.data(), mode == 0 ? y.data() : nullptr, mode == 1 ? y_bf16.data() : nullptr, n, out,
                            dz_bf16.data(), sums.data());
      for (size_t i = 0; i < dz.size(); ++i) ASSERT_EQ(dz_bf16[i], to_bf16(dz[i])) << i;
      EXPECT_EQ(sums, expected_sums);
    }
  }
}

// A layer given a bf16 edge it cannot use is an error at prepare: an f32 layer any, sigmoid / tanh a bf16 output.
TEST(DenseBf16, RefusesBf16EdgesItCannotUse) {
  for (const auto& [activation, bf16] : std::vector<std::pair<ActivationKind, bool>>{
           {ActivationKind::kRelu, false}, {ActivationKind::kSigmoid, true}, {ActivationKind::kTanh, true}}) {
    const Case c{activation, true, 3, 5, 4};
    const Problem p = make_problem(c, 6);
    BoundDense d(p, bf16);
    EXPECT_EQ(d.layer.writes_bf16_output(), false);
    EXPECT_EQ(d.layer.reads_bf16_input(), bf16);
    BatchMemory m(p);
    std::vector<uint16_t> y_bf16(m.y.size());
    LayerBuffers b = m.buffers(true);
    b.y = nullptr;
    b.y_bf16 = y_bf16.data();
    EXPECT_THROW(d.layer.prepare(c.n, b), Error) << activation_name(activation);
  }
}

// A bf16 layer without its bf16 weights is an error at prepare, not a crash in the step.
TEST(DenseBf16, NeedsItsComputeWeights) {
  const Case c{ActivationKind::kLinear, true, 3, 5, 4};
  const Problem p = make_problem(c, 5);
  std::vector<float> params = p.params;
  std::vector<float> grads(params.size());
  Dense layer("dense", c.in, c.out, options_for(c, true));
  layer.bind(params.data(), grads.data());
  BatchMemory m(p);
  EXPECT_THROW(layer.prepare(c.n, m.buffers(true)), Error);
}

// The array conversion (the model's weight refresh, Dense's x and dz) rounds as the scalar to_bf16 does on the edge
// cases: nearest, ties to even, NaN stays NaN, infinities and signed zeros kept.
TEST(Bf16, ConversionMatchesToBf16) {
  std::vector<float> values = {0.0F,
                               -0.0F,
                               1.0F,
                               -1.5F,
                               std::bit_cast<float>(0x3F808000U),  // 1 + 2^-8: a tie, rounds down to even
                               std::bit_cast<float>(0x3F818000U),  // a tie that rounds up to even
                               std::bit_cast<float>(0x3F808001U),  // just above a tie: up
                               std::numeric_limits<float>::infinity(),
                               -std::numeric_limits<float>::infinity(),
                               std::numeric_limits<float>::max(),
                               1e-30F};
  std::mt19937 rng(3);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 4096; ++i) {
    const float v = std::bit_cast<float>(bits(rng));
    if (!std::isnan(v) && std::fpclassify(v) != FP_SUBNORMAL) values.push_back(v);
  }
  values.push_back(kNaN);
  std::vector<uint16_t> converted(values.size(), 0xFFFF);
  to_bf16(values.data(), converted.data(), static_cast<int64_t>(values.size()));
  for (size_t i = 0; i + 1 < values.size(); ++i) {
    ASSERT_EQ(converted[i], to_bf16(values[i]))
        << "value " << values[i] << " (bits " << std::bit_cast<uint32_t>(values[i]) << ")";
  }
  EXPECT_TRUE(std::isnan(from_bf16(converted.back())));
  EXPECT_EQ(to_bf16(1.0F), 0x3F80);
  EXPECT_EQ(to_bf16(std::bit_cast<float>(0x3F808000U)), 0x3F80);
  EXPECT_EQ(to_bf16(std::bit_cast<float>(0x3F818000U)), 0x3F82);
  EXPECT_EQ(from_bf16(0x3F80), 1.0F);
}

// The array versions (AVX-512 or baseline clone, threaded over long arrays) give the scalar functions' bits, over
// lengths that leave every vector tail, and the bf16 sum adds in f32 and rounds once.
TEST(Bf16, ArrayConversionsAndSumMatchTheScalarOnes) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> uniform(-3.0F, 3.0F);
  for (const int64_t count : {0, 1, 15, 17, 100003}) {
    std::vector<float> values(static_cast<size_t>(count));
    for (float& v : values) v = std::ldexp(uniform(rng), static_cast<int>(rng() % 20) - 10);
    if (count > 1) values[1] = kNaN;
    std::vector<uint16_t> half(values.size(), 0xFFFF);
    to_bf16(values.data(), half.data(), count);
    std::vector<float> back(values.size(), -1.0F);
    from_bf16(half.data(), back.data(), count);
    std::vector<uint16_t> sum(half.rbegin(), half.rend());
    add_bf16(half.data(), sum.data(), count);
    for (size_t i = 0; i < values.size(); ++i) {
      ASSERT_EQ(half[i], to_bf16(values[i])) << i << " of " << count;
      ASSERT_EQ(std::bit_cast<uint32_t>(back[i]), std::bit_cast<uint32_t>(from_bf16(half[i]))) << i;
      const uint16_t expected = to_bf16(from_bf16(half[i]) + from_bf16(half[values.size() - 1 - i]));
      ASSERT_EQ(std::isnan(from_bf16(sum[i])), std::isnan(from_bf16(expected))) << i;
      if (!std::isnan(from_bf16(expected))) {
        ASSERT_EQ(sum[i], expected) << i;
      }
    }
  }
}

// The policy's names, and the fallback: bf16 asked for on a CPU without it runs float32 with one warning line.
TEST(Bf16, PolicyNamesAndFallback) {
  EXPECT_EQ(parse_dtype_policy("float32"), DtypePolicy::kFloat32);
  EXPECT_EQ(parse_dtype_policy("mixed_bfloat16"), DtypePolicy::kMixedBfloat16);
  EXPECT_THROW(parse_dtype_policy("bfloat16"), Error);
  EXPECT_EQ(dtype_policy_name(DtypePolicy::kMixedBfloat16), "mixed_bfloat16");
  std::string warning = "stale";
  EXPECT_EQ(runnable_dtype_policy(DtypePolicy::kMixedBfloat16, true, &warning), DtypePolicy::kMixedBfloat16);
  EXPECT_EQ(warning, "");
  EXPECT_EQ(runnable_dtype_policy(DtypePolicy::kFloat32, false, &warning), DtypePolicy::kFloat32);
  EXPECT_EQ(warning, "");
  EXPECT_EQ(runnable_dtype_policy(DtypePolicy::kMixedBfloat16, false, &warning), DtypePolicy::kFloat32);
  EXPECT_NE(warning.find("training in float32"), std::string::npos) << warning;
}

// The first layer has no dx to write: its parameter gradients must still be right, and nothing else written.
TEST(Dense, FirstLayerWithoutDx) {
  uint32_t seed = 500;
  for (ActivationKind activation : kFusable) {
    for (bool use_bias : {true, false}) {
      for (int64_t n : {1, 17}) {
        const Case c{activation, use_bias, n, 10, 5};
        SCOPED_TRACE(describe(c));
        const Problem p = make_problem(c, seed++);
        BoundDense d(p);
        BatchMemory m(p);
        d.layer.prepare(n, m.buffers(false));
        d.layer.forward(n, BatchContext{});
        d.layer.backward(n);
        expect_matches_reference(p, m, d, false);
        for (float v : m.dx) ASSERT_TRUE(std::isnan(v)) << "dx written though not prepared";
      }
    }
  }
}

// Plans are cached per batch size over their own buffers: 7, then 3, then 7 again with new data, each right.
TEST(Dense, SeveralBatchSizesOnOneLayer) {
  for (ActivationKind activation : kFusable) {
    for (bool use_bias : {true, false}) {
      const Case c7{activation, use_bias, 7, 10, 33};
      const Case c3{activation, use_bias, 3, 10, 33};
      SCOPED_TRACE(describe(c7));
      Problem p7 = make_problem(c7, 31);
      Problem p3 = make_problem(c3, 32);
      p3.params = p7.params;  // one layer, one set of weights
      BoundDense d(p7);
      BatchMemory m7(p7);
      BatchMemory m3(p3);
      d.layer.prepare(7, m7.buffers(true));
      d.layer.prepare(3, m3.buffers(true));

      d.layer.forward(7, BatchContext{});
      d.layer.backward(7);
      expect_matches_reference(p7, m7, d, true);

      d.layer.forward(3, BatchContext{});
      d.layer.backward(3);
      expect_matches_reference(p3, m3, d, true);

      // New samples in the 7-row buffers: the cached plan must read them, not a copy.
      Problem p7b = make_problem(c7, 33);
      p7b.params = p7.params;
      std::copy(p7b.x.begin(), p7b.x.end(), m7.x.begin());
      std::copy(p7b.r.begin(), p7b.r.end(), m7.dy.begin());
      std::fill(m7.y.begin(), m7.y.end(), kNaN);
      std::fill(m7.dx.begin(), m7.dx.end(), kNaN);
      d.layer.forward(7, BatchContext{});
      d.layer.backward(7);
      expect_matches_reference(p7b, m7, d, true);

      // New weights in the bound buffer: likewise read in place.
      Problem p3b = p3;
      std::mt19937 rng(34);
      fill_uniform(p3b.params, -0.5, 0.5, rng);
      std::copy(p3b.params.begin(), p3b.params.end(), d.params.begin());
      d.layer.forward(3, BatchContext{});
      d.layer.backward(3);
      expect_matches_reference(p3b, m3, d, true);
    }
  }
}

// backward overwrites dx and the parameter gradients: twice gives the same values, not double.
TEST(Dense, BackwardOverwritesGradients) {
  for (ActivationKind activation : kFusable) {
    for (bool use_bias : {true, false}) {
      const Case c{activation, use_bias, 17, 33, 10};
      SCOPED_TRACE(describe(c));
      const Problem p = make_problem(c, 77);
      BoundDense d(p);
      std::fill(d.grads.begin(), d.grads.end(), 1000.0F);  // stale values from a previous step
      BatchMemory m(p);
      std::fill(m.dx.begin(), m.dx.end(), 1000.0F);
      d.layer.prepare(c.n, m.buffers(true));
      d.layer.forward(c.n, BatchContext{});
      d.layer.backward(c.n);
      expect_matches_reference(p, m, d, true);
      const std::vector<float> grads = d.grads;
      const std::vector<float> dx = m.dx;
      d.layer.backward(c.n);
      EXPECT_EQ(d.grads, grads);
      EXPECT_EQ(m.dx, dx);
    }
  }
}

TEST(Dense, InferenceOnlyPlanHasNoBackward) {
  const Case c{ActivationKind::kTanh, true, 3, 5, 10};
  const Problem p = make_problem(c, 5);
  BoundDense d(p);
  BatchMemory m(p);
  LayerBuffers buffers{m.x.data(), m.y.data(), nullptr, nullptr, nullptr};
  d.layer.prepare(c.n, buffers);
  d.layer.forward(c.n, BatchContext{});
  const ReferenceForward fwd = reference_forward(p);
  EXPECT_TRUE(all_close(m.y, fwd.y, static_cast<double>(c.in) + 4, fwd.scale));
  EXPECT_THROW(d.layer.backward(c.n), Error);
}

TEST(Dense, UnpreparedBatchSizeIsAnError) {
  const Case c{ActivationKind::kRelu, true, 3, 5, 10};
  const Problem p = make_problem(c, 6);
  BoundDense d(p);
  BatchMemory m(p);
  EXPECT_THROW(d.layer.forward(3, BatchContext{}), Error);
  d.layer.prepare(3, m.buffers(true));
  EXPECT_THROW(d.layer.forward(4, BatchContext{}), Error);
  EXPECT_THROW(d.layer.backward(4), Error);
  d.layer.forward(3, BatchContext{});
  d.layer.forget_plans();
  EXPECT_THROW(d.layer.forward(3, BatchContext{}), Error);
  // Rebinding moves the parameters, so every plan is stale.
  d.layer.prepare(3, m.buffers(true));
  d.layer.bind(d.params.data(), d.grads.data());
  EXPECT_THROW(d.layer.forward(3, BatchContext{}), Error);
}

TEST(Dense, RejectsUnfusableActivationsAndEmptySizes) {
  for (ActivationKind activation : {ActivationKind::kSoftmax, ActivationKind::kGelu}) {
    Dense::Options options;
    options.activation = activation;
    EXPECT_THROW(Dense("d", 4, 3, options), Error) << activation_name(activation);
  }
  EXPECT_THROW(Dense("d", 0, 3, Dense::Options{}), Error);
  EXPECT_THROW(Dense("d", 4, 0, Dense::Options{}), Error);
  Dense unbound("d", 4, 3, Dense::Options{});
  std::vector<float> x(4), y(3);
  EXPECT_THROW(unbound.prepare(1, LayerBuffers{x.data(), y.data(), nullptr, nullptr, nullptr}), Error);
}

// Bit patterns, so that -0 vs +0 or a NaN payload would count as a difference.
std::vector<uint32_t> bits(std::span<const float> values) {
  std::vector<uint32_t> out;
  for (float v : values) out.push_back(std::bit_cast<uint32_t>(v));
  return out;
}

// pieces() is what bench/dense_bench times: run in order, they must be the step itself, bit for bit (y, dx,
// scratch, dW, db), with the names, matmul sizes and order forward() then backward() use.
TEST(Dense, PiecesInOrderAreForwardAndBackwardBitForBit) {
  uint32_t seed = 900;
  for (ActivationKind activation : kFusable) {
    for (bool use_bias : {true, false}) {
      for (bool with_dx : {true, false}) {
        const Case c{activation, use_bias, 17, 33, 10};
        SCOPED_TRACE(describe(c) + (with_dx ? ", dx" : ", no dx"));
        const Problem p = make_problem(c, seed++);
        BoundDense d(p);
        BatchMemory m(p);
        d.layer.prepare(c.n, m.buffers(with_dx));
        d.layer.forward(c.n, BatchContext{});
        d.layer.backward(c.n);
        const BatchMemory by_step = m;
        const std::vector<float> grads_by_step = d.grads;

        std::fill(m.y.begin(), m.y.end(), kNaN);
        std::fill(m.dx.begin(), m.dx.end(), kNaN);
        std::fill(m.scratch.begin(), m.scratch.end(), kNaN);
        std::fill(d.grads.begin(), d.grads.end(), kNaN);
        const std::vector<DensePiece> pieces = d.layer.pieces(c.n);
        for (const DensePiece& piece : pieces) piece.run();
        EXPECT_EQ(bits(m.y), bits(by_step.y)) << "y";
        EXPECT_EQ(bits(m.dx), bits(by_step.dx)) << "dx";
        EXPECT_EQ(bits(m.scratch), bits(by_step.scratch)) << "dz scratch";
        EXPECT_EQ(bits(d.grads), bits(grads_by_step)) << "dW, db";

        std::vector<std::string> names;
        for (const DensePiece& piece : pieces) names.push_back(piece.name);
        std::vector<std::string> expected = {"fwd"};
        if (activation != ActivationKind::kLinear) expected.push_back(activation_name(activation) + "-bwd");
        // dx last: the parameter gradients are final before it (the gradients-ready point, kernels/layer.h).
        expected.push_back("bwd-weights");
        if (use_bias) expected.push_back("bias-sums");
        if (with_dx) expected.push_back("bwd-data");
        ASSERT_EQ(names, expected);
        for (const DensePiece& piece : pieces) {
          SCOPED_TRACE(piece.name);
          EXPECT_EQ(piece.backward, piece.name != "fwd");
          EXPECT_FALSE(piece.impl.empty());
          std::vector<int64_t> mkn = {piece.m, piece.k, piece.n};
          if (piece.name == "fwd") {
            EXPECT_EQ(mkn, (std::vector<int64_t>{c.n, c.in, c.out}));
          } else if (piece.name == "bwd-data") {
            EXPECT_EQ(mkn, (std::vector<int64_t>{c.n, c.out, c.in}));
          } else if (piece.name == "bwd-weights") {
            EXPECT_EQ(mkn, (std::vector<int64_t>{c.in, c.n, c.out}));
          } else {
            EXPECT_EQ(mkn, (std::vector<int64_t>{0, 0, 0}));
          }
        }
      }
    }
  }
}

// An inference-only plan has one piece; an unprepared batch size has none to give.
TEST(Dense, PiecesOfInferencePlanAndUnpreparedSize) {
  const Case c{ActivationKind::kRelu, true, 3, 5, 10};
  const Problem p = make_problem(c, 7);
  BoundDense d(p);
  BatchMemory m(p);
  EXPECT_THROW(d.layer.pieces(3), Error);
  d.layer.prepare(c.n, LayerBuffers{m.x.data(), m.y.data(), nullptr, nullptr, nullptr});
  const std::vector<DensePiece> pieces = d.layer.pieces(c.n);
  ASSERT_EQ(pieces.size(), 1U);
  EXPECT_EQ(pieces[0].name, "fwd");
  EXPECT_FALSE(pieces[0].backward);
  pieces[0].run();
  const ReferenceForward fwd = reference_forward(p);
  EXPECT_TRUE(all_close(m.y, fwd.y, static_cast<double>(c.in) + 4, fwd.scale));
}

// Keras's weight list: kernel (in, out) then bias (out); the flat layout matches it.
TEST(Dense, WeightShapesAreKeras) {
  Dense::Options with_bias;
  Dense d("hidden", 33, 10, with_bias);
  EXPECT_EQ(d.kind(), "dense");
  EXPECT_EQ(d.param_count(), 33 * 10 + 10);
  const std::vector<WeightShape> shapes = d.weight_shapes();
  ASSERT_EQ(shapes.size(), 2U);
  EXPECT_EQ(shapes[0].name, "hidden/kernel");
  EXPECT_EQ(shapes[0].shape, (std::vector<int64_t>{33, 10}));
  EXPECT_EQ(shapes[1].name, "hidden/bias");
  EXPECT_EQ(shapes[1].shape, (std::vector<int64_t>{10}));

  Dense::Options no_bias;
  no_bias.use_bias = false;
  Dense e("out", 5, 1, no_bias);
  EXPECT_EQ(e.param_count(), 5);
  const std::vector<WeightShape> kernel_only = e.weight_shapes();
  ASSERT_EQ(kernel_only.size(), 1U);
  EXPECT_EQ(kernel_only[0].name, "out/kernel");
  EXPECT_EQ(kernel_only[0].shape, (std::vector<int64_t>{5, 1}));
}

// glorot_uniform: U(-l, l), l = sqrt(6 / (in + out)); bias zeros; reproducible from the seed.
TEST(Dense, InitializeGlorotUniformKernelAndZeroBias) {
  constexpr std::pair<int64_t, int64_t> kShapes[] = {{1, 1}, {5, 10}, {33, 64}, {784, 128}};
  for (auto [in, out] : kShapes) {
    SCOPED_TRACE("in " + std::to_string(in) + ", out " + std::to_string(out));
    Dense d("d", in, out, Dense::Options{});
    std::vector<float> params(d.param_count(), kNaN);
    std::vector<float> grads(d.param_count());
    d.bind(params.data(), grads.data());
    Rng rng(2024);
    d.initialize(rng);

    const double limit = std::sqrt(6.0 / static_cast<double>(in + out));
    const int64_t count = in * out;
    double sum = 0.0;
    double largest = 0.0;
    for (int64_t i = 0; i < count; ++i) {
      ASSERT_LE(std::abs(params[i]), limit * (1 + kFloatEps)) << "kernel element " << i;  // float rounding of l
      sum += params[i];
      largest = std::max(largest, static_cast<double>(std::abs(params[i])));
    }
    for (int64_t j = 0; j < out; ++j) ASSERT_EQ(params[count + j], 0.0F) << "bias element " << j;
    if (count >= 1000) {
      // U(-l, l) has standard deviation l / sqrt(3): the mean is within 5 sigma / sqrt(count) of 0, and the
      // largest |w| reaches 0.99 l (missing with probability 0.99^count).
      EXPECT_LT(std::abs(sum / count), 5 * limit / std::sqrt(3.0 * count));
      EXPECT_GT(largest, 0.99 * limit);
    }

    std::vector<float> again(d.param_count(), kNaN);
    d.bind(again.data(), grads.data());
    Rng same(2024);
    d.initialize(same);
    EXPECT_EQ(again, params);
  }
}

}  // namespace
}  // namespace shardfit
