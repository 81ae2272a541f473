// The losses users name, as per-rank sums with their gradients (loss.h). Not the reduction over ranks and not the
// division by the batch size: the caller does both after the allreduce.
#include "kernels/loss.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>
#include <utility>

#include "kernels/error.h"

namespace shardfit {

namespace {

// Below this many elements a thread team costs more than the loop; above it the samples are split statically.
constexpr int64_t kParallelElements = 16384;

// All arithmetic is in double: the clip bounds are the float epsilon widened once, so the clip decision is the
// same as Keras's float one for every float probability.
constexpr double kClipLow = static_cast<double>(kProbabilityEpsilon);
constexpr double kClipHigh = 1.0 - kClipLow;

bool is_clipped(double p) { return !(p >= kClipLow && p <= kClipHigh); }
double clip_probability(double p) { return std::clamp(p, kClipLow, kClipHigh); }

// log(1 + exp(z)) without overflow for large z and without losing the tail for very negative z.
double softplus(double z) { return std::max(z, 0.0) + std::log1p(std::exp(-std::abs(z))); }

double sigmoid(double z) {
  if (z >= 0) return 1.0 / (1.0 + std::exp(-z));
  const double e = std::exp(z);
  return e / (1.0 + e);
}

// log(sum_k exp(z_k)) over one row, shifted by the row max so that no exp overflows.
double log_sum_exp(const float* z, int64_t dim) {
  double top = -std::numeric_limits<double>::infinity();
  for (int64_t k = 0; k < dim; ++k) top = std::max(top, static_cast<double>(z[k]));
  double sum = 0.0;
  for (int64_t k = 0; k < dim; ++k) sum += std::exp(static_cast<double>(z[k]) - top);
  return top + std::log(sum);
}

// How a loss reads its labels. kClassIds: one float per sample holding an integer in [0, dim).
enum class LabelLayout { kTargets, kClassIds };

// Class ids are checked serially before the (possibly parallel) sample loop, so that the error can name the first
// bad sample and never has to leave an OpenMP region.
void check_class_ids(std::string_view loss, const float* labels, int64_t n, int64_t dim) {
  for (int64_t i = 0; i < n; ++i) {
    const float id = labels[i];
    const bool integral = std::isfinite(id) && std::floor(id) == id;
    if (!integral || id < 0 || id >= static_cast<float>(dim)) {
      throw SampleError(
          cat(__FILE__, ":", __LINE__),
          cat(loss, ": label of sample ", i, " is ", id, "; expected an integer class id in [0, ", dim, ")"),
          cat("labels hold class ids for a ", dim, "-unit output; check the label file and the output width"), i,
          cat(loss, ": label ", id, " is not a class id: expected an integer in [0, ", dim, ")"));
    }
  }
}

// The per-sample loop shared by every loss: validation, weights, the parallel double-precision reduction.
// Subclasses supply one sample's unweighted loss and write its gradient scaled by `scale` (the sample weight).
class SampleLoss : public Loss {
 public:
  explicit SampleLoss(std::string name) : name_(std::move(name)) {}

  std::string name() const override { return name_; }

  double compute(const LossArgs& args) const final {
    const LabelLayout layout = check_args(args);
    if (args.n == 0) return 0.0;
    const bool fused = args.logits != nullptr;
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (args.n * args.dim > kParallelElements)
    for (int64_t i = 0; i < args.n; ++i) {
      const double weight = args.sample_weights != nullptr ? static_cast<double>(args.sample_weights[i]) : 1.0;
      float* grad_row = args.grad != nullptr ? args.grad + i * args.dim : nullptr;
      const double loss = sample_loss(args, layout, fused, i, weight, grad_row);
      total += weight * loss;
    }
    return total;
  }

 protected:
  // Which label layouts this loss accepts for a `dim`-wide output and `label_dim`-wide labels.
  virtual bool accepts_class_ids() const { return false; }
  virtual bool requires_class_ids() const { return false; }

  // One sample: returns its loss; writes scale * d(loss)/d(outputs or logits) into grad_row unless it is null.
  virtual double sample_loss(const LossArgs& args, LabelLayout layout, bool fused, int64_t i, double scale,
                             float* grad_row) const = 0;

 private:
  LabelLayout check_args(const LossArgs& args) const {
    SF_CHECK(args.n >= 0, cat(name_, ": negative sample count ", args.n));
    SF_CHECK(args.dim >= 1, cat(name_, ": output width must be at least 1, got ", args.dim));
    SF_CHECK(args.logits == nullptr || fuses_with_any(),
             cat(name_, ": logits were passed but this loss fuses with no activation"));
    LabelLayout layout = LabelLayout::kTargets;
    // label_dim == dim wins when dim is 1 too: a single target column is read as a target, not as class 0.
    if (requires_class_ids()) {
      SF_CHECK(args.label_dim == 1,
               cat(name_, ": labels must be one class id per sample (label width 1), got label width ", args.label_dim,
                   " for a ", args.dim, "-unit output"),
               "use categorical_crossentropy for one-hot labels");
      layout = LabelLayout::kClassIds;
    } else if (args.label_dim != args.dim) {
      SF_CHECK(accepts_class_ids() && args.label_dim == 1,
               cat(name_, ": label width ", args.label_dim, " does not match the output width ", args.dim,
                   accepts_class_ids() ? " (and is not 1 for class ids)" : ""));
      layout = LabelLayout::kClassIds;
    }
    if (args.n == 0) return layout;
    SF_CHECK(args.labels != nullptr, cat(name_, ": labels are null"));
    SF_CHECK(args.outputs != nullptr || args.logits != nullptr, cat(name_, ": outputs are null"));
    if (layout == LabelLayout::kClassIds) check_class_ids(name_, args.labels, args.n, args.dim);
    return layout;
  }

  bool fuses_with_any() const { return fuses_with(ActivationKind::kSoftmax) || fuses_with(ActivationKind::kSigmoid); }

  std::string name_;
};

// The mean over a sample's outputs of term(output - label); term returns the term's value and its derivative.
template <typename Term>
double mean_of_output_terms(const LossArgs& args, int64_t i, double scale, float* grad_row, Term term) {
  const float* out = args.outputs + i * args.dim;
  const float* label = args.labels + i * args.label_dim;
  const double inv_dim = 1.0 / static_cast<double>(args.dim);
  double sum = 0.0;
  for (int64_t k = 0; k < args.dim; ++k) {
    const auto [value, derivative] = term(static_cast<double>(out[k]) - static_cast<double>(label[k]));
    sum += value;
    if (grad_row != nullptr) grad_row[k] = static_cast<float>(derivative * inv_dim * scale);
  }
  return sum * inv_dim;
}

class MeanSquaredError final : public SampleLoss {
 public:
  using SampleLoss::SampleLoss;
  bool fuses_with(ActivationKind /*final*/) const override { return false; }

 protected:
  double sample_loss(const LossArgs& args, LabelLayout /*layout*/, bool /*fused*/, int64_t i, double scale,
                     float* grad_row) const override {
    return mean_of_output_terms(args, i, scale, grad_row, [](double diff) {
      return std::pair{diff * diff, 2.0 * diff};
    });
  }
};

class MeanAbsoluteError final : public SampleLoss {
 public:
  using SampleLoss::SampleLoss;
  bool fuses_with(ActivationKind /*final*/) const override { return false; }

 protected:
  double sample_loss(const LossArgs& args, LabelLayout /*layout*/, bool /*fused*/, int64_t i, double scale,
                     float* grad_row) const override {
    // The subgradient 0 at a tie, as the backends' sign() gives.
    return mean_of_output_terms(args, i, scale, grad_row, [](double diff) {
      return std::pair{std::abs(diff), diff > 0 ? 1.0 : (diff < 0 ? -1.0 : 0.0)};
    });
  }
};

class BinaryCrossentropy final : public SampleLoss {
 public:
  using SampleLoss::SampleLoss;
  bool fuses_with(ActivationKind final) const override { return final == ActivationKind::kSigmoid; }

 protected:
  double sample_loss(const LossArgs& args, LabelLayout /*layout*/, bool fused, int64_t i, double scale,
                     float* grad_row) const override {
    const float* label = args.labels + i * args.label_dim;
    const double inv_dim = 1.0 / static_cast<double>(args.dim);
    double sum = 0.0;
    if (fused) {
      // -(y log s(z) + (1-y) log(1-s(z))) = softplus(z) - y z: no probability is formed, so nothing clips.
      const float* z = args.logits + i * args.dim;
      for (int64_t k = 0; k < args.dim; ++k) {
        const double zk = z[k];
        const double y = label[k];
        sum += softplus(zk) - zk * y;
        if (grad_row != nullptr) grad_row[k] = static_cast<float>((sigmoid(zk) - y) * inv_dim * scale);
      }
    } else {
      const float* out = args.outputs + i * args.dim;
      for (int64_t k = 0; k < args.dim; ++k) {
        const double raw = out[k];
        const double p = clip_probability(raw);
        const double y = label[k];
        sum -= y * std::log(p) + (1.0 - y) * std::log(1.0 - p);
        if (grad_row != nullptr) {
          // d/dp of -(y log p + (1-y) log(1-p)) = (p - y) / (p (1-p)); the clip is flat outside its range.
          const double g = is_clipped(raw) ? 0.0 : (p - y) / (p * (1.0 - p));
          grad_row[k] = static_cast<float>(g * inv_dim * scale);
        }
      }
    }
    return sum * inv_dim;
  }
};

// categorical_crossentropy and sparse_categorical_crossentropy: one implementation, the label layouts differ.
class CategoricalCrossentropy final : public SampleLoss {
 public:
  CategoricalCrossentropy(std::string name, bool sparse) : SampleLoss(std::move(name)), sparse_(sparse) {}
  bool fuses_with(ActivationKind final) const override { return final == ActivationKind::kSoftmax; }

 protected:
  bool accepts_class_ids() const override { return true; }
  bool requires_class_ids() const override { return sparse_; }

  double sample_loss(const LossArgs& args, LabelLayout layout, bool fused, int64_t i, double scale,
                     float* grad_row) const override {
    const int64_t dim = args.dim;
    const float* label = args.labels + i * args.label_dim;
    const bool ids = layout == LabelLayout::kClassIds;
    const int64_t id = ids ? static_cast<int64_t>(label[0]) : -1;
    if (fused) {
      // -sum_k y_k log softmax(z)_k = (sum_k y_k) lse(z) - sum_k y_k z_k; the factor sum_k y_k keeps it exact
      // for soft targets that do not sum to one, and makes the gradient (sum_k y_k) softmax(z) - y.
      const float* z = args.logits + i * dim;
      const double lse = log_sum_exp(z, dim);
      double target_sum = 1.0;
      double target_dot_z = 0.0;
      if (ids) {
        target_dot_z = z[id];
      } else {
        target_sum = 0.0;
        for (int64_t k = 0; k < dim; ++k) {
          target_sum += label[k];
          target_dot_z += static_cast<double>(label[k]) * static_cast<double>(z[k]);
        }
      }
      if (grad_row != nullptr) {
        for (int64_t k = 0; k < dim; ++k) {
          const double y = ids ? (k == id ? 1.0 : 0.0) : static_cast<double>(label[k]);
          const double softmax = std::exp(static_cast<double>(z[k]) - lse);
          grad_row[k] = static_cast<float>((target_sum * softmax - y) * scale);
        }
      }
      return target_sum * lse - target_dot_z;
    }
    // Outputs that are not a softmax (sigmoid, linear, ...) are made a distribution first, as Keras does: divided by
    // their row sum s, then clipped. With q = o / s and g_k = dL/dq_k, the chain rule through the division gives
    // dL/do_j = (g_j - sum_k g_k q_k) / s, so every output gets a gradient, not only the labelled ones.
    const float* out = args.outputs + i * dim;
    double row_sum = 0.0;
    for (int64_t k = 0; k < dim; ++k) row_sum += static_cast<double>(out[k]);
    if (ids) {
      const double q = static_cast<double>(out[id]) / row_sum;
      const double p = clip_probability(q);
      if (grad_row != nullptr) {
        const double g = is_clipped(q) ? 0.0 : -1.0 / p;
        for (int64_t k = 0; k < dim; ++k) {
          grad_row[k] = static_cast<float>(((k == id ? g : 0.0) - g * q) / row_sum * scale);
        }
      }
      return -std::log(p);
    }
    // dL/dq_k: -y_k / p_k, and 0 where the clip is flat.
    const auto grad_q = [&](int64_t k, double q) {
      return is_clipped(q) ? 0.0 : -static_cast<double>(label[k]) / clip_probability(q);
    };
    double sum = 0.0;
    double g_dot_q = 0.0;
    for (int64_t k = 0; k < dim; ++k) {
      const double q = static_cast<double>(out[k]) / row_sum;
      sum -= static_cast<double>(label[k]) * std::log(clip_probability(q));
      g_dot_q += grad_q(k, q) * q;
    }
    if (grad_row != nullptr) {
      for (int64_t k = 0; k < dim; ++k) {
        const double q = static_cast<double>(out[k]) / row_sum;
        grad_row[k] = static_cast<float>((grad_q(k, q) - g_dot_q) / row_sum * scale);
      }
    }
    return sum;
  }

 private:
  bool sparse_;
};

}  // namespace

std::unique_ptr<Loss> make_loss(std::string_view name) {
  const std::string typed(name);
  if (name == "mse" || name == "mean_squared_error") return std::make_unique<MeanSquaredError>(typed);
  if (name == "mae" || name == "mean_absolute_error") return std::make_unique<MeanAbsoluteError>(typed);
  if (name == "binary_crossentropy") return std::make_unique<BinaryCrossentropy>(typed);
  if (name == "categorical_crossentropy") return std::make_unique<CategoricalCrossentropy>(typed, false);
  if (name == "sparse_categorical_crossentropy") return std::make_unique<CategoricalCrossentropy>(typed, true);
  SF_FAIL(cat("unknown loss '", name,
              "'; expected one of: mse, mean_squared_error, mae, mean_absolute_error, binary_crossentropy, "
              "categorical_crossentropy, sparse_categorical_crossentropy"));
}

}  // namespace shardfit
