// Tests of kernels/dropout: identity cases, inverted scaling and dx = dy * mask, drop statistics, and a mask that
// depends only on (seed, layer, step, global row, unit), so a batch split by first_row draws the whole batch's mask.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/dropout.h"
#include "kernels/error.h"
#include "tests/support/numeric_checks.h"

namespace shardfit {
namespace {

using testing::all_close;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int64_t kBatchSizes[] = {1, 3, 17, 64};
constexpr int64_t kWidths[] = {1, 5, 10, 33, 64};
constexpr float kRates[] = {0.1F, 0.25F, 0.5F, 0.9F};

// One batch as the model lays it out. x is never 0, so y == 0 exactly where a unit was dropped.
struct Batch {
  int64_t n = 0;
  int64_t d = 0;
  std::vector<float> x, y, dy, dx, scratch;
  LayerBuffers buffers() { return {x.data(), y.data(), dy.data(), dx.data(), scratch.data()}; }
};

Batch make_batch(int64_t n, int64_t d, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> magnitude(0.5, 2.0);
  std::uniform_real_distribution<double> unit(-1, 1);
  Batch b;
  b.n = n;
  b.d = d;
  for (int64_t i = 0; i < n * d; ++i) {
    b.x.push_back(static_cast<float>(magnitude(rng) * (unit(rng) < 0 ? -1 : 1)));
    b.dy.push_back(static_cast<float>(unit(rng)));
  }
  b.y.assign(n * d, kNaN);
  b.dx.assign(n * d, kNaN);
  b.scratch.assign(n * d, kNaN);
  return b;
}

BatchContext training(uint64_t seed, uint64_t step, int64_t first_row = 0) {
  BatchContext ctx;
  ctx.training = true;
  ctx.seed = seed;
  ctx.step = step;
  ctx.first_row = first_row;
  return ctx;
}

// Forward then backward on a fresh layer over b; returns the layer's kept / dropped decisions as 0/1.
std::vector<int> run(Dropout& layer, Batch& b, const BatchContext& ctx) {
  layer.prepare(b.n, b.buffers());
  layer.forward(b.n, ctx);
  layer.backward(b.n);
  std::vector<int> kept(b.x.size());
  for (size_t i = 0; i < kept.size(); ++i) kept[i] = b.y[i] != 0.0F;
  return kept;
}

// Fraction of positions where two masks disagree.
double disagreement(const std::vector<int>& a, const std::vector<int>& b) {
  int64_t differ = 0;
  for (size_t i = 0; i < a.size(); ++i) differ += a[i] != b[i];
  return static_cast<double>(differ) / static_cast<double>(a.size());
}

// 5 standard deviations of the mean of `count` independent Bernoulli(p) draws: a false alarm once in ~2 million.
double five_sigma(double p, int64_t count) { return 5.0 * std::sqrt(p * (1 - p) / static_cast<double>(count)); }

TEST(Dropout, RateZeroIsIdentity) {
  for (int64_t n : kBatchSizes) {
    for (int64_t d : kWidths) {
      SCOPED_TRACE("n " + std::to_string(n) + ", d " + std::to_string(d));
      Batch b = make_batch(n, d, 1);
      Dropout layer("drop", d, 0.0F, 0);
      run(layer, b, training(7, 3));
      EXPECT_EQ(b.y, b.x);
      EXPECT_EQ(b.dx, b.dy);
    }
  }
}

TEST(Dropout, InferenceIsIdentity) {
  for (float rate : kRates) {
    SCOPED_TRACE("rate " + std::to_string(rate));
    Batch b = make_batch(17, 33, 2);
    Dropout layer("drop", 33, rate, 0);
    BatchContext ctx = training(7, 3);
    ctx.training = false;
    run(layer, b, ctx);
    EXPECT_EQ(b.y, b.x);
    EXPECT_EQ(b.dx, b.dy);
  }
  // The model's evaluation plans have no dy and no scratch.
  Batch b = make_batch(3, 5, 3);
  Dropout layer("drop", 5, 0.5F, 0);
  layer.prepare(3, LayerBuffers{b.x.data(), b.y.data(), nullptr, nullptr, nullptr});
  layer.forward(3, BatchContext{});
  EXPECT_EQ(b.y, b.x);
}

// Against the double-precision reference y = x * keep / (1 - rate), dx = dy * keep / (1 - rate), where keep is the
// layer's own mask(seed, step, global row, unit): the scale is float(1 / (1 - rate)), then one product, so two
// roundings (k = 2, relative: dropped units must be exactly 0). And the mask is the documented one: 0 or the scale.
TEST(Dropout, TrainingScalesKeptUnitsAndZeroesDropped) {
  uint32_t seed = 10;
  for (float rate : kRates) {
    for (int64_t n : kBatchSizes) {
      for (int64_t d : kWidths) {
        SCOPED_TRACE("rate " + std::to_string(rate) + ", n " + std::to_string(n) + ", d " + std::to_string(d));
        Batch b = make_batch(n, d, seed++);
        Dropout layer("drop", d, rate, 4);
        EXPECT_EQ(layer.rate(), rate);
        const BatchContext ctx = training(99, 12, 5);
        run(layer, b, ctx);
        const float scale = 1.0F / (1.0F - rate);
        std::vector<double> y(n * d), dx(n * d);
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t j = 0; j < d; ++j) {
            const float m = layer.mask(ctx.seed, ctx.step, ctx.first_row + i, j);
            ASSERT_TRUE(m == 0.0F || m == scale) << "mask " << m << " at row " << i << ", unit " << j;
            const double keep = m != 0.0F ? 1.0 : 0.0;
            y[i * d + j] = b.x[i * d + j] * keep / (1.0 - rate);
            dx[i * d + j] = b.dy[i * d + j] * keep / (1.0 - rate);
          }
        }
        EXPECT_TRUE(all_close(b.y, y, 2, 0.0)) << "y";
        EXPECT_TRUE(all_close(b.dx, dx, 2, 0.0)) << "dx";
      }
    }
  }
}

// On 500,000 units (above the parallel threshold) the dropped fraction is the rate within 5 sigma, the output's
// mean is unbiased, and neighbouring units (same row, and same unit in the next row) are dropped independently:
// both dropped in rate^2 of disjoint pairs.
TEST(Dropout, DropFractionMatchesRateOnLargeTensor) {
  const int64_t n = 1000;
  const int64_t d = 500;
  for (float rate : kRates) {
    SCOPED_TRACE("rate " + std::to_string(rate));
    Batch b = make_batch(n, d, 21);
    std::fill(b.x.begin(), b.x.end(), 1.0F);
    Dropout layer("drop", d, rate, 1);
    const std::vector<int> kept = run(layer, b, training(5, 1000));
    const int64_t count = n * d;
    int64_t dropped = 0;
    double y_sum = 0.0;
    for (int64_t i = 0; i < count; ++i) {
      dropped += kept[i] == 0;
      y_sum += b.y[i];
    }
    EXPECT_NEAR(static_cast<double>(dropped) / count, rate, five_sigma(rate, count));
    // y is 1 / (1 - rate) with probability 1 - rate: mean 1, standard deviation sqrt(rate / (1 - rate)).
    EXPECT_NEAR(y_sum / count, 1.0, 5.0 * std::sqrt(rate / (1.0 - rate) / count));

    int64_t same_row = 0;
    int64_t same_unit = 0;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j + 1 < d; j += 2) same_row += !kept[i * d + j] && !kept[i * d + j + 1];
    }
    for (int64_t i = 0; i + 1 < n; i += 2) {
      for (int64_t j = 0; j < d; ++j) same_unit += !kept[i * d + j] && !kept[(i + 1) * d + j];
    }
    const double both = static_cast<double>(rate) * rate;
    EXPECT_NEAR(static_cast<double>(same_row) / (count / 2), both, five_sigma(both, count / 2)) << "along a row";
    EXPECT_NEAR(static_cast<double>(same_unit) / (count / 2), both, five_sigma(both, count / 2)) << "down a unit";
  }
}

// The mask is a function of (seed, layer, step, global row, unit) only: another layer object (another rank) with
// the same arguments draws it bit for bit; changing any one of them draws an independent mask, which disagrees on
// 2 rate (1 - rate) of the units.
TEST(Dropout, MaskIsDeterministicAndVariesWithEveryKey) {
  const int64_t n = 64;
  const int64_t d = 64;
  const float rate = 0.5F;
  const Batch base = make_batch(n, d, 31);
  auto mask_of = [&](uint64_t layer_index, const BatchContext& ctx) {
    Batch b = base;
    Dropout layer("drop", d, rate, layer_index);
    return run(layer, b, ctx);
  };
  const std::vector<int> reference = mask_of(2, training(11, 7));
  Batch b1 = base;
  Batch b2 = base;
  Dropout first("drop", d, rate, 2);
  Dropout second("other", d, rate, 2);
  run(first, b1, training(11, 7));
  run(second, b2, training(11, 7));
  EXPECT_EQ(b1.y, b2.y);
  EXPECT_EQ(b1.dx, b2.dx);
  // Running the same layer again at the same step redraws the same mask.
  first.forward(n, training(11, 7));
  EXPECT_EQ(b1.y, b2.y);

  const double expected = 2.0 * rate * (1 - rate);
  const double bound = five_sigma(expected, n * d);
  EXPECT_NEAR(disagreement(reference, mask_of(2, training(11, 8))), expected, bound) << "next step";
  EXPECT_NEAR(disagreement(reference, mask_of(2, training(12, 7))), expected, bound) << "another seed";
  EXPECT_NEAR(disagreement(reference, mask_of(3, training(11, 7))), expected, bound) << "another layer";
  EXPECT_NEAR(disagreement(reference, mask_of(2, training(11, 7, 1))), expected, bound) << "rows shifted by one";
}

// P ranks = 1 rank: slices of a global batch, each run by its own layer object with first_row at its offset, give
// exactly the whole batch's outputs and gradients, for uneven splits and across the parallel threshold.
TEST(Dropout, SlicedBatchDrawsTheWholeBatchMask) {
  const int64_t n = 200;
  const int64_t d = 100;  // 20,000 units: the whole batch runs the OpenMP loop, the slices the serial one
  for (float rate : kRates) {
    SCOPED_TRACE("rate " + std::to_string(rate));
    Batch whole = make_batch(n, d, 41);
    Dropout whole_layer("drop", d, rate, 6);
    run(whole_layer, whole, training(3, 17));
    const std::vector<std::vector<int64_t>> splits = {{100, 100}, {67, 67, 66}, {1, 198, 1}};
    for (const std::vector<int64_t>& sizes : splits) {
      int64_t offset = 0;
      for (int64_t rows : sizes) {
        SCOPED_TRACE("slice at " + std::to_string(offset) + " of " + std::to_string(rows) + " rows");
        Batch slice;
        slice.n = rows;
        slice.d = d;
        slice.x.assign(whole.x.begin() + offset * d, whole.x.begin() + (offset + rows) * d);
        slice.dy.assign(whole.dy.begin() + offset * d, whole.dy.begin() + (offset + rows) * d);
        slice.y.assign(rows * d, kNaN);
        slice.dx.assign(rows * d, kNaN);
        slice.scratch.assign(rows * d, kNaN);
        Dropout rank_layer("drop", d, rate, 6);
        run(rank_layer, slice, training(3, 17, offset));
        EXPECT_TRUE(std::equal(slice.y.begin(), slice.y.end(), whole.y.begin() + offset * d)) << "y";
        EXPECT_TRUE(std::equal(slice.dx.begin(), slice.dx.end(), whole.dx.begin() + offset * d)) << "dx";
        offset += rows;
      }
    }
  }
}

TEST(Dropout, BadRateIsAnError) {
  for (float rate : {-0.1F, -0.0F - 1e-7F, 1.0F, 1.5F, std::numeric_limits<float>::quiet_NaN(),
                     std::numeric_limits<float>::infinity()}) {
    EXPECT_THROW(Dropout("drop", 4, rate, 0), Error) << "rate " << rate;
  }
  EXPECT_NO_THROW(Dropout("drop", 4, 0.0F, 0));
  EXPECT_NO_THROW(Dropout("drop", 4, 0.999F, 0));
}

TEST(Dropout, TrainingNeedsScratchAndPreparedSizes) {
  Batch b = make_batch(3, 5, 51);
  Dropout layer("drop", 5, 0.5F, 0);
  EXPECT_THROW(layer.prepare(3, LayerBuffers{b.x.data(), b.y.data(), b.dy.data(), b.dx.data(), nullptr}), Error);
  // An inference plan cannot run a training step (there is nowhere to keep the mask for backward).
  layer.prepare(3, LayerBuffers{b.x.data(), b.y.data(), nullptr, nullptr, nullptr});
  EXPECT_THROW(layer.forward(3, training(1, 1)), Error);
  EXPECT_THROW(layer.backward(3), Error);
  EXPECT_THROW(layer.forward(4, BatchContext{}), Error);
  layer.forget_plans();
  EXPECT_THROW(layer.forward(3, BatchContext{}), Error);
  EXPECT_EQ(layer.kind(), "dropout");
  EXPECT_EQ(layer.param_count(), 0);
}

// As the model's first layer Dropout gets no dx: backward writes nothing and does not fail.
TEST(Dropout, FirstLayerWithoutDx) {
  Batch b = make_batch(17, 10, 61);
  Dropout layer("drop", 10, 0.5F, 0);
  layer.prepare(17, LayerBuffers{b.x.data(), b.y.data(), b.dy.data(), nullptr, b.scratch.data()});
  layer.forward(17, training(1, 2));
  EXPECT_NO_THROW(layer.backward(17));
  for (float v : b.dx) EXPECT_TRUE(std::isnan(v));
}

}  // namespace
}  // namespace shardfit
