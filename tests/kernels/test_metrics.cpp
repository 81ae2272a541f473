// Tests of kernels/metrics: each accuracy variant and mae against a naive reference (ties, batch 1, odd sizes),
// the choice of variant from the shapes, and the errors for unknown names and mismatched shapes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "kernels/metrics.h"

namespace shardfit {
namespace {

constexpr double kFloatEps = 1.1920928955078125e-07;
constexpr int64_t kSampleCounts[] = {1, 3, 17, 64, 5000};  // 5000 x 7 and 5000 x 10 cross the parallel threshold

// ---- naive references ----

int64_t first_argmax(const float* row, int64_t dim) { return std::max_element(row, row + dim) - row; }

double reference_binary(const std::vector<float>& out, const std::vector<float>& labels) {
  double correct = 0;
  for (size_t i = 0; i < out.size(); ++i) correct += (out[i] > 0.5F) == (labels[i] > 0.5F);
  return correct;
}

double reference_sparse(const std::vector<float>& out, const std::vector<float>& ids, int64_t dim) {
  double correct = 0;
  for (size_t i = 0; i < ids.size(); ++i) correct += first_argmax(out.data() + i * dim, dim) == ids[i];
  return correct;
}

double reference_categorical(const std::vector<float>& out, const std::vector<float>& labels, int64_t dim) {
  double correct = 0;
  for (size_t i = 0; i < out.size() / dim; ++i) {
    correct += first_argmax(out.data() + i * dim, dim) == first_argmax(labels.data() + i * dim, dim);
  }
  return correct;
}

double reference_mae(const std::vector<float>& out, const std::vector<float>& labels, int64_t dim) {
  double total = 0;
  for (size_t i = 0; i < out.size(); ++i) total += std::abs(double{out[i]} - double{labels[i]}) / dim;
  return total;
}

// ---- inputs ----

// Values from a coarse grid so that rows often tie at their maximum: the tie rule is exercised, not avoided.
std::vector<float> coarse(size_t count, std::mt19937& rng) {
  std::vector<float> v(count);
  for (float& x : v) x = 0.25F * static_cast<float>(std::uniform_int_distribution<int>(0, 4)(rng));
  return v;
}

std::vector<float> class_ids(int64_t n, int64_t dim, std::mt19937& rng) {
  std::vector<float> ids(n);
  for (float& id : ids) id = static_cast<float>(std::uniform_int_distribution<int64_t>(0, dim - 1)(rng));
  return ids;
}

double sum_of(const Metric& metric, const std::vector<float>& out, const std::vector<float>& labels, int64_t n,
              int64_t dim, int64_t label_dim) {
  return metric.sum(MetricArgs{out.data(), labels.data(), n, dim, label_dim});
}

// ---- variants against the references; the variant is chosen by make_metric from the shapes alone ----

TEST(Metrics, BinaryAccuracyForOneUnit) {
  std::mt19937 rng(1);
  for (const char* name : {"accuracy", "acc"}) {
    const auto metric = make_metric(name, 1, 1);
    EXPECT_EQ(metric->name(), name);
    for (int64_t n : kSampleCounts) {
      SCOPED_TRACE(std::string(name) + ", n " + std::to_string(n));
      // coarse values put many outputs and labels exactly on the 0.5 threshold, which counts as class 0
      const std::vector<float> out = coarse(n, rng);
      const std::vector<float> labels = coarse(n, rng);
      EXPECT_EQ(sum_of(*metric, out, labels, n, 1, 1), reference_binary(out, labels));
    }
  }
}

TEST(Metrics, BinaryAccuracyThresholdIsStrict) {
  const auto metric = make_metric("accuracy", 1, 1);
  const std::vector<float> out = {0.5F, 0.5F, 0.50001F, 0.2F, 0.9F};
  const std::vector<float> labels = {0, 1, 1, 1, 0};
  EXPECT_EQ(sum_of(*metric, out, labels, 5, 1, 1), 2.0);  // the first (0.5 is class 0) and the third
  EXPECT_EQ(sum_of(*metric, {0.7F}, {1.0F}, 1, 1, 1), 1.0);
}

TEST(Metrics, SparseAccuracyForClassIds) {
  std::mt19937 rng(2);
  for (int64_t dim : {2, 7, 10}) {
    const auto metric = make_metric("accuracy", dim, 1);
    for (int64_t n : kSampleCounts) {
      SCOPED_TRACE("dim " + std::to_string(dim) + ", n " + std::to_string(n));
      const std::vector<float> out = coarse(n * dim, rng);
      const std::vector<float> ids = class_ids(n, dim, rng);
      EXPECT_EQ(sum_of(*metric, out, ids, n, dim, 1), reference_sparse(out, ids, dim));
    }
  }
}

TEST(Metrics, CategoricalAccuracyForTargets) {
  std::mt19937 rng(3);
  for (int64_t dim : {2, 7, 10}) {
    const auto metric = make_metric("acc", dim, dim);
    for (int64_t n : kSampleCounts) {
      SCOPED_TRACE("dim " + std::to_string(dim) + ", n " + std::to_string(n));
      const std::vector<float> out = coarse(n * dim, rng);
      const std::vector<float> labels = coarse(n * dim, rng);  // soft targets with ties too
      EXPECT_EQ(sum_of(*metric, out, labels, n, dim, dim), reference_categorical(out, labels, dim));
    }
  }
}

// Ties go to the first index, in the outputs and in the targets, as numpy's argmax does.
TEST(Metrics, TiesGoToTheFirstIndex) {
  const auto sparse = make_metric("accuracy", 3, 1);
  EXPECT_EQ(sum_of(*sparse, {0.4F, 0.4F, 0.2F}, {0}, 1, 3, 1), 1.0);
  EXPECT_EQ(sum_of(*sparse, {0.4F, 0.4F, 0.2F}, {1}, 1, 3, 1), 0.0);
  EXPECT_EQ(sum_of(*sparse, {0.1F, 0.45F, 0.45F}, {1}, 1, 3, 1), 1.0);
  EXPECT_EQ(sum_of(*sparse, {0.0F, 0.0F, 0.0F}, {0}, 1, 3, 1), 1.0);
  const auto categorical = make_metric("accuracy", 3, 3);
  EXPECT_EQ(sum_of(*categorical, {0.2F, 0.4F, 0.4F}, {0.0F, 0.5F, 0.5F}, 1, 3, 3), 1.0);
  EXPECT_EQ(sum_of(*categorical, {0.2F, 0.4F, 0.4F}, {0.0F, 0.4F, 0.6F}, 1, 3, 3), 0.0);
  EXPECT_EQ(sum_of(*categorical, {0.5F, 0.5F, 0.0F}, {1.0F, 1.0F, 1.0F}, 1, 3, 3), 1.0);
}

// The same rows read three ways: the shapes alone decide what "accuracy" means.
TEST(Metrics, VariantChosenFromShapes) {
  const std::vector<float> out = {0.1F, 0.7F, 0.2F, 0.6F, 0.3F, 0.1F};  // (2, 3): argmax 1, 0
  const std::vector<float> ids = {1, 1};                                // sample 0 right, sample 1 wrong
  const std::vector<float> one_hot = {0, 1, 0, 1, 0, 0};                // both right
  EXPECT_EQ(sum_of(*make_metric("accuracy", 3, 1), out, ids, 2, 3, 1), 1.0);
  EXPECT_EQ(sum_of(*make_metric("accuracy", 3, 3), out, one_hot, 2, 3, 3), 2.0);
  // one unit: each output against 0.5, so 0.1 and the last 0.1 are wrong against label 1
  EXPECT_EQ(sum_of(*make_metric("accuracy", 1, 1), out, {1, 1, 0, 1, 0, 1}, 6, 1, 1), 4.0);
}

TEST(Metrics, MaeIsSumOfPerSampleMeans) {
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> value(-3, 3);
  for (const char* name : {"mae", "mean_absolute_error"}) {
    for (int64_t dim : {1, 2, 7, 10}) {
      const auto metric = make_metric(name, dim, dim);
      EXPECT_EQ(metric->name(), name);
      for (int64_t n : kSampleCounts) {
        SCOPED_TRACE(std::string(name) + ", dim " + std::to_string(dim) + ", n " + std::to_string(n));
        std::vector<float> out(n * dim);
        std::vector<float> labels(n * dim);
        for (float& x : out) x = value(rng);
        for (float& x : labels) x = value(rng);
        const double expected = reference_mae(out, labels, dim);
        EXPECT_NEAR(sum_of(*metric, out, labels, n, dim, dim), expected,
                    8 * kFloatEps * std::max(std::abs(expected), 1.0));
      }
    }
  }
  EXPECT_DOUBLE_EQ(sum_of(*make_metric("mae", 2, 2), {1, -1, 0, 0}, {0, 1, 0, 0.5F}, 2, 2, 2), 1.5 + 0.25);
}

TEST(Metrics, NoSamplesIsZero) {
  EXPECT_EQ(make_metric("accuracy", 10, 1)->sum(MetricArgs{nullptr, nullptr, 0, 10, 1}), 0.0);
  EXPECT_EQ(make_metric("mae", 3, 3)->sum(MetricArgs{nullptr, nullptr, 0, 3, 3}), 0.0);
}

// ---- errors ----

template <typename F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    const std::string what = e.what();
    for (const auto& part : parts) {
      EXPECT_NE(what.find(part), std::string::npos) << "'" << part << "' not in: " << what;
    }
  }
}

TEST(MetricErrors, UnknownNameListsValidNames) {
  expect_error([] { make_metric("precision", 3, 3); }, {"'precision'", "accuracy", "mae"});
  expect_error([] { make_metric("Accuracy", 3, 3); }, {"'Accuracy'"});
}

TEST(MetricErrors, ShapesThatFitNoVariant) {
  expect_error([] { make_metric("accuracy", 1, 2); }, {"accuracy", "width 2"});
  expect_error([] { make_metric("accuracy", 10, 3); }, {"label width 3", "output width 10"});
  expect_error([] { make_metric("mae", 10, 1); }, {"mae", "label width 1", "output width 10"});
  expect_error([] { make_metric("acc", 0, 1); }, {"acc", "at least 1"});
}

TEST(MetricErrors, ArgsMustMatchTheShapesItWasBuiltFor) {
  const auto metric = make_metric("accuracy", 3, 1);
  const std::vector<float> values(6, 0.0F);
  expect_error([&] { metric->sum(MetricArgs{values.data(), values.data(), 2, 3, 3}); }, {"width 3", "width 1"});
}

TEST(MetricErrors, BadClassIdNamesSampleValueAndRange) {
  const auto metric = make_metric("accuracy", 4, 1);
  const std::vector<float> out(3 * 4, 0.25F);
  for (float bad : {4.0F, -1.0F, 2.5F}) {
    std::ostringstream value;
    value << bad;
    expect_error(
        [&] {
          metric->sum(MetricArgs{out.data(), std::vector<float>{0, 1, bad}.data(), 3, 4, 1});
        },
        {"sample 2", value.str(), "[0, 4)"});
  }
}

}  // namespace
}  // namespace shardfit
