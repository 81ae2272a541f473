// Tests of kernels/loss: every loss against a naive double-precision reference written here, its gradient against
// finite differences of that reference, the fused logit paths against the clipped probability formula, and errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "kernels/loss.h"
#include "tests/support/numeric_checks.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace shardfit {
namespace {

using testing::all_close;
using testing::finite_difference_gradient;
using testing::to_double;

constexpr double kFloatEps = 1.1920928955078125e-07;
constexpr int64_t kSampleCounts[] = {1, 3, 17, 64};
constexpr int64_t kWidths[] = {1, 2, 7, 10};

// Which tensor the loss differentiates (outputs, or the logits when fused) and how the labels are laid out.
enum class Input { kOutputs, kLogits };
enum class Labels { kTargets, kHardTargets, kOneHot, kClassIds };

struct Spec {
  std::string loss;
  Input input;
  Labels labels;
};

std::string describe(const Spec& spec) {
  const char* labels[] = {"soft targets", "0/1 targets", "one-hot", "class ids"};
  return spec.loss + (spec.input == Input::kLogits ? " fused on logits" : " on outputs") + ", " +
         labels[static_cast<int>(spec.labels)];
}

bool is_regression(const std::string& loss) {
  return loss == "mse" || loss == "mean_squared_error" || loss == "mae" || loss == "mean_absolute_error";
}

struct Problem {
  int64_t n = 0;
  int64_t dim = 0;
  int64_t label_dim = 0;
  std::vector<float> x;        // (n, dim) what the loss differentiates: outputs, or logits when fused
  std::vector<float> outputs;  // (n, dim) what the caller passes as outputs: x itself, or the activation of x
  std::vector<float> labels;   // (n, label_dim)
  std::vector<float> weights;  // (n), or empty for all ones
};

// ---- the naive reference, double precision throughout ----

double clip(double p) {
  const double eps = kProbabilityEpsilon;
  return std::min(std::max(p, eps), 1.0 - eps);
}

// Sample i's targets as a dense (dim) row. The rule under test: sparse CE always reads class ids; otherwise labels
// of width 1 for a wider output are class ids, and labels as wide as the output are targets.
std::vector<double> dense_targets(const std::string& loss, const Problem& p, int64_t i) {
  std::vector<double> y(p.dim, 0.0);
  if (loss == "sparse_categorical_crossentropy" || p.label_dim != p.dim) {
    y[static_cast<int64_t>(p.labels[i])] = 1.0;
  } else {
    for (int64_t k = 0; k < p.dim; ++k) y[k] = p.labels[i * p.dim + k];
  }
  return y;
}

// Sum over samples of weight * per-sample loss as a function of x. A fused loss is referenced by the clipped
// probability formula applied to the activation of the logits, computed in double.
double reference_loss(const std::string& loss, Input input, const Problem& p, const std::vector<double>& x) {
  double total = 0.0;
  for (int64_t i = 0; i < p.n; ++i) {
    std::vector<double> q(x.begin() + i * p.dim, x.begin() + (i + 1) * p.dim);
    const std::vector<double> y = dense_targets(loss, p, i);
    if (input == Input::kLogits && loss == "binary_crossentropy") {
      for (double& v : q) v = 1.0 / (1.0 + std::exp(-v));
    } else if (input == Input::kLogits) {
      double sum = 0.0;
      for (double v : q) sum += std::exp(v);
      for (double& v : q) v = std::exp(v) / sum;
    } else if (loss == "categorical_crossentropy" || loss == "sparse_categorical_crossentropy") {
      // Keras 3 on probabilities: divided by the row sum, then clipped (outputs need not be a softmax).
      double sum = 0.0;
      for (double v : q) sum += v;
      for (double& v : q) v /= sum;
    }
    double sample = 0.0;
    for (int64_t k = 0; k < p.dim; ++k) {
      if (loss == "mse" || loss == "mean_squared_error") {
        sample += (q[k] - y[k]) * (q[k] - y[k]) / p.dim;
      } else if (loss == "mae" || loss == "mean_absolute_error") {
        sample += std::abs(q[k] - y[k]) / p.dim;
      } else if (loss == "binary_crossentropy") {
        sample -= (y[k] * std::log(clip(q[k])) + (1 - y[k]) * std::log(1 - clip(q[k]))) / p.dim;
      } else {
        sample -= y[k] * std::log(clip(q[k]));
      }
    }
    total += (p.weights.empty() ? 1.0 : p.weights[i]) * sample;
  }
  return total;
}

// ---- inputs ----

// Draws inputs away from the places the reference is not smooth (clip bounds, |x - y| = 0), so that finite
// differences are meaningful, and keeps probabilities where the clip does not act.
Problem make_problem(const Spec& spec, int64_t n, int64_t dim, bool weighted, uint32_t seed) {
  std::mt19937 rng(seed);
  auto uniform = [&rng](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  Problem p;
  p.n = n;
  p.dim = dim;
  p.label_dim = spec.labels == Labels::kClassIds ? 1 : dim;
  p.x.resize(n * dim);
  p.labels.resize(n * p.label_dim);
  const bool regression = is_regression(spec.loss);
  for (float& v : p.x) {
    if (spec.input == Input::kLogits) {
      v = static_cast<float>(uniform(-3, 3));
    } else {
      v = static_cast<float>(regression ? uniform(-2, 2) : uniform(0.05, 0.95));
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t cls = std::uniform_int_distribution<int64_t>(0, dim - 1)(rng);
    for (int64_t k = 0; k < p.label_dim; ++k) {
      float& y = p.labels[i * p.label_dim + k];
      switch (spec.labels) {
        case Labels::kTargets:
          y = static_cast<float>(regression ? uniform(-2, 2) : uniform(0, 1));
          break;
        case Labels::kHardTargets:
          y = uniform(0, 1) < 0.5 ? 0.0F : 1.0F;
          break;
        case Labels::kOneHot:
          y = k == cls ? 1.0F : 0.0F;
          break;
        case Labels::kClassIds:
          y = static_cast<float>(cls);
          break;
      }
      // mae's kink: keep every |x - y| well above the finite-difference step.
      float& x = p.x[i * dim + k];
      while (regression && std::abs(x - y) < 1e-3F) x = static_cast<float>(uniform(-2, 2));
    }
  }
  p.outputs = p.x;
  if (spec.input == Input::kLogits) {
    for (int64_t i = 0; i < n; ++i) {
      const float* z = p.x.data() + i * dim;
      float* out = p.outputs.data() + i * dim;
      double sum = 0.0;
      for (int64_t k = 0; k < dim; ++k) sum += std::exp(static_cast<double>(z[k]));
      for (int64_t k = 0; k < dim; ++k) {
        out[k] = static_cast<float>(spec.loss == "binary_crossentropy" ? 1.0 / (1.0 + std::exp(-z[k]))
                                                                       : std::exp(z[k]) / sum);
      }
    }
  }
  if (weighted) {
    p.weights.resize(n);
    for (float& w : p.weights) w = static_cast<float>(uniform(0, 2));
    if (n >= 3) p.weights[n / 2] = 0.0F;  // a zero weight must zero that sample's gradient
  }
  return p;
}

LossArgs args_for(const Spec& spec, const Problem& p, float* grad) {
  LossArgs args;
  args.outputs = p.outputs.data();
  args.logits = spec.input == Input::kLogits ? p.x.data() : nullptr;
  args.labels = p.labels.data();
  args.sample_weights = p.weights.empty() ? nullptr : p.weights.data();
  args.n = p.n;
  args.dim = p.dim;
  args.label_dim = p.label_dim;
  args.grad = grad;
  return args;
}

// The loss is accumulated in double from float inputs; float-precision per-element work would also pass.
::testing::AssertionResult loss_close(double actual, double expected, double k = 8) {
  const double tol = k * kFloatEps * std::max(std::abs(expected), 1.0);
  if (std::abs(actual - expected) <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "loss " << actual << ", expected " << expected << " (tolerance " << tol
                                       << ")";
}

// Value against the reference, gradient against finite differences of the reference, and loss-only calls.
void check_against_reference(const Spec& spec) {
  const auto loss = make_loss(spec.loss);
  ASSERT_EQ(loss->name(), spec.loss);
  uint32_t seed = 1;
  for (int64_t n : kSampleCounts) {
    for (int64_t dim : kWidths) {
      // softmax over one unit is 1, which the probability formula clips: no clip-free reference exists there.
      if (spec.input == Input::kLogits && spec.loss != "binary_crossentropy" && dim == 1) continue;
      for (bool weighted : {false, true}) {
        SCOPED_TRACE(describe(spec) + ", n " + std::to_string(n) + ", dim " + std::to_string(dim) +
                     (weighted ? ", weighted" : ", unweighted"));
        const Problem p = make_problem(spec, n, dim, weighted, seed++);
        std::vector<float> grad(n * dim, NAN);
        const double value = loss->compute(args_for(spec, p, grad.data()));

        auto reference = [&](const std::vector<double>& x) { return reference_loss(spec.loss, spec.input, p, x); };
        EXPECT_TRUE(loss_close(value, reference(to_double(p.x))));
        EXPECT_TRUE(all_close(grad, finite_difference_gradient(reference, to_double(p.x)), 8));
        EXPECT_EQ(loss->compute(args_for(spec, p, nullptr)), value);
      }
    }
  }
}

TEST(Loss, MseMatchesReference) { check_against_reference({"mse", Input::kOutputs, Labels::kTargets}); }
TEST(Loss, MeanSquaredErrorMatchesReference) {
  check_against_reference({"mean_squared_error", Input::kOutputs, Labels::kTargets});
}
TEST(Loss, MaeMatchesReference) { check_against_reference({"mae", Input::kOutputs, Labels::kTargets}); }
TEST(Loss, MeanAbsoluteErrorMatchesReference) {
  check_against_reference({"mean_absolute_error", Input::kOutputs, Labels::kTargets});
}
TEST(Loss, BinaryCrossentropyMatchesReference) {
  check_against_reference({"binary_crossentropy", Input::kOutputs, Labels::kHardTargets});
  check_against_reference({"binary_crossentropy", Input::kOutputs, Labels::kTargets});
}
TEST(Loss, BinaryCrossentropyFusedMatchesClippedFormula) {
  check_against_reference({"binary_crossentropy", Input::kLogits, Labels::kHardTargets});
  check_against_reference({"binary_crossentropy", Input::kLogits, Labels::kTargets});
}
TEST(Loss, CategoricalCrossentropyMatchesReference) {
  check_against_reference({"categorical_crossentropy", Input::kOutputs, Labels::kOneHot});
  check_against_reference({"categorical_crossentropy", Input::kOutputs, Labels::kTargets});
  check_against_reference({"categorical_crossentropy", Input::kOutputs, Labels::kClassIds});
}
TEST(Loss, CategoricalCrossentropyFusedMatchesClippedFormula) {
  check_against_reference({"categorical_crossentropy", Input::kLogits, Labels::kOneHot});
  // soft targets that do not sum to one: the fused form must still be the probability formula
  check_against_reference({"categorical_crossentropy", Input::kLogits, Labels::kTargets});
  check_against_reference({"categorical_crossentropy", Input::kLogits, Labels::kClassIds});
}
TEST(Loss, SparseCategoricalCrossentropyMatchesReference) {
  check_against_reference({"sparse_categorical_crossentropy", Input::kOutputs, Labels::kClassIds});
}
TEST(Loss, SparseCategoricalCrossentropyFusedMatchesClippedFormula) {
  check_against_reference({"sparse_categorical_crossentropy", Input::kLogits, Labels::kClassIds});
}

TEST(Loss, FusionRules) {
  for (const char* name : {"mse", "mean_squared_error", "mae", "mean_absolute_error"}) {
    const auto loss = make_loss(name);
    for (auto kind : {ActivationKind::kLinear, ActivationKind::kSigmoid, ActivationKind::kSoftmax}) {
      EXPECT_FALSE(loss->fuses_with(kind)) << name;
    }
  }
  EXPECT_TRUE(make_loss("binary_crossentropy")->fuses_with(ActivationKind::kSigmoid));
  EXPECT_FALSE(make_loss("binary_crossentropy")->fuses_with(ActivationKind::kSoftmax));
  for (const char* name : {"categorical_crossentropy", "sparse_categorical_crossentropy"}) {
    EXPECT_TRUE(make_loss(name)->fuses_with(ActivationKind::kSoftmax)) << name;
    EXPECT_FALSE(make_loss(name)->fuses_with(ActivationKind::kSigmoid)) << name;
    EXPECT_FALSE(make_loss(name)->fuses_with(ActivationKind::kLinear)) << name;
  }
}

// The same probabilities through the fused and the probability path: equal up to the float rounding of the
// probabilities (|d log p| <= eps per term), for every categorical label layout.
TEST(Loss, FusedAndProbabilityPathsAgree) {
  for (Labels labels : {Labels::kOneHot, Labels::kClassIds}) {
    for (const char* name : {"categorical_crossentropy", "sparse_categorical_crossentropy"}) {
      if (labels == Labels::kOneHot && std::string(name) == "sparse_categorical_crossentropy") continue;
      const Spec fused{name, Input::kLogits, labels};
      const Spec plain{name, Input::kOutputs, labels};
      const Problem p = make_problem(fused, 17, 7, true, 99);
      std::vector<float> fused_grad(p.x.size());
      std::vector<float> plain_grad(p.x.size());
      const double fused_loss = make_loss(name)->compute(args_for(fused, p, fused_grad.data()));
      const double plain_loss = make_loss(name)->compute(args_for(plain, p, plain_grad.data()));
      double weight_sum = 0.0;
      for (float w : p.weights) weight_sum += w;
      EXPECT_NEAR(plain_loss, fused_loss, 4 * kFloatEps * weight_sum) << name;
    }
  }
}

// ---- stability, clipping, edge values ----

TEST(Loss, FusedCategoricalIsStableForHugeLogits) {
  const std::vector<float> logits = {1000, -1000, 0, -1000, 1000, 1000};  // (2, 3)
  const std::vector<float> outputs = {1, 0, 0, 0, 0.5F, 0.5F};
  const std::vector<float> ids = {1, 0};
  const std::vector<float> one_hot = {0, 1, 0, 1, 0, 0};
  for (const char* name : {"categorical_crossentropy", "sparse_categorical_crossentropy"}) {
    for (bool use_ids : {true, false}) {
      if (!use_ids && std::string(name) == "sparse_categorical_crossentropy") continue;
      SCOPED_TRACE(std::string(name) + (use_ids ? ", class ids" : ", one-hot"));
      std::vector<float> grad(6, NAN);
      LossArgs args{outputs.data(),  logits.data(), use_ids ? ids.data() : one_hot.data(), nullptr, 2, 3,
                    use_ids ? 1 : 3, grad.data()};
      const double value = make_loss(name)->compute(args);
      // sample 0: lse = 1000, label logit -1000 -> 2000; sample 1: lse = 1000 + log 2, label logit -1000.
      EXPECT_TRUE(loss_close(value, 2000.0 + 2000.0 + std::log(2.0)));
      EXPECT_TRUE(all_close(grad, std::vector<double>{1, -1, 0, -1, 0.5, 0.5}, 4));
    }
  }
}

TEST(Loss, FusedBinaryIsStableForHugeLogits) {
  const std::vector<float> logits = {1000, -1000, 1000, -1000};  // (2, 2)
  const std::vector<float> outputs = {1, 0, 1, 0};
  const std::vector<float> labels = {0, 1, 1, 0};
  std::vector<float> grad(4, NAN);
  LossArgs args{outputs.data(), logits.data(), labels.data(), nullptr, 2, 2, 2, grad.data()};
  const double value = make_loss("binary_crossentropy")->compute(args);
  // sample 0 is wrong by 1000 on both units (mean 1000), sample 1 is right (0).
  EXPECT_TRUE(loss_close(value, 1000.0));
  EXPECT_TRUE(all_close(grad, std::vector<double>{0.5, -0.5, 0, 0}, 4));
}

TEST(Loss, ClippedProbabilitiesGiveFiniteLossAndZeroGradient) {
  const double log_eps = std::log(static_cast<double>(kProbabilityEpsilon));
  {
    const std::vector<float> outputs = {0, 1};  // (1, 2)
    const std::vector<float> labels = {1, 0};
    std::vector<float> grad(2, NAN);
    LossArgs args{outputs.data(), nullptr, labels.data(), nullptr, 1, 2, 2, grad.data()};
    EXPECT_TRUE(loss_close(make_loss("binary_crossentropy")->compute(args), -log_eps));
    EXPECT_TRUE(all_close(grad, std::vector<double>{0, 0}, 1));
    EXPECT_TRUE(loss_close(make_loss("categorical_crossentropy")->compute(args), -log_eps));
    EXPECT_TRUE(all_close(grad, std::vector<double>{0, 0}, 1));
  }
  {
    const std::vector<float> outputs = {0, 1};
    const std::vector<float> id = {0};
    std::vector<float> grad(2, NAN);
    LossArgs args{outputs.data(), nullptr, id.data(), nullptr, 1, 2, 1, grad.data()};
    EXPECT_TRUE(loss_close(make_loss("sparse_categorical_crossentropy")->compute(args), -log_eps));
    EXPECT_TRUE(all_close(grad, std::vector<double>{0, 0}, 1));
  }
}

// A sigmoid output trained with categorical_crossentropy: Keras divides the outputs by their sum before clipping,
// so the loss is that of the normalised row, not -log of the raw output, and every unit gets a gradient.
TEST(Loss, CategoricalOnOutputsThatAreNotASoftmaxIsNormalisedByTheRowSum) {
  const std::vector<float> outputs = {0.9F, 0.6F, 0.3F, 0.2F, 0.2F, 0.1F};  // (2, 3), rows sum to 1.8 and 0.5
  const std::vector<float> one_hot = {0, 0, 1, 1, 0, 0};
  const std::vector<float> ids = {2, 0};
  const double row0 = 0.9 + 0.6 + 0.3;
  const double row1 = 0.2 + 0.2 + 0.1;
  const double expected = -std::log(0.3 / row0) - std::log(0.2 / row1);  // ln 6 + ln 2.5
  const double unnormalised = -std::log(0.3) - std::log(0.2);
  for (const char* name : {"categorical_crossentropy", "sparse_categorical_crossentropy"}) {
    for (bool use_ids : {true, false}) {
      if (!use_ids && std::string(name) == "sparse_categorical_crossentropy") continue;
      SCOPED_TRACE(std::string(name) + (use_ids ? ", class ids" : ", one-hot"));
      std::vector<float> grad(6, NAN);
      LossArgs args{outputs.data(),  nullptr,    use_ids ? ids.data() : one_hot.data(), nullptr, 2, 3,
                    use_ids ? 1 : 3, grad.data()};
      const double value = make_loss(name)->compute(args);
      EXPECT_TRUE(loss_close(value, expected));
      EXPECT_GT(std::abs(value - unnormalised), 0.1);
      // d/do_j of -log(o_c / s) = 1/s - [j == c] / o_c.
      EXPECT_TRUE(all_close(
          grad, std::vector<double>{1 / row0, 1 / row0, 1 / row0 - 1 / 0.3, 1 / row1 - 1 / 0.2, 1 / row1, 1 / row1},
          8));
    }
  }
}

TEST(Loss, MaeGradientIsZeroAtTies) {
  const std::vector<float> outputs = {0.25F, -1, 3};
  const std::vector<float> labels = {0.25F, 0, 3};
  std::vector<float> grad(3, NAN);
  LossArgs args{outputs.data(), nullptr, labels.data(), nullptr, 1, 3, 3, grad.data()};
  EXPECT_TRUE(loss_close(make_loss("mae")->compute(args), 1.0 / 3));
  EXPECT_TRUE(all_close(grad, std::vector<double>{0, -1.0 / 3, 0}, 1));
}

// Softmax over a single unit is 1 whatever the logit: loss and gradient are zero for a one-hot target.
TEST(Loss, FusedCategoricalOverOneUnit) {
  const std::vector<float> logits = {-5, 0, 40};
  const std::vector<float> outputs = {1, 1, 1};
  const std::vector<float> ids = {0, 0, 0};
  std::vector<float> grad(3, NAN);
  LossArgs args{outputs.data(), logits.data(), ids.data(), nullptr, 3, 1, 1, grad.data()};
  EXPECT_EQ(make_loss("sparse_categorical_crossentropy")->compute(args), 0.0);
  EXPECT_TRUE(all_close(grad, std::vector<double>{0, 0, 0}, 1));
}

// A rank may get no samples in the last batch; it still calls the loss.
TEST(Loss, NoSamplesIsZero) {
  for (const char* name : {"mse", "mae", "binary_crossentropy", "categorical_crossentropy"}) {
    LossArgs args;
    args.dim = 4;
    args.label_dim = 4;
    EXPECT_EQ(make_loss(name)->compute(args), 0.0) << name;
  }
}

// A float accumulator would drop every later 1 against the first sample's 1e8.
TEST(Loss, AccumulatesInDouble) {
  const int64_t n = 1001;
  const std::vector<float> outputs(n, 1.0F);
  const std::vector<float> labels(n, 0.0F);
  std::vector<float> weights(n, 1.0F);
  weights[0] = 1e8F;
  LossArgs args{outputs.data(), nullptr, labels.data(), weights.data(), n, 1, 1, nullptr};
  EXPECT_EQ(make_loss("mse")->compute(args), 1e8 + 1000);
}

// Above the parallel threshold: the same value as the reference, and thread counts change only the rounding.
TEST(Loss, LargeBatchMatchesReferenceForAnyThreadCount) {
  const Spec spec{"categorical_crossentropy", Input::kLogits, Labels::kClassIds};
  const Problem p = make_problem(spec, 4099, 10, true, 7);
  const auto loss = make_loss(spec.loss);
  const double expected = reference_loss(spec.loss, spec.input, p, to_double(p.x));
  std::vector<std::vector<float>> grads;
  for (int threads : {1, 2, 3}) {
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    grads.emplace_back(p.x.size());
    const double value = loss->compute(args_for(spec, p, grads.back().data()));
    EXPECT_TRUE(loss_close(value, expected)) << threads << " threads";
  }
  // each gradient element is computed by one thread alone, so it is bitwise the same
  EXPECT_EQ(grads[0], grads[1]);
  EXPECT_EQ(grads[0], grads[2]);
}

// ---- errors ----

// Runs f, expecting an Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    const std::string what = e.what();
    for (const auto& part : parts) EXPECT_NE(what.find(part), std::string::npos) << "'" << part << "' not in: " << what;
  }
}

TEST(LossErrors, BadClassIdNamesSampleValueAndRange) {
  const std::vector<float> outputs(3 * 4, 0.25F);
  std::vector<float> grad(3 * 4);
  for (const char* name : {"sparse_categorical_crossentropy", "categorical_crossentropy"}) {
    for (float bad : {4.0F, -1.0F, 1.5F, NAN}) {
      SCOPED_TRACE(std::string(name) + ", label " + std::to_string(bad));
      const std::vector<float> ids = {0, 3, bad};
      LossArgs args{outputs.data(), nullptr, ids.data(), nullptr, 3, 4, 1, grad.data()};
      std::ostringstream value;
      value << bad;
      expect_error([&] { make_loss(name)->compute(args); }, {name, "sample 2", value.str(), "[0, 4)"});
    }
  }
}

TEST(LossErrors, LabelWidthMismatch) {
  const std::vector<float> values(3 * 4, 0.25F);
  LossArgs args{values.data(), nullptr, values.data(), nullptr, 3, 4, 2, nullptr};
  for (const char* name : {"mse", "mae", "binary_crossentropy", "categorical_crossentropy"}) {
    expect_error([&] { make_loss(name)->compute(args); }, {name, "label width 2", "output width 4"});
  }
  // regression and binary losses take targets only, never class ids
  args.label_dim = 1;
  expect_error([&] { make_loss("mse")->compute(args); }, {"label width 1", "output width 4"});
  // sparse takes class ids only
  args.label_dim = 4;
  expect_error([&] { make_loss("sparse_categorical_crossentropy")->compute(args); }, {"label width 4"});
}

TEST(LossErrors, UnknownLossListsValidNames) {
  expect_error([] { make_loss("hinge"); }, {"'hinge'", "mse", "sparse_categorical_crossentropy"});
  expect_error([] { make_loss("MSE"); }, {"'MSE'"});
}

TEST(LossErrors, LogitsForALossThatDoesNotFuse) {
  const std::vector<float> values(4, 0.25F);
  LossArgs args{values.data(), values.data(), values.data(), nullptr, 1, 4, 4, nullptr};
  expect_error([&] { make_loss("mse")->compute(args); }, {"logits"});
}

}  // namespace
}  // namespace shardfit
