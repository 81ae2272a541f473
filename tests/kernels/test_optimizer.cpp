// Tests for kernels/optimizer: SGD, Adam and RMSprop against naive double-precision references over several steps,
// hand-computed single steps, state slots, make_optimizer's defaults and errors, and clip_by_global_norm.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/error.h"
#include "kernels/optimizer.h"
#include "kernels/random.h"
#include "proto/shardfit.pb.h"
#include "tests/support/numeric_checks.h"

namespace shardfit {
namespace {

using testing::all_close;
using testing::to_double;

constexpr int kSteps = 5;
// Rounding of w, the state and the update over kSteps steps: a few float eps each, relative to the largest value.
constexpr double kTolerance = 16;

// Values in [-1, 1) times a magnitude spread over 10^-2 .. 10^1, so the sweep sees small and large gradients.
std::vector<float> random_gradients(int64_t count, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> out(static_cast<size_t>(count));
  for (float& x : out) x = static_cast<float>(rng.uniform(-1.0, 1.0) * std::pow(10.0, rng.uniform(-2.0, 1.0)));
  return out;
}

std::vector<float> random_weights(int64_t count, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> out(static_cast<size_t>(count));
  for (float& x : out) x = static_cast<float>(rng.uniform(-1.0, 1.0));
  return out;
}

// Bit identity, element by element so that a failure says which element differs.
::testing::AssertionResult same_bits(std::span<const float> a, std::span<const float> b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "size " << a.size() << " != " << b.size();
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::bit_cast<uint32_t>(a[i]) != std::bit_cast<uint32_t>(b[i])) {
      return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " != " << b[i];
    }
  }
  return ::testing::AssertionSuccess();
}

double max_abs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

// State buffers are checked relative to their own largest element (they can be far below 1).
::testing::AssertionResult state_close(const FloatBuffer* actual, const std::vector<double>& expected) {
  return all_close(actual->span(), expected, kTolerance, std::max(max_abs(expected), 1e-30));
}

const FloatBuffer* slot(Optimizer& opt, const std::string& name) {
  for (const OptimizerSlot& s : opt.slots()) {
    if (s.name == name) return s.values;
  }
  ADD_FAILURE() << "no slot named " << name;
  static const FloatBuffer empty_buffer;
  return &empty_buffer;
}

std::vector<std::string> slot_names(Optimizer& opt) {
  std::vector<std::string> names;
  for (const OptimizerSlot& s : opt.slots()) names.push_back(s.name);
  return names;
}

std::vector<std::unique_ptr<Optimizer>> all_three(std::unique_ptr<Optimizer> a, std::unique_ptr<Optimizer> b,
                                                  std::unique_ptr<Optimizer> c) {
  std::vector<std::unique_ptr<Optimizer>> out;
  out.push_back(std::move(a));
  out.push_back(std::move(b));
  out.push_back(std::move(c));
  return out;
}

// Runs the optimizer and its reference side by side for kSteps steps of fresh random gradients.
template <typename Reference>
void run_against_reference(Optimizer& opt, Reference& ref, std::vector<float>& w, int64_t count) {
  for (int step = 0; step < kSteps; ++step) {
    const std::vector<float> g = random_gradients(count, 1000 + step);
    opt.update(w, g);
    ref.step(g);
    ASSERT_EQ(opt.iterations(), step + 1);
  }
}

// ----- references, straight from KERAS_CONTRACT.md / Keras 3, in double ---------------------------------------

struct SgdReference {
  double lr, mu;
  bool nesterov;
  std::vector<double> w, v;
  void step(const std::vector<float>& g) {
    for (size_t i = 0; i < w.size(); ++i) {
      if (mu == 0.0) {
        w[i] -= lr * g[i];
      } else {
        v[i] = mu * v[i] - lr * g[i];
        w[i] += nesterov ? mu * v[i] - lr * g[i] : v[i];
      }
    }
  }
};

struct AdamReference {
  double lr, b1, b2, eps;
  int64_t iterations = 0;
  std::vector<double> w, m, v;
  void step(const std::vector<float>& g) {
    const double t = static_cast<double>(iterations + 1);
    const double a = lr * std::sqrt(1 - std::pow(b2, t)) / (1 - std::pow(b1, t));
    for (size_t i = 0; i < w.size(); ++i) {
      m[i] += (g[i] - m[i]) * (1 - b1);
      v[i] += (double{g[i]} * g[i] - v[i]) * (1 - b2);
      w[i] -= a * m[i] / (std::sqrt(v[i]) + eps);
    }
    ++iterations;
  }
};

struct RmsPropReference {
  double lr, rho, mu, eps;
  std::vector<double> w, rms, mom;
  void step(const std::vector<float>& g) {
    for (size_t i = 0; i < w.size(); ++i) {
      rms[i] = rho * rms[i] + (1 - rho) * g[i] * g[i];
      const double increment = lr * g[i] / std::sqrt(rms[i] + eps);  // Keras 3: epsilon inside the root
      if (mu > 0) {
        mom[i] = mu * mom[i] + increment;
        w[i] -= mom[i];
      } else {
        w[i] -= increment;
      }
    }
  }
};

// ----- the sweep: every optimizer and option combination at sizes from 1 to past the OpenMP threshold ---------

class OptimizerSweep : public ::testing::TestWithParam<int64_t> {};

TEST_P(OptimizerSweep, SgdMatchesReference) {
  const int64_t n = GetParam();
  const SgdOptions cases[] = {
      {},                    // Keras defaults: lr 0.01, plain SGD
      {0.05F, 0.0F, true},   // nesterov without momentum is plain SGD, as in Keras
      {0.01F, 0.9F, false},  // heavy ball
      {0.02F, 0.5F, true},   // Nesterov
      {0.01F, 0.99F, false},
  };
  for (const SgdOptions& o : cases) {
    SCOPED_TRACE(::testing::Message() << "n=" << n << " lr=" << o.learning_rate << " momentum=" << o.momentum
                                      << " nesterov=" << o.nesterov);
    auto opt = make_sgd(o, n);
    std::vector<float> w = random_weights(n, 7);
    SgdReference ref{o.learning_rate, o.momentum, o.nesterov, to_double(w), std::vector<double>(n, 0.0)};
    run_against_reference(*opt, ref, w, n);
    EXPECT_TRUE(all_close(w, ref.w, kTolerance));
    if (o.momentum > 0) {
      EXPECT_TRUE(state_close(slot(*opt, "momentum"), ref.v));
    } else {
      EXPECT_TRUE(opt->slots().empty());
    }
  }
}

TEST_P(OptimizerSweep, AdamMatchesReference) {
  const int64_t n = GetParam();
  const AdamOptions cases[] = {
      {},                          // Keras defaults
      {0.01F, 0.5F, 0.9F, 1e-3F},  // fast averages, large epsilon: exercises every term
      {0.002F, 0.95F, 0.9999F, 1e-8F},
  };
  for (const AdamOptions& o : cases) {
    SCOPED_TRACE(::testing::Message() << "n=" << n << " lr=" << o.learning_rate << " beta_1=" << o.beta_1
                                      << " beta_2=" << o.beta_2 << " epsilon=" << o.epsilon);
    auto opt = make_adam(o, n);
    std::vector<float> w = random_weights(n, 8);
    AdamReference ref{o.learning_rate,
                      o.beta_1,
                      o.beta_2,
                      o.epsilon,
                      0,
                      to_double(w),
                      std::vector<double>(n, 0.0),
                      std::vector<double>(n, 0.0)};
    run_against_reference(*opt, ref, w, n);
    EXPECT_TRUE(all_close(w, ref.w, kTolerance));
    EXPECT_TRUE(state_close(slot(*opt, "m"), ref.m));
    EXPECT_TRUE(state_close(slot(*opt, "v"), ref.v));
  }
}

TEST_P(OptimizerSweep, RmsPropMatchesReference) {
  const int64_t n = GetParam();
  const RmsPropOptions cases[] = {
      {},                           // Keras defaults, no momentum
      {0.001F, 0.9F, 0.9F, 1e-7F},  // with momentum
      {0.01F, 0.0F, 0.5F, 1e-3F},   // rho 0: only the current gradient
      {0.005F, 0.99F, 0.0F, 1e-4F},
  };
  for (const RmsPropOptions& o : cases) {
    SCOPED_TRACE(::testing::Message() << "n=" << n << " lr=" << o.learning_rate << " rho=" << o.rho
                                      << " momentum=" << o.momentum << " epsilon=" << o.epsilon);
    auto opt = make_rmsprop(o, n);
    std::vector<float> w = random_weights(n, 9);
    RmsPropReference ref{o.learning_rate,
                         o.rho,
                         o.momentum,
                         o.epsilon,
                         to_double(w),
                         std::vector<double>(n, 0.0),
                         std::vector<double>(n, 0.0)};
    run_against_reference(*opt, ref, w, n);
    EXPECT_TRUE(all_close(w, ref.w, kTolerance));
    EXPECT_TRUE(state_close(slot(*opt, "rms"), ref.rms));
    if (o.momentum > 0) {
      EXPECT_EQ(slot_names(*opt), (std::vector<std::string>{"rms", "momentum"}));
      EXPECT_TRUE(state_close(slot(*opt, "momentum"), ref.mom));
    } else {
      EXPECT_EQ(slot_names(*opt), (std::vector<std::string>{"rms"}));
    }
  }
}

// 100003 is past the parallel threshold and odd, so OpenMP splits it unevenly and the simd loops have a tail.
INSTANTIATE_TEST_SUITE_P(Sizes, OptimizerSweep, ::testing::Values(1, 3, 17, 1000, 100003));

// ----- single steps worked by hand ----------------------------------------------------------------------------

TEST(Adam, FirstStepByHand) {
  // t = 1: m = (1-b1) g, v = (1-b2) g^2, a = lr sqrt(1-b2) / (1-b1), so the step is lr g / (|g| + eps / sqrt(1-b2)):
  // almost exactly lr, slightly shortened by epsilon. The betas are floats (0.999F = 0.99900001287...), so
  // 1 - b2 is 0.00099998713, not 0.001; the step itself does not depend on that beyond the epsilon term.
  auto opt = make_adam({}, 1);
  std::vector<float> w = {0.0F};
  const std::vector<float> g = {0.5F};
  opt->update(w, g);
  const double expected = -0.001 * 0.5 / (0.5 + 1e-7 / std::sqrt(0.001));  // -9.99993675e-4
  EXPECT_NEAR(w[0], expected, 4 * 1.2e-10);                                // 4 float ulps at 1e-3
  const double one_minus_b1 = 1.0 - double{0.9F};
  const double one_minus_b2 = 1.0 - double{0.999F};
  EXPECT_NEAR((*slot(*opt, "m"))[0], one_minus_b1 * 0.5, 1e-9);
  EXPECT_NEAR((*slot(*opt, "v"))[0], one_minus_b2 * 0.25, 1e-11);
  EXPECT_EQ(opt->iterations(), 1);
}

TEST(RmsProp, KerasDocstringExample) {
  // keras.optimizers.RMSprop(learning_rate=0.1), var = 10, loss = var^2 / 2: one minimize step gives 9.683772.
  auto opt = make_rmsprop({.learning_rate = 0.1F}, 1);
  std::vector<float> w = {10.0F};
  const std::vector<float> g = {10.0F};
  opt->update(w, g);
  EXPECT_NEAR(w[0], 9.683772, 2e-6);
}

TEST(Sgd, MomentumByHand) {
  // v = 0.9*0 - 0.1*1 = -0.1, w = 1 - 0.1; then v = -0.09 - 0.1 = -0.19, w = 0.9 - 0.19.
  auto opt = make_sgd({0.1F, 0.9F, false}, 1);
  std::vector<float> w = {1.0F};
  const std::vector<float> g = {1.0F};
  opt->update(w, g);
  EXPECT_NEAR(w[0], 0.9, 3e-7);
  opt->update(w, g);
  EXPECT_NEAR(w[0], 0.71, 3e-7);

  // Nesterov: after the same velocities, w moves by 0.9 v - 0.1: -0.19 then -0.271.
  auto nesterov = make_sgd({0.1F, 0.9F, true}, 1);
  w = {1.0F};
  nesterov->update(w, g);
  EXPECT_NEAR(w[0], 0.81, 3e-7);
  nesterov->update(w, g);
  EXPECT_NEAR(w[0], 0.539, 3e-7);
}

// ----- bookkeeping: iterations, learning rate, slots ----------------------------------------------------------

TEST(Optimizer, KindNames) {
  EXPECT_EQ(make_sgd({}, 1)->kind(), "sgd");
  EXPECT_EQ(make_adam({}, 1)->kind(), "adam");
  EXPECT_EQ(make_rmsprop({}, 1)->kind(), "rmsprop");
}

TEST(Optimizer, IterationsCountUpdates) {
  for (const auto& opt : all_three(make_sgd({}, 4), make_adam({}, 4), make_rmsprop({}, 4))) {
    SCOPED_TRACE(opt->kind());
    std::vector<float> w(4, 1.0F);
    const std::vector<float> g(4, 0.25F);
    EXPECT_EQ(opt->iterations(), 0);
    for (int i = 1; i <= 3; ++i) {
      opt->update(w, g);
      EXPECT_EQ(opt->iterations(), i);
    }
  }
}

TEST(Adam, SetIterationsResumesBiasCorrection) {
  // A resumed optimizer at iteration 10 must use t = 11, exactly like one that ran 10 steps.
  const int64_t n = 257;
  auto opt = make_adam({}, n);
  opt->set_iterations(10);
  std::vector<float> w = random_weights(n, 3);
  AdamReference ref{
      0.001F, 0.9F, 0.999F, 1e-7F, 10, to_double(w), std::vector<double>(n, 0.0), std::vector<double>(n, 0.0)};
  const std::vector<float> g = random_gradients(n, 4);
  opt->update(w, g);
  ref.step(g);
  EXPECT_EQ(opt->iterations(), 11);
  EXPECT_TRUE(all_close(w, ref.w, kTolerance));
}

TEST(Optimizer, SetLearningRateTakesEffect) {
  auto sgd = make_sgd({0.5F}, 1);
  EXPECT_FLOAT_EQ(sgd->learning_rate(), 0.5F);
  std::vector<float> w = {1.0F};
  const std::vector<float> g = {1.0F};
  sgd->update(w, g);
  EXPECT_EQ(w[0], 0.5F);
  sgd->set_learning_rate(0.25F);
  EXPECT_EQ(sgd->learning_rate(), 0.25F);
  sgd->update(w, g);
  EXPECT_EQ(w[0], 0.25F);

  // Adam's first step is ~lr, so halving the rate halves the step.
  auto adam_full = make_adam({}, 1);
  auto adam_half = make_adam({}, 1);
  adam_half->set_learning_rate(0.0005F);
  std::vector<float> w_full = {0.0F};
  std::vector<float> w_half = {0.0F};
  adam_full->update(w_full, g);
  adam_half->update(w_half, g);
  EXPECT_NEAR(w_half[0], 0.5 * w_full[0], 1e-10);

  auto rms_full = make_rmsprop({}, 1);
  auto rms_half = make_rmsprop({}, 1);
  rms_half->set_learning_rate(0.0005F);
  w_full = {0.0F};
  w_half = {0.0F};
  rms_full->update(w_full, g);
  rms_half->update(w_half, g);
  EXPECT_NEAR(w_half[0], 0.5 * w_full[0], 1e-10);
}

TEST(Optimizer, SlotsNamesAndSizes) {
  const int64_t n = 33;
  EXPECT_TRUE(make_sgd({}, n)->slots().empty());
  auto sgd = make_sgd({0.01F, 0.9F, false}, n);
  EXPECT_EQ(slot_names(*sgd), (std::vector<std::string>{"momentum"}));
  auto adam = make_adam({}, n);
  EXPECT_EQ(slot_names(*adam), (std::vector<std::string>{"m", "v"}));
  auto rms = make_rmsprop({}, n);
  EXPECT_EQ(slot_names(*rms), (std::vector<std::string>{"rms"}));
  for (Optimizer* opt : {sgd.get(), adam.get(), rms.get()}) {
    for (const OptimizerSlot& s : opt->slots()) {
      SCOPED_TRACE(opt->kind() + "." + s.name);
      ASSERT_EQ(s.values->count(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ((*s.values)[i], 0.0F);  // zero-initialised, like Keras
    }
  }
}

TEST(Optimizer, WritingSlotsRestoresState) {
  // A checkpoint restore writes the slots; the next step must use them. SGD momentum 0.5, v = 2, g = 0:
  // v = 0.5 * 2 = 1, w = 0 + 1.
  auto opt = make_sgd({0.1F, 0.5F, false}, 2);
  for (OptimizerSlot& s : opt->slots()) {
    for (float& x : s.values->span()) x = 2.0F;
  }
  std::vector<float> w = {0.0F, 0.0F};
  const std::vector<float> g = {0.0F, 0.0F};
  opt->update(w, g);
  EXPECT_EQ(w[0], 1.0F);
  EXPECT_EQ(w[1], 1.0F);
}

TEST(Optimizer, EmptyParameterBuffer) {
  for (const auto& opt :
       all_three(make_sgd({0.01F, 0.9F, true}, 0), make_adam({}, 0), make_rmsprop({.momentum = 0.5F}, 0))) {
    std::vector<float> w;
    const std::vector<float> g;
    opt->update(w, g);
    EXPECT_EQ(opt->iterations(), 1);
  }
}

TEST(Optimizer, WrongLengthIsAnError) {
  auto opt = make_adam({}, 4);
  std::vector<float> w(4);
  const std::vector<float> g(3);
  EXPECT_THROW(opt->update(w, g), Error);
  std::vector<float> w5(5);
  const std::vector<float> g5(5);
  EXPECT_THROW(opt->update(w5, g5), Error);
  EXPECT_EQ(opt->iterations(), 0);
}

// ----- make_optimizer: defaults from the proto, and range errors ----------------------------------------------

// Runs two optimizers on the same data and says whether they produce identical bits.
void expect_same_updates(Optimizer& a, Optimizer& b) {
  const int64_t n = 1000;
  std::vector<float> wa = random_weights(n, 5);
  std::vector<float> wb = wa;
  for (int step = 0; step < 3; ++step) {
    const std::vector<float> g = random_gradients(n, 50 + step);
    a.update(wa, g);
    b.update(wb, g);
  }
  EXPECT_TRUE(same_bits(wa, wb));
  EXPECT_EQ(slot_names(a), slot_names(b));
}

TEST(MakeOptimizer, NoKindIsAdamWithKerasDefaults) {
  proto::Optimizer config;
  auto opt = make_optimizer(config, 1000);
  EXPECT_EQ(opt->kind(), "adam");
  EXPECT_EQ(opt->learning_rate(), 0.001F);
  auto expected = make_adam({0.001F, 0.9F, 0.999F, 1e-7F}, 1000);
  expect_same_updates(*opt, *expected);
}

TEST(MakeOptimizer, UnsetFieldsTakeKerasDefaults) {
  {
    proto::Optimizer config;
    config.mutable_sgd();
    auto opt = make_optimizer(config, 1000);
    EXPECT_EQ(opt->kind(), "sgd");
    EXPECT_EQ(opt->learning_rate(), 0.01F);
    auto expected = make_sgd({0.01F, 0.0F, false}, 1000);
    expect_same_updates(*opt, *expected);
  }
  {
    proto::Optimizer config;
    config.mutable_adam()->set_beta_1(0.8F);  // the others stay at their defaults
    auto opt = make_optimizer(config, 1000);
    auto expected = make_adam({0.001F, 0.8F, 0.999F, 1e-7F}, 1000);
    expect_same_updates(*opt, *expected);
  }
  {
    proto::Optimizer config;
    config.mutable_rmsprop();
    auto opt = make_optimizer(config, 1000);
    EXPECT_EQ(opt->kind(), "rmsprop");
    EXPECT_EQ(opt->learning_rate(), 0.001F);
    auto expected = make_rmsprop({0.001F, 0.9F, 0.0F, 1e-7F}, 1000);
    expect_same_updates(*opt, *expected);
  }
}

TEST(MakeOptimizer, SetFieldsAreUsed) {
  {
    proto::Optimizer config;
    proto::Sgd* sgd = config.mutable_sgd();
    sgd->set_learning_rate(0.05F);
    sgd->set_momentum(0.9F);
    sgd->set_nesterov(true);
    auto opt = make_optimizer(config, 1000);
    auto expected = make_sgd({0.05F, 0.9F, true}, 1000);
    expect_same_updates(*opt, *expected);
  }
  {
    proto::Optimizer config;
    proto::Adam* adam = config.mutable_adam();
    adam->set_learning_rate(0.01F);
    adam->set_beta_1(0.5F);
    adam->set_beta_2(0.9F);
    adam->set_epsilon(1e-4F);
    auto opt = make_optimizer(config, 1000);
    auto expected = make_adam({0.01F, 0.5F, 0.9F, 1e-4F}, 1000);
    expect_same_updates(*opt, *expected);
  }
  {
    proto::Optimizer config;
    proto::RmsProp* rms = config.mutable_rmsprop();
    rms->set_learning_rate(0.01F);
    rms->set_rho(0.5F);
    rms->set_momentum(0.8F);
    rms->set_epsilon(1e-4F);
    auto opt = make_optimizer(config, 1000);
    auto expected = make_rmsprop({0.01F, 0.5F, 0.8F, 1e-4F}, 1000);
    expect_same_updates(*opt, *expected);
  }
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::string config_error(const std::function<void(proto::Optimizer&)>& edit) {
  proto::Optimizer config;
  edit(config);
  return error_of([&] { make_optimizer(config, 10); });
}

TEST(MakeOptimizer, RangeErrorsNameFieldAndValue) {
  EXPECT_EQ(config_error([](auto& c) { c.mutable_adam()->set_beta_1(1.5F); }),
            "optimizer.adam.beta_1 = 1.5: expected 0 < beta_1 < 1");
  EXPECT_EQ(config_error([](auto& c) { c.mutable_adam()->set_beta_2(0.0F); }),
            "optimizer.adam.beta_2 = 0: expected 0 < beta_2 < 1");
  EXPECT_EQ(config_error([](auto& c) { c.mutable_adam()->set_beta_2(1.0F); }),
            "optimizer.adam.beta_2 = 1: expected 0 < beta_2 < 1");
  EXPECT_EQ(config_error([](auto& c) { c.mutable_adam()->set_epsilon(0.0F); }),
            "optimizer.adam.epsilon = 0: expected epsilon > 0");
  EXPECT_EQ(config_error([](auto& c) { c.mutable_adam()->set_learning_rate(-0.1F); }),
            "optimizer.adam.learning_rate = -0.1: expected learning_rate > 0");
  EXPECT_EQ(config_error([](auto& c) { c.mutable_sgd()->set_learning_rate(0.0F); }),
            "optimizer.sgd.learning_rate = 0: expected learning_rate > 0");
  EXPECT_EQ(config_error([](auto& c) { c.mutable_sgd()->set_momentum(1.0F); }),
            "optimizer.sgd.momentum = 1: expected 0 <= momentum < 1");
  EXPECT_EQ(config_error([](auto& c) { c.mutable_sgd()->set_momentum(-0.5F); }),
            "optimizer.sgd.momentum = -0.5: expected 0 <= momentum < 1");
  EXPECT_EQ(config_error([](auto& c) { c.mutable_rmsprop()->set_rho(1.0F); }),
            "optimizer.rmsprop.rho = 1: expected 0 <= rho < 1");
  EXPECT_EQ(config_error([](auto& c) { c.mutable_rmsprop()->set_momentum(2.0F); }),
            "optimizer.rmsprop.momentum = 2: expected 0 <= momentum < 1");
  EXPECT_EQ(config_error([](auto& c) { c.mutable_rmsprop()->set_epsilon(-1e-7F); }),
            "optimizer.rmsprop.epsilon = -1e-07: expected epsilon > 0");
  EXPECT_EQ(config_error([](auto& c) { c.set_global_clipnorm(0.0F); }),
            "optimizer.global_clipnorm = 0: expected global_clipnorm > 0");
  // NaN and infinity are rejected too (a comparison alone would let NaN through).
  EXPECT_EQ(config_error([](auto& c) { c.mutable_sgd()->set_learning_rate(std::numeric_limits<float>::quiet_NaN()); }),
            "optimizer.sgd.learning_rate = nan: expected learning_rate > 0");
  EXPECT_EQ(config_error([](auto& c) { c.mutable_adam()->set_beta_1(std::numeric_limits<float>::quiet_NaN()); }),
            "optimizer.adam.beta_1 = nan: expected 0 < beta_1 < 1");
  EXPECT_EQ(config_error([](auto& c) { c.mutable_adam()->set_learning_rate(std::numeric_limits<float>::infinity()); }),
            "optimizer.adam.learning_rate = inf: expected learning_rate > 0");
}

TEST(MakeOptimizer, DirectFactoriesValidateToo) {
  EXPECT_EQ(error_of([] { make_adam({.beta_1 = 1.5F}, 1); }), "adam.beta_1 = 1.5: expected 0 < beta_1 < 1");
  EXPECT_EQ(error_of([] { make_sgd({.momentum = 1.0F}, 1); }), "sgd.momentum = 1: expected 0 <= momentum < 1");
  EXPECT_EQ(error_of([] { make_rmsprop({.rho = -0.1F}, 1); }), "rmsprop.rho = -0.1: expected 0 <= rho < 1");
  EXPECT_THROW(make_adam({}, -1), Error);
}

// ----- clip_by_global_norm ------------------------------------------------------------------------------------

TEST(ClipByGlobalNorm, MatchesReference) {
  for (int64_t n : {1, 3, 17, 1000, 100003}) {
    const std::vector<float> g0 = random_gradients(n, 77);
    double squares = 0.0;
    for (float x : g0) squares += double{x} * x;
    const double norm = std::sqrt(squares);
    // Clipping to half the norm, and a limit above the norm (no change at all).
    for (double clipnorm : {0.5 * norm, 2.0 * norm}) {
      SCOPED_TRACE(::testing::Message() << "n=" << n << " norm=" << norm << " clipnorm=" << clipnorm);
      std::vector<float> g = g0;
      const double returned = clip_by_global_norm(g, clipnorm);
      EXPECT_NEAR(returned, norm, 1e-12 * norm);
      if (clipnorm >= norm) {
        EXPECT_TRUE(same_bits(g, g0));
      } else {
        std::vector<double> expected(n);
        for (int64_t i = 0; i < n; ++i) expected[i] = g0[i] * (clipnorm / norm);
        EXPECT_TRUE(all_close(g, expected, 2, max_abs(expected)));
        double clipped = 0.0;
        for (float x : g) clipped += double{x} * x;
        EXPECT_NEAR(std::sqrt(clipped), clipnorm, 1e-6 * clipnorm);
      }
    }
  }
}

TEST(ClipByGlobalNorm, HandCase) {
  std::vector<float> g = {3.0F, 4.0F};  // norm 5
  EXPECT_EQ(clip_by_global_norm(g, 1.0), 5.0);
  EXPECT_FLOAT_EQ(g[0], 0.6F);
  EXPECT_FLOAT_EQ(g[1], 0.8F);
  std::vector<float> same = {3.0F, 4.0F};
  EXPECT_EQ(clip_by_global_norm(same, 5.0), 5.0);  // exactly at the limit: untouched
  EXPECT_EQ(same[0], 3.0F);
  EXPECT_EQ(same[1], 4.0F);
}

TEST(ClipByGlobalNorm, ZeroAndEmpty) {
  std::vector<float> zeros(10, 0.0F);
  EXPECT_EQ(clip_by_global_norm(zeros, 1.0), 0.0);
  for (float x : zeros) EXPECT_EQ(x, 0.0F);
  std::vector<float> empty;
  EXPECT_EQ(clip_by_global_norm(empty, 1.0), 0.0);
}

TEST(ClipByGlobalNorm, NonFiniteNormPoisonsEveryGradientLikeKeras) {
  std::vector<float> g = {1.0F, std::numeric_limits<float>::infinity(), 2.0F};
  EXPECT_TRUE(std::isinf(clip_by_global_norm(g, 1.0)));
  for (float x : g) EXPECT_TRUE(std::isnan(x));
  std::vector<float> h = {1.0F, std::numeric_limits<float>::quiet_NaN()};
  EXPECT_TRUE(std::isnan(clip_by_global_norm(h, 1.0)));
  for (float x : h) EXPECT_TRUE(std::isnan(x));
}

TEST(ClipByGlobalNorm, NonPositiveClipnormIsAnError) {
  std::vector<float> g = {1.0F};
  EXPECT_EQ(error_of([&] { clip_by_global_norm(g, 0.0); }), "global_clipnorm = 0: expected global_clipnorm > 0");
  EXPECT_THROW(clip_by_global_norm(g, -1.0), Error);
  EXPECT_THROW(clip_by_global_norm(g, std::numeric_limits<double>::quiet_NaN()), Error);
}

TEST(ClipByGlobalNorm, SameBitsForAnyThreadCount) {
  // Every rank clips the same reduced gradient; the result must not depend on its OpenMP thread count.
  const int64_t n = 100003;
  const std::vector<float> g0 = random_gradients(n, 99);
  const int saved = omp_get_max_threads();
  std::vector<float> first;
  double first_norm = 0.0;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    std::vector<float> g = g0;
    const double norm = clip_by_global_norm(g, 1.0);
    if (first.empty()) {
      first = g;
      first_norm = norm;
    } else {
      SCOPED_TRACE(::testing::Message() << threads << " threads");
      EXPECT_EQ(std::bit_cast<uint64_t>(norm), std::bit_cast<uint64_t>(first_norm));
      EXPECT_TRUE(same_bits(g, first));
    }
  }
  omp_set_num_threads(saved);
}

}  // namespace
}  // namespace shardfit
