// Losses as SUMS over one rank's samples, with the gradient of that sum; the mean is taken by the caller after
// the global reduction (KERAS_CONTRACT.md). softmax + categorical cross-entropy and sigmoid + binary
// cross-entropy are computed fused from the logits (log-sum-exp), stable for any logit size.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "kernels/activation_kind.h"

namespace shardfit {

struct LossArgs {
  const float* outputs = nullptr;  // (n, dim) the model's outputs, after the final activation
  const float* logits = nullptr;   // (n, dim) the final activation's input; set exactly when fused_with() matched
  const float* labels = nullptr;   // (n, label_dim) class ids as floats (label_dim 1) or targets (label_dim == dim)
  const float* sample_weights = nullptr;  // (n) per-sample weights (class_weight), or nullptr for all ones
  int64_t n = 0;
  int64_t dim = 0;
  int64_t label_dim = 0;
  // (n, dim) written with d(weighted sum of losses)/d(outputs), or d/d(logits) when fused; nullptr: loss only.
  float* grad = nullptr;
};

class Loss {
 public:
  virtual ~Loss() = default;
  virtual std::string name() const = 0;
  // True when this loss takes the logits of `final` and its gradient replaces that activation's backward.
  virtual bool fuses_with(ActivationKind final) const = 0;
  // Sum over the n samples of weight_i * loss_i (per-sample loss = mean over the dim outputs, as Keras does).
  virtual double compute(const LossArgs& args) const = 0;
};

// "mse" | "mean_squared_error" | "mae" | "mean_absolute_error" | "binary_crossentropy" |
// "categorical_crossentropy" | "sparse_categorical_crossentropy". Throws Error naming the value otherwise.
std::unique_ptr<Loss> make_loss(std::string_view name);

// Cross-entropy's probability clip (Keras's epsilon).
inline constexpr float kProbabilityEpsilon = 1e-7F;

}  // namespace shardfit
