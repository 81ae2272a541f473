// Tests of kernels/batch_norm: training and inference forward, backward and the moving statistics against a naive
// double-precision reference over a sweep (channels 1, 3, 7; one and odd positions; batch 1; center / scale off),
// a finite-difference gradient check in training mode for both synchronized settings, batch 1 with one position
// (zero variance: y = beta and dx = 0, as Keras gives), the cross-rank sums a rank with no rows still makes, the
// model's [trainable | state] layout, and the factory's errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/batch_norm.h"
#include "kernels/cross_replica.h"
#include "kernels/error.h"
#include "kernels/job_file.h"
#include "kernels/model.h"
#include "kernels/model_factory.h"
#include "kernels/optimizer.h"
#include "tests/support/numeric_checks.h"

namespace shardfit {
namespace {

using testing::all_close;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Counts the sums a layer asks for and leaves the values as they are (one rank).
class CountingSum final : public CrossReplicaSum {
 public:
  void sum(std::span<double> values) override {
    ++calls;
    counts.push_back(values.size());
  }
  int calls = 0;
  std::vector<size_t> counts;
};

// One layer with its own parameter, gradient and state arrays and one batch's buffers.
struct Bench {
  int64_t n, positions, channels;
  BatchNormalization::Options options;
  std::vector<float> params, grads, state;
  std::vector<float> x, y, dy, dx, scratch;
  std::unique_ptr<BatchNormalization> layer;

  Bench(int64_t n_, int64_t positions_, int64_t channels_, BatchNormalization::Options o, uint32_t seed)
      : n(n_), positions(positions_), channels(channels_), options(o) {
    const int64_t width = positions * channels;
    layer = std::make_unique<BatchNormalization>("bn", width, channels, options);
    params.assign(static_cast<size_t>(layer->param_count()), kNaN);
    grads.assign(params.size(), kNaN);
    state.assign(static_cast<size_t>(layer->state_count()), kNaN);
    layer->bind(params.data(), grads.data());
    layer->bind_state(state.data());
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> unit(-1.0, 1.0);
    for (float& p : params) p = static_cast<float>(1.0 + 0.5 * unit(rng));
    for (int64_t c = 0; c < channels; ++c) {
      state[c] = static_cast<float>(unit(rng));                         // moving mean
      state[channels + c] = static_cast<float>(1.0 + 0.5 * unit(rng));  // moving variance
    }
    x.resize(n * width);
    // A channel-dependent offset and scale, so the statistics are not all alike.
    for (int64_t i = 0; i < n * positions; ++i) {
      for (int64_t c = 0; c < channels; ++c) x[i * channels + c] = static_cast<float>(0.3 * c + (1 + c) * unit(rng));
    }
    dy.resize(x.size());
    for (float& g : dy) g = static_cast<float>(unit(rng));
    y.assign(x.size(), kNaN);
    dx.assign(x.size(), kNaN);
    scratch.assign(x.size(), kNaN);
    layer->prepare(n, {x.data(), y.data(), dy.data(), dx.data(), scratch.data()});
  }

  double gamma(int64_t c) const { return options.scale ? params[c] : 1.0; }
  double beta(int64_t c) const { return options.center ? params[(options.scale ? channels : 0) + c] : 0.0; }
  std::vector<float> gamma_grad() const {
    return options.scale ? std::vector<float>(grads.begin(), grads.begin() + channels) : std::vector<float>{};
  }
  std::vector<float> beta_grad() const {
    const int64_t at = options.scale ? channels : 0;
    return options.center ? std::vector<float>(grads.begin() + at, grads.begin() + at + channels)
                          : std::vector<float>{};
  }
};

BatchContext training() {
  BatchContext ctx;
  ctx.training = true;
  return ctx;
}

// The naive reference of one training step in double: statistics, y, gradients and the moving update.
struct Reference {
  std::vector<double> mean, variance, y, dx, dgamma, dbeta, moving_mean, moving_variance, inference_y;
};

Reference reference(const Bench& b, const std::vector<float>& moving_before) {
  const int64_t rows = b.n * b.positions;
  const int64_t c_count = b.channels;
  Reference r;
  r.mean.assign(c_count, 0.0);
  r.variance.assign(c_count, 0.0);
  for (int64_t c = 0; c < c_count; ++c) {
    for (int64_t i = 0; i < rows; ++i) r.mean[c] += b.x[i * c_count + c];
    r.mean[c] /= static_cast<double>(rows);
    for (int64_t i = 0; i < rows; ++i) {
      const double d = b.x[i * c_count + c] - r.mean[c];
      r.variance[c] += d * d;
    }
    r.variance[c] /= static_cast<double>(rows);  // biased, as Keras
  }
  r.y.resize(b.x.size());
  r.dx.resize(b.x.size());
  r.inference_y.resize(b.x.size());
  r.dgamma.assign(c_count, 0.0);
  r.dbeta.assign(c_count, 0.0);
  r.moving_mean.resize(c_count);
  r.moving_variance.resize(c_count);
  const double eps = b.options.epsilon;
  const double momentum = b.options.momentum;
  for (int64_t c = 0; c < c_count; ++c) {
    const double inv = 1.0 / std::sqrt(r.variance[c] + eps);
    double sum_dy = 0.0;
    double sum_dy_xhat = 0.0;
    for (int64_t i = 0; i < rows; ++i) {
      const double xhat = (b.x[i * c_count + c] - r.mean[c]) * inv;
      r.y[i * c_count + c] = b.gamma(c) * xhat + b.beta(c);
      sum_dy += b.dy[i * c_count + c];
      sum_dy_xhat += b.dy[i * c_count + c] * xhat;
    }
    r.dgamma[c] = sum_dy_xhat;
    r.dbeta[c] = sum_dy;
    for (int64_t i = 0; i < rows; ++i) {
      const double xhat = (b.x[i * c_count + c] - r.mean[c]) * inv;
      // d/dx of sum dy * y with y = gamma * xhat + beta and the batch's mean and variance functions of x.
      r.dx[i * c_count + c] = b.gamma(c) * inv * (b.dy[i * c_count + c] - sum_dy / rows - xhat * sum_dy_xhat / rows);
    }
    r.moving_mean[c] = moving_before[c] * momentum + r.mean[c] * (1.0 - momentum);
    r.moving_variance[c] = moving_before[c_count + c] * momentum + r.variance[c] * (1.0 - momentum);
    const double moving_inv = 1.0 / std::sqrt(r.moving_variance[c] + eps);
    for (int64_t i = 0; i < rows; ++i) {
      r.inference_y[i * c_count + c] = b.gamma(c) * (b.x[i * c_count + c] - r.moving_mean[c]) * moving_inv + b.beta(c);
    }
  }
  return r;
}

std::vector<float> head(const std::vector<float>& v, int64_t count) { return {v.begin(), v.begin() + count}; }
std::vector<float> tail(const std::vector<float>& v, int64_t count) { return {v.end() - count, v.end()}; }

TEST(BatchNormalization, MatchesTheDoubleReferenceOverASweep) {
  struct Flags {
    bool center, scale;
  };
  int cases = 0;
  for (const int64_t channels : {1, 3, 7}) {
    for (const int64_t positions : {1, 5}) {
      for (const int64_t n : {1, 2, 9, 1000}) {  // 1000 x 5 x 7: OpenMP's chunks
        for (const Flags flags : {Flags{true, true}, Flags{false, false}, Flags{false, true}, Flags{true, false}}) {
          for (const bool synchronized : {true, false}) {
            if (n * positions == 1) continue;  // zero variance: its own test below
            BatchNormalization::Options o;
            o.center = flags.center;
            o.scale = flags.scale;
            o.synchronized = synchronized;
            o.momentum = 0.9F;
            Bench b(n, positions, channels, o, static_cast<uint32_t>(channels * 1000 + positions * 100 + n));
            CountingSum sums;
            b.layer->set_cross_replica(&sums);
            const std::vector<float> moving_before = b.state;
            const Reference r = reference(b, moving_before);
            SCOPED_TRACE(::testing::Message()
                         << "n " << n << ", positions " << positions << ", channels " << channels << ", center "
                         << flags.center << ", scale " << flags.scale << ", synchronized " << synchronized);
            b.layer->forward(n, training());
            EXPECT_TRUE(all_close(b.y, r.y, 64));
            b.layer->backward(n);
            EXPECT_TRUE(all_close(b.dx, r.dx, 256));
            if (flags.scale) {
              EXPECT_TRUE(all_close(b.gamma_grad(), r.dgamma, 64));
            }
            if (flags.center) {
              EXPECT_TRUE(all_close(b.beta_grad(), r.dbeta, 64));
            }
            EXPECT_TRUE(all_close(head(b.state, channels), r.moving_mean, 16));
            EXPECT_TRUE(all_close(tail(b.state, channels), r.moving_variance, 16));
            // Synchronized: one sum in forward (2 C + 1) and one in backward (2 C); per replica: none.
            EXPECT_EQ(sums.calls, synchronized ? 2 : 0);
            if (synchronized) {
              EXPECT_EQ(sums.counts, (std::vector<size_t>{static_cast<size_t>(2 * channels + 1),
                                                          static_cast<size_t>(2 * channels)}));
            }
            // Inference normalizes with the (updated) moving statistics, changes no state and sums nothing.
            const std::vector<float> state_after = b.state;
            b.layer->forward(n, BatchContext{});
            EXPECT_TRUE(all_close(b.y, r.inference_y, 64));
            EXPECT_EQ(b.state, state_after);
            EXPECT_EQ(sums.calls, synchronized ? 2 : 0);
            ++cases;
          }
        }
      }
    }
  }
  EXPECT_EQ(cases, 3 * 2 * 4 * 4 * 2 - 3 * 4 * 2);
}

// One sample of one position: the variance is 0, so xhat = 0, y = beta, dx = 0 (what Keras computes: (x - mean) is
// exactly 0 and epsilon keeps the division finite), and the moving variance decays towards 0.
TEST(BatchNormalization, BatchOfOneSampleAndOnePositionGivesBetaAndZeroDx) {
  BatchNormalization::Options o;
  Bench b(1, 1, 3, o, 7);
  const std::vector<float> moving_before = b.state;
  b.layer->forward(1, training());
  b.layer->backward(1);
  for (int64_t c = 0; c < 3; ++c) {
    EXPECT_EQ(b.y[c], static_cast<float>(b.beta(c)));
    EXPECT_EQ(b.dx[c], 0.0F);
    EXPECT_EQ(b.gamma_grad()[c], 0.0F);
    EXPECT_EQ(b.beta_grad()[c], b.dy[c]);
    EXPECT_FLOAT_EQ(b.state[3 + c], static_cast<float>(moving_before[3 + c] * 0.99));
    EXPECT_FLOAT_EQ(b.state[c], static_cast<float>(moving_before[c] * 0.99 + b.x[c] * 0.01));
  }
}

// Moving statistics after k training steps on different batches follow the recurrence, step after step.
TEST(BatchNormalization, MovingStatisticsAfterSeveralStepsMatchTheReference) {
  BatchNormalization::Options o;
  o.momentum = 0.8F;
  Bench b(6, 3, 4, o, 11);
  std::vector<double> mean(b.state.begin(), b.state.begin() + 4);
  std::vector<double> variance(b.state.begin() + 4, b.state.end());
  std::mt19937 rng(3);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (int step = 0; step < 7; ++step) {
    for (float& v : b.x) v = static_cast<float>(2.0 + step + (1 + step) * normal(rng));
    std::vector<float> before(mean.begin(), mean.end());
    before.insert(before.end(), variance.begin(), variance.end());
    const Reference r = reference(b, before);
    b.layer->forward(6, training());
    mean = r.moving_mean;
    variance = r.moving_variance;
  }
  EXPECT_TRUE(all_close(head(b.state, 4), mean, 64));
  EXPECT_TRUE(all_close(tail(b.state, 4), variance, 64));
  EXPECT_GT(std::abs(mean[0] - 0.0), 1.0);  // it moved
}

// Central differences of L = sum(w * y(x, gamma, beta)) in training mode (the batch's statistics depend on x),
// through the f32 layer, step 1e-2: the layer's dx, d gamma and d beta within 1% of the largest.
TEST(BatchNormalization, GradientsMatchFiniteDifferences) {
  for (const bool synchronized : {true, false}) {
    BatchNormalization::Options o;
    o.synchronized = synchronized;
    Bench b(5, 3, 2, o, 19);
    CountingSum sums;
    if (synchronized) b.layer->set_cross_replica(&sums);
    auto loss = [&] {
      b.layer->forward(b.n, training());
      double sum = 0.0;
      for (size_t i = 0; i < b.y.size(); ++i) sum += static_cast<double>(b.dy[i]) * b.y[i];
      return sum;
    };
    loss();
    b.layer->backward(b.n);
    const std::vector<float> dx = b.dx;
    const std::vector<float> dparams = b.grads;
    constexpr double kStep = 1e-2;
    auto numeric = [&](float& value) {
      const float saved = value;
      value = static_cast<float>(saved + kStep);
      const double up = loss();
      value = static_cast<float>(saved - kStep);
      const double down = loss();
      value = saved;
      return (up - down) / (2 * kStep);
    };
    std::vector<double> numeric_dx;
    for (float& v : b.x) numeric_dx.push_back(numeric(v));
    std::vector<double> numeric_dparams;
    for (float& v : b.params) numeric_dparams.push_back(numeric(v));
    double largest = 0.0;
    for (const double g : numeric_dx) largest = std::max(largest, std::abs(g));
    EXPECT_GT(largest, 0.1);
    const double k = 1e-2 / 1.1920928955078125e-07;  // 1% of the largest, in all_close's units
    EXPECT_TRUE(all_close(dx, numeric_dx, k, largest)) << "synchronized " << synchronized;
    EXPECT_TRUE(all_close(dparams, numeric_dparams, k, largest)) << "synchronized " << synchronized;
  }
}

TEST(BatchNormalization, RefusesBadArgumentsNamingTheLayer) {
  auto error_of = [](float momentum, float epsilon, int64_t width, int64_t channels) {
    BatchNormalization::Options o;
    o.momentum = momentum;
    o.epsilon = epsilon;
    try {
      BatchNormalization layer("bn", width, channels, o);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(error_of(1.0F, 1e-3F, 4, 4), "BatchNormalization 'bn': momentum = 1: expected 0 <= momentum < 1");
  EXPECT_EQ(error_of(0.5F, 0.0F, 4, 4), "BatchNormalization 'bn': epsilon = 0: expected a number > 0");
  EXPECT_NE(error_of(0.5F, 1e-3F, 5, 2).find("not whole positions of 2 channels"), std::string::npos);
  EXPECT_EQ(error_of(0.0F, 1e-3F, 6, 2), "");
}

std::string error_of_job(const std::string& text) {
  try {
    build_model(parse_job_text(text, "bn.pbtxt"), 4);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(BatchNormalizationFactory, NamesTheFieldOfABadArgument) {
  auto job = [](const std::string& fields) {
    return R"(model { layers { dense { units: 3 } } layers { batch_normalization { )" + fields +
           R"( } } } loss: "mse")";
  };
  EXPECT_EQ(error_of_job(job("momentum: 1")),
            "model.layers[1].batch_normalization.momentum = 1: expected 0 <= momentum < 1 (Keras's default 0.99)");
  EXPECT_EQ(error_of_job(job("momentum: -0.5")),
            "model.layers[1].batch_normalization.momentum = -0.5: expected 0 <= momentum < 1 (Keras's default 0.99)");
  EXPECT_EQ(error_of_job(job("epsilon: 0")),
            "model.layers[1].batch_normalization.epsilon = 0: expected a number > 0 (Keras's default 0.001)");
  EXPECT_EQ(error_of_job(job("axis: 1")),
            "model.layers[1].batch_normalization.axis = 1: expected -1 (the last axis, channels last): the only one "
            "supported");
  EXPECT_EQ(error_of_job(job(R"(gamma_initializer: "twos")")),
            "model.layers[1].batch_normalization.gamma_initializer: unknown initializer 'twos'; expected one of: "
            "glorot_uniform, he_normal, zeros, ones");
  EXPECT_EQ(error_of_job(job("axis: -1 momentum: 0 epsilon: 1e-5 synchronized: false")), "");
}

// The model's flat buffer: [trainable | state]; gradients and the optimizer cover the trainable part, the weight
// list is Keras's order, the summary says Keras's three totals.
TEST(BatchNormalizationModel, StateFollowsTheTrainableParametersAndTheOptimizerLeavesItAlone) {
  const proto::Job job = parse_job_text(R"(
      model { layers { dense { units: 3 } }
              layers { batch_normalization { } }
              layers { dense { units: 2 } } }
      loss: "mse" optimizer { sgd { learning_rate: 0.1 } })",
                                        "bn.pbtxt");
  auto model = build_model(job, 4);
  EXPECT_EQ(model->trainable_count(), 4 * 3 + 3 + 3 + 3 + 3 * 2 + 2);
  EXPECT_EQ(model->state_count(), 6);
  EXPECT_EQ(model->param_count(), model->trainable_count() + 6);
  EXPECT_EQ(model->gradients().size(), static_cast<size_t>(model->trainable_count()));
  EXPECT_NE(model->summary().find("Total params: 35\nTrainable params: 29\nNon-trainable params: 6\n"),
            std::string::npos)
      << model->summary();

  model->initialize(1);
  const std::vector<WeightTensor> weights = model->get_weights();
  std::vector<std::string> names;
  names.reserve(weights.size());
  for (const auto& w : weights) names.push_back(w.name);
  EXPECT_EQ(names,
            (std::vector<std::string>{"dense_0/kernel", "dense_0/bias", "batch_normalization_1/gamma",
                                      "batch_normalization_1/beta", "batch_normalization_1/moving_mean",
                                      "batch_normalization_1/moving_variance", "dense_2/kernel", "dense_2/bias"}));
  EXPECT_EQ(weights[4].values, std::vector<float>(3, 0.0F));  // moving_mean_initializer zeros
  EXPECT_EQ(weights[5].values, std::vector<float>(3, 1.0F));  // moving_variance_initializer ones
  EXPECT_EQ(weights[2].values, std::vector<float>(3, 1.0F));  // gamma ones
  // The moving statistics sit after every trainable parameter.
  EXPECT_EQ(std::vector<float>(model->state().begin(), model->state().end()), (std::vector<float>{0, 0, 0, 1, 1, 1}));

  // set_weights puts each tensor back where get_weights found it.
  std::vector<WeightTensor> changed = weights;
  for (size_t t = 0; t < changed.size(); ++t) {
    for (size_t i = 0; i < changed[t].values.size(); ++i) changed[t].values[i] = static_cast<float>(t * 100 + i);
  }
  model->set_weights(changed);
  const std::vector<WeightTensor> back = model->get_weights();
  for (size_t t = 0; t < back.size(); ++t) EXPECT_EQ(back[t].values, changed[t].values) << back[t].name;
  EXPECT_EQ(model->state()[0], 400.0F);
  EXPECT_EQ(model->state()[3], 500.0F);

  // A training step moves the moving statistics by the batch's (not by the optimizer), gamma by the optimizer.
  model->initialize(1);
  model->reserve(8);
  std::mt19937 rng(5);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (int64_t i = 0; i < int64_t{8} * 4; ++i) model->input()[i] = static_cast<float>(normal(rng));
  for (int64_t i = 0; i < int64_t{8} * 2; ++i) model->labels()[i] = static_cast<float>(normal(rng));
  auto optimizer = make_optimizer(job.optimizer(), model->trainable_count());
  std::vector<double> no_metrics;
  model->train_batch(8, training(), false, no_metrics);
  // The state equals what the forward wrote: the optimizer updates the trainable span only.
  const std::vector<float> state_after_forward(model->state().begin(), model->state().end());
  optimizer->update(model->trainable_parameters(), model->gradients());
  EXPECT_EQ(std::vector<float>(model->state().begin(), model->state().end()), state_after_forward);
  EXPECT_NE(state_after_forward[0], 0.0F);
  EXPECT_NE(model->get_weights()[2].values, std::vector<float>(3, 1.0F));  // gamma learned
}

// A rank with no rows in a step makes the same cross-rank sums, in the same order, as one with rows; inference
// makes none.
TEST(BatchNormalizationModel, ARankWithNoRowsStillSumsAndInferenceSumsNothing) {
  const proto::Job job = parse_job_text(R"(
      model { layers { dense { units: 3 } }
              layers { batch_normalization { } }
              layers { dense { units: 5 } }
              layers { batch_normalization { } }
              layers { dense { units: 2 activation: "softmax" } } }
      loss: "sparse_categorical_crossentropy")",
                                        "bn.pbtxt");
  auto with_rows = build_model(job, 4);
  auto without_rows = build_model(job, 4);
  CountingSum a;
  CountingSum b;
  with_rows->set_cross_replica(&a);
  without_rows->set_cross_replica(&b);
  EXPECT_TRUE(with_rows->uses_cross_replica());
  EXPECT_FALSE(with_rows->has_replica_local_state());
  for (auto* m : {with_rows.get(), without_rows.get()}) {
    m->initialize(2);
    m->reserve(4);
  }
  for (int64_t i = 0; i < int64_t{4} * 4; ++i) with_rows->input()[i] = static_cast<float>(i % 5);
  for (int64_t i = 0; i < 4; ++i) with_rows->labels()[i] = static_cast<float>(i % 2);
  std::vector<double> no_metrics;
  with_rows->train_batch(4, training(), false, no_metrics);
  without_rows->train_batch(0, training(), false, no_metrics);
  EXPECT_EQ(a.counts, (std::vector<size_t>{7, 11, 10, 6}));  // forward in layer order, backward in reverse
  EXPECT_EQ(b.counts, a.counts);
  for (const float g : without_rows->gradients()) EXPECT_EQ(g, 0.0F);
  with_rows->evaluate_batch(4, no_metrics);
  with_rows->predict_batch(4);
  EXPECT_EQ(a.calls, 4);

  // synchronized: false sums nothing and keeps per-rank state.
  const proto::Job local = parse_job_text(R"(
      model { layers { dense { units: 3 } } layers { batch_normalization { synchronized: false } } }
      loss: "mse")",
                                          "bn.pbtxt");
  auto per_replica = build_model(local, 4);
  EXPECT_FALSE(per_replica->uses_cross_replica());
  EXPECT_TRUE(per_replica->has_replica_local_state());
}

}  // namespace
}  // namespace shardfit
