// Keras's "accuracy" (binary, sparse or categorical, chosen from the shapes) and "mae", as per-rank sums.
// Not the division by the sample count: the caller reduces (sum, n) over ranks first.
#include "kernels/metrics.h"

#include <cmath>
#include <utility>

#include "kernels/error.h"

namespace shardfit {

namespace {

// Below this many elements a thread team costs more than the loop.
constexpr int64_t kParallelElements = 16384;

// First index of the largest value, as numpy's argmax breaks ties.
int64_t argmax(const float* row, int64_t dim) {
  int64_t best = 0;
  for (int64_t k = 1; k < dim; ++k) {
    if (row[k] > row[best]) best = k;
  }
  return best;
}

enum class Variant { kBinaryAccuracy, kSparseAccuracy, kCategoricalAccuracy, kMeanAbsoluteError };

class ShapedMetric final : public Metric {
 public:
  ShapedMetric(std::string name, Variant variant, int64_t output_dim, int64_t label_dim)
      : name_(std::move(name)), variant_(variant), output_dim_(output_dim), label_dim_(label_dim) {}

  std::string name() const override { return name_; }

  double sum(const MetricArgs& args) const override {
    SF_CHECK(args.dim == output_dim_ && args.label_dim == label_dim_,
             cat("metric ", name_, " was built for outputs of width ", output_dim_, " and labels of width ", label_dim_,
                 ", got ", args.dim, " and ", args.label_dim));
    SF_CHECK(args.n >= 0, cat("metric ", name_, ": negative sample count ", args.n));
    if (args.n == 0) return 0.0;
    SF_CHECK(args.outputs != nullptr && args.labels != nullptr, cat("metric ", name_, ": null outputs or labels"));
    if (variant_ == Variant::kSparseAccuracy) check_class_ids(args);

    const int64_t dim = args.dim;
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (args.n * dim > kParallelElements)
    for (int64_t i = 0; i < args.n; ++i) {
      const float* out = args.outputs + i * dim;
      const float* label = args.labels + i * args.label_dim;
      switch (variant_) {
        case Variant::kBinaryAccuracy:
          total += (out[0] > 0.5F) == (label[0] > 0.5F) ? 1.0 : 0.0;
          break;
        case Variant::kSparseAccuracy:
          total += argmax(out, dim) == static_cast<int64_t>(label[0]) ? 1.0 : 0.0;
          break;
        case Variant::kCategoricalAccuracy:
          total += argmax(out, dim) == argmax(label, dim) ? 1.0 : 0.0;
          break;
        case Variant::kMeanAbsoluteError: {
          double row = 0.0;
          for (int64_t k = 0; k < dim; ++k) {
            row += std::abs(static_cast<double>(out[k]) - static_cast<double>(label[k]));
          }
          total += row / static_cast<double>(dim);
          break;
        }
      }
    }
    return total;
  }

 private:
  // Serial, before the loop, so the error names the first bad sample; the loss checks the same ids, so this only
  // fires when a metric runs without that loss.
  void check_class_ids(const MetricArgs& args) const {
    for (int64_t i = 0; i < args.n; ++i) {
      const float id = args.labels[i];
      const bool integral = std::isfinite(id) && std::floor(id) == id;
      if (!integral || id < 0 || id >= static_cast<float>(args.dim)) {
        throw SampleError(
            cat(__FILE__, ":", __LINE__),
            cat("metric ", name_, ": label of sample ", i, " is ", id, "; expected an integer class id in [0, ",
                args.dim, ")"),
            {}, i,
            cat("metric ", name_, ": label ", id, " is not a class id: expected an integer in [0, ", args.dim, ")"));
      }
    }
  }

  std::string name_;
  Variant variant_;
  int64_t output_dim_;
  int64_t label_dim_;
};

}  // namespace

std::unique_ptr<Metric> make_metric(std::string_view name, int64_t output_dim, int64_t label_dim) {
  const std::string typed(name);
  SF_CHECK(output_dim >= 1 && label_dim >= 1,
           cat("metric ", typed, ": output and label widths must be at least 1, got ", output_dim, " and ", label_dim));
  if (name == "accuracy" || name == "acc") {
    // Keras's rule (compile_utils): one output unit is binary; one label column for several units is sparse.
    if (output_dim == 1) {
      SF_CHECK(label_dim == 1,
               cat("metric ", typed, ": a 1-unit output needs labels of width 1, got label width ", label_dim));
      return std::make_unique<ShapedMetric>(typed, Variant::kBinaryAccuracy, output_dim, label_dim);
    }
    if (label_dim == 1) return std::make_unique<ShapedMetric>(typed, Variant::kSparseAccuracy, output_dim, label_dim);
    SF_CHECK(label_dim == output_dim, cat("metric ", typed, ": label width ", label_dim,
                                          " is neither 1 (class ids) nor the output width ", output_dim));
    return std::make_unique<ShapedMetric>(typed, Variant::kCategoricalAccuracy, output_dim, label_dim);
  }
  if (name == "mae" || name == "mean_absolute_error") {
    SF_CHECK(label_dim == output_dim,
             cat("metric ", typed, ": label width ", label_dim, " does not match the output width ", output_dim));
    return std::make_unique<ShapedMetric>(typed, Variant::kMeanAbsoluteError, output_dim, label_dim);
  }
  SF_FAIL(cat("unknown metric '", name, "'; expected one of: accuracy, acc, mae, mean_absolute_error"));
}

}  // namespace shardfit
