// The Sequential model end to end: built from a job, its gradients against a naive double-precision MLP
// (and finite differences of it), the fused softmax / sigmoid + cross-entropy wiring, weights in Keras layout;
// the same gradient check under mixed_bfloat16, against the f32 master weights.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <utility>
#include <vector>

#include "kernels/dense.h"
#include "kernels/error.h"
#include "kernels/job_file.h"
#include "kernels/model_factory.h"
#include "kernels/optimizer.h"
#include "kernels/precision.h"
#include "kernels/random.h"
#include "tests/support/numeric_checks.h"

namespace shardfit {
namespace {

using testing::all_close;
using testing::finite_difference_gradient;

// The reference: Dense layers with an activation each, then the loss, all in double, from Keras-layout weights.
struct RefLayer {
  int64_t in;
  int64_t out;
  std::string activation;
};

double activate(const std::string& a, double z) {
  if (a == "relu") return z > 0 ? z : 0;
  if (a == "tanh") return std::tanh(z);
  if (a == "sigmoid") return 1 / (1 + std::exp(-z));
  if (a == "gelu") return 0.5 * z * (1 + std::erf(z / std::sqrt(2.0)));
  return z;
}

// Sum over samples of the loss; params in the model's flat order (per layer: kernel (in, out), bias (out)).
double reference_loss(const std::vector<RefLayer>& layers, const std::string& loss, const std::vector<double>& params,
                      const std::vector<double>& x, const std::vector<double>& labels, int64_t n) {
  double total = 0;
  for (int64_t s = 0; s < n; ++s) {
    std::vector<double> a(x.begin() + s * layers[0].in, x.begin() + (s + 1) * layers[0].in);
    size_t offset = 0;
    for (const auto& l : layers) {
      std::vector<double> z(l.out, 0.0);
      for (int64_t j = 0; j < l.out; ++j) {
        double acc = params[offset + l.in * l.out + j];
        for (int64_t i = 0; i < l.in; ++i) acc += a[i] * params[offset + i * l.out + j];
        z[j] = acc;
      }
      offset += l.in * l.out + l.out;
      if (l.activation == "softmax") {
        double m = z[0];
        for (double v : z) m = std::max(m, v);
        double sum = 0;
        for (double& v : z) sum += (v = std::exp(v - m));
        for (double& v : z) v /= sum;
      } else {
        for (double& v : z) v = activate(l.activation, v);
      }
      a = z;
    }
    const int64_t dim = layers.back().out;
    if (loss == "sparse_categorical_crossentropy") {
      total += -std::log(a[static_cast<int64_t>(labels[s])]);
    } else if (loss == "binary_crossentropy") {
      for (int64_t j = 0; j < dim; ++j) {
        const double y = labels[s * dim + j];
        total += -(y * std::log(a[j]) + (1 - y) * std::log(1 - a[j])) / dim;
      }
    } else {  // mse
      for (int64_t j = 0; j < dim; ++j) total += std::pow(a[j] - labels[s * dim + j], 2) / dim;
    }
  }
  return total;
}

struct Case {
  std::string job;
  std::vector<RefLayer> layers;
  std::string loss;
};

// bf16: the job under mixed_bfloat16. The reference is the same double model at the f32 master weights; the
// tolerances grow by bf16's roundings (kernels/precision.h, tests/kernels/test_dense.cpp): each Dense matmul
// rounds both operands, 2u + u^2 = 2^16 + 2^7 f32 eps relative per product with u = 2^-8, forward and backward,
// and a layer's error reaches the ones below it: 2 x layers such terms for the gradients, `layers` for the loss.
void check_gradients(const Case& c, int64_t n, bool bf16 = false) {
  proto::Job job = parse_job_text(c.job, "case.pbtxt");
  if (bf16) job.mutable_model()->set_dtype_policy("mixed_bfloat16");
  auto model = build_model(job, c.layers[0].in);
  if (bf16) {
    ASSERT_EQ(model->dtype_policy(), cpu_has_bf16() ? DtypePolicy::kMixedBfloat16 : DtypePolicy::kFloat32);
    ASSERT_EQ(model->dtype_policy_warning().empty(), cpu_has_bf16());
  }
  const double bf16_terms = bf16 ? 65664.0 * static_cast<double>(c.layers.size()) : 0.0;
  model->initialize(7);
  // Non-zero biases so their gradients are exercised through the activations.
  Rng rng(11);
  for (float& p : model->parameters()) p += static_cast<float>(rng.uniform(-0.1, 0.1));

  model->reserve(n);
  const int64_t in = c.layers[0].in;
  const int64_t out = c.layers.back().out;
  std::vector<double> x(n * in);
  std::vector<double> labels(n * model->label_dim());
  for (auto& v : x) v = rng.uniform(-1.5, 1.5);
  for (int64_t s = 0; s < n; ++s) {
    if (model->label_dim() == 1) {
      labels[s] = static_cast<double>(rng.below(out));
    } else {
      for (int64_t j = 0; j < out; ++j) labels[s * out + j] = c.loss == "mse" ? rng.uniform(-1, 1) : rng.uniform();
    }
  }
  for (size_t i = 0; i < x.size(); ++i) model->input()[i] = static_cast<float>(x[i]);
  for (size_t i = 0; i < labels.size(); ++i) model->labels()[i] = static_cast<float>(labels[i]);

  std::vector<double> metric_sums(model->metric_names().size());
  const double loss = model->train_batch(n, BatchContext{true, 1, 0, 0}, false, metric_sums);

  const std::vector<double> params = testing::to_double(model->parameters());
  const auto f = [&](const std::vector<double>& p) { return reference_loss(c.layers, c.loss, p, x, labels, n); };
  const double expected_loss = f(params);
  EXPECT_NEAR(loss, expected_loss, (64 + bf16_terms) * 1.2e-7 * std::max(1.0, std::abs(expected_loss))) << "n=" << n;

  const std::vector<double> fd = finite_difference_gradient(f, params, 1e-5);
  // Float forward + backward through a few layers of width <= 16: errors of a few hundred ulps of the largest
  // gradient are rounding; a wiring mistake is off by O(1).
  EXPECT_TRUE(all_close(model->gradients(), fd, 512 + 2 * bf16_terms)) << "n=" << n;

  // Inference gives the same loss (no dropout here), and evaluate does not touch the gradients.
  std::vector<float> grads_before(model->gradients().begin(), model->gradients().end());
  const double eval_loss = model->evaluate_batch(n, metric_sums);
  EXPECT_NEAR(eval_loss, loss, 1e-6 * std::max(1.0, std::abs(loss)));
  EXPECT_TRUE(std::equal(grads_before.begin(), grads_before.end(), model->gradients().begin()));

  // Weights loaded afterwards are what the next forward computes with: under bf16 the copy is refreshed.
  auto weights = model->get_weights();
  for (auto& w : weights) {
    for (float& v : w.values) v *= 0.5F;
  }
  model->set_weights(weights);
  // Read through the const view: the non-const parameters() would mark the copy stale itself and hide a
  // set_weights that does not.
  const double halved = f(testing::to_double(std::as_const(*model).parameters()));
  EXPECT_NEAR(model->evaluate_batch(n, metric_sums), halved,
              (64 + bf16_terms) * 1.2e-7 * std::max(1.0, std::abs(halved)))
      << "n=" << n;
}

TEST(Model, SoftmaxCrossEntropyMlpMatchesReference) {
  const Case c{R"(
    model { layers { dense { units: 9 activation: "relu" } }
            layers { dense { units: 7 activation: "tanh" } }
            layers { dense { units: 4 activation: "softmax" } } }
    loss: "sparse_categorical_crossentropy" metrics: "accuracy")",
               {{5, 9, "relu"}, {9, 7, "tanh"}, {7, 4, "softmax"}},
               "sparse_categorical_crossentropy"};
  for (int64_t n : {1, 3, 17}) check_gradients(c, n);
}

TEST(Model, SigmoidBinaryCrossEntropyAndGelu) {
  const Case c{R"(
    model { layers { dense { units: 6 activation: "gelu" } }
            layers { dense { units: 3 activation: "sigmoid" } } }
    loss: "binary_crossentropy")",
               {{4, 6, "gelu"}, {6, 3, "sigmoid"}},
               "binary_crossentropy"};
  for (int64_t n : {1, 5}) check_gradients(c, n);
}

TEST(Model, MseWithSigmoidHiddenAndLinearOutput) {
  const Case c{R"(
    model { layers { dense { units: 8 activation: "sigmoid" } } layers { dense { units: 2 } } }
    loss: "mse" metrics: "mae")",
               {{3, 8, "sigmoid"}, {8, 2, "linear"}},
               "mse"};
  for (int64_t n : {1, 2, 9}) check_gradients(c, n);
}

// The three cases above under mixed_bfloat16: bf16 matmuls, gradients in f32 against the f32 master weights.
TEST(ModelBf16, GradientsMatchReference) {
  const Case softmax{R"(
    model { layers { dense { units: 9 activation: "relu" } }
            layers { dense { units: 7 activation: "tanh" } }
            layers { dense { units: 4 activation: "softmax" } } }
    loss: "sparse_categorical_crossentropy" metrics: "accuracy")",
                     {{5, 9, "relu"}, {9, 7, "tanh"}, {7, 4, "softmax"}},
                     "sparse_categorical_crossentropy"};
  const Case sigmoid{R"(
    model { layers { dense { units: 6 activation: "gelu" } }
            layers { dense { units: 3 activation: "sigmoid" } } }
    loss: "binary_crossentropy")",
                     {{4, 6, "gelu"}, {6, 3, "sigmoid"}},
                     "binary_crossentropy"};
  const Case mse{R"(
    model { layers { dense { units: 8 activation: "sigmoid" } } layers { dense { units: 2 } } }
    loss: "mse" metrics: "mae")",
                 {{3, 8, "sigmoid"}, {8, 2, "linear"}},
                 "mse"};
  // Two relu layers then a linear one: the activations between the three Dense are bf16 (bf16 edges).
  const Case relu{R"(
    model { layers { dense { units: 9 activation: "relu" } }
            layers { dense { units: 7 activation: "relu" } }
            layers { dense { units: 4 activation: "softmax" } } }
    loss: "sparse_categorical_crossentropy" metrics: "accuracy")",
                  {{5, 9, "relu"}, {9, 7, "relu"}, {7, 4, "softmax"}},
                  "sparse_categorical_crossentropy"};
  for (const Case* c : {&softmax, &sigmoid, &mse, &relu}) {
    for (int64_t n : {1, 3, 17}) check_gradients(*c, n, /*bf16=*/true);
  }
}

// The model keeps an activation bf16 where its producer writes and its consumer reads bf16 (kernels/precision.h
// note 3): a Dense there has no x conversion; after the input, a Dropout or a tanh Dense (f32 edges) it has one.
// Under float32 no edge is bf16 and nothing converts.
TEST(ModelBf16, ActivationsAreBf16OnlyBetweenBf16Layers) {
  const char* job = R"(model { dtype_policy: "%s"
                               layers { dense { units: 16 activation: "relu" } }
                               layers { dense { units: 12 activation: "relu" } }
                               layers { dropout { rate: 0.5 } }
                               layers { dense { units: 10 } }
                               layers { dense { units: 8 activation: "tanh" } }
                               layers { dense { units: 6 } }
                               layers { dense { units: 3 activation: "softmax" } } }
                       loss: "sparse_categorical_crossentropy")";
  for (const bool bf16 : {false, true}) {
    if (bf16 && !cpu_has_bf16()) GTEST_SKIP() << "mixed_bfloat16 runs float32 on this CPU";
    char text[1024];
    std::snprintf(text, sizeof text, job, bf16 ? "mixed_bfloat16" : "float32");
    auto model = build_model(parse_job_text(text, "edges"), 5);
    model->initialize(3);
    model->reserve(4);
    std::vector<double> sums;
    model->train_batch(4, BatchContext{true, 1, 0, 0}, false, sums);
    // Layers: dense 0 relu, dense 1 relu, dropout 2, dense 3, dense 4 tanh, dense 5, dense 6, softmax 7 (fused).
    const std::vector<bool> expected_bf16 =
        bf16 ? std::vector<bool>{false, true, false, false, true, false, true, false, false}
             : std::vector<bool>(9, false);
    ASSERT_EQ(model->layers().size() + 1, expected_bf16.size());
    for (size_t i = 0; i < expected_bf16.size(); ++i) {
      EXPECT_EQ(model->activation_is_bf16(i), expected_bf16[i]) << "activation " << i << (bf16 ? ", bf16" : "");
    }
    for (size_t i = 0; i < model->layers().size(); ++i) {
      auto* dense = dynamic_cast<Dense*>(model->layers()[i].get());
      if (dense == nullptr) continue;
      int converts = 0;
      for (const DensePiece& piece : dense->pieces(4)) converts += piece.name == "x-to-bf16" ? 1 : 0;
      EXPECT_EQ(converts, bf16 && !expected_bf16[i] ? 1 : 0) << "layer " << i << (bf16 ? ", bf16" : "");
    }
  }
}

// The bf16 weight copy is made once per step: at the first forward, then at the first forward after each
// update (the optimizer writes through parameters()); never per layer call, and not for evaluation or a second
// forward over unchanged weights. Each time it holds the current weights: a step of SGD moves the loss.
TEST(ModelBf16, WeightCopyIsRefreshedOncePerStep) {
  if (!cpu_has_bf16()) GTEST_SKIP() << "mixed_bfloat16 runs float32 on this CPU";
  auto model = build_model(parse_job_text(R"(model { dtype_policy: "mixed_bfloat16"
                                                     layers { dense { units: 16 activation: "relu" } }
                                                     layers { dense { units: 8 activation: "tanh" } }
                                                     layers { dense { units: 3 } } }
                                             loss: "mse")",
                                          "r"),
                           5);
  model->initialize(3);
  model->reserve(4);
  Rng rng(2);
  for (int64_t i = 0; i < 4 * 5; ++i) model->input()[i] = static_cast<float>(rng.uniform(-1, 1));
  for (int64_t i = 0; i < 4 * 3; ++i) model->labels()[i] = static_cast<float>(rng.uniform(-1, 1));
  std::vector<double> sums;
  EXPECT_EQ(model->compute_weight_refreshes(), 0);
  double previous = model->train_batch(4, BatchContext{true, 1, 0, 0}, false, sums);
  EXPECT_EQ(model->compute_weight_refreshes(), 1) << "three layers, one refresh";
  model->evaluate_batch(4, sums);
  model->predict_batch(4);
  EXPECT_EQ(model->compute_weight_refreshes(), 1) << "no weights written since";
  auto sgd = make_sgd(SgdOptions{0.1F, 0.0F, false}, model->param_count());
  for (int64_t step = 2; step <= 4; ++step) {
    sgd->update(model->parameters(), model->gradients());
    const double loss = model->train_batch(4, BatchContext{true, 1, 0, 0}, false, sums);
    EXPECT_EQ(model->compute_weight_refreshes(), step);
    EXPECT_LT(loss, previous) << "step " << step << " trained on stale weights";
    previous = loss;
  }
}

// The policy's field: a wrong name is an error naming it; float32 is the default.
TEST(ModelBf16, PolicyField) {
  EXPECT_EQ(
      build_model(parse_job_text(R"(model { layers { dense { units: 2 } } } loss: "mse")", "p"), 3)->dtype_policy(),
      DtypePolicy::kFloat32);
  try {
    build_model(parse_job_text(R"(model { dtype_policy: "bf16" layers { dense { units: 2 } } } loss: "mse")", "p"), 3);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.dtype_policy"), std::string::npos) << e.what();
  }
}

TEST(Model, FusesOnlyTheLossPairs) {
  auto fused = build_model(parse_job_text(R"(model { layers { dense { units: 3 activation: "softmax" } } }
                                             loss: "categorical_crossentropy")",
                                          "a"),
                           4);
  EXPECT_TRUE(fused->loss_is_fused());
  EXPECT_EQ(fused->layers().size(), 2U);  // Dense + Activation(softmax)
  auto plain = build_model(parse_job_text(R"(model { layers { dense { units: 3 activation: "sigmoid" } } }
                                             loss: "mse")",
                                          "b"),
                           4);
  EXPECT_FALSE(plain->loss_is_fused());
  EXPECT_EQ(plain->layers().size(), 1U);  // sigmoid fused into the matmul as a post-op
}

TEST(Model, WeightsInKerasLayoutRoundTrip) {
  auto model = build_model(parse_job_text(R"(model { layers { dense { units: 5 activation: "relu" } }
                                                     layers { dropout { rate: 0.5 } }
                                                     layers { dense { units: 2 use_bias: false } } }
                                             loss: "mse")",
                                          "w"),
                           3);
  model->initialize(3);
  auto weights = model->get_weights();
  ASSERT_EQ(weights.size(), 3U);
  EXPECT_EQ(weights[0].shape, (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(weights[1].shape, (std::vector<int64_t>{5}));
  EXPECT_EQ(weights[2].shape, (std::vector<int64_t>{5, 2}));
  EXPECT_EQ(model->param_count(), 3 * 5 + 5 + 5 * 2);
  // Kernel element (i, j) sits at i * out + j of the flat buffer: the numpy (in, out) C-order layout.
  EXPECT_EQ(weights[0].values[1 * 5 + 4], model->parameters()[1 * 5 + 4]);
  for (auto& w : weights) {
    for (float& v : w.values) v += 1.0F;
  }
  model->set_weights(weights);
  EXPECT_EQ(model->get_weights()[2].values, weights[2].values);
  weights[1].shape = {4};
  EXPECT_THROW(model->set_weights(weights), Error);
}

TEST(Model, SameSeedSameWeights) {
  const auto job = parse_job_text(
      R"(model { layers { dense { units: 16 } } layers { dense { units: 4 kernel_initializer: "he_normal" } } } loss: "mse")",
      "s");
  auto a = build_model(job, 8);
  auto b = build_model(job, 8);
  a->initialize(42);
  b->initialize(42);
  EXPECT_TRUE(std::equal(a->parameters().begin(), a->parameters().end(), b->parameters().begin()));
  b->initialize(43);
  EXPECT_FALSE(std::equal(a->parameters().begin(), a->parameters().end(), b->parameters().begin()));
}

TEST(Model, EmptyBatchGivesZeroGradients) {
  auto model = build_model(parse_job_text(R"(model { layers { dense { units: 2 } } } loss: "mse")", "e"), 3);
  model->initialize(1);
  for (float& g : model->gradients()) g = 5.0F;
  std::vector<double> sums;
  EXPECT_EQ(model->train_batch(0, BatchContext{}, false, sums), 0.0);
  for (float g : model->gradients()) EXPECT_EQ(g, 0.0F);
}

TEST(ModelFactory, ErrorsNameTheField) {
  const auto expect_error = [](const std::string& text, int64_t input_dim, const std::string& needle) {
    try {
      build_model(parse_job_text(text, "bad.pbtxt"), input_dim);
      ADD_FAILURE() << "no error for: " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(R"(model { layers { dense { units: 0 } } } loss: "mse")", 3, "model.layers[0].dense.units = 0");
  expect_error(R"(model { layers { dense { units: 2 activation: "swish" } } } loss: "mse")", 3,
               "model.layers[0].dense.activation");
  expect_error(R"(model { layers { dense { units: 2 } } } loss: "hinge")", 3, "loss");
  expect_error(R"(model { } loss: "mse")", 3, "model.layers is empty");
  expect_error(R"(model { input_dim: 5 layers { dense { units: 2 } } } loss: "mse")", 3, "model.input_dim = 5");
  expect_error(R"(model { layers { dropout { rate: 1.0 } } } loss: "mse")", 3, "model.layers[0].dropout.rate");
}

TEST(JobFile, SyntaxErrorsGiveLineAndColumn) {
  try {
    parse_job_text("loss: \"mse\"\nfit {\n  epochs: ten\n}\n", "jobs/bad.pbtxt");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("jobs/bad.pbtxt:3:11"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_job_file("/nonexistent/job.pbtxt"), Error);
}

}  // namespace
}  // namespace shardfit
